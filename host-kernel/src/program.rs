//! Helpers for host programs that load a driver (`wskecho`, `wskfloor`, `wskchat`): a program
//! serves until SIGINT (Ctrl-C) or SIGTERM, then unloads the driver and prints the verifier's
//! report, rather than being killed with the driver still loaded.
//!
//! User-mode only (host programs run at no IRQL of the emulated kernel); call
//! [`StopSignals::block`] first thing in `main`, before the kernel boots or any thread starts.
//!
//! [`load_serve_unload`] is a program's load/unload path: one load of the driver, serving until
//! the program says stop, one unload, and what the verifier found. It can be called again on
//! the same kernel (a program that reloads its driver, or a lifecycle test), as Windows stops
//! and starts a service in one boot. [`serve_until_stopped`] is that path with a program's
//! messages and exit status around it.

use std::process::ExitCode;
use std::vec::Vec;

use crate::{Bugcheck, DRIVER_INITIALIZE, Kernel, NTSTATUS, Registry, UnloadReport};

/// How one [`load_serve_unload`] cycle ended, once the driver was loaded.
#[derive(Debug)]
pub struct RunOutcome {
    /// The unload report (leaks found after `DriverUnload` returned).
    pub report: UnloadReport,
    /// The bugchecks the verifier recorded during the cycle (taken from the kernel).
    pub bugchecks: Vec<Bugcheck>,
}

impl RunOutcome {
    /// True when the unload left nothing behind and the verifier recorded no bugcheck.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.report.is_clean() && self.bugchecks.is_empty()
    }
}

