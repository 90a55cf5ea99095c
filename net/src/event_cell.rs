//! What the stream (`tcp::events`) and datagram (`udp_events`) event receives share: the
//! nonpaged block of a socket's event state (allocated on first use and installed in the
//! socket object's slot with one compare-exchange, a racing second allocation freed; freed
//! with the socket object after its close), and the retain/release protocol of indications:
//! each keeps the indications its callback retained (`STATUS_PENDING`) in a queue, gives each
//! back with `WskRelease` once taken ([`release_indication`]), and before `WskCloseSocket`
//! marks the queue closing and gives back all it still holds ([`take_for_close`],
//! [`release_all`]): nothing is retained across the close.

use core::ptr;

use wsk_executor::raw::sync::{AtomicPtr, Ordering};
use wsk_sys::{
    self as sys, NTSTATUS, PVOID, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH,
};

use crate::error::{Error, ErrorKind, Result};
use crate::raw::{Kind, SocketInner};

/// What a socket keeps of one indication it retained.
pub(crate) trait RetainedIndication: Copy {
    /// The pointer `WskRelease` takes back: the chain's first `WSK_DATA_INDICATION`, or the
    /// list's first `WSK_DATAGRAM_INDICATION`.
    fn indication(&self) -> PVOID;
}

/// Under the event state's lock, before `WskCloseSocket`: marks the queue closing (the
/// callback then retains nothing more) and takes every indication it holds, for
/// [`release_all`] once the lock is let go.
pub(crate) fn take_for_close<R: Copy, const N: usize>(
    retained: &mut heapless::Deque<R, N>,
    closing: &mut bool,
) -> heapless::Vec<R, N> {
    *closing = true;
    let mut taken = heapless::Vec::new();
    while let Some(r) = retained.pop_front() {
        // Never full: the deque held at most N.
        let _ = taken.push(r);
    }
    taken
}

/// Gives back with `WskRelease` every indication [`take_for_close`] took.
///
/// # Safety
/// The socket is open (its close is being issued now) and no other call can close it
/// meanwhile; each indication is retained by us, given back once here.
pub(crate) unsafe fn release_all<R: RetainedIndication, const N: usize>(
    inner: &SocketInner,
    taken: heapless::Vec<R, N>,
) {
    for r in taken {
        // SAFETY: the caller's contract.
        let _ = unsafe { release_indication(inner, r.indication()) };
    }
}

/// `WskRelease` of an indication `inner`'s socket retained, through its connection or
/// datagram dispatch table (the socket's kind): the provider's status,
/// `STATUS_NOT_IMPLEMENTED` without `WskRelease`. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// The socket is open and no close can be issued meanwhile; `indication` is retained by us and
/// given back once.
pub(crate) unsafe fn release_indication(inner: &SocketInner, indication: PVOID) -> NTSTATUS {
    let socket = inner.wsk();
    // SAFETY: an open socket (caller).
    let dispatch = unsafe { (*socket).Dispatch };
    let release = match inner.kind() {
        // SAFETY: a datagram socket's table is a datagram table; the provider's table outlives
        // its sockets.
        Kind::Datagram => unsafe {
            (*dispatch.cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>()).WskRelease
        },
        // SAFETY: event state with retained indications exists only on connection and
        // datagram sockets: this is a connection table, which outlives its sockets.
        _ => unsafe { (*dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()).WskRelease },
    };
    let Some(release) = release else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    // SAFETY: open socket, an indication we retained and give back once.
    unsafe { release(socket, indication) }
}

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
