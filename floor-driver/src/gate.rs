//! The one rule a callback chain needs besides its IRPs: no WSK call on a socket after
//! `WskCloseSocket`. A [`Gate`] counts the calls in progress on a socket and the close
//! request; whoever leaves the socket with a close requested and no call in progress issues
//! the close, exactly once.

use core::sync::atomic::{AtomicU32, Ordering};

const CLOSE_REQUESTED: u32 = 1 << 31;
const CLOSE_ISSUED: u32 = 1 << 30;
const CALLS: u32 = CLOSE_ISSUED - 1;

/// Calls in progress on one socket and its close request. Any IRQL.
pub(crate) struct Gate(AtomicU32);

impl Gate {
    /// No call in progress, no close requested.
    pub(crate) const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Enters a WSK call; false once a close was requested (make no call then). Each `true`
    /// is paired with one [`Gate::leave`] after the WSK function returned.
    pub(crate) fn enter(&self) -> bool {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if current & CLOSE_REQUESTED != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Leaves a WSK call; true when the caller must now issue the close.
    pub(crate) fn leave(&self) -> bool {
        let before = self.0.fetch_sub(1, Ordering::AcqRel);
        before & CLOSE_REQUESTED != 0 && before & CALLS == 1 && self.claim_close()
    }

    /// Requests the close; true when the caller must issue it now (no call in progress).
    pub(crate) fn request_close(&self) -> bool {
        let before = self.0.fetch_or(CLOSE_REQUESTED, Ordering::AcqRel);
        before & CLOSE_REQUESTED == 0 && before & CALLS == 0 && self.claim_close()
    }

    /// True once a close was requested.
    pub(crate) fn close_requested(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSE_REQUESTED != 0
    }

    fn claim_close(&self) -> bool {
        self.0.fetch_or(CLOSE_ISSUED, Ordering::AcqRel) & CLOSE_ISSUED == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn the_close_is_issued_once_by_the_last_call_out() {
        let gate = Gate::new();
        assert!(gate.enter());
        assert!(gate.enter());
        assert!(!gate.request_close(), "calls in progress: not now");
        assert!(!gate.enter(), "no call after a close request");
        assert!(!gate.leave());
        assert!(gate.leave(), "the last call out issues the close");
        assert!(!gate.request_close(), "requested once only");
    }

    #[test]
    fn an_idle_socket_is_closed_by_the_request() {
        let gate = Gate::new();
        assert!(!gate.close_requested());
        assert!(gate.request_close());
        assert!(gate.close_requested());
        assert!(!gate.request_close());
    }
}
