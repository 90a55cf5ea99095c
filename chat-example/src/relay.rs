//! The chat relay: one listener task and one task per client on one runner.
//!
//! Each client has a seat: a slot in `SEATS` with its own bounded queue of lines (a
//! [`Channel`]) and its own kick signal (a [`Notify`]). A client's task reads its lines and
//! copies each into the queue of every other seated client with `try_send`, which never waits:
//! a full queue gets its client dropped (its seat marked, its task kicked, its connection
//! reset), so one slow reader never slows the others. The same task writes the lines queued
//! for its client. Whichever ends first (the reading, the writing, or a kick) ends the client.
//! As in `tokio_chat`, "too slow" is measured against bursts too: more than [`QUEUE`] lines
//! arriving at once from one client can fill a reading client's queue before its task sends
//! them.
//!
//! Memory, all static (nonpaged in a `.sys`): the queues, [`MAX_CLIENTS`] x [`QUEUE`] lines of
//! [`MAX_LINE`] bytes (about 1 MiB), and the task pool; per connection, three 1 KiB I/O buffers
//! from the kit (the reader's, a line's, the writer's).
//!
//! Settings (the service's `Parameters` registry key): `Port` (`REG_DWORD`, default
//! [`DEFAULT_PORT`]), `BindAddress` (`REG_SZ`, default `127.0.0.1`), `IdleSeconds`
//! (`REG_DWORD` >= 1, default 300), `Runner` (`REG_SZ` `dpc` or `passive`, any case, default
//! `dpc`; see [`parse_runner`]).
#![forbid(unsafe_code)]

use core::future::{Future, poll_fn};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use core::time::Duration;

use wsk::driver::{Entry, Failure};
use wsk::executor::sync::{Channel, Notify, RecvFuture, SpinMutex};
use wsk::net::io::BufReader;
use wsk::settings::Error;
use wsk::settings::ErrorKind::Invalid;
use wsk::{
    Budget, ErrorKind, IoBuf, Runner, RunnerKind, Service, TaskPool, TcpListener, TcpStream,
};
use wsk::{kprint, sleep};

/// Clients served at once; a client past them is refused (its connection reset).
pub const MAX_CLIENTS: usize = 16;
/// Lines queued for one client before it counts as too slow and is dropped.
pub const QUEUE: usize = 64;
/// The longest line relayed, its `\n` included; a longer one ends its sender's connection.
pub const MAX_LINE: usize = 1024;
/// The port when `Port` is not set.
pub const DEFAULT_PORT: u16 = 7008;
/// The idle timeout when `IdleSeconds` is not set.
pub const DEFAULT_IDLE: Duration = Duration::from_mins(5);

static RUNNER: Runner = Runner::new(Budget::DEFAULT);
/// The WSK client and the runner: [`start`] starts it, [`stop`] (and `DriverUnload`) stops it,
/// runner first.
pub static SERVICE: Service = Service::new("wskchat", &[&RUNNER]);
/// The listener's task and one per client (a client's task is about 1.6 KiB; the kit checks
/// at compile time that it fits).
static TASKS: TaskPool<2048, { MAX_CLIENTS + 1 }> = TaskPool::new();
/// Who sits where; relays, kicks and departures take this lock, so a line is never queued for
/// a seat that is being emptied.
static SEATS: SpinMutex<[Seat; MAX_CLIENTS]> = SpinMutex::new([Seat::Free; MAX_CLIENTS]);
/// Each seat's queue of lines from the others.
static QUEUES: [Channel<Line, QUEUE>; MAX_CLIENTS] = [const { Channel::new() }; MAX_CLIENTS];
/// Each seat's kick: notified when its client is dropped for a full queue.
static KICKS: [Notify; MAX_CLIENTS] = [const { Notify::new() }; MAX_CLIENTS];

/// A seat's state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seat {
    /// Nobody sits here.
    Free,
    /// A client sits here and receives lines.
    Taken,
    /// Its client was too slow: it receives nothing more and its task is ending.
    Dropped,
}

/// One line, `\n` included, copied by value into each queue (no allocation).
#[derive(Clone, Copy)]
struct Line {
    len: usize,
    bytes: [u8; MAX_LINE],
}

