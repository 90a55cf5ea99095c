//! [`Notify`]: wake one waiting task (or store a permit) or all of them.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::spin::SpinMutex;
use super::wait_list::{WaitList, WaitNode, WakeBatch, node_state};
use crate::raw::sync::loom_const_fn;

/// A notification between tasks, as tokio's `Notify`: [`notify_one`](Self::notify_one) wakes
/// the longest-waiting task, or stores one permit when nobody waits, so a notification that
/// arrives before the wait is not lost; [`notify_waiters`](Self::notify_waiters) wakes every
/// task waiting right now (and every [`Notified`] already created) and stores nothing.
///
/// Why `Notify` and not an `Event` (set/reset/wait): a driver's tasks need "something changed,
/// look again" (a queue gained an entry, a connection closed) and "stop now" signals; a permit
/// covers the first without the reset races of an auto-reset event, and a flag plus
/// [`notify_waiters`](Self::notify_waiters) is a manual-reset event (see the example). Waiting
/// from a thread at `PASSIVE_LEVEL` without a task is what a `KEVENT` is for.
///
/// # IRQL
/// Every method: <= `DISPATCH_LEVEL` (the state is under a [`SpinMutex`]). DPCs and completion
/// routines may notify.
///
/// # Example
/// ```no_run
/// use core::sync::atomic::{AtomicBool, Ordering};
/// use wsk_executor::sync::Notify;
///
/// static STOPPING: AtomicBool = AtomicBool::new(false);
/// static STOP: Notify = Notify::new();
///
/// async fn worker() {
///     loop {
///         let stop = STOP.notified(); // created before the check: no lost notification
///         if STOPPING.load(Ordering::Acquire) {
///             return;
///         }
///         stop.await;
///     }
/// }
///
/// fn stop_all() {
///     STOPPING.store(true, Ordering::Release);
///     STOP.notify_waiters();
/// }
/// ```
pub struct Notify {
    state: SpinMutex<NotifyState>,
}

struct NotifyState {
    /// A `notify_one` with nobody waiting; the next wait takes it.
    permit: bool,
    /// Counts `notify_waiters` calls: a `Notified` created before one completes at once.
    /// 64 bits: it never wraps in practice.
    generation: u64,
    waiters: WaitList<Ticket>,
}

/// A waiter's record in a [`Notify`].
struct Ticket {
    /// The [`Notify`]'s generation when the `Notified` was created.
    generation: u64,
    /// Woken by `notify_one` (a permit it owes to someone if it gives up), not by
    /// `notify_waiters`.
    holds_permit: bool,
    /// `Ready` was returned.
    finished: bool,
}

