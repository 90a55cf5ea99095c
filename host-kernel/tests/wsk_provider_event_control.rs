//! The host provider's event-callback control beyond enabling: static event callbacks
//! (`WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)`), disabling a callback while it runs
//! (`STATUS_EVENT_PENDING` without an IRP, the IRP held until the callback returns with one),
//! and `WskSendBacklogEvent` with `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG`. Driven as a driver
//! drives them, with a real peer on loopback; every scenario that takes a plan runs under
//! every standard plan with the leak check.
mod common;

use common::*;

/// Bytes the receive callback consumed, in order.
static RECEIVED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Receive indications so far.
static INDICATIONS: AtomicUsize = AtomicUsize::new(0);
/// Set: the receive callback waits in its first call until it is cleared.
static HOLD: AtomicBool = AtomicBool::new(false);
/// Set by the receive callback while it waits on `HOLD`.
static HELD: AtomicBool = AtomicBool::new(false);
/// A socket whose receive callback disables its own receive events (0: none).
static DISABLE_FROM_INSIDE: AtomicUsize = AtomicUsize::new(0);
/// What that disable returned.
static INSIDE_STATUS: AtomicI32 = AtomicI32::new(0);
/// The ideal send backlogs `WskSendBacklogEvent` was given.
static BACKLOGS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

static EVENTS: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: Some(on_receive),
    WskDisconnectEvent: Some(on_disconnect),
    WskSendBacklogEvent: Some(on_send_backlog),
};

/// Consumes every indication (after waiting on `HOLD` in the first, when set).
unsafe extern "system-unwind" fn on_receive(
    context: PVOID,
    _flags: u32,
    indication: *mut WSK_DATA_INDICATION,
    indicated: SIZE_T,
    accepted: *mut SIZE_T,
) -> NTSTATUS {
    INDICATIONS.fetch_add(1, Ordering::SeqCst);
    RECEIVED
        .lock()
        .unwrap()
        .extend_from_slice(&chain_bytes(indication));
    let inside = DISABLE_FROM_INSIDE.swap(0, Ordering::SeqCst);
    if inside != 0 {
        let sock = Sock {
            s: inside as *mut WSK_SOCKET,
            kind: Kind::Connection,
        };
        let status = set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, None);
        INSIDE_STATUS.store(status, Ordering::SeqCst);
    }
    if HOLD.load(Ordering::SeqCst) {
        HELD.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + BOUND;
        while HOLD.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        HELD.store(false, Ordering::SeqCst);
    }
    let _ = context;
    // SAFETY: the provider passes a writable count.
    unsafe { accepted.write(indicated) };
    STATUS_SUCCESS
}

unsafe extern "system-unwind" fn on_disconnect(_context: PVOID, _flags: u32) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system-unwind" fn on_send_backlog(_context: PVOID, ideal: SIZE_T) -> NTSTATUS {
    BACKLOGS.lock().unwrap().push(ideal);
    STATUS_SUCCESS
}

fn reset_recorders() {
    RECEIVED.lock().unwrap().clear();
    INDICATIONS.store(0, Ordering::SeqCst);
    HOLD.store(false, Ordering::SeqCst);
    HELD.store(false, Ordering::SeqCst);
    DISABLE_FROM_INSIDE.store(0, Ordering::SeqCst);
    INSIDE_STATUS.store(0, Ordering::SeqCst);
    BACKLOGS.lock().unwrap().clear();
}

/// Waits until `ready` holds (or `BOUND` passes, a failure named `what`).
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + BOUND;
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} never came");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits (as `wait_until`, named `what`) until the receive callback has consumed as many bytes
/// as `want` holds, then checks they are `want`.
fn wait_received(what: &str, want: &[u8]) {
    wait_until(what, || RECEIVED.lock().unwrap().len() >= want.len());
    assert_eq!(RECEIVED.lock().unwrap().as_slice(), want);
}

