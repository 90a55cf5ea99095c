//! The task header, its state word and the waker vtable.
//!
//! # The state word
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
//! - A wake is one `fetch_add(WAKE)`. The waker that moves the count from zero owns the task's
//!   queue link and pushes it; every other wake only counts. So a task is never in a queue twice,
//!   and only its owner (the poller that popped it) polls it: never two CPUs at once.
//! - The poller reads the word (the count `c`) before the poll, and after a `Pending` poll puts
//!   the count back to zero with one compare-exchange from what it read. If that fails because
//!   the count grew, the task was woken during the poll: the poller keeps it and re-queues it.
//!   So no wake is lost, and the next poll reads every wake before it.
//! - The count is zero only for a spawned, idle, unfinished task: a free slot holds [`FREE`]
//!   (count one), a spawn keeps the count it claimed the slot with, and finishing sets `DONE`
//!   without lowering it. So a wake needs no other check: a wake of a free, queued, running or
//!   finished task only counts. (Stray wakes through a stale waker count up a free or finished
//!   slot; `free_slot` and the next idle transition reset the count. The count has 56 bits: at
//!   one wake per nanosecond it would take two years of wakes between two of those resets to
//!   overflow.)
//! - The slot is free again once `DONE` is set and `HANDLE` is clear, and whoever clears the last
//!   of the two frees it.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::task::{RawWaker, RawWakerVTable, Waker};

use super::atomic_waker::AtomicWaker;
use super::executor::{ErasedPender, ExecutorCore, Pender};
use super::sync::{AtomicPtr, AtomicU64, Ordering, UnsafeCell, loom_const_fn};

/// The slot holds a task.
pub(crate) const SPAWNED: u64 = 1 << 0;
/// Finished or dropped; never polled again.
pub(crate) const DONE: u64 = 1 << 3;
/// Asked to drop its future.
pub(crate) const CANCELLED: u64 = 1 << 4;
/// A `JoinHandle` refers to the task.
pub(crate) const HANDLE: u64 = 1 << 5;
/// Set by [`Executor::close`] on the tasks it finds: the poller then checks whether the task's
/// executor is closed before it polls, and drops the future if so. `close` finds tasks by a racy
/// read of their executor, so a recycled slot of another executor may get it too; there the
/// check finds that executor open and the task is polled as usual (the bit stays, the check
/// repeats). Keeping the check behind a flag spares the poll loop a read of the executor's state.
pub(crate) const CLOSING: u64 = 1 << 6;
/// The flag bits; the rest of the word is the wake count.
pub(crate) const FLAGS: u64 = 0xff;
/// One wake in the wake count.
pub(crate) const WAKE: u64 = FLAGS + 1;
/// A free slot: no flags, and a wake count of one so that wakes through stale wakers only count.
pub(crate) const FREE: u64 = WAKE;

/// Runs a dequeued task: [`run_task`](super::executor::run_task) with its future's poll.
pub(crate) type RunFn = unsafe fn(NonNull<TaskHeader>);

/// What the header needs to know about the future type stored after it, besides how to run it
/// (the header's `run`).
pub(crate) struct TaskVTable {
    /// Drops the future in place (cancellation).
    pub(crate) cancel: unsafe fn(NonNull<TaskHeader>),
    /// Moves the output, if still there, into `*out` (an `Option<F::Output>`).
    pub(crate) take_output: unsafe fn(NonNull<TaskHeader>, out: *mut ()),
    /// Drops whatever the storage still holds (an output nobody took).
    pub(crate) drop_stage: unsafe fn(NonNull<TaskHeader>),
}

/// The part of every task the executor works with; the future's storage follows it in its slot.
pub(crate) struct TaskHeader {
    pub(crate) state: AtomicU64,
    /// The run-queue link, owned by whoever moved the wake count from zero (or claimed the slot).
    pub(crate) run_next: AtomicPtr<TaskHeader>,
    /// The executor the task runs on; read racily by shutdown scans, so atomic.
    pub(crate) executor: core::sync::atomic::AtomicPtr<ExecutorCore>,
    /// How to run the task, in the header itself so that the poll loop's call is one load from
    /// the task. Written at spawn, while the spawner owns the claimed slot.
    pub(crate) run: UnsafeCell<RunFn>,
    /// Written at spawn, while the spawner owns the claimed slot.
    pub(crate) vtable: UnsafeCell<&'static TaskVTable>,
    /// The `JoinHandle`'s waker.
    pub(crate) join_waker: AtomicWaker,
}

