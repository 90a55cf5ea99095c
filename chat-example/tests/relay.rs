//! The chat relay driver on the host kernel, each scenario under every fault plan
//! (`wsk_host::testing::each_plan`: a fresh kernel per plan, checked for leaks and bugchecks at
//! the end), the driver loaded and unloaded in each: lines relayed byte for byte to every
//! other client and never back, a client that never reads dropped while the others go on, the
//! idle timeout, the line limit, and unload with clients connected followed by a new load.
//!
//! The driver's statics are one per process, so the scenarios take turns
//! ([`ONE_DRIVER_AT_A_TIME`]).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wsk::sys::STATUS_INVALID_PARAMETER;
use wsk_host::testing::net::{connect_client, free_loopback_port};
use wsk_host::testing::{BOUND, each_plan};
use wsk_host::{Config, Driver, Kernel, RegValue, Registry};
use wskchat::relay::{MAX_CLIENTS, MAX_LINE, QUEUE};

/// One driver per process: its runner, task pool and seats are statics.
static ONE_DRIVER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_driver_at_a_time() -> MutexGuard<'static, ()> {
    // A scenario that failed under one plan must not fail the others' lock.
    ONE_DRIVER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The loaded driver; unloaded when dropped, so a scenario that fails leaves no driver behind
/// for the next one (its statics are the process's) nor a loaded driver in a kernel that is
/// shutting down.
struct Loaded<'k> {
    kernel: &'k Kernel,
    driver: Option<Driver>,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = self.kernel.unload(driver);
        }
    }
}

/// Loads the relay on a free loopback port with `idle_seconds` (or its default), waits until
/// it listens, and returns it with its address.
fn load(kernel: &Kernel, idle_seconds: Option<u32>) -> (Loaded<'_>, SocketAddr) {
    load_on(kernel, idle_seconds, None)
}

/// [`load`] with the `Runner` setting `runner` (none: the default, DPC).
fn load_on<'k>(
    kernel: &'k Kernel,
    idle_seconds: Option<u32>,
    runner: Option<&str>,
) -> (Loaded<'k>, SocketAddr) {
    let port = free_loopback_port().expect("a free port");
    let mut registry = Registry::new().with("Parameters", "Port", RegValue::Dword(port.into()));
    if let Some(seconds) = idle_seconds {
        registry = registry.with("Parameters", "IdleSeconds", RegValue::Dword(seconds));
    }
    if let Some(runner) = runner {
        registry = registry.with("Parameters", "Runner", RegValue::Sz(runner.into()));
    }
    let listening_before = kernel.debug_log().matches("wskchat: listening on").count();
    let driver = kernel
        .load_driver(wskchat::DriverEntry, "WskChat", registry)
        .unwrap_or_else(|status| panic!("DriverEntry failed: {status:#x}\n{}", kernel.debug_log()));
    let log = kernel.debug_log();
    assert_eq!(
        log.matches("wskchat: listening on").count(),
        listening_before + 1,
        "the driver logs that it listens before DriverEntry returns:\n{log}"
    );
    let loaded = Loaded {
        kernel,
        driver: Some(driver),
    };
    (loaded, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Unloads the driver and checks the verifier found nothing.
fn unload(mut loaded: Loaded<'_>) {
    let driver = loaded.driver.take().expect("loaded");
    let report = loaded.kernel.unload(driver);
    assert!(report.is_clean(), "unload report: {report}");
    let bugchecks = loaded.kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:#?}");
}

/// A test client: lines read through a buffer, written straight to the socket.
struct Client {
    lines: BufReader<TcpStream>,
    out: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(connect_client(addr).expect("connect"))
    }

    /// A client whose receive buffer is as small as the host allows, set before it connects
    /// (so the window it offers stays small): one that never reads fills up after kilobytes.
    fn connect_with_small_window(addr: SocketAddr) -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(1).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("connect");
        Self::from_stream(socket.into())
    }

    fn from_stream(out: TcpStream) -> Self {
        out.set_read_timeout(Some(BOUND)).expect("read timeout");
        out.set_write_timeout(Some(BOUND)).expect("write timeout");
        let lines = BufReader::new(out.try_clone().expect("clone the socket"));
        Self { lines, out }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).expect("send");
    }

    /// The next line, `\n` included; fails the test on EOF or a timeout.
    fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.lines
            .read_until(b'\n', &mut line)
            .expect("read a line");
        assert!(
            line.ends_with(b"\n"),
            "the connection ended within a line: {line:?}"
        );
        line
    }

    /// Reads until the server ends the connection (EOF, or a reset when it closed abortively)
    /// and returns the lines read before, or an error if it is still open after `within`.
    fn until_closed(&mut self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        let mut lines = 0;
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("still open after {within:?} ({lines} lines read)"));
            }
            self.out.set_read_timeout(Some(left)).expect("read timeout");
            line.clear();
            match self.lines.read_until(b'\n', &mut line) {
                Ok(0) => return Ok(lines),
                Ok(_) => lines += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(lines);
                }
                Err(e) => return Err(format!("{e} ({lines} lines read)")),
            }
        }
    }
}

