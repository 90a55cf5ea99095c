//! UDP batching (issue 14): [`UdpSocket::send_batch`] (`WskSendMessages`),
//! [`UdpSocket::recv_batch`] (the first datagram awaited, then those already queued), a batch
//! whose receive is dropped in flight, and a zero-copy datagram from an MDL. Every scenario
//! runs under the standard fault plans and ends with the verifier's leak check.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Waker};

use wsk_executor::block_on;
use wsk_host::faults::Completion;
use wsk_net::{DatagramBatch, ErrorKind, UdpSocket, WskClient};

mod common;
use common::{BOUND, each_plan};

fn peer() -> (std::net::UdpSocket, SocketAddr) {
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(BOUND)).unwrap();
    let addr = peer.local_addr().unwrap();
    (peer, addr)
}

async fn bound(client: &WskClient) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = socket.local_addr().await.expect("local_addr");
    (socket, addr)
}

fn datagram(i: usize) -> Vec<u8> {
    (0..=i).map(|b| u8::try_from(b * 7 + i).unwrap()).collect()
}

#[test]
fn a_batch_is_sent_as_its_datagrams_in_order() {
    each_plan(|client, _| {
        let (peer, to) = peer();
        block_on(async {
            let (socket, me) = bound(client).await;
            let mut batch = DatagramBatch::new(8, 64).unwrap();
            for i in 0..5 {
                batch.push(&datagram(i)).unwrap();
            }
            let (sent, batch) = socket.send_batch(batch, to).await;
            assert_eq!(sent.expect("send_batch"), 5);
            assert_eq!(batch.len(), 5, "the batch comes back as it was");
            let mut got = [0u8; 64];
            for i in 0..5 {
                let (n, from) = peer.recv_from(&mut got).unwrap();
                assert_eq!(&got[..n], &datagram(i)[..], "datagram {i}");
                assert_eq!(from, me);
            }
            // An empty batch sends nothing.
            let (sent, _) = socket
                .send_batch(DatagramBatch::new(1, 1).unwrap(), to)
                .await;
            assert_eq!(sent.unwrap(), 0);
            socket.close().await;
        });
    });
}

#[test]
fn queued_datagrams_are_received_in_one_batch() {
    each_plan(|client, kernel| {
        let (peer, peer_addr) = peer();
        let inline = kernel.config().faults.completion == Completion::Inline;
        block_on(async {
            let (socket, me) = bound(client).await;
            for i in 0..5 {
                peer.send_to(&datagram(i), me).unwrap();
            }
            let mut batch = DatagramBatch::new(4, 64).unwrap();
            let mut received: Vec<(Vec<u8>, Option<SocketAddr>)> = Vec::new();
            let mut calls = Vec::new();
            while received.len() < 5 {
                let (got, back) = socket.recv_batch(batch).await;
                batch = back;
                let got = got.expect("recv_batch");
                assert!(got >= 1 && got == batch.len() && got <= 4);
                calls.push(got);
                received.extend(batch.iter().map(|(d, from)| (d.to_vec(), from)));
            }
            for (i, (data, from)) in received.iter().enumerate() {
                assert_eq!(data, &datagram(i), "datagram {i}, in order");
                assert_eq!(*from, Some(peer_addr));
            }
            if inline {
                // Queued on loopback before the call, completed inline: one call takes as many
                // as the batch holds.
                assert_eq!(calls, vec![4, 1], "batches of what was queued");
            }
            socket.close().await;
        });
    });
}

#[test]
fn a_long_datagram_is_truncated_to_its_slot() {
    each_plan(|client, _| {
        let (peer, _) = peer();
        block_on(async {
            let (socket, me) = bound(client).await;
            peer.send_to(&[9u8; 100], me).unwrap();
            let (got, batch) = socket.recv_batch(DatagramBatch::new(2, 10).unwrap()).await;
            // The bytes that fit, the rest of the datagram dropped (as recvfrom truncates).
            assert_eq!(got.expect("recv_batch"), 1);
            assert_eq!(batch.get(0), Some(&[9u8; 10][..]));
            socket.close().await;
        });
    });
}

#[test]
fn a_dropped_batch_receive_frees_the_batch_after_completion() {
    each_plan(|client, _| {
        let (peer, _) = peer();
        block_on(async {
            let (socket, me) = bound(client).await;
            {
                let mut recv = pin!(socket.recv_batch(DatagramBatch::new(4, 64).unwrap()));
                let pending = recv.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(pending.is_pending(), "nothing queued: WSK holds the batch");
            }
            // Still usable: the next receive gets the next datagram.
            peer.send_to(b"after", me).unwrap();
            let (got, batch) = socket.recv_batch(DatagramBatch::new(4, 64).unwrap()).await;
            assert_eq!(got.expect("recv_batch after a dropped one"), 1);
            assert_eq!(batch.get(0), Some(&b"after"[..]));
            socket.close().await;
        });
    });
}

