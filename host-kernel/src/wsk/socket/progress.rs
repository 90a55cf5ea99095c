//! Progress on a provider socket's queued operations against its host socket: one function
//! per operation kind (connect, accept, receive, send and graceful disconnect), called in that
//! order by the pump.

use std::io;
use std::net::SocketAddr;
use std::vec;
use std::vec::Vec;

use mio::Interest;

use super::buffers::{ByteStream, read_into, scatter, seg_at, send_some};
use super::op_queue::OpQueue;
use super::os;
use super::queue::attempt;
use super::{ClientOut, Done, Host, Io, Kind, Op, OpKind, Seg, Sock, Step, new_sock, token};
use crate::faults::{Resource, fail_allocation};
use crate::{
    NT_SUCCESS, NTSTATUS, SOCKADDR, STATUS_CONNECTION_ABORTED, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS,
};

/// Makes progress on every queue of `sock`, in a fixed order: the connect, then accepts,
/// receives, and sends with graceful disconnects. Finished IRPs go to `dones`; sockets
/// accepted on the way go to `born`, with ids taken from `next_id`.
pub(super) fn progress(
    sock: &mut Sock,
    io: &Io,
    next_id: &mut u64,
    born: &mut Vec<Sock>,
    dones: &mut Vec<Done>,
) {
    progress_connect(sock, dones);
    progress_accepts(sock, io, next_id, born, dones);
    progress_receives(sock, dones);
    progress_sends(sock, dones);
}

/// Serves `queue` front to back: each op `step` finishes leaves the queue as a [`Done`] of
/// socket `sid`; the first op that has to wait (or that its cancel routine owns) holds back
/// the ones behind it.
fn serve_in_order(
    queue: &mut OpQueue,
    sid: u64,
    dones: &mut Vec<Done>,
    mut step: impl FnMut(&mut Op) -> Step,
) {
    while let Some(op) = queue.front_mut() {
        let Some((status, info)) = attempt(op, &mut step) else {
            break;
        };
        let op = queue.pop_front().expect("queued op present");
        dones.push(Done::new(op.irp, status, info, sid));
    }
}

/// The pending connect, if any: on success the socket is connected (and bound); a failed
/// `WskSocketConnect` marks the socket for destruction.
fn progress_connect(sock: &mut Sock, dones: &mut Vec<Done>) {
    let Some(op) = sock.connect.as_mut() else {
        return;
    };
    let host = &sock.host;
    let Some((status, info)) = attempt(op, |_| connect_step(host)) else {
        return;
    };
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
    dones.push(Done::new(op.irp, status, info_out, sock.id));
}

/// Pending accepts, in the order they were issued.
fn progress_accepts(
    sock: &mut Sock,
    io: &Io,
    next_id: &mut u64,
    born: &mut Vec<Sock>,
    dones: &mut Vec<Done>,
) {
    let listener = Listening {
        host: &sock.host,
        v6: sock.v6,
        client: sock.client,
        io,
    };
    serve_in_order(&mut sock.accepts, sock.id, dones, |op| {
        listener.accept_step(op, next_id, born)
    });
}

/// What an accept needs of its listening socket.
struct Listening<'a> {
    host: &'a Host,
    v6: bool,
    client: u64,
    io: &'a Io,
}

