//! Idle connections for the memory-per-connection benchmark (`cargo xtask bench-idle`):
//! opening connections that each made one echo round trip (so the server has posted its
//! receive buffer again) and then stay idle, reading a process's resident set, and waiting
//! for a reading to settle.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::load;

/// The message each idle connection echoes once before it goes idle.
const ROUND_TRIP_MESSAGE: &[u8] = b"idle-memory round trip";

/// Opens `count` connections to the echo server at `addr`, each after one byte-exact echo
/// round trip; the caller holds them open (idle) and drops them to close.
///
/// # Errors
/// Names the connection whose connect, write or read failed, or whose echo differed.
pub fn open_idle(addr: SocketAddr, count: usize) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(count);
    let mut back = [0u8; ROUND_TRIP_MESSAGE.len()];
    for index in 0..count {
        let mut stream = load::connect(addr).map_err(|e| format!("connection {index}: {e}"))?;
        stream
            .write_all(ROUND_TRIP_MESSAGE)
            .map_err(|e| format!("connection {index}: write: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("connection {index}: read the echo: {e}"))?;
        if back != ROUND_TRIP_MESSAGE {
            return Err(format!("connection {index}: the echo differs"));
        }
        streams.push(stream);
    }
    Ok(streams)
}

/// The `VmRSS` line of a `/proc/<pid>/status` text, in bytes.
///
/// # Errors
/// When the line is missing or not `<number> kB`.
pub fn parse_vm_rss(status: &str) -> Result<u64, String> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .ok_or("no VmRSS line in the status")?;
    let mut fields = line.split_whitespace();
    let kib: u64 = fields
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("VmRSS {line:?} is not a number"))?;
    if fields.next() != Some("kB") {
        return Err(format!("VmRSS {line:?} is not in kB"));
    }
    Ok(kib * 1024)
}

/// The resident set of process `pid` in bytes (Linux: `/proc/<pid>/status`, `VmRSS`).
///
/// # Errors
/// When the status cannot be read or parsed.
pub fn vm_rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    parse_vm_rss(&status)
}

/// How long apart [`settled`] takes its readings.
pub const SETTLE_INTERVAL: Duration = Duration::from_millis(100);

/// Reads `read` every [`SETTLE_INTERVAL`] until two readings in a row are equal (the server
/// has finished reposting its receives, say), and returns that reading; after `within`
/// returns the last reading anyway with `false` (it kept moving).
///
/// # Errors
/// The first error `read` returns.
pub fn settled<T: PartialEq, E>(
    within: Duration,
    mut read: impl FnMut() -> Result<T, E>,
) -> Result<(T, bool), E> {
    let deadline = Instant::now() + within;
    let mut last = read()?;
    loop {
        std::thread::sleep(SETTLE_INTERVAL);
        let next = read()?;
        if next == last {
            return Ok((next, true));
        }
        last = next;
        if Instant::now() >= deadline {
            return Ok((last, false));
        }
    }
}

/// `(with - without) / connections` as a float (negative when the reading fell); `None` with
/// no connections.
#[must_use]
pub fn per_connection(without: u64, with: u64, connections: usize) -> Option<f64> {
    if connections == 0 {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "memory readings and counts far below 2^52"
    )]
    let delta = with as f64 - without as f64;
    #[allow(clippy::cast_precision_loss, reason = "a connection count")]
    Some(delta / connections as f64)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes_and_bad_lines_are_errors() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Ok(1234 * 1024));
        assert!(parse_vm_rss("Name:\tx\n").is_err());
        assert!(parse_vm_rss("VmRSS:\tmany kB\n").is_err());
        assert!(parse_vm_rss("VmRSS:\t12 MB\n").is_err());
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let rss = vm_rss_bytes(std::process::id()).expect("own VmRSS");
        assert!(rss > 0);
    }

    #[test]
    fn per_connection_divides_the_difference() {
        assert_eq!(per_connection(1000, 3000, 4), Some(500.0));
        assert_eq!(per_connection(3000, 1000, 4), Some(-500.0));
        assert_eq!(per_connection(0, 10, 0), None);
    }

    #[test]
    fn settled_returns_the_first_repeated_reading() {
        let mut readings = [5, 7, 9, 9, 4].into_iter();
        let got = settled(Duration::from_mins(1), || readings.next().ok_or("ran out"));
        assert_eq!(got, Ok((9, true)));
        let mut counter = 0;
        let got = settled(Duration::ZERO, || -> Result<i32, ()> {
            counter += 1;
            Ok(counter)
        });
        assert_eq!(got, Ok((2, false)));
    }

    /// A server on its own thread that echoes each connection's first read, altered when
    /// `corrupt` is set, then holds the connection until the client closes it.
    fn echo_once(corrupt: bool) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 256];
                    let Ok(n) = stream.read(&mut buffer) else {
                        return;
                    };
                    if corrupt {
                        buffer[0] ^= 0xFF;
                    }
                    let _ = stream.write_all(&buffer[..n]);
                    let _ = stream.read(&mut buffer);
                });
            }
        });
        addr
    }

    #[test]
    fn open_idle_makes_one_round_trip_per_connection() {
        let streams = open_idle(echo_once(false), 3).expect("three idle connections");
        assert_eq!(streams.len(), 3);
    }

    #[test]
    fn a_wrong_echo_is_an_error() {
        let error = open_idle(echo_once(true), 2).expect_err("the echo differs");
        assert!(error.contains("connection 0: the echo differs"), "{error}");
    }
}
