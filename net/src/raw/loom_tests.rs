//! loom models of the net core's state words: every interleaving (within a preemption bound)
//! of an operation's completion, its future's drop or cancel, the owner taking the result,
//! and a socket object's adoption, close, deregistration sweep and last release.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p wsk-net --release --lib loom`.
//!
//! The transitions are the real ones (`super::state`); the models replay around them the
//! order in which `slot.rs`, `op.rs` and `mod.rs` act on them, with the kernel's part (the
//! IRP, `IoCancelIrp`, the client's socket list) stood in by loom cells and a loom mutex.
//! What each model checks:
//! - an orphaned operation is finished exactly once, never while a canceller is inside
//!   `IoCancelIrp` with its IRP, and never before WSK let go of what it held (the held
//!   resources sit in a loom `UnsafeCell`: an access not ordered after WSK's is a data race
//!   loom reports);
//! - a live owner recycles its slot only after every canceller left;
//! - a live owner is woken exactly when it went to sleep (`WAITING`): never a lost wake, and
//!   a completion before the owner waits wakes nothing;
//! - `WskCloseSocket` goes out once, never while another call on the socket is in progress,
//!   and no call follows it;
//! - a graceful closing disconnect and its bound's timer: exactly one of them closes the
//!   socket, the timer's reference is released exactly once, and a disconnect that never
//!   completes is still closed by the timer;
//! - the lean stream path (`stream_io.rs`), refused by the call gate alone, never calls WSK
//!   after `WskCloseSocket` and gets its buffer back once, whether it or the close wins;
//! - a socket object is freed exactly once, after its last reference, never while it is still
//!   in the client's list and never used after that (the use-after-free of an abandoned
//!   accept's socket).

extern crate std;

use std::sync::atomic::Ordering::SeqCst;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::sync::{Arc, Mutex};
use loom::thread;

use super::state::{
    AfterArm, AfterCancel, AfterLinger, AfterOpen, BeginCancel, CallGate, Claim, CloseNow,
    LingerState, OnAbandon, OnComplete, RefCount, Released, SlotState, SocketFlags, StartClose,
};

/// A slot as `slot.rs` uses it: the real state word, a loom cell for what WSK holds, and a
/// count of finishings.
struct ModelSlot {
    state: SlotState,
    /// Stands for `Held`: the buffer WSK writes into until it completes the IRP.
    held: UnsafeCell<Option<u32>>,
    finished: AtomicUsize,
    /// Set while a canceller is inside `IoCancelIrp` with this slot's IRP.
    cancel_in_progress: AtomicBool,
}

impl ModelSlot {
    fn new() -> Self {
        Self {
            state: SlotState::new(),
            held: UnsafeCell::new(None),
            finished: AtomicUsize::new(0),
            cancel_in_progress: AtomicBool::new(false),
        }
    }

    /// `Op::issue`: claim, park, hand to WSK.
    fn issue(&self, resource: u32) {
        assert_eq!(self.state.claim(), Claim::Claimed);
        // SAFETY: claimed and not pending: the issuer owns the cell.
        self.held.with_mut(|held| unsafe { *held = Some(resource) });
        self.state.mark_pending();
    }

    /// WSK writes into the held buffer, then the completion routine records the result.
    fn complete(&self) -> OnComplete {
        self.held.with_mut(|held| {
            // SAFETY: pending: WSK owns the cell until DONE is recorded.
            let held = unsafe { &mut *held };
            *held = held.map(|r| r + 1);
        });
        self.state.complete()
    }

    /// `IoCancelIrp` on the slot's IRP: the slot must still be the one in flight.
    fn cancel_irp(&self) {
        self.cancel_in_progress.store(true, SeqCst);
        assert!(
            !self.state.is_free(),
            "IoCancelIrp on a slot that was recycled under the canceller"
        );
        self.cancel_in_progress.store(false, SeqCst);
    }

