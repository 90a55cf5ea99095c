//! Fuzzing the TCP API with `proptest`: random sequences of calls on one connection (our
//! `TcpStream` on the host kernel, a plain `std::net::TcpStream` peer on loopback) and its
//! `TcpListener`, under the standard fault plans of `wsk_host::testing::plans`.
//!
//! The operations: send, recv, `recv_exact`, each plain, under [`wsk_net::timeout`] with a
//! deadline of 0 to 2 ms, cancelled after a few polls, or dropped after a few polls (an await
//! point abandoned); two receives at once; graceful and abortive disconnect, disconnect with
//! final data; close and drop of the stream at any point; accept with a tiny deadline, an
//! accept dropped mid-flight, two accepts at once; and the peer's actions: write, read, FIN
//! (`shutdown(Write)`), RST (`SO_LINGER` 0, then close) and silence.
//!
//! (Calls after `close` cannot be written: it takes the stream by value. Calls after an
//! abortive disconnect or a graceful one are, and must fail with `InvalidState`.)
//!
//! A model of the connection predicts every result: the bytes each side must receive (checked
//! byte for byte, in order, whatever the chunking), which calls must fail and with which
//! [`ErrorKind`] (misuse is an error, never a panic), and which calls may not complete (those
//! run under a deadline or are dropped, so nothing hangs). Each case runs on a fresh kernel and
//! ends with everything closed, the client deregistered, a clean leak report and no bugcheck.
//! A watchdog ends the process if a case does not finish within twice [`BOUND`].
//!
//! CI runs 32 cases per fault plan from a fixed seed (well under a minute in debug on two
//! cores). The long run, with a fresh random seed per plan:
//!
//! ```text
//! PROPTEST_CASES=10000 cargo test -p wsk-net --release --test api_fuzz
//! ```
//!
//! `PROPTEST_RNG_SEED=<u64>` replays a seed; a failure prints the shrunk operation sequence.
#![cfg(unix)]
#![allow(
    clippy::missing_panics_doc,
    clippy::too_many_lines,
    clippy::struct_excessive_bools,
    reason = "test code: panics are the failure reports; the model is one match of flags"
)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use wsk_executor::block_on;
use wsk_host::faults::Faults;
use wsk_host::{Config as KernelConfig, Kernel};
use wsk_net::{Disconnect, ErrorKind, IoBuf, TcpListener, TcpStream, WskClient};

mod common;
use common::{BOUND, listen, plans, test_driver_named};

/// Cases per fault plan when `PROPTEST_CASES` is not set: the CI bound.
const CI_CASES: u32 = 32;
/// Bytes one side may have written that the other has not read yet: far below the loopback
/// socket buffers, so a write never blocks on a reader that is not reading.
const MAX_IN_FLIGHT: usize = 64 * 1024;

/// One step of a case.
#[derive(Debug, Clone)]
enum Step {
    /// Our stream sends `len` bytes.
    Send(usize),
    /// Our stream receives into a buffer of `cap` bytes, in the given manner.
    Recv { cap: usize, how: How },
    /// Our stream receives exactly `len` bytes (buffer `len + spare`), in the given manner.
    RecvExact { len: usize, spare: usize, how: How },
    /// A receive in flight and a second one at the same time (misuse: `InvalidState`).
    TwoRecvs,
    /// Our stream disconnects.
    Disconnect(Disconnect),
    /// Our stream disconnects gracefully with `len` bytes of final data.
    DisconnectWith(usize),
    /// Our stream is closed (`close().await`), or dropped when `drop` is set.
    Close { drop: bool },
    /// An accept under a deadline of `ms` with nobody connecting: `TimedOut`.
    AcceptTimeout { ms: u64 },
    /// A client connects; the accept is polled `polls` times, then dropped.
    AcceptDropped { polls: usize },
    /// Two accepts in flight at the same time, and one client: one of them gets it.
    TwoAccepts,
    /// The peer writes `len` bytes.
    PeerWrite(usize),
    /// The peer reads everything we sent (and the end, after our graceful disconnect).
    PeerRead,
    /// The peer shuts down its sending side (FIN).
    PeerFin,
    /// The peer resets the connection (`SO_LINGER` 0, close).
    PeerReset,
    /// The peer does nothing for `ms`.
    PeerSilence { ms: u64 },
}

