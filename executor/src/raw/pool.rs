//! Static task storage: [`TaskPool`], a fixed number of slots of a fixed size that hold each
//! task's header and, in place, its future and then its output.
//!
//! Slots are sized in bytes rather than typed by the future, because the future of an
//! `async fn` has no name a `static` could spell on stable Rust. A spawn checks at compile time
//! that the future fits. Pools register themselves (once, lock-free) in a fixed table so that
//! closing an executor can find and wake every task it owns.

use core::any::TypeId;
use core::future::Future;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit, offset_of, size_of};
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::Poll;

use super::executor::{Executor, Pender, poll_in_place, run_task};
use super::join::JoinHandle;
use super::sync::{AtomicPtr, AtomicUsize, Ordering, loom_const_fn};
use super::task::{TaskHeader, TaskRef, TaskVTable, task_waker};

/// The alignment of every slot's storage; futures needing more cannot be spawned.
pub const STORAGE_ALIGN: usize = 16;

/// Why a spawn failed. The future was dropped. (A future too big for the pool's slots is a
/// compile-time error, not a `SpawnError`: see [`TaskPool::spawn`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// Every slot of the pool holds a task (or an output its `JoinHandle` has not taken).
    PoolFull,
    /// The executor is closed (shutting down or shut down).
    Closed,
    /// The process-wide table of pools is full; see [`MAX_POOLS`].
    TooManyPools,
    /// The pool serves executors of another [`Pender`] type: a pool is bound to the pender type
    /// of its first spawn's executor (so that a stale waker of one of its slots pends the right
    /// way).
    OtherPender,
}

impl core::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::PoolFull => "task pool is full",
            Self::Closed => "executor is shut down",
            Self::TooManyPools => "too many task pools",
            Self::OtherPender => "task pool serves executors of another pender type",
        })
    }
}

impl core::error::Error for SpawnError {}

/// The compile-time check that `F` (future and output) fits `SIZE`-byte slots, for spawn
/// functions outside this module ([`Runner::spawn`](crate::Runner::spawn)) that want the
/// error reported at their caller's line.
pub(crate) struct SpawnCheck<F, const SIZE: usize>(PhantomData<F>);

impl<F: Future, const SIZE: usize> SpawnCheck<F, SIZE> {
    /// Evaluate in a `const` block: fails compilation with a message naming both sizes.
    pub(crate) const FITS: () = super::fit::Fits::<Stage<F>, SIZE>::CHECK;
}

/// The future, then its output, stored in place in a slot. Which of the two it holds, the task's
/// state word says: `running` from the spawn until the task is `DONE` (its owner moves it to
/// `finished` just before setting `DONE`), `finished` from then on (`None` once cancelled or
/// taken). The poller checks `DONE` in the state it reads anyway, so the check costs nothing and
/// a task polled after it finished (a bug of the state machine) panics instead of reading a
/// future that is not there.
union Stage<F: Future> {
    running: ManuallyDrop<F>,
    finished: ManuallyDrop<Option<F::Output>>,
}

/// Raw, aligned bytes holding a `Stage<F>`.
#[repr(C, align(16))]
struct Storage<const SIZE: usize>([MaybeUninit<u8>; SIZE]);

/// One task: its header, then its storage.
#[repr(C)]
struct TaskSlot<const SIZE: usize> {
    header: TaskHeader,
    /// core's cell even under loom: its address must be the data's.
    storage: core::cell::UnsafeCell<Storage<SIZE>>,
}

impl<const SIZE: usize> TaskSlot<SIZE> {
    loom_const_fn! {
        fn new() -> Self {
            Self {
                header: TaskHeader::new(),
                storage: core::cell::UnsafeCell::new(Storage([MaybeUninit::uninit(); SIZE])),
            }
        }
    }
}

/// Where a slot's storage starts, relative to its header: the same for every `SIZE`, since the
/// header comes first and the storage's alignment does not depend on its size.
const STORAGE_OFFSET: usize = offset_of!(TaskSlot<0>, storage);

