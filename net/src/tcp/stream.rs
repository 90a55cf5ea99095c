//! [`TcpStream`]: a WSK connection socket (connect, send, receive, disconnect, close);
//! [`Recv`], the future of one receive, which can be cancelled without losing its buffer; and
//! [`Disconnect`], how a connection ends.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

use wsk_sys::{self as sys, NTSTATUS, WSK_PROVIDER_CONNECTION_DISPATCH};

use crate::addr::wildcard_like;
use crate::buf::IoBuf;
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Chunk, CloseMode, Held, Op, Request, StreamIo, TransferDone};
use crate::socket::{self, BindOptions, Handle, check};
use crate::time::{Operation, Target};

/// How [`TcpStream::disconnect`] ends the connection. See the example there.
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// FIN after every pending send is transmitted; receiving stays possible.
    Graceful,
    /// Reset: pending sends and receives fail, the peer sees a reset.
    Abortive,
}

/// A connected TCP socket.
///
/// One send and one receive may be in flight at a time (they use separate IRPs); a second
/// concurrent send or receive would reorder data, so it fails with `InvalidState`. Control
/// operations (addresses, options, disconnect) share a third slot: one at a time.
///
/// Closing is graceful by default, as with std and tokio: [`TcpStream::close`] and dropping
/// the stream both send FIN after every pending send (a graceful `WskDisconnect`) and then
/// close the socket, so a final reply is delivered. The disconnect is bounded by the close
/// limit ([`TcpStream::set_close_limit`], 5 seconds unless set): past it the disconnect is
/// cancelled and the close resets the connection. A reset on purpose is
/// [`TcpStream::abort`]. Dropping cannot wait: the disconnect and the close then run on
/// their own, from the disconnect's completion, and the bound is a kernel timer.
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// use wsk_net::{IoBuf, TcpStream};
/// let stream = TcpStream::connect(client, "192.0.2.1:7".parse().unwrap()).await?;
/// let (sent, buf) = stream.send(IoBuf::from_slice(b"hello")?).await;
/// sent?;
/// let (n, reply) = stream.recv(buf).await; // reuses the buffer
/// let _echoed = &reply[..n?];
/// stream.close().await;
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Every method: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.
pub struct TcpStream {
    pub(crate) handle: Handle,
}

/// `WskConnect` to `held.addr[1]` ([`Request::Connect`]).
///
/// # Safety
/// `call.socket` is an open, bound connection socket; `call.irp` is prepared.
pub(crate) unsafe fn issue_connect(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open connection socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let Some(connect) = table.WskConnect else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let remote = call.held().addr[1].as_mut_ptr();
    // SAFETY: open socket, prepared IRP; the address lives in the slot until completion.
    unsafe { connect(call.socket(), remote, 0, call.irp()) }
}

/// `WskSend` of `held.wsk_buf` ([`Request::Send`]).
///
/// # Safety
/// `call.socket` is an open connection socket; `wsk_buf` describes `held.buf`'s MDL within
/// its length; `call.irp` is prepared.
pub(crate) unsafe fn issue_send(call: &mut Call, flags: u32) -> NTSTATUS {
    // SAFETY: an open connection socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let Some(send) = table.WskSend else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let buffer = &raw mut call.held().wsk_buf;
    // SAFETY: open socket, prepared IRP; WSK_BUF and buffer live in the slot until completion.
    unsafe { send(call.socket(), buffer, flags, call.irp()) }
}

/// `WskReceive` into `held.wsk_buf` ([`Request::Receive`]).
///
/// # Safety
/// As [`issue_send`].
pub(crate) unsafe fn issue_receive(call: &mut Call, flags: u32) -> NTSTATUS {
    // SAFETY: an open connection socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let Some(receive) = table.WskReceive else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let buffer = &raw mut call.held().wsk_buf;
    // SAFETY: open socket, prepared IRP; WSK_BUF and buffer live in the slot until completion.
    unsafe { receive(call.socket(), buffer, flags, call.irp()) }
}

