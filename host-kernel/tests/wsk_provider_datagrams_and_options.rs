//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`), with
//! real peers from `std::net` on loopback. Every scenario that takes a plan runs under several
//! fault plans (inline, deferred and mixed completion, reordering and delays), each from its
//! own seed.
//!
//! Here: datagrams (IPv4 and IPv6), socket options, address information, `WskSocketConnect`,
//! completion routines that issue the next call, and injected errors.
#![allow(
    clippy::many_single_char_names,
    reason = "test code: short names and lengths that fit the wire types"
)]

mod common;

use common::*;

#[test]
fn datagram_round_trip() {
    each_plan(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind(loopback(false)), STATUS_SUCCESS);
        let me = u.local_addr().expect("datagram local address");
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other.set_read_timeout(Some(BOUND)).unwrap();
        let other_addr = other.local_addr().unwrap();

        let b = Buf::new(1500);
        let mut w = b.wsk();
        let mut from = Addr::zero();
        let recv = Io::new();
        // SAFETY: live socket, buffers and IRP, waited for below.
        let r = unsafe {
            u.dgram().WskReceiveFrom.expect("WskReceiveFrom")(
                u.s,
                &raw mut w,
                0,
                from.ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                recv.prep(),
            )
        };
        recv.issued(r);
        other.send_to(b"ping", me).unwrap();
        let (status, n) = recv.wait("WskReceiveFrom");
        assert_eq!((status, &b.bytes()[..n]), (STATUS_SUCCESS, &b"ping"[..]));
        assert_eq!(from.get(), Some(other_addr));

        let out = Buf::from(b"pong");
        let mut w = out.wsk();
        let mut to = Addr::of(other_addr);
        let send = Io::new();
        // SAFETY: live socket, buffers and IRP, waited for below.
        let r = unsafe {
            u.dgram().WskSendTo.expect("WskSendTo")(
                u.s,
                &raw mut w,
                0,
                to.ptr(),
                0,
                std::ptr::null_mut(),
                send.prep(),
            )
        };
        send.issued(r);
        assert_eq!(send.wait("WskSendTo"), (STATUS_SUCCESS, 4));
        let mut got = [0u8; 16];
        let (n, src) = other.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], src), (&b"pong"[..], me));
        u.close();
        client.deregister();
    });
}

#[test]
fn ipv6_round_trip() {
    if !ipv6_available() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(true);
        assert!(addr.is_ipv6());
        let t = peer(move || {
            let s = TcpStream::connect(addr).unwrap();
            std_stream(&s);
            (&s).write_all(b"six").unwrap();
            let mut got = [0u8; 4];
            (&s).read_exact(&mut got).unwrap();
            (got, s.local_addr().unwrap())
        });
        let (a, local, remote) = l.accept();
        assert_eq!(local, addr);
        let (status, got) = a.recv(3, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"six"[..]));
        assert_eq!(a.send(b"ipv6", 0), (STATUS_SUCCESS, 4));
        let (echo, peer_local) = t.join().unwrap();
        assert_eq!(&echo, b"ipv6");
        assert_eq!(remote, peer_local);
        // IPv6 sockets start IPv6-only, as on Windows; the option reads back and sets.
        assert_eq!(a.get_option(IPPROTO_IPV6, IPV6_V6ONLY), (STATUS_SUCCESS, 1));
        a.close();
        l.close();
        client.deregister();
    });
}

#[test]
fn socket_options_set_and_read_back() {
    each_plan(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.set_option(SOL_SOCKET, SO_REUSEADDR, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(SOL_SOCKET, SO_REUSEADDR), (STATUS_SUCCESS, 1));
        assert_eq!(c.set_option(SOL_SOCKET, SO_KEEPALIVE, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(SOL_SOCKET, SO_KEEPALIVE), (STATUS_SUCCESS, 1));
        assert_eq!(c.set_option(IPPROTO_TCP, TCP_NODELAY, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(IPPROTO_TCP, TCP_NODELAY), (STATUS_SUCCESS, 1));
        assert_eq!(
            c.get_option_now(SOL_SOCKET, SO_KEEPALIVE),
            (STATUS_SUCCESS, 1, 4)
        );
        // SO_EXCLUSIVEADDRUSE and SO_REUSEADDR exclude each other, as on Windows.
        assert_ne!(
            c.set_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE, 1),
            STATUS_SUCCESS
        );
        c.close();
        let l = client.socket(Kind::Listen, false);
        assert_eq!(
            l.set_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE, 1),
            STATUS_SUCCESS
        );
        assert_eq!(
            l.get_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE),
            (STATUS_SUCCESS, 1)
        );
        // IPV6_V6ONLY on an IPv4 socket is refused.
        assert_ne!(l.set_option(IPPROTO_IPV6, IPV6_V6ONLY, 0), STATUS_SUCCESS);
        l.close();
        client.deregister();
    });
}

