//! [`SpinMutex`]: a `KSPIN_LOCK` guarding a value, taken with `KeAcquireSpinLockRaiseToDpc`.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

#[cfg(not(loom))]
use wsk_sys::{KIRQL, KSPIN_LOCK, KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};

use crate::raw::sync::loom_const_fn;

/// A spin lock guarding a `T`, for short critical sections shared with DPCs, completion
/// routines and tasks on other processors.
///
/// [`lock`](Self::lock) raises the IRQL to `DISPATCH_LEVEL` and acquires the lock
/// (`KeAcquireSpinLockRaiseToDpc`); dropping the guard releases it and restores the caller's
/// IRQL (`KeReleaseSpinLock`). The WDK rules this follows: the caller runs at IRQL <=
/// `DISPATCH_LEVEL` (WDK "`KeAcquireSpinLockRaiseToDpc` function (wdm.h)",
/// learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockraisetodpc),
/// and the processor stays at `DISPATCH_LEVEL` until the release restores the previous IRQL
/// (WDK "Calling Support Routines That Use Spin Locks",
/// learn.microsoft.com/windows-hardware/drivers/kernel/calling-support-routines-that-use-spin-locks).
/// So while the guard lives the code must not wait, touch pageable memory or take long, and
/// must not take the same lock again: a recursive acquisition spins forever (the host
/// kernel's verifier reports it).
///
/// The guard is `!Send`: a task cannot hold it across an `.await` (tasks must be `Send`), which
/// would leave the processor at `DISPATCH_LEVEL` with the lock held while other tasks run.
/// For state held across `.await`, use [`Mutex`](super::Mutex). ([`block_on`](crate::block_on)
/// takes futures that are not `Send`; there the rule is the caller's, and an `.await` that
/// waits with the guard held is a wait at `DISPATCH_LEVEL`, which the host kernel's verifier
/// reports.) Spawning such a task does not compile:
///
/// ```compile_fail
/// use wsk_executor::sync::SpinMutex;
/// use wsk_executor::{Budget, Runner, TaskPool, yield_now};
///
/// static RUNNER: Runner = Runner::new(Budget::DEFAULT);
/// static TASKS: TaskPool<512, 1> = TaskPool::new();
/// static VALUE: SpinMutex<u32> = SpinMutex::new(0);
///
/// let _ = RUNNER.spawn(&TASKS, async {
///     let guard = VALUE.lock();
///     yield_now().await; // error: `SpinMutexGuard` is not `Send`
///     drop(guard);
/// });
/// ```
///
/// # IRQL
/// [`lock`](Self::lock): <= `DISPATCH_LEVEL`; the guard holds `DISPATCH_LEVEL` until dropped.
/// [`new`](Self::new), [`get_mut`](Self::get_mut), [`into_inner`](Self::into_inner): any.
///
/// # Example
/// ```no_run
/// use wsk_executor::sync::SpinMutex;
///
/// static COUNTERS: SpinMutex<[u64; 4]> = SpinMutex::new([0; 4]);
///
/// fn count(kind: usize) {
///     let mut counters = COUNTERS.lock(); // DISPATCH_LEVEL from here ...
///     if let Some(counter) = counters.get_mut(kind) {
///         *counter += 1;
///     }
/// } // ... to here: the guard restores the caller's IRQL
/// ```
pub struct SpinMutex<T: ?Sized> {
    lock: RawSpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard, which holds the lock, or through `&mut
// self`; moving a `T: Send` between processors is all sharing the mutex does.
unsafe impl<T: ?Sized + Send> Sync for SpinMutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for SpinMutex<T> {}

impl<T> SpinMutex<T> {
    loom_const_fn! {
        /// An unlocked mutex holding `value`.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new(value: T) -> Self {
            Self { lock: RawSpinLock::new(), data: UnsafeCell::new(value) }
        }
    }

