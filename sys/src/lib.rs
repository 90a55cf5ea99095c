//! The kernel boundary: NT and Winsock Kernel (WSK) types with exact x64 layouts, Rust versions
//! of the `FORCEINLINE` helpers from `wdm.h`, and the kernel functions.
//!
//! - On `target_os = "windows"` the functions are raw-dylib imports from `ntoskrnl.exe` and
//!   `netio.sys`: no WDK, no import libraries; rust-lld links a real driver.
//! - Everywhere else they are plain `extern` declarations of the same list, resolved at link
//!   time by the host kernel (crate `wsk-host`, `host-kernel/`), a user-mode NT + WSK with a
//!   verifier that exports them with `#[unsafe(no_mangle)]` as ntoskrnl does; so the same
//!   driver code runs and is tested on Linux. A binary that runs driver code on the host links
//!   `wsk-host` (`use wsk_host as _;` suffices).
//!
//! `no_std` on every target (no `std`, no allocator, no host I/O here).
//!
//! Names are the WDK's (`IRP`, `IoAllocateIrp`, `Irp.Tail.Overlay.CurrentStackLocation`) so that
//! the documentation and the C headers read across directly. Every struct and field is checked
//! against two independent header sets (mingw-w64's ddk and Wine's) by the layout probe
//! (`cargo test -p wsk-sys --test layout`, part of `cargo xtask test`). Nothing here knows
//! about async; that is `wsk-executor`'s and `wsk-net`'s business.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
#![no_std]
#![allow(
    non_snake_case,
    non_camel_case_types,
    non_upper_case_globals,
    reason = "NT and WSK names are kept exactly as the WDK spells them"
)]

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

#[cfg(target_os = "windows")]
mod windows_rt;

#[cfg(feature = "wdk-sys")]
mod wdk_sys_check;
