//! std-thread tests of the task core: spawn, join, wake idempotence, wakes while running, the
//! budget, abort, full pools, close, and many tasks ping-ponging wakes across threads with
//! several threads polling one executor at once.

use std::boxed::Box;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;
use std::vec::Vec;

use super::*;

/// Counts pends and lets runner threads wait for one.
struct Signal {
    pends: Mutex<u64>,
    changed: Condvar,
}

impl Signal {
    const fn new() -> Self {
        Self {
            pends: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    fn count(&self) -> u64 {
        *self.pends.lock().unwrap()
    }

    /// Waits until the pend count differs from `seen`; false after the bound.
    fn wait_past(&self, seen: u64, bound: Duration) -> Option<u64> {
        let guard = self.pends.lock().unwrap();
        let (guard, result) = self
            .changed
            .wait_timeout_while(guard, bound, |pends| *pends == seen)
            .unwrap();
        (!result.timed_out()).then_some(*guard)
    }
}

unsafe fn pend_signal(context: *const ()) {
    // SAFETY: every test sets its executor's context to a static Signal.
    let signal = unsafe { &*context.cast::<Signal>() };
    *signal.pends.lock().unwrap() += 1;
    signal.changed.notify_all();
}

fn start(executor: &'static Executor, signal: &'static Signal) {
    // SAFETY: `pend_signal` expects a static Signal.
    unsafe { executor.set_context(std::ptr::from_ref(signal).cast()) };
}

/// Polls `future` on this thread until ready, parking between polls.
fn block_on_std<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
            return output;
        }
        thread::park_timeout(Duration::from_millis(100));
    }
}

fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    Pin::new(future).poll(&mut Context::from_waker(Waker::noop()))
}

/// A future that stays pending until `release` is set, keeps its latest waker in `waker`, and
/// counts its polls.
struct Gate {
    release: AtomicBool,
    waker: Mutex<Option<Waker>>,
    polls: AtomicUsize,
}

impl Gate {
    const fn new() -> Self {
        Self {
            release: AtomicBool::new(false),
            waker: Mutex::new(None),
            polls: AtomicUsize::new(0),
        }
    }

    fn wait(&'static self) -> impl Future<Output = usize> + Send + 'static {
        std::future::poll_fn(move |cx| {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.release.load(Ordering::SeqCst) {
                return Poll::Ready(self.polls.load(Ordering::SeqCst));
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn waker(&self) -> Waker {
        self.waker
            .lock()
            .unwrap()
            .clone()
            .expect("the task registered no waker yet")
    }
}

#[test]
fn raw_spawn_runs_and_join_returns_output() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 2> = TaskPool::new();
    start(&EXECUTOR, &SIGNAL);

    let mut handle = POOL.spawn(&EXECUTOR, async { 40 + 2 }).unwrap();
    assert_eq!(SIGNAL.count(), 1, "a spawn pends once");
    assert_eq!(POOL.used(), 1);
    assert!(poll_once(&mut handle).is_pending());
    let report = EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(
        report,
        PollReport {
            polled: 1,
            work_remains: false
        }
    );
    assert!(handle.is_finished());
    assert_eq!(poll_once(&mut handle), Poll::Ready(Ok(42)));
    assert_eq!(
        POOL.used(),
        1,
        "the slot is held until the handle is dropped"
    );
    drop(handle);
    assert_eq!(POOL.used(), 0);
    assert_eq!(EXECUTOR.live_tasks(), 0);
}

/// A waker that counts its wakes; its `Arc`'s strong count shows whether a clone was kept.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn raw_join_waker_is_woken_or_dropped_never_left_in_the_slot() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    static GATE: Gate = Gate::new();
    start(&EXECUTOR, &SIGNAL);

    // Registered, then the task finishes (the wake takes the clone), then the handle is dropped.
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut handle = POOL.spawn(&EXECUTOR, async { 7 }).unwrap();
    let mut cx = Context::from_waker(&waker);
    assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
    assert_eq!(Arc::strong_count(&counter), 3, "the handle keeps one clone");
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "finishing wakes the handle"
    );
    assert_eq!(Pin::new(&mut handle).poll(&mut cx), Poll::Ready(Ok(7)));
    drop(handle);
    assert_eq!(Arc::strong_count(&counter), 2, "no clone left behind");

    // Registered, then the handle is dropped before the task finishes: the drop takes the clone.
    let mut handle = POOL.spawn(&EXECUTOR, GATE.wait()).unwrap();
    assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(Arc::strong_count(&counter), 3, "the handle keeps one clone");
    drop(handle);
    assert_eq!(
        Arc::strong_count(&counter),
        2,
        "the drop took the clone out"
    );
    GATE.release.store(true, Ordering::SeqCst);
    GATE.waker().wake();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(POOL.used(), 0, "the detached task freed its slot");
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        1,
        "a detached finish wakes nobody"
    );
}

#[test]
fn raw_wake_is_idempotent() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    static GATE: Gate = Gate::new();
    start(&EXECUTOR, &SIGNAL);

