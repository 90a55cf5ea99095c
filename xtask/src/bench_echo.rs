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
use std::process::Command;

use crate::bench::{build_example, target_dir};
use crate::setup;

/// Measured round trips of the two runs.
const ROUND_TRIPS: [u64; 2] = [200, 1200];

/// Where an instruction ran, by the demangled name of the function callgrind charged it to
/// (after inlining: code inlined into a function counts as that function's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    /// `wsk_net`, `wsk_executor`, the `wsk_sys` helpers, and the benchmark's own
    /// loop (`echo_cost`), into which the library's futures are inlined.
    Library,
    /// `wsk_host`: the emulated NT kernel, its verifier and the WSK provider, with the kernel
    /// functions it exports under their unmangled NT names (`IoAllocateIrp`, `WskRegister`,
    /// `host_current_irql`, ...).
    Host,
    /// Everything else: std, core, alloc and hashbrown code shared by name (the `SipHash` of
    /// the host kernel's `HashMap`s, thread starts with the reactor loop inlined), libc
    /// (malloc, memcpy, the socket calls). The library is `no_std` without `alloc`, so nearly
    /// all of this runs for the host kernel.
    Runtime,
}

impl Part {
    const ALL: [Part; 3] = [Part::Library, Part::Host, Part::Runtime];

    fn label(self) -> &'static str {
        match self {
            Part::Library => "library (wsk-net, wsk-executor, wsk-sys helpers, the loop)",
            Part::Host => "host kernel (wsk_host)",
            Part::Runtime => "std, libc and shared generic code (mostly the host kernel's)",
        }
    }

    /// The part of a demangled function name such as `wsk_host::wsk::socket::pump`,
    /// `<wsk_net::raw::Op as core::future::future::Future>::poll` or
    /// `core::ptr::drop_in_place<wsk_net::raw::Held>`.
    fn of(function: &str) -> Part {
        let mut name = function.trim();
        loop {
            let before = name;
            for prefix in ["<", "&", "mut ", "dyn ", "core::ptr::drop_in_place<"] {
                name = name.strip_prefix(prefix).unwrap_or(name);
            }
            if name == before {
                break;
            }
        }
        if name.starts_with("wsk_host::") || is_host_kernel_export(name) {
            Part::Host
        } else if ["wsk_net::", "wsk_executor::", "wsk_sys::", "echo_cost::"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            Part::Library
        } else {
            Part::Runtime
        }
    }
}

/// Whether `name` is one of the host kernel's `#[unsafe(no_mangle)]` exports: a bare NT name
/// (`IoAllocateIrp`, `KeSetEvent`, `ExAllocatePoolWithTag`, `WskRegister`, ...) or one of its
/// `host_*` hooks. No C runtime function starts with these capitalised prefixes.
fn is_host_kernel_export(name: &str) -> bool {
    const NT_PREFIXES: [&str; 9] = ["Io", "Ke", "Ex", "Mm", "Ob", "Ps", "Zw", "Wsk", "host_"];
    !name.contains("::") && NT_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
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
    setup::ensure_apt_packages(&["valgrind"]);
    if !setup::has_program("valgrind") || !setup::has_program("callgrind_annotate") {
        return Err("valgrind is not installed (apt-get install valgrind)".into());
    }
    let program = build_example(root, "echo_cost")?;
    let out_dir = target_dir(root).join("echo-cost");
    // Output files of an earlier run (one per thread) must not be mistaken for this run's.
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;

    let [n1, n2] = ROUND_TRIPS;
    let first = callgrind(&program, &out_dir, n1)?;
    let second = callgrind(&program, &out_dir, n2)?;

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
            part.label()
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
fn callgrind(program: &Path, out_dir: &Path, round_trips: u64) -> Result<Run, String> {
    let out_file = out_dir.join(format!("callgrind.out.{round_trips}"));
    println!("\n=== callgrind: echo_cost {round_trips}");
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--separate-threads=yes"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(program)
        .arg(round_trips.to_string())
        .output()
        .map_err(|e| format!("could not start valgrind: {e}"))?;
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
        parts: by_part(&thread_file)?,
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

/// Instructions by part, from `callgrind_annotate`'s per-function listing of `file`.
fn by_part(file: &Path) -> Result<BTreeMap<Part, u64>, String> {
    let output = Command::new("callgrind_annotate")
        .args(["--threshold=100", "--inclusive=no", "--auto=no"])
        .arg(file)
        .output()
        .map_err(|e| format!("could not start callgrind_annotate: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "callgrind_annotate {} failed ({}):\n{}",
            file.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let mut parts = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((count, function)) = function_line(line) {
            *parts.entry(Part::of(function)).or_insert(0) += count;
        }
    }
    Ok(parts)
}

/// A function line of `callgrind_annotate`:
/// `7,429,140 (22.11%)  ???:core::hash::BuildHasher::hash_one [/path/echo_cost]` (the
/// percentage and the object are optional) as its count and function name.
fn function_line(line: &str) -> Option<(u64, &str)> {
    let line = line.trim_start();
    let (count, rest) = line.split_once(' ')?;
    let count: u64 = count.replace(',', "").parse().ok()?;
    let mut rest = rest.trim_start();
    if rest.starts_with('(') {
        rest = rest.split_once(')')?.1.trim_start();
    }
    // `file:function`: the file (a path, or `???` without debug information) has no colon.
    let (_, function) = rest.split_once(':')?;
    if function.is_empty() {
        return None;
    }
    let function = match function.rfind(" [") {
        Some(at) if function.ends_with(']') => &function[..at],
        _ => function,
    };
    Some((count, function))
}

#[cfg(test)]
mod tests {
    use super::{Part, function_line};

    #[test]
    fn functions_are_split_by_crate() {
        assert_eq!(Part::of("wsk_host::wsk::socket::pump"), Part::Host);
        assert_eq!(Part::of("IoAllocateIrp"), Part::Host);
        assert_eq!(Part::of("host_current_irql"), Part::Host);
        assert_eq!(Part::of("memcpy"), Part::Runtime);
        assert_eq!(
            Part::of("<wsk_net::raw::Op as core::future::future::Future>::poll"),
            Part::Library
        );
        assert_eq!(
            Part::of("core::ptr::drop_in_place<wsk_net::raw::Held>"),
            Part::Library
        );
        assert_eq!(Part::of("echo_cost::counted::{{closure}}"), Part::Library);
        assert_eq!(Part::of("wsk_sys::inline::helper"), Part::Library);
        assert_eq!(Part::of("core::hash::BuildHasher::hash_one"), Part::Runtime);
        assert_eq!(Part::of("__memcpy_avx_unaligned_erms"), Part::Runtime);
    }

    #[test]
    fn annotate_lines_parse() {
        assert_eq!(
            function_line(
                "7,429,140 (22.11%)  ???:core::hash::BuildHasher::hash_one [/t/echo_cost]"
            ),
            Some((7_429_140, "core::hash::BuildHasher::hash_one"))
        );
        assert_eq!(
            function_line("  3,064,950  ./string/memmove.S:__memcpy_avx_unaligned_erms"),
            Some((3_064_950, "__memcpy_avx_unaligned_erms"))
        );
        assert_eq!(function_line("33,603,539 (100.0%)  PROGRAM TOTALS"), None);
        assert_eq!(function_line("Ir                  file:function"), None);
    }
}