/// Connects `count` clients and returns them once the relay has seated every one: the last
/// sends a line, which every other receives (the listener seats clients in the order they
/// connected, before it reads the next one's lines).
fn seated_clients(addr: SocketAddr, count: usize) -> Vec<Client> {
    let mut clients: Vec<Client> = (0..count).map(|_| Client::connect(addr)).collect();
    let (last, others) = clients.split_last_mut().expect("at least one client");
    last.send(b"seated?\n");
    for other in others {
        assert_eq!(other.line(), b"seated?\n");
    }
    clients
}

/// `clients[from]` sends `line`; every other client's next line must be it, byte for byte.
fn relay(clients: &mut [Client], from: usize, line: &[u8]) {
    clients[from].send(line);
    for (to, client) in clients.iter_mut().enumerate() {
        if to != from {
            assert_eq!(client.line(), line, "client {to}, line from client {from}");
        }
    }
}

/// Unloads the driver; every client must then be closed, with nothing left unread.
fn unload_and_expect_nothing_unread(driver: Loaded<'_>, clients: &mut [Client]) {
    unload(driver);
    for (index, client) in clients.iter_mut().enumerate() {
        let unread = client
            .until_closed(BOUND)
            .unwrap_or_else(|e| panic!("client {index}: {e}"));
        assert_eq!(unread, 0, "client {index} had lines it should not have had");
    }
}

/// A line of exactly [`MAX_LINE`] bytes, `\n` included, with every other byte value in it.
fn longest_line() -> Vec<u8> {
    let mut line: Vec<u8> = (0..=255u8)
        .filter(|b| *b != b'\n')
        .cycle()
        .take(MAX_LINE - 1)
        .collect();
    line.push(b'\n');
    line
}

#[test]
fn lines_go_to_every_other_client_byte_exact_and_never_back_to_the_sender() {
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, None);
        let mut clients = seated_clients(addr, 3);
        let longest = longest_line();
        let lines: [&[u8]; 3] = [&longest, b"from b, windows-style\r\n", b"\n"];
        for (from, line) in lines.iter().enumerate() {
            relay(&mut clients, from, line);
        }
        // Each client's next line is the one client 1 sends now: none of them got its own
        // line back in between (client 2 would see its own "seated?" or empty line first).
        relay(&mut clients, 1, b"last\n");
        unload_and_expect_nothing_unread(driver, &mut clients);
    });
}

