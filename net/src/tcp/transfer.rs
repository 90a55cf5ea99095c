//! [`StreamTransfer`]: a connected stream's receive and send kept across messages, with the buffer
//! they use, re-armed in place for each message instead of built anew ([`TcpStream::recv`] and
//! [`TcpStream::send`] build a future per message and move the buffer in and out of it).
//!
//! # Dropping it, or a future of it, while an IRP is in flight
//!
//! The transfer owns its two operations (`StreamIo`, one per direction) and, between
//! messages, the buffer. While an operation is at WSK, the buffer is not in the transfer: it is
//! parked in the slot's cell, with the `WSK_BUF` WSK reads, as for every stream operation.
//! - Dropping a [`TransferRecv`] or [`TransferSend`] (the per-message futures, which only
//!   borrow the transfer) leaves the operation in flight inside the transfer and touches
//!   nothing WSK holds. The next `recv` (or `send`) of the transfer resumes that same operation
//!   and returns its result; the other direction finds no buffer and is refused
//!   (`InvalidState`), since the one buffer is at WSK.
//! - Dropping the [`StreamTransfer`] with an operation in flight drops its `StreamIo`, which marks
//!   the slot abandoned and cancels the IRP; whoever sees `DONE` last (the completion routine,
//!   or the drop leaving `IoCancelIrp`) finishes the operation and frees the parked buffer:
//!   the argument of `StreamIo`'s module docs ("Who owns what", `InFlight`), unchanged. So a
//!   buffer WSK holds is never freed by a drop, only after `DONE`.
//! - The socket object outlives the transfer, which borrows the [`TcpStream`]; an IRP in
//!   flight holds its own reference on it, so it also outlives the completion.

use core::pin::Pin;
use core::task::{Context, Poll};

use super::TcpStream;
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{Chunk, SocketInner, StreamIo};
use crate::socket::check;

/// A stream's receive and send, reused across messages, and the buffer they use: for a
/// driver that loops receive, send (an echo, a request and its reply). Made by
/// [`TcpStream::stream_transfer`]; [`StreamTransfer::recv`] receives into the buffer it holds and
/// [`StreamTransfer::send`] sends that buffer's bytes, each re-arming its operation in place. One
/// receive and one send at a time per stream, as for [`TcpStream::recv`] and
/// [`TcpStream::send`]. Dropping it with an operation in flight cancels that operation and
/// frees the buffer once WSK has let go of it (module docs).
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
/// // An echo: each message goes back in the buffer it arrived in.
/// let mut transfer = stream.stream_transfer(wsk_net::IoBuf::with_capacity(4096)?);
/// while transfer.recv().await? != 0 {
///     transfer.send().await?;
/// }
/// // The peer sent FIN.
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Make, use (poll its futures) and drop at <= `DISPATCH_LEVEL`.
///
/// Its futures are [`Cancellable`](crate::Cancellable): [`timeout`](crate::timeout) bounds a
/// receive or send without losing the buffer (`TimedOut`, the buffer in the transfer).
pub struct StreamTransfer<'a> {
    recv: StreamIo<'a, true>,
    send: StreamIo<'a, false>,
    /// The buffer, between messages; `None` while an operation holds it (at WSK).
    buf: Option<IoBuf>,
    inner: &'a SocketInner,
}

impl TcpStream {
    /// A [`StreamTransfer`] on this stream around `buf`: a receive and a send kept across messages
    /// (for loops of receive, send; [`TcpStream::recv`] and [`TcpStream::send`] for single
    /// operations). Nothing is issued until its first `recv` or `send` is polled.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    #[must_use = "a transfer does nothing until its recv or send is awaited"]
    pub fn stream_transfer(&self, buf: IoBuf) -> StreamTransfer<'_> {
        StreamTransfer::new(self.handle.inner(), buf)
    }
}

impl<'a> StreamTransfer<'a> {
    fn new(inner: &'a SocketInner, buf: IoBuf) -> Self {
        // Built without parameters: each `recv` or `send` arms its operation.
        Self {
            recv: StreamIo::idle(inner),
            send: StreamIo::idle(inner),
            buf: Some(buf),
            inner,
        }
    }

    /// Receives into the buffer (cleared, then filled up to its capacity): the byte count,
    /// also the buffer's length; 0 means the peer closed its side (FIN). A receive left in
    /// flight by a dropped [`TransferRecv`] is resumed instead.
    ///
    /// # Errors
    /// `InvalidState` after close or abortive disconnect, with another receive in flight on
    /// the stream, or while the buffer is at WSK for a send; `InvalidInput` for a buffer of
    /// capacity 0; `ConnectionReset`, ... The buffer stays in the transfer in every case.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use = "a receive does nothing unless awaited"]
    pub fn recv(&mut self) -> TransferRecv<'_, 'a> {
        TransferRecv { transfer: self }
    }

    /// Sends all of the buffer's bytes (what the last receive left in it, or what the caller
    /// wrote through [`StreamTransfer::buf_mut`]): the byte count. An empty buffer sends nothing
    /// (`Ok(0)`). A send left in flight by a dropped [`TransferSend`] is resumed instead.
    ///
    /// # Errors
    /// `InvalidState` after a disconnect or close, with another send in flight on the
    /// stream, or while the buffer is at WSK for a receive; `ConnectionReset`,
    /// `ConnectionAborted` (also when WSK reports fewer bytes sent), ... The buffer stays in
    /// the transfer in every case.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use = "a send does nothing unless awaited"]
    pub fn send(&mut self) -> TransferSend<'_, 'a> {
        TransferSend { transfer: self }
    }

