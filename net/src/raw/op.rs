//! [`Op`], the future of one operation on one slot: claims the slot, issues the WSK call on
//! first poll, returns the completion with the held resources, and when dropped in flight
//! cancels the IRP and leaves the finishing to whoever sees the completion last.

use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};

use wsk_executor::raw::sync::{AtomicU32, Ordering};
use wsk_sys::STATUS_PENDING;

use super::SocketInner;
use super::held::{Held, Params, Refused};
use super::slot::{Slot, start_request};
use super::state::Claim;
use crate::error::{Error, ErrorKind};

/// A future for one operation on one slot. Created by the socket types; the WSK call happens
/// on first poll. Output: the completion ([`Params::Done`]: `Completed` for a [`Held`]), or an
/// error when the slot or socket cannot take it.
pub(crate) struct Op<'a, P: Params = Held> {
    /// The socket object whose slot the operation uses (and whose reference its IRP holds).
    inner: &'a SocketInner,
    /// The socket the WSK call is made on, when it is not `inner`: an accept runs on its new
    /// connection's own slot against the listener ([`Op::calling`]), so that a listener has as
    /// many accepts in flight as it has accept futures.
    target: Option<&'a SocketInner>,
    index: usize,
    /// `inner`'s slot `index`, looked up once.
    slot: &'a Slot,
    /// What to issue at the next poll.
    issue: Option<P>,
    in_flight: bool,
    /// This operation is the slot's one waiter ([`Slot::start_waiting`]).
    waiting: bool,
    allow_closing: bool,
    /// 1 once cancellation was requested: an operation not yet (or not again) at WSK never
    /// gets there.
    cancel_requested: AtomicU32,
}

impl<'a, P: Params> Op<'a, P> {
    /// An operation on `inner`'s slot `index`, which will make `held`'s request with `held`
    /// parked.
    pub(crate) fn new(inner: &'a SocketInner, index: usize, held: P) -> Self {
        Self {
            inner,
            target: None,
            index,
            slot: &inner.slots[index],
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

    fn slot(&self) -> &'a Slot {
        self.slot
    }

    /// Gives up the slot's waiter role, if this operation held it.
    fn stop_waiting(&mut self) {
        if self.waiting {
            self.waiting = false;
            self.slot().stop_waiting();
        }
    }

    /// Refuses the operation not yet issued: its parameters come back with the error. Pending
    /// if there is nothing to refuse (polled again after it returned).
    fn refuse(&mut self, kind: ErrorKind) -> Poll<Result<P::Done, Refused<P>>> {
        match self.issue.take() {
            Some(held) => Poll::Ready(Err(Refused {
                error: Error::new(kind, held.name()),
                held,
            })),
            None => Poll::Pending,
        }
    }

    /// First poll (or first after a reissue): claims the slot and calls WSK. `None` when the
    /// IRP is with WSK (or already completed); otherwise the poll's result. Inlined into
    /// [`Op::poll_in_place`], for the reason given there.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every send and receive: a call costs a frame and a copy of the result"
    )]
    #[inline(always)]
    fn issue(&mut self, cx: &Context<'_>) -> Option<Poll<Result<P::Done, Refused<P>>>> {
        let issued = self.try_issue(cx);
        if !matches!(issued, Some(Poll::Pending)) {
            // Claimed the slot, or refused: no longer waiting for it.
            self.stop_waiting();
        }
        issued
    }

    #[expect(
        clippy::inline_always,
        reason = "the hot path of every send and receive: a call costs a frame and a copy of the result"
    )]
    #[inline(always)]
    fn try_issue(&mut self, cx: &Context<'_>) -> Option<Poll<Result<P::Done, Refused<P>>>> {
        let slot = self.slot();
        // The parameters stay in `issue` until they are parked (moving them is a copy).
        let Some(request) = self.issue.as_ref().map(P::request) else {
            // Only a poll after completion gets here (`issue` is set from creation until the
            // issue, and by `reissue`): the caller returned the result already.
            return Some(Poll::Pending);
        };
        if self.cancel_requested.load(Ordering::Acquire) != 0 || slot.is_cancel_requested() {
            return Some(self.refuse(ErrorKind::Cancelled));
        }
        let callee = self.callee();
        if self.inner.is_closing()
            || callee.is_closing()
            || (!self.allow_closing && callee.wsk().is_null())
        {
            return Some(self.refuse(ErrorKind::InvalidState));
        }
        // A live operation waits for this slot (woken when it frees): this one is a second
        // concurrent operation, and may not take the slot before the waiter's next poll.
        if !self.waiting && slot.has_waiter() {
            return Some(self.refuse(ErrorKind::InvalidState));
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
                            return Some(self.refuse(ErrorKind::InvalidState));
                        }
                        self.waiting = true;
                    }
                    // A dropped operation is still finishing; its finisher wakes the slot's
                    // waker. Register, then look again so that wake is not lost.
                    slot.waker.register(cx.waker());
                    if slot.state.is_free() {
                        continue;
                    }
                    return Some(Poll::Pending);
                }
                // Another live operation owns the slot: a second concurrent send or receive
                // would reorder data. Do not touch its waker.
                Claim::Taken => return Some(self.refuse(ErrorKind::InvalidState)),
            }
        }
        // The socket's spare IRP, or a new one, when the slot has none.
        if !slot.acquire_irp(self.inner) {
            // Nobody waits on a slot claimed by a live operation: give it back.
            slot.state.release();
            return Some(self.refuse(ErrorKind::NoResources));
        }
        // A call on an open socket is counted in progress until WSK returns, so that a close
        // (from a drop, or deregistration on another CPU) waits for it; once a close is
        // requested, no call may start.
        let socket = callee.wsk();
        let counted = !socket.is_null();
        if counted && !callee.enter_call() {
            // Nobody waits on a slot claimed by a live operation: give it back.
            slot.state.release();
            return Some(self.refuse(ErrorKind::InvalidState));
        }
        // The waker is registered after the call, and only if the IRP has not completed by
        // then (`Op::poll`): most completions are inline, and need no wake.
        // SAFETY: claimed and not pending: we own the held cell; `issue` is `Some` (checked
        // above, and nothing since took it).
        unsafe { slot.park_params(&mut self.issue) };
        let status = start_request(self.inner, slot, socket, request);
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
            let done = unsafe { slot.take_params::<P>(status, 0) };
            slot.state.release();
            // SAFETY: the in-flight reference from `start`; the handle's reference keeps the
            // object alive.
            unsafe { SocketInner::release(NonNull::from(self.inner)) };
            return Some(Poll::Ready(Ok(done)));
        }
        None
    }
}

