//! The few socket calls std does not offer (a socket that is bound before it connects or
//! listens, options before bind, `SO_LINGER`), declared against the C library std already
//! links, plus address conversion between WSK's `SOCKADDR_IN`/`SOCKADDR_IN6` and the host's.

use core::ffi::{c_int, c_void};
use std::io;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{
    IN_ADDR, NTSTATUS, SOCKADDR_IN, SOCKADDR_IN6, STATUS_ACCESS_DENIED,
    STATUS_ADDRESS_ALREADY_EXISTS, STATUS_CONNECTION_ABORTED, STATUS_CONNECTION_REFUSED,
    STATUS_CONNECTION_RESET, STATUS_HOST_UNREACHABLE, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_ADDRESS_COMPONENT, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_IO_TIMEOUT, STATUS_NETWORK_UNREACHABLE, STATUS_NOT_SUPPORTED,
    STATUS_UNSUCCESSFUL,
};

unsafe extern "C" {
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fn connect(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: u32) -> c_int;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut u32)
    -> c_int;
    fn getnameinfo(
        addr: *const c_void,
        len: u32,
        host: *mut u8,
        host_len: u32,
        service: *mut u8,
        service_len: u32,
        flags: c_int,
    ) -> c_int;
}

/// Linux's values (x86-64 and aarch64 share them).
pub(super) mod linux {
    use core::ffi::c_int;
    pub const AF_INET: c_int = 2;
    pub const AF_INET6: c_int = 10;
    pub const SOCK_STREAM: c_int = 1;
    pub const SOCK_DGRAM: c_int = 2;
    pub const SOCK_NONBLOCK: c_int = 0o4000;
    pub const SOCK_CLOEXEC: c_int = 0o2_000_000;
    pub const SOL_SOCKET: c_int = 1;
    pub const SO_REUSEADDR: c_int = 2;
    pub const SO_KEEPALIVE: c_int = 9;
    pub const SO_LINGER: c_int = 13;
    pub const IPPROTO_TCP: c_int = 6;
    pub const TCP_NODELAY: c_int = 1;
    pub const IPPROTO_IPV6: c_int = 41;
    pub const IPV6_V6ONLY: c_int = 26;
    pub const SO_BROADCAST: c_int = 6;
    pub const SO_SNDBUF: c_int = 7;
    pub const SO_RCVBUF: c_int = 8;
    pub const IPPROTO_IP: c_int = 0;
    pub const IP_ADD_MEMBERSHIP: c_int = 35;
    pub const IP_DROP_MEMBERSHIP: c_int = 36;
    pub const IPV6_ADD_MEMBERSHIP: c_int = 20;
    pub const IPV6_DROP_MEMBERSHIP: c_int = 21;
    pub const EINPROGRESS: i32 = 115;
    pub const NI_NUMERICHOST: c_int = 1;
    pub const NI_NUMERICSERV: c_int = 2;
    pub const NI_NOFQDN: c_int = 4;
    pub const NI_NAMEREQD: c_int = 8;
    pub const NI_DGRAM: c_int = 16;
    /// `getnameinfo`'s "the host buffer is too small".
    pub const EAI_OVERFLOW: i32 = -12;
}

/// `socklen_t` of an int option.
const SOCKLEN_INT: u32 = 4;
/// `socklen_t` of `struct linger`.
const SOCKLEN_LINGER: u32 = 8;

fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A new non-blocking, close-on-exec socket.
pub(super) fn new_socket(v6: bool, datagram: bool) -> io::Result<OwnedFd> {
    let domain = if v6 { linux::AF_INET6 } else { linux::AF_INET };
    let kind = if datagram {
        linux::SOCK_DGRAM
    } else {
        linux::SOCK_STREAM
    };
    // SAFETY: plain syscall wrapper; no pointers.
    let fd = unsafe { socket(domain, kind | linux::SOCK_NONBLOCK | linux::SOCK_CLOEXEC, 0) };
    check(fd)?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The host's `sockaddr_in`/`sockaddr_in6`: WSK's layout with Linux's family numbers.
#[repr(C)]
union HostAddr {
    v4: SOCKADDR_IN,
    v6: SOCKADDR_IN6,
}

fn host_addr(addr: &SocketAddr) -> (HostAddr, u32) {
    match addr {
        SocketAddr::V4(a) => (
            HostAddr {
                v4: SOCKADDR_IN {
                    sin_family: 2,
                    sin_port: a.port().to_be(),
                    sin_addr: IN_ADDR {
                        s_b: a.ip().octets(),
                    },
                    sin_zero: [0; 8],
                },
            },
            16,
        ),
        SocketAddr::V6(a) => (
            HostAddr {
                v6: SOCKADDR_IN6 {
                    sin6_family: 10,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: a.ip().octets(),
                    sin6_scope_id: a.scope_id(),
                },
            },
            28,
        ),
    }
}

/// What `getnameinfo(3)` is asked for: Linux's `NI_*` bits, which differ from Windows'.
#[derive(Debug, Clone, Copy, Default)]
#[allow(clippy::struct_excessive_bools, reason = "one bool per NI_ flag")]
pub(super) struct NameInfoFlags {
    pub numeric_host: bool,
    pub numeric_service: bool,
    pub name_required: bool,
    pub no_fqdn: bool,
    pub datagram: bool,
}

/// `getnameinfo(3)` on the host resolver (blocks: `PASSIVE_LEVEL` callers only): the host
/// and service names of `addr`, or the `EAI_*` code it failed with.
pub(super) fn name_info(
    addr: &SocketAddr,
    flags: NameInfoFlags,
) -> Result<(std::string::String, std::string::String), c_int> {
    let mut bits = 0;
    for (on, bit) in [
        (flags.numeric_host, linux::NI_NUMERICHOST),
        (flags.numeric_service, linux::NI_NUMERICSERV),
        (flags.name_required, linux::NI_NAMEREQD),
        (flags.no_fqdn, linux::NI_NOFQDN),
        (flags.datagram, linux::NI_DGRAM),
    ] {
        if on {
            bits |= bit;
        }
    }
    let (raw, len) = host_addr(addr);
    let mut host = [0u8; 1025];
    let mut service = [0u8; 32];
    // SAFETY: `raw` holds `len` bytes of a host socket address; both output buffers are
    // writable for the lengths given, and getnameinfo NUL-terminates within them.
    let ret = unsafe {
        getnameinfo(
            (&raw const raw).cast(),
            len,
            host.as_mut_ptr(),
            1025,
            service.as_mut_ptr(),
            32,
            bits,
        )
    };
    if ret != 0 {
        return Err(ret);
    }
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::string::String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    Ok((text(&host), text(&service)))
}

/// The canonical name `getaddrinfo(3)` with `AI_CANONNAME` gives for `node` on the host
/// resolver (blocks: `PASSIVE_LEVEL` callers only), or `None` when it fails or gives none.
pub(super) fn canonical_name(node: &str) -> Option<std::string::String> {
    let node = std::ffi::CString::new(node).ok()?;
    // SAFETY: an all-zero addrinfo is the "no preference" hints getaddrinfo(3) documents.
    let mut hints: libc::addrinfo = unsafe { core::mem::zeroed() };
    hints.ai_flags = libc::AI_CANONNAME;
    let mut list: *mut libc::addrinfo = core::ptr::null_mut();
    // SAFETY: a NUL-terminated node, no service, valid hints and result pointer.
    let ret = unsafe {
        libc::getaddrinfo(
            node.as_ptr(),
            core::ptr::null(),
            &raw const hints,
            &raw mut list,
        )
    };
    if ret != 0 || list.is_null() {
        return None;
    }
    // SAFETY: getaddrinfo succeeded: `list` is its first entry, live until freed below.
    let canon = unsafe { (*list).ai_canonname };
    let name = (!canon.is_null()).then(|| {
        // SAFETY: a NUL-terminated string of the live list.
        unsafe { core::ffi::CStr::from_ptr(canon) }
            .to_string_lossy()
            .into_owned()
    });
    // SAFETY: the list getaddrinfo returned, freed once.
    unsafe { libc::freeaddrinfo(list) };
    name
}

/// `sendmsg(2)` of one datagram to `to` from the source address `from` (and interface
/// `interface`, 0: any): Linux's `IP_PKTINFO`/`IPV6_PKTINFO` control message, which the
/// `IN_PKTINFO`/`IN6_PKTINFO` of a `WskSendMessages` become.
pub(super) fn send_from(
    socket: &impl AsRawFd,
    data: &[u8],
    to: SocketAddr,
    from: std::net::IpAddr,
    interface: u32,
) -> io::Result<usize> {
    let (raw, len) = host_addr(&to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // Room for either packet-info control message, u64-aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    let (level, kind, payload): (c_int, c_int, Vec<u8>) = match from {
        std::net::IpAddr::V4(v4) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: c_int::try_from(interface).unwrap_or(0),
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: a plain C struct, viewed as its bytes.
            let bytes = unsafe {
                core::slice::from_raw_parts((&raw const info).cast::<u8>(), size_of_val(&info))
            };
            (libc::IPPROTO_IP, libc::IP_PKTINFO, bytes.to_vec())
        }
        std::net::IpAddr::V6(v6) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: interface,
            };
            // SAFETY: a plain C struct, viewed as its bytes.
            let bytes = unsafe {
                core::slice::from_raw_parts((&raw const info).cast::<u8>(), size_of_val(&info))
            };
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, bytes.to_vec())
        }
    };
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload_len) } as usize;
    // SAFETY: an all-zero msghdr is a valid empty one; filled in below.
    let mut message: libc::msghdr = unsafe { core::mem::zeroed() };
    message.msg_name = (&raw const raw).cast_mut().cast();
    message.msg_namelen = len;
    message.msg_iov = &raw mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space.min(size_of_val(&control));
    // SAFETY: the message's control buffer holds one control message of `space` bytes.
    let header = unsafe { libc::CMSG_FIRSTHDR(&raw const message) };
    if header.is_null() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: CMSG_LEN only computes a size.
    let cmsg_len = unsafe { libc::CMSG_LEN(payload_len) } as usize;
    // SAFETY: `header` is the first control message's header, inside `control`.
    unsafe {
        header.write(libc::cmsghdr {
            cmsg_len,
            cmsg_level: level,
            cmsg_type: kind,
        });
    }
    // SAFETY: the data of that control message, with room for `payload` (CMSG_SPACE).
    let data_at = unsafe { libc::CMSG_DATA(header) };
    // SAFETY: as above: `payload.len()` bytes fit after the header.
    unsafe { core::ptr::copy_nonoverlapping(payload.as_ptr(), data_at, payload.len()) };
    // SAFETY: a valid message whose name, buffer and control live across the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &raw const message, 0) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(usize::try_from(sent).unwrap_or(0))
    }
}

