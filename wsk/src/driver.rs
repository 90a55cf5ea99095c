//! Driver lifetime: the registered WSK client in a `static` ([`Service`]), the entry point
//! ([`driver_entry!`](crate::driver_entry)) and start failures as `NTSTATUS`
//! ([`Failure`], [`FailureStatus`]).
//!
//! The unload order a driver must keep, every runner shut down (so every task, and every
//! `&'static WskClient` a task held, is gone) and only then the client deregistered, is
//! [`Service::stop`]'s job, and the entry macro calls it on every unload and every failed
//! start: a driver cannot forget it or do it the wrong way round.

use core::fmt::{self, Write as _};

use wsk_executor::Runner;
use wsk_net::{Driver, ErrorKind, WskClient};
use wsk_sys::{
    DRIVER_OBJECT, DRIVER_UNLOAD, KeGetCurrentIrql, NTSTATUS, PASSIVE_LEVEL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL, UNICODE_STRING, kprint,
};

use crate::settings::{self, Parameters};
use crate::slot::{FillError, Slot};

/// A driver's registered WSK client and the runners whose tasks may use it, in a `static`.
///
/// [`start`](Self::start) registers the client (in `DriverEntry`) and hands out a
/// `&'static WskClient` for tasks; [`stop`](Self::stop) shuts every runner down, which drops
/// every task and so every reference to the client, and only then deregisters it (waiting for
/// the sockets to close). [`start`](Self::start) works again after `stop` (a driver loaded a
/// second time in one host-kernel process).
///
/// The reference belongs to the service's runners: give it to tasks spawned on the runners
/// named in [`new`](Self::new), or use it within the start function; a task on a runner the
/// service does not know could outlive the deregistration.
///
/// ```
/// use wsk::{Budget, Runner, Service};
///
/// static RUNNER: Runner = Runner::new(Budget::DEFAULT);
/// static SERVICE: Service = Service::new("mydriver", &[&RUNNER]);
/// # fn main() {}
/// ```
///
/// # IRQL
/// [`start`](Self::start) and [`stop`](Self::stop): `PASSIVE_LEVEL`;
/// [`client`](Self::client) and the rest: any.
pub struct Service {
    name: &'static str,
    runners: &'static [&'static Runner],
    client: Slot<WskClient>,
}

