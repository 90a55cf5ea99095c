//! Fault injection for the host kernel, deterministic from a seed: inline or deferred
//! completion of WSK calls, reordering of completions across sockets, delays, error statuses on
//! chosen operations, and a low-resources simulation that fails the driver's allocations
//! ([`LowResources`]). A test builds a [`Faults`] into the kernel's `Config` at boot.
//!
//! A plan is also written as text, so that it can be chosen from outside the code and a failure
//! can be replayed: [`Faults::parse`] reads `mixed,reorder,delay=1ms,lowres=50` (the
//! `WSK_FAULTS` environment variable, the host program's `--faults`), [`Faults::spec`] writes
//! it back, and [`Faults::from_env`] reads `WSK_FAULTS` and `WSK_SEED`.
//!
//! Determinism: the same plan and seed give the same sequence of choices (inline or deferred,
//! delays, release order, which allocation fails), counted per call. Which call gets the k-th
//! choice depends on the order the driver's threads and the host sockets make calls, which the
//! host's scheduler and network stack decide: a single-threaded scenario replays exactly, a
//! concurrent one replays the same choices but not always on the same calls.

use std::format;
use std::string::{String, ToString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::vec::Vec;

use crate::NTSTATUS;

/// Where the provider completes an IRP whose result is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Completion {
    /// Inline on the calling thread, before the WSK call returns, whenever the result is
    /// already known (as real WSK sometimes does); otherwise on the reactor thread. The
    /// default: it is what a fast provider does and costs no thread hand-off; the test plans
    /// (`testing::plans`) still run every scenario deferred and mixed too.
    #[default]
    Inline,
    /// Always on the reactor thread at `DISPATCH_LEVEL`: the call returns `STATUS_PENDING`.
    Deferred,
    /// Chosen per operation from the seed.
    Mixed,
}

/// The WSK operations a fault can be aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WskOp {
    /// `WskSocket`.
    Socket,
    /// `WskBind`.
    Bind,
    /// `WskAccept`.
    Accept,
    /// `WskConnect` and `WskSocketConnect`.
    Connect,
    /// `WskSend`.
    Send,
    /// `WskReceive`.
    Receive,
    /// `WskDisconnect`.
    Disconnect,
    /// `WskSendTo`.
    SendTo,
    /// `WskReceiveFrom`.
    ReceiveFrom,
    /// `WskGetAddressInfo`.
    GetAddressInfo,
}

/// Fail an operation with `status` instead of performing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorRule {
    /// The operation hit.
    pub op: WskOp,
    /// Which call of that operation fails, counting from 1; 0 fails every call.
    pub nth: u32,
    /// The status the IRP completes with (e.g. `STATUS_CONNECTION_RESET`).
    pub status: NTSTATUS,
}

/// Make every call of `op` take `delay` inside the provider (counted as in progress on its
/// socket), so that a close racing it from another thread hits the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowCall {
    /// The operation slowed down.
    pub op: WskOp,
    /// How long each call stays inside the provider before doing its work.
    pub delay: Duration,
}

