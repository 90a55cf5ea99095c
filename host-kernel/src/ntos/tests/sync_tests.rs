use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};

use super::*;
use crate::ntos::irql;
use crate::{
    DISPATCH_LEVEL, Executive, FALSE, HANDLE, KDPC, KEVENT, KSPIN_LOCK, KTIMER,
    KeAcquireSpinLockAtDpcLevel, KeAcquireSpinLockRaiseToDpc, KeCancelTimer, KeClearEvent,
    KeDelayExecutionThread, KeInitializeDpc, KeInitializeEvent, KeInitializeTimerEx,
    KeQueryInterruptTime, KeReleaseSpinLock, KeReleaseSpinLockFromDpcLevel, KeResetEvent,
    KeSetEvent, KeSetTimerEx, KeWaitForSingleObject, KernelMode, NotificationEvent,
    NotificationTimer, ObReferenceObjectByHandle, ObfDereferenceObject, PASSIVE_LEVEL, PVOID,
    PsCreateSystemThread, PsTerminateSystemThread, STATUS_SUCCESS, STATUS_TIMEOUT,
    SynchronizationEvent, SynchronizationTimer, TIMER_TYPE, TRUE, ZwClose,
};

/// A zeroed object in a box, for the kernel to initialise.
#[allow(
    clippy::unnecessary_box_returns,
    reason = "the kernel keeps the object's address: it must not move"
)]
fn zeroed<T>() -> Box<core::cell::UnsafeCell<T>> {
    // SAFETY: KEVENT, KTIMER, KDPC and KSPIN_LOCK are plain data for which zero is valid.
    unsafe { Box::<core::cell::UnsafeCell<T>>::new_zeroed().assume_init() }
}

fn wait(object: PVOID, timeout: Option<i64>) -> i32 {
    let mut t = timeout.unwrap_or(0);
    let t_ptr = if timeout.is_some() {
        &raw mut t
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: a live dispatcher object; the timeout outlives the call.
    unsafe { KeWaitForSingleObject(object, Executive, KernelMode, FALSE, t_ptr) }
}

const MS: i64 = -10_000;

#[test]
fn notification_events_stay_signalled_synchronization_events_reset() {
    let kernel = boot();
    let event_box = zeroed::<KEVENT>();
    let sync_box = zeroed::<KEVENT>();
    let (event_addr, sync_addr) = (event_box.get() as usize, sync_box.get() as usize);
    kernel.on_kernel_thread(|| {
        let event = || event_addr as *mut KEVENT;
        let sync = || sync_addr as *mut KEVENT;
        // SAFETY: live events, PASSIVE_LEVEL.
        unsafe { KeInitializeEvent(event(), NotificationEvent, FALSE) };
        // SAFETY: as above.
        unsafe { KeInitializeEvent(sync(), SynchronizationEvent, FALSE) };
        assert_eq!(
            wait(event().cast(), Some(0)),
            STATUS_TIMEOUT,
            "zero timeout polls"
        );
        // SAFETY: as above.
        unsafe { assert_eq!(KeSetEvent(event(), 0, FALSE), 0) };
        // SAFETY: as above.
        unsafe { assert_eq!(KeSetEvent(event(), 0, FALSE), 1, "previous state") };
        assert_eq!(wait(event().cast(), Some(0)), STATUS_SUCCESS);
        assert_eq!(
            wait(event().cast(), None),
            STATUS_SUCCESS,
            "still signalled"
        );
        // SAFETY: as above.
        unsafe { assert_eq!(KeResetEvent(event()), 1) };
        assert_eq!(wait(event().cast(), Some(MS)), STATUS_TIMEOUT);
        // SAFETY: as above.
        unsafe { KeSetEvent(sync(), 0, FALSE) };
        assert_eq!(wait(sync().cast(), Some(0)), STATUS_SUCCESS);
        assert_eq!(
            wait(sync().cast(), Some(0)),
            STATUS_TIMEOUT,
            "a wait consumed it"
        );
        // SAFETY: as above.
        unsafe { KeSetEvent(sync(), 0, FALSE) };
        // SAFETY: as above.
        unsafe { KeClearEvent(sync()) };
        // SAFETY: as above.
        unsafe { assert_eq!((*sync()).Header.SignalState, 0) };
    });
}

#[test]
fn a_wait_times_out_then_a_set_from_another_thread_wakes_it() {
    let kernel = boot();
    let event = zeroed::<KEVENT>();
    // SAFETY: a live event.
    unsafe { KeInitializeEvent(event.get(), SynchronizationEvent, FALSE) };
    let event_addr = event.get() as usize;
    let start = KeQueryInterruptTime_();
    assert_eq!(
        kernel.on_kernel_thread(|| wait(event_addr as PVOID, Some(5 * MS))),
        STATUS_TIMEOUT
    );
    assert!(
        KeQueryInterruptTime_() - start >= 50_000,
        "a relative timeout waits that long"
    );
    // Absolute timeout already past: returns at once.
    assert_eq!(
        kernel.on_kernel_thread(|| wait(event_addr as PVOID, Some(1))),
        STATUS_TIMEOUT
    );
    std::thread::scope(|s| {
        let waiter =
            s.spawn(|| kernel.on_kernel_thread(|| wait(event_addr as PVOID, Some(-300_000_000))));
        // SAFETY: a live event; any thread may set it.
        unsafe { KeSetEvent(event_addr as *mut KEVENT, 0, FALSE) };
        assert_eq!(waiter.join().unwrap(), STATUS_SUCCESS);
    });
}

#[allow(non_snake_case)]
fn KeQueryInterruptTime_() -> u64 {
    // SAFETY: any IRQL.
    unsafe { KeQueryInterruptTime() }
}

#[test]
fn waiting_with_a_timeout_at_dispatch_level_bugchecks() {
    let kernel = boot();
    let event = zeroed::<KEVENT>();
    // SAFETY: a live event.
    unsafe { KeInitializeEvent(event.get(), NotificationEvent, FALSE) };
    let event_addr = event.get() as usize;
    let polled = kernel.on_kernel_thread(|| {
        let old = irql::raise(DISPATCH_LEVEL);
        let status = wait(event_addr as PVOID, Some(0));
        irql::lower(old);
        status
    });
    assert_eq!(
        polled, STATUS_TIMEOUT,
        "a zero timeout is allowed at DISPATCH_LEVEL"
    );
    expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            irql::raise(DISPATCH_LEVEL);
            wait(event_addr as PVOID, Some(MS))
        })
    });
    take(&kernel, &["IRQL_NOT_LESS_OR_EQUAL"]);
}

