//! The end-to-end seed sweep, one seed per process (the echo driver starts once per process):
//! the echo driver on the host kernel under a fault plan drawn from the seed (or `WSK_FAULTS`),
//! with its runner drawn too, serving `std` clients (concurrent echo, churn, a reset
//! mid-message) and `wsk-net` clients in the same kernel that cancel at random await points
//! (receives under random timeouts, receives dropped in flight, abortive and bounded
//! disconnects). First everything must be served byte-exact; then the same load runs again
//! and the driver is unloaded at a random moment in the `std` clients' part of it (the
//! `wsk-net` clients finish first: see the test): every client must end, the unload report
//! must be clean and the verifier must find no leak and no bugcheck.
//!
//! Ignored by default: `cargo xtask soak --seeds N` runs it once per seed with `WSK_SEED`
//! set; a failure prints the replay command. Under a plan with `lowres` the simulation starts
//! once the driver listens, and client errors are accepted (only the verifier's checks, the
//! clean unload and the bytes of every echo that comes back are judged).

mod common;

use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use wsk::executor::block_on;
use wsk::net::{Disconnect, ErrorKind, IoBuf, TcpStream, WskClient};
use wsk_benches::load;
use wsk_host::faults::{self, Completion, Faults, parse_seed};
use wsk_host::{Kernel, RegValue, testing};

use common::load_echo;

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

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed (`WSK_SEED`, default 1) and the plan: `WSK_FAULTS` when set, else one drawn from
/// the seed among the standard kinds.
fn seeded_plan() -> Faults {
    if let Some(plan) = Faults::from_env().expect("WSK_FAULTS and WSK_SEED parse")
        && std::env::var_os(wsk_host::faults::FAULTS_VAR).is_some()
    {
        return plan;
    }
    let seed = std::env::var(wsk_host::faults::SEED_VAR)
        .map_or(1, |text| parse_seed(&text).expect("WSK_SEED parses"));
    let mut dice = Dice(seed ^ 0xd21e);
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

/// Bytes with a pattern the echo must give back unchanged.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ salt)
        .collect()
}

/// One `wsk-net` connection to the driver: sends seeded messages and reads the echo back,
/// choosing at each await point from the dice; after a receive it dropped or that timed out
/// (data lost on purpose) it ends the connection. Returns an error when the connection failed
/// (expected once the driver unloads); panics when an echo was wrong.
async fn net_connection(
    client: &WskClient,
    addr: SocketAddr,
    dice: &mut Dice,
) -> wsk::net::Result<()> {
    let stream = TcpStream::connect(client, addr).await?;
    for _ in 0..=dice.below(5) {
        let len = 1 + usize::try_from(dice.below(4000)).unwrap();
        let message = pattern(len, u8::try_from(dice.below(256)).unwrap());
        let (sent, _) = stream.send(IoBuf::from_slice(&message)?).await;
        sent?;
        match dice.below(4) {
            0 => {
                // A receive dropped at its first await point: what it took is lost.
                let recv = pin!(stream.recv(IoBuf::with_capacity(len)?));
                let _ = recv.poll(&mut Context::from_waker(Waker::noop()));
                break;
            }
            1 => {
                // A receive under a random timeout: all of it, or TimedOut (data kept).
                let after = Duration::from_micros(dice.below(5000));
                let (n, buf) =
                    wsk::net::timeout(after, stream.recv_exact(IoBuf::with_capacity(len)?, len))
                        .await;
                match n {
                    Ok(n) => assert_eq!(&buf[..n], &message[..], "the echo under a timeout"),
                    // What arrived after the deadline is lost with the receive: stop here.
                    Err(e) if e.kind() == ErrorKind::TimedOut => break,
                    Err(e) => return Err(e),
                }
            }
            _ => {
                let (n, buf) = stream.recv_exact(IoBuf::with_capacity(len)?, len).await;
                n?;
                assert_eq!(&buf[..], &message[..], "the echo");
            }
        }
    }
    match dice.below(3) {
        0 => {
            let _ = stream.disconnect(Disconnect::Abortive).await;
        }
        1 => {
            let _ = stream
                .disconnect_within(Duration::from_millis(dice.below(20)))
                .await;
        }
        _ => {}
    }
    stream.close().await;
    Ok(())
}

