//! Conversions between `core::net::SocketAddr` and the kernel's `SOCKADDR_IN`/`SOCKADDR_IN6`,
//! and a buffer big enough for either that WSK can write into.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use wsk_sys::{self as sys, AF_INET, AF_INET6, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6};

/// Room for an IPv4 or IPv6 socket address, in the layout WSK reads and writes. Lives inside
/// operation state in nonpaged pool while WSK holds a pointer to it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union RawAddr {
    v4: SOCKADDR_IN,
    v6: SOCKADDR_IN6,
    family: u16,
}

impl RawAddr {
    /// An all-zero address (family `AF_UNSPEC`), for WSK to fill.
    pub(crate) const fn zeroed() -> Self {
        Self {
            v6: SOCKADDR_IN6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: [0; 16],
                sin6_scope_id: 0,
            },
        }
    }

    /// The kernel form of `addr`.
    pub(crate) fn from_socket_addr(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => Self {
                v4: SOCKADDR_IN {
                    sin_family: AF_INET,
                    sin_port: a.port().to_be(),
                    sin_addr: sys::IN_ADDR {
                        s_b: a.ip().octets(),
                    },
                    sin_zero: [0; 8],
                },
            },
            SocketAddr::V6(a) => Self {
                v6: SOCKADDR_IN6 {
                    sin6_family: AF_INET6,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: a.ip().octets(),
                    sin6_scope_id: a.scope_id(),
                },
            },
        }
    }

    /// The address WSK wrote, or `None` for an unknown family.
    pub(crate) fn to_socket_addr(self) -> Option<SocketAddr> {
        // SAFETY: every member starts with the 16-bit family, and all bit patterns are valid
        // for the plain-integer members read below.
        unsafe {
            match self.family {
                AF_INET => {
                    let a = self.v4;
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(a.sin_addr.s_b),
                        u16::from_be(a.sin_port),
                    )))
                }
                AF_INET6 => {
                    let a = self.v6;
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr),
                        u16::from_be(a.sin6_port),
                        u32::from_be(a.sin6_flowinfo),
                        a.sin6_scope_id,
                    )))
                }
                _ => None,
            }
        }
    }

    /// The pointer WSK takes.
    pub(crate) fn as_sockaddr(&mut self) -> *mut SOCKADDR {
        core::ptr::from_mut(self).cast()
    }
}

/// The wildcard address of the same family as `addr`, port 0 (for binding before connect).
pub(crate) fn wildcard_like(addr: &SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
    }
}

/// The kernel's address family for `addr`.
pub(crate) fn family_of(addr: &SocketAddr) -> u16 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn round_trips_v4_and_v6_in_network_order() {
        let v4: SocketAddr = "192.0.2.7:7007".parse().unwrap();
        let raw = RawAddr::from_socket_addr(v4);
        // SAFETY: just built as v4.
        let port = unsafe { raw.v4.sin_port };
        assert_eq!(port, 7007u16.to_be());
        assert_eq!(raw.to_socket_addr(), Some(v4));

        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let raw = RawAddr::from_socket_addr(v6);
        // SAFETY: just built as v6.
        let family = unsafe { raw.v6.sin6_family };
        assert_eq!(family, 23, "AF_INET6 is 23 on Windows");
        assert_eq!(raw.to_socket_addr(), Some(v6));
        assert_eq!(RawAddr::zeroed().to_socket_addr(), None);
    }

    #[test]
    fn wildcard_keeps_the_family() {
        assert_eq!(
            wildcard_like(&"10.0.0.1:80".parse().unwrap()).to_string(),
            "0.0.0.0:0"
        );
        assert_eq!(
            wildcard_like(&"[::1]:80".parse().unwrap()).to_string(),
            "[::]:0"
        );
    }
}
