//! MDLs: allocated with their page array, tracked for leaks; nonpaged-pool MDLs are mapped by
//! construction.

use std::alloc::Layout;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::fast_hash::FastMap;
use super::irql;
use super::kernel_ptr::KernelPtr;
use super::machine::{self, lock};
use super::verifier::bugcheck;
use crate::faults::{Resource, fail_allocation};
use crate::{
    APC_LEVEL, BOOLEAN, CSHORT, DISPATCH_LEVEL, IRP, KPROCESSOR_MODE, MDL,
    MDL_ALLOCATED_FIXED_SIZE, MDL_MAPPED_TO_SYSTEM_VA, MDL_PAGES_LOCKED,
    MDL_SOURCE_IS_NONPAGED_POOL, PVOID,
};

const PAGE_SIZE: usize = 4096;

/// One tracked MDL.
pub(crate) struct MdlInfo {
    layout: Layout,
    pub(crate) va: usize,
    pub(crate) length: u32,
}

/// An MDL as the host kernel keeps it in its table.
pub(crate) type MdlPtr = KernelPtr<MDL>;

/// Every live MDL, by address.
#[derive(Default)]
pub(crate) struct MdlTable {
    pub(crate) live: FastMap<MdlPtr, MdlInfo>,
}

/// Host implementation of `IoAllocateMdl`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Irp` must be null or a live IRP.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoAllocateMdl(
    VirtualAddress: PVOID,
    Length: u32,
    SecondaryBuffer: BOOLEAN,
    ChargeQuota: BOOLEAN,
    Irp: *mut IRP,
) -> *mut MDL {
    let _ = ChargeQuota;
    // WDK "IoAllocateMdl function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioallocatemdl): IRQL <=
    // DISPATCH_LEVEL.
    irql::require_at_most(DISPATCH_LEVEL, "IoAllocateMdl");
    let machine = machine::current("IoAllocateMdl");
    if fail_allocation(Resource::Mdl) {
        return core::ptr::null_mut();
    }
    let va = VirtualAddress as usize;
    let offset = va % PAGE_SIZE;
    let length = Length as usize;
    let pages = (offset + length).div_ceil(PAGE_SIZE);
    let size = size_of::<MDL>() + pages * size_of::<usize>();
    let Ok(csize) = CSHORT::try_from(size) else {
        return core::ptr::null_mut(); // too large for one MDL, as on Windows
    };
    let Ok(layout) = Layout::from_size_align(size, 16) else {
        return core::ptr::null_mut();
    };
    machine
        .allocations
        .mdls
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    #[allow(clippy::cast_ptr_alignment, reason = "the layout is 16-aligned")]
    // SAFETY: non-zero size.
    let mdl = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<MDL>();
    let Some(tracked) = MdlPtr::new(mdl) else {
        return mdl;
    };
    // SAFETY: freshly allocated and zeroed, only this function holds it.
    let header = unsafe { &mut *mdl };
    header.Size = csize;
    header.MdlFlags = MDL_ALLOCATED_FIXED_SIZE;
    header.StartVa = VirtualAddress.cast::<u8>().wrapping_sub(offset).cast();
    header.ByteOffset = u32::try_from(offset).unwrap_or(0);
    header.ByteCount = Length;
    // SAFETY: `pages` page numbers follow the header in the allocation.
    let frames = unsafe { mdl.add(1) }.cast::<usize>();
    for page in 0..pages {
        // SAFETY: as just said, `page < pages`.
        let frame = unsafe { frames.add(page) };
        // SAFETY: inside the allocation (as above), suitably aligned after the header.
        unsafe { frame.write(va / PAGE_SIZE + page) };
    }
    if !Irp.is_null() {
        // SAFETY: the caller passes a live IRP (or null); its MDL chain is the caller's.
        let irp = unsafe { &mut *Irp };
        if SecondaryBuffer == 0 || irp.MdlAddress.is_null() {
            irp.MdlAddress = mdl;
        } else {
            let mut tail = irp.MdlAddress;
            loop {
                // SAFETY: the IRP's chain holds live MDLs.
                let next = unsafe { (*tail).Next };
                if next.is_null() {
                    break;
                }
                tail = next;
            }
            // SAFETY: as above, the last MDL of the chain.
            unsafe { (*tail).Next = mdl };
        }
    }
    lock(&machine.mdls).live.insert(
        tracked,
        MdlInfo {
            layout,
            va,
            length: Length,
        },
    );
    mdl
}

