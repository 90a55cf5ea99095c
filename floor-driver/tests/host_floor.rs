//! The floor driver on the host kernel under every standard fault plan, with each chain
//! deferral (inline, as on Windows; a worker thread, as under Wine): loaded through its
//! `DriverEntry`, it serves the echo driver's client scenarios byte-exact over real TCP on
//! loopback, is unloaded with clients connected (each of them closed by the server), and the
//! verifier reports no leak and no bugcheck.

use std::net::{Ipv4Addr, SocketAddr};

use wsk_benches::load;
use wsk_host::{Kernel, RegValue, Registry, testing};

fn serve_scenarios_and_unload(kernel: &Kernel, defer_to_thread: bool) {
    let port = load::free_loopback_port().expect("a free port");
    let registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port.into()))
        .with("Parameters", "LoopbackOnly", RegValue::Dword(1))
        .with(
            "Parameters",
            "DeferToThread",
            RegValue::Dword(defer_to_thread.into()),
        );
    let driver = kernel
        .load_driver(wskfloor::DriverEntry, "WskFloor", registry)
        .expect("DriverEntry succeeds");
    let log = kernel.debug_log();
    assert!(log.contains("wskfloor: listening on 127.0.0.1:"), "{log}");
    assert_eq!(
        log.contains("wskfloor: the chain's next calls run on a worker thread"),
        defer_to_thread,
        "{log}"
    );
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let echo = load::concurrent_echo(addr, 8, 40, 64 * 1024).expect("concurrent echo");
    assert_eq!(echo.messages, 8 * 40);
    assert_eq!(load::churn(addr, 100, 4).expect("churn").connections, 100);
    load::reset_mid_message(addr).expect("still serving after a reset");

    let held = load::hold_connections(addr, 8).expect("idle connections");
    let held_count = held.len();
    let report = kernel.unload(driver);
    assert_eq!(
        held.wait_closed(testing::BOUND)
            .expect("unload closes every connection"),
        held_count
    );
    assert!(report.is_clean(), "unload report: {report}");
    let log = kernel.debug_log();
    assert!(log.contains("wskfloor: unload complete:"), "{log}");
}

#[test]
fn floor_echoes_byte_exact_and_unloads_clean_under_every_fault_plan() {
    testing::each_plan(|kernel| serve_scenarios_and_unload(kernel, false));
}

#[test]
fn floor_with_its_worker_thread_echoes_and_unloads_clean_under_every_fault_plan() {
    testing::each_plan(|kernel| serve_scenarios_and_unload(kernel, true));
}

#[test]
fn a_port_in_use_fails_the_load_and_leaves_nothing() {
    testing::run_plans([testing::plans()[0].clone()], |kernel| {
        let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let registry = Registry::new()
            .with("Parameters", "Port", RegValue::Dword(port.into()))
            .with("Parameters", "LoopbackOnly", RegValue::Dword(1));
        let Err(status) = kernel.load_driver(wskfloor::DriverEntry, "WskFloorBusy", registry)
        else {
            panic!("DriverEntry succeeded on a port in use");
        };
        assert!(status < 0, "a failure status: {status:#x}");
        assert!(kernel.debug_log().contains("wskfloor: not started:"));
    });
}
