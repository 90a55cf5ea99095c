//! Small wrappers for kernel objects in `static` storage: [`KernelCell`] for objects the kernel
//! initialises and owns (`KDPC`, `KEVENT`, `KTIMER`), [`SpinLock`] over a `KSPIN_LOCK`, and
//! `KeShouldYieldProcessor` looked up at run time.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;

use wsk_sys::{KIRQL, KSPIN_LOCK, KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock, SystemRoutine};

/// Storage for a kernel object that `Ke*Initialize*` fills in at run time and the kernel then
/// mutates behind our back: only ever handed to the kernel as a raw pointer.
pub(crate) struct KernelCell<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: the contents are only touched by kernel functions, which synchronise internally.
unsafe impl<T> Sync for KernelCell<T> {}
// SAFETY: as above.
unsafe impl<T> Send for KernelCell<T> {}

impl<T> KernelCell<T> {
    /// Zeroed storage, to be initialised by the kernel before use.
    pub(crate) const fn zeroed() -> Self {
        Self(UnsafeCell::new(MaybeUninit::zeroed()))
    }

    /// The object's address, for kernel calls.
    pub(crate) const fn get(&self) -> *mut T {
        self.0.get().cast()
    }
}

/// A `KSPIN_LOCK` guarding a `T`; acquiring raises to `DISPATCH_LEVEL`, so the lock may be taken
/// at `PASSIVE_LEVEL` and in DPCs alike without a same-CPU deadlock.
pub(crate) struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is only reachable through a guard, which holds the lock.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock (a zero `KSPIN_LOCK` is what `KeInitializeSpinLock` writes).
    pub(crate) const fn new(data: T) -> Self {
        Self {
            lock: UnsafeCell::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Acquires the lock.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`; the guard holds `DISPATCH_LEVEL` until dropped.
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // SAFETY: the lock word lives as long as `self` and is only used as a KSPIN_LOCK.
        let previous = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        SpinGuard {
            owner: self,
            previous,
        }
    }
}

/// Holds a [`SpinLock`]; releases it and restores the IRQL when dropped.
pub(crate) struct SpinGuard<'a, T> {
    owner: &'a SpinLock<T>,
    previous: KIRQL,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.owner.data.get() }
    }
}

impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock.
        unsafe { &mut *self.owner.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: we hold the lock, acquired with KeAcquireSpinLockRaiseToDpc from `previous`.
        unsafe { KeReleaseSpinLock(self.owner.lock.get(), self.previous) };
    }
}

/// `KeShouldYieldProcessor` (`LOGICAL KeShouldYieldProcessor(void)`; Windows 10 2004 and
/// later, not Wine). Never a static import: a driver importing it would not load on older
/// kernels.
static SHOULD_YIELD_PROCESSOR: SystemRoutine = SystemRoutine::new("KeShouldYieldProcessor");

/// Looks up `KeShouldYieldProcessor` (once).
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub(crate) fn resolve_should_yield_processor() {
    if !SHOULD_YIELD_PROCESSOR.is_resolved() {
        // SAFETY: PASSIVE_LEVEL (the caller's contract).
        let _ = unsafe { SHOULD_YIELD_PROCESSOR.resolve() };
    }
}

/// What `KeShouldYieldProcessor` says (TRUE: leave the work loop so the processor can drop
/// below `DISPATCH_LEVEL`); `None` where the kernel lacks it or it was not looked up.
///
/// # IRQL
/// `DISPATCH_LEVEL`.
pub(crate) fn should_yield_processor() -> Option<bool> {
    let routine = SHOULD_YIELD_PROCESSOR.address()?;
    // SAFETY: the value came from MmGetSystemRoutineAddress("KeShouldYieldProcessor"), whose
    // signature is `LOGICAL (void)` (LOGICAL = ULONG) with the system calling convention.
    let routine = unsafe {
        core::mem::transmute::<*const (), unsafe extern "system" fn() -> u32>(
            core::ptr::with_exposed_provenance(routine),
        )
    };
    // SAFETY: documented for DISPATCH_LEVEL, where the caller is.
    Some(unsafe { routine() } != 0)
}