/// The storage of `task`'s slot, as a `Stage<F>`.
fn stage_of<F: Future>(task: TaskRef) -> *mut Stage<F> {
    // SAFETY: a `TaskRef` is the header of a `TaskSlot`, with provenance over the whole slot;
    // the header is at offset 0 of its slot and the storage at STORAGE_OFFSET, inside it. The
    // storage is core's UnsafeCell, which has the layout of its contents.
    let storage = unsafe { task.as_non_null().cast::<u8>().add(STORAGE_OFFSET) };
    storage.cast::<Stage<F>>().as_ptr()
}

/// What a pool runs: a `Send + 'static` future with a `Send + 'static` output (the bounds of
/// [`TaskPool::spawn`], named once for the functions behind it).
trait TaskFuture: Future<Output: Send + 'static> + Send + 'static {}

impl<F: Future<Output: Send + 'static> + Send + 'static> TaskFuture for F {}

/// The vtable for tasks running an `F` on an `Executor<P>`.
struct VTableFor<F, P>(PhantomData<(F, P)>);

impl<F: TaskFuture, P: Pender> VTableFor<F, P> {
    const VTABLE: TaskVTable = TaskVTable {
        cancel: Self::cancel,
        take_output: Self::take_output,
        drop_stage: Self::drop_stage,
    };

    unsafe fn run(task: TaskRef) {
        let poll = || {
            // SAFETY: `run_task` calls it only on an owned task whose state has no DONE.
            unsafe { Self::poll(task) }
        };
        let drop_stage = || {
            // SAFETY: `run_task` calls it only once it owns the finished slot.
            unsafe { Self::drop_stage(task) };
        };
        // SAFETY: the caller (the poll loop) took the task off its queue; `poll` polls its `F`,
        // `drop_stage` drops its stage.
        unsafe { run_task(task, poll, drop_stage) };
    }

    /// Polls the future; true when it finished (its output is stored in place of it).
    ///
    /// # Safety
    /// The caller owns the task (it runs it) and read its state without `DONE`: the stage holds
    /// the future.
    #[inline]
    unsafe fn poll(task: TaskRef) -> bool {
        // SAFETY: owning the task (the caller) gives exclusive access to the stage.
        let stage = unsafe { &mut *stage_of::<F>(task) };
        // SAFETY: the stage holds an `F` spawned in place and never moved, as the state without
        // DONE says: `running` is the initialised field.
        let future = unsafe { &mut *stage.running };
        // SAFETY: the future stays in its 'static slot until dropped in place.
        let future = unsafe { Pin::new_unchecked(future) };
        // Never dropped: a task waker's drop does nothing (task wakers hold no count), and a
        // `Waker` dropped here costs a call through the vtable the compiler reloads after the
        // poll, on every run.
        // SAFETY: the task is in a pool bound to `P` by the spawn.
        let waker = ManuallyDrop::new(unsafe { task_waker::<P>(task) });
        match poll_in_place(future, &waker) {
            Poll::Ready(output) => {
                // SAFETY: `running` is initialised and never used again.
                unsafe { finish_stage(stage, Some(output)) };
                true
            }
            Poll::Pending => false,
        }
    }

    unsafe fn cancel(task: TaskRef) {
        // SAFETY: as in `poll` (the caller owns the task, not DONE).
        let stage = unsafe { &mut *stage_of::<F>(task) };
        // SAFETY: as above: `running` is initialised; the caller sets DONE next.
        unsafe { finish_stage(stage, None) };
    }

    unsafe fn take_output(task: TaskRef, out: *mut ()) {
        // SAFETY: the caller (the handle, after DONE) owns the stage.
        let stage = unsafe { &mut *stage_of::<F>(task) };
        // SAFETY: after DONE, `finished` is the initialised field.
        let output = unsafe { &mut stage.finished }.take();
        // SAFETY: the caller passes an `Option<F::Output>`.
        unsafe { *out.cast::<Option<F::Output>>() = output };
    }

    unsafe fn drop_stage(task: TaskRef) {
        // SAFETY: the caller frees the slot (after DONE) and owns it.
        let stage = unsafe { &mut *stage_of::<F>(task) };
        // SAFETY: after DONE, `finished` is the initialised field.
        let finished = unsafe { &mut stage.finished };
        // SAFETY: initialised, and never used again before the next spawn writes the stage.
        unsafe { ManuallyDrop::drop(finished) };
    }
}

