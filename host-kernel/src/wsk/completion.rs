//! The provider's completion pipeline: what a call produced ([`Out`], [`Done`]), and how its
//! results complete, inline on the caller's thread or deferred to the reactor with the fault
//! plan's seeded delays and reordering ([`Dice`], [`Deferred`]).

use std::collections::VecDeque;
use std::string::String;
use std::time::{Duration, Instant};
use std::vec;
use std::vec::Vec;

use super::glue::IrpPtr;
use super::glue::{self, bugcheck};
use super::socket::SockHandlePtr;
use super::{Completion, Provider, WskOp, lock};
use crate::ntos::fast_hash::FastMap;
use crate::{NTSTATUS, STATUS_PENDING};

/// An IRP whose result is known, waiting to be completed.
pub(super) struct Done {
    /// The IRP.
    pub(super) irp: IrpPtr,
    /// Its final status.
    pub(super) status: NTSTATUS,
    /// Its `IoStatus.Information`.
    pub(super) info: usize,
    /// The socket it belongs to (0: none): completions of one socket keep their order.
    pub(super) sock: u64,
    /// A socket handle to free once the IRP has completed (the close IRP's socket).
    pub(super) free: Option<SockHandlePtr>,
}

impl Done {
    pub(super) fn new(irp: IrpPtr, status: NTSTATUS, info: usize, sock: u64) -> Self {
        Self {
            irp,
            status,
            info,
            sock,
            free: None,
        }
    }

    /// Completes the IRP on the calling thread, then frees what it carried.
    pub(super) fn complete(self, p: &Provider) {
        p.complete_irp(self.irp, self.status, self.info);
        if let Some(handle) = self.free {
            // SAFETY: the handle was allocated by WskSocket/accept and is freed once,
            // after the close IRP completed (until then the client may still read it).
            unsafe { handle.free() };
        }
    }
}

std::thread_local! {
    /// Emptied completion lists whose allocations the next calls on this thread reuse: every
    /// provider call makes one, and a malloc and free per call showed in the echo profile.
    static SPARE_DONES: core::cell::RefCell<Vec<Vec<Done>>> =
        const { core::cell::RefCell::new(Vec::new()) };
}

/// Spare lists kept per thread (completion routines re-enter the provider, each level
/// holding one list).
const SPARE_DONES_KEPT: usize = 8;

/// An empty completion list, with a spare list's allocation when this thread has one.
pub(super) fn new_dones() -> Vec<Done> {
    SPARE_DONES
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default()
}

/// Keeps the allocation of `dones` (emptied) for [`new_dones`] on this thread.
pub(super) fn recycle(mut dones: Vec<Done>) {
    dones.clear();
    if dones.capacity() == 0 {
        return;
    }
    SPARE_DONES.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_DONES_KEPT {
            spare.push(dones);
        }
    });
}

/// What one provider call produced: the fate of its own IRP and of others it finished.
pub(super) struct Out {
    pub(super) irp: IrpPtr,
    /// The own IRP was marked pending (it went into a queue): the call returns `STATUS_PENDING`.
    pub(super) marked: bool,
    pub(super) dones: Vec<Done>,
}

impl Out {
    pub(super) fn new(irp: IrpPtr) -> Self {
        Self {
            irp,
            marked: false,
            dones: new_dones(),
        }
    }

    /// The own IRP is finished with `status`.
    pub(super) fn done(&mut self, status: NTSTATUS, info: usize, sock: u64) {
        self.dones.push(Done::new(self.irp, status, info, sock));
    }
}

/// Seeded choices: inline or deferred, delays, reordering, error rules.
pub(super) struct Dice {
    pub(super) rng: u64,
    pub(super) calls: FastMap<WskOp, u32>,
}

impl Dice {
    /// splitmix64.
    pub(super) fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Deferred completions, due at an instant, per-socket order kept.
#[derive(Default)]
pub(super) struct Deferred {
    pub(super) items: VecDeque<(Instant, Done)>,
    pub(super) last_due: FastMap<u64, Instant>,
}

impl Provider {
    /// Inline completion for this call's known results?
    pub(super) fn decide_inline(&self) -> bool {
        match self.faults.completion {
            Completion::Inline => true,
            Completion::Deferred => false,
            Completion::Mixed => lock(&self.dice).next() & 1 == 1,
        }
    }

