//! [`StreamIo`]: the lean path of a connected stream's send and receive (`TcpStream::send`,
//! `recv`, `recv_exact` and the split halves' equivalents), the common case of every echo,
//! request and reply. It makes the same WSK call on the same slot as the general [`Op`] and
//! keeps the slot's state word ([`SlotState`]), the completion routine's decisions
//! (`slot::on_stream_complete`: `slot::on_complete`'s, without the client-level call mark)
//! and the finishing of abandoned operations (`slot::finish`), so a cancel, a drop in flight,
//! a close or an unload meets exactly the protocol it meets for any other operation. What it
//! leaves out are the steps the general operation needs only for other operations: the
//! target socket of an accept, the creation that runs before the socket is open, the
//! client-level call mark (`WskSocket`, `WskGetAddressInfo`: only `Op`'s issue sets it, and
//! `on_complete` clears it before that operation's result is visible, so a stream transfer,
//! which claims its slot only once it is free, never finds it set), the request dispatch
//! through [`Request`], and the separate closing checks. Its own state is [`Phase`] and the
//! parameters it has not handed over yet.
//!
//! # Who owns what, in each phase
//!
//! - [`Phase::Idle`] with parameters: nothing is at WSK; the future owns the buffer (in
//!   `params`). Dropping it frees the buffer.
//! - [`Phase::Waiting`]: as `Idle`, and the future is the slot's one waiter
//!   ([`Slot::start_waiting`]): a dropped operation on the slot is still finishing and wakes
//!   the slot's waker when it is done. Dropping the future gives up the waiter role.
//! - [`Phase::InFlight`]: the slot is claimed (`BUSY`); the buffer and its `WSK_BUF` are parked
//!   in the slot's cell, and from `PENDING` on only WSK touches them; the IRP holds one
//!   reference on the socket object, released by the completion routine as its last act, so
//!   the object, the slot and the IRP outlive the completion. The future owns nothing WSK
//!   holds: dropping it marks the slot `ABANDONED` and cancels the IRP, and whoever sees
//!   `DONE` last (the completion routine, or the dropper leaving `IoCancelIrp`) finishes the
//!   operation with `slot::finish`, which frees the parked buffer. So a dropped future never
//!   frees what WSK holds: the buffer is freed only after `DONE`, by the slot protocol.
//! - Waiting for the completion (in flight, the owner returned `Pending`): the owner
//!   registered its waker in the slot and then set `WAITING` ([`SlotState::wait`]), which
//!   also reads `DONE` in the same read-modify-write. The completion's `DONE` is set by one
//!   too, so one of them comes second: either the owner sees `DONE` and takes the result at
//!   once, or the completion sees `WAITING` and wakes the waker registered before it. A
//!   completion that sees no `WAITING` (inline, inside the WSK call: most sends) wakes
//!   nothing, and the owner's own look finds `DONE`. Loom model
//!   `loom_tests::loom_owner_waits_or_takes_the_result_never_both_never_neither`.
//! - Completed (`DONE` seen by the owner): the future takes the result and the buffer back out
//!   of the cell, waits out a canceller still inside `IoCancelIrp`, hands the IRP to the
//!   socket's spare and frees the slot; it is `Idle` without parameters and stays pending if
//!   polled again.
//!
//! # Races
//!
//! - **Cancel** ([`StreamIo::cancel`], a deadline's slot cancel): before the call the flags
//!   refuse the issue (`Cancelled`, the buffer back); in flight `SocketInner::cancel_slot`
//!   enters as canceller (`CANCELLING`), so the IRP cannot be recycled under `IoCancelIrp`.
//! - **Close** (a drop of the stream's last handle, `close_now`, deregistration on another
//!   CPU): the general operation checks the closing flags and then enters the socket's call
//!   gate ([`CallGate`]); here the gate alone decides, which is enough: every close of an open
//!   socket requests it through the gate (`CallGate::request_close`) after setting the flags,
//!   and `WskCloseSocket` is issued only by the last call out. An issue that enters the gate
//!   before the request makes its call, and the close follows it (and cancels its IRP); one
//!   after is refused (`InvalidState`) without touching WSK. A stream's socket is open from
//!   its creation (its handle exists only after connect or accept adopted the WSK socket), so
//!   a socket that never had one is refused by the null check. The loom model
//!   `loom_tests::loom_stream_issue_races_a_close` drives this race.
//! - **Unload**: the IRP's completion routine is registered with `IoSetCompletionRoutineEx`
//!   against the client's device object, as for every operation, so the driver stays loaded
//!   until the routine has returned; and the IRP's reference keeps the socket object.
//! - **A dropped earlier operation still finishing** on the slot (`Claim::Finishing`): the
//!   future becomes the slot's one waiter, as [`Op`] does; a second concurrent send or receive
//!   is refused (`InvalidState`), as there.
//!
//! [`Op`]: super::Op
//! [`CallGate`]: super::state::CallGate
//! [`SlotState`]: super::state::SlotState
//! [`SlotState::wait`]: super::state::SlotState::wait
//! [`Request`]: super::request::Request

