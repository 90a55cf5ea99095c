//! The state machine behind [`Service`](crate::driver::Service): a slot that is filled once,
//! read by shared reference while full, closed (no new readers) and then emptied by its
//! owner once the old readers are known to be gone, and filled again.
//!
//! Kept generic and free of kernel calls so that loom (`--cfg loom`) explores its
//! interleavings and Miri checks its unsafe code, with a plain value in place of the client.

use core::mem::MaybeUninit;

#[cfg(loom)]
use loom::cell::UnsafeCell;
use wsk_executor::raw::sync::{AtomicU32, Ordering};

/// core's `UnsafeCell` with loom's closure API (`with` to read, `with_mut` to write), so that
/// under loom the models check every access to the value for races.
#[cfg(not(loom))]
struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a pointer to read the contents through.
    fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a pointer to write the contents through; the caller rules out
    /// concurrent access.
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Nothing stored; [`Slot::fill`] may begin.
const EMPTY: u32 = 0;
/// A fill or a take owns the storage.
const BUSY: u32 = 1;
/// A value is stored; [`Slot::get`] hands out references.
const FULL: u32 = 2;
/// A value is stored but [`Slot::get`] refuses: the owner waits for old readers to go.
const CLOSED: u32 = 3;

/// Why [`Slot::fill`] did not store a value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FillError<E> {
    /// The slot was not empty; the constructor was not called.
    Occupied,
    /// The constructor failed; the slot is empty again.
    Failed(E),
}

/// A once-at-a-time value with shared readers: see the module docs.
pub(crate) struct Slot<T> {
    state: AtomicU32,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: `state` serialises every write (only the one thread that moved it to BUSY writes the
// storage) and readers only read while FULL, after the Release store that published the
// value; `T: Sync` because readers on several threads share it, `T: Send` because the value
// moves in and out on whichever thread fills and takes.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

impl<T> Slot<T> {
    wsk_executor::raw::sync::loom_const_fn! {
        /// An empty slot.
        pub(crate) fn new() -> Self {
            Self {
                state: AtomicU32::new(EMPTY),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            }
        }
    }

    /// Stores the value `make` returns, if the slot is empty; `make` runs only then.
    pub(crate) fn fill<E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<&T, FillError<E>> {
        if self
            .state
            .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(FillError::Occupied);
        }
        let value = match make() {
            Ok(value) => value,
            Err(e) => {
                self.state.store(EMPTY, Ordering::Release);
                return Err(FillError::Failed(e));
            }
        };
        self.value.with_mut(|storage| {
            // SAFETY: BUSY (set above by us alone) gives exclusive access to the storage.
            unsafe { (*storage).write(value) };
        });
        self.state.store(FULL, Ordering::Release);
        // SAFETY: just written, and it stays until `take`, whose caller guarantees that no
        // reference from this slot is alive.
        Ok(unsafe { self.stored() })
    }

    /// The value, while the slot is full (not empty, being filled, or closed).
    pub(crate) fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != FULL {
            return None;
        }
        // SAFETY: FULL was published after the value was written (Acquire above); it stays
        // until `take`, which requires every reference to be gone.
        Some(unsafe { self.stored() })
    }

