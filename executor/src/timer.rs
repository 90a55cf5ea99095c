//! Timers: one `KTIMER` per runner, armed at the earliest deadline of the sleeps registered with
//! it; its DPC wakes the expired ones and the task of the earliest one left, which arms it again
//! (a DPC that set its own timer would deadlock under Wine: see `TimerQueue::set_timer`).
//! [`sleep`], [`sleep_until`], [`timeout`].
//!
//! A [`Sleep`] finds its runner's [`TimerQueue`] through the waker of the task polling it. Under
//! [`block_on`](crate::block_on()) it instead tells `block_on` its deadline, and `block_on` waits
//! with that timeout. Polled by any other executor, it asks to be polled again at once (busy
//! polling): correct but wasteful, so don't.

use core::cell::UnsafeCell;
use core::future::Future;
use core::marker::PhantomPinned;
use core::pin::Pin;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use wsk_sys::{
    FALSE, KDPC, KTIMER, KeCancelTimer, KeDelayExecutionThread, KeInitializeDpc,
    KeInitializeTimerEx, KeSetTimerEx, KernelMode, NotificationTimer, PVOID,
};

use crate::kernel::{KernelCell, SpinLock};
use crate::time::{Instant, relative_due_time};

/// A registered sleep; lives inside its pinned [`Sleep`].
struct TimerNode {
    prev: *mut TimerNode,
    next: *mut TimerNode,
    linked: bool,
    deadline: u64,
    waker: Option<Waker>,
}

/// The queue's state, under its spin lock.
struct TimerList {
    head: *mut TimerNode,
    /// Deadline the `KTIMER` was last asked to fire at, `u64::MAX` once its DPC ran (or before
    /// it was ever set). It may fire early: the sleeps it wakes check the clock.
    armed: u64,
    closed: bool,
}

// SAFETY: the nodes the list points to are only touched under the lock.
unsafe impl Send for TimerList {}

impl TimerList {
    /// # Safety
    /// `node` is valid and not linked.
    unsafe fn push(&mut self, node: *mut TimerNode) {
        // SAFETY: the list's nodes are valid while linked, and touched only under the lock we
        // hold (`&mut self`); the new node is not among them.
        if let Some(head) = unsafe { self.head.as_mut() } {
            head.prev = node;
        }
        // SAFETY: the caller gives a valid node that is not linked: nobody else touches it.
        let new = unsafe { &mut *node };
        new.prev = ptr::null_mut();
        new.next = self.head;
        new.linked = true;
        self.head = node;
    }

    /// Claims the arming of the `KTIMER` for `deadline` when it must fire earlier than it is
    /// armed for: records it and returns it, and the caller sets the timer
    /// ([`TimerQueue::set_timer`]) once it has released the lock. `None`: nothing to do.
    fn claim_arming(&mut self, deadline: u64) -> Option<u64> {
        if self.closed || deadline >= self.armed {
            return None;
        }
        self.armed = deadline;
        Some(deadline)
    }

    /// The earliest deadline of the linked sleeps.
    fn earliest(&self) -> Option<u64> {
        let mut earliest = None;
        let mut node = self.head;
        // SAFETY: linked nodes are valid, and touched only under the lock we hold (`&self`).
        while let Some(linked) = unsafe { node.as_ref() } {
            earliest = Some(earliest.map_or(linked.deadline, |e: u64| e.min(linked.deadline)));
            node = linked.next;
        }
        earliest
    }

    /// # Safety
    /// `node` is linked in this list.
    unsafe fn unlink(&mut self, node: *mut TimerNode) {
        // Linked nodes and their neighbours are valid, and touched only under the lock we hold
        // (`&mut self`).
        // SAFETY: as above.
        let unlinked = unsafe { &mut *node };
        let (prev, next) = (unlinked.prev, unlinked.next);
        unlinked.linked = false;
        unlinked.prev = ptr::null_mut();
        unlinked.next = ptr::null_mut();
        // SAFETY: as above: the previous node, if any.
        match unsafe { prev.as_mut() } {
            Some(prev) => prev.next = next,
            None => self.head = next,
        }
        // SAFETY: as above: the next node, if any.
        if let Some(next) = unsafe { next.as_mut() } {
            next.prev = prev;
        }
    }
}