/// `WskDisconnect` ([`Request::Disconnect`]), with `held.wsk_buf` as final data when
/// `final_data` and it is not empty.
///
/// # Safety
/// As [`issue_send`].
pub(crate) unsafe fn issue_disconnect(call: &mut Call, flags: u32, final_data: bool) -> NTSTATUS {
    // SAFETY: an open connection socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let Some(disconnect) = table.WskDisconnect else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let buffer = if final_data && held.wsk_buf.Length != 0 {
        &raw mut held.wsk_buf
    } else {
        core::ptr::null_mut()
    };
    // SAFETY: open socket, prepared IRP; WSK_BUF and buffer live in the slot until completion.
    unsafe { disconnect(call.socket(), buffer, flags, call.irp()) }
}

impl TcpStream {
    /// Connects to `addr` from the wildcard address of the same family (any local address,
    /// a port WSK picks): one `WskSocketConnect` where the provider has it, else
    /// `WskSocket`, `WskBind` and `WskConnect` ([`TcpStream::connect_from`]).
    ///
    /// It has no deadline of its own (the transport gives up eventually, with `TimedOut`).
    /// To bound it, wrap it in [`timeout`](crate::timeout): on expiry the step in flight is
    /// cancelled, no further step is made, the half-made socket is closed, and the result is
    /// `TimedOut`.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// use core::time::Duration;
    /// let addr = "192.0.2.1:80".parse().unwrap();
    /// let connect = wsk_net::TcpStream::connect(client, addr);
    /// let stream = wsk_net::timeout(Duration::from_secs(5), connect).await?;
    /// # let _ = stream;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `ConnectionRefused`, `HostUnreachable`, `NetworkUnreachable`, `TimedOut`,
    /// `AddrNotAvailable`; `InvalidState` after deregistration; `NoResources`; provider
    /// errors.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL` (the socket object is allocated by the call).
    pub fn connect(
        client: &WskClient,
        addr: SocketAddr,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        Self::connect_with(client, addr, &BindOptions::default())
    }

    /// Like [`TcpStream::connect`], with options applied before binding. Options left at
    /// their defaults are not set at all.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// let options = wsk_net::BindOptions { keepalive: true, ..Default::default() };
    /// let addr = "192.0.2.1:80".parse().unwrap();
    /// let stream = wsk_net::TcpStream::connect_with(client, addr, &options).await?;
    /// # let _ = stream;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::connect`]; `InvalidInput` for `v6_only` with an IPv4 address;
    /// `Unsupported` when an option is set and the provider lacks `WskControlSocket` (Wine).
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub fn connect_with(
        client: &WskClient,
        addr: SocketAddr,
        options: &BindOptions,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        Self::connect_from(client, wildcard_like(&addr), addr, options)
    }

