//! The runners on the host kernel: emulated CPUs run the DPCs at `DISPATCH_LEVEL`, system
//! threads run the passive lane, KTIMERs fire through DPCs.
//!
//! Every wait is bounded and fails loudly: joins go through `join_within`, shutdowns through
//! `shutdown_within`. No test asserts an upper bound on time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wsk_executor::{
    Budget, Elapsed, Instant, JoinError, JoinHandle, Runner, RunnerKind, SpawnError, TaskPool,
    block_on, sleep, timeout, yield_now,
};
use wsk_host::testing::BOUND;
use wsk_sys::{
    DISPATCH_LEVEL, KDPC, KeGetCurrentIrql, KeInitializeDpc, KeInsertQueueDpc,
    KeQueryActiveProcessorCountEx, KeSetTargetProcessorDpcEx, PASSIVE_LEVEL, PROCESSOR_NUMBER,
    PVOID,
};

mod host;

use host::{current_cpu, shutdown_within};

/// Longer than any test: a sleep or timeout that must never fire.
#[allow(
    clippy::duration_suboptimal_units,
    reason = "Duration::from_hours is newer than the MSRV"
)]
const LONG: Duration = Duration::from_secs(3600);

/// Waits for a task's output, failing the test after [`BOUND`].
fn join_within<T>(handle: JoinHandle<T>) -> Result<T, JoinError> {
    block_on(timeout(BOUND, handle)).expect("task did not finish within the bound")
}

fn cpu_count() -> u32 {
    // SAFETY: any IRQL.
    unsafe { KeQueryActiveProcessorCountEx(wsk_sys::ALL_PROCESSOR_GROUPS) }
}

