//! `wsk_executor::sync` on the host kernel: many tasks of real runners (DPCs on the emulated
//! processors, the passive thread) sharing state through the primitives.
//!
//! Every wait is bounded and fails loudly: joins go through `join_within`, shutdowns through
//! `shutdown_within`. No test asserts an upper bound on time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wsk_executor::sync::{Channel, Closed, Mutex, Notify, SpinMutex, TrySendError};
use wsk_executor::{
    Budget, JoinError, JoinHandle, Runner, RunnerKind, TaskPool, block_on, timeout, yield_now,
};
use wsk_host::testing::BOUND;
use wsk_sys::{DISPATCH_LEVEL, KeGetCurrentIrql, PASSIVE_LEVEL};

mod host;

use host::{current_cpu, shutdown_within};

/// Waits for a task's output, failing the test after [`BOUND`].
fn join_within<T: Send>(handle: JoinHandle<T>) -> Result<T, JoinError> {
    host::on_kernel_thread(|| {
        block_on(timeout(BOUND, handle)).expect("task did not finish within the bound")
    })
}

/// Marks the processor the caller runs on in `cpus`.
fn note_cpu(cpus: &AtomicU64) {
    cpus.fetch_or(1 << (current_cpu() % 64), Ordering::Relaxed);
}

const TASKS: usize = 8;
const ROUNDS: u64 = 300;

#[test]
fn locks_keep_shared_pairs_consistent_across_dpc_tasks() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<1024, TASKS> = TaskPool::new();
    // Each pair is updated in two steps; a reader or writer seeing the halves differ means
    // the lock did not exclude.
    static SPIN_PAIR: SpinMutex<(u64, u64)> = SpinMutex::new((0, 0));
    static ASYNC_PAIR: Mutex<(u64, u64)> = Mutex::new((0, 0));
    static CPUS: AtomicU64 = AtomicU64::new(0);
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            RUNNER
                .spawn(&POOL, async {
                    for _ in 0..ROUNDS {
                        note_cpu(&CPUS);
                        {
                            let mut pair = SPIN_PAIR.lock();
                            assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
                            assert_eq!(pair.0, pair.1);
                            pair.0 += 1;
                            std::hint::spin_loop();
                            pair.1 += 1;
                        }
                        let mut pair = ASYNC_PAIR.lock().await;
                        assert_eq!(pair.0, pair.1);
                        pair.0 += 1;
                        // Held across a suspension: other tasks run meanwhile and must wait.
                        yield_now().await;
                        pair.1 += 1;
                    }
                })
                .unwrap()
        })
        .collect();
    for handle in handles {
        assert_eq!(join_within(handle), Ok(()));
    }
    let expected = TASKS as u64 * ROUNDS;
    assert_eq!(*SPIN_PAIR.lock(), (expected, expected));
    assert_eq!(
        *ASYNC_PAIR.try_lock().expect("no task holds it"),
        (expected, expected)
    );
    let cpus = CPUS.load(Ordering::Relaxed);
    assert_ne!(cpus, 0);
    println!("tasks ran on processors {cpus:#b}");
    shutdown_within(&RUNNER);
}

#[test]
fn spin_mutex_restores_passive_level_on_the_passive_runner() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 1> = TaskPool::new();
    static COUNTER: SpinMutex<u32> = SpinMutex::new(0);
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Passive)).unwrap();
    let handle = RUNNER
        .spawn(&POOL, async {
            let before = KeGetCurrentIrql();
            let inside = {
                let mut counter = COUNTER.lock();
                *counter += 1;
                KeGetCurrentIrql()
            };
            (before, inside, KeGetCurrentIrql())
        })
        .unwrap();
    assert_eq!(
        join_within(handle),
        Ok((PASSIVE_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL))
    );
    assert_eq!(*COUNTER.lock(), 1);
    shutdown_within(&RUNNER);
}

#[test]
fn channel_carries_every_value_in_order_per_producer_then_closes() {
    const PRODUCERS: u32 = 4;
    const VALUES: u32 = 200;
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<1024, 8> = TaskPool::new();
    // Smaller than what is in flight: producers wait for room all the time.
    static CHANNEL: Channel<(u32, u32), 4> = Channel::new();
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let consumer = RUNNER
        .spawn(&POOL, async {
            let mut next = [0_u32; PRODUCERS as usize];
            let mut received = 0_u32;
            while let Some((producer, value)) = CHANNEL.recv().await {
                let expected = &mut next[producer as usize];
                assert_eq!(value, *expected, "producer {producer} out of order");
                *expected += 1;
                received += 1;
                if received == PRODUCERS * VALUES {
                    CHANNEL.close();
                }
            }
            received
        })
        .unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            RUNNER
                .spawn(&POOL, async move {
                    for value in 0..VALUES {
                        CHANNEL.send((producer, value)).await.unwrap();
                    }
                })
                .unwrap()
        })
        .collect();
    for handle in producers {
        assert_eq!(join_within(handle), Ok(()));
    }
    assert_eq!(join_within(consumer), Ok(PRODUCERS * VALUES));
    assert!(CHANNEL.is_closed());
    assert_eq!(CHANNEL.try_send((0, 0)), Err(TrySendError::Closed((0, 0))));
    let late = RUNNER
        .spawn(&POOL, async { CHANNEL.send((9, 9)).await })
        .unwrap();
    assert_eq!(join_within(late), Ok(Err(Closed((9, 9)))));
    shutdown_within(&RUNNER);
}

#[test]
fn notify_waiters_stops_every_waiting_task() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, TASKS> = TaskPool::new();
    static STOPPING: AtomicBool = AtomicBool::new(false);
    static STOP: Notify = Notify::new();
    static KICK: Notify = Notify::new();
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            RUNNER
                .spawn(&POOL, async {
                    let mut kicks = 0_u32;
                    loop {
                        let stop = STOP.notified();
                        if STOPPING.load(Ordering::Acquire) {
                            return kicks;
                        }
                        // Wait for either: a kick (one task each) or the stop (all).
                        let kick = KICK.notified();
                        let mut stop = core::pin::pin!(stop);
                        let mut kick = core::pin::pin!(kick);
                        core::future::poll_fn(|cx| {
                            if stop.as_mut().poll(cx).is_ready() {
                                return core::task::Poll::Ready(());
                            }
                            if kick.as_mut().poll(cx).is_ready() {
                                kicks += 1;
                                return core::task::Poll::Ready(());
                            }
                            core::task::Poll::Pending
                        })
                        .await;
                    }
                })
                .unwrap()
        })
        .collect();
    // Kicks go to waiting tasks or become the permit; none is lost, whoever takes it.
    for _ in 0..20 {
        KICK.notify_one();
        std::thread::yield_now();
    }
    STOPPING.store(true, Ordering::Release);
    STOP.notify_waiters();
    let mut kicks = 0;
    for handle in handles {
        kicks += join_within(handle).unwrap();
    }
    // The last kick may still sit in the permit (or with a task that stopped first).
    assert!(kicks <= 20, "more kicks taken ({kicks}) than given");
    shutdown_within(&RUNNER);
}
