//! `cargo xtask bench-echo`: ours against the floor and the peers, over real TCP on loopback,
//! in one go. Not part of `cargo xtask test` (benchmarks are not tests).
//!
//! Servers, each its own process so that its CPU time can be read from `/proc/<pid>/stat`:
//! `ours-dpc` and `ours-passive` (the echo driver on the host kernel, `wsk-driver-example`'s
//! host program, with each runner), `ours-events` (the same on the DPC runner with
//! `--event-driven`: WSK receive event callbacks instead of receive IRPs), `floor` (the callback-chain driver, `wsk-floor-driver`'s
//! host program), `tokio` (2 workers) and `std` (a thread per connection), all with 16 KiB
//! buffers. The client is the same for all: `loadgen --bench` (closed loop, one message in
//! flight per connection, HDR histograms; `wsk_benches::closed_loop`).
//!
//! For each placement (pinned: the server on CPU 0 and the client on CPU 1 with `taskset`;
//! unpinned: wherever the scheduler puts them) and each of [`ROUNDS`] rounds, the servers take
//! turns (A B C D E, A B C D E: interleaved, so drift in the machine's load spreads over all of
//! them); each server, once started, serves every cell: 1, 100 and 1,000 connections with
//! 64 B and 16 KiB messages, [`WARMUP_MS`] of warm-up then [`MEASURE_MS`] measured.
//!
//! Each cell starts once the server has closed every earlier connection (the cell before's,
//! and the probe that saw it listening; at most 30 s; how many and how long is printed when
//! there were any): a cell measures its own
//! connections only, its CPU figure holds none of the last cell's closes, and a server with a
//! connection limit is not pushed past it by two cells' connections at once (under Wine the
//! echo driver took 100-900 ms to close 1,000 connections, and the next cell's 1,000 then
//! met its `MaxConnections` of 1,024: resets, logged as `connection limit 1024 reached`).
//!
//! Per cell and server: server CPU per round trip (utime+stime over the client's whole run,
//! warm-up and connection set-up included, divided by every round trip it completed), RTT
//! p50/p99/p99.9 and round trips per second (the rounds' mean). The table gives the ratios
//! ours/floor and ours/tokio for each runner. Then callgrind: instructions per round trip of
//! the server threads for ours (DPC runner; receive IRPs and receive events) and the floor, split library / host kernel /
//! std-libc (`examples/echo_server_cost.rs`).
//!
//! Output: the tables on stdout and in `target/bench-echo/table.md`, every sample in
//! `target/bench-echo/results.json`, the latency percentile curves in
//! `target/bench-echo/latency.png`.
//!
//! Under Wine (where `wine` is installed): `wine-ours` (`wskecho.sys`, passive runner, as the
//! Wine test runs it) and `wine-floor` (`wskfloor.sys`, whose chain runs on its worker thread
//! there), both in one fresh prefix, unpinned, the same cells and rounds; server CPU is every
//! process of the prefix (`winedevice.exe`, `wineserver`, ...). The drivers' `DbgPrint`
//! lines go to `target/bench-echo/wine-drivers.log`, and a failed Wine cell quotes those
//! logged during it. Without Wine the output says loudly that this part was not measured.
//! `--wine-only` runs only this part (no host servers, no callgrind).
//!
//! A narrowed run looks at a few cells quickly (no Wine, no callgrind): `--servers
//! ours-dpc,tokio` (any of the host servers), `--cells 1000x64,1000x16384` (connections x
//! message bytes), `--placement pinned|unpinned|both`, `--rounds N` (default [`ROUNDS`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::build_release;
use crate::callgrind::{self, Part};
use crate::driver::target_dir;
use crate::png::Canvas;
use crate::setup;

/// Connection counts of the cells.
const CONNECTIONS: [usize; 3] = [1, 100, 1000];
/// Message sizes of the cells.
const SIZES: [usize; 2] = [64, 16 * 1024];
/// Rounds of every server per placement.
const ROUNDS: usize = 2;
/// Warm-up per cell (not recorded).
const WARMUP_MS: u64 = 200;
/// Measured time per cell.
const MEASURE_MS: u64 = 1000;
/// The longest wait for a server to close the last cell's connections before the next cell.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);
/// Driver log lines quoted at most in a failed Wine cell's report.
const LOGGED_LINES: usize = 8;
/// Round trips of the two callgrind runs whose difference is counted.
const CALLGRIND_RUNS: [u64; 2] = [200, 1200];
/// What the output says about Wine when it is not measured.
const WINE_MISSING: &str = "WINE: NOT MEASURED: `wine` is not installed (apt-get install wine); \
    no Wine figures are in this table.";
/// What the output says about Wine when it is.
const WINE_MEASURED: &str = "Wine 8: wine-ours (wskecho.sys, passive runner) and wine-floor \
    (wskfloor.sys, its chain on its worker thread) in one prefix, unpinned only; server CPU = \
    every process of the prefix.";

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Server {
    OursDpc,
    OursPassive,
    /// The echo driver on the DPC runner with `--event-driven` (WSK receive event callbacks).
    OursEvents,
    Floor,
    Tokio,
    Std,
    WineOurs,
    WineFloor,
}

impl Server {
    const ALL: [Server; 6] = [
        Server::OursDpc,
        Server::OursPassive,
        Server::OursEvents,
        Server::Floor,
        Server::Tokio,
        Server::Std,
    ];
    /// Every server, Wine's included (plot and figures).
    const EVERY: [Server; 8] = [
        Server::OursDpc,
        Server::OursPassive,
        Server::OursEvents,
        Server::Floor,
        Server::Tokio,
        Server::Std,
        Server::WineOurs,
        Server::WineFloor,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::OursDpc => "ours-dpc",
            Server::OursPassive => "ours-passive",
            Server::OursEvents => "ours-events",
            Server::Floor => "floor",
            Server::Tokio => "tokio",
            Server::Std => "std",
            Server::WineOurs => "wine-ours",
            Server::WineFloor => "wine-floor",
        }
    }

    /// Plot colour.
    fn color(self) -> [u8; 3] {
        match self {
            Server::OursDpc => [214, 39, 40],
            Server::OursPassive => [255, 127, 14],
            Server::OursEvents => [227, 119, 194],
            Server::Floor => [44, 160, 44],
            Server::Tokio => [31, 119, 180],
            Server::Std => [127, 127, 127],
            Server::WineOurs => [148, 103, 189],
            Server::WineFloor => [140, 86, 75],
        }
    }

    /// The host program and its arguments; Wine's servers are started through the prefix.
    fn command(self, programs: &Programs, port: u16) -> (PathBuf, Vec<String>) {
        let port = port.to_string();
        match self {
            Server::WineOurs | Server::WineFloor => (PathBuf::from("wine"), Vec::new()),
            Server::OursDpc | Server::OursPassive => {
                let runner = if self == Server::OursDpc {
                    "dpc"
                } else {
                    "passive"
                };
                (
                    programs.wskecho.clone(),
                    ["--port", &port, "--bind", "127.0.0.1", "--runner", runner]
                        .map(String::from)
                        .to_vec(),
                )
            }
            Server::OursEvents => (
                programs.wskecho.clone(),
                [
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--runner",
                    "dpc",
                    "--event-driven",
                ]
                .map(String::from)
                .to_vec(),
            ),
            Server::Floor => (programs.wskfloor.clone(), vec!["--port".into(), port]),
            Server::Tokio => (programs.tokio_echo.clone(), vec![port]),
            Server::Std => (programs.std_echo.clone(), vec![port]),
        }
    }
}

