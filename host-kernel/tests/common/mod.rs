//! What the WSK provider's tests share: driving the provider as a driver does, through its
//! dispatch tables from kernel threads, with IRPs we allocate and completion routines that
//! return `STATUS_MORE_PROCESSING_REQUIRED` and signal what the test waits on (`Io`), pool
//! buffers with MDLs (`Buf`), socket addresses (`Addr`), a registered client and its sockets
//! (`Client`, `Sock`), and the per-plan runner over `wsk_host::testing`.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary uses its part of the fixtures and the imports"
)]
#![allow(
    clippy::missing_panics_doc,
    clippy::must_use_candidate,
    clippy::cast_possible_truncation,
    clippy::new_without_default,
    reason = "test code: panics are the failure reports"
)]

pub use std::io::{ErrorKind, Read, Write};
pub use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
pub use std::panic::{AssertUnwindSafe, catch_unwind};
pub use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
pub use std::sync::{Condvar, Mutex};
pub use std::time::Duration;

pub use wsk_host::faults::{Completion, ErrorRule, Faults, WskOp};
pub use wsk_host::testing::{BOUND, plans};
pub use wsk_host::{Config, Kernel};
pub use wsk_sys::{
    ADDRINFOEXW, AF_INET, AF_INET6, DEVICE_OBJECT, ExAllocatePoolWithTag, ExFreePoolWithTag,
    IN_ADDR, IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_V6ONLY, IRP, IoAllocateIrp,
    IoAllocateMdl, IoCancelIrp, IoFreeIrp, IoFreeMdl, IoReuseIrp, IoSetCompletionRoutine, MDL,
    MmBuildMdlForNonPagedPool, NI_NAMEREQD, NI_NUMERICHOST, NI_NUMERICSERV, NPI_WSK_INTERFACE_ID,
    NS_ALL, NTSTATUS, NonPagedPoolNx, PVOID, SIO_WSK_QUERY_IDEAL_SEND_BACKLOG, SIZE_T,
    SO_KEEPALIVE, SO_REUSEADDR, SO_SNDBUF, SO_WSK_EVENT_CALLBACK, SOCK_DGRAM, SOCK_STREAM,
    SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOL_SOCKET, STATUS_BUFFER_OVERFLOW,
    STATUS_BUFFER_TOO_SMALL, STATUS_CANCELLED, STATUS_CONNECTION_ABORTED,
    STATUS_CONNECTION_REFUSED, STATUS_CONNECTION_RESET, STATUS_DATA_NOT_ACCEPTED,
    STATUS_EVENT_PENDING, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_PARAMETER,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_FOUND, STATUS_NOT_SUPPORTED, STATUS_PENDING,
    STATUS_REQUEST_NOT_ACCEPTED, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, TCP_NODELAY, UNICODE_STRING,
    WSK_BUF, WSK_BUF_LIST, WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_DATAGRAM_DISPATCH,
    WSK_CLIENT_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH, WSK_CLIENT_NPI, WSK_DATA_INDICATION,
    WSK_DATAGRAM_INDICATION, WSK_EVENT_ACCEPT, WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISABLE,
    WSK_EVENT_DISCONNECT, WSK_EVENT_RECEIVE, WSK_EVENT_RECEIVE_FROM, WSK_EVENT_SEND_BACKLOG,
    WSK_FLAG_ABORTIVE, WSK_FLAG_AT_DISPATCH_LEVEL, WSK_FLAG_CONNECTION_SOCKET,
    WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_LISTEN_SOCKET, WSK_FLAG_NODELAY, WSK_FLAG_WAITALL,
    WSK_INFINITE_WAIT, WSK_NO_WAIT, WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH,
    WSK_PROVIDER_DATAGRAM_DISPATCH, WSK_PROVIDER_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH,
    WSK_PROVIDER_NPI, WSK_REGISTRATION, WSK_SET_STATIC_EVENT_CALLBACKS, WSK_SOCKET, WskGetOption,
    WskIoctl, WskSetOption,
};

/// The completion mode of the kernel the current test booted (checked on every WSK call).
pub static MODE: Mutex<Completion> = Mutex::new(Completion::Deferred);