/// A socket of `kind` with a context and the client dispatch table `dispatch`, bound to
/// loopback.
fn bound_socket_with(client: &Client, kind: Kind, dispatch: *const std::ffi::c_void) -> Sock {
    let (status, sock) = client.try_socket_with(kind, false, 0x5eed as PVOID, dispatch);
    assert_eq!(status, STATUS_SUCCESS);
    let sock = sock.expect("a socket on success");
    assert_eq!(sock.bind(loopback(false)), STATUS_SUCCESS, "bind");
    sock
}

/// A connection socket with the test's event callbacks, connected to a new std listener, and
/// the accepted peer.
fn event_pair(client: &Client) -> (Sock, TcpStream) {
    let std_listener = TcpListener::bind(loopback(false)).unwrap();
    let sock = bound_socket_with(client, Kind::Connection, (&raw const EVENTS).cast());
    assert_eq!(
        sock.connect(std_listener.local_addr().unwrap()),
        STATUS_SUCCESS,
        "connect"
    );
    let (peer, _) = std_listener.accept().unwrap();
    peer.set_write_timeout(Some(BOUND)).unwrap();
    (sock, peer)
}

/// `SO_WSK_EVENT_CALLBACK` with `mask`, without an IRP (or with `io`'s, not waited for).
fn set_events(sock: &Sock, mask: u32, io: Option<&Io>) -> NTSTATUS {
    control_events(sock, mask, io.map_or(std::ptr::null_mut(), Io::prep))
}

