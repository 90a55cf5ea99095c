//! Project glue that cargo alone can't express: machine set-up, the full test suite, building
//! the driver `.sys` and the Wine test.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
//!
//! `cargo xtask test` is the README's test command and what `.ci/run` runs; `cargo xtask run`
//! is the main job (the echo driver on the host kernel). `cargo xtask bench` runs the executor
//! benchmarks, `cargo xtask bench --echo` the echo round trip's cost; neither is part of `test`.

mod bench;
mod bench_echo;
mod bench_echo_table;
mod bench_idle;
mod bench_scale;
mod callgrind;
mod driver;
mod floor_driver;
mod png;
mod setup;
mod soak;
mod suite;
mod wine;
mod wine_chat;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>
  test           set up the machine, then run every suite (fmt, clippy, tests, layout probe,
                 Windows-target build, loom, Miri, Wine) and print a summary
  run [--debug] [-- ARGS]
                 set up, then run the echo driver on the host kernel, a release build (--debug:
                 a debug build; ARGS go to the driver)
  setup          install what the project needs (apt packages as root, rustup components)
  build-driver   build the echo driver .sys for x86_64-pc-windows-msvc (--floor: and the
                 callback-chain floor driver's wskfloor.sys; --chat: and the chat relay's
                 wskchat.sys)
  wine-test      build the .sys and run the Wine end-to-end test, then the chat relay's
                 (wskchat.sys: relay, idle timeout, unload with clients; --chat-only: that one)
  bench [ARGS]   executor benchmarks: callgrind instructions and criterion times for wake+poll
                 and spawn, ours vs embassy-executor vs a callback floor (ARGS go to criterion;
                 --callgrind-only, --criterion-only, --rounds N); bench --echo: instructions
                 and kernel allocations per echo round trip through wsk-net on the host kernel
  bench-echo     ours (dpc, passive) vs the callback floor vs tokio vs std over loopback TCP:
                 ratio table, JSON and a latency plot under target/bench-echo/
                 (--no-callgrind, --quick, --wine-only)
  bench-idle     memory per idle connection: nonpaged pool (ours vs the floor) and process RSS
                 (ours, the floor, tokio) at 0 and N connections (--connections N, --rounds R)
  bench-scale    the echo server holding many idle connections: server CPU per round trip at
                 10, 1,000 and 10,000 connections (10 active), and 10,000 idle + 100 active
                 (ours vs tokio; --totals LIST, --active A, --busy B, --seconds S, --size N)
  soak [ARGS]    the seed sweep: wsk-net's and the echo driver's end-to-end scenarios under
                 seeded fault plans (--seeds N, default 20; --first S; --faults PLAN), failing
                 seeds with their replay command and a summary; --minutes M: a long churn run
                 of the host echo driver watching pool, handles and RSS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("test") => suite::run_all(&root),
        Some("run") => {
            setup::ensure();
            suite::run_host_driver(&root, &args[1..])
        }
        Some("setup") => {
            setup::ensure();
            Ok(())
        }
        Some("build-driver") => driver::build(&root).and_then(|sys| {
            println!("{}", sys.display());
            if args.iter().any(|a| a == "--floor") {
                floor_driver::build(&root).map(|sys| println!("{}", sys.display()))?;
            }
            if args.iter().any(|a| a == "--chat") {
                driver::build_chat(&root).map(|sys| println!("{}", sys.display()))?;
            }
            Ok(())
        }),
        Some("bench") => bench::run(&root, &args[1..]),
        Some("bench-echo") => bench_echo_table::run(&root, &args[1..]),
        Some("bench-idle") => bench_idle::run(&root, &args[1..]),
        Some("bench-scale") => bench_scale::run(&root, &args[1..]),
        Some("soak") => soak::run(&root, &args[1..]),
        Some("wine-test") => {
            let echo = if args.iter().any(|a| a == "--chat-only") {
                Ok(())
            } else {
                driver::build(&root).and_then(|sys| wine::test(&root, &sys))
            };
            echo.and_then(|()| driver::build_chat(&root))
                .and_then(|sys| wine_chat::test(&root, &sys))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), std::path::Path::to_path_buf)
}