#[test]
fn address_info_for_localhost() {
    each_plan(|| {
        let client = Client::register();
        let name: Vec<u16> = "localhost".encode_utf16().chain([0]).collect();
        let mut node = UNICODE_STRING {
            Length: 18,
            MaximumLength: 20,
            Buffer: name.as_ptr().cast_mut(),
        };
        let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
        let io = Io::new();
        // SAFETY: a live IRP, string and result pointer.
        let r = unsafe {
            client
                .dispatch()
                .WskGetAddressInfo
                .expect("WskGetAddressInfo")(
                client.npi.Client,
                &raw mut node,
                std::ptr::null_mut(),
                NS_ALL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &raw mut result,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        assert_eq!(io.wait("WskGetAddressInfo").0, STATUS_SUCCESS);
        let mut found = Vec::new();
        let mut entry = result;
        while !entry.is_null() {
            // SAFETY: the provider's list, valid until freed below.
            let info = unsafe { &*entry };
            let mut a = Addr::zero();
            // SAFETY: ai_addr holds ai_addrlen bytes (at most 28).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    info.ai_addr.cast::<u8>(),
                    a.0.as_mut_ptr(),
                    info.ai_addrlen,
                );
            }
            found.push(a.get().expect("an IPv4 or IPv6 address").ip());
            entry = info.ai_next;
        }
        assert!(
            found.iter().all(std::net::IpAddr::is_loopback) && !found.is_empty(),
            "localhost resolves to loopback: {found:?}"
        );
        // SAFETY: the list from WskGetAddressInfo, freed once.
        unsafe { client.dispatch().WskFreeAddressInfo.expect("free")(client.npi.Client, result) };
        client.deregister();
    });
}

/// `WskGetAddressInfo` of `name` with `ai_flags` `flags`: the status, the addresses, and
/// every entry's `ai_canonname` (`None` for null), the list freed.
fn lookup(
    client: &Client,
    name: &str,
    flags: i32,
) -> (NTSTATUS, Vec<SocketAddr>, Vec<Option<String>>) {
    let wide: Vec<u16> = name.encode_utf16().chain([0]).collect();
    let bytes = u16::try_from((wide.len() - 1) * 2).unwrap();
    let mut node = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes + 2,
        Buffer: wide.as_ptr().cast_mut(),
    };
    // SAFETY: an all-zero ADDRINFOEXW is the "no preference" hint.
    let mut hints: ADDRINFOEXW = unsafe { std::mem::zeroed() };
    hints.ai_flags = flags;
    let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
    let io = Io::new();
    // SAFETY: a live IRP, string, hints and result pointer.
    let r = unsafe {
        client
            .dispatch()
            .WskGetAddressInfo
            .expect("WskGetAddressInfo")(
            client.npi.Client,
            &raw mut node,
            std::ptr::null_mut(),
            NS_ALL,
            std::ptr::null_mut(),
            &raw mut hints,
            &raw mut result,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    let status = io.wait("WskGetAddressInfo").0;
    let (mut addrs, mut names) = (Vec::new(), Vec::new());
    let mut entry = result;
    while !entry.is_null() {
        // SAFETY: the provider's list, valid until freed below.
        let info = unsafe { &*entry };
        let mut a = Addr::zero();
        // SAFETY: ai_addr holds ai_addrlen bytes (at most 28).
        unsafe {
            std::ptr::copy_nonoverlapping(
                info.ai_addr.cast::<u8>(),
                a.0.as_mut_ptr(),
                info.ai_addrlen,
            );
        }
        addrs.push(a.get().expect("an IPv4 or IPv6 address"));
        names.push((!info.ai_canonname.is_null()).then(|| {
            let mut len = 0;
            loop {
                // SAFETY: inside the NUL-terminated UTF-16 string of the live list (the NUL
                // not yet passed).
                let at = unsafe { info.ai_canonname.add(len) };
                // SAFETY: as above.
                if unsafe { at.read() } == 0 {
                    break;
                }
                len += 1;
            }
            // SAFETY: `len` characters before the NUL.
            String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(info.ai_canonname, len) })
        }));
        entry = info.ai_next;
    }
    if !result.is_null() {
        // SAFETY: the list from WskGetAddressInfo, freed once.
        unsafe { client.dispatch().WskFreeAddressInfo.expect("free")(client.npi.Client, result) };
    }
    (status, addrs, names)
}

