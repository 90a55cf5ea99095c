//! The operation core: the only place in this crate that hands IRPs and memory to WSK.
//!
//! Every socket object ([`SocketInner`]) lives in nonpaged pool and owns five IRP slots
//! (receive, send, control, close, and the closing disconnect), so steady-state I/O allocates
//! nothing. Only the receive and close IRPs are preallocated (the close must never need an
//! allocation). An operation whose slot has no IRP takes the socket's spare one, or
//! allocates one, and a finished operation hands its IRP to the spare if that is empty: so
//! operations one after the other on different slots (an accept, then receive, send,
//! receive...) share one IRP, and an idle accepted connection holds two, its posted
//! receive's and the close's, as a hand-written driver would. Operations in flight at once
//! each have their own (at most one per slot, plus the spare). An operation that cannot get
//! an IRP fails with `NoResources`; a close that cannot get the closing disconnect's closes
//! at once, which ends the connection abortively. An operation ([`Op`]) claims a
//! slot, parks what WSK will hold ([`Held`]: buffer, `WSK_BUF`, addresses) inside the slot,
//! reuses the slot's IRP with our one completion routine, and calls WSK.
//!
//! The completion routine records status and information, then either wakes the waiting
//! future or, when the future was dropped, finishes the operation itself: frees the held
//! buffer, closes a socket nobody will receive, and returns the slot. It always returns
//! `STATUS_MORE_PROCESSING_REQUIRED`. Dropping a future in flight calls `IoCancelIrp`; nothing
//! WSK holds is freed before the completion routine has run. Each in-flight IRP holds a
//! reference on its socket object, released as the completion routine's last act, so the
//! object (and the IRP) outlive every completion.
//!
//! Modules: `state` (the state words and their transitions, no kernel calls: what the loom
//! models in `loom_tests` drive), `request` (the WSK calls an operation can make, and the one
//! dispatch to them), `held` (what an operation hands to WSK), `slot` (a slot's IRP, the
//! completion routine and the finishing of orphans), `op` (the operation future),
//! `stream_io` (the lean path of a connected stream's send and receive); this file
//! holds the socket object itself.

use core::ptr::{self, NonNull};
use core::task::{Context, Poll};

use wsk_executor::raw::sync::{AtomicPtr, AtomicU32, Ordering};
use wsk_sys::{self as sys, WSK_SOCKET};

use crate::client::ClientInner;
use crate::error::{Error, ErrorKind, Result};

mod held;
#[cfg(all(test, loom))]
mod loom_tests;
mod op;
mod request;
mod slot;
mod state;
mod stream_io;

pub(crate) use held::{Call, Completed, Held, Refused, Transfer, TransferDone};
pub(crate) use op::Op;
pub(crate) use request::Request;
use slot::{Slot, issue_orphan};
use state::{
    AfterArm, AfterCancel, AfterLinger, AfterOpen, BeginCancel, CallGate, CloseNow, LingerState,
    RefCount, Released, SocketFlags, StartClose,
};
pub(crate) use stream_io::{Chunk, StreamIo};

/// Pool tag of socket objects (`WskS`).
const SOCKET_TAG: u32 = sys::pool_tag(*b"WskS");

/// The receive slot (slot indices: one IRP per class of operation).
pub(crate) const RECV: usize = 0;
/// The send slot.
pub(crate) const SEND: usize = 1;
/// The control slot: bind, connect, accept, disconnect, options, addresses, creation.
pub(crate) const CTL: usize = 2;
/// The close slot, used once, so that closing never needs an allocation.
pub(crate) const CLOSE: usize = 3;
/// The closing disconnect's slot, used at most once: the `WskDisconnect` (graceful, or
/// abortive for [`CloseMode::Abortive`]) a connection's close makes before `WskCloseSocket`.
/// Apart from [`CTL`], so that an abandoned control operation still finishing never holds
/// up the close.
pub(crate) const LINGER: usize = 4;
const SLOTS: usize = 5;
/// The slots whose IRP `SocketInner::new` allocates: the receive slot (every connection
/// posts receives, and an accept runs on its new connection's receive slot) and the close
/// slot (closing never allocates). The others take the spare or allocate when they need
/// one, so an idle connection does not hold IRPs it is not using.
const PREALLOCATED: [bool; SLOTS] = [true, false, false, true, false];

