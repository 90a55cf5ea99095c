//! `loadgen`: the echo load generator for a Windows test VM running `wskecho.sys` (or the
//! host-mode driver, or Wine), and the client of `cargo xtask bench-echo`.
//!
//! Scenario mode (the default) runs the same scenarios as the Wine test, then a latency
//! measurement, against one address, and exits non-zero on the first failure:
//!
//! ```text
//! loadgen 192.0.2.10:7007 [--clients 50] [--messages 200] [--max-size 65536] [--churn 1000]
//!     [--latency 10000] [--json]
//! ```
//!
//! Bench mode runs only the closed-loop measurement (`wsk_benches::closed_loop`):
//!
//! ```text
//! loadgen 127.0.0.1:7007 --bench --connections 100 --size 64 --millis 1000 [--warmup-millis 200] [--json]
//! ```
//!
//! Latencies are HDR-histogram percentiles; `--json` prints one JSON object on stdout instead
//! of text. Builds for Linux and as a Windows user-mode `.exe` (`x86_64-pc-windows-gnu`).
//!
//! Point it only at a machine you run the driver on (a test VM on your own network, or
//! 127.0.0.1): it opens many connections as fast as it can.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wsk_benches::{closed_loop, load};

const USAGE: &str = "usage: loadgen ADDR:PORT [--clients N] [--messages N] [--max-size BYTES] \
                     [--churn N] [--latency N] [--json]
       loadgen ADDR:PORT --bench [--connections N] [--size BYTES] [--millis N] \
                     [--warmup-millis N] [--json]";

struct Options {
    addr: SocketAddr,
    clients: usize,
    messages: usize,
    max_size: usize,
    churn: usize,
    latency: usize,
    json: bool,
    bench: bool,
    connections: usize,
    size: usize,
    millis: u64,
    warmup_millis: u64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut rest = args.iter();
    let target = rest.next().ok_or("missing ADDR:PORT")?;
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))?;
    let mut options = Options {
        addr,
        clients: 50,
        messages: 200,
        max_size: 64 * 1024,
        churn: 1000,
        latency: 10_000,
        json: false,
        bench: false,
        connections: 1,
        size: 64,
        millis: 1000,
        warmup_millis: 200,
    };
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--json" => {
                options.json = true;
                continue;
            }
            "--bench" => {
                options.bench = true;
                continue;
            }
            _ => {}
        }
        let value: usize = rest
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--clients" => options.clients = value.max(1),
            "--messages" => options.messages = value.max(1),
            "--max-size" => options.max_size = value.max(1),
            "--churn" => options.churn = value,
            "--latency" => options.latency = value,
            "--connections" => options.connections = value.max(1),
            "--size" => options.size = value.max(1),
            "--millis" => options.millis = u64::try_from(value.max(1)).unwrap_or(u64::MAX),
            "--warmup-millis" => options.warmup_millis = u64::try_from(value).unwrap_or(0),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(options)
}

fn bench(options: &Options) -> Result<(), String> {
    let result = closed_loop::run(
        options.addr,
        options.connections,
        options.size,
        Duration::from_millis(options.warmup_millis),
        Duration::from_millis(options.millis),
    )?;
    if options.json {
        println!("{}", result.to_json());
    } else {
        println!(
            "{} connections, {} B: {} round trips in {:.2?} ({:.0}/s); RTT p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
            result.connections,
            result.size,
            result.round_trips,
            result.elapsed,
            result.rate(),
            result.micros_at(0.5),
            result.micros_at(0.99),
            result.micros_at(0.999)
        );
    }
    Ok(())
}

fn scenarios(options: &Options) -> Result<(), String> {
    let addr = options.addr;
    let t = Instant::now();
    let echo = load::concurrent_echo(addr, options.clients, options.messages, options.max_size)?;
    let echo_seconds = t.elapsed().as_secs_f64();
    if !options.json {
        println!(
            "echo: {} clients, {} messages, {} bytes byte-exact in {echo_seconds:.2} s",
            echo.connections, echo.messages, echo.bytes
        );
    }
    let mut churn_rate = 0.0;
    if options.churn > 0 {
        let t = Instant::now();
        let churn = load::churn(addr, options.churn, 8)?;
        let secs = t.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = churn.connections as f64 / secs.max(1e-9);
        churn_rate = rate;
        if !options.json {
            println!(
                "churn: {} connect/echo/close in {secs:.2} s ({rate:.0}/s)",
                churn.connections
            );
        }
    }
    load::reset_mid_message(addr)?;
    if !options.json {
        println!("reset mid-message: server still serving");
    }
    let latency = if options.latency > 0 {
        // One connection, one 64-byte message in flight: the closed-loop client's simplest
        // case, for `latency` round trips' worth of time (at least 1 s).
        let result = closed_loop::run(addr, 1, 64, Duration::from_millis(100), {
            Duration::from_micros(u64::try_from(options.latency).unwrap_or(u64::MAX) * 100)
                .max(Duration::from_secs(1))
        })?;
        if !options.json {
            println!(
                "latency (64 B round trip, {} samples): p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us",
                result.round_trips,
                result.micros_at(0.5),
                result.micros_at(0.99),
                result.micros_at(0.999)
            );
        }
        result.to_json()
    } else {
        "null".to_owned()
    };
    if options.json {
        println!(
            "{{\"echo\":{{\"connections\":{},\"messages\":{},\"bytes\":{},\"seconds\":{echo_seconds:.3}}},\
             \"churn_per_second\":{churn_rate:.1},\"reset_mid_message\":\"ok\",\"latency\":{latency}}}",
            echo.connections, echo.messages, echo.bytes
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("loadgen: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = if options.bench {
        bench(&options)
    } else {
        scenarios(&options)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}
