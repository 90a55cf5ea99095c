//! Accept indications (`TcpListener::enable_accept_events`, `accept_events`) on the host
//! kernel's WSK provider, under every fault plan, each checked for leaks (socket objects,
//! IRPs, pool, WSK sockets) and bugchecks by the runner: bursts, refusal past the queue's
//! capacity, close, drop and unload with connections queued, a dropped wait, and the
//! fallback to accept IRPs where the provider has no accept events.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::testing;
use wsk_net::{AcceptEventCounts, ErrorKind, IoBuf, TcpListener, WskClient};

mod common;
use common::{BOUND, bounded, each_plan, listen, test_driver};

/// Waits (on this thread: the callbacks come from the provider's reactor) until `done`, for
/// at most [`BOUND`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A connected `std` peer with bounded I/O.
fn peer(addr: SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    bounded(&s);
    s
}

/// Whether `peer`'s connection was reset by the server within [`BOUND`]: a read that fails
/// with a reset.
fn was_reset(peer: &mut std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        peer.read(&mut byte),
        Err(e) if matches!(e.kind(), IoErrorKind::ConnectionReset | IoErrorKind::ConnectionAborted)
    )
}

/// Whether the server ended `peer`'s connection within [`BOUND`]: reset, or (where the
/// closing disconnect could not be made, as under the low-resource plans, and the close ended
/// it) end of stream.
fn was_ended(peer: &mut std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match peer.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => matches!(
            e.kind(),
            IoErrorKind::ConnectionReset | IoErrorKind::ConnectionAborted
        ),
    }
}

/// Whether `peer` is still connected and unanswered: a short read times out.
fn still_waiting(peer: &mut std::net::TcpStream) -> bool {
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waiting = matches!(
        peer.read(&mut byte),
        Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut)
    );
    peer.set_read_timeout(Some(BOUND)).unwrap();
    waiting
}

/// Echoes one message on `stream` (receive, send back); through the receive callbacks where
/// the stream enabled them (an ordinary receive otherwise).
async fn echo_once(stream: &wsk_net::TcpStream) {
    let (n, buf) = stream.recv_events(IoBuf::with_capacity(64).unwrap()).await;
    let n = n.expect("recv");
    assert!(n > 0, "data before FIN");
    let (sent, _) = stream.send(buf).await;
    sent.expect("send");
}

/// A burst of connections, all indicated and taken through `accept_events`, each working
/// (an echo), with the peer's address right; the accepted streams enable receive events too.
#[test]
fn a_burst_of_connections_is_indicated_and_taken() {
    const BURST: usize = 6;
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(listener.enable_accept_events().expect("enable"));
            assert!(listener.enable_accept_events().expect("again: a no-op"));
            let mut peers: Vec<_> = (0..BURST).map(|_| peer(addr)).collect();
            for (i, p) in peers.iter_mut().enumerate() {
                p.write_all(&[u8::try_from(i).unwrap()]).unwrap();
            }
            let mut streams = Vec::new();
            for _ in 0..BURST {
                let (stream, remote) = listener.accept_events().await.expect("accept_events");
                let index = peers
                    .iter()
                    .position(|p| p.local_addr().unwrap() == remote)
                    .expect("the remote address is one of the peers'");
                assert!(stream.enable_receive_events().expect("receive events"));
                let (n, buf) = stream.recv_events(IoBuf::with_capacity(8).unwrap()).await;
                assert_eq!(
                    &buf[..n.expect("recv_events")],
                    &[u8::try_from(index).unwrap()]
                );
                streams.push(stream);
            }
            for p in &mut peers {
                p.write_all(b"ping").unwrap();
            }
            for stream in &streams {
                echo_once(stream).await;
            }
            for p in &mut peers {
                let mut back = [0u8; 4];
                p.read_exact(&mut back).unwrap();
                assert_eq!(&back, b"ping");
            }
            let counts = listener.accept_event_counts();
            assert_eq!(
                counts,
                AcceptEventCounts {
                    accepted: BURST as u64,
                    refused: 0
                }
            );
            for stream in streams {
                stream.close().await;
            }
            listener.close().await;
        });
    });
}

