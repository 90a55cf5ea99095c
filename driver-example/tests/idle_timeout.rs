//! The echo driver's idle timeout on the host kernel (`IdleTimeoutMs`): a client that stays
//! silent is closed once the timeout has passed, never before, while a client that keeps
//! talking is served throughout. The Wine test runs the same check against the real `.sys`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use wsk_host::{Config, Kernel, RegValue};

use common::{BOUND, load_echo, unload_with_idle_clients};

/// The idle timeout under test.
const IDLE: Duration = Duration::from_secs(1);
/// How often the talking client sends: a tenth of the timeout, so it never looks idle.
const TALK_EVERY: Duration = Duration::from_millis(100);

/// Sends `message` and reads the same bytes back.
fn echo_once(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    stream.write_all(message)?;
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, message, "echoed bytes differ");
    Ok(())
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_and_a_talking_one_is_not() {
    let kernel = Kernel::boot(Config::default());
    let idle_ms = u32::try_from(IDLE.as_millis()).expect("fits");
    let (driver, addr) = load_echo(
        &kernel,
        "WskEchoIdle",
        "dpc",
        &[("IdleTimeoutMs", RegValue::Dword(idle_ms))],
    );

    // Timed from before the connect: the driver's idle clock starts later, at its receive.
    let connected = Instant::now();
    let mut silent = TcpStream::connect(addr).expect("connect the silent client");
    silent.set_read_timeout(Some(BOUND)).expect("read timeout");
    let mut talking = TcpStream::connect(addr).expect("connect the talking client");
    talking.set_read_timeout(Some(BOUND)).expect("read timeout");

    // Talk past the timeout (and a half), then see what the silent client got.
    let mut sent = 0u32;
    while connected.elapsed() < IDLE + IDLE / 2 {
        echo_once(&mut talking, &sent.to_le_bytes()).expect("the talking client is served");
        sent += 1;
        std::thread::sleep(TALK_EVERY);
    }
    let mut byte = [0u8; 1];
    let read = silent.read(&mut byte);
    let closed_after = connected.elapsed();
    assert!(
        matches!(read, Ok(0)),
        "the silent client should see the server's FIN (EOF), got {read:?}"
    );
    // The interrupt time moves in clock ticks, so the deadline the driver takes from it may
    // be up to one tick early in real time; no more.
    let tick = kernel.config().clock_tick;
    assert!(
        closed_after + tick >= IDLE,
        "closed after {closed_after:?}, before the {IDLE:?} idle timeout (clock tick {tick:?})"
    );
    // Still served after the silent one was closed.
    echo_once(&mut talking, b"still here").expect("the talking client is still served");
    drop(talking);
    drop(silent);

    let log = kernel.debug_log();
    assert!(
        log.contains("wskecho: closing a connection idle for 1000 ms (1 so far)"),
        "driver log:\n{log}"
    );
    assert!(
        !log.contains("(2 so far)"),
        "only the silent client was idle; driver log:\n{log}"
    );
    unload_with_idle_clients(&kernel, driver, addr, 4, "unload with an idle timeout set");
}
