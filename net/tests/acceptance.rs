//! `wsk-net` against the host kernel, scenario by scenario as a driver uses it, with real
//! peers from `std::net` on loopback. Every scenario runs under several fault plans (inline,
//! deferred and mixed completion, reordering and delays, different seeds), on a fresh kernel
//! each time, and ends with the verifier's leak check: no IRP, MDL, pool block or socket may
//! be left, and no bugcheck may have fired.
//!
//! Nothing here sleeps to wait for an event: peers block on sockets with a bound, and the
//! driver side awaits futures; a bound that runs out fails loudly.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wsk_executor::{TaskPool, block_on};
use wsk_host::faults::{Completion, Faults};
use wsk_host::{Config, Kernel};
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, UdpSocket, WskClient};

mod common;
use common::{BOUND, bounded, connected_pair, each_plan, fresh_runner, listen, plans, test_driver};

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ salt)
        .collect()
}

/// Echoes on `stream` until the peer's FIN; returns the bytes echoed.
async fn echo_until_fin(stream: &TcpStream, capacity: usize) -> usize {
    let mut buf = IoBuf::with_capacity(capacity).unwrap();
    let mut total = 0;
    loop {
        let (n, b) = stream.recv(buf).await;
        buf = b;
        let n = n.expect("recv");
        if n == 0 {
            return total;
        }
        total += n;
        let (sent, b) = stream.send(buf).await;
        buf = b;
        assert_eq!(sent.expect("send"), n);
    }
}

#[test]
fn echo_round_trips_are_byte_exact_from_1_byte_to_1_mib() {
    const SIZES: [usize; 7] = [1, 2, 1000, 4096, 65_537, 300_000, 1 << 20];
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let peer = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                for (i, size) in SIZES.into_iter().enumerate() {
                    let data = pattern(size, u8::try_from(i).unwrap());
                    let writer = {
                        let mut s = s.try_clone().unwrap();
                        let data = data.clone();
                        std::thread::spawn(move || s.write_all(&data).unwrap())
                    };
                    let mut back = vec![0u8; size];
                    (&s).read_exact(&mut back).unwrap();
                    writer.join().unwrap();
                    assert!(back == data, "message of {size} bytes echoed byte-exact");
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                (&s).read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "nothing after the last echo, then EOF");
            });
            let (stream, remote) = listener.accept().await.expect("accept");
            assert!(remote.ip().is_loopback());
            let echoed = echo_until_fin(&stream, 64 * 1024).await;
            assert_eq!(echoed, SIZES.iter().sum::<usize>());
            stream
                .disconnect(Disconnect::Graceful)
                .await
                .expect("graceful disconnect");
            stream.close().await;
            listener.close().await;
            peer.join().unwrap();
        });
    });
}

/// A `&'static WskClient` for spawned tasks: leaked for the test, taken back (and deregistered)
/// once the runner is shut down and no task can hold it.
struct StaticClient(&'static WskClient);

impl StaticClient {
    fn register(kernel: &Kernel) -> Self {
        Self(Box::leak(Box::new(
            WskClient::register(test_driver(kernel)).expect("WskClient::register"),
        )))
    }

    /// # Safety (test-level)
    /// Called after every task that borrowed the client is gone.
    fn deregister(self) {
        let client = std::ptr::from_ref(self.0).cast_mut();
        // SAFETY: leaked in `register`; the runner is shut down, so no borrow remains.
        let client = unsafe { Box::from_raw(client) };
        client.deregister().expect("deregister");
    }
}

const CONNECTIONS: usize = 1000;
static CONNECTION_TASKS: TaskPool<4096, 1024> = TaskPool::new();
static LISTENER_TASK: TaskPool<4096, 1> = TaskPool::new();

#[test]
fn a_thousand_concurrent_connections_echo_correctly() {
    for plan in [
        Faults::with(Completion::Deferred, 21),
        Faults::with(Completion::Mixed, 22),
    ] {
        let kernel = Kernel::boot(Config::default().with_faults(plan));
        let (client, runner, addr) = kernel.on_kernel_thread(|| {
            let client = StaticClient::register(&kernel);
            let runner = fresh_runner();
            let (listener, addr) = block_on(listen(client.0));
            // Detached: the listener task ends after the last accept.
            drop(
                runner
                    .spawn(&LISTENER_TASK, async move {
                        for _ in 0..CONNECTIONS {
                            let (stream, _) = listener.accept().await.expect("accept");
                            drop(
                                runner
                                    .spawn(&CONNECTION_TASKS, async move {
                                        echo_until_fin(&stream, 2048).await;
                                        stream.disconnect(Disconnect::Graceful).await.ok();
                                        stream.close().await;
                                    })
                                    .expect("a task slot per connection"),
                            );
                        }
                        listener.close().await;
                    })
                    .expect("spawn listener"),
            );
            (client, runner, addr)
        });

        // All connections open at once, then every one echoes its own message.
        let streams: Vec<std::net::TcpStream> = (0..CONNECTIONS)
            .map(|_| {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                s
            })
            .collect();
        for (i, s) in streams.iter().enumerate() {
            let mut s = s;
            s.write_all(format!("connection {i:04}").as_bytes())
                .unwrap();
        }
        for (i, s) in streams.iter().enumerate() {
            let mut s = s;
            let expected = format!("connection {i:04}");
            let mut back = vec![0u8; expected.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, expected.as_bytes());
            s.shutdown(Shutdown::Write).unwrap();
        }
        for s in &streams {
            let mut rest = Vec::new();
            let mut s = s;
            s.read_to_end(&mut rest).unwrap();
            assert!(rest.is_empty());
        }
        kernel.on_kernel_thread(|| {
            runner.shutdown();
            client.deregister();
        });
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "{report}");
        assert!(kernel.take_bugchecks().is_empty());
    }
}

