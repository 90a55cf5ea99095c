//! IRPs: allocation with real stack locations, completion walking the stack from the current
//! location up, cancellation through cancel routines and the cancel spin lock, and the
//! verifier's checks (double completion, free while pending, completion running past the
//! top of an IRP that has no originating thread).
//!
//! Every IRP from `IoAllocateIrp` is tracked by address. An IRP is *pending* from the moment a
//! lower driver takes it ([`call_driver_enter`], or any `IoSetNextIrpStackLocation` that moved
//! its current location into the stack) until its completion reaches the top location.

use std::alloc::Layout;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::fast_hash::FastMap;
use super::kernel_ptr::KernelPtr;
use super::machine::{self, Machine, lock};
use super::verifier::{self, bugcheck};
use super::{irql, spinlock};
use crate::faults::{Resource, fail_allocation};
use crate::{
    BOOLEAN, CCHAR, DISPATCH_LEVEL, FALSE, IO_COMPLETION_ROUTINE, IO_STACK_LOCATION, IO_TYPE_IRP,
    IRP, IoSizeOfIrp, KIRQL, LIST_ENTRY, NT_SUCCESS, NTSTATUS, PVOID, SL_INVOKE_ON_CANCEL,
    SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS, SL_PENDING_RETURNED, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING, TRUE,
};

/// An IRP as the host kernel and its WSK provider keep it in tables and queues.
pub(crate) type IrpPtr = KernelPtr<IRP>;

/// Where an IRP is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IrpState {
    /// Allocated or reused: owned by the driver that allocated it.
    Allocated,
    /// Taken by a lower driver (the WSK provider) and not yet completed.
    Pending,
    /// Completed back to its allocator (a completion routine stopped it at the top).
    Completed,
}

/// One tracked IRP.
pub(crate) struct IrpInfo {
    pub(crate) state: IrpState,
    pub(crate) stack_count: u8,
    layout: Layout,
}

/// Every live IRP, by address.
#[derive(Default)]
pub(crate) struct IrpTable {
    pub(crate) live: FastMap<IrpPtr, IrpInfo>,
}

impl IrpTable {
    /// The tracked IRP `irp` (none for null or an address that is not a live IRP).
    fn info(&self, irp: *mut IRP) -> Option<&IrpInfo> {
        IrpPtr::new(irp).and_then(|irp| self.live.get(&irp))
    }

    /// As [`IrpTable::info`], to update.
    fn info_mut(&mut self, irp: *mut IRP) -> Option<&mut IrpInfo> {
        IrpPtr::new(irp).and_then(|irp| self.live.get_mut(&irp))
    }

    /// Stops tracking `irp` (freed), giving what was tracked.
    fn remove(&mut self, irp: *mut IRP) -> Option<IrpInfo> {
        IrpPtr::new(irp).and_then(|irp| self.live.remove(&irp))
    }
}

fn layout_for(stack: u8) -> Layout {
    Layout::from_size_align(IoSizeOfIrp(stack), 16).expect("IRP layout")
}

/// IRPs a lower driver still holds (taken and not completed), by address.
pub(crate) fn pending(table: &IrpTable) -> Vec<IrpPtr> {
    let mut list: Vec<IrpPtr> = table
        .live
        .iter()
        .filter(|(_, info)| info.state == IrpState::Pending)
        .map(|(&irp, _)| irp)
        .collect();
    list.sort_unstable();
    list
}

/// The state of a tracked IRP; a bugcheck if `irp` is not a live IRP from `IoAllocateIrp`.
/// The state of the live IRP `irp` and its stack count; a bugcheck naming `function` if it is
/// not a live IRP. Callers pass the machine they already hold: one lookup of the running
/// machine per kernel call, not one per check.
fn state_of(machine: &Machine, irp: *mut IRP, function: &'static str) -> (IrpState, u8) {
    let state = lock(&machine.irps)
        .info(irp)
        .map(|i| (i.state, i.stack_count));
    // WDK "Bug Check 0xC9: DRIVER_VERIFIER_IOMANAGER_VIOLATION"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc9--driver-verifier-iomanager-violation): 0x01/0x03, an
    // object that is not an IRP passed as one. The host knows every live IRP, so it also
    // catches freed ones (stricter than the type check Windows makes).
    state.unwrap_or_else(|| {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{function} on {irp:p}, which is not a live IRP from IoAllocateIrp (freed?)"),
        )
    })
}

