//! Connect by name from a DPC runner's task (polled at `DISPATCH_LEVEL`, where
//! `WskGetAddressInfo` is not allowed): `lookup_host`, `TcpStream::connect_host` and
//! `UdpSocket::send_to_host` hand the resolution to the runner's thread; `resolve` itself
//! says why it refuses there. Under every fault plan, with one runner restarted per plan.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use wsk_executor::{Budget, Runner, RunnerKind, TaskPool, block_on, timeout};
use wsk_host::Config;
use wsk_net::{ErrorKind, IoBuf, TcpStream, UdpSocket, WskClient, lookup_host, resolve};
use wsk_sys::{DISPATCH_LEVEL, KeGetCurrentIrql};

mod common;
use common::{BOUND, plans, test_driver};

/// One runner for every plan: started and shut down once per plan (runners restart).
static RUNNER: Runner = Runner::new(Budget::DEFAULT);
static TASKS: TaskPool<8192, 4> = TaskPool::new();
/// The tests share the runner (and each boots its own kernels): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scenario` as a task of the DPC runner with a registered client, under every plan,
/// then shuts down, deregisters and checks the verifier found nothing.
fn on_dpc_runner<F>(scenario: impl Fn(Arc<WskClient>) -> F + Sync)
where
    F: Future<Output = ()> + Send + 'static,
{
    on_dpc_runner_with(&Config::default(), scenario);
}

/// [`on_dpc_runner`] on kernels booted with `config` (and each plan).
fn on_dpc_runner_with<F>(config: &Config, scenario: impl Fn(Arc<WskClient>) -> F + Sync)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    wsk_host::testing::run_plans_with(config, plans(), |kernel| {
        kernel.on_kernel_thread(|| {
            RUNNER.start(RunnerKind::Dpc).expect("start the DPC runner");
            let client = Arc::new(WskClient::register(test_driver(kernel)).expect("register"));
            let task = RUNNER
                .spawn(&TASKS, scenario(Arc::clone(&client)))
                .expect("spawn the scenario");
            block_on(timeout(BOUND, task))
                .expect("the scenario finished within the bound")
                .expect("the scenario task");
            RUNNER.shutdown();
            Arc::try_unwrap(client)
                .expect("the only client reference")
                .deregister()
                .expect("deregister");
        });
    });
}

#[test]
fn connect_host_from_a_dpc_task_reaches_localhost_and_echoes() {
    on_dpc_runner(|client| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(BOUND)).unwrap();
            let mut ping = [0_u8; 4];
            stream.read_exact(&mut ping).unwrap();
            stream.write_all(&ping).unwrap();
        });
        async move {
            assert_eq!(KeGetCurrentIrql(), DISPATCH_LEVEL, "a DPC runner's task");
            let stream = TcpStream::connect_host(&client, "localhost", port)
                .await
                .expect("connect_host localhost");
            assert!(
                format!("{stream:?}").starts_with("TcpStream { wsk_socket: 0x"),
                "{stream:?}"
            );
            let (sent, _) = stream.send(IoBuf::from_slice(b"ping").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            let (received, buf) = stream.recv(IoBuf::with_capacity(16).unwrap()).await;
            assert_eq!(&buf[..received.expect("recv")], b"ping");
            stream.close().await;
            peer.join().unwrap();
        }
    });
}

#[test]
fn a_name_that_does_not_resolve_is_not_found_and_refusal_is_the_last_error() {
    on_dpc_runner(|client| {
        // Port 1: nothing listens there (and unlike a just-closed ephemeral port no other test
        // can take it meanwhile).
        let closed_port = 1;
        async move {
            // RFC 6761: `.invalid` never resolves.
            let missing = TcpStream::connect_host(&client, "no-such-host.invalid", 7).await;
            assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
            let refused = TcpStream::connect_host(&client, "localhost", closed_port).await;
            assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);
        }
    });
}

