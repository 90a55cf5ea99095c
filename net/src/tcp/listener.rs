//! [`TcpListener`]: a WSK listen socket; [`Accept`], the future of one accept, which closes a
//! connection WSK accepted for a dropped future; [`Incoming`], accepts as a stream.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::task::{Context, Poll};

use wsk_sys::{self as sys, NTSTATUS, WSK_PROVIDER_LISTEN_DISPATCH};

use super::TcpStream;
use crate::addr::family_of;
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, RECV, Request, SocketInner};
use crate::socket::{self, BindOptions, Handle, check};
use crate::time::{Operation, Target};

/// A listening TCP socket.
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// let listener = wsk_net::TcpListener::bind(client, "0.0.0.0:7007".parse().unwrap()).await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     // spawn a task that serves `stream`
/// #   let _ = (stream, peer);
/// }
/// # }
/// ```
///
/// Dropping the listener closes it asynchronously; [`TcpListener::close`] waits for the close.
///
/// # IRQL
/// Every method: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.
pub struct TcpListener {
    pub(crate) handle: Handle,
}

impl TcpListener {
    /// Creates a listening socket bound to `addr` (IPv4 or IPv6; port 0 picks one): `WskSocket`
    /// with `WSK_FLAG_LISTEN_SOCKET`, then `WskBind`, which starts listening.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// let listener = wsk_net::TcpListener::bind(client, "[::1]:0".parse().unwrap()).await?;
    /// let port = listener.local_addr().await?.port(); // the port WSK picked
    /// # let _ = port;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `AddrInUse`, `AddrNotAvailable`, `NoResources`, `InvalidState` after deregistration;
    /// provider errors.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn bind(
        client: &WskClient,
        addr: SocketAddr,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        Self::bind_with(client, addr, &BindOptions::default())
    }

    /// Like [`TcpListener::bind`], with socket options applied before binding (reuse,
    /// exclusive use, dual-stack via `v6_only: Some(false)`). Options left at their defaults
    /// are not set at all.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// use wsk_net::{BindOptions, TcpListener};
    /// // One listener for IPv6 and IPv4 (as ::ffff:a.b.c.d) on port 7007.
    /// let options = BindOptions {
    ///     v6_only: Some(false),
    ///     exclusive_address: true,
    ///     ..Default::default()
    /// };
    /// let addr = "[::]:7007".parse().unwrap();
    /// let listener = TcpListener::bind_with(client, addr, &options).await?;
    /// # let _ = listener;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpListener::bind`]; `InvalidInput` for `v6_only` with an IPv4 address;
    /// `Unsupported` when the provider lacks `WskControlSocket` (Wine).
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn bind_with(
        client: &WskClient,
        addr: SocketAddr,
        options: &BindOptions,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        let options = *options;
        let handle = Handle::new(client, Kind::Listen);
        let target = handle
            .as_ref()
            .map_or(Target::Missing, |h| Target::Owned(h.share()));
        Operation::new(target, CTL, "bind", async move {
            let handle = handle?;
            socket::create(&handle, family_of(&addr)).await?;
            socket::apply_bind_options(&handle, &options, addr.is_ipv6()).await?;
            socket::bind(&handle, addr).await?;
            Ok(Self { handle })
        })
    }

    /// Waits for a connection and returns it with the peer's address.
    ///
    /// Several accepts may be in flight on one listener at once (from several tasks, or kept
    /// posted by [`TcpListener::incoming_with_depth`]): each runs on its new connection's own
    /// IRP, and WSK queues them, serving them in the order they were issued ("`PFN_WSK_ACCEPT`
    /// callback function (wsk.h)": `STATUS_PENDING` means "the IRP has been queued"). A
    /// pending accept leaves the listener's own slots free ([`TcpListener::local_addr`]
    /// works meanwhile).
    ///
    /// Calling `accept` allocates the socket object for the connection; the call to WSK
    /// happens on the first poll. Bound it with [`timeout`](crate::timeout), or stop it with
    /// [`Accept::cancel`]; dropping the future also cancels it.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// let (stream, peer) = listener.accept().await?;
    /// # let _ = (stream, peer);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or after deregistration; `NoResources` when the connection's socket object cannot be
    /// allocated (reported on the first poll); `Cancelled`; provider errors.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn accept(&self) -> Accept<'_> {
        Accept::new(self)
    }

    /// The address the listener is bound to (with the real port when bound to port 0). See
    /// the example on [`TcpListener::bind`].
    ///
    /// # Errors
    /// `Unsupported` where the provider lacks `WskGetLocalAddress` (Wine); `InvalidState`
    /// after close or while another control operation (an option) is in flight.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub fn local_addr(&self) -> Operation<'_, impl Future<Output = Result<SocketAddr>> + '_> {
        Operation::new(
            Target::Borrowed(self.handle.inner()),
            CTL,
            "local_addr",
            socket::address(&self.handle, false),
        )
    }

    /// A stream of accepted connections (`futures_core::Stream`): [`TcpListener::accept`] in a
    /// loop. Errors are items; after an `InvalidState` error (the listener can no longer
    /// accept) the stream ends.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) {
    /// use futures_core::Stream;
    /// let mut incoming = core::pin::pin!(listener.incoming());
    /// while let Some(next) = core::future::poll_fn(|cx| incoming.as_mut().poll_next(cx)).await {
    ///     match next {
    ///         Ok((stream, peer)) => {
    ///             // spawn a task serving `stream`
    /// #           let _ = (stream, peer);
    ///         }
    ///         // Closed or deregistering: every later item would fail the same way.
    ///         Err(e) if e.kind() == wsk_net::ErrorKind::InvalidState => break,
    ///         Err(_) => {} // one connection failed; keep accepting
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming::new(self)
    }

    /// Like [`TcpListener::incoming`], with `DEPTH` accepts kept posted at WSK, so that a burst
    /// of connections does not wait for one accept at a time to be reissued (the C servers'
    /// "several outstanding `WskAccept` IRPs"). Each posted accept holds a preallocated socket
    /// object (four IRPs) until it completes or the stream is dropped.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) {
    /// use futures_core::Stream;
    /// let mut incoming = core::pin::pin!(listener.incoming_with_depth::<8>());
    /// while let Some(next) = core::future::poll_fn(|cx| incoming.as_mut().poll_next(cx)).await {
    ///     if let Ok((stream, peer)) = next {
    ///         // spawn a task serving `stream`
    /// #       let _ = (stream, peer);
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// A `DEPTH` of 0 does not compile.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn incoming_with_depth<const DEPTH: usize>(&self) -> Incoming<'_, DEPTH> {
        Incoming::new(self)
    }

    /// Closes the listener (`WskCloseSocket`) and waits until WSK has closed it. An accept
    /// cannot be in flight here (it borrows the listener); one whose future was dropped and
    /// that WSK still holds is cancelled by the close, and its connection, if any, is closed.
    ///
    /// ```no_run
    /// # async fn demo(listener: wsk_net::TcpListener) {
    /// listener.close().await; // the port is free again once this returns
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn close(self) {
        self.handle.close().await;
    }
}

