//! The unload window: a completion routine that signals what `DriverUnload` waits for (the
//! last socket closed) and only then returns. On Windows, if `DriverUnload` returns in between,
//! the rest of the routine runs in an unloaded image: bugcheck 0xCE. The host kernel keeps
//! every completion routine counted as running for a while after it returned
//! (`Config::with_late_callback_return`) and raises
//! `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS` if `DriverUnload` returns inside
//! that window. `wsk-net` registers its routines with `IoSetCompletionRoutineEx`, whose device
//! object reference keeps the image until they return, so the unload must come out clean.
//!
//! Its own test binary: the driver keeps its runner in statics, loaded once per process.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use wsk_benches::load;
use wsk_sys::host::{Config, Kernel, RegValue, Registry};

const BOUND: Duration = Duration::from_mins(1);

#[test]
fn unload_waits_for_completion_routines_to_return() {
    let kernel =
        Kernel::boot(Config::default().with_late_callback_return(Duration::from_millis(50)));
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
        .load_driver(wskecho::DriverEntry, "WskEchoUnload", registry)
        .expect("DriverEntry succeeds");
    if let Err(log) = kernel.wait_for_log("wskecho: listening on", &["wskecho: not"], BOUND) {
        panic!("the driver did not start:\n{log}");
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let echo = load::concurrent_echo(addr, 4, 5, 1024).expect("echo");
    assert_eq!(echo.messages, 20);
    // Idle connections: each has a receive pending at unload, cancelled by its close.
    let held = load::hold_connections(addr, 4).expect("idle connections");
    let report = kernel.unload(driver);
    held.wait_closed(BOUND)
        .expect("unload closes every connection");
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.is_empty(),
        "driver code ran after DriverUnload returned: {bugchecks:#?}"
    );
    assert!(report.is_clean(), "unload report: {report}");
}
