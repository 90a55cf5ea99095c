//! The IRP queues on a provider socket under the NT cancel protocol: one attempt of a queued
//! operation as the owner of its completion, arming and claiming cancel routines, the cancel
//! routine itself, and the pump that drives a socket's queues.

use std::vec::Vec;

use super::glue::{self, IrpPtr};
use super::progress::progress;
use super::{CURRENT, Done, Io, Op, OpKind, Out, State, Step, lock};
use crate::{
    DEVICE_OBJECT, IRP, IoReleaseCancelSpinLock, IoSetCancelRoutine, NTSTATUS, STATUS_CANCELLED,
};

/// Runs one attempt of a queued op as the owner of its completion.
pub(super) fn attempt(
    op: &mut Op,
    step: impl FnOnce(&mut Op) -> Step,
) -> Option<(NTSTATUS, usize)> {
    let irp = op.irp.as_ptr();
    // SAFETY: the IRP is live while queued (it completes only through us or the cancel
    // routine, which would first have to take it out of the queue under the lock we hold).
    if op.armed && unsafe { IoSetCancelRoutine(irp, None) }.is_none() {
        // The cancel routine is on its way; it takes the op out and completes it.
        return None;
    }
    op.armed = false;
    match step(op) {
        Step::Finished(status, info) => Some((status, info)),
        Step::Wait => {
            if crate::faults::cancel_ignored() {
                // Wine: no cancel routine, so IoCancelIrp does nothing to the IRP.
                return None;
            }
            op.armed = true;
            // SAFETY: as above.
            if unsafe { arm(irp) } {
                None
            } else {
                Some((STATUS_CANCELLED, op.progress()))
            }
        }
    }
}

/// Sets the cancel routine on a waiting IRP. False when the IRP was cancelled meanwhile and
/// completing it as cancelled is now ours to do.
///
/// # Safety
/// `irp` is live and owned by the provider.
pub(super) unsafe fn arm(irp: *mut IRP) -> bool {
    // SAFETY: the caller guarantees a live IRP the provider owns.
    let _ = unsafe { IoSetCancelRoutine(irp, Some(cancel_routine)) };
    // SAFETY: as above.
    let field = unsafe { &raw mut (*irp).Cancel };
    // `Cancel` is written by IoCancelIrp on another thread (atomically, see there): an atomic
    // read, after the routine was armed, so either IoCancelIrp finds the routine or we see
    // Cancel.
    // SAFETY: a byte of the live IRP (aligned for an AtomicU8), accessed atomically while the
    // IRP is in flight.
    let cancel = unsafe { core::sync::atomic::AtomicU8::from_ptr(field) };
    let cancelled = cancel.load(core::sync::atomic::Ordering::SeqCst) != 0;
    // SAFETY: as above.
    !(cancelled && unsafe { IoSetCancelRoutine(irp, None) }.is_some())
}

/// Takes an op out for an immediate end (close, abort): its Done, or `None` when the cancel
/// routine already owns it (it completes the IRP, not finding it queued).
pub(super) fn claim_now(op: &Op, status: NTSTATUS, sock: u64) -> Option<Done> {
    // SAFETY: a queued op's IRP is live until completed by its owner.
    if op.armed && unsafe { IoSetCancelRoutine(op.irp.as_ptr(), None) }.is_none() {
        return None;
    }
    Some(Done::new(op.irp, status, op.progress(), sock))
}

