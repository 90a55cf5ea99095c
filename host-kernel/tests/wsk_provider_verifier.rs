//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`), with
//! real peers from `std::net` on loopback. Every scenario that takes a plan runs under several
//! fault plans (inline, deferred and mixed completion, reordering and delays), each from its
//! own seed.
//!
//! Here: what the verifier reports: a socket left open at deregistration, `WSK_BUF` and MDL
//! misuse, `OutputSizeReturned` with an IRP, IRQL rules; and outstanding accepts in order.
mod common;

use common::*;

// ---- the verifier ----

#[test]
fn deregister_with_a_socket_left_open_is_reported_not_hung() {
    let kernel = boot(Faults {
        deregister_wait: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    let left = Mutex::new(None);
    expect_bugcheck(&kernel, "WSK_DEREGISTER_WITH_SOCKETS_OPEN", || {
        let client = Client::register();
        let s = client.socket(Kind::Connection, false);
        *left.lock().unwrap() = Some(s);
        client.deregister();
    });
    let report = kernel.check_leaks();
    assert!(
        report.leaks().iter().any(|l| l.contains("WSK socket")),
        "the open socket is in the leak report: {report}"
    );
}

/// Several accepts may be outstanding on one listener ("`PFN_WSK_ACCEPT` callback function
/// (wsk.h)": `STATUS_PENDING` means the IRP "has been queued"): each incoming connection goes
/// to the oldest, the later ones keep waiting, and closing the listener cancels them. (The
/// verifier used to bugcheck the second one.)
#[test]
fn several_outstanding_accepts_are_served_in_order() {
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let ios: Vec<Io> = (0..3).map(|_| Io::new()).collect();
        let mut addrs: Vec<(Addr, Addr)> = (0..3).map(|_| (Addr::zero(), Addr::zero())).collect();
        for (io, (local, remote)) in ios.iter().zip(addrs.iter_mut()) {
            l.start_accept(io, local, remote);
        }
        for i in 0..2 {
            let peer = TcpStream::connect(addr).unwrap();
            let peer_local = peer.local_addr().unwrap();
            let (status, info) = ios[i].wait("a queued accept");
            assert_eq!(status, STATUS_SUCCESS, "accept {i}");
            assert_eq!(
                addrs[i].1.get(),
                Some(peer_local),
                "accept {i} got connection {i}"
            );
            assert!(
                ios[i + 1].signal.state.lock().unwrap().is_none(),
                "accept {} still waits for its connection",
                i + 1
            );
            Sock {
                s: info as *mut _,
                kind: Kind::Connection,
            }
            .close();
            drop(peer);
        }
        l.close();
        assert_eq!(ios[2].wait("the last accept").0, STATUS_CANCELLED);
        client.deregister();
    });
}

#[test]
fn wsk_buf_longer_than_its_mdl_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = std_listener.local_addr().unwrap();
    let c = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.connected(to);
        std::mem::forget(client);
        c
    });
    expect_bugcheck(&kernel, "WSK_BUF_EXCEEDS_MDL", || {
        let b = Buf::new(10);
        let mut w = WSK_BUF {
            Mdl: b.mdl,
            Offset: 4,
            Length: 7,
        };
        let io = Io::new();
        c.start_send(&io, &mut w, 0);
    });
    kernel.on_kernel_thread(|| c.close());
}

