//! The Wine test's client scenarios against the echo driver on the host kernel: the driver is
//! loaded through its `DriverEntry` with its settings in the registry, serves real TCP on
//! loopback, and is unloaded with clients still connected; the host kernel's verifier must
//! report no leaks.
//!
//! The driver keeps its runner and client in statics (as a `.sys` does), so it is loaded once
//! per process: one test here, the scenarios in sequence.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use wsk_benches::load;
use wsk_sys::host::{Config, Kernel, RegValue, Registry};

const SERVICE: &str = "WskEcho";
/// Bound for anything that should take well under a second; failing past it is loud.
const BOUND: Duration = Duration::from_mins(1);

/// Waits (on the kernel's log, no polling) until the driver logged `wanted`, failing on a
/// line that says it did not start.
fn wait_for_log(kernel: &Kernel, wanted: &str) {
    if let Err(log) = kernel.wait_for_log(
        wanted,
        &["wskecho: not started", "wskecho: cannot listen"],
        BOUND,
    ) {
        panic!("no {wanted:?} in the driver log within {BOUND:?}:\n{log}");
    }
}

#[test]
fn echo_driver_serves_the_wine_scenarios_and_unloads_clean() {
    let kernel = Kernel::boot(Config::default());
    let port = load::free_loopback_port().expect("a free port");
    let registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port.into()))
        .with(
            "Parameters",
            "BindAddress",
            RegValue::Sz("127.0.0.1".into()),
        )
        .with("Parameters", "Runner", RegValue::Sz("dpc".into()))
        .with("Parameters", "MaxConnections", RegValue::Dword(256));
    let driver = kernel
        .load_driver(wskecho::DriverEntry, SERVICE, registry)
        .expect("DriverEntry succeeds");
    wait_for_log(&kernel, "wskecho: listening on");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

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
}
