//! The executor: an intrusive lock-free run queue, the pender that turns a wake into a run, and
//! `poll`, which runs the queued batch under a budget.
//!
//! The queue is a multi-producer stack: a push is one compare-exchange on the head, and the
//! poller takes the whole stack with one swap and reverses it, so tasks run in wake order within
//! a batch. Taking everything at once needs no per-node pop, so there is no ABA hazard. Several
//! CPUs may poll one executor at once (a DPC re-queued while it runs does that): each takes its
//! own batch, and the task state word keeps any task on one CPU at a time.
//!
//! The reversal is what keeps a budget-cut batch fair: its rest goes back on top of the stack,
//! and the next reversal puts it before anything queued after that. Run newest first, tasks
//! queued after the cut would run first, and under sustained load the rest could wait for ever.
//! A batch of one task, the common case, is its own reverse and costs one test.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll, RawWakerVTable};

use super::sync::{AtomicPtr, AtomicUsize, Ordering, loom_const_fn};
use super::task::{
    CANCELLED, CLOSING, DONE, FLAGS, HANDLE, SPAWNED, TaskHeader, WAKE, WakerVTableFor,
    free_slot_with, invariant, run_of, task_of_waker, vtable_of,
};

/// How a wake becomes a run: called with the executor's context (see
/// [`ExecutorCore::set_context`]) after a wake made the run queue non-empty.
///
/// The DPC runner's pender calls `KeInsertQueueDpc`, the passive runner's sets a KEVENT. It is
/// called from wherever the wake happened: any CPU, IRQL <= `DISPATCH_LEVEL`, possibly inside the
/// executor's own poll.
///
/// # Safety
/// The function may assume the context it gets is the one its owner set.
pub type PendFn = unsafe fn(context: *const ());

/// Set in `ExecutorCore::live` once the executor is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// A multi-producer, take-all stack of task headers linked through `run_next`.
struct RunQueue {
    head: AtomicPtr<TaskHeader>,
}

impl RunQueue {
    loom_const_fn! {
        fn new() -> Self {
            Self { head: AtomicPtr::new(ptr::null_mut()) }
        }
    }

    /// Pushes the chain `first ..= last` (linked through `run_next`); true if the queue was empty.
    ///
    /// # Safety
    /// The caller owns every task in the chain, and so their links.
    unsafe fn push_chain(&self, first: NonNull<TaskHeader>, last: NonNull<TaskHeader>) -> bool {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: forwarded.
            match unsafe { self.try_push_chain(first, last, head) } {
                Ok(was_empty) => return was_empty,
                Err(actual) => head = actual,
            }
        }
    }

    /// One attempt at pushing the chain `first ..= last` on top of `head`: whether the queue was
    /// empty, or the head found instead of `head`.
    ///
    /// # Safety
    /// As for [`push_chain`](Self::push_chain).
    #[inline]
    unsafe fn try_push_chain(
        &self,
        first: NonNull<TaskHeader>,
        last: NonNull<TaskHeader>,
        head: *mut TaskHeader,
    ) -> Result<bool, *mut TaskHeader> {
        // SAFETY: the caller owns `last`'s link.
        unsafe { last.as_ref() }
            .run_next
            .store(head, Ordering::Relaxed);
        match self.head.compare_exchange_weak(
            head,
            first.as_ptr(),
            Ordering::Release,
            Ordering::Relaxed,
        ) {
            Ok(_) => Ok(head.is_null()),
            Err(actual) => Err(actual),
        }
    }

    /// Takes every queued task, newest first.
    #[inline]
    fn take_all(&self) -> *mut TaskHeader {
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }
}

/// What one [`ExecutorCore::poll`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Tasks polled (or dropped, when cancelled).
    pub polled: usize,
    /// The budget ran out with tasks still queued: call `poll` again soon (the DPC runner
    /// re-queues its DPC). When false, every task queued meanwhile was pended for (see
    /// [`ExecutorCore::poll`]).
    pub work_remains: bool,
}