/// Every fault the provider injects, all decided from `seed`.
#[derive(Clone, Debug, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent fault switches, each its own plan item"
)]
pub struct Faults {
    /// Seed of every random choice below.
    pub seed: u64,
    /// Inline, deferred or mixed completion.
    pub completion: Completion,
    /// Hold deferred completions back and release them in a seeded order across sockets.
    pub reorder: bool,
    /// Upper bound of a seeded delay before each deferred completion (zero: none).
    pub max_delay: Duration,
    /// Error statuses injected on chosen operations.
    pub errors: Vec<ErrorRule>,
    /// Treat `WSK_FLAG_WAITALL` as absent, as Wine 8.0's netio does: a receive completes with
    /// whatever has arrived.
    pub ignore_waitall: bool,
    /// How long `WskDeregister` waits for open sockets and held captures before the verifier
    /// reports them (where Windows would hang); `None`: 10 seconds.
    pub deregister_wait: Option<Duration>,
    /// Calls of one operation that linger inside the provider (see [`SlowCall`]).
    pub slow_call: Option<SlowCall>,
    /// A graceful `WskDisconnect` never completes, as with a peer that never acknowledges the
    /// FIN (the IRP completes "only when the transport protocol has fully completed the
    /// disconnect operation": "`PFN_WSK_DISCONNECT` callback function (wsk.h)",
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_disconnect>):
    /// only a cancel or the close ends it, and the close then resets the connection.
    pub disconnect_unacknowledged: bool,
    /// Queued IRPs get no cancel routine, so `IoCancelIrp` does not cancel them, as under
    /// Wine 8.0, where `IoCancelIrp` does not cancel WSK IRPs; only completion or the close
    /// ends them. One per process, like the low-resources simulation
    /// ([`set_low_resources`]): tests that use it boot no other kernel in their process
    /// meanwhile.
    pub ignore_cancel: bool,
    /// Every `WskCloseSocket` completes this long after it was called (deferred), as a close
    /// whose transmission takes its time; `None`: no extra delay.
    pub close_delay: Option<Duration>,
    /// Fail the driver's allocations and socket creations, as Driver Verifier's low-resources
    /// simulation does; `None`: never.
    pub low_resources: Option<LowResources>,
}

impl Faults {
    /// A plan with `completion` and `seed` and nothing else injected.
    #[must_use]
    pub fn with(completion: Completion, seed: u64) -> Self {
        Self {
            seed,
            completion,
            ..Self::default()
        }
    }
}

/// The environment variable holding a fault plan as text (see [`Faults::parse`]).
pub const FAULTS_VAR: &str = "WSK_FAULTS";
/// The environment variable holding a plan's seed (a decimal or `0x` hexadecimal `u64`).
pub const SEED_VAR: &str = "WSK_SEED";

/// An allocation the low-resources simulation can fail: the kernel functions a driver calls
/// for memory, IRPs and MDLs, and the WSK provider's creation of a socket for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `ExAllocatePoolWithTag` and `ExAllocatePool2` return null.
    Pool,
    /// `IoAllocateIrp` returns null.
    Irp,
    /// `IoAllocateMdl` returns null.
    Mdl,
    /// `WskSocket` and `WskSocketConnect` complete with `STATUS_INSUFFICIENT_RESOURCES`; an
    /// accept completes with it, and the host connection it would have given is closed.
    Socket,
}

impl Resource {
    /// Every resource, in the order of [`Resource::index`].
    pub const ALL: [Resource; 4] = [Self::Pool, Self::Irp, Self::Mdl, Self::Socket];

