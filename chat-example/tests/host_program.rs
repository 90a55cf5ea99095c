//! The host program as a user runs it (`cargo run -p wsk-chat-example -- --port N`): it
//! relays lines between clients, and Ctrl-C (SIGINT) unloads the driver with the clients still
//! connected, prints a clean leak report and exits 0, on either runner (`--runner`). A flag it
//! does not know exits 2 with the usage; a runner it does not know fails the load.
#![cfg(unix)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wsk_host::testing::BOUND;
use wsk_host::testing::net::{connect_client, free_loopback_port};

fn program(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsk-chat-example"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for the program to exit, at most [`BOUND`]; kills it (by its id) and fails past that.
fn wait_bounded(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the host program") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the host program did not exit within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The next line `reader` gives, `\n` included.
fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read a line");
    line
}

#[test]
fn the_host_program_relays_and_unloads_cleanly_on_ctrl_c() {
    relays_and_unloads_cleanly_on_ctrl_c(&[], "Dpc");
}

#[test]
fn the_host_program_runs_the_relay_on_the_passive_runner_with_runner_passive() {
    relays_and_unloads_cleanly_on_ctrl_c(&["--runner", "passive"], "Passive");
}

#[test]
fn an_unknown_runner_fails_the_load_naming_the_setting() {
    let output = program(&["--port", "0", "--runner", "thread"])
        .output()
        .expect("run the host program");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("wskchat: not started: ") && stderr.contains("Runner"),
        "{stderr}"
    );
}

/// Runs the host program with `extra` flags, checks it says it runs the `runner` kind, relays
/// a line, and unloads cleanly on Ctrl-C with both clients connected.
fn relays_and_unloads_cleanly_on_ctrl_c(extra: &[&str], runner: &str) {
    let port = free_loopback_port().expect("a free port");
    let port_text = port.to_string();
    let mut args = vec!["--", "--port", &port_text, "--idle-seconds", "60"];
    args.extend_from_slice(extra);
    let mut child = program(&args).spawn().expect("start the host program");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("serving; Ctrl-C unloads the driver") {
        let next = line(&mut log);
        assert!(
            !next.is_empty(),
            "the program ended before serving:\n{seen}"
        );
        seen.push_str(&next);
    }
    assert!(
        seen.contains(&format!(
            "wskchat: listening on 127.0.0.1:{port} with the {runner} runner"
        )),
        "{seen}"
    );

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let first = connect_client(addr).expect("connect the first client");
    let mut second = connect_client(addr).expect("connect the second client");
    second
        .write_all(b"hello over the host kernel\n")
        .expect("send");
    let mut first = BufReader::new(first);
    assert_eq!(line(&mut first), "hello over the host kernel\n");

    // Ctrl-C, with both clients connected.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(interrupted.success());
    let status = wait_bounded(&mut child);
    let mut report = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut report)
        .expect("read the report");
    assert!(status.success(), "exit {status}; stdout: {report}");
    assert!(report.contains("unload report: no leaks"), "{report}");
    // The unload closed both connections: the end of the stream, or a reset where the close
    // was abortive.
    let mut rest = String::new();
    match first.read_line(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the first client after the unload: {other:?} {rest:?}"),
    }
}

#[test]
fn an_unknown_flag_exits_2_with_the_usage() {
    let output = program(&["--colour", "blue"])
        .output()
        .expect("run the host program");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown flag --colour"), "{stderr}");
    assert!(stderr.contains("usage: wsk-chat-example"), "{stderr}");
}