/// The built programs.
struct Programs {
    wskecho: PathBuf,
    wskfloor: PathBuf,
    tokio_echo: PathBuf,
    std_echo: PathBuf,
    loadgen: PathBuf,
    cost: PathBuf,
}

/// One cell's key: placement, connections, message size.
type Cell = (bool, usize, usize);

/// One client run against one server.
#[derive(Clone)]
struct Sample {
    server: Server,
    pinned: bool,
    connections: usize,
    size: usize,
    round: usize,
    /// The server's CPU seconds over the client's run.
    cpu_seconds: f64,
    /// `loadgen --bench --json`'s object.
    json: String,
}

impl Sample {
    fn number(&self, key: &str) -> Option<f64> {
        json_number(&self.json, key)
    }

    /// A latency figure, absent when no round trip completed in the measured time (an empty
    /// histogram reads 0).
    fn latency(&self, key: &str) -> Option<f64> {
        (self.number("round_trips")? > 0.0)
            .then(|| self.number(key))
            .flatten()
    }

    fn cpu_us_per_round_trip(&self) -> Option<f64> {
        let all = self.number("all_round_trips")?;
        (all > 0.0).then(|| self.cpu_seconds * 1e6 / all)
    }
}

/// The number after `"key":` in a flat JSON text.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let needle = format!("\"{key}\":");
    let at = json.find(&needle)? + needle.len();
    let rest = &json[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What one `bench-echo` run measures: by default everything (every host server, both
/// placements, every cell, [`ROUNDS`] rounds, then Wine and callgrind); `--servers`,
/// `--cells`, `--placement` and `--rounds` narrow it to a quick look at a few cells, which
/// leaves out Wine and callgrind.
#[derive(Debug, PartialEq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "one bool per command-line flag"
)]
struct Selection {
    servers: Vec<Server>,
    /// Connections and message size of each cell.
    cells: Vec<(usize, usize)>,
    /// `true`: pinned.
    placements: Vec<bool>,
    rounds: usize,
    quick: bool,
    wine_only: bool,
    skip_callgrind: bool,
    /// A narrowed run: no Wine, no callgrind.
    narrowed: bool,
}

/// The usage line of `bench-echo`'s arguments.
const ARGUMENTS: &str = "--no-callgrind, --quick, --wine-only, --servers NAME,.. (ours-dpc, \
    ours-passive, ours-events, floor, tokio, std), --cells CONNSxBYTES,.. (e.g. 1000x64), \
    --placement pinned|unpinned|both, --rounds N";

impl Selection {
    /// Parses `bench-echo`'s arguments.
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut selection = Selection {
            servers: Server::ALL.to_vec(),
            cells: all_cells(),
            placements: vec![true, false],
            rounds: ROUNDS,
            quick: false,
            wine_only: false,
            skip_callgrind: false,
            narrowed: false,
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = || {
                rest.next()
                    .ok_or_else(|| format!("bench-echo: {arg} needs a value ({ARGUMENTS})"))
            };
            match arg.as_str() {
                "--no-callgrind" => selection.skip_callgrind = true,
                "--quick" => selection.quick = true,
                "--wine-only" => selection.wine_only = true,
                "--servers" => {
                    selection.servers = value()?
                        .split(',')
                        .map(|name| {
                            Server::ALL
                                .into_iter()
                                .find(|s| s.name() == name)
                                .ok_or_else(|| format!("bench-echo: unknown server {name}"))
                        })
                        .collect::<Result<_, _>>()?;
                    selection.narrowed = true;
                }
                "--cells" => {
                    selection.cells = value()?
                        .split(',')
                        .map(|cell| {
                            cell.split_once('x')
                                .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)))
                                .filter(|&(c, s): &(usize, usize)| c > 0 && s > 0)
                                .ok_or_else(|| {
                                    format!("bench-echo: a cell is CONNSxBYTES, not {cell}")
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    selection.narrowed = true;
                }
                "--placement" => {
                    selection.placements = match value()?.as_str() {
                        "pinned" => vec![true],
                        "unpinned" => vec![false],
                        "both" => vec![true, false],
                        other => return Err(format!("bench-echo: unknown placement {other}")),
                    };
                    selection.narrowed = true;
                }
                "--rounds" => {
                    selection.rounds = value()?
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("bench-echo: --rounds needs a count of 1 or more")?;
                    selection.narrowed = true;
                }
                unknown => {
                    return Err(format!(
                        "bench-echo: unknown argument {unknown} ({ARGUMENTS})"
                    ));
                }
            }
        }
        if selection.quick && !selection.narrowed {
            selection.rounds = 1;
        }
        if selection.narrowed {
            selection.skip_callgrind = true;
        }
        if selection.wine_only && selection.narrowed {
            return Err(
                "bench-echo: --wine-only measures Wine's servers only: no --servers, --cells, \
                 --placement or --rounds with it"
                    .to_owned(),
            );
        }
        if selection.wine_only {
            selection.skip_callgrind = true;
            selection.placements.clear();
        }
        Ok(selection)
    }
}

/// Runs the whole benchmark (see the module documentation).
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let selection = Selection::parse(args)?;
    if !setup::has_program("taskset") {
        return Err("taskset is missing (util-linux)".into());
    }
    let programs = match std::env::var_os(PROGRAMS_VARIABLE) {
        Some(dir) => prebuilt(Path::new(&dir))?,
        None => build(root)?,
    };
    let out_dir = target_dir(root).join("bench-echo");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let machine = describe_machine();
    println!("bench-echo: {machine}");
    let started = Instant::now();
    let rounds = selection.rounds;
    let quick = selection.quick;
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for &pinned in &selection.placements {
        for round in 0..rounds {
            for &server in &selection.servers {
                match serve_all_cells(&programs, server, pinned, round, &selection) {
                    Ok((mut got, mut failed)) => {
                        samples.append(&mut got);
                        failures.append(&mut failed);
                    }
                    Err(e) => failures.push(format!("{} round {round}: {e}", server.name())),
                }
            }
        }
    }
    let wine_note = if selection.narrowed {
        "WINE: NOT MEASURED: a narrowed run (--servers, --cells, --placement or --rounds)."
            .to_owned()
    } else if setup::has_program("wine") {
        match run_wine(root, &programs, &out_dir, rounds, quick) {
            Ok(mut got) => {
                samples.append(&mut got.0);
                failures.append(&mut got.1);
                WINE_MEASURED.to_owned()
            }
            Err(e) => {
                failures.push(format!("wine: {e}"));
                format!("WINE: NOT MEASURED: setting up Wine failed: {e}")
            }
        }
    } else {
        WINE_MISSING.to_owned()
    };
    eprintln!("\n*** {wine_note} ***\n");
    let load_after = load_average();
    let callgrind = if selection.skip_callgrind {
        None
    } else {
        Some(callgrind_costs(&programs, &out_dir)?)
    };
    let tables = tables(&samples, callgrind.as_ref(), &failures);
    let header = format!(
        "bench-echo, {} s in all; {machine}; load average after: {load_after}\n\n{wine_note}\n\n",
        started.elapsed().as_secs()
    );
    println!("\n{header}{tables}");
    let table_path = out_dir.join("table.md");
    write(&table_path, format!("{header}{tables}").as_bytes())?;
    let json_path = out_dir.join("results.json");
    write(
        &json_path,
        results_json(
            &machine,
            (&wine_note, rounds),
            &samples,
            callgrind.as_ref(),
            &failures,
        )
        .as_bytes(),
    )?;
    let png_path = out_dir.join("latency.png");
    write(&png_path, &latency_plot(&samples).to_png())?;
    println!(
        "bench-echo: wrote {}, {} and {}",
        table_path.display(),
        json_path.display(),
        png_path.display()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} server run(s) failed: {failures:?}",
            failures.len()
        ))
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The environment variable naming a folder of programs built before (an A B A B run against
/// a base commit): `wsk-driver-example`, `wsk-floor-driver`, `loadgen`, `tokio_echo`,
/// `std_echo` and `echo_server_cost`, side by side. Unset: the programs are built here.
const PROGRAMS_VARIABLE: &str = "BENCH_ECHO_PROGRAMS";

/// The programs of a folder named by [`PROGRAMS_VARIABLE`]; an error if one is missing.
fn prebuilt(dir: &Path) -> Result<Programs, String> {
    let program = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{PROGRAMS_VARIABLE}: no {}", path.display()))
        }
    };
    Ok(Programs {
        wskecho: program("wsk-driver-example")?,
        wskfloor: program("wsk-floor-driver")?,
        loadgen: program("loadgen")?,
        tokio_echo: program("tokio_echo")?,
        std_echo: program("std_echo")?,
        cost: program("echo_server_cost")?,
    })
}