fn set_state(machine: &Machine, irp: *mut IRP, state: IrpState) {
    if let Some(info) = lock(&machine.irps).info_mut(irp) {
        info.state = state;
    }
}

/// Under one lock of the IRP table: the state and stack count of the live IRP `irp` (a
/// bugcheck naming `function` if it is not live), and the state `next` gives, if any, set as
/// its new state. `next` sees the IRP while the table says it is live (`IoFreeIrp` removes it
/// under the same lock before freeing it), so it may read the IRP's header. One lookup where
/// a check and the state change that follows it would otherwise take two: the IRP table's
/// lock and hash lookup are on every IRP's path.
fn check_and_set_state(
    machine: &Machine,
    irp: *mut IRP,
    function: &'static str,
    next: impl FnOnce(IrpState, u8) -> Option<IrpState>,
) -> (IrpState, u8) {
    let found = {
        let mut irps = lock(&machine.irps);
        irps.info_mut(irp).map(|info| {
            let seen = (info.state, info.stack_count);
            if let Some(state) = next(seen.0, seen.1) {
                info.state = state;
            }
            seen
        })
    };
    // As in `state_of`: an IRP used after IoFreeIrp
    // (https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreeirp).
    found.unwrap_or_else(|| {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("{function} on {irp:p}, which is not a live IRP from IoAllocateIrp (freed?)"),
        )
    })
}

/// The lower driver takes an IRP, as `IoCallDriver` does: makes the next stack location
/// current (`IoSetNextIrpStackLocation`) and marks the IRP pending for the verifier. The WSK
/// provider calls this first thing in every function that takes an IRP; it then completes the
/// IRP with `IofCompleteRequest` (inline or later).
///
/// Bugchecks if the IRP is not live, is already pending, or has no stack location left
/// (`NO_MORE_IRP_STACK_LOCATIONS`).
///
/// # Safety
/// `irp` must be a live IRP from `IoAllocateIrp`. IRQL <= `DISPATCH_LEVEL`.
#[cfg_attr(not(test), allow(dead_code, reason = "called by the WSK provider"))]
pub(crate) unsafe fn call_driver_enter(irp: *mut IRP) {
    // WDK "Bug Check 0xC9: DRIVER_VERIFIER_IOMANAGER_VIOLATION"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc9--driver-verifier-iomanager-violation): I/O error 0x205,
    // forwarding an IRP that is still queued beneath the caller.
    let machine = machine::current("IoCallDriver");
    let mut current_location = 0;
    // Marked pending in the same lookup that checks it, only when both checks below pass.
    let (state, _) = check_and_set_state(&machine, irp, "IoCallDriver", |state, _| {
        // SAFETY: the IRP is live (in the table, under its lock).
        current_location = unsafe { (*irp).CurrentLocation };
        (state != IrpState::Pending && current_location > 1).then_some(IrpState::Pending)
    });
    if state == IrpState::Pending {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IRP {irp:p} sent to a driver while it is still pending"),
        );
    }
    // WDK "Bug Check 0x35: NO_MORE_IRP_STACK_LOCATIONS"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x35--no-more-irp-stack-locations): IoCallDriver with no
    // stack location left.
    if current_location <= 1 {
        bugcheck(
            "NO_MORE_IRP_STACK_LOCATIONS",
            format!("IRP {irp:p} has no stack location left for the next driver"),
        );
    }
    // SAFETY: live and ours to advance as the lower driver, with a location left (checked).
    unsafe { crate::IoSetNextIrpStackLocation(irp) };
}

/// True if the IRP is live and pending (taken by a lower driver, not completed); a bugcheck if
/// it is not a live IRP.
///
/// # Safety
/// `irp` must be a live IRP.
pub(crate) unsafe fn is_pending(irp: *mut IRP) -> bool {
    let machine = machine::current("is_pending");
    // SAFETY: forwarded contract.
    unsafe { pending_in(&machine, irp, "is_pending") }.0
}

/// [`is_pending`] on `machine`, with the IRP's stack count; a bugcheck naming `function` if
/// the IRP is not live.
///
/// # Safety
/// `irp` must be a live IRP.
unsafe fn pending_in(machine: &Machine, irp: *mut IRP, function: &'static str) -> (bool, u8) {
    let (state, stack_count) = state_of(machine, irp, function);
    // SAFETY: live per the table.
    (unsafe { is_pending_state(irp, state) }, stack_count)
}

