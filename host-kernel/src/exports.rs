//! Every kernel function `sys` declares, as the host kernel exports it: each is defined with
//! `#[unsafe(no_mangle)]` and the `"system-unwind"` ABI (so a bugcheck, a panic, unwinds into
//! the caller), and `sys`'s `extern` declaration of the same name resolves to it at link time.
//! Also the host kernel's own exports that `sys`'s inline helpers call (`host_current_irql`,
//! `host_shared_user_data`, ...: what CR8, `KUSER_SHARED_DATA` and `DbgPrintEx` are on
//! Windows).
//!
//! At compile time, for every function of `sys`'s one list (`wsk_sys::kernel_function_list!`
//! and `wsk_sys::host_export_list!`), both this crate's definition and `sys`'s declaration
//! must coerce to the declared `unsafe extern "system-unwind" fn` type: a definition with any
//! other signature or ABI, or a missing one, does not compile.

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
#[unsafe(no_mangle)]
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
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskDeregister(WskRegistration) }
}

/// `WskCaptureProviderNPI` (the provider's).
///
/// # Safety
/// See `WskCaptureProviderNPI`.
#[unsafe(no_mangle)]
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
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    // SAFETY: forwarded contract.
    unsafe { super::wsk::WskReleaseProviderNPI(WskRegistration) }
}

/// The compile-time signature check (see the module docs); nothing at run time.
mod signature_check {
    // The types as the lists name them.
    #[allow(
        clippy::wildcard_imports,
        reason = "the lists name wsk-sys's types unqualified"
    )]
    use wsk_sys::*;

    /// For each kernel function: the host definition and sys's declaration have the listed type.
    macro_rules! assert_kernel_function_signatures {
        ($(
            dll $dll:literal {
                $( $(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*
            }
        )*) => {
            $($(
                const _: unsafe extern "system-unwind" fn($($ty),*) $(-> $ret)? = super::$name;
                const _: unsafe extern "system-unwind" fn($($ty),*) $(-> $ret)? = wsk_sys::$name;
            )*)*
        };
    }

    /// For each host export: the host definition and sys's declaration have the listed type.
    macro_rules! assert_host_export_signatures {
        ($( $(#[$meta:meta])* $safety:ident fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
            $(
                const _: unsafe extern "system-unwind" fn($($ty),*) $(-> $ret)? = super::$name;
                const _: unsafe extern "system-unwind" fn($($ty),*) $(-> $ret)? = wsk_sys::$name;
            )*
        };
    }

    wsk_sys::kernel_function_list!(assert_kernel_function_signatures);
    wsk_sys::host_export_list!(assert_host_export_signatures);
}

/// Link-time half of the check: sys's declarations resolve to this crate's definitions.
#[cfg(test)]
mod link_tests {
    use std::vec::Vec;

    /// Every listed function as (name, the address sys's declaration links to, the address of
    /// this crate's definition). Naming sys's declaration makes the linker resolve it, so a
    /// definition without `#[unsafe(no_mangle)]` fails this test binary's link.
    macro_rules! kernel_function_addresses {
        ($(
            dll $dll:literal {
                $( $(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*
            }
        )*) => {
            fn kernel_functions() -> Vec<(&'static str, *const (), *const ())> {
                std::vec![$($(
                    (stringify!($name), wsk_sys::$name as *const (), super::$name as *const ()),
                )*)*]
            }
        };
    }

    /// The same for the host exports.
    macro_rules! host_export_addresses {
        ($( $(#[$meta:meta])* $safety:ident fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
            fn host_exports() -> Vec<(&'static str, *const (), *const ())> {
                std::vec![$(
                    (stringify!($name), wsk_sys::$name as *const (), super::$name as *const ()),
                )*]
            }
        };
    }

    wsk_sys::kernel_function_list!(kernel_function_addresses);
    wsk_sys::host_export_list!(host_export_addresses);

    #[test]
    fn every_declaration_links_to_the_host_definition() {
        let mut functions = kernel_functions();
        functions.extend(host_exports());
        assert_eq!(functions.len(), 49 + 5, "every listed function is checked");
        for (name, declared, defined) in functions {
            assert_eq!(
                declared, defined,
                "{name}: sys's declaration links elsewhere"
            );
        }
    }
}