/// How a receive is driven.
#[derive(Debug, Clone, Copy)]
enum How {
    /// Awaited to the end (under a short deadline instead when the model says nothing will
    /// arrive).
    Await,
    /// Under `wsk_net::timeout` of `ms`.
    Timeout { ms: u64 },
    /// Polled `polls` times, then `Recv::cancel`, then awaited.
    Cancel { polls: usize },
    /// Polled `polls` times, then dropped (cancelled when the model has data pending, since a
    /// dropped receive may lose what arrived into it, as documented).
    Drop { polls: usize },
}

fn how() -> impl Strategy<Value = How> {
    prop_oneof![
        2 => Just(How::Await),
        1 => (0u64..3).prop_map(|ms| How::Timeout { ms }),
        1 => (0usize..3).prop_map(|polls| How::Cancel { polls }),
        1 => (0usize..3).prop_map(|polls| How::Drop { polls }),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..16, 16usize..2048, 2048usize..20_000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => size().prop_map(Step::Send),
        4 => (size(), how()).prop_map(|(cap, how)| Step::Recv { cap, how }),
        3 => (size(), 0usize..8, how())
            .prop_map(|(len, spare, how)| Step::RecvExact { len, spare, how }),
        1 => Just(Step::TwoRecvs),
        1 => prop_oneof![Just(Disconnect::Graceful), Just(Disconnect::Abortive)]
            .prop_map(Step::Disconnect),
        1 => (0usize..64).prop_map(Step::DisconnectWith),
        1 => any::<bool>().prop_map(|drop| Step::Close { drop }),
        1 => (0u64..3).prop_map(|ms| Step::AcceptTimeout { ms }),
        1 => (0usize..3).prop_map(|polls| Step::AcceptDropped { polls }),
        1 => Just(Step::TwoAccepts),
        5 => size().prop_map(Step::PeerWrite),
        3 => Just(Step::PeerRead),
        1 => Just(Step::PeerFin),
        1 => Just(Step::PeerReset),
        1 => (0u64..3).prop_map(|ms| Step::PeerSilence { ms }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..32)
}

/// Byte `index` of the stream in one direction: not periodic over short spans, so a chunk
/// delivered at the wrong offset or twice does not compare equal by accident.
fn stream_byte(index: usize, salt: u64) -> u8 {
    let mixed = (index as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed.to_le_bytes()[7]
}

const TO_US: u64 = 0x5eed;
const TO_PEER: u64 = 0xfeed;

/// Closing with `SO_LINGER` {on, 0} resets the connection instead of a FIN.
fn reset_on_close(stream: &std::net::TcpStream) {
    wsk_benches::load::set_linger_zero(stream).expect("SO_LINGER");
}

/// Polls `future` once with a no-op waker.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Errors a call may end with once the peer reset the connection (or we aborted it). After
/// the reset was reported once, the host provider fails later calls on the dead connection
/// with `STATUS_INVALID_DEVICE_STATE` (`InvalidState`).
fn is_broken_connection(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::InvalidState
    )
}

/// What the model knows about the connection.
#[derive(Default)]
struct Model {
    /// Bytes the peer wrote that our stream has not received yet, in order.
    to_us: VecDeque<u8>,
    /// Offset of the next byte the peer writes.
    to_us_written: usize,
    /// Bytes our stream sent that the peer has not read yet, in order.
    to_peer: VecDeque<u8>,
    /// Offset of the next byte our stream sends.
    to_peer_sent: usize,
    /// Our graceful disconnect succeeded: sends fail, the peer reads the end.
    send_shut: bool,
    /// Our abortive disconnect succeeded: sends and receives fail.
    aborted: bool,
    /// The peer sent FIN.
    peer_fin: bool,
    /// The peer reset the connection: from here on, calls may fail with
    /// [`is_broken_connection`] kinds and undelivered data may be lost.
    broken: bool,
}

impl Model {
    /// Checks a receive's result against the model and takes the bytes it delivered.
    /// `exact` is the `recv_exact` length (0 for `recv`); `interrupted` is the error a
    /// deadline or a cancel may have ended it with.
    fn check_received(
        &mut self,
        label: &str,
        result: &wsk_net::Result<usize>,
        buf: &IoBuf,
        exact: usize,
        interrupted: Option<ErrorKind>,
    ) {
        let model = self;
        let delivered = match result {
            Ok(n) => {
                assert_eq!(*n, buf.len(), "{label}: the count is the buffer's length");
                if exact != 0 {
                    assert_eq!(*n, exact, "{label}: recv_exact delivers exactly its length");
                }
                if *n == 0 {
                    assert!(
                        model.peer_fin || model.broken,
                        "{label}: end of stream without FIN or reset"
                    );
                    if !model.broken {
                        assert!(
                            model.to_us.is_empty(),
                            "{label}: end of stream before {} bytes the peer wrote",
                            model.to_us.len()
                        );
                    }
                }
                *n
            }
            Err(e) => {
                let kind = e.kind();
                let allowed = Some(kind) == interrupted
                    || (model.broken && is_broken_connection(kind))
                    || (exact != 0
                        && kind == ErrorKind::NotConnected
                        && model.peer_fin
                        && model.to_us.len() < exact);
                assert!(allowed, "{label}: unexpected error {e} ({kind:?})");
                if kind == ErrorKind::NotConnected && !model.broken {
                    assert_eq!(
                        buf.len(),
                        model.to_us.len(),
                        "{label}: a recv_exact ended by FIN delivers all that was sent"
                    );
                }
                buf.len()
            }
        };
        assert!(
            delivered <= model.to_us.len(),
            "{label}: {delivered} bytes received, only {} sent",
            model.to_us.len()
        );
        for (i, (got, want)) in buf.iter().zip(model.to_us.drain(..delivered)).enumerate() {
            assert_eq!(got, &want, "{label}: byte {i} of the chunk differs");
        }
        if let Err(e) = result
            && is_broken_connection(e.kind())
            && model.broken
        {
            // After a reset, what had not been delivered is gone.
            model.to_us.clear();
        }
    }

    /// Whether a receive of `exact` bytes (0: any) is certain to complete without a deadline.
    fn will_complete(&self, exact: usize) -> bool {
        let model = self;
        model.peer_fin || model.broken || model.to_us.len() >= exact.max(1)
    }
}

/// The peer reads all we sent (checking each byte) and, after our graceful disconnect,
/// the end of the stream.
fn peer_read(model: &mut Model, peer: Option<&mut std::net::TcpStream>, label: &str) {
    let Some(peer) = peer else {
        return;
    };
    if model.broken || model.aborted {
        return;
    }
    let mut got = vec![0u8; model.to_peer.len()];
    peer.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{label}: the peer reads what we sent: {e}"));
    for (i, (got, want)) in got.iter().zip(model.to_peer.drain(..)).enumerate() {
        assert_eq!(*got, want, "{label}: byte {i} the peer read differs");
    }
    if model.send_shut {
        let end = peer.read(&mut [0u8; 1]);
        assert!(
            matches!(end, Ok(0)),
            "{label}: after our FIN the peer reads the end: {end:?}"
        );
    }
}

/// One case: a connection, its listener, the peer, and the model.
struct Case<'a> {
    listener: &'a TcpListener,
    addr: SocketAddr,
    stream: Option<TcpStream>,
    peer: Option<std::net::TcpStream>,
    /// Clients of `AcceptDropped`, kept open until the listener is closed.
    extra_clients: Vec<std::net::TcpStream>,
    model: Model,
}

