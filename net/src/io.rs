//! Stream I/O on a [`TcpStream`] beyond one owned-buffer receive: the appending receive
//! ([`TcpStream::recv_append`], future [`RecvAppend`]), a buffered reader with line helpers
//! ([`BufReader`]: `read_until`, `read_line`, `next_line`), a buffered writer ([`BufWriter`]),
//! and the `embedded-io-async` traits (`Read`, `BufRead`, `Write`) on both, so that `no_std`
//! protocol crates run on a WSK connection.
//!
//! The readers and writers own an [`IoBuf`] (WSK only ever sees this crate's buffers) and
//! work on a [`RecvSide`] / [`SendSide`]: a [`TcpStream`], a reference to one (a reader and a
//! writer on one stream at once), or the halves of [`TcpStream::into_split`] (reader and
//! writer in separate tasks).
//!
//! `futures-io`'s `AsyncRead`/`AsyncWrite` are not implemented: their results carry
//! `std::io::Error`, which a `no_std` crate cannot name. `embedded-io-async` is the `no_std`
//! equivalent, re-exported here as [`embedded_io_async`].
//!
//! # Cancellation
//! A [`RecvAppend`] gives its buffer back whatever happens, like [`Recv`](crate::Recv) (bound
//! it with [`timeout`](crate::timeout)). The reader's and writer's futures lend their
//! `IoBuf` to one operation: dropping such a future mid-operation (a `select`, a deadline
//! that drops) frees the buffer with the cancelled operation, and every later call on that
//! reader or writer fails with [`ErrorKind::InvalidState`] instead of panicking.
//!
//! # IRQL
//! Everything here: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

pub use embedded_io_async;
use embedded_io_async::ErrorType;

use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{Op, RECV, Transfer};
use crate::socket::check;
use crate::tcp::{TcpReadHalf, TcpStream, TcpWriteHalf, socket_of, take_buf};

impl TcpStream {
    /// Receives into the spare capacity of `buf`, after what it already holds: `[0, len)` is
    /// kept and `len` grows by what arrived. Gives the buffer back with the count of new
    /// bytes; 0 means the peer closed its side (FIN). Same ownership and cancellation rules
    /// as [`TcpStream::recv`]: the future ([`RecvAppend`]) can be cancelled and bounded with
    /// [`timeout`](crate::timeout) without losing the buffer or what it held.
    ///
    /// For parsers that need more bytes than one segment brought (a header split across
    /// segments): append until the message is complete, then
    /// [`IoBuf::discard_front`] what was consumed.
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// let mut buf = wsk_net::IoBuf::with_capacity(512)?;
    /// while !buf.contains(&b'\n') {
    ///     let (n, b) = stream.recv_append(buf).await;
    ///     buf = b;
    ///     if n? == 0 {
    ///         break; // FIN before the end of the line
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when `buf` is full (no spare capacity); otherwise as
    /// [`TcpStream::recv`]. On error the buffer comes back with its earlier contents (and
    /// whatever WSK reported as received after them).
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_append(&self, buf: IoBuf) -> RecvAppend<'_> {
        const NAME: &str = "recv_append";
        let start = buf.len();
        let spare = buf.spare_capacity();
        if spare == 0 {
            return RecvAppend::refused(Error::new(ErrorKind::InvalidInput, NAME), buf, start);
        }
        let inner = socket_of(self);
        if inner.flags().is_recv_shut() {
            return RecvAppend::refused(Error::new(ErrorKind::InvalidState, NAME), buf, start);
        }
        let held = Transfer::receive(buf, start, spare, 0);
        RecvAppend {
            op: Some(Op::new(inner, RECV, held)),
            early: None,
            start,
        }
    }
}

/// The future of [`TcpStream::recv_append`]: the count of new bytes and the buffer back.
/// [`RecvAppend::cancel`] asks WSK to stop; the future still returns the buffer. Dropping it
/// in flight cancels the receive and frees the buffer once WSK has let go of it. Do not poll
/// it again after it returned: it stays pending.
///
/// # IRQL
/// Poll and drop at <= `DISPATCH_LEVEL`.
pub struct RecvAppend<'a> {
    op: Option<Op<'a, Transfer>>,
    early: Option<(Error, IoBuf)>,
    /// The buffer's length when the receive was made: where the new bytes start.
    start: usize,
}

