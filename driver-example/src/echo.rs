//! The echo service (RFC 862): one listener task and one task per connection on one runner.
//! Nothing here touches an IRP or a completion routine: `wsk-net` owns those. The only
//! `NTSTATUS` is the one [`StartError::status`] gives `DriverEntry` to return.
//!
//! Lifecycle: [`start`] (from `DriverEntry`) registers the WSK client ([`SERVICE`]), binds the
//! listener (so a port in use fails the load), starts the runner and spawns the accept loop;
//! [`stop`] (from `DriverUnload`) stops [`SERVICE`], which shuts the runner down (dropping
//! every task and so closing the listener and every connection) and only then deregisters
//! the client. A failed start is undone the same way (by `wsk::driver_entry!`).
//!
//! Load shedding: a connection the service cannot take is refused with a reset, never left
//! waiting in the listen backlog. Past the connection limit (or without a task slot or a
//! buffer) the accepted connection is closed abortively. When the provider cannot even accept
//! (out of resources: on the host kernel, out of descriptors) the accept loop gives back a
//! reserve socket it holds for the purpose, accepts the waiting connection into the room
//! that frees, resets it, and takes the reserve again. With accept events (`EventDriven` 1
//! where the provider has them) a burst past the accept queue is refused by the accept
//! callback itself (a reset, counted by `TcpListener::accept_event_counts`). Accept errors
//! back off exponentially;
//! repeating events are logged ever more rarely (the 1st, 2nd, 4th, 8th... in a row).
//!
//! Idle connections: with `Settings::idle_timeout` set, a connection that sends nothing for
//! that long is closed like one the peer ended (disconnect, then close); the closes are
//! logged the 1st, 2nd, 4th... time.
#![forbid(unsafe_code)]

use core::fmt;
use core::future::Future;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use wsk::driver::{FailureStatus, ServiceError};
use wsk::net::ACCEPT_QUEUE_MAX;
use wsk::net::Spares;
use wsk::net::StreamTransfer;
use wsk::sys::{NTSTATUS, STATUS_INVALID_PARAMETER};
use wsk::{
    Budget, Driver, ErrorKind, IoBuf, Runner, RunnerKind, Service, TaskPool, TcpListener,
    TcpStream, UdpSocket, WskClient, kprint,
};

/// The most connections served at once (the task pool's size, fixed at compile time); the
/// configured limit may be lower, never higher. 1,024; 12,288 with the `scale` feature (a
/// host build for the 10,000-connection benchmark, `cargo xtask bench-scale`).
#[cfg(not(feature = "scale"))]
pub const MAX_CONNECTIONS: usize = 1024;
/// See the definition without the `scale` feature.
#[cfg(feature = "scale")]
pub const MAX_CONNECTIONS: usize = 12 * 1024;
/// The connection limit when none is configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const _: () = assert!(DEFAULT_MAX_CONNECTIONS <= MAX_CONNECTIONS);
/// Receive buffer of a connection moving data in bulk (borrowed from [`SPARE_BUFFERS`] while it
/// does).
const BUFFER_SIZE: usize = 16 * 1024;
/// Receive buffer every connection owns: what an idle connection's posted receive holds.
/// Messages up to this size are echoed from it; a receive that fills it switches the
/// connection to a [`BUFFER_SIZE`] buffer until a receive fits this one again.
const SMALL_BUFFER_SIZE: usize = 2 * 1024;
/// How long a graceful disconnect may take before the connection is reset instead.
const DISCONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Failed accepts in a row retried at once: one connection dying in the backlog before it is
/// accepted must not slow the next.
const IMMEDIATE_RETRIES: u32 = 3;
/// The wait after the first failed accept past [`IMMEDIATE_RETRIES`]; each further failure in
/// a row doubles it.
const BACKOFF_FIRST: Duration = Duration::from_millis(1);
/// The longest wait after a failed accept.
const BACKOFF_LAST: Duration = Duration::from_secs(1);
/// How long the accept loop waits for the connection it sheds after giving back its reserve.
const SHED_WAIT: Duration = Duration::from_millis(100);

