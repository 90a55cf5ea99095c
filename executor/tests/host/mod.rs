//! The host kernel for the executor's tests: booted once per test binary and kept for the
//! process's lifetime (the tests use statics that outlive any one test).

use std::sync::OnceLock;

use wsk_executor::Runner;
use wsk_host::testing::BOUND;
use wsk_host::{Config, Kernel};
use wsk_sys::{KeGetCurrentProcessorNumberEx, PROCESSOR_NUMBER};

static KERNEL: OnceLock<Kernel> = OnceLock::new();

/// Boots the host kernel (once per test binary).
pub fn boot() -> &'static Kernel {
    KERNEL.get_or_init(|| Kernel::boot(Config::default()))
}

/// Runs `f` on a fresh system thread at `PASSIVE_LEVEL`; panics propagate.
pub fn on_kernel_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    boot().on_kernel_thread(f)
}

/// Shuts `runner` down on a helper thread; fails the test if that takes longer than [`BOUND`].
pub fn shutdown_within(runner: &'static Runner) {
    let (done, finished) = std::sync::mpsc::channel();
    let helper = std::thread::spawn(move || {
        on_kernel_thread(|| runner.shutdown());
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(BOUND)
        .expect("shutdown did not return within the bound");
    helper.join().unwrap();
}

/// The number of the processor the caller runs on.
pub fn current_cpu() -> u32 {
    let mut number = PROCESSOR_NUMBER::default();
    // SAFETY: a valid out-pointer; any IRQL.
    unsafe { KeGetCurrentProcessorNumberEx(&raw mut number) }
}
