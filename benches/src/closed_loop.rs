//! The closed-loop echo client of `cargo xtask bench-echo` (through `loadgen --bench`): N
//! connections, each with exactly one message of S bytes in flight, for a fixed time. Every
//! round trip's time goes into an HDR histogram; every echo is checked byte-exact.
//!
//! The connections are shared out over a few client threads. Each thread writes one message
//! on each of its connections, then reads each echo back in the same order, and repeats: so
//! a round trip's time runs from its write to the end of its read, and with many connections
//! includes the wait behind the other connections of the same thread, as a server's queue
//! would. Nothing is allocated per round trip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::connect;

/// Client threads at most (the machine has 2 cores; more would only measure the client).
pub const MAX_THREADS: usize = 4;
/// The longest round trip recorded exactly (longer ones are clamped to it).
const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// One run's figures.
pub struct RunResult {
    /// Connections used.
    pub connections: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Round trips completed in the measured time (each byte-exact).
    pub round_trips: u64,
    /// Round trips completed in all, the warm-up's included: what a server's CPU time over
    /// the whole run is divided by.
    pub all_round_trips: u64,
    /// Measured wall time.
    pub elapsed: Duration,
    /// Round-trip times in nanoseconds.
    pub histogram: Histogram<u64>,
}

impl RunResult {
    /// Round trips per second.
    #[must_use]
    pub fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let trips = self.round_trips as f64;
        trips / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The round-trip time at `quantile` (0 to 1), in microseconds.
    #[must_use]
    pub fn micros_at(&self, quantile: f64) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "nanoseconds for display")]
        let ns = self.histogram.value_at_quantile(quantile) as f64;
        ns / 1000.0
    }

    /// The result as one JSON object (no dependency: the fields are numbers).
    #[must_use]
    pub fn to_json(&self) -> String {
        let quantiles = [0.5, 0.9, 0.99, 0.999, 0.9999];
        let curve = quantiles
            .iter()
            .map(|q| format!("\"{q}\":{:.3}", self.micros_at(*q)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"connections\":{},\"size\":{},\"round_trips\":{},\"all_round_trips\":{},\"seconds\":{:.6},\
             \"round_trips_per_second\":{:.1},\"bytes_per_second\":{:.1},\
             \"rtt_us\":{{\"min\":{:.3},\"p50\":{:.3},\"p99\":{:.3},\"p99.9\":{:.3},\"max\":{:.3}}},\
             \"rtt_us_by_quantile\":{{{curve}}}}}",
            self.connections,
            self.size,
            self.round_trips,
            self.all_round_trips,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.bytes_per_second(),
            self.min_micros(),
            self.micros_at(0.5),
            self.micros_at(0.99),
            self.micros_at(0.999),
            self.max_micros(),
        )
    }

    /// Payload bytes per second, both directions.
    #[must_use]
    pub fn bytes_per_second(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        let size = self.size as f64;
        self.rate() * size * 2.0
    }

    fn min_micros(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "nanoseconds for display")]
        let ns = self.histogram.min() as f64;
        ns / 1000.0
    }

    fn max_micros(&self) -> f64 {
        #[allow(clippy::cast_precision_loss, reason = "nanoseconds for display")]
        let ns = self.histogram.max() as f64;
        ns / 1000.0
    }
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).map_err(|e| format!("histogram: {e}"))
}

