//! The run queue, in two parts: [`RunQueue`], an intrusive, lock-free, multi-producer stack
//! that wakes push onto (one compare-exchange), and [`ReadyList`], the pollers' FIFO of tasks
//! already in wake order that a budget left over.
//!
//! A push is one compare-exchange on the stack's head, and a poller takes the whole stack with
//! one swap and reverses it, so its tasks come out in wake order. Taking everything at once
//! needs no per-node pop, so there is no ABA hazard. Each task is reversed once, when it comes
//! off the stack; whatever a poll's budget leaves goes on the ready list (a chain with its last
//! task known, so appending is one store), where the next poll starts, before anything taken
//! off the stack after it. So a poll costs O(1) per task it runs, however many are queued:
//! putting the rest back on the stack would cost a walk to its end and a reversal of all of it
//! again at every poll (O(queued) per budget).
//!
//! Order: with one poller at a time, tasks run in the order their pushes took effect (a task
//! woken earlier runs before one woken later; a woken task is never passed over). Several CPUs
//! may poll one executor at once (a DPC queued again while it runs does that): the ready list
//! then has one holder at a time, a second poller that finds it held leaves its work to the
//! holder (which reports work remaining), and a poller that took tasks off the stack without
//! the list runs them beside the holder. The task state word keeps any task on one CPU at a
//! time. See [`ReadyList`] for the one case where order is only approximate.
//!
//! A batch of one task, the common case, is its own reverse and costs one test; it never
//! touches the ready list while the list is empty.

use core::ptr;

use super::sync::{AtomicPtr, Ordering, UnsafeCell, loom_const_fn};
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

/// A chain of tasks its holder owns, `first ..= last`, linked through `run_next`; `last`'s link
/// is null.
#[derive(Clone, Copy)]
pub(crate) struct Chain {
    pub(crate) first: TaskRef,
    pub(crate) last: TaskRef,
}

impl Chain {
    /// The chain taken off a [`RunQueue`] with `newest` at its head, put in wake order.
    ///
    /// # Safety
    /// The caller owns every link of the chain (it took it off the queue).
    #[inline]
    pub(crate) unsafe fn from_newest(newest: TaskRef) -> Self {
        // SAFETY: forwarded.
        let first = unsafe { reverse(newest) };
        // Reversed, the newest task is the last, and its link is now null.
        Self {
            first,
            last: newest,
        }
    }

    /// This chain followed by `after`: one store, to our last task's link.
    pub(crate) fn then(self, after: Option<Self>) -> Self {
        let Some(after) = after else {
            return self;
        };
        // The chain's owner owns its last task's link.
        self.last
            .header()
            .run_next
            .store(after.first.as_ptr(), Ordering::Relaxed);
        Self {
            first: self.first,
            last: after.last,
        }
    }
}

/// The ready list's word when a poller holds it.
const HELD: *mut TaskHeader = ptr::without_provenance_mut(1);
/// The word when a poller holds it and another poller found it held, leaving its work to it.
const HELD_RETRY: *mut TaskHeader = ptr::without_provenance_mut(3);

// Task headers are aligned to more than the tags, so no task's address is one of them.
const _: () = assert!(core::mem::align_of::<TaskHeader>() >= 4);

/// The pollers' FIFO of tasks in wake order left over by a budget, with one holder at a time.
///
/// Its word is null (empty, free), the first task of the list (free), [`HELD`] (a poller holds
/// it) or [`HELD_RETRY`] (held, and another poller came meanwhile). The last task is kept
/// beside it, read and written only by the holder, so appending costs one store.
///
/// A poller that finds the list held (`claim` gives [`Claim::Busy`]) marks the word and
/// leaves: the holder's `release` reports it, and the holder's caller polls again (its
/// `work_remains`), taking whatever the second poller was called for. A poller that ran a
/// batch without the list (the list was empty when it looked) and must keep a rest while the
/// list is held pushes the rest back on the stack instead: tasks woken after that rest may then
/// run before it, the one departure from wake order, only while two pollers overlap, and only
/// by one batch: the next holder appends the rest to the list.
pub(crate) struct ReadyList {
    word: AtomicPtr<TaskHeader>,
    /// The list's last task, while the word holds its first; only the holder touches it.
    last: UnsafeCell<*mut TaskHeader>,
}

/// What [`ReadyList::claim`] found.
pub(crate) enum Claim {
    /// The list is ours until [`ReadyList::release`]: its tasks, if any.
    Held(Option<Chain>),
    /// Another poller holds it, and will report work remaining.
    Busy,
}

impl ReadyList {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self { word: AtomicPtr::new(ptr::null_mut()), last: UnsafeCell::new(ptr::null_mut()) }
        }
    }

    /// True if the list is empty and nobody holds it: a poll may then run a batch without it.
    #[inline]
    pub(crate) fn is_free_and_empty(&self) -> bool {
        // Only a hint: `claim` orders whatever it takes; a stale "free" only costs the order
        // across two overlapping pollers (see the type's docs).
        self.word.load(Ordering::Relaxed).is_null()
    }

    /// True if tasks wait on the list and nobody holds it. A holder reports its own rest.
    pub(crate) fn has_tasks(&self) -> bool {
        let word = self.word.load(Ordering::Acquire);
        !word.is_null() && word != HELD && word != HELD_RETRY
    }

    /// Takes the list, or, if another poller holds it, marks it so that the holder reports
    /// work remaining.
    pub(crate) fn claim(&self) -> Claim {
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            let held = word == HELD || word == HELD_RETRY;
            let new = if held { HELD_RETRY } else { HELD };
            // A read-modify-write even when the mark is there already: the holder's `release`
            // then reads our write (or a later one of the same release sequence), which orders
            // what our caller was called for (a push) before the holder's next poll.
            // Acquire: the previous holder's list and last task. Release: our caller's work,
            // for the holder.
            match self
                .word
                .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if held => return Claim::Busy,
                Ok(_) => {
                    // SAFETY: the word was a task or null (never a tag, by the alignment).
                    let first = unsafe { TaskRef::from_ptr(word) };
                    let list = first.map(|first| {
                        // We hold the list: nobody else touches `last`.
                        let last = self.last.with_mut(|last| {
                            // SAFETY: the holder's alone; written by the previous holder,
                            // whose release our acquire read.
                            unsafe { *last }
                        });
                        // SAFETY: `release` stored the list's last task with its first.
                        let last = unsafe { TaskRef::from_ptr(last) }.unwrap_or(first);
                        Chain { first, last }
                    });
                    return Claim::Held(list);
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives the list back with `rest` on it (the holder's leftover, in wake order). True if
    /// another poller found the list held meanwhile: the caller must report work remaining.
    ///
    /// # Safety
    /// We hold the list (`claim` gave `Held`) and own `rest`.
    pub(crate) unsafe fn release(&self, rest: Option<Chain>) -> bool {
        let first = match rest {
            Some(chain) => {
                self.last.with_mut(|last| {
                    // SAFETY: we hold the list: nobody else touches `last`.
                    unsafe { *last = chain.last.as_ptr() };
                });
                chain.first.as_ptr()
            }
            None => ptr::null_mut(),
        };
        // Release: the list, its last task and its links, for the next holder. Acquire: the
        // work of a poller that marked the word.
        self.word.swap(first, Ordering::AcqRel) == HELD_RETRY
    }
}
