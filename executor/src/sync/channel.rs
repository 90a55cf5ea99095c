//! [`Channel`]: a bounded queue between tasks, without allocation.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use heapless::Deque;

use super::spin::SpinMutex;
use super::wait_list::{WaitList, WaitNode, WakeBatch, node_state};
use crate::raw::sync::loom_const_fn;

/// A bounded channel holding up to `N` values of `T` inline: many senders, meant for one
/// receiver. `N` >= 1, checked at compile time:
///
/// ```compile_fail
/// static NEVER: wsk_executor::sync::Channel<u8, 0> = wsk_executor::sync::Channel::new();
/// ```
///
/// - [`send`](Self::send)`.await` waits for room; [`try_send`](Self::try_send) never waits.
///   Senders that wait are served in order: when a value is received, the longest-waiting
///   sender's value moves into the freed slot at once (it is queued from then on).
/// - [`recv`](Self::recv)`.await` waits for a value; [`try_recv`](Self::try_recv) never waits.
///   Once [`close`](Self::close)d and drained, both say so (`None`,
///   [`TryRecvError::Closed`]).
/// - [`close`](Self::close): no value is accepted afterwards; senders waiting at that moment,
///   and later ones, get their value back in [`Closed`]; the values already queued are still
///   received.
///
/// Several receivers: allowed and safe, if not what it is built for. Each value goes to
/// exactly one receiver, and waiting receivers are woken in the order they began to wait; a
/// receiver that was woken for a value and is dropped passes the wake-up on. Which task gets
/// which value is then up to timing, so order across receivers means nothing.
///
/// # IRQL
/// Every method and future: <= `DISPATCH_LEVEL` (the state is under a [`SpinMutex`]); a DPC or
/// a completion routine can [`try_send`](Self::try_send). Values move in and out under the
/// spin lock, at `DISPATCH_LEVEL` (a plain copy: keep `T` small, or send a handle to it); none
/// is dropped there.
///
/// # Example
/// ```no_run
/// use wsk_executor::sync::Channel;
///
/// static REQUESTS: Channel<u32, 16> = Channel::new();
///
/// async fn producer(id: u32) {
///     if let Err(closed) = REQUESTS.send(id).await {
///         let _unsent: u32 = closed.0; // the channel was closed: the value comes back
///     }
/// }
///
/// async fn consumer() {
///     while let Some(id) = REQUESTS.recv().await {
///         let _ = id;
///     }
/// }
/// ```
pub struct Channel<T, const N: usize> {
    state: SpinMutex<ChannelState<T, N>>,
}

struct ChannelState<T, const N: usize> {
    queue: Deque<T, N>,
    closed: bool,
    /// Senders waiting for room, their values in their nodes. Non-empty only while `queue` is
    /// full (or, briefly, while `close` hands the values back).
    senders: WaitList<SendTicket<T>>,
    receivers: WaitList<RecvTicket>,
}

/// A waiting sender's record: its value, until it is queued or handed back.
struct SendTicket<T> {
    value: Option<T>,
    /// `Ready` was returned.
    finished: bool,
}

/// A waiting receiver's record.
struct RecvTicket {
    /// `Ready` was returned.
    finished: bool,
}

/// [`Channel::send`] on a closed channel: the value, handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> core::fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<T> core::fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the channel is closed")
    }
}

impl<T> core::error::Error for Closed<T> {}

/// Why [`Channel::try_send`] failed; either way the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The channel holds `N` values.
    Full(T),
    /// The channel is closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(value) | Self::Closed(value) => value,
        }
    }
}

impl<T> core::fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Closed(_) => "Closed(..)",
        })
    }
}

impl<T> core::fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "the channel is full",
            Self::Closed(_) => "the channel is closed",
        })
    }
}

impl<T> core::error::Error for TrySendError<T> {}

/// Why [`Channel::try_recv`] returned no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing is queued now.
    Empty,
    /// Nothing is queued and the channel is closed: nothing ever will be.
    Closed,
}

impl core::fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Empty => "the channel is empty",
            Self::Closed => "the channel is closed and drained",
        })
    }
}

impl core::error::Error for TryRecvError {}

impl<T, const N: usize> ChannelState<T, N> {
    /// Takes the first queued value; refills the freed slot from the longest-waiting sender
    /// (whose waker is returned, to be called after the lock is released).
    fn take(&mut self) -> Option<(T, Option<Waker>)> {
        let value = self.queue.pop_front()?;
        let mut sender_waker = None;
        if self.closed {
            // Waiting senders get their value back from `close`, not a slot.
            return Some((value, None));
        }
        if let Some((node, waker)) = self.senders.notify_front() {
            // SAFETY: just notified under the lock we hold (`&mut self` is inside the guard);
            // its owner cannot drop it before we release the lock; no other reference to its
            // state is in use.
            let ticket = unsafe { node_state(node) };
            if let Some(moved) = ticket.payload.value.take() {
                // We just freed a slot, so this fits; were it to fail, the value would stay
                // with its sender, which would report it as `Closed` rather than lose it.
                ticket.payload.value = self.queue.push_back(moved).err();
            }
            sender_waker = waker;
        }
        Some((value, sender_waker))
    }

