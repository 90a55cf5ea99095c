//! `cargo xtask soak`: the seed sweep over the end-to-end scenarios, and (`--minutes`) a long
//! run of the host echo driver under churn watching that nothing grows.
//!
//! `--seeds N [--first S] [--faults PLAN]`: runs `wsk-net`'s sweep (`net/tests/soak.rs`, in
//! one process over the N seeds) and the echo driver's (`driver-example/tests/soak.rs`, one
//! process per seed, since the driver starts once per process) for seeds S..S+N; each seed's
//! fault plan is drawn from the seed, or is PLAN. Every failing seed is printed with the
//! command that replays it, then a summary line; the run fails if any seed failed.
//!
//! `--minutes M`: see [`minutes_run`].

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one seed of the echo driver's sweep may take before it counts as a hang.
const SEED_LIMIT: Duration = Duration::from_mins(2);

/// What the command line asked for.
struct Options {
    seeds: u64,
    first: u64,
    faults: Option<String>,
    minutes: Option<u64>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seeds: 20,
        first: 1,
        faults: None,
        minutes: None,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))
        };
        match flag.as_str() {
            "--seeds" => options.seeds = number()?,
            "--first" => options.first = number()?,
            "--faults" => options.faults = Some(value.clone()),
            "--minutes" => options.minutes = Some(number()?),
            _ => {
                return Err(format!(
                    "soak: unknown flag {flag} (--seeds N, --first S, --faults PLAN, --minutes M)"
                ));
            }
        }
    }
    Ok(options)
}

/// Runs `cargo xtask soak` with `args`.
///
/// # Errors
/// When a seed failed (the summary says which), or a build failed.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let options = parse(args)?;
    if let Some(minutes) = options.minutes {
        return minutes_run(root, minutes, &options);
    }
    let last = options.first + options.seeds.saturating_sub(1);
    println!(
        "soak: seeds {}..={last}, plan {}",
        options.first,
        options.faults.as_deref().unwrap_or("drawn from each seed")
    );
    let start = Instant::now();
    let net = net_sweep(root, &options)?;
    let driver = driver_sweep(root, &options)?;
    let seconds = start.elapsed().as_secs();
    println!(
        "soak summary: {} seeds in {seconds} s: wsk-net {} failed{}, echo driver {} failed{}",
        options.seeds,
        net.len(),
        seed_list(&net),
        driver.len(),
        seed_list(&driver),
    );
    if net.is_empty() && driver.is_empty() {
        Ok(())
    } else {
        Err("soak: some seeds failed (replay commands above)".into())
    }
}

fn seed_list(seeds: &[u64]) -> String {
    if seeds.is_empty() {
        String::new()
    } else {
        format!(" (seeds {seeds:?})")
    }
}

/// The environment every soak process gets: the plan, when one was given.
fn plan_env(command: &mut Command, options: &Options) {
    if let Some(plan) = &options.faults {
        command.env("WSK_FAULTS", plan);
    }
}

/// `wsk-net`'s sweep, in one process; the seeds that failed (from its summary line).
fn net_sweep(root: &Path, options: &Options) -> Result<Vec<u64>, String> {
    println!(
        "\n=== soak: wsk-net, {} seeds in one process",
        options.seeds
    );
    let mut command = Command::new("cargo");
    command
        .args(["test", "-p", "wsk-net", "--test", "soak", "--", "--ignored"])
        .args(["--exact", "soak_net_seeds", "--nocapture"])
        .current_dir(root)
        .env("WSK_SOAK_SEEDS", options.seeds.to_string())
        .env("WSK_SOAK_FIRST", options.first.to_string())
        .env_remove("WSK_SEED")
        .stdout(Stdio::piped());
    plan_env(&mut command, options);
    let output = command
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("seed ") || l.starts_with("  replay:"))
    {
        println!("{line}");
    }
    let summary = stdout
        .lines()
        .find(|line| line.starts_with("soak summary: wsk-net"))
        .ok_or_else(|| {
            format!(
                "wsk-net's sweep ended ({}) without a summary",
                output.status
            )
        })?;
    println!("{summary}");
    let failed = summary
        .split_once("(seeds [")
        .map(|(_, list)| {
            list.trim_end_matches("])")
                .split(", ")
                .filter_map(|seed| seed.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Ok(failed)
}

/// Builds an integration test of `package` and returns its executable.
fn test_executable(root: &Path, package: &str, test: &str) -> Result<PathBuf, String> {
    let output = Command::new("cargo")
        .args(["test", "-p", package, "--test", test, "--no-run"])
        .args(["--message-format", "json"])
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("building {package}'s {test} test failed"));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let target = format!("\"name\":\"{test}\",\"src_path\"");
    stdout
        .lines()
        .filter(|line| line.contains(&target))
        .find_map(|line| {
            let (_, rest) = line.split_once("\"executable\":\"")?;
            let (path, _) = rest.split_once('"')?;
            Some(PathBuf::from(path))
        })
        .ok_or_else(|| format!("cargo named no executable for {package}'s {test} test"))
}

/// Runs `command` with a time limit; its exit success and its output (stdout then stderr).
fn run_bounded(command: &mut Command, limit: Duration) -> Result<(bool, String), String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start {command:?}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut text = out_reader.join().unwrap_or_default();
    text.push_str(&err_reader.join().unwrap_or_default());
    match status {
        Some(status) => Ok((status.success(), text)),
        None => Ok((false, format!("{text}\nHUNG: killed after {limit:?}"))),
    }
}

