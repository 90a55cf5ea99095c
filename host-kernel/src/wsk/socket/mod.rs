//! Provider sockets: the `WSK_SOCKET` objects, their dispatch tables, the IRP queues on each
//! socket and the progress the provider makes on them against the host socket.
//!
//! Cancellation is the standard NT pattern: every queued IRP carries a cancel routine; whoever
//! swaps it out first owns completion. The provider swaps it out before each attempt and puts
//! it back when the operation has to wait; a cancel routine that finds its IRP still queued
//! takes it out, and completes the IRP as cancelled in any case.
//!
//! This module holds the socket objects ([`SockHandle`], [`Sock`]), the queued operations
//! ([`Op`], [`OpKind`]), the start every IRP-taking call shares ([`begin`]) and the dispatch
//! tables; `queue` the cancel protocol and the pump; `progress` one step per operation kind;
//! `buffers` client memory; `client_calls`, `setup_calls` and `transfer_calls` the WSK calls.

use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
use std::boxed::Box;
use std::collections::VecDeque;
use std::format;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::string::String;
use std::sync::Arc;
use std::vec::Vec;

use mio::Token;
use mio::net::{TcpListener, TcpStream, UdpSocket};

use super::glue::{self, IrpPtr, bugcheck, require_at_most};
use super::os::{self};
use super::{CURRENT, Done, Io, Out, Provider, State, lock, memory, provider};
use crate::faults::WskOp;
use crate::{
    DISPATCH_LEVEL, IRP, MAKE_WSK_VERSION, NTSTATUS, PVOID, SOCKADDR, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, WSK_CLIENT, WSK_PROVIDER_BASIC_DISPATCH,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH, WSK_PROVIDER_DISPATCH,
    WSK_PROVIDER_LISTEN_DISPATCH, WSK_SOCKET,
};

/// The provider's socket object: the `WSK_SOCKET` the client sees comes first, so the
/// client's pointer is the object's. It stays allocated until the close IRP has completed.
#[repr(C)]
pub(super) struct SockHandle {
    wsk: WSK_SOCKET,
    id: u64,
    /// Calls on this socket in progress (entered, not returned): see [`InCall`].
    in_call: core::sync::atomic::AtomicU32,
}

/// A provider socket object as the provider keeps it (in its [`Sock`], and in the close
/// IRP's `Done` until that completes): allocated once by [`new_sock`], freed once.
#[derive(Clone, Copy)]
pub(super) struct SockHandlePtr(NonNull<SockHandle>);

// SAFETY: the object behind it is shared by design: the client reads its `WSK_SOCKET` and id
// from any thread (WSK calls come at any IRQL on any processor), its only mutable field is an
// atomic, and it is freed once, by whoever the provider's rules make last (the close IRP's
// completion, or the pump for a socket never given out), under the provider lock or after it.
unsafe impl Send for SockHandlePtr {}

impl SockHandlePtr {
    /// Moves `handle` to the heap, where it stays until [`SockHandlePtr::free`].
    fn allocate(handle: SockHandle) -> Self {
        Self(NonNull::from(Box::leak(Box::new(handle))))
    }

    /// The client's `WSK_SOCKET` pointer as `IoStatus.Information` carries it (exposed: the
    /// client turns the number back into the pointer).
    pub(super) fn information(self) -> usize {
        self.0.as_ptr().expose_provenance()
    }

