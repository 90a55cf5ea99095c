//! A `resolve` future dropped while its `WskGetAddressInfo` is pending: the provider completes
//! the IRP later, at `DISPATCH_LEVEL` on the reactor, and the result list must not be freed
//! there (`WskFreeAddressInfo` is `PASSIVE_LEVEL` only). It is parked on the client and freed
//! at the next `PASSIVE_LEVEL` point: the next resolve, or deregistration.
//!
//! Its own test binary: before the fix, the completion routine called `WskFreeAddressInfo` at
//! `DISPATCH_LEVEL`, the verifier's bugcheck inside a completion routine (which cannot unwind)
//! aborts the process, and that should not take the other suites down with it.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use wsk_host::faults::{Completion, Faults};
use wsk_host::{Config, Kernel};
use wsk_net::{WskClient, resolve};

mod common;
use common::{BOUND, test_driver_named};

/// The driver object these tests register with.
fn test_driver(kernel: &Kernel) -> wsk_net::Driver {
    test_driver_named(kernel, "wskresolvetest")
}

/// Deferred completion with seed 4 and a 400 ms bound: the first deferred completion (the
/// resolve's) comes about 357 ms after the call, long after the first poll returned.
fn late_completion() -> Faults {
    Faults {
        max_delay: Duration::from_millis(400),
        ..Faults::with(Completion::Deferred, 4)
    }
}

/// Registers, starts a resolve, drops it while `WskGetAddressInfo` is pending; gives the
/// client back.
fn abandon_a_resolve(kernel: &Kernel) -> WskClient {
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(test_driver(kernel)).expect("WskClient::register");
        {
            let lookup = pin!(resolve(&client, "localhost", 7));
            let polled = lookup.poll(&mut Context::from_waker(Waker::noop()));
            assert!(
                polled.is_pending(),
                "the lookup completes later (deferred): {polled:?}"
            );
        }
        client
    })
}

/// Waits until the provider holds no IRP any more: the abandoned lookup's completion routine
/// has run (on the reactor, at `DISPATCH_LEVEL`).
fn wait_for_the_abandoned_completion(kernel: &Kernel) {
    let deadline = Instant::now() + BOUND;
    while kernel
        .check_leaks()
        .leaks()
        .iter()
        .any(|l| l.contains("still held by the provider"))
    {
        assert!(
            Instant::now() < deadline,
            "the abandoned lookup never completed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pool blocks of the provider's address-info lists (tag `WskA`) still allocated.
fn address_info_blocks(kernel: &Kernel) -> Vec<String> {
    kernel
        .check_leaks()
        .leaks()
        .iter()
        .filter(|l| l.contains("WskA"))
        .cloned()
        .collect()
}

fn finish(kernel: &Kernel) {
    let report = kernel.check_leaks();
    assert!(report.is_clean(), "{report}");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:?}");
}

#[test]
fn an_abandoned_resolve_is_freed_at_deregistration() {
    let kernel = Kernel::boot(Config::default().with_faults(late_completion()));
    let client = abandon_a_resolve(&kernel);
    wait_for_the_abandoned_completion(&kernel);
    assert!(
        !address_info_blocks(&kernel).is_empty(),
        "the abandoned result list is parked, not freed at DISPATCH_LEVEL"
    );
    kernel.on_kernel_thread(move || client.deregister().expect("deregister"));
    finish(&kernel);
}

#[test]
fn an_abandoned_resolve_is_freed_by_the_next_resolve() {
    let kernel = Kernel::boot(Config::default().with_faults(late_completion()));
    let client = abandon_a_resolve(&kernel);
    wait_for_the_abandoned_completion(&kernel);
    let client = kernel.on_kernel_thread(move || {
        let addrs = wsk_executor::block_on(resolve(&client, "localhost", 7)).expect("resolve");
        assert!(!addrs.is_empty());
        client
    });
    let left = address_info_blocks(&kernel);
    assert!(
        left.is_empty(),
        "the next resolve (at PASSIVE_LEVEL) freed the parked list: {left:?}"
    );
    kernel.on_kernel_thread(move || client.deregister().expect("deregister"));
    finish(&kernel);
}

#[test]
fn an_abandoned_resolve_still_in_flight_at_deregistration_is_freed() {
    let kernel = Kernel::boot(Config::default().with_faults(late_completion()));
    let client = abandon_a_resolve(&kernel);
    // Deregister at once: the lookup completes (and parks its list) while deregistration
    // runs; it must wait for that completion before the last free.
    kernel.on_kernel_thread(move || client.deregister().expect("deregister"));
    finish(&kernel);
}
