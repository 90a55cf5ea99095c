//! Socket addresses between `core::net` and WSK's layout, once for the workspace: the
//! `SOCKADDR_INET` union (ws2ipdef.h: `SOCKADDR_IN` or `SOCKADDR_IN6` behind a common family
//! field, Windows family numbers `AF_INET` = 2, `AF_INET6` = 23) built from and read back to a
//! [`SocketAddr`], and [`read_sockaddr`] for an address somebody else laid out.
//!
//! Users: `wsk-net` keeps the addresses WSK reads and writes in `SOCKADDR_INET`s inside its
//! operation slots; the host kernel's WSK provider reads its clients' addresses and writes the
//! ones it reports.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::wsk::{ADDRESS_FAMILY, AF_INET, AF_INET6, IN_ADDR, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6};

/// Bytes of the largest address [`SOCKADDR_INET`] holds (a `SOCKADDR_IN6`).
pub const SOCKADDR_INET_MAX_LEN: usize = size_of::<SOCKADDR_IN6>();

/// `SOCKADDR_INET`: room for an IPv4 or IPv6 socket address in WSK's layout, the family
/// field shared. Every bit pattern is valid for each member (plain integers), so reading any
/// member is sound; which one means something is said by `si_family`.
///
/// # IRQL
/// Any: plain data.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SOCKADDR_INET {
    /// The IPv4 form (`si_family == AF_INET`).
    pub Ipv4: SOCKADDR_IN,
    /// The IPv6 form (`si_family == AF_INET6`).
    pub Ipv6: SOCKADDR_IN6,
    /// The family, first in both forms.
    pub si_family: ADDRESS_FAMILY,
}

impl SOCKADDR_INET {
    /// All zero (family `AF_UNSPEC`): room for WSK to write an address into.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            Ipv6: SOCKADDR_IN6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: [0; 16],
                sin6_scope_id: 0,
            },
        }
    }

    /// The WSK form of `addr`: port and flow info in network byte order, the scope id as is.
    #[must_use]
    pub const fn from_socket_addr(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => Self {
                Ipv4: SOCKADDR_IN {
                    sin_family: AF_INET,
                    sin_port: a.port().to_be(),
                    sin_addr: IN_ADDR {
                        s_b: a.ip().octets(),
                    },
                    sin_zero: [0; 8],
                },
            },
            SocketAddr::V6(a) => Self {
                Ipv6: SOCKADDR_IN6 {
                    sin6_family: AF_INET6,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: a.ip().octets(),
                    sin6_scope_id: a.scope_id(),
                },
            },
        }
    }

    /// The family field.
    #[must_use]
    pub const fn family(&self) -> ADDRESS_FAMILY {
        // SAFETY: every member starts with the 16-bit family, and any bit pattern is a valid
        // u16.
        unsafe { self.si_family }
    }

    /// The size of the address its family says it holds: 16 for IPv4, 28 for IPv6, 0 for any
    /// other family.
    #[must_use]
    pub const fn len(&self) -> usize {
        family_len(self.family())
    }

    /// True when the family is neither IPv4 nor IPv6.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address's bytes, [`SOCKADDR_INET::len`] of them (for copying into someone else's
    /// buffer).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the union is SOCKADDR_INET_MAX_LEN bytes of plain integers with no padding
        // in either member (checked by the size assertions below), and `len()` is at most that.
        unsafe { core::slice::from_raw_parts(core::ptr::from_ref(self).cast::<u8>(), self.len()) }
    }

    /// The pointer WSK takes, to read the address or to write one.
    pub fn as_mut_ptr(&mut self) -> *mut SOCKADDR {
        core::ptr::from_mut(self).cast()
    }

    /// The address, or `None` for a family other than IPv4 and IPv6.
    #[must_use]
    pub const fn to_socket_addr(&self) -> Option<SocketAddr> {
        match self.family() {
            AF_INET => {
                // SAFETY: every bit pattern is a valid SOCKADDR_IN, and the family says it is one.
                let a = unsafe { self.Ipv4 };
                Some(socket_addr_v4(&a))
            }
            AF_INET6 => {
                // SAFETY: every bit pattern is a valid SOCKADDR_IN6, and the family says it is one.
                let a = unsafe { self.Ipv6 };
                Some(socket_addr_v6(&a))
            }
            _ => None,
        }
    }
}

