//! The runners: a [`Runner`] puts one [`Executor`] on a DPC ([`RunnerKind::Dpc`]) or on a
//! system thread at `PASSIVE_LEVEL` ([`RunnerKind::Passive`]), with a timer queue, and shuts it
//! down so that no code of it runs afterwards.
//!
//! - DPC: a wake pushes the task and calls `KeInsertQueueDpc`; the DPC polls under a budget
//!   (tasks and time) and, past it, queues itself again instead of holding the CPU. A `KDPC`
//!   queued while it runs runs again, possibly on another CPU at the same time: the executor is
//!   built for several pollers, so that is safe. One runner DPC, not one per processor: the
//!   simplest design that is correct; per-processor queues are a possible later optimisation.
//! - Passive: a system thread waits on a synchronization `KEVENT` that wakes set. For work that
//!   must run at `PASSIVE_LEVEL`, and for kernels whose DPCs never run (Wine).

use core::ffi::c_void;
use core::future::Future;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use core::time::Duration;

use wsk_sys::{
    Executive, FALSE, HANDLE, KDPC, KEVENT, KeFlushQueuedDpcs, KeGetCurrentIrql, KeInitializeDpc,
    KeInitializeEvent, KeInsertQueueDpc, KeRemoveQueueDpc, KeSetEvent, KeWaitForSingleObject,
    KernelMode, NT_SUCCESS, NTSTATUS, NotificationEvent, ObReferenceObjectByHandle,
    ObfDereferenceObject, PASSIVE_LEVEL, PVOID, PsCreateSystemThread, PsTerminateSystemThread,
    STATUS_SUCCESS, SynchronizationEvent, THREAD_ALL_ACCESS, ZwClose,
};

use crate::kernel::KernelCell;
use crate::raw::{Executor, JoinHandle, Pender, SpawnError, TaskPool};
use crate::time::BudgetDeadline;
use crate::timer::TimerQueue;

/// Where a [`Runner`] polls its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    /// In a DPC at `DISPATCH_LEVEL`, queued by wakes. Not under Wine (its DPCs never run).
    Dpc,
    /// On a system thread at `PASSIVE_LEVEL`, woken by a `KEVENT`.
    Passive,
}

/// How much one run of the runner may do before giving the CPU back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Tasks polled per run.
    pub max_polls: usize,
    /// Time per run, on the precise clock (checked after each poll; one slow poll can exceed
    /// it).
    pub max_time: Duration,
}

impl Budget {
    /// 64 polls or 100 µs per run, the usual guidance for a DPC.
    pub const DEFAULT: Self = Self {
        max_polls: 64,
        max_time: Duration::from_micros(100),
    };
}

/// Why [`Runner::start`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// `start` was already called on this runner.
    AlreadyStarted,
    /// `PsCreateSystemThread` or `ObReferenceObjectByHandle` failed with this NTSTATUS.
    Thread(NTSTATUS),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::AlreadyStarted => f.write_str("runner already started"),
            Self::Thread(status) => write!(f, "could not start the runner thread: {status:#010x}"),
        }
    }
}

impl core::error::Error for StartError {}

/// Lifecycle of a runner.
const NEW: u8 = 0;
const STARTING: u8 = 1;
const STARTED: u8 = 2;
const STOPPING: u8 = 3;
const STOPPED: u8 = 4;

/// Kind, as stored.
const KIND_DPC: u8 = 0;
const KIND_PASSIVE: u8 = 1;

/// An executor with its pender (a DPC or a thread), its timers and its shutdown.
///
/// Lives in `static` storage (nonpaged: a driver image's data section):
///
/// ```ignore
/// static RUNNER: Runner = Runner::new(Budget::DEFAULT);
/// static TASKS: TaskPool<2048, 64> = TaskPool::new();
///
/// RUNNER.start(RunnerKind::Dpc)?;                  // `DriverEntry`
/// RUNNER.spawn(&TASKS, serve())?;
/// RUNNER.shutdown();                               // `DriverUnload`
/// ```
pub struct Runner {
    executor: Executor<RunnerPender>,
    timers: TimerQueue,
    budget: Budget,
    state: AtomicU8,
    kind: AtomicU8,
    /// The runner's DPC (DPC kind).
    dpc: KernelCell<KDPC>,
    /// Set by wakes (passive kind); a synchronization event.
    wake_event: KernelCell<KEVENT>,
    /// Set once the executor is closed and every task dropped; a notification event.
    drained_event: KernelCell<KEVENT>,
    /// The passive thread's object, referenced until shutdown waited for it.
    thread: AtomicPtr<c_void>,
    /// Tells the passive thread to exit.
    stop_thread: AtomicBool,
}

