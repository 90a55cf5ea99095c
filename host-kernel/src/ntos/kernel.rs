//! The host kernel's public face, for tests and host programs: boot a machine, run code on its
//! threads, load and unload drivers, read the verifier's records and the debug log.
//!
//! ```no_run
//! use wsk_host::{Config, Kernel, Registry, RegValue};
//! # unsafe extern "system" fn driver_entry(_: *mut wsk_sys::DRIVER_OBJECT, _: *mut wsk_sys::UNICODE_STRING) -> wsk_sys::NTSTATUS { 0 }
//! let kernel = Kernel::boot(Config::default().with_cpus(4));
//! let registry = Registry::new().with("Parameters", "Port", RegValue::Dword(7007));
//! let driver = kernel.load_driver(driver_entry, "wskecho", registry).unwrap();
//! let report = kernel.unload(driver);
//! assert!(report.is_clean(), "{report}");
//! ```

use core::cell::UnsafeCell;
use std::boxed::Box;
use std::fmt;
use std::format;
use std::string::{String, ToString};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use std::vec::Vec;

use super::machine::{self, Machine, Signal, lock, wait};
use super::verifier::{self, Bugcheck};
use super::{device, dpc, irp, mdl, object, pool, timer};
use crate::faults::Faults;
use crate::{
    DRIVER_INITIALIZE, DRIVER_OBJECT, IO_TYPE_DRIVER, NT_SUCCESS, NTSTATUS, UNICODE_STRING,
};

pub use super::registry::{RegValue, Registry};

/// The network the WSK provider stands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provider {
    /// The host's real sockets, driven by a reactor thread on `mio`: real TCP/IP, real peers
    /// outside the kernel.
    HostSockets,
    /// The in-memory network: loopback TCP and UDP between the sockets of this kernel only,
    /// with the same WSK semantics, completions and fault plans. Runs where host sockets
    /// cannot (Miri).
    Memory,
}

impl Default for Provider {
    fn default() -> Self {
        if cfg!(miri) {
            Self::Memory
        } else {
            Self::HostSockets
        }
    }
}

/// How to build the machine.
#[derive(Clone, Debug)]
pub struct Config {
    /// Emulated processors. Default: the host's cores, at least 2.
    pub cpus: usize,
    /// Fault plan of the WSK provider.
    pub faults: Faults,
    /// The network the WSK provider stands on. Default: the host's sockets, the in-memory
    /// network under Miri (which cannot run sockets).
    pub provider: Provider,
    /// Longest a DPC routine may run before `DPC_WATCHDOG_VIOLATION` is recorded (a record,
    /// not a stop). Default: 2 s.
    pub dpc_watchdog: Duration,
    /// Fault injection: how long every completion routine stays counted as running driver
    /// code after it returned (the instructions a routine still executes after it signalled
    /// whatever `DriverUnload` waits for). `None` (default): no delay.
    pub late_callback_return: Option<Duration>,
    /// The clock tick: how often the interrupt time (`KeQueryInterruptTime`) advances, and
    /// the granularity timers and timed waits expire on. Default: 15.625 ms, Windows' default
    /// (64 Hz); Windows goes down to 0.5 ms when a program asks for a finer timer
    /// resolution. The precise clock (`KeQueryPerformanceCounter`) is unaffected. The clock
    /// is shared by the process: booting a kernel sets its tick.
    pub clock_tick: Duration,
    /// The cumulative DPC watchdog: longest a processor may run DPCs back to back, its DPC
    /// queue never draining (so it never returns below `DISPATCH_LEVEL`), before
    /// `DPC_WATCHDOG_VIOLATION` is recorded (a record, not a stop; Windows' limit is about
    /// 120 s and stops the machine). `KeShouldYieldProcessor` turns TRUE at half of it.
    /// Default: 5 s, so that a test catches a DPC that never lets its processor go.
    pub dpc_cumulative_watchdog: Duration,
    /// Fault injection: how long each processor (by index) waits between dequeuing a DPC and
    /// calling its routine (an interrupt taken there on Windows). Default: none.
    pub dpc_dispatch_delay: Vec<Duration>,
    /// Whether `MmGetSystemRoutineAddress` finds `KeShouldYieldProcessor` (Windows 10 2004 and
    /// later). Default: true; false plays an older kernel.
    pub ke_should_yield_processor: bool,
    /// Names the WSK provider's `WskGetAddressInfo` resolves itself, to these addresses in
    /// this order, before asking the host's resolver (the machine's own hosts file): a test
    /// can have a name resolve to several addresses in a known order. Default: none.
    pub hosts: Vec<(String, Vec<std::net::IpAddr>)>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            faults: Faults::default(),
            provider: Provider::default(),
            dpc_watchdog: Duration::from_secs(2),
            late_callback_return: None,
            clock_tick: crate::clock::DEFAULT_TICK,
            dpc_cumulative_watchdog: Duration::from_secs(5),
            dpc_dispatch_delay: Vec::new(),
            ke_should_yield_processor: true,
            hosts: Vec::new(),
        }
    }
}

