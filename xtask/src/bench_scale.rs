//! `cargo xtask bench-scale [--totals LIST] [--active A] [--busy B] [--seconds S] [--size N]
//! [--servers LIST]`: the echo server with many idle connections (issue 11): what a round trip
//! costs the server at 10, 1,000 and 10,000 connections, and 10,000 idle connections with 100
//! active ones.
//!
//! Each cell starts a fresh server (a separate release-build process serving on a loopback
//! port: ours is `wskecho` on the host kernel, built with its `scale` feature (a task pool of
//! 12,288) and run with `--max-connections 12288`, tokio is
//! `tokio_echo`), opens its idle connections (each after one echo round trip, so the server
//! has posted its receive again), then runs the closed-loop client
//! (`wsk_benches::closed_loop`, one message in flight per active connection) for the measured
//! time, and finally checks that every idle connection is still served (one more round trip
//! each). Figures per cell: round trips per second, the server's CPU time (`utime + stime` from
//! `/proc/<pid>/stat`, over the closed loop's whole run) per round trip, the round trip's
//! median and 99th percentile, and the server's resident set per idle connection.
//!
//! The cells: for each total T of `--totals` (default 10, 1000, 10000), T - A idle and A
//! active connections (`--active`, default 10), so that every cell does the same work and only
//! the connections held differ; then `--busy` (default 100) active connections beside the
//! largest total idle (10,000 idle + 100 active). The table gives each cell's CPU per round
//! trip over the first cell's (the target: 10,000 within 1.2 times 10).
//!
//! Descriptors: this process holds one per connection; it raises its soft `RLIMIT_NOFILE` to
//! what the largest cell needs (up to the hard limit) and fails, saying so, when the hard
//! limit is too low. `wskecho` raises its own for its connection limit; `tokio_echo` inherits
//! ours. Instructions are not counted: the machine has no hardware counters for `perf`, and
//! callgrind at 10,000 connections would take hours.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wsk_benches::{closed_loop, idle, load};

use crate::bench::build_release;
use crate::bench_echo_table::cpu_seconds;
use crate::bench_idle::{Running, describe_machine, settled_rss, wait_listening};

/// The echo driver's connection limit in its `scale` build (`wskecho::echo::MAX_CONNECTIONS`).
const OURS_MAX_CONNECTIONS: usize = 12 * 1024;
/// Descriptors this process needs besides its connections (std, the server's pipes, slack).
const DESCRIPTORS_BESIDES_CONNECTIONS: usize = 64;
/// Warm-up before the measured time (not recorded; its round trips still count for CPU).
const WARMUP: Duration = Duration::from_secs(1);
/// The check message each idle connection echoes after the closed loop.
const CHECK_MESSAGE: &[u8] = b"still served";

const USAGE: &str = "usage: cargo xtask bench-scale [--totals LIST] [--active A] [--busy B] \
                     [--seconds S] [--size N] [--servers LIST]
  LIST: comma-separated; totals default 10,1000,10000 (each cell: total - A idle, A active;
  A default 10), then B (default 100; 0: none) active beside the largest total idle.
  S seconds measured per cell (default 5), N-byte messages (default 64), servers ours,tokio.";

/// The servers measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Ours,
    Tokio,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Tokio => "tokio",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "ours" => Some(Server::Ours),
            "tokio" => Some(Server::Tokio),
            _ => None,
        }
    }
}

/// The settings from the command line.
#[derive(Debug, PartialEq)]
struct Flags {
    totals: Vec<usize>,
    active: usize,
    busy: usize,
    seconds: u64,
    size: usize,
    servers: Vec<Server>,
}

/// One cell: idle and active connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cell {
    idle: usize,
    active: usize,
}

impl Flags {
    /// The cells in order: each total with `active` active, then `busy` beside the largest.
    fn cells(&self) -> Vec<Cell> {
        let mut cells: Vec<Cell> = self
            .totals
            .iter()
            .map(|&total| Cell {
                idle: total - self.active,
                active: self.active,
            })
            .collect();
        if self.busy > 0
            && let Some(largest) = self.totals.iter().max()
        {
            cells.push(Cell {
                idle: largest - self.active,
                active: self.busy,
            });
        }
        cells
    }
}

