//! The Wine test's client scenarios against the echo driver on the host kernel: the driver is
//! loaded through its `DriverEntry` with its settings in the registry, serves real TCP on
//! loopback, and is unloaded with clients still connected; the host kernel's verifier must
//! report no leaks.
//!
//! The driver keeps its runner and client in statics (as a `.sys` does), so it is loaded once
//! per process: one test here, the scenarios in sequence.

mod common;

use wsk_benches::load;
use wsk_host::{Config, Kernel, RegValue};

use common::{BOUND, load_echo};

#[test]
fn echo_driver_serves_the_wine_scenarios_and_unloads_clean() {
    let kernel = Kernel::boot(Config::default());
    let (driver, addr) = load_echo(
        &kernel,
        "WskEcho",
        "dpc",
        &[("MaxConnections", RegValue::Dword(256))],
    );

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