/// Drops the future in place (pinned, never moved) and stores `output` in its bytes; the caller
/// sets DONE next.
///
/// # Safety
/// `running` is the stage's initialised field, and the caller owns the stage.
#[inline]
unsafe fn finish_stage<F: Future>(stage: &mut Stage<F>, output: Option<F::Output>) {
    // SAFETY: `running` is the initialised field (the caller's guarantee).
    let running = unsafe { &mut stage.running };
    // SAFETY: initialised, and never used again.
    unsafe { ManuallyDrop::drop(running) };
    stage.finished = ManuallyDrop::new(output);
}

/// What the shutdown scan needs to know about a pool, independent of its sizes.
struct PoolDesc {
    len: usize,
    stride: usize,
    slots_offset: usize,
    /// Null until the first spawn registers the pool and binds it to its executor's pender
    /// type: then `TypeId::of::<P>` as a pointer (see [`pender_tag`]).
    pender: AtomicPtr<()>,
}

/// The tag a pool bound to `P` holds: the address of `TypeId::of::<P>`. Two tags may differ for
/// one type (a generic function may have copies), so a mismatch is settled by calling the bound
/// tag and comparing type ids; two types never share one (different functions, or identical
/// ones, which return the same id only for the same type).
fn pender_tag<P: Pender>() -> *mut () {
    let tag: fn() -> TypeId = TypeId::of::<P>;
    tag as *mut ()
}

/// How many distinct pools a driver may spawn into. (Four in loom models, which register their
/// pools in a table per model run: each entry a scan reads is a step loom explores.)
pub const MAX_POOLS: usize = if cfg!(loom) { 4 } else { 64 };

/// Every pool that was ever spawned into; entries are set once and never cleared.
#[cfg(not(loom))]
static POOLS: [AtomicPtr<PoolDesc>; MAX_POOLS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_POOLS];

// loom's atomics cannot be built in a `static` (their constructors are not `const`), so under
// loom the table is a lazy static of loom's, made afresh for each run of a model: the pools the
// models leak are registered, and `close` finds them, through the same code as in a driver.
#[cfg(loom)]
loom::lazy_static! {
    static ref POOLS: [AtomicPtr<PoolDesc>; MAX_POOLS] =
        core::array::from_fn(|_| AtomicPtr::new(core::ptr::null_mut()));
}

/// The table of pools, whichever way it is built.
fn pool_table() -> &'static [AtomicPtr<PoolDesc>] {
    #[cfg(not(loom))]
    return &POOLS;
    #[cfg(loom)]
    return &POOLS[..];
}