/// Runs `connections` connections with one `size`-byte message each in flight, for
/// `duration` after a warm-up of `warmup` (not recorded); the connections are opened first
/// and closed at the end.
///
/// # Errors
/// A connection that fails, or an echo that differs (naming which).
pub fn run(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<RunResult, String> {
    let connections = connections.max(1);
    let size = size.max(1);
    let threads = connections.min(MAX_THREADS);
    let mut groups: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..connections {
        groups[i % threads].push(connect(addr).map_err(|e| format!("connection {i}: {e}"))?);
    }
    let start_at = Instant::now() + Duration::from_millis(50);
    let record_from = start_at + warmup;
    let end_at = record_from + duration;
    let handles: Vec<_> = groups
        .into_iter()
        .enumerate()
        .map(|(thread, streams)| {
            std::thread::spawn(move || drive(thread, streams, size, start_at, record_from, end_at))
        })
        .collect();
    let mut histogram = new_histogram()?;
    let mut round_trips = 0;
    let mut all_round_trips = 0;
    for handle in handles {
        let (h, all) = handle
            .join()
            .map_err(|_| "a client thread panicked".to_string())??;
        histogram
            .add(&h)
            .map_err(|e| format!("merging histograms: {e}"))?;
        round_trips += h.len();
        all_round_trips += all;
    }
    Ok(RunResult {
        connections,
        size,
        round_trips,
        all_round_trips,
        elapsed: end_at.saturating_duration_since(record_from),
        histogram,
    })
}

/// One client thread: rounds of one message per connection until `end_at`; records round
/// trips that started at or after `record_from`.
fn drive(
    thread: usize,
    mut streams: Vec<TcpStream>,
    size: usize,
    start_at: Instant,
    record_from: Instant,
    end_at: Instant,
) -> Result<(Histogram<u64>, u64), String> {
    let mut histogram = new_histogram()?;
    let mut all_round_trips = 0u64;
    let mut message: Vec<u8> = (0..size)
        .map(|i| u8::try_from((i * 31 + thread) % 251).unwrap_or(0))
        .collect();
    let mut back = vec![0u8; size];
    let mut started = vec![start_at; streams.len()];
    std::thread::sleep(start_at.saturating_duration_since(Instant::now()));
    let mut round = 0u8;
    while Instant::now() < end_at {
        // A different first byte each round: a stale or misrouted echo is caught.
        message[0] = round;
        round = round.wrapping_add(1);
        for (stream, start) in streams.iter_mut().zip(started.iter_mut()) {
            *start = Instant::now();
            stream
                .write_all(&message)
                .map_err(|e| format!("thread {thread}: write: {e}"))?;
        }
        for (i, (stream, start)) in streams.iter_mut().zip(&started).enumerate() {
            stream
                .read_exact(&mut back)
                .map_err(|e| format!("thread {thread} connection {i}: read: {e}"))?;
            let now = Instant::now();
            if back != message {
                return Err(format!(
                    "thread {thread} connection {i}: the echo differs from the message"
                ));
            }
            all_round_trips += 1;
            if *start >= record_from && now <= end_at {
                let ns = u64::try_from((now - *start).as_nanos()).unwrap_or(u64::MAX);
                histogram.saturating_record(ns.clamp(1, HISTOGRAM_MAX_NS));
            }
        }
    }
    Ok((histogram, all_round_trips))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn echo_server(corrupt: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if corrupt && n > 0 {
                            buf[n - 1] ^= 0x80;
                        }
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn counts_round_trips_and_percentiles_in_order() {
        let addr = echo_server(false);
        let result = run(
            addr,
            6,
            100,
            Duration::from_millis(20),
            Duration::from_millis(200),
        )
        .unwrap();
        assert_eq!(result.connections, 6);
        assert!(result.round_trips > 6, "{} round trips", result.round_trips);
        assert_eq!(result.histogram.len(), result.round_trips);
        assert!(
            result.all_round_trips > result.round_trips,
            "the warm-up counts in all"
        );
        assert!(result.micros_at(0.5) <= result.micros_at(0.99));
        assert!(result.micros_at(0.99) <= result.micros_at(0.999));
        let json = result.to_json();
        assert!(
            json.starts_with("{\"connections\":6,\"size\":100,"),
            "{json}"
        );
        assert!(json.contains("\"p99.9\":"), "{json}");
    }

    #[test]
    fn a_wrong_echo_fails_the_run() {
        let addr = echo_server(true);
        let err = run(addr, 1, 64, Duration::ZERO, Duration::from_millis(50))
            .err()
            .unwrap();
        assert!(err.contains("differs"), "{err}");
    }
}