/// Builds every program (release).
fn build(root: &Path) -> Result<Programs, String> {
    build_release(
        root,
        &["wsk-driver-example", "wsk-floor-driver"],
        &["--bins"],
    )?;
    let release = build_release(
        root,
        &["wsk-benches"],
        &[
            "--bin",
            "loadgen",
            "--example",
            "tokio_echo",
            "--example",
            "std_echo",
            "--example",
            "echo_server_cost",
        ],
    )?;
    let examples = release.join("examples");
    Ok(Programs {
        wskecho: release.join("wsk-driver-example"),
        wskfloor: release.join("wsk-floor-driver"),
        loadgen: release.join("loadgen"),
        tokio_echo: examples.join("tokio_echo"),
        std_echo: examples.join("std_echo"),
        cost: examples.join("echo_server_cost"),
    })
}

/// The command, pinned to `cpu` with taskset when `pin` is set.
fn placed(program: &Path, args: &[String], pin: Option<u32>) -> Command {
    if let Some(cpu) = pin {
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(cpu.to_string())
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

/// A running server, stopped (SIGTERM, then SIGKILL after 30 s) when dropped.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `server`, runs every cell against it, stops it.
fn serve_all_cells(
    programs: &Programs,
    server: Server,
    pinned: bool,
    round: usize,
    selection: &Selection,
) -> Result<(Vec<Sample>, Vec<String>), String> {
    let port = wsk_benches::load::free_loopback_port()?;
    let (program, args) = server.command(programs, port);
    let child = placed(&program, &args, pinned.then_some(0))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", program.display()))?;
    let running = Running { child };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(addr)?;
    let pid = running.child.id();
    let mut failures = Vec::new();
    let samples = measure_cells(
        programs,
        (server, pinned, round, selection.quick),
        &selection.cells,
        addr,
        &mut failures,
        || cpu_seconds(pid),
        None,
    )?;
    drop(running);
    Ok((samples, failures))
}

/// Runs every cell against the server listening on `addr`; `cpu` reads the server's CPU
/// seconds so far. A cell whose client fails is recorded in `failures` (with the lines the
/// driver logged meanwhile, when `driver_log` names its debug log) and the next cell runs;
/// an error is returned only when the CPU time cannot be read or `loadgen` not started.
///
/// Each cell starts once the server has closed every connection of the one before (see
/// [`wait_until_closed`]): otherwise the 1,000 connections of one cell arrive while the
/// 1,000 of the last are still closing, and a server with a connection limit (the echo
/// driver's `MaxConnections`, 1,024) rightly resets the excess.
fn measure_cells(
    programs: &Programs,
    (server, pinned, round, quick): (Server, bool, usize, bool),
    cells: &[(usize, usize)],
    addr: SocketAddr,
    failures: &mut Vec<String>,
    cpu: impl Fn() -> Result<f64, String>,
    driver_log: Option<&Path>,
) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for &(connections, size) in cells {
        let measure = if quick { MEASURE_MS / 4 } else { MEASURE_MS };
        match wait_until_closed(addr.port(), CLOSE_LIMIT) {
            Ok(None) => {}
            Ok(Some((open, took))) => println!(
                "bench-echo: {} round {round}: waited {} ms for the server to close {open} \
                 earlier connection(s) before {connections} x {size} B",
                server.name(),
                took.as_millis()
            ),
            Err(e) => {
                let failure = format!(
                    "{} round {round}: {connections} connections of {size} B not run: {e}",
                    server.name()
                );
                println!("bench-echo: FAILED: {failure}");
                failures.push(failure);
                continue;
            }
        }
        let log_start = driver_log.map_or(0, log_length);
        let before = cpu()?;
        let output = placed(
            &programs.loadgen,
            &[
                addr.to_string(),
                "--bench".into(),
                "--json".into(),
                "--connections".into(),
                connections.to_string(),
                "--size".into(),
                size.to_string(),
                "--millis".into(),
                measure.to_string(),
                "--warmup-millis".into(),
                WARMUP_MS.to_string(),
            ],
            pinned.then_some(1),
        )
        .output()
        .map_err(|e| format!("could not start loadgen: {e}"))?;
        let after = cpu()?;
        if !output.status.success() {
            let mut failure = format!(
                "{} round {round}: loadgen, {connections} connections of {size} B: {}",
                server.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
            if let Some(log) = driver_log {
                failure.push_str(&logged_since(log, log_start));
            }
            println!("bench-echo: FAILED: {failure}");
            failures.push(failure);
            continue;
        }
        let json = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        println!(
            "bench-echo: {} {} round {round}: {connections} x {size} B: {:.0} rt/s, p50 {:.1} us, server CPU {:.2} s",
            server.name(),
            if pinned { "pinned" } else { "unpinned" },
            json_number(&json, "round_trips_per_second").unwrap_or(0.0),
            json_number(&json, "p50").unwrap_or(0.0),
            after - before
        );
        samples.push(Sample {
            server,
            pinned,
            connections,
            size,
            round,
            cpu_seconds: after - before,
            json,
        });
    }
    Ok(samples)
}

/// A Wine prefix of this benchmark; dropping it ends every process of the prefix.
struct WinePrefix {
    dir: PathBuf,
}

impl WinePrefix {
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("WINEPREFIX", &self.dir)
            .env("WINEARCH", "win64")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("WINEDEBUG", "-all")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdin(Stdio::null())
            // Not pipes: a wineserver started here inherits them and would hold them open.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    /// Runs `program args` in the prefix, killing it after `limit`.
    fn run(&self, program: &str, args: &[&str], limit: Duration) -> Result<(), String> {
        let child = self
            .command(program, args)
            .spawn()
            .map_err(|e| format!("{program} {args:?}: {e}"))?;
        wait_bounded(child, &format!("{program} {args:?}"), limit)
    }

    /// `net start service` with Wine's `debugstr` channel (`DbgPrint`) on, its stderr
    /// appended to `log`: the first start launches services.exe, and with it every driver's
    /// host, with that stderr and debug setting.
    fn start_service(&self, service: &str, log: &Path) -> Result<(), String> {
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = self
            .command("wine", &["net", "start", service])
            .env("WINEDEBUG", "-all,+debugstr")
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("wine net start {service}: {e}"))?;
        wait_bounded(
            child,
            &format!("wine net start {service}"),
            Duration::from_mins(1),
        )
    }

    fn reg_add(&self, key: &str, value: &str, kind: &str, data: &str) -> Result<(), String> {
        self.run(
            "wine",
            &["reg", "add", key, "/v", value, "/t", kind, "/d", data, "/f"],
            Duration::from_mins(1),
        )
    }

    /// CPU seconds of every process of the prefix (found by `WINEPREFIX` in its environment).
    fn cpu_seconds(&self) -> Result<f64, String> {
        let needle = format!("WINEPREFIX={}\0", self.dir.display());
        let mut total = 0.0;
        let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if String::from_utf8_lossy(&environ).contains(&needle) {
                // A process that ended since the listing counts nothing.
                total += cpu_seconds(pid).unwrap_or(0.0);
            }
        }
        Ok(total)
    }
}

