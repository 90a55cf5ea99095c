//! The in-memory network: loopback TCP and UDP between the sockets of one booted kernel,
//! without host sockets, for where those cannot run (Miri) or are not wanted.
//!
//! It stands behind the same provider as the host sockets do (`Provider::Memory` in the
//! kernel's `Config`): the WSK calls, the IRP queues, cancellation, the verifier and the
//! completion machinery (inline, deferred, the fault plans) are shared; only the byte moving
//! differs. Each connection is two bounded pipes; a listener has a backlog of connections the
//! peer's connect already made (a connect completes at once when someone listens, and fails
//! with `ConnectionRefused` otherwise, as loopback TCP does); a UDP socket has an inbox.
//! Every state change a peer could be waiting for (bytes written or read, FIN, reset, a
//! connection queued, a datagram queued) wakes the reactor, which then makes progress on
//! every socket, as the host-socket reactor does on readiness events.
//!
//! The I/O results are `std::io` results with the kinds Linux gives (`WouldBlock`,
//! `ConnectionReset`, `BrokenPipe`, `AddrInUse`, ...), so the provider maps them to NTSTATUS
//! exactly as for host sockets.
//!
//! Where it differs from host loopback: no MSS or Nagle, pipes hold [`PIPE_CAPACITY`] bytes,
//! an inbox [`INBOX_DATAGRAMS`] datagrams (more are dropped, as UDP may), ports come from
//! [`FIRST_EPHEMERAL_PORT`] up, and socket options are bookkeeping only.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use std::vec::Vec;

use crate::ntos::fast_hash::{FastMap, FastSet};

/// Bytes one direction of a connection holds before a writer has to wait (Linux's loopback
/// default is larger; small enough here that tests see senders wait for receivers). Under
/// Miri, which copies a byte in microseconds, 4 KiB: a test reaches the full pipe with little
/// data.
pub(super) const PIPE_CAPACITY: usize = if cfg!(miri) { 4 * 1024 } else { 64 * 1024 };
/// Datagrams an inbox holds before further ones are dropped.
pub(super) const INBOX_DATAGRAMS: usize = 64;
/// The first port handed out for port 0 (IANA's dynamic range, as Windows uses).
pub(super) const FIRST_EPHEMERAL_PORT: u16 = 49_152;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One booted kernel's in-memory network (cheap to clone: a handle).
#[derive(Clone)]
pub(super) struct Network(Arc<Shared>);

struct Shared {
    table: Mutex<Table>,
    /// Set by every change a peer may wait for, cleared by the reactor's wait.
    woken: Mutex<bool>,
    wake: Condvar,
}

/// Which addresses are taken and who listens or receives where.
#[derive(Default)]
struct Table {
    /// Bound stream addresses (listening, connecting or connected sockets).
    streams: FastSet<SocketAddr>,
    /// Listening sockets by their bound address.
    listeners: FastMap<SocketAddr, Arc<Mutex<Backlog>>>,
    /// Bound datagram sockets' inboxes by their address.
    datagrams: FastMap<SocketAddr, Arc<Mutex<Inbox>>>,
    next_port: u16,
}

impl Table {
    /// Whether `addr` conflicts with a taken address in `taken` (same port, and the same IP or
    /// either one the unspecified address).
    fn conflicts<'a>(taken: impl IntoIterator<Item = &'a SocketAddr>, addr: SocketAddr) -> bool {
        taken.into_iter().any(|t| {
            t.port() == addr.port()
                && t.is_ipv6() == addr.is_ipv6()
                && (t.ip() == addr.ip() || t.ip().is_unspecified() || addr.ip().is_unspecified())
        })
    }

    /// `addr` with a free port in place of port 0 (for the map `datagram` says).
    fn with_port(&mut self, addr: SocketAddr, datagram: bool) -> io::Result<SocketAddr> {
        if addr.port() != 0 {
            return Ok(addr);
        }
        for _ in 0..=(u16::MAX - FIRST_EPHEMERAL_PORT) {
            if self.next_port < FIRST_EPHEMERAL_PORT {
                self.next_port = FIRST_EPHEMERAL_PORT;
            }
            let candidate = SocketAddr::new(addr.ip(), self.next_port);
            self.next_port = self.next_port.wrapping_add(1);
            let taken = if datagram {
                Self::conflicts(self.datagrams.keys(), candidate)
            } else {
                Self::conflicts(&self.streams, candidate)
            };
            if !taken {
                return Ok(candidate);
            }
        }
        Err(io::Error::from(io::ErrorKind::AddrInUse))
    }

    /// Who receives what is sent to `to`: the exact address, else the unspecified address
    /// on its port.
    fn find<V: Clone>(map: &FastMap<SocketAddr, V>, to: SocketAddr) -> Option<V> {
        map.get(&to).cloned().or_else(|| {
            let any: IpAddr = if to.is_ipv6() {
                IpAddr::from([0u16; 8])
            } else {
                IpAddr::from([0u8; 4])
            };
            map.get(&SocketAddr::new(any, to.port())).cloned()
        })
    }
}