/// The `std` clients: every scenario must succeed while `must_succeed`.
fn std_clients(addr: SocketAddr, must_succeed: bool) {
    let outcomes = [
        load::concurrent_echo(addr, 4, 10, 8 * 1024).map(|_| ()),
        load::churn(addr, 40, 4).map(|_| ()),
        load::reset_mid_message(addr).map(|_| ()),
    ];
    if must_succeed {
        for outcome in outcomes {
            outcome.expect("a std client scenario");
        }
    }
}

/// The `wsk-net` clients: `connections` connections in turn; every one must succeed while
/// `must_succeed`.
fn net_clients(kernel: &Kernel, addr: SocketAddr, seed: u64, connections: u64, must_succeed: bool) {
    kernel.on_kernel_thread(|| {
        let driver = testing::leaked_driver_object(kernel, "wsksoaknet");
        // SAFETY: leaked by leaked_driver_object, so valid for every client registered with it.
        let driver = unsafe { wsk::net::Driver::from_raw(driver) }.expect("a driver object");
        let mut attempts = 0;
        let client = loop {
            match WskClient::register(driver) {
                Ok(client) => break client,
                // The low-resources simulation refused: ask again.
                Err(e)
                    if !must_succeed && e.kind() == ErrorKind::NoResources && attempts < 1000 =>
                {
                    attempts += 1;
                }
                Err(e) => panic!("WskClient::register failed with {e:?}"),
            }
        };
        let mut dice = Dice(seed);
        block_on(async {
            for _ in 0..connections {
                let outcome = net_connection(&client, addr, &mut dice).await;
                if must_succeed {
                    outcome.expect("a wsk-net client connection");
                }
            }
        });
        client.deregister().expect("deregister");
    });
}

#[test]
#[ignore = "the end-to-end seed sweep: cargo xtask soak --seeds N"]
fn soak_echo_driver_seed() {
    let plan = seeded_plan();
    let seed = plan.seed;
    let low_resources = plan.low_resources;
    // Under the low-resources simulation every client may see errors: only the verifier's
    // checks and the echo's bytes (when it comes back) are judged.
    let must_succeed = low_resources.is_none();
    println!("soak seed {seed}: {}", plan.replay_env());
    testing::run_plans([plan], |kernel| {
        let mut dice = Dice(seed);
        let runner = if dice.below(2) == 0 { "dpc" } else { "passive" };
        // The driver starts with its allocations served; the simulation starts once it listens.
        faults::set_low_resources(None, seed);
        let (driver, addr) = load_echo(
            kernel,
            "WskEchoSoak",
            runner,
            &[("MaxConnections", RegValue::Dword(64))],
        );
        faults::set_low_resources(low_resources, seed);

        // Everything served byte-exact.
        std::thread::scope(|scope| {
            scope.spawn(|| std_clients(addr, must_succeed));
            net_clients(kernel, addr, seed, 6, must_succeed);
        });

        // The same again, with the unload at a random moment in the std clients' load. The
        // wsk-net clients finish first: the host kernel checks at unload that no WSK client
        // at all is left registered (one driver per machine), so theirs would count as the
        // driver's.
        let unload_after = Duration::from_millis(dice.below(150));
        let report = std::thread::scope(|scope| {
            scope.spawn(|| std_clients(addr, false));
            net_clients(kernel, addr, seed ^ 1, 4, must_succeed);
            std::thread::sleep(unload_after);
            kernel.unload(driver)
        });
        assert!(
            report.is_clean(),
            "unload {unload_after:?} into the load: {report}"
        );
        let log = kernel.debug_log();
        assert!(
            log.contains("wskecho: unload complete: no leaks"),
            "driver log:\n{log}"
        );
    });
}

/// Open descriptors of this process.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Resident set size of this process in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One reading of everything that must stay flat.
#[derive(Clone, Copy, Debug)]
struct Sample {
    kernel: testing::KernelUsage,
    descriptors: usize,
    resident_kib: u64,
}

