//! Address-info hints for [`resolve_with`] (family, socket type, `AI_*` flags) and reverse
//! lookup with `WskGetNameInfo` ([`lookup_addr`]). Both are `PASSIVE_LEVEL` calls of WSK.

use core::future::Future;
use core::net::SocketAddr;
use core::ptr::NonNull;

use wsk_sys::{self as sys, ADDRINFOEXW, NTSTATUS};

use crate::addr::RawAddr;
use crate::buf::IoBuf;
use crate::client::WskClient;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, Request, SocketInner};
use crate::resolve::Addresses;
use crate::socket::{Handle, check};
use crate::time::{Operation, Target};

/// Which address family [`resolve_with`] returns (`ai_family` of the hints).
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AddressFamily {
    /// IPv4 and IPv6 (`AF_UNSPEC`).
    #[default]
    Any,
    /// IPv4 only (`AF_INET`).
    V4,
    /// IPv6 only (`AF_INET6`).
    V6,
}

/// Which socket type the addresses are for (`ai_socktype` of the hints).
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SocketType {
    /// Any type (0).
    #[default]
    Any,
    /// TCP (`SOCK_STREAM`).
    Stream,
    /// UDP (`SOCK_DGRAM`).
    Datagram,
}

/// `AI_*` flags for [`resolve_with`] (ws2def.h values), combined with `|`.
///
/// ```
/// let flags = wsk_net::ResolveFlags::NUMERIC_HOST | wsk_net::ResolveFlags::ADDRCONFIG;
/// assert!(flags.contains(wsk_net::ResolveFlags::NUMERIC_HOST));
/// ```
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveFlags(i32);

impl ResolveFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// `AI_PASSIVE`: addresses to bind to.
    pub const PASSIVE: Self = Self(sys::AI_PASSIVE);
    /// `AI_NUMERICHOST`: the name must be a numeric address; no name lookup happens.
    pub const NUMERIC_HOST: Self = Self(sys::AI_NUMERICHOST);
    /// `AI_ADDRCONFIG`: only families the host has an address of.
    pub const ADDRCONFIG: Self = Self(sys::AI_ADDRCONFIG);
    /// `AI_V4MAPPED`: v4-mapped IPv6 addresses when no IPv6 address is found.
    pub const V4MAPPED: Self = Self(sys::AI_V4MAPPED);
    /// `AI_ALL`: with `V4MAPPED`, both IPv6 and v4-mapped addresses.
    pub const ALL: Self = Self(sys::AI_ALL);

    /// True when every flag of `other` is set.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for ResolveFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The hints of [`resolve_with`]: `WskGetAddressInfo`'s `ADDRINFOEXW` `ai_family`,
/// `ai_socktype` and `ai_flags`. The default asks for everything, as [`resolve`](crate::resolve).
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveHints {
    /// The address family wanted.
    pub family: AddressFamily,
    /// The socket type the addresses are for.
    pub socket_type: SocketType,
    /// `AI_*` flags.
    pub flags: ResolveFlags,
}

/// Bytes the hints take at the start of a resolve's name buffer (a multiple of 8, so the
/// name after them stays aligned).
pub(crate) const HINTS_LEN: usize = size_of::<ADDRINFOEXW>().next_multiple_of(8);

/// Writes `hints` as an `ADDRINFOEXW` at the start of `buf` (empty, at least
/// [`HINTS_LEN`] bytes).
pub(crate) fn write_hints(buf: &mut IoBuf, hints: &ResolveHints) -> Result<()> {
    let info = ADDRINFOEXW {
        ai_flags: hints.flags.0,
        ai_family: match hints.family {
            AddressFamily::Any => 0,
            AddressFamily::V4 => i32::from(sys::AF_INET),
            AddressFamily::V6 => i32::from(sys::AF_INET6),
        },
        ai_socktype: match hints.socket_type {
            SocketType::Any => 0,
            SocketType::Stream => i32::from(sys::SOCK_STREAM),
            SocketType::Datagram => i32::from(sys::SOCK_DGRAM),
        },
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_canonname: core::ptr::null_mut(),
        ai_addr: core::ptr::null_mut(),
        ai_blob: core::ptr::null_mut(),
        ai_bloblen: 0,
        ai_provider: core::ptr::null_mut(),
        ai_next: core::ptr::null_mut(),
    };
    // SAFETY: `info` is a plain C struct (integers and null pointers): viewing its bytes is
    // reading initialised memory of its exact size (no padding on 64- or 32-bit targets:
    // four i32, then pointer-sized fields).
    let bytes = unsafe {
        core::slice::from_raw_parts((&raw const info).cast::<u8>(), size_of::<ADDRINFOEXW>())
    };
    buf.extend_from_slice(bytes)?;
    buf.extend_from_slice(&[0; HINTS_LEN - size_of::<ADDRINFOEXW>()])
}