    /// Position in [`Resource::ALL`] and in [`InjectedFailures::by_resource`].
    #[must_use]
    pub fn index(self) -> usize {
        match self {
            Self::Pool => 0,
            Self::Irp => 1,
            Self::Mdl => 2,
            Self::Socket => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Irp => "irp",
            Self::Mdl => "mdl",
            Self::Socket => "socket",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Driver Verifier's low-resources simulation on the host: a seeded fraction of the driver's
/// allocations fails, within a window, so that every failure path of the driver runs and the
/// driver can be seen serving again once resources return.
///
/// WDK "Low Resources Simulation"
/// (learn.microsoft.com/windows-hardware/drivers/devtest/low-resources-simulation): when active,
/// Driver Verifier fails random instances of the driver's memory allocations
/// (`ExAllocatePoolWithXXX`, and since Windows Vista `IoAllocateIrp` and `IoAllocateMdl`
/// among others), with a configurable probability (default 6%), after a configurable delay
/// that lets the system start (default 8 minutes). Here the probability is
/// [`percent`](Self::percent), the delay is [`skip`](Self::skip) allocations or
/// [`delay`](Self::delay), and [`window`](Self::window) or [`count`](Self::count) ends the
/// simulation, which Driver Verifier does not (its end is a reboot). WSK socket creation fails
/// too: on Windows the provider allocates for every socket and fails that call with
/// `STATUS_INSUFFICIENT_RESOURCES` when it cannot.
///
/// Only the driver's calls fail: the host kernel's own allocations (its WSK provider's
/// address-information entries, device-extension contexts) go through internal paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowResources {
    /// Percentage (0 to 100) of the eligible allocations that fail, each chosen from the seed
    /// and the allocation's number.
    pub percent: u8,
    /// Which resources can fail.
    pub resources: ResourceSet,
    /// The first `skip` allocations of those resources after boot (or after
    /// [`set_low_resources`]) always succeed (the driver's start-up, say).
    pub skip: u64,
    /// Only the `count` allocations after the skipped ones are eligible; `None`: all of them.
    pub count: Option<u64>,
    /// Nothing fails until this long after boot (or after [`set_low_resources`]).
    pub delay: Duration,
    /// Nothing fails once this long has passed after the delay; `None`: until shutdown.
    pub window: Option<Duration>,
}

impl LowResources {
    /// `percent` of the allocations of every resource fail, from boot to shutdown.
    #[must_use]
    pub fn failing(percent: u8) -> Self {
        Self {
            percent: percent.min(100),
            resources: ResourceSet::ALL,
            skip: 0,
            count: None,
            delay: Duration::ZERO,
            window: None,
        }
    }

    /// Exactly the `nth` allocation (counting from 1) of `resources` fails, and no other.
    #[must_use]
    pub fn nth(nth: u64, resources: ResourceSet) -> Self {
        Self {
            percent: 100,
            resources,
            skip: nth.saturating_sub(1),
            count: Some(1),
            delay: Duration::ZERO,
            window: None,
        }
    }
}

/// A set of [`Resource`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceSet(u8);

impl ResourceSet {
    /// Every resource.
    pub const ALL: ResourceSet = ResourceSet(0b1111);

    /// The set holding only `resource`.
    #[must_use]
    pub fn only(resource: Resource) -> Self {
        Self(1 << resource.index())
    }

    /// This set with `resource` added.
    #[must_use]
    pub fn with(self, resource: Resource) -> Self {
        Self(self.0 | 1 << resource.index())
    }

    /// Whether `resource` is in the set.
    #[must_use]
    pub fn contains(self, resource: Resource) -> bool {
        self.0 & 1 << resource.index() != 0
    }
}

/// How many allocations the low-resources simulation failed since the kernel booted, by
/// resource; from [`injected_failures`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectedFailures {
    /// Failures per resource, indexed by [`Resource::index`].
    pub by_resource: [u64; 4],
    /// Allocations the simulation looked at (those of the plan's resources).
    pub eligible: u64,
}

impl InjectedFailures {
    /// Failures of `resource`.
    #[must_use]
    pub fn of(&self, resource: Resource) -> u64 {
        self.by_resource[resource.index()]
    }

    /// Failures of every resource.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_resource.iter().sum()
    }
}

impl core::fmt::Display for InjectedFailures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} of {} allocations failed (",
            self.total(),
            self.eligible
        )?;
        for (i, resource) in Resource::ALL.into_iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            write!(f, "{separator}{} {}", resource.name(), self.of(resource))?;
        }
        f.write_str(")")
    }
}

/// A low-resources simulation armed with its plan.
struct Gate {
    plan: LowResources,
    seed: u64,
    booted: Instant,
    eligible: AtomicU64,
    failed: [AtomicU64; 4],
}

/// One kernel's low-resources simulation: each booted kernel has its own (in its machine),
/// so a kernel's plan and counts never reach another kernel of the process, nor a thread of
/// an earlier kernel still running after the next one booted.
#[derive(Default)]
pub(crate) struct LowResourcesState {
    gate: Mutex<Option<Gate>>,
}

/// How many kernels' simulations are armed: the allocation paths test this first, so that
/// without a simulation an allocation costs one relaxed load more.
static ARMED: AtomicUsize = AtomicUsize::new(0);
/// The simulation of the kernel booted last, for [`set_low_resources`] and
/// [`injected_failures`] called from outside any kernel (after it shut down, say).
static LAST: Mutex<Option<Arc<LowResourcesState>>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Set while the booted kernel's plan has [`Faults::ignore_cancel`] (one per process, unlike
/// the low-resources simulation: the plan of the kernel booted last).
static IGNORE_CANCEL: AtomicBool = AtomicBool::new(false);

