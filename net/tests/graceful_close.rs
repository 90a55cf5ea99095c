//! Closing a connection: graceful by default (`close().await` and drop send the final data,
//! then FIN, and the peer reads end of stream, not a reset), reset only on purpose
//! (`abort()`), and the graceful disconnect bounded (a peer that never acknowledges the FIN
//! gets a reset once the close limit has passed, and neither `close()` nor deregistration
//! hangs). Every scenario runs under the standard fault plans with the verifier's leak check.
#![cfg(unix)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{ErrorKind as IoErrorKind, Read};
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::faults::{self, Faults, LowResources, Resource, ResourceSet};
use wsk_net::{IoBuf, TcpStream};

mod common;
use common::{BOUND, connected, each_plan, plans, run_plans};

/// The reply each scenario sends last, before the close.
const FINAL_REPLY: &[u8] = b"the last line before the close\n";

/// The close limit of the bound scenarios: short, so that the tests stay quick.
const SHORT_LIMIT: Duration = Duration::from_millis(300);

/// Sends [`FINAL_REPLY`] on `stream`.
async fn send_final_reply(stream: &TcpStream) {
    let (sent, _buf) = stream
        .send(IoBuf::from_slice(FINAL_REPLY).expect("buffer"))
        .await;
    assert_eq!(sent.expect("send"), FINAL_REPLY.len());
}

/// What the peer saw before a reset, asserting that a reset (RST) is what ended it.
fn read_until_reset(peer: &mut std::net::TcpStream) -> Vec<u8> {
    let (seen, error) = read_until_end(peer);
    assert_eq!(
        error,
        Some(IoErrorKind::ConnectionReset),
        "the peer saw RST"
    );
    seen
}

/// What the peer saw: every byte up to end of stream (FIN), or the error that ended it.
fn read_until_end(peer: &mut std::net::TcpStream) -> (Vec<u8>, Option<IoErrorKind>) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match peer.read(&mut chunk) {
            Ok(0) => return (seen, None),
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
            Err(e) => return (seen, Some(e.kind())),
        }
    }
}

/// Asserts the peer got the final reply and then FIN, no reset.
fn assert_final_reply_then_fin(peer: &mut std::net::TcpStream) {
    let (seen, error) = read_until_end(peer);
    assert_eq!(error, None, "the peer saw an error, not FIN");
    assert_eq!(seen, FINAL_REPLY, "the final reply arrived whole");
}

#[test]
fn close_after_a_final_send_delivers_it_and_the_peer_sees_fin() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            send_final_reply(&stream).await;
            stream.close().await;
            assert_final_reply_then_fin(&mut peer);
            listener.close().await;
        });
    });
}

#[test]
fn drop_after_a_final_send_delivers_it_and_the_peer_sees_fin() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            send_final_reply(&stream).await;
            drop(stream);
            assert_final_reply_then_fin(&mut peer);
            listener.close().await;
        });
    });
}

#[test]
fn abort_resets_the_connection() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            stream.abort().await;
            let seen = read_until_reset(&mut peer);
            assert!(seen.is_empty(), "nothing was sent");
            listener.close().await;
        });
    });
}

#[test]
fn a_close_that_cannot_allocate_its_disconnect_irp_resets_and_leaks_nothing() {
    // The closing disconnect's IRP is allocated by the close (an idle connection does not
    // hold it): when that allocation fails, the close goes out at once, as a reset.
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            let every_irp_fails = LowResources {
                resources: ResourceSet::only(Resource::Irp),
                ..LowResources::failing(100)
            };
            faults::set_low_resources(Some(every_irp_fails), 1);
            stream.close().await;
            let failed_irps = faults::injected_failures().of(Resource::Irp);
            faults::set_low_resources(None, 0);
            assert_eq!(failed_irps, 1, "the close asked for exactly one IRP");
            let seen = read_until_reset(&mut peer);
            assert!(seen.is_empty(), "nothing was sent");
            listener.close().await;
        });
    });
}

#[test]
fn dropping_an_abort_resets_without_waiting() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            drop(stream.abort());
            read_until_reset(&mut peer);
            listener.close().await;
        });
    });
}

/// The standard plans, with graceful disconnects that never complete (a peer that never
/// acknowledges the FIN).
fn unacknowledged_plans() -> Vec<Faults> {
    plans()
        .into_iter()
        .map(|plan| Faults {
            disconnect_unacknowledged: true,
            ..plan
        })
        .collect()
}

#[test]
fn a_graceful_close_that_cannot_finish_resets_after_the_close_limit() {
    run_plans(unacknowledged_plans(), |client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            stream.set_close_limit(SHORT_LIMIT);
            let started = Instant::now();
            stream.close().await;
            let took = started.elapsed();
            // The close waited for its disconnect up to the limit, then gave up: not at once
            // (that would be no graceful attempt), and not forever. (A tenth of slack: the
            // kernel timer's clock is not `Instant`'s.)
            assert!(
                took >= SHORT_LIMIT * 9 / 10,
                "close returned after {took:?}"
            );
            assert!(took < BOUND, "close took {took:?}");
            read_until_reset(&mut peer);
            listener.close().await;
        });
    });
}

#[test]
fn a_dropped_stream_whose_close_cannot_finish_resets_after_the_close_limit() {
    run_plans(unacknowledged_plans(), |client, _| {
        block_on(async {
            let (listener, mut peer, stream) = connected(client).await;
            stream.set_close_limit(SHORT_LIMIT);
            let started = Instant::now();
            drop(stream);
            let (_, error) = read_until_end(&mut peer);
            let took = started.elapsed();
            assert_eq!(
                error,
                Some(IoErrorKind::ConnectionReset),
                "the peer saw RST"
            );
            assert!(
                took >= SHORT_LIMIT * 9 / 10,
                "the reset came after {took:?}"
            );
            listener.close().await;
        });
    });
}

/// Streams dropped just before deregistration are still closing (their disconnects stuck until
/// the limit) when `WskClient::deregister` runs: it waits for them, and the verifier finds
/// nothing left (`run_plans` deregisters and checks for leaks after the scenario).
#[test]
fn deregistration_waits_for_streams_closing_gracefully() {
    run_plans(unacknowledged_plans(), |client, _| {
        let peers = block_on(async {
            let mut peers = Vec::new();
            let (listener, peer, stream) = connected(client).await;
            stream.set_close_limit(SHORT_LIMIT);
            send_final_reply(&stream).await;
            drop(stream);
            peers.push(peer);
            let addr = listener.local_addr().await.expect("local_addr");
            let second = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, _) = listener.accept().await.expect("accept");
            stream.set_close_limit(SHORT_LIMIT);
            drop(stream);
            peers.push(second);
            drop(listener);
            peers
        });
        drop(peers);
    });
}

/// Without the fault, the same unload: streams dropped right before deregistration close
/// gracefully, and their peers read end of stream.
#[test]
fn deregistration_after_graceful_drops_is_clean() {
    each_plan(|client, _| {
        let mut peer = block_on(async {
            let (listener, peer, stream) = connected(client).await;
            send_final_reply(&stream).await;
            drop(stream);
            drop(listener);
            peer
        });
        assert_final_reply_then_fin(&mut peer);
    });
}