impl Runner {
    /// A runner that is not started yet. Tasks may be spawned before [`start`](Self::start);
    /// they run once it is started.
    ///
    /// # IRQL
    /// Any (a constant initialiser).
    #[must_use]
    pub const fn new(budget: Budget) -> Self {
        Self {
            executor: Executor::with_pender(),
            timers: TimerQueue::new(),
            budget,
            state: AtomicU8::new(NEW),
            kind: AtomicU8::new(KIND_DPC),
            dpc: KernelCell::zeroed(),
            wake_event: KernelCell::zeroed(),
            drained_event: KernelCell::zeroed(),
            thread: AtomicPtr::new(ptr::null_mut()),
            stop_thread: AtomicBool::new(false),
        }
    }

    /// The runner's executor, for [`TaskPool::spawn`].
    #[must_use]
    pub fn executor(&'static self) -> &'static Executor<RunnerPender> {
        &self.executor
    }

    /// Which kind the runner was started as (`Dpc` before it is started).
    #[must_use]
    pub fn kind(&self) -> RunnerKind {
        if self.kind.load(Ordering::Acquire) == KIND_PASSIVE {
            RunnerKind::Passive
        } else {
            RunnerKind::Dpc
        }
    }

    /// Starts polling: initialises the runner's kernel objects and, for
    /// [`RunnerKind::Passive`], creates its system thread. Tasks already spawned run now.
    ///
    /// # Errors
    /// [`StartError::AlreadyStarted`] on a second call; [`StartError::Thread`] if the passive
    /// thread could not be created (the runner then stays unusable).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn start(&'static self, kind: RunnerKind) -> Result<(), StartError> {
        debug_assert_eq!(
            KeGetCurrentIrql(),
            PASSIVE_LEVEL,
            "Runner::start needs PASSIVE_LEVEL"
        );
        if self
            .state
            .compare_exchange(NEW, STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(StartError::AlreadyStarted);
        }
        // SAFETY: PASSIVE_LEVEL (checked above); resolves the clock the DPC budget is measured on.
        unsafe { wsk_sys::init_precise_clock() };
        let context: PVOID = ptr::from_ref(self).cast_mut().cast();
        // SAFETY: the objects live in this 'static runner and are not in use before `start`; the
        // DPC's context is the runner, which `runner_dpc` expects.
        unsafe {
            KeInitializeDpc(self.dpc.get(), Some(runner_dpc), context);
            KeInitializeEvent(self.wake_event.get(), SynchronizationEvent, FALSE);
            KeInitializeEvent(self.drained_event.get(), NotificationEvent, FALSE);
        }
        self.timers.init();
        self.executor
            .set_timer_queue(ptr::from_ref(&self.timers).cast());
        self.kind.store(
            match kind {
                RunnerKind::Dpc => KIND_DPC,
                RunnerKind::Passive => KIND_PASSIVE,
            },
            Ordering::Release,
        );
        if kind == RunnerKind::Passive
            && let Err(status) = self.start_thread()
        {
            return Err(StartError::Thread(status));
        }
        // SAFETY: `pend` expects a 'static Runner whose kernel objects are initialised: done.
        unsafe { self.executor.set_context(ptr::from_ref(self).cast()) };
        self.state.store(STARTED, Ordering::Release);
        if self.executor.has_queued() {
            self.executor.pend();
        }
        Ok(())
    }