/// Boots a kernel (waiting for any other test's to go) and notes its completion mode.
pub fn boot(faults: Faults) -> Kernel {
    let mode = faults.completion;
    let kernel = Kernel::boot(Config::default().with_faults(faults));
    *MODE.lock().unwrap() = mode;
    kernel
}

/// Boots a kernel per plan (`wsk_host::testing::each_plan`) and runs `scenario` on a kernel
/// thread; the kernel must end with no leaks and no bugchecks.
pub fn each_plan(scenario: impl Fn() + Sync) {
    wsk_host::testing::each_plan(|kernel| {
        *MODE.lock().unwrap() = kernel.config().faults.completion;
        kernel.on_kernel_thread(&scenario);
    });
}

// ---- IRPs and their completion ----

pub struct Signal {
    pub state: Mutex<Option<(NTSTATUS, usize)>>,
    pub cv: Condvar,
    /// The IRQL the completion routine ran at, and whether it ran on the issuing thread.
    pub seen: Mutex<Option<(u8, std::thread::ThreadId)>>,
}

pub unsafe extern "system" fn on_done(
    _d: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    ctx: PVOID,
) -> NTSTATUS {
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
pub struct Io {
    pub irp: *mut IRP,
    pub signal: Box<Signal>,
}

impl Io {
    pub fn new() -> Self {
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
    pub fn prep(&self) -> *mut IRP {
        *self.signal.state.lock().unwrap() = None;
        *self.signal.seen.lock().unwrap() = None;
        // SAFETY: the IRP is ours and not in flight.
        unsafe { IoReuseIrp(self.irp, STATUS_UNSUCCESSFUL) };
        // SAFETY: as above; the signal lives as long as the Io.
        unsafe {
            IoSetCompletionRoutine(
                self.irp,
                Some(on_done),
                std::ptr::from_ref::<Signal>(&self.signal).cast_mut().cast(),
                true,
                true,
                true,
            );
        };
        self.irp
    }

    /// Checks what a WSK call returned: pending, or completed before it returned; under
    /// deferred completion always pending.
    pub fn issued(&self, returned: NTSTATUS) {
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

    pub fn wait(&self, what: &str) -> (NTSTATUS, usize) {
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

pub const TAG: u32 = u32::from_le_bytes(*b"Test");

/// Nonpaged pool with an MDL.
pub struct Buf {
    pub mem: *mut u8,
    pub len: usize,
    pub mdl: *mut MDL,
}

impl Buf {
    pub fn new(len: usize) -> Self {
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

    pub fn from(bytes: &[u8]) -> Self {
        let b = Self::new(bytes.len());
        // SAFETY: `b` has room for `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.mem, bytes.len()) };
        b
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: our buffer; no IRP holds it while the tests read it.
        unsafe { std::slice::from_raw_parts(self.mem, self.len) }
    }

    pub fn wsk(&self) -> WSK_BUF {
        WSK_BUF {
            Mdl: self.mdl,
            Offset: 0,
            Length: self.len,
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // Allocated in `new`; no IRP holds them any more.
        // SAFETY: see above.
        unsafe { (*self.mdl).Next = std::ptr::null_mut() };
        // SAFETY: see above; freed once.
        unsafe { IoFreeMdl(self.mdl) };
        // SAFETY: see above; freed once, after the MDL that described it.
        unsafe { ExFreePoolWithTag(self.mem.cast(), TAG) };
    }
}

/// A pattern of `n` bytes.
pub fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

// ---- addresses ----

/// Room for any socket address, 8-aligned.
#[repr(C, align(8))]
pub struct Addr(pub [u8; 128]);

impl Addr {
    pub fn zero() -> Self {
        Self([0; 128])
    }

    pub fn of(addr: SocketAddr) -> Self {
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

    pub fn ptr(&mut self) -> *mut SOCKADDR {
        self.0.as_mut_ptr().cast()
    }

    pub fn get(&self) -> Option<SocketAddr> {
        let family = u16::from_ne_bytes([self.0[0], self.0[1]]);
        // Aligned reads (the buffer is 8-aligned) of the member the family names.
        match family {
            AF_INET => {
                // SAFETY: see above.
                let a = unsafe { std::ptr::from_ref(self).cast::<SOCKADDR_IN>().read() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_b),
                    u16::from_be(a.sin_port),
                )))
            }
            AF_INET6 => {
                // SAFETY: see above.
                let a = unsafe { std::ptr::from_ref(self).cast::<SOCKADDR_IN6>().read() };
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

pub fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
    } else {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }
}

// ---- the client ----

pub static CLIENT_DISPATCH: WSK_CLIENT_DISPATCH = WSK_CLIENT_DISPATCH {
    Version: 0x0100,
    Reserved: 0,
    WskClientEvent: None,
};

/// A registered WSK client with a captured provider NPI.
pub struct Client {
    pub reg: Box<WSK_REGISTRATION>,
    pub npi: WSK_PROVIDER_NPI,
}

// SAFETY: the registration and the provider's client handle are usable from any thread.
unsafe impl Send for Client {}
// SAFETY: as above; shared use only reads the NPI.
unsafe impl Sync for Client {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Listen,
    Connection,
    Datagram,
}

/// A provider socket and its kind.
#[derive(Clone, Copy)]
pub struct Sock {
    pub s: *mut wsk_sys::WSK_SOCKET,
    pub kind: Kind,
}

// SAFETY: the provider's sockets are usable from any thread.
unsafe impl Send for Sock {}
// SAFETY: as above.
unsafe impl Sync for Sock {}

impl Client {
    pub fn register() -> Self {
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

    pub fn dispatch(&self) -> &WSK_PROVIDER_DISPATCH {
        // SAFETY: the provider's static table.
        unsafe { &*self.npi.Dispatch }
    }

    pub fn deregister(mut self) {
        // SAFETY: captured once in `register`.
        unsafe { wsk_sys::WskReleaseProviderNPI(&raw mut *self.reg) };
        // SAFETY: registered in `register`, deregistered once.
        unsafe { wsk_sys::WskDeregister(&raw mut *self.reg) };
    }

    pub fn try_socket(&self, kind: Kind, v6: bool) -> (NTSTATUS, Option<Sock>) {
        self.try_socket_with(kind, v6, std::ptr::null_mut(), std::ptr::null())
    }

    /// [`Client::try_socket`] with the socket's context and its client dispatch table (event
    /// callbacks for a connection socket), which must outlive the socket.
    pub fn try_socket_with(
        &self,
        kind: Kind,
        v6: bool,
        context: PVOID,
        dispatch: *const std::ffi::c_void,
    ) -> (NTSTATUS, Option<Sock>) {
        let (socket_type, protocol, flags) = match kind {
            Kind::Listen => (SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_LISTEN_SOCKET),
            Kind::Connection => (SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_CONNECTION_SOCKET),
            Kind::Datagram => (SOCK_DGRAM, IPPROTO_UDP, WSK_FLAG_DATAGRAM_SOCKET),
        };
        let io = Io::new();
        let create = self.dispatch().WskSocket.expect("WskSocket");
        // SAFETY: a live IRP; the client handle from the capture; the caller keeps `dispatch`
        // alive as long as the socket.
        let r = unsafe {
            create(
                self.npi.Client,
                if v6 { AF_INET6 } else { AF_INET },
                socket_type,
                protocol,
                flags,
                context,
                dispatch,
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

    pub fn socket(&self, kind: Kind, v6: bool) -> Sock {
        let (status, sock) = self.try_socket(kind, v6);
        assert_eq!(status, STATUS_SUCCESS, "WskSocket");
        sock.expect("socket")
    }

    /// A listener bound to loopback, and its address.
    pub fn listener(&self, v6: bool) -> (Sock, SocketAddr) {
        let l = self.socket(Kind::Listen, v6);
        assert_eq!(l.bind(loopback(v6)), STATUS_SUCCESS, "bind listener");
        let addr = l.local_addr().expect("listener address");
        (l, addr)
    }

    /// A connection socket connected to `to`.
    pub fn connected(&self, to: SocketAddr) -> Sock {
        let c = self.socket(Kind::Connection, to.is_ipv6());
        assert_eq!(c.bind(loopback(to.is_ipv6())), STATUS_SUCCESS, "bind");
        assert_eq!(c.connect(to), STATUS_SUCCESS, "connect");
        c
    }
}

impl Sock {
    /// The socket's provider dispatch table, of the type its kind says.
    fn dispatch(&self) -> *const std::ffi::c_void {
        // SAFETY: the provider's socket stays live until `close`.
        unsafe { (*self.s).Dispatch }
    }

    pub fn basic(&self) -> &WSK_PROVIDER_BASIC_DISPATCH {
        // SAFETY: every provider table starts with the basic calls.
        unsafe { &*self.dispatch().cast::<WSK_PROVIDER_BASIC_DISPATCH>() }
    }

    pub fn conn(&self) -> &WSK_PROVIDER_CONNECTION_DISPATCH {
        assert_eq!(self.kind, Kind::Connection);
        // SAFETY: a connection socket's table.
        unsafe { &*self.dispatch().cast::<WSK_PROVIDER_CONNECTION_DISPATCH>() }
    }

    pub fn listen(&self) -> &WSK_PROVIDER_LISTEN_DISPATCH {
        assert_eq!(self.kind, Kind::Listen);
        // SAFETY: a listen socket's table.
        unsafe { &*self.dispatch().cast::<WSK_PROVIDER_LISTEN_DISPATCH>() }
    }

    pub fn dgram(&self) -> &WSK_PROVIDER_DATAGRAM_DISPATCH {
        assert_eq!(self.kind, Kind::Datagram);
        // SAFETY: a datagram socket's table.
        unsafe { &*self.dispatch().cast::<WSK_PROVIDER_DATAGRAM_DISPATCH>() }
    }

    pub fn bind(&self, addr: SocketAddr) -> NTSTATUS {
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

    pub fn connect(&self, to: SocketAddr) -> NTSTATUS {
        let mut a = Addr::of(to);
        let io = Io::new();
        let wsk_connect = self.conn().WskConnect.expect("WskConnect");
        // SAFETY: live socket, address and IRP.
        let r = unsafe { wsk_connect(self.s, a.ptr(), 0, io.prep()) };
        io.issued(r);
        io.wait("WskConnect").0
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
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

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        let mut a = Addr::zero();
        let io = Io::new();
        let get_remote_address = self.conn().WskGetRemoteAddress.expect("remote");
        // SAFETY: live socket, buffer and IRP.
        let r = unsafe { get_remote_address(self.s, a.ptr(), io.prep()) };
        io.issued(r);
        (io.wait("WskGetRemoteAddress").0 == STATUS_SUCCESS)
            .then(|| a.get())
            .flatten()
    }

    /// Starts an accept; the result comes with `wait_accept`.
    pub fn start_accept(&self, io: &Io, local: &mut Addr, remote: &mut Addr) {
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

    pub fn accept(&self) -> (Sock, SocketAddr, SocketAddr) {
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

    pub fn start_send(&self, io: &Io, buf: &mut WSK_BUF, flags: u32) {
        // SAFETY: live socket, WSK_BUF and IRP; the buffer outlives the wait.
        let r = unsafe { self.conn().WskSend.expect("WskSend")(self.s, buf, flags, io.prep()) };
        io.issued(r);
    }

    pub fn send(&self, bytes: &[u8], flags: u32) -> (NTSTATUS, usize) {
        let b = Buf::from(bytes);
        let mut w = b.wsk();
        let io = Io::new();
        self.start_send(&io, &mut w, flags);
        io.wait("WskSend")
    }

    pub fn start_recv(&self, io: &Io, buf: &mut WSK_BUF, flags: u32) {
        let wsk_receive = self.conn().WskReceive.expect("WskReceive");
        // SAFETY: live socket, WSK_BUF and IRP; the buffer outlives the wait.
        let r = unsafe { wsk_receive(self.s, buf, flags, io.prep()) };
        io.issued(r);
    }

    pub fn recv(&self, len: usize, flags: u32) -> (NTSTATUS, Vec<u8>) {
        let b = Buf::new(len);
        let mut w = b.wsk();
        let io = Io::new();
        self.start_recv(&io, &mut w, flags);
        let (status, n) = io.wait("WskReceive");
        (status, b.bytes()[..n.min(len)].to_vec())
    }

    pub fn disconnect(&self, buf: Option<&mut WSK_BUF>, flags: u32) -> NTSTATUS {
        let io = Io::new();
        let p = buf.map_or(std::ptr::null_mut(), std::ptr::from_mut);
        // SAFETY: live socket, WSK_BUF (or null) and IRP.
        let r = unsafe {
            self.conn().WskDisconnect.expect("WskDisconnect")(self.s, p, flags, io.prep())
        };
        io.issued(r);
        io.wait("WskDisconnect").0
    }

    pub fn set_option(&self, level: u32, code: u32, value: u32) -> NTSTATUS {
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

    pub fn get_option(&self, level: u32, code: u32) -> (NTSTATUS, u32) {
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
    pub fn get_option_now(&self, level: u32, code: u32) -> (NTSTATUS, u32, usize) {
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

    pub fn close(self) {
        let io = Io::new();
        // SAFETY: live socket and IRP; never touched again.
        let r = unsafe { self.basic().WskCloseSocket.expect("WskCloseSocket")(self.s, io.prep()) };
        io.issued(r);
        assert_eq!(io.wait("WskCloseSocket").0, STATUS_SUCCESS);
    }
}

/// Runs `f` on a plain thread (a std peer), joined by the caller.
pub fn peer<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> std::thread::JoinHandle<R> {
    std::thread::spawn(f)
}

pub fn std_stream(s: &TcpStream) -> &TcpStream {
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

/// A loopback port nothing listens on. Not a just-closed ephemeral port: another test may
/// take that port again, and Linux lets a socket bound to an ephemeral port that equals its
/// destination connect to itself. Port 1 is outside the ephemeral range and unused here.
pub fn closed_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 1))
}

pub fn ipv6_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// Runs `f` on a kernel thread and expects the verifier to fail it with `name`.
pub fn expect_bugcheck(kernel: &Kernel, name: &str, f: impl FnOnce() + Send) {
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

/// Calls a client has in progress on one socket: `WskCloseSocket` (and any other call from
/// another thread that must not overlap) waits until none is (the rule of `WskCloseSocket`).
#[derive(Default)]
pub struct CallsInProgress(pub std::sync::atomic::AtomicUsize);

impl CallsInProgress {
    pub fn enter(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn leave(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits (bounded) until every call returned.
    pub fn wait_none(&self) {
        let deadline = std::time::Instant::now() + BOUND;
        while self.0.load(std::sync::atomic::Ordering::SeqCst) != 0 {
            assert!(std::time::Instant::now() < deadline, "calls never returned");
            std::thread::yield_now();
        }
    }
}

// ---- event callbacks ----

/// `SO_WSK_EVENT_CALLBACK`'s and `WSK_SET_STATIC_EVENT_CALLBACKS`'s `NpiId` point here.
pub static NPI_WSK_ID: wsk_sys::GUID = wsk_sys::NPI_WSK_INTERFACE_ID;

/// `SO_WSK_EVENT_CALLBACK` with `mask` on `sock`, with `irp` (or none): what
/// `WskControlSocket` returned (the caller waits for an IRP it passed).
pub fn control_events(sock: &Sock, mask: u32, irp: *mut IRP) -> NTSTATUS {
    let mut control = wsk_sys::WSK_EVENT_CALLBACK_CONTROL {
        NpiId: &raw const NPI_WSK_ID,
        EventMask: mask,
    };
    // SAFETY: live socket and input; an IRP or none.
    unsafe {
        sock.basic().WskControlSocket.expect("WskControlSocket")(
            sock.s,
            WskSetOption,
            wsk_sys::SO_WSK_EVENT_CALLBACK,
            SOL_SOCKET,
            size_of::<wsk_sys::WSK_EVENT_CALLBACK_CONTROL>(),
            (&raw mut control).cast(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            irp,
        )
    }
}

/// The bytes of a `WSK_DATA_INDICATION` chain the provider indicated.
pub fn chain_bytes(mut link: *mut wsk_sys::WSK_DATA_INDICATION) -> Vec<u8> {
    let mut out = Vec::new();
    while !link.is_null() {
        // SAFETY: the provider's live chain.
        let wsk_sys::WSK_DATA_INDICATION { Next, Buffer } = unsafe { *link };
        // SAFETY: the provider's MDL over its own memory.
        let base = unsafe { wsk_sys::MmGetSystemAddressForMdlSafe(Buffer.Mdl, 16) };
        // SAFETY: the indicated range starts inside the MDL's bytes.
        let first = unsafe { base.cast::<u8>().add(Buffer.Offset as usize) };
        // SAFETY: the indicated range lies in the MDL's bytes.
        let bytes = unsafe { std::slice::from_raw_parts(first, Buffer.Length) };
        out.extend_from_slice(bytes);
        link = Next;
    }
    out
}
