//! The seed sweep over `wsk-net` used directly (no driver): per seed, a fault plan drawn from
//! the seed (completion mode, reordering, delays) and a server whose every await point is
//! chosen from the seed: plain receives and sends, receives under a random timeout, receives
//! dropped mid-flight (cancellation at an await point), accepts under a timeout, abortive and
//! graceful disconnects and closes at random moments, against `std` peers that write, half
//! close, reset or vanish. Each seed ends with the verifier's check (no leak, no bugcheck)
//! and the echoed bytes are checked while no data was lost on purpose.
//!
//! Ignored by default: `cargo xtask soak --seeds N` runs it (or `WSK_SOAK_SEEDS=N cargo test
//! -p wsk-net --test soak -- --ignored`; `WSK_SOAK_FIRST` is the first seed, default 1). With
//! `WSK_SEED` (and optionally `WSK_FAULTS`) set it runs that one seed: the replay command a
//! failing seed prints. Under a plan with `lowres` (the low-resources simulation),
//! `NoResources` is an accepted outcome of every call, and registration and bind are retried.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, WskClient};

mod common;
use common::{BOUND, test_driver};

/// Connections per seed.
const CONNECTIONS: u64 = 6;

/// splitmix64: the scenario's choices, from the seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        u8::try_from(self.below(256)).unwrap_or(0)
    }
}

/// The plan a seed runs under: the one from `WSK_FAULTS` when set, else one drawn from the
/// seed among the standard kinds (inline, deferred, mixed; reordering and delays).
fn plan_for(seed: u64) -> Faults {
    if let Ok(spec) = std::env::var(wsk_host::faults::FAULTS_VAR) {
        return Faults::parse(&spec, seed).expect("WSK_FAULTS parses");
    }
    let mut dice = Dice(seed ^ 0x5eed);
    let completion = match dice.below(3) {
        0 => Completion::Inline,
        1 => Completion::Deferred,
        _ => Completion::Mixed,
    };
    let mut plan = Faults::with(completion, seed);
    if completion != Completion::Inline && dice.below(2) == 0 {
        plan.reorder = true;
        plan.max_delay = Duration::from_micros(dice.below(1500));
    }
    plan
}

/// How a peer ends its connection.
#[derive(Clone, Copy, Debug)]
enum PeerEnd {
    /// Half-close (FIN), then read until the server closes.
    Fin,
    /// Close with data the server sent still unread: the host sends a reset.
    Reset,
    /// Read until the server ends the connection.
    Wait,
}

/// The `std` side: connects `connections` times in sequence, writes the messages, ends as
/// told, and reads whatever comes back until the server ends the connection. Tolerates every
/// server behaviour (the server's choices include resets and dropped data).
fn peers(addr: SocketAddr, plan: Vec<(Vec<Vec<u8>>, PeerEnd)>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for (messages, end) in plan {
            let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
                continue;
            };
            stream.set_read_timeout(Some(BOUND)).unwrap();
            stream.set_write_timeout(Some(BOUND)).unwrap();
            for message in &messages {
                if stream.write_all(message).is_err() {
                    break;
                }
            }
            match end {
                PeerEnd::Fin => {
                    let _ = stream.shutdown(Shutdown::Write);
                }
                PeerEnd::Reset => {
                    // Wait for a byte back so that the close finds unread data (a reset), or
                    // for the server's end.
                    let mut one = [0u8; 1];
                    let _ = stream.read(&mut one);
                    continue;
                }
                PeerEnd::Wait => {}
            }
            let mut sink = [0u8; 4096];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    })
}

/// One step of the server on a connection.
enum Step {
    Echo,
    RecvUnderTimeout,
    DropRecvInFlight,
}

/// The bytes a peer sends on one connection: byte `i` is `i % 251` xor the connection's salt,
/// so the first byte names the salt and the server can check what it received without
/// knowing which connection it has.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ salt)
        .collect()
}

/// Whether `received` is a prefix of some connection's [`pattern`].
fn follows_pattern(received: &[u8]) -> bool {
    received.first().is_none_or(|salt| {
        received
            .iter()
            .enumerate()
            .all(|(i, b)| *b == u8::try_from(i % 251).unwrap() ^ salt)
    })
}

