//! Helpers for host programs that load a driver (`wskecho`, `wskfloor`): a program serves
//! until SIGINT (Ctrl-C) or SIGTERM, then unloads the driver and prints the verifier's report,
//! rather than being killed with the driver still loaded.
//!
//! User-mode only (host programs run at no IRQL of the emulated kernel); call
//! [`StopSignals::block`] first thing in `main`, before the kernel boots or any thread starts.

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
    use super::StopSignals;

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
