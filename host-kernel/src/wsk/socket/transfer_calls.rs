//! The socket calls that move data: `WskSend`, `WskReceive`, `WskDisconnect`, `WskSendTo`,
//! `WskReceiveFrom` and the address queries.

use std::format;
use std::sync::Arc;
use std::vec::Vec;

use super::buffers::{gather, held_memory, segments};
use super::glue::bugcheck;
use super::os::{self};
use super::queue::{claim_now, submit};
use super::{ClientOut, InCall, Op, OpKind, Out, Provider, Segs, Sock, begin, sock_mut};
use crate::faults::WskOp;
use crate::{
    IRP, NTSTATUS, PVOID, SOCKADDR, STATUS_CONNECTION_ABORTED, STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS, WSK_BUF, WSK_BUF_LIST,
    WSK_FLAG_ABORTIVE, WSK_FLAG_DRAIN, WSK_FLAG_NODELAY, WSK_FLAG_WAITALL, WSK_SOCKET,
};

/// The status a transfer on `sock` fails with before it starts, if any.
pub(super) fn transfer_refusal(sock: &Sock) -> Option<NTSTATUS> {
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

/// What a data call (`WskSend`, `WskReceive`, `WskSendTo`, `WskReceiveFrom`) starts with: the
/// call counted in progress on its socket until it returns (see [`InCall`]), the client memory
/// its `WSK_BUF` describes, and what [`begin`] gave (the provider, the socket id, the
/// completion choice, the call's outcome so far).
type Transfer = (InCall, Segs, (Arc<Provider>, u64, bool, Out));

/// Starts data call `function` (`op` in the fault plan) on `socket`, in the order every data
/// call takes: counted in progress, its `WSK_BUF` read (the verifier checks it), its IRP taken.
///
/// # Safety
/// As the WSK calls: the client's socket, a valid `WSK_BUF` (or null), a live IRP with a
/// stack location for the provider.
unsafe fn start_transfer(
    function: &'static str,
    op: WskOp,
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    irp: *mut IRP,
) -> Result<Transfer, NTSTATUS> {
    // SAFETY: the client passes its socket; counted in progress until the call returns.
    let call = unsafe { InCall::enter(socket, function, Some(op)) };
    // SAFETY: the client passes a valid WSK_BUF.
    let segs = unsafe { segments(buffer, function) };
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin(function, socket, core::ptr::null_mut(), irp) }?;
    // SAFETY: `segments` accepted the WSK_BUF.
    let held = unsafe { held_memory(buffer, &segs) };
    started.0.hold(started.3.irp, held);
    Ok((call, segs, started))
}

