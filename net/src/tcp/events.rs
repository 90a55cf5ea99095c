//! Event-driven receive on a [`TcpStream`]: WSK's `WskReceiveEvent`/`WskDisconnectEvent`
//! callbacks instead of a pre-posted `WskReceive` IRP.
//!
//! [`TcpStream::enable_receive_events`] turns the callbacks on (`SO_WSK_EVENT_CALLBACK`);
//! [`TcpStream::recv_events`] then receives what they indicate. Every connection socket this
//! crate creates or accepts names its socket object as the WSK socket context and this
//! module's `WSK_CLIENT_CONNECTION_DISPATCH`, so enabling needs no new socket.
//!
//! What the receive callback (at `DISPATCH_LEVEL`, on the processor WSK indicates on) does
//! with an indication, under the stream's spin lock:
//! - a [`RecvEvents`] future is waiting and nothing is queued before: the data is copied
//!   **in place** into its buffer and the callback returns `STATUS_SUCCESS` (consumed; what
//!   does not fit is retained as below);
//! - otherwise the `WSK_DATA_INDICATION` chain is **retained** (`STATUS_PENDING`) and the
//!   waiting task is woken: it copies from the chain into its buffer and gives the chain back
//!   with `WskRelease` once it has copied all of it;
//! - more than [`RETAINED_MAX`] chains retained: **back-pressure**, `STATUS_DATA_NOT_ACCEPTED`.
//!   WSK then keeps the data and indicates nothing more until a `WskReceive` is posted: the
//!   next [`RecvEvents`] that finds the retained chains drained posts one (an ordinary
//!   [`TcpStream::recv`]), which re-enables the indications.
//!
//! The disconnect callback records FIN (a later receive returns 0) or reset (`ConnectionReset`).
//! Before the stream's `WskCloseSocket` is issued every retained chain is released, and the
//! callbacks from then on discard what they are given: no indication is ever retained across
//! the close. The state lives in one nonpaged block per event-driven stream (allocated by
//! [`TcpStream::enable_receive_events`], freed with the socket object after its close).
//!
//! Where the provider lacks event callbacks (Wine 8's netio.sys), enabling reports `Ok(false)`
//! and [`RecvEvents`] is an ordinary receive.

use core::future::Future;
use core::marker::PhantomPinned;
use core::net::SocketAddr;
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll};

use wsk_executor::raw::AtomicWaker;
use wsk_executor::raw::sync::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use wsk_executor::sync::{SpinMutex, SpinMutexGuard};
use wsk_sys::{
    self as sys, NTSTATUS, PVOID, SIZE_T, WSK_CLIENT_CONNECTION_DISPATCH, WSK_DATA_INDICATION,
};

use super::{Recv, TcpListener, TcpStream};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::event_cell;
use crate::raw::SocketInner;
use crate::spare::Spares;

/// Pool tag of event-receive state blocks (`WskE`).
const EVENTS_TAG: u32 = sys::pool_tag(*b"WskE");

/// Indication chains a stream retains before it pushes back with `STATUS_DATA_NOT_ACCEPTED`.
pub const RETAINED_MAX: usize = 4;

/// `NormalPagePriority | MdlMappingNoExecute` for mapping an indicated MDL.
const MAP_PRIORITY: u32 = 16 | 0x4000_0000;

/// The event callbacks of every connection socket this crate creates or accepts.
static CONNECTION_EVENTS: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: Some(on_receive),
    WskDisconnectEvent: Some(on_disconnect),
    WskSendBacklogEvent: Some(super::send_backlog::on_send_backlog),
};

/// The socket context and client dispatch table a connection socket is created or accepted
/// with: its socket object, and [`CONNECTION_EVENTS`].
pub(crate) fn client_dispatch(inner: NonNull<SocketInner>) -> (PVOID, *const core::ffi::c_void) {
    (inner.as_ptr().cast(), (&raw const CONNECTION_EVENTS).cast())
}

/// A chain the stream retained: the bytes already copied out of it, and its total.
#[derive(Clone, Copy)]
struct Retained {
    chain: *mut WSK_DATA_INDICATION,
    taken: usize,
    total: usize,
}

/// How the peer ended the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Fin,
    Reset,
}

/// What the spin lock guards.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags of the event protocol: enabled, pushed back, closing, no reader"
)]
struct Queue {
    /// Receive events are on.
    enabled: bool,
    /// Retained chains, oldest first.
    retained: heapless::Deque<Retained, RETAINED_MAX>,
    /// The waiting receive's buffer (in a pinned [`RecvEvents`]), or null.
    reader: *mut IoBuf,
    /// The callback returned `STATUS_DATA_NOT_ACCEPTED` (or took only part): WSK waits for a
    /// `WskReceive`.
    not_accepted: bool,
    /// The close is being issued: callbacks discard, nothing is retained any more.
    closing: bool,
    /// The read half of a split stream was dropped: nobody will receive, so the callbacks
    /// push back (`STATUS_DATA_NOT_ACCEPTED`) and WSK keeps the data, as it does for an
    /// IRP-driven stream nobody receives on.
    reader_gone: bool,
    ended: Option<Ended>,
    counts: EventCounts,
}

/// What a stream's receive callbacks did with the indications they were given (for
/// diagnostics, tests and benches): [`TcpStream::receive_event_counts`].
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Indications copied in place into a waiting receive's buffer whole (`STATUS_SUCCESS`).
    pub consumed: u64,
    /// Indications retained (`STATUS_PENDING`), released once copied.
    pub retained: u64,
    /// Indications pushed back (`STATUS_DATA_NOT_ACCEPTED`, or taken in part): each was
    /// followed by a `WskReceive` IRP.
    pub not_accepted: u64,
}

