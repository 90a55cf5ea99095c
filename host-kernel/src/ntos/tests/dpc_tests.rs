use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::{
    DISPATCH_LEVEL, FALSE, KDPC, KeFlushQueuedDpcs, KeGetCurrentIrql,
    KeGetCurrentProcessorNumberEx, KeInitializeDpc, KeInsertQueueDpc,
    KeQueryActiveProcessorCountEx, KeRemoveQueueDpc, KeSetTargetProcessorDpcEx, PROCESSOR_NUMBER,
    PVOID, TRUE,
};

/// A KDPC with a Rust context, pinned in a box.
struct Dpc<C> {
    kdpc: core::cell::UnsafeCell<core::mem::MaybeUninit<KDPC>>,
    ctx: C,
}

// SAFETY: the KDPC is only handed to the kernel; contexts used here are Sync.
unsafe impl<C: Sync> Sync for Dpc<C> {}
// SAFETY: as above.
unsafe impl<C: Send> Send for Dpc<C> {}

impl<C> Dpc<C> {
    #[allow(
        clippy::unnecessary_box_returns,
        reason = "the kernel keeps the KDPC's address: it must not move"
    )]
    fn new(
        routine: unsafe extern "system" fn(*mut KDPC, PVOID, PVOID, PVOID),
        ctx: C,
    ) -> Box<Self> {
        let dpc = Box::new(Self {
            kdpc: core::cell::UnsafeCell::new(core::mem::MaybeUninit::zeroed()),
            ctx,
        });
        // SAFETY: fresh, unqueued storage; the context is the box itself, which outlives use.
        unsafe {
            KeInitializeDpc(
                dpc.kdpc(),
                Some(routine),
                core::ptr::from_ref(&*dpc).cast_mut().cast(),
            );
        }
        dpc
    }

    fn kdpc(&self) -> *mut KDPC {
        self.kdpc.get().cast()
    }

    fn target(&self, cpu: usize) {
        let mut number = PROCESSOR_NUMBER {
            Group: 0,
            Number: u8::try_from(cpu).unwrap(),
            Reserved: 0,
        };
        // SAFETY: a live, unqueued KDPC.
        let status = unsafe { KeSetTargetProcessorDpcEx(self.kdpc(), &raw mut number) };
        assert_eq!(status, crate::STATUS_SUCCESS);
    }

    fn insert(&self) -> bool {
        // SAFETY: a live, initialised KDPC.
        unsafe {
            KeInsertQueueDpc(self.kdpc(), core::ptr::null_mut(), core::ptr::null_mut()) == TRUE
        }
    }

    /// # Safety
    /// `context` is the DPC's context, a `Dpc<C>`.
    unsafe fn from_context<'a>(context: PVOID) -> &'a Self {
        // SAFETY: forwarded contract.
        unsafe { &*context.cast::<Self>() }
    }
}

fn cpu() -> usize {
    let mut number = PROCESSOR_NUMBER::default();
    // SAFETY: a valid out-pointer.
    let n = unsafe { KeGetCurrentProcessorNumberEx(&raw mut number) };
    assert_eq!(u32::from(number.Number), n);
    n as usize
}

/// Reports (cpu, irql) of each run.
unsafe extern "system" fn report(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Mutex<Sender>>.
    let dpc = unsafe { Dpc::<Mutex<Sender<(usize, u8)>>>::from_context(context) };
    let _ = dpc.ctx.lock().unwrap().send((cpu(), KeGetCurrentIrql()));
}

/// What a DPC saw: its processor, and the name of the host thread that ran it.
type Seen = (usize, Option<String>);

/// A DPC that queues `next` (untargeted) from where it runs, then reports where that was.
struct Relay {
    next: Box<Dpc<Mutex<Sender<Seen>>>>,
    tx: Mutex<Sender<Seen>>,
}

fn seen() -> Seen {
    (cpu(), std::thread::current().name().map(ToOwned::to_owned))
}