use core::ptr::NonNull;
use core::task::{Context, Poll};

use wsk_executor::raw::sync::{AtomicU32, Ordering};
use wsk_sys::{
    self as sys, NTSTATUS, STATUS_PENDING, STATUS_UNSUCCESSFUL, WSK_BUF,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_SOCKET,
};

use super::held::{Held, drop_parked_buf};
use super::slot::{Slot, set_stream_completion_routine};
use super::state::Claim;
use super::{RECV, SEND, SocketInner};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind};

/// The parameters of one stream send or receive: `len` bytes of `buf` from `offset`.
pub(crate) struct Chunk {
    /// The data buffer.
    pub buf: IoBuf,
    /// The `WSK_BUF`'s length.
    pub len: usize,
    /// Where in `buf` the `WSK_BUF` starts (below `IoBuf::MAX_CAPACITY`, so it fits the
    /// `WSK_BUF`'s 32 bits).
    pub offset: u32,
    /// The `WSK_FLAG_*` flags of the call.
    pub flags: u32,
}

impl Chunk {
    /// `len` bytes of `buf` from `offset`, with `flags`.
    pub(crate) fn new(buf: IoBuf, offset: usize, len: usize, flags: u32) -> Self {
        Self {
            buf,
            len,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            flags,
        }
    }
}

/// Where a [`StreamIo`] is (see the module docs for who owns what in each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not at WSK: never issued, refused, or completed.
    Idle,
    /// The slot's one waiter, for a dropped operation still finishing on it.
    Waiting,
    /// The IRP is at WSK (or completed and not taken yet).
    InFlight,
}

/// A finished [`StreamIo`]: the completion (`Ok((status, information))`) or why it was
/// refused before reaching WSK, and the buffer back in both cases.
pub(crate) type StreamDone = (Result<(NTSTATUS, usize), Error>, IoBuf);

/// One send (`RECEIVE` false, the send slot) or receive (`RECEIVE` true, the receive slot)
/// on a connected stream: the lean path (module docs). Issued at its first poll; polled in
/// place by the futures that hold it (`Recv`, `SendAll`). Nothing WSK sees lives in it (the
/// slot's cell holds the buffer and the `WSK_BUF`), so it needs no pinning of its own.
pub(crate) struct StreamIo<'a, const RECEIVE: bool> {
    /// The stream's socket object (its handle outlives this borrow).
    inner: &'a SocketInner,
    /// What to issue at the next poll; `None` once handed to the slot.
    params: Option<Chunk>,
    phase: Phase,
    /// 1 once [`StreamIo::cancel`] was called: an operation not yet (or not again) at WSK
    /// never gets there.
    cancel_requested: AtomicU32,
}

impl<'a, const RECEIVE: bool> StreamIo<'a, RECEIVE> {
    /// The slot index of the direction.
    const INDEX: usize = if RECEIVE { RECV } else { SEND };

    /// A send or receive of `chunk` on `inner`, issued at the first poll.
    pub(crate) fn new(inner: &'a SocketInner, chunk: Chunk) -> Self {
        Self {
            inner,
            params: Some(chunk),
            phase: Phase::Idle,
            cancel_requested: AtomicU32::new(0),
        }
    }

    /// A send or receive on `inner` with nothing to issue yet: armed by
    /// [`StreamIo::reissue`] (a `StreamTransfer`'s operation, re-armed for each message).
    pub(crate) fn idle(inner: &'a SocketInner) -> Self {
        Self {
            inner,
            params: None,
            phase: Phase::Idle,
            cancel_requested: AtomicU32::new(0),
        }
    }

    /// Clears a cancel requested for the transfer that just returned, so that it does not
    /// refuse the next one (a `StreamTransfer` re-arms the same operation for each message).
    /// Only once the operation returned its result (an issue it refused included).
    pub(crate) fn forget_cancel(&self) {
        self.cancel_requested.store(0, Ordering::Relaxed);
    }