    let handle = POOL.spawn(&EXECUTOR, GATE.wait()).unwrap();
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    let waker = GATE.waker();
    let pends = SIGNAL.count();
    waker.wake_by_ref();
    waker.wake_by_ref();
    let clone = waker.clone();
    clone.wake();
    assert_eq!(SIGNAL.count(), pends + 1, "three wakes queue the task once");
    assert_eq!(
        EXECUTOR.poll(usize::MAX, || false).polled,
        1,
        "the task was queued once"
    );
    assert_eq!(GATE.polls.load(Ordering::SeqCst), 2);
    GATE.release.store(true, Ordering::SeqCst);
    waker.wake();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(block_on_std(handle), Ok(3));
}

#[test]
fn raw_wake_while_running_requeues_once_and_pends() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    start(&EXECUTOR, &SIGNAL);

    // Wakes itself inline during each of its first four polls, as a completion routine running
    // before the issuing call returns would.
    let mut polls = 0;
    let handle = POOL
        .spawn(
            &EXECUTOR,
            std::future::poll_fn(move |cx| {
                polls += 1;
                if polls == 5 {
                    return Poll::Ready(polls);
                }
                cx.waker().wake_by_ref();
                cx.waker().wake_by_ref();
                Poll::Pending
            }),
        )
        .unwrap();
    // Each poll runs the one task; the poller re-queues it (two wakes during the poll, one
    // queue entry) and, as the queue was empty, pends once: the poll loop leaves tasks queued
    // during its batch to the next call.
    for round in 1..=5 {
        let pends = SIGNAL.count();
        let report = EXECUTOR.poll(usize::MAX, || false);
        assert_eq!(
            report,
            PollReport {
                polled: 1,
                work_remains: false
            }
        );
        let again = round < 5;
        assert_eq!(
            SIGNAL.count() - pends,
            u64::from(again),
            "one pend per re-queue"
        );
        assert_eq!(EXECUTOR.has_queued(), again);
    }
    assert_eq!(block_on_std(handle), Ok(5));
}

#[test]
fn raw_budget_stops_and_reports_remaining_work() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 10> = TaskPool::new();
    static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    start(&EXECUTOR, &SIGNAL);

    let handles: Vec<_> = (0..10)
        .map(|index| {
            POOL.spawn(&EXECUTOR, async move {
                ORDER.lock().unwrap().push(index);
            })
            .unwrap()
        })
        .collect();
    assert_eq!(
        SIGNAL.count(),
        1,
        "only the first push found the queue empty"
    );
    assert_eq!(
        EXECUTOR.poll(4, || false),
        PollReport {
            polled: 4,
            work_remains: true
        }
    );
    assert!(EXECUTOR.has_queued());
    let mut asked = 0;
    let report = EXECUTOR.poll(usize::MAX, || {
        asked += 1;
        asked == 3
    });
    assert_eq!(
        report,
        PollReport {
            polled: 3,
            work_remains: true
        },
        "time budget"
    );
    assert_eq!(
        EXECUTOR.poll(usize::MAX, || false),
        PollReport {
            polled: 3,
            work_remains: false
        }
    );
    let mut order = ORDER.lock().unwrap().clone();
    assert_eq!(&order[..4], &[0, 1, 2, 3], "a batch runs in wake order");
    order.sort_unstable();
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "every task ran once");
    for handle in handles {
        assert_eq!(block_on_std(handle), Ok(()));
    }
    assert_eq!(POOL.used(), 0);
}

