//! UDP receive event-driven (`UdpSocket::recv_from_events`, `WskReceiveFromEvent`) against
//! IRP-driven (`UdpSocket::recv_from`, one `WskReceiveFrom` per datagram) on the host kernel:
//! the cost per datagram (wall-clock, kernel allocations, and under callgrind instructions) and
//! the receive latency of a ping-pong (p50/p99 round trip).
//!
//! ```text
//! udp_events_cost <irp|events> cost <datagrams>
//! udp_events_cost <irp|events> latency <round trips>
//! ```
//!
//! Both boot the host kernel with inline completion (seed 1) and register a `WskClient`.
//!
//! `cost`: two `UdpSocket`s on 127.0.0.1 in one task; per datagram, A sends 64 bytes to B
//! (`send_to`) and B receives it (`recv_from` or `recv_from_events`). 1 000 warm-up
//! datagrams, then the measured ones between two clock and allocation readings. Under
//! callgrind, instructions per datagram are the difference of two runs with different counts
//! over all threads (the event path moves work to the provider's reactor thread, where the
//! indication runs), divided by the difference of the datagrams.
//!
//! `latency`: one `UdpSocket` B on 127.0.0.1 echoes every datagram back (receive in the chosen
//! mode, then `send_to`), in `block_on` on a kernel thread; a `std` UDP socket on another
//! thread sends 64 bytes, waits for the echo and records the round trip in an HDR histogram
//! (1 000 warm-up round trips first). The difference between the modes is the receive path's:
//! a posted `WskReceiveFrom` IRP completed by the reactor versus an indication to the
//! callback, which wakes the waiting task.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use wsk_executor::block_on;
use wsk_host::faults::{Completion, Faults};
use wsk_host::{AllocationCounts, Config, Kernel};
use wsk_net::{IoBuf, UdpSocket, WskClient};

/// Bytes per datagram.
const DATAGRAM: usize = 64;
/// Warm-up datagrams or round trips.
const WARM_UP: u64 = 1_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Irp,
    Events,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Irp => "irp (recv_from)",
            Mode::Events => "events (recv_from_events)",
        }
    }
}

/// One receive in `mode`: the bytes and the sender.
async fn receive(socket: &UdpSocket, mode: Mode, buf: IoBuf) -> ((usize, SocketAddr), IoBuf) {
    let (got, buf) = match mode {
        Mode::Irp => socket.recv_from(buf).await,
        Mode::Events => socket.recv_from_events(buf).await,
    };
    (got.expect("receive"), buf)
}

