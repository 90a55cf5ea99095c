//! Emulated processors and DPCs. Each processor is a host thread at `DISPATCH_LEVEL` that runs
//! the DPCs queued to it in FIFO order. As on Windows, a DPC is dequeued (its queued state
//! cleared) before its routine is called, so a running DPC can be queued again and then runs
//! on another processor at the same time.
//!
//! With two or more processors, the last one has no thread of its own: the WSK provider's
//! reactor thread *is* that processor ([`set_host_hooks`], [`run_hosted`]), as a NIC's DPC
//! runs on the processor its interrupt came in on. A DPC the reactor queues (from a completion
//! routine, say the executor's wake) lands on its own queue and runs on the same thread right
//! after, instead of waking another thread (a futex call and a context switch per
//! completion). A DPC another thread queues to the reactor's processor (targeted, or round
//! robin from a thread that is no processor) wakes the reactor.
//!
//! Two DPC watchdogs, as on Windows: one for a single routine that runs too long, one for a
//! processor that runs DPCs back to back, its queue never draining (it never returns below
//! `DISPATCH_LEVEL`, so its threads never run), for too long. Both record
//! `DPC_WATCHDOG_VIOLATION` (Windows stops the machine; here the test examines the record).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::boxed::Box;
use std::cell::Cell;
use std::collections::VecDeque;
use std::format;
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::fast_hash::FastMap;
use super::machine::{self, Machine, Signal, lock, wait};
use super::verifier::{self, bugcheck};
use super::{irql, spinlock};
use crate::{
    BOOLEAN, DISPATCH_LEVEL, FALSE, HIGH_LEVEL, KDEFERRED_ROUTINE, KDPC, LARGE_INTEGER, NTSTATUS,
    PASSIVE_LEVEL, PROCESSOR_NUMBER, PVOID, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, TRUE,
};