/// `WskControlClient(WSK_SET_STATIC_EVENT_CALLBACKS)` with `control`'s bytes (`size` of them).
fn set_static(client: &Client, control: &mut WSK_EVENT_CALLBACK_CONTROL, size: usize) -> NTSTATUS {
    // SAFETY: the captured client; `size` readable bytes of input; no output, no IRP.
    unsafe {
        client
            .dispatch()
            .WskControlClient
            .expect("WskControlClient")(
            client.npi.Client,
            WSK_SET_STATIC_EVENT_CALLBACKS,
            size,
            std::ptr::from_mut(control).cast(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    }
}

/// `WSK_SET_STATIC_EVENT_CALLBACKS` with a well-formed input naming `mask`.
fn set_static_mask(client: &Client, mask: u32) -> NTSTATUS {
    let mut control = static_control(mask);
    set_static(
        client,
        &mut control,
        size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
    )
}

fn static_control(mask: u32) -> WSK_EVENT_CALLBACK_CONTROL {
    WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &raw const NPI_WSK_ID,
        EventMask: mask,
    }
}

/// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG` with an IRP and an output of `out_size` bytes: the
/// status, the bytes returned and the value.
fn query_ideal_backlog(sock: &Sock, out_size: usize) -> (NTSTATUS, usize, usize) {
    let mut value: usize = 0;
    let io = Io::new();
    // SAFETY: live socket, output of `out_size <= 8` bytes, and IRP.
    let r = unsafe {
        sock.basic().WskControlSocket.expect("WskControlSocket")(
            sock.s,
            WskIoctl,
            SIO_WSK_QUERY_IDEAL_SEND_BACKLOG,
            0,
            0,
            std::ptr::null_mut(),
            out_size,
            (&raw mut value).cast(),
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    let (status, bytes) = io.wait("SIO_WSK_QUERY_IDEAL_SEND_BACKLOG");
    (status, bytes, value)
}

/// Static receive and disconnect callbacks are on for a socket from its creation: data is
/// indicated with no `SO_WSK_EVENT_CALLBACK`; they cannot be disabled, while the socket's other
/// events still can be enabled and disabled.
#[test]
fn static_callbacks_are_on_from_creation_and_stay_on() {
    each_plan(|| {
        reset_recorders();
        let client = Client::register();
        assert_eq!(
            set_static_mask(&client, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT),
            STATUS_SUCCESS
        );
        let (sock, mut peer) = event_pair(&client);
        peer.write_all(b"static").unwrap();
        wait_received("the static indication", b"static");
        assert_eq!(
            set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, None),
            STATUS_INVALID_PARAMETER,
            "a static callback cannot be disabled"
        );
        assert_eq!(
            set_events(&sock, WSK_EVENT_SEND_BACKLOG, None),
            STATUS_SUCCESS,
            "another event can still be enabled"
        );
        assert_eq!(
            set_events(&sock, WSK_EVENT_SEND_BACKLOG | WSK_EVENT_DISABLE, None),
            STATUS_SUCCESS,
            "and disabled"
        );
        peer.write_all(b" still").unwrap();
        wait_received("the indication after", b"static still");
        sock.close();
        client.deregister();
    });
}

/// The input is checked as `SO_WSK_EVENT_CALLBACK`'s: too short, no or another NPI, no
/// event, a disable, an unknown event bit.
#[test]
fn static_callbacks_input_is_checked() {
    each_plan(|| {
        let client = Client::register();
        let size = size_of::<WSK_EVENT_CALLBACK_CONTROL>();
        let mut control = static_control(WSK_EVENT_RECEIVE);
        assert_eq!(
            set_static(&client, &mut control, size - 1),
            STATUS_INVALID_PARAMETER
        );
        let other = wsk_sys::GUID {
            Data1: 1,
            Data2: 2,
            Data3: 3,
            Data4: [0; 8],
        };
        let mut foreign = WSK_EVENT_CALLBACK_CONTROL {
            NpiId: &raw const other,
            EventMask: WSK_EVENT_RECEIVE,
        };
        assert_eq!(
            set_static(&client, &mut foreign, size),
            STATUS_NOT_SUPPORTED
        );
        let mut none = WSK_EVENT_CALLBACK_CONTROL {
            NpiId: std::ptr::null(),
            EventMask: WSK_EVENT_RECEIVE,
        };
        assert_eq!(
            set_static(&client, &mut none, size),
            STATUS_INVALID_PARAMETER
        );
        for mask in [
            0,
            WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE,
            WSK_EVENT_RECEIVE | 0x1,
        ] {
            let mut control = static_control(mask);
            assert_eq!(
                set_static(&client, &mut control, size),
                STATUS_INVALID_PARAMETER,
                "mask {mask:#x}"
            );
        }
        client.deregister();
    });
}

/// "it must do so before it creates any sockets": after one, a verifier failure.
#[test]
fn static_callbacks_after_a_socket_are_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    let sock = Mutex::new(None);
    expect_bugcheck(&kernel, "WSK_STATIC_EVENTS_AFTER_SOCKET", || {
        let c = Client::register();
        let s = c.socket(Kind::Connection, false);
        *sock.lock().unwrap() = Some(s);
        let mut control = static_control(WSK_EVENT_RECEIVE);
        // A copy of the client's handles: the client itself is kept (outside the unwinding
        // call) for the clean-up.
        let handles = Client {
            reg: Box::new(WSK_REGISTRATION {
                ReservedRegistrationState: 0,
                ReservedRegistrationContext: std::ptr::null_mut(),
                ReservedRegistrationLock: 0,
            }),
            npi: WSK_PROVIDER_NPI {
                Client: c.npi.Client,
                Dispatch: c.npi.Dispatch,
            },
        };
        *client.lock().unwrap() = Some(c);
        set_static(
            &handles,
            &mut control,
            size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
        );
    });
    kernel.on_kernel_thread(|| {
        sock.lock().unwrap().take().unwrap().close();
        client.lock().unwrap().take().unwrap().deregister();
    });
}

/// "The Irp parameter must be NULL for this client control operation": a verifier failure.
#[test]
fn static_callbacks_with_an_irp_are_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    expect_bugcheck(&kernel, "WSK_STATIC_EVENTS_WITH_IRP", || {
        let registered = Client::register();
        let (handle, dispatch) = (registered.npi.Client, registered.npi.Dispatch);
        *client.lock().unwrap() = Some(registered);
        let mut control = static_control(WSK_EVENT_RECEIVE);
        let io = Io::new();
        // SAFETY: the provider's static dispatch table.
        let control_client = unsafe { (*dispatch).WskControlClient.expect("WskControlClient") };
        // SAFETY: the captured client and input; the IRP the verifier refuses.
        unsafe {
            control_client(
                handle,
                WSK_SET_STATIC_EVENT_CALLBACKS,
                size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                (&raw mut control).cast(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
    });
    kernel.on_kernel_thread(|| {
        client.lock().unwrap().take().unwrap().deregister();
    });
}

/// Disabling receive events while the receive callback runs: without an IRP
/// `STATUS_EVENT_PENDING`; with one the IRP stays pending until the callback has returned,
/// then completes with success. No indication follows; the data waits for a `WskReceive`.
#[test]
fn disabling_a_callback_in_progress_waits_for_it() {
    each_plan(|| {
        for with_irp in [false, true] {
            reset_recorders();
            let client = Client::register();
            let (sock, mut peer) = event_pair(&client);
            assert_eq!(
                set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT, None),
                STATUS_SUCCESS
            );
            HOLD.store(true, Ordering::SeqCst);
            peer.write_all(b"first").unwrap();
            wait_until("the held callback", || HELD.load(Ordering::SeqCst));
            assert_eq!(
                set_events(&sock, WSK_EVENT_DISCONNECT | WSK_EVENT_DISABLE, None),
                STATUS_SUCCESS,
                "another callback than the one in progress is disabled at once"
            );
            let io = Io::new();
            if with_irp {
                let r = set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, Some(&io));
                assert_eq!(r, STATUS_PENDING, "the IRP waits for the callback");
                std::thread::sleep(Duration::from_millis(20));
                assert!(
                    io.signal.state.lock().unwrap().is_none(),
                    "not completed while the callback runs"
                );
            } else {
                assert_eq!(
                    set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, None),
                    STATUS_EVENT_PENDING
                );
            }
            HOLD.store(false, Ordering::SeqCst);
            if with_irp {
                assert_eq!(io.wait("the held disable").0, STATUS_SUCCESS);
            }
            wait_until("the callback's return", || !HELD.load(Ordering::SeqCst));
            let before = INDICATIONS.load(Ordering::SeqCst);
            peer.write_all(b"second").unwrap();
            let (status, bytes) = sock.recv(64, 0);
            assert_eq!((status, bytes.as_slice()), (STATUS_SUCCESS, &b"second"[..]));
            assert_eq!(
                INDICATIONS.load(Ordering::SeqCst),
                before,
                "no indication after the disable"
            );
            assert_eq!(RECEIVED.lock().unwrap().as_slice(), b"first");
            sock.close();
            client.deregister();
        }
    });
}

