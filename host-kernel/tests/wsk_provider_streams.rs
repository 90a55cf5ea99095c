//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`), with
//! real peers from `std::net` on loopback. Every scenario that takes a plan runs under several
//! fault plans (inline, deferred and mixed completion, reordering and delays), each from its
//! own seed.
//!
//! Here: connection sockets: accept and connect, byte-exact transfers, FIN, graceful and
//! abortive disconnects, and cancelling a pending receive.
#![allow(
    clippy::many_single_char_names,
    reason = "test code: short names and lengths that fit the wire types"
)]

mod common;

use common::*;

// ---- scenarios ----

#[test]
fn accept_fills_addresses_and_connect_works() {
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let t = peer(move || {
            let s = TcpStream::connect(addr).unwrap();
            s.local_addr().unwrap()
        });
        let (a, local, remote) = l.accept();
        let peer_local = t.join().unwrap();
        assert_eq!(local, addr, "accept's local address");
        assert_eq!(remote, peer_local, "accept's remote address");
        assert_eq!(a.remote_addr(), Some(peer_local));
        a.close();
        l.close();

        // Outbound.
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let c = client.connected(to);
        let (_s, from) = std_listener.accept().unwrap();
        assert_eq!(c.local_addr(), Some(from));
        assert_eq!(c.remote_addr(), Some(to));
        c.close();
        client.deregister();
    });
}

#[test]
fn connect_unbound_is_invalid_device_state() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(
            c.connect(std_listener.local_addr().unwrap()),
            STATUS_INVALID_DEVICE_STATE
        );
        c.close();
        client.deregister();
    });
}

#[test]
fn connect_to_closed_port_is_refused() {
    each_plan(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.bind(loopback(false)), STATUS_SUCCESS);
        assert_eq!(c.connect(closed_port()), STATUS_CONNECTION_REFUSED);
        c.close();
        client.deregister();
    });
}

#[test]
fn send_and_receive_are_byte_exact_with_chained_mdls_and_waitall() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);

        // Chained MDLs: 3 buffers, the WSK_BUF starts 5 bytes into the first and ends short
        // of the last.
        let data = pattern(300_000, 7);
        let parts = [
            Buf::from(&data[..100_005]),
            Buf::from(&data[100_005..200_000]),
            Buf::from(&data[200_000..]),
        ];
        // SAFETY: linking our own MDLs; unlinked in Buf::drop.
        unsafe { (*parts[0].mdl).Next = parts[1].mdl };
        // SAFETY: as above.
        unsafe { (*parts[1].mdl).Next = parts[2].mdl };
        let expected = data[5..data.len() - 10].to_vec();
        let mut w = WSK_BUF {
            Mdl: parts[0].mdl,
            Offset: 5,
            Length: expected.len(),
        };
        let reader = {
            let s = s.try_clone().unwrap();
            let n = expected.len();
            peer(move || {
                let mut got = vec![0u8; n];
                (&s).read_exact(&mut got).unwrap();
                got
            })
        };
        let io = Io::new();
        c.start_send(&io, &mut w, WSK_FLAG_NODELAY);
        assert_eq!(io.wait("chained send"), (STATUS_SUCCESS, expected.len()));
        assert!(
            reader.join().unwrap() == expected,
            "peer got the chained bytes exactly"
        );

        // WAITALL: the peer writes in pieces; the receive completes only when full.
        let back = pattern(200_000, 99);
        let writer = {
            let s = s.try_clone().unwrap();
            let back = back.clone();
            peer(move || {
                for chunk in back.chunks(7_000) {
                    (&s).write_all(chunk).unwrap();
                }
            })
        };
        let (status, got) = c.recv(back.len(), WSK_FLAG_WAITALL);
        writer.join().unwrap();
        assert_eq!(status, STATUS_SUCCESS);
        assert!(got == back, "WAITALL receive is byte-exact and full");

        // Without WAITALL: completes with what is there.
        (&s).write_all(b"hello").unwrap();
        let (status, got) = c.recv(1000, 0);
        assert_eq!(status, STATUS_SUCCESS);
        assert!(!got.is_empty() && b"hello".starts_with(&got));
        c.close();
        client.deregister();
    });
}

