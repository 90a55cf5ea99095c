//! The executor: [`Executor`] (typed by its [`Pender`]) and [`ExecutorCore`] (the rest), and
//! `poll`, which runs the tasks a budget left over (the ready list) and a batch taken off the
//! run queue (the `run_queue` module), in wake order under a budget;
//! [`run_task`] runs one task through the state word's transitions (the `state` module).

use core::marker::PhantomData;
use core::ptr;
use core::task::{Context, Poll, RawWakerVTable, Waker};

use super::run_queue::{Chain, Claim, ReadyList, RunQueue, next_in_chain};
use super::state::{AfterPoll, Finished, LiveTasks, Snapshot};
use super::sync::{AtomicPtr, Ordering, loom_const_fn};
use super::task::{TaskRef, WakerVTableFor, free_slot_with, task_of_waker, wake_task_erased};

/// How a wake becomes a run: called with the executor's context (see
/// [`Executor::set_context`]) after a wake made the run queue non-empty.
///
/// The DPC runner's pender calls `KeInsertQueueDpc`, the passive runner's sets a KEVENT. It is
/// called from wherever the wake happened: any CPU, IRQL <= `DISPATCH_LEVEL`, possibly inside the
/// executor's own poll.
///
/// # Safety
/// The function may assume the context it gets is the one its owner set.
pub type PendFn = unsafe fn(context: *const ());

/// What one [`Executor::poll`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollReport {
    /// Tasks polled (or dropped, when cancelled).
    pub polled: usize,
    /// The budget ran out with tasks still queued: call `poll` again soon (the DPC runner
    /// re-queues its DPC). When false, every task queued meanwhile was pended for (see
    /// [`Executor::poll`]).
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
/// that pends through a function pointer. Its type-independent part is an [`ExecutorCore`], which
/// its tasks point to and its pender gets; the operations below forward to it.
///
/// It is platform-neutral: the runners ([`crate::Runner`]) give it a pender and call
/// [`poll`](Executor::poll) from a DPC or a system thread. Tasks are spawned into it with
/// [`TaskPool::spawn`](super::TaskPool::spawn).
#[repr(transparent)]
pub struct Executor<P: Pender = FnPender> {
    core: ExecutorCore,
    _pender: PhantomData<fn() -> P>,
}

impl Executor<FnPender> {
    loom_const_fn! {
        /// An executor whose wakes call `pend` with the context set by
        /// [`set_context`](Executor::set_context) (null until then).
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

/// The executor's public operations, forwarded to its core (which `Pender::pend` also gets, as
/// `&ExecutorCore`).
impl<P: Pender> Executor<P> {
    /// Sets the context passed to the pender. Call it before spawning the first task.
    ///
    /// # Safety
    /// `context` must be what this executor's pender expects (its [`PendFn`], or its
    /// [`Pender`] if that reads it), valid for as long as any task of the executor can be woken.
    ///
    /// # IRQL
    /// Any.
    #[inline]
    pub unsafe fn set_context(&self, context: *const ()) {
        // SAFETY: forwarded.
        unsafe { self.core.set_context(context) };
    }

    /// The context set by [`set_context`](Self::set_context).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn context(&self) -> *const () {
        self.core.context()
    }

    /// Tasks whose future is not yet finished or dropped.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn live_tasks(&self) -> usize {
        self.core.live_tasks()
    }