/// A task that never finishes: each poll records its index in `order` and keeps its waker.
struct Ticker {
    index: usize,
    order: &'static Mutex<Vec<usize>>,
    waker: Mutex<Option<Waker>>,
}

impl Ticker {
    fn leak(index: usize, order: &'static Mutex<Vec<usize>>) -> &'static Self {
        Box::leak(Box::new(Self {
            index,
            order,
            waker: Mutex::new(None),
        }))
    }

    fn run(&'static self) -> impl Future<Output = ()> + Send + 'static {
        std::future::poll_fn(move |cx| {
            self.order.lock().unwrap().push(self.index);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        })
    }

    fn wake(&self) {
        self.waker
            .lock()
            .unwrap()
            .clone()
            .expect("not polled yet")
            .wake();
    }
}

/// Tasks left over by the budget run before tasks woken after them, and a task woken again
/// after its run goes behind every task woken before that: wake order across polls.
#[test]
fn raw_budget_keeps_wake_order_across_polls() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 9> = TaskPool::new();
    static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    start(&EXECUTOR, &SIGNAL);
    let tickers: Vec<_> = (0..9).map(|index| Ticker::leak(index, &ORDER)).collect();
    let handles: Vec<_> = tickers
        .iter()
        .map(|ticker| POOL.spawn(&EXECUTOR, ticker.run()).unwrap())
        .collect();
    while EXECUTOR.poll(4, || false).work_remains {}
    ORDER.lock().unwrap().clear();

    for ticker in &tickers[..7] {
        ticker.wake();
    }
    assert_eq!(EXECUTOR.poll(3, || false).polled, 3);
    // Woken after the cut: behind the four left over, in their own wake order.
    tickers[8].wake();
    tickers[0].wake();
    tickers[7].wake();
    assert!(EXECUTOR.has_queued());
    assert_eq!(
        EXECUTOR.poll(3, || false),
        PollReport {
            polled: 3,
            work_remains: true
        }
    );
    // Two more cuts, with a wake between them: it still goes behind the rest.
    tickers[1].wake();
    assert_eq!(EXECUTOR.poll(2, || false).polled, 2);
    assert_eq!(
        EXECUTOR.poll(usize::MAX, || false),
        PollReport {
            polled: 3,
            work_remains: false
        }
    );
    assert!(!EXECUTOR.has_queued());
    assert_eq!(
        *ORDER.lock().unwrap(),
        [0, 1, 2, 3, 4, 5, 6, 8, 0, 7, 1],
        "tasks ran in wake order"
    );
    for handle in handles {
        handle.abort();
    }
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(POOL.used(), 0);
}

/// A poll that finds another poll running the left-over tasks (here nested in one of them, as a
/// second CPU would be) returns at once with nothing polled, and the running poll reports work
/// remaining on its behalf even though its own tasks are done.
#[test]
fn raw_poll_finding_the_ready_list_held_leaves_its_work_to_the_holder() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 3> = TaskPool::new();
    static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    static NESTED: Mutex<Option<PollReport>> = Mutex::new(None);
    start(&EXECUTOR, &SIGNAL);
    let first = Ticker::leak(0, &ORDER);
    let second = Ticker::leak(1, &ORDER);
    let handles = [
        POOL.spawn(&EXECUTOR, first.run()).unwrap(),
        POOL.spawn(&EXECUTOR, second.run()).unwrap(),
        POOL.spawn(&EXECUTOR, async {
            *NESTED.lock().unwrap() = Some(EXECUTOR.poll(usize::MAX, || false));
        })
        .unwrap(),
    ];
    // A budget of one leaves two tasks over: the next poll holds the ready list.
    assert_eq!(EXECUTOR.poll(1, || false).polled, 1);
    assert_eq!(
        EXECUTOR.poll(usize::MAX, || false),
        PollReport {
            polled: 2,
            work_remains: true
        },
        "the nested poll's work was not reported"
    );
    assert_eq!(
        *NESTED.lock().unwrap(),
        Some(PollReport {
            polled: 0,
            work_remains: false
        })
    );
    // The list is free again: polls work as before.
    first.wake();
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    assert_eq!(*ORDER.lock().unwrap(), [0, 1, 0]);
    for handle in handles {
        handle.abort();
    }
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(POOL.used(), 0);
}