impl Config {
    /// Sets the number of emulated processors (1 to 64).
    #[must_use]
    pub fn with_cpus(mut self, cpus: usize) -> Self {
        self.cpus = cpus;
        self
    }

    /// Makes `name` resolve to `addresses`, in this order (see [`Config::hosts`]).
    #[must_use]
    pub fn with_host(mut self, name: &str, addresses: &[std::net::IpAddr]) -> Self {
        self.hosts.push((name.into(), addresses.to_vec()));
        self
    }

    /// Sets the WSK provider's fault plan.
    #[must_use]
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Sets the network the WSK provider stands on.
    #[must_use]
    pub fn with_provider(mut self, provider: Provider) -> Self {
        self.provider = provider;
        self
    }

    /// Keeps every completion routine counted as running driver code for `delay` after it
    /// returned, so that an unload that does not wait for its routines to *return* (only for
    /// what they signal) is caught by `Kernel::unload`.
    #[must_use]
    pub fn with_late_callback_return(mut self, delay: Duration) -> Self {
        self.late_callback_return = Some(delay);
        self
    }

    /// Sets the clock tick (see [`Config::clock_tick`]).
    #[must_use]
    pub fn with_clock_tick(mut self, tick: Duration) -> Self {
        self.clock_tick = tick;
        self
    }

    /// Sets the DPC watchdog budget.
    #[must_use]
    pub fn with_dpc_watchdog(mut self, budget: Duration) -> Self {
        self.dpc_watchdog = budget;
        self
    }

    /// Sets the cumulative DPC watchdog's limit (see [`Config::dpc_cumulative_watchdog`]).
    #[must_use]
    pub fn with_dpc_cumulative_watchdog(mut self, limit: Duration) -> Self {
        self.dpc_cumulative_watchdog = limit;
        self
    }

    /// Delays every DPC on `processor` between its dequeuing and its routine (see
    /// [`Config::dpc_dispatch_delay`]).
    #[must_use]
    pub fn with_dpc_dispatch_delay(mut self, processor: usize, delay: Duration) -> Self {
        if self.dpc_dispatch_delay.len() <= processor {
            self.dpc_dispatch_delay
                .resize(processor + 1, Duration::ZERO);
        }
        self.dpc_dispatch_delay[processor] = delay;
        self
    }

    /// Whether `KeShouldYieldProcessor` is exported (see
    /// [`Config::ke_should_yield_processor`]).
    #[must_use]
    pub fn with_ke_should_yield_processor(mut self, exported: bool) -> Self {
        self.ke_should_yield_processor = exported;
        self
    }
}

/// One kernel per process: set while a kernel runs.
static BOOTED: Mutex<bool> = Mutex::new(false);
static SHUT_DOWN: Signal = Signal::new();