/// Whether the IRP in `state` is pending: taken by a lower driver, or still below the top of
/// its stack (sent by hand without the host seeing it).
///
/// # Safety
/// `irp` must be live.
unsafe fn is_pending_state(irp: *mut IRP, state: IrpState) -> bool {
    // SAFETY: live (the caller's contract).
    let irp = unsafe { &*irp };
    let below_top = i32::from(irp.CurrentLocation) <= i32::from(irp.StackCount);
    state == IrpState::Pending || (state == IrpState::Allocated && below_top)
}

/// Initialises an IRP in place, as `IoInitializeIrp` does.
///
/// # Safety
/// `irp` must point to `IoSizeOfIrp(stack)` writable bytes.
unsafe fn initialize(irp: *mut IRP, stack: u8) {
    // SAFETY: the caller guarantees the storage; an all-zero IRP is a valid starting point.
    unsafe { core::ptr::write_bytes(irp.cast::<u8>(), 0, IoSizeOfIrp(stack)) };
    // SAFETY: the storage holds `stack` locations after the IRP (IoSizeOfIrp): the first
    // follows the IRP's own size, one past the last is the end of the allocation.
    // The first, inside the allocation.
    let first = unsafe { irp.add(1) }.cast::<IO_STACK_LOCATION>();
    // SAFETY: as said above.
    let past_last = unsafe { first.add(usize::from(stack)) };
    // SAFETY: as above, now a zeroed IRP that only this function holds.
    let irp = unsafe { &mut *irp };
    irp.Type = IO_TYPE_IRP;
    irp.Size = u16::try_from(IoSizeOfIrp(stack)).unwrap_or(u16::MAX);
    irp.StackCount = stack.cast_signed();
    irp.CurrentLocation = stack.wrapping_add(1).cast_signed();
    let list = &raw mut irp.ThreadListEntry;
    irp.ThreadListEntry = LIST_ENTRY {
        Flink: list,
        Blink: list,
    };
    // A write to a union field needs no unsafe: `Overlay` is the member in use in flight.
    irp.Tail.Overlay.CurrentStackLocation = past_last;
}

/// Host implementation of `IoAllocateIrp`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// None beyond the IRQL rule (checked).
#[must_use]
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoAllocateIrp(
    StackSize: CCHAR,
    ChargeQuota: BOOLEAN,
) -> *mut IRP {
    let _ = ChargeQuota;
    // WDK "IoAllocateIrp function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioallocateirp): IRQL <=
    // DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "IoAllocateIrp");
    let machine = machine::current("IoAllocateIrp");
    if fail_allocation(Resource::Irp) {
        return core::ptr::null_mut();
    }
    let Ok(stack) = u8::try_from(StackSize) else {
        return core::ptr::null_mut();
    };
    if stack == u8::MAX {
        return core::ptr::null_mut();
    }
    let layout = layout_for(stack);
    machine
        .allocations
        .irps
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    #[allow(clippy::cast_ptr_alignment, reason = "the layout is 16-aligned")]
    // SAFETY: the layout has a non-zero size.
    let irp = unsafe { std::alloc::alloc(layout) }.cast::<IRP>();
    let Some(tracked) = IrpPtr::new(irp) else {
        return irp;
    };
    // SAFETY: freshly allocated with IoSizeOfIrp(stack) bytes.
    unsafe { initialize(irp, stack) };
    lock(&machine.irps).live.insert(
        tracked,
        IrpInfo {
            state: IrpState::Allocated,
            stack_count: stack,
            layout,
        },
    );
    irp
}

/// Host implementation of `IoReuseIrp`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irp` must be a live IRP from `IoAllocateIrp` that is not pending.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS) {
    // WDK "IoReuseIrp function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioreuseirp): IRQL <=
    // DISPATCH_LEVEL; only for IRPs from IoAllocateIrp (checked by is_pending). Reusing a
    // pending IRP is the host's 0xC9 rule (the "Reusing IRPs" page: only once completed).
    irql::require_at_most(DISPATCH_LEVEL, "IoReuseIrp");
    let machine = machine::current("IoReuseIrp");
    let mut pending = false;
    // Allocated again (the caller's) in the same lookup that checks it is not pending.
    let (_, stack) = check_and_set_state(&machine, Irp, "IoReuseIrp", |state, _| {
        // SAFETY: live (in the table, under its lock).
        pending = unsafe { is_pending_state(Irp, state) };
        (!pending).then_some(IrpState::Allocated)
    });
    if pending {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IoReuseIrp on IRP {Irp:p}, which is still pending"),
        );
    }
    // SAFETY: live (checked).
    let flags = unsafe { (*Irp).AllocationFlags };
    // SAFETY: live, allocated with this stack count.
    unsafe { initialize(Irp, stack) };
    // SAFETY: live, just reinitialised; the caller's until it sends it again.
    let irp = unsafe { &mut *Irp };
    irp.AllocationFlags = flags;
    irp.IoStatus.Status = Iostatus;
}