/// Past the queue's capacity the callback refuses: the peer sees a reset and the refusal is
/// counted; the connections queued meanwhile are taken and work.
#[test]
fn refused_past_the_capacity_with_a_reset() {
    const CAPACITY: usize = 2;
    const CONNECTIONS: usize = 5;
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(
                listener
                    .enable_accept_events_with(CAPACITY)
                    .expect("enable")
            );
            let mut peers: Vec<_> = (0..CONNECTIONS).map(|_| peer(addr)).collect();
            wait_until("every connection indicated", || {
                let c = listener.accept_event_counts();
                c.accepted + c.refused == CONNECTIONS as u64
            });
            let counts = listener.accept_event_counts();
            assert_eq!(counts.accepted, CAPACITY as u64, "{counts:?}");
            assert_eq!(
                counts.refused,
                (CONNECTIONS - CAPACITY) as u64,
                "{counts:?}"
            );
            let mut queued = Vec::new();
            for _ in 0..CAPACITY {
                queued.push(listener.accept_events().await.expect("a queued connection"));
            }
            let mut reset = 0;
            for p in &mut peers {
                let remote = p.local_addr().unwrap();
                if let Some((stream, _)) = queued.iter().find(|(_, r)| *r == remote) {
                    assert!(still_waiting(p), "an accepted connection stays up");
                    p.write_all(b"hi").unwrap();
                    echo_once(stream).await;
                    let mut back = [0u8; 2];
                    p.read_exact(&mut back).unwrap();
                    assert_eq!(&back, b"hi");
                } else {
                    assert!(was_reset(p), "a refused connection is reset");
                    reset += 1;
                }
            }
            assert_eq!(reset, CONNECTIONS - CAPACITY);
            for (stream, _) in queued {
                stream.close().await;
            }
            listener.close().await;
        });
    });
}

/// Connections queued and never taken are reset when the listener closes (`close`), and
/// nothing leaks (the runner's check); a second listener on the same provider still works.
#[test]
fn close_with_connections_queued() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(listener.enable_accept_events().expect("enable"));
            let mut peers: Vec<_> = (0..3).map(|_| peer(addr)).collect();
            wait_until("three connections queued", || {
                listener.accept_event_counts().accepted == 3
            });
            listener.close().await;
            for p in &mut peers {
                assert!(was_ended(p), "a queued connection is reset at close");
            }
        });
    });
}

/// Event-driven accepts: connections queued with data their receive callbacks already
/// retained are reset at the listener's close, and every retained indication goes back to WSK
/// before each socket's close (the provider's verifier fails a close that leaves one).
#[test]
fn close_with_event_driven_connections_holding_data() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(listener.enable_event_driven_accepts(4).expect("enable"));
            let mut peers: Vec<_> = (0..3).map(|_| peer(addr)).collect();
            for p in &mut peers {
                p.write_all(b"unread").unwrap();
            }
            wait_until("three connections queued", || {
                listener.accept_event_counts().accepted == 3
            });
            // Give the data time to be indicated to the queued sockets.
            std::thread::sleep(Duration::from_millis(20));
            listener.close().await;
            for p in &mut peers {
                assert!(was_ended(p), "a queued connection is reset at close");
            }
        });
    });
}

/// As [`close_with_connections_queued`], the listener dropped instead of closed.
#[test]
fn drop_with_connections_queued() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(listener.enable_accept_events().expect("enable"));
            let mut peers: Vec<_> = (0..2).map(|_| peer(addr)).collect();
            wait_until("two connections queued", || {
                listener.accept_event_counts().accepted == 2
            });
            drop(listener);
            for p in &mut peers {
                assert!(was_ended(p), "a queued connection is reset at drop");
            }
        });
    });
}