/// `WskAccept` into `held.addr` (local, remote) ([`Request::Accept`]).
///
/// # Safety
/// `call.socket` is an open listen socket; `call.irp` is prepared.
pub(crate) unsafe fn issue_accept(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open listen socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_LISTEN_DISPATCH>() };
    let Some(accept) = table.WskAccept else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    // The accepted socket's object and event callbacks (see `crate::tcp::events`).
    let (context, events) = call.held().adopt.map_or(
        (core::ptr::null_mut(), core::ptr::null()),
        super::events::client_dispatch,
    );
    let [local, remote] = &mut call.held().addr;
    let (local, remote) = (local.as_mut_ptr(), remote.as_mut_ptr());
    // SAFETY: open socket, prepared IRP; the address buffers live in the slot until
    // completion; the context outlives the accepted socket.
    unsafe { accept(call.socket(), 0, context, events, local, remote, call.irp()) }
}

/// The future of [`TcpListener::accept`]: the connection and the peer's address.
///
/// Dropping it before completion cancels the accept; a connection WSK accepted anyway is
/// closed. See [`TcpListener::accept`] for an example.
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct Accept<'a> {
    state: Result<(Op<'a>, Handle), Option<Error>>,
}

impl<'a> Accept<'a> {
    fn new(listener: &'a TcpListener) -> Self {
        let inner = listener.handle.inner();
        // SAFETY: the listener's handle keeps the client alive.
        let client = unsafe { inner.client().as_ref() };
        let child = if client.accepting() {
            SocketInner::new(inner.client(), Kind::Connection)
        } else {
            Err(Error::new(ErrorKind::InvalidState, "accept"))
        };
        let state = match child {
            Ok(child_ptr) => {
                // SAFETY: `SocketInner::new` gave us its one reference, which the handle below
                // owns; the handle lives beside the operation in `state` and is dropped after
                // it (tuple fields drop in order), so the object outlives this borrow.
                let child_inner: &'a SocketInner = unsafe { child_ptr.as_ref() };
                let child = Handle::from_inner(child_ptr);
                let mut held = Held::new(Request::Accept);
                held.adopt = Some(child.adopt_ref());
                // On the connection's own receive slot, against the listener: every accept
                // has its own IRP, so several can be in flight on one listener, and the
                // connection then receives with that IRP (its control slot's is allocated
                // only if it makes a control call).
                let op = Op::new(child_inner, RECV, held).calling(inner);
                Ok((op, child))
            }
            Err(e) => Err(Some(e)),
        };
        Self { state }
    }
}