    /// The buffer; `None` while an operation left in flight holds it.
    #[must_use]
    pub fn buf(&self) -> Option<&IoBuf> {
        self.buf.as_ref()
    }

    /// The buffer, to write a reply into before [`StreamTransfer::send`]; `None` while an operation
    /// left in flight holds it.
    pub fn buf_mut(&mut self) -> Option<&mut IoBuf> {
        self.buf.as_mut()
    }

    /// Puts `buf` in place of the transfer's buffer (for the next message): `Ok` with the
    /// one it held, if any.
    ///
    /// # Errors
    /// `buf` back while an operation left in flight by a dropped future holds the transfer's
    /// buffer (that buffer comes back when the operation is resumed).
    pub fn replace_buf(&mut self, buf: IoBuf) -> core::result::Result<Option<IoBuf>, IoBuf> {
        if !self.recv.is_idle() || !self.send.is_idle() {
            return Err(buf);
        }
        Ok(self.buf.replace(buf))
    }

    /// Takes the buffer out (to lend it elsewhere, or to put another in with
    /// [`StreamTransfer::replace_buf`]); `None` while an operation left in flight holds it.
    /// The next `recv` or `send` without a buffer is refused (`InvalidState`).
    pub fn take_buf(&mut self) -> Option<IoBuf> {
        self.buf.take()
    }

    /// The buffer back, ending the transfer; `None` if an operation was in flight (it is
    /// cancelled, and its buffer freed once WSK has let go of it).
    #[must_use]
    pub fn into_buf(mut self) -> Option<IoBuf> {
        self.buf.take()
    }
}

/// The future of [`StreamTransfer::recv`]: the byte count; the buffer stays in the transfer. It
/// only borrows the transfer: dropping it leaves a receive in flight to the transfer's next
/// `recv` (module docs).
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct TransferRecv<'t, 'a> {
    transfer: &'t mut StreamTransfer<'a>,
}

impl Future for TransferRecv<'_, '_> {
    type Output = Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let transfer = &mut *self.get_mut().transfer;
        if transfer.recv.is_idle() {
            // Arm the receive with the buffer (a receive in flight is resumed as it is).
            let Some(mut buf) = transfer.buf.take() else {
                return Poll::Ready(Err(Error::new(ErrorKind::InvalidState, "recv")));
            };
            buf.clear();
            let capacity = buf.capacity();
            if capacity == 0 || transfer.inner.flags().is_recv_shut() {
                let kind = if capacity == 0 {
                    ErrorKind::InvalidInput
                } else {
                    ErrorKind::InvalidState
                };
                transfer.buf = Some(buf);
                return Poll::Ready(Err(Error::new(kind, "recv")));
            }
            transfer.recv.reissue(Chunk::new(buf, 0, capacity, 0));
        }
        let (done, mut buf) = core::task::ready!(transfer.recv.poll_in_place(cx));
        // A cancel of this receive (a deadline's) is spent: the next one starts afresh.
        transfer.recv.forget_cancel();
        let result = done.and_then(|(status, information)| {
            let n = information.min(buf.capacity());
            let _ = buf.set_len(n);
            check(status, n, "recv")
        });
        transfer.buf = Some(buf);
        Poll::Ready(result)
    }
}

/// The future of [`StreamTransfer::send`]: the byte count; the buffer stays in the transfer. It
/// only borrows the transfer: dropping it leaves a send in flight to the transfer's next
/// `send` (module docs).
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct TransferSend<'t, 'a> {
    transfer: &'t mut StreamTransfer<'a>,
}

impl Future for TransferSend<'_, '_> {
    type Output = Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let transfer = &mut *self.get_mut().transfer;
        if transfer.send.is_idle() {
            let Some(buf) = transfer.buf.take() else {
                return Poll::Ready(Err(Error::new(ErrorKind::InvalidState, "send")));
            };
            let len = buf.len();
            if len == 0 || transfer.inner.flags().is_send_shut() {
                transfer.buf = Some(buf);
                return Poll::Ready(if len == 0 {
                    Ok(0)
                } else {
                    Err(Error::new(ErrorKind::InvalidState, "send"))
                });
            }
            transfer.send.reissue(Chunk::new(buf, 0, len, 0));
        }
        let (done, buf) = core::task::ready!(transfer.send.poll_in_place(cx));
        // A cancel of this send is spent: the next one starts afresh.
        transfer.send.forget_cancel();
        let len = buf.len();
        transfer.buf = Some(buf);
        Poll::Ready(crate::socket::sent_all(done, len, "send"))
    }
}

impl crate::Cancellable for TransferRecv<'_, '_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.transfer.recv.cancel();
    }

    fn timed_out(output: Result<usize>) -> Result<usize> {
        crate::TimedOutput::timed_out(output)
    }

    fn escalate(self: Pin<&mut Self>) -> crate::Escalation<Self::Output> {
        // The buffer comes back only with the completion, which the close forces.
        self.transfer.recv.close_socket();
        crate::Escalation::KeepWaiting
    }
}

impl crate::Cancellable for TransferSend<'_, '_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.transfer.send.cancel();
    }

    fn timed_out(output: Result<usize>) -> Result<usize> {
        crate::TimedOutput::timed_out(output)
    }

    fn escalate(self: Pin<&mut Self>) -> crate::Escalation<Self::Output> {
        // The buffer comes back only with the completion, which the close forces.
        self.transfer.send.close_socket();
        crate::Escalation::KeepWaiting
    }
}
