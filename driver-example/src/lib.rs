//! `wskecho`: an RFC 862 echo server as a Windows kernel driver, written with the `wsk` kit.
//!
//! The same source is a real `wskecho.sys` on `x86_64-pc-windows-msvc` (loaded by Windows or
//! Wine) and a library the host program (`src/main.rs`) loads into the host kernel. The
//! driver itself is [`start`] and [`stop`], which `wsk::driver_entry!` turns into
//! `DriverEntry` and its unload routine; the service is in [`echo`], the settings in
//! [`config`]. Like the examples in `wsk-net`'s docs, it never touches an IRP, a completion
//! routine or an `NTSTATUS`, and it has no `unsafe` of its own.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
#![no_std]

// Off Windows the driver is user-mode code in a host-kernel process: std provides the panic
// runtime there (a panic unwinds into the host kernel's verifier), where the Windows build has
// the `#[panic_handler]` that `wsk::driver_entry!` writes.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod config;
pub mod echo;
pub mod probe;

use wsk::driver::{Entry, Failure};
use wsk::kprint;

wsk::driver_entry!(service: echo::SERVICE, start: start, stop: stop);

/// The driver's start (in `DriverEntry`): reads its settings, starts the echo service
/// (binding its listener before it returns, so a port in use fails the load). Logs
/// `wskecho: listening on <addr>` (with the real port when configured with port 0), or the
/// macro logs `wskecho: not started: <why>` and `DriverEntry` returns the failure's status:
/// `STATUS_INVALID_PARAMETER` for a bad setting, the bind's status for a listener that cannot
/// bind (`STATUS_ADDRESS_ALREADY_EXISTS` for a port in use).
///
/// # Errors
/// The setting or start step that failed.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub fn start(entry: &Entry<'_>) -> Result<(), Failure> {
    let settings = config::read(&entry.parameters()?)?;
    kprint!(
        "wskecho: starting on {} with the {:?} runner, at most {} connections\n",
        settings.listen,
        settings.runner,
        settings.max_connections
    );
    echo::start(entry.driver(), settings)?;
    Ok(())
}

/// The driver's stop (in `DriverUnload`): stops the service; after it returns no code of the
/// driver runs again. Logs `wskecho: unload complete: <report>`.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub fn stop() {
    let report = echo::stop();
    kprint!("wskecho: unload complete: {report}\n");
}
