//! Symbols the precompiled `core` of the windows-msvc target expects from the C runtime. A
//! driver links no CRT: `ntoskrnl.exe` exports the memory routines and `__chkstk`, and the two
//! remaining symbols are defined here.

/// Marks that floating point is used; the MSVC CRT normally defines it.
#[unsafe(no_mangle)]
#[used]
pub static _fltused: i32 = 0;

/// The C++ frame handler MSVC-built `core` references for unwinding. Drivers are built with
/// `panic = "abort"`, so it is never called.
#[unsafe(no_mangle)]
pub extern "C" fn __CxxFrameHandler3() {}

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
