//! A lock-free single-waker cell: a future registers its waker, a completion routine on any
//! processor wakes it. No allocation, usable at `DISPATCH_LEVEL`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};
use core::task::Waker;

const IDLE: u8 = 0;
const REGISTERING: u8 = 1;
const WAKING: u8 = 2;

/// Holds at most one waker. `register` and `wake` may race from different processors; a wake
/// that lands during a registration is not lost (the registering side wakes instead).
pub(crate) struct AtomicWaker {
    state: AtomicU8,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the waker cell is only touched by the side that won the state transition
// (REGISTERING for writers, WAKING for the taker), so access is exclusive.
unsafe impl Sync for AtomicWaker {}
// SAFETY: Waker is Send.
unsafe impl Send for AtomicWaker {}

impl AtomicWaker {
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            waker: UnsafeCell::new(None),
        }
    }

    /// Stores `waker` to be woken by the next [`AtomicWaker::wake`].
    pub(crate) fn register(&self, waker: &Waker) {
        match self
            .state
            .compare_exchange(IDLE, REGISTERING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: REGISTERING gives this side exclusive access to the cell.
                let slot = unsafe { &mut *self.waker.get() };
                if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *slot = Some(waker.clone());
                }
                if self
                    .state
                    .compare_exchange(REGISTERING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    // A wake arrived while we registered (state is REGISTERING|WAKING): it
                    // could not take the waker, so wake now on its behalf.
                    // SAFETY: the waker side backs off while REGISTERING is set.
                    let taken = unsafe { (*self.waker.get()).take() };
                    self.state.store(IDLE, Ordering::Release);
                    if let Some(w) = taken {
                        w.wake();
                    }
                }
            }
            Err(_) => {
                // A wake is in progress: the event we wait for may already have happened.
                waker.wake_by_ref();
            }
        }
    }

    /// Wakes the registered waker, if any.
    pub(crate) fn wake(&self) {
        if self.state.fetch_or(WAKING, Ordering::AcqRel) == IDLE {
            // SAFETY: we moved IDLE -> WAKING, which gives exclusive access to the cell.
            let taken = unsafe { (*self.waker.get()).take() };
            self.state.fetch_and(!WAKING, Ordering::Release);
            if let Some(w) = taken {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wake_after_register_wakes_once() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cell = AtomicWaker::new();
        cell.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "nothing registered yet");
        cell.register(&waker);
        cell.wake();
        cell.wake();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waker is taken by the first wake"
        );
    }

    #[test]
    fn racing_wakes_are_never_lost() {
        for _ in 0..200 {
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(count.clone());
            let cell = Arc::new(AtomicWaker::new());
            let c2 = cell.clone();
            cell.register(&waker);
            let t = std::thread::spawn(move || c2.wake());
            cell.register(&waker);
            t.join().unwrap();
            // Whatever the interleaving, the wake reached the registered waker at least once.
            assert!(count.0.load(Ordering::SeqCst) >= 1);
        }
    }
}