/// Waits for `child` (`what`, for errors), killing it after `limit`
/// ([`crate::wine::wait_bounded`]); an error unless it exits successfully in time.
fn wait_bounded(child: Child, what: &str, limit: Duration) -> Result<(), String> {
    let status = crate::wine::wait_bounded(child, limit).map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} exited with {status}"))
    }
}

impl Drop for WinePrefix {
    fn drop(&mut self) {
        let _ = self.run("wineserver", &["-k"], Duration::from_mins(1));
    }
}

/// The Wine part: both drivers as services of one fresh prefix, taking turns for `rounds`
/// rounds (unpinned). Returns the samples and the failed turns.
fn run_wine(
    root: &Path,
    programs: &Programs,
    out_dir: &Path,
    rounds: usize,
    quick: bool,
) -> Result<(Vec<Sample>, Vec<String>), String> {
    let ours_sys = crate::driver::build(root)?;
    let floor_sys = crate::floor_driver::build(root)?;
    let dir = out_dir.join("wine-prefix");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let prefix = WinePrefix { dir };
    println!("bench-echo: wine prefix in {}", prefix.dir.display());
    prefix.run("wine", &["wineboot", "-i"], Duration::from_mins(3))?;
    let drivers = prefix.dir.join("drive_c/windows/system32/drivers");
    std::fs::create_dir_all(&drivers).map_err(|e| e.to_string())?;
    let ours_port = wsk_benches::load::free_loopback_port()?;
    let floor_port = wsk_benches::load::free_loopback_port()?;
    let services = [
        (
            Server::WineOurs,
            "WskEcho",
            "wskecho.sys",
            &ours_sys,
            ours_port,
        ),
        (
            Server::WineFloor,
            "WskFloor",
            "wskfloor.sys",
            &floor_sys,
            floor_port,
        ),
    ];
    for (_, service, file, sys, port) in &services {
        std::fs::copy(sys, drivers.join(file)).map_err(|e| format!("copy {file}: {e}"))?;
        let key = format!(r"HKLM\System\CurrentControlSet\Services\{service}");
        let params = format!(r"{key}\Parameters");
        prefix.reg_add(&key, "Type", "REG_DWORD", "1")?;
        prefix.reg_add(&key, "Start", "REG_DWORD", "3")?;
        prefix.reg_add(&key, "ErrorControl", "REG_DWORD", "1")?;
        let image = format!(r"C:\windows\system32\drivers\{file}");
        prefix.reg_add(&key, "ImagePath", "REG_EXPAND_SZ", &image)?;
        prefix.reg_add(&params, "Port", "REG_DWORD", &port.to_string())?;
    }
    let ours_params = r"HKLM\System\CurrentControlSet\Services\WskEcho\Parameters";
    prefix.reg_add(ours_params, "Runner", "REG_SZ", "passive")?;
    prefix.reg_add(ours_params, "BindAddress", "REG_SZ", "127.0.0.1")?;
    let floor_params = r"HKLM\System\CurrentControlSet\Services\WskFloor\Parameters";
    prefix.reg_add(floor_params, "LoopbackOnly", "REG_DWORD", "1")?;
    // services.exe reads the services at start: restart the server, and keep one running so
    // that the drivers' host process lives on after `net start` returns.
    let _ = prefix.run("wineserver", &["-k"], Duration::from_mins(1));
    prefix.run("wineserver", &["-p"], Duration::from_mins(1))?;
    // The drivers' DbgPrint lines, so that a failed cell can say what the driver saw (the
    // first `net start` starts services.exe, whose drivers inherit its stderr).
    let driver_log = out_dir.join("wine-drivers.log");
    std::fs::write(&driver_log, "").map_err(|e| format!("{}: {e}", driver_log.display()))?;
    println!("bench-echo: Wine drivers' log in {}", driver_log.display());
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        for (server, service, _, _, port) in &services {
            let turn = (|| -> Result<Vec<Sample>, String> {
                prefix.start_service(service, &driver_log)?;
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                wait_listening(addr)?;
                let got = measure_cells(
                    programs,
                    (*server, false, round, quick),
                    &all_cells(),
                    addr,
                    &mut failures,
                    || prefix.cpu_seconds(),
                    Some(&driver_log),
                );
                let stopped = prefix.run("wine", &["net", "stop", service], Duration::from_mins(2));
                let got = got?;
                stopped?;
                Ok(got)
            })();
            match turn {
                Ok(mut got) => samples.append(&mut got),
                Err(e) => failures.push(format!("{} round {round}: {e}", server.name())),
            }
        }
    }
    Ok((samples, failures))
}

/// Waits until no TCP connection on local port `port` is left that the server has not closed
/// (see [`unclosed_connections`]), at most `limit`. `None` when there was none to wait for;
/// otherwise how many there were and how long they took to close.
///
/// # Errors
/// Some are still open after `limit` (how many), or `/proc/net/tcp` cannot be read.
fn wait_until_closed(port: u16, limit: Duration) -> Result<Option<(usize, Duration)>, String> {
    let started = Instant::now();
    let open = unclosed_connections(port)?;
    if open == 0 {
        return Ok(None);
    }
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let left = unclosed_connections(port)?;
        if left == 0 {
            return Ok(Some((open, started.elapsed())));
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "the server still holds {left} of {open} earlier connection(s) after {limit:?}"
            ));
        }
    }
}