impl EventCell {
    /// The queue, locked; [`EventCell::signal`] is brought up to date when the guard goes,
    /// before the lock is let go. IRQL <= `DISPATCH_LEVEL` (raised to `DISPATCH_LEVEL` while
    /// held).
    fn lock(&self) -> QueueGuard<'_> {
        QueueGuard {
            queue: self.queue.lock(),
            signal: &self.signal,
        }
    }

    /// [`Queue::signal`] as the last lock holder left it (no lock taken).
    fn signal(&self) -> u32 {
        self.signal.load(Ordering::Acquire)
    }

    /// Offers `source` to the receive callback (see [`EventCell::fill_source`]).
    fn offer_fill_source(&self, source: BufferSource) {
        self.fill_source.store(source as *mut (), Ordering::Release);
    }

    /// Withdraws the offered source: false when a callback took it first (it fills under
    /// the queue lock, or found nothing to fill).
    fn withdraw_fill_source(&self) -> bool {
        !self
            .fill_source
            .swap(ptr::null_mut(), Ordering::AcqRel)
            .is_null()
    }

    /// The buffer a callback filled from a source it took: looked for without the lock, then,
    /// if not there yet, once the lock shows the callback done.
    fn take_filled(&self) -> Option<IoBuf> {
        self.filled.take().or_else(|| {
            drop(self.lock());
            self.filled.take()
        })
    }

    /// Whether a receive would finish at once, with the `filled` slot: what
    /// [`TcpStream::has_indicated`] and the waits read (no lock).
    fn anything(&self) -> bool {
        self.signal() != 0 || self.filled.holds_any()
    }

    /// Takes the offered source, if any (the receive callback, under the queue lock).
    fn take_fill_source(&self) -> Option<BufferSource> {
        let source = self.fill_source.swap(ptr::null_mut(), Ordering::Acquire);
        if source.is_null() {
            return None;
        }
        // SAFETY: only `offer_fill_source` stores a non-null pointer here, a `BufferSource`
        // cast to a data pointer (same size on every target this crate builds for).
        Some(unsafe { core::mem::transmute::<*mut (), BufferSource>(source) })
    }
}

/// The locked queue of an [`EventCell`]: publishes [`Queue::signal`] when dropped.
struct QueueGuard<'a> {
    queue: SpinMutexGuard<'a, Queue>,
    signal: &'a AtomicU32,
}

impl Deref for QueueGuard<'_> {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl DerefMut for QueueGuard<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        // Before the lock goes (the guard field drops after this): a reader of `signal` that
        // finds it stale is one a later wake reaches.
        self.signal.store(self.queue.signal(), Ordering::Release);
    }
}

impl Queue {
    /// A receive would finish at once: data retained, the connection ended, or WSK waits for
    /// a `WskReceive`.
    fn ready(&self) -> bool {
        !self.retained.is_empty() || self.ended.is_some() || self.not_accepted || !self.enabled
    }

    /// What [`EventCell::signal`] says of this state: [`SIGNAL_READY`] and [`SIGNAL_CLOSING`].
    fn signal(&self) -> u32 {
        (u32::from(self.ready()) * SIGNAL_READY) | (u32::from(self.closing) * SIGNAL_CLOSING)
    }
}

/// [`EventCell::signal`] bit: [`Queue::ready`].
const SIGNAL_READY: u32 = 1;
/// [`EventCell::signal`] bit: the close is being issued ([`Queue::closing`]).
const SIGNAL_CLOSING: u32 = 2;

// SAFETY: the raw pointers are a retained chain (WSK's until released, used under the lock)
// and a pinned future's buffer (registered and unregistered under the lock).
unsafe impl Send for Queue {}

/// A stream's event-receive state, in its own nonpaged block.
pub(crate) struct EventCell {
    /// Taken only through [`EventCell::lock`], which keeps `signal` up to date.
    queue: SpinMutex<Queue>,
    /// [`Queue::signal`] of the queue as its last lock holder left it, stored before the lock
    /// is let go: [`TcpStream::has_indicated`] and [`Indicated`] read it without the lock
    /// (one spin lock fewer per message each). A task that registered `waker` and then reads
    /// no bit set is woken by whoever sets one: the setter stores the bit before its wake, and
    /// the waker slot's read-modify-writes order the two (see the loom model
    /// `loom_indicated_sees_the_signal_or_is_woken`).
    signal: AtomicU32,
    /// The [`BufferSource`] of a [`RecvPooled`] waiting with no buffer (as a pointer; null:
    /// none). The receive callback takes it (swaps in null, under the queue lock) to fill a
    /// buffer of it in place rather than retain the chain.
    fill_source: AtomicPtr<()>,
    /// The buffer the callback took from the offered source and filled, for the
    /// [`RecvPooled`] that offered it: data before any chain retained after it. Given under
    /// the queue lock, taken without it; like a `signal` bit, its slot is full before the
    /// callback's wake.
    filled: Spares<IoBuf, 1>,
    waker: AtomicWaker,
    /// The ideal send backlog `WskSendBacklogEvent` indicated last (0: none yet); see
    /// `send_backlog`.
    pub(super) backlog: AtomicUsize,
    /// The task waiting for the next send backlog indication.
    pub(super) backlog_waker: AtomicWaker,
}

/// Frees a stream's event state (null: none). Called with the socket object's last
/// reference, after its close completed.
pub(crate) fn free_cell(cell: *mut EventCell) {
    // SAFETY: the last user is gone (no callback after the close, no future without a
    // handle): the caller's moment.
    unsafe { event_cell::free(cell, EVENTS_TAG) };
}

/// Before `WskCloseSocket`: releases every retained chain and makes the callbacks discard
/// from now on. Called with no WSK call in progress on the socket. IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn before_close(inner: &SocketInner) {
    let cell = inner.events.load(Ordering::Acquire);
    if cell.is_null() {
        return;
    }
    // SAFETY: the cell lives as long as the socket object.
    let cell = unsafe { &*cell };
    let taken = {
        let mut q = cell.lock();
        let q = &mut *q;
        event_cell::take_for_close(&mut q.retained, &mut q.closing)
    };
    // SAFETY: the socket is open (its close is being issued now) and the chains retained.
    unsafe { event_cell::release_all(inner, taken) };
    cell.waker.wake();
}

