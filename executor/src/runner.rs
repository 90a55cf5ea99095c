//! The runners: a [`Runner`] puts one [`Executor`] on a DPC ([`RunnerKind::Dpc`]) or on a
//! system thread at `PASSIVE_LEVEL` ([`RunnerKind::Passive`]), with a timer queue, and shuts it
//! down so that no code of it runs afterwards. Both kinds own one system thread: the passive
//! runner polls on it; the DPC runner hands its work to it under sustained load.
//!
//! - DPC: a wake pushes the task and calls `KeInsertQueueDpc`; the DPC polls under a budget
//!   (tasks and time) and, past it, queues itself again instead of holding the CPU. A `KDPC`
//!   queued while it runs runs again, possibly on another CPU at the same time: the executor is
//!   built for several pollers, so that is safe. One runner DPC, not one per processor: the
//!   simplest design that is correct; per-processor queues are a possible later optimisation.
//! - Leaving `DISPATCH_LEVEL`: a DPC queued again from a DPC runs on the same processor right
//!   after the current one, so a runner that always has work (tasks that keep waking each
//!   other, or a steady stream of completions) would keep its processor at `DISPATCH_LEVEL` for
//!   good: its threads never run and Windows' cumulative DPC watchdog ends it in
//!   `DPC_WATCHDOG_VIOLATION` (0x133). So the runner measures, per processor, how long its DPC
//!   has run back to back there, and once `KeShouldYieldProcessor` says so (Windows 10 2004 and
//!   later; looked up at run time, never imported) or the streak passes
//!   [`Budget::max_back_to_back`], it hands the rest to the runner's system thread, as NDIS
//!   drivers do when a DPC's budget runs out: the DPC marks the work as the thread's, takes back
//!   a queued runner DPC and sets the thread's `KEVENT`. The thread polls the same executor in
//!   slices, each one budget at `DISPATCH_LEVEL` (`KeRaiseIrql`: the tasks may rely on running
//!   there) followed by a return to `PASSIVE_LEVEL`, where it can be preempted: the processor's
//!   DPC streak ends, its other threads and DPCs run, and the work still goes on whenever the
//!   processor has nothing better to do. While the thread owns the work, wakes only queue their
//!   tasks, with neither a DPC nor the event (the thread looks at the run queue again before it
//!   hands back; a runner DPC that starts anyway returns at once); once the run queue is empty
//!   the thread hands the work back, and the next wake queues the DPC.
//! - Why not a one-shot `KTIMER` "1 ms ahead" (the first design): a timer fires on a clock tick,
//!   15.625 ms apart on Windows by default, so under sustained load the runner worked 2 ms and
//!   then slept up to 15.6 ms (the echo driver with 1,000 connections on the host kernel: 9,000
//!   round trips/s, against 73,000 for the passive runner and 77,000 with the thread). A work
//!   item would need a device object.
//! - One poller at a time, mostly: the hand-off is a flag, not a lock, so a runner DPC that had
//!   already started when the DPC of another processor handed off may still be polling while the
//!   thread starts. The executor allows several pollers at once (and a `KDPC` queued while it
//!   runs runs again, possibly on another processor), so the overlap is safe; it only lasts one
//!   budget.
//! - Passive: the system thread waits on a synchronization `KEVENT` that wakes set, and polls at
//!   `PASSIVE_LEVEL` until the run queue is empty; while it polls, wakes only queue their tasks
//!   (no `KeSetEvent`), and it looks at the queue once more before it waits again. For work that
//!   must run there, and for kernels whose DPCs never run (Wine).

use core::ffi::c_void;
use core::future::Future;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use core::time::Duration;