/// Counts drops, to see futures dropped on cancellation and shutdown.
struct DropCounter(&'static AtomicUsize);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Two tasks passing a turn back and forth; every poll checks it runs at `irql` and records
/// its CPU.
struct PingPong {
    turn: AtomicUsize,
    wakers: [Mutex<Option<Waker>>; 2],
    in_poll: [AtomicBool; 2],
}

static CPUS_SEEN: AtomicU64 = AtomicU64::new(0);

impl PingPong {
    const fn new() -> Self {
        Self {
            turn: AtomicUsize::new(0),
            wakers: [Mutex::new(None), Mutex::new(None)],
            in_poll: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    async fn play(&'static self, side: usize, rounds: usize, irql: u8) -> usize {
        for _ in 0..rounds {
            std::future::poll_fn(|cx| {
                assert_eq!(KeGetCurrentIrql(), irql, "task polled at the wrong IRQL");
                assert!(
                    !self.in_poll[side].swap(true, Ordering::SeqCst),
                    "concurrent poll"
                );
                CPUS_SEEN.fetch_or(1 << current_cpu(), Ordering::SeqCst);
                let mut ready = self.turn.load(Ordering::SeqCst) % 2 == side;
                if !ready {
                    *self.wakers[side].lock().unwrap() = Some(cx.waker().clone());
                    ready = self.turn.load(Ordering::SeqCst) % 2 == side;
                }
                self.in_poll[side].store(false, Ordering::SeqCst);
                if ready {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            self.turn.fetch_add(1, Ordering::SeqCst);
            let other = self.wakers[1 - side].lock().unwrap().take();
            if let Some(other) = other {
                other.wake();
            }
        }
        rounds
    }
}

#[test]
fn dpc_runner_ping_pong_across_cpus() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 32> = TaskPool::new();
    static GAMES: [PingPong; 16] = [const { PingPong::new() }; 16];
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let handles: Vec<_> = GAMES
        .iter()
        .flat_map(|game| {
            [
                RUNNER
                    .spawn(&POOL, game.play(0, 300, DISPATCH_LEVEL))
                    .unwrap(),
                RUNNER
                    .spawn(&POOL, game.play(1, 300, DISPATCH_LEVEL))
                    .unwrap(),
            ]
        })
        .collect();
    for handle in handles {
        assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(300));
    }
    assert_eq!(RUNNER.live_tasks(), 0);
    assert_eq!(POOL.used(), 0);
    shutdown_within(&RUNNER);
}

/// A KDPC targeted at one CPU that wakes the stored wakers: a completion routine on another
/// CPU. Several tasks may wait on one remote at once (one DPC firing completes all of them), so
/// it keeps every waiter's waker.
struct RemoteWaker {
    dpc: std::cell::UnsafeCell<std::mem::MaybeUninit<KDPC>>,
    wakers: Mutex<Vec<Waker>>,
    fired: AtomicUsize,
    ran_on: AtomicU64,
}

// SAFETY: the KDPC is only handed to the kernel; the rest is synchronised.
unsafe impl Sync for RemoteWaker {}

unsafe extern "system" fn remote_wake(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the DPC's context is a 'static RemoteWaker.
    let remote = unsafe { &*context.cast::<RemoteWaker>() };
    assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL);
    remote.ran_on.fetch_or(1 << current_cpu(), Ordering::SeqCst);
    remote.fired.fetch_add(1, Ordering::SeqCst);
    let wakers = std::mem::take(&mut *remote.wakers.lock().unwrap());
    for waker in wakers {
        waker.wake();
    }
}

impl RemoteWaker {
    const fn new() -> Self {
        Self {
            dpc: std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()),
            wakers: Mutex::new(Vec::new()),
            fired: AtomicUsize::new(0),
            ran_on: AtomicU64::new(0),
        }
    }

    fn init(&'static self, cpu: u32) {
        let mut number = PROCESSOR_NUMBER {
            Group: 0,
            Number: u8::try_from(cpu).unwrap(),
            Reserved: 0,
        };
        let context = std::ptr::from_ref(self).cast_mut().cast();
        // SAFETY: a 'static KDPC, initialised before use.
        unsafe { KeInitializeDpc(self.dpc.get().cast(), Some(remote_wake), context) };
        // SAFETY: as above, targeted while not queued.
        unsafe { KeSetTargetProcessorDpcEx(self.dpc.get().cast(), &raw mut number) };
    }

    /// Completes "an operation" on the target CPU: waits until the DPC has fired once more.
    async fn complete_remotely(&'static self) {
        let target = self.fired.load(Ordering::SeqCst) + 1;
        let mut issued = false;
        std::future::poll_fn(|cx| {
            if self.fired.load(Ordering::SeqCst) >= target {
                return Poll::Ready(());
            }
            {
                let mut wakers = self.wakers.lock().unwrap();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            if !issued {
                issued = true;
                // SAFETY: initialised 'static KDPC.
                unsafe {
                    KeInsertQueueDpc(
                        self.dpc.get().cast(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            }
            if self.fired.load(Ordering::SeqCst) >= target {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

#[test]
fn dpc_runner_wakes_from_dpcs_on_every_cpu() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 8> = TaskPool::new();
    static REMOTES: [RemoteWaker; 8] = [const { RemoteWaker::new() }; 8];
    host::boot();
    let cpus = cpu_count().min(8);
    assert!(cpus >= 2, "the host kernel should emulate several CPUs");
    host::on_kernel_thread(|| {
        for (cpu, remote) in REMOTES.iter().enumerate().take(cpus as usize) {
            remote.init(u32::try_from(cpu).unwrap());
        }
        RUNNER.start(RunnerKind::Dpc)
    })
    .unwrap();

    let handles: Vec<_> = (0..4)
        .map(|_| {
            RUNNER
                .spawn(&POOL, async move {
                    for round in 0..50 {
                        REMOTES[round % cpus as usize].complete_remotely().await;
                    }
                })
                .unwrap()
        })
        .collect();
    for handle in handles {
        assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(()));
    }
    for (cpu, remote) in REMOTES.iter().enumerate().take(cpus as usize) {
        assert_eq!(
            remote.ran_on.load(Ordering::SeqCst),
            1 << cpu,
            "DPC ran off its target CPU"
        );
        assert!(remote.fired.load(Ordering::SeqCst) > 0);
    }
    shutdown_within(&RUNNER);
}

#[test]
fn dpc_runner_inline_wake_before_the_call_returns() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 2> = TaskPool::new();
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    // An "operation" whose completion runs inline, on the issuing thread, inside the poll that
    // issues it: the wake arrives while the task is RUNNING.
    let handle = RUNNER
        .spawn(&POOL, async {
            let mut completions = 0;
            for _ in 0..100 {
                let mut done = false;
                std::future::poll_fn(|cx| {
                    if done {
                        return Poll::Ready(());
                    }
                    done = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                })
                .await;
                completions += 1;
            }
            completions
        })
        .unwrap();
    assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(100));
    shutdown_within(&RUNNER);
}

#[test]
fn dpc_budget_requeues_the_dpc() {
    static BY_COUNT: Runner = Runner::new(Budget {
        max_polls: 2,
        max_time: Duration::from_secs(1),
        ..Budget::DEFAULT
    });
    static BY_TIME: Runner = Runner::new(Budget {
        max_polls: usize::MAX,
        max_time: Duration::ZERO,
        ..Budget::DEFAULT
    });
    static POOL: TaskPool<256, 16> = TaskPool::new();
    host::boot();
    // Each run polls at most two tasks (or one, with a zero time budget), so 8 tasks yielding
    // 20 times need many runs: they only finish if every run that leaves work queues the DPC
    // again (a yield re-queues the task without calling the pender).
    for runner in [&BY_COUNT, &BY_TIME] {
        host::on_kernel_thread(|| runner.start(RunnerKind::Dpc)).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                runner
                    .spawn(&POOL, async {
                        for _ in 0..20 {
                            yield_now().await;
                        }
                    })
                    .unwrap()
            })
            .collect();
        for handle in handles {
            assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(()));
        }
        shutdown_within(runner);
    }
}

#[test]
fn passive_runner_runs_tasks_at_passive_level() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 8> = TaskPool::new();
    static GAMES: [PingPong; 2] = [const { PingPong::new() }; 2];
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Passive)).unwrap();
    assert_eq!(RUNNER.kind(), RunnerKind::Passive);

    let mut handles: Vec<_> = GAMES
        .iter()
        .flat_map(|game| {
            [
                RUNNER
                    .spawn(&POOL, game.play(0, 100, PASSIVE_LEVEL))
                    .unwrap(),
                RUNNER
                    .spawn(&POOL, game.play(1, 100, PASSIVE_LEVEL))
                    .unwrap(),
            ]
        })
        .collect();
    handles.push(
        RUNNER
            .spawn(&POOL, async {
                let start = Instant::now();
                sleep(Duration::from_millis(20)).await;
                assert!(
                    start.elapsed() >= Duration::from_millis(20),
                    "sleep ended early"
                );
                assert_eq!(KeGetCurrentIrql(), PASSIVE_LEVEL);
                100
            })
            .unwrap(),
    );
    for handle in handles {
        assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(100));
    }
    shutdown_within(&RUNNER);
}

