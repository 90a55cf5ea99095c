//! Several accepts in flight on one listener (issue 14): each on its own IRP, served in the
//! order WSK queued them, with the listener's own slots left free; `incoming_with_depth`
//! serving a burst; dropped posted accepts cancelled without leaks. Every scenario runs under
//! the standard fault plans (inline, deferred, mixed, reordered) with the verifier's leak
//! check at the end of each.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;

use futures_core::Stream;
use wsk_executor::{block_on, timeout};
use wsk_net::{IoBuf, TcpListener, TcpStream};

mod common;
use common::{BOUND, each_plan, listen};

/// Connects `count` std clients to `addr`, each sending its index as one byte and then
/// waiting for one byte back; returns the bytes each got back.
fn clients(addr: SocketAddr, count: u8) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let streams: Vec<std::net::TcpStream> = (0..count)
            .map(|i| {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(BOUND)).unwrap();
                s.write_all(&[i]).unwrap();
                s
            })
            .collect();
        streams
            .into_iter()
            .map(|mut s| {
                let mut back = [0u8; 1];
                s.read_exact(&mut back).expect("the server's reply");
                back[0]
            })
            .collect()
    })
}

/// Receives the client's one byte on `stream` and sends it back plus 100.
async fn answer(stream: TcpStream) -> u8 {
    let buf = IoBuf::with_capacity(16).unwrap();
    let (n, mut buf) = stream.recv_exact(buf, 1).await;
    n.expect("recv_exact");
    let byte = buf[0];
    buf.clear();
    buf.extend_from_slice(&[byte + 100]).unwrap();
    let (sent, _) = stream.send(buf).await;
    sent.expect("send");
    stream.close().await;
    byte
}

#[test]
fn several_accepts_in_flight_on_one_listener_each_get_a_connection() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let mut accepts: Vec<Pin<Box<_>>> =
                (0..4).map(|_| Box::pin(listener.accept())).collect();
            // One poll each: all four are at WSK before any client connects.
            core::future::poll_fn(|cx| {
                for accept in &mut accepts {
                    assert!(accept.as_mut().poll(cx).is_pending(), "no client yet");
                }
                Poll::Ready(())
            })
            .await;
            // The listener's own control slot is free while accepts are pending.
            assert_eq!(
                listener
                    .local_addr()
                    .await
                    .expect("local_addr while accepting"),
                addr
            );
            let peer = clients(addr, 4);
            let mut served = Vec::new();
            for accept in accepts {
                let (stream, remote) = timeout(BOUND, accept)
                    .await
                    .expect("accepted in time")
                    .expect("accept");
                assert!(remote.ip().is_loopback());
                served.push(answer(stream).await);
            }
            served.sort_unstable();
            assert_eq!(served, [0, 1, 2, 3], "each client served once");
            let mut back = peer.join().unwrap();
            back.sort_unstable();
            assert_eq!(back, [100, 101, 102, 103]);
            listener.close().await;
        });
    });
}

/// Connections in the burst `incoming_with_depth` serves.
const BURST: u8 = 12;

#[test]
fn incoming_with_depth_serves_a_burst_and_cancels_its_posted_accepts_when_dropped() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let peer = clients(addr, BURST);
            let mut served = Vec::new();
            {
                let mut incoming = core::pin::pin!(listener.incoming_with_depth::<4>());
                for _ in 0..BURST {
                    let next = timeout(
                        BOUND,
                        core::future::poll_fn(|cx| incoming.as_mut().poll_next(cx)),
                    )
                    .await
                    .expect("a connection in time")
                    .expect("the stream goes on");
                    let (stream, _) = next.expect("accept");
                    served.push(answer(stream).await);
                }
                // Dropped here with four accepts posted: cancelled, their sockets freed (the
                // plan's leak check).
            }
            served.sort_unstable();
            assert_eq!(served, (0..BURST).collect::<Vec<_>>());
            let back = peer.join().unwrap();
            assert_eq!(back, (100..100 + BURST).collect::<Vec<_>>());
            // The listener still accepts after the posted ones were cancelled.
            let late = clients(addr, 1);
            let (stream, _) = timeout(BOUND, listener.accept())
                .await
                .expect("in time")
                .expect("accept after the cancelled ones");
            assert_eq!(answer(stream).await, 0);
            assert_eq!(late.join().unwrap(), [100]);
            listener.close().await;
        });
    });
}

#[test]
fn dropping_posted_accepts_then_closing_the_listener_leaves_nothing() {
    each_plan(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            {
                let mut incoming = core::pin::pin!(listener.incoming_with_depth::<3>());
                // All three posted at WSK, then dropped (cancelled) and the listener closed.
                core::future::poll_fn(|cx| {
                    assert!(incoming.as_mut().poll_next(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            listener.close().await;
        });
    });
}
