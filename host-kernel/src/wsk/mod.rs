//! The host kernel's netio: the WSK provider on the host's real sockets.
//!
//! A reactor thread (mio) stands in for the NIC: it watches every host socket, makes progress
//! on the IRPs queued on them, and completes IRPs at `DISPATCH_LEVEL` as a NIC's DPC would.
//! Calls into the provider try their operation at once on the caller's thread; whether a
//! result that is already known completes inline (before the call returns) or on the reactor
//! is the boot's fault plan's choice ([`Completion`]), as are delays, reordering across sockets
//! and injected error statuses.
//!
//! Locking: one provider lock guards every socket and registration. IRPs are never completed
//! while it is held (completion routines re-enter the provider), and cancel routines take it
//! only after releasing the cancel spin lock.
//!
//! The verifier fails (bugchecks) what crashes or hangs Windows: a `WSK_BUF` longer than its
//! MDL chain or holding a freed MDL, calls on a closed socket, IRQL rules, an
//! `OutputSizeReturned` given with an IRP, and `WskDeregister` with sockets, captures or IRPs
//! still outstanding after a bound (where Windows would wait forever). Each rule cites, beside
//! it, the WDK page it comes from. Several outstanding `WskAccept` calls on one listener are
//! allowed and served in order, as WSK documents.
//!
//! Where it differs from Windows:
//! - No event callbacks (`WSK_CLIENT_*_DISPATCH`, `SO_WSK_EVENT_CALLBACK`), no
//!   `WSK_FLAG_STREAM_SOCKET`, no `WskConnectEx`/`WskSendEx`/`WskReceiveEx`/
//!   `WskSendMessages` (null in the tables), no `WskControlClient` codes, no `WskGetNameInfo`,
//!   no `WskIoctl`, no `WSK_FLAG_DRAIN`: these complete with `STATUS_NOT_SUPPORTED`.
//! - Socket options: `SO_REUSEADDR`, `SO_EXCLUSIVEADDRUSE`, `SO_KEEPALIVE`, `TCP_NODELAY`,
//!   `IPV6_V6ONLY` only. `SO_REUSEADDR` has Linux's meaning (no taking over a port another
//!   socket listens on); `SO_EXCLUSIVEADDRUSE` is bookkeeping, Linux already refuses to share
//!   an address without `SO_REUSEADDR` on both sockets.
//! - "Sent" means written to the host socket's buffer; a graceful disconnect completes once
//!   the FIN is queued, not when it is acknowledged.
//! - Address-in-use is `STATUS_ADDRESS_ALREADY_EXISTS`; unknown names are `STATUS_NOT_FOUND`.

mod glue;
mod os;
mod resolve;
mod socket;

use std::boxed::Box;
use std::collections::{HashMap, VecDeque};
use std::string::String;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;
use std::{format, vec};

use mio::{Events, Poll, Registry, Token, Waker};

use self::glue::{bugcheck, require_at_most};
use self::socket::Sock;
use super::faults::{Completion, Faults, WskOp};
use crate::{
    DISPATCH_LEVEL, IRP, NTSTATUS, PASSIVE_LEVEL, STATUS_DEVICE_NOT_READY,
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, WSK_CLIENT,
    WSK_CLIENT_NPI, WSK_MAJOR_VERSION, WSK_NO_WAIT, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};

/// The reactor's wake-up token (no socket has it).
const WAKE: Token = Token(usize::MAX);

/// How long `WskDeregister` waits for sockets and captures before the verifier reports them.
const DEFAULT_DEREGISTER_WAIT: Duration = Duration::from_secs(10);

/// An IRP whose result is known, waiting to be completed.
pub(super) struct Done {
    /// The IRP.
    irp: usize,
    /// Its final status.
    status: NTSTATUS,
    /// Its `IoStatus.Information`.
    info: usize,
    /// The socket it belongs to (0: none): completions of one socket keep their order.
    sock: u64,
    /// A socket handle to free once the IRP has completed (the close IRP's socket).
    free: usize,
}

impl Done {
    fn new(irp: *mut IRP, status: NTSTATUS, info: usize, sock: u64) -> Self {
        Self {
            irp: irp as usize,
            status,
            info,
            sock,
            free: 0,
        }
    }

    /// Completes the IRP on the calling thread, then frees what it carried.
    fn complete(self, p: &Provider) {
        p.complete_irp(self.irp as *mut IRP, self.status, self.info);
        if self.free != 0 {
            // SAFETY: the handle was leaked from a Box by WskSocket/accept and is freed once,
            // after the close IRP completed (until then the client may still read it).
            drop(unsafe { Box::from_raw(self.free as *mut socket::SockHandle) });
        }
    }
}