/// Parses a `Runner` value: `dpc` (tasks run in a DPC, the default) or `passive` (tasks run
/// on a system thread at `PASSIVE_LEVEL`, which Wine can run: it has no DPCs), in any case.
#[must_use]
pub fn parse_runner(name: &str) -> Option<RunnerKind> {
    if name.eq_ignore_ascii_case("dpc") {
        Some(RunnerKind::Dpc)
    } else if name.eq_ignore_ascii_case("passive") {
        Some(RunnerKind::Passive)
    } else {
        None
    }
}

/// Starts the relay (in `DriverEntry`): reads the settings, registers with WSK, binds the
/// listener (so a port in use fails the load), starts the runner of the kind `Runner` names
/// and the accept loop, and logs `wskchat: listening on <addr> with the <kind> runner`.
///
/// # Errors
/// The setting, registration, bind, runner start or spawn that failed; `wsk::driver_entry!`
/// logs it and stops the service.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub fn start(entry: &Entry<'_>) -> Result<(), Failure> {
    let settings = entry.parameters()?;
    let port = settings.dword_as("Port", "a port")?.unwrap_or(DEFAULT_PORT);
    let ip: Option<IpAddr> = settings.parsed("BindAddress", "an IP address")?;
    let idle = settings.dword_in("IdleSeconds", 1..=u32::MAX)?;
    let idle = idle.map_or(DEFAULT_IDLE, |seconds| Duration::from_secs(seconds.into()));
    let mut text = [0u8; 16];
    let runner = match settings.string("Runner", &mut text)? {
        None => RunnerKind::Dpc,
        Some(name) => parse_runner(name).ok_or(Error::new("Runner", Invalid("dpc or passive")))?,
    };
    let addr = SocketAddr::new(ip.unwrap_or(Ipv4Addr::LOCALHOST.into()), port);
    let client = SERVICE.start(entry.driver())?;
    let listener = wsk::executor::block_on(TcpListener::bind(client, addr))?;
    RUNNER.start(runner)?;
    let _detached = RUNNER.spawn(&TASKS, accept_loop(listener, idle))?;
    kprint!(
        Info,
        "wskchat: listening on {addr} with the {runner:?} runner\n"
    );
    Ok(())
}

/// Stops the relay (in `DriverUnload`): every task is dropped, closing the listener and every
/// connection, then the WSK client deregisters. Logs `wskchat: unload complete: <report>`.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub fn stop() {
    kprint!(Info, "wskchat: unload complete: {}\n", SERVICE.stop());
}

/// Seats each accepted client and spawns its task, until the listener closes (at unload).
async fn accept_loop(listener: TcpListener, idle: Duration) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => match SeatGuard::take() {
                // A spawn error drops the future, and with it the stream and the seat.
                Some(seat) => drop(RUNNER.spawn(&TASKS, serve(stream, seat, idle))),
                None => stream.abort().await,
            },
            Err(e) if e.kind() == ErrorKind::InvalidState => return,
            // A connection that died in the backlog, or the provider out of resources.
            Err(_) => sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Serves one client until it leaves, idles, sends a line too long, fails, or is kicked; then
/// closes its connection (a reset for a kicked client, which reads too slowly for a graceful
/// close to be quick) and only then gives up its seat (so seats never outnumber tasks).
async fn serve(stream: TcpStream, seat: SeatGuard, idle: Duration) {
    let ended = {
        let kick = pin!(kicked(seat.0));
        let reading = pin!(read_lines(&stream, seat.0, idle));
        let writing = pin!(write_lines(&stream, seat.0));
        first_of([kick, reading, writing]).await
    };
    if ended == 0 {
        stream.abort().await;
    } else {
        stream.close().await;
    }
    drop(seat);
}

/// Reads lines and relays each to the other seats; returns at the end of the stream, on an
/// error, a line longer than [`MAX_LINE`], or `idle` without a whole line.
async fn read_lines(stream: &TcpStream, from: usize, idle: Duration) {
    let (Ok(mut reader), Ok(mut line)) = (
        BufReader::new(stream, MAX_LINE),
        IoBuf::with_capacity(MAX_LINE),
    ) else {
        return;
    };
    // `read_until`, not `next_line`: the line goes on byte for byte, "\r\n" included.
    // The executor's timeout, not `wsk_net::timeout` (which takes socket operations, not this
    // buffered read): it drops the read, cancelling its receive; the connection closes anyway.
    while let Ok(Ok(1..)) = wsk::executor::timeout(idle, reader.read_until(b'\n', &mut line)).await
    {
        if line.last() != Some(&b'\n') {
            return; // the end of the stream within a line: not relayed, as tokio_chat
        }
        relay(from, &line);
        line.clear();
    }
}

