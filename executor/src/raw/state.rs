//! The state words and their transitions, each a named method; the bits are private to this
//! module:
//! - [`State`], the atomic word in every task header, and [`Snapshot`], one read of it;
//! - [`LiveTasks`], an executor's count of live tasks with its closed mark.
//!
//! # The word
//! One `AtomicU64` per task holds every fact that decides who may touch the task: flags in the
//! low byte, and above them a count of wakes ([`WAKE`] per wake).
//!
//! | bits | meaning |
//! |---|---|
//! | `SPAWNED` | the slot holds a task (its future, or its output until the handle takes it) |
//! | `DONE` | the future finished or was dropped: never polled again |
//! | `CANCELLED` | `abort()` or shutdown asked for the future to be dropped |
//! | `HANDLE` | a `JoinHandle` exists |
//! | `CLOSING` | `close` found the task: its poller checks whether its executor is closed |
//! | 8..64: wake count | zero: the task is idle. Otherwise it is *owned*: queued, or being polled |
//!
//! Rules:
//! - A wake is one `fetch_add(WAKE)` ([`State::wake`]). The waker that moves the count from zero
//!   owns the task's queue link and pushes it; every other wake only counts. So a task is never
//!   in a queue twice, and only its owner (the poller that popped it) polls it: never two CPUs at
//!   once.
//! - The poller reads the word (the count `c`) before the poll ([`State::begin_run`]), and after
//!   a `Pending` poll puts the count back to zero with one compare-exchange from what it read
//!   ([`State::after_pending_poll`]). If that fails because the count grew, the task was woken
//!   during the poll: the poller keeps it and re-queues it. So no wake is lost, and the next poll
//!   reads every wake before it.
//! - The count is zero only for a spawned, idle, unfinished task: a free slot holds [`FREE`]
//!   (count one), a spawn keeps the count it claimed the slot with, and finishing sets `DONE`
//!   without lowering it. So a wake needs no other check: a wake of a free, queued, running or
//!   finished task only counts. (Stray wakes through a stale waker count up a free or finished
//!   slot; [`State::release`] and the next idle transition reset the count. The count has 56
//!   bits: at one wake per nanosecond it would take two years of wakes between two of those
//!   resets to overflow.)
//! - The slot is free again once `DONE` is set and `HANDLE` is clear, and whoever clears the last
//!   of the two frees it.

use super::sync::{AtomicU64, AtomicUsize, Ordering, loom_const_fn};

/// The slot holds a task.
const SPAWNED: u64 = 1 << 0;
/// Finished or dropped; never polled again.
const DONE: u64 = 1 << 3;
/// Asked to drop its future.
const CANCELLED: u64 = 1 << 4;
/// A `JoinHandle` refers to the task.
const HANDLE: u64 = 1 << 5;
/// Set by `Executor::close` on the tasks it finds: the poller then checks whether the task's
/// executor is closed before it polls, and drops the future if so. `close` finds tasks by a racy
/// read of their executor, so a recycled slot of another executor may get it too; there the
/// check finds that executor open and the task is polled as usual (the bit stays, the check
/// repeats). Keeping the check behind a flag spares the poll loop a read of the executor's state.
const CLOSING: u64 = 1 << 6;
/// The flag bits; the rest of the word is the wake count.
const FLAGS: u64 = 0xff;
/// One wake in the wake count.
const WAKE: u64 = FLAGS + 1;
/// A free slot: no flags, and a wake count of one so that wakes through stale wakers only count.
const FREE: u64 = WAKE;
/// A slot just claimed by a spawn: the free slot's count (which makes the spawner the owner),
/// with the task and its handle.
const CLAIMED: u64 = FREE | SPAWNED | HANDLE;

/// Checks an invariant of the task state machine: in debug builds and in loom models (which
/// run in release mode).
macro_rules! invariant {
    ($($arg:tt)*) => {
        if cfg!(any(debug_assertions, loom)) {
            assert!($($arg)*);
        }
    };
}

/// What a wake must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Wake {
    /// The count was zero: the task was idle, and the waker now owns it and must queue it.
    Enqueue,
    /// The task was queued, running, finished or free: the wake only counted.
    Counted,
}

/// What the poller must do after a `Pending` poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum AfterPoll {
    /// The task is idle again: the poller gave it up.
    Idle,
    /// The task was woken during the poll: the poller still owns it and must queue it again.
    Requeue,
}

/// What the owner must do after it marked the task `DONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Finished {
    /// A handle exists: wake it; it frees the slot when it goes.
    WakeHandle,
    /// No handle: the owner frees the slot.
    FreeSlot,
}

