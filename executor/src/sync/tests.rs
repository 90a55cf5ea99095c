//! Unit tests of the primitives, polled by hand with counting wakers: every interleaving that
//! matters (wait, wake, cancel, close) is driven step by step and checked. They run on the host
//! kernel (the spin lock is a real `KSPIN_LOCK`) and under Miri (`cargo +nightly miri test -p
//! wsk-executor --lib sync`), which checks the wait lists' pointer code.

use std::boxed::Box;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use wsk_sys::{DISPATCH_LEVEL, KeGetCurrentIrql, KeLowerIrql, KeRaiseIrql, PASSIVE_LEVEL};

use super::*;

/// A waker that counts its wakes.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A boxed future with its own counting waker.
struct Probe<F: Future> {
    future: Pin<Box<F>>,
    wakes: Arc<CountingWaker>,
    waker: Waker,
}

impl<F: Future> Probe<F> {
    fn new(future: F) -> Self {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        Self {
            future: Box::pin(future),
            wakes: counter,
            waker,
        }
    }

    fn poll(&mut self) -> Poll<F::Output> {
        self.future
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }

    fn wakes(&self) -> usize {
        self.wakes.0.load(Ordering::SeqCst)
    }

    /// Polls, expecting `Ready`.
    fn ready(&mut self) -> F::Output {
        match self.poll() {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("expected Ready"),
        }
    }

    /// Polls, expecting `Pending`.
    fn pending(&mut self) {
        assert!(self.poll().is_pending(), "expected Pending");
    }
}

// ---- SpinMutex ----

#[test]
fn spin_mutex_raises_to_dispatch_and_restores_passive() {
    static VALUE: SpinMutex<u32> = SpinMutex::new(1);
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    {
        let mut guard = VALUE.lock();
        assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
        *guard += 1;
    }
    assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
    assert_eq!(*VALUE.lock(), 2);
}

#[test]
fn spin_mutex_at_dispatch_stays_at_dispatch() {
    let value = SpinMutex::new(0_u8);
    // SAFETY: raising from PASSIVE_LEVEL; lowered again below.
    let previous = unsafe { KeRaiseIrql(DISPATCH_LEVEL) };
    {
        let _guard = value.lock();
        assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    }
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    // SAFETY: `previous` came from the matching KeRaiseIrql.
    unsafe { KeLowerIrql(previous) };
}

#[test]
fn spin_mutex_excludes_across_threads() {
    const THREADS: usize = 4;
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };
    // Two fields updated non-atomically: a torn update shows as a mismatch.
    let shared = Arc::new(SpinMutex::new((0_usize, 0_usize)));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let mut pair = shared.lock();
                    assert_eq!(pair.0, pair.1);
                    pair.0 += 1;
                    std::hint::spin_loop();
                    pair.1 += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let pair = *shared.lock();
    assert_eq!(pair, (THREADS * ROUNDS, THREADS * ROUNDS));
}

#[test]
fn spin_mutex_get_mut_into_inner_and_debug() {
    let mut value = SpinMutex::new(5_u32);
    *value.get_mut() += 1;
    assert_eq!(std::format!("{:?}", value.lock()), "6");
    assert_eq!(std::format!("{value:?}"), "SpinMutex { .. }");
    assert_eq!(value.into_inner(), 6);
}

// ---- Notify ----

#[test]
fn notify_one_without_waiter_stores_one_permit() {
    let notify = Notify::new();
    notify.notify_one();
    notify.notify_one(); // still one permit
    Probe::new(notify.notified()).ready();
    let mut second = Probe::new(notify.notified());
    second.pending();
    assert_eq!(second.wakes(), 0);
}

#[test]
fn notify_one_wakes_waiters_in_order() {
    let notify = Notify::new();
    let mut first = Probe::new(notify.notified());
    let mut second = Probe::new(notify.notified());
    first.pending();
    second.pending();
    notify.notify_one();
    assert_eq!((first.wakes(), second.wakes()), (1, 0));
    first.ready();
    second.pending();
    notify.notify_one();
    assert_eq!(second.wakes(), 1);
    second.ready();
    // Both notifications went to waiters: no permit left.
    Probe::new(notify.notified()).pending();
}

#[test]
fn notify_waiters_completes_earlier_futures_only_and_stores_nothing() {
    let notify = Notify::new();
    let mut polled = Probe::new(notify.notified());
    let mut unpolled = Probe::new(notify.notified());
    polled.pending();
    notify.notify_waiters();
    assert_eq!(polled.wakes(), 1);
    polled.ready();
    unpolled.ready(); // created before the call
    let mut later = Probe::new(notify.notified());
    later.pending();
    assert_eq!(later.wakes(), 0);
}

