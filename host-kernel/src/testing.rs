//! Fixtures for tests that run on the host kernel, shared by every crate's host tests: the
//! bound a test waits at most, the fault plans every WSK scenario runs under, and the runner
//! that boots a fresh [`Kernel`] per plan, hands it to the scenario and then checks that the
//! verifier found nothing (no leak, no bugcheck).
//!
//! ```no_run
//! use wsk_host::testing;
//!
//! testing::each_plan(|kernel| {
//!     kernel.on_kernel_thread(|| {
//!         // Drive the WSK provider as a driver does; any completion mode must do.
//!     });
//! });
//! ```

use std::boxed::Box;
use std::format;
use std::time::Duration;
use std::vec;
use std::vec::Vec;

use crate::faults::{Completion, Faults};
use crate::{Config, DRIVER_OBJECT, Kernel};

/// How long a test waits for anything that should take milliseconds before it fails loudly
/// (generous: the machine may be loaded).
pub const BOUND: Duration = Duration::from_secs(30);

/// The fault plans every WSK scenario runs under: inline, deferred and mixed completion, and
/// mixed completion with reordering across sockets and delays up to 1 ms, each from its own
/// seed. A scenario must pass under all of them.
#[must_use]
pub fn plans() -> Vec<Faults> {
    vec![
        Faults::with(Completion::Inline, 1),
        Faults::with(Completion::Deferred, 2),
        Faults::with(Completion::Mixed, 3),
        Faults {
            reorder: true,
            max_delay: Duration::from_millis(1),
            ..Faults::with(Completion::Mixed, 0xfeed_f00d)
        },
    ]
}

/// Runs `scenario` under every plan of [`plans`]: see [`run_plans`].
///
/// # Panics
/// As [`run_plans`].
pub fn each_plan(scenario: impl FnMut(&Kernel)) {
    run_plans(plans(), scenario);
}

/// For each plan: boots a kernel with it (default configuration otherwise), hands the kernel
/// to `scenario` (which runs on the calling thread: use [`Kernel::on_kernel_thread`] for
/// driver code), then checks the kernel ends with no leaks and no bugchecks.
///
/// # Panics
/// When the scenario panics, or the verifier found a leak or recorded a bugcheck; the message
/// names the plan.
pub fn run_plans(plans: impl IntoIterator<Item = Faults>, mut scenario: impl FnMut(&Kernel)) {
    for plan in plans {
        let label = format!("{plan:?}");
        let kernel = Kernel::boot(Config::default().with_faults(plan));
        scenario(&kernel);
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "plan {label}: {report}");
        let bugchecks = kernel.take_bugchecks();
        assert!(bugchecks.is_empty(), "plan {label}: {bugchecks:?}");
    }
}

/// A driver object named `name` for a test that registers a WSK client without loading a
/// driver; it lives for the rest of the process (leaked), so it outlives every client
/// registered with it. Call at `PASSIVE_LEVEL`.
#[must_use]
pub fn leaked_driver_object(kernel: &Kernel, name: &str) -> *mut DRIVER_OBJECT {
    Box::leak(Box::new(kernel.create_driver_object(name))).object()
}
