//! The kernel functions, declared once ([`kernel_function_list!`]). On Windows targets each is
//! a raw-dylib import from `ntoskrnl.exe` or `netio.sys`; everywhere else it is a plain
//! `extern` declaration that the host kernel (crate `wsk-host`) resolves at link time with an
//! `#[unsafe(no_mangle)]` export of the same name, whose signature it checks at compile time
//! against the same list; so callers are identical on every target. Also the host kernel's own
//! exports ([`host_export_list!`]) that the inline helpers call off Windows.

use core::ffi::c_void;

#[cfg(not(target_os = "windows"))]
use crate::nt::KUSER_SHARED_DATA_HEAD;
use crate::nt::{
    DEVICE_OBJECT, DRIVER_CANCEL, DRIVER_OBJECT, EVENT_TYPE, IO_COMPLETION_ROUTINE, IRP,
    KDEFERRED_ROUTINE, KDPC, KEVENT, KSTART_ROUTINE, KTIMER, KWAIT_REASON, MDL, POBJECT_TYPE,
    POOL_TYPE, TIMER_TYPE,
};
use crate::ntdef::{
    ACCESS_MASK, BOOLEAN, CCHAR, CLIENT_ID, HANDLE, KIRQL, KPRIORITY, KPROCESSOR_MODE, KSPIN_LOCK,
    LARGE_INTEGER, NTSTATUS, OBJECT_ATTRIBUTES, PROCESSOR_NUMBER, PVOID, SIZE_T, UNICODE_STRING,
};
use crate::wsk::{WSK_CLIENT_NPI, WSK_PROVIDER_NPI, WSK_REGISTRATION};

// Names that only appear in signatures below; keep the imports used on every target.
const _: Option<(
    IO_COMPLETION_ROUTINE,
    *mut DEVICE_OBJECT,
    *mut c_void,
    *mut DRIVER_OBJECT,
)> = None;