/// A running host kernel: emulated processors, the timer thread, the WSK provider. Only one
/// runs per process at a time: `boot` waits for the previous one to be dropped, so tests in
/// one binary serialise. Dropping it stops everything; dropping it with bugchecks nobody took
/// (see [`Kernel::take_bugchecks`]) panics, so no verifier finding goes unnoticed.
pub struct Kernel {
    config: Config,
    machine: Arc<Machine>,
    threads: Vec<JoinHandle<()>>,
}

/// A loaded driver: its `DRIVER_OBJECT` and the strings it points to.
pub struct Driver {
    name: String,
    object: Box<UnsafeCell<DRIVER_OBJECT>>,
    // The UNICODE_STRINGs point into these buffers.
    _name_buffer: Vec<u16>,
    _path_buffer: Vec<u16>,
    registry_path: Box<UnsafeCell<UNICODE_STRING>>,
}

// SAFETY: the driver object and strings are only touched by the kernel on the loading and
// unloading threads, one at a time, and by the driver per its own rules.
unsafe impl Send for Driver {}
// SAFETY: shared references only read the name and hand out the object's address.
unsafe impl Sync for Driver {}

impl Driver {
    /// A fresh `DRIVER_OBJECT` named `\Driver\<name>` with registry path `path`.
    fn new(name: &str, path: &str) -> Self {
        let name_buffer: Vec<u16> = format!("\\Driver\\{name}").encode_utf16().collect();
        let path_buffer: Vec<u16> = path.encode_utf16().collect();
        let zeroed = Box::<UnsafeCell<DRIVER_OBJECT>>::new_zeroed();
        // SAFETY: every DRIVER_OBJECT field is an integer, a raw pointer or an Option of a
        // function pointer: all-zero is a valid value for each.
        let object = unsafe { zeroed.assume_init() };
        let driver_name = UNICODE_STRING::from_wide(&name_buffer);
        let registry_path = UNICODE_STRING::from_wide(&path_buffer);
        let driver = Driver {
            name: name.to_string(),
            registry_path: Box::new(UnsafeCell::new(registry_path)),
            object,
            _name_buffer: name_buffer,
            _path_buffer: path_buffer,
        };
        // SAFETY: the object is ours, not yet shared.
        let object = unsafe { &mut *driver.object.get() };
        object.Type = IO_TYPE_DRIVER;
        object.Size = i16::try_from(size_of::<DRIVER_OBJECT>()).unwrap_or(i16::MAX);
        object.DriverName = driver_name;
        driver
    }

    /// The driver's name, as given to `load_driver`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its `DRIVER_OBJECT`.
    #[must_use]
    pub fn object(&self) -> *mut DRIVER_OBJECT {
        self.object.get()
    }

    /// The registry path `DriverEntry` received.
    #[must_use]
    pub fn registry_path(&self) -> String {
        // SAFETY: the string is ours, written once at creation.
        let path = unsafe { &*self.registry_path.get() };
        // SAFETY: it points into our own buffer, `Length` bytes.
        String::from_utf16_lossy(unsafe { path.as_wide() })
    }
}

/// What the verifier found at unload (or at [`Kernel::check_leaks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnloadReport {
    leaks: Vec<String>,
}

impl UnloadReport {
    /// True when nothing leaked.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.leaks.is_empty()
    }

    /// One line per leak: IRPs, pool by tag, MDLs, armed timers, queued DPCs, handles,
    /// running threads, and the WSK provider's open registrations and sockets.
    #[must_use]
    pub fn leaks(&self) -> &[String] {
        &self.leaks
    }
}

impl fmt::Display for UnloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.leaks.is_empty() {
            return f.write_str("no leaks");
        }
        write!(f, "{} leak(s):", self.leaks.len())?;
        for leak in &self.leaks {
            write!(f, "\n  - {leak}")?;
        }
        Ok(())
    }
}

