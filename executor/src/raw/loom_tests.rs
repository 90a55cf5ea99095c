//! loom models of the state word, the run queue and the pender: every interleaving (within a
//! preemption bound) of wakes, polls on two CPUs, joins and aborts.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p wsk-executor --release --lib loom`.
//!
//! What each model checks:
//! - no lost wake: a task woken after its last poll is queued, and the pender was called;
//! - no double enqueue: `run_task` asserts every dequeued task is spawned, unfinished and owned
//!   (a non-zero wake count), and a task queued twice would be dequeued twice;
//! - no concurrent poll: the futures touch a loom `UnsafeCell` in every poll, and loom reports
//!   two polls not ordered by happens-before as a data race.

use std::boxed::Box;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Waker};

use loom::cell::UnsafeCell;
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;

use super::*;

unsafe fn pend_count(context: *const ()) {
    // SAFETY: the models set the context to a leaked loom AtomicUsize.
    unsafe { &*context.cast::<AtomicUsize>() }.fetch_add(1, Ordering::SeqCst);
}

struct Fixture {
    executor: &'static Executor,
    pends: &'static AtomicUsize,
}

fn fixture() -> Fixture {
    let executor: &'static Executor = Box::leak(Box::new(Executor::new(pend_count)));
    let pends: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    // SAFETY: `pend_count` expects a leaked AtomicUsize.
    unsafe { executor.set_context(std::ptr::from_ref(pends).cast()) };
    Fixture { executor, pends }
}

fn pool<const N: usize>() -> &'static TaskPool<256, N> {
    Box::leak(Box::new(TaskPool::new()))
}

/// Shared between a test future and the threads that wake it.
struct Probe {
    /// Touched on every poll: two unordered polls are a data race loom reports.
    polls: UnsafeCell<usize>,
    /// When set, the next poll finishes.
    release: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Wake itself inline during the first poll, like a completion routine that runs before
    /// the issuing call returns.
    self_wake_first: bool,
}

// SAFETY: `polls` is the cell whose unsynchronised use the models exist to catch; loom checks
// every access.
unsafe impl Sync for Probe {}

