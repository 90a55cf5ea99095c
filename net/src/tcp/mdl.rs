//! Zero-copy transfers on a [`TcpStream`]: [`TcpStream::send_mdl`] and
//! [`TcpStream::recv_mdl`] hand WSK the caller's own MDL chain ([`MdlBuf`]) instead of an
//! [`IoBuf`](crate::IoBuf). Same slots, same completion routine, same ownership rule: the
//! chain comes back with the result, and a dropped future leaves it in the slot until the
//! completion routine has run, which then releases it.

use core::future::Future;

use wsk_sys as sys;

use super::TcpStream;
use crate::error::{Error, ErrorKind, Result};
use crate::mdl::MdlBuf;
use crate::raw::{Held, Op, RECV, Request, SEND};
use crate::socket::check;
use crate::time::{Operation, Target};

/// The chain an MDL operation was given; the slot machinery hands `Held` back whole.
pub(crate) fn take_mdl(held: &mut Held) -> MdlBuf {
    held.take_mdl()
        .expect("MDL operations always carry their chain")
}

impl TcpStream {
    async fn transfer_mdl(
        &self,
        slot: usize,
        request: Request,
        buf: MdlBuf,
    ) -> (Result<usize>, MdlBuf) {
        let name = request.name();
        let held = match Held::with_mdl(request, buf) {
            Ok(held) => held,
            Err(buf) => return (Err(Error::new(ErrorKind::NoResources, name)), buf),
        };
        match Op::new(self.handle.inner(), slot, held).await {
            Ok(done) => {
                let (mut held, result) = (done.held, check(done.status, done.information, name));
                (result, take_mdl(&mut held))
            }
            Err(mut refused) => (Err(refused.error), take_mdl(&mut refused.held)),
        }
    }

    /// Sends the bytes of `buf`'s range straight from the caller's MDL chain (`WskSend`, no
    /// copy) and gives the chain back; completes when WSK has sent them all. `Ok(n)` is
    /// always `buf.len()`.
    ///
    /// Dropping the future cancels the send; the chain stays held until the completion
    /// routine has run and is then released through its [`MdlRelease`](crate::MdlRelease).
    /// Bound it with [`timeout`](crate::timeout) to get the chain back with `TimedOut`.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream, reply: wsk_net::MdlBuf) -> wsk_net::Result<()> {
    /// let (sent, reply) = stream.send_mdl(reply).await;
    /// assert_eq!(sent?, reply.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::send`]: `InvalidState` after a disconnect or close, or with another
    /// send in flight; `ConnectionAborted` when WSK reports fewer bytes sent; provider errors.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn send_mdl(
        &self,
        buf: MdlBuf,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, MdlBuf)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, SEND, "send", self.send_mdl_steps(buf))
    }

    async fn send_mdl_steps(&self, buf: MdlBuf) -> (Result<usize>, MdlBuf) {
        let request = Request::Send { flags: 0 };
        let name = request.name();
        if self.handle.inner().flags().is_send_shut() {
            return (Err(Error::new(ErrorKind::InvalidState, name)), buf);
        }
        let len = buf.len();
        let (result, buf) = self.transfer_mdl(SEND, request, buf).await;
        let result = result.and_then(|n| {
            if n == len {
                Ok(n)
            } else {
                Err(Error::new(ErrorKind::ConnectionAborted, name))
            }
        });
        (result, buf)
    }

    /// Receives into `buf`'s range of the caller's MDL chain (`WskReceive`, no copy) and
    /// gives the chain back with the byte count, written from the range's start; 0 means the
    /// peer closed its side (FIN). With `exact`, waits for the whole range
    /// (`WSK_FLAG_WAITALL`; fewer bytes mean the peer closed early: `NotConnected`).
    ///
    /// Dropping the future cancels the receive; the chain stays held until the completion
    /// routine has run and is then released through its [`MdlRelease`](crate::MdlRelease).
    /// Bound it with [`timeout`](crate::timeout) to get the chain back with `TimedOut`.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream, ioctl_out: wsk_net::MdlBuf) -> wsk_net::Result<()> {
    /// let (n, ioctl_out) = stream.recv_mdl(ioctl_out, false).await;
    /// let _written = n?; // bytes now in the IOCTL's output buffer
    /// # let _ = ioctl_out;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or abortive disconnect, or with another receive in
    /// flight; `NotConnected` as above; `ConnectionReset`, provider errors. A provider that
    /// ignores `WSK_FLAG_WAITALL` (Wine 8) and completes short gets further receives for the
    /// rest of the range, so the result is the same everywhere.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub fn recv_mdl(
        &self,
        buf: MdlBuf,
        exact: bool,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, MdlBuf)> + '_> {
        let target = Target::Borrowed(self.handle.inner());
        Operation::new(target, RECV, "recv", self.recv_mdl_steps(buf, exact))
    }

    async fn recv_mdl_steps(&self, mut buf: MdlBuf, exact: bool) -> (Result<usize>, MdlBuf) {
        let flags = if exact { sys::WSK_FLAG_WAITALL } else { 0 };
        let request = Request::Receive { flags };
        if self.handle.inner().flags().is_recv_shut() {
            return (
                Err(Error::new(ErrorKind::InvalidState, request.name())),
                buf,
            );
        }
        let len = buf.len();
        let mut got = 0;
        loop {
            let mut held = Held::new(request);
            held.wsk_buf = buf.wsk_buf_after(got);
            if let Err(buf) = held.set_mdl(buf) {
                return (Err(Error::new(ErrorKind::NoResources, request.name())), buf);
            }
            let done = match Op::new(self.handle.inner(), RECV, held).await {
                Ok(done) => done,
                Err(mut refused) => return (Err(refused.error), take_mdl(&mut refused.held)),
            };
            let mut held = done.held;
            buf = take_mdl(&mut held);
            let n = match check(done.status, done.information, request.name()) {
                Ok(n) => n.min(len - got),
                Err(error) => return (Err(error), buf),
            };
            got += n;
            if exact && n > 0 && got < len {
                // The provider completed a WAITALL receive short (Wine ignores the flag):
                // receive the rest into the same range, after what arrived.
                continue;
            }
            let result = if exact && got < len {
                Err(Error::new(ErrorKind::NotConnected, "recv_exact"))
            } else {
                Ok(got)
            };
            return (result, buf);
        }
    }
}