impl RecvAppend<'_> {
    fn refused(error: Error, buf: IoBuf, start: usize) -> Self {
        Self {
            op: None,
            early: Some((error, buf)),
            start,
        }
    }

    /// Requests cancellation of the receive in flight (`IoCancelIrp`); keep polling to get
    /// the buffer back, as with [`Recv::cancel`](crate::Recv::cancel) (example there).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn cancel(&self) {
        if let Some(op) = &self.op {
            op.cancel();
        }
    }
}

impl Future for RecvAppend<'_> {
    type Output = (Result<usize>, IoBuf);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some((error, buf)) = this.early.take() {
            return Poll::Ready((Err(error), buf));
        }
        let Some(op) = this.op.as_mut() else {
            // Polled again after completion: the buffer was already returned.
            return Poll::Pending;
        };
        let done = match op.poll_in_place(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(done) => done,
        };
        this.op = None;
        let start = this.start;
        match done {
            Ok(done) => {
                let status = done.status;
                let information = done.information;
                let mut buf = take_buf(done);
                let arrived = information.min(buf.capacity() - start);
                // Within capacity by construction; the completion marked the bytes written.
                let _ = buf.set_len(start + arrived);
                Poll::Ready((check(status, arrived, "recv_append"), buf))
            }
            Err(refused) => Poll::Ready((Err(refused.error), refused.held.buf)),
        }
    }
}

impl crate::Cancellable for RecvAppend<'_> {
    fn request_cancel(self: Pin<&mut Self>) {
        self.as_ref().get_ref().cancel();
    }

    fn timed_out(output: (Result<usize>, IoBuf)) -> (Result<usize>, IoBuf) {
        match output {
            (Err(e), buf) if e.kind() == ErrorKind::Cancelled => {
                (Err(Error::new(ErrorKind::TimedOut, e.operation())), buf)
            }
            other => other,
        }
    }

    fn escalate(self: Pin<&mut Self>) -> crate::Escalation<Self::Output> {
        // The provider ignored the cancel (Wine): closing the socket completes the receive,
        // and the buffer comes back.
        if let Some(op) = &self.op {
            op.close_socket();
        }
        crate::Escalation::KeepWaiting
    }
}

mod sealed {
    /// Only this crate's connection types are sides.
    pub trait Sealed {}
}

/// What a [`BufReader`] receives from: a [`TcpStream`], `&TcpStream`, a [`TcpReadHalf`] or
/// `&TcpReadHalf`. Sealed.
///
/// # IRQL
/// Any (a plain accessor).
pub trait RecvSide: sealed::Sealed {
    /// The connection to receive on.
    #[doc(hidden)]
    fn recv_stream(&self) -> &TcpStream;
}

/// What a [`BufWriter`] sends on: a [`TcpStream`], `&TcpStream`, a [`TcpWriteHalf`] or
/// `&TcpWriteHalf`. Sealed.
///
/// # IRQL
/// Any (a plain accessor).
pub trait SendSide: sealed::Sealed {
    /// The connection to send on.
    #[doc(hidden)]
    fn send_stream(&self) -> &TcpStream;
}

impl sealed::Sealed for TcpStream {}
impl sealed::Sealed for &TcpStream {}
impl sealed::Sealed for TcpReadHalf {}
impl sealed::Sealed for &TcpReadHalf {}
impl sealed::Sealed for TcpWriteHalf {}
impl sealed::Sealed for &TcpWriteHalf {}

impl RecvSide for TcpStream {
    fn recv_stream(&self) -> &TcpStream {
        self
    }
}
impl RecvSide for &TcpStream {
    fn recv_stream(&self) -> &TcpStream {
        self
    }
}
impl RecvSide for TcpReadHalf {
    fn recv_stream(&self) -> &TcpStream {
        self.stream()
    }
}
impl RecvSide for &TcpReadHalf {
    fn recv_stream(&self) -> &TcpStream {
        self.stream()
    }
}
impl SendSide for TcpStream {
    fn send_stream(&self) -> &TcpStream {
        self
    }
}
impl SendSide for &TcpStream {
    fn send_stream(&self) -> &TcpStream {
        self
    }
}
impl SendSide for TcpWriteHalf {
    fn send_stream(&self) -> &TcpStream {
        self.stream()
    }
}
impl SendSide for &TcpWriteHalf {
    fn send_stream(&self) -> &TcpStream {
        self.stream()
    }
}

