//! KTIMERs on the interrupt-time clock, run by a timer thread: at expiry the timer is
//! signalled (waking waiters), its DPC queued, and a periodic timer re-armed.
//!
//! Lock order: timers, then dispatcher or DPC queue. All writes to a KTIMER happen under the
//! timers lock, so once `KeCancelTimer` returns the kernel no longer touches the timer.

use core::sync::atomic::Ordering;
use std::collections::BTreeSet;
use std::format;
use std::string::String;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use std::vec::Vec;

use super::event::{
    TIMER_NOTIFICATION_OBJECT, TIMER_SYNCHRONIZATION_OBJECT, header_of, init_header,
};
use super::fast_hash::FastMap;
use super::machine::{self, Machine, Signal, lock, wait, wait_timeout};
use super::{dpc, irql, verifier};
use crate::clock;
use crate::{
    BOOLEAN, DISPATCH_LEVEL, FALSE, KDPC, KTIMER, LARGE_INTEGER, LIST_ENTRY, TIMER_TYPE, TRUE,
};

/// One armed timer.
struct Armed {
    due: u64,
    period_ms: u32,
    dpc: usize,
    seq: u64,
}

#[derive(Default)]
struct State {
    armed: FastMap<usize, Armed>,
    /// (due, seq, timer), earliest first.
    queue: BTreeSet<(u64, u64, usize)>,
    next_seq: u64,
}

/// The timer queue.
pub(crate) struct Timers {
    state: Mutex<State>,
    changed: Signal,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Signal::new(),
        }
    }

    /// Wakes the timer thread (at shutdown).
    pub(crate) fn wake(&self) {
        let _state = lock(&self.state);
        self.changed.notify_all();
    }

    /// The armed timers whose KTIMER lies in `[start, end)`.
    pub(crate) fn armed_in(&self, start: usize, end: usize) -> Vec<usize> {
        lock(&self.state)
            .armed
            .keys()
            .copied()
            .filter(|&timer| timer < end && timer + size_of::<KTIMER>() > start)
            .collect()
    }

    /// Leak report lines: every timer still armed.
    pub(crate) fn leaks(&self) -> Vec<String> {
        let now = clock::now();
        lock(&self.state)
            .armed
            .iter()
            .map(|(&timer, armed)| {
                let due_ms = armed.due.saturating_sub(now) / 10_000;
                format!(
                    "timer {timer:#x} still armed (due in {due_ms} ms, period {} ms, DPC {:#x})",
                    armed.period_ms, armed.dpc
                )
            })
            .collect()
    }
}

fn arm(state: &mut State, timer: usize, due: u64, period_ms: u32, dpc: usize) {
    let seq = state.next_seq;
    state.next_seq += 1;
    state.queue.insert((due, seq, timer));
    state.armed.insert(
        timer,
        Armed {
            due,
            period_ms,
            dpc,
            seq,
        },
    );
}

fn disarm(state: &mut State, timer: usize) -> bool {
    match state.armed.remove(&timer) {
        Some(armed) => {
            state.queue.remove(&(armed.due, armed.seq, timer));
            true
        }
        None => false,
    }
}

/// Starts the timer thread.
pub(crate) fn start(machine: &Arc<Machine>) -> JoinHandle<()> {
    let machine = Arc::clone(machine);
    std::thread::Builder::new()
        .name("timer".into())
        .spawn(move || {
            machine::adopt(Arc::clone(&machine));
            run(&machine);
        })
        .expect("spawn the timer thread")
}

fn run(machine: &Machine) {
    let timers = &machine.timers;
    let mut state = lock(&timers.state);
    loop {
        if machine.stopping.load(Ordering::Acquire) {
            return;
        }
        let Some(&(due, seq, timer)) = state.queue.first() else {
            state = wait(&timers.changed, state);
            continue;
        };
        let now = clock::now();
        if due > now {
            // Timers expire on a clock tick, like Windows': wait for the first one at or
            // after `due` (the interrupt time read then is at least `due`).
            let until = clock::expiry_instant(due).saturating_duration_since(Instant::now());
            state = wait_timeout(&timers.changed, state, until);
            continue;
        }
        state.queue.remove(&(due, seq, timer));
        let Some(armed) = state.armed.remove(&timer) else {
            continue;
        };
        let ktimer = timer as *mut KTIMER;
        if armed.period_ms > 0 {
            let period = u64::from(armed.period_ms) * 10_000;
            let next = (due + period).max(now);
            arm(&mut state, timer, next, armed.period_ms, armed.dpc);
            // SAFETY: an armed timer is live; kernel fields change under the timers lock.
            unsafe { (*ktimer).DueTime = next };
        } else {
            // SAFETY: as above.
            unsafe { (*ktimer).Header.Inserted = 0 };
        }
        // SAFETY: as above; signalling takes the dispatcher lock (timers, then dispatcher).
        unsafe { super::event::signal(machine, header_of(ktimer), 1) };
        if armed.dpc != 0 {
            let arg = core::ptr::without_provenance_mut(usize::try_from(now).unwrap_or(usize::MAX));
            // SAFETY: the driver gave this DPC to KeSetTimerEx; it must stay live while the
            // timer is armed.
            let queued = std::panic::catch_unwind(|| unsafe {
                dpc::insert(machine, armed.dpc as *mut KDPC, arg, core::ptr::null_mut())
            });
            if let Err(payload) = queued {
                verifier::record_caught(&*payload, "the timer thread");
            }
        }
    }
}

