//! The operation state machine: the only place in this crate that hands IRPs and memory to WSK.
//!
//! Every socket object ([`SocketInner`]) lives in nonpaged pool and owns four preallocated
//! IRP slots (receive, send, control, close), so steady-state I/O allocates nothing. An
//! operation claims a slot, parks what WSK will hold (buffer, `WSK_BUF`, addresses) inside the
//! slot, reuses the slot's IRP with our one completion routine, and calls WSK.
//!
//! The completion routine records status and information, then either wakes the waiting
//! future or, when the future was dropped, finishes the operation itself: frees the held
//! buffer, closes a socket nobody will receive, and returns the slot. It always returns
//! `STATUS_MORE_PROCESSING_REQUIRED`. Dropping a future in flight calls `IoCancelIrp`; nothing
//! WSK holds is freed before the completion routine has run. Each in-flight IRP holds a
//! reference on its socket object, released as the completion routine's last act, so the
//! object (and the IRP) outlive every completion.
//!
//! Slot state bits and who may touch the held resources:
//! - `BUSY`: a future (or an orphaned operation) owns the slot.
//! - `PENDING`: the IRP is with WSK; only WSK touches the held resources.
//! - `DONE`: the completion routine recorded the result; the owner may take them back.
//! - `ABANDONED`: the future is gone; whoever sees `DONE` last finishes the operation.
//! - `CANCELLING`: a dropper is inside `IoCancelIrp`; the slot (and its IRP) cannot be
//!   recycled until it leaves, so a cancel never hits the next operation's IRP.

use core::cell::UnsafeCell;
use core::future::Future;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use core::task::{Context, Poll};

use wsk_sys::{
    self as sys, ADDRINFOEXW, DEVICE_OBJECT, IRP, NTSTATUS, PVOID, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING, STATUS_UNSUCCESSFUL, WSK_BUF, WSK_PROVIDER_BASIC_DISPATCH, WSK_SOCKET,
};

use crate::addr::RawAddr;
use crate::buf::IoBuf;
use crate::client::ClientInner;
use crate::error::{Error, ErrorKind, Result};
use crate::waker::AtomicWaker;

/// Pool tag of socket objects (`WskS`).
const SOCKET_TAG: u32 = sys::pool_tag(*b"WskS");

/// Slot indices.
pub(crate) const RECV: usize = 0;
/// The send slot.
pub(crate) const SEND: usize = 1;
/// The control slot: bind, connect, accept, disconnect, options, addresses, creation.
pub(crate) const CTL: usize = 2;
/// The close slot, used once, so that closing never needs an allocation.
pub(crate) const CLOSE: usize = 3;
const SLOTS: usize = 4;

const BUSY: u32 = 1;
const PENDING: u32 = 2;
const DONE: u32 = 4;
const ABANDONED: u32 = 8;
const CANCELLING: u32 = 16;

/// Socket flags.
const OPEN: u32 = 1;
const CLOSE_STARTED: u32 = 2;
const CLOSED: u32 = 4;
/// No more sends: a graceful or abortive disconnect was issued.
pub(crate) const SEND_SHUT: u32 = 8;
/// No more receives: abortive disconnect.
pub(crate) const RECV_SHUT: u32 = 16;

/// In `SocketInner::calls`: a close is requested; no call may enter any more, and whoever
/// brings the count of calls in progress to zero issues `WskCloseSocket`.
const CLOSE_REQUESTED: u32 = 1 << 31;

/// Which provider dispatch table the socket has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `WSK_FLAG_LISTEN_SOCKET`.
    Listen,
    /// `WSK_FLAG_CONNECTION_SOCKET`.
    Connection,
    /// `WSK_FLAG_DATAGRAM_SOCKET`.
    Datagram,
}

/// What WSK holds while an operation is in flight; handed back with the result.
pub(crate) struct Held {
    /// The data buffer.
    pub buf: Option<IoBuf>,
    /// The `WSK_BUF` WSK reads (points into `buf`'s MDL).
    pub wsk_buf: WSK_BUF,
    /// Local and remote addresses WSK reads or writes.
    pub addr: [RawAddr; 2],
    /// A socket option value (in and out).
    pub value: u32,
    /// A name-resolution result list.
    pub addrinfo: *mut ADDRINFOEXW,
    /// The socket object that receives a socket this operation creates (accept, socket
    /// creation); if the operation is abandoned, the new socket is closed through it. Holds
    /// one reference, released when the `Held` is dropped.
    pub adopt: Option<NonNull<SocketInner>>,
    /// Small call parameters (flags, family, option codes) for the issue function.
    pub params: [u32; 4],
    /// Name-resolution strings (node, service), pointing into `buf`.
    pub names: [sys::UNICODE_STRING; 2],
}

