//! Event callbacks on connection sockets: `SO_WSK_EVENT_CALLBACK` enabling and disabling
//! `WskReceiveEvent`, `WskDisconnectEvent` and `WskSendBacklogEvent` (also for the other
//! categories: the rules every socket shares), static event callbacks, the indications the
//! reactor makes, and `WskRelease` of retained indications.
//!
//! Rules, each from its WDK page:
//! - "`SO_WSK_EVENT_CALLBACK`" (learn.microsoft.com/windows-hardware/drivers/network/so-wsk-event-callback):
//!   on a connection socket only once it is connected; input a `WSK_EVENT_CALLBACK_CONTROL`
//!   whose `NpiId` is `NPI_WSK_INTERFACE_ID`; enabling takes no IRP (the verifier fails one);
//!   events are disabled one at a time (`WSK_EVENT_DISABLE` with a single event bit).
//! - "`PFN_WSK_RECEIVE_EVENT` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_event): the
//!   callback returns `STATUS_SUCCESS` (data taken, `*BytesAccepted` says how much),
//!   `STATUS_PENDING` (the `WSK_DATA_INDICATION` chain is retained until `WskRelease`) or
//!   `STATUS_DATA_NOT_ACCEPTED` (the data stays with the provider and no more indications
//!   come until the client posts a `WskReceive`). Any other status is a verifier failure.
//! - "`PFN_WSK_RELEASE_DATA_INDICATION_LIST` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_release_data_indication_list):
//!   only a chain the client retained may be released, once; the verifier fails anything else.
//!   A chain still retained when the socket is closed can never be released (calls after
//!   `WskCloseSocket` are forbidden): the verifier fails the close as a leak.
//! - "`PFN_WSK_DISCONNECT_EVENT` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_disconnect_event):
//!   called once when the peer disconnects, `WSK_FLAG_ABORTIVE` for a reset.
//! - "`SO_WSK_EVENT_CALLBACK`", on disabling: when no call of the callback being disabled is in
//!   progress it is disabled and the call returns `STATUS_SUCCESS` (an IRP completes with
//!   success); when one is, "the `WskControlSocket` function returns `STATUS_EVENT_PENDING`"
//!   without an IRP, and with one returns `STATUS_PENDING` and completes the IRP "after all
//!   in-progress calls to the event callback function have returned". No new call of it starts
//!   meanwhile. A disable from inside the callback itself is such a case.
//! - "`WSK_SET_STATIC_EVENT_CALLBACKS`"
//!   (learn.microsoft.com/windows-hardware/drivers/network/wsk-set-static-event-callbacks):
//!   events a client enabled for all its sockets are enabled on each socket of the right
//!   category at its creation ([`apply_static`]), and "cannot be disabled or re-enabled": a
//!   disable of one fails with `STATUS_INVALID_PARAMETER`; the socket's other events are
//!   enabled and disabled as usual.
//! - "`PFN_WSK_SEND_BACKLOG_EVENT` callback function (wsk.h)": called when the ideal send
//!   backlog of a connection socket changes, with the new size; it returns `STATUS_SUCCESS`
//!   (anything else is a verifier failure). The host's ideal backlog is its socket's send
//!   buffer ([`ideal_send_backlog`]); the reactor reads it when the socket becomes ready and
//!   after an `SO_SNDBUF`, and indicates it when it differs from the last one indicated (or
//!   the one at enabling).
//!
//! Indications are made by the reactor thread, at `DISPATCH_LEVEL` on the emulated processor
//! it is (`WSK_FLAG_AT_DISPATCH_LEVEL` set), never under the provider lock (the callback
//! re-enters the provider). Pending `WskReceive` IRPs are served first: an indication is made
//! only when none is queued. Data the client did not accept stays in the socket's `stash`,
//! which the next `WskReceive` reads before the host socket.

use std::boxed::Box;
use std::format;
use std::io;
use std::os::fd::AsRawFd;
use std::string::String;
use std::vec::Vec;

use super::glue::{self, bugcheck};
use super::os::{self, linux};
use super::{Host, Kind, Sock, handle_id, provider, sock_mut};
use crate::{
    GUID, MDL, NPI_WSK_INTERFACE_ID, NTSTATUS, PVOID, SIZE_T, STATUS_DATA_NOT_ACCEPTED,
    STATUS_EVENT_PENDING, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, WSK_BUF, WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_DATA_INDICATION, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISABLE,
    WSK_EVENT_DISCONNECT, WSK_EVENT_RECEIVE, WSK_EVENT_RECEIVE_FROM, WSK_EVENT_SEND_BACKLOG,
    WSK_FLAG_ABORTIVE, WSK_FLAG_AT_DISPATCH_LEVEL, WSK_SOCKET,
};

