//! The chat relay under Wine: `wskchat.sys` in a fresh prefix of its own, registered as a
//! kernel service with the passive runner, real clients from Linux: three clients, a line from
//! each reaching the other two byte-exact and never its sender; a silent client closed past
//! the idle timeout (`IdleSeconds`) while a talking one goes on; then unload with clients
//! connected, each closed, and the `DbgPrint` log checked for a clean stop.
//!
//! What Wine cannot run is printed as `Wine lacks: ...` and does not fail the test: the DPC
//! runner (Wine's `KeInsertQueueDpc` is a stub, `docs/ARCHITECTURE.md`), so the relay runs on
//! the passive one here and its DPC runner on the host kernel only.
//!
//! The prefix's wineserver is killed (`wineserver -k`) on success and failure alike, ending
//! every process the test started in it.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use wsk_benches::load;

use crate::wine::{
    Prefix, STOP_LIMIT, fresh_prefix, install_driver, report_outcome, run_quiet, start_service,
    unload_report,
};

const SERVICE: &str = "WskChat";
const SERVICE_KEY: &str = r"HKLM\System\CurrentControlSet\Services\WskChat";
/// The relay's idle timeout here (`IdleSeconds`): long enough that the relay and unload
/// scenarios' clients, which send within milliseconds of connecting, never idle out.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the talking client of the idle scenario sends: well inside the timeout.
const TALK_EVERY: Duration = Duration::from_millis(200);
/// The longest any one client read may wait (a bound against a hang, not a speed target).
const READ_LIMIT: Duration = Duration::from_secs(30);
/// How much earlier than [`IDLE_TIMEOUT`] the silent client may be closed: the interrupt time
/// the driver's deadline comes from is the wineserver's, refreshed at least every 16 ms, so it
/// may lag real time a little (as in the echo driver's Wine test).
const CLOCK_LAG: Duration = Duration::from_millis(100);
/// The longest line the relay passes on, `\n` included (`wskchat::relay::MAX_LINE`).
const MAX_LINE: usize = 1024;

/// What Wine cannot run of the chat driver, printed loudly; none of it fails the test.
const WINE_LACKS: &[&str] = &[
    "KeInsertQueueDpc (a stub: DPCs never run), so wskchat's DPC runner (its default) cannot \
     run here; the relay runs with Runner=passive, its DPC runner is tested on the host \
     kernel only (cargo test -p wsk-chat-example)",
];

/// Runs the chat relay's Wine test against the built `wskchat.sys`.
///
/// # Errors
/// The first step or scenario that failed, with the driver's log lines.
pub fn test(root: &Path, sys: &Path) -> Result<(), String> {
    let started = Instant::now();
    let (prefix, log) = fresh_prefix(root, "wine-chat-test")?;
    for lack in WINE_LACKS {
        println!("wine-chat-test: *** Wine lacks: {lack} ***");
    }
    println!("wine-chat-test: fresh prefix in {}", prefix.dir.display());
    let result = install(&prefix, sys)
        .and_then(|port| start(&prefix, &log).map(|()| port))
        .and_then(|port| scenarios(&prefix, &log, SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    drop(prefix);
    report_outcome("wine-chat-test", started, &log, "wskchat", result)
}

/// Installs `wskchat.sys` as the service with its `Parameters`; returns the port it will
/// listen on.
fn install(prefix: &Prefix, sys: &Path) -> Result<u16, String> {
    install_driver(prefix, sys, "wskchat.sys", SERVICE_KEY)?;
    let port = load::free_loopback_port()?;
    let params = format!(r"{SERVICE_KEY}\Parameters");
    prefix.reg_add(&params, "Port", "REG_DWORD", &port.to_string())?;
    prefix.reg_add(&params, "Runner", "REG_SZ", "passive")?;
    prefix.reg_add(&params, "BindAddress", "REG_SZ", "127.0.0.1")?;
    prefix.reg_add(
        &params,
        "IdleSeconds",
        "REG_DWORD",
        &IDLE_TIMEOUT.as_secs().to_string(),
    )?;
    Ok(port)
}

/// Starts the service and waits for the relay to say it listens, on the passive runner.
fn start(prefix: &Prefix, log: &Path) -> Result<(), String> {
    start_service(
        prefix,
        log,
        SERVICE,
        "wskchat: listening on",
        &["wskchat: not started", "wskchat: panic"],
    )?;
    let text = fs::read_to_string(log).unwrap_or_default();
    if !text.contains("with the Passive runner") {
        return Err("the relay does not say it runs on the passive runner".into());
    }
    Ok(())
}

/// A chat client: its connection, and what it has read but not yet taken as lines.
struct Client {
    name: &'static str,
    stream: TcpStream,
    unread: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, name: &'static str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("{name}: connect: {e}"))?;
        stream
            .set_read_timeout(Some(READ_LIMIT))
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Self {
            name,
            stream,
            unread: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("{}: send: {e}", self.name))
    }

    /// Reads until a whole line (`\n` included) is there; returns it.
    fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.unread.iter().position(|b| *b == b'\n') {
                return Ok(self.unread.drain(..=end).collect());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "{}: closed while waiting for a line ({} bytes unread)",
                        self.name,
                        self.unread.len()
                    ));
                }
                Ok(n) => self.unread.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("{}: waiting for a line: {e}", self.name)),
            }
        }
    }

    /// Reads `expected` as its next line.
    fn expect_line(&mut self, expected: &[u8], from: &str) -> Result<(), String> {
        let got = self.line()?;
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "{}: expected the line from {from} ({} bytes) byte-exact, got {} bytes: {:?}",
                self.name,
                expected.len(),
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(80)])
            ))
        }
    }

    /// Reads until the server closes the connection (EOF, or a reset for an abortive close),
    /// within [`READ_LIMIT`]; returns the bytes read before it, with any left unread.
    fn until_closed(&mut self) -> Result<Vec<u8>, String> {
        let mut got = core::mem::take(&mut self.unread);
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(got);
                }
                Err(e) => {
                    return Err(format!(
                        "{}: should be closed by the server, got {e}",
                        self.name
                    ));
                }
            }
        }
    }
}

