//! An unload cannot be refused: `DriverUnload` must wait for every socket to close, however
//! long the provider takes, before it deregisters and returns. Here every `WskCloseSocket`
//! takes 11 s (longer than the 10 s the driver once waited before giving up and unloading
//! with its WSK client still registered, which the host kernel reports as bugcheck 0xCE).
//!
//! Its own test binary: the driver keeps its runner in statics, loaded once per process.

mod common;

use std::time::Duration;

use wsk_host::faults::Faults;
use wsk_host::{Config, Kernel};

use common::{BOUND, load_echo, unload_with_idle_clients};

#[test]
fn unload_waits_for_a_slow_close_and_says_what_it_waits_for() {
    let faults = Faults {
        close_delay: Some(Duration::from_secs(11)),
        // The provider's own deregistration watchdog must not fire first.
        deregister_wait: Some(BOUND),
        ..Faults::default()
    };
    let kernel = Kernel::boot(Config::default().with_faults(faults));
    let (driver, addr) = load_echo(&kernel, "WskEchoSlowClose", "dpc", &[]);
    unload_with_idle_clients(
        &kernel,
        driver,
        addr,
        2,
        "DriverUnload returned with WSK still holding its sockets",
    );
    let log = kernel.debug_log();
    assert!(
        log.contains("still closing after"),
        "deregistration said nothing while it waited:\n{log}"
    );
    assert!(log.contains("wskecho: deregistered"), "driver log:\n{log}");
}
