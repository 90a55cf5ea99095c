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
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::faults::Faults;
use wsk_net::{CANCEL_GRACE, ErrorKind, IoBuf, TcpListener, WskClient, timeout};

mod common;
use common::{BOUND, connected, plans, run_plans};

/// The deadline of the stalled operations.
const DEADLINE: Duration = Duration::from_millis(100);

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
    // Not before the grace period (a tenth of slack: the timer's clock is not `Instant`'s).
    assert!(took >= CANCEL_GRACE * 9 / 10, "escalated after {took:?}");
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
    let error = accepted.expect_err("nobody connects");
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    // Not before the grace period (the timer's clock may round the sum down a little).
    assert!(took >= CANCEL_GRACE * 9 / 10, "escalated after {took:?}");
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
    assert!(took >= Duration::from_millis(180), "closed after {took:?}");
    assert!(took < BOUND, "took {took:?}");
    let mut byte = [0u8; 1];
    let error = peer.read(&mut byte).expect_err("reset");
    assert_eq!(error.kind(), IoErrorKind::ConnectionReset);
    listener.close().await;
}

/// Wakes by unparking the polling thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread for at most `limit`: its output, or `None` (the future is
/// dropped; with cancels ignored, its IRP stays at the provider).
fn poll_for<F: Future>(future: F, limit: Duration) -> Option<F::Output> {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut future = pin!(future);
    let started = Instant::now();
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(output);
        }
        let left = limit.checked_sub(started.elapsed())?;
        std::thread::park_timeout(left);
    }
}

/// A peer that never reads: a send larger than the window stays pending; it is dropped (its
/// IRP stays queued: the cancel is ignored), so the close's graceful disconnect queues behind
/// data that never goes out. The bound closes the socket anyway.
fn graceful_close_behind_a_full_window_is_bounded(client: &WskClient) {
    let (listener, _peer, stream) = block_on(connected(client));
    // More than the loopback connection's socket buffers on both sides take (a few MiB
    // each): with nobody reading, this send never completes. Only one send can be in
    // flight, so it is the one the disconnect queues behind.
    let chunk = vec![0x33_u8; 12 << 20];
    let buf = IoBuf::from_slice(&chunk).expect("buffer");
    assert!(
        poll_for(stream.send(buf), Duration::from_millis(200)).is_none(),
        "12 MiB went to a peer that never reads"
    );
    let limit = Duration::from_millis(300);
    stream.set_close_limit(limit);
    let started = Instant::now();
    block_on(stream.close());
    let took = started.elapsed();
    assert!(took >= limit * 9 / 10, "closed after {took:?}");
    assert!(took < BOUND, "took {took:?}");
    block_on(listener.close());
}

#[test]
fn nothing_hangs_where_the_provider_ignores_cancels() {
    let ignoring = plans()
        .into_iter()
        .map(|plan| Faults {
            ignore_cancel: true,
            ..plan
        })
        .collect();
    run_plans(ignoring, |client, _| {
        graceful_close_behind_a_full_window_is_bounded(client);
    });
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