    fn start_thread(&'static self) -> Result<(), NTSTATUS> {
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: valid out-pointer; the start routine gets this 'static runner.
        let status = unsafe {
            PsCreateSystemThread(
                &raw mut handle,
                THREAD_ALL_ACCESS,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                Some(passive_thread),
                ptr::from_ref(self).cast_mut().cast(),
            )
        };
        if !NT_SUCCESS(status) {
            return Err(status);
        }
        let mut thread: PVOID = ptr::null_mut();
        // SAFETY: `handle` is the thread handle just created; a null object type skips the
        // type check, as PsThreadType would pass it.
        let status = unsafe {
            ObReferenceObjectByHandle(
                handle,
                THREAD_ALL_ACCESS,
                ptr::null_mut(),
                KernelMode,
                &raw mut thread,
                ptr::null_mut(),
            )
        };
        // SAFETY: we own the handle; the referenced object (if any) outlives it.
        unsafe { ZwClose(handle) };
        if !NT_SUCCESS(status) {
            // The thread runs but cannot be waited for: tell it to leave.
            self.stop_thread.store(true, Ordering::Release);
            // SAFETY: initialised event in the 'static runner.
            unsafe { KeSetEvent(self.wake_event.get(), 0, FALSE) };
            return Err(status);
        }
        self.thread.store(thread, Ordering::Release);
        Ok(())
    }

    /// Spawns `future` into a free slot of `pool`, to run on this runner.
    ///
    /// # Errors
    /// See [`TaskPool::spawn`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn spawn<F, const SIZE: usize, const N: usize>(
        &'static self,
        pool: &'static TaskPool<SIZE, N>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        pool.spawn(&self.executor, future)
    }

    /// Tasks whose future is not yet finished or dropped.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.executor.live_tasks()
    }

    /// True between a successful [`start`](Self::start) and [`shutdown`](Self::shutdown).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == STARTED
    }

    /// Shuts the runner down: spawning fails from now on, every task's future is dropped on the
    /// runner (which cancels what it was waiting for), then waits until all are dropped and the
    /// runner's DPCs, timer and thread are quiescent. When it returns, no code of this runner
    /// runs again, and the runner cannot be restarted. A second call returns at once.
    ///
    /// It waits for the runner to drop the tasks, so it must not be called from one of the
    /// runner's own tasks. A DPC runner under a kernel whose DPCs never run never finishes.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn shutdown(&'static self) {
        debug_assert_eq!(
            KeGetCurrentIrql(),
            PASSIVE_LEVEL,
            "Runner::shutdown needs PASSIVE_LEVEL"
        );
        let previous = self.state.swap(STOPPING, Ordering::AcqRel);
        match previous {
            STOPPING | STOPPED => {
                self.state.store(previous, Ordering::Release);
                return;
            }
            NEW | STARTING => {
                // Never started, so nothing else polls: drop the tasks spawned meanwhile here.
                self.executor.close();
                while !self.executor.is_drained() {
                    self.executor.poll(usize::MAX, || false);
                }
                self.state.store(STOPPED, Ordering::Release);
                return;
            }
            _ => {}
        }
        self.executor.close();
        if !self.executor.is_drained() {
            // SAFETY: initialised notification event in the 'static runner; PASSIVE_LEVEL, no
            // timeout. The runner sets it after the poll that drops the last task.
            unsafe {
                KeWaitForSingleObject(
                    self.drained_event.get().cast(),
                    Executive,
                    KernelMode,
                    FALSE,
                    ptr::null_mut(),
                );
            }
        }
        self.timers.close();
        match self.kind() {
            RunnerKind::Dpc => {
                // SAFETY: initialised DPC in the 'static runner.
                unsafe { KeRemoveQueueDpc(self.dpc.get()) };
            }
            RunnerKind::Passive => self.stop_passive_thread(),
        }
        // Waits for any instance of the runner's or the timer's DPC still running elsewhere.
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() };
        debug_assert_eq!(self.timers.pending(), 0, "a sleep outlived its task");
        self.state.store(STOPPED, Ordering::Release);
    }

    fn stop_passive_thread(&self) {
        self.stop_thread.store(true, Ordering::Release);
        // SAFETY: initialised event in the 'static runner.
        unsafe { KeSetEvent(self.wake_event.get(), 0, FALSE) };
        let thread = self.thread.swap(ptr::null_mut(), Ordering::AcqRel);
        if !thread.is_null() {
            // SAFETY: a referenced thread object; waiting at PASSIVE_LEVEL without timeout
            // returns once the thread has terminated.
            unsafe {
                KeWaitForSingleObject(thread, Executive, KernelMode, FALSE, ptr::null_mut());
                ObfDereferenceObject(thread);
            }
        }
    }

    /// Polls once under the budget; signals `drained_event` once the executor is drained.
    fn run_once(&self) -> bool {
        // The precise clock: the interrupt time moves once per tick, far above the budget.
        let deadline = BudgetDeadline::after(self.budget.max_time);
        let report = self
            .executor
            .poll(self.budget.max_polls, || deadline.has_passed());
        if self.executor.is_drained() {
            // SAFETY: initialised event; KeSetEvent with Wait FALSE is fine at DISPATCH_LEVEL.
            unsafe { KeSetEvent(self.drained_event.get(), 0, FALSE) };
        }
        report.work_remains
    }
}

