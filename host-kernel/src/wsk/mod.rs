//! The host kernel's netio: the WSK provider on the host's real sockets, or on an in-memory
//! network between the kernel's own sockets (`Provider::Memory`, the default under Miri;
//! `memory`), chosen at boot. Everything below but the byte moving is shared by both; in
//! memory the reactor waits on the network's condition variable instead of mio.
//!
//! A reactor thread (mio) stands in for the NIC: it watches every host socket, makes progress
//! on the IRPs queued on them, and completes IRPs at `DISPATCH_LEVEL` as a NIC's DPC would.
//! With two or more emulated processors it *is* the last one: the DPCs its completions queue
//! (the executor's wake, say) run on it right after, as a NIC's DPC work stays on its
//! processor, instead of waking another thread (see `ntos::dpc`).
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
//! - Event callbacks: `WskReceiveEvent` and `WskDisconnectEvent` on connection sockets through
//!   `SO_WSK_EVENT_CALLBACK` (see `socket::events`); no `WskAcceptEvent`,
//!   `WskReceiveFromEvent`, `WskSendBacklogEvent`, no `WSK_SET_STATIC_EVENT_CALLBACKS`.
//! - No `WSK_FLAG_STREAM_SOCKET`, no `WskConnectEx`/`WskSendEx`/`WskReceiveEx` (null in the
//!   tables), no `WskControlClient` codes, no `WskIoctl`, no `WSK_FLAG_DRAIN`: these complete with `STATUS_NOT_SUPPORTED`.
//! - Socket options: `SO_REUSEADDR`, `SO_EXCLUSIVEADDRUSE`, `SO_KEEPALIVE`, `TCP_NODELAY`,
//!   `IPV6_V6ONLY` only. `SO_REUSEADDR` has Linux's meaning (no taking over a port another
//!   socket listens on); `SO_EXCLUSIVEADDRUSE` is bookkeeping, Linux already refuses to share
//!   an address without `SO_REUSEADDR` on both sockets.
//! - "Sent" means written to the host socket's buffer; a graceful disconnect completes once
//!   the FIN is queued, not when it is acknowledged.
//! - Address-in-use is `STATUS_ADDRESS_ALREADY_EXISTS`; unknown names are `STATUS_NOT_FOUND`.
//! - `WskGetNameInfo` is the host's `getnameinfo(3)`; `WskGetAddressInfo` honours the hints'
//!   family, socket type and `AI_NUMERICHOST`, and accepts the other documented `AI_*` flags.
//! - `WskSendMessages` sends the datagrams one `sendto(2)` each, in order (no control
//!   information).
//!
//! Layout: this module holds the provider object, its lock-guarded state, the reactor and the
//! boot/shutdown/leak hooks the kernel calls; `registration` the client registration calls;
//! `completion` how results complete (inline or deferred, per the fault plan); `socket` the
//! provider sockets and their calls; `resolve` name resolution; `os` the host socket calls;
//! `glue` the provider's view of the NT side; `memory` the in-memory network.
//!
//! The verifier also fails freeing an MDL or pool block a pending data IRP still uses
//! ([`pending_irp_using`]): the provider records each data IRP's MDLs and byte ranges until
//! it completes.

mod completion;
mod glue;
mod memory;
mod os;
mod registration;
pub(crate) mod resolve;
mod socket;

use std::boxed::Box;
use std::format;
use std::string::String;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use std::vec::Vec;

use mio::{Events, Poll, Registry, Token, Waker};

use self::completion::{Deferred, Dice, Done, Out};
use self::glue::{IrpPtr, bugcheck};
use self::registration::{Reg, client_id, registration_lines};
pub use self::registration::{
    WskCaptureProviderNPI, WskDeregister, WskRegister, WskReleaseProviderNPI,
};
use self::socket::Sock;
use super::faults::{Completion, Faults, WskOp};
use crate::NTSTATUS;
use crate::ntos::fast_hash::FastMap;
use crate::ntos::machine::Signal;

