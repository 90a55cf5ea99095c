//! The host kernel's WSK provider, driven as a driver drives it: IRPs through the provider's
//! dispatch tables from kernel threads, completion routines that return
//! `STATUS_MORE_PROCESSING_REQUIRED` and signal what the test waits on, real peers from
//! `std::net` on loopback. Every scenario runs under several fault plans (inline, deferred and
//! mixed completion, reordering and delays), each from its own seed.
#![allow(
    clippy::missing_panics_doc,
    clippy::cast_possible_truncation,
    clippy::too_many_lines,
    clippy::many_single_char_names,
    reason = "test code: panics are the failure reports"
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wsk_host::faults::{Completion, ErrorRule, Faults, WskOp};
use wsk_host::{Config, Kernel};
use wsk_sys::{
    ADDRINFOEXW, AF_INET, AF_INET6, DEVICE_OBJECT, ExAllocatePoolWithTag, ExFreePoolWithTag,
    IN_ADDR, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_V6ONLY, IRP, IoAllocateIrp,
    IoAllocateMdl, IoCancelIrp, IoFreeIrp, IoFreeMdl, IoReuseIrp, IoSetCompletionRoutine, MDL,
    MmBuildMdlForNonPagedPool, NS_ALL, NTSTATUS, NonPagedPoolNx, PVOID, SO_KEEPALIVE, SO_REUSEADDR,
    SOCK_DGRAM, SOCK_STREAM, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOL_SOCKET, STATUS_CANCELLED,
    STATUS_CONNECTION_ABORTED, STATUS_CONNECTION_REFUSED, STATUS_CONNECTION_RESET,
    STATUS_INVALID_DEVICE_STATE, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL, TCP_NODELAY, UNICODE_STRING, WSK_BUF, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI,
    WSK_FLAG_ABORTIVE, WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_DATAGRAM_SOCKET,
    WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_WAITALL, WSK_INFINITE_WAIT, WSK_NO_WAIT,
    WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_DATAGRAM_DISPATCH,
    WSK_PROVIDER_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
    WskGetOption, WskSetOption,
};

/// How long anything may take before the test fails loudly.
const BOUND: Duration = Duration::from_secs(30);

/// The fault plans every scenario runs under.
fn plans() -> Vec<Faults> {
    vec![
        Faults::with(Completion::Inline, 1),
        Faults::with(Completion::Deferred, 2),
        Faults::with(Completion::Mixed, 3),
        Faults {
            reorder: true,
            max_delay: Duration::from_millis(1),
            ..Faults::with(Completion::Mixed, 0xfeed_f00d)
        },
    ]
}

/// The completion mode of the kernel the current test booted (checked on every WSK call).
static MODE: Mutex<Completion> = Mutex::new(Completion::Deferred);

/// Boots a kernel (waiting for any other test's to go) and notes its completion mode.
fn boot(faults: Faults) -> Kernel {
    let mode = faults.completion;
    let kernel = Kernel::boot(Config::default().with_faults(faults));
    *MODE.lock().unwrap() = mode;
    kernel
}

/// Boots a kernel per plan and runs `scenario` on a kernel thread; the kernel must end with no
/// leaks and no bugchecks.
fn each_plan(scenario: fn()) {
    for plan in plans() {
        let label = format!("{plan:?}");
        let kernel = boot(plan);
        kernel.on_kernel_thread(scenario);
        let report = kernel.check_leaks();
        assert!(report.is_clean(), "plan {label}: {report}");
        let bugchecks = kernel.take_bugchecks();
        assert!(bugchecks.is_empty(), "plan {label}: {bugchecks:?}");
    }
}

// ---- IRPs and their completion ----

struct Signal {
    state: Mutex<Option<(NTSTATUS, usize)>>,
    cv: Condvar,
    /// The IRQL the completion routine ran at, and whether it ran on the issuing thread.
    seen: Mutex<Option<(u8, std::thread::ThreadId)>>,
}

unsafe extern "system" fn on_done(_d: *mut DEVICE_OBJECT, irp: *mut IRP, ctx: PVOID) -> NTSTATUS {
    // SAFETY: the context is the Signal of the Io that owns this IRP, alive until it is done.
    let signal = unsafe { &*ctx.cast::<Signal>() };
    // SAFETY: the IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    *signal.seen.lock().unwrap() = Some((wsk_sys::KeGetCurrentIrql(), std::thread::current().id()));
    *signal.state.lock().unwrap() = Some((io.Status, io.Information));
    signal.cv.notify_all();
    STATUS_MORE_PROCESSING_REQUIRED
}

/// One IRP we allocate, and the signal its completion routine sets.
struct Io {
    irp: *mut IRP,
    signal: Box<Signal>,
}

impl Io {
    fn new() -> Self {
        // SAFETY: PASSIVE_LEVEL on a kernel thread.
        let irp = unsafe { IoAllocateIrp(1, 0) };
        assert!(!irp.is_null());
        Self {
            irp,
            signal: Box::new(Signal {
                state: Mutex::new(None),
                cv: Condvar::new(),
                seen: Mutex::new(None),
            }),
        }
    }

    /// Reuses the IRP with our completion routine; returns it for the WSK call.
    fn prep(&self) -> *mut IRP {
        *self.signal.state.lock().unwrap() = None;
        *self.signal.seen.lock().unwrap() = None;
        // SAFETY: the IRP is ours and not in flight.
        unsafe {
            IoReuseIrp(self.irp, STATUS_UNSUCCESSFUL);
            IoSetCompletionRoutine(
                self.irp,
                Some(on_done),
                std::ptr::from_ref::<Signal>(&self.signal).cast_mut().cast(),
                true,
                true,
                true,
            );
        }
        self.irp
    }

    /// Checks what a WSK call returned: pending, or completed before it returned; under
    /// deferred completion always pending.
    fn issued(&self, returned: NTSTATUS) {
        if *MODE.lock().unwrap() == Completion::Deferred {
            assert_eq!(
                returned, STATUS_PENDING,
                "deferred completion returns STATUS_PENDING"
            );
        }
        if returned != STATUS_PENDING {
            let done = *self.signal.state.lock().unwrap();
            assert_eq!(
                done.map(|d| d.0),
                Some(returned),
                "a call that did not return STATUS_PENDING must have completed its IRP"
            );
        }
    }

    fn wait(&self, what: &str) -> (NTSTATUS, usize) {
        let guard = self.signal.state.lock().unwrap();
        let (guard, timeout) = self
            .signal
            .cv
            .wait_timeout_while(guard, BOUND, |s| s.is_none())
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "{what}: no completion within {BOUND:?}"
        );
        let done = guard.expect("completed");
        drop(guard);
        let (irql, thread) = self.signal.seen.lock().unwrap().expect("seen");
        assert!(
            irql <= wsk_sys::DISPATCH_LEVEL,
            "{what}: completed at IRQL {irql}"
        );
        if thread != std::thread::current().id() {
            // Deferred: on the reactor, at DISPATCH_LEVEL as a NIC's DPC.
            assert_eq!(
                irql,
                wsk_sys::DISPATCH_LEVEL,
                "{what}: deferred completion IRQL"
            );
        }
        done
    }
}

// SAFETY: the IRP is ours and used by one thread at a time; the signal is thread-safe.
unsafe impl Send for Io {}
// SAFETY: as above: shared use only reads the signal.
unsafe impl Sync for Io {}

impl Drop for Io {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: completed (the tests wait for every IRP they issue).
            unsafe { IoFreeIrp(self.irp) };
        }
    }
}

// ---- buffers ----

const TAG: u32 = u32::from_le_bytes(*b"Test");

/// Nonpaged pool with an MDL.
struct Buf {
    mem: *mut u8,
    len: usize,
    mdl: *mut MDL,
}

