//! The state words of the net core, each behind a type whose methods are its transitions:
//! the operation slot's state ([`SlotState`]), the socket's lifecycle flags
//! ([`SocketFlags`]), the count of WSK calls in progress with the close request
//! ([`CallGate`]) and the object's reference count ([`RefCount`]).
//!
//! No kernel calls here: every transition returns what its caller must do next (cancel the
//! IRP, finish the orphan, issue the close, free the object), so the loom models in
//! `loom_tests.rs` drive exactly this code. The bits are private to this file.
//!
//! IRQL: every transition is a plain atomic operation, allowed at any IRQL.

use wsk_executor::raw::sync::{AtomicU32, AtomicUsize, Ordering, loom_const_fn};

/// A future (or an orphaned operation) owns the slot.
const BUSY: u32 = 1;
/// The IRP is with WSK; only WSK touches the held resources.
const PENDING: u32 = 2;
/// The completion routine recorded the result; the owner may take the resources back.
const DONE: u32 = 4;
/// The future is gone; whoever sees `DONE` last finishes the operation.
const ABANDONED: u32 = 8;
/// Someone is inside `IoCancelIrp` (or issuing an orphan); the slot, and its IRP, cannot be
/// recycled until they leave, so a cancel never hits the next operation's IRP.
const CANCELLING: u32 = 16;
/// The live owner registered its waker and returned pending ([`SlotState::wait`]): the
/// completion wakes it. Without it the owner has not waited yet (its WSK call has not
/// returned, or it has not looked since) and sees `DONE` itself at its next look, so the
/// completion skips the wake: an inline completion (most sends) touches no waker.
const WAITING: u32 = 32;

/// The state word of one operation slot.
pub(crate) struct SlotState(AtomicU32);

/// What [`SlotState::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The slot is ours (`BUSY`): park the held resources and issue.
    Claimed,
    /// A dropped operation is still finishing; its finisher wakes the slot's waker.
    Finishing,
    /// A live operation owns the slot.
    Taken,
}

/// What the completion routine does after recording the result ([`SlotState::complete`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnComplete {
    /// The future is alive and waits ([`SlotState::wait`]): wake it, it takes the result.
    WakeOwner,
    /// The future is alive and has not waited yet: it sees `DONE` at its next look (its
    /// [`SlotState::wait`] or [`SlotState::poll_done`]); nothing to wake.
    OwnerWillLook,
    /// The future is gone and nobody holds the slot: finish the operation here.
    FinishOrphan,
    /// The future is gone and a canceller (or the issuer of an orphan) holds the slot: it
    /// finishes the operation when it leaves.
    LeaveToCanceller,
}

/// What a canceller does after entering ([`SlotState::begin_cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeginCancel {
    /// The IRP is with WSK and not completed: call `IoCancelIrp`, then [`SlotState::end_cancel`].
    CancelIrp,
    /// Nothing to cancel (not issued, or already completed): call [`SlotState::end_cancel`].
    NothingInFlight,
    /// Another canceller is inside: leave at once, without `end_cancel`.
    AlreadyCancelling,
}

/// What a future that is dropped in flight does first ([`SlotState::abandon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnAbandon {
    /// Not completed: call `IoCancelIrp`, then [`SlotState::end_cancel`].
    CancelIrp,
    /// Already completed: call [`SlotState::end_cancel`], which hands over the finishing.
    Completed,
}

/// What a canceller does when it leaves ([`SlotState::end_cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterCancel {
    /// The operation is abandoned and completed, and the completion left it to us: finish it.
    Finish,
    /// The owner (or a later completion) takes it from here.
    Nothing,
}

/// A snapshot of the slot seen by its owner while polling ([`SlotState::poll_done`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion(u32);

impl SlotState {
    loom_const_fn! {
        /// A free slot.
        pub(crate) fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }

