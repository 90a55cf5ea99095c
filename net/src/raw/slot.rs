//! One operation slot of a socket object, and the code that runs its IRP: [`start`] (prepare
//! the IRP, take the in-flight reference, call WSK), the one completion routine
//! ([`on_complete`]), [`finish`] for operations whose future is gone, and [`issue_orphan`]
//! for the close nobody waits for. The slot's state word and its transitions live in
//! [`super::state`].

use core::ptr::{self, NonNull};

use wsk_executor::raw::RetainedWaker;
use wsk_executor::raw::sync::{AtomicPtr, AtomicU32, AtomicUsize, Ordering, UnsafeCell};
use wsk_sys::{
    self as sys, DEVICE_OBJECT, IRP, NTSTATUS, PVOID, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING, STATUS_UNSUCCESSFUL, WSK_PROVIDER_BASIC_DISPATCH, WSK_SOCKET,
};

use super::held::{Call, Held, Params};
use super::request::Request;
use super::state::{AfterCancel, Completion, OnAbandon, OnComplete, SlotState};
use super::{CLOSE, LINGER, SocketInner};

/// One IRP and what travels with it: its state word, the waiting future's waker, the result
/// and the resources WSK holds.
pub(super) struct Slot {
    /// The IRP the slot's operation uses. Preallocated in `SocketInner::new` (receive,
    /// close); a receive, send or control operation that finds none takes its socket's spare
    /// or allocates one ([`Slot::acquire_irp`]), and hands it to the spare when it finished
    /// if the spare is empty ([`Slot::offer_irp`]), so sequential operations on different
    /// slots share one IRP; the closing disconnect's is allocated by the close that needs
    /// it. Written only by the slot's owner while no canceller can read it; freed with the
    /// object.
    irp: AtomicPtr<IRP>,
    pub(super) state: SlotState,
    /// The waker of the task waiting on the slot, kept across operations: one task's
    /// receives, one after the other, register it once (a kept waker woken after its task
    /// stopped waiting here is a spurious wake).
    pub(super) waker: RetainedWaker,
    /// The completion's `NTSTATUS`, stored as its bits.
    status: AtomicU32,
    information: AtomicUsize,
    held: UnsafeCell<Held>,
    owner: *const SocketInner,
    /// 1 while the IRP in flight is a client-level call (`WskSocket`, `WskGetAddressInfo`),
    /// counted in the client's `ClientInner::client_call_started` until its completion is
    /// finished.
    client_call: AtomicU32,
    /// 1 while a live operation waits for this slot to finish a dropped one. The slot has
    /// one waker, so a second waiter would take the first one's place and the first would
    /// never be woken: there is at most one ([`Slot::start_waiting`]).
    waiter: AtomicU32,
    /// 1 while a deadline ([`SocketInner::request_slot_cancel`]) cancelled the live operation
    /// on this slot: no step of it may reach WSK any more (an operation of several steps,
    /// such as connect, would otherwise issue its next step after the cancel).
    cancel_requested: AtomicU32,
}

// SAFETY: as for `SocketInner`, which holds the slots: the shared state is atomics, `held` is
// guarded by the slot state machine, and `owner` points at the live object that holds the
// slot. (A slot is shared on its own only by reference from its object: `Op` keeps one.)
unsafe impl Sync for Slot {}

impl Slot {
    /// A free slot of `owner` around `irp`.
    pub(super) fn new(irp: *mut IRP, owner: *const SocketInner) -> Self {
        Self {
            irp: AtomicPtr::new(irp),
            state: SlotState::new(),
            waker: RetainedWaker::new(),
            status: AtomicU32::new(0),
            information: AtomicUsize::new(0),
            held: UnsafeCell::new(Held::empty()),
            owner,
            client_call: AtomicU32::new(0),
            waiter: AtomicU32::new(0),
            cancel_requested: AtomicU32::new(0),
        }
    }

