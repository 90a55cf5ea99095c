//! Async Winsock Kernel sockets for Windows kernel drivers.
//!
//! A driver writes ordinary async Rust; this crate issues the IRPs, owns the one completion
//! routine (which records the result, wakes the task and returns
//! `STATUS_MORE_PROCESSING_REQUIRED`), and keeps every buffer, MDL and IRP alive until WSK is
//! done with it, even when a future is dropped mid-flight.
//! How the crates fit together: `docs/ARCHITECTURE.md` in the repository.
//!
//! The echo loop (RFC 862), the whole of a connection handler:
//!
//! ```no_run
//! use wsk_net::{Disconnect, IoBuf, TcpStream};
//!
//! async fn echo(stream: TcpStream) -> wsk_net::Result<()> {
//!     let mut buf = IoBuf::with_capacity(16 * 1024)?;
//!     loop {
//!         let (n, b) = stream.recv(buf).await;        // WskReceive
//!         buf = b;
//!         if n? == 0 {
//!             break;                                   // the peer sent FIN
//!         }
//!         let (sent, b) = stream.send(buf).await;      // WskSend
//!         buf = b;
//!         sent?;
//!     }
//!     stream.disconnect(Disconnect::Graceful).await?;  // WskDisconnect
//!     stream.close().await;                            // WskCloseSocket
//!     Ok(())
//! }
//! ```
//!
//! # IRQL
//! Futures of this crate may be polled at IRQL <= `DISPATCH_LEVEL` (the executor's DPC
//! runner polls at `DISPATCH_LEVEL`), except [`resolve`] and [`WskClient`] registration,
//! deregistration and drop, which need `PASSIVE_LEVEL` and fail with
//! [`ErrorKind::WrongIrql`] above it ([`TcpStream::connect_host`] and
//! [`UdpSocket::send_to_host`] resolve on a `PASSIVE_LEVEL` thread of their own, so they work
//! from any task). Creating and dropping buffers,
//! sockets and futures is allowed at <= `DISPATCH_LEVEL`; pure accessors at any IRQL.
//! [`timeout`] and [`TcpStream::disconnect_within`] need the executor's timer: poll them on a
//! runner or in `wsk_executor::block_on`. Every item says its rule in an `# IRQL` section.
//!
//! # Ownership of buffers
//! Operations take an [`IoBuf`] by value and return it with the result:
//! `recv(buf) -> (Result<usize>, IoBuf)`. While WSK holds the buffer, nobody else can touch it.
//! Dropping the future cancels the IRP; the buffer is freed after the completion routine runs.
//!
//! # Streams, lines and protocol crates
//! [`TcpStream::recv_append`] receives after what a buffer already holds; [`io::BufReader`]
//! reads lines (`next_line`, `read_until`) bounded by its buffer; [`io::BufReader`] and
//! [`io::BufWriter`] implement the `embedded-io-async` traits for `no_std` protocol crates;
//! [`TcpStream::into_split`] gives a read and a write half for two tasks.
//!
//! ```no_run
//! # async fn demo(stream: wsk_net::TcpStream) -> wsk_net::Result<()> {
//! use wsk_net::io::{BufReader, BufWriter, embedded_io_async::Write};
//! let (read_half, write_half) = stream.into_split();
//! let mut lines = BufReader::new(read_half, 1024)?;
//! let mut out = BufWriter::new(write_half, 1024)?;
//! while let Some(line) = lines.next_line().await? {
//!     out.write_all(line).await?;
//!     out.write_all(b"\n").await?;
//!     out.flush().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Event callbacks
//! Instead of a pre-posted receive IRP, WSK can call the driver when data arrives (the
//! low-latency path). [`TcpStream::enable_receive_events`] turns on `WskReceiveEvent` and
//! `WskDisconnectEvent` (`SO_WSK_EVENT_CALLBACK`, no IRP, IRQL <= `DISPATCH_LEVEL`);
//! [`TcpStream::recv_events`] then receives what they indicate. The callback runs at
//! `DISPATCH_LEVEL` under the stream's spin lock: with a receive waiting it copies the data
//! in place into that receive's buffer (`STATUS_SUCCESS`); otherwise it retains the
//! indication (`STATUS_PENDING`) and wakes the task, which copies from it and gives it back
//! with `WskRelease`; past [`RETAINED_MAX`] retained indications it pushes back
//! (`STATUS_DATA_NOT_ACCEPTED`) and the next receive posts a `WskReceive`, which lets WSK
//! indicate again. Nothing retained survives the close. [`TcpStream::disable_receive_events`]
//! goes back to IRPs without losing what was indicated. Datagram sockets have the same with
//! `WskReceiveFromEvent` ([`UdpSocket::enable_receive_events`],
//! [`UdpSocket::recv_from_events`], [`UdpSocket::recv_batch_events`],
//! [`UdpSocket::disable_receive_events`]; back-pressure past [`DATAGRAM_LISTS_MAX`] lists).
//! [`WskClient::set_static_event_callbacks`] enables the connection events for every socket
//! at creation (`WSK_SET_STATIC_EVENT_CALLBACKS`, before the first socket): enabling then asks
//! WSK nothing, and a stream that never enables them still receives everything with
//! [`TcpStream::recv`]. [`TcpStream::ideal_send_backlog`] and
//! [`TcpStream::send_backlog_changed`] (`WskSendBacklogEvent`) say how much to keep in flight.
//! Where the provider has no event callbacks (Wine 8) enabling returns `Ok(false)` and the
//! same receives use IRPs, so one code path serves both:
//!
//! ```no_run
//! # async fn demo(listener: &wsk_net::TcpListener) -> wsk_net::Result<()> {
//! let (stream, _peer) = listener.accept_event_driven().await?;
//! let mut buf = wsk_net::IoBuf::with_capacity(4096)?;
//! loop {
//!     let (n, b) = stream.recv_events(buf).await; // indicated, or a WskReceive without events
//!     if n? == 0 {
//!         break;
//!     }
//!     let (sent, b) = stream.send(b).await;
//!     sent?;
//!     buf = b;
//! }
//! stream.close().await;
//! # Ok(()) }
//! ```
//!
//! # More of WSK
//! Each has its IRQL rule and an example on its item:
//! - connect in one call: [`TcpStream::connect`] and [`TcpStream::connect_from`] are one
//!   `WskSocketConnect` (three calls where the provider lacks it); [`TcpStream::socket_connect`]
//!   has no fallback;
//! - several accepts per listener: [`TcpListener::accept`] from several tasks,
//!   [`TcpListener::incoming_with_depth`];
//! - socket options: buffer sizes, linger, broadcast, multicast, UDP
//!   [`UdpSocket::connect`] and [`UdpSocket::set_send_to_address`], and `control` for any
//!   other (`WskControlSocket` with a [`ControlRequest`]);
//! - zero-copy I/O from and into a caller's MDL chain: [`MdlBuf`] with
//!   [`TcpStream::send_mdl`], [`TcpStream::recv_mdl`], [`UdpSocket::send_to_mdl`],
//!   [`UdpSocket::recv_from_mdl`];
//! - UDP batching: [`DatagramBatch`] with [`UdpSocket::send_batch`] (`WskSendMessages`) and
//!   [`UdpSocket::recv_batch`];
//! - names: [`resolve_with`] (`WskGetAddressInfo` with [`ResolveHints`]) and [`lookup_addr`]
//!   (`WskGetNameInfo`), at `PASSIVE_LEVEL`.
//!
//! # One operation per slot
//! Each socket has one receive, one send and one control operation in flight at most
//! (control: bind, connect, accept, disconnect, options, addresses). A second concurrent
//! operation of the same class on the same socket fails at once with
//! [`ErrorKind::InvalidState`] instead of queueing behind a live one (it only waits while an
//! operation whose future was dropped is still being cancelled).
//!
//! # Closing and deadlines
//! [`TcpStream::close`] and dropping a stream end the connection gracefully, as std and tokio
//! do: FIN after every pending send, then the close, bounded by the stream's close limit
//! ([`TcpStream::set_close_limit`]). A reset is the explicit [`TcpStream::abort`]. Every
//! operation (send, receive, accept, connect, disconnect, UDP, bind, resolve) can be bounded
//! by the one [`timeout`], which cancels it through WSK and returns its buffer.
//!
//! # Errors
//! Every fallible call returns [`Error`]: an [`ErrorKind`] to act on, the `NTSTATUS` when the
//! kernel produced one, and the operation's name. Calls on a closed socket, or on a client
//! that is deregistering, fail with [`ErrorKind::InvalidState`]; functions a provider does not
//! implement (several under Wine) fail with [`ErrorKind::Unsupported`].
#![no_std]