/// A name with two addresses, the first refused (nothing listens on 127.0.0.2, the listener
/// being bound to 127.0.0.1 only) and the second listening: `connect_host` goes on to the
/// second, as std and tokio do. The host kernel's hosts table fixes the order.
#[test]
fn connect_host_tries_the_next_address_after_a_refusal() {
    let two: [std::net::IpAddr; 2] = [[127, 0, 0, 2].into(), [127, 0, 0, 1].into()];
    let config = Config::default().with_host("two.test", &two);
    on_dpc_runner_with(&config, |client| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || listener.accept().map(|(_, from)| from));
        async move {
            let found = lookup_host(&client, "two.test", port)
                .await
                .expect("lookup_host");
            let expected: Vec<SocketAddr> =
                two.iter().map(|&ip| SocketAddr::new(ip, port)).collect();
            assert_eq!(found.as_slice(), expected.as_slice(), "the table's order");
            let refused = TcpStream::connect(&client, expected[0]).await.unwrap_err();
            assert_eq!(
                refused.kind(),
                ErrorKind::ConnectionRefused,
                "the first is refused"
            );
            let stream = TcpStream::connect_host(&client, "two.test", port)
                .await
                .expect("the second address connects");
            assert_eq!(stream.peer_addr().await.expect("peer_addr"), expected[1]);
            stream.close().await;
            peer.join().unwrap().expect("accepted");
        }
    });
}

#[test]
fn resolve_itself_at_dispatch_level_says_it_needs_passive_level() {
    on_dpc_runner(|client| async move {
        let refused = resolve(&client, "localhost", 7).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::WrongIrql);
        assert_eq!(
            refused.to_string(),
            "resolve: needs PASSIVE_LEVEL, called or polled above it"
        );
        // The same name through lookup_host, handed to the runner's thread.
        let found = lookup_host(&client, "localhost", 7)
            .await
            .expect("lookup_host");
        assert!(found.contains(&"127.0.0.1:7".parse().unwrap()), "{found:?}");
    });
}

#[test]
fn a_literal_address_skips_resolution() {
    on_dpc_runner(|client| async move {
        for (host, expected) in [
            ("192.0.2.7", "192.0.2.7:80"),
            ("::1", "[::1]:80"),
            ("[::1]", "[::1]:80"),
        ] {
            let found = lookup_host(&client, host, 80).await.expect(host);
            let expected: SocketAddr = expected.parse().unwrap();
            assert_eq!(found.as_slice(), [expected].as_slice(), "{host}");
        }
        let empty = lookup_host(&client, "", 80).await.unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::InvalidInput);
        let too_long = "a".repeat(1000);
        let too_long = lookup_host(&client, &too_long, 80).await.unwrap_err();
        assert_eq!(too_long.kind(), ErrorKind::InvalidInput);
    });
}

/// A lookup dropped after it was handed to the runner's thread: the thread finishes it and
/// frees it; nothing leaks (the plan runner checks the pool) and the next lookup works.
#[test]
fn a_lookup_dropped_mid_flight_is_finished_and_freed_by_the_thread() {
    on_dpc_runner(|client| async move {
        {
            let mut abandoned = pin!(lookup_host(&client, "localhost", 7));
            // The first poll hands it over (and usually returns before the thread is done:
            // either way the future is dropped below with the work queued or finished).
            std::future::poll_fn(|cx| {
                let _ = abandoned.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
        }
        let found = lookup_host(&client, "localhost", 7)
            .await
            .expect("lookup_host");
        assert!(!found.is_empty());
    });
}

#[test]
fn send_to_host_from_a_dpc_task_reaches_a_udp_peer() {
    on_dpc_runner(|client| {
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let port = peer.local_addr().unwrap().port();
        async move {
            let socket = UdpSocket::bind(&client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            assert!(
                format!("{socket:?}").starts_with("UdpSocket {"),
                "{socket:?}"
            );
            let (sent, _) = socket
                .send_to_host(
                    &client,
                    IoBuf::from_slice(b"hello").unwrap(),
                    "localhost",
                    port,
                )
                .await;
            assert_eq!(sent.expect("send_to_host"), 5);
            let mut got = [0_u8; 16];
            let (n, _) = peer.recv_from(&mut got).expect("the datagram arrives");
            assert_eq!(&got[..n], b"hello");
            socket.close().await;
        }
    });
}

/// At `PASSIVE_LEVEL` (here `block_on`), `lookup_host` resolves inline: no runner needed.
#[test]
fn lookup_host_at_passive_level_resolves_inline() {
    common::each_plan(|client, _| {
        let found = block_on(lookup_host(client, "localhost", 9)).expect("lookup_host");
        assert!(found.contains(&"127.0.0.1:9".parse().unwrap()), "{found:?}");
        assert!(format!("{client:?}").starts_with("WskClient { client: 0x"));
    });
}