/// The runners' [`Pender`]: queues the runner's DPC, or wakes its thread. A wake calls it inline.
#[derive(Debug)]
pub enum RunnerPender {}

/// The runners' task waker vtable: a `static`, so that timers recognise a runner's task wakers
/// by its address.
static RUNNER_WAKER_VTABLE: core::task::RawWakerVTable =
    crate::raw::WakerVTableFor::<RunnerPender>::VTABLE;

impl Pender for RunnerPender {
    const WAKER_VTABLE: &'static core::task::RawWakerVTable = &RUNNER_WAKER_VTABLE;

    unsafe fn pend(executor: &crate::raw::ExecutorCore) {
        // SAFETY: the executor is a runner's (an `Executor<RunnerPender>`), whose context is
        // null or the runner (`start`).
        unsafe { pend(executor.context()) };
    }
}

/// The executor's pender: queue the DPC, or wake the thread.
#[inline]
unsafe fn pend(context: *const ()) {
    // SAFETY: `start` sets the context to the 'static runner after initialising its objects;
    // before that it is null and wakes are left queued until `start`.
    let Some(runner) = (unsafe { context.cast::<Runner>().as_ref() }) else {
        return;
    };
    if runner.kind.load(Ordering::Relaxed) == KIND_PASSIVE {
        // SAFETY: initialised event; any IRQL <= DISPATCH_LEVEL.
        unsafe { KeSetEvent(runner.wake_event.get(), 0, FALSE) };
    } else {
        // SAFETY: initialised DPC; queueing an already queued DPC is a no-op, queueing a running
        // one runs it again.
        unsafe { KeInsertQueueDpc(runner.dpc.get(), ptr::null_mut(), ptr::null_mut()) };
    }
}

/// The DPC runner: polls under the budget and queues itself again if work remains.
unsafe extern "system" fn runner_dpc(dpc: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the DPC was initialised with the 'static runner as context.
    let runner = unsafe { &*context.cast::<Runner>() };
    if runner.run_once() {
        // SAFETY: our own initialised DPC; re-queueing while running is how we yield the CPU.
        unsafe { KeInsertQueueDpc(dpc, ptr::null_mut(), ptr::null_mut()) };
    }
}

/// The passive runner's thread.
unsafe extern "system" fn passive_thread(context: PVOID) {
    // SAFETY: the thread was created with the 'static runner as context.
    let runner = unsafe { &*context.cast::<Runner>() };
    loop {
        // SAFETY: initialised synchronization event; PASSIVE_LEVEL, no timeout.
        unsafe {
            KeWaitForSingleObject(
                runner.wake_event.get().cast(),
                Executive,
                KernelMode,
                FALSE,
                ptr::null_mut(),
            );
        }
        while runner.run_once() {}
        if runner.stop_thread.load(Ordering::Acquire) {
            break;
        }
    }
    // SAFETY: ends this system thread; PASSIVE_LEVEL.
    unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}
