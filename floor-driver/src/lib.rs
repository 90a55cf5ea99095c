//! `wskfloor`: the floor of the echo benchmarks. An RFC 862 echo server written the way the
//! WDK's WSK samples are: completion routines that issue the next IRP directly (accept →
//! receive → send → receive ...), no executor, no futures, no library between the driver and
//! `wsk-sys`. Whatever `wsk-net` on `wsk-executor` costs beyond this is what async adds.
//! Where it sits among the crates: `docs/ARCHITECTURE.md` in the repository.
//!
//! The same source is a `.sys` for `x86_64-pc-windows-msvc` (Windows, Wine) and, elsewhere, a
//! library the host program (`src/main.rs`) loads into the host kernel. Settings come from the
//! driver's `Parameters` registry key: `Port` (`REG_DWORD`, default [`DEFAULT_PORT`]),
//! `LoopbackOnly` (`REG_DWORD`, nonzero: listen on 127.0.0.1 instead of 0.0.0.0) and
//! `DeferToThread` (`REG_DWORD`, nonzero: [`server::Deferral::Worker`], which Wine always
//! gets).
//!
//! The service itself is in [`server`].
#![no_std]

// Off Windows the driver is user-mode code in a host-kernel process: std provides the panic
// runtime there; the Windows build has the `#[panic_handler]` below.
#[cfg(not(target_os = "windows"))]
extern crate std;

mod gate;
mod registry;
pub mod server;

use core::net::{Ipv4Addr, SocketAddr};

use wsk_sys::{DRIVER_OBJECT, NTSTATUS, STATUS_SUCCESS, UNICODE_STRING, kprint};

/// The port the floor listens on when the registry names none (the echo driver's is 7007).
pub const DEFAULT_PORT: u16 = 7008;

/// The driver's entry point: reads `Port` and `LoopbackOnly`, starts the server (the listener
/// bound before it returns) and sets the unload routine. Logs `wskfloor: listening on <addr>`,
/// or `wskfloor: not started: <status>` and returns that status.
///
/// Exported as `DriverEntry` only in the `.sys`: on the host it is an ordinary function, so a
/// benchmark can link this driver beside the echo driver (whose `DriverEntry` is exported).
///
/// # Safety
/// Called once by the kernel with a valid driver object and registry path.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
#[cfg_attr(target_os = "windows", unsafe(no_mangle))]
#[allow(non_snake_case, reason = "the WDK's name for the entry point")]
pub unsafe extern "system" fn DriverEntry(
    driver: *mut DRIVER_OBJECT,
    registry_path: *mut UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the kernel passes a valid registry path for the duration of DriverEntry.
    let settings = unsafe { registry::read(registry_path) };
    let ip = if settings.loopback_only {
        Ipv4Addr::LOCALHOST
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let listen = SocketAddr::from((ip, settings.port));
    let deferral = if settings.defer_to_thread {
        server::Deferral::Worker
    } else {
        server::Deferral::Inline
    };
    // SAFETY: PASSIVE_LEVEL, the kernel's live driver object.
    match unsafe { server::start(driver, listen, deferral) } {
        Ok(()) => {
            // SAFETY: the driver object is ours to fill in during DriverEntry.
            unsafe { (*driver).DriverUnload = Some(driver_unload) };
            kprint!("wskfloor: listening on {listen}\n");
            STATUS_SUCCESS
        }
        Err(status) => {
            kprint!("wskfloor: not started: {:#010x}\n", status.cast_unsigned());
            status
        }
    }
}

/// Closes the listener and every connection, waits for them, deregisters.
unsafe extern "system" fn driver_unload(_driver: *mut DRIVER_OBJECT) {
    // SAFETY: PASSIVE_LEVEL (DriverUnload), after a successful start.
    let served = unsafe { server::stop() };
    kprint!("wskfloor: unload complete: {served} connections served, all closed\n");
}

/// A panic in a driver is a bug: print it and stop the machine with `KeBugCheckEx`.
#[cfg(target_os = "windows")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    wsk_sys::bugcheck_on_panic(info)
}