#[test]
fn notify_waiters_wakes_more_than_a_batch() {
    let notify = Notify::new();
    let mut waiters: Vec<_> = (0..WAKE_BATCH * 2 + 3)
        .map(|_| Probe::new(notify.notified()))
        .collect();
    for waiter in &mut waiters {
        waiter.pending();
    }
    notify.notify_waiters();
    for waiter in &mut waiters {
        assert_eq!(waiter.wakes(), 1);
        waiter.ready();
    }
}

#[test]
fn dropped_chosen_waiter_passes_the_notification_on() {
    let notify = Notify::new();
    let mut chosen = Probe::new(notify.notified());
    let mut next = Probe::new(notify.notified());
    chosen.pending();
    next.pending();
    notify.notify_one();
    drop(chosen); // chosen but never completed
    assert_eq!(next.wakes(), 1);
    next.ready();

    // With nobody else waiting, it goes back to the permit.
    let mut alone = Probe::new(notify.notified());
    alone.pending();
    notify.notify_one();
    drop(alone);
    Probe::new(notify.notified()).ready();
}

#[test]
fn dropped_waiting_future_leaves_the_queue() {
    let notify = Notify::new();
    let mut gone = Probe::new(notify.notified());
    gone.pending();
    drop(gone);
    notify.notify_one(); // nobody waits: a permit, not a lost wake-up
    Probe::new(notify.notified()).ready();
}

// ---- Mutex ----

#[test]
fn mutex_lock_try_lock_and_hand_off_in_order() {
    let mutex = Mutex::new(0_u32);
    let mut held = Probe::new(mutex.lock()).ready();
    *held += 1;
    assert!(mutex.try_lock().is_none());
    let mut first = Probe::new(mutex.lock());
    let mut second = Probe::new(mutex.lock());
    first.pending();
    second.pending();
    drop(held);
    assert_eq!((first.wakes(), second.wakes()), (1, 0));
    // Handed to `first`: a barging try_lock does not get it.
    assert!(mutex.try_lock().is_none());
    let mut guard = first.ready();
    *guard += 1;
    drop(guard);
    assert_eq!(second.wakes(), 1);
    assert_eq!(*second.ready(), 2);
    assert_eq!(*mutex.try_lock().unwrap(), 2);
}

#[test]
fn mutex_lock_dropped_after_hand_off_passes_the_lock_on() {
    let mutex = Mutex::new(());
    let held = mutex.try_lock().unwrap();
    let mut handed = Probe::new(mutex.lock());
    let mut next = Probe::new(mutex.lock());
    handed.pending();
    next.pending();
    drop(held);
    drop(handed); // given the lock, never took it
    assert_eq!(next.wakes(), 1);
    drop(next.ready());

    // With nobody waiting, the lock becomes free.
    let held = mutex.try_lock().unwrap();
    let mut handed = Probe::new(mutex.lock());
    handed.pending();
    drop(held);
    drop(handed);
    assert!(mutex.try_lock().is_some());
}

#[test]
fn mutex_lock_dropped_while_queued_leaves_the_queue() {
    let mutex = Mutex::new(7_u8);
    let held = mutex.try_lock().unwrap();
    let mut gone = Probe::new(mutex.lock());
    gone.pending();
    drop(gone);
    drop(held);
    assert_eq!(*mutex.try_lock().unwrap(), 7);
    assert_eq!(std::format!("{mutex:?}"), "Mutex { .. }");
}

// ---- Channel ----

#[test]
fn channel_try_send_try_recv_fifo_and_full() {
    let channel: Channel<u32, 2> = Channel::new();
    assert_eq!(channel.try_recv(), Err(TryRecvError::Empty));
    channel.try_send(1).unwrap();
    channel.try_send(2).unwrap();
    assert_eq!(channel.try_send(3), Err(TrySendError::Full(3)));
    assert_eq!((channel.len(), channel.capacity()), (2, 2));
    assert_eq!(channel.try_recv(), Ok(1));
    assert_eq!(channel.try_recv(), Ok(2));
    assert!(channel.is_empty());
}

