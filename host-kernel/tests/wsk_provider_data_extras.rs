//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`):
//! `WskGetNameInfo` (reverse lookup on the host resolver) and `WskSendMessages` (several
//! datagrams in one call), with the rules of their WDK pages, under the standard fault plans.
#![allow(
    clippy::missing_panics_doc,
    clippy::cast_possible_truncation,
    reason = "test code: panics are the failure reports"
)]

mod common;

#[allow(
    clippy::wildcard_imports,
    reason = "the provider tests' shared fixtures and imports"
)]
use common::*;
use wsk_sys::{
    NI_NAMEREQD, NI_NUMERICHOST, NI_NUMERICSERV, STATUS_BUFFER_OVERFLOW, STATUS_INVALID_PARAMETER,
    STATUS_NOT_FOUND, WSK_BUF_LIST,
};

/// A `UNICODE_STRING` output buffer of `units` UTF-16 units.
struct Text {
    units: Vec<u16>,
    string: UNICODE_STRING,
}

impl Text {
    fn new(units: usize) -> Self {
        let mut text = Self {
            units: vec![0xFFFF; units],
            string: UNICODE_STRING {
                Length: 0,
                MaximumLength: (units * 2) as u16,
                Buffer: std::ptr::null_mut(),
            },
        };
        // The vector's heap buffer stays put when `Text` moves.
        text.string.Buffer = text.units.as_mut_ptr();
        text
    }

    fn get(&self) -> String {
        String::from_utf16_lossy(&self.units[..usize::from(self.string.Length) / 2])
    }

    /// The unit after the string: the terminating NUL the provider must write.
    fn terminator(&self) -> u16 {
        self.units[usize::from(self.string.Length) / 2]
    }
}

/// `WskGetNameInfo` of `addr` into `node`/`service` (either may be absent); its status.
fn name_info(
    client: &Client,
    addr: &mut Addr,
    addr_len: u32,
    node: Option<&mut Text>,
    service: Option<&mut Text>,
    flags: u32,
) -> NTSTATUS {
    let node = node.map_or(std::ptr::null_mut(), |t| &raw mut t.string);
    let service = service.map_or(std::ptr::null_mut(), |t| &raw mut t.string);
    let io = Io::new();
    // SAFETY: live IRP, address and strings, waited for below.
    let r = unsafe {
        client.dispatch().WskGetNameInfo.expect("WskGetNameInfo")(
            client.npi.Client,
            addr.ptr(),
            addr_len,
            node,
            service,
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    io.wait("WskGetNameInfo").0
}

#[test]
fn get_name_info_translates_addresses_as_documented() {
    each_plan(|| {
        let client = Client::register();
        let mut addr = Addr::of("127.0.0.1:80".parse().unwrap());
        let (mut node, mut service) = (Text::new(64), Text::new(32));
        let numeric = NI_NUMERICHOST | NI_NUMERICSERV;
        let status = name_info(
            &client,
            &mut addr,
            16,
            Some(&mut node),
            Some(&mut service),
            numeric,
        );
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(
            (node.get().as_str(), service.get().as_str()),
            ("127.0.0.1", "80")
        );
        assert_eq!(
            (node.terminator(), service.terminator()),
            (0, 0),
            "NUL-terminated"
        );

        // A name for loopback, the node alone.
        let mut node = Text::new(64);
        let status = name_info(&client, &mut addr, 16, Some(&mut node), None, 0);
        assert_eq!(status, STATUS_SUCCESS);
        assert!(
            node.get().parse::<std::net::IpAddr>().is_err(),
            "{}",
            node.get()
        );

        // The service alone, IPv6.
        let mut v6 = Addr::of("[::1]:443".parse().unwrap());
        let mut service = Text::new(32);
        let status = name_info(
            &client,
            &mut v6,
            28,
            None,
            Some(&mut service),
            NI_NUMERICSERV,
        );
        assert_eq!((status, service.get().as_str()), (STATUS_SUCCESS, "443"));

        // NI_NAMEREQD for an address without a name.
        let mut unnamed = Addr::of("192.0.2.1:1".parse().unwrap());
        let mut node = Text::new(64);
        let status = name_info(
            &client,
            &mut unnamed,
            16,
            Some(&mut node),
            None,
            NI_NAMEREQD,
        );
        assert_eq!(status, STATUS_NOT_FOUND);
        client.deregister();
    });
}

#[test]
fn get_name_info_refuses_what_its_page_forbids() {
    each_plan(|| {
        let client = Client::register();
        let mut addr = Addr::of("127.0.0.1:80".parse().unwrap());
        let numeric = NI_NUMERICHOST | NI_NUMERICSERV;
        // NodeName and ServiceName both null.
        let status = name_info(&client, &mut addr, 16, None, None, numeric);
        assert_eq!(status, STATUS_INVALID_PARAMETER);
        // An address length beyond SOCKADDR_STORAGE, or short of its family's.
        let mut node = Text::new(64);
        assert_eq!(
            name_info(&client, &mut addr, 129, Some(&mut node), None, numeric),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            name_info(&client, &mut addr, 8, Some(&mut node), None, numeric),
            STATUS_INVALID_PARAMETER
        );
        // Unknown flags.
        assert_eq!(
            name_info(&client, &mut addr, 16, Some(&mut node), None, 0x100),
            STATUS_INVALID_PARAMETER
        );
        // A buffer without room for the terminating NUL: "127.0.0.1" is 9 units.
        let mut tight = Text::new(9);
        assert_eq!(
            name_info(&client, &mut addr, 16, Some(&mut tight), None, numeric),
            STATUS_BUFFER_OVERFLOW
        );
        assert_eq!(tight.units, vec![0xFFFF; 9], "nothing written on failure");
        let mut exact = Text::new(10);
        assert_eq!(
            name_info(&client, &mut addr, 16, Some(&mut exact), None, numeric),
            STATUS_SUCCESS
        );
        assert_eq!(exact.get(), "127.0.0.1");
        client.deregister();
    });
}

/// `WskSendMessages` of `list` (or a null list) to `to` with `flags`; status and information.
fn send_messages(
    u: &Sock,
    list: *mut WSK_BUF_LIST,
    flags: u32,
    to: Option<SocketAddr>,
) -> (NTSTATUS, usize) {
    let mut remote = to.map(Addr::of);
    let remote = remote.as_mut().map_or(std::ptr::null_mut(), Addr::ptr);
    let io = Io::new();
    // SAFETY: live socket, list (its buffers) and IRP, waited for below.
    let r = unsafe {
        u.dgram().WskSendMessages.expect("WskSendMessages")(
            u.s,
            list.cast(),
            flags,
            remote,
            0,
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    io.wait("WskSendMessages")
}

#[test]
fn send_messages_sends_each_datagram_of_the_list_in_order() {
    each_plan(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind(loopback(false)), STATUS_SUCCESS);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let to = peer.local_addr().unwrap();

        // Three datagrams; the second spans a chain of two MDLs.
        let (one, two_a, two_b, three) = (
            Buf::from(b"one"),
            Buf::from(b"tw"),
            Buf::from(b"o!"),
            Buf::from(b"three"),
        );
        // SAFETY: our own MDL, not held by any IRP yet (unlinked by Buf's drop).
        unsafe { (*two_a.mdl).Next = two_b.mdl };
        let mut list = [one.wsk(), two_a.wsk(), three.wsk()].map(|buffer| WSK_BUF_LIST {
            Next: std::ptr::null_mut(),
            Buffer: buffer,
        });
        list[1].Buffer.Length = 4;
        let second = &raw mut list[1];
        let third = &raw mut list[2];
        list[0].Next = second;
        list[1].Next = third;
        let (status, sent) = send_messages(&u, list.as_mut_ptr(), 0, Some(to));
        assert_eq!(
            (status, sent),
            (STATUS_SUCCESS, 12),
            "the bytes of all three"
        );
        let mut got = [0u8; 16];
        for want in [&b"one"[..], b"two!", b"three"] {
            let (n, from) = peer.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], want, "one datagram per entry, in order");
            assert_eq!(Some(from), u.local_addr());
        }
        u.close();
        client.deregister();
    });
}

