//! Echo load generation and conformance scenarios (RFC 862), plain `std::net`: used by the
//! Wine test, the host-mode driver tests, and `loadgen` against a Windows test VM.
//!
//! Every socket operation has a timeout and every scenario returns an error (never hangs or
//! panics) that says which client and message failed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Per-operation socket timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// What a scenario did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Connections made.
    pub connections: usize,
    /// Messages echoed byte-exact.
    pub messages: usize,
    /// Payload bytes sent (and received back).
    pub bytes: u64,
}

/// A loopback port that was free a moment ago: the driver tests' helper, which lives with the
/// host kernel's test fixtures (`wsk_host::testing::net`); re-exported for the examples and
/// xtask. Not on Windows, where the host kernel is empty (`loadgen` does not need it).
#[cfg(not(target_os = "windows"))]
pub use wsk_host::testing::net::free_loopback_port;

/// Raises this process's soft descriptor limit to `needed`, up to the hard limit: the host
/// programs' helper (`wsk_host::program`), re-exported for `cargo xtask bench-scale`, whose
/// client holds one descriptor per connection. Not on Windows.
#[cfg(not(target_os = "windows"))]
pub use wsk_host::program::raise_descriptor_limit;

/// A client connection to `addr` as every scenario and the closed loop use it: connected,
/// read and written with [`IO_TIMEOUT`], Nagle off (one small message is sent at once).
pub(crate) fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A small deterministic generator (splitmix64) so runs are reproducible from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Message sizes for one client: the first two are the extremes (1 and `max`), the rest
/// log-uniform in between, so small and large messages are both common.
#[must_use]
pub fn message_sizes(seed: u64, count: usize, max: usize) -> Vec<usize> {
    let mut rng = Rng(seed);
    let max_bits = usize::BITS - max.leading_zeros();
    (0..count)
        .map(|i| match i {
            0 => 1,
            1 => max,
            _ => {
                let bits = u32::try_from(rng.next() % u64::from(max_bits)).unwrap_or(0) + 1;
                let limit = (1usize << bits).min(max);
                1 + usize::try_from(rng.next()).unwrap_or(0) % limit
            }
        })
        .collect()
}

/// Sends `payload` and reads back exactly as many bytes, comparing them.
fn echo_once(stream: &mut TcpStream, payload: &[u8], back: &mut Vec<u8>) -> Result<(), String> {
    // Write and read concurrently in effect: send in chunks and drain what came back, so a
    // large message never deadlocks on full socket buffers.
    back.clear();
    let mut sent = 0;
    let mut chunk = [0u8; 16 * 1024];
    while back.len() < payload.len() {
        if sent < payload.len() {
            let end = (sent + 16 * 1024).min(payload.len());
            stream
                .write_all(&payload[sent..end])
                .map_err(|e| format!("write: {e}"))?;
            sent = end;
        }
        let want = (sent - back.len()).min(chunk.len());
        if want == 0 {
            continue;
        }
        let n = stream
            .read(&mut chunk[..want])
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "EOF after {} of {} bytes",
                back.len(),
                payload.len()
            ));
        }
        back.extend_from_slice(&chunk[..n]);
    }
    if back.as_slice() != payload {
        let at = back
            .iter()
            .zip(payload)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!("echo differs at byte {at} of {}", payload.len()));
    }
    Ok(())
}

