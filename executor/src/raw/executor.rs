//! The executor: an intrusive lock-free run queue, the pender that turns a wake into a run, and
//! `poll`, which drains the queue under a budget.
//!
//! The queue is a multi-producer stack: a push is one compare-exchange on the head, and the
//! poller takes the whole stack with one swap and reverses it, so tasks run in wake order within
//! a batch. Taking everything at once needs no per-node pop, so there is no ABA hazard. Several
//! CPUs may poll one executor at once (a DPC re-queued while it runs does that): each takes its
//! own batch, and the task state word keeps any task on one CPU at a time.

use core::ptr::{self, NonNull};
use core::task::{Context, Poll};

use super::sync::{AtomicPtr, AtomicUsize, Ordering, loom_const_fn};
use super::task::{
    CANCELLED, DONE, HANDLE, QUEUED, RUNNING, TaskHeader, free_slot, invariant, task_of_waker,
    vtable_of,
};

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

/// Set in [`Executor::live`] once the executor is closed.
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
    /// The caller owns the links of every task in the chain (each is QUEUED by it).
    unsafe fn push_chain(&self, first: NonNull<TaskHeader>, last: NonNull<TaskHeader>) -> bool {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
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
                Ok(_) => return head.is_null(),
                Err(actual) => head = actual,
            }
        }
    }

    /// Takes every queued task, newest first.
    fn take_all(&self) -> *mut TaskHeader {
        // Cheap check first: a swap on an empty queue still takes the cache line exclusively.
        if self.head.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }
}

/// What one [`Executor::poll`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollReport {
    /// Tasks polled (or dropped, when cancelled).
    pub polled: usize,
    /// The budget ran out with tasks still queued: call `poll` again soon (the DPC runner
    /// re-queues its DPC). When false, a later wake calls the pender.
    pub work_remains: bool,
}

/// A task executor: its run queue, its pender, and the count of live tasks.
///
/// It is platform-neutral: the runners ([`crate::Runner`]) give it a pender and call
/// [`poll`](Self::poll) from a DPC or a system thread. Tasks are spawned into it with
/// [`TaskPool::spawn`](super::TaskPool::spawn).
pub struct Executor {
    queue: RunQueue,
    /// Futures not yet finished or dropped, plus the `CLOSED` bit.
    live: AtomicUsize,
    pend: PendFn,
    context: AtomicPtr<()>,
    /// Opaque to `raw`: the runner's timer queue, found by timers through a task's waker.
    timer_queue: core::sync::atomic::AtomicPtr<()>,
}

// SAFETY: all state is atomic; `pend` is a plain fn pointer; the context pointer is only handed
// to `pend`, whose owner vouched for it in `set_context`.
unsafe impl Sync for Executor {}
// SAFETY: as above.
unsafe impl Send for Executor {}

