//! Accept indications on a [`TcpListener`]: WSK's `WskAcceptEvent` callback instead of a
//! pre-posted `WskAccept` IRP per connection.
//!
//! [`TcpListener::enable_accept_events`] turns the callback on (`SO_WSK_EVENT_CALLBACK` with
//! `WSK_EVENT_ACCEPT`); [`TcpListener::accept_events`] then takes the connections it
//! indicated. Every listener this crate creates names its socket object as the WSK socket
//! context and this module's `WSK_CLIENT_LISTEN_DISPATCH`, so enabling needs no new socket.
//!
//! WDK: "`PFN_WSK_ACCEPT_EVENT` callback function (wsk.h)". WSK calls the callback at IRQL
//! <= `DISPATCH_LEVEL` (`WSK_FLAG_AT_DISPATCH_LEVEL` when at `DISPATCH_LEVEL`) with the
//! accepted socket and both addresses; returning `STATUS_SUCCESS` with
//! `*AcceptSocketContext` and `*AcceptSocketDispatch` set makes the socket ours (to close with
//! `WskCloseSocket`); `STATUS_REQUEST_NOT_ACCEPTED` makes WSK close it (the peer sees a
//! reset). A null `AcceptSocket` means the listening socket no longer works.
//!
//! What the callback does, under the listener's spin lock, without allocating: it takes one
//! of the **spare socket objects** allocated in advance (by the enabling call, and again by
//! each [`AcceptEvents`] that takes a connection, in task context), names it as the accepted
//! socket's context with the connection callbacks of `crate::tcp::events` (as every stream
//! this crate accepts), queues the socket with the peer's address, and wakes the waiting
//! task. The spares and the queued
//! connections together never exceed the queue's capacity ([`ACCEPT_QUEUE_DEFAULT`], or the
//! one given to [`TcpListener::enable_accept_events_with`], at most [`ACCEPT_QUEUE_MAX`]):
//! with no spare left the callback **refuses** (`STATUS_REQUEST_NOT_ACCEPTED`; the peer sees
//! a reset) and counts it ([`AcceptEventCounts::refused`]).
//!
//! Receive events on an indicated connection: with [`TcpListener::enable_event_driven_accepts`]
//! the listener enables `WskReceiveEvent` and `WskDisconnectEvent` along with
//! `WskAcceptEvent`, which WSK passes on to every socket it accepts through the callback, and
//! every spare carries its receive event state (marked on) before it is given to WSK: the
//! first indication finds it, and [`TcpStream::enable_receive_events`] asks WSK nothing. Not
//! the alternative, enabling them on the stream once taken: that call could reach WSK before
//! WSK has recorded the dispatch table the callback returned (the host provider then refuses
//! it with `STATUS_INVALID_PARAMETER`; the echo driver's event test caught it once in a few
//! runs). [`TcpListener::enable_accept_events`] leaves the streams' receive alone (IRPs).
//!
//! Close: when the listener's `WskCloseSocket` is issued (its close, its drop, or the client's
//! deregistration at unload) the callback refuses from then on, the spares are freed, and
//! every queued connection nobody took is adopted and closed abortively (the peer sees a
//! reset). Nothing WSK holds is freed: a queued connection's socket object is freed only after
//! its own close completed. The state lives in three nonpaged blocks per listener (the state
//! and two rings of the capacity, allocated by the enabling call, freed with the listener's
//! socket object after its close).
//!
//! Where the provider lacks event callbacks (the host kernel's in-memory network, Wine 8's
//! netio.sys), enabling reports `Ok(false)` and [`TcpListener::accept_events`] is an ordinary
//! [`TcpListener::accept`].

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll};

use wsk_executor::raw::AtomicWaker;
use wsk_executor::raw::sync::Ordering;
use wsk_executor::sync::SpinMutex;
use wsk_sys::{
    self as sys, NTSTATUS, PVOID, SOCKADDR, WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_CLIENT_LISTEN_DISPATCH, WSK_SOCKET,
};

use super::{Accept, TcpListener, TcpStream};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CloseMode, Kind, SocketInner};
use crate::socket::Handle;

/// Pool tag of accept-event state blocks (`WskA`).
const ACCEPT_TAG: u32 = sys::pool_tag(*b"WskA");