#[test]
fn timers_sleep_and_timeout_on_both_runners() {
    static DPC: Runner = Runner::new(Budget::DEFAULT);
    static PASSIVE: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<1024, 16> = TaskPool::new();
    host::boot();
    host::on_kernel_thread(|| DPC.start(RunnerKind::Dpc)).unwrap();
    host::on_kernel_thread(|| PASSIVE.start(RunnerKind::Passive)).unwrap();

    for runner in [&DPC, &PASSIVE] {
        let handles: Vec<_> = [40_u64, 5, 25, 0]
            .into_iter()
            .map(|millis| {
                runner
                    .spawn(&POOL, async move {
                        let start = Instant::now();
                        sleep(Duration::from_millis(millis)).await;
                        start.elapsed() >= Duration::from_millis(millis)
                    })
                    .unwrap()
            })
            .collect();
        for handle in handles {
            assert_eq!(
                host::on_kernel_thread(|| join_within(handle)),
                Ok(true),
                "a sleep ended early"
            );
        }
        let expired = runner
            .spawn(&POOL, async {
                let start = Instant::now();
                let result = timeout(Duration::from_millis(15), std::future::pending::<()>()).await;
                (result, start.elapsed() >= Duration::from_millis(15))
            })
            .unwrap();
        assert_eq!(
            host::on_kernel_thread(|| join_within(expired)),
            Ok((Err(Elapsed), true))
        );
        let in_time = runner
            .spawn(&POOL, async { timeout(LONG, async { 7 }).await })
            .unwrap();
        assert_eq!(host::on_kernel_thread(|| join_within(in_time)), Ok(Ok(7)));
        // A sleep dropped early (the timeout's own, here) must leave the timer queue.
        let early = runner
            .spawn(&POOL, async {
                timeout(LONG, sleep(Duration::from_millis(5))).await
            })
            .unwrap();
        assert_eq!(host::on_kernel_thread(|| join_within(early)), Ok(Ok(())));
    }
    shutdown_within(&DPC);
    shutdown_within(&PASSIVE);
}

