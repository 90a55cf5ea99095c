//! `WskAcceptEvent` on listening sockets: `SO_WSK_EVENT_CALLBACK` with `WSK_EVENT_ACCEPT`,
//! and the indications the reactor makes of accepted connections.
//!
//! Rules, each from its WDK page:
//! - "`PFN_WSK_ACCEPT_EVENT` callback function (wsk.h)"
//!   (learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_accept_event): the
//!   provider indicates each accepted connection with its new socket and both addresses; the
//!   client returns `STATUS_SUCCESS`, setting `*AcceptSocketContext` and
//!   `*AcceptSocketDispatch` (the socket is then the client's, to close with
//!   `WskCloseSocket`), or `STATUS_REQUEST_NOT_ACCEPTED`, and the provider closes the socket.
//!   Any other status is a verifier failure.
//! - "`SO_WSK_EVENT_CALLBACK`": enabled on a listening socket whose `Dispatch` (given to
//!   `WskSocket`) is a `WSK_CLIENT_LISTEN_DISPATCH` with `WskAcceptEvent` set. Connection
//!   events enabled on the listening socket are enabled on each socket `WskAcceptEvent`
//!   accepts (where its connection dispatch table has the callback), and cannot be disabled
//!   on the listening socket.
//!
//! Pending `WskAccept` IRPs are served first: an indication is made only when none is
//! queued. Indications are made by the reactor thread at `DISPATCH_LEVEL`
//! (`WSK_FLAG_AT_DISPATCH_LEVEL`), never under the provider lock.

use std::format;
use std::io;

use mio::Interest;

use super::glue::{self, bugcheck};
use super::os;
use super::{Host, Kind, Sock, new_sock, token};
use crate::{
    NTSTATUS, PVOID, SOCKADDR, SOCKADDR_STORAGE, STATUS_INVALID_PARAMETER,
    STATUS_REQUEST_NOT_ACCEPTED, STATUS_SUCCESS, WSK_CLIENT_CONNECTION_DISPATCH,
    WSK_CLIENT_LISTEN_DISPATCH, WSK_EVENT_ACCEPT, WSK_FLAG_AT_DISPATCH_LEVEL, WSK_SOCKET,
};

/// `SO_WSK_EVENT_CALLBACK` on a listening socket: `WSK_EVENT_ACCEPT`, and connection events
/// for the sockets its `WskAcceptEvent` accepts ("`SO_WSK_EVENT_CALLBACK`": "A WSK application
/// automatically enables these callback functions by enabling the connection-oriented socket
/// event callback functions on the listening socket"; only for sockets accepted by
/// `WskAcceptEvent`, not by `WskAccept`; once enabled they "cannot be disabled on the
/// listening socket", and survive a disable and re-enable of `WskAcceptEvent`).
pub(super) fn set_event_callbacks(sock: &mut Sock, disable: bool, events: u32) -> NTSTATUS {
    if events == 0 || events & !(WSK_EVENT_ACCEPT | super::events::CONNECTION_EVENTS) != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    if disable {
        if events != WSK_EVENT_ACCEPT {
            return STATUS_INVALID_PARAMETER;
        }
        sock.ev.enabled &= !WSK_EVENT_ACCEPT;
        return STATUS_SUCCESS;
    }
    if events & WSK_EVENT_ACCEPT != 0 && listen_table(sock).and_then(|t| t.WskAcceptEvent).is_none()
    {
        return STATUS_INVALID_PARAMETER;
    }
    sock.ev.enabled |= events & WSK_EVENT_ACCEPT;
    sock.ev.inherited |= events & super::events::CONNECTION_EVENTS;
    STATUS_SUCCESS
}

/// `WSK_EVENT_ACCEPT` when the client's listen dispatch table of `sock` has `WskAcceptEvent`
/// (for `WSK_SET_STATIC_EVENT_CALLBACKS`), else 0.
pub(super) fn callbacks(sock: &Sock) -> u32 {
    if listen_table(sock).and_then(|t| t.WskAcceptEvent).is_some() {
        WSK_EVENT_ACCEPT
    } else {
        0
    }
}

/// The client's `WSK_CLIENT_LISTEN_DISPATCH` of listening socket `sock`, if it gave one.
fn listen_table(sock: &Sock) -> Option<&'static WSK_CLIENT_LISTEN_DISPATCH> {
    if sock.ev.dispatch == 0 {
        return None;
    }
    // SAFETY: a listening socket's dispatch is the client's WSK_CLIENT_LISTEN_DISPATCH, which
    // outlives the socket (the WskSocket page).
    Some(unsafe {
        &*core::ptr::with_exposed_provenance::<WSK_CLIENT_LISTEN_DISPATCH>(sock.ev.dispatch)
    })
}

/// Whether the reactor should try an accept indication on listening socket `sock` now.
pub(super) fn due(sock: &Sock) -> bool {
    sock.kind == Kind::Listen
        && sock.ev.enabled & WSK_EVENT_ACCEPT != 0
        && !sock.ev.is_indicating()
        && sock.accepts.is_empty()
        && matches!(sock.host, Host::Listener(_))
}