/// `bind(2)`.
pub(super) fn bind_fd(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (raw, len) = host_addr(addr);
    // SAFETY: `raw` holds `len` valid bytes of a host socket address.
    check(unsafe { bind(fd, (&raw const raw).cast(), len) })
}

/// `connect(2)` on a non-blocking socket: `Ok(true)` connected, `Ok(false)` in progress.
pub(super) fn connect_fd(fd: RawFd, addr: &SocketAddr) -> io::Result<bool> {
    let (raw, len) = host_addr(addr);
    // SAFETY: `raw` holds `len` valid bytes of a host socket address.
    match check(unsafe { connect(fd, (&raw const raw).cast(), len) }) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(linux::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `listen(2)`.
pub(super) fn listen_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain syscall wrapper.
    check(unsafe { listen(fd, 128) })
}

/// Sets an integer socket option.
pub(super) fn set_int(fd: RawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: `value` is a live c_int for the call.
    check(unsafe { setsockopt(fd, level, name, (&raw const value).cast(), SOCKLEN_INT) })
}

/// Reads an integer socket option.
pub(super) fn get_int(fd: RawFd, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = SOCKLEN_INT;
    // SAFETY: `value` and `len` are live for the call and `len` is `value`'s size.
    check(unsafe { getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) })?;
    Ok(value)
}

