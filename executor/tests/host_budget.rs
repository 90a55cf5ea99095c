//! The DPC runner's time budget on a kernel whose interrupt time moves in clock ticks, as
//! Windows' does. Its own test binary: it boots the host kernel with a one-second tick, so the
//! interrupt time does not move while the test looks, and only a budget measured on the
//! precise clock can end a run.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, block_on, timeout};
use wsk_host::testing::BOUND;
use wsk_host::{Config, Kernel};
use wsk_sys::{
    KDPC, KeGetCurrentProcessorNumberEx, KeInitializeDpc, KeInsertQueueDpc,
    KeSetTargetProcessorDpcEx, PROCESSOR_NUMBER, PVOID,
};

const TASKS: usize = 24;
/// Each poll busy-waits this long: two or three polls fill the 100 µs budget.
const POLL_COST: Duration = Duration::from_micros(40);

fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| Kernel::boot(Config::default().with_clock_tick(Duration::from_secs(1))))
}

/// Polls done so far, and how many had been done when the probe DPC ran.
static POLLS: AtomicUsize = AtomicUsize::new(0);
static PROBE_SAW: AtomicUsize = AtomicUsize::new(usize::MAX);

struct Probe(UnsafeCell<MaybeUninit<KDPC>>);
// SAFETY: the KDPC is only handed to the kernel, once.
unsafe impl Sync for Probe {}
static PROBE: Probe = Probe(UnsafeCell::new(MaybeUninit::zeroed()));

unsafe extern "system" fn probe(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    PROBE_SAW.store(POLLS.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// Queues the probe DPC on the current CPU, behind the running runner DPC: it runs when the
/// runner gives the CPU back.
fn queue_probe_here() {
    let mut number = PROCESSOR_NUMBER::default();
    // SAFETY: a valid out-pointer; any IRQL.
    unsafe { KeGetCurrentProcessorNumberEx(&raw mut number) };
    // A 'static KDPC, initialised and targeted once, before it is queued.
    // SAFETY: as above.
    unsafe { KeInitializeDpc(PROBE.0.get().cast(), Some(probe), std::ptr::null_mut()) };
    // SAFETY: as above; a valid processor number.
    unsafe { KeSetTargetProcessorDpcEx(PROBE.0.get().cast(), &raw mut number) };
    // SAFETY: as above.
    unsafe {
        KeInsertQueueDpc(
            PROBE.0.get().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

#[test]
fn dpc_time_budget_ends_a_run_between_clock_ticks() {
    static RUNNER: Runner = Runner::new(Budget {
        max_polls: usize::MAX,
        max_time: Duration::from_micros(100),
        ..Budget::DEFAULT
    });
    static POOL: TaskPool<256, TASKS> = TaskPool::new();
    let kernel = kernel();
    // All tasks are queued before the runner starts, so its first run could poll them all.
    let handles: Vec<_> = (0..TASKS)
        .map(|_| {
            RUNNER
                .spawn(
                    &POOL,
                    std::future::poll_fn(|_| {
                        let start = std::time::Instant::now();
                        while start.elapsed() < POLL_COST {}
                        if POLLS.fetch_add(1, Ordering::SeqCst) == 0 {
                            queue_probe_here();
                        }
                        Poll::Ready(())
                    }),
                )
                .unwrap()
        })
        .collect();
    kernel
        .on_kernel_thread(|| RUNNER.start(RunnerKind::Dpc))
        .unwrap();
    for handle in handles {
        let joined = kernel.on_kernel_thread(|| block_on(timeout(BOUND, handle)));
        assert_eq!(joined, Ok(Ok(())), "task did not finish within the bound");
    }
    kernel.on_kernel_thread(|| RUNNER.shutdown());
    let saw = PROBE_SAW.load(Ordering::SeqCst);
    // 100 µs of 40 µs polls is three; another CPU may start the runner's next run meanwhile
    // and add one or two. A budget on the interrupt time never expires within a tick: the
    // first run polls all of them and the probe sees them all.
    assert!(
        saw <= 6,
        "the runner's first DPC run polled {saw} of {TASKS} tasks of {} µs each before giving the \
         CPU back: its 100 µs time budget did not end the run",
        POLL_COST.as_micros()
    );
    assert!(kernel.take_bugchecks().is_empty());
}
