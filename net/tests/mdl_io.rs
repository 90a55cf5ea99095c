//! Zero-copy I/O from and into a caller's MDL chain (issue 14): a chain of three MDLs sent and
//! received byte-exact (with the range starting inside the second MDL), a receive whose
//! future is dropped while WSK holds the chain (the chain is released once, after the
//! completion routine ran), and the constructor's refusals. Every scenario runs under the
//! standard fault plans and ends with the verifier's leak check.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Waker};

use wsk_executor::block_on;
use wsk_net::{ErrorKind, TcpListener, TcpStream, WskClient};

mod common;
use common::chain::Chain;
use common::{BOUND, each_plan};

async fn connected_pair(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().await.expect("local_addr");
    let peer = std::net::TcpStream::connect(addr).unwrap();
    peer.set_read_timeout(Some(BOUND)).unwrap();
    peer.set_write_timeout(Some(BOUND)).unwrap();
    let (stream, _) = listener.accept().await.expect("accept");
    (listener, peer, stream)
}

#[test]
fn a_chain_of_three_mdls_is_sent_and_received_byte_exact() {
    each_plan(|client, _| {
        let chain = Chain::new(&[5, 7, 11], 0);
        let pattern: Vec<u8> = (1..=23).collect();
        chain.write(&pattern);
        block_on(async {
            let (listener, mut peer, stream) = connected_pair(client).await;

            // The whole chain, then a range that starts inside the second MDL.
            let (sent, buf) = stream.send_mdl(chain.buf(0, 23).unwrap()).await;
            assert_eq!(sent.expect("send_mdl"), 23);
            drop(buf);
            let (sent, buf) = stream.send_mdl(chain.buf(7, 12).unwrap()).await;
            assert_eq!(sent.expect("send_mdl"), 12);
            drop(buf);
            let mut got = [0u8; 35];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got[..23], &pattern[..]);
            assert_eq!(&got[23..], &pattern[7..19], "from offset 7 (MDL 2, byte 2)");

            // Received into bytes [3, 21): across all three MDLs, the rest untouched.
            let incoming: Vec<u8> = (100..118).collect();
            peer.write_all(&incoming).unwrap();
            chain.write(&[0xEE; 23]);
            let (n, buf) = stream.recv_mdl(chain.buf(3, 18).unwrap(), true).await;
            assert_eq!(n.expect("recv_mdl exact"), 18);
            assert_eq!((buf.offset(), buf.len(), buf.chain_len()), (3, 18, 23));
            drop(buf);
            let bytes = chain.bytes();
            assert_eq!(&bytes[..3], &[0xEE; 3]);
            assert_eq!(&bytes[3..21], &incoming[..]);
            assert_eq!(&bytes[21..], &[0xEE; 2]);

            stream.close().await;
            listener.close().await;
        });
        assert_eq!(
            chain.releases(),
            3,
            "each MdlBuf released once, when dropped"
        );
        chain.free();
    });
}

#[test]
fn a_dropped_receive_holds_the_chain_until_its_completion() {
    each_plan(|client, _| {
        let mut chain = Chain::new(&[4, 4, 4], 0);
        chain.free_on_release = true;
        block_on(async {
            let (listener, mut peer, stream) = connected_pair(client).await;
            {
                let mut recv = pin!(stream.recv_mdl(chain.buf(0, 12).unwrap(), false));
                let pending = recv.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(pending.is_pending(), "no data yet: WSK holds the chain");
                assert_eq!(chain.releases(), 0, "held while WSK has it");
            }
            // Dropped in flight: cancelled; the chain goes back through the release routine
            // (which frees it) once the completion routine ran, never twice. Data the peer
            // sends now must not reach it.
            peer.write_all(b"late").unwrap();
            stream.close().await;
            assert_eq!(chain.releases(), 1, "released once, by the completion");
            // The stream is gone: nothing reaches the chain any more.
            let mut end = [0u8; 1];
            assert_eq!(peer.read(&mut end).unwrap_or(0), 0);
            listener.close().await;
        });
        // Freed by its release routine; the leak check sees every MDL and block gone.
        drop(chain);
    });
}