/// Most bytes one indication carries (the host reads at most this much for it).
const INDICATION_MAX: usize = 64 * 1024;

std::thread_local! {
    /// What an indication reads the host socket into before its block takes the bytes.
    static SCRATCH: core::cell::RefCell<Vec<u8>> = core::cell::RefCell::new(std::vec![0; 16 * 1024]);
}

/// A socket's event-callback state.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent flags of the event protocol, as WSK states them"
)]
#[derive(Default)]
pub(super) struct EventState {
    /// The client's socket context (given to `WskSocket`, `WskSocketConnect` or `WskAccept`).
    pub(super) context: usize,
    /// The client's `WSK_CLIENT_CONNECTION_DISPATCH`, or 0.
    pub(super) dispatch: usize,
    /// `WSK_EVENT_*` bits enabled.
    pub(super) enabled: u32,
    /// The client returned `STATUS_DATA_NOT_ACCEPTED`: no indication until a `WskReceive`.
    pub(super) not_accepted: bool,
    /// The reactor is inside a callback of this socket (without the provider lock).
    indicating: bool,
    /// The `WSK_EVENT_*` bit of the callback in progress while `indicating`.
    indicating_event: u32,
    /// `WSK_EVENT_*` bits enabled by `WSK_SET_STATIC_EVENT_CALLBACKS` at creation: never
    /// disabled.
    pub(super) static_events: u32,
    /// A listening socket's connection events, enabled on each socket its `WskAcceptEvent`
    /// accepts (see `accept_events`).
    pub(super) inherited: u32,
    /// The ideal send backlog last indicated (or seen when `WSK_EVENT_SEND_BACKLOG` was
    /// enabled): the next `WskSendBacklogEvent` comes when it changes.
    backlog_indicated: usize,
    /// The chain of the indication in progress (its callback may release it before it
    /// returns), 0 when none.
    in_flight: usize,
    /// `in_flight` was released by the client before its callback returned.
    in_flight_released: bool,
    /// Chains the client retained (`STATUS_PENDING`) and has not released.
    pub(super) retained: Vec<usize>,
    /// Datagram indication lists the client retained and has not released (see
    /// `datagram_events`).
    pub(super) retained_datagrams: Vec<usize>,
    /// Data indicated but not accepted: read by the next `WskReceive` before the host socket.
    pub(super) stash: Vec<u8>,
    /// The disconnect event was delivered.
    disconnect_indicated: bool,
}

/// One indication's memory: the chain's single `WSK_DATA_INDICATION` first (the pointer the
/// client releases is this block's), its MDL, and the bytes.
#[repr(C)]
struct Block {
    indication: WSK_DATA_INDICATION,
    mdl: *mut MDL,
    data: Vec<u8>,
}

impl Block {
    /// A block holding `data`, with an MDL over it; `None` when no MDL could be allocated.
    fn new(data: Vec<u8>) -> Option<Box<Self>> {
        let len = u32::try_from(data.len()).ok()?;
        let mut block = Box::new(Self {
            indication: WSK_DATA_INDICATION {
                Next: core::ptr::null_mut(),
                Buffer: WSK_BUF {
                    Mdl: core::ptr::null_mut(),
                    Offset: 0,
                    Length: data.len(),
                },
            },
            mdl: core::ptr::null_mut(),
            data,
        });
        let start = block.data.as_mut_ptr().cast::<core::ffi::c_void>();
        // SAFETY: the bytes live in the block's Vec, which is never resized while the MDL
        // exists; IoAllocateMdl only records the range.
        let mdl = unsafe { crate::mdl::IoAllocateMdl(start, len, 0, 0, core::ptr::null_mut()) };
        if mdl.is_null() {
            return None;
        }
        // SAFETY: a fresh MDL over heap memory that stays put (nonpaged in the host's terms).
        unsafe { crate::mdl::MmBuildMdlForNonPagedPool(mdl) };
        block.mdl = mdl;
        block.indication.Buffer.Mdl = mdl;
        Some(block)
    }

    /// Frees a block handed out as `ptr`.
    ///
    /// # Safety
    /// `ptr` came from `Box::into_raw` of a block, and nobody uses it any more.
    unsafe fn free(ptr: usize) {
        // SAFETY: the caller's contract.
        let block = unsafe { Box::from_raw(core::ptr::with_exposed_provenance_mut::<Self>(ptr)) };
        // SAFETY: allocated by IoAllocateMdl in `new`, freed once here.
        unsafe { crate::mdl::IoFreeMdl(block.mdl) };
    }
}