/// Counts drops of the values it is attached to.
struct DropCounter(&'static AtomicUsize);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn raw_abort_drops_future_on_executor() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    start(&EXECUTOR, &SIGNAL);

    let counter = DropCounter(&DROPS);
    let handle = POOL
        .spawn(&EXECUTOR, async move {
            let _counter = counter;
            std::future::pending::<()>().await;
        })
        .unwrap();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(EXECUTOR.live_tasks(), 1);
    handle.abort();
    assert_eq!(
        DROPS.load(Ordering::SeqCst),
        0,
        "abort does not drop on the caller's thread"
    );
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    assert_eq!(EXECUTOR.live_tasks(), 0);
    assert_eq!(block_on_std(handle), Err(JoinError::Cancelled));
    assert_eq!(POOL.used(), 0);
}

#[test]
fn raw_abort_after_finish_keeps_output() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    start(&EXECUTOR, &SIGNAL);

    let handle = POOL.spawn(&EXECUTOR, async { 7 }).unwrap();
    EXECUTOR.poll(usize::MAX, || false);
    handle.abort();
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 0);
    assert_eq!(block_on_std(handle), Ok(7));
}

#[test]
fn raw_full_pool_errors_and_slots_are_reused() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 2> = TaskPool::new();
    static NO_SLOTS: TaskPool<256, 0> = TaskPool::new();
    static GATE: Gate = Gate::new();
    static OUTPUT_DROPS: AtomicUsize = AtomicUsize::new(0);
    start(&EXECUTOR, &SIGNAL);

    assert_eq!(
        NO_SLOTS.spawn(&EXECUTOR, async {}).unwrap_err(),
        SpawnError::PoolFull
    );

    let first = POOL.spawn(&EXECUTOR, GATE.wait()).unwrap();
    let second = POOL
        .spawn(&EXECUTOR, async { DropCounter(&OUTPUT_DROPS) })
        .unwrap();
    assert_eq!(
        POOL.spawn(&EXECUTOR, async {}).unwrap_err(),
        SpawnError::PoolFull
    );
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(
        POOL.spawn(&EXECUTOR, async {}).unwrap_err(),
        SpawnError::PoolFull,
        "a finished task's slot holds its output until the handle goes"
    );
    drop(second);
    assert_eq!(
        OUTPUT_DROPS.load(Ordering::SeqCst),
        1,
        "an untaken output is dropped with the slot"
    );
    let third = POOL.spawn(&EXECUTOR, async { 3 }).unwrap();
    // Detach the pending task: its slot frees itself when it finishes.
    drop(first);
    assert_eq!(
        POOL.spawn(&EXECUTOR, async {}).unwrap_err(),
        SpawnError::PoolFull
    );
    GATE.release.store(true, Ordering::SeqCst);
    GATE.waker().wake();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(POOL.used(), 1, "the detached task freed its slot");
    assert_eq!(block_on_std(third), Ok(3));
    assert_eq!(POOL.used(), 0);
}

