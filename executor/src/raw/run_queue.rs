//! The run queue: an intrusive, lock-free, multi-producer stack of tasks linked through their
//! headers' `run_next`, taken whole by the poller.
//!
//! A push is one compare-exchange on the head, and the poller takes the whole stack with one
//! swap and reverses it, so tasks run in wake order within a batch. Taking
//! everything at once needs no per-node pop, so there is no ABA hazard. Several CPUs may poll
//! one executor at once (a DPC re-queued while it runs does that): each takes its own batch, and
//! the task state word keeps any task on one CPU at a time.
//!
//! The reversal is what keeps a budget-cut batch fair: its rest goes back on top of the stack,
//! and the next reversal puts it before anything queued after that. Run newest first, tasks
//! queued after the cut would run first, and under sustained load the rest could wait for ever.
//! A batch of one task, the common case, is its own reverse and costs one test.

use core::ptr;

use super::sync::{AtomicPtr, Ordering, loom_const_fn};
use super::task::{TaskHeader, TaskRef};

/// A multi-producer, take-all stack of task headers linked through `run_next`.
pub(crate) struct RunQueue {
    head: AtomicPtr<TaskHeader>,
}

impl RunQueue {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self { head: AtomicPtr::new(ptr::null_mut()) }
        }
    }

    /// Pushes one task with one attempt: whether the queue was empty, or `Err` if the attempt
    /// lost a race (then push it with [`push_chain`](Self::push_chain)).
    ///
    /// # Safety
    /// The caller owns the task, and so its link.
    #[inline]
    pub(crate) unsafe fn try_push(&self, task: TaskRef) -> Result<bool, ()> {
        let head = self.head.load(Ordering::Relaxed);
        // SAFETY: forwarded.
        unsafe { self.try_push_chain(task, task, head) }.map_err(|_| ())
    }

    /// Pushes the chain `first ..= last` (linked through `run_next`); true if the queue was empty.
    ///
    /// # Safety
    /// The caller owns every task in the chain, and so their links.
    pub(crate) unsafe fn push_chain(&self, first: TaskRef, last: TaskRef) -> bool {
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
        first: TaskRef,
        last: TaskRef,
        head: *mut TaskHeader,
    ) -> Result<bool, *mut TaskHeader> {
        // The caller owns `last`'s link.
        last.header().run_next.store(head, Ordering::Relaxed);
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

    /// Takes every queued task, newest first; the caller owns their links from then on.
    #[inline]
    pub(crate) fn take_all(&self) -> Option<TaskRef> {
        let newest = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: only tasks (headers in 'static pools) are pushed.
        unsafe { TaskRef::from_ptr(newest) }
    }

    /// True if no task is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Acquire).is_null()
    }
}

/// The task after `task` in a chain its caller owns.
#[inline]
pub(crate) fn next_in_chain(task: TaskRef) -> Option<TaskRef> {
    let next = task.header().run_next.load(Ordering::Relaxed);
    // SAFETY: links only ever hold tasks (headers in 'static pools) or null.
    unsafe { TaskRef::from_ptr(next) }
}

/// Reverses a chain ending in null and returns its new head.
///
/// # Safety
/// The caller owns every link of the chain.
#[inline]
pub(crate) unsafe fn reverse(head: TaskRef) -> TaskRef {
    if next_in_chain(head).is_none() {
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
unsafe fn reverse_chain(head: TaskRef) -> TaskRef {
    let mut previous: *mut TaskHeader = ptr::null_mut();
    let mut current = Some(head);
    while let Some(task) = current {
        // The caller owns the link.
        let link = &task.header().run_next;
        current = next_in_chain(task);
        link.store(previous, Ordering::Relaxed);
        previous = task.as_ptr();
    }
    // SAFETY: `previous` is the last task of the chain, a task.
    unsafe { TaskRef::from_ptr(previous) }.unwrap_or(head)
}

/// The last task of a chain ending in null.
///
/// # Safety
/// The caller owns every link of the chain.
pub(crate) unsafe fn chain_end(mut task: TaskRef) -> TaskRef {
    while let Some(next) = next_in_chain(task) {
        task = next;
    }
    task
}
