//! The nonpaged block of a socket's event state, shared by the stream (`tcp::events`) and
//! datagram (`udp_events`) event receives: allocated on first use and installed in the socket
//! object's slot with one compare-exchange (a racing second allocation is freed), freed with
//! the socket object after its close.

use core::ptr;

use wsk_executor::raw::sync::{AtomicPtr, Ordering};
use wsk_sys as sys;

use crate::error::{Error, ErrorKind, Result};

/// The event state in `slot`, or a new one made by `fresh` in nonpaged pool (tag `tag`) and
/// installed there. IRQL <= `DISPATCH_LEVEL`.
///
/// # Errors
/// `NoResources` (named `name`) when the pool has no block for it.
pub(crate) fn install<'a, T>(
    slot: &'a AtomicPtr<T>,
    fresh: impl FnOnce() -> T,
    tag: u32,
    name: &'static str,
) -> Result<&'a T> {
    let mut cell = slot.load(Ordering::Acquire);
    if cell.is_null() {
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
        let mem = unsafe { sys::allocate_nonpaged(size_of::<T>(), tag) }.cast::<T>();
        if mem.is_null() {
            return Err(Error::new(ErrorKind::NoResources, name));
        }
        // SAFETY: a fresh block of the right size (pool memory is 16-aligned, enough for the
        // event states).
        unsafe { mem.write(fresh()) };
        match slot.compare_exchange(ptr::null_mut(), mem, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => cell = mem,
            Err(other) => {
                // SAFETY: ours, never shared: the other allocation won.
                unsafe { free(mem, tag) };
                cell = other;
            }
        }
    }
    // SAFETY: an installed cell lives as long as the socket object, which the caller keeps.
    Ok(unsafe { &*cell })
}

/// Drops and frees an event state (null: none) allocated by [`install`] with `tag`.
///
/// # Safety
/// Nobody uses the cell any more: the socket object's last reference is going, after its
/// close completed (no callback after that), or the cell was never shared.
pub(crate) unsafe fn free<T>(cell: *mut T, tag: u32) {
    if cell.is_null() {
        return;
    }
    // SAFETY: initialised by `install`; the caller guarantees the last use.
    unsafe { ptr::drop_in_place(cell) };
    // SAFETY: the pool block allocated with this tag, dropped just above.
    unsafe { sys::ExFreePoolWithTag(cell.cast(), tag) };
}
