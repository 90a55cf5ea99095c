//! The platform-neutral task core: `no_std`, no allocation, no kernel calls.
//!
//! - [`Executor`]: a lock-free multi-producer run queue, a [`PendFn`] that turns a wake into a
//!   run, and [`Executor::poll`], which drains the queue under a budget.
//! - [`TaskPool`]: static storage for tasks; [`TaskPool::spawn`] returns a [`JoinHandle`].
//! - The task state word (see the `task` module's docs) that makes wakes idempotent and keeps
//!   each task on one CPU at a time.
//!
//! The runners in [`crate::runner`] put these on a DPC or a system thread.

mod atomic_waker;
mod executor;
mod join;
mod pool;
pub(crate) mod sync;
mod task;

pub use executor::{Executor, PendFn, PollReport};
pub use join::{JoinError, JoinHandle};
pub use pool::{MAX_POOLS, STORAGE_ALIGN, SpawnError, TaskPool};

pub(crate) use executor::executor_of_waker;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