/// A receive callback that disables its own event gets `STATUS_EVENT_PENDING` (it is in
/// progress: itself), and no indication follows.
#[test]
fn disabling_from_inside_the_callback_is_event_pending() {
    each_plan(|| {
        reset_recorders();
        let client = Client::register();
        let (sock, mut peer) = event_pair(&client);
        assert_eq!(set_events(&sock, WSK_EVENT_RECEIVE, None), STATUS_SUCCESS);
        DISABLE_FROM_INSIDE.store(sock.s as usize, Ordering::SeqCst);
        peer.write_all(b"once").unwrap();
        wait_until("the disable inside", || {
            INSIDE_STATUS.load(Ordering::SeqCst) != 0
        });
        assert_eq!(INSIDE_STATUS.load(Ordering::SeqCst), STATUS_EVENT_PENDING);
        peer.write_all(b"twice").unwrap();
        let (status, bytes) = sock.recv(64, 0);
        assert_eq!((status, bytes.as_slice()), (STATUS_SUCCESS, &b"twice"[..]));
        assert_eq!(INDICATIONS.load(Ordering::SeqCst), 1);
        sock.close();
        client.deregister();
    });
}

/// `SIO_WSK_QUERY_IDEAL_SEND_BACKLOG` reports the host socket's send buffer; a new send
/// buffer size is a new ideal backlog, which `WskSendBacklogEvent` indicates (and the query
/// then reports).
#[test]
fn send_backlog_is_queried_and_indicated_when_it_changes() {
    each_plan(|| {
        reset_recorders();
        let client = Client::register();
        let (sock, _peer) = event_pair(&client);
        let (status, bytes, first) = query_ideal_backlog(&sock, size_of::<usize>());
        assert_eq!((status, bytes), (STATUS_SUCCESS, size_of::<usize>()));
        assert!(first > 0, "an ideal backlog");
        assert_eq!(
            query_ideal_backlog(&sock, 4).0,
            STATUS_BUFFER_TOO_SMALL,
            "a SIZE_T output"
        );
        assert_eq!(
            set_events(&sock, WSK_EVENT_SEND_BACKLOG, None),
            STATUS_SUCCESS
        );
        // Another size than the current one (Linux reports twice what it is given).
        let size = u32::try_from(first).unwrap().max(8192);
        assert_eq!(sock.set_option(SOL_SOCKET, SO_SNDBUF, size), STATUS_SUCCESS);
        wait_until("the send backlog indication", || {
            !BACKLOGS.lock().unwrap().is_empty()
        });
        let (status, _, now) = query_ideal_backlog(&sock, size_of::<usize>());
        assert_eq!(status, STATUS_SUCCESS);
        assert_ne!(now, first, "the backlog changed");
        assert_eq!(
            BACKLOGS.lock().unwrap().as_slice(),
            &[now],
            "indicated once, with the new value"
        );
        sock.close();
        client.deregister();
    });
}