/// The hints [`write_hints`] put at the start of `buf`.
pub(crate) fn hints_in(buf: &mut IoBuf) -> *mut ADDRINFOEXW {
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "pool allocations are 16-byte aligned"
    )]
    buf.storage_mut().as_mut_ptr().cast::<ADDRINFOEXW>()
}

/// Resolves `host` as [`resolve`](crate::resolve) does, with `hints`: only one family, the
/// addresses of one socket type, `AI_NUMERICHOST` to refuse anything but a numeric address
/// without asking DNS, ...
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// use wsk_net::{AddressFamily, ResolveHints, SocketType};
/// // On the passive runner: IPv4 addresses of a UDP service.
/// let hints = ResolveHints {
///     family: AddressFamily::V4,
///     socket_type: SocketType::Datagram,
///     ..ResolveHints::default()
/// };
/// let addrs = wsk_net::resolve_with(client, "time.example.com", 123, &hints).await?;
/// # let _ = addrs;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`resolve`](crate::resolve); `NotFound` also when nothing of the family resolved, or a
/// name that is not numeric with `NUMERIC_HOST`; `InvalidInput` for flags the provider does
/// not know; `Unsupported` for a socket type it does not know.
///
/// Bound it with [`timeout`](crate::timeout): the lookup is cancelled through WSK.
///
/// # IRQL
/// Call at <= `DISPATCH_LEVEL` (it allocates the object that lends the lookup its IRP); poll
/// at `PASSIVE_LEVEL` only.
pub fn resolve_with<'a>(
    client: &'a WskClient,
    host: &'a str,
    port: u16,
    hints: &ResolveHints,
) -> Operation<'static, impl Future<Output = Result<Addresses>> + 'a> {
    // SAFETY: the handle keeps its client alive while borrowed, which covers this future.
    let inner = unsafe { client.inner().as_ref() };
    crate::resolve::resolve_hinted(inner, host, port, Some(*hints))
}

/// `NI_*` flags for [`lookup_addr`] (ws2def.h values), combined with `|`.
///
/// ```
/// let flags = wsk_net::NameInfoFlags::NUMERIC_HOST | wsk_net::NameInfoFlags::NUMERIC_SERVICE;
/// assert!(flags.contains(wsk_net::NameInfoFlags::NUMERIC_SERVICE));
/// ```
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameInfoFlags(u32);

impl NameInfoFlags {
    /// No flags: the host's fully qualified name (or its numeric form when it has none), the
    /// service's name (or its number).
    pub const NONE: Self = Self(0);
    /// `NI_NOFQDN`: only the local part of a local host's name.
    pub const NO_FQDN: Self = Self(sys::NI_NOFQDN);
    /// `NI_NUMERICHOST`: the numeric address, no reverse lookup.
    pub const NUMERIC_HOST: Self = Self(sys::NI_NUMERICHOST);
    /// `NI_NAMEREQD`: fail (`NotFound`) when the address has no name.
    pub const NAME_REQUIRED: Self = Self(sys::NI_NAMEREQD);
    /// `NI_NUMERICSERV`: the port number, not a service name.
    pub const NUMERIC_SERVICE: Self = Self(sys::NI_NUMERICSERV);
    /// `NI_DGRAM`: the service is a datagram (UDP) service.
    pub const DATAGRAM: Self = Self(sys::NI_DGRAM);

