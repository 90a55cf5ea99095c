//! Event-callback control on the host kernel's WSK provider: static event callbacks
//! (`WskClient::set_static_event_callbacks`), disabling receive events while indications race
//! the disable (`TcpStream::disable_receive_events`), and the ideal send backlog. Under every
//! fault plan, each checked for leaks by the runner.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::time::Duration;

use wsk_executor::block_on;
use wsk_net::{ErrorKind, IoBuf, StaticEvents, TcpStream};

mod common;
use common::{BOUND, each_plan};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

/// A std listener on loopback, with a peer thread that accepts one connection and runs `peer`
/// on it; the listener's address.
fn std_peer<R: Send + 'static>(
    peer: impl FnOnce(std::net::TcpStream) -> R + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<R>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        s.set_write_timeout(Some(BOUND)).unwrap();
        peer(s)
    });
    (addr, thread)
}

/// `future`'s output, or a failure once `BOUND` passed (a test must not hang).
async fn within_bound<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut bound = std::pin::pin!(wsk_executor::sleep(BOUND));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(cx) {
            return std::task::Poll::Ready(out);
        }
        assert!(
            bound.as_mut().poll(cx).is_pending(),
            "nothing within {BOUND:?}"
        );
        std::task::Poll::Pending
    })
    .await
}

/// Receives with `recv_events` until FIN: every byte, in order.
async fn recv_all(stream: &TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = IoBuf::with_capacity(4096).unwrap();
    loop {
        buf.clear();
        let (n, b) = stream.recv_events(buf).await;
        buf = b;
        if n.expect("recv_events") == 0 {
            return got;
        }
        got.extend_from_slice(&buf);
    }
}

/// Static receive and disconnect callbacks: set before the first socket (and refused after
/// it); a stream receives through them with no `SO_WSK_EVENT_CALLBACK`, including the data
/// that came before its receive state existed; another stream that never enables receive
/// events still gets everything with IRPs; static events cannot be disabled.
#[test]
fn static_receive_events() {
    each_plan(|client, _| {
        assert!(
            client
                .set_static_event_callbacks(StaticEvents::RECEIVE | StaticEvents::DISCONNECT)
                .expect("static events"),
            "the host provider has them"
        );
        block_on(async {
            let (go_on, wait) = mpsc::channel::<()>();
            let data = pattern(40_000);
            let sent = data.clone();
            let (addr, peer) = std_peer(move |mut s| {
                // Some before the stream enables its receive events, the rest after.
                s.write_all(&sent[..1_000]).unwrap();
                wait.recv_timeout(BOUND).unwrap();
                for chunk in sent[1_000..].chunks(3_000) {
                    s.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
                s.shutdown(Shutdown::Write).unwrap();
            });
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            assert_eq!(
                client
                    .set_static_event_callbacks(StaticEvents::RECEIVE)
                    .expect_err("after a socket")
                    .kind(),
                ErrorKind::InvalidState
            );
            std::thread::sleep(Duration::from_millis(20));
            assert!(stream.enable_receive_events().expect("enable"));
            go_on.send(()).unwrap();
            assert!(recv_all(&stream).await == data, "every byte in order");
            let counts = stream.receive_event_counts();
            assert!(
                counts.consumed + counts.retained > 0,
                "data came through the static callbacks: {counts:?}"
            );
            assert_eq!(
                stream
                    .disable_receive_events()
                    .await
                    .expect_err("static")
                    .kind(),
                ErrorKind::InvalidInput
            );
            stream.close().await;
            peer.join().unwrap();

            // A stream that never enables receive events: plain IRP receives get it all.
            let (addr, peer) = std_peer(move |mut s| {
                s.write_all(b"plain").unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            });
            let plain = TcpStream::connect(client, addr).await.expect("connect");
            let mut got = Vec::new();
            let mut buf = IoBuf::with_capacity(64).unwrap();
            loop {
                buf.clear();
                let (n, b) = plain.recv(buf).await;
                buf = b;
                if n.expect("recv") == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, b"plain");
            plain.close().await;
            peer.join().unwrap();
        });
    });
}

/// Disabling receive events while the peer streams data, so that indications race the
/// disable (callbacks in progress, chains retained): every byte arrives once and in order,
/// no callback is made after the disable returned, and the FIN comes through the IRPs.
#[test]
fn disable_while_indications_race() {
    each_plan(|client, _| {
        block_on(async {
            let data = pattern(120_000);
            let sent = data.clone();
            let (addr, peer) = std_peer(move |mut s| {
                for chunk in sent.chunks(2_000) {
                    s.write_all(chunk).unwrap();
                    std::thread::sleep(Duration::from_micros(200));
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            assert!(stream.enable_receive_events().expect("enable"));
            let mut got = Vec::new();
            let mut buf = IoBuf::with_capacity(1500).unwrap();
            while got.len() < 20_000 {
                buf.clear();
                let (n, b) = stream.recv_events(buf).await;
                buf = b;
                assert_ne!(n.expect("recv_events"), 0, "no FIN yet");
                got.extend_from_slice(&buf);
            }
            stream.disable_receive_events().await.expect("disable");
            let after_disable = stream.receive_event_counts();
            stream
                .disable_receive_events()
                .await
                .expect("disabling again is a no-op");
            got.extend(recv_all(&stream).await);
            assert_eq!(got.len(), data.len());
            assert!(got == data, "every byte once, in order");
            assert_eq!(
                stream.receive_event_counts(),
                after_disable,
                "no indication after the disable returned"
            );
            stream.close().await;
            peer.join().unwrap();
        });
    });
}

/// The ideal send backlog: queried (`SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`), and after a new send
/// buffer size indicated by `WskSendBacklogEvent` with the value the query then reports.
#[test]
fn ideal_send_backlog_query_and_change() {
    each_plan(|client, _| {
        block_on(async {
            let (addr, peer) = std_peer(|mut s| {
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            });
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            let waiting = stream.send_backlog_changed(0);
            assert_eq!(
                waiting.await.expect_err("not enabled").kind(),
                ErrorKind::InvalidState
            );
            let first = stream.ideal_send_backlog().await.expect("query");
            assert!(first > 0, "an ideal backlog");
            assert!(stream.enable_send_backlog_events().expect("enable"));
            let size = u32::try_from(first).unwrap().max(8192);
            stream
                .set_send_buffer_size(size)
                .await
                .expect("set_send_buffer_size");
            let changed = within_bound(stream.send_backlog_changed(first))
                .await
                .expect("indicated");
            assert_ne!(changed, first);
            assert_eq!(stream.ideal_send_backlog().await.expect("query"), changed);
            stream.close().await;
            peer.join().unwrap();
        });
    });
}
