//! [`TcpReadHalf`] and [`TcpWriteHalf`]: a [`TcpStream`] split so that one task receives
//! while another sends. No allocation: both halves refer to the one socket object, each with
//! its own reference, and the drop of the second closes the socket as dropping the stream
//! would.

use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use super::events::{EventCounts, Indicated, RecvEvents};
use super::stream::{Disconnect, Recv, SendAll, TcpStream};
use crate::buf::IoBuf;
use crate::error::Result;
use crate::io::RecvAppend;
use crate::raw::SocketInner;
use crate::socket::Handle;

/// The receiving half of a [`TcpStream`], from [`TcpStream::into_split`]: `'static`, `Send`,
/// for a task of its own. It receives ([`TcpReadHalf::recv`], [`TcpReadHalf::recv_exact`],
/// [`TcpReadHalf::recv_append`]) and can sit under a [`BufReader`](crate::io::BufReader).
///
/// Event-driven receive works on the half as on the stream: receive events enabled on the
/// stream before the split (or on the half, [`TcpReadHalf::enable_receive_events`]) deliver
/// through [`TcpReadHalf::recv_events`] and [`TcpReadHalf::indicated`].
///
/// Dropping it alone leaves the connection open for the write half; dropping both closes the
/// socket exactly as dropping the stream does. With receive events on, dropping it alone also
/// gives every retained indication back to WSK at once and refuses later ones
/// (`STATUS_DATA_NOT_ACCEPTED`): WSK keeps what arrives, as it does for a stream nobody
/// receives on.
///
/// # IRQL
/// Every method: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.
pub struct TcpReadHalf {
    stream: ManuallyDrop<TcpStream>,
}

/// The sending half of a [`TcpStream`], from [`TcpStream::into_split`]: `'static`, `Send`,
/// for a task of its own. It sends ([`TcpWriteHalf::send`], [`TcpWriteHalf::send_nodelay`])
/// and can sit under a [`BufWriter`](crate::io::BufWriter).
///
/// Dropping it alone leaves the connection open for the read half (no FIN is sent); dropping
/// both closes the socket exactly as dropping the stream does.
///
/// # IRQL
/// Every method: call and poll at <= `DISPATCH_LEVEL`; drop at <= `DISPATCH_LEVEL`.
pub struct TcpWriteHalf {
    stream: ManuallyDrop<TcpStream>,
}

impl TcpStream {
    /// Splits the stream into a receiving and a sending half that can go to separate tasks
    /// (both `'static`, no allocation). One receive and one send may be in flight at once,
    /// as on the stream itself.
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// use wsk_net::IoBuf;
    /// let (reader, writer) = stream.into_split();
    /// // e.g. `reader` to one spawned task, `writer` to another:
    /// let receiving = async move {
    ///     let (n, _buf) = reader.recv(IoBuf::with_capacity(4096)?).await;
    ///     n.map(drop)
    /// };
    /// let sending = async move {
    ///     let (sent, _buf) = writer.send(IoBuf::from_slice(b"hello")?).await;
    ///     sent.map(drop)
    /// };
    /// # let _ = (receiving, sending);
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn into_split(self) -> (TcpReadHalf, TcpWriteHalf) {
        // A second handle on the same socket object, with a reference of its own. The two
        // streams are never dropped as such while split: see `drop_half`.
        let second = TcpStream {
            handle: Handle::from_inner(self.handle.adopt_ref()),
        };
        (
            TcpReadHalf {
                stream: ManuallyDrop::new(self),
            },
            TcpWriteHalf {
                stream: ManuallyDrop::new(second),
            },
        )
    }
}

/// Drops one half's stream: the last of the two drops it as a stream (which closes the
/// socket); the first only gives up its reference.
fn drop_half(stream: &mut ManuallyDrop<TcpStream>) {
    let inner = stream.handle.inner();
    if inner.flags().drop_half() {
        // SAFETY: the stream is dropped once, here, and never used again (we are in the
        // half's drop).
        unsafe { ManuallyDrop::drop(stream) };
    } else {
        let inner = NonNull::from(inner);
        // SAFETY: the reference this half's handle owns, given up here; the handle itself is
        // never dropped, and the other half's reference keeps the object alive.
        unsafe { SocketInner::release(inner) };
    }
}

impl Drop for TcpReadHalf {
    fn drop(&mut self) {
        // Nobody receives any more: retained indications go back to WSK now.
        super::events::reader_gone(self.stream.handle.inner());
        drop_half(&mut self.stream);
    }
}