/// Reports where it ran.
unsafe extern "system" fn report_thread(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Mutex<Sender<Seen>>>.
    let dpc = unsafe { Dpc::<Mutex<Sender<Seen>>>::from_context(context) };
    let _ = dpc.ctx.lock().unwrap().send(seen());
}

/// Queues its `next` DPC, then reports where it ran.
unsafe extern "system" fn queue_next(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Relay>.
    let dpc = unsafe { Dpc::<Relay>::from_context(context) };
    assert!(dpc.ctx.next.insert());
    let _ = dpc.ctx.tx.lock().unwrap().send(seen());
}

/// The last processor has no thread of its own: the WSK reactor is it, so that a DPC its
/// completions queue runs there without waking another thread; a DPC queued to it from
/// elsewhere wakes the reactor. Every other processor is its own `cpuN` thread.
#[test]
fn the_last_processor_is_the_wsk_reactor_and_its_dpcs_stay_on_it() {
    let kernel = boot();
    let last = kernel.cpus() - 1;
    for target in 0..kernel.cpus() {
        let (tx, rx) = mpsc::channel::<Seen>();
        let chain = Dpc::new(
            queue_next,
            Relay {
                next: Dpc::new(report_thread, Mutex::new(tx.clone())),
                tx: Mutex::new(tx),
            },
        );
        chain.target(target);
        assert!(chain.insert());
        let thread = if target == last {
            String::from("wsk-reactor")
        } else {
            std::format!("cpu{target}")
        };
        // The first DPC, then the one it queued: same processor, same thread.
        assert_eq!(recv(&rx), (target, Some(thread.clone())));
        assert_eq!(recv(&rx), (target, Some(thread)));
        kernel.on_kernel_thread(|| {
            // SAFETY: PASSIVE_LEVEL.
            unsafe { KeFlushQueuedDpcs() }
        });
    }
}

#[test]
fn targeted_dpcs_run_on_their_processor_at_dispatch_level() {
    let kernel = boot();
    // SAFETY: any IRQL.
    let count = unsafe { KeQueryActiveProcessorCountEx(crate::ALL_PROCESSOR_GROUPS) };
    assert_eq!(count, 4);
    for target in 0..kernel.cpus() {
        let (tx, rx) = mpsc::channel::<(usize, u8)>();
        let dpc = Dpc::new(report, Mutex::new(tx));
        dpc.target(target);
        assert!(dpc.insert());
        assert_eq!(recv(&rx), (target, DISPATCH_LEVEL));
        kernel.on_kernel_thread(|| {
            // SAFETY: PASSIVE_LEVEL.
            unsafe { KeFlushQueuedDpcs() }
        });
    }
    // Out of range.
    let (tx, _rx) = mpsc::channel::<(usize, u8)>();
    let dpc = Dpc::new(report, Mutex::new(tx));
    let mut number = PROCESSOR_NUMBER {
        Group: 0,
        Number: 4,
        Reserved: 0,
    };
    // SAFETY: a live, unqueued KDPC.
    let status = unsafe { KeSetTargetProcessorDpcEx(dpc.kdpc(), &raw mut number) };
    assert_eq!(status, crate::STATUS_INVALID_PARAMETER);
}

/// Holds its processor until released.
struct Blocker {
    started: Mutex<Sender<()>>,
    release: AtomicBool,
}

/// A [`Blocker`] started on processor `cpu` (numbered as [`Dpc::target`] takes it), holding
/// it until its `release` is set.
#[allow(
    clippy::unnecessary_box_returns,
    reason = "the kernel keeps the KDPC's address: it must not move"
)]
fn start_blocker(cpu: usize) -> Box<Dpc<Blocker>> {
    let (started, started_rx) = mpsc::channel();
    let blocker = Dpc::new(
        block,
        Blocker {
            started: Mutex::new(started),
            release: AtomicBool::new(false),
        },
    );
    blocker.target(cpu);
    assert!(blocker.insert());
    recv(&started_rx);
    blocker
}

