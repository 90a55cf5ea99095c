//! Instructions per echo round trip of a *server* driver on the host kernel, for
//! `cargo xtask bench-echo`'s callgrind figures: `ours` (the echo driver, `wskecho`, on
//! `wsk-net` and the DPC runner), `ours-events` (the same with `EventDriven` 1: WSK receive
//! event callbacks instead of receive IRPs), `ours-passive` (`wskecho` on the passive runner)
//! or `floor` (the callback chain, `wskfloor`).
//!
//! `echo_server_cost <ours|ours-events|ours-passive|floor> <round trips> [warm-up, default
//! 100]` boots the host kernel (`Config::default()`), loads the driver through its `DriverEntry` on a loopback port,
//! connects one plain `std::net` client from the main thread and runs the round trips (64 B
//! out, 64 B back, byte-exact), then unloads the driver and checks the verifier's report.
//! Under `valgrind --tool=callgrind --separate-threads=yes` every thread but the main one is
//! the server: the driver's completion routines and runner, and the host kernel's provider
//! and emulated CPUs. Two runs with different round-trip counts give the cost per round trip
//! with start-up and unload cancelled out.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use wsk_benches::load;
use wsk_host::{Config, Kernel};

mod common;

const MESSAGE: usize = 64;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str);
    let round_trips: Option<u64> = args.get(1).and_then(|n| n.parse().ok());
    let warmup: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
    let (Some(which @ ("ours" | "ours-events" | "ours-passive" | "floor")), Some(round_trips)) =
        (which, round_trips)
    else {
        eprintln!(
            "usage: echo_server_cost <ours|ours-events|ours-passive|floor> <round trips> [warm-up]"
        );
        return ExitCode::from(2);
    };
    match run(which, round_trips, warmup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("echo_server_cost: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(which: &str, round_trips: u64, warmup: u64) -> Result<(), String> {
    let kernel = Kernel::boot(Config::default());
    let port = load::free_loopback_port()?;
    let (driver, ready) = common::load_server(&kernel, which, port)?;
    kernel.wait_for_log(ready, &["not started"], Duration::from_mins(1))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(load::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut message = [0u8; MESSAGE];
    let mut back = [0u8; MESSAGE];
    for i in 0..warmup + round_trips {
        message[0] = u8::try_from(i % 251).unwrap_or(0);
        stream
            .write_all(&message)
            .map_err(|e| format!("write: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("read: {e}"))?;
        if back != message {
            return Err(format!("round trip {i}: the echo differs"));
        }
    }
    drop(stream);
    let report = kernel.unload(driver);
    if !report.is_clean() {
        return Err(format!("unload report: {report}"));
    }
    let bugchecks = kernel.take_bugchecks();
    if !bugchecks.is_empty() {
        return Err(format!("bugchecks: {bugchecks:?}"));
    }
    println!(
        "config: {which}, host kernel Config::default(), 1 connection, {MESSAGE} B messages, \
         {warmup} warm-up + {round_trips} round trips, unload clean"
    );
    Ok(())
}