/// Queues `text` (one whole line) for every seated client but its sender; a client whose
/// queue is full is dropped and kicked. Never inlined (nor are [`discard_one`] and
/// [`copy_next_line`]): its 1 KiB copies of a line stay in a stack frame of their own, as a
/// frame over 4 KiB needs `__chkstk`, which the kernel does not export.
#[inline(never)]
fn relay(from: usize, text: &[u8]) {
    let mut line = Line {
        len: text.len(),
        bytes: [0; MAX_LINE],
    };
    line.bytes[..text.len()].copy_from_slice(text);
    let mut seats = SEATS.lock();
    let others = seats.iter_mut().zip(QUEUES.iter().zip(&KICKS)).enumerate();
    for (_, (seat, (queue, kick))) in others.filter(|(to, _)| *to != from) {
        if *seat == Seat::Taken && queue.try_send(line).is_err() {
            *seat = Seat::Dropped;
            kick.notify_waiters();
            kprint!(Warning, "wskchat: dropped a client, its queue was full\n");
        }
    }
}

/// Sends the lines queued for seat `to`; returns when a send fails.
async fn write_lines(stream: &TcpStream, to: usize) {
    let Ok(mut out) = IoBuf::with_capacity(MAX_LINE) else {
        return;
    };
    loop {
        let mut next = pin!(QUEUES[to].recv());
        if !poll_fn(|cx| copy_next_line(next.as_mut(), cx, &mut out)).await {
            return;
        }
        let (sent, buf) = stream.send(out).await;
        out = buf;
        if sent.is_err() {
            return;
        }
        out.clear();
    }
}

/// Polls for the next queued line and copies it into `out`. Never inlined: see [`relay`] (a
/// received line passes through several 1 KiB temporaries).
#[inline(never)]
fn copy_next_line(
    next: Pin<&mut RecvFuture<'_, Line, QUEUE>>,
    cx: &mut Context<'_>,
    out: &mut IoBuf,
) -> Poll<bool> {
    next.poll(cx)
        .map(|line| line.is_some_and(|line| out.extend_from_slice(&line.bytes[..line.len]).is_ok()))
}

/// Completes once seat `index` is marked [`Seat::Dropped`].
async fn kicked(index: usize) {
    loop {
        // Created before the check: a kick in between still completes it.
        let kick = KICKS[index].notified();
        if SEATS.lock()[index] == Seat::Dropped {
            return;
        }
        kick.await;
    }
}

/// Polls `futures` together until one of them completes; returns its index.
async fn first_of(mut futures: [Pin<&mut (dyn Future<Output = ()> + Send)>; 3]) -> usize {
    poll_fn(|cx| {
        let done = futures
            .iter_mut()
            .position(|future| future.as_mut().poll(cx).is_ready());
        done.map_or(Poll::Pending, Poll::Ready)
    })
    .await
}

/// A taken seat; dropping it (when its task ends, or is dropped at unload) empties its queue
/// and frees it.
struct SeatGuard(usize);

impl SeatGuard {
    /// Takes a free seat, if any.
    fn take() -> Option<Self> {
        let mut seats = SEATS.lock();
        let index = seats.iter().position(|seat| *seat == Seat::Free)?;
        seats[index] = Seat::Taken;
        Some(Self(index))
    }
}

impl Drop for SeatGuard {
    fn drop(&mut self) {
        let mut seats = SEATS.lock();
        // Under the lock no relay can queue more: the next client here starts empty.
        while discard_one(&QUEUES[self.0]) {}
        seats[self.0] = Seat::Free;
    }
}

/// Takes one line out of `queue` and drops it; false when it was empty. Never inlined: see
/// [`relay`].
#[inline(never)]
fn discard_one(queue: &Channel<Line, QUEUE>) -> bool {
    queue.try_recv().is_ok()
}
