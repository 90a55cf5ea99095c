//! The socket calls that set a socket up or tear it down: `WskCloseSocket`, `WskControlSocket`
//! (socket options), `WskBind`, `WskAccept`, `WskConnect`, `WskInspectComplete`.

use core::ffi::c_void;
use core::sync::atomic::Ordering;
use std::format;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::Interest;
use mio::net::{TcpListener, TcpStream, UdpSocket};

use super::client_calls::refuse_output_size_with_irp;
use super::glue::{bugcheck, require_at_most};
use super::options;
use super::os::{self, linux};
use super::queue::{claim_now, submit};
use super::{
    ClientOut, Done, Host, InCall, Io, Kind, Op, OpKind, Sock, SockHandle, begin, handle_id,
    provider, sock_mut, token,
};
use crate::faults::WskOp;
use crate::{
    DISPATCH_LEVEL, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, IRP, NTSTATUS, PVOID, SIZE_T,
    SO_EXCLUSIVEADDRUSE, SO_KEEPALIVE, SO_REUSEADDR, SOCKADDR, SOL_SOCKET,
    STATUS_ADDRESS_ALREADY_ASSOCIATED, STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED,
    STATUS_INVALID_ADDRESS_COMPONENT, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED, STATUS_SUCCESS, TCP_NODELAY,
    WSK_CONTROL_SOCKET_TYPE, WSK_SOCKET, WskGetOption, WskSetOption,
};

/// Starts connecting a bound socket: `Ok(true)` connected at once, `Ok(false)` in progress.
pub(super) fn start_connect(
    sock: &mut Sock,
    io: &Io,
    remote: &SocketAddr,
) -> Result<bool, NTSTATUS> {
    if matches!(sock.host, Host::MemoryUnbound(_)) {
        let Host::MemoryUnbound(unbound) = core::mem::replace(&mut sock.host, Host::Gone) else {
            return Err(STATUS_INVALID_DEVICE_STATE);
        };
        return match unbound.connect(*remote) {
            Ok(stream) => {
                sock.host = Host::MemoryStream(stream);
                sock.connected = true;
                Ok(true)
            }
            Err((unbound, e)) => {
                sock.host = Host::MemoryUnbound(unbound);
                Err(os::status_of(&e))
            }
        };
    }
    let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
        return Err(STATUS_INVALID_DEVICE_STATE);
    };
    let connected = match os::connect_fd(fd.as_raw_fd(), remote) {
        Ok(c) => c,
        Err(e) => {
            sock.host = Host::Raw(fd);
            return Err(os::status_of(&e));
        }
    };
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(fd));
    if let Err(e) = io.register(
        &mut stream,
        token(sock.id),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        return Err(os::status_of(&e));
    }
    sock.host = Host::Stream(stream);
    sock.connecting = !connected;
    sock.connected = connected;
    Ok(connected)
}

// ---- socket-level dispatch ----