unsafe extern "system" fn block(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Blocker>.
    let dpc = unsafe { Dpc::<Blocker>::from_context(context) };
    let _ = dpc.ctx.started.lock().unwrap().send(());
    let start = Instant::now();
    while !dpc.ctx.release.load(Ordering::SeqCst) && start.elapsed() < BOUND {
        std::thread::yield_now();
    }
}

#[test]
fn insert_returns_false_while_queued_and_remove_dequeues() {
    let kernel = boot();
    let blocker = start_blocker(1);
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let waiting = Dpc::new(report, Mutex::new(tx));
    waiting.target(1);
    assert!(waiting.insert(), "first insert queues");
    assert!(
        !waiting.insert(),
        "KeInsertQueueDpc returns FALSE while queued"
    );
    // SAFETY: a live KDPC.
    unsafe { assert_eq!(KeRemoveQueueDpc(waiting.kdpc()), TRUE) };
    // SAFETY: as above.
    unsafe { assert_eq!(KeRemoveQueueDpc(waiting.kdpc()), FALSE) };
    assert!(waiting.insert(), "queued again after removal");
    blocker.ctx.release.store(true, Ordering::SeqCst);
    assert_eq!(recv(&rx).0, 1);
    assert!(kernel.check_leaks().is_clean());
}

/// Re-queues itself (targeted at another processor) on its first run and waits until that
/// second run is inside the routine at the same time.
struct Twice {
    inside: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
    overlap: Mutex<Sender<(usize, usize)>>,
}

unsafe extern "system" fn requeue_self(kdpc: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Twice>.
    let dpc = unsafe { Dpc::<Twice>::from_context(context) };
    let twice = &dpc.ctx;
    let inside = twice.inside.fetch_add(1, Ordering::SeqCst) + 1;
    twice.peak.fetch_max(inside, Ordering::SeqCst);
    if twice.runs.fetch_add(1, Ordering::SeqCst) == 0 {
        // Not queued while running: it may be retargeted and queued again.
        dpc.target(1);
        // SAFETY: the running DPC's own KDPC.
        let again = unsafe { KeInsertQueueDpc(kdpc, core::ptr::null_mut(), core::ptr::null_mut()) };
        assert_eq!(again, TRUE);
    }
    // Both runs wait until both were inside at once.
    let start = Instant::now();
    while twice.peak.load(Ordering::SeqCst) < 2 && start.elapsed() < BOUND {
        std::thread::yield_now();
    }
    let _ = twice
        .overlap
        .lock()
        .unwrap()
        .send((cpu(), twice.peak.load(Ordering::SeqCst)));
    twice.inside.fetch_sub(1, Ordering::SeqCst);
}