std::thread_local! {
    /// The processor this thread emulates, if it is a processor thread.
    static CPU: Cell<Option<usize>> = const { Cell::new(None) };
    /// A stable number for other threads, reduced modulo the processor count.
    static THREAD_NUMBER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// One processor's DPC queue.
#[derive(Default)]
struct Cpu {
    /// Queued DPCs in order, each with its queueing sequence number.
    queue: VecDeque<(u64, usize)>,
    /// Sequence number of the DPC running now.
    running: Option<u64>,
    /// Next sequence number.
    next_seq: u64,
    /// Since when the processor has run DPCs without its queue draining (`None`: idle, below
    /// `DISPATCH_LEVEL` as far as the cumulative DPC watchdog is concerned).
    busy_since: Option<Instant>,
}

/// Queue state under the DPC lock.
struct State {
    cpus: Vec<Cpu>,
    /// Queued DPCs and the processor whose queue holds them.
    queued: FastMap<usize, usize>,
}

/// A hook of the hosted processor's owner (see [`set_host_hooks`]).
pub(crate) type HostHook =
    Box<dyn Fn() + Send + Sync + std::panic::RefUnwindSafe + std::panic::UnwindSafe>;

/// How the kernel reaches the thread that is the hosted processor (see [`set_host_hooks`]).
struct HostHooks {
    /// Makes the thread call [`run_hosted`] soon (it may be blocked in `epoll_wait`).
    wake: HostHook,
    /// Starts a fresh thread to be the processor after a bugcheck halted the current one.
    replace: HostHook,
}

/// The processors' queues.
pub(crate) struct Dpcs {
    state: Mutex<State>,
    /// One per processor: work arrived.
    work: Vec<Signal>,
    /// A DPC finished or was removed (for `KeFlushQueuedDpcs`).
    progress: Signal,
    round_robin: AtomicUsize,
    /// Settings beyond the processor count, fixed at boot (see [`Dpcs::configure`]).
    settings: Settings,
    /// DPC routines called since boot (for tests: did a routine start after a point?).
    started: AtomicU64,
    /// The processor another kernel thread (the WSK reactor) is, if any: no processor thread
    /// is started for it.
    hosted: Option<usize>,
    /// How to wake and replace that thread, once it has said so.
    host_hooks: OnceLock<HostHooks>,
}

/// DPC settings from the kernel's `Config`.
struct Settings {
    /// Longest a processor may run DPCs back to back, its queue never draining.
    cumulative_watchdog: Duration,
    /// Fault injection, per processor: time between dequeuing a DPC and calling its routine.
    dispatch_delay: Vec<Duration>,
    /// Whether `MmGetSystemRoutineAddress` finds `KeShouldYieldProcessor`.
    should_yield_exported: bool,
}

impl Dpcs {
    pub(crate) fn new(cpus: usize) -> Self {
        Self {
            state: Mutex::new(State {
                cpus: (0..cpus).map(|_| Cpu::default()).collect(),
                queued: FastMap::default(),
            }),
            work: (0..cpus).map(|_| Signal::new()).collect(),
            progress: Signal::new(),
            round_robin: AtomicUsize::new(0),
            settings: Settings {
                cumulative_watchdog: Duration::MAX,
                dispatch_delay: Vec::new(),
                should_yield_exported: true,
            },
            started: AtomicU64::new(0),
            hosted: None,
            host_hooks: OnceLock::new(),
        }
    }

    /// Sets the cumulative DPC watchdog's limit, the dispatch delays per processor (a fault to
    /// inject) and whether `KeShouldYieldProcessor` is exported (before the processors start).
    /// With two or more processors the last one is left for the WSK reactor to be.
    pub(crate) fn configure(
        &mut self,
        cumulative_watchdog: Duration,
        dispatch_delay: Vec<Duration>,
        should_yield_exported: bool,
    ) {
        self.settings = Settings {
            cumulative_watchdog,
            dispatch_delay,
            should_yield_exported,
        };
        let cpus = self.work.len();
        self.hosted = (cpus >= 2).then(|| cpus - 1);
    }

    /// Whether `MmGetSystemRoutineAddress` finds `KeShouldYieldProcessor`.
    pub(crate) fn should_yield_exported(&self) -> bool {
        self.settings.should_yield_exported
    }

    /// DPC routines called since boot.
    pub(crate) fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Wakes every processor (at shutdown).
    pub(crate) fn wake_all(&self) {
        let _state = lock(&self.state);
        for work in &self.work {
            work.notify_all();
        }
    }

    /// The queued DPCs whose KDPC lies in `[start, end)`.
    pub(crate) fn queued_in(&self, start: usize, end: usize) -> Vec<usize> {
        lock(&self.state)
            .queued
            .keys()
            .copied()
            .filter(|&dpc| dpc < end && dpc + size_of::<KDPC>() > start)
            .collect()
    }

    /// The DPCs still queued, for the leak report.
    pub(crate) fn queued(&self) -> Vec<(usize, usize)> {
        lock(&self.state)
            .queued
            .iter()
            .map(|(&dpc, &cpu)| (dpc, cpu))
            .collect()
    }
}

/// The processor the calling thread emulates, if it is a processor thread.
pub(crate) fn current_cpu() -> Option<usize> {
    CPU.with(Cell::get)
}

/// The calling thread's processor number: its index on processor threads, otherwise a stable
/// per-thread number modulo `cpus`.
pub(crate) fn processor_number(cpus: usize) -> usize {
    current_cpu().unwrap_or_else(|| {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = THREAD_NUMBER.with(|n| {
            n.get().unwrap_or_else(|| {
                let v = NEXT.fetch_add(1, Ordering::Relaxed);
                n.set(Some(v));
                v
            })
        });
        n % cpus.max(1)
    })
}

/// Queues `dpc`; false if it is already queued.
///
/// # Safety
/// `dpc` must be a live KDPC initialised with `KeInitializeDpc`.
pub(crate) unsafe fn insert(machine: &Machine, dpc: *mut KDPC, arg1: PVOID, arg2: PVOID) -> bool {
    let dpcs = &machine.dpcs;
    let mut state = lock(&dpcs.state);
    // SAFETY: the caller guarantees a live KDPC; its kernel-owned fields change under the lock.
    let object = unsafe { &mut *dpc };
    if state.queued.contains_key(&(dpc as usize)) || !object.DpcData.is_null() {
        return false;
    }
    let target = usize::from(object.Number);
    let cpu = if target != 0 {
        target - 1
    } else if let Some(cpu) = current_cpu() {
        cpu
    } else {
        dpcs.round_robin.fetch_add(1, Ordering::Relaxed) % machine.cpus
    };
    object.SystemArgument1 = arg1;
    object.SystemArgument2 = arg2;
    object.DpcData = core::ptr::without_provenance_mut(cpu + 1);
    let queue = &mut state.cpus[cpu];
    let seq = queue.next_seq;
    queue.next_seq += 1;
    queue.queue.push_back((seq, dpc as usize));
    state.queued.insert(dpc as usize, cpu);
    if dpcs.hosted == Some(cpu) {
        drop(state);
        // Its own thread runs it after what it is doing now; another thread wakes it.
        if current_cpu() != Some(cpu)
            && let Some(hooks) = dpcs.host_hooks.get()
        {
            (hooks.wake)();
        }
    } else {
        dpcs.work[cpu].notify_one();
    }
    true
}

/// Starts the processor threads (not for the hosted processor: see [`set_host_hooks`]).
pub(crate) fn start_cpus(machine: &Arc<Machine>) -> Vec<JoinHandle<()>> {
    (0..machine.cpus)
        .filter(|&cpu| machine.dpcs.hosted != Some(cpu))
        .map(|cpu| {
            let machine = Arc::clone(machine);
            std::thread::Builder::new()
                .name(format!("cpu{cpu}"))
                .spawn(move || {
                    machine::adopt(Arc::clone(&machine));
                    run_cpu(&machine, cpu);
                })
                .expect("spawn an emulated processor")
        })
        .collect()
}

/// One processor: runs its queue until the machine stops.
fn run_cpu(machine: &Machine, cpu: usize) {
    CPU.with(|c| c.set(Some(cpu)));
    irql::set_unchecked(DISPATCH_LEVEL);
    let dpcs = &machine.dpcs;
    let mut state = lock(&dpcs.state);
    loop {
        if machine.stopping.load(Ordering::Acquire) {
            return;
        }
        let ran;
        (state, ran) = run_next(machine, cpu, state);
        if !ran {
            // The queue drained: the processor leaves DISPATCH_LEVEL (threads may run).
            state.cpus[cpu].busy_since = None;
            state = wait(&dpcs.work[cpu], state);
        }
    }
}

/// Says how to reach the thread that is the hosted processor (the last, with two or more):
/// `wake` when another thread queues a DPC to it, `replace` to start a fresh thread after a
/// bugcheck halted it. That thread calls [`become_hosted_processor`] first, then
/// [`run_hosted`] whenever woken and after completing IRPs. False (nothing changes) if the
/// running machine has no hosted processor or its hooks are set already.
pub(crate) fn set_host_hooks(wake: HostHook, replace: HostHook) -> bool {
    machine::try_current().is_some_and(|machine| {
        machine.dpcs.hosted.is_some()
            && machine
                .dpcs
                .host_hooks
                .set(HostHooks { wake, replace })
                .is_ok()
    })
}

/// Makes the calling thread the hosted processor (see [`set_host_hooks`]) and the running
/// machine its own (as for the processor threads: a straggler never sees another machine,
/// and finding it costs no lock); false if the running machine has no hosted processor.
pub(crate) fn become_hosted_processor() -> bool {
    let Some(machine) = machine::try_current() else {
        return false;
    };
    let Some(cpu) = machine.dpcs.hosted else {
        return false;
    };
    machine::adopt(machine.to_arc());
    CPU.with(|c| c.set(Some(cpu)));
    true
}

/// On the hosted processor's thread: runs every DPC queued to it, at `DISPATCH_LEVEL`, until
/// its queue drains (DPCs they queue included), then returns at the IRQL it was called at.
pub(crate) fn run_hosted() {
    let Some(machine) = machine::try_current() else {
        return;
    };
    let Some(cpu) = current_cpu().filter(|&cpu| machine.dpcs.hosted == Some(cpu)) else {
        return;
    };
    let dpcs = &machine.dpcs;
    let mut state = lock(&dpcs.state);
    if state.cpus[cpu].queue.is_empty() {
        return;
    }
    let old = irql::current();
    irql::set_unchecked(DISPATCH_LEVEL);
    loop {
        let ran;
        (state, ran) = run_next(&machine, cpu, state);
        if !ran {
            state.cpus[cpu].busy_since = None;
            break;
        }
    }
    drop(state);
    irql::set_unchecked(old);
}

/// Runs the DPC at the head of processor `cpu`'s queue, if there is one: dequeues it under
/// the lock, calls its routine without the lock, and takes the lock again. Returns the lock
/// and whether a DPC ran.
fn run_next<'a>(
    machine: &'a Machine,
    cpu: usize,
    mut state: MutexGuard<'a, State>,
) -> (MutexGuard<'a, State>, bool) {
    let dpcs = &machine.dpcs;
    let Some((seq, dpc)) = state.cpus[cpu].queue.pop_front() else {
        return (state, false);
    };
    state.queued.remove(&dpc);
    state.cpus[cpu].running = Some(seq);
    state.cpus[cpu].busy_since.get_or_insert_with(Instant::now);
    let dpc = dpc as *mut KDPC;
    // SAFETY: the DPC was queued, hence live; its kernel-owned fields change under the
    // lock. Dequeued before the routine runs, as on Windows.
    let object = unsafe { &mut *dpc };
    object.DpcData = core::ptr::null_mut();
    let (routine, context, arg1, arg2) = (
        object.DeferredRoutine,
        object.DeferredContext,
        object.SystemArgument1,
        object.SystemArgument2,
    );
    drop(state);
    if let Some(&delay) = dpcs.settings.dispatch_delay.get(cpu) {
        // Dequeued, not yet called: an interrupt here stretches the gap on Windows too.
        std::thread::sleep(delay);
    }
    dpcs.started.fetch_add(1, Ordering::SeqCst);
    run_routine(machine, dpc, routine, context, arg1, arg2);
    let mut state = lock(&dpcs.state);
    state.cpus[cpu].running = None;
    check_cumulative(&dpcs.settings, &mut state.cpus[cpu], cpu, routine);
    dpcs.progress.notify_all();
    (state, true)
}

