//! `WskReceiveFromEvent` on datagram sockets: `SO_WSK_EVENT_CALLBACK` with
//! `WSK_EVENT_RECEIVE_FROM`, the indications the reactor makes (several datagrams in one
//! `WSK_DATAGRAM_INDICATION` list) and `WskRelease` of retained lists.
//!
//! Rules, each from its WDK page:
//! - "`PFN_WSK_RECEIVE_FROM_EVENT` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_receive_from_event):
//!   the callback gets a linked list of `WSK_DATAGRAM_INDICATION`s (one per datagram, each with
//!   its sender) and returns `STATUS_SUCCESS` (all datagrams taken), `STATUS_PENDING` (the list
//!   is retained until `WskRelease`) or `STATUS_DATA_NOT_ACCEPTED` (for a callback enabled with
//!   `SO_WSK_EVENT_CALLBACK`: no more indications until the client enables it again; for one
//!   enabled with `WSK_SET_STATIC_EVENT_CALLBACKS` the indications go on with the next
//!   datagrams). Any other status is a verifier failure.
//! - "`PFN_WSK_RELEASE_DATA_INDICATION_LIST` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_release_data_indication_list):
//!   the datagram socket's `WskRelease` takes the retained `WSK_DATAGRAM_INDICATION` list back,
//!   once; anything else is a verifier failure, and a list still retained at `WskCloseSocket`
//!   is a leak (as for connection sockets, see `events`).
//! - "`SO_WSK_EVENT_CALLBACK`": enabling takes no IRP; events are disabled one at a time.
//!
//! Indications are made by the reactor thread at `DISPATCH_LEVEL` (`WSK_FLAG_AT_DISPATCH_LEVEL`
//! set), without the provider lock, and only while no `WskReceiveFrom` IRP is queued (queued
//! IRPs are served first). One indication carries every datagram waiting in the host socket, up
//! to [`DATAGRAMS_PER_INDICATION`].
//!
//! - The same page, `STATUS_DATA_NOT_ACCEPTED` with the callback enabled by
//!   `SO_WSK_EVENT_CALLBACK`: "the WSK subsystem will have the underlying transport buffer the
//!   datagrams if possible", disables the callback, and after the client re-enables it
//!   "will resume calling the `WskReceiveFromEvent` event callback function with any remaining
//!   buffered datagrams and when new datagrams are received". So the refused datagrams are
//!   kept, in order, ahead of the host socket's: the next `WskReceiveFrom` gets them first
//!   (a receive IRP is served while the callback is off), and so does the first indication
//!   after re-enabling. With `WSK_SET_STATIC_EVENT_CALLBACKS` the page keeps the callback on
//!   and goes on "when new datagrams are received": the refused ones are dropped.
//!
//! Where it may differ from Windows: `MSG_BCAST`/`MSG_MCAST` are never set; no control
//! information is indicated.

use std::boxed::Box;
use std::io;
use std::net::SocketAddr;
use std::vec::Vec;

use super::glue;
use super::{Host, Kind, Sock};
use crate::{
    MDL, NTSTATUS, PVOID, SOCKADDR, SOCKADDR_STORAGE, STATUS_DATA_NOT_ACCEPTED,
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, WSK_BUF,
    WSK_CLIENT_DATAGRAM_DISPATCH, WSK_DATAGRAM_INDICATION, WSK_EVENT_RECEIVE_FROM,
    WSK_FLAG_AT_DISPATCH_LEVEL, WSK_SOCKET,
};

/// Most datagrams one indication carries.
pub const DATAGRAMS_PER_INDICATION: usize = 32;

std::thread_local! {
    /// Where a datagram lands before its block takes a copy of exactly its length.
    static LANDING: core::cell::RefCell<Vec<u8>> = core::cell::RefCell::new(std::vec![0; 65_536]);
}

