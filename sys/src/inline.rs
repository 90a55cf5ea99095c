//! Rust versions of what `wdm.h` makes `FORCEINLINE` (no import exists for these), plus the
//! few helpers every caller needs: IRQL access, pool allocation that prefers `ExAllocatePool2`,
//! and a formatted debug print.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::nt::{
    IO_COMPLETION_ROUTINE, IO_STACK_LOCATION, IRP, MDL, MDL_MAPPED_TO_SYSTEM_VA,
    MDL_SOURCE_IS_NONPAGED_POOL, NonPagedPoolNx, POOL_FLAG_NON_PAGED, POOL_FLAG_UNINITIALIZED,
    POOL_FLAGS, SL_INVOKE_ON_CANCEL, SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS, SL_PENDING_RETURNED,
};
use crate::ntdef::{
    HANDLE, KIRQL, LARGE_INTEGER, OBJECT_ATTRIBUTES, PVOID, SIZE_T, UNICODE_STRING,
};

/// `IoGetCurrentIrpStackLocation`. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP.
#[must_use]
pub unsafe fn IoGetCurrentIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    let overlay = irp_tail_overlay(irp);
    // SAFETY: `overlay` is inside the live IRP (the caller's guarantee), and Overlay is the
    // Tail member in use while an IRP is in flight.
    unsafe { (*overlay).CurrentStackLocation }
}

/// The address of `irp.Tail.Overlay`, where the I/O manager keeps the current stack location.
/// Computing it reads nothing (`wrapping` place arithmetic only); reading through it needs a
/// live IRP.
fn irp_tail_overlay(irp: *mut IRP) -> *mut crate::nt::IRP_TAIL_OVERLAY {
    irp.wrapping_byte_add(core::mem::offset_of!(IRP, Tail))
        .cast::<crate::nt::IRP_TAIL_OVERLAY>()
}