/// The read half of a split stream is being dropped while the write half lives on: every
/// retained chain goes back to WSK now (not only at the close, which may be far off), and the
/// callbacks push back from now on, so WSK keeps what arrives (the peer sees the window close,
/// as with an IRP-driven stream nobody receives on). Nothing happens after the close was
/// requested (the close releases). IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn reader_gone(inner: &SocketInner) {
    let cell = inner.events.load(Ordering::Acquire);
    if cell.is_null() || !inner.enter_call() {
        return;
    }
    // SAFETY: the cell lives as long as the socket object.
    let cell = unsafe { &*cell };
    let mut released: heapless::Vec<*mut WSK_DATA_INDICATION, RETAINED_MAX> = heapless::Vec::new();
    {
        let mut q = cell.lock();
        q.reader_gone = true;
        while let Some(r) = q.retained.pop_front() {
            let _ = released.push(r.chain);
        }
    }
    for chain in released {
        // SAFETY: inside the call gate (no close can be issued meanwhile) and a chain we
        // retained, no longer queued.
        let _ = unsafe { release(inner, chain) };
    }
    inner.leave_call();
}

/// `WskRelease` of a retained chain.
///
/// # Safety
/// The socket is open and no close can be issued meanwhile; `chain` is retained by us.
unsafe fn release(inner: &SocketInner, chain: *mut WSK_DATA_INDICATION) -> NTSTATUS {
    // SAFETY: the caller's contract.
    unsafe { event_cell::release_indication(inner, chain.cast()) }
}

impl event_cell::RetainedIndication for Retained {
    fn indication(&self) -> PVOID {
        self.chain.cast()
    }
}

/// Copies bytes `[skip, total)` of `chain` into `buf`'s spare room: the bytes copied.
///
/// # Safety
/// `chain` is a live indication chain (being indicated, or retained) of `total` bytes.
unsafe fn copy_out(chain: *mut WSK_DATA_INDICATION, skip: usize, buf: &mut IoBuf) -> usize {
    if skip == 0 && !chain.is_null() {
        // SAFETY: a live chain (caller).
        let link = unsafe { *chain };
        let WSK_DATA_INDICATION {
            Next: next,
            Buffer: buffer,
        } = link;
        // The usual indication: one link, one mapped MDL holding all of it.
        // SAFETY: the chain's MDL (if any) is live.
        if next.is_null() && !buffer.Mdl.is_null() && unsafe { (*buffer.Mdl).Next }.is_null() {
            // SAFETY: as above.
            let count = unsafe { sys::MmGetMdlByteCount(buffer.Mdl) } as usize;
            let offset = buffer.Offset as usize;
            if offset <= count && buffer.Length <= count - offset {
                // SAFETY: as above.
                let base = unsafe { sys::MmGetSystemAddressForMdlSafe(buffer.Mdl, MAP_PRIORITY) };
                if base.is_null() {
                    return 0;
                }
                let n = buffer.Length.min(buf.spare_capacity());
                // SAFETY: `offset <= count`: inside (or just past) the MDL's mapped bytes.
                let first = unsafe { base.cast::<u8>().add(offset) };
                // SAFETY: `offset + n <= count`: mapped bytes, not written while indicated.
                let bytes = unsafe { core::slice::from_raw_parts(first, n) };
                return if buf.extend_from_slice(bytes).is_ok() {
                    n
                } else {
                    0
                };
            }
        }
    }
    let mut copied = 0;
    let mut position = 0;
    let mut link = chain;
    while !link.is_null() && buf.spare_capacity() > 0 {
        // SAFETY: a live chain (caller).
        let WSK_DATA_INDICATION { Next, Buffer } = unsafe { *link };
        let mut mdl = Buffer.Mdl;
        let mut offset = Buffer.Offset as usize;
        let mut left = Buffer.Length;
        while !mdl.is_null() && left > 0 && buf.spare_capacity() > 0 {
            // SAFETY: the chain's MDLs are live and describe locked pages.
            let count = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
            if offset >= count {
                offset -= count;
                // SAFETY: as above.
                mdl = unsafe { (*mdl).Next };
                continue;
            }
            let piece = (count - offset).min(left);
            let (from, to) = (position, position + piece);
            position = to;
            left -= piece;
            let want_from = skip.max(from);
            if want_from < to {
                // SAFETY: as above.
                let base = unsafe { sys::MmGetSystemAddressForMdlSafe(mdl, MAP_PRIORITY) };
                if base.is_null() {
                    return copied;
                }
                let n = (to - want_from).min(buf.spare_capacity());
                let start = offset + (want_from - from);
                // SAFETY: `start < count`: inside the MDL's mapped bytes.
                let first = unsafe { base.cast::<u8>().add(start) };
                // SAFETY: `start + n <= count`: the bytes are mapped and not written while
                // indicated.
                let bytes = unsafe { core::slice::from_raw_parts(first, n) };
                if buf.extend_from_slice(bytes).is_err() {
                    return copied;
                }
                copied += n;
            }
            offset = 0;
            // SAFETY: as above.
            mdl = unsafe { (*mdl).Next };
        }
        link = Next;
    }
    copied
}

/// The event state of the socket named by a callback's context, if receive events are set up.
///
/// # Safety
/// `context` is null or a socket object this crate passed as a socket context.
pub(super) unsafe fn cell_of<'a>(context: PVOID) -> Option<&'a EventCell> {
    let inner = context.cast::<SocketInner>();
    if inner.is_null() {
        return None;
    }
    // SAFETY: the provider calls back only while the socket is open, and the object outlives
    // its close (caller).
    let cell = unsafe { (*inner).events.load(Ordering::Acquire) };
    // SAFETY: a cell lives as long as its socket object.
    unsafe { cell.as_ref() }
}

