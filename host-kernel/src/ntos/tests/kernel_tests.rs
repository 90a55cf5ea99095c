use super::*;
use crate::kernel::{RegValue, Registry, on_kernel_thread};
use crate::{
    DRIVER_OBJECT, FALSE, HANDLE, IoAllocateMdl, IoFreeMdl, KEY_READ,
    KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation, MDL_ALLOCATED_FIXED_SIZE,
    MDL_SOURCE_IS_NONPAGED_POOL, MmBuildMdlForNonPagedPool, MmGetMdlByteCount, MmGetMdlByteOffset,
    MmGetMdlVirtualAddress, MmGetSystemAddressForMdlSafe, NTSTATUS, NonPagedPoolNx,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, PagedPool, REG_DWORD, REG_SZ, STATUS_BUFFER_OVERFLOW,
    STATUS_BUFFER_TOO_SMALL, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
    UNICODE_STRING, ZwClose, ZwOpenKey, ZwQueryValueKey, pool_tag,
};

const TAG: u32 = pool_tag(*b"Test");

#[test]
fn pool_routines_track_tags_and_exallocatepool2_zeroes() {
    let kernel = boot();
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL; every allocation is freed with its tag.
        unsafe { crate::init_pool_routines() };
        // SAFETY: as above.
        let p = unsafe { crate::allocate_nonpaged(64, TAG) };
        assert!(!p.is_null());
        // SAFETY: as above.
        unsafe { crate::ExFreePoolWithTag(p, TAG) };
        let name: Vec<u16> = "ExAllocatePool2".encode_utf16().collect();
        let mut name = UNICODE_STRING::from_wide(&name[..]);
        // SAFETY: as above.
        let routine = unsafe { crate::MmGetSystemRoutineAddress(&raw mut name) };
        assert!(!routine.is_null());
        // SAFETY: as above.
        let f: unsafe extern "system" fn(u64, usize, u32) -> crate::PVOID =
            unsafe { core::mem::transmute(routine) };
        // SAFETY: as above.
        let zeroed = unsafe { f(crate::POOL_FLAG_NON_PAGED, 32, TAG).cast::<u8>() };
        // SAFETY: as above: 32 bytes were allocated.
        let bytes = unsafe { core::slice::from_raw_parts(zeroed, 32) };
        assert!(bytes.iter().all(|b| *b == 0), "ExAllocatePool2 zeroes");
        // SAFETY: as above.
        unsafe { crate::ExFreePoolWithTag(zeroed.cast(), TAG) };
        // SAFETY: as above.
        unsafe {
            assert!(
                f(crate::POOL_FLAG_NON_PAGED, 32, 0).is_null(),
                "a zero tag: NULL"
            );
        };
        // SAFETY: as above.
        unsafe {
            assert!(
                f(crate::POOL_FLAG_NON_PAGED | crate::POOL_FLAG_PAGED, 32, TAG).is_null(),
                "two pool types: NULL"
            );
        };
        let other: Vec<u16> = "NoSuchRoutine".encode_utf16().collect();
        let mut other = UNICODE_STRING::from_wide(&other[..]);
        // SAFETY: as above.
        unsafe { assert!(crate::MmGetSystemRoutineAddress(&raw mut other).is_null()) };
    });
    assert!(kernel.check_leaks().is_clean());
}

/// Resident memory of this process, in bytes (`/proc/self/statm`, second field, in pages).
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}

/// Uninitialised pool carries the pattern (0xA5) where it is cheap: every byte of a small
/// block, both ends of a big one; and a big block's untouched pages stay out of memory.
#[test]
fn uninitialised_pool_is_patterned_without_making_big_blocks_resident() {
    const BIG: usize = 64 << 20;
    let _kernel = boot();
    // SAFETY: PASSIVE_LEVEL; freed below with its tag.
    let small = unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, 100, TAG) }.cast::<u8>();
    assert!(!small.is_null());
    // SAFETY: 100 bytes were allocated.
    let bytes = unsafe { core::slice::from_raw_parts(small, 100) };
    assert!(
        bytes.iter().all(|&b| b == 0xA5),
        "small block fully patterned"
    );
    // SAFETY: allocated above with TAG.
    unsafe { crate::ExFreePoolWithTag(small.cast(), TAG) };

    let before = resident_bytes();
    // SAFETY: PASSIVE_LEVEL; freed below with its tag.
    let big = unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, BIG, TAG) }.cast::<u8>();
    assert!(!big.is_null());
    let grown = resident_bytes().saturating_sub(before);
    // SAFETY: BIG bytes were allocated; the ends are what the pattern covers.
    let head = unsafe { core::slice::from_raw_parts(big, 64) };
    // SAFETY: the last 64 of the BIG bytes.
    let tail_start = unsafe { big.add(BIG - 64) };
    // SAFETY: as above.
    let tail = unsafe { core::slice::from_raw_parts(tail_start, 64) };
    assert!(
        head.iter().chain(tail).all(|&b| b == 0xA5),
        "big block's ends patterned"
    );
    // SAFETY: allocated above with TAG.
    unsafe { crate::ExFreePoolWithTag(big.cast(), TAG) };
    // Other tests run in this process at the same time: a bound far below the block's size.
    assert!(
        grown < BIG / 4,
        "allocating {BIG} bytes made {grown} bytes resident"
    );
}