    /// `slot::finish`: take what was held, count, free the slot.
    fn finish(&self) {
        assert!(
            !self.cancel_in_progress.load(SeqCst),
            "finished while a canceller is inside IoCancelIrp"
        );
        // SAFETY: the state named us the finisher: WSK is done, nobody else touches the cell.
        let held = self.held.with_mut(|held| unsafe { (*held).take() });
        assert!(
            held.is_some(),
            "finished twice, or before anything was held"
        );
        self.finished.fetch_add(1, SeqCst);
        self.state.release();
    }

    /// `SocketInner::cancel_slot`.
    fn cancel(&self) {
        match self.state.begin_cancel() {
            BeginCancel::AlreadyCancelling => return,
            BeginCancel::CancelIrp => self.cancel_irp(),
            BeginCancel::NothingInFlight => {}
        }
        if self.state.end_cancel() == AfterCancel::Finish {
            self.finish();
        }
    }

    /// `Drop for Op` while in flight.
    fn drop_in_flight(&self) {
        if self.state.abandon() == OnAbandon::CancelIrp {
            self.cancel_irp();
        }
        if self.state.end_cancel() == AfterCancel::Finish {
            self.finish();
        }
    }

    /// `on_complete`'s decision.
    fn on_complete(&self) {
        match self.complete() {
            OnComplete::WakeOwner | OnComplete::OwnerWillLook | OnComplete::LeaveToCanceller => {}
            OnComplete::FinishOrphan => self.finish(),
        }
    }
}

/// An object with one slot and its reference count: the handle's reference and the in-flight
/// IRP's.
struct ModelObject {
    slot: ModelSlot,
    refs: RefCount,
    freed: AtomicBool,
}

impl ModelObject {
    /// An object whose slot has an operation in flight (two references).
    fn in_flight() -> Arc<Self> {
        let object = Arc::new(Self {
            slot: ModelSlot::new(),
            refs: RefCount::one(),
            freed: AtomicBool::new(false),
        });
        object.refs.add();
        object.slot.issue(7);
        object
    }

    fn release(&self) {
        assert!(
            !self.freed.load(SeqCst),
            "reference released after the free"
        );
        if self.refs.release() == Released::Last {
            assert!(
                self.slot.state.is_free(),
                "freed with an operation in its slot"
            );
            self.freed.store(true, SeqCst);
        }
    }

    /// The completion routine: decide, then drop the in-flight reference as the last act.
    fn completion(&self) {
        assert!(!self.freed.load(SeqCst), "completion on a freed object");
        self.slot.on_complete();
        self.release();
    }
}

/// A future dropped in flight while its IRP completes: finished once, by whoever is last.
#[test]
fn loom_drop_in_flight_races_completion() {
    loom::model(|| {
        let object = ModelObject::in_flight();
        let completion = {
            let object = object.clone();
            thread::spawn(move || object.completion())
        };
        object.slot.drop_in_flight();
        object.release();
        completion.join().unwrap();
        assert_eq!(object.slot.finished.load(SeqCst), 1);
        assert!(object.freed.load(SeqCst));
    });
}

/// A timeout cancels, then drops the future, while the IRP completes.
#[test]
fn loom_cancel_then_drop_races_completion() {
    loom::model(|| {
        let object = ModelObject::in_flight();
        let completion = {
            let object = object.clone();
            thread::spawn(move || object.completion())
        };
        object.slot.cancel();
        object.slot.drop_in_flight();
        object.release();
        completion.join().unwrap();
        assert_eq!(object.slot.finished.load(SeqCst), 1);
        assert!(object.freed.load(SeqCst));
    });
}

/// A live owner takes the result while a canceller on another processor is inside
/// `IoCancelIrp`: the slot is recycled only after the canceller left.
#[test]
fn loom_owner_recycles_only_after_the_canceller() {
    loom::model(|| {
        let object = ModelObject::in_flight();
        let completion = {
            let object = object.clone();
            thread::spawn(move || object.completion())
        };
        let canceller = {
            let object = object.clone();
            thread::spawn(move || object.slot.cancel())
        };
        // `Op::poll` until done.
        let seen = loop {
            if let Some(seen) = object.slot.state.poll_done() {
                break seen;
            }
            thread::yield_now();
        };
        // SAFETY: DONE: WSK is finished with the cell and the future owns the slot.
        let held = object.slot.held.with_mut(|held| unsafe { (*held).take() });
        assert_eq!(held, Some(8), "the owner sees what WSK wrote");
        object.slot.state.recycle(seen);
        assert!(!object.slot.cancel_in_progress.load(SeqCst));
        canceller.join().unwrap();
        object.release();
        completion.join().unwrap();
        assert_eq!(
            object.slot.finished.load(SeqCst),
            0,
            "a live owner finishes itself"
        );
        assert!(object.freed.load(SeqCst));
    });
}