fn parse(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags {
        totals: vec![10, 1000, 10_000],
        active: 10,
        busy: 100,
        seconds: 5,
        size: 64,
        servers: vec![Server::Ours, Server::Tokio],
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let count = || -> Result<usize, String> {
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a count\n{USAGE}"))
        };
        match flag.as_str() {
            "--totals" => {
                flags.totals = value
                    .split(',')
                    .map(|t| t.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("--totals: {value:?} is not a list of counts\n{USAGE}"))?;
            }
            "--active" => flags.active = count()?,
            "--busy" => flags.busy = count()?,
            "--seconds" => flags.seconds = u64::try_from(count()?).unwrap_or(u64::MAX),
            "--size" => flags.size = count()?,
            "--servers" => {
                flags.servers = value
                    .split(',')
                    .map(|s| Server::parse(s.trim()))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--servers: {value:?}: ours or tokio\n{USAGE}"))?;
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    if flags.active == 0 || flags.seconds == 0 || flags.size == 0 || flags.servers.is_empty() {
        return Err(format!(
            "--active, --seconds, --size and --servers may not be 0 or empty\n{USAGE}"
        ));
    }
    let largest = flags.totals.iter().max().copied().unwrap_or(0);
    if flags.totals.is_empty() || flags.totals.iter().any(|&t| t < flags.active) {
        return Err(format!(
            "every total must be at least --active ({})\n{USAGE}",
            flags.active
        ));
    }
    // The probe connection and the check's own are on top: keep room under the limit.
    if largest - flags.active + flags.active.max(flags.busy) + 2 > OURS_MAX_CONNECTIONS {
        return Err(format!(
            "at most {OURS_MAX_CONNECTIONS} connections at once (the echo driver's limit)\n{USAGE}"
        ));
    }
    Ok(flags)
}

/// The built programs.
struct Programs {
    wskecho: PathBuf,
    tokio_echo: PathBuf,
}

impl Programs {
    /// The command serving echo on 127.0.0.1:`port`.
    fn server(&self, server: Server, port: u16) -> Command {
        let port = port.to_string();
        match server {
            Server::Ours => {
                let mut command = Command::new(&self.wskecho);
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--max-connections",
                    &OURS_MAX_CONNECTIONS.to_string(),
                ]);
                command
            }
            Server::Tokio => {
                let mut command = Command::new(&self.tokio_echo);
                command.arg(port);
                command
            }
        }
    }
}

/// One cell's figures for one server.
struct Measured {
    server: Server,
    cell: Cell,
    rate: f64,
    cpu_per_round_trip: f64,
    p50_micros: f64,
    p99_micros: f64,
    rss_per_idle: Option<f64>,
    connect_seconds: f64,
}

/// Runs the benchmark and prints the table.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let flags = parse(args)?;
    let cells = flags.cells();
    let most = cells.iter().map(|c| c.idle + c.active).max().unwrap_or(0);
    load::raise_descriptor_limit((most + DESCRIPTORS_BESIDES_CONNECTIONS) as u64)
        .map_err(|why| format!("bench-scale: {why} (raise the hard limit: `ulimit -Hn`)"))?;
    let programs = build(root)?;
    let duration = Duration::from_secs(flags.seconds);
    let mut results = Vec::new();
    for &cell in &cells {
        for &server in &flags.servers {
            let measured = measure(&programs, server, cell, flags.size, duration)?;
            println!(
                "{} idle {} active {}: {:.0} round trips/s, server CPU {:.2} us per round trip, \
                 p50 {:.1} us, p99 {:.1} us, RSS per idle connection {}, idle connections \
                 opened in {:.1} s",
                server.name(),
                cell.idle,
                cell.active,
                measured.rate,
                measured.cpu_per_round_trip * 1e6,
                measured.p50_micros,
                measured.p99_micros,
                measured
                    .rss_per_idle
                    .map_or_else(|| "-".to_owned(), |b| format!("{b:.0} B")),
                measured.connect_seconds,
            );
            results.push(measured);
        }
    }
    println!(
        "\n{}-byte messages, {} s measured per cell after {} s warm-up, release builds; {}",
        flags.size,
        flags.seconds,
        WARMUP.as_secs(),
        describe_machine()
    );
    print!("{}", table(&results));
    Ok(())
}

/// The table: one line per cell and server, with CPU per round trip over the server's first
/// cell.
fn table(results: &[Measured]) -> String {
    let mut text = format!(
        "{:<6} {:>7} {:>7} {:>12} {:>14} {:>9} {:>9} {:>9} {:>10}\n",
        "server",
        "idle",
        "active",
        "round trip/s",
        "CPU us/trip",
        "x first",
        "p50 us",
        "p99 us",
        "RSS/idle B"
    );
    for result in results {
        let first = results
            .iter()
            .find(|r| r.server == result.server)
            .map_or(f64::NAN, |r| r.cpu_per_round_trip);
        let _ = writeln!(
            text,
            "{:<6} {:>7} {:>7} {:>12.0} {:>14.2} {:>9.2} {:>9.1} {:>9.1} {:>10}",
            result.server.name(),
            result.cell.idle,
            result.cell.active,
            result.rate,
            result.cpu_per_round_trip * 1e6,
            result.cpu_per_round_trip / first,
            result.p50_micros,
            result.p99_micros,
            result
                .rss_per_idle
                .map_or_else(|| "-".to_owned(), |b| format!("{b:.0}")),
        );
    }
    text
}

