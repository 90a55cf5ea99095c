//! Device objects and the completion routines that keep their driver loaded.
//!
//! A non-PnP driver's image is unmapped when `DriverUnload` has returned and its device
//! objects are gone. `IoSetCompletionRoutineEx` exists for exactly that window: the I/O
//! manager references the caller's device object until the completion routine has returned,
//! so a deleted device object (and with it the image) outlives every such routine. The host
//! models it the same way: [`IoDeleteDevice`] only marks a referenced device object deleted;
//! `Kernel::unload` waits until the driver's device objects are released before it checks
//! that no driver code runs any more.
//!
//! - `IoCreateDevice`: <https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocreatedevice>
//!   (`PASSIVE_LEVEL`).
//! - `IoDeleteDevice`: <https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iodeletedevice>
//!   (`PASSIVE_LEVEL`; the object goes once its reference count is zero).
//! - `IoSetCompletionRoutineEx`: <https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutineex>
//!   (IRQL <= `DISPATCH_LEVEL`; allocates until the routine has run; the routine must belong
//!   to the driver owning the device object, "which prevents the `IoCompletion` routine from
//!   being unloaded before it returns").

use std::boxed::Box;
use std::format;
use std::string::String;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::fast_hash::FastMap;
use super::irql;
use super::machine::{self, Machine, lock};
use super::verifier::{self, bugcheck};
use crate::{
    DEVICE_OBJECT, DISPATCH_LEVEL, DRIVER_OBJECT, IO_COMPLETION_ROUTINE, IRP, NTSTATUS,
    PASSIVE_LEVEL, PVOID, STATUS_SUCCESS, UNICODE_STRING,
};

/// `sizeof(DEVICE_OBJECT)` on x64 (0x150): drivers may read fields we do not model.
const DEVICE_OBJECT_SIZE: usize = 0x150;
/// Pool tag of the I/O manager's `IoSetCompletionRoutineEx` context (`IoCx`), as the leak
/// report names contexts never given back.
const CONTEXT_TAG: u32 = crate::pool_tag(*b"IoCx");
/// Free contexts the lookaside list keeps at most (more are freed): enough for every IRP of
/// a thousand connections in flight at once, small next to them.
const LOOKASIDE_DEPTH: usize = 4096;

/// One device object.
struct Device {
    driver: usize,
    /// References beyond the creator's: `IoSetCompletionRoutineEx` contexts.
    refs: usize,
    deleted: bool,
    /// The object's memory; its address is the `DEVICE_OBJECT` pointer.
    _memory: Box<[u8; DEVICE_OBJECT_SIZE]>,
}

/// Every device object that is not yet released, by address, and the I/O manager's
/// `IoSetCompletionRoutineEx` contexts.
///
/// The contexts come from a lookaside list, as fixed-size kernel structures do on Windows
/// ("`ExAllocateFromNPagedLookasideList` function (wdm.h)": the first free entry, else a new
/// allocation; learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatefromnpagedlookasidelist): one per
/// completion routine registered, so a tracked pool block each (an ordered table insert and
/// remove, a pattern fill, a malloc and free) cost more than the rest of the call. Each is
/// still counted as a pool allocation (`Kernel::allocation_counts`), and the contexts not
/// given back are reported as tag `IoCx` at the leak check, as pool blocks were.
#[derive(Default)]
pub(crate) struct Devices {
    live: FastMap<usize, Device>,
    /// Contexts given back, ready for the next `IoSetCompletionRoutineEx`: boxes, whose
    /// addresses are what the I/O manager hands out as the routine's context.
    #[expect(
        clippy::vec_box,
        reason = "each context needs a stable address while its IRP is in flight"
    )]
    free_contexts: Vec<Box<ExContext>>,
    /// Contexts handed out and not given back yet.
    contexts_out: usize,
}