impl Case<'_> {
    /// Awaits `recv`/`recv_exact` as `how` says and checks the result.
    async fn receive(&mut self, label: &str, cap: usize, exact: usize, how: How) {
        let Some(stream) = self.stream.as_ref() else {
            return;
        };
        let buf = IoBuf::with_capacity(cap).expect("buffer");
        let start = |buf| {
            if exact == 0 {
                stream.recv(buf)
            } else {
                stream.recv_exact(buf, exact)
            }
        };
        if self.model.aborted {
            let (result, _) = start(buf).await;
            let kind = result.map_err(|e| e.kind());
            assert_eq!(kind, Err(ErrorKind::InvalidState), "{label}: after abort");
            return;
        }
        let how = match how {
            How::Await if !self.model.will_complete(exact) => How::Timeout { ms: 1 },
            How::Drop { polls } if !self.model.to_us.is_empty() => How::Cancel { polls },
            how => how,
        };
        match how {
            How::Await => {
                let (result, buf) = start(buf).await;
                self.model.check_received(label, &result, &buf, exact, None);
            }
            How::Timeout { ms } => {
                let (result, buf) = wsk_net::timeout(Duration::from_millis(ms), start(buf)).await;
                self.model
                    .check_received(label, &result, &buf, exact, Some(ErrorKind::TimedOut));
            }
            How::Cancel { polls } => {
                let mut recv = pin!(start(buf));
                for _ in 0..polls {
                    if let Poll::Ready((result, buf)) = poll_once(recv.as_mut()) {
                        self.model.check_received(label, &result, &buf, exact, None);
                        return;
                    }
                }
                recv.cancel();
                let (result, buf) = recv.await;
                self.model
                    .check_received(label, &result, &buf, exact, Some(ErrorKind::Cancelled));
            }
            How::Drop { polls } => {
                // Nothing is pending for us, so a dropped receive cannot lose data.
                let mut recv = pin!(start(buf));
                for _ in 0..polls {
                    if let Poll::Ready((result, buf)) = poll_once(recv.as_mut()) {
                        self.model.check_received(label, &result, &buf, exact, None);
                        return;
                    }
                }
            }
        }
    }

    async fn apply(&mut self, label: &str, step: &Step) {
        match *step {
            Step::Send(len) => {
                let Some(stream) = self.stream.as_ref() else {
                    return;
                };
                let model = &mut self.model;
                if model.to_peer.len() + len > MAX_IN_FLIGHT {
                    peer_read(&mut self.model, self.peer.as_mut(), label);
                }
                let model = &mut self.model;
                let data: Vec<u8> = (model.to_peer_sent..model.to_peer_sent + len)
                    .map(|i| stream_byte(i, TO_PEER))
                    .collect();
                let (result, _) = stream.send(IoBuf::from_slice(&data).expect("buffer")).await;
                if model.send_shut || model.aborted {
                    let kind = result.map_err(|e| e.kind());
                    assert_eq!(
                        kind,
                        Err(ErrorKind::InvalidState),
                        "{label}: after disconnect"
                    );
                    return;
                }
                match result {
                    Ok(n) => {
                        assert_eq!(n, len, "{label}: all sent");
                        model.to_peer_sent += len;
                        if !model.broken {
                            model.to_peer.extend(data);
                        }
                    }
                    Err(e) => {
                        assert!(
                            model.broken && is_broken_connection(e.kind()),
                            "{label}: {e}"
                        );
                    }
                }
            }
            Step::Recv { cap, how } => self.receive(label, cap, 0, how).await,
            Step::RecvExact { len, spare, how } => {
                self.receive(label, len + spare, len, how).await;
            }
            Step::TwoRecvs => {
                let Some(stream) = self.stream.as_ref() else {
                    return;
                };
                if self.model.aborted {
                    return;
                }
                let mut first = pin!(stream.recv(IoBuf::with_capacity(64).expect("buffer")));
                if let Poll::Ready((result, buf)) = poll_once(first.as_mut()) {
                    self.model.check_received(label, &result, &buf, 0, None);
                    return;
                }
                let (second, buf) = stream.recv(IoBuf::with_capacity(8).expect("buffer")).await;
                let kind = second.map_err(|e| e.kind());
                assert_eq!(
                    kind,
                    Err(ErrorKind::InvalidState),
                    "{label}: second receive"
                );
                assert!(buf.is_empty(), "{label}: the refused receive took nothing");
                first.cancel();
                let (result, buf) = first.await;
                self.model
                    .check_received(label, &result, &buf, 0, Some(ErrorKind::Cancelled));
            }
            Step::Disconnect(how) => {
                let Some(stream) = self.stream.as_ref() else {
                    return;
                };
                let model = &mut self.model;
                let result = stream.disconnect(how).await;
                match (how, result) {
                    (Disconnect::Graceful, result) if model.send_shut => {
                        let kind = result.map_err(|e| e.kind());
                        assert_eq!(kind, Err(ErrorKind::InvalidState), "{label}: twice");
                    }
                    (how, Ok(())) => {
                        if how == Disconnect::Abortive {
                            // What was sent may still reach the peer before the reset.
                            model.aborted = true;
                        }
                        model.send_shut = true;
                    }
                    (_, Err(e)) => assert!(
                        (model.broken || model.aborted) && is_broken_connection(e.kind())
                            || model.aborted && e.kind() == ErrorKind::InvalidState,
                        "{label}: {e}"
                    ),
                }
            }
            Step::DisconnectWith(len) => {
                let Some(stream) = self.stream.as_ref() else {
                    return;
                };
                let model = &mut self.model;
                let data: Vec<u8> = (model.to_peer_sent..model.to_peer_sent + len)
                    .map(|i| stream_byte(i, TO_PEER))
                    .collect();
                let buf = IoBuf::with_capacity(64).expect("buffer");
                let mut buf = buf;
                buf.extend_from_slice(&data).expect("fits");
                let (result, _) = stream.disconnect_with(buf).await;
                if model.send_shut {
                    let kind = result.map_err(|e| e.kind());
                    assert_eq!(
                        kind,
                        Err(ErrorKind::InvalidState),
                        "{label}: after disconnect"
                    );
                    return;
                }
                match result {
                    Ok(()) => {
                        model.send_shut = true;
                        model.to_peer_sent += len;
                        if !model.broken {
                            model.to_peer.extend(data);
                        }
                    }
                    Err(e) => assert!(
                        model.broken && is_broken_connection(e.kind()),
                        "{label}: {e}"
                    ),
                }
            }
            Step::Close { drop } => {
                // The close is abortive unless both directions are shut: the peer reads what
                // it is owed first, so a reset cannot discard it unchecked.
                peer_read(&mut self.model, self.peer.as_mut(), label);
                let Some(stream) = self.stream.take() else {
                    return;
                };
                if drop {
                    std::mem::drop(stream);
                } else {
                    stream.close().await;
                }
                self.model.aborted = true;
                if let Some(peer) = self.peer.as_mut() {
                    let mut rest = Vec::new();
                    let end = peer.read_to_end(&mut rest);
                    // All we owed was read above, unless an abort came first: then the peer
                    // may read part of what was sent before it.
                    let owed: Vec<u8> = self.model.to_peer.drain(..).collect();
                    assert!(
                        owed.starts_with(&rest)
                            && (end.is_ok()
                                || end.as_ref().is_err_and(|e| {
                                    e.kind() == std::io::ErrorKind::ConnectionReset
                                })),
                        "{label}: after close the peer reads the end, {} bytes, {end:?}",
                        rest.len()
                    );
                }
            }
            Step::AcceptTimeout { ms } => {
                let result =
                    wsk_net::timeout(Duration::from_millis(ms), self.listener.accept()).await;
                match result {
                    // A client of an earlier dropped accept may still be in the backlog.
                    Ok((accepted, _)) if !self.extra_clients.is_empty() => accepted.close().await,
                    result => {
                        let kind = result.map(drop).map_err(|e| e.kind());
                        assert_eq!(kind, Err(ErrorKind::TimedOut), "{label}: nobody connects");
                    }
                }
            }
            Step::AcceptDropped { polls } => {
                let client = std::net::TcpStream::connect(self.addr).expect("connect");
                client.set_read_timeout(Some(BOUND)).expect("bound");
                client.set_write_timeout(Some(BOUND)).expect("bound");
                self.extra_clients.push(client);
                let mut accept = pin!(self.listener.accept());
                for _ in 0..polls {
                    if let Poll::Ready(accepted) = poll_once(accept.as_mut()) {
                        let (accepted, _) =
                            accepted.unwrap_or_else(|e| panic!("{label}: accept: {e}"));
                        accepted.close().await;
                        return;
                    }
                }
            }
            Step::TwoAccepts => {
                let mut first = pin!(self.listener.accept());
                if poll_once(first.as_mut()).is_ready() {
                    // A client of an earlier dropped accept was still in the backlog.
                    return;
                }
                let mut second = pin!(self.listener.accept());
                if poll_once(second.as_mut()).is_ready() {
                    return;
                }
                // Both at WSK, each on its own IRP: one client, taken by either.
                let client = std::net::TcpStream::connect(self.addr).expect("connect");
                self.extra_clients.push(client);
                let accepted = core::future::poll_fn(|cx| {
                    if let Poll::Ready(done) = first.as_mut().poll(cx) {
                        return Poll::Ready(done);
                    }
                    second.as_mut().poll(cx)
                })
                .await;
                let (accepted, _) = accepted.unwrap_or_else(|e| panic!("{label}: accept: {e}"));
                accepted.close().await;
                // The other one is dropped pending: cancelled.
            }
            Step::PeerWrite(len) => {
                let model = &mut self.model;
                let Some(peer) = self.peer.as_mut() else {
                    return;
                };
                if model.peer_fin || model.to_us.len() + len > MAX_IN_FLIGHT {
                    return;
                }
                let data: Vec<u8> = (model.to_us_written..model.to_us_written + len)
                    .map(|i| stream_byte(i, TO_US))
                    .collect();
                model.to_us_written += len;
                let written = peer.write_all(&data);
                if model.aborted || model.broken {
                    // Our side is gone: the write may fail, and nobody receives it.
                    return;
                }
                written.unwrap_or_else(|e| panic!("{label}: the peer writes: {e}"));
                model.to_us.extend(data);
            }
            Step::PeerRead => peer_read(&mut self.model, self.peer.as_mut(), label),
            Step::PeerFin => {
                if let Some(peer) = self.peer.as_ref()
                    && !self.model.peer_fin
                {
                    // After our abort the socket may already be reset: nothing to check.
                    let _ = peer.shutdown(Shutdown::Write);
                    self.model.peer_fin = true;
                }
            }
            Step::PeerReset => {
                if let Some(peer) = self.peer.take() {
                    reset_on_close(&peer);
                    drop(peer);
                    self.model.broken = true;
                    self.model.to_peer.clear();
                }
            }
            Step::PeerSilence { ms } => std::thread::sleep(Duration::from_millis(ms)),
        }
    }

    /// Ends the case: everything closed, the peer owed nothing.
    async fn finish(mut self, label: &str) {
        peer_read(&mut self.model, self.peer.as_mut(), label);
        if let Some(stream) = self.stream.take() {
            stream.close().await;
        }
        drop(self.peer.take());
        self.extra_clients.clear();
    }
}