/// A live owner hands its slot's IRP on (`Slot::offer_irp`: to the socket's spare, for the
/// next operation on any slot) while a canceller on another processor may be inside
/// `IoCancelIrp` with it: only after `wait_out_canceller`, so the canceller's read of the IRP
/// is ordered before the owner's move (the IRP is a loom cell: a race is reported) and never
/// finds it gone.
/// The owner's poll against the completion: the owner looks, registers its waker and waits
/// (`SlotState::wait`), the completion records `DONE` and wakes only an owner that waits.
/// Exactly one of the two acts: the owner takes the result at once, or it sleeps and the
/// completion wakes it (a wake lost here would leave the task asleep forever; a wake of an
/// owner that took the result is the cost the inline path no longer pays). The owner reads
/// what WSK wrote only after `DONE`.
#[test]
fn loom_owner_waits_or_takes_the_result_never_both_never_neither() {
    loom::model(|| {
        let slot = Arc::new(ModelSlot::new());
        slot.issue(7);
        let woken = Arc::new(AtomicBool::new(false));
        let completion = {
            let slot = slot.clone();
            let woken = woken.clone();
            thread::spawn(move || match slot.complete() {
                OnComplete::WakeOwner => woken.store(true, SeqCst),
                OnComplete::OwnerWillLook => {}
                other => panic!("a live owner's completion decided {other:?}"),
            })
        };
        // `StreamIo::poll_in_place` (and `Op`'s): look, else register the waker and wait.
        let at_once = slot.state.poll_done().or_else(|| slot.state.wait());
        completion.join().unwrap();
        assert_eq!(
            woken.load(SeqCst),
            at_once.is_none(),
            "woken exactly when the owner went to sleep"
        );
        // Asleep: the wake polls it again, and it sees the result.
        let seen = at_once.or_else(|| slot.state.poll_done()).expect("done");
        // SAFETY: DONE seen by the owner: WSK is finished with the cell.
        let held = slot.held.with_mut(|held| unsafe { (*held).take() });
        assert_eq!(held, Some(8), "the owner sees what WSK wrote");
        slot.state.recycle(seen);
        assert!(
            slot.state.is_free(),
            "WAITING does not outlive the operation"
        );
    });
}

#[test]
fn loom_owner_hands_the_irp_on_only_after_the_canceller() {
    loom::model(|| {
        let object = ModelObject::in_flight();
        let irp = Arc::new(UnsafeCell::new(Some(1u32)));
        let completion = {
            let object = object.clone();
            thread::spawn(move || object.completion())
        };
        let canceller = {
            let object = object.clone();
            let irp = irp.clone();
            thread::spawn(move || {
                if object.slot.state.begin_cancel() == BeginCancel::CancelIrp {
                    // SAFETY: model: the read `IoCancelIrp(slot.irp())` makes.
                    let seen = irp.with(|irp| unsafe { *irp });
                    assert_eq!(seen, Some(1), "IoCancelIrp on an IRP already handed on");
                }
                if object.slot.state.end_cancel() == AfterCancel::Finish {
                    object.slot.finish();
                }
            })
        };
        // `Op::poll` until done.
        let seen = loop {
            if let Some(seen) = object.slot.state.poll_done() {
                break seen;
            }
            thread::yield_now();
        };
        // SAFETY: DONE: WSK is finished with the cell and the future owns the slot.
        let held = object.slot.held.with_mut(|held| unsafe { (*held).take() });
        assert_eq!(held, Some(8), "the owner sees what WSK wrote");
        object.slot.state.wait_out_canceller();
        // SAFETY: model: `offer_irp` moving the IRP out of the slot.
        irp.with_mut(|irp| unsafe { *irp = None });
        object.slot.state.recycle(seen);
        canceller.join().unwrap();
        object.release();
        completion.join().unwrap();
        assert_eq!(
            object.slot.finished.load(SeqCst),
            0,
            "a live owner finishes itself"
        );
        assert!(object.freed.load(SeqCst));
    });
}