impl Probe {
    fn new(self_wake_first: bool) -> &'static Self {
        Box::leak(Box::new(Self {
            polls: UnsafeCell::new(0),
            release: AtomicBool::new(false),
            waker: Mutex::new(None),
            self_wake_first,
        }))
    }

    fn wait(&'static self) -> impl Future<Output = usize> + Send + 'static {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let polls = self.polls.with_mut(|polls| {
                // SAFETY: loom checks that polls never overlap; that is what the model tests.
                let polls = unsafe { &mut *polls };
                *polls += 1;
                *polls
            });
            if self.release.load(Ordering::SeqCst) {
                return Poll::Ready(polls);
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.self_wake_first && polls == 1 {
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        })
    }

    /// Releases the future and wakes it with the waker it registered.
    fn release_and_wake(&self) {
        self.release.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap().clone();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn polls(&self) -> usize {
        // SAFETY: called after every thread joined.
        self.polls.with_mut(|polls| unsafe { *polls })
    }
}

fn poll_handle<T>(handle: &mut JoinHandle<T>) -> Poll<Result<T, JoinError>> {
    Pin::new(handle).poll(&mut Context::from_waker(Waker::noop()))
}

fn model(body: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(4);
    builder.check(body);
}

/// A wake from another CPU racing the poll of the same task: afterwards the task is finished,
/// or queued with a pend outstanding. Never idle and forgotten.
#[test]
fn loom_wake_racing_poll_is_never_lost() {
    model(|| {
        let Fixture { executor, pends } = fixture();
        let probe = Probe::new(false);
        let mut handle = pool::<1>().spawn(executor, probe.wait()).unwrap();
        assert_eq!(pends.load(Ordering::SeqCst), 1);
        executor.poll(usize::MAX, || false);

        let waker = thread::spawn(move || probe.release_and_wake());
        let poller = thread::spawn(move || executor.poll(usize::MAX, || false));
        waker.join().unwrap();
        let report = poller.join().unwrap();
        assert!(!report.work_remains);

        if !handle.is_finished() {
            assert!(executor.has_queued(), "the wake was lost");
            assert_eq!(pends.load(Ordering::SeqCst), 2, "queued without a pend");
            executor.poll(usize::MAX, || false);
        }
        assert!(matches!(poll_handle(&mut handle), Poll::Ready(Ok(_))));
    });
}

/// Two CPUs polling one executor while a third wakes the task, and the task wakes itself inline
/// during its first poll: polls never overlap, the task is never queued twice, nothing is lost.
#[test]
fn loom_two_pollers_and_a_waker_never_poll_concurrently() {
    model(|| {
        let Fixture { executor, pends } = fixture();
        let probe = Probe::new(true);
        let mut handle = pool::<1>().spawn(executor, probe.wait()).unwrap();

        let waker = thread::spawn(move || probe.release_and_wake());
        let first = thread::spawn(move || executor.poll(usize::MAX, || false));
        let second = executor.poll(usize::MAX, || false);
        waker.join().unwrap();
        let first = first.join().unwrap();
        assert!(!first.work_remains && !second.work_remains);

        let before = pends.load(Ordering::SeqCst);
        let last = executor.poll(usize::MAX, || false);
        if last.polled > 0 {
            assert!(before >= 2, "work was left queued without a pend");
        }
        assert!(
            handle.is_finished(),
            "the task was never polled after its release"
        );
        assert!(
            matches!(poll_handle(&mut handle), Poll::Ready(Ok(polls)) if polls == probe.polls())
        );
    });
}

/// The budget puts tasks back while wakes push new ones: every task still runs exactly as often
/// as it was woken (at most), and a re-queued task is reported as remaining work.
#[test]
fn loom_budget_requeue_races_wakes() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<2>();
        let first = Probe::new(false);
        let second = Probe::new(false);
        let mut handles = [
            pool.spawn(executor, first.wait()).unwrap(),
            pool.spawn(executor, second.wait()).unwrap(),
        ];
        executor.poll(usize::MAX, || false);

        let waker = thread::spawn(move || {
            first.release_and_wake();
            second.release_and_wake();
        });
        let mut polled = 0;
        // One task per call, as a DPC with a budget of one would.
        for _ in 0..2 {
            let report = executor.poll(1, || false);
            polled += report.polled;
        }
        waker.join().unwrap();
        while executor.has_queued() {
            polled += executor.poll(1, || false).polled;
        }
        assert!(polled <= 2, "a task ran twice for one wake");
        for handle in &mut handles {
            assert!(matches!(poll_handle(handle), Poll::Ready(Ok(2))));
        }
        drop(handles);
        assert_eq!(pool.used(), 0);
    });
}

/// The handle is dropped on one CPU while the task finishes on another: the slot is freed
/// exactly once and the untaken output dropped once.
#[test]
fn loom_handle_drop_racing_completion_frees_once() {
    struct Output(StdArc<std::sync::atomic::AtomicUsize>);
    impl Drop for Output {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<1>();
        let drops = StdArc::new(std::sync::atomic::AtomicUsize::new(0));
        let output = Output(drops.clone());
        let handle = pool.spawn(executor, async move { output }).unwrap();
        let dropper = thread::spawn(move || drop(handle));
        executor.poll(usize::MAX, || false);
        dropper.join().unwrap();
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.used(), 0);
    });
}

