//! A driver written with the kit, on the host kernel: `driver_entry!` turns start errors into
//! the status `DriverEntry` returns (and stops the service: nothing stays registered), the
//! settings reader reads and refuses values by name, and the service starts, stops and
//! starts again in one process; a served listener closes at unload, before the client is
//! deregistered (the verifier would raise a bugcheck otherwise).
//!
//! One test: the macro writes one `DriverEntry` per binary, over these statics. Each load is
//! its own service name: the host registry keeps a service's values from load to load.
#![cfg(not(target_os = "windows"))]

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::string::String;
use std::sync::Mutex;

use wsk::driver::{Entry, Failure};
use wsk::{Budget, Runner, RunnerKind, Service, TaskPool, TcpListener};
use wsk_host::{Config, Kernel, RegValue, Registry};
use wsk_sys::{STATUS_ADDRESS_ALREADY_EXISTS, STATUS_INVALID_PARAMETER};

static RUNNER: Runner = Runner::new(Budget::DEFAULT);
static TASKS: TaskPool<4096, 1> = TaskPool::new();
static SERVICE: Service = Service::new("lifecycle", &[&RUNNER]);
/// What the driver saw, for the test to check.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

wsk::driver_entry!(service: SERVICE, start: start, stop: stop);

fn seen(line: String) {
    SEEN.lock().unwrap().push(line);
}

fn take_seen() -> Vec<String> {
    std::mem::take(&mut *SEEN.lock().unwrap())
}

fn start(entry: &Entry<'_>) -> Result<(), Failure> {
    let parameters = entry.parameters()?;
    let port = parameters.dword_in("Port", 0..=65535)?.unwrap_or(0);
    let mut text = [0u8; 32];
    let greeting = parameters.string("Greeting", &mut text)?.unwrap_or("hello");
    seen(format!("greeting={greeting}"));
    let mut list = [0u8; 64];
    let peers: Vec<&str> = parameters
        .multi_string("Peers", &mut list)?
        .into_iter()
        .flatten()
        .collect();
    seen(format!("peers={peers:?}"));
    let serve = parameters.dword("Serve")?.unwrap_or(0) == 1;
    assert!(SERVICE.client().is_none(), "no client before start");
    let client = SERVICE.start(entry.driver())?;
    assert!(SERVICE.client().is_some());
    if serve {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, u16::try_from(port).unwrap()));
        let listener = wsk::executor::block_on(TcpListener::bind(client, addr))?;
        RUNNER.start(RunnerKind::Dpc)?;
        let _detached = RUNNER.spawn(&TASKS, async move {
            while let Ok((stream, _peer)) = listener.accept().await {
                drop(stream);
            }
        })?;
    }
    Ok(())
}

fn stop() {
    let report = SERVICE.stop();
    seen(format!(
        "stop: {report}, deregistered={}, client={}",
        report.deregistered,
        SERVICE.client().is_some()
    ));
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn params(values: &[(&str, RegValue)]) -> Registry {
    values
        .iter()
        .fold(Registry::new(), |registry, (name, value)| {
            registry.with("Parameters", name, value.clone())
        })
}

#[test]
fn settings_failures_and_start_stop_start_on_one_kernel() {
    let kernel = Kernel::boot(Config::default());
    refused_settings_register_nothing(&kernel);
    start_stop_start(&kernel);
    a_failed_start_stops_the_service(&kernel);
    serving_unloads_in_order(&kernel);
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:#?}");
}

/// A value out of range, and one of the wrong type: refused by name, nothing registered.
fn refused_settings_register_nothing(kernel: &Kernel) {
    let refused = [
        (
            "Port",
            RegValue::Dword(70_000),
            "Port 70000 is outside 0 to 65535",
        ),
        (
            "Greeting",
            RegValue::Dword(1),
            "Greeting is a REG_DWORD value, not REG_SZ",
        ),
        (
            "Greeting",
            RegValue::Sz("x".repeat(40)),
            "Greeting is longer than the 32 bytes there is room for",
        ),
        (
            "Greeting",
            RegValue::Sz("x".repeat(1500)),
            "Greeting is 3002 bytes, longer than the 2048 there is room for",
        ),
        (
            "Peers",
            RegValue::Sz("a".into()),
            "Peers is a REG_SZ value, not REG_MULTI_SZ",
        ),
    ];
    for (i, (name, value, why)) in refused.into_iter().enumerate() {
        let status = kernel
            .load_driver(
                DriverEntry,
                &format!("Refused{i}"),
                params(&[(name, value)]),
            )
            .err()
            .expect("the load fails");
        assert_eq!(status, STATUS_INVALID_PARAMETER, "{why}");
        let log = kernel.debug_log();
        assert!(
            log.contains(&format!("lifecycle: not started: {why}\n")),
            "{log}"
        );
    }
    let log = kernel.debug_log();
    assert!(
        !log.contains("deregistered"),
        "nothing was registered:\n{log}"
    );
    take_seen();
}

/// No Parameters key at all: every default. Then stop, and start again with values.
fn start_stop_start(kernel: &Kernel) {
    let driver = kernel
        .load_driver(DriverEntry, "Lifecycle3", Registry::new())
        .expect("defaults without a Parameters key");
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    let driver = kernel
        .load_driver(
            DriverEntry,
            "Lifecycle4",
            params(&[
                ("Greeting", RegValue::Sz("hi".into())),
                ("Peers", RegValue::MultiSz(vec!["a".into(), "bc".into()])),
            ]),
        )
        .expect("a second start after a stop");
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    assert_eq!(
        take_seen(),
        [
            "greeting=hello",
            "peers=[]",
            "stop: no tasks left, deregistered=true, client=false",
            "greeting=hi",
            "peers=[\"a\", \"bc\"]",
            "stop: no tasks left, deregistered=true, client=false",
        ]
    );
    assert_eq!(
        kernel
            .debug_log()
            .matches("lifecycle: deregistered")
            .count(),
        2
    );
}

/// A start that fails after registering (the port is taken): the macro stops the service.
fn a_failed_start_stops_the_service(kernel: &Kernel) {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let status = kernel
        .load_driver(
            DriverEntry,
            "Lifecycle5",
            params(&[
                ("Serve", RegValue::Dword(1)),
                ("Port", RegValue::Dword(port.into())),
            ]),
        )
        .err()
        .expect("the load fails");
    assert_eq!(status, STATUS_ADDRESS_ALREADY_EXISTS);
    drop(taken);
    assert_eq!(
        kernel
            .debug_log()
            .matches("lifecycle: deregistered")
            .count(),
        3
    );
}

/// Serving: the task holding the client and the listener is dropped before deregistering.
fn serving_unloads_in_order(kernel: &Kernel) {
    let port = free_port();
    let driver = kernel
        .load_driver(
            DriverEntry,
            "Lifecycle6",
            params(&[
                ("Serve", RegValue::Dword(1)),
                ("Port", RegValue::Dword(port.into())),
            ]),
        )
        .expect("serving start");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // A blocking connect: the task resets what it accepts, which a connect with a timeout
    // (which reads the socket's error after the handshake) could report as the failure.
    TcpStream::connect(addr).expect("the driver listens");
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener closed at unload"
    );
    assert!(
        take_seen()
            .iter()
            .any(|l| l == "stop: no tasks left, deregistered=true, client=false")
    );
}
