//! Zero-copy MDL I/O and UDP batches end to end on the host kernel's in-memory network, the
//! part of issue 14's data features Miri runs (`cargo +nightly miri test -p wsk-net --test
//! miri_data`): `MdlBuf`'s walk of a caller's chain and its release, `DatagramBatch`'s pool
//! table and storage, the `WSK_BUF_LIST` a `WskSendMessages` reads, and a chain held by a
//! receive dropped in flight until its completion. Both ends are this kernel's sockets, so no
//! host socket is needed; outside Miri the scenarios also run on the host's loopback.
//!
//! Each scenario runs on a fresh kernel per plan and provider and ends with the verifier's
//! leak check and no bugcheck. Under Miri the plans are cut to two (inline; mixed with
//! reordering and delays).
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use wsk_executor::block_on;
use wsk_net::{DatagramBatch, IoBuf, TcpListener, TcpStream, UdpSocket, WskClient};

mod common;
use common::chain::Chain;
use common::loopback;

/// [`common::each_provider_and_plan`] for scenarios that need only the client.
fn each_kernel(scenario: impl Fn(&WskClient) + Sync) {
    common::each_provider_and_plan(|client, _| scenario(client));
}

async fn connected(client: &WskClient) -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, loopback()).await.expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let near = TcpStream::connect(client, addr).await.expect("connect");
    let (far, _) = listener.accept().await.expect("accept");
    (listener, near, far)
}

#[test]
fn a_three_mdl_chain_goes_out_and_comes_in_byte_exact() {
    each_kernel(|client| {
        let out = Chain::new(&[3, 5, 7], 0);
        let into = Chain::new(&[4, 4, 4, 4], 0);
        let pattern: Vec<u8> = (1..=15).collect();
        out.write(&pattern);
        block_on(async {
            let (listener, near, far) = connected(client).await;
            let (sent, buf) = near
                .send_mdl(out.buf(1, 13).expect("a range inside the chain"))
                .await;
            assert_eq!(sent.expect("send_mdl"), 13);
            drop(buf);
            let (got, buf) = far
                .recv_mdl(into.buf(2, 13).expect("a range inside the chain"), true)
                .await;
            assert_eq!(got.expect("recv_mdl"), 13);
            drop(buf);
            assert_eq!(&into.bytes()[2..15], &pattern[1..14]);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
        assert_eq!((out.releases(), into.releases()), (1, 1));
        out.free();
        into.free();
    });
}

#[test]
fn a_receive_dropped_in_flight_releases_its_chain_after_completion() {
    each_kernel(|client| {
        let mut chain = Chain::new(&[2, 6], 0);
        chain.free_on_release = true;
        block_on(async {
            let (listener, near, far) = connected(client).await;
            {
                let mut recv =
                    pin!(far.recv_mdl(chain.buf(0, 8).expect("a range inside the chain"), false));
                let first = recv.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(first.is_pending(), "nothing sent yet");
                assert_eq!(chain.releases(), 0);
            }
            // Data after the drop must not reach the (freed) chain.
            let (sent, _) = near.send(IoBuf::from_slice(b"late").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
        assert_eq!(chain.releases(), 1);
    });
}

#[test]
fn a_batch_goes_out_in_one_call_and_comes_in_with_its_senders() {
    each_kernel(|client| {
        block_on(async {
            let a = UdpSocket::bind(client, loopback()).await.expect("bind a");
            let b = UdpSocket::bind(client, loopback()).await.expect("bind b");
            let a_addr = a.local_addr().await.expect("a local_addr");
            let b_addr = b.local_addr().await.expect("b local_addr");
            let mut batch = DatagramBatch::new(4, 8).unwrap();
            for datagram in [&b"one"[..], b"two", b"three"] {
                batch.push(datagram).unwrap();
            }
            let (sent, _) = a.send_batch(batch, b_addr).await;
            assert_eq!(sent.expect("send_batch"), 3);
            let mut received = Vec::new();
            let mut batch = DatagramBatch::new(2, 8).unwrap();
            while received.len() < 3 {
                let (got, back) = b.recv_batch(batch).await;
                batch = back;
                got.expect("recv_batch");
                for (datagram, from) in batch.iter() {
                    assert_eq!(from, Some(a_addr));
                    received.push(datagram.to_vec());
                }
            }
            assert_eq!(received, [&b"one"[..], b"two", b"three"]);
            // One datagram straight into a chain.
            let chain = Chain::new(&[2, 2, 2], 0);
            let (sent, _) = a.send_to(IoBuf::from_slice(b"mdl!").unwrap(), b_addr).await;
            assert_eq!(sent.expect("send_to"), 4);
            let (got, buf) = b
                .recv_from_mdl(chain.buf(1, 5).expect("a range inside the chain"))
                .await;
            assert_eq!(got.expect("recv_from_mdl"), (4, a_addr));
            drop(buf);
            assert_eq!(&chain.bytes()[1..5], b"mdl!");
            chain.free();
            a.close().await;
            b.close().await;
        });
    });
}
