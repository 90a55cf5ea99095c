//! Exact errors on the host kernel's WSK provider: a graceful disconnect after the peer reset
//! the connection completes with `STATUS_CONNECTION_RESET`, so `wsk-net` reports
//! `ConnectionReset` (not the generic `Other` of `STATUS_UNSUCCESSFUL`), and the message names
//! the operation once.
#![cfg(unix)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use wsk_benches::load::set_linger_zero;
use wsk_executor::block_on;
use wsk_host::{Config, Kernel};
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, WskClient};
use wsk_sys::STATUS_CONNECTION_RESET;

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn a_disconnect_after_a_peer_reset_is_connection_reset() {
    let kernel = Kernel::boot(Config::default());
    let object = Box::leak(Box::new(kernel.create_driver_object("wsknetreset"))).object();
    // SAFETY: leaked above, so valid for every client registered with it.
    let driver = unsafe { wsk_net::Driver::from_raw(object) }.expect("a driver object");
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(driver).expect("register");
        block_on(scenario(&client));
        client.deregister().expect("deregister");
    });
    let report = kernel.check_leaks();
    assert!(report.is_clean(), "{report}");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:?}");
}

async fn scenario(client: &WskClient) {
    let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let mut peer = std::net::TcpStream::connect(addr).expect("connect");
    peer.set_write_timeout(Some(BOUND)).unwrap();
    let (stream, _) = listener.accept().await.expect("accept");
    peer.write_all(b"bye").unwrap();
    // The peer's FIN, as an echo client ends: the server reads the data, then end of stream.
    peer.shutdown(Shutdown::Write).unwrap();
    let mut buf = IoBuf::with_capacity(16).expect("buffer");
    loop {
        let (received, back) = stream.recv(buf).await;
        buf = back;
        if received.expect("recv before the reset") == 0 {
            break;
        }
    }
    // Then it resets before the server's own disconnect.
    set_linger_zero(&peer).expect("SO_LINGER {on, 0} on the peer");
    drop(peer);
    std::thread::sleep(Duration::from_millis(200));

    let e = stream
        .disconnect(Disconnect::Graceful)
        .await
        .expect_err("a disconnect on a reset connection fails");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert_eq!(e.status(), Some(STATUS_CONNECTION_RESET), "{e}");
    let message = e.to_string();
    assert_eq!(
        message.matches("disconnect").count(),
        1,
        "the operation is named once: {message}"
    );
    stream.close().await;
    listener.close().await;
}
