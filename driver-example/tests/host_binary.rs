//! The host program as a user runs it: it serves echo on its port, and Ctrl-C (SIGINT)
//! unloads the driver and prints an empty leak report, exit code 0. A start that cannot work
//! (port in use, a limit above the task pool) exits non-zero with the reason; `--port 0`
//! serves on the port it logs; a client the driver cannot take (past the limit, or no
//! descriptor left) is reset promptly, never left hanging in the listen backlog, and the
//! driver recovers.
//!
//! Each test runs its own host program process, so they run in parallel.
#![cfg(unix)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound for each step; failing past it is loud.
const BOUND: Duration = Duration::from_mins(1);
/// How long a client the driver sheds may wait for its reset: a stranded client waits
/// forever, a shed one well under a second.
const PROMPT: Duration = Duration::from_secs(10);

/// A running host program with its stderr (`DbgPrint` and status lines) read line by line.
struct HostProgram {
    /// `None` once [`HostProgram::exit`] has waited for it.
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Forwards stderr lines until the program closes it; joined by [`HostProgram::exit`].
    reader: Option<JoinHandle<()>>,
    seen: Vec<String>,
}

impl HostProgram {
    fn start(args: &[&str]) -> Self {
        Self::spawn(&mut Self::command(args))
    }

    /// Starts it with `RLIMIT_NOFILE` (soft and hard) at `descriptors`, as on a machine with a
    /// low hard limit: the program cannot raise it to what its connections need.
    fn start_with_descriptor_limit(args: &[&str], descriptors: u64) -> Self {
        let mut command = Self::command(args);
        let limit = libc::rlimit {
            rlim_cur: descriptors,
            rlim_max: descriptors,
        };
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
        // which is async-signal-safe, on a value it owns.
        unsafe { command.pre_exec(move || set_descriptor_limit(&limit)) };
        Self::spawn(&mut command)
    }

    fn command(args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wsk-driver-example"));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command.spawn().expect("start the host program");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Self {
            child: Some(child),
            lines,
            reader: Some(reader),
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        loop {
            let line = self.lines.recv_timeout(BOUND).unwrap_or_else(|_| {
                panic!("no line with {needle:?} within {BOUND:?}: {:#?}", self.seen)
            });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The address from the `wskecho: listening on <addr>` line.
    fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_line("wskecho: listening on ");
        let (_, addr) = line
            .split_once("wskecho: listening on ")
            .expect("the line names the address");
        addr.trim().parse().expect("a socket address")
    }

    /// Ctrl-C, then [`HostProgram::exit`].
    fn interrupt(self) -> (ExitStatus, String, Vec<String>) {
        let pid = libc::pid_t::try_from(self.child.as_ref().expect("running").id()).expect("pid");
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        self.exit()
    }

    /// Waits (bounded) for the program to exit: its status, stdout and every stderr line.
    fn exit(mut self) -> (ExitStatus, String, Vec<String>) {
        let (done, exited) = mpsc::channel();
        let mut child = self.child.take().expect("running");
        let mut stdout = child.stdout.take().expect("stdout");
        let waiter = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            let status = child.wait();
            let _ = done.send(());
            (out, status)
        });
        exited
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("the host program did not exit: {:#?}", self.seen));
        let (out, status) = waiter.join().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let mut seen = core::mem::take(&mut self.seen);
        seen.extend(self.lines.try_iter());
        (status.expect("wait"), out, seen)
    }
}