/// The cumulative DPC watchdog: records `DPC_WATCHDOG_VIOLATION` when processor `cpu` has run
/// DPCs back to back, its queue never draining, for longer than the limit; then starts counting
/// again, so a processor that never leaves is reported once per limit. Windows' limit is about
/// 120 s and it stops the machine; the host's is `Config::dpc_cumulative_watchdog` (seconds by
/// default, so tests catch a processor that never leaves) and it records, like the single-DPC
/// watchdog.
// Rule: "KeQueryDpcWatchdogInformation function (wdm.h)", https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kequerydpcwatchdoginformation
// ("a series of queued DPC routines runs back-to-back for too long").
fn check_cumulative(
    settings: &Settings,
    cpu_state: &mut Cpu,
    cpu: usize,
    last: Option<KDEFERRED_ROUTINE>,
) {
    let Some(since) = cpu_state.busy_since else {
        return;
    };
    let busy = since.elapsed();
    if busy > settings.cumulative_watchdog {
        cpu_state.busy_since = Some(Instant::now());
        // Bug check 0x133 DPC_WATCHDOG_VIOLATION, parameter 1 = 1 (cumulative DPC time):
        // https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x133-dpc-watchdog-violation
        verifier::record(
            "DPC_WATCHDOG_VIOLATION",
            format!(
                "processor {cpu} ran DPCs back to back for {busy:?} without its DPC queue \
                 draining (cumulative limit {:?}); last routine {last:?}",
                settings.cumulative_watchdog
            ),
        );
    }
}