impl Buf {
    fn new(len: usize) -> Self {
        // SAFETY: nonpaged pool at PASSIVE_LEVEL.
        let mem = unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, len.max(1), TAG) }.cast::<u8>();
        assert!(!mem.is_null());
        // SAFETY: `mem` is `len` fresh bytes.
        unsafe { std::ptr::write_bytes(mem, 0, len) };
        // SAFETY: a pool buffer described whole.
        let mdl = unsafe { IoAllocateMdl(mem.cast(), len as u32, 0, 0, std::ptr::null_mut()) };
        assert!(!mdl.is_null());
        // SAFETY: the MDL describes nonpaged pool.
        unsafe { MmBuildMdlForNonPagedPool(mdl) };
        Self { mem, len, mdl }
    }

    fn from(bytes: &[u8]) -> Self {
        let b = Self::new(bytes.len());
        // SAFETY: `b` has room for `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.mem, bytes.len()) };
        b
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: our buffer; no IRP holds it while the tests read it.
        unsafe { std::slice::from_raw_parts(self.mem, self.len) }
    }

    fn wsk(&self) -> WSK_BUF {
        WSK_BUF {
            Mdl: self.mdl,
            Offset: 0,
            Length: self.len,
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`; no IRP holds them any more.
        unsafe {
            (*self.mdl).Next = std::ptr::null_mut();
            IoFreeMdl(self.mdl);
            ExFreePoolWithTag(self.mem.cast(), TAG);
        }
    }
}

/// A pattern of `n` bytes.
fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

// ---- addresses ----

/// Room for any socket address, 8-aligned.
#[repr(C, align(8))]
struct Addr([u8; 128]);

impl Addr {
    fn zero() -> Self {
        Self([0; 128])
    }

    fn of(addr: SocketAddr) -> Self {
        let mut out = Self::zero();
        match addr {
            SocketAddr::V4(a) => {
                let raw = SOCKADDR_IN {
                    sin_family: AF_INET,
                    sin_port: a.port().to_be(),
                    sin_addr: IN_ADDR {
                        s_b: a.ip().octets(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: 128 bytes of room, aligned.
                unsafe {
                    std::ptr::from_mut(&mut out)
                        .cast::<SOCKADDR_IN>()
                        .write(raw);
                };
            }
            SocketAddr::V6(a) => {
                let raw = SOCKADDR_IN6 {
                    sin6_family: AF_INET6,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: a.ip().octets(),
                    sin6_scope_id: 0,
                };
                // SAFETY: 128 bytes of room, aligned.
                unsafe {
                    std::ptr::from_mut(&mut out)
                        .cast::<SOCKADDR_IN6>()
                        .write(raw);
                };
            }
        }
        out
    }

    fn ptr(&mut self) -> *mut SOCKADDR {
        self.0.as_mut_ptr().cast()
    }

    fn get(&self) -> Option<SocketAddr> {
        let family = u16::from_ne_bytes([self.0[0], self.0[1]]);
        // SAFETY: aligned reads of the member the family names.
        unsafe {
            match family {
                AF_INET => {
                    let a = std::ptr::from_ref(self).cast::<SOCKADDR_IN>().read();
                    Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(a.sin_addr.s_b),
                        u16::from_be(a.sin_port),
                    )))
                }
                AF_INET6 => {
                    let a = std::ptr::from_ref(self).cast::<SOCKADDR_IN6>().read();
                    Some(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(a.sin6_addr),
                        u16::from_be(a.sin6_port),
                        0,
                        0,
                    )))
                }
                _ => None,
            }
        }
    }
}

fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }
}

// ---- the client ----

static CLIENT_DISPATCH: WSK_CLIENT_DISPATCH = WSK_CLIENT_DISPATCH {
    Version: 0x0100,
    Reserved: 0,
    WskClientEvent: None,
};

/// A registered WSK client with a captured provider NPI.
struct Client {
    reg: Box<WSK_REGISTRATION>,
    npi: WSK_PROVIDER_NPI,
}

// SAFETY: the registration and the provider's client handle are usable from any thread.
unsafe impl Send for Client {}
// SAFETY: as above; shared use only reads the NPI.
unsafe impl Sync for Client {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Listen,
    Connection,
    Datagram,
}

/// A provider socket and its kind.
#[derive(Clone, Copy)]
struct Sock {
    s: *mut wsk_sys::WSK_SOCKET,
    kind: Kind,
}

// SAFETY: the provider's sockets are usable from any thread.
unsafe impl Send for Sock {}
// SAFETY: as above.
unsafe impl Sync for Sock {}

impl Client {
    fn register() -> Self {
        let mut npi = WSK_CLIENT_NPI {
            ClientContext: std::ptr::null_mut(),
            Dispatch: &raw const CLIENT_DISPATCH,
        };
        let mut reg = Box::new(WSK_REGISTRATION {
            ReservedRegistrationState: 0,
            ReservedRegistrationContext: std::ptr::null_mut(),
            ReservedRegistrationLock: 0,
        });
        // SAFETY: PASSIVE_LEVEL; the registration outlives the client.
        let status = unsafe { wsk_sys::WskRegister(&raw mut npi, &raw mut *reg) };
        assert_eq!(status, STATUS_SUCCESS);
        let mut provider = WSK_PROVIDER_NPI {
            Client: std::ptr::null_mut(),
            Dispatch: std::ptr::null(),
        };
        // SAFETY: registered above.
        let status = unsafe {
            wsk_sys::WskCaptureProviderNPI(&raw mut *reg, WSK_INFINITE_WAIT, &raw mut provider)
        };
        assert_eq!(status, STATUS_SUCCESS);
        assert!(!provider.Dispatch.is_null());
        Self { reg, npi: provider }
    }

    fn dispatch(&self) -> &WSK_PROVIDER_DISPATCH {
        // SAFETY: the provider's static table.
        unsafe { &*self.npi.Dispatch }
    }

    fn deregister(mut self) {
        // SAFETY: captured once in `register`.
        unsafe {
            wsk_sys::WskReleaseProviderNPI(&raw mut *self.reg);
            wsk_sys::WskDeregister(&raw mut *self.reg);
        }
    }

    fn try_socket(&self, kind: Kind, v6: bool) -> (NTSTATUS, Option<Sock>) {
        let (socket_type, protocol, flags) = match kind {
            Kind::Listen => (SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_LISTEN_SOCKET),
            Kind::Connection => (SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_CONNECTION_SOCKET),
            Kind::Datagram => (SOCK_DGRAM, IPPROTO_UDP, WSK_FLAG_DATAGRAM_SOCKET),
        };
        let io = Io::new();
        let create = self.dispatch().WskSocket.expect("WskSocket");
        // SAFETY: a live IRP; the client handle from the capture.
        let r = unsafe {
            create(
                self.npi.Client,
                if v6 { AF_INET6 } else { AF_INET },
                socket_type,
                protocol,
                flags,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        let (status, info) = io.wait("WskSocket");
        let sock = (status == STATUS_SUCCESS).then_some(Sock {
            s: info as *mut _,
            kind,
        });
        (status, sock)
    }

    fn socket(&self, kind: Kind, v6: bool) -> Sock {
        let (status, sock) = self.try_socket(kind, v6);
        assert_eq!(status, STATUS_SUCCESS, "WskSocket");
        sock.expect("socket")
    }

    /// A listener bound to loopback, and its address.
    fn listener(&self, v6: bool) -> (Sock, SocketAddr) {
        let l = self.socket(Kind::Listen, v6);
        assert_eq!(l.bind(loopback(v6)), STATUS_SUCCESS, "bind listener");
        let addr = l.local_addr().expect("listener address");
        (l, addr)
    }

    /// A connection socket connected to `to`.
    fn connected(&self, to: SocketAddr) -> Sock {
        let c = self.socket(Kind::Connection, to.is_ipv6());
        assert_eq!(c.bind(loopback(to.is_ipv6())), STATUS_SUCCESS, "bind");
        assert_eq!(c.connect(to), STATUS_SUCCESS, "connect");
        c
    }
}

impl Sock {
    fn basic(&self) -> &WSK_PROVIDER_BASIC_DISPATCH {
        // SAFETY: every provider table starts with the basic calls.
        unsafe { &*(*self.s).Dispatch.cast::<WSK_PROVIDER_BASIC_DISPATCH>() }
    }

    fn conn(&self) -> &WSK_PROVIDER_CONNECTION_DISPATCH {
        assert_eq!(self.kind, Kind::Connection);
        // SAFETY: a connection socket's table.
        unsafe {
            &*(*self.s)
                .Dispatch
                .cast::<WSK_PROVIDER_CONNECTION_DISPATCH>()
        }
    }

    fn listen(&self) -> &WSK_PROVIDER_LISTEN_DISPATCH {
        assert_eq!(self.kind, Kind::Listen);
        // SAFETY: a listen socket's table.
        unsafe { &*(*self.s).Dispatch.cast::<WSK_PROVIDER_LISTEN_DISPATCH>() }
    }

    fn dgram(&self) -> &WSK_PROVIDER_DATAGRAM_DISPATCH {
        assert_eq!(self.kind, Kind::Datagram);
        // SAFETY: a datagram socket's table.
        unsafe { &*(*self.s).Dispatch.cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>() }
    }

    fn bind(&self, addr: SocketAddr) -> NTSTATUS {
        let bind = match self.kind {
            Kind::Listen => self.listen().WskBind,
            Kind::Connection => self.conn().WskBind,
            Kind::Datagram => self.dgram().WskBind,
        }
        .expect("WskBind");
        let mut a = Addr::of(addr);
        let io = Io::new();
        // SAFETY: live socket, address and IRP.
        let r = unsafe { bind(self.s, a.ptr(), 0, io.prep()) };
        io.issued(r);
        if *MODE.lock().unwrap() == Completion::Inline {
            assert_ne!(
                r, STATUS_PENDING,
                "inline completion: a bind's result is known at once"
            );
        }
        io.wait("WskBind").0
    }

    fn connect(&self, to: SocketAddr) -> NTSTATUS {
        let mut a = Addr::of(to);
        let io = Io::new();
        // SAFETY: live socket, address and IRP.
        let r =
            unsafe { self.conn().WskConnect.expect("WskConnect")(self.s, a.ptr(), 0, io.prep()) };
        io.issued(r);
        io.wait("WskConnect").0
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        let f = match self.kind {
            Kind::Listen => self.listen().WskGetLocalAddress,
            Kind::Connection => self.conn().WskGetLocalAddress,
            Kind::Datagram => self.dgram().WskGetLocalAddress,
        }
        .expect("WskGetLocalAddress");
        let mut a = Addr::zero();
        let io = Io::new();
        // SAFETY: live socket, buffer and IRP.
        let r = unsafe { f(self.s, a.ptr(), io.prep()) };
        io.issued(r);
        (io.wait("WskGetLocalAddress").0 == STATUS_SUCCESS)
            .then(|| a.get())
            .flatten()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        let mut a = Addr::zero();
        let io = Io::new();
        // SAFETY: live socket, buffer and IRP.
        let r =
            unsafe { self.conn().WskGetRemoteAddress.expect("remote")(self.s, a.ptr(), io.prep()) };
        io.issued(r);
        (io.wait("WskGetRemoteAddress").0 == STATUS_SUCCESS)
            .then(|| a.get())
            .flatten()
    }

    /// Starts an accept; the result comes with `wait_accept`.
    fn start_accept(&self, io: &Io, local: &mut Addr, remote: &mut Addr) {
        // SAFETY: live socket, buffers and IRP; the buffers outlive the wait.
        let r = unsafe {
            self.listen().WskAccept.expect("WskAccept")(
                self.s,
                0,
                std::ptr::null_mut(),
                std::ptr::null(),
                local.ptr(),
                remote.ptr(),
                io.prep(),
            )
        };
        io.issued(r);
    }

    fn accept(&self) -> (Sock, SocketAddr, SocketAddr) {
        let (mut local, mut remote) = (Addr::zero(), Addr::zero());
        let io = Io::new();
        self.start_accept(&io, &mut local, &mut remote);
        let (status, info) = io.wait("WskAccept");
        assert_eq!(status, STATUS_SUCCESS, "WskAccept");
        (
            Sock {
                s: info as *mut _,
                kind: Kind::Connection,
            },
            local.get().expect("local address filled"),
            remote.get().expect("remote address filled"),
        )
    }

    fn start_send(&self, io: &Io, buf: &mut WSK_BUF, flags: u32) {
        // SAFETY: live socket, WSK_BUF and IRP; the buffer outlives the wait.
        let r = unsafe { self.conn().WskSend.expect("WskSend")(self.s, buf, flags, io.prep()) };
        io.issued(r);
    }

    fn send(&self, bytes: &[u8], flags: u32) -> (NTSTATUS, usize) {
        let b = Buf::from(bytes);
        let mut w = b.wsk();
        let io = Io::new();
        self.start_send(&io, &mut w, flags);
        io.wait("WskSend")
    }

    fn start_recv(&self, io: &Io, buf: &mut WSK_BUF, flags: u32) {
        // SAFETY: live socket, WSK_BUF and IRP; the buffer outlives the wait.
        let r =
            unsafe { self.conn().WskReceive.expect("WskReceive")(self.s, buf, flags, io.prep()) };
        io.issued(r);
    }

    fn recv(&self, len: usize, flags: u32) -> (NTSTATUS, Vec<u8>) {
        let b = Buf::new(len);
        let mut w = b.wsk();
        let io = Io::new();
        self.start_recv(&io, &mut w, flags);
        let (status, n) = io.wait("WskReceive");
        (status, b.bytes()[..n.min(len)].to_vec())
    }

    fn disconnect(&self, buf: Option<&mut WSK_BUF>, flags: u32) -> NTSTATUS {
        let io = Io::new();
        let p = buf.map_or(std::ptr::null_mut(), std::ptr::from_mut);
        // SAFETY: live socket, WSK_BUF (or null) and IRP.
        let r = unsafe {
            self.conn().WskDisconnect.expect("WskDisconnect")(self.s, p, flags, io.prep())
        };
        io.issued(r);
        io.wait("WskDisconnect").0
    }

    fn set_option(&self, level: u32, code: u32, value: u32) -> NTSTATUS {
        let mut v = value;
        let io = Io::new();
        // SAFETY: live socket, value and IRP.
        let r = unsafe {
            self.basic().WskControlSocket.expect("WskControlSocket")(
                self.s,
                WskSetOption,
                code,
                level,
                4,
                (&raw mut v).cast(),
                0,
                std::ptr::null_mut(),
                // NULL with an IRP: the size comes back in IoStatus.Information.
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        io.wait("WskSetOption").0
    }

    fn get_option(&self, level: u32, code: u32) -> (NTSTATUS, u32) {
        let mut v = 0xdead_beef_u32;
        let io = Io::new();
        // SAFETY: live socket, output and IRP.
        let r = unsafe {
            self.basic().WskControlSocket.expect("WskControlSocket")(
                self.s,
                WskGetOption,
                code,
                level,
                0,
                std::ptr::null_mut(),
                4,
                (&raw mut v).cast(),
                // NULL with an IRP: the size comes back in IoStatus.Information.
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        let (status, size) = io.wait("WskGetOption");
        if status == STATUS_SUCCESS {
            assert_eq!(size, 4, "the option's size, in IoStatus.Information");
        }
        (status, v)
    }

    /// `WskGetOption` without an IRP: the size comes back through `OutputSizeReturned`.
    fn get_option_now(&self, level: u32, code: u32) -> (NTSTATUS, u32, usize) {
        let mut v = 0xdead_beef_u32;
        let mut returned = 0usize;
        // SAFETY: live socket, output and size; no IRP.
        let status = unsafe {
            self.basic().WskControlSocket.expect("WskControlSocket")(
                self.s,
                WskGetOption,
                code,
                level,
                0,
                std::ptr::null_mut(),
                4,
                (&raw mut v).cast(),
                &raw mut returned,
                std::ptr::null_mut(),
            )
        };
        (status, v, returned)
    }

    fn close(self) {
        let io = Io::new();
        // SAFETY: live socket and IRP; never touched again.
        let r = unsafe { self.basic().WskCloseSocket.expect("WskCloseSocket")(self.s, io.prep()) };
        io.issued(r);
        assert_eq!(io.wait("WskCloseSocket").0, STATUS_SUCCESS);
    }
}

/// Runs `f` on a plain thread (a std peer), joined by the caller.
fn peer<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> std::thread::JoinHandle<R> {
    std::thread::spawn(f)
}

fn std_stream(s: &TcpStream) -> &TcpStream {
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

// ---- scenarios ----

#[test]
fn accept_fills_addresses_and_connect_works() {
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let t = peer(move || {
            let s = TcpStream::connect(addr).unwrap();
            s.local_addr().unwrap()
        });
        let (a, local, remote) = l.accept();
        let peer_local = t.join().unwrap();
        assert_eq!(local, addr, "accept's local address");
        assert_eq!(remote, peer_local, "accept's remote address");
        assert_eq!(a.remote_addr(), Some(peer_local));
        a.close();
        l.close();

        // Outbound.
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let c = client.connected(to);
        let (_s, from) = std_listener.accept().unwrap();
        assert_eq!(c.local_addr(), Some(from));
        assert_eq!(c.remote_addr(), Some(to));
        c.close();
        client.deregister();
    });
}

#[test]
fn connect_unbound_is_invalid_device_state() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(
            c.connect(std_listener.local_addr().unwrap()),
            STATUS_INVALID_DEVICE_STATE
        );
        c.close();
        client.deregister();
    });
}

/// A loopback port nothing listens on. Not a just-closed ephemeral port: another test may
/// take that port again, and Linux lets a socket bound to an ephemeral port that equals its
/// destination connect to itself. Port 1 is outside the ephemeral range and unused here.
fn closed_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 1))
}

#[test]
fn connect_to_closed_port_is_refused() {
    each_plan(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.bind(loopback(false)), STATUS_SUCCESS);
        assert_eq!(c.connect(closed_port()), STATUS_CONNECTION_REFUSED);
        c.close();
        client.deregister();
    });
}

#[test]
fn send_and_receive_are_byte_exact_with_chained_mdls_and_waitall() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);

        // Chained MDLs: 3 buffers, the WSK_BUF starts 5 bytes into the first and ends short
        // of the last.
        let data = pattern(300_000, 7);
        let parts = [
            Buf::from(&data[..100_005]),
            Buf::from(&data[100_005..200_000]),
            Buf::from(&data[200_000..]),
        ];
        // SAFETY: linking our own MDLs; unlinked in Buf::drop.
        unsafe {
            (*parts[0].mdl).Next = parts[1].mdl;
            (*parts[1].mdl).Next = parts[2].mdl;
        }
        let expected = data[5..data.len() - 10].to_vec();
        let mut w = WSK_BUF {
            Mdl: parts[0].mdl,
            Offset: 5,
            Length: expected.len(),
        };
        let reader = {
            let s = s.try_clone().unwrap();
            let n = expected.len();
            peer(move || {
                let mut got = vec![0u8; n];
                (&s).read_exact(&mut got).unwrap();
                got
            })
        };
        let io = Io::new();
        c.start_send(&io, &mut w, WSK_FLAG_NODELAY);
        assert_eq!(io.wait("chained send"), (STATUS_SUCCESS, expected.len()));
        assert!(
            reader.join().unwrap() == expected,
            "peer got the chained bytes exactly"
        );

        // WAITALL: the peer writes in pieces; the receive completes only when full.
        let back = pattern(200_000, 99);
        let writer = {
            let s = s.try_clone().unwrap();
            let back = back.clone();
            peer(move || {
                for chunk in back.chunks(7_000) {
                    (&s).write_all(chunk).unwrap();
                }
            })
        };
        let (status, got) = c.recv(back.len(), WSK_FLAG_WAITALL);
        writer.join().unwrap();
        assert_eq!(status, STATUS_SUCCESS);
        assert!(got == back, "WAITALL receive is byte-exact and full");

        // Without WAITALL: completes with what is there.
        (&s).write_all(b"hello").unwrap();
        let (status, got) = c.recv(1000, 0);
        assert_eq!(status, STATUS_SUCCESS);
        assert!(!got.is_empty() && b"hello".starts_with(&got));
        c.close();
        client.deregister();
    });
}

#[test]
fn peer_fin_gives_a_zero_byte_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        (&s).write_all(b"last").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let (status, got) = c.recv(4, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"last"[..]));
        let (status, got) = c.recv(100, 0);
        assert_eq!(
            (status, got.len()),
            (STATUS_SUCCESS, 0),
            "FIN is a 0-byte receive"
        );
        // Both directions done: close is graceful, the peer sees EOF, not a reset.
        assert_eq!(c.disconnect(None, 0), STATUS_SUCCESS);
        c.close();
        let mut rest = Vec::new();
        std_stream(&s).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        client.deregister();
    });
}

#[test]
fn graceful_disconnect_gives_the_peer_eof_after_all_data() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);
        let data = pattern(500_000, 3);
        let reader = {
            let s = s.try_clone().unwrap();
            peer(move || {
                let mut got = Vec::new();
                (&s).read_to_end(&mut got).unwrap();
                got
            })
        };
        let b = Buf::from(&data);
        let mut w = b.wsk();
        let send = Io::new();
        c.start_send(&send, &mut w, 0);
        // The disconnect queues behind the send and completes after it.
        assert_eq!(c.disconnect(None, 0), STATUS_SUCCESS);
        assert_eq!(send.wait("send before FIN"), (STATUS_SUCCESS, data.len()));
        assert!(reader.join().unwrap() == data, "all data, then EOF");
        // Receiving still works after a graceful disconnect.
        (&s).write_all(b"reply").unwrap();
        let (status, got) = c.recv(5, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"reply"[..]));
        // A send after the disconnect is refused.
        assert_eq!(c.send(b"x", 0).0, STATUS_INVALID_DEVICE_STATE);
        c.close();
        client.deregister();
    });
}

#[test]
fn disconnect_with_a_final_buffer() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        assert_eq!(c.send(b"first,", 0), (STATUS_SUCCESS, 6));
        let last = Buf::from(b"last words");
        let mut w = last.wsk();
        assert_eq!(c.disconnect(Some(&mut w), 0), STATUS_SUCCESS);
        let mut got = Vec::new();
        std_stream(&s).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first,last words");
        c.close();
        client.deregister();
    });
}

#[test]
fn abortive_disconnect_resets_the_peer_and_fails_pending_receives() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        assert_eq!(c.disconnect(None, WSK_FLAG_ABORTIVE), STATUS_SUCCESS);
        assert_eq!(
            pending.wait("receive pending at abort").0,
            STATUS_CONNECTION_ABORTED
        );
        let mut byte = [0u8; 1];
        let e = std_stream(&s)
            .read(&mut byte)
            .expect_err("the peer sees a reset");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_ABORTED);
        c.close();
        client.deregister();
    });
}

#[test]
fn close_cancels_a_pending_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        c.close();
        assert_eq!(pending.wait("receive pending at close").0, STATUS_CANCELLED);
        // Closing a connection with both directions open resets it.
        let mut byte = [0u8; 1];
        let e = std_stream(&s)
            .read(&mut byte)
            .expect_err("close is abortive");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset);

        // A listener's pending accept too.
        let (l, _) = client.listener(false);
        let (mut local, mut remote) = (Addr::zero(), Addr::zero());
        let accept = Io::new();
        l.start_accept(&accept, &mut local, &mut remote);
        l.close();
        assert_eq!(accept.wait("accept pending at close").0, STATUS_CANCELLED);
        client.deregister();
    });
}

#[test]
fn io_cancel_irp_cancels_a_pending_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, WSK_FLAG_WAITALL);
        // SAFETY: our IRP, in flight.
        unsafe { IoCancelIrp(pending.irp) };
        assert_eq!(pending.wait("cancelled receive").0, STATUS_CANCELLED);
        // The socket still works.
        (&s).write_all(b"after").unwrap();
        let (status, got) = c.recv(5, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"after"[..]));
        c.close();
        client.deregister();
    });
}

#[test]
fn datagram_round_trip() {
    each_plan(|| {
        let client = Client::register();
        let u = client.socket(Kind::Datagram, false);
        assert_eq!(u.bind(loopback(false)), STATUS_SUCCESS);
        let me = u.local_addr().expect("datagram local address");
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        other.set_read_timeout(Some(BOUND)).unwrap();
        let other_addr = other.local_addr().unwrap();

        let b = Buf::new(1500);
        let mut w = b.wsk();
        let mut from = Addr::zero();
        let recv = Io::new();
        // SAFETY: live socket, buffers and IRP, waited for below.
        let r = unsafe {
            u.dgram().WskReceiveFrom.expect("WskReceiveFrom")(
                u.s,
                &raw mut w,
                0,
                from.ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                recv.prep(),
            )
        };
        recv.issued(r);
        other.send_to(b"ping", me).unwrap();
        let (status, n) = recv.wait("WskReceiveFrom");
        assert_eq!((status, &b.bytes()[..n]), (STATUS_SUCCESS, &b"ping"[..]));
        assert_eq!(from.get(), Some(other_addr));

        let out = Buf::from(b"pong");
        let mut w = out.wsk();
        let mut to = Addr::of(other_addr);
        let send = Io::new();
        // SAFETY: live socket, buffers and IRP, waited for below.
        let r = unsafe {
            u.dgram().WskSendTo.expect("WskSendTo")(
                u.s,
                &raw mut w,
                0,
                to.ptr(),
                0,
                std::ptr::null_mut(),
                send.prep(),
            )
        };
        send.issued(r);
        assert_eq!(send.wait("WskSendTo"), (STATUS_SUCCESS, 4));
        let mut got = [0u8; 16];
        let (n, src) = other.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], src), (&b"pong"[..], me));
        u.close();
        client.deregister();
    });
}

fn ipv6_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn ipv6_round_trip() {
    if !ipv6_available() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(true);
        assert!(addr.is_ipv6());
        let t = peer(move || {
            let s = TcpStream::connect(addr).unwrap();
            std_stream(&s);
            (&s).write_all(b"six").unwrap();
            let mut got = [0u8; 4];
            (&s).read_exact(&mut got).unwrap();
            (got, s.local_addr().unwrap())
        });
        let (a, local, remote) = l.accept();
        assert_eq!(local, addr);
        let (status, got) = a.recv(3, WSK_FLAG_WAITALL);
        assert_eq!((status, got.as_slice()), (STATUS_SUCCESS, &b"six"[..]));
        assert_eq!(a.send(b"ipv6", 0), (STATUS_SUCCESS, 4));
        let (echo, peer_local) = t.join().unwrap();
        assert_eq!(&echo, b"ipv6");
        assert_eq!(remote, peer_local);
        // IPv6 sockets start IPv6-only, as on Windows; the option reads back and sets.
        assert_eq!(a.get_option(IPPROTO_IPV6, IPV6_V6ONLY), (STATUS_SUCCESS, 1));
        a.close();
        l.close();
        client.deregister();
    });
}

#[test]
fn socket_options_set_and_read_back() {
    each_plan(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.set_option(SOL_SOCKET, SO_REUSEADDR, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(SOL_SOCKET, SO_REUSEADDR), (STATUS_SUCCESS, 1));
        assert_eq!(c.set_option(SOL_SOCKET, SO_KEEPALIVE, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(SOL_SOCKET, SO_KEEPALIVE), (STATUS_SUCCESS, 1));
        assert_eq!(c.set_option(IPPROTO_TCP, TCP_NODELAY, 1), STATUS_SUCCESS);
        assert_eq!(c.get_option(IPPROTO_TCP, TCP_NODELAY), (STATUS_SUCCESS, 1));
        assert_eq!(
            c.get_option_now(SOL_SOCKET, SO_KEEPALIVE),
            (STATUS_SUCCESS, 1, 4)
        );
        // SO_EXCLUSIVEADDRUSE and SO_REUSEADDR exclude each other, as on Windows.
        assert_ne!(
            c.set_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE, 1),
            STATUS_SUCCESS
        );
        c.close();
        let l = client.socket(Kind::Listen, false);
        assert_eq!(
            l.set_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE, 1),
            STATUS_SUCCESS
        );
        assert_eq!(
            l.get_option(SOL_SOCKET, wsk_sys::SO_EXCLUSIVEADDRUSE),
            (STATUS_SUCCESS, 1)
        );
        // IPV6_V6ONLY on an IPv4 socket is refused.
        assert_ne!(l.set_option(IPPROTO_IPV6, IPV6_V6ONLY, 0), STATUS_SUCCESS);
        l.close();
        client.deregister();
    });
}

#[test]
fn address_info_for_localhost() {
    each_plan(|| {
        let client = Client::register();
        let name: Vec<u16> = "localhost".encode_utf16().chain([0]).collect();
        let mut node = UNICODE_STRING {
            Length: 18,
            MaximumLength: 20,
            Buffer: name.as_ptr().cast_mut(),
        };
        let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
        let io = Io::new();
        // SAFETY: a live IRP, string and result pointer.
        let r = unsafe {
            client
                .dispatch()
                .WskGetAddressInfo
                .expect("WskGetAddressInfo")(
                client.npi.Client,
                &raw mut node,
                std::ptr::null_mut(),
                NS_ALL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &raw mut result,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        assert_eq!(io.wait("WskGetAddressInfo").0, STATUS_SUCCESS);
        let mut found = Vec::new();
        let mut entry = result;
        while !entry.is_null() {
            // SAFETY: the provider's list, valid until freed below.
            let info = unsafe { &*entry };
            let mut a = Addr::zero();
            // SAFETY: ai_addr holds ai_addrlen bytes (at most 28).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    info.ai_addr.cast::<u8>(),
                    a.0.as_mut_ptr(),
                    info.ai_addrlen,
                );
            }
            found.push(a.get().expect("an IPv4 or IPv6 address").ip());
            entry = info.ai_next;
        }
        assert!(
            found.iter().all(std::net::IpAddr::is_loopback) && !found.is_empty(),
            "localhost resolves to loopback: {found:?}"
        );
        // SAFETY: the list from WskGetAddressInfo, freed once.
        unsafe { client.dispatch().WskFreeAddressInfo.expect("free")(client.npi.Client, result) };
        client.deregister();
    });
}

#[test]
fn socket_connect_in_one_call() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let mut local = Addr::of(loopback(false));
        let mut remote = Addr::of(to);
        let io = Io::new();
        // SAFETY: live IRP and addresses.
        let r = unsafe {
            client
                .dispatch()
                .WskSocketConnect
                .expect("WskSocketConnect")(
                client.npi.Client,
                SOCK_STREAM,
                IPPROTO_TCP,
                local.ptr(),
                remote.ptr(),
                0,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        let (status, info) = io.wait("WskSocketConnect");
        assert_eq!(status, STATUS_SUCCESS);
        let c = Sock {
            s: info as *mut _,
            kind: Kind::Connection,
        };
        let (s, _) = std_listener.accept().unwrap();
        assert_eq!(c.send(b"one call", 0), (STATUS_SUCCESS, 8));
        let mut got = [0u8; 8];
        std_stream(&s).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one call");
        c.close();
        // Refused: no socket comes back, and none is left open.
        drop(std_listener);
        let mut remote = Addr::of(closed_port());
        let io = Io::new();
        // SAFETY: as above.
        let r = unsafe {
            client
                .dispatch()
                .WskSocketConnect
                .expect("WskSocketConnect")(
                client.npi.Client,
                SOCK_STREAM,
                IPPROTO_TCP,
                local.ptr(),
                remote.ptr(),
                0,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        io.issued(r);
        assert_eq!(
            io.wait("refused WskSocketConnect"),
            (STATUS_CONNECTION_REFUSED, 0)
        );
        client.deregister();
    });
}

/// A completion routine that issues the next receive from inside itself (as an echo driver
/// does), until the peer's FIN.
struct Chain {
    sock: Sock,
    buf: Buf,
    wsk: WSK_BUF,
    irp: *mut IRP,
    got: Mutex<Vec<u8>>,
    done: Signal,
    /// `WskReceive` calls in progress: completing inline, each routine issues the next from
    /// inside the previous call, so the chain can end deep inside nested calls.
    calls: CallsInProgress,
}

/// Calls a client has in progress on one socket: `WskCloseSocket` (and any other call from
/// another thread that must not overlap) waits until none is (the rule of `WskCloseSocket`).
#[derive(Default)]
struct CallsInProgress(std::sync::atomic::AtomicUsize);

impl CallsInProgress {
    fn enter(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn leave(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (bounded) until every call returned.
    fn wait_none(&self) {
        let deadline = std::time::Instant::now() + BOUND;
        while self.0.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            assert!(std::time::Instant::now() < deadline, "calls never returned");
            std::thread::yield_now();
        }
    }
}

unsafe extern "system" fn chain_done(
    _d: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    ctx: PVOID,
) -> NTSTATUS {
    // SAFETY: the Chain outlives every receive it issues (the test waits for `done`).
    let chain = unsafe { &mut *ctx.cast::<Chain>() };
    // SAFETY: the IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    if io.Status == STATUS_SUCCESS && io.Information > 0 {
        chain
            .got
            .lock()
            .unwrap()
            .extend_from_slice(&chain.buf.bytes()[..io.Information]);
        // SAFETY: re-entering the provider from the completion routine, with the IRP we own.
        unsafe { issue_chain(chain) };
    } else {
        *chain.done.state.lock().unwrap() = Some((io.Status, io.Information));
        chain.done.cv.notify_all();
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// # Safety
/// `chain` is live and its IRP is not in flight.
unsafe fn issue_chain(chain: &mut Chain) {
    // SAFETY: our IRP, completed (or fresh).
    unsafe {
        IoReuseIrp(chain.irp, STATUS_UNSUCCESSFUL);
        IoSetCompletionRoutine(
            chain.irp,
            Some(chain_done),
            std::ptr::from_mut(chain).cast(),
            true,
            true,
            true,
        );
        chain.calls.enter();
        let _ = chain.sock.conn().WskReceive.expect("WskReceive")(
            chain.sock.s,
            &raw mut chain.wsk,
            0,
            chain.irp,
        );
        chain.calls.leave();
    }
}

#[test]
fn completion_routines_may_issue_the_next_receive() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let buf = Buf::new(1000);
        let wsk = buf.wsk();
        // SAFETY: PASSIVE_LEVEL.
        let irp = unsafe { IoAllocateIrp(1, 0) };
        let mut chain = Box::new(Chain {
            sock: c,
            buf,
            wsk,
            irp,
            got: Mutex::new(Vec::new()),
            done: Signal {
                state: Mutex::new(None),
                cv: Condvar::new(),
                seen: Mutex::new(None),
            },
            calls: CallsInProgress::default(),
        });
        // SAFETY: the chain is boxed and outlives its receives.
        unsafe { issue_chain(&mut chain) };
        let data = pattern(100_000, 42);
        for piece in data.chunks(3_333) {
            (&s).write_all(piece).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let guard = chain.done.state.lock().unwrap();
        let (guard, timeout) = chain
            .done
            .cv
            .wait_timeout_while(guard, BOUND, |d| d.is_none())
            .unwrap();
        assert!(!timeout.timed_out(), "the receive chain never saw FIN");
        assert_eq!(*guard, Some((STATUS_SUCCESS, 0)));
        drop(guard);
        assert!(*chain.got.lock().unwrap() == data);
        chain.calls.wait_none();
        // SAFETY: completed; freed once.
        unsafe { IoFreeIrp(chain.irp) };
        chain.sock.close();
        client.deregister();
    });
}

#[test]
fn injected_errors_complete_the_chosen_operations() {
    let kernel = boot(Faults {
        errors: vec![
            ErrorRule {
                op: WskOp::Receive,
                nth: 2,
                status: STATUS_CONNECTION_RESET,
            },
            ErrorRule {
                op: WskOp::Connect,
                nth: 1,
                status: wsk_sys::STATUS_HOST_UNREACHABLE,
            },
        ],
        ..Faults::with(Completion::Mixed, 9)
    });
    kernel.on_kernel_thread(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = std_listener.local_addr().unwrap();
        let c = client.socket(Kind::Connection, false);
        assert_eq!(c.bind(loopback(false)), STATUS_SUCCESS);
        assert_eq!(c.connect(to), wsk_sys::STATUS_HOST_UNREACHABLE);
        c.close();
        let c = client.connected(to);
        let (s, _) = std_listener.accept().unwrap();
        (&s).write_all(b"ab").unwrap();
        assert_eq!(c.recv(1, 0), (STATUS_SUCCESS, b"a".to_vec()));
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_RESET);
        assert_eq!(c.recv(1, 0), (STATUS_SUCCESS, b"b".to_vec()));
        c.close();
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

// ---- the verifier ----

/// Runs `f` on a kernel thread and expects the verifier to fail it with `name`.
fn expect_bugcheck(kernel: &Kernel, name: &str, f: impl FnOnce() + Send) {
    let outcome = catch_unwind(AssertUnwindSafe(|| kernel.on_kernel_thread(f)));
    assert!(
        outcome.is_err(),
        "expected bugcheck {name}, but the call returned"
    );
    let bugchecks = kernel.take_bugchecks();
    assert!(
        bugchecks.iter().any(|b| b.name == name),
        "expected bugcheck {name}, got {bugchecks:?}"
    );
}

#[test]
fn deregister_with_a_socket_left_open_is_reported_not_hung() {
    let kernel = boot(Faults {
        deregister_wait: Some(Duration::from_millis(50)),
        ..Faults::default()
    });
    let left = Mutex::new(None);
    expect_bugcheck(&kernel, "WSK_DEREGISTER_WITH_SOCKETS_OPEN", || {
        let client = Client::register();
        let s = client.socket(Kind::Connection, false);
        *left.lock().unwrap() = Some(s);
        client.deregister();
    });
    let report = kernel.check_leaks();
    assert!(
        report.leaks().iter().any(|l| l.contains("WSK socket")),
        "the open socket is in the leak report: {report}"
    );
}

/// Several accepts may be outstanding on one listener ("`PFN_WSK_ACCEPT` callback function
/// (wsk.h)": `STATUS_PENDING` means the IRP "has been queued"): each incoming connection goes
/// to the oldest, the later ones keep waiting, and closing the listener cancels them. (The
/// verifier used to bugcheck the second one.)
#[test]
fn several_outstanding_accepts_are_served_in_order() {
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let ios: Vec<Io> = (0..3).map(|_| Io::new()).collect();
        let mut addrs: Vec<(Addr, Addr)> = (0..3).map(|_| (Addr::zero(), Addr::zero())).collect();
        for (io, (local, remote)) in ios.iter().zip(addrs.iter_mut()) {
            l.start_accept(io, local, remote);
        }
        for i in 0..2 {
            let peer = TcpStream::connect(addr).unwrap();
            let peer_local = peer.local_addr().unwrap();
            let (status, info) = ios[i].wait("a queued accept");
            assert_eq!(status, STATUS_SUCCESS, "accept {i}");
            assert_eq!(
                addrs[i].1.get(),
                Some(peer_local),
                "accept {i} got connection {i}"
            );
            assert!(
                ios[i + 1].signal.state.lock().unwrap().is_none(),
                "accept {} still waits for its connection",
                i + 1
            );
            Sock {
                s: info as *mut _,
                kind: Kind::Connection,
            }
            .close();
            drop(peer);
        }
        l.close();
        assert_eq!(ios[2].wait("the last accept").0, STATUS_CANCELLED);
        client.deregister();
    });
}

#[test]
fn wsk_buf_longer_than_its_mdl_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = std_listener.local_addr().unwrap();
    let c = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.connected(to);
        std::mem::forget(client);
        c
    });
    expect_bugcheck(&kernel, "WSK_BUF_EXCEEDS_MDL", || {
        let b = Buf::new(10);
        let mut w = WSK_BUF {
            Mdl: b.mdl,
            Offset: 4,
            Length: 7,
        };
        let io = Io::new();
        c.start_send(&io, &mut w, 0);
    });
    kernel.on_kernel_thread(|| c.close());
}

/// `WskControlSocket` with an IRP takes no `OutputSizeReturned` (the size comes back in
/// `IoStatus.Information`): passing both, as `wsk-net` once did for every option it set,
/// fails the verifier.
#[test]
fn output_size_returned_with_an_irp_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let (client, c) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.socket(Kind::Connection, false);
        (client, c)
    });
    let io = kernel.on_kernel_thread(Io::new);
    expect_bugcheck(&kernel, "WSK_OUTPUT_SIZE_RETURNED_WITH_IRP", || {
        let mut v = 1u32;
        let mut returned = 0usize;
        // SAFETY: live socket, value, size and IRP; this call fails the verifier.
        let _ = unsafe {
            c.basic().WskControlSocket.expect("WskControlSocket")(
                c.s,
                WskSetOption,
                SO_KEEPALIVE,
                SOL_SOCKET,
                4,
                (&raw mut v).cast(),
                0,
                std::ptr::null_mut(),
                &raw mut returned,
                io.prep(),
            )
        };
    });
    kernel.on_kernel_thread(move || {
        drop(io);
        c.close();
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

/// Capturing with `WSK_NO_WAIT` works at `DISPATCH_LEVEL`; a waiting capture there fails the
/// verifier.
#[test]
fn capture_irql_rules() {
    let kernel = boot(Faults::default());
    expect_bugcheck(&kernel, "IRQL_NOT_LESS_OR_EQUAL", || {
        let client = Client::register();
        let mut npi = WSK_PROVIDER_NPI {
            Client: std::ptr::null_mut(),
            Dispatch: std::ptr::null(),
        };
        let mut reg = client.reg;
        // SAFETY: raising from PASSIVE_LEVEL, lowered below.
        let old = unsafe { wsk_sys::KeRaiseIrql(wsk_sys::DISPATCH_LEVEL) };
        // SAFETY: registered.
        let status =
            unsafe { wsk_sys::WskCaptureProviderNPI(&raw mut *reg, WSK_NO_WAIT, &raw mut npi) };
        assert_eq!(status, STATUS_SUCCESS);
        // SAFETY: captured just above.
        unsafe { wsk_sys::WskReleaseProviderNPI(&raw mut *reg) };
        // SAFETY: as above; this one fails the verifier.
        let _ = unsafe { wsk_sys::WskCaptureProviderNPI(&raw mut *reg, 1000, &raw mut npi) };
        // SAFETY: restores the raise.
        unsafe { wsk_sys::KeLowerIrql(old) };
    });
}

// ---- many connections at once: echo state machines driven from completion routines ----

/// One echoed connection: receive, then send what came, then receive again, all issued from
/// the completion routine (at `DISPATCH_LEVEL` on the reactor, or inline), until FIN.
struct Echo {
    sock: Sock,
    buf: Buf,
    wsk: WSK_BUF,
    irp: *mut IRP,
    sending: bool,
    echoed: usize,
    done: Signal,
    calls: CallsInProgress,
}

const ECHO_BUF: usize = 16 * 1024;

unsafe extern "system" fn echo_done(_d: *mut DEVICE_OBJECT, irp: *mut IRP, ctx: PVOID) -> NTSTATUS {
    // SAFETY: the Echo outlives its IRPs (the test waits for `done` before freeing it).
    let echo = unsafe { &mut *ctx.cast::<Echo>() };
    // SAFETY: the IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    let next = match (echo.sending, io.Status, io.Information) {
        (false, STATUS_SUCCESS, n) if n > 0 => {
            echo.wsk.Length = n;
            true
        }
        (true, STATUS_SUCCESS, n) => {
            echo.echoed += n;
            echo.wsk.Length = ECHO_BUF;
            false
        }
        _ => {
            *echo.done.state.lock().unwrap() = Some((io.Status, echo.echoed));
            echo.done.cv.notify_all();
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
    };
    // SAFETY: re-entering the provider from the completion routine with the IRP we own.
    unsafe { issue_echo(echo, next) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// # Safety
/// `echo` is live and its IRP is not in flight.
unsafe fn issue_echo(echo: &mut Echo, send: bool) {
    echo.sending = send;
    let table = echo.sock.conn();
    let f = if send {
        table.WskSend
    } else {
        table.WskReceive
    };
    // SAFETY: our IRP, completed (or fresh); the buffer lives in the Echo.
    unsafe {
        IoReuseIrp(echo.irp, STATUS_UNSUCCESSFUL);
        IoSetCompletionRoutine(
            echo.irp,
            Some(echo_done),
            std::ptr::from_mut(echo).cast(),
            true,
            true,
            true,
        );
        echo.calls.enter();
        let _ = f.expect("WskSend/WskReceive")(echo.sock.s, &raw mut echo.wsk, 0, echo.irp);
        echo.calls.leave();
    }
}

#[test]
fn many_connections_echo_from_completion_routines() {
    const PEERS: usize = 6;
    const BYTES: usize = 150_000;
    each_plan(|| {
        let client = Client::register();
        let (l, addr) = client.listener(false);
        let peers: Vec<_> = (0..PEERS)
            .map(|i| {
                peer(move || {
                    let s = TcpStream::connect(addr).unwrap();
                    std_stream(&s);
                    let data = pattern(BYTES, i as u8);
                    let writer = {
                        let s = s.try_clone().unwrap();
                        let data = data.clone();
                        std::thread::spawn(move || {
                            for (k, chunk) in data.chunks(1_000 + 997 * i).enumerate() {
                                (&s).write_all(chunk).unwrap();
                                if k % 7 == 0 {
                                    (&s).flush().unwrap();
                                }
                            }
                            s.shutdown(Shutdown::Write).unwrap();
                        })
                    };
                    let mut back = Vec::new();
                    (&s).read_to_end(&mut back).unwrap();
                    writer.join().unwrap();
                    back == data
                })
            })
            .collect();
        let mut echoes = Vec::new();
        for _ in 0..PEERS {
            let (a, _, _) = l.accept();
            let buf = Buf::new(ECHO_BUF);
            let wsk = buf.wsk();
            // SAFETY: PASSIVE_LEVEL.
            let irp = unsafe { IoAllocateIrp(1, 0) };
            let mut echo = Box::new(Echo {
                sock: a,
                buf,
                wsk,
                irp,
                sending: false,
                echoed: 0,
                done: Signal {
                    state: Mutex::new(None),
                    cv: Condvar::new(),
                    seen: Mutex::new(None),
                },
                calls: CallsInProgress::default(),
            });
            // SAFETY: boxed; outlives its IRPs.
            unsafe { issue_echo(&mut echo, false) };
            echoes.push(echo);
        }
        for echo in echoes {
            let guard = echo.done.state.lock().unwrap();
            let (guard, timeout) = echo
                .done
                .cv
                .wait_timeout_while(guard, BOUND, |d| d.is_none())
                .unwrap();
            assert!(!timeout.timed_out(), "an echo never saw FIN");
            assert_eq!(
                *guard,
                Some((STATUS_SUCCESS, BYTES)),
                "echoed everything, then FIN"
            );
            drop(guard);
            echo.calls.wait_none();
            assert_eq!(echo.sock.disconnect(None, 0), STATUS_SUCCESS);
            // SAFETY: completed; freed once. The buffer is not read again.
            unsafe { IoFreeIrp(echo.irp) };
            let _ = echo.buf.len;
            echo.sock.close();
        }
        for p in peers {
            assert!(p.join().unwrap(), "a peer got its bytes back exactly");
        }
        l.close();
        client.deregister();
    });
}

/// `WskGetAddressInfo` is `PASSIVE_LEVEL` only.
#[test]
fn address_info_above_passive_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let client = kernel.on_kernel_thread(Client::register);
    let io = kernel.on_kernel_thread(Io::new);
    expect_bugcheck(&kernel, "IRQL_NOT_LESS_OR_EQUAL", || {
        let name: Vec<u16> = "localhost".encode_utf16().collect();
        let mut node = UNICODE_STRING::from_wide(&name);
        let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
        // SAFETY: raising from PASSIVE_LEVEL; the bugcheck unwinds out before any lowering,
        // and the kernel thread ends with it.
        let _old = unsafe { wsk_sys::KeRaiseIrql(wsk_sys::DISPATCH_LEVEL) };
        // SAFETY: a live IRP, string and result pointer; this call fails the verifier.
        let _ = unsafe {
            client
                .dispatch()
                .WskGetAddressInfo
                .expect("WskGetAddressInfo")(
                client.npi.Client,
                &raw mut node,
                std::ptr::null_mut(),
                NS_ALL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &raw mut result,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
    });
    kernel.on_kernel_thread(move || {
        drop(io);
        client.deregister();
    });
    assert!(kernel.check_leaks().is_clean());
}

/// A peer that closes with unread data resets the connection: a pending receive fails with
/// `STATUS_CONNECTION_RESET`, and so does every later transfer.
#[test]
fn peer_reset_fails_receives_with_connection_reset() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        let b = Buf::new(64);
        let mut w = b.wsk();
        let pending = Io::new();
        c.start_recv(&pending, &mut w, 0);
        // Unread data in the peer's receive queue makes its close a reset.
        assert_eq!(c.send(b"unread", 0), (STATUS_SUCCESS, 6));
        let mut probe = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        // Wait (bounded, on the data itself) until the bytes have arrived at the peer.
        let deadline = std::time::Instant::now() + BOUND;
        while s.peek(&mut probe).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "data never reached the peer"
            );
            std::thread::yield_now();
        }
        drop(s);
        assert_eq!(pending.wait("receive at reset").0, STATUS_CONNECTION_RESET);
        assert_eq!(c.recv(1, 0).0, STATUS_CONNECTION_RESET);
        c.close();
        client.deregister();
    });
}

/// What Wine's conformance test records Windows doing at the edges: no IRP is
/// `STATUS_INVALID_PARAMETER`, an unknown client handle `STATUS_INVALID_HANDLE` (the IRP left
/// alone), a `SOCK_DGRAM` listen socket is created but cannot bind, a numeric node with a
/// service gives that port, an unknown name `STATUS_NOT_FOUND`.
#[test]
fn windows_edge_cases_recorded_by_wine() {
    each_plan(|| {
        let client = Client::register();
        let create = client.dispatch().WskSocket.expect("WskSocket");
        // SAFETY: no IRP: the provider must not touch one.
        let r = unsafe {
            create(
                client.npi.Client,
                AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_LISTEN_SOCKET,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, wsk_sys::STATUS_INVALID_PARAMETER);
        let io = Io::new();
        // SAFETY: a null client handle; the IRP stays ours.
        let r = unsafe {
            create(
                std::ptr::null_mut(),
                AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_LISTEN_SOCKET,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                io.prep(),
            )
        };
        assert_eq!(r, wsk_sys::STATUS_INVALID_HANDLE);
        assert!(
            io.signal.state.lock().unwrap().is_none(),
            "the IRP was not completed"
        );
        let udp = {
            let io = Io::new();
            // SAFETY: a live IRP.
            let r = unsafe {
                create(
                    client.npi.Client,
                    AF_INET,
                    SOCK_DGRAM,
                    IPPROTO_UDP,
                    WSK_FLAG_LISTEN_SOCKET,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    io.prep(),
                )
            };
            io.issued(r);
            let (status, info) = io.wait("SOCK_DGRAM listen socket");
            assert_eq!(status, STATUS_SUCCESS);
            Sock {
                s: info as *mut _,
                kind: Kind::Listen,
            }
        };
        assert_eq!(udp.bind(loopback(false)), wsk_sys::STATUS_NOT_IMPLEMENTED);
        udp.close();

        assert_eq!(
            resolve_one(&client, "127.0.0.1", Some("12345")),
            Ok(vec![(16, "127.0.0.1:12345".parse().unwrap())])
        );
        assert_eq!(
            resolve_one(&client, "nonexistent.invalid", None),
            Err(wsk_sys::STATUS_NOT_FOUND)
        );
        drop(io);
        client.deregister();
    });
}

/// `WskGetAddressInfo` of `node` (and `service`): (`ai_addrlen`, address) per entry.
fn resolve_one(
    client: &Client,
    node: &str,
    service: Option<&str>,
) -> Result<Vec<(usize, SocketAddr)>, NTSTATUS> {
    let node: Vec<u16> = node.encode_utf16().collect();
    let mut node = UNICODE_STRING::from_wide(&node);
    let service: Option<Vec<u16>> = service.map(|s| s.encode_utf16().collect());
    let mut service = service.as_deref().map(UNICODE_STRING::from_wide);
    let service_ptr = service
        .as_mut()
        .map_or(std::ptr::null_mut(), std::ptr::from_mut);
    let mut result: *mut ADDRINFOEXW = std::ptr::null_mut();
    let io = Io::new();
    // SAFETY: a live IRP, strings and result pointer.
    let r = unsafe {
        client
            .dispatch()
            .WskGetAddressInfo
            .expect("WskGetAddressInfo")(
            client.npi.Client,
            &raw mut node,
            service_ptr,
            NS_ALL,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &raw mut result,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            io.prep(),
        )
    };
    io.issued(r);
    let (status, info) = io.wait("WskGetAddressInfo");
    assert_eq!(info, 0);
    if status != STATUS_SUCCESS {
        assert!(result.is_null());
        return Err(status);
    }
    let mut out = Vec::new();
    let mut entry = result;
    while !entry.is_null() {
        // SAFETY: the provider's list, valid until freed below.
        let e = unsafe { &*entry };
        let mut a = Addr::zero();
        // SAFETY: ai_addr holds ai_addrlen bytes (at most 28).
        unsafe {
            std::ptr::copy_nonoverlapping(e.ai_addr.cast::<u8>(), a.0.as_mut_ptr(), e.ai_addrlen);
        }
        out.push((e.ai_addrlen, a.get().expect("an address")));
        entry = e.ai_next;
    }
    // SAFETY: the list from WskGetAddressInfo, freed once.
    unsafe { client.dispatch().WskFreeAddressInfo.expect("free")(client.npi.Client, result) };
    Ok(out)
}

/// Receives cancelled while data arrives never lose or reorder bytes: each completes either
/// with data or as cancelled, and whatever a cancelled receive did not take is read later.
#[test]
fn cancelling_receives_while_data_arrives_loses_nothing() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        std_stream(&s);
        let data = pattern(3_000, 5);
        let writer = {
            let s = s.try_clone().unwrap();
            let data = data.clone();
            peer(move || {
                for chunk in data.chunks(3) {
                    (&s).write_all(chunk).unwrap();
                }
                s.shutdown(Shutdown::Write).unwrap();
            })
        };
        let b = Buf::new(7);
        let io = Io::new();
        let mut got = Vec::new();
        let mut cancelled = 0;
        loop {
            let mut w = b.wsk();
            c.start_recv(&io, &mut w, 0);
            // SAFETY: our IRP, in flight or already completed (then a no-op).
            unsafe { IoCancelIrp(io.irp) };
            let (status, n) = io.wait("receive racing its cancel");
            match status {
                STATUS_SUCCESS if n == 0 => break,
                STATUS_SUCCESS => got.extend_from_slice(&b.bytes()[..n]),
                STATUS_CANCELLED => {
                    got.extend_from_slice(&b.bytes()[..n]);
                    cancelled += 1;
                }
                other => panic!("unexpected status {other:#x}"),
            }
        }
        writer.join().unwrap();
        assert!(
            got == data,
            "every byte exactly once, in order ({cancelled} cancelled)"
        );
        c.close();
        client.deregister();
    });
}

/// A send the peer never drains, and a graceful disconnect queued behind it, are both ended
/// by close (the recovery `wsk-net`'s `disconnect_within` relies on); the peer sees a reset.
#[test]
fn close_ends_a_stuck_send_and_disconnect() {
    each_plan(|| {
        let client = Client::register();
        let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = client.connected(std_listener.local_addr().unwrap());
        let (s, _) = std_listener.accept().unwrap();
        // 32 MiB, more than loopback buffers hold, as a chain of 4 MiB MDLs (one MDL
        // describes at most about 16 MiB).
        let parts: Vec<Buf> = (0..8).map(|_| Buf::new(4 << 20)).collect();
        for pair in parts.windows(2) {
            // SAFETY: linking our own MDLs; unlinked in Buf::drop.
            unsafe { (*pair[0].mdl).Next = pair[1].mdl };
        }
        let mut w = WSK_BUF {
            Mdl: parts[0].mdl,
            Offset: 0,
            Length: 32 << 20,
        };
        let send = Io::new();
        c.start_send(&send, &mut w, 0);
        let disconnect = Io::new();
        // SAFETY: live socket and IRP; no final buffer.
        let r = unsafe {
            c.conn().WskDisconnect.expect("WskDisconnect")(
                c.s,
                std::ptr::null_mut(),
                0,
                disconnect.prep(),
            )
        };
        disconnect.issued(r);
        c.close();
        let (send_status, bytes_sent) = send.wait("stuck send");
        assert!(
            send_status == STATUS_CANCELLED
                || (send_status == STATUS_SUCCESS && bytes_sent == 32 << 20),
            "send: {send_status:#x} after {bytes_sent} bytes"
        );
        let status = disconnect.wait("stuck disconnect").0;
        assert!(status == STATUS_CANCELLED || status == STATUS_SUCCESS);
        // The peer drains what arrived, then sees the reset.
        let mut sink = vec![0u8; 1 << 16];
        std_stream(&s);
        let end = loop {
            match (&s).read(&mut sink) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.kind()),
            }
        };
        if send_status == STATUS_CANCELLED {
            assert_eq!(end, Some(ErrorKind::ConnectionReset));
        }
        client.deregister();
    });
}

/// A `WSK_BUF` whose MDL was already freed fires the verifier (on Windows: a crash, or worse,
/// someone else's memory on the wire).
#[test]
fn wsk_buf_with_a_freed_mdl_fires_the_verifier() {
    let kernel = boot(Faults::default());
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = std_listener.local_addr().unwrap();
    let (client, c) = kernel.on_kernel_thread(|| {
        let client = Client::register();
        let c = client.connected(to);
        (client, c)
    });
    expect_bugcheck(&kernel, "WSK_BUF_MDL_NOT_LIVE", || {
        let freed = Buf::new(16).mdl;
        let mut w = WSK_BUF {
            Mdl: freed,
            Offset: 0,
            Length: 16,
        };
        let io = Io::new();
        c.start_send(&io, &mut w, 0);
    });
    kernel.on_kernel_thread(move || {
        c.close();
        client.deregister();
    });
}
