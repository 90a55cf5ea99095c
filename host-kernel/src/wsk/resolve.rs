//! `WskGetAddressInfo` and `WskFreeAddressInfo` on the host's resolver. Results are
//! `ADDRINFOEXW` chains in kernel pool, so a client that never frees them shows in the pool
//! leak report.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::string::String;
use std::sync::Mutex;
use std::vec::Vec;

use super::glue::require_at_most;
use super::socket::begin;
use crate::SOCKADDR_INET;
use crate::faults::WskOp;
use crate::{
    ADDRINFOEXW, AF_INET, AF_INET6, ExFreePoolWithTag, GUID, IPPROTO_TCP, IRP, NTSTATUS,
    PASSIVE_LEVEL, PEPROCESS, PETHREAD, SOCK_STREAM, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND, STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
    UNICODE_STRING, WSK_CLIENT, pool_tag,
};

/// The booted kernel's `Config::hosts`: names resolved here, before the host's resolver.
static HOSTS: Mutex<Vec<(String, Vec<IpAddr>)>> = Mutex::new(Vec::new());

/// Installs the hosts table of the kernel being booted (the provider is one per process).
pub(crate) fn set_hosts(hosts: &[(String, Vec<IpAddr>)]) {
    *HOSTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = hosts.to_vec();
}

/// `node`'s addresses from the hosts table, with `port`, if it is there.
fn from_hosts(node: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let hosts = HOSTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    hosts
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(node))
        .map(|(_, addresses)| {
            addresses
                .iter()
                .map(|&ip| SocketAddr::new(ip, port))
                .collect()
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
    let (p, _, inline, mut out) =
        match unsafe { begin("WskGetAddressInfo", core::ptr::null_mut(), client, irp) } {
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
    let family = if hints.is_null() {
        0
    } else {
        // SAFETY: the client passes valid hints or null.
        unsafe { (*hints).ai_family }
    };
    let in_memory = matches!(p.io, super::Io::Memory(_));
    let status = resolve(node, service, family, in_memory).map_or_else(
        |status| status,
        |addrs| match build(&addrs) {
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

/// The addresses of `node` and `service` of `family` (0: any); on the in-memory network
/// (`in_memory`), without the host's resolver ([`super::memory::resolve`]).
fn resolve(
    node: Option<String>,
    service: Option<String>,
    family: i32,
    in_memory: bool,
) -> Result<Vec<SocketAddr>, NTSTATUS> {
    let port = match service {
        None => 0,
        Some(s) => s.trim().parse::<u16>().map_err(|_| STATUS_NOT_SUPPORTED)?,
    };
    let Some(node) = node else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    let addrs = match from_hosts(&node, port) {
        Some(addrs) => addrs,
        None if in_memory => super::memory::resolve(&node, port).ok_or(STATUS_NOT_FOUND)?,
        None => (node.as_str(), port)
            .to_socket_addrs()
            .map_err(|_| STATUS_NOT_FOUND)?
            .collect(),
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
    Ok(out)
}

/// The `ADDRINFOEXW` chain for `addrs`, in pool; `None` when pool runs out.
fn build(addrs: &[SocketAddr]) -> Option<*mut ADDRINFOEXW> {
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
                    ai_socktype: i32::from(SOCK_STREAM),
                    ai_protocol: IPPROTO_TCP.cast_signed(),
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
    Some(head)
}

/// Frees a chain built by [`build`].
///
/// # Safety
/// `list` is null or a chain this provider built and nobody frees again.
unsafe fn free_list(mut list: *mut ADDRINFOEXW) {
    while !list.is_null() {
        // SAFETY: every entry of the chain is a live pool block with our tag.
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