/// How long the calling processor has run DPCs back to back (zero off processor threads).
pub(crate) fn back_to_back(machine: &Machine) -> Duration {
    current_cpu().map_or(Duration::ZERO, |cpu| {
        lock(&machine.dpcs.state).cpus[cpu]
            .busy_since
            .map_or(Duration::ZERO, |since| since.elapsed())
    })
}

/// True if `thread` is a processor thread a bugcheck halted ([`halt`]): parked for good, it
/// must never be joined.
pub(crate) fn is_halted(thread: std::thread::ThreadId) -> bool {
    machine::try_current().is_some_and(|machine| lock(&machine.halted).contains(&thread))
}

/// Halts the calling processor thread after a bugcheck inside a driver callback (which cannot
/// unwind): releases its spin locks, marks its DPC finished, starts a fresh thread as the same
/// processor, and parks this one for good.
pub(crate) fn halt(cpu: usize, message: &str) -> ! {
    std::eprintln!(
        "*** host kernel: processor {cpu} halted by {message}; a fresh thread replaces it"
    );
    spinlock::force_release_held();
    if let Some(machine) = machine::try_current() {
        let mut state = lock(&machine.dpcs.state);
        state.cpus[cpu].running = None;
        machine.dpcs.progress.notify_all();
        drop(state);
        lock(&machine.halted).push(std::thread::current().id());
        if machine.dpcs.hosted == Some(cpu) {
            // The hosted processor's thread (the WSK reactor) is replaced by its owner.
            if !machine.stopping.load(Ordering::Acquire)
                && let Some(hooks) = machine.dpcs.host_hooks.get()
            {
                (hooks.replace)();
            }
        } else if !machine.stopping.load(Ordering::Acquire) {
            let replacement = machine.to_arc();
            let spawned = std::thread::Builder::new()
                .name(format!("cpu{cpu}"))
                .spawn(move || {
                    machine::adopt(Arc::clone(&replacement));
                    run_cpu(&replacement, cpu);
                });
            if let Ok(handle) = spawned {
                lock(&machine.replacements).push(handle);
            }
        }
    }
    loop {
        std::thread::park();
    }
}