impl Network {
    /// An empty network.
    pub(super) fn new() -> Self {
        Self(Arc::new(Shared {
            table: Mutex::new(Table::default()),
            woken: Mutex::new(false),
            wake: Condvar::new(),
        }))
    }

    /// Wakes the reactor: something a socket may wait for changed.
    pub(super) fn wake(&self) {
        *lock(&self.0.woken) = true;
        self.0.wake.notify_all();
    }

    /// The reactor's wait: until [`Network::wake`] or `timeout` (none: until woken).
    pub(super) fn wait(&self, timeout: Option<Duration>) {
        let mut woken = lock(&self.0.woken);
        if !*woken {
            woken = match timeout {
                Some(t) => {
                    self.0
                        .wake
                        .wait_timeout(woken, t)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .0
                    .wake
                    .wait(woken)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
        *woken = false;
    }

    /// A new socket, not bound yet.
    pub(super) fn unbound(&self, datagram: bool) -> Unbound {
        Unbound {
            net: self.clone(),
            datagram,
            local: None,
        }
    }
}

/// A created socket, maybe bound, neither listening nor connected.
pub(super) struct Unbound {
    net: Network,
    datagram: bool,
    local: Option<SocketAddr>,
}

impl Unbound {
    /// Takes `addr` (port 0: a free port).
    pub(super) fn bind(&mut self, addr: SocketAddr) -> io::Result<()> {
        if self.local.is_some() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut table = lock(&self.net.0.table);
        let addr = table.with_port(addr, self.datagram)?;
        let taken = if self.datagram {
            Table::conflicts(table.datagrams.keys(), addr)
        } else {
            Table::conflicts(&table.streams, addr)
        };
        if taken {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        if !self.datagram {
            table.streams.insert(addr);
        }
        self.local = Some(addr);
        Ok(())
    }

    /// The bound address.
    pub(super) fn local(&self) -> io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
    }

    /// Listens on the bound address.
    pub(super) fn listen(mut self) -> io::Result<Listener> {
        let local = self.local()?;
        let backlog = Arc::new(Mutex::new(Backlog::default()));
        lock(&self.net.0.table)
            .listeners
            .insert(local, Arc::clone(&backlog));
        // The address now belongs to the listener.
        self.local = None;
        Ok(Listener {
            net: self.net.clone(),
            local,
            backlog,
        })
    }

    /// Connects to `remote`: at once when a listener is there (the connection waits in its
    /// backlog), `ConnectionRefused` otherwise.
    pub(super) fn connect(mut self, remote: SocketAddr) -> Result<Stream, (Self, io::Error)> {
        let Some(local) = self.local else {
            return Err((self, io::Error::from(io::ErrorKind::InvalidInput)));
        };
        let Some(backlog) = Table::find(&lock(&self.net.0.table).listeners, remote) else {
            return Err((self, io::Error::from(io::ErrorKind::ConnectionRefused)));
        };
        // A socket bound to the unspecified address speaks from the address it reached.
        let local = if local.ip().is_unspecified() {
            SocketAddr::new(remote.ip(), local.port())
        } else {
            local
        };
        let there = Arc::new(Mutex::new(Pipe::default()));
        let back = Arc::new(Mutex::new(Pipe::default()));
        let accepted = Stream {
            net: self.net.clone(),
            local: remote,
            peer: local,
            port: None,
            rx: Arc::clone(&there),
            tx: Arc::clone(&back),
        };
        lock(&backlog).pending.push_back(accepted);
        let port = self.local.take();
        self.net.wake();
        Ok(Stream {
            net: self.net.clone(),
            local,
            peer: remote,
            port,
            rx: back,
            tx: there,
        })
    }

    /// Becomes a datagram socket on the bound address.
    pub(super) fn datagrams(mut self) -> io::Result<Datagram> {
        let local = self
            .local
            .take()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let mut table = lock(&self.net.0.table);
        if Table::conflicts(table.datagrams.keys(), local) {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        table.datagrams.insert(local, Arc::clone(&inbox));
        drop(table);
        Ok(Datagram {
            net: self.net.clone(),
            local,
            inbox,
        })
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // A datagram socket's address is taken only when it becomes one (`datagrams`).
        if let Some(local) = self.local.take()
            && !self.datagram
        {
            lock(&self.net.0.table).streams.remove(&local);
        }
    }
}

/// Connections made to a listener, not accepted yet.
#[derive(Default)]
struct Backlog {
    pending: VecDeque<Stream>,
}

/// A listening socket.
pub(super) struct Listener {
    net: Network,
    local: SocketAddr,
    backlog: Arc<Mutex<Backlog>>,
}

impl Listener {
    /// The next connection made to it, or `WouldBlock`.
    pub(super) fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let next = lock(&self.backlog).pending.pop_front();
        next.map(|s| {
            let peer = s.peer;
            (s, peer)
        })
        .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }

    /// Its address.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut table = lock(&self.net.0.table);
        table.listeners.remove(&self.local);
        table.streams.remove(&self.local);
        drop(table);
        // Connections nobody accepted are reset, as a closed listener's backlog is.
        let pending = core::mem::take(&mut lock(&self.backlog).pending);
        for stream in pending {
            stream.release(true);
        }
    }
}

/// One direction of a connection.
#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    /// The writer sent FIN.
    fin: bool,
    /// The connection was reset.
    reset: bool,
    /// The reader closed its socket: further writes reset the connection.
    reader_gone: bool,
}

/// A connected stream socket's end.
pub(super) struct Stream {
    net: Network,
    local: SocketAddr,
    peer: SocketAddr,
    /// The bound address this end holds in the table (the connecting end's), released on close.
    port: Option<SocketAddr>,
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
}

impl Stream {
    /// Reads what has arrived: `Ok(0)` after the peer's FIN, `WouldBlock` when nothing has.
    pub(super) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rx = lock(&self.rx);
        if rx.reset {
            return Err(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        if rx.data.is_empty() {
            return if rx.fin || buf.is_empty() {
                Ok(0)
            } else {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            };
        }
        let n = buf.len().min(rx.data.len());
        for (dst, src) in buf.iter_mut().zip(rx.data.drain(..n)) {
            *dst = src;
        }
        drop(rx);
        // Room for a waiting writer.
        self.net.wake();
        Ok(n)
    }

    /// Writes what fits: `WouldBlock` when the pipe is full, `BrokenPipe` after our FIN or
    /// the peer's close, `ConnectionReset` after a reset.
    pub(super) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut tx = lock(&self.tx);
        if tx.reset {
            return Err(io::Error::from(io::ErrorKind::ConnectionReset));
        }
        if tx.reader_gone {
            // Linux answers data for a closed socket with RST; the writer sees EPIPE.
            tx.reset = true;
            drop(tx);
            self.reset_rx();
            self.net.wake();
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        if tx.fin {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let n = buf.len().min(PIPE_CAPACITY - tx.data.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        tx.data.extend(&buf[..n]);
        drop(tx);
        self.net.wake();
        Ok(n)
    }

    fn reset_rx(&self) {
        let mut rx = lock(&self.rx);
        rx.reset = true;
        rx.data.clear();
    }

    /// Sends FIN.
    pub(super) fn shutdown_write(&self) {
        lock(&self.tx).fin = true;
        self.net.wake();
    }

    /// The peer's reset, if one came (the socket's pending error).
    pub(super) fn take_error(&self) -> Option<io::Error> {
        lock(&self.rx)
            .reset
            .then(|| io::Error::from(io::ErrorKind::ConnectionReset))
    }

    /// Its address.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Closes this end: abortive (RST) when asked, or when unread data is left (as Linux
    /// does); otherwise FIN, and the peer's later writes reset the connection.
    pub(super) fn release(mut self, abortive: bool) {
        let unread = !lock(&self.rx).data.is_empty();
        if abortive || unread {
            let mut tx = lock(&self.tx);
            tx.reset = true;
            tx.data.clear();
            drop(tx);
            self.reset_rx();
        } else {
            lock(&self.tx).fin = true;
            lock(&self.rx).reader_gone = true;
        }
        if let Some(port) = self.port.take() {
            lock(&self.net.0.table).streams.remove(&port);
        }
        self.net.wake();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(port) = self.port.take() {
            lock(&self.net.0.table).streams.remove(&port);
        }
    }
}

/// Datagrams waiting for a receive.
#[derive(Default)]
struct Inbox {
    datagrams: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// A bound datagram socket.
pub(super) struct Datagram {
    net: Network,
    local: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
}

impl Datagram {
    /// Queues `data` at the socket bound to `to`; lost (but sent) when nobody is bound there
    /// or its inbox is full, as UDP may lose it.
    pub(super) fn send_to(&self, data: &[u8], to: SocketAddr) -> usize {
        let inbox = Table::find(&lock(&self.net.0.table).datagrams, to);
        if let Some(inbox) = inbox {
            let mut inbox = lock(&inbox);
            if inbox.datagrams.len() < INBOX_DATAGRAMS {
                let from = if self.local.ip().is_unspecified() {
                    SocketAddr::new(to.ip(), self.local.port())
                } else {
                    self.local
                };
                inbox.datagrams.push_back((from, data.to_vec()));
            }
            drop(inbox);
            self.net.wake();
        }
        data.len()
    }

    /// The next datagram (truncated to `buf`) and its sender, or `WouldBlock`.
    pub(super) fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some((from, data)) = lock(&self.inbox).datagrams.pop_front() else {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        };
        let n = buf.len().min(data.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok((n, from))
    }

    /// Its address.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Datagram {
    fn drop(&mut self) {
        lock(&self.net.0.table).datagrams.remove(&self.local);
    }
}

/// Name resolution on the in-memory network, which has only the loopback addresses: an
/// address literal, or `localhost` (IPv4 first, as Windows orders it); `None` for any other
/// name (`STATUS_NOT_FOUND`, as for an unknown name on the host).
pub(super) fn resolve(node: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(std::vec![SocketAddr::new(ip, port)]);
    }
    node.eq_ignore_ascii_case("localhost").then(|| {
        std::vec![
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port),
            SocketAddr::new(IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1u16]), port),
        ]
    })
}
