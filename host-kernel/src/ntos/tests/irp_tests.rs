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

impl Routine {
    fn new(who: &'static str, returns: NTSTATUS, log: &'static Mutex<Vec<Seen>>) -> Self {
        Self { who, returns, log }
    }
}

unsafe extern "system" fn completion(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the context is a Routine the test keeps alive.
    let routine = unsafe { &*context.cast::<Routine>() };
    // SAFETY: the IRP is live during completion; only read here.
    let irp = unsafe { &*irp };
    if let Ok(mut log) = routine.log.lock() {
        log.push(Seen {
            who: routine.who,
            current_location: irp.CurrentLocation,
            status: irp.IoStatus.Status,
            cancel: irp.Cancel != 0,
            irql: KeGetCurrentIrql(),
            device_null: device.is_null(),
        });
    }
    routine.returns
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
    // SAFETY: PASSIVE_LEVEL; the IRP is freed before the kernel goes.
    let irp = unsafe { IoAllocateIrp(3, FALSE) };
    assert!(!irp.is_null());
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).Type, IO_TYPE_IRP) };
    // SAFETY: as above.
    unsafe { assert_eq!(usize::from((*irp).Size), IoSizeOfIrp(3)) };
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).StackCount, 3) };
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).CurrentLocation, 4) };
    // SAFETY: as above: the stack locations follow the IRP.
    let first = unsafe { irp.add(1) }.cast::<IO_STACK_LOCATION>();
    // SAFETY: as above.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    assert_eq!(current, first.wrapping_add(3), "one past the last location");
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).CurrentLocation, 3) };
    // SAFETY: as above.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    assert_eq!(current, first.wrapping_add(2));
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
    // The provider's location has no routine, nor the one above; stop at the top.
    let log = leak_log();
    let top = Routine::new("top", STATUS_MORE_PROCESSING_REQUIRED, log);
    // Put our routine in location 3, the allocator's "next" (as IoSetCompletionRoutine
    // would have before the call).
    // SAFETY: as above: location 3 of 3.
    let third = unsafe { first.add(2) };
    // SAFETY: as above; nobody else touches it until the completion below.
    let third = unsafe { &mut *third };
    third.CompletionRoutine = Some(completion);
    third.Context = ctx(&top);
    third.Control = crate::SL_INVOKE_ON_SUCCESS;
    // SAFETY: as above.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).CurrentLocation, 4) };
    assert_eq!(log.lock().unwrap().len(), 1);
    // SAFETY: as above.
    unsafe { IoFreeIrp(irp) };
    assert!(kernel.check_leaks().is_clean());
}

/// Builds a two-level IRP: our routine "top" at the allocator's level (all flags), a middle
/// driver's routine with `flags`, then the provider takes it.
unsafe fn two_levels(top: &Routine, middle: &Routine, flags: (bool, bool, bool)) -> *mut IRP {
    // SAFETY: the caller's contract: PASSIVE/DISPATCH, routines outlive the IRP's completion.
    let irp = unsafe { IoAllocateIrp(2, FALSE) };
    // SAFETY: as above.
    unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(top), true, true, true) };
    // The middle driver's dispatch runs.
    // SAFETY: as above.
    unsafe { IoSetNextIrpStackLocation(irp) };
    // SAFETY: as above.
    unsafe {
        IoSetCompletionRoutine(
            irp,
            Some(completion),
            ctx(middle),
            flags.0,
            flags.1,
            flags.2,
        );
    }
    // The provider takes it.
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
    irp
}

