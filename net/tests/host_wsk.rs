//! `wsk-net` end to end on the host kernel's WSK provider: the consumer's own API (register,
//! listen, accept, connect, send, receive, disconnect, close, datagrams, resolve) over real
//! loopback sockets.
//!
//! They run under inline, deferred and mixed completion (and mixed with delays and reordering);
//! `inline_completion_of_close` covers a close that WSK completes before `WskCloseSocket`
//! returns, which `wsk-net` once finished twice.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use std::sync::Arc;

use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, block_on, timeout};
use wsk_host::faults::{Completion, Faults};
use wsk_host::{Config, Kernel};
use wsk_net::{
    Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, UdpSocket, WskClient, resolve,
};

mod common;
use common::{BOUND, bounded, each_plan, listen, plans, run_plans, test_driver};

#[test]
fn echo_server_over_net() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let peer = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
                (&s).write_all(&data).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                (&s).read_to_end(&mut back).unwrap();
                (data, back)
            });
            let (stream, _remote) = listener.accept().await.expect("accept");
            let mut buf = IoBuf::with_capacity(4096).unwrap();
            loop {
                let (n, b) = stream.recv(buf).await;
                buf = b;
                if n.expect("recv") == 0 {
                    break;
                }
                let (sent, b) = stream.send(buf).await;
                buf = b;
                sent.expect("send");
            }
            stream
                .disconnect(Disconnect::Graceful)
                .await
                .expect("disconnect");
            stream.close().await;
            listener.close().await;
            let (data, back) = peer.join().unwrap();
            assert!(data == back, "echoed byte-exact");
        });
    });
}

#[test]
fn connect_exact_receive_and_abortive_disconnect() {
    each_plan(|client, _| {
        block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            let (s, _) = std_listener.accept().unwrap();
            bounded(&s);
            assert_eq!(stream.peer_addr().await.unwrap(), addr);
            stream.set_nodelay(true).await.expect("TCP_NODELAY");
            stream.set_keepalive(true).await.expect("SO_KEEPALIVE");
            (&s).write_all(b"0123456789").unwrap();
            let buf = IoBuf::with_capacity(10).unwrap();
            let (n, buf) = stream.recv_exact(buf, 10).await;
            assert_eq!(n.expect("recv_exact"), 10);
            assert_eq!(&buf[..], b"0123456789");
            stream
                .disconnect(Disconnect::Abortive)
                .await
                .expect("abortive");
            let mut byte = [0u8; 1];
            let e = (&s).read(&mut byte).expect_err("reset");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            stream.close().await;

            // A refused connect maps to ConnectionRefused (port 1: nothing listens there, and
            // unlike a just-closed ephemeral port no other test can take it meanwhile).
            drop(std_listener);
            let e = TcpStream::connect(client, SocketAddr::from(([127, 0, 0, 1], 1)))
                .await
                .expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        });
    });
}

#[test]
fn datagrams_and_resolve_over_net() {
    each_plan(|client, _| {
        block_on(async {
            let u = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("udp bind");
            let me = u.local_addr().await.expect("udp local_addr");
            let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            other.set_read_timeout(Some(BOUND)).unwrap();
            other.send_to(b"ping", me).unwrap();
            let (r, buf) = u.recv_from(IoBuf::with_capacity(64).unwrap()).await;
            let (n, from) = r.expect("recv_from");
            assert_eq!(
                (&buf[..n], from),
                (&b"ping"[..], other.local_addr().unwrap())
            );
            let (sent, _) = u.send_to(IoBuf::from_slice(b"pong").unwrap(), from).await;
            assert_eq!(sent.expect("send_to"), 4);
            let mut got = [0u8; 8];
            let (n, _) = other.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], b"pong");
            u.close().await;

            let addrs = resolve(client, "localhost", 7)
                .await
                .expect("resolve localhost");
            assert!(!addrs.is_empty());
            assert!(
                addrs
                    .iter()
                    .all(|a: &SocketAddr| a.ip().is_loopback() && a.port() == 7)
            );
        });
    });
}