#[test]
fn the_runner_setting_picks_the_runner_and_the_passive_one_relays_too() {
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, _addr) = load(kernel, None);
        unload(driver);
        assert!(
            kernel.debug_log().contains("with the Dpc runner"),
            "the default runner is the DPC one:\n{}",
            kernel.debug_log()
        );
        // Any case, as the echo driver's `Runner`.
        let (driver, addr) = load_on(kernel, None, Some("PASSIVE"));
        assert!(
            kernel.debug_log().contains("with the Passive runner"),
            "{}",
            kernel.debug_log()
        );
        let mut clients = seated_clients(addr, 3);
        relay(&mut clients, 2, b"on a system thread\r\n");
        unload_and_expect_nothing_unread(driver, &mut clients);
    });
}

#[test]
fn a_client_that_never_reads_is_dropped_while_the_others_keep_receiving() {
    /// Lines sent between reads: well under the queue, so the reading client is never behind
    /// by a full queue.
    const BATCH: usize = QUEUE / 4;
    /// The most lines sent before the slow client must have been dropped: its queue, plus
    /// what the sockets between the relay and it can buffer.
    const MOST: usize = 64 * 1024;
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, None);
        let mut slow = Client::connect_with_small_window(addr);
        let mut clients = seated_clients(addr, 2);
        let (mut talker, mut reader) = (clients.remove(0), clients.remove(0));
        let dropped = || kernel.debug_log().contains("wskchat: dropped a client");
        let mut sent = 0;
        let mut batches_after_drop = 0;
        // Go on for a few batches past the drop: the reader must get all of them.
        while batches_after_drop < 4 {
            assert!(sent < MOST, "no client dropped after {sent} lines");
            for _ in 0..BATCH {
                let mut line = format!("{sent:08} ").into_bytes();
                line.resize(1000, b'.');
                line.push(b'\n');
                talker.send(&line);
                sent += 1;
            }
            for n in sent - BATCH..sent {
                let line = reader.line();
                assert_eq!(
                    &line[..9],
                    format!("{n:08} ").as_bytes(),
                    "the reader missed a line"
                );
            }
            if dropped() {
                batches_after_drop += 1;
            }
        }
        let got = slow
            .until_closed(BOUND)
            .unwrap_or_else(|e| panic!("the slow client was dropped but its connection is {e}"));
        assert!(
            got < sent,
            "the slow client got all {sent} lines: it was not dropped"
        );
        let log = kernel.debug_log();
        assert_eq!(
            log.matches("wskchat: dropped a client").count(),
            1,
            "only the slow client is dropped:\n{log}"
        );
        // The talker and the reader are still seated and served.
        reader.send(b"still here\n");
        assert_eq!(talker.line(), b"still here\n");
        unload(driver);
    });
}

#[test]
fn a_silent_client_is_closed_after_the_idle_timeout_and_a_talking_one_is_not() {
    const IDLE: Duration = Duration::from_secs(1);
    const TALK_EVERY: Duration = Duration::from_millis(100);
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, Some(1));
        // Timed from before the connect: the driver's idle clock starts later.
        let connected = Instant::now();
        let mut clients = seated_clients(addr, 2);
        let mut silent = clients.remove(0);
        let mut talking = clients.remove(0);
        silent
            .out
            .set_read_timeout(Some(TALK_EVERY))
            .expect("read timeout");
        let closed_after = loop {
            assert!(
                connected.elapsed() < BOUND,
                "the silent client is still open"
            );
            talking.send(b"tick\n");
            let mut line = Vec::new();
            // A graceful close: the end of the stream after the lines sent before it.
            match silent.lines.read_until(b'\n', &mut line) {
                Ok(0) => break connected.elapsed(),
                Ok(_) => assert_eq!(line, b"tick\n"),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("the silent client: {e}"),
            }
        };
        // The interrupt time moves in clock ticks: the deadline may be a tick early.
        let tick = kernel.config().clock_tick;
        assert!(
            closed_after + tick >= IDLE,
            "closed after {closed_after:?}, before {IDLE:?}"
        );
        // The talking client was never idle: it is still served.
        let mut newcomer = Client::connect(addr);
        newcomer.send(b"hello\n");
        assert_eq!(talking.line(), b"hello\n");
        talking.send(b"still here\n");
        // A tick sent before the newcomer connected may have been relayed after it was seated.
        let mut line = newcomer.line();
        while line == b"tick\n" {
            line = newcomer.line();
        }
        assert_eq!(line, b"still here\n");
        unload(driver);
    });
}