/// `IoGetNextIrpStackLocation`: the location the next-lower driver (or, for an IRP we
/// allocated, the WSK provider) will see, where our completion routine is stored. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP whose current location is not its first.
#[must_use]
pub unsafe fn IoGetNextIrpStackLocation(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees `irp` points to a live IRP.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: stack locations are contiguous below the current one (wdm.h does the same
    // pointer arithmetic); the caller guarantees there is one below.
    unsafe { current.sub(1) }
}

/// `IoSetNextIrpStackLocation`: makes the next location current. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP with a location left below the current one.
pub unsafe fn IoSetNextIrpStackLocation(irp: *mut IRP) {
    // SAFETY: the caller guarantees the IRP is live and has a next location.
    unsafe { (*irp).CurrentLocation -= 1 };
    // SAFETY: as above; the next location is the one just below the current (contiguous).
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    let overlay = irp_tail_overlay(irp);
    // SAFETY: `overlay` is inside the live IRP, Overlay being the Tail member in use.
    unsafe { (*overlay).CurrentStackLocation = next };
}

/// `IoSkipCurrentIrpStackLocation`. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP whose current location is not past its last.
pub unsafe fn IoSkipCurrentIrpStackLocation(irp: *mut IRP) {
    // SAFETY: the caller guarantees the IRP is live and the location above exists.
    unsafe { (*irp).CurrentLocation += 1 };
    // SAFETY: as above.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the location above the current one exists (the caller's guarantee), and stack
    // locations are contiguous.
    let above = unsafe { current.add(1) };
    let overlay = irp_tail_overlay(irp);
    // SAFETY: `overlay` is inside the live IRP, Overlay being the Tail member in use.
    unsafe { (*overlay).CurrentStackLocation = above };
}

/// `IoMarkIrpPending`. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP with a current location.
pub unsafe fn IoMarkIrpPending(irp: *mut IRP) {
    // SAFETY: the caller guarantees a live IRP.
    let current = unsafe { IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: the caller guarantees the IRP has a current stack location, live with it.
    unsafe { (*current).Control |= SL_PENDING_RETURNED };
}

/// `IoSetCompletionRoutine`: stores `routine` and `context` in the *next* stack location with
/// the chosen `SL_INVOKE_ON_*` bits. Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP that we own (not yet passed to a driver), with a next location.
pub unsafe fn IoSetCompletionRoutine(
    irp: *mut IRP,
    routine: Option<IO_COMPLETION_ROUTINE>,
    context: PVOID,
    invoke_on_success: bool,
    invoke_on_error: bool,
    invoke_on_cancel: bool,
) {
    let mut control = 0;
    if invoke_on_success {
        control |= SL_INVOKE_ON_SUCCESS;
    }
    if invoke_on_error {
        control |= SL_INVOKE_ON_ERROR;
    }
    if invoke_on_cancel {
        control |= SL_INVOKE_ON_CANCEL;
    }
    // SAFETY: the caller guarantees a live, owned IRP with a next location.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    // SAFETY: `next` is a stack location of the live IRP we own: no driver reads it yet.
    unsafe { (*next).CompletionRoutine = routine };
    // SAFETY: as above.
    unsafe { (*next).Context = context };
    // SAFETY: as above.
    unsafe { (*next).Control = control };
}

/// `IoSetCancelRoutine`: atomically swaps the IRP's cancel routine, returning the old one.
/// Any IRQL.
///
/// # Safety
/// `irp` must point to a live IRP.
pub unsafe fn IoSetCancelRoutine(
    irp: *mut IRP,
    routine: Option<crate::nt::DRIVER_CANCEL>,
) -> Option<crate::nt::DRIVER_CANCEL> {
    // SAFETY: the caller guarantees the IRP is live (taking the field's address reads nothing).
    let field = unsafe { &raw mut (*irp).CancelRoutine };
    // SAFETY: `Option<fn>` is pointer-sized with null as None, so the field can be viewed as
    // an AtomicPtr for as long as the IRP lives. Every writer of the field goes through this
    // swap, as wdm.h's InterlockedExchangePointer does.
    let slot = unsafe { AtomicPtr::<c_void>::from_ptr(field.cast()) };
    let new = routine.map_or(core::ptr::null_mut(), |f| f as *mut c_void);
    let old = slot.swap(new, Ordering::AcqRel);
    // SAFETY: `old` is null or a DRIVER_CANCEL stored by this function: `Option<fn>` has the
    // same representation.
    unsafe { core::mem::transmute::<*mut c_void, Option<crate::nt::DRIVER_CANCEL>>(old) }
}

/// `IoSizeOfIrp`.
#[must_use]
pub const fn IoSizeOfIrp(stack_size: u8) -> usize {
    size_of::<IRP>() + (stack_size as usize) * size_of::<IO_STACK_LOCATION>()
}

/// `MmGetMdlVirtualAddress`. Any IRQL.
///
/// # Safety
/// `mdl` must point to a live MDL.
#[must_use]
pub unsafe fn MmGetMdlVirtualAddress(mdl: *const MDL) -> PVOID {
    // SAFETY: the caller guarantees a live MDL.
    let start = unsafe { (*mdl).StartVa };
    // SAFETY: as above.
    let offset = unsafe { (*mdl).ByteOffset };
    // StartVa + ByteOffset is the buffer's start, inside the page StartVa names. StartVa
    // itself is the page's start, usually before the allocation: `add` from there would be
    // out-of-bounds pointer arithmetic (Miri reports it), so the offset wraps instead.
    start.cast::<u8>().wrapping_add(offset as usize).cast()
}

/// `MmGetMdlByteCount`. Any IRQL.
///
/// # Safety
/// `mdl` must point to a live MDL.
#[must_use]
pub unsafe fn MmGetMdlByteCount(mdl: *const MDL) -> u32 {
    // SAFETY: the caller guarantees a live MDL.
    unsafe { (*mdl).ByteCount }
}

/// `MmGetMdlByteOffset`. Any IRQL.
///
/// # Safety
/// `mdl` must point to a live MDL.
#[must_use]
pub unsafe fn MmGetMdlByteOffset(mdl: *const MDL) -> u32 {
    // SAFETY: the caller guarantees a live MDL.
    unsafe { (*mdl).ByteOffset }
}

/// `MmGetSystemAddressForMdlSafe`: the system-space address of an MDL's buffer, mapping it if
/// needed; null on failure. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `mdl` must point to a live MDL describing locked pages.
#[must_use]
pub unsafe fn MmGetSystemAddressForMdlSafe(mdl: *mut MDL, priority: u32) -> PVOID {
    // SAFETY: the caller guarantees a live MDL.
    let flags = unsafe { (*mdl).MdlFlags };
    if flags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        // SAFETY: as above.
        unsafe { (*mdl).MappedSystemVa }
    } else {
        // MmCached = 1, KernelMode = 0, no bugcheck on failure.
        // SAFETY: the caller guarantees a live MDL of locked pages.
        unsafe {
            crate::MmMapLockedPagesSpecifyCache(mdl, 0, 1, core::ptr::null_mut(), 0, priority)
        }
    }
}

/// `InitializeObjectAttributes`.
#[must_use]
pub fn InitializeObjectAttributes(
    name: *mut UNICODE_STRING,
    attributes: u32,
    root: HANDLE,
    security_descriptor: PVOID,
) -> OBJECT_ATTRIBUTES {
    OBJECT_ATTRIBUTES {
        Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).unwrap_or(48),
        RootDirectory: root,
        ObjectName: name,
        Attributes: attributes,
        SecurityDescriptor: security_descriptor,
        SecurityQualityOfService: core::ptr::null_mut(),
    }
}