    /// Whether the operation holds nothing: not armed, not waiting for its slot, not at WSK
    /// (never armed, or its last issue returned its result).
    pub(crate) fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.params.is_none()
    }

    fn slot(&self) -> &'a Slot {
        &self.inner.slots[Self::INDEX]
    }

    /// Requests cancellation: an issue not made yet never reaches WSK (`Cancelled`, the
    /// buffer back); one in flight is cancelled (`IoCancelIrp`) and still completes, with
    /// whatever status the provider gives. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn cancel(&self) {
        self.cancel_requested.store(1, Ordering::Release);
        if self.phase == Phase::InFlight {
            self.inner.cancel_slot(Self::INDEX);
        }
    }

    /// Closes the socket at once (no closing disconnect), which completes the IRP in flight:
    /// a deadline's way out where the provider ignores the cancel. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn close_socket(&self) {
        self.inner.close_now();
    }

    /// Issues `chunk` at the next poll (a `WAITALL` receive's continuation, a `StreamTransfer`'s
    /// next message). Only after the previous issue completed.
    pub(crate) fn reissue(&mut self, chunk: Chunk) {
        debug_assert!(
            self.phase == Phase::Idle,
            "reissue of an operation in flight"
        );
        self.params = Some(chunk);
    }

    /// Takes back the buffer of an operation that was never issued (a future decided before
    /// reaching WSK keeps its buffer here); `None` once issued.
    pub(crate) fn take_unissued(&mut self) -> Option<IoBuf> {
        if self.phase == Phase::InFlight {
            return None;
        }
        self.params.take().map(|chunk| chunk.buf)
    }

    /// Refuses the issue with `kind`: the parameters' buffer back. Pending if there is
    /// nothing to refuse.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, kind: ErrorKind) -> Poll<StreamDone> {
        let Some(chunk) = self.params.take() else {
            return Poll::Pending;
        };
        // The names the general operation's requests give (`Request::name`).
        let name = match (RECEIVE, chunk.flags & sys::WSK_FLAG_WAITALL != 0) {
            (true, true) => "recv_exact",
            (true, false) => "recv",
            (false, _) => "send",
        };
        Poll::Ready((Err(Error::new(kind, name)), chunk.buf))
    }

    /// Refuses the operation before its first issue with `kind` (the future decided it when
    /// it was built): the error, named by the operation, and the buffer back. Pending if
    /// there is nothing to refuse (it was already issued or returned).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse_now(&mut self, kind: ErrorKind) -> Poll<(Error, IoBuf)> {
        if self.phase == Phase::InFlight {
            return Poll::Pending;
        }
        match self.refuse(kind) {
            Poll::Ready((Err(error), buf)) => Poll::Ready((error, buf)),
            // `refuse` returns only errors, or pending.
            Poll::Ready((Ok(_), _)) | Poll::Pending => Poll::Pending,
        }
    }

    /// The slot is not simply free: a waiter is registered, an operation owns it, or a
    /// dropped one is still finishing. `Ok` once this operation claimed it; otherwise the
    /// poll's result (refused, or pending as the slot's waiter). The rare path, as in
    /// [`super::Op`].
    #[cold]
    #[inline(never)]
    fn claim_contended(&mut self, cx: &Context<'_>) -> Result<(), Poll<StreamDone>> {
        let slot = self.slot();
        // A live operation waits for this slot: this one is a second concurrent one.
        if self.phase != Phase::Waiting && slot.has_waiter() {
            return Err(self.refuse(ErrorKind::InvalidState));
        }
        loop {
            match slot.state.claim() {
                Claim::Claimed => break,
                Claim::Finishing => {
                    if self.phase != Phase::Waiting {
                        if !slot.start_waiting() {
                            return Err(self.refuse(ErrorKind::InvalidState));
                        }
                        self.phase = Phase::Waiting;
                    }
                    // Register, then look again, so that the finisher's wake is not lost.
                    slot.waker.register(cx.waker());
                    if slot.state.is_free() {
                        continue;
                    }
                    return Err(Poll::Pending);
                }
                Claim::Taken => {
                    self.stop_waiting();
                    return Err(self.refuse(ErrorKind::InvalidState));
                }
            }
        }
        self.stop_waiting();
        Ok(())
    }

    /// Gives up the slot's waiter role, if this operation held it.
    fn stop_waiting(&mut self) {
        if self.phase == Phase::Waiting {
            self.phase = Phase::Idle;
            self.slot().stop_waiting();
        }
    }

    /// Claims the slot and makes the WSK call. `None` when the IRP is with WSK (or already
    /// completed); otherwise the poll's result.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every stream send and receive: a call costs a frame and a copy of the result"
    )]
    #[inline(always)]
    fn issue(&mut self, cx: &Context<'_>) -> Option<Poll<StreamDone>> {
        let slot = self.slot();
        let inner = self.inner;
        if self.params.is_none() {
            // Polled again after it returned.
            return Some(Poll::Pending);
        }
        if self.cancel_requested.load(Ordering::Acquire) != 0 || slot.is_cancel_requested() {
            self.stop_waiting();
            return Some(self.refuse(ErrorKind::Cancelled));
        }
        if (slot.has_waiter() || slot.state.claim() != Claim::Claimed)
            && let Err(poll) = self.claim_contended(cx)
        {
            return Some(poll);
        }
        if !slot.acquire_irp(inner) {
            // Nobody waits on a slot claimed by a live operation: give it back.
            slot.state.release();
            return Some(self.refuse(ErrorKind::NoResources));
        }
        // The call gate alone refuses a closing socket (module docs, "Close").
        if !inner.enter_call() {
            slot.state.release();
            return Some(self.refuse(ErrorKind::InvalidState));
        }
        let socket = inner.wsk();
        if socket.is_null() {
            inner.leave_call();
            slot.state.release();
            return Some(self.refuse(ErrorKind::InvalidState));
        }
        let Some(chunk) = self.params.take() else {
            // Checked at the top; nothing since took it.
            inner.leave_call();
            slot.state.release();
            return Some(Poll::Pending);
        };
        let flags = chunk.flags;
        let cell = slot.held_cell();
        // SAFETY: the slot is claimed and not pending: its cell is ours, and a free slot's
        // cell holds no buffer, so the write drops nothing WSK could hold.
        unsafe { park(cell, chunk) };
        self.phase = Phase::InFlight;
        let status = start::<RECEIVE>(inner, slot, socket, cell, flags);
        // WSK returned: the call is no longer in progress (its IRP may be). A close requested
        // meanwhile is issued here.
        inner.leave_call();
        if status != STATUS_PENDING && !slot.state.is_done() {
            return Some(Poll::Ready(self.reclaim_unissued(status)));
        }
        None
    }

    /// The WSK call (or the completion routine's registration) failed without completing
    /// the IRP (Wine's stubs do this): everything comes back here, with `status`.
    #[cold]
    #[inline(never)]
    fn reclaim_unissued(&mut self, status: NTSTATUS) -> StreamDone {
        let slot = self.slot();
        self.phase = Phase::Idle;
        // SAFETY: the IRP never reached a completion: nobody else touches the cell.
        let buf = unsafe { take_buf::<RECEIVE>(slot.held_cell(), 0) };
        slot.state.release();
        // SAFETY: the in-flight reference `start` took; the handle's reference keeps the
        // object alive.
        unsafe { SocketInner::release(NonNull::from(self.inner)) };
        (Ok((status, 0)), buf)
    }

    /// Polls the operation in place: issues it at the first poll (or after a reissue), then
    /// returns its completion with the buffer. Always inlined into the futures that hold it.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every stream send and receive: a call costs a frame and a copy of the result"
    )]
    #[inline(always)]
    pub(crate) fn poll_in_place(&mut self, cx: &Context<'_>) -> Poll<StreamDone> {
        if self.phase != Phase::InFlight
            && let Some(poll) = self.issue(cx)
        {
            return poll;
        }
        let slot = self.slot();
        let Some(seen) = slot.done_or_wait(cx) else {
            return Poll::Pending;
        };
        self.phase = Phase::Idle;
        let (status, information) = slot.result();
        // SAFETY: DONE: WSK is finished with the cell and this future owns the slot.
        let buf = unsafe { take_buf::<RECEIVE>(slot.held_cell(), information) };
        slot.hand_back(self.inner, seen);
        Poll::Ready((Ok((status, information)), buf))
    }
}