/// What the service does, from the registry (Windows, Wine) or command-line flags (host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Address and port to listen on; port 0 lets WSK pick one (logged at start).
    pub listen: SocketAddr,
    /// Where tasks are polled: a DPC, or a passive system thread (Wine).
    pub runner: RunnerKind,
    /// Connections served at once, 1 to [`MAX_CONNECTIONS`]; more are accepted and reset at
    /// once.
    pub max_connections: usize,
    /// How long a connection may stay silent (no data, no FIN) before the service closes it
    /// gracefully (bounded by the close limit). `None`: never. The receive is bounded with
    /// `wsk::net::timeout`, which cancels it through WSK and, where `IoCancelIrp` does not
    /// cancel WSK IRPs (Wine), closes the socket a grace period later.
    pub idle_timeout: Option<Duration>,
    /// Receive through WSK's receive event callbacks (`TcpStream::recv_events`: data copied
    /// in place or from a retained indication, no receive IRP posted) instead of receive
    /// IRPs, and accept through the accept callback (`TcpListener::accept_events`) instead of
    /// accept IRPs. Where the provider has no event callbacks (Wine 8), IRPs anyway.
    pub event_driven: bool,
}

/// Why [`start`] failed.
#[derive(Debug, Clone, Copy)]
pub enum StartError {
    /// The connection limit is 0 or above [`MAX_CONNECTIONS`].
    MaxConnections(usize),
    /// The service did not start: WSK registration failed, or it runs already.
    Service(ServiceError),
    /// The listener could not be bound to this address (or, for port 0, the provider did not
    /// say which port it picked).
    Listen(SocketAddr, wsk::Error),
    /// The runner could not start.
    Runner(wsk::executor::StartError),
    /// The listener task could not be spawned.
    Spawn(wsk::executor::SpawnError),
}