/// True when queued WSK IRPs must get no cancel routine ([`Faults::ignore_cancel`]).
pub(crate) fn cancel_ignored() -> bool {
    IGNORE_CANCEL.load(Ordering::Relaxed)
}

impl LowResourcesState {
    /// Starts (`Some`) or stops (`None`) this kernel's simulation with `seed`; the failure
    /// counts start again from zero.
    pub(crate) fn set(&self, plan: Option<LowResources>, seed: u64) {
        let mut gate = lock(&self.gate);
        let was_armed = gate.is_some();
        *gate = plan.map(|plan| Gate {
            plan,
            seed,
            booted: Instant::now(),
            eligible: AtomicU64::new(0),
            failed: Default::default(),
        });
        match (was_armed, gate.is_some()) {
            (false, true) => {
                ARMED.fetch_add(1, Ordering::AcqRel);
            }
            (true, false) => {
                ARMED.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// Whether this kernel's allocation of `resource` being made now fails.
    fn fail(&self, resource: Resource) -> bool {
        let gate = lock(&self.gate);
        let Some(gate) = gate.as_ref() else {
            return false;
        };
        let plan = &gate.plan;
        if !plan.resources.contains(resource) {
            return false;
        }
        let number = gate.eligible.fetch_add(1, Ordering::Relaxed) + 1;
        if number <= plan.skip || plan.count.is_some_and(|count| number - plan.skip > count) {
            return false;
        }
        let since_boot = gate.booted.elapsed();
        if since_boot < plan.delay
            || plan
                .window
                .is_some_and(|window| since_boot.saturating_sub(plan.delay) >= window)
        {
            return false;
        }
        let fails = mix(gate.seed ^ number.wrapping_mul(0xA076_1D64_78BD_642F)) % 100
            < u64::from(plan.percent);
        if fails {
            gate.failed[resource.index()].fetch_add(1, Ordering::Relaxed);
        }
        fails
    }

    /// What this simulation has failed so far (all zero without one).
    pub(crate) fn injected(&self) -> InjectedFailures {
        let gate = lock(&self.gate);
        let Some(gate) = gate.as_ref() else {
            return InjectedFailures::default();
        };
        InjectedFailures {
            by_resource: core::array::from_fn(|i| gate.failed[i].load(Ordering::Relaxed)),
            eligible: gate.eligible.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LowResourcesState {
    fn drop(&mut self) {
        if lock(&self.gate).is_some() {
            ARMED.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Arms the low-resources simulation of `faults` (or none) in `state`, the simulation of the
/// kernel booting now, which becomes the one the free functions below reach from outside a
/// kernel. Called by `Kernel::boot`.
pub(crate) fn arm(state: &Arc<LowResourcesState>, faults: &Faults) {
    state.set(faults.low_resources, faults.seed);
    *lock(&LAST) = Some(Arc::clone(state));
    IGNORE_CANCEL.store(faults.ignore_cancel, Ordering::Relaxed);
}

/// The simulation the free functions act on: the calling thread's kernel (a kernel thread's
/// own, else the running kernel), else the kernel booted last.
fn target() -> Option<Arc<LowResourcesState>> {
    crate::ntos::machine::try_current()
        .map(|machine| Arc::clone(&machine.low_resources))
        .or_else(|| lock(&LAST).clone())
}

/// Starts (`Some`) or stops (`None`) the low-resources simulation of the running kernel now
/// (the calling thread's kernel, else the kernel booted last), with `seed`, as
/// `verifier /volatile` changes Driver Verifier's settings without a reboot: the plan's skip,
/// count, delay and window count from this call, and the failure counts start again from
/// zero. A test uses it to let a driver start before its allocations fail. With a kernel at
/// hand, `Kernel::set_low_resources` says which.
pub fn set_low_resources(plan: Option<LowResources>, seed: u64) {
    if let Some(state) = target() {
        state.set(plan, seed);
    }
}

/// Whether the driver's allocation of `resource` being made now fails, by the simulation of
/// the calling thread's kernel. Any IRQL (it takes an ordinary host lock, never waits on the
/// kernel).
pub(crate) fn fail_allocation(resource: Resource) -> bool {
    if ARMED.load(Ordering::Acquire) == 0 {
        return false;
    }
    crate::ntos::machine::try_current().is_some_and(|machine| machine.low_resources.fail(resource))
}

/// What the low-resources simulation of the running kernel (the calling thread's, else the
/// kernel booted last) has failed so far (all zero without one). With a kernel at hand,
/// `Kernel::injected_failures` says which.
#[must_use]
pub fn injected_failures() -> InjectedFailures {
    target().map_or_else(InjectedFailures::default, |state| state.injected())
}

/// splitmix64's finaliser: a well-mixed 64-bit value from `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl WskOp {
    const ALL: [WskOp; 10] = [
        Self::Socket,
        Self::Bind,
        Self::Accept,
        Self::Connect,
        Self::Send,
        Self::Receive,
        Self::Disconnect,
        Self::SendTo,
        Self::ReceiveFrom,
        Self::GetAddressInfo,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Bind => "bind",
            Self::Accept => "accept",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Receive => "receive",
            Self::Disconnect => "disconnect",
            Self::SendTo => "sendto",
            Self::ReceiveFrom => "receivefrom",
            Self::GetAddressInfo => "getaddressinfo",
        }
    }
}

/// Reads a duration written as `250us`, `1ms`, `2s` or `1m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 1ms, 2s)"))?;
    match unit {
        "us" => Ok(Duration::from_micros(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_secs(value.saturating_mul(60))),
        _ => Err(format!("{text:?}: the unit is one of us, ms, s, m")),
    }
}

/// Writes a duration as [`parse_duration`] reads it, exactly when it is a whole number of
/// microseconds.
fn duration_spec(d: Duration) -> String {
    if d.subsec_nanos() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_micros() * 1000 == d.subsec_nanos() && d.as_micros().is_multiple_of(1000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// Reads a seed: decimal, or hexadecimal after `0x`.
///
/// # Errors
/// When `text` is neither.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.replace('_', "").parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a seed (a u64, decimal or 0x-hexadecimal)"))
}

fn parse_count(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value}: not a count"))
}

impl Faults {
    /// Reads a plan written as comma-separated items, with `seed`:
    ///
    /// - `inline`, `deferred`, `mixed`: the completion mode (default `inline`, as
    ///   `Completion::default`);
    /// - `reorder`: reorder deferred completions across sockets;
    /// - `delay=D`: seeded delays up to `D` before each deferred completion (`D` as `250us`,
    ///   `1ms`, `2s`, `1m`);
    /// - `close-delay=D`: every close completes `D` late;
    /// - `ignore-waitall`: treat `WSK_FLAG_WAITALL` as absent;
    /// - `disconnect-unacked`: graceful disconnects never complete ([`Faults::disconnect_unacknowledged`]);
    /// - `ignore-cancel`: `IoCancelIrp` does not cancel WSK IRPs ([`Faults::ignore_cancel`]);
    /// - `error=OP:N:STATUS`: the `N`th call of `OP` (`socket`, `bind`, `accept`, `connect`,
    ///   `send`, `receive`, `disconnect`, `sendto`, `receivefrom`, `getaddressinfo`; `N` = 0:
    ///   every call) completes with the NTSTATUS `STATUS` (hexadecimal);
    /// - `lowres=P`: the low-resources simulation fails `P`% of the driver's allocations,
    ///   refined by `lowres-on=pool+irp+mdl+socket` (which resources; default all),
    ///   `lowres-skip=N` (the first `N` succeed), `lowres-count=N` (only the next `N` may
    ///   fail), `lowres-delay=D` (none fails before `D` after boot), `lowres-for=D` (none
    ///   fails after the delay plus `D`). See [`LowResources`].
    ///
    /// The empty string is the default plan.
    ///
    /// # Errors
    /// A message naming the item that is not understood.
    pub fn parse(spec: &str, seed: u64) -> Result<Self, String> {
        let mut plan = Self {
            seed,
            ..Self::default()
        };
        let mut low: Option<LowResources> = None;
        let mut refinements: Vec<(&str, &str)> = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match (key, value) {
                ("inline", "") => plan.completion = Completion::Inline,
                ("deferred", "") => plan.completion = Completion::Deferred,
                ("mixed", "") => plan.completion = Completion::Mixed,
                ("reorder", "") => plan.reorder = true,
                ("ignore-waitall", "") => plan.ignore_waitall = true,
                ("disconnect-unacked", "") => plan.disconnect_unacknowledged = true,
                ("ignore-cancel", "") => plan.ignore_cancel = true,
                ("delay", value) => plan.max_delay = parse_duration(value)?,
                ("close-delay", value) => plan.close_delay = Some(parse_duration(value)?),
                ("error", value) => plan.errors.push(parse_error_rule(value)?),
                ("lowres", value) => {
                    let percent = value
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or_else(|| format!("lowres={value}: not a percentage (0 to 100)"))?;
                    low = Some(LowResources::failing(percent));
                }
                (key, value) if key.starts_with("lowres-") => refinements.push((key, value)),
                _ => return Err(format!("{item:?} is not a fault (see Faults::parse)")),
            }
        }
        for (key, value) in refinements {
            let low = low
                .as_mut()
                .ok_or_else(|| format!("{key} needs lowres=P"))?;
            match key {
                "lowres-skip" => low.skip = parse_count(key, value)?,
                "lowres-count" => low.count = Some(parse_count(key, value)?),
                "lowres-delay" => low.delay = parse_duration(value)?,
                "lowres-for" => low.window = Some(parse_duration(value)?),
                "lowres-on" => {
                    let mut set = ResourceSet(0);
                    for name in value.split('+') {
                        let resource = Resource::from_name(name).ok_or_else(|| {
                            format!("lowres-on: {name:?} is not pool, irp, mdl or socket")
                        })?;
                        set = set.with(resource);
                    }
                    low.resources = set;
                }
                _ => return Err(format!("{key:?} is not a fault (see Faults::parse)")),
            }
        }
        plan.low_resources = low;
        Ok(plan)
    }

    /// The plan as [`Faults::parse`] reads it back (without the seed). What the text cannot
    /// say (a [`SlowCall`], a deregistration wait) is left out.
    #[must_use]
    pub fn spec(&self) -> String {
        let mut items: Vec<String> = Vec::new();
        items.push(
            match self.completion {
                Completion::Inline => "inline",
                Completion::Deferred => "deferred",
                Completion::Mixed => "mixed",
            }
            .to_string(),
        );
        if self.reorder {
            items.push("reorder".to_string());
        }
        if !self.max_delay.is_zero() {
            items.push(format!("delay={}", duration_spec(self.max_delay)));
        }
        if let Some(delay) = self.close_delay {
            items.push(format!("close-delay={}", duration_spec(delay)));
        }
        if self.ignore_waitall {
            items.push("ignore-waitall".to_string());
        }
        if self.disconnect_unacknowledged {
            items.push("disconnect-unacked".to_string());
        }
        if self.ignore_cancel {
            items.push("ignore-cancel".to_string());
        }
        for rule in &self.errors {
            items.push(format!(
                "error={}:{}:{:x}",
                rule.op.name(),
                rule.nth,
                rule.status.cast_unsigned()
            ));
        }
        if let Some(low) = &self.low_resources {
            items.push(format!("lowres={}", low.percent));
            if low.resources != ResourceSet::ALL {
                let names: Vec<&str> = Resource::ALL
                    .into_iter()
                    .filter(|r| low.resources.contains(*r))
                    .map(Resource::name)
                    .collect();
                items.push(format!("lowres-on={}", names.join("+")));
            }
            if low.skip != 0 {
                items.push(format!("lowres-skip={}", low.skip));
            }
            if let Some(count) = low.count {
                items.push(format!("lowres-count={count}"));
            }
            if !low.delay.is_zero() {
                items.push(format!("lowres-delay={}", duration_spec(low.delay)));
            }
            if let Some(window) = low.window {
                items.push(format!("lowres-for={}", duration_spec(window)));
            }
        }
        items.join(",")
    }

    /// The plan chosen from outside: `WSK_FAULTS` read by [`Faults::parse`] with the seed
    /// `WSK_SEED` (default 1). `None` when neither variable is set.
    ///
    /// # Errors
    /// When a variable is set but does not parse.
    pub fn from_env() -> Result<Option<Self>, String> {
        let spec = std::env::var(FAULTS_VAR).ok();
        let seed = std::env::var(SEED_VAR).ok();
        if spec.is_none() && seed.is_none() {
            return Ok(None);
        }
        let seed = match seed {
            Some(text) => parse_seed(&text).map_err(|e| format!("{SEED_VAR}: {e}"))?,
            None => 1,
        };
        Self::parse(spec.as_deref().unwrap_or(""), seed)
            .map(Some)
            .map_err(|e| format!("{FAULTS_VAR}: {e}"))
    }

    /// The environment that replays this plan: `WSK_FAULTS=... WSK_SEED=...`.
    #[must_use]
    pub fn replay_env(&self) -> String {
        format!("{FAULTS_VAR}={} {SEED_VAR}={}", self.spec(), self.seed)
    }
}

fn parse_error_rule(value: &str) -> Result<ErrorRule, String> {
    let bad = || format!("error={value}: expected OP:N:STATUS, e.g. send:3:c000020d");
    let mut parts = value.split(':');
    let (Some(op), Some(nth), Some(status), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let op = WskOp::ALL
        .into_iter()
        .find(|o| o.name() == op)
        .ok_or_else(bad)?;
    let nth = nth.parse().map_err(|_| bad())?;
    let status = u32::from_str_radix(status.trim_start_matches("0x"), 16).map_err(|_| bad())?;
    Ok(ErrorRule {
        op,
        nth,
        status: status.cast_signed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_what_it_writes() {
        let spec = "mixed,reorder,delay=1ms,close-delay=250us,ignore-waitall,disconnect-unacked,\
                    ignore-cancel,\
                    error=send:3:c000020d,lowres=50,lowres-on=pool+socket,lowres-skip=7,\
                    lowres-count=100,lowres-delay=2s,lowres-for=1m";
        let plan = Faults::parse(spec, 42).expect("parses");
        assert_eq!(plan.completion, Completion::Mixed);
        assert!(plan.reorder && plan.ignore_waitall && plan.disconnect_unacknowledged);
        assert_eq!(plan.max_delay, Duration::from_millis(1));
        assert_eq!(plan.close_delay, Some(Duration::from_micros(250)));
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].op, WskOp::Send);
        assert_eq!(plan.errors[0].nth, 3);
        let low = plan.low_resources.expect("a low-resources plan");
        assert_eq!(low.percent, 50);
        assert!(low.resources.contains(Resource::Pool));
        assert!(!low.resources.contains(Resource::Irp));
        assert_eq!((low.skip, low.count), (7, Some(100)));
        assert_eq!(low.window, Some(Duration::from_mins(1)));
        let again = Faults::parse(&plan.spec(), 42).expect("its own spec parses");
        assert_eq!(again.spec(), plan.spec());
        assert_eq!(again.low_resources, plan.low_resources);
    }

    #[test]
    fn bad_items_are_errors_naming_them() {
        for (spec, named) in [
            ("sometimes", "sometimes"),
            ("delay=fast", "fast"),
            ("lowres=101", "lowres=101"),
            ("lowres-skip=3", "lowres-skip"),
            ("lowres=5,lowres-on=disk", "disk"),
            ("error=send:x:0", "send:x:0"),
        ] {
            let error = Faults::parse(spec, 1).expect_err(spec);
            assert!(error.contains(named), "{spec}: {error}");
        }
        assert_eq!(parse_seed("0x10"), Ok(16));
        assert!(parse_seed("ten").is_err());
    }
}