impl Default for SOCKADDR_INET {
    fn default() -> Self {
        Self::zeroed()
    }
}

impl core::fmt::Debug for SOCKADDR_INET {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.to_socket_addr() {
            Some(addr) => write!(f, "SOCKADDR_INET({addr})"),
            None => write!(f, "SOCKADDR_INET(family {})", self.family()),
        }
    }
}

impl From<SocketAddr> for SOCKADDR_INET {
    fn from(addr: SocketAddr) -> Self {
        Self::from_socket_addr(&addr)
    }
}

// The byte views above rely on these sizes (ws2def.h / ws2ipdef.h).
const _: () = assert!(size_of::<SOCKADDR_IN>() == 16);
const _: () = assert!(size_of::<SOCKADDR_IN6>() == 28);
const _: () = assert!(size_of::<SOCKADDR_INET>() == SOCKADDR_INET_MAX_LEN);

/// The size of a `SOCKADDR_IN` or `SOCKADDR_IN6` for `family`, 0 for any other family.
#[must_use]
pub const fn family_len(family: ADDRESS_FAMILY) -> usize {
    match family {
        AF_INET => size_of::<SOCKADDR_IN>(),
        AF_INET6 => size_of::<SOCKADDR_IN6>(),
        _ => 0,
    }
}

const fn socket_addr_v4(a: &SOCKADDR_IN) -> SocketAddr {
    let ip = a.sin_addr.s_b;
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        u16::from_be(a.sin_port),
    ))
}

const fn socket_addr_v6(a: &SOCKADDR_IN6) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from_octets(a.sin6_addr),
        u16::from_be(a.sin6_port),
        u32::from_be(a.sin6_flowinfo),
        a.sin6_scope_id,
    ))
}

/// Reads a `SOCKADDR_IN` or `SOCKADDR_IN6` at `addr`, of which `len` bytes are readable. `None`
/// when `addr` is null, the family is neither IPv4 nor IPv6, or `len` is short of what the
/// family needs. Only the bytes the family needs are read, unaligned.
///
/// WSK's own calls pass an address without a length (its family says how many bytes follow):
/// for those, pass [`SOCKADDR_INET_MAX_LEN`] only if that many bytes are readable, else use
/// [`read_sockaddr_by_family`].
///
/// # Safety
/// `addr` is null or points to `len` readable bytes.
///
/// # IRQL
/// Any, for nonpaged memory.
#[must_use]
pub unsafe fn read_sockaddr(addr: *const SOCKADDR, len: usize) -> Option<SocketAddr> {
    if addr.is_null() || len < size_of::<ADDRESS_FAMILY>() {
        return None;
    }
    // SAFETY: at least the family's two bytes are readable (checked above), and the family
    // then bounds every further read.
    let family = unsafe { addr.cast::<ADDRESS_FAMILY>().read_unaligned() };
    let needed = family_len(family);
    if needed == 0 || len < needed {
        return None;
    }
    // SAFETY: `needed` bytes are readable (caller's `len`, checked above).
    unsafe { read_sockaddr_by_family(addr) }
}

/// Reads a `SOCKADDR_IN` or `SOCKADDR_IN6` whose family says how many bytes follow (WSK's
/// convention for the addresses its clients pass). `None` when `addr` is null or the family is
/// neither IPv4 nor IPv6.
///
/// # Safety
/// `addr` is null or points to a readable family field followed by as many bytes as that
/// family's address has (16 for `AF_INET`, 28 for `AF_INET6`).
///
/// # IRQL
/// Any, for nonpaged memory.
#[must_use]
pub unsafe fn read_sockaddr_by_family(addr: *const SOCKADDR) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the family field is readable (caller).
    let family = unsafe { addr.cast::<ADDRESS_FAMILY>().read_unaligned() };
    match family {
        AF_INET => {
            // SAFETY: an AF_INET family is followed by the rest of a SOCKADDR_IN (caller).
            let a = unsafe { addr.cast::<SOCKADDR_IN>().read_unaligned() };
            Some(socket_addr_v4(&a))
        }
        AF_INET6 => {
            // SAFETY: an AF_INET6 family is followed by the rest of a SOCKADDR_IN6 (caller).
            let a = unsafe { addr.cast::<SOCKADDR_IN6>().read_unaligned() };
            Some(socket_addr_v6(&a))
        }
        _ => None,
    }
}