/// Records `desc` in [`POOLS`]: one compare-exchange publishes it, so a pool is either found by
/// every later scan or not yet used. A race may record it twice; scans tolerate that.
/// Called by a pool's first spawn (or first spawns, racing), before it binds the pool.
fn register(pool: NonNull<PoolDesc>) -> Result<(), SpawnError> {
    for entry in pool_table() {
        let current = entry.load(Ordering::Acquire);
        if current == pool.as_ptr() {
            return Ok(());
        }
        if current.is_null()
            && entry
                .compare_exchange(current, pool.as_ptr(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Ok(());
        }
    }
    Err(SpawnError::TooManyPools)
}

/// Calls `f` with every task header of every registered pool.
pub(crate) fn for_each_task(mut f: impl FnMut(TaskRef)) {
    for entry in pool_table() {
        let Some(desc) = NonNull::new(entry.load(Ordering::Acquire)) else {
            continue;
        };
        // SAFETY: registered pools are 'static; the pointer covers the whole pool.
        let pool = unsafe { desc.as_ref() };
        let PoolDesc {
            len,
            stride,
            slots_offset,
            ..
        } = *pool;
        for index in 0..len {
            // SAFETY: slot `index` lies inside the pool, `slots_offset + index * stride` bytes in.
            let slot = unsafe { desc.cast::<u8>().add(slots_offset + index * stride) };
            // SAFETY: a slot of a 'static pool, its header first, reached from the pool's
            // pointer (provenance over the whole pool).
            f(unsafe { TaskRef::from_non_null(slot.cast()) });
        }
    }
}

/// Gives a claimed slot back after a failed spawn; the error to report.
#[cold]
#[inline(never)]
fn release_claim(header: &TaskHeader) -> SpawnError {
    header.state.release();
    SpawnError::Closed
}

/// `N` task slots of `SIZE` bytes each, for `static` storage.
///
/// ```ignore
/// static CONNECTIONS: TaskPool<1024, 64> = TaskPool::new();
/// let handle = CONNECTIONS.spawn(executor, serve(connection))?;
/// ```
///
/// A slot is free again once its task finished (or was cancelled) and its [`JoinHandle`] was
/// dropped or had taken the output.
#[repr(C)]
pub struct TaskPool<const SIZE: usize, const N: usize> {
    desc: PoolDesc,
    /// Where the next spawn starts looking for a free slot: just past the last one taken.
    next_hint: AtomicUsize,
    slots: [TaskSlot<SIZE>; N],
}

// SAFETY: slots are shared between CPUs through their atomic state words, which arbitrate every
// access to the non-atomic parts (see `task`).
unsafe impl<const SIZE: usize, const N: usize> Sync for TaskPool<SIZE, N> {}

impl<const SIZE: usize, const N: usize> Default for TaskPool<SIZE, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize, const N: usize> TaskPool<SIZE, N> {
    loom_const_fn! {
        /// An empty pool.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new() -> Self {
            const { assert!(offset_of!(TaskSlot<SIZE>, storage) == STORAGE_OFFSET) };
            Self {
                desc: Self::desc(),
                next_hint: AtomicUsize::new(0),
                slots: Self::free_slots(),
            }
        }
    }

    #[cfg(not(loom))]
    const fn free_slots() -> [TaskSlot<SIZE>; N] {
        [const { TaskSlot::new() }; N]
    }

    /// loom's atomics cannot be built in a constant, so the slots are built one by one.
    #[cfg(loom)]
    fn free_slots() -> [TaskSlot<SIZE>; N] {
        core::array::from_fn(|_| TaskSlot::new())
    }

    loom_const_fn! {
        fn desc() -> PoolDesc {
            PoolDesc {
                len: N,
                stride: size_of::<TaskSlot<SIZE>>(),
                slots_offset: offset_of!(Self, slots),
                pender: AtomicPtr::new(core::ptr::null_mut()),
            }
        }
    }

    /// Slots in the pool.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Slots currently holding a task or an untaken output.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn used(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.header.state.is_spawned())
            .count()
    }

    /// Spawns `future` as a task of `executor`, in a free slot of this pool. The task is queued
    /// at once (the executor's pender is called).
    ///
    /// Fails compilation if `F` (or its output) does not fit in `SIZE` bytes or needs an
    /// alignment above [`STORAGE_ALIGN`]; the message names the task's size and `SIZE`, and
    /// rustc points at the spawning line ("the above error was encountered while
    /// instantiating"):
    ///
    /// ```compile_fail,E0080
    /// use wsk_executor::raw::{Executor, TaskPool};
    /// unsafe fn pend(_: *const ()) {}
    /// static EXECUTOR: Executor = Executor::new(pend);
    /// static TASKS: TaskPool<64, 1> = TaskPool::new();
    /// let big = [0_u8; 100];
    /// // error: a task of 10? bytes (...) does not fit the pool's 64-byte slots
    /// let _ = TASKS.spawn(&EXECUTOR, async move { core::hint::black_box(big) });
    /// ```
    ///
    /// # Errors
    /// [`SpawnError::PoolFull`] when no slot is free, [`SpawnError::Closed`] after the executor
    /// was closed, [`SpawnError::TooManyPools`] if this is the 65th pool ever used,
    /// [`SpawnError::OtherPender`] if the pool was first spawned into with an executor of another
    /// [`Pender`] type (every [`Runner`](crate::Runner) shares one pender type). The future is
    /// dropped in each case.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` with a DPC runner, any IRQL the pender tolerates otherwise.
    pub fn spawn<F, P: Pender>(
        &'static self,
        executor: &'static Executor<P>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Names both sizes; see `fit.rs`.
        const { SpawnCheck::<F, SIZE>::FITS };
        // Bound to `P` (which also means registered)? Else the first spawn binds it, or the
        // check of the bound type settles it, out of line.
        if self.desc.pender.load(Ordering::Acquire) != pender_tag::<P>() {
            return self.spawn_binding(executor, future);
        }
        // SAFETY: the pool is bound to `P` (it holds `P`'s tag).
        unsafe { self.spawn_bound(executor, future) }
    }

    /// The rest of [`spawn`](Self::spawn) once the pool is known to be bound to `P`: claims the
    /// slot at the hint, or scans for one out of line.
    ///
    /// # Safety
    /// The pool is bound to `P`.
    #[inline]
    unsafe fn spawn_bound<F: TaskFuture, P: Pender>(
        &'static self,
        executor: &'static Executor<P>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError> {
        match self.claim_at_hint() {
            // SAFETY: we claimed the slot; the pool is bound to `P` (the caller's guarantee).
            Some(slot) => unsafe { spawn_into(slot, executor, future) },
            // SAFETY: forwarded.
            None => unsafe { self.spawn_scanning(executor, future) },
        }
    }

    /// [`spawn`](Self::spawn) when the pool is not bound to `P`'s tag: on its first spawn,
    /// registers the pool and binds it to `P`; otherwise checks that it is bound to `P`.
    #[cold]
    #[inline(never)]
    fn spawn_binding<F: TaskFuture, P: Pender>(
        &'static self,
        executor: &'static Executor<P>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError> {
        self.bind::<P>()?;
        // SAFETY: bound to `P` just now.
        unsafe { self.spawn_bound(executor, future) }
    }

    /// Registers the pool and binds it to `P` if it is new; fails if it is bound to another type.
    fn bind<P: Pender>(&'static self) -> Result<(), SpawnError> {
        let tag = pender_tag::<P>();
        let mut bound = self.desc.pender.load(Ordering::Acquire);
        if bound.is_null() {
            // Registered before it is bound, so a pool that holds tasks is always found by
            // `close`.
            register(NonNull::from(self).cast())?;
            match self
                .desc
                .pender
                .compare_exchange(bound, tag, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => bound = actual,
            }
        }
        // SAFETY: only `pender_tag`s, `fn() -> TypeId` pointers, are stored.
        let bound_type = unsafe { core::mem::transmute::<*mut (), fn() -> TypeId>(bound) }();
        if bound_type == TypeId::of::<P>() {
            Ok(())
        } else {
            Err(SpawnError::OtherPender)
        }
    }

    /// [`spawn`](Self::spawn) when the slot at the hint was taken: scans for a free slot.
    ///
    /// # Safety
    /// The pool is bound to `P`.
    #[cold]
    #[inline(never)]
    unsafe fn spawn_scanning<F: TaskFuture, P: Pender>(
        &'static self,
        executor: &'static Executor<P>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError> {
        let slot = self.claim_slot_scan().ok_or(SpawnError::PoolFull)?;
        // SAFETY: we claimed the slot; the pool is bound to `P` (the caller's guarantee).
        unsafe { spawn_into(slot, executor, future) }
    }

    /// `index` wrapped into `0..N`: `index` itself when below `N`, else 0 (a hint is at most
    /// `N`; this keeps the slot access free of a bounds check). A mask when `N` is a power of
    /// two.
    #[inline]
    const fn slot_index(index: usize) -> usize {
        if N.is_power_of_two() {
            index & (N - 1)
        } else if index < N {
            index
        } else {
            0
        }
    }

    /// Claims the slot at the hint if it is simply free (the common case).
    #[inline]
    fn claim_at_hint(&self) -> Option<&TaskSlot<SIZE>> {
        let start = self.next_hint.load(Ordering::Relaxed);
        if N == 0 {
            return None;
        }
        let index = Self::slot_index(start);
        let slot = &self.slots[index];
        if slot.header.state.try_claim_free() {
            // Stored unwrapped (at most `N`): every reader wraps it.
            self.next_hint.store(index + 1, Ordering::Relaxed);
            return Some(slot);
        }
        None
    }

    /// Claims the first free slot from the hint on (it may be free with stray wakes counted).
    fn claim_slot_scan(&self) -> Option<&TaskSlot<SIZE>> {
        let start = self.next_hint.load(Ordering::Relaxed);
        // A plain wrapping index: a chained range iterator costs a dozen instructions.
        let mut index = Self::slot_index(start);
        for _ in 0..N {
            let slot = &self.slots[index];
            let next = Self::slot_index(index + 1);
            if slot.header.state.try_claim() {
                self.next_hint.store(next, Ordering::Relaxed);
                return Some(slot);
            }
            index = next;
        }
        None
    }
}