/// A socket object as `mod.rs` drives it: the real flags, call gate and reference count, the
/// close slot, and membership in the client's list (the client's spin lock is the mutex).
struct ModelSocket {
    refs: RefCount,
    flags: SocketFlags,
    calls: CallGate,
    close: ModelSlot,
    listed: Mutex<bool>,
    freed: AtomicBool,
}

impl ModelSocket {
    fn alive(&self) {
        assert!(
            !self.freed.load(SeqCst),
            "socket object used after it was freed"
        );
    }

    /// `SocketInner::release`.
    fn release(&self) {
        self.alive();
        if self.refs.release() == Released::Last {
            assert!(
                !*self.listed.lock().unwrap(),
                "socket object freed while still in the client's list"
            );
            self.freed.store(true, SeqCst);
        }
    }

    /// `SocketInner::adopt`: tracked before OPEN is visible.
    fn adopt(&self) {
        self.alive();
        *self.listed.lock().unwrap() = true;
        match self.flags.mark_open() {
            AfterOpen::RequestClose => self.request_close(),
            AfterOpen::Open => {}
        }
    }

    /// `SocketInner::start_close`.
    fn start_close(&self) {
        self.alive();
        match self.flags.start_close() {
            StartClose::RequestClose => self.request_close(),
            StartClose::ClosedWithoutSocket | StartClose::AlreadyStarted => {}
        }
    }

    fn request_close(&self) {
        if self.calls.request_close() == CloseNow::Issue {
            self.issue_close();
        }
    }

    /// `slot::issue_orphan` for `WskCloseSocket`, which the provider completes inline (the
    /// completion routine runs before the call returns and leaves finishing to the issuer).
    fn issue_close(&self) {
        assert!(self.close.state.claim_orphan(), "close issued twice");
        // SAFETY: claimed and not pending: the issuer owns the cell.
        self.close.held.with_mut(|held| unsafe { *held = Some(0) });
        self.refs.add();
        self.close.state.mark_pending();
        // The inline completion routine, then its release of the in-flight reference.
        self.close.on_complete();
        self.release();
        if self.close.state.end_cancel() == AfterCancel::Finish {
            self.close.finish();
            // `SocketInner::closed`: untracked, marked closed.
            *self.listed.lock().unwrap() = false;
            self.flags.mark_closed();
        }
    }
}

/// An accept whose future was dropped completes anyway: its finishing adopts the new socket
/// and releases the adopt reference, while the accept's child handle is dropped on another
/// processor and deregistration sweeps the client's list. The object is freed exactly once,
/// after it left the list, and never touched afterwards.
#[test]
fn loom_abandoned_accept_socket_is_closed_then_freed() {
    loom::model(|| {
        let socket = Arc::new(ModelSocket {
            // The child handle's reference, and `Held::adopt`'s.
            refs: RefCount::one(),
            flags: SocketFlags::new(),
            calls: CallGate::new(),
            close: ModelSlot::new(),
            listed: Mutex::new(false),
            freed: AtomicBool::new(false),
        });
        socket.refs.add();
        let finisher = {
            let socket = socket.clone();
            // `slot::finish` of the abandoned accept: adopt, then drop `Held`.
            thread::spawn(move || {
                socket.adopt();
                socket.release();
            })
        };
        let sweep = {
            let socket = socket.clone();
            // `ClientInner`'s deregistration sweep: a reference under the lock, only while
            // listed and not closing; then close and release.
            thread::spawn(move || {
                let took = {
                    let listed = socket.listed.lock().unwrap();
                    let take = *listed && !socket.flags.is_closing();
                    if take {
                        socket.refs.add();
                    }
                    take
                };
                if took {
                    socket.start_close();
                    socket.release();
                }
            })
        };
        // The accept future's child handle drops.
        socket.start_close();
        socket.release();
        finisher.join().unwrap();
        sweep.join().unwrap();
        assert!(socket.freed.load(SeqCst), "the socket object leaked");
        assert!(socket.flags.is_closed());
        assert_eq!(socket.close.finished.load(SeqCst), 1, "closed exactly once");
    });
}

