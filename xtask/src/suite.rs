//! The full test suite, in one place so that the README, `.ci/run` and a developer run the
//! same thing. Each suite ends PASS, FAIL or NOT RUN (with the reason, loudly); NOT RUN fails
//! the run unless `XTASK_ALLOW_SKIP=1`, so no suite can disappear silently.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::setup::{self, loud};

enum Outcome {
    Pass,
    Fail(String),
    NotRun(String),
}

struct Suite {
    name: &'static str,
    outcome: Outcome,
    seconds: u64,
}

/// Runs `cargo` with `args` (and extra environment) in the workspace; Ok when it exits 0.
fn cargo(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    println!("\n=== cargo {}", args.join(" "));
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.status() {
        Ok(status) if status.success() => Outcome::Pass,
        Ok(status) => Outcome::Fail(format!("cargo {} exited with {status}", args.join(" "))),
        Err(e) => Outcome::Fail(format!("could not start cargo: {e}")),
    }
}

const WINDOWS: &str = "x86_64-pc-windows-msvc";

/// A suite: runs in the workspace root and says how it ended.
type SuiteFn = fn(&Path) -> Outcome;

/// Every suite, in the order they run.
const SUITES: &[(&str, SuiteFn)] = &[
    ("fmt", fmt),
    ("clippy (host)", clippy_host),
    ("clippy (windows target)", clippy_windows),
    ("docs (intra-doc links)", docs),
    ("layout probe", layout_probe),
    ("tests (workspace)", tests),
    ("soak (20 seeds)", soak),
    ("check sys for Windows", check_sys_windows),
    ("loom (executor, net, wsk)", loom),
    (
        "miri (executor raw, net, sys and wsk units, net on the in-memory network)",
        miri,
    ),
    ("wine (echo driver .sys)", wine),
    ("chat driver .sys (build, image check)", chat_sys),
    ("wine (chat driver .sys)", wine_chat),
];

/// Set-up, then every suite, then the summary.
pub fn run_all(root: &Path) -> Result<(), String> {
    setup::ensure();
    let mut suites = Vec::new();
    for (name, suite) in SUITES {
        let start = Instant::now();
        let outcome = suite(root);
        if let Outcome::NotRun(why) = &outcome {
            loud(&format!("suite {name} NOT RUN: {why}"));
        }
        suites.push(Suite {
            name,
            outcome,
            seconds: start.elapsed().as_secs(),
        });
    }
    summarize(&suites)
}

fn fmt(root: &Path) -> Outcome {
    cargo(root, &["fmt", "--all", "--", "--check"], &[])
}

