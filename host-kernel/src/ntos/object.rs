//! The object manager's part: a handle table and referenced objects (system threads and
//! registry keys), and system threads themselves.

use core::cell::UnsafeCell;
use std::boxed::Box;
use std::cell::Cell;
use std::format;
use std::panic::AssertUnwindSafe;
use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

use super::event::{THREAD_OBJECT, init_header, signal};
use super::fast_hash::{FastMap, FastSet};
use super::irql;
use super::machine::{self, Machine, lock};
use super::spinlock;
use super::verifier::{self, bugcheck};
use crate::{
    ACCESS_MASK, CLIENT_ID, DISPATCH_LEVEL, DISPATCHER_HEADER, HANDLE, KPROCESSOR_MODE,
    KSTART_ROUTINE, NTSTATUS, OBJECT_ATTRIBUTES, PASSIVE_LEVEL, POBJECT_TYPE, PVOID,
    STATUS_INVALID_HANDLE, STATUS_SUCCESS,
};

std::thread_local! {
    /// True on system threads (which may call `PsTerminateSystemThread`).
    static SYSTEM_THREAD: Cell<bool> = const { Cell::new(false) };
    /// What ends a driver's system thread when `PsTerminateSystemThread` cannot unwind.
    static EXIT: core::cell::RefCell<Option<Box<dyn FnOnce()>>> = const { core::cell::RefCell::new(None) };
}

/// The payload `PsTerminateSystemThread` unwinds with; the thread wrapper catches it.
struct Terminate;

/// A thread object: starts with its dispatcher header, signalled when the thread ends.
#[repr(C)]
pub(crate) struct ThreadObject {
    header: UnsafeCell<DISPATCHER_HEADER>,
}

// SAFETY: the header is only touched under the machine's dispatcher lock (state) or before
// the object is shared (initialisation); the pointers in it point into the object itself.
unsafe impl Send for ThreadObject {}
// SAFETY: as above.
unsafe impl Sync for ThreadObject {}

/// A thread object on the heap, reached through raw pointers only: its address goes out
/// (handles, `KeWaitForSingleObject`), so it is never moved or reborrowed as a `Box` would be
/// once it is in the object table (Miri's aliasing check rejects the pointers handed out
/// otherwise). Freed when dropped.
pub(crate) struct ThreadAllocation(core::ptr::NonNull<ThreadObject>);

// SAFETY: owns its ThreadObject, which is Send and Sync.
unsafe impl Send for ThreadAllocation {}
// SAFETY: as above.
unsafe impl Sync for ThreadAllocation {}

impl ThreadAllocation {
    fn new(thread: ThreadObject) -> Self {
        Self(core::ptr::NonNull::from(Box::leak(Box::new(thread))))
    }

    /// Its dispatcher header, with the allocation's provenance exposed (the kernel turns
    /// the address back into a pointer).
    fn header(&self) -> *mut DISPATCHER_HEADER {
        // SAFETY: in bounds of the live allocation.
        let field = unsafe { &raw const (*self.0.as_ptr()).header };
        let header = UnsafeCell::raw_get(field);
        let _ = header.expose_provenance();
        header
    }
}