/// Runs one DPC routine at `DISPATCH_LEVEL` under the verifier's eye.
fn run_routine(
    machine: &Machine,
    dpc: *mut KDPC,
    routine: Option<KDEFERRED_ROUTINE>,
    context: PVOID,
    arg1: PVOID,
    arg2: PVOID,
) {
    let Some(routine) = routine else {
        // Bug check 0xC7 TIMER_OR_DPC_INVALID (a kernel timer or DPC in an invalid state):
        // https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc7--timer-or-dpc-invalid
        verifier::record(
            "TIMER_OR_DPC_INVALID",
            format!("DPC {dpc:p} queued without a routine"),
        );
        return;
    };
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: the routine and its arguments are what the driver gave KeInitializeDpc and
        // KeInsertQueueDpc; DPC routines run at DISPATCH_LEVEL, as here.
        verifier::in_callback(|| unsafe { routine(dpc, context, arg1, arg2) });
        let irql = irql::current();
        if irql != DISPATCH_LEVEL {
            // Bug check 0xC8 IRQL_UNEXPECTED_VALUE (a DPC routine returned at another IRQL):
            // https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc8--irql-unexpected-value
            bugcheck(
                "IRQL_UNEXPECTED_VALUE",
                format!("DPC routine {routine:p} (DPC {dpc:p}) returned at IRQL {irql}"),
            );
        }
        let held = irql::held_locks();
        if !held.is_empty() {
            // A host name: Windows reports a DPC returning with a lock held as 0xC8
            // (parameter 2); each KeAcquireSpinLockAtDpcLevel needs its release:
            // https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keacquirespinlockatdpclevel
            bugcheck(
                "SPIN_LOCK_NOT_RELEASED",
                format!("DPC routine {routine:p} (DPC {dpc:p}) returned holding {held:#x?}"),
            );
        }
    });
    let elapsed = started.elapsed();
    if let Err(payload) = outcome {
        verifier::record_caught(&*payload, &format!("DPC routine {routine:p}"));
        spinlock::force_release_held();
        irql::set_unchecked(DISPATCH_LEVEL);
    }
    if elapsed > machine.dpc_watchdog {
        // Bug check 0x133 DPC_WATCHDOG_VIOLATION, parameter 1 = 0 (a single long DPC):
        // https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x133-dpc-watchdog-violation
        verifier::record(
            "DPC_WATCHDOG_VIOLATION",
            format!(
                "DPC routine {routine:p} (DPC {dpc:p}) ran for {elapsed:?}, over the {:?} budget",
                machine.dpc_watchdog
            ),
        );
    }
}

