//! The host kernel's pool per idle connection, for `cargo xtask bench-idle`: `ours` (the echo
//! driver, `wskecho`, DPC runner), `ours-events` (the same with `EventDriven` 1) or `floor` (the callback chain, `wskfloor`), both with 16 KiB
//! receive buffers from nonpaged pool. Ours serves at most 1,024 connections (its default and
//! limit): past that its clients are reset and the run fails.
//!
//! `idle_pool <ours|ours-events|floor> <connections>` boots the host kernel (`Config::default()`), loads
//! the driver through its `DriverEntry` on a loopback port, makes one echo round trip on a
//! probe connection and closes it, reads `wsk_host::testing::kernel_usage()` once it settles
//! (0 connections), opens the connections (each after one echo round trip, so its receive is
//! posted again) and reads it again. Prints one line per reading,
//! `usage <which> <connections> <pool blocks> <pool bytes> <IRPs> <MDLs>` followed by the pool
//! by tag, `tag <which> <connections> <tag> <blocks> <bytes>` (where the bytes go), then closes the
//! connections, unloads the driver and fails unless the verifier's report is clean.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use wsk_benches::{idle, load};
use wsk_host::testing::{KernelUsage, kernel_usage, pool_by_tag};
use wsk_host::{Config, Kernel};

mod common;

/// Bound on start-up and on a reading settling.
const BOUND: Duration = Duration::from_mins(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str);
    let connections: Option<usize> = args.get(1).and_then(|n| n.parse().ok());
    let (Some(which @ ("ours" | "ours-events" | "floor")), Some(connections)) =
        (which, connections)
    else {
        eprintln!("usage: idle_pool <ours|ours-events|floor> <connections>");
        return ExitCode::from(2);
    };
    match run(which, connections) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("idle_pool: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The settled kernel usage (a note on stderr when it kept moving).
fn settled_usage(what: &str) -> KernelUsage {
    let Ok((usage, steady)) =
        idle::settled(BOUND, || Ok::<_, std::convert::Infallible>(kernel_usage()));
    if !steady {
        eprintln!("idle_pool: {what}: the kernel usage still moved after {BOUND:?}");
    }
    usage
}

fn print_usage(which: &str, connections: usize, usage: KernelUsage) {
    println!(
        "usage {which} {connections} {} {} {} {}",
        usage.pool_blocks, usage.pool_bytes, usage.irps, usage.mdls
    );
    for (tag, blocks, bytes) in pool_by_tag() {
        println!("tag {which} {connections} {tag} {blocks} {bytes}");
    }
}

fn run(which: &str, connections: usize) -> Result<(), String> {
    let kernel = Kernel::boot(Config::default());
    let port = load::free_loopback_port()?;
    let (driver, ready) = common::load_server(&kernel, which, port)?;
    kernel.wait_for_log(ready, &["not started", "cannot listen"], BOUND)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // One connection served and closed first, so what the first connection allocates once
    // (a lookaside, a reserve) is in the baseline, not charged to the idle connections.
    drop(idle::open_idle(addr, 1)?);
    print_usage(which, 0, settled_usage("0 connections"));
    let streams = idle::open_idle(addr, connections)?;
    print_usage(
        which,
        connections,
        settled_usage(&format!("{connections} connections")),
    );
    drop(streams);
    let report = kernel.unload(driver);
    if !report.is_clean() {
        return Err(format!("unload report: {report}"));
    }
    let bugchecks = kernel.take_bugchecks();
    if !bugchecks.is_empty() {
        return Err(format!("bugchecks: {bugchecks:?}"));
    }
    Ok(())
}
