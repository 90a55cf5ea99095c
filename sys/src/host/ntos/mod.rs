//! The host kernel's ntoskrnl: IRQL, processors and DPCs, IRPs, MDLs, pool, events,
//! timers, spin locks, threads, registry.
//!
//! Interim: signature-checked stubs until the host kernel issue implements them.

#![allow(
    clippy::pedantic,
    clippy::missing_safety_doc,
    unused_variables,
    reason = "interim stubs"
)]

use crate::*;

/// The current IRQL of the calling thread.
#[must_use]
pub fn host_current_irql() -> KIRQL {
    PASSIVE_LEVEL
}

/// Raises the calling thread's IRQL.
///
/// # Safety
/// See `KeRaiseIrql`.
pub unsafe fn host_raise_irql(new_irql: KIRQL) -> KIRQL {
    panic!("host kernel: not yet implemented: KeRaiseIrql")
}

/// Lowers the calling thread's IRQL.
///
/// # Safety
/// See `KeLowerIrql`.
pub unsafe fn host_lower_irql(new_irql: KIRQL) {
    panic!("host kernel: not yet implemented: KeLowerIrql")
}

/// Writes debug output to stderr.
pub fn host_dbg_print(component: u32, level: u32, bytes: &[u8]) {
    std::eprint!("{}", std::string::String::from_utf8_lossy(bytes));
}

/// Host implementation of `IoAllocateIrp`.
pub unsafe extern "system" fn IoAllocateIrp(StackSize: CCHAR, ChargeQuota: BOOLEAN) -> *mut IRP {
    panic!("host kernel: not yet implemented: IoAllocateIrp")
}

/// Host implementation of `IoReuseIrp`.
pub unsafe extern "system" fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS) {
    panic!("host kernel: not yet implemented: IoReuseIrp")
}

/// Host implementation of `IoFreeIrp`.
pub unsafe extern "system" fn IoFreeIrp(Irp: *mut IRP) {
    panic!("host kernel: not yet implemented: IoFreeIrp")
}

/// Host implementation of `IoCancelIrp`.
pub unsafe extern "system" fn IoCancelIrp(Irp: *mut IRP) -> BOOLEAN {
    panic!("host kernel: not yet implemented: IoCancelIrp")
}

/// Host implementation of `IofCompleteRequest`.
pub unsafe extern "system" fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: CCHAR) {
    panic!("host kernel: not yet implemented: IofCompleteRequest")
}

/// Host implementation of `IoAcquireCancelSpinLock`.
pub unsafe extern "system" fn IoAcquireCancelSpinLock(Irql: *mut KIRQL) {
    panic!("host kernel: not yet implemented: IoAcquireCancelSpinLock")
}

/// Host implementation of `IoReleaseCancelSpinLock`.
pub unsafe extern "system" fn IoReleaseCancelSpinLock(Irql: KIRQL) {
    panic!("host kernel: not yet implemented: IoReleaseCancelSpinLock")
}

/// Host implementation of `IoAllocateMdl`.
pub unsafe extern "system" fn IoAllocateMdl(
    VirtualAddress: PVOID,
    Length: u32,
    SecondaryBuffer: BOOLEAN,
    ChargeQuota: BOOLEAN,
    Irp: *mut IRP,
) -> *mut MDL {
    panic!("host kernel: not yet implemented: IoAllocateMdl")
}

/// Host implementation of `IoFreeMdl`.
pub unsafe extern "system" fn IoFreeMdl(Mdl: *mut MDL) {
    panic!("host kernel: not yet implemented: IoFreeMdl")
}

/// Host implementation of `MmBuildMdlForNonPagedPool`.
pub unsafe extern "system" fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL) {
    panic!("host kernel: not yet implemented: MmBuildMdlForNonPagedPool")
}

/// Host implementation of `MmMapLockedPagesSpecifyCache`.
pub unsafe extern "system" fn MmMapLockedPagesSpecifyCache(
    MemoryDescriptorList: *mut MDL,
    AccessMode: KPROCESSOR_MODE,
    CacheType: i32,
    RequestedAddress: PVOID,
    BugCheckOnFailure: u32,
    Priority: u32,
) -> PVOID {
    panic!("host kernel: not yet implemented: MmMapLockedPagesSpecifyCache")
}

