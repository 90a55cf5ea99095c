//! Every kernel function `sys` declares, as the host kernel implements it. `sys` re-exports
//! these at its root under the same names as the Windows imports, with signatures checked at
//! compile time against the one declaration list in `imports.rs`.

pub use super::clock::host_shared_user_data;
pub use super::ntos::*;

use crate::{NTSTATUS, WSK_CLIENT_NPI, WSK_PROVIDER_NPI, WSK_REGISTRATION};

// The WSK provider's entry points, behind `"system-unwind"` shims so that the signature check
// holds whichever ABI the provider declares (declare `"system-unwind"` there too, or a
// bugcheck inside aborts instead of unwinding to the test).

/// `WskRegister` (the provider's).
///
/// # Safety
/// See `WskRegister`.
pub unsafe extern "system-unwind" fn WskRegister(
    WskClientNpi: *mut WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskRegister(WskClientNpi, WskRegistration) }
}

/// `WskDeregister` (the provider's).
///
/// # Safety
/// See `WskDeregister`.
pub unsafe extern "system-unwind" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskDeregister(WskRegistration) }
}

/// `WskCaptureProviderNPI` (the provider's).
///
/// # Safety
/// See `WskCaptureProviderNPI`.
pub unsafe extern "system-unwind" fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskCaptureProviderNPI(WskRegistration, WaitTimeout, WskProviderNpi) }
}

/// `WskReleaseProviderNPI` (the provider's).
///
/// # Safety
/// See `WskReleaseProviderNPI`.
pub unsafe extern "system-unwind" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskReleaseProviderNPI(WskRegistration) }
}