    /// `future`, a step on this stream's slot `slot`, as a [`Cancellable`](crate::Cancellable)
    /// operation.
    fn operation<F: Future>(&self, slot: usize, name: &'static str, future: F) -> Operation<'_, F> {
        Operation::new(Target::Borrowed(self.handle.inner()), slot, name, future)
    }

    /// A stream on a connected socket: from now on its close is graceful.
    pub(crate) fn established(handle: Handle) -> Self {
        handle.inner().set_close_mode(CloseMode::Graceful);
        Self { handle }
    }

    /// `request` on the first `len` bytes of `buf`, on `slot`; the buffer comes back.
    async fn transfer(
        &self,
        slot: usize,
        request: Request,
        buf: IoBuf,
        len: usize,
    ) -> (Result<usize>, IoBuf) {
        let name = request.name();
        let held = Held::with_buf(request, buf, len);
        match Op::new(self.handle.inner(), slot, held).await {
            Ok(mut done) => {
                let result = check(done.status, done.information, name);
                (result, take_held_buf(&mut done.held))
            }
            Err(mut refused) => (Err(refused.error), take_held_buf(&mut refused.held)),
        }
    }

    /// Sends the whole of `buf` (`[0, len)`) and gives it back; completes when WSK has sent
    /// it (WSK does not buffer). `Ok(n)` is always `buf.len()`; an empty buffer is `Ok(0)`
    /// without a call to WSK. The buffer's contents are unchanged.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let (sent, buf) = stream.send(wsk_net::IoBuf::from_slice(b"hello\r\n")?).await;
    /// assert_eq!(sent?, buf.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after a disconnect or close, or with another send in flight;
    /// `ConnectionReset`, `ConnectionAborted` (also when WSK reports fewer bytes sent), ...
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use = "a send does nothing unless awaited (dropping it cancels it)"]
    pub fn send(&self, buf: IoBuf) -> SendAll<'_> {
        self.send_flags(buf, 0)
    }

    /// [`TcpStream::send`] with `WSK_FLAG_NODELAY`: no coalescing delay for this send.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream, reply: wsk_net::IoBuf) -> wsk_net::Result<()> {
    /// let (sent, _reply) = stream.send_nodelay(reply).await;
    /// sent?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use = "a send does nothing unless awaited (dropping it cancels it)"]
    pub fn send_nodelay(&self, buf: IoBuf) -> SendAll<'_> {
        self.send_flags(buf, sys::WSK_FLAG_NODELAY)
    }

    /// The future of a send with `flags`: refused at once after a disconnect, `Ok(0)` for an
    /// empty buffer, otherwise one `WskSend` of all of it.
    fn send_flags(&self, buf: IoBuf, flags: u32) -> SendAll<'_> {
        let inner = self.handle.inner();
        let early = if inner.flags().is_send_shut() {
            Some(SendEarly::Refused)
        } else if buf.is_empty() {
            Some(SendEarly::Empty)
        } else {
            None
        };
        let len = buf.len();
        SendAll {
            op: StreamIo::new(inner, Chunk::new(buf, 0, len, flags)),
            early,
            len,
        }
    }

    /// Receives into `buf` (cleared when `recv` is called, then filled up to its capacity) and
    /// gives it back with the byte count, which is also `buf.len()`; 0 means the peer closed
    /// its side (FIN). The future is a [`Recv`]: it can be cancelled and bounded with
    /// [`timeout`](crate::timeout) without losing the buffer.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let (n, buf) = stream.recv(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// if n? == 0 {
    ///     // the peer sent FIN
    /// }
    /// let _data: &[u8] = &buf; // the bytes that arrived
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or abortive disconnect, or with another receive in
    /// flight; `ConnectionReset`, `Cancelled`, ... On error the buffer comes back too, with
    /// whatever WSK reported as received.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv(&self, buf: IoBuf) -> Recv<'_> {
        let cap = buf.capacity();
        self.recv_op(buf, cap, 0, "recv")
    }

    /// Receives exactly `len` bytes into `buf` (`WSK_FLAG_WAITALL`). Fewer means the peer
    /// closed early: `NotConnected`, with the bytes that did arrive in `buf`.
    ///
    /// A provider that completes the receive short anyway (Wine 8.0 ignores
    /// `WSK_FLAG_WAITALL`) gets further receives for the rest, into the same buffer, so the
    /// result is the same everywhere.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// // A 4-byte big-endian length prefix.
    /// let (got, header) = stream.recv_exact(wsk_net::IoBuf::with_capacity(4)?, 4).await;
    /// got?;
    /// let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    /// # let _ = len;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when `len` is 0 or exceeds the capacity; `NotConnected` as above; as
    /// [`TcpStream::recv`] (errors from the provider name the operation `"recv"`).
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_exact(&self, buf: IoBuf, len: usize) -> Recv<'_> {
        self.recv_op(buf, len, sys::WSK_FLAG_WAITALL, "recv_exact")
    }

    fn recv_op(&self, mut buf: IoBuf, len: usize, flags: u32, name: &'static str) -> Recv<'_> {
        buf.clear();
        let inner = self.handle.inner();
        // Only the kind: the operation's name (`name`, from the flags) is added by the
        // refusal at the first poll, so building the future stores one byte for it.
        let early = if len == 0 || len > buf.capacity() {
            Some(ErrorKind::InvalidInput)
        } else if inner.flags().is_recv_shut() {
            Some(ErrorKind::InvalidState)
        } else {
            None
        };
        debug_assert_eq!(
            name,
            if flags & sys::WSK_FLAG_WAITALL != 0 {
                "recv_exact"
            } else {
                "recv"
            },
            "StreamIo::refuse names a receive by its flags"
        );
        let exact = if flags & sys::WSK_FLAG_WAITALL != 0 {
            len
        } else {
            0
        };
        // A refused receive's operation is never issued: it only keeps the buffer.
        Recv {
            op: StreamIo::new(inner, Chunk::new(buf, 0, len, flags)),
            early,
            exact,
            got: 0,
        }
    }

    /// The local address. See the example on [`TcpStream::peer_addr`].
    ///
    /// # Errors
    /// `Unsupported` where the provider lacks it (Wine); `InvalidState` after close or with
    /// another control operation in flight.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn local_addr(&self) -> Operation<'_, impl Future<Output = Result<SocketAddr>> + '_> {
        self.operation(CTL, "local_addr", async move {
            socket::address(&self.handle, false).await
        })
    }

    /// The peer's address.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let (local, peer) = (stream.local_addr().await?, stream.peer_addr().await?);
    /// # let _ = (local, peer);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::local_addr`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn peer_addr(&self) -> Operation<'_, impl Future<Output = Result<SocketAddr>> + '_> {
        self.operation(CTL, "peer_addr", async move {
            socket::address(&self.handle, true).await
        })
    }

    /// Sets `TCP_NODELAY` (no Nagle coalescing) for every later send.
    ///
    /// `TCP_NODELAY` (level `IPPROTO_TCP`) is not among the options the WDK page "WSK Socket
    /// Options" lists (<https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-socket-options>:
    /// `SOL_SOCKET` options only); that page leaves transport-level options to "the underlying
    /// network protocol", and Winsock documents `TCP_NODELAY` for user mode only. So this
    /// relies on Windows' TCP transport accepting it through `WskControlSocket`, which WSK
    /// does not document: check for an error. The documented way to push one send without
    /// coalescing is `WSK_FLAG_NODELAY` on that `WskSend`.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.set_nodelay(true).await?;
    /// stream.set_keepalive(true).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Unsupported` where the provider lacks `WskControlSocket` (Wine); `InvalidState` after
    /// close or with another control operation in flight.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn set_nodelay(&self, on: bool) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        self.operation(CTL, "set_nodelay", async move {
            socket::set_option(
                &self.handle,
                sys::IPPROTO_TCP,
                sys::TCP_NODELAY,
                u32::from(on),
                "TCP_NODELAY",
            )
            .await
        })
    }

    /// Sets `SO_KEEPALIVE`. See the example on [`TcpStream::set_nodelay`].
    ///
    /// # Errors
    /// As [`TcpStream::set_nodelay`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn set_keepalive(&self, on: bool) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        self.operation(CTL, "set_keepalive", async move {
            socket::set_option(
                &self.handle,
                sys::SOL_SOCKET,
                sys::SO_KEEPALIVE,
                u32::from(on),
                "SO_KEEPALIVE",
            )
            .await
        })
    }

    /// Ends the connection: [`Disconnect::Graceful`] sends FIN after pending sends (receiving
    /// stays possible until the peer closes); [`Disconnect::Abortive`] resets it.
    ///
    /// After a successful graceful disconnect, sends fail with `InvalidState`; after an
    /// abortive one, sends and receives do.
    ///
    /// A graceful disconnect may never complete if transmission fails; bound it with
    /// [`TcpStream::disconnect_within`].
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// use wsk_net::{Disconnect, ErrorKind};
    /// match stream.disconnect(Disconnect::Graceful).await {
    ///     Ok(()) => {}
    ///     Err(e) if e.kind() == ErrorKind::Unsupported => {} // Wine: close alone ends it
    ///     Err(e) => return Err(e),                           // dropping `stream` closes it
    /// }
    /// stream.close().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` for a graceful disconnect after any successful disconnect, for any
    /// disconnect after close, or with another control operation in flight. An abortive
    /// disconnect after a completed graceful one is allowed, but not while a graceful one is
    /// still pending (it holds the control slot): the way out of a stuck graceful disconnect
    /// is closing the socket, which [`TcpStream::disconnect_within`] does. `Unsupported`
    /// where the provider lacks `WskDisconnect` (Wine: fall back to [`TcpStream::close`]);
    /// provider errors.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn disconnect(
        &self,
        how: Disconnect,
    ) -> Operation<'_, impl Future<Output = Result<()>> + '_> {
        self.operation(CTL, "disconnect", async move {
            let flags = match how {
                Disconnect::Graceful => 0,
                Disconnect::Abortive => sys::WSK_FLAG_ABORTIVE,
            };
            let inner = self.handle.inner();
            if inner.flags().is_send_shut() && how == Disconnect::Graceful {
                return Err(Error::new(ErrorKind::InvalidState, "disconnect"));
            }
            let request = Request::Disconnect {
                flags,
                final_data: false,
            };
            let done = Op::new(inner, CTL, Held::new(request)).await?;
            let result = check(done.status, done.information, "disconnect").map(drop);
            if result.is_ok() {
                match how {
                    Disconnect::Graceful => inner.flags().shut_send(),
                    Disconnect::Abortive => inner.flags().shut_both(),
                }
            }
            result
        })
    }

    /// Sends `buf` as final data, then FIN (one `WskDisconnect` with a buffer), and gives the
    /// buffer back. An empty buffer is a plain graceful disconnect.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let (done, _buf) = stream.disconnect_with(wsk_net::IoBuf::from_slice(b"bye\n")?).await;
    /// done?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::disconnect`] (graceful): `InvalidState` once sending is shut down.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn disconnect_with(
        &self,
        buf: IoBuf,
    ) -> Operation<'_, impl Future<Output = (Result<()>, IoBuf)> + '_> {
        self.operation(CTL, "disconnect_with", async move {
            let inner = self.handle.inner();
            if inner.flags().is_send_shut() {
                return (
                    Err(Error::new(ErrorKind::InvalidState, "disconnect_with")),
                    buf,
                );
            }
            let len = buf.len();
            let request = Request::Disconnect {
                flags: 0,
                final_data: true,
            };
            let (result, buf) = self.transfer(CTL, request, buf, len).await;
            if result.is_ok() {
                inner.flags().shut_send();
            }
            (result.map(drop), buf)
        })
    }

    /// Graceful disconnect bounded by `limit`: if it has not completed by then, the socket is
    /// closed instead (`WskCloseSocket`, abortive: the peer sees a reset, and the stuck
    /// disconnect completes). Returns `TimedOut` in that case; the stream is then closing and
    /// every later operation fails with `InvalidState`. The close is started, not awaited:
    /// [`TcpStream::close`] waits for it.
    ///
    /// Under Wine `WskDisconnect` is unsupported and this returns `Unsupported` at once.
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let result = stream.disconnect_within(core::time::Duration::from_secs(5)).await;
    /// stream.close().await; // in both cases
    /// result
    /// # }
    /// ```
    ///
    /// # Errors
    /// `TimedOut` when the fallback was taken; otherwise as [`TcpStream::disconnect`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`, on an executor runner (the limit is the runner's timer).
    #[cfg(not(loom))]
    pub async fn disconnect_within(&self, limit: core::time::Duration) -> Result<()> {
        let deadline = wsk_executor::sleep(limit);
        let graceful = core::pin::pin!(self.disconnect(Disconnect::Graceful));
        let mut graceful = graceful;
        let mut deadline = core::pin::pin!(deadline);
        let expired = core::future::poll_fn(|cx| {
            if let Poll::Ready(r) = graceful.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            deadline.as_mut().poll(cx).map(|()| None)
        })
        .await;
        if let Some(result) = expired {
            return result;
        }
        // The graceful disconnect is stuck: reset the connection. The abortive disconnect
        // would need the control slot the graceful one holds, so close instead, which
        // completes the stuck IRP and resets the connection (abortive close). Not the
        // graceful close: its disconnect would queue behind the stuck one.
        self.handle.inner().set_close_mode(CloseMode::Plain);
        self.handle.start_close();
        Err(Error::new(ErrorKind::TimedOut, "disconnect"))
    }

    /// Closes the connection gracefully and waits until WSK has closed the socket: FIN after
    /// every pending send (a graceful `WskDisconnect`, "`PFN_WSK_DISCONNECT` callback function
    /// (wsk.h)": "the WSK subsystem waits for all outstanding transmit data to be sent before
    /// disconnecting"), then `WskCloseSocket`. The disconnect is bounded by the close limit
    /// ([`TcpStream::set_close_limit`]; 5 seconds by default): past it, it is cancelled and
    /// the close resets the connection, so this returns within about the limit whatever the
    /// peer does (it never reads, never acknowledges). Dropping the stream does the same
    /// without waiting.
    ///
    /// No operation of this stream can be in flight here (they borrow it); those whose
    /// futures were dropped and that WSK still holds are cancelled by the close. A stream
    /// already disconnected ([`TcpStream::disconnect`]) is just closed. Where the provider
    /// has no `WskDisconnect` (Wine 8.0), the disconnect fails at once and the close is all
    /// that is left: Wine's close then decides between FIN and reset.
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let (sent, _reply) = stream.send(wsk_net::IoBuf::from_slice(b"bye\r\n")?).await;
    /// sent?;
    /// stream.close().await; // the peer reads "bye", then end of stream
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn close(self) {
        self.handle.close().await;
    }

    /// Resets the connection: an abortive `WskDisconnect` (`WSK_FLAG_ABORTIVE`,
    /// "`PFN_WSK_DISCONNECT` callback function (wsk.h)": it "directs the WSK subsystem to
    /// perform an abortive disconnect"), then `WskCloseSocket`. Pending sends are discarded and
    /// the peer sees a reset (RST). For shedding load or ending a misbehaving peer at once;
    /// [`TcpStream::close`] is the ordinary end. Where the provider has no `WskDisconnect`
    /// (Wine 8.0), the close alone is left.
    ///
    /// The reset is decided here, not at the first poll: awaiting the future waits until the
    /// socket is closed; dropping it instead resets and closes without waiting.
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream, other: wsk_net::TcpStream) {
    /// stream.abort().await; // the peer's next read fails with "connection reset"
    /// drop(other.abort()); // the same, without waiting (from a synchronous context)
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Call at any IRQL; poll and drop the future at <= `DISPATCH_LEVEL`.
    pub fn abort(self) -> impl Future<Output = ()> + Send {
        self.handle.inner().set_close_mode(CloseMode::Abortive);
        self.handle.close()
    }

    /// Sets how long a graceful close ([`TcpStream::close`], or dropping the stream) waits
    /// for its disconnect before resetting the connection instead; 5 seconds unless set.
    /// Millisecond resolution; a zero limit still tries (the timer fires after the call).
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) {
    /// stream.set_close_limit(core::time::Duration::from_millis(500));
    /// drop(stream); // FIN now, or a reset in 0.5 s if the FIN cannot go out
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Any.
    pub fn set_close_limit(&self, limit: core::time::Duration) {
        self.handle.inner().set_close_limit(limit);
    }
}

