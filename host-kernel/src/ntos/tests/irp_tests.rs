use core::ffi::c_void;
use std::sync::Mutex;

use super::*;
use crate::ntos::irp::call_driver_enter;
use crate::{
    DEVICE_OBJECT, DISPATCH_LEVEL, FALSE, IO_NO_INCREMENT, IO_STACK_LOCATION, IO_TYPE_IRP, IRP,
    IoAllocateIrp, IoCancelIrp, IoFreeIrp, IoGetCurrentIrpStackLocation, IoReleaseCancelSpinLock,
    IoReuseIrp, IoSetCancelRoutine, IoSetCompletionRoutine, IoSetNextIrpStackLocation, IoSizeOfIrp,
    IofCompleteRequest, KeGetCurrentIrql, NTSTATUS, PVOID, STATUS_CANCELLED,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, TRUE,
};

/// What a completion routine saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    who: &'static str,
    current_location: i8,
    status: NTSTATUS,
    cancel: bool,
    irql: u8,
    device_null: bool,
}

/// A completion routine's context: its name, what it returns, and the shared log.
struct Routine {
    who: &'static str,
    returns: NTSTATUS,
    log: &'static Mutex<Vec<Seen>>,
}

unsafe extern "system" fn completion(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the context is a Routine the test keeps alive.
    let routine = unsafe { &*context.cast::<Routine>() };
    // SAFETY: the IRP is live during completion.
    let current_location = unsafe { (*irp).CurrentLocation };
    // SAFETY: as above.
    let status = unsafe { (*irp).IoStatus.Status };
    // SAFETY: as above.
    let cancel = unsafe { (*irp).Cancel } != 0;
    if let Ok(mut log) = routine.log.lock() {
        log.push(Seen {
            who: routine.who,
            current_location,
            status,
            cancel,
            irql: KeGetCurrentIrql(),
            device_null: device.is_null(),
        });
    }
    routine.returns
}

/// Allocates an IRP with `stack` locations, registers [`completion`] with `routine` (when
/// given) for success, error and cancel, and has the provider take it: the IRP is pending.
///
/// # Safety
/// IRQL <= `DISPATCH_LEVEL`; `routine`, when given, outlives the IRP's completion.
unsafe fn issued(stack: i8, routine: Option<&Routine>) -> *mut IRP {
    // SAFETY: the IRQL is the caller's guarantee.
    let irp = unsafe { IoAllocateIrp(stack, FALSE) };
    if let Some(routine) = routine {
        // SAFETY: a fresh IRP, ours; the routine outlives its completion (the caller's).
        unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(routine), true, true, true) };
    }
    // SAFETY: a fresh IRP with a location left for the provider.
    unsafe { call_driver_enter(irp) };
    irp
}

/// Sets an IRP's final status, as the driver completing it does.
///
/// # Safety
/// `irp` must be a live IRP.
unsafe fn set_status(irp: *mut IRP, status: NTSTATUS) {
    // SAFETY: a live IRP (the caller's guarantee).
    unsafe { (*irp).IoStatus.Status = status };
}

fn leak_log() -> &'static Mutex<Vec<Seen>> {
    Box::leak(Box::new(Mutex::new(Vec::new())))
}

fn ctx(routine: &Routine) -> PVOID {
    core::ptr::from_ref(routine).cast_mut().cast::<c_void>()
}