#[test]
fn send_messages_refuses_what_its_page_forbids() {
    each_plan(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind(loopback(false)), STATUS_SUCCESS);
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let data = Buf::from(b"x");
        let mut entry = WSK_BUF_LIST {
            Next: std::ptr::null_mut(),
            Buffer: data.wsk(),
        };
        // Flags are reserved: zero.
        assert_eq!(
            send_messages(&u, &raw mut entry, 1, Some(to)).0,
            STATUS_INVALID_PARAMETER
        );
        // No list.
        assert_eq!(
            send_messages(&u, std::ptr::null_mut(), 0, Some(to)).0,
            STATUS_INVALID_PARAMETER
        );
        // No address (the socket has no fixed remote).
        assert_eq!(
            send_messages(&u, &raw mut entry, 0, None).0,
            STATUS_INVALID_PARAMETER
        );
        // An IPv6 address on an IPv4 socket.
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(
            send_messages(&u, &raw mut entry, 0, Some(v6)).0,
            STATUS_INVALID_PARAMETER
        );
        u.close();
        client.deregister();
    });
}

/// A `WSK_BUF_LIST` whose `Next` links loop back fails the verifier (Windows would walk it
/// forever) instead of hanging the provider.
#[test]
fn a_cyclic_buffer_list_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let (client, u) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind(loopback(false)), STATUS_SUCCESS);
        (client, u)
    });
    expect_bugcheck(&kernel, "WSK_BUF_LIST_CYCLE", || {
        let data = Buf::from(b"loop");
        let mut entry = WSK_BUF_LIST {
            Next: std::ptr::null_mut(),
            Buffer: data.wsk(),
        };
        entry.Next = &raw mut entry;
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let _ = send_messages(&u, &raw mut entry, 0, Some(to));
    });
    kernel.on_kernel_thread(|| {
        u.close();
        client.deregister();
    });
    // No leak check: a bugcheck stops the machine, and the fixtures leave the IRP of a call
    // that bugchecked allocated (as the other verifier tests do).
}
