//! The queue behind `run_at_passive`: [`PassiveWork`] items in a lock-free stack that a
//! runner's thread takes whole and runs oldest first, and closes as it exits so that nothing
//! queued is left behind. Platform-neutral (no kernel calls), so it is loom-modelled
//! (`loom_tests.rs`) and run under Miri.

#![cfg_attr(
    all(loom, not(test)),
    allow(dead_code, reason = "its user, the runner, is not built under loom")
)]

use core::ptr::NonNull;

use super::sync::{AtomicPtr, Ordering, loom_const_fn};

/// A piece of work for [`run_at_passive`](crate::run_at_passive): a link for the runner's queue and the function the
/// thread calls. Embed it (first, in a `#[repr(C)]` struct) in the object the work needs, and
/// recover that object from the pointer `run` gets.
///
/// # IRQL
/// Any: a plain value.
#[repr(C)]
pub struct PassiveWork {
    /// The next work queued after this one (the queue is a lock-free stack).
    next: AtomicPtr<PassiveWork>,
    /// Called once, at `PASSIVE_LEVEL`, on the runner's thread.
    run: unsafe fn(NonNull<PassiveWork>),
}

impl PassiveWork {
    loom_const_fn! {
        /// Work that calls `run` with its own address when it runs.
        ///
        /// # IRQL
        /// Any (a constant initialiser).
        #[must_use]
        pub fn new(run: unsafe fn(NonNull<PassiveWork>)) -> Self {
            Self {
                next: AtomicPtr::new(core::ptr::null_mut()),
                run,
            }
        }
    }
}

impl core::fmt::Debug for PassiveWork {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PassiveWork").finish_non_exhaustive()
    }
}

/// The queue's closed mark: never a valid `PassiveWork` address (odd, below any allocation).
const CLOSED: *mut PassiveWork = core::ptr::dangling_mut::<PassiveWork>().wrapping_byte_sub(1);

/// A runner's queue of passive work: a lock-free stack that the thread takes whole.
pub(crate) struct PassiveQueue {
    head: AtomicPtr<PassiveWork>,
}

impl PassiveQueue {
    loom_const_fn! {
        pub(crate) fn new() -> Self {
            Self {
                head: AtomicPtr::new(core::ptr::null_mut()),
            }
        }
    }

    /// Opens the queue (again, after [`close`](Self::close)).
    pub(crate) fn open(&self) {
        let _ = self.head.compare_exchange(
            CLOSED,
            core::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Pushes `work`; false, leaving it alone, once closed.
    ///
    /// # Safety
    /// `work` is valid and not queued, and stays valid until its function is called.
    pub(crate) unsafe fn push(&self, work: NonNull<PassiveWork>) -> bool {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            if head == CLOSED {
                return false;
            }
            // SAFETY: `work` is valid and not queued (the caller's guarantee): only we touch
            // its link until the push below publishes it.
            unsafe { work.as_ref() }.next.store(head, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                work.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => head = actual,
            }
        }
    }

    /// Runs every queued piece of work, oldest first; with `close`, also closes the queue (no
    /// push succeeds afterwards), so nothing is left behind.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (the work's rule).
    pub(crate) fn run_all(&self, close: bool) {
        let replacement = if close { CLOSED } else { core::ptr::null_mut() };
        let taken = self.head.swap(replacement, Ordering::AcqRel);
        if taken == CLOSED {
            return;
        }
        // Reverse the stack into queueing order.
        let mut oldest_first: *mut PassiveWork = core::ptr::null_mut();
        let mut node = taken;
        while let Some(pointer) = NonNull::new(node) {
            // SAFETY: queued work stays valid until its function is called (push's contract),
            // and taking the stack made its links ours.
            let work = unsafe { pointer.as_ref() };
            node = work.next.load(Ordering::Relaxed);
            work.next.store(oldest_first, Ordering::Relaxed);
            // The queued pointer itself, not one derived from `work`: the function gets the
            // provenance of the whole object the work is embedded in.
            oldest_first = pointer.as_ptr();
        }
        while let Some(work) = NonNull::new(oldest_first) {
            // SAFETY: as above; read before the call, after which the work may be freed.
            let (next, run) = unsafe {
                let work = work.as_ref();
                (work.next.load(Ordering::Relaxed), work.run)
            };
            oldest_first = next;
            // SAFETY: called once, at PASSIVE_LEVEL (ours), as `PassiveWork` promises.
            unsafe { run(work) };
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::ptr::NonNull;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::vec::Vec;

    use super::{PassiveQueue, PassiveWork};

    /// A work item that records its number in `RAN` (order) when run.
    #[repr(C)]
    struct Numbered {
        work: PassiveWork,
        number: usize,
    }

    static RAN: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    static CALLS: AtomicUsize = AtomicUsize::new(0);

    unsafe fn record(work: NonNull<PassiveWork>) {
        // SAFETY: every work queued here is the first field of a live `Numbered`.
        let numbered = unsafe { work.cast::<Numbered>().as_ref() };
        RAN.lock().unwrap().push(numbered.number);
        CALLS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn work_runs_once_in_queueing_order_and_a_closed_queue_refuses_until_opened() {
        let queue = PassiveQueue::new();
        let items: Vec<Numbered> = (0..4)
            .map(|number| Numbered {
                work: PassiveWork::new(record),
                number,
            })
            .collect();
        let pointer = |index: usize| NonNull::from(&items[index]).cast::<PassiveWork>();
        for index in 0..3 {
            // SAFETY: live until the end of the test, queued once, run below.
            assert!(unsafe { queue.push(pointer(index)) });
        }
        queue.run_all(false);
        assert_eq!(*RAN.lock().unwrap(), [0, 1, 2]);
        queue.run_all(false);
        assert_eq!(CALLS.load(Ordering::SeqCst), 3, "each work runs once");

        queue.run_all(true);
        // SAFETY: as above; refused, so not queued.
        assert!(!unsafe { queue.push(pointer(3)) }, "closed");
        queue.run_all(true);
        assert_eq!(CALLS.load(Ordering::SeqCst), 3);
        queue.open();
        // SAFETY: as above.
        assert!(unsafe { queue.push(pointer(3)) }, "open again");
        queue.run_all(true);
        assert_eq!(*RAN.lock().unwrap(), [0, 1, 2, 3]);
    }
}