/// Connects clients named `names`, and returns them once the relay has seated every one: the
/// last sends a line, which every other receives (the relay seats clients in the order it
/// accepts them, and a line only reaches seated clients).
fn seated_clients(addr: SocketAddr, names: &[&'static str]) -> Result<Vec<Client>, String> {
    let mut clients = names
        .iter()
        .map(|name| Client::connect(addr, name))
        .collect::<Result<Vec<_>, _>>()?;
    let (last, others) = clients
        .split_last_mut()
        .ok_or("seated_clients: no client")?;
    last.send(b"seated?\n")?;
    let from = last.name;
    for other in others {
        other.expect_line(b"seated?\n", from)?;
    }
    Ok(clients)
}

/// The client scenarios against the running relay, then unload with clients connected.
fn scenarios(prefix: &Prefix, log: &Path, addr: SocketAddr) -> Result<String, String> {
    let mut summary = Vec::new();
    let t = Instant::now();
    relay_three(addr)?;
    summary.push(format!(
        "3 clients: each one's line reached the other two byte-exact and not its sender \
         (a {MAX_LINE}-byte line, a CRLF one, an empty one) in {:.1?}",
        t.elapsed()
    ));
    println!("wine-chat-test: {}", summary[0]);

    let (closed_after, ticks) = idle_close(addr)?;
    summary.push(format!(
        "a silent client closed {closed_after:.3?} after connecting (IdleSeconds \
         {IDLE_TIMEOUT:?}) after receiving {ticks} lines, while the talking one was served"
    ));
    println!("wine-chat-test: {}", summary[1]);

    summary.push(unload_with_clients(prefix, log, addr)?);
    println!("wine-chat-test: {}", summary[2]);
    Ok(summary.join("; "))
}

/// Three clients; each sends a line, the other two receive it byte for byte; then one more
/// line shows none of them got its own line back.
fn relay_three(addr: SocketAddr) -> Result<(), String> {
    let mut clients = seated_clients(addr, &["client a", "client b", "client c"])?;
    let mut longest: Vec<u8> = (0..MAX_LINE - 1)
        .map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0))
        .collect();
    longest.push(b'\n');
    let lines: [&[u8]; 3] = [&longest, b"from b, windows-style\r\n", b"\n"];
    for (from, line) in lines.iter().enumerate() {
        clients[from].send(line)?;
        let sender = clients[from].name;
        for (to, client) in clients.iter_mut().enumerate() {
            if to != from {
                client.expect_line(line, sender)?;
            }
        }
    }
    // Each one's next line is the one client b sends now: had a (or c) got its own line back,
    // it would read that first.
    clients[1].send(b"last\n")?;
    for to in [0, 2] {
        clients[to].expect_line(b"last\n", "client b")?;
    }
    // And b, which sent it, has nothing to read: its own line would have been queued for it
    // at the same time as for a and c, which have read theirs.
    clients[1]
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    match clients[1].stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
        Ok(0) => Err("client b was closed after sending its line".into()),
        Ok(_) => Err("client b received its own line back".into()),
        Err(e) => Err(format!("client b: {e}")),
    }
}