/// Declares the kernel functions of a `kernel_function_list!` for the target. On Windows: a
/// raw-dylib extern block per DLL. Elsewhere: plain `extern` declarations, resolved at link
/// time by the host kernel's `#[unsafe(no_mangle)]` exports (crate `wsk-host`), as a driver's
/// imports are resolved against ntoskrnl's exports; the host crate checks its definitions
/// against this same list at compile time. The host side uses the `"system-unwind"` ABI (the
/// same calling convention as `"system"`): its verifier reports a bugcheck as a panic, which
/// must be able to unwind out of the kernel function into the test that provoked it.
macro_rules! declare_kernel_functions {
    ($(
        dll $dll:literal {
            $( $(#[$meta:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*
        }
    )*) => {
        $(
            #[cfg(target_os = "windows")]
            #[link(name = $dll, kind = "raw-dylib", modifiers = "+verbatim")]
            unsafe extern "system" {
                $( $(#[$meta])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
            }
            #[cfg(not(target_os = "windows"))]
            unsafe extern "system-unwind" {
                $( $(#[$meta])* pub fn $name($($arg: $ty),*) $(-> $ret)?; )*
            }
        )*
    };
}

/// The one list of kernel functions, handed to `$callback` (a `macro_rules!` taking
/// `dll "name" { /// docs  fn Name(Arg: Type, ...) -> Ret; ... } ...`). `sys` declares the
/// functions from it; the host kernel (`wsk-host`) asserts from it, at compile time, that each
/// of its exports has exactly the declared signature. Types are named as `wsk_sys` exports
/// them (plus `PVOID` etc.): bring `wsk_sys::*` into scope where the callback expands.
#[doc(hidden)]
#[macro_export]
macro_rules! kernel_function_list {
    ($callback:path) => {
        $callback! {
            dll "ntoskrnl.exe" {
                /// Allocates an IRP with `StackSize` stack locations. IRQL <= `DISPATCH_LEVEL`.
                fn IoAllocateIrp(StackSize: CCHAR, ChargeQuota: BOOLEAN) -> *mut IRP;
                /// Reinitialises a completed IRP for reuse; `Iostatus` becomes its status. IRQL <= `DISPATCH_LEVEL`.
                fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS);
                /// Frees an IRP allocated with `IoAllocateIrp`; never while it is pending. IRQL <= `DISPATCH_LEVEL`.
                fn IoFreeIrp(Irp: *mut IRP);
                /// Requests cancellation; returns TRUE if a cancel routine was called. IRQL <= `DISPATCH_LEVEL`.
                fn IoCancelIrp(Irp: *mut IRP) -> BOOLEAN;
                /// Completes an IRP: runs completion routines from the current location up. IRQL <= `DISPATCH_LEVEL`.
                fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: CCHAR);
                /// Acquires the global cancel spin lock (raises to `DISPATCH_LEVEL`).
                fn IoAcquireCancelSpinLock(Irql: *mut KIRQL);
                /// Releases the cancel spin lock, restoring `Irql`.
                fn IoReleaseCancelSpinLock(Irql: KIRQL);
                /// Registers a completion routine like `IoSetCompletionRoutine`, and keeps the driver
                /// loaded until the routine has returned: the I/O manager references `DeviceObject`
                /// (the driver's own) and allocates a context until then. `STATUS_INSUFFICIENT_RESOURCES`
                /// when it cannot. The way a non-PnP driver's routines outlive `DriverUnload` safely
                /// (SDV rule `IoSetCompletionRoutineNonPnpDriver`). A stub that raises under Wine 8.
                /// IRQL <= `DISPATCH_LEVEL`.
                fn IoSetCompletionRoutineEx(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP, CompletionRoutine: Option<IO_COMPLETION_ROUTINE>, Context: PVOID, InvokeOnSuccess: BOOLEAN, InvokeOnError: BOOLEAN, InvokeOnCancel: BOOLEAN) -> NTSTATUS;
                /// Creates a device object for the driver (`DeviceExtensionSize` 0 and no name suffice
                /// to anchor `IoSetCompletionRoutineEx`). `PASSIVE_LEVEL`.
                fn IoCreateDevice(DriverObject: *mut DRIVER_OBJECT, DeviceExtensionSize: u32, DeviceName: *mut UNICODE_STRING, DeviceType: u32, DeviceCharacteristics: u32, Exclusive: BOOLEAN, DeviceObject: *mut *mut DEVICE_OBJECT) -> NTSTATUS;
                /// Deletes a device object; it goes once its last reference is dropped. `PASSIVE_LEVEL`.
                fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT);
                /// Allocates an MDL describing a buffer. IRQL <= `DISPATCH_LEVEL`.
                fn IoAllocateMdl(VirtualAddress: PVOID, Length: u32, SecondaryBuffer: BOOLEAN, ChargeQuota: BOOLEAN, Irp: *mut IRP) -> *mut MDL;
                /// Frees an MDL. IRQL <= `DISPATCH_LEVEL`.
                fn IoFreeMdl(Mdl: *mut MDL);
                /// Fills an MDL for a nonpaged-pool buffer. IRQL <= `DISPATCH_LEVEL`.
                fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL);
                /// Maps an MDL's locked pages into system space. IRQL <= `DISPATCH_LEVEL`.
                fn MmMapLockedPagesSpecifyCache(MemoryDescriptorList: *mut MDL, AccessMode: KPROCESSOR_MODE, CacheType: i32, RequestedAddress: PVOID, BugCheckOnFailure: u32, Priority: u32) -> PVOID;
                /// Looks up an exported kernel routine by name (`ExAllocatePool2` on new kernels). `PASSIVE_LEVEL`.
                fn MmGetSystemRoutineAddress(SystemRoutineName: *mut UNICODE_STRING) -> PVOID;
                /// Initialises a DPC. Any IRQL.
                fn KeInitializeDpc(Dpc: *mut KDPC, DeferredRoutine: Option<KDEFERRED_ROUTINE>, DeferredContext: PVOID);
                /// Queues a DPC; FALSE if it was already queued. A running DPC can be queued again. IRQL <= `HIGH_LEVEL`.
                fn KeInsertQueueDpc(Dpc: *mut KDPC, SystemArgument1: PVOID, SystemArgument2: PVOID) -> BOOLEAN;
                /// Removes a queued DPC; FALSE if it was not queued. Any IRQL.
                fn KeRemoveQueueDpc(Dpc: *mut KDPC) -> BOOLEAN;
                /// Waits until every DPC queued so far on every processor has run. `PASSIVE_LEVEL`.
                fn KeFlushQueuedDpcs();
                /// Targets a DPC at one processor. Any IRQL (DPC not queued).
                fn KeSetTargetProcessorDpcEx(Dpc: *mut KDPC, ProcNumber: *mut PROCESSOR_NUMBER) -> NTSTATUS;
                /// Initialises an event. Any IRQL.
                fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: BOOLEAN);
                /// Signals an event; returns its previous state. IRQL <= `DISPATCH_LEVEL` (Wait FALSE).
                fn KeSetEvent(Event: *mut KEVENT, Increment: KPRIORITY, Wait: BOOLEAN) -> i32;
                /// Clears an event. IRQL <= `DISPATCH_LEVEL`.
                fn KeClearEvent(Event: *mut KEVENT);
                /// Clears an event and returns its previous state. IRQL <= `DISPATCH_LEVEL`.
                fn KeResetEvent(Event: *mut KEVENT) -> i32;
                /// Waits for an object. `PASSIVE_LEVEL`/`APC_LEVEL`, or `DISPATCH_LEVEL` with a zero timeout only.
                fn KeWaitForSingleObject(Object: PVOID, WaitReason: KWAIT_REASON, WaitMode: KPROCESSOR_MODE, Alertable: BOOLEAN, Timeout: *mut LARGE_INTEGER) -> NTSTATUS;
                /// Sleeps the current thread. `PASSIVE_LEVEL`.
                fn KeDelayExecutionThread(WaitMode: KPROCESSOR_MODE, Alertable: BOOLEAN, Interval: *mut LARGE_INTEGER) -> NTSTATUS;
                /// Initialises a timer. IRQL <= `DISPATCH_LEVEL`.
                fn KeInitializeTimerEx(Timer: *mut KTIMER, Type: TIMER_TYPE);
                /// Arms a timer (negative `DueTime`: relative, 100 ns units), queueing `Dpc` at expiry; TRUE if it was already armed. IRQL <= `DISPATCH_LEVEL`.
                fn KeSetTimerEx(Timer: *mut KTIMER, DueTime: LARGE_INTEGER, Period: i32, Dpc: *mut KDPC) -> BOOLEAN;
                /// Disarms a timer; TRUE if it was armed. IRQL <= `DISPATCH_LEVEL`.
                fn KeCancelTimer(Timer: *mut KTIMER) -> BOOLEAN;
                /// Acquires a spin lock, raising to `DISPATCH_LEVEL`; returns the previous IRQL. IRQL <= `DISPATCH_LEVEL`.
                fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL;
                /// Releases a spin lock and lowers to `NewIrql`. `DISPATCH_LEVEL`.
                fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL);
                /// Acquires a spin lock when already at `DISPATCH_LEVEL`.
                fn KeAcquireSpinLockAtDpcLevel(SpinLock: *mut KSPIN_LOCK);
                /// Releases a spin lock, staying at `DISPATCH_LEVEL`.
                fn KeReleaseSpinLockFromDpcLevel(SpinLock: *mut KSPIN_LOCK);
                /// The current processor's number and group. Any IRQL.
                fn KeGetCurrentProcessorNumberEx(ProcNumber: *mut PROCESSOR_NUMBER) -> u32;
                /// Number of active processors in a group (`ALL_PROCESSOR_GROUPS` = 0xffff for all). Any IRQL.
                fn KeQueryActiveProcessorCountEx(GroupNumber: u16) -> u32;
                // Not imported, although callers use them (issue 9, "Real Windows"):
                // - `KeQueryInterruptTime` is no x64 export (wdm.h reads KUSER_SHARED_DATA): it is
                //   `crate::KeQueryInterruptTime`, inline.
                // - `KeQueryPerformanceCounter` lives in ntoskrnl on Windows 8+ but in hal.dll before
                //   (and in Wine): resolved at run time, see `crate::init_precise_clock`.
                /// Stops the machine with a bug check; never returns. Any IRQL. Use
                /// [`crate::bugcheck_on_panic`] from a `#[panic_handler]`.
                fn KeBugCheckEx(BugCheckCode: u32, BugCheckParameter1: usize, BugCheckParameter2: usize, BugCheckParameter3: usize, BugCheckParameter4: usize) -> !;
                /// Allocates pool memory (legacy; zeroing is not guaranteed). IRQL <= `DISPATCH_LEVEL` for nonpaged.
                fn ExAllocatePoolWithTag(PoolType: POOL_TYPE, NumberOfBytes: SIZE_T, Tag: u32) -> PVOID;
                /// Frees pool memory with its tag. IRQL <= `DISPATCH_LEVEL` for nonpaged.
                fn ExFreePoolWithTag(P: PVOID, Tag: u32);
                /// Creates a system thread at `PASSIVE_LEVEL`. `PASSIVE_LEVEL`.
                fn PsCreateSystemThread(ThreadHandle: *mut HANDLE, DesiredAccess: ACCESS_MASK, ObjectAttributes: *mut OBJECT_ATTRIBUTES, ProcessHandle: HANDLE, ClientId: *mut CLIENT_ID, StartRoutine: Option<KSTART_ROUTINE>, StartContext: PVOID) -> NTSTATUS;
                /// Ends the calling system thread. `PASSIVE_LEVEL`.
                fn PsTerminateSystemThread(ExitStatus: NTSTATUS) -> NTSTATUS;
                /// References the object behind a handle. `PASSIVE_LEVEL`.
                fn ObReferenceObjectByHandle(Handle: HANDLE, DesiredAccess: ACCESS_MASK, ObjectType: POBJECT_TYPE, AccessMode: KPROCESSOR_MODE, Object: *mut PVOID, HandleInformation: PVOID) -> NTSTATUS;
                /// Drops an object reference (`ObDereferenceObject`). IRQL <= `DISPATCH_LEVEL`.
                fn ObfDereferenceObject(Object: PVOID) -> isize;
                /// Closes a kernel handle. `PASSIVE_LEVEL`.
                fn ZwClose(Handle: HANDLE) -> NTSTATUS;
                /// Opens a registry key. `PASSIVE_LEVEL`.
                fn ZwOpenKey(KeyHandle: *mut HANDLE, DesiredAccess: ACCESS_MASK, ObjectAttributes: *mut OBJECT_ATTRIBUTES) -> NTSTATUS;
                /// Reads a registry value. `PASSIVE_LEVEL`.
                fn ZwQueryValueKey(KeyHandle: HANDLE, ValueName: *mut UNICODE_STRING, KeyValueInformationClass: i32, KeyValueInformation: PVOID, Length: u32, ResultLength: *mut u32) -> NTSTATUS;
            }
            dll "netio.sys" {
                /// Registers a WSK client. `PASSIVE_LEVEL`.
                fn WskRegister(WskClientNpi: *mut WSK_CLIENT_NPI, WskRegistration: *mut WSK_REGISTRATION) -> NTSTATUS;
                /// Deregisters; blocks until captures are released and every socket is closed. `PASSIVE_LEVEL`.
                fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION);
                /// Captures the provider NPI, waiting up to `WaitTimeout` ms. `PASSIVE_LEVEL`, or <= `DISPATCH_LEVEL` with `WSK_NO_WAIT`.
                fn WskCaptureProviderNPI(WskRegistration: *mut WSK_REGISTRATION, WaitTimeout: u32, WskProviderNpi: *mut WSK_PROVIDER_NPI) -> NTSTATUS;
                /// Releases one capture. IRQL <= `DISPATCH_LEVEL`.
                fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION);
            }
        }
    };
}

