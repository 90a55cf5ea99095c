//! Pool: allocations tracked by address with their tag and type. Freeing with the wrong tag,
//! twice, or an address pool never returned is `BAD_POOL_CALLER`; what is left at unload is
//! reported by tag. Memory not asked to be zeroed is filled with a pattern, so code that
//! relies on zeroed pool fails visibly, and freed memory is poisoned, so a use after free
//! reads garbage. Both only where it is cheap (see [`PATTERN_WHOLE`]): a big block is
//! patterned at its ends and poisoned in its first page, so that pages nobody touches (a
//! receive buffer's tail) do not become resident. Rule for the pattern: WDK "`ExAllocatePool2`
//! function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2):
//! with `POOL_FLAG_UNINITIALIZED` the memory's contents are undefined, and
//! `ExAllocatePoolWithTag`'s memory is not zeroed either.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::irql;
use super::machine::{self, lock};
use super::verifier::bugcheck;
use crate::faults::{Resource, fail_allocation};
use crate::{
    APC_LEVEL, DISPATCH_LEVEL, KIRQL, PASSIVE_LEVEL, POOL_FLAG_NON_PAGED,
    POOL_FLAG_NON_PAGED_EXECUTE, POOL_FLAG_PAGED, POOL_FLAG_UNINITIALIZED, POOL_FLAGS, POOL_TYPE,
    PVOID, PagedPool, SIZE_T, UNICODE_STRING,
};

/// One allocation.
pub(crate) struct Block {
    pub(crate) tag: u32,
    pub(crate) paged: bool,
    layout: Layout,
}

/// Every live allocation, by address.
#[derive(Default)]
pub(crate) struct PoolTable {
    pub(crate) live: BTreeMap<usize, Block>,
}

impl PoolTable {
    /// The allocation containing `[addr, addr + len)`, if any: (start, block).
    pub(crate) fn containing(&self, addr: usize, len: usize) -> Option<(usize, &Block)> {
        let (&start, block) = self.live.range(..=addr).next_back()?;
        (addr.saturating_add(len) <= start + block.layout.size()).then_some((start, block))
    }
}