/// The timer's DPC never sets its own timer (under Wine that deadlocks): it wakes the task of
/// the earliest sleep left, which arms the timer again when it polls that sleep or, if it drops
/// the sleep instead, when it unregisters it. Here the earliest one left when the first sleep
/// fires (the timeout's own, 20 ms) is dropped by its task, and the 30 ms sleep of another task
/// must still end: nobody else arms the timer for it.
#[test]
fn a_sleep_outlives_the_earliest_one_being_dropped_when_the_timer_fired() {
    static DPC: Runner = Runner::new(Budget::DEFAULT);
    static PASSIVE: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<1024, 4> = TaskPool::new();
    host::boot();
    host::on_kernel_thread(|| DPC.start(RunnerKind::Dpc)).unwrap();
    host::on_kernel_thread(|| PASSIVE.start(RunnerKind::Passive)).unwrap();

    for runner in [&DPC, &PASSIVE] {
        let later = runner
            .spawn(&POOL, async {
                let start = Instant::now();
                sleep(Duration::from_millis(30)).await;
                start.elapsed() >= Duration::from_millis(30)
            })
            .unwrap();
        let dropping = runner
            .spawn(&POOL, async {
                timeout(Duration::from_millis(20), sleep(Duration::from_millis(10))).await
            })
            .unwrap();
        assert_eq!(host::on_kernel_thread(|| join_within(dropping)), Ok(Ok(())));
        assert_eq!(
            host::on_kernel_thread(|| join_within(later)),
            Ok(true),
            "the sleep left after the other task dropped its own ended early"
        );
    }
    shutdown_within(&DPC);
    shutdown_within(&PASSIVE);
}

#[test]
fn block_on_runs_timers_without_a_runner() {
    host::boot();
    host::on_kernel_thread(|| {
        let start = Instant::now();
        block_on(sleep(Duration::from_millis(10)));
        assert!(start.elapsed() >= Duration::from_millis(10));
        assert_eq!(
            block_on(timeout(
                Duration::from_millis(5),
                std::future::pending::<()>()
            )),
            Err(Elapsed)
        );
        assert_eq!(block_on(async { 3 }), 3);
    });
}

#[test]
fn abort_drops_the_future_on_the_runner() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 4> = TaskPool::new();
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let never = DropCounter(&DROPS);
    let handle = RUNNER
        .spawn(&POOL, async move {
            let _never = never;
            sleep(LONG).await;
        })
        .unwrap();
    handle.abort();
    assert_eq!(
        host::on_kernel_thread(|| join_within(handle)),
        Err(JoinError::Cancelled)
    );
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    assert_eq!(RUNNER.live_tasks(), 0);
    shutdown_within(&RUNNER);
}

/// Pending forever; counts its polls.
struct Never(&'static AtomicUsize);

impl Future for Never {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Poll::Pending
    }
}