/// Why [`load_serve_unload`] did not serve: `DriverEntry` failed.
#[derive(Debug)]
pub struct LoadError {
    /// The status `DriverEntry` returned.
    pub status: NTSTATUS,
    /// The bugchecks the verifier recorded during the failed load (taken from the kernel).
    pub bugchecks: Vec<Bugcheck>,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "DriverEntry failed with NTSTATUS {:#010X}",
            self.status.cast_unsigned()
        )?;
        if !self.bugchecks.is_empty() {
            write!(f, "; {} bugcheck(s) recorded", self.bugchecks.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// A host program's load/unload path: loads `entry` as service `service` with `registry` as
/// its `Services\<service>` key, calls `serve` while it is loaded (a program waits for its
/// stop signal there; a test drives clients), unloads it and collects what the verifier
/// found. Each call is one complete cycle, so it can be called again on the same kernel: a
/// driver whose statics restart (runners do) serves each time.
///
/// ```no_run
/// # unsafe extern "system" fn driver_entry(
/// #     _: *mut wsk_sys::DRIVER_OBJECT,
/// #     _: *mut wsk_sys::UNICODE_STRING,
/// # ) -> wsk_sys::NTSTATUS { 0 }
/// use wsk_host::program::{StopSignals, load_serve_unload};
/// use wsk_host::{Config, Kernel, Registry};
///
/// let signals = StopSignals::block();
/// let kernel = Kernel::boot(Config::default());
/// for _ in 0..2 {
///     let outcome = load_serve_unload(&kernel, driver_entry, "MyDriver", Registry::new(), |_| {
///         let _ = signals.wait();
///     })?;
///     assert!(outcome.is_clean(), "{}", outcome.report);
/// }
/// # Ok::<(), wsk_host::program::LoadError>(())
/// ```
///
/// # Errors
/// [`LoadError`] when `DriverEntry` fails (nothing is loaded then; `serve` is not called).
pub fn load_serve_unload(
    kernel: &Kernel,
    entry: DRIVER_INITIALIZE,
    service: &str,
    registry: Registry,
    serve: impl FnOnce(&Kernel),
) -> Result<RunOutcome, LoadError> {
    let driver = match kernel.load_driver(entry, service, registry) {
        Ok(driver) => driver,
        Err(status) => {
            return Err(LoadError {
                status,
                bugchecks: kernel.take_bugchecks(),
            });
        }
    };
    serve(kernel);
    let report = kernel.unload(driver);
    Ok(RunOutcome {
        report,
        bugchecks: kernel.take_bugchecks(),
    })
}

/// A host program's whole run of its driver: loads `entry` as `service` with `registry`
/// (through [`load_serve_unload`]), serves until `signals` delivers SIGINT or SIGTERM, unloads
/// and prints the unload report on stdout; progress, a failed load (with
/// `why_not_loaded(kernel)` appended when it says anything) and every bugcheck the verifier
/// recorded go to stderr, each line starting `<program> host mode: `. Returns the program's
/// exit status ([`exit_status`]; failure when the driver did not load).
pub fn serve_until_stopped(
    program: &str,
    kernel: &Kernel,
    signals: &StopSignals,
    entry: DRIVER_INITIALIZE,
    service: &str,
    registry: Registry,
    why_not_loaded: impl FnOnce(&Kernel) -> String,
) -> ExitCode {
    let serve = |_: &Kernel| {
        eprintln!("{program} host mode: serving; Ctrl-C unloads the driver");
        let signal = signals.wait();
        eprintln!("{program} host mode: signal {signal}, unloading");
    };
    match load_serve_unload(kernel, entry, service, registry, serve) {
        Ok(outcome) => {
            println!("{program} host mode: unload report: {}", outcome.report);
            exit_status(program, outcome.report.is_clean(), &outcome.bugchecks)
        }
        Err(failed) => {
            let why = why_not_loaded(kernel);
            let why = if why.is_empty() {
                why
            } else {
                format!(": {why}")
            };
            eprintln!(
                "{program} host mode: the driver did not load: DriverEntry failed with \
                 NTSTATUS {:#010X}{why}",
                failed.status.cast_unsigned()
            );
            let _ = exit_status(program, true, &failed.bugchecks);
            ExitCode::FAILURE
        }
    }
}

/// The exit status after a driver ran: failure when the unload left anything behind
/// (`report_is_clean` false) or the verifier recorded any bugcheck (each is printed on stderr
/// as `<program> host mode: the verifier recorded ...`).
#[must_use]
pub fn exit_status(program: &str, report_is_clean: bool, bugchecks: &[Bugcheck]) -> ExitCode {
    for bugcheck in bugchecks {
        eprintln!("{program} host mode: the verifier recorded {bugcheck}");
    }
    if report_is_clean && bugchecks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// SIGINT and SIGTERM, blocked in the thread that made this and every thread it starts later,
/// so that [`StopSignals::wait`] receives them instead of the default handler.
pub struct StopSignals {
    /// The set holding SIGINT and SIGTERM, as blocked.
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks SIGINT and SIGTERM in this thread and in every thread it starts afterwards
    /// (a thread inherits its creator's mask). Threads started earlier are not changed: call
    /// this before booting the kernel.
    #[must_use]
    pub fn block() -> StopSignals {
        // SAFETY: sigset_t is plain data that sigemptyset initialises.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t for sigemptyset to initialise.
        unsafe { libc::sigemptyset(&raw mut set) };
        // SAFETY: `set` is an initialised sigset_t; SIGINT is a valid signal number.
        unsafe { libc::sigaddset(&raw mut set, libc::SIGINT) };
        // SAFETY: as above, for SIGTERM.
        unsafe { libc::sigaddset(&raw mut set, libc::SIGTERM) };
        // SAFETY: `set` is an initialised sigset_t and the old mask is not asked for;
        // pthread_sigmask only changes this thread's mask (inherited by threads spawned
        // afterwards).
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
        StopSignals { set }
    }

    /// Waits until SIGINT or SIGTERM arrives and returns its number.
    #[must_use]
    pub fn wait(&self) -> i32 {
        let mut signal = 0;
        // SAFETY: the set holds signals blocked in every thread of the process (see `block`),
        // so sigwait is the only way they are delivered; both pointers are live.
        unsafe { libc::sigwait(&raw const self.set, &raw mut signal) };
        signal
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to `needed` descriptors, up to the hard limit
/// (which needs no privilege). A host program whose driver serves one host socket per
/// connection calls it with what its connection limit needs.
///
/// # Errors
/// Why the limit stays below `needed`: it cannot be read or set, or the hard limit is lower
/// (`the descriptor limit is <raised> (hard limit <hard>), below the <needed> needed`; the
/// soft limit is then raised as far as it goes).
pub fn raise_descriptor_limit(needed: u64) -> Result<(), String> {
    let needed = libc::rlim_t::from(needed);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(format!(
            "cannot read the descriptor limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= needed {
        return Ok(());
    }
    let raised = needed.min(hard);
    if raised > soft {
        limit.rlim_cur = raised;
        // SAFETY: `limit` is a live rlimit; raising the soft limit up to the hard one needs no
        // privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
            return Err(format!(
                "cannot raise the descriptor limit from {soft} to {raised}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if raised < needed {
        return Err(format!(
            "the descriptor limit is {raised} (hard limit {hard}), below the {needed} needed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use std::process::ExitCode;

    use super::{StopSignals, exit_status, load_serve_unload};
    use crate::{
        Bugcheck, Config, DRIVER_OBJECT, Kernel, NTSTATUS, Registry, STATUS_SUCCESS,
        STATUS_UNSUCCESSFUL, UNICODE_STRING,
    };

    /// Loads of the counting driver, and its unloads.
    static LOADS: AtomicUsize = AtomicUsize::new(0);
    static UNLOADS: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "system" fn counting_unload(_: *mut DRIVER_OBJECT) {
        UNLOADS.fetch_add(1, Ordering::SeqCst);
    }

    unsafe extern "system" fn counting_entry(
        driver: *mut DRIVER_OBJECT,
        _: *mut UNICODE_STRING,
    ) -> NTSTATUS {
        LOADS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the driver object is ours to fill in during DriverEntry.
        unsafe { (*driver).DriverUnload = Some(counting_unload) };
        STATUS_SUCCESS
    }

    unsafe extern "system" fn failing_entry(
        _: *mut DRIVER_OBJECT,
        _: *mut UNICODE_STRING,
    ) -> NTSTATUS {
        STATUS_UNSUCCESSFUL
    }

    #[test]
    fn the_load_unload_path_runs_again_on_the_same_kernel() {
        let kernel = Kernel::boot(Config::default());
        for cycle in 1..=3 {
            let mut served = false;
            let outcome =
                load_serve_unload(&kernel, counting_entry, "Counting", Registry::new(), |_| {
                    assert_eq!(LOADS.load(Ordering::SeqCst), cycle, "loaded while serving");
                    served = true;
                })
                .expect("DriverEntry succeeds");
            assert!(served);
            assert!(outcome.is_clean(), "cycle {cycle}: {outcome:?}");
            assert_eq!(UNLOADS.load(Ordering::SeqCst), cycle);
        }
        let failed = load_serve_unload(&kernel, failing_entry, "Failing", Registry::new(), |_| {
            panic!("a driver that did not load is not served");
        })
        .unwrap_err();
        assert_eq!(failed.status, STATUS_UNSUCCESSFUL);
        assert_eq!(
            failed.to_string(),
            "DriverEntry failed with NTSTATUS 0xC0000001"
        );
    }

    #[test]
    fn a_recorded_bugcheck_fails_the_run_even_after_a_clean_unload() {
        assert_eq!(exit_status("test", true, &[]), ExitCode::SUCCESS);
        assert_eq!(exit_status("test", false, &[]), ExitCode::FAILURE);
        let bugcheck = Bugcheck::new("IRQL_NOT_LESS_OR_EQUAL", "a test record");
        assert_eq!(exit_status("test", true, &[bugcheck]), ExitCode::FAILURE);
    }

    #[test]
    fn a_blocked_stop_signal_is_received_by_wait_not_the_default_handler() {
        // The test harness runs this on its own thread: blocking here leaves the others alone.
        let signals = StopSignals::block();
        // SAFETY: raise sends SIGTERM to this thread, where it is blocked, so it stays pending
        // until `wait` takes it (unblocked, the default action would end the test process).
        let rc = unsafe { libc::raise(libc::SIGTERM) };
        assert_eq!(rc, 0, "raise(SIGTERM): {}", std::io::Error::last_os_error());
        assert_eq!(signals.wait(), libc::SIGTERM);
    }
}
