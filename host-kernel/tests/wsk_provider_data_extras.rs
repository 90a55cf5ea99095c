//! The host kernel's WSK provider, driven as a driver drives it (fixtures in `common/`):
//! `WskGetNameInfo` (reverse lookup on the host resolver) and `WskSendMessages` (several
//! datagrams in one call), with the rules of their WDK pages, under the standard fault plans.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test code: short names and lengths that fit the wire types"
)]

mod common;

use common::*;

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

/// `WskSendMessages` of `list` to `to` with the control information `control`; status and
/// information.
fn send_messages_with_control(
    u: &Sock,
    list: *mut WSK_BUF_LIST,
    to: SocketAddr,
    control: &mut [u64],
    control_length: usize,
) -> (NTSTATUS, usize) {
    let mut remote = Addr::of(to);
    let io = Io::new();
    // SAFETY: live socket, list (its buffers), control buffer and IRP, waited for below.
    let r = unsafe {
        u.dgram().WskSendMessages.expect("WskSendMessages")(
            u.s,
            list.cast(),
            0,
            remote.ptr(),
            u32::try_from(control_length).unwrap(),
            control.as_mut_ptr().cast(),
            io.prep(),
        )
    };
    io.issued(r);
    io.wait("WskSendMessages")
}

/// One control object (a `CMSGHDR` with `level`, `kind` and `data`) written at `at` bytes into
/// `buffer`; the offset of the next one.
fn put_control_object(
    buffer: &mut [u64],
    at: usize,
    level: u32,
    kind: i32,
    data: &[u8],
    len: usize,
) -> usize {
    let header = wsk_sys::CMSGHDR {
        cmsg_len: len,
        cmsg_level: level.cast_signed(),
        cmsg_type: kind,
    };
    // SAFETY: the caller's buffer has room for the object (the tests size it so).
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), buffer.len() * 8)
    };
    // SAFETY: a plain C struct viewed as its bytes.
    let header_bytes = unsafe {
        std::slice::from_raw_parts(
            (&raw const header).cast::<u8>(),
            size_of::<wsk_sys::CMSGHDR>(),
        )
    };
    bytes[at..at + header_bytes.len()].copy_from_slice(header_bytes);
    let data_at = at + wsk_sys::CMSG_DATA_OFFSET;
    bytes[data_at..data_at + data.len()].copy_from_slice(data);
    (at + len).next_multiple_of(wsk_sys::CMSG_ALIGNMENT)
}

/// `WskSendMessages` with control information ("`PFN_WSK_SEND_MESSAGES` callback function
/// (wsk.h)": `CMSGHDR` objects for the datagrams, "may not be supported by all transports"):
/// an `IP_PKTINFO` object's source address is the one every datagram leaves from; an object
/// the provider cannot carry is refused (`STATUS_NOT_SUPPORTED`), a malformed buffer or packet
/// information of the wrong family is `STATUS_INVALID_PARAMETER`; nothing is sent then.
#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one socket: the accepted object, then each refused buffer"
)]
fn send_messages_passes_packet_info_and_refuses_other_control_info() {
    each_plan(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind("0.0.0.0:0".parse().unwrap()), STATUS_SUCCESS);
        let port = u.local_addr().expect("bound").port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(BOUND)).unwrap();
        let to = peer.local_addr().unwrap();
        let (one, two) = (Buf::from(b"one"), Buf::from(b"two"));
        let mut list = [one.wsk(), two.wsk()].map(|buffer| WSK_BUF_LIST {
            Next: std::ptr::null_mut(),
            Buffer: buffer,
        });
        let second = &raw mut list[1];
        list[0].Next = second;
        let pktinfo = |octets: [u8; 4]| {
            let info = wsk_sys::IN_PKTINFO {
                ipi_addr: octets,
                ipi_ifindex: 0,
            };
            // SAFETY: a plain C struct viewed as its bytes.
            unsafe { std::slice::from_raw_parts((&raw const info).cast::<u8>(), 8) }.to_vec()
        };
        let object_len = wsk_sys::CMSG_DATA_OFFSET + size_of::<wsk_sys::IN_PKTINFO>();

        // From 127.0.0.2 (a loopback address the host has, not the one it would choose).
        let mut control = [0u64; 8];
        let end = put_control_object(
            &mut control,
            0,
            IPPROTO_IP,
            wsk_sys::IP_PKTINFO,
            &pktinfo([127, 0, 0, 2]),
            object_len,
        );
        let (status, sent) =
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, end);
        assert_eq!((status, sent), (STATUS_SUCCESS, 6));
        let mut got = [0u8; 16];
        for want in [&b"one"[..], b"two"] {
            let (n, from) = peer.recv_from(&mut got).unwrap();
            assert_eq!(&got[..n], want);
            assert_eq!(
                from,
                SocketAddr::from(([127, 0, 0, 2], port)),
                "the IP_PKTINFO source"
            );
        }

        // IP_TOS (level IPPROTO_IP, type 3): not carried, refused.
        let mut control = [0u64; 8];
        let end = put_control_object(
            &mut control,
            0,
            IPPROTO_IP,
            3,
            &[0x10, 0, 0, 0],
            wsk_sys::CMSG_DATA_OFFSET + 4,
        );
        assert_eq!(
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, end).0,
            STATUS_NOT_SUPPORTED
        );
        // An object longer than the buffer, one shorter than its header, two packet infos,
        // IPv6 packet information on an IPv4 socket: malformed.
        let mut control = [0u64; 8];
        put_control_object(
            &mut control,
            0,
            IPPROTO_IP,
            wsk_sys::IP_PKTINFO,
            &pktinfo([127, 0, 0, 2]),
            40,
        );
        assert_eq!(
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, object_len).0,
            STATUS_INVALID_PARAMETER
        );
        let mut control = [0u64; 8];
        let end = put_control_object(&mut control, 0, IPPROTO_IP, wsk_sys::IP_PKTINFO, &[], 8);
        assert_eq!(
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, end.max(16)).0,
            STATUS_INVALID_PARAMETER
        );
        let mut control = [0u64; 8];
        let at = put_control_object(
            &mut control,
            0,
            IPPROTO_IP,
            wsk_sys::IP_PKTINFO,
            &pktinfo([127, 0, 0, 2]),
            object_len,
        );
        let end = put_control_object(
            &mut control,
            at,
            IPPROTO_IP,
            wsk_sys::IP_PKTINFO,
            &pktinfo([127, 0, 0, 3]),
            object_len,
        );
        assert_eq!(
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, end).0,
            STATUS_INVALID_PARAMETER
        );
        let mut control = [0u64; 8];
        let v6 = [0u8; 20];
        let end = put_control_object(
            &mut control,
            0,
            IPPROTO_IPV6,
            wsk_sys::IPV6_PKTINFO,
            &v6,
            wsk_sys::CMSG_DATA_OFFSET + 20,
        );
        assert_eq!(
            send_messages_with_control(&u, list.as_mut_ptr(), to, &mut control, end).0,
            STATUS_INVALID_PARAMETER
        );
        peer.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(
            peer.recv_from(&mut got).is_err(),
            "nothing was sent by a refused call"
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