    /// Frees the socket object.
    ///
    /// # Safety
    /// Called once, when no call on the socket can be in progress or come: its close IRP has
    /// completed, or the client never saw the socket.
    pub(super) unsafe fn free(self) {
        // SAFETY: allocated by `allocate` (a Box); the caller guarantees the last use.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// One call on a socket in progress, counted on its handle from entry to return.
///
/// `WskCloseSocket`: "A WSK application must ensure that there are no other function calls in
/// progress to any of the socket's functions ... in any other threads" and that it makes no
/// call after it
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_close_socket>;
/// also "Closing a Socket",
/// <https://learn.microsoft.com/windows-hardware/drivers/network/closing-a-socket>).
/// `wsk_close_socket` bugchecks when the count is not zero; a call after close finds the
/// socket gone (`WSK_SOCKET_CLOSED`).
pub(super) struct InCall(*const SockHandle);

/// The booted provider's plan slows some calls down (`Faults::slow_call`); set at boot.
pub(super) static SLOW_CALLS: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

impl InCall {
    /// Counts a call of `op` on `socket` as in progress until the guard drops; sleeps inside
    /// the call when the fault plan's `slow_call` names `op` (to widen the window a racing
    /// close could hit).
    ///
    /// # Safety
    /// `socket` is null or a provider socket handle (checked as [`handle_id`] does).
    unsafe fn enter(socket: *mut WSK_SOCKET, function: &'static str, op: Option<WskOp>) -> Self {
        // SAFETY: forwarded; bugchecks on null.
        let _ = unsafe { handle_id(socket, function) };
        let handle = socket.cast::<SockHandle>().cast_const();
        // SAFETY: a provider socket handle, live while the socket is open.
        unsafe { (*handle).in_call.fetch_add(1, Ordering::SeqCst) };
        // One relaxed load on the common path: the provider is looked up only under a plan
        // that slows calls down.
        if SLOW_CALLS.load(Ordering::Relaxed)
            && let Some(slow) = provider().faults.slow_call
            && Some(slow.op) == op
        {
            std::thread::sleep(slow.delay);
        }
        Self(handle)
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        // SAFETY: the socket cannot have been freed: closing it while this call is in
        // progress bugchecks before anything is freed.
        unsafe { (*self.0).in_call.fetch_sub(1, Ordering::SeqCst) };
    }
}

/// Which dispatch table a socket has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Basic,
    Listen,
    Connection,
    Datagram,
}

/// The host socket behind a provider socket.
enum Host {
    /// Created (maybe bound), not yet listening or connecting.
    Raw(OwnedFd),
    Listener(TcpListener),
    Stream(TcpStream),
    Udp(UdpSocket),
    /// Closed by an abortive disconnect.
    Gone,
    /// In-memory network: created (maybe bound), not yet listening or connecting.
    MemoryUnbound(memory::Unbound),
    /// In-memory network: listening.
    MemoryListener(memory::Listener),
    /// In-memory network: connected.
    MemoryStream(memory::Stream),
    /// In-memory network: a bound datagram socket.
    MemoryDatagram(memory::Datagram),
}

impl Host {
    fn fd(&self) -> Option<RawFd> {
        match self {
            Host::Raw(fd) => Some(fd.as_raw_fd()),
            Host::Listener(l) => Some(l.as_raw_fd()),
            Host::Stream(s) => Some(s.as_raw_fd()),
            Host::Udp(u) => Some(u.as_raw_fd()),
            Host::Gone
            | Host::MemoryUnbound(_)
            | Host::MemoryListener(_)
            | Host::MemoryStream(_)
            | Host::MemoryDatagram(_) => None,
        }
    }

    /// Whether a socket is there (host or in memory): false once closed by an abortive
    /// disconnect.
    fn is_open(&self) -> bool {
        !matches!(self, Host::Gone)
    }

    /// Whether it listens.
    fn is_listener(&self) -> bool {
        matches!(self, Host::Listener(_) | Host::MemoryListener(_))
    }

    /// Whether it is a bound datagram socket.
    fn is_datagram(&self) -> bool {
        matches!(self, Host::Udp(_) | Host::MemoryDatagram(_))
    }

    /// Its connected stream, host or in memory.
    fn stream(&self) -> Option<&dyn buffers::ByteStream> {
        match self {
            Host::Stream(s) => Some(s),
            Host::MemoryStream(s) => Some(s),
            _ => None,
        }
    }

