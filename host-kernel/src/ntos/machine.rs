//! The running machine: every kernel-side table, shared by the kernel's threads and the
//! functions drivers call. One machine runs per process at a time (see `kernel::Kernel`).

use std::string::String;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;
use std::vec::Vec;

use super::verifier::{Bugcheck, bugcheck};
use super::{device, dpc, irp, mdl, object, pool, registry, timer};

/// Locks `mutex`, ignoring poison: a bugcheck that unwound through a holder must not take the
/// rest of the machine down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A condition variable that knows whether anyone waits on it, so that a notification with
/// no waiter costs an atomic load instead of a futex system call (std's `Condvar` always
/// makes the call). The host kernel notifies after every completion, DPC and event; almost
/// always nobody waits.
///
/// Rule for its users (as for any condition variable): change the waited-for state under the
/// mutex the waiter holds, then notify, holding that mutex or after releasing it. A waiter
/// counts itself under the mutex before it sleeps, so a notifier that changed the state under
/// the same mutex sees the count.
pub(crate) struct Signal {
    condvar: Condvar,
    waiters: AtomicUsize,
}

impl Signal {
    /// A signal nobody waits on.
    pub(crate) const fn new() -> Self {
        Self {
            condvar: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Wakes every waiter, if there is one.
    pub(crate) fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.condvar.notify_all();
        }
    }

    /// Wakes one waiter, if there is one.
    pub(crate) fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) != 0 {
            self.condvar.notify_one();
        }
    }
}

/// Waits on `signal`, ignoring poison.
pub(crate) fn wait<'a, T>(signal: &Signal, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    signal.waiters.fetch_add(1, Ordering::SeqCst);
    let guard = signal
        .condvar
        .wait(guard)
        .unwrap_or_else(PoisonError::into_inner);
    signal.waiters.fetch_sub(1, Ordering::SeqCst);
    guard
}

/// Waits on `signal` for at most `timeout`, ignoring poison.
pub(crate) fn wait_timeout<'a, T>(
    signal: &Signal,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    signal.waiters.fetch_add(1, Ordering::SeqCst);
    let guard = signal
        .condvar
        .wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0;
    signal.waiters.fetch_sub(1, Ordering::SeqCst);
    guard
}

/// Every kernel-side table of the running kernel.
pub(crate) struct Machine {
    /// Emulated processors.
    pub(crate) cpus: usize,
    /// Longest a DPC routine may run before `DPC_WATCHDOG_VIOLATION` is recorded.
    pub(crate) dpc_watchdog: Duration,
    /// Set when the kernel shuts down: kernel threads exit.
    pub(crate) stopping: AtomicBool,
    /// Bugchecks raised and not yet taken by the test.
    pub(crate) bugchecks: Mutex<Vec<Bugcheck>>,
    /// Everything `DbgPrintEx` printed.
    pub(crate) debug_log: Mutex<String>,
    /// Signalled whenever the debug log grows.
    pub(crate) debug_log_grew: Signal,
    /// `DbgPrintEx` calls per level (`DPFLTR_ERROR_LEVEL` .. `DPFLTR_INFO_LEVEL`; higher
    /// levels count as `INFO`).
    pub(crate) debug_prints_by_level: [AtomicU64; 4],
    /// The dispatcher lock and its condition: every waitable object's state changes under it.
    pub(crate) dispatcher: Mutex<()>,
    /// Signalled whenever a dispatcher object's state changes.
    pub(crate) dispatcher_changed: Signal,
    /// Processors and their DPC queues.
    pub(crate) dpcs: dpc::Dpcs,
    /// Armed timers.
    pub(crate) timers: timer::Timers,
    /// IRPs allocated and their state.
    pub(crate) irps: Mutex<irp::IrpTable>,
    /// The cancel spin lock (`IoAcquireCancelSpinLock`).
    pub(crate) cancel_lock: AtomicUsize,
    /// Pool allocations.
    pub(crate) pool: Mutex<pool::PoolTable>,
    /// MDLs allocated.
    pub(crate) mdls: Mutex<mdl::MdlTable>,
    /// Handles and referenced objects (threads, registry keys).
    pub(crate) objects: Mutex<object::Objects>,
    /// The registry.
    pub(crate) registry: Mutex<registry::Store>,
    /// How many pool blocks, IRPs and MDLs were ever allocated (for steady-state checks).
    pub(crate) allocations: AllocationCounters,
    /// This kernel's low-resources simulation (shared with `faults` for the kernel booted
    /// last).
    pub(crate) low_resources: Arc<crate::faults::LowResourcesState>,
    /// Processor threads halted by a bugcheck inside a driver callback (never joined).
    pub(crate) halted: Mutex<Vec<std::thread::ThreadId>>,
    /// The threads that replaced them.
    pub(crate) replacements: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Device objects (`IoCreateDevice`) not yet released.
    pub(crate) devices: Mutex<device::Devices>,
    /// Signalled when a device object is deleted or dereferenced.
    pub(crate) devices_changed: Signal,
    /// Driver callbacks running right now, on every thread (see `verifier::in_callback`).
    pub(crate) driver_code: AtomicUsize,
    /// How long a completion routine stays counted as running after it returned (fault
    /// injection; `Config::with_late_callback_return`).
    pub(crate) late_callback_return: Option<Duration>,
}

