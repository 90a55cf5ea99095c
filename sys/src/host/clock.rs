//! The host's interrupt time: 100 ns units on a monotonic clock shared by every kernel in the
//! process, starting near zero like a freshly booted machine's.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The instant interrupt time 0 stands for.
fn origin() -> Instant {
    static BOOT: OnceLock<Instant> = OnceLock::new();
    *BOOT.get_or_init(Instant::now)
}

/// The current interrupt time, 100 ns units.
pub(crate) fn now() -> u64 {
    u64::try_from(origin().elapsed().as_nanos() / 100).unwrap_or(u64::MAX)
}

/// The host instant at interrupt time `time` (100 ns units).
pub(crate) fn instant_at(time: u64) -> Instant {
    origin() + Duration::from_nanos(time.saturating_mul(100))
}

/// The absolute interrupt time an NT timeout or due time means: negative values are relative
/// (100 ns units from now), others absolute interrupt times.
pub(crate) fn absolute(due: i64) -> u64 {
    if due < 0 {
        now().saturating_add(due.unsigned_abs())
    } else {
        due.unsigned_abs()
    }
}

/// Host implementation of `KeQueryInterruptTime`. Any IRQL.
///
/// # Safety
/// None: `unsafe` only to match the kernel import's signature.
#[must_use]
pub unsafe extern "system-unwind" fn KeQueryInterruptTime() -> u64 {
    now()
}