/// `KeGetCurrentIrql`: inline on x64 Windows (reads CR8); the host kernel tracks it per thread.
/// Any IRQL. Under Wine it is always `PASSIVE_LEVEL` and each read traps (slow): keep it off
/// hot paths.
#[must_use]
pub fn KeGetCurrentIrql() -> KIRQL {
    #[cfg(target_os = "windows")]
    {
        let cr8: u64;
        // SAFETY: reading CR8 is how wdm.h's KeGetCurrentIrql works at CPL 0; it has no side
        // effects and touches no memory.
        unsafe {
            core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags));
        };
        #[allow(clippy::cast_possible_truncation, reason = "CR8 holds a 4-bit IRQL")]
        let irql = cr8 as KIRQL;
        irql
    }
    #[cfg(not(target_os = "windows"))]
    {
        crate::host_current_irql()
    }
}

/// `KeRaiseIrql`: raises to `new_irql` (>= current) and returns the old IRQL.
///
/// # Safety
/// `new_irql` must not be below the current IRQL; lower it again with [`KeLowerIrql`].
#[must_use]
pub unsafe fn KeRaiseIrql(new_irql: KIRQL) -> KIRQL {
    #[cfg(target_os = "windows")]
    {
        let old = KeGetCurrentIrql();
        // SAFETY: writing CR8 is wdm.h's KeRaiseIrql on x64; the caller guarantees the new
        // level is not lower than the current one.
        unsafe {
            core::arch::asm!("mov cr8, {}", in(reg) u64::from(new_irql), options(nomem, nostack, preserves_flags));
        };
        old
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: forwarded contract: `new_irql` is not below the current IRQL.
        unsafe { crate::host_raise_irql(new_irql) }
    }
}

/// `KeLowerIrql`: returns to an IRQL saved by [`KeRaiseIrql`].
///
/// # Safety
/// `new_irql` must be the value a matching [`KeRaiseIrql`] returned.
pub unsafe fn KeLowerIrql(new_irql: KIRQL) {
    #[cfg(target_os = "windows")]
    {
        // SAFETY: writing CR8 is wdm.h's KeLowerIrql on x64; the caller restores a saved level.
        unsafe {
            core::arch::asm!("mov cr8, {}", in(reg) u64::from(new_irql), options(nomem, nostack, preserves_flags));
        };
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: forwarded contract: `new_irql` came from the matching `KeRaiseIrql`.
        unsafe { crate::host_lower_irql(new_irql) }
    }
}