    /// Its local (`remote` false) or peer address.
    fn address(&self, remote: bool) -> Result<SocketAddr, NTSTATUS> {
        let memory = match (self, remote) {
            (Host::MemoryUnbound(u), false) => u.local(),
            (Host::MemoryListener(l), false) => Ok(l.local()),
            (Host::MemoryStream(s), false) => Ok(s.local()),
            (Host::MemoryStream(s), true) => Ok(s.peer()),
            (Host::MemoryDatagram(d), false) => Ok(d.local()),
            (Host::MemoryUnbound(_) | Host::MemoryListener(_) | Host::MemoryDatagram(_), true) => {
                return Err(STATUS_INVALID_DEVICE_STATE);
            }
            _ => {
                let Some(fd) = self.fd() else {
                    return Err(STATUS_INVALID_DEVICE_STATE);
                };
                let fd = os::FdRef(fd);
                if remote {
                    os::peer_addr(&fd)
                } else {
                    os::local_addr(&fd)
                }
            }
        };
        memory.map_err(|e| os::status_of(&e))
    }
}

/// A byte range of client memory (from an MDL chain).
#[derive(Clone, Copy)]
struct Seg {
    /// Its first byte.
    start: *mut u8,
    /// Its length in bytes.
    len: usize,
}

// SAFETY: the range lies in a client buffer its MDL keeps locked until the IRP completes, which
// the client leaves alone meanwhile; the provider reads or writes it from whichever thread
// makes progress on the IRP, under the provider lock.
unsafe impl Send for Seg {}

/// The byte ranges of one `WSK_BUF`, in order: one range (one MDL, the usual case) without a
/// heap allocation, more in a `Vec`. Reads as a slice.
enum Segs {
    /// No range, or one.
    Inline(Option<Seg>),
    /// Two ranges or more.
    Heap(Vec<Seg>),
}

impl Segs {
    /// No range.
    const fn new() -> Self {
        Self::Inline(None)
    }

    /// Appends `seg`.
    fn push(&mut self, seg: Seg) {
        match self {
            Self::Inline(None) => *self = Self::Inline(Some(seg)),
            Self::Inline(Some(first)) => *self = Self::Heap(std::vec![*first, seg]),
            Self::Heap(segs) => segs.push(seg),
        }
    }
}

impl core::ops::Deref for Segs {
    type Target = [Seg];

    fn deref(&self) -> &[Seg] {
        match self {
            Self::Inline(seg) => seg.as_slice(),
            Self::Heap(segs) => segs,
        }
    }
}

/// A client output buffer (a `SOCKADDR`, a `ULONG`) a queued operation fills when it
/// finishes; null when the client passed none.
struct ClientOut<T>(*mut T);

// SAFETY: the client keeps the buffer valid and leaves it alone until the IRP completes; the
// provider writes it once, from whichever thread finishes the operation under the provider
// lock, as a NIC's DPC would on Windows.
unsafe impl<T> Send for ClientOut<T> {}

impl<T> ClientOut<T> {
    /// The buffer's pointer, null when there is none.
    fn as_ptr(&self) -> *mut T {
        self.0
    }
}

/// What a queued IRP is waiting to do.
enum OpKind {
    Accept {
        local: ClientOut<SOCKADDR>,
        remote: ClientOut<SOCKADDR>,
        /// The accepted socket's client context and `WSK_CLIENT_CONNECTION_DISPATCH`.
        context: usize,
        dispatch: usize,
    },
    Connect {
        /// `IoStatus.Information` on success (the socket, for `WskSocketConnect`).
        info: usize,
        /// `WskSocketConnect`: the socket is the client's only on success.
        destroy_on_fail: bool,
    },
    Send {
        segs: Segs,
        total: usize,
        done: usize,
        nodelay: bool,
    },
    /// Graceful disconnect: the final buffer, then FIN.
    Disconnect {
        segs: Segs,
        total: usize,
        done: usize,
        /// The plan's [`Faults::disconnect_unacknowledged`](crate::faults::Faults): the FIN
        /// never completes, so only a cancel or the close ends the IRP.
        unacknowledged: bool,
    },
    Recv {
        segs: Segs,
        total: usize,
        done: usize,
        waitall: bool,
    },
    SendTo {
        data: Vec<u8>,
        to: SocketAddr,
    },
    /// `WskSendMessages`: each datagram in order; `next` is the first not yet sent, `sent`
    /// the bytes of those that were.
    SendMessages {
        datagrams: Vec<Vec<u8>>,
        next: usize,
        sent: usize,
        to: SocketAddr,
        /// The source address and interface index of the call's `IP_PKTINFO`/`IPV6_PKTINFO`
        /// control object (`transfer_calls::control_info_of`), if it had one.
        source: Option<(std::net::IpAddr, u32)>,
    },
    RecvFrom {
        segs: Segs,
        total: usize,
        from: ClientOut<SOCKADDR>,
        control_length: ClientOut<u32>,
        control_flags: ClientOut<u32>,
    },
}

/// A queued IRP.
struct Op {
    irp: IrpPtr,
    /// A cancel routine may be set (it is, whenever the op is queued).
    armed: bool,
    kind: OpKind,
}

impl Op {
    fn new(irp: IrpPtr, kind: OpKind) -> Self {
        Self {
            irp,
            armed: false,
            kind,
        }
    }