    /// True once [`close`](Self::close) was called: spawns fail and tasks are dropped when polled.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Closed, and every task's future is dropped: nothing will be queued again.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn is_drained(&self) -> bool {
        self.core.is_drained()
    }

    /// True if tasks are queued.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn has_queued(&self) -> bool {
        self.core.has_queued()
    }

    /// [`has_queued`](Self::has_queued), cheaper and conservative: also true while a poller
    /// holds the ready list (it may be running tasks, or keeping some), for the runners' checks
    /// after a poll, where a needless "yes" costs at most one more look.
    #[inline]
    pub(crate) fn may_have_queued(&self) -> bool {
        self.core.may_have_queued()
    }

    /// Closes the executor: spawning fails from now on, and every task is woken so that its
    /// next poll drops its future instead. Call [`poll`](Self::poll) (or let the runner do it)
    /// until [`is_drained`](Self::is_drained).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (it wakes tasks, which calls the pender).
    #[inline]
    pub fn close(&'static self) {
        self.core.close();
    }

    /// Opens a drained executor again (closed, and every task's future dropped), so that it
    /// can be spawned into and polled as a new one: what restarting a
    /// [`Runner`](crate::Runner) after its shutdown does. Returns false, changing nothing, when
    /// the executor is not drained (open, or closed with tasks still to drop).
    ///
    /// Slots whose `JoinHandle` still holds an output stay taken until it is dropped; stale
    /// wakers of the dropped tasks only count on their (free) slots, as after any drop.
    ///
    /// # IRQL
    /// Any.
    #[inline]
    pub fn reopen(&self) -> bool {
        self.core.live.reopen()
    }

    /// Polls the tasks queued when it is called, in wake order: first those an earlier call's
    /// budget left over, then the ones woken since (one batch, taken off the queue at once),
    /// until they are done, `max_polls` tasks were polled, or `should_yield` (asked before each
    /// poll but the first) says the time is up. Each call polls at least one task when any is
    /// queued (a `max_polls` of 0 counts as 1, so a runner always makes progress). Tasks left
    /// over stay first in line for the next
    /// call and are reported in [`PollReport::work_remains`]. Each task polled costs the queue
    /// the same, however many are queued.
    ///
    /// Tasks queued while the batch runs are left for the next call: the wake that queued the
    /// first of them found the queue empty and called the pender, and the ones after it are
    /// behind it in the same queue. (Looking again here would only take the work that pend
    /// already asked for.) So a caller that polls whenever the pender asks it to, and again
    /// whenever `work_remains`, runs every wake.
    ///
    /// Several CPUs may call this at once on the same executor. The left-over tasks have one
    /// poller at a time: a call that finds another CPU polling them returns at once with
    /// nothing polled, and the other call reports `work_remains` on its behalf. Order is wake
    /// order when calls do not overlap; overlapping calls may also run tasks side by side, and
    /// then run a task woken later before one woken earlier, by at most one batch.
    ///
    /// # IRQL
    /// Whatever the tasks tolerate: `DISPATCH_LEVEL` in the DPC runner, `PASSIVE_LEVEL` in the
    /// passive runner.
    #[inline]
    pub fn poll(&self, max_polls: usize, should_yield: impl FnMut() -> bool) -> PollReport {
        self.core.poll(max_polls, should_yield)
    }
}

/// An executor's run queue, its pender as a function pointer and context, and the count of live
/// tasks: all of [`Executor`] but the pender's type. Tasks point to it, and a [`Pender`] gets it.
pub struct ExecutorCore {
    /// Where wakes push tasks.
    queue: RunQueue,
    /// Tasks in wake order that a poll's budget left over: the next poll starts with them.
    ready: ReadyList,
    /// Futures not yet finished or dropped, and whether the executor is closed.
    live: LiveTasks,
    /// The pender through a pointer, for callers that do not know its type: `P::pend`.
    pend: unsafe fn(&ExecutorCore),
    /// The function of [`Executor::new`], which `FnPender::pend` calls.
    pend_fn: PendFn,
    context: AtomicPtr<()>,
    /// Opaque to `raw`: the runner's timer queue, found by timers through a task's waker.
    timer_queue: AtomicPtr<()>,
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
                ready: ReadyList::new(),
                live: LiveTasks::new(),
                pend,
                pend_fn,
                context: AtomicPtr::new(ptr::null_mut()),
                timer_queue: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// See [`Executor::set_context`].
    ///
    /// # Safety
    /// As for `Executor::set_context`.
    unsafe fn set_context(&self, context: *const ()) {
        self.context.store(context.cast_mut(), Ordering::Release);
    }

    /// The context set by [`Executor::set_context`]: what a [`Pender`] reads.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    #[inline]
    pub fn context(&self) -> *const () {
        self.context.load(Ordering::Acquire).cast_const()
    }

    /// Records the runner's timer queue, for timers that find the executor through a waker.
    pub(crate) fn set_timer_queue(&self, queue: *const ()) {
        self.timer_queue.store(queue.cast_mut(), Ordering::Release);
    }