impl FailureStatus for StartError {
    /// The status `DriverEntry` fails with: the kernel's own status where one caused the
    /// failure (`STATUS_ADDRESS_ALREADY_EXISTS` for a port in use, say), otherwise the closest
    /// generic one.
    fn status(&self) -> NTSTATUS {
        match self {
            Self::MaxConnections(_) => STATUS_INVALID_PARAMETER,
            Self::Service(e) => e.status(),
            Self::Listen(_, e) => FailureStatus::status(e),
            Self::Runner(e) => e.status(),
            Self::Spawn(e) => e.status(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MaxConnections(n) => write!(
                f,
                "a limit of {n} connections is outside 1 to {MAX_CONNECTIONS} (the task pool's size)"
            ),
            Self::Service(e) => write!(f, "{e}"),
            Self::Listen(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            Self::Runner(e) => write!(f, "the runner did not start: {e}"),
            Self::Spawn(e) => write!(f, "the listener task was not spawned: {e}"),
        }
    }
}

static RUNNER: Runner = Runner::new(Budget::DEFAULT);
static LISTENER_TASK: TaskPool<4096, 1> = TaskPool::new();
static CONNECTION_TASKS: TaskPool<2048, MAX_CONNECTIONS> = TaskPool::new();
/// The WSK client, registered by [`start`], for the tasks of the service's runner; [`stop`]
/// shuts the runner down before deregistering it.
pub static SERVICE: Service = Service::new("wskecho", &[&RUNNER]);
static LIVE_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Connections closed for staying silent past the idle timeout, since the driver loaded.
static IDLE_CLOSES: AtomicUsize = AtomicUsize::new(0);

/// Starts the service: registers with WSK, binds the listener (waiting for it here, so a
/// listener that cannot bind fails the start), starts the runner and spawns the accept loop.
/// Returns the address it listens on, with the real port when `settings.listen` has port 0,
/// and logs `wskecho: listening on <addr>`.
///
/// # Errors
/// See [`StartError`]; the caller undoes a failed start with [`stop`] (`wsk::driver_entry!`
/// does): nothing is then left running or registered, and a failure before the runner starts
/// (bad limit, registration, bind) leaves the service startable again.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverEntry`): it waits for the bind.
pub fn start(driver: Driver, settings: Settings) -> Result<SocketAddr, StartError> {
    let max = settings.max_connections;
    if !(1..=MAX_CONNECTIONS).contains(&max) {
        return Err(StartError::MaxConnections(max));
    }
    let client = SERVICE.start(driver).map_err(StartError::Service)?;
    let (listener, local) = bind_at_start(client, settings.listen)
        .map_err(|e| StartError::Listen(settings.listen, e))?;
    probe_provider(client, &listener, local);
    if let Err(e) = RUNNER.start(settings.runner) {
        wsk::executor::block_on(listener.close());
        return Err(StartError::Runner(e));
    }
    spawn_accept_loop(client, listener, &settings)?;
    if wsk::sys::reads_user_mode_shared_data() {
        // Under Wine only (see wsk::sys::KeQueryInterruptTime); the Wine test looks for it.
        kprint!("wskecho: clock: KUSER_SHARED_DATA at its user-mode address\n");
    }
    kprint!("wskecho: listening on {local}\n");
    Ok(local)
}

// `start`'s steps each wait for a future that `block_on` pins on the stack (or move one into
// a task), and stay out of line so that no frame holds more than one of them: a frame over a
// page makes the compiler call `__chkstk`, which x64 ntoskrnl does not export (the start-up
// probes once made one; the `.sys` image check caught it). `PASSIVE_LEVEL`, all of them.

/// Binds the listener and finds the address it got.
#[inline(never)]
fn bind_at_start(client: &WskClient, addr: SocketAddr) -> wsk::Result<(TcpListener, SocketAddr)> {
    wsk::executor::block_on(bind_listener(client, addr))
}

/// Logs what the provider lacks, one line per optional feature (the Wine test reports them).
#[inline(never)]
fn probe_provider(client: &WskClient, listener: &TcpListener, local: SocketAddr) {
    probe_sockets(client, listener, local);
    crate::probe::data_features(client);
}

/// See [`probe_provider`]: the socket features.
#[inline(never)]
fn probe_sockets(client: &WskClient, listener: &TcpListener, local: SocketAddr) {
    let (stream, own) = wsk::executor::block_on(report_provider_features(client, listener, local));
    probe_send_backlog(client, stream, own);
}

/// Spawns the accept loop on the started runner.
#[inline(never)]
fn spawn_accept_loop(
    client: &'static WskClient,
    listener: TcpListener,
    settings: &Settings,
) -> Result<(), StartError> {
    let accepting = accept_loop(
        client,
        listener,
        settings.max_connections,
        settings.idle_timeout,
        settings.event_driven,
    );
    // On error the future, and with it the listener, was dropped: stopping waits for its
    // close.
    let _detached = RUNNER
        .spawn(&LISTENER_TASK, accepting)
        .map_err(StartError::Spawn)?;
    Ok(())
}

/// Logs which of the optional WSK features the provider lacks (the Wine test reports these
/// lines): `WskSocketConnect` (`TcpStream::connect` falls back to three calls without it) and
/// `WskControlSocket` (socket options are `Unsupported` without it). One connection to our
/// own listener, given back for `probe_send_backlog`, which closes it (the accept loop then
/// sees its end); and the address it connected to. `PASSIVE_LEVEL`.
async fn report_provider_features(
    client: &WskClient,
    listener: &TcpListener,
    local: SocketAddr,
) -> (Option<TcpStream>, SocketAddr) {
    let own = if local.ip().is_unspecified() {
        SocketAddr::new(
            if local.is_ipv4() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(core::net::Ipv6Addr::LOCALHOST)
            },
            local.port(),
        )
    } else {
        local
    };
    let from = SocketAddr::new(
        if own.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(core::net::Ipv6Addr::UNSPECIFIED)
        },
        0,
    );
    let stream = match TcpStream::socket_connect(client, from, own).await {
        Ok(stream) => {
            kprint!("wskecho: provider has WskSocketConnect\n");
            Some(stream)
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            kprint!(
                "wskecho: provider lacks WskSocketConnect: connect falls back to WskSocket, WskBind and WskConnect\n"
            );
            None
        }
        Err(e) => {
            kprint!("wskecho: WskSocketConnect probe failed: {e}\n");
            None
        }
    };
    match listener.recv_buffer_size().await {
        Ok(_) => kprint!("wskecho: provider has WskControlSocket\n"),
        Err(e) if e.kind() == ErrorKind::Unsupported => kprint!(
            "wskecho: provider lacks WskControlSocket: socket options (buffer sizes, linger, broadcast, multicast, UDP connect, control) are unsupported\n"
        ),
        Err(e) => kprint!("wskecho: WskControlSocket probe failed: {e}\n"),
    }
    (stream, own)
}

/// The ideal send backlog probe (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`) on the probe's
/// connection to our own listener (`stream`, or a new one to `own` where `WskSocketConnect`
/// is missing), closed at once. Its own frame, as `probe`'s probes: see `probe::data_features`.
#[inline(never)]
fn probe_send_backlog(client: &WskClient, stream: Option<TcpStream>, own: SocketAddr) {
    wsk::executor::block_on(async {
        let stream = match stream {
            Some(stream) => Some(stream),
            None => TcpStream::connect(client, own).await.ok(),
        };
        if let Some(stream) = stream {
            let backlog = stream.ideal_send_backlog().await.map(drop);
            crate::probe::report(
                "ideal send backlog (SIO_WSK_QUERY_IDEAL_SEND_BACKLOG)",
                backlog,
            );
            stream.abort().await;
        }
    });
}