/// One datagram of an indication list: its `WSK_DATAGRAM_INDICATION` first (so that a pointer
/// to the indication is a pointer to the block), the sender, the MDL and the bytes.
#[repr(C)]
struct DatagramBlock {
    indication: WSK_DATAGRAM_INDICATION,
    sender: SOCKADDR_STORAGE,
    mdl: *mut MDL,
    data: Vec<u8>,
    /// The sender as the host gave it (to keep a refused datagram, see [`take_back`]).
    from: SocketAddr,
}

impl DatagramBlock {
    /// A block holding `data` from `sender`, with an MDL over the bytes; `None` when no MDL
    /// could be allocated.
    fn new(data: Vec<u8>, sender: &SocketAddr) -> Option<Box<Self>> {
        let len = u32::try_from(data.len()).ok()?;
        let mut block = Box::new(Self {
            indication: WSK_DATAGRAM_INDICATION {
                Next: core::ptr::null_mut(),
                Buffer: WSK_BUF {
                    Mdl: core::ptr::null_mut(),
                    Offset: 0,
                    Length: data.len(),
                },
                ControlInfo: core::ptr::null_mut(),
                ControlInfoLength: 0,
                RemoteAddress: core::ptr::null_mut(),
            },
            sender: SOCKADDR_STORAGE {
                ss_family: 0,
                __ss_pad1: [0; 6],
                __ss_align: 0,
                __ss_pad2: [0; 112],
            },
            mdl: core::ptr::null_mut(),
            data,
            from: *sender,
        });
        let sender_ptr = (&raw mut block.sender).cast::<SOCKADDR>();
        // SAFETY: SOCKADDR_STORAGE has room for any SOCKADDR_INET.
        let _ = unsafe { crate::write_sockaddr(sender_ptr, sender) };
        block.indication.RemoteAddress = sender_ptr;
        if len > 0 {
            let start = block.data.as_mut_ptr().cast::<core::ffi::c_void>();
            // SAFETY: the bytes live in the block's Vec, never resized while the MDL exists.
            let mdl = unsafe { crate::mdl::IoAllocateMdl(start, len, 0, 0, core::ptr::null_mut()) };
            if mdl.is_null() {
                return None;
            }
            // SAFETY: a fresh MDL over heap memory that stays put.
            unsafe { crate::mdl::MmBuildMdlForNonPagedPool(mdl) };
            block.mdl = mdl;
            block.indication.Buffer.Mdl = mdl;
        }
        Some(block)
    }
}

/// Frees the whole list starting at `ptr` (0: nothing).
///
/// # Safety
/// `ptr` is the head of a list built by [`build_list`], and nobody uses it any more.
pub(super) unsafe fn free_list(ptr: usize) {
    // SAFETY: forwarded contract.
    drop(unsafe { take_back(ptr) });
}

/// Frees the list starting at `ptr` (0: nothing) and gives its datagrams back, in order.
///
/// # Safety
/// As [`free_list`].
unsafe fn take_back(mut ptr: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut datagrams = Vec::new();
    while ptr != 0 {
        let raw = core::ptr::with_exposed_provenance_mut::<DatagramBlock>(ptr);
        // SAFETY: every element of the list is a boxed block (the caller's contract).
        let block = unsafe { Box::from_raw(raw) };
        ptr = block.indication.Next.expose_provenance();
        if !block.mdl.is_null() {
            // SAFETY: allocated by IoAllocateMdl in `new`, freed once here.
            unsafe { crate::mdl::IoFreeMdl(block.mdl) };
        }
        let DatagramBlock { data, from, .. } = *block;
        datagrams.push((data, from));
    }
    datagrams
}

/// Links `datagrams` into one `WSK_DATAGRAM_INDICATION` list: its head, or 0 when empty or
/// when an MDL could not be allocated (the datagrams are then dropped, as a NIC drops them
/// without memory).
fn build_list(datagrams: Vec<(Vec<u8>, SocketAddr)>) -> usize {
    let mut head = 0usize;
    for (data, sender) in datagrams.into_iter().rev() {
        let Some(mut block) = DatagramBlock::new(data, &sender) else {
            // SAFETY: the list built so far is ours and unshared.
            unsafe { free_list(head) };
            return 0;
        };
        block.indication.Next =
            core::ptr::with_exposed_provenance_mut::<WSK_DATAGRAM_INDICATION>(head);
        head = Box::into_raw(block).expose_provenance();
    }
    head
}

