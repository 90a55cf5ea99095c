//! [`block_on`]: runs a future to completion on the calling thread, for `PASSIVE_LEVEL` code
//! such as `DriverEntry` and `DriverUnload`.
//!
//! The waker is a reference-counted context in nonpaged pool holding a synchronization `KEVENT`:
//! a waker that outlives the call (kept by a completion routine, say) stays valid and is freed
//! by its last holder. Sleeps polled under `block_on` record their deadline in the context, and
//! the wait uses it as its timeout, so `block_on(timeout(...))` needs no runner.

use core::future::Future;
use core::pin::pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use wsk_sys::{
    ExAllocatePoolWithTag, ExFreePoolWithTag, Executive, FALSE, KEVENT, KeDelayExecutionThread,
    KeGetCurrentIrql, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject, KernelMode,
    NonPagedPoolNx, PASSIVE_LEVEL, SynchronizationEvent,
};

use crate::time::{Instant, relative_due_time};

/// Pool tag of `block_on` contexts: `WskB`.
const POOL_TAG: u32 = u32::from_le_bytes(*b"WskB");

/// The shared state of one `block_on` call and its wakers.
struct BlockOnContext {
    references: AtomicUsize,
    /// Earliest deadline a sleep asked for during the current poll, `u64::MAX` if none.
    deadline: AtomicU64,
    /// Written by the kernel (set, reset, waited on) while `block_on` holds a shared
    /// reference to the context: interior mutability.
    event: core::cell::UnsafeCell<KEVENT>,
}

/// The context's event, as the kernel takes it: a raw pointer (no reference to a `KEVENT`
/// the kernel writes).
///
/// # Safety
/// `context` points to a live context.
unsafe fn event_of(context: *const BlockOnContext) -> *mut KEVENT {
    // SAFETY: in bounds of the live context (the caller's guarantee).
    core::cell::UnsafeCell::raw_get(unsafe { &raw const (*context).event })
}

static BLOCK_ON_WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: the data of a block_on waker is a live context we hold a reference to.
    unsafe { &*data.cast::<BlockOnContext>() }
        .references
        .fetch_add(1, Ordering::Relaxed);
    RawWaker::new(data, &BLOCK_ON_WAKER_VTABLE)
}

unsafe fn waker_wake(data: *const ()) {
    // SAFETY: forwarded.
    unsafe { waker_wake_by_ref(data) };
    // SAFETY: forwarded; wake consumes the waker's reference.
    unsafe { waker_drop(data) };
}

unsafe fn waker_wake_by_ref(data: *const ()) {
    // SAFETY: the data of a block_on waker is a live context.
    let event = unsafe { event_of(data.cast()) };
    // SAFETY: an initialised event; KeSetEvent with Wait FALSE is allowed up to DISPATCH_LEVEL.
    unsafe { KeSetEvent(event, 0, FALSE) };
}

unsafe fn waker_drop(data: *const ()) {
    let context = data.cast::<BlockOnContext>();
    // SAFETY: a live context we hold a reference to.
    if unsafe { &*context }
        .references
        .fetch_sub(1, Ordering::AcqRel)
        == 1
    {
        // SAFETY: the last reference: nobody else can reach the context; it came from
        // ExAllocatePoolWithTag with our tag. Nonpaged frees are fine up to DISPATCH_LEVEL.
        unsafe { ExFreePoolWithTag(context.cast_mut().cast(), POOL_TAG) };
    }
}

/// If `waker` is a `block_on` waker, records `deadline` for its wait and returns true.
pub(crate) fn note_deadline(waker: &Waker, deadline: Instant) -> bool {
    if !ptr::eq(waker.vtable(), &raw const BLOCK_ON_WAKER_VTABLE) {
        return false;
    }
    // SAFETY: a block_on waker's data is a live context (the waker holds a reference).
    let context = unsafe { &*waker.data().cast::<BlockOnContext>() };
    context
        .deadline
        .fetch_min(deadline.ticks(), Ordering::AcqRel);
    true
}

/// Allocates a context with one reference (`block_on`'s own).
fn new_context() -> Option<NonNull<BlockOnContext>> {
    // SAFETY: a plain nonpaged allocation; PASSIVE_LEVEL.
    let memory = unsafe {
        ExAllocatePoolWithTag(
            NonPagedPoolNx,
            core::mem::size_of::<BlockOnContext>(),
            POOL_TAG,
        )
    };
    let context = NonNull::new(memory.cast::<BlockOnContext>())?;
    // SAFETY: a KEVENT is plain data, for which zeroes are a valid (not yet initialised) value.
    let event: KEVENT = unsafe { core::mem::zeroed() };
    let fresh = BlockOnContext {
        references: AtomicUsize::new(1),
        deadline: AtomicU64::new(u64::MAX),
        event: core::cell::UnsafeCell::new(event),
    };
    // SAFETY: fresh, suitably aligned (pool allocations are 16-byte aligned) and big enough.
    unsafe { context.as_ptr().write(fresh) };
    // SAFETY: the context was just written.
    let event = unsafe { event_of(context.as_ptr()) };
    // SAFETY: the event in our fresh context, not yet shared.
    unsafe { KeInitializeEvent(event, SynchronizationEvent, FALSE) };
    Some(context)
}

/// Runs `future` to completion on the calling thread, sleeping on a `KEVENT` between polls.
///
/// Timers ([`sleep`](crate::sleep), [`timeout`](crate::timeout)) work inside it without a
/// runner. If the pool allocation for its waker fails, it polls every millisecond instead.
///
/// # IRQL
/// `PASSIVE_LEVEL` (it waits).
pub fn block_on<F: Future>(future: F) -> F::Output {
    debug_assert_eq!(
        KeGetCurrentIrql(),
        PASSIVE_LEVEL,
        "block_on needs PASSIVE_LEVEL"
    );
    let mut future = pin!(future);
    let Some(context) = new_context() else {
        return poll_every_millisecond(future);
    };
    let data = context.as_ptr().cast_const().cast::<()>();
    // SAFETY: the vtable upholds RawWaker's contract for a reference-counted pool context; this
    // waker owns block_on's reference.
    let waker = unsafe { Waker::from_raw(RawWaker::new(data, &BLOCK_ON_WAKER_VTABLE)) };
    // SAFETY: `waker` keeps the context alive for this function.
    let shared = unsafe { context.as_ref() };
    let mut cx = Context::from_waker(&waker);
    loop {
        shared.deadline.store(u64::MAX, Ordering::Release);
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let deadline = shared.deadline.load(Ordering::Acquire);
        let mut due = if deadline == u64::MAX {
            None
        } else if Instant::from_ticks(deadline) <= Instant::now() {
            continue;
        } else {
            Some(relative_due_time(Instant::from_ticks(deadline)))
        };
        let timeout = due.as_mut().map_or(ptr::null_mut(), ptr::from_mut);
        // SAFETY: the context's event is initialised and alive (we hold a reference);
        // PASSIVE_LEVEL; `timeout` is null or a valid relative due time.
        unsafe {
            KeWaitForSingleObject(
                shared.event.get().cast(),
                Executive,
                KernelMode,
                FALSE,
                timeout,
            );
        }
    }
}

fn poll_every_millisecond<F: Future>(mut future: core::pin::Pin<&mut F>) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let mut one_millisecond: i64 = -10_000;
        // SAFETY: PASSIVE_LEVEL; a valid relative interval.
        unsafe { KeDelayExecutionThread(KernelMode, FALSE, &raw mut one_millisecond) };
    }
}