/// `WskReceiveEvent`: see the module docs. Called by WSK at IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn on_receive(
    context: PVOID,
    _flags: u32,
    indication: *mut WSK_DATA_INDICATION,
    indicated: SIZE_T,
    accepted: *mut SIZE_T,
) -> NTSTATUS {
    // SAFETY: WSK passes the context we gave.
    let Some(cell) = (unsafe { cell_of(context) }) else {
        // Events are enabled only after the state exists: not reached.
        return sys::STATUS_DATA_NOT_ACCEPTED;
    };
    if indication.is_null() {
        // "The socket is no longer functional."
        cell.lock().ended = Some(Ended::Reset);
        cell.waker.wake();
        return sys::STATUS_SUCCESS;
    }
    let status = {
        let mut q = cell.lock();
        let mut taken = 0;
        if q.closing {
            taken = indicated;
        } else if q.reader_gone {
            q.not_accepted = true;
            q.counts.not_accepted += 1;
            // SAFETY: WSK passes a writable count.
            unsafe { accepted.write(0) };
            return sys::STATUS_DATA_NOT_ACCEPTED;
        } else if q.retained.is_empty()
            && let Some(reader) = NonNull::new(q.reader)
        {
            // SAFETY: a registered reader's buffer is pinned and left alone by its future
            // while registered (under this lock).
            let buf = unsafe { &mut *reader.as_ptr() };
            // SAFETY: the chain is being indicated, so live.
            taken = unsafe { copy_out(indication, 0, buf) };
        } else if q.retained.is_empty()
            && let Some(source) = cell.take_fill_source()
            && let Some(mut buf) = source()
        {
            // A `RecvPooled` waits with no buffer: one of its source's, filled in place, saves
            // the retain and its `WskRelease`. (A spare buffer may hold its last bytes.)
            buf.clear();
            // SAFETY: the chain is being indicated, so live.
            taken = unsafe { copy_out(indication, 0, &mut buf) };
            // The slot is empty: the source is offered only after the last filled buffer was
            // taken. Were it not, the copy is dropped and the chain retained whole.
            if taken > 0
                && let Some(not_given) = cell.filled.give(buf)
            {
                drop(not_given);
                taken = 0;
            }
        }
        if taken >= indicated {
            q.counts.consumed += 1;
            // SAFETY: WSK passes a writable count.
            unsafe { accepted.write(indicated) };
            sys::STATUS_SUCCESS
        } else if q.retained.is_full() {
            q.not_accepted = true;
            q.counts.not_accepted += 1;
            // SAFETY: as above.
            unsafe { accepted.write(taken) };
            if taken > 0 {
                sys::STATUS_SUCCESS
            } else {
                sys::STATUS_DATA_NOT_ACCEPTED
            }
        } else {
            q.counts.retained += 1;
            let _ = q.retained.push_back(Retained {
                chain: indication,
                taken,
                total: indicated,
            });
            sys::STATUS_PENDING
        }
    };
    cell.waker.wake();
    status
}

/// `WskDisconnectEvent`: FIN or reset, for the waiting receive. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn on_disconnect(context: PVOID, flags: u32) -> NTSTATUS {
    // SAFETY: WSK passes the context we gave.
    if let Some(cell) = unsafe { cell_of(context) } {
        cell.lock().ended = Some(if flags & sys::WSK_FLAG_ABORTIVE != 0 {
            Ended::Reset
        } else {
            Ended::Fin
        });
        cell.waker.wake();
    }
    sys::STATUS_SUCCESS
}

/// The stream's event state, allocated (about 290 bytes of nonpaged pool) on first use.
/// IRQL <= `DISPATCH_LEVEL`.
pub(super) fn event_cell<'a>(inner: &'a SocketInner, name: &'static str) -> Result<&'a EventCell> {
    let fresh = || EventCell {
        queue: SpinMutex::new(Queue {
            enabled: false,
            retained: heapless::Deque::new(),
            reader: ptr::null_mut(),
            not_accepted: false,
            closing: false,
            reader_gone: false,
            ended: None,
            counts: EventCounts::default(),
        }),
        // Not enabled yet: a receive would post an IRP at once.
        signal: AtomicU32::new(SIGNAL_READY),
        fill_source: AtomicPtr::new(ptr::null_mut()),
        filled: Spares::new(),
        waker: AtomicWaker::new(),
        backlog: AtomicUsize::new(0),
        backlog_waker: AtomicWaker::new(),
    };
    event_cell::install(&inner.events, fresh, EVENTS_TAG, name)
}

/// Prepares a socket object that WSK will hand receive indications from its acceptance
/// (`TcpListener::enable_event_driven_accepts`: events passed on from the listener): its
/// event state, allocated and marked on, so the first indication finds it and
/// [`TcpStream::enable_receive_events`] asks WSK nothing. IRQL <= `DISPATCH_LEVEL`.
pub(super) fn prepare_for_passed_on_events(inner: &SocketInner, name: &'static str) -> Result<()> {
    event_cell(inner, name)?.lock().enabled = true;
    Ok(())
}

/// `SO_WSK_EVENT_CALLBACK` enabling `events` on the stream's socket, without an IRP (as
/// enabling requires): the provider's status (`STATUS_NOT_IMPLEMENTED` without
/// `WskControlSocket`). IRQL <= `DISPATCH_LEVEL`.
pub(super) fn enable_events(
    inner: &SocketInner,
    events: u32,
    name: &'static str,
) -> Result<NTSTATUS> {
    if inner.wsk().is_null() || !inner.enter_call() {
        return Err(Error::new(ErrorKind::InvalidState, name));
    }
    let status = crate::event_control::enable_event_callbacks(inner, events);
    inner.leave_call();
    Ok(status)
}

/// Marks receive events on for a stream; `static_events`: the client's static ones. When
/// `WskReceiveEvent` was static, the callback may have refused indications before the state
/// existed (`STATUS_DATA_NOT_ACCEPTED`, see `crate::event_control`): WSK then waits for a
/// `WskReceive`, which the first receive posts.
fn enabled_with_static(cell: &EventCell, static_events: u32) {
    let mut q = cell.lock();
    q.enabled = true;
    if static_events & sys::WSK_EVENT_RECEIVE != 0 {
        q.not_accepted = true;
    }
}