/// Host implementation of `MmGetSystemRoutineAddress`.
pub unsafe extern "system" fn MmGetSystemRoutineAddress(
    SystemRoutineName: *mut UNICODE_STRING,
) -> PVOID {
    panic!("host kernel: not yet implemented: MmGetSystemRoutineAddress")
}

/// Host implementation of `KeInitializeDpc`.
pub unsafe extern "system" fn KeInitializeDpc(
    Dpc: *mut KDPC,
    DeferredRoutine: Option<KDEFERRED_ROUTINE>,
    DeferredContext: PVOID,
) {
    panic!("host kernel: not yet implemented: KeInitializeDpc")
}

/// Host implementation of `KeInsertQueueDpc`.
pub unsafe extern "system" fn KeInsertQueueDpc(
    Dpc: *mut KDPC,
    SystemArgument1: PVOID,
    SystemArgument2: PVOID,
) -> BOOLEAN {
    panic!("host kernel: not yet implemented: KeInsertQueueDpc")
}

/// Host implementation of `KeRemoveQueueDpc`.
pub unsafe extern "system" fn KeRemoveQueueDpc(Dpc: *mut KDPC) -> BOOLEAN {
    panic!("host kernel: not yet implemented: KeRemoveQueueDpc")
}

/// Host implementation of `KeFlushQueuedDpcs`.
pub unsafe extern "system" fn KeFlushQueuedDpcs() {
    panic!("host kernel: not yet implemented: KeFlushQueuedDpcs")
}

/// Host implementation of `KeSetTargetProcessorDpcEx`.
pub unsafe extern "system" fn KeSetTargetProcessorDpcEx(
    Dpc: *mut KDPC,
    ProcNumber: *mut PROCESSOR_NUMBER,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: KeSetTargetProcessorDpcEx")
}

/// Host implementation of `KeInitializeEvent`.
pub unsafe extern "system" fn KeInitializeEvent(
    Event: *mut KEVENT,
    Type: EVENT_TYPE,
    State: BOOLEAN,
) {
    panic!("host kernel: not yet implemented: KeInitializeEvent")
}

/// Host implementation of `KeSetEvent`.
pub unsafe extern "system" fn KeSetEvent(
    Event: *mut KEVENT,
    Increment: KPRIORITY,
    Wait: BOOLEAN,
) -> i32 {
    panic!("host kernel: not yet implemented: KeSetEvent")
}

/// Host implementation of `KeClearEvent`.
pub unsafe extern "system" fn KeClearEvent(Event: *mut KEVENT) {
    panic!("host kernel: not yet implemented: KeClearEvent")
}

/// Host implementation of `KeResetEvent`.
pub unsafe extern "system" fn KeResetEvent(Event: *mut KEVENT) -> i32 {
    panic!("host kernel: not yet implemented: KeResetEvent")
}

/// Host implementation of `KeWaitForSingleObject`.
pub unsafe extern "system" fn KeWaitForSingleObject(
    Object: PVOID,
    WaitReason: KWAIT_REASON,
    WaitMode: KPROCESSOR_MODE,
    Alertable: BOOLEAN,
    Timeout: *mut LARGE_INTEGER,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: KeWaitForSingleObject")
}

/// Host implementation of `KeDelayExecutionThread`.
pub unsafe extern "system" fn KeDelayExecutionThread(
    WaitMode: KPROCESSOR_MODE,
    Alertable: BOOLEAN,
    Interval: *mut LARGE_INTEGER,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: KeDelayExecutionThread")
}

/// Host implementation of `KeInitializeTimerEx`.
pub unsafe extern "system" fn KeInitializeTimerEx(Timer: *mut KTIMER, Type: TIMER_TYPE) {
    panic!("host kernel: not yet implemented: KeInitializeTimerEx")
}

/// Host implementation of `KeSetTimerEx`.
pub unsafe extern "system" fn KeSetTimerEx(
    Timer: *mut KTIMER,
    DueTime: LARGE_INTEGER,
    Period: i32,
    Dpc: *mut KDPC,
) -> BOOLEAN {
    panic!("host kernel: not yet implemented: KeSetTimerEx")
}

/// Host implementation of `KeCancelTimer`.
pub unsafe extern "system" fn KeCancelTimer(Timer: *mut KTIMER) -> BOOLEAN {
    panic!("host kernel: not yet implemented: KeCancelTimer")
}

