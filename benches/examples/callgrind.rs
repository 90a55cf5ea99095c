//! Runs one executor workload (see `benches/benches/workloads`) a given number of times, for
//! instruction counts under callgrind:
//!
//! ```text
//! callgrind <wake_poll|spawn|many_woken> <ours|ours-join|embassy|floor> <iterations>
//! ```
//!
//! Set-up runs in every invocation, so the cost of one step is the difference between a run
//! with N iterations and one with 0, divided by N. `cargo xtask bench` does that for every
//! workload and prints the table (see benches/README.md).

use std::hint::black_box;
use std::process::ExitCode;

#[path = "../benches/workloads/mod.rs"]
mod workloads;

use workloads::{embassy, floor, ours};

/// Calls `step` `iterations` times.
fn repeat(iterations: u64, mut step: impl FnMut()) {
    for _ in 0..iterations {
        step();
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workload, implementation, iterations] = args.as_slice() else {
        eprintln!(
            "usage: callgrind <wake_poll|spawn|many_woken> <ours|ours-join|embassy|floor> \
             <iterations>"
        );
        return ExitCode::from(2);
    };
    let Ok(iterations) = iterations.parse::<u64>() else {
        eprintln!("callgrind: iterations must be a number, not {iterations:?}");
        return ExitCode::from(2);
    };
    match (workload.as_str(), implementation.as_str()) {
        ("wake_poll", "ours") => {
            let (step, slot) = ours::wake_poll();
            repeat(iterations, step);
            assert_eq!(slot.polls(), iterations + 1, "one poll per wake");
        }
        ("wake_poll", "embassy") => {
            let (step, slot) = embassy::wake_poll();
            repeat(iterations, step);
            assert_eq!(slot.polls(), iterations + 1, "one poll per wake");
        }
        ("wake_poll", "floor") => {
            let (step, runs) = floor::wake_poll();
            repeat(iterations, step);
            assert_eq!(
                runs.load(std::sync::atomic::Ordering::Relaxed),
                iterations + 1,
                "one run per wake"
            );
        }
        ("many_woken", "ours") => {
            let (step, slots) = ours::many_woken();
            repeat(iterations, step);
            for slot in slots {
                assert_eq!(slot.polls(), iterations + 1, "one poll per wake");
            }
        }
        ("spawn", "ours") => repeat(iterations, ours::spawn()),
        ("spawn", "ours-join") => repeat(iterations, ours::spawn_join()),
        ("spawn", "embassy") => repeat(iterations, embassy::spawn()),
        ("spawn", "floor") => repeat(iterations, floor::spawn()),
        _ => {
            eprintln!(
                "callgrind: unknown workload {workload:?} / implementation {implementation:?}"
            );
            return ExitCode::from(2);
        }
    }
    if workload == "spawn" {
        assert_eq!(workloads::sink(), iterations, "every spawned task ran");
    }
    black_box(workloads::pends());
    ExitCode::SUCCESS
}