/// The `DRIVER_CANCEL` routine of every queued provider IRP. Called with the cancel spin lock
/// held; releases it, takes the IRP out of its queue and completes it as cancelled.
pub(super) unsafe extern "system" fn cancel_routine(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // Two fields read through the pointer, not a reference to the whole IRP: the provider may
    // swap the IRP's CancelRoutine on another thread meanwhile (its `attempt`), and a
    // reference would claim that field too (a data race, Miri reports it).
    // SAFETY: IoCancelIrp calls us with the cancel spin lock held and the IRP live.
    let cancel_irql = unsafe { (*irp).CancelIrql };
    // SAFETY: as above (the address of a field of the live IRP).
    let overlay = unsafe { &raw const (*irp).Tail.Overlay };
    // SAFETY: the provider's stack location is current, so the driver context union holds
    // what `begin` wrote there (the socket id).
    let id = unsafe { (*overlay).DriverContext[0] } as u64;
    // SAFETY: we hold the cancel spin lock, acquired at `CancelIrql`.
    unsafe { IoReleaseCancelSpinLock(cancel_irql) };
    let tracked = IrpPtr::new(irp).expect("IoCancelIrp passes the IRP it cancels");
    let current = lock(&CURRENT).clone();
    let mut info = 0;
    let mut dones = Vec::new();
    if let Some(p) = &current {
        let mut st = p.lock();
        if let Some(sock) = st.sockets.get_mut(&id)
            && let Some(op) = sock.remove_op(tracked)
        {
            info = op.progress();
            if let OpKind::Connect {
                destroy_on_fail: true,
                ..
            } = op.kind
            {
                sock.destroy = true;
            }
        }
        pump(&mut st, &p.io, id, &mut dones);
    }
    if let Some(p) = current {
        // The cancel routine owns completion of an IRP whose routine it was called as.
        p.complete_irp(tracked, STATUS_CANCELLED, info);
        let inline = p.decide_inline();
        p.deliver(dones, inline);
    } else {
        // SAFETY: as above; no provider is left to account for it (kernel shut down).
        unsafe { glue::complete(irp, STATUS_CANCELLED, info) };
    }
}

/// Makes progress on socket `id`'s queues against its host socket; finished IRPs go to
/// `dones`. Sockets accepted on the way are added to the state.
pub(crate) fn pump(st: &mut State, io: &Io, id: u64, dones: &mut Vec<Done>) {
    pump_socket(st, io, id, None, dones);
}

/// [`pump`] for the reactor, on a readiness event of socket `id`'s host socket: whatever
/// the last read found, there may be data again (the event is edge-triggered: new data
/// raises a new one), so its receives read. `closed`: the event says the peer closed its
/// side or the connection failed (then receives always read, see `Sock::read_closed`).
pub(crate) fn pump_ready(st: &mut State, io: &Io, id: u64, closed: bool, dones: &mut Vec<Done>) {
    pump_socket(st, io, id, Some(closed), dones);
}

/// [`pump`]; after a readiness event (`Some(closed)`) first forgets that the host socket was
/// drained.
fn pump_socket(st: &mut State, io: &Io, id: u64, ready: Option<bool>, dones: &mut Vec<Done>) {
    // In place: taking the socket out of the map and back cost two moves of it and a rehash
    // on every call.
    let Some(sock) = st.sockets.get_mut(&id) else {
        return;
    };
    if let Some(closed) = ready {
        sock.drained = false;
        sock.read_closed |= closed;
    }
    let mut born = Vec::new();
    progress(sock, io, &mut st.next_id, &mut born, dones);
    if sock.destroy
        && let Some(mut sock) = st.sockets.remove(&id)
    {
        // A WskSocketConnect that failed: the client never saw this socket.
        sock.release_host(io, false);
        // SAFETY: the client never saw the socket, and it is freed only here.
        unsafe { sock.handle.free() };
    }
    for mut b in born {
        // An accepted socket is the client's like one it created: its static event callbacks
        // are on from the start.
        let static_events = st.regs.get(&b.client).map_or(0, |r| r.static_events);
        if static_events != 0 {
            super::events::apply_static(&mut b, static_events);
            st.soon.push(b.id);
        }
        st.sockets.insert(b.id, b);
    }
}

/// Tries the call's own op (queued behind earlier ones, unarmed) and, if it has to wait,
/// marks its IRP pending and arms its cancel routine, all under the provider lock: nobody can
/// complete it before the call has decided what it returns.
pub(super) fn submit(st: &mut State, io: &Io, id: u64, out: &mut Out) {
    pump(st, io, id, &mut out.dones);
    if out.dones.iter().any(|d| d.irp == out.irp) {
        return;
    }
    let irp = out.irp.as_ptr();
    // SAFETY: the IRP is the call's own, entered and not completed.
    unsafe { glue::mark_pending(irp) };
    out.marked = true;
    let Some(sock) = st.sockets.get_mut(&id) else {
        return;
    };
    let Some(op) = sock.find_op(out.irp) else {
        return;
    };
    if op.armed || crate::faults::cancel_ignored() {
        return;
    }
    op.armed = true;
    // SAFETY: as above.
    if !unsafe { arm(irp) } {
        let op = sock.remove_op(out.irp);
        out.dones.push(Done::new(
            out.irp,
            STATUS_CANCELLED,
            op.map_or(0, |o| o.progress()),
            id,
        ));
    }
}