#[test]
fn shutdown_drops_tasks_on_timers_and_never_completing_futures() {
    static DPC: Runner = Runner::new(Budget::DEFAULT);
    static PASSIVE: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 32> = TaskPool::new();
    static GAMES: [PingPong; 2] = [const { PingPong::new() }; 2];
    host::boot();
    host::on_kernel_thread(|| DPC.start(RunnerKind::Dpc)).unwrap();
    host::on_kernel_thread(|| PASSIVE.start(RunnerKind::Passive)).unwrap();

    for (runner, irql, drops) in [
        (
            &DPC,
            DISPATCH_LEVEL,
            Box::leak(Box::new(AtomicUsize::new(0))),
        ),
        (
            &PASSIVE,
            PASSIVE_LEVEL,
            Box::leak(Box::new(AtomicUsize::new(0))),
        ),
    ] {
        let drops: &'static AtomicUsize = drops;
        let polls: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let mut handles = Vec::new();
        for _ in 0..3 {
            let counter = DropCounter(drops);
            handles.push(
                runner
                    .spawn(&POOL, async move {
                        let _counter = counter;
                        sleep(LONG).await;
                    })
                    .unwrap(),
            );
            let counter = DropCounter(drops);
            handles.push(
                runner
                    .spawn(&POOL, async move {
                        let _counter = counter;
                        Never(polls).await;
                    })
                    .unwrap(),
            );
        }
        // Tasks still busy waking each other when the shutdown starts.
        let game = if irql == DISPATCH_LEVEL {
            &GAMES[0]
        } else {
            &GAMES[1]
        };
        handles.push(
            runner
                .spawn(&POOL, async move {
                    game.play(0, usize::MAX, irql).await;
                })
                .unwrap(),
        );
        handles.push(
            runner
                .spawn(&POOL, async move {
                    game.play(1, usize::MAX, irql).await;
                })
                .unwrap(),
        );
        // Let every task reach its first await.
        while polls.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        shutdown_within(runner);
        assert_eq!(drops.load(Ordering::SeqCst), 6, "every future dropped");
        assert_eq!(runner.live_tasks(), 0);
        assert!(!runner.is_running());
        assert_eq!(
            runner.spawn(&POOL, async {}).unwrap_err(),
            SpawnError::Closed
        );
        for handle in handles {
            assert!(handle.is_finished());
            assert_eq!(
                host::on_kernel_thread(|| join_within(handle)),
                Err(JoinError::Cancelled)
            );
        }
        // A second shutdown returns at once.
        shutdown_within(runner);
    }
    assert_eq!(POOL.used(), 0);
}

#[test]
fn spawning_into_a_full_pool_errors() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 3> = TaskPool::new();
    static NEVER_POLLS: AtomicUsize = AtomicUsize::new(0);
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();

    let handles: Vec<_> = (0..3)
        .map(|_| RUNNER.spawn(&POOL, Never(&NEVER_POLLS)).unwrap())
        .collect();
    assert_eq!(
        RUNNER.spawn(&POOL, async {}).unwrap_err(),
        SpawnError::PoolFull
    );
    handles[0].abort();
    let first = handles.into_iter().next().unwrap();
    assert_eq!(
        host::on_kernel_thread(|| join_within(first)),
        Err(JoinError::Cancelled)
    );
    let again = RUNNER.spawn(&POOL, async { 1 }).unwrap();
    assert_eq!(host::on_kernel_thread(|| join_within(again)), Ok(1));
    shutdown_within(&RUNNER);
}

#[test]
fn spawn_before_start_runs_after_start() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 2> = TaskPool::new();
    host::boot();
    let handle = RUNNER.spawn(&POOL, async { 5 }).unwrap();
    assert!(!handle.is_finished());
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();
    assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(5));
    shutdown_within(&RUNNER);
}