/// `SO_WSK_EVENT_CALLBACK` on a datagram socket (`events` checked the input, the NPI and
/// the IRP rule): the status `WskControlSocket` returns.
pub(super) fn set_event_callbacks(sock: &mut Sock, disable: bool, events: u32) -> NTSTATUS {
    if !matches!(sock.host, Host::Udp(_)) {
        // The in-memory network has no indications.
        return STATUS_NOT_SUPPORTED;
    }
    if events == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    if events & !WSK_EVENT_RECEIVE_FROM != 0 {
        return STATUS_NOT_SUPPORTED;
    }
    if disable {
        sock.ev.enabled &= !WSK_EVENT_RECEIVE_FROM;
        return STATUS_SUCCESS;
    }
    match client_of(sock) {
        Some((table, _)) if table.WskReceiveFromEvent.is_some() => {
            sock.ev.enabled |= WSK_EVENT_RECEIVE_FROM;
            sock.ev.not_accepted = false;
            STATUS_SUCCESS
        }
        _ => STATUS_INVALID_PARAMETER,
    }
}

/// `WSK_EVENT_RECEIVE_FROM` when the client's datagram dispatch table of `sock` has
/// `WskReceiveFromEvent` (for `WSK_SET_STATIC_EVENT_CALLBACKS`), else 0.
pub(super) fn callbacks(sock: &Sock) -> u32 {
    match client_of(sock) {
        Some((table, _)) if table.WskReceiveFromEvent.is_some() => WSK_EVENT_RECEIVE_FROM,
        _ => 0,
    }
}

/// Whether the reactor should try a datagram indication on `sock` now.
pub(super) fn due(sock: &Sock) -> bool {
    sock.kind == Kind::Datagram
        && sock.ev.enabled & WSK_EVENT_RECEIVE_FROM != 0
        && !sock.ev.not_accepted
        && !sock.ev.is_indicating()
        && sock.recvs.is_empty()
        && matches!(sock.host, Host::Udp(_))
}

/// The client's datagram dispatch table and socket context of `sock`, if it gave a table.
fn client_of(sock: &Sock) -> Option<(&'static WSK_CLIENT_DATAGRAM_DISPATCH, PVOID)> {
    if sock.ev.dispatch == 0 {
        return None;
    }
    // SAFETY: the client's dispatch table outlives the socket (WskSocket page); a datagram
    // socket's `Dispatch` is a WSK_CLIENT_DATAGRAM_DISPATCH.
    let table = unsafe {
        &*core::ptr::with_exposed_provenance::<WSK_CLIENT_DATAGRAM_DISPATCH>(sock.ev.dispatch)
    };
    let context = core::ptr::with_exposed_provenance_mut::<core::ffi::c_void>(sock.ev.context);
    Some((table, context))
}