/// The idle timeout in the real driver: a silent client and a talking one that sends a line
/// every [`TALK_EVERY`]. The silent one receives those lines byte for byte, and must see the
/// relay close it no earlier than [`IDLE_TIMEOUT`] (less [`CLOCK_LAG`]) after it connected,
/// and within [`READ_LIMIT`] past it. The talking one is then still served: a newcomer gets
/// its next line. Returns when the silent client was closed and how many lines it got.
fn idle_close(addr: SocketAddr) -> Result<(Duration, usize), String> {
    // Timed from before the connect: the driver's idle clock starts later, at its first read.
    let connected = Instant::now();
    // Connected first, so seated before the talker sends anything.
    let mut silent = Client::connect(addr, "silent client")?;
    silent
        .stream
        .set_read_timeout(Some(TALK_EVERY))
        .map_err(|e| e.to_string())?;
    let mut talking = Client::connect(addr, "talking client")?;
    let mut sent = Vec::new();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut tick = 0u32;
    let closed_after = loop {
        match silent.stream.read(&mut chunk) {
            Ok(0) => break connected.elapsed(),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let line = format!("tick {tick}\n");
                talking.send(line.as_bytes())?;
                sent.extend_from_slice(line.as_bytes());
                tick += 1;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break connected.elapsed(),
            Err(e) => return Err(format!("silent client: {e}")),
        }
        if connected.elapsed() > IDLE_TIMEOUT + READ_LIMIT {
            return Err(format!(
                "the silent client is still open {:.1?} after connecting (idle timeout \
                 {IDLE_TIMEOUT:?})",
                connected.elapsed()
            ));
        }
    };
    if closed_after + CLOCK_LAG < IDLE_TIMEOUT {
        return Err(format!(
            "the silent client was closed {closed_after:.3?} after connecting, before the \
             {IDLE_TIMEOUT:?} idle timeout"
        ));
    }
    // Whole lines, byte-exact, in order; the last few sent may have been queued for it
    // when it was closed.
    if !sent.starts_with(&received) || received.last().is_some_and(|b| *b != b'\n') {
        return Err(format!(
            "the silent client received {:?}, not whole lines of what was sent ({:?})",
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(&sent)
        ));
    }
    if tick < 2 {
        return Err(format!("the talking client sent only {tick} lines"));
    }
    // The talking client talked past the timeout and is still seated and served.
    let mut newcomer = Client::connect(addr, "newcomer")?;
    newcomer.send(b"seated?\n")?;
    talking.expect_line(b"seated?\n", "newcomer")?;
    talking.send(b"still here\n")?;
    newcomer.expect_line(b"still here\n", "talking client")?;
    let lines = received.split_inclusive(|b| *b == b'\n').count();
    Ok((closed_after, lines))
}

/// Unload (`net stop`) with three seated clients, one with half a line sent: each must be
/// closed by the unload, before the idle timeout could have, and the log must show a clean
/// stop (no task left, the WSK client deregistered).
fn unload_with_clients(prefix: &Prefix, log: &Path, addr: SocketAddr) -> Result<String, String> {
    let mut clients = seated_clients(addr, &["held a", "held b", "held c"])?;
    clients[0].send(b"half a li")?;
    // The last of them sent just now: none of them can idle out for IDLE_TIMEOUT from here.
    let held_at = Instant::now();
    println!(
        "wine-chat-test: unloading with {} clients connected",
        clients.len()
    );
    let stop = run_quiet(&mut prefix.wine(&["net", "stop", SERVICE]), STOP_LIMIT);
    let mut closed = Vec::new();
    for client in &mut clients {
        let rest = client.until_closed()?;
        closed.push((client.name, rest.len()));
    }
    let held_for = held_at.elapsed();
    stop?;
    if let Some((name, bytes)) = closed.iter().find(|(_, bytes)| *bytes > 0) {
        return Err(format!(
            "{name} received {bytes} unexpected bytes before its close"
        ));
    }
    if held_for >= IDLE_TIMEOUT {
        return Err(format!(
            "the held clients were closed {held_for:.1?} after their last line: past the \
             {IDLE_TIMEOUT:?} idle timeout, the unload's close cannot be told from an idle one"
        ));
    }
    let (_, report) = unload_report(log, "wskchat", "no tasks left")?;
    Ok(format!(
        "unloaded with {} clients connected, all closed {held_for:.1?} after their last \
         line: {report}",
        clients.len()
    ))
}