    /// Claims the free slot for a live operation.
    pub(crate) fn claim(&self) -> Claim {
        match self
            .0
            .compare_exchange(0, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Claim::Claimed,
            Err(state) if state & ABANDONED != 0 => Claim::Finishing,
            Err(_) => Claim::Taken,
        }
    }

    /// True when nobody owns the slot (a waiter re-checks after registering its waker).
    pub(crate) fn is_free(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }

    /// Claims the free slot for an operation nobody will wait for (a close): it is born
    /// abandoned, and the issuer holds the canceller's role until [`SlotState::end_cancel`], so
    /// a completion that runs before the WSK call returns leaves the finishing to the issuer.
    /// False when the slot is not free.
    pub(crate) fn claim_orphan(&self) -> bool {
        self.0
            .compare_exchange(
                0,
                BUSY | ABANDONED | CANCELLING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Gives back a claimed slot whose operation never reached WSK, or was finished.
    pub(crate) fn release(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// The IRP is about to go to WSK.
    pub(crate) fn mark_pending(&self) {
        self.0.fetch_or(PENDING, Ordering::AcqRel);
    }

    /// True once the completion routine recorded the result.
    pub(crate) fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire) & DONE != 0
    }

    /// The completion routine recorded the result (status and information stored before).
    pub(crate) fn complete(&self) -> OnComplete {
        let prev = self.0.fetch_or(DONE, Ordering::AcqRel);
        if prev & ABANDONED == 0 {
            if prev & WAITING != 0 {
                OnComplete::WakeOwner
            } else {
                OnComplete::OwnerWillLook
            }
        } else if prev & CANCELLING == 0 {
            OnComplete::FinishOrphan
        } else {
            OnComplete::LeaveToCanceller
        }
    }

    /// An orphan whose WSK call failed without completing the IRP: recorded as done, for the
    /// issuer to finish when it leaves.
    pub(crate) fn complete_unissued(&self) {
        self.0.fetch_or(DONE, Ordering::AcqRel);
    }

    /// The owner polls: `Some` once the result is recorded.
    pub(crate) fn poll_done(&self) -> Option<Completion> {
        let state = self.0.load(Ordering::Acquire);
        (state & DONE != 0).then_some(Completion(state))
    }

    /// The owner, its waker registered in the slot, waits: `Some` if the result is already
    /// recorded (take it now), `None` if the completion will wake the registered waker. The
    /// two read-modify-writes on this word (this one setting `WAITING`, the completion's
    /// setting `DONE`) are ordered, so either this one sees `DONE` or the completion sees
    /// `WAITING` (and, through it, the registration made before): no wake is lost.
    pub(crate) fn wait(&self) -> Option<Completion> {
        let state = self.0.fetch_or(WAITING, Ordering::AcqRel) | WAITING;
        (state & DONE != 0).then_some(Completion(state))
    }

    /// The owner took the result of `seen`: frees the slot, waiting out a canceller that is
    /// still inside `IoCancelIrp` with this slot's IRP.
    pub(crate) fn recycle(&self, seen: Completion) {
        while self
            .0
            .compare_exchange_weak(seen.0 & !CANCELLING, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            spin();
        }
    }

    /// The owner of a `DONE` slot waits until no canceller is inside: one that entered
    /// before the completion may still be in `IoCancelIrp` with the slot's IRP, which the
    /// owner is about to hand on (one entering after `DONE` leaves the IRP alone).
    pub(crate) fn wait_out_canceller(&self) {
        while self.0.load(Ordering::Acquire) & CANCELLING != 0 {
            spin();
        }
    }

    /// The owner's future is dropped in flight: from now on whoever sees `DONE` last
    /// finishes. Enters as canceller, so the IRP cannot be recycled during `IoCancelIrp`.
    pub(crate) fn abandon(&self) -> OnAbandon {
        let prev = self.0.fetch_or(ABANDONED | CANCELLING, Ordering::AcqRel);
        if prev & DONE == 0 {
            OnAbandon::CancelIrp
        } else {
            OnAbandon::Completed
        }
    }

    /// A canceller (a timeout wanting the resources back) enters.
    pub(crate) fn begin_cancel(&self) -> BeginCancel {
        let prev = self.0.fetch_or(CANCELLING, Ordering::AcqRel);
        if prev & CANCELLING != 0 {
            BeginCancel::AlreadyCancelling
        } else if prev & PENDING != 0 && prev & DONE == 0 {
            BeginCancel::CancelIrp
        } else {
            BeginCancel::NothingInFlight
        }
    }

    /// The canceller (or dropper, or orphan issuer) leaves.
    pub(crate) fn end_cancel(&self) -> AfterCancel {
        let prev = self.0.fetch_and(!CANCELLING, Ordering::AcqRel);
        if prev & (ABANDONED | DONE) == ABANDONED | DONE {
            AfterCancel::Finish
        } else {
            AfterCancel::Nothing
        }
    }
}

/// Has a WSK socket (set once by adoption).
const OPEN: u32 = 1;
/// Closing started (by a handle drop, `close`, or deregistration); no new operations.
const CLOSE_STARTED: u32 = 2;
/// The close completed, or there was nothing to close.
const CLOSED: u32 = 4;
/// No more sends: a graceful or abortive disconnect was issued.
const SEND_SHUT: u32 = 8;
/// No more receives: abortive disconnect.
const RECV_SHUT: u32 = 16;
/// One of the two halves of a split stream (`TcpStream::into_split`) was dropped: the drop of
/// the other closes the socket.
const HALF_DROPPED: u32 = 32;

/// The lifecycle and shutdown flags of a socket object.
pub(crate) struct SocketFlags(AtomicU32);

/// What [`SocketFlags::start_close`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartClose {
    /// The socket is open: request `WskCloseSocket` ([`CallGate::request_close`]).
    RequestClose,
    /// No WSK socket (yet): marked closed; wake whoever waits for the close. Adoption closes
    /// a socket that arrives later.
    ClosedWithoutSocket,
    /// Somebody already started closing.
    AlreadyStarted,
}

