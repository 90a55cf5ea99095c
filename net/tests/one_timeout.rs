//! One deadline for every operation: `wsk_net::timeout` cancels through WSK (`IoCancelIrp`),
//! waits for the completion, and returns `TimedOut` with the operation's buffer (contents
//! intact for a send, what arrived for a receive). Each scenario stalls one operation for
//! real (a silent peer, a full send window, a full accept backlog, a disconnect never
//! acknowledged), under the standard fault plans with the verifier's leak check.
#![cfg(unix)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::Write;
use std::time::Duration;

use wsk_executor::block_on;
use wsk_host::faults::Faults;
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, UdpSocket, timeout};

mod common;
use common::{BOUND, connected, each_plan, plans, run_plans};

/// The deadline of the stalled operations: short, so that the tests stay quick.
const DEADLINE: Duration = Duration::from_millis(200);

#[test]
fn a_receive_from_a_silent_peer_times_out_with_its_buffer_and_the_stream_still_works() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            let buf = IoBuf::with_capacity(64).expect("buffer");
            let (n, buf) = timeout(DEADLINE, stream.recv(buf)).await;
            assert_eq!(n.expect_err("nothing was sent").kind(), ErrorKind::TimedOut);
            assert_eq!(buf.capacity(), 64, "the buffer came back");
            // The stream is fine: the next receive gets the data.
            peer.write_all(b"late").unwrap();
            let (n, buf) = timeout(BOUND, stream.recv(buf)).await;
            assert_eq!(&buf[..n.expect("recv")], b"late");
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn recv_exact_times_out_with_the_bytes_that_arrived() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            peer.write_all(b"abc").unwrap();
            let buf = IoBuf::with_capacity(8).expect("buffer");
            let (n, buf) = timeout(DEADLINE, stream.recv_exact(buf, 8)).await;
            assert_eq!(n.expect_err("3 of 8 bytes").kind(), ErrorKind::TimedOut);
            assert_eq!(buf.capacity(), 8, "the buffer came back");
            assert!(
                b"abc".starts_with(&buf),
                "what arrived is kept: {:?}",
                &buf[..]
            );
            stream.abort().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_send_into_a_full_window_times_out_with_its_buffer_intact() {
    each_plan(|client, _| {
        block_on(async {
            // The peer never reads: sends fill both sides' socket buffers, then one stalls.
            let (listener, _peer, stream) = connected(client).await;
            let chunk = vec![0x5a_u8; 1 << 20];
            let mut buf = IoBuf::from_slice(&chunk).expect("buffer");
            let mut stalled = false;
            for _ in 0..1024 {
                let (sent, back) = timeout(DEADLINE, stream.send(buf)).await;
                buf = back;
                assert_eq!(buf.len(), chunk.len(), "the buffer came back whole");
                assert!(buf.iter().all(|&b| b == 0x5a), "and unchanged");
                match sent {
                    Ok(n) => assert_eq!(n, chunk.len()),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                        stalled = true;
                        break;
                    }
                }
            }
            assert!(stalled, "1 GiB went to a peer that never reads");
            stream.abort().await;
            listener.close().await;
        });
    });
}

#[test]
fn an_accept_without_a_client_times_out() {
    each_plan(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let accepted = timeout(DEADLINE, listener.accept()).await;
            assert_eq!(
                accepted.expect_err("nobody connects").kind(),
                ErrorKind::TimedOut
            );
            listener.close().await;
        });
    });
}

/// Fills the accept queue of a std listener nobody accepts on, so that further SYNs are
/// dropped and a connect to it stays pending. Returns the listener and the connections that
/// filled it (kept open).
fn full_backlog() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    for _ in 0..4096 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(stream) => filling.push(stream),
            Err(_) => return (listener, filling),
        }
    }
    panic!("the accept queue never filled");
}

#[test]
fn a_connect_that_gets_no_answer_times_out() {
    let (backlog, filling) = full_backlog();
    let addr = backlog.local_addr().unwrap();
    each_plan(|client, _| {
        block_on(async {
            let connected = timeout(DEADLINE, TcpStream::connect(client, addr)).await;
            assert_eq!(
                connected.expect_err("no SYN-ACK").kind(),
                ErrorKind::TimedOut
            );
        });
    });
    drop(filling);
}

#[test]
fn a_disconnect_never_acknowledged_times_out_and_the_stream_still_closes() {
    let unacknowledged = plans()
        .into_iter()
        .map(|plan| Faults {
            disconnect_unacknowledged: true,
            ..plan
        })
        .collect();
    run_plans(unacknowledged, |client, _| {
        block_on(async {
            let (listener, _peer, stream) = connected(client).await;
            let result = timeout(DEADLINE, stream.disconnect(Disconnect::Graceful)).await;
            assert_eq!(
                result.expect_err("never acknowledged").kind(),
                ErrorKind::TimedOut
            );
            stream.close().await;
            // With final data, on a second connection: its buffer comes back.
            let addr = listener.local_addr().await.expect("local_addr");
            let _second = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            let final_data = IoBuf::from_slice(b"bye").expect("buffer");
            let (done, buf) = timeout(DEADLINE, stream.disconnect_with(final_data)).await;
            assert_eq!(
                done.expect_err("never acknowledged").kind(),
                ErrorKind::TimedOut
            );
            assert_eq!(&buf[..], b"bye", "the final data's buffer came back");
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_datagram_receive_times_out_with_its_buffer_and_sends_and_binds_finish_in_time() {
    each_plan(|client, _| {
        block_on(async {
            let socket = timeout(
                BOUND,
                UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap()),
            )
            .await
            .expect("bind within the deadline");
            let buf = IoBuf::with_capacity(128).expect("buffer");
            let (got, buf) = timeout(DEADLINE, socket.recv_from(buf)).await;
            assert_eq!(got.expect_err("nobody sends").kind(), ErrorKind::TimedOut);
            assert_eq!(buf.capacity(), 128, "the buffer came back");
            // A send to ourselves, bounded the same way, completes, and so does the receive.
            let me = timeout(BOUND, socket.local_addr())
                .await
                .expect("local_addr");
            let (sent, _) = timeout(
                BOUND,
                socket.send_to(IoBuf::from_slice(b"ping").expect("buffer"), me),
            )
            .await;
            assert_eq!(sent.expect("send_to"), 4);
            let (got, buf) = timeout(BOUND, socket.recv_from(buf)).await;
            let (n, from) = got.expect("recv_from");
            assert_eq!((&buf[..n], from), (&b"ping"[..], me));
            socket.close().await;
        });
    });
}

#[test]
fn resolve_within_a_deadline() {
    each_plan(|client, _| {
        let addresses = block_on(timeout(BOUND, wsk_net::resolve(client, "localhost", 7)))
            .expect("localhost resolves");
        assert!(addresses.iter().all(|a| a.port() == 7));
    });
}
