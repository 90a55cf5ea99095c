//! [`Spares`]: a small lock-free cache of values (receive buffers, typically) that connections
//! give back when they go idle and take again when data comes.
//!
//! An event-driven connection holds no receive buffer while idle ([`crate::TcpStream::indicated`]):
//! it takes one when data is indicated and gives it back when no more waits, once per message
//! in a ping-pong. With a spin lock around the cache that was two lock round trips per
//! message; here each take or give is one compare-exchange on a slot's state (plus one per
//! slot it passes over) and one store, at any IRQL up to `DISPATCH_LEVEL` (no IRQL change).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

/// The slot holds nothing.
const EMPTY: u8 = 0;
/// A take or give owns the slot's storage right now.
const BUSY: u8 = 1;
/// The slot holds a value.
const FULL: u8 = 2;

/// One cached value and who owns its storage.
struct Slot<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Up to `N` spare values of type `T` (such as [`IoBuf`](crate::IoBuf)s), shared without a
/// lock: [`Spares::take`] and [`Spares::give`] from any number of tasks and processors.
///
/// ```no_run
/// use wsk_net::{IoBuf, Spares};
/// static SPARE_BUFFERS: Spares<IoBuf, 8> = Spares::new();
/// let buf = SPARE_BUFFERS.take().map_or_else(|| IoBuf::with_capacity(16 * 1024), Ok)?;
/// // ... receive into it, send it back ...
/// drop(SPARE_BUFFERS.give(buf)); // freed here when all 8 slots are full
/// # Ok::<(), wsk_net::Error>(())
/// ```
///
/// # IRQL
/// Every method at any IRQL the values' own drop allows (an [`IoBuf`](crate::IoBuf)'s:
/// <= `DISPATCH_LEVEL`); none takes a lock.
pub struct Spares<T, const N: usize> {
    slots: [Slot<T>; N],
}

// SAFETY: a slot's value is touched only by the one party that moved its state to BUSY, and
// handed between parties through the state's release/acquire pairs; values move between
// threads, hence `T: Send`.
unsafe impl<T: Send, const N: usize> Sync for Spares<T, N> {}
// SAFETY: as above: owning the cache owns its values.
unsafe impl<T: Send, const N: usize> Send for Spares<T, N> {}

impl<T, const N: usize> Spares<T, N> {
    /// An empty cache (usable in a `static`).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            slots: [const {
                Slot {
                    state: AtomicU8::new(EMPTY),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                }
            }; N],
        }
    }

    /// A cached value, if any slot holds one (a slot being filled or emptied right now is
    /// passed over).
    ///
    /// # IRQL
    /// Any.
    pub fn take(&self) -> Option<T> {
        for slot in &self.slots {
            if slot
                .state
                .compare_exchange(FULL, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: FULL -> BUSY made the storage ours alone until we store again.
                let storage = unsafe { &mut *slot.value.get() };
                // SAFETY: FULL means a give wrote a value there (its release store, which our
                // acquire saw), not read out since.
                let value = unsafe { storage.assume_init_read() };
                // The storage is free again; the next give's acquire orders our read first.
                slot.state.store(EMPTY, Ordering::Release);
                return Some(value);
            }
        }
        None
    }

    /// Caches `value`; gives it back (`Some`) when every slot is taken, for the caller to
    /// drop (or keep).
    ///
    /// # IRQL
    /// Any.
    pub fn give(&self, value: T) -> Option<T> {
        for slot in &self.slots {
            if slot
                .state
                .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: EMPTY -> BUSY made the storage ours; it holds no value (the last
                // take read it out before its release store of EMPTY, which we acquired).
                unsafe { (*slot.value.get()).write(value) };
                slot.state.store(FULL, Ordering::Release);
                return None;
            }
        }
        Some(value)
    }

    /// Whether some slot holds a value right now (a hint: another party may take or give
    /// meanwhile). Its acquire load orders what the giver wrote before it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn holds_any(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.state.load(Ordering::Acquire) == FULL)
    }

    /// Drops every cached value (one being given or taken right now is left to that call).
    ///
    /// # IRQL
    /// As the values' drop.
    pub fn clear(&self) {
        while let Some(value) = self.take() {
            drop(value);
        }
    }
}

impl<T, const N: usize> Default for Spares<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for Spares<T, N> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;

    use std::boxed::Box;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::vec::Vec;

    use super::*;

    /// Counts its drops, so a value lost or dropped twice shows.
    struct Counted(Arc<AtomicUsize>, Box<u32>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn takes_what_was_given_and_hands_back_what_does_not_fit() {
        let drops = Arc::new(AtomicUsize::new(0));
        let spares: Spares<Counted, 2> = Spares::new();
        assert!(spares.take().is_none());
        assert!(!spares.holds_any());
        assert!(spares.give(Counted(drops.clone(), Box::new(1))).is_none());
        assert!(spares.holds_any());
        assert!(spares.give(Counted(drops.clone(), Box::new(2))).is_none());
        let third = spares.give(Counted(drops.clone(), Box::new(3)));
        assert_eq!(third.as_ref().map(|c| *c.1), Some(3));
        drop(third);
        let mut taken: Vec<u32> = (0..2).filter_map(|_| spares.take()).map(|c| *c.1).collect();
        taken.sort_unstable();
        assert_eq!(taken, [1, 2]);
        assert!(spares.take().is_none());
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert!(spares.give(Counted(drops.clone(), Box::new(4))).is_none());
        drop(spares);
        assert_eq!(
            drops.load(Ordering::SeqCst),
            4,
            "the cache drops what it holds"
        );
    }

    #[test]
    fn threads_taking_and_giving_lose_and_duplicate_nothing() {
        const THREADS: usize = 3;
        const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };
        let drops = Arc::new(AtomicUsize::new(0));
        let spares: Arc<Spares<Counted, 2>> = Arc::new(Spares::new());
        let made = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (spares, drops, made) = (spares.clone(), drops.clone(), made.clone());
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let value = spares.take().unwrap_or_else(|| {
                            made.fetch_add(1, Ordering::SeqCst);
                            Counted(drops.clone(), Box::new(7))
                        });
                        assert_eq!(*value.1, 7, "round {round}: a torn or stale value");
                        drop(spares.give(value));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
        spares.clear();
        // Each value made was dropped once (by a give that found no slot, or by the clear):
        // none lost, none dropped twice.
        assert_eq!(drops.load(Ordering::SeqCst), made.load(Ordering::SeqCst));
    }
}