/// How a close ends a connection ([`SocketInner::set_close_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseMode {
    /// `WskCloseSocket` alone: listening and datagram sockets, connections never
    /// established, and connections already disconnected.
    Plain,
    /// A graceful `WskDisconnect` bounded by the close limit, then `WskCloseSocket`.
    Graceful,
    /// An abortive `WskDisconnect` (`WSK_FLAG_ABORTIVE`), then `WskCloseSocket`.
    Abortive,
}

/// The close limit of a new connection: how long a graceful close waits for its disconnect.
pub(crate) const DEFAULT_CLOSE_LIMIT_MS: u32 = 5_000;

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

/// A socket object: the WSK socket, its flags, and its operation slots. Reference counted:
/// one reference for the user's handle, one per in-flight IRP.
pub(crate) struct SocketInner {
    refs: RefCount,
    wsk: AtomicPtr<WSK_SOCKET>,
    flags: SocketFlags,
    /// WSK calls on this socket in progress, and the close request.
    calls: CallGate,
    kind: Kind,
    client: NonNull<ClientInner>,
    /// Link in the client's list of open sockets (under the client's lock).
    pub(crate) link: core::cell::UnsafeCell<sys::LIST_ENTRY>,
    slots: [Slot; SLOTS],
    /// [`CloseMode`] as its index, read once when the close is issued.
    close_mode: AtomicU32,
    /// The bound on a graceful closing disconnect, in milliseconds.
    close_limit_ms: AtomicU32,
    /// Who ends a graceful closing disconnect: its finishing or the bound's DPC.
    linger: LingerState,
    /// The bound's timer and its DPC (initialised in `new`, in place).
    linger_timer: core::cell::UnsafeCell<core::mem::MaybeUninit<sys::KTIMER>>,
    linger_dpc: core::cell::UnsafeCell<core::mem::MaybeUninit<sys::KDPC>>,
    /// An IRP no slot holds, for the next operation whose slot has none (see the module
    /// docs); null when none is spare. Freed with the object.
    spare_irp: AtomicPtr<sys::IRP>,
    /// Event-driven receive state (`crate::tcp::events`): null until the stream enables
    /// receive events; freed with the object.
    pub(crate) events: AtomicPtr<crate::tcp::EventCell>,
    /// Event-driven datagram receive state (`crate::udp_events`): null until the socket
    /// enables receive events; freed with the object.
    pub(crate) datagram_events: AtomicPtr<crate::udp_events::DatagramEventCell>,
    /// Accept-indication state of a listener (`crate::tcp::accept_events`): null until the
    /// listener enables accept events; freed with the object.
    pub(crate) accept_events: AtomicPtr<crate::tcp::AcceptCell>,
}

