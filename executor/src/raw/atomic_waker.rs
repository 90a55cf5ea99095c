//! Waker slots that one party registers into and any CPU may wake, without a lock, sharing one
//! `REGISTERING`/`WAKING` handshake (the workspace's only copies, checked by the loom models):
//! [`AtomicWaker`] takes its waker out at every wake (how a [`JoinHandle`](super::JoinHandle)
//! learns that its task finished); [`RetainedWaker`] keeps it across wakes, for an owner that
//! waits on the same slot again and again from the same task (a `wsk-net` socket's operation
//! slot, one receive after another): there a wake only reads the waker, and the owner
//! registering the waker already in the slot only compares it (no atomic operation, no clone).

use core::task::Waker;

use super::sync::{AtomicU32, Ordering, UnsafeCell, loom_const_fn};

/// Nobody is touching the slot (a [`RetainedWaker`]'s owner may be reading it).
const IDLE: u32 = 0;
/// The owner is replacing the waker.
const REGISTERING: u32 = 1;
/// Someone is taking the waker out (or, in a [`RetainedWaker`], reading it) to wake it.
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

/// A waker slot: [`register`](Self::register) by its one owner, [`wake`](Self::wake) from
/// anywhere; the waker stays in the slot until the owner registers a different one or the slot
/// is dropped.
///
/// Who touches the waker: only the owner writes it, and only while it holds `REGISTERING`
/// (moved from `IDLE`); a wake reads it only while it holds `WAKING` (moved from `IDLE`). So a
/// write never overlaps anything, and the owner's own unguarded read in `register` overlaps at
/// most a wake's read. A kept waker may wake its task after the task stopped waiting here: a
/// spurious wake, which futures allow. For the wakers of this crate's executor that costs
/// nothing more: they hold no reference count, and task storage is `'static`.
pub struct RetainedWaker {
    state: AtomicU32,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the waker inside is written only by the owner holding REGISTERING and read by a wake
// only while it holds WAKING (see the type's docs), and `Waker` is Send + Sync.
unsafe impl Sync for RetainedWaker {}
// SAFETY: as above; the slot holds nothing tied to a thread.
unsafe impl Send for RetainedWaker {}

#[cfg(not(loom))]
impl Default for RetainedWaker {
    fn default() -> Self {
        Self::new()
    }
}

impl RetainedWaker {
    loom_const_fn! {
        /// An empty slot.
        pub fn new() -> Self {
            Self { state: AtomicU32::new(IDLE), waker: UnsafeCell::new(None) }
        }
    }

    /// Makes `waker` the one a later [`wake`](Self::wake) wakes. Only one party, the owner,
    /// may register (one at a time). A wake that starts after this returns wakes `waker` (or
    /// one that [`Waker::will_wake`] calls the same); a wake racing with a replacement wakes
    /// `waker` at once, so no wake is lost. Any IRQL at which the wakers may be woken.
    #[inline]
    pub fn register(&self, waker: &Waker) {
        let same = self.waker.with(|slot| {
            // SAFETY: only the owner, the caller, ever writes the slot, so this read can
            // overlap only a wake's read, never a write.
            let kept = unsafe { &*slot };
            kept.as_ref().is_some_and(|kept| kept.will_wake(waker))
        });
        if same {
            return;
        }
        self.replace(waker);
    }

    /// Stores a clone of `waker` in place of the kept one (or none), under `REGISTERING`.
    #[cold]
    fn replace(&self, waker: &Waker) {
        if self
            .state
            .compare_exchange(IDLE, REGISTERING, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            // A wake is reading the kept waker right now: whatever it wakes, our task must look
            // again (and its next registration replaces the waker).
            waker.wake_by_ref();
            return;
        }
        let old = self.waker.with_mut(|slot| {
            // SAFETY: REGISTERING gives the owner the slot exclusively: a wake that starts now
            // sees REGISTERING and does not touch it.
            unsafe { (*slot).replace(waker.clone()) }
        });
        if let Err(actual) =
            self.state
                .compare_exchange(REGISTERING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            // A wake arrived meanwhile (REGISTERING | WAKING) and left the waking to us.
            debug_assert_eq!(actual, REGISTERING | WAKING);
            waker.wake_by_ref();
            self.state.swap(IDLE, Ordering::AcqRel);
        }
        // Dropped outside the protocol: a waker's drop may run arbitrary code.
        drop(old);
    }

    /// Wakes the kept waker, if any, and keeps it. Any IRQL at which the waker may be woken.
    #[inline]
    pub fn wake(&self) {
        // Acquire: the owner's write of the waker, released by its move back to IDLE.
        if self.state.fetch_or(WAKING, Ordering::AcqRel) != IDLE {
            // The owner is replacing the waker and will see WAKING and wake its new one, or
            // another wake holds the slot and wakes the kept waker.
            return;
        }
        self.waker.with(|slot| {
            // SAFETY: we moved the state from IDLE to WAKING: the owner cannot start a write
            // until we move it back, and its unguarded read in `register` is a read.
            let kept = unsafe { &*slot };
            if let Some(kept) = kept {
                kept.wake_by_ref();
            }
        });
        self.state.fetch_and(!WAKING, Ordering::Release);
    }
}
