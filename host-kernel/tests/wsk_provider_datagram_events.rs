//! The host provider's `WskReceiveFromEvent` (`SO_WSK_EVENT_CALLBACK` with
//! `WSK_EVENT_RECEIVE_FROM` on datagram sockets), driven as a driver drives it, with a real
//! UDP peer on loopback: several datagrams in one `WSK_DATAGRAM_INDICATION` list with their
//! senders, the three return codes, `WskRelease`, and what the verifier fails. Every scenario
//! that takes a plan runs under every standard plan with the leak check.
mod common;

use common::*;

/// What the test's callback returns: one of the `ANSWER_*` values.
static ANSWER: AtomicU32 = AtomicU32::new(ANSWER_CONSUME);
const ANSWER_RETAIN: u32 = 0;
const ANSWER_CONSUME: u32 = 1;
const ANSWER_REFUSE: u32 = 2;
const ANSWER_NONSENSE: u32 = 3;
/// Refuse, after posting the `WskReceiveFrom` that `POST_ON_REFUSE` describes.
const ANSWER_POST_AND_REFUSE: u32 = 4;

/// What the callback posts under `ANSWER_POST_AND_REFUSE`: the socket, the receive's `Io` and
/// its `WSK_BUF` (addresses, all kept alive by the test until the receive completes).
static POST_ON_REFUSE: Mutex<Option<(usize, usize, usize)>> = Mutex::new(None);