/// The error of a reader or writer whose buffer went with a dropped operation.
fn buffer_lost(operation: &'static str) -> Error {
    Error::new(ErrorKind::InvalidState, operation)
}

/// A buffered reader over a connection: receives into its own [`IoBuf`] (appending, so a
/// line split across segments is found whole) and hands out lines or bytes from it. Bounded:
/// it never holds more than its buffer's capacity, and a line longer than what it may fill is
/// an [`ErrorKind::InvalidInput`] error, never a hang or a panic.
///
/// Implements `embedded_io_async::{Read, BufRead}` (error type [`Error`]).
///
/// A line protocol, one reply per line, in ~10 lines:
///
/// ```no_run
/// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
/// use wsk_net::IoBuf;
/// use wsk_net::io::BufReader;
/// let mut lines = BufReader::new(&stream, 4096)?;
/// while let Some(line) = lines.next_line().await? {
///     // `line` is one line without its "\n" (or "\r\n").
///     let reply = if line == b"PING" { &b"PONG\n"[..] } else { &b"ERR\n"[..] };
///     let (sent, _) = stream.send(IoBuf::from_slice(reply)?).await;
///     sent?;
/// }
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Create, call, poll and drop at <= `DISPATCH_LEVEL`.
pub struct BufReader<R> {
    source: R,
    /// `[pos, len)` is received and not yet consumed; `None` once a dropped receive took it.
    buf: Option<IoBuf>,
    pos: usize,
    /// The peer sent FIN: no more receives.
    at_end: bool,
}