/// `clients` concurrent connections each echo `messages` messages of 1 B ..= `max_size`,
/// byte-exact, then close their sending side and expect EOF (the server's graceful end).
///
/// # Errors
/// The first failure, naming the client and message.
pub fn concurrent_echo(
    addr: SocketAddr,
    clients: usize,
    messages: usize,
    max_size: usize,
) -> Result<Report, String> {
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            std::thread::spawn(move || -> Result<Report, String> {
                let mut stream = connect(addr).map_err(|e| format!("client {client}: {e}"))?;
                let mut report = Report {
                    connections: 1,
                    ..Report::default()
                };
                let mut back = Vec::new();
                for (i, size) in message_sizes(client as u64 + 1, messages, max_size)
                    .into_iter()
                    .enumerate()
                {
                    let payload: Vec<u8> = (0..size)
                        .map(|b| u8::try_from((b * 31 + i * 7 + client) % 251).unwrap_or(0))
                        .collect();
                    echo_once(&mut stream, &payload, &mut back)
                        .map_err(|e| format!("client {client} message {i} ({size} B): {e}"))?;
                    report.messages += 1;
                    report.bytes += size as u64;
                }
                stream
                    .shutdown(Shutdown::Write)
                    .map_err(|e| format!("client {client}: shutdown: {e}"))?;
                let mut rest = [0u8; 16];
                match stream.read(&mut rest) {
                    Ok(0) => Ok(report),
                    Ok(n) => Err(format!("client {client}: {n} unexpected bytes after FIN")),
                    Err(e) => Err(format!("client {client}: no EOF after FIN: {e}")),
                }
            })
        })
        .collect();
    let mut total = Report::default();
    for handle in handles {
        let report = handle
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        total.connections += report.connections;
        total.messages += report.messages;
        total.bytes += report.bytes;
    }
    Ok(total)
}