impl EventState {
    /// The reactor is inside one of this socket's callbacks.
    pub(super) fn is_indicating(&self) -> bool {
        self.indicating
    }

    /// How many indications (data chains and datagram lists) the client retains.
    pub(super) fn retained_count(&self) -> usize {
        self.retained.len() + self.retained_datagrams.len()
    }

    /// One line's worth for the leak report.
    pub(super) fn describe(&self) -> String {
        if self.retained_count() == 0 {
            String::new()
        } else {
            format!(", {} retained indication(s)", self.retained_count())
        }
    }

    /// Frees every retained chain (kernel shutdown, after the leak report).
    pub(super) fn forget(&mut self) {
        for ptr in self.retained.drain(..) {
            // SAFETY: retained chains are blocks the client can no longer release.
            unsafe { Block::free(ptr) };
        }
        for ptr in self.retained_datagrams.drain(..) {
            // SAFETY: retained lists are the provider's once the client can no longer
            // release them.
            unsafe { super::datagram_events::free_list(ptr) };
        }
    }

    /// An indication of `ptr` by the callback of `event` (a `WSK_EVENT_*` bit) starts (the
    /// reactor lets go of the lock for its callback).
    pub(super) fn begin_indication(&mut self, event: u32, ptr: usize) {
        self.indicating = true;
        self.indicating_event = event;
        self.in_flight = ptr;
        self.in_flight_released = false;
    }

    /// The indication's callback returned: whether the client released its list meanwhile.
    pub(super) fn end_indication(&mut self) -> bool {
        self.indicating = false;
        self.indicating_event = 0;
        self.in_flight = 0;
        core::mem::take(&mut self.in_flight_released)
    }

    /// The client released the indication in flight (from inside its callback).
    pub(super) fn in_flight_released(&self) -> bool {
        self.in_flight_released
    }

    /// `WskRelease` of the list in flight (from inside its own callback): true when `ptr` is
    /// that list and was not released yet; it is freed once the callback returns.
    pub(super) fn release_in_flight(&mut self, ptr: usize) -> bool {
        if self.in_flight == ptr && !self.in_flight_released {
            self.in_flight_released = true;
            true
        } else {
            false
        }
    }
}

/// `SO_WSK_EVENT_CALLBACK` on `sock`: the status `WskControlSocket` returns. `with_irp`: the
/// call came with an IRP. The caller checks `input_size`.
///
/// `STATUS_EVENT_PENDING`: a disable of the callback in progress right now (see the module
/// docs); the caller returns it as is without an IRP, and holds the IRP until the callback
/// returns with one.
pub(super) fn set_event_callbacks(
    sock: &mut Sock,
    control: Option<WSK_EVENT_CALLBACK_CONTROL>,
    with_irp: bool,
) -> NTSTATUS {
    let Some(control) = control else {
        return STATUS_INVALID_PARAMETER;
    };
    if control.NpiId.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the client passes a pointer to an NPI identifier.
    let npi: GUID = unsafe { control.NpiId.read_unaligned() };
    if npi != NPI_WSK_INTERFACE_ID {
        return STATUS_NOT_SUPPORTED;
    }
    let disable = control.EventMask & WSK_EVENT_DISABLE != 0;
    let events = control.EventMask & !WSK_EVENT_DISABLE;
    if with_irp {
        refuse_enabling_with_irp(sock.id, control.EventMask);
    }
    // "WSK_SET_STATIC_EVENT_CALLBACKS": callbacks enabled that way "are always enabled and
    // cannot be disabled or re-enabled later by the WSK application".
    if disable && events & sock.ev.static_events != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    let status = if sock.kind == Kind::Datagram {
        super::datagram_events::set_event_callbacks(sock, disable, events)
    } else if sock.kind == Kind::Listen && matches!(sock.host, Host::Listener(_)) {
        super::accept_events::set_event_callbacks(sock, disable, events)
    } else {
        set_connection_callbacks(sock, disable, events)
    };
    if disable
        && status == STATUS_SUCCESS
        && sock.ev.indicating
        && sock.ev.indicating_event & events != 0
    {
        // "SO_WSK_EVENT_CALLBACK": a disable while a call of that callback is in progress
        // takes effect once it has returned: STATUS_EVENT_PENDING without an IRP,
        // STATUS_PENDING and the IRP completed then with one. (No new call starts meanwhile:
        // the bit is off already.)
        return STATUS_EVENT_PENDING;
    }
    status
}