unsafe extern "system" fn count_and_report(_: *mut KDPC, context: PVOID, arg1: PVOID, _: PVOID) {
    // SAFETY: the context is a TimerProbe the test keeps alive.
    let probe = unsafe { &*context.cast::<TimerProbe>() };
    let n = probe.fired.fetch_add(1, Ordering::SeqCst) + 1;
    let _ = probe
        .tx
        .lock()
        .unwrap()
        .send((n, irql::current(), arg1 as usize));
}

struct TimerProbe {
    fired: AtomicUsize,
    tx: Mutex<Sender<(usize, u8, usize)>>,
}

impl TimerProbe {
    /// A probe and the receiving end of what its DPC reports.
    fn new() -> (Self, Receiver<(usize, u8, usize)>) {
        let (tx, rx) = mpsc::channel();
        let probe = Self {
            fired: AtomicUsize::new(0),
            tx: Mutex::new(tx),
        };
        (probe, rx)
    }
}

/// Initialises `timer` as a timer of `kind`, and `dpc` as a DPC reporting to `probe`.
///
/// # Safety
/// All three are live and stay in place while the timer and the DPC are in use.
unsafe fn init_timer_and_probe_dpc(
    timer: *mut KTIMER,
    kind: TIMER_TYPE,
    dpc: *mut KDPC,
    probe: &TimerProbe,
) {
    // SAFETY: forwarded contract.
    unsafe { KeInitializeTimerEx(timer, kind) };
    // SAFETY: forwarded contract; the probe is the DPC's context.
    unsafe {
        KeInitializeDpc(
            dpc,
            Some(count_and_report),
            core::ptr::from_ref(probe).cast_mut().cast(),
        );
    }
}