/// A WSK call in progress on one processor while the handle is dropped on another: the close
/// goes out exactly once, only after the call returned, and no call enters after it.
#[test]
fn loom_close_waits_for_the_call_in_progress() {
    loom::model(|| {
        let gate = Arc::new(CallGate::new());
        let flags = Arc::new(SocketFlags::new());
        let in_call = Arc::new(AtomicBool::new(false));
        let closes = Arc::new(AtomicUsize::new(0));
        assert_eq!(flags.mark_open(), AfterOpen::Open);
        let issue_close = {
            let (in_call, closes) = (in_call.clone(), closes.clone());
            move || {
                assert!(
                    !in_call.load(SeqCst),
                    "WskCloseSocket while another call is in progress"
                );
                closes.fetch_add(1, SeqCst);
            }
        };
        let caller = {
            let (gate, in_call, closes) = (gate.clone(), in_call.clone(), closes.clone());
            let issue_close = issue_close.clone();
            // `Op::issue`: enter, call WSK, leave.
            thread::spawn(move || {
                if gate.enter() {
                    assert_eq!(closes.load(SeqCst), 0, "a call after WskCloseSocket");
                    in_call.store(true, SeqCst);
                    in_call.store(false, SeqCst);
                    if gate.leave() == CloseNow::Issue {
                        issue_close();
                    }
                }
            })
        };
        // `SocketInner::start_close` from the handle's drop.
        if flags.start_close() == StartClose::RequestClose
            && gate.request_close() == CloseNow::Issue
        {
            issue_close();
        }
        caller.join().unwrap();
        assert_eq!(closes.load(SeqCst), 1, "closed exactly once");
    });
}

/// A graceful closing disconnect's bound, as `mod.rs` drives `LingerState`: the kernel timer
/// stands as a flag (`KeCancelTimer` and the DPC's start both take it: whoever takes it
/// queued ends the timer), closes and the timer's reference are counted.
struct ModelLinger {
    state: LingerState,
    /// The timer is set and its DPC has not started (`KeCancelTimer` would return TRUE).
    queued: AtomicBool,
    /// The timer's reference on the socket object.
    timer_refs: AtomicUsize,
    closes: AtomicUsize,
}

impl ModelLinger {
    fn new() -> Self {
        Self {
            state: LingerState::new(),
            queued: AtomicBool::new(false),
            timer_refs: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
        }
    }

    /// `cancel_linger_timer`.
    fn cancel_timer(&self) {
        if self.queued.swap(false, SeqCst) {
            self.timer_refs.fetch_sub(1, SeqCst);
        }
    }

    /// `arm_linger_timer`, after `WskDisconnect` returned.
    fn arm(&self) {
        if !self.state.is_issuing() {
            return;
        }
        self.timer_refs.fetch_add(1, SeqCst);
        // `KeSetTimerEx`. A swap, not a store: loom 0.7 lets a later RMW in another thread
        // read the value before a plain store.
        self.queued.swap(true, SeqCst);
        if self.state.publish_timer() == AfterArm::CancelTimer {
            self.cancel_timer();
        }
    }

    /// `closing_disconnect_finished`.
    fn finish(&self) {
        match self.state.finish() {
            AfterLinger::Nothing => {}
            AfterLinger::CancelTimerAndClose => {
                self.cancel_timer();
                self.closes.fetch_add(1, SeqCst);
            }
            AfterLinger::Close => {
                self.closes.fetch_add(1, SeqCst);
            }
        }
    }

    /// The DPC, if the timer is still queued: `linger_expired`, then the reference's release.
    fn fire(&self) {
        if self.queued.swap(false, SeqCst) {
            if self.state.expire() {
                self.closes.fetch_add(1, SeqCst);
            }
            self.timer_refs.fetch_sub(1, SeqCst);
        }
    }
}

