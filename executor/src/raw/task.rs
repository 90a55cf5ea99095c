//! The task header, its state word and the waker vtable.
//!
//! # The state word
//! One `AtomicU32` per task holds every fact that decides who may touch the task:
//!
//! | bit | meaning |
//! |---|---|
//! | `SPAWNED` | the slot holds a task (its future, or its output until the handle takes it) |
//! | `QUEUED` | the task is in a run queue, or was woken while running and must be re-queued |
//! | `RUNNING` | one CPU is polling it; nobody else may |
//! | `DONE` | the future finished or was dropped: never polled again |
//! | `CANCELLED` | `abort()` or shutdown asked for the future to be dropped |
//! | `HANDLE` | a `JoinHandle` exists |
//!
//! Rules: a wake sets `QUEUED` and only the waker that set it on an idle task pushes it, so a task
//! is never in a queue twice; a wake while `RUNNING` only sets `QUEUED`, and the poller re-queues
//! the task after its poll, so no wake is lost and no second CPU polls the task meanwhile. The
//! slot is free again (state 0) once `DONE` is set and `HANDLE` is clear, and whoever clears the
//! last of the two frees it.

use core::ptr::NonNull;
use core::task::{RawWaker, RawWakerVTable, Waker};

use super::atomic_waker::AtomicWaker;
use super::executor::Executor;
use super::sync::{AtomicPtr, AtomicU32, Ordering, UnsafeCell, loom_const_fn};

/// The slot holds a task.
pub(crate) const SPAWNED: u32 = 1 << 0;
/// In a run queue (or owed a re-queue after the current poll).
pub(crate) const QUEUED: u32 = 1 << 1;
/// Being polled.
pub(crate) const RUNNING: u32 = 1 << 2;
/// Finished or dropped; never polled again.
pub(crate) const DONE: u32 = 1 << 3;
/// Asked to drop its future.
pub(crate) const CANCELLED: u32 = 1 << 4;
/// A `JoinHandle` refers to the task.
pub(crate) const HANDLE: u32 = 1 << 5;

/// What the header needs to know about the future type stored after it.
pub(crate) struct TaskVTable {
    /// Polls the future; true when it finished (its output is stored in place of it).
    pub(crate) poll: unsafe fn(NonNull<TaskHeader>) -> bool,
    /// Drops the future in place (cancellation).
    pub(crate) cancel: unsafe fn(NonNull<TaskHeader>),
    /// Moves the output, if still there, into `*out` (an `Option<F::Output>`).
    pub(crate) take_output: unsafe fn(NonNull<TaskHeader>, out: *mut ()),
    /// Drops whatever the storage still holds (an output nobody took).
    pub(crate) drop_stage: unsafe fn(NonNull<TaskHeader>),
}

/// The part of every task the executor works with; the future's storage follows it in its slot.
pub(crate) struct TaskHeader {
    pub(crate) state: AtomicU32,
    /// The run-queue link, owned by whoever set `QUEUED` on an idle task.
    pub(crate) run_next: AtomicPtr<TaskHeader>,
    /// The executor the task runs on; read racily by shutdown scans, so atomic.
    pub(crate) executor: core::sync::atomic::AtomicPtr<Executor>,
    /// Written at spawn, while the spawner owns the claimed slot.
    pub(crate) vtable: UnsafeCell<Option<&'static TaskVTable>>,
    /// The `JoinHandle`'s waker.
    pub(crate) join_waker: AtomicWaker,
}

// SAFETY: every field is atomic except `vtable`, which is written only while the slot is claimed
// (state SPAWNED|QUEUED with nobody else able to poll or free it) and read afterwards by parties
// ordered after that write through the state word.
unsafe impl Sync for TaskHeader {}
// SAFETY: as above.
unsafe impl Send for TaskHeader {}

impl TaskHeader {
    loom_const_fn! {
        /// A free slot's header.
        pub(crate) fn new() -> Self {
            Self {
                state: AtomicU32::new(0),
                run_next: AtomicPtr::new(core::ptr::null_mut()),
                executor: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
                vtable: UnsafeCell::new(None),
                join_waker: AtomicWaker::new(),
            }
        }
    }
}