#[test]
fn raw_close_drops_every_task_and_refuses_spawns() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    start(&EXECUTOR, &SIGNAL);

    let mut handles = Vec::new();
    for _ in 0..3 {
        let counter = DropCounter(&DROPS);
        handles.push(
            POOL.spawn(&EXECUTOR, async move {
                let _counter = counter;
                std::future::pending::<()>().await;
            })
            .unwrap(),
        );
    }
    // One detached, never polled before the close.
    drop(handles.pop());
    assert_eq!(EXECUTOR.poll(2, || false).polled, 2);
    EXECUTOR.close();
    assert!(EXECUTOR.is_closed());
    assert!(!EXECUTOR.is_drained());
    assert_eq!(
        POOL.spawn(&EXECUTOR, async {}).unwrap_err(),
        SpawnError::Closed
    );
    EXECUTOR.poll(usize::MAX, || false);
    assert!(EXECUTOR.is_drained());
    assert_eq!(DROPS.load(Ordering::SeqCst), 3);
    for handle in handles {
        assert_eq!(block_on_std(handle), Err(JoinError::Cancelled));
    }
    assert_eq!(POOL.used(), 0);
}

#[test]
fn raw_reopen_needs_a_drained_executor_and_then_spawns_again() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 1> = TaskPool::new();
    start(&EXECUTOR, &SIGNAL);

    assert!(!EXECUTOR.reopen(), "open: nothing to reopen");
    let parked = POOL.spawn(&EXECUTOR, std::future::pending::<()>()).unwrap();
    EXECUTOR.close();
    assert!(!EXECUTOR.reopen(), "closed with a task still to drop");
    assert!(EXECUTOR.is_closed());
    EXECUTOR.poll(usize::MAX, || false);
    assert!(EXECUTOR.is_drained());
    assert_eq!(block_on_std(parked), Err(JoinError::Cancelled));
    assert!(EXECUTOR.reopen());
    assert!(!EXECUTOR.is_closed());
    let again = POOL.spawn(&EXECUTOR, async { 3 }).unwrap();
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    assert_eq!(block_on_std(again), Ok(3));
}

/// Two tasks passing a turn back and forth, each waking the other.
struct PingPong {
    turn: AtomicUsize,
    wakers: [Mutex<Option<Waker>>; 2],
    in_poll: [AtomicBool; 2],
}

