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

mod common;

use std::time::Duration;

use wsk_benches::load;
use wsk_host::{Config, Kernel};

use common::{load_echo, unload_with_idle_clients};

#[test]
fn unload_waits_for_completion_routines_to_return() {
    let kernel =
        Kernel::boot(Config::default().with_late_callback_return(Duration::from_millis(50)));
    let (driver, addr) = load_echo(&kernel, "WskEchoUnload", "dpc", &[]);
    let echo = load::concurrent_echo(addr, 4, 5, 1024).expect("echo");
    assert_eq!(echo.messages, 20);
    // Idle connections: each has a receive pending at unload, cancelled by its close.
    unload_with_idle_clients(
        &kernel,
        driver,
        addr,
        4,
        "driver code ran after DriverUnload returned",
    );
}
