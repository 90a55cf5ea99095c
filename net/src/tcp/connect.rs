//! `WskSocketConnect`: socket, bind and connect in one WSK call, which the WDK recommends
//! "unless the WSK application needs to set socket options or issue I/O control operations
//! before binding or connecting the socket" ("`PFN_WSK_CONNECT` callback function (wsk.h)",
//! <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_connect>).
//! [`TcpStream::connect_from`](super::TcpStream::connect_from) uses it when no option must
//! precede the bind, and falls back to `WskSocket` + `WskBind` + `WskConnect` where the
//! provider does not implement it (Wine 8's netio returns `STATUS_NOT_IMPLEMENTED`).

use core::future::Future;
use core::net::SocketAddr;

use wsk_sys::{self as sys, NTSTATUS};

use super::TcpStream;
use crate::addr::{RawAddr, family_of};
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, Request, SocketInner};
use crate::socket::{self, BindOptions, Handle, check};
use crate::time::{Operation, Target};

/// `WskSocketConnect` of a TCP connection socket bound to `addr[0]` and connected to
/// `addr[1]` ([`Request::SocketConnect`]). IRQL <= `DISPATCH_LEVEL` ("`PFN_WSK_SOCKET_CONNECT`
/// callback function (wsk.h)").
///
/// # Safety
/// `call.irp` is prepared; the addresses live in the slot until completion.
pub(crate) unsafe fn issue_socket_connect(call: &mut Call) -> NTSTATUS {
    let (dispatch, client) = call.client().provider();
    let Some(socket_connect) = dispatch.WskSocketConnect else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    call.client().socket_issued();
    // The socket names its object and the event callbacks, as `WskSocket`'s does
    // (`crate::socket::issue_socket`): receive events need them from creation.
    let (context, events) = match call.held().adopt {
        Some(inner) => super::client_dispatch(inner),
        None => (core::ptr::null_mut(), core::ptr::null()),
    };
    let [local, remote] = &mut call.held().addr;
    let (local, remote) = (local.as_mut_ptr(), remote.as_mut_ptr());
    // SAFETY: the client's provider binding is live; Flags is reserved (zero); no process,
    // thread or security descriptor; a prepared IRP; the addresses live in the slot until
    // completion; the context outlives the socket (the object is freed after its close).
    unsafe {
        socket_connect(
            client,
            sys::SOCK_STREAM,
            sys::IPPROTO_TCP,
            local,
            remote,
            0,
            context,
            events.cast(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// What [`socket_connect`] found.
pub(crate) enum SocketConnect {
    /// `handle` now owns the connected socket.
    Connected,
    /// The provider lacks `WskSocketConnect` (`STATUS_NOT_IMPLEMENTED`/`STATUS_NOT_SUPPORTED`):
    /// `handle` is untouched, still without a WSK socket, for the three-call path.
    Unsupported,
}

/// Creates, binds to `local` and connects to `remote` in one `WskSocketConnect`; the new
/// socket goes to `handle` (which has none yet). Dropping the future in flight cancels the
/// call, and a socket WSK created anyway is closed. IRQL <= `DISPATCH_LEVEL`.
pub(crate) async fn socket_connect(
    handle: &Handle,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<SocketConnect> {
    let mut held = Held::new(Request::SocketConnect);
    held.addr = [RawAddr::from(local), RawAddr::from(remote)];
    held.adopt = Some(handle.adopt_ref());
    let done = Op::new(handle.inner(), CTL, held).before_open().await?;
    match check(done.status, done.information, "connect") {
        Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(SocketConnect::Unsupported),
        other => other?,
    };
    if done.information == 0 {
        return Err(Error::new(ErrorKind::Other, "connect"));
    }
    let child = handle.adopt_ref();
    SocketInner::adopt(child, done.information as *mut sys::WSK_SOCKET);
    // SAFETY: the reference taken just above for the adoption call.
    unsafe { SocketInner::release(child) };
    Ok(SocketConnect::Connected)
}

impl TcpStream {
    /// Connects to `remote` from `local` (a given local address and port; port 0 lets WSK
    /// pick one, the unspecified address lets the route decide), with `options` applied.
    ///
    /// With no option that must precede the bind (`reuse_address`, `exclusive_address`,
    /// `v6_only`), this is one `WskSocketConnect`; `keepalive` is then set on the connected
    /// socket. Otherwise, or where the provider lacks `WskSocketConnect` (it completes with
    /// `STATUS_NOT_IMPLEMENTED` or `STATUS_NOT_SUPPORTED`: Wine 8), the socket is created,
    /// given its options, bound and connected in three calls.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// use wsk_net::{BindOptions, TcpStream};
    /// // Leave through a given interface address; WSK picks the port.
    /// let local = "192.0.2.10:0".parse().unwrap();
    /// let remote = "198.51.100.1:80".parse().unwrap();
    /// let stream = TcpStream::connect_from(client, local, remote, &BindOptions::default()).await?;
    /// # let _ = stream;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::connect`]; `InvalidInput` when `local` and `remote` are of different
    /// families, or for `v6_only` with IPv4; `AddrInUse`/`AddrNotAvailable` for a `local`
    /// address that is taken or not this host's.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL` (the socket object is allocated by the call).
    pub fn connect_from(
        client: &WskClient,
        local: SocketAddr,
        remote: SocketAddr,
        options: &BindOptions,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        let options = *options;
        let handle = if local.is_ipv6() == remote.is_ipv6() {
            Handle::new(client, Kind::Connection)
        } else {
            Err(Error::new(ErrorKind::InvalidInput, "connect"))
        };
        let target = handle
            .as_ref()
            .map_or(Target::Missing, |h| Target::Owned(h.share()));
        Operation::new(target, CTL, "connect", async move {
            let handle = handle?;
            let before_bind =
                options.reuse_address || options.exclusive_address || options.v6_only.is_some();
            if !before_bind
                && let SocketConnect::Connected = socket_connect(&handle, local, remote).await?
            {
                if options.keepalive {
                    socket::set_option(
                        &handle,
                        sys::SOL_SOCKET,
                        sys::SO_KEEPALIVE,
                        1,
                        "SO_KEEPALIVE",
                    )
                    .await?;
                }
                return Ok(Self::established(handle));
            }
            socket::create(&handle, family_of(&remote)).await?;
            socket::apply_bind_options(&handle, &options, remote.is_ipv6()).await?;
            socket::bind(&handle, local).await?;
            let mut held = Held::new(Request::Connect);
            held.addr[1] = RawAddr::from(remote);
            let done = Op::new(handle.inner(), CTL, held).await?;
            check(done.status, done.information, "connect")?;
            Ok(Self::established(handle))
        })
    }
}

impl TcpStream {
    /// Connects to `remote` from `local` with one `WskSocketConnect` and no fallback: for a
    /// driver that wants to know whether the provider has the call (Windows does; Wine 8's
    /// netio does not). [`TcpStream::connect_from`] is the same with the fallback.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// let local = "0.0.0.0:0".parse().unwrap();
    /// let remote = "192.0.2.1:80".parse().unwrap();
    /// match wsk_net::TcpStream::socket_connect(client, local, remote).await {
    ///     Err(e) if e.kind() == wsk_net::ErrorKind::Unsupported => {} // no WskSocketConnect
    ///     other => drop(other?),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Unsupported` where the provider lacks `WskSocketConnect`; otherwise as
    /// [`TcpStream::connect_from`].
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL` (the socket object is allocated by the call).
    pub fn socket_connect(
        client: &WskClient,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Operation<'static, impl Future<Output = Result<Self>> + use<>> {
        let handle = if local.is_ipv6() == remote.is_ipv6() {
            Handle::new(client, Kind::Connection)
        } else {
            Err(Error::new(ErrorKind::InvalidInput, "connect"))
        };
        let target = handle
            .as_ref()
            .map_or(Target::Missing, |h| Target::Owned(h.share()));
        Operation::new(target, CTL, "connect", async move {
            let handle = handle?;
            match socket_connect(&handle, local, remote).await? {
                SocketConnect::Connected => Ok(Self::established(handle)),
                SocketConnect::Unsupported => Err(Error::new(ErrorKind::Unsupported, "connect")),
            }
        })
    }
}