/// Binds the listener and finds the address it got (the port WSK picked for port 0).
async fn bind_listener(
    client: &WskClient,
    addr: SocketAddr,
) -> wsk::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(client, addr).await?;
    if addr.port() != 0 {
        // Known already; and Wine's provider cannot tell (no WskGetLocalAddress).
        return Ok((listener, addr));
    }
    match listener.local_addr().await {
        Ok(local) => Ok((listener, local)),
        Err(e) => {
            listener.close().await;
            Err(e)
        }
    }
}

/// What [`stop`] left behind; all zero for a clean unload. The WSK client is deregistered
/// when `stop` returns unless a task outlived the runner (an unload cannot be refused: it
/// waits for every socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReport {
    /// Tasks whose futures were not dropped (the runner did not quiesce).
    pub tasks_left: usize,
    /// Connections still counted as served.
    pub connections_left: usize,
}

impl StopReport {
    /// True when nothing was left running.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.tasks_left == 0 && self.connections_left == 0
    }
}

impl fmt::Display for StopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str("no leaks");
        }
        write!(
            f,
            "LEAKS: {} tasks, {} connections",
            self.tasks_left, self.connections_left,
        )
    }
}

/// Stops the service ([`SERVICE`]): every task is dropped (closing the listener and all
/// connections), the runner becomes quiescent, then the WSK client deregisters, waiting as
/// long as sockets take to close (it logs every 5 s while it waits). Nothing of the service
/// runs after it returns; the report says what, if anything, was left.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverUnload`).
pub fn stop() -> StopReport {
    let report = SERVICE.stop();
    free_spare_buffers();
    StopReport {
        tasks_left: report.tasks_left,
        connections_left: live_connections(),
    }
}

/// Connections being served right now.
///
/// # IRQL
/// Any.
#[must_use]
pub fn live_connections() -> usize {
    LIVE_CONNECTIONS.load(Ordering::Acquire)
}

/// Accepts until the listener closes (at [`stop`]), serving or shedding each connection.
async fn accept_loop(
    client: &'static WskClient,
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    event_driven: bool,
) {
    let mut reserve = Reserve::Missing;
    reserve.refill(client).await;
    let mut failures = Failures::new();
    let mut limit_resets = Streak::new();
    // Event-driven: connections come through the accept callback where the provider has it.
    let accept_events = event_driven && enable_accept_events(&listener, max_connections);
    loop {
        let accepted = if accept_events {
            listener.accept_events().await
        } else {
            listener.accept().await
        };
        match accepted {
            Ok((stream, peer)) => {
                failures.reset();
                if admit(stream, max_connections, idle_timeout, event_driven) {
                    limit_resets.reset();
                } else if let Some(count) = limit_resets.count() {
                    kprint!(
                        "wskecho: connection limit {max_connections} reached; reset {peer} \
                         ({count} in a row)\n"
                    );
                }
                reserve.refill(client).await;
            }
            Err(e) if e.kind() == ErrorKind::InvalidState => {
                kprint!("wskecho: listener closed: {e}\n");
                return;
            }
            Err(e) if e.kind() == ErrorKind::NoResources => {
                if let Some(count) = failures.count() {
                    kprint!("wskecho: {e} ({count} in a row); resetting waiting connections\n");
                }
                let shed = reserve.give_back().await && shed_one(&listener).await;
                if !shed && let Some(wait) = failures.backoff() {
                    wsk::sleep(wait).await;
                }
                reserve.refill(client).await;
            }
            Err(e) => {
                // A connection that died before it was accepted, or a provider hiccup: keep
                // serving, but wait longer after each failure in a row.
                if let Some(count) = failures.count() {
                    kprint!("wskecho: {e} ({count} in a row)\n");
                }
                if let Some(wait) = failures.backoff() {
                    wsk::sleep(wait).await;
                }
            }
        }
    }
}

/// Accepts the connection waiting in the backlog into the room the reserve left, and resets
/// it. False when none came within [`SHED_WAIT`] or the accept still failed.
async fn shed_one(listener: &TcpListener) -> bool {
    match wsk::net::timeout(SHED_WAIT, listener.accept()).await {
        Ok((stream, _peer)) => {
            // An abortive close: the peer sees a reset at once.
            stream.abort().await;
            true
        }
        Err(_) => false,
    }
}

/// The reserve: a socket held only to be given back when the provider runs out of room to
/// accept, so the connection waiting in the backlog can be accepted and refused instead of
/// left hanging. A datagram socket on the loopback address is the cheapest kind to hold.
enum Reserve {
    /// Held, ready to give back.
    Held(UdpSocket),
    /// Given back, or the provider was out of resources when asked: ask again later.
    Missing,
    /// The provider cannot make one (no datagram sockets, as under Wine): shedding falls
    /// back to backing off, and nobody asks again.
    Unavailable,
}