/// Waits until every DPC queued at the call has run to completion; with `running`, also every
/// DPC already dequeued and running at the call (what `KeFlushQueuedDpcs` promises, and the
/// kernel's own drain before a leak report).
pub(crate) fn flush(machine: &Machine, running: bool) {
    let dpcs = &machine.dpcs;
    let mut state = lock(&dpcs.state);
    let marks: Vec<u64> = state.cpus.iter().map(|cpu| cpu.next_seq).collect();
    // The oldest DPC still queued on each processor: DPCs run in queue order, so once the
    // processor runs or passed a DPC at or after it, everything queued before the call ran.
    let firsts: Vec<u64> = state
        .cpus
        .iter()
        .zip(&marks)
        .map(|(cpu, &mark)| {
            let oldest = cpu.queue.front().map_or(mark, |&(seq, _)| seq);
            if running {
                cpu.running.map_or(oldest, |seq| seq.min(oldest))
            } else {
                oldest
            }
        })
        .collect();
    loop {
        let done =
            state
                .cpus
                .iter()
                .zip(marks.iter().zip(&firsts))
                .all(|(cpu, (&mark, &first))| {
                    first >= mark
                        || (cpu.queue.front().is_none_or(|&(seq, _)| seq >= mark)
                            && cpu.running.is_none_or(|seq| seq < first || seq >= mark))
                });
        if done || machine.stopping.load(Ordering::Acquire) {
            return;
        }
        state = wait(&dpcs.progress, state);
    }
}

/// Host implementation of `KeInitializeDpc`. Any IRQL.
///
/// # Safety
/// `Dpc` must point to writable KDPC storage that is not queued.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeInitializeDpc(
    Dpc: *mut KDPC,
    DeferredRoutine: Option<KDEFERRED_ROUTINE>,
    DeferredContext: PVOID,
) {
    let queued = machine::try_current()
        .is_some_and(|m| lock(&m.dpcs.state).queued.contains_key(&(Dpc as usize)));
    if queued {
        // Bug check 0xC7: a queued DPC must not be reinitialised. KeInitializeDpc, any IRQL:
        // https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keinitializedpc
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format!("KeInitializeDpc on DPC {Dpc:p}, which is queued"),
        );
    }
    // SAFETY: the caller guarantees writable KDPC storage.
    unsafe {
        Dpc.write(KDPC {
            Type: 0x13, // DpcObject
            Importance: 1,
            Number: 0,
            DpcListEntry: crate::LIST_ENTRY {
                Flink: core::ptr::null_mut(),
                Blink: core::ptr::null_mut(),
            },
            DeferredRoutine,
            DeferredContext,
            SystemArgument1: core::ptr::null_mut(),
            SystemArgument2: core::ptr::null_mut(),
            DpcData: core::ptr::null_mut(),
        });
    }
}