impl Service {
    wsk_executor::raw::sync::loom_const_fn! {
        /// A stopped service named `name` (the prefix of its log lines) whose tasks run on
        /// `runners`. A constant initialiser, for a `static`.
        ///
        /// # IRQL
        /// Any.
        #[must_use]
        pub fn new(name: &'static str, runners: &'static [&'static Runner]) -> Self {
            Self {
                name,
                runners,
                client: Slot::new(),
            }
        }
    }

    /// The name given to [`new`](Self::new).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Registers the WSK client for `driver` and returns it, for the tasks this service's
    /// runners run. The runners are the caller's to start (with the kind it wants).
    ///
    /// # Errors
    /// [`ServiceError::AlreadyStarted`] while started (or stopping);
    /// [`ServiceError::Register`] when registration fails (nothing stays registered, and
    /// the service can be started again).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (registration waits for the provider).
    pub fn start(&'static self, driver: Driver) -> Result<&'static WskClient, ServiceError> {
        match self.client.fill(|| WskClient::register(driver)) {
            Ok(client) => Ok(client),
            Err(FillError::Occupied) => Err(ServiceError::AlreadyStarted),
            Err(FillError::Failed(e)) => Err(ServiceError::Register(e)),
        }
    }

    /// The client, between [`start`](Self::start) and [`stop`](Self::stop); `None` before,
    /// after and while stopping.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn client(&'static self) -> Option<&'static WskClient> {
        self.client.get()
    }

    /// Stops the service, in the only safe order: no new [`client`](Self::client) callers,
    /// every runner shut down (its tasks dropped, closing their sockets), then the client
    /// deregistered, waiting for every socket to close. Logs `<name>: deregistered`.
    /// A stopped (or never started) service returns at once; runners that never started
    /// and hold no task are left as they are (startable).
    ///
    /// It must not be called from a task of one of the runners (shutdown waits for them).
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`; above it nothing is done and the report says so.
    pub fn stop(&'static self) -> StopReport {
        let mut report = StopReport::default();
        if KeGetCurrentIrql() != PASSIVE_LEVEL {
            report.refused = Some(wsk_net::Error::new(
                ErrorKind::InvalidState,
                "Service::stop needs PASSIVE_LEVEL",
            ));
            return report;
        }
        let closed = self.client.close();
        for runner in self.runners {
            // merge: with restartable runners (executor/src/runner.rs) every runner can be
            // shut down unconditionally; today a runner shut down stays down, so one that
            // never started and holds no task is spared to keep a failed start retryable.
            if runner.is_running() || runner.live_tasks() > 0 {
                runner.shutdown();
            }
        }
        report.tasks_left = self.runners.iter().map(|r| r.live_tasks()).sum();
        if !closed {
            return report;
        }
        if report.tasks_left > 0 {
            // A task that was not dropped may still hold the client: keeping it registered
            // (leaked) is the only memory-safe choice. The report says so.
            kprint!(
                "{}: {} tasks outlived their runners' shutdown; the WSK client stays registered\n",
                self.name,
                report.tasks_left
            );
            return report;
        }
        // SAFETY: every runner of this service is shut down with no task left, and the
        // reference is only for their tasks (see the type's docs); the start function that
        // also had it has returned. So no reference from `start` or `client` is alive.
        let Some(client) = (unsafe { self.client.take() }) else {
            return report;
        };
        match client.deregister() {
            Ok(()) => {
                report.deregistered = true;
                kprint!("{}: deregistered\n", self.name);
            }
            // At PASSIVE_LEVEL (checked above) deregistration is not refused; should it be,
            // dropping the client retries it.
            Err(refused) => {
                report.refused = Some(refused.error());
                drop(refused.into_client());
            }
        }
        report
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("runners", &self.runners.len())
            .field("started", &self.client.get().is_some())
            .finish()
    }
}

/// Why [`Service::start`] failed.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service is started already (or still stopping).
    AlreadyStarted,
    /// WSK registration failed.
    Register(wsk_net::Error),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyStarted => f.write_str("the service is already started"),
            Self::Register(e) => write!(f, "WSK registration failed: {e}"),
        }
    }
}

impl core::error::Error for ServiceError {}

/// What [`Service::stop`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopReport {
    /// Tasks of the service's runners not dropped by their shutdown (0 unless a runner did
    /// not quiesce; the client then stays registered).
    pub tasks_left: usize,
    /// True when this call deregistered the client.
    pub deregistered: bool,
    /// Set when nothing was done because the call was above `PASSIVE_LEVEL`.
    pub refused: Option<wsk_net::Error>,
}

impl StopReport {
    /// No task left and nothing refused.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.tasks_left == 0 && self.refused.is_none()
    }
}

impl fmt::Display for StopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.refused, self.tasks_left) {
            (Some(e), _) => write!(f, "stop refused: {e}"),
            (None, 0) => f.write_str("no tasks left"),
            (None, n) => write!(f, "{n} tasks left"),
        }
    }
}

/// An error that fails `DriverEntry`: the `NTSTATUS` to return, and a message for the log.
///
/// Implemented for the library's errors; implement it for a driver's own to return them from
/// the start function.
///
/// # IRQL
/// Any.
pub trait FailureStatus: fmt::Display {
    /// The status `DriverEntry` returns.
    fn status(&self) -> NTSTATUS;
}

impl FailureStatus for wsk_net::Error {
    /// The kernel's own status where it has one (`STATUS_ADDRESS_ALREADY_EXISTS` for a port in
    /// use); an allocation the library could not make is `STATUS_INSUFFICIENT_RESOURCES`.
    fn status(&self) -> NTSTATUS {
        wsk_net::Error::status(self).unwrap_or(match self.kind() {
            ErrorKind::NoResources => STATUS_INSUFFICIENT_RESOURCES,
            ErrorKind::InvalidInput => STATUS_INVALID_PARAMETER,
            ErrorKind::InvalidState => STATUS_INVALID_DEVICE_STATE,
            _ => STATUS_UNSUCCESSFUL,
        })
    }
}

impl FailureStatus for ServiceError {
    fn status(&self) -> NTSTATUS {
        match self {
            Self::AlreadyStarted => STATUS_INVALID_DEVICE_STATE,
            Self::Register(e) => FailureStatus::status(e),
        }
    }
}

impl FailureStatus for wsk_executor::StartError {
    fn status(&self) -> NTSTATUS {
        match self {
            Self::Thread(status) => *status,
            Self::AlreadyStarted => STATUS_INVALID_DEVICE_STATE,
            // The executor's error enum may grow; a new reason is still a failed start.
            _ => STATUS_UNSUCCESSFUL,
        }
    }
}

impl FailureStatus for wsk_executor::SpawnError {
    fn status(&self) -> NTSTATUS {
        STATUS_INSUFFICIENT_RESOURCES
    }
}

impl FailureStatus for settings::Error {
    fn status(&self) -> NTSTATUS {
        settings::Error::status(self)
    }
}

/// The longest failure message kept, in bytes (longer ones are cut, ending in `...`): small
/// enough that `Result<(), Failure>` stays a cheap return value (under 128 bytes).
pub const FAILURE_MESSAGE_LEN: usize = 118;

/// A start function's failure: the status `DriverEntry` returns and the message the entry
/// macro logs (`<name>: not started: <message>`). Every [`FailureStatus`] converts into it,
/// so `?` works on the library's errors (and a driver's own) alike; no allocation.
///
/// ```
/// use wsk::driver::Failure;
/// let failure = Failure::new(wsk::sys::STATUS_INVALID_PARAMETER, format_args!("Port {} is taken", 80));
/// assert_eq!(failure.status(), wsk::sys::STATUS_INVALID_PARAMETER);
/// assert_eq!(failure.to_string(), "Port 80 is taken");
/// let long = Failure::new(-1, format_args!("{:200}", "x"));
/// assert_eq!(long.to_string().len(), wsk::driver::FAILURE_MESSAGE_LEN);
/// assert!(long.to_string().ends_with("..."));
/// ```
///
/// # IRQL
/// Any.
#[derive(Clone)]
pub struct Failure {
    status: NTSTATUS,
    len: u8,
    message: [u8; FAILURE_MESSAGE_LEN],
}

const _: () = assert!(FAILURE_MESSAGE_LEN <= u8::MAX as usize);

impl Failure {
    /// A failure with this status and message (cut to [`FAILURE_MESSAGE_LEN`] bytes).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn new(status: NTSTATUS, message: fmt::Arguments<'_>) -> Self {
        let mut writer = Truncating {
            bytes: [0; FAILURE_MESSAGE_LEN],
            len: 0,
            cut: false,
        };
        let _ = writer.write_fmt(message);
        if writer.cut {
            // Room for "...": drop whole characters from the end.
            while writer.len > FAILURE_MESSAGE_LEN - 3 {
                writer.len -= 1;
                while writer.len > 0 && (writer.bytes[writer.len] & 0xC0) == 0x80 {
                    writer.len -= 1;
                }
            }
            writer.bytes[writer.len..writer.len + 3].copy_from_slice(b"...");
            writer.len += 3;
        }
        Self {
            status,
            len: u8::try_from(writer.len).unwrap_or(u8::MAX),
            message: writer.bytes,
        }
    }

    /// The status `DriverEntry` returns (never `STATUS_SUCCESS`: that becomes
    /// `STATUS_UNSUCCESSFUL`).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn status(&self) -> NTSTATUS {
        if self.status == STATUS_SUCCESS {
            STATUS_UNSUCCESSFUL
        } else {
            self.status
        }
    }

