//! The std peer of the echo benchmark (`cargo xtask bench-echo`): one thread per connection,
//! blocking `std::net`, a 16 KiB buffer (the echo driver's size), `TCP_NODELAY`. Serves on
//! 127.0.0.1:PORT until killed.
//!
//! `cargo run --release -p wsk-benches --example std_echo -- PORT`

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::ExitCode;

/// The echo driver's receive buffer size.
const BUFFER_SIZE: usize = 16 * 1024;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: std_echo PORT");
        return ExitCode::from(2);
    };
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("std_echo: bind 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("std_echo: listening on 127.0.0.1:{port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; BUFFER_SIZE];
            while let Ok(n) = stream.read(&mut buffer) {
                if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        });
    }
    ExitCode::SUCCESS
}