/// `WskCloseSocket`: completes every pending IRP of the socket as cancelled, resets a
/// connection unless both directions are done, and frees the socket once the close IRP has
/// completed. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_close_socket(
    socket: *mut WSK_SOCKET,
    irp: *mut IRP,
) -> NTSTATUS {
    if !socket.is_null() {
        // SAFETY: the client passes its socket (a handle is live until its close completes).
        let handle = unsafe { &*socket.cast::<SockHandle>() };
        let (id, others) = (handle.id, handle.in_call.load(Ordering::SeqCst));
        if others != 0 {
            // See [`InCall`] for the rule and its pages.
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!(
                    "WskCloseSocket on socket {id} while {others} other call(s) on it are in \
                     progress: the application must ensure no other call on the socket is in \
                     progress when it closes it"
                ),
            );
        }
    }
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskCloseSocket", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    let mut st = p.lock();
    let Some(mut sock) = st.sockets.remove(&id) else {
        drop(st);
        bugcheck(
            "WSK_SOCKET_CLOSED",
            format!("WskCloseSocket on socket {id}, which is closed or closing"),
        );
    };
    // "PFN_WSK_CLOSE_SOCKET callback function (wsk.h)": close cancels and completes every
    // pending IRP of the socket: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_close_socket
    if sock.ev.retained_count() != 0 {
        let retained = sock.ev.retained_count();
        sock.ev.forget();
        st.sockets.insert(id, sock);
        drop(st);
        // "PFN_WSK_RELEASE_DATA_INDICATION_LIST callback function (wsk.h)": a retained chain
        // goes back with WskRelease, and no call may follow WskCloseSocket, so one still
        // retained now is leaked: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_release_data_indication_list
        bugcheck(
            "WSK_RETAINED_INDICATION_LEAKED",
            format!(
                "WskCloseSocket on socket {id} with {retained} data indication(s) retained \
                 (STATUS_PENDING from WskReceiveEvent or WskReceiveFromEvent) and never released with WskRelease"
            ),
        );
    }
    for op in sock.take_all() {
        out.dones.extend(claim_now(&op, STATUS_CANCELLED, id));
    }
    // A connection whose graceful disconnect completed is not reset by the close: the
    // disconnect's IRP completes "only when the transport protocol has fully completed the
    // disconnect operation" ("PFN_WSK_DISCONNECT callback function (wsk.h)", remarks:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_disconnect),
    // so there is nothing left for the close to abort. Any other connection is reset.
    let abortive =
        sock.kind == Kind::Connection && (sock.connected || sock.connecting) && !sock.fin_sent;
    sock.release_host(&p.io, abortive);
    let mut close = Done::new(out.irp, STATUS_SUCCESS, 0, id);
    close.free = Some(sock.handle);
    if sock.ev.is_indicating() {
        // An event callback of this socket runs on the reactor: the close completes once it
        // has returned ("PFN_WSK_CLOSE_SOCKET callback function (wsk.h)": no callback after
        // the close completes).
        // SAFETY: the close IRP is the call's own, entered and not completed.
        unsafe { super::glue::mark_pending(out.irp.as_ptr()) };
        out.marked = true;
        if sock.ev.in_flight_released() {
            st.released_in_flight.push(id);
        }
        st.held_closes.insert(id, close);
    } else {
        out.dones.push(close);
    }
    drop(st);
    p.changed.notify_all();
    // A plan's close delay applies on the reactor (`Provider::defer`).
    let inline = inline && p.faults.close_delay.is_none();
    p.finish(out, inline)
}