#[test]
fn completion_walks_up_the_stack_calling_each_routine() {
    let kernel = boot();
    let log = leak_log();
    let top = Routine::new("top", STATUS_MORE_PROCESSING_REQUIRED, log);
    let middle = Routine::new("middle", STATUS_SUCCESS, log);
    kernel.on_kernel_thread(|| {
        // SAFETY: the routines outlive the IRP; PASSIVE_LEVEL.
        let irp = unsafe { two_levels(&top, &middle, (true, true, true)) };
        // SAFETY: as above.
        unsafe { assert_eq!((*irp).CurrentLocation, 1) };
        // SAFETY: as above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: as above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: as above.
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
        let top = Routine::new("top", STATUS_MORE_PROCESSING_REQUIRED, log);
        let middle = Routine::new("middle", STATUS_SUCCESS, log);
        kernel.on_kernel_thread(|| {
            // SAFETY: the routines outlive the IRP.
            let irp = unsafe { two_levels(&top, &middle, flags) };
            // SAFETY: as above.
            unsafe { (*irp).IoStatus.Status = status };
            // SAFETY: as above.
            unsafe { (*irp).Cancel = u8::from(cancel) };
            // SAFETY: as above.
            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
            // SAFETY: as above.
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
    let top = Routine::new("top", STATUS_MORE_PROCESSING_REQUIRED, log);
    let middle = Routine::new("middle", STATUS_MORE_PROCESSING_REQUIRED, log);
    kernel.on_kernel_thread(|| {
        // SAFETY: the routines outlive the IRP.
        let irp = unsafe { two_levels(&top, &middle, (true, true, true)) };
        // SAFETY: as above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: as above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        assert_eq!(
            log.lock().unwrap().len(),
            1,
            "the middle routine stopped the walk"
        );
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                (*irp).CurrentLocation,
                2,
                "the middle driver owns the IRP again"
            );
        };
        // The middle driver finishes its work and completes the IRP again.
        // SAFETY: as above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: as above.
        unsafe { IoFreeIrp(irp) };
    });
    let who: Vec<_> = log.lock().unwrap().iter().map(|s| s.who).collect();
    assert_eq!(who, ["middle", "top"]);
}

unsafe extern "system" fn cancel_pending_receive(_: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: called by IoCancelIrp with the cancel lock held; the IRP is pending with us.
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: as above.
    let cancel_irql = unsafe { (*irp).CancelIrql };
    // SAFETY: as above.
    unsafe { IoReleaseCancelSpinLock(cancel_irql) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_CANCELLED };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Information = 0 };
    // SAFETY: as above.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
}