    /// The owner polls its issued operation: the completion once recorded; else registers
    /// `cx`'s waker and waits, which looks again (a completion before the wait wakes nothing
    /// and is taken now, one after it wakes the waker just registered). `None`: pending.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every send and receive, in both the general and the stream operation"
    )]
    #[inline(always)]
    pub(super) fn done_or_wait(&self, cx: &core::task::Context<'_>) -> Option<Completion> {
        if let Some(seen) = self.state.poll_done() {
            return Some(seen);
        }
        self.waker.register(cx.waker());
        self.state.wait()
    }

    /// The owner took the result of `seen`: the IRP goes to the socket's spare (for the next
    /// operation on any slot) once no canceller can still be in `IoCancelIrp` with it, then
    /// the slot is freed.
    #[expect(
        clippy::inline_always,
        reason = "the hot path of every send and receive, in both the general and the stream operation"
    )]
    #[inline(always)]
    pub(super) fn hand_back(&self, owner: &SocketInner, seen: Completion) {
        self.state.wait_out_canceller();
        self.offer_irp(owner);
        // Waits out a concurrent `cancel_slot` before recycling the slot.
        self.state.recycle(seen);
    }

    /// The owner drops its operation while the IRP is in flight: cancels the IRP if it is
    /// the canceller, and finishes the slot if the completion came meanwhile (else the
    /// completion routine finishes it). Nothing is freed that WSK still holds.
    pub(super) fn abandon_in_flight(&self) {
        if self.state.abandon() == OnAbandon::CancelIrp {
            // SAFETY: the IRP is ours and, while we are the canceller, cannot be recycled
            // during the call. IoCancelIrp is allowed at <= DISPATCH_LEVEL.
            unsafe { sys::IoCancelIrp(self.irp()) };
        }
        if self.state.end_cancel() == AfterCancel::Finish {
            finish(self);
        }
    }

    /// The slot's IRP (null for a lazily allocated one not allocated yet).
    pub(super) fn irp(&self) -> *mut IRP {
        self.irp.load(Ordering::Acquire)
    }

    /// Allocates the slot's IRP if it has none; false if the allocation fails. Called only
    /// by the slot's one issuer: an operation that claimed the slot (`Op`), or the close
    /// issuing the closing disconnect before it claims its slot. Nobody else reads the IRP
    /// before it is issued (a canceller touches it only in flight). IRQL <= `DISPATCH_LEVEL`.
    #[cold]
    pub(super) fn allocate_irp(&self) -> bool {
        if !self.irp().is_null() {
            return true;
        }
        // SAFETY: IoAllocateIrp at <= DISPATCH_LEVEL; one stack location suffices for an IRP
        // we hand straight to WSK.
        let irp = unsafe { sys::IoAllocateIrp(1, 0) };
        if irp.is_null() {
            return false;
        }
        self.irp.store(irp, Ordering::Release);
        true
    }

    /// Gives the slot an IRP if it has none: its socket's spare, else a new one; false when
    /// the allocation fails. Called by the operation that claimed the slot, before it issues.
    /// IRQL <= `DISPATCH_LEVEL`.
    #[inline]
    pub(super) fn acquire_irp(&self, owner: &SocketInner) -> bool {
        if !self.irp().is_null() {
            return true;
        }
        let spare = owner.spare_irp.swap(ptr::null_mut(), Ordering::AcqRel);
        if spare.is_null() {
            return self.allocate_irp();
        }
        self.irp.store(spare, Ordering::Release);
        true
    }

    /// Hands the slot's IRP to its socket's spare if the spare is empty (else keeps it), so
    /// that the next operation on another slot reuses it instead of holding its own: an echo's
    /// receive and send, one after the other, share one IRP. Called by the slot's owner once
    /// the operation finished, with no canceller inside (`SlotState::wait_out_canceller`),
    /// before the slot is freed.
    #[inline]
    pub(super) fn offer_irp(&self, owner: &SocketInner) {
        let irp = self.irp();
        if irp.is_null() {
            return;
        }
        if owner
            .spare_irp
            .compare_exchange(ptr::null_mut(), irp, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.irp.store(ptr::null_mut(), Ordering::Release);
        }
    }

    /// True while a deadline cancelled the live operation on this slot.
    pub(super) fn is_cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire) != 0
    }

    /// Sets or clears the deadline's cancel request.
    pub(super) fn set_cancel_requested(&self, on: bool) {
        self.cancel_requested
            .store(u32::from(on), Ordering::Release);
    }

    /// Becomes the one live operation waiting for the slot; false when another one waits.
    pub(super) fn start_waiting(&self) -> bool {
        self.waiter
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// True while a live operation waits for the slot: a new operation must not take the
    /// slot from it when it frees.
    pub(super) fn has_waiter(&self) -> bool {
        self.waiter.load(Ordering::Acquire) != 0
    }

    /// The waiting operation stopped waiting (it claimed the slot, was refused or dropped).
    pub(super) fn stop_waiting(&self) {
        self.waiter.store(0, Ordering::Release);
    }

    /// Parks `held` in the slot.
    ///
    /// # Safety
    /// The caller owns the held cell: the slot is claimed and not pending.
    pub(super) unsafe fn park(&self, held: Held) {
        // SAFETY: the caller owns the cell (see above).
        self.held.with_mut(|cell| unsafe { *cell = held });
    }

    /// Parks an operation's parameters in the slot, taking them out of `params` (see
    /// [`Params::park`]); nothing is parked if `params` is `None`.
    ///
    /// # Safety
    /// As for [`Slot::park`]; and the cell holds no resources (the slot is free).
    #[inline]
    pub(super) unsafe fn park_params<P: Params>(&self, params: &mut Option<P>) {
        if let Some(params) = params.take() {
            self.held.with_mut(|cell| {
                // SAFETY: the caller owns the cell (see above).
                let cell = unsafe { &mut *cell };
                params.park(cell);
            });
        }
    }

    /// Takes an operation's results back (see [`Params::take`]), leaving no resources parked.
    ///
    /// # Safety
    /// As for [`Slot::take`].
    #[inline]
    pub(super) unsafe fn take_params<P: Params>(
        &self,
        status: NTSTATUS,
        information: usize,
    ) -> P::Done {
        self.held.with_mut(|cell| {
            // SAFETY: the caller owns the cell (see above).
            let cell = unsafe { &mut *cell };
            P::take(cell, status, information)
        })
    }

    /// The held cell's address, for the stream path (`super::stream_io`), which writes and
    /// reads its few fields in place. Using it is governed by the slot protocol: only the
    /// slot's owner, while it owns the cell (claimed and not pending, or `DONE`).
    #[inline]
    pub(super) fn held_cell(&self) -> *mut Held {
        self.held.with_mut(|cell| cell)
    }

    /// Takes the held resources back, leaving nothing parked.
    ///
    /// # Safety
    /// The caller owns the held cell: WSK is done with it (`DONE`, or never issued) and the
    /// slot protocol makes the caller its only user.
    pub(super) unsafe fn take(&self) -> Held {
        self.held.with_mut(|cell| {
            // SAFETY: the caller owns the cell (see above).
            unsafe { core::mem::replace(&mut *cell, Held::empty()) }
        })
    }

    /// The recorded result.
    pub(super) fn result(&self) -> (NTSTATUS, usize) {
        let status = self.status.load(Ordering::Relaxed).cast_signed();
        (status, self.information.load(Ordering::Relaxed))
    }

    fn record(&self, status: NTSTATUS, information: usize) {
        self.status.store(status.cast_unsigned(), Ordering::Relaxed);
        self.information.store(information, Ordering::Relaxed);
    }

    /// Ends the client-level call count this slot's IRP held, if any.
    pub(super) fn end_client_call(&self, owner: &SocketInner) {
        if self.client_call.swap(0, Ordering::AcqRel) != 0 {
            // SAFETY: the client outlives its socket objects.
            unsafe { owner.client.as_ref() }.client_call_finished();
        }
    }
}

