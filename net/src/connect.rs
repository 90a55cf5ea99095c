//! Connect by name, from any task: [`lookup_host`] resolves a host name wherever the calling
//! task runs, [`TcpStream::connect_host`] tries each address in turn (as std's and tokio's
//! `connect` do) and [`UdpSocket::send_to_host`] sends a datagram to a named host.
//!
//! `WskGetAddressInfo` needs `PASSIVE_LEVEL`, and a DPC runner polls its tasks at
//! `DISPATCH_LEVEL`. So above `PASSIVE_LEVEL` the resolution is handed to the runner's system
//! thread (`wsk_executor::run_at_passive`), which runs it at `PASSIVE_LEVEL` and wakes the
//! task. The lookup lives in nonpaged pool, shared by the task's future and the thread, so a
//! future dropped mid-lookup (a timeout, an abort, the runner's shutdown) never leaves the
//! thread writing into freed memory; the runner's shutdown waits for the thread, so no lookup
//! outlives the runner. At `PASSIVE_LEVEL` (a passive runner's task, `block_on`) it resolves
//! inline, and a literal IP address skips resolution altogether.

use core::cell::UnsafeCell;
use core::future::Future;
use core::mem::size_of;
use core::net::{IpAddr, SocketAddr};
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll};

use wsk_executor::raw::AtomicWaker;
use wsk_executor::{PassiveWork, block_on, run_at_passive};
use wsk_sys as sys;

use crate::buf::IoBuf;
use crate::client::{ClientInner, WskClient};
use crate::error::{Error, ErrorKind, Result};
use crate::resolve::{Addresses, resolve, resolve_on};
use crate::tcp::TcpStream;
use crate::udp::UdpSocket;

/// Pool tag of lookups handed to a runner's thread: `WskL`.
const LOOKUP_TAG: u32 = u32::from_le_bytes(*b"WskL");

/// The longest host name accepted, in UTF-8 bytes: 255 UTF-16 units (resolve's limit) take at
/// most 3 bytes each.
const MAX_HOST_BYTES: usize = 255 * 3;

/// Resolves `host` and pairs each address with `port`, from a task polled at any IRQL <=
/// `DISPATCH_LEVEL`: as [`resolve`], which it calls at `PASSIVE_LEVEL`; above it the
/// resolution runs on the polling runner's system thread. A literal IPv4 or IPv6 address
/// (`"192.0.2.7"`, `"::1"`, `"[::1]"`) is returned as is, without resolution. The analogue of
/// tokio's `lookup_host`.
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// // In a DPC runner's task:
/// let addrs = wsk_net::lookup_host(client, "localhost", 7).await?;
/// # let _ = addrs;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`resolve`] (`NotFound` when nothing resolved, `InvalidInput` for an empty or too long
/// name); [`ErrorKind::WrongIrql`] above `PASSIVE_LEVEL` when the task is not polled by a
/// running `wsk_executor::Runner` (no thread to hand the resolution to); `NoResources`.
///
/// # IRQL
/// Poll at <= `DISPATCH_LEVEL`.
pub async fn lookup_host(client: &WskClient, host: &str, port: u16) -> Result<Addresses> {
    if let Some(ip) = literal_ip(host) {
        let mut one = Addresses::new();
        // Capacity 16: the first push always fits.
        let _ = one.push(SocketAddr::new(ip, port));
        return Ok(one);
    }
    if sys::KeGetCurrentIrql() == sys::PASSIVE_LEVEL {
        return resolve(client, host, port).await;
    }
    if host.is_empty() || host.len() > MAX_HOST_BYTES {
        return Err(Error::new(ErrorKind::InvalidInput, "lookup_host"));
    }
    let lookup = Lookup::new(client, host, port)?;
    LookupFuture {
        lookup,
        queued: false,
    }
    .await
}

/// `host` as an IP address: plain, or an IPv6 address in brackets.
fn literal_ip(host: &str) -> Option<IpAddr> {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(host);
    unbracketed.parse().ok()
}

