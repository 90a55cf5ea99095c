//! What every socket type shares: the owning handle (closes on drop, never leaks), creation
//! with `WskSocket`, bind, socket options, addresses, and close. The WSK calls are small
//! issue functions that read their parameters from the operation's `Held`.

use core::net::SocketAddr;
use core::ptr::NonNull;

use wsk_sys::{
    self as sys, NTSTATUS, WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_PROVIDER_DATAGRAM_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH,
};

use crate::addr::RawAddr;
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, Request, SocketInner};

/// Owns one reference on a socket object; dropping it starts closing the socket (if open)
/// and releases the reference. Never leaks the socket, whatever state it is in.
pub(crate) struct Handle(NonNull<SocketInner>);

// SAFETY: the socket object is thread-safe (see SocketInner) and lives in nonpaged pool.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Handle {
    /// A new socket object of `kind` on `client`, with no WSK socket yet.
    pub(crate) fn new(client: &WskClient, kind: Kind) -> Result<Self> {
        // SAFETY: the client handle keeps the client object alive.
        if !unsafe { client.inner().as_ref() }.accepting() {
            return Err(Error::new(ErrorKind::InvalidState, "socket"));
        }
        SocketInner::new(client.inner(), kind).map(Self)
    }

    /// Wraps an object that already owns a reference (accept's child).
    pub(crate) fn from_inner(inner: NonNull<SocketInner>) -> Self {
        Self(inner)
    }

    /// The socket object.
    pub(crate) fn inner(&self) -> &SocketInner {
        // SAFETY: the handle's reference keeps the object alive.
        unsafe { self.0.as_ref() }
    }

    /// The object pointer (for a `Held::adopt` that takes its own reference).
    pub(crate) fn adopt_ref(&self) -> NonNull<SocketInner> {
        self.inner().add_ref();
        self.0
    }

    /// Starts the close without waiting for it. IRQL <= `DISPATCH_LEVEL`.
    #[cfg(not(loom))] // its one user, `disconnect_within`, needs the executor's timer
    pub(crate) fn start_close(&self) {
        SocketInner::start_close(self.0);
    }

    /// Starts the close and waits for it. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) async fn close(self) {
        SocketInner::start_close(self.0);
        core::future::poll_fn(|cx| self.inner().poll_closed(cx)).await;
    }
}

/// One reference on a socket object that, unlike [`Handle`], does not close the socket when
/// dropped: what an [`Operation`](crate::Operation) that owns its socket's creation keeps to
/// cancel it.
pub(crate) struct SocketRef(NonNull<SocketInner>);

// SAFETY: as for `Handle`: the object is thread-safe and lives in nonpaged pool.
unsafe impl Send for SocketRef {}
// SAFETY: as above.
unsafe impl Sync for SocketRef {}

