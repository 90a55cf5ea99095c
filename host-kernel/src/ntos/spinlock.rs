//! Spin locks: real mutual exclusion on the driver's `KSPIN_LOCK` word, with the IRQL rules and
//! ownership checks of a checked kernel (acquiring a lock the thread already holds, releasing
//! one it does not hold).

use core::sync::atomic::{AtomicUsize, Ordering};
use std::cell::Cell;
use std::format;

use super::irql;
use super::verifier::bugcheck;
use crate::{DISPATCH_LEVEL, KIRQL, KSPIN_LOCK};

std::thread_local! {
    /// This thread's owner token: the value a held lock word contains.
    static TOKEN: Cell<usize> = const { Cell::new(0) };
}

fn token() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    TOKEN.with(|token| {
        if token.get() == 0 {
            // Odd values: never a valid pointer, never zero.
            token.set(NEXT.fetch_add(1, Ordering::Relaxed) * 2 + 1);
        }
        token.get()
    })
}

/// Views a `KSPIN_LOCK` as the atomic word it is.
///
/// # Safety
/// `lock` must be a live, aligned `KSPIN_LOCK` only ever accessed through these functions.
unsafe fn word<'a>(lock: *mut KSPIN_LOCK) -> &'a AtomicUsize {
    // SAFETY: the caller guarantees a live, aligned word accessed only atomically.
    unsafe { AtomicUsize::from_ptr(lock) }
}

/// Spins until the calling thread owns `lock` (IRQL must already be `DISPATCH_LEVEL`).
///
/// # Safety
/// `lock` must be a live, initialised `KSPIN_LOCK`.
pub(crate) unsafe fn acquire(lock: *mut KSPIN_LOCK, function: &'static str) {
    let me = token();
    // SAFETY: forwarded contract.
    let word = unsafe { word(lock) };
    // WDK "Bug Check 0xF: SPIN_LOCK_ALREADY_OWNED"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xf--spin-lock-already-owned): acquiring a spin lock the
    // processor already holds (Windows deadlocks or bugchecks; the host always bugchecks).
    if word.load(Ordering::Relaxed) == me {
        bugcheck(
            "SPIN_LOCK_ALREADY_OWNED",
            format!("{function}: spin lock {lock:p} is already held by this thread"),
        );
    }
    let mut spins = 0u32;
    while word
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins = spins.wrapping_add(1);
        if spins.trailing_zeros() >= 6 {
            // Emulated processors are host threads: let the holder run.
            std::thread::yield_now();
        } else {
            core::hint::spin_loop();
        }
    }
    irql::note_acquired(lock as usize);
}

/// Releases `lock`, which the calling thread must hold.
///
/// # Safety
/// `lock` must be a live `KSPIN_LOCK`.
pub(crate) unsafe fn release(lock: *mut KSPIN_LOCK, function: &'static str) {
    let me = token();
    // SAFETY: forwarded contract.
    let word = unsafe { word(lock) };
    // WDK "Bug Check 0x10: SPIN_LOCK_NOT_OWNED"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x10--spin-lock-not-owned): releasing a spin lock not held.
    // The host also requires the releasing thread to be the acquiring one (stricter: Windows
    // only checks that the lock is held).
    if word.load(Ordering::Relaxed) != me || !irql::note_released(lock as usize) {
        bugcheck(
            "SPIN_LOCK_NOT_OWNED",
            format!("{function}: spin lock {lock:p} is not held by this thread"),
        );
    }
    word.store(0, Ordering::Release);
}

/// Frees every lock the calling thread still holds: recovery after a caught bugcheck, so
/// that the other processors keep going.
pub(crate) fn force_release_held() {
    for lock in irql::take_held_locks() {
        // SAFETY: the thread acquired this lock through `acquire`, so the word was live then;
        // the driver may not free a lock while it is held.
        unsafe { word(lock as *mut KSPIN_LOCK) }.store(0, Ordering::Release);
    }
}

/// Host implementation of `KeAcquireSpinLockRaiseToDpc`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `SpinLock` must be a live, initialised `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeAcquireSpinLockRaiseToDpc(
    SpinLock: *mut KSPIN_LOCK,
) -> KIRQL {
    // WDK "KeAcquireSpinLockRaiseToDpc function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockraisetodpc): IRQL <= DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "KeAcquireSpinLockRaiseToDpc");
    let old = irql::raise(DISPATCH_LEVEL);
    // SAFETY: forwarded contract.
    unsafe { acquire(SpinLock, "KeAcquireSpinLockRaiseToDpc") };
    old
}

/// Host implementation of `KeReleaseSpinLock`. `DISPATCH_LEVEL`.
///
/// # Safety
/// `SpinLock` must be a live `KSPIN_LOCK` the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL) {
    // WDK "KeReleaseSpinLock function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kereleasespinlock):
    // IRQL = DISPATCH_LEVEL.
    irql::require_dispatch("KeReleaseSpinLock");
    // SAFETY: forwarded contract.
    unsafe { release(SpinLock, "KeReleaseSpinLock") };
    irql::lower(NewIrql);
}

/// Host implementation of `KeAcquireSpinLockAtDpcLevel`. IRQL >= `DISPATCH_LEVEL`.
///
/// # Safety
/// `SpinLock` must be a live, initialised `KSPIN_LOCK`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeAcquireSpinLockAtDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    // WDK "KeAcquireSpinLockAtDpcLevel function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockatdpclevel): IRQL >= DISPATCH_LEVEL.
    irql::require_at_least(DISPATCH_LEVEL, "KeAcquireSpinLockAtDpcLevel");
    // SAFETY: forwarded contract.
    unsafe { acquire(SpinLock, "KeAcquireSpinLockAtDpcLevel") };
}

/// Host implementation of `KeReleaseSpinLockFromDpcLevel`. IRQL >= `DISPATCH_LEVEL`.
///
/// # Safety
/// `SpinLock` must be a live `KSPIN_LOCK` the caller holds.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeReleaseSpinLockFromDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    // WDK "KeReleaseSpinLockFromDpcLevel function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kereleasespinlockfromdpclevel): IRQL >= DISPATCH_LEVEL.
    irql::require_at_least(DISPATCH_LEVEL, "KeReleaseSpinLockFromDpcLevel");
    // SAFETY: forwarded contract.
    unsafe { release(SpinLock, "KeReleaseSpinLockFromDpcLevel") };
}