// SAFETY: the raw pointers in `Held` refer to memory the operation owns (its buffer's MDL, a
// result list, a socket object reference) or into its own `buf`; moving that ownership to
// another thread is sound, and nothing else aliases it while the `Held` is not in flight.
unsafe impl Send for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(child) = self.adopt.take() {
            // SAFETY: `adopt` owns one reference on the child.
            unsafe { SocketInner::release(child) };
        }
    }
}

impl Held {
    /// Nothing held.
    pub(crate) const fn empty() -> Self {
        Self {
            buf: None,
            wsk_buf: WSK_BUF {
                Mdl: ptr::null_mut(),
                Offset: 0,
                Length: 0,
            },
            addr: [RawAddr::zeroed(), RawAddr::zeroed()],
            value: 0,
            addrinfo: ptr::null_mut(),
            adopt: None,
            params: [0; 4],
            names: [sys::UNICODE_STRING {
                Length: 0,
                MaximumLength: 0,
                Buffer: ptr::null_mut(),
            }; 2],
        }
    }

    /// Holds `buf`, with a `WSK_BUF` covering its first `len` bytes.
    pub(crate) fn with_buf(buf: IoBuf, len: usize) -> Self {
        Self::with_buf_range(buf, 0, len)
    }

    /// Holds `buf`, with a `WSK_BUF` covering `len` bytes from `offset` (below
    /// `IoBuf::MAX_CAPACITY`, so the offset fits the `WSK_BUF`'s 32 bits).
    pub(crate) fn with_buf_range(buf: IoBuf, offset: usize, len: usize) -> Self {
        let mut held = Self::empty();
        held.wsk_buf = WSK_BUF {
            Mdl: buf.mdl(),
            Offset: u32::try_from(offset).unwrap_or(u32::MAX),
            Length: len,
        };
        held.buf = Some(buf);
        held
    }
}

struct Slot {
    irp: *mut IRP,
    state: AtomicU32,
    waker: AtomicWaker,
    status: AtomicI32,
    information: AtomicUsize,
    held: UnsafeCell<Held>,
    owner: *const SocketInner,
    /// The IRP in flight is a client-level call (`WskSocket`, `WskGetAddressInfo`), counted in
    /// the client's `ClientInner::client_call_started` until its completion is finished.
    client_call: core::sync::atomic::AtomicBool,
}

/// A socket object: the WSK socket, its flags, and its operation slots. Reference counted:
/// one reference for the user's handle, one per in-flight IRP.
pub(crate) struct SocketInner {
    refs: AtomicUsize,
    wsk: AtomicPtr<WSK_SOCKET>,
    flags: AtomicU32,
    /// WSK calls on this socket in progress (entered and not yet returned), plus
    /// [`CLOSE_REQUESTED`]. `WskCloseSocket` must not be called while another call on the
    /// socket is in progress, and no call may follow it (WDK: "Closing a Socket",
    /// <https://learn.microsoft.com/windows-hardware/drivers/network/closing-a-socket>, and
    /// `WskCloseSocket`): the last call out issues a requested close.
    calls: AtomicU32,
    kind: Kind,
    client: NonNull<ClientInner>,
    /// Link in the client's list of open sockets (under the client's lock).
    pub(crate) link: UnsafeCell<sys::LIST_ENTRY>,
    slots: [Slot; SLOTS],
}

// SAFETY: shared state is atomics; `held` and `link` are guarded by the slot state machine and
// the client's spin lock respectively; raw pointers refer to pool objects valid for the
// object's lifetime.
unsafe impl Send for SocketInner {}
// SAFETY: as above.
unsafe impl Sync for SocketInner {}

/// The result of an operation.
pub(crate) struct Completed {
    /// Final status.
    pub status: NTSTATUS,
    /// `IoStatus.Information`.
    pub information: usize,
    /// What the operation held, back.
    pub held: Held,
}