// SAFETY: shared state is atomics; `held` and `link` are guarded by the slot state machine and
// the client's spin lock respectively; raw pointers refer to pool objects valid for the
// object's lifetime.
unsafe impl Send for SocketInner {}
// SAFETY: as above.
unsafe impl Sync for SocketInner {}

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
            if !PREALLOCATED[i] {
                // Allocated by the slot's first operation (`Op`), or by the close that needs
                // it (`issue_close`) for the closing disconnect's.
                continue;
            }
            // SAFETY: IoAllocateIrp at <= DISPATCH_LEVEL; one stack location suffices for an
            // IRP we hand straight to WSK.
            irps[i] = unsafe { sys::IoAllocateIrp(1, 0) };
            if irps[i].is_null() {
                for irp in irps[..i].iter().filter(|irp| !irp.is_null()) {
                    // SAFETY: allocated just above, never issued.
                    unsafe { sys::IoFreeIrp(*irp) };
                }
                // SAFETY: allocated above with this tag, never initialised or shared.
                unsafe { sys::ExFreePoolWithTag(mem.as_ptr().cast(), SOCKET_TAG) };
                return Err(Error::new(ErrorKind::NoResources, "socket"));
            }
        }
        let owner = mem.as_ptr().cast_const();
        let value = Self {
            refs: RefCount::one(),
            wsk: AtomicPtr::new(ptr::null_mut()),
            flags: SocketFlags::new(),
            calls: CallGate::new(),
            kind,
            client,
            link: core::cell::UnsafeCell::new(sys::LIST_ENTRY {
                Flink: ptr::null_mut(),
                Blink: ptr::null_mut(),
            }),
            slots: irps.map(|irp| Slot::new(irp, owner)),
            close_mode: AtomicU32::new(CloseMode::Plain as u32),
            close_limit_ms: AtomicU32::new(DEFAULT_CLOSE_LIMIT_MS),
            linger: LingerState::new(),
            linger_timer: core::cell::UnsafeCell::new(core::mem::MaybeUninit::uninit()),
            linger_dpc: core::cell::UnsafeCell::new(core::mem::MaybeUninit::uninit()),
            spare_irp: AtomicPtr::new(ptr::null_mut()),
            events: AtomicPtr::new(ptr::null_mut()),
            datagram_events: AtomicPtr::new(ptr::null_mut()),
            accept_events: AtomicPtr::new(ptr::null_mut()),
        };
        // SAFETY: `mem` is a fresh allocation of the right size; pool memory is 16-aligned.
        unsafe { mem.as_ptr().write(value) };
        // SAFETY: written just above and not shared yet.
        let fresh = unsafe { mem.as_ref() };
        // SAFETY: the object's own timer, in nonpaged pool, not in use yet; <= DISPATCH_LEVEL.
        unsafe {
            sys::KeInitializeTimerEx(fresh.linger_timer.get().cast(), sys::NotificationTimer);
        };
        let context: sys::PVOID = mem.as_ptr().cast();
        // SAFETY: as above, for the DPC; its context is this object, which `linger_expired`
        // expects (kept alive by the timer's reference while the timer is set).
        unsafe {
            sys::KeInitializeDpc(fresh.linger_dpc.get().cast(), Some(linger_expired), context);
        };
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

    /// The lifecycle and shutdown flags.
    pub(crate) fn flags(&self) -> &SocketFlags {
        &self.flags
    }

    /// True once close has started (no new operations).
    pub(crate) fn is_closing(&self) -> bool {
        self.flags.is_closing()
    }

    /// True when close has completed.
    pub(crate) fn is_closed(&self) -> bool {
        self.flags.is_closed()
    }

    /// Takes a reference.
    pub(crate) fn add_ref(&self) {
        self.refs.add();
    }

    /// Drops a reference; frees the object with the last one. IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Safety
    /// `this` must be a live object and the caller must own one reference, which it gives up:
    /// it must not touch the object afterwards.
    #[inline]
    pub(crate) unsafe fn release(this: NonNull<Self>) {
        // SAFETY: the caller owns a reference, so the object is live.
        let inner = unsafe { this.as_ref() };
        if inner.refs.release() == Released::Shared {
            return;
        }
        // SAFETY: that was the last reference (see `free`).
        unsafe { Self::free(this) };
    }

    /// Frees the object once its last reference is gone: [`SocketInner::release`]'s rare
    /// path, out of line so that the common one (every completion drops its IRP's reference)
    /// is a decrement and a test.
    ///
    /// # Safety
    /// The caller dropped the last reference to `this`.
    #[cold]
    #[inline(never)]
    unsafe fn free(this: NonNull<Self>) {
        // SAFETY: no reference is left but ours: the object is live and nobody else reaches it.
        let inner = unsafe { this.as_ref() };
        // The last reference: no IRP is in flight (each holds a reference) and no handle
        // exists, so nobody else can reach the object.
        let spare = inner.spare_irp.load(Ordering::Acquire);
        for irp in inner
            .slots
            .iter()
            .map(Slot::irp)
            .chain(core::iter::once(spare))
            .filter(|irp| !irp.is_null())
        {
            // SAFETY: every IRP has completed (its reference is gone) and was allocated by
            // IoAllocateIrp (in `new`, by an operation, or at close for the closing
            // disconnect's); each is held by one slot or the spare, never two.
            unsafe { sys::IoFreeIrp(irp) };
        }
        let client = inner.client;
        // The provider makes no event callback after the close completed, and there is no
        // close left to come: nobody can reach the event state.
        crate::tcp::free_cell(inner.events.load(Ordering::Acquire));
        crate::udp_events::free_cell(inner.datagram_events.load(Ordering::Acquire));
        crate::tcp::free_accept_cell(inner.accept_events.load(Ordering::Acquire));
        // SAFETY: exclusive access (last reference); drops any held buffer.
        unsafe { ptr::drop_in_place(this.as_ptr()) };
        // SAFETY: the pool block allocated in `new` with the same tag, dropped just above.
        unsafe { sys::ExFreePoolWithTag(this.as_ptr().cast(), SOCKET_TAG) };
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
        match inner.flags.mark_open() {
            // `start_close` ran without OPEN and issued nothing. The close IRP's reference
            // keeps the object alive, and tracked, until the provider has closed the socket.
            AfterOpen::RequestClose => inner.request_close(),
            AfterOpen::Open => {
                // SAFETY: the client outlives every socket object (each holds a use of it).
                let client = unsafe { inner.client.as_ref() };
                if !client.accepting() {
                    // Deregistration started (its sweep may have missed this socket): close it.
                    Self::start_close(this);
                }
            }
        }
    }

    /// The close completed: no WSK socket any more, marked closed, untracked. Called once, by
    /// the close's finishing.
    fn closed(&self) {
        self.wsk.store(ptr::null_mut(), Ordering::Release);
        self.flags.mark_closed();
        // SAFETY: the socket was tracked when adopted; close completion untracks it once.
        unsafe { self.client.as_ref() }.untrack(NonNull::from(self));
    }

    /// Enters a WSK call on this socket; false once a close is requested (no call may follow
    /// `WskCloseSocket`). Every `true` is paired with one [`SocketInner::leave_call`] after the
    /// WSK function returned.
    pub(crate) fn enter_call(&self) -> bool {
        self.calls.enter()
    }

    /// Leaves a WSK call; the last one out after a close was requested issues the close.
    /// IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn leave_call(&self) {
        if self.calls.leave() == CloseNow::Issue {
            self.issue_close();
        }
    }

    /// Requests the close: issued now if no call is in progress, else by the last call out.
    /// Called once per socket (after closing started and the socket is open). IRQL <=
    /// `DISPATCH_LEVEL`.
    fn request_close(&self) {
        if self.calls.request_close() == CloseNow::Issue {
            self.issue_close();
        }
    }

    /// Chooses how the close ends a connection: [`CloseMode::Graceful`] for an established
    /// `TcpStream`, [`CloseMode::Abortive`] for `TcpStream::abort`. Takes effect only if set
    /// before the close is issued. IRQL: any.
    pub(crate) fn set_close_mode(&self, mode: CloseMode) {
        self.close_mode.store(mode as u32, Ordering::Release);
    }

    /// Sets the bound on a graceful closing disconnect (saturated to `u32::MAX` ms). IRQL: any.
    pub(crate) fn set_close_limit(&self, limit: core::time::Duration) {
        let ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX);
        self.close_limit_ms.store(ms, Ordering::Release);
    }

    fn close_mode(&self) -> CloseMode {
        match self.close_mode.load(Ordering::Acquire) {
            1 => CloseMode::Graceful,
            2 => CloseMode::Abortive,
            _ => CloseMode::Plain,
        }
    }

    /// Issues what the close starts with, nobody waiting for it (no other call may be in
    /// progress: the call gate let us through). A connection that is still connected in the
    /// direction the mode ends gets its `WskDisconnect` first, on [`LINGER`]; the
    /// disconnect's finishing then issues `WskCloseSocket` ([`SocketInner::issue_final_close`]).
    /// Everything else is closed at once.
    fn issue_close(&self) {
        // Retained receive indications go back to WSK before the close (none may be
        // retained once it is issued).
        crate::tcp::before_close(self);
        crate::udp_events::before_close(self);
        // A listener's queued accepted connections are closed, its spares freed, and its
        // accept callback refuses from now on.
        crate::tcp::before_accept_close(self);
        let flags = self.flags();
        let disconnect = match self.close_mode() {
            CloseMode::Graceful if !flags.is_send_shut() => Some(0),
            CloseMode::Abortive if !flags.is_recv_shut() => Some(sys::WSK_FLAG_ABORTIVE),
            _ => None,
        };
        let Some(disconnect_flags) = disconnect else {
            self.issue_final_close();
            return;
        };
        if !self.slots[LINGER].allocate_irp() {
            // No IRP for the disconnect (out of memory): `WskCloseSocket` at once, which ends
            // a connection still connected abortively. The close itself never allocates.
            sys::kprint!("wsk-net: no IRP for the closing disconnect; closing abortively\n");
            self.issue_final_close();
            return;
        }
        let request = Request::Disconnect {
            flags: disconnect_flags,
            final_data: false,
        };
        issue_orphan(self, LINGER, Held::new(request), self.wsk());
        // Armed only now that WskDisconnect has returned: the DPC's WskCloseSocket must not
        // overlap a call in progress on the socket.
        if disconnect_flags == 0 {
            self.arm_linger_timer();
        }
    }

    /// `WskCloseSocket` on the close slot, as an orphan its completion finishes.
    fn issue_final_close(&self) {
        issue_orphan(self, CLOSE, Held::new(Request::Close), self.wsk());
    }

    /// The closing disconnect finished (completed or failed, or completed as cancelled by
    /// the close its bound issued): closes, unless the bound already did, and stops the
    /// bound's timer if it was armed. Called once, by the disconnect's finishing. IRQL <=
    /// `DISPATCH_LEVEL`.
    fn closing_disconnect_finished(&self) {
        match self.linger.finish() {
            // The bound's DPC issued the close (which completed this disconnect).
            AfterLinger::Nothing => {}
            AfterLinger::CancelTimerAndClose => {
                self.cancel_linger_timer();
                self.issue_final_close();
            }
            // Finished before the timer was published (a synchronous failure, as under Wine,
            // or an abortive disconnect, which has no timer): `arm_linger_timer` cancels a
            // timer it set meanwhile.
            AfterLinger::Close => self.issue_final_close(),
        }
    }

    /// Cancels the bound's timer: if it was still queued, its reference is released here;
    /// otherwise its DPC runs (or ran), finds the disconnect finished, and releases it.
    fn cancel_linger_timer(&self) {
        // SAFETY: the object's initialised timer; <= DISPATCH_LEVEL.
        if unsafe { sys::KeCancelTimer(self.linger_timer.get().cast()) } != 0 {
            // SAFETY: the reference `arm_linger_timer` took for the timer, which will never
            // run; our caller holds another, so the object stays.
            unsafe { Self::release(NonNull::from(self)) };
        }
    }

    /// Sets the bound's timer for a graceful closing disconnect, with a reference that keeps
    /// this object (and the timer) alive until the DPC has run or the timer is cancelled.
    /// Called after `WskDisconnect` returned, so the DPC may close at once. The timer is set
    /// first and published after: a disconnect that finished in between finds
    /// `LINGER_ISSUING` and closes, and the timer is cancelled here; a DPC that fired in
    /// between closes itself. IRQL <= `DISPATCH_LEVEL`.
    fn arm_linger_timer(&self) {
        if !self.linger.is_issuing() {
            // Already finished (and closed): no bound needed.
            return;
        }
        self.add_ref();
        let ms = i64::from(self.close_limit_ms.load(Ordering::Acquire));
        // Relative due time, in 100 ns units (negative: relative).
        let due: sys::LARGE_INTEGER = -(ms * 10_000).max(1);
        // SAFETY: the object's initialised timer and DPC, in nonpaged pool that the timer's
        // reference keeps; <= DISPATCH_LEVEL.
        unsafe {
            sys::KeSetTimerEx(
                self.linger_timer.get().cast(),
                due,
                0,
                self.linger_dpc.get().cast(),
            )
        };
        match self.linger.publish_timer() {
            // The disconnect finished meanwhile and closed: the timer is ours to end.
            AfterArm::CancelTimer => self.cancel_linger_timer(),
            // Armed (the disconnect's finishing or the DPC ends the timer), or the DPC fired
            // meanwhile, closed, and releases the timer's reference.
            AfterArm::Armed | AfterArm::Nothing => {}
        }
    }

    /// Starts closing the socket if nobody has: `WskCloseSocket` on the dedicated close slot,
    /// which cancels every pending IRP. Never allocates and never fails; completion marks the
    /// socket closed and wakes [`SocketInner::poll_closed`]. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn start_close(this: NonNull<Self>) {
        // SAFETY: callers hold a reference.
        let inner = unsafe { this.as_ref() };
        match inner.flags.start_close() {
            StartClose::AlreadyStarted => {}
            // Never had a WSK socket: nothing to close.
            StartClose::ClosedWithoutSocket => inner.slots[CLOSE].waker.wake(),
            StartClose::RequestClose => inner.request_close(),
        }
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

    /// The bound of a graceful closing disconnect expired before the disconnect finished:
    /// close the socket now. `WskCloseSocket` cancels and completes the pending disconnect
    /// ("`PFN_WSK_CLOSE_SOCKET` callback function (wsk.h)": the application may close with
    /// IRPs pending; the close cancels them), whether or not the provider honours
    /// `IoCancelIrp`, and on a connection not disconnected the close resets it. No call is
    /// in progress: the timer is armed after `WskDisconnect` returned, and nothing else may
    /// call once the close was requested. IRQL `DISPATCH_LEVEL` (the timer's DPC).
    fn linger_expired(&self) {
        if self.linger.expire() {
            self.issue_final_close();
        }
    }

    /// A deadline cancels the live operation on `slot`: none of its steps may reach WSK any
    /// more, and the one in flight is cancelled (`IoCancelIrp`). Cleared with
    /// [`SocketInner::clear_slot_cancel`] when the operation ends. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn request_slot_cancel(&self, slot: usize) {
        self.slots[slot].set_cancel_requested(true);
        self.cancel_slot(slot);
    }

    /// The operation a deadline cancelled on `slot` ended: the slot takes new ones again.
    /// IRQL: any.
    pub(crate) fn clear_slot_cancel(&self, slot: usize) {
        self.slots[slot].set_cancel_requested(false);
    }

    /// Closes at once, without a closing disconnect: `WskCloseSocket` completes every pending
    /// IRP (a reset on a connection). For a deadline whose cancel the provider ignores.
    /// IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn close_now(&self) {
        self.set_close_mode(CloseMode::Plain);
        Self::start_close(NonNull::from(self));
    }

    /// Requests cancellation of whatever is in flight on `slot` (used by timeouts that want
    /// the operation's resources back). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn cancel_slot(&self, slot: usize) {
        let slot = &self.slots[slot];
        // While we are the canceller, the slot (and its IRP) cannot be recycled.
        match slot.state.begin_cancel() {
            BeginCancel::AlreadyCancelling => return,
            BeginCancel::CancelIrp => {
                // SAFETY: the IRP is ours and cannot be recycled while we are the canceller.
                unsafe { sys::IoCancelIrp(slot.irp()) };
            }
            BeginCancel::NothingInFlight => {}
        }
        if slot.state.end_cancel() == AfterCancel::Finish {
            // The completion routine ran while we were inside and left finishing to us.
            slot::finish(slot);
        }
    }
}

