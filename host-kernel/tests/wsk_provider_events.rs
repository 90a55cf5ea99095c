//! The host provider's event callbacks (`SO_WSK_EVENT_CALLBACK`: `WskReceiveEvent`,
//! `WskDisconnectEvent`), driven as a driver drives them, with a real peer on loopback: the
//! three return codes of the receive callback, `WskRelease`, the disconnect indication, and
//! what the verifier fails. Every scenario that takes a plan runs under every standard plan
//! with the leak check.
mod common;

use common::*;

/// What the test's receive callback returns: one of the `ANSWER_*` values.
static ANSWER: AtomicU32 = AtomicU32::new(ANSWER_RETAIN);
const ANSWER_RETAIN: u32 = 0;
const ANSWER_CONSUME: u32 = 1;
const ANSWER_REFUSE: u32 = 2;
const ANSWER_NONSENSE: u32 = 3;

/// One indication the callback saw: the chain, its bytes, the flags, the IRQL.
struct Seen {
    chain: usize,
    bytes: Vec<u8>,
    flags: u32,
    irql: u8,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
static DISCONNECTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The socket context the test passes, checked by the callbacks.
const CONTEXT: usize = 0x5eed_c0de;

static EVENTS: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
    WskReceiveEvent: Some(on_receive),
    WskDisconnectEvent: Some(on_disconnect),
    WskSendBacklogEvent: None,
};

unsafe extern "system-unwind" fn on_receive(
    context: PVOID,
    flags: u32,
    indication: *mut WSK_DATA_INDICATION,
    indicated: SIZE_T,
    accepted: *mut SIZE_T,
) -> NTSTATUS {
    assert_eq!(
        context as usize, CONTEXT,
        "the socket context given to WskSocket"
    );
    let bytes = chain_bytes(indication);
    assert_eq!(
        bytes.len(),
        indicated,
        "BytesIndicated is the chain's length"
    );
    SEEN.lock().unwrap().push(Seen {
        chain: indication as usize,
        bytes,
        flags,
        irql: wsk_host::exports::host_current_irql(),
    });
    match ANSWER.load(Ordering::SeqCst) {
        ANSWER_RETAIN => STATUS_PENDING,
        ANSWER_CONSUME => {
            // SAFETY: the provider passes a writable count.
            unsafe { accepted.write(indicated) };
            STATUS_SUCCESS
        }
        ANSWER_REFUSE => STATUS_DATA_NOT_ACCEPTED,
        _ => STATUS_UNSUCCESSFUL,
    }
}

unsafe extern "system-unwind" fn on_disconnect(context: PVOID, flags: u32) -> NTSTATUS {
    assert_eq!(context as usize, CONTEXT);
    DISCONNECTS.lock().unwrap().push(flags);
    STATUS_SUCCESS
}

/// A connection socket created with the test's context and event callbacks, connected to `to`.
fn event_socket(client: &Client, to: SocketAddr) -> Sock {
    let (status, sock) = client.try_socket_with(
        Kind::Connection,
        false,
        CONTEXT as PVOID,
        (&raw const EVENTS).cast(),
    );
    assert_eq!(status, STATUS_SUCCESS);
    let sock = sock.expect("a socket on success");
    assert_eq!(sock.bind(loopback(false)), STATUS_SUCCESS, "bind");
    assert_eq!(sock.connect(to), STATUS_SUCCESS, "connect");
    sock
}

/// `SO_WSK_EVENT_CALLBACK` with `mask`, without an IRP (or with `io`'s, waited for).
fn set_events(sock: &Sock, mask: u32, io: Option<&Io>) -> NTSTATUS {
    let r = control_events(sock, mask, io.map_or(std::ptr::null_mut(), Io::prep));
    match io {
        Some(io) => {
            io.issued(r);
            io.wait("WskControlSocket").0
        }
        None => r,
    }
}

