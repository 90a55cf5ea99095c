//! The host kernel for the executor's tests: booted once per test binary and kept for the
//! process's lifetime (the tests use statics that outlive any one test).

use std::sync::OnceLock;

use wsk_host::{Config, Kernel};

static KERNEL: OnceLock<Kernel> = OnceLock::new();

/// Boots the host kernel (once per test binary).
pub fn boot() -> &'static Kernel {
    KERNEL.get_or_init(|| Kernel::boot(Config::default()))
}

/// Runs `f` on a fresh system thread at `PASSIVE_LEVEL`; panics propagate.
pub fn on_kernel_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    boot().on_kernel_thread(f)
}