/// Builds the servers (release).
fn build(root: &Path) -> Result<Programs, String> {
    build_release(root, &["wsk-driver-example"], &["--features", "scale"])?;
    let release = build_release(root, &["wsk-benches"], &["--example", "tokio_echo"])?;
    Ok(Programs {
        wskecho: release.join("wsk-driver-example"),
        tokio_echo: release.join("examples").join("tokio_echo"),
    })
}

/// One cell on a fresh `server`.
fn measure(
    programs: &Programs,
    server: Server,
    cell: Cell,
    size: usize,
    duration: Duration,
) -> Result<Measured, String> {
    let name = server.name();
    let port = load::free_loopback_port()?;
    let running = Running::start_quiet(programs.server(server, port), name)?;
    let pid = running.child.id();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let context = |e: String| format!("{name} ({} idle, {} active): {e}", cell.idle, cell.active);
    wait_listening(addr).map_err(context)?;
    // One connection served and closed first, so one-time allocations are in the baseline.
    drop(idle::open_idle(addr, 1).map_err(context)?);
    let rss_before = settled_rss(name, pid)?;
    let opening = Instant::now();
    let mut idle_streams = idle::open_idle(addr, cell.idle).map_err(context)?;
    let connect_seconds = opening.elapsed().as_secs_f64();
    let rss_idle = settled_rss(name, pid)?;
    let cpu_before = cpu_seconds(pid)?;
    let result = closed_loop::run(addr, cell.active, size, WARMUP, duration).map_err(context)?;
    let cpu_after = cpu_seconds(pid)?;
    check_still_served(&mut idle_streams).map_err(context)?;
    drop(idle_streams);
    running.stop(server == Server::Tokio).map_err(context)?;
    #[allow(clippy::cast_precision_loss, reason = "counts for a per-trip figure")]
    let cpu_per_round_trip = (cpu_after - cpu_before) / result.all_round_trips.max(1) as f64;
    Ok(Measured {
        server,
        cell,
        rate: result.rate(),
        cpu_per_round_trip,
        p50_micros: result.micros_at(0.5),
        p99_micros: result.micros_at(0.99),
        rss_per_idle: idle::per_connection(rss_before, rss_idle, cell.idle),
        connect_seconds,
    })
}

/// One more byte-exact round trip on every idle connection: the server still serves each.
fn check_still_served(streams: &mut [TcpStream]) -> Result<(), String> {
    let mut back = [0u8; CHECK_MESSAGE.len()];
    for (index, stream) in streams.iter_mut().enumerate() {
        stream
            .write_all(CHECK_MESSAGE)
            .map_err(|e| format!("idle connection {index}: write after the run: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("idle connection {index}: read after the run: {e}"))?;
        if back != CHECK_MESSAGE {
            return Err(format!("idle connection {index}: the echo differs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::strings;

    #[test]
    fn default_cells_are_10_1000_10000_with_10_active_then_100_active() {
        let flags = parse(&[]).unwrap();
        assert_eq!(
            flags.cells(),
            [
                Cell {
                    idle: 0,
                    active: 10
                },
                Cell {
                    idle: 990,
                    active: 10
                },
                Cell {
                    idle: 9990,
                    active: 10
                },
                Cell {
                    idle: 9990,
                    active: 100
                },
            ]
        );
        assert_eq!(flags.servers, [Server::Ours, Server::Tokio]);
    }

    #[test]
    fn flags_parse_and_bad_ones_are_errors() {
        let flags = parse(&strings(&[
            "--totals",
            "5,50",
            "--active",
            "5",
            "--busy",
            "0",
            "--servers",
            "ours",
        ]))
        .unwrap();
        assert_eq!(
            flags.cells(),
            [
                Cell { idle: 0, active: 5 },
                Cell {
                    idle: 45,
                    active: 5
                }
            ]
        );
        assert_eq!(flags.servers, [Server::Ours]);
        for bad in [
            &["--totals"][..],
            &["--totals", "10,x"],
            &["--totals", "5", "--active", "10"],
            &["--totals", "20000"],
            &["--active", "0"],
            &["--servers", "floor"],
            &["--seconds", "0"],
            &["--other", "1"],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_table_divides_by_the_servers_first_cell() {
        let measured = |server, idle, cpu| Measured {
            server,
            cell: Cell { idle, active: 10 },
            rate: 1000.0,
            cpu_per_round_trip: cpu,
            p50_micros: 10.0,
            p99_micros: 20.0,
            rss_per_idle: None,
            connect_seconds: 0.0,
        };
        let text = table(&[
            measured(Server::Ours, 0, 10e-6),
            measured(Server::Tokio, 0, 5e-6),
            measured(Server::Ours, 990, 12e-6),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].contains(" 1.00 "), "{}", lines[1]);
        assert!(lines[2].contains(" 1.00 "), "{}", lines[2]);
        assert!(lines[3].contains(" 1.20 "), "{}", lines[3]);
    }
}