    /// The injected status for this call of `op`, if a rule hits it.
    pub(super) fn inject(&self, op: WskOp) -> Option<NTSTATUS> {
        if !self.faults.errors.iter().any(|r| r.op == op) {
            return None;
        }
        let mut dice = lock(&self.dice);
        let n = dice.calls.entry(op).or_insert(0);
        *n += 1;
        let n = *n;
        self.faults
            .errors
            .iter()
            .find(|r| r.op == op && (r.nth == 0 || r.nth == n))
            .map(|r| r.status)
    }

    /// Completes what a call produced, inline or on the reactor, and gives the call's return
    /// value.
    pub(super) fn finish(&self, out: Out, inline: bool) -> NTSTATUS {
        let own = out
            .dones
            .iter()
            .find(|d| d.irp == out.irp)
            .map(|d| d.status);
        let ret = match (out.marked, own) {
            (false, Some(status)) if inline => status,
            (false, Some(_)) => {
                // SAFETY: the IRP is ours until its Done is handed to the reactor below.
                unsafe { glue::mark_pending(out.irp.as_ptr()) };
                STATUS_PENDING
            }
            (false, None) => bugcheck(
                "WSK_PROVIDER_INTERNAL",
                String::from("an IRP neither queued nor finished"),
            ),
            (true, _) => STATUS_PENDING,
        };
        self.deliver(out.dones, inline);
        self.changed.notify_all();
        ret
    }

    /// Completes `dones` now on this thread, or hands them to the reactor.
    pub(super) fn deliver(&self, mut dones: Vec<Done>, inline: bool) {
        if dones.is_empty() {
            recycle(dones);
            return;
        }
        if inline {
            for d in dones.drain(..) {
                d.complete(self);
            }
            recycle(dones);
        } else {
            self.defer(dones);
            self.io.wake();
        }
    }

    /// Queues completions for the reactor with their seeded delays.
    pub(super) fn defer(&self, mut dones: Vec<Done>) {
        let now = Instant::now();
        let mut max = self.faults.max_delay;
        if self.faults.reorder {
            // Reordering needs a window in which completions of several sockets gather.
            max = max.max(Duration::from_millis(2));
        }
        let mut delays = Vec::with_capacity(dones.len());
        {
            let mut dice = lock(&self.dice);
            for _ in &dones {
                let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
                delays.push(Duration::from_nanos(dice.below(nanos.saturating_add(1))));
            }
        }
        let mut q = lock(&self.deferred);
        for (d, delay) in dones.drain(..).zip(delays) {
            let mut due = now + delay;
            if d.free.is_some()
                && let Some(close_delay) = self.faults.close_delay
            {
                due += close_delay;
            }
            if let Some(last) = q.last_due.get(&d.sock) {
                due = due.max(*last);
            }
            if d.sock != 0 {
                q.last_due.insert(d.sock, due);
            }
            q.items.push_back((due, d));
        }
        drop(q);
        recycle(dones);
    }

    /// The reactor's own completions `dones`, moved to `now` when the plan delays and
    /// reorders nothing and no deferred completion waits: [`defer`](Self::defer) would make
    /// each due at once, behind nothing, and [`take_due`](Self::take_due) hand them back in
    /// the same order, at the cost of a timestamp, a delay and a per-socket entry each and
    /// two queue moves. The dice roll once per completion all the same, as `defer` rolls
    /// them, so that a seed still gives the same plan. False (`dones` untouched) otherwise.
    pub(super) fn due_at_once(&self, dones: &mut Vec<Done>, now: &mut Vec<Done>) -> bool {
        let faults = &self.faults;
        if !faults.max_delay.is_zero() || faults.reorder || faults.close_delay.is_some() {
            return false;
        }
        if !lock(&self.deferred).items.is_empty() {
            return false;
        }
        {
            let mut dice = lock(&self.dice);
            for _ in dones.iter() {
                dice.below(1);
            }
        }
        now.append(dones);
        true
    }

    /// Takes the deferred completions that are due, in the order the plan says.
    pub(super) fn take_due(&self) -> (Vec<Done>, Option<Duration>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let now;
        {
            let mut q = lock(&self.deferred);
            if q.items.is_empty() {
                return (due, None);
            }
            now = Instant::now();
            let mut keep = VecDeque::with_capacity(q.items.len());
            let mut blocked: Vec<u64> = Vec::new();
            while let Some((at, d)) = q.items.pop_front() {
                // A socket's completions leave in order: one not yet due holds back the rest.
                if at <= now && !blocked.contains(&d.sock) {
                    due.push(d);
                } else {
                    if d.sock != 0 {
                        blocked.push(d.sock);
                    }
                    next = Some(next.map_or(at, |n| n.min(at)));
                    keep.push_back((at, d));
                }
            }
            q.items = keep;
            if q.items.is_empty() {
                q.last_due.clear();
            }
        }
        if self.faults.reorder && due.len() > 1 {
            due = self.reorder(due);
        }
        (due, next.map(|n| n.saturating_duration_since(now)))
    }

