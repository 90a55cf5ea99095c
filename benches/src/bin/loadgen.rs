//! `loadgen`: the echo load generator for a Windows test VM running `wskecho.sys` (or the
//! host-mode driver, or Wine). Runs the same scenarios as the Wine test, then a latency
//! measurement, against one address, and exits non-zero on the first failure.
//!
//! ```text
//! cargo run --release -p wsk-benches --bin loadgen -- 192.0.2.10:7007 [--clients 50]
//!     [--messages 200] [--max-size 65536] [--churn 1000] [--latency 10000]
//! ```
//!
//! Point it only at a machine you run the driver on (a test VM on your own network, or
//! 127.0.0.1): it opens many connections as fast as it can.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wsk_benches::load;

const USAGE: &str = "usage: loadgen ADDR:PORT [--clients N] [--messages N] [--max-size BYTES] \
                     [--churn N] [--latency N]";

struct Options {
    addr: SocketAddr,
    clients: usize,
    messages: usize,
    max_size: usize,
    churn: usize,
    latency: usize,
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
    };
    while let Some(flag) = rest.next() {
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
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(options)
}

/// Round-trip times of `count` 64-byte echoes on one connection, sorted.
fn latencies(addr: SocketAddr, count: usize) -> Result<Vec<Duration>, String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, load::IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(load::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let message = [0x5au8; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        stream
            .write_all(&message)
            .map_err(|e| format!("write: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("read: {e}"))?;
        times.push(start.elapsed());
        if back != message {
            return Err("latency echo differs".into());
        }
    }
    times.sort_unstable();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short sorted list"
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn run(options: &Options) -> Result<(), String> {
    let addr = options.addr;
    let t = Instant::now();
    let echo = load::concurrent_echo(addr, options.clients, options.messages, options.max_size)?;
    println!(
        "echo: {} clients, {} messages, {} bytes byte-exact in {:.2?}",
        echo.connections,
        echo.messages,
        echo.bytes,
        t.elapsed()
    );
    if options.churn > 0 {
        let t = Instant::now();
        let churn = load::churn(addr, options.churn, 8)?;
        let secs = t.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = churn.connections as f64 / secs.max(1e-9);
        println!(
            "churn: {} connect/echo/close in {secs:.2} s ({rate:.0}/s)",
            churn.connections
        );
    }
    load::reset_mid_message(addr)?;
    println!("reset mid-message: server still serving");
    if options.latency > 0 {
        let times = latencies(addr, options.latency)?;
        println!(
            "latency (64 B round trip, {} samples): p50 {:.1?}  p99 {:.1?}  p99.9 {:.1?}  max {:.1?}",
            times.len(),
            percentile(&times, 0.50),
            percentile(&times, 0.99),
            percentile(&times, 0.999),
            times.last().copied().unwrap_or_default()
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
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("loadgen: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}
