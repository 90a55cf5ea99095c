//! The host kernel: a user-mode NT + WSK with Windows semantics and a verifier, so that
//! driver code runs and is tested on Linux unchanged.
//!
//! Tests and host programs drive it through [`Kernel`]: boot a machine, load a driver, unload
//! it and read the verifier's report.

// The clocks (the shared-user-data page with the interrupt time, and the precise clock) live
// apart from ntos: they need no kernel.
pub(crate) mod clock;
pub mod exports;
pub mod faults;
mod ntos;
mod wsk;

pub use ntos::kernel;
pub use ntos::kernel::{
    AllocationCounts, Config, Driver, Kernel, RegValue, Registry, UnloadReport, on_kernel_thread,
};
pub use ntos::verifier::Bugcheck;

// The kernel-internal interfaces the WSK provider builds on.
#[allow(unused_imports, reason = "used by the WSK provider as it grows")]
pub(crate) use ntos::{irp, irql, mdl, verifier};
