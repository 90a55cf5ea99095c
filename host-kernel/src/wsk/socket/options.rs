//! The `WskControlSocket` requests beyond the `u32` on/off options of `setup_calls::control`:
//! buffer sizes, broadcast, linger, multicast membership, and the datagram IOCTLs that fix a
//! remote or destination address. Each maps to what Windows' transport does, on the host
//! socket.
//!
//! Pages (WDK, "WSK Socket Options" and "WSK Socket IOCTL Operations"):
//! - `SO_SNDBUF`, `SO_RCVBUF`: <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-sndbuf>,
//!   <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-rcvbuf>: a `ULONG`,
//!   listening, datagram and connection-oriented sockets; an IRP is required.
//! - `SO_BROADCAST`: <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-broadcast>:
//!   a `ULONG` 0 or 1, datagram sockets only; an IRP is required.
//! - `SIO_WSK_SET_REMOTE_ADDRESS`: <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-set-remote-address>:
//!   `WskIoctl`, level 0, input a `SOCKADDR` of the socket's family (empty: clear), datagram
//!   sockets only, after bind; sends go to it unless `WskSendTo` names another address, and
//!   only its datagrams are received; an IRP is required.
//! - `SIO_WSK_SET_SENDTO_ADDRESS`: <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-set-sendto-address>:
//!   as above, but receives stay open to every sender.
//! - `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`: <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/sio-wsk-query-ideal-send-backlog>:
//!   `WskIoctl`, level 0, no input, a `SIZE_T` output; connection-oriented sockets only, after
//!   they are connected; an IRP is required.
//!
//! `SO_LINGER` (`SOL_SOCKET`), `IP_ADD_MEMBERSHIP`/`IP_DROP_MEMBERSHIP` (`IPPROTO_IP`) and
//! `IPV6_JOIN_GROUP`/`IPV6_LEAVE_GROUP` (`IPPROTO_IPV6`) are not on the WSK pages, which leave
//! other options to "the underlying network protocol": they are Winsock's options of the same
//! names (`LINGER`, `IP_MREQ`, `IPV6_MREQ`), which Windows' TCP/IP transport takes through
//! `WskControlSocket` as through `setsockopt`; the host applies them with the same layout.

use std::net::SocketAddr;

use super::os::{self, linux};
use super::{Kind, Sock};
use crate::{
    IP_ADD_MEMBERSHIP, IP_DROP_MEMBERSHIP, IPPROTO_IP, IPPROTO_IPV6, IPV6_JOIN_GROUP,
    IPV6_LEAVE_GROUP, NTSTATUS, SIO_WSK_QUERY_IDEAL_SEND_BACKLOG, SIO_WSK_SET_REMOTE_ADDRESS,
    SIO_WSK_SET_SENDTO_ADDRESS, SO_BROADCAST, SO_LINGER, SO_RCVBUF, SO_SNDBUF, SOL_SOCKET,
    STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS, WSK_CONTROL_SOCKET_TYPE, WskGetOption, WskIoctl,
    WskSetOption,
};

/// The result of one request: status, bytes returned, the value to write to the output buffer
/// in that many bytes (4: a `ULONG` or a `LINGER`; 8: the `SIZE_T` of
/// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`).
pub(super) type Outcome = (NTSTATUS, usize, Option<u64>);

/// True for the requests whose page says "A WSK application must specify a pointer to an
/// IRP": the provider completes them asynchronously only.
pub(super) fn requires_irp(request: WSK_CONTROL_SOCKET_TYPE, level: u32, code: u32) -> bool {
    match request {
        WskSetOption | WskGetOption => {
            level == SOL_SOCKET && matches!(code, SO_SNDBUF | SO_RCVBUF | SO_BROADCAST)
        }
        WskIoctl => matches!(
            code,
            SIO_WSK_SET_REMOTE_ADDRESS
                | SIO_WSK_SET_SENDTO_ADDRESS
                | SIO_WSK_QUERY_IDEAL_SEND_BACKLOG
        ),
        _ => false,
    }
}