fn clippy_host(root: &Path) -> Outcome {
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

fn clippy_windows(root: &Path) -> Outcome {
    if !setup::has_rust_target(WINDOWS) {
        return Outcome::NotRun(format!("Rust target {WINDOWS} is not installed"));
    }
    let crates = [
        "-p",
        "wsk-sys",
        "-p",
        "wsk-executor",
        "-p",
        "wsk-net",
        "-p",
        "wsk",
    ];
    let mut args = vec!["clippy", "--target", WINDOWS];
    args.extend(crates);
    args.extend(["--", "-D", "warnings"]);
    cargo(root, &args, &[])
}

/// Rustdoc over the workspace with warnings denied: a broken intra-doc link (the workspace
/// lint `rustdoc::broken_intra_doc_links`) fails here, since only rustdoc checks links.
fn docs(root: &Path) -> Outcome {
    cargo(
        root,
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn layout_probe(root: &Path) -> Outcome {
    if !setup::has_program("x86_64-w64-mingw32-gcc") {
        return Outcome::NotRun("x86_64-w64-mingw32-gcc is missing (gcc-mingw-w64-x86-64)".into());
    }
    cargo(
        root,
        &[
            "test",
            "-p",
            "wsk-sys",
            "--test",
            "layout",
            "--",
            "--nocapture",
        ],
        &[],
    )
}

fn tests(root: &Path) -> Outcome {
    cargo(root, &["test", "--workspace"], &[])
}

/// The seed sweep, bounded: 20 seeds of the end-to-end scenarios (`cargo xtask soak`); each
/// failing seed is printed with its replay command.
fn soak(root: &Path) -> Outcome {
    println!("\n=== cargo xtask soak --seeds 20");
    match crate::soak::run(root, &["--seeds".to_owned(), "20".to_owned()]) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

fn check_sys_windows(root: &Path) -> Outcome {
    if !setup::has_rust_target(WINDOWS) {
        return Outcome::NotRun(format!("Rust target {WINDOWS} is not installed"));
    }
    cargo(root, &["check", "-p", "wsk-sys", "--target", WINDOWS], &[])
}

/// loom models run with `--cfg loom` in their own target directory, so the normal build
/// cache is not invalidated by the flag.
fn loom(root: &Path) -> Outcome {
    let dir = root
        .join("target")
        .join("loom")
        .to_string_lossy()
        .into_owned();
    cargo(
        root,
        &[
            "test",
            "-p",
            "wsk-executor",
            "-p",
            "wsk-net",
            "-p",
            "wsk",
            "--release",
            "--lib",
            "loom",
        ],
        &[
            ("RUSTFLAGS", "--cfg loom"),
            ("CARGO_TARGET_DIR", &dir),
            ("LOOM_MAX_PREEMPTIONS", "2"),
        ],
    )
}

/// Miri over the code whose unsafe runs without host sockets: the executor's core (`raw`) and
/// its sync primitives' wait lists (`sync`; their spin lock is the host kernel's `KSPIN_LOCK`
/// code, which Miri runs too), net's state words and address code, sys's list and SOCKADDR
/// helpers, the `wsk` crate's client slot (their unit tests), and net end to end on the host
/// kernel's in-memory network (`net/tests/miri_core.rs`; host sockets Miri cannot run).
fn miri(root: &Path) -> Outcome {
    if !setup::has_nightly_miri() {
        return Outcome::NotRun("nightly Miri is not installed".into());
    }
    let dir = root
        .join("target")
        .join("miri")
        .to_string_lossy()
        .into_owned();
    let runs: [&[&str]; 5] = [
        &["-p", "wsk-executor", "--lib", "raw"],
        &["-p", "wsk-executor", "--lib", "sync"],
        &["-p", "wsk-net", "--lib"],
        &["-p", "wsk-sys", "--lib"],
        // The client slot's state machine and the settings decoders.
        &["-p", "wsk", "--lib"],
    ];
    for run in runs {
        let mut args = vec!["+nightly", "miri", "test"];
        args.extend_from_slice(run);
        if let failed @ (Outcome::Fail(_) | Outcome::NotRun(_)) =
            cargo(root, &args, &[("CARGO_TARGET_DIR", &dir)])
        {
            return failed;
        }
    }
    // net end to end on the host kernel's in-memory network (tests/miri_core.rs): the op
    // state machine, completions, held buffers and MDLs, unload. The kernel's own leak check
    // runs in every scenario; Miri's is off because test driver objects and the kernel's
    // process-wide tables live until the process ends, by design.
    // Then issue 14's data features the same way (tests/miri_data.rs): a caller's MDL chains,
    // datagram batches and the WSK_BUF_LIST they send.
    let end_to_end = |test: &str| {
        cargo(
            root,
            &["+nightly", "miri", "test", "-p", "wsk-net", "--test", test],
            &[
                ("CARGO_TARGET_DIR", &dir),
                ("MIRIFLAGS", "-Zmiri-ignore-leaks"),
            ],
        )
    };
    match end_to_end("miri_core") {
        failed @ (Outcome::Fail(_) | Outcome::NotRun(_)) => failed,
        _ => end_to_end("miri_data"),
    }
}

fn wine(root: &Path) -> Outcome {
    if !setup::has_rust_target(WINDOWS) {
        return Outcome::NotRun(format!("Rust target {WINDOWS} is not installed"));
    }
    if !setup::has_program("wine") {
        return Outcome::NotRun("wine is not installed".into());
    }
    match crate::driver::build(root).and_then(|sys| crate::wine::test(root, &sys)) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

/// The chat relay's `wskchat.sys` built and checked like `wskecho.sys` (no import the kernel
/// lacks, `__chkstk` for a stack frame over 4 KiB included); run under Wine by
/// [`wine_chat`].
fn chat_sys(root: &Path) -> Outcome {
    if !setup::has_rust_target(WINDOWS) {
        return Outcome::NotRun(format!("Rust target {WINDOWS} is not installed"));
    }
    match crate::driver::build_chat(root) {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

/// The chat relay's Wine test (`crate::wine_chat`): what Wine lacks it prints as
/// `Wine lacks: ...` without failing.
fn wine_chat(root: &Path) -> Outcome {
    if !setup::has_rust_target(WINDOWS) {
        return Outcome::NotRun(format!("Rust target {WINDOWS} is not installed"));
    }
    if !setup::has_program("wine") {
        return Outcome::NotRun("wine is not installed".into());
    }
    match crate::driver::build_chat(root).and_then(|sys| crate::wine_chat::test(root, &sys)) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}

fn summarize(suites: &[Suite]) -> Result<(), String> {
    let allow_skip = std::env::var("XTASK_ALLOW_SKIP").is_ok_and(|v| v == "1");
    println!("\n================ summary ================");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for suite in suites {
        let (word, detail) = match &suite.outcome {
            Outcome::Pass => {
                passed += 1;
                ("PASS", String::new())
            }
            Outcome::Fail(why) => {
                failed += 1;
                ("FAIL", why.clone())
            }
            Outcome::NotRun(why) => {
                skipped += 1;
                ("NOT RUN", why.clone())
            }
        };
        println!("{word:8} {:28} {:4}s  {detail}", suite.name, suite.seconds);
    }
    // The plain closing line CI reads: "N passed, N failed, N skipped" (skipped = NOT RUN).
    println!("suites: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        return Err(format!("{failed} suite(s) failed"));
    }
    if skipped > 0 && !allow_skip {
        return Err(format!(
            "{skipped} suite(s) did not run (set XTASK_ALLOW_SKIP=1 to accept that)"
        ));
    }
    Ok(())
}

/// The main job: the echo driver on the host kernel, a release build unless `--debug` comes
/// before the `--` that starts the driver's own flags (a debug build of the host kernel costs
/// several times the CPU per echo). On Unix xtask becomes `cargo run` (exec), which becomes
/// the driver's host program, so Ctrl-C reaches only the program, which unloads the driver
/// and prints the report, rather than killing a waiting parent first.
pub fn run_host_driver(root: &Path, args: &[String]) -> Result<(), String> {
    let (debug, driver_args) = split_run_args(args);
    let mut cmd = Command::new("cargo");
    cmd.args(["run", "--quiet"]);
    if !debug {
        cmd.arg("--release");
    }
    cmd.args(["-p", "wsk-driver-example", "--"])
        .args(driver_args)
        .current_dir(root);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = cmd.exec();
        Err(format!("could not start cargo: {error}"))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| format!("could not start cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the host driver exited with {status}"))
        }
    }
}

/// Splits `cargo xtask run`'s arguments into whether `--debug` was given before the first
/// `--`, and the rest, in order, for the driver.
fn split_run_args(args: &[String]) -> (bool, Vec<String>) {
    let separator = args
        .iter()
        .position(|arg| arg == "--")
        .unwrap_or(args.len());
    let debug = args[..separator].iter().any(|arg| arg == "--debug");
    let rest = args[..separator]
        .iter()
        .filter(|arg| *arg != "--debug")
        .chain(&args[separator..])
        .cloned()
        .collect();
    (debug, rest)
}

#[cfg(test)]
mod tests {
    use super::split_run_args;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn run_is_release_unless_debug_comes_before_the_separator() {
        assert_eq!(split_run_args(&[]), (false, vec![]));
        assert_eq!(
            split_run_args(&strings(&["--", "--port", "7008"])),
            (false, strings(&["--", "--port", "7008"]))
        );
        assert_eq!(
            split_run_args(&strings(&["--debug", "--", "--port", "0"])),
            (true, strings(&["--", "--port", "0"]))
        );
        // After the separator, `--debug` is the driver's (which rejects it), not ours.
        assert_eq!(
            split_run_args(&strings(&["--", "--debug"])),
            (false, strings(&["--", "--debug"]))
        );
    }
}