#[test]
fn fin_graceful_final_data_and_refused() {
    each_plan(|client, _| {
        block_on(async {
            // Peer FIN -> recv returns 0.
            let (listener, addr) = listen(client).await;
            let peer = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                (&s).write_all(b"bye").unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                // Our graceful disconnect after sending: all data, then EOF.
                let mut got = Vec::new();
                (&s).read_to_end(&mut got).unwrap();
                got
            });
            let (stream, _) = listener.accept().await.expect("accept");
            let (n, buf) = stream.recv_exact(IoBuf::with_capacity(3).unwrap(), 3).await;
            assert_eq!(n.expect("recv_exact"), 3);
            assert_eq!(&buf[..], b"bye");
            let (n, _) = stream.recv(buf).await;
            assert_eq!(n.expect("recv after FIN"), 0, "peer FIN reads as 0 bytes");
            let reply = pattern(200_000, 7);
            let (sent, _) = stream.send(IoBuf::from_slice(&reply).unwrap()).await;
            assert_eq!(sent.expect("send"), reply.len());
            stream
                .disconnect(Disconnect::Graceful)
                .await
                .expect("graceful");
            // No sends after a disconnect: an error, not a panic.
            let (after, back) = stream.send(IoBuf::from_slice(b"late").unwrap()).await;
            let after = after.unwrap_err();
            assert_eq!(after.kind(), ErrorKind::InvalidState);
            assert_eq!(after.operation(), "send");
            assert_eq!(
                &back[..],
                b"late",
                "the refused send's buffer back, unchanged"
            );
            stream.close().await;
            assert!(peer.join().unwrap() == reply, "all data, then EOF");

            // disconnect_with(final): the final data, then EOF.
            let peer = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                let mut got = Vec::new();
                (&s).read_to_end(&mut got).unwrap();
                got
            });
            let (stream, _) = listener.accept().await.expect("accept");
            let (sent, _) = stream.send(IoBuf::from_slice(b"first ").unwrap()).await;
            sent.expect("send");
            let (result, _) = stream
                .disconnect_with(IoBuf::from_slice(b"and final").unwrap())
                .await;
            result.expect("disconnect_with");
            stream.close().await;
            assert_eq!(peer.join().unwrap(), b"first and final");
            listener.close().await;

            // Connect to a closed port: ConnectionRefused. Port 1, not the listener's old port:
            // another test may take that again, and an ephemeral port can even connect to
            // itself on Linux.
            let e = TcpStream::connect(client, SocketAddr::from(([127, 0, 0, 1], 1)))
                .await
                .expect_err("refused");
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
        });
    });
}