/// The connection events a connection socket may enable.
pub(super) const CONNECTION_EVENTS: u32 =
    WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT | WSK_EVENT_SEND_BACKLOG;

/// `SO_WSK_EVENT_CALLBACK` on a connection socket (the input checked by the caller).
fn set_connection_callbacks(sock: &mut Sock, disable: bool, events: u32) -> NTSTATUS {
    // Connection sockets on host sockets only: the in-memory network has no indications.
    if sock.kind != Kind::Connection || matches!(sock.host, Host::MemoryStream(_)) {
        return STATUS_NOT_SUPPORTED;
    }
    if events & !CONNECTION_EVENTS != 0 {
        return STATUS_NOT_SUPPORTED;
    }
    if events == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    if disable {
        // One event at a time ("a WSK application must disable each event callback function
        // individually").
        if !events.is_power_of_two() {
            return STATUS_INVALID_PARAMETER;
        }
        sock.ev.enabled &= !events;
        return STATUS_SUCCESS;
    }
    if !sock.connected {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if connection_callbacks(sock) & events != events {
        return STATUS_INVALID_PARAMETER;
    }
    if events & WSK_EVENT_SEND_BACKLOG != 0 && sock.ev.enabled & WSK_EVENT_SEND_BACKLOG == 0 {
        // The baseline: indications come when the ideal backlog changes from here.
        sock.ev.backlog_indicated = ideal_send_backlog(sock).unwrap_or(0);
    }
    sock.ev.enabled |= events;
    STATUS_SUCCESS
}

/// The connection events whose callbacks the client's `WSK_CLIENT_CONNECTION_DISPATCH` of
/// `sock` has (none without a table).
fn connection_callbacks(sock: &Sock) -> u32 {
    if sock.ev.dispatch == 0 {
        return 0;
    }
    // SAFETY: the client's dispatch table outlives the socket (WskSocket/WskAccept pages); a
    // connection socket's `Dispatch` is a WSK_CLIENT_CONNECTION_DISPATCH.
    let table = unsafe {
        &*core::ptr::with_exposed_provenance::<WSK_CLIENT_CONNECTION_DISPATCH>(sock.ev.dispatch)
    };
    let mut events = 0;
    if table.WskReceiveEvent.is_some() {
        events |= WSK_EVENT_RECEIVE;
    }
    if table.WskDisconnectEvent.is_some() {
        events |= WSK_EVENT_DISCONNECT;
    }
    if table.WskSendBacklogEvent.is_some() {
        events |= WSK_EVENT_SEND_BACKLOG;
    }
    events
}

/// The events `WSK_SET_STATIC_EVENT_CALLBACKS` may name (every standard event).
pub(super) const STATIC_EVENTS: u32 = CONNECTION_EVENTS | WSK_EVENT_RECEIVE_FROM | WSK_EVENT_ACCEPT;

/// Enables on a socket the client just created (or was given by an accept) the events of
/// `mask` (its registration's `WSK_SET_STATIC_EVENT_CALLBACKS`) that fit the socket's
/// category and whose callbacks its dispatch table has: for good ("`WSK_SET_STATIC_EVENT_CALLBACKS`":
/// "the WSK subsystem will automatically enable the appropriate event callback functions for
/// the specific category of WSK socket that is being created"). Whether one is due still
/// depends on the socket's state (connected, bound, listening), as for events enabled with
/// `SO_WSK_EVENT_CALLBACK`.
pub(super) fn apply_static(sock: &mut Sock, mask: u32) {
    if mask == 0 || sock.ev.dispatch == 0 {
        return;
    }
    let events = match sock.kind {
        Kind::Connection => mask & connection_callbacks(sock),
        Kind::Datagram => mask & super::datagram_events::callbacks(sock),
        Kind::Listen => mask & super::accept_events::callbacks(sock),
        Kind::Basic => 0,
    };
    sock.ev.enabled |= events;
    sock.ev.static_events = events;
}

/// Enables on a socket a listening socket's `WskAcceptEvent` just accepted the connection
/// events the listening socket passes on (`inherited`) that its dispatch table has callbacks
/// for, as `SO_WSK_EVENT_CALLBACK` enabling them on it would (the send backlog's baseline
/// included).
pub(super) fn enable_inherited(sock: &mut Sock, inherited: u32) {
    let events = inherited & connection_callbacks(sock) & !sock.ev.enabled;
    if events & WSK_EVENT_SEND_BACKLOG != 0 {
        sock.ev.backlog_indicated = ideal_send_backlog(sock).unwrap_or(0);
    }
    sock.ev.enabled |= events;
}

/// The verifier's rule that enabling events takes no IRP (see the module docs): called
/// before the IRP is taken, so that the report leaves nothing held.
/// <https://learn.microsoft.com/en-us/windows-hardware/drivers/network/so-wsk-event-callback>
pub(super) fn refuse_enabling_with_irp(id: u64, mask: u32) {
    if mask & WSK_EVENT_DISABLE == 0 {
        bugcheck(
            "WSK_EVENT_CALLBACK_WITH_IRP",
            format!(
                "SO_WSK_EVENT_CALLBACK enabling events {mask:#x} on socket {id} with an IRP: \
                 \"A WSK application does not specify a pointer to an IRP when calling the \
                 WskControlSocket function to enable event callback functions\""
            ),
        );
    }
}

/// Whether the reactor should try an indication on `sock` now.
pub(super) fn due(sock: &Sock) -> bool {
    if sock.kind == Kind::Datagram {
        return super::datagram_events::due(sock);
    }
    if sock.kind == Kind::Listen {
        return super::accept_events::due(sock);
    }
    receive_due(sock) || backlog_due(sock)
}

/// Whether a send backlog indication may be due on `sock` (whether the ideal backlog changed
/// is read when it is tried).
fn backlog_due(sock: &Sock) -> bool {
    sock.kind == Kind::Connection
        && sock.ev.enabled & WSK_EVENT_SEND_BACKLOG != 0
        && !sock.ev.indicating
        && sock.connected
        && !sock.aborted
        && matches!(sock.host, Host::Stream(_))
}

/// The ideal send backlog of connection socket `sock`: the send buffer of its host socket, as
/// Linux reports it (`SO_SNDBUF`, which the kernel's auto-tuning grows with the connection):
/// what a client must keep in `WskSend`s to keep the connection's stream full (the provider
/// completes a send once its bytes are in that buffer). `None` before it is connected, and
/// on the in-memory network.
pub(super) fn ideal_send_backlog(sock: &Sock) -> Option<usize> {
    let Host::Stream(stream) = &sock.host else {
        return None;
    };
    let size = os::get_int(stream.as_raw_fd(), linux::SOL_SOCKET, linux::SO_SNDBUF).ok()?;
    usize::try_from(size).ok()
}

/// Whether a receive or disconnect indication should be tried on connection socket `sock`.
fn receive_due(sock: &Sock) -> bool {
    sock.kind == Kind::Connection
        && sock.ev.enabled & (WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT) != 0
        && !sock.ev.indicating
        && sock.recvs.is_empty()
        && sock.connected
        && !sock.aborted
        && !sock.ev.disconnect_indicated
        && matches!(sock.host, Host::Stream(_))
}

/// What one indication attempt read, taken under the provider lock.
enum Read {
    Data {
        data: Vec<u8>,
        /// The read stopped at [`INDICATION_MAX`]: more may be waiting.
        full: bool,
    },
    /// Nothing to read (or receive indications are off, or not accepted).
    Nothing,
}

/// Reads what an indication of `sock` carries: the stash first, then the host socket; notes
/// the peer's FIN or a reset on the socket.
fn read_for_indication(sock: &mut Sock) -> Read {
    if sock.ev.enabled & WSK_EVENT_RECEIVE == 0 || sock.ev.not_accepted {
        return Read::Nothing;
    }
    let mut data = core::mem::take(&mut sock.ev.stash);
    let Host::Stream(stream) = &sock.host else {
        return Read::Nothing;
    };
    if sock.recv_eof || sock.error.is_some() {
        return if data.is_empty() {
            Read::Nothing
        } else {
            Read::Data { data, full: false }
        };
    }
    // One scratch buffer per thread (the reactor's), zeroed once: zeroing a fresh one per
    // indication showed as most of the event path's instructions under callgrind.
    SCRATCH.with_borrow_mut(|chunk| {
        while data.len() < INDICATION_MAX {
            let room = (INDICATION_MAX - data.len()).min(chunk.len());
            match io::Read::read(&mut &*stream, &mut chunk[..room]) {
                Ok(0) => {
                    sock.recv_eof = true;
                    break;
                }
                // A short read does not end the loop: the readiness is edge-triggered, and a
                // FIN that came with the data raises no new edge, so only WouldBlock (or EOF)
                // may.
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    sock.error = Some(os::status_of(&e));
                    break;
                }
            }
        }
    });
    if data.is_empty() {
        Read::Nothing
    } else {
        let full = data.len() >= INDICATION_MAX;
        Read::Data { data, full }
    }
}