impl PingPong {
    const fn new() -> Self {
        Self {
            turn: AtomicUsize::new(0),
            wakers: [Mutex::new(None), Mutex::new(None)],
            in_poll: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    /// Player `side` takes turns `side, side + 2, ...` up to `rounds * 2`.
    async fn play(&'static self, side: usize, rounds: usize) -> usize {
        let mut taken = 0;
        while taken < rounds {
            std::future::poll_fn(|cx| {
                assert!(
                    !self.in_poll[side].swap(true, Ordering::SeqCst),
                    "a task was polled on two threads at once"
                );
                let ready = self.turn.load(Ordering::SeqCst) % 2 == side;
                if !ready {
                    *self.wakers[side].lock().unwrap() = Some(cx.waker().clone());
                }
                // Re-check after registering, so a pass between the check and the store is seen.
                let ready = ready || self.turn.load(Ordering::SeqCst) % 2 == side;
                self.in_poll[side].store(false, Ordering::SeqCst);
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            taken += 1;
            self.turn.fetch_add(1, Ordering::SeqCst);
            let other = self.wakers[1 - side].lock().unwrap().take();
            if let Some(other) = other {
                other.wake();
            }
        }
        taken
    }
}

/// `close` racing spawns and polls on other threads, many times over: every spawn either fails
/// or its task is dropped by the close (none escapes to be polled for ever), and the executor
/// drains.
#[test]
fn raw_close_racing_spawns_and_polls_drains() {
    unsafe fn pend_nothing(_: *const ()) {}
    const ROUNDS: usize = if cfg!(miri) { 20 } else { 300 };
    static POOL: TaskPool<256, 8> = TaskPool::new();
    // A fresh executor per round (statics: Miri reports leaked ones).
    static EXECUTORS: [Executor; ROUNDS] = [const { Executor::new(pend_nothing) }; ROUNDS];
    for executor in &EXECUTORS {
        let idle = POOL.spawn(executor, std::future::pending::<()>()).unwrap();
        executor.poll(usize::MAX, || false);
        thread::scope(|scope| {
            scope.spawn(|| executor.close());
            scope.spawn(|| {
                for _ in 0..4 {
                    // Detached; a spawn after the close fails.
                    drop(POOL.spawn(executor, std::future::pending::<()>()));
                }
            });
            scope.spawn(|| {
                for _ in 0..20 {
                    executor.poll(usize::MAX, || false);
                }
            });
        });
        for _ in 0..4 {
            if executor.is_drained() {
                break;
            }
            executor.poll(usize::MAX, || false);
        }
        assert!(executor.is_drained(), "a task escaped the close");
        assert_eq!(block_on_std(idle), Err(JoinError::Cancelled));
        assert_eq!(POOL.used(), 0);
    }
}

#[test]
fn raw_ping_pong_across_threads_polling_concurrently() {
    const PAIRS: usize = if cfg!(miri) { 2 } else { 16 };
    const ROUNDS: usize = if cfg!(miri) { 10 } else { 500 };
    const POLLERS: usize = if cfg!(miri) { 2 } else { 3 };
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<512, 32> = TaskPool::new();
    static STOP: AtomicBool = AtomicBool::new(false);
    static GAMES: [PingPong; 16] = [const { PingPong::new() }; 16];
    start(&EXECUTOR, &SIGNAL);

    // Several threads poll the one executor, as a DPC re-queued while it runs does on two CPUs.
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            thread::spawn(|| {
                let mut seen = 0;
                while !STOP.load(Ordering::SeqCst) {
                    while EXECUTOR.poll(4, || false).work_remains {}
                    if let Some(now) = SIGNAL.wait_past(seen, Duration::from_millis(50)) {
                        seen = now;
                    }
                }
            })
        })
        .collect();
    let mut handles = Vec::new();
    for game in &GAMES[..PAIRS] {
        handles.push(POOL.spawn(&EXECUTOR, game.play(0, ROUNDS)).unwrap());
        handles.push(POOL.spawn(&EXECUTOR, game.play(1, ROUNDS)).unwrap());
    }
    for handle in handles {
        assert_eq!(block_on_std(handle), Ok(ROUNDS));
    }
    STOP.store(true, Ordering::SeqCst);
    for poller in pollers {
        poller.join().unwrap();
    }
    assert_eq!(EXECUTOR.live_tasks(), 0);
    assert_eq!(POOL.used(), 0);
}

#[test]
fn raw_wakes_from_foreign_threads_are_never_lost() {
    const TASKS: usize = if cfg!(miri) { 2 } else { 8 };
    const WAKES: usize = if cfg!(miri) { 20 } else { 2000 };
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 8> = TaskPool::new();
    static COUNTERS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
    static WAKERS: [Mutex<Option<Waker>>; 8] = [const { Mutex::new(None) }; 8];
    start(&EXECUTOR, &SIGNAL);

    // Each task finishes once its counter reaches WAKES; foreign threads bump the counters and
    // wake. A lost wake leaves a task pending forever and the join below fails its bound.
    let handles: Vec<_> = (0..TASKS)
        .map(|index| {
            POOL.spawn(
                &EXECUTOR,
                std::future::poll_fn(move |cx| {
                    *WAKERS[index].lock().unwrap() = Some(cx.waker().clone());
                    if COUNTERS[index].load(Ordering::SeqCst) >= WAKES {
                        Poll::Ready(index)
                    } else {
                        Poll::Pending
                    }
                }),
            )
            .unwrap()
        })
        .collect();
    EXECUTOR.poll(usize::MAX, || false);
    let wakers: Vec<_> = (0..2)
        .map(|thread_index| {
            thread::spawn(move || {
                for round in 0..WAKES {
                    for index in (thread_index..TASKS).step_by(2) {
                        COUNTERS[index].store(round + 1, Ordering::SeqCst);
                        let waker = WAKERS[index].lock().unwrap().clone();
                        waker.unwrap().wake();
                    }
                }
            })
        })
        .collect();
    let mut seen = 0;
    while EXECUTOR.live_tasks() > 0 {
        while EXECUTOR.poll(8, || false).work_remains {}
        if EXECUTOR.live_tasks() == 0 {
            break;
        }
        seen = SIGNAL
            .wait_past(seen, Duration::from_secs(10))
            .expect("a task is still pending and no wake arrived: a wake was lost");
    }
    for waker in wakers {
        waker.join().unwrap();
    }
    for (index, handle) in handles.into_iter().enumerate() {
        assert_eq!(block_on_std(handle), Ok(index));
    }
}

/// An executor with a static [`Pender`]: a wake that queues a task calls it (from the task
/// waker and the spawn alike), and a pool it spawned into refuses
/// executors of another pender type.
#[test]
fn raw_static_pender_pends_and_binds_its_pool() {
    static PENDS: AtomicUsize = AtomicUsize::new(0);
    enum Counting {}
    impl Pender for Counting {
        unsafe fn pend(_: &ExecutorCore) {
            PENDS.fetch_add(1, Ordering::SeqCst);
        }
    }
    static EXECUTOR: Executor<Counting> = Executor::with_pender();
    static OTHER: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 2> = TaskPool::new();
    static GATE: Gate = Gate::new();

    let handle = POOL.spawn(&EXECUTOR, GATE.wait()).unwrap();
    assert_eq!(PENDS.load(Ordering::SeqCst), 1, "the spawn pends");
    assert_eq!(
        POOL.spawn(&OTHER, async {}).unwrap_err(),
        SpawnError::OtherPender
    );
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    GATE.waker().wake_by_ref();
    GATE.waker().wake_by_ref();
    assert_eq!(
        PENDS.load(Ordering::SeqCst),
        2,
        "one pend per queueing wake"
    );
    GATE.release.store(true, Ordering::SeqCst);
    assert_eq!(EXECUTOR.poll(usize::MAX, || false).polled, 1);
    assert!(!EXECUTOR.has_queued());
    assert_eq!(block_on_std(handle), Ok(2));
    // Slots are reused by the same pender type.
    let again = POOL.spawn(&EXECUTOR, async { 5 }).unwrap();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(block_on_std(again), Ok(5));
}

/// Timers find a runner's timer queue through its tasks' wakers: the runners' waker vtable is a
/// `static`, so a runner task's waker (and its clones) is recognised, a foreign one is not.
#[test]
fn raw_runner_task_wakers_are_recognised() {
    use crate::runner::RunnerPender;
    // No context: the runner pender leaves wakes queued (as before `Runner::start`).
    static EXECUTOR: Executor<RunnerPender> = Executor::with_pender();
    static POOL: TaskPool<256, 1> = TaskPool::new();
    static GATE: Gate = Gate::new();

    let handle = POOL.spawn(&EXECUTOR, GATE.wait()).unwrap();
    EXECUTOR.poll(usize::MAX, || false);
    let waker = GATE.waker();
    let found = executor_of_waker::<RunnerPender>(&waker).expect("a runner task's waker");
    assert!(std::ptr::eq(found, EXECUTOR.core()));
    assert!(executor_of_waker::<RunnerPender>(Waker::noop()).is_none());
    handle.abort();
    EXECUTOR.poll(usize::MAX, || false);
    assert_eq!(block_on_std(handle), Err(JoinError::Cancelled));
}

/// A budget of zero polls one task per call, so that a runner configured with it still makes
/// progress instead of queueing itself again for ever.
#[test]
fn raw_budget_of_zero_polls_one_task_per_call() {
    static SIGNAL: Signal = Signal::new();
    static EXECUTOR: Executor = Executor::new(pend_signal);
    static POOL: TaskPool<256, 2> = TaskPool::new();
    start(&EXECUTOR, &SIGNAL);
    let handles = [
        POOL.spawn(&EXECUTOR, async {}).unwrap(),
        POOL.spawn(&EXECUTOR, async {}).unwrap(),
    ];
    assert_eq!(
        EXECUTOR.poll(0, || false),
        PollReport {
            polled: 1,
            work_remains: true
        }
    );
    assert_eq!(
        EXECUTOR.poll(0, || false),
        PollReport {
            polled: 1,
            work_remains: false
        }
    );
    for handle in handles {
        assert_eq!(block_on_std(handle), Ok(()));
    }
    assert_eq!(POOL.used(), 0);
}