#[test]
fn abortive_disconnect_resets_the_peer() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, s, stream) = connected_pair(client).await;
            stream
                .disconnect(Disconnect::Abortive)
                .await
                .expect("abortive");
            let e = (&s).read(&mut [0u8; 8]).expect_err("reset");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
            let (r, back) = stream.recv(IoBuf::with_capacity(8).unwrap()).await;
            let r = r.unwrap_err();
            assert_eq!(r.kind(), ErrorKind::InvalidState);
            assert_eq!(r.operation(), "recv");
            assert_eq!(back.capacity(), 8, "the refused receive's buffer back");
            stream.close().await;
            listener.close().await;
        });
    });
}

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_dropped_receive_leaves_nothing_behind_and_the_stream_still_works() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, s, stream) = connected_pair(client).await;
            for round in 0..20u8 {
                // A receive in flight (nothing to read), dropped mid-flight: IoCancelIrp, and
                // its IRP, MDL and buffer stay alive until the completion routine has run.
                {
                    let recv = pin!(stream.recv(IoBuf::with_capacity(512).unwrap()));
                    assert!(
                        poll_once(recv).is_pending(),
                        "round {round}: nothing to read yet"
                    );
                }
                // The next operations on the same stream work.
                (&s).write_all(&[round; 5]).unwrap();
                let (n, buf) = stream.recv_exact(IoBuf::with_capacity(5).unwrap(), 5).await;
                assert_eq!(n.expect("recv after a dropped recv"), 5);
                assert_eq!(&buf[..], &[round; 5]);
                let (sent, _) = stream.send(buf).await;
                sent.expect("send");
                let mut back = [0u8; 5];
                (&s).read_exact(&mut back).unwrap();
                assert_eq!(back, [round; 5]);
            }
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn timeout_on_a_receive_gives_timed_out_and_the_buffer_back() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, s, stream) = connected_pair(client).await;
            let buf = IoBuf::with_capacity(1234).unwrap();
            let (r, buf) = wsk_net::timeout(Duration::from_millis(20), stream.recv(buf)).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
            assert_eq!(buf.capacity(), 1234, "the buffer comes back");
            // The stream is still usable, with the same buffer.
            (&s).write_all(b"late").unwrap();
            let (n, buf) = stream.recv_exact(buf, 4).await;
            assert_eq!(n.expect("recv after timeout"), 4);
            assert_eq!(&buf[..], b"late");
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, s, stream) = connected_pair(client).await;
            // Two concurrent receives would reorder data: the second is refused.
            {
                let mut first = pin!(stream.recv(IoBuf::with_capacity(8).unwrap()));
                assert!(poll_once(first.as_mut()).is_pending());
                let (second, _) = stream.recv(IoBuf::with_capacity(8).unwrap()).await;
                assert_eq!(second.unwrap_err().kind(), ErrorKind::InvalidState);
                (&s).write_all(b"x").unwrap();
                let (n, _) = first.await;
                assert_eq!(n.expect("first recv"), 1);
            }
            // Bad input: recv_exact beyond the capacity.
            let (r, back) = stream.recv_exact(IoBuf::with_capacity(4).unwrap(), 5).await;
            let refused = r.unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::InvalidInput);
            assert_eq!(refused.operation(), "recv_exact", "named by the operation");
            assert_eq!(refused.status(), None, "refused by the library");
            // A receive or send decided before WSK gives its buffer back all the same.
            assert_eq!(back.capacity(), 4, "the refused receive's buffer");
            let (sent, back) = stream.send(back).await;
            assert_eq!(sent.expect("an empty send"), 0);
            assert_eq!(back.capacity(), 4, "the empty send's buffer");
            assert_eq!(
                IoBuf::with_capacity(0).err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            // Dropping a stream without close still closes it: the peer sees the end.
            drop(stream);
            let mut rest = Vec::new();
            let end = (&s).read_to_end(&mut rest);
            assert!(
                end.is_ok()
                    || end
                        .as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "dropped stream is closed: {end:?}"
            );
            listener.close().await;
        });
    });
}

