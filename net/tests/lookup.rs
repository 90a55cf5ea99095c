//! Reverse lookup (`WskGetNameInfo`, [`wsk_net::lookup_addr`]) and address-info hints
//! ([`wsk_net::resolve_with`]) on the host kernel, under the standard fault plans with the
//! verifier's leak check. Names come from the host's resolver: `localhost` and loopback are in
//! every `/etc/hosts`; 192.0.2.0/24 (TEST-NET-1) has no name anywhere.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::net::SocketAddr;

use wsk_executor::block_on;
use wsk_net::{
    AddressFamily, ErrorKind, NameInfoFlags, ResolveFlags, ResolveHints, SocketType, lookup_addr,
    resolve_with,
};

mod common;
use common::each_plan;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn numeric_lookups_give_the_address_and_port_back() {
    each_plan(|client, _| {
        block_on(async {
            let numeric = NameInfoFlags::NUMERIC_HOST | NameInfoFlags::NUMERIC_SERVICE;
            let names = lookup_addr(client, addr("127.0.0.1:8080"), numeric)
                .await
                .expect("lookup_addr");
            assert_eq!(
                (names.host.as_str(), names.service.as_str()),
                ("127.0.0.1", "8080")
            );
            let names = lookup_addr(client, addr("[::1]:7"), numeric)
                .await
                .expect("lookup_addr v6");
            assert_eq!((names.host.as_str(), names.service.as_str()), ("::1", "7"));
        });
    });
}

#[test]
fn loopback_has_a_name_and_test_net_has_none() {
    each_plan(|client, _| {
        block_on(async {
            let names = lookup_addr(client, addr("127.0.0.1:80"), NameInfoFlags::NUMERIC_SERVICE)
                .await
                .expect("lookup_addr");
            assert!(!names.host.is_empty(), "loopback is named in /etc/hosts");
            assert!(
                names.host.parse::<std::net::IpAddr>().is_err(),
                "a name, not the number: {}",
                names.host
            );
            assert_eq!(names.service.as_str(), "80");

            // Without NAME_REQUIRED an unnamed address comes back numeric; with it, NotFound.
            let names = lookup_addr(client, addr("192.0.2.1:1"), NameInfoFlags::NUMERIC_SERVICE)
                .await
                .expect("lookup_addr unnamed");
            assert_eq!(names.host.as_str(), "192.0.2.1");
            let error = lookup_addr(client, addr("192.0.2.1:1"), NameInfoFlags::NAME_REQUIRED)
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::NotFound);
        });
    });
}

#[test]
fn hints_choose_the_family_and_refuse_names_when_numeric_host_is_asked() {
    each_plan(|client, _| {
        block_on(async {
            let v4 = ResolveHints {
                family: AddressFamily::V4,
                ..ResolveHints::default()
            };
            let v6 = ResolveHints {
                family: AddressFamily::V6,
                socket_type: SocketType::Datagram,
                ..ResolveHints::default()
            };
            let got = resolve_with(client, "127.0.0.1", 9, &v4).await.expect("v4");
            assert_eq!(&got[..], &[addr("127.0.0.1:9")]);
            let got = resolve_with(client, "::1", 9, &v6).await.expect("v6");
            assert_eq!(&got[..], &[addr("[::1]:9")]);
            // An IPv4 address asked for as IPv6 (and the reverse) resolves to nothing.
            let none = resolve_with(client, "127.0.0.1", 9, &v6).await.unwrap_err();
            assert_eq!(none.kind(), ErrorKind::NotFound);
            let none = resolve_with(client, "::1", 9, &v4).await.unwrap_err();
            assert_eq!(none.kind(), ErrorKind::NotFound);

            let numeric = ResolveHints {
                flags: ResolveFlags::NUMERIC_HOST,
                ..ResolveHints::default()
            };
            let got = resolve_with(client, "127.0.0.1", 1, &numeric)
                .await
                .expect("numeric");
            assert_eq!(&got[..], &[addr("127.0.0.1:1")]);
            let refused = resolve_with(client, "localhost", 1, &numeric)
                .await
                .unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::NotFound, "no name lookup");
            // Without the flag the same name resolves.
            let got = resolve_with(client, "localhost", 1, &v4)
                .await
                .expect("localhost");
            assert!(got.contains(&addr("127.0.0.1:1")));
        });
    });
}

#[test]
fn a_lookup_dropped_in_flight_leaves_nothing_behind() {
    use std::future::Future;
    use std::task::{Context, Waker};
    each_plan(|client, _| {
        {
            let mut lookup = std::pin::pin!(lookup_addr(
                client,
                addr("127.0.0.1:80"),
                NameInfoFlags::NONE
            ));
            let _ = lookup
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
        }
        // Dropped, completed or not: the next lookup works, and the leak check at the plan's
        // end finds the dropped one's buffer and IRP freed.
        let names = block_on(lookup_addr(
            client,
            addr("127.0.0.1:80"),
            NameInfoFlags::NUMERIC_HOST,
        ))
        .expect("lookup_addr after a dropped one");
        assert_eq!(names.host.as_str(), "127.0.0.1");
    });
}

#[test]
fn lookups_are_operations_a_timeout_bounds() {
    each_plan(|client, _| {
        block_on(async {
            let limit = std::time::Duration::from_secs(30);
            let numeric = NameInfoFlags::NUMERIC_HOST | NameInfoFlags::NUMERIC_SERVICE;
            let names = wsk_net::timeout(limit, lookup_addr(client, addr("127.0.0.1:9"), numeric))
                .await
                .expect("lookup_addr within the limit");
            assert_eq!(names.host.as_str(), "127.0.0.1");
            let hints = ResolveHints {
                family: AddressFamily::V4,
                ..ResolveHints::default()
            };
            let got = wsk_net::timeout(limit, resolve_with(client, "127.0.0.1", 9, &hints))
                .await
                .expect("resolve_with within the limit");
            assert_eq!(&got[..], &[addr("127.0.0.1:9")]);
        });
    });
}
