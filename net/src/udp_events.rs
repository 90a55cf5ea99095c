//! Event-driven receive on a [`UdpSocket`]: WSK's `WskReceiveFromEvent` callback instead of a
//! pre-posted `WskReceiveFrom` IRP.
//!
//! [`UdpSocket::enable_receive_events`] turns the callback on (`SO_WSK_EVENT_CALLBACK` with
//! `WSK_EVENT_RECEIVE_FROM`); [`UdpSocket::recv_from_events`] then takes one indicated
//! datagram, [`UdpSocket::recv_batch_events`] every indicated datagram that fits a
//! [`DatagramBatch`] (one indication often carries several). Every datagram socket this crate
//! creates names its socket object as the WSK socket context and this module's
//! `WSK_CLIENT_DATAGRAM_DISPATCH`, so enabling needs no new socket.
//!
//! What the callback (at `DISPATCH_LEVEL`, on the processor WSK indicates on) does with an
//! indication, under the socket's spin lock:
//! - fewer than [`DATAGRAM_LISTS_MAX`] lists retained: the `WSK_DATAGRAM_INDICATION` list is
//!   **retained** (`STATUS_PENDING`) and the waiting task is woken; receives copy datagrams
//!   out of it, in order, and give it back with `WskRelease` once every datagram is taken;
//! - otherwise: **back-pressure**, `STATUS_DATA_NOT_ACCEPTED`. WSK then indicates nothing
//!   until the callback is enabled again, which the next receive that finds the retained
//!   lists drained does. The datagrams of the refused indication are WSK's: the transport
//!   buffers them "if possible" ("`PFN_WSK_RECEIVE_FROM_EVENT` callback function (wsk.h)") and
//!   indicates them again once enabled (the host provider does; UDP promises no delivery).
//!
//! No buffer is registered with the callback (datagrams are copied by the receiving task), so
//! dropping a receive future loses nothing: a datagram is taken out of a list only by a poll
//! that then returns it. Before the socket's `WskCloseSocket` is issued every retained list is
//! released and the callback discards from then on. The state lives in one nonpaged block
//! per event-driven socket (allocated by [`UdpSocket::enable_receive_events`], freed with the
//! socket object after its close).
//!
//! [`UdpSocket::disable_receive_events`] turns the callback off again (with an IRP that WSK
//! completes once no call of it is in progress); the receives then take what it retained
//! before they post `WskReceiveFrom` IRPs.
//!
//! Where the provider lacks event callbacks (Wine 8's netio.sys), enabling reports `Ok(false)`
//! and the receives are ordinary `WskReceiveFrom` IRPs.

use core::future::poll_fn;
use core::net::SocketAddr;
use core::ptr::NonNull;
use core::task::{Context, Poll};

use wsk_executor::raw::AtomicWaker;
use wsk_executor::raw::sync::Ordering;
use wsk_executor::sync::SpinMutex;
use wsk_sys::{
    self as sys, NTSTATUS, PVOID, WSK_CLIENT_DATAGRAM_DISPATCH, WSK_DATAGRAM_INDICATION,
};

use crate::batch::DatagramBatch;
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::event_cell;
use crate::raw::SocketInner;
use crate::udp::{Received, UdpSocket};

/// Pool tag of datagram event state blocks (`WskD`).
const EVENTS_TAG: u32 = sys::pool_tag(*b"WskD");

/// Indication lists a socket retains before it pushes back with `STATUS_DATA_NOT_ACCEPTED`.
pub const DATAGRAM_LISTS_MAX: usize = 4;

/// `NormalPagePriority | MdlMappingNoExecute` for mapping an indicated MDL.
const MAP_PRIORITY: u32 = 16 | 0x4000_0000;

/// The event callback of every datagram socket this crate creates.
static DATAGRAM_EVENTS: WSK_CLIENT_DATAGRAM_DISPATCH = WSK_CLIENT_DATAGRAM_DISPATCH {
    WskReceiveFromEvent: Some(on_receive_from),
};

/// The socket context and client dispatch table a datagram socket is created with: its
/// socket object, and [`DATAGRAM_EVENTS`].
pub(crate) fn client_dispatch(inner: NonNull<SocketInner>) -> (PVOID, *const core::ffi::c_void) {
    (inner.as_ptr().cast(), (&raw const DATAGRAM_EVENTS).cast())
}