#[test]
fn timers_queue_their_dpc_at_expiry_and_signal_waiters() {
    let kernel = boot();
    let (probe, rx) = TimerProbe::new();
    let timer = zeroed::<KTIMER>();
    let dpc = zeroed::<KDPC>();
    // SAFETY: live objects that outlive the timer's use, boxed or on this frame.
    unsafe { init_timer_and_probe_dpc(timer.get(), NotificationTimer, dpc.get(), &probe) };
    // SAFETY: as above.
    let set_at = unsafe { KeQueryInterruptTime() };
    // SAFETY: as above.
    unsafe { assert_eq!(KeSetTimerEx(timer.get(), 10 * MS, 0, dpc.get()), FALSE) };
    let (n, irql_seen, time) = recv(&rx);
    assert_eq!((n, irql_seen), (1, DISPATCH_LEVEL));
    assert!(time as u64 >= set_at + 100_000, "fired no earlier than due");
    // SAFETY: as above.
    unsafe { assert_eq!((*timer.get()).Header.SignalState, 1, "signalled at expiry") };
    assert_eq!(wait(timer.get().cast(), Some(0)), STATUS_SUCCESS);
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            KeCancelTimer(timer.get()),
            FALSE,
            "a fired one-shot timer is not armed"
        );
    };
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn periodic_timers_fire_until_cancelled_and_reset_returns_true() {
    let kernel = boot();
    let (probe, rx) = TimerProbe::new();
    let timer = zeroed::<KTIMER>();
    let dpc = zeroed::<KDPC>();
    // SAFETY: live objects that outlive the timer's use, boxed or on this frame.
    unsafe { init_timer_and_probe_dpc(timer.get(), SynchronizationTimer, dpc.get(), &probe) };
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            KeSetTimerEx(timer.get(), -36_000_000_000, 0, dpc.get()),
            FALSE
        );
    };
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            KeSetTimerEx(timer.get(), MS, 2, dpc.get()),
            TRUE,
            "it was armed"
        );
    };
    for expected in 1..=3 {
        assert_eq!(recv(&rx).0, expected);
    }
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            KeCancelTimer(timer.get()),
            TRUE,
            "a periodic timer stays armed"
        );
    };
    // SAFETY: as above.
    unsafe { assert_eq!(KeCancelTimer(timer.get()), FALSE) };
    // A DPC may have been queued by the last expiry before the cancel: let it drain.
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { crate::KeFlushQueuedDpcs() }
    });
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn armed_timers_are_reported_as_leaks_and_cancel_clears_them() {
    let kernel = boot();
    let timer = zeroed::<KTIMER>();
    // SAFETY: a live timer, cancelled before it goes.
    unsafe { KeInitializeTimerEx(timer.get(), NotificationTimer) };
    // SAFETY: as above.
    unsafe { KeSetTimerEx(timer.get(), -36_000_000_000, 0, core::ptr::null_mut()) };
    let report = kernel.check_leaks();
    assert!(
        report
            .leaks()
            .iter()
            .any(|l| l.contains("timer") && l.contains("armed")),
        "{report}"
    );
    // SAFETY: a live timer.
    unsafe { assert_eq!(KeCancelTimer(timer.get()), TRUE) };
    assert!(kernel.check_leaks().is_clean());
}

struct Shared<'a>(
    &'a core::cell::UnsafeCell<KSPIN_LOCK>,
    &'a core::cell::UnsafeCell<usize>,
);
// SAFETY: the counter is only touched under the spin lock.
unsafe impl Sync for Shared<'_> {}

#[test]
fn spin_locks_exclude_each_other_across_threads() {
    let kernel = boot();
    let lock = zeroed::<KSPIN_LOCK>();
    let counter = core::cell::UnsafeCell::new(0usize);

    let shared = Shared(&lock, &counter);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let shared = &shared;
                kernel.on_kernel_thread(move || {
                    for _ in 0..2000 {
                        // SAFETY: a live lock; the counter is only touched while holding it.
                        let old = unsafe { KeAcquireSpinLockRaiseToDpc(shared.0.get()) };
                        assert_eq!(irql::current(), DISPATCH_LEVEL);
                        // SAFETY: as above.
                        let v = unsafe { core::ptr::read_volatile(shared.1.get()) };
                        std::thread::yield_now();
                        // SAFETY: as above.
                        unsafe { core::ptr::write_volatile(shared.1.get(), v + 1) };
                        // SAFETY: as above.
                        unsafe { KeReleaseSpinLock(shared.0.get(), old) };
                    }
                });
            });
        }
    });
    assert_eq!(counter.into_inner(), 8000);
    assert_eq!(*unsafe_lock_value(&lock), 0, "released");
}

fn unsafe_lock_value(lock: &core::cell::UnsafeCell<KSPIN_LOCK>) -> &KSPIN_LOCK {
    // SAFETY: no one holds the lock any more.
    unsafe { &*lock.get() }
}

#[test]
fn spin_lock_misuse_bugchecks() {
    let kernel = boot();
    let lock = zeroed::<KSPIN_LOCK>();
    let addr = lock.get() as usize;
    expect_bugcheck("SPIN_LOCK_NOT_RELEASED", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: a live lock; lowering while holding it is the violation under test.
            let old = unsafe { KeAcquireSpinLockRaiseToDpc(addr as *mut KSPIN_LOCK) };
            // SAFETY: as above.
            unsafe { crate::KeLowerIrql(old) };
        });
    });
    // The kernel thread's recovery released the lock: it can be taken again.
    expect_bugcheck("SPIN_LOCK_ALREADY_OWNED", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: a live lock; taking it twice is the violation under test.
            let _ = unsafe { KeAcquireSpinLockRaiseToDpc(addr as *mut KSPIN_LOCK) };
            // SAFETY: as above.
            unsafe { KeAcquireSpinLockAtDpcLevel(addr as *mut KSPIN_LOCK) };
        });
    });
    expect_bugcheck("SPIN_LOCK_NOT_OWNED", || {
        kernel.on_kernel_thread(|| {
            let _old = irql::raise(DISPATCH_LEVEL);
            // SAFETY: releasing a lock not held is the violation under test.
            unsafe { KeReleaseSpinLockFromDpcLevel(addr as *mut KSPIN_LOCK) };
        });
    });
    expect_bugcheck("IRQL_NOT_GREATER_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: calling it at PASSIVE_LEVEL is the violation under test.
            unsafe { KeAcquireSpinLockAtDpcLevel(addr as *mut KSPIN_LOCK) };
        });
    });
    take(
        &kernel,
        &[
            "SPIN_LOCK_NOT_RELEASED",
            "SPIN_LOCK_ALREADY_OWNED",
            "SPIN_LOCK_NOT_OWNED",
            "IRQL_NOT_GREATER_OR_EQUAL",
        ],
    );
    assert_eq!(*unsafe_lock_value(&lock), 0, "recovery released it");
}