    /// Queues `value`, waking the longest-waiting receiver; gives it back when full.
    fn put(&mut self, value: T) -> Result<Option<Waker>, T> {
        self.queue.push_back(value)?;
        Ok(self.receivers.notify_front().and_then(|(_, waker)| waker))
    }
}

impl<T, const N: usize> Channel<T, N> {
    loom_const_fn! {
        /// An empty, open channel.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new() -> Self {
            // A channel without a slot could never pass a value: refuse it at compile time.
            const { assert!(N > 0, "a Channel needs a capacity N of at least 1") };
            Self {
                state: SpinMutex::new(ChannelState {
                    queue: Deque::new(),
                    closed: false,
                    senders: WaitList::new(),
                    receivers: WaitList::new(),
                }),
            }
        }
    }

    /// A future that queues `value` once there is room, or hands it back in [`Closed`] if the
    /// channel is (or gets) closed first. Dropping it before it completes drops the value
    /// unless it was already queued.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (creating, polling and dropping it).
    pub const fn send(&self, value: T) -> SendFuture<'_, T, N> {
        SendFuture {
            channel: self,
            node: WaitNode::new(SendTicket {
                value: Some(value),
                finished: false,
            }),
        }
    }

    /// Queues `value` now, waking a waiting receiver.
    ///
    /// # Errors
    /// The value comes back in [`TrySendError::Full`] when `N` values are queued (or senders
    /// wait for room), in [`TrySendError::Closed`] once the channel is closed.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(TrySendError::Closed(value));
            }
            state.put(value).map_err(TrySendError::Full)?
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// A future that completes with the next value, or `None` once the channel is closed and
    /// drained.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (creating, polling and dropping it).
    pub const fn recv(&self) -> RecvFuture<'_, T, N> {
        RecvFuture {
            channel: self,
            node: WaitNode::new(RecvTicket { finished: false }),
        }
    }

    /// The next value, if one is queued; the freed slot goes to the longest-waiting sender.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is queued, [`TryRecvError::Closed`] once the
    /// channel is closed and drained.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let (value, waker) = {
            let mut state = self.state.lock();
            match state.take() {
                Some(taken) => taken,
                None if state.closed => return Err(TryRecvError::Closed),
                None => return Err(TryRecvError::Empty),
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(value)
    }

    /// Closes the channel: later sends fail with their value, senders waiting now get theirs
    /// back, waiting receivers wake and drain what is queued, then see the end. Idempotent.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`. Wakes in batches of [`WAKE_BATCH`](super::WAKE_BATCH), releasing
    /// the spin lock between them.
    pub fn close(&self) {
        loop {
            let mut batch = WakeBatch::new();
            {
                let mut state = self.state.lock();
                state.closed = true;
                // Senders keep their value in their node: they return it as `Closed`.
                while batch.has_room() {
                    match state.senders.notify_front() {
                        Some((_, waker)) => batch.push(waker),
                        None => break,
                    }
                }
                while batch.has_room() {
                    match state.receivers.notify_front() {
                        Some((_, waker)) => batch.push(waker),
                        None => break,
                    }
                }
            }
            let done = batch.has_room();
            batch.wake_all();
            if done {
                // The batch had room left: both lists were empty (and stay so: closed).
                return;
            }
        }
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// How many values are queued now.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether no value is queued now.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn is_empty(&self) -> bool {
        self.state.lock().queue.is_empty()
    }

    /// The capacity, `N`.
    ///
    /// # IRQL
    /// Any.
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T, const N: usize> Default for Channel<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> core::fmt::Debug for Channel<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (len, closed) = {
            let state = self.state.lock();
            (state.queue.len(), state.closed)
        };
        f.debug_struct("Channel")
            .field("len", &len)
            .field("capacity", &N)
            .field("closed", &closed)
            .finish_non_exhaustive()
    }
}

/// Sends a value on a [`Channel`]; see [`Channel::send`].
///
/// # IRQL
/// Polled and dropped at <= `DISPATCH_LEVEL`.
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, T, const N: usize> {
    channel: &'a Channel<T, N>,
    node: WaitNode<SendTicket<T>>,
}