impl SocketRef {
    /// The socket object.
    pub(crate) fn inner(&self) -> &SocketInner {
        // SAFETY: our reference keeps the object alive.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for SocketRef {
    fn drop(&mut self) {
        // SAFETY: the reference `Handle::share` took, given up here.
        unsafe { SocketInner::release(self.0) };
    }
}

impl Handle {
    /// A second reference on the object, which does not close it.
    pub(crate) fn share(&self) -> SocketRef {
        SocketRef(self.adopt_ref())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        SocketInner::start_close(self.0);
        // SAFETY: the handle's reference, given up here.
        unsafe { SocketInner::release(self.0) };
    }
}

/// Maps a completion to `Ok(information)` or the error for `operation`.
pub(crate) fn check(
    status: NTSTATUS,
    information: usize,
    operation: &'static str,
) -> Result<usize> {
    if sys::NT_SUCCESS(status) {
        Ok(information)
    } else {
        Err(Error::from_status(status, operation))
    }
}

/// Maps a stream send's completion to the bytes sent: WSK sends all of a buffer or fails, so
/// fewer than `len` is an aborted connection.
pub(crate) fn sent_all(
    done: Result<(NTSTATUS, usize)>,
    len: usize,
    operation: &'static str,
) -> Result<usize> {
    done.and_then(|(status, information)| {
        check(status, information, operation).and_then(|n| {
            if n == len {
                Ok(n)
            } else {
                Err(Error::new(ErrorKind::ConnectionAborted, operation))
            }
        })
    })
}

/// `WskSocket` type, protocol and flags for a kind.
fn socket_type(kind: Kind) -> (u16, u32, u32) {
    match kind {
        Kind::Listen => (
            sys::SOCK_STREAM,
            sys::IPPROTO_TCP,
            sys::WSK_FLAG_LISTEN_SOCKET,
        ),
        Kind::Connection => (
            sys::SOCK_STREAM,
            sys::IPPROTO_TCP,
            sys::WSK_FLAG_CONNECTION_SOCKET,
        ),
        Kind::Datagram => (
            sys::SOCK_DGRAM,
            sys::IPPROTO_UDP,
            sys::WSK_FLAG_DATAGRAM_SOCKET,
        ),
    }
}

/// `WskSocket` ([`Request::Socket`]).
///
/// # Safety
/// `call.irp` is prepared.
pub(crate) unsafe fn issue_socket(call: &mut Call, kind: Kind, family: u16) -> NTSTATUS {
    let (dispatch, client) = call.client().provider();
    let Some(create) = dispatch.WskSocket else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let (socket_type, protocol, flags) = socket_type(kind);
    call.client().socket_issued();
    // A connection socket names its object and the event callbacks (used only once the
    // stream enables receive events, see `crate::tcp::events`).
    let (context, events) = match (kind, call.held().adopt) {
        (Kind::Connection, Some(inner)) => crate::tcp::client_dispatch(inner),
        (Kind::Datagram, Some(inner)) => crate::udp_events::client_dispatch(inner),
        // A listener names its object and the accept callback (used only once the listener
        // enables accept events, see `crate::tcp::accept_events`).
        (Kind::Listen, Some(inner)) => crate::tcp::listen_dispatch(inner),
        _ => (core::ptr::null_mut(), core::ptr::null()),
    };
    // SAFETY: the client's provider binding is live; no security descriptor; a prepared IRP
    // (caller); the context outlives the socket (the object is freed after its close).
    unsafe {
        create(
            client,
            family,
            socket_type,
            protocol,
            flags,
            context,
            events,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// Creates the provider socket for `handle`. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn create(handle: &Handle, family: u16) -> Result<()> {
    let inner = handle.inner();
    let mut held = Held::new(Request::Socket {
        kind: inner.kind(),
        family,
    });
    held.adopt = Some(handle.adopt_ref());
    let done = Op::new(inner, CTL, held).before_open().await?;
    check(done.status, done.information, "WskSocket")?;
    if done.information == 0 {
        return Err(Error::new(ErrorKind::Other, "WskSocket"));
    }
    SocketInner::adopt(handle.0, done.information as *mut sys::WSK_SOCKET);
    Ok(())
}

/// `WskBind` to `held.addr[0]` through the table of `kind` ([`Request::Bind`]).
///
/// # Safety
/// `call.socket` is an open socket of `kind`; `call.irp` is prepared.
pub(crate) unsafe fn issue_bind(call: &mut Call, kind: Kind) -> NTSTATUS {
    let bind = match kind {
        Kind::Listen => {
            // SAFETY: the socket is open and of `kind` (caller).
            unsafe { call.dispatch::<WSK_PROVIDER_LISTEN_DISPATCH>() }.WskBind
        }
        Kind::Connection => {
            // SAFETY: as above.
            unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() }.WskBind
        }
        Kind::Datagram => {
            // SAFETY: as above.
            unsafe { call.dispatch::<WSK_PROVIDER_DATAGRAM_DISPATCH>() }.WskBind
        }
    };
    let Some(bind) = bind else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let local = call.held().addr[0].as_mut_ptr();
    // SAFETY: open socket, prepared IRP; the address lives in the slot until completion.
    unsafe { bind(call.socket(), local, 0, call.irp()) }
}

/// Binds to `addr`. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn bind(handle: &Handle, addr: SocketAddr) -> Result<()> {
    let mut held = Held::new(Request::Bind {
        kind: handle.inner().kind(),
    });
    held.addr[0] = RawAddr::from(addr);
    let done = Op::new(handle.inner(), CTL, held).await?;
    check(done.status, done.information, "bind").map(drop)
}

/// `WskGetLocalAddress` into `held.addr[0]` through the table of `kind`
/// ([`Request::LocalAddress`]).
///
/// # Safety
/// `call.socket` is an open socket of `kind`; `call.irp` is prepared.
pub(crate) unsafe fn issue_local_address(call: &mut Call, kind: Kind) -> NTSTATUS {
    let local = match kind {
        Kind::Listen => {
            // SAFETY: the socket is open and of `kind` (caller).
            unsafe { call.dispatch::<WSK_PROVIDER_LISTEN_DISPATCH>() }.WskGetLocalAddress
        }
        Kind::Connection => {
            // SAFETY: as above.
            unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() }.WskGetLocalAddress
        }
        Kind::Datagram => {
            // SAFETY: as above.
            unsafe { call.dispatch::<WSK_PROVIDER_DATAGRAM_DISPATCH>() }.WskGetLocalAddress
        }
    };
    let Some(local) = local else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let out = call.held().addr[0].as_mut_ptr();
    // SAFETY: open socket, prepared IRP; the address lives in the slot until completion.
    unsafe { local(call.socket(), out, call.irp()) }
}

