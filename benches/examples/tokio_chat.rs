//! The tokio peer of the chat relay example driver: the same service as a tokio user writes
//! it, to compare line counts with the driver written with the kit. Each line a client sends
//! goes to every other connected client; each client has a bounded queue and a client whose
//! queue is full (a slow reader) is dropped rather than slowing the others; a client silent for
//! the idle timeout is closed; Ctrl-C closes every connection and exits.
//!
//! `cargo run --release -p wsk-benches --example tokio_chat -- PORT [IDLE_SECONDS]`

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// Lines queued for one client before it counts as too slow and is dropped.
const QUEUE: usize = 64;
/// The longest line relayed; a longer one ends its sender's connection.
const MAX_LINE: usize = 1024;

type Clients = Arc<Mutex<HashMap<u64, mpsc::Sender<Arc<str>>>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(7008);
    let idle = Duration::from_secs(args.next().and_then(|s| s.parse().ok()).unwrap_or(300));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    eprintln!("tokio_chat: listening on {}", listener.local_addr()?);
    let clients = Clients::default();
    let (stop, stopped) = watch::channel(false);
    let mut next_id = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                next_id += 1;
                let (tx, rx) = mpsc::channel(QUEUE);
                clients.lock().unwrap().insert(next_id, tx);
                tokio::spawn(serve(next_id, stream, rx, clients.clone(), idle, stopped.clone()));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = stop.send(true);
    clients.lock().unwrap().clear();
    Ok(())
}

/// Relays the client's lines to the others until it leaves, idles, sends a line too long or
/// the server stops; a second task writes the others' lines to it until its queue is dropped.
async fn serve(
    id: u64,
    stream: TcpStream,
    mut queue: mpsc::Receiver<Arc<str>>,
    clients: Clients,
    idle: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let (reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        while let Some(line) = queue.recv().await {
            if writer.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut lines = BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        let mut bounded = (&mut lines).take(MAX_LINE as u64);
        tokio::select! {
            read = tokio::time::timeout(idle, bounded.read_line(&mut line)) => match read {
                Ok(Ok(_)) if line.ends_with('\n') => {
                    let line: Arc<str> = line.as_str().into();
                    let mut clients = clients.lock().unwrap();
                    clients.retain(|&other, tx| other == id || tx.try_send(line.clone()).is_ok());
                }
                _ => break,
            },
            _ = stopped.changed() => break,
        }
    }
    // Dropping its queue's sender ends the writing task once the queue is drained.
    clients.lock().unwrap().remove(&id);
}
