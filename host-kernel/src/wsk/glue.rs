//! The provider's view of the host kernel's NT side: IRQL, the verifier, and the IRP hand-off
//! a lower driver does. One place, so the provider reads the same whatever the NT side names
//! things.

use std::string::String;

pub(super) use crate::irp::IrpPtr;

use crate::{
    DISPATCH_LEVEL, IO_NO_INCREMENT, IRP, IoMarkIrpPending, IofCompleteRequest, KIRQL, NTSTATUS,
};

/// Records a verifier bugcheck and panics with its name.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the verifier's signature: it keeps the detail"
)]
pub(super) fn bugcheck(name: &'static str, detail: String) -> ! {
    crate::verifier::bugcheck(name, detail)
}

/// Fails the verifier unless the calling thread runs at `max` or below.
pub(super) fn require_at_most(max: KIRQL, function: &'static str) {
    crate::irql::require_at_most(max, function);
}

/// Takes `irp` as the lower driver, as `IoCallDriver` hands it over: the next stack location
/// becomes current.
///
/// # Safety
/// `irp` is a live IRP with a stack location left for the provider.
pub(super) unsafe fn enter(irp: *mut IRP) {
    // SAFETY: forwarded contract.
    unsafe { crate::irp::call_driver_enter(irp) };
}

/// True if `mdl` is a live MDL of this kernel (from `IoAllocateMdl`, not yet freed).
pub(super) fn mdl_is_live(mdl: *const crate::MDL) -> bool {
    crate::mdl::is_live(mdl)
}

/// Marks `irp` pending before the dispatch routine returns `STATUS_PENDING`.
///
/// # Safety
/// `irp` was entered with [`enter`] and is not yet completed.
pub(super) unsafe fn mark_pending(irp: *mut IRP) {
    // SAFETY: forwarded contract: the provider's stack location is current.
    unsafe { IoMarkIrpPending(irp) };
}

/// Sets the final status and completes `irp` on the calling thread at its IRQL.
///
/// # Safety
/// `irp` was entered with [`enter`] and this call owns its completion.
pub(super) unsafe fn complete(irp: *mut IRP, status: NTSTATUS, information: usize) {
    // SAFETY: the caller owns completion, so nobody else writes the IRP's status now; the IRP
    // is live until its completion routine ran.
    let io_status = unsafe { &mut (*irp).IoStatus };
    io_status.Status = status;
    io_status.Information = information;
    // SAFETY: as above: the caller owns completion of this live IRP.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
}

/// Runs `f` (a completion on the reactor thread) so that a panic in a completion routine, or a
/// bugcheck the verifier raises while completing, is recorded and does not stop the reactor.
pub(super) fn caught(f: impl FnOnce()) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        crate::verifier::record_caught(&*payload, "the WSK reactor (an IRP completion)");
        crate::irql::set_unchecked(DISPATCH_LEVEL);
    }
}

/// Runs `f` at `DISPATCH_LEVEL` (as a NIC's DPC would), restoring the IRQL afterwards.
pub(super) fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    let old = crate::irql::raise(DISPATCH_LEVEL);
    let result = f();
    crate::irql::lower(old);
    result
}
