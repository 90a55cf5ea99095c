//! The host's interrupt time: 100 ns units on a monotonic clock shared by every kernel in the
//! process, starting near zero like a freshly booted machine's.

use std::sync::OnceLock;
use std::time::Instant;

/// Host implementation of `KeQueryInterruptTime`. Any IRQL.
///
/// # Safety
/// None: `unsafe` only to match the kernel import's signature.
pub unsafe extern "system" fn KeQueryInterruptTime() -> u64 {
    static BOOT: OnceLock<Instant> = OnceLock::new();
    let elapsed = BOOT.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos() / 100).unwrap_or(u64::MAX)
}
