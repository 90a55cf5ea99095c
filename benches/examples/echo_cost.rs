//! The cost of one echo round trip through `wsk-net` on the host kernel: kernel allocations
//! per round trip, and (under callgrind, driven by `cargo xtask bench --echo`) instructions.
//!
//! ```text
//! echo_cost <round trips> [warm-up round trips, default 100]
//! ```
//!
//! Boots the host kernel with inline completion (`Completion::Inline`, seed 1: the provider
//! completes an IRP on the calling thread whenever its result is already known), registers a
//! `WskClient` on a kernel thread and, in one `block_on`, makes a connected TCP pair on
//! loopback with `wsk-net` alone (listener, connect, accept). One round trip is four WSK
//! operations on that pair, in order: side A sends 64 bytes, side B receives exactly 64, B
//! sends them back, A receives exactly 64. After the warm-up, the measured loop runs the given
//! number of round trips between two readings of `Kernel::allocation_counts`.
//!
//! Everything outside the measured loop (boot, registration, connection, warm-up, close,
//! deregistration, the leak check) runs in every invocation, so under callgrind the cost of
//! one round trip is the difference between two runs with different counts divided by the
//! difference of the counts. The program also counts the operations that did not complete
//! inline (their future returned `Pending` at least once): with inline completion on loopback
//! they should be none, and each one that is adds a reactor completion to the count.

use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::process::ExitCode;

use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_host::{AllocationCounts, Config, Kernel};
use wsk_net::{Disconnect, IoBuf, TcpListener, TcpStream, WskClient};

/// Bytes per message.
const MESSAGE: usize = 64;

/// Warm-up round trips unless the command line gives a count.
const WARM_UP: u64 = 100;

/// What the measured loop saw.
struct Measured {
    /// Allocation counts before the measured loop.
    before: AllocationCounts,
    /// Allocation counts after it.
    after: AllocationCounts,
    /// Operations of the measured loop whose future returned `Pending` at least once.
    pended: u64,
}

/// Awaits `future`, adding one to `pended` if it returns `Pending` at least once.
async fn counted<F: Future>(future: F, pended: &Cell<u64>) -> F::Output {
    let mut future = pin!(future);
    let mut first = true;
    poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() && first {
            pended.set(pended.get() + 1);
        }
        first = false;
        poll
    })
    .await
}

/// One round trip: A sends `a` to B, B receives into `b` and sends it back, A receives into
/// `a`. Returns the two buffers.
async fn round_trip(
    a: &TcpStream,
    b: &TcpStream,
    buf_a: IoBuf,
    buf_b: IoBuf,
    pended: &Cell<u64>,
) -> (IoBuf, IoBuf) {
    let (sent, buf_a) = counted(a.send(buf_a), pended).await;
    assert_eq!(sent.expect("A: send"), MESSAGE);
    let (got, buf_b) = counted(b.recv_exact(buf_b, MESSAGE), pended).await;
    assert_eq!(got.expect("B: recv_exact"), MESSAGE);
    let (sent, buf_b) = counted(b.send(buf_b), pended).await;
    assert_eq!(sent.expect("B: send"), MESSAGE);
    let (got, buf_a) = counted(a.recv_exact(buf_a, MESSAGE), pended).await;
    assert_eq!(got.expect("A: recv_exact"), MESSAGE);
    // `recv_exact` left the message in the buffer, ready to be sent again.
    (buf_a, buf_b)
}

/// Connects a pair, runs the warm-up and the measured loop, and closes the pair.
async fn echo(client: &WskClient, kernel: &Kernel, round_trips: u64, warm_up: u64) -> Measured {
    let listener = TcpListener::bind(client, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    // The host's listen backlog completes the handshake, so connect finishes before accept.
    let a = TcpStream::connect(client, addr).await.expect("connect");
    let (b, _) = listener.accept().await.expect("accept");
    let message: Vec<u8> = (0..=u8::MAX).cycle().take(MESSAGE).collect();
    let mut buf_a = IoBuf::from_slice(&message).expect("IoBuf for A");
    let mut buf_b = IoBuf::with_capacity(MESSAGE).expect("IoBuf for B");

    let ignored = Cell::new(0);
    for _ in 0..warm_up {
        (buf_a, buf_b) = round_trip(&a, &b, buf_a, buf_b, &ignored).await;
    }
    let pended = Cell::new(0);
    let before = kernel.allocation_counts();
    for _ in 0..round_trips {
        (buf_a, buf_b) = round_trip(&a, &b, buf_a, buf_b, &pended).await;
    }
    let after = kernel.allocation_counts();

    drop((buf_a, buf_b));
    a.disconnect(Disconnect::Graceful)
        .await
        .expect("A: disconnect");
    a.close().await;
    b.close().await;
    listener.close().await;
    Measured {
        before,
        after,
        pended: pended.get(),
    }
}

/// `after - before` per round trip.
#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn per_round_trip(before: u64, after: u64, round_trips: u64) -> f64 {
    if round_trips == 0 {
        return 0.0;
    }
    after.saturating_sub(before) as f64 / round_trips as f64
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: echo_cost <round trips> [warm-up round trips, default 100]";
    let (round_trips, warm_up) = match args.as_slice() {
        [n] => (n.parse::<u64>(), Ok(WARM_UP)),
        [n, w] => (n.parse::<u64>(), w.parse::<u64>()),
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let (Ok(round_trips), Ok(warm_up)) = (round_trips, warm_up) else {
        eprintln!("echo_cost: counts must be numbers\n{usage}");
        return ExitCode::from(2);
    };

    let faults = Faults::with(Completion::Inline, 1);
    let config = Config::default().with_faults(faults);
    let cpus = config.cpus;
    let kernel = Kernel::boot(config);
    let object = kernel.create_driver_object("EchoCost");
    // SAFETY: `object` outlives the client, deregistered below.
    let driver = unsafe { wsk_net::Driver::from_raw(object.object()) }.expect("a driver object");
    let measured = kernel.on_kernel_thread(|| {
        let client = WskClient::register(driver).expect("WskClient::register");
        let measured = block_on(echo(&client, &kernel, round_trips, warm_up));
        client
            .deregister()
            .unwrap_or_else(|e| panic!("deregister: {}", e.error()));
        measured
    });
    let report = kernel.check_leaks();
    let bugchecks = kernel.take_bugchecks();
    if !report.is_clean() || !bugchecks.is_empty() {
        eprintln!("echo_cost: the verifier found problems: {report}; bugchecks {bugchecks:?}");
        return ExitCode::FAILURE;
    }

    let Measured {
        before,
        after,
        pended,
    } = measured;
    println!(
        "config: host kernel, {cpus} emulated CPUs, Completion::Inline seed 1, TCP on \
         127.0.0.1, {MESSAGE}-byte messages, {warm_up} warm-up round trips, {round_trips} \
         measured (4 WSK operations each)"
    );
    println!(
        "pended: {pended} of {} measured operations did not complete inline",
        4 * round_trips
    );
    println!(
        "allocated in the measured loop: {} pool blocks, {} IRPs, {} MDLs",
        after.pool - before.pool,
        after.irps - before.irps,
        after.mdls - before.mdls
    );
    // The line `cargo xtask bench --echo` reads.
    println!(
        "per round trip: pool={:.3} irps={:.3} mdls={:.3} pended={:.3}",
        per_round_trip(before.pool, after.pool, round_trips),
        per_round_trip(before.irps, after.irps, round_trips),
        per_round_trip(before.mdls, after.mdls, round_trips),
        per_round_trip(0, pended, round_trips),
    );
    ExitCode::SUCCESS
}
