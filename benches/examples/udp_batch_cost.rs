//! The cost of UDP datagrams through `wsk-net` on the host kernel, batched against one at a
//! time: wall-clock time and kernel allocations per datagram (and, under callgrind, its
//! instructions: the difference of two runs with different counts, divided by the difference
//! of the datagrams).
//!
//! ```text
//! udp_batch_cost <batch|single> <rounds> [datagrams per round, default 16]
//! ```
//!
//! Boots the host kernel with inline completion (seed 1), registers a `WskClient` and binds
//! two `UdpSocket`s on loopback. One round: A sends the round's datagrams (64 bytes each) to B
//! and B receives them all. `batch`: one `send_batch` (one `WskSendMessages`) and
//! `recv_batch` calls until all arrived; `single`: one `send_to` and one `recv_from` per
//! datagram. 100 warm-up rounds, then the measured rounds between two clock and allocation
//! readings.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_host::{AllocationCounts, Config, Kernel};
use wsk_net::{DatagramBatch, IoBuf, UdpSocket, WskClient};

/// Bytes per datagram.
const DATAGRAM: usize = 64;
/// Warm-up rounds.
const WARM_UP: u64 = 100;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Batch,
    Single,
}

/// The sockets and buffers one mode uses, carried from round to round.
struct Pair {
    a: UdpSocket,
    b: UdpSocket,
    to: SocketAddr,
    out: Option<DatagramBatch>,
    into: Option<DatagramBatch>,
    send_buf: Option<IoBuf>,
    recv_buf: Option<IoBuf>,
}

async fn round(pair: &mut Pair, mode: Mode, per_round: usize) {
    match mode {
        Mode::Batch => {
            let batch = pair.out.take().expect("send batch");
            let (sent, batch) = pair.a.send_batch(batch, pair.to).await;
            assert_eq!(sent.expect("send_batch"), per_round);
            pair.out = Some(batch);
            let mut got = 0;
            let mut into = pair.into.take().expect("receive batch");
            while got < per_round {
                let (n, back) = pair.b.recv_batch(into).await;
                into = back;
                got += n.expect("recv_batch");
            }
            pair.into = Some(into);
        }
        Mode::Single => {
            let mut buf = pair.send_buf.take().expect("send buffer");
            let mut into = pair.recv_buf.take().expect("receive buffer");
            for _ in 0..per_round {
                let (sent, back) = pair.a.send_to(buf, pair.to).await;
                buf = back;
                assert_eq!(sent.expect("send_to"), DATAGRAM);
            }
            for _ in 0..per_round {
                let (got, back) = pair.b.recv_from(into).await;
                into = back;
                assert_eq!(got.expect("recv_from").0, DATAGRAM);
            }
            pair.send_buf = Some(buf);
            pair.recv_buf = Some(into);
        }
    }
}

async fn run(
    client: &WskClient,
    kernel: &Kernel,
    mode: Mode,
    rounds: u64,
    per_round: usize,
) -> (Duration, AllocationCounts, AllocationCounts) {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = UdpSocket::bind(client, loopback).await.expect("bind A");
    let b = UdpSocket::bind(client, loopback).await.expect("bind B");
    let to = b.local_addr().await.expect("local_addr");
    let payload = [0x5a_u8; DATAGRAM];
    let mut out = DatagramBatch::new(per_round, DATAGRAM).expect("batch");
    for _ in 0..per_round {
        out.push(&payload).expect("push");
    }
    let mut pair = Pair {
        a,
        b,
        to,
        out: Some(out),
        into: Some(DatagramBatch::new(per_round, DATAGRAM).expect("batch")),
        send_buf: Some(IoBuf::from_slice(&payload).expect("IoBuf")),
        recv_buf: Some(IoBuf::with_capacity(DATAGRAM).expect("IoBuf")),
    };
    for _ in 0..WARM_UP {
        round(&mut pair, mode, per_round).await;
    }
    let before = kernel.allocation_counts();
    let started = Instant::now();
    for _ in 0..rounds {
        round(&mut pair, mode, per_round).await;
    }
    let elapsed = started.elapsed();
    let after = kernel.allocation_counts();
    let Pair { a, b, .. } = pair;
    a.close().await;
    b.close().await;
    (elapsed, before, after)
}

#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn per(total: u64, datagrams: u64) -> f64 {
    total as f64 / datagrams.max(1) as f64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: udp_batch_cost <batch|single> <rounds> [datagrams per round, default 16]";
    let (mode, rounds, per_round) = match args.as_slice() {
        [m, n] => (m.as_str(), n.parse::<u64>(), Ok(16)),
        [m, n, d] => (m.as_str(), n.parse::<u64>(), d.parse::<usize>()),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let mode = match mode {
        "batch" => Mode::Batch,
        "single" => Mode::Single,
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (Ok(rounds), Ok(per_round)) = (rounds, per_round) else {
        eprintln!("udp_batch_cost: counts must be numbers\n{usage}");
        return ExitCode::from(2);
    };
    if !(1..=DatagramBatch::MAX_DATAGRAMS).contains(&per_round) {
        eprintln!(
            "udp_batch_cost: 1 to {} datagrams per round",
            DatagramBatch::MAX_DATAGRAMS
        );
        return ExitCode::from(2);
    }

    let config = Config::default().with_faults(Faults::with(Completion::Inline, 1));
    let kernel = Kernel::boot(config);
    let object = kernel.create_driver_object("UdpBatchCost");
    // SAFETY: `object` outlives the client, deregistered below.
    let driver = unsafe { wsk_net::Driver::from_raw(object.object()) }.expect("a driver object");
    let (elapsed, before, after) = kernel.on_kernel_thread(|| {
        let client = WskClient::register(driver).expect("WskClient::register");
        let measured = block_on(run(&client, &kernel, mode, rounds, per_round));
        client
            .deregister()
            .unwrap_or_else(|e| panic!("deregister: {}", e.error()));
        measured
    });
    let report = kernel.check_leaks();
    let bugchecks = kernel.take_bugchecks();
    if !report.is_clean() || !bugchecks.is_empty() {
        eprintln!("udp_batch_cost: the verifier found problems: {report}; bugchecks {bugchecks:?}");
        return ExitCode::FAILURE;
    }
    let datagrams = rounds * per_round as u64;
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    println!(
        "config: host kernel, Completion::Inline seed 1, UDP on 127.0.0.1, {DATAGRAM}-byte \
         datagrams, {per_round} per round, {WARM_UP} warm-up rounds, {rounds} measured"
    );
    println!(
        "per datagram ({}): {:.0} ns wall-clock (send and receive), pool={:.3} irps={:.3} \
         mdls={:.3}",
        if mode == Mode::Batch {
            "batch"
        } else {
            "single"
        },
        per(nanos, datagrams),
        per(after.pool - before.pool, datagrams),
        per(after.irps - before.irps, datagrams),
        per(after.mdls - before.mdls, datagrams),
    );
    ExitCode::SUCCESS
}