impl Drop for HostProgram {
    /// A test that fails before the program exits must not leave it running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sets this process's `RLIMIT_NOFILE`.
fn set_descriptor_limit(limit: &libc::rlimit) -> std::io::Result<()> {
    // SAFETY: `limit` is a live rlimit for the call to read.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What became of one client.
#[derive(Debug)]
enum Outcome {
    /// Its message came back; the connection stays open.
    Served(TcpStream),
    /// Refused or reset (or closed) without an echo.
    Refused(ErrorKind),
    /// Nothing within [`PROMPT`]: stranded.
    Hung,
}

/// Connects, sends a message and waits (up to [`PROMPT`]) for it to come back.
fn try_echo(addr: SocketAddr) -> Outcome {
    let mut client = match TcpStream::connect_timeout(&addr, PROMPT) {
        Ok(client) => client,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Outcome::Hung,
        Err(e) => return Outcome::Refused(e.kind()),
    };
    client.set_read_timeout(Some(PROMPT)).unwrap();
    if let Err(e) = client.write_all(b"ping") {
        return Outcome::Refused(e.kind());
    }
    let mut back = [0u8; 4];
    match client.read_exact(&mut back) {
        Ok(()) => {
            assert_eq!(&back, b"ping");
            Outcome::Served(client)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Outcome::Hung,
        Err(e) => Outcome::Refused(e.kind()),
    }
}

/// [`try_echo`] until it is served (the driver recovers), bounded.
fn echo_after_recovery(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + BOUND;
    loop {
        match try_echo(addr) {
            Outcome::Served(client) => return client,
            Outcome::Hung => panic!("a client hung after the load went away"),
            Outcome::Refused(kind) => {
                assert!(
                    Instant::now() < deadline,
                    "still refused ({kind:?}) {BOUND:?} after the load went away"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Ctrl-C and the checks of a clean run: "no leaks" on stdout, exit code 0.
fn interrupt_and_expect_clean_exit(program: HostProgram) -> Vec<String> {
    let (status, out, lines) = program.interrupt();
    assert!(
        out.contains("unload report: no leaks"),
        "report on stdout: {out:?}\nstderr: {lines:#?}"
    );
    assert!(
        status.success(),
        "exit code 0 after a clean unload: {status}\nstderr: {lines:#?}"
    );
    lines
}

#[test]
fn the_host_program_serves_echo_and_unloads_clean_on_ctrl_c() {
    let port = wsk_benches::load::free_loopback_port().expect("a free port");
    let mut program = HostProgram::start(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    let addr = program.listening_addr();
    assert_eq!(addr, SocketAddr::from((Ipv4Addr::LOCALHOST, port)));

    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"hello, echo\n").unwrap();
    let mut back = [0u8; 12];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello, echo\n");
    drop(client);

    interrupt_and_expect_clean_exit(program);
}

/// `--event-driven` writes `EventDriven` 1: the connection receives through WSK's event
/// callbacks (the driver says so), echoes, and the unload is clean.
#[test]
fn the_event_driven_flag_serves_echo_through_receive_events() {
    let mut program = HostProgram::start(&["--port", "0", "--bind", "127.0.0.1", "--event-driven"]);
    let addr = program.listening_addr();
    let mut client = TcpStream::connect(addr).expect("connect");
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"event, echo\n").unwrap();
    let mut back = [0u8; 12];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"event, echo\n");
    program.wait_for_line("connection(s) event-driven so far");
    drop(client);
    interrupt_and_expect_clean_exit(program);
}

#[test]
fn a_port_in_use_fails_the_load_and_the_program_exits_non_zero_with_the_reason() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("take a port");
    let port = taken.local_addr().unwrap().port();
    let program = HostProgram::start(&["--port", &port.to_string(), "--bind", "127.0.0.1"]);
    let (status, _out, lines) = program.exit();
    assert!(!status.success(), "exit code after a failed load: {status}");
    let reason = lines
        .iter()
        .find(|l| l.contains("the driver did not load"))
        .unwrap_or_else(|| panic!("no reason on stderr: {lines:#?}"));
    assert!(
        reason.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && reason.contains("address in use")
            && reason.contains("NTSTATUS 0xC000020A"),
        "the reason names the address, the error and STATUS_ADDRESS_ALREADY_EXISTS: {reason}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("serving")),
        "it must not claim to serve: {lines:#?}"
    );
    drop(taken);
}

#[test]
fn port_zero_serves_on_an_ephemeral_port_it_logs() {
    let mut program = HostProgram::start(&["--port", "0", "--bind", "127.0.0.1"]);
    let addr = program.listening_addr();
    assert_ne!(addr.port(), 0, "the log names the real port");
    assert_ne!(addr.port(), 7007, "port 0 is not the default port");
    match try_echo(addr) {
        Outcome::Served(client) => drop(client),
        other => panic!("not served on the logged port: {other:?}"),
    }
    interrupt_and_expect_clean_exit(program);
}

#[test]
fn a_limit_above_the_task_pool_is_refused_at_start() {
    // Above the task pool with or without the `scale` feature.
    let program = HostProgram::start(&["--port", "0", "--max-connections", "20000"]);
    let (status, _out, lines) = program.exit();
    assert_eq!(status.code(), Some(2), "a usage error: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("--max-connections")
            && l.contains(&format!("1 to {}", wskecho::echo::MAX_CONNECTIONS))),
        "the message names the maximum: {lines:#?}"
    );
}

#[test]
fn the_client_past_the_limit_is_reset_promptly_and_the_driver_recovers() {
    const LIMIT: usize = 4;
    let mut program = HostProgram::start(&[
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--max-connections",
        &LIMIT.to_string(),
    ]);
    let addr = program.listening_addr();
    let mut served: Vec<TcpStream> = (0..LIMIT)
        .map(|i| match try_echo(addr) {
            Outcome::Served(client) => client,
            other => panic!("client {i} within the limit: {other:?}"),
        })
        .collect();
    let started = Instant::now();
    match try_echo(addr) {
        Outcome::Refused(_) => {}
        other => panic!("the client past the limit was not reset: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reset only after {:?}",
        started.elapsed()
    );
    program.wait_for_line("connection limit 4 reached; reset 127.0.0.1:");
    // One leaves: the next client is served again.
    drop(served.pop());
    served.push(echo_after_recovery(addr));
    drop(served);
    interrupt_and_expect_clean_exit(program);
}

#[test]
fn clients_past_the_last_descriptor_are_reset_not_stranded_and_the_driver_recovers() {
    const DESCRIPTORS: u64 = 48;
    const CLIENTS: usize = 80;
    let mut program = HostProgram::start_with_descriptor_limit(
        &["--port", "0", "--bind", "127.0.0.1"],
        DESCRIPTORS,
    );
    // It cannot raise the limit to what 1024 connections need, and says so.
    program.wait_for_line("the descriptor limit is 48 (hard limit 48), below the 1088");
    let addr = program.listening_addr();

    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..CLIENTS {
        match try_echo(addr) {
            Outcome::Served(client) => served.push(client),
            Outcome::Refused(_) => refused += 1,
            Outcome::Hung => panic!(
                "client {i} hung ({} served, {refused} reset before it)",
                served.len()
            ),
        }
    }
    assert!(
        !served.is_empty() && refused > 0,
        "{} served, {refused} reset",
        served.len()
    );
    // The provider reports the exhaustion as what it is, not as STATUS_UNSUCCESSFUL.
    let line = program.wait_for_line("resetting waiting connections");
    assert!(
        line.contains("accept: insufficient resources (NTSTATUS 0xC000009A)"),
        "{line}"
    );
    eprintln!("{} served, {refused} reset", served.len());
    let served_count = served.len();
    drop(served);
    // Descriptors come back as the served clients leave: new clients are served again.
    let again: Vec<TcpStream> = (0..served_count / 2)
        .map(|_| echo_after_recovery(addr))
        .collect();
    drop(again);
    let lines = interrupt_and_expect_clean_exit(program);
    let accept_lines = lines
        .iter()
        .filter(|l| l.contains("wskecho: accept:"))
        .count();
    assert!(
        accept_lines <= 20,
        "a repeating accept error is logged ever more rarely: {accept_lines} lines"
    );
}