/// The handle registered a real waker and is dropped on one CPU while the task finishes on
/// another: the waker clone is woken or dropped, never left behind in the freed slot.
#[test]
fn loom_registered_join_waker_is_never_left_in_the_slot() {
    struct Flag;
    impl std::task::Wake for Flag {
        fn wake(self: StdArc<Self>) {}
    }
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<1>();
        let probe = Probe::new(false);
        let mut handle = pool.spawn(executor, probe.wait()).unwrap();
        executor.poll(usize::MAX, || false);
        let flag = StdArc::new(Flag);
        let waker = Waker::from(flag.clone());
        assert!(
            Pin::new(&mut handle)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(waker);
        let dropper = thread::spawn(move || drop(handle));
        probe.release_and_wake();
        executor.poll(usize::MAX, || false);
        dropper.join().unwrap();
        assert_eq!(
            StdArc::strong_count(&flag),
            1,
            "the join waker was left behind"
        );
        assert_eq!(pool.used(), 0);
    });
}

/// `abort` from another CPU racing the task's poll and a completion wake: the future is
/// dropped exactly once, on the executor, and the handle sees either the output or Cancelled.
#[test]
fn loom_abort_racing_poll() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<1>();
        let probe = Probe::new(false);
        let mut handle = pool.spawn(executor, probe.wait()).unwrap();
        executor.poll(usize::MAX, || false);
        let handle_ref: &'static JoinHandle<usize> =
            // SAFETY: the reference is only used before `handle` is polled below, after join.
            unsafe { &*std::ptr::from_ref(&handle) };
        let aborter = thread::spawn(move || handle_ref.abort());
        let waker = thread::spawn(move || probe.release_and_wake());
        executor.poll(usize::MAX, || false);
        aborter.join().unwrap();
        waker.join().unwrap();
        while executor.has_queued() {
            executor.poll(usize::MAX, || false);
        }
        assert_eq!(executor.live_tasks(), 0);
        assert!(matches!(
            poll_handle(&mut handle),
            Poll::Ready(Ok(2) | Err(JoinError::Cancelled))
        ));
        drop(handle);
        assert_eq!(pool.used(), 0);
    });
}

/// A stale waker (its task finished and its slot was freed) wakes the slot while a new task is
/// spawned into it: the stray wake only counts, the new task is queued once and runs once, and
/// the slot is free again afterwards.
#[test]
fn loom_stale_wake_racing_slot_reuse() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<1>();
        let stale: StdArc<Mutex<Option<Waker>>> = StdArc::new(Mutex::new(None));
        let register = stale.clone();
        let first = pool
            .spawn(
                executor,
                std::future::poll_fn(move |cx: &mut Context<'_>| {
                    *register.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Ready(())
                }),
            )
            .unwrap();
        drop(first);
        executor.poll(usize::MAX, || false);
        assert_eq!(pool.used(), 0);
        let stale_waker = stale.lock().unwrap().take().unwrap();

        let waker = thread::spawn(move || stale_waker.wake());
        let probe = Probe::new(false);
        let mut handle = pool.spawn(executor, probe.wait()).unwrap();
        probe.release.store(true, Ordering::SeqCst);
        let report = executor.poll(usize::MAX, || false);
        waker.join().unwrap();
        let report_after = executor.poll(usize::MAX, || false);
        assert_eq!(
            report.polled + report_after.polled,
            1,
            "one spawn, one poll"
        );
        assert!(matches!(poll_handle(&mut handle), Poll::Ready(Ok(1))));
        drop(handle);
        assert_eq!(pool.used(), 0);
        assert!(!executor.has_queued());
    });
}

/// The handle is dropped (a flag changes) while the task is being polled and woken: the end of
/// the poll sees the word changed, and still neither loses the wake nor leaves the task queued
/// without cause.
#[test]
fn loom_handle_drop_and_wake_during_poll() {
    model(|| {
        let Fixture { executor, pends } = fixture();
        let pool = pool::<1>();
        let probe = Probe::new(false);
        let handle = pool.spawn(executor, probe.wait()).unwrap();
        executor.poll(usize::MAX, || false);

        let dropper = thread::spawn(move || drop(handle));
        let waker = thread::spawn(move || probe.release_and_wake());
        executor.poll(usize::MAX, || false);
        dropper.join().unwrap();
        waker.join().unwrap();
        if pool.used() != 0 {
            assert!(executor.has_queued(), "the wake was lost");
            assert!(pends.load(Ordering::SeqCst) >= 2, "queued without a pend");
            executor.poll(usize::MAX, || false);
        }
        assert_eq!(pool.used(), 0, "the detached task did not finish");
        assert_eq!(executor.live_tasks(), 0);
    });
}