impl<R: RecvSide> BufReader<R> {
    /// A reader over `source` with a buffer of `capacity` bytes, which bounds the longest
    /// line [`BufReader::next_line`] returns. See the example on [`BufReader`].
    ///
    /// # Errors
    /// As [`IoBuf::with_capacity`]: `InvalidInput` for a zero or too large capacity,
    /// `NoResources`.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn new(source: R, capacity: usize) -> Result<Self> {
        Ok(Self::with_buf(source, IoBuf::with_capacity(capacity)?))
    }

    /// A reader over `source` with `buf` as its buffer; bytes `buf` already holds are read
    /// first (data received before the reader existed).
    ///
    /// ```no_run
    /// # async fn demo(stream: &wsk_net::TcpStream, early: wsk_net::IoBuf) -> wsk_net::Result<()> {
    /// let mut reader = wsk_net::io::BufReader::with_buf(stream, early);
    /// let _first = reader.next_line().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// Any.
    pub fn with_buf(source: R, buf: IoBuf) -> Self {
        Self {
            source,
            buf: Some(buf),
            pos: 0,
            at_end: false,
        }
    }

    /// The received bytes not consumed yet (empty when the buffer was lost).
    ///
    /// ```no_run
    /// # fn demo(reader: &wsk_net::io::BufReader<&wsk_net::TcpStream>) {
    /// let _pending: &[u8] = reader.buffer();
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn buffer(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |buf| &buf[self.pos..])
    }

    /// The source. See the example on [`BufReader::into_parts`].
    ///
    /// # IRQL
    /// Any.
    pub fn get_ref(&self) -> &R {
        &self.source
    }

    /// The source and the buffer, holding only the bytes not consumed yet (`None` when a
    /// dropped operation took the buffer).
    ///
    /// ```no_run
    /// # fn demo(reader: wsk_net::io::BufReader<wsk_net::TcpStream>) {
    /// let (stream, rest) = reader.into_parts();
    /// # let _ = (stream, rest);
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Any.
    pub fn into_parts(mut self) -> (R, Option<IoBuf>) {
        if let Some(buf) = self.buf.as_mut() {
            buf.discard_front(self.pos);
        }
        (self.source, self.buf)
    }

    /// Receives more after the buffered bytes (first moving them to the front). `Ok(0)` at the
    /// end of the stream; `InvalidInput` when the buffer is full of unconsumed bytes.
    async fn receive_more(&mut self, operation: &'static str) -> Result<usize> {
        if self.at_end {
            return Ok(0);
        }
        let mut buf = self.buf.take().ok_or(buffer_lost(operation))?;
        buf.discard_front(self.pos);
        self.pos = 0;
        if buf.spare_capacity() == 0 {
            self.buf = Some(buf);
            return Err(Error::new(ErrorKind::InvalidInput, operation));
        }
        let (arrived, buf) = self.source.recv_stream().recv_append(buf).await;
        self.buf = Some(buf);
        let arrived = arrived?;
        if arrived == 0 {
            self.at_end = true;
        }
        Ok(arrived)
    }

    /// The buffered bytes, receiving first when there are none; empty at the end of the
    /// stream. Mark what was used with [`BufReader::consume`].
    ///
    /// ```no_run
    /// # async fn demo(reader: &mut wsk_net::io::BufReader<&wsk_net::TcpStream>) -> wsk_net::Result<()> {
    /// let used = reader.fill_buf().await?.len();
    /// reader.consume(used);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::recv`]; `InvalidState` when the buffer was lost.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn fill_buf(&mut self) -> Result<&[u8]> {
        if self.buffer().is_empty() {
            self.receive_more("fill_buf").await?;
        }
        Ok(self.buffer())
    }

    /// Marks `amount` buffered bytes as used (at most all of them). Example at
    /// [`BufReader::fill_buf`].
    ///
    /// # IRQL
    /// Any.
    pub fn consume(&mut self, amount: usize) {
        self.pos += amount.min(self.buffer().len());
    }

    /// Appends to `out` the bytes up to and including `delimiter` (all that remain at the end
    /// of the stream), receiving as needed; returns how many were appended, 0 at the end of
    /// the stream. As `std::io::BufRead::read_until`, with `out`'s capacity as the bound.
    ///
    /// ```no_run
    /// # async fn demo(reader: &mut wsk_net::io::BufReader<&wsk_net::TcpStream>) -> wsk_net::Result<()> {
    /// let mut record = wsk_net::IoBuf::with_capacity(256)?;
    /// let n = reader.read_until(b';', &mut record).await?;
    /// assert_eq!(n, record.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when `out` fills up before the delimiter arrives: the bytes that fit
    /// were consumed into `out`, the rest of the record is still to be read. Otherwise as
    /// [`TcpStream::recv`] (bytes appended before an error stay in `out`); `InvalidState`
    /// when the buffer was lost.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn read_until(&mut self, delimiter: u8, out: &mut IoBuf) -> Result<usize> {
        let mut total = 0;
        loop {
            if out.spare_capacity() == 0 {
                return Err(Error::new(ErrorKind::InvalidInput, "read_until"));
            }
            if self.buffer().is_empty() && self.receive_more("read_until").await? == 0 {
                return Ok(total);
            }
            let buffered = self.buffer();
            let (take, found) = scan(buffered, delimiter, out.spare_capacity());
            out.extend_from_slice(&buffered[..take])?;
            self.pos += take;
            total += take;
            if found {
                return Ok(total);
            }
        }
    }

    /// [`BufReader::read_until`] into a slice: writes from `out[0]`, returns the count
    /// (the delimiter included, if it arrived).
    ///
    /// ```no_run
    /// # async fn demo(reader: &mut wsk_net::io::BufReader<&wsk_net::TcpStream>) -> wsk_net::Result<()> {
    /// let mut line = [0_u8; 80];
    /// let n = reader.read_until_into(b'\n', &mut line).await?;
    /// let _line = &line[..n];
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`BufReader::read_until`]: `InvalidInput` when `out` fills up before the delimiter
    /// (or is empty).
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn read_until_into(&mut self, delimiter: u8, out: &mut [u8]) -> Result<usize> {
        let mut total = 0;
        loop {
            if total == out.len() {
                return Err(Error::new(ErrorKind::InvalidInput, "read_until"));
            }
            if self.buffer().is_empty() && self.receive_more("read_until").await? == 0 {
                return Ok(total);
            }
            let buffered = self.buffer();
            let (take, found) = scan(buffered, delimiter, out.len() - total);
            out[total..total + take].copy_from_slice(&buffered[..take]);
            self.pos += take;
            total += take;
            if found {
                return Ok(total);
            }
        }
    }

    /// [`BufReader::read_until`] with `b'\n'`: appends one line, its `"\n"` included.
    ///
    /// ```no_run
    /// # async fn demo(reader: &mut wsk_net::io::BufReader<&wsk_net::TcpStream>) -> wsk_net::Result<()> {
    /// let mut line = wsk_net::IoBuf::with_capacity(128)?;
    /// if reader.read_line(&mut line).await? == 0 {
    ///     // end of stream
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`BufReader::read_until`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn read_line(&mut self, out: &mut IoBuf) -> Result<usize> {
        self.read_until(b'\n', out).await
    }

    /// The next line, in place in the reader's buffer (no copy), without its `"\n"` or
    /// `"\r\n"`; `None` at the end of the stream (a last line without `"\n"` is returned
    /// first). The loop helper of [`BufReader`] (example there): `while let Some(line) =
    /// reader.next_line().await? { ... }`.
    ///
    /// # Errors
    /// `InvalidInput` when a line does not fit in the reader's buffer (a last line without
    /// `"\n"` must leave room to see the end of the stream): nothing is consumed
    /// ([`BufReader::buffer`] holds the start of the line; [`BufReader::consume`] it to skip
    /// on). Otherwise as [`TcpStream::recv`]; `InvalidState` when the buffer was lost.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>> {
        // Bytes of the buffered part already searched for the newline.
        let mut searched = 0;
        let (start, end) = loop {
            let buffered = self.buffer();
            if let Some(at) = buffered[searched..].iter().position(|&b| b == b'\n') {
                let newline = self.pos + searched + at;
                let start = self.pos;
                self.pos = newline + 1;
                break (start, newline);
            }
            searched = buffered.len();
            if self.at_end {
                if buffered.is_empty() {
                    return Ok(None);
                }
                let start = self.pos;
                self.pos += buffered.len();
                break (start, self.pos);
            }
            self.receive_more("next_line").await?;
        };
        let buf = self.buf.as_ref().ok_or(buffer_lost("next_line"))?;
        let line = &buf[start..end];
        Ok(Some(line.strip_suffix(b"\r").unwrap_or(line)))
    }
}