/// An `accept_events` dropped while it waits loses nothing: the next one gets the
/// connection. A second waiter while one waits is refused (`InvalidState`), not left hanging.
#[test]
fn a_dropped_wait_loses_no_connection() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            assert!(listener.enable_accept_events().expect("enable"));
            let mut cx = Context::from_waker(Waker::noop());
            {
                let mut first = core::pin::pin!(listener.accept_events());
                assert!(first.as_mut().poll(&mut cx).is_pending(), "nothing queued");
                let second = listener.accept_events().await;
                assert_eq!(
                    second.expect_err("one waiter at a time").kind(),
                    ErrorKind::InvalidState
                );
            }
            let mut p = peer(addr);
            let (stream, remote) = listener.accept_events().await.expect("after the drop");
            assert_eq!(remote, p.local_addr().unwrap());
            p.write_all(b"x").unwrap();
            echo_once(&stream).await;
            let mut back = [0u8; 1];
            p.read_exact(&mut back).unwrap();
            // A wait dropped after the connection was queued leaves it queued too.
            let mut p2 = peer(addr);
            wait_until("the second connection queued", || {
                listener.accept_event_counts().accepted == 2
            });
            drop(listener.accept_events());
            let (stream2, remote2) = listener.accept_events().await.expect("still queued");
            assert_eq!(remote2, p2.local_addr().unwrap());
            p2.write_all(b"y").unwrap();
            echo_once(&stream2).await;
            p2.read_exact(&mut back).unwrap();
            stream.close().await;
            stream2.close().await;
            listener.close().await;
        });
    });
}

/// Unload with connections queued: deregistering the client closes the listener (its sweep),
/// which resets the queued connections and frees the spares; nothing leaks.
#[test]
fn unload_with_connections_queued() {
    testing::run_plans(testing::plans(), |kernel| {
        let driver = test_driver(kernel);
        kernel.on_kernel_thread(|| {
            let client = WskClient::register(driver).expect("register");
            let (listener, addr) = block_on(listen(&client));
            assert!(listener.enable_accept_events().expect("enable"));
            let mut peers: Vec<_> = (0..3).map(|_| peer(addr)).collect();
            wait_until("three connections queued", || {
                listener.accept_event_counts().accepted == 3
            });
            client.deregister().expect("deregister");
            for p in &mut peers {
                assert!(was_ended(p), "a queued connection is reset at unload");
            }
            let after = block_on(listener.accept_events());
            assert_eq!(
                after.expect_err("closed by deregistration").kind(),
                ErrorKind::InvalidState
            );
            drop(listener);
        });
    });
}

/// Bad capacities are refused with `InvalidInput`, before anything is allocated.
#[test]
fn capacity_out_of_range_is_invalid_input() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, _) = listen(client).await;
            for capacity in [0, wsk_net::ACCEPT_QUEUE_MAX + 1] {
                let e = listener
                    .enable_accept_events_with(capacity)
                    .expect_err("out of range");
                assert_eq!(e.kind(), ErrorKind::InvalidInput);
            }
            assert!(
                listener
                    .enable_accept_events_with(wsk_net::ACCEPT_QUEUE_MAX)
                    .expect("the largest")
            );
            listener.close().await;
        });
    });
}

/// A provider without accept events (the in-memory network here; Wine 8, whose
/// `WskControlSocket` is a stub): enabling reports `Ok(false)` and `accept_events` accepts
/// with IRPs.
#[test]
fn without_provider_events_accept_events_falls_back_to_irps() {
    use wsk_host::{Config, Kernel, Provider};
    let kernel = Kernel::boot(Config::default().with_provider(Provider::Memory));
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(test_driver(&kernel)).expect("register");
        block_on(async {
            let listener = TcpListener::bind(&client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let addr = listener.local_addr().await.expect("addr");
            assert!(
                !listener.enable_accept_events().expect("enable"),
                "no events here"
            );
            let (stream, server) = {
                let mut connect = core::pin::pin!(wsk_net::TcpStream::connect(&client, addr));
                let mut accept = core::pin::pin!(listener.accept_events());
                let (mut connected, mut accepted) = (None, None);
                std::future::poll_fn(|cx| {
                    if connected.is_none()
                        && let Poll::Ready(v) = connect.as_mut().poll(cx)
                    {
                        connected = Some(v);
                    }
                    if accepted.is_none()
                        && let Poll::Ready(v) = accept.as_mut().poll(cx)
                    {
                        accepted = Some(v);
                    }
                    if connected.is_some() && accepted.is_some() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                let stream = connected.unwrap().expect("connect");
                let (server, _) = accepted.unwrap().expect("accept through an IRP");
                (stream, server)
            };
            assert_eq!(listener.accept_event_counts(), AcceptEventCounts::default());
            server.close().await;
            stream.close().await;
            listener.close().await;
        });
        client.deregister().expect("deregister");
    });
    let report = kernel.check_leaks();
    assert!(report.is_clean(), "{report}");
    assert!(kernel.take_bugchecks().is_empty());
}