fn release(sock: &Sock, chain: usize) -> NTSTATUS {
    // SAFETY: live socket; the chain is whatever the test says.
    unsafe { sock.conn().WskRelease.expect("WskRelease")(sock.s, chain as PVOID) }
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

fn reset_recorders(answer: u32) {
    SEEN.lock().unwrap().clear();
    DISCONNECTS.lock().unwrap().clear();
    ANSWER.store(answer, Ordering::SeqCst);
}

/// Retained (released with `WskRelease`), not accepted (nothing more indicated until a
/// `WskReceive`, which gets the data), consumed, then the disconnect indication; each
/// indication at `DISPATCH_LEVEL` with the flag saying so.
#[test]
fn retain_refuse_consume_and_disconnect() {
    each_plan(|| {
        reset_recorders(ANSWER_RETAIN);
        let client = Client::register();
        let std_listener = TcpListener::bind(loopback(false)).unwrap();
        let sock = event_socket(&client, std_listener.local_addr().unwrap());
        let (mut peer, _) = std_listener.accept().unwrap();
        peer.set_write_timeout(Some(BOUND)).unwrap();
        assert_eq!(
            set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT, None),
            STATUS_SUCCESS
        );

        peer.write_all(b"hello").unwrap();
        wait_seen(1);
        let chain = {
            let seen = SEEN.lock().unwrap();
            assert_eq!(seen[0].bytes, b"hello");
            assert_ne!(seen[0].flags & WSK_FLAG_AT_DISPATCH_LEVEL, 0);
            assert_eq!(seen[0].irql, wsk_sys::DISPATCH_LEVEL);
            seen[0].chain
        };
        assert_eq!(
            release(&sock, chain),
            STATUS_SUCCESS,
            "retained chain released"
        );

        ANSWER.store(ANSWER_REFUSE, Ordering::SeqCst);
        peer.write_all(b"world").unwrap();
        wait_seen(2);
        peer.write_all(b"again").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            SEEN.lock().unwrap().len(),
            2,
            "no indication after STATUS_DATA_NOT_ACCEPTED until a WskReceive"
        );
        let mut got = Vec::new();
        while got.len() < 10 {
            let (status, bytes) = sock.recv(64, 0);
            assert_eq!(status, STATUS_SUCCESS);
            got.extend_from_slice(&bytes);
        }
        assert_eq!(
            got, b"worldagain",
            "the refused data, then what followed, in order"
        );

        ANSWER.store(ANSWER_CONSUME, Ordering::SeqCst);
        let before = SEEN.lock().unwrap().len();
        peer.write_all(b"more").unwrap();
        wait_seen(before + 1);
        assert_eq!(SEEN.lock().unwrap()[before].bytes, b"more");

        peer.shutdown(Shutdown::Write).unwrap();
        let deadline = std::time::Instant::now() + BOUND;
        while DISCONNECTS.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no disconnect indication"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            DISCONNECTS.lock().unwrap()[0] & WSK_FLAG_ABORTIVE,
            0,
            "a FIN is graceful"
        );
        sock.close();
        client.deregister();
    });
}

/// Events are disabled one at a time; disabling receive stops the indications and the data
/// waits for a `WskReceive`.
#[test]
fn disable_one_at_a_time() {
    each_plan(|| {
        reset_recorders(ANSWER_CONSUME);
        let client = Client::register();
        let std_listener = TcpListener::bind(loopback(false)).unwrap();
        let sock = event_socket(&client, std_listener.local_addr().unwrap());
        let (mut peer, _) = std_listener.accept().unwrap();
        assert_eq!(
            set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT, None),
            STATUS_SUCCESS
        );
        assert_ne!(
            set_events(
                &sock,
                WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT | WSK_EVENT_DISABLE,
                None
            ),
            STATUS_SUCCESS,
            "two events disabled at once are refused"
        );
        let io = Io::new();
        assert_eq!(
            set_events(&sock, WSK_EVENT_RECEIVE | WSK_EVENT_DISABLE, Some(&io)),
            STATUS_SUCCESS
        );
        peer.write_all(b"quiet").unwrap();
        let (status, bytes) = sock.recv(64, 0);
        assert_eq!((status, bytes.as_slice()), (STATUS_SUCCESS, &b"quiet"[..]));
        assert!(SEEN.lock().unwrap().is_empty(), "nothing indicated");
        sock.close();
        client.deregister();
    });
}