/// Runs `steps` on a fresh kernel booted with `plan`, then checks the kernel is clean.
fn run_case(plan: &Faults, steps: &[Step]) {
    let (done, watchdog_wait) = mpsc::channel::<()>();
    let description = format!("{plan:?}: {steps:?}");
    let watchdog = std::thread::spawn(move || {
        if watchdog_wait.recv_timeout(2 * BOUND) == Err(mpsc::RecvTimeoutError::Timeout) {
            // Straight to the process's stderr: the test harness's capture dies with exit.
            let _ = writeln!(
                std::io::stderr(),
                "api_fuzz: a case hung for {:?}: {description}",
                2 * BOUND
            );
            std::process::exit(101);
        }
    });
    let kernel = Kernel::boot(KernelConfig::default().with_faults(plan.clone()));
    kernel.on_kernel_thread(|| {
        let client = WskClient::register(test_driver_named(&kernel, "wskfuzz")).expect("register");
        block_on(run_steps(&client, steps));
        client.deregister().expect("deregister");
    });
    let report = kernel.check_leaks();
    assert!(report.is_clean(), "{report}");
    let bugchecks = kernel.take_bugchecks();
    assert!(bugchecks.is_empty(), "{bugchecks:?}");
    drop(kernel);
    let _ = done.send(());
    watchdog.join().expect("watchdog");
}