/// `WskCloseSocket`.
///
/// # Safety
/// `call.socket` is an open WSK socket and `call.irp` is prepared.
pub(super) unsafe fn issue_close(call: &mut Call) -> NTSTATUS {
    // SAFETY: every provider socket's dispatch table starts with the basic dispatch.
    let basic = unsafe { call.dispatch::<WSK_PROVIDER_BASIC_DISPATCH>() };
    match basic.WskCloseSocket {
        // SAFETY: an open socket and a prepared IRP, as required above.
        Some(close) => unsafe { close(call.socket, call.irp) },
        None => sys::STATUS_NOT_IMPLEMENTED,
    }
}

/// Issues an operation nobody waits for (the close). The completion routine finishes it.
/// IRQL <= `DISPATCH_LEVEL`.
pub(super) fn issue_orphan(inner: &SocketInner, index: usize, held: Held, socket: *mut WSK_SOCKET) {
    let slot = &inner.slots[index];
    // The orphan's issuer holds the canceller's role while the call is in progress: a
    // completion that runs inline (before WSK returns) records DONE and leaves finishing to
    // us, so the operation is finished exactly once whether it completed inline, later, or
    // never.
    if !slot.state.claim_orphan() {
        // Only the close slot is used this way and close starts once.
        sys::kprint!("wsk-net: close slot busy; socket {:p} not closed\n", socket);
        return;
    }
    // SAFETY: claimed and not pending: we own the held cell.
    unsafe { slot.park(held) };
    let status = start(inner, slot, socket);
    let completed_inline = slot.state.is_done();
    if !completed_inline && status != STATUS_PENDING {
        // Failed synchronously without completing the IRP (Wine's stubs): finish it as if it
        // had completed, and drop the in-flight reference no completion will release.
        slot.record(status, 0);
        slot.state.complete_unissued();
        if slot.state.end_cancel() == AfterCancel::Finish {
            finish(slot);
        }
        // SAFETY: the in-flight reference taken by `start`; the completion routine never ran.
        unsafe { SocketInner::release(NonNull::from(inner)) };
        return;
    }
    if slot.state.end_cancel() == AfterCancel::Finish {
        // Completed inline: the completion routine released its reference and left the rest.
        finish(slot);
    }
}