#[test]
fn freeing_pool_twice_or_with_the_wrong_tag_bugchecks() {
    let kernel = boot();
    // SAFETY: PASSIVE_LEVEL.
    let p = unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, 16, TAG) };
    let message = expect_bugcheck("BAD_POOL_CALLER", || {
        // SAFETY: the wrong tag is the violation under test.
        unsafe { crate::ExFreePoolWithTag(p, pool_tag(*b"Oops")) }
    });
    assert!(
        message.contains("'Oops'") && message.contains("'Test'"),
        "{message}"
    );
    // SAFETY: the right tag this time.
    unsafe { crate::ExFreePoolWithTag(p, TAG) };
    expect_bugcheck("BAD_POOL_CALLER", || {
        // SAFETY: the double free is the violation under test (nothing is touched: the kernel
        // finds the address is not live before using it).
        unsafe { crate::ExFreePoolWithTag(p, TAG) }
    });
    take(&kernel, &["BAD_POOL_CALLER", "BAD_POOL_CALLER"]);
    expect_bugcheck("BAD_POOL_CALLER", || {
        kernel.on_kernel_thread(|| {
            let _ = crate::ntos::irql::raise(crate::DISPATCH_LEVEL);
            // SAFETY: paged pool at DISPATCH_LEVEL is the violation under test.
            let p = unsafe { crate::ExAllocatePoolWithTag(PagedPool, 16, TAG) };
            p as usize
        });
    });
    expect_bugcheck("BAD_POOL_CALLER", || {
        // SAFETY: a zero tag is the violation under test.
        unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, 16, 0) }
    });
    take(&kernel, &["BAD_POOL_CALLER", "BAD_POOL_CALLER"]);
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn mdls_describe_their_buffer_and_nonpaged_ones_are_mapped() {
    let kernel = boot();
    // SAFETY: the buffer outlives the MDL; both are freed.
    let buffer = unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, 10_000, TAG) };
    // SAFETY: as above.
    let va = unsafe { buffer.cast::<u8>().add(100) };
    // SAFETY: as above.
    let mdl = unsafe { IoAllocateMdl(va.cast(), 5000, FALSE, FALSE, core::ptr::null_mut()) };
    assert!(!mdl.is_null());
    // SAFETY: as above.
    unsafe { assert_eq!(MmGetMdlVirtualAddress(mdl), va.cast()) };
    // SAFETY: as above.
    unsafe { assert_eq!(MmGetMdlByteCount(mdl), 5000) };
    // SAFETY: as above.
    unsafe { assert_eq!(MmGetMdlByteOffset(mdl) as usize, va as usize % 4096) };
    // SAFETY: as above.
    unsafe { assert_eq!((*mdl).StartVa as usize % 4096, 0, "StartVa is page-aligned") };
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            (*mdl).MdlFlags & MDL_ALLOCATED_FIXED_SIZE,
            MDL_ALLOCATED_FIXED_SIZE
        );
    };
    // SAFETY: as above.
    unsafe { MmBuildMdlForNonPagedPool(mdl) };
    // SAFETY: as above.
    unsafe { assert_ne!((*mdl).MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL, 0) };
    // SAFETY: as above.
    unsafe { assert_eq!((*mdl).MappedSystemVa, va.cast()) };
    // SAFETY: as above.
    unsafe { assert_eq!(MmGetSystemAddressForMdlSafe(mdl, 16), va.cast()) };
    // An MDL attached to an IRP.
    // SAFETY: as above.
    let irp = unsafe { crate::IoAllocateIrp(1, FALSE) };
    // SAFETY: as above.
    let attached = unsafe { IoAllocateMdl(va.cast(), 10, FALSE, FALSE, irp) };
    // SAFETY: as above.
    unsafe { assert_eq!((*irp).MdlAddress, attached) };
    let report = kernel.check_leaks();
    assert_eq!(report.leaks().len(), 4, "{report}");
    assert!(
        report.leaks().iter().any(|l| l.contains("pool tag 'Test'")),
        "{report}"
    );
    assert!(
        report
            .leaks()
            .iter()
            .filter(|l| l.starts_with("MDL"))
            .count()
            == 2,
        "{report}"
    );
    // SAFETY: as above.
    unsafe { IoFreeMdl(attached) };
    // SAFETY: as above.
    unsafe { crate::IoFreeIrp(irp) };
    // SAFETY: as above.
    unsafe { IoFreeMdl(mdl) };
    // SAFETY: as above.
    unsafe { crate::ExFreePoolWithTag(buffer, TAG) };
    assert!(kernel.check_leaks().is_clean());
}

fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// Opens `path` and queries `value` into a buffer of `len` bytes: (status, type, data).
fn query(path: &str, value: &str, len: usize) -> (NTSTATUS, NTSTATUS, u32, Vec<u8>) {
    on_kernel_thread(|| {
        let path = wide(path);
        let mut name = UNICODE_STRING::from_wide(&path);
        let mut attributes = crate::InitializeObjectAttributes(
            &raw mut name,
            OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
        );
        let mut key: HANDLE = core::ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; every pointer is to a live local.
        let open = unsafe { ZwOpenKey(&raw mut key, KEY_READ, &raw mut attributes) };
        if open != STATUS_SUCCESS {
            return (open, 0, 0, Vec::new());
        }
        let value = wide(value);
        let mut value = UNICODE_STRING::from_wide(&value);
        let mut buffer = std::vec![0u64; len.div_ceil(8)];
        let mut needed = 0u32;
        // SAFETY: the buffer holds `len` bytes, 8-aligned.
        let status = unsafe {
            ZwQueryValueKey(
                key,
                &raw mut value,
                KeyValuePartialInformation,
                buffer.as_mut_ptr().cast(),
                u32::try_from(len).unwrap(),
                &raw mut needed,
            )
        };
        // SAFETY: an open handle, closed once.
        unsafe { ZwClose(key) };
        let bytes: Vec<u8> = buffer
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .take(len)
            .collect();
        let header = core::mem::offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data);
        let data = if status == STATUS_SUCCESS {
            bytes[header..needed as usize].to_vec()
        } else {
            Vec::new()
        };
        let kind = if bytes.len() >= 8 {
            i32::from_le_bytes(bytes[4..8].try_into().unwrap())
        } else {
            0
        };
        (
            STATUS_SUCCESS,
            status,
            u32::try_from(kind).unwrap_or(0),
            data,
        )
            .with_needed(needed)
    })
}

trait WithNeeded {
    fn with_needed(self, needed: u32) -> Self;
}

impl WithNeeded for (NTSTATUS, NTSTATUS, u32, Vec<u8>) {
    fn with_needed(self, needed: u32) -> Self {
        if self.1 == STATUS_SUCCESS {
            self
        } else {
            (self.0, self.1, needed, self.3)
        }
    }
}

const SERVICE: &str = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\regtest";

unsafe extern "system" fn empty_entry(_: *mut DRIVER_OBJECT, _: *mut UNICODE_STRING) -> NTSTATUS {
    STATUS_SUCCESS
}