/// The buffer of a [`Held`] transfer (the closing `disconnect_with`); every one is built with
/// one (`Held::with_buf`) and the slot machinery hands `Held` back whole.
fn take_held_buf(held: &mut Held) -> IoBuf {
    held.buf
        .take()
        .expect("transfer operations always carry their buffer")
}

/// The buffer a transfer was given back (`RecvAppend`'s general operation); every
/// [`Transfer`](crate::raw::Transfer) carries one, and the slot machinery hands it back whole.
pub(crate) fn take_buf(done: TransferDone) -> IoBuf {
    done.buf
        .expect("transfer operations always carry their buffer")
}

/// The future of [`TcpStream::recv`] and [`TcpStream::recv_exact`]: the byte count and the
/// buffer back. [`Recv::cancel`] asks WSK to stop; the future still returns the buffer.
///
/// Dropping it before completion cancels the receive and frees the buffer once WSK has let go
/// of it; data that arrived into it is lost. To stop a receive and keep the buffer, cancel
/// and keep polling, or use [`timeout`](crate::timeout). Do not poll it again after it
/// returned: it stays pending. Examples: [`TcpStream::recv`], [`Recv::cancel`].
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct Recv<'a> {
    /// The receive; a refused one is never issued and only keeps the buffer. Kept after
    /// completion (it then holds nothing and stays pending): the future is one flat struct,
    /// built and polled in place, with no `Option` around it to set and test.
    op: StreamIo<'a, true>,
    /// A receive refused before reaching WSK: its first poll returns an error of this kind
    /// (named by the operation) and the buffer `op` keeps.
    early: Option<ErrorKind>,
    exact: usize,
    /// Bytes a `recv_exact` already has from earlier, short completions.
    got: usize,
}