/// The queue capacity [`TcpListener::enable_accept_events`] gives: connections indicated and
/// not yet taken, plus the spare socket objects waiting for the next indications.
pub const ACCEPT_QUEUE_DEFAULT: usize = 8;

/// The name errors of the enabling calls carry.
const NAME: &str = "enable_accept_events";

/// The largest queue capacity [`TcpListener::enable_accept_events_with`] takes.
pub const ACCEPT_QUEUE_MAX: usize = 1024;

/// The event callbacks of every listener this crate creates.
static LISTEN_EVENTS: WSK_CLIENT_LISTEN_DISPATCH = WSK_CLIENT_LISTEN_DISPATCH {
    WskAcceptEvent: Some(on_accept),
    WskInspectEvent: None,
    WskAbortEvent: None,
};

/// The socket context and client dispatch table a listener is created with: its socket
/// object, and [`LISTEN_EVENTS`].
pub(crate) fn listen_dispatch(inner: NonNull<SocketInner>) -> (PVOID, *const core::ffi::c_void) {
    (inner.as_ptr().cast(), (&raw const LISTEN_EVENTS).cast())
}

/// A fixed-capacity FIFO of plain values in its own nonpaged block, allocated when the
/// listener enables accept events (so its capacity is the caller's, not a compile-time
/// bound); freed by [`Ring::free`].
struct Ring<T: Copy> {
    slots: NonNull<T>,
    capacity: usize,
    head: usize,
    len: usize,
}