/// An empty `SOCKADDR_STORAGE` for an address to be written into.
const fn empty_address() -> SOCKADDR_STORAGE {
    SOCKADDR_STORAGE {
        ss_family: 0,
        __ss_pad1: [0; 6],
        __ss_align: 0,
        __ss_pad2: [0; 112],
    }
}

/// Makes the accept indications due on listening socket `id`, one per waiting connection.
/// Called by the reactor thread, without the provider lock.
pub(super) fn indicate(p: &super::Provider, id: u64) {
    loop {
        let mut st = p.lock();
        let next_id = st.next_id + 1;
        let Some(sock) = st.sockets.get_mut(&id) else {
            return;
        };
        if !due(sock) {
            return;
        }
        let Some(accept_event) = listen_table(sock).and_then(|t| t.WskAcceptEvent) else {
            return;
        };
        let Host::Listener(listener) = &sock.host else {
            return;
        };
        let Some((mut stream, peer)) = accept_waiting(listener) else {
            return;
        };
        if p.io
            .register(
                &mut stream,
                token(next_id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            continue;
        }
        let local_addr = os::local_addr(&stream).ok();
        let (client, v6, inherited) = (sock.client, sock.v6, sock.ev.inherited);
        let context = core::ptr::with_exposed_provenance_mut::<core::ffi::c_void>(sock.ev.context);
        sock.ev.begin_indication(WSK_EVENT_ACCEPT, 0);
        st.next_id = next_id;
        let mut child = new_sock(next_id, client, Kind::Connection, v6, Host::Stream(stream));
        child.bound = true;
        child.connected = true;
        let handle = child.handle.information();
        st.sockets.insert(next_id, child);
        drop(st);

        let mut local = empty_address();
        let mut remote = empty_address();
        if let Some(a) = local_addr {
            // SAFETY: a SOCKADDR_STORAGE holds any socket address.
            let _ = unsafe { crate::write_sockaddr((&raw mut local).cast::<SOCKADDR>(), &a) };
        }
        // SAFETY: as above.
        let _ = unsafe { crate::write_sockaddr((&raw mut remote).cast::<SOCKADDR>(), &peer) };
        let mut accept_context: PVOID = core::ptr::null_mut();
        let mut accept_dispatch: *const WSK_CLIENT_CONNECTION_DISPATCH = core::ptr::null();
        let accept_socket = core::ptr::with_exposed_provenance_mut::<WSK_SOCKET>(handle);
        // SAFETY: the client's callback with its listening socket's context, at
        // DISPATCH_LEVEL; the addresses live until it returns.
        let status = glue::at_dispatch(|| unsafe {
            accept_event(
                context,
                WSK_FLAG_AT_DISPATCH_LEVEL,
                (&raw mut local).cast::<SOCKADDR>(),
                (&raw mut remote).cast::<SOCKADDR>(),
                accept_socket,
                &raw mut accept_context,
                &raw mut accept_dispatch,
            )
        });

        let mut st = p.lock();
        if let Some(sock) = super::events::after_callback(p, &mut st, id) {
            // No chain rides on an accept indication: nothing can have been released.
            let _ = sock.ev.end_indication();
        }
        if status == STATUS_SUCCESS {
            let static_events = st.regs.get(&client).map_or(0, |r| r.static_events);
            if let Some(child) = st.sockets.get_mut(&next_id) {
                child.ev.context = accept_context.expose_provenance();
                child.ev.dispatch = accept_dispatch.expose_provenance();
                // Its static event callbacks (`WSK_SET_STATIC_EVENT_CALLBACKS`) and those its
                // listening socket passes on, now that its dispatch table is known; data may
                // already wait for them.
                super::events::apply_static(child, static_events);
                super::events::enable_inherited(child, inherited);
                if static_events | inherited != 0 {
                    st.soon.push(next_id);
                }
            }
            continue;
        }
        // Refused (or a status outside the two): the provider closes the accepted socket.
        if let Some(mut child) = st.sockets.remove(&next_id) {
            child.release_host(&p.io, true);
            // SAFETY: the client refused the socket and never uses it again; freed only here.
            unsafe { child.handle.free() };
        }
        drop(st);
        // https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_accept_event
        // (return value: STATUS_SUCCESS or STATUS_REQUEST_NOT_ACCEPTED, nothing else).
        if status != STATUS_REQUEST_NOT_ACCEPTED {
            bugcheck(
                "WSK_ACCEPT_EVENT_STATUS",
                format!(
                    "WskAcceptEvent on listening socket {id} returned {status:#x}: the callback \
                     returns STATUS_SUCCESS or STATUS_REQUEST_NOT_ACCEPTED"
                ),
            );
        }
    }
}

/// The next connection waiting in a listener's backlog, skipping those that died there.
/// `None` when drained, or out of descriptors or memory: retrying at once would spin the
/// reactor, and what waits in the backlog is indicated on the listener's next event.
fn accept_waiting(
    listener: &mio::net::TcpListener,
) -> Option<(mio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        match listener.accept() {
            Ok(pair) => return Some(pair),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                ) => {}
            Err(_) => return None,
        }
    }
}
