//! The echo driver under the host kernel's low-resources simulation (Driver Verifier's, see
//! `wsk_host::faults::LowResources`):
//!
//! 1. `DriverEntry` with its n-th allocation failed, for every n its start-up makes: the load
//!    fails with an error status (never a bugcheck or a panic) and leaves nothing behind, or
//!    the driver tolerates the failure, serves and unloads clean. One process per n (the
//!    test runs itself), since a driver that started once cannot start again in a process.
//! 2. Started, then a seeded fraction of its allocations and socket creations failed for a
//!    while under client load: clients see resets or closes, the driver keeps running, and
//!    once resources return it echoes byte-exact again and unloads clean.
//!
//! Its own test binary: the driver keeps its runner in statics, loaded once per process (a
//! start that fails before its runner starts leaves it startable).

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use wsk::sys::STATUS_INSUFFICIENT_RESOURCES;
use wsk_benches::load;
use wsk_host::faults::{self, Faults, LowResources, ResourceSet};
use wsk_host::{Config, Kernel, RegValue, Registry};

use common::BOUND;

fn registry(port: u16) -> Registry {
    Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port.into()))
        .with(
            "Parameters",
            "BindAddress",
            RegValue::Sz("127.0.0.1".into()),
        )
        .with("Parameters", "MaxConnections", RegValue::Dword(64))
}

/// The variable that makes [`one_start_with_its_nth_allocation_failed`] run (the n).
const NTH_VAR: &str = "WSKECHO_FAIL_NTH";
/// The line that process prints with the number of failures it injected.
const INJECTED_MARK: &str = "injected failures: ";

#[test]
#[ignore = "one step of every_start_up_allocation_failure_fails_the_load_or_is_tolerated"]
fn one_start_with_its_nth_allocation_failed() {
    let nth: u64 = std::env::var(NTH_VAR)
        .expect("run by every_start_up_allocation_failure_fails_the_load_or_is_tolerated")
        .parse()
        .expect("a number");
    let plan = Faults {
        low_resources: Some(LowResources::nth(nth, ResourceSet::ALL)),
        ..Faults::with(wsk_host::faults::Completion::Deferred, nth)
    };
    let kernel = Kernel::boot(Config::default().with_faults(plan));
    let port = load::free_loopback_port().expect("a free port");
    match kernel.load_driver(wskecho::DriverEntry, "WskEchoLowRes", registry(port)) {
        Ok(driver) => {
            if let Err(log) = kernel.wait_for_log(
                "wskecho: listening on",
                &["wskecho: not started", "wskecho: cannot listen"],
                BOUND,
            ) {
                panic!("allocation {nth} failed: the driver loaded but did not listen:\n{log}");
            }
            // Loaded: with the failure tolerated (a reserve socket asked for again later,
            // say), or past the start-up's allocations. It serves and unloads clean.
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let injected = faults::injected_failures().total();
            // The injected failure may have hit the first connection: its client sees a reset.
            let _ = load::concurrent_echo(addr, 2, 2, 100);
            load::concurrent_echo(addr, 2, 2, 100).expect("echo after a tolerated failure");
            let report = kernel.unload(driver);
            assert!(
                report.is_clean(),
                "allocation {nth} failed: unload report: {report}"
            );
            println!("{INJECTED_MARK}{injected} (loaded)");
        }
        Err(status) => {
            assert_eq!(
                status, STATUS_INSUFFICIENT_RESOURCES,
                "allocation {nth}: running out must fail the load with \
                 STATUS_INSUFFICIENT_RESOURCES, not {status:#x}"
            );
            let injected = faults::injected_failures().total();
            assert_eq!(
                injected, 1,
                "allocation {nth}: the load failed ({status:#x})"
            );
            let report = kernel.check_leaks();
            assert!(
                report.is_clean(),
                "allocation {nth} failed: the failed start left {report}"
            );
            println!("{INJECTED_MARK}{injected} (failed with {status:#x})");
        }
    }
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "allocation {nth}: {bugchecks:?}");
}

#[test]
fn every_start_up_allocation_failure_fails_the_load_or_is_tolerated() {
    let this = std::env::current_exe().expect("the test binary");
    let mut outcomes = Vec::new();
    for nth in 1u64.. {
        let output = std::process::Command::new(&this)
            .args([
                "--ignored",
                "--exact",
                "one_start_with_its_nth_allocation_failed",
                "--nocapture",
            ])
            .env(NTH_VAR, nth.to_string())
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "allocation {nth} of the start-up failed: the run failed\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let outcome = stdout
            .lines()
            .find_map(|line| {
                line.split_once(INJECTED_MARK)
                    .map(|(_, rest)| rest.to_owned())
            })
            .unwrap_or_else(|| panic!("allocation {nth}: no outcome line\n{stdout}"));
        if outcome.starts_with('0') {
            // Past the start-up's allocations and the first echoes: every one failed once.
            break;
        }
        outcomes.push(outcome);
        assert!(nth < 500, "the start-up never ran out of allocations");
    }
    println!("start-up: {} allocation-failure points:", outcomes.len());
    for (nth, outcome) in (1..).zip(&outcomes) {
        println!("  allocation {nth}: {outcome}");
    }
    assert!(
        outcomes.iter().any(|o| o.contains("failed with")),
        "no failure ever failed the load: the sweep does not reach the start-up"
    );
}

#[test]
fn the_service_survives_failed_allocations_and_serves_once_they_return() {
    let kernel = Kernel::boot(Config::default());
    let port = load::free_loopback_port().expect("a free port");
    let driver = kernel
        .load_driver(wskecho::DriverEntry, "WskEchoLowRes", registry(port))
        .expect("DriverEntry succeeds");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // A third of the allocations and socket creations fail for the next 400 of them.
    faults::set_low_resources(
        Some(LowResources {
            count: Some(400),
            ..LowResources::failing(33)
        }),
        0x10e5,
    );
    let mut rounds = 0;
    while faults::injected_failures().eligible < 400 {
        // Errors are the point here: the clients see resets and closes.
        let _ = load::concurrent_echo(addr, 8, 4, 4096);
        let _ = load::churn(addr, 20, 4);
        rounds += 1;
        assert!(
            rounds < 200,
            "the load made too few allocations to end the window"
        );
    }
    let injected = faults::injected_failures();
    println!("under load: {injected}");
    assert!(injected.total() > 0, "nothing failed: {injected}");
    faults::set_low_resources(None, 0);

    // Resources are back: the driver serves again, byte-exact.
    let echo = load::concurrent_echo(addr, 16, 20, 16 * 1024).expect("echo once resources return");
    assert_eq!(echo.messages, 16 * 20);
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "unload report: {report}");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:?}");
    let log = kernel.debug_log();
    assert!(
        log.contains("wskecho: unload complete: no leaks"),
        "driver log:\n{log}"
    );
}
