//! The client-level WSK calls (`WSK_PROVIDER_DISPATCH`): `WskSocket`, `WskSocketConnect`,
//! `WskControlClient` (`WSK_SET_STATIC_EVENT_CALLBACKS`), and the checks they share on socket kinds and families.

use core::ffi::c_void;
use std::format;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::MutexGuard;

use super::glue::{bugcheck, require_at_most};
use super::os::{self, linux};
use super::queue::submit;
use super::setup_calls::start_connect;
use super::{Host, Io, Kind, Op, OpKind, State, begin, new_sock};
use crate::faults::{Resource, WskOp, fail_allocation};
use crate::{
    AF_INET, AF_INET6, DISPATCH_LEVEL, GUID, IRP, NPI_WSK_INTERFACE_ID, NTSTATUS, PEPROCESS,
    PETHREAD, PVOID, SIZE_T, SOCK_DGRAM, SOCK_STREAM, SOCKADDR, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS, WSK_CLIENT,
    WSK_EVENT_CALLBACK_CONTROL, WSK_FLAG_BASIC_SOCKET, WSK_FLAG_CONNECTION_SOCKET,
    WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_STREAM_SOCKET,
    WSK_SET_STATIC_EVENT_CALLBACKS,
};

/// Creates a host socket for `kind`; IPv6 sockets start IPv6-only, as on Windows. Where the
/// low-resources simulation fails the driver's socket creation, `STATUS_INSUFFICIENT_RESOURCES`
/// (what Windows' provider completes `WskSocket` with when it cannot allocate the socket).
pub(super) fn host_socket(io: &Io, datagram: bool, v6: bool) -> Result<Host, NTSTATUS> {
    if fail_allocation(Resource::Socket) {
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    }
    if let Io::Memory(net) = io {
        return Ok(Host::MemoryUnbound(net.unbound(datagram)));
    }
    let fd = os::new_socket(v6, datagram).map_err(|e| os::status_of(&e))?;
    if v6 {
        os::set_int(fd.as_raw_fd(), linux::IPPROTO_IPV6, linux::IPV6_V6ONLY, 1)
            .map_err(|e| os::status_of(&e))?;
    }
    Ok(Host::Raw(fd))
}

/// Binds a created socket (host or in memory) to `local`.
fn bind_created(host: &mut Host, local: &SocketAddr) -> std::io::Result<()> {
    match host {
        Host::Raw(fd) => os::bind_fd(fd.as_raw_fd(), local),
        Host::MemoryUnbound(unbound) => unbound.bind(*local),
        _ => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    }
}