/// The DPC of a closing disconnect's bound. `context` is the socket object, alive through the
/// reference the timer holds, released here as the last act.
unsafe extern "system" fn linger_expired(
    _dpc: *mut sys::KDPC,
    context: sys::PVOID,
    _argument1: sys::PVOID,
    _argument2: sys::PVOID,
) {
    let Some(this) = NonNull::new(context.cast::<SocketInner>()) else {
        return;
    };
    // SAFETY: the timer's reference keeps the object alive until the release below.
    unsafe { this.as_ref() }.linger_expired();
    // SAFETY: the reference `arm_linger_timer` took for the timer; the disconnect's finishing
    // leaves it to us once our swap (or theirs, after KeCancelTimer failed) ended the timer.
    unsafe { SocketInner::release(this) };
}

#[cfg(all(test, not(loom)))]
mod size_tests {
    extern crate std;

    use super::{Held, SLOTS, Slot, SocketInner};

    /// The most a socket object may take (64-bit targets): every idle connection holds one in
    /// nonpaged pool, so growth must be a decision, not an accident. Raise it only with a
    /// reason (and the figures in `docs/ARCHITECTURE.md`). 1,496 B, then 1,504 B with the
    /// listener's accept-indication state pointer (this check caught the 8 bytes at the merge).
    const SOCKET_OBJECT_BOUND: usize = 1_504;

    /// A size regression check: prints the socket object's layout (`--nocapture`) and fails
    /// if it grew past [`SOCKET_OBJECT_BOUND`].
    #[test]
    fn socket_object_stays_small() {
        let (held, slot, object) = (
            size_of::<Held>(),
            size_of::<Slot>(),
            size_of::<SocketInner>(),
        );
        std::println!(
            "Held {held} B, Slot {slot} B (state {} B), {SLOTS} slots {} B, SocketInner {object} B",
            slot - held,
            SLOTS * slot,
        );
        assert!(
            object <= SOCKET_OBJECT_BOUND,
            "the socket object grew to {object} B (bound {SOCKET_OBJECT_BOUND} B)"
        );
    }
}