    /// Bytes already transferred (reported when the op is cancelled).
    fn progress(&self) -> usize {
        match &self.kind {
            OpKind::Send { done, .. }
            | OpKind::Disconnect { done, .. }
            | OpKind::Recv { done, .. } => *done,
            _ => 0,
        }
    }
}

/// One attempt's outcome.
enum Step {
    Finished(NTSTATUS, usize),
    Wait,
}

/// A provider socket's state.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent TCP state bits, as a transport keeps them"
)]
pub(super) struct Sock {
    id: u64,
    client: u64,
    kind: Kind,
    v6: bool,
    handle: SockHandlePtr,
    host: Host,
    bound: bool,
    connecting: bool,
    connected: bool,
    /// A graceful disconnect was issued: no more sends.
    send_shut: bool,
    /// FIN was sent.
    fin_sent: bool,
    /// The peer's FIN was received.
    recv_eof: bool,
    /// Abortive disconnect: the host socket is gone.
    aborted: bool,
    /// A fatal connection error (reset): every later transfer fails with it.
    error: Option<NTSTATUS>,
    /// The host stream had nothing more at the last read (it came back short or empty) and no
    /// readiness event came since: the next receive waits for the reactor's event instead of
    /// paying a system call to hear `EAGAIN`. Host sockets only (see `progress`).
    drained: bool,
    /// A readiness event said the peer closed or the connection failed: from then on every
    /// receive reads ([`drained`](Self::drained) is ignored), since a short read no longer
    /// means "wait for an event" (the end of stream or the error is there to read, and its
    /// one edge may already have been consumed).
    read_closed: bool,
    /// A failed `WskSocketConnect`: the socket is dropped by the pump.
    destroy: bool,
    reuse: bool,
    exclusive: bool,
    nodelay: bool,
    /// Created with `SOCK_DGRAM`.
    datagram: bool,
    /// A datagram socket's fixed destination (`SIO_WSK_SET_REMOTE_ADDRESS` or
    /// `SIO_WSK_SET_SENDTO_ADDRESS`): where a `WskSendTo` without an address goes.
    send_to_default: Option<SocketAddr>,
    /// A datagram socket's fixed remote address (`SIO_WSK_SET_REMOTE_ADDRESS`): datagrams
    /// from any other sender are dropped.
    receive_filter: Option<SocketAddr>,
    /// Queued accepts, served first come first served (WSK allows several).
    accepts: OpQueue,
    connect: Option<Op>,
    recvs: OpQueue,
    sends: OpQueue,
    /// Event callbacks (`SO_WSK_EVENT_CALLBACK`), see `events`.
    ev: events::EventState,
    /// Datagrams a `WskReceiveFromEvent` callback refused (`STATUS_DATA_NOT_ACCEPTED`), oldest
    /// first: the next `WskReceiveFrom` or indication gets them before the host socket's (see
    /// `datagram_events`).
    refused_datagrams: VecDeque<(Vec<u8>, SocketAddr)>,
}

impl Sock {
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    pub(super) fn client(&self) -> u64 {
        self.client
    }

    /// One line for the leak report.
    pub(super) fn describe(&self) -> String {
        let pending = self.accepts.len()
            + usize::from(self.connect.is_some())
            + self.recvs.len()
            + self.sends.len();
        format!(
            "WSK socket {} ({:?}, client registration {}) still open with {pending} IRPs \
             pending{}",
            self.id,
            self.kind,
            self.client,
            self.ev.describe()
        )
    }