impl Devices {
    /// Device objects of `driver` (of any driver: `None`) that are not released yet:
    /// (address, deleted, refs).
    fn of(&self, driver: Option<usize>) -> Vec<(usize, bool, usize)> {
        let mut list: Vec<_> = self
            .live
            .iter()
            .filter(|(_, d)| driver.is_none_or(|driver| d.driver == driver))
            .map(|(&a, d)| (a, d.deleted, d.refs))
            .collect();
        list.sort_unstable();
        list
    }
}

/// Releases a deleted, unreferenced device object. Caller holds the table lock.
fn release_if_done(devices: &mut Devices, address: usize) {
    if devices
        .live
        .get(&address)
        .is_some_and(|d| d.deleted && d.refs == 0)
    {
        devices.live.remove(&address);
    }
}

/// Host implementation of `IoCreateDevice`: an unnamed or named device object owned by
/// `DriverObject`, linked as its first device. `PASSIVE_LEVEL`.
///
/// # Safety
/// `DriverObject` is a live driver object; `DeviceObject` is writable.
#[allow(clippy::too_many_arguments, reason = "the WDK signature")]
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoCreateDevice(
    DriverObject: *mut DRIVER_OBJECT,
    DeviceExtensionSize: u32,
    DeviceName: *mut UNICODE_STRING,
    DeviceType: u32,
    DeviceCharacteristics: u32,
    Exclusive: u8,
    DeviceObject: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    // IoCreateDevice: "IRQL = PASSIVE_LEVEL" (see the module docs for the page).
    irql::require_at_most(PASSIVE_LEVEL, "IoCreateDevice");
    let _ = (DeviceName, DeviceType, DeviceCharacteristics, Exclusive);
    if DeviceExtensionSize != 0 {
        // Nothing of ours asks for an extension; refuse rather than hand out a short object.
        return crate::STATUS_NOT_SUPPORTED;
    }
    let machine = machine::current("IoCreateDevice");
    let mut memory = Box::new([0u8; DEVICE_OBJECT_SIZE]);
    let address = memory.as_mut_ptr() as usize;
    lock(&machine.devices).live.insert(
        address,
        Device {
            driver: DriverObject as usize,
            refs: 0,
            deleted: false,
            _memory: memory,
        },
    );
    // SAFETY: the caller passes its live driver object.
    let driver = unsafe { &mut *DriverObject };
    if driver.DeviceObject.is_null() {
        driver.DeviceObject = address as *mut DEVICE_OBJECT;
    }
    // SAFETY: the caller passes a writable out-pointer.
    unsafe { DeviceObject.write(address as *mut DEVICE_OBJECT) };
    STATUS_SUCCESS
}

/// Host implementation of `IoDeleteDevice`: marks the device object deleted; it is released
/// once no `IoSetCompletionRoutineEx` context references it. `PASSIVE_LEVEL`.
///
/// # Safety
/// `DeviceObject` came from `IoCreateDevice` and is deleted once.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT) {
    // IoDeleteDevice: "IRQL = PASSIVE_LEVEL".
    irql::require_at_most(PASSIVE_LEVEL, "IoDeleteDevice");
    let machine = machine::current("IoDeleteDevice");
    let address = DeviceObject as usize;
    let mut devices = lock(&machine.devices);
    let driver = match devices.live.get_mut(&address) {
        Some(device) if !device.deleted => {
            device.deleted = true;
            device.driver
        }
        _ => {
            drop(devices);
            bugcheck(
                "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                format!(
                    "IoDeleteDevice({DeviceObject:p}): not a live device object (deleted twice?)"
                ),
            );
        }
    };
    release_if_done(&mut devices, address);
    drop(devices);
    // SAFETY: the owning driver object outlives its device objects.
    let driver = unsafe { &mut *(driver as *mut DRIVER_OBJECT) };
    if driver.DeviceObject == DeviceObject {
        driver.DeviceObject = core::ptr::null_mut();
    }
    machine.devices_changed.notify_all();
}

/// What the I/O manager keeps for one `IoSetCompletionRoutineEx` registration.
struct ExContext {
    routine: IO_COMPLETION_ROUTINE,
    /// The driver's context pointer, as an address (the lookaside list moves between threads).
    context: usize,
    device: usize,
}