#[test]
fn a_line_longer_than_the_limit_ends_its_sender_and_is_not_relayed() {
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, None);
        let mut clients = seated_clients(addr, 2);
        let mut long = vec![b'x'; MAX_LINE];
        long.push(b'\n');
        clients[0].send(&long);
        clients[0]
            .until_closed(BOUND)
            .unwrap_or_else(|e| panic!("the sender of a long line: {e}"));
        // The other's next line is a newcomer's: nothing of the long line came before it.
        let mut newcomer = Client::connect(addr);
        newcomer.send(b"after\n");
        assert_eq!(clients[1].line(), b"after\n");
        unload(driver);
    });
}

#[test]
fn unload_with_clients_connected_is_clean_and_the_driver_loads_again() {
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, None);
        let mut clients = seated_clients(addr, 3);
        // One client with a line half sent, one that never reads with lines queued for it.
        clients[0].send(b"half a li");
        for _ in 0..QUEUE {
            clients[2].send(b"queued\n");
        }
        assert_eq!(clients[1].line(), b"queued\n");
        unload(driver);
        for (index, client) in clients.iter_mut().enumerate() {
            client
                .until_closed(BOUND)
                .unwrap_or_else(|e| panic!("client {index} after unload: {e}"));
        }
        // Loaded again in the same kernel (as Windows restarts a service): it serves anew.
        let (driver, addr) = load(kernel, None);
        let mut clients = seated_clients(addr, 2);
        clients[0].send(b"again\n");
        assert_eq!(clients[1].line(), b"again\n");
        unload(driver);
    });
}

#[test]
fn a_client_past_the_seats_is_refused_and_the_seated_go_on() {
    let _turn = one_driver_at_a_time();
    each_plan(|kernel| {
        let (driver, addr) = load(kernel, None);
        let mut clients = seated_clients(addr, MAX_CLIENTS);
        // Refused with a reset, which may come before the connect call has returned.
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let got = Client::from_stream(stream)
                    .until_closed(BOUND)
                    .unwrap_or_else(|e| panic!("the client past {MAX_CLIENTS} seats: {e}"));
                assert_eq!(got, 0, "a refused client receives nothing");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        }
        clients[0].send(b"still seated\n");
        for client in &mut clients[1..] {
            assert_eq!(client.line(), b"still seated\n");
        }
        unload(driver);
    });
}

#[test]
fn a_bad_setting_fails_the_load_naming_it_and_a_good_one_loads() {
    let _turn = one_driver_at_a_time();
    let kernel = Kernel::boot(Config::default());
    for (name, value) in [
        ("IdleSeconds", RegValue::Dword(0)),
        ("Port", RegValue::Dword(70_000)),
        ("BindAddress", RegValue::Sz("not an address".into())),
        ("Runner", RegValue::Sz("thread".into())),
        ("Runner", RegValue::Dword(1)),
    ] {
        // A service of its own per case: the registry keeps each service's values.
        let registry = Registry::new().with("Parameters", name, value);
        let status = kernel
            .load_driver(wskchat::DriverEntry, &format!("WskChatBad{name}"), registry)
            .map(drop)
            .expect_err("a bad setting fails DriverEntry");
        assert_eq!(status, STATUS_INVALID_PARAMETER, "{name}");
        let log = kernel.debug_log();
        let why = log
            .lines()
            .rfind(|line| line.starts_with("wskchat: not started: "))
            .unwrap_or_else(|| panic!("{name}: no reason logged:\n{log}"));
        assert!(why.contains(name), "{name}: {why}");
    }
    let (driver, _addr) = load(&kernel, Some(1));
    unload(driver);
    assert!(kernel.take_bugchecks().is_empty());
}