/// `recv_datagram` reports a datagram larger than the buffer (`MSG_TRUNC`): its first bytes
/// arrive, `truncated` is set, and the next receive gets the next datagram; a datagram that
/// fits is not truncated. On both the host-socket and the in-memory network.
#[test]
fn recv_datagram_reports_truncation() {
    common::each_provider_and_plan(|client, _| {
        block_on(async {
            let a = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind a");
            let b = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind b");
            let to = b.local_addr().await.expect("local_addr");
            let from = a.local_addr().await.expect("local_addr");
            for datagram in [&b"0123456789"[..], b"fits"] {
                let (sent, _) = a.send_to(IoBuf::from_slice(datagram).unwrap(), to).await;
                sent.expect("send_to");
            }
            let (got, buf) = b.recv_datagram(IoBuf::with_capacity(4).unwrap()).await;
            let got = got.expect("recv_datagram");
            assert_eq!((&buf[..], got.len, got.from), (&b"0123"[..], 4, from));
            assert!(got.truncated, "10 bytes into 4: truncated");
            let (got, buf) = b.recv_datagram(buf).await;
            let got = got.expect("recv_datagram");
            assert_eq!(&buf[..], b"fits");
            assert!(!got.truncated, "exactly the buffer's size");
            a.close().await;
            b.close().await;
        });
    });
}

#[test]
fn inline_completion_of_close() {
    run_plans(vec![Faults::with(Completion::Inline, 11)], |client, _| {
        block_on(async {
            let u = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("udp bind");
            u.close().await;
        });
    });
}

/// Runners for the DPC-runner test, one per plan.
static RUNNERS: [Runner; 4] = [const { Runner::new(Budget::DEFAULT) }; 4];
/// Task storage for them.
static POOLS: [TaskPool<4096, 16>; 4] = [const { TaskPool::new() }; 4];

/// The echo server as the driver runs it: an accept task on the DPC runner spawns one task per
/// connection; completions wake tasks from the reactor (`DISPATCH_LEVEL`), the runner polls
/// them in DPCs on the emulated CPUs.
#[test]
fn echo_server_on_the_dpc_runner() {
    const PEERS: usize = 4;
    for (index, plan) in plans().into_iter().enumerate() {
        let label = format!("{plan:?}");
        let kernel = Kernel::boot(Config::default().with_faults(plan));
        let runner = &RUNNERS[index];
        let pool = &POOLS[index];
        kernel.on_kernel_thread(|| {
            runner.start(RunnerKind::Dpc).expect("start the DPC runner");
            let client = Arc::new(WskClient::register(test_driver(&kernel)).expect("register"));
            let listener =
                block_on(TcpListener::bind(&client, "127.0.0.1:0".parse().unwrap())).expect("bind");
            let addr = block_on(listener.local_addr()).expect("local_addr");
            let server = {
                let client = Arc::clone(&client);
                runner
                    .spawn(pool, async move {
                        let _client = client;
                        let mut sessions = Vec::new();
                        for _ in 0..PEERS {
                            let (stream, _) = listener.accept().await.expect("accept");
                            sessions
                                .push(runner.spawn(pool, echo(stream)).expect("spawn a session"));
                        }
                        for session in sessions {
                            session.await.expect("session task");
                        }
                        listener.close().await;
                    })
                    .expect("spawn the server")
            };
            let peers: Vec<_> = (0..PEERS)
                .map(|i| {
                    std::thread::spawn(move || {
                        let s = std::net::TcpStream::connect(addr).unwrap();
                        bounded(&s);
                        let data: Vec<u8> = (0..40_000 + i * 1000)
                            .map(|k| (k * 7 + i).to_le_bytes()[0])
                            .collect();
                        let writer = {
                            let s = s.try_clone().unwrap();
                            let data = data.clone();
                            std::thread::spawn(move || {
                                for chunk in data.chunks(1500) {
                                    (&s).write_all(chunk).unwrap();
                                }
                                s.shutdown(Shutdown::Write).unwrap();
                            })
                        };
                        let mut back = Vec::new();
                        (&s).read_to_end(&mut back).unwrap();
                        writer.join().unwrap();
                        back == data
                    })
                })
                .collect();
            block_on(timeout(BOUND, server))
                .expect("the server finished within the bound")
                .expect("server task");
            for p in peers {
                assert!(p.join().unwrap(), "a peer got its bytes back exactly");
            }
            runner.shutdown();
            let client = Arc::try_unwrap(client).expect("the only client reference");
            client.deregister().expect("deregister");
        });
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "plan {label}: {report}");
        let bugchecks = kernel.take_bugchecks();
        assert!(bugchecks.is_empty(), "plan {label}: {bugchecks:?}");
    }
}

/// One echo session (RFC 862), as the driver's.
async fn echo(stream: TcpStream) {
    let mut buf = IoBuf::with_capacity(2048).unwrap();
    loop {
        let (n, b) = stream.recv(buf).await;
        buf = b;
        if n.expect("recv") == 0 {
            break;
        }
        let (sent, b) = stream.send(buf).await;
        buf = b;
        sent.expect("send");
    }
    stream
        .disconnect(Disconnect::Graceful)
        .await
        .expect("disconnect");
    stream.close().await;
}
