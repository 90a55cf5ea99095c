//! [`Op`], the future of one operation on one slot: claims the slot, issues the WSK call on
//! first poll, returns the completion with the held resources, and when dropped in flight
//! cancels the IRP and leaves the finishing to whoever sees the completion last.

use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};

use wsk_executor::raw::sync::{AtomicU32, Ordering};
use wsk_sys::{self as sys, STATUS_PENDING};

use super::SocketInner;
use super::held::{Completed, Held, Refused};
use super::slot::{Slot, finish, start};
use super::state::{AfterCancel, Claim, OnAbandon};
use crate::error::{Error, ErrorKind};

/// A future for one operation on one slot. Created by the socket types; the WSK call happens
/// on first poll. Output: the completion, or an error when the slot or socket cannot take it.
pub(crate) struct Op<'a> {
    /// The socket object whose slot the operation uses (and whose reference its IRP holds).
    inner: &'a SocketInner,
    /// The socket the WSK call is made on, when it is not `inner`: an accept runs on its new
    /// connection's own slot against the listener ([`Op::calling`]), so that a listener has as
    /// many accepts in flight as it has accept futures.
    target: Option<&'a SocketInner>,
    index: usize,
    /// The request's name, for errors after the `Held` went to the slot.
    name: &'static str,
    /// What to issue at the next poll.
    issue: Option<Held>,
    in_flight: bool,
    /// This operation is the slot's one waiter ([`Slot::start_waiting`]).
    waiting: bool,
    allow_closing: bool,
    /// 1 once cancellation was requested: an operation not yet (or not again) at WSK never
    /// gets there.
    cancel_requested: AtomicU32,
}

impl<'a> Op<'a> {
    /// An operation on `inner`'s slot `index`, which will make `held.request` with `held`
    /// parked.
    pub(crate) fn new(inner: &'a SocketInner, index: usize, held: Held) -> Self {
        Self {
            inner,
            target: None,
            index,
            name: held.request.name(),
            issue: Some(held),
            in_flight: false,
            waiting: false,
            allow_closing: false,
            cancel_requested: AtomicU32::new(0),
        }
    }

    /// The operation may run on a socket that has no WSK socket yet (creation).
    pub(crate) fn before_open(mut self) -> Self {
        self.allow_closing = true;
        self
    }

    /// The WSK call goes to `target`'s WSK socket rather than to the slot owner's (which has
    /// none yet): the call is counted in progress on `target`, so that `target`'s close waits
    /// for it to return, and it is refused once `target` is closing. `target`'s close cancels
    /// the IRP, which completes on the owner's slot as usual.
    pub(crate) fn calling(mut self, target: &'a SocketInner) -> Self {
        self.target = Some(target);
        self
    }