/// `WskControlSocket` with an IRP takes no `OutputSizeReturned` (the size comes back in
/// `IoStatus.Information`): passing both, as `wsk-net` once did for every option it set,
/// fails the verifier.
#[test]
fn output_size_returned_with_an_irp_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let (client, c) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        (client, c)
    });
    let io = kernel.on_kernel_thread(Io::new);
    expect_bugcheck(&kernel, "WSK_OUTPUT_SIZE_RETURNED_WITH_IRP", || {
        let mut v = 1u32;
        let mut returned = 0usize;
        // SAFETY: live socket, value, size and IRP; this call fails the verifier.
        let _ = unsafe {
            c.basic().WskControlSocket.expect("WskControlSocket")(
                c.s,
                WskSetOption,
                SO_KEEPALIVE,
                SOL_SOCKET,
                4,
                (&raw mut v).cast(),
                0,
                std::ptr::null_mut(),
                &raw mut returned,
                io.prep(),
            )
        };
    });
    kernel.on_kernel_thread(move || {
        drop(io);
        c.close();
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

/// `SO_RCVBUF` (like `SO_SNDBUF`, `SO_BROADCAST` and the `SIO_WSK_SET_*_ADDRESS` IOCTLs) has
/// a page that says "A WSK application must specify a pointer to an IRP": without one the
/// verifier fails, where other options (`SO_KEEPALIVE`) may go without.
#[test]
fn an_option_whose_page_requires_an_irp_without_one_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let (client, c) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        (client, c)
    });
    let c = kernel.on_kernel_thread(move || {
        let mut v = 1u32;
        // SAFETY: live socket and value; no IRP, which SO_KEEPALIVE allows.
        let status = unsafe {
            c.basic().WskControlSocket.expect("WskControlSocket")(
                c.s,
                WskSetOption,
                SO_KEEPALIVE,
                SOL_SOCKET,
                4,
                (&raw mut v).cast(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(status, STATUS_SUCCESS, "SO_KEEPALIVE without an IRP");
        c
    });
    expect_bugcheck(&kernel, "WSK_CONTROL_SOCKET_WITHOUT_IRP", || {
        let mut v = 65_536u32;
        // SAFETY: live socket and value; this call fails the verifier.
        let _ = unsafe {
            c.basic().WskControlSocket.expect("WskControlSocket")(
                c.s,
                WskSetOption,
                0x1002, // SO_RCVBUF
                SOL_SOCKET,
                4,
                (&raw mut v).cast(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    });
    kernel.on_kernel_thread(move || {
        c.close();
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

/// Capturing with `WSK_NO_WAIT` works at `DISPATCH_LEVEL`; a waiting capture there fails the
/// verifier.
#[test]
fn capture_irql_rules() {
    let kernel = boot(Faults::default());
    expect_bugcheck(&kernel, "IRQL_NOT_LESS_OR_EQUAL", || {
        let client = Client::register();
        let mut npi = WSK_PROVIDER_NPI {
            Client: std::ptr::null_mut(),
            Dispatch: std::ptr::null(),
        };
        let mut reg = client.reg;
        // SAFETY: raising from PASSIVE_LEVEL, lowered below.
        let old = unsafe { wsk_sys::KeRaiseIrql(wsk_sys::DISPATCH_LEVEL) };
        let (registration, provider) = (&raw mut *reg, &raw mut npi);
        // SAFETY: registered.
        let status = unsafe { wsk_sys::WskCaptureProviderNPI(registration, WSK_NO_WAIT, provider) };
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: captured just above.
        unsafe { wsk_sys::WskReleaseProviderNPI(&raw mut *reg) };
        // SAFETY: as above; this one fails the verifier.
        let _ = unsafe { wsk_sys::WskCaptureProviderNPI(&raw mut *reg, 1000, &raw mut npi) };
        // SAFETY: restores the raise.
        unsafe { wsk_sys::KeLowerIrql(old) };
    });
}

/// `WskGetAddressInfo` is `PASSIVE_LEVEL` only.
#[test]
fn address_info_above_passive_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let client = kernel.on_kernel_thread(Client::register);
    let io = kernel.on_kernel_thread(Io::new);
    expect_bugcheck(&kernel, "IRQL_NOT_LESS_OR_EQUAL", || {
        let name: Vec<u16> = "localhost".encode_utf16().collect();
        let mut node = UNICODE_STRING::from_wide(&name);
        let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
        // SAFETY: raising from PASSIVE_LEVEL; the bugcheck unwinds out before any lowering,
        // and the kernel thread ends with it.
        let _old = unsafe { wsk_sys::KeRaiseIrql(wsk_sys::DISPATCH_LEVEL) };
        // SAFETY: a live IRP, string and result pointer; this call fails the verifier.
        let _ = unsafe {
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
    });
    kernel.on_kernel_thread(move || {
        drop(io);
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

/// A `WSK_BUF` whose MDL was already freed fires the verifier (on Windows: a crash, or worse,
/// someone else's memory on the wire).
#[test]
fn wsk_buf_with_a_freed_mdl_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = std_listener.local_addr().unwrap();
    let (client, c) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.connected(to);
        (client, c)
    });
    expect_bugcheck(&kernel, "WSK_BUF_MDL_NOT_LIVE", || {
        let freed = Buf::new(16).mdl;
        let mut w = WSK_BUF {
            Mdl: freed,
            Offset: 0,
            Length: 16,
        };
        let io = Io::new();
        c.start_send(&io, &mut w, 0);
    });
    kernel.on_kernel_thread(move || {
        c.close();
        client.deregister();
    });
}
