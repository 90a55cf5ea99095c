//! Client registrations: `WskRegister`, `WskDeregister`, `WskCaptureProviderNPI`,
//! `WskReleaseProviderNPI`, and the `WSK_CLIENT` handles that name a registration.

use std::format;
use std::string::String;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::glue::{bugcheck, require_at_most};
use super::socket::{self, Sock};
use super::{State, provider};
use crate::{
    DISPATCH_LEVEL, NTSTATUS, PASSIVE_LEVEL, STATUS_DEVICE_NOT_READY, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS, WSK_CLIENT, WSK_CLIENT_NPI, WSK_MAJOR_VERSION,
    WSK_NO_WAIT, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};

/// How long `WskDeregister` waits for sockets and captures before the verifier reports them.
const DEFAULT_DEREGISTER_WAIT: Duration = Duration::from_secs(10);

/// A registered client.
pub(super) struct Reg {
    pub(super) captures: usize,
    pub(super) deregistering: bool,
    /// `WSK_EVENT_*` bits of `WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)`: enabled on
    /// every socket the client creates from then on.
    pub(super) static_events: u32,
    /// The client has created a socket (static event callbacks can no longer be set).
    pub(super) created_socket: bool,
}

/// One line per client registration still registered, in registration order.
pub(super) fn registration_lines(st: &State) -> Vec<String> {
    let mut regs: Vec<_> = st.regs.iter().collect();
    regs.sort_by_key(|(id, _)| **id);
    regs.into_iter()
        .map(|(id, reg)| {
            format!(
                "WSK client registration {id} still registered ({} provider NPI captures held)",
                reg.captures
            )
        })
        .collect()
}

/// The registration id kept in the client's `WSK_REGISTRATION`.
///
/// # Safety
/// `registration` points to a live `WSK_REGISTRATION`.
unsafe fn registration_id(registration: *mut WSK_REGISTRATION, function: &'static str) -> u64 {
    if registration.is_null() {
        bugcheck(
            "WSK_NULL_REGISTRATION",
            format!("{function}: null WSK_REGISTRATION"),
        );
    }
    // SAFETY: the caller guarantees a live registration block.
    unsafe { (*registration).ReservedRegistrationState }
}

/// Host implementation of `WskRegister`. `PASSIVE_LEVEL`.
///
/// # Safety
/// Both pointers are valid; `WskRegistration` stays in nonpaged memory until `WskDeregister`.
pub unsafe extern "system-unwind" fn WskRegister(
    WskClientNpi: *mut WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    // "WskRegister function (wsk.h)", IRQL PASSIVE_LEVEL: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskregister
    require_at_most(PASSIVE_LEVEL, "WskRegister");
    if WskClientNpi.is_null() || WskRegistration.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller guarantees a valid client NPI.
    let dispatch = unsafe { (*WskClientNpi).Dispatch };
    if dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client's dispatch table is valid while it is registered.
    let version = unsafe { (*dispatch).Version };
    if WSK_MAJOR_VERSION(version) != 1 {
        return STATUS_NOT_SUPPORTED;
    }
    let provider = provider();
    let mut st = provider.lock();
    let id = st.new_id();
    st.regs.insert(
        id,
        Reg {
            captures: 0,
            deregistering: false,
            static_events: 0,
            created_socket: false,
        },
    );
    // SAFETY: the caller guarantees a writable registration block, which is the provider's
    // to fill until WskRegister returns.
    let registration = unsafe { &mut *WskRegistration };
    registration.ReservedRegistrationState = id;
    registration.ReservedRegistrationContext = core::ptr::null_mut();
    registration.ReservedRegistrationLock = 0;
    STATUS_SUCCESS
}