/// Host implementation of `IoFreeMdl`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Mdl` must be a live MDL from `IoAllocateMdl`.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn IoFreeMdl(Mdl: *mut MDL) {
    // WDK "IoFreeMdl function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreemdl): IRQL <=
    // DISPATCH_LEVEL. Freeing an MDL twice is named after "Bug Check 0xC2: BAD_POOL_CALLER"
    // 0x07, freeing pool already freed (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc2--bad-pool-caller).
    irql::require_at_most(DISPATCH_LEVEL, "IoFreeMdl");
    let machine = machine::current("IoFreeMdl");
    // An MDL a pending WSK IRP still uses (rule and pages at `wsk::pending_irp_using`).
    if let Some(detail) = crate::wsk::pending_irp_using(crate::wsk::Freed::Mdl(Mdl.addr())) {
        bugcheck("PAGE_FAULT_IN_FREED_SPECIAL_POOL", detail);
    }
    let info = MdlPtr::new(Mdl).and_then(|mdl| lock(&machine.mdls).live.remove(&mdl));
    let Some(info) = info else {
        bugcheck(
            "BAD_POOL_CALLER",
            format!("IoFreeMdl({Mdl:p}): not a live MDL from IoAllocateMdl (freed twice?)"),
        );
    };
    // SAFETY: allocated by IoAllocateMdl with this layout, removed from the table: freed once.
    unsafe { core::ptr::write_bytes(Mdl.cast::<u8>(), 0xDD, info.layout.size()) };
    // SAFETY: as above.
    unsafe { std::alloc::dealloc(Mdl.cast(), info.layout) };
}

fn check_live(mdl: *mut MDL, function: &'static str) {
    let _ = machine::current(function);
    // Host rule: the Mm MDL pages require an MDL from IoAllocateMdl (or built by the caller);
    // a dead one is "Bug Check 0xC4: DRIVER_VERIFIER_DETECTED_VIOLATION"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc4--driver-verifier-detected-violation) here, stricter than
    // Windows, which does not track MDLs.
    if !is_live(mdl) {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("{function}({mdl:p}): not a live MDL from IoAllocateMdl"),
        );
    }
}

/// Host implementation of `MmBuildMdlForNonPagedPool`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `MemoryDescriptorList` must be a live MDL describing nonpaged memory.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut MDL) {
    // WDK "MmBuildMdlForNonPagedPool function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-mmbuildmdlfornonpagedpool): IRQL <= DISPATCH_LEVEL; the MDL must
    // describe nonpaged (or locked) memory, not pages already locked or mapped (0xC4 below).
    irql::require_at_most(DISPATCH_LEVEL, "MmBuildMdlForNonPagedPool");
    let mdl = MemoryDescriptorList;
    check_live(mdl, "MmBuildMdlForNonPagedPool");
    let machine = machine::current("MmBuildMdlForNonPagedPool");
    // SAFETY: live (checked).
    let va = unsafe { crate::MmGetMdlVirtualAddress(mdl) } as usize;
    // SAFETY: as above.
    let len = unsafe { (*mdl).ByteCount } as usize;
    let paged = lock(&machine.pool)
        .containing(va, len)
        .is_some_and(|(_, block)| block.paged);
    if paged {
        // 0xC4 (bug-check-0xc4--driver-verifier-detected-violation) for an MDL over paged pool.
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("MmBuildMdlForNonPagedPool({mdl:p}) over paged pool at {va:#x}"),
        );
    }
    // SAFETY: live (checked).
    let flags = unsafe { (*mdl).MdlFlags };
    // Same page: its pages must not be locked or mapped by other means.
    if flags & (MDL_PAGES_LOCKED | MDL_MAPPED_TO_SYSTEM_VA) != 0 {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("MmBuildMdlForNonPagedPool({mdl:p}) on an MDL already locked or mapped"),
        );
    }
    // SAFETY: live (checked).
    let system_va = unsafe { crate::MmGetMdlVirtualAddress(mdl) };
    // SAFETY: live (checked); the caller owns the MDL while it builds it.
    let header = unsafe { &mut *mdl };
    header.MappedSystemVa = system_va;
    header.MdlFlags |= MDL_SOURCE_IS_NONPAGED_POOL;
}

