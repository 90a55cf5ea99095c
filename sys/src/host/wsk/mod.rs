//! The host kernel's netio: the WSK provider on the host's real sockets.
//!
//! Interim: signature-checked stubs until the host kernel issue implements them.

#![allow(
    clippy::pedantic,
    clippy::missing_safety_doc,
    unused_variables,
    dead_code,
    reason = "interim stubs"
)]

use std::string::String;
use std::vec::Vec;

use crate::*;

/// Called by the kernel at boot, before any driver loads: resets the provider's state and
/// starts its reactor with the boot's fault plan.
pub(crate) fn boot(config: &super::faults::Faults) {}

/// Called by the kernel when it shuts down: stops the reactor, drops every host socket.
pub(crate) fn shutdown() {}

/// For the unload report: one line per registration or socket still open.
pub(crate) fn leaks() -> Vec<String> {
    Vec::new()
}

/// Host implementation of `WskRegister`.
pub unsafe extern "system" fn WskRegister(
    WskClientNpi: *mut WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: WskRegister")
}

/// Host implementation of `WskDeregister`.
pub unsafe extern "system" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    panic!("host kernel: not yet implemented: WskDeregister")
}

/// Host implementation of `WskCaptureProviderNPI`.
pub unsafe extern "system" fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: WskCaptureProviderNPI")
}

/// Host implementation of `WskReleaseProviderNPI`.
pub unsafe extern "system" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    panic!("host kernel: not yet implemented: WskReleaseProviderNPI")
}