/// Kernel allocations since boot, from [`Kernel::allocation_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocationCounts {
    /// `ExAllocatePoolWithTag` / `ExAllocatePool2` calls.
    pub pool: u64,
    /// `IoAllocateIrp` calls.
    pub irps: u64,
    /// `IoAllocateMdl` calls.
    pub mdls: u64,
}

/// Runs `f` on a fresh system thread at `PASSIVE_LEVEL` and returns its result; a panic in `f`
/// (a bugcheck, say) is resumed on the caller's thread.
///
/// # Panics
/// With no kernel booted (a bugcheck), or when `f` panics or calls `PsTerminateSystemThread`.
pub fn on_kernel_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let machine = machine::current("on_kernel_thread").to_arc();
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("kernel-thread".into())
            .spawn_scoped(scope, || {
                machine::adopt(machine);
                object::system_thread_body(f)
            })
            .expect("spawn a kernel thread")
            .join()
    });
    match outcome {
        Ok(Ok(Some(value))) => value,
        Ok(Ok(None)) => panic!("the kernel thread ended with PsTerminateSystemThread"),
        Ok(Err(payload)) | Err(payload) => std::panic::resume_unwind(payload),
    }
}

impl Kernel {
    /// Boots a machine: waits until no other kernel runs in the process, then starts the
    /// processors, the timer thread and the WSK provider (with `config.faults`).
    ///
    /// # Panics
    /// If `config.cpus` is not between 1 and 64.
    #[must_use]
    pub fn boot(config: Config) -> Kernel {
        assert!(
            (1..=64).contains(&config.cpus),
            "host kernel: {} processors requested (1 to 64 supported)",
            config.cpus
        );
        let mut booted = lock(&BOOTED);
        while *booted {
            booted = wait(&SHUT_DOWN, booted);
        }
        *booted = true;
        drop(booted);
        crate::clock::set_tick(config.clock_tick);
        let mut machine = Machine::new(config.cpus, config.dpc_watchdog);
        crate::faults::arm(&machine.low_resources, &config.faults);
        machine.late_callback_return = config.late_callback_return;
        machine.dpcs.configure(
            config.dpc_cumulative_watchdog,
            config.dpc_dispatch_delay.clone(),
            config.ke_should_yield_processor,
        );
        let machine = Arc::new(machine);
        machine::install(Some(Arc::clone(&machine)));
        let mut threads = dpc::start_cpus(&machine);
        threads.push(timer::start(&machine));
        crate::wsk::resolve::set_hosts(&config.hosts);
        crate::wsk::boot(&config.faults, config.provider);
        Kernel {
            config,
            machine,
            threads,
        }
    }

    /// The configuration the kernel booted with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The number of emulated processors.
    #[must_use]
    pub fn cpus(&self) -> usize {
        self.machine.cpus
    }