/// Host implementation of `KeAcquireSpinLockRaiseToDpc`.
pub unsafe extern "system" fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL {
    panic!("host kernel: not yet implemented: KeAcquireSpinLockRaiseToDpc")
}

/// Host implementation of `KeReleaseSpinLock`.
pub unsafe extern "system" fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL) {
    panic!("host kernel: not yet implemented: KeReleaseSpinLock")
}

/// Host implementation of `KeAcquireSpinLockAtDpcLevel`.
pub unsafe extern "system" fn KeAcquireSpinLockAtDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    panic!("host kernel: not yet implemented: KeAcquireSpinLockAtDpcLevel")
}

/// Host implementation of `KeReleaseSpinLockFromDpcLevel`.
pub unsafe extern "system" fn KeReleaseSpinLockFromDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    panic!("host kernel: not yet implemented: KeReleaseSpinLockFromDpcLevel")
}

/// Host implementation of `KeGetCurrentProcessorNumberEx`.
pub unsafe extern "system" fn KeGetCurrentProcessorNumberEx(
    ProcNumber: *mut PROCESSOR_NUMBER,
) -> u32 {
    panic!("host kernel: not yet implemented: KeGetCurrentProcessorNumberEx")
}

/// Host implementation of `KeQueryActiveProcessorCountEx`.
pub unsafe extern "system" fn KeQueryActiveProcessorCountEx(GroupNumber: u16) -> u32 {
    panic!("host kernel: not yet implemented: KeQueryActiveProcessorCountEx")
}

/// Host implementation of `KeQueryPerformanceCounter`.
pub unsafe extern "system" fn KeQueryPerformanceCounter(
    PerformanceFrequency: *mut LARGE_INTEGER,
) -> LARGE_INTEGER {
    panic!("host kernel: not yet implemented: KeQueryPerformanceCounter")
}

/// Host implementation of `ExAllocatePoolWithTag`.
pub unsafe extern "system" fn ExAllocatePoolWithTag(
    PoolType: POOL_TYPE,
    NumberOfBytes: SIZE_T,
    Tag: u32,
) -> PVOID {
    panic!("host kernel: not yet implemented: ExAllocatePoolWithTag")
}

/// Host implementation of `ExFreePoolWithTag`.
pub unsafe extern "system" fn ExFreePoolWithTag(P: PVOID, Tag: u32) {
    panic!("host kernel: not yet implemented: ExFreePoolWithTag")
}

/// Host implementation of `PsCreateSystemThread`.
pub unsafe extern "system" fn PsCreateSystemThread(
    ThreadHandle: *mut HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectAttributes: *mut OBJECT_ATTRIBUTES,
    ProcessHandle: HANDLE,
    ClientId: *mut CLIENT_ID,
    StartRoutine: Option<KSTART_ROUTINE>,
    StartContext: PVOID,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: PsCreateSystemThread")
}

/// Host implementation of `PsTerminateSystemThread`.
pub unsafe extern "system" fn PsTerminateSystemThread(ExitStatus: NTSTATUS) -> NTSTATUS {
    panic!("host kernel: not yet implemented: PsTerminateSystemThread")
}

/// Host implementation of `ObReferenceObjectByHandle`.
pub unsafe extern "system" fn ObReferenceObjectByHandle(
    Handle: HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectType: POBJECT_TYPE,
    AccessMode: KPROCESSOR_MODE,
    Object: *mut PVOID,
    HandleInformation: PVOID,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: ObReferenceObjectByHandle")
}

/// Host implementation of `ObfDereferenceObject`.
pub unsafe extern "system" fn ObfDereferenceObject(Object: PVOID) -> isize {
    panic!("host kernel: not yet implemented: ObfDereferenceObject")
}

/// Host implementation of `ZwClose`.
pub unsafe extern "system" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    panic!("host kernel: not yet implemented: ZwClose")
}

/// Host implementation of `ZwOpenKey`.
pub unsafe extern "system" fn ZwOpenKey(
    KeyHandle: *mut HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectAttributes: *mut OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: ZwOpenKey")
}

/// Host implementation of `ZwQueryValueKey`.
pub unsafe extern "system" fn ZwQueryValueKey(
    KeyHandle: HANDLE,
    ValueName: *mut UNICODE_STRING,
    KeyValueInformationClass: i32,
    KeyValueInformation: PVOID,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    panic!("host kernel: not yet implemented: ZwQueryValueKey")
}
