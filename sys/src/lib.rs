//! The kernel boundary: NT and Winsock Kernel (WSK) types with exact x64 layouts, Rust versions
//! of the `FORCEINLINE` helpers from `wdm.h`, and the kernel functions.
//!
//! - On `target_os = "windows"` the functions are raw-dylib imports from `ntoskrnl.exe` and
//!   `netio.sys`: no WDK, no import libraries; rust-lld links a real driver.
//! - Everywhere else they are implemented by the host kernel ([`host`]), a user-mode NT + WSK
//!   with a verifier, so the same driver code runs and is tested on Linux.
//!
//! Names are the WDK's (`IRP`, `IoAllocateIrp`, `Irp.Tail.Overlay.CurrentStackLocation`) so that
//! the documentation and the C headers read across directly. Every struct and field is checked
//! against two independent header sets (mingw-w64's ddk and Wine's) by the layout probe
//! (`cargo test -p wsk-sys --test layout`, part of `cargo xtask test`). Nothing here knows about async; that is `wsk-executor`'s and
//! `wsk-net`'s business.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
#![no_std]
#![allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    reason = "NT and WSK names are kept exactly as the WDK spells them"
)]

#[cfg(not(target_os = "windows"))]
extern crate std;

mod imports;
mod inline;
mod list;
mod nt;
mod ntdef;
mod sockaddr;
mod wsk;

pub use imports::*;
pub use inline::*;
pub use list::*;
pub use nt::*;
pub use ntdef::*;
pub use sockaddr::*;
pub use wsk::*;

#[cfg(not(target_os = "windows"))]
pub mod host;

#[cfg(target_os = "windows")]
mod windows_rt;

#[cfg(feature = "wdk-sys")]
mod wdk_sys_check;
