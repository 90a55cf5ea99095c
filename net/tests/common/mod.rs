//! What wsk-net's host tests share, over `wsk_host::testing`: a driver object to register a
//! `WskClient` with, and the per-plan runner with a registered client.
#![allow(dead_code, unused_imports, reason = "each test binary uses its part")]

use wsk_host::Kernel;
use wsk_host::faults::Faults;
use wsk_host::testing;
use wsk_net::{TcpListener, TcpStream, WskClient};

pub use wsk_host::testing::{BOUND, plans};

/// A driver object named `name` for `WskClient::register`, alive for the rest of the process.
pub fn test_driver_named(kernel: &Kernel, name: &str) -> wsk_net::Driver {
    let object = testing::leaked_driver_object(kernel, name);
    // SAFETY: leaked by leaked_driver_object, so valid for every client registered with it.
    unsafe { wsk_net::Driver::from_raw(object) }.expect("a driver object")
}

/// The driver object most tests register with.
pub fn test_driver(kernel: &Kernel) -> wsk_net::Driver {
    test_driver_named(kernel, "wsknettest")
}

/// Runs `scenario` under every fault plan of `wsk_host::testing::plans`: see [`run_plans`].
pub fn each_plan(scenario: impl Fn(&WskClient, &Kernel) + Sync) {
    run_plans(testing::plans(), scenario);
}

/// Boots a kernel per plan, registers a client on a `PASSIVE_LEVEL` system thread, runs
/// `scenario`, deregisters, and checks the verifier found nothing (`testing::run_plans`).
pub fn run_plans(plans: Vec<Faults>, scenario: impl Fn(&WskClient, &Kernel) + Sync) {
    testing::run_plans(plans, |kernel| {
        kernel.on_kernel_thread(|| {
            let client = WskClient::register(test_driver(kernel)).expect("WskClient::register");
            scenario(&client, kernel);
            client.deregister().expect("deregister");
        });
    });
}

/// A listener on a loopback port, a std peer connected to it (with a read timeout of
/// [`BOUND`], so a read that gets nothing fails instead of hanging), and our accepted stream.
pub async fn connected(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let peer = std::net::TcpStream::connect(addr).expect("connect");
    peer.set_read_timeout(Some(BOUND)).unwrap();
    let (stream, _) = listener.accept().await.expect("accept");
    (listener, peer, stream)
}
