//! The host kernel's ntoskrnl: IRQL, processors and DPCs, IRPs, MDLs, pool, events,
//! timers, spin locks, threads, registry, and the verifier watching all of them.

pub(crate) mod dpc;
pub(crate) mod event;
pub(crate) mod irp;
pub(crate) mod irql;
pub mod kernel;
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

/// Writes debug output (`DbgPrintEx`) to stderr and to the running kernel's debug log. Any
/// IRQL; works without a booted kernel.
pub fn host_dbg_print(component: u32, level: u32, bytes: &[u8]) {
    let _ = (component, level);
    let text = std::string::String::from_utf8_lossy(bytes);
    std::eprint!("{text}");
    kernel::append_debug_log(&text);
}