/// `KeQueryInterruptTime`: interrupt time, 100 ns units since boot, monotonic; the clock
/// `KeSetTimerEx` counts in. It advances once per clock tick (0.5 to 15.625 ms), so it cannot
/// measure anything shorter: use [`query_precise_time`] for that.
///
/// Not an x64 ntoskrnl export: wdm.h defines it as a 64-bit read of `InterruptTime` in
/// `KUSER_SHARED_DATA` (`*(volatile ULONG64 *)(KI_USER_SHARED_DATA + 8)`), and so does this,
/// with the load written as one plain `mov` (see below for why). On the host the page is the
/// host kernel's (`host_shared_user_data`), read at the same offset.
///
/// Under Wine, which runs the driver in a user-mode process, nothing is mapped at
/// [`KI_USER_SHARED_DATA`](crate::KI_USER_SHARED_DATA): the page is at its user-mode address,
/// [`MM_SHARED_USER_DATA_VA`](crate::MM_SHARED_USER_DATA_VA), where the wineserver refreshes
/// `InterruptTime` from its monotonic clock at least every 16 ms (`server/fd.c`:
/// `set_user_shared_data_time`, run after every wait of its main loop, whose timeout is capped
/// at `user_shared_data_timeout`, 16 ms). [`init_precise_clock`] (`PASSIVE_LEVEL`, called by
/// `Runner::start`) recognises Wine and switches this read to that address; on Windows it
/// changes nothing. Before that switch a read under Wine faults and Wine's ntoskrnl emulates
/// it (`dlls/ntoskrnl.exe/instr.c`: a vectored handler serves loads from the kernel address
/// out of the user page), slowly, and only for a few instruction forms (`mov`, `movzx`, `or`,
/// `xor`): a load the compiler folds into a `cmp` or `sub`, as it did when this was a
/// `read_volatile`, is not emulated and kills the driver. Hence the explicit `mov`.
/// Wine's own `KeQueryInterruptTime` export (which x64 Windows lacks, so the import check
/// forbids it) would not do even looked up at run time: it returns `KeQueryTickCount`, a
/// millisecond count, not 100 ns units (`dlls/ntoskrnl.exe/ntoskrnl.c`).
///
/// # Safety
/// None: `unsafe` only so that callers read the same as for the kernel functions.
///
/// # IRQL
/// Any.
#[must_use]
pub unsafe fn KeQueryInterruptTime() -> u64 {
    const OFFSET: usize = core::mem::offset_of!(crate::KUSER_SHARED_DATA_HEAD, InterruptTime);
    #[cfg(target_os = "windows")]
    {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "both page addresses are x64 addresses"
        )]
        let address = (SHARED_USER_DATA.load(Ordering::Relaxed) as usize + OFFSET) as *const u64;
        let time: u64;
        // SAFETY: `address` is InterruptTime in KUSER_SHARED_DATA where this kernel maps it:
        // at KI_USER_SHARED_DATA, read-only in every x64 kernel address space for the life of
        // the system, or, once init_precise_clock found Wine, at MM_SHARED_USER_DATA_VA, which
        // Wine maps in every process for its life. InterruptTime is 8-byte aligned and an x64
        // 64-bit load of it is atomic (wdm.h reads it the same way); the asm only reads it.
        unsafe {
            core::arch::asm!(
                "mov {time}, qword ptr [{address}]",
                address = in(reg) address,
                time = lateout(reg) time,
                options(nostack, preserves_flags, readonly),
            );
        };
        time
    }
    #[cfg(not(target_os = "windows"))]
    {
        let page = crate::host_shared_user_data();
        // SAFETY: InterruptTime lies inside the host's page, at Windows' offset.
        let field = unsafe { page.cast::<u8>().add(OFFSET) };
        // SAFETY: the host page is a 'static, 4096-aligned struct of atomics laid out like
        // KUSER_SHARED_DATA (checked at compile time in the host kernel), so InterruptTime is
        // an 8-byte aligned AtomicU64 that lives for the whole process.
        let time = unsafe { AtomicU64::from_ptr(field.cast_mut().cast()) };
        time.load(Ordering::Acquire)
    }
}

/// Where [`KeQueryInterruptTime`] finds `KUSER_SHARED_DATA`: [`KI_USER_SHARED_DATA`], as on
/// every x64 Windows kernel, until [`init_precise_clock`] recognises Wine and stores
/// [`MM_SHARED_USER_DATA_VA`], the only address Wine maps the page at. It never holds any
/// other value. Relaxed is enough: both addresses show the same page, so a reader that still
/// sees the old one reads the same clock (through Wine's emulation).
///
/// [`KI_USER_SHARED_DATA`]: crate::KI_USER_SHARED_DATA
/// [`MM_SHARED_USER_DATA_VA`]: crate::MM_SHARED_USER_DATA_VA
#[cfg(target_os = "windows")]
static SHARED_USER_DATA: AtomicU64 = AtomicU64::new(crate::KI_USER_SHARED_DATA);

/// Points [`KeQueryInterruptTime`] at the user-mode view of `KUSER_SHARED_DATA` when the kernel
/// is Wine's; leaves the kernel address in place otherwise. Idempotent.
///
/// # Safety
/// `PASSIVE_LEVEL` only.
unsafe fn select_shared_user_data() {
    #[cfg(target_os = "windows")]
    {
        // SAFETY: PASSIVE_LEVEL per the caller.
        if unsafe { kernel_is_wine() } {
            SHARED_USER_DATA.store(crate::MM_SHARED_USER_DATA_VA, Ordering::Relaxed);
        }
    }
}