/// One indication the callback saw: the list, its datagrams with their senders, the flags,
/// the IRQL.
struct Seen {
    list: usize,
    datagrams: Vec<(Vec<u8>, Option<SocketAddr>)>,
    flags: u32,
    irql: u8,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

/// The socket context the test passes, checked by the callback.
const CONTEXT: usize = 0xda7a_6a3a;

static EVENTS: WSK_CLIENT_DATAGRAM_DISPATCH = WSK_CLIENT_DATAGRAM_DISPATCH {
    WskReceiveFromEvent: Some(on_receive_from),
};

/// The datagrams of an indication list, each with its sender.
fn list_datagrams(mut link: *mut WSK_DATAGRAM_INDICATION) -> Vec<(Vec<u8>, Option<SocketAddr>)> {
    let mut out = Vec::new();
    while !link.is_null() {
        // SAFETY: the provider's live list.
        let item = unsafe { *link };
        let bytes = if item.Buffer.Length == 0 {
            Vec::new()
        } else {
            // SAFETY: the provider's MDL over its own memory.
            let base = unsafe { wsk_sys::MmGetSystemAddressForMdlSafe(item.Buffer.Mdl, 16) };
            // SAFETY: the indicated range starts inside the MDL's bytes.
            let first = unsafe { base.cast::<u8>().add(item.Buffer.Offset as usize) };
            // SAFETY: the indicated range lies in the MDL's bytes.
            unsafe { std::slice::from_raw_parts(first, item.Buffer.Length) }.to_vec()
        };
        // SAFETY: the provider's sender address, live with the list.
        let sender = unsafe { wsk_sys::read_sockaddr_by_family(item.RemoteAddress) };
        out.push((bytes, sender));
        link = item.Next;
    }
    out
}

unsafe extern "system-unwind" fn on_receive_from(
    context: PVOID,
    flags: u32,
    indication: *mut WSK_DATAGRAM_INDICATION,
) -> NTSTATUS {
    assert_eq!(
        context as usize, CONTEXT,
        "the socket context given to WskSocket"
    );
    SEEN.lock().unwrap().push(Seen {
        list: indication as usize,
        datagrams: list_datagrams(indication),
        flags,
        irql: wsk_host::exports::host_current_irql(),
    });
    match ANSWER.load(Ordering::SeqCst) {
        ANSWER_RETAIN => STATUS_PENDING,
        ANSWER_CONSUME => STATUS_SUCCESS,
        ANSWER_REFUSE => STATUS_DATA_NOT_ACCEPTED,
        ANSWER_POST_AND_REFUSE => {
            let (socket, io, wsk) = POST_ON_REFUSE.lock().unwrap().take().expect("what to post");
            let (socket, io, wsk) = (
                socket as *mut WSK_SOCKET,
                io as *const Io,
                wsk as *mut wsk_sys::WSK_BUF,
            );
            // SAFETY: the test keeps the Io alive until its receive completes.
            let io = unsafe { &*io };
            // SAFETY: the test's open datagram socket.
            let table = unsafe { (*socket).Dispatch };
            // SAFETY: a datagram socket's table is the provider's datagram dispatch.
            let dispatch = unsafe { &*table.cast::<wsk_sys::WSK_PROVIDER_DATAGRAM_DISPATCH>() };
            // SAFETY: live socket, buffer and IRP until completion (the test waits for it);
            // WskReceiveFrom may be called at DISPATCH_LEVEL, from inside the callback.
            let r = unsafe {
                dispatch.WskReceiveFrom.expect("WskReceiveFrom")(
                    socket,
                    wsk,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    io.prep(),
                )
            };
            io.issued(r);
            STATUS_DATA_NOT_ACCEPTED
        }
        _ => STATUS_UNSUCCESSFUL,
    }
}

/// A datagram socket created with the test's context and callback, bound to loopback.
fn event_socket(client: &Client) -> Sock {
    let io = Io::new();
    let create = client.dispatch().WskSocket.expect("WskSocket");
    // SAFETY: a live IRP; the client handle from the capture; the table is static.
    let r = unsafe {
        create(
            client.npi.Client,
            AF_INET,
            SOCK_DGRAM,
            IPPROTO_UDP,
            WSK_FLAG_DATAGRAM_SOCKET,
            CONTEXT as PVOID,
            (&raw const EVENTS).cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    let (status, info) = io.wait("WskSocket");
    assert_eq!(status, STATUS_SUCCESS);
    let sock = Sock {
        s: info as *mut WSK_SOCKET,
        kind: Kind::Datagram,
    };
    assert_eq!(sock.bind(loopback(false)), STATUS_SUCCESS, "bind");
    sock
}

/// `SO_WSK_EVENT_CALLBACK` with `mask`, without an IRP.
fn set_events(sock: &Sock, mask: u32) -> NTSTATUS {
    control_events(sock, mask, std::ptr::null_mut())
}

fn release(sock: &Sock, list: usize) -> NTSTATUS {
    // SAFETY: live socket; the list is whatever the test says.
    unsafe { sock.dgram().WskRelease.expect("WskRelease")(sock.s, list as PVOID) }
}

/// Waits until the callback has seen `n` datagrams in all (or `BOUND` passes).
fn wait_datagrams(n: usize) {
    let deadline = std::time::Instant::now() + BOUND;
    loop {
        let seen: usize = SEEN.lock().unwrap().iter().map(|s| s.datagrams.len()).sum();
        if seen >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "datagram {n} never indicated ({seen} were)"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn reset_recorders(answer: u32) {
    SEEN.lock().unwrap().clear();
    ANSWER.store(answer, Ordering::SeqCst);
}

/// Runs `scenario` under every standard plan (`each_plan`) with a fresh registration, the
/// test's event socket bound to loopback, that socket's address and a UDP peer on loopback;
/// the callback starts out answering `answer`. The socket is closed and the client
/// deregistered after `scenario`.
fn each_plan_with_event_socket(
    answer: u32,
    scenario: impl Fn(&Sock, SocketAddr, &UdpSocket) + Sync,
) {
    each_plan(|| {
        reset_recorders(answer);
        let client = Client::register();
        let sock = event_socket(&client);
        let to = sock.local_addr().expect("bound address");
        let peer = UdpSocket::bind(loopback(false)).unwrap();
        scenario(&sock, to, &peer);
        sock.close();
        client.deregister();
    });
}

/// Every datagram the callback saw, in order.
fn all_seen() -> Vec<(Vec<u8>, Option<SocketAddr>)> {
    SEEN.lock()
        .unwrap()
        .iter()
        .flat_map(|s| s.datagrams.iter().cloned())
        .collect()
}

/// Consumed, then retained and released, then refused (no indication until enabled again):
/// every datagram arrives once, in order, with its sender, at `DISPATCH_LEVEL`.
#[test]
fn consume_retain_refuse_and_reenable() {
    each_plan_with_event_socket(ANSWER_CONSUME, |sock, to, peer| {
        let from = peer.local_addr().unwrap();
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);

        peer.send_to(b"one", to).unwrap();
        wait_datagrams(1);
        {
            let seen = SEEN.lock().unwrap();
            assert_eq!(seen[0].datagrams, [(b"one".to_vec(), Some(from))]);
            assert_ne!(seen[0].flags & WSK_FLAG_AT_DISPATCH_LEVEL, 0);
            assert_eq!(seen[0].irql, wsk_sys::DISPATCH_LEVEL);
        }

        ANSWER.store(ANSWER_RETAIN, Ordering::SeqCst);
        peer.send_to(b"two", to).unwrap();
        wait_datagrams(2);
        let list = SEEN.lock().unwrap().last().unwrap().list;
        assert_eq!(
            release(sock, list),
            STATUS_SUCCESS,
            "retained list released"
        );

        ANSWER.store(ANSWER_REFUSE, Ordering::SeqCst);
        peer.send_to(b"three", to).unwrap();
        wait_datagrams(3);
        let indications = SEEN.lock().unwrap().len();
        peer.send_to(b"four", to).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            SEEN.lock().unwrap().len(),
            indications,
            "no indication after STATUS_DATA_NOT_ACCEPTED until enabled again"
        );
        ANSWER.store(ANSWER_CONSUME, Ordering::SeqCst);
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
        wait_datagrams(5);
        let got: Vec<Vec<u8>> = all_seen().into_iter().map(|(d, _)| d).collect();
        assert_eq!(
            got,
            [&b"one"[..], b"two", b"three", b"three", b"four"],
            "in order; the refused datagram was kept and indicated again after re-enabling \
             (PFN_WSK_RECEIVE_FROM_EVENT: \"any remaining buffered datagrams\"), the next \
             waited"
        );
    });
}

/// One `WskReceiveFrom` into a buffer of `len` bytes: its status, the datagram's bytes and
/// sender, and the `ControlFlags` it reported.
fn receive_from(sock: &Sock, len: usize) -> (NTSTATUS, Vec<u8>, Option<SocketAddr>, u32) {
    let buf = Buf::new(len);
    let mut wsk = buf.wsk();
    let mut remote = Addr::zero();
    let mut control_length = 0_u32;
    let mut control_flags = 0xdead_u32;
    let io = Io::new();
    // SAFETY: live socket, buffer, address, outputs and IRP until completion (waited below).
    let r = unsafe {
        sock.dgram().WskReceiveFrom.expect("WskReceiveFrom")(
            sock.s,
            &raw mut wsk,
            0,
            remote.ptr(),
            &raw mut control_length,
            std::ptr::null_mut(),
            &raw mut control_flags,
            io.prep(),
        )
    };
    io.issued(r);
    let (status, n) = io.wait("WskReceiveFrom");
    (
        status,
        buf.bytes()[..n].to_vec(),
        remote.get(),
        control_flags,
    )
}

/// Datagrams an indication was refused with (`STATUS_DATA_NOT_ACCEPTED`) are kept, as
/// "`PFN_WSK_RECEIVE_FROM_EVENT` callback function (wsk.h)" says the transport buffers them: the
/// next `WskReceiveFrom`s get them, in order and with their senders, before any datagram that
/// came later; nothing is lost, nothing is indicated while the callback is off.
#[test]
fn refused_datagrams_go_to_the_next_receive_from() {
    each_plan_with_event_socket(ANSWER_REFUSE, |sock, to, peer| {
        let from = peer.local_addr().unwrap();
        peer.send_to(b"first", to).unwrap();
        peer.send_to(b"second", to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
        wait_datagrams(2);
        assert_eq!(
            SEEN.lock().unwrap().len(),
            1,
            "both in the refused indication"
        );
        peer.send_to(b"third", to).unwrap();
        for want in [&b"first"[..], b"second", b"third"] {
            let (status, got, sender, flags) = receive_from(sock, 64);
            assert_eq!(status, STATUS_SUCCESS);
            assert_eq!(got, want, "in order, the refused ones first");
            assert_eq!(sender, Some(from));
            assert_eq!(flags, 0, "fitted: no MSG_TRUNC");
        }
        assert_eq!(
            SEEN.lock().unwrap().len(),
            1,
            "no indication while the callback is off"
        );
    });
}

/// A `WskReceiveFrom` the callback posts before it refuses the indication is served from the
/// refused datagrams at once (the first of them), without waiting for a new datagram.
#[test]
fn a_receive_posted_by_the_refusing_callback_gets_the_refused_datagram() {
    each_plan_with_event_socket(ANSWER_POST_AND_REFUSE, |sock, to, peer| {
        let io = Io::new();
        let buf = Buf::new(64);
        let mut wsk = buf.wsk();
        *POST_ON_REFUSE.lock().unwrap() = Some((
            sock.s as usize,
            std::ptr::from_ref(&io) as usize,
            (&raw mut wsk) as usize,
        ));
        peer.send_to(b"first", to).unwrap();
        peer.send_to(b"second", to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
        let (status, n) = io.wait("the WskReceiveFrom posted by the callback");
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(&buf.bytes()[..n], b"first");
        let (status, got, _, _) = receive_from(sock, 64);
        assert_eq!((status, &got[..]), (STATUS_SUCCESS, &b"second"[..]));
    });
}

/// A datagram larger than the `WskReceiveFrom` buffer: "`PFN_WSK_RECEIVE_FROM` callback function
/// (wsk.h)", `ControlFlags`: `MSG_TRUNC`, "the datagram was truncated because the size of the
/// datagram was larger than the size of the buffer". The IRP succeeds with the bytes that fit;
/// the rest of that datagram is gone (the next receive gets the next datagram).
#[test]
fn a_truncated_datagram_sets_msg_trunc() {
    each_plan_with_event_socket(ANSWER_CONSUME, |sock, to, peer| {
        peer.send_to(b"0123456789", to).unwrap();
        peer.send_to(b"next", to).unwrap();
        let (status, got, _, flags) = receive_from(sock, 4);
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(got, b"0123");
        assert_eq!(flags, wsk_sys::MSG_TRUNC);
        let (status, got, _, flags) = receive_from(sock, 4);
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(got, b"next", "the truncated rest was discarded");
        assert_eq!(flags, 0, "exactly the buffer's size: not truncated");
    });
}

/// Datagrams that arrive while the socket is not indicating come in one list, in order; a
/// zero-length datagram is indicated too.
#[test]
fn several_datagrams_in_one_indication() {
    each_plan_with_event_socket(ANSWER_CONSUME, |sock, to, peer| {
        let sent: Vec<Vec<u8>> = (0..5u8).map(|i| pattern(usize::from(i) * 100, i)).collect();
        for datagram in &sent {
            peer.send_to(datagram, to).unwrap();
        }
        // Enabled after they all arrived: the first indication carries every one of them.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
        wait_datagrams(sent.len());
        let seen = SEEN.lock().unwrap();
        assert_eq!(seen.len(), 1, "one indication for the datagrams waiting");
        let got: Vec<Vec<u8>> = seen[0].datagrams.iter().map(|(d, _)| d.clone()).collect();
        assert_eq!(got, sent);
        drop(seen);
    });
}

/// A `WskReceiveFrom` that is queued is served before any indication; disabling stops the
/// indications; events of another socket kind are refused.
#[test]
fn queued_receive_first_disable_and_wrong_events() {
    each_plan_with_event_socket(ANSWER_CONSUME, |sock, to, peer| {
        assert_eq!(
            set_events(sock, WSK_EVENT_RECEIVE),
            STATUS_NOT_SUPPORTED,
            "WskReceiveEvent is a connection socket's"
        );
        assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
        let buf = Buf::new(64);
        let mut wsk = buf.wsk();
        let mut remote = Addr::zero();
        let io = Io::new();
        // SAFETY: live socket, buffer, address and IRP until completion.
        let r = unsafe {
            sock.dgram().WskReceiveFrom.expect("WskReceiveFrom")(
                sock.s,
                &raw mut wsk,
                0,
                remote.ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        peer.send_to(b"by irp", to).unwrap();
        let (status, n) = io.wait("WskReceiveFrom");
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(&buf.bytes()[..n], b"by irp");
        assert_eq!(remote.get(), Some(peer.local_addr().unwrap()));
        assert!(
            SEEN.lock().unwrap().is_empty(),
            "the queued WskReceiveFrom took the datagram, no indication"
        );

        assert_eq!(
            set_events(sock, WSK_EVENT_RECEIVE_FROM | WSK_EVENT_DISABLE),
            STATUS_SUCCESS
        );
        peer.send_to(b"unseen", to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(SEEN.lock().unwrap().is_empty(), "disabled: no indication");
    });
}

/// Enables `WskReceiveFromEvent` on `sock`, sends it `datagram` from a loopback peer and waits
/// until the callback has seen it.
fn indicate_one(sock: &Sock, datagram: &[u8]) {
    let to = sock.local_addr().expect("bound address");
    assert_eq!(set_events(sock, WSK_EVENT_RECEIVE_FROM), STATUS_SUCCESS);
    let peer = UdpSocket::bind(loopback(false)).unwrap();
    peer.send_to(datagram, to).unwrap();
    wait_datagrams(1);
}

#[test]
fn releasing_what_was_not_retained_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    let sock = Mutex::new(None);
    reset_recorders(ANSWER_CONSUME);
    expect_bugcheck(&kernel, "WSK_RELEASE_NOT_RETAINED", || {
        let c = Client::register();
        let s = event_socket(&c);
        *sock.lock().unwrap() = Some(s);
        *client.lock().unwrap() = Some(c);
        indicate_one(&s, b"x");
        // Consumed (STATUS_SUCCESS), so not the client's to release.
        let list = SEEN.lock().unwrap()[0].list;
        release(&s, list);
    });
    kernel.on_kernel_thread(|| {
        sock.lock().unwrap().take().unwrap().close();
        client.lock().unwrap().take().unwrap().deregister();
    });
}

#[test]
fn closing_with_a_list_retained_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    let client = Mutex::new(None);
    reset_recorders(ANSWER_RETAIN);
    expect_bugcheck(&kernel, "WSK_RETAINED_INDICATION_LEAKED", || {
        let c = Client::register();
        let s = event_socket(&c);
        *client.lock().unwrap() = Some(c);
        indicate_one(&s, b"kept");
        s.close();
    });
    let report = kernel.check_leaks();
    assert!(
        report.leaks().iter().all(|l| !l.contains("MDL")),
        "the verifier freed the list it reported: {report}"
    );
    drop(client);
}

#[test]
fn a_receive_from_callback_status_outside_the_three_is_a_verifier_failure() {
    let kernel = boot(Faults::default());
    reset_recorders(ANSWER_NONSENSE);
    kernel.on_kernel_thread(|| {
        let c = Client::register();
        let s = event_socket(&c);
        indicate_one(&s, b"?");
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
