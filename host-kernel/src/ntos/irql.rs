//! IRQL, tracked per thread. Raising below the current level or lowering above it is a
//! bugcheck, as are calls above a function's IRQL limit and spin locks still held when the
//! thread returns to `PASSIVE_LEVEL`. Works with or without a booted kernel.

use std::cell::{Cell, RefCell};
use std::format;
use std::vec::Vec;

use super::verifier::bugcheck;
use crate::{DISPATCH_LEVEL, HIGH_LEVEL, KIRQL, PASSIVE_LEVEL};

std::thread_local! {
    static IRQL: Cell<KIRQL> = const { Cell::new(PASSIVE_LEVEL) };
    /// Addresses of the spin locks this thread holds, in acquisition order.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The calling thread's IRQL.
#[must_use]
pub(crate) fn current() -> KIRQL {
    IRQL.with(Cell::get)
}

/// Raises the calling thread's IRQL to `new` and returns the previous level. Raising to a level
/// below the current one is `IRQL_NOT_GREATER_OR_EQUAL`.
pub(crate) fn raise(new: KIRQL) -> KIRQL {
    // WDK "KeRaiseIrql macro (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keraiseirql): raising to an IRQL
    // below the current one is a bug check, "Bug Check 0x9: IRQL_NOT_GREATER_OR_EQUAL"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x9--irql-not-greater-or-equal). Above HIGH_LEVEL is a host
    // addition.
    let old = current();
    if new < old || new > HIGH_LEVEL {
        bugcheck(
            "IRQL_NOT_GREATER_OR_EQUAL",
            format!("KeRaiseIrql to {new} from the higher IRQL {old}"),
        );
    }
    IRQL.with(|irql| irql.set(new));
    old
}

/// Lowers the calling thread's IRQL to `new`. Lowering to a level above the current one is
/// `IRQL_NOT_LESS_OR_EQUAL`; returning to `PASSIVE_LEVEL` with a spin lock held is
/// `SPIN_LOCK_NOT_RELEASED` (named after Driver Verifier's check).
pub(crate) fn lower(new: KIRQL) {
    // WDK "KeLowerIrql function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kelowerirql): lowering to an
    // IRQL above the current one is a fatal error. The host names it
    // IRQL_NOT_LESS_OR_EQUAL (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xa--irql-not-less-or-equal).
    let old = current();
    if new > old {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            format!("KeLowerIrql to {new} from the lower IRQL {old}"),
        );
    }
    IRQL.with(|irql| irql.set(new));
    if new == PASSIVE_LEVEL {
        // Host rule: no WDK bug check page is named SPIN_LOCK_NOT_RELEASED. A lock still held
        // at PASSIVE_LEVEL is the cause the 0xC8 page gives (bug-check-0xc8--irql-unexpected-
        // value: "acquired a spin lock and failed to release it"); the host reports it here,
        // at once.
        let held = held_locks();
        if !held.is_empty() {
            bugcheck(
                "SPIN_LOCK_NOT_RELEASED",
                format!("IRQL lowered to PASSIVE_LEVEL with spin lock(s) held: {held:#x?}"),
            );
        }
    }
}

/// Sets the calling thread's IRQL without checks: for kernel threads starting or recovering
/// from a caught bugcheck.
pub(crate) fn set_unchecked(irql: KIRQL) {
    IRQL.with(|cell| cell.set(irql));
}

/// Bugchecks `IRQL_NOT_LESS_OR_EQUAL`, naming `function`, if the caller runs above `max`.
pub(crate) fn require_at_most(max: KIRQL, function: &'static str) {
    // Each caller cites its function's WDK page for `max`. The name is the host's choice:
    // "Bug Check 0xA: IRQL_NOT_LESS_OR_EQUAL" (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xa--irql-not-less-
    // or-equal) is what a routine touching pageable memory faults with at raised IRQL, and
    // Driver Verifier reports such calls as 0xC4; the host raises 0xA at the call, every
    // time (stricter: Windows faults only if the page is out).
    let irql = current();
    if irql > max {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            format!("{function} called at IRQL {irql}; its maximum is {max}"),
        );
    }
}

/// Bugchecks `IRQL_NOT_GREATER_OR_EQUAL`, naming `function`, if the caller runs below `min`.
pub(crate) fn require_at_least(min: KIRQL, function: &'static str) {
    // "Bug Check 0x9: IRQL_NOT_GREATER_OR_EQUAL"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x9--irql-not-greater-or-equal); callers cite their pages.
    let irql = current();
    if irql < min {
        bugcheck(
            "IRQL_NOT_GREATER_OR_EQUAL",
            format!("{function} called at IRQL {irql}; its minimum is {min}"),
        );
    }
}

/// Bugchecks unless the caller runs at exactly `DISPATCH_LEVEL`.
pub(crate) fn require_dispatch(function: &'static str) {
    require_at_least(DISPATCH_LEVEL, function);
    require_at_most(DISPATCH_LEVEL, function);
}

/// Notes that the calling thread now holds the spin lock at `lock`.
pub(crate) fn note_acquired(lock: usize) {
    HELD.with(|held| held.borrow_mut().push(lock));
}

/// Notes that the calling thread released the spin lock at `lock`; false if it did not hold it.
pub(crate) fn note_released(lock: usize) -> bool {
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if let Some(at) = held.iter().rposition(|&l| l == lock) {
            held.remove(at);
            true
        } else {
            false
        }
    })
}

/// The spin locks the calling thread holds.
pub(crate) fn held_locks() -> Vec<usize> {
    HELD.with(|held| held.borrow().clone())
}

/// Forgets (and returns) every spin lock the calling thread holds: for recovery after a caught
/// bugcheck.
pub(crate) fn take_held_locks() -> Vec<usize> {
    HELD.with(|held| core::mem::take(&mut *held.borrow_mut()))
}

/// The current IRQL of the calling thread (`KeGetCurrentIrql` on the host). Any IRQL.
#[must_use]
#[unsafe(no_mangle)]
pub extern "system-unwind" fn host_current_irql() -> KIRQL {
    current()
}

/// Raises the calling thread's IRQL (`KeRaiseIrql` on the host).
///
/// # Safety
/// See `KeRaiseIrql`: `new_irql` must not be below the current IRQL (a bugcheck here).
#[must_use]
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn host_raise_irql(new_irql: KIRQL) -> KIRQL {
    raise(new_irql)
}

/// Lowers the calling thread's IRQL (`KeLowerIrql` on the host).
///
/// # Safety
/// See `KeLowerIrql`: `new_irql` must not be above the current IRQL (a bugcheck here).
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn host_lower_irql(new_irql: KIRQL) {
    lower(new_irql);
}
