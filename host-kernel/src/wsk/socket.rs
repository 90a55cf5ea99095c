//! Provider sockets: the `WSK_SOCKET` objects, their dispatch tables, the IRP queues on each
//! socket and the progress the provider makes on them against the host socket.
//!
//! Cancellation is the standard NT pattern: every queued IRP carries a cancel routine; whoever
//! swaps it out first owns completion. The provider swaps it out before each attempt and puts
//! it back when the operation has to wait; a cancel routine that finds its IRP still queued
//! takes it out, and completes the IRP as cancelled in any case.

use core::ffi::c_void;
use core::sync::atomic::Ordering;
use std::boxed::Box;
use std::collections::VecDeque;
use std::format;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::string::String;
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use super::glue::{self, bugcheck, require_at_most};
use super::os::{self, linux};
use super::{CURRENT, Done, Out, Provider, State, lock, provider};
use crate::faults::WskOp;
use crate::{
    AF_INET, AF_INET6, DEVICE_OBJECT, DISPATCH_LEVEL, IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, IRP,
    IoReleaseCancelSpinLock, IoSetCancelRoutine, MAKE_WSK_VERSION, MDL, MDL_MAPPED_TO_SYSTEM_VA,
    MDL_SOURCE_IS_NONPAGED_POOL, MmGetMdlVirtualAddress, NT_SUCCESS, NTSTATUS, PASSIVE_LEVEL,
    PEPROCESS, PETHREAD, PVOID, SIZE_T, SO_EXCLUSIVEADDRUSE, SO_KEEPALIVE, SO_REUSEADDR,
    SOCK_DGRAM, SOCK_STREAM, SOCKADDR, SOL_SOCKET, STATUS_ADDRESS_ALREADY_ASSOCIATED,
    STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_CONNECTION_ABORTED,
    STATUS_INVALID_ADDRESS_COMPONENT, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
    TCP_NODELAY, UNICODE_STRING, WSK_BUF, WSK_CLIENT, WSK_CONTROL_SOCKET_TYPE, WSK_FLAG_ABORTIVE,
    WSK_FLAG_BASIC_SOCKET, WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_DRAIN,
    WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_STREAM_SOCKET, WSK_FLAG_WAITALL,
    WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH,
    WSK_PROVIDER_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_SOCKET, WskGetOption, WskSetOption,
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
}

impl Host {
    fn fd(&self) -> Option<RawFd> {
        match self {
            Host::Raw(fd) => Some(fd.as_raw_fd()),
            Host::Listener(l) => Some(l.as_raw_fd()),
            Host::Stream(s) => Some(s.as_raw_fd()),
            Host::Udp(u) => Some(u.as_raw_fd()),
            Host::Gone => None,
        }
    }
}

/// A byte range of client memory (from an MDL chain).
type Seg = (usize, usize);

/// What a queued IRP is waiting to do.
enum OpKind {
    Accept {
        local: usize,
        remote: usize,
    },
    Connect {
        /// `IoStatus.Information` on success (the socket, for `WskSocketConnect`).
        info: usize,
        /// `WskSocketConnect`: the socket is the client's only on success.
        destroy_on_fail: bool,
    },
    Send {
        segs: Vec<Seg>,
        total: usize,
        done: usize,
        nodelay: bool,
    },
    /// Graceful disconnect: the final buffer, then FIN.
    Disconnect {
        segs: Vec<Seg>,
        total: usize,
        done: usize,
    },
    Recv {
        segs: Vec<Seg>,
        total: usize,
        done: usize,
        waitall: bool,
    },
    SendTo {
        data: Vec<u8>,
        to: SocketAddr,
    },
    RecvFrom {
        segs: Vec<Seg>,
        total: usize,
        from: usize,
        control_length: usize,
        control_flags: usize,
    },
}

/// A queued IRP.
struct Op {
    irp: usize,
    /// A cancel routine may be set (it is, whenever the op is queued).
    armed: bool,
    kind: OpKind,
}

impl Op {
    fn new(irp: *mut IRP, kind: OpKind) -> Self {
        Self {
            irp: irp as usize,
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
    handle: usize,
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
    /// A failed `WskSocketConnect`: the socket is dropped by the pump.
    destroy: bool,
    reuse: bool,
    exclusive: bool,
    nodelay: bool,
    /// Created with `SOCK_DGRAM`.
    datagram: bool,
    /// Queued accepts, served first come first served (WSK allows several).
    accepts: VecDeque<Op>,
    connect: Option<Op>,
    recvs: VecDeque<Op>,
    sends: VecDeque<Op>,
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
            "WSK socket {} ({:?}, client registration {}) still open with {pending} IRPs pending",
            self.id, self.kind, self.client
        )
    }

    /// Drops the host socket, resetting a connection when `abortive`.
    fn release_host(&mut self, registry: &Registry, abortive: bool) {
        match core::mem::replace(&mut self.host, Host::Gone) {
            Host::Stream(mut s) => {
                let _ = registry.deregister(&mut s);
                if abortive {
                    let _ = os::set_linger_zero(s.as_raw_fd());
                }
            }
            Host::Listener(mut l) => {
                let _ = registry.deregister(&mut l);
            }
            Host::Udp(mut u) => {
                let _ = registry.deregister(&mut u);
            }
            Host::Raw(_) | Host::Gone => {}
        }
    }

    /// Drops everything without completing anything (kernel shutdown).
    pub(super) fn forget(mut self, registry: &Registry) {
        self.release_host(registry, false);
    }

    /// Every queued op, taken out of the socket.
    fn take_all(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        ops.extend(self.accepts.drain(..));
        ops.extend(self.connect.take());
        ops.extend(self.recvs.drain(..));
        ops.extend(self.sends.drain(..));
        ops
    }

    fn find_op(&mut self, irp: usize) -> Option<&mut Op> {
        self.accepts
            .iter_mut()
            .chain(self.connect.iter_mut())
            .chain(self.recvs.iter_mut())
            .chain(self.sends.iter_mut())
            .find(|o| o.irp == irp)
    }

    fn remove_op(&mut self, irp: usize) -> Option<Op> {
        if self.connect.as_ref().is_some_and(|o| o.irp == irp) {
            return self.connect.take();
        }
        for q in [&mut self.accepts, &mut self.recvs, &mut self.sends] {
            if let Some(i) = q.iter().position(|o| o.irp == irp) {
                return q.remove(i);
            }
        }
        None
    }
}

