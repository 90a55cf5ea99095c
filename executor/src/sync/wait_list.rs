//! The intrusive FIFO of waiting futures every primitive in [`super`] keeps under its spin lock,
//! and the stack batch broadcasts wake from.
//!
//! A [`WaitNode`] lives inside a pinned future. Everything in it (links, waker, flags, payload)
//! is only read or written while the spin lock of the primitive whose list the node belongs to
//! is held: that lock is what makes the `unsafe` below sound, and every function touching a
//! node says so in its contract.

use core::cell::UnsafeCell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;
use core::task::Waker;

use super::WAKE_BATCH;

/// A waiter's node, embedded in its (pinned) future.
///
/// `repr(transparent)`: the node's address is its state's, so a node pointer becomes a state
/// pointer without dereferencing anything.
#[repr(transparent)]
pub(crate) struct WaitNode<P> {
    state: UnsafeCell<NodeState<P>>,
    /// Linked nodes are pointed to: their futures must stay put (`!Unpin`).
    _pinned: PhantomPinned,
}

// SAFETY: the node's pointers are only followed under the owning primitive's spin lock, which
// serialises every access across threads; the waker and the payload move with the node.
unsafe impl<P: Send> Send for WaitNode<P> {}

/// What a node holds; only touched under the owning primitive's spin lock.
pub(crate) struct NodeState<P> {
    prev: Option<NonNull<WaitNode<P>>>,
    next: Option<NonNull<WaitNode<P>>>,
    /// In the list now.
    linked: bool,
    /// Taken off the list by someone who handed the waiter something (a notification, the
    /// lock, a slot, or the news that the primitive closed).
    pub(crate) notified: bool,
    /// The waker to call when `notified` is set.
    pub(crate) waker: Option<Waker>,
    /// The primitive's own per-waiter data.
    pub(crate) payload: P,
}

impl<P> NodeState<P> {
    /// Whether the node is in its primitive's list.
    pub(crate) const fn linked(&self) -> bool {
        self.linked
    }

    /// Stores `waker` unless the stored one already wakes the same task.
    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        match &self.waker {
            Some(stored) if stored.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
    }
}

impl<P> WaitNode<P> {
    /// An unlinked node carrying `payload`.
    pub(crate) const fn new(payload: P) -> Self {
        Self {
            state: UnsafeCell::new(NodeState {
                prev: None,
                next: None,
                linked: false,
                notified: false,
                waker: None,
                payload,
            }),
            _pinned: PhantomPinned,
        }
    }

    /// The node's address, for the list and for [`node_state`].
    pub(crate) fn as_ptr(&self) -> NonNull<Self> {
        NonNull::from(self)
    }
}

/// The state of the node at `node`, without dereferencing it.
fn state_ptr<P>(node: NonNull<WaitNode<P>>) -> *mut NodeState<P> {
    // `WaitNode` is a transparent wrapper of the cell (the marker is zero-sized).
    UnsafeCell::raw_get(node.as_ptr().cast::<UnsafeCell<NodeState<P>>>())
}

/// The state of the live node at `node`.
///
/// # Safety
/// The caller holds the spin lock of the primitive the node belongs to, the node is live (its
/// future is not dropped: a linked node is live, since dropping unlinks it under that lock),
/// and no other reference to this node's state is used while the returned one is.
pub(crate) unsafe fn node_state<'a, P>(node: NonNull<WaitNode<P>>) -> &'a mut NodeState<P> {
    // SAFETY: the caller's contract: live node, exclusive access under the lock.
    unsafe { &mut *state_ptr(node) }
}

/// A FIFO of linked [`WaitNode`]s; lives inside a primitive's spin-locked state, so `&mut`
/// access to the list means the lock is held.
pub(crate) struct WaitList<P> {
    head: Option<NonNull<WaitNode<P>>>,
    tail: Option<NonNull<WaitNode<P>>>,
}

// SAFETY: the list only points to nodes, which are themselves `Send` for `P: Send`, and it is
// only reachable under its primitive's spin lock.
unsafe impl<P: Send> Send for WaitList<P> {}

impl<P> WaitList<P> {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        Self {
            head: None,
            tail: None,
        }
    }

    /// The first waiter, still linked.
    pub(crate) const fn front(&self) -> Option<NonNull<WaitNode<P>>> {
        self.head
    }

    /// Appends `node`.
    ///
    /// # Safety
    /// `node` is live, not linked, pinned (it stays at its address until it is dropped), and
    /// its owner removes it (under the same lock) before dropping it. No reference to its state
    /// is in use.
    pub(crate) unsafe fn push_back(&mut self, node: NonNull<WaitNode<P>>) {
        let old_tail = self.tail;
        {
            // SAFETY: the caller's contract: live, and nobody else uses its state.
            let state = unsafe { node_state(node) };
            debug_assert!(!state.linked);
            state.prev = old_tail;
            state.next = None;
            state.linked = true;
        }
        match old_tail {
            // SAFETY: a linked node is live (its owner unlinks it before dropping it), and
            // `&mut self` means we hold the lock; it is not `node` (that one was not linked).
            Some(tail) => unsafe { node_state(tail) }.next = Some(node),
            None => self.head = Some(node),
        }
        self.tail = Some(node);
    }

    /// Unlinks `node`.
    ///
    /// # Safety
    /// `node` is linked in this list, and no reference to its state is in use.
    pub(crate) unsafe fn remove(&mut self, node: NonNull<WaitNode<P>>) {
        let (prev, next) = {
            // SAFETY: linked in this list, hence live; `&mut self` means we hold the lock.
            let state = unsafe { node_state(node) };
            debug_assert!(state.linked);
            state.linked = false;
            (state.prev.take(), state.next.take())
        };
        match prev {
            // SAFETY: a neighbour in this list is linked, hence live, and is not `node`.
            Some(prev) => unsafe { node_state(prev) }.next = next,
            None => self.head = next,
        }
        match next {
            // SAFETY: as above.
            Some(next) => unsafe { node_state(next) }.prev = prev,
            None => self.tail = prev,
        }
    }

    /// Unlinks the first waiter, marks it notified and returns its waker (call it once the
    /// lock is released) and its node, whose state the caller may still use under the lock.
    pub(crate) fn notify_front(&mut self) -> Option<(NonNull<WaitNode<P>>, Option<Waker>)> {
        let node = self.head?;
        // SAFETY: the head is linked in this list; no reference to its state is in use.
        unsafe { self.remove(node) };
        // SAFETY: still live: its owner can only drop it after taking the lock we hold.
        let state = unsafe { node_state(node) };
        state.notified = true;
        Some((node, state.waker.take()))
    }
}

/// Wakers collected under a spin lock, called after it is released.
pub(crate) struct WakeBatch {
    wakers: [Option<Waker>; WAKE_BATCH],
    len: usize,
}

impl WakeBatch {
    /// An empty batch.
    pub(crate) const fn new() -> Self {
        Self {
            wakers: [const { None }; WAKE_BATCH],
            len: 0,
        }
    }

    /// Whether another waker fits.
    pub(crate) const fn has_room(&self) -> bool {
        self.len < WAKE_BATCH
    }

    /// Adds `waker` (a waiter notified without one, never polled, needs no call).
    pub(crate) fn push(&mut self, waker: Option<Waker>) {
        debug_assert!(self.has_room());
        if let Some(slot) = self.wakers.get_mut(self.len) {
            *slot = waker;
            self.len += 1;
        }
    }

    /// Calls every collected waker.
    pub(crate) fn wake_all(self) {
        for waker in self.wakers.into_iter().flatten() {
            waker.wake();
        }
    }
}