/// What [`SocketFlags::mark_open`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterOpen {
    /// Closing started before the socket arrived and issued nothing: request the close now.
    RequestClose,
    /// Open; nobody is closing it.
    Open,
}

impl SocketFlags {
    loom_const_fn! {
        /// A socket object without a WSK socket.
        pub(crate) fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }

    fn load(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, bits: u32) -> u32 {
        self.0.fetch_or(bits, Ordering::AcqRel)
    }

    /// The WSK socket was stored: the object is open.
    pub(crate) fn mark_open(&self) -> AfterOpen {
        if self.set(OPEN) & CLOSE_STARTED == 0 {
            AfterOpen::Open
        } else {
            AfterOpen::RequestClose
        }
    }

    /// Starts closing, once.
    pub(crate) fn start_close(&self) -> StartClose {
        let prev = self.set(CLOSE_STARTED);
        if prev & CLOSE_STARTED != 0 {
            StartClose::AlreadyStarted
        } else if prev & OPEN == 0 {
            self.set(CLOSED);
            StartClose::ClosedWithoutSocket
        } else {
            StartClose::RequestClose
        }
    }

    /// The close completed.
    pub(crate) fn mark_closed(&self) {
        self.set(CLOSED);
    }

    /// True once close has started (no new operations).
    pub(crate) fn is_closing(&self) -> bool {
        self.load() & (CLOSE_STARTED | CLOSED) != 0
    }

    /// True when close has completed.
    pub(crate) fn is_closed(&self) -> bool {
        self.load() & CLOSED != 0
    }

    /// A disconnect went out: no more sends.
    pub(crate) fn shut_send(&self) {
        self.set(SEND_SHUT);
    }

    /// An abortive disconnect went out: no more sends or receives.
    pub(crate) fn shut_both(&self) {
        self.set(SEND_SHUT | RECV_SHUT);
    }

