//! NT kernel objects a driver allocates or receives: IRPs and their stack locations, MDLs,
//! DPCs, events, timers, the driver object, pool types, and the callback signatures.
//!
//! Layouts are the x64 ones. Anonymous C unions are flattened to the member we use where every
//! member has the same size and alignment, so Rust field paths read exactly like the C paths
//! (`Irp.Tail.Overlay.CurrentStackLocation`); the layout probe checks every one of them.

use core::ffi::c_void;

use crate::ntdef::{
    CCHAR, CSHORT, IO_STATUS_BLOCK, KPROCESSOR_MODE, LIST_ENTRY, NTSTATUS, PVOID, ULARGE_INTEGER,
    UNICODE_STRING,
};

/// `DEVICE_OBJECT`: opaque here; the echo driver creates none.
#[repr(C)]
pub struct DEVICE_OBJECT {
    _opaque: [u8; 0],
}

/// `FILE_OBJECT`: opaque.
#[repr(C)]
pub struct FILE_OBJECT {
    _opaque: [u8; 0],
}

/// `IO_COMPLETION_ROUTINE`. Runs at IRQL <= `DISPATCH_LEVEL` on any processor, possibly before
/// the call that issued the IRP has returned. For an IRP the driver allocated it must return
/// `STATUS_MORE_PROCESSING_REQUIRED`.
pub type IO_COMPLETION_ROUTINE = unsafe extern "system" fn(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    Context: PVOID,
) -> NTSTATUS;

/// `DRIVER_CANCEL`: a cancel routine, called with the cancel spin lock held.
pub type DRIVER_CANCEL = unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP);

/// `DRIVER_DISPATCH`.
pub type DRIVER_DISPATCH =
    unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS;

/// `DRIVER_UNLOAD`. Called at `PASSIVE_LEVEL`; after it returns, no code of the driver may run.
pub type DRIVER_UNLOAD = unsafe extern "system" fn(DriverObject: *mut DRIVER_OBJECT);

/// `DRIVER_INITIALIZE`: the signature of `DriverEntry`. Called at `PASSIVE_LEVEL`.
pub type DRIVER_INITIALIZE = unsafe extern "system" fn(
    DriverObject: *mut DRIVER_OBJECT,
    RegistryPath: *mut UNICODE_STRING,
) -> NTSTATUS;

/// `KDEFERRED_ROUTINE`: a DPC's routine, run at `DISPATCH_LEVEL`.
pub type KDEFERRED_ROUTINE = unsafe extern "system" fn(
    Dpc: *mut KDPC,
    DeferredContext: PVOID,
    SystemArgument1: PVOID,
    SystemArgument2: PVOID,
);

/// `KSTART_ROUTINE`: a system thread's entry point, run at `PASSIVE_LEVEL`.
pub type KSTART_ROUTINE = unsafe extern "system" fn(StartContext: PVOID);

/// `IRP_MJ_MAXIMUM_FUNCTION`.
pub const IRP_MJ_MAXIMUM_FUNCTION: usize = 0x1b;