impl Drop for ThreadAllocation {
    fn drop(&mut self) {
        // SAFETY: leaked from a Box in `new`, freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// A registry key object.
pub(crate) struct KeyObject {
    /// The key's full path, lower case.
    pub(crate) path: String,
}

/// What an object is.
pub(crate) enum Body {
    Thread(ThreadAllocation),
    Key(Box<KeyObject>),
}

impl Body {
    fn address(&self) -> usize {
        match self {
            Body::Thread(t) => t.header().addr(),
            Body::Key(k) => core::ptr::from_ref::<KeyObject>(k) as usize,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Body::Thread(_) => "thread",
            Body::Key(_) => "registry key",
        }
    }
}

struct Entry {
    refs: usize,
    body: Body,
}

/// Handles and referenced objects.
#[derive(Default)]
pub(crate) struct Objects {
    handles: FastMap<usize, usize>,
    table: FastMap<usize, Entry>,
    /// Driver threads still running (thread object addresses).
    running: FastSet<usize>,
    next_handle: usize,
}

impl Objects {
    /// Inserts an object with one reference, held by a new handle; returns the handle.
    pub(crate) fn insert_with_handle(&mut self, body: Body) -> HANDLE {
        let address = body.address();
        self.table.insert(address, Entry { refs: 1, body });
        self.next_handle += 4;
        let handle = self.next_handle;
        self.handles.insert(handle, address);
        core::ptr::without_provenance_mut(handle)
    }

    /// The object behind a handle.
    pub(crate) fn resolve(&self, handle: HANDLE) -> Option<&Body> {
        let address = self.handles.get(&(handle as usize))?;
        self.table.get(address).map(|e| &e.body)
    }

    /// Drops one reference; the object goes with its last one. None if unknown.
    fn dereference(&mut self, address: usize) -> Option<usize> {
        let entry = self.table.get_mut(&address)?;
        entry.refs -= 1;
        let left = entry.refs;
        if left == 0 {
            self.table.remove(&address);
        }
        Some(left)
    }

    /// Leak report lines: open handles, referenced objects, running threads.
    pub(crate) fn leaks(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (&handle, address) in &self.handles {
            if let Some(entry) = self.table.get(address) {
                lines.push(format!(
                    "handle {handle:#x} to a {} object not closed",
                    entry.body.kind()
                ));
            }
        }
        let by_handles: FastMap<usize, usize> =
            self.handles.values().fold(FastMap::default(), |mut m, &a| {
                *m.entry(a).or_default() += 1;
                m
            });
        for (&address, entry) in &self.table {
            let held = by_handles.get(&address).copied().unwrap_or(0)
                + usize::from(self.running.contains(&address));
            if entry.refs > held {
                lines.push(format!(
                    "{} object {address:#x}: {} reference(s) not released",
                    entry.body.kind(),
                    entry.refs - held
                ));
            }
        }
        for &thread in &self.running {
            lines.push(format!("system thread {thread:#x} still running"));
        }
        lines
    }
}

/// Runs `f` as the body of a system thread at `PASSIVE_LEVEL`: afterwards the thread must be
/// back at `PASSIVE_LEVEL` holding no spin lock. `PsTerminateSystemThread` ends `f` early
/// (`Ok(None)`); other panics come back as `Err` after any recovery.
pub(crate) fn system_thread_body<R>(f: impl FnOnce() -> R) -> std::thread::Result<Option<R>> {
    SYSTEM_THREAD.with(|s| s.set(true));
    irql::set_unchecked(PASSIVE_LEVEL);
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    let result = match result {
        Ok(value) => Ok(Some(value)),
        Err(payload) if payload.is::<Terminate>() => Ok(None),
        Err(payload) => Err(payload),
    };
    // After a panic the thread's IRQL and locks are the panic's consequence, not news.
    let panicked = result.is_err();
    let check = std::panic::catch_unwind(|| {
        if panicked {
            return;
        }
        // WDK "Bug Check 0xC8: IRQL_UNEXPECTED_VALUE"
        // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc8--irql-unexpected-value): a thread routine must end at
        // the PASSIVE_LEVEL it started at (PsCreateSystemThread page: it runs at
        // PASSIVE_LEVEL).
        let irql = irql::current();
        if irql != PASSIVE_LEVEL {
            bugcheck(
                "IRQL_UNEXPECTED_VALUE",
                format!("system thread ended at IRQL {irql}"),
            );
        }
        // Host rule (see irql::lower): no WDK bug check page carries this name; Windows
        // would hang or raise 0xC8 later. Stricter and immediate.
        let held = irql::held_locks();
        if !held.is_empty() {
            bugcheck(
                "SPIN_LOCK_NOT_RELEASED",
                format!("system thread ended holding spin lock(s) {held:#x?}"),
            );
        }
    });
    spinlock::force_release_held();
    irql::set_unchecked(PASSIVE_LEVEL);
    match (result, check) {
        (Ok(_), Err(payload)) => Err(payload),
        (result, _) => result,
    }
}

/// Host implementation of `PsCreateSystemThread`: a host thread at `PASSIVE_LEVEL`.
/// `PASSIVE_LEVEL`.
///
/// # Safety
/// `ThreadHandle` writable; `ClientId` null or writable; `StartRoutine` safe to call with
/// `StartContext` on another thread.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn PsCreateSystemThread(
    ThreadHandle: *mut HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectAttributes: *mut OBJECT_ATTRIBUTES,
    ProcessHandle: HANDLE,
    ClientId: *mut CLIENT_ID,
    StartRoutine: Option<KSTART_ROUTINE>,
    StartContext: PVOID,
) -> NTSTATUS {
    let _ = (DesiredAccess, ObjectAttributes, ProcessHandle);
    // WDK "PsCreateSystemThread function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-pscreatesystemthread): IRQL = PASSIVE_LEVEL.
    irql::require_at_most(PASSIVE_LEVEL, "PsCreateSystemThread");
    let machine = machine::current("PsCreateSystemThread");
    let Some(routine) = StartRoutine else {
        return crate::STATUS_INVALID_PARAMETER;
    };
    let thread = ThreadAllocation::new(ThreadObject {
        header: UnsafeCell::new(DISPATCHER_HEADER {
            Type: 0,
            Absolute: 0,
            Size: 0,
            Inserted: 0,
            SignalState: 0,
            WaitListHead: crate::LIST_ENTRY {
                Flink: core::ptr::null_mut(),
                Blink: core::ptr::null_mut(),
            },
        }),
    });
    let header = thread.header();
    // SAFETY: the header is ours and not yet shared.
    unsafe { init_header(header, THREAD_OBJECT, size_of::<DISPATCHER_HEADER>(), 0) };
    let address = header.addr();
    let handle = {
        let mut objects = lock(&machine.objects);
        let handle = objects.insert_with_handle(Body::Thread(thread));
        // The running thread holds a reference until it ends.
        if let Some(entry) = objects.table.get_mut(&address) {
            entry.refs += 1;
        }
        objects.running.insert(address);
        handle
    };
    let context = StartContext as usize;
    let thread_machine = machine.to_arc();
    let spawned = std::thread::Builder::new()
        .name(format!("system-thread-{handle:p}"))
        .spawn(move || {
            let machine = thread_machine;
            machine::adopt(Arc::clone(&machine));
            let finish_machine = Arc::clone(&machine);
            let finish = move || {
                let mut objects = lock(&finish_machine.objects);
                // SAFETY: the thread object lives while the running thread holds its
                // reference; signalled under the objects lock (objects, then dispatcher).
                unsafe {
                    signal(
                        &finish_machine,
                        core::ptr::with_exposed_provenance_mut::<DISPATCHER_HEADER>(address),
                        1,
                    );
                };
                objects.running.remove(&address);
                objects.dereference(address);
            };
            let finish: Box<dyn FnOnce()> = Box::new(finish);
            EXIT.with(|exit| *exit.borrow_mut() = Some(finish));
            let outcome = system_thread_body(|| {
                // SAFETY: the driver's start routine with its context, at PASSIVE_LEVEL.
                verifier::in_callback(|| unsafe {
                    routine(core::ptr::with_exposed_provenance_mut(context));
                });
            });
            if let Err(payload) = outcome {
                verifier::record_caught(&*payload, "a system thread");
            }
            drop(machine);
            if let Some(finish) = EXIT.with(|exit| exit.borrow_mut().take()) {
                finish();
            }
        });
    if spawned.is_err() {
        let mut objects = lock(&machine.objects);
        objects.handles.remove(&(handle as usize));
        objects.running.remove(&address);
        objects.table.remove(&address);
        return crate::STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: the caller guarantees writable out-pointers.
    unsafe { ThreadHandle.write(handle) };
    if !ClientId.is_null() {
        // SAFETY: as above.
        unsafe {
            ClientId.write(CLIENT_ID {
                UniqueProcess: core::ptr::without_provenance_mut(4),
                UniqueThread: handle,
            });
        }
    }
    STATUS_SUCCESS
}

/// Host implementation of `PsTerminateSystemThread`: ends the calling system thread.
/// `PASSIVE_LEVEL`.
///
/// # Safety
/// Only on a system thread; nothing on its stack may need dropping for soundness.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn PsTerminateSystemThread(ExitStatus: NTSTATUS) -> NTSTATUS {
    // WDK "PsTerminateSystemThread function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-psterminatesystemthread): IRQL = PASSIVE_LEVEL; if the thread
    // cannot be terminated (it is not a system thread) the routine returns an error status.
    irql::require_at_most(PASSIVE_LEVEL, "PsTerminateSystemThread");
    if !SYSTEM_THREAD.with(Cell::get) {
        return crate::STATUS_INVALID_PARAMETER;
    }
    let _ = ExitStatus;
    if verifier::in_driver_callback() {
        // Called from the driver's start routine (extern "system"), which nothing can unwind
        // through: end the thread's kernel life here and park its host thread for good.
        // Host rule, as in system_thread_body: recorded, not raised (nothing can unwind here).
        let held = irql::held_locks();
        if !held.is_empty() {
            verifier::record(
                "SPIN_LOCK_NOT_RELEASED",
                format!("PsTerminateSystemThread holding spin lock(s) {held:#x?}"),
            );
            spinlock::force_release_held();
        }
        // The start routine never gets control back: its driver code is over.
        verifier::leave_driver_code_for_good();
        if let Some(finish) = EXIT.with(|exit| exit.borrow_mut().take()) {
            finish();
            loop {
                std::thread::park();
            }
        }
        // Same page: "The driver must not terminate any threads that the system or other
        // drivers created." Windows would end that thread; the host bugchecks under a name of
        // its own (stricter; no WDK bug check page).
        bugcheck(
            "INVALID_PARAMETER",
            "PsTerminateSystemThread from driver code on a thread the driver did not create".into(),
        );
    }
    std::panic::resume_unwind(Box::new(Terminate))
}

/// Host implementation of `ObReferenceObjectByHandle`. `PASSIVE_LEVEL`.
///
/// # Safety
/// `Object` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ObReferenceObjectByHandle(
    Handle: HANDLE,
    DesiredAccess: ACCESS_MASK,
    ObjectType: POBJECT_TYPE,
    AccessMode: KPROCESSOR_MODE,
    Object: *mut PVOID,
    HandleInformation: PVOID,
) -> NTSTATUS {
    let _ = (DesiredAccess, ObjectType, AccessMode, HandleInformation);
    // WDK "ObReferenceObjectByHandle function (wdm.h)"
    // (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-obreferenceobjectbyhandle): IRQL = PASSIVE_LEVEL.
    irql::require_at_most(PASSIVE_LEVEL, "ObReferenceObjectByHandle");
    let machine = machine::current("ObReferenceObjectByHandle");
    let mut objects = lock(&machine.objects);
    let Some(&address) = objects.handles.get(&(Handle as usize)) else {
        return STATUS_INVALID_HANDLE;
    };
    let Some(entry) = objects.table.get_mut(&address) else {
        return STATUS_INVALID_HANDLE;
    };
    entry.refs += 1;
    // SAFETY: the caller guarantees a writable out-pointer.
    unsafe { Object.write(core::ptr::with_exposed_provenance_mut(address)) };
    STATUS_SUCCESS
}