/// Server-side TCP connections on local port `port` (IPv4 and IPv6) the server has not
/// closed yet: established (accepted or still in the listen backlog) or in `CLOSE_WAIT` (the
/// client closed, the server not yet). The listening socket, and connections the server
/// has closed (`LAST_ACK`, `TIME_WAIT`, ...), do not count: they hold none of its slots.
fn unclosed_connections(port: u16) -> Result<usize, String> {
    /// `/proc/net/tcp` states (hex): `TCP_ESTABLISHED`, `TCP_SYN_RECV`, `TCP_CLOSE_WAIT`.
    const UNCLOSED: [&str; 3] = ["01", "03", "08"];
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel: nothing to count there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && table.ends_with('6') => {
                continue;
            }
            Err(e) => return Err(format!("{table}: {e}")),
        };
        // Each line after the header: `sl local_address rem_address st ...`, with
        // `local_address` as `HEXADDR:HEXPORT`.
        count += text
            .lines()
            .skip(1)
            .filter(|line| {
                let mut fields = line.split_whitespace().skip(1);
                let local_port = fields
                    .next()
                    .and_then(|local| local.rsplit_once(':'))
                    .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
                let state = fields.nth(1);
                local_port == Some(port) && state.is_some_and(|st| UNCLOSED.contains(&st))
            })
            .count();
    }
    Ok(count)
}

/// The length of the debug log at `log` (0 when it does not exist yet).
fn log_length(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// The drivers' own lines (`wskecho: `, `wskfloor: `, `wsk-net: `, `wsk-executor: `) logged
/// to `log` after byte `start`, the first [`LOGGED_LINES`] and how many in all, formatted to
/// end a failure's report; a note saying so when there were none.
fn logged_since(log: &Path, start: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let new = text
        .get(usize::try_from(start).unwrap_or(usize::MAX)..)
        .unwrap_or_default();
    let new = String::from_utf8_lossy(new);
    let lines: Vec<&str> = new
        .lines()
        .filter_map(|line| {
            ["wskecho: ", "wskfloor: ", "wsk-net: ", "wsk-executor: "]
                .iter()
                .find_map(|tag| line.find(tag).map(|at| line[at..].trim_end()))
        })
        .collect();
    if lines.is_empty() {
        return format!("; the driver logged nothing meanwhile ({})", log.display());
    }
    let mut report = format!(
        "; the driver logged {} line(s) meanwhile ({}):",
        lines.len(),
        log.display()
    );
    for line in lines.iter().take(LOGGED_LINES) {
        report.push_str("\n    ");
        report.push_str(line);
    }
    if lines.len() > LOGGED_LINES {
        report.push_str("\n    ...");
    }
    report
}

/// Waits (at most 30 s) until something accepts connections on `addr`.
fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {addr} after 30 s"))
}

/// utime + stime of process `pid` (all its threads), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name, which is in parentheses and may contain spaces: the
    // state is field 3, utime field 14, stime field 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| {
                #[allow(clippy::cast_precision_loss, reason = "clock ticks to seconds")]
                let t = t as f64;
                t
            })
            .ok_or_else(|| format!("no field {i} in /proc/{pid}/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn describe_machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpus} vCPUs ({model}), {rustc}, release profile; pinned = server `taskset -c 0`, \
         client `taskset -c 1`; load average before: {}",
        load_average()
    )
}

/// The rounds' mean of `metric` for one server in one cell.
fn mean(
    samples: &[Sample],
    server: Server,
    cell: Cell,
    metric: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.server == server && (s.pinned, s.connections, s.size) == cell)
        .filter_map(&metric)
        .collect();
    #[allow(clippy::cast_precision_loss, reason = "a handful of rounds")]
    let count = values.len() as f64;
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / count)
}

/// The metrics of the tables: name, how to read it, and whether more is better.
/// How a table reads one figure from a sample.
type Metric = fn(&Sample) -> Option<f64>;

fn metrics() -> [(&'static str, Metric, bool); 5] {
    [
        ("CPU us/rt", Sample::cpu_us_per_round_trip, false),
        ("p50 us", |s| s.latency("p50"), false),
        ("p99 us", |s| s.latency("p99"), false),
        ("p99.9 us", |s| s.latency("p99.9"), false),
        ("rt/s", |s| s.number("round_trips_per_second"), true),
    ]
}

/// Every cell of a full run: connections and message size.
fn all_cells() -> Vec<(usize, usize)> {
    CONNECTIONS
        .iter()
        .flat_map(|&c| SIZES.iter().map(move |&s| (c, s)))
        .collect()
}

/// The cells `samples` measured, pinned first, then by connections and size.
fn cells(samples: &[Sample]) -> Vec<Cell> {
    let mut cells: Vec<Cell> = samples
        .iter()
        .map(|s| (s.pinned, s.connections, s.size))
        .collect();
    cells.sort_by_key(|&(pinned, connections, size)| (!pinned, connections, size));
    cells.dedup();
    cells
}

fn cell_label((pinned, connections, size): Cell) -> String {
    let size = if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    };
    format!(
        "{} | {connections} | {size}",
        if pinned { "pinned" } else { "unpinned" }
    )
}

fn figure(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "—".into(),
    }
}

