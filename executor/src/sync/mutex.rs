//! [`Mutex`]: an async lock whose guard may be held across `.await`.

use core::cell::UnsafeCell;
use core::future::Future;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::task::{Context, Poll};

use super::spin::SpinMutex;
use super::wait_list::{WaitList, WaitNode, node_state};
use crate::raw::sync::loom_const_fn;

/// An async mutual-exclusion lock: [`lock`](Self::lock)`.await` suspends the task (never spins)
/// until the lock is free, and the guard may be held across `.await`s.
///
/// Fair: waiters are served first come, first served, and an unlock hands the lock straight to
/// the longest waiter (the lock never appears free while someone waits), so no waiter starves
/// and a task that calls [`try_lock`](Self::try_lock) in a loop cannot overtake them. A `Lock`
/// future dropped while queued leaves the queue; one dropped after the lock was handed to it
/// hands it on.
///
/// For critical sections that never await, a [`SpinMutex`] is cheaper.
///
/// # IRQL
/// Every method and future: <= `DISPATCH_LEVEL` (the queue is under a [`SpinMutex`]); so is
/// dropping a guard.
///
/// # Example
/// ```no_run
/// use wsk_executor::sync::Mutex;
/// use wsk_executor::yield_now;
///
/// static TOTALS: Mutex<[u64; 2]> = Mutex::new([0; 2]);
///
/// async fn add(bytes: u64) {
///     let mut totals = TOTALS.lock().await;
///     totals[0] += bytes;
///     yield_now().await; // still held
///     totals[1] += 1;
/// }
/// ```
pub struct Mutex<T: ?Sized> {
    state: SpinMutex<MutexState>,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through a guard (which owns the lock) or `&mut self`; a
// guard may move to another task or processor, hence `T: Send`.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}

struct MutexState {
    /// Owned by a guard, or handed to a waiter that has not picked it up yet. Whenever
    /// `waiters` is non-empty, `locked` is true.
    locked: bool,
    waiters: WaitList<Ticket>,
}

/// A waiter's record in a [`Mutex`].
struct Ticket {
    /// `Ready` was returned: the guard owns the lock now.
    finished: bool,
}

impl<T> Mutex<T> {
    loom_const_fn! {
        /// An unlocked mutex holding `value`.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new(value: T) -> Self {
            Self {
                state: SpinMutex::new(MutexState { locked: false, waiters: WaitList::new() }),
                data: UnsafeCell::new(value),
            }
        }
    }

    /// The value, taken out of the mutex.
    ///
    /// # IRQL
    /// Any.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// A future that completes with the guard once the lock is this task's.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (creating, polling and dropping it).
    pub const fn lock(&self) -> Lock<'_, T> {
        Lock {
            mutex: self,
            node: WaitNode::new(Ticket { finished: false }),
        }
    }

    /// The guard, if the lock is free now; `None` if anyone holds it or waits for it.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let mut state = self.state.lock();
        if state.locked {
            return None;
        }
        state.locked = true;
        Some(MutexGuard {
            mutex: self,
            _data: PhantomData,
        })
    }

    /// The value, through `&mut self`: no guard can exist, so no lock is taken.
    ///
    /// # IRQL
    /// Any.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Releases the lock: hands it to the longest waiter, or marks it free.
    fn unlock(&self) {
        let waker = {
            let mut state = self.state.lock();
            if let Some((_, waker)) = state.waiters.notify_front() {
                // `locked` stays true: the lock now belongs to that waiter.
                waker
            } else {
                state.locked = false;
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized> core::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never waits for the lock: the value may be held by a sleeping task.
        f.debug_struct("Mutex").finish_non_exhaustive()
    }
}

/// Waits for a [`Mutex`]; see [`Mutex::lock`].
///
/// # IRQL
/// Polled and dropped at <= `DISPATCH_LEVEL`.
#[must_use = "futures do nothing unless awaited"]
pub struct Lock<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    node: WaitNode<Ticket>,
}

impl<'a, T: ?Sized> Future for Lock<'a, T> {
    type Output = MutexGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MutexGuard<'a, T>> {
        // Everything mutable lives in the node, under the spin lock: no pin projection.
        let this = self.into_ref().get_ref();
        let mutex = this.mutex;
        let node = this.node.as_ptr();
        let mut state = mutex.state.lock();
        {
            // SAFETY: we hold the mutex's spin lock; the node is ours and live; no other
            // reference to its state is in use.
            let ticket = unsafe { node_state(node) };
            assert!(
                !ticket.payload.finished,
                "Lock polled after it returned the guard"
            );
            if ticket.notified {
                // An unlock handed us the lock.
                ticket.payload.finished = true;
                return Poll::Ready(MutexGuard {
                    mutex,
                    _data: PhantomData,
                });
            }
            if ticket.linked() {
                ticket.set_waker(cx.waker());
                return Poll::Pending;
            }
            if !state.locked {
                state.locked = true;
                ticket.payload.finished = true;
                return Poll::Ready(MutexGuard {
                    mutex,
                    _data: PhantomData,
                });
            }
            ticket.set_waker(cx.waker());
        }
        // SAFETY: the node is pinned inside this future (`!Unpin`), not linked, and `Drop`
        // removes it under this lock before the memory goes away.
        unsafe { state.waiters.push_back(node) };
        Poll::Pending
    }
}

impl<T: ?Sized> Drop for Lock<'_, T> {
    fn drop(&mut self) {
        let node = self.node.as_ptr();
        let handed_unclaimed = {
            let mut state = self.mutex.state.lock();
            // SAFETY: we hold the mutex's spin lock; the node is ours; no other reference to
            // its state is in use.
            let ticket = unsafe { node_state(node) };
            if ticket.linked() {
                // SAFETY: linked in this mutex's list; `ticket` is not used again.
                unsafe { state.waiters.remove(node) };
                false
            } else {
                ticket.notified && !ticket.payload.finished
            }
        };
        if handed_unclaimed {
            // The lock was handed to us and nobody will ever use it: pass it on.
            self.mutex.unlock();
        }
    }
}

impl<T: ?Sized> core::fmt::Debug for Lock<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lock").finish_non_exhaustive()
    }
}

/// Owns a [`Mutex`]'s lock: derefs to the value; dropping it hands the lock to the next
/// waiter. May be held across `.await` and sent to other tasks (`Send` when `T: Send`).
///
/// # IRQL
/// Dropped at <= `DISPATCH_LEVEL`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    /// `Sync` only for `T: Sync` (the guard shares `&T`), `Send` for `T: Send`.
    _data: PhantomData<&'a mut T>,
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard owns the lock, so no `&mut` to the data exists elsewhere.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard owns the lock, and `&mut self` makes this the only reference.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<T: ?Sized + core::fmt::Debug> core::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&**self, f)
    }
}