/// The reactor's wake-up token (no socket has it).
const WAKE: Token = Token(usize::MAX);

/// Everything the provider lock guards.
pub(super) struct State {
    sockets: FastMap<u64, Sock>,
    regs: FastMap<u64, Reg>,
    /// IRPs the provider holds: IRP -> (client registration, nesting: an IRP reissued from
    /// its own completion routine is taken again before the first completion returns).
    irps: FastMap<IrpPtr, (u64, usize)>,
    next_id: u64,
    /// Sockets the reactor should try an event indication on (no readiness may come for
    /// them: events just enabled, a receive that left data behind).
    soon: Vec<u64>,
    /// Close IRPs waiting for an event callback of their socket to return.
    held_closes: FastMap<u64, Done>,
    /// IRPs of `SO_WSK_EVENT_CALLBACK` disables waiting for the callback they disable to
    /// return (socket id, its completion).
    held_disables: Vec<(u64, Done)>,
    /// Sockets closed while an indication's callback ran whose list the client had already
    /// released (`WskRelease` from inside the callback, then the close): their `STATUS_PENDING`
    /// is no leak.
    released_in_flight: Vec<u64>,
}

impl State {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The provider of one booted kernel.
pub(super) struct Provider {
    state: Mutex<State>,
    /// Signalled when captures are released or sockets close (for `WskDeregister`).
    changed: Signal,
    io: Io,
    faults: Faults,
    dice: Mutex<Dice>,
    deferred: Mutex<Deferred>,
    /// Client memory the pending data IRPs use (a leaf lock: nothing is taken under it).
    held: Mutex<FastMap<IrpPtr, HeldMemory>>,
    stop: AtomicBool,
    /// The reactor's poll instance: taken by the reactor thread for each wait, so a thread
    /// that replaces a halted reactor (see `dpc::set_host_hooks`) carries on with it.
    poll: Mutex<Option<Poll>>,
    reactor: Mutex<Option<JoinHandle<()>>>,
}

/// What the provider's sockets stand on, and how its reactor is woken.
pub(in crate::wsk) enum Io {
    /// Host sockets: registered with the reactor's poll instance, which `waker` wakes.
    Host { registry: Registry, waker: Waker },
    /// The in-memory network, which wakes the reactor itself.
    Memory(memory::Network),
}

impl Io {
    /// Wakes the reactor.
    fn wake(&self) {
        match self {
            Io::Host { waker, .. } => {
                let _ = waker.wake();
            }
            Io::Memory(net) => net.wake(),
        }
    }

    /// Registers a host socket with the reactor (none in memory: `Unsupported`).
    pub(super) fn register(
        &self,
        source: &mut impl mio::event::Source,
        token: Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        match self {
            Io::Host { registry, .. } => registry.register(source, token, interests),
            Io::Memory(_) => Err(std::io::Error::from(std::io::ErrorKind::Unsupported)),
        }
    }

