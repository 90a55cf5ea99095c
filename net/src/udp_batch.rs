//! Several datagrams per call on a [`UdpSocket`]: [`UdpSocket::send_batch`] (one
//! `WskSendMessages`, or one `WskSendTo` per datagram where the provider lacks it) and
//! [`UdpSocket::recv_batch`] (the first datagram awaited, then those already queued), both on
//! a [`DatagramBatch`]; and zero-copy datagrams from and into a caller's MDL chain
//! ([`UdpSocket::send_to_mdl`], [`UdpSocket::recv_from_mdl`]).
//!
//! Receive indications: with event callbacks (`WskReceiveFromEvent`), one indication hands
//! the client a chain of `WSK_DATAGRAM_INDICATION`s, several datagrams at once. The IRP side
//! here fills the same [`DatagramBatch`]; so does the indication-driven receive: the callback
//! retains the list and wakes the task, which copies each datagram into the next slot, with its
//! sender: [`UdpSocket::recv_batch_events`] (`crate::udp_events`), which
//! falls back to `recv_batch` where events are off, so callers keep one batch type whichever
//! way datagrams arrive.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::pin;
use core::task::Poll;

use wsk_sys::{self as sys, NTSTATUS, WSK_PROVIDER_DATAGRAM_DISPATCH};

use crate::addr::RawAddr;
use crate::batch::DatagramBatch;
use crate::error::{Error, ErrorKind, Result};
use crate::mdl::MdlBuf;
use crate::raw::{Call, Completed, Held, Op, RECV, Refused, Request, SEND};
use crate::socket::check;
use crate::tcp::take_mdl;
use crate::time::{Operation, Target};
use crate::udp::UdpSocket;

