//! What wsk-net's host tests share, over `wsk_host::testing`: a driver object to register a
//! `WskClient` with, and the per-plan runner with a registered client.
#![allow(dead_code, unused_imports, reason = "each test binary uses its part")]

pub mod chain;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wsk_executor::{Budget, Runner, RunnerKind};
use wsk_host::faults::{Completion, Faults};
use wsk_host::testing;
use wsk_host::{Config, Kernel, Provider};
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

/// [`each_plan`] on `provider`'s network: every standard plan (or `WSK_FAULTS`), a registered
/// client, the leak and bugcheck checks (`testing::run_plans_with`). For scenarios about a
/// provider that lacks a feature (the in-memory network has no event callbacks, as Wine 8).
pub fn each_plan_on(provider: Provider, scenario: impl Fn(&WskClient, &Kernel) + Sync) {
    let config = Config::default().with_provider(provider);
    testing::run_plans_with(&config, testing::plans(), |kernel| {
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

/// `127.0.0.1:0`: a loopback address with an ephemeral port, to bind to.
pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The providers a Miri-run scenario runs on: the in-memory network only under Miri (no host
/// sockets there), both otherwise.
pub fn providers() -> Vec<Provider> {
    if cfg!(miri) {
        vec![Provider::Memory]
    } else {
        vec![Provider::Memory, Provider::HostSockets]
    }
}

/// The fault plans of a Miri-run scenario: the standard ones (or `WSK_FAULTS`), cut to two
/// under Miri (inline; mixed with reordering and delays) to keep the run to minutes.
pub fn plans_cut_under_miri() -> Vec<Faults> {
    if cfg!(miri) {
        vec![
            Faults::with(Completion::Inline, 1),
            Faults {
                reorder: true,
                max_delay: Duration::from_millis(1),
                ..Faults::with(Completion::Mixed, 0xfeed_f00d)
            },
        ]
    } else {
        plans()
    }
}

/// Boots a kernel per provider ([`providers`]) and plan ([`plans_cut_under_miri`]), runs
/// `scenario` with a registered client on a `PASSIVE_LEVEL` system thread, deregisters, and
/// checks the verifier found nothing: no leak, no bugcheck.
pub fn each_provider_and_plan(scenario: impl Fn(&WskClient, &Kernel) + Sync) {
    for provider in providers() {
        for plan in plans_cut_under_miri() {
            let label = format!("{provider:?} {plan:?}");
            eprintln!("kernel: {label}");
            let kernel = Kernel::boot(Config::default().with_faults(plan).with_provider(provider));
            kernel.on_kernel_thread(|| {
                let client = WskClient::register(test_driver(&kernel)).expect("register");
                scenario(&client, &kernel);
                client.deregister().expect("deregister");
            });
            let report = kernel.check_leaks();
            assert!(report.is_clean(), "{label}: {report}");
            let bugchecks = kernel.take_bugchecks();
            assert!(bugchecks.is_empty(), "{label}: {bugchecks:?}");
        }
    }
}

/// Bounds a `std` peer's blocking reads and writes by [`BOUND`]: a stalled scenario fails
/// loudly instead of hanging.
pub fn bounded(stream: &std::net::TcpStream) {
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.set_write_timeout(Some(BOUND)).unwrap();
}

/// A listener on a loopback port, and its address.
pub async fn listen(client: &WskClient) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind(client, loopback()).await.expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    (listener, addr)
}

/// A listener, a `std` peer connected to it (with bounded I/O, [`bounded`]), and our accepted
/// stream.
pub async fn connected_pair(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let (listener, addr) = listen(client).await;
    let peer = std::net::TcpStream::connect(addr).unwrap();
    bounded(&peer);
    let (stream, _) = listener.accept().await.expect("accept");
    (listener, peer, stream)
}

/// Runners for the tests that spawn tasks: a runner cannot be restarted, so each boot takes
/// a fresh one.
static RUNNERS: [Runner; 16] = [const { Runner::new(Budget::DEFAULT) }; 16];
static NEXT_RUNNER: AtomicUsize = AtomicUsize::new(0);

/// A runner no scenario of this test binary has used yet, started on DPCs.
pub fn fresh_runner() -> &'static Runner {
    let index = NEXT_RUNNER.fetch_add(1, Ordering::Relaxed);
    let runner = RUNNERS
        .get(index)
        .expect("a test used more runners than RUNNERS holds");
    runner.start(RunnerKind::Dpc).expect("start runner");
    runner
}
