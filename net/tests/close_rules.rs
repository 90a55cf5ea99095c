//! The rules around `WskCloseSocket` that the WDK puts on the application: no other call on
//! the socket may be in progress when it is called, none may follow it, and deregistration
//! waits for every socket to close however long that takes.

use std::time::Duration;

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults, SlowCall, WskOp};
use wsk_host::{Config, Kernel};
use wsk_net::{IoBuf, TcpListener, TcpStream, WskClient};

mod common;
use common::{listen, test_driver_named};

/// The driver object these tests register with.
fn test_driver(kernel: &Kernel) -> wsk_net::Driver {
    test_driver_named(kernel, "wskclosetest")
}

async fn connected(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let (listener, addr) = listen(client).await;
    let peer = std::net::TcpStream::connect(addr).unwrap();
    let (stream, _) = listener.accept().await.expect("accept");
    (listener, peer, stream)
}

/// Deregistration calls `WskCloseSocket` from the unloading thread while a task may still be
/// inside a call on the same socket (here: a send or a receive that lingers 300 ms inside the
/// provider). The close must wait for that call to return (the provider bugchecks
/// `DRIVER_VERIFIER_DETECTED_VIOLATION` otherwise), and no call may reach WSK after it.
#[test]
fn deregistration_closes_a_socket_only_after_its_call_in_progress_returned() {
    for op in [WskOp::Send, WskOp::Receive] {
        for completion in [Completion::Inline, Completion::Deferred] {
            let label = format!("{op:?} {completion:?}");
            let plan = Faults {
                slow_call: Some(SlowCall {
                    op,
                    delay: Duration::from_millis(300),
                }),
                ..Faults::with(completion, 41)
            };
            let kernel = Kernel::boot(Config::default().with_faults(plan));
            let driver = test_driver(&kernel);
            kernel.on_kernel_thread(|| {
                let client = WskClient::register(driver).expect("register");
                let (listener, _peer, stream) = block_on(connected(&client));
                std::thread::scope(|scope| {
                    let caller = scope.spawn(|| {
                        kernel.on_kernel_thread(|| {
                            if op == WskOp::Send {
                                let buf = IoBuf::from_slice(b"in flight").expect("buffer");
                                block_on(stream.send(buf)).0
                            } else {
                                let buf = IoBuf::with_capacity(64).expect("buffer");
                                block_on(stream.recv(buf)).0
                            }
                        })
                    });
                    // The call is inside the provider (300 ms) when deregistration closes
                    // every socket still open.
                    std::thread::sleep(Duration::from_millis(100));
                    kernel.on_kernel_thread(|| {
                        drop(listener);
                        client.deregister().expect("deregister");
                    });
                    let result = caller.join().expect("the calling thread");
                    // Sent before the close went out, or cancelled by it: either is fine.
                    if let (WskOp::Send, Ok(n)) = (op, result) {
                        assert_eq!(n, 9, "{label}");
                    }
                    // After the close, a call is refused before it reaches WSK.
                    let after = kernel.on_kernel_thread(|| {
                        block_on(stream.send(IoBuf::from_slice(b"late").unwrap())).0
                    });
                    assert!(after.is_err(), "{label}: a send after close reached WSK");
                });
                drop(stream);
            });
            let report = kernel.check_leaks();
            assert!(report.is_clean(), "{label}: {report}");
            let bugchecks = kernel.take_bugchecks();
            assert!(bugchecks.is_empty(), "{label}: {bugchecks:#?}");
        }
    }
}
