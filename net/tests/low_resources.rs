//! `wsk-net` under the host kernel's low-resources simulation (Driver Verifier's, see
//! `wsk_host::faults::LowResources`): the driver's pool, IRP and MDL allocations and WSK
//! socket creations fail. Every failure must reach the caller as an error
//! (`ErrorKind::NoResources`), never a panic or a hang, leave nothing behind (the verifier's
//! leak check after each plan), and the same calls must work again once resources return.
//!
//! Two sweeps: every single allocation of the scenario failed in turn (the n-th, for n = 1,
//! 2, ... until the scenario makes fewer than n), and a seeded fraction of them failed for a
//! window, after which the scenario must succeed.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::io::{Read, Write};
use std::net::SocketAddr;

use wsk_executor::block_on;
use wsk_host::faults::{self, Completion, Faults, LowResources, Resource, ResourceSet};
use wsk_host::testing;
use wsk_net::{ErrorKind, IoBuf, Result, TcpListener, TcpStream, UdpSocket, WskClient};

mod common;
use common::{BOUND, test_driver};

const MESSAGE: &[u8] = b"low resources";

/// The simulation is process-wide (every `Kernel::boot` arms or disarms it and resets its
/// counts), so the tests of this binary, which the harness runs in parallel, take turns.
static ONE_SIMULATION_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_simulation_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_SIMULATION_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A `std` peer that connects to `addr`, sends [`MESSAGE`] and reads it back; any error
/// (the provider closed the connection when it could not allocate the accepted socket) ends
/// it quietly.
fn connecting_peer(addr: SocketAddr) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return;
        };
        stream.set_read_timeout(Some(BOUND)).unwrap();
        if stream.write_all(MESSAGE).is_ok() {
            let mut back = [0u8; MESSAGE.len()];
            let _ = stream.read_exact(&mut back);
        }
    })
}

/// Receives [`MESSAGE`] on `stream` and sends it back.
async fn echo_message(stream: &TcpStream) -> Result<()> {
    let (n, buf) = stream
        .recv_exact(IoBuf::with_capacity(MESSAGE.len())?, MESSAGE.len())
        .await;
    n?;
    assert_eq!(&buf[..], MESSAGE);
    let (sent, _) = stream.send(buf).await;
    sent.map(|_| ())
}

/// The scenario: a listener accepting a `std` peer and echoing, a connection out to a `std`
/// listener, and a datagram round trip. The first error ends it (everything it opened is
/// closed by dropping).
fn scenario(client: &WskClient) -> Result<()> {
    block_on(async {
        let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap()).await?;
        let addr = listener.local_addr().await?;
        let peer = connecting_peer(addr);
        let accepted = listener.accept().await;
        let served = match accepted {
            Ok((stream, _)) => {
                let served = echo_message(&stream).await;
                stream.close().await;
                served
            }
            Err(e) => Err(e),
        };
        listener.close().await;
        peer.join().unwrap();
        served?;

        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let outside_addr = outside.local_addr().unwrap();
        let echoer = std::thread::spawn(move || {
            let Ok((mut s, _)) = outside.accept() else {
                return;
            };
            s.set_read_timeout(Some(BOUND)).unwrap();
            let mut message = [0u8; MESSAGE.len()];
            if s.read_exact(&mut message).is_ok() {
                let _ = s.write_all(&message);
            }
        });
        let connected = TcpStream::connect(client, outside_addr).await;
        let round_trip = match connected {
            Ok(stream) => {
                let (sent, buf) = stream.send(IoBuf::from_slice(MESSAGE)?).await;
                let result = match sent {
                    Ok(_) => stream.recv_exact(buf, MESSAGE.len()).await.0.map(|_| ()),
                    Err(e) => Err(e),
                };
                stream.close().await;
                result
            }
            Err(e) => {
                // Unblock the echoer: it waits for a connection.
                drop(std::net::TcpStream::connect(outside_addr));
                Err(e)
            }
        };
        echoer.join().unwrap();
        round_trip?;

        let udp = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap()).await?;
        let udp_addr = udp.local_addr().await?;
        let (sent, buf) = udp.send_to(IoBuf::from_slice(MESSAGE)?, udp_addr).await;
        let result = match sent {
            Ok(_) => udp.recv_from(buf).await.0.map(|_| ()),
            Err(e) => Err(e),
        };
        udp.close().await;
        result
    })
}

/// Registers a client, runs the scenario, deregisters. Errors from registration and the
/// scenario are returned; deregistration must succeed.
fn with_client(kernel: &wsk_host::Kernel) -> Result<()> {
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(test_driver(kernel))?;
        let outcome = scenario(&client);
        client.deregister().expect("deregister");
        outcome
    })
}

/// Runs the scenario until it succeeds, at most `attempts` times; every failure must be
/// `NoResources`. Returns how many attempts failed.
fn until_it_serves(kernel: &wsk_host::Kernel, attempts: usize) -> usize {
    for failed in 0..attempts {
        match with_client(kernel) {
            Ok(()) => return failed,
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::NoResources,
                "a failed allocation must show as NoResources, got {e:?}"
            ),
        }
    }
    panic!("the scenario never served again in {attempts} attempts");
}

#[test]
fn every_single_allocation_failure_is_an_error_and_the_next_attempt_serves() {
    let _turn = one_simulation_at_a_time();
    let mut points = 0u64;
    let mut by_resource = [0u64; 4];
    for nth in 1.. {
        for completion in [Completion::Inline, Completion::Deferred] {
            let plan = Faults {
                low_resources: Some(LowResources::nth(nth, ResourceSet::ALL)),
                ..Faults::with(completion, nth)
            };
            testing::run_plans([plan], |kernel| {
                until_it_serves(kernel, 2);
            });
        }
        let injected = faults::injected_failures();
        if injected.total() == 0 {
            // The scenario makes fewer than `nth` allocations: every one has failed once.
            break;
        }
        points += 1;
        for resource in Resource::ALL {
            by_resource[resource.index()] += injected.of(resource);
        }
        assert!(
            nth < 10_000,
            "the scenario never ran out of allocations to fail"
        );
    }
    println!(
        "allocation-failure points exercised: {points} (failures injected under deferred \
         completion, by resource pool/irp/mdl/socket: {by_resource:?})"
    );
    for resource in Resource::ALL {
        assert!(
            by_resource[resource.index()] > 0,
            "no {resource:?} allocation was ever failed: the sweep misses a resource"
        );
    }
}

#[test]
fn a_seeded_fraction_fails_for_a_while_then_the_service_returns() {
    let _turn = one_simulation_at_a_time();
    let plans = [
        "deferred,lowres=30,lowres-count=150",
        "mixed,reorder,delay=1ms,lowres=50,lowres-count=150",
        "inline,lowres=20,lowres-on=pool+socket,lowres-count=100",
    ];
    for (seed, spec) in (1..).zip(plans) {
        let plan = Faults::parse(spec, seed).expect("the plan parses");
        let window = plan.low_resources.and_then(|low| low.count).unwrap();
        testing::run_plans([plan], |kernel| {
            // Serve (after failures) until the window of failing allocations has passed.
            while faults::injected_failures().eligible < window {
                until_it_serves(kernel, 500);
            }
            let injected = faults::injected_failures();
            assert!(injected.total() > 0, "{spec}: nothing failed ({injected})");
            println!("{spec}: {injected}");
            // Resources are back: the scenario serves at the first attempt.
            assert_eq!(until_it_serves(kernel, 1), 0);
        });
    }
}