/// `WskSend`: completes when every byte is written to the host socket. IRQL <=
/// `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_send(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket, a valid WSK_BUF and a live IRP.
    let started = unsafe { start_transfer("WskSend", WskOp::Send, socket, buffer, irp) };
    let (_call, segs, (p, id, inline, mut out)) = match started {
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
        let total = segs.iter().map(|s| s.len).sum();
        let op = Op::new(
            out.irp,
            OpKind::Send {
                segs,
                total,
                done: 0,
                nodelay: flags & WSK_FLAG_NODELAY != 0,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskReceive`: completes with what is available; `WSK_FLAG_WAITALL` waits for a full
/// buffer, FIN or cancel; 0 bytes means the peer disconnected. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_receive(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket, a valid WSK_BUF and a live IRP.
    let started = unsafe { start_transfer("WskReceive", WskOp::Receive, socket, buffer, irp) };
    let (_call, segs, (p, id, inline, mut out)) = match started {
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
        let total = segs.iter().map(|s| s.len).sum();
        let op = Op::new(
            out.irp,
            OpKind::Recv {
                segs,
                total,
                done: 0,
                waitall: flags & WSK_FLAG_WAITALL != 0 && !p.faults.ignore_waitall,
            },
        );
        // A posted WskReceive lifts a STATUS_DATA_NOT_ACCEPTED (see `events`).
        sock.ev.not_accepted = false;
        sock.recvs.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
        if super::indication_due(&st, id) {
            // Finished at once with data (or a stash) left over: the reactor indicates it.
            st.soon.push(id);
            p.io.wake();
        }
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskDisconnect`: graceful (FIN after pending sends and the optional final buffer) or
/// abortive (`WSK_FLAG_ABORTIVE`: pending transfers fail, the peer sees a reset). IRQL <=
/// `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_disconnect(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    flags: u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskDisconnect", Some(WskOp::Disconnect)) };
    let abortive = flags & WSK_FLAG_ABORTIVE != 0;
    let segs = if abortive {
        Segs::new()
    } else {
        // SAFETY: the client passes a valid WSK_BUF or null.
        unsafe { segments(buffer, "WskDisconnect") }
    };
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskDisconnect", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    if !abortive {
        // SAFETY: `segments` accepted the WSK_BUF.
        p.hold(out.irp, unsafe { held_memory(buffer, &segs) });
    }
    locked_sock!(p, st, sock, id, "WskDisconnect");
    if let Some(status) = p.inject(WskOp::Disconnect) {
        out.done(status, 0, id);
    } else if abortive && !buffer.is_null() {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    } else if let Some(status) = transfer_refusal(sock) {
        out.done(status, 0, id);
    } else if abortive {
        for op in sock.recvs.drain().chain(sock.sends.drain()) {
            out.dones
                .extend(claim_now(&op, STATUS_CONNECTION_ABORTED, id));
        }
        sock.release_host(&p.io, true);
        sock.aborted = true;
        sock.send_shut = true;
        out.done(STATUS_SUCCESS, 0, id);
    } else if sock.send_shut {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        sock.send_shut = true;
        let total = segs.iter().map(|s| s.len).sum();
        let op = Op::new(
            out.irp,
            OpKind::Disconnect {
                segs,
                total,
                done: 0,
                unacknowledged: p.faults.disconnect_unacknowledged,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}

/// `WskGetLocalAddress`. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_get_local_address(
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
pub(super) unsafe extern "system-unwind" fn wsk_get_remote_address(
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
pub(super) unsafe fn get_address(
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
    let started = unsafe { begin(function, socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    let result = {
        locked_sock!(p, st, sock, id, function);
        if addr.is_null() {
            Err(STATUS_INVALID_PARAMETER)
        } else if !sock.host.is_open() || (remote && !sock.connected) || (!remote && !sock.bound) {
            Err(STATUS_INVALID_DEVICE_STATE)
        } else {
            sock.host.address(remote)
        }
    };
    match result {
        Ok(a) => {
            // SAFETY: the client passes room for a socket address.
            let _ = unsafe { crate::write_sockaddr(addr, &a) };
            out.done(STATUS_SUCCESS, 0, id);
        }
        Err(status) => out.done(status, 0, id),
    }
    p.finish(out, inline)
}

/// `WskSendTo`. The datagram socket must be bound. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_send_to(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    _flags: u32,
    remote: *mut SOCKADDR,
    _control_length: u32,
    _control: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket, a valid WSK_BUF and a live IRP.
    let started = unsafe { start_transfer("WskSendTo", WskOp::SendTo, socket, buffer, irp) };
    let (_call, segs, (p, id, inline, mut out)) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    // SAFETY: the client passes a valid address or null.
    let remote = unsafe { crate::read_sockaddr_by_family(remote) };
    locked_sock!(p, st, sock, id, "WskSendTo");
    if let Some(status) = p.inject(WskOp::SendTo) {
        out.done(status, 0, id);
    } else if !sock.host.is_datagram() {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else if let Some(to) = remote
        // No address: the fixed one of SIO_WSK_SET_REMOTE_ADDRESS/SIO_WSK_SET_SENDTO_ADDRESS.
        .or(sock.send_to_default)
        .filter(|r| os::family_matches(r, sock.v6))
    {
        let op = Op::new(
            out.irp,
            OpKind::SendTo {
                data: gather(&segs),
                to,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    } else {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    }
    drop(st);
    p.finish(out, inline)
}

/// The longest `WSK_BUF_LIST` this provider walks before calling it cyclic.
const MAX_BUF_LIST: usize = 1 << 16;

/// `WskSendMessages`: the datagrams of `BufferList`, in order, to `RemoteAddress`; completes
/// with the bytes of all of them once every one is sent (or with the first failure and the
/// bytes sent before it). The datagram socket must be bound. Injected faults are those of
/// `WskSendTo`. IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_send_messages(
    socket: *mut WSK_SOCKET,
    buffer_list: PVOID,
    flags: u32,
    remote: *mut SOCKADDR,
    control_length: u32,
    control: PVOID,
    irp: *mut IRP,
) -> NTSTATUS {
    // "PFN_WSK_SEND_MESSAGES callback function (wsk.h)": Flags is reserved and must be zero;
    // BufferList points to an initialised WSK_BUF_LIST; ControlInfoLength is zero when there
    // is no control information:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_messages
    // SAFETY: the client passes its socket; counted in progress until this call returns.
    let _call = unsafe { InCall::enter(socket, "WskSendMessages", Some(WskOp::SendTo)) };
    // "WSK_BUF_LIST structure (wsk.h)": each entry's Buffer is an initialised WSK_BUF, Next
    // the next entry or null:
    // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/ns-wsk-wsk_buf_list
    let mut datagrams = Vec::new();
    // What the IRP holds until it completes, for the verifier's free checks: every entry's
    // MDLs and bytes, and the entries themselves.
    let mut held = super::super::HeldMemory {
        mdls: super::super::Few::new(),
        ranges: super::super::Few::new(),
    };
    let mut entry = buffer_list.cast::<WSK_BUF_LIST>();
    while !entry.is_null() {
        if datagrams.len() == MAX_BUF_LIST {
            bugcheck(
                "WSK_BUF_LIST_CYCLE",
                format!(
                    "WskSendMessages: BufferList has more than {MAX_BUF_LIST} entries: its Next \
                     links form a cycle"
                ),
            );
        }
        // SAFETY: a live list entry (the client's, until the IRP completes).
        let buffer = unsafe { &raw mut (*entry).Buffer };
        // SAFETY: as above: an initialised WSK_BUF whose MDL chain is live.
        let segs = unsafe { segments(buffer, "WskSendMessages") };
        // SAFETY: `segments` accepted the WSK_BUF.
        let memory = unsafe { held_memory(buffer, &segs) };
        for &mdl in memory.mdls.as_slice() {
            held.mdls.push(mdl);
        }
        for &range in memory.ranges.as_slice() {
            held.ranges.push(range);
        }
        held.ranges
            .push((entry.addr(), core::mem::size_of::<WSK_BUF_LIST>()));
        datagrams.push(gather(&segs));
        // SAFETY: as above.
        entry = unsafe { (*entry).Next };
    }
    // SAFETY: the client passes its socket and a live IRP.
    let started = unsafe { begin("WskSendMessages", socket, core::ptr::null_mut(), irp) };
    let (p, id, inline, mut out) = match started {
        Ok(started) => started,
        Err(status) => return status,
    };
    p.hold(out.irp, held);
    // SAFETY: the client passes a valid address or null.
    let remote = unsafe { crate::read_sockaddr_by_family(remote) };
    locked_sock!(p, st, sock, id, "WskSendMessages");
    if let Some(status) = p.inject(WskOp::SendTo) {
        out.done(status, 0, id);
    } else if flags != 0 || (control_length != 0) == control.is_null() {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    } else if !sock.host.is_datagram() {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else if datagrams.is_empty() {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    } else if let Err(status) = control_info_of(sock, control, control_length) {
        out.done(status, 0, id);
    } else if let Some(to) = remote.filter(|r| os::family_matches(r, sock.v6)) {
        // Parsed again (cheap) to keep the result out of the condition chain above.
        let source = control_info_of(sock, control, control_length).unwrap_or(None);
        let op = Op::new(
            out.irp,
            OpKind::SendMessages {
                datagrams,
                next: 0,
                sent: 0,
                to,
                source,
            },
        );
        sock.sends.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    } else {
        out.done(STATUS_INVALID_PARAMETER, 0, id);
    }
    drop(st);
    p.finish(out, inline)
}

/// The control information of a `WskSendMessages` (`control_length` bytes at `control`),
/// applied to each of its datagrams: the source address (and interface) an `IP_PKTINFO` or
/// `IPV6_PKTINFO` object names, if any.
///
/// "`PFN_WSK_SEND_MESSAGES` callback function (wsk.h)"
/// (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_send_messages):
/// `ControlInfo` is "one or more control data objects, each of which begins with a `CMSGHDR`
/// structure", associated with the datagrams being sent, and "may not be supported by all
/// transports". So: a malformed buffer (an object shorter than its header or running past
/// `ControlInfoLength`, a packet-info object of the wrong size or family, two of them) is
/// `STATUS_INVALID_PARAMETER`; an object of any other level or type, or any control
/// information on the in-memory network, is `STATUS_NOT_SUPPORTED` (refused, never dropped
/// silently). Layout: `WSACMSGHDR`, `WSA_CMSG_DATA` and `WSA_CMSGHDR_ALIGN` of ws2def.h.
fn control_info_of(
    sock: &Sock,
    control: PVOID,
    control_length: u32,
) -> Result<Option<(std::net::IpAddr, u32)>, NTSTATUS> {
    if control_length == 0 {
        return Ok(None);
    }
    if !matches!(sock.host, super::Host::Udp(_)) {
        return Err(STATUS_NOT_SUPPORTED);
    }
    let (control, control_length) = (control.cast::<u8>(), control_length as usize);
    // SAFETY: the client passes `control_length` readable bytes at `control` (checked
    // non-null by the caller), valid until the IRP completes.
    let bytes = unsafe { core::slice::from_raw_parts(control, control_length) };
    let mut source = None;
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + size_of::<crate::CMSGHDR>())
            .ok_or(STATUS_INVALID_PARAMETER)?;
        // SAFETY: `header` holds a CMSGHDR's bytes; read unaligned.
        let header = unsafe { header.as_ptr().cast::<crate::CMSGHDR>().read_unaligned() };
        let end = at
            .checked_add(header.cmsg_len)
            .filter(|&end| header.cmsg_len >= crate::CMSG_DATA_OFFSET && end <= bytes.len())
            .ok_or(STATUS_INVALID_PARAMETER)?;
        let data = &bytes[at + crate::CMSG_DATA_OFFSET..end];
        let info = match (header.cmsg_level.cast_unsigned(), header.cmsg_type) {
            (crate::IPPROTO_IP, crate::IP_PKTINFO) if !sock.v6 => {
                if data.len() != size_of::<crate::IN_PKTINFO>() {
                    return Err(STATUS_INVALID_PARAMETER);
                }
                // SAFETY: `data` holds an IN_PKTINFO's bytes; read unaligned.
                let p = unsafe { data.as_ptr().cast::<crate::IN_PKTINFO>().read_unaligned() };
                (std::net::IpAddr::from(p.ipi_addr), p.ipi_ifindex)
            }
            (crate::IPPROTO_IPV6, crate::IPV6_PKTINFO) if sock.v6 => {
                if data.len() != size_of::<crate::IN6_PKTINFO>() {
                    return Err(STATUS_INVALID_PARAMETER);
                }
                // SAFETY: `data` holds an IN6_PKTINFO's bytes; read unaligned.
                let p = unsafe { data.as_ptr().cast::<crate::IN6_PKTINFO>().read_unaligned() };
                (std::net::IpAddr::from(p.ipi6_addr), p.ipi6_ifindex)
            }
            // Packet information of the other family than the socket's.
            (crate::IPPROTO_IP, crate::IP_PKTINFO) | (crate::IPPROTO_IPV6, crate::IPV6_PKTINFO) => {
                return Err(STATUS_INVALID_PARAMETER);
            }
            _ => return Err(STATUS_NOT_SUPPORTED),
        };
        if source.replace(info).is_some() {
            return Err(STATUS_INVALID_PARAMETER);
        }
        at = end.next_multiple_of(crate::CMSG_ALIGNMENT);
    }
    Ok(source)
}

/// `WskReceiveFrom`. The datagram socket must be bound. IRQL <= `DISPATCH_LEVEL`.
#[allow(clippy::too_many_arguments, reason = "the WSK signature")]
pub(super) unsafe extern "system-unwind" fn wsk_receive_from(
    socket: *mut WSK_SOCKET,
    buffer: *mut WSK_BUF,
    _flags: u32,
    remote: *mut SOCKADDR,
    control_length: *mut u32,
    _control: PVOID,
    control_flags: *mut u32,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the client passes its socket, a valid WSK_BUF and a live IRP.
    let (_call, segs, (p, id, inline, mut out)) = match unsafe {
        start_transfer("WskReceiveFrom", WskOp::ReceiveFrom, socket, buffer, irp)
    } {
        Ok(started) => started,
        Err(status) => return status,
    };
    locked_sock!(p, st, sock, id, "WskReceiveFrom");
    if let Some(status) = p.inject(WskOp::ReceiveFrom) {
        out.done(status, 0, id);
    } else if !sock.host.is_datagram() {
        out.done(STATUS_INVALID_DEVICE_STATE, 0, id);
    } else {
        let total = segs.iter().map(|s| s.len).sum();
        let op = Op::new(
            out.irp,
            OpKind::RecvFrom {
                segs,
                total,
                from: ClientOut(remote),
                control_length: ClientOut(control_length),
                control_flags: ClientOut(control_flags),
            },
        );
        sock.recvs.push_back(op);
        submit(&mut st, &p.io, id, &mut out);
    }
    drop(st);
    p.finish(out, inline)
}