/// `IRP`, the I/O request packet (208 bytes on x64), followed in memory by its stack locations.
#[repr(C)]
pub struct IRP {
    /// `IO_TYPE_IRP` (6).
    pub Type: CSHORT,
    /// Bytes allocated for the IRP and its stack locations.
    pub Size: u16,
    /// The MDL chain describing the buffer, if any.
    pub MdlAddress: *mut MDL,
    /// `IRP_*` flags.
    pub Flags: u32,
    /// The `AssociatedIrp` union (`MasterIrp`, `IrpCount`, `SystemBuffer`).
    pub AssociatedIrp: IRP_ASSOCIATED_IRP,
    /// Link in the issuing thread's IRP list.
    pub ThreadListEntry: LIST_ENTRY,
    /// Final status and information, written before completion routines run.
    pub IoStatus: IO_STATUS_BLOCK,
    /// Mode of the original requester.
    pub RequestorMode: KPROCESSOR_MODE,
    /// Set during completion when a lower driver returned `STATUS_PENDING`.
    pub PendingReturned: u8,
    /// Number of stack locations.
    pub StackCount: CCHAR,
    /// Index of the current stack location (`StackCount + 1` when none is current).
    pub CurrentLocation: CCHAR,
    /// Set once `IoCancelIrp` was called.
    pub Cancel: u8,
    /// IRQL saved while the cancel spin lock is held.
    pub CancelIrql: u8,
    /// APC environment.
    pub ApcEnvironment: CCHAR,
    /// `IRP_ALLOCATED_*` flags.
    pub AllocationFlags: u8,
    /// User I/O status block (threaded IRPs only).
    pub UserIosb: *mut IO_STATUS_BLOCK,
    /// User event (threaded IRPs only).
    pub UserEvent: *mut KEVENT,
    /// The `Overlay` union (APC parameters or allocation size), 16 bytes.
    pub Overlay: [u64; 2],
    /// Cancel routine, swapped atomically (`IoSetCancelRoutine`).
    pub CancelRoutine: Option<DRIVER_CANCEL>,
    /// User buffer (method neither).
    pub UserBuffer: PVOID,
    /// The `Tail` union: `Overlay` is the member the I/O manager and drivers use.
    pub Tail: IRP_TAIL,
}

/// `IRP.AssociatedIrp`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IRP_ASSOCIATED_IRP {
    /// Master IRP of an associated IRP.
    pub MasterIrp: *mut IRP,
    /// Count of associated IRPs of a master IRP.
    pub IrpCount: i32,
    /// System buffer (buffered I/O).
    pub SystemBuffer: PVOID,
}

/// `IRP.Tail`: in C a union of `Overlay`, `Apc` (`KAPC`, 88 bytes) and `CompletionKey`.
#[repr(C)]
pub union IRP_TAIL {
    /// The member in use while the IRP is in flight.
    pub Overlay: IRP_TAIL_OVERLAY,
    /// `KAPC` space, opaque.
    pub Apc: [u64; 11],
    /// Completion key.
    pub CompletionKey: PVOID,
}

/// `IRP.Tail.Overlay`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IRP_TAIL_OVERLAY {
    /// Four words for the driver that currently owns the IRP (union with `DeviceQueueEntry`).
    pub DriverContext: [PVOID; 4],
    /// Issuing thread.
    pub Thread: PVOID,
    /// Auxiliary buffer.
    pub AuxiliaryBuffer: *mut i8,
    /// List link.
    pub ListEntry: LIST_ENTRY,
    /// The current stack location (union with `PacketType`).
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    /// Original file object.
    pub OriginalFileObject: *mut FILE_OBJECT,
}

/// `IO_STACK_LOCATION` (72 bytes on x64). Only the parts a completion routine and WSK client
/// touch are named; `Parameters` is the 32-byte union seen through its `Others` member.
#[repr(C)]
pub struct IO_STACK_LOCATION {
    /// `IRP_MJ_*`.
    pub MajorFunction: u8,
    /// `IRP_MN_*`.
    pub MinorFunction: u8,
    /// `SL_*` request flags.
    pub Flags: u8,
    /// `SL_PENDING_RETURNED` and the `SL_INVOKE_ON_*` bits of the completion routine.
    pub Control: u8,
    /// The parameters union.
    pub Parameters: IO_STACK_LOCATION_PARAMETERS,
    /// Target device.
    pub DeviceObject: *mut DEVICE_OBJECT,
    /// Target file.
    pub FileObject: *mut FILE_OBJECT,
    /// Called when the IRP completes past this location (set through the *next* location).
    pub CompletionRoutine: Option<IO_COMPLETION_ROUTINE>,
    /// Context handed to `CompletionRoutine`.
    pub Context: PVOID,
}

/// `IO_STACK_LOCATION.Parameters`, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IO_STACK_LOCATION_PARAMETERS {
    /// The generic view.
    pub Others: IO_STACK_LOCATION_OTHERS,
}