// Unit tests run on the host kernel, which exports the kernel functions wsk-sys declares.
#[cfg(test)]
use wsk_host as _;

mod addr;
mod batch;
mod buf;
mod client;
#[cfg(not(loom))]
mod connect;
mod debug;
mod error;
mod event_cell;
mod event_control;
pub mod io;
mod lookup;
mod mdl;
mod options;
mod raw;
mod resolve;
mod socket;
mod spare;
mod tcp;
mod time;
mod udp;
mod udp_batch;
mod udp_events;

pub use batch::DatagramBatch;
pub use buf::IoBuf;
pub use client::{DeregisterError, Driver, WskClient};
#[cfg(not(loom))]
pub use connect::lookup_host;
pub use error::{Error, ErrorKind, Result};
pub use event_control::StaticEvents;
pub use io::RecvAppend;
pub use lookup::{
    AddressFamily, MAX_HOST_NAME, MAX_SERVICE_NAME, NameInfo, NameInfoFlags, ResolveFlags,
    ResolveHints, SocketType, lookup_addr, resolve_with,
};
pub use mdl::{MdlBuf, MdlRelease};
pub use options::ControlRequest;
pub use resolve::{Addresses, MAX_ADDRESSES, resolve};
pub use socket::BindOptions;
pub use spare::Spares;
pub use tcp::{
    ACCEPT_QUEUE_DEFAULT, ACCEPT_QUEUE_MAX, AcceptEventCounts, AcceptEvents, BufferSource,
    EventCounts, Indicated, RETAINED_MAX, RecvEvents, RecvPooled, SendBacklogChanged,
};
pub use tcp::{
    Accept, Disconnect, Incoming, Recv, SendAll, StreamTransfer, TcpListener, TcpReadHalf,
    TcpStream, TcpWriteHalf, TransferRecv, TransferSend,
};
#[cfg(not(loom))]
pub use time::{CANCEL_GRACE, WithTimeout, timeout};
pub use time::{Cancellable, Escalation, Operation, TimedOutput};
pub use udp::{Received, UdpSocket};
pub use udp_events::{DATAGRAM_LISTS_MAX, DatagramEventCounts};