impl<T: Copy> Ring<T> {
    /// An empty ring of `capacity` (at least 1) values; `None` without memory.
    /// IRQL <= `DISPATCH_LEVEL`.
    fn new(capacity: usize) -> Option<Self> {
        let bytes = capacity.checked_mul(size_of::<T>())?;
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
        let mem = unsafe { sys::allocate_nonpaged(bytes, ACCEPT_TAG) }.cast::<T>();
        Some(Self {
            slots: NonNull::new(mem)?,
            capacity,
            head: 0,
            len: 0,
        })
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`; gives it back when full.
    fn push_back(&mut self, value: T) -> core::result::Result<(), T> {
        if self.len == self.capacity {
            return Err(value);
        }
        let index = (self.head + self.len) % self.capacity;
        // SAFETY: `index < capacity`: inside the block.
        let slot = unsafe { self.slots.as_ptr().add(index) };
        // SAFETY: an in-bounds, aligned (pool memory is 16-aligned; `T` is at most pointer-
        // aligned here) slot nobody else uses; `T: Copy` needs no drop of what was there.
        unsafe { slot.write(value) };
        self.len += 1;
        Ok(())
    }

    /// Takes the oldest value.
    fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        // SAFETY: `head < capacity`: inside the block.
        let slot = unsafe { self.slots.as_ptr().add(self.head) };
        // SAFETY: the slot was written by `push_back` and not taken since.
        let value = unsafe { slot.read() };
        self.head = (self.head + 1) % self.capacity;
        self.len -= 1;
        Some(value)
    }

    /// Frees the block (what it still holds is plain data, dropped with it).
    /// IRQL <= `DISPATCH_LEVEL`.
    fn free(self) {
        // SAFETY: the block `new` allocated with this tag, freed once (by value).
        unsafe { sys::ExFreePoolWithTag(self.slots.as_ptr().cast(), ACCEPT_TAG) };
    }
}

/// A connection the callback accepted and nobody took yet.
#[derive(Clone, Copy)]
struct Indicated {
    /// Its socket object (a former spare), named as the socket's context; owns its one
    /// reference.
    inner: NonNull<SocketInner>,
    /// The WSK socket, ours since the callback returned `STATUS_SUCCESS`.
    socket: *mut WSK_SOCKET,
    /// The peer's address (`None`: a family this crate does not know).
    remote: Option<SocketAddr>,
}

/// What the spin lock guards.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags of the event protocol"
)]
struct Queue {
    /// The callback is on.
    enabled: bool,
    /// The listener's close is being issued: the callback refuses, nothing is queued any more.
    closing: bool,
    /// WSK indicated a null socket: the listener no longer works.
    failed: bool,
    /// An [`AcceptEvents`] is registered as the waiter.
    waiting: bool,
    /// The listener passes its receive events on to the sockets it accepts
    /// ([`TcpListener::enable_event_driven_accepts`]): each spare has its event state ready.
    event_driven: bool,
    /// Spares plus queued connections never exceed this (the rings' capacity).
    capacity: usize,
    /// Socket objects allocated in advance, each with its one reference, no WSK socket yet.
    spares: Ring<NonNull<SocketInner>>,
    /// Accepted connections, oldest first.
    indicated: Ring<Indicated>,
    counts: AcceptEventCounts,
}

impl Queue {
    /// Spare socket objects missing to reach the capacity.
    fn missing(&self) -> usize {
        self.capacity
            .saturating_sub(self.spares.len() + self.indicated.len())
    }
}

// SAFETY: the raw pointers are socket objects we own a reference on and WSK sockets that are
// ours, used under the lock or after being taken out of it.
unsafe impl Send for Queue {}

/// What a listener's accept callback did so far (for diagnostics, tests and benches):
/// [`TcpListener::accept_event_counts`].
///
/// ```no_run
/// # fn demo(listener: &wsk_net::TcpListener) {
/// let wsk_net::AcceptEventCounts { accepted, refused } = listener.accept_event_counts();
/// # let _ = (accepted, refused);
/// # }
/// ```
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptEventCounts {
    /// Connections accepted into the queue (`STATUS_SUCCESS`).
    pub accepted: u64,
    /// Connections refused because the queue was full, or the listener closing
    /// (`STATUS_REQUEST_NOT_ACCEPTED`: WSK closed them and the peer saw a reset).
    pub refused: u64,
}

/// A listener's accept-event state, in its own nonpaged block.
pub(crate) struct AcceptCell {
    queue: SpinMutex<Queue>,
    waker: AtomicWaker,
}

/// Frees a listener's accept-event state (null: none), with any spare it still holds. Called
/// with the socket object's last reference, after its close completed (the close already took
/// every queued connection out: `before_close`).
pub(crate) fn free_cell(cell: *mut AcceptCell) {
    if cell.is_null() {
        return;
    }
    // SAFETY: allocated and initialised by `cell_or_new`; the last user is gone (no callback
    // after the close, no future without a handle).
    let cell_ref = unsafe { &*cell };
    release_spares(cell_ref);
    // SAFETY: as above; read out once, here, and the block freed just below without a drop.
    let AcceptCell { queue, waker } = unsafe { cell.read() };
    drop(waker);
    let queue = queue.into_inner();
    queue.spares.free();
    queue.indicated.free();
    // SAFETY: the pool block allocated with this tag; its contents were moved out above.
    unsafe { sys::ExFreePoolWithTag(cell.cast(), ACCEPT_TAG) };
}

/// Frees the spare socket objects (never given to WSK), one at a time under the lock.
/// IRQL <= `DISPATCH_LEVEL`.
fn release_spares(cell: &AcceptCell) {
    while let Some(spare) = cell.queue.lock().spares.pop_front() {
        // SAFETY: the spare's one reference, owned by the queue and taken out of it.
        unsafe { SocketInner::release(spare) };
    }
}

/// Makes `connection`'s socket object the owner of its WSK socket: the stream for it.
fn adopt(connection: &Indicated) -> TcpStream {
    SocketInner::adopt(connection.inner, connection.socket);
    TcpStream::established(Handle::from_inner(connection.inner))
}

/// Adopts `connection` and closes it abortively at once (the peer sees a reset), nobody
/// waiting. IRQL <= `DISPATCH_LEVEL`.
fn reset(connection: &Indicated) {
    // SAFETY: the queue's reference keeps the object alive; set before the adoption, which
    // may issue the close at once (a deregistering client).
    unsafe { connection.inner.as_ref() }.set_close_mode(CloseMode::Abortive);
    SocketInner::adopt(connection.inner, connection.socket);
    // The handle's drop starts the close (if the adoption did not) and gives up the reference.
    drop(Handle::from_inner(connection.inner));
}

/// Before the listener's `WskCloseSocket`: the callback refuses from now on, the spares are
/// freed, and every queued connection is adopted and closed abortively. Called with no WSK
/// call in progress on the listener. IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn before_close(inner: &SocketInner) {
    let cell = inner.accept_events.load(Ordering::Acquire);
    if cell.is_null() {
        return;
    }
    // SAFETY: the cell lives as long as the socket object.
    let cell = unsafe { &*cell };
    cell.queue.lock().closing = true;
    // Closing: nothing is queued or refilled any more; take out what is there.
    release_spares(cell);
    while let Some(connection) = cell.queue.lock().indicated.pop_front() {
        reset(&connection);
    }
    cell.waker.wake();
}

/// The accept state of the listener named by a callback's context, if set up.
///
/// # Safety
/// `context` is null or a listener's socket object this crate passed as a socket context.
unsafe fn cell_of<'a>(context: PVOID) -> Option<&'a AcceptCell> {
    let inner = context.cast::<SocketInner>();
    if inner.is_null() {
        return None;
    }
    // SAFETY: the provider calls back only while the socket is open, and the object outlives
    // its close (caller).
    let cell = unsafe { (*inner).accept_events.load(Ordering::Acquire) };
    // SAFETY: a cell lives as long as its socket object.
    unsafe { cell.as_ref() }
}

/// `WskAcceptEvent`: see the module docs. Called by WSK at IRQL <= `DISPATCH_LEVEL`; takes
/// the listener's spin lock, allocates nothing.
unsafe extern "system-unwind" fn on_accept(
    context: PVOID,
    _flags: u32,
    _local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    socket: *mut WSK_SOCKET,
    accept_context: *mut PVOID,
    accept_dispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS {
    // SAFETY: WSK passes the context we gave.
    let Some(cell) = (unsafe { cell_of(context) }) else {
        // Events are enabled only after the state exists: not reached.
        return sys::STATUS_REQUEST_NOT_ACCEPTED;
    };
    if socket.is_null() {
        // "The listening socket is no longer functional": the waiting task reports it.
        cell.queue.lock().failed = true;
        cell.waker.wake();
        return sys::STATUS_SUCCESS;
    }
    // SAFETY: WSK's remote address, of the listener's family, live for the callback.
    let remote = unsafe { sys::read_sockaddr_by_family(remote) };
    let spare = {
        let mut q = cell.queue.lock();
        let spare = if q.closing {
            None
        } else {
            q.spares.pop_front()
        };
        match spare {
            Some(inner) => {
                // Room: spares plus queued never exceed the capacity, which the ring holds.
                let _ = q.indicated.push_back(Indicated {
                    inner,
                    socket,
                    remote,
                });
                q.counts.accepted += 1;
            }
            None => q.counts.refused += 1,
        }
        spare
    };
    let Some(inner) = spare else {
        return sys::STATUS_REQUEST_NOT_ACCEPTED;
    };
    let (context, events) = super::client_dispatch(inner);
    // SAFETY: WSK passes writable out-parameters.
    unsafe { accept_context.write(context) };
    // SAFETY: as above.
    unsafe { accept_dispatch.write(events.cast()) };
    cell.waker.wake();
    sys::STATUS_SUCCESS
}

/// Allocates spare socket objects until spares and queued connections reach the capacity:
/// true when they do. Allocation happens outside the lock. IRQL <= `DISPATCH_LEVEL`.
fn refill(listener: &SocketInner, cell: &AcceptCell) -> bool {
    loop {
        let (missing, event_driven) = {
            let q = cell.queue.lock();
            if q.closing {
                return false;
            }
            (q.missing(), q.event_driven)
        };
        if missing == 0 {
            return true;
        }
        // SAFETY: the listener's handle keeps the client alive.
        if !unsafe { listener.client().as_ref() }.accepting() {
            return false;
        }
        let Ok(spare) = SocketInner::new(listener.client(), Kind::Connection) else {
            return false;
        };
        // SAFETY: the fresh object's one reference, held here.
        let fresh = unsafe { spare.as_ref() };
        if event_driven && super::events::prepare_for_passed_on_events(fresh, NAME).is_err() {
            // SAFETY: the fresh object's one reference, never shared.
            unsafe { SocketInner::release(spare) };
            return false;
        }
        let unused = {
            let mut q = cell.queue.lock();
            if q.closing || q.missing() == 0 {
                Some(spare)
            } else {
                q.spares.push_back(spare).err()
            }
        };
        if let Some(spare) = unused {
            // SAFETY: the fresh object's one reference, never shared.
            unsafe { SocketInner::release(spare) };
        }
    }
}

/// The connection events an event-driven listener passes on to the sockets its
/// `WskAcceptEvent` accepts ("`SO_WSK_EVENT_CALLBACK`": connection events enabled on a
/// listening socket are enabled on each socket it accepts through `WskAcceptEvent`).
const PASSED_ON: u32 = sys::WSK_EVENT_RECEIVE | sys::WSK_EVENT_DISCONNECT;

/// The listener's accept state, allocated (with rings of `capacity`) and published on first
/// use; later calls find it with the first call's capacity and mode.
fn cell_or_new<'a>(
    inner: &'a SocketInner,
    capacity: usize,
    event_driven: bool,
    name: &'static str,
) -> Result<&'a AcceptCell> {
    let cell = inner.accept_events.load(Ordering::Acquire);
    // SAFETY: a published cell lives as long as the socket object, which the caller keeps.
    if let Some(cell) = unsafe { cell.as_ref() } {
        return Ok(cell);
    }
    let no_memory = || Error::new(ErrorKind::NoResources, name);
    let spares = Ring::new(capacity).ok_or_else(no_memory)?;
    let Some(indicated) = Ring::new(capacity) else {
        spares.free();
        return Err(no_memory());
    };
    // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
    let mem = unsafe { sys::allocate_nonpaged(size_of::<AcceptCell>(), ACCEPT_TAG) };
    let mem = mem.cast::<AcceptCell>();
    if mem.is_null() {
        spares.free();
        indicated.free();
        return Err(no_memory());
    }
    let fresh = AcceptCell {
        queue: SpinMutex::new(Queue {
            enabled: false,
            closing: false,
            failed: false,
            waiting: false,
            event_driven,
            capacity,
            spares,
            indicated,
            counts: AcceptEventCounts::default(),
        }),
        waker: AtomicWaker::new(),
    };
    // SAFETY: a fresh block of the right size (pool memory is 16-aligned).
    unsafe { mem.write(fresh) };
    let published = match inner.accept_events.compare_exchange(
        ptr::null_mut(),
        mem,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => mem,
        Err(other) => {
            free_cell(mem);
            other
        }
    };
    // SAFETY: published: lives as long as the socket object.
    Ok(unsafe { &*published })
}

