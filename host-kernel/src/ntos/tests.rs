//! Tests of the host kernel's ntoskrnl: each checks a Windows rule or a verifier check.

use std::boxed::Box;
use std::string::String;
use std::sync::mpsc;
use std::time::Duration;
use std::vec::Vec;

use super::kernel::{Config, Kernel};
use super::verifier::panic_message;
use crate::testing::BOUND;

/// Four processors; watchdog limits no test DPC reaches even on a loaded machine (the
/// watchdogs' own tests set small ones).
fn boot() -> Kernel {
    Kernel::boot(
        Config::default()
            .with_cpus(4)
            .with_dpc_watchdog(Duration::from_secs(599))
            .with_dpc_cumulative_watchdog(Duration::from_secs(599)),
    )
}

/// Runs `f`, which must bugcheck `name`; returns the panic message.
fn expect_bugcheck<R>(name: &str, f: impl FnOnce() -> R) -> String {
    let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) else {
        panic!("expected BUGCHECK {name}, but the call returned");
    };
    let message = panic_message(&*payload).unwrap_or("").to_owned();
    assert!(
        message.starts_with(&std::format!("BUGCHECK {name}:")),
        "expected BUGCHECK {name}, got: {message}"
    );
    message
}

/// Takes the kernel's records and checks they are exactly `names`, in order.
fn take(kernel: &Kernel, names: &[&str]) {
    let taken: Vec<&str> = kernel.take_bugchecks().iter().map(|b| b.name).collect();
    assert_eq!(taken, names);
}

fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(BOUND)
        .expect("event did not arrive within the bound")
}

use std::borrow::ToOwned;
use std::string::ToString;

mod dpc_tests;
mod irp_tests;
mod irql_tests;
mod kernel_tests;
mod sync_tests;