/// Serves one accepted connection for a seeded number of steps, then ends it in a seeded way.
/// While nothing was lost on purpose the received bytes must follow the peer's pattern.
async fn serve(stream: TcpStream, dice: &mut Dice) {
    let mut received: Vec<u8> = Vec::new();
    let mut intact = true;
    let steps = dice.below(6);
    for _ in 0..steps {
        let step = match dice.below(4) {
            0 => Step::RecvUnderTimeout,
            1 => Step::DropRecvInFlight,
            _ => Step::Echo,
        };
        let capacity = 1 + usize::try_from(dice.below(2048)).unwrap();
        let Ok(buf) = IoBuf::with_capacity(capacity) else {
            assert!(low_resources(), "no buffer without a low-resources plan");
            break;
        };
        let (result, buf) = match step {
            // Bounded too: a peer that wrote everything waits for the server to end the
            // connection, and the server must not wait for it forever.
            Step::Echo => wsk_net::timeout(Duration::from_millis(100), stream.recv(buf)).await,
            Step::RecvUnderTimeout => {
                let after = Duration::from_micros(dice.below(3000));
                wsk_net::timeout(after, stream.recv(buf)).await
            }
            Step::DropRecvInFlight => {
                {
                    let recv = pin!(stream.recv(buf));
                    let _ = recv.poll(&mut Context::from_waker(Waker::noop()));
                    // Sometimes a moment passes first, in which the receive may complete: the
                    // future is then dropped with its operation finished but not taken.
                    std::thread::sleep(Duration::from_micros(dice.below(3) * 500));
                }
                // Whatever that receive took is lost.
                intact = false;
                continue;
            }
        };
        match result {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                let (sent, _) = stream.send(buf).await;
                if sent.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {}
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::NotConnected
                    ) || out_of_resources(&e),
                    "a receive failed with {e:?}"
                );
                break;
            }
        }
    }
    if intact {
        assert!(
            follows_pattern(&received),
            "the server received {} bytes that are not what the peer sent",
            received.len()
        );
    }
    match dice.below(4) {
        0 => {
            let _ = stream.disconnect(Disconnect::Abortive).await;
        }
        1 => {
            let _ = stream
                .disconnect_within(Duration::from_millis(dice.below(50)))
                .await;
        }
        2 => {
            // Dropped without close: the stream closes itself.
            drop(stream);
            return;
        }
        _ => {}
    }
    stream.close().await;
}

/// Whether the seed's plan fails allocations (`lowres`): then `NoResources` is an expected
/// outcome of any call. One seed runs at a time.
static LOW_RESOURCES: AtomicBool = AtomicBool::new(false);

fn low_resources() -> bool {
    LOW_RESOURCES.load(Ordering::Relaxed)
}

/// `e` is the low-resources simulation at work.
fn out_of_resources(e: &wsk_net::Error) -> bool {
    low_resources() && e.kind() == ErrorKind::NoResources
}

/// Registers a client (again, while the low-resources simulation refuses), runs the seed's
/// scenario, deregisters; the verifier's check follows in `testing::run_plans`.
fn run_seed(plan: Faults, seed: u64) {
    LOW_RESOURCES.store(plan.low_resources.is_some(), Ordering::Relaxed);
    wsk_host::testing::run_plans([plan], |kernel| {
        kernel.on_kernel_thread(|| {
            let mut attempts = 0;
            let client = loop {
                match WskClient::register(test_driver(kernel)) {
                    Ok(client) => break client,
                    Err(e) if out_of_resources(&e) && attempts < 1000 => attempts += 1,
                    Err(e) => panic!("WskClient::register failed with {e:?}"),
                }
            };
            scenario(&client, seed);
            client.deregister().expect("deregister");
        });
    });
}