/// `WskSendMessages` of `held.batch`'s datagrams (its linked `WSK_BUF_LIST`) to `held.addr[1]`
/// ([`Request::SendMessages`]).
///
/// # Safety
/// `call.socket` is an open datagram socket; `held.batch` is set; `call.irp` is prepared.
pub(crate) unsafe fn issue_send_messages(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open datagram socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_DATAGRAM_DISPATCH>() };
    let Some(send_messages) = table.WskSendMessages else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let Some(batch) = held.batch_mut() else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    let list = batch.link_for_send();
    let remote = held.addr[1].as_mut_ptr();
    // SAFETY: open socket, prepared IRP; the list, its buffers and the address live in the
    // slot (the batch's table and storage are pool blocks it owns) until completion.
    unsafe {
        send_messages(
            call.socket(),
            list.cast(),
            0,
            remote,
            0,
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// The batch an operation was given; every batch operation is built with one.
fn take_batch(held: &mut Held) -> DatagramBatch {
    held.take_batch()
        .expect("batch operations always carry their batch")
}

/// How one receive into a batch ended.
enum Slot {
    /// A datagram arrived into the next slot.
    Filled,
    /// Nothing was queued (the receive was cancelled), or the batch is full.
    Stop,
    /// The receive failed.
    Failed(Error),
}

impl UdpSocket {
    /// Sends every datagram of `batch`, in order, to `to`, and gives the batch back with the
    /// number of datagrams sent (`batch.len()`). One `WskSendMessages` call (Windows 8+); a
    /// provider without it gets one `WskSendTo` per datagram, with the same result.
    ///
    /// An empty batch is `Ok(0)` without a call to WSK. Dropping the future cancels what is
    /// in flight; the batch is freed once WSK has let go of it.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let mut batch = wsk_net::DatagramBatch::new(4, 512)?;
    /// for part in [&b"a"[..], b"b", b"c"] {
    ///     batch.push(part)?;
    /// }
    /// let (sent, _batch) = socket.send_batch(batch, "192.0.2.1:9".parse().unwrap()).await;
    /// assert_eq!(sent?, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another send in flight or after close; provider errors (with the
    /// per-datagram fallback, the datagrams before the failing one were sent).
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn send_batch(
        &self,
        batch: DatagramBatch,
        to: SocketAddr,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, DatagramBatch)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, SEND, "send_batch", self.send_batch_steps(batch, to))
    }

    async fn send_batch_steps(
        &self,
        batch: DatagramBatch,
        to: SocketAddr,
    ) -> (Result<usize>, DatagramBatch) {
        let count = batch.len();
        if count == 0 {
            return (Ok(0), batch);
        }
        let mut held = Held::new(Request::SendMessages);
        held.addr[1] = RawAddr::from(to);
        if let Err(batch) = held.set_batch(batch) {
            return (Err(Error::new(ErrorKind::NoResources, "send_batch")), batch);
        }
        let (done, mut batch) = finish(Op::new(self.handle.inner(), SEND, held).await);
        match done {
            Ok((status, _)) if status == sys::STATUS_NOT_IMPLEMENTED => {}
            Ok((status, information)) => {
                let result = check(status, information, "send_batch").map(|_| count);
                return (result, batch);
            }
            Err(error) => return (Err(error), batch),
        }
        // No WskSendMessages: one WskSendTo per datagram.
        for index in 0..count {
            let mut held = Held::new(Request::SendTo);
            held.wsk_buf = batch.datagram_buf(index);
            held.addr[1] = RawAddr::from(to);
            if let Err(batch) = held.set_batch(batch) {
                return (Err(Error::new(ErrorKind::NoResources, "send_batch")), batch);
            }
            let (done, back) = finish(Op::new(self.handle.inner(), SEND, held).await);
            batch = back;
            if let Err(error) =
                done.and_then(|(status, information)| check(status, information, "send_batch"))
            {
                return (Err(error), batch);
            }
        }
        (Ok(count), batch)
    }

    /// Receives datagrams into `batch` (cleared first): waits for the first, then takes those
    /// already queued, up to the batch's capacity, without waiting again. Gives the batch
    /// back with the number received (also `batch.len()`); each datagram comes with its
    /// sender ([`DatagramBatch::iter`]). A datagram longer than the batch's datagram size is
    /// truncated to it.
    ///
    /// Each further datagram is one `WskReceiveFrom`: issued, and cancelled when nothing is
    /// queued (a cancelled receive loses no datagram: it either completes with one or leaves
    /// it queued). Dropping the future cancels the receive in flight; the batch is freed once
    /// WSK has let go of it. Bound it with [`timeout`](crate::timeout): with nothing
    /// received, `TimedOut` and the batch back.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let batch = wsk_net::DatagramBatch::new(32, 1500)?;
    /// let (got, batch) = socket.recv_batch(batch).await;
    /// for (datagram, from) in batch.iter().take(got?) {
    ///     // ...
    /// #   let _ = (datagram, from);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another receive in flight or after close; provider errors of the
    /// first receive. An error after the first datagram ends the batch early with what
    /// arrived (the next call sees what persists).
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn recv_batch(
        &self,
        batch: DatagramBatch,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, DatagramBatch)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, RECV, "recv_batch", self.recv_batch_steps(batch))
    }

    async fn recv_batch_steps(&self, mut batch: DatagramBatch) -> (Result<usize>, DatagramBatch) {
        batch.clear();
        let (first, back) = self.receive_into(batch, true).await;
        batch = back;
        match first {
            Slot::Filled => {}
            Slot::Stop => return (Ok(0), batch),
            Slot::Failed(error) => return (Err(error), batch),
        }
        while batch.len() < batch.capacity() {
            let (more, back) = self.receive_into(batch, false).await;
            batch = back;
            if !matches!(more, Slot::Filled) {
                break;
            }
        }
        (Ok(batch.len()), batch)
    }

    /// One `WskReceiveFrom` into `batch`'s next slot; without `wait`, cancelled when it does
    /// not complete at once.
    async fn receive_into(&self, batch: DatagramBatch, wait: bool) -> (Slot, DatagramBatch) {
        let Some(slot) = batch.next_slot() else {
            return (Slot::Stop, batch);
        };
        let mut held = Held::new(Request::ReceiveFrom);
        held.wsk_buf = slot;
        if let Err(batch) = held.set_batch(batch) {
            return (
                Slot::Failed(Error::new(ErrorKind::NoResources, "recv_batch")),
                batch,
            );
        }
        let mut op = pin!(Op::new(self.handle.inner(), RECV, held));
        let outcome = if wait {
            op.as_mut().await
        } else {
            let first = core::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(outcome) => outcome,
                Poll::Pending => {
                    // Nothing queued right now: stop waiting (a datagram that won the race
                    // completes the receive anyway).
                    op.cancel();
                    op.as_mut().await
                }
            }
        };
        let (from, outcome) = match outcome {
            Ok(done) => (done.held.addr[1].to_socket_addr(), Ok(done)),
            Err(refused) => (None, Err(refused)),
        };
        let (done, mut batch) = finish(outcome);
        let slot = match done {
            Ok((status, information)) if sys::NT_SUCCESS(status) => {
                batch.received(information, from);
                Slot::Filled
            }
            Ok((sys::STATUS_CANCELLED, _)) if !wait => Slot::Stop,
            Ok((status, information)) => match check(status, information, "recv_batch") {
                Ok(_) => Slot::Stop,
                Err(error) => Slot::Failed(error),
            },
            Err(error) if !wait && error.kind() == ErrorKind::Cancelled => Slot::Stop,
            Err(error) => Slot::Failed(error),
        };
        (slot, batch)
    }

    /// Sends the bytes of `buf`'s range, straight from the caller's MDL chain, as one datagram
    /// to `to` (`WskSendTo`, no copy), and gives the chain back with the byte count.
    ///
    /// Dropping the future cancels the send; the chain stays held until the completion
    /// routine has run and is then released through its [`MdlRelease`](crate::MdlRelease).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket, payload: wsk_net::MdlBuf) -> wsk_net::Result<()> {
    /// let (sent, payload) = socket.send_to_mdl(payload, "192.0.2.1:9".parse().unwrap()).await;
    /// assert_eq!(sent?, payload.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another send in flight or after close; provider errors.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn send_to_mdl(
        &self,
        buf: MdlBuf,
        to: SocketAddr,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, MdlBuf)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, SEND, "send_to", self.send_to_mdl_steps(buf, to))
    }

    async fn send_to_mdl_steps(&self, buf: MdlBuf, to: SocketAddr) -> (Result<usize>, MdlBuf) {
        let mut held = match Held::with_mdl(Request::SendTo, buf) {
            Ok(held) => held,
            Err(buf) => return (Err(Error::new(ErrorKind::NoResources, "send_to")), buf),
        };
        held.addr[1] = RawAddr::from(to);
        match Op::new(self.handle.inner(), SEND, held).await {
            Ok(mut done) => {
                let result = check(done.status, done.information, "send_to");
                (result, take_mdl(&mut done.held))
            }
            Err(mut refused) => (Err(refused.error), take_mdl(&mut refused.held)),
        }
    }

    /// Receives one datagram straight into `buf`'s range of the caller's MDL chain
    /// (`WskReceiveFrom`, no copy) and gives the chain back with the length and the sender. A
    /// datagram longer than the range is truncated to it.
    ///
    /// Dropping the future cancels the receive; the chain stays held until the completion
    /// routine has run and is then released through its [`MdlRelease`](crate::MdlRelease).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket, into: wsk_net::MdlBuf) -> wsk_net::Result<()> {
    /// let (got, into) = socket.recv_from_mdl(into).await;
    /// let (len, from) = got?;
    /// # let _ = (len, from, into);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another receive in flight or after close; provider errors.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn recv_from_mdl(
        &self,
        buf: MdlBuf,
    ) -> Operation<'_, impl Future<Output = (Result<(usize, SocketAddr)>, MdlBuf)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, RECV, "recv_from", self.recv_from_mdl_steps(buf))
    }

    async fn recv_from_mdl_steps(&self, buf: MdlBuf) -> (Result<(usize, SocketAddr)>, MdlBuf) {
        let len = buf.len();
        let held = match Held::with_mdl(Request::ReceiveFrom, buf) {
            Ok(held) => held,
            Err(buf) => return (Err(Error::new(ErrorKind::NoResources, "recv_from")), buf),
        };
        match Op::new(self.handle.inner(), RECV, held).await {
            Ok(mut done) => {
                let from = done.held.addr[1].to_socket_addr();
                let result = check(done.status, done.information, "recv_from").and_then(|n| {
                    from.map(|from| (n.min(len), from))
                        .ok_or(Error::new(ErrorKind::Other, "recv_from"))
                });
                (result, take_mdl(&mut done.held))
            }
            Err(mut refused) => (Err(refused.error), take_mdl(&mut refused.held)),
        }
    }
}

/// A batch operation's outcome: the status and information (or the refusal), and the batch.
fn finish(
    outcome: core::result::Result<Completed, Refused>,
) -> (Result<(NTSTATUS, usize)>, DatagramBatch) {
    match outcome {
        Ok(mut done) => (
            Ok((done.status, done.information)),
            take_batch(&mut done.held),
        ),
        Err(mut refused) => (Err(refused.error), take_batch(&mut refused.held)),
    }
}