/// `WskControlSocket`: the socket options `wsk-net` uses. IRQL <= `DISPATCH_LEVEL`.
///
/// Options: of the `SOL_SOCKET` options the page "WSK Socket Options"
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-socket-options>)
/// lists, `SO_REUSEADDR`, `SO_EXCLUSIVEADDRUSE` and `SO_KEEPALIVE`. Beyond that list the host
/// also accepts `IPPROTO_TCP`/`TCP_NODELAY` and `IPPROTO_IPV6`/`IPV6_V6ONLY`: transport and
/// network level options the WSK pages do not document (they say only that "the underlying
/// network protocol might support additional socket options"; the options themselves are
/// documented for user-mode Winsock). A client relying on them depends on Windows' TCP/IP
/// transport, not on a documented WSK behaviour. Buffer sizes, broadcast, linger, multicast
/// membership and the `SIO_WSK_SET_REMOTE_ADDRESS`/`SIO_WSK_SET_SENDTO_ADDRESS` IOCTLs are in
/// `options` (with their pages); other `WskIoctl` codes are `STATUS_NOT_SUPPORTED`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_control_socket(
    socket: *mut WSK_SOCKET,
    request: WSK_CONTROL_SOCKET_TYPE,
    code: u32,
    level: u32,
    in_size: SIZE_T,
    in_buf: PVOID,
    out_size: SIZE_T,
    out_buf: PVOID,
    out_returned: *mut SIZE_T,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskControlSocket", None) };
    // "PFN_WSK_CONTROL_SOCKET callback function (wsk.h)", IRQL <= DISPATCH_LEVEL (the
    // PASSIVE_LEVEL-only SIO_ADDRESS_LIST_* IOCTLs are not implemented here):
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_socket
    require_at_most(DISPATCH_LEVEL, "WskControlSocket");
    // Same page: OutputSizeReturned is NULL unless Irp is NULL (with an IRP the size comes back
    // in IoStatus.Information). A verifier failure, not STATUS_INVALID_PARAMETER: the page
    // states a caller contract and documents no status for breaking it, and what Windows then
    // does with the pointer (write through it when the IRP completes, perhaps after the
    // caller's variable is gone) is undefined.
    refuse_output_size_with_irp("WskControlSocket", irp, out_returned);
    if request == WskSetOption && level == SOL_SOCKET && code == crate::SO_WSK_EVENT_CALLBACK {
        // SAFETY: the client passes its socket, a live IRP or null, and its input buffer.
        return unsafe { set_event_callbacks(socket, in_size, in_buf, irp) };
    }
    if irp.is_null() && options::requires_irp(request, level, code) {
        bugcheck(
            "WSK_CONTROL_SOCKET_WITHOUT_IRP",
            format!(
                "WskControlSocket (type {request}, level {level:#x}, code {code:#x}) without an \
                 IRP: its page says the application must specify a pointer to an IRP"
            ),
        );
    }
    let input_bytes: &[u8] = if in_buf.is_null() {
        &[]
    } else {
        // SAFETY: the client passes `in_size` readable bytes, untouched during the call.
        unsafe { core::slice::from_raw_parts(in_buf.cast::<u8>(), in_size) }
    };
    let input = if in_size >= 4 && !in_buf.is_null() {
        // SAFETY: the client passes `in_size` readable bytes.
        Some(unsafe { in_buf.cast::<u32>().read_unaligned() })
    } else {
        None
    };
    // No output buffer is no room for one.
    let out_size = if out_buf.is_null() { 0 } else { out_size };
    let (status, bytes, value) = if irp.is_null() {
        // SAFETY: the client passes its socket.
        let id = unsafe { handle_id(socket, "WskControlSocket") };
        let p = provider();
        locked_sock!(p, st, sock, id, "WskControlSocket");
        options::control(sock, request, level, code, input_bytes, out_size)
            .unwrap_or_else(|| widen(control(sock, request, level, code, input, out_size)))
    } else {
        // SAFETY: the client passes its socket and a live IRP.
        let started = unsafe { begin("WskControlSocket", socket, core::ptr::null_mut(), irp) };
        let (p, id, inline, mut out) = match started {
            Ok(started) => started,
            Err(status) => return status,
        };
        let result = {
            locked_sock!(p, st, sock, id, "WskControlSocket");
            let result = options::control(sock, request, level, code, input_bytes, out_size)
                .unwrap_or_else(|| widen(control(sock, request, level, code, input, out_size)));
            if result.0 == STATUS_SUCCESS && is_send_buffer_set(request, level, code) {
                // A new send buffer is a new ideal send backlog: a WskSendBacklogEvent may be
                // due, with no readiness to come.
                st.soon.push(id);
            }
            result
        };
        if let Some(v) = result.2 {
            // SAFETY: control checked the output buffer's size against what it returns.
            unsafe { write_output(out_buf, v, result.1) };
        }
        if result.0 == STATUS_SUCCESS && is_send_buffer_set(request, level, code) {
            p.io.wake();
        }
        out.done(result.0, result.1, id);
        return p.finish(out, inline);
    };
    if let Some(v) = value {
        // SAFETY: control checked the output buffer's size against what it returns.
        unsafe { write_output(out_buf, v, bytes) };
    }
    if !out_returned.is_null() {
        // SAFETY: the client passes a writable size or null.
        unsafe { *out_returned = bytes };
    }
    status
}

