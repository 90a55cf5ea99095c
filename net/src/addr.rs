//! Socket addresses as WSK takes them: [`RawAddr`], the `SOCKADDR_INET` of `wsk-sys` (which
//! holds the one conversion between `core::net` and `SOCKADDR_IN`/`SOCKADDR_IN6` in the
//! workspace), parked in operation slots while WSK reads or writes it; and the family helpers
//! socket creation needs.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use wsk_sys::{AF_INET, AF_INET6};

/// Room for an IPv4 or IPv6 socket address in WSK's layout. Lives inside operation state in
/// nonpaged pool while WSK holds a pointer to it.
pub(crate) use wsk_sys::SOCKADDR_INET as RawAddr;

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
