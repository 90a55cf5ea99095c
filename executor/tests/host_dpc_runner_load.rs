//! The DPC runner under sustained load and at shutdown, each test on its own host kernel (a
//! small cumulative DPC watchdog, a DPC dispatch delay, a coarse clock tick): tasks that always
//! wake themselves must not keep a processor at `DISPATCH_LEVEL` past the watchdog, must keep
//! running (at `DISPATCH_LEVEL`, on the runner's thread) once the DPC hands them off instead of
//! waiting for a clock tick, and shutdown must not return while an instance of the runner's DPC
//! can still start or its thread still runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, block_on, timeout, yield_now};
use wsk_host::testing::BOUND;
use wsk_host::{Config, Kernel};
use wsk_sys::{
    DISPATCH_LEVEL, KDPC, KeGetCurrentIrql, KeGetCurrentProcessorNumberEx, KeInitializeDpc,
    KeInsertQueueDpc, KeSetTargetProcessorDpcEx, PROCESSOR_NUMBER, PVOID,
};

/// The cumulative DPC watchdog's limit in these tests.
const LIMIT: Duration = Duration::from_millis(300);

/// How long the load runs: several times the limit.
const LOAD: Duration = Duration::from_millis(1500);

fn boot(config: Config) -> Kernel {
    Kernel::boot(
        config
            .with_cpus(2)
            .with_dpc_watchdog(Duration::from_secs(599))
            .with_dpc_cumulative_watchdog(LIMIT),
    )
}

/// A task that wakes itself on every poll until `stop`, counting its polls.
async fn spin(stop: &'static AtomicBool, polls: &'static AtomicUsize) {
    while !stop.load(Ordering::SeqCst) {
        polls.fetch_add(1, Ordering::SeqCst);
        yield_now().await;
    }
}

/// Shuts `runner` down on a kernel thread; fails the test past [`BOUND`].
fn shutdown_within(kernel: &Kernel, runner: &'static Runner) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            kernel.on_kernel_thread(|| runner.shutdown());
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(BOUND)
            .expect("shutdown did not return within the bound");
    });
}

/// Runs self-waking tasks on `runner` for [`LOAD`]; checks they progressed all along and that
/// the DPC watchdog saw nothing.
fn sustained_load(kernel: &Kernel, runner: &'static Runner, pool: &'static TaskPool<256, 4>) {
    static STOP: AtomicBool = AtomicBool::new(false);
    static POLLS: AtomicUsize = AtomicUsize::new(0);
    STOP.store(false, Ordering::SeqCst);
    POLLS.store(0, Ordering::SeqCst);
    kernel
        .on_kernel_thread(|| runner.start(RunnerKind::Dpc))
        .unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| runner.spawn(pool, spin(&STOP, &POLLS)).unwrap())
        .collect();
    std::thread::sleep(LOAD / 2);
    let halfway = POLLS.load(Ordering::SeqCst);
    std::thread::sleep(LOAD / 2);
    let end = POLLS.load(Ordering::SeqCst);
    STOP.store(true, Ordering::SeqCst);
    for handle in handles {
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, handle)));
        assert_eq!(joined, Ok(Ok(())), "task did not finish within the bound");
    }
    shutdown_within(kernel, runner);
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.is_empty(),
        "the runner kept a processor at DISPATCH_LEVEL: {bugchecks:#?}"
    );
    assert!(halfway > 0, "no progress in the first half");
    assert!(end > halfway, "no progress in the second half");
}

#[test]
fn a_self_waking_load_hands_off_before_the_dpc_watchdog_with_ke_should_yield_processor() {
    // The runner's own back-to-back limit is out of the way: KeShouldYieldProcessor decides.
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    let kernel = boot(Config::default());
    sustained_load(&kernel, &RUNNER, &POOL);
}

#[test]
fn a_self_waking_load_hands_off_before_the_dpc_watchdog_without_ke_should_yield_processor() {
    // An older kernel: the runner's own back-to-back limit decides.
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    let kernel = boot(Config::default().with_ke_should_yield_processor(false));
    sustained_load(&kernel, &RUNNER, &POOL);
}