/// Host implementation of `ObfDereferenceObject`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `Object` must be an object the caller holds a reference to.
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ObfDereferenceObject(Object: PVOID) -> isize {
    // WDK "ObDereferenceObject macro (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-obdereferenceobject),
    // which calls ObfDereferenceObject: IRQL <= DISPATCH_LEVEL. A dereference with no
    // reference held is "Bug Check 0x18: REFERENCE_BY_POINTER"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x18--reference-by-pointer).
    irql::require_at_most(DISPATCH_LEVEL, "ObfDereferenceObject");
    let machine = machine::current("ObfDereferenceObject");
    let left = lock(&machine.objects).dereference(Object as usize);
    match left {
        Some(left) => isize::try_from(left).unwrap_or(isize::MAX),
        None => bugcheck(
            "REFERENCE_BY_POINTER",
            format!("ObfDereferenceObject({Object:p}): no reference is held on that object"),
        ),
    }
}

/// Host implementation of `ZwClose`. `PASSIVE_LEVEL`.
///
/// # Safety
/// None beyond the IRQL rule (checked).
#[unsafe(no_mangle)]
pub unsafe extern "system-unwind" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    // WDK "ZwClose function (wdm.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwclose): IRQL = PASSIVE_LEVEL.
    // Closing an invalid handle is "Bug Check 0x93: INVALID_KERNEL_HANDLE"
    // (learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x93--invalid-kernel-handle).
    irql::require_at_most(PASSIVE_LEVEL, "ZwClose");
    let machine = machine::current("ZwClose");
    let mut objects = lock(&machine.objects);
    let Some(address) = objects.handles.remove(&(Handle as usize)) else {
        drop(objects);
        bugcheck(
            "INVALID_KERNEL_HANDLE",
            format!("ZwClose({Handle:p}): not an open kernel handle"),
        );
    };
    objects.dereference(address);
    STATUS_SUCCESS
}

/// Opens an object with a new handle (registry keys).
pub(crate) fn open(machine: &Machine, body: Body) -> HANDLE {
    lock(&machine.objects).insert_with_handle(body)
}