/// `Parameters.Others`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IO_STACK_LOCATION_OTHERS {
    /// Argument 1.
    pub Argument1: PVOID,
    /// Argument 2.
    pub Argument2: PVOID,
    /// Argument 3.
    pub Argument3: PVOID,
    /// Argument 4.
    pub Argument4: PVOID,
}

/// The IRP's status showed pending when it was returned.
pub const SL_PENDING_RETURNED: u8 = 0x01;
/// Internal: an error was returned.
pub const SL_ERROR_RETURNED: u8 = 0x02;
/// Call the completion routine when the IRP was cancelled.
pub const SL_INVOKE_ON_CANCEL: u8 = 0x20;
/// Call the completion routine on success.
pub const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
/// Call the completion routine on error.
pub const SL_INVOKE_ON_ERROR: u8 = 0x80;

/// `IO_TYPE_IRP`, the `Type` of every IRP.
pub const IO_TYPE_IRP: CSHORT = 6;
/// `IO_NO_INCREMENT`, the priority boost for `IofCompleteRequest`.
pub const IO_NO_INCREMENT: CCHAR = 0;

/// `MDL`, a memory descriptor list header (48 bytes on x64), followed by its page numbers.
#[repr(C)]
pub struct MDL {
    /// Next MDL in a chain.
    pub Next: *mut MDL,
    /// Bytes of header plus page array.
    pub Size: CSHORT,
    /// `MDL_*` flags.
    pub MdlFlags: CSHORT,
    /// Processor the MDL was allocated on (newer WDKs; padding in older headers).
    pub AllocationProcessorNumber: u16,
    /// Reserved.
    pub Reserved: u16,
    /// Owning process, or null for system space.
    pub Process: PVOID,
    /// System-space address of the buffer once mapped.
    pub MappedSystemVa: PVOID,
    /// Page-aligned start of the buffer.
    pub StartVa: PVOID,
    /// Length of the buffer in bytes.
    pub ByteCount: u32,
    /// Offset of the buffer within its first page.
    pub ByteOffset: u32,
}

/// The buffer is mapped into system space (`MappedSystemVa` is valid).
pub const MDL_MAPPED_TO_SYSTEM_VA: CSHORT = 0x0001;
/// The pages are locked.
pub const MDL_PAGES_LOCKED: CSHORT = 0x0002;
/// The buffer is nonpaged pool (set by `MmBuildMdlForNonPagedPool`).
pub const MDL_SOURCE_IS_NONPAGED_POOL: CSHORT = 0x0004;
/// Allocated with a fixed size.
pub const MDL_ALLOCATED_FIXED_SIZE: CSHORT = 0x0008;
/// A partial MDL.
pub const MDL_PARTIAL: CSHORT = 0x0010;

/// `KDPC`, a deferred procedure call object (64 bytes on x64). Opaque to drivers apart from
/// initialisation: the kernel owns every field once it is initialised.
#[repr(C)]
pub struct KDPC {
    /// Object type.
    pub Type: u8,
    /// Queueing importance.
    pub Importance: u8,
    /// Target processor (0 = any).
    pub Number: u16,
    /// Queue link (a single-list link plus history in the newest WDKs; same 16 bytes).
    pub DpcListEntry: LIST_ENTRY,
    /// The routine.
    pub DeferredRoutine: Option<KDEFERRED_ROUTINE>,
    /// Context for the routine.
    pub DeferredContext: PVOID,
    /// First argument of the last `KeInsertQueueDpc`.
    pub SystemArgument1: PVOID,
    /// Second argument of the last `KeInsertQueueDpc`.
    pub SystemArgument2: PVOID,
    /// Non-null while the DPC is queued.
    pub DpcData: PVOID,
}

