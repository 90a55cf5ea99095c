//! The ideal send backlog of a [`TcpStream`]: how many bytes of sends to keep outstanding
//! (passed to WSK, not yet completed) to keep the connection's stream full.
//!
//! [`TcpStream::ideal_send_backlog`] queries it (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`,
//! <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-query-ideal-send-backlog>);
//! [`TcpStream::enable_send_backlog_events`] enables `WskSendBacklogEvent`
//! (`WSK_EVENT_SEND_BACKLOG`,
//! <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_backlog_event>),
//! whose callback records each new size in the stream's event state and wakes the task in
//! [`TcpStream::send_backlog_changed`]. A sender sizes what it keeps in flight by it: a
//! `BufWriter` of that capacity, or as many sends of its buffers as fit.
//!
//! Wine 8 has neither (`WskControlSocket` is a stub): the query fails with `Unsupported` and
//! enabling returns `Ok(false)`.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

use wsk_executor::raw::sync::Ordering;
use wsk_sys::{self as sys, NTSTATUS, PVOID, SIZE_T};

use super::TcpStream;
use super::events::{cell_of, enable_events, event_cell};
use crate::error::{Error, ErrorKind, Result};

/// `WskSendBacklogEvent`: records the new ideal send backlog and wakes the waiting task. WSK
/// calls it at IRQL <= `DISPATCH_LEVEL`; it returns `STATUS_SUCCESS`, as it must.
pub(super) unsafe extern "system-unwind" fn on_send_backlog(
    context: PVOID,
    ideal: SIZE_T,
) -> NTSTATUS {
    // SAFETY: WSK passes the context we gave (a socket object, or null).
    if let Some(cell) = unsafe { cell_of(context) } {
        cell.backlog.store(ideal, Ordering::Release);
        cell.backlog_waker.wake();
    }
    sys::STATUS_SUCCESS
}

impl TcpStream {
    /// The connection's ideal send backlog, in bytes (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`; see
    /// the crate docs' [event callbacks](crate#event-callbacks)). On the host kernel: its
    /// socket's send buffer.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let ideal = stream.ideal_send_backlog().await?;
    /// let _writer_capacity = ideal.clamp(4096, 256 * 1024);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` before the stream is connected, after close, or with another control
    /// operation in flight; `Unsupported` where the provider lacks it (Wine 8); provider
    /// errors.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub async fn ideal_send_backlog(&self) -> Result<usize> {
        crate::options::query_size(
            &self.handle,
            sys::SIO_WSK_QUERY_IDEAL_SEND_BACKLOG,
            "ideal_send_backlog",
        )
        .await
    }

    /// Enables `WskSendBacklogEvent` on the stream (`SO_WSK_EVENT_CALLBACK` with
    /// `WSK_EVENT_SEND_BACKLOG`, or nothing to ask when the client enabled it statically):
    /// from then on [`TcpStream::send_backlog_changed`] learns each new ideal send backlog.
    /// `Ok(false)`: the provider has no event callbacks (Wine 8). Allocates the stream's event
    /// state on first use, as [`TcpStream::enable_receive_events`] does.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// if stream.enable_send_backlog_events()? {
    ///     let now = stream.ideal_send_backlog().await?;
    ///     let _next = stream.send_backlog_changed(now).await;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` before the stream is connected or after close; `NoResources`; a
    /// provider refusal other than "not supported".
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP).
    pub fn enable_send_backlog_events(&self) -> Result<bool> {
        const NAME: &str = "enable_send_backlog_events";
        let inner = self.handle.inner();
        let _cell = event_cell(inner, NAME)?;
        // SAFETY: the client outlives its socket objects.
        let static_events = unsafe { inner.client().as_ref() }.static_events();
        if static_events & sys::WSK_EVENT_SEND_BACKLOG != 0 {
            return Ok(true);
        }
        match enable_events(inner, sys::WSK_EVENT_SEND_BACKLOG, NAME)? {
            sys::STATUS_SUCCESS => Ok(true),
            sys::STATUS_NOT_SUPPORTED | sys::STATUS_NOT_IMPLEMENTED => Ok(false),
            other => Err(Error::from_status(other, NAME)),
        }
    }

    /// Waits until `WskSendBacklogEvent` indicates an ideal send backlog other than `seen`
    /// (what the caller knows: the query's result, or the last value this returned), and
    /// returns it. Needs [`TcpStream::enable_send_backlog_events`]; one waiting task per
    /// stream.
    ///
    /// # Errors
    /// `InvalidState` when send backlog events were never enabled.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use = "a future does nothing unless awaited"]
    pub fn send_backlog_changed(&self, seen: usize) -> SendBacklogChanged<'_> {
        SendBacklogChanged { stream: self, seen }
    }
}

/// The future of [`TcpStream::send_backlog_changed`].
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
#[must_use = "a future does nothing unless awaited"]
pub struct SendBacklogChanged<'a> {
    stream: &'a TcpStream,
    seen: usize,
}

impl Future for SendBacklogChanged<'_> {
    type Output = Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<usize>> {
        let cell = self.stream.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the stream keeps.
        let Some(cell) = (unsafe { cell.as_ref() }) else {
            return Poll::Ready(Err(Error::new(
                ErrorKind::InvalidState,
                "send_backlog_changed",
            )));
        };
        cell.backlog_waker.register(cx.waker());
        let now = cell.backlog.load(Ordering::Acquire);
        if now != 0 && now != self.seen {
            Poll::Ready(Ok(now))
        } else {
            Poll::Pending
        }
    }
}