/// `SO_WSK_EVENT_CALLBACK` (see `events` for its rules): synchronous without an IRP (the only
/// way to enable), completed at once with one, except for a disable of a callback in progress
/// (`STATUS_EVENT_PENDING` without an IRP; with one, `STATUS_PENDING` and the IRP completed
/// once the callback has returned).
///
/// # Safety
/// As `WskControlSocket`: the client's socket, `in_size` readable bytes at `in_buf`, a live IRP
/// or null.
unsafe fn set_event_callbacks(
    socket: *mut WSK_SOCKET,
    in_size: SIZE_T,
    in_buf: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    let control = if in_size >= size_of::<crate::WSK_EVENT_CALLBACK_CONTROL>() && !in_buf.is_null()
    {
        // SAFETY: the client passes `in_size` readable bytes.
        Some(unsafe {
            in_buf
                .cast::<crate::WSK_EVENT_CALLBACK_CONTROL>()
                .read_unaligned()
        })
    } else {
        None
    };
    if irp.is_null() {
        // SAFETY: the client passes its socket.
        let id = unsafe { handle_id(socket, "WskControlSocket") };
        let p = provider();
        let status = {
            locked_sock!(p, st, sock, id, "WskControlSocket");
            let status = super::events::set_event_callbacks(sock, control, false);
            if super::indication_due(&st, id) {
                // Data may already wait in the host socket, with no new readiness to come.
                st.soon.push(id);
            }
            status
        };
        p.io.wake();
        return status;
    }
    if let Some(control) = control {
        // SAFETY: the client passes its socket.
        let id = unsafe { handle_id(socket, "WskControlSocket") };
        super::events::refuse_enabling_with_irp(id, control.EventMask);
    }
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskControlSocket", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    locked_sock!(p, st, sock, id, "WskControlSocket");
    let status = super::events::set_event_callbacks(sock, control, true);
    if status == crate::STATUS_EVENT_PENDING {
        // The callback being disabled is in progress: the IRP completes, with success, once
        // it has returned ("SO_WSK_EVENT_CALLBACK"; see `events::after_callback`).
        // SAFETY: the IRP is the call's own, entered and not completed.
        unsafe { super::glue::mark_pending(out.irp.as_ptr()) };
        out.marked = true;
        st.held_disables
            .push((id, Done::new(out.irp, STATUS_SUCCESS, 0, id)));
        drop(st);
        return p.finish(out, inline);
    }
    drop(st);
    out.done(status, 0, id);
    p.finish(out, inline)
}

/// Whether a request sets `SO_SNDBUF` (after which a send backlog indication may be due).
fn is_send_buffer_set(request: WSK_CONTROL_SOCKET_TYPE, level: u32, code: u32) -> bool {
    request == WskSetOption && level == SOL_SOCKET && code == crate::SO_SNDBUF
}

/// A `control` outcome as an `options::Outcome`.
fn widen((status, bytes, value): (NTSTATUS, usize, Option<u32>)) -> options::Outcome {
    (status, bytes, value.map(u64::from))
}

/// Writes an outcome's value to the client's output: 8 bytes when `bytes` says so (a
/// `SIZE_T`), else 4 (a `ULONG`).
///
/// # Safety
/// `out_buf` has room for `bytes` bytes (4 unless 8), as the outcome's request checked.
unsafe fn write_output(out_buf: PVOID, value: u64, bytes: usize) {
    if bytes == size_of::<u64>() {
        // SAFETY: the caller's room for 8 bytes.
        unsafe { out_buf.cast::<u64>().write_unaligned(value) };
    } else {
        // Every 4-byte outcome was a u32.
        let value = u32::try_from(value).unwrap_or(u32::MAX);
        // SAFETY: the caller's room for 4 bytes.
        unsafe { out_buf.cast::<u32>().write_unaligned(value) };
    }
}