/// The query on another socket category is not supported, and before the socket connects it
/// is refused.
#[test]
fn send_backlog_query_needs_a_connected_connection_socket() {
    each_plan(|| {
        let client = Client::register();
        let datagram = client.socket(Kind::Datagram, false);
        assert_eq!(
            query_ideal_backlog(&datagram, size_of::<usize>()).0,
            STATUS_NOT_SUPPORTED
        );
        let unconnected = client.socket(Kind::Connection, false);
        assert_eq!(
            query_ideal_backlog(&unconnected, size_of::<usize>()).0,
            STATUS_INVALID_DEVICE_STATE
        );
        datagram.close();
        unconnected.close();
        client.deregister();
    });
}

/// Datagram indications the static receive-from callback was given.
static DATAGRAM_INDICATIONS: AtomicUsize = AtomicUsize::new(0);

static DATAGRAM_EVENTS: WSK_CLIENT_DATAGRAM_DISPATCH = WSK_CLIENT_DATAGRAM_DISPATCH {
    WskReceiveFromEvent: Some(on_receive_from),
};

/// Refuses every datagram indication (`STATUS_DATA_NOT_ACCEPTED`).
unsafe extern "system-unwind" fn on_receive_from(
    _context: PVOID,
    _flags: u32,
    _list: *mut WSK_DATAGRAM_INDICATION,
) -> NTSTATUS {
    DATAGRAM_INDICATIONS.fetch_add(1, Ordering::SeqCst);
    STATUS_DATA_NOT_ACCEPTED
}

/// A static `WskReceiveFromEvent` on a datagram socket: on from creation (indications once
/// the socket is bound), and `STATUS_DATA_NOT_ACCEPTED` does not disable it ("the WSK
/// subsystem will not disable" a statically enabled one): the next datagram is indicated too.
#[test]
fn static_receive_from_goes_on_after_data_not_accepted() {
    each_plan(|| {
        DATAGRAM_INDICATIONS.store(0, Ordering::SeqCst);
        let client = Client::register();
        assert_eq!(
            set_static_mask(&client, WSK_EVENT_RECEIVE_FROM),
            STATUS_SUCCESS
        );
        let sock = bound_socket_with(&client, Kind::Datagram, (&raw const DATAGRAM_EVENTS).cast());
        let to = sock.local_addr().expect("bound");
        let peer = UdpSocket::bind(loopback(false)).unwrap();
        peer.send_to(b"one", to).unwrap();
        wait_until("the first datagram indication", || {
            DATAGRAM_INDICATIONS.load(Ordering::SeqCst) >= 1
        });
        peer.send_to(b"two", to).unwrap();
        wait_until("the indication after STATUS_DATA_NOT_ACCEPTED", || {
            DATAGRAM_INDICATIONS.load(Ordering::SeqCst) >= 2
        });
        sock.close();
        client.deregister();
    });
}