/// `DISPATCHER_HEADER`, the head of every waitable object (24 bytes).
#[repr(C)]
pub struct DISPATCHER_HEADER {
    /// Object type.
    pub Type: u8,
    /// Absolute (timers) / abandoned (mutants).
    pub Absolute: u8,
    /// Size in dwords.
    pub Size: u8,
    /// Inserted (timers).
    pub Inserted: u8,
    /// Positive when signalled.
    pub SignalState: i32,
    /// Waiters.
    pub WaitListHead: LIST_ENTRY,
}

/// `KEVENT` (24 bytes).
#[repr(C)]
pub struct KEVENT {
    /// The dispatcher header.
    pub Header: DISPATCHER_HEADER,
}

/// `KTIMER` (64 bytes on x64).
#[repr(C)]
pub struct KTIMER {
    /// The dispatcher header.
    pub Header: DISPATCHER_HEADER,
    /// Absolute due time in interrupt-time units.
    pub DueTime: ULARGE_INTEGER,
    /// Timer list link.
    pub TimerListEntry: LIST_ENTRY,
    /// DPC queued at expiry, or null.
    pub Dpc: *mut KDPC,
    /// Processor (x64).
    pub Processor: u32,
    /// Period in milliseconds, 0 for one-shot.
    pub Period: i32,
}

/// `EVENT_TYPE`.
pub type EVENT_TYPE = i32;
/// Stays signalled until cleared; wakes every waiter.
pub const NotificationEvent: EVENT_TYPE = 0;
/// Wakes one waiter and resets itself.
pub const SynchronizationEvent: EVENT_TYPE = 1;

/// `TIMER_TYPE`.
pub type TIMER_TYPE = i32;
/// A notification timer.
pub const NotificationTimer: TIMER_TYPE = 0;
/// A synchronization timer.
pub const SynchronizationTimer: TIMER_TYPE = 1;

/// `KWAIT_REASON`.
pub type KWAIT_REASON = i32;
/// `Executive`, the usual reason for a driver's waits.
pub const Executive: KWAIT_REASON = 0;

/// `POOL_TYPE`.
pub type POOL_TYPE = i32;
/// Nonpaged, executable (legacy; prefer [`NonPagedPoolNx`]).
pub const NonPagedPool: POOL_TYPE = 0;
/// Paged pool: never touched at `DISPATCH_LEVEL`.
pub const PagedPool: POOL_TYPE = 1;
/// Nonpaged, no-execute: everything a completion routine or DPC touches.
pub const NonPagedPoolNx: POOL_TYPE = 512;

/// `POOL_FLAGS` for `ExAllocatePool2`.
pub type POOL_FLAGS = u64;
/// Charge the allocation to the current process.
pub const POOL_FLAG_USE_QUOTA: POOL_FLAGS = 0x0001;
/// Do not zero the allocation.
pub const POOL_FLAG_UNINITIALIZED: POOL_FLAGS = 0x0002;
/// Cache-aligned.
pub const POOL_FLAG_CACHE_ALIGNED: POOL_FLAGS = 0x0008;
/// Raise an exception instead of returning null.
pub const POOL_FLAG_RAISE_ON_FAILURE: POOL_FLAGS = 0x0020;
/// Nonpaged, no-execute.
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x0040;
/// Nonpaged, executable.
pub const POOL_FLAG_NON_PAGED_EXECUTE: POOL_FLAGS = 0x0080;
/// Paged.
pub const POOL_FLAG_PAGED: POOL_FLAGS = 0x0100;

