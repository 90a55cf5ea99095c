//! What the driver-example's end-to-end tests share: loading the echo driver on the host
//! kernel with its settings in the registry, waiting until it listens, unloading it with
//! clients connected.
#![allow(dead_code, reason = "each test binary uses its part")]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use wsk_benches::load;
use wsk_host::{Driver, Kernel, RegValue, Registry};

/// Bound for anything that should take well under a second; failing past it is loud.
pub const BOUND: Duration = Duration::from_mins(1);

/// Holds `clients` idle connections (each with a receive pending in the driver), unloads the
/// driver, and checks that every connection was closed, the verifier raised nothing (`what`
/// says what a bugcheck would mean) and the unload report is clean.
pub fn unload_with_idle_clients(
    kernel: &Kernel,
    driver: Driver,
    addr: SocketAddr,
    clients: usize,
    what: &str,
) {
    let held = load::hold_connections(addr, clients).expect("idle connections");
    let report = kernel.unload(driver);
    held.wait_closed(BOUND)
        .expect("unload closes every connection");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{what}: {bugchecks:#?}");
    assert!(report.is_clean(), "unload report: {report}");
}

/// Loads the echo driver as `service` on a free loopback port with the given runner
/// (`"dpc"` or `"passive"`) and `extra` registry values, and waits until it logs that it
/// listens. Returns the driver and its address.
pub fn load_echo(
    kernel: &Kernel,
    service: &str,
    runner: &str,
    extra: &[(&str, RegValue)],
) -> (Driver, SocketAddr) {
    let port = load::free_loopback_port().expect("a free port");
    let mut registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port.into()))
        .with(
            "Parameters",
            "BindAddress",
            RegValue::Sz("127.0.0.1".into()),
        )
        .with("Parameters", "Runner", RegValue::Sz(runner.into()));
    for (name, value) in extra {
        registry = registry.with("Parameters", name, value.clone());
    }
    let driver = kernel
        .load_driver(wskecho::DriverEntry, service, registry)
        .expect("DriverEntry succeeds");
    if let Err(log) = kernel.wait_for_log(
        "wskecho: listening on",
        &["wskecho: not started", "wskecho: cannot listen"],
        BOUND,
    ) {
        panic!("the driver did not start listening within {BOUND:?}:\n{log}");
    }
    (driver, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// The Wine test's client scenarios against the loaded echo driver at `addr` (concurrent echo
/// with 64 KiB messages, connect/close churn, a reset mid-message), then its unload with idle
/// clients connected: every one closed, the report clean, the driver's log saying it unloaded
/// with no leaks and deregistered. Returns the driver's log for the caller's own checks.
pub fn serve_wine_scenarios_and_unload(
    kernel: &Kernel,
    driver: Driver,
    addr: SocketAddr,
) -> String {
    let echo = load::concurrent_echo(addr, 50, 200, 64 * 1024).expect("concurrent echo");
    assert_eq!(echo.connections, 50);
    assert_eq!(echo.messages, 50 * 200);

    let churn = load::churn(addr, 1000, 8).expect("connect/close churn");
    assert_eq!(churn.connections, 1000);

    load::reset_mid_message(addr)
        .expect("a client resetting mid-message leaves the server serving");

    let held = load::hold_connections(addr, 8).expect("idle connections");
    let held_count = held.len();
    let report = kernel.unload(driver);
    let closed = held
        .wait_closed(BOUND)
        .expect("unload closes every connection");
    assert_eq!(closed, held_count);
    assert!(report.is_clean(), "unload report: {report}");
    let log = kernel.debug_log();
    assert!(
        log.contains("wskecho: unload complete: no leaks"),
        "driver log:\n{log}"
    );
    assert!(log.contains("wskecho: deregistered"), "driver log:\n{log}");
    log
}
