//! One deadline for every socket operation: [`timeout`]. On expiry the IRP is cancelled
//! (`IoCancelIrp`) and the operation is still driven to completion, so the caller gets
//! `TimedOut` *and* its `IoBuf`, and data that arrived in the meantime is never lost. Where
//! the provider ignores the cancel (Wine 8.0), the deadline escalates after
//! [`CANCEL_GRACE`]: see [`timeout`].

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
// The executor has no timer under loom (its models have no clock): the deadline goes too.
#[cfg(not(loom))]
use core::time::Duration;

#[cfg(not(loom))]
use wsk_executor::Sleep;

use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::SocketInner;
use crate::socket::SocketRef;
use crate::tcp::{Accept, Recv, SendAll, TcpStream};

/// How long [`timeout`] waits for a cancelled operation to complete before escalating: a
/// provider that honours `IoCancelIrp` completes it within microseconds; Wine 8.0 never does
/// for WSK IRPs.
#[cfg(not(loom))]
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// What a deadline does with an operation the provider did not complete within
/// [`CANCEL_GRACE`] of its cancel ([`Cancellable::escalate`]).
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug)]
pub enum Escalation<T> {
    /// Nothing of the caller's is held: the operation is dropped (its IRP finishes on its
    /// own, nothing WSK holds is freed before) and this is the result.
    Abandon(T),
    /// The operation holds the caller's buffer: its socket was closed, which completes the
    /// IRP; keep polling for the buffer.
    KeepWaiting,
}

/// An operation that can be asked to stop early and then still completes: what [`timeout`]
/// needs. Implemented by every socket operation: [`Recv`], [`SendAll`], [`Accept`], and
/// [`Operation`] (connect, disconnect, bind, addresses, options, UDP, resolve).
///
/// ```no_run
/// use wsk_net::Cancellable;
/// async fn within_a_second<F: Cancellable>(operation: F) -> F::Output {
///     wsk_net::timeout(core::time::Duration::from_secs(1), operation).await
/// }
/// ```
///
/// # IRQL
/// [`Cancellable::request_cancel`] at <= `DISPATCH_LEVEL`; [`Cancellable::timed_out`] at
/// any IRQL.
pub trait Cancellable: Future {
    /// Asks the provider to stop (`IoCancelIrp`). The future must still be polled to
    /// completion to get its resources back. For [`Recv`] and [`Accept`] it does nothing
    /// before the operation's first poll (see [`Recv::cancel`], which has an example).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    fn request_cancel(self: Pin<&mut Self>);

    /// Turns the output of an operation cancelled by a deadline into a `TimedOut` result,
    /// keeping any resources (a buffer) and any success that won the race. For [`Recv`] and
    /// [`Accept`]: a `Cancelled` error becomes `TimedOut` with the same operation name;
    /// anything else is returned unchanged. [`timeout`] calls it; see the example there.
    ///
    /// # IRQL
    /// Any.
    fn timed_out(output: Self::Output) -> Self::Output;

    /// The operation was cancelled [`CANCEL_GRACE`] ago and has not completed (the provider
    /// ignores `IoCancelIrp`, as Wine 8.0 does for WSK IRPs): make sure it ends. Operations
    /// that hold a buffer close their socket (which completes every IRP of it) and return
    /// [`Escalation::KeepWaiting`]; the others return [`Escalation::Abandon`] with a
    /// `TimedOut` result, and [`timeout`] drops them.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    fn escalate(self: Pin<&mut Self>) -> Escalation<Self::Output>;
}

impl Cancellable for Recv<'_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.as_ref().get_ref().cancel();
    }

    fn timed_out(output: (Result<usize>, IoBuf)) -> (Result<usize>, IoBuf) {
        match output {
            (Err(e), buf) if e.kind() == ErrorKind::Cancelled => {
                (Err(Error::new(ErrorKind::TimedOut, e.operation())), buf)
            }
            other => other,
        }
    }

    fn escalate(self: Pin<&mut Self>) -> Escalation<Self::Output> {
        self.as_ref().get_ref().close_socket();
        Escalation::KeepWaiting
    }
}

impl Cancellable for SendAll<'_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.as_ref().get_ref().cancel();
    }

    fn timed_out(output: (Result<usize>, IoBuf)) -> (Result<usize>, IoBuf) {
        output.timed_out()
    }

    fn escalate(self: Pin<&mut Self>) -> Escalation<Self::Output> {
        // The buffer comes back only with the completion, which the close forces.
        self.as_ref().get_ref().close_socket();
        Escalation::KeepWaiting
    }
}

impl Cancellable for Accept<'_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.as_ref().get_ref().cancel();
    }

    fn timed_out(
        output: Result<(TcpStream, core::net::SocketAddr)>,
    ) -> Result<(TcpStream, core::net::SocketAddr)> {
        match output {
            Err(e) if e.kind() == ErrorKind::Cancelled => {
                Err(Error::new(ErrorKind::TimedOut, e.operation()))
            }
            other => other,
        }
    }

    fn escalate(self: Pin<&mut Self>) -> Escalation<Self::Output> {
        // Dropping the accept is lossless: a connection WSK accepts later is closed.
        Escalation::Abandon(Err(Error::new(ErrorKind::TimedOut, "accept")))
    }
}