    /// True after a disconnect.
    pub(crate) fn is_send_shut(&self) -> bool {
        self.load() & SEND_SHUT != 0
    }

    /// True after an abortive disconnect.
    pub(crate) fn is_recv_shut(&self) -> bool {
        self.load() & RECV_SHUT != 0
    }

    /// A half of a split stream is being dropped: true for the last of the two (the one that
    /// must close the socket), false for the first. Exactly one of two concurrent drops sees
    /// true.
    pub(crate) fn drop_half(&self) -> bool {
        self.set(HALF_DROPPED) & HALF_DROPPED != 0
    }
}

/// `LingerState`: the closing disconnect is being issued (or needs no bound); no timer.
const LINGER_ISSUING: u32 = 0;
/// `LingerState`: the bound's timer is set and has not fired.
const LINGER_ARMED: u32 = 1;
/// `LingerState`: the disconnect finished first; its finishing closes.
const LINGER_FINISHED: u32 = 2;
/// `LingerState`: the timer fired first; its DPC closes.
const LINGER_EXPIRED: u32 = 3;

/// Who ends a graceful closing disconnect, its completion or the bound's timer, so that
/// exactly one of them issues `WskCloseSocket` and the timer's reference is released exactly
/// once (by whoever cancels the queued timer, or by its DPC).
pub(crate) struct LingerState(AtomicU32);

/// What the issuer does after setting the timer ([`LingerState::publish_timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterArm {
    /// Armed: the disconnect's finishing or the DPC ends the timer.
    Armed,
    /// The disconnect finished meanwhile (and closed): cancel the timer (`KeCancelTimer`;
    /// TRUE: release the timer's reference, else the DPC does).
    CancelTimer,
    /// The DPC fired meanwhile (and closed, and releases the timer's reference).
    Nothing,
}

/// What the disconnect's finishing does ([`LingerState::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterLinger {
    /// Close (no timer was published).
    Close,
    /// Cancel the published timer (as in [`AfterArm::CancelTimer`]), then close.
    CancelTimerAndClose,
    /// The DPC closed already.
    Nothing,
}

impl LingerState {
    loom_const_fn! {
        /// No closing disconnect yet.
        pub(crate) fn new() -> Self {
            Self(AtomicU32::new(LINGER_ISSUING))
        }
    }

    /// True while the disconnect has not finished and no timer fired: a bound is worth setting.
    pub(crate) fn is_issuing(&self) -> bool {
        self.0.load(Ordering::Acquire) == LINGER_ISSUING
    }

    /// The issuer set the timer (after `WskDisconnect` returned) and publishes it.
    pub(crate) fn publish_timer(&self) -> AfterArm {
        match self.0.compare_exchange(
            LINGER_ISSUING,
            LINGER_ARMED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => AfterArm::Armed,
            Err(LINGER_FINISHED) => AfterArm::CancelTimer,
            Err(_) => AfterArm::Nothing,
        }
    }

    /// The disconnect finished (its completion's finishing).
    pub(crate) fn finish(&self) -> AfterLinger {
        let finished = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state != LINGER_EXPIRED).then_some(LINGER_FINISHED)
            });
        match finished {
            Ok(LINGER_ARMED) => AfterLinger::CancelTimerAndClose,
            Ok(_) => AfterLinger::Close,
            Err(_) => AfterLinger::Nothing,
        }
    }

    /// The timer fired (its DPC): true when the DPC closes (the disconnect has not finished).
    pub(crate) fn expire(&self) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                matches!(state, LINGER_ISSUING | LINGER_ARMED).then_some(LINGER_EXPIRED)
            })
            .is_ok()
    }
}

/// In the call word: a close is requested; no call may enter any more, and whoever brings the
/// count of calls in progress to zero issues `WskCloseSocket`.
const CLOSE_REQUESTED: u32 = 1 << 31;