#[test]
fn allocate_lays_out_stack_locations_as_wdm_does() {
    let kernel = boot();
    // PASSIVE_LEVEL; the IRP is live from here until freed, before the kernel goes.
    // SAFETY: see above.
    let irp = unsafe { IoAllocateIrp(3, FALSE) };
    assert!(!irp.is_null());
    // SAFETY: see above.
    assert_eq!(unsafe { (*irp).Type }, IO_TYPE_IRP);
    // SAFETY: see above.
    assert_eq!(usize::from(unsafe { (*irp).Size }), IoSizeOfIrp(3));
    // SAFETY: see above.
    assert_eq!(unsafe { (*irp).StackCount }, 3);
    // SAFETY: see above.
    assert_eq!(unsafe { (*irp).CurrentLocation }, 4);
    let first = irp.wrapping_add(1).cast::<IO_STACK_LOCATION>();
    // SAFETY: see above.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    assert_eq!(current, first.wrapping_add(3), "one past the last location");
    // SAFETY: see above.
    unsafe { call_driver_enter(irp) };
    // SAFETY: see above.
    assert_eq!(unsafe { (*irp).CurrentLocation }, 3);
    // SAFETY: see above.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    assert_eq!(current, first.wrapping_add(2));
    // SAFETY: see above.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
    // The provider's location has no routine, nor the one above; stop at the top.
    let log = leak_log();
    let top = Routine {
        who: "top",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    // Put our routine in location 3, the allocator's "next" (as IoSetCompletionRoutine
    // would have before the call).
    let third = first.wrapping_add(2);
    // SAFETY: see above: one of the IRP's three locations.
    unsafe { (*third).CompletionRoutine = Some(completion) };
    // SAFETY: as above.
    unsafe { (*third).Context = ctx(&top) };
    // SAFETY: as above.
    unsafe { (*third).Control = crate::SL_INVOKE_ON_SUCCESS };
    // SAFETY: see above; `top` outlives the completion.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    // SAFETY: see above.
    assert_eq!(unsafe { (*irp).CurrentLocation }, 4);
    assert_eq!(log.lock().unwrap().len(), 1);
    // SAFETY: see above; freed once.
    unsafe { IoFreeIrp(irp) };
    assert!(kernel.check_leaks().is_clean());
}

/// Builds a two-level IRP: our routine "top" at the allocator's level (all flags), a middle
/// driver's routine with `flags`, then the provider takes it.
unsafe fn two_levels(top: &Routine, middle: &Routine, flags: (bool, bool, bool)) -> *mut IRP {
    // The caller's contract: PASSIVE/DISPATCH, routines outlive the IRP's completion; the
    // IRP is fresh and ours.
    // SAFETY: see above.
    let irp = unsafe { IoAllocateIrp(2, FALSE) };
    // SAFETY: see above.
    unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(top), true, true, true) };
    // SAFETY: see above; the middle driver's dispatch runs.
    unsafe { IoSetNextIrpStackLocation(irp) };
    // SAFETY: see above.
    unsafe {
        IoSetCompletionRoutine(
            irp,
            Some(completion),
            ctx(middle),
            flags.0,
            flags.1,
            flags.2,
        );
    };
    // SAFETY: see above; the provider takes it.
    unsafe { call_driver_enter(irp) };
    irp
}

#[test]
fn completion_walks_up_the_stack_calling_each_routine() {
    let kernel = boot();
    let log = leak_log();
    let top = Routine {
        who: "top",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    let middle = Routine {
        who: "middle",
        returns: STATUS_SUCCESS,
        log,
    };
    kernel.on_kernel_thread(|| {
        // The routines outlive the IRP; PASSIVE_LEVEL; the IRP is live until freed.
        // SAFETY: see above.
        let irp = unsafe { two_levels(&top, &middle, (true, true, true)) };
        // SAFETY: see above.
        assert_eq!(unsafe { (*irp).CurrentLocation }, 1);
        // SAFETY: see above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: see above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: see above; completed, freed once.
        unsafe { IoFreeIrp(irp) };
    });
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.who).collect::<Vec<_>>(),
        ["middle", "top"]
    );
    assert_eq!(
        seen[0].current_location, 2,
        "the middle routine runs with its own location current"
    );
    assert_eq!(seen[1].current_location, 3, "ours runs at the top");
    assert!(
        seen[1].device_null,
        "no device object at the allocator's level"
    );
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn completion_routines_honour_the_invoke_flags() {
    let kernel = boot();
    // (success, error, cancel) flags of the middle routine; status; cancel; expected call.
    let cases = [
        ((true, false, false), STATUS_SUCCESS, false, true),
        ((true, false, false), STATUS_UNSUCCESSFUL, false, false),
        ((false, true, false), STATUS_UNSUCCESSFUL, false, true),
        ((false, true, false), STATUS_SUCCESS, false, false),
        ((false, false, true), STATUS_CANCELLED, true, true),
        ((false, false, true), STATUS_CANCELLED, false, false),
        ((false, false, true), STATUS_SUCCESS, true, true),
        ((false, false, false), STATUS_SUCCESS, true, false),
    ];
    for (flags, status, cancel, called) in cases {
        let log = leak_log();
        let top = Routine {
            who: "top",
            returns: STATUS_MORE_PROCESSING_REQUIRED,
            log,
        };
        let middle = Routine {
            who: "middle",
            returns: STATUS_SUCCESS,
            log,
        };
        kernel.on_kernel_thread(|| {
            // The routines outlive the IRP; the IRP is live until freed.
            // SAFETY: see above.
            let irp = unsafe { two_levels(&top, &middle, flags) };
            // SAFETY: see above.
            unsafe { (*irp).IoStatus.Status = status };
            // SAFETY: see above.
            unsafe { (*irp).Cancel = u8::from(cancel) };
            // SAFETY: see above.
            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
            // SAFETY: see above; completed, freed once.
            unsafe { IoFreeIrp(irp) };
        });
        let who: Vec<_> = log.lock().unwrap().iter().map(|s| s.who).collect();
        let expected: &[&str] = if called { &["middle", "top"] } else { &["top"] };
        assert_eq!(
            who, expected,
            "flags {flags:?}, status {status:#x}, cancel {cancel}"
        );
    }
}