#[test]
fn loom_graceful_close_closes_once_whoever_wins() {
    loom::model(|| {
        let linger = Arc::new(ModelLinger::new());
        // The disconnect's completion, at any point after it was issued.
        let completion = {
            let linger = linger.clone();
            thread::spawn(move || linger.finish())
        };
        // The timer's DPC, at any point (it does nothing before the timer is set).
        let dpc = {
            let linger = linger.clone();
            thread::spawn(move || linger.fire())
        };
        linger.arm();
        completion.join().unwrap();
        dpc.join().unwrap();
        // Closed by now, and no timer outlives the close (a queued timer would hold the
        // socket object, and its DPC the driver, past the close and deregistration).
        assert_eq!(
            linger.closes.load(SeqCst),
            1,
            "closed once the disconnect finished"
        );
        assert!(!linger.queued.load(SeqCst), "the timer outlived the close");
        linger.fire();
        assert_eq!(linger.closes.load(SeqCst), 1, "closed exactly once");
        assert_eq!(
            linger.timer_refs.load(SeqCst),
            0,
            "the timer's reference released"
        );
    });
}

#[test]
fn loom_a_disconnect_that_never_completes_is_closed_by_the_bound() {
    loom::model(|| {
        let linger = Arc::new(ModelLinger::new());
        let dpc = {
            let linger = linger.clone();
            thread::spawn(move || linger.fire())
        };
        linger.arm();
        dpc.join().unwrap();
        linger.fire();
        assert_eq!(linger.closes.load(SeqCst), 1, "the bound closed");
        assert_eq!(
            linger.timer_refs.load(SeqCst),
            0,
            "the timer's reference released"
        );
        // The close completes the disconnect (cancelled): its finishing closes nothing more.
        linger.finish();
        assert_eq!(linger.closes.load(SeqCst), 1, "still closed exactly once");
    });
}

/// The two halves of a split stream dropped on two processors (`tcp/split.rs`): each gives up
/// its reference; exactly one of them, the last, closes the socket, and does so while its own
/// reference still keeps the object alive.
#[test]
fn loom_split_halves_close_once_from_the_last_drop() {
    loom::model(|| {
        let flags = Arc::new(SocketFlags::new());
        let refs = Arc::new(RefCount::one());
        refs.add(); // the second half's reference
        let closes = Arc::new(AtomicUsize::new(0));
        let freed = Arc::new(AtomicBool::new(false));
        let drop_half = {
            let (flags, refs, closes, freed) =
                (flags.clone(), refs.clone(), closes.clone(), freed.clone());
            move || {
                if flags.drop_half() {
                    assert!(!freed.load(SeqCst), "closing a freed socket object");
                    closes.fetch_add(1, SeqCst);
                }
                if refs.release() == Released::Last {
                    assert!(!freed.swap(true, SeqCst), "freed twice");
                }
            }
        };
        let other = thread::spawn(drop_half.clone());
        drop_half();
        other.join().unwrap();
        assert_eq!(closes.load(SeqCst), 1, "closed exactly once");
        assert!(freed.load(SeqCst), "freed after both halves");
    });
}

/// A connected stream as the lean path (`stream_io.rs`) and a close on another processor
/// drive it: the real flags, call gate, reference count and receive slot state; the
/// provider's list of pending IRPs as a loom mutex.
struct ModelStream {
    refs: RefCount,
    flags: SocketFlags,
    calls: CallGate,
    recv: ModelSlot,
    /// The receive IRP is pending in the provider (the close completes it).
    at_provider: Mutex<bool>,
    /// A WSK call on the socket is in progress.
    in_call: AtomicBool,
    /// `WskCloseSocket` went out.
    closed: AtomicBool,
    closes: AtomicUsize,
    /// The receive's buffer came back to the future (refused, or with the completion).
    buffers_back: AtomicUsize,
    freed: AtomicBool,
}