/// Host implementation of `KeInitializeTimerEx`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Timer` must point to writable KTIMER storage that is not armed.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeInitializeTimerEx(Timer: *mut KTIMER, Type: TIMER_TYPE) {
    // KeInitializeTimerEx, IRQL <= DISPATCH_LEVEL; reinitialising an armed timer is 0xC7:
    // https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-keinitializetimerex,
    // https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc7--timer-or-dpc-invalid
    irql::require_at_most(DISPATCH_LEVEL, "KeInitializeTimerEx");
    let armed = machine::try_current()
        .is_some_and(|m| lock(&m.timers.state).armed.contains_key(&(Timer as usize)));
    if armed {
        verifier::bugcheck(
            "TIMER_OR_DPC_INVALID",
            format!("KeInitializeTimerEx on timer {Timer:p}, which is armed"),
        );
    }
    let kind = if Type == crate::SynchronizationTimer {
        TIMER_SYNCHRONIZATION_OBJECT
    } else {
        TIMER_NOTIFICATION_OBJECT
    };
    // SAFETY: the caller guarantees writable storage.
    unsafe { init_header(header_of(Timer), kind, size_of::<KTIMER>(), 0) };
    // SAFETY: as above; the header is initialised, the rest written below.
    let timer = unsafe { &mut *Timer };
    timer.DueTime = 0;
    timer.TimerListEntry = LIST_ENTRY {
        Flink: core::ptr::null_mut(),
        Blink: core::ptr::null_mut(),
    };
    timer.Dpc = core::ptr::null_mut();
    timer.Processor = 0;
    timer.Period = 0;
}

/// Host implementation of `KeSetTimerEx`: arms (or re-arms) the timer; TRUE if it was armed.
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Timer` must be a live, initialised KTIMER, and `Dpc` null or a live, initialised KDPC;
/// both must stay live while the timer is armed.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeSetTimerEx(
    Timer: *mut KTIMER,
    DueTime: LARGE_INTEGER,
    Period: i32,
    Dpc: *mut KDPC,
) -> BOOLEAN {
    // KeSetTimerEx, IRQL <= DISPATCH_LEVEL; Period >= 0 (milliseconds):
    // https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kesettimerex
    irql::require_at_most(DISPATCH_LEVEL, "KeSetTimerEx");
    let machine = machine::current("KeSetTimerEx");
    let Ok(period_ms) = u32::try_from(Period) else {
        verifier::bugcheck(
            "INVALID_PARAMETER",
            format!("KeSetTimerEx on timer {Timer:p} with negative period {Period}"),
        );
    };
    let due = clock::absolute(DueTime);
    let timers = &machine.timers;
    let mut state = lock(&timers.state);
    let was = disarm(&mut state, Timer as usize);
    arm(&mut state, Timer as usize, due, period_ms, Dpc as usize);
    // SAFETY: the caller guarantees a live timer; kernel fields change under the timers lock.
    let timer = unsafe { &mut *Timer };
    timer.DueTime = due;
    timer.Period = Period;
    timer.Dpc = Dpc;
    timer.Header.Inserted = 1;
    timer.Header.Absolute = u8::from(DueTime >= 0);
    // SAFETY: as above; signalling takes the dispatcher lock (timers, then dispatcher).
    unsafe { super::event::signal(&machine, header_of(Timer), 0) };
    timers.changed.notify_all();
    if was { TRUE } else { FALSE }
}

/// Host implementation of `KeCancelTimer`: TRUE if the timer was armed. IRQL <=
/// `DISPATCH_LEVEL`.
///
/// # Safety
/// `Timer` must be a live, initialised KTIMER.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeCancelTimer(Timer: *mut KTIMER) -> BOOLEAN {
    // KeCancelTimer, IRQL <= DISPATCH_LEVEL: https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kecanceltimer
    irql::require_at_most(DISPATCH_LEVEL, "KeCancelTimer");
    let machine = machine::current("KeCancelTimer");
    let mut state = lock(&machine.timers.state);
    if disarm(&mut state, Timer as usize) {
        // SAFETY: the caller guarantees a live timer; written under the timers lock.
        unsafe { (*Timer).Header.Inserted = 0 };
        TRUE
    } else {
        FALSE
    }
}