impl TcpStream {
    /// Switches the stream's receive to WSK event callbacks (`SO_WSK_EVENT_CALLBACK` with
    /// `WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT`); receive with [`TcpStream::recv_events`].
    /// `Ok(true)`: enabled (again: a no-op); `Ok(false)`: the provider has no event callbacks
    /// (Wine 8), and [`TcpStream::recv_events`] receives with IRPs. Allocates the stream's
    /// event state (about 290 bytes of nonpaged pool) on first use.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let _event_driven = stream.enable_receive_events()?;
    /// let (n, buf) = stream.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// let _data = &buf[..n?];
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` before the stream is connected or after close; `NoResources`; a
    /// provider refusal other than "not supported".
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP).
    pub fn enable_receive_events(&self) -> Result<bool> {
        const NAME: &str = "enable_receive_events";
        let inner = self.handle.inner();
        let cell = event_cell(inner, NAME)?;
        if cell.lock().enabled {
            return Ok(true);
        }
        if inner.wsk().is_null() {
            return Err(Error::new(ErrorKind::InvalidState, NAME));
        }
        // SAFETY: the client outlives its socket objects.
        let static_events = unsafe { inner.client().as_ref() }.static_events();
        let missing = (sys::WSK_EVENT_RECEIVE | sys::WSK_EVENT_DISCONNECT) & !static_events;
        if missing == 0 {
            // Enabled at creation (`WskClient::set_static_event_callbacks`): nothing to ask.
            enabled_with_static(cell, static_events);
            return Ok(true);
        }
        let status = enable_events(inner, missing, NAME)?;
        match status {
            sys::STATUS_SUCCESS => {
                enabled_with_static(cell, static_events);
                Ok(true)
            }
            sys::STATUS_NOT_SUPPORTED | sys::STATUS_NOT_IMPLEMENTED => Ok(false),
            other => Err(Error::from_status(other, NAME)),
        }
    }

    /// Switches the stream's receive back from event callbacks to `WskReceive` IRPs: disables
    /// `WskReceiveEvent`, then `WskDisconnectEvent` (`SO_WSK_EVENT_CALLBACK` with
    /// `WSK_EVENT_DISABLE`, one event at a time as WSK requires), each with an IRP that WSK
    /// completes only once no call of that callback is in progress any more
    /// ("`SO_WSK_EVENT_CALLBACK`":
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-wsk-event-callback>;
    /// without an IRP a disable racing its callback would return `STATUS_EVENT_PENDING` and
    /// leave the end of that call unknown). After it returns no callback runs for the stream:
    /// [`TcpStream::recv_events`] first takes what the callbacks left (retained indications,
    /// the FIN or reset they saw), then receives with IRPs, in order. No-op when receive events
    /// are off.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.enable_receive_events()?;
    /// // ... a burst handled by the callbacks ...
    /// stream.disable_receive_events().await?;
    /// let (n, _buf) = stream.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// let _ = n?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when the events were enabled statically
    /// (`WskClient::set_static_event_callbacks`: WSK cannot disable those); `InvalidState`
    /// after close or with another control operation in flight; provider errors.
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub async fn disable_receive_events(&self) -> Result<()> {
        const NAME: &str = "disable_receive_events";
        let inner = self.handle.inner();
        let cell = inner.events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which `self` keeps.
        let Some(cell) = (unsafe { cell.as_ref() }) else {
            return Ok(());
        };
        if !cell.lock().enabled {
            return Ok(());
        }
        // SAFETY: the client outlives its socket objects.
        let static_events = unsafe { inner.client().as_ref() }.static_events();
        if static_events & (sys::WSK_EVENT_RECEIVE | sys::WSK_EVENT_DISCONNECT) != 0 {
            return Err(Error::new(ErrorKind::InvalidInput, NAME));
        }
        for event in [sys::WSK_EVENT_RECEIVE, sys::WSK_EVENT_DISCONNECT] {
            crate::options::disable_event(&self.handle, event, NAME).await?;
        }
        cell.lock().enabled = false;
        // A receive waiting for the callbacks goes on with an IRP.
        cell.waker.wake();
        Ok(())
    }

    /// What the receive callbacks did so far ([`EventCounts`]); all zero before
    /// [`TcpStream::enable_receive_events`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (takes the stream's spin lock).
    #[must_use]
    pub fn receive_event_counts(&self) -> EventCounts {
        let cell = self.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which `self` keeps.
        unsafe { cell.as_ref() }.map_or(EventCounts::default(), |c| c.lock().counts)
    }

    /// Receives into `buf` what the receive event callbacks indicate (see the crate docs'
    /// [event callbacks](crate#event-callbacks)): copied in place by the callback when this
    /// future waits, or from a retained indication, released once copied. Without receive
    /// events enabled (or after back-pressure) it is an ordinary [`TcpStream::recv`]. Returns
    /// the bytes received (0: the peer sent FIN) and the buffer.
    ///
    /// One receive at a time per stream. Dropping the future loses what was already copied
    /// into its buffer, as dropping a [`Recv`] does.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.enable_receive_events()?;
    /// let mut buf = wsk_net::IoBuf::with_capacity(4096)?;
    /// loop {
    ///     let (n, b) = stream.recv_events(buf).await;
    ///     buf = b;
    ///     if n? == 0 {
    ///         break; // FIN
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or with another receive waiting; `ConnectionReset` when the
    /// peer reset; as [`TcpStream::recv`] when it posts one.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_events(&self, mut buf: IoBuf) -> RecvEvents<'_> {
        buf.clear();
        RecvEvents {
            stream: self,
            buf: Some(buf),
            irp: None,
            registered: false,
            _pinned: PhantomPinned,
        }
    }
}

impl TcpStream {
    /// Whether a [`TcpStream::recv_events`] would finish without waiting: indicated data is
    /// retained, the peer ended the connection, or WSK waits for a receive (back-pressure).
    /// Always true without receive events (a receive IRP is the way to wait then).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (reads what the stream's last lock holder published; no lock).
    #[must_use]
    pub fn has_indicated(&self) -> bool {
        let cell = self.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which `self` keeps.
        unsafe { cell.as_ref() }
            .is_none_or(|c| c.signal() & SIGNAL_READY != 0 || c.filled.holds_any())
    }

    /// Waits, holding no buffer, until [`TcpStream::has_indicated`] is true: an idle
    /// event-driven connection needs no receive buffer (take one when this returns). One
    /// waiter per stream, and not while a [`RecvEvents`] waits.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.enable_receive_events()?;
    /// stream.indicated().await; // no buffer held while idle
    /// let (n, _buf) = stream.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// n?;
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn indicated(&self) -> Indicated<'_> {
        Indicated { stream: self }
    }

    /// Waits for data holding no buffer, as [`TcpStream::indicated`], and receives it into a
    /// spare buffer: when data comes while this waits and nothing is retained before it, the
    /// receive callback takes a buffer from `spare` and copies the indication into it in place
    /// (consumed: no retained chain, no `WskRelease`); when `spare` has none at hand, or data
    /// was retained, or at FIN or reset, back-pressure or with events off, this takes a buffer
    /// from `any` and continues as [`TcpStream::recv_events`] into it. Returns the bytes
    /// received (0: FIN) and the buffer (`None` only when `any` had none: `NoResources`).
    ///
    /// `spare` runs at `DISPATCH_LEVEL` inside the receive callback, under the stream's spin
    /// lock: it must neither wait nor use this stream, and should not allocate (a
    /// [`Spares::take`](crate::Spares::take): with many connections indicated at once, the
    /// indications past the spares are retained, as without this, rather than each allocating
    /// a buffer). `any` runs in the task (a spare or an [`IoBuf::with_capacity`]). One receive
    /// at a time per stream; dropping the future loses what the callback already copied for
    /// it, as dropping a [`RecvEvents`] does.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// use wsk_net::{IoBuf, Spares};
    /// static SPARES: Spares<IoBuf, 8> = Spares::new();
    /// fn spare() -> Option<IoBuf> {
    ///     SPARES.take()
    /// }
    /// fn any() -> Option<IoBuf> {
    ///     SPARES.take().or_else(|| IoBuf::with_capacity(4096).ok())
    /// }
    /// stream.enable_receive_events()?;
    /// let (n, buf) = stream.recv_events_pooled(spare, any).await;
    /// let n = n?;
    /// if let Some(buf) = buf {
    ///     // ... use buf[..n] ...
    ///     drop(SPARES.give(buf));
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `NoResources` when `any` had no buffer; otherwise as [`TcpStream::recv_events`].
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_events_pooled(&self, spare: BufferSource, any: BufferSource) -> RecvPooled<'_> {
        RecvPooled {
            stream: self,
            spare,
            any,
            inner: None,
            offered: false,
        }
    }
}

/// Where [`TcpStream::recv_events_pooled`] takes its buffers: in the receive callback (at
/// `DISPATCH_LEVEL`, under the stream's spin lock), or in the future.
pub type BufferSource = fn() -> Option<IoBuf>;

/// The future of [`TcpStream::recv_events_pooled`].
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct RecvPooled<'a> {
    stream: &'a TcpStream,
    /// What the callback fills (offered to it while this waits).
    spare: BufferSource,
    /// What this takes a buffer from when it receives itself.
    any: BufferSource,
    /// The receive it continues as once it took a buffer itself.
    inner: Option<RecvEvents<'a>>,
    /// `spare` is offered to the callback ([`EventCell::fill_source`]).
    offered: bool,
}

impl Future for RecvPooled<'_> {
    type Output = (Result<usize>, Option<IoBuf>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `inner` is never moved out of the pinned future (it is polled in place and
        // dropped with it).
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(inner) = this.inner.as_mut() {
            // SAFETY: `inner` lives in the pinned future and never moves (above).
            let inner = unsafe { Pin::new_unchecked(inner) };
            return inner.poll(cx).map(|(result, buf)| (result, Some(buf)));
        }
        let cell = this.stream.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the stream keeps.
        if let Some(cell) = unsafe { cell.as_ref() } {
            if !this.offered && !cell.anything() {
                // Nothing to take yet: offer the source, then wait. A callback that takes it
                // fills the `filled` slot before its wake.
                cell.offer_fill_source(this.spare);
                this.offered = true;
            }
            if this.offered {
                if !cell.anything() {
                    cell.waker.register(cx.waker());
                    // Read again after registering: the callback fills the slot (or sets a
                    // signal bit) before its wake.
                    if !cell.anything() {
                        return Poll::Pending;
                    }
                }
                this.offered = false;
                if !cell.withdraw_fill_source()
                    && let Some(buf) = cell.take_filled()
                {
                    return Poll::Ready((Ok(buf.len()), Some(buf)));
                }
            }
        }
        // Retained data, the end, back-pressure, events off, or closing: a receive into a
        // buffer of `any`.
        let Some(buf) = (this.any)() else {
            return Poll::Ready((
                Err(Error::new(ErrorKind::NoResources, "recv_events_pooled")),
                None,
            ));
        };
        let inner = this.inner.insert(this.stream.recv_events(buf));
        // SAFETY: as above: in place in the pinned future.
        let inner = unsafe { Pin::new_unchecked(inner) };
        inner.poll(cx).map(|(result, buf)| (result, Some(buf)))
    }
}

impl Drop for RecvPooled<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.offered {
            return;
        }
        let cell = self.stream.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the stream keeps.
        if let Some(cell) = unsafe { cell.as_ref() }
            && !cell.withdraw_fill_source()
        {
            // A callback took the source: what it filled (if anything) is lost with this
            // receive, as a dropped `RecvEvents`' buffer is.
            drop(cell.take_filled());
        }
    }
}

/// The future of [`TcpStream::indicated`].
///
/// # IRQL
/// Poll at <= `DISPATCH_LEVEL`.
pub struct Indicated<'a> {
    stream: &'a TcpStream,
}

impl Future for Indicated<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let cell = self.stream.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the stream keeps.
        let Some(cell) = (unsafe { cell.as_ref() }) else {
            return Poll::Ready(());
        };
        // Already signalled (the usual case when woken): no waker to register.
        if cell.signal() != 0 {
            return Poll::Ready(());
        }
        cell.waker.register(cx.waker());
        // Read again after registering: a bit set since is seen here, or its setter (who
        // stores it before waking) wakes the waker just registered.
        if cell.signal() != 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl TcpListener {
    /// Accepts a connection and enables its receive events
    /// ([`TcpStream::enable_receive_events`]): the accepted stream of an event-driven
    /// listener is event-driven too where the provider supports it.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// let (stream, _peer) = listener.accept_event_driven().await?;
    /// let (n, _buf) = stream.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// n?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpListener::accept`] and [`TcpStream::enable_receive_events`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn accept_event_driven(&self) -> Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.accept().await?;
        stream.enable_receive_events()?;
        Ok((stream, peer))
    }
}