/// Handles the requests of this module; `None` for the others (left to
/// `setup_calls::control`).
pub(super) fn control(
    sock: &mut Sock,
    request: WSK_CONTROL_SOCKET_TYPE,
    level: u32,
    code: u32,
    input: &[u8],
    out_size: usize,
) -> Option<Outcome> {
    match (request, level, code) {
        (WskIoctl, _, SIO_WSK_SET_REMOTE_ADDRESS) => Some(fixed_address(sock, input, true)),
        (WskIoctl, _, SIO_WSK_SET_SENDTO_ADDRESS) => Some(fixed_address(sock, input, false)),
        (WskIoctl, _, SIO_WSK_QUERY_IDEAL_SEND_BACKLOG) => Some(ideal_send_backlog(sock, out_size)),
        (WskSetOption | WskGetOption, SOL_SOCKET, SO_SNDBUF | SO_RCVBUF) => {
            let name = if code == SO_SNDBUF {
                linux::SO_SNDBUF
            } else {
                linux::SO_RCVBUF
            };
            Some(buffer_size(sock, request, name, input, out_size))
        }
        (WskSetOption | WskGetOption, SOL_SOCKET, SO_BROADCAST) => {
            if sock.kind != Kind::Datagram {
                return Some((STATUS_NOT_SUPPORTED, 0, None));
            }
            Some(flag(sock, request, linux::SO_BROADCAST, input, out_size))
        }
        (WskSetOption | WskGetOption, SOL_SOCKET, SO_LINGER) => {
            if sock.kind != Kind::Connection {
                return Some((STATUS_NOT_SUPPORTED, 0, None));
            }
            Some(linger(sock, request, input, out_size))
        }
        (WskSetOption, IPPROTO_IP, IP_ADD_MEMBERSHIP | IP_DROP_MEMBERSHIP) => {
            let name = if code == IP_ADD_MEMBERSHIP {
                linux::IP_ADD_MEMBERSHIP
            } else {
                linux::IP_DROP_MEMBERSHIP
            };
            Some(membership(sock, false, linux::IPPROTO_IP, name, input))
        }
        (WskSetOption, IPPROTO_IPV6, IPV6_JOIN_GROUP | IPV6_LEAVE_GROUP) => {
            let name = if code == IPV6_JOIN_GROUP {
                linux::IPV6_ADD_MEMBERSHIP
            } else {
                linux::IPV6_DROP_MEMBERSHIP
            };
            Some(membership(sock, true, linux::IPPROTO_IPV6, name, input))
        }
        _ => None,
    }
}

/// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`: connection sockets only, once connected; a `SIZE_T`
/// output (see `events::ideal_send_backlog` for what the host reports).
fn ideal_send_backlog(sock: &Sock, out_size: usize) -> Outcome {
    if sock.kind != Kind::Connection {
        return (STATUS_NOT_SUPPORTED, 0, None);
    }
    if out_size < size_of::<usize>() {
        return (STATUS_BUFFER_TOO_SMALL, 0, None);
    }
    if !sock.connected {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    }
    match super::events::ideal_send_backlog(sock) {
        Some(size) => (STATUS_SUCCESS, size_of::<usize>(), Some(size as u64)),
        // The in-memory network has no send buffer to size it by.
        None => (STATUS_NOT_SUPPORTED, 0, None),
    }
}

fn status_of(e: &std::io::Error) -> Outcome {
    (os::status_of(e), 0, None)
}

fn input_u32(input: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(input.get(..4)?.try_into().ok()?))
}

/// `SO_SNDBUF`/`SO_RCVBUF`: set as given; read back as set. Linux doubles the value it is
/// given ("the kernel doubles this value (to allow space for bookkeeping overhead)", socket(7))
/// and reports the doubled value, where Windows reports the size set: the read is halved.
fn buffer_size(
    sock: &Sock,
    request: WSK_CONTROL_SOCKET_TYPE,
    name: i32,
    input: &[u8],
    out_size: usize,
) -> Outcome {
    let Some(fd) = sock.host.fd() else {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    };
    if request == WskSetOption {
        let Some(size) = input_u32(input).and_then(|v| i32::try_from(v).ok()) else {
            return (STATUS_INVALID_PARAMETER, 0, None);
        };
        return match os::set_int(fd, linux::SOL_SOCKET, name, size) {
            Ok(()) => (STATUS_SUCCESS, 0, None),
            Err(e) => status_of(&e),
        };
    }
    if out_size < 4 {
        return (STATUS_BUFFER_TOO_SMALL, 0, None);
    }
    match os::get_int(fd, linux::SOL_SOCKET, name) {
        Ok(doubled) => (
            STATUS_SUCCESS,
            4,
            Some(u64::from(doubled.cast_unsigned() / 2)),
        ),
        Err(e) => status_of(&e),
    }
}

/// A `ULONG` 0/1 option (`SO_BROADCAST`).
fn flag(
    sock: &Sock,
    request: WSK_CONTROL_SOCKET_TYPE,
    name: i32,
    input: &[u8],
    out_size: usize,
) -> Outcome {
    let Some(fd) = sock.host.fd() else {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    };
    if request == WskSetOption {
        let Some(value) = input_u32(input) else {
            return (STATUS_INVALID_PARAMETER, 0, None);
        };
        return match os::set_int(fd, linux::SOL_SOCKET, name, i32::from(value != 0)) {
            Ok(()) => (STATUS_SUCCESS, 0, None),
            Err(e) => status_of(&e),
        };
    }
    if out_size < 4 {
        return (STATUS_BUFFER_TOO_SMALL, 0, None);
    }
    match os::get_int(fd, linux::SOL_SOCKET, name) {
        Ok(v) => (STATUS_SUCCESS, 4, Some(u64::from(v != 0))),
        Err(e) => status_of(&e),
    }
}