/// True when [`KeQueryInterruptTime`] reads `KUSER_SHARED_DATA` at its user-mode address
/// (`MM_SHARED_USER_DATA_VA`): [`init_precise_clock`] found Wine. False on Windows and on the
/// host kernel.
///
/// # IRQL
/// Any.
#[must_use]
pub fn reads_user_mode_shared_data() -> bool {
    #[cfg(target_os = "windows")]
    {
        SHARED_USER_DATA.load(Ordering::Relaxed) == crate::MM_SHARED_USER_DATA_VA
    }
    #[cfg(not(target_os = "windows"))]
    {
        false
    }
}

type KeQueryPerformanceCounterFn = unsafe extern "system" fn(*mut LARGE_INTEGER) -> LARGE_INTEGER;

/// `KeQueryPerformanceCounter`: ntoskrnl from Windows 8 on, hal.dll before and under Wine.
static PERFORMANCE_COUNTER: SystemRoutine = SystemRoutine::new("KeQueryPerformanceCounter");
/// Its frequency (counts per second), read once at lookup.
static PERFORMANCE_FREQUENCY: AtomicU64 = AtomicU64::new(0);

/// Sets up both clocks; call at `PASSIVE_LEVEL` before relying on them (`Runner::start`
/// does); calling again is harmless.
///
/// - The precise clock, `KeQueryPerformanceCounter`, for [`query_precise_time`]. It is
///   resolved at run time, not imported: x64 ntoskrnl exports it from Windows 8 on, hal.dll
///   before that and under Wine (whose ntoskrnl lacks it), and `MmGetSystemRoutineAddress`
///   searches both; an import from the wrong one would keep the driver from loading.
/// - Where [`KeQueryInterruptTime`] reads `KUSER_SHARED_DATA`: the kernel address on Windows
///   (unchanged), the user-mode one under Wine ([`kernel_is_wine`], which only works at
///   `PASSIVE_LEVEL`, hence here). Before this call the interrupt time still reads correctly
///   under Wine, through Wine's emulation of the kernel address, but each read costs a fault.
///
/// # Safety
/// `PASSIVE_LEVEL` only.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub unsafe fn init_precise_clock() {
    // SAFETY: PASSIVE_LEVEL per the caller.
    unsafe { select_shared_user_data() };
    // SAFETY: PASSIVE_LEVEL per the caller.
    let Some(routine) = (unsafe { PERFORMANCE_COUNTER.resolve() }) else {
        PERFORMANCE_FREQUENCY.store(0, Ordering::Release);
        return;
    };
    // SAFETY: the address MmGetSystemRoutineAddress gave for "KeQueryPerformanceCounter",
    // whose signature is KeQueryPerformanceCounterFn.
    let f = unsafe {
        core::mem::transmute::<*const (), KeQueryPerformanceCounterFn>(
            core::ptr::with_exposed_provenance(routine),
        )
    };
    let mut frequency: LARGE_INTEGER = 0;
    // SAFETY: any IRQL; `frequency` is a writable LARGE_INTEGER.
    unsafe { f(&raw mut frequency) };
    // A counter without a frequency is no clock: 0 leaves the fallback in place.
    PERFORMANCE_FREQUENCY.store(u64::try_from(frequency).unwrap_or(0), Ordering::Release);
}

/// True once [`init_precise_clock`] found `KeQueryPerformanceCounter`.
///
/// # IRQL
/// Any.
#[must_use]
pub fn has_precise_clock() -> bool {
    PERFORMANCE_COUNTER.address().is_some() && PERFORMANCE_FREQUENCY.load(Ordering::Acquire) > 0
}

/// A precise monotonic time in 100 ns units, for measuring short intervals (a DPC's time
/// budget): `KeQueryPerformanceCounter` scaled to 10 MHz. Its origin is unspecified: compare
/// only with other values of this function. Before [`init_precise_clock`], or where the
/// kernel has no performance counter, it falls back to [`KeQueryInterruptTime`], which only
/// moves once per clock tick (see [`has_precise_clock`]). Never use it for timer due times:
/// timers count interrupt time.
///
/// # IRQL
/// Any.
#[must_use]
pub fn query_precise_time() -> u64 {
    let frequency = PERFORMANCE_FREQUENCY.load(Ordering::Acquire);
    if let Some(routine) = PERFORMANCE_COUNTER.address()
        && frequency > 0
    {
        // SAFETY: stored by init_precise_clock from MmGetSystemRoutineAddress
        // ("KeQueryPerformanceCounter"), whose signature is KeQueryPerformanceCounterFn.
        let f = unsafe {
            core::mem::transmute::<*const (), KeQueryPerformanceCounterFn>(
                core::ptr::with_exposed_provenance(routine),
            )
        };
        // SAFETY: any IRQL; a null frequency pointer is allowed.
        let count = unsafe { f(core::ptr::null_mut()) };
        let units = u128::from(count.unsigned_abs()) * 10_000_000 / u128::from(frequency);
        return u64::try_from(units).unwrap_or(u64::MAX);
    }
    // SAFETY: no preconditions; any IRQL.
    unsafe { KeQueryInterruptTime() }
}