impl Recv<'_> {
    /// Requests cancellation of the receive in flight (`IoCancelIrp`); keep polling to get
    /// the buffer back (the result is then usually `Cancelled`, or data that won the race).
    ///
    /// Before the receive reaches WSK (not polled yet, or waiting for its slot) it never will:
    /// its next poll returns `Cancelled` with the buffer. Under Wine 8.0
    /// `IoCancelIrp` does not cancel WSK IRPs, so the receive keeps waiting for data.
    ///
    /// ```no_run
    /// # use core::sync::atomic::AtomicBool;
    /// # async fn demo(stream: &wsk_net::TcpStream, stop: &AtomicBool) -> wsk_net::Result<()> {
    /// use core::future::Future;
    /// let mut recv = core::pin::pin!(stream.recv(wsk_net::IoBuf::with_capacity(4096)?));
    /// let (n, buf) = core::future::poll_fn(|cx| {
    ///     // Whoever sets `stop` wakes this task.
    ///     if stop.load(core::sync::atomic::Ordering::Acquire) {
    ///         recv.cancel();
    ///     }
    ///     recv.as_mut().poll(cx)
    /// })
    /// .await;
    /// // `buf` is back whether `n` is data or `Cancelled`.
    /// # let _ = (n, buf);
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn cancel(&self) {
        self.op.cancel();
    }
}