/// Prepares the slot's IRP and makes the parked request's WSK call. Takes the in-flight
/// reference. Returns the status of `IoSetCompletionRoutineEx` without calling WSK when it
/// fails (out of memory). The slot is claimed and its request parked.
pub(super) fn start(inner: &SocketInner, slot: &Slot, socket: *mut WSK_SOCKET) -> NTSTATUS {
    // SAFETY: claimed and not yet pending: the issuer owns the cell.
    let request = slot.held.with_mut(|cell| unsafe { (*cell).request });
    start_request(inner, slot, socket, request)
}

/// [`start`], given the parked request (its issuer knows it: no read back from the cell).
/// Always inlined into an operation's issue, the hot path of every send and receive.
#[expect(
    clippy::inline_always,
    reason = "the hot path of every send and receive: a call costs a frame"
)]
#[inline(always)]
pub(super) fn start_request(
    inner: &SocketInner,
    slot: &Slot,
    socket: *mut WSK_SOCKET,
    request: Request,
) -> NTSTATUS {
    inner.add_ref();
    // SAFETY: the slot is claimed and not pending: its IRP is ours, completed (or fresh), and
    // allocated with one stack location, which receives the completion routine.
    unsafe { sys::IoReuseIrp(slot.irp(), STATUS_UNSUCCESSFUL) };
    let status = set_completion_routine(inner, slot);
    if !sys::NT_SUCCESS(status) {
        return status;
    }
    if socket.is_null() {
        slot.client_call.store(1, Ordering::Release);
        // SAFETY: the client outlives its socket objects.
        unsafe { inner.client.as_ref() }.client_call_started();
    }
    slot.state.mark_pending();
    let mut call = Call {
        irp: slot.irp(),
        held: slot.held.with_mut(|cell| cell),
        socket,
        client: inner.client,
    };
    // SAFETY: `call` is what requests need: a prepared IRP, the held resources at their
    // in-slot address, and the socket (null only before creation, for client-level requests).
    unsafe { request.issue(&mut call) }
}