/// The bug check code a Rust panic in a driver stops the machine with: `0x5753_4B50`, ASCII
/// "WSKP". A driver-defined code: `KeBugCheckEx`'s documentation asks for one distinct from
/// the codes Windows and its drivers use, listed in the "Bug Check Code Reference"
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/debugger/bug-check-code-reference2>),
/// which has none in this range. Parameters: 1 = address of the panic's source file name
/// (UTF-8, not NUL-terminated), 2 = its length in bytes, 3 = line, 4 = column; all zero if
/// the location is unknown. In `WinDbg`, `da <p1> L<p2>` shows the file.
pub const BUGCHECK_RUST_PANIC: u32 = 0x5753_4B50;

/// The body of a driver's `#[panic_handler]`: prints the panic message to the debugger
/// (`DbgPrintEx`), then stops the machine with `KeBugCheckEx(`[`BUGCHECK_RUST_PANIC`]`, file,
/// file length, line, column)`. A panic in a kernel must not return, spin or trap its way on.
///
/// ```ignore
/// #[cfg(target_os = "windows")]
/// #[panic_handler]
/// fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
///     wsk_sys::bugcheck_on_panic(info)
/// }
/// ```
///
/// # IRQL
/// Any (`DbgPrintEx` output may be dropped above `DISPATCH_LEVEL`).
pub fn bugcheck_on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    dbg_print(
        DPFLTR_ERROR_LEVEL,
        format_args!("wsk-rs: driver panic, bug check {BUGCHECK_RUST_PANIC:#x}: {info}\n"),
    );
    bugcheck_at(info.location())
}

/// `KeBugCheckEx(`[`BUGCHECK_RUST_PANIC`]`, ...)` with `location` in the parameters (see
/// there). [`bugcheck_on_panic`] without the message.
///
/// # IRQL
/// Any.
pub fn bugcheck_at(location: Option<&core::panic::Location<'_>>) -> ! {
    let (file, len, line, column) = location.map_or((0, 0, 0, 0), |l| {
        (
            l.file().as_ptr() as usize,
            l.file().len(),
            l.line() as usize,
            l.column() as usize,
        )
    });
    // SAFETY: KeBugCheckEx may be called at any IRQL; the parameters are plain numbers (the
    // file name is 'static, so the address stays valid for the dump).
    unsafe { crate::KeBugCheckEx(BUGCHECK_RUST_PANIC, file, len, line, column) }
}

type ExAllocatePool2Fn = unsafe extern "system" fn(POOL_FLAGS, SIZE_T, u32) -> PVOID;

/// `ExAllocatePool2` (Windows 10 2004 and later; absent on Wine 8).
static EX_ALLOCATE_POOL2: SystemRoutine = SystemRoutine::new("ExAllocatePool2");
/// In a [`SystemRoutine`]: looked up, and the kernel lacks it.
const ABSENT: usize = 1;

/// Looks up `ExAllocatePool2` so later allocations can use it. Call once at `PASSIVE_LEVEL`
/// (`DriverEntry`); until then, and where the kernel lacks it, [`allocate_nonpaged`] uses
/// `ExAllocatePoolWithTag(NonPagedPoolNx)`.
///
/// # Safety
/// `PASSIVE_LEVEL` only.
pub unsafe fn init_pool_routines() {
    // SAFETY: PASSIVE_LEVEL per the caller.
    let _ = unsafe { EX_ALLOCATE_POOL2.resolve() };
}

