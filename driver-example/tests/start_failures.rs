//! Start-up failures fail: `DriverEntry` binds its listener before it returns, so a port in
//! use fails the load with the bind's status (as `sc start` would report on Windows), and a
//! setting out of range fails it with `STATUS_INVALID_PARAMETER` instead of being replaced by
//! a default. A failed start leaves nothing registered, so the same driver then loads with
//! port 0, logs the port WSK picked and serves on it.
//!
//! Its own test binary: the driver keeps its runner in statics, loaded once per process (a
//! start that fails before the runner starts leaves it startable).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use wsk::sys::{STATUS_ADDRESS_ALREADY_EXISTS, STATUS_INVALID_PARAMETER};
use wsk_host::{Config, Kernel, RegValue, Registry};

use common::BOUND;

fn registry(port: u32, extra: &[(&str, RegValue)]) -> Registry {
    let mut registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(port))
        .with(
            "Parameters",
            "BindAddress",
            RegValue::Sz("127.0.0.1".into()),
        );
    for (name, value) in extra {
        registry = registry.with("Parameters", name, value.clone());
    }
    registry
}

/// The address in the last `wskecho: listening on <addr>` line of the log.
fn listening_addr(log: &str) -> SocketAddr {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("wskecho: listening on "))
        .unwrap_or_else(|| panic!("no 'listening on' line:\n{log}"))
        .1;
    line.trim().parse().expect("a socket address")
}

#[test]
fn failed_starts_fail_the_load_and_port_zero_serves_on_the_logged_port() {
    let kernel = Kernel::boot(Config::default());

    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("take a port");
    let port = taken.local_addr().unwrap().port();
    let status = kernel
        .load_driver(
            wskecho::DriverEntry,
            "WskEchoInUse",
            registry(port.into(), &[]),
        )
        .err()
        .expect("DriverEntry fails when its port is in use");
    assert_eq!(status, STATUS_ADDRESS_ALREADY_EXISTS);
    let log = kernel.debug_log();
    assert!(
        log.contains(&format!(
            "wskecho: not started: cannot listen on 127.0.0.1:{port}: "
        )),
        "the reason is logged:\n{log}"
    );
    drop(taken);

    for (value, setting) in [
        // Above the task pool with or without the `scale` feature.
        ("MaxConnections", RegValue::Dword(20_000)),
        ("MaxConnections", RegValue::Dword(0)),
        ("Port", RegValue::Dword(70_000)),
        ("Runner", RegValue::Sz("thread".into())),
    ] {
        let status = kernel
            .load_driver(
                wskecho::DriverEntry,
                "WskEchoBadSetting",
                registry(0, &[(value, setting.clone())]),
            )
            .err()
            .unwrap_or_else(|| panic!("{value} {setting:?} is refused"));
        assert_eq!(status, STATUS_INVALID_PARAMETER, "{value} {setting:?}");
    }
    let log = kernel.debug_log();
    assert!(
        log.contains(&format!(
            "wskecho: not started: MaxConnections 20000 is outside 1 to {}",
            wskecho::echo::MAX_CONNECTIONS
        )),
        "{log}"
    );

    let driver = kernel
        .load_driver(wskecho::DriverEntry, "WskEchoPortZero", registry(0, &[]))
        .expect("DriverEntry succeeds after the failed starts");
    let addr = listening_addr(&kernel.debug_log());
    assert_eq!(addr.ip(), Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0, "the log names the port WSK picked");
    let mut client = TcpStream::connect(addr).expect("connect to the logged port");
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"zero").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"zero");
    drop(client);

    let report = kernel.unload(driver);
    assert!(report.is_clean(), "unload report: {report}");
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.is_empty(),
        "a failed start left something behind: {bugchecks:#?}"
    );
}
