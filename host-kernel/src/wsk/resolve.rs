//! `WskGetAddressInfo` and `WskFreeAddressInfo` on the host's resolver. Results are
//! `ADDRINFOEXW` chains in kernel pool, so a client that never frees them shows in the pool
//! leak report.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::string::String;
use std::sync::Mutex;
use std::vec::Vec;

use super::glue::require_at_most;
use super::os::{self, NameInfoFlags, linux};
use super::socket::begin;
use crate::SOCKADDR_INET;
use crate::faults::WskOp;
use crate::{
    ADDRINFOEXW, AF_INET, AF_INET6, AI_ADDRCONFIG, AI_ALL, AI_CANONNAME, AI_NUMERICHOST,
    AI_PASSIVE, AI_V4MAPPED, ExFreePoolWithTag, GUID, IPPROTO_TCP, IPPROTO_UDP, IRP, NI_DGRAM,
    NI_NAMEREQD, NI_NOFQDN, NI_NUMERICHOST, NI_NUMERICSERV, NTSTATUS, PASSIVE_LEVEL, PEPROCESS,
    PETHREAD, SOCK_DGRAM, SOCK_STREAM, SOCKADDR, STATUS_BUFFER_OVERFLOW,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS, UNICODE_STRING, WSK_CLIENT, pool_tag,
};

/// The booted kernel's `Config::hosts`: names resolved here, before the host's resolver.
static HOSTS: Mutex<Vec<(String, Vec<IpAddr>)>> = Mutex::new(Vec::new());

/// Installs the hosts table of the kernel being booted (the provider is one per process).
pub(crate) fn set_hosts(hosts: &[(String, Vec<IpAddr>)]) {
    *HOSTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = hosts.to_vec();
}

/// `node`'s addresses from the hosts table, with `port`, and the name as the table spells it
/// (its canonical name), if it is there.
fn from_hosts(node: &str, port: u16) -> Option<(Vec<SocketAddr>, String)> {
    let hosts = HOSTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    hosts
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(node))
        .map(|(name, addresses)| {
            let addrs = addresses
                .iter()
                .map(|&ip| SocketAddr::new(ip, port))
                .collect();
            (addrs, name.clone())
        })
}

/// Pool tag of address-info entries (`WskA`).
const ADDRINFO_TAG: u32 = pool_tag(*b"WskA");

/// One pool block: the entry, then room for its address.
#[repr(C)]
struct Entry {
    info: ADDRINFOEXW,
    addr: SOCKADDR_INET,
}

/// The string a counted UTF-16 string holds, or `None` for null or empty.
///
/// # Safety
/// `s` is null or a valid `UNICODE_STRING`.
unsafe fn read_string(s: *const UNICODE_STRING) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees a valid counted string.
    let s = unsafe { &*s };
    // SAFETY: as above: its buffer holds `Length` bytes.
    let wide = unsafe { s.as_wide() };
    if wide.is_empty() {
        return None;
    }
    Some(String::from_utf16_lossy(wide))
}