/// The address of the exported kernel routine `name` (ASCII, at most 63 characters), or null
/// when this kernel does not export it: `MmGetSystemRoutineAddress`, for routines newer
/// kernels add (resolved at run time, so that the driver still loads on older ones) or that
/// tell which kernel this is.
///
/// # Safety
/// `PASSIVE_LEVEL` only.
#[must_use]
pub unsafe fn system_routine_address(name: &str) -> PVOID {
    let mut wide: [u16; 64] = [0; 64];
    let mut len = 0;
    for (dst, src) in wide.iter_mut().zip(name.encode_utf16()) {
        *dst = src;
        len += 1;
    }
    if len == 0 || len >= wide.len() || name.len() != len {
        return core::ptr::null_mut();
    }
    let mut name = UNICODE_STRING::from_wide(&wide[..len]);
    // SAFETY: PASSIVE_LEVEL per the caller; `name` is a valid counted string on our stack.
    unsafe { crate::MmGetSystemRoutineAddress(&raw mut name) }
}

/// A kernel routine looked up once at run time ([`system_routine_address`]), for routines a
/// driver must not import: newer than the oldest kernel it loads on, or exported by another
/// module on some kernels. Lives in a `static`; [`SystemRoutine::resolve`] at `PASSIVE_LEVEL`
/// (start-up), [`SystemRoutine::address`] at any IRQL afterwards.
pub struct SystemRoutine {
    name: &'static str,
    /// 0: not looked up yet; [`ABSENT`]: the kernel lacks it; else its address.
    address: AtomicUsize,
}

impl SystemRoutine {
    /// The routine called `name`, not looked up yet.
    #[must_use]
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            address: AtomicUsize::new(0),
        }
    }

    /// Looks the routine up (again) and returns its address, if the kernel has it.
    ///
    /// # Safety
    /// `PASSIVE_LEVEL` only.
    pub unsafe fn resolve(&self) -> Option<usize> {
        // SAFETY: PASSIVE_LEVEL per the caller.
        let routine = unsafe { system_routine_address(self.name) }.expose_provenance();
        self.address.store(
            if routine == 0 { ABSENT } else { routine },
            Ordering::Release,
        );
        (routine != 0).then_some(routine)
    }

    /// Its address, once [`resolve`](Self::resolve) found it. Any IRQL.
    #[must_use]
    pub fn address(&self) -> Option<usize> {
        let routine = self.address.load(Ordering::Acquire);
        (routine > ABSENT).then_some(routine)
    }

    /// True once looked up (found or not).
    #[must_use]
    pub fn is_resolved(&self) -> bool {
        self.address.load(Ordering::Acquire) != 0
    }
}

/// True when the kernel is Wine's ntoskrnl, recognised by its private export
/// `wine_ntoskrnl_main_loop` (no Windows kernel has it). Some routines Wine 8 exports are
/// stubs that raise when called (`IoSetCompletionRoutineEx`, `KeRemoveQueueDpc`): callers
/// choose another documented path there.
///
/// # Safety
/// `PASSIVE_LEVEL` only.
#[must_use]
pub unsafe fn kernel_is_wine() -> bool {
    // SAFETY: forwarded: PASSIVE_LEVEL.
    !unsafe { system_routine_address("wine_ntoskrnl_main_loop") }.is_null()
}

/// Allocates `bytes` of nonpaged, no-execute pool with `tag`; null when out of memory. The
/// memory is not zeroed. IRQL <= `DISPATCH_LEVEL`. Free with `ExFreePoolWithTag(p, tag)`.
///
/// # Safety
/// IRQL <= `DISPATCH_LEVEL`.
#[must_use]
pub unsafe fn allocate_nonpaged(bytes: usize, tag: u32) -> PVOID {
    if let Some(routine) = EX_ALLOCATE_POOL2.address() {
        // SAFETY: the value was produced by MmGetSystemRoutineAddress("ExAllocatePool2"), whose
        // signature is ExAllocatePool2Fn.
        let f = unsafe {
            core::mem::transmute::<*const (), ExAllocatePool2Fn>(
                core::ptr::with_exposed_provenance(routine),
            )
        };
        // SAFETY: documented IRQL contract of ExAllocatePool2 for nonpaged pool.
        return unsafe { f(POOL_FLAG_NON_PAGED | POOL_FLAG_UNINITIALIZED, bytes, tag) };
    }
    // SAFETY: documented IRQL contract of ExAllocatePoolWithTag for nonpaged pool.
    unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, bytes, tag) }
}

/// Makes a pool tag from four ASCII characters, in the order debuggers print them.
#[must_use]
pub const fn pool_tag(tag: [u8; 4]) -> u32 {
    u32::from_le_bytes(tag)
}

