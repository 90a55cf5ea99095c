//! Stream I/O on the host kernel (issue 13, item 5): the appending receive, the buffered
//! reader's line helpers across segment boundaries and with lines too long, the
//! `embedded-io-async` traits driving a tiny protocol, a stream split into halves used by two
//! tasks, and `IoBuf`'s lazily zeroed storage. Every scenario runs under the standard fault
//! plans and ends with the verifier's leak check (no IRP, MDL, pool block or socket left).
//!
//! Peers are `std::net` sockets on loopback with bounded blocking I/O; nothing sleeps to wait
//! for an event.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;

use wsk_executor::{TaskPool, block_on};
use wsk_net::io::embedded_io_async::{self, Read as _, ReadExactError, Write as _};
use wsk_net::io::{BufReader, BufWriter};
use wsk_net::{ErrorKind, IoBuf, TcpListener, TcpStream, WskClient};

mod common;
use common::{each_plan, fresh_runner};

/// [`common::connected_pair`] with Nagle's delay off on the peer, so its small writes go out
/// at once.
async fn connected_pair(client: &WskClient) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let (listener, peer, stream) = common::connected_pair(client).await;
    peer.set_nodelay(true).unwrap();
    (listener, peer, stream)
}

#[test]
fn an_appending_receive_keeps_what_the_buffer_held() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            let mut buf = IoBuf::with_capacity(8).unwrap();
            buf.extend_from_slice(b"xy").unwrap();

            (&peer).write_all(b"abc").unwrap();
            let mut new_bytes = 0;
            while buf.len() < 5 {
                let (n, b) = stream.recv_append(buf).await;
                buf = b;
                new_bytes += n.expect("recv_append");
            }
            assert_eq!(new_bytes, 3);
            assert_eq!(&buf[..], b"xyabc", "appended after what was there");

            // Filled to capacity by appending; a full buffer is refused, intact.
            (&peer).write_all(b"def").unwrap();
            while buf.spare_capacity() > 0 {
                let (n, b) = stream.recv_append(buf).await;
                buf = b;
                assert!(n.expect("recv_append") > 0);
            }
            assert_eq!(&buf[..], b"xyabcdef");
            let (full, b) = stream.recv_append(buf).await;
            buf = b;
            assert_eq!(full.unwrap_err().kind(), ErrorKind::InvalidInput);
            assert_eq!(
                &buf[..],
                b"xyabcdef",
                "a refused receive leaves the buffer as it was"
            );

            // Nothing more is sent: a deadline cancels through WSK and gives the buffer back
            // with its contents.
            buf.discard_front(6);
            assert_eq!(&buf[..], b"ef");
            let (late, b) =
                wsk_net::timeout(Duration::from_millis(20), stream.recv_append(buf)).await;
            buf = b;
            assert_eq!(late.unwrap_err().kind(), ErrorKind::TimedOut);
            assert_eq!(&buf[..], b"ef");
            (&peer).write_all(b"g").unwrap();
            let (n, b) = stream.recv_append(buf).await;
            buf = b;
            assert_eq!((n.expect("recv_append"), &buf[..]), (1, &b"efg"[..]));

            // FIN: 0 new bytes, the buffer unchanged.
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let (n, buf) = stream.recv_append(buf).await;
            assert_eq!(n.expect("recv_append at FIN"), 0);
            assert_eq!(&buf[..], b"efg");
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn io_buf_storage_is_zeroed_only_where_never_written() {
    each_plan(|client, _| {
        block_on(async {
            // Fresh storage is not zeroed at allocation; what safe code can see is.
            let mut buf = IoBuf::with_capacity(4096).unwrap();
            buf.set_len(4096).unwrap();
            assert!(
                buf.iter().all(|&b| b == 0),
                "never-written bytes read as zero"
            );
            let mut buf = IoBuf::with_capacity(64).unwrap();
            buf.extend_from_slice(b"abc").unwrap();
            buf.set_len(10).unwrap();
            assert_eq!(&buf[..], b"abc\0\0\0\0\0\0\0");
            let mut buf = IoBuf::with_capacity(64).unwrap();
            assert!(buf.storage_mut().iter().all(|&b| b == 0));

            // Bytes a receive wrote are kept as they are, not zeroed, when exposed again.
            let (listener, peer, stream) = connected_pair(client).await;
            (&peer).write_all(b"hello").unwrap();
            let (n, mut buf) = stream
                .recv_exact(IoBuf::with_capacity(1024).unwrap(), 5)
                .await;
            assert_eq!(n.expect("recv_exact"), 5);
            buf.clear();
            buf.set_len(7).unwrap();
            assert_eq!(&buf[..], b"hello\0\0");
            stream.close().await;
            listener.close().await;
        });
    });
}

/// `count` lines of 10 bytes: "line 0000\n", "line 0001\n", ...
fn numbered_lines(count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|i| format!("line {i:04}\n").into_bytes())
        .collect()
}