impl<P: Params> Op<'_, P> {
    /// [`Future::poll`], for the futures that keep their `Op` in place (an `Op` is never
    /// pinned structurally: the slot, not the future, holds everything WSK sees, so a
    /// `&mut` is all polling needs). Always inlined into the hand-written futures of the
    /// transfers (`Recv`, `SendAll`, `RecvAppend`): a call would copy the result out through
    /// memory once more, on every send and receive.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every send and receive: a call costs a frame and a copy of the result"
    )]
    #[inline(always)]
    pub(crate) fn poll_in_place(&mut self, cx: &Context<'_>) -> Poll<Result<P::Done, Refused<P>>> {
        if !self.in_flight
            && let Some(poll) = self.issue(cx)
        {
            return poll;
        }
        let slot = self.slot();
        let Some(seen) = slot.done_or_wait(cx) else {
            return Poll::Pending;
        };
        self.in_flight = false;
        let (status, information) = slot.result();
        // SAFETY: DONE: WSK is finished with the cell and the future owns the slot.
        let done = unsafe { slot.take_params::<P>(status, information) };
        slot.hand_back(self.inner, seen);
        Poll::Ready(Ok(done))
    }
}

impl<P: Params> Future for Op<'_, P> {
    type Output = Result<P::Done, Refused<P>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: Op is never moved out of its pin: no field is pinned structurally (the
        // slot, not the future, holds everything WSK sees).
        let this = unsafe { self.get_unchecked_mut() };
        this.poll_in_place(cx)
    }
}

impl<P: Params> Drop for Op<'_, P> {
    #[inline]
    fn drop(&mut self) {
        self.stop_waiting();
        if !self.in_flight {
            return;
        }
        self.slot().abandon_in_flight();
    }
}