#[test]
fn cancel_calls_the_cancel_routine_which_completes_the_irp_cancelled() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine::new("ours", STATUS_MORE_PROCESSING_REQUIRED, log);
    kernel.on_kernel_thread(|| {
        // SAFETY: the routine outlives the IRP; we play the provider holding a receive.
        let irp = unsafe { IoAllocateIrp(1, FALSE) };
        // SAFETY: as above.
        unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&ours), true, true, true) };
        // SAFETY: as above.
        unsafe { call_driver_enter(irp) };
        // SAFETY: as above.
        unsafe { assert!(IoSetCancelRoutine(irp, Some(cancel_pending_receive)).is_none()) };
        // SAFETY: as above.
        unsafe { assert_eq!(IoCancelIrp(irp), TRUE) };
        assert_eq!(KeGetCurrentIrql(), crate::PASSIVE_LEVEL);
        // A second cancel finds no routine.
        // SAFETY: as above.
        unsafe { IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
        // SAFETY: as above.
        unsafe { assert_eq!((*irp).Cancel, 0, "IoReuseIrp clears Cancel") };
        // SAFETY: as above.
        unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&ours), true, true, true) };
        // SAFETY: as above.
        unsafe { call_driver_enter(irp) };
        // SAFETY: as above.
        unsafe { assert_eq!(IoCancelIrp(irp), FALSE, "no cancel routine set") };
        // SAFETY: as above.
        unsafe { assert_eq!((*irp).Cancel, TRUE) };
        // SAFETY: as above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: as above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: as above.
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
    let ours = Routine::new("ours", STATUS_MORE_PROCESSING_REQUIRED, log);
    // SAFETY: the routine outlives the IRP.
    let irp = unsafe { IoAllocateIrp(1, FALSE) };
    // SAFETY: as above.
    unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&ours), true, true, true) };
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
    // SAFETY: as above.
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
    // SAFETY: the IRP is leaked on purpose once the check fired.
    let irp = unsafe { IoAllocateIrp(1, FALSE) };
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
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
    let wrong = Routine::new("wrong", STATUS_SUCCESS, log);
    // SAFETY: the routine outlives the IRP.
    let irp = unsafe { IoAllocateIrp(1, FALSE) };
    // SAFETY: as above.
    unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&wrong), true, true, true) };
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
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
    // SAFETY: the IRP is leaked once the check fired.
    let irp = unsafe { IoAllocateIrp(1, FALSE) };
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
    // SAFETY: as above.
    let _ = unsafe { IoSetCancelRoutine(irp, Some(cancel_pending_receive)) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
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
    // SAFETY: the IRP is leaked on purpose once the checks fired.
    let irp = unsafe { IoAllocateIrp(2, FALSE) };
    // SAFETY: as above.
    unsafe { call_driver_enter(irp) };
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
    // SAFETY: as above.
    unsafe { IoSetNextIrpStackLocation(full) };
    expect_bugcheck("NO_MORE_IRP_STACK_LOCATIONS", || {
        // SAFETY: the violation under test.
        unsafe { call_driver_enter(full) }
    });
    take(&kernel, &["NO_MORE_IRP_STACK_LOCATIONS"]);
    expect_bugcheck("DRIVER_VERIFIER_IOMANAGER_VIOLATION", || {
        // SAFETY: completing an IRP no driver holds is the violation under test.
        let fresh = unsafe { IoAllocateIrp(1, FALSE) };
        // SAFETY: as above.
        unsafe { (*fresh).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: as above.
        unsafe { IofCompleteRequest(fresh, IO_NO_INCREMENT) };
    });
    take(&kernel, &["DRIVER_VERIFIER_IOMANAGER_VIOLATION"]);
    assert_eq!(kernel.check_leaks().leaks().len(), 3, "the three IRPs");
}

#[test]
fn completion_at_raised_irql_runs_routines_at_that_irql_and_above_dispatch_bugchecks() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine::new("ours", STATUS_MORE_PROCESSING_REQUIRED, log);
    kernel.on_kernel_thread(|| {
        // SAFETY: the routine outlives the IRP.
        let irp = unsafe { IoAllocateIrp(1, FALSE) };
        // SAFETY: as above.
        unsafe { IoSetCompletionRoutine(irp, Some(completion), ctx(&ours), true, true, true) };
        // SAFETY: as above.
        unsafe { call_driver_enter(irp) };
        // SAFETY: as above.
        unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
        // SAFETY: as above.
        let old = unsafe { crate::KeRaiseIrql(DISPATCH_LEVEL) };
        // SAFETY: as above.
        unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        // SAFETY: as above.
        unsafe { crate::KeLowerIrql(old) };
        // SAFETY: as above.
        unsafe { IoFreeIrp(irp) };
    });
    assert_eq!(log.lock().unwrap()[0].irql, DISPATCH_LEVEL);
    expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: completing above DISPATCH_LEVEL is the violation under test.
            let irp = unsafe { IoAllocateIrp(1, FALSE) };
            // SAFETY: as above.
            unsafe { call_driver_enter(irp) };
            // SAFETY: as above.
            let _ = unsafe { crate::KeRaiseIrql(crate::HIGH_LEVEL) };
            // SAFETY: as above.
            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
        });
    });
    take(&kernel, &["IRQL_NOT_LESS_OR_EQUAL"]);
}

unsafe extern "system" fn cancel_and_complete(_: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: called by IoCancelIrp with the cancel lock held; the routine was still set, so
    // the "provider" gave completion up to us.
    let cancel_irql = unsafe { (*irp).CancelIrql };
    // SAFETY: as above.
    unsafe { IoReleaseCancelSpinLock(cancel_irql) };
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.Status = STATUS_CANCELLED };
    // SAFETY: as above.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
}