#[test]
fn channel_waiting_senders_are_queued_in_order_as_room_appears() {
    let channel: Channel<u32, 1> = Channel::new();
    channel.try_send(0).unwrap();
    let mut first = Probe::new(channel.send(1));
    let mut second = Probe::new(channel.send(2));
    first.pending();
    second.pending();
    // A try_send does not jump the queue.
    assert_eq!(channel.try_send(9), Err(TrySendError::Full(9)));
    assert_eq!(channel.try_recv(), Ok(0));
    assert_eq!((first.wakes(), second.wakes()), (1, 0));
    assert_eq!(first.ready(), Ok(()));
    let mut receive = Probe::new(channel.recv());
    assert_eq!(receive.ready(), Some(1));
    assert_eq!(second.wakes(), 1);
    assert_eq!(second.ready(), Ok(()));
    assert_eq!(channel.try_recv(), Ok(2));
}

#[test]
fn channel_receiver_waits_and_is_woken_by_a_send() {
    let channel: Channel<u32, 4> = Channel::new();
    let mut receive = Probe::new(channel.recv());
    receive.pending();
    channel.try_send(5).unwrap();
    assert_eq!(receive.wakes(), 1);
    assert_eq!(receive.ready(), Some(5));
    let mut send = Probe::new(channel.send(6));
    assert_eq!(send.ready(), Ok(()));
    assert_eq!(Probe::new(channel.recv()).ready(), Some(6));
}

#[test]
fn channel_close_returns_values_and_drains() {
    let channel: Channel<u32, 1> = Channel::new();
    channel.try_send(1).unwrap();
    let mut senders: Vec<_> = (0..WAKE_BATCH + 4)
        .map(|i| Probe::new(channel.send(100 + u32::try_from(i).unwrap())))
        .collect();
    for sender in &mut senders {
        sender.pending();
    }
    channel.close();
    assert!(channel.is_closed());
    for (i, sender) in senders.iter_mut().enumerate() {
        assert_eq!(sender.wakes(), 1);
        assert_eq!(sender.ready(), Err(Closed(100 + u32::try_from(i).unwrap())));
    }
    assert_eq!(channel.try_send(2), Err(TrySendError::Closed(2)));
    assert_eq!(Probe::new(channel.send(3)).ready(), Err(Closed(3)));
    // Queued before the close: still received, then the end.
    assert_eq!(Probe::new(channel.recv()).ready(), Some(1));
    assert_eq!(Probe::new(channel.recv()).ready(), None);
    assert_eq!(channel.try_recv(), Err(TryRecvError::Closed));
}

#[test]
fn channel_close_wakes_waiting_receivers() {
    let channel: Channel<u32, 1> = Channel::new();
    let mut receive = Probe::new(channel.recv());
    receive.pending();
    channel.close();
    assert_eq!(receive.wakes(), 1);
    assert_eq!(receive.ready(), None);
}

#[test]
fn channel_dropped_send_drops_its_value_and_leaves_the_queue() {
    let channel: Channel<Arc<()>, 1> = Channel::new();
    let value = Arc::new(());
    channel.try_send(Arc::clone(&value)).unwrap();
    let mut waiting = Probe::new(channel.send(Arc::clone(&value)));
    waiting.pending();
    assert_eq!(Arc::strong_count(&value), 3);
    drop(waiting);
    assert_eq!(Arc::strong_count(&value), 2);
    drop(channel.try_recv().unwrap());
    // The dropped sender's value did not move in.
    assert_eq!(channel.try_recv(), Err(TryRecvError::Empty));
    channel.try_send(Arc::clone(&value)).unwrap();
    drop(channel);
    assert_eq!(Arc::strong_count(&value), 1);
}

#[test]
fn channel_woken_receiver_dropped_passes_the_wake_on() {
    let channel: Channel<u32, 2> = Channel::new();
    let mut first = Probe::new(channel.recv());
    let mut second = Probe::new(channel.recv());
    first.pending();
    second.pending();
    channel.try_send(1).unwrap();
    assert_eq!((first.wakes(), second.wakes()), (1, 0));
    drop(first);
    assert_eq!(second.wakes(), 1);
    assert_eq!(second.ready(), Some(1));
}

#[test]
fn channel_errors_and_debug() {
    let channel: Channel<u8, 3> = Channel::new();
    channel.try_send(1).unwrap();
    assert_eq!(
        std::format!("{channel:?}"),
        "Channel { len: 1, capacity: 3, closed: false, .. }"
    );
    assert_eq!(TrySendError::Full(4_u8).into_inner(), 4);
    assert_eq!(std::format!("{}", Closed(1_u8)), "the channel is closed");
    assert_eq!(
        std::format!("{:?}", TrySendError::Closed(1_u8)),
        "Closed(..)"
    );
    assert_eq!(
        std::format!("{}", TryRecvError::Empty),
        "the channel is empty"
    );
}