/// Host implementation of `KeInsertQueueDpc`. IRQL <= `HIGH_LEVEL`.
///
/// # Safety
/// `Dpc` must be a live KDPC initialised with `KeInitializeDpc`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeInsertQueueDpc(
    Dpc: *mut KDPC,
    SystemArgument1: PVOID,
    SystemArgument2: PVOID,
) -> BOOLEAN {
    // KeInsertQueueDpc, any IRQL: https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keinsertqueuedpc
    irql::require_at_most(HIGH_LEVEL, "KeInsertQueueDpc");
    let machine = machine::current("KeInsertQueueDpc");
    // SAFETY: forwarded contract.
    if unsafe { insert(&machine, Dpc, SystemArgument1, SystemArgument2) } {
        TRUE
    } else {
        FALSE
    }
}

/// Host implementation of `KeRemoveQueueDpc`. Any IRQL.
///
/// # Safety
/// `Dpc` must be a live KDPC initialised with `KeInitializeDpc`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeRemoveQueueDpc(Dpc: *mut KDPC) -> BOOLEAN {
    let machine = machine::current("KeRemoveQueueDpc");
    let dpcs = &machine.dpcs;
    let mut state = lock(&dpcs.state);
    let Some(cpu) = state.queued.remove(&(Dpc as usize)) else {
        return FALSE;
    };
    state.cpus[cpu].queue.retain(|&(_, d)| d != Dpc as usize);
    // SAFETY: the DPC was queued, hence live; its kernel-owned fields change under the lock.
    unsafe { (*Dpc).DpcData = core::ptr::null_mut() };
    dpcs.progress.notify_all();
    TRUE
}

/// Host implementation of `KeFlushQueuedDpcs`: returns once every DPC queued before the call has
/// run its routine to completion, including one already dequeued whose routine is running at
/// the call. `PASSIVE_LEVEL`.
///
/// The page's first sentence speaks of "currently queued" DPCs, its remark of the set precisely:
/// "Only DPCs queued prior to the call ... are guaranteed to have been executed to completion
/// upon return". A DPC whose routine is running was queued before the call and has not
/// completed, so it is waited for; DPCs queued during the call are not. (Reading it as "still in
/// a queue" only would leave no documented way for `DriverUnload` to outwait a timer DPC that has
/// just signalled it, the pattern the page exists for.)
///
/// # Safety
/// None beyond the IRQL rule (checked).
// Rule: "KeFlushQueuedDpcs function (wdm.h)", https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keflushqueueddpcs
// ("Only DPCs queued prior to the call ... are guaranteed to have been executed to completion").
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeFlushQueuedDpcs() {
    irql::require_at_most(PASSIVE_LEVEL, "KeFlushQueuedDpcs");
    flush(&machine::current("KeFlushQueuedDpcs"), true);
}

/// Host implementation of `KeShouldYieldProcessor`, found through `MmGetSystemRoutineAddress`
/// only (Windows 10 2004 and later export it; older kernels don't, so drivers resolve it at run
/// time). TRUE once the calling processor has run DPCs back to back for half the cumulative DPC
/// watchdog's limit; FALSE off processor threads. `DISPATCH_LEVEL` or above. The page says
/// what TRUE means (leave the work loop, hand the work to a thread), not when it turns TRUE:
/// half the limit is the host's choice.
///
/// # Safety
/// None: `unsafe` only to match the kernel routine's signature.
// Rule: "KeShouldYieldProcessor function (wdm.h)", https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keshouldyieldprocessor
pub unsafe extern "system" fn KeShouldYieldProcessor() -> u32 {
    let Some(machine) = machine::try_current() else {
        return 0;
    };
    u32::from(back_to_back(&machine) >= machine.dpcs.settings.cumulative_watchdog / 2)
}