/// Takes up to [`DATAGRAMS_PER_INDICATION`] datagrams: those refused earlier first, then those
/// waiting in `sock`'s host socket.
fn read_datagrams(sock: &mut Sock) -> Vec<(Vec<u8>, SocketAddr)> {
    let take = sock.refused_datagrams.len().min(DATAGRAMS_PER_INDICATION);
    let mut datagrams: Vec<_> = sock.refused_datagrams.drain(..take).collect();
    let Host::Udp(udp) = &sock.host else {
        return datagrams;
    };
    LANDING.with_borrow_mut(|landing| {
        while datagrams.len() < DATAGRAMS_PER_INDICATION {
            match udp.recv_from(landing) {
                Ok((n, from)) => datagrams.push((landing[..n].to_vec(), from)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors from earlier sends are no datagram: read on.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                // WouldBlock (drained: the next readiness edge brings more) or a socket
                // error, which a WskReceiveFrom would report.
                Err(_) => break,
            }
        }
    });
    datagrams
}

/// Makes the datagram indications due on socket `id` while datagrams come and the client
/// takes them. Called by the reactor thread, without the provider lock.
pub(super) fn indicate(p: &super::Provider, id: u64) {
    loop {
        let mut st = p.lock();
        let Some(sock) = st.sockets.get_mut(&id) else {
            return;
        };
        if !due(sock) {
            return;
        }
        let Some((table, context)) = client_of(sock) else {
            return;
        };
        let Some(receive_from) = table.WskReceiveFromEvent else {
            return;
        };
        let datagrams = read_datagrams(sock);
        let count = datagrams.len();
        if count == 0 {
            return;
        }
        let head = build_list(datagrams);
        if head == 0 {
            return;
        }
        sock.ev.begin_indication(WSK_EVENT_RECEIVE_FROM, head);
        drop(st);
        let list = core::ptr::with_exposed_provenance_mut::<WSK_DATAGRAM_INDICATION>(head);
        // SAFETY: the client's callback with its context, at DISPATCH_LEVEL, the list live
        // until it returns (or, retained, until WskRelease).
        let status = glue::at_dispatch(|| unsafe {
            receive_from(context, WSK_FLAG_AT_DISPATCH_LEVEL, list)
        });
        let mut st = p.lock();
        // Released from inside the callback, then closed: no leak.
        let released_before_close = super::events::take_released_at_close(&mut st, id);
        let Some(sock) = super::events::after_callback(p, &mut st, id) else {
            drop(st);
            // SAFETY: the socket is gone; the list is the provider's to free.
            unsafe { free_list(head) };
            super::events::report_retained_at_close(
                id,
                status,
                released_before_close,
                "WskReceiveFromEvent",
            );
            return;
        };
        let released = sock.ev.end_indication();
        let keep = match status {
            STATUS_SUCCESS => false,
            STATUS_DATA_NOT_ACCEPTED => {
                if sock.ev.static_events & WSK_EVENT_RECEIVE_FROM != 0 {
                    // Enabled with WSK_SET_STATIC_EVENT_CALLBACKS: "the WSK subsystem will not
                    // disable" it and goes on "when new datagrams are received": the refused
                    // ones are not indicated again (dropped, as UDP may).
                    false
                } else {
                    // Enabled with SO_WSK_EVENT_CALLBACK: no indication until enabled again,
                    // and the datagrams are kept for what comes next (see the module docs).
                    sock.ev.not_accepted = true;
                    // SAFETY: refused, so not retained: the provider's.
                    let refused = unsafe { take_back(head) };
                    for datagram in refused.into_iter().rev() {
                        sock.refused_datagrams.push_front(datagram);
                    }
                    if !sock.recvs.is_empty() {
                        // A WskReceiveFrom posted while the callback ran found nothing and
                        // waits for the host socket: serve it from the kept datagrams now.
                        let mut dones = Vec::new();
                        super::queue::pump(&mut st, &p.io, id, &mut dones);
                        drop(st);
                        if !dones.is_empty() {
                            p.defer(dones);
                        }
                    }
                    return;
                }
            }
            STATUS_PENDING => !released,
            other => {
                drop(st);
                // SAFETY: not retained (the status says nothing): the provider's.
                unsafe { free_list(head) };
                super::events::report_bad_status(id, other, "WskReceiveFromEvent");
            }
        };
        if keep {
            sock.ev.retained_datagrams.push(head);
        } else {
            // SAFETY: not retained (or released while its callback ran): the provider's.
            unsafe { free_list(head) };
        }
        if count < DATAGRAMS_PER_INDICATION {
            // Drained: the next readiness edge brings the next indication.
            return;
        }
    }
}

/// `WskRelease` on a datagram socket: frees a `WSK_DATAGRAM_INDICATION` list the client
/// retained (`events::release_retained`). IRQL <= `DISPATCH_LEVEL`.
pub(super) unsafe extern "system-unwind" fn wsk_release(
    socket: *mut WSK_SOCKET,
    indication: PVOID,
) -> NTSTATUS {
    // SAFETY: the client's socket and what it releases, forwarded.
    unsafe {
        super::events::release_retained(socket, indication, super::events::Retained::DatagramLists)
    }
}