/// The future of [`TcpStream::recv_events`].
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct RecvEvents<'a> {
    stream: &'a TcpStream,
    /// The buffer; registered with the callback (by address) while waiting.
    buf: Option<IoBuf>,
    /// The IRP receive this became (events off, or back-pressure).
    irp: Option<Recv<'a>>,
    registered: bool,
    /// The callback writes into `buf` through its address: it must not move.
    _pinned: PhantomPinned,
}

impl RecvEvents<'_> {
    /// Takes the registration back (under the lock).
    fn unregister(&mut self, q: &mut Queue) {
        if self.registered {
            q.reader = ptr::null_mut();
            self.registered = false;
        }
    }

    /// The result with the buffer.
    fn finish(&mut self, result: Result<usize>) -> Poll<(Result<usize>, IoBuf)> {
        match self.buf.take() {
            Some(buf) => Poll::Ready((result, buf)),
            // Polled again after it returned: stays pending, as `Recv`.
            None => Poll::Pending,
        }
    }
}

impl Future for RecvEvents<'_> {
    type Output = (Result<usize>, IoBuf);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const NAME: &str = "recv_events";
        // SAFETY: nothing is moved out of the pinned future; `buf` stays where it is while
        // registered (it is taken only after unregistering).
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(irp) = this.irp.as_mut() {
            return Pin::new(irp).poll(cx);
        }
        let inner = this.stream.handle.inner();
        let cell = inner.events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the stream keeps.
        let Some(cell) = (unsafe { cell.as_ref() }) else {
            return this.post_receive(cx);
        };
        if !inner.enter_call() {
            if this.registered {
                let mut q = cell.lock();
                this.unregister(&mut q);
            }
            return this.finish(Err(Error::new(ErrorKind::InvalidState, NAME)));
        }
        let mut done: heapless::Vec<*mut WSK_DATA_INDICATION, RETAINED_MAX> = heapless::Vec::new();
        let outcome = {
            let mut q = cell.lock();
            let Some(buf) = this.buf.as_mut() else {
                drop(q);
                inner.leave_call();
                return Poll::Pending;
            };
            if this.registered && !buf.is_empty() {
                // Filled in place by the callback.
                this.unregister(&mut q);
                let n = this.buf.as_ref().map_or(0, IoBuf::len);
                Some(Ok(n))
            } else if !q.reader.is_null() && !this.registered {
                Some(Err(Error::new(ErrorKind::InvalidState, NAME)))
            } else if !q.retained.is_empty() {
                this.unregister(&mut q);
                let Some(buf) = this.buf.as_mut() else {
                    unreachable!("checked above")
                };
                while buf.spare_capacity() > 0 {
                    let Some(front) = q.retained.front_mut() else {
                        break;
                    };
                    // SAFETY: a retained chain is live until we release it.
                    front.taken += unsafe { copy_out(front.chain, front.taken, buf) };
                    if front.taken < front.total {
                        break;
                    }
                    if let Some(r) = q.retained.pop_front() {
                        let _ = done.push(r.chain);
                    }
                }
                Some(Ok(buf.len()))
            } else if let Some(ended) = q.ended {
                this.unregister(&mut q);
                Some(match ended {
                    Ended::Fin => Ok(0),
                    Ended::Reset => Err(Error::from_status(sys::STATUS_CONNECTION_RESET, NAME)),
                })
            } else if q.not_accepted {
                // Back-pressure: WSK waits for a WskReceive, which lifts it.
                q.not_accepted = false;
                this.unregister(&mut q);
                None
            } else if !q.enabled {
                // Never enabled, or disabled (and what the callbacks left is taken): IRPs.
                this.unregister(&mut q);
                None
            } else {
                q.reader = ptr::from_mut(buf);
                this.registered = true;
                // Registered under the lock, so only when about to wait: the callback changes
                // the queue under it and wakes after, so it finds this waker.
                cell.waker.register(cx.waker());
                drop(q);
                inner.leave_call();
                return Poll::Pending;
            }
        };
        for chain in done {
            // SAFETY: inside the call gate (no close can be issued) and a chain we retained,
            // no longer queued.
            let _ = unsafe { release(inner, chain) };
        }
        inner.leave_call();
        match outcome {
            Some(result) => this.finish(result),
            None => this.post_receive(cx),
        }
    }
}