impl Machine {
    pub(crate) fn new(cpus: usize, dpc_watchdog: Duration) -> Self {
        Self {
            cpus,
            dpc_watchdog,
            stopping: AtomicBool::new(false),
            bugchecks: Mutex::new(Vec::new()),
            debug_log: Mutex::new(String::new()),
            debug_log_grew: Signal::new(),
            debug_prints_by_level: [const { AtomicU64::new(0) }; 4],
            dispatcher: Mutex::new(()),
            dispatcher_changed: Signal::new(),
            dpcs: dpc::Dpcs::new(cpus),
            timers: timer::Timers::new(),
            irps: Mutex::new(irp::IrpTable::default()),
            cancel_lock: AtomicUsize::new(0),
            pool: Mutex::new(pool::PoolTable::default()),
            mdls: Mutex::new(mdl::MdlTable::default()),
            objects: Mutex::new(object::Objects::default()),
            registry: Mutex::new(registry::Store::default()),
            allocations: AllocationCounters::default(),
            low_resources: Arc::default(),
            halted: Mutex::new(Vec::new()),
            replacements: Mutex::new(Vec::new()),
            devices: Mutex::new(device::Devices::default()),
            devices_changed: Signal::new(),
            driver_code: AtomicUsize::new(0),
            late_callback_return: None,
        }
    }

    /// The address of the cancel spin lock, for the spin-lock primitives.
    pub(crate) fn cancel_lock_ptr(&self) -> *mut crate::KSPIN_LOCK {
        self.cancel_lock.as_ptr()
    }
}

/// Running totals of kernel allocations since boot.
#[derive(Default)]
pub(crate) struct AllocationCounters {
    pub(crate) pool: AtomicU64,
    pub(crate) irps: AtomicU64,
    pub(crate) mdls: AtomicU64,
}

static CURRENT: RwLock<Option<Arc<Machine>>> = RwLock::new(None);

/// The machines a thread adopted (see [`adopt`]), kept alive until the thread exits so that
/// [`OWN`] stays valid without a reference count per look-up.
struct Kept(core::cell::RefCell<Vec<Arc<Machine>>>);

impl Drop for Kept {
    fn drop(&mut self) {
        // The thread is exiting: its own machine is no longer kept, so nothing may borrow it.
        let _ = OWN.try_with(|own| own.set(core::ptr::null()));
    }
}

