//! Time from `KeQueryInterruptTime` (100 ns units since boot, monotonic, any IRQL):
//! [`Instant`] and the conversions the timers need; the interrupt time is what `KeSetTimerEx`
//! counts in. It moves once per clock tick (0.5 to 15.625 ms), so a runner's time budget
//! (100 µs) is measured on the precise clock instead ([`BudgetDeadline`]).

use core::time::Duration;

use wsk_sys::KeQueryInterruptTime;

const NANOS_PER_SECOND: u128 = 1_000_000_000;
/// `KeSetTimerEx` and `KeWaitForSingleObject` take 100 ns units.
const HUNDRED_NS_PER_SECOND: u128 = 10_000_000;

/// Ticks per second of the clock: the interrupt time counts 100 ns units.
fn frequency() -> u64 {
    10_000_000
}

fn read_counter() -> u64 {
    // SAFETY: no arguments, no preconditions; any IRQL.
    unsafe { KeQueryInterruptTime() }
}

/// A point in time, in interrupt-time ticks (100 ns). Monotonic; comparable across CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    ticks: u64,
}

impl Instant {
    /// The current time.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn now() -> Self {
        // Read the frequency first so the first call does not count its own query.
        let _ = frequency();
        Self {
            ticks: read_counter(),
        }
    }

    /// The time elapsed since `earlier`, zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        ticks_to_duration(self.ticks.saturating_sub(earlier.ticks))
    }

    /// The time elapsed since this instant.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }

    /// `self + duration`, saturating at the end of time.
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        Self {
            ticks: self.ticks.saturating_add(duration_to_ticks(duration)),
        }
    }

    pub(crate) fn ticks(self) -> u64 {
        self.ticks
    }

    pub(crate) const fn from_ticks(ticks: u64) -> Self {
        Self { ticks }
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Self;

    fn add(self, duration: Duration) -> Self {
        self.saturating_add(duration)
    }
}

/// Ticks for `duration`, rounded up so that a deadline is never early.
fn duration_to_ticks(duration: Duration) -> u64 {
    let ticks = (duration.as_nanos() * u128::from(frequency())).div_ceil(NANOS_PER_SECOND);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    let nanos = u128::from(ticks) * NANOS_PER_SECOND / u128::from(frequency());
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A relative kernel due time (negative, 100 ns units, at least one unit) from now to `deadline`.
pub(crate) fn relative_due_time(deadline: Instant) -> i64 {
    let ticks = deadline.ticks.saturating_sub(read_counter());
    let units = (u128::from(ticks) * HUNDRED_NS_PER_SECOND).div_ceil(u128::from(frequency()));
    -i64::try_from(units).unwrap_or(i64::MAX).max(1)
}

/// The end of a runner's time budget, on the precise clock (`KeQueryPerformanceCounter`,
/// resolved by `Runner::start` through `wsk_sys::init_precise_clock`). The interrupt time
/// would not do: it stands still for a whole clock tick, so a 100 µs budget measured with it
/// almost never expires. Where the kernel has no performance counter the precise clock falls
/// back to the interrupt time, and only the poll count bounds a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BudgetDeadline(u64);

impl BudgetDeadline {
    /// `max_time` from now. Any IRQL.
    pub(crate) fn after(max_time: Duration) -> Self {
        let units = u64::try_from(max_time.as_nanos().div_ceil(100)).unwrap_or(u64::MAX);
        Self(wsk_sys::query_precise_time().saturating_add(units))
    }

    /// True once the deadline has passed. Any IRQL.
    pub(crate) fn has_passed(self) -> bool {
        wsk_sys::query_precise_time() >= self.0
    }
}