#[test]
fn a_running_dpc_queued_again_runs_concurrently_on_another_processor() {
    let kernel = boot();
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let dpc = Dpc::new(
        requeue_self,
        Twice {
            inside: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
            overlap: Mutex::new(tx),
        },
    );
    dpc.target(0);
    assert!(dpc.insert());
    let mut seen = [recv(&rx), recv(&rx)];
    seen.sort_unstable();
    assert_eq!(
        seen,
        [(0, 2), (1, 2)],
        "both runs inside the routine at once, on CPUs 0 and 1"
    );
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() }
    });
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn flush_waits_for_dpcs_queued_before_it_also_one_already_running() {
    let kernel = boot();
    let blocker = Arc::new(start_blocker(2));
    // The blocker was queued before the call and is running: the page guarantees it has run to
    // completion when KeFlushQueuedDpcs returns, so the flush waits for it.
    let (flushed_tx, flushed_rx) = mpsc::channel();
    let flusher = std::thread::spawn(move || {
        on_kernel_thread_flush();
        flushed_tx.send(()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        flushed_rx.try_recv().is_err(),
        "the flush returned while a DPC queued before it was still running"
    );
    blocker.ctx.release.store(true, Ordering::SeqCst);
    recv(&flushed_rx);
    flusher.join().unwrap();
    let blocker = Arc::new(start_blocker(2));
    // A DPC queued behind the blocker is covered: that flush cannot finish while the blocker
    // holds the processor; release it, then the queued DPC runs and the flush ends.
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let queued = Dpc::new(report, Mutex::new(tx));
    queued.target(2);
    assert!(queued.insert());
    let (flushed_tx, flushed_rx) = mpsc::channel();
    let flusher = std::thread::spawn(move || {
        on_kernel_thread_flush();
        flushed_tx.send(()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        flushed_rx.try_recv().is_err(),
        "the flush returned before a DPC queued before it ran"
    );
    blocker.ctx.release.store(true, Ordering::SeqCst);
    recv(&flushed_rx);
    assert_eq!(
        rx.try_recv().map(|(cpu, _)| cpu),
        Ok(2),
        "the queued DPC ran"
    );
    flusher.join().unwrap();
    drop(kernel);
}

fn on_kernel_thread_flush() {
    crate::on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() }
    });
}

#[test]
fn untargeted_dpcs_from_other_threads_spread_over_processors() {
    let kernel = boot();
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let dpcs: Vec<_> = (0..8)
        .map(|_| Dpc::new(report, Mutex::new(tx.clone())))
        .collect();
    for dpc in &dpcs {
        assert!(dpc.insert());
    }
    let mut cpus: Vec<usize> = (0..8).map(|_| recv(&rx).0).collect();
    cpus.sort_unstable();
    cpus.dedup();
    assert_eq!(cpus, [0, 1, 2, 3], "round robin over the processors");
    drop(kernel);
}

unsafe extern "system" fn flush_at_dispatch(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: PASSIVE_LEVEL only: calling it here is the violation under test.
    unsafe { KeFlushQueuedDpcs() };
}

#[test]
fn a_bugcheck_inside_a_dpc_is_recorded_and_the_processor_keeps_going() {
    let kernel = boot();
    let bad = Dpc::new(flush_at_dispatch, ());
    bad.target(3);
    assert!(bad.insert());
    // The next DPC on the same processor runs on the thread that replaced the halted one.
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let after = Dpc::new(report, Mutex::new(tx));
    after.target(3);
    assert!(after.insert());
    assert_eq!(recv(&rx), (3, DISPATCH_LEVEL));
    let bugchecks = kernel.take_bugchecks();
    assert_eq!(bugchecks.len(), 1, "{bugchecks:?}");
    assert_eq!(bugchecks[0].name, "IRQL_NOT_LESS_OR_EQUAL");
    assert!(bugchecks[0].detail.contains("KeFlushQueuedDpcs"));
}

unsafe extern "system" fn raise_and_return(_: *mut KDPC, _: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the violation under test: the DPC returns at HIGH_LEVEL.
    let _ = unsafe { crate::KeRaiseIrql(crate::HIGH_LEVEL) };
}

unsafe extern "system" fn spin_past_the_watchdog(_: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Duration>.
    let budget = unsafe { Dpc::<Duration>::from_context(context) }.ctx;
    let start = Instant::now();
    while start.elapsed() <= budget * 3 {
        core::hint::spin_loop();
    }
}

#[test]
fn a_dpc_returning_at_the_wrong_irql_is_recorded() {
    let kernel = boot();
    let bad = Dpc::new(raise_and_return, ());
    bad.target(0);
    assert!(bad.insert());
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let after = Dpc::new(report, Mutex::new(tx));
    after.target(0);
    assert!(after.insert());
    assert_eq!(
        recv(&rx),
        (0, DISPATCH_LEVEL),
        "the processor is back at DISPATCH_LEVEL"
    );
    take(&kernel, &["IRQL_UNEXPECTED_VALUE"]);
}

#[test]
fn the_dpc_watchdog_records_long_dpcs() {
    let budget = Duration::from_millis(20);
    let kernel = Kernel::boot(Config::default().with_cpus(2).with_dpc_watchdog(budget));
    let long = Dpc::new(spin_past_the_watchdog, budget);
    long.target(0);
    assert!(long.insert());
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let after = Dpc::new(report, Mutex::new(tx));
    after.target(0);
    assert!(after.insert());
    recv(&rx);
    take(&kernel, &["DPC_WATCHDOG_VIOLATION"]);
}

/// Queues itself again until told to stop: a processor that never drains its DPC queue.
struct Hog {
    stop: AtomicBool,
    runs: AtomicUsize,
    /// What `KeShouldYieldProcessor` said on the first run (1) and once it said TRUE (2).
    yield_seen: AtomicUsize,
    should_yield: Option<unsafe extern "system" fn() -> u32>,
}

unsafe extern "system" fn hog(kdpc: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Hog>.
    let dpc = unsafe { Dpc::<Hog>::from_context(context) };
    let runs = dpc.ctx.runs.fetch_add(1, Ordering::SeqCst);
    if let Some(should_yield) = dpc.ctx.should_yield {
        // SAFETY: the routine MmGetSystemRoutineAddress returned; DISPATCH_LEVEL.
        let answer = unsafe { should_yield() };
        if runs == 0 && answer == 0 {
            dpc.ctx.yield_seen.fetch_or(1, Ordering::SeqCst);
        }
        if answer != 0 {
            dpc.ctx.yield_seen.fetch_or(2, Ordering::SeqCst);
        }
    }
    std::thread::sleep(Duration::from_millis(1));
    if !dpc.ctx.stop.load(Ordering::SeqCst) {
        // SAFETY: the running DPC's own KDPC; not queued while it runs.
        unsafe { KeInsertQueueDpc(kdpc, core::ptr::null_mut(), core::ptr::null_mut()) };
    }
}

/// `KeShouldYieldProcessor` through `MmGetSystemRoutineAddress`, as a driver finds it.
fn resolve_should_yield(kernel: &Kernel) -> Option<unsafe extern "system" fn() -> u32> {
    let address = kernel.on_kernel_thread(|| {
        let name: Vec<u16> = "KeShouldYieldProcessor".encode_utf16().collect();
        let mut name = crate::UNICODE_STRING::from_wide(&name);
        // SAFETY: PASSIVE_LEVEL; a valid counted string.
        unsafe { crate::MmGetSystemRoutineAddress(&raw mut name) as usize }
    });
    // SAFETY: a non-null result is the host's KeShouldYieldProcessor, of this signature.
    (address != 0).then(|| unsafe {
        core::mem::transmute::<usize, unsafe extern "system" fn() -> u32>(address)
    })
}

#[test]
fn the_cumulative_dpc_watchdog_records_a_processor_that_never_drains() {
    let limit = Duration::from_millis(200);
    let kernel = Kernel::boot(
        Config::default()
            .with_cpus(2)
            .with_dpc_watchdog(Duration::from_secs(599))
            .with_dpc_cumulative_watchdog(limit),
    );
    let should_yield = resolve_should_yield(&kernel);
    assert!(should_yield.is_some(), "KeShouldYieldProcessor is exported");
    // SAFETY: off a processor thread it answers FALSE.
    assert_eq!(unsafe { should_yield.unwrap()() }, 0);
    let hogger = Dpc::new(
        hog,
        Hog {
            stop: AtomicBool::new(false),
            runs: AtomicUsize::new(0),
            yield_seen: AtomicUsize::new(0),
            should_yield,
        },
    );
    hogger.target(1);
    assert!(hogger.insert());
    let start = Instant::now();
    while kernel.bugchecks().is_empty() && start.elapsed() < BOUND {
        std::thread::sleep(Duration::from_millis(5));
    }
    hogger.ctx.stop.store(true, Ordering::SeqCst);
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() }
    });
    assert!(
        start.elapsed() >= limit,
        "recorded before the limit: {:?}",
        kernel.bugchecks()
    );
    let bugchecks = kernel.take_bugchecks();
    assert!(!bugchecks.is_empty(), "no record within the bound");
    assert!(
        bugchecks.iter().all(|b| b.name == "DPC_WATCHDOG_VIOLATION"
            && b.detail.contains("processor 1 ran DPCs back to back")),
        "{bugchecks:?}"
    );
    assert_eq!(
        hogger.ctx.yield_seen.load(Ordering::SeqCst),
        3,
        "KeShouldYieldProcessor said FALSE at first, TRUE before the watchdog fired"
    );
}