/// The client's connection dispatch table and socket context of `sock`.
fn client_of(sock: &Sock) -> (&'static WSK_CLIENT_CONNECTION_DISPATCH, PVOID) {
    // SAFETY: checked non-zero when the events were enabled; the client's table outlives the
    // socket (WskSocket/WskAccept pages).
    let table = unsafe {
        &*core::ptr::with_exposed_provenance::<WSK_CLIENT_CONNECTION_DISPATCH>(sock.ev.dispatch)
    };
    let context = core::ptr::with_exposed_provenance_mut::<core::ffi::c_void>(sock.ev.context);
    (table, context)
}

/// Whether socket `id` was closed while its indication's callback ran, after the client had
/// released that indication (from inside the callback): its `STATUS_PENDING` is then no leak.
pub(super) fn take_released_at_close(st: &mut super::State, id: u64) -> bool {
    match st.released_in_flight.iter().position(|r| *r == id) {
        Some(i) => {
            st.released_in_flight.swap_remove(i);
            true
        }
        None => false,
    }
}

/// After a data indication's callback of socket `id` returned `status` and the client had
/// closed the socket meanwhile (the indication freed by the caller): a `STATUS_PENDING` the
/// client did not release first is a leak, as a chain retained at `WskCloseSocket` is (it can
/// never be released). `callback`: `WskReceiveEvent` or `WskReceiveFromEvent`. Called without
/// the provider lock.
/// <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_release_data_indication_list>
pub(super) fn report_retained_at_close(
    id: u64,
    status: NTSTATUS,
    released_before_close: bool,
    callback: &str,
) {
    if status == STATUS_PENDING && !released_before_close {
        bugcheck(
            "WSK_RETAINED_INDICATION_LEAKED",
            format!(
                "{callback} retained an indication of socket {id}, which was closed meanwhile: \
                 a retained indication must be released with WskRelease before the socket is \
                 closed"
            ),
        );
    }
}