/// Runs one attempt of a queued op as the owner of its completion.
fn attempt(op: &mut Op, step: impl FnOnce(&mut Op) -> Step) -> Option<(NTSTATUS, usize)> {
    let irp = op.irp as *mut IRP;
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
unsafe fn arm(irp: *mut IRP) -> bool {
    // SAFETY: the caller guarantees a live IRP; `Cancel` is written by IoCancelIrp on another
    // thread, hence the volatile read.
    unsafe {
        let _ = IoSetCancelRoutine(irp, Some(cancel_routine));
        if core::ptr::read_volatile(&raw const (*irp).Cancel) != 0
            && IoSetCancelRoutine(irp, None).is_some()
        {
            return false;
        }
    }
    true
}

/// Takes an op out for an immediate end (close, abort): its Done, or `None` when the cancel
/// routine already owns it (it completes the IRP, not finding it queued).
fn claim_now(op: &Op, status: NTSTATUS, sock: u64) -> Option<Done> {
    let irp = op.irp as *mut IRP;
    // SAFETY: a queued op's IRP is live until completed by its owner.
    if op.armed && unsafe { IoSetCancelRoutine(irp, None) }.is_none() {
        return None;
    }
    Some(Done::new(irp, status, op.progress(), sock))
}

/// The `DRIVER_CANCEL` routine of every queued provider IRP. Called with the cancel spin lock
/// held; releases it, takes the IRP out of its queue and completes it as cancelled.
unsafe extern "system" fn cancel_routine(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: IoCancelIrp calls us with the cancel spin lock held and the IRP live.
    let (cancel_irql, id) = unsafe {
        (
            (*irp).CancelIrql,
            (*irp).Tail.Overlay.DriverContext[0] as u64,
        )
    };
    // SAFETY: we hold the cancel spin lock, acquired at `CancelIrql`.
    unsafe { IoReleaseCancelSpinLock(cancel_irql) };
    let current = lock(&CURRENT).clone();
    let mut info = 0;
    let mut dones = Vec::new();
    if let Some(p) = &current {
        let mut st = p.lock();
        if let Some(sock) = st.sockets.get_mut(&id)
            && let Some(op) = sock.remove_op(irp as usize)
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
        pump(&mut st, &p.registry, id, &mut dones);
    }
    if let Some(p) = current {
        // The cancel routine owns completion of an IRP whose routine it was called as.
        p.complete_irp(irp, STATUS_CANCELLED, info);
        let inline = p.decide_inline();
        p.deliver(dones, inline);
    } else {
        // SAFETY: as above; no provider is left to account for it (kernel shut down).
        unsafe { glue::complete(irp, STATUS_CANCELLED, info) };
    }
}

/// Makes progress on socket `id`'s queues against its host socket; finished IRPs go to
/// `dones`. Sockets accepted on the way are added to the state.
pub(super) fn pump(st: &mut State, registry: &Registry, id: u64, dones: &mut Vec<Done>) {
    let Some(mut sock) = st.sockets.remove(&id) else {
        return;
    };
    let mut born = Vec::new();
    progress(&mut sock, registry, &mut st.next_id, &mut born, dones);
    if sock.destroy {
        // A WskSocketConnect that failed: the client never saw this socket.
        sock.release_host(registry, false);
        // SAFETY: the handle was leaked from a Box at creation and never given out.
        drop(unsafe { Box::from_raw(sock.handle as *mut SockHandle) });
    } else {
        st.sockets.insert(id, sock);
    }
    for b in born {
        st.sockets.insert(b.id, b);
    }
}

/// The byte range of `segs` at byte `offset`.
fn seg_at(segs: &[Seg], mut offset: usize) -> (usize, usize) {
    for &(ptr, len) in segs {
        if offset < len {
            return (ptr + offset, len - offset);
        }
        offset -= len;
    }
    (0, 0)
}

/// Reads one chunk of a stream into client memory.
fn read_into(stream: &TcpStream, (ptr, len): Seg) -> io::Result<usize> {
    // SAFETY: the range lies in the locked client buffer of a pending receive IRP, which the
    // client may not touch until the IRP completes.
    let buf = unsafe { core::slice::from_raw_parts_mut(ptr as *mut u8, len) };
    let mut s = stream;
    s.read(buf)
}

/// Writes one chunk of client memory to a stream.
fn write_from(stream: &TcpStream, (ptr, len): Seg) -> io::Result<usize> {
    // SAFETY: the range lies in the locked client buffer of a pending send IRP.
    let buf = unsafe { core::slice::from_raw_parts(ptr as *const u8, len) };
    let mut s = stream;
    s.write(buf)
}

/// Sends `segs[done..total]`; `Ok(true)` when everything is written.
fn send_some(
    stream: &TcpStream,
    segs: &[Seg],
    total: usize,
    done: &mut usize,
) -> Result<bool, io::Error> {
    while *done < total {
        match write_from(stream, seg_at(segs, *done)) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[allow(
    clippy::too_many_lines,
    reason = "one match arm per operation kind, kept together"
)]
fn progress(
    sock: &mut Sock,
    registry: &Registry,
    next_id: &mut u64,
    born: &mut Vec<Sock>,
    dones: &mut Vec<Done>,
) {
    let sid = sock.id;
    // Connect.
    if let Some(op) = sock.connect.as_mut() {
        let host = &sock.host;
        let result = attempt(op, |_| connect_step(host));
        if let Some((status, info)) = result {
            let op = sock.connect.take().expect("connect op present");
            sock.connecting = false;
            let mut info_out = info;
            if NT_SUCCESS(status) {
                sock.connected = true;
                sock.bound = true;
                if let OpKind::Connect { info, .. } = op.kind {
                    info_out = info;
                }
            } else if let OpKind::Connect {
                destroy_on_fail: true,
                ..
            } = op.kind
            {
                sock.destroy = true;
            }
            dones.push(Done::new(op.irp as *mut IRP, status, info_out, sid));
        }
    }
    // Accepts, in order.
    while let Some(op) = sock.accepts.front_mut() {
        let (host, v6, client) = (&sock.host, sock.v6, sock.client);
        let result = attempt(op, |op| {
            let Host::Listener(listener) = host else {
                return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
            };
            let OpKind::Accept { local, remote } = op.kind else {
                return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
            };
            loop {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        *next_id += 1;
                        let id = *next_id;
                        if let Err(e) = registry.register(
                            &mut stream,
                            token(id),
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            return Step::Finished(os::status_of(&e), 0);
                        }
                        let local_addr = os::local_addr(&stream).ok();
                        let mut child =
                            new_sock(id, client, Kind::Connection, v6, Host::Stream(stream));
                        child.bound = true;
                        child.connected = true;
                        // SAFETY: the client keeps the address buffers valid until completion.
                        unsafe {
                            if let Some(a) = local_addr {
                                os::write_sockaddr(local as *mut SOCKADDR, &a);
                            }
                            os::write_sockaddr(remote as *mut SOCKADDR, &peer);
                        }
                        let handle = child.handle;
                        born.push(child);
                        return Step::Finished(STATUS_SUCCESS, handle);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The connection died in the backlog: wait for the next one.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(e) => return Step::Finished(os::status_of(&e), 0),
                }
            }
        });
        match result {
            Some((status, info)) => {
                let op = sock.accepts.pop_front().expect("accept op present");
                dones.push(Done::new(op.irp as *mut IRP, status, info, sid));
            }
            None => break,
        }
    }
    // Receives, in order.
    while let Some(op) = sock.recvs.front_mut() {
        let host = &sock.host;
        let (eof, error, aborted) = (&mut sock.recv_eof, &mut sock.error, sock.aborted);
        let result = attempt(op, |op| {
            if aborted {
                return Step::Finished(STATUS_CONNECTION_ABORTED, 0);
            }
            if let Some(e) = *error {
                return Step::Finished(e, 0);
            }
            match (&mut op.kind, host) {
                (
                    OpKind::Recv {
                        segs,
                        total,
                        done,
                        waitall,
                    },
                    Host::Stream(stream),
                ) => loop {
                    if *done == *total {
                        return Step::Finished(STATUS_SUCCESS, *done);
                    }
                    match read_into(stream, seg_at(segs, *done)) {
                        Ok(0) => {
                            *eof = true;
                            return Step::Finished(STATUS_SUCCESS, *done);
                        }
                        Ok(n) => *done += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if *done > 0 && !*waitall {
                                return Step::Finished(STATUS_SUCCESS, *done);
                            }
                            return Step::Wait;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let status = os::status_of(&e);
                            *error = Some(status);
                            return Step::Finished(status, *done);
                        }
                    }
                },
                (
                    OpKind::RecvFrom {
                        segs,
                        total,
                        from,
                        control_length,
                        control_flags,
                    },
                    Host::Udp(udp),
                ) => {
                    let mut data = vec![0u8; 65_536];
                    loop {
                        match udp.recv_from(&mut data) {
                            Ok((n, peer)) => {
                                let n = n.min(*total);
                                scatter(segs, &data[..n]);
                                // SAFETY: the client keeps these outputs valid until completion.
                                unsafe {
                                    os::write_sockaddr(*from as *mut SOCKADDR, &peer);
                                    if *control_length != 0 {
                                        (*control_length as *mut u32).write_unaligned(0);
                                    }
                                    if *control_flags != 0 {
                                        (*control_flags as *mut u32).write_unaligned(0);
                                    }
                                }
                                return Step::Finished(STATUS_SUCCESS, n);
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            // ICMP errors from earlier sends: not this receive's business.
                            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                            Err(e) => return Step::Finished(os::status_of(&e), 0),
                        }
                    }
                }
                _ => Step::Finished(STATUS_INVALID_DEVICE_STATE, 0),
            }
        });
        match result {
            Some((status, info)) => {
                let op = sock.recvs.pop_front().expect("receive op present");
                dones.push(Done::new(op.irp as *mut IRP, status, info, sid));
            }
            None => break,
        }
    }
    // Sends and graceful disconnects, in order.
    while let Some(op) = sock.sends.front_mut() {
        let host = &sock.host;
        let (error, aborted, fin_sent, nodelay_set) = (
            &mut sock.error,
            sock.aborted,
            &mut sock.fin_sent,
            sock.nodelay,
        );
        let result = attempt(op, |op| {
            if aborted {
                return Step::Finished(STATUS_CONNECTION_ABORTED, 0);
            }
            if let Some(e) = *error {
                return Step::Finished(e, 0);
            }
            match (&mut op.kind, host) {
                (
                    OpKind::Send {
                        segs,
                        total,
                        done,
                        nodelay,
                    },
                    Host::Stream(stream),
                ) => {
                    let push = *nodelay && !nodelay_set;
                    if push {
                        let _ = os::set_int(
                            stream.as_raw_fd(),
                            linux::IPPROTO_TCP,
                            linux::TCP_NODELAY,
                            1,
                        );
                    }
                    let result = send_some(stream, segs, *total, done);
                    if push {
                        let _ = os::set_int(
                            stream.as_raw_fd(),
                            linux::IPPROTO_TCP,
                            linux::TCP_NODELAY,
                            0,
                        );
                    }
                    match result {
                        Ok(true) => Step::Finished(STATUS_SUCCESS, *total),
                        Ok(false) => Step::Wait,
                        Err(e) => {
                            let status = os::status_of(&e);
                            *error = Some(status);
                            Step::Finished(status, *done)
                        }
                    }
                }
                (OpKind::Disconnect { segs, total, done }, Host::Stream(stream)) => {
                    match send_some(stream, segs, *total, done) {
                        Ok(true) => match os::shutdown_write(stream) {
                            Ok(()) => {
                                *fin_sent = true;
                                Step::Finished(STATUS_SUCCESS, 0)
                            }
                            Err(e) => Step::Finished(os::status_of(&e), 0),
                        },
                        Ok(false) => Step::Wait,
                        Err(e) => {
                            let status = os::status_of(&e);
                            *error = Some(status);
                            Step::Finished(status, 0)
                        }
                    }
                }
                (OpKind::SendTo { data, to }, Host::Udp(udp)) => loop {
                    match udp.send_to(data, *to) {
                        Ok(n) => return Step::Finished(STATUS_SUCCESS, n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::Finished(os::status_of(&e), 0),
                    }
                },
                _ => Step::Finished(STATUS_INVALID_DEVICE_STATE, 0),
            }
        });
        match result {
            Some((status, info)) => {
                let op = sock.sends.pop_front().expect("send op present");
                dones.push(Done::new(op.irp as *mut IRP, status, info, sid));
            }
            None => break,
        }
    }
}

/// A pending connect: done, failed, or still in progress?
fn connect_step(host: &Host) -> Step {
    let Host::Stream(stream) = host else {
        return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
    };
    match os::take_error(stream) {
        Ok(Some(e)) | Err(e) => return Step::Finished(os::status_of(&e), 0),
        Ok(None) => {}
    }
    match os::peer_addr(stream) {
        Ok(_) => Step::Finished(STATUS_SUCCESS, 0),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Step::Wait,
        Err(e) => Step::Finished(os::status_of(&e), 0),
    }
}

/// Copies `data` into client memory described by `segs`.
fn scatter(segs: &[Seg], mut data: &[u8]) {
    for &(ptr, len) in segs {
        if data.is_empty() {
            break;
        }
        let n = len.min(data.len());
        // SAFETY: the range lies in the locked client buffer of a pending receive IRP.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), ptr as *mut u8, n) };
        data = &data[n..];
    }
}

/// Copies client memory described by `segs` out.
fn gather(segs: &[Seg]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(ptr, len) in segs {
        // SAFETY: the range lies in the locked client buffer of the send IRP being issued.
        out.extend_from_slice(unsafe { core::slice::from_raw_parts(ptr as *const u8, len) });
    }
    out
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
    let handle = Box::into_raw(Box::new(SockHandle {
        wsk: WSK_SOCKET {
            Dispatch: table(kind),
        },
        id,
        in_call: core::sync::atomic::AtomicU32::new(0),
    }));
    Sock {
        id,
        client,
        kind,
        v6,
        handle: handle as usize,
        host,
        bound: false,
        connecting: false,
        connected: false,
        send_shut: false,
        fin_sent: false,
        recv_eof: false,
        aborted: false,
        error: None,
        destroy: false,
        reuse: false,
        exclusive: false,
        nodelay: false,
        datagram: kind == Kind::Datagram,
        accepts: VecDeque::new(),
        connect: None,
        recvs: VecDeque::new(),
        sends: VecDeque::new(),
    }
}

/// The MDL's buffer address.
///
/// # Safety
/// `mdl` is a live MDL.
unsafe fn mdl_va(mdl: *mut MDL) -> usize {
    // SAFETY: the caller guarantees a live MDL.
    unsafe {
        let mapped = (*mdl).MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0;
        if mapped && !(*mdl).MappedSystemVa.is_null() {
            (*mdl).MappedSystemVa as usize
        } else {
            MmGetMdlVirtualAddress(mdl) as usize
        }
    }
}

/// The client memory a `WSK_BUF` describes. The verifier fails a `WSK_BUF` longer than its
/// MDL chain (Windows bluescreens).
///
/// # Safety
/// `buf` is null or a valid `WSK_BUF` whose MDL chain is live.
unsafe fn segments(buf: *const WSK_BUF, function: &'static str) -> Vec<Seg> {
    if buf.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees a valid WSK_BUF.
    let wsk_buf = unsafe { *buf };
    let mut segs = Vec::new();
    let mut remaining = wsk_buf.Length;
    let mut skip = wsk_buf.Offset as usize;
    let mut mdl = wsk_buf.Mdl;
    let mut chain = 0usize;
    while remaining > 0 {
        // "WSK_BUF structure (wsk.h)": Length is the number of bytes in the MDL chain, each MDL
        // locked or from nonpaged pool: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/ns-wsk-_wsk_buf
        if mdl.is_null() {
            bugcheck(
                "WSK_BUF_EXCEEDS_MDL",
                format!(
                    "{function}: WSK_BUF Offset {} Length {} exceeds its MDL chain of {chain} bytes",
                    wsk_buf.Offset, wsk_buf.Length
                ),
            );
        }
        if !glue::mdl_is_live(mdl) {
            bugcheck(
                "WSK_BUF_MDL_NOT_LIVE",
                format!(
                    "{function}: WSK_BUF's MDL chain holds {mdl:p}, which is freed or was never allocated"
                ),
            );
        }
        // SAFETY: a live MDL of the chain (checked just above).
        let (count, va, next) = unsafe { ((*mdl).ByteCount as usize, mdl_va(mdl), (*mdl).Next) };
        chain += count;
        if skip >= count {
            skip -= count;
        } else {
            let take = (count - skip).min(remaining);
            segs.push((va + skip, take));
            remaining -= take;
            skip = 0;
        }
        mdl = next;
    }
    segs
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
    // WskReceiveFrom: "PFN_WSK_RECEIVE_FROM callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_from
    // WskGetLocalAddress: "PFN_WSK_GET_LOCAL_ADDRESS callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_local_address
    // WskGetRemoteAddress: "PFN_WSK_GET_REMOTE_ADDRESS callback function (wsk.h)", https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_remote_address
    // WskGetAddressInfo and WskGetNameInfo come here too, after their own PASSIVE_LEVEL check.
    // (No WskListen: it is for WSK_FLAG_STREAM_SOCKET sockets, which this provider refuses.)
    require_at_most(DISPATCH_LEVEL, function);
    if irp.is_null() {
        // Windows fails the call without an IRP to complete.
        return Err(STATUS_INVALID_PARAMETER);
    }
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
    st.irps.entry(irp as usize).or_insert((owner, 0)).1 += 1;
    drop(st);
    // SAFETY: forwarded contract; the driver context of the provider's location is ours.
    unsafe {
        glue::enter(irp);
        (*irp).Tail.Overlay.DriverContext[0] = usize::try_from(id).unwrap_or(0) as PVOID;
    }
    let inline = p.decide_inline();
    Ok((p, id, inline, Out::new(irp)))
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

/// Tries the call's own op (queued behind earlier ones, unarmed) and, if it has to wait,
/// marks its IRP pending and arms its cancel routine, all under the provider lock: nobody can
/// complete it before the call has decided what it returns.
fn submit(st: &mut State, registry: &Registry, id: u64, out: &mut Out) {
    pump(st, registry, id, &mut out.dones);
    if out.dones.iter().any(|d| d.irp == out.irp) {
        return;
    }
    let irp = out.irp as *mut IRP;
    // SAFETY: the IRP is the call's own, entered and not completed.
    unsafe { glue::mark_pending(irp) };
    out.marked = true;
    let Some(sock) = st.sockets.get_mut(&id) else {
        return;
    };
    let Some(op) = sock.find_op(out.irp) else {
        return;
    };
    if op.armed {
        return;
    }
    op.armed = true;
    // SAFETY: as above.
    if !unsafe { arm(irp) } {
        let op = sock.remove_op(out.irp);
        out.dones.push(Done::new(
            irp,
            STATUS_CANCELLED,
            op.map_or(0, |o| o.progress()),
            id,
        ));
    }
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

/// Creates a host socket for `kind`; IPv6 sockets start IPv6-only, as on Windows.
fn host_socket(datagram: bool, v6: bool) -> Result<OwnedFd, NTSTATUS> {
    let fd = os::new_socket(v6, datagram).map_err(|e| os::status_of(&e))?;
    if v6 {
        os::set_int(fd.as_raw_fd(), linux::IPPROTO_IPV6, linux::IPV6_V6ONLY, 1)
            .map_err(|e| os::status_of(&e))?;
    }
    Ok(fd)
}

fn kind_of(flags: u32, socket_type: u16) -> Result<Kind, NTSTATUS> {
    let kind = match flags
        & (WSK_FLAG_LISTEN_SOCKET
            | WSK_FLAG_CONNECTION_SOCKET
            | WSK_FLAG_DATAGRAM_SOCKET
            | WSK_FLAG_STREAM_SOCKET)
    {
        WSK_FLAG_BASIC_SOCKET => Kind::Basic,
        WSK_FLAG_LISTEN_SOCKET => Kind::Listen,
        WSK_FLAG_CONNECTION_SOCKET => Kind::Connection,
        WSK_FLAG_DATAGRAM_SOCKET => Kind::Datagram,
        WSK_FLAG_STREAM_SOCKET => return Err(STATUS_NOT_SUPPORTED),
        _ => return Err(STATUS_INVALID_PARAMETER),
    };
    // Windows creates a listen socket of SOCK_DGRAM (its bind then fails with
    // STATUS_NOT_IMPLEMENTED), as Wine's conformance test records.
    let ok = match kind {
        Kind::Connection => socket_type == SOCK_STREAM,
        Kind::Datagram => socket_type == SOCK_DGRAM,
        Kind::Listen | Kind::Basic => socket_type == SOCK_STREAM || socket_type == SOCK_DGRAM,
    };
    if ok {
        Ok(kind)
    } else {
        Err(STATUS_INVALID_PARAMETER)
    }
}

fn family_v6(family: u16) -> Result<bool, NTSTATUS> {
    match family {
        AF_INET => Ok(false),
        AF_INET6 => Ok(true),
        _ => Err(STATUS_INVALID_PARAMETER),
    }
}

/// Starts connecting a bound socket: `Ok(true)` connected at once, `Ok(false)` in progress.
fn start_connect(
    sock: &mut Sock,
    registry: &Registry,
    remote: &SocketAddr,
) -> Result<bool, NTSTATUS> {
    let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
        return Err(STATUS_INVALID_DEVICE_STATE);
    };
    let connected = match os::connect_fd(fd.as_raw_fd(), remote) {
        Ok(c) => c,
        Err(e) => {
            sock.host = Host::Raw(fd);
            return Err(os::status_of(&e));
        }
    };
    let mut stream = TcpStream::from_std(std::net::TcpStream::from(fd));
    if let Err(e) = registry.register(
        &mut stream,
        token(sock.id),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        return Err(os::status_of(&e));
    }
    sock.host = Host::Stream(stream);
    sock.connecting = !connected;
    sock.connected = connected;
    Ok(connected)
}

// ---- client-level dispatch ----

/// `WskSocket`. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_socket(
    client: *mut WSK_CLIENT,
    family: u16,
    socket_type: u16,
    _protocol: u32,
    flags: u32,
    _context: PVOID,
    _dispatch: *const c_void,
    _process: PEPROCESS,
    _thread: PETHREAD,
    _security: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes a live IRP with a provider stack location.
    let (p, _, inline, mut out) =
        match unsafe { begin("WskSocket", core::ptr::null_mut(), client, irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    if let Some(status) = p.inject(WskOp::Socket) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    let mut st = p.lock();
    let owner = match super::client_id(&st, client, "WskSocket") {
        Ok(id) => id,
        Err(detail) => {
            drop(st);
            bugcheck("WSK_INVALID_CLIENT", detail);
        }
    };
    let created = kind_of(flags, socket_type).and_then(|kind| {
        let v6 = family_v6(family)?;
        Ok((kind, v6, host_socket(socket_type == SOCK_DGRAM, v6)?))
    });
    match created {
        Ok((kind, v6, fd)) => {
            let id = st.new_id();
            let mut sock = new_sock(id, owner, kind, v6, Host::Raw(fd));
            sock.datagram = socket_type == SOCK_DGRAM;
            let handle = sock.handle;
            st.sockets.insert(id, sock);
            out.done(STATUS_SUCCESS, handle, id);
        }
        Err(status) => out.done(status, 0, 0),
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskSocketConnect`: socket, bind, connect in one call. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_socket_connect(
    client: *mut WSK_CLIENT,
    socket_type: u16,
    _protocol: u32,
    local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    _flags: u32,
    _context: PVOID,
    _dispatch: *const c_void,
    _process: PEPROCESS,
    _thread: PETHREAD,
    _security: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes a live IRP with a provider stack location.
    let (p, _, inline, mut out) =
        match unsafe { begin("WskSocketConnect", core::ptr::null_mut(), client, irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    if let Some(status) = p.inject(WskOp::Connect) {
        out.done(status, 0, 0);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes valid addresses (or null).
    let (local, remote) = unsafe { (os::read_sockaddr(local), os::read_sockaddr(remote)) };
    let mut st = p.lock();
    let owner = match super::client_id(&st, client, "WskSocketConnect") {
        Ok(id) => id,
        Err(detail) => {
            drop(st);
            bugcheck("WSK_INVALID_CLIENT", detail);
        }
    };
    let (Some(local), Some(remote)) = (local, remote) else {
        out.done(STATUS_INVALID_PARAMETER, 0, 0);
        drop(st);
        return p.finish(out, inline);
    };
    let v6 = remote.is_ipv6();
    if socket_type != SOCK_STREAM || !os::family_matches(&local, v6) {
        out.done(STATUS_INVALID_PARAMETER, 0, 0);
        drop(st);
        return p.finish(out, inline);
    }
    let fd = match host_socket(false, v6) {
        Ok(fd) => fd,
        Err(status) => {
            out.done(status, 0, 0);
            drop(st);
            return p.finish(out, inline);
        }
    };
    if let Err(e) = os::bind_fd(fd.as_raw_fd(), &local) {
        out.done(os::status_of(&e), 0, 0);
        drop(st);
        return p.finish(out, inline);
    }
    let id = st.new_id();
    let mut sock = new_sock(id, owner, Kind::Connection, v6, Host::Raw(fd));
    sock.bound = true;
    let handle = sock.handle;
    match start_connect(&mut sock, &p.registry, &remote) {
        Ok(true) => {
            st.sockets.insert(id, sock);
            out.done(STATUS_SUCCESS, handle, id);
        }
        Ok(false) => {
            let op = Op::new(
                irp,
                OpKind::Connect {
                    info: handle,
                    destroy_on_fail: true,
                },
            );
            sock.connect = Some(op);
            st.sockets.insert(id, sock);
            submit(&mut st, &p.registry, id, &mut out);
        }
        Err(status) => {
            sock.release_host(&p.registry, false);
            // SAFETY: the handle was just leaked from a Box and never given out.
            drop(unsafe { Box::from_raw(handle as *mut SockHandle) });
            out.done(status, 0, 0);
        }
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskControlClient`: no client-level controls are implemented. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_control_client(
    client: *mut WSK_CLIENT,
    _code: u32,
    _in_size: SIZE_T,
    _in_buf: PVOID,
    _out_size: SIZE_T,
    _out_buf: PVOID,
    out_returned: *mut SIZE_T,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_CONTROL_CLIENT callback function (wsk.h)", IRQL <= DISPATCH_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_client
    require_at_most(DISPATCH_LEVEL, "WskControlClient");
    // Same page, as for WskControlSocket: OutputSizeReturned is NULL unless Irp is NULL.
    refuse_output_size_with_irp("WskControlClient", irp, out_returned);
    if !out_returned.is_null() {
        // SAFETY: the client passes a writable size or null.
        unsafe { *out_returned = 0 };
    }
    if irp.is_null() {
        return STATUS_NOT_SUPPORTED;
    }
    // SAFETY: the client passes a live IRP with a provider stack location.
    let (p, _, inline, mut out) =
        match unsafe { begin("WskControlClient", core::ptr::null_mut(), client, irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    out.done(STATUS_NOT_SUPPORTED, 0, 0);
    p.finish(out, inline)
}

/// `WskGetNameInfo`: not implemented (completes with `STATUS_NOT_SUPPORTED`). `PASSIVE_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_get_name_info(
    client: *mut WSK_CLIENT,
    _addr: *mut SOCKADDR,
    _addr_len: u32,
    _node: *mut UNICODE_STRING,
    _service: *mut UNICODE_STRING,
    _flags: u32,
    _process: PEPROCESS,
    _thread: PETHREAD,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_GET_NAME_INFO callback function (wsk.h)", IRQL PASSIVE_LEVEL:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_get_name_info
    require_at_most(PASSIVE_LEVEL, "WskGetNameInfo");
    // SAFETY: the client passes a live IRP with a provider stack location.
    let (p, _, inline, mut out) =
        match unsafe { begin("WskGetNameInfo", core::ptr::null_mut(), client, irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    out.done(STATUS_NOT_SUPPORTED, 0, 0);
    p.finish(out, inline)
}

/// `OutputSizeReturned` must be NULL when an IRP is given (the size comes back in
/// `IoStatus.Information`): `PFN_WSK_CONTROL_SOCKET` and `PFN_WSK_CONTROL_CLIENT` pages.
fn refuse_output_size_with_irp(function: &'static str, irp: *mut IRP, out_returned: *mut SIZE_T) {
    if !irp.is_null() && !out_returned.is_null() {
        bugcheck(
            "WSK_OUTPUT_SIZE_RETURNED_WITH_IRP",
            format!(
                "{function} with both an IRP and OutputSizeReturned {out_returned:p}: it must be \
                 NULL when an IRP is given"
            ),
        );
    }
}

// ---- socket-level dispatch ----

/// `WskCloseSocket`: completes every pending IRP of the socket as cancelled, resets a
/// connection unless both directions are done, and frees the socket once the close IRP has
/// completed. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_close_socket(
    socket: *mut WSK_SOCKET,
    irp: *mut IRP,
) -> NTSTATUS {
    if !socket.is_null() {
        // SAFETY: the client passes its socket (a handle is live until its close completes).
        let (id, others) = unsafe {
            let handle = socket.cast::<SockHandle>();
            ((*handle).id, (*handle).in_call.load(Ordering::SeqCst))
        };
        if others != 0 {
            // See [`InCall`] for the rule and its pages.
            bugcheck(
                "DRIVER_VERIFIER_DETECTED_VIOLATION",
                format!(
                    "WskCloseSocket on socket {id} while {others} other call(s) on it are in \
                     progress: the application must ensure no other call on the socket is in \
                     progress when it closes it"
                ),
            );
        }
    }
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskCloseSocket", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    let mut st = p.lock();
    let Some(mut sock) = st.sockets.remove(&id) else {
        drop(st);
        bugcheck(
            "WSK_SOCKET_CLOSED",
            format!("WskCloseSocket on socket {id}, which is closed or closing"),
        );
    };
    // "PFN_WSK_CLOSE_SOCKET callback function (wsk.h)": close cancels and completes every
    // pending IRP of the socket, and is abortive on a connection socket unless it is already
    // disconnected both ways: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_close_socket
    for op in sock.take_all() {
        out.dones.extend(claim_now(&op, STATUS_CANCELLED, id));
    }
    let abortive = sock.kind == Kind::Connection
        && (sock.connected || sock.connecting)
        && !(sock.fin_sent && sock.recv_eof);
    sock.release_host(&p.registry, abortive);
    drop(st);
    p.changed.notify_all();
    let mut close = Done::new(irp, STATUS_SUCCESS, 0, id);
    close.free = sock.handle;
    out.dones.push(close);
    // A plan's close delay applies on the reactor (`Provider::defer`).
    let inline = inline && p.faults.close_delay.is_none();
    p.finish(out, inline)
}

/// `WskControlSocket`: the socket options `wsk-net` uses. IRQL <= `DISPATCH_LEVEL`.
///
/// Options: of the `SOL_SOCKET` options the page "WSK Socket Options"
/// (<https://learn.microsoft.com/en-us/windows-hardware/drivers/network/wsk-socket-options>)
/// lists, `SO_REUSEADDR`, `SO_EXCLUSIVEADDRUSE` and `SO_KEEPALIVE`. Beyond that list the host
/// also accepts `IPPROTO_TCP`/`TCP_NODELAY` and `IPPROTO_IPV6`/`IPV6_V6ONLY`: transport and
/// network level options the WSK pages do not document (they say only that "the underlying
/// network protocol might support additional socket options"; the options themselves are
/// documented for user-mode Winsock). A client relying on them depends on Windows' TCP/IP
/// transport, not on a documented WSK behaviour. No `WskIoctl` codes.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_control_socket(
    socket: *mut WSK_SOCKET,
    request: WSK_CONTROL_SOCKET_TYPE,
    code: u32,
    level: u32,
    in_size: SIZE_T,
    in_buf: PVOID,
    out_size: SIZE_T,
    out_buf: PVOID,
    out_returned: *mut SIZE_T,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskControlSocket", None) };
    // "PFN_WSK_CONTROL_SOCKET callback function (wsk.h)", IRQL <= DISPATCH_LEVEL (the
    // PASSIVE_LEVEL-only SIO_ADDRESS_LIST_* IOCTLs are not implemented here):
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_control_socket
    require_at_most(DISPATCH_LEVEL, "WskControlSocket");
    // Same page: OutputSizeReturned is NULL unless Irp is NULL (with an IRP the size comes back
    // in IoStatus.Information). A verifier failure, not STATUS_INVALID_PARAMETER: the page
    // states a caller contract and documents no status for breaking it, and what Windows then
    // does with the pointer (write through it when the IRP completes, perhaps after the
    // caller's variable is gone) is undefined.
    refuse_output_size_with_irp("WskControlSocket", irp, out_returned);
    let input = if in_size >= 4 && !in_buf.is_null() {
        // SAFETY: the client passes `in_size` readable bytes.
        Some(unsafe { in_buf.cast::<u32>().read_unaligned() })
    } else {
        None
    };
    // No output buffer is no room for one.
    let out_size = if out_buf.is_null() { 0 } else { out_size };
    let (status, bytes, value) = if irp.is_null() {
        // SAFETY: the client passes its socket.
        let id = unsafe { handle_id(socket, "WskControlSocket") };
        let p = provider();
        locked_sock!(p, st, sock, id, "WskControlSocket");
        control(sock, request, level, code, input, out_size)
    } else {
        // SAFETY: the client passes its socket and a live IRP.
        let (p, id, inline, mut out) =
            match unsafe { begin("WskControlSocket", socket, core::ptr::null_mut(), irp) } {
                Ok(started) => started,
                Err(status) => return status,
            };
        let result = {
            locked_sock!(p, st, sock, id, "WskControlSocket");
            control(sock, request, level, code, input, out_size)
        };
        if let Some(v) = result.2 {
            // SAFETY: control checked the output buffer's size.
            unsafe { out_buf.cast::<u32>().write_unaligned(v) };
        }
        out.done(result.0, result.1, id);
        return p.finish(out, inline);
    };
    if let Some(v) = value {
        // SAFETY: control checked the output buffer's size.
        unsafe { out_buf.cast::<u32>().write_unaligned(v) };
    }
    if !out_returned.is_null() {
        // SAFETY: the client passes a writable size or null.
        unsafe { *out_returned = bytes };
    }
    status
}

/// Sets or gets one option: (status, bytes returned, value to write to the output).
fn control(
    sock: &mut Sock,
    request: WSK_CONTROL_SOCKET_TYPE,
    level: u32,
    code: u32,
    input: Option<u32>,
    out_size: usize,
) -> (NTSTATUS, usize, Option<u32>) {
    let Some(fd) = sock.host.fd() else {
        return (STATUS_INVALID_DEVICE_STATE, 0, None);
    };
    let host = match (level, code) {
        (SOL_SOCKET, SO_REUSEADDR) => Some((linux::SOL_SOCKET, linux::SO_REUSEADDR)),
        (SOL_SOCKET, SO_KEEPALIVE) => Some((linux::SOL_SOCKET, linux::SO_KEEPALIVE)),
        (IPPROTO_TCP, TCP_NODELAY) => Some((linux::IPPROTO_TCP, linux::TCP_NODELAY)),
        (IPPROTO_IPV6, IPV6_V6ONLY) => Some((linux::IPPROTO_IPV6, linux::IPV6_V6ONLY)),
        (SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => None,
        _ => return (STATUS_NOT_SUPPORTED, 0, None),
    };
    match request {
        WskSetOption => {
            let Some(value) = input else {
                return (STATUS_INVALID_PARAMETER, 0, None);
            };
            let on = value != 0;
            match (level, code) {
                (SOL_SOCKET, SO_REUSEADDR) if on && sock.exclusive => {
                    return (STATUS_INVALID_PARAMETER, 0, None);
                }
                (SOL_SOCKET, SO_EXCLUSIVEADDRUSE) => {
                    if on && sock.reuse {
                        return (STATUS_INVALID_PARAMETER, 0, None);
                    }
                    if sock.bound {
                        return (STATUS_INVALID_DEVICE_STATE, 0, None);
                    }
                    // Linux refuses to bind an address in use unless SO_REUSEADDR is set on
                    // both: exclusive use is what a socket without SO_REUSEADDR gets.
                    sock.exclusive = on;
                    return (STATUS_SUCCESS, 0, None);
                }
                (IPPROTO_IPV6, IPV6_V6ONLY) if !sock.v6 => {
                    return (STATUS_INVALID_PARAMETER, 0, None);
                }
                (IPPROTO_IPV6, IPV6_V6ONLY) if sock.bound => {
                    return (STATUS_INVALID_DEVICE_STATE, 0, None);
                }
                _ => {}
            }
            let (l, n) = host.expect("host option mapped above");
            match os::set_int(fd, l, n, i32::from(on)) {
                Ok(()) => {
                    match (level, code) {
                        (SOL_SOCKET, SO_REUSEADDR) => sock.reuse = on,
                        (IPPROTO_TCP, TCP_NODELAY) => sock.nodelay = on,
                        _ => {}
                    }
                    (STATUS_SUCCESS, 0, None)
                }
                Err(e) => (os::status_of(&e), 0, None),
            }
        }
        WskGetOption => {
            if out_size < 4 {
                return (STATUS_BUFFER_TOO_SMALL, 0, None);
            }
            let value = match host {
                None => u32::from(sock.exclusive),
                Some((l, n)) => match os::get_int(fd, l, n) {
                    Ok(v) => u32::from(v != 0),
                    Err(e) => return (os::status_of(&e), 0, None),
                },
            };
            (STATUS_SUCCESS, 4, Some(value))
        }
        _ => (STATUS_NOT_SUPPORTED, 0, None),
    }
}

/// `WskBind`: a listen socket listens once bound, as on Windows. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_bind(
    socket: *mut WSK_SOCKET,
    local: *mut SOCKADDR,
    _flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskBind", Some(WskOp::Bind)) };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskBind", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    if let Some(status) = p.inject(WskOp::Bind) {
        out.done(status, 0, id);
        return p.finish(out, inline);
    }
    // SAFETY: the client passes a valid address or null.
    let addr = unsafe { os::read_sockaddr(local) };
    let status = {
        locked_sock!(p, st, sock, id, "WskBind");
        bind(sock, &p.registry, addr)
    };
    out.done(status, 0, id);
    p.finish(out, inline)
}

fn bind(sock: &mut Sock, registry: &Registry, addr: Option<SocketAddr>) -> NTSTATUS {
    let Some(addr) = addr else {
        return STATUS_INVALID_PARAMETER;
    };
    if sock.kind == Kind::Listen && sock.datagram {
        return STATUS_NOT_IMPLEMENTED;
    }
    if sock.bound {
        return STATUS_ADDRESS_ALREADY_ASSOCIATED;
    }
    if !os::family_matches(&addr, sock.v6) {
        return STATUS_INVALID_ADDRESS_COMPONENT;
    }
    let Host::Raw(fd) = &sock.host else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    if let Err(e) = os::bind_fd(fd.as_raw_fd(), &addr) {
        return os::status_of(&e);
    }
    sock.bound = true;
    match sock.kind {
        Kind::Listen => {
            if let Err(e) = os::listen_fd(fd.as_raw_fd()) {
                return os::status_of(&e);
            }
            let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
                return STATUS_INVALID_DEVICE_STATE;
            };
            let mut listener = TcpListener::from_std(std::net::TcpListener::from(fd));
            if let Err(e) = registry.register(&mut listener, token(sock.id), Interest::READABLE) {
                return os::status_of(&e);
            }
            sock.host = Host::Listener(listener);
        }
        Kind::Datagram => {
            let Host::Raw(fd) = core::mem::replace(&mut sock.host, Host::Gone) else {
                return STATUS_INVALID_DEVICE_STATE;
            };
            let mut udp = UdpSocket::from_std(std::net::UdpSocket::from(fd));
            if let Err(e) = registry.register(
                &mut udp,
                token(sock.id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                return os::status_of(&e);
            }
            sock.host = Host::Udp(udp);
        }
        Kind::Connection | Kind::Basic => {}
    }
    STATUS_SUCCESS
}

/// `WskAccept`: queued behind the listener's other pending accepts, each served by the next
/// incoming connection in the order they were issued. IRQL <= `DISPATCH_LEVEL`.
///
/// Several outstanding accepts are allowed: "`PFN_WSK_ACCEPT` callback function (wsk.h)"
/// documents `STATUS_PENDING` as "the IRP has been queued" and speaks of "IRPs queued from
/// pending calls to `WskAccept`". (This verifier used to bugcheck a second outstanding accept,
/// stricter than Windows.)
unsafe extern "system-unwind" fn wsk_accept(
    socket: *mut WSK_SOCKET,
    _flags: u32,
    _context: PVOID,
    _dispatch: *const c_void,
    local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskAccept", Some(WskOp::Accept)) };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskAccept", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    let mut st = p.lock();
    let sock = match sock_mut(&mut st, id, "WskAccept") {
        Ok(s) => s,
        Err(detail) => {
            drop(st);
            bugcheck("WSK_SOCKET_CLOSED", detail);
        }
    };
    if let Some(status) = p.inject(WskOp::Accept) {
        out.done(status, 0, id);
    } else if !matches!(sock.host, Host::Listener(_)) {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        let op = Op::new(
            irp,
            OpKind::Accept {
                local: local as usize,
                remote: remote as usize,
            },
        );
        sock.accepts.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskConnect`: the socket must be bound (else `STATUS_INVALID_DEVICE_STATE`). IRQL <=
/// `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_connect(
    socket: *mut WSK_SOCKET,
    remote: *mut SOCKADDR,
    _flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskConnect", Some(WskOp::Connect)) };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskConnect", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    // SAFETY: the client passes a valid address or null.
    let remote = unsafe { os::read_sockaddr(remote) };
    locked_sock!(p, st, sock, id, "WskConnect");
    if let Some(status) = p.inject(WskOp::Connect) {
        out.done(status, 0, id);
    } else if !sock.bound || sock.connected || sock.connecting {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else if let Some(remote) = remote.filter(|r| os::family_matches(r, sock.v6)) {
        match start_connect(sock, &p.registry, &remote) {
            Ok(true) => out.done(STATUS_SUCCESS, 0, id),
            Ok(false) => {
                let op = Op::new(
                    irp,
                    OpKind::Connect {
                        info: 0,
                        destroy_on_fail: false,
                    },
                );
                sock.connect = Some(op);
                submit(&mut st, &p.registry, id, &mut out);
            }
            Err(status) => out.done(status, 0, id),
        }
    } else {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    }
    drop(st);
    p.finish(out, inline)
}

/// The status a transfer on `sock` fails with before it starts, if any.
fn transfer_refusal(sock: &Sock) -> Option<NTSTATUS> {
    if sock.aborted {
        Some(STATUS_CONNECTION_ABORTED)
    } else if let Some(e) = sock.error {
        Some(e)
    } else if !sock.connected {
        Some(STATUS_INVALID_DEVICE_STATE)
    } else {
        None
    }
}

/// `WskSend`: completes when every byte is written to the host socket. IRQL <=
/// `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_send(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskSend", Some(WskOp::Send)) };
    // SAFETY: the client passes a valid WSK_BUF.
    let segs = unsafe { segments(buffer, "WskSend") };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskSend", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    locked_sock!(p, st, sock, id, "WskSend");
    if let Some(status) = p.inject(WskOp::Send) {
        out.done(status, 0, id);
    } else if let Some(status) = transfer_refusal(sock) {
        out.done(status, 0, id);
    } else if sock.send_shut {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        let total = segs.iter().map(|s| s.1).sum();
        let op = Op::new(
            irp,
            OpKind::Send {
                segs,
                total,
                done: 0,
                nodelay: flags & WSK_FLAG_NODELAY != 0,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskReceive`: completes with what is available; `WSK_FLAG_WAITALL` waits for a full
/// buffer, FIN or cancel; 0 bytes means the peer disconnected. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_receive(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskReceive", Some(WskOp::Receive)) };
    // SAFETY: the client passes a valid WSK_BUF.
    let segs = unsafe { segments(buffer, "WskReceive") };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskReceive", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    locked_sock!(p, st, sock, id, "WskReceive");
    if let Some(status) = p.inject(WskOp::Receive) {
        out.done(status, 0, id);
    } else if flags & WSK_FLAG_DRAIN != 0 {
        out.done(STATUS_NOT_SUPPORTED, 0, id);
    } else if let Some(status) = transfer_refusal(sock) {
        out.done(status, 0, id);
    } else {
        let total = segs.iter().map(|s| s.1).sum();
        let op = Op::new(
            irp,
            OpKind::Recv {
                segs,
                total,
                done: 0,
                waitall: flags & WSK_FLAG_WAITALL != 0 && !p.faults.ignore_waitall,
            },
        );
        sock.recvs.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskDisconnect`: graceful (FIN after pending sends and the optional final buffer) or
/// abortive (`WSK_FLAG_ABORTIVE`: pending transfers fail, the peer sees a reset). IRQL <=
/// `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_disconnect(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskDisconnect", Some(WskOp::Disconnect)) };
    let abortive = flags & WSK_FLAG_ABORTIVE != 0;
    let segs = if abortive {
        Vec::new()
    } else {
        // SAFETY: the client passes a valid WSK_BUF or null.
        unsafe { segments(buffer, "WskDisconnect") }
    };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskDisconnect", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    locked_sock!(p, st, sock, id, "WskDisconnect");
    if let Some(status) = p.inject(WskOp::Disconnect) {
        out.done(status, 0, id);
    } else if abortive && !buffer.is_null() {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    } else if let Some(status) = transfer_refusal(sock) {
        out.done(status, 0, id);
    } else if abortive {
        for op in sock.recvs.drain(..).chain(sock.sends.drain(..)) {
            out.dones
                .extend(claim_now(&op, STATUS_CONNECTION_ABORTED, id));
        }
        sock.release_host(&p.registry, true);
        sock.aborted = true;
        sock.send_shut = true;
        out.done(STATUS_SUCCESS, 0, id);
    } else if sock.send_shut {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        sock.send_shut = true;
        let total = segs.iter().map(|s| s.1).sum();
        let op = Op::new(
            irp,
            OpKind::Disconnect {
                segs,
                total,
                done: 0,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskGetLocalAddress`. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_get_local_address(
    socket: *mut WSK_SOCKET,
    addr: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskGetLocalAddress", None) };
    // SAFETY: the client passes its socket, a live IRP and an address buffer.
    unsafe { get_address(socket, addr, irp, false) }
}

/// `WskGetRemoteAddress`. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_get_remote_address(
    socket: *mut WSK_SOCKET,
    addr: *mut SOCKADDR,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskGetRemoteAddress", None) };
    // SAFETY: the client passes its socket, a live IRP and an address buffer.
    unsafe { get_address(socket, addr, irp, true) }
}

/// # Safety
/// As the WSK calls: the client's socket, a live IRP, a writable `SOCKADDR_IN6`-sized buffer.
unsafe fn get_address(
    socket: *mut WSK_SOCKET,
    addr: *mut SOCKADDR,
    irp: *mut IRP,
    remote: bool,
) -> NTSTATUS {
    let function = if remote {
        "WskGetRemoteAddress"
    } else {
        "WskGetLocalAddress"
    };
    // SAFETY: forwarded contract.
    let (p, id, inline, mut out) =
        match unsafe { begin(function, socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    let result = {
        locked_sock!(p, st, sock, id, function);
        match sock.host.fd() {
            _ if addr.is_null() => Err(STATUS_INVALID_PARAMETER),
            None => Err(STATUS_INVALID_DEVICE_STATE),
            Some(_) if remote && !sock.connected => Err(STATUS_INVALID_DEVICE_STATE),
            Some(_) if !remote && !sock.bound => Err(STATUS_INVALID_DEVICE_STATE),
            Some(fd) => {
                let fd = os::FdRef(fd);
                if remote {
                    os::peer_addr(&fd)
                } else {
                    os::local_addr(&fd)
                }
                .map_err(|e| os::status_of(&e))
            }
        }
    };
    match result {
        Ok(a) => {
            // SAFETY: the client passes room for a socket address.
            unsafe { os::write_sockaddr(addr, &a) };
            out.done(STATUS_SUCCESS, 0, id);
        }
        Err(status) => out.done(status, 0, id),
    }
    p.finish(out, inline)
}

/// `WskSendTo`. The datagram socket must be bound. IRQL <= `DISPATCH_LEVEL`.
unsafe extern "system-unwind" fn wsk_send_to(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    _flags: u32,
    remote: *mut SOCKADDR,
    _control_length: u32,
    _control: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskSendTo", Some(WskOp::SendTo)) };
    // SAFETY: the client passes a valid WSK_BUF.
    let segs = unsafe { segments(buffer, "WskSendTo") };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskSendTo", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    // SAFETY: the client passes a valid address or null.
    let remote = unsafe { os::read_sockaddr(remote) };
    locked_sock!(p, st, sock, id, "WskSendTo");
    if let Some(status) = p.inject(WskOp::SendTo) {
        out.done(status, 0, id);
    } else if !matches!(sock.host, Host::Udp(_)) {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else if let Some(to) = remote.filter(|r| os::family_matches(r, sock.v6)) {
        let op = Op::new(
            irp,
            OpKind::SendTo {
                data: gather(&segs),
                to,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    } else {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskReceiveFrom`. The datagram socket must be bound. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
unsafe extern "system-unwind" fn wsk_receive_from(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    _flags: u32,
    remote: *mut SOCKADDR,
    control_length: *mut u32,
    _control: PVOID,
    control_flags: *mut u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskReceiveFrom", Some(WskOp::ReceiveFrom)) };
    // SAFETY: the client passes a valid WSK_BUF.
    let segs = unsafe { segments(buffer, "WskReceiveFrom") };
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskReceiveFrom", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    locked_sock!(p, st, sock, id, "WskReceiveFrom");
    if let Some(status) = p.inject(WskOp::ReceiveFrom) {
        out.done(status, 0, id);
    } else if !matches!(sock.host, Host::Udp(_)) {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        let total = segs.iter().map(|s| s.1).sum();
        let op = Op::new(
            irp,
            OpKind::RecvFrom {
                segs,
                total,
                from: remote as usize,
                control_length: control_length as usize,
                control_flags: control_flags as usize,
            },
        );
        sock.recvs.push_back(op);
        submit(&mut st, &p.registry, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskInspectComplete`: conditional accept is not supported.
unsafe extern "system-unwind" fn wsk_inspect_complete(
    socket: *mut WSK_SOCKET,
    _inspect_id: PVOID,
    _action: i32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket and a live IRP.
    let (p, id, inline, mut out) =
        match unsafe { begin("WskInspectComplete", socket, core::ptr::null_mut(), irp) } {
            Ok(started) => started,
            Err(status) => return status,
        };
    out.done(STATUS_NOT_SUPPORTED, 0, id);
    p.finish(out, inline)
}

/// `WskRelease`: event callbacks (and so indications) are not supported.
unsafe extern "system-unwind" fn wsk_release(
    _socket: *mut WSK_SOCKET,
    _indication: PVOID,
) -> NTSTATUS {
    STATUS_NOT_SUPPORTED
}

/// The client-level provider dispatch table `WskCaptureProviderNPI` hands out.
pub(super) static PROVIDER_DISPATCH: WSK_PROVIDER_DISPATCH = WSK_PROVIDER_DISPATCH {
    Version: MAKE_WSK_VERSION(1, 0),
    Reserved: 0,
    WskSocket: Some(wsk_socket),
    WskSocketConnect: Some(wsk_socket_connect),
    WskControlClient: Some(wsk_control_client),
    WskGetAddressInfo: Some(super::resolve::wsk_get_address_info),
    WskFreeAddressInfo: Some(super::resolve::wsk_free_address_info),
    WskGetNameInfo: Some(wsk_get_name_info),
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
    WskRelease: Some(wsk_release),
    WskConnectEx: None,
    WskSendEx: None,
    WskReceiveEx: None,
};

static DATAGRAM_DISPATCH: WSK_PROVIDER_DATAGRAM_DISPATCH = WSK_PROVIDER_DATAGRAM_DISPATCH {
    Basic: BASIC,
    WskBind: Some(wsk_bind),
    WskSendTo: Some(wsk_send_to),
    WskReceiveFrom: Some(wsk_receive_from),
    WskRelease: Some(wsk_release),
    WskGetLocalAddress: Some(wsk_get_local_address),
    WskSendMessages: None,
};