impl TcpStream {
    /// Connects to `host` (a name or a literal IP address) on `port`, from any task: resolves
    /// it with [`lookup_host`] (on the runner's thread when polled above `PASSIVE_LEVEL`), then
    /// tries each address in turn, in the resolver's order, until one connects; fails with the
    /// last address's error, as std and tokio do.
    ///
    /// Bound it as a whole with `wsk_executor::timeout`: dropping it cancels the connect in
    /// flight and abandons the lookup safely.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
    /// // In a DPC runner's task, at DISPATCH_LEVEL:
    /// let stream = wsk_net::TcpStream::connect_host(client, "localhost", 7).await?;
    /// # let _ = stream;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`lookup_host`]'s (`NotFound` for a name that does not resolve), then the last
    /// address's [`TcpStream::connect`] error (`ConnectionRefused`, ...).
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn connect_host(client: &WskClient, host: &str, port: u16) -> Result<Self> {
        let addrs = lookup_host(client, host, port).await?;
        let mut last = Error::new(ErrorKind::NotFound, "connect_host");
        for addr in addrs {
            match Self::connect(client, addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl UdpSocket {
    /// Sends `buf` as one datagram to `host` (a name or a literal IP address) on `port`:
    /// resolves it with [`lookup_host`] (from any task), then sends to the first address the
    /// socket can send to (one of its own family), trying each in turn; returns the number of
    /// bytes sent and the buffer.
    ///
    /// ```no_run
    /// # async fn demo(client: &wsk_net::WskClient, socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::from_slice(b"ping")?;
    /// let (sent, _buf) = socket.send_to_host(client, buf, "localhost", 9).await;
    /// sent?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`lookup_host`]'s, then the last address's [`UdpSocket::send_to`] error.
    ///
    /// # IRQL
    /// Poll at <= `DISPATCH_LEVEL`.
    pub async fn send_to_host(
        &self,
        client: &WskClient,
        mut buf: IoBuf,
        host: &str,
        port: u16,
    ) -> (Result<usize>, IoBuf) {
        let addrs = match lookup_host(client, host, port).await {
            Ok(addrs) => addrs,
            Err(e) => return (Err(e), buf),
        };
        let mut last = Error::new(ErrorKind::NotFound, "send_to_host");
        for addr in addrs {
            let (sent, back) = self.send_to(buf, addr).await;
            buf = back;
            match sent {
                Ok(n) => return (Ok(n), buf),
                Err(e) => last = e,
            }
        }
        (Err(last), buf)
    }
}

/// A lookup handed to a runner's thread, in nonpaged pool: shared by the future and the work
/// (one reference each), freed by the last to let go.
#[repr(C)]
struct Lookup {
    /// First: the thread's pointer to the work is a pointer to the lookup.
    work: PassiveWork,
    references: AtomicUsize,
    /// The client, with a use of it held until the work is done.
    client: NonNull<ClientInner>,
    port: u16,
    host_len: usize,
    host: [u8; MAX_HOST_BYTES],
    /// Set (Release) once `outcome` is written; read (Acquire) before it is taken.
    done: AtomicBool,
    /// Written by the work before `done`, taken by the future after it.
    outcome: UnsafeCell<Option<Result<Addresses>>>,
    waker: AtomicWaker,
}

impl Lookup {
    /// A lookup of `host` with both references held and a use of the client taken.
    fn new(client: &WskClient, host: &str, port: u16) -> Result<NonNull<Self>> {
        // SAFETY: a nonpaged allocation at <= DISPATCH_LEVEL.
        let memory = unsafe { sys::allocate_nonpaged(size_of::<Self>(), LOOKUP_TAG) };
        let Some(lookup) = NonNull::new(memory.cast::<Self>()) else {
            return Err(Error::new(ErrorKind::NoResources, "lookup_host"));
        };
        let mut name = [0_u8; MAX_HOST_BYTES];
        name[..host.len()].copy_from_slice(host.as_bytes());
        // SAFETY: the handle keeps the client alive while borrowed; the use taken here keeps
        // it alive for the work, which gives it back.
        unsafe { client.inner().as_ref() }.add_user();
        // SAFETY: fresh, exclusively owned, suitably aligned (pool allocations are 16-byte
        // aligned) and big enough.
        unsafe {
            lookup.as_ptr().write(Self {
                work: PassiveWork::new(run_lookup),
                references: AtomicUsize::new(2),
                client: client.inner(),
                port,
                host_len: host.len(),
                host: name,
                done: AtomicBool::new(false),
                outcome: UnsafeCell::new(None),
                waker: AtomicWaker::new(),
            });
        }
        Ok(lookup)
    }

    /// The host name copied in by `new`.
    fn host(&self) -> &str {
        core::str::from_utf8(&self.host[..self.host_len]).unwrap_or("")
    }

    /// Gives up one reference; the last frees the lookup (dropping an outcome nobody took).
    ///
    /// # Safety
    /// The caller owns one reference and does not touch the lookup afterwards.
    unsafe fn release(this: NonNull<Self>) {
        // SAFETY: our reference keeps it alive until this decrement.
        let references = &unsafe { this.as_ref() }.references;
        if references.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // SAFETY: the last reference: nobody else reaches it; every field is initialised.
        unsafe { core::ptr::drop_in_place(this.as_ptr()) };
        // SAFETY: allocated by `new` with this tag; dropped above; IRQL <= DISPATCH_LEVEL.
        unsafe { sys::ExFreePoolWithTag(this.as_ptr().cast(), LOOKUP_TAG) };
    }
}

/// The work: resolves at `PASSIVE_LEVEL` on the runner's thread, publishes the outcome, wakes
/// the task, gives back the client's use and its reference.
///
/// # Safety
/// `work` is the first field of a live `Lookup` whose work reference this call owns.
unsafe fn run_lookup(work: NonNull<PassiveWork>) {
    let this = work.cast::<Lookup>();
    // SAFETY: the work's reference keeps the lookup alive until `release` below.
    let lookup = unsafe { this.as_ref() };
    // SAFETY: the client's use taken in `new` keeps it alive until given back below.
    let client = unsafe { lookup.client.as_ref() };
    let outcome = block_on(resolve_on(client, lookup.host(), lookup.port));
    // SAFETY: only the work writes the outcome, once, before `done`; the future reads it only
    // after seeing `done`.
    unsafe { *lookup.outcome.get() = Some(outcome) };
    lookup.done.store(true, Ordering::Release);
    lookup.waker.wake();
    // SAFETY: the use taken in `new`, given back once; not touched afterwards.
    unsafe { ClientInner::release(lookup.client) };
    // SAFETY: the work's reference, given back once; not touched afterwards.
    unsafe { Lookup::release(this) };
}

/// Waits for a lookup's outcome; queues the work on its first poll.
struct LookupFuture {
    lookup: NonNull<Lookup>,
    queued: bool,
}

// SAFETY: the lookup is shared through atomics (references, done, waker) and the outcome
// cell, which the `done` flag hands from the work to the future.
unsafe impl Send for LookupFuture {}

impl Future for LookupFuture {
    type Output = Result<Addresses>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the future's reference keeps the lookup alive.
        let lookup = unsafe { self.lookup.as_ref() };
        lookup.waker.register(cx.waker());
        if !self.queued {
            // SAFETY: the lookup lives (at least) until its work has run, which holds a
            // reference; it is queued once.
            let queued = unsafe { run_at_passive(cx.waker(), self.lookup.cast()) };
            if queued.is_err() {
                // Never queued: the work will not run, so its reference and the client's use
                // are ours to give back (in Drop for the reference, here for the use).
                // SAFETY: the use taken in `new`; the work never runs to give it back.
                unsafe { ClientInner::release(lookup.client) };
                // SAFETY: the work's reference, which it will never give back itself.
                unsafe { Lookup::release(self.lookup) };
                self.queued = true;
                return Poll::Ready(Err(Error::new(ErrorKind::WrongIrql, "lookup_host")));
            }
            self.queued = true;
        }
        if lookup.done.load(Ordering::Acquire) {
            // SAFETY: `done` was published after the outcome was written; the work no longer
            // touches it, and only this future takes it.
            let outcome = unsafe { (*lookup.outcome.get()).take() };
            return Poll::Ready(
                outcome.unwrap_or(Err(Error::new(ErrorKind::InvalidState, "lookup_host"))),
            );
        }
        Poll::Pending
    }
}

impl Drop for LookupFuture {
    fn drop(&mut self) {
        // SAFETY: the future's reference, given back once.
        unsafe { Lookup::release(self.lookup) };
    }
}