    /// Shuffles groups of completions by socket, keeping each socket's own order.
    pub(super) fn reorder(&self, due: Vec<Done>) -> Vec<Done> {
        let mut groups: Vec<(u64, Vec<Done>)> = Vec::new();
        for d in due {
            match groups.iter_mut().find(|(s, _)| *s == d.sock && d.sock != 0) {
                Some((_, g)) => g.push(d),
                None => groups.push((d.sock, vec![d])),
            }
        }
        let mut dice = lock(&self.dice);
        for i in (1..groups.len()).rev() {
            let j = usize::try_from(dice.below(i as u64 + 1)).unwrap_or(0);
            groups.swap(i, j);
        }
        groups.into_iter().flat_map(|(_, g)| g).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    use core::ptr::NonNull;

    use super::{Done, IrpPtr, Provider};
    use crate::STATUS_CONNECTION_RESET;
    use crate::faults::{Completion, ErrorRule, Faults, WskOp};

    /// Completions that are never completed: only their order is looked at.
    fn fake(sock: u64, n: usize) -> Done {
        Done::new(
            IrpPtr::new(NonNull::dangling().as_ptr()).expect("non-null"),
            0,
            n,
            sock,
        )
    }

    /// Takes every deferred completion, waiting (bounded) for their seeded delays.
    fn drain(p: &Provider, count: usize) -> Vec<(u64, usize)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while out.len() < count {
            assert!(
                Instant::now() < deadline,
                "deferred completions never came due"
            );
            let (due, _) = p.take_due();
            out.extend(due.into_iter().map(|d| (d.sock, d.info)));
            std::thread::yield_now();
        }
        out
    }

    #[test]
    fn reordering_shuffles_sockets_but_keeps_each_sockets_order() {
        let faults = Faults {
            reorder: true,
            max_delay: Duration::from_millis(1),
            ..Faults::with(Completion::Deferred, 7)
        };
        let (p, _poll) = Provider::new(&faults, crate::Provider::Memory);
        let mut orders = Vec::new();
        for round in 0..20 {
            p.defer(
                (0..30)
                    .map(|n| fake(1 + (n % 3) as u64, round * 100 + n))
                    .collect(),
            );
            let got = drain(&p, 30);
            for sock in 1..=3 {
                let mine: Vec<usize> = got
                    .iter()
                    .filter(|(s, _)| *s == sock)
                    .map(|(_, n)| *n)
                    .collect();
                assert!(
                    mine.is_sorted(),
                    "socket {sock} completions out of order: {mine:?}"
                );
                assert_eq!(mine.len(), 10);
            }
            orders.push(got.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        }
        let interleaved = (0..30u64).map(|n| 1 + n % 3).collect::<Vec<_>>();
        assert!(
            orders.iter().any(|o| *o != interleaved),
            "reordering never changed the order across sockets"
        );
    }

    #[test]
    fn error_rules_hit_the_chosen_call() {
        let faults = Faults {
            errors: std::vec![ErrorRule {
                op: WskOp::Send,
                nth: 3,
                status: STATUS_CONNECTION_RESET,
            }],
            ..Faults::with(Completion::Mixed, 1)
        };
        let (p, _poll) = Provider::new(&faults, crate::Provider::Memory);
        let hits: Vec<_> = (0..5).map(|_| p.inject(WskOp::Send)).collect();
        assert_eq!(
            hits,
            [None, None, Some(STATUS_CONNECTION_RESET), None, None]
        );
        assert_eq!(p.inject(WskOp::Receive), None);
    }

    #[test]
    fn mixed_completion_is_decided_by_the_seed() {
        let run = |seed| {
            let (p, _poll) = Provider::new(
                &Faults::with(Completion::Mixed, seed),
                crate::Provider::Memory,
            );
            (0..64).map(|_| p.decide_inline()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5), "same seed, same choices");
        assert_ne!(run(5), run(6), "another seed, other choices");
        let choices = run(5);
        assert!(choices.contains(&true) && choices.contains(&false));
    }
}