/// How many of `buffered` to take, at most `room`: up to and including the first `delimiter`
/// if it fits (then true), else as many as fit.
fn scan(buffered: &[u8], delimiter: u8, room: usize) -> (usize, bool) {
    match buffered.iter().position(|&b| b == delimiter) {
        Some(at) if at < room => (at + 1, true),
        _ => (buffered.len().min(room), false),
    }
}

impl<R> core::fmt::Debug for BufReader<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufReader")
            .field("buf", &self.buf)
            .field("pos", &self.pos)
            .field("at_end", &self.at_end)
            .finish_non_exhaustive()
    }
}

/// A buffered writer over a connection: small writes gather in its [`IoBuf`] and go out in
/// one send when it is full or on [`BufWriter::flush`]. Implements
/// `embedded_io_async::Write` (error type [`Error`]).
///
/// Dropping it does not flush (a drop cannot wait): flush first, or the buffered bytes are
/// lost.
///
/// ```no_run
/// # async fn demo(stream: &wsk_net::TcpStream) -> wsk_net::Result<()> {
/// use wsk_net::io::{BufWriter, embedded_io_async::Write};
/// let mut writer = BufWriter::new(stream, 1024)?;
/// writer.write_all(b"HELLO ").await?;
/// writer.write_all(b"world\n").await?;
/// writer.flush().await?; // one send
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Create, call, poll and drop at <= `DISPATCH_LEVEL`.
pub struct BufWriter<W> {
    sink: W,
    /// Bytes written and not sent yet; `None` once a dropped send took the buffer.
    buf: Option<IoBuf>,
}

