//! `UdpSocket`: a WSK datagram socket.

use core::net::SocketAddr;

use wsk_sys::{self as sys, NTSTATUS, WSK_PROVIDER_DATAGRAM_DISPATCH};

use crate::addr::{RawAddr, family_of};
use crate::buf::IoBuf;
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, RECV, Request, SEND};
use crate::socket::{self, Handle, check};
use crate::time::{Operation, Target};
use core::future::Future;

/// A bound UDP socket.
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// let socket = wsk_net::UdpSocket::bind(client, "0.0.0.0:0".parse().unwrap()).await?;
/// let buf = wsk_net::IoBuf::from_slice(b"ping")?;
/// let (sent, _buf) = socket.send_to(buf, "127.0.0.1:9".parse().unwrap()).await;
/// sent?;
/// # Ok(()) }
/// ```
///
/// One send and one receive may be in flight at a time; a second concurrent one of either
/// fails with `InvalidState`. Dropping the socket closes it asynchronously.
///
/// # IRQL
/// Every method: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.
pub struct UdpSocket {
    pub(crate) handle: Handle,
}

/// `WskSendTo` of `held.wsk_buf` to `held.addr[1]` ([`Request::SendTo`]).
///
/// # Safety
/// `call.socket` is an open datagram socket; `wsk_buf` lies within `held.buf`; `call.irp` is
/// prepared.
pub(crate) unsafe fn issue_send_to(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open datagram socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_DATAGRAM_DISPATCH>() };
    let Some(send_to) = table.WskSendTo else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let buffer = &raw mut held.wsk_buf;
    // No address (`UdpSocket::send`): NULL, for the socket's fixed one
    // (`SIO_WSK_SET_REMOTE_ADDRESS`/`SIO_WSK_SET_SENDTO_ADDRESS`).
    let remote = if held.addr[1].to_socket_addr().is_some() {
        held.addr[1].as_mut_ptr()
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: open socket, prepared IRP; buffer and address live in the slot until completion.
    unsafe {
        send_to(
            call.socket(),
            buffer,
            0,
            remote,
            0,
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// `WskReceiveFrom` into `held.wsk_buf`, the sender into `held.addr[1]`
/// ([`Request::ReceiveFrom`]).
///
/// # Safety
/// As [`issue_send_to`].
pub(crate) unsafe fn issue_receive_from(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open datagram socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_DATAGRAM_DISPATCH>() };
    let Some(receive_from) = table.WskReceiveFrom else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    held.value = 0;
    let (buffer, remote) = (&raw mut held.wsk_buf, held.addr[1].as_mut_ptr());
    // `ControlFlags` (`MSG_TRUNC`, ...): written by WSK at completion, read by `recv_datagram`.
    let control_flags = &raw mut held.value;
    // SAFETY: open socket, prepared IRP; buffer, address and flags live in the slot until
    // completion.
    unsafe {
        receive_from(
            call.socket(),
            buffer,
            0,
            remote,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            control_flags,
            call.irp(),
        )
    }
}

/// One received datagram: [`UdpSocket::recv_datagram`].
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Received {
    /// Bytes in the buffer (also its length).
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The datagram was larger than the buffer: only its first `len` bytes were received and
    /// the rest is gone (`MSG_TRUNC` in `WskReceiveFrom`'s `ControlFlags`, "`PFN_WSK_RECEIVE_FROM`
    /// callback function (wsk.h)"). A provider that does not report it leaves it false.
    pub truncated: bool,
}

impl UdpSocket {
    /// Creates a datagram socket bound to `addr` (IPv4 or IPv6; port 0 picks one).
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// let socket = wsk_net::UdpSocket::bind(client, "0.0.0.0:5353".parse().unwrap()).await?;
    /// # let _ = socket;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`, `Unsupported` (Wine has no datagram sockets),
    /// `InvalidState` after deregistration, `NoResources`, provider errors.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn bind(
        client: &WskClient,
        addr: SocketAddr,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        let handle = Handle::new(client, Kind::Datagram);
        let target = handle
            .as_ref()
            .map_or(Target::Missing, |h| Target::Owned(h.share()));
        Operation::new(target, CTL, "bind", async move {
            let handle = handle?;
            socket::create(&handle, family_of(&addr)).await?;
            socket::bind(&handle, addr).await?;
            Ok(Self { handle })
        })
    }

    /// `future`, a step on this socket's slot `slot`, as a cancellable operation.
    fn operation<F: Future>(&self, slot: usize, name: &'static str, future: F) -> Operation<'_, F> {
        Operation::new(Target::Borrowed(self.handle.inner()), slot, name, future)
    }

    async fn datagram(
        &self,
        slot: usize,
        receive: bool,
        buf: IoBuf,
        len: usize,
        to: Option<SocketAddr>,
    ) -> (Result<(usize, Option<SocketAddr>, u32)>, IoBuf) {
        let request = if receive {
            Request::ReceiveFrom
        } else {
            Request::SendTo
        };
        let name = request.name();
        let mut held = Held::with_buf(request, buf, len);
        if let Some(to) = to {
            held.addr[1] = RawAddr::from(to);
        }
        match Op::new(self.handle.inner(), slot, held).await {
            Ok(mut done) => {
                let buf = done
                    .held
                    .buf
                    .take()
                    .expect("datagram operations carry their buffer");
                let from = done.held.addr[1].to_socket_addr();
                let flags = if receive { done.held.value } else { 0 };
                (
                    check(done.status, done.information, name).map(|n| (n, from, flags)),
                    buf,
                )
            }
            Err(mut refused) => {
                let buf = refused
                    .held
                    .buf
                    .take()
                    .expect("datagram operations carry their buffer");
                (Err(refused.error), buf)
            }
        }
    }

    /// Sends `buf` (`[0, len)`) as one datagram to `to`, and gives it back with the byte count
    /// WSK reports.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::from_slice(b"ping")?;
    /// let (sent, buf) = socket.send_to(buf, "192.0.2.1:7".parse().unwrap()).await;
    /// assert_eq!(sent?, buf.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another send in flight or after close; provider errors.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn send_to(
        &self,
        buf: IoBuf,
        to: SocketAddr,
    ) -> Operation<'_, impl Future<Output = (Result<usize>, IoBuf)> + '_> {
        self.operation(SEND, "send_to", async move {
            let len = buf.len();
            let (result, buf) = self.datagram(SEND, false, buf, len, Some(to)).await;
            (result.map(|(n, _, _)| n), buf)
        })
    }

    /// Sends `buf` as one datagram to the socket's fixed address
    /// ([`UdpSocket::connect`] or [`UdpSocket::set_send_to_address`]): `WskSendTo` with no
    /// remote address.
    ///
    /// # Errors
    /// As [`UdpSocket::send_to`]; `InvalidInput` (from the provider) when no address is fixed.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub async fn send(&self, buf: IoBuf) -> (Result<usize>, IoBuf) {
        let len = buf.len();
        let (result, buf) = self.datagram(SEND, false, buf, len, None).await;
        (result.map(|(n, _, _)| n), buf)
    }

    /// Receives one datagram into `buf` (cleared first) and gives it back with the length
    /// (also `buf.len()`) and sender.
    ///
    /// Unlike [`TcpStream::recv`](crate::TcpStream::recv) it cannot be cancelled or bounded
    /// with [`timeout`](crate::timeout): dropping the future cancels the receive and frees the
    /// buffer.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::with_capacity(1500)?;
    /// let (got, buf) = socket.recv_from(buf).await;
    /// let (n, from) = got?;
    /// let _datagram = &buf[..n];
    /// # let _ = from;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` with another receive in flight or after close; provider errors. On
    /// error the buffer comes back empty.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn recv_from(
        &self,
        buf: IoBuf,
    ) -> Operation<'_, impl Future<Output = (Result<(usize, SocketAddr)>, IoBuf)> + '_> {
        self.operation(RECV, "recv_from", async move {
            let (result, buf) = self.receive_one(buf, "recv_from").await;
            (result.map(|got| (got.len, got.from)), buf)
        })
    }

    /// [`UdpSocket::recv_from`] that also says whether the datagram was larger than the
    /// buffer ([`Received::truncated`]: WSK's `MSG_TRUNC`; the rest of that datagram is gone).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let (got, buf) = socket.recv_datagram(wsk_net::IoBuf::with_capacity(512)?).await;
    /// let got = got?;
    /// if got.truncated {
    ///     // larger than 512 bytes: only its first 512 are in `buf`
    /// }
    /// # let _ = (buf, got.from);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`UdpSocket::recv_from`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn recv_datagram(
        &self,
        buf: IoBuf,
    ) -> Operation<'_, impl Future<Output = (Result<Received>, IoBuf)> + '_> {
        self.operation(
            RECV,
            "recv_datagram",
            self.receive_one(buf, "recv_datagram"),
        )
    }

    /// One `WskReceiveFrom` into `buf` (cleared first), its length set to the bytes received.
    async fn receive_one(&self, mut buf: IoBuf, name: &'static str) -> (Result<Received>, IoBuf) {
        buf.clear();
        let cap = buf.capacity();
        let (result, mut buf) = self.datagram(RECV, true, buf, cap, None).await;
        let result = result.and_then(|(n, from, flags)| {
            let len = n.min(cap);
            let _ = buf.set_len(len);
            let from = from.ok_or(Error::new(ErrorKind::Other, name))?;
            Ok(Received {
                len,
                from,
                truncated: flags & sys::MSG_TRUNC != 0,
            })
        });
        (result, buf)
    }

    /// The local address (with the real port when bound to port 0).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let port = socket.local_addr().await?.port();
    /// # let _ = port;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close; provider errors.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn local_addr(&self) -> Operation<'_, impl Future<Output = Result<SocketAddr>> + '_> {
        self.operation(CTL, "local_addr", async move {
            socket::address(&self.handle, false).await
        })
    }

    /// Closes the socket (`WskCloseSocket`) and waits until WSK has. Operations whose futures
    /// were dropped and that WSK still holds are cancelled by the close.
    ///
    /// ```no_run
    /// # async fn demo(socket: wsk_net::UdpSocket) {
    /// socket.close().await;
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn close(self) {
        self.handle.close().await;
    }
}
