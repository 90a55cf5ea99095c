//! Fixtures for tests that run on the host kernel, shared by every crate's host tests: the
//! bound a test waits at most, the fault plans every WSK scenario runs under, and the runner
//! that boots a fresh [`Kernel`] per plan, hands it to the scenario and then checks that the
//! verifier found nothing (no leak, no bugcheck). [`net`] has the peer side of a driver test
//! (a free loopback port, a client with timeouts, an echo round trip).
//!
//! The plans can be chosen from outside: `WSK_FAULTS` (a plan as [`Faults::parse`] reads it)
//! and `WSK_SEED` make [`plans`] that one plan; a failing plan prints the command that replays
//! it, e.g. `replay: WSK_FAULTS=mixed,reorder,delay=1ms WSK_SEED=7 cargo test -p wsk-net
//! --test acceptance -- --exact timeout_on_a_receive --include-ignored`.
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

#[path = "testing_net.rs"]
pub mod net;

use core::fmt::Write as _;
use std::boxed::Box;
use std::format;
use std::string::String;
use std::time::Duration;
use std::vec;
use std::vec::Vec;

use crate::faults::{Completion, Faults};
use crate::{Config, DRIVER_OBJECT, Kernel};

/// How long a test waits for anything that should take milliseconds before it fails loudly
/// (generous: the machine may be loaded).
pub const BOUND: Duration = Duration::from_secs(30);

/// The fault plans every WSK scenario runs under. Chosen from outside when `WSK_FAULTS` or
/// `WSK_SEED` is set ([`Faults::from_env`]): that one plan. Otherwise the standard set
/// ([`standard_plans`]).
///
/// # Panics
/// When `WSK_FAULTS` or `WSK_SEED` is set but does not parse (the message says why).
#[must_use]
pub fn plans() -> Vec<Faults> {
    match Faults::from_env() {
        Ok(Some(plan)) => vec![plan],
        Ok(None) => standard_plans(),
        Err(message) => panic!("{message}"),
    }
}

/// The standard plans: inline, deferred and mixed completion, and mixed completion with
/// reordering across sockets and delays up to 1 ms, each from its own seed. A scenario must
/// pass under all of them.
#[must_use]
pub fn standard_plans() -> Vec<Faults> {
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
/// driver code), then checks the kernel ends with no leaks and no bugchecks. When a plan
/// fails, prints the command that replays it ([`replay_command`]) before the panic goes on.
///
/// # Panics
/// When the scenario panics, or the verifier found a leak or recorded a bugcheck; the message
/// names the plan.
pub fn run_plans(plans: impl IntoIterator<Item = Faults>, scenario: impl FnMut(&Kernel)) {
    run_plans_with(&Config::default(), plans, scenario);
}

/// [`run_plans`] with `config` for everything but the fault plan (a hosts table, fewer
/// processors, ...).
///
/// # Panics
/// As [`run_plans`].
pub fn run_plans_with(
    config: &Config,
    plans: impl IntoIterator<Item = Faults>,
    mut scenario: impl FnMut(&Kernel),
) {
    for plan in plans {
        let label = format!("{plan:?}");
        let replay = replay_command(&plan);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let kernel = Kernel::boot(config.clone().with_faults(plan));
            scenario(&kernel);
            let report = kernel.check_leaks();
            assert!(report.is_clean(), "plan {label}: {report}");
            let bugchecks = kernel.take_bugchecks();
            assert!(bugchecks.is_empty(), "plan {label}: {bugchecks:?}");
        }));
        if let Err(payload) = outcome {
            std::eprintln!("replay: {replay}");
            std::panic::resume_unwind(payload);
        }
    }
}

