//! The README's main job as a user runs it: the host-mode program serves echo on its port, and
//! Ctrl-C (SIGINT) unloads the driver and prints an empty leak report, exit code 0.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bound for each step; failing past it is loud.
const BOUND: Duration = Duration::from_mins(1);

#[test]
fn the_host_program_serves_echo_and_unloads_clean_on_ctrl_c() {
    let port = wsk_benches::load::free_loopback_port().expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsk-driver-example"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the host program");

    // Its stderr (DbgPrint and status lines), line by line, to wait on without polling.
    let (lines, stderr_lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = stderr_lines
            .recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("no 'listening on' line within {BOUND:?}: {seen:?}"));
        let listening = line.contains("wskecho: listening on");
        seen.push(line);
        if listening {
            break;
        }
    }

    let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    client.set_read_timeout(Some(BOUND)).unwrap();
    client.write_all(b"hello, echo\n").unwrap();
    let mut back = [0u8; 12];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello, echo\n");
    drop(client);

    // Ctrl-C.
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);

    let (done, exited) = mpsc::channel();
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
        .expect("the host program exits after Ctrl-C");
    let (out, status) = waiter.join().unwrap();
    reader.join().unwrap();
    assert!(
        out.contains("unload report: no leaks"),
        "report on stdout: {out:?}"
    );
    assert!(
        status.expect("wait").success(),
        "exit code 0 after a clean unload"
    );
}
