//! [`JoinHandle`]: a task's output as a future, and the means to abort it.

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::state::{Abort, HandleDropped};
use super::task::{TaskHeader, TaskRef, free_slot, wake_task_erased};

/// Why a [`JoinHandle`] has no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The task was aborted, or its executor shut down, before it finished.
    Cancelled,
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("task was cancelled")
    }
}

impl core::error::Error for JoinError {}

/// The handle to a spawned task: await it for the output, [`abort`](Self::abort) it, or drop it
/// to let the task run on detached.
///
/// The output waits in the task's slot until the handle takes it; the slot is reused after the
/// task finished and the handle is gone.
#[must_use = "dropping a JoinHandle detaches the task"]
pub struct JoinHandle<T> {
    task: TaskRef,
    /// Set once the output (or the cancellation) was returned.
    finished: bool,
    /// Set once the handle registered a waker in the task's `join_waker`: only then does its
    /// drop have a waker to take out (the handle is the only party that registers one).
    registered: bool,
    _output: PhantomData<T>,
}

// SAFETY: the handle only reaches the task through its atomic state word and, after DONE, the
// output, which is `Send`.
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only allows `abort` and `is_finished`, which are atomic operations.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// # Safety
    /// `task` is a spawned task in 'static storage with HANDLE set for this handle, and its
    /// output type is `T`.
    pub(crate) unsafe fn new(task: TaskRef) -> Self {
        Self {
            task,
            finished: false,
            registered: false,
            _output: PhantomData,
        }
    }

    fn header(&self) -> &'static TaskHeader {
        self.task.header()
    }

    /// Asks the task to stop: its future is dropped in place on the executor (not here) before
    /// its next poll. Awaiting the handle afterwards gives [`JoinError::Cancelled`], unless the
    /// task had already finished.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (it wakes the task).
    pub fn abort(&self) {
        if self.header().state.abort() == Abort::WakeTask {
            wake_task_erased(self.task);
        }
    }

    /// True once the task finished or was dropped: awaiting the handle will not wait.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.header().state.is_done()
    }

    fn take_output(&mut self) -> Result<T, JoinError> {
        self.finished = true;
        let mut output: Option<T> = None;
        // SAFETY: DONE is set (we observed it with Acquire), so the spawn's write of the vtable
        // is ordered before us.
        let vtable = unsafe { self.header().vtable() };
        // SAFETY: DONE is set, so the executor no longer touches the stage, and the slot stays
        // ours while HANDLE is set. The stage's output type is T.
        unsafe { (vtable.take_output)(self.task, (&raw mut output).cast()) };
        output.ok_or(JoinError::Cancelled)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    ///
    /// # Panics
    /// If polled again after it returned `Ready`.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.finished, "JoinHandle polled after it completed");
        if self.is_finished() {
            return Poll::Ready(self.take_output());
        }
        self.registered = true;
        self.header().join_waker.register(cx.waker());
        if self.is_finished() {
            return Poll::Ready(self.take_output());
        }
        Poll::Pending
    }
}

impl<T> Drop for JoinHandle<T> {
    /// Detaches the task; frees the slot if it already finished.
    fn drop(&mut self) {
        let header = self.header();
        if self.registered {
            // Ours to remove before the slot can be freed; a handle that never registered
            // skips the two atomic operations (a detached spawn's common case).
            drop(header.join_waker.take());
        }
        if header.state.drop_handle() == HandleDropped::FreeSlot {
            // SAFETY: the task is DONE and we cleared HANDLE: the slot is ours to free.
            unsafe { free_slot(self.task) };
        }
    }
}

impl<T> core::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("task", &self.task)
            .field("finished", &self.is_finished())
            .field("registered", &self.registered)
            .finish()
    }
}