/// How a wake becomes a run, known at compile time: an [`Executor`] generic over its pender
/// calls [`pend`](Self::pend) inline from a task's wake instead of through a function pointer.
///
/// The runners' pender queues their DPC or sets their KEVENT; [`FnPender`], the default, calls
/// the [`PendFn`] given to [`Executor::new`] with the executor's context.
pub trait Pender: Sized + 'static {
    /// Called after a wake made the executor's run queue non-empty: from wherever the wake
    /// happened, any CPU, IRQL <= `DISPATCH_LEVEL`, possibly inside the executor's own poll. It
    /// gets the executor, to read its [`context`](ExecutorCore::context) if it needs one.
    ///
    /// # Safety
    /// `executor` is the core of an `Executor<Self>`: the function may assume that its context
    /// is the one the executor's owner set for this pender.
    unsafe fn pend(executor: &ExecutorCore);

    /// The waker vtable of this pender's tasks. Its address identifies a task waker only if it
    /// is a `static` (the runners' is); a promoted constant may have several copies.
    #[doc(hidden)]
    const WAKER_VTABLE: &'static RawWakerVTable = &WakerVTableFor::<Self>::VTABLE;
}

/// The pender of an [`Executor::new`] executor: the [`PendFn`] it was built with, called through
/// its pointer with the executor's context.
#[derive(Debug)]
pub enum FnPender {}

impl Pender for FnPender {
    unsafe fn pend(executor: &ExecutorCore) {
        // SAFETY: an `Executor<FnPender>`'s context is the one set for its function
        // (`set_context`'s contract).
        unsafe { (executor.pend_fn)(executor.context()) };
    }
}

/// The pender for callers that do not know an executor's pender type: calls it through the
/// executor's pointer, right for any executor.
pub(crate) enum ErasedPender {}

impl Pender for ErasedPender {
    unsafe fn pend(executor: &ExecutorCore) {
        executor.pend();
    }
}

/// The function pointer of an executor with a static pender: never called.
unsafe fn no_pend_fn(_: *const ()) {}

/// A task executor whose wakes pend through `P` (see [`Pender`]); [`Executor::new`] makes one
/// that pends through a function pointer. Everything else is its [`ExecutorCore`]'s (it
/// dereferences to it).
///
/// It is platform-neutral: the runners ([`crate::Runner`]) give it a pender and call
/// [`poll`](ExecutorCore::poll) from a DPC or a system thread. Tasks are spawned into it with
/// [`TaskPool::spawn`](super::TaskPool::spawn).
#[repr(transparent)]
pub struct Executor<P: Pender = FnPender> {
    core: ExecutorCore,
    _pender: PhantomData<fn() -> P>,
}

impl Executor<FnPender> {
    loom_const_fn! {
        /// An executor whose wakes call `pend` with the context set by
        /// [`set_context`](ExecutorCore::set_context) (null until then).
        ///
        /// # IRQL
        /// Any (it is a constant initialiser).
        #[must_use]
        pub fn new(pend: PendFn) -> Self {
            Self { core: ExecutorCore::new(FnPender::pend, pend), _pender: PhantomData }
        }
    }
}

impl<P: Pender> Executor<P> {
    loom_const_fn! {
        /// An executor whose wakes call `P::pend`.
        ///
        /// # IRQL
        /// Any (it is a constant initialiser).
        #[must_use]
        pub fn with_pender() -> Self {
            Self { core: ExecutorCore::new(P::pend, no_pend_fn), _pender: PhantomData }
        }
    }

    /// The executor's type-independent part.
    pub(crate) fn core(&self) -> &ExecutorCore {
        &self.core
    }
}

impl<P: Pender> core::ops::Deref for Executor<P> {
    type Target = ExecutorCore;

    fn deref(&self) -> &ExecutorCore {
        &self.core
    }
}