fn ratio(ours: Option<f64>, other: Option<f64>) -> String {
    match (ours, other) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// The markdown tables: ratios, absolute figures, callgrind.
/// The ratios ours / floor and ours / tokio of the host servers, per cell.
fn host_ratio_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Ratios (ours / floor, ours / tokio; rounds' means; below 1 is better for ours \
         except rt/s)\n"
    );
    let mut head = "| placement | conns | msg | ours |".to_owned();
    let mut rule = "|---|---:|---:|---|".to_owned();
    for (name, _, _) in metrics() {
        let _ = write!(head, " {name} /floor | {name} /tokio |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for cell in cells(samples) {
        for ours in [Server::OursDpc, Server::OursPassive, Server::OursEvents] {
            if mean(samples, ours, cell, |s| s.number("round_trips")).is_none() {
                continue;
            }
            let mut row = format!("| {} | {} |", cell_label(cell), ours.name());
            for (_, metric, _) in metrics() {
                let mine = mean(samples, ours, cell, metric);
                let floor = mean(samples, Server::Floor, cell, metric);
                let tokio = mean(samples, Server::Tokio, cell, metric);
                let _ = write!(row, " {} | {} |", ratio(mine, floor), ratio(mine, tokio));
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}

fn tables(samples: &[Sample], callgrind: Option<&Callgrind>, failures: &[String]) -> String {
    let mut out = String::new();
    // `--wine-only` measures no host server: no host ratio table of dashes then.
    if samples.iter().any(|s| Server::ALL.contains(&s.server)) {
        out.push_str(&host_ratio_table(samples));
    }
    out.push_str(&wine_table(samples));
    let _ = writeln!(out, "\n### Figures (rounds' means)\n");
    let mut head = "| placement | conns | msg | server |".to_owned();
    let mut rule = "|---|---:|---:|---|".to_owned();
    for (name, _, _) in metrics() {
        let _ = write!(head, " {name} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(out, "{head}\n{rule}");
    for cell in cells(samples) {
        for server in Server::EVERY {
            if mean(samples, server, cell, |s| s.number("round_trips")).is_none() {
                continue;
            }
            let mut row = format!("| {} | {} |", cell_label(cell), server.name());
            for (_, metric, _) in metrics() {
                let _ = write!(row, " {} |", figure(mean(samples, server, cell, metric)));
            }
            let _ = writeln!(out, "{row}");
        }
    }
    if let Some(callgrind) = callgrind {
        let _ = writeln!(
            out,
            "\n### Instructions per round trip (callgrind, server threads, 1 connection, 64 B; \
             (Ir at {} − Ir at {}) / {})\n",
            CALLGRIND_RUNS[1],
            CALLGRIND_RUNS[0],
            CALLGRIND_RUNS[1] - CALLGRIND_RUNS[0]
        );
        let _ = writeln!(
            out,
            "| part | ours (dpc) | ours (events) | floor | ours/floor | events/floor |\n\
             |---|---:|---:|---:|---:|---:|"
        );
        for part in Part::ALL {
            let ours = callgrind.ours.get(&part).copied().unwrap_or(0.0);
            let events = callgrind.events.get(&part).copied().unwrap_or(0.0);
            let floor = callgrind.floor.get(&part).copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {} | {ours:.0} | {events:.0} | {floor:.0} | {} | {} |",
                part_label(part),
                ratio(Some(ours), Some(floor)),
                ratio(Some(events), Some(floor))
            );
        }
        let ours: f64 = callgrind.ours.values().sum();
        let events: f64 = callgrind.events.values().sum();
        let floor: f64 = callgrind.floor.values().sum();
        let _ = writeln!(
            out,
            "| all server threads | {ours:.0} | {events:.0} | {floor:.0} | {} | {} |",
            ratio(Some(ours), Some(floor)),
            ratio(Some(events), Some(floor))
        );
    }
    if !failures.is_empty() {
        let _ = writeln!(out, "\n### FAILED runs\n");
        for failure in failures {
            let _ = writeln!(out, "- {failure}");
        }
    }
    out
}

/// The ratio table of the Wine part, when it ran.
fn wine_table(samples: &[Sample]) -> String {
    let mut out = String::new();
    if samples.iter().any(|s| s.server == Server::WineOurs) {
        let _ = writeln!(
            out,
            "\n### Under Wine: wine-ours / wine-floor (unpinned; rounds' means)\n"
        );
        let mut head = "| placement | conns | msg |".to_owned();
        let mut rule = "|---|---:|---:|".to_owned();
        for (name, _, _) in metrics() {
            let _ = write!(head, " {name} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for cell in cells(samples).into_iter().filter(|c| !c.0) {
            let mut row = format!("| {} |", cell_label(cell));
            for (_, metric, _) in metrics() {
                let ours = mean(samples, Server::WineOurs, cell, metric);
                let floor = mean(samples, Server::WineFloor, cell, metric);
                let _ = write!(row, " {} |", ratio(ours, floor));
            }
            let _ = writeln!(out, "{row}");
        }
    }
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn results_json(
    machine: &str,
    (wine_note, rounds): (&str, usize),
    samples: &[Sample],
    callgrind: Option<&Callgrind>,
    failures: &[String],
) -> String {
    let mut out = format!(
        "{{\"machine\":{},\"wine\":{},\"rounds\":{rounds},\"warmup_ms\":{WARMUP_MS},\
         \"measure_ms\":{MEASURE_MS},\"samples\":[",
        json_string(machine),
        json_string(wine_note)
    );
    for (i, s) in samples.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"server\":\"{}\",\"pinned\":{},\"round\":{},\"server_cpu_seconds\":{:.3},\
             \"server_cpu_us_per_round_trip\":{},\"client\":{}}}",
            s.server.name(),
            s.pinned,
            s.round,
            s.cpu_seconds,
            s.cpu_us_per_round_trip()
                .map_or_else(|| "null".to_owned(), |v| format!("{v:.3}")),
            if s.json.is_empty() { "null" } else { &s.json }
        );
    }
    out.push_str("],\"callgrind_instructions_per_round_trip\":");
    match callgrind {
        Some(c) => {
            let part = |m: &BTreeMap<Part, f64>| {
                Part::ALL
                    .iter()
                    .map(|p| {
                        format!(
                            "\"{}\":{:.0}",
                            part_key(*p),
                            m.get(p).copied().unwrap_or(0.0)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let _ = write!(
                out,
                "{{\"ours_dpc\":{{{}}},\"ours_events\":{{{}}},\"floor\":{{{}}}}}",
                part(&c.ours),
                part(&c.events),
                part(&c.floor)
            );
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"failures\":[");
    out.push_str(
        &failures
            .iter()
            .map(|f| json_string(f))
            .collect::<Vec<_>>()
            .join(","),
    );
    out.push_str("]}\n");
    out
}

/// The latency percentile curves: one panel per cell (rows: 1, 100, 1,000 connections;
/// columns: pinned 64 B, pinned 16 KiB, unpinned 64 B, unpinned 16 KiB), x the quantiles
/// p50, p90, p99, p99.9, p99.99 evenly spaced (a log scale of 1/(1−q)), y log10 of the RTT
/// over the panel's own range, one line per server in its colour (see the README's legend).
fn latency_plot(samples: &[Sample]) -> Canvas {
    const QUANTILES: [&str; 5] = ["0.5", "0.9", "0.99", "0.999", "0.9999"];
    const PANEL_W: i64 = 290;
    const PANEL_H: i64 = 260;
    const MARGIN: i64 = 10;
    const INK: [u8; 3] = [40, 40, 40];
    /// The panel's drawable height, as a float.
    const PANEL_SPAN: f64 = 215.0;
    let columns = [
        (true, 64),
        (true, 16 * 1024),
        (false, 64),
        (false, 16 * 1024),
    ];
    let width = usize::try_from(4 * (PANEL_W + MARGIN) + MARGIN).unwrap_or(1200);
    let height = usize::try_from(3 * (PANEL_H + MARGIN) + MARGIN + 60).unwrap_or(900);
    let mut canvas = Canvas::new(width, height, [255, 255, 255]);
    // Legend along the bottom: one colour block and name per server.
    let legend_y = 3 * (PANEL_H + MARGIN) + MARGIN;
    for (i, server) in Server::EVERY.iter().enumerate() {
        let x = MARGIN + i64::try_from(i).unwrap_or(0) * 170;
        canvas.fill(x, legend_y, 30, 14, server.color());
        canvas.text(x + 36, legend_y + 2, 2, server.name(), INK);
    }
    canvas.text(
        MARGIN,
        legend_y + 26,
        2,
        "RTT PERCENTILES P50 P90 P99 P99.9 P99.99, LOG RTT SCALE PER PANEL, GRID PER DECADE",
        INK,
    );
    for (row, connections) in CONNECTIONS.iter().enumerate() {
        for (column, (pinned, size)) in columns.iter().enumerate() {
            let x0 = MARGIN + i64::try_from(column).unwrap_or(0) * (PANEL_W + MARGIN);
            let y0 = MARGIN + i64::try_from(row).unwrap_or(0) * (PANEL_H + MARGIN);
            canvas.fill(x0, y0, PANEL_W, PANEL_H, [245, 245, 245]);
            let cell = (*pinned, *connections, *size);
            let title = format!(
                "{} {} {} CONN",
                if *pinned { "PINNED" } else { "UNPINNED" },
                if *size >= 1024 { "16KIB" } else { "64B" },
                connections
            );
            canvas.text(x0 + 4, y0 + 4, 2, &title, INK);
            let curves: Vec<(Server, Vec<f64>)> = Server::EVERY
                .iter()
                .filter_map(|&server| {
                    let points: Option<Vec<f64>> = QUANTILES
                        .iter()
                        .map(|q| mean(samples, server, cell, |s| s.latency(q)))
                        .collect();
                    points.map(|p| (server, p))
                })
                .collect();
            let all = curves.iter().flat_map(|(_, p)| p.iter().copied());
            let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| {
                (lo.min(v.max(0.001).log10()), hi.max(v.max(0.001).log10()))
            });
            if low > high {
                continue;
            }
            let span = (high - low).max(0.1);
            // Grid line per power of ten.
            let mut decade = low.floor();
            while decade <= high.ceil() {
                let fraction = (decade - low) / span;
                #[allow(clippy::cast_possible_truncation, reason = "pixel coordinates")]
                let y = y0 + PANEL_H - 10 - (fraction * PANEL_SPAN) as i64;
                if y > y0 && y < y0 + PANEL_H {
                    canvas.fill(x0, y, PANEL_W, 1, [210, 210, 210]);
                    // The label above its line, only where it stays inside the panel.
                    if y - 12 > y0 + 16 {
                        canvas.text(x0 + PANEL_W - 60, y - 12, 2, &decade_label(decade), INK);
                    }
                }
                decade += 1.0;
            }
            for (server, points) in &curves {
                let to_xy = |i: usize, v: f64| {
                    let x = x0 + 15 + i64::try_from(i).unwrap_or(0) * (PANEL_W - 30) / 4;
                    let fraction = (v.max(0.001).log10() - low) / span;
                    #[allow(clippy::cast_possible_truncation, reason = "pixel coordinates")]
                    let y = y0 + PANEL_H - 10 - (fraction * PANEL_SPAN) as i64;
                    (x, y)
                };
                for i in 1..points.len() {
                    canvas.line(
                        to_xy(i - 1, points[i - 1]),
                        to_xy(i, points[i]),
                        3,
                        server.color(),
                    );
                }
            }
        }
    }
    canvas
}

/// `10^decade` microseconds as a short label: `10US`, `1MS`, `100MS`, `1S`.
fn decade_label(decade: f64) -> String {
    #[allow(clippy::cast_possible_truncation, reason = "a small exponent")]
    let exponent = decade as i32;
    let (value, unit) = match exponent {
        e if e < 3 => (10f64.powi(e), "US"),
        e if e < 6 => (10f64.powi(e - 3), "MS"),
        e => (10f64.powi(e - 6), "S"),
    };
    format!("{value}{unit}")
}

/// The crates whose functions count as [`Part::Library`]: the driver and the library
/// (`wskecho`, `wsk_net`, `wsk_executor`, `wsk_sys`), or `wskfloor`.
const LIBRARY: [&str; 5] = [
    "wsk_net::",
    "wsk_executor::",
    "wsk_sys::",
    "wskecho::",
    "wskfloor::",
];

/// How the tables name `part`.
fn part_label(part: Part) -> &'static str {
    match part {
        Part::Library => "driver + library (wskecho/wsk-net/wsk-executor/wsk-sys, or wskfloor)",
        Part::Host => "host kernel (wsk_host and its exports)",
        Part::Runtime => "std, libc, shared generics (mostly the host kernel's)",
    }
}

/// The JSON key of `part`.
fn part_key(part: Part) -> &'static str {
    match part {
        Part::Library => "library",
        Part::Host => "host_kernel",
        Part::Runtime => "std_libc",
    }
}

/// Instructions per round trip by part, for ours and the floor.
struct Callgrind {
    ours: BTreeMap<Part, f64>,
    /// Ours with `EventDriven` 1 (receive event callbacks).
    events: BTreeMap<Part, f64>,
    floor: BTreeMap<Part, f64>,
}

fn callgrind_costs(programs: &Programs, out_dir: &Path) -> Result<Callgrind, String> {
    callgrind::ensure_valgrind()?;
    let dir = out_dir.join("callgrind");
    callgrind::fresh_dir(&dir)?;
    let per_part = |which: &str| -> Result<BTreeMap<Part, f64>, String> {
        let mut counts = Vec::new();
        for round_trips in CALLGRIND_RUNS {
            let base = dir.join(format!("{which}.{round_trips}"));
            println!("bench-echo: callgrind {which} {round_trips} round trips");
            let output = callgrind::run(&programs.cost, &[which, &round_trips.to_string()], &base)?;
            if !output.status.success() {
                return Err(format!(
                    "callgrind {which} {round_trips}: {}",
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            counts.push(server_threads_by_part(
                &dir,
                &format!("{which}.{round_trips}-"),
            )?);
        }
        let runs = CALLGRIND_RUNS[1] - CALLGRIND_RUNS[0];
        #[allow(clippy::cast_precision_loss, reason = "instruction counts")]
        let diff = |p: &Part| {
            let high = counts[1].get(p).copied().unwrap_or(0) as f64;
            let low = counts[0].get(p).copied().unwrap_or(0) as f64;
            (high - low) / runs as f64
        };
        Ok(Part::ALL.iter().map(|p| (*p, diff(p))).collect())
    };
    Ok(Callgrind {
        ours: per_part("ours")?,
        events: per_part("ours-events")?,
        floor: per_part("floor")?,
    })
}

/// Instructions by part over every thread's file but the main thread's (`-01`: the client).
fn server_threads_by_part(dir: &Path, prefix: &str) -> Result<BTreeMap<Part, u64>, String> {
    let mut parts = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(thread) = name.strip_prefix(prefix) else {
            continue;
        };
        if thread == "01" {
            continue;
        }
        for (part, count) in callgrind::by_part(&entry.path(), &LIBRARY)? {
            *parts.entry(part).or_insert(0) += count;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Selection, String> {
        Selection::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn a_narrowed_run_measures_only_the_named_servers_cells_and_placement() {
        let selection = parsed(&[
            "--servers",
            "ours-dpc,tokio",
            "--cells",
            "1000x64,1000x16384",
            "--placement",
            "pinned",
            "--rounds",
            "3",
        ])
        .unwrap();
        assert_eq!(selection.servers, [Server::OursDpc, Server::Tokio]);
        assert_eq!(selection.cells, [(1000, 64), (1000, 16384)]);
        assert_eq!(selection.placements, [true]);
        assert_eq!(selection.rounds, 3);
        assert!(selection.narrowed && selection.skip_callgrind);

        let full = parsed(&[]).unwrap();
        assert_eq!(full.servers, Server::ALL);
        assert_eq!(full.cells.len(), CONNECTIONS.len() * SIZES.len());
        assert_eq!((full.placements.len(), full.rounds), (2, ROUNDS));
        assert!(!full.narrowed && !full.skip_callgrind);
        assert_eq!(parsed(&["--quick"]).unwrap().rounds, 1);
    }

    #[test]
    fn bad_selections_are_errors() {
        for args in [
            &["--servers", "nginx"][..],
            &["--cells", "1000"],
            &["--cells", "0x64"],
            &["--placement", "sideways"],
            &["--rounds", "0"],
            &["--rounds"],
            &["--fast"],
            &["--wine-only", "--rounds", "1"],
        ] {
            assert!(parsed(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn json_numbers_are_found_by_key() {
        let json = r#"{"round_trips":12,"rtt_us":{"p50":1.5,"p99.9":20.25},"q":{"0.99":7e2}}"#;
        assert_eq!(json_number(json, "round_trips"), Some(12.0));
        assert_eq!(json_number(json, "p50"), Some(1.5));
        assert_eq!(json_number(json, "p99.9"), Some(20.25));
        assert_eq!(json_number(json, "0.99"), Some(700.0));
        assert_eq!(json_number(json, "missing"), None);
    }

    #[test]
    fn functions_split_into_driver_host_and_runtime() {
        assert_eq!(
            Part::of("wskfloor::server::receive_done", &LIBRARY),
            Part::Library
        );
        assert_eq!(Part::of("wskecho::config::read", &LIBRARY), Part::Library);
        assert_eq!(
            Part::of("<wsk_net::raw::Op as core::future::Future>::poll", &LIBRARY),
            Part::Library
        );
        assert_eq!(
            Part::of("wsk_host::wsk::socket::pump", &LIBRARY),
            Part::Host
        );
        assert_eq!(Part::of("IofCompleteRequest", &LIBRARY), Part::Host);
        assert_eq!(
            Part::of("core::hash::BuildHasher::hash_one", &LIBRARY),
            Part::Runtime
        );
        assert_eq!(Part::of("echo_cost::echo", &LIBRARY), Part::Runtime);
    }

    #[test]
    fn ratios_and_means_cover_missing_data() {
        let sample = Sample {
            server: Server::Floor,
            pinned: true,
            connections: 1,
            size: 64,
            round: 0,
            cpu_seconds: 0.5,
            json: r#"{"all_round_trips":1000,"p50":10}"#.into(),
        };
        let other = Sample {
            round: 1,
            cpu_seconds: 1.5,
            ..sample.clone()
        };
        let samples = [sample, other];
        let cpu = mean(
            &samples,
            Server::Floor,
            (true, 1, 64),
            Sample::cpu_us_per_round_trip,
        );
        assert_eq!(cpu, Some(1000.0), "(500 + 1500) / 2 us per round trip");
        assert_eq!(
            mean(
                &samples,
                Server::Tokio,
                (true, 1, 64),
                Sample::cpu_us_per_round_trip
            ),
            None
        );
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(ratio(Some(3.0), None), "—");
        assert!(
            results_json("m", ("w", ROUNDS), &samples, None, &[]).contains("\"server\":\"floor\"")
        );
    }

    #[test]
    fn the_host_ratio_table_is_left_out_when_only_wine_was_measured() {
        let wine = Sample {
            server: Server::WineOurs,
            pinned: false,
            connections: 1,
            size: 64,
            round: 0,
            cpu_seconds: 0.5,
            json: r#"{"round_trips":10,"all_round_trips":1000,"p50":10}"#.into(),
        };
        let wine_only = tables(std::slice::from_ref(&wine), None, &[]);
        assert!(!wine_only.contains("### Ratios"), "{wine_only}");
        assert!(wine_only.contains("### Under Wine"), "{wine_only}");
        let host = Sample {
            server: Server::Tokio,
            ..wine.clone()
        };
        let both = tables(&[wine, host], None, &[]);
        assert!(both.contains("### Ratios"), "{both}");
        assert!(both.contains("### Under Wine"), "{both}");
    }

    #[test]
    fn connections_count_until_the_server_closes_them() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(unclosed_connections(port).unwrap(), 0, "the listener alone");
        let in_backlog = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        assert_eq!(
            unclosed_connections(port).unwrap(),
            2,
            "one accepted, one in the backlog; the clients' own ends are not on the port"
        );
        drop(client);
        drop(in_backlog);
        // The server has not closed its end (`CLOSE_WAIT`), nor the one still in its backlog.
        assert_eq!(unclosed_connections(port).unwrap(), 2);
        drop(served);
        let (backlogged, _) = listener.accept().unwrap();
        drop(backlogged);
        let waited = wait_until_closed(port, Duration::from_secs(5)).unwrap();
        assert_eq!(
            waited, None,
            "both closed by the server: nothing to wait for"
        );
    }

    #[test]
    fn waiting_for_connections_the_server_keeps_open_fails_naming_them() {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(client);
        let e = wait_until_closed(port, Duration::from_millis(50)).unwrap_err();
        assert!(
            e.contains("still holds 1 of 1 earlier connection(s)"),
            "{e}"
        );
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(served);
        });
        let (open, took) = wait_until_closed(port, Duration::from_secs(5))
            .unwrap()
            .expect("one connection to wait for");
        closer.join().unwrap();
        assert_eq!(open, 1);
        assert!(took >= Duration::from_millis(50), "{took:?}");
    }

    #[test]
    fn a_failed_cell_quotes_only_what_the_drivers_logged_during_it() {
        let dir = std::env::temp_dir().join(format!("bench-echo-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("drivers.log");
        std::fs::write(
            &log,
            "0114:warn:debugstr:x: wskecho: listening on 127.0.0.1:7\n",
        )
        .unwrap();
        let start = log_length(&log);
        assert_eq!(
            logged_since(&log, start),
            format!("; the driver logged nothing meanwhile ({})", log.display())
        );
        let mut more = String::from("0128:fixme:netio:wsk_disconnect stub\n");
        for i in 0..10 {
            writeln!(
                more,
                "0128:warn:debugstr:x: wskecho: connection limit 1024 reached; reset {i}"
            )
            .unwrap();
        }
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(&more);
        std::fs::write(&log, text).unwrap();
        let report = logged_since(&log, start);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            report.starts_with("; the driver logged 10 line(s) meanwhile"),
            "{report}"
        );
        assert!(report.contains("\n    wskecho: connection limit 1024 reached; reset 0"));
        assert!(!report.contains("listening"), "{report}");
        assert!(!report.contains("wsk_disconnect"), "{report}");
        assert!(
            !report.contains("reset 9"),
            "at most {LOGGED_LINES} lines: {report}"
        );
        assert!(report.ends_with("\n    ..."), "{report}");
    }
}

#[cfg(test)]
mod plot_tests {
    use super::*;

    #[test]
    fn the_plot_draws_every_server_curve_in_its_colour() {
        let mut samples = Vec::new();
        for (server, base) in Server::ALL.iter().zip([50.0, 100.0, 150.0, 200.0, 250.0]) {
            samples.push(Sample {
                server: *server,
                pinned: true,
                connections: 1,
                size: 64,
                round: 0,
                cpu_seconds: 0.1,
                json: format!(
                    r#"{{"0.5":{base},"0.9":{},"0.99":{},"0.999":{},"0.9999":{}}}"#,
                    base * 2.0,
                    base * 10.0,
                    base * 30.0,
                    base * 100.0
                ),
            });
        }
        let canvas = latency_plot(&samples);
        let png = canvas.to_png();
        std::fs::write(std::env::temp_dir().join("bench-echo-plot-test.png"), &png).unwrap();
        for server in Server::ALL {
            assert!(
                canvas.count(server.color()) > 100,
                "{} drawn",
                server.name()
            );
        }
        assert_eq!(decade_label(2.0), "100US");
        assert_eq!(decade_label(3.0), "1MS");
        assert_eq!(decade_label(6.0), "1S");
    }
}