static T_WAKER: Mutex<Option<Waker>> = Mutex::new(None);
static T_WOKEN: AtomicBool = AtomicBool::new(false);
static S_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Waits until the waker DPC wakes it.
async fn woken_by_dpc() {
    std::future::poll_fn(|cx| {
        if T_WOKEN.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *T_WAKER.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    std::future::pending::<()>().await;
}

/// Holds its first poll until the waker DPC has run and a little longer (so the wake queues a
/// second runner DPC, which the other processor dequeues, while this one runs), then yields
/// forever.
async fn hold_then_spin() {
    std::future::poll_fn(|_| {
        S_CPU.store(current_cpu(), Ordering::SeqCst);
        let start = std::time::Instant::now();
        while !T_WOKEN.load(Ordering::SeqCst) && start.elapsed() < BOUND {
            std::hint::spin_loop();
        }
        // Long enough for the other processor to dequeue the DPC that wake queued.
        std::thread::sleep(Duration::from_millis(5));
        Poll::Ready(())
    })
    .await;
    loop {
        yield_now().await;
    }
}

fn current_cpu() -> usize {
    // SAFETY: a null out-pointer is allowed; any IRQL.
    unsafe { KeGetCurrentProcessorNumberEx(std::ptr::null_mut()) as usize }
}

/// A DPC that wakes the task waiting in `woken_by_dpc`: a completion on another processor.
unsafe extern "system" fn wake_t(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    T_WOKEN.store(true, Ordering::SeqCst);
    if let Some(waker) = T_WAKER.lock().unwrap().take() {
        waker.wake();
    }
}

struct KdpcCell(std::cell::UnsafeCell<std::mem::MaybeUninit<KDPC>>);
// SAFETY: only handed to the kernel.
unsafe impl Sync for KdpcCell {}

#[test]
fn shutdown_returns_only_when_no_runner_dpc_can_start_again() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static WAKE_T: KdpcCell = KdpcCell(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));
    // Both processors wait between dequeuing a DPC and calling its routine, processor 1 three
    // times longer: a runner DPC dequeued before the shutdown's KeRemoveQueueDpc cannot be
    // removed any more, and of two in flight the one on the slower processor starts well after
    // the other; the runner's own count must cover both.
    let delay = Duration::from_millis(20);
    let kernel = boot(
        Config::default()
            .with_dpc_dispatch_delay(0, delay)
            .with_dpc_dispatch_delay(1, delay * 3),
    );
    // One batch, in this order: T registers its waker; S holds its processor until a DPC on
    // the other processor has woken T (which queues a second runner DPC there, as the batch
    // was taken); U is left over past the time budget, so the first run queues the DPC again
    // on its own processor. Two runner DPCs are then in flight, each waiting to be called.
    let t = RUNNER.spawn(&POOL, woken_by_dpc()).unwrap();
    let s = RUNNER.spawn(&POOL, hold_then_spin()).unwrap();
    let u = RUNNER
        .spawn(&POOL, async {
            loop {
                yield_now().await;
            }
        })
        .unwrap();
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    let start = std::time::Instant::now();
    while S_CPU.load(Ordering::SeqCst) == usize::MAX && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(1));
    }
    let other = 1 - S_CPU.load(Ordering::SeqCst);
    let mut number = PROCESSOR_NUMBER {
        Group: 0,
        Number: u8::try_from(other).unwrap(),
        Reserved: 0,
    };
    // A 'static KDPC, initialised and targeted before it is queued.
    // SAFETY: as above.
    unsafe { KeInitializeDpc(WAKE_T.0.get().cast(), Some(wake_t), std::ptr::null_mut()) };
    // SAFETY: as above; a valid processor number.
    unsafe { KeSetTargetProcessorDpcEx(WAKE_T.0.get().cast(), &raw mut number) };
    // SAFETY: as above.
    unsafe {
        KeInsertQueueDpc(
            WAKE_T.0.get().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    while !T_WOKEN.load(Ordering::SeqCst) && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(1));
    }
    shutdown_within(&kernel, &RUNNER);
    let at_return = kernel.dpc_routines_started();
    std::thread::sleep(delay * 8);
    let later = kernel.dpc_routines_started();
    assert_eq!(
        later - at_return,
        0,
        "{} DPC routine(s) started after Runner::shutdown returned",
        later - at_return
    );
    drop((t, s, u));
    assert_eq!(POOL.used(), 0);
    assert!(kernel.take_bugchecks().is_empty());
}

/// Where one test's [`spin_and_record`] tasks were polled.
struct PollPlaces {
    /// Polls on the runner's system thread (the host kernel names its system threads
    /// `system-thread-…`).
    on_system_thread: AtomicUsize,
    /// Polls anywhere below `DISPATCH_LEVEL`.
    below_dispatch: AtomicUsize,
}

