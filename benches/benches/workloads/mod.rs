//! The two executor workloads, each in three implementations that do the same work:
//!
//! - `ours`: `wsk_executor::raw` (the platform-neutral core the DPC and passive runners drive),
//!   with a pender type that only records the call, polled by hand on this thread.
//! - `embassy`: `embassy_executor::raw::Executor` (the `platform-std` build, without its thread
//!   executor so that we can supply the `__pender`), polled by hand the same way.
//! - `floor`: a hand-written callback chain, no futures: a struct with a fn pointer and state;
//!   "wake" pushes it on a queue, "poll" pops it and calls the fn pointer. Its queue is the same
//!   multi-producer, take-all stack (one compare-exchange per push, one swap per drain) that a
//!   driver needs when completions arrive on any CPU, so it is the floor of a thread-safe design,
//!   not of a single-threaded one.
//!
//! Workloads:
//! - wake+poll: one task awaits a manual future that is never ready. One step wakes the waker
//!   the future registered, runs the queue once, and the future returns `Pending` again (and
//!   re-registers: a clone only when the waker changed, as `AtomicWaker` does).
//! - spawn: one step spawns a task from a static pool of [`POOL_SLOTS`] slots, runs the queue
//!   once (the task stores its argument and finishes), and the slot is free for reuse. Our
//!   task's `JoinHandle` is dropped at once (detached), as embassy has no handle; the
//!   `ours-join` variant keeps the handle and takes the output after the run instead.
//!
//! - many woken (ours only, callgrind only): [`MANY_TASKS`] tasks await manual futures; one step
//!   wakes every one of them and then polls with a budget of [`MANY_BUDGET`] until the queue is
//!   empty, as a DPC runner under load does. Its cost per task run shows whether the run queue's
//!   cost per task stays flat however many tasks are queued.
//!
//! Each `*_wake_poll` / `*_spawn` function sets the workload up (allocation is allowed there:
//! executors and pools are leaked to get `'static` references) and returns the step closure.
//! Every implementation is used single-threaded by the benchmarks.

use std::cell::UnsafeCell;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

/// Slots in every spawn benchmark's pool.
pub const POOL_SLOTS: usize = 8;

/// The run budget our executor's `poll` gets: more than one step ever queues.
const BUDGET: usize = 64;

/// Tasks the many-woken workload wakes per step.
pub const MANY_TASKS: usize = 1_000;

/// The budget the many-woken workload polls with: far fewer than it wakes.
pub const MANY_BUDGET: usize = 64;

/// Pender calls, summed over all three implementations: the pender only records.
static PENDS: AtomicU64 = AtomicU64::new(0);