#[test]
fn more_processing_required_stops_completion_until_completed_again() {
    let kernel = boot();
    let log = leak_log();
    let top = Routine {
        who: "top",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    let middle = Routine {
        who: "middle",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    kernel.on_kernel_thread(|| {
        // The routines outlive the IRP; the IRP is live until freed.
        // SAFETY: see above.
        let irp = unsafe { two_levels(&top, &middle, (true, true, true)) };
        // SAFETY: see above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: see above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        assert_eq!(
            log.lock().unwrap().len(),
            1,
            "the middle routine stopped the walk"
        );
        assert_eq!(
            // SAFETY: see above.
            unsafe { (*irp).CurrentLocation },
            2,
            "the middle driver owns the IRP again"
        );
        // The middle driver finishes its work and completes the IRP again.
        // SAFETY: see above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: see above; completed, freed once.
        unsafe { IoFreeIrp(irp) };
    });
    let who: Vec<_> = log.lock().unwrap().iter().map(|s| s.who).collect();
    assert_eq!(who, ["middle", "top"]);
}

unsafe extern "system" fn cancel_pending_receive(_: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // Called by IoCancelIrp with the cancel lock held; the IRP is pending with us.
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: see above.
    let irql = unsafe { (*irp).CancelIrql };
    // SAFETY: see above: the lock is held, acquired at `irql`.
    unsafe { IoReleaseCancelSpinLock(irql) };
    // SAFETY: see above.
    unsafe { (*irp).IoStatus.Status = STATUS_CANCELLED };
    // SAFETY: see above.
    unsafe { (*irp).IoStatus.Information = 0 };
    // SAFETY: see above: ours to complete, cancel routine already taken.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
}

#[test]
fn cancel_calls_the_cancel_routine_which_completes_the_irp_cancelled() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine {
        who: "ours",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    kernel.on_kernel_thread(|| {
        // The routine outlives the IRP; we play the provider holding a receive. The IRP is
        // live until freed.
        // SAFETY: see above.
        let irp = unsafe { issued(1, Some(&ours)) };
        // SAFETY: see above.
        let previous = unsafe { IoSetCancelRoutine(irp, Some(cancel_pending_receive)) };
        assert!(previous.is_none());
        // SAFETY: see above.
        assert_eq!(unsafe { IoCancelIrp(irp) }, TRUE);
        assert_eq!(KeGetCurrentIrql(), crate::PASSIVE_LEVEL);
        // A second cancel finds no routine.
        // SAFETY: see above; completed, so not pending.
        unsafe { IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
        // SAFETY: see above.
        assert_eq!(unsafe { (*irp).Cancel }, 0, "IoReuseIrp clears Cancel");
        // SAFETY: see above.
        unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&ours), true, true, true) };
        // SAFETY: see above.
        unsafe { call_driver_enter(irp) };
        // SAFETY: see above.
        let cancelled = unsafe { IoCancelIrp(irp) };
        assert_eq!(cancelled, FALSE, "no cancel routine set");
        // SAFETY: see above.
        assert_eq!(unsafe { (*irp).Cancel }, TRUE);
        // SAFETY: see above.
        unsafe { set_status(irp, STATUS_SUCCESS) };
        // SAFETY: see above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: see above; completed, freed once.
        unsafe { IoFreeIrp(irp) };
    });
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].status, STATUS_CANCELLED);
    assert!(seen[0].cancel, "the completion routine sees Cancel set");
    assert_eq!(
        seen[0].irql,
        crate::PASSIVE_LEVEL,
        "completed at the cancel routine's IRQL after it released the cancel lock"
    );
    assert!(
        seen[1].cancel && seen[1].status == STATUS_SUCCESS,
        "cancelled IRPs may still succeed"
    );
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn completing_an_irp_twice_bugchecks() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine {
        who: "ours",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    // SAFETY: the routine outlives the IRP.
    let irp = unsafe { issued(1, Some(&ours)) };
    // SAFETY: a live IRP.
    unsafe { set_status(irp, STATUS_SUCCESS) };
    // SAFETY: a live IRP, pending with us.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    expect_bugcheck("MULTIPLE_IRP_COMPLETE_REQUESTS", || {
        // SAFETY: the violation under test; the IRP is live.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) }
    });
    take(&kernel, &["MULTIPLE_IRP_COMPLETE_REQUESTS"]);
    // SAFETY: completed: ours to free.
    unsafe { IoFreeIrp(irp) };
}