#[test]
fn read_until_and_lines_cross_segment_boundaries() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            let text = numbered_lines(60);
            // Written in odd-sized pieces; the reader's 16-byte buffer cannot hold two
            // 10-byte lines, so most lines arrive over two receives.
            let writer = std::thread::spawn(move || {
                for piece in text.chunks(7) {
                    (&peer).write_all(piece).unwrap();
                }
                (&peer).write_all(b"crlf\r\nthe end").unwrap();
                peer.shutdown(std::net::Shutdown::Write).unwrap();
                peer
            });
            let mut reader = BufReader::new(&stream, 16).unwrap();
            let mut line = IoBuf::with_capacity(32).unwrap();
            for i in 0..20 {
                line.clear();
                let n = reader.read_line(&mut line).await.expect("read_line");
                assert_eq!(&line[..], format!("line {i:04}\n").as_bytes());
                assert_eq!(n, 10);
            }
            for i in 20..40 {
                let mut out = [0_u8; 12];
                let n = reader
                    .read_until_into(b'\n', &mut out)
                    .await
                    .expect("read_until_into");
                assert_eq!(&out[..n], format!("line {i:04}\n").as_bytes());
            }
            for i in 40..60 {
                let got = reader.next_line().await.expect("next_line");
                assert_eq!(got, Some(format!("line {i:04}").as_bytes()));
            }
            assert_eq!(reader.next_line().await.unwrap(), Some(&b"crlf"[..]));
            assert_eq!(
                reader.next_line().await.unwrap(),
                Some(&b"the end"[..]),
                "a last line without newline at FIN"
            );
            assert_eq!(reader.next_line().await.unwrap(), None, "end of stream");
            line.clear();
            assert_eq!(reader.read_line(&mut line).await.unwrap(), 0);
            drop(writer.join().unwrap());
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_line_longer_than_the_buffer_is_invalid_input() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            (&peer).write_all(b"0123456789abcdef\nok\n").unwrap();
            let mut reader = BufReader::new(&stream, 8).unwrap();
            // In place: the 8-byte buffer fills without a newline.
            let e = reader.next_line().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert_eq!(reader.buffer(), b"01234567", "nothing consumed");
            reader.consume(8);
            // Into a 4-byte output: what fits is consumed into it, then the error.
            let mut out = IoBuf::with_capacity(4).unwrap();
            let e = reader.read_until(b'\n', &mut out).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert_eq!(&out[..], b"89ab");
            let mut slice = [0_u8; 3];
            let e = reader.read_until_into(b'\n', &mut slice).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert_eq!(&slice, b"cde");
            // The reader goes on after the error.
            assert_eq!(reader.next_line().await.unwrap(), Some(&b"f"[..]));
            assert_eq!(reader.next_line().await.unwrap(), Some(&b"ok"[..]));
            drop(peer);
            assert_eq!(reader.next_line().await.unwrap(), None);
            stream.close().await;
            listener.close().await;
        });
    });
}

#[test]
fn a_reader_whose_receive_was_dropped_fails_with_invalid_state() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            let mut reader = BufReader::new(&stream, 64).unwrap();
            {
                // A receive in flight (nothing sent yet), dropped: its buffer goes with it.
                let mut line = std::pin::pin!(reader.next_line());
                let polled = line
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
                assert!(polled.is_pending());
            }
            (&peer).write_all(b"late\n").unwrap();
            let e = reader.next_line().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidState);
            assert!(reader.buffer().is_empty());
            assert!(
                reader.into_parts().1.is_none(),
                "the buffer is gone, not leaked"
            );
            // The stream itself still works.
            let (n, buf) = stream.recv_exact(IoBuf::with_capacity(5).unwrap(), 5).await;
            assert_eq!(n.expect("recv_exact"), 5);
            assert_eq!(&buf[..], b"late\n");
            stream.close().await;
            listener.close().await;
        });
    });
}

/// A tiny length-prefixed protocol, written against the `embedded-io-async` traits only: sends
/// `message` as a 2-byte big-endian length and the bytes, then reads the reply the same way.
async fn request<R, W>(reader: &mut R, writer: &mut W, message: &[u8]) -> Vec<u8>
where
    R: embedded_io_async::Read,
    W: embedded_io_async::Write,
{
    let len = u16::try_from(message.len()).unwrap().to_be_bytes();
    writer.write_all(&len).await.expect("write_all");
    writer.write_all(message).await.expect("write_all");
    writer.flush().await.expect("flush");
    let mut header = [0_u8; 2];
    reader.read_exact(&mut header).await.expect("read_exact");
    let mut reply = vec![0_u8; usize::from(u16::from_be_bytes(header))];
    reader.read_exact(&mut reply).await.expect("read_exact");
    reply
}

