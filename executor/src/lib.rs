//! A no-alloc task executor for Windows kernel drivers: a DPC-driven runner, a passive lane,
//! timers, `block_on` and an orderly shutdown.
//!
//! - [`raw`]: the platform-neutral core: task state word, lock-free run queue, static task
//!   pools, join handles. No kernel calls, no allocation.
//! - [`Runner`]: an executor on a DPC ([`RunnerKind::Dpc`], which hands sustained work to a
//!   system thread polling at `DISPATCH_LEVEL` in slices, so its processor can leave
//!   `DISPATCH_LEVEL`) or a system thread ([`RunnerKind::Passive`]), with one `KTIMER` for its
//!   sleeps, and [`Runner::shutdown`].
//! - [`sleep`], [`sleep_until`], [`timeout`], [`Instant`]: time from `KeQueryInterruptTime`.
//! - [`block_on()`]: run a future at `PASSIVE_LEVEL` (`DriverEntry`, `DriverUnload`).
//! - [`yield_now`]: let other tasks run.
//! - [`sync`]: state shared across tasks, DPCs and processors: [`sync::SpinMutex`] (usable
//!   at `DISPATCH_LEVEL`), the async [`sync::Mutex`], the bounded [`sync::Channel`] and
//!   [`sync::Notify`]; no allocation, `static`-friendly.
//! - [`run_at_passive`]: hand a short piece of work from a task (polled at `DISPATCH_LEVEL`
//!   by a DPC runner) to its runner's thread at `PASSIVE_LEVEL`.
//!
//! Tasks live in static [`TaskPool`]s; no heap is needed.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
//!
//! ```ignore
//! static RUNNER: Runner = Runner::new(Budget::DEFAULT);
//! static TASKS: TaskPool<1024, 32> = TaskPool::new();
//!
//! RUNNER.start(RunnerKind::Dpc)?;
//! let handle = RUNNER.spawn(&TASKS, async {
//!     sleep(Duration::from_millis(10)).await;
//!     42
//! })?;
//! assert_eq!(block_on(handle), Ok(42));
//! RUNNER.shutdown();
//! ```
#![no_std]

#[cfg(any(test, loom))]
extern crate std;

// Unit tests run on the host kernel, which exports the kernel functions wsk-sys declares.
#[cfg(test)]
use wsk_host as _;

pub mod raw;
pub mod sync;

#[cfg(not(loom))]
mod block_on;
#[cfg(not(loom))]
mod kernel;
#[cfg(not(loom))]
mod passive;
#[cfg(not(loom))]
mod runner;
#[cfg(not(loom))]
mod time;
#[cfg(not(loom))]
mod timer;

#[cfg(not(loom))]
pub use block_on::block_on;
#[cfg(not(loom))]
pub use passive::{PassiveError, PassiveWork, run_at_passive};
pub use raw::{JoinError, JoinHandle, SpawnError, TaskPool};
#[cfg(not(loom))]
pub use runner::{Budget, Runner, RunnerKind, StartError};
#[cfg(not(loom))]
pub use time::Instant;
#[cfg(not(loom))]
pub use timer::{Elapsed, Sleep, Timeout, sleep, sleep_until, timeout, timeout_at};

/// Yields once: wakes the task and returns `Pending`, so other queued tasks run first.
///
/// # IRQL
/// Any the task runs at.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(move |cx| {
        if yielded {
            return core::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        core::task::Poll::Pending
    })
    .await;
}