/// What `abort` must do after it set `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Abort {
    /// The task has not finished: wake it, so that its poller drops its future.
    WakeTask,
    /// The task had finished already: nothing to do.
    AlreadyDone,
}

/// What dropping the handle must do after it cleared `HANDLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum HandleDropped {
    /// The task had finished: the handle frees the slot.
    FreeSlot,
    /// The task runs on, detached; whoever finishes it frees the slot.
    Detached,
}

/// A task's state word.
pub(crate) struct State(AtomicU64);

/// One read of a [`State`]: what the poller decides the poll by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot(u64);

impl Snapshot {
    /// Cancelled, closing or (a bug) finished: the poller must look closer before it polls.
    #[inline]
    pub(crate) fn may_need_drop(self) -> bool {
        self.0 & (CANCELLED | CLOSING | DONE) != 0
    }

    /// The future finished or was dropped.
    pub(crate) fn is_done(self) -> bool {
        self.0 & DONE != 0
    }

    /// `abort` (or shutdown) asked for the future to be dropped.
    pub(crate) fn is_cancelled(self) -> bool {
        self.0 & CANCELLED != 0
    }
}

impl State {
    loom_const_fn! {
        /// The state of a free slot.
        pub(crate) fn free() -> Self {
            Self(AtomicU64::new(FREE))
        }
    }

    /// Counts a wake; the waker that moves the count from zero owns the task and must queue it.
    #[inline]
    pub(crate) fn wake(&self) -> Wake {
        // Always a write, even when the task is already owned: the poller's compare-exchange then
        // sees the count grow, and the next poll's load reads-from this release.
        let previous = self.0.fetch_add(WAKE, Ordering::AcqRel);
        if previous < WAKE {
            Wake::Enqueue
        } else {
            Wake::Counted
        }
    }

    /// The poller's read before it polls a task it took off a queue.
    ///
    /// # Panics
    /// In debug builds and loom models, if the task is not spawned, finished or not owned (a
    /// task queued twice).
    #[inline]
    pub(crate) fn begin_run(&self) -> Snapshot {
        // The poller owns the task (its wake count is not zero and only it can bring it back to
        // zero), so a plain load suffices: it acquires every wake counted so far.
        let state = self.0.load(Ordering::Acquire);
        invariant!(
            state >= WAKE && state & (SPAWNED | DONE) == SPAWNED,
            "a dequeued task must be spawned, unfinished and owned: queued twice?"
        );
        Snapshot(state)
    }

    /// After a `Pending` poll: back to idle (the count to zero) unless the task was woken since
    /// `seen` (read by [`begin_run`](Self::begin_run)).
    #[inline]
    pub(crate) fn after_pending_poll(&self, seen: Snapshot) -> AfterPoll {
        if self
            .0
            .compare_exchange(seen.0, seen.0 & FLAGS, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            AfterPoll::Idle
        } else {
            self.after_pending_poll_changed(seen)
        }
    }

    /// [`after_pending_poll`](Self::after_pending_poll) when the word changed during the poll.
    #[cold]
    #[inline(never)]
    fn after_pending_poll_changed(&self, seen: Snapshot) -> AfterPoll {
        let mut state = self.0.load(Ordering::Relaxed);
        // Only wakes change the count while the poller owns the task, and only upwards.
        while state & !FLAGS == seen.0 & !FLAGS {
            // Only a flag changed (the handle was dropped, or `abort` set CANCELLED, or `close`
            // CLOSING: their wakes follow and will queue the task).
            match self.0.compare_exchange_weak(
                state,
                state & FLAGS,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return AfterPoll::Idle,
                Err(actual) => state = actual,
            }
        }
        // Woken during its poll: those wakers only counted and left the push to the poller.
        AfterPoll::Requeue
    }

    /// The owner's mark that the future finished or was dropped. The wake count stays above
    /// zero for good, so wakes from now on only count.
    ///
    /// # Panics
    /// In debug builds and loom models, if the task had finished already.
    #[inline]
    pub(crate) fn finish(&self) -> Finished {
        // DONE is the owner's to set, so an add sets it.
        let state = self.0.fetch_add(DONE, Ordering::AcqRel);
        invariant!(state & DONE == 0, "a task finished twice");
        if state & HANDLE != 0 {
            Finished::WakeHandle
        } else {
            Finished::FreeSlot
        }
    }

    /// Marks the slot free (by whoever cleared the last of `HANDLE` and set the last of `DONE`,
    /// or by a spawn that gives its claim back).
    #[inline]
    pub(crate) fn release(&self) {
        self.0.store(FREE, Ordering::Release);
    }