/// Host implementation of `IoFreeIrp`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irp` must be a live IRP from `IoAllocateIrp` that is not pending.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoFreeIrp(Irp: *mut IRP) {
    // WDK "IoFreeIrp function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreeirp): IRQL <=
    // DISPATCH_LEVEL; the IRP must not be pending: 0xC9 I/O error 0x20B, IoFreeIrp on an IRP
    // still in use (bug-check-0xc9--driver-verifier-iomanager-violation).
    irql::require_at_most(DISPATCH_LEVEL, "IoFreeIrp");
    // SAFETY: forwarded contract; is_pending checks liveness first.
    if unsafe { is_pending(Irp) } {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IoFreeIrp on IRP {Irp:p}, which is pending (issued and not completed)"),
        );
    }
    let machine = machine::current("IoFreeIrp");
    let info = lock(&machine.irps).remove(Irp);
    if let Some(info) = info {
        // SAFETY: allocated by IoAllocateIrp with this layout; removed from the table, so
        // freed once. Poison the header first so a use after free fails loudly.
        unsafe { core::ptr::write_bytes(Irp.cast::<u8>(), 0xDD, info.layout.size()) };
        // SAFETY: as above.
        unsafe { std::alloc::dealloc(Irp.cast(), info.layout) };
    }
}

