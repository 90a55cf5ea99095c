//! The task header, [`TaskRef`] (the one way to reach a header in `'static` storage) and the
//! waker vtable. The header's state word and its transitions live in the `state` module.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::task::{RawWaker, RawWakerVTable, Waker};

use super::atomic_waker::AtomicWaker;
use super::executor::{ErasedPender, ExecutorCore, Pender};
use super::state::{State, Wake};
use super::sync::{AtomicPtr, Ordering, UnsafeCell, loom_const_fn};

/// Runs a dequeued task: [`run_task`](super::executor::run_task) with its future's poll.
pub(crate) type RunFn = unsafe fn(TaskRef);

/// What the header needs to know about the future type stored after it, besides how to run it
/// (the header's `run`).
pub(crate) struct TaskVTable {
    /// Drops the future in place (cancellation).
    pub(crate) cancel: unsafe fn(TaskRef),
    /// Moves the output, if still there, into `*out` (an `Option<F::Output>`).
    pub(crate) take_output: unsafe fn(TaskRef, out: *mut ()),
    /// Drops whatever the storage still holds (an output nobody took).
    pub(crate) drop_stage: unsafe fn(TaskRef),
}

/// The part of every task the executor works with; the future's storage follows it in its slot.
pub(crate) struct TaskHeader {
    /// Who may touch the task: see the `state` module.
    pub(crate) state: State,
    /// The run-queue link, owned by whoever moved the wake count from zero (or claimed the slot).
    pub(crate) run_next: AtomicPtr<TaskHeader>,
    /// The executor the task runs on; read racily by shutdown scans, so atomic. Only ever set
    /// from a `&'static ExecutorCore`.
    executor: AtomicPtr<ExecutorCore>,
    /// How to run the task, in the header itself so that the poll loop's call is one load from
    /// the task. Written at spawn, while the spawner owns the claimed slot.
    run: UnsafeCell<RunFn>,
    /// Written at spawn, while the spawner owns the claimed slot.
    vtable: UnsafeCell<&'static TaskVTable>,
    /// The `JoinHandle`'s waker.
    pub(crate) join_waker: AtomicWaker,
}

// SAFETY: every field is atomic except `run` and `vtable`, which are written only while the slot
// is claimed (SPAWNED with a wake count the spawner holds: nobody else can poll or free it) and
// read afterwards by parties ordered after that write through the state word.
unsafe impl Sync for TaskHeader {}
// SAFETY: as above.
unsafe impl Send for TaskHeader {}

impl TaskHeader {
    loom_const_fn! {
        /// A free slot's header.
        pub(crate) fn new() -> Self {
            Self {
                state: State::free(),
                run_next: AtomicPtr::new(core::ptr::null_mut()),
                executor: AtomicPtr::new(core::ptr::null_mut()),
                run: UnsafeCell::new(no_task),
                vtable: UnsafeCell::new(&NO_TASK),
                join_waker: AtomicWaker::new(),
            }
        }
    }

    /// Publishes the executor a spawn puts the task on (before the task counts in its `live`:
    /// see `ExecutorCore::close`).
    #[inline]
    pub(crate) fn set_executor(&self, executor: &'static ExecutorCore) {
        self.executor
            .store(core::ptr::from_ref(executor).cast_mut(), Ordering::Release);
    }

