//! A no-alloc task executor for Windows kernel drivers.
//!
//! - [`raw`]: the platform-neutral core: task state word, lock-free run queue, static task
//!   pools, join handles.
//!
//! Tasks live in static [`TaskPool`]s; no heap is needed.
#![no_std]

#[cfg(any(test, loom))]
extern crate std;

pub mod raw;

pub use raw::{JoinError, JoinHandle, SpawnError, TaskPool};