    /// Stops handing out references; true if this call closed a full slot.
    pub(crate) fn close(&self) -> bool {
        self.state
            .compare_exchange(FULL, CLOSED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the value out of a closed slot, leaving it empty (fillable again); `None` when
    /// the slot is not closed.
    ///
    /// # Safety
    /// No reference returned by [`get`](Self::get) or [`fill`](Self::fill) is still alive.
    pub(crate) unsafe fn take(&self) -> Option<T> {
        if self
            .state
            .compare_exchange(CLOSED, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let value = self.value.with_mut(|storage| {
            // SAFETY: CLOSED held a written value; BUSY (ours) excludes every other access
            // and the caller guarantees no reader is left.
            unsafe { storage.cast::<T>().read() }
        });
        self.state.store(EMPTY, Ordering::Release);
        Some(value)
    }

    /// The stored value.
    ///
    /// # Safety
    /// The slot is FULL (or BUSY in the filler's own hands, after the write), and stays so
    /// while the reference lives.
    unsafe fn stored(&self) -> &T {
        self.value.with(|storage| {
            // SAFETY: initialised per the caller; the reference is shared, and writers are
            // excluded until `take`, whose caller guarantees this reference is gone.
            unsafe { &*storage.cast::<T>() }
        })
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        if matches!(self.state.load(Ordering::Acquire), FULL | CLOSED) {
            self.value.with_mut(|storage| {
                // SAFETY: FULL or CLOSED means a written value, and `&mut self` means no
                // reference to it is alive.
                unsafe { core::ptr::drop_in_place(storage.cast::<T>()) };
            });
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    extern crate std;
    use std::string::String;

    use super::{FillError, Slot};

    #[test]
    fn fill_get_close_take_and_fill_again() {
        let slot = Slot::new();
        assert!(slot.get().is_none());
        assert_eq!(
            slot.fill(|| Ok::<_, ()>(String::from("one")))
                .map(String::as_str),
            Ok("one")
        );
        assert_eq!(slot.get().map(String::as_str), Some("one"));
        assert_eq!(
            slot.fill(|| Ok::<_, ()>(String::from("two"))),
            Err(FillError::Occupied)
        );
        assert_eq!(
            // SAFETY: not closed, so nothing is taken (and no reference is alive anyway).
            unsafe { slot.take() },
            None,
            "only a closed slot gives its value up"
        );
        assert!(slot.close());
        assert!(!slot.close(), "a second close finds it closed");
        assert!(slot.get().is_none(), "no new readers once closed");
        // SAFETY: no reference from `get` is alive (none was kept).
        assert_eq!(unsafe { slot.take() }.as_deref(), Some("one"));
        assert!(slot.get().is_none());
        assert_eq!(
            slot.fill(|| Ok::<_, ()>(String::from("two")))
                .map(String::as_str),
            Ok("two")
        );
        // Dropped full: Miri's leak check sees the String freed.
    }

    #[test]
    fn a_failed_fill_leaves_it_empty_and_dropping_a_closed_slot_frees_the_value() {
        let slot: Slot<String> = Slot::new();
        assert_eq!(slot.fill(|| Err::<String, _>(7)), Err(FillError::Failed(7)));
        assert!(slot.get().is_none());
        assert!(!slot.close(), "nothing to close");
        assert!(slot.fill(|| Ok::<_, ()>(String::from("x"))).is_ok());
        assert!(slot.close());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;
    use std::sync::Arc;

    use super::Slot;

    /// A reader racing the owner's fill, close and take: it sees either nothing or the whole
    /// value, never a torn or freed one; and the owner's take happens after the reader is
    /// joined, as `Service::stop` takes only after the runners are shut down.
    #[test]
    fn loom_reader_sees_nothing_or_the_whole_value() {
        loom::model(|| {
            let slot = Arc::new(Slot::<[u64; 2]>::new());
            let reader = {
                let slot = Arc::clone(&slot);
                loom::thread::spawn(move || slot.get().map(|v| v[0] + v[1]))
            };
            assert!(slot.fill(|| Ok::<_, ()>([20, 22])).is_ok());
            let seen = reader.join().unwrap();
            assert!(matches!(seen, None | Some(42)), "{seen:?}");
            assert!(slot.close());
            // SAFETY: the reader thread was joined: no reference is alive.
            assert_eq!(unsafe { slot.take() }, Some([20, 22]));
        });
    }

    /// Two fillers: exactly one stores, the other is told the slot is occupied.
    #[test]
    fn loom_one_of_two_fills_wins() {
        loom::model(|| {
            let slot = Arc::new(Slot::<u32>::new());
            let other = {
                let slot = Arc::clone(&slot);
                loom::thread::spawn(move || slot.fill(|| Ok::<_, ()>(1)).is_ok())
            };
            let mine = slot.fill(|| Ok::<_, ()>(2)).is_ok();
            let theirs = other.join().unwrap();
            assert!(mine ^ theirs);
            let stored = *slot.get().unwrap();
            assert_eq!(stored, if mine { 2 } else { 1 });
        });
    }

    /// A reader racing the close: it gets the value only before the close; the take after
    /// the join never frees what the reader used.
    #[test]
    fn loom_close_races_a_reader() {
        loom::model(|| {
            let slot = Arc::new(Slot::<u32>::new());
            assert!(slot.fill(|| Ok::<_, ()>(5)).is_ok());
            let reader = {
                let slot = Arc::clone(&slot);
                loom::thread::spawn(move || slot.get().copied())
            };
            assert!(slot.close());
            let seen = reader.join().unwrap();
            assert!(matches!(seen, None | Some(5)));
            // SAFETY: the reader was joined.
            assert_eq!(unsafe { slot.take() }, Some(5));
        });
    }
}