#[test]
fn ranges_outside_the_chain_are_refused() {
    each_plan(|_, _| {
        let chain = Chain::new(&[8, 8], 0);
        for (offset, len) in [(0, 0), (0, 17), (16, 1), (9, 8), (usize::MAX, 2)] {
            let error = chain.buf(offset, len).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{offset}+{len}");
        }
        let buf = chain.buf(8, 8).unwrap();
        let (head, context) = buf.into_raw();
        assert_eq!(head, chain.blocks[0].2);
        assert_eq!(context, std::ptr::from_ref(&chain).cast_mut().cast());
        assert_eq!(
            chain.releases(),
            0,
            "into_raw gives the chain back unreleased"
        );
        chain.free();
    });
}

#[test]
fn a_datagram_is_sent_from_a_chain_of_three_mdls() {
    each_plan(|client, _| {
        let chain = Chain::new(&[3, 4, 5], 0);
        chain.write(b"abcdefghijkl");
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let to = peer.local_addr().unwrap();
        block_on(async {
            let socket = wsk_net::UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let (sent, buf) = socket.send_to_mdl(chain.buf(2, 9).unwrap(), to).await;
            assert_eq!(sent.expect("send_to_mdl"), 9);
            drop(buf);
            let mut got = [0u8; 16];
            let (n, _) = peer.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], b"cdefghijk", "one datagram from bytes [2, 11)");
            socket.close().await;
        });
        assert_eq!(chain.releases(), 1);
        chain.free();
    });
}

#[test]
fn a_datagram_is_received_into_a_chain_of_three_mdls() {
    each_plan(|client, _| {
        let chain = Chain::new(&[2, 3, 4], 0xEE);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = peer.local_addr().unwrap();
        block_on(async {
            let socket = wsk_net::UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let me = socket.local_addr().await.expect("local_addr");
            peer.send_to(b"1234567", me).unwrap();
            let (got, buf) = socket.recv_from_mdl(chain.buf(1, 7).unwrap()).await;
            assert_eq!(got.expect("recv_from_mdl"), (7, from));
            drop(buf);
            assert_eq!(
                chain.bytes(),
                b"\xEE1234567\xEE",
                "bytes [1, 8) across all three"
            );
            socket.close().await;
        });
        assert_eq!(chain.releases(), 1);
        chain.free();
    });
}

/// A provider that ignores `WSK_FLAG_WAITALL` (Wine 8) completes an exact receive short; the
/// rest of the range is received by further receives, after what arrived. Under the inline
/// plan the first receive always completes with the first part alone (it is all there is when
/// the receive is issued), so without the continuation the receive would end `NotConnected`.
#[test]
fn an_exact_receive_completed_short_continues_into_the_rest_of_the_chain() {
    let plans = common::plans()
        .into_iter()
        .map(|plan| wsk_host::faults::Faults {
            ignore_waitall: true,
            ..plan
        })
        .collect();
    common::run_plans(plans, |client, _| {
        let chain = Chain::new(&[5, 7, 11], 0);
        block_on(async {
            let (listener, mut peer, stream) = connected_pair(client).await;
            peer.write_all(b"hello").unwrap();
            let (n, buf) = {
                let mut recv = pin!(stream.recv_mdl(chain.buf(2, 12).unwrap(), true));
                let first = recv.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(first.is_pending(), "7 bytes still missing");
                peer.write_all(b" world!").unwrap();
                recv.await
            };
            assert_eq!(n.expect("recv_mdl exact"), 12);
            drop(buf);
            assert_eq!(&chain.bytes()[2..14], b"hello world!");
            stream.close().await;
            listener.close().await;
        });
        assert_eq!(chain.releases(), 1);
        chain.free();
    });
}

/// `timeout` bounds a receive into a chain: with nothing arriving it ends `TimedOut` with the
/// chain back, unreleased, and nothing written into it.
#[test]
fn a_chain_receive_is_bounded_by_timeout_and_gives_the_chain_back() {
    each_plan(|client, _| {
        let chain = Chain::new(&[4, 4], 7);
        block_on(async {
            let (listener, _peer, stream) = connected_pair(client).await;
            let limit = std::time::Duration::from_millis(20);
            let recv = stream.recv_mdl(chain.buf(0, 8).unwrap(), false);
            let (n, buf) = wsk_net::timeout(limit, recv).await;
            assert_eq!(n.unwrap_err().kind(), wsk_net::ErrorKind::TimedOut);
            assert_eq!(chain.releases(), 0, "back, not released");
            drop(buf);
            stream.close().await;
            listener.close().await;
        });
        assert_eq!(chain.bytes(), vec![7; 8]);
        assert_eq!(chain.releases(), 1);
        chain.free();
    });
}
