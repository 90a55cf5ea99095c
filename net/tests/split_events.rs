//! Event-driven receive on the halves of a split stream (`TcpReadHalf::recv_events`,
//! `indicated`): a reader task and a writer task on a DPC runner, and the drop of either half
//! while indications come. Every scenario runs under the standard fault plans and ends with the
//! verifier's leak check (no retained indication at the close, no IRP, MDL or pool block left).
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::{Future, poll_fn};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use wsk_executor::{TaskPool, block_on};
use wsk_net::IoBuf;

mod common;
use common::{BOUND, bounded, connected_pair, each_plan, fresh_runner};

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i + seed) % 251).unwrap())
        .collect()
}

static HALF_TASKS: TaskPool<4096, 2> = TaskPool::new();

/// Receive events enabled before the split: the read half's task receives everything the
/// peer sends through the callbacks (no receive IRP needed) while the write half's task
/// sends, concurrently, on another task.
#[test]
fn reader_and_writer_tasks_over_receive_events() {
    const INBOUND: usize = 200_000;
    const OUTBOUND: usize = 120_000;
    each_plan(|client, _| {
        let runner = fresh_runner();
        let (listener, peer, stream) = block_on(connected_pair(client));
        assert!(stream.enable_receive_events().expect("enable"));
        let (reader, writer) = stream.into_split();
        let peer_reader = peer.try_clone().unwrap();
        let sending_peer = std::thread::spawn(move || {
            for chunk in pattern(INBOUND, 0).chunks(8_000) {
                (&peer).write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            peer.shutdown(Shutdown::Write).unwrap();
        });
        let reading_peer = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&peer_reader).read_to_end(&mut got).unwrap();
            got
        });
        let reading = runner
            .spawn(&HALF_TASKS, async move {
                let mut got = Vec::with_capacity(INBOUND);
                let mut buf = IoBuf::with_capacity(4096).expect("buffer");
                loop {
                    reader.indicated().await;
                    let (n, b) = reader.recv_events(buf).await;
                    buf = b;
                    if n.expect("recv_events") == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf);
                }
                (got, reader.receive_event_counts())
            })
            .expect("spawn reader");
        let writing = runner
            .spawn(&HALF_TASKS, async move {
                for chunk in pattern(OUTBOUND, 7).chunks(10_000) {
                    let (sent, _) = writer.send(IoBuf::from_slice(chunk).unwrap()).await;
                    sent.expect("send");
                }
                writer
                    .disconnect(wsk_net::Disconnect::Graceful)
                    .await
                    .expect("disconnect");
            })
            .expect("spawn writer");
        block_on(writing).expect("the writer task");
        let (got, counts) = block_on(reading).expect("the reader task");
        assert!(got == pattern(INBOUND, 0), "every byte once, in order");
        assert!(
            counts.consumed + counts.retained > 0,
            "the data came through the callbacks: {counts:?}"
        );
        sending_peer.join().unwrap();
        assert!(
            reading_peer.join().unwrap() == pattern(OUTBOUND, 7),
            "the write half's bytes reached the peer"
        );
        block_on(listener.close());
        runner.shutdown();
    });
}

/// The read half is dropped while indications are retained: they go back to WSK at once, the
/// write half goes on sending, later data is refused (WSK keeps it), and dropping the write
/// half closes the socket with nothing retained (the verifier fails a close with a retained
/// chain, and such a close never completes).
#[test]
fn dropping_the_read_half_with_retained_indications() {
    /// Whether the provider holds a chain retained by one of the kernel's sockets.
    fn provider_has_retained(kernel: &wsk_host::Kernel) -> bool {
        let report = kernel.check_leaks();
        report
            .leaks()
            .iter()
            .any(|line| line.contains("retained indication"))
    }
    each_plan(|client, kernel| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            bounded(&peer);
            assert!(stream.enable_receive_events().expect("enable"));
            let (reader, writer) = stream.into_split();
            for seed in 0..3 {
                (&peer).write_all(&pattern(1000, seed)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            let deadline = Instant::now() + BOUND;
            while reader.receive_event_counts().retained == 0 {
                assert!(Instant::now() < deadline, "no indication was retained");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(provider_has_retained(kernel), "retained before the drop");
            drop(reader);
            assert!(
                !provider_has_retained(kernel),
                "released by the read half's drop, before any close"
            );
            // After the drop: more data arrives (refused, kept by WSK) and the writer works.
            (&peer).write_all(&pattern(5000, 9)).unwrap();
            let (sent, _) = writer.send(IoBuf::from_slice(b"still here").unwrap()).await;
            sent.expect("send after the read half was dropped");
            let mut answer = [0_u8; 10];
            (&peer).read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"still here");
            drop(writer);
            // The connection ends (FIN or, with unread data, a reset): the close was issued,
            // which the verifier would have failed with a chain still retained.
            let mut rest = Vec::new();
            if let Err(error) = (&peer).read_to_end(&mut rest) {
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset,
                    "the peer sees the connection end, not a timeout"
                );
            }
            listener.close().await;
        });
    });
}

/// The write half is dropped while the read half's event receive waits (registered with the
/// callback): the connection stays open, the indication that comes next fills the waiting
/// receive, FIN still arrives, and dropping the read half closes the socket.
#[test]
fn dropping_the_write_half_while_a_receive_waits() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            bounded(&peer);
            let (reader, writer) = stream.into_split();
            assert!(
                reader.enable_receive_events().expect("enable on the half"),
                "the host provider has receive events"
            );
            let (n, buf) = {
                let mut receive = pin!(reader.recv_events(IoBuf::with_capacity(64).unwrap()));
                // One poll: nothing indicated yet, so the receive registers with the callback.
                poll_fn(|cx| {
                    assert!(receive.as_mut().poll(cx).is_pending(), "nothing sent yet");
                    Poll::Ready(())
                })
                .await;
                drop(writer);
                (&peer).write_all(b"after the writer").unwrap();
                receive.await
            };
            assert_eq!(&buf[..n.expect("recv_events")], b"after the writer");
            peer.shutdown(Shutdown::Write).unwrap();
            let (n, _) = reader.recv_events(buf).await;
            assert_eq!(n.expect("FIN"), 0);
            drop(reader);
            let mut rest = Vec::new();
            (&peer).read_to_end(&mut rest).unwrap();
            assert!(
                rest.is_empty(),
                "nothing was sent; the close ended the connection"
            );
            listener.close().await;
        });
    });
}