impl Notify {
    loom_const_fn! {
        /// A notify without a stored permit.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new() -> Self {
            Self {
                state: SpinMutex::new(NotifyState {
                    permit: false,
                    generation: 0,
                    waiters: WaitList::new(),
                }),
            }
        }
    }

    /// A future that completes on the next [`notify_one`](Self::notify_one) meant for it (or
    /// at once, taking the stored permit), or on the next
    /// [`notify_waiters`](Self::notify_waiters) (one called after this returns).
    ///
    /// Create it before checking the condition it waits for, then await it: a notification in
    /// between is kept.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`; awaiting it too.
    pub fn notified(&self) -> Notified<'_> {
        let generation = self.state.lock().generation;
        Notified {
            notify: self,
            node: WaitNode::new(Ticket {
                generation,
                holds_permit: false,
                finished: false,
            }),
        }
    }

    /// Wakes the task that has waited longest, or, when none waits, stores a permit (at most
    /// one) for the next [`notified`](Self::notified).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn notify_one(&self) {
        let waker = {
            let mut state = self.state.lock();
            if let Some((node, waker)) = state.waiters.notify_front() {
                // SAFETY: just notified under the lock we hold; its owner cannot drop it until
                // we release it; no other reference to its state is in use.
                unsafe { node_state(node) }.payload.holds_permit = true;
                waker
            } else {
                state.permit = true;
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes every task waiting now, and completes every [`Notified`] created before this call
    /// even if it was not polled yet. Stores no permit.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`. Wakes in batches of [`WAKE_BATCH`](super::WAKE_BATCH), releasing
    /// the spin lock between them.
    pub fn notify_waiters(&self) {
        let target = {
            let mut state = self.state.lock();
            state.generation += 1;
            state.generation
        };
        loop {
            let mut batch = WakeBatch::new();
            let more = {
                let mut state = self.state.lock();
                // Waiters that started after the bump have `generation == target` and sit
                // behind every older one (the list is FIFO): stop at the first of them.
                while batch.has_room() && Self::front_is_older(&state.waiters, target) {
                    if let Some((_, waker)) = state.waiters.notify_front() {
                        batch.push(waker);
                    }
                }
                !batch.has_room()
            };
            batch.wake_all();
            if !more {
                return;
            }
        }
    }

    /// Whether the first waiter was created before generation `target`.
    fn front_is_older(waiters: &WaitList<Ticket>, target: u64) -> bool {
        waiters.front().is_some_and(|node| {
            // SAFETY: a linked node is live; `&WaitList` comes from the guard we hold; no
            // other reference to its state is in use.
            unsafe { node_state(node) }.payload.generation < target
        })
    }
}

impl Default for Notify {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Notify {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Notify").finish_non_exhaustive()
    }
}

/// Waits for a notification from a [`Notify`]; see [`Notify::notified`].
///
/// Dropping it while it waits unlinks it; dropping it after a [`Notify::notify_one`] chose it
/// but before it completed passes that notification on to the next waiter (or back to the
/// permit), so cancelling never loses one.
///
/// # IRQL
/// Polled and dropped at <= `DISPATCH_LEVEL`.
#[must_use = "futures do nothing unless awaited"]
pub struct Notified<'a> {
    notify: &'a Notify,
    node: WaitNode<Ticket>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Everything mutable lives in the node, under the spin lock: no pin projection.
        let this = self.into_ref().get_ref();
        let node = this.node.as_ptr();
        let mut state = this.notify.state.lock();
        {
            // SAFETY: we hold the notify's lock; the node is ours and live; no other
            // reference to its state is in use.
            let ticket = unsafe { node_state(node) };
            if ticket.payload.finished || ticket.notified {
                ticket.payload.finished = true;
                return Poll::Ready(());
            }
            if ticket.linked() {
                ticket.set_waker(cx.waker());
                return Poll::Pending;
            }
            if ticket.payload.generation != state.generation {
                ticket.payload.finished = true;
                return Poll::Ready(());
            }
            if state.permit {
                state.permit = false;
                ticket.payload.finished = true;
                return Poll::Ready(());
            }
            ticket.set_waker(cx.waker());
        }
        // SAFETY: the node is pinned inside this future (`!Unpin`), not linked, and `Drop`
        // removes it under this lock before the memory goes away.
        unsafe { state.waiters.push_back(node) };
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        let node = self.node.as_ptr();
        let waker = {
            let mut state = self.notify.state.lock();
            // SAFETY: we hold the notify's lock; the node is ours; no other reference to its
            // state is in use.
            let ticket = unsafe { node_state(node) };
            if ticket.linked() {
                // SAFETY: linked in this notify's list; the reference above is not used again.
                unsafe { state.waiters.remove(node) };
                None
            } else if ticket.notified && ticket.payload.holds_permit && !ticket.payload.finished {
                // Chosen by notify_one but never completed: hand the notification on.
                ticket.payload.holds_permit = false;
                if let Some((next, waker)) = state.waiters.notify_front() {
                    // SAFETY: just notified under our lock; live until we release it; no other
                    // reference to its state is in use.
                    unsafe { node_state(next) }.payload.holds_permit = true;
                    waker
                } else {
                    state.permit = true;
                    None
                }
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl core::fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Notified").finish_non_exhaustive()
    }
}