#[test]
fn cancel_racing_completion_completes_exactly_once() {
    let kernel = boot();
    let log = leak_log();
    let ours = Routine::new("ours", STATUS_MORE_PROCESSING_REQUIRED, log);
    let ours_ctx = ctx(&ours) as usize;
    let rounds = 300;
    kernel.on_kernel_thread(|| {
        // SAFETY: one IRP reused each round; the routine outlives it.
        let irp = unsafe { IoAllocateIrp(1, FALSE) } as usize;
        for _ in 0..rounds {
            let irp_ptr = irp as *mut IRP;
            // SAFETY: the IRP is ours between rounds.
            unsafe { IoReuseIrp(irp_ptr, STATUS_UNSUCCESSFUL) };
            // SAFETY: as above.
            unsafe {
                IoSetCompletionRoutine(
                    irp_ptr,
                    Some(completion),
                    ours_ctx as PVOID,
                    true,
                    true,
                    true,
                );
            }
            // SAFETY: as above.
            unsafe { call_driver_enter(irp_ptr) };
            // SAFETY: as above.
            let _ = unsafe { IoSetCancelRoutine(irp_ptr, Some(cancel_and_complete)) };
            std::thread::scope(|s| {
                // The provider finishing the operation on another thread, at DISPATCH_LEVEL.
                s.spawn(|| {
                    crate::on_kernel_thread(|| {
                        let old = crate::irql::raise(DISPATCH_LEVEL);
                        let irp = irp as *mut IRP;
                        // SAFETY: the IRP is live while pending.
                        let took_back = unsafe { IoSetCancelRoutine(irp, None) }.is_some();
                        // Completion is ours only if we took the cancel routine back.
                        if took_back {
                            // SAFETY: as above, and ours to complete.
                            unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
                            // SAFETY: as above.
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

/// `IoSetCompletionRoutineEx` contexts come from a lookaside list: a completed IRP's context
/// is reused (each registration still counted as a pool allocation), the driver's routine
/// gets its own device object and context every time, and a context whose routine never ran
/// (the IRP freed uncompleted) is reported at the leak check under its pool tag `IoCx`.
#[test]
fn completion_routine_ex_contexts_are_recycled_and_leaks_reported() {
    let kernel = boot();
    let log = leak_log();
    let routines = [
        Routine::new("first", STATUS_MORE_PROCESSING_REQUIRED, log),
        Routine::new("second", STATUS_MORE_PROCESSING_REQUIRED, log),
    ];
    let driver = kernel.create_driver_object("LookasideTest");
    let counts_before = kernel.allocation_counts();
    let device = kernel.on_kernel_thread(|| {
        let mut device: *mut DEVICE_OBJECT = core::ptr::null_mut();
        // SAFETY: a live driver object; PASSIVE_LEVEL; a writable out-pointer.
        let status = unsafe {
            crate::IoCreateDevice(
                driver.object(),
                0,
                core::ptr::null_mut(),
                0,
                0,
                FALSE,
                &raw mut device,
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        for routine in &routines {
            // SAFETY: PASSIVE_LEVEL; the routine outlives the IRP.
            let irp = unsafe { IoAllocateIrp(1, FALSE) };
            // SAFETY: the IRP is ours, with a location for the next driver; a live device.
            let status = unsafe {
                crate::IoSetCompletionRoutineEx(
                    device,
                    irp,
                    Some(completion),
                    ctx(routine),
                    TRUE,
                    TRUE,
                    TRUE,
                )
            };
            assert_eq!(status, STATUS_SUCCESS);
            // SAFETY: as above.
            unsafe { call_driver_enter(irp) };
            // SAFETY: as above.
            unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
            // SAFETY: as above.
            unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
            // SAFETY: completed, owned by us.
            unsafe { IoFreeIrp(irp) };
        }
        device as usize
    });
    let device = device as *mut DEVICE_OBJECT;
    let seen: Vec<_> = log.lock().unwrap().iter().map(|s| s.who).collect();
    assert_eq!(
        seen,
        ["first", "second"],
        "each routine with its own context"
    );
    assert!(
        log.lock().unwrap().iter().all(|s| !s.device_null),
        "the routine gets the device object"
    );
    let counts_after = kernel.allocation_counts();
    assert_eq!(
        counts_after.pool - counts_before.pool,
        2,
        "one context allocation per registration"
    );
    // The device object is still there (this test never deletes it); no context is.
    let report = kernel.check_leaks();
    assert!(
        report.leaks().iter().all(|line| !line.contains("IoCx")),
        "every context was given back: {report}"
    );

    // A registration whose IRP is freed without completing: the context is never given back.
    let device = device as usize;
    kernel.on_kernel_thread(|| {
        let device = device as *mut DEVICE_OBJECT;
        // SAFETY: PASSIVE_LEVEL.
        let irp = unsafe { IoAllocateIrp(1, FALSE) };
        // SAFETY: as above: the IRP is ours; a live device object.
        let status = unsafe {
            crate::IoSetCompletionRoutineEx(
                device,
                irp,
                Some(completion),
                ctx(&routines[0]),
                TRUE,
                TRUE,
                TRUE,
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: never sent, so ours to free.
        unsafe { IoFreeIrp(irp) };
    });
    let report = kernel.check_leaks();
    assert!(
        report
            .leaks()
            .iter()
            .any(|line| line.starts_with("pool tag 'IoCx': 1 allocation(s)")),
        "the lost context is reported: {report}"
    );
}