    /// True when every flag of `other` is set.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for NameInfoFlags {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// The longest host name [`lookup_addr`] returns, in bytes of UTF-8 (a DNS name has at most
/// 253 characters).
pub const MAX_HOST_NAME: usize = 256;
/// The longest service name [`lookup_addr`] returns, in bytes of UTF-8 (`NI_MAXSERV` less its
/// NUL).
pub const MAX_SERVICE_NAME: usize = 31;

/// UTF-16 units asked of the provider for the host name (with the NUL).
const HOST_UNITS: usize = MAX_HOST_NAME + 1;
/// UTF-16 units for the service name (with the NUL): `NI_MAXSERV`.
const SERVICE_UNITS: usize = sys::NI_MAXSERV;

/// What [`lookup_addr`] found: the host's name and the service's name.
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInfo {
    /// The host name (or numeric address).
    pub host: heapless::String<MAX_HOST_NAME>,
    /// The service name (or port number).
    pub service: heapless::String<MAX_SERVICE_NAME>,
}

/// `WskGetNameInfo` for `addr[0]`, into `names[0]` (host) and `names[1]` (service), which
/// point into `held.buf`; `held.value` carries the `NI_*` flags ([`Request::NameInfo`]).
///
/// # Safety
/// `PASSIVE_LEVEL`; both names point into `held.buf`; `call.irp` is prepared.
pub(crate) unsafe fn issue_name_info(call: &mut Call) -> NTSTATUS {
    let (dispatch, client) = call.client().provider();
    let Some(get) = dispatch.WskGetNameInfo else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let flags = held.value;
    let addr = held.addr[0].as_mut_ptr();
    let len = u32::try_from(held.addr[0].len()).unwrap_or(0);
    let Some(names) = held.names_mut() else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    let (node, service) = (&raw mut names.strings[0], &raw mut names.strings[1]);
    // SAFETY: PASSIVE_LEVEL and a prepared IRP (caller); the address and both strings live in
    // the slot (their buffers in `held.buf`) until completion.
    unsafe {
        get(
            client,
            addr,
            len,
            node,
            service,
            flags,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// The host and service names of `addr` (`WskGetNameInfo`): a reverse DNS lookup of the
/// address and the service name of its port, or their numeric forms as `flags` ask.
///
/// Must be polled at `PASSIVE_LEVEL` (the passive runner, or `wsk_executor::block_on`).
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// use wsk_net::NameInfoFlags;
/// let peer = "192.0.2.7:443".parse().unwrap();
/// let names = wsk_net::lookup_addr(client, peer, NameInfoFlags::NUMERIC_SERVICE).await?;
/// // names.host: "host.example.com" (or "192.0.2.7" when it has no name), names.service: "443"
/// # let _ = names;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `WrongIrql` when polled above `PASSIVE_LEVEL`; `InvalidState` after deregistration;
/// `NotFound` with `NAME_REQUIRED` and no name; `InvalidInput` for flags the provider
/// refuses; `Other` for a name longer than [`MAX_HOST_NAME`] bytes; `Unsupported` where the
/// provider lacks `WskGetNameInfo` (Wine 8); `NoResources`.
///
/// Bound it with [`timeout`](crate::timeout): the lookup is cancelled through WSK.
///
/// # IRQL
/// Call at <= `DISPATCH_LEVEL` (it allocates the object that lends the lookup its IRP); poll
/// at `PASSIVE_LEVEL` only.
pub fn lookup_addr(
    client: &WskClient,
    addr: SocketAddr,
    flags: NameInfoFlags,
) -> Operation<'static, impl Future<Output = Result<NameInfo>> + '_> {
    // SAFETY: the handle keeps its client alive while borrowed, which covers this future.
    let inner = unsafe { client.inner().as_ref() };
    // The operation needs an IRP: a socket object that never gets a WSK socket lends its
    // control slot (and is freed with the handle). Made here so that a deadline can cancel
    // the lookup through it.
    let handle = if inner.accepting() {
        SocketInner::new(NonNull::from(inner), Kind::Connection).map(Handle::from_inner)
    } else {
        Err(Error::new(ErrorKind::InvalidState, LOOKUP_ADDR))
    };
    let target = handle
        .as_ref()
        .map_or(Target::Missing, |h| Target::Owned(h.share()));
    Operation::new(target, CTL, LOOKUP_ADDR, async move {
        let handle = handle?;
        name_info(&handle, addr, flags).await
    })
}

/// The operation name errors of [`lookup_addr`] carry.
const LOOKUP_ADDR: &str = "lookup_addr";

/// The `WskGetNameInfo` of `addr` through `handle`'s control slot.
async fn name_info(handle: &Handle, addr: SocketAddr, flags: NameInfoFlags) -> Result<NameInfo> {
    const NAME: &str = LOOKUP_ADDR;
    if sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL {
        return Err(Error::new(ErrorKind::WrongIrql, NAME));
    }
    let mut names = IoBuf::with_capacity((HOST_UNITS + SERVICE_UNITS) * 2)?;
    // Zeroed once: the provider writes through raw pointers, and the strings are read back
    // from the initialised storage.
    let storage = names.storage_mut().as_mut_ptr();
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "pool allocations are 16-byte aligned"
    )]
    let host_chars = storage.cast::<u16>();
    let service_chars = host_chars.wrapping_add(HOST_UNITS);
    let mut held = Held::with_buf(Request::NameInfo, names, 0);
    let strings_held;
    held.value = flags.0;
    held.addr[0] = RawAddr::from(addr);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "both buffers are far below 64 KiB"
    )]
    {
        strings_held = held.set_names([
            sys::UNICODE_STRING {
                Length: 0,
                MaximumLength: (HOST_UNITS * 2) as u16,
                Buffer: host_chars,
            },
            sys::UNICODE_STRING {
                Length: 0,
                MaximumLength: (SERVICE_UNITS * 2) as u16,
                Buffer: service_chars,
            },
        ]);
    }
    if !strings_held {
        return Err(Error::new(ErrorKind::NoResources, NAME));
    }
    let mut done = Op::new(handle.inner(), CTL, held).before_open().await?;
    check(done.status, done.information, NAME)?;
    let (host_len, service_len) = done.held.names().map_or((0, 0), |names| {
        (names.strings[0].Length, names.strings[1].Length)
    });
    let buf = done
        .held
        .buf
        .as_mut()
        .ok_or(Error::new(ErrorKind::Other, NAME))?;
    let storage = buf.storage_mut();
    let host = utf16_to_string::<MAX_HOST_NAME>(&storage[..HOST_UNITS * 2], host_len)
        .ok_or(Error::new(ErrorKind::Other, NAME))?;
    let service = utf16_to_string::<MAX_SERVICE_NAME>(&storage[HOST_UNITS * 2..], service_len)
        .ok_or(Error::new(ErrorKind::Other, NAME))?;
    Ok(NameInfo { host, service })
}

/// The first `length` bytes of little-endian UTF-16 in `bytes` as a string of at most `N`
/// bytes; `None` when it does not fit (or `length` exceeds `bytes`).
fn utf16_to_string<const N: usize>(bytes: &[u8], length: u16) -> Option<heapless::String<N>> {
    let bytes = bytes.get(..usize::from(length))?;
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    let mut out = heapless::String::new();
    for c in core::char::decode_utf16(units) {
        out.push(c.unwrap_or(core::char::REPLACEMENT_CHARACTER))
            .ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_names_convert_within_their_bound() {
        let bytes: [u8; 10] = [b'h', 0, b'o', 0, b's', 0, b't', 0, 0, 0];
        assert_eq!(utf16_to_string::<8>(&bytes, 8).unwrap().as_str(), "host");
        assert!(utf16_to_string::<3>(&bytes, 8).is_none(), "too long");
        assert!(
            utf16_to_string::<8>(&bytes, 12).is_none(),
            "length past the buffer"
        );
        assert_eq!(HINTS_LEN % 8, 0);
        assert!(ResolveFlags::PASSIVE | ResolveFlags::ALL != ResolveFlags::NONE);
    }
}