    /// The executor the slot's latest spawn published, if any: a racy read, for shutdown scans
    /// and timers (the slot may be recycled meanwhile).
    #[inline]
    pub(crate) fn published_executor(&self) -> Option<&'static ExecutorCore> {
        let executor = self.executor.load(Ordering::Acquire);
        // SAFETY: only `set_executor` stores a non-null pointer, from a `&'static ExecutorCore`,
        // with a release that this acquire reads from.
        unsafe { executor.as_ref() }
    }

    /// The executor the task was spawned on.
    ///
    /// # Safety
    /// The caller owns the task (or otherwise knows it spawned, with the spawn's publication
    /// ordered before it).
    #[inline]
    pub(crate) unsafe fn spawned_executor(&self) -> &'static ExecutorCore {
        let executor = self.executor.load(Ordering::Relaxed);
        // SAFETY: written at spawn from a 'static executor, ordered before us (the caller's
        // guarantee), so not null.
        unsafe { &*executor }
    }

    /// Writes how to run the task and its vtable (a spawn, into the slot it claimed).
    ///
    /// # Safety
    /// The caller claimed the slot: nobody else reads or writes these until it queues the task.
    #[inline]
    pub(crate) unsafe fn write_task_type(&self, run: RunFn, vtable: &'static TaskVTable) {
        self.run.with_mut(|slot| {
            // SAFETY: the caller's claim excludes every other access.
            unsafe { slot.write(run) };
        });
        self.vtable.with_mut(|slot| {
            // SAFETY: as above.
            unsafe { slot.write(vtable) };
        });
    }

    /// Reads the task's vtable.
    ///
    /// # Safety
    /// The task must be spawned and the caller ordered after the spawn's write (it owns the task,
    /// or observed `DONE`, or owns the handle).
    pub(crate) unsafe fn vtable(&self) -> &'static TaskVTable {
        self.vtable.with_mut(|vtable| {
            // SAFETY: no concurrent writer (the caller's guarantee).
            unsafe { *vtable }
        })
    }

    /// Reads the task's run function.
    ///
    /// # Safety
    /// As for [`vtable`](Self::vtable).
    #[inline]
    pub(crate) unsafe fn run_fn(&self) -> RunFn {
        self.run.with_mut(|run| {
            // SAFETY: no concurrent writer (the caller's guarantee).
            unsafe { *run }
        })
    }
}

/// A task header in `'static` storage, at the start of its `TaskSlot`: the one place that turns
/// a task pointer into a reference.
///
/// It is `Copy` and carries no ownership: who may do what with the task, the state word says.
/// The pointer keeps the provenance of the whole slot, so that the pool can reach the storage
/// after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef(NonNull<TaskHeader>);

impl TaskRef {
    /// # Safety
    /// `task` points to the header of a `TaskSlot` in `'static` storage (a pool), with
    /// provenance over the whole slot.
    #[inline]
    pub(crate) const unsafe fn from_non_null(task: NonNull<TaskHeader>) -> Self {
        Self(task)
    }

    /// [`from_non_null`](Self::from_non_null) for a pointer that may be null (a queue link).
    ///
    /// # Safety
    /// As for `from_non_null`, if not null.
    #[inline]
    pub(crate) unsafe fn from_ptr(task: *mut TaskHeader) -> Option<Self> {
        // SAFETY: forwarded.
        NonNull::new(task).map(|task| unsafe { Self::from_non_null(task) })
    }

    /// The task's header.
    #[inline]
    pub(crate) fn header(self) -> &'static TaskHeader {
        // SAFETY: the header is in 'static storage (the constructor's contract) and only ever
        // shared: its mutable parts are atomics and cells.
        unsafe { self.0.as_ref() }
    }

    /// The header pointer, with the provenance of the whole slot.
    #[inline]
    pub(crate) fn as_non_null(self) -> NonNull<TaskHeader> {
        self.0
    }

    /// The header pointer, for queue links and wakers.
    #[inline]
    pub(crate) fn as_ptr(self) -> *mut TaskHeader {
        self.0.as_ptr()
    }
}

// SAFETY: a `TaskRef` is a pointer to a `'static`, `Sync` header.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

/// The vtable of a slot that never held a task: nothing reads it (every read is ordered after a
/// spawn's write), so its functions only report the bug.
static NO_TASK: TaskVTable = TaskVTable {
    cancel: no_task,
    take_output: no_task_take_output,
    drop_stage: no_task,
};

#[cold]
fn no_task(_: TaskRef) {
    unreachable!("task vtable read before spawn wrote it");
}

#[cold]
fn no_task_take_output(task: TaskRef, _: *mut ()) {
    no_task(task);
}