/// A tag as its four characters.
pub(crate) fn tag_text(tag: u32) -> String {
    tag.to_le_bytes()
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

// WDK "Bug Check 0xC2: BAD_POOL_CALLER"
// (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc2--bad-pool-caller):
// parameter 1 = 0x08 allocating pool at an invalid IRQL, 0x09 freeing it at one. Windows raises
// BAD_POOL_CALLER here (Driver Verifier reports the same as 0xC4 0x01/0x02/0x11/0x12), not
// IRQL_NOT_LESS_OR_EQUAL.
fn require_pool_irql(max: KIRQL, function: &'static str, what: &str) {
    let irql = irql::current();
    if irql > max {
        bugcheck(
            "BAD_POOL_CALLER",
            format!("{function} {what} at IRQL {irql}; its maximum is {max}"),
        );
    }
}

/// Blocks up to this size get the allocation pattern and the free poison over every byte;
/// bigger ones only over [`PATTERN_ENDS`] bytes at each end (pattern) and their first
/// `PATTERN_WHOLE` bytes (poison). A page: small blocks (structures, contexts) are where
/// "assumed zeroed" bugs live, and writing a whole 16 KiB buffer twice per allocation made
/// every page of it resident and cost more than the rest of the allocation.
const PATTERN_WHOLE: usize = 4096;

/// Bytes patterned at each end of a block bigger than [`PATTERN_WHOLE`].
const PATTERN_ENDS: usize = 64;

/// Writes `byte` over the parts of the `size`-byte block at `start` that the pattern covers
/// (see [`PATTERN_WHOLE`]): every byte of a small block, the ends of a big one.
///
/// # Safety
/// `start` must be valid for writes of `size` bytes.
unsafe fn pattern(start: *mut u8, size: usize, byte: u8) {
    if size <= PATTERN_WHOLE {
        // SAFETY: the caller guarantees `size` writable bytes.
        unsafe { core::ptr::write_bytes(start, byte, size) };
        return;
    }
    // SAFETY: as above; PATTERN_ENDS < size.
    unsafe { core::ptr::write_bytes(start, byte, PATTERN_ENDS) };
    // SAFETY: the last PATTERN_ENDS bytes of the block.
    let tail = unsafe { start.add(size - PATTERN_ENDS) };
    // SAFETY: as above.
    unsafe { core::ptr::write_bytes(tail, byte, PATTERN_ENDS) };
}

/// Who allocates: the driver through an exported function (named, for the verifier's
/// messages), which the low-resources simulation may fail, or the host kernel itself.
#[derive(Clone, Copy)]
enum Caller {
    Driver(&'static str),
    Kernel,
}

fn allocate(bytes: usize, tag: u32, paged: bool, zero: bool, caller: Caller) -> PVOID {
    let function = match caller {
        Caller::Driver(function) => function,
        Caller::Kernel => "ExAllocatePoolWithTag (host kernel)",
    };
    // WDK "ExAllocatePoolWithTag function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepoolwithtag) and
    // "ExAllocatePool2 function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2): IRQL <=
    // DISPATCH_LEVEL for nonpaged pool, <= APC_LEVEL for paged pool; BAD_POOL_CALLER 0x08.
    require_pool_irql(
        if paged { APC_LEVEL } else { DISPATCH_LEVEL },
        function,
        if paged {
            "allocates paged pool"
        } else {
            "allocates nonpaged pool"
        },
    );
    let machine = machine::current(function);
    if matches!(caller, Caller::Driver(_)) && fail_allocation(Resource::Pool) {
        return core::ptr::null_mut();
    }
    // Looser than Driver Verifier: a zero-byte request (0xC4 0x00, 0xC2 0x00) is served as
    // one byte, as Windows does without the verifier.
    let Ok(layout) = Layout::from_size_align(bytes.max(1), 16) else {
        return core::ptr::null_mut();
    };
    machine
        .allocations
        .pool
        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let p = if zero {
        // SAFETY: the layout has a non-zero size.
        unsafe { std::alloc::alloc_zeroed(layout) }
    } else {
        // SAFETY: as above.
        let p = unsafe { std::alloc::alloc(layout) };
        if !p.is_null() {
            // SAFETY: a fresh block of `layout.size()` bytes.
            unsafe { pattern(p, layout.size(), 0xA5) };
        }
        p
    };
    if !p.is_null() {
        lock(&machine.pool)
            .live
            .insert(p as usize, Block { tag, paged, layout });
    }
    p.cast()
}

/// Host implementation of `ExAllocatePoolWithTag` (memory not zeroed). IRQL <=
/// `DISPATCH_LEVEL` for nonpaged pool, <= `APC_LEVEL` for paged.
///
/// # Safety
/// None beyond the IRQL rule (checked).
#[must_use]
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ExAllocatePoolWithTag(
    PoolType: POOL_TYPE,
    NumberOfBytes: SIZE_T,
    Tag: u32,
) -> PVOID {
    let paged = PoolType & 1 == PagedPool;
    // WDK "Bug Check 0xC2: BAD_POOL_CALLER"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc2--bad-pool-caller):
    // parameter 1 = 0x9B, an allocation with a tag of zero; the ExAllocatePoolWithTag page asks
    // for a non-zero tag.
    if Tag == 0 {
        bugcheck(
            "BAD_POOL_CALLER",
            format!("ExAllocatePoolWithTag({NumberOfBytes} bytes) with a tag of zero"),
        );
    }
    allocate(
        NumberOfBytes,
        Tag,
        paged,
        false,
        Caller::Driver("ExAllocatePoolWithTag"),
    )
}

/// The host kernel's own nonpaged allocation (tracked like the driver's, and freed with
/// `ExFreePoolWithTag`), which the low-resources simulation never
/// fails: only the driver's calls of the exported functions are the code under test. IRQL <=
/// `DISPATCH_LEVEL`.
pub(crate) fn allocate_for_kernel(bytes: usize, tag: u32) -> PVOID {
    allocate(bytes, tag, false, false, Caller::Kernel)
}

/// Host implementation of `ExAllocatePool2`, returned by `MmGetSystemRoutineAddress`: zeroed
/// unless `POOL_FLAG_UNINITIALIZED`; null for a zero tag or invalid flags. IRQL <=
/// `DISPATCH_LEVEL` for nonpaged pool.
///
/// # Safety
/// None beyond the IRQL rule (checked).
#[must_use]
pub unsafe extern "system" fn ExAllocatePool2(
    Flags: POOL_FLAGS,
    NumberOfBytes: SIZE_T,
    Tag: u32,
) -> PVOID {
    let kinds = Flags & (POOL_FLAG_NON_PAGED | POOL_FLAG_NON_PAGED_EXECUTE | POOL_FLAG_PAGED);
    // WDK "ExAllocatePool2 function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2): a tag of 0
    // or invalid POOL_FLAGS make it return NULL (it raises only with POOL_FLAG_RAISE_ON_FAILURE,
    // which no caller here uses), so the host returns NULL rather than bugchecking.
    if kinds.count_ones() != 1 || Tag == 0 {
        return core::ptr::null_mut();
    }
    let zero = Flags & POOL_FLAG_UNINITIALIZED == 0;
    allocate(
        NumberOfBytes,
        Tag,
        kinds == POOL_FLAG_PAGED,
        zero,
        Caller::Driver("ExAllocatePool2"),
    )
}

/// Host implementation of `ExFreePoolWithTag`. IRQL <= `DISPATCH_LEVEL` (nonpaged).
///
/// # Safety
/// `P` must be an allocation from this pool, freed once, with its tag.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ExFreePoolWithTag(P: PVOID, Tag: u32) {
    // WDK "ExFreePoolWithTag function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exfreepoolwithtag): IRQL <=
    // DISPATCH_LEVEL; BAD_POOL_CALLER 0x09 (bug-check-0xc2--bad-pool-caller).
    require_pool_irql(DISPATCH_LEVEL, "ExFreePoolWithTag", "frees pool");
    let machine = machine::current("ExFreePoolWithTag");
    let mut pool = lock(&machine.pool);
    // WDK "Bug Check 0xC2: BAD_POOL_CALLER"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc2--bad-pool-caller): 0x07 freeing pool already freed,
    // 0x46 freeing an invalid pool address.
    let Some(block) = pool.live.remove(&(P as usize)) else {
        drop(pool);
        bugcheck(
            "BAD_POOL_CALLER",
            format!("ExFreePoolWithTag({P:p}): not a live pool allocation (freed twice?)"),
        );
    };
    // Same page, 0x0A: freeing pool with the wrong tag (ExFreePoolWithTag page: the tag
    // passed when the block was allocated).
    if block.tag != Tag {
        let (had, given) = (tag_text(block.tag), tag_text(Tag));
        pool.live.insert(P as usize, block);
        drop(pool);
        bugcheck(
            "BAD_POOL_CALLER",
            format!("ExFreePoolWithTag({P:p}) with tag '{given}'; allocated with tag '{had}'"),
        );
    }
    let (start, end) = (P as usize, P as usize + block.layout.size());
    let timers = machine.timers.armed_in(start, end);
    let dpcs = machine.dpcs.queued_in(start, end);
    // WDK "Bug Check 0xC7: TIMER_OR_DPC_INVALID"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc7--timer-or-dpc-invalid): a kernel timer or DPC in memory
    // being freed.
    if !timers.is_empty() || !dpcs.is_empty() {
        pool.live.insert(P as usize, block);
        drop(pool);
        bugcheck(
            "TIMER_OR_DPC_INVALID",
            format!(
                "ExFreePoolWithTag({P:p}) frees memory holding armed timer(s) {timers:#x?} or \
                 queued DPC(s) {dpcs:#x?}"
            ),
        );
    }
    // A buffer or MDL a pending WSK IRP still uses (rule and pages at
    // `wsk::pending_irp_using`).
    if let Some(detail) = crate::wsk::pending_irp_using(crate::wsk::Freed::Pool { start, end }) {
        pool.live.insert(P as usize, block);
        drop(pool);
        bugcheck("PAGE_FAULT_IN_FREED_SPECIAL_POOL", detail);
    }
    // WDK "ExFreePoolWithTag function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exfreepoolwithtag): a caller
    // at DISPATCH_LEVEL must have allocated nonpaged pool, otherwise IRQL <= APC_LEVEL;
    // BAD_POOL_CALLER 0x09 (bug-check-0xc2--bad-pool-caller).
    if block.paged && irql::current() > APC_LEVEL {
        pool.live.insert(P as usize, block);
        drop(pool);
        require_pool_irql(APC_LEVEL, "ExFreePoolWithTag", "frees paged pool");
        return;
    }
    drop(pool);
    // SAFETY: allocated by `allocate` with this layout and removed from the table: freed once.
    // Poisoned first (its first page) so a use after free reads garbage, not plausible data.
    unsafe {
        core::ptr::write_bytes(P.cast::<u8>(), 0xDD, block.layout.size().min(PATTERN_WHOLE));
    };
    // SAFETY: as above.
    unsafe { std::alloc::dealloc(P.cast(), block.layout) };
}

/// Host implementation of `MmGetSystemRoutineAddress`: `ExAllocatePool2` and
/// `KeQueryPerformanceCounter` (what drivers here resolve at run time), `KeShouldYieldProcessor`
/// (unless the kernel was booted without it, as an older Windows), else null. `PASSIVE_LEVEL`.
///
/// # Safety
/// `SystemRoutineName` must be a valid counted string.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn MmGetSystemRoutineAddress(
    SystemRoutineName: *mut UNICODE_STRING,
) -> PVOID {
    // WDK "MmGetSystemRoutineAddress function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-mmgetsystemroutineaddress): IRQL = PASSIVE_LEVEL.
    irql::require_at_most(PASSIVE_LEVEL, "MmGetSystemRoutineAddress");
    // SAFETY: the caller guarantees a valid counted string.
    let name = unsafe { &*SystemRoutineName };
    // SAFETY: as above: its buffer holds `Length` bytes.
    let name = String::from_utf16_lossy(unsafe { name.as_wide() });
    if name == "ExAllocatePool2" {
        let routine: unsafe extern "system" fn(POOL_FLAGS, SIZE_T, u32) -> PVOID = ExAllocatePool2;
        routine as PVOID
    } else if name == "KeQueryPerformanceCounter" {
        let routine: unsafe extern "system-unwind" fn(
            *mut crate::LARGE_INTEGER,
        ) -> crate::LARGE_INTEGER = super::dpc::KeQueryPerformanceCounter;
        routine as PVOID
    } else if name == "KeShouldYieldProcessor"
        && machine::try_current().is_some_and(|m| m.dpcs.should_yield_exported())
    {
        let routine: unsafe extern "system" fn() -> u32 = super::dpc::KeShouldYieldProcessor;
        routine as PVOID
    } else {
        core::ptr::null_mut()
    }
}

