//! `TcpStream::connect` through `WskSocketConnect` (issue 14): one call where the provider has
//! it, the local address chosen by `connect_from`, and the fall back to `WskSocket` +
//! `WskBind` + `WskConnect` where it completes with `STATUS_NOT_IMPLEMENTED` or
//! `STATUS_NOT_SUPPORTED` (Wine 8's netio). Every scenario runs under the standard fault plans
//! (inline, deferred, mixed, reordered), each with the rule the scenario needs added, and the
//! verifier's leak check.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::SocketAddr;

use wsk_executor::{block_on, timeout};
use wsk_host::faults::{ErrorRule, Faults, WskOp};
use wsk_net::{BindOptions, ErrorKind, IoBuf, TcpStream, WskClient};
use wsk_sys::NTSTATUS;

mod common;
use common::{BOUND, plans, run_plans};

/// The standard plans, each with `errors` added.
fn plans_with(errors: &[ErrorRule]) -> Vec<Faults> {
    plans()
        .into_iter()
        .map(|mut plan| {
            plan.errors.extend_from_slice(errors);
            plan
        })
        .collect()
}

/// Every `WskSocket` fails: a connect that works made no `WskSocket` call.
const NO_WSK_SOCKET: ErrorRule = ErrorRule {
    op: WskOp::Socket,
    nth: 0,
    status: wsk_sys::STATUS_INSUFFICIENT_RESOURCES,
};

/// A std listener whose first connection echoes one byte back; returns the address and the
/// peer address it saw.
fn one_byte_echo_peer() -> (SocketAddr, std::thread::JoinHandle<SocketAddr>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, from) = listener.accept().unwrap();
        s.set_read_timeout(Some(BOUND)).unwrap();
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).unwrap();
        s.write_all(&byte).unwrap();
        from
    });
    (addr, peer)
}

/// Sends one byte on `stream` and checks it comes back.
async fn round_trip(stream: &TcpStream) {
    let (sent, buf) = stream.send(IoBuf::from_slice(&[42]).unwrap()).await;
    sent.expect("send");
    let (n, buf) = stream.recv_exact(buf, 1).await;
    n.expect("recv_exact");
    assert_eq!(buf[0], 42);
}

fn connect_and_echo(client: &WskClient, local: Option<SocketAddr>) -> SocketAddr {
    let (addr, peer) = one_byte_echo_peer();
    block_on(async {
        let connecting = async {
            match local {
                Some(local) => {
                    TcpStream::connect_from(client, local, addr, &BindOptions::default()).await
                }
                None => TcpStream::connect(client, addr).await,
            }
        };
        let stream = timeout(BOUND, connecting)
            .await
            .expect("connected in time")
            .expect("connect");
        round_trip(&stream).await;
        stream.close().await;
    });
    peer.join().unwrap()
}

#[test]
fn connect_is_one_wsk_socket_connect_call() {
    run_plans(plans_with(&[NO_WSK_SOCKET]), |client, _| {
        let from = connect_and_echo(client, None);
        assert!(from.ip().is_loopback());
    });
}

#[test]
fn connect_from_binds_the_chosen_local_address() {
    run_plans(plans_with(&[NO_WSK_SOCKET]), |client, _| {
        // 127.0.0.2 is loopback too on Linux: the peer sees the address we chose.
        let from = connect_and_echo(client, Some("127.0.0.2:0".parse().unwrap()));
        assert_eq!(from.ip().to_string(), "127.0.0.2");
    });
}

fn falls_back(status: NTSTATUS) {
    // The first connect-class call is the WskSocketConnect: it completes with `status`; the
    // WskConnect of the fallback (the second) goes through.
    let rule = ErrorRule {
        op: WskOp::Connect,
        nth: 1,
        status,
    };
    run_plans(plans_with(&[rule]), |client, _| {
        let from = connect_and_echo(client, Some("127.0.0.3:0".parse().unwrap()));
        assert_eq!(
            from.ip().to_string(),
            "127.0.0.3",
            "the fallback binds `local` too"
        );
    });
}

#[test]
fn connect_falls_back_to_three_calls_when_socket_connect_is_not_implemented() {
    falls_back(wsk_sys::STATUS_NOT_IMPLEMENTED);
}

#[test]
fn connect_falls_back_to_three_calls_when_socket_connect_is_not_supported() {
    falls_back(wsk_sys::STATUS_NOT_SUPPORTED);
}

#[test]
fn options_before_bind_take_the_three_call_path() {
    // reuse_address must be set between WskSocket and WskBind: WskSocket is called (and
    // fails here), proving WskSocketConnect was not used.
    run_plans(plans_with(&[NO_WSK_SOCKET]), |client, _| {
        let options = BindOptions {
            reuse_address: true,
            ..BindOptions::default()
        };
        let addr = "127.0.0.1:9".parse().unwrap();
        let result = block_on(TcpStream::connect_with(client, addr, &options));
        assert_eq!(result.err().map(|e| e.kind()), Some(ErrorKind::NoResources));
    });
}

#[test]
fn refused_socket_connect_leaves_nothing_and_mixed_families_are_invalid_input() {
    run_plans(plans(), |client, _| {
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let refused = block_on(TcpStream::connect(client, addr));
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(ErrorKind::ConnectionRefused)
        );
        let mixed = block_on(TcpStream::connect_from(
            client,
            "[::1]:0".parse().unwrap(),
            addr,
            &BindOptions::default(),
        ));
        assert_eq!(mixed.err().map(|e| e.kind()), Some(ErrorKind::InvalidInput));
    });
}

#[test]
fn keepalive_is_set_after_a_socket_connect() {
    run_plans(plans_with(&[NO_WSK_SOCKET]), |client, _| {
        let (addr, peer) = one_byte_echo_peer();
        block_on(async {
            let options = BindOptions {
                keepalive: true,
                ..BindOptions::default()
            };
            let stream = TcpStream::connect_with(client, addr, &options)
                .await
                .expect("connect with keepalive");
            round_trip(&stream).await;
            stream.close().await;
        });
        peer.join().unwrap();
    });
}

#[test]
fn socket_connect_without_fallback_reports_a_missing_wsk_socket_connect() {
    let rule = ErrorRule {
        op: WskOp::Connect,
        nth: 1,
        status: wsk_sys::STATUS_NOT_IMPLEMENTED,
    };
    run_plans(plans_with(&[rule]), |client, _| {
        let (addr, peer) = one_byte_echo_peer();
        let local = "127.0.0.1:0".parse().unwrap();
        let missing = block_on(TcpStream::socket_connect(client, local, addr));
        assert_eq!(
            missing.err().map(|e| e.kind()),
            Some(ErrorKind::Unsupported)
        );
        // The second call is not hit by the rule: the provider has it.
        let stream = block_on(TcpStream::socket_connect(client, local, addr)).expect("connect");
        block_on(async {
            round_trip(&stream).await;
            stream.close().await;
        });
        peer.join().unwrap();
    });
}
