//! The echo driver with `EventDriven` 1: every connection receives through WSK's receive
//! event callbacks (`TcpStream::recv_events`), under the Wine scenarios (concurrent echo with
//! 64 KiB messages, churn, a reset mid-message, idle connections closed by the unload), and
//! the unload must leave nothing behind: no retained indication, MDL, IRP or pool block.
//!
//! The driver keeps its runner and client in statics, so it is loaded once per process: one
//! test, the scenarios in sequence.

mod common;

use wsk_benches::load;
use wsk_host::{Config, Kernel, RegValue};

use common::{BOUND, load_echo};

#[test]
fn event_driven_echo_serves_the_wine_scenarios_and_unloads_clean() {
    let kernel = Kernel::boot(Config::default());
    let (driver, addr) = load_echo(
        &kernel,
        "WskEcho",
        "dpc",
        &[
            ("MaxConnections", RegValue::Dword(256)),
            ("EventDriven", RegValue::Dword(1)),
        ],
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
        log.contains("connection(s) event-driven so far"),
        "the connections were event-driven; driver log:\n{log}"
    );
    assert!(
        !log.contains("receive IRPs"),
        "no connection fell back to receive IRPs; driver log:\n{log}"
    );
    assert!(
        log.contains("wskecho: unload complete: no leaks"),
        "driver log:\n{log}"
    );
}