/// Sets a socket option from raw bytes (a `struct linger`, `ip_mreq`, `ipv6_mreq`).
pub(super) fn set_bytes(fd: RawFd, level: c_int, name: c_int, value: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(value.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is `len` live bytes for the call.
    check(unsafe { setsockopt(fd, level, name, value.as_ptr().cast(), len) })
}

/// Reads a socket option into `value`; the length the host wrote.
pub(super) fn get_bytes(
    fd: RawFd,
    level: c_int,
    name: c_int,
    value: &mut [u8],
) -> io::Result<usize> {
    let mut len =
        u32::try_from(value.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is `len` writable bytes and `len` is live for the call.
    check(unsafe { getsockopt(fd, level, name, value.as_mut_ptr().cast(), &raw mut len) })?;
    Ok(len as usize)
}

/// `SO_LINGER` {on, 0}: closing the descriptor then resets the connection.
pub(super) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger: [c_int; 2] = [1, 0];
    // SAFETY: `linger` is a live `struct linger` for the call.
    check(unsafe {
        setsockopt(
            fd,
            linux::SOL_SOCKET,
            linux::SO_LINGER,
            linger.as_ptr().cast(),
            SOCKLEN_LINGER,
        )
    })
}

/// Borrows `fd` as a std stream for the calls std offers on any socket (names, errors).
fn with_std<R>(fd: &impl AsRawFd, f: impl FnOnce(&std::net::TcpStream) -> R) -> R {
    // SAFETY: ManuallyDrop never closes the descriptor, which stays owned by `fd`.
    let stream = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd.as_raw_fd()) });
    f(&stream)
}

/// `getsockname(2)`.
pub(super) fn local_addr(fd: &impl AsRawFd) -> io::Result<SocketAddr> {
    with_std(fd, std::net::TcpStream::local_addr)
}

/// `getpeername(2)`.
pub(super) fn peer_addr(fd: &impl AsRawFd) -> io::Result<SocketAddr> {
    with_std(fd, std::net::TcpStream::peer_addr)
}

/// `SO_ERROR`.
pub(super) fn take_error(fd: &impl AsRawFd) -> io::Result<Option<io::Error>> {
    with_std(fd, std::net::TcpStream::take_error)
}

/// `shutdown(SHUT_WR)`.
pub(super) fn shutdown_write(fd: &impl AsRawFd) -> io::Result<()> {
    with_std(fd, |s| s.shutdown(std::net::Shutdown::Write))
}

