//! Event-driven datagram receive (`UdpSocket::enable_receive_events`, `recv_from_events`,
//! `recv_batch_events`) on the host kernel's `WskReceiveFromEvent`, under every fault plan,
//! each checked for leaks (retained indication lists, MDLs, pool, IRPs) by the runner.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use wsk_executor::block_on;
use wsk_net::{DATAGRAM_LISTS_MAX, DatagramBatch, IoBuf, UdpSocket, WskClient};

mod common;
use common::{BOUND, each_plan};

fn peer() -> std::net::UdpSocket {
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(BOUND)).unwrap();
    peer
}

async fn bound(client: &WskClient) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = socket.local_addr().await.expect("local_addr");
    (socket, addr)
}

fn datagram(i: usize) -> Vec<u8> {
    (0..=i * 37)
        .map(|b| u8::try_from((b + i) % 251).unwrap())
        .collect()
}

/// Datagrams sent one at a time arrive through the callback, each once, in order, with its
/// sender; a datagram larger than the buffer is truncated to it.
#[test]
fn datagrams_arrive_through_the_callback() {
    each_plan(|client, _| {
        let peer = peer();
        let from = peer.local_addr().unwrap();
        block_on(async {
            let (socket, to) = bound(client).await;
            assert!(socket.enable_receive_events().expect("enable"));
            assert!(socket.enable_receive_events().expect("again: a no-op"));
            let mut buf = IoBuf::with_capacity(2048).unwrap();
            for i in 0..20 {
                peer.send_to(&datagram(i), to).unwrap();
                let (got, b) = socket.recv_from_events(buf).await;
                buf = b;
                let (n, sender) = got.expect("recv_from_events");
                assert_eq!(&buf[..n], &datagram(i)[..], "datagram {i}");
                assert_eq!(sender, from);
            }
            let small = IoBuf::with_capacity(10).unwrap();
            peer.send_to(&datagram(5), to).unwrap();
            let (got, small) = socket.recv_from_events(small).await;
            assert_eq!(got.expect("truncated").0, 10);
            assert_eq!(&small[..], &datagram(5)[..10]);
            // recv_datagram_events says so; a datagram of exactly the buffer's size is whole.
            peer.send_to(&datagram(5), to).unwrap();
            let (got, small) = socket.recv_datagram_events(small).await;
            let got = got.expect("recv_datagram_events");
            assert_eq!((got.len, got.from, got.truncated), (10, from, true));
            peer.send_to(&datagram(5)[..10], to).unwrap();
            let (got, small) = socket.recv_datagram_events(small).await;
            let got = got.expect("recv_datagram_events");
            assert_eq!((got.len, got.truncated), (10, false));
            assert_eq!(&small[..], &datagram(5)[..10]);
            let counts = socket.datagram_event_counts();
            assert_eq!(counts.datagrams, 23, "all through the callback: {counts:?}");
            assert_eq!(counts.not_accepted, 0);
            socket.close().await;
        });
    });
}