/// A socket handed out by `WskAccept` with the client's connection dispatch is the client's
/// like one it created: its static receive callback is on from the start.
#[test]
fn static_callbacks_are_on_for_accepted_sockets() {
    each_plan(|| {
        reset_recorders();
        let client = Client::register();
        assert_eq!(
            set_static_mask(&client, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT),
            STATUS_SUCCESS
        );
        let (listener, addr) = client.listener(false);
        let (mut local, mut remote) = (Addr::zero(), Addr::zero());
        let io = Io::new();
        // SAFETY: live listening socket, address buffers and IRP, all outliving the wait; the
        // dispatch table is static.
        let r = unsafe {
            listener.listen().WskAccept.expect("WskAccept")(
                listener.s,
                0,
                0x5eed as PVOID,
                (&raw const EVENTS).cast(),
                local.ptr(),
                remote.ptr(),
                io.prep(),
            )
        };
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.set_write_timeout(Some(BOUND)).unwrap();
        io.issued(r);
        let (status, info) = io.wait("WskAccept");
        assert_eq!(status, STATUS_SUCCESS);
        let accepted = Sock {
            s: info as *mut WSK_SOCKET,
            kind: Kind::Connection,
        };
        peer.write_all(b"accepted").unwrap();
        wait_received("the static indication on the accepted socket", b"accepted");
        accepted.close();
        listener.close();
        client.deregister();
    });
}

/// The socket the listening test's `WskAcceptEvent` accepted (0: none yet).
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

static LISTEN_EVENTS: WSK_CLIENT_LISTEN_DISPATCH = WSK_CLIENT_LISTEN_DISPATCH {
    WskAcceptEvent: Some(on_accept),
    WskInspectEvent: None,
    WskAbortEvent: None,
};

/// Accepts every connection with the test's connection callbacks.
unsafe extern "system-unwind" fn on_accept(
    _context: PVOID,
    _flags: u32,
    _local: *mut SOCKADDR,
    _remote: *mut SOCKADDR,
    socket: *mut WSK_SOCKET,
    accept_context: *mut PVOID,
    accept_dispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS {
    ACCEPTED.store(socket as usize, Ordering::SeqCst);
    // SAFETY: the provider passes writable out-parameters.
    unsafe { accept_context.write(0x5eed as PVOID) };
    // SAFETY: as above.
    unsafe { accept_dispatch.write(&raw const EVENTS) };
    STATUS_SUCCESS
}

/// Connection events enabled on a listening socket are on for each socket its
/// `WskAcceptEvent` accepts ("`SO_WSK_EVENT_CALLBACK`"), and cannot be disabled on the
/// listening socket.
#[test]
fn a_listening_socket_passes_its_connection_events_on() {
    each_plan(|| {
        reset_recorders();
        ACCEPTED.store(0, Ordering::SeqCst);
        let client = Client::register();
        let listener = bound_socket_with(&client, Kind::Listen, (&raw const LISTEN_EVENTS).cast());
        let addr = listener.local_addr().expect("listener address");
        assert_eq!(
            set_events(&listener, WSK_EVENT_ACCEPT | WSK_EVENT_RECEIVE, None),
            STATUS_SUCCESS
        );
        assert_eq!(
            set_events(&listener, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, None),
            STATUS_INVALID_PARAMETER,
            "cannot be disabled on the listening socket"
        );
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.set_write_timeout(Some(BOUND)).unwrap();
        peer.write_all(b"inherited").unwrap();
        wait_received("the indication on the accepted socket", b"inherited");
        let accepted = Sock {
            s: ACCEPTED.load(Ordering::SeqCst) as *mut WSK_SOCKET,
            kind: Kind::Connection,
        };
        assert!(!accepted.s.is_null());
        accepted.close();
        listener.close();
        client.deregister();
    });
}