#[test]
fn batches_refuse_bad_sizes_and_overfull_pushes() {
    each_plan(|_, _| {
        for (max, size) in [(0, 10), (10, 0), (1025, 1), (1, 65_536)] {
            let error = DatagramBatch::new(max, size).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{max} x {size}");
        }
        let mut batch = DatagramBatch::new(2, 4).unwrap();
        assert_eq!(
            batch.push(b"12345").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        batch.push(b"1234").unwrap();
        batch.push(b"").unwrap();
        assert_eq!(
            batch.push(b"x").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            (batch.get(0), batch.get(1)),
            (Some(&b"1234"[..]), Some(&b""[..]))
        );
        assert_eq!((batch.get(2), batch.sender(0)), (None, None));
        batch.clear();
        assert!(batch.is_empty());
    });
}

/// A provider without `WskSendMessages` (Windows 7; the host's is made to answer
/// `STATUS_NOT_IMPLEMENTED` here, as a missing table entry does) gets one `WskSendTo` per
/// datagram, with the same result.
#[test]
fn without_send_messages_a_batch_goes_one_send_to_per_datagram() {
    use wsk_host::faults::{ErrorRule, WskOp};
    let plans = common::plans()
        .into_iter()
        .map(|plan| wsk_host::faults::Faults {
            errors: vec![ErrorRule {
                // WskSendMessages counts as a WskSendTo in fault plans: the first call.
                op: WskOp::SendTo,
                nth: 1,
                status: wsk_sys::STATUS_NOT_IMPLEMENTED,
            }],
            ..plan
        })
        .collect();
    common::run_plans(plans, |client, _| {
        let (peer, to) = peer();
        block_on(async {
            let (socket, _) = bound(client).await;
            let mut batch = DatagramBatch::new(3, 16).unwrap();
            for i in 0..3 {
                batch.push(&datagram(i)).unwrap();
            }
            let (sent, _) = socket.send_batch(batch, to).await;
            assert_eq!(sent.expect("send_batch by WskSendTo"), 3);
            let mut got = [0u8; 16];
            for i in 0..3 {
                let (n, _) = peer.recv_from(&mut got).unwrap();
                assert_eq!(&got[..n], &datagram(i)[..]);
            }
            socket.close().await;
        });
    });
}

/// Datagrams arriving while batches are being received (a concurrent sender) are each
/// received once, in order: the receive a batch cancels when nothing is queued either
/// completed with a datagram (kept) or left it queued for the next batch.
#[test]
fn no_datagram_is_lost_or_repeated_when_batches_cancel_their_last_receive() {
    const COUNT: u32 = 100;
    each_plan(|client, _| {
        block_on(async {
            let (socket, me) = bound(client).await;
            let sender = std::thread::spawn(move || {
                let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for i in 0..COUNT {
                    peer.send_to(&i.to_le_bytes(), me).unwrap();
                    if i % 10 == 9 {
                        std::thread::yield_now();
                    }
                }
            });
            let mut batch = DatagramBatch::new(8, 16).unwrap();
            let mut next = 0u32;
            while next < COUNT {
                let (got, back) = socket.recv_batch(batch).await;
                batch = back;
                got.expect("recv_batch");
                for (datagram, _) in batch.iter() {
                    let seen = u32::from_le_bytes(datagram.try_into().expect("4 bytes"));
                    assert_eq!(seen, next, "in order, none lost or repeated");
                    next += 1;
                }
            }
            sender.join().unwrap();
            socket.close().await;
        });
    });
}

/// `timeout` bounds a batch receive: with nothing arriving it ends `TimedOut` with the batch
/// back (empty), and the socket receives the next datagram normally.
#[test]
fn a_batch_receive_is_bounded_by_timeout_and_gives_the_batch_back() {
    each_plan(|client, _| {
        let (peer, _) = peer();
        block_on(async {
            let (socket, me) = bound(client).await;
            let batch = DatagramBatch::new(4, 16).unwrap();
            let limit = std::time::Duration::from_millis(20);
            let (got, batch) = wsk_net::timeout(limit, socket.recv_batch(batch)).await;
            assert_eq!(got.unwrap_err().kind(), ErrorKind::TimedOut);
            assert!(batch.is_empty());
            peer.send_to(b"late", me).unwrap();
            let (got, batch) = socket.recv_batch(batch).await;
            assert_eq!(got.expect("recv_batch after a timeout"), 1);
            assert_eq!(batch.get(0), Some(&b"late"[..]));
            socket.close().await;
        });
    });
}
