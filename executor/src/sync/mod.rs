//! Shared state across tasks: locks, a channel and a notification, all `no_std`, without
//! allocation, each with a `const fn new()` so that it can live in a `static`.
//!
//! Tasks of one [`Runner`](crate::Runner) may be polled on several processors at once (see its
//! docs), and completion routines and DPCs run at `DISPATCH_LEVEL` beside them, so state they
//! share needs one of these:
//!
//! | type | for | wait | IRQL |
//! |------|-----|------|------|
//! | [`SpinMutex`] | short critical sections, also from DPCs and completion routines | spins at `DISPATCH_LEVEL` | <= `DISPATCH_LEVEL` |
//! | [`Mutex`] | state held across `.await` | the task sleeps, FIFO | <= `DISPATCH_LEVEL` |
//! | [`Channel`] | handing values between tasks, bounded | senders wait for room, receivers for values | <= `DISPATCH_LEVEL` |
//! | [`Notify`] | "something changed, look again", shutdown signals | the task sleeps | <= `DISPATCH_LEVEL` |
//!
//! Every primitive keeps its bookkeeping under one [`SpinMutex`]: the IRQL is raised to
//! `DISPATCH_LEVEL` for a few instructions, so no operation here may be called above
//! `DISPATCH_LEVEL`, and none of them waits, so all of them may be called at it (a DPC or a
//! completion routine can `try_send`, `notify_one` or `try_lock`). Wakers are always called
//! after the spin lock is released.
//!
//! # Waiters without allocation
//! A task that must wait links a wait node into the primitive's list; the node lives inside
//! the future it waits with ([`Lock`], [`SendFuture`], [`RecvFuture`], [`Notified`]), which is pinned while it is
//! polled, so the node's address is stable for as long as it is linked. Dropping the future
//! unlinks the node under the same spin lock, and a node that was already handed something (the
//! lock, a notification, a slot) passes it on to the next waiter, so cancelling a wait never
//! loses a wake-up for the others. The alternative, a fixed-capacity waker set in each
//! primitive, would fail (or spin) once more tasks wait than it has room for; intrusive nodes
//! serve any number of waiters, in arrival order (FIFO: no waiter starves), at the price of
//! some `unsafe` pointer code, checked by Miri (`cargo +nightly miri test -p wsk-executor --lib
//! sync`) and modelled with loom (`RUSTFLAGS="--cfg loom" cargo test -p wsk-executor --release
//! --lib loom`).
//!
//! Broadcasts ([`Notify::notify_waiters`], [`Channel::close`]) wake in batches of
//! [`WAKE_BATCH`] wakers collected on the stack, releasing the spin lock between batches.
//!
//! # Example
//! ```no_run
//! use wsk_executor::sync::{Channel, Mutex, Notify, SpinMutex};
//!
//! static STATS: SpinMutex<u64> = SpinMutex::new(0);
//! static CONFIG: Mutex<[u8; 16]> = Mutex::new([0; 16]);
//! static LINES: Channel<u32, 8> = Channel::new();
//! static SHUTDOWN: Notify = Notify::new();
//!
//! async fn producer() {
//!     *STATS.lock() += 1; // at DISPATCH_LEVEL until the guard drops, a few instructions
//!     let config = CONFIG.lock().await; // may be held across .await
//!     let _ = LINES.send(u32::from(config[0])).await;
//! }
//!
//! async fn consumer() {
//!     while let Some(line) = LINES.recv().await {
//!         let _ = line;
//!     }
//!     SHUTDOWN.notify_waiters();
//! }
//! ```

mod channel;
mod mutex;
mod notify;
mod spin;
mod wait_list;

pub use channel::{Channel, Closed, RecvFuture, SendFuture, TryRecvError, TrySendError};
pub use mutex::{Lock, Mutex, MutexGuard};
pub use notify::{Notified, Notify};
pub use spin::{SpinMutex, SpinMutexGuard};

/// How many wakers a broadcast ([`Notify::notify_waiters`], [`Channel::close`]) collects
/// under the spin lock before releasing it and waking them.
pub const WAKE_BATCH: usize = 16;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