    /// The message.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn message(&self) -> &str {
        let bytes = &self.message[..usize::from(self.len)];
        // Only whole characters are ever written; the fallback is for the impossible case.
        core::str::from_utf8(bytes).unwrap_or("(a failure message that is not UTF-8)")
    }
}

impl<E: FailureStatus> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::new(error.status(), format_args!("{error}"))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({:#010x}: {})", self.status, self.message())
    }
}

/// A `fmt::Write` into a fixed buffer that keeps what fits (whole characters) and notes the
/// cut.
struct Truncating {
    bytes: [u8; FAILURE_MESSAGE_LEN],
    len: usize,
    cut: bool,
}

impl fmt::Write for Truncating {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for c in text.chars() {
            let end = self.len + c.len_utf8();
            let Some(room) = self.bytes.get_mut(self.len..end) else {
                self.cut = true;
                return Ok(());
            };
            c.encode_utf8(room);
            self.len = end;
        }
        Ok(())
    }
}

/// What `DriverEntry` received, for the start function: the driver and its registry key.
///
/// # IRQL
/// `PASSIVE_LEVEL` (it exists only during `DriverEntry`).
pub struct Entry<'a> {
    driver: Driver,
    registry_path: &'a UNICODE_STRING,
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("driver", &self.driver)
            .field("registry_path_units", &self.registry_path().len())
            .finish()
    }
}