async fn run_steps(client: &WskClient, steps: &[Step]) {
    let (listener, addr) = listen(client).await;
    let peer = std::net::TcpStream::connect(addr).expect("connect");
    peer.set_read_timeout(Some(BOUND)).expect("bound");
    peer.set_write_timeout(Some(BOUND)).expect("bound");
    let (stream, _) = listener.accept().await.expect("accept");
    let mut case = Case {
        listener: &listener,
        addr,
        stream: Some(stream),
        peer: Some(peer),
        extra_clients: Vec::new(),
        model: Model::default(),
    };
    for (i, step) in steps.iter().enumerate() {
        let label = format!("step {i} {step:?}");
        if std::env::var_os("API_FUZZ_TRACE").is_some() {
            let _ = writeln!(std::io::stderr(), "api_fuzz: {label}");
        }
        case.apply(&label, step).await;
    }
    case.finish("finish").await;
    if std::env::var_os("API_FUZZ_TRACE").is_some() {
        let _ = writeln!(std::io::stderr(), "api_fuzz: closing the listener");
    }
    listener.close().await;
}

#[test]
fn random_call_sequences_give_exact_bytes_errors_and_no_leaks() {
    let cases_from_env = std::env::var_os("PROPTEST_CASES").is_some();
    let seed_from_env = std::env::var_os("PROPTEST_RNG_SEED").is_some();
    for (index, plan) in plans().into_iter().enumerate() {
        let mut config = Config {
            failure_persistence: None,
            ..Config::default()
        };
        if !cases_from_env {
            config.cases = CI_CASES;
        }
        // CI replays the same cases every run; a long run with PROPTEST_CASES explores.
        if !seed_from_env && !cases_from_env {
            config.rng_seed = RngSeed::Fixed(0xa51_f022 + index as u64);
        }
        let mut runner = TestRunner::new(config);
        let result = runner.run(&steps(), |steps| {
            run_case(&plan, &steps);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("plan {plan:?}: {failure}");
        }
    }
}