impl Drop for TcpWriteHalf {
    fn drop(&mut self) {
        drop_half(&mut self.stream);
    }
}

impl TcpReadHalf {
    /// [`TcpStream::recv`] on the connection.
    ///
    /// # Errors
    /// As [`TcpStream::recv`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv(&self, buf: IoBuf) -> Recv<'_> {
        self.stream.recv(buf)
    }

    /// [`TcpStream::recv_exact`] on the connection.
    ///
    /// # Errors
    /// As [`TcpStream::recv_exact`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_exact(&self, buf: IoBuf, len: usize) -> Recv<'_> {
        self.stream.recv_exact(buf, len)
    }

    /// [`TcpStream::recv_append`] on the connection.
    ///
    /// # Errors
    /// As [`TcpStream::recv_append`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_append(&self, buf: IoBuf) -> RecvAppend<'_> {
        self.stream.recv_append(buf)
    }

    /// [`TcpStream::enable_receive_events`] on the connection: the half receives with
    /// [`TcpReadHalf::recv_events`] from then on. Unneeded when the stream had them enabled
    /// before the split (a no-op then).
    ///
    /// # Errors
    /// As [`TcpStream::enable_receive_events`].
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn enable_receive_events(&self) -> Result<bool> {
        self.stream.enable_receive_events()
    }

    /// [`TcpStream::recv_events`] on the connection: what the receive event callbacks
    /// indicate, copied in place or from a retained indication; an ordinary receive without
    /// events.
    ///
    /// ```no_run
    /// # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
    /// stream.enable_receive_events()?;
    /// let (reader, _writer) = stream.into_split();
    /// reader.indicated().await; // idle without a buffer
    /// let (n, buf) = reader.recv_events(wsk_net::IoBuf::with_capacity(4096)?).await;
    /// let _data = &buf[..n?];
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::recv_events`].
    ///
    /// # IRQL
    /// Poll and drop at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn recv_events(&self, buf: IoBuf) -> RecvEvents<'_> {
        self.stream.recv_events(buf)
    }

    /// [`TcpStream::indicated`] on the connection: waits, holding no buffer, until a
    /// [`TcpReadHalf::recv_events`] would finish at once.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use]
    pub fn indicated(&self) -> Indicated<'_> {
        self.stream.indicated()
    }

    /// [`TcpStream::has_indicated`] on the connection.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (takes the stream's spin lock).
    #[must_use]
    pub fn has_indicated(&self) -> bool {
        self.stream.has_indicated()
    }

    /// [`TcpStream::receive_event_counts`] on the connection.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (takes the stream's spin lock).
    #[must_use]
    pub fn receive_event_counts(&self) -> EventCounts {
        self.stream.receive_event_counts()
    }

    /// The stream both halves share (crate-internal: the buffered reader's source).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl TcpWriteHalf {
    /// [`TcpStream::send`] on the connection.
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use = "a send does nothing until awaited"]
    pub fn send(&self, buf: IoBuf) -> SendAll<'_> {
        self.stream.send(buf)
    }

    /// [`TcpStream::send_nodelay`] on the connection.
    ///
    /// # Errors
    /// As [`TcpStream::send`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    #[must_use = "a send does nothing until awaited"]
    pub fn send_nodelay(&self, buf: IoBuf) -> SendAll<'_> {
        self.stream.send_nodelay(buf)
    }

    /// [`TcpStream::disconnect`] on the connection: with [`Disconnect::Graceful`], FIN after
    /// the pending sends, while the read half goes on receiving until the peer closes.
    ///
    /// ```no_run
    /// # async fn demo(writer: wsk_net::TcpWriteHalf) -> wsk_net::Result<()> {
    /// let (sent, _) = writer.send(wsk_net::IoBuf::from_slice(b"QUIT\r\n")?).await;
    /// sent?;
    /// writer.disconnect(wsk_net::Disconnect::Graceful).await?; // the peer sees EOF
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`TcpStream::disconnect`].
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn disconnect(&self, how: Disconnect) -> Result<()> {
        self.stream.disconnect(how).await
    }

    /// The stream both halves share (crate-internal: the buffered writer's sink).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl core::fmt::Debug for TcpReadHalf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpReadHalf").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for TcpWriteHalf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpWriteHalf").finish_non_exhaustive()
    }
}

/// The socket object under `stream` (crate-internal: the appending receive of `crate::io`
/// issues its operation on it).
pub(crate) fn socket_of(stream: &TcpStream) -> &SocketInner {
    stream.handle.inner()
}