/// The verifier's report of a data indication's callback of socket `id` that returned
/// `status`, none of the three it may (the indication freed by the caller). Called without
/// the provider lock. The three: `PFN_WSK_RECEIVE_EVENT`'s return value
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_event>)
/// and `PFN_WSK_RECEIVE_FROM_EVENT`'s
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_from_event>).
pub(super) fn report_bad_status(id: u64, status: NTSTATUS, callback: &str) -> ! {
    bugcheck(
        "WSK_BAD_EVENT_STATUS",
        format!(
            "{callback} of socket {id} returned {status:#x}: it returns STATUS_SUCCESS, \
             STATUS_PENDING or STATUS_DATA_NOT_ACCEPTED"
        ),
    );
}

/// After a callback of socket `id` returned: the socket state again, or `None` when the
/// client closed it meanwhile (its held close IRP then completes now).
pub(super) fn after_callback<'a>(
    p: &super::Provider,
    st: &'a mut std::sync::MutexGuard<'_, super::State>,
    id: u64,
) -> Option<&'a mut Sock> {
    // Disables of this socket's callbacks that waited for it to return (STATUS_PENDING with
    // an IRP, see `set_event_callbacks`) complete now, before a held close.
    // (The list is empty but for such a race: checked without allocating first, as this
    // runs after every indication.)
    if st.held_disables.iter().any(|(sock, _)| *sock == id) {
        let (mine, others) = core::mem::take(&mut st.held_disables)
            .into_iter()
            .partition::<Vec<_>, _>(|(sock, _)| *sock == id);
        st.held_disables = others;
        p.deliver(mine.into_iter().map(|(_, done)| done).collect(), false);
    }
    if st.sockets.contains_key(&id) {
        return st.sockets.get_mut(&id);
    }
    if let Some(close) = st.held_closes.remove(&id) {
        p.deliver(std::vec![close], false);
    }
    None
}