    /// The value, taken out of the mutex.
    ///
    /// # IRQL
    /// Any.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> SpinMutex<T> {
    /// Acquires the lock, spinning at `DISPATCH_LEVEL` while another processor holds it.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (above it, `KeAcquireSpinLockRaiseToDpc` would lower the IRQL: a
    /// bug check). The guard keeps the processor at `DISPATCH_LEVEL` until it drops.
    pub fn lock(&self) -> SpinMutexGuard<'_, T> {
        let previous = self.lock.acquire();
        SpinMutexGuard {
            mutex: self,
            previous,
            _not_send: PhantomData,
        }
    }

    /// The value, through `&mut self`: no other reference exists, so no lock is taken.
    ///
    /// # IRQL
    /// Any.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

impl<T: Default> Default for SpinMutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> core::fmt::Debug for SpinMutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never locks: a Debug print must not spin, nor raise the IRQL.
        f.debug_struct("SpinMutex").finish_non_exhaustive()
    }
}

/// Holds a [`SpinMutex`]: derefs to its value; dropping it releases the lock and restores the
/// IRQL the caller had before [`SpinMutex::lock`].
///
/// `!Send`: release it on the processor (and in the code path) that acquired it, before any
/// `.await`.
///
/// # IRQL
/// `DISPATCH_LEVEL` while it lives.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SpinMutexGuard<'a, T: ?Sized> {
    mutex: &'a SpinMutex<T>,
    previous: Irql,
    /// `!Send` and `!Sync`: the guard stands for a held spin lock and a raised IRQL of this
    /// processor.
    _not_send: PhantomData<*const ()>,
}

impl<T: ?Sized> Deref for SpinMutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no `&mut` to the data exists elsewhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for SpinMutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.lock.release(self.previous);
    }
}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for SpinMutexGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&**self, f)
    }
}

/// The IRQL a guard restores (nothing under loom, which has no IRQL).
#[cfg(not(loom))]
type Irql = KIRQL;
#[cfg(loom)]
type Irql = ();

/// The lock word: a `KSPIN_LOCK` for the kernel; under loom, which has no IRQL and cannot see
/// into kernel calls, a modelled lock with the same acquire/release semantics.
#[cfg(not(loom))]
struct RawSpinLock(UnsafeCell<KSPIN_LOCK>);

#[cfg(not(loom))]
impl RawSpinLock {
    /// An unlocked lock (a zero `KSPIN_LOCK` is what `KeInitializeSpinLock` writes).
    const fn new() -> Self {
        Self(UnsafeCell::new(0))
    }

    /// Raises to `DISPATCH_LEVEL`, acquires, returns the previous IRQL.
    fn acquire(&self) -> KIRQL {
        // SAFETY: the lock word lives as long as `self` and is only ever used as a
        // KSPIN_LOCK; IRQL <= DISPATCH_LEVEL is `SpinMutex::lock`'s documented contract.
        unsafe { KeAcquireSpinLockRaiseToDpc(self.0.get()) }
    }

    /// Releases and lowers to `previous`.
    fn release(&self, previous: KIRQL) {
        // SAFETY: called once per acquire, by the guard that holds the lock, with the IRQL
        // that acquire returned.
        unsafe { KeReleaseSpinLock(self.0.get(), previous) };
    }
}

/// Under loom: a flag behind a modelled mutex and condition variable. A spinning loop would
/// make loom explore every spin (it gives up past its branch limit); blocking until the
/// holder releases is the same exclusion, with acquire/release ordering, in a few branches.
#[cfg(loom)]
struct RawSpinLock {
    held: loom::sync::Mutex<bool>,
    released: loom::sync::Condvar,
}

#[cfg(loom)]
impl RawSpinLock {
    fn new() -> Self {
        Self {
            held: loom::sync::Mutex::new(false),
            released: loom::sync::Condvar::new(),
        }
    }

    fn acquire(&self) {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        *held = true;
    }

    fn release(&self, (): ()) {
        *self.held.lock().unwrap() = false;
        self.released.notify_one();
    }
}