impl Reserve {
    /// Takes a reserve socket if one is missing.
    async fn refill(&mut self, client: &WskClient) {
        if !matches!(self, Self::Missing) {
            return;
        }
        let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        *self = match UdpSocket::bind(client, loopback).await {
            Ok(socket) => Self::Held(socket),
            Err(e) if e.kind() == ErrorKind::NoResources => Self::Missing,
            Err(_) => Self::Unavailable,
        };
    }

    /// Gives the reserve socket back (closes it); false when none was held.
    async fn give_back(&mut self) -> bool {
        match core::mem::replace(self, Self::Missing) {
            Self::Held(socket) => {
                socket.close().await;
                true
            }
            Self::Missing => false,
            Self::Unavailable => {
                *self = Self::Unavailable;
                false
            }
        }
    }
}

/// Serves `stream` in its own task, or resets it (returning false) when the limit is reached.
/// Without a task slot or a buffer it is reset too (logged by its task).
fn admit(
    stream: TcpStream,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    event_driven: bool,
) -> bool {
    if LIVE_CONNECTIONS.fetch_add(1, Ordering::AcqRel) >= max_connections {
        LIVE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
        // Reset without waiting (dropping the stream would close it gracefully): the client
        // sees a reset.
        drop(stream.abort());
        return false;
    }
    // The guard moves into the task's future, so the count drops however the task ends:
    // finished, dropped at shutdown before its first poll, or never spawned (the future, and
    // the stream in it, is dropped: a reset).
    let live = Live;
    if let Err(e) = RUNNER.spawn(
        &CONNECTION_TASKS,
        serve(stream, live, idle_timeout, event_driven),
    ) {
        kprint!("wskecho: no task for a connection ({e:?}); reset it\n");
    }
    true
}

/// Connections that receive through WSK event callbacks, and those that asked for them but
/// got receive IRPs (no event callbacks in the provider, or a refusal): logged now and then.
static EVENT_DRIVEN: AtomicUsize = AtomicUsize::new(0);
static EVENTS_REFUSED: AtomicUsize = AtomicUsize::new(0);

/// Turns on the listener's accept events (`TcpListener::enable_event_driven_accepts`) with a
/// queue as long as the connection limit (at most [`ACCEPT_QUEUE_MAX`]): that many spare
/// socket objects are allocated now (about 1 KiB each on the host kernel), so that a burst of
/// connections the limit admits waits for the accept loop instead of being refused (the
/// provider takes every connection out of the listen backlog as it arrives). False (logged)
/// when it accepts with IRPs: the provider has no accept events (Wine 8), or refused.
fn enable_accept_events(listener: &TcpListener, max_connections: usize) -> bool {
    // The accepted streams' receive events are on from their acceptance.
    match listener.enable_event_driven_accepts(ACCEPT_QUEUE_MAX.min(max_connections.max(1))) {
        Ok(true) => {
            kprint!("wskecho: connections accepted through accept events\n");
            true
        }
        Ok(false) => {
            kprint!("wskecho: the provider has no accept events; accept IRPs\n");
            false
        }
        Err(e) => {
            kprint!("wskecho: accept events refused ({e}); accept IRPs\n");
            false
        }
    }
}

/// Turns on `stream`'s receive events; false (logged now and then) when it receives with IRPs.
fn enable_events(stream: &TcpStream) -> bool {
    match stream.enable_receive_events() {
        Ok(true) => {
            let count = EVENT_DRIVEN.fetch_add(1, Ordering::Relaxed) + 1;
            if count.is_power_of_two() {
                kprint!("wskecho: {count} connection(s) event-driven so far\n");
            }
            true
        }
        outcome => {
            let count = EVENTS_REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
            if count.is_power_of_two() {
                match outcome {
                    Err(e) => kprint!("wskecho: receive events refused ({e}); receive IRPs\n"),
                    _ => kprint!("wskecho: the provider has no receive events; receive IRPs\n"),
                }
            }
            false
        }
    }
}

/// Counts (and now and then logs) a connection closed for being idle past `limit`.
fn note_idle_close(limit: Duration) {
    let count = IDLE_CLOSES.fetch_add(1, Ordering::Relaxed) + 1;
    if count.is_power_of_two() {
        kprint!(
            "wskecho: closing a connection idle for {} ms ({count} so far)\n",
            limit.as_millis()
        );
    }
}