impl Executor {
    loom_const_fn! {
        /// An executor whose wakes call `pend` with the context set by
        /// [`set_context`](Self::set_context) (null until then).
        ///
        /// # IRQL
        /// Any (it is a constant initialiser).
        #[must_use]
        pub fn new(pend: PendFn) -> Self {
            Self {
                queue: RunQueue::new(),
                live: AtomicUsize::new(0),
                pend,
                context: AtomicPtr::new(ptr::null_mut()),
                timer_queue: core::sync::atomic::AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Sets the context passed to the pender. Call it before spawning the first task.
    ///
    /// # Safety
    /// `context` must be what this executor's [`PendFn`] expects, valid for as long as any task
    /// of the executor can be woken.
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

    /// Calls the pender.
    pub(crate) fn pend(&self) {
        // SAFETY: the context is the one set for this pender (`set_context`'s contract).
        unsafe { (self.pend)(self.context()) };
    }

    /// Pushes a task whose link the caller owns and pends if the queue was empty.
    ///
    /// # Safety
    /// The caller set `QUEUED` on the task (or claimed it at spawn) and so owns its link.
    pub(crate) unsafe fn enqueue(&self, task: NonNull<TaskHeader>) {
        // SAFETY: forwarded from the caller.
        if unsafe { self.queue.push_chain(task, task) } {
            self.pend();
        }
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
        // Wake every task of ours: a queued or running one is polled again anyway, an idle one
        // (waiting on a never-completing future, say) is queued now. A task of another executor
        // that a racy read confuses with ours only gets a spurious wake.
        super::pool::for_each_task(|task| {
            // SAFETY: `for_each_task` yields headers in 'static pools.
            let header = unsafe { task.as_ref() };
            if ptr::eq(
                header.executor.load(core::sync::atomic::Ordering::Acquire),
                self,
            ) {
                // SAFETY: as above.
                unsafe { super::task::wake_task(task) };
            }
        });
    }

    /// Polls queued tasks until the queue is empty, `max_polls` tasks were polled, or
    /// `should_yield` (asked after each poll) says the time is up. Tasks left over are queued
    /// again and reported in [`PollReport::work_remains`].
    ///
    /// Several CPUs may call this at once on the same executor.
    ///
    /// # IRQL
    /// Whatever the tasks tolerate: `DISPATCH_LEVEL` in the DPC runner, `PASSIVE_LEVEL` in the
    /// passive runner.
    pub fn poll(&self, max_polls: usize, mut should_yield: impl FnMut() -> bool) -> PollReport {
        let mut polled = 0;
        loop {
            let newest = self.queue.take_all();
            let Some(newest) = NonNull::new(newest) else {
                return PollReport {
                    polled,
                    work_remains: false,
                };
            };
            // SAFETY: we took these tasks off the queue: we own their links until each is run.
            let mut next = Some(unsafe { reverse(newest) });
            while let Some(task) = next {
                if polled >= max_polls || (polled > 0 && should_yield()) {
                    // SAFETY: still ours; the chain from `task` ends in the batch's last task.
                    unsafe { self.queue.push_chain(task, chain_end(task)) };
                    return PollReport {
                        polled,
                        work_remains: true,
                    };
                }
                // SAFETY: we own the link until `run` clears QUEUED.
                next = NonNull::new(unsafe { task.as_ref() }.run_next.load(Ordering::Relaxed));
                // SAFETY: the task came off our queue, so it is QUEUED by us and not running.
                unsafe { self.run(task) };
                polled += 1;
            }
        }
    }

    /// Runs one dequeued task: polls it (or drops it if cancelled), then re-queues it if it was
    /// woken meanwhile, or retires it if it finished.
    ///
    /// # Safety
    /// `task` was just taken off this executor's queue.
    unsafe fn run(&self, task: NonNull<TaskHeader>) {
        // SAFETY: tasks in our queue live in 'static pools.
        let header = unsafe { task.as_ref() };
        // QUEUED -> RUNNING: from here on, wakes only set QUEUED and leave the push to us. One
        // add does it: QUEUED is set and RUNNING clear (the task came off our queue, and only
        // its poller sets RUNNING), so adding `RUNNING - QUEUED` clears the one and sets the
        // other, and commutes with what others may change meanwhile (a wake's QUEUED, which is
        // already set, CANCELLED, HANDLE). A compare-exchange loop costs more instructions.
        let state = header.state.fetch_add(RUNNING - QUEUED, Ordering::AcqRel);
        invariant!(
            state & QUEUED != 0 && state & (RUNNING | DONE) == 0,
            "a dequeued task must be queued and idle: queued twice?"
        );
        // SAFETY: RUNNING orders us after the spawn's write of the vtable.
        let vtable = unsafe { vtable_of(task) };
        let finished = if state & CANCELLED != 0 || self.is_closed() {
            // SAFETY: RUNNING gives us the future exclusively.
            unsafe { (vtable.cancel)(task) };
            true
        } else {
            // SAFETY: as above.
            unsafe { (vtable.poll)(task) }
        };
        if finished {
            self.live.fetch_sub(1, Ordering::AcqRel);
            let mut state = header.state.load(Ordering::Relaxed);
            loop {
                match header.state.compare_exchange_weak(
                    state,
                    (state | DONE) & !(RUNNING | QUEUED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => state = actual,
                }
            }
            if state & HANDLE != 0 {
                header.join_waker.wake();
            } else {
                // SAFETY: DONE is set by us and there is no handle: nobody else owns the slot.
                unsafe { free_slot(task) };
            }
        } else {
            // Clears RUNNING, which we set: a subtraction is one locked add, where fetch_and
            // with its result used is a compare-exchange loop.
            let state = header.state.fetch_sub(RUNNING, Ordering::AcqRel);
            if state & QUEUED != 0 {
                // Woken during its poll: that waker left the push to us.
                // SAFETY: QUEUED was set while we were running, so the link is ours.
                unsafe { self.queue.push_chain(task, task) };
                // No pend needed: this poll loop takes it next, or reports work_remains.
            }
        }
    }
}

/// Reverses a chain ending in null and returns its new head.
///
/// # Safety
/// The caller owns every link of the chain.
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

/// The executor a waker's task runs on, if the waker is a task waker of this crate.
pub(crate) fn executor_of_waker(waker: &Waker) -> Option<&'static Executor> {
    let task = task_of_waker(waker)?;
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