impl<'a> Entry<'a> {
    /// The driver, for [`Service::start`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The driver's service key path (`\Registry\Machine\System\CurrentControlSet\Services\<name>`)
    /// in UTF-16.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn registry_path(&self) -> &'a [u16] {
        // SAFETY: an Entry is only made by `enter`, whose caller (the kernel) passes a
        // registry path whose buffer holds `Length` bytes for all of DriverEntry, which
        // outlives 'a.
        unsafe { self.registry_path.as_wide() }
    }

    /// The service's `Parameters` key; a missing key reads as one without values (so every
    /// setting takes its default).
    ///
    /// # Errors
    /// See [`Parameters::open_or_empty`].
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL`.
    pub fn parameters(&self) -> Result<Parameters, settings::Error> {
        Parameters::open_or_empty(self)
    }
}

/// `DriverEntry`'s body, as [`driver_entry!`](crate::driver_entry) writes it: runs `start`;
/// on success sets `unload` as the unload routine, on failure logs
/// `<name>: not started: <why>`, stops the service (undoing what `start` did) and returns
/// the failure's status.
///
/// # Safety
/// `object` and `registry_path` are what the kernel passed to `DriverEntry`, called once.
#[doc(hidden)]
pub unsafe fn enter<E: Into<Failure>>(
    object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
    service: &'static Service,
    unload: extern "system" fn(*mut DRIVER_OBJECT),
    start: impl FnOnce(&Entry<'_>) -> Result<(), E>,
) -> NTSTATUS {
    // SAFETY: the kernel's own driver object, valid until DriverUnload returns (forwarded).
    let Some(driver) = (unsafe { Driver::from_raw(object) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the kernel's registry path, valid during DriverEntry (forwarded); null is
    // refused.
    let Some(registry_path) = (unsafe { registry_path.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let entry = Entry {
        driver,
        registry_path,
    };
    match start(&entry) {
        Ok(()) => {
            let unload: DRIVER_UNLOAD = unload;
            // SAFETY: the driver object is ours to fill in during DriverEntry.
            unsafe { (*object).DriverUnload = Some(unload) };
            STATUS_SUCCESS
        }
        Err(e) => {
            let failure = e.into();
            kprint!("{}: not started: {failure}\n", service.name());
            let _ = service.stop();
            failure.status()
        }
    }
}

/// `DriverUnload`'s body, as [`driver_entry!`](crate::driver_entry) writes it: the driver's
/// `stop`, then [`Service::stop`] (which does nothing if `stop` already stopped it).
#[doc(hidden)]
pub fn unload(service: &'static Service, stop: impl FnOnce()) {
    stop();
    let _ = service.stop();
}

/// Writes a driver's `DriverEntry` and `DriverUnload`, and on Windows its
/// `#[panic_handler]` (which stops the machine with `KeBugCheckEx`, the panic's location in
/// the parameters, as `wsk_sys::bugcheck_on_panic` does). The driver writes two safe
/// functions:
///
/// - `start: fn(&wsk::driver::Entry<'_>) -> Result<(), E>` with `E: Into<Failure>` (any
///   library error, or [`Failure`]): runs in `DriverEntry` at `PASSIVE_LEVEL`. An error
///   fails the load with its status, logged as `<name>: not started: <why>`, and the
///   service is stopped (runners shut down, client deregistered).
/// - `stop: fn()`: runs in `DriverUnload` at `PASSIVE_LEVEL`, before the macro stops the
///   service; it may stop it itself (to log its report), the macro's stop then does nothing.
///
/// ```
/// use wsk::driver::{Entry, Failure};
/// use wsk::{Budget, Runner, RunnerKind, Service};
///
/// static RUNNER: Runner = Runner::new(Budget::DEFAULT);
/// static SERVICE: Service = Service::new("mydriver", &[&RUNNER]);
///
/// wsk::driver_entry!(service: SERVICE, start: start, stop: stop);
///
/// fn start(entry: &Entry<'_>) -> Result<(), Failure> {
///     let _client = SERVICE.start(entry.driver())?;
///     RUNNER.start(RunnerKind::Dpc)?;
///     Ok(())
/// }
///
/// fn stop() {
///     wsk::kprint!("mydriver: unloaded: {}\n", SERVICE.stop());
/// }
/// # fn main() {}
/// ```
///
/// # IRQL
/// The functions it writes are called by the kernel at `PASSIVE_LEVEL`.
#[macro_export]
macro_rules! driver_entry {
    (service: $service:path, start: $start:path, stop: $stop:path $(,)?) => {
        /// The driver's entry point, written by `wsk::driver_entry!`.
        ///
        /// # Safety
        /// Called once by the kernel with its driver object and registry path.
        ///
        /// # IRQL
        /// `PASSIVE_LEVEL`.
        #[unsafe(no_mangle)]
        pub unsafe extern "system" fn DriverEntry(
            driver: *mut $crate::sys::DRIVER_OBJECT,
            registry_path: *mut $crate::sys::UNICODE_STRING,
        ) -> $crate::sys::NTSTATUS {
            extern "system" fn driver_unload(_driver: *mut $crate::sys::DRIVER_OBJECT) {
                $crate::driver::unload(&$service, $stop);
            }
            // SAFETY: the kernel calls DriverEntry once, with its own driver object and the
            // driver's registry path, valid for the call.
            unsafe {
                $crate::driver::enter(driver, registry_path, &$service, driver_unload, $start)
            }
        }

        /// A panic in a driver is a bug: print it and stop the machine (`KeBugCheckEx`).
        #[cfg(target_os = "windows")]
        #[panic_handler]
        fn panic(info: &::core::panic::PanicInfo<'_>) -> ! {
            $crate::sys::bugcheck_on_panic(info)
        }
    };
}