/// A runner's timers: the list of pending sleeps, one `KTIMER` and its DPC.
pub(crate) struct TimerQueue {
    list: SpinLock<TimerList>,
    timer: KernelCell<KTIMER>,
    dpc: KernelCell<KDPC>,
    /// Timer DPC routines running (entry to last act), for [`TimerQueue::wait_for_dpc`].
    in_dpc: AtomicUsize,
}

impl TimerQueue {
    pub(crate) const fn new() -> Self {
        Self {
            list: SpinLock::new(TimerList {
                head: ptr::null_mut(),
                armed: u64::MAX,
                closed: false,
            }),
            timer: KernelCell::zeroed(),
            dpc: KernelCell::zeroed(),
            in_dpc: AtomicUsize::new(0),
        }
    }

    /// Initialises the `KTIMER` and its DPC, and opens the queue (again, after a `close`).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub(crate) fn init(&'static self) {
        // Open again after a `close` (a runner restarted after its shutdown, which left no
        // sleep linked and the `KTIMER` cancelled).
        {
            let mut list = self.list.lock();
            debug_assert!(
                list.head.is_null(),
                "a sleep outlived its runner's shutdown"
            );
            list.closed = false;
            list.armed = u64::MAX;
        }
        // Both objects live in 'static storage and are not in use yet.
        // SAFETY: as above.
        unsafe { KeInitializeTimerEx(self.timer.get(), NotificationTimer) };
        let context: PVOID = ptr::from_ref(self).cast_mut().cast();
        // SAFETY: as above; the DPC's context is this queue, which `timer_dpc` expects.
        unsafe { KeInitializeDpc(self.dpc.get(), Some(timer_dpc), context) };
    }

    /// Sets the `KTIMER` for `deadline`, claimed with [`TimerList::claim_arming`]. Never with
    /// the lock held and never from the timer's own DPC: Wine 8's `KeCancelTimer` waits for
    /// the timer's running callback (`dlls/ntoskrnl.exe/sync.c`: it calls
    /// `WaitForThreadpoolTimerCallbacks`), which would wait for our own DPC, or for a DPC
    /// spinning on the lock we hold. Its `KeSetTimerEx` on a timer set before calls
    /// `KeCancelTimer` while holding the lock Wine's callback takes after our DPC returns, so
    /// it could wait for a callback that waits for it: the timer is cancelled first, on its
    /// own (a no-op for the outcome on Windows, where `KeSetTimerEx` cancels anyway). Two
    /// arming callers may set the timer in the other order than they claimed it, the later
    /// deadline last: whoever finds an earlier claim than its own after setting sets the timer
    /// again for that one.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`, lock not held.
    fn set_timer(&self, mut deadline: u64) {
        loop {
            // SAFETY: initialised timer in 'static storage; IRQL <= DISPATCH_LEVEL.
            unsafe { KeCancelTimer(self.timer.get()) };
            // SAFETY: initialised timer and DPC in 'static storage; IRQL <= DISPATCH_LEVEL.
            unsafe {
                KeSetTimerEx(
                    self.timer.get(),
                    relative_due_time(Instant::from_ticks(deadline)),
                    0,
                    self.dpc.get(),
                );
            }
            let list = self.list.lock();
            if list.closed {
                drop(list);
                // `close` may have cancelled the timer before we set it.
                // SAFETY: initialised timer in 'static storage; IRQL <= DISPATCH_LEVEL.
                unsafe { KeCancelTimer(self.timer.get()) };
                return;
            }
            if list.armed >= deadline {
                return;
            }
            deadline = list.armed;
        }
    }

    /// Wakes every expired sleep, and the task of the earliest remaining one, which arms the
    /// timer again when it polls that sleep (or, if it drops the sleep instead, when it
    /// unregisters): the DPC itself must not set its own timer (see [`Self::set_timer`]).
    fn expire(&self) {
        let mut list = self.list.lock();
        let now = Instant::now().ticks();
        let mut earliest = u64::MAX;
        let mut earliest_node: *mut TimerNode = ptr::null_mut();
        let mut node = list.head;
        while !node.is_null() {
            // SAFETY: linked nodes are valid while we hold the lock.
            let next = unsafe { (*node).next };
            // SAFETY: as above.
            let deadline = unsafe { (*node).deadline };
            if deadline <= now {
                // SAFETY: `node` is linked in this list.
                unsafe { list.unlink(node) };
                // SAFETY: as above; the waker is only touched under the lock.
                if let Some(waker) = unsafe { (*node).waker.take() } {
                    waker.wake();
                }
            } else if deadline < earliest {
                earliest = deadline;
                earliest_node = node;
            }
            node = next;
        }
        list.armed = u64::MAX;
        // SAFETY: null or a node still linked in this list, valid under the lock we hold.
        if let Some(waker) = unsafe { earliest_node.as_ref() }.and_then(|n| n.waker.as_ref()) {
            waker.wake_by_ref();
        }
    }

    /// Stops the timer for good: no sleep re-arms it afterwards. The caller then flushes DPCs.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub(crate) fn close(&self) {
        self.list.lock().closed = true;
        // A timer DPC already queued is not removed here (KeRemoveQueueDpc is a stub that
        // aborts under Wine 8): the caller's KeFlushQueuedDpcs waits for it, and once closed
        // it finds nothing to do.
        // SAFETY: initialised timer in 'static storage.
        unsafe { KeCancelTimer(self.timer.get()) };
    }

    /// Waits until no timer DPC routine is running (after [`close`](Self::close)): one that
    /// entered before the close finishes; one entering later finds the queue closed and leaves.
    /// A DPC the kernel dequeued but has not called yet is invisible here.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub(crate) fn wait_for_dpc(&self) {
        while self.in_dpc.load(Ordering::Acquire) != 0 {
            let mut interval: i64 = -10_000; // 1 ms, relative
            // SAFETY: PASSIVE_LEVEL (the caller's contract); a valid interval.
            unsafe { KeDelayExecutionThread(KernelMode, FALSE, &raw mut interval) };
        }
    }

    /// Sleeps still registered (zero after a clean shutdown).
    pub(crate) fn pending(&self) -> usize {
        let list = self.list.lock();
        let mut count = 0;
        let mut node = list.head;
        while !node.is_null() {
            count += 1;
            // SAFETY: linked nodes are valid under the lock.
            node = unsafe { (*node).next };
        }
        count
    }
}