/// The rest of a spawn once a slot is claimed: count the task in, write it, queue it.
///
/// # Safety
/// We claimed `slot` (SPAWNED | HANDLE set by us on a free slot), in a pool bound to `P`.
#[expect(
    clippy::inline_always,
    reason = "inlined into spawn and its cold scan path alike: two instructions per spawn"
)]
#[inline(always)]
unsafe fn spawn_into<const SIZE: usize, F: TaskFuture, P: Pender>(
    slot: &'static TaskSlot<SIZE>,
    executor: &'static Executor<P>,
    future: F,
) -> Result<JoinHandle<F::Output>, SpawnError> {
    // Published before the task counts in `live`: a `close` whose CLOSED lands after our count
    // finds the task by it (see `Executor::close`).
    slot.header.set_executor(executor.core());
    if !executor.core().live().try_add_once() {
        // SAFETY: forwarded.
        return unsafe { spawn_into_contended(slot, executor, future) };
    }
    // SAFETY: forwarded; the task counts in `live`.
    Ok(unsafe { spawn_counted(slot, executor, future) })
}

/// [`spawn_into`] when the one attempt at counting the task in `live` failed: the executor is
/// closed, or the attempt lost a race.
///
/// # Safety
/// As for `spawn_into`.
#[cold]
#[inline(never)]
unsafe fn spawn_into_contended<const SIZE: usize, F: TaskFuture, P: Pender>(
    slot: &'static TaskSlot<SIZE>,
    executor: &'static Executor<P>,
    future: F,
) -> Result<JoinHandle<F::Output>, SpawnError> {
    if !executor.core().live().try_add() {
        return Err(release_claim(&slot.header));
    }
    // SAFETY: forwarded; the task counts in `live`.
    Ok(unsafe { spawn_counted(slot, executor, future) })
}

