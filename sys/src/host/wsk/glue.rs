//! The provider's view of the host kernel's NT side: IRQL, the verifier, and the IRP hand-off
//! a lower driver does. One place, so the provider reads the same whatever the NT side names
//! things.

use std::string::String;

use crate::{
    DISPATCH_LEVEL, IO_NO_INCREMENT, IRP, IoMarkIrpPending, IofCompleteRequest, KIRQL, NTSTATUS,
};

/// Records a verifier bugcheck and panics with its name.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the verifier's signature: it keeps the detail"
)]
pub(super) fn bugcheck(name: &'static str, detail: String) -> ! {
    // Interim until the NT side's verifier is merged.
    panic!("bugcheck {name}: {detail}")
}

/// Fails the verifier unless the calling thread runs at `max` or below.
pub(super) fn require_at_most(max: KIRQL, function: &'static str) {
    let irql = current_irql();
    if irql > max {
        bugcheck(
            "IRQL_NOT_LESS_OR_EQUAL",
            std::format!("{function} at IRQL {irql}"),
        );
    }
}

/// The calling thread's IRQL.
pub(super) fn current_irql() -> KIRQL {
    crate::KeGetCurrentIrql()
}

/// Takes `irp` as the lower driver, as `IoCallDriver` hands it over: the next stack location
/// becomes current.
///
/// # Safety
/// `irp` is a live IRP with a stack location left for the provider.
pub(super) unsafe fn enter(irp: *mut IRP) {
    // SAFETY: forwarded contract.
    unsafe { crate::IoSetNextIrpStackLocation(irp) };
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
    // SAFETY: the caller owns completion; the IRP is live until the completion routine ran.
    unsafe {
        (*irp).IoStatus.Status = status;
        (*irp).IoStatus.Information = information;
        IofCompleteRequest(irp, IO_NO_INCREMENT);
    }
}

/// Runs `f` at `DISPATCH_LEVEL` (as a NIC's DPC would), restoring the IRQL afterwards.
pub(super) fn at_dispatch<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: raising to DISPATCH_LEVEL from a thread at or below it, lowered right after.
    let old = unsafe { crate::KeRaiseIrql(DISPATCH_LEVEL) };
    let result = f();
    // SAFETY: restores the level the matching raise returned.
    unsafe { crate::KeLowerIrql(old) };
    result
}