impl<const RECEIVE: bool> Drop for StreamIo<'_, RECEIVE> {
    #[inline]
    fn drop(&mut self) {
        match self.phase {
            Phase::Idle => {}
            Phase::Waiting => self.stop_waiting(),
            Phase::InFlight => self.slot().abandon_in_flight(),
        }
    }
}

/// Writes `chunk` into the held cell: the `WSK_BUF` WSK reads and the buffer it points into.
///
/// # Safety
/// The caller owns the cell (the slot is claimed and not pending) and the cell holds no
/// buffer (the slot is free: every completed operation took its buffer back).
#[expect(
    clippy::inline_always,
    reason = "a few stores on every stream send and receive, not worth a call"
)]
#[inline(always)]
unsafe fn park(cell: *mut Held, chunk: Chunk) {
    // SAFETY: the caller owns the cell (above).
    let held = unsafe { &mut *cell };
    held.wsk_buf = WSK_BUF {
        Mdl: chunk.buf.mdl(),
        Offset: chunk.offset,
        Length: chunk.len,
    };
    // A free slot's cell holds no buffer: writing over `None` needs no drop code, which an
    // assignment would still emit; the cold function only guards the invariant.
    if let Some(unexpected) = held.buf.replace(chunk.buf) {
        drop_parked_buf(unexpected);
    }
}