/// A list the socket retained: its head (what goes back to `WskRelease`) and the next
/// datagram not yet taken.
#[derive(Clone, Copy)]
struct RetainedList {
    head: *mut WSK_DATAGRAM_INDICATION,
    next: *mut WSK_DATAGRAM_INDICATION,
}

/// What the spin lock guards.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags of the event protocol, as WSK states them"
)]
struct Queue {
    /// The callback is on.
    enabled: bool,
    /// Retained lists, oldest first.
    retained: heapless::Deque<RetainedList, DATAGRAM_LISTS_MAX>,
    /// The callback returned `STATUS_DATA_NOT_ACCEPTED`: WSK waits to be enabled again.
    not_accepted: bool,
    /// WSK indicated a null list: the socket no longer works.
    failed: bool,
    /// The close is being issued: the callback discards, nothing is retained any more.
    closing: bool,
    /// A receive is enabling the callback again after back-pressure right now (between its
    /// decision under the lock and the end of its `WskControlSocket`): a disable issued
    /// meanwhile may precede that enabling, so [`UdpSocket::disable_receive_events`] disables
    /// once more after it.
    reenabling: bool,
    counts: DatagramEventCounts,
}

impl Queue {
    /// Receives go through the callback's lists: the callback is on, or it left lists a
    /// receive must take before any IRP receive (after a disable).
    fn receives_through_events(&self) -> bool {
        self.enabled || !self.retained.is_empty()
    }
}

// SAFETY: the raw pointers are retained lists (WSK's until released), used under the lock.
unsafe impl Send for Queue {}

/// What a datagram socket's receive callback did so far (for diagnostics, tests and
/// benches): [`UdpSocket::datagram_event_counts`].
///
/// # IRQL
/// Any: a plain value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatagramEventCounts {
    /// Indications retained (`STATUS_PENDING`).
    pub indications: u64,
    /// Datagrams in those indications.
    pub datagrams: u64,
    /// Indications pushed back (`STATUS_DATA_NOT_ACCEPTED`).
    pub not_accepted: u64,
}

/// A datagram socket's event state, in its own nonpaged block.
pub(crate) struct DatagramEventCell {
    queue: SpinMutex<Queue>,
    waker: AtomicWaker,
}

/// Frees a socket's datagram event state (null: none). Called with the socket object's last
/// reference, after its close completed.
pub(crate) fn free_cell(cell: *mut DatagramEventCell) {
    // SAFETY: the last user is gone (the caller's moment: after the close completed).
    unsafe { event_cell::free(cell, EVENTS_TAG) };
}

/// Before `WskCloseSocket`: releases every retained list and makes the callback discard from
/// now on. Called with no WSK call in progress on the socket. IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn before_close(inner: &SocketInner) {
    let cell = inner.datagram_events.load(Ordering::Acquire);
    if cell.is_null() {
        return;
    }
    // SAFETY: the cell lives as long as the socket object.
    let cell = unsafe { &*cell };
    let taken = {
        let mut q = cell.queue.lock();
        let q = &mut *q;
        event_cell::take_for_close(&mut q.retained, &mut q.closing)
    };
    // SAFETY: the socket is open (its close is being issued now) and the lists retained.
    unsafe { event_cell::release_all(inner, taken) };
    cell.waker.wake();
}

/// `WskRelease` of a retained list.
///
/// # Safety
/// The socket is open and no close can be issued meanwhile; `head` is retained by us.
unsafe fn release(inner: &SocketInner, head: *mut WSK_DATAGRAM_INDICATION) -> NTSTATUS {
    // SAFETY: the caller's contract.
    unsafe { event_cell::release_indication(inner, head.cast()) }
}

impl event_cell::RetainedIndication for RetainedList {
    fn indication(&self) -> PVOID {
        self.head.cast()
    }
}