impl PollPlaces {
    const fn new() -> Self {
        Self {
            on_system_thread: AtomicUsize::new(0),
            below_dispatch: AtomicUsize::new(0),
        }
    }
}

/// True on a host kernel system thread (a runner's thread), false on an emulated processor.
fn on_system_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|name| name.starts_with("system-thread-"))
}

/// [`spin`], recording where and at which IRQL each poll runs.
async fn spin_and_record(
    stop: &'static AtomicBool,
    polls: &'static AtomicUsize,
    places: &'static PollPlaces,
) {
    while !stop.load(Ordering::SeqCst) {
        polls.fetch_add(1, Ordering::SeqCst);
        if KeGetCurrentIrql() != DISPATCH_LEVEL {
            places.below_dispatch.fetch_add(1, Ordering::SeqCst);
        }
        if on_system_thread() {
            places.on_system_thread.fetch_add(1, Ordering::SeqCst);
        }
        yield_now().await;
    }
}

#[test]
fn a_handed_off_load_keeps_running_between_clock_ticks_at_dispatch_level() {
    // A one-second tick: work handed to anything that fires on a clock tick (a KTIMER, as the
    // runner once did) would stall for up to a second after each 2 ms streak, leaving most of
    // the windows below without a single poll.
    const WINDOW: Duration = Duration::from_millis(100);
    const WINDOWS: usize = 15;
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static STOP: AtomicBool = AtomicBool::new(false);
    static POLLS: AtomicUsize = AtomicUsize::new(0);
    static PLACES: PollPlaces = PollPlaces::new();
    let kernel = boot(Config::default().with_clock_tick(Duration::from_secs(1)));
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            RUNNER
                .spawn(&POOL, spin_and_record(&STOP, &POLLS, &PLACES))
                .unwrap()
        })
        .collect();
    let mut windows_with_polls = 0;
    let mut last = POLLS.load(Ordering::SeqCst);
    for _ in 0..WINDOWS {
        std::thread::sleep(WINDOW);
        let now = POLLS.load(Ordering::SeqCst);
        if now > last {
            windows_with_polls += 1;
        }
        last = now;
    }
    STOP.store(true, Ordering::SeqCst);
    for handle in handles {
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, handle)));
        assert_eq!(joined, Ok(Ok(())), "task did not finish within the bound");
    }
    shutdown_within(&kernel, &RUNNER);
    // Every window, less a few a busy host may steal from the runner's thread.
    assert!(
        windows_with_polls >= WINDOWS - 3,
        "the load was polled in only {windows_with_polls} of {WINDOWS} windows of {} ms: the \
         handed-off work waited for the clock tick",
        WINDOW.as_millis()
    );
    assert!(
        PLACES.on_system_thread.load(Ordering::SeqCst) > 0,
        "the DPC never handed the load to the runner's thread"
    );
    assert_eq!(
        PLACES.below_dispatch.load(Ordering::SeqCst),
        0,
        "a DPC runner's task was polled below DISPATCH_LEVEL"
    );
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.is_empty(),
        "the runner kept a processor at DISPATCH_LEVEL: {bugchecks:#?}"
    );
}

#[test]
fn shutdown_while_the_thread_owns_the_work_drops_every_task_and_stops_everything() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static POLLS: AtomicUsize = AtomicUsize::new(0);
    let kernel = boot(Config::default());
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    // Self-waking forever: once the DPC hands them off, the run queue never empties, so the
    // thread holds the work until shutdown drops the tasks.
    let handles: Vec<_> = (0..2)
        .map(|_| {
            RUNNER
                .spawn(&POOL, async {
                    loop {
                        POLLS.fetch_add(1, Ordering::SeqCst);
                        yield_now().await;
                    }
                })
                .unwrap()
        })
        .collect();
    // Far past the 2 ms streak: the hand-off has happened.
    std::thread::sleep(Duration::from_millis(300));
    assert!(POLLS.load(Ordering::SeqCst) > 0, "the load never ran");
    shutdown_within(&kernel, &RUNNER);
    let polls_at_return = POLLS.load(Ordering::SeqCst);
    let dpcs_at_return = kernel.dpc_routines_started();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        POLLS.load(Ordering::SeqCst),
        polls_at_return,
        "a task was polled after Runner::shutdown returned"
    );
    assert_eq!(
        kernel.dpc_routines_started(),
        dpcs_at_return,
        "a DPC routine started after Runner::shutdown returned"
    );
    for handle in handles {
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, handle)));
        assert!(
            matches!(joined, Ok(Err(_))),
            "a task dropped by shutdown did not report it: {joined:?}"
        );
    }
    assert_eq!(POOL.used(), 0, "shutdown left a task slot in use");
    assert!(!RUNNER.is_running());
    assert!(kernel.take_bugchecks().is_empty());
}

