//! The echo driver with `EventDriven` 1: every connection is accepted through WSK's accept
//! callback (`TcpListener::accept_events`) and receives through WSK's receive event callbacks
//! (`TcpStream::recv_events`), under the Wine scenarios (concurrent echo with
//! 64 KiB messages, churn, a reset mid-message, idle connections closed by the unload), and
//! the unload must leave nothing behind: no retained indication, MDL, IRP or pool block.
//!
//! The driver keeps its runner and client in statics, so it is loaded once per process: one
//! test, the scenarios in sequence.

mod common;

use wsk_host::{Config, Kernel, RegValue};

use common::{load_echo, serve_wine_scenarios_and_unload};

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

    let log = serve_wine_scenarios_and_unload(&kernel, driver, addr);
    assert!(
        log.contains("connection(s) event-driven so far"),
        "the connections were event-driven; driver log:\n{log}"
    );
    assert!(
        !log.contains("receive IRPs"),
        "no connection fell back to receive IRPs; driver log:\n{log}"
    );
    assert!(
        log.contains("wskecho: connections accepted through accept events"),
        "the listener accepted through accept events; driver log:\n{log}"
    );
    assert!(
        !log.contains("accept IRPs"),
        "the listener did not fall back to accept IRPs; driver log:\n{log}"
    );
}