impl<W: SendSide> BufWriter<W> {
    /// A writer on `sink` with a buffer of `capacity` bytes (the largest single send). See
    /// the example on [`BufWriter`].
    ///
    /// # Errors
    /// As [`IoBuf::with_capacity`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn new(sink: W, capacity: usize) -> Result<Self> {
        Ok(Self {
            sink,
            buf: Some(IoBuf::with_capacity(capacity)?),
        })
    }

    /// The sink, and the buffer with the bytes not sent yet (`None` when a dropped send took
    /// it).
    ///
    /// ```no_run
    /// # fn demo(writer: wsk_net::io::BufWriter<wsk_net::TcpStream>) {
    /// let (stream, unsent) = writer.into_parts();
    /// # let _ = (stream, unsent);
    /// # }
    /// ```
    ///
    /// # IRQL
    /// Any.
    pub fn into_parts(self) -> (W, Option<IoBuf>) {
        (self.sink, self.buf)
    }

    /// Buffers as much of `bytes` as fits, sending the buffer first when it is full; returns
    /// how many were taken (0 only for empty `bytes`). The `embedded_io_async::Write::write`
    /// of this writer.
    ///
    /// ```no_run
    /// # async fn demo(writer: &mut wsk_net::io::BufWriter<&wsk_net::TcpStream>) -> wsk_net::Result<()> {
    /// let taken = writer.write(b"partial").await?;
    /// assert!(taken > 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::send`]; `InvalidState` when the buffer was lost.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<usize> {
        if bytes.is_empty() {
            return Ok(0);
        }
        let full = self
            .buf
            .as_ref()
            .ok_or(buffer_lost("write"))?
            .spare_capacity()
            == 0;
        if full {
            self.flush().await?;
        }
        let buf = self.buf.as_mut().ok_or(buffer_lost("write"))?;
        let taken = bytes.len().min(buf.spare_capacity());
        buf.extend_from_slice(&bytes[..taken])?;
        Ok(taken)
    }

    /// Sends what is buffered (nothing to do when empty). See the example on [`BufWriter`].
    ///
    /// # Errors
    /// As [`TcpStream::send`] (the bytes stay buffered then); `InvalidState` when the buffer
    /// was lost.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn flush(&mut self) -> Result<()> {
        let buf = self.buf.take().ok_or(buffer_lost("flush"))?;
        let (sent, mut buf) = self.sink.send_stream().send(buf).await;
        if sent.is_ok() {
            buf.clear();
        }
        self.buf = Some(buf);
        sent.map(drop)
    }
}

impl<W> core::fmt::Debug for BufWriter<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BufWriter")
            .field("buf", &self.buf)
            .finish_non_exhaustive()
    }
}

/// `embedded-io`'s kinds for this crate's errors: the same name where `embedded-io` has one;
/// `Cancelled` is `Interrupted` (the operation may be retried), `NoResources` is
/// `OutOfMemory`, and what it lacks (unreachable host or network, a socket in the wrong
/// state, a call above the IRQL it needs) is `Other`.
impl embedded_io_async::Error for Error {
    fn kind(&self) -> embedded_io_async::ErrorKind {
        use embedded_io_async::ErrorKind as Io;
        match self.kind() {
            ErrorKind::ConnectionReset => Io::ConnectionReset,
            ErrorKind::ConnectionRefused => Io::ConnectionRefused,
            ErrorKind::ConnectionAborted => Io::ConnectionAborted,
            ErrorKind::NotConnected => Io::NotConnected,
            ErrorKind::TimedOut => Io::TimedOut,
            ErrorKind::Cancelled => Io::Interrupted,
            ErrorKind::AddrInUse => Io::AddrInUse,
            ErrorKind::PermissionDenied => Io::PermissionDenied,
            ErrorKind::AddrNotAvailable => Io::AddrNotAvailable,
            ErrorKind::InvalidInput => Io::InvalidInput,
            ErrorKind::NoResources => Io::OutOfMemory,
            ErrorKind::Unsupported => Io::Unsupported,
            ErrorKind::NotFound => Io::NotFound,
            ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::InvalidState
            | ErrorKind::WrongIrql
            | ErrorKind::Other => Io::Other,
        }
    }
}

impl<R: RecvSide> ErrorType for BufReader<R> {
    type Error = Error;
}

impl<W: SendSide> ErrorType for BufWriter<W> {
    type Error = Error;
}

/// `read` copies from the buffer, receiving first when it is empty; `Ok(0)` at the end of the
/// stream (or for an empty `out`).
impl<R: RecvSide> embedded_io_async::Read for BufReader<R> {
    async fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let buffered = self.fill_buf().await?;
        let n = buffered.len().min(out.len());
        out[..n].copy_from_slice(&buffered[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: RecvSide> embedded_io_async::BufRead for BufReader<R> {
    async fn fill_buf(&mut self) -> Result<&[u8]> {
        BufReader::fill_buf(self).await
    }

    fn consume(&mut self, amount: usize) {
        BufReader::consume(self, amount);
    }
}

impl<W: SendSide> embedded_io_async::Write for BufWriter<W> {
    async fn write(&mut self, bytes: &[u8]) -> Result<usize> {
        BufWriter::write(self, bytes).await
    }

    async fn flush(&mut self) -> Result<()> {
        BufWriter::flush(self).await
    }
}