/// `count` connections, each echoing one byte and closing, `parallel` at a time.
///
/// # Errors
/// The first failure.
pub fn churn(addr: SocketAddr, count: usize, parallel: usize) -> Result<Report, String> {
    let per_thread = count.div_ceil(parallel.max(1));
    let handles: Vec<_> = (0..parallel.max(1))
        .map(|t| {
            std::thread::spawn(move || -> Result<usize, String> {
                let mut done = 0;
                for i in 0..per_thread {
                    if t * per_thread + i >= count {
                        break;
                    }
                    let mut stream = connect(addr).map_err(|e| format!("churn {t}/{i}: {e}"))?;
                    let mut back = Vec::new();
                    echo_once(&mut stream, b"c", &mut back)
                        .map_err(|e| format!("churn {t}/{i}: {e}"))?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut connections = 0;
    for handle in handles {
        connections += handle
            .join()
            .map_err(|_| "a churn thread panicked".to_string())??;
    }
    Ok(Report {
        connections,
        messages: connections,
        bytes: connections as u64,
    })
}

/// Sends part of a message and resets the connection (`SO_LINGER` 0, then close) before the
/// echo is read, then checks the server still serves a fresh client.
///
/// # Errors
/// When the fresh client is not served.
pub fn reset_mid_message(addr: SocketAddr) -> Result<Report, String> {
    let mut stream = connect(addr)?;
    stream
        .write_all(&vec![7u8; 40 * 1024])
        .map_err(|e| format!("write: {e}"))?;
    set_linger_zero(&stream)?;
    drop(stream);
    let mut fresh = connect(addr)?;
    let mut back = Vec::new();
    echo_once(&mut fresh, b"still serving", &mut back).map_err(|e| format!("after reset: {e}"))?;
    Ok(Report {
        connections: 2,
        messages: 1,
        bytes: 13,
    })
}

/// Connections held open while the server unloads; [`Held::wait_closed`] then checks each
/// was closed by the server (EOF or reset) rather than left hanging.
pub struct Held {
    streams: Vec<TcpStream>,
}

/// Opens `idle` idle connections and one with an unread echo in flight.
///
/// # Errors
/// When a connection fails.
pub fn hold_connections(addr: SocketAddr, idle: usize) -> Result<Held, String> {
    let mut streams = Vec::new();
    for _ in 0..idle {
        streams.push(connect(addr)?);
    }
    let mut busy = connect(addr)?;
    busy.write_all(&[1u8; 1000])
        .map_err(|e| format!("write: {e}"))?;
    streams.push(busy);
    Ok(Held { streams })
}

impl Held {
    /// Waits (bounded) until the server has closed every held connection; returns how many
    /// it closed (all of them, or an error).
    ///
    /// # Errors
    /// Names a connection still open after `within`.
    pub fn wait_closed(self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        let count = self.streams.len();
        let mut buf = [0u8; 4096];
        for (i, mut stream) in self.streams.into_iter().enumerate() {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("held connection {i} still open after {within:?}"));
                }
                stream
                    .set_read_timeout(Some(left))
                    .map_err(|e| e.to_string())?;
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {} // echoed data still arriving: keep reading to the close
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                        ) =>
                    {
                        break;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Err(format!("held connection {i} still open after {within:?}"));
                    }
                    Err(e) => return Err(format!("held connection {i}: {e}")),
                }
            }
        }
        Ok(count)
    }

    /// How many connections are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// True when none are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// `setsockopt(SO_LINGER)`'s return code as a result, with the OS error when it failed
/// (`errno` on Unix, `WSAGetLastError` on Windows, both read by `last_os_error`).
fn linger_outcome(rc: i32) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "setsockopt(SO_LINGER): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// `SO_LINGER` {on, 0 s}: the close that follows sends a reset (RST) instead of a FIN.
///
/// # Errors
///
/// The OS error of `setsockopt`, as text.
#[cfg(unix)]
pub fn set_linger_zero(stream: &TcpStream) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    unsafe extern "C" {
        fn setsockopt(
            fd: i32,
            level: i32,
            name: i32,
            value: *const core::ffi::c_void,
            len: u32,
        ) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_LINGER: i32 = 13;
    let value = Linger {
        onoff: 1,
        linger: 0,
    };
    // SAFETY: a valid socket descriptor and a pointer to a live `struct linger` of the given
    // size; Linux's setsockopt reads exactly that.
    let rc = unsafe {
        setsockopt(
            stream.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            (&raw const value).cast(),
            u32::try_from(size_of::<Linger>()).unwrap_or(8),
        )
    };
    linger_outcome(rc)
}

/// `SO_LINGER` {on, 0 s} through Winsock (`ws2_32`, which std links already): the close that
/// follows sends a reset (RST) instead of a FIN.
///
/// # Errors
///
/// The OS error of `setsockopt`, or a socket handle out of range, as text.
#[cfg(windows)]
pub fn set_linger_zero(stream: &TcpStream) -> Result<(), String> {
    use std::os::windows::io::AsRawSocket;
    /// Winsock's `struct linger`: two `u_short`s.
    #[repr(C)]
    struct Linger {
        onoff: u16,
        linger: u16,
    }
    #[link(name = "ws2_32")]
    unsafe extern "system" {
        fn setsockopt(socket: usize, level: i32, name: i32, value: *const u8, len: i32) -> i32;
    }
    const SOL_SOCKET: i32 = 0xffff;
    const SO_LINGER: i32 = 0x0080;
    let value = Linger {
        onoff: 1,
        linger: 0,
    };
    let socket = usize::try_from(stream.as_raw_socket()).map_err(|e| e.to_string())?;
    // SAFETY: a valid socket and a pointer to a live `struct linger` of the given size; Winsock
    // reads exactly that.
    let rc = unsafe {
        setsockopt(
            socket,
            SOL_SOCKET,
            SO_LINGER,
            (&raw const value).cast(),
            i32::try_from(size_of::<Linger>()).unwrap_or(4),
        )
    };
    linger_outcome(rc)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A plain std echo server: one thread per connection, closes after the peer's FIN.
    fn std_echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn sizes_cover_both_extremes_and_stay_in_range() {
        let sizes = message_sizes(3, 200, 65536);
        assert_eq!(sizes[0], 1);
        assert_eq!(sizes[1], 65536);
        assert!(sizes.iter().all(|&s| (1..=65536).contains(&s)));
        assert!(
            sizes.iter().filter(|&&s| s < 1024).count() > 20,
            "small messages are common"
        );
        assert_eq!(
            sizes,
            message_sizes(3, 200, 65536),
            "deterministic from the seed"
        );
    }

    #[test]
    fn scenarios_pass_against_a_correct_echo_server() {
        let addr = std_echo_server();
        let report = concurrent_echo(addr, 4, 20, 65536).unwrap();
        assert_eq!(report.messages, 80);
        assert_eq!(churn(addr, 50, 4).unwrap().connections, 50);
        reset_mid_message(addr).unwrap();
    }

    #[test]
    fn a_corrupting_server_is_caught() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap();
            buf[0] ^= 1;
            stream.write_all(&buf[..n]).unwrap();
        });
        let err = concurrent_echo(addr, 1, 1, 1).unwrap_err();
        assert!(err.contains("differs"), "{err}");
    }
}
