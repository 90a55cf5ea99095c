//! The echo service (RFC 862): one listener task and one task per connection on one runner.
//! Nothing here touches an IRP, a completion routine or an `NTSTATUS`: `wsk-net` owns those.
//!
//! Lifecycle: [`start`] (from `DriverEntry`) registers the WSK client, starts the runner and
//! spawns the listener; [`stop`] (from `DriverUnload`) shuts the runner down, which drops every
//! task and so closes the listener and every connection, then deregisters the client.

use core::cell::UnsafeCell;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use core::time::Duration;

use wsk_executor::{Budget, Runner, RunnerKind, TaskPool};
use wsk_net::{Driver, ErrorKind, IoBuf, TcpListener, TcpStream, WskClient};
use wsk_sys::kprint;

/// The most connections served at once (the task pool's size); the configured limit may be
/// lower.
pub const MAX_CONNECTIONS: usize = 1024;
/// Receive buffer per connection.
const BUFFER_SIZE: usize = 16 * 1024;
/// How long a graceful disconnect may take before the connection is reset instead.
const DISCONNECT_LIMIT: Duration = Duration::from_secs(5);

/// What the service does, from the registry (Windows, Wine) or command-line flags (host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Where tasks are polled: a DPC, or a passive system thread (Wine).
    pub runner: RunnerKind,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
}

/// Why [`start`] failed.
#[derive(Debug, Clone, Copy)]
pub enum StartError {
    /// WSK registration failed.
    Register(wsk_net::Error),
    /// The runner could not start.
    Runner(wsk_executor::StartError),
    /// The listener task could not be spawned.
    Spawn(wsk_executor::SpawnError),
    /// [`start`] was called twice.
    AlreadyStarted,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Register(e) => write!(f, "WSK registration failed: {e}"),
            Self::Runner(e) => write!(f, "the runner did not start: {e}"),
            Self::Spawn(e) => write!(f, "the listener task was not spawned: {e:?}"),
            Self::AlreadyStarted => f.write_str("the service is already running"),
        }
    }
}

static RUNNER: Runner = Runner::new(Budget::DEFAULT);
static LISTENER_TASK: TaskPool<4096, 1> = TaskPool::new();
static CONNECTION_TASKS: TaskPool<2048, MAX_CONNECTIONS> = TaskPool::new();
static CLIENT: ClientCell = ClientCell::new();
static LIVE_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Starts the service. Returns once the listener task is spawned; it binds asynchronously and
/// logs `wskecho: listening on <addr>` (or why it could not).
///
/// # Errors
/// See [`StartError`]; on error nothing is left running or registered.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverEntry`).
pub fn start(driver: Driver, settings: Settings) -> Result<(), StartError> {
    let client = WskClient::register(driver).map_err(StartError::Register)?;
    let Some(client) = CLIENT.set(client) else {
        return Err(StartError::AlreadyStarted);
    };
    if let Err(e) = RUNNER.start(settings.runner) {
        let _ = stop();
        return Err(StartError::Runner(e));
    }
    let max = settings.max_connections.clamp(1, MAX_CONNECTIONS);
    if let Err(e) = RUNNER.spawn(&LISTENER_TASK, listen(client, settings.listen, max)) {
        let _ = stop();
        return Err(StartError::Spawn(e));
    }
    Ok(())
}

/// What [`stop`] left behind; all zero for a clean unload. The WSK client is always
/// deregistered when `stop` returns (an unload cannot be refused: it waits for every socket).
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

impl core::fmt::Display for StopReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
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

/// Stops the service: every task is dropped (closing the listener and all connections), the
/// runner becomes quiescent, then the WSK client deregisters, waiting as long as sockets take
/// to close (it logs every 5 s while it waits). Nothing of the service runs after it returns;
/// the report says what, if anything, was left.
///
/// # IRQL
/// `PASSIVE_LEVEL` (`DriverUnload`, or `DriverEntry` undoing a failed start).
pub fn stop() -> StopReport {
    RUNNER.shutdown();
    if let Some(client) = CLIENT.take() {
        match client.deregister() {
            Ok(()) => kprint!("wskecho: deregistered\n"),
            // Only above PASSIVE_LEVEL, which DriverUnload never is.
            Err(e) => kprint!("wskecho: deregistration refused: {e}\n"),
        }
    }
    StopReport {
        tasks_left: RUNNER.live_tasks(),
        connections_left: live_connections(),
    }
}

