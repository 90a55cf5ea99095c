//! `wskchat`: a line-based chat relay as a Windows kernel driver, written with the `wsk` kit.
//!
//! Each line a client sends goes to every other connected client, byte for byte, and never
//! back to its sender. Each client has a bounded queue of lines; a client whose queue is full
//! (it reads too slowly) is dropped, so the others never wait for it. A client silent for the
//! idle timeout is closed, and so is one that sends a line longer than [`relay::MAX_LINE`].
//! Unloading closes every connection. The same service written with tokio, to compare:
//! `benches/examples/tokio_chat.rs`.
//!
//! The same source is a real `wskchat.sys` on `x86_64-pc-windows-msvc` and a library the host
//! program (`src/main.rs`) loads into the host kernel. The driver is [`relay::start`] and
//! [`relay::stop`], which `wsk::driver_entry!` turns into `DriverEntry` and its unload
//! routine; it has no `unsafe` of its own and allocates nothing.
#![no_std]
#![forbid(unsafe_code)]

// Off Windows the driver is user-mode code in a host-kernel process: std provides the panic
// runtime there, where the Windows build has the `#[panic_handler]` the macro writes.
#[cfg(not(target_os = "windows"))]
extern crate std;

pub mod relay;

wsk::driver_entry!(service: relay::SERVICE, start: relay::start, stop: relay::stop);
