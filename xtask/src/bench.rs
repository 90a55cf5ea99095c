//! `cargo xtask bench`: the executor benchmarks in one run, side by side: callgrind instruction
//! counts and criterion times for wake+poll and spawn, ours against embassy-executor and the
//! hand-written callback floor (see `benches/README.md`); with `--echo`, the echo round trip's
//! instructions and kernel allocations instead (`bench_echo`). Not part of `cargo xtask test`:
//! benchmarks are not tests; clippy's `--all-targets` still compiles them there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::setup;

/// Workloads and the implementations each is measured in; the first name of each group is
/// ours, and `embassy` and `floor` are the references the ratios are taken against.
const WORKLOADS: &[(&str, &[&str])] = &[
    ("wake_poll", &["ours", "embassy", "floor"]),
    ("spawn", &["ours", "ours-join", "embassy", "floor"]),
];

/// Steps per callgrind run; the per-step cost is (run(N) - run(0)) / N.
const ITERATIONS: u64 = 100_000;

/// Steps per callgrind run of the many-woken workload, each waking [`MANY_TASKS`] tasks and
/// polling them all under a small budget (`benches/benches/workloads`).
const MANY_STEPS: u64 = 100;

/// Tasks one many-woken step wakes and runs (the workload's `MANY_TASKS`).
const MANY_TASKS: u64 = 1_000;

/// Criterion's arguments unless the command line gives others: short, since the machine is
/// shared and the callgrind counts are the precise figures.
const CRITERION_DEFAULT: &[&str] = &["--warm-up-time", "1", "--measurement-time", "3"];

const USAGE: &str = "usage: cargo xtask bench [--callgrind-only | --criterion-only] [--rounds N] \
                     [CRITERION ARGS]
       cargo xtask bench --echo
  --echo       instead of the executor benchmarks: instructions (callgrind) and kernel pool,
               IRP and MDL allocations per 64-byte echo round trip through wsk-net on the host
               kernel
  --rounds N   run criterion N times and keep each benchmark's fastest estimate (a shared,
               loaded machine only ever adds time)";

/// Per-step figures, by (workload, implementation).
type Figures = BTreeMap<(String, String), f64>;

/// Runs the callgrind counts and the criterion benchmark, then prints one table.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut callgrind = true;
    let mut criterion = true;
    let mut criterion_args = Vec::new();
    let mut rounds = 1;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--callgrind-only" => criterion = false,
            "--criterion-only" => callgrind = false,
            "--echo" => return crate::bench_echo::run(root),
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &u32| n > 0)
                    .ok_or_else(|| format!("--rounds needs a positive number\n{USAGE}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => criterion_args.push(arg.clone()),
        }
    }
    if criterion_args.is_empty() {
        criterion_args = CRITERION_DEFAULT.iter().map(ToString::to_string).collect();
    }

    let instructions = if callgrind {
        Some(callgrind_counts(root)?)
    } else {
        None
    };
    let times = if criterion {
        let mut fastest = Figures::new();
        for round in 1..=rounds {
            if rounds > 1 {
                println!("\n=== criterion round {round} of {rounds}");
            }
            for (key, time) in criterion_times(root, &criterion_args)? {
                let best = fastest.entry(key).or_insert(time);
                *best = best.min(time);
            }
        }
        Some(fastest)
    } else {
        None
    };
    print_table(instructions.as_ref(), times.as_ref());
    Ok(())
}

use crate::driver::target_dir;

pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    println!("\n=== cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} exited with {status}", args.join(" ")))
    }
}

/// Runs `cargo build --quiet --release` of `packages` (each given as `-p NAME`) with the further
/// `selection` (`--bins`, `--example NAME`, `--features LIST`, ...); returns the directory the
/// release programs are in.
pub(crate) fn build_release(
    root: &Path,
    packages: &[&str],
    selection: &[&str],
) -> Result<PathBuf, String> {
    let mut args = vec!["build", "--quiet", "--release"];
    for package in packages {
        args.extend(["-p", package]);
    }
    args.extend_from_slice(selection);
    cargo(root, &args)?;
    Ok(target_dir(root).join("release"))
}

/// Builds `wsk-benches`' example `name` (release) and returns the path of its program.
pub fn build_example(root: &Path, name: &str) -> Result<PathBuf, String> {
    cargo(
        root,
        &["build", "--release", "-p", "wsk-benches", "--example", name],
    )?;
    Ok(target_dir(root).join("release").join("examples").join(name))
}

