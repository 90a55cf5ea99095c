//! The echo driver of README.md's "Writing a driver", compiled and run: the code between the
//! markers below is the README's block, character for character (checked here), loaded on the
//! host kernel, echoing, and unloaded clean.
#![cfg(not(target_os = "windows"))]

// README: begin
use wsk::driver::{Entry, Failure};
use wsk::{Budget, IoBuf, Runner, RunnerKind, Service, TaskPool, TcpListener, TcpStream};

static RUNNER: Runner = Runner::new(Budget::DEFAULT);
static SERVICE: Service = Service::new("echo", &[&RUNNER]);
static TASKS: TaskPool<4096, 64> = TaskPool::new();

wsk::driver_entry!(service: SERVICE, start: start, stop: stop);

fn start(entry: &Entry<'_>) -> Result<(), Failure> {
    let port = entry
        .parameters()?
        .dword_as("Port", "a port")?
        .unwrap_or(7007);
    let client = SERVICE.start(entry.driver())?;
    let bind = TcpListener::bind(client, ([127, 0, 0, 1], port).into());
    let listener = wsk::executor::block_on(bind)?;
    RUNNER.start(RunnerKind::Dpc)?;
    let _detached = RUNNER.spawn(&TASKS, accept_loop(listener))?;
    wsk::kprint!("echo: listening on port {port}\n");
    Ok(())
}

fn stop() {
    wsk::kprint!("echo: stopped: {}\n", SERVICE.stop());
}

async fn accept_loop(listener: TcpListener) {
    while let Ok((stream, _peer)) = listener.accept().await {
        // Without a free task slot the stream is dropped: the peer sees a reset.
        let _detached = RUNNER.spawn(&TASKS, echo(stream));
    }
}

async fn echo(stream: TcpStream) {
    let Ok(mut buf) = IoBuf::with_capacity(4096) else {
        return;
    };
    // Until the peer's FIN (a 0-byte receive) or an error.
    while let (Ok(1..), full) = stream.recv(buf).await {
        let (sent, empty) = stream.send(full).await;
        if sent.is_err() {
            break;
        }
        buf = empty;
    }
    stream.close().await;
}
// README: end

#[test]
fn the_readme_driver_echoes_and_unloads_clean() {
    use std::io::{Read, Write};

    use wsk_host::{Config, Kernel, RegValue, Registry};

    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let kernel = Kernel::boot(Config::default());
    let registry = Registry::new().with("Parameters", "Port", RegValue::Dword(port.into()));
    let driver = kernel
        .load_driver(DriverEntry, "Echo", registry)
        .unwrap_or_else(|status| panic!("the README driver does not load: {status:#010x}"));
    let mut peer = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_mins(1)))
        .unwrap();
    peer.write_all(b"hello, kit").unwrap();
    let mut back = [0u8; 10];
    peer.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello, kit");
    drop(peer);
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    let log = kernel.debug_log();
    assert!(log.contains("echo: stopped: no tasks left"), "{log}");
    assert!(log.contains("echo: deregistered"), "{log}");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:#?}");
}

#[test]
fn the_readme_shows_this_driver() {
    let this = include_str!("readme_echo.rs");
    let readme = include_str!("../../README.md");
    let block = |text: &'static str, begin: &str, end: &str| -> &'static str {
        let start = text.find(begin).expect("begin marker") + begin.len();
        let len = text[start..].find(end).expect("end marker");
        text[start..start + len].trim()
    };
    let code = block(this, "// README: begin\n", "// README: end");
    let shown = block(
        readme,
        "<!-- wsk/tests/readme_echo.rs -->\n```rust\n",
        "```",
    );
    assert_eq!(
        shown, code,
        "README.md's driver differs from wsk/tests/readme_echo.rs"
    );
    let lines = code.lines().count();
    assert!(lines <= 50, "the README driver grew to {lines} lines");
}