    /// Drops the host socket, resetting a connection when `abortive`.
    fn release_host(&mut self, io: &Io, abortive: bool) {
        match core::mem::replace(&mut self.host, Host::Gone) {
            Host::MemoryStream(s) => s.release(abortive),
            Host::Stream(mut s) => {
                let _ = io.deregister(&mut s);
                if abortive {
                    let _ = os::set_linger_zero(s.as_raw_fd());
                }
            }
            Host::Listener(mut l) => {
                let _ = io.deregister(&mut l);
            }
            Host::Udp(mut u) => {
                let _ = io.deregister(&mut u);
            }
            Host::Raw(_)
            | Host::Gone
            | Host::MemoryUnbound(_)
            | Host::MemoryListener(_)
            | Host::MemoryDatagram(_) => {}
        }
    }

    /// Drops everything without completing anything (kernel shutdown).
    pub(super) fn forget(mut self, io: &Io) {
        self.release_host(io, false);
        self.ev.forget();
    }

    /// Every queued op, taken out of the socket.
    fn take_all(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        ops.extend(self.accepts.drain());
        ops.extend(self.connect.take());
        ops.extend(self.recvs.drain());
        ops.extend(self.sends.drain());
        ops
    }

    fn find_op(&mut self, irp: IrpPtr) -> Option<&mut Op> {
        self.accepts
            .iter_mut()
            .chain(self.connect.iter_mut())
            .chain(self.recvs.iter_mut())
            .chain(self.sends.iter_mut())
            .find(|o| o.irp == irp)
    }

    fn remove_op(&mut self, irp: IrpPtr) -> Option<Op> {
        if self.connect.as_ref().is_some_and(|o| o.irp == irp) {
            return self.connect.take();
        }
        [&mut self.accepts, &mut self.recvs, &mut self.sends]
            .into_iter()
            .find_map(|q| q.remove(irp))
    }
}

fn token(id: u64) -> Token {
    Token(usize::try_from(id).unwrap_or(usize::MAX - 1))
}

fn table(kind: Kind) -> *const c_void {
    match kind {
        Kind::Basic => (&raw const BASIC_DISPATCH).cast(),
        Kind::Listen => (&raw const LISTEN_DISPATCH).cast(),
        Kind::Connection => (&raw const CONNECTION_DISPATCH).cast(),
        Kind::Datagram => (&raw const DATAGRAM_DISPATCH).cast(),
    }
}

fn new_sock(id: u64, client: u64, kind: Kind, v6: bool, host: Host) -> Sock {
    let handle = SockHandlePtr::allocate(SockHandle {
        wsk: WSK_SOCKET {
            Dispatch: table(kind),
        },
        id,
        in_call: core::sync::atomic::AtomicU32::new(0),
    });
    Sock {
        id,
        client,
        kind,
        v6,
        handle,
        host,
        bound: false,
        connecting: false,
        connected: false,
        send_shut: false,
        fin_sent: false,
        recv_eof: false,
        aborted: false,
        error: None,
        drained: false,
        read_closed: false,
        destroy: false,
        reuse: false,
        exclusive: false,
        nodelay: false,
        datagram: kind == Kind::Datagram,
        send_to_default: None,
        receive_filter: None,
        accepts: OpQueue::new(),
        connect: None,
        recvs: OpQueue::new(),
        sends: OpQueue::new(),
        ev: events::EventState::default(),
        refused_datagrams: VecDeque::new(),
    }
}

/// Whether the reactor should make an indication on socket `id` (see `events`).
pub(super) fn indication_due(st: &State, id: u64) -> bool {
    st.sockets.get(&id).is_some_and(events::due)
}

/// The provider socket id behind a client's `WSK_SOCKET`.
///
/// # Safety
/// `socket` was returned by this provider and its close has not completed.
unsafe fn handle_id(socket: *mut WSK_SOCKET, function: &'static str) -> u64 {
    if socket.is_null() {
        bugcheck("WSK_NULL_SOCKET", format!("{function}: null WSK_SOCKET"));
    }
    // SAFETY: provider sockets are SockHandles with the WSK_SOCKET first.
    unsafe { (*socket.cast::<SockHandle>()).id }
}

