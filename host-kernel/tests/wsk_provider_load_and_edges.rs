//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`), with
//! real peers from `std::net` on loopback. Every scenario that takes a plan runs under several
//! fault plans (inline, deferred and mixed completion, reordering and delays), each from its
//! own seed.
//!
//! Here: many connections echoed from completion routines, peer resets, the Windows edge cases
//! recorded under Wine, receives cancelled while data arrives, a stuck send ended by close.
#![allow(
    clippy::cast_possible_truncation,
    clippy::many_single_char_names,
    reason = "test code: short names and lengths that fit the wire types"
)]

mod common;

use common::*;

// ---- many connections at once: echo state machines driven from completion routines ----

/// One echoed connection: receive, then send what came, then receive again, all issued from
/// the completion routine (at `DISPATCH_LEVEL` on the reactor, or inline), until FIN.
struct Echo {
    sock: Sock,
    buf: Buf,
    wsk: WSK_BUF,
    irp: *mut IRP,
    sending: bool,
    echoed: usize,
    done: Signal,
    calls: CallsInProgress,
}

const ECHO_BUF: usize = 16 * 1024;

unsafe extern "system" fn echo_done(_d: *mut DEVICE_OBJECT, irp: *mut IRP, ctx: PVOID) -> NTSTATUS {
    // SAFETY: the Echo outlives its IRPs (the test waits for `done` before freeing it).
    let echo = unsafe { &mut *ctx.cast::<Echo>() };
    // SAFETY: the IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    let next = match (echo.sending, io.Status, io.Information) {
        (false, STATUS_SUCCESS, n) if n > 0 => {
            echo.wsk.Length = n;
            true
        }
        (true, STATUS_SUCCESS, n) => {
            echo.echoed += n;
            echo.wsk.Length = ECHO_BUF;
            false
        }
        _ => {
            *echo.done.state.lock().unwrap() = Some((io.Status, echo.echoed));
            echo.done.cv.notify_all();
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
    };
    // SAFETY: re-entering the provider from the completion routine with the IRP we own.
    unsafe { issue_echo(echo, next) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// # Safety
/// `echo` is live and its IRP is not in flight.
unsafe fn issue_echo(echo: &mut Echo, send: bool) {
    echo.sending = send;
    let table = echo.sock.conn();
    let f = if send {
        table.WskSend
    } else {
        table.WskReceive
    };
    // SAFETY: our IRP, completed (or fresh).
    unsafe { IoReuseIrp(echo.irp, STATUS_UNSUCCESSFUL) };
    // SAFETY: as above; the Echo outlives its IRP's completion.
    unsafe {
        IoSetCompletionRoutine(
            echo.irp,
            Some(echo_done),
            std::ptr::from_mut(echo).cast(),
            true,
            true,
            true,
        );
    };
    echo.calls.enter();
    let call = f.expect("WskSend/WskReceive");
    // SAFETY: a live socket and IRP; the buffer lives in the Echo.
    let _ = unsafe { call(echo.sock.s, &raw mut echo.wsk, 0, echo.irp) };
    echo.calls.leave();
}

#[test]
fn many_connections_echo_from_completion_routines() {
    const PEERS: usize = 6;
    const BYTES: usize = 150_000;
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let peers: Vec<_> = (0..PEERS)
            .map(|i| {
                peer(move || {
                    let s = TcpStream::connect(addr).unwrap();
                    std_stream(&s);
                    let data = pattern(BYTES, i as u8);
                    let writer = {
                        let s = s.try_clone().unwrap();
                        let data = data.clone();
                        std::thread::spawn(move || {
                            for (k, chunk) in data.chunks(1_000 + 997 * i).enumerate() {
                                (&s).write_all(chunk).unwrap();
                                if k % 7 == 0 {
                                    (&s).flush().unwrap();
                                }
                            }
                            s.shutdown(Shutdown::Write).unwrap();
                        })
                    };
                    let mut back = Vec::new();
                    (&s).read_to_end(&mut back).unwrap();
                    writer.join().unwrap();
                    back == data
                })
            })
            .collect();
        let mut echoes = Vec::new();
        for _ in 0..PEERS {
            let (a, _, _) = l.accept();
            let buf = Buf::new(ECHO_BUF);
            let wsk = buf.wsk();
            // SAFETY: PASSIVE_LEVEL.
            let irp = unsafe { IoAllocateIrp(1, 0) };
            let mut echo = Box::new(Echo {
                sock: a,
                buf,
                wsk,
                irp,
                sending: false,
                echoed: 0,
                done: Signal {
                    state: Mutex::new(None),
                    cv: Condvar::new(),
                    seen: Mutex::new(None),
                },
                calls: CallsInProgress::default(),
            });
            // SAFETY: boxed; outlives its IRPs.
            unsafe { issue_echo(&mut echo, false) };
            echoes.push(echo);
        }
        for echo in echoes {
            let guard = echo.done.state.lock().unwrap();
            let (guard, timeout) = echo
                .done
                .cv
                .wait_timeout_while(guard, BOUND, |d| d.is_none())
                .unwrap();
            assert!(!timeout.timed_out(), "an echo never saw FIN");
            assert_eq!(
                *guard,
                Some((STATUS_SUCCESS, BYTES)),
                "echoed everything, then FIN"
            );
            drop(guard);
            echo.calls.wait_none();
            assert_eq!(echo.sock.disconnect(None, 0), STATUS_SUCCESS);
            // SAFETY: completed; freed once. The buffer is not read again.
            unsafe { IoFreeIrp(echo.irp) };
            let _ = echo.buf.len;
            echo.sock.close();
        }
        for p in peers {
            assert!(p.join().unwrap(), "a peer got its bytes back exactly");
        }
        l.close();
        client.deregister();
    });
}