// SAFETY: every field is atomic except `vtable`, which is written only while the slot is claimed
// (SPAWNED with a wake count the spawner holds: nobody else can poll or free it) and read afterwards by parties
// ordered after that write through the state word.
unsafe impl Sync for TaskHeader {}
// SAFETY: as above.
unsafe impl Send for TaskHeader {}

impl TaskHeader {
    loom_const_fn! {
        /// A free slot's header.
        pub(crate) fn new() -> Self {
            Self {
                state: AtomicU64::new(FREE),
                run_next: AtomicPtr::new(core::ptr::null_mut()),
                executor: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
                run: UnsafeCell::new(no_task),
                vtable: UnsafeCell::new(&NO_TASK),
                join_waker: AtomicWaker::new(),
            }
        }
    }
}

/// The vtable of a slot that never held a task: nothing reads it (every read is ordered after a
/// spawn's write), so its functions only report the bug.
static NO_TASK: TaskVTable = TaskVTable {
    cancel: no_task,
    take_output: no_task_take_output,
    drop_stage: no_task,
};

#[cold]
fn no_task(_: NonNull<TaskHeader>) {
    unreachable!("task vtable read before spawn wrote it");
}

#[cold]
fn no_task_take_output(task: NonNull<TaskHeader>, _: *mut ()) {
    no_task(task);
}

/// Reads the task's vtable.
///
/// # Safety
/// The task must be spawned and the caller ordered after the spawn's write (it owns the task,
/// or observed `DONE`, or owns the handle).
pub(crate) unsafe fn vtable_of(task: NonNull<TaskHeader>) -> &'static TaskVTable {
    // SAFETY: the caller guarantees the header is valid and the vtable written and not changing.
    unsafe { task.as_ref() }.vtable.with_mut(|vtable| {
        // SAFETY: no concurrent writer (see above).
        unsafe { *vtable }
    })
}

/// Reads the task's run function.
///
/// # Safety
/// As for [`vtable_of`].
#[inline]
pub(crate) unsafe fn run_of(task: NonNull<TaskHeader>) -> RunFn {
    // SAFETY: the caller guarantees the header is valid and `run` written and not changing.
    unsafe { task.as_ref() }.run.with_mut(|run| {
        // SAFETY: no concurrent writer (see above).
        unsafe { *run }
    })
}

/// Frees a finished task's slot: drops what its storage still holds and marks it reusable.
///
/// # Safety
/// The caller cleared the last of `HANDLE` / set the last of `DONE`: nobody else touches the slot.
pub(crate) unsafe fn free_slot(task: NonNull<TaskHeader>) {
    // SAFETY: DONE was observed, so the spawn's vtable write is visible and final.
    let vtable = unsafe { vtable_of(task) };
    // SAFETY: forwarded; `drop_stage` is the task's own.
    unsafe { free_slot_with(task, || (vtable.drop_stage)(task)) };
}

/// [`free_slot`] with the task's `drop_stage` known statically (no vtable call).
///
/// # Safety
/// As for `free_slot`, and `drop_stage` drops the task's stage in place.
#[inline]
pub(crate) unsafe fn free_slot_with(task: NonNull<TaskHeader>, drop_stage: impl FnOnce()) {
    // SAFETY: the caller owns the finished slot.
    let header = unsafe { task.as_ref() };
    drop_stage();
    // The join waker is empty here: only the handle registers one, and its drop takes it out
    // before clearing HANDLE; a wake of it after the task finished takes it too. (A late wake
    // racing with the next task's handle is the AtomicWaker's business: at worst a spurious
    // wake of that handle.)
    header.state.store(FREE, Ordering::Release);
}

/// Checks an invariant of the task state machine: in debug builds and in loom models (which
/// run in release mode).
macro_rules! invariant {
    ($($arg:tt)*) => {
        if cfg!(any(debug_assertions, loom)) {
            assert!($($arg)*);
        }
    };
}
pub(crate) use invariant;