/// Host implementation of `KeSetTargetProcessorDpcEx`. Any IRQL (DPC not queued).
///
/// # Safety
/// `Dpc` must be a live KDPC that is not queued; `ProcNumber` a valid `PROCESSOR_NUMBER`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeSetTargetProcessorDpcEx(
    Dpc: *mut KDPC,
    ProcNumber: *mut PROCESSOR_NUMBER,
) -> NTSTATUS {
    let machine = machine::current("KeSetTargetProcessorDpcEx");
    // SAFETY: the caller guarantees a valid PROCESSOR_NUMBER.
    let number = unsafe { *ProcNumber };
    let cpu = usize::from(number.Number);
    if number.Group != 0 || cpu >= machine.cpus {
        return STATUS_INVALID_PARAMETER;
    }
    if lock(&machine.dpcs.state)
        .queued
        .contains_key(&(Dpc as usize))
    {
        // KeSetTargetProcessorDpcEx: not for a queued DPC (then 0xC7):
        // https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kesettargetprocessordpcex
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format!("KeSetTargetProcessorDpcEx on DPC {Dpc:p}, which is queued"),
        );
    }
    // SAFETY: the caller guarantees a live KDPC; `cpu + 1` fits (cpu < cpus <= 256).
    unsafe { (*Dpc).Number = u16::try_from(cpu + 1).unwrap_or(0) };
    STATUS_SUCCESS
}

/// Host implementation of `KeGetCurrentProcessorNumberEx`. Any IRQL.
///
/// # Safety
/// `ProcNumber` must be null or a writable `PROCESSOR_NUMBER`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeGetCurrentProcessorNumberEx(
    ProcNumber: *mut PROCESSOR_NUMBER,
) -> u32 {
    let machine = machine::current("KeGetCurrentProcessorNumberEx");
    let cpu = processor_number(machine.cpus);
    if !ProcNumber.is_null() {
        // SAFETY: the caller guarantees a writable PROCESSOR_NUMBER.
        unsafe {
            ProcNumber.write(PROCESSOR_NUMBER {
                Group: 0,
                Number: u8::try_from(cpu).unwrap_or(u8::MAX),
                Reserved: 0,
            });
        }
    }
    u32::try_from(cpu).unwrap_or(u32::MAX)
}

/// Host implementation of `KeQueryActiveProcessorCountEx`. Any IRQL.
///
/// # Safety
/// None: `unsafe` only to match the kernel import's signature.
#[must_use]
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeQueryActiveProcessorCountEx(GroupNumber: u16) -> u32 {
    let machine = machine::current("KeQueryActiveProcessorCountEx");
    if GroupNumber == 0 || GroupNumber == crate::ALL_PROCESSOR_GROUPS {
        u32::try_from(machine.cpus).unwrap_or(u32::MAX)
    } else {
        0
    }
}

/// Host implementation of `KeQueryPerformanceCounter`: the host's precise clock, 10 MHz (not
/// the tick-quantised interrupt time). Not a `sys` import: drivers find it with
/// `MmGetSystemRoutineAddress`, as on Windows. Any IRQL; works without a booted kernel.
///
/// # Safety
/// `PerformanceFrequency` must be null or writable.
pub unsafe extern "system-unwind" fn KeQueryPerformanceCounter(
    PerformanceFrequency: *mut LARGE_INTEGER,
) -> LARGE_INTEGER {
    if !PerformanceFrequency.is_null() {
        // SAFETY: the caller guarantees a writable LARGE_INTEGER.
        unsafe { PerformanceFrequency.write(10_000_000) };
    }
    i64::try_from(crate::clock::precise_now()).unwrap_or(i64::MAX)
}

/// A short description of a queued DPC for the leak report.
pub(crate) fn describe(dpc: usize, cpu: usize) -> String {
    let dpc = dpc as *const KDPC;
    // SAFETY: a queued DPC is live (the report runs before anything is freed by the kernel).
    let routine = unsafe { (*dpc).DeferredRoutine };
    format!("DPC {dpc:p} (routine {routine:?}) still queued on processor {cpu}")
}