/// A peer that closes with unread data resets the connection: a pending receive fails with
/// `STATUS_CONNECTION_RESET`, and so does every later transfer.
#[test]
fn peer_reset_fails_receives_with_connection_reset() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        // Unread data in the peer's receive queue makes its close a reset.
        assert_eq!(c.send(b"unread", 0), (STATUS_SUCCESS, 6));
        let mut probe = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        // Wait (bounded, on the data itself) until the bytes have arrived at the peer.
        let deadline = std::time::Instant::now() + BOUND;
        while s.peek(&mut probe).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "data never reached the peer"
            );
            std::thread::yield_now();
        }
        drop(s);
        assert_eq!(pending.wait("receive at reset").0, STATUS_CONNECTION_RESET);
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_RESET);
        c.close();
        client.deregister();
    });
}

/// What Wine's conformance test records Windows doing at the edges: no IRP is
/// `STATUS_INVALID_PARAMETER`, an unknown client handle `STATUS_INVALID_HANDLE` (the IRP left
/// alone), a `SOCK_DGRAM` listen socket is created but cannot bind, a numeric node with a
/// service gives that port, an unknown name `STATUS_NOT_FOUND`.
#[test]
fn windows_edge_cases_recorded_by_wine() {
    each_plan(|| {
        let client = Client::register();
        let create = client.dispatch().WskSocket.expect("WskSocket");
        // SAFETY: no IRP: the provider must not touch one.
        let r = unsafe {
            create(
                client.npi.Client,
                AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_LISTEN_SOCKET,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, wsk_sys::STATUS_INVALID_PARAMETER);
        let io = Io::new();
        // SAFETY: a null client handle; the IRP stays ours.
        let r = unsafe {
            create(
                std::ptr::null_mut(),
                AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_LISTEN_SOCKET,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        assert_eq!(r, wsk_sys::STATUS_INVALID_HANDLE);
        assert!(
            io.signal.state.lock().unwrap().is_none(),
            "the IRP was not completed"
        );
        let udp = {
            let io = Io::new();
            // SAFETY: a live IRP.
            let r = unsafe {
                create(
                    client.npi.Client,
                    AF_INET,
                    SOCK_DGRAM,
                    IPPROTO_UDP,
                    WSK_FLAG_LISTEN_SOCKET,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    io.prep(),
                )
            };
            io.issued(r);
            let (status, info) = io.wait("SOCK_DGRAM listen socket");
            assert_eq!(status, STATUS_SUCCESS);
            Sock {
                s: info as *mut _,
                kind: Kind::Listen,
            }
        };
        assert_eq!(udp.bind(loopback(false)), wsk_sys::STATUS_NOT_IMPLEMENTED);
        udp.close();

        assert_eq!(
            resolve_one(&client, "127.0.0.1", Some("12345")),
            Ok(vec![(16, "127.0.0.1:12345".parse().unwrap())])
        );
        assert_eq!(
            resolve_one(&client, "nonexistent.invalid", None),
            Err(wsk_sys::STATUS_NOT_FOUND)
        );
        drop(io);
        client.deregister();
    });
}

/// `WskGetAddressInfo` of `node` (and `service`): (`ai_addrlen`, address) per entry.
fn resolve_one(
    client: &Client,
    node: &str,
    service: Option<&str>,
) -> Result<Vec<(usize, SocketAddr)>, NTSTATUS> {
    let node: Vec<u16> = node.encode_utf16().collect();
    let mut node = UNICODE_STRING::from_wide(&node);
    let service: Option<Vec<u16>> = service.map(|s| s.encode_utf16().collect());
    let mut service = service.as_deref().map(UNICODE_STRING::from_wide);
    let service_ptr = service
        .as_mut()
        .map_or(std::ptr::null_mut(), std::ptr::from_mut);
    let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
    let io = Io::new();
    // SAFETY: a live IRP, strings and result pointer.
    let r = unsafe {
        client
            .dispatch()
            .WskGetAddressInfo
            .expect("WskGetAddressInfo")(
            client.npi.Client,
            &raw mut node,
            service_ptr,
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
    let (status, info) = io.wait("WskGetAddressInfo");
    assert_eq!(info, 0);
    if status != STATUS_SUCCESS {
        assert!(result.is_null());
        return Err(status);
    }
    let mut out = Vec::new();
    let mut entry = result;
    while !entry.is_null() {
        // SAFETY: the provider's list, valid until freed below.
        let e = unsafe { &*entry };
        let mut a = Addr::zero();
        // SAFETY: ai_addr holds ai_addrlen bytes (at most 28).
        unsafe {
            std::ptr::copy_nonoverlapping(e.ai_addr.cast::<u8>(), a.0.as_mut_ptr(), e.ai_addrlen);
        }
        out.push((e.ai_addrlen, a.get().expect("an address")));
        entry = e.ai_next;
    }
    // SAFETY: the list from WskGetAddressInfo, freed once.
    unsafe { client.dispatch().WskFreeAddressInfo.expect("free")(client.npi.Client, result) };
    Ok(out)
}

/// Receives cancelled while data arrives never lose or reorder bytes: each completes either
/// with data or as cancelled, and whatever a cancelled receive did not take is read later.
#[test]
fn cancelling_receives_while_data_arrives_loses_nothing() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);
        let data = pattern(3_000, 5);
        let writer = {
            let s = s.try_clone().unwrap();
            let data = data.clone();
            peer(move || {
                for chunk in data.chunks(3) {
                    (&s).write_all(chunk).unwrap();
                }
                s.shutdown(Shutdown::Write).unwrap();
            })
        };
        let b = Buf::new(7);
        let io = Io::new();
        let mut got = Vec::new();
        let mut cancelled = 0;
        loop {
            let mut w = b.wsk();
            c.start_recv(&io, &mut w, 0);
            // SAFETY: our IRP, in flight or already completed (then a no-op).
            unsafe { IoCancelIrp(io.irp) };
            let (status, n) = io.wait("receive racing its cancel");
            match status {
                STATUS_SUCCESS if n == 0 => break,
                STATUS_SUCCESS => got.extend_from_slice(&b.bytes()[..n]),
                STATUS_CANCELLED => {
                    got.extend_from_slice(&b.bytes()[..n]);
                    cancelled += 1;
                }
                other => panic!("unexpected status {other:#x}"),
            }
        }
        writer.join().unwrap();
        assert!(
            got == data,
            "every byte exactly once, in order ({cancelled} cancelled)"
        );
        c.close();
        client.deregister();
    });
}

/// A send the peer never drains, and a graceful disconnect queued behind it, are both ended
/// by close (the recovery `wsk-net`'s `disconnect_within` relies on); the peer sees a reset.
#[test]
fn close_ends_a_stuck_send_and_disconnect() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        // 32 MiB, more than loopback buffers hold, as a chain of 4 MiB MDLs (one MDL
        // describes at most about 16 MiB).
        let parts: Vec<Buf> = (0..8).map(|_| Buf::new(4 << 20)).collect();
        for pair in parts.windows(2) {
            // SAFETY: linking our own MDLs; unlinked in Buf::drop.
            unsafe { (*pair[0].mdl).Next = pair[1].mdl };
        }
        let mut w = WSK_BUF {
            Mdl: parts[0].mdl,
            Offset: 0,
            Length: 32 << 20,
        };
        let send = Io::new();
        c.start_send(&send, &mut w, 0);
        let disconnect = Io::new();
        // SAFETY: live socket and IRP; no final buffer.
        let r = unsafe {
            c.conn().WskDisconnect.expect("WskDisconnect")(
                c.s,
                std::ptr::null_mut(),
                0,
                disconnect.prep(),
            )
        };
        disconnect.issued(r);
        c.close();
        let (send_status, bytes_sent) = send.wait("stuck send");
        assert!(
            send_status == STATUS_CANCELLED
                || (send_status == STATUS_SUCCESS && bytes_sent == 32 << 20),
            "send: {send_status:#x} after {bytes_sent} bytes"
        );
        let status = disconnect.wait("stuck disconnect").0;
        assert!(status == STATUS_CANCELLED || status == STATUS_SUCCESS);
        // The peer drains what arrived, then sees the reset.
        let mut sink = vec![0u8; 1 << 16];
        std_stream(&s);
        let end = loop {
            match (&s).read(&mut sink) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.kind()),
            }
        };
        if send_status == STATUS_CANCELLED {
            assert_eq!(end, Some(ErrorKind::ConnectionReset));
        }
        client.deregister();
    });
}