impl Sample {
    fn now() -> Self {
        Self {
            kernel: testing::kernel_usage(),
            descriptors: open_descriptors(),
            resident_kib: resident_kib(),
        }
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; {} descriptors; RSS {} KiB",
            self.kernel, self.descriptors, self.resident_kib
        )
    }
}

/// Clients that close abruptly: connect, send, and close with the echo unread (a reset).
fn abrupt_closes(addr: SocketAddr, count: usize) {
    use std::io::Write;
    for _ in 0..count {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            let _ = stream.write_all(&[7u8; 1000]);
        }
    }
}

/// A slow reader: a writer sends `total` bytes while the reader takes them 4 KiB per
/// millisecond, so the driver's sends wait on flow control; the echo must be byte-exact.
fn slow_reader(addr: SocketAddr, total: usize) {
    use std::io::{Read, Write};
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        panic!("the slow reader could not connect");
    };
    stream.set_read_timeout(Some(common::BOUND)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = pattern(total, 0x5a);
    let expected = sent.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).expect("the slow reader's writes");
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let mut received = Vec::with_capacity(total);
    let mut chunk = [0u8; 4096];
    loop {
        let n = reader.read(&mut chunk).expect("the slow reader's reads");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_millis(1));
    }
    writing.join().unwrap();
    assert!(received == expected, "the slow reader's echo differs");
}

/// The long run: `WSK_SOAK_SECONDS` (default 60) of churn, every kind of client disconnect
/// (graceful, reset mid-message, abrupt close with data unread), slow readers and concurrent
/// echo against the echo driver, with the kernel's live pool, IRPs and MDLs, the process's
/// descriptors and its RSS read after the first round and at the end: none may grow.
#[test]
#[ignore = "the long run: cargo xtask soak --minutes M"]
fn soak_echo_driver_minutes() {
    let seconds: u64 = std::env::var("WSK_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let plan = seeded_plan();
    println!("soak minutes: {seconds} s, {}", plan.replay_env());
    testing::run_plans([plan], |kernel| {
        let (driver, addr) = load_echo(
            kernel,
            "WskEchoLong",
            "dpc",
            &[("MaxConnections", RegValue::Dword(256))],
        );
        let round = || {
            std::thread::scope(|scope| {
                scope.spawn(|| load::churn(addr, 100, 4).expect("churn"));
                scope.spawn(|| {
                    load::concurrent_echo(addr, 8, 20, 16 * 1024).expect("concurrent echo");
                });
                scope.spawn(|| load::reset_mid_message(addr).expect("reset mid-message"));
                scope.spawn(|| abrupt_closes(addr, 20));
                scope.spawn(|| slow_reader(addr, 256 * 1024));
            });
        };
        let settle = |target: &Sample| {
            // Connections the clients closed last may still be closing in the driver.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let now = Sample::now();
                if now.kernel.pool_blocks <= target.kernel.pool_blocks
                    || std::time::Instant::now() >= deadline
                {
                    return now;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        round();
        std::thread::sleep(Duration::from_millis(200));
        let start = Sample::now();
        let counts_before = kernel.allocation_counts();
        let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
        let mut rounds = 1;
        while std::time::Instant::now() < deadline {
            round();
            rounds += 1;
        }
        let end = settle(&start);
        let counts_after = kernel.allocation_counts();
        println!("soak minutes: {rounds} rounds");
        println!("soak minutes: start: {start}");
        println!("soak minutes: end:   {end}");
        println!(
            "soak minutes: allocations during the run: {} pool, {} IRPs, {} MDLs",
            counts_after.pool - counts_before.pool,
            counts_after.irps - counts_before.irps,
            counts_after.mdls - counts_before.mdls
        );
        assert!(
            end.kernel.pool_blocks <= start.kernel.pool_blocks
                && end.kernel.irps <= start.kernel.irps
                && end.kernel.mdls <= start.kernel.mdls,
            "kernel usage grew: {start} -> {end}"
        );
        assert!(
            end.descriptors <= start.descriptors,
            "descriptors grew: {start} -> {end}"
        );
        assert!(
            end.resident_kib <= start.resident_kib + 32 * 1024,
            "RSS grew by more than 32 MiB: {start} -> {end}"
        );
        let report = kernel.unload(driver);
        assert!(report.is_clean(), "unload report: {report}");
    });
}