/// WSK calls on a socket in progress (entered and not yet returned), and the close request.
/// `WskCloseSocket` must not be called while another call on the socket is in progress, and
/// no call may follow it (WDK: "Closing a Socket",
/// <https://learn.microsoft.com/windows-hardware/drivers/network/closing-a-socket>, and
/// `WskCloseSocket`): the last call out issues a requested close.
pub(crate) struct CallGate(AtomicU32);

/// Whether the caller must issue `WskCloseSocket` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseNow {
    /// Issue the close: a close was requested and no call is in progress any more.
    Issue,
    /// Somebody else issues it (or nobody asked).
    No,
}

impl CallGate {
    loom_const_fn! {
        /// No call in progress, no close requested.
        pub(crate) fn new() -> Self {
            Self(AtomicU32::new(0))
        }
    }

    /// Enters a WSK call; false once a close is requested. Every `true` is paired with one
    /// [`CallGate::leave`] after the WSK function returned.
    pub(crate) fn enter(&self) -> bool {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            if current & CLOSE_REQUESTED != 0 {
                return false;
            }
            match self.0.compare_exchange_weak(
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

    /// Leaves a WSK call; the last one out after a close was requested issues it.
    pub(crate) fn leave(&self) -> CloseNow {
        if self.0.fetch_sub(1, Ordering::AcqRel) == CLOSE_REQUESTED | 1 {
            CloseNow::Issue
        } else {
            CloseNow::No
        }
    }

    /// Requests the close (once per socket): issued by the caller if no call is in progress,
    /// else by the last call out.
    pub(crate) fn request_close(&self) -> CloseNow {
        if self.0.fetch_or(CLOSE_REQUESTED, Ordering::AcqRel) == 0 {
            CloseNow::Issue
        } else {
            CloseNow::No
        }
    }
}

/// The reference count of a socket object: one for the user's handle, one per in-flight IRP,
/// one per `Held::adopt`.
pub(crate) struct RefCount(AtomicUsize);

/// Whether the caller dropped the last reference and must free the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// The last reference: nobody else can reach the object; free it.
    Last,
    /// Others still hold references.
    Shared,
}

impl RefCount {
    loom_const_fn! {
        /// One reference, the creator's.
        pub(crate) fn one() -> Self {
            Self(AtomicUsize::new(1))
        }
    }

    /// Takes a reference (the caller already holds one).
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a reference.
    pub(crate) fn release(&self) -> Released {
        if self.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            Released::Last
        } else {
            Released::Shared
        }
    }
}