/// Takes the parked buffer back out of the cell after a completion that reported
/// `information` bytes (a receive's initialised part then reaches their end).
///
/// # Safety
/// The caller owns the cell: `DONE` was seen by the slot's owner, or the IRP never reached
/// WSK.
#[expect(
    clippy::inline_always,
    reason = "a few loads on every stream send and receive, not worth a call"
)]
#[inline(always)]
unsafe fn take_buf<const RECEIVE: bool>(cell: *mut Held, information: usize) -> IoBuf {
    // SAFETY: the caller owns the cell (above).
    let held = unsafe { &mut *cell };
    let Some(mut buf) = held.buf.take() else {
        return lost_buffer();
    };
    if RECEIVE {
        let start = held.wsk_buf.Offset as usize;
        let end = start + information.min(held.wsk_buf.Length);
        // SAFETY: every stream receive starts at or before its buffer's initialised end (0,
        // or after an earlier completion's data for a `recv_exact` continuation), and the
        // completed IRP wrote `[start, end)`.
        unsafe { buf.assume_written(end) };
    }
    buf
}

/// The parked buffer was gone: the slot protocol does not lose it.
#[cold]
#[inline(never)]
fn lost_buffer() -> IoBuf {
    panic!("a stream transfer's buffer was not parked in its slot")
}

/// Prepares the slot's IRP and makes the WSK call: `WskReceive` or `WskSend` of the parked
/// `WSK_BUF` with `flags`. Takes the in-flight reference. Returns the status of
/// `IoSetCompletionRoutineEx` without calling WSK when it fails (out of memory).
#[expect(
    clippy::inline_always,
    reason = "the hot path of every stream send and receive: a call costs a frame"
)]
#[inline(always)]
fn start<const RECEIVE: bool>(
    inner: &SocketInner,
    slot: &Slot,
    socket: *mut WSK_SOCKET,
    cell: *mut Held,
    flags: u32,
) -> NTSTATUS {
    inner.add_ref();
    // SAFETY: the slot is claimed and not pending: its IRP is ours, completed (or fresh), and
    // allocated with one stack location, which receives the completion routine.
    unsafe { sys::IoReuseIrp(slot.irp(), STATUS_UNSUCCESSFUL) };
    let status = set_stream_completion_routine(inner, slot);
    if !sys::NT_SUCCESS(status) {
        return status;
    }
    slot.state.mark_pending();
    // SAFETY: an open socket (the call gate is entered and the socket non-null), which WSK
    // keeps until `WskCloseSocket`, issued only after this call leaves the gate.
    let dispatch = unsafe { (*socket).Dispatch };
    // SAFETY: a connection socket's dispatch table is the connection one, and the provider's
    // table outlives its sockets.
    let table = unsafe { &*dispatch.cast::<WSK_PROVIDER_CONNECTION_DISPATCH>() };
    let function = if RECEIVE {
        table.WskReceive
    } else {
        table.WskSend
    };
    let Some(wsk_transfer) = function else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    // The `WSK_BUF` lives in the slot's cell, which the object keeps until completion.
    let buffer = {
        // SAFETY: the issuer owns the cell until the call returns (claimed; an inline
        // completion of a live operation only wakes).
        let held = unsafe { &mut *cell };
        &raw mut held.wsk_buf
    };
    // SAFETY: an open socket, a prepared IRP, a `WSK_BUF` describing the parked buffer's MDL
    // within its length, living in the slot until the completion.
    unsafe { wsk_transfer(socket, buffer, flags, slot.irp()) }
}