    /// Runs `f` on a fresh system thread at `PASSIVE_LEVEL` and returns its result.
    ///
    /// # Panics
    /// When `f` panics (bugchecks included): the panic propagates to the caller.
    pub fn on_kernel_thread<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        on_kernel_thread(f)
    }

    /// Loads a driver: builds its `DRIVER_OBJECT` (`\Driver\<name>`), mounts `registry` under
    /// `\Registry\Machine\System\CurrentControlSet\Services\<name>`, and calls `entry` at
    /// `PASSIVE_LEVEL` on a system thread. Its failure status comes back as `Err`.
    ///
    /// # Errors
    /// The status `DriverEntry` returned, if it is not a success.
    ///
    /// # Panics
    /// If `DriverEntry` panics (a bugcheck, say): the panic is resumed here.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the registry is handed over to the kernel, as a host program does"
    )]
    pub fn load_driver(
        &self,
        entry: DRIVER_INITIALIZE,
        name: &str,
        registry: Registry,
    ) -> Result<Driver, NTSTATUS> {
        let path = format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{name}");
        lock(&self.machine.registry).mount(&path, &registry);
        let driver = Driver::new(name, &path);
        // SAFETY: the object is ours, not yet shared.
        unsafe { (*driver.object.get()).DriverInit = Some(entry) };
        let object = driver.object.get() as usize;
        let registry_path = driver.registry_path.get() as usize;
        let status = on_kernel_thread(move || {
            // SAFETY: DriverEntry with its driver object and registry path, both live until
            // the Driver is dropped, at PASSIVE_LEVEL on a system thread.
            verifier::in_callback(|| unsafe {
                entry(
                    core::ptr::with_exposed_provenance_mut(object),
                    core::ptr::with_exposed_provenance_mut(registry_path),
                )
            })
        });
        if NT_SUCCESS(status) {
            Ok(driver)
        } else {
            // A failed DriverEntry is unloaded at once, without DriverUnload: it must have
            // undone everything itself.
            device::wait_released(&self.machine, object, Duration::from_secs(10));
            self.check_unloaded(name);
            Err(status)
        }
    }

    /// A driver object for code that uses the kernel outside a `DriverEntry`, as tests that
    /// drive `wsk-net` directly do (`WskClient::register` needs the driver's object): no entry
    /// point is called and nothing is mounted in the registry. Not unloaded: drop it after
    /// everything registered with it is gone.
    #[must_use]
    pub fn create_driver_object(&self, name: &str) -> Driver {
        Driver::new(
            name,
            &format!("\\Registry\\Machine\\System\\CurrentControlSet\\Services\\{name}"),
        )
    }

    /// Unloads a driver: calls its `DriverUnload` at `PASSIVE_LEVEL`, waits for the processors
    /// to drain (see [`Kernel::check_leaks`]), then reports what is left (see [`UnloadReport`]).
    ///
    /// # Panics
    /// If `DriverUnload` panics (a bugcheck, say): the panic is resumed here.
    #[must_use]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "an unloaded driver is gone: the handle is consumed"
    )]
    pub fn unload(&self, driver: Driver) -> UnloadReport {
        let object = driver.object.get() as usize;
        // SAFETY: the driver object is live; DriverEntry has returned.
        let unload = unsafe { (*driver.object.get()).DriverUnload };
        let mut report = UnloadReport::default();
        match unload {
            Some(unload) => on_kernel_thread(move || {
                // SAFETY: DriverUnload with its own driver object, at PASSIVE_LEVEL.
                verifier::in_callback(|| unsafe {
                    unload(core::ptr::with_exposed_provenance_mut(object));
                });
            }),
            None => report.leaks.push(format!(
                "driver {} set no DriverUnload: it cannot unload",
                driver.name
            )),
        }
        // The I/O manager unmaps the image once the driver's device objects are released:
        // references taken by IoSetCompletionRoutineEx keep it until those routines returned.
        report.leaks.extend(device::wait_released(
            &self.machine,
            object,
            Duration::from_secs(10),
        ));
        self.check_unloaded(&driver.name);
        report.leaks.extend(self.check_leaks().leaks);
        report
    }

    /// After `DriverUnload` returned and the image is gone: no code of the driver may run and
    /// nothing it issued may be pending, or Windows bugchecks
    /// `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS` (0xCE) when that code or
    /// completion runs. Bug check 0xCE:
    /// <https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xce--driver-unloaded-without-cancelling-pending-operations>.
    /// Recorded (not raised): the test examines it with `take_bugchecks`.
    fn check_unloaded(&self, name: &str) {
        const NAME: &str = "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS";
        let running = self
            .machine
            .driver_code
            .load(core::sync::atomic::Ordering::Acquire);
        if running > 0 {
            verifier::record(
                NAME,
                format!(
                    "DriverUnload of {name} returned while {running} callback(s) of the driver \
                     were still running (a completion routine, DPC or thread still executing \
                     driver code after it signalled unload)"
                ),
            );
        }
        let pending = irp::pending(&lock(&self.machine.irps));
        if !pending.is_empty() {
            verifier::record(
                NAME,
                format!("DriverUnload of {name} returned with IRP(s) still pending: {pending:#x?}"),
            );
        }
        let registrations = crate::wsk::registrations_left();
        if !registrations.is_empty() {
            verifier::record(
                NAME,
                format!(
                    "DriverUnload of {name} returned with its WSK client still registered \
                     (the provider would call into unloaded code): {}",
                    registrations.join("; ")
                ),
            );
        }
    }

    /// Starts (`Some`) or stops (`None`) this kernel's low-resources simulation now, with
    /// `seed` (as `faults::set_low_resources`, for this kernel whichever thread calls it).
    pub fn set_low_resources(&self, plan: Option<crate::faults::LowResources>, seed: u64) {
        self.machine.low_resources.set(plan, seed);
    }

    /// What this kernel's low-resources simulation has failed so far (all zero without one).
    #[must_use]
    pub fn injected_failures(&self) -> crate::faults::InjectedFailures {
        self.machine.low_resources.injected()
    }

    /// How many pool blocks, IRPs and MDLs have been allocated since boot (freed or not): two
    /// readings around a steady-state loop show whether it allocates per operation.
    #[must_use]
    pub fn allocation_counts(&self) -> AllocationCounts {
        let counters = &self.machine.allocations;
        AllocationCounts {
            pool: counters.pool.load(core::sync::atomic::Ordering::Relaxed),
            irps: counters.irps.load(core::sync::atomic::Ordering::Relaxed),
            mdls: counters.mdls.load(core::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Waits for the processors to drain (every DPC queued or running at the call has run), then
    /// reports every IRP, pool
    /// allocation, MDL, armed timer, queued DPC, open handle, running system thread, WSK
    /// registration and socket still alive.
    #[must_use]
    pub fn check_leaks(&self) -> UnloadReport {
        // More than KeFlushQueuedDpcs promises: DPCs running at the call finish too.
        super::dpc::flush(&self.machine, true);
        let machine = &self.machine;
        device::wait_all_released(machine, Duration::from_secs(10));
        let mut leaks = Vec::new();
        leaks.extend(irp::leaks(&lock(&machine.irps)));
        leaks.extend(mdl::leaks(&lock(&machine.mdls)));
        leaks.extend(pool::leaks(&lock(&machine.pool)));
        leaks.extend(machine.timers.leaks());
        leaks.extend(
            machine
                .dpcs
                .queued()
                .into_iter()
                .map(|(dpc, cpu)| dpc::describe(dpc, cpu)),
        );
        leaks.extend(lock(&machine.objects).leaks());
        leaks.extend(device::leaks(&lock(&machine.devices)));
        leaks.extend(crate::wsk::leaks());
        leaks.sort();
        UnloadReport { leaks }
    }

    /// The bugchecks recorded so far (they stay recorded).
    #[must_use]
    pub fn bugchecks(&self) -> Vec<Bugcheck> {
        lock(&self.machine.bugchecks).clone()
    }

    /// Takes the bugchecks recorded so far: the test has examined them.
    #[must_use = "take_bugchecks exists to examine them"]
    pub fn take_bugchecks(&self) -> Vec<Bugcheck> {
        core::mem::take(&mut *lock(&self.machine.bugchecks))
    }

    /// How many DPC routines the processors have called since boot: two readings show whether
    /// any DPC routine started in between (after a driver's shutdown returned, say).
    #[must_use]
    pub fn dpc_routines_started(&self) -> u64 {
        self.machine.dpcs.started()
    }

    /// How many `DbgPrintEx` calls were made at `level` since boot (`DPFLTR_ERROR_LEVEL` 0 ..
    /// `DPFLTR_INFO_LEVEL` 3; higher levels count as 3). A long message may be printed in
    /// several calls (`wsk_sys::dbg_print` flushes every 256 bytes).
    #[must_use]
    pub fn debug_prints_at(&self, level: u32) -> u64 {
        let slot = usize::try_from(level).map_or(3, |level| level.min(3));
        self.machine.debug_prints_by_level[slot].load(Ordering::Relaxed)
    }

    /// Everything `DbgPrintEx` printed since boot.
    #[must_use]
    pub fn debug_log(&self) -> String {
        lock(&self.machine.debug_log).clone()
    }

    /// Waits until the debug log contains `needle` (what a driver prints when it is ready,
    /// say), for at most `within`.
    ///
    /// # Errors
    /// The whole log, when `needle` did not appear in time or a line containing one of
    /// `fatal` appeared first.
    pub fn wait_for_log(
        &self,
        needle: &str,
        fatal: &[&str],
        within: Duration,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + within;
        let mut log = lock(&self.machine.debug_log);
        loop {
            if fatal.iter().any(|f| log.contains(f)) {
                return Err(log.clone());
            }
            if log.contains(needle) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(log.clone());
            }
            log = machine::wait_timeout(&self.machine.debug_log_grew, log, left);
        }
    }

    /// Sets a registry value at an absolute key path (`\Registry\Machine\...`).
    pub fn set_registry_value(&self, key: &str, name: &str, value: RegValue) {
        lock(&self.machine.registry).set(key, name, value);
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let provider = std::panic::catch_unwind(crate::wsk::shutdown);
        self.machine.stopping.store(true, Ordering::Release);
        self.machine.dpcs.wake_all();
        self.machine.timers.wake();
        // Join the processors and the timer thread, and the threads that replaced halted
        // processors; a halted processor is parked for good (it may halt while we wait).
        let mut threads: Vec<JoinHandle<()>> = self.threads.drain(..).collect();
        while !threads.is_empty() {
            threads.extend(lock(&self.machine.replacements).drain(..));
            let halted = lock(&self.machine.halted).clone();
            let mut waiting = Vec::new();
            for thread in threads {
                if thread.is_finished() {
                    let _ = thread.join();
                } else if !halted.contains(&thread.thread().id()) {
                    waiting.push(thread);
                }
            }
            threads = waiting;
            if !threads.is_empty() {
                self.machine.dpcs.wake_all();
                self.machine.timers.wake();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        machine::install(None);
        *lock(&BOOTED) = false;
        SHUT_DOWN.notify_all();
        let bugchecks = core::mem::take(&mut *lock(&self.machine.bugchecks));
        if std::thread::panicking() {
            // The caller fails with its own panic (a test with its driver still loaded, say);
            // what the verifier saw still gets said, as a second panic would abort.
            for bugcheck in &bugchecks {
                std::eprintln!("*** host kernel dropped while panicking, with {bugcheck}");
            }
            return;
        }
        if let Err(payload) = provider {
            std::panic::resume_unwind(payload);
        }
        if !bugchecks.is_empty() {
            let list: Vec<String> = bugchecks.iter().map(ToString::to_string).collect();
            panic!(
                "host kernel dropped with {} bugcheck(s) nobody examined (Kernel::take_bugchecks):\n{}",
                bugchecks.len(),
                list.join("\n")
            );
        }
    }
}

/// Holds the one-kernel-per-process lock without booting: for tests of calls made with no
/// kernel running.
#[cfg(test)]
pub(crate) fn hold_boot_lock_for_tests() -> impl Drop {
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            *lock(&BOOTED) = false;
            SHUT_DOWN.notify_all();
        }
    }
    let mut booted = lock(&BOOTED);
    while *booted {
        booted = wait(&SHUT_DOWN, booted);
    }
    *booted = true;
    Held
}

/// Appends debug output to the running kernel's log.
pub(crate) fn append_debug_log(level: u32, text: &str) {
    if let Some(machine) = machine::try_current() {
        let slot = usize::try_from(level).map_or(3, |level| level.min(3));
        machine.debug_prints_by_level[slot].fetch_add(1, Ordering::Relaxed);
        lock(&machine.debug_log).push_str(text);
        machine.debug_log_grew.notify_all();
    }
}
