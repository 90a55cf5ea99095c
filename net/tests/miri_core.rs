//! `wsk-net`'s core end to end on the host kernel's in-memory network, the part of the test
//! suite Miri runs (`cargo +nightly miri test -p wsk-net --test miri_core`): the operation
//! state machine (`raw`), IRP completion through the executor, buffers and MDLs held by an
//! operation dropped or cancelled in flight until its completion, accept, UDP, name
//! resolution, socket options, and unload with sockets open. Both ends of every connection are this kernel's sockets, so the
//! scenarios need no host socket; outside Miri they run on both providers (the in-memory
//! network and the host's loopback).
//!
//! Each scenario runs on a fresh kernel per plan and provider and ends with the verifier's
//! leak check (no IRP, MDL, pool block or socket left) and no bugcheck. Under Miri the plans
//! are cut to two (inline; mixed with reordering and delays) to keep the run to minutes.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wsk_executor::{TaskPool, block_on};
use wsk_host::Provider;
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, UdpSocket, WskClient};

mod common;
use common::{each_provider_and_plan as each_kernel, fresh_runner, loopback};

/// A listener, and a connection to it: (listener, connecting end, accepted end).
async fn connected(client: &WskClient) -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, loopback()).await.expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let near = TcpStream::connect(client, addr).await.expect("connect");
    let (far, remote) = listener.accept().await.expect("accept");
    assert_eq!(remote, near.local_addr().await.expect("near local_addr"));
    assert_eq!(
        far.peer_addr().await.expect("far peer_addr"),
        near.local_addr().await.expect("near local_addr")
    );
    (listener, near, far)
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ salt)
        .collect()
}

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn connect_accept_send_receive_graceful_disconnect_and_close() {
    // More than the in-memory pipe holds (64 KiB, 4 KiB under Miri): the sender waits for
    // the receiver.
    const LEN: usize = if cfg!(miri) { 10_000 } else { 200_000 };
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            let data = pattern(LEN, 7);
            let sending = async {
                let (sent, _) = near.send(IoBuf::from_slice(&data).unwrap()).await;
                assert_eq!(sent.expect("send"), LEN);
            };
            let receiving = async {
                let (n, buf) = far
                    .recv_exact(IoBuf::with_capacity(LEN).unwrap(), LEN)
                    .await;
                assert_eq!(n.expect("recv_exact"), LEN);
                assert!(buf[..] == data[..], "bytes arrive intact and in order");
            };
            join(sending, receiving).await;
            // Back the other way, then FIN both ways.
            let (sent, _) = far.send(IoBuf::from_slice(b"pong").unwrap()).await;
            assert_eq!(sent.expect("send back"), 4);
            let (n, buf) = near.recv_exact(IoBuf::with_capacity(4).unwrap(), 4).await;
            assert_eq!(n.expect("recv back"), 4);
            assert_eq!(&buf[..], b"pong");
            near.disconnect(Disconnect::Graceful)
                .await
                .expect("near FIN");
            let (n, _) = far.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(n.expect("EOF"), 0, "the peer's FIN reads as end of stream");
            far.disconnect(Disconnect::Graceful).await.expect("far FIN");
            let (n, _) = near.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(n.expect("EOF"), 0);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn options_a_dropped_pending_send_and_a_disconnect_with_final_data() {
    each_kernel(|client, kernel| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            near.set_nodelay(true).await.expect("TCP_NODELAY");
            near.set_keepalive(true).await.expect("SO_KEEPALIVE");
            let (sent, _) = near.send_nodelay(IoBuf::from_slice(b"now").unwrap()).await;
            assert_eq!(sent.expect("send_nodelay"), 3);
            let (n, buf) = far.recv_exact(IoBuf::with_capacity(3).unwrap(), 3).await;
            assert_eq!(n.expect("recv"), 3);
            assert_eq!(&buf[..], b"now");
            // A send bigger than the in-memory pipe with nobody reading waits there; dropped,
            // its IRP is cancelled and its buffer and MDL live until the completion. (Host
            // sockets may take it all at once.)
            let big =
                IoBuf::from_slice(&pattern(if cfg!(miri) { 8 * 1024 } else { 256 * 1024 }, 1))
                    .unwrap();
            {
                let pending_send = pin!(far.send(big));
                let polled = poll_once(pending_send);
                if kernel.config().provider == Provider::Memory {
                    assert!(polled.is_pending(), "the pipe is full");
                }
            }
            // FIN with final data on the near end: the far end reads the data, then the end.
            let (r, _) = near
                .disconnect_with(IoBuf::from_slice(b"bye").unwrap())
                .await;
            r.expect("disconnect with final data");
            let (n, buf) = far.recv_exact(IoBuf::with_capacity(3).unwrap(), 3).await;
            assert_eq!(n.expect("final data"), 3);
            assert_eq!(&buf[..], b"bye");
            let (n, _) = far.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(n.expect("EOF"), 0);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_resolved_name_connects_and_an_unknown_one_is_not_found() {
    each_kernel(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, loopback()).await.expect("bind");
            let port = listener.local_addr().await.expect("local_addr").port();
            let addrs = wsk_net::resolve(client, "localhost", port)
                .await
                .expect("resolve localhost");
            let v4 = addrs
                .iter()
                .find(|a| a.is_ipv4())
                .copied()
                .expect("an IPv4 loopback address");
            assert!(v4.ip().is_loopback());
            assert_eq!(v4.port(), port);
            let near = TcpStream::connect(client, v4).await.expect("connect");
            let (far, _) = listener.accept().await.expect("accept");
            let unknown = wsk_net::resolve(client, "no-such-host.invalid", port).await;
            assert_eq!(unknown.err().map(|e| e.kind()), Some(ErrorKind::NotFound));
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn an_abortive_disconnect_resets_the_peer() {
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            near.disconnect(Disconnect::Abortive)
                .await
                .expect("abortive");
            let (r, _) = far.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
            let (r, _) = near.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidState);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_receive_dropped_in_flight_holds_its_buffer_and_mdl_until_completion() {
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            for round in 0..3u8 {
                // In flight (nothing to read), then dropped: IoCancelIrp, and the IRP, MDL
                // and buffer live until the completion routine has run.
                {
                    let recv = pin!(far.recv(IoBuf::with_capacity(512).unwrap()));
                    assert!(poll_once(recv).is_pending(), "round {round}: nothing yet");
                }
                let (sent, _) = near.send(IoBuf::from_slice(&[round; 5]).unwrap()).await;
                assert_eq!(sent.expect("send"), 5);
                let (n, buf) = far.recv_exact(IoBuf::with_capacity(5).unwrap(), 5).await;
                assert_eq!(n.expect("recv after a dropped recv"), 5);
                assert_eq!(&buf[..], &[round; 5]);
            }
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_stream_transfer_resumes_a_dropped_receive_and_frees_its_buffer_when_dropped_in_flight() {
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            let mut transfer = far.stream_transfer(IoBuf::with_capacity(64).unwrap());
            for round in 0..3u8 {
                // In flight, its future dropped: the receive stays with the transfer (the
                // buffer at WSK), and the next `recv` resumes it.
                assert!(
                    poll_once(pin!(transfer.recv())).is_pending(),
                    "round {round}"
                );
                assert!(
                    transfer.buf().is_none(),
                    "round {round}: the buffer is at WSK"
                );
                let (sent, _) = near.send(IoBuf::from_slice(&[round; 5]).unwrap()).await;
                assert_eq!(sent.expect("send"), 5);
                // Each piece echoed from the transfer's buffer as it arrives.
                let mut got = 0;
                while got < 5 {
                    let n = transfer.recv().await.expect("resumed recv");
                    assert!(n > 0, "round {round}: no FIN");
                    assert_eq!(transfer.send().await.expect("echo"), n);
                    got += n;
                }
                let (n, buf) = near.recv_exact(IoBuf::with_capacity(5).unwrap(), 5).await;
                assert_eq!(n.expect("echoed"), 5);
                assert_eq!(&buf[..], &[round; 5]);
            }
            // Dropped with its receive in flight: cancelled, the buffer and MDL freed after
            // the completion (the leak check).
            assert!(poll_once(pin!(transfer.recv())).is_pending());
            drop(transfer);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn cancel_gives_cancelled_and_the_buffer_back_before_and_after_the_first_poll() {
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            // Cancelled in flight.
            let (r, buf) = {
                let mut recv = pin!(far.recv(IoBuf::with_capacity(64).unwrap()));
                assert!(poll_once(recv.as_mut()).is_pending());
                recv.cancel();
                recv.await
            };
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
            assert_eq!(buf.capacity(), 64, "the buffer comes back");
            // Cancelled before it reached WSK: the data stays for the next receive.
            let (sent, _) = near.send(IoBuf::from_slice(b"kept").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            let recv = far.recv(buf);
            recv.cancel();
            let (r, buf) = recv.await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
            let (n, buf) = far.recv_exact(buf, 4).await;
            assert_eq!(n.expect("recv"), 4);
            assert_eq!(&buf[..], b"kept");
            // A send cancelled before it reached WSK: nothing goes out, the buffer comes
            // back whole, and the next send is the one the peer reads.
            let cancelled = near.send(IoBuf::from_slice(b"dropped").unwrap());
            cancelled.cancel();
            let (sent, unsent) = cancelled.await;
            assert_eq!(sent.unwrap_err().kind(), ErrorKind::Cancelled);
            assert_eq!(&unsent[..], b"dropped", "the buffer comes back unchanged");
            let (sent, _) = near.send(IoBuf::from_slice(b"next").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            let (n, buf) = far.recv_exact(buf, 4).await;
            assert_eq!(n.expect("recv"), 4);
            assert_eq!(&buf[..], b"next");
            // An accept, cancelled in flight.
            let accepted = {
                let mut accept = pin!(listener.accept());
                assert!(poll_once(accept.as_mut()).is_pending());
                accept.cancel();
                accept.await
            };
            assert_eq!(accepted.err().map(|e| e.kind()), Some(ErrorKind::Cancelled));
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_receive_times_out_with_its_buffer_back_and_the_stream_still_works() {
    each_kernel(|client, _| {
        block_on(async {
            let (listener, near, far) = connected(client).await;
            let buf = IoBuf::with_capacity(100).unwrap();
            let (r, buf) = wsk_net::timeout(Duration::from_millis(20), far.recv(buf)).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
            assert_eq!(buf.capacity(), 100);
            let (sent, _) = near.send(IoBuf::from_slice(b"late").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            let (n, buf) = far.recv_exact(buf, 4).await;
            assert_eq!(n.expect("recv after timeout"), 4);
            assert_eq!(&buf[..], b"late");
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn an_accept_dropped_in_flight_leaves_nothing_and_the_next_accept_works() {
    each_kernel(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, loopback()).await.expect("bind");
            let addr = listener.local_addr().await.expect("local_addr");
            {
                let accept = pin!(listener.accept());
                assert!(poll_once(accept).is_pending(), "no connection yet");
            }
            let near = TcpStream::connect(client, addr).await.expect("connect");
            let (far, _) = listener.accept().await.expect("accept after a dropped one");
            let (sent, _) = near.send(IoBuf::from_slice(b"hi").unwrap()).await;
            assert_eq!(sent.expect("send"), 2);
            let (n, buf) = far.recv_exact(IoBuf::with_capacity(2).unwrap(), 2).await;
            assert_eq!(n.expect("recv"), 2);
            assert_eq!(&buf[..], b"hi");
            near.close().await;
            far.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn connecting_where_nobody_listens_is_refused() {
    each_kernel(|client, _| {
        block_on(async {
            // A port that was just listened on and is free again.
            let listener = TcpListener::bind(client, loopback()).await.expect("bind");
            let addr = listener.local_addr().await.expect("local_addr");
            listener.close().await;
            let refused = TcpStream::connect(client, addr).await;
            assert_eq!(
                refused.err().map(|e| e.kind()),
                Some(ErrorKind::ConnectionRefused)
            );
        });
    });
}

#[test]
fn udp_datagrams_arrive_whole_with_their_sender() {
    each_kernel(|client, _| {
        block_on(async {
            let a = UdpSocket::bind(client, loopback()).await.expect("bind a");
            let b = UdpSocket::bind(client, loopback()).await.expect("bind b");
            let a_addr = a.local_addr().await.expect("a local_addr");
            let b_addr = b.local_addr().await.expect("b local_addr");
            // A receive in flight before the datagram comes.
            let receiving = async {
                let (r, buf) = b.recv_from(IoBuf::with_capacity(64).unwrap()).await;
                let (n, from) = r.expect("recv_from");
                assert_eq!(&buf[..n], b"first");
                assert_eq!(from, a_addr);
            };
            let sending = async {
                let (sent, _) = a
                    .send_to(IoBuf::from_slice(b"first").unwrap(), b_addr)
                    .await;
                assert_eq!(sent.expect("send_to"), 5);
            };
            join(receiving, sending).await;
            // And one back, received after it came.
            let (sent, _) = b
                .send_to(IoBuf::from_slice(b"second!").unwrap(), a_addr)
                .await;
            assert_eq!(sent.expect("send_to back"), 7);
            let (r, buf) = a.recv_from(IoBuf::with_capacity(64).unwrap()).await;
            let (n, from) = r.expect("recv_from back");
            assert_eq!(&buf[..n], b"second!");
            assert_eq!(from, b_addr);
            a.close().await;
            b.close().await;
        });
    });
}

static UNLOAD_TASKS: TaskPool<4096, 4> = TaskPool::new();

#[test]
fn unload_with_sockets_open_and_operations_in_flight_leaves_nothing() {
    each_kernel(|client, _| {
        let runner = fresh_runner();
        let (listener, near, far) = block_on(connected(client));
        // DriverUnload's view: tasks with a receive and an accept in flight, dropped by the
        // runner's shutdown (IoCancelIrp on each, then the closes).
        drop(
            runner
                .spawn(&UNLOAD_TASKS, async move {
                    let _pending = far.recv(IoBuf::with_capacity(256).unwrap()).await;
                })
                .expect("spawn receive"),
        );
        drop(
            runner
                .spawn(&UNLOAD_TASKS, async move {
                    let _pending = listener.accept().await;
                })
                .expect("spawn accept"),
        );
        runner.shutdown();
        assert_eq!(runner.live_tasks(), 0);
        // The far end was closed with the task: the near end sees the end of the stream.
        let (r, _) = block_on(near.recv(IoBuf::with_capacity(8).unwrap()));
        assert!(
            matches!(r, Ok(0)) || r.is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "the connection ended with the unload"
        );
        block_on(near.close());
    });
}

/// Runs two futures to completion together (the tests' only combinator).
async fn join(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let mut a = pin!(a);
    let mut b = pin!(b);
    let (mut a_done, mut b_done) = (false, false);
    core::future::poll_fn(|cx| {
        if !a_done {
            a_done = a.as_mut().poll(cx).is_ready();
        }
        if !b_done {
            b_done = b.as_mut().poll(cx).is_ready();
        }
        if a_done && b_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}