#[test]
fn embedded_io_traits_run_a_tiny_protocol() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            // The server: each message back upper-cased, until FIN.
            let server = std::thread::spawn(move || {
                let mut peer = peer;
                loop {
                    let mut header = [0_u8; 2];
                    if peer.read_exact(&mut header).is_err() {
                        return;
                    }
                    let mut body = vec![0_u8; usize::from(u16::from_be_bytes(header))];
                    peer.read_exact(&mut body).unwrap();
                    body.make_ascii_uppercase();
                    peer.write_all(&header).unwrap();
                    peer.write_all(&body).unwrap();
                }
            });
            // A reader and a writer on the same stream at once; buffers smaller than the
            // messages, so both go through several receives and sends.
            let mut reader = BufReader::new(&stream, 64).unwrap();
            let mut writer = BufWriter::new(&stream, 100).unwrap();
            for size in [0_usize, 1, 63, 64, 65, 300, 1000] {
                let message: Vec<u8> = (0..size).map(|i| b"abcdefghij"[i % 10]).collect();
                let reply = request(&mut reader, &mut writer, &message).await;
                assert_eq!(reply, message.to_ascii_uppercase(), "size {size}");
            }
            // The end of the stream is an `UnexpectedEof` for `read_exact`, and the error
            // kinds map: a full buffer's InvalidInput stays InvalidInput.
            stream
                .disconnect(wsk_net::Disconnect::Graceful)
                .await
                .expect("graceful");
            server.join().unwrap();
            let mut rest = [0_u8; 4];
            assert!(matches!(
                reader.read_exact(&mut rest).await,
                Err(ReadExactError::UnexpectedEof)
            ));
            let refused = wsk_net::Error::new(ErrorKind::InvalidInput, "test");
            assert_eq!(
                embedded_io_async::Error::kind(&refused),
                embedded_io_async::ErrorKind::InvalidInput
            );
            drop((reader, writer));
            stream.close().await;
            listener.close().await;
        });
    });
}

static HALF_TASKS: TaskPool<4096, 2> = TaskPool::new();

const SPLIT_LINES: usize = 300;

#[test]
fn halves_of_a_split_stream_work_in_two_tasks() {
    each_plan(|client, _| {
        let runner = fresh_runner();
        let (listener, peer, stream) = block_on(connected_pair(client));
        let mut expected = numbered_lines(SPLIT_LINES);
        expected.extend_from_slice(b"after\n");
        let total = expected.len();
        // The peer echoes the lines, takes "after", then sees our side close (EOF or reset).
        let echo = std::thread::spawn(move || {
            let mut peer = peer;
            let mut buf = [0_u8; 1024];
            let mut echoed = Vec::new();
            while echoed.len() < total {
                let n = peer.read(&mut buf).expect("the peer reads");
                assert_ne!(n, 0, "closed before everything arrived");
                echoed.extend_from_slice(&buf[..n]);
                if echoed.len() <= total - b"after\n".len() {
                    peer.write_all(&buf[..n]).unwrap();
                }
            }
            let closed = matches!(peer.read(&mut buf), Ok(0) | Err(_));
            (echoed, closed)
        });
        let (read_half, write_half) = stream.into_split();
        // The read half's task: every echoed line, in order; then its half is dropped.
        let reading = runner
            .spawn(&HALF_TASKS, async move {
                let mut lines = BufReader::new(read_half, 64).expect("reader");
                for i in 0..SPLIT_LINES {
                    let line = lines.next_line().await.expect("next_line");
                    assert_eq!(line, Some(format!("line {i:04}").as_bytes()));
                }
            })
            .expect("spawn reader");
        // The write half's task: the lines, then (the read half gone) one more line, which
        // must still go out: dropping one half does not close the connection.
        let writing = runner
            .spawn(&HALF_TASKS, async move {
                let mut writer = BufWriter::new(write_half, 128).expect("writer");
                for i in 0..SPLIT_LINES {
                    writer
                        .write_all(format!("line {i:04}\n").as_bytes())
                        .await
                        .expect("write_all");
                }
                writer.flush().await.expect("flush");
                reading.await.expect("the reader task");
                writer.write_all(b"after\n").await.expect("write_all");
                writer.flush().await.expect("flush");
                // Dropping the second half closes the socket.
            })
            .expect("spawn writer");
        block_on(writing).expect("the writer task");
        let (echoed, closed) = echo.join().unwrap();
        assert_eq!(
            echoed, expected,
            "all lines, and one after the read half was dropped"
        );
        assert!(closed, "dropping both halves closes the connection");
        block_on(listener.close());
        runner.shutdown();
    });
}

#[test]
fn a_write_half_ends_its_direction_while_the_read_half_receives() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            let (reader, writer) = stream.into_split();
            let (sent, _) = writer.send(IoBuf::from_slice(b"request").unwrap()).await;
            sent.expect("send");
            writer
                .disconnect(wsk_net::Disconnect::Graceful)
                .await
                .expect("graceful disconnect from the write half");
            // The peer sees the request, then EOF; it answers after it.
            let mut request = Vec::new();
            (&peer).read_to_end(&mut request).unwrap();
            assert_eq!(request, b"request");
            (&peer).write_all(b"reply").unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reply = BufReader::new(reader, 64).unwrap();
            assert_eq!(reply.next_line().await.unwrap(), Some(&b"reply"[..]));
            assert_eq!(reply.next_line().await.unwrap(), None);
            drop((reply, writer));
            listener.close().await;
        });
    });
}
