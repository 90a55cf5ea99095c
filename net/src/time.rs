//! Deadlines for operations that must give their buffer back: on expiry the IRP is cancelled
//! and the operation is still driven to completion, so the caller gets `TimedOut` *and* its
//! `IoBuf`, and data that arrived in the meantime is never lost.

use core::future::Future;
use core::pin::Pin;
// The executor has no timer under loom (its models have no clock): the deadline goes too.
#[cfg(not(loom))]
use core::task::{Context, Poll};
#[cfg(not(loom))]
use core::time::Duration;

#[cfg(not(loom))]
use wsk_executor::Sleep;

use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::tcp::{Accept, Recv, TcpStream};

/// An operation that can be asked to stop early and then still completes: what [`timeout`]
/// needs. Implemented by [`Recv`] and [`Accept`].
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
}

/// Runs `operation` with a deadline `after` from now. On expiry the operation is cancelled
/// and awaited; its result then says `TimedOut` (unless it completed successfully first) and
/// its buffer comes back:
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
/// Only operations that give something back implement [`Cancellable`]: [`Recv`] and
/// [`Accept`]. Bound other futures (connect, send, ...) with `wsk_executor::timeout`, which
/// drops them on expiry (dropping cancels the IRP).
///
/// The deadline works by cancelling the IRP, so it only helps where the provider honours
/// `IoCancelIrp`: under Wine 8.0 it does not for WSK IRPs, and the operation then returns
/// only when it completes on its own. If the deadline passes before the operation was issued
/// (its slot still finishing a dropped operation), it is never issued and ends `TimedOut`.
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
        operation,
        sleep: wsk_executor::sleep(after),
        cancelled: false,
    }
}

/// The future of [`timeout`] (example there): the operation's output, with `TimedOut` when
/// the deadline cancelled it. Dropping it drops the operation, which cancels it.
///
/// # IRQL
/// Poll at <= `DISPATCH_LEVEL`, on an executor runner or in `wsk_executor::block_on`; drop
/// at <= `DISPATCH_LEVEL`.
#[cfg(not(loom))]
pub struct WithTimeout<F> {
    operation: F,
    sleep: Sleep,
    cancelled: bool,
}

#[cfg(not(loom))]
impl<F: Cancellable> Future for WithTimeout<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `operation` and `sleep` are structurally pinned: never moved out, dropped in
        // place with the struct.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut operation = unsafe { Pin::new_unchecked(&mut this.operation) };
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
            if sleep.poll(cx).is_ready() {
                this.cancelled = true;
                operation.as_mut().request_cancel();
                // The completion routine wakes us when the cancelled IRP completes.
                if let Poll::Ready(output) = operation.poll(cx) {
                    return Poll::Ready(F::timed_out(output));
                }
            }
        }
        Poll::Pending
    }
}