use wsk_sys::{
    DISPATCH_LEVEL, Executive, FALSE, HANDLE, KDPC, KEVENT, KeDelayExecutionThread,
    KeFlushQueuedDpcs, KeGetCurrentIrql, KeGetCurrentProcessorNumberEx, KeInitializeDpc,
    KeInitializeEvent, KeInsertQueueDpc, KeLowerIrql, KeRaiseIrql, KeRemoveQueueDpc, KeSetEvent,
    KeWaitForSingleObject, KernelMode, NT_SUCCESS, NTSTATUS, NotificationEvent,
    ObReferenceObjectByHandle, ObfDereferenceObject, PASSIVE_LEVEL, PVOID, PsCreateSystemThread,
    PsTerminateSystemThread, STATUS_SUCCESS, SynchronizationEvent, THREAD_ALL_ACCESS, ZwClose,
};

use crate::kernel::{KernelCell, resolve_should_yield_processor, should_yield_processor};
use crate::raw::{
    Executor, JoinHandle, PassiveQueue, PassiveWork, Pender, Route, SpawnError, TaskPool, WakeRoute,
};
use crate::time::BudgetDeadline;
use crate::timer::TimerQueue;

/// Where a [`Runner`] polls its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    /// In a DPC at `DISPATCH_LEVEL`, queued by wakes; under sustained load (past
    /// [`Budget::max_back_to_back`]) on the runner's system thread, still at `DISPATCH_LEVEL`,
    /// one budget at a time. Not under Wine (its DPCs never run).
    Dpc,
    /// On a system thread at `PASSIVE_LEVEL`, woken by a `KEVENT`.
    Passive,
}

/// How much one run of the runner may do before giving the CPU back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Tasks polled per run (at least one: 0 counts as 1).
    pub max_polls: usize,
    /// Time per run, on the precise clock, counted from the end of the run's first poll and
    /// checked after each poll (one slow poll can exceed it). A run of one task, the common
    /// case (one wake between runs), never reads the clock.
    pub max_time: Duration,
    /// DPC runner: longest its DPC may run back to back on one processor (run after run, the
    /// processor never dropping below `DISPATCH_LEVEL`) before the rest of the work is handed
    /// to the runner's system thread, so that the processor's threads run. Measured on the
    /// precise clock, like `max_time`. Where the kernel has `KeShouldYieldProcessor`, the
    /// runner also hands off whenever it says so.
    /// `Duration::MAX`: only `KeShouldYieldProcessor` decides.
    pub max_back_to_back: Duration,
}

impl Budget {
    /// 64 polls or 100 µs per run, the usual guidance for a DPC; at most 2 ms back to back on a
    /// processor (a fraction of a scheduling quantum; far below the DPC watchdogs).
    pub const DEFAULT: Self = Self {
        max_polls: 64,
        max_time: Duration::from_micros(100),
        max_back_to_back: Duration::from_millis(2),
    };
}

/// Processors whose back-to-back streaks are tracked apart (more share slots, which only makes
/// the runner yield early).
const STREAK_SLOTS: usize = 64;

// One bit per slot in `Runner::running_streaks`.
const _: () = assert!(STREAK_SLOTS <= u64::BITS as usize);