/// Host implementation of `MmMapLockedPagesSpecifyCache`: the buffer's own address (host
/// memory is one address space). IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `MemoryDescriptorList` must be a live MDL of locked or nonpaged pages.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn MmMapLockedPagesSpecifyCache(
    MemoryDescriptorList: *mut MDL,
    AccessMode: KPROCESSOR_MODE,
    CacheType: i32,
    RequestedAddress: PVOID,
    BugCheckOnFailure: u32,
    Priority: u32,
) -> PVOID {
    let _ = (CacheType, RequestedAddress, BugCheckOnFailure, Priority);
    let kernel_mode = AccessMode == 0;
    // WDK "MmMapLockedPagesSpecifyCache function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-mmmaplockedpagesspecifycache): IRQL <= DISPATCH_LEVEL for
    // KernelMode, <= APC_LEVEL for UserMode (the host has no user space and returns the
    // buffer's own address either way).
    irql::require_at_most(
        if kernel_mode {
            DISPATCH_LEVEL
        } else {
            APC_LEVEL
        },
        "MmMapLockedPagesSpecifyCache",
    );
    let mdl = MemoryDescriptorList;
    check_live(mdl, "MmMapLockedPagesSpecifyCache");
    // SAFETY: live (checked).
    let flags = unsafe { (*mdl).MdlFlags };
    // WDK "MmBuildMdlForNonPagedPool function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-mmbuildmdlfornonpagedpool): drivers must not create further
    // system-space mappings of such an MDL with MmMapLockedPagesSpecifyCache (undefined
    // behaviour; MmGetSystemAddressForMdlSafe does not call it for them). Only a UserMode
    // mapping is allowed; the host bugchecks a KernelMode one.
    if flags & MDL_SOURCE_IS_NONPAGED_POOL != 0 {
        if kernel_mode {
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!(
                    "MmMapLockedPagesSpecifyCache({mdl:p}, KernelMode) on an MDL built by \
                     MmBuildMdlForNonPagedPool: it is already mapped"
                ),
            );
        }
        // SAFETY: live (checked).
        return unsafe { crate::MmGetMdlVirtualAddress(mdl) };
    }
    // Same page: the MDL must describe locked-down pages.
    if flags & MDL_PAGES_LOCKED == 0 {
        bugcheck(
            "DRIVER_VERIFIER_DETECTED_VIOLATION",
            format!("MmMapLockedPagesSpecifyCache({mdl:p}): the MDL's pages are not locked"),
        );
    }
    // SAFETY: live (checked).
    let system_va = unsafe { crate::MmGetMdlVirtualAddress(mdl) };
    // SAFETY: live (checked); the caller owns the MDL while it maps it.
    let header = unsafe { &mut *mdl };
    header.MappedSystemVa = system_va;
    header.MdlFlags |= MDL_MAPPED_TO_SYSTEM_VA;
    header.MappedSystemVa
}

/// True if `mdl` is a live MDL from `IoAllocateMdl` (for the WSK provider's checks).
pub(crate) fn is_live(mdl: *const MDL) -> bool {
    machine::try_current().is_some_and(|m| {
        MdlPtr::new(mdl.cast_mut()).is_some_and(|mdl| lock(&m.mdls).live.contains_key(&mdl))
    })
}

/// Leak report lines: every MDL still allocated.
pub(crate) fn leaks(table: &MdlTable) -> Vec<String> {
    table
        .live
        .iter()
        .map(|(&mdl, info)| {
            format!(
                "MDL {mdl:#x} ({} bytes at {:#x}) not freed",
                info.length, info.va
            )
        })
        .collect()
}