/// Makes the indications due on socket `id`: receive indications while data comes and the
/// client takes it, then the disconnect indication once the peer's FIN or reset was seen.
/// Called by the reactor thread, without the provider lock.
pub(in crate::wsk) fn indicate(p: &super::Provider, id: u64) {
    // One look under the lock decides the path (and whether a send backlog indication may be
    // due: only then is the send buffer read).
    let (kind, backlog) = p
        .lock()
        .sockets
        .get(&id)
        .map_or((None, false), |sock| (Some(sock.kind), backlog_due(sock)));
    if kind == Some(Kind::Datagram) {
        super::datagram_events::indicate(p, id);
        return;
    }
    if kind == Some(Kind::Listen) {
        super::accept_events::indicate(p, id);
        return;
    }
    if backlog {
        indicate_backlog(p, id);
    }
    loop {
        let mut st = p.lock();
        let Some(sock) = st.sockets.get_mut(&id) else {
            return;
        };
        if !receive_due(sock) {
            return;
        }
        let (table, context) = client_of(sock);
        let (Read::Data { data, full }, Some(receive)) =
            (read_for_indication(sock), table.WskReceiveEvent)
        else {
            indicate_disconnect(p, st, id);
            return;
        };
        let len = data.len();
        let Some(block) = Block::new(data) else {
            // No MDL: the data waits for a WskReceive, as if not accepted.
            return;
        };
        let raw = Box::into_raw(block);
        let ptr = raw.expose_provenance();
        sock.ev.begin_indication(WSK_EVENT_RECEIVE, ptr);
        drop(st);
        let mut accepted: SIZE_T = 0;
        let indication = raw.cast::<WSK_DATA_INDICATION>();
        // SAFETY: the client's callback with its context, at DISPATCH_LEVEL, the chain live
        // until it returns (or, retained, until WskRelease).
        let status = glue::at_dispatch(|| unsafe {
            receive(
                context,
                WSK_FLAG_AT_DISPATCH_LEVEL,
                indication,
                len,
                &raw mut accepted,
            )
        });
        let mut st = p.lock();
        let released_before_close = take_released_at_close(&mut st, id);
        let Some(sock) = after_callback(p, &mut st, id) else {
            drop(st);
            // Only the reactor frees an in-flight chain; a close meanwhile left it to us.
            // SAFETY: the socket is gone; the chain is the provider's to free.
            unsafe { Block::free(ptr) };
            report_retained_at_close(id, status, released_before_close, "WskReceiveEvent");
            return;
        };
        // Only the reactor clears the released flag: what it says now is final.
        let released = sock.ev.end_indication();
        // SAFETY: the block is live (freed below or retained), and ours unless retained.
        let block = unsafe { &mut *raw };
        let keep = match status {
            STATUS_SUCCESS if accepted >= len => false,
            // Taken in part, or not at all: the rest waits for a WskReceive.
            STATUS_SUCCESS | STATUS_DATA_NOT_ACCEPTED => {
                let taken = if status == STATUS_SUCCESS {
                    accepted
                } else {
                    0
                };
                let mut stash = block.data.split_off(taken);
                stash.append(&mut sock.ev.stash);
                sock.ev.stash = stash;
                sock.ev.not_accepted = true;
                false
            }
            STATUS_PENDING => !released,
            other => {
                drop(st);
                // SAFETY: not retained (the status says nothing); freed before the report so
                // that the socket can still be closed cleanly.
                unsafe { Block::free(ptr) };
                report_bad_status(id, other, "WskReceiveEvent");
            }
        };
        if keep {
            sock.ev.retained.push(ptr);
        } else {
            // SAFETY: not retained (or released while its callback ran): the provider's.
            unsafe { Block::free(ptr) };
        }
        if !full && !sock.recv_eof && sock.error.is_none() {
            return;
        }
    }
}

/// The send backlog indication of connection socket `id` when its ideal send backlog changed
/// since the last one ("`PFN_WSK_SEND_BACKLOG_EVENT` callback function (wsk.h)",
/// <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_backlog_event>:
/// called "when the ideal send backlog size changes", and "must always return
/// `STATUS_SUCCESS`": anything else is a verifier failure).
fn indicate_backlog(p: &super::Provider, id: u64) {
    let mut st = p.lock();
    let Some(sock) = st.sockets.get_mut(&id) else {
        return;
    };
    if !backlog_due(sock) {
        return;
    }
    let Some(ideal) = ideal_send_backlog(sock) else {
        return;
    };
    if ideal == sock.ev.backlog_indicated {
        return;
    }
    let (table, context) = client_of(sock);
    let Some(send_backlog) = table.WskSendBacklogEvent else {
        return;
    };
    sock.ev.backlog_indicated = ideal;
    sock.ev.begin_indication(WSK_EVENT_SEND_BACKLOG, 0);
    drop(st);
    // SAFETY: the client's callback with its own context, at DISPATCH_LEVEL.
    let status = glue::at_dispatch(|| unsafe { send_backlog(context, ideal) });
    let mut st = p.lock();
    if let Some(sock) = after_callback(p, &mut st, id) {
        // No chain rides on a send backlog indication.
        let _ = sock.ev.end_indication();
    }
    drop(st);
    if status != STATUS_SUCCESS {
        bugcheck(
            "WSK_SEND_BACKLOG_EVENT_STATUS",
            format!(
                "WskSendBacklogEvent of socket {id} returned {status:#x}: it must always return \
                 STATUS_SUCCESS"
            ),
        );
    }
}