/// Host implementation of `WskDeregister`. `PASSIVE_LEVEL`. Waits until every capture is
/// released and every socket of the client is closed; past a bound, the verifier reports what
/// is still held instead of hanging forever.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`].
pub unsafe extern "system-unwind" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    // "WskDeregister function (wsk.h)", IRQL PASSIVE_LEVEL: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister
    require_at_most(PASSIVE_LEVEL, "WskDeregister");
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskDeregister") };
    let provider = provider();
    let wait = provider
        .faults
        .deregister_wait
        .unwrap_or(DEFAULT_DEREGISTER_WAIT);
    let deadline = Instant::now() + wait;
    let mut st = provider.lock();
    let Some(reg) = st.regs.get_mut(&id) else {
        drop(st);
        bugcheck(
            "WSK_DEREGISTER_UNKNOWN",
            format!("WskDeregister of registration {id}, which is not registered"),
        );
    };
    reg.deregistering = true;
    // "WskDeregister function (wsk.h)" (https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister):
    // it returns once every capture is released, every provider call has returned and every
    // socket is closed; Windows waits forever, the verifier reports after a bound. Stricter
    // than the page: it also waits for the client's pending non-socket IRPs (WskGetAddressInfo,
    // WskSocket before it returns a socket), which the page does not name; such an IRP would
    // complete into a driver that may be unloading.
    loop {
        let captures = st.regs.get(&id).map_or(0, |r| r.captures);
        let irps = st.irps.values().filter(|(c, _)| *c == id).count();
        let open: Vec<String> = st
            .sockets
            .values()
            .filter(|s| s.client() == id)
            .map(Sock::describe)
            .collect();
        if captures == 0 && open.is_empty() && irps == 0 {
            st.regs.remove(&id);
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            drop(st);
            let mut detail = format!(
                "WskDeregister of registration {id} would hang: {captures} captures held, {} sockets \
                 open, {irps} IRPs pending",
                open.len()
            );
            let name = if !open.is_empty() {
                "WSK_DEREGISTER_WITH_SOCKETS_OPEN"
            } else if captures > 0 {
                "WSK_DEREGISTER_WITH_CAPTURES_HELD"
            } else {
                "WSK_DEREGISTER_WITH_IRPS_PENDING"
            };
            for line in open {
                detail.push_str("\n  ");
                detail.push_str(&line);
            }
            bugcheck(name, detail);
        }
        st = crate::ntos::machine::wait_timeout(&provider.changed, st, deadline - now);
    }
}

/// Host implementation of `WskCaptureProviderNPI`. `PASSIVE_LEVEL`, or <= `DISPATCH_LEVEL`
/// with `WSK_NO_WAIT`. The host provider is ready as soon as the kernel has booted, so no
/// wait ever happens.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`]; `WskProviderNpi` is writable.
pub unsafe extern "system-unwind" fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    // "WskCaptureProviderNPI function (wsk.h)", IRQL PASSIVE_LEVEL, or <= DISPATCH_LEVEL with
    // WSK_NO_WAIT: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskcaptureprovidernpi
    if WaitTimeout == WSK_NO_WAIT {
        require_at_most(DISPATCH_LEVEL, "WskCaptureProviderNPI");
    } else {
        require_at_most(PASSIVE_LEVEL, "WskCaptureProviderNPI (waiting)");
    }
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskCaptureProviderNPI") };
    if WskProviderNpi.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let provider = provider();
    let mut st = provider.lock();
    match st.regs.get_mut(&id) {
        Some(reg) if !reg.deregistering => reg.captures += 1,
        // Same page: after WskDeregister, captures fail with STATUS_DEVICE_NOT_READY.
        Some(_) => return STATUS_DEVICE_NOT_READY,
        None => {
            drop(st);
            bugcheck(
                "WSK_CAPTURE_UNREGISTERED",
                format!("WskCaptureProviderNPI on registration {id}, which is not registered"),
            );
        }
    }
    // SAFETY: the caller guarantees a writable NPI, the provider's to fill until this returns.
    let npi = unsafe { &mut *WskProviderNpi };
    npi.Client = client_handle(id);
    npi.Dispatch = &raw const socket::PROVIDER_DISPATCH;
    STATUS_SUCCESS
}

/// Host implementation of `WskReleaseProviderNPI`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`].
pub unsafe extern "system-unwind" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    // "WskReleaseProviderNPI function (wsk.h)", IRQL <= DISPATCH_LEVEL, exactly one release per
    // successful capture: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskreleaseprovidernpi
    require_at_most(DISPATCH_LEVEL, "WskReleaseProviderNPI");
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskReleaseProviderNPI") };
    let provider = provider();
    let mut st = provider.lock();
    let ok = match st.regs.get_mut(&id) {
        Some(reg) if reg.captures > 0 => {
            reg.captures -= 1;
            true
        }
        _ => false,
    };
    drop(st);
    if !ok {
        bugcheck(
            "WSK_RELEASE_WITHOUT_CAPTURE",
            format!("WskReleaseProviderNPI on registration {id} without a capture"),
        );
    }
    provider.changed.notify_all();
}

/// The opaque `WSK_CLIENT` handle of registration `id`.
pub(super) fn client_handle(id: u64) -> *mut WSK_CLIENT {
    usize::try_from(id).unwrap_or(0) as *mut WSK_CLIENT
}

/// The registration behind a `WSK_CLIENT` handle; the verifier fails unknown handles.
pub(super) fn client_id(
    st: &State,
    client: *mut WSK_CLIENT,
    function: &'static str,
) -> Result<u64, String> {
    let id = client as usize as u64;
    match st.regs.get(&id) {
        Some(_) => Ok(id),
        None => Err(format!(
            "{function}: WSK_CLIENT {client:p} is not a registered client"
        )),
    }
}