/// Binds a socket on loopback and, for `Events`, enables its receive events.
async fn bind(client: &WskClient, mode: Mode) -> UdpSocket {
    let socket = UdpSocket::bind(client, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    if mode == Mode::Events {
        assert!(
            socket
                .enable_receive_events()
                .expect("enable_receive_events"),
            "the host provider has WskReceiveFromEvent"
        );
    }
    socket
}

async fn cost(
    client: &WskClient,
    kernel: &Kernel,
    mode: Mode,
    datagrams: u64,
) -> (Duration, AllocationCounts, AllocationCounts) {
    let a = bind(client, Mode::Irp).await;
    let b = bind(client, mode).await;
    let to = b.local_addr().await.expect("local_addr");
    let mut out = Some(IoBuf::from_slice(&[0x5a; DATAGRAM]).expect("IoBuf"));
    let mut into = Some(IoBuf::with_capacity(DATAGRAM).expect("IoBuf"));
    let mut one = async || {
        let (sent, back) = a.send_to(out.take().expect("send buffer"), to).await;
        out = Some(back);
        assert_eq!(sent.expect("send_to"), DATAGRAM);
        let ((n, _), back) = receive(&b, mode, into.take().expect("receive buffer")).await;
        into = Some(back);
        assert_eq!(n, DATAGRAM);
    };
    for _ in 0..WARM_UP {
        one().await;
    }
    let before = kernel.allocation_counts();
    let started = Instant::now();
    for _ in 0..datagrams {
        one().await;
    }
    let elapsed = started.elapsed();
    let after = kernel.allocation_counts();
    a.close().await;
    b.close().await;
    (elapsed, before, after)
}

/// The echo side of `latency`: `total` datagrams received in `mode` and sent back.
async fn echo(b: &UdpSocket, mode: Mode, total: u64) {
    let mut buf = IoBuf::with_capacity(DATAGRAM).expect("IoBuf");
    for _ in 0..total {
        let ((n, from), back) = receive(b, mode, buf).await;
        assert_eq!(n, DATAGRAM);
        let (sent, back) = b.send_to(back, from).await;
        assert_eq!(sent.expect("send_to"), DATAGRAM);
        buf = back;
    }
}

/// The `std` peer of `latency`: `round_trips` measured after the warm-up, in nanoseconds.
fn ping(to: SocketAddr, round_trips: u64) -> Histogram<u64> {
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let payload = [0xa5_u8; DATAGRAM];
    let mut back = [0_u8; 2 * DATAGRAM];
    for i in 0..WARM_UP + round_trips {
        let sent_at = Instant::now();
        peer.send_to(&payload, to).expect("send");
        let (n, _) = peer.recv_from(&mut back).expect("the echo");
        let rtt = sent_at.elapsed();
        assert_eq!(n, DATAGRAM);
        if i >= WARM_UP {
            let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
            histogram.record(nanos.max(1)).expect("record");
        }
    }
    histogram
}

#[expect(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
fn per(total: u64, count: u64) -> f64 {
    total as f64 / count.max(1) as f64
}

#[expect(clippy::cast_precision_loss, reason = "nanoseconds far below 2^52")]
fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1_000.0
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: udp_events_cost <irp|events> <cost|latency> <count>";
    let [mode, what, count] = args.as_slice() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mode = match mode.as_str() {
        "irp" => Mode::Irp,
        "events" => Mode::Events,
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let latency = match what.as_str() {
        "cost" => false,
        "latency" => true,
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("udp_events_cost: the count must be a number\n{usage}");
        return ExitCode::from(2);
    };

    let config = Config::default().with_faults(Faults::with(Completion::Inline, 1));
    let kernel = Kernel::boot(config);
    let object = kernel.create_driver_object("UdpEventsCost");
    // SAFETY: `object` outlives the client, deregistered below.
    let driver = unsafe { wsk_net::Driver::from_raw(object.object()) }.expect("a driver object");
    println!(
        "config: host kernel, Completion::Inline seed 1, UDP on 127.0.0.1, {DATAGRAM}-byte \
         datagrams, {WARM_UP} warm-up, {count} measured, mode {}",
        mode.name()
    );
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(driver).expect("WskClient::register");
        if latency {
            let b = block_on(bind(&client, mode));
            let to = block_on(b.local_addr()).expect("local_addr");
            let pinger = std::thread::spawn(move || ping(to, count));
            block_on(echo(&b, mode, WARM_UP + count));
            let histogram = pinger.join().expect("the peer");
            block_on(b.close());
            println!(
                "round trip ({}): p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, min {:.1} us, \
                 max {:.1} us",
                mode.name(),
                micros(histogram.value_at_quantile(0.50)),
                micros(histogram.value_at_quantile(0.99)),
                micros(histogram.value_at_quantile(0.999)),
                micros(histogram.min()),
                micros(histogram.max()),
            );
        } else {
            let (elapsed, before, after) = block_on(cost(&client, &kernel, mode, count));
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            println!(
                "per datagram ({}): {:.0} ns wall-clock (send and receive), pool={:.3} \
                 irps={:.3} mdls={:.3}",
                mode.name(),
                per(nanos, count),
                per(after.pool - before.pool, count),
                per(after.irps - before.irps, count),
                per(after.mdls - before.mdls, count),
            );
        }
        client
            .deregister()
            .unwrap_or_else(|e| panic!("deregister: {}", e.error()));
    });
    let report = kernel.check_leaks();
    let bugchecks = kernel.take_bugchecks();
    if !report.is_clean() || !bugchecks.is_empty() {
        eprintln!(
            "udp_events_cost: the verifier found problems: {report}; bugchecks {bugchecks:?}"
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