    /// The socket object the WSK call is made on.
    fn callee(&self) -> &'a SocketInner {
        self.target.unwrap_or(self.inner)
    }

    /// Requests cancellation (`IoCancelIrp`) if in flight; the future still completes, with
    /// whatever status the provider gives, and returns the held resources.
    pub(crate) fn cancel(&self) {
        // Not issued yet (never polled, or waiting for its slot), or issued again later (a
        // continuation): it completes with `Cancelled` at that poll instead of reaching WSK.
        self.cancel_requested.store(1, Ordering::Release);
        if self.in_flight {
            self.inner.cancel_slot(self.index);
        }
    }

    /// Closes the socket (`WskCloseSocket` at once, no closing disconnect), which completes
    /// every IRP of it: the way out when the provider does not honour a cancel (Wine).
    pub(crate) fn close_socket(&self) {
        self.inner.close_now();
    }

    /// Issues the operation again at its next poll, with `held` (a continuation, such as the
    /// rest of a `WAITALL` receive the provider completed short). Only after it completed.
    pub(crate) fn reissue(&mut self, held: Held) {
        debug_assert!(!self.in_flight, "reissue of an operation in flight");
        self.issue = Some(held);
    }

    fn slot(&self) -> &'a Slot {
        &self.inner.slots[self.index]
    }

    /// Gives up the slot's waiter role, if this operation held it.
    fn stop_waiting(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.slot().stop_waiting();
        }
    }

    fn refuse(&self, kind: ErrorKind, held: Held) -> Poll<Result<Completed, Refused>> {
        let error = Error::new(kind, self.name);
        Poll::Ready(Err(Refused { error, held }))
    }

    /// First poll (or first after a reissue): claims the slot and calls WSK. `None` when the
    /// IRP is with WSK (or already completed); otherwise the poll's result.
    fn issue(&mut self, cx: &Context<'_>) -> Option<Poll<Result<Completed, Refused>>> {
        let issued = self.try_issue(cx);
        if !matches!(issued, Some(Poll::Pending)) {
            // Claimed the slot, or refused: no longer waiting for it.
            self.stop_waiting();
        }
        issued
    }

    fn try_issue(&mut self, cx: &Context<'_>) -> Option<Poll<Result<Completed, Refused>>> {
        let slot = self.slot();
        let Some(held) = self.issue.take() else {
            return Some(self.refuse(ErrorKind::InvalidState, Held::empty()));
        };
        if self.cancel_requested.load(Ordering::Acquire) != 0 || slot.is_cancel_requested() {
            return Some(self.refuse(ErrorKind::Cancelled, held));
        }
        let callee = self.callee();
        if self.inner.is_closing()
            || callee.is_closing()
            || (!self.allow_closing && callee.wsk().is_null())
        {
            return Some(self.refuse(ErrorKind::InvalidState, held));
        }
        // A live operation waits for this slot (woken when it frees): this one is a second
        // concurrent operation, and may not take the slot before the waiter's next poll.
        if !self.waiting && slot.has_waiter() {
            return Some(self.refuse(ErrorKind::InvalidState, held));
        }
        loop {
            match slot.state.claim() {
                Claim::Claimed => break,
                Claim::Finishing => {
                    // Another live operation already waits for this slot: this one is a
                    // second concurrent operation, refused like one (and it must not take
                    // the slot's one waker from the first).
                    if !self.waiting {
                        if !slot.start_waiting() {
                            return Some(self.refuse(ErrorKind::InvalidState, held));
                        }
                        self.waiting = true;
                    }
                    // A dropped operation is still finishing; its finisher wakes the slot's
                    // waker. Register, then look again so that wake is not lost.
                    slot.waker.register(cx.waker());
                    if slot.state.is_free() {
                        continue;
                    }
                    self.issue = Some(held);
                    return Some(Poll::Pending);
                }
                // Another live operation owns the slot: a second concurrent send or receive
                // would reorder data. Do not touch its waker.
                Claim::Taken => return Some(self.refuse(ErrorKind::InvalidState, held)),
            }
        }
        // The socket's spare IRP, or a new one, when the slot has none.
        if !slot.acquire_irp(self.inner) {
            // Nobody waits on a slot claimed by a live operation: give it back.
            slot.state.release();
            return Some(self.refuse(ErrorKind::NoResources, held));
        }
        // A call on an open socket is counted in progress until WSK returns, so that a close
        // (from a drop, or deregistration on another CPU) waits for it; once a close is
        // requested, no call may start.
        let socket = callee.wsk();
        let counted = !socket.is_null();
        if counted && !callee.enter_call() {
            // Nobody waits on a slot claimed by a live operation: give it back.
            slot.state.release();
            return Some(self.refuse(ErrorKind::InvalidState, held));
        }
        slot.waker.register(cx.waker());
        // SAFETY: claimed and not pending: we own the held cell.
        unsafe { slot.park(held) };
        let status = start(self.inner, slot, socket);
        if counted {
            // WSK returned: the call is no longer in progress (its IRP may be). A close
            // requested meanwhile is issued here.
            callee.leave_call();
        }
        self.in_flight = true;
        if status != STATUS_PENDING && !slot.state.is_done() {
            // Failed synchronously without completing the IRP (Wine's stubs do this): reclaim
            // everything.
            self.in_flight = false;
            slot.end_client_call(self.inner);
            // SAFETY: the IRP never reached a completion: nobody else touches the cell.
            let held = unsafe { slot.take() };
            slot.state.release();
            // SAFETY: the in-flight reference from `start`; the handle's reference keeps the
            // object alive.
            unsafe { SocketInner::release(NonNull::from(self.inner)) };
            return Some(Poll::Ready(Ok(Completed {
                status,
                information: 0,
                held,
            })));
        }
        None
    }
}

impl Future for Op<'_> {
    type Output = Result<Completed, Refused>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: Op is never moved out of its pin: no field is pinned structurally (the
        // slot, not the future, holds everything WSK sees).
        let this = unsafe { self.get_unchecked_mut() };
        let issuing = !this.in_flight;
        if issuing && let Some(poll) = this.issue(cx) {
            return poll;
        }
        let slot = this.slot();
        if !issuing {
            // An issue in this poll registered this waker before its WSK call already.
            slot.waker.register(cx.waker());
        }
        let Some(seen) = slot.state.poll_done() else {
            return Poll::Pending;
        };
        this.in_flight = false;
        // SAFETY: DONE: WSK is finished with the cell and the future owns the slot.
        let mut held = unsafe { slot.take() };
        let (status, information) = slot.result();
        note_received(&mut held, information);
        // The IRP goes to the socket's spare for the next operation on any slot, once no
        // canceller can still be in `IoCancelIrp` with it.
        slot.state.wait_out_canceller();
        slot.offer_irp(this.inner);
        // Waits out a concurrent `cancel_slot` before recycling the slot.
        slot.state.recycle(seen);
        Poll::Ready(Ok(Completed {
            status,
            information,
            held,
        }))
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        self.stop_waiting();
        if !self.in_flight {
            return;
        }
        let slot = self.slot();
        if slot.state.abandon() == OnAbandon::CancelIrp {
            // SAFETY: the IRP is ours and, while we are the canceller, cannot be recycled
            // during the call. IoCancelIrp is allowed at <= DISPATCH_LEVEL.
            unsafe { sys::IoCancelIrp(slot.irp()) };
        }
        if slot.state.end_cancel() == AfterCancel::Finish {
            finish(slot);
        }
    }
}

/// After a receive completed: the provider wrote `information` bytes into the buffer at the
/// `WSK_BUF`'s offset, so the buffer's initialised part now reaches their end (the count is
/// clamped to the `WSK_BUF`'s length: a provider never writes past what it was given).
fn note_received(held: &mut Held, information: usize) {
    if !held.request.receives_into_buf() {
        return;
    }
    let start = held.wsk_buf.Offset as usize;
    let end = start + information.min(held.wsk_buf.Length);
    if let Some(buf) = held.buf.as_mut() {
        // SAFETY: every receive starts at or before its buffer's initialised end (from 0,
        // after its filled part for `recv_append`, or after an earlier completion's data for
        // a `recv_exact` continuation), and the completed IRP wrote `[start, end)`.
        unsafe { buf.assume_written(end) };
    }
}