/// Leak report lines: live allocations grouped by tag.
pub(crate) fn leaks(table: &PoolTable) -> Vec<String> {
    by_tag(table)
        .into_iter()
        .map(|(tag, count, bytes)| leak_line(&tag, count, bytes))
        .collect()
}

/// One leak report line: `count` live allocations of `bytes` in all under `tag`.
pub(crate) fn leak_line(tag: &str, count: usize, bytes: usize) -> String {
    format!("pool tag '{tag}': {count} allocation(s), {bytes} bytes not freed")
}

/// Live allocations grouped by tag: (tag text, blocks, bytes), in tag order.
pub(crate) fn by_tag(table: &PoolTable) -> Vec<(String, usize, usize)> {
    let mut by_tag: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for block in table.live.values() {
        let entry = by_tag.entry(block.tag).or_default();
        entry.0 += 1;
        entry.1 += block.layout.size();
    }
    by_tag
        .into_iter()
        .map(|(tag, (count, bytes))| (tag_text(tag), count, bytes))
        .collect()
}

/// Live blocks in `table` and their bytes (as asked for, zero-byte requests counting one).
pub(crate) fn usage(table: &PoolTable) -> (usize, usize) {
    let bytes = table.live.values().map(|block| block.layout.size()).sum();
    (table.live.len(), bytes)
}