/// Host implementation of `IoSetCompletionRoutineEx`: references `DeviceObject`, allocates the
/// I/O manager's context, and registers a kernel routine that calls `CompletionRoutine` and
/// only then drops the reference. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// As `IoSetCompletionRoutine`: `Irp` is a live IRP the caller owns, with a next location;
/// `DeviceObject` is the caller's live (not deleted) device object.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoSetCompletionRoutineEx(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    CompletionRoutine: Option<IO_COMPLETION_ROUTINE>,
    Context: PVOID,
    InvokeOnSuccess: u8,
    InvokeOnError: u8,
    InvokeOnCancel: u8,
) -> NTSTATUS {
    // IoSetCompletionRoutineEx: "IRQL <= DISPATCH_LEVEL".
    irql::require_at_most(DISPATCH_LEVEL, "IoSetCompletionRoutineEx");
    let machine = machine::current("IoSetCompletionRoutineEx");
    let Some(routine) = CompletionRoutine else {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IoSetCompletionRoutineEx on IRP {Irp:p} without a routine"),
        );
    };
    let address = DeviceObject as usize;
    let fresh = ExContext {
        routine,
        context: Context as usize,
        device: address,
    };
    // The device reference and the context under one lock: the kernel's own allocation,
    // which the low-resources simulation never fails (only the driver's).
    let memory = {
        let mut devices = lock(&machine.devices);
        match devices.live.get_mut(&address) {
            Some(device) if !device.deleted => device.refs += 1,
            _ => {
                drop(devices);
                bugcheck(
                    "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                    format!(
                        "IoSetCompletionRoutineEx on IRP {Irp:p} with {DeviceObject:p}, which \
                         is not a live device object of this driver (deleted?)"
                    ),
                );
            }
        }
        devices.contexts_out += 1;
        let boxed = match devices.free_contexts.pop() {
            Some(mut recycled) => {
                *recycled = fresh;
                recycled
            }
            None => Box::new(fresh),
        };
        Box::into_raw(boxed)
    };
    machine
        .allocations
        .pool
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the IRP is the caller's, with a next location (forwarded contract).
    unsafe {
        crate::IoSetCompletionRoutine(
            Irp,
            Some(unload_safe_completion),
            memory.cast(),
            InvokeOnSuccess != 0,
            InvokeOnError != 0,
            InvokeOnCancel != 0,
        );
    }
    STATUS_SUCCESS
}

/// True for the I/O manager's own routine (the IRP walk calls it as kernel code: it counts
/// the driver's routine inside as driver code itself).
pub(crate) fn is_unload_safe_completion(routine: IO_COMPLETION_ROUTINE) -> bool {
    core::ptr::fn_addr_eq(routine, unload_safe_completion as IO_COMPLETION_ROUTINE)
}

/// The I/O manager's routine behind `IoSetCompletionRoutineEx`: takes its context back, runs
/// the driver's routine, and only after it returned releases the device object and returns
/// the context to the lookaside list.
unsafe extern "system" fn unload_safe_completion(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: `context` is the boxed ExContext IoSetCompletionRoutineEx leaked for this one
    // completion; the routine runs once per registration, so it is taken back once.
    let ex = unsafe { Box::from_raw(context.cast::<ExContext>()) };
    let _ = device;
    let (routine, driver_context, address) = (ex.routine, ex.context, ex.device);
    // SAFETY: the driver's routine with the arguments it registered, at the completing IRQL.
    let status = verifier::in_completion_routine(|| unsafe {
        routine(address as *mut DEVICE_OBJECT, irp, driver_context as PVOID)
    });
    if let Some(machine) = machine::try_current() {
        dereference(&machine, address, ex);
    }
    status
}