#[test]
fn the_thread_hands_the_work_back_to_the_dpc_once_the_queue_is_empty() {
    static RUNNER: Runner = Runner::new(Budget::DEFAULT);
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static STOP: AtomicBool = AtomicBool::new(false);
    static POLLS: AtomicUsize = AtomicUsize::new(0);
    static PLACES: PollPlaces = PollPlaces::new();
    let kernel = boot(Config::default());
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    // A load long enough for the hand-off (far past the 2 ms streak), polled on the thread...
    let handles: Vec<_> = (0..2)
        .map(|_| {
            RUNNER
                .spawn(&POOL, spin_and_record(&STOP, &POLLS, &PLACES))
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    STOP.store(true, Ordering::SeqCst);
    for handle in handles {
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, handle)));
        assert_eq!(joined, Ok(Ok(())), "task did not finish within the bound");
    }
    assert!(
        PLACES.on_system_thread.load(Ordering::SeqCst) > 0,
        "the DPC never handed the load to the runner's thread"
    );
    // ...then, with the queue empty, single tasks run on the DPC again: on a processor, at
    // DISPATCH_LEVEL. (The thread hands back after its last poll, which may end just after the
    // tasks above were joined: probe until one runs off the thread, within the bound.)
    let start = std::time::Instant::now();
    let mut ran_on_the_thread = true;
    while ran_on_the_thread && start.elapsed() < BOUND {
        let probe = RUNNER
            .spawn(&POOL, async { (on_system_thread(), KeGetCurrentIrql()) })
            .unwrap();
        let (on_thread, irql) = kernel
            .on_kernel_thread(|| block_on(timeout(BOUND, probe)))
            .expect("probe did not finish within the bound")
            .unwrap();
        assert_eq!(irql, DISPATCH_LEVEL, "a probe ran below DISPATCH_LEVEL");
        ran_on_the_thread = on_thread;
        if ran_on_the_thread {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        !ran_on_the_thread,
        "tasks spawned after the load still ran on the runner's thread: it kept the work"
    );
    shutdown_within(&kernel, &RUNNER);
    assert_eq!(POOL.used(), 0);
    assert!(kernel.take_bugchecks().is_empty());
}

#[test]
fn short_bursts_spread_over_more_than_the_back_to_back_limit_stay_on_the_dpc() {
    // Each burst runs the DPC back to back for far less than the limit, then leaves nothing
    // queued, which ends the processor's streak; the bursts together span several times the
    // limit. A streak that an empty run failed to end would outlast the limit and hand a
    // later burst to the runner's thread.
    const LIMIT_BACK_TO_BACK: Duration = Duration::from_millis(50);
    const BURSTS: usize = 100;
    const POLLS_PER_BURST: usize = 10;
    static RUNNER: Runner = Runner::new(Budget {
        max_back_to_back: LIMIT_BACK_TO_BACK,
        ..Budget::DEFAULT
    });
    static POOL: TaskPool<256, 4> = TaskPool::new();
    static PLACES: PollPlaces = PollPlaces::new();
    // The runner's own limit decides (no KeShouldYieldProcessor to hand off at its whim).
    let kernel = boot(Config::default().with_ke_should_yield_processor(false));
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    let start = std::time::Instant::now();
    for _ in 0..BURSTS {
        let burst = RUNNER
            .spawn(&POOL, async {
                for _ in 0..POLLS_PER_BURST {
                    if on_system_thread() {
                        PLACES.on_system_thread.fetch_add(1, Ordering::SeqCst);
                    }
                    yield_now().await;
                }
            })
            .unwrap();
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, burst)));
        assert_eq!(
            joined,
            Ok(Ok(())),
            "a burst did not finish within the bound"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let spanned = start.elapsed();
    shutdown_within(&kernel, &RUNNER);
    assert!(
        spanned > 2 * LIMIT_BACK_TO_BACK,
        "the bursts spanned only {spanned:?}: the test proves nothing"
    );
    assert_eq!(
        PLACES.on_system_thread.load(Ordering::SeqCst),
        0,
        "short bursts were handed to the runner's thread: a streak outlived its empty run"
    );
    assert!(kernel.take_bugchecks().is_empty());
}