/// Datagrams that waited before the callback was enabled come in one indication, and one
/// `recv_batch_events` takes them all, in order, with their senders.
#[test]
fn one_indication_fills_a_batch() {
    each_plan(|client, _| {
        let peer = peer();
        let from = peer.local_addr().unwrap();
        block_on(async {
            let (socket, to) = bound(client).await;
            for i in 0..10 {
                peer.send_to(&datagram(i), to).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
            assert!(socket.enable_receive_events().expect("enable"));
            let batch = DatagramBatch::new(16, 1024).unwrap();
            let (got, batch) = socket.recv_batch_events(batch).await;
            assert_eq!(got.expect("recv_batch_events"), 10);
            for (i, (d, sender)) in batch.iter().enumerate() {
                assert_eq!(d, &datagram(i)[..], "datagram {i}");
                assert_eq!(sender, Some(from));
            }
            let counts = socket.datagram_event_counts();
            assert_eq!(counts.indications, 1, "{counts:?}");
            assert_eq!(counts.datagrams, 10, "{counts:?}");
            // A batch smaller than what is retained takes what fits; the rest waits for the
            // next receive, in order. (Fewer datagrams than DATAGRAM_LISTS_MAX: however they
            // are indicated, none meets back-pressure, which would drop it.)
            for i in 10..13 {
                peer.send_to(&datagram(i), to).unwrap();
            }
            let mut seen = Vec::new();
            let mut batch = DatagramBatch::new(2, 1024).unwrap();
            while seen.len() < 3 {
                let (got, b) = socket.recv_batch_events(batch).await;
                batch = b;
                assert!(got.expect("recv_batch_events") <= 2);
                seen.extend(batch.iter().map(|(d, _)| d.to_vec()));
            }
            let want: Vec<Vec<u8>> = (10..13).map(datagram).collect();
            assert_eq!(seen, want);
            socket.close().await;
        });
    });
}

/// Back-pressure: more indications than the socket retains while nobody receives get
/// `STATUS_DATA_NOT_ACCEPTED`; receiving drains what was retained, in order, then enables
/// the callback again, and later datagrams arrive.
#[test]
fn back_pressure_then_the_callback_again() {
    each_plan(|client, _| {
        let peer = peer();
        block_on(async {
            let (socket, to) = bound(client).await;
            assert!(socket.enable_receive_events().expect("enable"));
            // One indication each (a pause between them), nobody receiving.
            for i in 0..DATAGRAM_LISTS_MAX + 3 {
                peer.send_to(&datagram(i), to).unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
            let counts = socket.datagram_event_counts();
            assert!(counts.not_accepted > 0, "back-pressure: {counts:?}");
            let mut buf = IoBuf::with_capacity(2048).unwrap();
            let mut next = 0;
            let retained = usize::try_from(counts.datagrams).unwrap();
            for _ in 0..retained {
                let (got, b) = socket.recv_from_events(buf).await;
                buf = b;
                let n = got.expect("recv_from_events").0;
                assert_eq!(
                    &buf[..n],
                    &datagram(next)[..],
                    "retained ones first, in order"
                );
                next += 1;
            }
            // Drained: the callback is on again. What waited in the socket behind the refused
            // indication comes first (the refused one itself was dropped), in order.
            peer.send_to(b"after", to).unwrap();
            loop {
                let (got, b) = socket.recv_from_events(buf).await;
                buf = b;
                let n = got.expect("after back-pressure").0;
                if &buf[..n] == b"after" {
                    break;
                }
                let k = (next..DATAGRAM_LISTS_MAX + 3)
                    .find(|k| buf[..n] == datagram(*k)[..])
                    .expect("a later datagram, not one seen before");
                next = k + 1;
            }
            socket.close().await;
        });
    });
}

/// A receive dropped while it waits loses nothing: the datagram goes to the next receive. A
/// socket closed with lists still retained releases them (the leak check would see them).
#[test]
fn dropped_receive_and_close_with_lists_retained() {
    each_plan(|client, _| {
        let peer = peer();
        block_on(async {
            let (socket, to) = bound(client).await;
            assert!(socket.enable_receive_events().expect("enable"));
            {
                let mut waiting = pin!(socket.recv_from_events(IoBuf::with_capacity(64).unwrap()));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(waiting.as_mut().poll(&mut cx).is_pending());
            }
            peer.send_to(b"kept", to).unwrap();
            let (got, buf) = socket
                .recv_from_events(IoBuf::with_capacity(64).unwrap())
                .await;
            let n = got.expect("recv_from_events").0;
            assert_eq!(&buf[..n], b"kept");
            for i in 0..3 {
                peer.send_to(&datagram(i), to).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(socket.datagram_event_counts().datagrams >= 4);
            socket.close().await;
        });
    });
}

/// Waits (up to [`BOUND`]) until the callback has indicated `datagrams` datagrams in all.
fn wait_for_indicated(socket: &UdpSocket, datagrams: u64) {
    let deadline = std::time::Instant::now() + BOUND;
    while socket.datagram_event_counts().datagrams < datagrams {
        assert!(
            std::time::Instant::now() < deadline,
            "indicated: {:?}",
            socket.datagram_event_counts()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `disable_receive_events`: a no-op when off; after it no indication comes, the receives
/// take what the callback retained first, in order, then go on with `WskReceiveFrom` IRPs (a
/// receive that waited for the callback included); enabling again brings the callback back.
#[test]
fn disable_takes_what_was_retained_then_receives_with_irps() {
    each_plan(|client, _| {
        let peer = peer();
        block_on(async {
            let (socket, to) = bound(client).await;
            socket
                .disable_receive_events()
                .await
                .expect("never enabled: a no-op");
            assert!(socket.enable_receive_events().expect("enable"));
            // Retained while nobody receives (fewer than DATAGRAM_LISTS_MAX indications).
            for i in 0..3 {
                peer.send_to(&datagram(i), to).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            wait_for_indicated(&socket, 3);
            socket.disable_receive_events().await.expect("disable");
            socket
                .disable_receive_events()
                .await
                .expect("again: a no-op");
            let before = socket.datagram_event_counts();
            for i in 3..6 {
                peer.send_to(&datagram(i), to).unwrap();
            }
            let mut buf = IoBuf::with_capacity(2048).unwrap();
            for i in 0..6 {
                let (got, b) = socket.recv_from_events(buf).await;
                buf = b;
                let n = got.expect("recv_from_events").0;
                assert_eq!(&buf[..n], &datagram(i)[..], "datagram {i}");
            }
            assert_eq!(
                socket.datagram_event_counts(),
                before,
                "no indication after the disable"
            );
            // A receive waiting for the callback when it is disabled goes on with an IRP.
            assert!(socket.enable_receive_events().expect("enable again"));
            {
                let mut waiting = pin!(socket.recv_from_events(IoBuf::with_capacity(64).unwrap()));
                let mut cx = Context::from_waker(Waker::noop());
                assert!(waiting.as_mut().poll(&mut cx).is_pending());
                socket
                    .disable_receive_events()
                    .await
                    .expect("disable under a receive");
                peer.send_to(b"late", to).unwrap();
                let (got, late) = waiting.await;
                let n = got.expect("the waiting receive").0;
                assert_eq!(&late[..n], b"late");
            }
            assert_eq!(socket.datagram_event_counts(), before);
            // On again: the callback indicates.
            assert!(socket.enable_receive_events().expect("enable once more"));
            peer.send_to(b"again", to).unwrap();
            let (got, buf) = socket.recv_from_events(buf).await;
            let n = got.expect("after enabling again").0;
            assert_eq!(&buf[..n], b"again");
            let after = socket.datagram_event_counts();
            assert_eq!(after.datagrams, before.datagrams + 1, "{after:?}");
            socket.close().await;
        });
    });
}

/// A provider without `WskReceiveFromEvent` (the in-memory network here, as Wine 8's netio):
/// enabling reports `Ok(false)`, and `recv_from_events`, `recv_batch_events` and
/// `disable_receive_events` work on IRPs alone.
#[test]
fn without_provider_events_datagram_receives_use_irps() {
    common::each_plan_on(wsk_host::Provider::Memory, |client, _| {
        block_on(async {
            let (socket, to) = bound(client).await;
            let (sender, from) = bound(client).await;
            assert!(
                !socket.enable_receive_events().expect("enable"),
                "no events here"
            );
            for i in 0..3 {
                let (sent, _) = sender
                    .send_to(IoBuf::from_slice(&datagram(i)).unwrap(), to)
                    .await;
                sent.expect("send_to");
            }
            let (got, buf) = socket
                .recv_from_events(IoBuf::with_capacity(2048).unwrap())
                .await;
            let (n, sender_addr) = got.expect("recv_from_events");
            assert_eq!(&buf[..n], &datagram(0)[..]);
            assert_eq!(sender_addr, from);
            let mut seen = Vec::new();
            let mut batch = DatagramBatch::new(4, 2048).unwrap();
            while seen.len() < 2 {
                let (got, b) = socket.recv_batch_events(batch).await;
                batch = b;
                got.expect("recv_batch_events");
                seen.extend(batch.iter().map(|(d, _)| d.to_vec()));
            }
            assert_eq!(seen, vec![datagram(1), datagram(2)]);
            socket
                .disable_receive_events()
                .await
                .expect("nothing to disable");
            assert_eq!(
                socket.datagram_event_counts(),
                wsk_net::DatagramEventCounts::default()
            );
            sender.close().await;
            socket.close().await;
        });
    });
}
