//! The peer side of a driver test, in plain `std::net`: a free loopback port for the driver
//! under test to listen on, a client connection with timeouts, and one echo round trip. Every
//! call is bounded by [`IO_TIMEOUT`] and returns an error saying what failed, never hangs.
//!
//! ```no_run
//! use wsk_host::testing::net::{connect_client, echo_round_trip, free_loopback_port};
//!
//! let port = free_loopback_port()?;
//! // ... load the driver under test with `port` in its registry settings ...
//! let mut client = connect_client(([127, 0, 0, 1], port).into())?;
//! echo_round_trip(&mut client, b"hello\n")?;
//! # Ok::<(), String>(())
//! ```

use std::format;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::string::{String, ToString};
use std::time::Duration;
use std::vec::Vec;

/// Per-operation socket timeout of the helpers here (connect, each read, each write).
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago, for a server under test to listen on.
///
/// # Errors
/// When no port can be bound.
pub fn free_loopback_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("bind a probe port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A client connection to `addr`: connected, read and written with [`IO_TIMEOUT`], Nagle off
/// (a small message is sent at once).
///
/// # Errors
/// The connect or socket-option failure, naming `addr`.
pub fn connect_client(addr: SocketAddr) -> Result<TcpStream, String> {
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

/// Sends `payload` and reads back exactly as many bytes, which must be the same (an echo
/// server's answer). Sends in 16 KiB pieces and drains the answer between them, so a large
/// payload never deadlocks on full socket buffers.
///
/// # Errors
/// A write or read failure, an early EOF, or the first byte that differs.
pub fn echo_round_trip(stream: &mut TcpStream, payload: &[u8]) -> Result<(), String> {
    const PIECE: usize = 16 * 1024;
    let mut back = Vec::with_capacity(payload.len());
    let mut sent = 0;
    let mut chunk = [0_u8; PIECE];
    while back.len() < payload.len() {
        if sent < payload.len() {
            let end = (sent + PIECE).min(payload.len());
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
    if let Some(at) = back.iter().zip(payload).position(|(a, b)| a != b) {
        return Err(format!("echo differs at byte {at} of {}", payload.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    use super::{connect_client, echo_round_trip, free_loopback_port};

    #[test]
    fn a_round_trip_through_a_std_echo_server_and_a_wrong_echo_is_named() {
        let port = free_loopback_port().unwrap();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let server = thread::spawn(move || {
            // The first connection is echoed, the second answered with one byte flipped.
            for flip in [false, true] {
                let (mut peer, _) = listener.accept().unwrap();
                let mut buf = [0_u8; 16 * 1024];
                let mut total = 0;
                let expected = if flip { 3 } else { 100_000 };
                while total < expected {
                    let n = peer.read(&mut buf).unwrap();
                    if flip && total == 0 {
                        buf[0] ^= 1;
                    }
                    peer.write_all(&buf[..n]).unwrap();
                    total += n;
                }
            }
        });
        let payload: std::vec::Vec<u8> = (0..100_000_u32)
            .map(|i| u8::try_from(i % 256).unwrap())
            .collect();
        let mut client = connect_client(([127, 0, 0, 1], port).into()).unwrap();
        echo_round_trip(&mut client, &payload).unwrap();
        let mut client = connect_client(([127, 0, 0, 1], port).into()).unwrap();
        assert_eq!(
            echo_round_trip(&mut client, b"abc"),
            Err("echo differs at byte 0 of 3".into())
        );
        server.join().unwrap();
    }
}