/// Wakes the task: queues it if it is idle; a queued or running task only counts the wake (its
/// poller re-queues it after the poll), a finished or free one ignores it. A wake that queues the
/// task pends with `P::pend` (`ErasedPender`: through the executor's pointer, right for any task).
///
/// # Safety
/// `task` points to a task header in `'static` storage, in a pool bound to `P` (so its
/// executor, whenever it has one, is an `Executor<P>`), or `P` is `ErasedPender`.
#[inline]
pub(crate) unsafe fn wake_task<P: Pender>(task: NonNull<TaskHeader>) {
    // SAFETY: the caller guarantees a valid, 'static header.
    let header = unsafe { task.as_ref() };
    // Always a write, even when the task is already owned: the poller's compare-exchange then
    // sees the count grow, and the next poll's load reads-from this release.
    let previous = header.state.fetch_add(WAKE, Ordering::AcqRel);
    if previous < WAKE {
        // The count was zero: a spawned, idle, unfinished task, and we own it now.
        let executor = header.executor.load(Ordering::Relaxed);
        // SAFETY: we moved the count from zero, so we own the queue link, and the slot cannot be
        // freed before the task is popped and polled. The executor pointer was written at spawn,
        // before the release of the state we acquired, and executors are 'static. It is an
        // `Executor<P>`'s core or `P` is `ErasedPender` (the caller's guarantee).
        unsafe { (*executor).enqueue::<P>(task) };
    }
}

/// The waker vtable of the tasks of `Executor<P>`s; a waker's data pointer is the task header.
pub(crate) struct WakerVTableFor<P>(PhantomData<P>);

impl<P: Pender> WakerVTableFor<P> {
    pub(crate) const VTABLE: RawWakerVTable = RawWakerVTable::new(
        waker_clone::<P>,
        waker_wake::<P>,
        waker_wake::<P>,
        waker_drop,
    );
}

/// Task wakers hold no reference count: task storage is `'static`, and a waker that outlives its
/// task at most wakes the slot's next task spuriously (of the same pool, so of an `Executor<P>`
/// too).
unsafe fn waker_clone<P: Pender>(data: *const ()) -> RawWaker {
    RawWaker::new(data, P::WAKER_VTABLE)
}

unsafe fn waker_wake<P: Pender>(data: *const ()) {
    // SAFETY: task wakers of `P` are only made by `task_waker::<P>` from a 'static, non-null
    // header in a pool bound to `P`.
    unsafe { wake_task::<P>(NonNull::new_unchecked(data.cast_mut().cast())) };
}

unsafe fn waker_drop(_: *const ()) {}

/// The waker that wakes `task`.
///
/// # Safety
/// `task` points to a task header in `'static` storage, in a pool bound to `P`.
pub(crate) unsafe fn task_waker<P: Pender>(task: NonNull<TaskHeader>) -> Waker {
    // SAFETY: the vtable's functions uphold RawWaker's contract for a 'static header, and
    // `wake_task::<P>`'s for a task of a pool bound to `P`.
    unsafe {
        Waker::from_raw(RawWaker::new(
            task.as_ptr().cast_const().cast(),
            P::WAKER_VTABLE,
        ))
    }
}

/// The task a waker wakes, if it is a task waker of an `Executor<P>` (reliable only for a `P`
/// whose [`Pender::WAKER_VTABLE`] is a `static`).
pub(crate) fn task_of_waker<P: Pender>(waker: &Waker) -> Option<NonNull<TaskHeader>> {
    if core::ptr::eq(waker.vtable(), P::WAKER_VTABLE) {
        NonNull::new(waker.data().cast_mut().cast())
    } else {
        None
    }
}

/// Wakes `task` through its executor's pender pointer: for callers that do not know the pender's
/// type (`abort`, `close`).
///
/// # Safety
/// `task` points to a task header in `'static` storage.
pub(crate) unsafe fn wake_task_erased(task: NonNull<TaskHeader>) {
    // SAFETY: forwarded; `ErasedPender` is right for any task.
    unsafe { wake_task::<ErasedPender>(task) };
}