/// The `KTIMER`'s DPC: wakes expired sleeps.
unsafe extern "system" fn timer_dpc(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the DPC was initialised with a 'static TimerQueue as its context.
    let queue = unsafe { &*context.cast::<TimerQueue>() };
    queue.in_dpc.fetch_add(1, Ordering::AcqRel);
    queue.expire();
    // Last act: shutdown waits for this count.
    queue.in_dpc.fetch_sub(1, Ordering::Release);
}

/// A future that completes at a deadline. See [`sleep`] and [`sleep_until`].
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    node: UnsafeCell<TimerNode>,
    /// The queue the node was last registered with.
    queue: *const TimerQueue,
    _pinned: PhantomPinned,
}

// SAFETY: the node is shared with the timer DPC only under the queue's lock; the rest is owned.
unsafe impl Send for Sleep {}
// SAFETY: `&Sleep` exposes only the deadline.
unsafe impl Sync for Sleep {}

impl Sleep {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            node: UnsafeCell::new(TimerNode {
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
                linked: false,
                deadline: deadline.ticks(),
                waker: None,
            }),
            queue: ptr::null(),
            _pinned: PhantomPinned,
        }
    }

    /// When the sleep ends.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Registers with `queue` (leaving any other queue first) and arms its timer if needed.
    fn register(&mut self, queue: &'static TimerQueue, waker: &Waker) {
        if !ptr::eq(self.queue, queue) {
            self.unregister();
            self.queue = queue;
        }
        let node = self.node.get();
        let arming = {
            let mut list = queue.list.lock();
            // SAFETY: the node is ours and, if linked, only touched by others under this lock.
            let ours = unsafe { &mut *node };
            match &ours.waker {
                Some(current) if current.will_wake(waker) => {}
                _ => ours.waker = Some(waker.clone()),
            }
            if !ours.linked {
                // SAFETY: our valid node, not linked; under the lock.
                unsafe { list.push(node) };
            }
            list.claim_arming(self.deadline.ticks())
        };
        if let Some(deadline) = arming {
            queue.set_timer(deadline);
        }
    }

    /// Leaves the queue the node is registered with, if any.
    fn unregister(&mut self) {
        // SAFETY: `queue` is null or a 'static TimerQueue set by `register`.
        let Some(queue) = (unsafe { self.queue.as_ref() }) else {
            return;
        };
        let node = self.node.get();
        let (waker, arming) = {
            let mut list = queue.list.lock();
            // SAFETY: the node is ours and, if linked, only touched by others under this lock.
            if unsafe { (*node).linked } {
                // SAFETY: under the lock; `node` is linked in `queue` when `linked` is set.
                unsafe { list.unlink(node) };
            }
            // Disarmed with sleeps left: the timer DPC woke this sleep's task to arm it again,
            // and it is leaving instead, so it arms for the others.
            let arming = if list.armed == u64::MAX {
                list.earliest()
                    .and_then(|deadline| list.claim_arming(deadline))
            } else {
                None
            };
            // SAFETY: as above; unlinked now, so only ours.
            (unsafe { (*node).waker.take() }, arming)
        };
        drop(waker);
        if let Some(deadline) = arming {
            queue.set_timer(deadline);
        }
        self.queue = ptr::null();
    }
}