impl Listening<'_> {
    /// One accept: a new connection socket (added to `born`) with its addresses written to
    /// the client's buffers, or a wait for the next incoming connection.
    fn accept_step(&self, op: &mut Op, next_id: &mut u64, born: &mut Vec<Sock>) -> Step {
        let OpKind::Accept {
            local,
            remote,
            context,
            dispatch,
        } = &op.kind
        else {
            return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
        };
        if let Host::MemoryListener(listener) = self.host {
            return match listener.accept() {
                Ok((stream, _)) if fail_allocation(Resource::Socket) => {
                    // As below: the connection is dropped (reset).
                    stream.release(true);
                    Step::Finished(STATUS_INSUFFICIENT_RESOURCES, 0)
                }
                Ok((stream, peer)) => {
                    *next_id += 1;
                    let local_addr = stream.local();
                    let mut child = new_sock(
                        *next_id,
                        self.client,
                        Kind::Connection,
                        self.v6,
                        Host::MemoryStream(stream),
                    );
                    child.bound = true;
                    child.connected = true;
                    child.ev.context = *context;
                    child.ev.dispatch = *dispatch;
                    // SAFETY: the client keeps the address buffers valid until completion.
                    let _ = unsafe { crate::write_sockaddr(local.as_ptr(), &local_addr) };
                    // SAFETY: as above.
                    let _ = unsafe { crate::write_sockaddr(remote.as_ptr(), &peer) };
                    let handle = child.handle.information();
                    born.push(child);
                    Step::Finished(STATUS_SUCCESS, handle)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Wait,
                Err(e) => Step::Finished(os::status_of(&e), 0),
            };
        }
        let Host::Listener(listener) = self.host else {
            return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
        };
        loop {
            match listener.accept() {
                Ok((stream, _)) if fail_allocation(Resource::Socket) => {
                    // The provider could not allocate the accepted socket: the accept fails
                    // with the status Windows gives, and the connection is dropped (closed).
                    drop(stream);
                    return Step::Finished(STATUS_INSUFFICIENT_RESOURCES, 0);
                }
                Ok((mut stream, peer)) => {
                    *next_id += 1;
                    let id = *next_id;
                    if let Err(e) = self.io.register(
                        &mut stream,
                        token(id),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        return Step::Finished(os::status_of(&e), 0);
                    }
                    let local_addr = os::local_addr(&stream).ok();
                    let mut child = new_sock(
                        id,
                        self.client,
                        Kind::Connection,
                        self.v6,
                        Host::Stream(stream),
                    );
                    child.bound = true;
                    child.connected = true;
                    child.ev.context = *context;
                    child.ev.dispatch = *dispatch;
                    if let Some(a) = local_addr {
                        // SAFETY: the client keeps the address buffers valid until completion.
                        let _ = unsafe { crate::write_sockaddr(local.as_ptr(), &a) };
                    }
                    // SAFETY: as above.
                    let _ = unsafe { crate::write_sockaddr(remote.as_ptr(), &peer) };
                    let handle = child.handle.information();
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
    }
}

/// Pending receives (stream or datagram), in order.
fn progress_receives(sock: &mut Sock, dones: &mut Vec<Done>) {
    let host = &sock.host;
    let (eof, error, aborted) = (&mut sock.recv_eof, &mut sock.error, sock.aborted);
    // Only a host socket's reactor events say when data came (see `pump_ready`); the
    // in-memory network's reactor pumps without them, so its streams always read, as do
    // sockets whose peer closed (see `Sock::read_closed`).
    let mut drained =
        (matches!(host, Host::Stream(_)) && !sock.read_closed).then_some(&mut sock.drained);
    let filter = sock.receive_filter;
    let stash = &mut sock.ev.stash;
    let refused = &mut sock.refused_datagrams;
    serve_in_order(&mut sock.recvs, sock.id, dones, |op| {
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
                host,
            ) => {
                let Some(stream) = host.stream() else {
                    return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
                };
                take_stash(stash, segs, *total, done);
                stream_receive_step(
                    stream,
                    (segs, *total, done, *waitall),
                    (eof, error, drained.as_deref_mut()),
                )
            }
            (
                OpKind::RecvFrom {
                    segs,
                    total,
                    from,
                    control_length,
                    control_flags,
                },
                Host::Udp(udp),
            ) => datagram_receive_step(
                |buf| take_refused(refused, buf).unwrap_or_else(|| udp.recv_from(buf)),
                segs,
                *total,
                (from, filter),
                control_length,
                control_flags,
            ),
            (
                OpKind::RecvFrom {
                    segs,
                    total,
                    from,
                    control_length,
                    control_flags,
                },
                Host::MemoryDatagram(udp),
            ) => datagram_receive_step(
                |buf| take_refused(refused, buf).unwrap_or_else(|| udp.recv_from(buf)),
                segs,
                *total,
                (from, filter),
                control_length,
                control_flags,
            ),
            _ => Step::Finished(STATUS_INVALID_DEVICE_STATE, 0),
        }
    });
}

/// The oldest datagram a `WskReceiveFromEvent` callback refused (see `datagram_events`),
/// copied into `buf` (the 64 KiB landing buffer, room for any datagram): it goes to the next
/// `WskReceiveFrom` ahead of anything still in the host socket.
fn take_refused(
    refused: &mut std::collections::VecDeque<(Vec<u8>, SocketAddr)>,
    buf: &mut [u8],
) -> Option<io::Result<(usize, SocketAddr)>> {
    let (data, from) = refused.pop_front()?;
    let n = data.len().min(buf.len());
    buf[..n].copy_from_slice(&data[..n]);
    Some(Ok((data.len(), from)))
}

/// Copies data an event callback did not accept (see `events`) into a receive's buffer, ahead
/// of anything still in the host socket.
fn take_stash(stash: &mut Vec<u8>, segs: &[Seg], total: usize, done: &mut usize) {
    while !stash.is_empty() && *done < total {
        let seg = seg_at(segs, *done);
        let n = seg.len.min(stash.len());
        // SAFETY: the segment lies in the client's locked buffer (see `Seg`), `n` bytes fit.
        unsafe { core::ptr::copy_nonoverlapping(stash.as_ptr(), seg.start, n) };
        stash.drain(..n);
        *done += n;
    }
}

/// One `WskReceive`: reads until the buffer is full, the peer's FIN (`eof`), or the stream
/// runs dry (finished with what came unless `waitall`); a host error becomes the socket's
/// fatal `error`. A read shorter than asked means the host socket had no more at that moment
/// (Linux TCP returns what is queued, up to the length): without `waitall` the receive
/// finishes there rather than paying one more system call to hear `EAGAIN` (new data raises
/// a new edge-triggered event, as tokio relies on too). Rule: WDK "`PFN_WSK_RECEIVE` callback
/// function (wsk.h)" (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive):
/// only `WSK_FLAG_WAITALL` holds the IRP until the buffer is full, the peer disconnects, the
/// connection is aborted or the IRP is cancelled.
///
/// The same reasoning spares the *next* receive its `EAGAIN`: where the socket keeps the
/// hint (`drained` given), a short or empty read sets it, and while it is set (until the reactor's next event on the socket, see
/// `pump_ready`) a receive waits without reading. In an echo server the receive posted right
/// after the reply went out almost never finds data: one system call less per round trip.
fn stream_receive_step(
    stream: &dyn ByteStream,
    (segs, total, done, waitall): (&[Seg], usize, &mut usize, bool),
    (eof, error, mut drained): (&mut bool, &mut Option<NTSTATUS>, Option<&mut bool>),
) -> Step {
    loop {
        if *done == total {
            return Step::Finished(STATUS_SUCCESS, *done);
        }
        if drained.as_deref() == Some(&true) {
            if *done > 0 && !waitall {
                return Step::Finished(STATUS_SUCCESS, *done);
            }
            return Step::Wait;
        }
        let seg = seg_at(segs, *done);
        match read_into(stream, seg) {
            Ok(0) => {
                *eof = true;
                return Step::Finished(STATUS_SUCCESS, *done);
            }
            Ok(n) => {
                *done += n;
                if n < seg.len {
                    if let Some(drained) = drained.as_deref_mut() {
                        *drained = true;
                    } else if !waitall {
                        return Step::Finished(STATUS_SUCCESS, *done);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(drained) = drained.as_deref_mut() {
                    *drained = true;
                } else if *done > 0 && !waitall {
                    return Step::Finished(STATUS_SUCCESS, *done);
                } else {
                    return Step::Wait;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let status = os::status_of(&e);
                *error = Some(status);
                return Step::Finished(status, *done);
            }
        }
    }
}

/// One `WskReceiveFrom`: a datagram with its sender written to the client's `from`, and no
/// control data. With a fixed remote address (`filter`), datagrams from other senders are
/// dropped ("only datagrams that are received from the fixed remote transport address are
/// accepted", `SIO_WSK_SET_REMOTE_ADDRESS`).
///
/// A datagram larger than the buffer: WDK "`PFN_WSK_RECEIVE_FROM` callback function (wsk.h)"
/// (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_from), under
/// `ControlFlags`: `MSG_TRUNC`, "the datagram was truncated because the size of the datagram
/// was larger than the size of the buffer". The page lists no failure status for it, so the
/// IRP completes with `STATUS_SUCCESS` and the bytes that fit (the buffer's size), the rest of
/// the datagram discarded, and `MSG_TRUNC` set in `ControlFlags` when the client gave one.
fn datagram_receive_step(
    recv_from: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
    segs: &[Seg],
    total: usize,
    (from, filter): (&ClientOut<SOCKADDR>, Option<SocketAddr>),
    control_length: &ClientOut<u32>,
    control_flags: &ClientOut<u32>,
) -> Step {
    // One 64 KiB landing buffer per thread, reused: a fresh zeroed one per datagram cost a
    // 64 KiB memset each (88% of a datagram receive's instructions).
    DATAGRAM_LANDING.with_borrow_mut(|data| {
        datagram_receive_into(
            data,
            recv_from,
            segs,
            total,
            (from, filter),
            control_length,
            control_flags,
        )
    })
}

std::thread_local! {
    /// Where a datagram lands before it is scattered into the client's buffer: large enough
    /// for any UDP datagram.
    static DATAGRAM_LANDING: core::cell::RefCell<Vec<u8>> =
        core::cell::RefCell::new(vec![0u8; 65_536]);
}

/// [`datagram_receive_step`] with its landing buffer.
fn datagram_receive_into(
    data: &mut [u8],
    mut recv_from: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
    segs: &[Seg],
    total: usize,
    (from, filter): (&ClientOut<SOCKADDR>, Option<SocketAddr>),
    control_length: &ClientOut<u32>,
    control_flags: &ClientOut<u32>,
) -> Step {
    loop {
        match recv_from(data) {
            Ok((_, peer)) if filter.is_some_and(|only| only != peer) => {}
            Ok((len, peer)) => {
                let n = len.min(total);
                let flags = if len > total { crate::MSG_TRUNC } else { 0 };
                scatter(segs, &data[..n]);
                // SAFETY: the client keeps these outputs valid until completion.
                let _ = unsafe { crate::write_sockaddr(from.as_ptr(), &peer) };
                if !control_length.as_ptr().is_null() {
                    // SAFETY: as above.
                    unsafe { control_length.as_ptr().write_unaligned(0) };
                }
                if !control_flags.as_ptr().is_null() {
                    // SAFETY: as above.
                    unsafe { control_flags.as_ptr().write_unaligned(flags) };
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

/// Pending sends, graceful disconnects and datagram sends, in order.
fn progress_sends(sock: &mut Sock, dones: &mut Vec<Done>) {
    let host = &sock.host;
    let (error, aborted, fin_sent, nodelay_set) = (
        &mut sock.error,
        sock.aborted,
        &mut sock.fin_sent,
        sock.nodelay,
    );
    serve_in_order(&mut sock.sends, sock.id, dones, |op| {
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
                host,
            ) => {
                let Some(stream) = host.stream() else {
                    return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
                };
                // A `WSK_FLAG_NODELAY` send on a socket without `TCP_NODELAY` pushes its own
                // bytes out: the option is on only around this send.
                let push = *nodelay && !nodelay_set;
                if push {
                    stream.set_nodelay(true);
                }
                let result = send_some(stream, segs, *total, done);
                if push {
                    stream.set_nodelay(false);
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
            (
                OpKind::Disconnect {
                    segs,
                    total,
                    done,
                    unacknowledged,
                },
                host,
            ) => {
                let Some(stream) = host.stream() else {
                    return Step::Finished(STATUS_INVALID_DEVICE_STATE, 0);
                };
                if *unacknowledged {
                    // The fault plan's peer that never acknowledges the FIN.
                    Step::Wait
                } else {
                    disconnect_step(stream, segs, *total, done, fin_sent, error)
                }
            }
            (OpKind::SendTo { data, to }, Host::Udp(udp)) => {
                datagram_send_step(|d, to| udp.send_to(d, to), data, *to)
            }
            (OpKind::SendTo { data, to }, Host::MemoryDatagram(udp)) => {
                datagram_send_step(|d, to| Ok(udp.send_to(d, to)), data, *to)
            }
            (
                OpKind::SendMessages {
                    datagrams,
                    next,
                    sent,
                    to,
                    source,
                },
                Host::Udp(udp),
            ) => udp_messages_step(udp, datagrams, (next, sent), *to, *source),
            (
                OpKind::SendMessages {
                    datagrams,
                    next,
                    sent,
                    to,
                    ..
                },
                Host::MemoryDatagram(udp),
            ) => messages_send_step(|d, to| Ok(udp.send_to(d, to)), datagrams, next, sent, *to),
            _ => Step::Finished(STATUS_INVALID_DEVICE_STATE, 0),
        }
    });
}

/// One graceful `WskDisconnect`: the final buffer, then FIN (`fin_sent`).
fn disconnect_step(
    stream: &dyn ByteStream,
    segs: &[Seg],
    total: usize,
    done: &mut usize,
    fin_sent: &mut bool,
    error: &mut Option<NTSTATUS>,
) -> Step {
    match send_some(stream, segs, total, done) {
        Ok(true) => match stream.shutdown_write() {
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

/// One `WskSendTo`: the whole datagram or a wait for room.
fn datagram_send_step(
    send_to: impl Fn(&[u8], SocketAddr) -> io::Result<usize>,
    data: &[u8],
    to: SocketAddr,
) -> Step {
    loop {
        match send_to(data, to) {
            Ok(n) => return Step::Finished(STATUS_SUCCESS, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Finished(os::status_of(&e), 0),
        }
    }
}

/// [`messages_send_step`] on a host UDP socket, from the control information's source address
/// when it named one (`os::send_from`).
fn udp_messages_step(
    udp: &mio::net::UdpSocket,
    datagrams: &[Vec<u8>],
    (next, sent): (&mut usize, &mut usize),
    to: SocketAddr,
    source: Option<(std::net::IpAddr, u32)>,
) -> Step {
    match source {
        None => messages_send_step(|d, to| udp.send_to(d, to), datagrams, next, sent, to),
        Some((from, interface)) => messages_send_step(
            |d, to| os::send_from(udp, d, to, from, interface),
            datagrams,
            next,
            sent,
            to,
        ),
    }
}

/// One `WskSendMessages`: every datagram from `next` on, in order, or a wait for room. A
/// failure ends the call with its status and the bytes of the datagrams sent before it.
fn messages_send_step(
    send_to: impl Fn(&[u8], SocketAddr) -> io::Result<usize>,
    datagrams: &[Vec<u8>],
    next: &mut usize,
    sent: &mut usize,
    to: SocketAddr,
) -> Step {
    while let Some(data) = datagrams.get(*next) {
        match datagram_send_step(&send_to, data, to) {
            Step::Finished(STATUS_SUCCESS, n) => {
                *next += 1;
                *sent += n;
            }
            Step::Finished(status, _) => return Step::Finished(status, *sent),
            Step::Wait => return Step::Wait,
        }
    }
    Step::Finished(STATUS_SUCCESS, *sent)
}

/// A pending connect: done, failed, or still in progress?
pub(super) fn connect_step(host: &Host) -> Step {
    if let Host::MemoryStream(stream) = host {
        // An in-memory connect is made at once; only a reset since can be pending.
        return match stream.take_error() {
            Some(e) => Step::Finished(os::status_of(&e), 0),
            None => Step::Finished(STATUS_SUCCESS, 0),
        };
    }
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
