//! A single waker slot that one party registers into and any CPU may wake, without a lock:
//! how a [`JoinHandle`](super::JoinHandle) learns that its task finished, and how `wsk-net`'s
//! completion routines wake the task awaiting an operation. The one copy in the workspace,
//! checked by the loom models.

use core::task::Waker;

use super::sync::{AtomicU32, Ordering, UnsafeCell, loom_const_fn};

/// Nobody is touching the slot.
const IDLE: u32 = 0;
/// The owner is replacing the waker.
const REGISTERING: u32 = 1;
/// Someone is taking the waker out to wake it.
const WAKING: u32 = 2;

/// A waker slot: [`register`](Self::register) by its one owner, [`wake`](Self::wake) from anywhere.
pub struct AtomicWaker {
    state: AtomicU32,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the waker inside is only touched by whoever moved `state` away from IDLE, one party at
// a time, and `Waker` is Send + Sync.
unsafe impl Sync for AtomicWaker {}
// SAFETY: as above; the slot holds nothing tied to a thread.
unsafe impl Send for AtomicWaker {}

#[cfg(not(loom))]
impl Default for AtomicWaker {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicWaker {
    loom_const_fn! {
        /// An empty slot.
        pub fn new() -> Self {
            Self { state: AtomicU32::new(IDLE), waker: UnsafeCell::new(None) }
        }
    }

    /// Stores `waker`, replacing any earlier one. Only one party may register at a time.
    ///
    /// If a wake races with the registration, `waker` is woken at once, so no wake is lost.
    pub fn register(&self, waker: &Waker) {
        match self
            .state
            .compare_exchange(IDLE, REGISTERING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {
                let old = self.waker.with_mut(|slot| {
                    // SAFETY: REGISTERING gives us the slot exclusively.
                    let slot = unsafe { &mut *slot };
                    match slot {
                        Some(current) if current.will_wake(waker) => None,
                        _ => slot.replace(waker.clone()),
                    }
                });
                drop(old);
                if let Err(actual) = self.state.compare_exchange(
                    REGISTERING,
                    IDLE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // A wake arrived meanwhile (REGISTERING | WAKING): it left the waker to us.
                    debug_assert_eq!(actual, REGISTERING | WAKING);
                    // SAFETY: the waker set WAKING but saw REGISTERING, so it does not touch the
                    // slot; we still own it until we store IDLE.
                    let woken = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                    self.state.swap(IDLE, Ordering::AcqRel);
                    if let Some(woken) = woken {
                        woken.wake();
                    }
                }
            }
            // A wake is taking the slot right now: whatever it wakes, our task must look again.
            Err(_) => waker.wake_by_ref(),
        }
    }

    /// Takes the registered waker out, if any; the next [`register`](Self::register) starts afresh.
    pub fn take(&self) -> Option<Waker> {
        match self.state.fetch_or(WAKING, Ordering::AcqRel) {
            IDLE => {
                // SAFETY: we moved the state from IDLE to WAKING, which gives us the slot.
                let waker = self.waker.with_mut(|slot| unsafe { (*slot).take() });
                self.state.fetch_and(!WAKING, Ordering::Release);
                waker
            }
            // The registering party will see WAKING and wake its own waker; another waker is
            // already taking it. Either way the registered waker is woken.
            _ => None,
        }
    }

    /// Wakes the registered waker, if any, and empties the slot.
    pub fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}