#[test]
fn freeing_a_pending_irp_bugchecks() {
    let kernel = boot();
    // SAFETY: no routine; the IRP is leaked on purpose once the check fired.
    let irp = unsafe { issued(1, None) };
    let message = expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: the violation under test.
        unsafe { IoFreeIrp(irp) }
    });
    assert!(message.contains("pending"), "{message}");
    take(&kernel, &["DRIVER_VERIFIER_IOMANAGER_VIOLATION"]);
    let report = kernel.check_leaks();
    assert!(report.to_string().contains("IRP"), "{report}");
}

#[test]
fn our_completion_routine_must_stop_completion() {
    let kernel = boot();
    let log = leak_log();
    let wrong = Routine {
        who: "wrong",
        returns: STATUS_SUCCESS,
        log,
    };
    // SAFETY: the routine outlives the IRP.
    let irp = unsafe { issued(1, Some(&wrong)) };
    // SAFETY: a live IRP.
    unsafe { set_status(irp, STATUS_SUCCESS) };
    let message = expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: the routine returning STATUS_SUCCESS is the violation under test.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) }
    });
    assert!(
        message.contains("STATUS_MORE_PROCESSING_REQUIRED"),
        "{message}"
    );
    take(&kernel, &["DRIVER_VERIFIER_IOMANAGER_VIOLATION"]);
    // SAFETY: completed to the top: ours to free.
    unsafe { IoFreeIrp(irp) };
}

#[test]
fn completing_with_a_cancel_routine_set_bugchecks() {
    let kernel = boot();
    // SAFETY: no routine; the IRP is leaked once the check fired.
    let irp = unsafe { issued(1, None) };
    // SAFETY: a live IRP.
    let _ = unsafe { IoSetCancelRoutine(irp, Some(cancel_pending_receive)) };
    // SAFETY: a live IRP.
    unsafe { set_status(irp, STATUS_SUCCESS) };
    expect_bugcheck("CANCEL_STATE_IN_COMPLETED_IRP", || {
        // SAFETY: the violation under test.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) }
    });
    take(&kernel, &["CANCEL_STATE_IN_COMPLETED_IRP"]);
    let _ = kernel.check_leaks();
}

#[test]
fn reusing_or_sending_a_pending_irp_bugchecks() {
    let kernel = boot();
    // SAFETY: no routine; the IRP is leaked on purpose once the checks fired.
    let irp = unsafe { issued(2, None) };
    expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: reusing a pending IRP is the violation under test.
        unsafe { IoReuseIrp(irp, STATUS_UNSUCCESSFUL) }
    });
    expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: sending a pending IRP again is the violation under test.
        unsafe { call_driver_enter(irp) }
    });
    take(
        &kernel,
        &[
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
        ],
    );
    // An IRP with its one location taken has none left for a further driver.
    // SAFETY: as above.
    let full = unsafe { IoAllocateIrp(1, FALSE) };
    // SAFETY: a fresh IRP with one location to take.
    unsafe { IoSetNextIrpStackLocation(full) };
    expect_bugcheck("NO_MORE_IRP_STACK_LOCATIONS", || {
        // SAFETY: the violation under test.
        unsafe { call_driver_enter(full) }
    });
    take(&kernel, &["NO_MORE_IRP_STACK_LOCATIONS"]);
    expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: PASSIVE_LEVEL.
        let fresh = unsafe { IoAllocateIrp(1, FALSE) };
        // SAFETY: a live IRP.
        unsafe { set_status(fresh, STATUS_SUCCESS) };
        // SAFETY: completing an IRP no driver holds is the violation under test.
        unsafe { IofCompleteRequest(fresh, IO_NO_INCREMENT) };
    });
    take(&kernel, &["DRIVER_VERIFIER_IOMANAGER_VIOLATION"]);
    assert_eq!(kernel.check_leaks().leaks().len(), 3, "the three IRPs");
}

