//! [`WakeRoute`]: what a runner's wake does after it queued a task on an empty run queue, and
//! the handshake that keeps a route change from losing such a wake. The runners
//! ([`crate::Runner`]) hold one; it lives here, on the `sync` facade, so that the loom models
//! check the real code.
//!
//! The handshake is the store-buffering pattern with a `SeqCst` fence on each side:
//! - the waker pushes its task, fences, and reads the route ([`WakeRoute::for_wake`]);
//! - a thread that stops polling writes the route, fences, and looks at the run queue
//!   ([`WakeRoute::thread_may_wait`], [`WakeRoute::hand_back_to_dpc`]).
//!
//! Of two such fences one comes first in their single total order, so either the waker reads
//! the new route (and sets the event, or queues the DPC) or the thread sees the task (and
//! polls it, or queues the DPC for it). A wake is never left with nobody to run it.

use super::executor::{Executor, Pender};
use super::sync::{AtomicU8, Ordering, fence, loom_const_fn};

/// What a wake that made the run queue non-empty does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Queue the runner's DPC (the DPC kind, unless its thread owns the work).
    Dpc,
    /// Nothing: the runner's thread polls (the passive kind between two waits, the DPC kind
    /// after a hand-off) and looks at the run queue again before it waits or hands back.
    ThreadPolling,
    /// Set the runner's event: the passive runner's thread waits, or is about to.
    ThreadWaiting,
}

impl Route {
    const fn to_u8(self) -> u8 {
        match self {
            Self::Dpc => 0,
            Self::ThreadPolling => 1,
            Self::ThreadWaiting => 2,
        }
    }

    const fn from_u8(route: u8) -> Self {
        match route {
            0 => Self::Dpc,
            1 => Self::ThreadPolling,
            _ => Self::ThreadWaiting,
        }
    }
}

/// A runner's route for wakes: one byte, read with one load by every wake.
pub(crate) struct WakeRoute(AtomicU8);

impl WakeRoute {
    loom_const_fn! {
        pub(crate) fn new(route: Route) -> Self {
            Self(AtomicU8::new(route.to_u8()))
        }
    }

    /// The route now (no handshake: for the runner's own checks of who owns the work).
    #[inline]
    pub(crate) fn get(&self) -> Route {
        Route::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Sets the route where no wake can be lost by it: before wakes are pended at all
    /// (`start`, after shutdown), or towards [`Route::ThreadPolling`] (a thread that polls
    /// looks at the queue again before it stops).
    #[inline]
    pub(crate) fn set(&self, route: Route) {
        self.0.store(route.to_u8(), Ordering::SeqCst);
    }

    /// The waker's side, after its push made the queue non-empty: the route to take.
    #[inline]
    pub(crate) fn for_wake(&self) -> Route {
        fence(Ordering::SeqCst);
        Route::from_u8(self.0.load(Ordering::SeqCst))
    }

    /// The passive thread's side before it waits: routes wakes to the event, then looks at the
    /// run queue; true if nothing is queued (it may wait: a later wake sets the event). False:
    /// poll again at once. (A wake that read the new route and whose task the look saw leaves
    /// the event set: one spurious turn of the thread's loop later.)
    #[inline]
    pub(crate) fn thread_may_wait<P: Pender>(&self, executor: &Executor<P>) -> bool {
        self.0.store(Route::ThreadWaiting.to_u8(), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        !executor.may_have_queued()
    }

    /// The DPC runner's thread's side when its run queue is empty: routes wakes to the DPC
    /// again, then looks at the run queue; true if a task was queued meanwhile (its waker may
    /// have read the old route): the caller queues the DPC for it.
    #[inline]
    pub(crate) fn hand_back_to_dpc<P: Pender>(&self, executor: &Executor<P>) -> bool {
        self.0.store(Route::Dpc.to_u8(), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        executor.has_queued()
    }
}