/// Records a pend with a plain load and store (no locked instruction: the benchmarks are
/// single-threaded, and a real pender's cost is not what is measured).
fn record_pend() {
    PENDS.store(PENDS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Pender calls so far.
#[must_use]
pub fn pends() -> u64 {
    PENDS.load(Ordering::Relaxed)
}

/// Where the wake+poll task's manual future keeps its waker, and what it counts.
pub struct WakerSlot {
    waker: UnsafeCell<Option<Waker>>,
    polls: AtomicU64,
}

// SAFETY: a benchmark uses its slot from one thread only: the future registers during a poll
// and the step wakes between polls, on the same thread, so the cell is never accessed
// concurrently.
unsafe impl Sync for WakerSlot {}

impl WakerSlot {
    fn leak() -> &'static Self {
        Box::leak(Box::new(Self {
            waker: UnsafeCell::new(None),
            polls: AtomicU64::new(0),
        }))
    }

    /// Stores `waker` unless the stored one already wakes the same task.
    fn register(&self, waker: &Waker) {
        // SAFETY: single-threaded use (see the Sync impl); no other reference to the cell's
        // contents exists while the future is being polled.
        let slot = unsafe { &mut *self.waker.get() };
        match slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        self.polls
            .store(self.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Wakes the registered waker (by reference: it stays registered).
    fn wake(&self) {
        // SAFETY: single-threaded use; the task is not being polled while the step wakes it.
        let slot = unsafe { &*self.waker.get() };
        slot.as_ref()
            .expect("the task registered no waker")
            .wake_by_ref();
    }

    /// Polls of the manual future so far.
    #[must_use]
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

/// The manual future: never ready, registers its waker on every poll.
struct Manual {
    slot: &'static WakerSlot,
}

impl Future for Manual {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.slot.register(cx.waker());
        Poll::Pending
    }
}

/// The wake+poll task: awaits the manual future (for ever).
async fn waiter(slot: &'static WakerSlot) {
    Manual { slot }.await;
}

/// Where spawned tasks store their argument.
static SINK: AtomicU64 = AtomicU64::new(0);

/// The spawn workload's task: stores its argument and finishes.
async fn job(value: u64) {
    SINK.store(value, Ordering::Relaxed);
}

/// The last value a spawned task stored.
#[must_use]
pub fn sink() -> u64 {
    SINK.load(Ordering::Relaxed)
}

/// `wsk_executor::raw`.
pub mod ours {
    use super::{
        BUDGET, Context, Future, MANY_BUDGET, MANY_TASKS, Poll, WakerSlot, black_box, job, pin,
        record_pend, waiter,
    };
    use wsk_executor::raw::{Executor, ExecutorCore, Pender, TaskPool};

    /// Slot size of our pools: enough for both tasks.
    const SLOT: usize = 64;

    /// The bench pender: records the call. A [`Pender`] type, as the runners' is, so that a
    /// wake calls it inline (embassy's `__pender` is a static symbol too).
    enum BenchPender {}

    impl Pender for BenchPender {
        unsafe fn pend(_: &ExecutorCore) {
            record_pend();
        }
    }

    fn leak_executor() -> &'static Executor<BenchPender> {
        Box::leak(Box::new(Executor::with_pender()))
    }

    /// Sets up the wake+poll workload; returns its step and the slot it counts polls in.
    ///
    /// # Panics
    /// If the spawn fails (it cannot: the pool is fresh).
    pub fn wake_poll() -> (impl FnMut(), &'static WakerSlot) {
        let executor = leak_executor();
        let pool: &'static TaskPool<SLOT, 1> = Box::leak(Box::new(TaskPool::new()));
        let slot = WakerSlot::leak();
        drop(pool.spawn(executor, waiter(slot)).expect("spawn"));
        executor.poll(BUDGET, || false);
        let step = move || {
            slot.wake();
            let report = executor.poll(BUDGET, || false);
            debug_assert_eq!(report.polled, 1);
        };
        (step, slot)
    }

    /// Sets up the many-woken workload; returns its step (wake [`MANY_TASKS`] tasks, then
    /// poll with a budget of [`MANY_BUDGET`] until nothing is queued) and the tasks' slots.
    ///
    /// # Panics
    /// If a spawn fails (it cannot: the pool has a slot for every task).
    pub fn many_woken() -> (impl FnMut(), &'static [&'static WakerSlot]) {
        let executor = leak_executor();
        let pool: &'static TaskPool<SLOT, MANY_TASKS> = Box::leak(Box::new(TaskPool::new()));
        let slots: &'static [&'static WakerSlot] =
            Box::leak((0..MANY_TASKS).map(|_| WakerSlot::leak()).collect());
        for slot in slots {
            drop(pool.spawn(executor, waiter(slot)).expect("spawn"));
        }
        while executor.poll(MANY_BUDGET, || false).work_remains {}
        let step = move || {
            for slot in slots {
                slot.wake();
            }
            let mut polled = 0;
            loop {
                let report = executor.poll(MANY_BUDGET, || false);
                polled += report.polled;
                if !report.work_remains {
                    break;
                }
            }
            debug_assert_eq!(polled, MANY_TASKS);
        };
        (step, slots)
    }

    /// Sets up the spawn workload (detached tasks); returns its step.
    ///
    /// # Panics
    /// The step panics if the pool is full, which would mean a slot was not reused.
    pub fn spawn() -> impl FnMut() {
        let executor = leak_executor();
        let pool: &'static TaskPool<SLOT, { super::POOL_SLOTS }> =
            Box::leak(Box::new(TaskPool::new()));
        let mut value = 0_u64;
        move || {
            value += 1;
            drop(pool.spawn(executor, job(black_box(value))).expect("spawn"));
            let report = executor.poll(BUDGET, || false);
            debug_assert_eq!(report.polled, 1);
        }
    }

    /// Sets up the spawn workload keeping the `JoinHandle` and taking the output; returns its
    /// step.
    ///
    /// # Panics
    /// The step panics if the pool is full or the task did not finish in one run.
    pub fn spawn_join() -> impl FnMut() {
        let executor = leak_executor();
        let pool: &'static TaskPool<SLOT, { super::POOL_SLOTS }> =
            Box::leak(Box::new(TaskPool::new()));
        let mut value = 0_u64;
        move || {
            value += 1;
            let mut handle = pin!(pool.spawn(executor, job(black_box(value))).expect("spawn"));
            executor.poll(BUDGET, || false);
            let output = handle
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()));
            assert!(matches!(output, Poll::Ready(Ok(()))), "task did not finish");
        }
    }
}

