//! `cargo xtask bench-idle [--connections N] [--rounds R]`: memory per idle connection, ours
//! (the echo driver) vs the floor (the callback-chain driver) vs tokio (issue 11).
//!
//! Two figures, each the difference between 0 and N idle connections (every connection made
//! one echo round trip first, so the server has posted its receive again) divided by N:
//! - the host kernel's live pool (bytes, blocks, IRPs, MDLs) for ours and the floor, read
//!   in-process by `wsk-benches`' `idle_pool` example: on Windows a posted receive buffer is
//!   nonpaged pool, resident whatever it holds, and both drivers allocate only nonpaged pool;
//! - the server process's resident set (`/proc/<pid>/status` `VmRSS`) for ours (`wskecho`),
//!   the floor (`wskfloor`) and tokio (`tokio_echo`), each a separate release-build process
//!   serving on a loopback port, with the clients in this process.
//!
//! Each figure is the median over the rounds. Prints the readings and a table with the
//! ratios ours/floor and ours/tokio.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wsk_benches::idle;

use crate::bench::build_release;

/// Idle connections by default: the figure.
const DEFAULT_CONNECTIONS: usize = 1000;
/// The echo driver serves at most 1,024 connections at once (its default and limit); one is
/// kept free for the warm-up connection the server may still be closing.
const MAX_CONNECTIONS: usize = 1023;
/// Rounds by default; each figure is their median.
const DEFAULT_ROUNDS: usize = 3;
/// Bound on a server starting to listen, on a reading settling and on a server stopping.
const BOUND: Duration = Duration::from_secs(30);

const USAGE: &str = "usage: cargo xtask bench-idle [--connections N] [--rounds R]
  N idle connections (1 to 1023, default 1000), R rounds (default 3; medians reported)";

/// The servers whose resident set is measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Server {
    Ours,
    Floor,
    Tokio,
}

impl Server {
    const ALL: [Server; 3] = [Server::Ours, Server::Floor, Server::Tokio];

    fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Floor => "floor",
            Server::Tokio => "tokio",
        }
    }
}

/// The built release programs.
struct Programs {
    wskecho: PathBuf,
    wskfloor: PathBuf,
    tokio_echo: PathBuf,
    idle_pool: PathBuf,
}

impl Programs {
    /// The command serving echo on 127.0.0.1:`port`.
    fn server(&self, server: Server, port: u16) -> Command {
        let port = port.to_string();
        let mut command;
        match server {
            Server::Ours => {
                command = Command::new(&self.wskecho);
                command.args(["--port", &port, "--bind", "127.0.0.1"]);
            }
            Server::Floor => {
                command = Command::new(&self.wskfloor);
                command.args(["--port", &port]);
            }
            Server::Tokio => {
                command = Command::new(&self.tokio_echo);
                command.arg(port);
            }
        }
        command
    }
}

/// The settings from the command line.
#[derive(Debug, PartialEq, Eq)]
struct Flags {
    connections: usize,
    rounds: usize,
}