#[test]
fn ipv6_and_udp_round_trips() {
    each_plan(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, "[::1]:0".parse().unwrap())
                .await
                .expect("bind [::1]");
            let addr = listener.local_addr().await.expect("local_addr");
            assert!(addr.is_ipv6());
            let peer = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                (&s).write_all(b"over six").unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                (&s).read_to_end(&mut back).unwrap();
                back
            });
            let (stream, remote) = listener.accept().await.expect("accept v6");
            assert!(remote.is_ipv6());
            echo_until_fin(&stream, 64).await;
            stream
                .disconnect(Disconnect::Graceful)
                .await
                .expect("disconnect");
            stream.close().await;
            listener.close().await;
            assert_eq!(peer.join().unwrap(), b"over six");

            // Our connect over IPv6.
            let std_listener = std::net::TcpListener::bind("[::1]:0").unwrap();
            let v6 = std_listener.local_addr().unwrap();
            let stream = TcpStream::connect(client, v6).await.expect("connect v6");
            let (accepted, _) = std_listener.accept().unwrap();
            bounded(&accepted);
            assert_eq!(stream.peer_addr().await.unwrap(), v6);
            stream.close().await;

            // UDP over IPv4 and IPv6.
            for local in ["127.0.0.1:0", "[::1]:0"] {
                let udp = UdpSocket::bind(client, local.parse().unwrap())
                    .await
                    .expect("udp bind");
                let me = udp.local_addr().await.expect("udp local_addr");
                let other = std::net::UdpSocket::bind(local).unwrap();
                other.set_read_timeout(Some(BOUND)).unwrap();
                other.send_to(b"datagram", me).unwrap();
                let (r, buf) = udp.recv_from(IoBuf::with_capacity(64).unwrap()).await;
                let (n, from) = r.expect("recv_from");
                assert_eq!(
                    (&buf[..n], from),
                    (&b"datagram"[..], other.local_addr().unwrap())
                );
                let (sent, _) = udp.send_to(buf, from).await;
                assert_eq!(sent.expect("send_to"), n);
                let mut got = [0u8; 64];
                let (m, _) = other.recv_from(&mut got).unwrap();
                assert_eq!(&got[..m], b"datagram");
                udp.close().await;
            }
        });
    });
}

#[test]
fn a_steady_echo_loop_allocates_only_the_unload_safe_completion_context() {
    // `wsk-net` is `no_std` without `alloc`: it has no heap to allocate from. What it could
    // allocate per operation is kernel memory (pool, IRPs, MDLs), which the host kernel counts.
    // The only allocation per operation is the I/O manager's: IoSetCompletionRoutineEx keeps
    // one context per IRP until its completion routine has returned (the price of no driver
    // code running after DriverUnload); a send and a receive per round trip make two.
    const ROUND_TRIPS: usize = 1000;
    const MESSAGE: usize = 1500;
    each_plan(|client, kernel| {
        block_on(async {
            let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = std_listener.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let (s, _) = std_listener.accept().unwrap();
                bounded(&s);
                let mut buf = [0u8; MESSAGE];
                loop {
                    match (&s).read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => (&s).write_all(&buf[..n]).unwrap(),
                        Err(e) => panic!("peer: {e}"),
                    }
                }
            });
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            let mut buf = IoBuf::with_capacity(MESSAGE).unwrap();
            let round_trip = async |mut buf: IoBuf, i: usize| {
                buf.clear();
                buf.extend_from_slice(&pattern(MESSAGE, u8::try_from(i % 256).unwrap()))
                    .unwrap();
                let (sent, b) = stream.send(buf).await;
                assert_eq!(sent.expect("send"), MESSAGE);
                let (n, b) = stream.recv_exact(b, MESSAGE).await;
                assert_eq!(n.expect("recv_exact"), MESSAGE);
                b
            };
            for i in 0..10 {
                buf = round_trip(buf, i).await;
            }
            let before = kernel.allocation_counts();
            for i in 0..ROUND_TRIPS {
                buf = round_trip(buf, i).await;
            }
            let after = kernel.allocation_counts();
            let expected = wsk_host::AllocationCounts {
                pool: before.pool + 2 * ROUND_TRIPS as u64,
                ..before
            };
            assert_eq!(
                after, expected,
                "{ROUND_TRIPS} send+receive round trips allocated kernel memory beyond one \
                 IoSetCompletionRoutineEx context per IRP"
            );
            drop(buf);
            stream
                .disconnect(Disconnect::Graceful)
                .await
                .expect("disconnect");
            stream.close().await;
            peer.join().unwrap();
        });
    });
}

static SHUTDOWN_TASKS: TaskPool<4096, 16> = TaskPool::new();