std::thread_local! {
    /// The machine a kernel-created thread belongs to (an element of [`KEPT`], or null): such a
    /// thread keeps using it even after its kernel was dropped (or another booted), so a
    /// straggler never sees the wrong machine. A plain pointer, not an `Arc`: [`try_current`]
    /// on a kernel thread (every IRP completion, DPC, pool block and MDL) then reads a
    /// thread-local instead of incrementing and decrementing the machine's shared count, whose
    /// cache line would otherwise bounce between the emulated processors' threads on every
    /// call. No destructor, so reading it needs no registration check either.
    static OWN: core::cell::Cell<*const Machine> = const { core::cell::Cell::new(core::ptr::null()) };
    /// Every machine the thread adopted.
    static KEPT: Kept = const { Kept(core::cell::RefCell::new(Vec::new())) };
}

/// Makes `machine` the calling thread's own (for threads the kernel creates).
pub(crate) fn adopt(machine: Arc<Machine>) {
    let pointer = Arc::as_ptr(&machine);
    if OWN.with(core::cell::Cell::get) == pointer {
        return;
    }
    KEPT.with(|kept| kept.0.borrow_mut().push(machine));
    OWN.with(|own| own.set(pointer));
}

/// The running machine, as [`try_current`] finds it: borrowed from the calling thread's
/// adopted machines (no reference count touched), or a counted reference to the machine
/// installed when the thread adopted none. Not `Send`: a borrowed machine is valid only on the
/// thread that adopted it, until that thread exits.
pub(crate) struct Current {
    /// The adopted machine, or the counted reference.
    machine: CurrentMachine,
    /// Keeps the borrow on its thread.
    _not_send: core::marker::PhantomData<*const ()>,
}

enum CurrentMachine {
    /// The data of an `Arc` in the calling thread's `KEPT`.
    Adopted(core::ptr::NonNull<Machine>),
    /// The installed machine, counted.
    Installed(Arc<Machine>),
}

impl Current {
    /// A counted reference, for what outlives the call (a thread, a stored hook).
    pub(crate) fn to_arc(&self) -> Arc<Machine> {
        match &self.machine {
            CurrentMachine::Adopted(pointer) => KEPT.with(|kept| {
                let kept = kept.0.borrow();
                let found = kept
                    .iter()
                    .find(|machine| core::ptr::eq(Arc::as_ptr(machine), pointer.as_ptr()));
                Arc::clone(found.expect("an adopted machine stays kept until its thread exits"))
            }),
            CurrentMachine::Installed(machine) => Arc::clone(machine),
        }
    }
}

impl core::ops::Deref for Current {
    type Target = Machine;

    fn deref(&self) -> &Machine {
        match &self.machine {
            // SAFETY: the pointer is the data of an `Arc` in the calling thread's `KEPT`, which
            // only grows until the thread exits, and `Current` is not `Send`: it is used on
            // that thread while the thread runs, so that `Arc` is alive.
            CurrentMachine::Adopted(pointer) => unsafe { pointer.as_ref() },
            CurrentMachine::Installed(machine) => machine,
        }
    }
}

/// The calling thread's machine (see [`adopt`]), else the running machine, if any.
#[inline]
pub(crate) fn try_current() -> Option<Current> {
    let own = OWN.with(core::cell::Cell::get);
    let machine = match core::ptr::NonNull::new(own.cast_mut()) {
        Some(pointer) => CurrentMachine::Adopted(pointer),
        None => CurrentMachine::Installed(installed()?),
    };
    Some(Current {
        machine,
        _not_send: core::marker::PhantomData,
    })
}

/// The installed machine, counted: for threads that adopted none (off the hot paths, which
/// run on the kernel's own threads).
#[cold]
#[inline(never)]
fn installed() -> Option<Arc<Machine>> {
    CURRENT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The running machine; a bugcheck naming `function` if no kernel is booted.
#[inline]
pub(crate) fn current(function: &'static str) -> Current {
    try_current().unwrap_or_else(|| {
        bugcheck(
            "NO_HOST_KERNEL",
            std::format!("{function} called with no host kernel booted (Kernel::boot)"),
        )
    })
}

/// Installs (or, with `None`, removes) the running machine.
pub(crate) fn install(machine: Option<Arc<Machine>>) {
    *CURRENT.write().unwrap_or_else(PoisonError::into_inner) = machine;
}