impl TcpListener {
    /// Switches accepting to WSK's `WskAcceptEvent` callback (`SO_WSK_EVENT_CALLBACK` with
    /// `WSK_EVENT_ACCEPT`) with a queue of [`ACCEPT_QUEUE_DEFAULT`] connections; take them
    /// with [`TcpListener::accept_events`]. See [`TcpListener::enable_accept_events_with`].
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// let _event_driven = listener.enable_accept_events()?;
    /// let (stream, peer) = listener.accept_events().await?;
    /// # let _ = (stream, peer);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpListener::enable_accept_events_with`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP; nonpaged allocations).
    pub fn enable_accept_events(&self) -> Result<bool> {
        self.enable_accept_events_with(ACCEPT_QUEUE_DEFAULT)
    }

    /// Switches accepting to WSK's `WskAcceptEvent` callback with a queue of `capacity`
    /// connections (1 to [`ACCEPT_QUEUE_MAX`]): connections the callback accepted and nobody
    /// took yet, plus spare socket objects for the next ones. Allocates the listener's accept
    /// state (about 100 bytes plus 56 per unit of capacity, nonpaged) and `capacity` socket
    /// objects (each with its IRPs) now, so the callback, at `DISPATCH_LEVEL`, never
    /// allocates. Past the capacity the callback refuses (`STATUS_REQUEST_NOT_ACCEPTED`): the
    /// peer sees a reset, and [`AcceptEventCounts::refused`] counts it.
    ///
    /// The streams receive with IRPs ([`TcpStream::recv`]); for receive events use
    /// [`TcpListener::enable_event_driven_accepts`] (enabling them on a stream just taken can
    /// reach WSK before WSK recorded the stream's dispatch table).
    ///
    /// `Ok(true)`: enabled (again: a no-op; the first call's capacity and mode stay);
    /// `Ok(false)`: the provider has no event callbacks (the host kernel's in-memory network,
    /// Wine 8), and [`TcpListener::accept_events`] accepts with IRPs.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// // A burst of up to 32 connections waits for the accepting task.
    /// if !listener.enable_accept_events_with(32)? {
    ///     // No accept events here: `accept_events` posts accept IRPs.
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a capacity of 0 or above [`ACCEPT_QUEUE_MAX`]; `InvalidState` after
    /// close or deregistration; `NoResources`; a provider refusal other than "not supported".
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP; nonpaged allocations).
    pub fn enable_accept_events_with(&self, capacity: usize) -> Result<bool> {
        self.enable_accepts(capacity, false)
    }

    /// Like [`TcpListener::enable_accept_events_with`], and the streams it indicates receive
    /// through event callbacks from their first byte: `SO_WSK_EVENT_CALLBACK` on the listener
    /// enables `WskReceiveEvent` and `WskDisconnectEvent` with `WskAcceptEvent`, which WSK
    /// then enables on each socket it accepts through `WskAcceptEvent` ("`SO_WSK_EVENT_CALLBACK`":
    /// "A WSK application automatically enables these callback functions by enabling the
    /// connection-oriented socket event callback functions on the listening socket"), and each
    /// spare socket object gets its event state (about 200 bytes more) in advance. A stream
    /// from [`TcpListener::accept_events`] then needs no call to WSK for its receive events
    /// ([`TcpStream::enable_receive_events`] is `Ok(true)` at once): no such call can reach
    /// WSK before WSK has taken the callback's `*AcceptSocketDispatch`, and none races the
    /// first data. Receive on those streams with [`TcpStream::recv_events`] (a
    /// [`TcpStream::recv`] IRP would not see data the callbacks retained).
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// if listener.enable_event_driven_accepts(64)? {
    ///     let (stream, _peer) = listener.accept_events().await?;
    ///     let (n, _buf) = stream.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    ///     n?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpListener::enable_accept_events_with`]; a provider that accepts
    /// `WSK_EVENT_ACCEPT` but not the connection events on a listener fails with its status.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP; nonpaged allocations).
    pub fn enable_event_driven_accepts(&self, capacity: usize) -> Result<bool> {
        self.enable_accepts(capacity, true)
    }

    /// [`TcpListener::enable_accept_events_with`] and
    /// [`TcpListener::enable_event_driven_accepts`]. IRQL <= `DISPATCH_LEVEL`.
    fn enable_accepts(&self, capacity: usize, event_driven: bool) -> Result<bool> {
        if capacity == 0 || capacity > ACCEPT_QUEUE_MAX {
            return Err(Error::new(ErrorKind::InvalidInput, NAME));
        }
        let inner = self.handle.inner();
        if inner.wsk().is_null() || !inner.enter_call() {
            return Err(Error::new(ErrorKind::InvalidState, NAME));
        }
        // Inside the call gate from here: the close (which frees the spares) waits for us.
        let cell = match cell_or_new(inner, capacity, event_driven, NAME) {
            Ok(cell) => cell,
            Err(e) => {
                inner.leave_call();
                return Err(e);
            }
        };
        let event_driven = {
            let q = cell.queue.lock();
            if q.enabled {
                drop(q);
                inner.leave_call();
                return Ok(true);
            }
            q.event_driven
        };
        let events = if event_driven {
            sys::WSK_EVENT_ACCEPT | PASSED_ON
        } else {
            sys::WSK_EVENT_ACCEPT
        };
        let status = if refill(inner, cell) {
            crate::event_control::enable_event_callbacks(inner, events)
        } else {
            sys::STATUS_INSUFFICIENT_RESOURCES
        };
        if status == sys::STATUS_SUCCESS {
            cell.queue.lock().enabled = true;
        } else {
            // Not enabled: no callback can take a spare, and none is needed.
            release_spares(cell);
        }
        inner.leave_call();
        match status {
            sys::STATUS_SUCCESS => Ok(true),
            sys::STATUS_NOT_SUPPORTED | sys::STATUS_NOT_IMPLEMENTED => Ok(false),
            sys::STATUS_INSUFFICIENT_RESOURCES => Err(Error::new(ErrorKind::NoResources, NAME)),
            other => Err(Error::from_status(other, NAME)),
        }
    }

    /// What the accept callback did so far ([`AcceptEventCounts`]); all zero before
    /// [`TcpListener::enable_accept_events`].
    ///
    /// ```no_run
    /// # fn demo(listener: &wsk_net::TcpListener) {
    /// let counts = listener.accept_event_counts();
    /// let _reset_for_want_of_room = counts.refused;
    /// # }
    /// ```
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (takes the listener's spin lock).
    #[must_use]
    pub fn accept_event_counts(&self) -> AcceptEventCounts {
        let cell = self.handle.inner().accept_events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which `self` keeps.
        unsafe { cell.as_ref() }.map_or(AcceptEventCounts::default(), |c| c.queue.lock().counts)
    }

    /// The next connection the accept callback indicated, with the peer's address (see the
    /// module docs of `wsk_net::tcp::accept_events`). Without accept events enabled (never
    /// enabled, or the provider has none) it is an ordinary [`TcpListener::accept`].
    ///
    /// Cancel-safe with accept events: the future holds nothing while it waits, and a
    /// connection is taken out of the queue only by the poll that returns it, so dropping it
    /// loses no connection. Each stream it returns is replaced in the queue by a new spare
    /// socket object, allocated here. One `accept_events` may wait per listener at a time.
    ///
    /// ```no_run
    /// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
    /// listener.enable_accept_events()?;
    /// loop {
    ///     let (stream, peer) = listener.accept_events().await?;
    ///     stream.enable_receive_events()?; // event-driven receive too, if wanted
    ///     // spawn a task serving `stream`
    /// #   let _ = (stream, peer);
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` once the listener is closing or no longer works (WSK indicated a null
    /// socket), or with another `accept_events` waiting; `Other` for a peer address of an
    /// unknown family (the connection is closed); as [`TcpListener::accept`] without accept
    /// events.
    ///
    /// # IRQL
    /// Call, poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn accept_events(&self) -> AcceptEvents<'_> {
        AcceptEvents {
            listener: self,
            irp: None,
            registered: false,
        }
    }
}

/// The future of [`TcpListener::accept_events`]. Dropping it while it waits loses no
/// connection.
///
/// ```no_run
/// # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
/// let waiting = listener.accept_events();
/// drop(waiting); // a connection indicated meanwhile stays queued
/// let (stream, _peer) = listener.accept_events().await?;
/// # let _ = stream;
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct AcceptEvents<'a> {
    listener: &'a TcpListener,
    /// The IRP accept this became (accept events not enabled).
    irp: Option<Accept<'a>>,
    /// Registered as the listener's waiter.
    registered: bool,
}

