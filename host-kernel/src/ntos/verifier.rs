//! The verifier: bugchecks are recorded in the running kernel's log and then raised as a
//! panic `BUGCHECK <NAME>: <detail>`. Threads the kernel runs (emulated CPUs, the timer
//! thread, system threads) catch the panic so the machine keeps going and the record stays;
//! the `Kernel` handle reports every record and refuses to be dropped with unexamined ones.

use std::cell::Cell;
use std::fmt;
use std::string::String;
use std::sync::atomic::Ordering;

use super::machine;

/// One bugcheck the verifier raised (or, for the DPC watchdog, recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bugcheck {
    /// The Windows bugcheck name, e.g. `MULTIPLE_IRP_COMPLETE_REQUESTS`.
    pub name: &'static str,
    /// What happened, naming the function and object involved.
    pub detail: String,
}

impl Bugcheck {
    /// A record with this name and detail, as the verifier makes them: for programs and tests
    /// that handle records (the struct is `#[non_exhaustive]`, so it cannot be built literally).
    #[must_use]
    pub fn new(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Bugcheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BUGCHECK {}: {}", self.name, self.detail)
    }
}

/// Records a bugcheck in the running kernel's log (if one is booted) and prints it to stderr,
/// without unwinding. For checks that report rather than stop the machine (the DPC watchdog).
pub(crate) fn record(name: &'static str, detail: String) {
    let bugcheck = Bugcheck { name, detail };
    std::eprintln!("*** host kernel: {bugcheck}");
    if let Some(machine) = machine::try_current() {
        machine::lock(&machine.bugchecks).push(bugcheck);
    }
}

std::thread_local! {
    /// How many driver callbacks (`extern "system"` functions) the thread is inside.
    static CALLBACK_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Set once the thread's driver code ended for good (see [`leave_driver_code_for_good`]).
    static LEFT_FOR_GOOD: Cell<bool> = const { Cell::new(false) };
}

/// Runs driver code: a callback with the `"system"` ABI (DPC, completion, cancel and start
/// routines, `DriverEntry`, `DriverUnload`, WSK event callbacks). No panic can unwind out of
/// such a function, so a bugcheck raised inside one cannot unwind to a test: on an emulated
/// processor it halts that processor (a fresh thread takes its place), elsewhere the process
/// aborts after printing the bugcheck. Every call from the kernel into driver code goes
/// through here.
///
/// While `f` runs, the machine counts it as driver code running: `Kernel::unload` records
/// `DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS` if any is still running when
/// `DriverUnload` has returned and the driver's device objects are released.
pub(crate) fn in_callback<R>(f: impl FnOnce() -> R) -> R {
    run_driver_code(false, f)
}

/// Runs a driver's completion routine as [`in_callback`] does, then, when the kernel was
/// booted with `Config::with_late_callback_return`, keeps it counted as running driver code
/// for that long: the window in which a routine that signalled unload (set an event, dropped
/// the last reference) still executes its own instructions before it returns.
pub(crate) fn in_completion_routine<R>(f: impl FnOnce() -> R) -> R {
    run_driver_code(true, f)
}

/// [`in_callback`], with the late return of completion routines when `late_return` is set.
fn run_driver_code<R>(late_return: bool, f: impl FnOnce() -> R) -> R {
    struct Depth(Option<machine::Current>);
    impl Drop for Depth {
        fn drop(&mut self) {
            CALLBACK_DEPTH.with(|d| d.set(d.get() - 1));
            if let Some(machine) = &self.0
                && !LEFT_FOR_GOOD.with(Cell::get)
            {
                machine.driver_code.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    let machine = machine::try_current();
    if let Some(machine) = &machine {
        machine.driver_code.fetch_add(1, Ordering::AcqRel);
    }
    let delay = machine
        .as_ref()
        .and_then(|m| m.late_callback_return)
        .filter(|_| late_return);
    CALLBACK_DEPTH.with(|d| d.set(d.get() + 1));
    let _depth = Depth(machine);
    let result = f();
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    result
}

/// The calling thread's driver code is over for good (`PsTerminateSystemThread`, which never
/// returns to the driver): it no longer counts as driver code running.
pub(crate) fn leave_driver_code_for_good() {
    if LEFT_FOR_GOOD.with(|l| l.replace(true)) {
        return;
    }
    if CALLBACK_DEPTH.with(Cell::get) > 0
        && let Some(machine) = machine::try_current()
    {
        machine.driver_code.fetch_sub(1, Ordering::AcqRel);
    }
}

/// True while the calling thread runs driver code (see [`in_callback`]): nothing may unwind.
pub(crate) fn in_driver_callback() -> bool {
    CALLBACK_DEPTH.with(Cell::get) > 0
}

/// Raises a bugcheck: records it in the running kernel's log, then panics with
/// `BUGCHECK <NAME>: <detail>` (see [`in_callback`] for bugchecks inside driver callbacks).
pub(crate) fn bugcheck(name: &'static str, detail: String) -> ! {
    let message = std::format!("BUGCHECK {name}: {detail}");
    record(name, detail);
    if CALLBACK_DEPTH.with(Cell::get) > 0 {
        if let Some(cpu) = super::dpc::current_cpu() {
            super::dpc::halt(cpu, &message);
        }
        std::eprintln!(
            "*** host kernel: {message}\n*** raised inside a driver callback (an extern \"system\" \
             function, which cannot unwind): the process aborts"
        );
    }
    panic!("{message}")
}

/// True if a panic payload is a bugcheck raised by [`bugcheck`] (already recorded).
pub(crate) fn is_bugcheck(payload: &(dyn std::any::Any + Send)) -> bool {
    panic_message(payload).is_some_and(|m| m.starts_with("BUGCHECK "))
}

/// The text of a panic payload, if it is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&'static str>().copied())
}

/// Records a panic caught on a kernel thread: a bugcheck is already recorded; any other panic
/// is `KMODE_EXCEPTION_NOT_HANDLED` (an exception in kernel code nobody handles).
pub(crate) fn record_caught(payload: &(dyn std::any::Any + Send), place: &str) {
    if !is_bugcheck(payload) {
        let message = panic_message(payload).unwrap_or("(non-string panic payload)");
        record(
            "KMODE_EXCEPTION_NOT_HANDLED",
            std::format!("panic in {place}: {message}"),
        );
    }
}

/// Host implementation of `KeBugCheckEx`: raises the bugcheck (named by its code, with the
/// four parameters in the detail). Any IRQL; never returns.
/// Rule source: "`KeBugCheckEx` function (wdm.h)",
/// <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wdm/nf-wdm-kebugcheckex>.
///
/// # Safety
/// None: `unsafe` only to match the kernel import's signature.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn KeBugCheckEx(
    BugCheckCode: u32,
    BugCheckParameter1: usize,
    BugCheckParameter2: usize,
    BugCheckParameter3: usize,
    BugCheckParameter4: usize,
) -> ! {
    let name = if BugCheckCode == crate::BUGCHECK_RUST_PANIC {
        "WSK_RS_DRIVER_PANIC"
    } else {
        "KE_BUGCHECK_EX"
    };
    bugcheck(
        name,
        std::format!(
            "KeBugCheckEx({BugCheckCode:#010x}, {BugCheckParameter1:#x}, {BugCheckParameter2:#x}, \
             {BugCheckParameter3:#x}, {BugCheckParameter4:#x})"
        ),
    )
}