/// The end of a spawn: write the task into its claimed slot and queue it.
///
/// # Safety
/// We claimed `slot`, in a pool bound to `P`, published its executor and counted the task in
/// `live`.
#[expect(
    clippy::inline_always,
    reason = "inlined into every spawn path alike: a spawn's hot path has no call to save \
              registers for"
)]
#[inline(always)]
unsafe fn spawn_counted<const SIZE: usize, F: TaskFuture, P: Pender>(
    slot: &'static TaskSlot<SIZE>,
    executor: &'static Executor<P>,
    future: F,
) -> JoinHandle<F::Output> {
    // From the reference to the whole slot, so that it may reach the slot's storage.
    // SAFETY: the slot is in a 'static pool, its header first.
    let task = unsafe { TaskRef::from_non_null(NonNull::from(slot).cast::<TaskHeader>()) };
    // SAFETY: the claim (SPAWNED, keeping the free slot's non-zero wake count) gives us the
    // slot: wakes only count, nobody polls or frees it until we push it.
    unsafe {
        slot.header
            .write_task_type(VTableFor::<F, P>::run, &VTableFor::<F, P>::VTABLE);
    }
    let stage = Stage {
        running: ManuallyDrop::new(future),
    };
    // SAFETY: as above; the slot's storage is ours and big enough (checked by `spawn`).
    unsafe { stage_of::<F>(task).write(stage) };
    // SAFETY: the task lives in a 'static pool and its HANDLE bit is set for us.
    let handle = unsafe { JoinHandle::new(task) };
    // SAFETY: we claimed the slot with a non-zero wake count, so its link is ours; the executor
    // is an `Executor<P>`.
    unsafe { executor.core().enqueue::<P>(task) };
    handle
}