impl Future for Sleep {
    type Output = ();

    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: nothing is moved out; the node stays where it is registered.
        let this = unsafe { self.get_unchecked_mut() };
        if Instant::now() >= this.deadline {
            this.unregister();
            return Poll::Ready(());
        }
        let waker = cx.waker();
        if let Some(executor) = crate::raw::executor_of_waker::<crate::runner::RunnerPender>(waker)
        {
            // SAFETY: only runners set a timer queue, and theirs are 'static TimerQueues.
            if let Some(queue) = unsafe { executor.timer_queue().cast::<TimerQueue>().as_ref() } {
                this.register(queue, waker);
                return Poll::Pending;
            }
        }
        if crate::block_on::note_deadline(waker, this.deadline) {
            return Poll::Pending;
        }
        waker.wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl core::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Completes after `duration`.
///
/// # IRQL
/// Any to create; poll at <= `DISPATCH_LEVEL`, from a runner task or [`block_on`](crate::block_on()).
pub fn sleep(duration: Duration) -> Sleep {
    Sleep::new(Instant::now() + duration)
}

/// Completes at `deadline`.
///
/// # IRQL
/// As [`sleep`].
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep::new(deadline)
}

/// The error of a [`timeout`] whose time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl core::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("deadline elapsed")
    }
}

impl core::error::Error for Elapsed {}

/// A future with a deadline. See [`timeout`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning: neither field is moved while pinned, and both are dropped
        // in place with the Timeout.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // SAFETY: as above.
        let sleep = unsafe { Pin::new_unchecked(&mut this.sleep) };
        sleep.poll(cx).map(|()| Err(Elapsed))
    }
}

/// Runs `future` for at most `duration`: `Err(Elapsed)` if it has not finished by then (the
/// future is then dropped with the `Timeout`, which cancels what it was doing).
///
/// For socket I/O use `wsk_net::timeout` instead: dropping a `wsk-net` operation frees its
/// buffer and whatever data arrived in it, while `wsk_net::timeout` cancels the operation
/// through WSK and returns the buffer with a `TimedOut` result. This one is for everything
/// else (a task, a wait on a channel, a computation).
///
/// # IRQL
/// As [`sleep`].
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep(duration),
    }
}

/// Runs `future` until `deadline`; see [`timeout`].
///
/// # IRQL
/// As [`sleep`].
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}