#[test]
fn peer_fin_gives_a_zero_byte_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        (&s).write_all(b"last").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (status, got) = c.recv(4, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"last"[..]));
        let (status, got) = c.recv(100, 0);
        assert_eq!(
            (status, got.len()),
            (STATUS_SUCCESS, 0),
            "FIN is a 0-byte receive"
        );
        // Both directions done: close is graceful, the peer sees EOF, not a reset.
        assert_eq!(c.disconnect(None, 0), STATUS_SUCCESS);
        c.close();
        let mut rest = Vec::new();
        std_stream(&s).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        client.deregister();
    });
}

#[test]
fn graceful_disconnect_gives_the_peer_eof_after_all_data() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);
        let data = pattern(500_000, 3);
        let reader = {
            let s = s.try_clone().unwrap();
            peer(move || {
                let mut got = Vec::new();
                (&s).read_to_end(&mut got).unwrap();
                got
            })
        };
        let b = Buf::from(&data);
        let mut w = b.wsk();
        let send = Io::new();
        c.start_send(&send, &mut w, 0);
        // The disconnect queues behind the send and completes after it.
        assert_eq!(c.disconnect(None, 0), STATUS_SUCCESS);
        assert_eq!(send.wait("send before FIN"), (STATUS_SUCCESS, data.len()));
        assert!(reader.join().unwrap() == data, "all data, then EOF");
        // Receiving still works after a graceful disconnect.
        (&s).write_all(b"reply").unwrap();
        let (status, got) = c.recv(5, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"reply"[..]));
        // A send after the disconnect is refused.
        assert_eq!(c.send(b"x", 0).0, STATUS_INVALID_DEVICE_STATE);
        c.close();
        client.deregister();
    });
}

#[test]
fn disconnect_with_a_final_buffer() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        assert_eq!(c.send(b"first,", 0), (STATUS_SUCCESS, 6));
        let last = Buf::from(b"last words");
        let mut w = last.wsk();
        assert_eq!(c.disconnect(Some(&mut w), 0), STATUS_SUCCESS);
        let mut got = Vec::new();
        std_stream(&s).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first,last words");
        c.close();
        client.deregister();
    });
}

#[test]
fn abortive_disconnect_resets_the_peer_and_fails_pending_receives() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        assert_eq!(c.disconnect(None, WSK_FLAG_ABORTIVE), STATUS_SUCCESS);
        assert_eq!(
            pending.wait("receive pending at abort").0,
            STATUS_CONNECTION_ABORTED
        );
        let mut byte = [0u8; 1];
        let e = std_stream(&s)
            .read(&mut byte)
            .expect_err("the peer sees a reset");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_ABORTED);
        c.close();
        client.deregister();
    });
}

#[test]
fn close_cancels_a_pending_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        c.close();
        assert_eq!(pending.wait("receive pending at close").0, STATUS_CANCELLED);
        // Closing a connection with both directions open resets it.
        let mut byte = [0u8; 1];
        let e = std_stream(&s)
            .read(&mut byte)
            .expect_err("close is abortive");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);

        // A listener's pending accept too.
        let (l, _) = client.listener(false);
        let (mut local, mut remote) = (Addr::zero(), Addr::zero());
        let accept = Io::new();
        l.start_accept(&accept, &mut local, &mut remote);
        l.close();
        assert_eq!(accept.wait("accept pending at close").0, STATUS_CANCELLED);
        client.deregister();
    });
}

#[test]
fn io_cancel_irp_cancels_a_pending_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, WSK_FLAG_WAITALL);
        // SAFETY: our IRP, in flight.
        unsafe { IoCancelIrp(pending.irp) };
        assert_eq!(pending.wait("cancelled receive").0, STATUS_CANCELLED);
        // The socket still works.
        (&s).write_all(b"after").unwrap();
        let (status, got) = c.recv(5, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"after"[..]));
        c.close();
        client.deregister();
    });
}