/// The start of every IRP-taking socket call: IRQL rule, the IRP taken as lower driver.
///
/// # Safety
/// `irp` is a live IRP with a stack location for the provider; `socket` as [`handle_id`].
pub(super) unsafe fn begin(
    function: &'static str,
    socket: *mut WSK_SOCKET,
    client: *mut WSK_CLIENT,
    irp: *mut IRP,
) -> Result<(Arc<Provider>, u64, bool, Out), NTSTATUS> {
    // IRQL <= DISPATCH_LEVEL for every call that starts here, each from its own WDK page:
    // WskSocket: "PFN_WSK_SOCKET callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_socket
    // WskSocketConnect: "PFN_WSK_SOCKET_CONNECT callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_socket_connect
    // WskControlClient: "PFN_WSK_CONTROL_CLIENT callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_client
    // WskControlSocket: "PFN_WSK_CONTROL_SOCKET callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_socket
    // WskCloseSocket: "PFN_WSK_CLOSE_SOCKET callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_close_socket
    // WskBind: "PFN_WSK_BIND callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_bind
    // WskAccept: "PFN_WSK_ACCEPT callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_accept
    // WskInspectComplete: "PFN_WSK_INSPECT_COMPLETE callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_inspect_complete
    // WskConnect: "PFN_WSK_CONNECT callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_connect
    // WskSend: "PFN_WSK_SEND callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send
    // WskReceive: "PFN_WSK_RECEIVE callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive
    // WskDisconnect: "PFN_WSK_DISCONNECT callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_disconnect
    // WskSendTo: "PFN_WSK_SEND_TO callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_to
    // WskSendMessages: "PFN_WSK_SEND_MESSAGES callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_messages
    // WskReceiveFrom: "PFN_WSK_RECEIVE_FROM callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_from
    // WskGetLocalAddress: "PFN_WSK_GET_LOCAL_ADDRESS callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_local_address
    // WskGetRemoteAddress: "PFN_WSK_GET_REMOTE_ADDRESS callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_remote_address
    // WskGetAddressInfo and WskGetNameInfo come here too, after their own PASSIVE_LEVEL check.
    // (No WskListen: it is for WSK_FLAG_STREAM_SOCKET sockets, which this provider refuses.)
    require_at_most(DISPATCH_LEVEL, function);
    let Some(tracked) = IrpPtr::new(irp) else {
        // Windows fails the call without an IRP to complete.
        return Err(STATUS_INVALID_PARAMETER);
    };
    let id = if socket.is_null() {
        0
    } else {
        // SAFETY: forwarded contract.
        unsafe { handle_id(socket, function) }
    };
    let p = provider();
    let mut st = p.lock();
    let owner = if socket.is_null() {
        // An unknown client handle: Windows returns STATUS_INVALID_HANDLE and leaves the IRP
        // alone (Wine's conformance test records it).
        super::client_id(&st, client, function).map_err(|_| STATUS_INVALID_HANDLE)?
    } else {
        match sock_mut(&mut st, id, function) {
            Ok(s) => s.client,
            Err(detail) => {
                drop(st);
                // A closed socket's memory may already be gone: on Windows, a crash.
                // "PFN_WSK_CLOSE_SOCKET callback function (wsk.h)": after WskCloseSocket, no
                // further calls to the socket's functions: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_close_socket
                bugcheck("WSK_SOCKET_CLOSED", detail);
            }
        }
    };
    st.irps.entry(tracked).or_insert((owner, 0)).1 += 1;
    drop(st);
    // SAFETY: forwarded contract.
    unsafe { glue::enter(irp) };
    // SAFETY: the IRP is live and now the provider's: nobody else touches its tail meanwhile.
    let tail = unsafe { &mut (*irp).Tail };
    // SAFETY: while the IRP is in flight `Overlay` is the union's member in use, and the
    // driver context of the provider's location is ours.
    unsafe { tail.Overlay.DriverContext[0] = usize::try_from(id).unwrap_or(0) as PVOID };
    let inline = p.decide_inline();
    Ok((p, id, inline, Out::new(tracked)))
}