/// Instructions per step, from two callgrind runs of the `callgrind` example per workload.
fn callgrind_counts(root: &Path) -> Result<Figures, String> {
    setup::ensure_apt_packages(&["valgrind"]);
    if !setup::has_program("valgrind") {
        return Err(
            "valgrind is not installed (apt-get install valgrind), or use \
                    --criterion-only"
                .into(),
        );
    }
    let program = build_example(root, "callgrind")?;
    println!("\n=== callgrind: {ITERATIONS} steps minus 0 steps, per workload");
    let mut figures = Figures::new();
    for (workload, implementations) in WORKLOADS {
        for implementation in *implementations {
            let base = collected(&program, workload, implementation, 0)?;
            let full = collected(&program, workload, implementation, ITERATIONS)?;
            #[expect(
                clippy::cast_precision_loss,
                reason = "instruction counts are far below 2^52"
            )]
            let per_step = (full.saturating_sub(base)) as f64 / ITERATIONS as f64;
            println!("{workload:10} {implementation:10} {per_step:8.1} instructions/step");
            figures.insert(
                ((*workload).to_string(), (*implementation).to_string()),
                per_step,
            );
        }
    }
    // Many woken tasks under a small budget: per task run, so that a run queue whose cost grows
    // with the number queued shows here.
    let base = collected(&program, "many_woken", "ours", 0)?;
    let full = collected(&program, "many_woken", "ours", MANY_STEPS)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "instruction counts are far below 2^52"
    )]
    let per_task = (full.saturating_sub(base)) as f64 / (MANY_STEPS * MANY_TASKS) as f64;
    println!(
        "many_woken ours       {per_task:8.1} instructions/task run \
         ({MANY_TASKS} woken per step, budget 64, {MANY_STEPS} steps minus 0)"
    );
    Ok(figures)
}

/// The instructions callgrind counted for one run of the example.
fn collected(
    program: &Path,
    workload: &str,
    implementation: &str,
    iterations: u64,
) -> Result<u64, String> {
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(program)
        .args([workload, implementation, &iterations.to_string()])
        .output()
        .map_err(|e| format!("could not start valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "callgrind {workload} {implementation} {iterations} failed ({}):\n{stderr}",
            output.status
        ));
    }
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected : ").map(|(_, n)| n.trim()))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no 'Collected' line in callgrind's output:\n{stderr}"))
}

/// Nanoseconds per step (criterion's estimate), after running the criterion benchmark.
fn criterion_times(root: &Path, criterion_args: &[String]) -> Result<Figures, String> {
    let mut args = vec!["bench", "-p", "wsk-benches", "--bench", "executor", "--"];
    args.extend(criterion_args.iter().map(String::as_str));
    let started = std::time::SystemTime::now();
    cargo(root, &args)?;
    let mut figures = Figures::new();
    for (workload, implementations) in WORKLOADS {
        for implementation in *implementations {
            let path = target_dir(root)
                .join("criterion")
                .join(workload)
                .join(implementation)
                .join("new")
                .join("estimates.json");
            // A filter on the command line may have skipped this one: then its file is
            // missing, or older than this run.
            let fresh = std::fs::metadata(&path)
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| modified >= started);
            if !fresh {
                continue;
            }
            let json = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let time = point_estimate(&json)
                .ok_or_else(|| format!("no point estimate in {}", path.display()))?;
            figures.insert(
                ((*workload).to_string(), (*implementation).to_string()),
                time,
            );
        }
    }
    Ok(figures)
}

/// The estimate criterion prints as `time:` (the slope of its linear sampling, or the mean when
/// there is no slope), from its `estimates.json`
/// (`{"mean":{"confidence_interval":{..},"point_estimate":X,..},..,"slope":{..}|null,..}`).
fn point_estimate(json: &str) -> Option<f64> {
    let estimate = |key: &str| -> Option<f64> {
        let rest = &json[json.find(&format!("\"{key}\":{{"))?..];
        let field = "\"point_estimate\":";
        let value = &rest[rest.find(field)? + field.len()..];
        let end = value.find([',', '}'])?;
        value[..end].trim().parse().ok()
    };
    estimate("slope").or_else(|| estimate("mean"))
}

/// One line per workload and implementation: instructions and ns per step, and each as a
/// multiple of the floor's and embassy's.
fn print_table(instructions: Option<&Figures>, times: Option<&Figures>) {
    println!("\n================ executor benchmarks (per step) ================");
    println!(
        "{:10} {:10} {:>8} {:>7} {:>9} {:>8} {:>7} {:>9}",
        "workload", "impl", "instr", "x floor", "x embassy", "ns", "x floor", "x embassy"
    );
    let cell = |figures: Option<&Figures>, workload: &str, implementation: &str| {
        let get = |name: &str| {
            figures.and_then(|f| f.get(&(workload.to_string(), name.to_string())).copied())
        };
        let value = get(implementation);
        let ratio = |reference: Option<f64>| match (value, reference) {
            (Some(v), Some(r)) if r > 0.0 => format!("{:.2}", v / r),
            _ => "-".to_string(),
        };
        (
            value.map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
            ratio(get("floor")),
            ratio(get("embassy")),
        )
    };
    for (workload, implementations) in WORKLOADS {
        for implementation in *implementations {
            let (ir, ir_floor, ir_embassy) = cell(instructions, workload, implementation);
            let (ns, ns_floor, ns_embassy) = cell(times, workload, implementation);
            println!(
                "{workload:10} {implementation:10} {ir:>8} {ir_floor:>7} {ir_embassy:>9} \
                 {ns:>8} {ns_floor:>7} {ns_embassy:>9}"
            );
        }
    }
    println!(
        "instr: callgrind instructions per step ({ITERATIONS} steps minus 0); ns: criterion's \
         estimate (its `time:` middle figure; the fastest round's with --rounds)"
    );
}

/// What the bench commands' tests share.
#[cfg(test)]
pub(crate) mod tests {
    /// `args` as the owned strings a command's argument parser takes.
    pub(crate) fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|&a| a.to_owned()).collect()
    }
}