/// Host implementation of `IofCompleteRequest`: walks the stack from the current location up,
/// calling each completion routine its `SL_INVOKE_ON_*` bits select, at the caller's IRQL;
/// `STATUS_MORE_PROCESSING_REQUIRED` stops the walk. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irp` must be a live IRP from `IoAllocateIrp`, with `IoStatus` set.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: CCHAR) {
    let _ = PriorityBoost;
    // WDK "IofCompleteRequest function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocompleterequest):
    // IRQL <= DISPATCH_LEVEL (0xC9 0x0E under Driver Verifier; the host raises
    // IRQL_NOT_LESS_OR_EQUAL, see irql::require_at_most). The page also says never to call it
    // holding a spin lock; the host does not check that (looser).
    irql::require_at_most(DISPATCH_LEVEL, "IofCompleteRequest");
    let machine = machine::current("IofCompleteRequest");
    // The usual completion (every check below passes and the walk's first location is the
    // top) is marked completed in the lookup that reads the state: one lookup of the IRP
    // table instead of two. Any other leaves the state alone for the checks and the walk.
    let mut completed_early = false;
    let (state, _) = check_and_set_state(&machine, Irp, "IofCompleteRequest", |state, _| {
        // SAFETY: the IRP is live (in the table, under its lock).
        completed_early = unsafe { completes_at_once(Irp, state) };
        completed_early.then_some(IrpState::Completed)
    });
    // SAFETY: forwarded contract.
    let top = unsafe { check_completion_request(Irp, state) };
    let irql = irql::current();
    loop {
        // SAFETY: live; the completing driver owns it until the walk hands it up.
        let location = unsafe { crate::IoGetCurrentIrpStackLocation(Irp) };
        // SAFETY: as above.
        unsafe { crate::IoSkipCurrentIrpStackLocation(Irp) };
        // SAFETY: as above. Borrowed only up to the completion routine, which gets the pointer.
        let irp = unsafe { &mut *Irp };
        let at_top = i32::from(irp.CurrentLocation) >= top;
        if at_top && !completed_early {
            set_state(&machine, Irp, IrpState::Completed);
        }
        // SAFETY: the location that was current, inside the live IRP's allocation; the walk
        // owns it now.
        let spent = unsafe { &mut *location };
        let control = spent.Control;
        irp.PendingReturned = control & SL_PENDING_RETURNED;
        let status = irp.IoStatus.Status;
        // Atomic, as IoCancelIrp writes it: a cancel may race with the completion.
        // SAFETY: a byte of the live IRP (aligned for an AtomicU8), accessed atomically by
        // IoCancelIrp and here.
        let cancel = unsafe { core::sync::atomic::AtomicU8::from_ptr(&raw mut irp.Cancel) };
        let cancelled = cancel.load(core::sync::atomic::Ordering::SeqCst) != 0;
        let invoke = (NT_SUCCESS(status) && control & SL_INVOKE_ON_SUCCESS != 0)
            || (!NT_SUCCESS(status) && control & SL_INVOKE_ON_ERROR != 0)
            || (cancelled && control & SL_INVOKE_ON_CANCEL != 0);
        let pending_returned = irp.PendingReturned != 0;
        let routine = spent.CompletionRoutine;
        let context = spent.Context;
        // ZeroIrpStackLocation: the routine's location is spent.
        spent.Control = 0;
        spent.CompletionRoutine = None;
        spent.Context = core::ptr::null_mut();
        match routine {
            Some(routine) if invoke => {
                // SAFETY: forwarded contract; the location is spent, the IRP still live.
                let result = unsafe { run_completion_routine(Irp, routine, context, at_top, irql) };
                if result == STATUS_MORE_PROCESSING_REQUIRED {
                    return;
                }
                // WDK "IoAllocateIrp function (wdm.h)"
                // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioallocateirp): the allocating driver must free
                // the IRP, not complete it back to the I/O manager, so its routine must
                // return STATUS_MORE_PROCESSING_REQUIRED. Windows would touch the absent
                // thread; the host names it 0xC9 (stricter, deterministic).
                if at_top {
                    bugcheck(
                        "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                        format!(
                            "completion routine {routine:p} of IRP {Irp:p}, an IRP from \
                             IoAllocateIrp with no originating thread, returned {result:#x} \
                             instead of STATUS_MORE_PROCESSING_REQUIRED"
                        ),
                    );
                }
            }
            _ => {
                if pending_returned && !at_top {
                    // SAFETY: live; the next location up is current, as IoMarkIrpPending
                    // needs.
                    unsafe { crate::IoMarkIrpPending(Irp) };
                }
                // Same rule (IoAllocateIrp page): no routine to stop the walk.
                if at_top {
                    bugcheck(
                        "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
                        format!(
                            "IRP {Irp:p} completed to its top stack location without a \
                             completion routine to stop it: it was allocated with \
                             IoAllocateIrp and has no originating thread"
                        ),
                    );
                }
            }
        }
    }
}

/// Whether `IofCompleteRequest` on the IRP in `state` passes every check of
/// [`check_completion_request`] and its walk reaches the top at its first location (the
/// completing driver is the IRP's last holder): then it can be marked completed at once. The
/// rules are those of the `IoCompleteRequest` page
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wdm/nf-wdm-iocompleterequest>)
/// and the bug checks `check_completion_request` cites, tested in one place:
/// [`passes_completion_checks`].
///
/// # Safety
/// `Irp` is a live IRP.
unsafe fn completes_at_once(Irp: *mut IRP, state: IrpState) -> bool {
    // SAFETY: the caller guarantees a live IRP; borrowed only for these reads.
    let irp = unsafe { &*Irp };
    passes_completion_checks(irp, state) && irp.CurrentLocation == irp.StackCount
}

/// Whether completing `irp` in `state` breaks none of [`check_completion_request`]'s rules
/// (each cited there): not completed already, held by a driver (its current location not
/// past the last), no cancel routine set, a status other than `STATUS_PENDING`.
fn passes_completion_checks(irp: &IRP, state: IrpState) -> bool {
    state != IrpState::Completed
        && i32::from(irp.CurrentLocation) <= i32::from(irp.StackCount)
        && irp.CancelRoutine.is_none()
        && irp.IoStatus.Status != STATUS_PENDING
}

