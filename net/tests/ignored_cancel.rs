//! Deadlines and graceful closes where the provider ignores `IoCancelIrp` for WSK IRPs, as
//! Wine 8.0 does (the plan's `ignore_cancel`): nothing may hang. `wsk_net::timeout` escalates
//! `CANCEL_GRACE` after its cancel (an operation holding a buffer closes its socket, which
//! completes the IRP and returns the buffer; one holding none is dropped), and a graceful
//! close whose disconnect never completes is closed by its bound.
//!
//! Its own test binary with one test: `ignore_cancel` is process-wide (like the low-resources
//! simulation), so no other kernel may boot in this process meanwhile.
#![cfg(unix)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{ErrorKind as IoErrorKind, Read};
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::faults::Faults;
use wsk_net::{CANCEL_GRACE, ErrorKind, IoBuf, TcpListener, TcpStream, WskClient, timeout};

mod common;
use common::{BOUND, plans, run_plans};

/// The deadline of the stalled operations.
const DEADLINE: Duration = Duration::from_millis(100);

async fn connected(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let peer = std::net::TcpStream::connect(addr).expect("connect");
    peer.set_read_timeout(Some(BOUND)).unwrap();
    let (stream, _) = listener.accept().await.expect("accept");
    (listener, peer, stream)
}

/// A receive from a silent peer: the cancel does nothing, so the deadline closes the socket
/// after the grace period; the buffer comes back and the peer sees the reset.
async fn receive_escalates(client: &WskClient) {
    let (listener, mut peer, stream) = connected(client).await;
    let started = Instant::now();
    let (n, buf) = timeout(
        DEADLINE,
        stream.recv(IoBuf::with_capacity(32).expect("buffer")),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(n.expect_err("nothing was sent").kind(), ErrorKind::TimedOut);
    assert_eq!(buf.capacity(), 32, "the buffer came back");
    assert!(took >= DEADLINE + CANCEL_GRACE, "escalated after {took:?}");
    assert!(took < BOUND, "took {took:?}");
    // The socket is closed: later operations say so.
    let (n, _) = stream.recv(buf).await;
    assert_eq!(n.expect_err("closed").kind(), ErrorKind::InvalidState);
    let mut byte = [0u8; 1];
    let error = peer.read(&mut byte).expect_err("reset");
    assert_eq!(error.kind(), IoErrorKind::ConnectionReset);
    stream.close().await;
    listener.close().await;
}

/// An accept nobody answers: dropped after the grace period (no buffer to wait for).
async fn accept_escalates(client: &WskClient) {
    let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let started = Instant::now();
    let accepted = timeout(DEADLINE, listener.accept()).await;
    let took = started.elapsed();
    let error = accepted.err().expect("nobody connects");
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    assert!(took >= DEADLINE + CANCEL_GRACE, "escalated after {took:?}");
    // The abandoned accept is still at the provider; closing the listener completes it.
    listener.close().await;
}

/// A graceful close whose disconnect is never acknowledged: the bound closes the socket
/// although the cancel would do nothing; the peer sees the reset.
async fn graceful_close_is_bounded(client: &WskClient) {
    let (listener, mut peer, stream) = connected(client).await;
    stream.set_close_limit(Duration::from_millis(200));
    let started = Instant::now();
    stream.close().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");
    assert!(took < BOUND, "took {took:?}");
    let mut byte = [0u8; 1];
    let error = peer.read(&mut byte).expect_err("reset");
    assert_eq!(error.kind(), IoErrorKind::ConnectionReset);
    listener.close().await;
}

#[test]
fn nothing_hangs_where_the_provider_ignores_cancels() {
    let wine_like = plans()
        .into_iter()
        .map(|plan| Faults {
            ignore_cancel: true,
            disconnect_unacknowledged: true,
            ..plan
        })
        .collect();
    run_plans(wine_like, |client, _| {
        block_on(receive_escalates(client));
        block_on(accept_escalates(client));
        block_on(graceful_close_is_bounded(client));
    });
}
