//! The host kernel: a user-mode NT + WSK with Windows semantics and a verifier, so that
//! driver code runs and is tested off Windows unchanged.
//!
//! `wsk-sys` only declares the kernel functions (`extern` declarations of its one list); this
//! crate defines them with `#[unsafe(no_mangle)]`, as ntoskrnl and netio.sys export theirs, so
//! they are resolved when a binary links it. Every binary that runs driver code on the host
//! (tests, the host program, benches) links this crate; `use wsk_host as _;` is enough when it
//! uses nothing else from it. [`exports`] checks at compile time that each definition has
//! exactly the declared signature.
//!
//! Tests and host programs drive it through [`Kernel`]: boot a machine, load a driver, unload
//! it and read the verifier's report; [`testing`] runs a scenario under every fault plan;
//! [`program`] has the stop-signal handling of host programs that load a driver.
//!
//! Empty on Windows targets, where the real kernel exports the functions. How the crates fit
//! together and where each kernel rule is checked: `docs/ARCHITECTURE.md` in the repository.
#![cfg(not(target_os = "windows"))]
#![allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    reason = "NT and WSK names are kept exactly as the WDK spells them"
)]

// The moved kernel sources name NT types and kernel functions as `crate::IRP`,
// `crate::NTSTATUS`, ... (they lived inside wsk-sys): this glob keeps those paths valid. The
// crate's own items (modules, the exported definitions) shadow the glob where names meet.
#[allow(
    unused_imports,
    clippy::wildcard_imports,
    reason = "the kernel sources name wsk-sys's items as crate::X, as when they lived there"
)]
pub(crate) use wsk_sys::*;

// The clocks (the shared-user-data page with the interrupt time, and the precise clock) live
// apart from ntos: they need no kernel.
pub(crate) mod clock;
pub mod exports;
pub mod faults;
mod ntos;
pub mod program;
pub mod testing;
mod wsk;

pub use ntos::kernel;
pub use ntos::kernel::{
    AllocationCounts, Config, Driver, Kernel, Provider, RegValue, Registry, UnloadReport,
    on_kernel_thread,
};
pub use ntos::verifier::Bugcheck;

// The kernel-internal interfaces the WSK provider builds on.
#[allow(unused_imports, reason = "used by the WSK provider as it grows")]
pub(crate) use ntos::{irp, irql, mdl, verifier};