/// `AI_CANONNAME` fills the first entry's `ai_canonname` ("ADDRINFOEXW structure (ws2def.h)":
/// "The canonical name is returned in the first `ai_canonname` member"), and only the first;
/// without the flag every `ai_canonname` is null. A numeric node is its own canonical name; a
/// name of the kernel's hosts table has the table's spelling; the canonical names are freed
/// with the list (the leak check).
#[test]
fn canonical_name_with_ai_canonname() {
    let addresses = ["127.0.0.9".parse().unwrap()];
    let config = Config::default().with_host("Canon.Example.Test", &addresses);
    wsk_host::testing::run_plans_with(&config, plans(), |kernel| {
        *MODE.lock().unwrap() = kernel.config().faults.completion;
        kernel.on_kernel_thread(|| {
            let client = Client::register();
            let (status, addrs, names) = lookup(&client, "localhost", 0);
            assert_eq!(status, STATUS_SUCCESS);
            assert!(!addrs.is_empty());
            assert!(
                names.iter().all(Option::is_none),
                "no AI_CANONNAME: {names:?}"
            );

            let (status, addrs, names) = lookup(&client, "127.0.0.1", wsk_sys::AI_CANONNAME);
            assert_eq!(status, STATUS_SUCCESS);
            assert_eq!(addrs, ["127.0.0.1:0".parse::<SocketAddr>().unwrap()]);
            assert_eq!(names, [Some("127.0.0.1".to_string())]);

            let (status, addrs, names) =
                lookup(&client, "canon.example.test", wsk_sys::AI_CANONNAME);
            assert_eq!(status, STATUS_SUCCESS);
            assert_eq!(addrs, ["127.0.0.9:0".parse::<SocketAddr>().unwrap()]);
            assert_eq!(
                names,
                [Some("Canon.Example.Test".to_string())],
                "the table's spelling"
            );

            let (status, _, names) = lookup(&client, "localhost", wsk_sys::AI_CANONNAME);
            assert_eq!(status, STATUS_SUCCESS);
            assert!(
                names[0].as_deref().is_some_and(|n| !n.is_empty()),
                "the host resolver's canonical name: {names:?}"
            );
            assert!(
                names[1..].iter().all(Option::is_none),
                "only the first: {names:?}"
            );
            client.deregister();
        });
    });
}