impl Recv<'_> {
    /// Closes the stream's socket at once (no closing disconnect), which completes the
    /// receive: a deadline's escalation where the provider ignores the cancel.
    pub(crate) fn close_socket(&self) {
        self.op.close_socket();
    }
}

impl Future for Recv<'_> {
    type Output = (Result<usize>, IoBuf);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: fields are polled in place and never moved while pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // Tested, not taken: the common case stores nothing here.
        if let Some(kind) = this.early {
            this.early = None;
            return this
                .op
                .refuse_now(kind)
                .map(|(error, buf)| (Err(error), buf));
        }
        let op = &mut this.op;
        loop {
            // A receive polled again after it returned: `op` holds nothing and stays pending.
            let (done, mut buf) = match op.poll_in_place(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            let (status, information) = match done {
                Ok(completion) => completion,
                Err(error) => {
                    // A continuation refused (cancelled, closing): the bytes so far stay.
                    let _ = buf.set_len(this.got);
                    return Poll::Ready((Err(error), buf));
                }
            };
            let n = information.min(buf.capacity() - this.got);
            let total = this.got + n;
            if this.exact != 0 && sys::NT_SUCCESS(status) && n > 0 && total < this.exact {
                // The provider completed a WAITALL receive short (Wine ignores the flag):
                // receive the rest into the same buffer, after what arrived.
                this.got = total;
                let rest = Chunk::new(buf, total, this.exact - total, sys::WSK_FLAG_WAITALL);
                op.reissue(rest);
                continue;
            }
            // The operation stays: completed, it holds nothing and stays pending if polled
            // again (dropping it here would run its drop glue on every receive).
            let _ = buf.set_len(total);
            // The name only an error carries, chosen here rather than at every poll.
            let mut result = if this.exact == 0 {
                check(status, total, "recv")
            } else {
                check(status, total, "recv_exact")
            };
            if this.exact != 0 && matches!(result, Ok(got) if got < this.exact) {
                result = Err(Error::new(ErrorKind::NotConnected, "recv_exact"));
            }
            return Poll::Ready((result, buf));
        }
    }
}