/// `WskGetRemoteAddress` into `held.addr[0]` ([`Request::PeerAddress`]).
///
/// # Safety
/// `call.socket` is an open connection socket; `call.irp` is prepared.
pub(crate) unsafe fn issue_peer_address(call: &mut Call) -> NTSTATUS {
    // SAFETY: an open connection socket (caller).
    let table = unsafe { call.dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let Some(remote) = table.WskGetRemoteAddress else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let out = call.held().addr[0].as_mut_ptr();
    // SAFETY: open socket, prepared IRP; the address lives in the slot until completion.
    unsafe { remote(call.socket(), out, call.irp()) }
}

/// The local (`remote == false`) or remote address. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn address(handle: &Handle, remote: bool) -> Result<SocketAddr> {
    let request = if remote {
        Request::PeerAddress
    } else {
        Request::LocalAddress {
            kind: handle.inner().kind(),
        }
    };
    let name = request.name();
    let done = Op::new(handle.inner(), CTL, Held::new(request)).await?;
    check(done.status, done.information, name)?;
    done.held.addr[0]
        .to_socket_addr()
        .ok_or(Error::new(ErrorKind::Other, name))
}

/// `WskControlSocket(WskSetOption, code, level, &held.value)` ([`Request::SetOption`]).
///
/// # Safety
/// `call.socket` is open; `call.irp` is prepared.
pub(crate) unsafe fn issue_set_option(call: &mut Call, level: u32, code: u32) -> NTSTATUS {
    // SAFETY: every table starts with the basic dispatch; the socket is open (caller).
    let basic = unsafe { call.dispatch::<WSK_PROVIDER_BASIC_DISPATCH>() };
    let Some(control) = basic.WskControlSocket else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let value = (&raw mut call.held().value).cast();
    // SAFETY: open socket, prepared IRP; the value lives in the slot until completion.
    unsafe {
        control(
            call.socket(),
            sys::WskSetOption,
            code,
            level,
            size_of::<u32>(),
            value,
            0,
            core::ptr::null_mut(),
            // NULL with an IRP ("PFN_WSK_CONTROL_SOCKET callback function (wsk.h)",
            // OutputSizeReturned): the size comes back in IoStatus.Information.
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// Sets a 32-bit socket option. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn set_option(
    handle: &Handle,
    level: u32,
    code: u32,
    value: u32,
    name: &'static str,
) -> Result<()> {
    let mut held = Held::new(Request::SetOption { level, code, name });
    held.value = value;
    let done = Op::new(handle.inner(), CTL, held).await?;
    check(done.status, done.information, name).map(drop)
}

/// Socket options applied before bind (they decide how bind behaves), for
/// [`TcpListener::bind_with`](crate::TcpListener::bind_with) and
/// [`TcpStream::connect_with`](crate::TcpStream::connect_with). Each option is set with
/// `WskControlSocket` only when it differs from the default, so `BindOptions::default()`
/// makes no extra call (and works where the provider lacks `WskControlSocket`, as under
/// Wine).
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// let options = wsk_net::BindOptions { reuse_address: true, ..Default::default() };
/// let listener =
///     wsk_net::TcpListener::bind_with(client, "0.0.0.0:7007".parse().unwrap(), &options).await?;
/// # let _ = listener;
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "four independent socket options"
)]
pub struct BindOptions {
    /// `SO_REUSEADDR`: allow binding an address another socket uses.
    pub reuse_address: bool,
    /// `SO_EXCLUSIVEADDRUSE`: forbid any other socket from binding this address.
    pub exclusive_address: bool,
    /// `IPV6_V6ONLY`: `Some(false)` makes an IPv6 wildcard listener dual-stack; `None` keeps
    /// the provider's default. Only for IPv6 addresses: with an IPv4 one, binding fails with
    /// `InvalidInput`.
    ///
    /// Unlike the three `SOL_SOCKET` options here, `IPV6_V6ONLY` (level `IPPROTO_IPV6`) is not
    /// listed on the WDK page "WSK Socket Options"
    /// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-socket-options>),
    /// which leaves other levels to "the underlying network protocol": it relies on Windows'
    /// IPv6 transport accepting it through `WskControlSocket`, which WSK does not document.
    pub v6_only: Option<bool>,
    /// `SO_KEEPALIVE`, meant for connection sockets ([`TcpStream::connect_with`]); with
    /// [`TcpListener::bind_with`] it is set on the listening socket itself.
    ///
    /// [`TcpStream::connect_with`]: crate::TcpStream::connect_with
    /// [`TcpListener::bind_with`]: crate::TcpListener::bind_with
    pub keepalive: bool,
}

/// Applies `options` to a created, unbound socket.
pub(crate) async fn apply_bind_options(
    handle: &Handle,
    options: &BindOptions,
    ipv6: bool,
) -> Result<()> {
    if options.reuse_address {
        set_option(
            handle,
            sys::SOL_SOCKET,
            sys::SO_REUSEADDR,
            1,
            "SO_REUSEADDR",
        )
        .await?;
    }
    if options.exclusive_address {
        set_option(
            handle,
            sys::SOL_SOCKET,
            sys::SO_EXCLUSIVEADDRUSE,
            1,
            "SO_EXCLUSIVEADDRUSE",
        )
        .await?;
    }
    if let Some(v6_only) = options.v6_only {
        if !ipv6 {
            return Err(Error::new(ErrorKind::InvalidInput, "IPV6_V6ONLY"));
        }
        set_option(
            handle,
            sys::IPPROTO_IPV6,
            sys::IPV6_V6ONLY,
            u32::from(v6_only),
            "IPV6_V6ONLY",
        )
        .await?;
    }
    if options.keepalive {
        set_option(
            handle,
            sys::SOL_SOCKET,
            sys::SO_KEEPALIVE,
            1,
            "SO_KEEPALIVE",
        )
        .await?;
    }
    Ok(())
}
