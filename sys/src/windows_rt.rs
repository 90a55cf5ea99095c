//! Symbols the precompiled `core` of the windows-msvc target expects from the C runtime. A
//! driver links no CRT: `ntoskrnl.exe` exports the memory routines and `__chkstk`, and the two
//! remaining symbols are defined here.

/// Marks that floating point is used; the MSVC CRT normally defines it.
#[unsafe(no_mangle)]
#[used]
pub static _fltused: i32 = 0;

/// `ExceptionContinueSearch`: "not mine, ask the next frame's handler".
const EXCEPTION_CONTINUE_SEARCH: i32 = 1;

/// The C++ frame handler MSVC-built `core` names in its unwind data (`UNW_FLAG_EHANDLER`):
/// `EXCEPTION_DISPOSITION __CxxFrameHandler3(EXCEPTION_RECORD *, void *EstablisherFrame,
/// CONTEXT *, DISPATCHER_CONTEXT *)`. Drivers are built with `panic = "abort"` and raise no
/// C++ exceptions, but the kernel's exception dispatcher calls it for any exception passing
/// through those frames (an access violation under a `__try` further up). It handles nothing:
/// `ExceptionContinueSearch`. Returning `ExceptionContinueExecution` (0) instead would resume
/// at the faulting instruction, forever. `cargo xtask build-driver` checks the code of every
/// exception handler in the image is this one.
#[unsafe(no_mangle)]
pub extern "C" fn __CxxFrameHandler3(
    _exception_record: *mut core::ffi::c_void,
    _establisher_frame: *mut core::ffi::c_void,
    _context: *mut core::ffi::c_void,
    _dispatcher_context: *mut core::ffi::c_void,
) -> i32 {
    EXCEPTION_CONTINUE_SEARCH
}

// Declared, never called from Rust: rustc emits an import entry for every item of a
// raw-dylib block, which is what `core`'s own calls to these symbols link against.
#[allow(dead_code, reason = "imported for the linker, not for Rust callers")]
#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "C" {
    fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8;
    fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
    fn __chkstk();
}