/// `embassy_executor::raw`, its std platform build without the thread executor.
pub mod embassy {
    use super::{Future, WakerSlot, black_box, job, ptr, record_pend, waiter};
    use embassy_executor::raw::{Executor, TaskPool, TaskStorage};

    /// Embassy's pender, found by symbol name: records the call.
    #[unsafe(export_name = "__pender")]
    fn pender(_context: *mut ()) {
        record_pend();
    }

    fn leak_executor() -> &'static Executor {
        Box::leak(Box::new(Executor::new(ptr::null_mut())))
    }

    /// Polls the executor once.
    fn poll(executor: &'static Executor) {
        // SAFETY: the benchmarks poll from one thread, never from the pender (which only
        // records), so `poll` is not re-entered.
        unsafe { executor.poll() };
    }

    /// Spawns the future `make` builds into a leaked storage of its own type.
    fn spawn_leaked<F: Future + 'static>(executor: &'static Executor, make: impl FnOnce() -> F) {
        let storage: &'static TaskStorage<F> = Box::leak(Box::new(TaskStorage::new()));
        let token = storage.spawn(make).expect("a fresh storage is free");
        executor.spawner().spawn(token);
    }

    /// A leaked pool for tasks of the type `make` returns.
    fn leak_pool<F: Future + 'static, const N: usize>(
        _make: &impl Fn(u64) -> F,
    ) -> &'static TaskPool<F, N> {
        Box::leak(Box::new(TaskPool::new()))
    }

    /// Sets up the wake+poll workload; returns its step and the slot it counts polls in.
    ///
    /// # Panics
    /// If the spawn fails (it cannot: the storage is fresh).
    pub fn wake_poll() -> (impl FnMut(), &'static WakerSlot) {
        let executor = leak_executor();
        let slot = WakerSlot::leak();
        spawn_leaked(executor, || waiter(slot));
        poll(executor);
        let step = move || {
            slot.wake();
            poll(executor);
        };
        (step, slot)
    }

    /// Sets up the spawn workload; returns its step.
    ///
    /// # Panics
    /// The step panics if the pool is full, which would mean a slot was not reused.
    pub fn spawn() -> impl FnMut() {
        let executor = leak_executor();
        let spawner = executor.spawner();
        let pool = leak_pool::<_, { super::POOL_SLOTS }>(&job);
        let mut value = 0_u64;
        move || {
            value += 1;
            let token = pool.spawn(|| job(black_box(value))).expect("spawn");
            spawner.spawn(token);
            poll(executor);
        }
    }
}