/// Copies the datagram of `item` into `out` (truncated to it): the bytes copied.
///
/// # Safety
/// `item` belongs to a live (retained) indication list.
unsafe fn copy_datagram(item: &WSK_DATAGRAM_INDICATION, out: &mut [u8]) -> usize {
    let mut mdl = item.Buffer.Mdl;
    let mut offset = item.Buffer.Offset as usize;
    let mut left = item.Buffer.Length.min(out.len());
    let mut copied = 0;
    while !mdl.is_null() && left > 0 {
        // SAFETY: the list's MDLs are live and describe locked pages.
        let count = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
        if offset < count {
            // SAFETY: as above.
            let base = unsafe { sys::MmGetSystemAddressForMdlSafe(mdl, MAP_PRIORITY) };
            if base.is_null() {
                break;
            }
            let n = (count - offset).min(left);
            // SAFETY: `offset < count`: inside the MDL's mapped bytes.
            let first = unsafe { base.cast::<u8>().add(offset) };
            // SAFETY: `offset + n <= count`: mapped, and not written while indicated.
            let bytes = unsafe { core::slice::from_raw_parts(first, n) };
            out[copied..copied + n].copy_from_slice(bytes);
            copied += n;
            left -= n;
            offset = 0;
        } else {
            offset -= count;
        }
        // SAFETY: as above.
        mdl = unsafe { (*mdl).Next };
    }
    copied
}

/// The datagram event state of the socket named by a callback's context, if set up.
///
/// # Safety
/// `context` is null or a socket object this crate passed as a socket context.
unsafe fn cell_of<'a>(context: PVOID) -> Option<&'a DatagramEventCell> {
    let inner = context.cast::<SocketInner>();
    if inner.is_null() {
        return None;
    }
    // SAFETY: the provider calls back only while the socket is open, and the object outlives
    // its close (caller).
    let cell = unsafe { (*inner).datagram_events.load(Ordering::Acquire) };
    // SAFETY: a cell lives as long as its socket object.
    unsafe { cell.as_ref() }
}

/// `WskReceiveFromEvent`: see the module docs. Called by WSK at IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn on_receive_from(
    context: PVOID,
    _flags: u32,
    indication: *mut WSK_DATAGRAM_INDICATION,
) -> NTSTATUS {
    // SAFETY: WSK passes the context we gave.
    let Some(cell) = (unsafe { cell_of(context) }) else {
        // Events are enabled only after the state exists: not reached.
        return sys::STATUS_DATA_NOT_ACCEPTED;
    };
    let status = {
        let mut q = cell.queue.lock();
        if indication.is_null() {
            // "The socket is no longer functional."
            q.failed = true;
            sys::STATUS_SUCCESS
        } else if q.closing {
            sys::STATUS_SUCCESS
        } else if q.retained.is_full() {
            q.not_accepted = true;
            q.counts.not_accepted += 1;
            sys::STATUS_DATA_NOT_ACCEPTED
        } else {
            let mut datagrams = 0;
            let mut link = indication;
            while !link.is_null() {
                datagrams += 1;
                // SAFETY: the list being indicated is live.
                link = unsafe { (*link).Next };
            }
            q.counts.indications += 1;
            q.counts.datagrams += datagrams;
            let _ = q.retained.push_back(RetainedList {
                head: indication,
                next: indication,
            });
            sys::STATUS_PENDING
        }
    };
    cell.waker.wake();
    status
}

/// `SO_WSK_EVENT_CALLBACK` with `WSK_EVENT_RECEIVE_FROM` on `inner`'s socket, without an IRP.
/// Called inside the call gate (the socket is open).
fn enable_callback(inner: &SocketInner) -> NTSTATUS {
    crate::event_control::enable_event_callbacks(inner, sys::WSK_EVENT_RECEIVE_FROM)
}

impl UdpSocket {
    /// Switches the socket's receive to WSK's `WskReceiveFromEvent` callback
    /// (`SO_WSK_EVENT_CALLBACK` with `WSK_EVENT_RECEIVE_FROM`); receive with
    /// [`UdpSocket::recv_from_events`] or [`UdpSocket::recv_batch_events`]. `Ok(true)`:
    /// enabled (again: a no-op); `Ok(false)`: the provider has no event callbacks (Wine 8),
    /// and those receives use IRPs. Allocates the socket's event state (about 100 bytes of
    /// nonpaged pool) on first use.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let _event_driven = socket.enable_receive_events()?;
    /// let (got, buf) = socket.recv_from_events(wsk_net::IoBuf::with_capacity(1500)?).await;
    /// let (n, from) = got?;
    /// let _datagram = (&buf[..n], from);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close; `NoResources`; a provider refusal other than "not
    /// supported".
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (`WskControlSocket` without an IRP).
    pub fn enable_receive_events(&self) -> Result<bool> {
        const NAME: &str = "enable_receive_events";
        let inner = self.handle.inner();
        let fresh = || DatagramEventCell {
            queue: SpinMutex::new(Queue {
                enabled: false,
                retained: heapless::Deque::new(),
                not_accepted: false,
                failed: false,
                closing: false,
                reenabling: false,
                counts: DatagramEventCounts::default(),
            }),
            waker: AtomicWaker::new(),
        };
        let cell = event_cell::install(&inner.datagram_events, fresh, EVENTS_TAG, NAME)?;
        if cell.queue.lock().enabled {
            return Ok(true);
        }
        if inner.wsk().is_null() || !inner.enter_call() {
            return Err(Error::new(ErrorKind::InvalidState, NAME));
        }
        let status = enable_callback(inner);
        inner.leave_call();
        match status {
            sys::STATUS_SUCCESS => {
                let mut q = cell.queue.lock();
                q.enabled = true;
                // Enabling lifts a back-pressure from before a disable too.
                q.not_accepted = false;
                Ok(true)
            }
            sys::STATUS_NOT_SUPPORTED | sys::STATUS_NOT_IMPLEMENTED => Ok(false),
            other => Err(Error::from_status(other, NAME)),
        }
    }