impl<T, const N: usize> Future for SendFuture<'_, T, N> {
    type Output = Result<(), Closed<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Everything mutable lives in the node, under the spin lock: no pin projection.
        let this = self.into_ref().get_ref();
        let node = this.node.as_ptr();
        let receiver_waker = {
            let mut state = this.channel.state.lock();
            // SAFETY: we hold the channel's spin lock; the node is ours and live; no other
            // reference to its state is in use.
            let ticket = unsafe { node_state(node) };
            assert!(
                !ticket.payload.finished,
                "SendFuture polled after it completed"
            );
            if ticket.notified {
                // Either a receiver moved our value into the queue, or close handed it back.
                ticket.payload.finished = true;
                return Poll::Ready(
                    ticket
                        .payload
                        .value
                        .take()
                        .map_or(Ok(()), |v| Err(Closed(v))),
                );
            }
            if ticket.linked() {
                ticket.set_waker(cx.waker());
                return Poll::Pending;
            }
            let Some(value) = ticket.payload.value.take() else {
                ticket.payload.finished = true;
                return Poll::Ready(Ok(()));
            };
            if state.closed {
                ticket.payload.finished = true;
                return Poll::Ready(Err(Closed(value)));
            }
            match state.put(value) {
                Ok(waker) => {
                    ticket.payload.finished = true;
                    waker
                }
                Err(value) => {
                    ticket.payload.value = Some(value);
                    ticket.set_waker(cx.waker());
                    // SAFETY: the node is pinned inside this future (`!Unpin`), not linked,
                    // and `Drop` removes it under this lock before the memory goes away;
                    // `ticket` is not used again.
                    unsafe { state.senders.push_back(node) };
                    return Poll::Pending;
                }
            }
        };
        if let Some(waker) = receiver_waker {
            waker.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T, const N: usize> Drop for SendFuture<'_, T, N> {
    fn drop(&mut self) {
        let node = self.node.as_ptr();
        let mut state = self.channel.state.lock();
        // SAFETY: we hold the channel's spin lock; the node is ours; no other reference to its
        // state is in use.
        if unsafe { node_state(node) }.linked() {
            // SAFETY: linked in this channel's sender list.
            unsafe { state.senders.remove(node) };
        }
        // A value still in the node is dropped with it, after the lock is released.
    }
}

impl<T, const N: usize> core::fmt::Debug for SendFuture<'_, T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendFuture").finish_non_exhaustive()
    }
}

/// Receives a value from a [`Channel`]; see [`Channel::recv`].
///
/// # IRQL
/// Polled and dropped at <= `DISPATCH_LEVEL`.
#[must_use = "futures do nothing unless awaited"]
pub struct RecvFuture<'a, T, const N: usize> {
    channel: &'a Channel<T, N>,
    node: WaitNode<RecvTicket>,
}

impl<T, const N: usize> Future for RecvFuture<'_, T, N> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        // Everything mutable lives in the node, under the spin lock: no pin projection.
        let this = self.into_ref().get_ref();
        let node = this.node.as_ptr();
        let (value, sender_waker) = {
            let mut state = this.channel.state.lock();
            // SAFETY: we hold the channel's spin lock; the node is ours and live; no other
            // reference to its state is in use.
            let ticket = unsafe { node_state(node) };
            assert!(
                !ticket.payload.finished,
                "RecvFuture polled after it completed"
            );
            // Woken or not, look at the queue first; a wake-up that finds it empty (another
            // receiver was faster) just waits again.
            ticket.notified = false;
            let linked = ticket.linked();
            if let Some(taken) = state.take() {
                // SAFETY: as above; the earlier reference is not used again.
                unsafe { node_state(node) }.payload.finished = true;
                if linked {
                    // SAFETY: linked in this channel's receiver list.
                    unsafe { state.receivers.remove(node) };
                }
                taken
            } else if state.closed {
                // SAFETY: as above.
                unsafe { node_state(node) }.payload.finished = true;
                if linked {
                    // SAFETY: linked in this channel's receiver list.
                    unsafe { state.receivers.remove(node) };
                }
                return Poll::Ready(None);
            } else {
                // SAFETY: as above.
                unsafe { node_state(node) }.set_waker(cx.waker());
                if !linked {
                    // SAFETY: the node is pinned inside this future (`!Unpin`), not linked,
                    // and `Drop` removes it under this lock before the memory goes away.
                    unsafe { state.receivers.push_back(node) };
                }
                return Poll::Pending;
            }
        };
        if let Some(waker) = sender_waker {
            waker.wake();
        }
        Poll::Ready(Some(value))
    }
}

impl<T, const N: usize> Drop for RecvFuture<'_, T, N> {
    fn drop(&mut self) {
        let node = self.node.as_ptr();
        let waker = {
            let mut state = self.channel.state.lock();
            // SAFETY: we hold the channel's spin lock; the node is ours; no other reference to
            // its state is in use.
            let ticket = unsafe { node_state(node) };
            if ticket.linked() {
                // SAFETY: linked in this channel's receiver list; `ticket` is not used again.
                unsafe { state.receivers.remove(node) };
                None
            } else if ticket.notified && !ticket.payload.finished && !state.queue.is_empty() {
                // Woken for a value it will never take: wake the next receiver instead.
                state.receivers.notify_front().and_then(|(_, waker)| waker)
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T, const N: usize> core::fmt::Debug for RecvFuture<'_, T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvFuture").finish_non_exhaustive()
    }
}