/// What one provider call produced: the fate of its own IRP and of others it finished.
pub(super) struct Out {
    irp: usize,
    /// The own IRP was marked pending (it went into a queue): the call returns `STATUS_PENDING`.
    marked: bool,
    dones: Vec<Done>,
}

impl Out {
    fn new(irp: *mut IRP) -> Self {
        Self {
            irp: irp as usize,
            marked: false,
            dones: Vec::new(),
        }
    }

    /// The own IRP is finished with `status`.
    fn done(&mut self, status: NTSTATUS, info: usize, sock: u64) {
        self.dones
            .push(Done::new(self.irp as *mut IRP, status, info, sock));
    }
}

/// A registered client.
struct Reg {
    captures: usize,
    deregistering: bool,
}

/// Everything the provider lock guards.
pub(super) struct State {
    sockets: HashMap<u64, Sock>,
    regs: HashMap<u64, Reg>,
    /// IRPs the provider holds: IRP -> (client registration, nesting: an IRP reissued from
    /// its own completion routine is taken again before the first completion returns).
    irps: HashMap<usize, (u64, usize)>,
    next_id: u64,
}

impl State {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// Seeded choices: inline or deferred, delays, reordering, error rules.
struct Dice {
    rng: u64,
    calls: HashMap<WskOp, u32>,
}

impl Dice {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Deferred completions, due at an instant, per-socket order kept.
#[derive(Default)]
struct Deferred {
    items: VecDeque<(Instant, Done)>,
    last_due: HashMap<u64, Instant>,
}

/// The provider of one booted kernel.
pub(super) struct Provider {
    state: Mutex<State>,
    /// Signalled when captures are released or sockets close (for `WskDeregister`).
    changed: Condvar,
    registry: Registry,
    waker: Waker,
    faults: Faults,
    dice: Mutex<Dice>,
    deferred: Mutex<Deferred>,
    stop: AtomicBool,
    reactor: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static CURRENT: Mutex<Option<Arc<Provider>>> = Mutex::new(None);

/// The booted kernel's provider; the verifier fails calls made with no kernel booted.
fn provider() -> Arc<Provider> {
    let current = lock(&CURRENT).clone();
    current.unwrap_or_else(|| bugcheck("WSK_NO_PROVIDER", String::from("no kernel is booted")))
}

impl Provider {
    /// A provider with the fault plan `faults`, and the poll instance its reactor will run.
    fn new(faults: &Faults) -> (Arc<Self>, Poll) {
        let poll = Poll::new().expect("host kernel: the WSK reactor's poll instance");
        let registry = poll
            .registry()
            .try_clone()
            .expect("host kernel: the WSK reactor's registry");
        let waker =
            Waker::new(poll.registry(), WAKE).expect("host kernel: the WSK reactor's waker");
        let provider = Arc::new(Provider {
            state: Mutex::new(State {
                sockets: HashMap::new(),
                regs: HashMap::new(),
                irps: HashMap::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
            registry,
            waker,
            faults: faults.clone(),
            dice: Mutex::new(Dice {
                rng: faults.seed,
                calls: HashMap::new(),
            }),
            deferred: Mutex::new(Deferred::default()),
            stop: AtomicBool::new(false),
            reactor: Mutex::new(None),
        });
        (provider, poll)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Stops counting `irp` as held by the provider, then completes it on the calling thread.
    ///
    /// The provider lets go of the IRP *before* its completion routine runs: `WskDeregister`
    /// waits until "all calls in progress return and all sockets are closed"
    /// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister>),
    /// not until the client's completion routines have returned. A client whose unload only
    /// waits for `WskDeregister` (or for what its routines signal) can return from
    /// `DriverUnload` while a routine still runs; the host lets that happen so that the
    /// unload check sees it.
    pub(super) fn complete_irp(&self, irp: *mut IRP, status: NTSTATUS, info: usize) {
        let mut st = self.lock();
        if let Some(entry) = st.irps.get_mut(&(irp as usize)) {
            entry.1 -= 1;
            if entry.1 == 0 {
                st.irps.remove(&(irp as usize));
            }
        }
        drop(st);
        self.changed.notify_all();
        // SAFETY: the caller owns completion of an IRP the provider took with `begin`.
        unsafe { glue::complete(irp, status, info) };
    }

    /// Inline completion for this call's known results?
    fn decide_inline(&self) -> bool {
        match self.faults.completion {
            Completion::Inline => true,
            Completion::Deferred => false,
            Completion::Mixed => lock(&self.dice).next() & 1 == 1,
        }
    }

    /// The injected status for this call of `op`, if a rule hits it.
    fn inject(&self, op: WskOp) -> Option<NTSTATUS> {
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
    fn finish(&self, out: Out, inline: bool) -> NTSTATUS {
        let own = out
            .dones
            .iter()
            .find(|d| d.irp == out.irp)
            .map(|d| d.status);
        let ret = match (out.marked, own) {
            (false, Some(status)) if inline => status,
            (false, Some(_)) => {
                // SAFETY: the IRP is ours until its Done is handed to the reactor below.
                unsafe { glue::mark_pending(out.irp as *mut IRP) };
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
    fn deliver(&self, dones: Vec<Done>, inline: bool) {
        if dones.is_empty() {
            return;
        }
        if inline {
            for d in dones {
                d.complete(self);
            }
        } else {
            self.defer(dones);
            let _ = self.waker.wake();
        }
    }

    /// Queues completions for the reactor with their seeded delays.
    fn defer(&self, dones: Vec<Done>) {
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
        for (d, delay) in dones.into_iter().zip(delays) {
            let mut due = now + delay;
            if d.free != 0
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
    }

    /// Takes the deferred completions that are due, in the order the plan says.
    fn take_due(&self) -> (Vec<Done>, Option<Duration>) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut q = lock(&self.deferred);
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
    fn reorder(&self, due: Vec<Done>) -> Vec<Done> {
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

    /// The reactor thread: host socket readiness drives queued IRPs; completions run at
    /// `DISPATCH_LEVEL`.
    fn run(self: &Arc<Self>, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        let mut timeout: Option<Duration> = None;
        loop {
            if let Err(e) = poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                bugcheck("WSK_REACTOR_POLL", format!("{e}"));
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let mut dones = Vec::new();
            {
                let mut st = self.lock();
                for ev in &events {
                    if ev.token() == WAKE {
                        continue;
                    }
                    socket::pump(&mut st, &self.registry, ev.token().0 as u64, &mut dones);
                }
            }
            if !dones.is_empty() {
                self.defer(dones);
            }
            let (due, next) = self.take_due();
            timeout = next;
            if !due.is_empty() {
                glue::at_dispatch(|| {
                    for d in due {
                        glue::caught(|| d.complete(self));
                    }
                });
            }
        }
    }
}

/// Called by the kernel at boot, before any driver loads: resets the provider's state and
/// starts its reactor with the boot's fault plan.
pub(crate) fn boot(config: &Faults) {
    shutdown();
    socket::SLOW_CALLS.store(
        config.slow_call.is_some(),
        core::sync::atomic::Ordering::Relaxed,
    );
    let (provider, poll) = Provider::new(config);
    let runner = Arc::clone(&provider);
    let thread = std::thread::Builder::new()
        .name(String::from("wsk-reactor"))
        // Completion routines re-enter the provider, which may complete inline again: room
        // for deep chains, as a DPC stack would not have but a test should survive.
        .stack_size(64 << 20)
        .spawn(move || runner.run(poll))
        .expect("host kernel: the WSK reactor thread");
    *lock(&provider.reactor) = Some(thread);
    *lock(&CURRENT) = Some(provider);
}

/// Called by the kernel when it shuts down: stops the reactor, drops every host socket.
pub(crate) fn shutdown() {
    let Some(provider) = lock(&CURRENT).take() else {
        return;
    };
    provider.stop.store(true, Ordering::Release);
    let _ = provider.waker.wake();
    if let Some(thread) = lock(&provider.reactor).take() {
        let _ = thread.join();
    }
    let mut st = provider.lock();
    for (_, sock) in st.sockets.drain() {
        sock.forget(&provider.registry);
    }
    st.regs.clear();
    lock(&provider.deferred).items.clear();
}

/// Client registrations still registered, one line each (for the unload check and report).
pub(crate) fn registrations_left() -> Vec<String> {
    let Some(provider) = lock(&CURRENT).clone() else {
        return Vec::new();
    };
    let st = provider.lock();
    registration_lines(&st)
}

fn registration_lines(st: &State) -> Vec<String> {
    let mut regs: Vec<_> = st.regs.iter().collect();
    regs.sort_by_key(|(id, _)| **id);
    regs.into_iter()
        .map(|(id, reg)| {
            format!(
                "WSK client registration {id} still registered ({} provider NPI captures held)",
                reg.captures
            )
        })
        .collect()
}

/// For the unload report: one line per registration or socket still open.
pub(crate) fn leaks() -> Vec<String> {
    let Some(provider) = lock(&CURRENT).clone() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    let st = provider.lock();
    lines.extend(registration_lines(&st));
    let mut socks: Vec<_> = st.sockets.values().collect();
    socks.sort_by_key(|s| s.id());
    for sock in socks {
        lines.push(sock.describe());
    }
    let mut irps: Vec<_> = st.irps.iter().collect();
    irps.sort();
    for (irp, (client, _)) in irps {
        lines.push(format!(
            "WSK IRP {irp:#x} of client registration {client} still held by the provider"
        ));
    }
    lines
}

/// The registration id kept in the client's `WSK_REGISTRATION`.
///
/// # Safety
/// `registration` points to a live `WSK_REGISTRATION`.
unsafe fn registration_id(registration: *mut WSK_REGISTRATION, function: &'static str) -> u64 {
    if registration.is_null() {
        bugcheck(
            "WSK_NULL_REGISTRATION",
            format!("{function}: null WSK_REGISTRATION"),
        );
    }
    // SAFETY: the caller guarantees a live registration block.
    unsafe { (*registration).ReservedRegistrationState }
}

/// Host implementation of `WskRegister`. `PASSIVE_LEVEL`.
///
/// # Safety
/// Both pointers are valid; `WskRegistration` stays in nonpaged memory until `WskDeregister`.
pub unsafe extern "system-unwind" fn WskRegister(
    WskClientNpi: *mut WSK_CLIENT_NPI,
    WskRegistration: *mut WSK_REGISTRATION,
) -> NTSTATUS {
    // "WskRegister function (wsk.h)", IRQL PASSIVE_LEVEL: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskregister
    require_at_most(PASSIVE_LEVEL, "WskRegister");
    if WskClientNpi.is_null() || WskRegistration.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the caller guarantees a valid client NPI.
    let dispatch = unsafe { (*WskClientNpi).Dispatch };
    if dispatch.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client's dispatch table is valid while it is registered.
    let version = unsafe { (*dispatch).Version };
    if WSK_MAJOR_VERSION(version) != 1 {
        return STATUS_NOT_SUPPORTED;
    }
    let provider = provider();
    let mut st = provider.lock();
    let id = st.new_id();
    st.regs.insert(
        id,
        Reg {
            captures: 0,
            deregistering: false,
        },
    );
    // SAFETY: the caller guarantees a writable registration block.
    unsafe {
        (*WskRegistration).ReservedRegistrationState = id;
        (*WskRegistration).ReservedRegistrationContext = core::ptr::null_mut();
        (*WskRegistration).ReservedRegistrationLock = 0;
    }
    STATUS_SUCCESS
}

/// Host implementation of `WskDeregister`. `PASSIVE_LEVEL`. Waits until every capture is
/// released and every socket of the client is closed; past a bound, the verifier reports what
/// is still held instead of hanging forever.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`].
pub unsafe extern "system-unwind" fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION) {
    // "WskDeregister function (wsk.h)", IRQL PASSIVE_LEVEL: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister
    require_at_most(PASSIVE_LEVEL, "WskDeregister");
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskDeregister") };
    let provider = provider();
    let wait = provider
        .faults
        .deregister_wait
        .unwrap_or(DEFAULT_DEREGISTER_WAIT);
    let deadline = Instant::now() + wait;
    let mut st = provider.lock();
    let Some(reg) = st.regs.get_mut(&id) else {
        drop(st);
        bugcheck(
            "WSK_DEREGISTER_UNKNOWN",
            format!("WskDeregister of registration {id}, which is not registered"),
        );
    };
    reg.deregistering = true;
    // "WskDeregister function (wsk.h)" (https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister):
    // it returns once every capture is released, every provider call has returned and every
    // socket is closed; Windows waits forever, the verifier reports after a bound. Stricter
    // than the page: it also waits for the client's pending non-socket IRPs (WskGetAddressInfo,
    // WskSocket before it returns a socket), which the page does not name; such an IRP would
    // complete into a driver that may be unloading.
    loop {
        let captures = st.regs.get(&id).map_or(0, |r| r.captures);
        let irps = st.irps.values().filter(|(c, _)| *c == id).count();
        let open: Vec<String> = st
            .sockets
            .values()
            .filter(|s| s.client() == id)
            .map(Sock::describe)
            .collect();
        if captures == 0 && open.is_empty() && irps == 0 {
            st.regs.remove(&id);
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            drop(st);
            let mut detail = format!(
                "WskDeregister of registration {id} would hang: {captures} captures held, {} sockets \
                 open, {irps} IRPs pending",
                open.len()
            );
            let name = if !open.is_empty() {
                "WSK_DEREGISTER_WITH_SOCKETS_OPEN"
            } else if captures > 0 {
                "WSK_DEREGISTER_WITH_CAPTURES_HELD"
            } else {
                "WSK_DEREGISTER_WITH_IRPS_PENDING"
            };
            for line in open {
                detail.push_str("\n  ");
                detail.push_str(&line);
            }
            bugcheck(name, detail);
        }
        st = provider
            .changed
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Host implementation of `WskCaptureProviderNPI`. `PASSIVE_LEVEL`, or <= `DISPATCH_LEVEL`
/// with `WSK_NO_WAIT`. The host provider is ready as soon as the kernel has booted, so no
/// wait ever happens.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`]; `WskProviderNpi` is writable.
pub unsafe extern "system-unwind" fn WskCaptureProviderNPI(
    WskRegistration: *mut WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut WSK_PROVIDER_NPI,
) -> NTSTATUS {
    // "WskCaptureProviderNPI function (wsk.h)", IRQL PASSIVE_LEVEL, or <= DISPATCH_LEVEL with
    // WSK_NO_WAIT: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskcaptureprovidernpi
    if WaitTimeout == WSK_NO_WAIT {
        require_at_most(DISPATCH_LEVEL, "WskCaptureProviderNPI");
    } else {
        require_at_most(PASSIVE_LEVEL, "WskCaptureProviderNPI (waiting)");
    }
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskCaptureProviderNPI") };
    if WskProviderNpi.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let provider = provider();
    let mut st = provider.lock();
    match st.regs.get_mut(&id) {
        Some(reg) if !reg.deregistering => reg.captures += 1,
        // Same page: after WskDeregister, captures fail with STATUS_DEVICE_NOT_READY.
        Some(_) => return STATUS_DEVICE_NOT_READY,
        None => {
            drop(st);
            bugcheck(
                "WSK_CAPTURE_UNREGISTERED",
                format!("WskCaptureProviderNPI on registration {id}, which is not registered"),
            );
        }
    }
    // SAFETY: the caller guarantees a writable NPI.
    unsafe {
        (*WskProviderNpi).Client = client_handle(id);
        (*WskProviderNpi).Dispatch = &raw const socket::PROVIDER_DISPATCH;
    }
    STATUS_SUCCESS
}

/// Host implementation of `WskReleaseProviderNPI`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `WskRegistration` was filled by [`WskRegister`].
pub unsafe extern "system-unwind" fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION) {
    // "WskReleaseProviderNPI function (wsk.h)", IRQL <= DISPATCH_LEVEL, exactly one release per
    // successful capture: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nf-wsk-wskreleaseprovidernpi
    require_at_most(DISPATCH_LEVEL, "WskReleaseProviderNPI");
    // SAFETY: forwarded contract.
    let id = unsafe { registration_id(WskRegistration, "WskReleaseProviderNPI") };
    let provider = provider();
    let mut st = provider.lock();
    let ok = match st.regs.get_mut(&id) {
        Some(reg) if reg.captures > 0 => {
            reg.captures -= 1;
            true
        }
        _ => false,
    };
    drop(st);
    if !ok {
        bugcheck(
            "WSK_RELEASE_WITHOUT_CAPTURE",
            format!("WskReleaseProviderNPI on registration {id} without a capture"),
        );
    }
    provider.changed.notify_all();
}

/// The opaque `WSK_CLIENT` handle of registration `id`.
fn client_handle(id: u64) -> *mut WSK_CLIENT {
    usize::try_from(id).unwrap_or(0) as *mut WSK_CLIENT
}

/// The registration behind a `WSK_CLIENT` handle; the verifier fails unknown handles.
fn client_id(st: &State, client: *mut WSK_CLIENT, function: &'static str) -> Result<u64, String> {
    let id = client as usize as u64;
    match st.regs.get(&id) {
        Some(_) => Ok(id),
        None => Err(format!(
            "{function}: WSK_CLIENT {client:p} is not a registered client"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    use super::{Done, Provider};
    use crate::faults::{Completion, ErrorRule, Faults, WskOp};
    use crate::{IRP, STATUS_CONNECTION_RESET};

    /// Completions that are never completed: only their order is looked at.
    fn fake(sock: u64, n: usize) -> Done {
        Done::new(n as *mut IRP, 0, n, sock)
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
        let (p, _poll) = Provider::new(&faults);
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
        let (p, _poll) = Provider::new(&faults);
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
            let (p, _poll) = Provider::new(&Faults::with(Completion::Mixed, seed));
            (0..64).map(|_| p.decide_inline()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5), "same seed, same choices");
        assert_ne!(run(5), run(6), "another seed, other choices");
        let choices = run(5);
        assert!(choices.contains(&true) && choices.contains(&false));
    }
}