/// An operation refused before reaching WSK, with what it would have held.
pub(crate) struct Refused {
    /// Why.
    pub error: Error,
    /// The resources, untouched.
    pub held: Held,
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        refused.error
    }
}

/// What an operation's issue function gets: the IRP to pass, the held resources (stable
/// addresses WSK may keep until completion) and the socket.
pub(crate) struct Call {
    /// The IRP, prepared with our completion routine.
    pub irp: *mut IRP,
    /// The held resources, at their in-slot address.
    pub held: *mut Held,
    /// The WSK socket (null for client-level operations before creation).
    pub socket: *mut WSK_SOCKET,
    /// The client handle for provider-level calls.
    pub client: NonNull<ClientInner>,
}

impl SocketInner {
    /// Allocates a socket object with its IRPs. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn new(client: NonNull<ClientInner>, kind: Kind) -> Result<NonNull<Self>> {
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
        let mem = unsafe { sys::allocate_nonpaged(size_of::<Self>(), SOCKET_TAG) }.cast::<Self>();
        let Some(mem) = NonNull::new(mem) else {
            return Err(Error::new(ErrorKind::NoResources, "socket"));
        };
        let mut irps = [ptr::null_mut(); SLOTS];
        for i in 0..SLOTS {
            // SAFETY: IoAllocateIrp at <= DISPATCH_LEVEL; one stack location suffices for an
            // IRP we hand straight to WSK.
            irps[i] = unsafe { sys::IoAllocateIrp(1, 0) };
            if irps[i].is_null() {
                for irp in &irps[..i] {
                    // SAFETY: allocated just above, never issued.
                    unsafe { sys::IoFreeIrp(*irp) };
                }
                // SAFETY: allocated above with this tag, never initialised or shared.
                unsafe { sys::ExFreePoolWithTag(mem.as_ptr().cast(), SOCKET_TAG) };
                return Err(Error::new(ErrorKind::NoResources, "socket"));
            }
        }
        let owner = mem.as_ptr().cast_const();
        let slot = |irp| Slot {
            irp,
            state: AtomicU32::new(0),
            waker: AtomicWaker::new(),
            status: AtomicI32::new(0),
            information: AtomicUsize::new(0),
            held: UnsafeCell::new(Held::empty()),
            owner,
            client_call: core::sync::atomic::AtomicBool::new(false),
        };
        let value = Self {
            refs: AtomicUsize::new(1),
            wsk: AtomicPtr::new(ptr::null_mut()),
            flags: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            kind,
            client,
            link: UnsafeCell::new(sys::LIST_ENTRY {
                Flink: ptr::null_mut(),
                Blink: ptr::null_mut(),
            }),
            slots: irps.map(slot),
        };
        // SAFETY: `mem` is a fresh allocation of the right size; pool memory is 16-aligned.
        unsafe { mem.as_ptr().write(value) };
        // SAFETY: the caller holds a use of the client (a handle or a live socket).
        unsafe { client.as_ref() }.add_user();
        Ok(mem)
    }

    /// The kind of provider socket.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The client this socket belongs to.
    pub(crate) fn client(&self) -> NonNull<ClientInner> {
        self.client
    }

    /// The WSK socket, or null before creation / after close.
    pub(crate) fn wsk(&self) -> *mut WSK_SOCKET {
        self.wsk.load(Ordering::Acquire)
    }

    /// Current flags.
    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    /// Sets flags, returning the previous ones.
    pub(crate) fn set_flags(&self, bits: u32) -> u32 {
        self.flags.fetch_or(bits, Ordering::AcqRel)
    }

    /// True once close has started (no new operations).
    pub(crate) fn is_closing(&self) -> bool {
        self.flags() & (CLOSE_STARTED | CLOSED) != 0
    }

    /// True when close has completed.
    pub(crate) fn is_closed(&self) -> bool {
        self.flags() & CLOSED != 0
    }

    /// Takes a reference.
    pub(crate) fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference; frees the object with the last one. IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Safety
    /// `this` must be a live object and the caller must own one reference, which it gives up:
    /// it must not touch the object afterwards.
    pub(crate) unsafe fn release(this: NonNull<Self>) {
        // SAFETY: the caller owns a reference, so the object is live.
        let inner = unsafe { this.as_ref() };
        if inner.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last reference: no IRP is in flight (each holds a reference) and no handle
        // exists, so nobody else can reach the object.
        for slot in &inner.slots {
            // SAFETY: every IRP has completed (its reference is gone) and was allocated by
            // IoAllocateIrp in `new`.
            unsafe { sys::IoFreeIrp(slot.irp) };
        }
        let client = inner.client;
        // SAFETY: exclusive access (last reference); drops any held buffer, then frees the
        // pool block allocated in `new` with the same tag.
        unsafe {
            ptr::drop_in_place(this.as_ptr());
            sys::ExFreePoolWithTag(this.as_ptr().cast(), SOCKET_TAG);
        }
        // SAFETY: the use this socket object took in `new`.
        unsafe { ClientInner::release(client) };
    }

    /// Gives this object the WSK socket a creation or accept returned, and tracks it in the
    /// client so that deregistration can close it. If the object's handle already started
    /// closing it (dropped while the creating operation was in flight, before there was a WSK
    /// socket to close), nobody else will: the socket is closed here. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn adopt(this: NonNull<Self>, socket: *mut WSK_SOCKET) {
        // SAFETY: callers hold a reference.
        let inner = unsafe { this.as_ref() };
        inner.wsk.store(socket, Ordering::Release);
        // Tracked before OPEN is visible: a close can only start once OPEN is seen, and its
        // completion untracks.
        // SAFETY: the client outlives every open socket (deregistration waits for them).
        unsafe { inner.client.as_ref() }.track(this);
        let prev = inner.set_flags(OPEN);
        if prev & CLOSE_STARTED != 0 {
            // `start_close` ran without OPEN and issued nothing. The close IRP's reference keeps
            // the object alive, and tracked, until the provider has closed the socket.
            inner.request_close();
        } else {
            // SAFETY: the client outlives every socket object (each holds a use of it).
            let client = unsafe { inner.client.as_ref() };
            if !client.accepting() {
                // Deregistration started (its sweep may have missed this socket): close it.
                Self::start_close(this);
            }
        }
    }

    /// Enters a WSK call on this socket; false once a close is requested (no call may follow
    /// `WskCloseSocket`). Every `true` is paired with one [`SocketInner::leave_call`] after the
    /// WSK function returned.
    fn enter_call(&self) -> bool {
        let mut current = self.calls.load(Ordering::Acquire);
        loop {
            if current & CLOSE_REQUESTED != 0 {
                return false;
            }
            match self.calls.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Leaves a WSK call; the last one out after a close was requested issues the close.
    /// IRQL <= `DISPATCH_LEVEL`.
    fn leave_call(&self) {
        if self.calls.fetch_sub(1, Ordering::AcqRel) == CLOSE_REQUESTED | 1 {
            issue_orphan(self, CLOSE, Held::empty(), issue_close, self.wsk());
        }
    }

    /// Requests the close: issued now if no call is in progress, else by the last call out.
    /// Called once per socket (after `CLOSE_STARTED` and `OPEN` are both set). IRQL <=
    /// `DISPATCH_LEVEL`.
    fn request_close(&self) {
        let prev = self.calls.fetch_or(CLOSE_REQUESTED, Ordering::AcqRel);
        if prev == 0 {
            issue_orphan(self, CLOSE, Held::empty(), issue_close, self.wsk());
        }
    }

    /// Starts closing the socket if nobody has: `WskCloseSocket` on the dedicated close slot,
    /// which cancels every pending IRP. Never allocates and never fails; completion marks the
    /// socket closed and wakes [`SocketInner::poll_closed`]. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn start_close(this: NonNull<Self>) {
        // SAFETY: callers hold a reference.
        let inner = unsafe { this.as_ref() };
        let prev = inner.set_flags(CLOSE_STARTED);
        if prev & CLOSE_STARTED != 0 {
            return;
        }
        if prev & OPEN == 0 {
            // Never had a WSK socket: nothing to close.
            inner.set_flags(CLOSED);
            inner.slots[CLOSE].waker.wake();
            return;
        }
        inner.request_close();
    }

    /// Ready when the socket is closed.
    pub(crate) fn poll_closed(&self, cx: &Context<'_>) -> Poll<()> {
        self.slots[CLOSE].waker.register(cx.waker());
        if self.is_closed() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Requests cancellation of whatever is in flight on `slot` (used by timeouts that want
    /// the operation's resources back). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn cancel_slot(&self, slot: usize) {
        let slot = &self.slots[slot];
        // Holding CANCELLING keeps the slot (and its IRP) from being recycled during the call.
        let prev = slot.state.fetch_or(CANCELLING, Ordering::AcqRel);
        if prev & CANCELLING != 0 {
            return;
        }
        if prev & PENDING != 0 && prev & DONE == 0 {
            // SAFETY: the IRP is ours and cannot be recycled while CANCELLING is set.
            unsafe { sys::IoCancelIrp(slot.irp) };
        }
        let prev = slot.state.fetch_and(!CANCELLING, Ordering::AcqRel);
        if prev & (ABANDONED | DONE) == ABANDONED | DONE {
            // The completion routine ran while we held CANCELLING and left finishing to us.
            finish(slot);
        }
    }
}

/// `WskCloseSocket`.
///
/// # Safety
/// `call.socket` is an open WSK socket and `call.irp` is prepared.
unsafe fn issue_close(call: &mut Call) -> NTSTATUS {
    // SAFETY: every provider socket's dispatch table starts with the basic dispatch.
    unsafe {
        let basic = (*call.socket)
            .Dispatch
            .cast::<WSK_PROVIDER_BASIC_DISPATCH>();
        match (*basic).WskCloseSocket {
            Some(close) => close(call.socket, call.irp),
            None => sys::STATUS_NOT_IMPLEMENTED,
        }
    }
}

/// Issues an operation nobody waits for (close, orphan cleanup). The completion routine
/// finishes it. IRQL <= `DISPATCH_LEVEL`.
fn issue_orphan(
    inner: &SocketInner,
    index: usize,
    held: Held,
    issue: IssueFn,
    socket: *mut WSK_SOCKET,
) {
    let slot = &inner.slots[index];
    // CANCELLING keeps the finishing role here while the call is in progress: a completion
    // that runs inline (before WSK returns) records DONE and leaves finishing to us, so the
    // operation is finished exactly once whether it completed inline, later, or never.
    if slot
        .state
        .compare_exchange(
            0,
            BUSY | ABANDONED | CANCELLING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // Only the close slot is used this way and close starts once.
        sys::kprint!("wsk-net: close slot busy; socket {:p} not closed\n", socket);
        return;
    }
    // SAFETY: BUSY without PENDING: we own the held cell.
    unsafe { *slot.held.get() = held };
    let status = start(inner, slot, issue, socket);
    let prev = slot.state.fetch_and(!CANCELLING, Ordering::AcqRel);
    if prev & DONE != 0 {
        // Completed inline: the completion routine released its reference and left the rest.
        finish(slot);
    } else if status != STATUS_PENDING {
        // Failed synchronously without completing the IRP (Wine's stubs): finish it as if it
        // had completed, and drop the in-flight reference no completion will release.
        slot.status.store(status, Ordering::Relaxed);
        slot.information.store(0, Ordering::Relaxed);
        slot.state.fetch_or(DONE, Ordering::AcqRel);
        finish(slot);
        // SAFETY: the in-flight reference taken by `start`; the completion routine never ran.
        unsafe { SocketInner::release(NonNull::from(inner)) };
    }
}

/// Prepares the slot's IRP and calls `issue`. Takes the in-flight reference. Returns the
/// status of `IoSetCompletionRoutineEx` without calling WSK when it fails (out of memory).
fn start(inner: &SocketInner, slot: &Slot, issue: IssueFn, socket: *mut WSK_SOCKET) -> NTSTATUS {
    inner.add_ref();
    // SAFETY: the slot is BUSY and not PENDING: its IRP is ours, completed (or fresh), and
    // allocated with one stack location, which receives the completion routine.
    unsafe { sys::IoReuseIrp(slot.irp, STATUS_UNSUCCESSFUL) };
    let status = set_completion_routine(inner, slot);
    if !sys::NT_SUCCESS(status) {
        return status;
    }
    if socket.is_null() {
        slot.client_call.store(true, Ordering::Release);
        // SAFETY: the client outlives its socket objects.
        unsafe { inner.client.as_ref() }.client_call_started();
    }
    slot.state.fetch_or(PENDING, Ordering::AcqRel);
    let mut call = Call {
        irp: slot.irp,
        held: slot.held.get(),
        socket,
        client: inner.client,
    };
    // SAFETY: issue functions require exactly what `call` provides: a prepared IRP, the held
    // resources at their in-slot address, and the socket (null only before creation).
    unsafe { issue(&mut call) }
}

/// Registers [`on_complete`] on the slot's reused IRP: with `IoSetCompletionRoutineEx`
/// against the client's device object, so that the I/O manager keeps the driver loaded until
/// the routine has returned; with `IoSetCompletionRoutine` where that is unavailable (Wine),
/// and for a close whose Ex context cannot be allocated (a close must go out: unprotected
/// against unload is better than a socket `WskDeregister` waits for forever). Any other
/// operation fails with the status of `IoSetCompletionRoutineEx`. IRQL <= `DISPATCH_LEVEL`.
fn set_completion_routine(inner: &SocketInner, slot: &Slot) -> NTSTATUS {
    let context: PVOID = ptr::from_ref(slot).cast_mut().cast();
    // SAFETY: the client outlives its sockets.
    if let Some(device) = unsafe { inner.client.as_ref() }.completion_device() {
        // SAFETY: our reused IRP with a next location; `device` is the client's live device
        // object (deleted only after every socket is closed).
        let status = unsafe {
            sys::IoSetCompletionRoutineEx(device, slot.irp, Some(on_complete), context, 1, 1, 1)
        };
        if sys::NT_SUCCESS(status) || !ptr::eq(slot, &raw const inner.slots[CLOSE]) {
            return status;
        }
        sys::kprint!(
            "wsk-net: IoSetCompletionRoutineEx failed ({:#x}) for a close; registering the routine without unload protection\n",
            status.cast_unsigned()
        );
    }
    // SAFETY: our reused IRP with a next location.
    unsafe { sys::IoSetCompletionRoutine(slot.irp, Some(on_complete), context, true, true, true) };
    sys::STATUS_SUCCESS
}

/// The one completion routine. Runs at IRQL <= `DISPATCH_LEVEL`, on any processor, possibly
/// before the WSK call returns.
unsafe extern "system" fn on_complete(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: `context` is the slot we registered, inside a socket object kept alive by this
    // IRP's in-flight reference until the end of this function.
    let slot = unsafe { &*context.cast::<Slot>() };
    // SAFETY: the I/O manager passes the live IRP it is completing.
    let io = unsafe { (*irp).IoStatus };
    slot.status.store(io.Status, Ordering::Relaxed);
    slot.information.store(io.Information, Ordering::Relaxed);
    let prev = slot.state.fetch_or(DONE, Ordering::AcqRel);
    if prev & ABANDONED == 0 {
        slot.waker.wake();
    } else if prev & CANCELLING == 0 {
        finish(slot);
    }
    // SAFETY: the slot's owner is live until the release below.
    let owner = unsafe { &*slot.owner };
    if slot.client_call.swap(false, Ordering::AcqRel) {
        // After any finishing above, so that deregistration, which waits for this count, sees
        // a result list an abandoned lookup parked.
        // SAFETY: the client outlives its socket objects.
        unsafe { owner.client.as_ref() }.client_call_finished();
    }
    // SAFETY: the in-flight reference taken in `start`; after this the IRP and slot may be
    // freed, which is fine: we return MORE_PROCESSING_REQUIRED, so the I/O manager stops
    // touching the IRP.
    unsafe { SocketInner::release(NonNull::from(owner)) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Finishes an abandoned operation: releases what it held, handles a socket it created, marks
/// a close, and frees the slot. Called exactly once per abandoned operation, by whoever saw
/// both `ABANDONED` and `DONE` last. IRQL <= `DISPATCH_LEVEL`.
fn finish(slot: &Slot) {
    // SAFETY: DONE is set, so WSK no longer touches the held cell, and the abandoned-finish
    // protocol makes us its only user.
    let held = unsafe { core::mem::replace(&mut *slot.held.get(), Held::empty()) };
    let status = slot.status.load(Ordering::Relaxed);
    let information = slot.information.load(Ordering::Relaxed);
    // SAFETY: slots live inside their owner, which is live while the slot is in use.
    let owner = unsafe { &*slot.owner };
    // The child's reference is released when `held` drops below.
    if let Some(child) = held.adopt
        && sys::NT_SUCCESS(status)
        && information != 0
    {
        // Nobody will use this socket: a handle still alive closes it when it drops (now),
        // one already dropped left the close to `adopt`.
        SocketInner::adopt(child, information as *mut WSK_SOCKET);
    }
    if !held.addrinfo.is_null() {
        // Parked, not freed, above PASSIVE_LEVEL (WskFreeAddressInfo is PASSIVE_LEVEL only).
        // SAFETY: the client is live while any of its sockets is; the list came from WSK.
        unsafe { owner.client.as_ref() }.release_address_info(held.addrinfo);
    }
    if ptr::eq(slot, &raw const owner.slots[CLOSE]) {
        if !sys::NT_SUCCESS(status) {
            sys::kprint!(
                "wsk-net: WskCloseSocket failed with {:#x}\n",
                status.cast_unsigned()
            );
        }
        owner.wsk.store(ptr::null_mut(), Ordering::Release);
        owner.set_flags(CLOSED);
        // SAFETY: the socket was tracked when adopted; close completion untracks it once.
        unsafe { owner.client.as_ref() }.untrack(NonNull::from(owner));
    }
    drop(held);
    slot.state.store(0, Ordering::Release);
    slot.waker.wake();
}

/// A future for one operation on one slot. Created by the socket types; the WSK call happens
/// on first poll. Output: the completion, or an error when the slot or socket cannot take it.
/// How an operation calls WSK: reads its parameters from `call.held`.
pub(crate) type IssueFn = unsafe fn(&mut Call) -> NTSTATUS;

pub(crate) struct Op<'a> {
    inner: &'a SocketInner,
    index: usize,
    name: &'static str,
    issue: Option<(IssueFn, Held)>,
    in_flight: bool,
    allow_closing: bool,
    /// Cancellation was requested: an operation not yet (or not again) at WSK never gets there.
    cancel_requested: core::sync::atomic::AtomicBool,
}

impl<'a> Op<'a> {
    /// An operation on `inner`'s slot `index`, which will run `issue` with `held` parked.
    pub(crate) fn new(
        inner: &'a SocketInner,
        index: usize,
        name: &'static str,
        held: Held,
        issue: IssueFn,
    ) -> Self {
        Self {
            inner,
            index,
            name,
            issue: Some((issue, held)),
            in_flight: false,
            allow_closing: false,
            cancel_requested: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The operation may run on a socket that has no WSK socket yet (creation).
    pub(crate) fn before_open(mut self) -> Self {
        self.allow_closing = true;
        self
    }

    /// Requests cancellation (`IoCancelIrp`) if in flight; the future still completes, with
    /// whatever status the provider gives, and returns the held resources.
    pub(crate) fn cancel(&self) {
        // Not issued yet (never polled, or waiting for its slot), or issued again later (a
        // continuation): it completes with `Cancelled` at that poll instead of reaching WSK.
        self.cancel_requested.store(true, Ordering::Release);
        if self.in_flight {
            self.inner.cancel_slot(self.index);
        }
    }

    /// Issues the operation again at its next poll, with `held` (a continuation, such as the
    /// rest of a `WAITALL` receive the provider completed short). Only after it completed.
    pub(crate) fn reissue(&mut self, issue: IssueFn, held: Held) {
        debug_assert!(!self.in_flight, "reissue of an operation in flight");
        self.issue = Some((issue, held));
    }

    fn slot(&self) -> &Slot {
        &self.inner.slots[self.index]
    }
}

impl Future for Op<'_> {
    type Output = Result<Completed, Refused>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: Op is never moved out of its pin: no field is pinned structurally (the
        // slot, not the future, holds everything WSK sees).
        let this = unsafe { self.get_unchecked_mut() };
        let slot = &this.inner.slots[this.index];
        if !this.in_flight {
            let Some((issue, held)) = this.issue.take() else {
                let error = Error::new(ErrorKind::InvalidState, this.name);
                return Poll::Ready(Err(Refused {
                    error,
                    held: Held::empty(),
                }));
            };
            if this.cancel_requested.load(Ordering::Acquire) {
                let error = Error::new(ErrorKind::Cancelled, this.name);
                return Poll::Ready(Err(Refused { error, held }));
            }
            if this.inner.is_closing() || (!this.allow_closing && this.inner.wsk().is_null()) {
                let error = Error::new(ErrorKind::InvalidState, this.name);
                return Poll::Ready(Err(Refused { error, held }));
            }
            loop {
                match slot
                    .state
                    .compare_exchange(0, BUSY, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => break,
                    Err(state) if state & ABANDONED != 0 => {
                        // A dropped operation is still finishing; its finisher wakes the
                        // slot's waker. Register, then look again so that wake is not lost.
                        slot.waker.register(cx.waker());
                        if slot.state.load(Ordering::Acquire) == 0 {
                            continue;
                        }
                        this.issue = Some((issue, held));
                        return Poll::Pending;
                    }
                    Err(_) => {
                        // Another live operation owns the slot: a second concurrent send or
                        // receive would reorder data. Do not touch its waker.
                        let error = Error::new(ErrorKind::InvalidState, this.name);
                        return Poll::Ready(Err(Refused { error, held }));
                    }
                }
            }
            // A call on an open socket is counted in progress until WSK returns, so that a
            // close (from a drop, or deregistration on another CPU) waits for it; once a close
            // is requested, no call may start.
            let socket = this.inner.wsk();
            let counted = !socket.is_null();
            if counted && !this.inner.enter_call() {
                // Nobody waits on a slot that is BUSY without ABANDONED: give it back.
                slot.state.store(0, Ordering::Release);
                let error = Error::new(ErrorKind::InvalidState, this.name);
                return Poll::Ready(Err(Refused { error, held }));
            }
            slot.waker.register(cx.waker());
            // SAFETY: BUSY without PENDING: we own the held cell.
            unsafe { *slot.held.get() = held };
            let status = start(this.inner, slot, issue, socket);
            if counted {
                // WSK returned: the call is no longer in progress (its IRP may be). A close
                // requested meanwhile is issued here.
                this.inner.leave_call();
            }
            this.in_flight = true;
            if status != STATUS_PENDING && slot.state.load(Ordering::Acquire) & DONE == 0 {
                // Failed synchronously without completing the IRP (Wine's stubs do this):
                // reclaim everything.
                this.in_flight = false;
                if slot.client_call.swap(false, Ordering::AcqRel) {
                    // SAFETY: the client outlives its socket objects.
                    unsafe { this.inner.client.as_ref() }.client_call_finished();
                }
                // SAFETY: the IRP never reached a completion: nobody else touches the cell.
                let held = unsafe { core::mem::replace(&mut *slot.held.get(), Held::empty()) };
                slot.state.store(0, Ordering::Release);
                // SAFETY: the in-flight reference from `start`; the handle's reference keeps
                // the object alive.
                unsafe { SocketInner::release(NonNull::from(this.inner)) };
                return Poll::Ready(Ok(Completed {
                    status,
                    information: 0,
                    held,
                }));
            }
        }
        slot.waker.register(cx.waker());
        let state = slot.state.load(Ordering::Acquire);
        if state & DONE == 0 {
            return Poll::Pending;
        }
        this.in_flight = false;
        // SAFETY: DONE: WSK is finished with the cell and the future owns the slot.
        let held = unsafe { core::mem::replace(&mut *slot.held.get(), Held::empty()) };
        let completed = Completed {
            status: slot.status.load(Ordering::Relaxed),
            information: slot.information.load(Ordering::Relaxed),
            held,
        };
        // Wait out a concurrent `cancel_slot` before recycling the slot.
        while slot
            .state
            .compare_exchange_weak(state & !CANCELLING, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            core::hint::spin_loop();
        }
        Poll::Ready(Ok(completed))
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if !self.in_flight {
            return;
        }
        let slot = self.slot();
        let prev = slot
            .state
            .fetch_or(ABANDONED | CANCELLING, Ordering::AcqRel);
        if prev & DONE == 0 {
            // SAFETY: the IRP is ours and, with CANCELLING set, cannot be recycled during
            // the call. IoCancelIrp is allowed at <= DISPATCH_LEVEL.
            unsafe { sys::IoCancelIrp(slot.irp) };
        }
        let prev = slot.state.fetch_and(!CANCELLING, Ordering::AcqRel);
        if prev & DONE != 0 {
            finish(slot);
        }
    }
}
