//! The platform-neutral task core: `no_std`, no allocation, no kernel calls.
//!
//! - [`Executor`]: a lock-free multi-producer run queue, a [`Pender`] (or a [`PendFn`]) that
//!   turns a wake into a run, and [`Executor::poll`], which runs the queued tasks under a
//!   budget. A static pender type is called inline by wakes; a pool is bound to the pender type
//!   of the executor it first spawns onto.
//! - [`TaskPool`]: static storage for tasks; [`TaskPool::spawn`] returns a [`JoinHandle`].
//! - The task state word (the `state` module: its bits and every transition) that makes wakes
//!   idempotent and keeps each task on one CPU at a time; the run queue (`run_queue`); the task
//!   header and `TaskRef`, the one way to a task in `'static` storage (`task`).
//!
//! The runners ([`crate::Runner`]) put these on a DPC or a system thread.

mod atomic_waker;
mod executor;
mod fit;
mod join;
mod passive_queue;
mod pool;
mod run_queue;
mod state;
#[doc(hidden)]
pub mod sync;
mod task;
#[cfg(any(not(loom), test))]
mod wake_route;

pub use atomic_waker::{AtomicWaker, RetainedWaker};
pub use executor::{Executor, ExecutorCore, FnPender, PendFn, Pender, PollReport};
pub use join::{JoinError, JoinHandle};
#[cfg(any(not(loom), test))]
pub(crate) use passive_queue::PassiveQueue;
pub use passive_queue::PassiveWork;
#[cfg(not(loom))]
pub(crate) use pool::SpawnCheck;
pub use pool::{MAX_POOLS, STORAGE_ALIGN, SpawnError, TaskPool};

pub(crate) use executor::executor_of_waker;
pub(crate) use task::WakerVTableFor;
#[cfg(any(not(loom), test))]
pub(crate) use wake_route::{Route, WakeRoute};

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