/// The floor: a hand-written callback chain, no futures.
pub mod floor {
    use super::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, SINK, ptr, record_pend};

    /// A callback: a fn pointer and its state, linked into the queue through `next`.
    pub struct Callback {
        run: fn(&'static Callback),
        state: AtomicU64,
        next: AtomicPtr<Callback>,
        /// What `run` works on besides `state`: the wake chain's armed slot, or the pool slot.
        context: AtomicPtr<()>,
    }

    impl Callback {
        const fn new(run: fn(&'static Callback)) -> Self {
            Self {
                run,
                state: AtomicU64::new(0),
                next: AtomicPtr::new(ptr::null_mut()),
                context: AtomicPtr::new(ptr::null_mut()),
            }
        }

        fn set_context<T>(&self, context: &'static T) {
            self.context
                .store(ptr::from_ref(context).cast_mut().cast(), Ordering::Relaxed);
        }
    }

    /// A multi-producer, take-all stack of callbacks, as a driver's completion path needs.
    struct Queue {
        head: AtomicPtr<Callback>,
    }

    impl Queue {
        const fn new() -> Self {
            Self {
                head: AtomicPtr::new(ptr::null_mut()),
            }
        }

        /// "Wake": pushes `callback` and pends if the queue was empty.
        fn push(&self, callback: &'static Callback) {
            let mut head = self.head.load(Ordering::Relaxed);
            loop {
                callback.next.store(head, Ordering::Relaxed);
                match self.head.compare_exchange_weak(
                    head,
                    ptr::from_ref(callback).cast_mut(),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => head = actual,
                }
            }
            if head.is_null() {
                record_pend();
            }
        }

        /// "Poll": takes every queued callback and calls each.
        fn run_all(&self) {
            let mut next = self.head.swap(ptr::null_mut(), Ordering::Acquire);
            // SAFETY: only 'static callbacks are pushed.
            while let Some(callback) = unsafe { next.as_ref() } {
                next = callback.next.load(Ordering::Relaxed);
                (callback.run)(callback);
            }
        }
    }

    /// The wake+poll chain: its queue, the callback, and the slot where the callback re-arms
    /// itself (what the next completion pushes).
    struct WakeChain {
        queue: Queue,
        armed: AtomicPtr<Callback>,
        callback: Callback,
    }

    /// The wake+poll callback: counts, and re-arms itself.
    fn wake_step(callback: &'static Callback) {
        callback.state.store(
            callback.state.load(Ordering::Relaxed) + 1,
            Ordering::Relaxed,
        );
        // SAFETY: this callback's context is its chain's `armed` slot, in a leaked chain.
        let armed = unsafe {
            &*callback
                .context
                .load(Ordering::Relaxed)
                .cast::<AtomicPtr<Callback>>()
        };
        armed.store(ptr::from_ref(callback).cast_mut(), Ordering::Release);
    }

    /// Sets up the wake+poll workload; returns its step and the callback's run count.
    pub fn wake_poll() -> (impl FnMut(), &'static AtomicU64) {
        let chain: &'static WakeChain = Box::leak(Box::new(WakeChain {
            queue: Queue::new(),
            armed: AtomicPtr::new(ptr::null_mut()),
            callback: Callback::new(wake_step),
        }));
        chain.callback.set_context(&chain.armed);
        chain.queue.push(&chain.callback);
        chain.queue.run_all();
        let step = move || {
            // SAFETY: the armed pointer is the chain's 'static callback (set by its first run).
            let callback = unsafe { &*chain.armed.load(Ordering::Acquire) };
            chain.queue.push(callback);
            chain.queue.run_all();
        };
        (step, &chain.callback.state)
    }

    /// The spawn workload's static pool: its queue and slots (busy flag and callback each).
    struct Pool {
        queue: Queue,
        next_hint: AtomicUsize,
        slots: [(AtomicBool, Callback); super::POOL_SLOTS],
    }

    /// The spawned callback: stores its state and frees its slot.
    fn job_step(callback: &'static Callback) {
        SINK.store(callback.state.load(Ordering::Relaxed), Ordering::Relaxed);
        // SAFETY: a spawned callback's context is its slot's busy flag, in a leaked pool.
        let busy = unsafe {
            &*callback
                .context
                .load(Ordering::Relaxed)
                .cast::<AtomicBool>()
        };
        busy.store(false, Ordering::Release);
    }

    impl Pool {
        fn leak() -> &'static Self {
            let pool: &'static Self = Box::leak(Box::new(Self {
                queue: Queue::new(),
                next_hint: AtomicUsize::new(0),
                slots: std::array::from_fn(|_| (AtomicBool::new(false), Callback::new(job_step))),
            }));
            for (busy, callback) in &pool.slots {
                callback.set_context(busy);
            }
            pool
        }

        /// Claims a free slot, writes the callback's state and pushes it; false if full.
        fn spawn(&'static self, value: u64) -> bool {
            let start = self.next_hint.load(Ordering::Relaxed);
            for index in (start..super::POOL_SLOTS).chain(0..start) {
                let (busy, callback) = &self.slots[index];
                if busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.next_hint
                        .store((index + 1) % super::POOL_SLOTS, Ordering::Relaxed);
                    callback.state.store(value, Ordering::Relaxed);
                    self.queue.push(callback);
                    return true;
                }
            }
            false
        }
    }

    /// Sets up the spawn workload; returns its step.
    ///
    /// # Panics
    /// The step panics if the pool is full, which would mean a slot was not reused.
    pub fn spawn() -> impl FnMut() {
        let pool = Pool::leak();
        let mut value = 0_u64;
        move || {
            value += 1;
            assert!(pool.spawn(super::black_box(value)), "floor pool full");
            pool.queue.run_all();
        }
    }
}