pub(super) fn kind_of(flags: u32, socket_type: u16) -> Result<Kind, NTSTATUS> {
    let kind = match flags
        & (WSK_FLAG_LISTEN_SOCKET
            | WSK_FLAG_CONNECTION_SOCKET
            | WSK_FLAG_DATAGRAM_SOCKET
            | WSK_FLAG_STREAM_SOCKET)
    {
        WSK_FLAG_BASIC_SOCKET => Kind::Basic,
        WSK_FLAG_LISTEN_SOCKET => Kind::Listen,
        WSK_FLAG_CONNECTION_SOCKET => Kind::Connection,
        WSK_FLAG_DATAGRAM_SOCKET => Kind::Datagram,
        WSK_FLAG_STREAM_SOCKET => return Err(STATUS_NOT_SUPPORTED),
        _ => return Err(STATUS_INVALID_PARAMETER),
    };
    // Windows creates a listen socket of SOCK_DGRAM (its bind then fails with
    // STATUS_NOT_IMPLEMENTED), as Wine's conformance test records.
    let ok = match kind {
        Kind::Connection => socket_type == SOCK_STREAM,
        Kind::Datagram => socket_type == SOCK_DGRAM,
        Kind::Listen | Kind::Basic => socket_type == SOCK_STREAM || socket_type == SOCK_DGRAM,
    };
    if ok {
        Ok(kind)
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

pub(super) fn family_v6(family: u16) -> Result<bool, NTSTATUS> {
    match family {
        AF_INET => Ok(false),
        AF_INET6 => Ok(true),
        _ => Err(STATUS_INVALID_PARAMETER),
    }
}

// ---- client-level dispatch ----

/// The registration behind `client`, with the provider lock; the verifier fails an unknown
/// client handle (after letting go of the lock, which its report may need).
fn registered_owner<'a>(
    st: MutexGuard<'a, State>,
    client: *mut WSK_CLIENT,
    function: &'static str,
) -> (MutexGuard<'a, State>, u64) {
    match super::super::client_id(&st, client, function) {
        Ok(owner) => (st, owner),
        Err(detail) => {
            drop(st);
            bugcheck("WSK_INVALID_CLIENT", detail);
        }
    }
}

/// `WskSocket`. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_socket(
    client: *mut WSK_CLIENT,
    family: u16,
    socket_type: u16,
    _protocol: u32,
    flags: u32,
    context: PVOID,
    dispatch: *const c_void,
    _process: PEPROCESS,
    _thread: PETHREAD,
    _security: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes a live IRP with a provider stack location.
    let started = unsafe { begin("WskSocket", core::ptr::null_mut(), client, irp) };
    let (p, _, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Some(status) = p.inject(WskOp::Socket) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    let (mut st, owner) = registered_owner(p.lock(), client, "WskSocket");
    let created = kind_of(flags, socket_type).and_then(|kind| {
        let v6 = family_v6(family)?;
        Ok((kind, v6, host_socket(&p.io, socket_type == SOCK_DGRAM, v6)?))
    });
    match created {
        Ok((kind, v6, host)) => {
            let id = st.new_id();
            let mut sock = new_sock(id, owner, kind, v6, host);
            sock.datagram = socket_type == SOCK_DGRAM;
            sock.ev.context = context.expose_provenance();
            sock.ev.dispatch = dispatch.expose_provenance();
            super::events::apply_static(&mut sock, created_by(&mut st, owner));
            let handle = sock.handle.information();
            st.sockets.insert(id, sock);
            out.done(STATUS_SUCCESS, handle, id);
        }
        Err(status) => out.done(status, 0, 0),
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskSocketConnect`: socket, bind, connect in one call. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_socket_connect(
    client: *mut WSK_CLIENT,
    socket_type: u16,
    _protocol: u32,
    local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    _flags: u32,
    context: PVOID,
    dispatch: *const c_void,
    _process: PEPROCESS,
    _thread: PETHREAD,
    _security: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes a live IRP with a provider stack location.
    let started = unsafe { begin("WskSocketConnect", core::ptr::null_mut(), client, irp) };
    let (p, _, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Some(status) = p.inject(WskOp::Connect) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes a valid address (or null).
    let local = unsafe { crate::read_sockaddr_by_family(local) };
    // SAFETY: as above.
    let remote = unsafe { crate::read_sockaddr_by_family(remote) };
    let (mut st, owner) = registered_owner(p.lock(), client, "WskSocketConnect");
    let (Some(local), Some(remote)) = (local, remote) else {
        out.done(STATUS_INVALID_PARAMETER, 0, 0);
        drop(st);
        return p.finish(out, inline);
    };
    let v6 = remote.is_ipv6();
    if socket_type != SOCK_STREAM || !os::family_matches(&local, v6) {
        out.done(STATUS_INVALID_PARAMETER, 0, 0);
        drop(st);
        return p.finish(out, inline);
    }
    let mut host = match host_socket(&p.io, false, v6) {
        Ok(host) => host,
        Err(status) => {
            out.done(status, 0, 0);
            drop(st);
            return p.finish(out, inline);
        }
    };
    if let Err(e) = bind_created(&mut host, &local) {
        out.done(os::status_of(&e), 0, 0);
        drop(st);
        return p.finish(out, inline);
    }
    let id = st.new_id();
    let mut sock = new_sock(id, owner, Kind::Connection, v6, host);
    sock.bound = true;
    sock.ev.context = context.expose_provenance();
    sock.ev.dispatch = dispatch.expose_provenance();
    super::events::apply_static(&mut sock, created_by(&mut st, owner));
    let handle = sock.handle;
    let info = handle.information();
    match start_connect(&mut sock, &p.io, &remote) {
        Ok(true) => {
            st.sockets.insert(id, sock);
            out.done(STATUS_SUCCESS, info, id);
        }
        Ok(false) => {
            let op = Op::new(
                out.irp,
                OpKind::Connect {
                    info,
                    destroy_on_fail: true,
                },
            );
            sock.connect = Some(op);
            st.sockets.insert(id, sock);
            // The cancel routine finds a queued IRP's socket by the id in its driver context,
            // which `begin` set to 0 for this client-level call: without the new socket's id
            // a cancelled WskSocketConnect would complete and leave its socket behind, open,
            // where the page says a failed WskSocketConnect leaves no socket ("the IRP will
            // be completed with failure status", no socket object returned).
            let context = usize::try_from(id).unwrap_or(0) as PVOID;
            // SAFETY: the IRP is live and the provider's (entered by `begin`), not yet queued
            // where the cancel routine could read its tail.
            let tail = unsafe { &mut (*out.irp.as_ptr()).Tail };
            // SAFETY: while the IRP is in flight `Overlay` is the union's member in use, and
            // the driver context of the provider's location is ours.
            unsafe { tail.Overlay.DriverContext[0] = context };
            submit(&mut st, &p.io, id, &mut out);
        }
        Err(status) => {
            sock.release_host(&p.io, false);
            // SAFETY: the socket was just created and never given out.
            unsafe { handle.free() };
            out.done(status, 0, 0);
        }
    }
    drop(st);
    p.finish(out, inline)
}

/// Notes that client `owner` created a socket: its static event callbacks (to enable on it).
fn created_by(st: &mut State, owner: u64) -> u32 {
    st.regs.get_mut(&owner).map_or(0, |reg| {
        reg.created_socket = true;
        reg.static_events
    })
}

/// `WskControlClient`: `WSK_SET_STATIC_EVENT_CALLBACKS`; the other client-level controls are
/// not implemented (`STATUS_NOT_SUPPORTED`). IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_control_client(
    client: *mut WSK_CLIENT,
    code: u32,
    in_size: SIZE_T,
    in_buf: PVOID,
    _out_size: SIZE_T,
    _out_buf: PVOID,
    out_returned: *mut SIZE_T,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_CONTROL_CLIENT callback function (wsk.h)", IRQL <= DISPATCH_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_client
    require_at_most(DISPATCH_LEVEL, "WskControlClient");
    // Same page, as for WskControlSocket: OutputSizeReturned is NULL unless Irp is NULL.
    refuse_output_size_with_irp("WskControlClient", irp, out_returned);
    if !out_returned.is_null() {
        // SAFETY: the client passes a writable size or null.
        unsafe { *out_returned = 0 };
    }
    if code == WSK_SET_STATIC_EVENT_CALLBACKS {
        // SAFETY: the client passes `in_size` readable bytes at `in_buf` (or null).
        return unsafe { set_static_event_callbacks(client, in_size, in_buf, irp) };
    }
    if irp.is_null() {
        return STATUS_NOT_SUPPORTED;
    }
    // SAFETY: the client passes a live IRP with a provider stack location.
    let started = unsafe { begin("WskControlClient", core::ptr::null_mut(), client, irp) };
    let (p, _, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    out.done(STATUS_NOT_SUPPORTED, 0, 0);
    p.finish(out, inline)
}

/// `WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)`
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-set-static-event-callbacks>):
/// the events of the input's `EventMask` are enabled on every socket the client creates from
/// now on, each on the sockets of its category whose client dispatch table has its callback
/// (see `events::apply_static`), for good: `SO_WSK_EVENT_CALLBACK` cannot disable them (it
/// fails with `STATUS_INVALID_PARAMETER`) and may still enable and disable the socket's other
/// events. The input is checked as `SO_WSK_EVENT_CALLBACK`'s (`NpiId` `NPI_WSK_INTERFACE_ID`,
/// else `STATUS_NOT_SUPPORTED`; no `WSK_EVENT_DISABLE` and only standard events, else
/// `STATUS_INVALID_PARAMETER`). A later call before any socket replaces the set.
///
/// The page's two caller rules, for which it documents no status, are verifier failures (as
/// `OutputSizeReturned` with an IRP is): "The Irp parameter must be NULL for this client
/// control operation" (`WSK_STATIC_EVENTS_WITH_IRP`), and the operation "must [be done]
/// before it creates any sockets" (`WSK_STATIC_EVENTS_AFTER_SOCKET`: a socket created before
/// would silently lack the callbacks the client counts on).
///
/// # Safety
/// As `WskControlClient`: `in_size` readable bytes at `in_buf` (or null).
unsafe fn set_static_event_callbacks(
    client: *mut WSK_CLIENT,
    in_size: SIZE_T,
    in_buf: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    if !irp.is_null() {
        bugcheck(
            "WSK_STATIC_EVENTS_WITH_IRP",
            format!(
                "WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS) with IRP {irp:p}: \"The Irp \
                 parameter must be NULL for this client control operation\""
            ),
        );
    }
    if in_buf.is_null() || in_size < size_of::<WSK_EVENT_CALLBACK_CONTROL>() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client passes `in_size` readable bytes, enough for the structure.
    let control = unsafe { in_buf.cast::<WSK_EVENT_CALLBACK_CONTROL>().read_unaligned() };
    if control.NpiId.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client passes a pointer to an NPI identifier.
    let npi: GUID = unsafe { control.NpiId.read_unaligned() };
    if npi != NPI_WSK_INTERFACE_ID {
        return STATUS_NOT_SUPPORTED;
    }
    let mask = control.EventMask;
    if mask == 0 || mask & !super::events::STATIC_EVENTS != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    let p = super::provider();
    let (mut st, owner) = registered_owner(p.lock(), client, "WskControlClient");
    let Some(reg) = st.regs.get_mut(&owner) else {
        return STATUS_INVALID_PARAMETER;
    };
    if reg.created_socket {
        drop(st);
        bugcheck(
            "WSK_STATIC_EVENTS_AFTER_SOCKET",
            format!(
                "WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS) by client {owner} after it \
                 created a socket: \"If a WSK application uses the \
                 WSK_SET_STATIC_EVENT_CALLBACKS client control operation, it must do so before \
                 it creates any sockets\""
            ),
        );
    }
    reg.static_events = mask;
    STATUS_SUCCESS
}

/// `OutputSizeReturned` must be NULL when an IRP is given (the size comes back in
/// `IoStatus.Information`): `PFN_WSK_CONTROL_SOCKET` and `PFN_WSK_CONTROL_CLIENT` pages.
pub(super) fn refuse_output_size_with_irp(
    function: &'static str,
    irp: *mut IRP,
    out_returned: *mut SIZE_T,
) {
    if !irp.is_null() && !out_returned.is_null() {
        bugcheck(
            "WSK_OUTPUT_SIZE_RETURNED_WITH_IRP",
            format!(
                "{function} with both an IRP and OutputSizeReturned {out_returned:p}: it must be \
                 NULL when an IRP is given"
            ),
        );
    }
}