/// Counts a connection as live until its task ends or is dropped.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Echoes until the peer closes or stays silent past `idle_timeout`, then disconnects
/// gracefully (bounded; reset past the limit, or close where the provider has no disconnect,
/// as under Wine) and closes.
async fn serve(stream: TcpStream, live: Live, idle_timeout: Option<Duration>, event_driven: bool) {
    // Event-driven where the provider has event callbacks; receive IRPs otherwise (Wine 8,
    // or a refusal).
    if event_driven && enable_events(&stream) {
        serve_events(stream, live, idle_timeout).await;
        return;
    }
    let Ok(small) = IoBuf::with_capacity(SMALL_BUFFER_SIZE) else {
        kprint!("wskecho: out of memory for a connection buffer; reset the connection\n");
        // An abortive close: the peer sees a reset.
        stream.abort().await;
        return;
    };
    let mut buffers = Buffers {
        small: Some(small),
        bulk: None,
    };
    // One loop per case, chosen once: a connection without an idle timeout builds no
    // deadline, and tests for none, per message.
    let end = match idle_timeout {
        None => echo_in_place(&stream, &mut buffers).await,
        // Cancelled through WSK at the deadline, buffer kept; where the cancel is ignored
        // (Wine) the deadline closes the socket a grace period later (`wsk::net::timeout`).
        Some(limit) => {
            echo_messages(&stream, &mut buffers, |stream, buf| {
                wsk::net::timeout(limit, stream.recv(buf))
            })
            .await
        }
    };
    drop(buffers);
    match end {
        End::PeerClosed => finish(stream).await,
        End::Idle => {
            note_idle_close(idle_timeout.unwrap_or_default());
            // A graceful close, bounded by the stream's close limit.
            stream.close().await;
        }
        // Reset or aborted by the peer, or a send failed: nothing left to say.
        End::Failed => stream.close().await,
    }
}

/// How a connection's echo loop ([`echo_messages`]) ended.
enum End {
    /// The peer sent FIN: disconnect gracefully, then close.
    PeerClosed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// A receive or send failed.
    Failed,
}

/// Echoes each message `receive` gets back to the peer until the peer closes, stays silent
/// past a deadline `receive` applies (`TimedOut`), or an operation fails. The buffers are
/// back in `buffers` when it returns.
async fn echo_messages<'s, R>(
    stream: &'s TcpStream,
    buffers: &mut Buffers,
    receive: impl Fn(&'s TcpStream, IoBuf) -> R,
) -> End
where
    R: Future<Output = (wsk::Result<usize>, IoBuf)>,
{
    // Both buffers are back in `buffers` after each round, so there always is one.
    while let Some(buf) = buffers.for_receive() {
        let (received, buf) = receive(stream, buf).await;
        let received = match received {
            Ok(0) => {
                buffers.put_back(buf, 0);
                return End::PeerClosed;
            }
            Ok(received) => received,
            Err(e) => {
                buffers.put_back(buf, 0);
                return if e.kind() == ErrorKind::TimedOut {
                    End::Idle
                } else {
                    End::Failed
                };
            }
        };
        let (sent, buf) = stream.send(buf).await;
        buffers.put_back(buf, received);
        if sent.is_err() {
            return End::Failed;
        }
    }
    End::PeerClosed
}

/// [`echo_messages`] without a deadline, through one `StreamTransfer` kept for the
/// connection: each message is received into and sent from the buffer the transfer holds,
/// re-armed in place rather than moved through two futures built per message. The buffers
/// are back in `buffers` when it returns.
async fn echo_in_place(stream: &TcpStream, buffers: &mut Buffers) -> End {
    let Some(buf) = buffers.for_receive() else {
        return End::PeerClosed;
    };
    let mut transfer = stream.stream_transfer(buf);
    let end = loop {
        let received = match transfer.recv().await {
            Ok(0) => break End::PeerClosed,
            Ok(received) => received,
            Err(_) => break End::Failed,
        };
        if transfer.send().await.is_err() {
            break End::Failed;
        }
        // The rare cases of `Buffers::put_back`: a bulk buffer, or a small one filled.
        if let Some(buf) = transfer.buf()
            && Buffers::switches(buf, received)
        {
            switch_buffers(&mut transfer, buffers, received);
        }
    };
    // Completed operations only: the buffer is in the transfer.
    if let Some(buf) = transfer.into_buf() {
        buffers.put_back(buf, 0);
    }
    end
}