/// Sets or gets one option: (status, bytes returned, value to write to the output).
pub(super) fn control(
    sock: &mut Sock,
    request: WSK_CONTROL_SOCKET_TYPE,
    level: u32,
    code: u32,
    input: Option<u32>,
    out_size: usize,
) -> (NTSTATUS, usize, Option<u32>) {
    if !sock.host.is_open() {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    }
    // In memory the options are bookkeeping: no host socket to set them on.
    let fd = sock.host.fd();
    let host = match (level, code) {
        (SOL_SOCKET, SO_REUSEADDR) => Some((linux::SOL_SOCKET, linux::SO_REUSEADDR)),
        (SOL_SOCKET, SO_KEEPALIVE) => Some((linux::SOL_SOCKET, linux::SO_KEEPALIVE)),
        (IPPROTO_TCP, TCP_NODELAY) => Some((linux::IPPROTO_TCP, linux::TCP_NODELAY)),
        (IPPROTO_IPV6, IPV6_V6ONLY) => Some((linux::IPPROTO_IPV6, linux::IPV6_V6ONLY)),
        (SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => None,
        _ => return (STATUS_NOT_SUPPORTED, 0, None),
    };
    match request {
        WskSetOption => {
            let Some(value) = input else {
                return (STATUS_INVALID_PARAMETER, 0, None);
            };
            let on = value != 0;
            match (level, code) {
                (SOL_SOCKET, SO_REUSEADDR) if on && sock.exclusive => {
                    return (STATUS_INVALID_PARAMETER, 0, None);
                }
                (SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => {
                    if on && sock.reuse {
                        return (STATUS_INVALID_PARAMETER, 0, None);
                    }
                    if sock.bound {
                        return (STATUS_INVALID_DEVICE_STATE, 0, None);
                    }
                    // Linux refuses to bind an address in use unless SO_REUSEADDR is set on
                    // both: exclusive use is what a socket without SO_REUSEADDR gets.
                    sock.exclusive = on;
                    return (STATUS_SUCCESS, 0, None);
                }
                (IPPROTO_IPV6, IPV6_V6ONLY) if !sock.v6 => {
                    return (STATUS_INVALID_PARAMETER, 0, None);
                }
                (IPPROTO_IPV6, IPV6_V6ONLY) if sock.bound => {
                    return (STATUS_INVALID_DEVICE_STATE, 0, None);
                }
                _ => {}
            }
            let (l, n) = host.expect("host option mapped above");
            match fd.map_or(Ok(()), |fd| os::set_int(fd, l, n, i32::from(on))) {
                Ok(()) => {
                    match (level, code) {
                        (SOL_SOCKET, SO_REUSEADDR) => sock.reuse = on,
                        (IPPROTO_TCP, TCP_NODELAY) => sock.nodelay = on,
                        _ => {}
                    }
                    (STATUS_SUCCESS, 0, None)
                }
                Err(e) => (os::status_of(&e), 0, None),
            }
        }
        WskGetOption => {
            if out_size < 4 {
                return (STATUS_BUFFER_TOO_SMALL, 0, None);
            }
            let value = match (host, fd) {
                (None, _) => u32::from(sock.exclusive),
                (Some(_), None) => match (level, code) {
                    (SOL_SOCKET, SO_REUSEADDR) => u32::from(sock.reuse),
                    (IPPROTO_TCP, TCP_NODELAY) => u32::from(sock.nodelay),
                    // New IPv6 sockets are IPv6-only, as on Windows; keep-alive is not kept.
                    (IPPROTO_IPV6, IPV6_V6ONLY) => u32::from(sock.v6),
                    _ => 0,
                },
                (Some((l, n)), Some(fd)) => match os::get_int(fd, l, n) {
                    Ok(v) => u32::from(v != 0),
                    Err(e) => return (os::status_of(&e), 0, None),
                },
            };
            (STATUS_SUCCESS, 4, Some(value))
        }
        _ => (STATUS_NOT_SUPPORTED, 0, None),
    }
}

/// `WskBind`: a listen socket listens once bound, as on Windows. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_bind(
    socket: *mut WSK_SOCKET,
    local: *mut SOCKADDR,
    _flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskBind", Some(WskOp::Bind)) };
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskBind", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Some(status) = p.inject(WskOp::Bind) {
        out.done(status, 0, id);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes a valid address or null.
    let addr = unsafe { crate::read_sockaddr_by_family(local) };
    let status = {
        locked_sock!(p, st, sock, id, "WskBind");
        bind(sock, &p.io, addr)
    };
    out.done(status, 0, id);
    p.finish(out, inline)
}

pub(super) fn bind(sock: &mut Sock, io: &Io, addr: Option<SocketAddr>) -> NTSTATUS {
    let Some(addr) = addr else {
        return STATUS_INVALID_PARAMETER;
    };
    if sock.kind == Kind::Listen && sock.datagram {
        return STATUS_NOT_IMPLEMENTED;
    }
    if sock.bound {
        return STATUS_ADDRESS_ALREADY_ASSOCIATED;
    }
    if !os::family_matches(&addr, sock.v6) {
        return STATUS_INVALID_ADDRESS_COMPONENT;
    }
    if matches!(sock.host, Host::MemoryUnbound(_)) {
        return bind_in_memory(sock, addr);
    }
    let Host::Raw(fd) = &sock.host else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    if let Err(e) = os::bind_fd(fd.as_raw_fd(), &addr) {
        return os::status_of(&e);
    }
    sock.bound = true;
    match sock.kind {
        Kind::Listen => {
            if let Err(e) = os::listen_fd(fd.as_raw_fd()) {
                return os::status_of(&e);
            }
            let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
                return STATUS_INVALID_DEVICE_STATE;
            };
            let mut listener = TcpListener::from_std(std::net::TcpListener::from(fd));
            if let Err(e) = io.register(&mut listener, token(sock.id), Interest::READABLE) {
                return os::status_of(&e);
            }
            sock.host = Host::Listener(listener);
        }
        Kind::Datagram => {
            let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
                return STATUS_INVALID_DEVICE_STATE;
            };
            let mut udp = UdpSocket::from_std(std::net::UdpSocket::from(fd));
            if let Err(e) = io.register(
                &mut udp,
                token(sock.id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                return os::status_of(&e);
            }
            sock.host = Host::Udp(udp);
        }
        Kind::Connection | Kind::Basic => {}
    }
    STATUS_SUCCESS
}