kernel_function_list!(declare_kernel_functions);

/// Declares the host kernel's own exports (a `host_export_list!`), on targets other than
/// Windows only: each item is `safe fn` or `unsafe fn`, as in an `unsafe extern` block.
macro_rules! declare_host_exports {
    ($( $(#[$meta:meta])* $safety:ident fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        #[cfg(not(target_os = "windows"))]
        unsafe extern "system-unwind" {
            $( $(#[$meta])* pub $safety fn $name($($arg: $ty),*) $(-> $ret)?; )*
        }
    };
}

/// The host kernel's own exports, which `sys`'s inline helpers call on targets other than
/// Windows: what the processor (CR8 for the IRQL), the kernel's `KUSER_SHARED_DATA` page and
/// `DbgPrintEx` are on Windows. Handed to `$callback` like [`kernel_function_list!`]: `sys`
/// declares them, the host kernel (`wsk-host`) checks its `#[unsafe(no_mangle)]` definitions
/// against them. Not part of the driver-facing API: use [`crate::KeGetCurrentIrql`],
/// [`crate::KeRaiseIrql`], [`crate::KeLowerIrql`], [`crate::KeQueryInterruptTime`] and
/// [`crate::dbg_print`].
#[doc(hidden)]
#[macro_export]
macro_rules! host_export_list {
    ($callback:path) => {
        $callback! {
            /// The calling thread's IRQL (`KeGetCurrentIrql`; CR8 on Windows). Any IRQL.
            safe fn host_current_irql() -> KIRQL;
            /// Raises the calling thread's IRQL to `NewIrql` and returns the previous one
            /// (`KeRaiseIrql`). `NewIrql` must not be below the current IRQL.
            unsafe fn host_raise_irql(NewIrql: KIRQL) -> KIRQL;
            /// Lowers the calling thread's IRQL to `NewIrql`, saved by `host_raise_irql`
            /// (`KeLowerIrql`).
            unsafe fn host_lower_irql(NewIrql: KIRQL);
            /// The host's `KUSER_SHARED_DATA` page, refreshed: what `KI_USER_SHARED_DATA` is on
            /// Windows. Lives for the whole process. Any IRQL.
            safe fn host_shared_user_data() -> *const KUSER_SHARED_DATA_HEAD;
            /// Debug output (`DbgPrintEx`): `Length` bytes of text at `Text`, which must be
            /// readable for the call. Any IRQL.
            unsafe fn host_dbg_print(ComponentId: u32, Level: u32, Text: *const u8, Length: usize);
        }
    };
}

host_export_list!(declare_host_exports);

/// `ALL_PROCESSOR_GROUPS` for [`KeQueryActiveProcessorCountEx`].
pub const ALL_PROCESSOR_GROUPS: u16 = 0xffff;

#[cfg(target_os = "windows")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    /// Kernel debug print, `printf`-style. IRQL <= `DIRQL` (only `%` formats without
    /// Unicode at `DISPATCH_LEVEL`). Use [`crate::dbg_print`] rather than calling it.
    pub fn DbgPrintEx(ComponentId: u32, Level: u32, Format: *const u8, ...) -> u32;
}

// Unused on Windows, where DRIVER_CANCEL appears only through IRP.
const _: Option<DRIVER_CANCEL> = None;