impl ModelStream {
    fn open() -> Arc<Self> {
        let stream = Arc::new(Self {
            refs: RefCount::one(),
            flags: SocketFlags::new(),
            calls: CallGate::new(),
            recv: ModelSlot::new(),
            at_provider: Mutex::new(false),
            in_call: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closes: AtomicUsize::new(0),
            buffers_back: AtomicUsize::new(0),
            freed: AtomicBool::new(false),
        });
        // A stream's handle exists only once connect or accept adopted the WSK socket.
        assert_eq!(stream.flags.mark_open(), AfterOpen::Open);
        stream
    }

    /// `SocketInner::release`.
    fn release(&self) {
        assert!(
            !self.freed.load(SeqCst),
            "reference released after the free"
        );
        if self.refs.release() == Released::Last {
            assert!(
                self.recv.state.is_free(),
                "freed with a receive in its slot"
            );
            self.freed.store(true, SeqCst);
        }
    }

    /// `WskCloseSocket`, completed inline: the provider completes the pending receive
    /// (cancelled) and the routine drops its in-flight reference.
    fn issue_close(&self) {
        assert!(
            !self.in_call.load(SeqCst),
            "WskCloseSocket while a call is in progress"
        );
        self.closed.store(true, SeqCst);
        self.closes.fetch_add(1, SeqCst);
        let pending = core::mem::take(&mut *self.at_provider.lock().unwrap());
        if pending {
            self.recv.on_complete();
            self.release();
        }
    }

    /// `SocketInner::start_close` (a handle's drop, `close_now`, deregistration).
    fn start_close(&self) {
        if self.flags.start_close() == StartClose::RequestClose
            && self.calls.request_close() == CloseNow::Issue
        {
            self.issue_close();
        }
    }

    /// `StreamIo::issue` then its polls until the completion: claim, the call gate (the only
    /// closing check of the lean path), park, the in-flight reference, pending, the WSK call,
    /// leave; then take the result and recycle.
    fn receive(&self) {
        assert_eq!(self.recv.state.claim(), Claim::Claimed);
        if !self.calls.enter() {
            // Refused (`InvalidState`): the slot back, the buffer back, WSK untouched.
            self.recv.state.release();
            self.buffers_back.fetch_add(1, SeqCst);
            return;
        }
        // SAFETY: claimed and not pending: the issuer owns the cell.
        self.recv.held.with_mut(|held| unsafe { *held = Some(1) });
        self.refs.add();
        self.recv.state.mark_pending();
        self.in_call.store(true, SeqCst);
        assert!(!self.closed.load(SeqCst), "a WSK call after WskCloseSocket");
        *self.at_provider.lock().unwrap() = true;
        self.in_call.store(false, SeqCst);
        if self.calls.leave() == CloseNow::Issue {
            self.issue_close();
        }
        // The future is polled until the completion (the close completes the receive).
        let seen = loop {
            if let Some(seen) = self.recv.state.poll_done() {
                break seen;
            }
            thread::yield_now();
        };
        // SAFETY: DONE seen by the owner: WSK is finished with the cell.
        let held = self.recv.held.with_mut(|held| unsafe { (*held).take() });
        assert_eq!(held, Some(2), "the buffer back after WSK wrote it, once");
        self.buffers_back.fetch_add(1, SeqCst);
        self.recv.state.wait_out_canceller();
        self.recv.state.recycle(seen);
    }
}

/// The lean stream path relies on the call gate alone to refuse a closing socket: a receive
/// issued while the stream is closed on another processor either enters the gate first (its
/// call goes out, `WskCloseSocket` follows it and completes the receive) or is refused without
/// touching WSK. The close goes out once, never during the call; the buffer comes back once;
/// the object is freed once, after the receive's reference.
#[test]
fn loom_stream_issue_races_a_close() {
    loom::model(|| {
        let stream = ModelStream::open();
        let closer = {
            let stream = stream.clone();
            thread::spawn(move || stream.start_close())
        };
        stream.receive();
        closer.join().unwrap();
        assert_eq!(stream.closes.load(SeqCst), 1, "closed exactly once");
        assert_eq!(stream.buffers_back.load(SeqCst), 1, "the buffer back once");
        // The handle's reference, dropped last.
        stream.release();
        assert!(stream.freed.load(SeqCst), "the socket object leaked");
    });
}
