//! `StreamTransfer` on the host kernel (issue 11): a receive and a send kept across messages
//! and re-armed in place. Messages echo in the transfer's buffer; a per-message future
//! dropped with its IRP in flight leaves the operation to the next call, which resumes it;
//! the other direction is refused while the buffer is at WSK; a transfer dropped in flight
//! frees its buffer once WSK lets go (the verifier's leak check at the end of every plan).
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::io::{Read, Write};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wsk_executor::block_on;
use wsk_net::{ErrorKind, IoBuf};

mod common;
use common::each_plan;

#[test]
fn a_stream_transfer_echoes_messages_in_its_buffer() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = common::connected_pair(client).await;
            peer.set_nodelay(true).unwrap();
            let mut transfer = stream.stream_transfer(IoBuf::with_capacity(64).unwrap());
            for message in [&b"hello"[..], b"a second message", b"3"] {
                (&peer).write_all(message).unwrap();
                let mut got = Vec::new();
                while got.len() < message.len() {
                    let n = transfer.recv().await.expect("recv");
                    assert!(n > 0, "the peer has not closed");
                    assert_eq!(transfer.buf().unwrap().len(), n);
                    got.extend_from_slice(transfer.buf().unwrap());
                    assert_eq!(transfer.send().await.expect("send"), n);
                }
                assert_eq!(got, message, "received into the transfer's buffer");
                let mut echoed = vec![0; message.len()];
                (&peer).read_exact(&mut echoed).unwrap();
                assert_eq!(echoed, message, "sent from the transfer's buffer");
            }
            // A reply written into the buffer; an empty one sends nothing.
            let buf = transfer.buf_mut().unwrap();
            buf.clear();
            buf.extend_from_slice(b"reply").unwrap();
            assert_eq!(transfer.send().await.expect("send"), 5);
            let mut reply = [0; 5];
            (&peer).read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"reply");
            transfer.buf_mut().unwrap().clear();
            assert_eq!(transfer.send().await.expect("empty send"), 0);
            // FIN from the peer: 0, and the buffer comes back.
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(transfer.recv().await.expect("recv at FIN"), 0);
            let buf = transfer.into_buf().expect("the buffer between messages");
            assert_eq!(buf.capacity(), 64);
            stream.close().await;
            drop(listener);
        });
    });
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_dropped_receive_is_resumed_and_a_dropped_transfer_frees_its_buffer() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = common::connected_pair(client).await;
            peer.set_nodelay(true).unwrap();
            let mut transfer = stream.stream_transfer(IoBuf::with_capacity(16).unwrap());
            // Nothing sent yet: the receive goes to WSK and waits; its future is dropped.
            assert!(poll_once(pin!(transfer.recv())).is_pending());
            assert!(transfer.buf().is_none(), "the buffer is at WSK");
            let refused = transfer.send().await.unwrap_err();
            assert_eq!(refused.kind(), ErrorKind::InvalidState);
            let spare = transfer.replace_buf(IoBuf::with_capacity(4).unwrap());
            assert!(
                spare.is_err(),
                "no buffer replaced under an operation in flight"
            );
            // The next receive resumes the one in flight and gets the data.
            (&peer).write_all(b"abc").unwrap();
            assert_eq!(transfer.recv().await.expect("resumed recv"), 3);
            assert_eq!(&transfer.buf().unwrap()[..], b"abc");
            // Between messages the buffer can be swapped.
            let old = transfer.replace_buf(IoBuf::with_capacity(2).unwrap());
            assert_eq!(old.ok().flatten().map(|buf| buf.capacity()), Some(16));
            (&peer).write_all(b"de").unwrap();
            assert_eq!(transfer.recv().await.expect("recv into the new buffer"), 2);
            assert_eq!(&transfer.buf().unwrap()[..], b"de");
            // In flight again, then the transfer is dropped: cancelled, the buffer freed
            // once WSK lets go (the plan's leak check).
            assert!(poll_once(pin!(transfer.recv())).is_pending());
            drop(transfer);
            // The stream still works after the cancelled receive.
            (&peer).write_all(b"z").unwrap();
            let (n, buf) = stream.recv(IoBuf::with_capacity(8).unwrap()).await;
            assert_eq!(n.expect("recv after the dropped transfer"), 1);
            assert_eq!(&buf[..], b"z");
            stream.close().await;
            drop(listener);
        });
    });
}

#[test]
fn a_deadline_times_out_a_transfer_receive_and_the_next_one_works() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = common::connected_pair(client).await;
            peer.set_nodelay(true).unwrap();
            let mut transfer = stream.stream_transfer(IoBuf::with_capacity(16).unwrap());
            // Nothing sent: the deadline cancels the receive through WSK; the buffer stays.
            let late = wsk_net::timeout(Duration::from_millis(20), transfer.recv()).await;
            assert_eq!(late.unwrap_err().kind(), ErrorKind::TimedOut);
            assert!(
                transfer.buf().is_some(),
                "the buffer is back in the transfer"
            );
            // The cancel was for that receive only: the next one (and a send) go through.
            (&peer).write_all(b"later").unwrap();
            let mut got = 0;
            while got < 5 {
                let n = transfer.recv().await.expect("recv after a timed-out one");
                assert!(n > 0);
                assert_eq!(transfer.send().await.expect("send"), n);
                got += n;
            }
            let mut echoed = [0; 5];
            (&peer).read_exact(&mut echoed).unwrap();
            assert_eq!(&echoed, b"later");
            drop(transfer);
            stream.close().await;
            drop(listener);
        });
    });
}