/// The disconnect indication of socket `id` once its peer's FIN or reset was seen and no
/// data is left to indicate (`st` is the provider lock, let go of for the callback).
fn indicate_disconnect(
    p: &super::Provider,
    mut st: std::sync::MutexGuard<'_, super::State>,
    id: u64,
) {
    let Some(sock) = st.sockets.get_mut(&id) else {
        return;
    };
    let ended = sock.recv_eof || sock.error.is_some();
    if !ended || sock.ev.enabled & WSK_EVENT_DISCONNECT == 0 || !sock.ev.stash.is_empty() {
        return;
    }
    let (table, context) = client_of(sock);
    let Some(disconnect) = table.WskDisconnectEvent else {
        return;
    };
    sock.ev.disconnect_indicated = true;
    sock.ev.begin_indication(WSK_EVENT_DISCONNECT, 0);
    let flags = if sock.error.is_some() {
        WSK_FLAG_ABORTIVE | WSK_FLAG_AT_DISPATCH_LEVEL
    } else {
        WSK_FLAG_AT_DISPATCH_LEVEL
    };
    drop(st);
    // SAFETY: the client's callback with its own context, at DISPATCH_LEVEL.
    let _ = glue::at_dispatch(|| unsafe { disconnect(context, flags) });
    let mut st = p.lock();
    if let Some(sock) = after_callback(p, &mut st, id) {
        // No chain rides on a disconnect indication.
        let _ = sock.ev.end_indication();
    }
}

/// `WskRelease` on a connection socket: frees a chain the client retained. IRQL <=
/// `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_release(
    socket: *mut WSK_SOCKET,
    indication: PVOID,
) -> NTSTATUS {
    // SAFETY: the client's socket and what it releases, forwarded.
    unsafe { release_retained(socket, indication, Retained::Chains) }
}

/// Which of a socket's retained indications a `WskRelease` gives back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Retained {
    /// `WSK_DATA_INDICATION` chains of a connection socket (`Block`s).
    Chains,
    /// `WSK_DATAGRAM_INDICATION` lists of a datagram socket (`datagram_events`).
    DatagramLists,
}

/// `WskRelease` of `indication` on `socket`, for both socket categories: frees what the
/// client retained, notes a release from inside the indication's own callback (freed once it
/// returns), and fails anything else in the verifier. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// As `WskRelease`: `socket` is the client's (the verifier checks it).
pub(super) unsafe fn release_retained(
    socket: *mut WSK_SOCKET,
    indication: PVOID,
    which: Retained,
) -> NTSTATUS {
    // "PFN_WSK_RELEASE_DATA_INDICATION_LIST callback function (wsk.h)", IRQL <= DISPATCH_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_release_data_indication_list
    glue::require_at_most(crate::DISPATCH_LEVEL, "WskRelease");
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { super::InCall::enter(socket, "WskRelease", None) };
    // SAFETY: the client passes its socket (checked by InCall::enter above).
    let id = unsafe { handle_id(socket, "WskRelease") };
    let p = provider();
    locked_sock!(p, st, sock, id, "WskRelease");
    let ptr = indication.expose_provenance();
    let list = match which {
        Retained::Chains => &mut sock.ev.retained,
        Retained::DatagramLists => &mut sock.ev.retained_datagrams,
    };
    if let Some(i) = list.iter().position(|r| *r == ptr) {
        list.swap_remove(i);
        drop(st);
        match which {
            // SAFETY: the client retained it and gives it back once.
            Retained::Chains => unsafe { Block::free(ptr) },
            // SAFETY: as above.
            Retained::DatagramLists => unsafe { super::datagram_events::free_list(ptr) },
        }
        return STATUS_SUCCESS;
    }
    if ptr != 0 && sock.ev.release_in_flight(ptr) {
        // Released from inside (or racing with) its own callback: freed once it returns.
        return STATUS_SUCCESS;
    }
    drop(st);
    let (socket_kind, what) = match which {
        Retained::Chains => ("socket", "indication"),
        Retained::DatagramLists => ("datagram socket", "datagram indication list"),
    };
    bugcheck(
        "WSK_RELEASE_NOT_RETAINED",
        format!(
            "WskRelease of {indication:p} on {socket_kind} {id}, which is no {what} the client \
             retained (never indicated, or already released)"
        ),
    );
}