/// The socket `id`, or the verifier's report of a call on a socket that is closed or closing.
fn sock_mut<'a>(
    st: &'a mut State,
    id: u64,
    function: &'static str,
) -> Result<&'a mut Sock, String> {
    st.sockets
        .get_mut(&id)
        .ok_or_else(|| format!("{function} on socket {id}, which is closed or closing"))
}

macro_rules! locked_sock {
    ($p:expr, $st:ident, $sock:ident, $id:expr, $function:expr) => {
        let mut $st = $p.lock();
        let $sock = match sock_mut(&mut $st, $id, $function) {
            Ok(s) => s,
            Err(detail) => {
                drop($st);
                bugcheck("WSK_SOCKET_CLOSED", detail);
            }
        };
    };
}

// After `locked_sock`, so that the call modules see the macro.
mod accept_events;
mod buffers;
mod client_calls;
mod datagram_events;
mod events;
mod op_queue;
mod options;
mod progress;
mod queue;
mod setup_calls;
mod transfer_calls;

use self::client_calls::{wsk_control_client, wsk_socket, wsk_socket_connect};
pub(super) use self::events::indicate;
use self::op_queue::OpQueue;
pub(super) use self::queue::{pump, pump_ready};
use self::setup_calls::{
    wsk_accept, wsk_bind, wsk_close_socket, wsk_connect, wsk_control_socket, wsk_inspect_complete,
};
use self::transfer_calls::{
    wsk_disconnect, wsk_get_local_address, wsk_get_remote_address, wsk_receive, wsk_receive_from,
    wsk_send, wsk_send_messages, wsk_send_to,
};

/// The client-level provider dispatch table `WskCaptureProviderNPI` hands out.
pub(super) static PROVIDER_DISPATCH: WSK_PROVIDER_DISPATCH = WSK_PROVIDER_DISPATCH {
    Version: MAKE_WSK_VERSION(1, 0),
    Reserved: 0,
    WskSocket: Some(wsk_socket),
    WskSocketConnect: Some(wsk_socket_connect),
    WskControlClient: Some(wsk_control_client),
    WskGetAddressInfo: Some(super::resolve::wsk_get_address_info),
    WskFreeAddressInfo: Some(super::resolve::wsk_free_address_info),
    WskGetNameInfo: Some(super::resolve::wsk_get_name_info),
};

const BASIC: WSK_PROVIDER_BASIC_DISPATCH = WSK_PROVIDER_BASIC_DISPATCH {
    WskControlSocket: Some(wsk_control_socket),
    WskCloseSocket: Some(wsk_close_socket),
};

static BASIC_DISPATCH: WSK_PROVIDER_BASIC_DISPATCH = BASIC;

static LISTEN_DISPATCH: WSK_PROVIDER_LISTEN_DISPATCH = WSK_PROVIDER_LISTEN_DISPATCH {
    Basic: BASIC,
    WskBind: Some(wsk_bind),
    WskAccept: Some(wsk_accept),
    WskInspectComplete: Some(wsk_inspect_complete),
    WskGetLocalAddress: Some(wsk_get_local_address),
};

static CONNECTION_DISPATCH: WSK_PROVIDER_CONNECTION_DISPATCH = WSK_PROVIDER_CONNECTION_DISPATCH {
    Basic: BASIC,
    WskBind: Some(wsk_bind),
    WskConnect: Some(wsk_connect),
    WskGetLocalAddress: Some(wsk_get_local_address),
    WskGetRemoteAddress: Some(wsk_get_remote_address),
    WskSend: Some(wsk_send),
    WskReceive: Some(wsk_receive),
    WskDisconnect: Some(wsk_disconnect),
    WskRelease: Some(events::wsk_release),
    WskConnectEx: None,
    WskSendEx: None,
    WskReceiveEx: None,
};

static DATAGRAM_DISPATCH: WSK_PROVIDER_DATAGRAM_DISPATCH = WSK_PROVIDER_DATAGRAM_DISPATCH {
    Basic: BASIC,
    WskBind: Some(wsk_bind),
    WskSendTo: Some(wsk_send_to),
    WskReceiveFrom: Some(wsk_receive_from),
    WskRelease: Some(datagram_events::wsk_release),
    WskGetLocalAddress: Some(wsk_get_local_address),
    WskSendMessages: Some(wsk_send_messages),
};