#[test]
fn enabling_with_an_irp_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    let sock = Mutex::new(None);
    let std_listener = TcpListener::bind(loopback(false)).unwrap();
    let to = std_listener.local_addr().unwrap();
    expect_bugcheck(&kernel, "WSK_EVENT_CALLBACK_WITH_IRP", || {
        let c = Client::register();
        let s = event_socket(&c, to);
        *sock.lock().unwrap() = Some(s);
        *client.lock().unwrap() = Some(c);
        let io = Io::new();
        set_events(&s, WSK_EVENT_RECEIVE, Some(&io));
    });
    kernel.on_kernel_thread(|| {
        sock.lock().unwrap().take().unwrap().close();
        client.lock().unwrap().take().unwrap().deregister();
    });
}

#[test]
fn releasing_what_was_not_retained_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    let sock = Mutex::new(None);
    let std_listener = TcpListener::bind(loopback(false)).unwrap();
    let to = std_listener.local_addr().unwrap();
    reset_recorders(ANSWER_CONSUME);
    expect_bugcheck(&kernel, "WSK_RELEASE_NOT_RETAINED", || {
        let c = Client::register();
        let s = event_socket(&c, to);
        *sock.lock().unwrap() = Some(s);
        *client.lock().unwrap() = Some(c);
        assert_eq!(set_events(&s, WSK_EVENT_RECEIVE, None), STATUS_SUCCESS);
        let (mut peer, _) = std_listener.accept().unwrap();
        peer.write_all(b"x").unwrap();
        wait_seen(1);
        // Consumed (STATUS_SUCCESS), so not the client's to release.
        let chain = SEEN.lock().unwrap()[0].chain;
        release(&s, chain);
    });
    kernel.on_kernel_thread(|| {
        sock.lock().unwrap().take().unwrap().close();
        client.lock().unwrap().take().unwrap().deregister();
    });
}

#[test]
fn closing_with_an_indication_retained_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    let std_listener = TcpListener::bind(loopback(false)).unwrap();
    let to = std_listener.local_addr().unwrap();
    reset_recorders(ANSWER_RETAIN);
    expect_bugcheck(&kernel, "WSK_RETAINED_INDICATION_LEAKED", || {
        let c = Client::register();
        let s = event_socket(&c, to);
        *client.lock().unwrap() = Some(c);
        assert_eq!(set_events(&s, WSK_EVENT_RECEIVE, None), STATUS_SUCCESS);
        let (mut peer, _) = std_listener.accept().unwrap();
        peer.write_all(b"kept").unwrap();
        wait_seen(1);
        s.close();
    });
    let report = kernel.check_leaks();
    assert!(
        report.leaks().iter().all(|l| !l.contains("MDL")),
        "the verifier freed the chain it reported: {report}"
    );
    drop(client);
}

#[test]
fn a_receive_callback_status_outside_the_three_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let std_listener = TcpListener::bind(loopback(false)).unwrap();
    let to = std_listener.local_addr().unwrap();
    reset_recorders(ANSWER_NONSENSE);
    kernel.on_kernel_thread(|| {
        let c = Client::register();
        let s = event_socket(&c, to);
        assert_eq!(set_events(&s, WSK_EVENT_RECEIVE, None), STATUS_SUCCESS);
        let (mut peer, _) = std_listener.accept().unwrap();
        peer.write_all(b"?").unwrap();
        wait_seen(1);
        let deadline = std::time::Instant::now() + BOUND;
        loop {
            let found = kernel
                .take_bugchecks()
                .iter()
                .any(|b| b.name == "WSK_BAD_EVENT_STATUS");
            if found {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no WSK_BAD_EVENT_STATUS"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        s.close();
        c.deregister();
    });
}
