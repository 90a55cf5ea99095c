//! End to end on the host kernel's public API: a small driver loads, runs work on a system
//! thread, a timer and its DPC, signals an event, and unloads clean; a careless one leaves an
//! IRP, an MDL, a pool block and an armed timer behind, and the unload report names them.

#![cfg(not(target_os = "windows"))]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use wsk_host::{Config, Kernel, RegValue, Registry};
use wsk_sys::{
    DISPATCH_LEVEL, DRIVER_OBJECT, Executive, FALSE, HANDLE, KDPC, KEVENT, KTIMER, KeCancelTimer,
    KeGetCurrentIrql, KeInitializeDpc, KeInitializeEvent, KeInitializeTimerEx, KeSetEvent,
    KeSetTimerEx, KeWaitForSingleObject, KernelMode, NTSTATUS, NotificationEvent,
    NotificationTimer, ObReferenceObjectByHandle, ObfDereferenceObject, PASSIVE_LEVEL, PVOID,
    PsCreateSystemThread, STATUS_SUCCESS, UNICODE_STRING, ZwClose, kprint, pool_tag,
};

const TAG: u32 = pool_tag(*b"E2e ");

/// The driver's state, in "nonpaged pool" (a static here).
struct State {
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    fired: UnsafeCell<KEVENT>,
    thread: UnsafeCell<PVOID>,
    dpc_irql: AtomicUsize,
}

// SAFETY: the kernel objects are only touched through the kernel; the rest is atomic or written
// once in DriverEntry before anything else runs.
unsafe impl Sync for State {}

// SAFETY: all-zero is a valid (uninitialised) value for every field; DriverEntry initialises.
static STATE: State = unsafe { std::mem::zeroed() };

unsafe extern "system" fn on_timer(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    STATE
        .dpc_irql
        .store(usize::from(KeGetCurrentIrql()), Ordering::SeqCst);
    // SAFETY: initialised in DriverEntry; KeSetEvent at DISPATCH_LEVEL is allowed.
    unsafe { KeSetEvent(STATE.fired.get(), 0, FALSE) };
}

unsafe extern "system" fn worker(_: PVOID) {
    // SAFETY: PASSIVE_LEVEL; the timer and DPC were initialised before the thread started.
    unsafe { KeSetTimerEx(STATE.timer.get(), -10_000, 0, STATE.dpc.get()) };
    let mut bound: i64 = -300_000_000;
    // SAFETY: PASSIVE_LEVEL; the event was initialised before the thread started.
    let status = unsafe {
        KeWaitForSingleObject(
            STATE.fired.get().cast(),
            Executive,
            KernelMode,
            FALSE,
            &raw mut bound,
        )
    };
    assert_eq!(
        status, STATUS_SUCCESS,
        "the timer's DPC signalled the event"
    );
    kprint!("e2e: worker done at IRQL {}\n", KeGetCurrentIrql());
}

unsafe extern "system" fn tidy_unload(_: *mut DRIVER_OBJECT) {
    // SAFETY: written by DriverEntry, before the driver could be unloaded.
    let thread = unsafe { *STATE.thread.get() };
    let mut bound: i64 = -300_000_000;
    // SAFETY: PASSIVE_LEVEL; the referenced thread object stays valid until dereferenced.
    let status =
        unsafe { KeWaitForSingleObject(thread, Executive, KernelMode, FALSE, &raw mut bound) };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: the reference DriverEntry took, dropped once.
    unsafe { ObfDereferenceObject(thread) };
    // SAFETY: the timer was initialised in DriverEntry.
    unsafe { KeCancelTimer(STATE.timer.get()) };
    // SAFETY: PASSIVE_LEVEL.
    unsafe { wsk_sys::KeFlushQueuedDpcs() };
}