    /// Claims the slot for a spawn if it is simply free (no stray wakes counted): sets
    /// `SPAWNED` and `HANDLE`, keeping the count, which makes the spawner the task's owner.
    #[inline]
    pub(crate) fn try_claim_free(&self) -> bool {
        self.0
            .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// [`try_claim_free`](Self::try_claim_free), also for a free slot whose count stray wakes
    /// through stale wakers raised (it is claimed with that count).
    #[inline]
    pub(crate) fn try_claim(&self) -> bool {
        let mut state = FREE;
        loop {
            match self.0.compare_exchange(
                state,
                state | SPAWNED | HANDLE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                // Free, but a stale waker counted a wake: claim it with that count.
                Err(actual) if actual & FLAGS == 0 => state = actual,
                Err(_) => return false,
            }
        }
    }

    /// Sets `CLOSING` on a live task (spawned, not finished); a free or finished slot is left
    /// alone (a free slot must stay flag-free to be claimed again).
    pub(crate) fn mark_closing(&self) {
        let mut state = self.0.load(Ordering::Relaxed);
        while state & (SPAWNED | DONE | CLOSING) == SPAWNED {
            match self.0.compare_exchange_weak(
                state,
                state | CLOSING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => state = actual,
            }
        }
    }

    /// Sets `CANCELLED` (the handle's `abort`).
    pub(crate) fn abort(&self) -> Abort {
        let previous = self.0.fetch_or(CANCELLED, Ordering::AcqRel);
        if previous & DONE == 0 {
            Abort::WakeTask
        } else {
            Abort::AlreadyDone
        }
    }

    /// Clears `HANDLE` (the handle's drop; the bit is the handle's to clear).
    #[inline]
    pub(crate) fn drop_handle(&self) -> HandleDropped {
        // A subtraction clears the bit: one locked add, where fetch_and with its result used is
        // a compare-exchange loop.
        let previous = self.0.fetch_sub(HANDLE, Ordering::AcqRel);
        if previous & DONE != 0 {
            HandleDropped::FreeSlot
        } else {
            HandleDropped::Detached
        }
    }

    /// The future finished or was dropped (acquires the output's write).
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) & DONE != 0
    }

    /// The slot holds a task or an output its handle has not taken.
    pub(crate) fn is_spawned(&self) -> bool {
        self.0.load(Ordering::Acquire) & SPAWNED != 0
    }
}

/// Set in [`LiveTasks`] once the executor is closed.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// An executor's futures not yet finished or dropped, and whether it is closed: one word, so
/// that a spawn counts itself in only while the executor is open.
pub(crate) struct LiveTasks(AtomicUsize);

impl LiveTasks {
    loom_const_fn! {
        /// No task, open.
        pub(crate) fn new() -> Self {
            Self(AtomicUsize::new(0))
        }
    }

    /// One attempt at counting a new task in: false when the executor is closed, and also when
    /// the attempt lost a race (then [`try_add`](Self::try_add)).
    #[inline]
    pub(crate) fn try_add_once(&self) -> bool {
        let live = self.0.load(Ordering::Relaxed);
        self.try_add_from(live).is_ok()
    }

    /// Counts a new task in; fails once the executor is closed.
    pub(crate) fn try_add(&self) -> bool {
        let mut live = self.0.load(Ordering::Relaxed);
        loop {
            match self.try_add_from(live) {
                Ok(()) => return true,
                Err(Some(actual)) => live = actual,
                Err(None) => return false,
            }
        }
    }

    /// One compare-exchange from `live`: `Err(None)` if closed, `Err(Some(actual))` on a race.
    #[inline]
    fn try_add_from(&self, live: usize) -> Result<(), Option<usize>> {
        if live & CLOSED != 0 {
            return Err(None);
        }
        match self
            .0
            .compare_exchange_weak(live, live + 1, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(actual) => Err(Some(actual)),
        }
    }

    /// Counts a task out: its future finished or was dropped.
    #[inline]
    pub(crate) fn remove(&self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// Marks the executor closed: spawns fail from now on.
    pub(crate) fn close(&self) {
        self.0.fetch_or(CLOSED, Ordering::SeqCst);
    }

    /// Opens a drained executor again (closed, no task counted in); false, and nothing
    /// changed, if it is not drained.
    pub(crate) fn reopen(&self) -> bool {
        self.0
            .compare_exchange(CLOSED, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Tasks counted in.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire) & !CLOSED
    }

    /// Closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closed, with no task counted in.
    pub(crate) fn is_drained(&self) -> bool {
        self.0.load(Ordering::Acquire) == CLOSED
    }
}