/// `WskGetAddressInfo`. `PASSIVE_LEVEL` only (the host resolver blocks).
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_get_address_info(
    client: *mut WSK_CLIENT,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    _namespace: u32,
    _provider: *mut GUID,
    hints: *mut ADDRINFOEXW,
    result: *mut *mut ADDRINFOEXW,
    _process: PEPROCESS,
    _thread: PETHREAD,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_GET_ADDRESS_INFO callback function (wsk.h)", IRQL: PASSIVE_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_address_info
    require_at_most(PASSIVE_LEVEL, "WskGetAddressInfo");
    // SAFETY: the client passes a live IRP with a provider stack location.
    let started = unsafe { begin("WskGetAddressInfo", core::ptr::null_mut(), client, irp) };
    let (p, _, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Some(status) = p.inject(WskOp::GetAddressInfo) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes a valid string or null.
    let node = unsafe { read_string(node) };
    // SAFETY: as above.
    let service = unsafe { read_string(service) };
    let hints = if hints.is_null() {
        Hints::default()
    } else {
        // SAFETY: the client passes valid hints or null.
        let given = unsafe { &*hints };
        Hints {
            family: given.ai_family,
            socktype: given.ai_socktype,
            flags: given.ai_flags,
        }
    };
    let in_memory = matches!(p.io, super::Io::Memory(_));
    let status = hints
        .check()
        .and_then(|()| resolve(node, service, hints, in_memory))
        .map_or_else(
            |status| status,
            |(addrs, canonical)| match build(&addrs, hints.socktype, canonical.as_deref()) {
                Some(list) => {
                    if result.is_null() {
                        // SAFETY: the list was just built by `build`.
                        unsafe { free_list(list) };
                        STATUS_INVALID_PARAMETER
                    } else {
                        // SAFETY: the client passes a writable result pointer.
                        unsafe { *result = list };
                        STATUS_SUCCESS
                    }
                }
                None => STATUS_INSUFFICIENT_RESOURCES,
            },
        );
    out.done(status, 0, 0);
    p.finish(out, inline)
}

/// What the client's `ADDRINFOEXW` hints ask for ("ADDRINFOEXW structure (ws2def.h)",
/// hints: `ai_family`, `ai_socktype`, `ai_flags`; the other members must be zero or null).
#[derive(Debug, Clone, Copy, Default)]
struct Hints {
    family: i32,
    socktype: i32,
    flags: i32,
}

impl Hints {
    /// The `AI_*` flags this provider honours or accepts.
    const KNOWN_FLAGS: i32 =
        AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_ALL | AI_ADDRCONFIG | AI_V4MAPPED;

    /// Unknown flags fail as `EAI_BADFLAGS`, an unknown socket type as `EAI_SOCKTYPE`.
    fn check(self) -> Result<(), NTSTATUS> {
        // "GetAddrInfoExW function (ws2tcpip.h)": EAI_BADFLAGS (WSAEINVAL) for flags it does
        // not know, EAI_SOCKTYPE (WSAESOCKTNOSUPPORT) for a socket type other than 0,
        // SOCK_STREAM and SOCK_DGRAM:
        // https://learn.microsoft.com/en-us/windows/win32/api/ws2tcpip/nf-ws2tcpip-getaddrinfoexw
        if self.flags & !Self::KNOWN_FLAGS != 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        if ![0, i32::from(SOCK_STREAM), i32::from(SOCK_DGRAM)].contains(&self.socktype) {
            return Err(STATUS_NOT_SUPPORTED);
        }
        Ok(())
    }
}

/// The addresses of `node` and `service` the hints ask for, and the canonical name when they
/// ask for it (`AI_CANONNAME`); on the in-memory network (`in_memory`), without the host's
/// resolver ([`super::memory::resolve`]).
fn resolve(
    node: Option<String>,
    service: Option<String>,
    hints: Hints,
    in_memory: bool,
) -> Result<(Vec<SocketAddr>, Option<String>), NTSTATUS> {
    let family = hints.family;
    let port = match service {
        None => 0,
        Some(s) => s.trim().parse::<u16>().map_err(|_| STATUS_NOT_SUPPORTED)?,
    };
    let Some(node) = node else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    // AI_NUMERICHOST: "the node name must be a numeric host address string; no name
    // resolution is attempted" (GetAddrInfoExW, ai_flags).
    if hints.flags & AI_NUMERICHOST != 0 && node.parse::<std::net::IpAddr>().is_err() {
        return Err(STATUS_NOT_FOUND);
    }
    let numeric = node.parse::<IpAddr>().is_ok();
    let (addrs, table_name) = match from_hosts(&node, port) {
        Some((addrs, name)) => (addrs, Some(name)),
        None if in_memory => (
            super::memory::resolve(&node, port).ok_or(STATUS_NOT_FOUND)?,
            None,
        ),
        None => (
            (node.as_str(), port)
                .to_socket_addrs()
                .map_err(|_| STATUS_NOT_FOUND)?
                .collect(),
            None,
        ),
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in addrs {
        let keep = match family {
            0 => true,
            f if f == i32::from(AF_INET) => a.is_ipv4(),
            f if f == i32::from(AF_INET6) => a.is_ipv6(),
            _ => return Err(STATUS_NOT_SUPPORTED),
        };
        if keep && !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(STATUS_NOT_FOUND);
    }
    // AI_CANONNAME, "ADDRINFOEXW structure (ws2def.h)"
    // (learn.microsoft.com/windows/win32/api/ws2def/ns-ws2def-addrinfoexw): "The canonical name
    // is returned in the first ai_canonname member". A numeric node is its own canonical name
    // (as getaddrinfo(3) gives it), the hosts table's spelling for its names, the name as
    // given on the in-memory network, else the host resolver's (the name as given when it
    // has none).
    let canonical = (hints.flags & AI_CANONNAME != 0).then(|| {
        if numeric || in_memory {
            table_name.clone().unwrap_or_else(|| node.clone())
        } else {
            table_name
                .clone()
                .or_else(|| os::canonical_name(&node))
                .unwrap_or_else(|| node.clone())
        }
    });
    Ok((out, canonical))
}

/// The `ADDRINFOEXW` chain for `addrs`, in pool, of the socket type the hints asked for
/// (`SOCK_STREAM` when they left it open), the first entry with `canonical` as its
/// `ai_canonname` (a NUL-terminated UTF-16 string in a pool block of its own); `None` when
/// pool runs out.
fn build(addrs: &[SocketAddr], socktype: i32, canonical: Option<&str>) -> Option<*mut ADDRINFOEXW> {
    let (socktype, protocol) = if socktype == i32::from(SOCK_DGRAM) {
        (SOCK_DGRAM, IPPROTO_UDP)
    } else {
        (SOCK_STREAM, IPPROTO_TCP)
    };
    let mut head: *mut ADDRINFOEXW = core::ptr::null_mut();
    for a in addrs.iter().rev() {
        // The provider's own allocation: the low-resources simulation fails only the driver's.
        let entry = crate::ntos::pool::allocate_for_kernel(size_of::<Entry>(), ADDRINFO_TAG)
            .cast::<Entry>();
        if entry.is_null() {
            // SAFETY: `head` is a chain built here.
            unsafe { free_list(head) };
            return None;
        }
        let addr = SOCKADDR_INET::from_socket_addr(a);
        // SAFETY: `entry` is a fresh allocation of an Entry's size and pool alignment.
        unsafe {
            entry.write(Entry {
                info: ADDRINFOEXW {
                    ai_flags: 0,
                    ai_family: i32::from(if a.is_ipv4() { AF_INET } else { AF_INET6 }),
                    ai_socktype: i32::from(socktype),
                    ai_protocol: protocol.cast_signed(),
                    ai_addrlen: addr.len(),
                    ai_canonname: core::ptr::null_mut(),
                    ai_addr: core::ptr::null_mut(),
                    ai_blob: core::ptr::null_mut(),
                    ai_bloblen: 0,
                    ai_provider: core::ptr::null_mut(),
                    ai_next: head,
                },
                addr,
            });
        }
        // SAFETY: just initialised, and only this function holds it.
        let entry = unsafe { &mut *entry };
        // The entry points into itself: a pool block does not move.
        entry.info.ai_addr = (&raw mut entry.addr).cast();
        head = (&raw mut *entry).cast();
    }
    if let Some(name) = canonical
        && !head.is_null()
    {
        let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
        let bytes = wide.len() * size_of::<u16>();
        let copy = crate::ntos::pool::allocate_for_kernel(bytes, ADDRINFO_TAG).cast::<u16>();
        if copy.is_null() {
            // SAFETY: `head` is a chain built here.
            unsafe { free_list(head) };
            return None;
        }
        // SAFETY: a fresh pool block of `bytes` bytes (pool alignment suits u16).
        unsafe { core::ptr::copy_nonoverlapping(wide.as_ptr(), copy, wide.len()) };
        // SAFETY: the first entry of the chain built above, only this function holds it.
        unsafe { (*head).ai_canonname = copy };
    }
    Some(head)
}

/// Frees a chain built by [`build`].
///
/// # Safety
/// `list` is null or a chain this provider built and nobody frees again.
unsafe fn free_list(mut list: *mut ADDRINFOEXW) {
    while !list.is_null() {
        // SAFETY: every entry of the chain is a live pool block with our tag.
        let canonical = unsafe { (*list).ai_canonname };
        if !canonical.is_null() {
            // SAFETY: a canonical name `build` allocated with our tag, freed with its entry.
            unsafe { ExFreePoolWithTag(canonical.cast(), ADDRINFO_TAG) };
        }
        // SAFETY: as above.
        let next = unsafe { (*list).ai_next };
        // SAFETY: as above; freed once, its successor read first.
        unsafe { ExFreePoolWithTag(list.cast(), ADDRINFO_TAG) };
        list = next;
    }
}

/// `WskFreeAddressInfo`. `PASSIVE_LEVEL` only, as `WskGetAddressInfo`: a client that drops a
/// lookup whose IRP completes later must not free the list from its completion routine.
pub(super) unsafe extern "system-unwind" fn wsk_free_address_info(
    _client: *mut WSK_CLIENT,
    list: *mut ADDRINFOEXW,
) {
    // "PFN_WSK_FREE_ADDRESS_INFO callback function (wsk.h)", IRQL: PASSIVE_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_free_address_info
    require_at_most(PASSIVE_LEVEL, "WskFreeAddressInfo");
    // SAFETY: the client passes a list this provider returned, once.
    unsafe { free_list(list) };
}

/// The largest `SockAddrLength` `WskGetNameInfo` takes: a `SOCKADDR_STORAGE`.
const SOCKADDR_STORAGE_LEN: u32 = 128;

/// The `NI_*` flags `WskGetNameInfo` knows.
const KNOWN_NI_FLAGS: u32 = NI_NOFQDN | NI_NUMERICHOST | NI_NAMEREQD | NI_NUMERICSERV | NI_DGRAM;

/// `WskGetNameInfo` on the host's resolver (`getnameinfo(3)`). `PASSIVE_LEVEL` only.
///
/// The rules of its WDK page (cited in the body):
/// - `SockAddrLength` must not exceed a `SOCKADDR_STORAGE`, and the address must be one of
///   the length given (else `STATUS_INVALID_PARAMETER`);
/// - `NodeName` and `ServiceName` are optional but not both null
///   (`STATUS_INVALID_PARAMETER`);
/// - each output `UNICODE_STRING` buffer must hold the name with its terminating NUL
///   (`STATUS_BUFFER_OVERFLOW` otherwise: `EAI_OVERFLOW` of `GetNameInfoW`); `Length` is set
///   to the name's bytes without the NUL;
/// - flags are the `NI_*` values; others fail (`STATUS_INVALID_PARAMETER`, `EAI_BADFLAGS`),
///   and `NI_NAMEREQD` fails an address without a name (`STATUS_NOT_FOUND`).
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_get_name_info(
    client: *mut WSK_CLIENT,
    addr: *mut SOCKADDR,
    addr_len: u32,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    flags: u32,
    _process: PEPROCESS,
    _thread: PETHREAD,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_GET_NAME_INFO callback function (wsk.h)", IRQL PASSIVE_LEVEL; the parameter
    // rules above come from the same page (and GetNameInfoW's for the error codes):
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_name_info
    require_at_most(PASSIVE_LEVEL, "WskGetNameInfo");
    // SAFETY: the client passes a live IRP with a provider stack location.
    let started = unsafe { begin("WskGetNameInfo", core::ptr::null_mut(), client, irp) };
    let (p, _, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Some(status) = p.inject(WskOp::GetAddressInfo) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes `addr_len` readable bytes at `addr` (or null).
    let status = match unsafe { name_info(addr, addr_len, node, service, flags) } {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => status,
    };
    out.done(status, 0, 0);
    p.finish(out, inline)
}

/// The work of [`wsk_get_name_info`].
///
/// # Safety
/// `addr` is null or holds `addr_len` readable bytes; `node` and `service` are null or valid
/// `UNICODE_STRING`s whose buffers hold `MaximumLength` writable bytes.
unsafe fn name_info(
    addr: *mut SOCKADDR,
    addr_len: u32,
    node: *mut UNICODE_STRING,
    service: *mut UNICODE_STRING,
    flags: u32,
) -> Result<(), NTSTATUS> {
    if addr_len > SOCKADDR_STORAGE_LEN
        || (node.is_null() && service.is_null())
        || flags & !KNOWN_NI_FLAGS != 0
    {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // SAFETY: `addr_len` readable bytes (caller); read_sockaddr checks the family's length.
    let Some(address) = (unsafe { crate::read_sockaddr(addr, addr_len as usize) }) else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    let asked = NameInfoFlags {
        numeric_host: flags & NI_NUMERICHOST != 0,
        numeric_service: flags & NI_NUMERICSERV != 0,
        name_required: flags & NI_NAMEREQD != 0,
        no_fqdn: flags & NI_NOFQDN != 0,
        datagram: flags & NI_DGRAM != 0,
    };
    let (host, serv) = os::name_info(&address, asked).map_err(|code| match code {
        linux::EAI_OVERFLOW => STATUS_BUFFER_OVERFLOW,
        // EAI_NONAME (no name with NI_NAMEREQD) and resolver failures alike.
        _ => STATUS_NOT_FOUND,
    })?;
    // Both checked before either is written: a failure leaves the caller's strings as they were.
    for (out, text) in [(node, &host), (service, &serv)] {
        if !out.is_null() {
            // SAFETY: a valid UNICODE_STRING (caller).
            let room = usize::from(unsafe { (*out).MaximumLength }) / 2;
            // SAFETY: as above.
            if text.encode_utf16().count() + 1 > room || unsafe { (*out).Buffer }.is_null() {
                return Err(STATUS_BUFFER_OVERFLOW);
            }
        }
    }
    for (out, text) in [(node, &host), (service, &serv)] {
        if out.is_null() {
            continue;
        }
        // SAFETY: a valid UNICODE_STRING (caller), checked above to have room.
        let string = unsafe { &mut *out };
        let mut units = 0usize;
        for (i, unit) in text.encode_utf16().chain([0]).enumerate() {
            // `i` < the room checked above (name and NUL), within `MaximumLength`.
            let at = string.Buffer.wrapping_add(i);
            // SAFETY: `at` lies in the caller's writable buffer (see above).
            unsafe { at.write_unaligned(unit) };
            units = i;
        }
        string.Length = u16::try_from(units * 2).unwrap_or(u16::MAX);
    }
    Ok(())
}