#[test]
fn unload_with_listeners_idle_connections_and_operations_in_flight_leaves_nothing() {
    for plan in plans() {
        let label = format!("{:?} seed {}", plan.completion, plan.seed);
        let kernel = Kernel::boot(Config::default().with_faults(plan));
        let (client, runner, addr) = kernel.on_kernel_thread(|| {
            let client = StaticClient::register(&kernel);
            let runner = fresh_runner();
            let (listener, addr) = block_on(listen(client.0));
            // A second listener that never sees a connection: an accept pending at unload.
            let (idle_listener, _) = block_on(listen(client.0));
            drop(
                runner
                    .spawn(&SHUTDOWN_TASKS, async move {
                        let _pending = idle_listener.accept().await;
                    })
                    .expect("spawn idle listener"),
            );
            drop(
                runner
                    .spawn(&SHUTDOWN_TASKS, async move {
                        loop {
                            let (stream, _) = listener.accept().await.expect("accept");
                            drop(
                                runner
                                    .spawn(&SHUTDOWN_TASKS, async move {
                                        // Receives pending until the runner drops the task.
                                        echo_until_fin(&stream, 1024).await;
                                    })
                                    .expect("spawn connection"),
                            );
                        }
                    })
                    .expect("spawn listener"),
            );
            (client, runner, addr)
        });
        let peers: Vec<std::net::TcpStream> = (0..5)
            .map(|i| {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                bounded(&s);
                // Each connection is served (echoes once), then sits idle with a receive
                // in flight.
                s.write_all(&[i; 3]).unwrap();
                let mut back = [0u8; 3];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, [i; 3]);
                s
            })
            .collect();
        kernel.on_kernel_thread(|| {
            // DriverUnload: drop every task (cancelling its IRPs, closing its sockets), then
            // deregister, which waits for the closes.
            runner.shutdown();
            assert_eq!(runner.live_tasks(), 0);
            client.deregister();
        });
        for mut peer in peers {
            let mut rest = Vec::new();
            let end = peer.read_to_end(&mut rest);
            assert!(
                end.is_ok()
                    || end
                        .as_ref()
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                "plan {label}: the connection was closed at unload: {end:?}"
            );
        }
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "plan {label}: {report}");
        let bugchecks = kernel.take_bugchecks();
        assert!(bugchecks.is_empty(), "plan {label}: {bugchecks:?}");
    }
}

#[test]
fn cancel_before_the_first_poll_never_reaches_wsk() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, s, stream) = connected_pair(client).await;
            // Cancelled before it was ever polled: it never reaches WSK, the buffer is back.
            (&s).write_all(b"kept").unwrap();
            let recv = stream.recv(IoBuf::with_capacity(16).unwrap());
            recv.cancel();
            let (r, buf) = recv.await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
            // The data it did not take is still there for the next receive.
            let (n, buf) = stream.recv_exact(buf, 4).await;
            assert_eq!(n.expect("recv"), 4);
            assert_eq!(&buf[..], b"kept");
            let accept = listener.accept();
            accept.cancel();
            assert_eq!(
                accept.await.err().map(|e| e.kind()),
                Some(ErrorKind::Cancelled)
            );
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_refused_deregistration_gives_the_client_back_for_a_retry() {
    let kernel = Kernel::boot(Config::default());
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(test_driver(&kernel)).expect("register");
        // SAFETY: raised and lowered on this thread around one call that may run at DISPATCH.
        let old = unsafe { wsk_sys::KeRaiseIrql(wsk_sys::DISPATCH_LEVEL) };
        let failed = client.deregister();
        // SAFETY: back to the IRQL raised from.
        unsafe { wsk_sys::KeLowerIrql(old) };
        let failed = failed.expect_err("deregistration above PASSIVE_LEVEL is refused");
        assert_eq!(failed.error().kind(), ErrorKind::WrongIrql);
        failed
            .into_client()
            .deregister()
            .expect("the retry at PASSIVE_LEVEL deregisters");
    });
    let report = kernel.check_leaks();
    assert!(report.is_clean(), "{report}");
    assert!(kernel.take_bugchecks().is_empty());
}