/// One turn of a spin-wait: a processor hint normally, a yield to the other threads under loom
/// (which would otherwise explore the spinning thread forever).
fn spin() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_live_operation_is_woken_then_recycled() {
        let slot = SlotState::new();
        assert_eq!(slot.claim(), Claim::Claimed);
        assert_eq!(slot.claim(), Claim::Taken, "one operation per slot");
        slot.mark_pending();
        assert_eq!(slot.poll_done(), None);
        assert_eq!(slot.wait(), None, "not done: the completion wakes");
        assert_eq!(slot.complete(), OnComplete::WakeOwner);
        let seen = slot.poll_done().expect("done");
        slot.recycle(seen);
        assert!(slot.is_free());
    }

    #[test]
    fn a_completion_before_the_owner_waits_wakes_nothing() {
        let slot = SlotState::new();
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        // Inline, inside the WSK call: the owner has not waited.
        assert_eq!(slot.complete(), OnComplete::OwnerWillLook);
        let seen = slot.wait().expect("the owner's wait sees the result");
        slot.recycle(seen);
        assert!(slot.is_free(), "WAITING does not outlive the operation");
        // The next operation on the slot starts without WAITING.
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        assert_eq!(slot.complete(), OnComplete::OwnerWillLook);
    }

    #[test]
    fn a_dropped_operation_is_finished_by_whoever_sees_done_last() {
        // Dropped first: the completion finishes.
        let slot = SlotState::new();
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        assert_eq!(slot.abandon(), OnAbandon::CancelIrp);
        assert_eq!(slot.claim(), Claim::Finishing, "a new operation waits");
        assert_eq!(slot.end_cancel(), AfterCancel::Nothing);
        assert_eq!(slot.complete(), OnComplete::FinishOrphan);

        // Completed while the dropper is inside IoCancelIrp: the dropper finishes.
        let slot = SlotState::new();
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        assert_eq!(slot.abandon(), OnAbandon::CancelIrp);
        assert_eq!(slot.complete(), OnComplete::LeaveToCanceller);
        assert_eq!(slot.end_cancel(), AfterCancel::Finish);

        // Completed before the drop: the dropper finishes.
        let slot = SlotState::new();
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        assert_eq!(slot.complete(), OnComplete::OwnerWillLook);
        assert_eq!(slot.abandon(), OnAbandon::Completed);
        assert_eq!(slot.end_cancel(), AfterCancel::Finish);
    }

    #[test]
    fn a_canceller_of_a_live_operation_never_finishes_it() {
        let slot = SlotState::new();
        assert_eq!(slot.begin_cancel(), BeginCancel::NothingInFlight);
        assert_eq!(slot.end_cancel(), AfterCancel::Nothing);
        assert_eq!(slot.claim(), Claim::Claimed);
        slot.mark_pending();
        assert_eq!(slot.begin_cancel(), BeginCancel::CancelIrp);
        assert_eq!(slot.begin_cancel(), BeginCancel::AlreadyCancelling);
        // The owner waits while the canceller is inside.
        assert_eq!(slot.wait(), None);
        assert_eq!(slot.complete(), OnComplete::WakeOwner);
        assert_eq!(slot.end_cancel(), AfterCancel::Nothing);
    }

    #[test]
    fn an_orphan_completed_inline_is_finished_by_its_issuer() {
        let slot = SlotState::new();
        assert!(slot.claim_orphan());
        assert!(!slot.claim_orphan(), "close is issued once");
        slot.mark_pending();
        assert_eq!(slot.complete(), OnComplete::LeaveToCanceller);
        assert_eq!(slot.end_cancel(), AfterCancel::Finish);
        slot.release();
        assert!(slot.is_free());
    }

    #[test]
    fn close_waits_for_the_last_call_and_shuts_the_gate() {
        let calls = CallGate::new();
        assert!(calls.enter());
        assert!(calls.enter());
        assert_eq!(calls.request_close(), CloseNow::No);
        assert!(!calls.enter(), "no call after a close request");
        assert_eq!(calls.leave(), CloseNow::No);
        assert_eq!(
            calls.leave(),
            CloseNow::Issue,
            "the last call out issues it"
        );

        let idle = CallGate::new();
        assert_eq!(idle.request_close(), CloseNow::Issue);
    }

    #[test]
    fn socket_flags_follow_open_close_and_shutdown() {
        let flags = SocketFlags::new();
        assert_eq!(flags.start_close(), StartClose::ClosedWithoutSocket);
        assert!(flags.is_closed());
        assert_eq!(
            flags.mark_open(),
            AfterOpen::RequestClose,
            "adopted after the drop"
        );

        let flags = SocketFlags::new();
        assert_eq!(flags.mark_open(), AfterOpen::Open);
        assert!(!flags.is_closing());
        flags.shut_send();
        assert!(flags.is_send_shut() && !flags.is_recv_shut());
        flags.shut_both();
        assert!(flags.is_recv_shut());
        assert_eq!(flags.start_close(), StartClose::RequestClose);
        assert_eq!(flags.start_close(), StartClose::AlreadyStarted);
        assert!(flags.is_closing() && !flags.is_closed());
        flags.mark_closed();
        assert!(flags.is_closed());
        assert!(!flags.drop_half(), "the first half dropped does not close");
        assert!(flags.drop_half(), "the second does");

        let refs = RefCount::one();
        refs.add();
        assert_eq!(refs.release(), Released::Shared);
        assert_eq!(refs.release(), Released::Last);
    }
}
