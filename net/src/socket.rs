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
use crate::raw::{CTL, Call, Held, Kind, Op, SocketInner};

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

    /// Starts the close and waits for it. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) async fn close(self) {
        SocketInner::start_close(self.0);
        core::future::poll_fn(|cx| self.inner().poll_closed(cx)).await;
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

/// `WskSocket` flags and parameters for a kind and address family.
fn socket_params(kind: Kind, family: u16) -> [u32; 4] {
    let (socket_type, protocol, flags) = match kind {
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
    };
    [u32::from(family), u32::from(socket_type), protocol, flags]
}

/// `WskSocket`.
///
/// # Safety
/// `call.irp` is prepared; `params` are family, type, protocol, flags.
unsafe fn issue_socket(call: &mut Call) -> NTSTATUS {
    // SAFETY: the client is live while its socket objects are; `held` is in-slot.
    unsafe {
        let (dispatch, client) = call.client.as_ref().provider();
        let [family, socket_type, protocol, flags] = (*call.held).params;
        let Some(create) = dispatch.WskSocket else {
            return sys::STATUS_NOT_IMPLEMENTED;
        };
        #[allow(
            clippy::cast_possible_truncation,
            reason = "family and type were u16 to begin with"
        )]
        create(
            client,
            family as u16,
            socket_type as u16,
            protocol,
            flags,
            core::ptr::null_mut(),
            core::ptr::null(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            call.irp,
        )
    }
}

/// Creates the provider socket for `handle`. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn create(handle: &Handle, family: u16) -> Result<()> {
    let inner = handle.inner();
    let mut held = Held::empty();
    held.params = socket_params(inner.kind(), family);
    held.adopt = Some(handle.adopt_ref());
    let done = Op::new(inner, CTL, "WskSocket", held, issue_socket)
        .before_open()
        .await?;
    check(done.status, done.information, "WskSocket")?;
    if done.information == 0 {
        return Err(Error::new(ErrorKind::Other, "WskSocket"));
    }
    SocketInner::adopt(handle.0, done.information as *mut sys::WSK_SOCKET);
    Ok(())
}

/// `WskBind` through the socket's own table.
///
/// # Safety
/// `call.socket` is open; `held.addr[0]` is the address.
unsafe fn issue_bind(call: &mut Call) -> NTSTATUS {
    // SAFETY: the dispatch table matches the kind recorded in params[0] at creation.
    unsafe {
        let table = (*call.socket).Dispatch;
        let bind = match (*call.held).params[0] {
            0 => (*table.cast::<WSK_PROVIDER_LISTEN_DISPATCH>()).WskBind,
            1 => (*table.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()).WskBind,
            _ => (*table.cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>()).WskBind,
        };
        let Some(bind) = bind else {
            return sys::STATUS_NOT_IMPLEMENTED;
        };
        bind(call.socket, (*call.held).addr[0].as_mut_ptr(), 0, call.irp)
    }
}

fn kind_code(kind: Kind) -> u32 {
    match kind {
        Kind::Listen => 0,
        Kind::Connection => 1,
        Kind::Datagram => 2,
    }
}

/// Binds to `addr`. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn bind(handle: &Handle, addr: SocketAddr) -> Result<()> {
    let mut held = Held::empty();
    held.addr[0] = RawAddr::from(addr);
    held.params[0] = kind_code(handle.inner().kind());
    let done = Op::new(handle.inner(), CTL, "bind", held, issue_bind).await?;
    check(done.status, done.information, "bind").map(drop)
}

/// `WskGetLocalAddress` (params[1] == 0) or `WskGetRemoteAddress` (params[1] == 1).
///
/// # Safety
/// `call.socket` is open; the result goes to `held.addr[0]`.
unsafe fn issue_address(call: &mut Call) -> NTSTATUS {
    // SAFETY: the dispatch table matches the kind in params[0].
    unsafe {
        let table = (*call.socket).Dispatch;
        let out = (*call.held).addr[0].as_mut_ptr();
        if (*call.held).params[1] == 1 {
            let Some(f) = (*table.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()).WskGetRemoteAddress
            else {
                return sys::STATUS_NOT_IMPLEMENTED;
            };
            return f(call.socket, out, call.irp);
        }
        let local = match (*call.held).params[0] {
            0 => (*table.cast::<WSK_PROVIDER_LISTEN_DISPATCH>()).WskGetLocalAddress,
            1 => (*table.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()).WskGetLocalAddress,
            _ => (*table.cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>()).WskGetLocalAddress,
        };
        let Some(f) = local else {
            return sys::STATUS_NOT_IMPLEMENTED;
        };
        f(call.socket, out, call.irp)
    }
}

/// The local (`remote == false`) or remote address. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn address(handle: &Handle, remote: bool) -> Result<SocketAddr> {
    let name = if remote { "peer_addr" } else { "local_addr" };
    let mut held = Held::empty();
    held.params[0] = kind_code(handle.inner().kind());
    held.params[1] = u32::from(remote);
    let done = Op::new(handle.inner(), CTL, name, held, issue_address).await?;
    check(done.status, done.information, name)?;
    done.held.addr[0]
        .to_socket_addr()
        .ok_or(Error::new(ErrorKind::Other, name))
}

/// `WskControlSocket(WskSetOption, code, level, &value)`.
///
/// # Safety
/// `call.socket` is open; params are [code, level]; the value is `held.value`.
unsafe fn issue_set_option(call: &mut Call) -> NTSTATUS {
    // SAFETY: every table starts with the basic dispatch; the value lives in the slot.
    unsafe {
        let basic = (*call.socket)
            .Dispatch
            .cast::<WSK_PROVIDER_BASIC_DISPATCH>();
        let Some(control) = (*basic).WskControlSocket else {
            return sys::STATUS_NOT_IMPLEMENTED;
        };
        let held = &mut *call.held;
        control(
            call.socket,
            sys::WskSetOption,
            held.params[0],
            held.params[1],
            size_of::<u32>(),
            (&raw mut held.value).cast(),
            0,
            core::ptr::null_mut(),
            // NULL with an IRP ("PFN_WSK_CONTROL_SOCKET callback function (wsk.h)",
            // OutputSizeReturned): the size comes back in IoStatus.Information.
            core::ptr::null_mut(),
            call.irp,
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
    let mut held = Held::empty();
    held.params = [code, level, 0, 0];
    held.value = value;
    let done = Op::new(handle.inner(), CTL, name, held, issue_set_option).await?;
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