fn parse(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags {
        connections: DEFAULT_CONNECTIONS,
        rounds: DEFAULT_ROUNDS,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number: usize = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a count\n{USAGE}"))?;
        match flag.as_str() {
            "--connections" if (1..=MAX_CONNECTIONS).contains(&number) => {
                flags.connections = number;
            }
            "--rounds" if number > 0 => flags.rounds = number,
            "--connections" | "--rounds" => {
                return Err(format!("{flag}: {number} is out of range\n{USAGE}"));
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(flags)
}

/// Runs the benchmark and prints the table.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let flags = parse(args)?;
    let programs = build(root)?;
    let connections = flags.connections;
    let mut pool = Vec::new();
    let mut rss = Vec::new();
    for round in 0..flags.rounds {
        println!("\n--- round {round}");
        for which in ["ours", "floor"] {
            let (without, with) = pool_readings(&programs.idle_pool, which, connections)?;
            println!(
                "pool {which}: 0 connections: {without:?}; {connections}: {with:?} \
                 (blocks, bytes, IRPs, MDLs)"
            );
            pool.push((which, round, without, with));
        }
        for server in Server::ALL {
            let (without, with) = rss_readings(&programs, server, connections)?;
            println!(
                "rss {}: 0 connections: {without} B; {connections}: {with} B",
                server.name()
            );
            rss.push((server, without, with));
        }
    }
    let pool_median = |which: &str, field: usize| {
        median(
            pool.iter()
                .filter(|(w, ..)| *w == which)
                .filter_map(|(_, _, without, with)| {
                    idle::per_connection(without[field], with[field], connections)
                }),
        )
    };
    let rss_median = |server: Server| {
        median(
            rss.iter()
                .filter(|(s, ..)| *s == server)
                .filter_map(|(_, without, with)| {
                    idle::per_connection(*without, *with, connections)
                }),
        )
    };
    let mut rows = Vec::new();
    for (label, field) in [
        ("nonpaged pool bytes", 1),
        ("nonpaged pool blocks", 0),
        ("IRPs", 2),
        ("MDLs", 3),
    ] {
        rows.push(Row {
            label,
            ours: pool_median("ours", field),
            floor: pool_median("floor", field),
            tokio: None,
        });
    }
    rows.push(Row {
        label: "process RSS bytes",
        ours: rss_median(Server::Ours),
        floor: rss_median(Server::Floor),
        tokio: rss_median(Server::Tokio),
    });
    println!(
        "\nper idle connection, {connections} connections (each after one echo round trip), \
         median of {} round(s), release builds; {}",
        flags.rounds,
        describe_machine()
    );
    print!("{}", table(&rows));
    Ok(())
}

/// One line of the table: a figure per idle connection for each server.
struct Row {
    label: &'static str,
    ours: Option<f64>,
    floor: Option<f64>,
    tokio: Option<f64>,
}

/// The table as text: a figure per server, `-` where none, and the ratios.
fn table(rows: &[Row]) -> String {
    let cell = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    // Nothing per connection on both sides is a ratio of 1; something over nothing is none.
    let ratio = |ours: Option<f64>, other: Option<f64>| match (ours, other) {
        (Some(ours), Some(other)) if other != 0.0 => format!("{:.2}", ours / other),
        (Some(ours), Some(_)) if ours.abs() < f64::EPSILON => "1.00".to_owned(),
        _ => "-".to_owned(),
    };
    let mut text = format!(
        "{:<22} {:>10} {:>10} {:>10} {:>11} {:>11}\n",
        "per idle connection", "ours", "floor", "tokio", "ours/floor", "ours/tokio"
    );
    for row in rows {
        let _ = writeln!(
            text,
            "{:<22} {:>10} {:>10} {:>10} {:>11} {:>11}",
            row.label,
            cell(row.ours),
            cell(row.floor),
            cell(row.tokio),
            ratio(row.ours, row.floor),
            ratio(row.ours, row.tokio),
        );
    }
    text
}

/// The median of `values`; `None` when there are none.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[middle]
    } else {
        f64::midpoint(values[middle - 1], values[middle])
    })
}

/// Builds the three servers and the pool probe (release).
fn build(root: &Path) -> Result<Programs, String> {
    build_release(root, &["wsk-driver-example", "wsk-floor-driver"], &[])?;
    let release = build_release(
        root,
        &["wsk-benches"],
        &["--example", "tokio_echo", "--example", "idle_pool"],
    )?;
    let examples = release.join("examples");
    Ok(Programs {
        wskecho: release.join("wsk-driver-example"),
        wskfloor: release.join("wsk-floor-driver"),
        tokio_echo: examples.join("tokio_echo"),
        idle_pool: examples.join("idle_pool"),
    })
}