/// A runner restarts after its shutdown, as a driver's statics must when the driver is loaded
/// again in the same address space: each run serves tasks (a sleep among them, so the timer
/// queue works again too), the pool's slots are reused, a second start while running is
/// refused, spawns fail only between a shutdown and the next start, and a task parked on a
/// never-completing future is dropped by each shutdown.
#[test]
fn a_runner_restarts_after_shutdown_with_its_pools_reused() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 2> = TaskPool::new();
    static NEVER_POLLS: AtomicUsize = AtomicUsize::new(0);
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    host::boot();
    for (round, kind) in [
        RunnerKind::Dpc,
        RunnerKind::Passive,
        RunnerKind::Dpc,
        RunnerKind::Dpc,
    ]
    .into_iter()
    .enumerate()
    {
        host::on_kernel_thread(|| RUNNER.start(kind))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(RUNNER.is_running());
        assert_eq!(RUNNER.kind(), kind);
        assert_eq!(
            host::on_kernel_thread(|| RUNNER.start(kind)),
            Err(wsk_executor::StartError::AlreadyStarted)
        );
        // Both slots: one parked for the shutdown to drop, one that sleeps and answers.
        let parked = RUNNER
            .spawn(&POOL, async {
                let _counted = DropCounter(&DROPS);
                Never(&NEVER_POLLS).await;
            })
            .unwrap();
        let answer = RUNNER
            .spawn(&POOL, async move {
                sleep(Duration::from_millis(2)).await;
                round * 10
            })
            .unwrap();
        assert_eq!(
            host::on_kernel_thread(|| join_within(answer)),
            Ok(round * 10)
        );
        drop(parked);
        shutdown_within(&RUNNER);
        assert!(!RUNNER.is_running());
        assert_eq!(
            DROPS.load(Ordering::SeqCst),
            round + 1,
            "the parked task is dropped"
        );
        assert_eq!(RUNNER.live_tasks(), 0);
        assert_eq!(
            RUNNER.spawn(&POOL, async {}).unwrap_err(),
            SpawnError::Closed,
            "between shutdown and start"
        );
    }
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Passive)).unwrap();
    let late = RUNNER.spawn(&POOL, async { 6 }).unwrap();
    assert_eq!(host::on_kernel_thread(|| join_within(late)), Ok(6));
    shutdown_within(&RUNNER);
}

/// One "operation" on an IRP we allocate; its completion routine wakes the task.
struct IrpOperation {
    waker: Mutex<Option<Waker>>,
    completions: AtomicUsize,
    completed_inline: AtomicUsize,
    issuing: AtomicBool,
}

unsafe extern "system" fn complete_operation(
    _: *mut wsk_sys::DEVICE_OBJECT,
    _: *mut wsk_sys::IRP,
    context: PVOID,
) -> wsk_sys::NTSTATUS {
    // SAFETY: the completion context is a 'static IrpOperation.
    let operation = unsafe { &*context.cast::<IrpOperation>() };
    if operation.issuing.load(Ordering::SeqCst) {
        operation.completed_inline.fetch_add(1, Ordering::SeqCst);
    }
    operation.completions.fetch_add(1, Ordering::SeqCst);
    let waker = operation.waker.lock().unwrap().take();
    if let Some(waker) = waker {
        waker.wake();
    }
    wsk_sys::STATUS_MORE_PROCESSING_REQUIRED
}