#[test]
fn bind_options_dual_stack_address_in_use_and_exclusive_use() {
    each_plan(|client, _| {
        block_on(async {
            // A dual-stack IPv6 wildcard listener accepts an IPv4 client.
            let dual = wsk_net::BindOptions {
                v6_only: Some(false),
                reuse_address: true,
                ..wsk_net::BindOptions::default()
            };
            let listener = TcpListener::bind_with(client, "[::]:0".parse().unwrap(), &dual)
                .await
                .expect("dual-stack bind");
            let port = listener.local_addr().await.expect("local_addr").port();
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            bounded(&s);
            let (stream, remote) = listener.accept().await.expect("accept an IPv4 client");
            assert_eq!(
                remote.ip().to_canonical(),
                std::net::IpAddr::from([127, 0, 0, 1]),
                "the client's IPv4 address, as mapped IPv6 or plain"
            );
            stream.close().await;
            listener.close().await;

            // A port in use: AddrInUse; exclusive use is accepted as an option.
            let exclusive = wsk_net::BindOptions {
                exclusive_address: true,
                ..wsk_net::BindOptions::default()
            };
            let first = TcpListener::bind_with(client, "127.0.0.1:0".parse().unwrap(), &exclusive)
                .await
                .expect("exclusive bind");
            let taken = first.local_addr().await.expect("local_addr");
            let second = TcpListener::bind(client, taken).await;
            assert_eq!(second.err().map(|e| e.kind()), Some(ErrorKind::AddrInUse));
            // v6_only on an IPv4 address is bad input, not a panic.
            let bad = wsk_net::BindOptions {
                v6_only: Some(true),
                ..wsk_net::BindOptions::default()
            };
            let refused =
                TcpListener::bind_with(client, "127.0.0.1:0".parse().unwrap(), &bad).await;
            assert_eq!(
                refused.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            first.close().await;
        });
    });
}

#[test]
fn recv_exact_completes_on_a_provider_that_ignores_waitall() {
    // Wine's netio ignores WSK_FLAG_WAITALL and completes a receive with what has arrived;
    // recv_exact must then receive the rest itself.
    for completion in [Completion::Inline, Completion::Deferred, Completion::Mixed] {
        let plan = Faults {
            ignore_waitall: true,
            ..Faults::with(completion, 31)
        };
        let kernel = Kernel::boot(Config::default().with_faults(plan));
        kernel.on_kernel_thread(|| {
            let client = WskClient::register(test_driver(&kernel)).expect("register");
            block_on(async {
                let (listener, s, stream) = connected_pair(&client).await;
                for round in 0..20u8 {
                    // The first part is queued at our socket before the receive starts, so
                    // the provider completes the first WskReceive short.
                    (&s).write_all(&[round; 3]).unwrap();
                    let mut recv = pin!(stream.recv_exact(IoBuf::with_capacity(16).unwrap(), 10));
                    let first = poll_once(recv.as_mut());
                    assert!(
                        first.is_pending(),
                        "round {round}: 3 of 10 bytes cannot finish it"
                    );
                    (&s).write_all(&[round.wrapping_add(100); 7]).unwrap();
                    let (n, buf) = recv.await;
                    assert_eq!(n.expect("recv_exact"), 10, "round {round}");
                    let mut expected = vec![round; 3];
                    expected.extend([round.wrapping_add(100); 7]);
                    assert_eq!(&buf[..], &expected[..], "round {round}: in order");
                }
                // The peer closing early: NotConnected, with the bytes that did arrive.
                (&s).write_all(b"abc").unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let (n, buf) = stream
                    .recv_exact(IoBuf::with_capacity(16).unwrap(), 10)
                    .await;
                assert_eq!(n.unwrap_err().kind(), ErrorKind::NotConnected);
                assert_eq!(&buf[..], b"abc");
                stream.close().await;
                listener.close().await;
            });
            client.deregister().expect("deregister");
        });
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "{completion:?}: {report}");
        assert!(kernel.take_bugchecks().is_empty());
    }
}

#[test]
fn an_accept_dropped_as_a_connection_arrives_closes_that_connection() {
    // The accepted socket of an abandoned accept belongs to nobody: the library closes it,
    // the peer sees the end, and deregistration finds nothing left (it once freed the socket
    // object while it was still on the client's list). A connection whose accept was
    // cancelled before the provider took it stays in the backlog until the listener closes.
    each_plan(|client, _| {
        block_on(async {
            let (listener, addr) = listen(client).await;
            let mut peers = Vec::new();
            for _ in 0..20 {
                let peer = std::net::TcpStream::connect(addr).unwrap();
                bounded(&peer);
                peers.push(peer);
                let mut accept = pin!(listener.accept());
                if let Poll::Ready(accepted) = poll_once(accept.as_mut()) {
                    // Completed inline: an ordinary accepted stream, dropped (closed).
                    drop(accepted.expect("accept"));
                }
                // Otherwise dropped in flight, or after completing unpolled.
            }
            listener.close().await;
            for (i, mut peer) in peers.into_iter().enumerate() {
                let mut rest = Vec::new();
                let end = peer.read_to_end(&mut rest);
                assert!(
                    end.is_ok()
                        || end
                            .as_ref()
                            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
                    "peer {i}: closed by its abandoned accept or with the listener: {end:?}"
                );
            }
        });
    });
}
