//! The Wine test's client scenarios against the echo driver on the host kernel: the driver is
//! loaded through its `DriverEntry` with its settings in the registry, serves real TCP on
//! loopback, and is unloaded with clients still connected; the host kernel's verifier must
//! report no leaks.
//!
//! The driver keeps its runner and client in statics (as a `.sys` does), so it is loaded once
//! per process: one test here, the scenarios in sequence.

mod common;

use wsk_host::{Config, Kernel, RegValue};

use common::{load_echo, serve_wine_scenarios_and_unload};

#[test]
fn echo_driver_serves_the_wine_scenarios_and_unloads_clean() {
    let kernel = Kernel::boot(Config::default());
    let (driver, addr) = load_echo(
        &kernel,
        "WskEcho",
        "dpc",
        &[("MaxConnections", RegValue::Dword(256))],
    );

    serve_wine_scenarios_and_unload(&kernel, driver, addr);
}