/// `SO_LINGER`: Winsock's `LINGER` (two `u_short`s) against Linux's `struct linger` (two
/// ints).
fn linger(sock: &Sock, request: WSK_CONTROL_SOCKET_TYPE, input: &[u8], out_size: usize) -> Outcome {
    let Some(fd) = sock.host.fd() else {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    };
    if request == WskSetOption {
        let Some(raw) = input_u32(input) else {
            return (STATUS_INVALID_PARAMETER, 0, None);
        };
        let [on_lo, on_hi, secs_lo, secs_hi] = raw.to_le_bytes();
        let on = i32::from(u16::from_le_bytes([on_lo, on_hi]) != 0);
        let secs = i32::from(u16::from_le_bytes([secs_lo, secs_hi]));
        let mut host = [0u8; 8];
        host[..4].copy_from_slice(&on.to_ne_bytes());
        host[4..].copy_from_slice(&secs.to_ne_bytes());
        return match os::set_bytes(fd, linux::SOL_SOCKET, linux::SO_LINGER, &host) {
            Ok(()) => (STATUS_SUCCESS, 0, None),
            Err(e) => status_of(&e),
        };
    }
    if out_size < 4 {
        return (STATUS_BUFFER_TOO_SMALL, 0, None);
    }
    let mut host = [0u8; 8];
    match os::get_bytes(fd, linux::SOL_SOCKET, linux::SO_LINGER, &mut host) {
        Ok(8) => {
            let on = i32::from_ne_bytes(host[..4].try_into().expect("4 bytes")) != 0;
            let secs = i32::from_ne_bytes(host[4..].try_into().expect("4 bytes"));
            let secs = u16::try_from(secs).unwrap_or(u16::MAX);
            let mut out = [0u8; 4];
            out[..2].copy_from_slice(&u16::from(on).to_le_bytes());
            out[2..].copy_from_slice(&secs.to_le_bytes());
            (STATUS_SUCCESS, 4, Some(u64::from(u32::from_le_bytes(out))))
        }
        Ok(_) => (STATUS_INVALID_DEVICE_STATE, 0, None),
        Err(e) => status_of(&e),
    }
}

/// Multicast join/leave on a bound datagram socket of the matching family: `IP_MREQ` (8 bytes)
/// and Linux's `ip_mreq` share their layout, as do `IPV6_MREQ` (20 bytes) and `ipv6_mreq`.
fn membership(sock: &Sock, v6: bool, level: i32, name: i32, input: &[u8]) -> Outcome {
    if sock.kind != Kind::Datagram {
        return (STATUS_NOT_SUPPORTED, 0, None);
    }
    if sock.v6 != v6 {
        return (STATUS_INVALID_PARAMETER, 0, None);
    }
    let size = if v6 { 20 } else { 8 };
    let Some(request) = input.get(..size) else {
        return (STATUS_INVALID_PARAMETER, 0, None);
    };
    let Some(fd) = sock.host.fd() else {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    };
    match os::set_bytes(fd, level, name, request) {
        Ok(()) => (STATUS_SUCCESS, 0, None),
        Err(e) => status_of(&e),
    }
}

/// `SIO_WSK_SET_REMOTE_ADDRESS` (`filter`: receives are limited to the address too, as the
/// page says; the provider drops other senders' datagrams) or `SIO_WSK_SET_SENDTO_ADDRESS`
/// (destination only, and no filter). An empty input clears both. (Not `connect(2)` on the
/// host socket: dissolving that association again would also unbind a port the system
/// picked, on Linux.)
fn fixed_address(sock: &mut Sock, input: &[u8], filter: bool) -> Outcome {
    if sock.kind != Kind::Datagram {
        return (STATUS_NOT_SUPPORTED, 0, None);
    }
    // "it must do so after the datagram socket has been bound".
    if !sock.host.is_datagram() {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    }
    if input.is_empty() {
        sock.send_to_default = None;
        sock.receive_filter = None;
        return (STATUS_SUCCESS, 0, None);
    }
    let Some(addr) = read_sockaddr(input) else {
        return (STATUS_INVALID_PARAMETER, 0, None);
    };
    if !os::family_matches(&addr, sock.v6) {
        return (STATUS_INVALID_PARAMETER, 0, None);
    }
    sock.send_to_default = Some(addr);
    sock.receive_filter = filter.then_some(addr);
    (STATUS_SUCCESS, 0, None)
}

/// A `SOCKADDR_IN`/`SOCKADDR_IN6` from the client's input bytes (at least as long as its
/// family's structure).
fn read_sockaddr(input: &[u8]) -> Option<SocketAddr> {
    // SAFETY: `input` is `input.len()` readable bytes.
    unsafe { crate::read_sockaddr(input.as_ptr().cast(), input.len()) }
}