impl RecvEvents<'_> {
    /// Continues as an ordinary receive (a `WskReceive` IRP).
    fn post_receive(&mut self, cx: &mut Context<'_>) -> Poll<(Result<usize>, IoBuf)> {
        let Some(buf) = self.buf.take() else {
            return Poll::Pending;
        };
        let irp = self.irp.insert(self.stream.recv(buf));
        Pin::new(irp).poll(cx)
    }
}

impl Drop for RecvEvents<'_> {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let cell = self.stream.handle.inner().events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object.
        if let Some(cell) = unsafe { cell.as_ref() } {
            let mut q = cell.lock();
            self.unregister(&mut q);
        }
    }
}

/// loom model of [`EventCell::signal`]: `RUSTFLAGS="--cfg loom" cargo test -p wsk-net
/// --release --lib loom`.
#[cfg(all(test, loom))]
mod loom_tests {
    extern crate std;

    use std::sync::Arc as StdArc;
    use std::task::{Wake, Waker};

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;
    use wsk_executor::raw::AtomicWaker;

    /// A waker that records its wake.
    struct Flag(Arc<AtomicBool>);

    impl Wake for Flag {
        fn wake(self: StdArc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// The parts of an [`super::EventCell`] the protocol uses: the queue (whether data is
    /// retained) under its lock, the published signal, the waker.
    struct Cell {
        queue: Mutex<bool>,
        signal: AtomicU32,
        waker: AtomicWaker,
    }

    /// `on_receive` retaining a chain (the signal stored before the lock goes, as
    /// `QueueGuard`'s drop does, then the wake) against `Indicated::poll` (the signal read,
    /// the waker registered, the signal read again): the reader sees the data or is woken.
    #[test]
    fn loom_indicated_sees_the_signal_or_is_woken() {
        loom::model(|| {
            let cell = Arc::new(Cell {
                queue: Mutex::new(false),
                signal: AtomicU32::new(0),
                waker: AtomicWaker::new(),
            });
            let woken = Arc::new(AtomicBool::new(false));
            let callback = {
                let cell = cell.clone();
                thread::spawn(move || {
                    {
                        let mut retained = cell.queue.lock().unwrap();
                        *retained = true;
                        cell.signal.store(
                            u32::from(*retained) * super::SIGNAL_READY,
                            Ordering::Release,
                        );
                    }
                    cell.waker.wake();
                })
            };
            let waker = Waker::from(StdArc::new(Flag(woken.clone())));
            let ready = cell.signal.load(Ordering::Acquire) != 0 || {
                cell.waker.register(&waker);
                cell.signal.load(Ordering::Acquire) != 0
            };
            callback.join().unwrap();
            assert!(ready || woken.load(Ordering::SeqCst), "a signal was lost");
        });
    }

    /// The pooled receive's hand-over: the source offered through an atomic, taken by the
    /// callback under the lock, the filled buffer in a slot (`EMPTY`/`FULL`, the value in a
    /// loom cell so that a read not ordered after the write is a reported race).
    struct Pooled {
        /// How many chains the callback retained.
        queue: Mutex<u32>,
        signal: AtomicU32,
        source: AtomicUsize,
        slot: AtomicUsize,
        value: UnsafeCell<u32>,
        waker: AtomicWaker,
    }

    const EMPTY: usize = 0;
    const FULL: usize = 2;
    /// What the callback copies.
    const DATA: u32 = 42;

    impl Pooled {
        fn new() -> Self {
            Self {
                queue: Mutex::new(0),
                signal: AtomicU32::new(0),
                source: AtomicUsize::new(0),
                slot: AtomicUsize::new(EMPTY),
                value: UnsafeCell::new(0),
                waker: AtomicWaker::new(),
            }
        }

        /// `on_receive`: fills the slot when it takes the offered source, else retains.
        fn indicate(&self) {
            {
                let mut retained = self.queue.lock().unwrap();
                if *retained == 0 && self.source.swap(0, Ordering::Acquire) != 0 {
                    // SAFETY: (model) the slot is empty: the callback's alone.
                    self.value.with_mut(|v| unsafe { *v = DATA });
                    self.slot.store(FULL, Ordering::Release);
                } else {
                    *retained += 1;
                }
                self.signal.store(
                    u32::from(*retained > 0) * super::SIGNAL_READY,
                    Ordering::Release,
                );
            }
            self.waker.wake();
        }

        fn anything(&self) -> bool {
            self.signal.load(Ordering::Acquire) != 0 || self.slot.load(Ordering::Acquire) == FULL
        }

        /// `Spares::take` of the slot (one taker in the model).
        fn take_slot(&self) -> Option<u32> {
            if self.slot.load(Ordering::Acquire) != FULL {
                return None;
            }
            // SAFETY: (model) FULL: written by the callback, ordered by the acquire above.
            let value = self.value.with(|v| unsafe { *v });
            self.slot.store(EMPTY, Ordering::Release);
            Some(value)
        }

        /// `take_filled`: without the lock, then once the lock shows the callback done.
        fn take_filled(&self) -> Option<u32> {
            self.take_slot().or_else(|| {
                drop(self.queue.lock().unwrap());
                self.take_slot()
            })
        }

        /// `withdraw_fill_source`: false when the callback took it first.
        fn withdraw(&self) -> bool {
            self.source.swap(0, Ordering::AcqRel) != 0
        }
    }

    /// `RecvPooled` waiting (offer, register, look) against one indication, then its wake:
    /// the data is either handed over in the slot or retained, exactly one of them, and a
    /// receive that went to sleep is woken.
    #[test]
    fn loom_pooled_receive_gets_the_data_once() {
        loom::model(|| {
            let cell = Arc::new(Pooled::new());
            let woken = Arc::new(AtomicBool::new(false));
            let callback = {
                let cell = cell.clone();
                thread::spawn(move || cell.indicate())
            };
            let waker = Waker::from(StdArc::new(Flag(woken.clone())));
            cell.source.store(1, Ordering::Release);
            let slept = !cell.anything() && {
                cell.waker.register(&waker);
                !cell.anything()
            };
            callback.join().unwrap();
            assert!(!slept || woken.load(Ordering::SeqCst), "a wake was lost");
            let filled = if cell.withdraw() {
                None
            } else {
                cell.take_filled()
            };
            let retained = *cell.queue.lock().unwrap();
            match filled {
                Some(value) => assert_eq!((value, retained), (DATA, 0), "filled and retained"),
                None => assert_eq!(retained, 1, "the data was lost"),
            }
            assert_eq!(
                cell.slot.load(Ordering::SeqCst),
                EMPTY,
                "a buffer left behind"
            );
        });
    }

    /// A `RecvPooled` dropped while it waits, racing an indication: the drop takes back what
    /// was filled, or the data is retained for the next receive; no buffer stays in the slot.
    #[test]
    fn loom_dropped_pooled_receive_strands_nothing() {
        loom::model(|| {
            let cell = Arc::new(Pooled::new());
            cell.source.store(1, Ordering::Release);
            let callback = {
                let cell = cell.clone();
                thread::spawn(move || cell.indicate())
            };
            let dropped = if cell.withdraw() {
                None
            } else {
                cell.take_filled()
            };
            callback.join().unwrap();
            let retained = *cell.queue.lock().unwrap();
            assert!(
                dropped.is_some() != (retained == 1),
                "dropped {dropped:?}, retained {retained}"
            );
            assert_eq!(
                cell.slot.load(Ordering::SeqCst),
                EMPTY,
                "a buffer left behind"
            );
        });
    }
}