/// What an [`Operation`]'s output becomes when a deadline cancels it: the result types of
/// the socket operations, with or without a buffer. Implemented for `Result<T>` and
/// `(Result<T>, IoBuf)`.
///
/// # IRQL
/// Any.
pub trait TimedOutput: Sized {
    /// `Cancelled` becomes `TimedOut` (same operation name); anything else, a success that
    /// won the race included, is unchanged; a buffer stays.
    #[must_use]
    fn timed_out(self) -> Self;
    /// The result of giving up on the operation `name`, when nothing of the caller's is
    /// held (`None`: a buffer is, so the operation must be waited for).
    fn abandoned(name: &'static str) -> Option<Self>;
}

fn timed_out_error(error: Error) -> Error {
    if error.kind() == ErrorKind::Cancelled {
        Error::new(ErrorKind::TimedOut, error.operation())
    } else {
        error
    }
}

impl<T> TimedOutput for Result<T> {
    fn timed_out(self) -> Self {
        self.map_err(timed_out_error)
    }

    fn abandoned(name: &'static str) -> Option<Self> {
        Some(Err(Error::new(ErrorKind::TimedOut, name)))
    }
}

impl<T> TimedOutput for (Result<T>, IoBuf) {
    fn timed_out(self) -> Self {
        (self.0.map_err(timed_out_error), self.1)
    }