#[test]
fn completion_at_raised_irql_runs_routines_at_that_irql_and_above_dispatch_bugchecks() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine {
        who: "ours",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    kernel.on_kernel_thread(|| {
        // The routine outlives the IRP; the IRP is live until freed.
        // SAFETY: see above.
        let irp = unsafe { issued(1, Some(&ours)) };
        // SAFETY: see above.
        unsafe { set_status(irp, STATUS_SUCCESS) };
        // SAFETY: raising from PASSIVE_LEVEL; lowered again below.
        let old = unsafe { crate::KeRaiseIrql(DISPATCH_LEVEL) };
        // SAFETY: see above; DISPATCH_LEVEL is allowed.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: the level the raise saved.
        unsafe { crate::KeLowerIrql(old) };
        // SAFETY: see above; completed, freed once.
        unsafe { IoFreeIrp(irp) };
    });
    assert_eq!(log.lock().unwrap()[0].irql, DISPATCH_LEVEL);
    expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: PASSIVE_LEVEL, no routine.
            let irp = unsafe { issued(1, None) };
            // SAFETY: raising from PASSIVE_LEVEL; the kernel thread's recovery resets it.
            let _ = unsafe { crate::KeRaiseIrql(crate::HIGH_LEVEL) };
            // SAFETY: completing above DISPATCH_LEVEL is the violation under test.
            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        });
    });
    take(&kernel, &["IRQL_NOT_LESS_OR_EQUAL"]);
}

unsafe extern "system" fn cancel_and_complete(_: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // Called by IoCancelIrp with the cancel lock held; the routine was still set, so the
    // "provider" gave completion up to us.
    // SAFETY: see above.
    let irql = unsafe { (*irp).CancelIrql };
    // SAFETY: see above: the lock is held, acquired at `irql`.
    unsafe { IoReleaseCancelSpinLock(irql) };
    // SAFETY: see above.
    unsafe { set_status(irp, STATUS_CANCELLED) };
    // SAFETY: see above: completion is ours.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
}

#[test]
fn cancel_racing_completion_completes_exactly_once() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine {
        who: "ours",
        returns: STATUS_MORE_PROCESSING_REQUIRED,
        log,
    };
    let ours_ctx = ctx(&ours) as usize;
    let rounds = 300;
    kernel.on_kernel_thread(|| {
        // SAFETY: one IRP reused each round; the routine outlives it.
        let irp = unsafe { IoAllocateIrp(1, FALSE) } as usize;
        for _ in 0..rounds {
            // The IRP is ours between rounds; the routine outlives it.
            let irp = irp as *mut IRP;
            // SAFETY: see above.
            unsafe { IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
            // SAFETY: see above.
            unsafe {
                IoSetCompletionRoutine(irp, Some(completion), ours_ctx as PVOID, true, true, true);
            };
            // SAFETY: see above.
            unsafe { call_driver_enter(irp) };
            // SAFETY: see above.
            let _ = unsafe { IoSetCancelRoutine(irp, Some(cancel_and_complete)) };
            let irp = irp as usize;
            std::thread::scope(|s| {
                // The provider finishing the operation on another thread, at DISPATCH_LEVEL.
                s.spawn(|| {
                    crate::on_kernel_thread(|| {
                        let old = crate::irql::raise(DISPATCH_LEVEL);
                        let irp = irp as *mut IRP;
                        // SAFETY: the IRP is live for the round.
                        if unsafe { IoSetCancelRoutine(irp, None) }.is_some() {
                            // Completion is ours: we took the cancel routine back.
                            // SAFETY: see above.
                            unsafe { set_status(irp, STATUS_SUCCESS) };
                            // SAFETY: see above.
                            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
                        }
                        crate::irql::lower(old);
                    });
                });
                // SAFETY: cancelling our own pending IRP is allowed.
                unsafe { IoCancelIrp(irp as *mut IRP) };
            });
        }
        // SAFETY: completed in the last round: ours to free.
        unsafe { IoFreeIrp(irp as *mut IRP) };
    });
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), rounds, "each round completed exactly once");
    assert!(
        seen.iter()
            .filter(|s| s.status == STATUS_CANCELLED)
            .all(|s| s.cancel),
        "a cancelled completion sees Cancel set"
    );
    assert!(kernel.check_leaks().is_clean());
}
