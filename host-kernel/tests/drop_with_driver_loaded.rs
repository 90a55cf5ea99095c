//! Dropping the kernel while a driver is still loaded and calling WSK from a DPC on the WSK
//! reactor's processor (as a DPC runner does, or a test that panicked before it unloaded its
//! driver): the drop stops the provider, the DPC's next WSK call finds none and bugchecks
//! `WSK_NO_PROVIDER`, which halts the reactor thread. The drop must complete and report the
//! bugcheck, not wait for the halted thread forever. A watchdog thread bounds each test.
//!
//! The rule the driver breaks: a WSK application deregisters (`WskDeregister`) before it goes,
//! and until then the provider it captured stays in use
//! (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister>,
//! "`WskDeregister` function (wsk.h)").

#![cfg(not(target_os = "windows"))]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use wsk_host::testing::BOUND;
use wsk_host::{Config, Kernel, Registry};
use wsk_sys::{
    DRIVER_OBJECT, KDPC, KeInitializeDpc, KeInsertQueueDpc, KeSetTargetProcessorDpcEx, NTSTATUS,
    PROCESSOR_NUMBER, PVOID, STATUS_SUCCESS, UNICODE_STRING, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI,
    WSK_NO_WAIT, WSK_PROVIDER_NPI, WSK_REGISTRATION, WskCaptureProviderNPI, WskRegister,
    WskReleaseProviderNPI,
};

/// The processors the kernel runs: with two, the last is the WSK reactor's thread.
const CPUS: usize = 2;
/// How long the DPC waits before its WSK call: the test drops the kernel in that time.
const DPC_DELAY: Duration = Duration::from_millis(300);

/// The tests take turns: the driver's state is one per process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The driver's state, in "nonpaged pool" (a static here).
struct State {
    registration: UnsafeCell<WSK_REGISTRATION>,
    dpc: UnsafeCell<KDPC>,
    /// Set when the DPC routine starts.
    running: AtomicBool,
}

// SAFETY: the registration and DPC are only touched through the kernel, after DriverEntry
// initialised them; the flag is atomic.
unsafe impl Sync for State {}

// SAFETY: all-zero is a valid (unregistered, uninitialised) value for every field.
static STATE: State = unsafe { std::mem::zeroed() };

static CLIENT_DISPATCH: WSK_CLIENT_DISPATCH = WSK_CLIENT_DISPATCH {
    Version: 0x0100,
    Reserved: 0,
    WskClientEvent: None,
};

/// A DPC that calls WSK late: it captures and releases the provider NPI (allowed at
/// `DISPATCH_LEVEL` with `WSK_NO_WAIT`) after [`DPC_DELAY`].
unsafe extern "system" fn call_wsk_late(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    STATE.running.store(true, Ordering::SeqCst);
    std::thread::sleep(DPC_DELAY);
    let mut npi = WSK_PROVIDER_NPI {
        Client: std::ptr::null_mut(),
        Dispatch: std::ptr::null(),
    };
    let registration = STATE.registration.get();
    // SAFETY: the registration DriverEntry filled; DISPATCH_LEVEL with WSK_NO_WAIT.
    let status = unsafe { WskCaptureProviderNPI(registration, WSK_NO_WAIT, &raw mut npi) };
    if status == STATUS_SUCCESS {
        // SAFETY: one release for the capture just made.
        unsafe { WskReleaseProviderNPI(STATE.registration.get()) };
    }
}

/// Registers with WSK and queues [`call_wsk_late`] to the reactor's processor; has no unload
/// routine worth the name: the test never unloads it.
unsafe extern "system" fn careless_entry(
    _driver: *mut DRIVER_OBJECT,
    _: *mut UNICODE_STRING,
) -> NTSTATUS {
    let mut npi = WSK_CLIENT_NPI {
        ClientContext: std::ptr::null_mut(),
        Dispatch: &raw const CLIENT_DISPATCH,
    };
    // SAFETY: DriverEntry at PASSIVE_LEVEL; the registration is a static.
    let status = unsafe { WskRegister(&raw mut npi, STATE.registration.get()) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: PASSIVE_LEVEL; the DPC is a static, not queued.
    unsafe { KeInitializeDpc(STATE.dpc.get(), Some(call_wsk_late), std::ptr::null_mut()) };
    let mut reactor = PROCESSOR_NUMBER {
        Group: 0,
        Number: u8::try_from(CPUS - 1).unwrap_or(0),
        Reserved: 0,
    };
    // SAFETY: the DPC was initialised above and is not queued.
    let status = unsafe { KeSetTargetProcessorDpcEx(STATE.dpc.get(), &raw mut reactor) };
    if status != STATUS_SUCCESS {
        return status;
    }
    // SAFETY: initialised and targeted above.
    unsafe { KeInsertQueueDpc(STATE.dpc.get(), std::ptr::null_mut(), std::ptr::null_mut()) };
    STATUS_SUCCESS
}

/// Boots a kernel, loads the careless driver, waits for its DPC to run, then (`panic_first`:
/// from a panicking test, as the case that was seen) drops the kernel, on a thread of its own
/// bounded by [`BOUND`]. Returns the panic message the drop (or the test) ended with.
fn drop_with_the_driver_loaded(panic_first: bool) -> Option<String> {
    let (done, finished) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(move || {
            let config = Config {
                cpus: CPUS,
                // The DPC's delay is the test's, not a finding.
                ..Config::default().with_dpc_watchdog(Duration::from_mins(1))
            };
            let kernel = Kernel::boot(config);
            let driver = kernel
                .load_driver(careless_entry, "careless", Registry::new())
                .expect("DriverEntry succeeds");
            while !STATE.running.load(Ordering::SeqCst) {
                assert!(started.elapsed() < BOUND, "the DPC never ran");
                std::thread::sleep(Duration::from_millis(1));
            }
            // The test that was seen failed here, its driver still loaded.
            assert!(!panic_first, "a test failed with its driver still loaded");
            drop(kernel);
            drop(driver);
        });
        let message = outcome.err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        });
        let _ = done.send(message);
    });
    finished.recv_timeout(BOUND).unwrap_or_else(|_| {
        panic!("dropping the kernel with a driver loaded did not finish within {BOUND:?}: it hangs")
    })
}

#[test]
fn dropping_the_kernel_with_a_driver_calling_wsk_completes_and_reports_the_bugcheck() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    STATE.running.store(false, Ordering::SeqCst);
    let message = drop_with_the_driver_loaded(false)
        .expect("the drop reports the bugcheck nobody examined by panicking");
    assert!(message.contains("WSK_NO_PROVIDER"), "{message}");
}

#[test]
fn a_test_panicking_with_its_driver_loaded_fails_with_its_own_message() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    STATE.running.store(false, Ordering::SeqCst);
    let message = drop_with_the_driver_loaded(true).expect("the test's panic");
    assert!(
        message.contains("a test failed with its driver still loaded"),
        "{message}"
    );
}