#[test]
fn a_processor_whose_queue_drains_resets_the_cumulative_watchdog() {
    let limit = Duration::from_millis(200);
    let kernel = Kernel::boot(
        Config::default()
            .with_cpus(2)
            .with_dpc_watchdog(Duration::from_secs(599))
            .with_dpc_cumulative_watchdog(limit)
            .with_ke_should_yield_processor(false),
    );
    assert!(
        resolve_should_yield(&kernel).is_none(),
        "not exported when booted as an older kernel"
    );
    // The same work, but the queue drains between runs (the DPC is queued again from here,
    // not by itself): far longer than the limit in total, never back to back.
    let (tx, rx) = mpsc::channel::<(usize, u8)>();
    let short = Dpc::new(report, Mutex::new(tx));
    short.target(1);
    let start = Instant::now();
    while start.elapsed() < limit * 3 {
        assert!(short.insert());
        recv(&rx);
        std::thread::sleep(Duration::from_millis(1));
    }
    take(&kernel, &[]);
}

#[test]
fn queued_dpcs_are_reported_as_leaks() {
    let kernel = boot();
    let blocker = start_blocker(1);
    let (tx, _rx) = mpsc::channel::<(usize, u8)>();
    let stuck = Dpc::new(report, Mutex::new(tx));
    stuck.target(1);
    assert!(stuck.insert());
    // Leak report without flushing: read the tables directly.
    let queued = super::super::machine::current("test").dpcs.queued();
    assert_eq!(queued.len(), 1);
    assert!(super::super::dpc::describe(queued[0].0, queued[0].1).contains("still queued"));
    // SAFETY: a live KDPC.
    unsafe { assert_eq!(KeRemoveQueueDpc(stuck.kdpc()), TRUE) };
    blocker.ctx.release.store(true, Ordering::SeqCst);
    assert!(kernel.check_leaks().is_clean());
}