/// A wake of another task lands while a poll runs its batch: `poll` does not look at the queue
/// again after the batch, so a task it leaves queued must have been pended for (its wake found
/// the queue empty), or it was in the batch.
#[test]
fn loom_wake_during_batch_is_pended_or_polled() {
    model(|| {
        let Fixture { executor, pends } = fixture();
        let pool = pool::<2>();
        let first = Probe::new(false);
        let second = Probe::new(false);
        let mut handles = [
            pool.spawn(executor, first.wait()).unwrap(),
            pool.spawn(executor, second.wait()).unwrap(),
        ];
        executor.poll(usize::MAX, || false);
        assert!(!executor.has_queued());
        first.release_and_wake();
        let before = pends.load(Ordering::SeqCst);

        let waker = thread::spawn(move || second.release_and_wake());
        let report = executor.poll(usize::MAX, || false);
        waker.join().unwrap();
        assert!(!report.work_remains);
        if executor.has_queued() {
            assert_eq!(report.polled, 1, "a queued task was left out of the batch");
            assert_eq!(
                pends.load(Ordering::SeqCst),
                before + 1,
                "left queued without a pend"
            );
            assert_eq!(executor.poll(usize::MAX, || false).polled, 1);
        } else {
            assert_eq!(report.polled, 2);
        }
        for handle in &mut handles {
            assert!(matches!(poll_handle(handle), Poll::Ready(Ok(2))));
        }
    });
}

/// `close` (from another CPU) races the wake and the poll of an idle task: `close` finds the
/// task through the pool table, marks it CLOSING and wakes it, so it is either dropped by its
/// next poll or finishes first; either way the executor drains, nothing stays queued and the
/// slot is free once the handle goes.
#[test]
fn loom_close_racing_wake_and_poll() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<1>();
        let probe = Probe::new(false);
        let mut handle = pool.spawn(executor, probe.wait()).unwrap();
        executor.poll(usize::MAX, || false);

        let closer = thread::spawn(move || executor.close());
        probe.release_and_wake();
        executor.poll(usize::MAX, || false);
        closer.join().unwrap();
        while !executor.is_drained() {
            assert!(
                executor.has_queued(),
                "a live task of a closed executor is not queued"
            );
            executor.poll(usize::MAX, || false);
        }
        assert!(!executor.has_queued());
        assert!(matches!(
            poll_handle(&mut handle),
            Poll::Ready(Ok(2) | Err(JoinError::Cancelled))
        ));
        drop(handle);
        assert_eq!(pool.used(), 0);
        assert!(matches!(
            pool.spawn(executor, async {}),
            Err(SpawnError::Closed)
        ));
    });
}

/// `close` (from another CPU) races a poll while the only task waits on a future nobody will
/// complete: only `close` can get it polled again, so it must find the task through the pool
/// table, mark it and queue it; the next poll drops its future.
#[test]
fn loom_close_finds_an_idle_task_racing_a_poll() {
    model(|| {
        let Fixture { executor, pends } = fixture();
        let pool = pool::<1>();
        let probe = Probe::new(false);
        let mut handle = pool.spawn(executor, probe.wait()).unwrap();
        executor.poll(usize::MAX, || false);

        let closer = thread::spawn(move || executor.close());
        executor.poll(usize::MAX, || false);
        closer.join().unwrap();
        if !executor.is_drained() {
            assert!(executor.has_queued(), "close did not queue the idle task");
            assert!(pends.load(Ordering::SeqCst) >= 2, "queued without a pend");
            executor.poll(usize::MAX, || false);
        }
        assert!(executor.is_drained());
        assert!(matches!(
            poll_handle(&mut handle),
            Poll::Ready(Err(JoinError::Cancelled))
        ));
        drop(handle);
        assert_eq!(pool.used(), 0);
    });
}