/// Reads the task's vtable.
///
/// # Safety
/// The task must be spawned and the caller ordered after the spawn's write (it holds `RUNNING`,
/// or observed `DONE`, or owns the handle).
pub(crate) unsafe fn vtable_of(task: NonNull<TaskHeader>) -> &'static TaskVTable {
    // SAFETY: the caller guarantees the header is valid and the vtable written and not changing.
    unsafe { task.as_ref() }.vtable.with_mut(|vtable| {
        // SAFETY: no concurrent writer (see above).
        unsafe { *vtable }.expect("task vtable read before spawn wrote it")
    })
}

/// Frees a finished task's slot: drops what its storage still holds and marks it reusable.
///
/// # Safety
/// The caller cleared the last of `HANDLE` / set the last of `DONE`: nobody else touches the slot.
pub(crate) unsafe fn free_slot(task: NonNull<TaskHeader>) {
    // SAFETY: the caller owns the finished slot.
    let header = unsafe { task.as_ref() };
    // SAFETY: DONE was observed, so the spawn's vtable write is visible and final.
    let vtable = unsafe { vtable_of(task) };
    // SAFETY: exclusive owner of a finished task.
    unsafe { (vtable.drop_stage)(task) };
    // The join waker is empty here: only the handle registers one, and its drop takes it out
    // before clearing HANDLE; a wake of it after the task finished takes it too. (A late wake
    // racing with the next task's handle is the AtomicWaker's business: at worst a spurious
    // wake of that handle.)
    header.state.store(0, Ordering::Release);
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

/// Wakes the task: queues it unless it is already queued, running (then it is re-queued after
/// its poll), finished or free.
///
/// # Safety
/// `task` points to a task header in `'static` storage.
pub(crate) unsafe fn wake_task(task: NonNull<TaskHeader>) {
    // SAFETY: the caller guarantees a valid, 'static header.
    let header = unsafe { task.as_ref() };
    let mut state = header.state.load(Ordering::Relaxed);
    loop {
        if state & SPAWNED == 0 || state & DONE != 0 {
            return;
        }
        // Even when QUEUED is already set, write the word (unchanged): the poll that clears
        // QUEUED must read-from this release, or it could miss what the waker wrote before
        // waking (a loom model found that lost wake with a plain load here).
        match header.state.compare_exchange_weak(
            state,
            state | QUEUED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        ) {
            Ok(_) => break,
            Err(actual) => state = actual,
        }
    }
    if state & (RUNNING | QUEUED) == 0 {
        let executor = header.executor.load(Ordering::Relaxed);
        // SAFETY: we set QUEUED on a spawned, idle task, so we own its queue link, and the slot
        // cannot be freed before the task is popped and polled. The executor pointer was written
        // at spawn, before the release of the state we acquired, and executors are 'static.
        unsafe { (*executor).enqueue(task) };
    }
}

/// The vtable of every task waker; its data pointer is the task header.
static TASK_WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake, waker_drop);

/// Task wakers hold no reference count: task storage is `'static`, and a waker that outlives its
/// task at most wakes the slot's next task spuriously.
unsafe fn waker_clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &TASK_WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: task wakers are only made by `task_waker` from a 'static, non-null header.
    unsafe { wake_task(NonNull::new_unchecked(data.cast_mut().cast())) };
}

unsafe fn waker_drop(_: *const ()) {}

/// The waker that wakes `task`.
///
/// # Safety
/// `task` points to a task header in `'static` storage.
pub(crate) unsafe fn task_waker(task: NonNull<TaskHeader>) -> Waker {
    // SAFETY: the vtable's functions uphold RawWaker's contract for a 'static header.
    unsafe {
        Waker::from_raw(RawWaker::new(
            task.as_ptr().cast_const().cast(),
            &TASK_WAKER_VTABLE,
        ))
    }
}

/// The task a waker wakes, if it is one of ours.
pub(crate) fn task_of_waker(waker: &Waker) -> Option<NonNull<TaskHeader>> {
    if core::ptr::eq(waker.vtable(), &raw const TASK_WAKER_VTABLE) {
        NonNull::new(waker.data().cast_mut().cast())
    } else {
        None
    }
}