    /// The runner's timer queue, null before the runner started.
    pub(crate) fn timer_queue(&self) -> *const () {
        self.timer_queue.load(Ordering::Acquire).cast_const()
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
    pub(crate) unsafe fn enqueue<P: Pender>(&self, task: TaskRef) {
        // One attempt inline, with no loop to enter; a contended push retries out of line.
        // SAFETY: forwarded from the caller.
        match unsafe { self.queue.try_push(task) } {
            // SAFETY: this is an `Executor<P>`'s core, or `P` is `ErasedPender`, which pends
            // any executor (the caller's guarantee).
            Ok(true) => unsafe { P::pend(self) },
            Ok(false) => {}
            // SAFETY: forwarded from the caller.
            Err(()) => unsafe { self.enqueue_contended(task) },
        }
    }

    /// [`enqueue`](Self::enqueue) after its first attempt lost a race, or a task re-queued by
    /// its poller: pends through the pointer if the queue was empty.
    ///
    /// # Safety
    /// The caller owns the task and so its link.
    #[cold]
    #[inline(never)]
    unsafe fn enqueue_contended(&self, task: TaskRef) {
        // SAFETY: forwarded from the caller.
        if unsafe { self.queue.push_chain(task, task) } {
            self.pend();
        }
    }

    /// The executor's count of live tasks and its closed mark.
    pub(crate) fn live(&self) -> &LiveTasks {
        &self.live
    }

    fn live_tasks(&self) -> usize {
        self.live.count()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.live.is_closed()
    }

    fn is_drained(&self) -> bool {
        self.live.is_drained()
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty() || self.ready.has_tasks()
    }

    /// See [`Executor::may_have_queued`].
    #[inline]
    fn may_have_queued(&self) -> bool {
        !self.queue.is_empty() || !self.ready.is_free_and_empty()
    }

    /// See [`Executor::close`].
    fn close(&'static self) {
        self.live.close();
        // Mark and wake every task of ours: a queued or running one is polled again anyway, an
        // idle one (waiting on a never-completing future, say) is queued now, and its poller
        // sees CLOSING and drops it. A spawn that raced with the close either failed or counted
        // itself in `live` before our `fetch_or`, after it published its executor, so we find it
        // here. A task of another executor that a racy read confuses with ours only gets a
        // needless CLOSING (its poller finds its executor open) and a spurious wake.
        super::pool::for_each_task(|task| {
            let header = task.header();
            if header
                .published_executor()
                .is_some_and(|executor| ptr::eq(executor, self))
            {
                header.state.mark_closing();
                // The erased wake pends through the executor's pointer, right for whichever
                // executor the task has.
                wake_task_erased(task);
            }
        });
    }

    /// See [`Executor::poll`].
    #[inline]
    fn poll(&self, max_polls: usize, should_yield: impl FnMut() -> bool) -> PollReport {
        if !self.ready.is_free_and_empty() {
            return self.poll_ready(max_polls, should_yield);
        }
        // No tasks left over: the queue is all there is. Usually called because a wake
        // pended, so it is most likely not empty.
        let Some(newest) = self.queue.take_all() else {
            return PollReport {
                polled: 0,
                work_remains: false,
            };
        };
        // We took the batch off the queue: we own its links until each task is run.
        if next_in_chain(newest).is_none() {
            // A batch of one, the common case (one wake between polls): its own order, and
            // within any budget (every call polls one task: `should_yield` is not asked
            // before the first poll, and a `max_polls` of 0 counts as 1).
            // SAFETY: the task came off our queue.
            unsafe { run_dequeued(newest) };
            return PollReport {
                polled: 1,
                work_remains: false,
            };
        }
        // SAFETY: the batch is ours.
        unsafe { self.poll_batch(newest, max_polls, should_yield) }
    }

    /// [`poll`](Self::poll) for a batch of more than one task with no
    /// tasks left over from before: runs it in wake order under the budget and puts its rest on
    /// the ready list.
    ///
    /// # Safety
    /// We took the chain that starts at `newest` off the queue (its links are ours).
    #[inline(never)]
    unsafe fn poll_batch(
        &self,
        newest: TaskRef,
        max_polls: usize,
        should_yield: impl FnMut() -> bool,
    ) -> PollReport {
        // SAFETY: forwarded.
        let batch = unsafe { Chain::from_newest(newest) };
        // SAFETY: the batch is ours.
        let (polled, rest) = unsafe { run_chain(batch, max_polls, should_yield) };
        if let Some(rest) = rest {
            // SAFETY: the rest is ours.
            unsafe { self.keep_rest(rest) };
        }
        PollReport {
            polled,
            work_remains: rest.is_some(),
        }
    }

    /// Puts the rest of a batch run without the ready list on it (after the tasks another
    /// poller may have left there meanwhile), or, if another poller holds the list, back on the
    /// queue, where its push is the order it takes (see [`ReadyList`]). Either way the caller
    /// reports work remaining.
    ///
    /// # Safety
    /// We own the chain `rest`.
    #[cold]
    #[inline(never)]
    unsafe fn keep_rest(&self, rest: Chain) {
        match self.ready.claim() {
            Claim::Held(list) => {
                let list = match list {
                    Some(list) => list.then(Some(rest)),
                    None => rest,
                };
                // SAFETY: we hold the list, and own its tasks and `rest`.
                unsafe { self.ready.release(Some(list)) };
            }
            Claim::Busy => {
                // SAFETY: the chain is ours; the push needs no pend: our caller reports work
                // remaining, and so does the holder (`claim` marked the list).
                unsafe { self.queue.push_chain(rest.first, rest.last) };
            }
        }
    }

    /// [`poll`](Self::poll) when tasks were left over from before, or another poller holds
    /// them: takes the ready list, appends the batch on the queue, and runs it in wake order
    /// under the budget; the rest stays on the list.
    #[inline(never)]
    fn poll_ready(&self, max_polls: usize, should_yield: impl FnMut() -> bool) -> PollReport {
        let Claim::Held(list) = self.ready.claim() else {
            // Another poller holds the list: `claim` marked it, so that poller reports work
            // remaining and its caller polls again, for what we were called for as well.
            return PollReport {
                polled: 0,
                work_remains: false,
            };
        };
        // Newly queued tasks go after the left-over ones: wake order.
        let batch = self.queue.take_all().map(|newest| {
            // SAFETY: taken off our queue, so its links are ours.
            unsafe { Chain::from_newest(newest) }
        });
        let work = match list {
            Some(list) => Some(list.then(batch)),
            None => batch,
        };
        let (polled, rest) = match work {
            // SAFETY: the list's tasks and the batch are ours.
            Some(work) => unsafe { run_chain(work, max_polls, should_yield) },
            None => (0, None),
        };
        // SAFETY: we hold the list and own the rest.
        let other_poller_came = unsafe { self.ready.release(rest) };
        PollReport {
            polled,
            work_remains: rest.is_some() || other_poller_came,
        }
    }
}

/// Runs the chain `work` in order until it is done, `max_polls` tasks were polled (at least
/// one), or `should_yield` (asked before each poll but the first) says the time is up: the
/// count polled,
/// and the rest of the chain, not run, if any.
///
/// # Safety
/// We own the chain's tasks and links.
#[inline]
unsafe fn run_chain(
    work: Chain,
    max_polls: usize,
    mut should_yield: impl FnMut() -> bool,
) -> (usize, Option<Chain>) {
    // The first task always runs: a budget of 0 counts as 1.
    let max_polls = max_polls.max(1);
    let mut polled = 0;
    let mut task = work.first;
    loop {
        if polled == max_polls || (polled != 0 && should_yield()) {
            // Still ours: the chain from `task` ends in the chain's last task.
            let rest = Chain {
                first: task,
                last: work.last,
            };
            return (polled, Some(rest));
        }
        polled += 1;
        // We own the link until `run` gives the task up.
        let next = next_in_chain(task);
        // SAFETY: the task is ours, off our queue.
        unsafe { run_dequeued(task) };
        match next {
            Some(next) => task = next,
            None => return (polled, None),
        }
    }
}

/// Runs a task taken off a queue through its run function.
///
/// # Safety
/// The caller took the task off its executor's queue, so it owns it, which orders it after the
/// spawn's write of the run function.
#[inline]
unsafe fn run_dequeued(task: TaskRef) {
    // SAFETY: forwarded: owned, so ordered after the spawn's write.
    let run = unsafe { task.header().run_fn() };
    // SAFETY: forwarded: a dequeued task, run by its own run function.
    unsafe { run(task) };
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
    task: TaskRef,
    poll: impl FnOnce() -> bool,
    drop_stage: impl FnOnce(),
) {
    let state = task.header().state.begin_run();
    // DONE here, in the same test, would be a bug of the state machine: `must_drop` panics.
    // SAFETY: we own the task.
    if state.may_need_drop() && unsafe { must_drop(task, state) } {
        // SAFETY: forwarded; we own the task.
        unsafe { cancel(task) };
        return;
    }
    if poll() {
        // SAFETY: forwarded; we own the task and its future just finished.
        unsafe { finish(task, drop_stage) };
        return;
    }
    if task.header().state.after_pending_poll(state) == AfterPoll::Requeue {
        // SAFETY: woken during the poll: we still own the task.
        unsafe { requeue(task) };
    }
}

/// Queues a task again that was woken during its poll: those wakers only counted and left the
/// push to its poller.
///
/// # Safety
/// We own `task` (popped it and polled it, and its count is not zero).
#[cold]
#[inline(never)]
unsafe fn requeue(task: TaskRef) {
    // SAFETY: we own the task, so the spawn's publication of its executor is ordered before us.
    let executor = unsafe { task.header().spawned_executor() };
    // Like any push onto an empty queue: the poll loop does not look at the queue again after
    // its batch, so the pend of an empty queue is what runs the task again.
    // SAFETY: the link is ours.
    unsafe { executor.enqueue_contended(task) };
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
unsafe fn must_drop(task: TaskRef, state: Snapshot) -> bool {
    assert!(
        !state.is_done(),
        "a finished task was dequeued: the task state machine is broken"
    );
    // SAFETY: forwarded: we own the task.
    state.is_cancelled() || unsafe { task.header().spawned_executor() }.is_closed()
}

/// Drops the future of a cancelled task (or of any task, once the executor is closed) and
/// retires the task.
///
/// # Safety
/// We own `task` (popped it).
#[cold]
#[inline(never)]
unsafe fn cancel(task: TaskRef) {
    // SAFETY: owning the task orders us after the spawn's write of the vtable.
    let vtable = unsafe { task.header().vtable() };
    // SAFETY: owning the task gives us the future exclusively; `cancel` is the task's own.
    unsafe { (vtable.cancel)(task) };
    let drop_stage = || {
        // SAFETY: `finish` calls it once it owns the finished slot; the task's own.
        unsafe { (vtable.drop_stage)(task) };
    };
    // SAFETY: forwarded; the future is gone.
    unsafe { finish(task, drop_stage) };
}

/// Retires a task whose future finished or was dropped: sets `DONE`, then wakes the handle or,
/// without one, frees the slot.
///
/// # Safety
/// We own `task`, its future is finished or dropped, and `drop_stage` drops its stage.
#[inline]
unsafe fn finish(task: TaskRef, drop_stage: impl FnOnce()) {
    let header = task.header();
    // SAFETY: we own the task.
    let executor = unsafe { header.spawned_executor() };
    executor.live.remove();
    match header.state.finish() {
        Finished::WakeHandle => header.join_waker.wake(),
        // SAFETY: DONE is set by us and there is no handle: nobody else owns the slot;
        // `drop_stage` is the task's own.
        Finished::FreeSlot => unsafe { free_slot_with(task, drop_stage) },
    }
}

/// The executor a waker's task runs on, if the waker is a task waker of an `Executor<P>`. Only
/// reliable for a `P` whose [`Pender::WAKER_VTABLE`] is a `static` (the runners').
pub(crate) fn executor_of_waker<P: Pender>(waker: &Waker) -> Option<&'static ExecutorCore> {
    task_of_waker::<P>(waker)?.header().published_executor()
}

/// Polls a pinned future stored in place; shared by the task vtables.
pub(crate) fn poll_in_place<F: core::future::Future>(
    future: core::pin::Pin<&mut F>,
    waker: &Waker,
) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}