/// Registers [`on_complete`] on the slot's reused IRP: with `IoSetCompletionRoutineEx`
/// against the client's device object, so that the I/O manager keeps the driver loaded until
/// the routine has returned; with `IoSetCompletionRoutine` where that is unavailable (Wine),
/// and for a close whose Ex context cannot be allocated (a close must go out: unprotected
/// against unload is better than a socket `WskDeregister` waits for forever). Any other
/// operation fails with the status of `IoSetCompletionRoutineEx`. IRQL <= `DISPATCH_LEVEL`.
#[expect(
    clippy::inline_always,
    reason = "the hot path of every send and receive: a call costs a frame"
)]
#[inline(always)]
pub(super) fn set_completion_routine(inner: &SocketInner, slot: &Slot) -> NTSTATUS {
    set_routine(inner, slot, on_complete)
}

/// [`set_completion_routine`] for a stream send or receive (`StreamIo`): registers
/// [`on_stream_complete`], which leaves out the client-level call mark no stream transfer
/// carries. IRQL <= `DISPATCH_LEVEL`.
#[expect(
    clippy::inline_always,
    reason = "the hot path of every stream send and receive: a call costs a frame"
)]
#[inline(always)]
pub(super) fn set_stream_completion_routine(inner: &SocketInner, slot: &Slot) -> NTSTATUS {
    set_routine(inner, slot, on_stream_complete)
}