/// Gives the transfer's buffer back to `buffers` after a receive of `received` bytes and puts
/// the one for the next receive in its place ([`Buffers::put_back`]'s rare cases).
#[cold]
#[inline(never)]
fn switch_buffers(transfer: &mut StreamTransfer<'_>, buffers: &mut Buffers, received: usize) {
    if let Some(buf) = transfer.take_buf() {
        buffers.put_back(buf, received);
    }
    if let Some(next) = buffers.for_receive() {
        // No operation is in flight between messages: the transfer takes it.
        if let Err(next) = transfer.replace_buf(next) {
            buffers.put_back(next, 0);
        }
    }
}

/// A receive-IRP connection's buffers: its own small one, which an idle connection's posted
/// receive holds, and a bulk one borrowed from [`SPARE_BUFFERS`] while receives fill the
/// small one. An idle connection thus holds [`SMALL_BUFFER_SIZE`] bytes, not [`BUFFER_SIZE`].
struct Buffers {
    /// Taken out while a receive or send holds it.
    small: Option<IoBuf>,
    /// Taken out while a receive or send holds it.
    bulk: Option<IoBuf>,
}

impl Buffers {
    /// The buffer for the next receive: the bulk one while the connection has one, else the
    /// small one; `None` only while one is lent. The caller gives it back with
    /// [`Buffers::put_back`].
    fn for_receive(&mut self) -> Option<IoBuf> {
        self.bulk.take().or_else(|| self.small.take())
    }

    /// Gives back the buffer [`Buffers::for_receive`] lent, after a receive of `received`
    /// bytes (0 at the end): a small buffer the receive filled borrows a bulk one for the
    /// next receive (if one can be had); a bulk one whose receive would have fitted the
    /// small one goes back to the spares, so the connection's next receive, which may wait
    /// for a long time, holds only the small one.
    #[expect(
        clippy::inline_always,
        reason = "once per message: the common case (a small message back in the small buffer) is two stores, not a call"
    )]
    #[inline(always)]
    fn put_back(&mut self, buf: IoBuf, received: usize) {
        if Self::switches(&buf, received) {
            self.put_back_switching(buf, received);
            return;
        }
        // The small buffer is out (it was lent): nothing to drop in its place, and no drop
        // code for the common case (an assignment would emit it).
        if let Some(unexpected) = self.small.replace(buf) {
            drop_unexpected(unexpected);
        }
    }

    /// Whether `buf`, back from a receive of `received` bytes, is one of the rare cases
    /// ([`Buffers::put_back_switching`]): a bulk buffer, or a small one the receive filled.
    #[expect(
        clippy::inline_always,
        reason = "once per message, in the in-place loop and in put_back: two compares"
    )]
    #[inline(always)]
    fn switches(buf: &IoBuf, received: usize) -> bool {
        buf.capacity() == BUFFER_SIZE || received == SMALL_BUFFER_SIZE
    }

    /// [`Buffers::put_back`]'s rare cases: a bulk buffer back, or a small one the receive
    /// filled (which borrows a bulk one for the next receive).
    #[cold]
    #[inline(never)]
    fn put_back_switching(&mut self, buf: IoBuf, received: usize) {
        if buf.capacity() == BUFFER_SIZE {
            if received > SMALL_BUFFER_SIZE {
                self.bulk = Some(buf);
            } else {
                give_back_buffer(buf);
            }
            return;
        }
        self.small = Some(buf);
        if received == SMALL_BUFFER_SIZE {
            self.bulk = take_buffer();
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if let Some(bulk) = self.bulk.take() {
            give_back_buffer(bulk);
        }
    }
}

/// Frees a small buffer found in place when the lent one came back: never expected (the
/// small buffer is out while a receive or send holds it).
#[cold]
#[inline(never)]
fn drop_unexpected(buf: IoBuf) {
    debug_assert!(false, "two small buffers for one connection");
    drop(buf);
}

/// Bulk buffers of connections that went idle, for the next connection that has data: an
/// idle event-driven connection holds no buffer (its data waits in WSK's retained
/// indications), and an idle receive-IRP connection only its small one ([`Buffers`]), so the
/// nonpaged pool of N idle connections is theirs, not N bulk buffers. Lock-free
/// (`wsk::net::Spares`): an event-driven ping-pong takes and gives back one per message.
static SPARE_BUFFERS: Spares<IoBuf, SPARE_BUFFERS_KEPT> = Spares::new();
/// Spare buffers kept at most (the rest are freed).
const SPARE_BUFFERS_KEPT: usize = 8;

/// A spare receive buffer, if one is at hand (what the event-driven receive callback fills:
/// it allocates nothing).
fn take_spare_buffer() -> Option<IoBuf> {
    SPARE_BUFFERS.take()
}