unsafe extern "system" fn tidy_entry(
    driver: *mut DRIVER_OBJECT,
    _: *mut UNICODE_STRING,
) -> NTSTATUS {
    // DriverEntry at PASSIVE_LEVEL; the statics are ours.
    // SAFETY: see above.
    unsafe { KeInitializeTimerEx(STATE.timer.get(), NotificationTimer) };
    // SAFETY: see above.
    unsafe { KeInitializeDpc(STATE.dpc.get(), Some(on_timer), std::ptr::null_mut()) };
    // SAFETY: see above.
    unsafe { KeInitializeEvent(STATE.fired.get(), NotificationEvent, FALSE) };
    let mut handle: HANDLE = std::ptr::null_mut();
    // SAFETY: see above; the out-pointer is a local.
    let status = unsafe {
        PsCreateSystemThread(
            &raw mut handle,
            wsk_sys::THREAD_ALL_ACCESS,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            Some(worker),
            std::ptr::null_mut(),
        )
    };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: a handle just created; the object pointer goes to our static.
    unsafe {
        ObReferenceObjectByHandle(
            handle,
            wsk_sys::SYNCHRONIZE,
            std::ptr::null_mut(),
            KernelMode,
            STATE.thread.get(),
            std::ptr::null_mut(),
        )
    };
    // SAFETY: our handle, closed once.
    unsafe { ZwClose(handle) };
    // SAFETY: the driver object the kernel passed to DriverEntry.
    unsafe { (*driver).DriverUnload = Some(tidy_unload) };
    STATUS_SUCCESS
}

#[test]
fn a_driver_using_threads_timers_dpcs_and_events_unloads_clean() {
    let kernel = Kernel::boot(Config::default());
    let registry = Registry::new().with("Parameters", "Port", RegValue::Dword(7));
    let driver = kernel
        .load_driver(tidy_entry, "e2e", registry)
        .expect("DriverEntry succeeds");
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        STATE.dpc_irql.load(Ordering::SeqCst),
        usize::from(DISPATCH_LEVEL)
    );
    assert!(
        kernel
            .debug_log()
            .contains(&format!("e2e: worker done at IRQL {PASSIVE_LEVEL}"))
    );
    assert!(kernel.take_bugchecks().is_empty());
}

/// What the careless driver leaves behind.
struct Careless {
    timer: UnsafeCell<KTIMER>,
}

// SAFETY: only touched through the kernel.
unsafe impl Sync for Careless {}

// SAFETY: all-zero is a valid uninitialised KTIMER.
static CARELESS: Careless = unsafe { std::mem::zeroed() };

unsafe extern "system" fn careless_unload(_: *mut DRIVER_OBJECT) {}

unsafe extern "system" fn careless_entry(
    driver: *mut DRIVER_OBJECT,
    _: *mut UNICODE_STRING,
) -> NTSTATUS {
    // DriverEntry at PASSIVE_LEVEL: every call below is allowed there.
    // SAFETY: see above.
    unsafe { wsk_sys::init_pool_routines() };
    // SAFETY: see above.
    let buffer = unsafe { wsk_sys::allocate_nonpaged(256, TAG) };
    // SAFETY: see above.
    let irp = unsafe { wsk_sys::IoAllocateIrp(1, FALSE) };
    // SAFETY: see above; the buffer holds 256 bytes and the IRP is live.
    let _mdl = unsafe { wsk_sys::IoAllocateMdl(buffer, 256, FALSE, FALSE, irp) };
    // SAFETY: see above; the timer is our static.
    unsafe { KeInitializeTimerEx(CARELESS.timer.get(), NotificationTimer) };
    // SAFETY: see above; initialised just above.
    unsafe {
        KeSetTimerEx(
            CARELESS.timer.get(),
            -36_000_000_000,
            0,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: the driver object the kernel passed to DriverEntry.
    unsafe { (*driver).DriverUnload = Some(careless_unload) };
    STATUS_SUCCESS
}

#[test]
fn the_unload_report_names_what_a_careless_driver_left_behind() {
    let kernel = Kernel::boot(Config::default().with_cpus(2));
    let driver = kernel
        .load_driver(careless_entry, "careless", Registry::new())
        .unwrap();
    let report = kernel.unload(driver);
    let text = report.to_string();
    assert!(!report.is_clean());
    assert!(text.contains("IRP"), "{text}");
    assert!(text.contains("MDL"), "{text}");
    assert!(text.contains("pool tag 'E2e '"), "{text}");
    assert!(text.contains("timer") && text.contains("armed"), "{text}");
    assert_eq!(report.leaks().len(), 4, "{text}");
    // SAFETY: the armed timer lives in a static; disarm it before the kernel goes.
    unsafe { KeCancelTimer(CARELESS.timer.get()) };
}
