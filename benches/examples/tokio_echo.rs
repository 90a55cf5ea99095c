//! The tokio peer of the echo benchmark (`cargo xtask bench-echo`): the multi-thread runtime
//! with 2 workers, one task per connection, a 16 KiB buffer (the echo driver's size),
//! `TCP_NODELAY`. Serves on 127.0.0.1:PORT until killed.
//!
//! `cargo run --release -p wsk-benches --example tokio_echo -- PORT`

use std::net::Ipv4Addr;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The echo driver's receive buffer size.
const BUFFER_SIZE: usize = 16 * 1024;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: tokio_echo PORT");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio_echo: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("tokio_echo: bind 127.0.0.1:{port}: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("tokio_echo: listening on 127.0.0.1:{port}");
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut buffer = vec![0u8; BUFFER_SIZE];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}
