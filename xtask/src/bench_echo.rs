//! `cargo xtask bench --echo`: the cost of one echo round trip through `wsk-net` on the host
//! kernel (`benches/examples/echo_cost.rs`): instructions under callgrind, split by where they
//! run, and kernel allocations (see `benches/README.md`, "Echo round trip cost").
//!
//! The program runs under callgrind twice, with [`ROUND_TRIPS`] measured round trips each;
//! the difference of the two counts divided by the difference of the round trips cancels
//! boot, connection, warm-up, close and process start. Callgrind writes one file per thread
//! (`--separate-threads=yes`): the thread that runs the round trips makes the WSK calls, which
//! complete inline, and gives a repeatable count; the other threads' share is the provider's
//! reactor waking for readiness events, which varies with scheduling. The files stay in
//! `target/echo-cost/` for `callgrind_annotate`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bench::build_example;
use crate::callgrind::{self, Part};
use crate::driver::target_dir;

/// Measured round trips of the two runs.
const ROUND_TRIPS: [u64; 2] = [200, 1200];

/// The crates whose functions count as [`Part::Library`]: `wsk_net`, `wsk_executor`, the
/// `wsk_sys` helpers, and the benchmark's own loop (`echo_cost`), into which the library's
/// futures are inlined.
const LIBRARY: [&str; 4] = ["wsk_net::", "wsk_executor::", "wsk_sys::", "echo_cost::"];

/// How the figures name `part`.
fn label(part: Part) -> &'static str {
    match part {
        Part::Library => "library (wsk-net, wsk-executor, wsk-sys helpers, the loop)",
        Part::Host => "host kernel (wsk_host)",
        Part::Runtime => "std, libc and shared generic code (mostly the host kernel's)",
    }
}

/// What one run of the program gave.
struct Run {
    /// Instructions callgrind collected, all threads.
    total: u64,
    /// Instructions of the thread that runs the round trips (the kernel thread of
    /// `block_on`): the WSK calls, their inline completions and the library's futures.
    looping: u64,
    /// The loop thread's instructions by part.
    parts: BTreeMap<Part, u64>,
    /// The program's `per round trip:` line.
    per_round_trip: String,
    /// The program's `config:` line.
    config: String,
}

/// Builds the program, runs it under callgrind for both counts, and prints the figures.
pub fn run(root: &Path) -> Result<(), String> {
    callgrind::ensure_valgrind()?;
    let program = build_example(root, "echo_cost")?;
    let out_dir = target_dir(root).join("echo-cost");
    callgrind::fresh_dir(&out_dir)?;

    let [n1, n2] = ROUND_TRIPS;
    let first = measure(&program, &out_dir, n1)?;
    let second = measure(&program, &out_dir, n2)?;

    #[expect(
        clippy::cast_precision_loss,
        reason = "instruction counts are far below 2^52"
    )]
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (n2 - n1) as f64;
    println!("\n================ echo round trip cost ================");
    println!("{}", second.config);
    println!(
        "instructions per round trip, (run of {n2} - run of {n1}) / {}:",
        n2 - n1
    );
    println!(
        "  {:>8.0}  all threads ({} - {})",
        per(first.total, second.total),
        second.total,
        first.total
    );
    println!(
        "  {:>8.0}  the thread running the round trips ({} - {}), of which:",
        per(first.looping, second.looping),
        second.looping,
        first.looping
    );
    for part in Part::ALL {
        let get = |run: &Run| run.parts.get(&part).copied().unwrap_or(0);
        println!(
            "  {:>8.0}    {}",
            per(get(&first), get(&second)),
            label(part)
        );
    }
    let attributed: u64 = second.parts.values().sum();
    if attributed != second.looping {
        println!(
            "  (callgrind_annotate listed {attributed} of the loop thread's {} instructions)",
            second.looping
        );
    }
    println!(
        "  {:>8.0}  other threads (the WSK provider's reactor, woken by socket readiness; \
         varies with scheduling)",
        per(first.total - first.looping, second.total - second.looping)
    );
    println!(
        "kernel allocations {} (run of {n2}; the run of {n1}: {})",
        second.per_round_trip, first.per_round_trip
    );
    println!(
        "callgrind output, one file per thread: {}/callgrind.out.{n2}-NN \
         (callgrind_annotate --threshold=100 FILE)",
        out_dir.display()
    );
    Ok(())
}

/// Runs the program under callgrind with `round_trips` measured round trips, one output file
/// per thread.
fn measure(program: &Path, out_dir: &Path, round_trips: u64) -> Result<Run, String> {
    let out_file = out_dir.join(format!("callgrind.out.{round_trips}"));
    println!("\n=== callgrind: echo_cost {round_trips}");
    let output = callgrind::run(program, &[&round_trips.to_string()], &out_file)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "callgrind echo_cost {round_trips} failed ({}):\n{stdout}\n{stderr}",
            output.status
        ));
    }
    print!("{stdout}");
    let total = stderr
        .lines()
        .find_map(|line| line.split_once("Collected : ").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no 'Collected' line in callgrind's output:\n{stderr}"))?;
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::to_string)
            .ok_or_else(|| format!("no '{prefix}' line in echo_cost's output:\n{stdout}"))
    };
    let (thread_file, looping) = loop_thread(out_dir, round_trips)?;
    Ok(Run {
        total,
        looping,
        parts: callgrind::by_part(&thread_file, &LIBRARY)?,
        per_round_trip: line("per round trip: ")?,
        config: line("config: ")?,
    })
}

/// The output file of the thread that ran the round trips (the one that ran
/// `echo_cost::echo`), and its instruction count.
fn loop_thread(out_dir: &Path, round_trips: u64) -> Result<(PathBuf, u64), String> {
    let prefix = format!("callgrind.out.{round_trips}-");
    let entries = std::fs::read_dir(out_dir)
        .map_err(|e| format!("cannot list {}: {e}", out_dir.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !text.contains("echo_cost::echo::") {
            continue;
        }
        let summary = text
            .lines()
            .find_map(|line| line.strip_prefix("summary: "))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no 'summary:' line in {}", path.display()))?;
        return Ok((path, summary));
    }
    Err(format!(
        "no {prefix}NN file in {} ran echo_cost::echo",
        out_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::LIBRARY;
    use crate::callgrind::Part;

    #[test]
    fn functions_are_split_by_crate() {
        assert_eq!(
            Part::of("wsk_host::wsk::socket::pump", &LIBRARY),
            Part::Host
        );
        assert_eq!(Part::of("IoAllocateIrp", &LIBRARY), Part::Host);
        assert_eq!(Part::of("memcpy", &LIBRARY), Part::Runtime);
        assert_eq!(
            Part::of(
                "<wsk_net::raw::Op as core::future::future::Future>::poll",
                &LIBRARY
            ),
            Part::Library
        );
        assert_eq!(
            Part::of("echo_cost::counted::{{closure}}", &LIBRARY),
            Part::Library
        );
        assert_eq!(Part::of("wsk_sys::inline::helper", &LIBRARY), Part::Library);
        assert_eq!(
            Part::of("wskfloor::server::receive_done", &LIBRARY),
            Part::Runtime
        );
    }
}