/// Connections being served right now.
#[must_use]
pub fn live_connections() -> usize {
    LIVE_CONNECTIONS.load(Ordering::Acquire)
}

async fn listen(client: &'static WskClient, addr: SocketAddr, max_connections: usize) {
    let listener = match TcpListener::bind(client, addr).await {
        Ok(listener) => listener,
        Err(e) => {
            kprint!("wskecho: cannot listen on {addr}: {e}\n");
            return;
        }
    };
    kprint!("wskecho: listening on {addr}\n");
    let mut failures = 0u32;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                failures = 0;
                admit(stream, peer, max_connections);
            }
            Err(e) if e.kind() == ErrorKind::InvalidState => {
                kprint!("wskecho: listener closed: {e}\n");
                return;
            }
            Err(e) => {
                // A connection that died before it was accepted, or a provider hiccup: keep
                // serving, but do not spin on an error that persists.
                failures += 1;
                kprint!("wskecho: accept failed: {e}\n");
                if failures > 3 {
                    wsk_executor::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `stream` in its own task, or closes it at once when the limit is reached.
fn admit(stream: TcpStream, peer: SocketAddr, max_connections: usize) {
    if LIVE_CONNECTIONS.fetch_add(1, Ordering::AcqRel) >= max_connections {
        LIVE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
        kprint!("wskecho: connection limit {max_connections} reached; closing {peer}\n");
        // Dropping the stream closes it (asynchronously, abortively): the client sees a reset.
        drop(stream);
        return;
    }
    // The guard moves into the task's future, so the count drops however the task ends:
    // finished, dropped at shutdown before its first poll, or never spawned.
    let live = Live;
    if let Err(e) = RUNNER.spawn(&CONNECTION_TASKS, serve(stream, live)) {
        kprint!("wskecho: no task for {peer}: {e:?}\n");
    }
}

/// Counts a connection as live until its task ends or is dropped.
struct Live;

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Echoes until the peer closes, then disconnects gracefully (bounded; reset past the limit,
/// or close where the provider has no disconnect, as under Wine) and closes.
async fn serve(stream: TcpStream, _live: Live) {
    let Ok(mut buf) = IoBuf::with_capacity(BUFFER_SIZE) else {
        kprint!("wskecho: out of memory for a connection buffer\n");
        return;
    };
    loop {
        let (received, b) = stream.recv(buf).await;
        buf = b;
        match received {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                // Reset or aborted by the peer: nothing left to say.
                stream.close().await;
                return;
            }
        }
        let (sent, b) = stream.send(buf).await;
        buf = b;
        if sent.is_err() {
            stream.close().await;
            return;
        }
    }
    if let Err(e) = stream.disconnect_within(DISCONNECT_LIMIT).await
        && e.kind() != ErrorKind::Unsupported
    {
        kprint!("wskecho: disconnect: {e}\n");
    }
    stream.close().await;
}

/// The client, set once by [`start`] and taken by [`stop`] after the runner is quiescent,
/// so tasks can hold `&'static WskClient`.
struct ClientCell {
    state: AtomicU8,
    client: UnsafeCell<Option<WskClient>>,
}

// SAFETY: `state` orders every access: `set` writes while EMPTY -> SETTING, readers only get a
// reference after SET, and `take` runs after every reader (task) is gone.
unsafe impl Sync for ClientCell {}

const EMPTY: u8 = 0;
const SETTING: u8 = 1;
const SET: u8 = 2;

impl ClientCell {
    const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            client: UnsafeCell::new(None),
        }
    }

    /// Stores the client; `None` (and the client is deregistered) if one is already stored.
    fn set(&'static self, client: WskClient) -> Option<&'static WskClient> {
        if self
            .state
            .compare_exchange(EMPTY, SETTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            drop(client);
            return None;
        }
        // SAFETY: SETTING gives exclusive access; no reader exists before SET.
        let stored = unsafe { (*self.client.get()).insert(client) };
        self.state.store(SET, Ordering::Release);
        Some(stored)
    }

    /// Takes the client back. Callers guarantee no task still uses it (the runner is shut
    /// down).
    fn take(&'static self) -> Option<WskClient> {
        if self
            .state
            .compare_exchange(SET, SETTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // SAFETY: the runner is shut down, so no task holds a reference; SETTING excludes
        // other setters and takers.
        let client = unsafe { (*self.client.get()).take() };
        self.state.store(EMPTY, Ordering::Release);
        client
    }
}