#[test]
fn registry_values_read_back_through_zwqueryvaluekey() {
    let kernel = boot();
    let registry = Registry::new()
        .with("Parameters", "Port", RegValue::Dword(7007))
        .with("Parameters", "Runner", RegValue::Sz("passive".into()));
    let driver = kernel
        .load_driver(empty_entry, "regtest", registry)
        .unwrap();
    assert_eq!(driver.registry_path(), SERVICE);
    let params = std::format!("{SERVICE}\\parameters"); // case-insensitive
    let (open, status, kind, data) = query(&params, "port", 64);
    assert_eq!(
        (open, status, kind),
        (STATUS_SUCCESS, STATUS_SUCCESS, REG_DWORD)
    );
    assert_eq!(data, 7007u32.to_le_bytes());
    let (_, status, kind, data) = query(&params, "Runner", 64);
    assert_eq!((status, kind), (STATUS_SUCCESS, REG_SZ));
    let text: Vec<u8> = "passive\0"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(data, text, "REG_SZ is UTF-16 with its terminator");
    let (_, status, _, _) = query(&params, "Missing", 64);
    assert_eq!(status, STATUS_OBJECT_NAME_NOT_FOUND);
    let (_, status, needed, _) = query(&params, "Runner", 8);
    assert_eq!((status, needed), (STATUS_BUFFER_TOO_SMALL, 12 + 16));
    let (_, status, needed, _) = query(&params, "Runner", 16);
    assert_eq!((status, needed), (STATUS_BUFFER_OVERFLOW, 12 + 16));
    let (open, ..) = query(&std::format!("{SERVICE}\\NoSuchKey"), "Port", 64);
    assert_eq!(open, STATUS_OBJECT_NAME_NOT_FOUND);
    let (open, ..) = query(SERVICE, "Nothing", 64);
    assert_eq!(open, STATUS_SUCCESS, "the service key exists");
    kernel.set_registry_value(
        "\\Registry\\Machine\\Software\\Test",
        "Level",
        RegValue::Dword(3),
    );
    let (_, status, _, data) = query("\\Registry\\Machine\\Software\\Test", "Level", 64);
    assert_eq!(
        (status, data),
        (STATUS_SUCCESS, 3u32.to_le_bytes().to_vec())
    );
    assert!(kernel.unload(driver).leaks()[0].contains("no DriverUnload"));
}

/// The test drivers keep their allocation here between `DriverEntry` and `DriverUnload`.
static DRIVER_BUFFER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

unsafe extern "system" fn tidy_unload(_: *mut DRIVER_OBJECT) {
    let p = DRIVER_BUFFER.swap(0, core::sync::atomic::Ordering::SeqCst);
    // SAFETY: the allocation DriverEntry made, freed once.
    unsafe { crate::ExFreePoolWithTag(p as crate::PVOID, TAG) };
    crate::kprint!("tidy: unloaded\n");
}

unsafe extern "system" fn leaky_unload(_: *mut DRIVER_OBJECT) {}

unsafe extern "system" fn entry_with(
    driver: *mut DRIVER_OBJECT,
    path: *mut UNICODE_STRING,
    unload: crate::DRIVER_UNLOAD,
) -> NTSTATUS {
    assert_eq!(crate::KeGetCurrentIrql(), crate::PASSIVE_LEVEL);
    // SAFETY: DriverEntry's arguments are live; PASSIVE_LEVEL.
    let path = unsafe { &*path };
    // SAFETY: as above.
    let path = String::from_utf16_lossy(unsafe { path.as_wide() });
    crate::kprint!("entry: {path}\n");
    // SAFETY: as above.
    let name = unsafe { &(*driver).DriverName };
    // SAFETY: as above.
    let name = String::from_utf16_lossy(unsafe { name.as_wide() });
    assert_eq!(name, "\\Driver\\tidy");
    // SAFETY: as above.
    unsafe { crate::init_pool_routines() };
    // SAFETY: as above.
    unsafe {
        DRIVER_BUFFER.store(
            crate::allocate_nonpaged(128, TAG) as usize,
            core::sync::atomic::Ordering::SeqCst,
        );
    };
    // SAFETY: as above.
    unsafe { (*driver).DriverUnload = Some(unload) };
    STATUS_SUCCESS
}

unsafe extern "system" fn tidy_entry(
    driver: *mut DRIVER_OBJECT,
    path: *mut UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_with(driver, path, tidy_unload) }
}

unsafe extern "system" fn leaky_entry(
    driver: *mut DRIVER_OBJECT,
    path: *mut UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: forwarded.
    unsafe { entry_with(driver, path, leaky_unload) }
}

unsafe extern "system" fn failing_entry(_: *mut DRIVER_OBJECT, _: *mut UNICODE_STRING) -> NTSTATUS {
    STATUS_UNSUCCESSFUL
}