/// `DPFLTR_IHVDRIVER_ID`, the component id for third-party drivers.
pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
/// `DPFLTR_ERROR_LEVEL`: always shown.
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
/// `DPFLTR_WARNING_LEVEL`.
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
/// `DPFLTR_TRACE_LEVEL`.
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
/// `DPFLTR_INFO_LEVEL`.
pub const DPFLTR_INFO_LEVEL: u32 = 3;

/// Prints formatted text to the kernel debugger (`DbgPrintEx`, component
/// `DPFLTR_IHVDRIVER_ID`); the host kernel writes it to stderr. No allocation: text is
/// formatted through a 256-byte stack buffer and flushed in pieces. IRQL <= `DISPATCH_LEVEL`.
pub fn dbg_print(level: u32, args: core::fmt::Arguments<'_>) {
    struct Chunked {
        buf: [u8; 256],
        len: usize,
        level: u32,
    }
    impl Chunked {
        fn flush(&mut self) {
            if self.len > 0 {
                emit(self.level, &self.buf[..self.len]);
                self.len = 0;
            }
        }
    }
    impl core::fmt::Write for Chunked {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            for &b in s.as_bytes() {
                if self.len == self.buf.len() {
                    self.flush();
                }
                self.buf[self.len] = b;
                self.len += 1;
            }
            Ok(())
        }
    }
    let mut out = Chunked {
        buf: [0; 256],
        len: 0,
        level,
    };
    let _ = core::fmt::write(&mut out, args);
    out.flush();
}

fn emit(level: u32, bytes: &[u8]) {
    #[cfg(target_os = "windows")]
    {
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        // SAFETY: "%.*s" reads exactly `len` bytes from `bytes`, which is live for the call.
        unsafe {
            crate::DbgPrintEx(
                DPFLTR_IHVDRIVER_ID,
                level,
                c"%.*s".as_ptr().cast(),
                len,
                bytes.as_ptr(),
            )
        };
    }
    #[cfg(not(target_os = "windows"))]
    {
        // SAFETY: `bytes` is readable for its whole length during the call.
        unsafe { crate::host_dbg_print(DPFLTR_IHVDRIVER_ID, level, bytes.as_ptr(), bytes.len()) };
    }
}

/// `DbgPrintEx` with `format!` syntax, for component `DPFLTR_IHVDRIVER_ID`, at a level named
/// first: `Error`, `Warning`, `Trace` or `Info` (`DPFLTR_ERROR_LEVEL` ..
/// `DPFLTR_INFO_LEVEL`). Without a level the message is at `Error` (the form every earlier
/// call site uses): Windows shows `Error` messages always, the others only when the
/// debugger's filter for the component enables their level (`Kd_IHVDRIVER_Mask`), so
/// routine messages (`Info`) cost nothing in the field.
///
/// ```ignore
/// wsk_sys::kprint!(Info, "wskecho: listening on port {}\n", 7);
/// wsk_sys::kprint!(Warning, "wskecho: {} connections refused\n", 3);
/// wsk_sys::kprint!("wskecho: not started\n"); // Error level
/// ```
///
/// # IRQL
/// <= `DISPATCH_LEVEL` (`DbgPrintEx`'s rule; the arguments must be formattable there: no
/// paged data).
#[macro_export]
macro_rules! kprint {
    (Error, $($arg:tt)*) => {
        $crate::dbg_print($crate::DPFLTR_ERROR_LEVEL, ::core::format_args!($($arg)*))
    };
    (Warning, $($arg:tt)*) => {
        $crate::dbg_print($crate::DPFLTR_WARNING_LEVEL, ::core::format_args!($($arg)*))
    };
    (Trace, $($arg:tt)*) => {
        $crate::dbg_print($crate::DPFLTR_TRACE_LEVEL, ::core::format_args!($($arg)*))
    };
    (Info, $($arg:tt)*) => {
        $crate::dbg_print($crate::DPFLTR_INFO_LEVEL, ::core::format_args!($($arg)*))
    };
    ($($arg:tt)*) => {
        $crate::dbg_print($crate::DPFLTR_ERROR_LEVEL, ::core::format_args!($($arg)*))
    };
}

/// Checks at compile time that `IoSetCompletionRoutine` writes where the I/O manager reads.
const _: () = assert!(SL_PENDING_RETURNED == 1);
