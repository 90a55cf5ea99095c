//! The sync primitives never allocate: a counting global allocator watches a window in which
//! every primitive locks, waits, wakes, hands off, cancels and closes, with waiters queued
//! (their nodes live in the futures, on this thread's stack).
//! Only allocations made on the test's own thread while the window is open are counted, so the
//! harness's other threads cannot disturb the count. The host kernel's spin lock is part of
//! what runs in the window; a warm-up round first lets it size its per-thread bookkeeping.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use wsk_executor::sync::{Channel, Mutex, Notify, SpinMutex};

// The unit tests' host kernel: it exports the kernel functions the spin lock calls.
use wsk_host as _;

mod counting_alloc;

use counting_alloc::{assert_counter_counts, count_allocations};

static SPIN: SpinMutex<u64> = SpinMutex::new(0);
static MUTEX: Mutex<u64> = Mutex::new(0);
static NOTIFY: Notify = Notify::new();
static CHANNEL: Channel<[u8; 32], 2> = Channel::new();

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// One round of everything: uncontended and contended locks, queued waiters, hand-offs,
/// cancellations, a channel filled past capacity and drained.
fn exercise() {
    *SPIN.lock() += 1;

    let held = MUTEX.try_lock().expect("free");
    let mut first = pin!(MUTEX.lock());
    let mut second = pin!(MUTEX.lock());
    assert!(poll_once(first.as_mut()).is_pending());
    assert!(poll_once(second.as_mut()).is_pending());
    drop(held);
    match poll_once(first.as_mut()) {
        Poll::Ready(mut guard) => *guard += 1,
        Poll::Pending => panic!("the lock was handed to the first waiter"),
    }
    assert!(poll_once(second.as_mut()).is_ready());

    let mut waiting = pin!(NOTIFY.notified());
    assert!(poll_once(waiting.as_mut()).is_pending());
    NOTIFY.notify_one();
    assert!(poll_once(waiting.as_mut()).is_ready());
    let mut cancelled = pin!(NOTIFY.notified());
    assert!(poll_once(cancelled.as_mut()).is_pending());
    NOTIFY.notify_waiters();
    assert!(poll_once(cancelled.as_mut()).is_ready());

    CHANNEL.try_send([1; 32]).unwrap();
    CHANNEL.try_send([2; 32]).unwrap();
    let mut sender = pin!(CHANNEL.send([3; 32]));
    assert!(poll_once(sender.as_mut()).is_pending());
    for expected in 1..=3 {
        let mut receive = pin!(CHANNEL.recv());
        match poll_once(receive.as_mut()) {
            Poll::Ready(Some(value)) => assert_eq!(value, [expected; 32]),
            other => panic!(
                "expected value {expected}, got {:?}",
                other.map(|v| v.is_some())
            ),
        }
    }
    assert_eq!(poll_once(sender.as_mut()), Poll::Ready(Ok(())));
}

#[test]
fn sync_primitives_do_not_allocate() {
    exercise(); // warm-up: the host kernel's per-thread lock bookkeeping
    let allocations = count_allocations(|| {
        for _ in 0..100 {
            exercise();
        }
    });
    assert_eq!(allocations, 0, "the sync primitives allocated");
    // The counter must be able to see allocations at all.
    assert_counter_counts();
    assert_eq!(*SPIN.lock(), 101);
    assert_eq!(*MUTEX.try_lock().expect("free"), 101);
}