/// A receive buffer: a spare one, or a new one.
fn take_buffer() -> Option<IoBuf> {
    SPARE_BUFFERS
        .take()
        .or_else(|| IoBuf::with_capacity(BUFFER_SIZE).ok())
}

/// Keeps `buf` for another connection, or frees it when enough are kept.
fn give_back_buffer(buf: IoBuf) {
    drop(SPARE_BUFFERS.give(buf));
}

/// Frees the spare buffers (at [`stop`], once no connection task is left).
fn free_spare_buffers() {
    SPARE_BUFFERS.clear();
}

/// [`serve`] for a connection with receive events: it holds a buffer only while data is
/// indicated. Idle, it waits with `TcpStream::recv_events_pooled`, which has the receive
/// callback copy the data into a spare buffer ([`take_spare_buffer`]) in place (or takes one,
/// [`take_buffer`], when none was at hand); while more is
/// indicated it receives into the buffer it holds with `TcpStream::recv_events`, and gives
/// the buffer back when no more data waits.
async fn serve_events(stream: TcpStream, _live: Live, idle_timeout: Option<Duration>) {
    let mut held: Option<IoBuf> = None;
    loop {
        let (received, buf) = if let Some(buf) = held.take() {
            let (received, buf) = stream.recv_events(buf).await;
            (received, Some(buf))
        } else if let Some(limit) = idle_timeout {
            let waited = wsk::executor::timeout(
                limit,
                stream.recv_events_pooled(take_spare_buffer, take_buffer),
            );
            let Ok(received) = waited.await else {
                note_idle_close(limit);
                break;
            };
            received
        } else {
            stream
                .recv_events_pooled(take_spare_buffer, take_buffer)
                .await
        };
        let Some(buf) = buf else {
            kprint!("wskecho: out of memory for a connection buffer; reset the connection\n");
            // An abortive close: the peer sees a reset.
            stream.abort().await;
            return;
        };
        match received {
            Ok(0) => {
                give_back_buffer(buf);
                break;
            }
            Ok(_) => {}
            Err(_) => {
                give_back_buffer(buf);
                stream.close().await;
                return;
            }
        }
        let (sent, buf) = stream.send(buf).await;
        if sent.is_err() {
            give_back_buffer(buf);
            stream.close().await;
            return;
        }
        if stream.has_indicated() {
            held = Some(buf);
        } else {
            give_back_buffer(buf);
        }
    }
    finish(stream).await;
}

/// The end of a served connection: a bounded graceful disconnect, then the close.
async fn finish(stream: TcpStream) {
    match stream.disconnect_within(DISCONNECT_LIMIT).await {
        // Unsupported: no WskDisconnect (Wine), close does it. A reset after the peer's FIN
        // is the peer's choice, not news.
        Err(e)
            if !matches!(
                e.kind(),
                ErrorKind::Unsupported | ErrorKind::ConnectionReset
            ) =>
        {
            kprint!("wskecho: {e}\n");
        }
        _ => {}
    }
    stream.close().await;
}

/// Failed accepts in a row: which to log and how long to wait before the next accept.
struct Failures {
    in_a_row: Streak,
    next_wait: Duration,
}

impl Failures {
    const fn new() -> Self {
        Self {
            in_a_row: Streak::new(),
            next_wait: BACKOFF_FIRST,
        }
    }

    /// Counts a failure; see [`Streak::count`].
    fn count(&mut self) -> Option<u32> {
        self.in_a_row.count()
    }

    /// How long to wait before accepting again after the failure just counted: nothing for
    /// the first [`IMMEDIATE_RETRIES`] in a row, then [`BACKOFF_FIRST`] doubling up to
    /// [`BACKOFF_LAST`].
    fn backoff(&mut self) -> Option<Duration> {
        if self.in_a_row.0 <= IMMEDIATE_RETRIES {
            return None;
        }
        let wait = self.next_wait;
        self.next_wait = (wait * 2).min(BACKOFF_LAST);
        Some(wait)
    }

    /// An accept succeeded: the next failure starts a new streak.
    fn reset(&mut self) {
        *self = Self::new();
    }
}

/// A repeating event counted in a row, logged ever more rarely: the 1st, 2nd, 4th, 8th...
/// occurrence. With the accept backoff that is about a line a second at most, and it needs no
/// clock.
struct Streak(u32);

impl Streak {
    const fn new() -> Self {
        Self(0)
    }

    /// Counts one; `Some(count)` when this one is to be logged.
    fn count(&mut self) -> Option<u32> {
        self.0 = self.0.saturating_add(1);
        self.0.is_power_of_two().then_some(self.0)
    }

    /// The streak ended.
    fn reset(&mut self) {
        self.0 = 0;
    }
}