/// Drops the reference an `IoSetCompletionRoutineEx` context held on a device object,
/// releasing the object if it was deleted, and gives the context back.
fn dereference(machine: &Machine, address: usize, context: Box<ExContext>) {
    let mut devices = lock(&machine.devices);
    devices.contexts_out = devices.contexts_out.saturating_sub(1);
    if devices.free_contexts.len() < LOOKASIDE_DEPTH {
        devices.free_contexts.push(context);
    }
    // One lookup on every completion: released here if deleted and now unreferenced, as
    // `release_if_done` would after a second lookup.
    let released = devices.live.get_mut(&address).is_some_and(|device| {
        device.refs = device.refs.saturating_sub(1);
        device.deleted && device.refs == 0
    });
    if released {
        devices.live.remove(&address);
    }
    drop(devices);
    machine.devices_changed.notify_all();
}

/// Waits (at most `within`) while a deleted device object of `driver` (of any driver: `None`)
/// is still referenced, i.e. a routine registered with `IoSetCompletionRoutineEx` against it
/// has not returned. Returns what is left: (address, deleted, references).
fn wait_for_references(
    machine: &Machine,
    driver: Option<usize>,
    within: Duration,
) -> Vec<(usize, bool, usize)> {
    let deadline = Instant::now() + within;
    let mut devices = lock(&machine.devices);
    loop {
        let left = devices.of(driver);
        let now = Instant::now();
        // A deleted device object stays listed only while referenced.
        if !left.iter().any(|&(_, deleted, _)| deleted) || now >= deadline {
            return left;
        }
        devices = machine::wait_timeout(&machine.devices_changed, devices, deadline - now);
    }
}

/// Waits (at most `within`) until every device object of `driver` is released, as the I/O
/// manager does before it unmaps a driver image. Returns what is left, one line each.
pub(crate) fn wait_released(machine: &Machine, driver: usize, within: Duration) -> Vec<String> {
    wait_for_references(machine, Some(driver), within)
        .into_iter()
        .map(|(address, deleted, refs)| {
            if deleted {
                format!(
                    "device object {address:#x} deleted but still referenced {refs} time(s) \
                     {within:?} after DriverUnload returned"
                )
            } else {
                format!("device object {address:#x} not deleted by DriverUnload (IoDeleteDevice)")
            }
        })
        .collect()
}

/// Waits (at most `within`) until no deleted device object is still referenced (any driver):
/// completion routines registered with `IoSetCompletionRoutineEx` have all returned.
pub(crate) fn wait_all_released(machine: &Machine, within: Duration) {
    let _ = wait_for_references(machine, None, within);
}

/// Device objects not released and `IoSetCompletionRoutineEx` contexts not given back (in
/// the pool report's words: their routine never ran), for the leak report (any driver).
pub(crate) fn leaks(devices: &Devices) -> Vec<String> {
    let mut lines: Vec<String> = devices
        .of(None)
        .into_iter()
        .map(|(address, deleted, refs)| {
            format!(
                "device object {address:#x} ({}, {refs} reference(s))",
                if deleted { "deleted" } else { "not deleted" },
            )
        })
        .collect();
    // A context not given back is a completion routine that never ran: the memory
    // `IoSetCompletionRoutineEx` allocated stays allocated until the routine executes, and a
    // driver that never sends the IRP with `IoCallDriver` leaks it ("IoSetCompletionRoutineEx
    // function (wdm.h)", Remarks;
    // learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutineex);
    // reported as the pool block it is on Windows.
    if let Some((tag, count, bytes)) = contexts_usage(devices) {
        lines.push(super::pool::leak_line(&tag, count, bytes));
    }
    lines
}

/// The `IoSetCompletionRoutineEx` contexts out, as a pool tag's `(tag, blocks, bytes)`: none
/// when all were given back. They live outside the pool table (a lookaside list) but are
/// nonpaged pool on Windows, so the usage readings and the leak report count them.
pub(crate) fn contexts_usage(devices: &Devices) -> Option<(String, usize, usize)> {
    (devices.contexts_out != 0).then(|| {
        (
            super::pool::tag_text(CONTEXT_TAG),
            devices.contexts_out,
            devices.contexts_out * size_of::<ExContext>(),
        )
    })
}