/// `IofCompleteRequest`'s checks before the walk, on an IRP in `state`; gives the walk's top
/// (one past the last stack location).
///
/// # Safety
/// `Irp` is a live IRP.
unsafe fn check_completion_request(Irp: *mut IRP, state: IrpState) -> i32 {
    // SAFETY: the caller guarantees a live IRP; borrowed only for these reads.
    let irp = unsafe { &*Irp };
    let top = i32::from(irp.StackCount) + 1;
    if passes_completion_checks(irp, state) {
        return top;
    }
    // WDK "Bug Check 0x44: MULTIPLE_IRP_COMPLETE_REQUESTS"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x44--multiple-irp-complete-requests): completing an IRP
    // that was already completed.
    if state == IrpState::Completed || i32::from(irp.CurrentLocation) > top {
        bugcheck(
            "MULTIPLE_IRP_COMPLETE_REQUESTS",
            format!("IofCompleteRequest on IRP {Irp:p}, which was already completed"),
        );
    }
    // 0xC9 I/O error 0x209 (bug-check-0xc9--driver-verifier-iomanager-violation):
    // completing an IRP the caller does not hold.
    if i32::from(irp.CurrentLocation) == top {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!(
                "IofCompleteRequest on IRP {Irp:p}, which no driver holds (its current \
                 location is past the last: never sent, or completed and reused)"
            ),
        );
    }
    // WDK "Bug Check 0x48: CANCEL_STATE_IN_COMPLETED_IRP"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x48--cancel-state-in-completed-irp): parameter 2 is the
    // cancel routine still set; Driver Verifier reports the same as 0xC9 0x07.
    if irp.CancelRoutine.is_some() {
        bugcheck(
            "CANCEL_STATE_IN_COMPLETED_IRP",
            format!("IofCompleteRequest on IRP {Irp:p} with a cancel routine still set"),
        );
    }
    // 0xC9 0x06 (bug-check-0xc9--driver-verifier-iomanager-violation): completing with
    // a status marked pending.
    if irp.IoStatus.Status == STATUS_PENDING {
        bugcheck(
            "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
            format!("IofCompleteRequest on IRP {Irp:p} with IoStatus.Status STATUS_PENDING"),
        );
    }
    top
}

/// Calls the completion routine of the location `IofCompleteRequest` just spent, with the
/// device of the location now current (none at the top), and checks it returned at `irql`,
/// the IRQL it was called at.
///
/// # Safety
/// `Irp` is a live IRP being completed; `routine` and `context` are its spent location's.
unsafe fn run_completion_routine(
    Irp: *mut IRP,
    routine: IO_COMPLETION_ROUTINE,
    context: PVOID,
    at_top: bool,
    irql: KIRQL,
) -> NTSTATUS {
    let device = if at_top {
        core::ptr::null_mut()
    } else {
        // SAFETY: as above; below the top, the new current location is one of
        // the IRP's stack locations.
        let next = unsafe { crate::IoGetCurrentIrpStackLocation(Irp) };
        // SAFETY: as just said.
        unsafe { (*next).DeviceObject }
    };
    let result = if super::device::is_unload_safe_completion(routine) {
        // The I/O manager's own routine (IoSetCompletionRoutineEx): kernel
        // code that runs the driver's routine inside.
        // SAFETY: the routine set for this location, called as the I/O manager
        // would, with the IRP still live.
        unsafe { routine(device, Irp, context) }
    } else {
        verifier::in_completion_routine(|| {
            // SAFETY: as above, inside the verifier's guard.
            unsafe { routine(device, Irp, context) }
        })
    };
    // WDK "Bug Check 0xC8: IRQL_UNEXPECTED_VALUE"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc8--irql-unexpected-value): the routine did
    // not restore the IRQL it was called at.
    if irql::current() != irql {
        bugcheck(
            "IRQL_UNEXPECTED_VALUE",
            format!(
                "completion routine {routine:p} of IRP {Irp:p} returned at IRQL \
                 {} (called at {irql})",
                irql::current()
            ),
        );
    }
    result
}