    /// Stops watching a host socket.
    pub(super) fn deregister(&self, source: &mut impl mio::event::Source) -> std::io::Result<()> {
        match self {
            Io::Host { registry, .. } => registry.deregister(source),
            Io::Memory(_) => Ok(()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static CURRENT: Mutex<Option<Arc<Provider>>> = Mutex::new(None);

/// The booted kernel's provider; the verifier fails calls made with no kernel booted. The
/// rule behind it: a WSK application calls `WskDeregister` before it unloads and makes no WSK
/// call after ("`WskDeregister` function (wsk.h)",
/// learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister).
fn provider() -> Arc<Provider> {
    let current = lock(&CURRENT).clone();
    current.unwrap_or_else(|| {
        bugcheck(
            "WSK_NO_PROVIDER",
            String::from(
                "no kernel is booted, or it is shutting down with the caller's driver still \
                 loaded and registered (a driver calls WskDeregister before it goes)",
            ),
        )
    })
}

impl Provider {
    /// A provider with the fault plan `faults` on `network`, and the poll instance its reactor
    /// will run (none in memory: the reactor waits on the network).
    fn new(faults: &Faults, network: crate::Provider) -> (Arc<Self>, Option<Poll>) {
        let (io, poll) = if network == crate::Provider::Memory {
            (Io::Memory(memory::Network::new()), None)
        } else {
            let poll = Poll::new().expect("host kernel: the WSK reactor's poll instance");
            let registry = poll
                .registry()
                .try_clone()
                .expect("host kernel: the WSK reactor's registry");
            let waker =
                Waker::new(poll.registry(), WAKE).expect("host kernel: the WSK reactor's waker");
            (Io::Host { registry, waker }, Some(poll))
        };
        let provider = Arc::new(Provider {
            state: Mutex::new(State {
                sockets: FastMap::default(),
                regs: FastMap::default(),
                irps: FastMap::default(),
                next_id: 0,
                soon: Vec::new(),
                held_closes: FastMap::default(),
                held_disables: Vec::new(),
                released_in_flight: Vec::new(),
            }),
            changed: Signal::new(),
            io,
            faults: faults.clone(),
            dice: Mutex::new(Dice {
                rng: faults.seed,
                calls: FastMap::default(),
            }),
            deferred: Mutex::new(Deferred::default()),
            held: Mutex::new(FastMap::default()),
            stop: AtomicBool::new(false),
            poll: Mutex::new(None),
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
    pub(super) fn complete_irp(&self, irp: IrpPtr, status: NTSTATUS, info: usize) {
        let mut st = self.lock();
        let mut last = false;
        // One lookup for the count and its removal.
        if let std::collections::hash_map::Entry::Occupied(mut entry) = st.irps.entry(irp) {
            entry.get_mut().1 -= 1;
            if entry.get().1 == 0 {
                entry.remove();
                last = true;
            }
        }
        drop(st);
        if last {
            lock(&self.held).remove(&irp);
        }
        self.changed.notify_all();
        // SAFETY: the caller owns completion of an IRP the provider took with `begin`.
        unsafe { glue::complete(irp.as_ptr(), status, info) };
    }

    /// The reactor thread: host socket readiness drives queued IRPs; completions run at
    /// `DISPATCH_LEVEL`; then the DPCs queued to the processor this thread is (see the module
    /// docs) run.
    fn run(self: &Arc<Self>) {
        crate::ntos::dpc::become_hosted_processor();
        let mut events = Events::with_capacity(256);
        let mut timeout: Option<Duration> = None;
        let mut dones = Vec::new();
        // This round's results due at once (see `due_at_once`).
        let mut due_now = Vec::new();
        let mut indications = Vec::new();
        loop {
            // First the DPCs queued to this processor: by the completions below in the last
            // round, by other threads (which woke the poll), or before a halted reactor's
            // replacement started.
            crate::ntos::dpc::run_hosted();
            if let Io::Memory(net) = &self.io {
                net.wait(timeout);
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                // Every socket: the network does not say whose state changed.
                let mut st = self.lock();
                let ids: Vec<u64> = st.sockets.keys().copied().collect();
                for id in ids {
                    socket::pump(&mut st, &self.io, id, &mut dones);
                }
            } else {
                let mut poll = lock(&self.poll);
                let Some(poll) = poll.as_mut() else {
                    return;
                };
                if let Err(e) = poll.poll(&mut events, timeout)
                    && e.kind() != std::io::ErrorKind::Interrupted
                {
                    bugcheck("WSK_REACTOR_POLL", format!("{e}"));
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            {
                let mut st = self.lock();
                for ev in &events {
                    if ev.token() == WAKE {
                        continue;
                    }
                    let id = ev.token().0 as u64;
                    let closed = ev.is_read_closed() || ev.is_error();
                    socket::pump_ready(&mut st, &self.io, id, closed, &mut dones);
                    if socket::indication_due(&st, id) {
                        indications.push(id);
                    }
                }
                indications.append(&mut st.soon);
            }
            if !dones.is_empty() && !self.due_at_once(&mut dones, &mut due_now) {
                self.defer(core::mem::take(&mut dones));
            }
            if !indications.is_empty() {
                // Event callbacks at DISPATCH_LEVEL on this processor, as a NIC's DPC makes
                // them; the DPCs they queue here run at the top of the next round.
                for id in indications.drain(..) {
                    glue::caught(|| socket::indicate(self, id));
                }
            }
            let (due, next) = self.take_due();
            timeout = next;
            if !due_now.is_empty() || !due.is_empty() {
                // This round's own results first: nothing deferred was waiting before them.
                glue::at_dispatch(|| {
                    for d in due_now.drain(..).chain(due) {
                        glue::caught(|| d.complete(self));
                    }
                });
            }
        }
    }

    /// Starts a reactor thread (at boot, or in place of one a bugcheck halted).
    fn spawn_reactor(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let runner = Arc::clone(self);
        std::thread::Builder::new()
            .name(String::from("wsk-reactor"))
            // Completion routines re-enter the provider, which may complete inline again:
            // room for deep chains, as a DPC stack would not have but a test should survive.
            .stack_size(64 << 20)
            .spawn(move || runner.run())
    }
}

/// Client memory a pending data IRP's `WSK_BUF` gives the provider until the IRP completes:
/// its MDLs and the byte ranges they describe.
pub(super) struct HeldMemory {
    /// The MDLs of the chain the buffer uses, by address.
    pub(super) mdls: Few<usize>,
    /// The byte ranges: (start, length).
    pub(super) ranges: Few<(usize, usize)>,
}

/// A short list kept without a heap allocation for zero or one element (the usual `WSK_BUF`
/// has one MDL and one range: recording it on every data call costs no malloc).
pub(super) enum Few<T> {
    /// No element, or one.
    Inline(Option<T>),
    /// Two or more.
    Heap(Vec<T>),
}

impl<T: Copy> Few<T> {
    /// An empty list.
    pub(super) const fn new() -> Self {
        Self::Inline(None)
    }

    /// Appends `item`.
    pub(super) fn push(&mut self, item: T) {
        match self {
            Self::Inline(None) => *self = Self::Inline(Some(item)),
            Self::Inline(Some(first)) => *self = Self::Heap(std::vec![*first, item]),
            Self::Heap(items) => items.push(item),
        }
    }

    /// The elements.
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Self::Inline(item) => item.as_slice(),
            Self::Heap(items) => items,
        }
    }
}

impl Provider {
    /// Records what the pending `irp` uses until it completes (see [`pending_irp_using`]).
    pub(super) fn hold(&self, irp: IrpPtr, memory: HeldMemory) {
        if memory.mdls.as_slice().is_empty() {
            return;
        }
        lock(&self.held).insert(irp, memory);
    }
}

/// The memory a driver frees, for the verifier's check that no pending WSK IRP still uses it.
#[derive(Clone, Copy)]
pub(crate) enum Freed {
    /// An MDL (`IoFreeMdl`), by address.
    Mdl(usize),
    /// A pool block (`ExFreePoolWithTag`): its bytes `[start, end)`.
    Pool { start: usize, end: usize },
}

/// Which pending WSK IRP of the booted provider still uses `freed`, as a line for the
/// bugcheck; `None` when none does (or no provider runs).
///
/// Rule: a `WSK_BUF`'s MDL chain describes locked or nonpaged memory the WSK subsystem reads
/// or writes until it completes the IRP ("`WSK_BUF` structure (wsk.h)",
/// <https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/ns-wsk-_wsk_buf>; "Using IRPs
/// with Winsock Kernel Functions": the subsystem completes the IRP after the operation is
/// complete, <https://learn.microsoft.com/windows-hardware/drivers/network/using-irps-with-winsock-kernel-functions>).
/// Freeing the MDL or its pool block before then lets the system touch freed memory, which
/// Driver Verifier's special pool reports as "Bug Check 0xCC: `PAGE_FAULT_IN_FREED_SPECIAL_POOL`"
/// (<https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xcc--page-fault-in-freed-special-pool>);
/// the host reports it at the free, where the driver's mistake is.
pub(crate) fn pending_irp_using(freed: Freed) -> Option<String> {
    let provider = lock(&CURRENT).clone()?;
    let held = lock(&provider.held);
    for (irp, memory) in held.iter() {
        let hit = match freed {
            Freed::Mdl(mdl) => memory.mdls.as_slice().contains(&mdl),
            Freed::Pool { start, end } => {
                memory
                    .ranges
                    .as_slice()
                    .iter()
                    .any(|&(at, len)| at < end && start < at + len)
                    || memory
                        .mdls
                        .as_slice()
                        .iter()
                        .any(|&mdl| start <= mdl && mdl < end)
            }
        };
        if hit {
            let what = match freed {
                Freed::Mdl(mdl) => format!("IoFreeMdl({mdl:#x}) frees an MDL"),
                Freed::Pool { start, end } => format!(
                    "ExFreePoolWithTag({start:#x}) frees a pool block ({} bytes) holding a buffer or MDL",
                    end - start
                ),
            };
            return Some(format!(
                "{what} that pending WSK IRP {irp:#x} still uses: free it after the IRP completes"
            ));
        }
    }
    None
}

/// Called by the kernel at boot, before any driver loads: resets the provider's state and
/// starts its reactor with the boot's fault plan.
pub(crate) fn boot(config: &Faults, network: crate::Provider) {
    shutdown();
    socket::SLOW_CALLS.store(
        config.slow_call.is_some(),
        core::sync::atomic::Ordering::Relaxed,
    );
    let (provider, poll) = Provider::new(config, network);
    *lock(&provider.poll) = poll;
    // Before the reactor starts: a DPC queued to its processor from now on wakes it.
    let woken = Arc::downgrade(&provider);
    let replaced = Arc::downgrade(&provider);
    crate::ntos::dpc::set_host_hooks(
        Box::new(move || {
            if let Some(provider) = woken.upgrade() {
                provider.io.wake();
            }
        }),
        Box::new(move || {
            // Not once the provider stops: [`shutdown`] would have to join the replacement,
            // and there is nothing left for it to do.
            if let Some(provider) = replaced.upgrade()
                && !provider.stop.load(Ordering::Acquire)
                && let Ok(thread) = provider.spawn_reactor()
            {
                *lock(&provider.reactor) = Some(thread);
            }
        }),
    );
    let thread = provider
        .spawn_reactor()
        .expect("host kernel: the WSK reactor thread");
    *lock(&provider.reactor) = Some(thread);
    *lock(&CURRENT) = Some(provider);
}

/// Called by the kernel when it shuts down: stops the reactor, drops every host socket.
///
/// A driver still loaded may be calling WSK on the reactor's processor (a DPC) while this
/// runs: once the provider is gone that call bugchecks `WSK_NO_PROVIDER` (the driver never
/// called `WskDeregister`, which a WSK application must before it goes:
/// <https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nf-wsk-wskderegister>), and
/// the bugcheck halts the reactor thread, parked for good. So the reactor is joined only once
/// it has returned; a halted one is left parked, and the kernel's drop reports the bugcheck.
pub(crate) fn shutdown() {
    let Some(provider) = lock(&CURRENT).take() else {
        return;
    };
    provider.stop.store(true, Ordering::Release);
    provider.io.wake();
    // A reactor halted before `stop` was set may have been replaced: join or leave each.
    loop {
        // Taken under the lock and the lock let go at once: the replacing hook takes it.
        let Some(thread) = lock(&provider.reactor).take() else {
            break;
        };
        while !thread.is_finished() && !crate::ntos::dpc::is_halted(thread.thread().id()) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
    let mut st = provider.lock();
    for (_, sock) in st.sockets.drain() {
        sock.forget(&provider.io);
    }
    st.held_closes.clear();
    st.held_disables.clear();
    st.released_in_flight.clear();
    st.soon.clear();
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