impl Accept<'_> {
    /// Requests cancellation of the accept in flight (`IoCancelIrp`); keep polling for the
    /// result (usually `Cancelled`, or a connection that won the race).
    ///
    /// Before the accept reaches WSK (not polled yet, or waiting for its slot) it never will:
    /// its next poll returns `Cancelled`. Under Wine 8.0
    /// `IoCancelIrp` does not cancel WSK IRPs, so the accept keeps waiting.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener, stop: &core::sync::atomic::AtomicBool) {
    /// use core::future::Future;
    /// let mut accept = core::pin::pin!(listener.accept());
    /// let result = core::future::poll_fn(|cx| {
    ///     // Whoever sets `stop` wakes this task.
    ///     if stop.load(core::sync::atomic::Ordering::Acquire) {
    ///         accept.cancel();
    ///     }
    ///     accept.as_mut().poll(cx)
    /// })
    /// .await;
    /// # let _ = result;
    /// # }
    /// ```
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn cancel(&self) {
        if let Ok((op, _)) = &self.state {
            op.cancel();
        }
    }
}

impl Future for Accept<'_> {
    type Output = Result<(TcpStream, SocketAddr)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: nothing in Accept is structurally pinned (Op keeps WSK state in its slot).
        let this = unsafe { self.get_unchecked_mut() };
        let (op, _) = match &mut this.state {
            Ok(pair) => pair,
            Err(e) => {
                return Poll::Ready(Err(e
                    .take()
                    .unwrap_or(Error::new(ErrorKind::InvalidState, "accept"))));
            }
        };
        // SAFETY: `op` is not moved while pinned here (it lives in `this`, itself pinned).
        let done = match unsafe { Pin::new_unchecked(op) }.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        let Ok((op, child)) = core::mem::replace(&mut this.state, Err(None)) else {
            unreachable!("state was Ok above")
        };
        // Completed: nothing in flight; the borrow of the child ends before its handle moves.
        drop(op);
        let done = done?;
        check(done.status, done.information, "accept")?;
        if done.information == 0 {
            return Poll::Ready(Err(Error::new(ErrorKind::Other, "accept")));
        }
        let remote = done.held.addr[1].to_socket_addr();
        let child_ptr = child.adopt_ref();
        SocketInner::adopt(child_ptr, done.information as *mut sys::WSK_SOCKET);
        // SAFETY: the reference taken just above for the adoption call.
        unsafe { SocketInner::release(child_ptr) };
        let remote = remote.ok_or(Error::new(ErrorKind::Other, "accept"))?;
        Poll::Ready(Ok((TcpStream::established(child), remote)))
    }
}

/// Accepted connections as a `futures_core::Stream`; errors are items. An `InvalidState` error
/// (listener closing, client deregistering) is the last item: the stream ends after it. See
/// [`TcpListener::incoming`] for an example.
///
/// `DEPTH` accepts are kept posted at WSK ([`TcpListener::incoming_with_depth`]): each poll
/// reposts the ones that completed, so a burst of connections finds an accept waiting for
/// each of up to `DEPTH` of them. Items come in completion order. Dropping the stream cancels
/// every accept in flight; a connection WSK accepted anyway is closed.
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct Incoming<'a, const DEPTH: usize = 1> {
    listener: &'a TcpListener,
    accepts: [Option<Accept<'a>>; DEPTH],
    /// Where the next poll starts looking, so that no posted accept starves the others.
    next: usize,
    /// Set after an `InvalidState` error (the listener is closing): the stream has ended.
    ended: bool,
}

impl<'a, const DEPTH: usize> Incoming<'a, DEPTH> {
    fn new(listener: &'a TcpListener) -> Self {
        const { assert!(DEPTH > 0, "an Incoming needs at least one accept posted") };
        Self {
            listener,
            accepts: core::array::from_fn(|_| None),
            next: 0,
            ended: false,
        }
    }
}

impl<const DEPTH: usize> futures_core::Stream for Incoming<'_, DEPTH> {
    type Item = Result<(TcpStream, SocketAddr)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // SAFETY: the Accepts inside are only polled in place and dropped in place.
        let this = unsafe { self.get_unchecked_mut() };
        if this.ended {
            return Poll::Ready(None);
        }
        for step in 0..DEPTH {
            let index = (this.next + step) % DEPTH;
            let listener = this.listener;
            // Posting (and polling, which issues the call to WSK) every empty place keeps
            // DEPTH accepts queued at WSK.
            let accept = this.accepts[index].get_or_insert_with(|| listener.accept());
            // SAFETY: `accept` stays in `this` (pinned) until it completes and is cleared.
            let Poll::Ready(result) = (unsafe { Pin::new_unchecked(accept) }).poll(cx) else {
                continue;
            };
            this.accepts[index] = None;
            this.next = (index + 1) % DEPTH;
            // A listener that can no longer accept yields that error once, then ends, so a
            // `while let Some(..)` loop never spins on it; the other accepts are cancelled.
            if matches!(&result, Err(e) if e.kind() == ErrorKind::InvalidState) {
                this.ended = true;
                this.accepts = core::array::from_fn(|_| None);
            }
            return Poll::Ready(Some(result));
        }
        Poll::Pending
    }
}