/// One seed's scenario on a registered client.
fn scenario(client: &WskClient, seed: u64) {
    let mut dice = Dice(seed);
    block_on(async {
        let mut attempts = 0;
        let listener = loop {
            match TcpListener::bind(client, "127.0.0.1:0".parse().unwrap()).await {
                Ok(listener) => break listener,
                Err(e) if out_of_resources(&e) && attempts < 1000 => attempts += 1,
                Err(e) => panic!("bind failed with {e:?}"),
            }
        };
        let addr = match listener.local_addr().await {
            Ok(addr) => addr,
            Err(e) if out_of_resources(&e) => {
                listener.close().await;
                return;
            }
            Err(e) => panic!("local_addr failed with {e:?}"),
        };
        let mut plan = Vec::new();
        for _ in 0..CONNECTIONS {
            let bytes = pattern(usize::try_from(dice.below(8000)).unwrap(), dice.byte());
            let mut messages = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let len = 1 + usize::try_from(dice.below(3000))
                    .unwrap()
                    .min(rest.len() - 1);
                messages.push(rest[..len].to_vec());
                rest = &rest[len..];
            }
            let end = match dice.below(3) {
                0 => PeerEnd::Fin,
                1 => PeerEnd::Reset,
                _ => PeerEnd::Wait,
            };
            plan.push((messages, end));
        }
        let peer = peers(addr, plan);
        // Until the peer is done: an accept under a short timeout may time out before the
        // peer connects, or be cancelled as the connection arrives (that connection is then
        // closed and the peer goes on to its next one); the others are bounded too, so that
        // the loop sees the peer finish.
        while !peer.is_finished() {
            if dice.below(4) == 0 {
                // An accept polled once and dropped a moment later, perhaps after a
                // connection arrived into it (that connection is then closed).
                let accept = pin!(listener.accept());
                if let std::task::Poll::Ready(Ok((stream, _))) =
                    accept.poll(&mut Context::from_waker(Waker::noop()))
                {
                    serve(stream, &mut dice).await;
                    continue;
                }
                std::thread::sleep(Duration::from_micros(dice.below(3) * 1000));
                continue;
            }
            let after = if dice.below(3) == 0 {
                Duration::from_micros(dice.below(2000))
            } else {
                Duration::from_millis(100)
            };
            match wsk_net::timeout(after, listener.accept()).await {
                Ok((stream, _)) => serve(stream, &mut dice).await,
                Err(e) if e.kind() == ErrorKind::TimedOut || out_of_resources(&e) => {}
                Err(e) => panic!("accept failed with {e:?}"),
            }
        }
        listener.close().await;
        peer.join().expect("the peer thread");
    });
}

/// How long one seed may take before the sweep reports it hung.
const SEED_LIMIT: std::time::Duration = Duration::from_mins(1);

/// Ends the process with a report when the seed's scenario has not finished within
/// [`SEED_LIMIT`] (a hang cannot be unwound out of); dropping the returned sender disarms it.
fn hang_watchdog(
    seed: u64,
    replay: String,
    failed_before: Vec<u64>,
) -> std::sync::mpsc::Sender<()> {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(SEED_LIMIT) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            println!("seed {seed} FAILED (wsk-net): HUNG for {SEED_LIMIT:?}\n  replay: {replay}");
            let mut failed = failed_before;
            failed.push(seed);
            println!("soak summary: wsk-net: seed {seed} hung, sweep ended (seeds {failed:?})");
            std::process::exit(1);
        }
    });
    done
}

/// The seeds to run: `WSK_SEED` alone, or `WSK_SOAK_SEEDS` seeds from `WSK_SOAK_FIRST`.
fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var(wsk_host::faults::SEED_VAR) {
        return vec![wsk_host::faults::parse_seed(&seed).expect("WSK_SEED parses")];
    }
    let count: u64 = std::env::var("WSK_SOAK_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let first: u64 = std::env::var("WSK_SOAK_FIRST")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    (first..first + count).collect()
}

#[test]
#[ignore = "the seed sweep: cargo xtask soak --seeds N"]
fn soak_net_seeds() {
    let seeds = seeds();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let plan = plan_for(seed);
        let replay = wsk_host::testing::replay_command(&plan);
        let watchdog = hang_watchdog(seed, replay.clone(), failed.clone());
        let outcome = std::panic::catch_unwind(|| {
            run_seed(plan, seed);
        });
        drop(watchdog);
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            println!("seed {seed} FAILED (wsk-net): {message}\n  replay: {replay}");
            failed.push(seed);
        }
    }
    println!(
        "soak summary: wsk-net: {} seeds run, {} failed{}",
        seeds.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (seeds {failed:?})")
        }
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