    fn abandoned(_name: &'static str) -> Option<Self> {
        None
    }
}

/// The future of a socket operation (connect, disconnect, bind, addresses, options, UDP send
/// and receive, resolve): its output is the operation's, and it is [`Cancellable`],
/// so [`timeout`] bounds it without losing the buffer. Await it like any future.
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
/// use core::time::Duration;
/// // `TimedOut` if the provider did not answer in time.
/// let local = wsk_net::timeout(Duration::from_secs(2), stream.local_addr()).await?;
/// # let _ = local;
/// # Ok(()) }
/// ```
///
/// Dropping it drops the operation, which cancels it (a buffer it holds is freed once WSK
/// has let go of it).
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL` (except [`resolve`](crate::resolve)'s, polled at
/// `PASSIVE_LEVEL`).
#[must_use = "an operation does nothing unless awaited (dropping it cancels it)"]
pub struct Operation<'a, F> {
    /// The socket object the operation runs on.
    socket: Target<'a>,
    /// The slot its steps use.
    slot: usize,
    name: &'static str,
    /// A deadline cancelled it: the slot refuses its further steps until it ends.
    cancelled: bool,
    future: F,
}

/// The socket object an [`Operation`] runs on.
pub(crate) enum Target<'a> {
    /// A socket the caller's handle keeps (a method of a socket type).
    Borrowed(&'a SocketInner),
    /// A socket the operation creates (connect, bind, resolve).
    Owned(SocketRef),
    /// None: creating it failed, and the operation fails at its first poll.
    Missing,
}

impl Target<'_> {
    fn inner(&self) -> Option<&SocketInner> {
        match self {
            Self::Borrowed(inner) => Some(inner),
            Self::Owned(socket) => Some(socket.inner()),
            Self::Missing => None,
        }
    }
}

impl<'a, F> Operation<'a, F> {
    /// `operation` on `socket`'s slot `slot`, named `name` in errors.
    pub(crate) fn new(socket: Target<'a>, slot: usize, name: &'static str, operation: F) -> Self {
        Self {
            socket,
            slot,
            name,
            cancelled: false,
            future: operation,
        }
    }

    /// Ends the slot's cancel request, once.
    fn end_cancel(&mut self) {
        if core::mem::take(&mut self.cancelled)
            && let Some(socket) = self.socket.inner()
        {
            socket.clear_slot_cancel(self.slot);
        }
    }
}

impl<F> Drop for Operation<'_, F> {
    fn drop(&mut self) {
        self.end_cancel();
    }
}

impl<F: Future> Future for Operation<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: never moved out, dropped in place with
        // the struct; the other fields are not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        let output = core::task::ready!(future.poll(cx));
        this.end_cancel();
        Poll::Ready(output)
    }
}

impl<F: Future> Cancellable for Operation<'_, F>
where
    F::Output: TimedOutput,
{
    fn request_cancel(self: Pin<&mut Self>) {
        // SAFETY: only the unpinned fields are touched.
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(socket) = this.socket.inner() {
            this.cancelled = true;
            socket.request_slot_cancel(this.slot);
        }
    }

    fn timed_out(output: F::Output) -> F::Output {
        output.timed_out()
    }

    fn escalate(self: Pin<&mut Self>) -> Escalation<F::Output> {
        if let Some(output) = F::Output::abandoned(self.name) {
            return Escalation::Abandon(output);
        }
        if let Some(socket) = self.socket.inner() {
            socket.close_now();
        }
        Escalation::KeepWaiting
    }
}

/// Runs `operation` with a deadline `after` from now: the one deadline for every socket
/// operation (TCP send, receive, `recv_exact`, accept, connect, disconnect, UDP `send_to` and
/// `recv_from`, bind, addresses, options, resolve). On expiry the operation is cancelled
/// through WSK (`IoCancelIrp`) and awaited; its result then says `TimedOut` (unless it
/// completed successfully first) and its buffer comes back, with any data that arrived:
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream, buf: wsk_net::IoBuf) {
/// use core::time::Duration;
/// let (n, buf) = wsk_net::timeout(Duration::from_secs(5), stream.recv(buf)).await;
/// match n {
///     Err(e) if e.kind() == wsk_net::ErrorKind::TimedOut => { /* buf is still ours */ }
///     _ => {}
/// }
/// # let _ = buf;
/// # }
/// ```
///
/// Use this, not `wsk_executor::timeout`, for I/O: that one drops the future at the deadline,
/// which cancels the operation but frees its buffer and whatever arrived in it.
///
/// Where the provider ignores `IoCancelIrp` for WSK IRPs (Wine 8.0), the operation would not
/// end: [`CANCEL_GRACE`] after the cancel, the deadline escalates
/// ([`Cancellable::escalate`]). An operation that holds no buffer (connect, accept,
/// disconnect without data, bind, addresses, options, resolve) is then dropped and the result
/// is `TimedOut`; one that holds a buffer (send, receive, UDP, `disconnect_with`) closes its
/// socket, which completes the IRP and gives the buffer back, and the socket is then closed
/// for good (later operations fail with `InvalidState`). So the deadline returns within
/// `after` + [`CANCEL_GRACE`] plus the close, never hangs. If the deadline passes before the
/// operation was issued (its slot still finishing a dropped operation), it is never issued
/// and ends `TimedOut`.
///
/// # Errors
/// The operation's own output; `TimedOut` in place of `Cancelled` when the deadline passed.
///
/// # IRQL
/// Create at any IRQL; poll at <= `DISPATCH_LEVEL`, on an executor runner or in
/// `wsk_executor::block_on` (the deadline is the executor's timer).
#[cfg(not(loom))]
pub fn timeout<F: Cancellable>(after: Duration, operation: F) -> WithTimeout<F> {
    WithTimeout {
        operation: Some(operation),
        sleep: wsk_executor::sleep(after),
        grace: wsk_executor::sleep(after.saturating_add(CANCEL_GRACE)),
        cancelled: false,
        escalated: false,
    }
}

/// The future of [`timeout`] (example there): the operation's output, with `TimedOut` when
/// the deadline cancelled it. Dropping it drops the operation, which cancels it. Do not poll
/// it again after it returned: it stays pending.
///
/// # IRQL
/// Poll at <= `DISPATCH_LEVEL`, on an executor runner or in `wsk_executor::block_on`; drop
/// at <= `DISPATCH_LEVEL`.
#[cfg(not(loom))]
pub struct WithTimeout<F> {
    /// `None` once an escalation abandoned it.
    operation: Option<F>,
    sleep: Sleep,
    /// The deadline plus [`CANCEL_GRACE`]: when a cancel not honoured escalates.
    grace: Sleep,
    cancelled: bool,
    escalated: bool,
}

#[cfg(not(loom))]
impl<F: Cancellable> Future for WithTimeout<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `operation`, `sleep` and `grace` are structurally pinned: never moved out,
        // dropped in place (the operation by assigning `None`, which drops it where it is).
        let this = unsafe { self.get_unchecked_mut() };
        let Some(operation) = this.operation.as_mut() else {
            return Poll::Pending;
        };
        // SAFETY: see above.
        let mut operation = unsafe { Pin::new_unchecked(operation) };
        if let Poll::Ready(output) = operation.as_mut().poll(cx) {
            return Poll::Ready(if this.cancelled {
                F::timed_out(output)
            } else {
                output
            });
        }
        if !this.cancelled {
            // SAFETY: see above.
            let sleep = unsafe { Pin::new_unchecked(&mut this.sleep) };
            if sleep.poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.cancelled = true;
            operation.as_mut().request_cancel();
            // The completion routine wakes us when the cancelled IRP completes.
            if let Poll::Ready(output) = operation.as_mut().poll(cx) {
                return Poll::Ready(F::timed_out(output));
            }
        }
        if !this.escalated {
            // SAFETY: see above.
            let grace = unsafe { Pin::new_unchecked(&mut this.grace) };
            if grace.poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.escalated = true;
            match operation.as_mut().escalate() {
                Escalation::Abandon(output) => {
                    // Dropped in place: the operation's own drop cancels and hands its IRP
                    // to the completion routine.
                    this.operation = None;
                    return Poll::Ready(output);
                }
                Escalation::KeepWaiting => {
                    if let Poll::Ready(output) = operation.poll(cx) {
                        return Poll::Ready(F::timed_out(output));
                    }
                }
            }
        }
        Poll::Pending
    }
}