/// Frees a finished task's slot: drops what its storage still holds and marks it reusable.
///
/// # Safety
/// The caller cleared the last of `HANDLE` / set the last of `DONE`: nobody else touches the slot.
pub(crate) unsafe fn free_slot(task: TaskRef) {
    // SAFETY: DONE was observed, so the spawn's vtable write is visible and final.
    let vtable = unsafe { task.header().vtable() };
    let drop_stage = || {
        // SAFETY: we own the finished slot (the caller's guarantee); the task's own.
        unsafe { (vtable.drop_stage)(task) };
    };
    // SAFETY: forwarded.
    unsafe { free_slot_with(task, drop_stage) };
}

/// [`free_slot`] with the task's `drop_stage` known statically (no vtable call).
///
/// # Safety
/// As for `free_slot`, and `drop_stage` drops the task's stage in place.
#[inline]
pub(crate) unsafe fn free_slot_with(task: TaskRef, drop_stage: impl FnOnce()) {
    drop_stage();
    // The join waker is empty here: only the handle registers one, and its drop takes it out
    // before clearing HANDLE; a wake of it after the task finished takes it too. (A late wake
    // racing with the next task's handle is the AtomicWaker's business: at worst a spurious
    // wake of that handle.)
    task.header().state.release();
}

/// Wakes the task: queues it if it is idle; a queued or running task only counts the wake (its
/// poller re-queues it after the poll), a finished or free one ignores it. A wake that queues the
/// task pends with `P::pend` (`ErasedPender`: through the executor's pointer, right for any task).
///
/// # Safety
/// The task is in a pool bound to `P` (so its executor, whenever it has one, is an
/// `Executor<P>`), or `P` is `ErasedPender`.
#[inline]
pub(crate) unsafe fn wake_task<P: Pender>(task: TaskRef) {
    let header = task.header();
    if header.state.wake() == Wake::Enqueue {
        // SAFETY: we moved the count from zero, so we own the task: its spawn published the
        // executor before the release of the state we acquired.
        let executor = unsafe { header.spawned_executor() };
        // SAFETY: we own the queue link, and the slot cannot be freed before the task is popped
        // and polled. The executor is an `Executor<P>`'s core or `P` is `ErasedPender` (the
        // caller's guarantee).
        unsafe { executor.enqueue::<P>(task) };
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
    // SAFETY: task wakers of `P` are only made by `task_waker::<P>`, from a `TaskRef`'s
    // pointer: not null.
    let task = unsafe { NonNull::new_unchecked(data.cast_mut().cast()) };
    // SAFETY: as above: a `TaskRef`'s pointer.
    let task = unsafe { TaskRef::from_non_null(task) };
    // SAFETY: `task_waker::<P>`'s task is in a pool bound to `P`.
    unsafe { wake_task::<P>(task) };
}

unsafe fn waker_drop(_: *const ()) {}

/// The waker that wakes `task`.
///
/// # Safety
/// The task is in a pool bound to `P`.
pub(crate) unsafe fn task_waker<P: Pender>(task: TaskRef) -> Waker {
    let raw = RawWaker::new(task.as_ptr().cast_const().cast(), P::WAKER_VTABLE);
    // SAFETY: the vtable's functions uphold RawWaker's contract for a 'static header, and
    // `wake_task::<P>`'s for a task of a pool bound to `P`.
    unsafe { Waker::from_raw(raw) }
}

/// The task a waker wakes, if it is a task waker of an `Executor<P>` (reliable only for a `P`
/// whose [`Pender::WAKER_VTABLE`] is a `static`).
pub(crate) fn task_of_waker<P: Pender>(waker: &Waker) -> Option<TaskRef> {
    if core::ptr::eq(waker.vtable(), P::WAKER_VTABLE) {
        // SAFETY: the vtable is `P`'s task waker vtable, whose data is a `TaskRef`'s pointer.
        unsafe { TaskRef::from_ptr(waker.data().cast_mut().cast()) }
    } else {
        None
    }
}

/// Wakes `task` through its executor's pender pointer: for callers that do not know the pender's
/// type (`abort`, `close`).
pub(crate) fn wake_task_erased(task: TaskRef) {
    // SAFETY: `ErasedPender` is right for any task.
    unsafe { wake_task::<ErasedPender>(task) };
}
