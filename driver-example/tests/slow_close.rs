//! An unload cannot be refused: `DriverUnload` must wait for every socket to close, however
//! long the provider takes, before it deregisters and returns. Here every `WskCloseSocket`
//! takes 11 s (longer than the 10 s the driver once waited before giving up and unloading
//! with its WSK client still registered, which the host kernel reports as bugcheck 0xCE).
//!
//! Its own test binary: the driver keeps its runner in statics, loaded once per process.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use wsk_benches::load;
use wsk_sys::host::faults::Faults;
use wsk_sys::host::{Config, Kernel, RegValue, Registry};

const BOUND: Duration = Duration::from_mins(1);

#[test]
fn unload_waits_for_a_slow_close_and_says_what_it_waits_for() {
    let faults = Faults {
        close_delay: Some(Duration::from_secs(11)),
        // The provider's own deregistration watchdog must not fire first.
        deregister_wait: Some(BOUND),
        ..Faults::default()
    };
    let kernel = Kernel::boot(Config::default().with_faults(faults));
    let port = load::free_loopback_port().expect("a free port");
    let registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port.into()))
        .with(
            "Parameters",
            "BindAddress",
            RegValue::Sz("127.0.0.1".into()),
        )
        .with("Parameters", "Runner", RegValue::Sz("dpc".into()));
    let driver = kernel
        .load_driver(wskecho::DriverEntry, "WskEchoSlowClose", registry)
        .expect("DriverEntry succeeds");
    if let Err(log) = kernel.wait_for_log("wskecho: listening on", &["wskecho: not"], BOUND) {
        panic!("the driver did not start:\n{log}");
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let held = load::hold_connections(addr, 2).expect("idle connections");
    let report = kernel.unload(driver);
    held.wait_closed(BOUND)
        .expect("unload closes every connection");
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.is_empty(),
        "DriverUnload returned with WSK still holding its sockets: {bugchecks:#?}"
    );
    assert!(report.is_clean(), "unload report: {report}");
    let log = kernel.debug_log();
    assert!(
        log.contains("still closing after"),
        "deregistration said nothing while it waited:\n{log}"
    );
    assert!(log.contains("wskecho: deregistered"), "driver log:\n{log}");
}