#[test]
fn a_tidy_driver_loads_and_unloads_clean_and_a_leaky_one_is_named() {
    let kernel = boot();
    let driver = kernel
        .load_driver(tidy_entry, "tidy", Registry::new())
        .unwrap();
    let report = kernel.unload(driver);
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.to_string(), "no leaks");
    let log = kernel.debug_log();
    assert!(
        log.contains("entry: \\Registry\\Machine\\System\\CurrentControlSet\\Services\\tidy"),
        "{log}"
    );
    assert!(log.contains("tidy: unloaded"), "{log}");

    let driver = kernel
        .load_driver(leaky_entry, "tidy", Registry::new())
        .unwrap();
    let report = kernel.unload(driver);
    assert!(!report.is_clean());
    assert!(
        report
            .to_string()
            .contains("pool tag 'Test': 1 allocation(s), 128 bytes not freed"),
        "{report}"
    );
    let p = DRIVER_BUFFER.swap(0, core::sync::atomic::Ordering::SeqCst);
    // SAFETY: the leaked allocation, freed once.
    unsafe { crate::ExFreePoolWithTag(p as crate::PVOID, TAG) };

    assert_eq!(
        kernel
            .load_driver(failing_entry, "failing", Registry::new())
            .err(),
        Some(STATUS_UNSUCCESSFUL)
    );
}

#[test]
fn dropping_a_kernel_with_unexamined_bugchecks_panics() {
    let kernel = boot();
    expect_bugcheck("BAD_POOL_CALLER", || {
        // SAFETY: freeing a pointer pool never returned is the violation under test.
        unsafe { crate::ExFreePoolWithTag(core::ptr::without_provenance_mut(0x1000), TAG) }
    });
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(kernel))).unwrap_err();
    let message = panic_message(&*payload).unwrap_or("");
    assert!(
        message.contains("nobody examined") && message.contains("BAD_POOL_CALLER"),
        "{message}"
    );
    // The next boot works: the lock was released before the panic.
    drop(boot());
}

#[test]
fn calls_without_a_booted_kernel_bugcheck_clearly() {
    // Take the boot lock so no other test's kernel is running, then drop it.
    drop(boot());
    let _serial = super::super::kernel::hold_boot_lock_for_tests();
    let message = expect_bugcheck("NO_HOST_KERNEL", || {
        // SAFETY: any IRQL; no kernel is the violation under test.
        unsafe { crate::IoAllocateIrp(1, FALSE) }
    });
    assert!(message.contains("IoAllocateIrp"), "{message}");
    // These work anywhere.
    // SAFETY: any IRQL.
    let _ = unsafe { crate::KeQueryInterruptTime() };
    let mut frequency = 0;
    // SAFETY: a valid out-pointer.
    let _ = unsafe { crate::exports::KeQueryPerformanceCounter(&raw mut frequency) };
    assert_eq!(frequency, 10_000_000);
    assert_eq!(crate::KeGetCurrentIrql(), crate::PASSIVE_LEVEL);
    crate::kprint!("no kernel, still printed\n");
}