/// Why [`Runner::start`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartError {
    /// The runner is running (or starting, or shutting down): `start` may only follow `new`
    /// or a finished [`Runner::shutdown`].
    AlreadyStarted,
    /// `PsCreateSystemThread` or `ObReferenceObjectByHandle` failed with this NTSTATUS (the
    /// runner's system thread, which both kinds have).
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
/// Tasks of one runner can run on several processors at once. A task is never polled on two
/// processors at the same time (its state word makes the poll exclusive), but two different
/// tasks of a [`RunnerKind::Dpc`] runner can be: a runner DPC queued again while it runs may
/// run on another processor beside it, and during a hand-off the runner's thread may start
/// polling while a DPC still finishes its budget. Completion routines and other DPCs run
/// concurrently with both kinds. So state that tasks share must be `Sync` and synchronised:
/// atomics, or [`crate::sync`]'s [`SpinMutex`](crate::sync::SpinMutex) (short sections,
/// `DISPATCH_LEVEL`), [`Mutex`](crate::sync::Mutex) (held across `.await`),
/// [`Channel`](crate::sync::Channel) and [`Notify`](crate::sync::Notify); `static mut` or a
/// `Cell` behind an `unsafe impl Sync` is a data race. A [`RunnerKind::Passive`] runner polls
/// on its one thread only, but its tasks still share state with completion routines and with
/// the tasks of other runners, so the same rule holds.
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
    /// Instances of the DPC routine that may still run (DPC kind): each counted from before it
    /// is queued (`KeInsertQueueDpc`) until its routine's last act, and uncounted when the
    /// queueing fails or shutdown takes it back. See `shutdown`.
    dpc_instances: AtomicUsize,
    /// Set by shutdown once every task is dropped: no DPC instance is queued from then on.
    dpcs_closed: AtomicBool,
    /// What a wake that made the run queue non-empty does, decided with one load for both
    /// kinds: queue the DPC, nothing (the runner's thread polls), or set `wake_event` (the
    /// passive runner's thread waits); see `raw::WakeRoute` for the handshake.
    wake_route: WakeRoute,
    /// Per processor (modulo [`STREAK_SLOTS`]): precise time (`wsk_sys::query_precise_time`)
    /// at which the runner's DPC began running back to back there; 0 when it is not.
    streaks: [AtomicU64; STREAK_SLOTS],
    /// Bit `i` set while `streaks[i]` may be non-zero: a DPC run that ends with nothing left,
    /// the common case, finds no streak to end with one load, without asking which processor
    /// it is on. Set by the processor that starts a streak, after the slot; cleared by the one
    /// that ends it, after the slot. Processors that share a slot may clear each other's bit:
    /// a streak left unreset then only makes the runner hand off early, as sharing a slot does.
    running_streaks: AtomicU64,
    /// Wakes the runner's thread: set by wakes while the passive runner's thread waits
    /// ([`Route::ThreadWaiting`]), by the DPC's hand-off, by work handed to `PASSIVE_LEVEL` and
    /// by shutdown; a synchronization event.
    wake_event: KernelCell<KEVENT>,
    /// Set once the executor is closed and every task dropped; a notification event.
    drained_event: KernelCell<KEVENT>,
    /// The runner's thread object, referenced until shutdown waited for it.
    thread: AtomicPtr<c_void>,
    /// Tells the runner's thread to exit.
    stop_thread: AtomicBool,
    /// Work its tasks handed to `PASSIVE_LEVEL` ([`crate::run_at_passive`]), run by the
    /// runner's thread; closed by the thread as it exits.
    passive_work: PassiveQueue,
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
            dpc_instances: AtomicUsize::new(0),
            dpcs_closed: AtomicBool::new(false),
            wake_route: WakeRoute::new(Route::Dpc),
            streaks: [const { AtomicU64::new(0) }; STREAK_SLOTS],
            running_streaks: AtomicU64::new(0),
            wake_event: KernelCell::zeroed(),
            drained_event: KernelCell::zeroed(),
            thread: AtomicPtr::new(ptr::null_mut()),
            stop_thread: AtomicBool::new(false),
            passive_work: PassiveQueue::new(),
        }
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

    /// Starts polling: initialises the runner's kernel objects and creates its system thread
    /// (the passive runner's poller; the DPC runner's hand-off under sustained load). Tasks
    /// already spawned run now.
    ///
    /// Restartable: after [`shutdown`](Self::shutdown) has returned, `start` runs the runner
    /// again, of either kind, as a new one (its task pools are reused; spawns fail with
    /// [`SpawnError::Closed`] only between the shutdown and the next start). A driver that is
    /// loaded, unloaded and loaded again in one address space (the host kernel's lifecycle
    /// tests) keeps its `static` runners.
    ///
    /// ```ignore
    /// RUNNER.start(RunnerKind::Dpc)?;
    /// RUNNER.shutdown();
    /// RUNNER.start(RunnerKind::Passive)?;              // a new run; TASKS are reused
    /// RUNNER.spawn(&TASKS, serve())?;
    /// ```
    ///
    /// # Errors
    /// [`StartError::AlreadyStarted`] while the runner runs (started and not shut down);
    /// [`StartError::Thread`] if the thread could not be created (the runner is then not
    /// running: [`shutdown`](Self::shutdown) drops the tasks spawned meanwhile, after which
    /// `start` may be tried again).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn start(&'static self, kind: RunnerKind) -> Result<(), StartError> {
        debug_assert_eq!(
            KeGetCurrentIrql(),
            PASSIVE_LEVEL,
            "Runner::start needs PASSIVE_LEVEL"
        );
        let restarting =
            match self
                .state
                .compare_exchange(NEW, STARTING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => false,
                Err(STOPPED) => {
                    if self
                        .state
                        .compare_exchange(STOPPED, STARTING, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                    {
                        return Err(StartError::AlreadyStarted);
                    }
                    true
                }
                Err(_) => return Err(StartError::AlreadyStarted),
            };
        if restarting {
            self.reset_after_shutdown();
        }
        // SAFETY: PASSIVE_LEVEL (checked above); resolves the clock the DPC budget is measured on.
        unsafe { wsk_sys::init_precise_clock() };
        let context: PVOID = ptr::from_ref(self).cast_mut().cast();
        // The objects live in this 'static runner and are not in use before `start`.
        // SAFETY: as above; the DPC's context is the runner, which `runner_dpc` expects.
        unsafe { KeInitializeDpc(self.dpc.get(), Some(runner_dpc), context) };
        // SAFETY: as above.
        unsafe { KeInitializeEvent(self.wake_event.get(), SynchronizationEvent, FALSE) };
        // SAFETY: as above.
        unsafe { KeInitializeEvent(self.drained_event.get(), NotificationEvent, FALSE) };
        self.timers.init();
        resolve_should_yield_processor();
        self.executor
            .core()
            .set_timer_queue(ptr::from_ref(&self.timers).cast());
        self.kind.store(
            match kind {
                RunnerKind::Dpc => KIND_DPC,
                RunnerKind::Passive => KIND_PASSIVE,
            },
            Ordering::Release,
        );
        // Before the context is set, so before any wake reads it: the passive runner's thread
        // is about to wait for its first wake.
        self.wake_route.set(match kind {
            RunnerKind::Dpc => Route::Dpc,
            RunnerKind::Passive => Route::ThreadWaiting,
        });
        if let Err(status) = self.start_thread() {
            return Err(StartError::Thread(status));
        }
        // SAFETY: `pend` expects a 'static Runner whose kernel objects are initialised: done.
        unsafe { self.executor.set_context(ptr::from_ref(self).cast()) };
        self.state.store(STARTED, Ordering::Release);
        if self.executor.has_queued() {
            self.executor.core().pend();
        }
        Ok(())
    }

    /// Makes a shut-down runner new again, before `start` initialises its kernel objects:
    /// wakes are left queued (null context) until `start` sets the context, the executor is
    /// reopened, and the DPC and thread flags that shutdown set are cleared. Shutdown left no
    /// task, no queued DPC of ours and no thread, so nothing else touches these.
    fn reset_after_shutdown(&self) {
        // SAFETY: a null context makes `pend` leave wakes queued (see `pend`).
        unsafe { self.executor.set_context(ptr::null()) };
        let reopened = self.executor.reopen();
        debug_assert!(reopened, "shutdown returned with tasks left");
        debug_assert_eq!(self.dpc_instances.load(Ordering::Acquire), 0);
        debug_assert!(self.thread.load(Ordering::Acquire).is_null());
        self.dpcs_closed.store(false, Ordering::SeqCst);
        self.wake_route.set(Route::Dpc);
        self.stop_thread.store(false, Ordering::Release);
        for streak in &self.streaks {
            streak.store(0, Ordering::Relaxed);
        }
        self.running_streaks.store(0, Ordering::Relaxed);
        self.passive_work.open();
    }

    /// Queues `work` for the runner's thread (see [`crate::run_at_passive`]) and wakes it;
    /// false once the thread stopped taking work.
    ///
    /// # Safety
    /// As [`crate::run_at_passive`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub(crate) unsafe fn queue_passive_work(&self, work: core::ptr::NonNull<PassiveWork>) -> bool {
        // SAFETY: forwarded from the caller.
        if !unsafe { self.passive_work.push(work) } {
            return false;
        }
        // SAFETY: the queue is open only while the thread runs, so the event is initialised;
        // KeSetEvent with Wait FALSE is fine at DISPATCH_LEVEL.
        unsafe { KeSetEvent(self.wake_event.get(), 0, FALSE) };
        true
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
                Some(runner_thread),
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
    /// A future (or output) too big for the pool's slots does not compile; the error names
    /// its size and the slot size, and rustc's note points at the line that called `spawn`:
    /// "a task of 4136 bytes (its future, or its output if larger) does not fit the pool's
    /// 2048-byte slots: spawn it into a `TaskPool<4136, N>` or larger".
    ///
    /// ```compile_fail,E0080
    /// use wsk_executor::{Budget, Runner, TaskPool};
    /// static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    /// static TASKS: TaskPool<64, 1> = TaskPool::new();
    /// let state = [0_u8; 100];
    /// // error: a task of 10? bytes (...) does not fit the pool's 64-byte slots
    /// let _ = RUNNER.spawn(&TASKS, async move { core::hint::black_box(state) });
    /// ```
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
        // Checked here (as well as in the pool) so that the error's note names our caller.
        const { crate::raw::SpawnCheck::<F, SIZE>::FITS };
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
    /// runner's DPCs, timers and thread are quiescent. [`start`](Self::start) may then run it
    /// again. A second call returns at once.
    ///
    /// What "quiescent" covers, exactly:
    /// - The runner's DPC: every instance is counted from before it is queued until the last
    ///   act of its routine, so when the count is zero none is queued,
    ///   dequeued-but-not-yet-called or running, and none can be queued again (wakes after the
    ///   drain queue nothing). Shutdown takes back what is still queued (`KeRemoveQueueDpc`) and
    ///   waits, at `PASSIVE_LEVEL`, polling with `KeDelayExecutionThread`, for the count to
    ///   reach zero.
    /// - The runner's thread (both kinds): told to exit, then waited for on its thread object
    ///   (signalled once it has terminated), after the DPC's instances, which may still hand
    ///   work to it.
    /// - The sleep timer's DPC: a count of routines inside (entry to last act), likewise waited
    ///   for after the `KTIMER` is cancelled.
    /// - What no counter can cover, the few instructions of a routine after its decrement (its
    ///   return to the kernel): `KeFlushQueuedDpcs`, called last, guarantees that every DPC
    ///   queued before the call, one whose routine is still running included, has run to
    ///   completion when it returns (its WDK page).
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
        if self.kind() == RunnerKind::Dpc {
            self.stop_dpcs();
        }
        self.stop_runner_thread();
        self.timers.wait_for_dpc();
        // Last: a DPC of ours still queued (none should be) runs to completion first.
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() };
        debug_assert_eq!(self.timers.pending(), 0, "a sleep outlived its task");
        self.state.store(STOPPED, Ordering::Release);
    }

    /// Stops the DPC kind's DPC: no instance is queued from now on, a queued one is taken back,
    /// and it waits until every counted instance has run its routine to the end.
    fn stop_dpcs(&self) {
        self.dpcs_closed.store(true, Ordering::SeqCst);
        // SAFETY: an initialised DPC in the 'static runner.
        if unsafe { KeRemoveQueueDpc(self.dpc.get()) } != FALSE {
            self.dpc_instances.fetch_sub(1, Ordering::AcqRel);
        }
        wait_until_zero(&self.dpc_instances);
    }

    /// Queues the runner's DPC (counted), unless shutdown closed the DPCs.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    fn queue_dpc(&self) {
        // Counted first: shutdown either sees the count or we see its `dpcs_closed`.
        self.dpc_instances.fetch_add(1, Ordering::SeqCst);
        if self.dpcs_closed.load(Ordering::SeqCst) {
            self.dpc_instances.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        // SAFETY: initialised DPC; queueing an already queued DPC is a no-op (FALSE), queueing a
        // running one runs it again.
        let queued = unsafe { KeInsertQueueDpc(self.dpc.get(), ptr::null_mut(), ptr::null_mut()) };
        if queued == FALSE {
            // Already queued: that instance is counted already.
            self.dpc_instances.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// After a run of the DPC on this processor that left work (its own, or queued by a wake
    /// during the run, which queued the DPC again): keeps going (queues the DPC again if the
    /// budget left work), or, once the DPC has run back to back here long enough, hands the
    /// work to the runner's thread so the processor can drop below `DISPATCH_LEVEL`.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL`.
    #[cold]
    #[inline(never)]
    fn continue_streak(&self, work_remains: bool) {
        let slot = current_streak_slot();
        let streak = &self.streaks[slot];
        // The precise clock (100 ns units): interrupt time moves only once per clock tick,
        // far coarser than `max_back_to_back`.
        let now = wsk_sys::query_precise_time().max(1);
        let began = match streak.load(Ordering::Relaxed) {
            0 => {
                streak.store(now, Ordering::Relaxed);
                self.running_streaks
                    .fetch_or(1_u64 << slot, Ordering::Relaxed);
                now
            }
            ticks => ticks,
        };
        let limit =
            u64::try_from(self.budget.max_back_to_back.as_nanos() / 100).unwrap_or(u64::MAX);
        let hand_off = should_yield_processor() == Some(true) || now.saturating_sub(began) >= limit;
        if hand_off {
            self.end_streak_in(slot);
            self.hand_off_to_thread();
        } else if work_remains {
            self.queue_dpc();
        }
    }

    /// After a run of the DPC that left nothing, while some processor's streak runs: ends this
    /// processor's streak, if it has one (unless someone else queues the DPC here, the
    /// processor drains).
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL`.
    #[cold]
    #[inline(never)]
    fn end_streak(&self) {
        self.end_streak_in(current_streak_slot());
    }

    /// Ends the streak of slot `slot`: the slot first, then its bit (see `running_streaks`).
    fn end_streak_in(&self, slot: usize) {
        self.streaks[slot].store(0, Ordering::Relaxed);
        self.running_streaks
            .fetch_and(!(1_u64 << slot), Ordering::Relaxed);
    }

    /// Hands the DPC runner's work to its thread: from now on wakes leave their tasks to the
    /// thread (which polls until the queue is empty), a runner DPC queued by a wake during the
    /// run (here, to run next) is taken back, and the thread's event wakes the thread.
    ///
    /// # IRQL
    /// `DISPATCH_LEVEL`.
    fn hand_off_to_thread(&self) {
        self.wake_route.set(Route::ThreadPolling);
        // SAFETY: initialised DPC in the 'static runner.
        if unsafe { KeRemoveQueueDpc(self.dpc.get()) } != FALSE {
            self.dpc_instances.fetch_sub(1, Ordering::AcqRel);
        }
        // SAFETY: initialised event; KeSetEvent with Wait FALSE is fine at DISPATCH_LEVEL.
        unsafe { KeSetEvent(self.wake_event.get(), 0, FALSE) };
    }

    /// The DPC runner's thread, once woken: while it owns the work, polls in slices of one
    /// budget at `DISPATCH_LEVEL`, dropping to `PASSIVE_LEVEL` (preemptible) between them; once
    /// the run queue is empty, hands the work back to the DPC.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    fn poll_handed_off_work(&self) {
        while self.wake_route.get() == Route::ThreadPolling {
            // SAFETY: PASSIVE_LEVEL, raised to DISPATCH_LEVEL (not lower) and lowered right
            // after this slice, as the DPC runner's tasks expect DISPATCH_LEVEL.
            let previous = unsafe { KeRaiseIrql(DISPATCH_LEVEL) };
            let work_remains = self.run_once();
            // SAFETY: the IRQL the matching KeRaiseIrql returned.
            unsafe { KeLowerIrql(previous) };
            // Between slices, at PASSIVE_LEVEL: work the tasks handed over waits no longer.
            self.passive_work.run_all(false);
            if work_remains || self.executor.has_queued() {
                continue;
            }
            // Either a wake that queues a task from now on sees the DPC route and queues the
            // DPC, or we see its task here and queue the DPC for it.
            if self.wake_route.hand_back_to_dpc(&self.executor) {
                self.queue_dpc();
            }
        }
    }

    /// The passive runner's thread, once woken: polls until the run queue is empty, while wakes
    /// leave their tasks to it instead of setting its event (which cost a `KeSetEvent`, and a
    /// wait that returned at once, per wake that found the queue empty while the thread was
    /// busy).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    fn poll_passive(&self) {
        self.wake_route.set(Route::ThreadPolling);
        while self.run_once() {}
    }

    /// Whether the passive runner's thread may wait for its event: it routes wakes to the event
    /// again, then looks at the run queue once more; with tasks queued it polls again at once.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    fn passive_may_wait(&self) -> bool {
        // Either a wake that queues a task from now on sees the waiting route and sets the
        // event, or we see its task here and do not wait.
        self.wake_route.thread_may_wait(&self.executor)
    }

    /// The runner's thread waits for `wake_event`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    fn wait_for_wake_event(&self) {
        // SAFETY: initialised synchronization event; PASSIVE_LEVEL, no timeout.
        unsafe {
            KeWaitForSingleObject(
                self.wake_event.get().cast(),
                Executive,
                KernelMode,
                FALSE,
                ptr::null_mut(),
            );
        }
    }

    fn stop_runner_thread(&self) {
        self.stop_thread.store(true, Ordering::Release);
        // SAFETY: initialised event in the 'static runner.
        unsafe { KeSetEvent(self.wake_event.get(), 0, FALSE) };
        let thread = self.thread.swap(ptr::null_mut(), Ordering::AcqRel);
        if !thread.is_null() {
            // SAFETY: a referenced thread object; waiting at PASSIVE_LEVEL without timeout
            // returns once the thread has terminated.
            unsafe { KeWaitForSingleObject(thread, Executive, KernelMode, FALSE, ptr::null_mut()) };
            // SAFETY: the reference `start_thread` took, given back once.
            unsafe { ObfDereferenceObject(thread) };
        }
    }

    /// Polls once under the budget; signals `drained_event` once the executor is drained.
    fn run_once(&self) -> bool {
        // The precise clock: the interrupt time moves once per tick, far above the budget.
        // Read only when the executor first asks, after the first poll of a batch of more than
        // one task: a batch of one (one wake between runs) never asks, and a clock read costs
        // more than the rest of such a run.
        let mut deadline: Option<BudgetDeadline> = None;
        let report = self.executor.poll(self.budget.max_polls, || {
            deadline
                .get_or_insert_with(|| BudgetDeadline::after(self.budget.max_time))
                .has_passed()
        });
        if self.executor.is_drained() {
            // SAFETY: initialised event; KeSetEvent with Wait FALSE is fine at DISPATCH_LEVEL.
            unsafe { KeSetEvent(self.drained_event.get(), 0, FALSE) };
        }
        report.work_remains
    }
}

/// The runners' [`Pender`]: queues the runner's DPC, or wakes its thread. A wake calls it inline.
/// Plumbing, private to the crate: a runner's tasks are spawned with [`Runner::spawn`].
#[derive(Debug)]
pub(crate) enum RunnerPender {}

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
    // The handshake with the thread's route changes (it hands the work back to the DPC, or is
    // about to wait): either we see the new route, or the thread sees the task we queued.
    match runner.wake_route.for_wake() {
        Route::Dpc => runner.queue_dpc(),
        Route::ThreadWaiting => {
            // SAFETY: initialised event; any IRQL <= DISPATCH_LEVEL.
            unsafe { KeSetEvent(runner.wake_event.get(), 0, FALSE) };
        }
        // The thread looks at the queue again before it waits or hands the work back.
        Route::ThreadPolling => {}
    }
}

/// This processor's slot in `Runner::streaks`.
///
/// # IRQL
/// Any.
fn current_streak_slot() -> usize {
    // SAFETY: a null out-pointer is allowed; any IRQL.
    let cpu = unsafe { KeGetCurrentProcessorNumberEx(ptr::null_mut()) } as usize;
    cpu % STREAK_SLOTS
}

/// Waits at `PASSIVE_LEVEL` until `count` is zero, polling every millisecond.
fn wait_until_zero(count: &AtomicUsize) {
    while count.load(Ordering::Acquire) != 0 {
        let mut interval: i64 = -10_000; // 1 ms, relative
        // SAFETY: PASSIVE_LEVEL (shutdown's contract); a valid interval.
        unsafe { KeDelayExecutionThread(KernelMode, FALSE, &raw mut interval) };
    }
}

/// The DPC runner's routine: polls under the budget, then, if work is left, continues or hands
/// off (see [`Runner::continue_streak`]), or else ends this processor's back-to-back streak if
/// it has one; does nothing while the thread owns the work. Its last act uncounts this
/// instance.
unsafe extern "system" fn runner_dpc(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the DPC was initialised with the 'static runner as context.
    let runner = unsafe { &*context.cast::<Runner>() };
    if runner.wake_route.get() == Route::Dpc {
        let work_remains = runner.run_once();
        // (A poller of another processor holding the ready list counts as work left: at
        // worst a streak starts early, as any other DPC runs back to back here.)
        if work_remains || runner.executor.may_have_queued() {
            runner.continue_streak(work_remains);
        } else if runner.running_streaks.load(Ordering::Relaxed) != 0 {
            runner.end_streak();
        }
    }
    runner.dpc_instances.fetch_sub(1, Ordering::Release);
}

/// The runner's system thread: polls the passive runner's tasks, or the DPC runner's once its
/// DPC handed them off.
unsafe extern "system" fn runner_thread(context: PVOID) {
    // SAFETY: the thread was created with the 'static runner as context.
    let runner = unsafe { &*context.cast::<Runner>() };
    if runner.kind.load(Ordering::Acquire) == KIND_PASSIVE {
        loop {
            if runner.passive_may_wait() {
                runner.wait_for_wake_event();
            }
            runner.passive_work.run_all(false);
            runner.poll_passive();
            if runner.stop_thread.load(Ordering::Acquire) {
                break;
            }
        }
    } else {
        loop {
            runner.wait_for_wake_event();
            runner.passive_work.run_all(false);
            runner.poll_handed_off_work();
            if runner.stop_thread.load(Ordering::Acquire) {
                break;
            }
        }
    }
    // Whatever was queued up to now runs; later pushes fail (the task sees NotRunning).
    runner.passive_work.run_all(true);
    // SAFETY: ends this system thread; PASSIVE_LEVEL.
    unsafe { PsTerminateSystemThread(STATUS_SUCCESS) };
}