/// Registers `routine` on the slot's reused IRP (see [`set_completion_routine`]).
#[expect(
    clippy::inline_always,
    reason = "the hot path of every send and receive: a call costs a frame"
)]
#[inline(always)]
fn set_routine(
    inner: &SocketInner,
    slot: &Slot,
    routine: unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP, PVOID) -> NTSTATUS,
) -> NTSTATUS {
    let context: PVOID = ptr::from_ref(slot).cast_mut().cast();
    // SAFETY: the client outlives its sockets.
    if let Some(device) = unsafe { inner.client.as_ref() }.completion_device() {
        // SAFETY: our reused IRP with a next location; `device` is the client's live device
        // object (deleted only after every socket is closed).
        let status = unsafe {
            sys::IoSetCompletionRoutineEx(device, slot.irp(), Some(routine), context, 1, 1, 1)
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
    unsafe {
        sys::IoSetCompletionRoutine(slot.irp(), Some(routine), context, true, true, true);
    }
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
    slot.record(io.Status, io.Information);
    // Claimed before `complete` makes the result visible: from then on the owner may recycle
    // the slot and start another client-level call on it (`TcpStream::connect`'s fallback
    // from `WskSocketConnect` to `WskSocket`), whose mark a later claim here would take,
    // leaving the client's count one too high and deregistration waiting forever.
    let client_call = slot.client_call.swap(0, Ordering::AcqRel) != 0;
    match slot.state.complete() {
        OnComplete::WakeOwner => slot.waker.wake(),
        OnComplete::FinishOrphan => finish(slot),
        OnComplete::OwnerWillLook | OnComplete::LeaveToCanceller => {}
    }
    // SAFETY: the slot's owner is live until the release below.
    let owner = unsafe { &*slot.owner };
    // After any finishing above, so that deregistration, which waits for this count, sees a
    // result list an abandoned lookup parked.
    if client_call {
        // SAFETY: the client outlives its socket objects.
        unsafe { owner.client.as_ref() }.client_call_finished();
    }
    // The owner's own pointer (from its allocation), not one made from the shared reference
    // above: the last release drops and frees the object, which needs write permission
    // (Miri's aliasing check); never null (set at allocation).
    if let Some(owner) = NonNull::new(slot.owner.cast_mut()) {
        // SAFETY: the in-flight reference taken in `start`; after this the IRP and slot may
        // be freed, which is fine: we return MORE_PROCESSING_REQUIRED, so the I/O manager
        // stops touching the IRP.
        unsafe { SocketInner::release(owner) };
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// The completion routine of a stream send or receive (`StreamIo`): [`on_complete`] without
/// the client-level call mark, which only `WskSocket`, `WskSocketConnect` and
/// `WskGetAddressInfo` set (`Op`'s issue) and which [`on_complete`] clears before it makes
/// their result visible: a stream transfer claims its slot only once it is free, after any
/// such completion, so its IRP never carries the mark. Runs at IRQL <= `DISPATCH_LEVEL`, on
/// any processor, possibly before the WSK call returns.
unsafe extern "system" fn on_stream_complete(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: `context` is the slot we registered, inside a socket object kept alive by this
    // IRP's in-flight reference until the end of this function.
    let slot = unsafe { &*context.cast::<Slot>() };
    debug_assert!(
        slot.client_call.load(Ordering::Relaxed) == 0,
        "a stream transfer's IRP carried a client-level call mark"
    );
    // SAFETY: the I/O manager passes the live IRP it is completing.
    let io = unsafe { (*irp).IoStatus };
    slot.record(io.Status, io.Information);
    match slot.state.complete() {
        OnComplete::WakeOwner => slot.waker.wake(),
        OnComplete::FinishOrphan => finish(slot),
        OnComplete::OwnerWillLook | OnComplete::LeaveToCanceller => {}
    }
    // The owner's own pointer, as in `on_complete` (the last release frees the object).
    if let Some(owner) = NonNull::new(slot.owner.cast_mut()) {
        // SAFETY: the in-flight reference `StreamIo`'s start took; after this the IRP and
        // slot may be freed, which is fine: we return MORE_PROCESSING_REQUIRED, so the I/O
        // manager stops touching the IRP.
        unsafe { SocketInner::release(owner) };
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Finishes an abandoned operation: releases what it held, handles a socket it created, marks
/// a close, and frees the slot. Called exactly once per abandoned operation, by whoever the
/// slot state named (see [`super::state::SlotState`]). IRQL <= `DISPATCH_LEVEL`.
pub(super) fn finish(slot: &Slot) {
    // SAFETY: DONE is set, so WSK no longer touches the held cell, and the abandoned-finish
    // protocol makes us its only user.
    let mut held = unsafe { slot.take() };
    let (status, information) = slot.result();
    // SAFETY: slots live inside their owner, which is live while the slot is in use.
    let owner = unsafe { &*slot.owner };
    // The child's reference is released when `held` drops below, after adoption tracked it
    // and requested its close (whose IRP then holds its own reference).
    if let Some(child) = held.adopt
        && sys::NT_SUCCESS(status)
        && information != 0
    {
        // Nobody will use this socket: a handle still alive closes it when it drops (now),
        // one already dropped left the close to `adopt`.
        SocketInner::adopt(child, information as *mut WSK_SOCKET);
    }
    let addrinfo = held.take_addrinfo();
    if !addrinfo.is_null() {
        // Parked, not freed, above PASSIVE_LEVEL (WskFreeAddressInfo is PASSIVE_LEVEL only).
        // SAFETY: the client is live while any of its sockets is; the list came from WSK.
        unsafe { owner.client.as_ref() }.release_address_info(addrinfo);
    }
    if ptr::eq(slot, &raw const owner.slots[CLOSE]) {
        if !sys::NT_SUCCESS(status) {
            sys::kprint!(
                "wsk-net: WskCloseSocket failed with {:#x}\n",
                status.cast_unsigned()
            );
        }
        owner.closed();
    }
    drop(held);
    if !ptr::eq(slot, &raw const owner.slots[CLOSE])
        && !ptr::eq(slot, &raw const owner.slots[LINGER])
    {
        // No canceller touches the IRP any more: the one that left finishing to us is out,
        // and one entering after DONE finds nothing in flight.
        slot.offer_irp(owner);
    }
    slot.state.release();
    slot.waker.wake();
    if ptr::eq(slot, &raw const owner.slots[LINGER]) {
        // The closing disconnect is done (or failed, or was cancelled by its bound): close.
        // The completion routine's (or the issuer's) reference keeps the object alive.
        owner.closing_disconnect_finished();
    }
}