impl AcceptEvents<'_> {
    /// Stops being the waiter (under the lock).
    fn unregister(&mut self, q: &mut Queue) {
        if self.registered {
            q.waiting = false;
            self.registered = false;
        }
    }
}

impl Future for AcceptEvents<'_> {
    type Output = Result<(TcpStream, SocketAddr)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        const NAME: &str = "accept_events";
        // Nothing here is structurally pinned but the IRP accept, polled in place below.
        // SAFETY: `irp` is never moved out while pinned (only polled and dropped in place).
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(irp) = this.irp.as_mut() {
            // SAFETY: `irp` lives in the pinned future and is not moved (see above).
            return unsafe { Pin::new_unchecked(irp) }.poll(cx);
        }
        let listener = this.listener;
        let inner = listener.handle.inner();
        let cell = inner.accept_events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the listener keeps.
        let enabled = unsafe { cell.as_ref() }.filter(|c| c.queue.lock().enabled);
        let Some(cell) = enabled else {
            let irp = this.irp.insert(listener.accept());
            // SAFETY: just placed in the pinned future, never moved out (see above).
            return unsafe { Pin::new_unchecked(irp) }.poll(cx);
        };
        cell.waker.register(cx.waker());
        let taken = {
            let mut q = cell.queue.lock();
            if let Some(connection) = q.indicated.pop_front() {
                this.unregister(&mut q);
                Ok(connection)
            } else if q.closing || q.failed {
                this.unregister(&mut q);
                Err(Error::new(ErrorKind::InvalidState, NAME))
            } else if q.waiting && !this.registered {
                Err(Error::new(ErrorKind::InvalidState, NAME))
            } else {
                q.waiting = true;
                this.registered = true;
                return Poll::Pending;
            }
        };
        let connection = match taken {
            Ok(connection) => connection,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let stream = adopt(&connection);
        // The queue's room for the next indication (best effort: without memory the queue
        // is shorter until a later take refills it).
        let _ = refill(inner, cell);
        Poll::Ready(match connection.remote {
            Some(peer) => Ok((stream, peer)),
            None => Err(Error::new(ErrorKind::Other, NAME)),
        })
    }
}

impl Drop for AcceptEvents<'_> {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let cell = self
            .listener
            .handle
            .inner()
            .accept_events
            .load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which the listener keeps.
        if let Some(cell) = unsafe { cell.as_ref() } {
            let mut q = cell.queue.lock();
            self.unregister(&mut q);
        }
    }
}