#[test]
fn socket_connect_in_one_call() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let mut local = Addr::of(loopback(false));
        let mut remote = Addr::of(to);
        let io = Io::new();
        // SAFETY: live IRP and addresses.
        let r = unsafe {
            client
                .dispatch()
                .WskSocketConnect
                .expect("WskSocketConnect")(
                client.npi.Client,
                SOCK_STREAM,
                IPPROTO_TCP,
                local.ptr(),
                remote.ptr(),
                0,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        let (status, info) = io.wait("WskSocketConnect");
        assert_eq!(status, STATUS_SUCCESS);
        let c = Sock {
            s: info as *mut _,
            kind: Kind::Connection,
        };
        let (s, _) = std_listener.accept().unwrap();
        assert_eq!(c.send(b"one call", 0), (STATUS_SUCCESS, 8));
        let mut got = [0u8; 8];
        std_stream(&s).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one call");
        c.close();
        // Refused: no socket comes back, and none is left open.
        drop(std_listener);
        let mut remote = Addr::of(closed_port());
        let io = Io::new();
        // SAFETY: as above.
        let r = unsafe {
            client
                .dispatch()
                .WskSocketConnect
                .expect("WskSocketConnect")(
                client.npi.Client,
                SOCK_STREAM,
                IPPROTO_TCP,
                local.ptr(),
                remote.ptr(),
                0,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        assert_eq!(
            io.wait("refused WskSocketConnect"),
            (STATUS_CONNECTION_REFUSED, 0)
        );
        client.deregister();
    });
}

/// A completion routine that issues the next receive from inside itself (as an echo driver
/// does), until the peer's FIN.
struct Chain {
    sock: Sock,
    buf: Buf,
    wsk: WSK_BUF,
    irp: *mut IRP,
    got: Mutex<Vec<u8>>,
    done: Signal,
    /// `WskReceive` calls in progress: completing inline, each routine issues the next from
    /// inside the previous call, so the chain can end deep inside nested calls.
    calls: CallsInProgress,
}

unsafe extern "system" fn chain_done(
    _d: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    ctx: PVOID,
) -> NTSTATUS {
    // SAFETY: the Chain outlives every receive it issues (the test waits for `done`).
    let chain = unsafe { &mut *ctx.cast::<Chain>() };
    // SAFETY: the IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    if io.Status == STATUS_SUCCESS && io.Information > 0 {
        chain
            .got
            .lock()
            .unwrap()
            .extend_from_slice(&chain.buf.bytes()[..io.Information]);
        // SAFETY: re-entering the provider from the completion routine, with the IRP we own.
        unsafe { issue_chain(chain) };
    } else {
        *chain.done.state.lock().unwrap() = Some((io.Status, io.Information));
        chain.done.cv.notify_all();
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// # Safety
/// `chain` is live and its IRP is not in flight.
unsafe fn issue_chain(chain: &mut Chain) {
    // SAFETY: our IRP, completed (or fresh).
    unsafe { IoReuseIrp(chain.irp, STATUS_UNSUCCESSFUL) };
    // SAFETY: as above; the chain is live (the caller's guarantee) until it completes.
    unsafe {
        IoSetCompletionRoutine(
            chain.irp,
            Some(chain_done),
            std::ptr::from_mut(chain).cast(),
            true,
            true,
            true,
        );
    };
    chain.calls.enter();
    let receive = chain.sock.conn().WskReceive.expect("WskReceive");
    // SAFETY: a live socket and IRP; the buffer lives in the chain.
    let _ = unsafe { receive(chain.sock.s, &raw mut chain.wsk, 0, chain.irp) };
    chain.calls.leave();
}

#[test]
fn completion_routines_may_issue_the_next_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let buf = Buf::new(1000);
        let wsk = buf.wsk();
        // SAFETY: PASSIVE_LEVEL.
        let irp = unsafe { IoAllocateIrp(1, 0) };
        let mut chain = Box::new(Chain {
            sock: c,
            buf,
            wsk,
            irp,
            got: Mutex::new(Vec::new()),
            done: Signal {
                state: Mutex::new(None),
                cv: Condvar::new(),
                seen: Mutex::new(None),
            },
            calls: CallsInProgress::default(),
        });
        // SAFETY: the chain is boxed and outlives its receives.
        unsafe { issue_chain(&mut chain) };
        let data = pattern(100_000, 42);
        for piece in data.chunks(3_333) {
            (&s).write_all(piece).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let guard = chain.done.state.lock().unwrap();
        let (guard, timeout) = chain
            .done
            .cv
            .wait_timeout_while(guard, BOUND, |d| d.is_none())
            .unwrap();
        assert!(!timeout.timed_out(), "the receive chain never saw FIN");
        assert_eq!(*guard, Some((STATUS_SUCCESS, 0)));
        drop(guard);
        assert!(*chain.got.lock().unwrap() == data);
        chain.calls.wait_none();
        // SAFETY: completed; freed once.
        unsafe { IoFreeIrp(chain.irp) };
        chain.sock.close();
        client.deregister();
    });
}

#[test]
fn injected_errors_complete_the_chosen_operations() {
    let kernel = boot(Faults {
        errors: vec![
            ErrorRule {
                op: WskOp::Receive,
                nth: 2,
                status: STATUS_CONNECTION_RESET,
            },
            ErrorRule {
                op: WskOp::Connect,
                nth: 1,
                status: wsk_sys::STATUS_HOST_UNREACHABLE,
            },
        ],
        ..Faults::with(Completion::Mixed, 9)
    });
    kernel.on_kernel_thread(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.bind(loopback(false)), STATUS_SUCCESS);
        assert_eq!(c.connect(to), wsk_sys::STATUS_HOST_UNREACHABLE);
        c.close();
        let c = client.connected(to);
        let (s, _) = std_listener.accept().unwrap();
        (&s).write_all(b"ab").unwrap();
        assert_eq!(c.recv(1, 0), (STATUS_SUCCESS, b"a".to_vec()));
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_RESET);
        assert_eq!(c.recv(1, 0), (STATUS_SUCCESS, b"b".to_vec()));
        c.close();
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}