/// The future of [`TcpStream::send`] and [`TcpStream::send_nodelay`]: one `WskSend` of the
/// whole buffer, the buffer back. [`SendAll::cancel`] asks WSK to stop; the future still
/// returns the buffer, and [`timeout`](crate::timeout) bounds it without losing the buffer.
///
/// Dropping it before completion cancels the send and frees the buffer once WSK has let go of
/// it. Do not poll it again after it returned: it stays pending. Written by hand rather than
/// as an `async fn`, so that the send's state is one small struct polled in place.
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct SendAll<'a> {
    /// The send; one decided before reaching WSK is never issued and only keeps the buffer.
    /// Kept after completion, as [`Recv`]'s.
    op: StreamIo<'a, false>,
    /// A send decided before reaching WSK (refused, or empty): its first poll returns that
    /// and the buffer `op` keeps.
    early: Option<SendEarly>,
    /// The bytes sent: all of the buffer, or the send failed.
    len: usize,
}

/// Why a [`SendAll`] is decided before reaching WSK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendEarly {
    /// After a disconnect: `InvalidState`.
    Refused,
    /// An empty buffer: `Ok(0)`, nothing sent.
    Empty,
}

impl SendAll<'_> {
    /// Requests cancellation of the send in flight (`IoCancelIrp`); keep polling to get the
    /// buffer back (the result is then `Cancelled`, or the send's own result if it won the
    /// race). Before the send reaches WSK it never will: its next poll returns `Cancelled`
    /// with the buffer.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let send = core::pin::pin!(stream.send(wsk_net::IoBuf::from_slice(b"hello")?));
    /// send.cancel(); // before the first poll: it never reaches WSK
    /// let (sent, _buf) = send.await;
    /// assert_eq!(sent.unwrap_err().kind(), wsk_net::ErrorKind::Cancelled);
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn cancel(&self) {
        self.op.cancel();
    }

    /// Closes the stream's socket at once (no closing disconnect), which completes the send:
    /// a deadline's escalation where the provider ignores the cancel.
    pub(crate) fn close_socket(&self) {
        self.op.close_socket();
    }
}

impl Future for SendAll<'_> {
    type Output = (Result<usize>, IoBuf);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: fields are polled in place and never moved while pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // Tested, not taken: the common case stores nothing here.
        if let Some(early) = this.early {
            this.early = None;
            return match early {
                SendEarly::Refused => this
                    .op
                    .refuse_now(ErrorKind::InvalidState)
                    .map(|(error, buf)| (Err(error), buf)),
                SendEarly::Empty => match this.op.take_unissued() {
                    Some(buf) => Poll::Ready((Ok(0), buf)),
                    // Unreachable: an early send keeps its buffer until this first poll.
                    None => Poll::Pending,
                },
            };
        }
        // A send polled again after it returned: `op` holds nothing and stays pending.
        let (done, buf) = core::task::ready!(this.op.poll_in_place(cx));
        // The operation stays: completed, it holds nothing and stays pending if polled again
        // (dropping it here would run its drop glue on every send).
        Poll::Ready((socket::sent_all(done, this.len, "send"), buf))
    }
}
