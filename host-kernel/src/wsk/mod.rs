//! The host kernel's netio: the WSK provider on the host's real sockets.
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
//! - No event callbacks (`WSK_CLIENT_*_DISPATCH`, `SO_WSK_EVENT_CALLBACK`), no
//!   `WSK_FLAG_STREAM_SOCKET`, no `WskConnectEx`/`WskSendEx`/`WskReceiveEx` (null in the
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
//! `glue` the provider's view of the NT side.

mod completion;
mod glue;
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
    registry: Registry,
    waker: Waker,
    faults: Faults,
    dice: Mutex<Dice>,
    deferred: Mutex<Deferred>,
    stop: AtomicBool,
    /// The reactor's poll instance: taken by the reactor thread for each wait, so a thread
    /// that replaces a halted reactor (see `dpc::set_host_hooks`) carries on with it.
    poll: Mutex<Option<Poll>>,
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
                sockets: FastMap::default(),
                regs: FastMap::default(),
                irps: FastMap::default(),
                next_id: 0,
            }),
            changed: Signal::new(),
            registry,
            waker,
            faults: faults.clone(),
            dice: Mutex::new(Dice {
                rng: faults.seed,
                calls: FastMap::default(),
            }),
            deferred: Mutex::new(Deferred::default()),
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
        if let Some(entry) = st.irps.get_mut(&irp) {
            entry.1 -= 1;
            if entry.1 == 0 {
                st.irps.remove(&irp);
            }
        }
        drop(st);
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
        loop {
            // First the DPCs queued to this processor: by the completions below in the last
            // round, by other threads (which woke the poll), or before a halted reactor's
            // replacement started.
            crate::ntos::dpc::run_hosted();
            {
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
                    socket::pump(&mut st, &self.registry, ev.token().0 as u64, &mut dones);
                }
            }
            if !dones.is_empty() {
                self.defer(core::mem::take(&mut dones));
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

/// Called by the kernel at boot, before any driver loads: resets the provider's state and
/// starts its reactor with the boot's fault plan.
pub(crate) fn boot(config: &Faults) {
    shutdown();
    socket::SLOW_CALLS.store(
        config.slow_call.is_some(),
        core::sync::atomic::Ordering::Relaxed,
    );
    let (provider, poll) = Provider::new(config);
    *lock(&provider.poll) = Some(poll);
    // Before the reactor starts: a DPC queued to its processor from now on wakes it.
    let woken = Arc::downgrade(&provider);
    let replaced = Arc::downgrade(&provider);
    crate::ntos::dpc::set_host_hooks(
        Box::new(move || {
            if let Some(provider) = woken.upgrade() {
                let _ = provider.waker.wake();
            }
        }),
        Box::new(move || {
            if let Some(provider) = replaced.upgrade()
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
