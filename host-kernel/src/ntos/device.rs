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
use super::pool::{allocate_for_kernel, free_for_kernel};
use super::verifier::{self, bugcheck};
use crate::{
    DEVICE_OBJECT, DISPATCH_LEVEL, DRIVER_OBJECT, IO_COMPLETION_ROUTINE, IRP, NTSTATUS,
    PASSIVE_LEVEL, PVOID, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, UNICODE_STRING,
};

/// `sizeof(DEVICE_OBJECT)` on x64 (0x150): drivers may read fields we do not model.
const DEVICE_OBJECT_SIZE: usize = 0x150;
/// Pool tag of the I/O manager's `IoSetCompletionRoutineEx` context (`IoCx`).
const CONTEXT_TAG: u32 = crate::pool_tag(*b"IoCx");

/// One device object.
struct Device {
    driver: usize,
    /// References beyond the creator's: `IoSetCompletionRoutineEx` contexts.
    refs: usize,
    deleted: bool,
    /// The object's memory; its address is the `DEVICE_OBJECT` pointer.
    _memory: Box<[u8; DEVICE_OBJECT_SIZE]>,
}

/// Every device object that is not yet released, by address.
#[derive(Default)]
pub(crate) struct Devices {
    live: FastMap<usize, Device>,
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
    context: PVOID,
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
    {
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
    }
    // The kernel's own allocation: the low-resources simulation fails only the driver's.
    let memory = allocate_for_kernel(size_of::<ExContext>(), CONTEXT_TAG).cast::<ExContext>();
    if memory.is_null() {
        dereference(&machine, address);
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: a fresh allocation of the right size and alignment (pool is 16-aligned).
    unsafe {
        memory.write(ExContext {
            routine,
            context: Context,
            device: address,
        });
    }
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

/// The I/O manager's routine behind `IoSetCompletionRoutineEx`: frees its context, runs the
/// driver's routine, and only after it returned releases the device object.
unsafe extern "system" fn unload_safe_completion(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: `context` is the ExContext IoSetCompletionRoutineEx allocated, read once here.
    let ex = unsafe { context.cast::<ExContext>().read() };
    // SAFETY: allocated with this tag by IoSetCompletionRoutineEx, freed once, read above.
    unsafe { free_for_kernel(context, CONTEXT_TAG) };
    let _ = device;
    // SAFETY: the driver's routine with the arguments it registered, at the completing IRQL.
    let status = verifier::in_completion_routine(|| unsafe {
        (ex.routine)(ex.device as *mut DEVICE_OBJECT, irp, ex.context)
    });
    if let Some(machine) = machine::try_current() {
        dereference(&machine, ex.device);
    }
    status
}

/// Drops one reference on a device object, releasing it if it was deleted.
fn dereference(machine: &Machine, address: usize) {
    let mut devices = lock(&machine.devices);
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

/// Device objects not released, for the leak report (any driver).
pub(crate) fn leaks(devices: &Devices) -> Vec<String> {
    devices
        .of(None)
        .into_iter()
        .map(|(address, deleted, refs)| {
            format!(
                "device object {address:#x} ({}, {refs} reference(s))",
                if deleted { "deleted" } else { "not deleted" },
            )
        })
        .collect()
}
