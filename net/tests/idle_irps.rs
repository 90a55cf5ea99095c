//! The IRPs an accepted connection holds (issue 11, memory per idle connection): its receive
//! and close IRPs from the start (the accept ran on its receive slot), its send IRP once it
//! sent, its control IRP once it made a control call, and none of them after its close.
//! Counted with the host kernel's live IRPs, under the standard fault plans.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::testing::kernel_usage;
use wsk_net::{IoBuf, TcpListener};

mod common;
use common::{BOUND, each_plan};

/// The running kernel's live IRPs.
fn live_irps() -> usize {
    kernel_usage().irps
}

/// Waits (bounded) for the live IRPs to come back to `expected`, which a closed socket's last
/// reference frees, possibly just after its close was reported; returns the last count.
fn irps_settle_to(expected: usize) -> usize {
    let deadline = Instant::now() + BOUND;
    loop {
        let now = live_irps();
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_accepted_connection_holds_its_receive_and_close_irps_and_others_once_used() {
    each_plan(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let addr = listener.local_addr().await.expect("local_addr");
            let before = live_irps();
            let mut peer = std::net::TcpStream::connect(addr).expect("connect");
            peer.set_read_timeout(Some(BOUND)).unwrap();
            let (stream, _) = listener.accept().await.expect("accept");
            assert_eq!(
                live_irps() - before,
                2,
                "a fresh connection holds its receive and close IRPs only"
            );
            peer.write_all(b"x").unwrap();
            let (received, buf) = stream.recv_exact(IoBuf::with_capacity(8).unwrap(), 1).await;
            received.expect("recv_exact");
            assert_eq!(live_irps() - before, 2, "receiving allocates no IRP");
            let (sent, _) = stream.send(buf).await;
            sent.expect("send");
            assert_eq!(live_irps() - before, 3, "the first send allocates its IRP");
            let mut back = [0u8; 1];
            peer.read_exact(&mut back).expect("the echo");
            assert_eq!(&back, b"x");
            stream.peer_addr().await.expect("peer_addr");
            assert_eq!(live_irps() - before, 4, "a control call allocates its IRP");
            drop(peer);
            stream.close().await;
            assert_eq!(
                irps_settle_to(before),
                before,
                "a closed connection frees every IRP it held"
            );
            listener.close().await;
        });
    });
}