/// `DRIVER_OBJECT` (336 bytes on x64).
#[repr(C)]
pub struct DRIVER_OBJECT {
    /// `IO_TYPE_DRIVER` (4).
    pub Type: CSHORT,
    /// Size of this structure.
    pub Size: CSHORT,
    /// First device object.
    pub DeviceObject: *mut DEVICE_OBJECT,
    /// Flags.
    pub Flags: u32,
    /// Image base.
    pub DriverStart: PVOID,
    /// Image size.
    pub DriverSize: u32,
    /// Loader entry.
    pub DriverSection: PVOID,
    /// Driver extension.
    pub DriverExtension: PVOID,
    /// `\Driver\<Name>`.
    pub DriverName: UNICODE_STRING,
    /// Hardware database path.
    pub HardwareDatabase: *mut UNICODE_STRING,
    /// Fast I/O dispatch table.
    pub FastIoDispatch: PVOID,
    /// `DriverEntry`.
    pub DriverInit: Option<DRIVER_INITIALIZE>,
    /// `StartIo`.
    pub DriverStartIo: PVOID,
    /// Set by `DriverEntry`; called at `PASSIVE_LEVEL` to unload.
    pub DriverUnload: Option<DRIVER_UNLOAD>,
    /// Dispatch routines, one per `IRP_MJ_*`.
    pub MajorFunction: [Option<DRIVER_DISPATCH>; IRP_MJ_MAXIMUM_FUNCTION + 1],
}

/// `IO_TYPE_DRIVER`.
pub const IO_TYPE_DRIVER: CSHORT = 4;
/// `FILE_DEVICE_NETWORK`, a device type for `IoCreateDevice`.
pub const FILE_DEVICE_NETWORK: u32 = 0x12;
/// `FILE_DEVICE_SECURE_OPEN`, a device characteristic for `IoCreateDevice`.
pub const FILE_DEVICE_SECURE_OPEN: u32 = 0x100;

/// Opaque `EPROCESS` / `ETHREAD` / `OBJECT_TYPE` pointers.
pub type PEPROCESS = *mut c_void;
/// Opaque `ETHREAD` pointer.
pub type PETHREAD = *mut c_void;
/// Opaque `OBJECT_TYPE` pointer.
pub type POBJECT_TYPE = *mut c_void;

/// `KSYSTEM_TIME`: a 64-bit time the kernel publishes in `KUSER_SHARED_DATA`. The writer
/// stores `High2Time`, then `LowPart`, then `High1Time`; on x64 a reader takes the 64 bits at
/// `LowPart` in one load (wdm.h's `KeQueryInterruptTime` does exactly that).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KSYSTEM_TIME {
    /// Low 32 bits.
    pub LowPart: u32,
    /// High 32 bits (read with `LowPart`).
    pub High1Time: i32,
    /// High 32 bits again (a torn read on 32-bit readers shows as `High1Time != High2Time`).
    pub High2Time: i32,
}

/// The start of `KUSER_SHARED_DATA`, the page the kernel keeps its clocks in, mapped read-only
/// at [`KI_USER_SHARED_DATA`]. Only the fields up to `InterruptTime` are declared: the rest of
/// the page is none of our business (the layout probe checks these offsets against the full
/// C struct).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct KUSER_SHARED_DATA_HEAD {
    /// `TickCountLowDeprecated`.
    pub TickCountLowDeprecated: u32,
    /// `TickCountMultiplier`.
    pub TickCountMultiplier: u32,
    /// `InterruptTime`: 100 ns units since boot, updated once per clock tick.
    pub InterruptTime: KSYSTEM_TIME,
}

/// `KI_USER_SHARED_DATA` on x64: the kernel-mode address of `KUSER_SHARED_DATA`.
pub const KI_USER_SHARED_DATA: u64 = 0xFFFF_F780_0000_0000;

/// `MM_SHARED_USER_DATA_VA`: the user-mode address of the same `KUSER_SHARED_DATA` page, fixed
/// in every process on every architecture (the WDK's `KUSER_SHARED_DATA` page: "mapped at a
/// fixed, hardcoded address in both kernel and user space"). A Windows driver never reads it
/// (in kernel mode it is whatever process happens to be current). Wine, which runs drivers in
/// a user-mode process (`winedevice.exe`), maps the page there and nowhere else: Wine's
/// `dlls/ntdll/unix/virtual.c` maps it in every process, `server/mapping.c` creates it and
/// `server/fd.c` (`set_user_shared_data_time`) keeps its clocks moving. See
/// [`crate::KeQueryInterruptTime`].
pub const MM_SHARED_USER_DATA_VA: u64 = 0x7FFE_0000;