#[test]
fn describing_paged_pool_as_nonpaged_bugchecks() {
    let kernel = boot();
    // SAFETY: PASSIVE_LEVEL; the MDL over paged pool is the violation under test.
    let paged = unsafe { crate::ExAllocatePoolWithTag(PagedPool, 64, TAG) };
    // SAFETY: as above.
    let mdl = unsafe { IoAllocateMdl(paged, 64, FALSE, FALSE, core::ptr::null_mut()) } as usize;
    let paged = paged as usize;
    expect_bugcheck("DRIVER_VERIFIER_DETECTED_VIOLATION", || {
        // SAFETY: a live MDL.
        unsafe { MmBuildMdlForNonPagedPool(mdl as *mut crate::MDL) }
    });
    take(&kernel, &["DRIVER_VERIFIER_DETECTED_VIOLATION"]);
    // SAFETY: both live, freed once.
    unsafe { IoFreeMdl(mdl as *mut crate::MDL) };
    // SAFETY: as above.
    unsafe { crate::ExFreePoolWithTag(paged as crate::PVOID, TAG) };
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn freeing_pool_that_holds_an_armed_timer_bugchecks() {
    let kernel = boot();
    // SAFETY: PASSIVE_LEVEL; the timer lives in the pool block (its second KTIMER-sized slot)
    // until cancelled.
    let block = unsafe { crate::ExAllocatePoolWithTag(NonPagedPoolNx, 256, TAG) };
    // SAFETY: as above: 256 bytes hold two KTIMERs.
    let timer = unsafe { block.cast::<crate::KTIMER>().add(1) };
    // SAFETY: as above.
    unsafe { crate::KeInitializeTimerEx(timer, crate::NotificationTimer) };
    // SAFETY: as above.
    unsafe { crate::KeSetTimerEx(timer, -36_000_000_000, 0, core::ptr::null_mut()) };
    let block = block as usize;
    let message = expect_bugcheck("TIMER_OR_DPC_INVALID", || {
        // SAFETY: freeing the block under an armed timer is the violation under test.
        unsafe { crate::ExFreePoolWithTag(block as crate::PVOID, TAG) }
    });
    assert!(message.contains("armed timer"), "{message}");
    take(&kernel, &["TIMER_OR_DPC_INVALID"]);
    // SAFETY: the block is still live (the free was refused): cancel, then free.
    let timer = unsafe { (block as *mut crate::KTIMER).add(1) };
    // SAFETY: as above.
    unsafe { assert_eq!(crate::KeCancelTimer(timer), crate::TRUE) };
    // SAFETY: as above.
    unsafe { crate::ExFreePoolWithTag(block as crate::PVOID, TAG) };
    assert!(kernel.check_leaks().is_clean());
}

#[test]
fn interrupt_time_moves_in_clock_ticks_and_the_precise_clock_does_not() {
    let kernel = boot();
    let tick = u64::try_from(kernel.config().clock_tick.as_nanos() / 100).unwrap();
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL.
        unsafe { crate::init_precise_clock() };
        assert!(crate::has_precise_clock());
        // SAFETY: any IRQL.
        let interrupt = || unsafe { crate::KeQueryInterruptTime() };
        // Over a few ticks, the interrupt time only ever takes whole-tick values and moves by
        // whole ticks, while the precise clock moves at every read a microsecond apart.
        let (mut coarse_steps, mut precise_steps) = (0, 0);
        let (mut last_coarse, mut last_precise) = (interrupt(), crate::query_precise_time());
        let start = std::time::Instant::now();
        while start.elapsed() < kernel.config().clock_tick * 3 {
            let spin = std::time::Instant::now();
            while spin.elapsed() < Duration::from_micros(50) {}
            let (coarse, precise) = (interrupt(), crate::query_precise_time());
            assert_eq!(
                coarse % tick,
                0,
                "interrupt time {coarse} between ticks of {tick}"
            );
            assert!(coarse >= last_coarse && precise >= last_precise);
            coarse_steps += usize::from(coarse != last_coarse);
            precise_steps += usize::from(precise != last_precise);
            (last_coarse, last_precise) = (coarse, precise);
        }
        assert!(
            (2..=4).contains(&coarse_steps),
            "{coarse_steps} ticks in three"
        );
        assert!(
            precise_steps > 100,
            "precise clock moved only {precise_steps} times"
        );
    });
}

#[test]
fn bugcheck_at_reports_the_panic_location() {
    let kernel = boot();
    let location = core::panic::Location::caller();
    let message = expect_bugcheck("WSK_RS_DRIVER_PANIC", || crate::bugcheck_at(Some(location)));
    let expected = std::format!(
        "KeBugCheckEx(0x57534b50, {:#x}, {:#x}, {:#x}, {:#x})",
        location.file().as_ptr() as usize,
        location.file().len(),
        location.line(),
        location.column()
    );
    assert!(message.ends_with(&expected), "{message}");
    take(&kernel, &["WSK_RS_DRIVER_PANIC"]);
}

#[test]
fn kprint_reaches_dbgprintex_at_the_level_it_names() {
    let kernel = boot();
    let levels = [
        crate::DPFLTR_ERROR_LEVEL,
        crate::DPFLTR_WARNING_LEVEL,
        crate::DPFLTR_TRACE_LEVEL,
        crate::DPFLTR_INFO_LEVEL,
    ];
    let before = levels.map(|level| kernel.debug_prints_at(level));
    kernel.on_kernel_thread(|| {
        crate::kprint!(Info, "kprint: info {}\n", 1);
        crate::kprint!(Info, "kprint: info {}\n", 2);
        crate::kprint!(Trace, "kprint: trace\n");
        crate::kprint!(Warning, "kprint: warning\n");
        crate::kprint!(Error, "kprint: error\n");
        crate::kprint!("kprint: no level, so error\n");
    });
    let added = levels.map(|level| kernel.debug_prints_at(level) - before[level as usize]);
    assert_eq!(added, [2, 1, 1, 2], "error, warning, trace, info");
    let log = kernel.debug_log();
    assert!(
        log.contains("kprint: info 2\nkprint: trace\nkprint: warning\n"),
        "{log}"
    );
}
