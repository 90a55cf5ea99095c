//! `wskecho`: an RFC 862 echo server as a Windows kernel driver, on `wsk-net`.
//!
//! The same source is a real `wskecho.sys` on `x86_64-pc-windows-msvc` (loaded by Windows or
//! Wine) and a library the host program (`src/main.rs`) loads into the host kernel. The
//! driver itself is [`DriverEntry`] and its unload routine; the service is in [`echo`], the
//! settings in [`config`]. Like the examples in `wsk-net`'s docs, it never touches an IRP,
//! a completion routine or an `NTSTATUS` beyond the status its entry point returns.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
#![no_std]

// Off Windows the driver is user-mode code in a host-kernel process: std provides the panic
// runtime there (a panic unwinds into the host kernel's verifier), where the Windows build has
// the `#[panic_handler]` below. wsk-sys itself no longer brings std in.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod config;
pub mod echo;

use wsk_sys::{
    DRIVER_OBJECT, NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
    UNICODE_STRING, kprint,
};

/// The driver's entry point: reads its settings, starts the echo service (binding its
/// listener before it returns, so a port in use fails the load) and sets the unload routine.
/// Logs `wskecho: listening on <addr>` (with the real port when configured with port 0), or
/// `wskecho: not started: <why>` and returns the failure's status: `STATUS_INVALID_PARAMETER`
/// for a bad setting, the bind's status for a listener that cannot bind
/// (`STATUS_ADDRESS_ALREADY_EXISTS` for a port in use).
///
/// # Safety
/// Called once by the kernel with a valid driver object and registry path.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(
    driver: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the kernel passes a valid registry path for the duration of DriverEntry.
    let settings = match unsafe { config::from_registry(registry_path) } {
        Ok(settings) => settings,
        Err(e) => {
            kprint!("wskecho: not started: {e}\n");
            return STATUS_INVALID_PARAMETER;
        }
    };
    kprint!(
        "wskecho: starting on {} with the {:?} runner, at most {} connections\n",
        settings.listen,
        settings.runner,
        settings.max_connections
    );
    // SAFETY: the kernel's own driver object, valid until DriverUnload returns.
    let Some(driver_ref) = (unsafe { wsk_net::Driver::from_raw(driver) }) else {
        return STATUS_UNSUCCESSFUL;
    };
    match echo::start(driver_ref, settings) {
        Ok(_) => {
            // SAFETY: the driver object is ours to fill in during DriverEntry.
            unsafe { (*driver).DriverUnload = Some(driver_unload) };
            STATUS_SUCCESS
        }
        Err(e) => {
            kprint!("wskecho: not started: {e}\n");
            e.status()
        }
    }
}

/// Stops the service; after it returns no code of the driver runs again.
unsafe extern "system" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    let report = echo::stop();
    kprint!("wskecho: unload complete: {report}\n");
}

/// A panic in a driver is a bug: print it and stop the machine with `KeBugCheckEx`
/// (`wsk_sys::BUGCHECK_RUST_PANIC`, the panic's location in the parameters).
#[cfg(target_os = "windows")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    wsk_sys::bugcheck_on_panic(info)
}
