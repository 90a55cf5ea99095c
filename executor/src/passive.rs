//! Work handed from a runner's task to `PASSIVE_LEVEL`: [`run_at_passive`] queues a
//! [`PassiveWork`] on the system thread of the runner whose task is being polled, which runs
//! it at `PASSIVE_LEVEL` between its polls. For the few kernel calls a task polled at
//! `DISPATCH_LEVEL` (a DPC runner's) cannot make itself, such as `WskGetAddressInfo`:
//! `wsk_net::lookup_host` and `TcpStream::connect_host` use it.
//!
//! Why the runner's thread and not a thread or work item of its own: the runner's shutdown
//! already waits for that thread, so work queued by a task is finished before the runner's
//! shutdown returns and the driver can unload; no code of the driver runs afterwards. Work
//! runs one at a time, in queueing order; a long piece delays the thread's other duties (the
//! DPC runner's hand-off under load, or the passive runner's polling), so keep it short:
//! one kernel call, then wake the task.
//!
//! No allocation here: the caller owns the [`PassiveWork`] (in pool memory, say) until its
//! function is called.

use core::ptr::NonNull;
use core::task::Waker;

pub use crate::raw::PassiveWork;

/// Why [`run_at_passive`] did not queue the work (it was not touched; the caller still owns
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PassiveError {
    /// The waker is not a runner task's (a `block_on` future or another executor's): no
    /// runner thread to hand the work to.
    NotARunnerTask,
    /// The runner is not running (not started yet, or shutting down).
    NotRunning,
}

impl core::fmt::Display for PassiveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotARunnerTask => "not polled by a runner: no thread to run PASSIVE_LEVEL work",
            Self::NotRunning => "the runner is not running",
        })
    }
}

impl core::error::Error for PassiveError {}

/// Queues `work` on the system thread of the runner whose task `waker` belongs to (pass the
/// polling context's waker); the thread calls its function at `PASSIVE_LEVEL`, soon, and
/// before the runner's [`shutdown`](crate::Runner::shutdown) returns.
///
/// # Errors
/// [`PassiveError::NotARunnerTask`] when `waker` is not a runner task's;
/// [`PassiveError::NotRunning`] when that runner is not running (or is shutting down and its
/// thread has stopped taking work). The work is not queued then.
///
/// # Safety
/// `work` is valid and not queued, and stays valid (not moved, not freed) until its function
/// has been called; the function may free it. The function runs at `PASSIVE_LEVEL` on another
/// thread, possibly while the task goes on: what it touches must be shareable.
///
/// # IRQL
/// <= `DISPATCH_LEVEL`.
pub unsafe fn run_at_passive(
    waker: &Waker,
    work: NonNull<PassiveWork>,
) -> Result<(), PassiveError> {
    let Some(executor) = crate::raw::executor_of_waker::<crate::runner::RunnerPender>(waker) else {
        return Err(PassiveError::NotARunnerTask);
    };
    // SAFETY: a runner executor's context is null or its 'static runner (`Runner::start`).
    let Some(runner) = (unsafe { executor.context().cast::<crate::Runner>().as_ref() }) else {
        return Err(PassiveError::NotRunning);
    };
    // SAFETY: forwarded from the caller.
    if unsafe { runner.queue_passive_work(work) } {
        Ok(())
    } else {
        Err(PassiveError::NotRunning)
    }
}