/// Host implementation of `IoCancelIrp`: sets `Cancel`, and calls the cancel routine (if any)
/// with the cancel spin lock held and `CancelIrql` set; the routine releases the lock. TRUE if
/// a routine was called. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irp` must be a live IRP.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoCancelIrp(Irp: *mut IRP) -> BOOLEAN {
    // WDK "IoCancelIrp function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocancelirp): IRQL <=
    // DISPATCH_LEVEL. The routine is taken with IoSetCancelRoutine
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcancelroutine) and called at DISPATCH_LEVEL with the cancel
    // spin lock held, as DRIVER_CANCEL (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_cancel) says.
    irql::require_at_most(DISPATCH_LEVEL, "IoCancelIrp");
    let _ = state_of(&machine::current("IoCancelIrp"), Irp, "IoCancelIrp");
    let mut old = 0;
    // SAFETY: a valid out-pointer.
    unsafe { IoAcquireCancelSpinLock(&raw mut old) };
    // An atomic store: a lower driver reads Cancel after arming its cancel routine without
    // the cancel lock (the WSK provider's `arm`), so a plain write would race with that read
    // (Miri reports it); on x64 both are the same plain byte access.
    // SAFETY: the IRP is live (checked).
    let field = unsafe { &raw mut (*Irp).Cancel };
    // SAFETY: a byte of the live IRP (aligned for an AtomicU8), accessed atomically by
    // everyone while the IRP is in flight.
    let cancel = unsafe { core::sync::atomic::AtomicU8::from_ptr(field) };
    cancel.store(TRUE, core::sync::atomic::Ordering::SeqCst);
    // SAFETY: as above.
    let Some(routine) = (unsafe { crate::IoSetCancelRoutine(Irp, None) }) else {
        // SAFETY: acquired above at `old`.
        unsafe { IoReleaseCancelSpinLock(old) };
        return FALSE;
    };
    // Read through the pointer, not a reference to the whole IRP: the holder may swap its
    // CancelRoutine on another thread meanwhile (finding it gone), which a reference would
    // race with (Miri reports it).
    // SAFETY: as above; read while the cancel lock is held.
    let current_location = unsafe { (*Irp).CurrentLocation };
    // SAFETY: as above.
    let stack_count = unsafe { (*Irp).StackCount };
    // WDK "Bug Check 0x48: CANCEL_STATE_IN_COMPLETED_IRP"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x48--cancel-state-in-completed-irp): an IRP completed
    // and then cancelled.
    if current_location > stack_count {
        // SAFETY: acquired above at `old`.
        unsafe { IoReleaseCancelSpinLock(old) };
        bugcheck(
            "CANCEL_STATE_IN_COMPLETED_IRP",
            format!("IoCancelIrp on IRP {Irp:p}: no driver holds it, yet it has a cancel routine"),
        );
    }
    // SAFETY: as above; the cancel routine releases the lock at this IRQL.
    unsafe { (*Irp).CancelIrql = old };
    // SAFETY: held by a driver (checked just above): its current location is a stack location.
    let location = unsafe { crate::IoGetCurrentIrpStackLocation(Irp) };
    // SAFETY: as just said.
    let device = unsafe { (*location).DeviceObject };
    verifier::in_callback(|| {
        // SAFETY: the routine the holder set, called as IoCancelIrp does: with the cancel spin
        // lock held and the IRP live.
        unsafe { routine(device, Irp) }
    });
    TRUE
}

/// Host implementation of `IoAcquireCancelSpinLock`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irql` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoAcquireCancelSpinLock(Irql: *mut KIRQL) {
    // WDK "IoAcquireCancelSpinLock function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioacquirecancelspinlock): IRQL <= DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "IoAcquireCancelSpinLock");
    let machine = machine::current("IoAcquireCancelSpinLock");
    let old = irql::raise(DISPATCH_LEVEL);
    // SAFETY: the machine's cancel lock lives as long as the machine.
    unsafe { spinlock::acquire(machine.cancel_lock_ptr(), "IoAcquireCancelSpinLock") };
    // SAFETY: the caller guarantees a writable KIRQL.
    unsafe { Irql.write(old) };
}

/// Host implementation of `IoReleaseCancelSpinLock`. `DISPATCH_LEVEL`, cancel lock held.
///
/// # Safety
/// The caller must hold the cancel spin lock.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoReleaseCancelSpinLock(Irql: KIRQL) {
    // WDK "IoReleaseCancelSpinLock function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioreleasecancelspinlock): IRQL = DISPATCH_LEVEL.
    irql::require_dispatch("IoReleaseCancelSpinLock");
    let machine = machine::current("IoReleaseCancelSpinLock");
    // SAFETY: the machine's cancel lock lives as long as the machine.
    unsafe { spinlock::release(machine.cancel_lock_ptr(), "IoReleaseCancelSpinLock") };
    irql::lower(Irql);
}

/// Leak report lines: every IRP still allocated.
pub(crate) fn leaks(table: &IrpTable) -> Vec<String> {
    table
        .live
        .iter()
        .map(|(&irp, info)| format!("IRP {:#x} ({:?}) not freed", irp, info.state))
        .collect()
}