    /// Switches the socket's receive back from `WskReceiveFromEvent` to `WskReceiveFrom` IRPs:
    /// disables the callback (`SO_WSK_EVENT_CALLBACK` with
    /// `WSK_EVENT_RECEIVE_FROM | WSK_EVENT_DISABLE`) with an IRP, which WSK completes only once
    /// no call of the callback is in progress any more ("`SO_WSK_EVENT_CALLBACK`":
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-wsk-event-callback>).
    /// After it returns no callback runs for the socket: [`UdpSocket::recv_from_events`] and
    /// [`UdpSocket::recv_batch_events`] first take the datagrams the callback retained, in
    /// order, then receive with IRPs, so no datagram the callback accepted is lost. No-op when
    /// receive events are off; [`UdpSocket::enable_receive_events`] turns them on again. The
    /// stream counterpart is [`TcpStream::disable_receive_events`](crate::TcpStream::disable_receive_events).
    /// Dropping its future before it completes leaves the receives on IRPs (still taking first
    /// whatever the callback retains) with the callback perhaps still on: call it again to be
    /// sure it is off.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.enable_receive_events()?;
    /// // ... a burst handled by the callback ...
    /// socket.disable_receive_events().await?;
    /// let (got, _buf) = socket.recv_from_events(wsk_net::IoBuf::with_capacity(1500)?).await;
    /// let _ = got?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or with another control operation in flight; provider
    /// errors (the callback then stays on, as before the call).
    ///
    /// # IRQL
    /// Call and poll at <= `DISPATCH_LEVEL`.
    pub async fn disable_receive_events(&self) -> Result<()> {
        const NAME: &str = "disable_receive_events";
        let Some(cell) = self.event_cell() else {
            return Ok(());
        };
        // From here on no receive enables the callback again after back-pressure, and
        // receives that find nothing retained go on with IRPs.
        let mut raced = {
            let mut q = cell.queue.lock();
            if !q.enabled {
                return Ok(());
            }
            q.enabled = false;
            q.reenabling
        };
        loop {
            let disabled =
                crate::options::disable_event(&self.handle, sys::WSK_EVENT_RECEIVE_FROM, NAME)
                    .await;
            if let Err(error) = disabled {
                // WSK still calls the callback: receives keep taking from it.
                cell.queue.lock().enabled = true;
                return Err(error);
            }
            if !raced {
                break;
            }
            // A receive was enabling the callback again (after back-pressure) when the
            // disable began, and may have done so after it: disable once more, after it.
            raced = cell.queue.lock().reenabling;
        }
        cell.queue.lock().not_accepted = false;
        // A receive waiting for the callback goes on with an IRP.
        cell.waker.wake();
        Ok(())
    }

    /// What the receive callback did so far ([`DatagramEventCounts`]); all zero before
    /// [`UdpSocket::enable_receive_events`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (takes the socket's spin lock).
    #[must_use]
    pub fn datagram_event_counts(&self) -> DatagramEventCounts {
        self.event_cell()
            .map_or(DatagramEventCounts::default(), |c| c.queue.lock().counts)
    }

    /// The event state, when receive events are enabled.
    fn event_cell(&self) -> Option<&DatagramEventCell> {
        let cell = self.handle.inner().datagram_events.load(Ordering::Acquire);
        // SAFETY: the cell lives as long as the socket object, which `self` keeps.
        unsafe { cell.as_ref() }
    }

    /// Takes indicated datagrams, oldest first, handing each to `take` (which returns
    /// whether it wants another) while any is retained: `Ready` with how many were taken
    /// (at least one), or an error; `Ready(Ok(0))` when none is retained and the callback is
    /// disabled ([`UdpSocket::disable_receive_events`]: the caller receives with an IRP);
    /// `Pending` (the task woken by the next indication) when none is retained. Releases each
    /// list once all its datagrams are taken, and enables the callback again after
    /// back-pressure (unless it is being disabled).
    fn poll_indicated(
        &self,
        cell: &DatagramEventCell,
        cx: &mut Context<'_>,
        take: &mut dyn FnMut(&Indicated<'_>) -> bool,
        name: &'static str,
    ) -> Poll<Result<usize>> {
        let inner = self.handle.inner();
        if !inner.enter_call() {
            return Poll::Ready(Err(Error::new(ErrorKind::InvalidState, name)));
        }
        cell.waker.register(cx.waker());
        let mut done: heapless::Vec<*mut WSK_DATAGRAM_INDICATION, DATAGRAM_LISTS_MAX> =
            heapless::Vec::new();
        let mut taken = 0;
        let mut reenable = false;
        let mut failed = false;
        let mut disabled = false;
        {
            let mut q = cell.queue.lock();
            while let Some(front) = q.retained.front_mut() {
                let mut stop = false;
                while !front.next.is_null() && !stop {
                    // SAFETY: a retained list is live until we release it.
                    let item = Indicated(unsafe { &*front.next });
                    front.next = item.0.Next;
                    stop = !take(&item);
                    taken += 1;
                }
                if front.next.is_null()
                    && let Some(r) = q.retained.pop_front()
                {
                    let _ = done.push(r.head);
                }
                if stop {
                    break;
                }
            }
            if taken == 0 {
                failed = q.failed || q.closing;
                disabled = !q.enabled;
            }
            if q.retained.is_empty() && q.not_accepted && q.enabled {
                q.not_accepted = false;
                q.reenabling = true;
                reenable = true;
            }
        }
        for head in done {
            // SAFETY: inside the call gate (no close can be issued) and a list we retained,
            // no longer queued.
            let _ = unsafe { release(inner, head) };
        }
        if reenable {
            // Back-pressure lifted: WSK indicates again. A refusal here leaves the socket
            // to its IRP receives; the next receive reports nothing new.
            let _ = enable_callback(inner);
            cell.queue.lock().reenabling = false;
        }
        inner.leave_call();
        if taken > 0 {
            Poll::Ready(Ok(taken))
        } else if failed {
            Poll::Ready(Err(Error::new(ErrorKind::InvalidState, name)))
        } else if disabled {
            Poll::Ready(Ok(0))
        } else {
            Poll::Pending
        }
    }

    /// Receives one datagram indicated by `WskReceiveFromEvent` into `buf` (truncated to its
    /// capacity), with its sender; without receive events enabled (or where the provider
    /// lacks them) an ordinary [`UdpSocket::recv_from`]. Dropping the future loses no
    /// datagram (a datagram is taken only by the poll that returns it).
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.enable_receive_events()?;
    /// let (got, buf) = socket.recv_from_events(wsk_net::IoBuf::with_capacity(1500)?).await;
    /// let (n, from) = got?;
    /// # let _ = (&buf[..n], from);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidState` after close or when WSK reports the socket no longer works; as
    /// [`UdpSocket::recv_from`] when it receives with an IRP.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub async fn recv_from_events(&self, buf: IoBuf) -> (Result<(usize, SocketAddr)>, IoBuf) {
        let (got, buf) = self.receive_indicated(buf, "recv_from_events").await;
        (got.map(|got| (got.len, got.from)), buf)
    }

    /// [`UdpSocket::recv_from_events`] that also says whether the datagram was larger than
    /// the buffer ([`Received::truncated`]: the indicated datagram's length exceeded the
    /// buffer's capacity; its rest is gone); without receive events an ordinary
    /// [`UdpSocket::recv_datagram`].
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.enable_receive_events()?;
    /// let (got, buf) = socket.recv_datagram_events(wsk_net::IoBuf::with_capacity(512)?).await;
    /// let got = got?;
    /// # let _ = (&buf[..got.len], got.from, got.truncated);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`UdpSocket::recv_from_events`].
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub async fn recv_datagram_events(&self, buf: IoBuf) -> (Result<Received>, IoBuf) {
        self.receive_indicated(buf, "recv_datagram_events").await
    }

    /// One indicated datagram into `buf` (cleared first), or an IRP receive without events.
    async fn receive_indicated(
        &self,
        mut buf: IoBuf,
        name: &'static str,
    ) -> (Result<Received>, IoBuf) {
        let Some(cell) = self
            .event_cell()
            .filter(|c| c.queue.lock().receives_through_events())
        else {
            return self.recv_datagram(buf).await;
        };
        buf.clear();
        let mut got: Option<(usize, Option<SocketAddr>, bool)> = None;
        let result = poll_fn(|cx| {
            let mut take = |item: &Indicated<'_>| {
                let n = item.copy_into(buf.storage_mut());
                got = Some((n, item.sender(), item.len() > n));
                false
            };
            self.poll_indicated(cell, cx, &mut take, name)
        })
        .await;
        if matches!(result, Ok(0)) {
            // Disabled, and nothing retained: the receive goes on with an IRP.
            return self.recv_datagram(buf).await;
        }
        let result = result.and_then(|_| match got {
            Some((len, Some(from), truncated)) => {
                let _ = buf.set_len(len);
                Ok(Received {
                    len,
                    from,
                    truncated,
                })
            }
            _ => Err(Error::new(ErrorKind::Other, name)),
        });
        (result, buf)
    }

    /// Receives into `batch` (cleared first) the datagrams indicated by `WskReceiveFromEvent`:
    /// waits for the first indication, then takes every retained datagram that fits (one
    /// indication often carries several), each with its sender; without receive events
    /// enabled an ordinary [`UdpSocket::recv_batch`]. Returns the number received (also
    /// `batch.len()`). Dropping the future loses no datagram.
    ///
    /// ```no_run
    /// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// socket.enable_receive_events()?;
    /// let batch = wsk_net::DatagramBatch::new(32, 1500)?;
    /// let (got, batch) = socket.recv_batch_events(batch).await;
    /// for (datagram, from) in batch.iter().take(got?) {
    /// #   let _ = (datagram, from);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`UdpSocket::recv_from_events`]; as [`UdpSocket::recv_batch`] with IRPs.
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    pub async fn recv_batch_events(
        &self,
        mut batch: DatagramBatch,
    ) -> (Result<usize>, DatagramBatch) {
        const NAME: &str = "recv_batch_events";
        let Some(cell) = self
            .event_cell()
            .filter(|c| c.queue.lock().receives_through_events())
        else {
            return self.recv_batch(batch).await;
        };
        batch.clear();
        if batch.capacity() == 0 {
            return (Err(Error::new(ErrorKind::InvalidInput, NAME)), batch);
        }
        let result = poll_fn(|cx| {
            let mut take = |item: &Indicated<'_>| {
                if let Some(slot) = batch.next_slot_mut() {
                    let n = item.copy_into(slot);
                    batch.received(n, item.sender());
                }
                batch.len() < batch.capacity()
            };
            self.poll_indicated(cell, cx, &mut take, NAME)
        })
        .await;
        if matches!(result, Ok(0)) {
            // Disabled, and nothing retained: the receive goes on with an IRP.
            return self.recv_batch(batch).await;
        }
        (result.map(|_| batch.len()), batch)
    }
}

/// One datagram of a retained indication list, live while the list is retained (made only
/// by [`UdpSocket::poll_indicated`], under the socket's lock).
struct Indicated<'a>(&'a WSK_DATAGRAM_INDICATION);

impl Indicated<'_> {
    /// Copies the datagram into `out` (truncated to it): the bytes copied.
    fn copy_into(&self, out: &mut [u8]) -> usize {
        // SAFETY: the item belongs to a live retained list (how `Indicated` is made).
        unsafe { copy_datagram(self.0, out) }
    }

    /// The datagram's length as indicated.
    fn len(&self) -> usize {
        self.0.Buffer.Length
    }

    /// The datagram's sender.
    fn sender(&self) -> Option<SocketAddr> {
        // SAFETY: the provider's sender address, live with the retained list.
        unsafe { sys::read_sockaddr_by_family(self.0.RemoteAddress) }
    }
}