/// The command that runs the current test again under `plan` alone:
/// `WSK_FAULTS=... WSK_SEED=N cargo test -p <package> --test <file> -- --exact <test>`. The
/// package comes from `CARGO_PKG_NAME` (which `cargo test` sets), the test binary's file
/// from the program's name, the test from the thread's name (libtest names each test's
/// thread after it); whatever is unknown is left out.
#[must_use]
pub fn replay_command(plan: &Faults) -> String {
    let mut command = format!("{} cargo test", plan.replay_env());
    if let Ok(package) = std::env::var("CARGO_PKG_NAME") {
        let _ = write!(command, " -p {package}");
    }
    let program = std::env::args().next().unwrap_or_default();
    let file = std::path::Path::new(&program)
        .file_name()
        .and_then(|name| name.to_str())
        .map(|name| {
            name.rsplit_once('-')
                .map_or(name, |(file, _hash)| file)
                .to_owned()
        });
    let test = std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .map(std::borrow::ToOwned::to_owned);
    match file.as_deref() {
        // A library's unit tests run from the package's own binary, named like the package.
        Some(file) if Some(file.replace('_', "-")) != std::env::var("CARGO_PKG_NAME").ok() => {
            let _ = write!(command, " --test {file}");
        }
        Some(_) => command.push_str(" --lib"),
        None => {}
    }
    if let Some(test) = test {
        let _ = write!(command, " -- --exact {test} --include-ignored");
    }
    command
}

/// A driver object named `name` for a test that registers a WSK client without loading a
/// driver; it lives for the rest of the process (leaked), so it outlives every client
/// registered with it. Call at `PASSIVE_LEVEL`.
#[must_use]
pub fn leaked_driver_object(kernel: &Kernel, name: &str) -> *mut DRIVER_OBJECT {
    Box::leak(Box::new(kernel.create_driver_object(name))).object()
}

/// What the running kernel holds right now: live pool blocks and their bytes, IRPs and MDLs
/// (everything allocated and not yet freed, the driver's and the kernel's own). Two readings
/// far apart in a long run show whether anything grows. All zero with no kernel booted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelUsage {
    /// Live pool allocations.
    pub pool_blocks: usize,
    /// Their bytes.
    pub pool_bytes: usize,
    /// Live IRPs.
    pub irps: usize,
    /// Live MDLs.
    pub mdls: usize,
}

impl core::fmt::Display for KernelUsage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "pool {} blocks / {} bytes, {} IRPs, {} MDLs",
            self.pool_blocks, self.pool_bytes, self.irps, self.mdls
        )
    }
}

/// The running kernel's live pool grouped by tag: `(tag as its four characters, blocks,
/// bytes)`, in tag order; empty with no kernel booted. Two readings around a change show
/// whose allocations it added (`idle_pool` prints them per idle connection). Any thread.
#[must_use]
pub fn pool_by_tag() -> Vec<(String, usize, usize)> {
    let Some(machine) = crate::ntos::machine::try_current() else {
        return Vec::new();
    };
    let mut tags = crate::ntos::pool::by_tag(&crate::ntos::machine::lock(&machine.pool));
    if let Some(contexts) =
        crate::ntos::device::contexts_usage(&crate::ntos::machine::lock(&machine.devices))
    {
        tags.push(contexts);
        tags.sort();
    }
    tags
}

/// Reads [`KernelUsage`] of the running kernel. Any thread.
#[must_use]
pub fn kernel_usage() -> KernelUsage {
    let Some(machine) = crate::ntos::machine::try_current() else {
        return KernelUsage::default();
    };
    let (mut pool_blocks, mut pool_bytes) =
        crate::ntos::pool::usage(&crate::ntos::machine::lock(&machine.pool));
    // The completion-routine contexts live on a lookaside list, outside the pool table, but
    // are nonpaged pool on Windows.
    if let Some((_, blocks, bytes)) =
        crate::ntos::device::contexts_usage(&crate::ntos::machine::lock(&machine.devices))
    {
        pool_blocks += blocks;
        pool_bytes += bytes;
    }
    KernelUsage {
        pool_blocks,
        pool_bytes,
        irps: crate::ntos::machine::lock(&machine.irps).live.len(),
        mdls: crate::ntos::machine::lock(&machine.mdls).live.len(),
    }
}