/// A `PassiveWork` that counts its runs (loom atomics, so loom sees the accesses).
#[repr(C)]
struct CountedWork {
    work: PassiveWork,
    runs: AtomicUsize,
}

unsafe fn count_run(work: std::ptr::NonNull<PassiveWork>) {
    // SAFETY: the models queue only leaked `CountedWork`s, whose first field is the work.
    let counted = unsafe { work.cast::<CountedWork>().as_ref() };
    counted.runs.fetch_add(1, Ordering::SeqCst);
}

fn counted_work() -> &'static CountedWork {
    Box::leak(Box::new(CountedWork {
        work: PassiveWork::new(count_run),
        runs: AtomicUsize::new(0),
    }))
}

/// Two tasks queue work for the runner's thread while the thread takes the queue and then
/// closes it on exit (`run_all(false)`, `run_all(true)`): every push that succeeded is run
/// exactly once before the close returns, and a refused push is never run; once opened again
/// (a restart), the queue takes work again.
#[test]
fn loom_passive_work_runs_once_or_is_refused_racing_the_close() {
    model(|| {
        let queue: &'static PassiveQueue = Box::leak(Box::new(PassiveQueue::new()));
        let works = [counted_work(), counted_work()];
        let pushers: std::vec::Vec<_> = works
            .iter()
            .map(|&counted| {
                thread::spawn(move || {
                    let work = std::ptr::NonNull::from(counted).cast::<PassiveWork>();
                    // SAFETY: leaked, queued once.
                    unsafe { queue.push(work) }
                })
            })
            .collect();
        queue.run_all(false);
        queue.run_all(true);
        let queued: std::vec::Vec<bool> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
        for (counted, queued) in works.iter().zip(queued) {
            let runs = counted.runs.load(Ordering::SeqCst);
            assert_eq!(runs, usize::from(queued), "queued: {queued}, runs: {runs}");
        }
        // A restarted runner opens its queue again.
        queue.open();
        let again = counted_work();
        // SAFETY: leaked, queued once.
        assert!(unsafe { queue.push(std::ptr::NonNull::from(again).cast()) });
        queue.run_all(true);
        assert_eq!(again.runs.load(Ordering::SeqCst), 1);
    });
}

/// Tasks are left over on the ready list when two CPUs poll with a budget of one, one of them
/// right after its own wake (as the DPC that wake queued would): a poll that finds the list
/// held returns with nothing polled, and the holder then reports work remaining for it.
/// Nothing is lost, run twice or polled on two CPUs at once.
#[test]
fn loom_poll_finding_the_ready_list_held_leaves_its_work_reported() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<3>();
        let probes = [Probe::new(false), Probe::new(false), Probe::new(false)];
        let mut handles: std::vec::Vec<_> = probes
            .iter()
            .map(|probe| pool.spawn(executor, probe.wait()).unwrap())
            .collect();
        executor.poll(usize::MAX, || false);
        probes[0].release_and_wake();
        probes[1].release_and_wake();
        // The budget leaves the second task on the ready list.
        assert_eq!(executor.poll(1, || false).polled, 1);

        let last = probes[2];
        let waker = thread::spawn(move || {
            last.release_and_wake();
            executor.poll(1, || false)
        });
        let holder = executor.poll(1, || false);
        let woken = waker.join().unwrap();
        if executor.has_queued() {
            assert!(
                holder.work_remains || woken.work_remains,
                "work left queued with no poll reporting it"
            );
        }
        while executor.has_queued() {
            executor.poll(usize::MAX, || false);
        }
        for handle in &mut handles {
            assert!(matches!(poll_handle(handle), Poll::Ready(Ok(2))));
        }
    });
}

