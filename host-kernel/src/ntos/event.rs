//! Dispatcher objects and waits: events, and waiting on events, timers and thread objects.
//!
//! The visible state is the object's `Header.SignalState`, changed only under the machine's
//! dispatcher lock; waiters sleep on the machine's dispatcher condition and re-check.

use std::format;
use std::time::Instant;

use super::irql;
use super::machine::{self, Machine, lock, wait, wait_timeout};
use super::verifier::bugcheck;
use crate::clock;
use crate::{
    APC_LEVEL, BOOLEAN, DISPATCH_LEVEL, DISPATCHER_HEADER, EVENT_TYPE, KEVENT, KPRIORITY,
    KPROCESSOR_MODE, KTIMER, KWAIT_REASON, LARGE_INTEGER, LIST_ENTRY, NTSTATUS, PVOID,
    STATUS_SUCCESS, STATUS_TIMEOUT,
};

/// `Header.Type` of a notification event.
pub(crate) const EVENT_NOTIFICATION_OBJECT: u8 = 0;
/// `Header.Type` of a synchronization event.
pub(crate) const EVENT_SYNCHRONIZATION_OBJECT: u8 = 1;
/// `Header.Type` of a thread.
pub(crate) const THREAD_OBJECT: u8 = 6;
/// `Header.Type` of a notification timer.
pub(crate) const TIMER_NOTIFICATION_OBJECT: u8 = 8;
/// `Header.Type` of a synchronization timer.
pub(crate) const TIMER_SYNCHRONIZATION_OBJECT: u8 = 9;

/// A dispatcher object whose first field is its `DISPATCHER_HEADER` (`repr(C)`).
pub(crate) trait DispatcherObject {}

impl DispatcherObject for KEVENT {}

impl DispatcherObject for KTIMER {}

/// The dispatcher header of `object`: its first field, so a cast, not a dereference.
pub(crate) fn header_of<T: DispatcherObject>(object: *mut T) -> *mut DISPATCHER_HEADER {
    object.cast()
}

/// Initialises a dispatcher header in place.
///
/// # Safety
/// `header` must be writable.
pub(crate) unsafe fn init_header(
    header: *mut DISPATCHER_HEADER,
    kind: u8,
    size: usize,
    state: i32,
) {
    // SAFETY: the caller guarantees writable storage.
    let list = unsafe { &raw mut (*header).WaitListHead };
    // SAFETY: as above.
    unsafe {
        header.write(DISPATCHER_HEADER {
            Type: kind,
            Absolute: 0,
            Size: u8::try_from(size / 4).unwrap_or(u8::MAX),
            Inserted: 0,
            SignalState: state,
            WaitListHead: LIST_ENTRY {
                Flink: list,
                Blink: list,
            },
        });
    }
}

/// Sets an object's signal state under the dispatcher lock and wakes waiters; returns the
/// previous state.
///
/// # Safety
/// `header` must be a live dispatcher header.
pub(crate) unsafe fn signal(machine: &Machine, header: *mut DISPATCHER_HEADER, state: i32) -> i32 {
    let _guard = lock(&machine.dispatcher);
    // SAFETY: the caller guarantees a live header; its state changes under the dispatcher lock.
    let previous = unsafe { core::mem::replace(&mut (*header).SignalState, state) };
    if state > 0 {
        machine.dispatcher_changed.notify_all();
    }
    previous
}

/// Host implementation of `KeInitializeEvent`. Any IRQL.
///
/// # Safety
/// `Event` must point to writable KEVENT storage nobody waits on.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeInitializeEvent(
    Event: *mut KEVENT,
    Type: EVENT_TYPE,
    State: BOOLEAN,
) {
    // WDK "KeInitializeEvent function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keinitializeevent): any
    // IRQL; no check here.
    let kind = if Type == crate::SynchronizationEvent {
        EVENT_SYNCHRONIZATION_OBJECT
    } else {
        EVENT_NOTIFICATION_OBJECT
    };
    // SAFETY: the caller guarantees writable storage.
    unsafe {
        init_header(
            header_of(Event),
            kind,
            size_of::<KEVENT>(),
            i32::from(State != 0),
        );
    }
}

/// Host implementation of `KeSetEvent`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Event` must be a live, initialised KEVENT.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeSetEvent(
    Event: *mut KEVENT,
    Increment: KPRIORITY,
    Wait: BOOLEAN,
) -> i32 {
    let _ = Increment;
    // WDK "KeSetEvent function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kesetevent): IRQL <=
    // DISPATCH_LEVEL with Wait FALSE, <= APC_LEVEL with Wait TRUE (the IrqlKeSetEvent rule).
    // The host does not keep the raised IRQL across a Wait TRUE call; it only checks the level.
    irql::require_at_most(
        if Wait == 0 { DISPATCH_LEVEL } else { APC_LEVEL },
        "KeSetEvent",
    );
    let machine = machine::current("KeSetEvent");
    // SAFETY: forwarded contract.
    unsafe { signal(&machine, header_of(Event), 1) }
}

