//! The IRPs an accepted connection holds (issue 11, memory per idle connection): two (its
//! close IRP, and the one its accept ran on, which its operations one after the other share),
//! one more for an operation overlapping another, none after its close. Counted with the host
//! kernel's live IRPs, under the standard fault plans.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::{Future, poll_fn};
use std::io::{Read, Write};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::testing::kernel_usage;
use wsk_net::IoBuf;

mod common;
use common::{BOUND, each_plan, listen};

/// The running kernel's live IRPs.
fn live_irps() -> usize {
    kernel_usage().irps
}

/// Waits (bounded) for the live IRPs to come back to `expected`, which a closed socket's last
/// reference frees, possibly just after its close was reported; returns the last count.
fn irps_settle_to(expected: usize) -> usize {
    let deadline = Instant::now() + BOUND;
    loop {
        let now = live_irps();
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_connection_holds_its_posted_receive_and_close_irps_and_one_more_per_overlapping_operation() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let before = live_irps();
            let mut peer = std::net::TcpStream::connect(addr).expect("connect");
            peer.set_read_timeout(Some(BOUND)).unwrap();
            let (stream, _) = listener.accept().await.expect("accept");
            let held = || live_irps() - before;
            assert_eq!(held(), 2, "a fresh connection: its spare and close IRPs");
            // One operation after the other, on three slots: they share one IRP.
            for round in 0..3u8 {
                peer.write_all(&[round]).unwrap();
                let (received, buf) = stream.recv_exact(IoBuf::with_capacity(8).unwrap(), 1).await;
                received.expect("recv_exact");
                let (sent, _) = stream.send(buf).await;
                sent.expect("send");
                let mut back = [0u8; 1];
                peer.read_exact(&mut back).expect("the echo");
                assert_eq!(back, [round]);
                stream.peer_addr().await.expect("peer_addr");
                assert_eq!(
                    held(),
                    2,
                    "round {round}: sequential operations share one IRP"
                );
            }
            // A receive posted while a send goes out: the send needs a second IRP.
            {
                let mut recv = pin!(stream.recv(IoBuf::with_capacity(8).unwrap()));
                poll_fn(|cx| {
                    assert!(recv.as_mut().poll(cx).is_pending(), "nothing sent yet");
                    Poll::Ready(())
                })
                .await;
                assert_eq!(held(), 2, "the posted receive took the spare");
                let mut out = IoBuf::with_capacity(8).unwrap();
                out.extend_from_slice(b"y").unwrap();
                let (sent, _) = stream.send(out).await;
                sent.expect("send beside the receive");
                assert_eq!(held(), 3, "the overlapping send allocated its own");
                peer.write_all(b"z").unwrap();
                let (received, _) = recv.await;
                assert_eq!(received.expect("the posted receive"), 1);
            }
            // Both IRPs are kept (one as the spare): overlapping again allocates nothing.
            {
                let mut recv = pin!(stream.recv(IoBuf::with_capacity(8).unwrap()));
                poll_fn(|cx| {
                    assert!(recv.as_mut().poll(cx).is_pending(), "nothing sent yet");
                    Poll::Ready(())
                })
                .await;
                let mut out = IoBuf::with_capacity(8).unwrap();
                out.extend_from_slice(b"w").unwrap();
                let (sent, _) = stream.send(out).await;
                sent.expect("send beside the receive");
                assert_eq!(held(), 3, "no IRP allocated twice");
                drop(peer);
                // The peer's close ends it: end of stream, or a reset for the unread echo.
                let _ = recv.await;
            }
            stream.close().await;
            assert_eq!(
                irps_settle_to(before),
                before,
                "a closed connection frees every IRP it held"
            );
            listener.close().await;
        });
    });
}