/// Two CPUs each take a batch of two off the queue while the ready list is empty, and each
/// runs one under a budget of one: the rests go on the ready list, or, for the poller that
/// finds it held, back on the queue; both report work remaining, and every task runs once.
#[test]
fn loom_two_batch_rests_racing_for_the_ready_list() {
    model(|| {
        let Fixture { executor, .. } = fixture();
        let pool = pool::<4>();
        let probes = [
            Probe::new(false),
            Probe::new(false),
            Probe::new(false),
            Probe::new(false),
        ];
        let mut handles: std::vec::Vec<_> = probes
            .iter()
            .map(|probe| pool.spawn(executor, probe.wait()).unwrap())
            .collect();
        executor.poll(usize::MAX, || false);
        probes[0].release_and_wake();
        probes[1].release_and_wake();

        let poller = thread::spawn(move || executor.poll(1, || false));
        probes[2].release_and_wake();
        probes[3].release_and_wake();
        let ours = executor.poll(1, || false);
        let theirs = poller.join().unwrap();
        if executor.has_queued() {
            assert!(
                ours.work_remains || theirs.work_remains,
                "work left queued with no poll reporting it"
            );
        }
        let mut polled = ours.polled + theirs.polled;
        while executor.has_queued() {
            polled += executor.poll(usize::MAX, || false).polled;
        }
        assert_eq!(polled, 4, "a task ran twice, or not at all");
        for handle in &mut handles {
            assert!(matches!(poll_handle(handle), Poll::Ready(Ok(2))));
        }
    });
}

/// A runner as far as its wake route goes: the route, the event a waiting thread waits on,
/// and the DPCs queued.
struct RouteRunner {
    route: WakeRoute,
    event: AtomicBool,
    dpcs: AtomicUsize,
}

/// The runners' pender, on a [`RouteRunner`]: what `runner::pend` does with the route.
unsafe fn pend_route(context: *const ()) {
    // SAFETY: the models set the context to a leaked RouteRunner.
    let runner = unsafe { &*context.cast::<RouteRunner>() };
    match runner.route.for_wake() {
        Route::Dpc => {
            runner.dpcs.fetch_add(1, Ordering::SeqCst);
        }
        Route::ThreadWaiting => runner.event.store(true, Ordering::SeqCst),
        Route::ThreadPolling => {}
    }
}

/// An executor whose pender follows a [`RouteRunner`] starting on `route`, and a task polled
/// once (waiting for its probe's wake).
fn route_fixture(
    route: Route,
) -> (
    &'static Executor,
    &'static RouteRunner,
    &'static Probe,
    JoinHandle<usize>,
) {
    let executor: &'static Executor = Box::leak(Box::new(Executor::new(pend_route)));
    let runner: &'static RouteRunner = Box::leak(Box::new(RouteRunner {
        route: WakeRoute::new(Route::Dpc),
        event: AtomicBool::new(false),
        dpcs: AtomicUsize::new(0),
    }));
    runner.route.set(route);
    // SAFETY: `pend_route` expects a leaked RouteRunner.
    unsafe { executor.set_context(std::ptr::from_ref(runner).cast()) };
    let probe = Probe::new(false);
    let handle = pool::<1>().spawn(executor, probe.wait()).unwrap();
    assert_eq!(executor.poll(usize::MAX, || false).polled, 1);
    (executor, runner, probe, handle)
}

/// The passive runner's thread turns to wait while a wake from another CPU queues its task:
/// either the thread sees the task (and polls again instead of waiting), or the wake sees the
/// waiting route and sets the event. Never a wait with the task queued and no event.
#[test]
fn loom_passive_thread_going_to_wait_racing_a_wake_loses_nothing() {
    model(|| {
        let (executor, runner, probe, mut handle) = route_fixture(Route::ThreadPolling);
        let waker = thread::spawn(move || probe.release_and_wake());
        let may_wait = runner.route.thread_may_wait(executor);
        waker.join().unwrap();
        assert_eq!(runner.route.get(), Route::ThreadWaiting);
        if may_wait {
            assert!(
                runner.event.load(Ordering::SeqCst),
                "the thread waits with its task queued and no event set: a lost wake"
            );
        }
        assert_eq!(executor.poll(usize::MAX, || false).polled, 1);
        assert!(matches!(poll_handle(&mut handle), Poll::Ready(Ok(2))));
    });
}

