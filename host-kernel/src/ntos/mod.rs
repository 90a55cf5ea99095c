//! The host kernel's ntoskrnl: IRQL, processors and DPCs, IRPs, MDLs, pool, events,
//! timers, spin locks, threads, registry, and the verifier watching all of them.
//!
//! # Model
//! - IRQL is per host thread. Emulated processors are threads at `DISPATCH_LEVEL` running
//!   their DPC queues; every other thread (tests, system threads, the WSK reactor) starts at
//!   `PASSIVE_LEVEL` and its processor number is a stable per-thread value.
//! - Kernel objects keep their C layout; the kernel's own state lives in tables keyed by the
//!   object's address (IRPs, pool, MDLs, queued DPCs, armed timers, handles), which the
//!   verifier reads for its checks and the unload report.
//! - A bugcheck is recorded, then raised as a panic `BUGCHECK <NAME>: <detail>`. Host kernel
//!   functions use the `"system-unwind"` ABI so the panic reaches the caller. Driver callbacks
//!   (`extern "system"`) cannot unwind: a bugcheck inside one halts the emulated processor
//!   (a fresh thread replaces it) or, on any other thread, aborts the process after printing.
//!
//! # Hooks for the WSK provider (crate-internal)
//! - `crate::verifier::bugcheck(name, detail) -> !`, and `crate::verifier::in_callback(|| ...)`
//!   around every call into client code (event callbacks), so a bugcheck there is handled.
//! - `crate::irql::{current, raise, lower, require_at_most}`.
//! - `crate::irp::call_driver_enter(irp)` first thing when a provider function takes an IRP
//!   (as `IoCallDriver` would: the next stack location becomes current and the IRP is
//!   pending); complete it with `IofCompleteRequest` at IRQL <= `DISPATCH_LEVEL`, after
//!   clearing any cancel routine. `crate::irp::is_pending(irp)` tells whether it still is.

pub(crate) mod device;
pub(crate) mod dpc;
pub(crate) mod event;
pub(crate) mod fast_hash;
pub(crate) mod irp;
pub(crate) mod irql;
pub mod kernel;
pub(crate) mod kernel_ptr;
pub(crate) mod machine;
pub(crate) mod mdl;
pub(crate) mod object;
pub(crate) mod pool;
pub(crate) mod registry;
pub(crate) mod spinlock;
pub(crate) mod timer;
pub(crate) mod verifier;

#[cfg(test)]
mod tests;

pub use device::{IoCreateDevice, IoDeleteDevice, IoSetCompletionRoutineEx};
pub use dpc::{
    KeFlushQueuedDpcs, KeGetCurrentProcessorNumberEx, KeInitializeDpc, KeInsertQueueDpc,
    KeQueryActiveProcessorCountEx, KeQueryPerformanceCounter, KeRemoveQueueDpc,
    KeSetTargetProcessorDpcEx,
};
pub use event::{
    KeClearEvent, KeDelayExecutionThread, KeInitializeEvent, KeResetEvent, KeSetEvent,
    KeWaitForSingleObject,
};
pub use irp::{
    IoAcquireCancelSpinLock, IoAllocateIrp, IoCancelIrp, IoFreeIrp, IoReleaseCancelSpinLock,
    IoReuseIrp, IofCompleteRequest,
};
pub use irql::{host_current_irql, host_lower_irql, host_raise_irql};
pub use mdl::{IoAllocateMdl, IoFreeMdl, MmBuildMdlForNonPagedPool, MmMapLockedPagesSpecifyCache};
pub use object::{
    ObReferenceObjectByHandle, ObfDereferenceObject, PsCreateSystemThread, PsTerminateSystemThread,
    ZwClose,
};
pub use pool::{
    ExAllocatePool2, ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress,
};
pub use registry::{ZwOpenKey, ZwQueryValueKey};
pub use spinlock::{
    KeAcquireSpinLockAtDpcLevel, KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock,
    KeReleaseSpinLockFromDpcLevel,
};
pub use timer::{KeCancelTimer, KeInitializeTimerEx, KeSetTimerEx};
pub use verifier::KeBugCheckEx;

/// Writes debug output (`DbgPrintEx`): `length` bytes of text at `text`, to stderr and to the
/// running kernel's debug log. Any IRQL; works without a booted kernel.
///
/// # Safety
/// `text` must be readable for `length` bytes during the call.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn host_dbg_print(
    component: u32,
    level: u32,
    text: *const u8,
    length: usize,
) {
    let _ = component;
    // SAFETY: the caller guarantees `text` is readable for `length` bytes during the call.
    let bytes = unsafe { core::slice::from_raw_parts(text, length) };
    let text = std::string::String::from_utf8_lossy(bytes);
    std::eprint!("{text}");
    kernel::append_debug_log(level, &text);
}