/// The pool readings `[blocks, bytes, IRPs, MDLs]` at 0 and `connections` idle connections
/// from one `idle_pool` run.
fn pool_readings(
    idle_pool: &Path,
    which: &str,
    connections: usize,
) -> Result<([u64; 4], [u64; 4]), String> {
    let output = Command::new(idle_pool)
        .args([which, &connections.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start {}: {e}", idle_pool.display()))?;
    if !output.status.success() {
        return Err(format!(
            "idle_pool {which} {connections}: {}",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reading = |count: usize| parse_usage(&stdout, which, count);
    Ok((reading(0)?, reading(connections)?))
}

/// The `usage <which> <connections> <blocks> <bytes> <IRPs> <MDLs>` line of `idle_pool`'s
/// output for `connections`.
fn parse_usage(stdout: &str, which: &str, connections: usize) -> Result<[u64; 4], String> {
    let prefix = format!("usage {which} {connections} ");
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .ok_or_else(|| format!("idle_pool printed no {prefix:?} line:\n{stdout}"))?;
    let numbers: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("idle_pool line {line:?}: {e}"))?;
    numbers
        .try_into()
        .map_err(|_| format!("idle_pool line {line:?}: not four numbers"))
}

/// A running server: stopped with SIGTERM (then SIGKILL after [`BOUND`]) when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
}

impl Running {
    /// Starts the server `command` (called `name` in the error) with its output discarded.
    pub(crate) fn start_quiet(mut command: Command, name: &str) -> Result<Self, String> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {name}: {e}"))?;
        Ok(Self { child })
    }

    /// Sends SIGTERM and waits (bounded) for the exit; fails unless the exit is clean (the
    /// drivers' host programs exit non-zero when the unload leaks or the verifier objects).
    /// `dies_of_sigterm`: the server has no SIGTERM handler (`tokio_echo`), so dying of the
    /// signal is its clean exit.
    pub(crate) fn stop(mut self, dies_of_sigterm: bool) -> Result<(), String> {
        /// SIGTERM's number on Linux.
        const SIGTERM: i32 = 15;
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + BOUND;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) if dies_of_sigterm && status.signal() == Some(SIGTERM) => {
                    return Ok(());
                }
                Ok(Some(status)) => return Err(format!("exited with {status}")),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("still running {BOUND:?} after SIGTERM"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's resident set at 0 and `connections` idle connections, in bytes.
fn rss_readings(
    programs: &Programs,
    server: Server,
    connections: usize,
) -> Result<(u64, u64), String> {
    let name = server.name();
    let port = wsk_benches::load::free_loopback_port()?;
    let running = Running::start_quiet(programs.server(server, port), name)?;
    let pid = running.child.id();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening(addr).map_err(|e| format!("{name}: {e}"))?;
    // As idle_pool: one connection served and closed first, so one-time allocations are in
    // the baseline.
    drop(idle::open_idle(addr, 1).map_err(|e| format!("{name}: {e}"))?);
    let without = settled_rss(name, pid)?;
    let streams = idle::open_idle(addr, connections).map_err(|e| format!("{name}: {e}"))?;
    let with = settled_rss(name, pid)?;
    drop(streams);
    running
        .stop(server == Server::Tokio)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok((without, with))
}

/// The resident set of `pid` once two readings agree (a note when it kept moving).
pub(crate) fn settled_rss(name: &str, pid: u32) -> Result<u64, String> {
    let (rss, steady) = idle::settled(BOUND, || idle::vm_rss_bytes(pid))?;
    if !steady {
        eprintln!("bench-idle: {name}: the resident set still moved after {BOUND:?}");
    }
    Ok(rss)
}

/// Waits (bounded) until something accepts connections at `addr`.
pub(crate) fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listened on {addr} within {BOUND:?}"))
}

/// CPUs and model, for the table's heading.
pub(crate) fn describe_machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPUs ({model})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::strings;

    #[test]
    fn flags_default_and_parse_and_bad_ones_are_errors() {
        assert_eq!(
            parse(&[]),
            Ok(Flags {
                connections: 1000,
                rounds: 3
            })
        );
        assert_eq!(
            parse(&strings(&["--connections", "10", "--rounds", "1"])),
            Ok(Flags {
                connections: 10,
                rounds: 1
            })
        );
        for bad in [
            &["--connections"][..],
            &["--connections", "0"],
            &["--connections", "1024"],
            &["--connections", "many"],
            &["--rounds", "0"],
            &["--other", "1"],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usage_lines_are_found_by_count_and_checked() {
        let stdout = "usage ours 0 10 2000 1 1\nusage ours 5 15 84000 6 6\n";
        assert_eq!(parse_usage(stdout, "ours", 0), Ok([10, 2000, 1, 1]));
        assert_eq!(parse_usage(stdout, "ours", 5), Ok([15, 84000, 6, 6]));
        assert!(parse_usage(stdout, "floor", 0).is_err());
        assert!(parse_usage("usage ours 0 1 2 3\n", "ours", 0).is_err());
        assert!(parse_usage("usage ours 0 1 2 x 4\n", "ours", 0).is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    /// A table line's five figures, last first.
    fn cells(line: &str) -> Vec<&str> {
        line.split_whitespace().rev().take(5).collect()
    }

    #[test]
    fn table_gives_ratios_and_dashes() {
        let text = table(&[
            Row {
                label: "nonpaged pool bytes",
                ours: Some(100.0),
                floor: Some(200.0),
                tokio: None,
            },
            Row {
                label: "process RSS bytes",
                ours: Some(300.0),
                floor: None,
                tokio: Some(100.0),
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(cells(lines[1]), ["-", "0.50", "-", "200.0", "100.0"]);
        assert_eq!(cells(lines[2]), ["3.00", "-", "100.0", "-", "300.0"]);
    }
}