/// An executor's run queue, its pender as a function pointer and context, and the count of live
/// tasks: all of [`Executor`] but the pender's type. Tasks point to it.
pub struct ExecutorCore {
    queue: RunQueue,
    /// Futures not yet finished or dropped, plus the `CLOSED` bit.
    live: AtomicUsize,
    /// The pender through a pointer, for callers that do not know its type: `P::pend`.
    pend: unsafe fn(&ExecutorCore),
    /// The function of [`Executor::new`], which `FnPender::pend` calls.
    pend_fn: PendFn,
    context: AtomicPtr<()>,
    /// Opaque to `raw`: the runner's timer queue, found by timers through a task's waker.
    timer_queue: core::sync::atomic::AtomicPtr<()>,
}

// SAFETY: all state is atomic; `pend` is a plain fn pointer; the context pointer is only handed
// to `pend`, whose owner vouched for it in `set_context`.
unsafe impl Sync for ExecutorCore {}
// SAFETY: as above.
unsafe impl Send for ExecutorCore {}

impl ExecutorCore {
    loom_const_fn! {
        fn new(pend: unsafe fn(&ExecutorCore), pend_fn: PendFn) -> Self {
            Self {
                queue: RunQueue::new(),
                live: AtomicUsize::new(0),
                pend,
                pend_fn,
                context: AtomicPtr::new(ptr::null_mut()),
                timer_queue: core::sync::atomic::AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Sets the context passed to the pender. Call it before spawning the first task.
    ///
    /// # Safety
    /// `context` must be what this executor's pender expects (its [`PendFn`], or its
    /// [`Pender`] if that reads it), valid for as long as any task of the executor can be woken.
    ///
    /// # IRQL
    /// Any.
    pub unsafe fn set_context(&self, context: *const ()) {
        self.context.store(context.cast_mut(), Ordering::Release);
    }

    /// The context set by [`set_context`](Self::set_context).
    #[must_use]
    pub fn context(&self) -> *const () {
        self.context.load(Ordering::Acquire).cast_const()
    }

    pub(crate) fn set_timer_queue(&self, queue: *const ()) {
        self.timer_queue
            .store(queue.cast_mut(), core::sync::atomic::Ordering::Release);
    }

    pub(crate) fn timer_queue(&self) -> *const () {
        self.timer_queue
            .load(core::sync::atomic::Ordering::Acquire)
            .cast_const()
    }

    /// Calls the pender through its pointer.
    pub(crate) fn pend(&self) {
        // SAFETY: `pend` is `P::pend` of the `Executor<P>` this is the core of.
        unsafe { (self.pend)(self) };
    }

    /// Pushes a task whose link the caller owns and pends if the queue was empty, with
    /// `P::pend` inline (`FnPender`'s calls its function pointer).
    ///
    /// # Safety
    /// The caller moved the task's wake count from zero (or claimed it at spawn) and so owns
    /// its link; this is the core of an `Executor<P>`, or `P` is `ErasedPender`.
    #[inline]
    pub(crate) unsafe fn enqueue<P: Pender>(&self, task: NonNull<TaskHeader>) {
        // One attempt inline, with no loop to enter; a contended push retries out of line.
        let head = self.queue.head.load(Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        match unsafe { self.queue.try_push_chain(task, task, head) } {
            // SAFETY: this is an `Executor<P>`'s core, or `P` is `ErasedPender`, which pends
            // any executor (the caller's guarantee).
            Ok(true) => unsafe { P::pend(self) },
            Ok(false) => {}
            // SAFETY: forwarded from the caller.
            Err(_) => unsafe { self.enqueue_contended(task) },
        }
    }

    /// [`enqueue`](Self::enqueue) after its first attempt lost a race.
    ///
    /// # Safety
    /// As for `enqueue`.
    #[cold]
    #[inline(never)]
    unsafe fn enqueue_contended(&self, task: NonNull<TaskHeader>) {
        // SAFETY: forwarded from the caller.
        if unsafe { self.queue.push_chain(task, task) } {
            self.pend();
        }
    }

    /// One attempt at [`try_add_live`](Self::try_add_live): false also when it lost a race.
    #[inline]
    pub(crate) fn try_add_live_once(&self) -> bool {
        let live = self.live.load(Ordering::Relaxed);
        live & CLOSED == 0
            && self
                .live
                .compare_exchange_weak(live, live + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Counts a new task in; fails once the executor is closed.
    pub(crate) fn try_add_live(&self) -> bool {
        let mut live = self.live.load(Ordering::Relaxed);
        loop {
            if live & CLOSED != 0 {
                return false;
            }
            match self.live.compare_exchange_weak(
                live,
                live + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => live = actual,
            }
        }
    }

    /// Tasks whose future is not yet finished or dropped.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.live.load(Ordering::Acquire) & !CLOSED
    }

    /// True once [`close`](Self::close) was called: spawns fail and tasks are dropped when polled.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.live.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closed, and every task's future is dropped: nothing will be queued again.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.live.load(Ordering::Acquire) == CLOSED
    }

    /// True if tasks are queued.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Closes the executor: spawning fails from now on, and every task is woken so that its
    /// next poll drops its future instead. Call [`poll`](Self::poll) (or let the runner do it)
    /// until [`is_drained`](Self::is_drained).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (it wakes tasks, which calls the pender).
    pub fn close(&'static self) {
        self.live.fetch_or(CLOSED, Ordering::SeqCst);
        // Mark and wake every task of ours: a queued or running one is polled again anyway, an
        // idle one (waiting on a never-completing future, say) is queued now, and its poller
        // sees CLOSING and drops it. A spawn that raced with the close either failed or counted
        // itself in `live` before our `fetch_or`, after it published its executor, so we find it
        // here. A task of another executor that a racy read confuses with ours only gets a
        // needless CLOSING (its poller finds its executor open) and a spurious wake.
        super::pool::for_each_task(|task| {
            // SAFETY: `for_each_task` yields headers in 'static pools.
            let header = unsafe { task.as_ref() };
            if ptr::eq(
                header.executor.load(core::sync::atomic::Ordering::Acquire),
                self,
            ) {
                let mut state = header.state.load(Ordering::Relaxed);
                // Only on a live task: a free slot must stay flag-free to be claimed again.
                while state & (SPAWNED | DONE | CLOSING) == SPAWNED {
                    match header.state.compare_exchange_weak(
                        state,
                        state | CLOSING,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(actual) => state = actual,
                    }
                }
                // SAFETY: as above; the erased wake pends through the executor's pointer, right
                // for whichever executor the task has.
                unsafe { super::task::wake_task_erased(task) };
            }
        });
    }

    /// Polls the tasks queued when it is called (one batch, taken off the queue at once) until
    /// that batch is done, `max_polls` tasks were polled, or `should_yield` (asked before each
    /// poll but the first) says the time is up. Tasks left over are queued again and reported in
    /// [`PollReport::work_remains`].
    ///
    /// Tasks queued while the batch runs are left for the next call: the wake that queued the
    /// first of them found the queue empty and called the pender, and the ones after it are
    /// behind it in the same queue. (Looking again here would only take the work that pend
    /// already asked for.) So a caller that polls whenever the pender asks it to, and again
    /// whenever `work_remains`, runs every wake.
    ///
    /// Several CPUs may call this at once on the same executor.
    ///
    /// # IRQL
    /// Whatever the tasks tolerate: `DISPATCH_LEVEL` in the DPC runner, `PASSIVE_LEVEL` in the
    /// passive runner.
    #[inline]
    pub fn poll(&self, max_polls: usize, should_yield: impl FnMut() -> bool) -> PollReport {
        // Usually called because a wake pended: the queue is most likely not empty.
        let Some(newest) = NonNull::new(self.queue.take_all()) else {
            return PollReport {
                polled: 0,
                work_remains: false,
            };
        };
        // SAFETY: we took the batch off the queue: we own its links until each task is run.
        let next = unsafe { newest.as_ref() }.run_next.load(Ordering::Relaxed);
        if next.is_null() && max_polls != 0 {
            // A batch of one, the common case (one wake between polls): its own order, and
            // within any budget (`should_yield` is not asked before the first poll).
            // SAFETY: the task came off our queue, so we own it, which orders us after the
            // spawn's write of its run function.
            unsafe { run_of(newest)(newest) };
            return PollReport {
                polled: 1,
                work_remains: false,
            };
        }
        // SAFETY: the batch is ours.
        unsafe { self.poll_batch(newest, max_polls, should_yield) }
    }

    /// [`poll`](Self::poll) for a batch of more than one task (or a budget of zero): runs it in
    /// wake order under the budget.
    ///
    /// # Safety
    /// We took the chain that starts at `newest` off the queue (its links are ours).
    #[inline(never)]
    unsafe fn poll_batch(
        &self,
        newest: NonNull<TaskHeader>,
        max_polls: usize,
        mut should_yield: impl FnMut() -> bool,
    ) -> PollReport {
        let mut remaining = max_polls;
        // SAFETY: forwarded.
        let mut task = unsafe { reverse(newest) };
        loop {
            let Some(left) = remaining.checked_sub(1) else {
                // SAFETY: still ours; the chain from `task` ends in the batch's last task.
                return unsafe { self.requeue_rest(task, max_polls) };
            };
            if remaining != max_polls && should_yield() {
                // SAFETY: as above.
                return unsafe { self.requeue_rest(task, max_polls - remaining) };
            }
            remaining = left;
            // SAFETY: we own the link until `run` gives the task up.
            let next = unsafe { task.as_ref() }.run_next.load(Ordering::Relaxed);
            // SAFETY: the task came off our queue, so we own it, which orders us after the
            // spawn's write of its run function.
            unsafe { run_of(task)(task) };
            match NonNull::new(next) {
                Some(next) => task = next,
                None => break,
            }
        }
        PollReport {
            polled: max_polls - remaining,
            work_remains: false,
        }
    }

    /// Puts the unpolled rest of a batch back on the queue when the budget ran out. It goes on
    /// top, so the next batch starts with it.
    ///
    /// # Safety
    /// We own the tasks of the chain that starts at `task` (the rest of a batch we took).
    #[cold]
    #[inline(never)]
    unsafe fn requeue_rest(&self, task: NonNull<TaskHeader>, polled: usize) -> PollReport {
        // SAFETY: the chain from `task` is ours and ends in null.
        unsafe { self.queue.push_chain(task, chain_end(task)) };
        PollReport {
            polled,
            work_remains: true,
        }
    }
}

/// The executor a task was spawned on.
///
/// # Safety
/// The caller owns the task (or otherwise knows it spawned and the spawn's write ordered before
/// it).
unsafe fn executor_of(task: NonNull<TaskHeader>) -> &'static ExecutorCore {
    // SAFETY: tasks live in 'static pools.
    let executor = unsafe { task.as_ref() }
        .executor
        .load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: written at spawn (ordered before us, as the caller guarantees) from a 'static
    // executor.
    unsafe { &*executor }
}

/// Runs one dequeued task: polls it with `poll` (or drops it if cancelled or closed), then puts
/// it back to idle, or re-queues it if it was woken meanwhile, or retires it if it finished.
///
/// It is inlined into each future type's run function (the header's `run`), so the
/// poll loop makes one indirect call per task and the future's poll is inlined here.
///
/// # Safety
/// `task` was just taken off its executor's queue, `poll` polls its future (true when it
/// finished and its output is stored; it is called only with the task owned and its state
/// without DONE), and `drop_stage` is its vtable's `drop_stage`.
#[inline]
pub(crate) unsafe fn run_task(
    task: NonNull<TaskHeader>,
    poll: impl FnOnce() -> bool,
    drop_stage: impl FnOnce(),
) {
    // SAFETY: tasks in a queue live in 'static pools.
    let header = unsafe { task.as_ref() };
    // We own the task (its wake count is not zero and only we can bring it back to zero), so a
    // plain load suffices: it acquires every wake counted so far.
    let state = header.state.load(Ordering::Acquire);
    invariant!(
        state >= WAKE && state & (SPAWNED | DONE) == SPAWNED,
        "a dequeued task must be spawned, unfinished and owned: queued twice?"
    );
    // SAFETY: we own the task.
    // DONE here, in the same test, would be a bug of the state machine: `must_drop` panics.
    if state & (CANCELLED | CLOSING | DONE) != 0 && unsafe { must_drop(task, state) } {
        // SAFETY: forwarded; we own the task.
        unsafe { cancel(task) };
        return;
    }
    if poll() {
        // SAFETY: forwarded; we own the task and its future just finished.
        unsafe { finish(task, drop_stage) };
        return;
    }
    // Back to idle: the count to zero, unless it changed since we read it.
    if header
        .state
        .compare_exchange(state, state & FLAGS, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // SAFETY: forwarded; we still own the task.
        unsafe { idle_or_requeue(task, state) };
    }
}

/// The end of a `Pending` poll when the state word changed during the poll: re-queues the task
/// if it was woken meanwhile, else puts it back to idle.
///
/// # Safety
/// We own `task` (popped it and polled it), and `seen` is the state we read before the poll.
#[cold]
#[inline(never)]
unsafe fn idle_or_requeue(task: NonNull<TaskHeader>, seen: u64) {
    // SAFETY: tasks in a queue live in 'static pools.
    let header = unsafe { task.as_ref() };
    let mut state = header.state.load(Ordering::Relaxed);
    // Only wakes change the count while we own the task, and only upwards.
    while state & !FLAGS == seen & !FLAGS {
        // Only a flag changed (the handle was dropped, or `abort` set CANCELLED, or `close`
        // CLOSING: their wakes follow and will queue the task).
        match header.state.compare_exchange_weak(
            state,
            state & FLAGS,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(actual) => state = actual,
        }
    }
    // Woken during its poll: those wakers only counted and left the push to us.
    // SAFETY: we own the task (its count is not zero), so the spawn's write of its executor is
    // ordered before us; and the link is ours.
    let executor = unsafe { executor_of(task) };
    // SAFETY: as above.
    if unsafe { executor.queue.push_chain(task, task) } {
        // Like any push onto an empty queue: the poll loop does not look at the queue again
        // after its batch, so this pend is what runs the task again.
        executor.pend();
    }
}

/// Whether a task whose state is `state` (with CANCELLED, CLOSING or DONE) is to be dropped.
///
/// # Panics
/// If `state` has DONE: a finished task was dequeued, a bug of the task state machine (its stage
/// no longer holds a future).
///
/// # Safety
/// We own `task`.
#[cold]
#[inline(never)]
unsafe fn must_drop(task: NonNull<TaskHeader>, state: u64) -> bool {
    assert!(
        state & DONE == 0,
        "a finished task was dequeued: the task state machine is broken"
    );
    // SAFETY: forwarded.
    state & CANCELLED != 0 || unsafe { executor_of(task) }.is_closed()
}

/// Drops the future of a cancelled task (or of any task, once the executor is closed) and
/// retires the task.
///
/// # Safety
/// We own `task` (popped it).
#[cold]
#[inline(never)]
unsafe fn cancel(task: NonNull<TaskHeader>) {
    // SAFETY: owning the task orders us after the spawn's write of the vtable, and gives us the
    // future exclusively.
    let vtable = unsafe { vtable_of(task) };
    // SAFETY: as above.
    unsafe { (vtable.cancel)(task) };
    // SAFETY: forwarded; the future is gone; `drop_stage` is the task's own.
    unsafe { finish(task, || (vtable.drop_stage)(task)) };
}

/// Retires a task whose future finished or was dropped: sets `DONE`, then wakes the handle or,
/// without one, frees the slot.
///
/// # Safety
/// We own `task`, its future is finished or dropped, and `drop_stage` drops its stage.
#[inline]
unsafe fn finish(task: NonNull<TaskHeader>, drop_stage: impl FnOnce()) {
    // SAFETY: tasks in a queue live in 'static pools.
    let header = unsafe { task.as_ref() };
    // SAFETY: we own the task.
    unsafe { executor_of(task) }
        .live
        .fetch_sub(1, Ordering::AcqRel);
    // DONE is ours to set (we own the task), so an add sets it; the wake count stays above zero
    // for good, so wakes from now on only count.
    let state = header.state.fetch_add(DONE, Ordering::AcqRel);
    invariant!(state & DONE == 0, "a task finished twice");
    if state & HANDLE != 0 {
        header.join_waker.wake();
    } else {
        // SAFETY: DONE is set by us and there is no handle: nobody else owns the slot;
        // `drop_stage` is the task's own.
        unsafe { free_slot_with(task, drop_stage) };
    }
}

/// Reverses a chain ending in null and returns its new head.
///
/// # Safety
/// The caller owns every link of the chain.
#[inline]
unsafe fn reverse(head: NonNull<TaskHeader>) -> NonNull<TaskHeader> {
    // SAFETY: the caller owns the link.
    if unsafe { head.as_ref() }
        .run_next
        .load(Ordering::Relaxed)
        .is_null()
    {
        // A batch of one, the common case (one wake between polls), is its own reverse.
        return head;
    }
    // SAFETY: forwarded.
    unsafe { reverse_chain(head) }
}

/// [`reverse`] for a chain of two or more tasks.
///
/// # Safety
/// As for `reverse`.
#[inline(never)]
unsafe fn reverse_chain(head: NonNull<TaskHeader>) -> NonNull<TaskHeader> {
    let mut previous: *mut TaskHeader = ptr::null_mut();
    let mut current = head.as_ptr();
    while let Some(task) = NonNull::new(current) {
        // SAFETY: the caller owns the link.
        let link = &unsafe { task.as_ref() }.run_next;
        current = link.load(Ordering::Relaxed);
        link.store(previous, Ordering::Relaxed);
        previous = task.as_ptr();
    }
    NonNull::new(previous).unwrap_or(head)
}

/// The last task of a chain ending in null.
///
/// # Safety
/// The caller owns every link of the chain.
unsafe fn chain_end(mut task: NonNull<TaskHeader>) -> NonNull<TaskHeader> {
    // SAFETY: the caller owns the links.
    while let Some(next) = NonNull::new(unsafe { task.as_ref() }.run_next.load(Ordering::Relaxed)) {
        task = next;
    }
    task
}

/// The executor a waker's task runs on, if the waker is a task waker of an `Executor<P>`. Only
/// reliable for a `P` whose [`Pender::WAKER_VTABLE`] is a `static` (the runners').
pub(crate) fn executor_of_waker<P: Pender>(waker: &Waker) -> Option<&'static ExecutorCore> {
    let task = task_of_waker::<P>(waker)?;
    // SAFETY: task wakers point to 'static headers.
    let executor = unsafe { task.as_ref() }
        .executor
        .load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: executors that tasks are spawned on are 'static.
    unsafe { executor.as_ref() }
}

use core::task::Waker;

/// Polls a pinned future stored in place; shared by the task vtables.
pub(crate) fn poll_in_place<F: core::future::Future>(
    future: core::pin::Pin<&mut F>,
    waker: &Waker,
) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}
