//! Socket options and control operations (issue 14), end to end on the host provider: buffer
//! sizes (and their inheritance by accepted connections), linger, broadcast, multicast
//! join/leave, UDP's fixed remote address (`SIO_WSK_SET_REMOTE_ADDRESS`: sends go there and
//! only its datagrams arrive) and fixed destination (`SIO_WSK_SET_SENDTO_ADDRESS`: receives
//! stay open), and the `control` escape hatch. Under the standard fault plans, with the
//! verifier's leak check.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use wsk_executor::block_on;
use wsk_net::{ControlRequest, ErrorKind, IoBuf, TcpListener, TcpStream, UdpSocket};

mod common;
use common::{BOUND, each_plan};

const SOL_SOCKET: u32 = 0xffff;
const SO_RCVBUF: u32 = 0x1002;
const SO_KEEPALIVE: u32 = 0x0008;

#[test]
fn buffer_sizes_linger_and_inheritance_by_accepted_connections() {
    each_plan(|client, _| {
        block_on(async {
            let listener = TcpListener::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            listener
                .set_recv_buffer_size(96 * 1024)
                .await
                .expect("listener SO_RCVBUF");
            assert_eq!(listener.recv_buffer_size().await.unwrap(), 96 * 1024);
            let addr = listener.local_addr().await.unwrap();
            let peer = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().await.expect("accept");
            assert_eq!(
                accepted.recv_buffer_size().await.unwrap(),
                96 * 1024,
                "an accepted connection inherits the listener's receive buffer"
            );
            accepted
                .set_send_buffer_size(64 * 1024)
                .await
                .expect("SO_SNDBUF");
            assert_eq!(accepted.send_buffer_size().await.unwrap(), 64 * 1024);
            assert_eq!(accepted.linger().await.unwrap(), None, "off by default");
            accepted
                .set_linger(Some(Duration::from_secs(7)))
                .await
                .expect("SO_LINGER");
            assert_eq!(
                accepted.linger().await.unwrap(),
                Some(Duration::from_secs(7))
            );
            accepted.set_linger(None).await.expect("SO_LINGER off");
            assert_eq!(accepted.linger().await.unwrap(), None);
            let too_long = accepted.set_linger(Some(Duration::from_secs(70_000))).await;
            assert_eq!(
                too_long.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            accepted.close().await;
            listener.close().await;
            drop(peer);
        });
    });
}

#[test]
fn broadcast_and_multicast_membership() {
    each_plan(|client, _| {
        block_on(async {
            let socket = UdpSocket::bind(client, "0.0.0.0:0".parse().unwrap())
                .await
                .expect("bind");
            assert!(!socket.broadcast().await.unwrap(), "off by default");
            socket.set_broadcast(true).await.expect("SO_BROADCAST");
            assert!(socket.broadcast().await.unwrap());
            let group = Ipv4Addr::new(239, 255, 14, 1);
            let lo = Ipv4Addr::LOCALHOST;
            socket.join_multicast_v4(group, lo).await.expect("join");
            // A second join of the same group on the same interface is refused by the
            // transport (the host's EADDRINUSE), so the first one took.
            assert!(socket.join_multicast_v4(group, lo).await.is_err());
            socket.leave_multicast_v4(group, lo).await.expect("leave");
            // Leaving a group not joined fails: the leave took too.
            assert!(socket.leave_multicast_v4(group, lo).await.is_err());
            let unicast = socket.join_multicast_v4(lo, lo).await;
            assert_eq!(
                unicast.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            let wrong_family = socket
                .join_multicast_v6("ff02::1:3".parse::<Ipv6Addr>().unwrap(), 0)
                .await;
            assert!(wrong_family.is_err(), "an IPv6 group on an IPv4 socket");
            socket.close().await;
        });
    });
}

fn std_peer() -> (StdUdp, SocketAddr) {
    let peer = StdUdp::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(BOUND)).unwrap();
    let addr = peer.local_addr().unwrap();
    (peer, addr)
}

fn recv_byte(peer: &StdUdp) -> u8 {
    let mut buf = [0u8; 8];
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(n, 1);
    buf[0]
}

#[test]
fn udp_fixed_remote_address_filters_and_fixed_destination_does_not() {
    each_plan(|client, _| {
        let (first, first_addr) = std_peer();
        let (second, second_addr) = std_peer();
        block_on(async {
            let socket = UdpSocket::bind(client, "127.0.0.1:0".parse().unwrap())
                .await
                .expect("bind");
            let ours = socket.local_addr().await.unwrap();
            let buf = IoBuf::with_capacity(64).unwrap();
            // No fixed address yet: a send without one is refused.
            let (unaddressed, mut buf) = socket.send(buf).await;
            assert_eq!(
                unaddressed.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );

            socket
                .connect(Some(first_addr))
                .await
                .expect("SIO_WSK_SET_REMOTE_ADDRESS");
            buf.clear();
            buf.extend_from_slice(&[1]).unwrap();
            let (sent, buf) = socket.send(buf).await;
            sent.expect("send to the fixed remote address");
            assert_eq!(recv_byte(&first), 1);
            // Only the fixed remote address's datagrams arrive: the second peer's is dropped.
            second.send_to(&[2], ours).unwrap();
            first.send_to(&[3], ours).unwrap();
            let (got, buf) = socket.recv_from(buf).await;
            let (n, from) = got.expect("recv_from");
            assert_eq!((n, from, buf[0]), (1, first_addr, 3));

            // A destination only: sends go to the second peer, receives come from anyone.
            socket
                .set_send_to_address(Some(second_addr))
                .await
                .expect("SIO_WSK_SET_SENDTO_ADDRESS");
            let mut buf = buf;
            buf.clear();
            buf.extend_from_slice(&[4]).unwrap();
            let (sent, buf) = socket.send(buf).await;
            sent.expect("send to the fixed destination");
            assert_eq!(recv_byte(&second), 4);
            second.send_to(&[5], ours).unwrap();
            let (got, buf) = socket.recv_from(buf).await;
            assert_eq!(got.expect("recv_from").1, second_addr);
            assert_eq!(buf[0], 5);

            // Cleared: a send without an address is refused again.
            socket.connect(None).await.expect("clear");
            let (cleared, _) = socket.send(buf).await;
            assert_eq!(
                cleared.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            let other_family = socket.connect(Some("[::1]:9".parse().unwrap())).await;
            assert_eq!(
                other_family.err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput)
            );
            socket.close().await;
        });
    });
}

#[test]
fn control_escape_hatch_reads_writes_and_reports_unknown_requests() {
    each_plan(|client, _| {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std_listener.local_addr().unwrap();
        block_on(async {
            let stream = TcpStream::connect(client, addr).await.expect("connect");
            stream.set_recv_buffer_size(80 * 1024).await.unwrap();
            // GetOption: no input, 4 bytes of output appended.
            let buf = IoBuf::with_capacity(4).unwrap();
            let (got, buf) = stream
                .control(ControlRequest::GetOption, SOL_SOCKET, SO_RCVBUF, buf)
                .await;
            assert_eq!(got.expect("control GetOption"), 4);
            assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()), 80 * 1024);
            // SetOption: 4 bytes of input, no output.
            let buf = IoBuf::from_slice(&1u32.to_le_bytes()).unwrap();
            let (set, buf) = stream
                .control(ControlRequest::SetOption, SOL_SOCKET, SO_KEEPALIVE, buf)
                .await;
            assert_eq!(set.expect("control SetOption"), 0);
            assert_eq!(&buf[..], &1u32.to_le_bytes(), "the input is left as it was");
            // An IOCTL the provider does not know.
            let (unknown, _) = stream
                .control(ControlRequest::Ioctl, 0, 0x9800_00ff, buf)
                .await;
            assert_eq!(
                unknown.err().map(|e| e.kind()),
                Some(ErrorKind::Unsupported)
            );
            stream.close().await;
        });
        drop(std_listener);
    });
}
