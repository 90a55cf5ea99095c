//! The host provider's `WskAcceptEvent` (`SO_WSK_EVENT_CALLBACK` with `WSK_EVENT_ACCEPT` on
//! a listening socket), driven as a driver drives it, with real peers on loopback: accepted
//! sockets work and are the client's, refused ones are closed by the provider. Every
//! scenario runs under every standard plan with the leak check.
mod common;

use common::*;

/// The listening socket's context, checked by the callback.
const LISTEN_CONTEXT: usize = 0x1157_e4e5;
/// The context the callback gives accepted sockets.
const ACCEPTED_CONTEXT: usize = 0xacce_97ed;

/// How many indications the callback accepts before refusing the rest.
static ACCEPT_LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// One indication the callback saw: the socket, the remote address, whether it was accepted.
struct Seen {
    socket: usize,
    remote: Option<SocketAddr>,
    accepted: bool,
    flags: u32,
    irql: u8,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

static CONNECTION_EVENTS: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: None,
    WskDisconnectEvent: None,
    WskSendBacklogEvent: None,
};

static LISTEN_EVENTS: WSK_CLIENT_LISTEN_DISPATCH = WSK_CLIENT_LISTEN_DISPATCH {
    WskAcceptEvent: Some(on_accept),
    WskInspectEvent: None,
    WskAbortEvent: None,
};

unsafe extern "system-unwind" fn on_accept(
    context: PVOID,
    flags: u32,
    _local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    socket: *mut WSK_SOCKET,
    accept_context: *mut PVOID,
    accept_dispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS {
    assert_eq!(context as usize, LISTEN_CONTEXT);
    let mut seen = SEEN.lock().unwrap();
    let accepted = seen.iter().filter(|s| s.accepted).count() < ACCEPT_LIMIT.load(Ordering::SeqCst);
    let mut addr = Addr::zero();
    // SAFETY: the provider's address, live for the callback; an Addr holds any sockaddr.
    unsafe { std::ptr::copy_nonoverlapping(remote.cast::<u8>(), addr.ptr().cast::<u8>(), 28) };
    seen.push(Seen {
        socket: socket as usize,
        remote: addr.get(),
        accepted,
        flags,
        irql: wsk_sys::KeGetCurrentIrql(),
    });
    if !accepted {
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    // SAFETY: the provider passes writable out-parameters.
    unsafe { accept_context.write(ACCEPTED_CONTEXT as PVOID) };
    // SAFETY: as above.
    unsafe { accept_dispatch.write(&raw const CONNECTION_EVENTS) };
    STATUS_SUCCESS
}

/// `SO_WSK_EVENT_CALLBACK` with `mask`, without an IRP.
fn set_events(sock: &Sock, mask: u32) -> NTSTATUS {
    control_events(sock, mask, std::ptr::null_mut())
}

/// Waits until the callback has seen `n` indications (or `BOUND` passes).
fn wait_seen(n: usize) {
    let deadline = std::time::Instant::now() + BOUND;
    while SEEN.lock().unwrap().len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "indication {n} never came"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A listener with the test's context and accept callback, bound to loopback, events on.
fn event_listener(client: &Client) -> (Sock, SocketAddr) {
    let (status, sock) = client.try_socket_with(
        Kind::Listen,
        false,
        LISTEN_CONTEXT as PVOID,
        (&raw const LISTEN_EVENTS).cast(),
    );
    assert_eq!(status, STATUS_SUCCESS);
    let sock = sock.expect("a socket on success");
    assert_eq!(sock.bind(loopback(false)), STATUS_SUCCESS, "bind");
    let addr = sock.local_addr().expect("listener address");
    assert_eq!(set_events(&sock, WSK_EVENT_ACCEPT), STATUS_SUCCESS);
    (sock, addr)
}

/// Two connections accepted through the callback (no `WskAccept` posted), at
/// `DISPATCH_LEVEL`, with the right remote addresses; each accepted socket carries data and
/// is the client's to close. A third is refused: the provider closes it, and the peer sees
/// the end of the stream.
#[test]
fn accepted_sockets_work_and_refused_ones_are_closed() {
    each_plan(|| {
        SEEN.lock().unwrap().clear();
        ACCEPT_LIMIT.store(2, Ordering::SeqCst);
        let client = Client::register();
        let (listener, addr) = event_listener(&client);
        let mut peers = Vec::new();
        for n in 1..=3 {
            let peer = std::net::TcpStream::connect(addr).unwrap();
            peer.set_read_timeout(Some(BOUND)).unwrap();
            wait_seen(n);
            peers.push(peer);
        }
        let seen: Vec<(usize, bool)> = {
            let seen = SEEN.lock().unwrap();
            for (s, peer) in seen.iter().zip(&peers) {
                assert_ne!(s.flags & WSK_FLAG_AT_DISPATCH_LEVEL, 0);
                assert_eq!(s.irql, wsk_sys::DISPATCH_LEVEL);
                assert_eq!(s.remote, Some(peer.local_addr().unwrap()), "remote address");
                assert_ne!(s.socket, 0);
            }
            seen.iter().map(|s| (s.socket, s.accepted)).collect()
        };
        assert_eq!(
            seen.iter().map(|s| s.1).collect::<Vec<_>>(),
            [true, true, false]
        );
        for ((n, (socket, _)), letter) in seen.iter().take(2).enumerate().zip([b'a', b'b']) {
            let sock = Sock {
                s: *socket as *mut WSK_SOCKET,
                kind: Kind::Connection,
            };
            let message = [letter; 5];
            assert_eq!(sock.send(&message, 0), (STATUS_SUCCESS, 5));
            let mut got = [0; 5];
            peers[n].read_exact(&mut got).unwrap();
            assert_eq!(got, message, "the accepted socket carries data");
            sock.close();
        }
        let mut rest = Vec::new();
        // A reset is as good as a FIN here: the refused socket is gone either way.
        let _ = peers[2].read_to_end(&mut rest);
        assert!(rest.is_empty(), "nothing comes on a refused connection");
        listener.close();
        client.deregister();
    });
}

/// With a `WskAccept` posted, the IRP is served first; once accept events are disabled,
/// connections wait for `WskAccept` again.
#[test]
fn posted_accepts_come_first_and_disabling_stops_indications() {
    each_plan(|| {
        SEEN.lock().unwrap().clear();
        ACCEPT_LIMIT.store(usize::MAX, Ordering::SeqCst);
        let client = Client::register();
        let (listener, addr) = event_listener(&client);
        assert_eq!(
            set_events(&listener, WSK_EVENT_ACCEPT | WSK_EVENT_DISABLE),
            STATUS_SUCCESS
        );
        let _peer = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _, _) = listener.accept();
        assert!(SEEN.lock().unwrap().is_empty(), "disabled: no indication");
        accepted.close();
        assert_eq!(set_events(&listener, WSK_EVENT_ACCEPT), STATUS_SUCCESS);
        let _second = std::net::TcpStream::connect(addr).unwrap();
        wait_seen(1);
        let socket = SEEN.lock().unwrap()[0].socket;
        Sock {
            s: socket as *mut WSK_SOCKET,
            kind: Kind::Connection,
        }
        .close();
        listener.close();
        client.deregister();
    });
}

/// Enabling accept events needs a `WskAcceptEvent` in the listener's dispatch.
#[test]
fn enabling_without_a_callback_is_refused() {
    each_plan(|| {
        let client = Client::register();
        let (listener, _) = client.listener(false);
        assert_eq!(
            set_events(&listener, WSK_EVENT_ACCEPT),
            STATUS_INVALID_PARAMETER
        );
        listener.close();
        client.deregister();
    });
}