/// The NTSTATUS WSK reports for a host socket error: the specific status Windows' transport
/// completes the same condition with, `STATUS_UNSUCCESSFUL` only for an errno with no
/// counterpart. Host resource exhaustion (out of descriptors, system file table full, no
/// buffer space, no memory) is `STATUS_INSUFFICIENT_RESOURCES` ("insufficient system resources
/// exist to complete the API", "[MS-ERREF] 2.3.1 NTSTATUS Values" in the Windows protocols
/// reference, learn.microsoft.com/openspecs/windows_protocols/ms-erref), as a WSK call that cannot allocate its socket object or IRP reports it.
/// ENOTCONN and EPIPE reach here only on a connection that existed (the provider refuses
/// calls on unconnected sockets itself, and a connect in progress is checked before): the
/// peer reset it, so they are `STATUS_CONNECTION_RESET`, as the transport completes a send or
/// disconnect on a reset connection.
pub(super) fn status_of(e: &io::Error) -> NTSTATUS {
    use io::ErrorKind as K;
    // Linux errno values (x86-64 and aarch64 share them) for conditions io::ErrorKind
    // leaves uncategorised.
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    const EBADF: i32 = 9;
    const ENOTSOCK: i32 = 88;
    const EMSGSIZE: i32 = 90;
    const EPROTONOSUPPORT: i32 = 93;
    const EOPNOTSUPP: i32 = 95;
    const EAFNOSUPPORT: i32 = 97;
    const EISCONN: i32 = 106;
    const EHOSTDOWN: i32 = 112;
    match e.raw_os_error() {
        Some(ENOMEM | ENFILE | EMFILE | ENOBUFS) => return STATUS_INSUFFICIENT_RESOURCES,
        Some(EBADF | ENOTSOCK) => return STATUS_INVALID_HANDLE,
        Some(EMSGSIZE) => return STATUS_INVALID_PARAMETER,
        Some(EPROTONOSUPPORT | EOPNOTSUPP | EAFNOSUPPORT) => return STATUS_NOT_SUPPORTED,
        Some(EISCONN) => return STATUS_INVALID_DEVICE_STATE,
        Some(EHOSTDOWN) => return STATUS_HOST_UNREACHABLE,
        _ => {}
    }
    match e.kind() {
        K::ConnectionRefused => STATUS_CONNECTION_REFUSED,
        K::ConnectionReset | K::BrokenPipe | K::NotConnected => STATUS_CONNECTION_RESET,
        K::ConnectionAborted => STATUS_CONNECTION_ABORTED,
        K::AddrInUse => STATUS_ADDRESS_ALREADY_EXISTS,
        K::AddrNotAvailable => STATUS_INVALID_ADDRESS_COMPONENT,
        K::HostUnreachable => STATUS_HOST_UNREACHABLE,
        K::NetworkUnreachable | K::NetworkDown => STATUS_NETWORK_UNREACHABLE,
        K::TimedOut => STATUS_IO_TIMEOUT,
        K::PermissionDenied => STATUS_ACCESS_DENIED,
        K::InvalidInput => STATUS_INVALID_PARAMETER,
        K::OutOfMemory => STATUS_INSUFFICIENT_RESOURCES,
        K::Unsupported => STATUS_NOT_SUPPORTED,
        _ => STATUS_UNSUCCESSFUL,
    }
}

/// True when the address is of the IP version `v6`.
pub(super) fn family_matches(addr: &SocketAddr, v6: bool) -> bool {
    matches!(addr.ip(), IpAddr::V6(_)) == v6
}

/// A borrowed descriptor, for the name and error calls above.
pub(super) struct FdRef(pub(super) RawFd);

impl AsRawFd for FdRef {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

#[cfg(test)]
mod status_tests {
    use std::io;

    use super::status_of;
    use crate::{
        STATUS_ACCESS_DENIED, STATUS_ADDRESS_ALREADY_EXISTS, STATUS_CONNECTION_ABORTED,
        STATUS_CONNECTION_REFUSED, STATUS_CONNECTION_RESET, STATUS_INSUFFICIENT_RESOURCES,
        STATUS_IO_TIMEOUT, STATUS_NETWORK_UNREACHABLE, STATUS_UNSUCCESSFUL,
    };

    #[test]
    fn host_errors_map_to_the_specific_status_windows_gives() {
        let cases = [
            (12, STATUS_INSUFFICIENT_RESOURCES),  // ENOMEM
            (23, STATUS_INSUFFICIENT_RESOURCES),  // ENFILE
            (24, STATUS_INSUFFICIENT_RESOURCES),  // EMFILE
            (105, STATUS_INSUFFICIENT_RESOURCES), // ENOBUFS
            (104, STATUS_CONNECTION_RESET),       // ECONNRESET
            (32, STATUS_CONNECTION_RESET),        // EPIPE
            (107, STATUS_CONNECTION_RESET),       // ENOTCONN: shutdown after a peer reset
            (103, STATUS_CONNECTION_ABORTED),     // ECONNABORTED
            (111, STATUS_CONNECTION_REFUSED),     // ECONNREFUSED
            (98, STATUS_ADDRESS_ALREADY_EXISTS),  // EADDRINUSE
            (13, STATUS_ACCESS_DENIED),           // EACCES
            (110, STATUS_IO_TIMEOUT),             // ETIMEDOUT
            (101, STATUS_NETWORK_UNREACHABLE),    // ENETUNREACH
        ];
        for (errno, status) in cases {
            assert_eq!(
                status_of(&io::Error::from_raw_os_error(errno)),
                status,
                "errno {errno}"
            );
        }
        assert_eq!(
            status_of(&io::Error::other("no errno")),
            STATUS_UNSUCCESSFUL
        );
    }
}