/// The DPC runner's thread hands the work back while a wake from another CPU queues a task:
/// either the thread sees the task (and queues the DPC for it), or the wake sees the DPC route
/// and queues the DPC itself.
#[test]
fn loom_thread_handing_back_to_the_dpc_racing_a_wake_loses_nothing() {
    model(|| {
        let (executor, runner, probe, mut handle) = route_fixture(Route::ThreadPolling);
        let waker = thread::spawn(move || probe.release_and_wake());
        let saw_task = runner.route.hand_back_to_dpc(executor);
        waker.join().unwrap();
        assert!(
            saw_task || runner.dpcs.load(Ordering::SeqCst) == 1,
            "the work went back to the DPC with a task queued and no DPC: a lost wake"
        );
        assert_eq!(executor.poll(usize::MAX, || false).polled, 1);
        assert!(matches!(poll_handle(&mut handle), Poll::Ready(Ok(2))));
    });
}

/// A test waker that counts its wakes in a loom atomic.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (StdArc<CountingWaker>, Waker) {
    let count = StdArc::new(CountingWaker(AtomicUsize::new(0)));
    (count.clone(), Waker::from(count))
}

/// `RetainedWaker`: the owner registers (the waker it keeps, or a new one) racing a wake that
/// follows an event; afterwards the owner saw the event or its registered waker was woken,
/// never neither. The waker stays: a second wake wakes it again. loom reports any overlap of
/// the owner's write with a wake's read.
#[test]
fn loom_retained_waker_registration_racing_a_wake_loses_nothing() {
    for replace in [false, true] {
        model(move || {
            let slot = StdArc::new(RetainedWaker::new());
            let event = StdArc::new(AtomicBool::new(false));
            let (first_count, first) = counting_waker();
            slot.register(&first);
            let waking = {
                let slot = slot.clone();
                let event = event.clone();
                thread::spawn(move || {
                    event.store(true, Ordering::SeqCst);
                    slot.wake();
                })
            };
            let (second_count, second) = counting_waker();
            let (count, waker) = if replace {
                (second_count, second)
            } else {
                (first_count, first)
            };
            slot.register(&waker);
            let saw_event = event.load(Ordering::SeqCst);
            waking.join().unwrap();
            let woken = count.0.load(Ordering::SeqCst);
            assert!(saw_event || woken > 0, "the wake after the event was lost");
            // The next wait: the kept waker is compared, not stored again (or stored now, if
            // the racing wake made the first registration give up), and woken again.
            slot.register(&waker);
            slot.wake();
            assert!(
                count.0.load(Ordering::SeqCst) > woken,
                "the registered waker was not woken"
            );
        });
    }
}

/// `RetainedWaker`: two wakes racing the owner's replacement of the waker: the new waker is
/// woken at least once after the owner saw no event.
#[test]
fn loom_retained_waker_replacement_racing_two_wakes() {
    model(|| {
        let slot = StdArc::new(RetainedWaker::new());
        let event = StdArc::new(AtomicUsize::new(0));
        let (_, first) = counting_waker();
        slot.register(&first);
        let wakes: std::vec::Vec<_> = (0..2)
            .map(|_| {
                let slot = slot.clone();
                let event = event.clone();
                thread::spawn(move || {
                    event.fetch_add(1, Ordering::SeqCst);
                    slot.wake();
                })
            })
            .collect();
        let (count, second) = counting_waker();
        slot.register(&second);
        let seen = event.load(Ordering::SeqCst);
        for wake in wakes {
            wake.join().unwrap();
        }
        assert!(
            seen == 2 || count.0.load(Ordering::SeqCst) > 0,
            "a wake after the registration was lost"
        );
    });
}