/// Re-queues itself until its budget is spent, then reports.
struct Chain {
    left: AtomicUsize,
    runs: AtomicUsize,
    done: Mutex<Sender<usize>>,
}

unsafe extern "system" fn chain(kdpc: *mut KDPC, context: PVOID, _: PVOID, _: PVOID) {
    // SAFETY: the context is a Dpc<Chain>.
    let dpc = unsafe { Dpc::<Chain>::from_context(context) };
    dpc.ctx.runs.fetch_add(1, Ordering::SeqCst);
    if dpc.ctx.left.fetch_sub(1, Ordering::SeqCst) > 1 {
        // SAFETY: the running DPC's own KDPC; not queued while it runs.
        let queued =
            unsafe { KeInsertQueueDpc(kdpc, core::ptr::null_mut(), core::ptr::null_mut()) };
        assert_eq!(queued, TRUE);
    } else {
        let _ = dpc
            .ctx
            .done
            .lock()
            .unwrap()
            .send(dpc.ctx.runs.load(Ordering::SeqCst));
    }
}

#[test]
fn many_dpcs_requeueing_themselves_all_run_to_the_end() {
    let kernel = boot();
    let (tx, rx) = mpsc::channel::<usize>();
    let chains: Vec<_> = (0..16)
        .map(|_| {
            Dpc::new(
                chain,
                Chain {
                    left: AtomicUsize::new(500),
                    runs: AtomicUsize::new(0),
                    done: Mutex::new(tx.clone()),
                },
            )
        })
        .collect();
    for dpc in &chains {
        assert!(dpc.insert());
    }
    for _ in &chains {
        assert_eq!(recv(&rx), 500);
    }
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() }
    });
    assert!(kernel.check_leaks().is_clean());
}