/// Host implementation of `KeClearEvent`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Event` must be a live, initialised KEVENT.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeClearEvent(Event: *mut KEVENT) {
    // WDK "KeClearEvent function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keclearevent): IRQL <=
    // DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "KeClearEvent");
    let machine = machine::current("KeClearEvent");
    // SAFETY: forwarded contract.
    unsafe { signal(&machine, header_of(Event), 0) };
}

/// Host implementation of `KeResetEvent`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Event` must be a live, initialised KEVENT.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeResetEvent(Event: *mut KEVENT) -> i32 {
    // WDK "KeResetEvent function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keresetevent): IRQL <=
    // DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "KeResetEvent");
    let machine = machine::current("KeResetEvent");
    // SAFETY: forwarded contract.
    unsafe { signal(&machine, header_of(Event), 0) }
}

/// Waits until `header` is signalled or `deadline` (an instant) passes; consumes the signal of
/// synchronization objects. True if signalled.
///
/// # Safety
/// `header` must be a live dispatcher header for the whole wait.
pub(crate) unsafe fn wait_for(
    machine: &Machine,
    header: *mut DISPATCHER_HEADER,
    deadline: Option<Instant>,
) -> bool {
    let mut guard = lock(&machine.dispatcher);
    loop {
        // SAFETY: the caller guarantees a live header; its state changes under the lock held.
        let object = unsafe { &mut *header };
        if object.SignalState > 0 {
            let kind = object.Type;
            if kind == EVENT_SYNCHRONIZATION_OBJECT || kind == TIMER_SYNCHRONIZATION_OBJECT {
                object.SignalState = 0;
            }
            return true;
        }
        match deadline {
            None => guard = wait(&machine.dispatcher_changed, guard),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return false;
                }
                guard = wait_timeout(&machine.dispatcher_changed, guard, deadline - now);
            }
        }
    }
}

/// Host implementation of `KeWaitForSingleObject` on events, timers and thread objects.
/// `PASSIVE_LEVEL`/`APC_LEVEL`; `DISPATCH_LEVEL` with a zero timeout only.
///
/// # Safety
/// `Object` must be a live dispatcher object for the whole wait; `Timeout` null or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeWaitForSingleObject(
    Object: PVOID,
    WaitReason: KWAIT_REASON,
    WaitMode: KPROCESSOR_MODE,
    Alertable: BOOLEAN,
    Timeout: *mut LARGE_INTEGER,
) -> NTSTATUS {
    let _ = (WaitReason, WaitMode, Alertable);
    // SAFETY: the caller guarantees Timeout is null or valid.
    let timeout = unsafe { Timeout.as_ref().copied() };
    // WDK "KeWaitForSingleObject function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kewaitforsingleobject): IRQL <= DISPATCH_LEVEL, and <= APC_LEVEL
    // unless Timeout points to zero. IRQL_NOT_LESS_OR_EQUAL is the host's name for the
    // violation (see irql::require_at_most).
    if timeout == Some(0) {
        irql::require_at_most(DISPATCH_LEVEL, "KeWaitForSingleObject");
    } else if irql::current() > APC_LEVEL {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            format!(
                "KeWaitForSingleObject with a non-zero timeout ({timeout:?}) at IRQL {}",
                irql::current()
            ),
        );
    }
    let machine = machine::current("KeWaitForSingleObject");
    let header = Object.cast::<DISPATCHER_HEADER>();
    // SAFETY: the caller guarantees a live dispatcher object.
    let kind = unsafe { (*header).Type };
    if !matches!(
        kind,
        EVENT_NOTIFICATION_OBJECT
            | EVENT_SYNCHRONIZATION_OBJECT
            | THREAD_OBJECT
            | TIMER_NOTIFICATION_OBJECT
            | TIMER_SYNCHRONIZATION_OBJECT
    ) {
        // Host rule, stricter than Windows: the KeWaitForSingleObject page requires a
        // dispatcher object; Windows does not check and misbehaves on anything else. The host
        // names it after "Bug Check 0x4: INVALID_DATA_ACCESS_TRAP"
        // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x4--invalid-data-access-trap).
        bugcheck(
            "INVALID_DATA_ACCESS_TRAP",
            format!("KeWaitForSingleObject on {Object:p}: not a waitable object (type {kind})"),
        );
    }
    let deadline = timeout.map(|t| clock::expiry_instant(clock::absolute(t)));
    // SAFETY: forwarded contract.
    if unsafe { wait_for(&machine, header, deadline) } {
        STATUS_SUCCESS
    } else {
        STATUS_TIMEOUT
    }
}

/// Host implementation of `KeDelayExecutionThread`. `PASSIVE_LEVEL` (or `APC_LEVEL`).
///
/// # Safety
/// `Interval` must be valid.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeDelayExecutionThread(
    WaitMode: KPROCESSOR_MODE,
    Alertable: BOOLEAN,
    Interval: *mut LARGE_INTEGER,
) -> NTSTATUS {
    let _ = (WaitMode, Alertable);
    // WDK "KeDelayExecutionThread function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kedelayexecutionthread): IRQL <= APC_LEVEL.
    irql::require_at_most(APC_LEVEL, "KeDelayExecutionThread");
    // SAFETY: the caller guarantees a valid interval.
    let interval = unsafe { *Interval };
    let deadline = clock::expiry_instant(clock::absolute(interval));
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
    STATUS_SUCCESS
}