impl IrpOperation {
    /// Issues an IRP that the "lower driver" (us) completes at once, inside the issuing call,
    /// as WSK sometimes does; the completion routine wakes the task while it is being polled.
    async fn issue_and_complete_inline(&'static self) {
        let target = self.completions.load(Ordering::SeqCst) + 1;
        // The IRP's address: a raw pointer would make the future !Send.
        let mut irp_address: usize = 0;
        std::future::poll_fn(|cx| {
            if self.completions.load(Ordering::SeqCst) >= target {
                return Poll::Ready(());
            }
            if irp_address == 0 {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                // A fresh IRP with one location; our completion routine goes in it, then we play
                // the lower driver: make that location current and complete the IRP.
                // SAFETY: PASSIVE_LEVEL, one stack location.
                let irp = unsafe { wsk_sys::IoAllocateIrp(1, wsk_sys::FALSE) };
                assert!(!irp.is_null());
                irp_address = irp as usize;
                let context = std::ptr::from_ref(self).cast_mut().cast();
                // SAFETY: our fresh IRP; the routine's context is this 'static operation.
                unsafe {
                    wsk_sys::IoSetCompletionRoutine(
                        irp,
                        Some(complete_operation),
                        context,
                        true,
                        true,
                        true,
                    );
                };
                // SAFETY: our fresh IRP, with its one location set up above.
                unsafe { wsk_sys::IoSetNextIrpStackLocation(irp) };
                // SAFETY: our fresh IRP, valid and not shared yet.
                unsafe { (*irp).IoStatus.Status = wsk_sys::STATUS_SUCCESS };
                self.issuing.store(true, Ordering::SeqCst);
                // SAFETY: our IRP, completed once, as the lower driver.
                unsafe { wsk_sys::IofCompleteRequest(irp, wsk_sys::IO_NO_INCREMENT) };
                self.issuing.store(false, Ordering::SeqCst);
            }
            Poll::Pending
        })
        .await;
        // SAFETY: the completion routine ran and stopped completion; the IRP is ours again.
        unsafe { wsk_sys::IoFreeIrp(irp_address as *mut wsk_sys::IRP) };
    }
}

#[test]
fn dpc_runner_completion_routine_wakes_inline() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 2> = TaskPool::new();
    static OPERATION: IrpOperation = IrpOperation {
        waker: Mutex::new(None),
        completions: AtomicUsize::new(0),
        completed_inline: AtomicUsize::new(0),
        issuing: AtomicBool::new(false),
    };
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc)).unwrap();
    let handle = RUNNER
        .spawn(&POOL, async {
            for _ in 0..50 {
                OPERATION.issue_and_complete_inline().await;
            }
        })
        .unwrap();
    assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(()));
    assert_eq!(OPERATION.completions.load(Ordering::SeqCst), 50);
    assert_eq!(
        OPERATION.completed_inline.load(Ordering::SeqCst),
        50,
        "completions ran inline"
    );
    shutdown_within(&RUNNER);
}

#[test]
fn passive_runner_loses_no_wake_that_races_with_its_thread_going_back_to_wait() {
    // Each wake comes from another thread just as the runner's thread finishes the poll that
    // registered the waker and turns to wait: wakes while the thread polls only queue the
    // task, so the thread must look at the queue again after routing wakes back to its event.
    // A lost wake leaves the task waiting and the test fails on the bound.
    const ROUNDS: u64 = 50_000;
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<512, 1> = TaskPool::new();
    static TICKS: AtomicU64 = AtomicU64::new(0);
    static SEEN: AtomicU64 = AtomicU64::new(0);
    static WAKER: Mutex<Option<Waker>> = Mutex::new(None);
    host::boot();
    host::on_kernel_thread(|| RUNNER.start(RunnerKind::Passive)).unwrap();
    let handle = RUNNER
        .spawn(&POOL, async {
            for round in 1..=ROUNDS {
                std::future::poll_fn(|cx| {
                    if TICKS.load(Ordering::SeqCst) >= round {
                        return Poll::Ready(());
                    }
                    *WAKER.lock().unwrap() = Some(cx.waker().clone());
                    if TICKS.load(Ordering::SeqCst) >= round {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                SEEN.store(round, Ordering::SeqCst);
            }
        })
        .unwrap();
    host::on_kernel_thread(|| {
        for round in 1..=ROUNDS {
            TICKS.store(round, Ordering::SeqCst);
            if let Some(waker) = WAKER.lock().unwrap().take() {
                waker.wake();
            }
            let start = std::time::Instant::now();
            while SEEN.load(Ordering::SeqCst) < round {
                assert!(
                    start.elapsed() < BOUND,
                    "round {round}: the task was not run after its wake (a lost wake)"
                );
                std::hint::spin_loop();
            }
        }
    });
    assert_eq!(host::on_kernel_thread(|| join_within(handle)), Ok(()));
    shutdown_within(&RUNNER);
}