/// Writes `addr` in WSK form at `dst` and returns its length in bytes (16 or 28); a null
/// `dst` (a caller that did not ask for the address) gets nothing and returns 0.
///
/// # Safety
/// `dst` is null or points to at least that many writable bytes (28 always suffice); no
/// alignment needed.
///
/// # IRQL
/// Any, for nonpaged memory.
pub unsafe fn write_sockaddr(dst: *mut SOCKADDR, addr: &SocketAddr) -> usize {
    if dst.is_null() {
        return 0;
    }
    let raw = SOCKADDR_INET::from_socket_addr(addr);
    let bytes = raw.as_bytes();
    // SAFETY: the caller provides room for `bytes.len()` bytes at `dst`; `raw` is a local.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.cast::<u8>(), bytes.len()) };
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> SocketAddr {
        "192.0.2.7:7007".parse().unwrap()
    }

    fn v6() -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            443,
            0x0012_3456,
            7,
        ))
    }

    #[test]
    fn builds_windows_layout_in_network_order() {
        let raw = SOCKADDR_INET::from_socket_addr(&v4());
        assert_eq!(raw.family(), 2, "AF_INET is 2");
        assert_eq!(raw.len(), 16);
        assert_eq!(&raw.as_bytes()[..8], &[2, 0, 0x1b, 0x5f, 192, 0, 2, 7]);

        let raw = SOCKADDR_INET::from(v6());
        assert_eq!(raw.family(), 23, "AF_INET6 is 23 on Windows");
        assert_eq!(raw.len(), 28);
        let bytes = raw.as_bytes();
        assert_eq!(
            &bytes[..4],
            &[23, 0, 0x01, 0xbb],
            "family, then port 443 big-endian"
        );
        assert_eq!(&bytes[4..8], &[0, 0x12, 0x34, 0x56], "flow info big-endian");
        assert_eq!(&bytes[24..28], &7u32.to_ne_bytes(), "scope id as is");
    }

    #[test]
    fn round_trips_and_rejects_unknown_families() {
        for addr in [v4(), v6()] {
            assert_eq!(SOCKADDR_INET::from(addr).to_socket_addr(), Some(addr));
        }
        let zero = SOCKADDR_INET::zeroed();
        assert_eq!(zero.to_socket_addr(), None);
        assert!(zero.is_empty());
        assert_eq!(zero.as_bytes(), &[] as &[u8]);
    }

    #[test]
    fn reads_unaligned_and_checks_the_length() {
        for addr in [v4(), v6()] {
            // One byte in, so the address is misaligned.
            let mut buffer = [0u8; 1 + SOCKADDR_INET_MAX_LEN];
            #[allow(
                clippy::cast_ptr_alignment,
                reason = "misaligned on purpose: the functions read and write unaligned"
            )]
            let dst = buffer[1..].as_mut_ptr().cast::<SOCKADDR>();
            // SAFETY: 28 writable bytes at `dst`.
            let len = unsafe { write_sockaddr(dst, &addr) };
            // SAFETY: `len` bytes readable at `dst`.
            assert_eq!(unsafe { read_sockaddr(dst, len) }, Some(addr));
            // SAFETY: as above; a shorter length reads less.
            assert_eq!(unsafe { read_sockaddr(dst, len - 1) }, None, "short buffer");
            // SAFETY: the family is followed by its whole address.
            assert_eq!(unsafe { read_sockaddr_by_family(dst) }, Some(addr));
        }
        // SAFETY: null is allowed.
        assert_eq!(unsafe { read_sockaddr(core::ptr::null(), 28) }, None);
        // SAFETY: null is allowed.
        assert_eq!(unsafe { read_sockaddr_by_family(core::ptr::null()) }, None);
        // SAFETY: null is allowed.
        assert_eq!(unsafe { write_sockaddr(core::ptr::null_mut(), &v4()) }, 0);
        let unknown = [10u8, 0, 0, 0];
        // SAFETY: four readable bytes.
        let read = unsafe { read_sockaddr(unknown.as_ptr().cast(), unknown.len()) };
        assert_eq!(read, None, "Linux's AF_INET6 (10) is not Windows'");
    }
}