unsafe extern "system" fn thread_main(context: PVOID) {
    // SAFETY: the context is a Sender the test keeps alive until the thread ended.
    let tx = unsafe { &*context.cast::<Mutex<Sender<u8>>>() };
    let _ = tx.lock().unwrap().send(irql::current());
    let mut interval = -1;
    // SAFETY: PASSIVE_LEVEL on a system thread.
    unsafe { KeDelayExecutionThread(KernelMode, FALSE, &raw mut interval) };
    // SAFETY: as above.
    unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}

#[test]
fn system_threads_run_at_passive_and_their_objects_signal_at_exit() {
    let kernel = boot();
    let (tx, rx) = mpsc::channel::<u8>();
    let tx = Mutex::new(tx);
    let context = core::ptr::from_ref(&tx) as usize;
    kernel.on_kernel_thread(|| {
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut object: PVOID = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; the context outlives the thread (we wait for it below).
        let status = unsafe {
            PsCreateSystemThread(
                &raw mut handle,
                crate::THREAD_ALL_ACCESS,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                Some(thread_main),
                context as PVOID,
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: as above.
        let status = unsafe {
            ObReferenceObjectByHandle(
                handle,
                crate::SYNCHRONIZE,
                core::ptr::null_mut(),
                KernelMode,
                &raw mut object,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: as above.
        unsafe { assert_eq!(ZwClose(handle), STATUS_SUCCESS) };
        assert_eq!(
            wait(object, Some(-300_000_000)),
            STATUS_SUCCESS,
            "signalled when it ends"
        );
        // SAFETY: as above.
        unsafe { ObfDereferenceObject(object) };
    });
    assert_eq!(recv(&rx), PASSIVE_LEVEL);
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn handles_left_open_are_leaks_and_bad_handles_fail() {
    let kernel = boot();
    kernel.on_kernel_thread(|| {
        let mut object: PVOID = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; an invalid handle.
        let status = unsafe {
            ObReferenceObjectByHandle(
                0x1234 as HANDLE,
                0,
                core::ptr::null_mut(),
                KernelMode,
                &raw mut object,
                core::ptr::null_mut(),
            )
        };
        assert_eq!(status, crate::STATUS_INVALID_HANDLE);
    });
    expect_bugcheck("INVALID_KERNEL_HANDLE", || {
        kernel.on_kernel_thread(|| {
            // SAFETY: closing a bad handle is the violation under test.
            unsafe { ZwClose(0x1234 as HANDLE) }
        })
    });
    take(&kernel, &["INVALID_KERNEL_HANDLE"]);
    // A key handle left open is a leak until closed.
    kernel.set_registry_value(
        "\\Registry\\Machine\\Software\\Leak",
        "V",
        super::super::kernel::RegValue::Dword(1),
    );
    let key = kernel.on_kernel_thread(|| {
        let path: Vec<u16> = "\\Registry\\Machine\\Software\\Leak"
            .encode_utf16()
            .collect();
        let mut name = crate::UNICODE_STRING::from_wide(&path);
        let mut attributes = crate::InitializeObjectAttributes(
            &raw mut name,
            crate::OBJ_KERNEL_HANDLE,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        );
        let mut key: HANDLE = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; pointers to live locals.
        let status =
            unsafe { crate::ZwOpenKey(&raw mut key, crate::KEY_READ, &raw mut attributes) };
        assert_eq!(status, STATUS_SUCCESS);
        key as usize
    });
    let report = kernel.check_leaks();
    assert!(
        report
            .leaks()
            .iter()
            .any(|l| l.contains("handle") && l.contains("registry key")),
        "{report}"
    );
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL; the open handle, closed once.
        unsafe { assert_eq!(ZwClose(key as HANDLE), STATUS_SUCCESS) }
    });
    assert!(kernel.check_leaks().is_clean());
}