/// `bind` on the in-memory network: the address taken, then listening or receiving
/// datagrams by the socket's kind.
fn bind_in_memory(sock: &mut Sock, addr: SocketAddr) -> NTSTATUS {
    let Host::MemoryUnbound(mut unbound) = core::mem::replace(&mut sock.host, Host::Gone) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    if let Err(e) = unbound.bind(addr) {
        sock.host = Host::MemoryUnbound(unbound);
        return os::status_of(&e);
    }
    let host = match sock.kind {
        Kind::Listen => unbound.listen().map(Host::MemoryListener),
        Kind::Datagram => unbound.datagrams().map(Host::MemoryDatagram),
        Kind::Connection | Kind::Basic => Ok(Host::MemoryUnbound(unbound)),
    };
    match host {
        Ok(host) => {
            sock.host = host;
            sock.bound = true;
            STATUS_SUCCESS
        }
        Err(e) => os::status_of(&e),
    }
}

/// `WskAccept`: queued behind the listener's other pending accepts, each served by the next
/// incoming connection in the order they were issued. IRQL <= `DISPATCH_LEVEL`.
///
/// Several outstanding accepts are allowed: "`PFN_WSK_ACCEPT` callback function (wsk.h)"
/// documents `STATUS_PENDING` as "the IRP has been queued" and speaks of "IRPs queued from
/// pending calls to `WskAccept`". (This verifier used to bugcheck a second outstanding accept,
/// stricter than Windows.)
pub(super) unsafe extern "system-unwind" fn wsk_accept(
    socket: *mut WSK_SOCKET,
    _flags: u32,
    context: PVOID,
    dispatch: *const c_void,
    local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskAccept", Some(WskOp::Accept)) };
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskAccept", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    locked_sock!(p, st, sock, id, "WskAccept");
    if let Some(status) = p.inject(WskOp::Accept) {
        out.done(status, 0, id);
    } else if !sock.host.is_listener() {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        let op = Op::new(
            out.irp,
            OpKind::Accept {
                local: ClientOut(local),
                remote: ClientOut(remote),
                context: context.expose_provenance(),
                dispatch: dispatch.expose_provenance(),
            },
        );
        sock.accepts.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskConnect`: the socket must be bound (else `STATUS_INVALID_DEVICE_STATE`). IRQL <=
/// `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_connect(
    socket: *mut WSK_SOCKET,
    remote: *mut SOCKADDR,
    _flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskConnect", Some(WskOp::Connect)) };
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskConnect", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    // SAFETY: the client passes a valid address or null.
    let remote = unsafe { crate::read_sockaddr_by_family(remote) };
    locked_sock!(p, st, sock, id, "WskConnect");
    if let Some(status) = p.inject(WskOp::Connect) {
        out.done(status, 0, id);
    } else if !sock.bound || sock.connected || sock.connecting {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else if let Some(remote) = remote.filter(|r| os::family_matches(r, sock.v6)) {
        match start_connect(sock, &p.io, &remote) {
            Ok(true) => out.done(STATUS_SUCCESS, 0, id),
            Ok(false) => {
                let op = Op::new(
                    out.irp,
                    OpKind::Connect {
                        info: 0,
                        destroy_on_fail: false,
                    },
                );
                sock.connect = Some(op);
                submit(&mut st, &p.io, id, &mut out);
            }
            Err(status) => out.done(status, 0, id),
        }
    } else {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskInspectComplete`: conditional accept is not supported.
pub(super) unsafe extern "system-unwind" fn wsk_inspect_complete(
    socket: *mut WSK_SOCKET,
    _inspect_id: PVOID,
    _action: i32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskInspectComplete", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    out.done(STATUS_NOT_SUPPORTED, 0, id);
    p.finish(out, inline)
}
