//! The host's clocks, shared by every kernel in the process and starting near zero like a
//! freshly booted machine's. As on Windows there are two:
//!
//! - **Interrupt time** (`KeQueryInterruptTime`, 100 ns units): kept in a shared-user-data page
//!   ([`host_shared_user_data`]) and advanced in whole clock ticks, as the clock interrupt
//!   advances it on Windows. The tick is [`Config::clock_tick`](super::Config), 15.625 ms by
//!   default (Windows' default timer resolution; 0.5 ms is the finest it goes). Timers and
//!   timed waits expire on a tick, as Windows' do.
//! - **The precise clock** (`KeQueryPerformanceCounter`, 10 MHz here): the host's monotonic
//!   clock, not quantised.
//!
//! The interrupt time is tick-quantised precise time: at any moment it is the time of the
//! last tick boundary. The page is refreshed whenever it is asked for (the same value a tick
//! thread would have written at the last boundary, without a thread to start or stop).

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::KUSER_SHARED_DATA_HEAD;

/// Windows' default clock tick: 64 Hz, 15.625 ms, in 100 ns units.
pub const DEFAULT_TICK: Duration = Duration::from_micros(15_625);

/// The current tick, 100 ns units (set at boot from the kernel's `Config`).
static TICK: AtomicU64 = AtomicU64::new(156_250);

/// The host's shared-user-data page, laid out as the head of `KUSER_SHARED_DATA` (checked at
/// compile time below): atomics, because the host refreshes it from any thread.
#[repr(C, align(4096))]
pub struct SharedUserData {
    #[allow(dead_code, reason = "layout: the fields before InterruptTime")]
    tick_count_low: AtomicU32,
    #[allow(dead_code, reason = "layout: the fields before InterruptTime")]
    tick_count_multiplier: AtomicU32,
    /// `InterruptTime.LowPart` and `High1Time`, read as one 64-bit value on x64.
    interrupt_time: AtomicU64,
    /// `InterruptTime.High2Time`.
    interrupt_time_high2: AtomicI32,
}

const _: () = {
    assert!(
        core::mem::offset_of!(SharedUserData, interrupt_time)
            == core::mem::offset_of!(KUSER_SHARED_DATA_HEAD, InterruptTime)
    );
    assert!(
        core::mem::offset_of!(SharedUserData, interrupt_time_high2)
            == core::mem::offset_of!(KUSER_SHARED_DATA_HEAD, InterruptTime)
                + core::mem::offset_of!(crate::KSYSTEM_TIME, High2Time)
    );
};

static SHARED_USER_DATA: SharedUserData = SharedUserData {
    tick_count_low: AtomicU32::new(0),
    // TickCountMultiplier: 2^24 * ms per tick, as Windows sets it for 15.625 ms.
    tick_count_multiplier: AtomicU32::new(0x0fa0_0000),
    interrupt_time: AtomicU64::new(0),
    interrupt_time_high2: AtomicI32::new(0),
};

/// The instant time 0 stands for.
fn origin() -> Instant {
    static BOOT: OnceLock<Instant> = OnceLock::new();
    *BOOT.get_or_init(Instant::now)
}

/// Sets the clock tick (at boot). Zero is taken as 100 ns.
pub(crate) fn set_tick(tick: Duration) {
    let units = u64::try_from(tick.as_nanos() / 100)
        .unwrap_or(u64::MAX)
        .max(1);
    TICK.store(units, Ordering::Relaxed);
}

fn tick() -> u64 {
    TICK.load(Ordering::Relaxed)
}

/// The precise time, 100 ns units since the origin: what `KeQueryPerformanceCounter` counts.
pub(crate) fn precise_now() -> u64 {
    u64::try_from(origin().elapsed().as_nanos() / 100).unwrap_or(u64::MAX)
}

/// The current interrupt time, 100 ns units: the last tick boundary. Refreshes the page.
pub(crate) fn now() -> u64 {
    let now = precise_now();
    let quantised = now - now % tick();
    // fetch_max: concurrent refreshes and a tick made shorter at boot never move it back.
    let previous = SHARED_USER_DATA
        .interrupt_time
        .fetch_max(quantised, Ordering::AcqRel);
    let value = previous.max(quantised);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "High2Time is the high half, as the kernel stores it"
    )]
    SHARED_USER_DATA
        .interrupt_time_high2
        .store((value >> 32) as i32, Ordering::Release);
    value
}

/// The host instant at interrupt time `time` (100 ns units).
pub(crate) fn instant_at(time: u64) -> Instant {
    origin() + Duration::from_nanos(time.saturating_mul(100))
}

/// The host instant at which the clock interrupt that expires `due` happens: the first tick
/// boundary at or after `due`. Timers and timed waits use it, so they expire on a tick and the
/// interrupt time read afterwards is at least `due`.
pub(crate) fn expiry_instant(due: u64) -> Instant {
    instant_at(due.div_ceil(tick()).saturating_mul(tick()))
}

/// The absolute interrupt time an NT timeout or due time means: negative values are relative
/// (100 ns units from now), others absolute interrupt times. Relative times count from the
/// precise time, so a host wait is never shorter than asked; with [`expiry_instant`] it ends
/// on the first tick at or after that, up to one tick late, as on Windows.
pub(crate) fn absolute(due: i64) -> u64 {
    if due < 0 {
        precise_now().saturating_add(due.unsigned_abs())
    } else {
        due.unsigned_abs()
    }
}

/// The host's shared-user-data page, refreshed: what `KI_USER_SHARED_DATA` is on Windows.
/// `sys`'s `KeQueryInterruptTime` reads `InterruptTime` from it at the offset Windows uses.
/// Any IRQL; works without a booted kernel.
#[must_use]
#[unsafe(no_mangle)]
pub extern "system-unwind" fn host_shared_user_data() -> *const KUSER_SHARED_DATA_HEAD {
    let _ = now();
    (&raw const SHARED_USER_DATA).cast()
}
