//! Zero heap allocations after spawn in steady state: a counting global allocator watches a
//! window in which tasks are spawned (joined and detached), woken and polled thousands of times
//! and join handles are awaited.
//! Only allocations made on the test's own thread while the window is open are counted, so the
//! harness's other threads cannot disturb the count.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use wsk_executor::raw::{Executor, TaskPool};

mod counting_alloc;

use counting_alloc::{assert_counter_counts, count_allocations};

static PENDS: AtomicUsize = AtomicUsize::new(0);

unsafe fn pend(_: *const ()) {
    PENDS.fetch_add(1, Ordering::Relaxed);
}

/// Yields `rounds` times, waking itself each time, then returns the count.
async fn yielder(rounds: usize) -> usize {
    let mut left = rounds;
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if left == 0 {
            return Poll::Ready(());
        }
        left -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    rounds
}

#[test]
fn no_heap_allocation_after_spawn_in_steady_state() {
    static EXECUTOR: Executor = Executor::new(pend);
    static POOL: TaskPool<256, 8> = TaskPool::new();

    // Warm up once so one-time work (pool registration) is outside the window.
    let mut warm = pin!(POOL.spawn(&EXECUTOR, yielder(1)).unwrap());
    // Polled until nothing is queued: a runner polls again whenever the pender asks it to (a
    // task's yield re-queues it and pends) or work remains.
    while EXECUTOR.has_queued() {
        EXECUTOR.poll(usize::MAX, || false);
    }
    assert!(
        warm.as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    );

    let mut total = 0;
    let allocations = count_allocations(|| {
        for _ in 0..100 {
            let handles = [
                POOL.spawn(&EXECUTOR, yielder(50)).unwrap(),
                POOL.spawn(&EXECUTOR, yielder(50)).unwrap(),
                POOL.spawn(&EXECUTOR, yielder(50)).unwrap(),
            ];
            // A detached task too: its slot is freed by the executor, not by a handle.
            drop(POOL.spawn(&EXECUTOR, yielder(50)).unwrap());
            while EXECUTOR.has_queued() {
                EXECUTOR.poll(64, || false);
            }
            for handle in handles {
                let mut handle = pin!(handle);
                match handle
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()))
                {
                    Poll::Ready(Ok(rounds)) => total += rounds,
                    other => panic!("task did not finish: {other:?}"),
                }
            }
        }
    });

    assert_eq!(
        POOL.used(),
        1,
        "every slot was freed for reuse but the warm-up task's (its handle is alive)"
    );
    assert_eq!(total, 100 * 3 * 50, "every task ran to completion");
    assert_eq!(allocations, 0, "heap allocations in steady state");
    // The counter must be able to see allocations at all.
    assert_counter_counts();
}
