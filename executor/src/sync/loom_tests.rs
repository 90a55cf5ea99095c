//! loom models of the primitives: every interleaving (within the preemption bound) of locks,
//! waits, wakes, cancels and closes on two or three threads standing for processors.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p wsk-executor --release --lib loom`.
//!
//! What they check: mutual exclusion (the protected data is a loom `UnsafeCell`, so two
//! unordered accesses are a data race loom reports); no lost wake-up (waits go through
//! `loom::future::block_on`, which parks the thread: a wake that never comes is a deadlock loom
//! reports); a waiting future dropped midway does not swallow the wake-up meant for the others;
//! values are neither lost nor duplicated across a close.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

use super::*;

/// Wakes a thread parked in [`block_on`].
struct Unparker(thread::Thread);

impl Wake for Unparker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread, parking between polls: a wake-up that never comes leaves the
/// thread parked for good, which loom reports as a deadlock.
fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(std::sync::Arc::new(Unparker(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        thread::park();
    }
}

/// Polls `future` once with a waker that does nothing, then drops it: a task cancelled while it
/// waited (or just after it was chosen). True if that one poll completed it.
fn poll_once_then_drop<F: Future>(future: F) -> bool {
    let mut future = pin!(future);
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

#[test]
fn loom_spin_mutex_excludes() {
    loom::model(|| {
        let shared = Arc::new(SpinMutex::new(UnsafeCell::new(0_u32)));
        let other = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            let guard = other.lock();
            // SAFETY: the guard holds the lock (loom reports a race if it did not exclude).
            guard.with_mut(|value| unsafe { *value += 1 });
        });
        {
            let guard = shared.lock();
            // SAFETY: as above.
            guard.with_mut(|value| unsafe { *value += 1 });
        }
        thread.join().unwrap();
        let guard = shared.lock();
        // SAFETY: as above.
        assert_eq!(guard.with(|value| unsafe { *value }), 2);
    });
}

#[test]
fn loom_notify_one_is_never_lost() {
    loom::model(|| {
        let notify = Arc::new(Notify::new());
        let other = Arc::clone(&notify);
        let thread = thread::spawn(move || other.notify_one());
        // Before, during or after the wait: the permit or the wake-up must reach us.
        block_on(notify.notified());
        thread.join().unwrap();
    });
}

#[test]
fn loom_notify_dropped_waiter_passes_the_wake_on() {
    loom::model(|| {
        let notify = Arc::new(Notify::new());
        let canceller = Arc::clone(&notify);
        let notifier = Arc::clone(&notify);
        let cancelled = thread::spawn(move || {
            if poll_once_then_drop(canceller.notified()) {
                // It took the permit and completed: the notification was its, so it forwards
                // it by hand. Every other outcome must reach us by itself.
                canceller.notify_one();
            }
        });
        let thread = thread::spawn(move || notifier.notify_one());
        // Whether notify_one chose the cancelled waiter (before its drop) or not, we get it.
        block_on(notify.notified());
        cancelled.join().unwrap();
        thread.join().unwrap();
    });
}

#[test]
fn loom_notify_waiters_with_a_flag_is_never_lost() {
    loom::model(|| {
        let notify = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let (other, other_stop) = (Arc::clone(&notify), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            other_stop.store(true, Ordering::Release);
            other.notify_waiters();
        });
        loop {
            let notified = notify.notified();
            if stop.load(Ordering::Acquire) {
                break;
            }
            block_on(notified);
        }
        thread.join().unwrap();
    });
}

#[test]
fn loom_mutex_excludes_and_hands_off() {
    loom::model(|| {
        let mutex = Arc::new(Mutex::new(UnsafeCell::new(0_u32)));
        let other = Arc::clone(&mutex);
        let thread = thread::spawn(move || {
            block_on(async {
                let guard = other.lock().await;
                // SAFETY: the guard owns the lock.
                guard.with_mut(|value| unsafe { *value += 1 });
            });
        });
        block_on(async {
            let guard = mutex.lock().await;
            // SAFETY: as above.
            guard.with_mut(|value| unsafe { *value += 1 });
        });
        thread.join().unwrap();
        let guard = mutex.try_lock().expect("free once both are done");
        // SAFETY: as above.
        assert_eq!(guard.with(|value| unsafe { *value }), 2);
    });
}

#[test]
fn loom_mutex_cancelled_lock_does_not_strand_the_next() {
    loom::model(|| {
        // Leaked: the guard moves to another thread, so the mutex must be 'static.
        let mutex: &'static Mutex<()> = std::boxed::Box::leak(std::boxed::Box::new(Mutex::new(())));
        let held = mutex.try_lock().expect("fresh mutex");
        // If its one poll gets the lock, the guard it returns is dropped at once: an unlock.
        let cancelled = thread::spawn(move || {
            poll_once_then_drop(mutex.lock());
        });
        let unlocker = thread::spawn(move || drop(held));
        // The lock may be handed to the cancelled future first: it must come on to us.
        drop(block_on(mutex.lock()));
        cancelled.join().unwrap();
        unlocker.join().unwrap();
    });
}

#[test]
fn loom_channel_two_senders_one_receiver() {
    loom::model(|| {
        let channel: Arc<Channel<u32, 1>> = Arc::new(Channel::new());
        let first = Arc::clone(&channel);
        let second = Arc::clone(&channel);
        let one = thread::spawn(move || block_on(first.send(1)).unwrap());
        let two = thread::spawn(move || block_on(second.send(2)).unwrap());
        let mut received = [block_on(channel.recv()), block_on(channel.recv())];
        received.sort_unstable();
        assert_eq!(received, [Some(1), Some(2)]);
        one.join().unwrap();
        two.join().unwrap();
        assert_eq!(channel.try_recv(), Err(TryRecvError::Empty));
    });
}

#[test]
fn loom_channel_close_while_a_sender_waits() {
    loom::model(|| {
        let channel: Arc<Channel<u32, 1>> = Arc::new(Channel::new());
        channel.try_send(1).unwrap();
        let sender = Arc::clone(&channel);
        let closer = Arc::clone(&channel);
        let waiting = thread::spawn(move || block_on(sender.send(2)));
        let close = thread::spawn(move || closer.close());
        let mut received = Vec::new();
        while let Some(value) = block_on(channel.recv()) {
            received.push(value);
        }
        close.join().unwrap();
        // Every value is either received or handed back, never both, never lost.
        match waiting.join().unwrap() {
            Ok(()) => assert_eq!(received, [1, 2]),
            Err(Closed(value)) => {
                assert_eq!(value, 2);
                assert_eq!(received, [1]);
            }
        }
    });
}

#[test]
fn loom_channel_cancelled_receiver_passes_the_wake_on() {
    loom::model(|| {
        let channel: Arc<Channel<u32, 1>> = Arc::new(Channel::new());
        // This thread's receiver waits first, so the value goes to it ...
        let mut first = std::boxed::Box::pin(channel.recv());
        assert!(
            first
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        let other = Arc::clone(&channel);
        let waiting = thread::spawn(move || block_on(other.recv()));
        channel.try_send(7).unwrap();
        // ... and it gives up: the waiting thread (queued behind it, or not yet) gets the value.
        drop(first);
        assert_eq!(waiting.join().unwrap(), Some(7));
    });
}
