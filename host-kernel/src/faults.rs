//! Fault injection for the host kernel's WSK provider, deterministic from a seed: inline or
//! deferred completion, reordering of completions across sockets, delays, and error statuses
//! on chosen operations. A test builds a [`Faults`] into the kernel's `Config` at boot.

use std::time::Duration;
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
    /// Every `WskCloseSocket` completes this long after it was called (deferred), as a close
    /// whose transmission takes its time; `None`: no extra delay.
    pub close_delay: Option<Duration>,
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