/// The echo driver's sweep, one process per seed; the seeds that failed.
fn driver_sweep(root: &Path, options: &Options) -> Result<Vec<u64>, String> {
    println!(
        "\n=== soak: echo driver, {} seeds, one process each",
        options.seeds
    );
    let executable = test_executable(root, "wsk-driver-example", "soak")?;
    let mut failed = Vec::new();
    for seed in options.first..options.first + options.seeds {
        let mut command = Command::new(&executable);
        command
            .args(["--ignored", "--exact", "soak_echo_driver_seed"])
            .current_dir(root.join("driver-example"))
            .env("WSK_SEED", seed.to_string())
            .env("CARGO_PKG_NAME", "wsk-driver-example");
        plan_env(&mut command, options);
        let (passed, output) = run_bounded(&mut command, SEED_LIMIT)?;
        if passed {
            continue;
        }
        failed.push(seed);
        println!("seed {seed} FAILED (echo driver):");
        // The first bugcheck and panic, with its message on the next line.
        let mut shown = 0;
        let lines: Vec<&str> = output.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("BUGCHECK") && shown == 0 || line.starts_with("HUNG") {
                println!("  {line}");
                shown += 1;
            } else if line.contains("panicked at") && shown < 2 {
                println!("  {line}");
                if let Some(message) = lines.get(i + 1) {
                    println!("  {message}");
                }
                shown = 2;
            }
        }
        if shown == 0 {
            // Neither: the process died another way; its last words.
            for line in &lines[lines.len().saturating_sub(8)..] {
                println!("  {line}");
            }
        }
        // The process may have aborted before the test printed its own replay line (a panic
        // inside a kernel callback cannot unwind): the seed alone replays it.
        let plan = options
            .faults
            .as_ref()
            .map_or_else(String::new, |plan| format!("WSK_FAULTS={plan} "));
        println!(
            "  replay: {plan}WSK_SEED={seed} cargo test -p wsk-driver-example --test soak -- \
             --exact soak_echo_driver_seed --include-ignored"
        );
    }
    println!(
        "soak summary: echo driver: {} seeds run, {} failed",
        options.seeds,
        failed.len()
    );
    Ok(failed)
}

/// `--minutes M` (with `--first S` as its seed and `--faults PLAN`): the echo driver's long
/// run (`soak_echo_driver_minutes` in `driver-example/tests/soak.rs`): M minutes of churn, every kind of client disconnect,
/// resets and slow readers, with the kernel's live pool, IRPs and MDLs, the descriptors and
/// the RSS read at the start and the end; it fails if any grew. Not part of the CI suite.
fn minutes_run(root: &Path, minutes: u64, options: &Options) -> Result<(), String> {
    println!("soak: the echo driver for {minutes} minute(s) under churn");
    let executable = test_executable(root, "wsk-driver-example", "soak")?;
    let mut command = Command::new(executable);
    command
        .args([
            "--ignored",
            "--exact",
            "soak_echo_driver_minutes",
            "--nocapture",
        ])
        .current_dir(root.join("driver-example"))
        .env("WSK_SOAK_SECONDS", (minutes * 60).to_string())
        .env("WSK_SEED", options.first.to_string())
        .env("CARGO_PKG_NAME", "wsk-driver-example");
    plan_env(&mut command, options);
    let limit = Duration::from_secs(minutes * 60) + SEED_LIMIT;
    let (passed, output) = run_bounded(&mut command, limit)?;
    for line in output.lines().filter(|line| {
        line.starts_with("soak minutes:")
            || line.contains("panicked at")
            || line.contains("grew")
            || line.starts_with("replay:")
            || line.starts_with("HUNG")
    }) {
        println!("{line}");
    }
    if passed {
        Ok(())
    } else {
        Err("soak --minutes: the long run failed (see above)".into())
    }
}
