//! The callback chain. One listen socket with one `WskAccept` always posted; each accepted
//! connection has one data IRP that alternates `WskReceive` → `WskSend` → `WskReceive` ... from
//! its completion routines, and one close IRP. A receive of 0 bytes (the peer's FIN) is
//! answered with a graceful `WskDisconnect` and then `WskCloseSocket`; any error closes the
//! connection at once (abortively). Every completion routine returns
//! `STATUS_MORE_PROCESSING_REQUIRED` (the IRPs are ours and reused) and is registered with
//! `IoSetCompletionRoutineEx` against the driver's device object, so the I/O manager keeps the
//! driver loaded until the routine has returned; under Wine, whose
//! `IoSetCompletionRoutineEx` is a stub that raises, with `IoSetCompletionRoutine` (as
//! `wsk-net` does).
//!
//! Memory: everything in nonpaged pool; per connection its object, a 16 KiB buffer (the echo
//! driver's size) described by an MDL, and two IRPs, allocated before the accept that fills
//! them is posted (so an accepted socket always has somewhere to go). Nothing is allocated per
//! operation except the I/O manager's `IoSetCompletionRoutineEx` context.
//!
//! Lifetime: a connection object is reference counted (one for the open socket, released by
//! the close's completion; one per data IRP in flight, released at the end of its routine)
//! and freed with the last reference. [`stop`] requests the close of the listener and of every
//! connection (`gate::Gate` keeps any WSK call from following a close) and waits
//! until the listener's close, the last accept and every connection have finished, then
//! deregisters.
//!
//! IRQL: completion routines run at <= `DISPATCH_LEVEL` on any processor, possibly before the
//! WSK call that started the IRP has returned; [`start`] and [`stop`] run at `PASSIVE_LEVEL`.

use core::cell::UnsafeCell;
use core::net::SocketAddr;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use wsk_sys::{
    self as sys, DEVICE_OBJECT, DRIVER_OBJECT, IO_COMPLETION_ROUTINE, IRP, KEVENT, KSPIN_LOCK,
    LIST_ENTRY, MDL, NTSTATUS, PVOID, SOCKADDR_INET, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_MORE_PROCESSING_REQUIRED, STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
    WSK_BUF, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_PROVIDER_BASIC_DISPATCH,
    WSK_PROVIDER_CONNECTION_DISPATCH, WSK_PROVIDER_LISTEN_DISPATCH, WSK_PROVIDER_NPI,
    WSK_REGISTRATION, WSK_SOCKET,
};
use wsk_sys::{HANDLE, KernelMode, THREAD_ALL_ACCESS};

use crate::gate::Gate;

/// Receive buffer per connection: the echo driver's (`wskecho`) size.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// How long `DriverEntry` waits for the WSK provider.
const CAPTURE_WAIT_MS: u32 = 10_000;
/// Failed accepts in a row after which the floor stops accepting (and says so): a provider
/// that fails every accept would otherwise spin the accept chain forever.
const ACCEPT_FAILURES_LIMIT: usize = 1000;

const SERVER_TAG: u32 = sys::pool_tag(*b"FlrS");
const CONNECTION_TAG: u32 = sys::pool_tag(*b"FlrC");
const BUFFER_TAG: u32 = sys::pool_tag(*b"FlrB");

/// The running server, between [`start`] and [`stop`]: one at a time, and loadable again after
/// [`stop`] (the host tests load it once per fault plan).
static SERVER: AtomicPtr<Server> = AtomicPtr::new(ptr::null_mut());

/// The server object (nonpaged pool).
struct Server {
    registration: UnsafeCell<WSK_REGISTRATION>,
    client_dispatch: WSK_CLIENT_DISPATCH,
    client_npi: UnsafeCell<WSK_CLIENT_NPI>,
    provider: UnsafeCell<WSK_PROVIDER_NPI>,
    /// The device object `IoSetCompletionRoutineEx` references; null under Wine.
    device: *mut DEVICE_OBJECT,
    listen: AtomicPtr<WSK_SOCKET>,
    listen_gate: Gate,
    /// The accept's IRP (also the set-up calls' in `start`).
    accept_irp: *mut IRP,
    listen_close_irp: *mut IRP,
    /// Where `WskAccept` writes the local and remote addresses.
    accept_addresses: UnsafeCell<[SOCKADDR_INET; 2]>,
    /// The connection the posted accept fills; owned by the accept chain.
    spare: AtomicPtr<Connection>,
    accept_failures: AtomicUsize,
    /// What `stop` waits for: the listen socket until its close completed, the accept in
    /// flight, and every connection object (the spare included).
    outstanding: AtomicUsize,
    all_done: UnsafeCell<KEVENT>,
    /// Guards `connections` and each connection's `listed`.
    lock: UnsafeCell<KSPIN_LOCK>,
    connections: UnsafeCell<LIST_ENTRY>,
    served: AtomicUsize,
    /// Whether completion routines hand the next call to the worker thread instead of making
    /// it (see [`Deferral`]).
    defer: bool,
    /// Connections with a next step for the worker (a take-all stack through `work_next`).
    work_head: AtomicPtr<Connection>,
    /// The worker is to post the next accept.
    accept_wanted: AtomicBool,
    work_event: UnsafeCell<KEVENT>,
    worker_stop: AtomicBool,
    /// The worker thread's object (referenced), or null.
    worker: AtomicPtr<core::ffi::c_void>,
}

/// One accepted connection (nonpaged pool). `link` first: a list entry is the object.
#[repr(C)]
struct Connection {
    link: UnsafeCell<LIST_ENTRY>,
    listed: UnsafeCell<bool>,
    server: NonNull<Server>,
    socket: AtomicPtr<WSK_SOCKET>,
    gate: Gate,
    refs: AtomicUsize,
    data_irp: *mut IRP,
    close_irp: *mut IRP,
    buffer: PVOID,
    mdl: *mut MDL,
    /// The data IRP's buffer description; only the routine of the one data IRP in flight (or
    /// its poster) touches it.
    wsk_buf: UnsafeCell<WSK_BUF>,
    /// Bytes of the current echo: received, and sent so far.
    received: AtomicUsize,
    sent: AtomicUsize,
    /// The worker's next step for this connection ([`Step`] as a byte) and its link in the
    /// server's work stack.
    work: AtomicU8,
    work_next: AtomicPtr<Connection>,
    /// Data-IRP completion routines run so far: tells a WSK call that failed without
    /// completing its IRP (Wine's stubs) from one that completed it inline.
    completions: AtomicUsize,
}

/// Where the next call of a chain is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Inside the completion routine, as the WDK samples do (Windows, the host kernel).
    Inline,
    /// On a worker system thread the routine wakes. Wine 8's netio completes an IRP while
    /// holding its socket's lock and before it frees the request's slot (10 per socket), so a
    /// call made from inside the routine on the same socket fails once the slots run out, and
    /// a close made there frees the socket under the provider's feet. Chosen automatically
    /// under Wine; the host tests choose it to run this path under the fault plans.
    Worker,
}

/// Registers with WSK, creates and binds the listen socket to `listen` (waiting for both) and
/// posts the first accept. Under Wine the chain is always [`Deferral::Worker`].
///
/// # Errors
/// The failing call's status; nothing stays allocated or registered.
///
/// # Safety
/// `PASSIVE_LEVEL`; `driver` is the kernel's live driver object; not running already.
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub unsafe fn start(
    driver: *mut DRIVER_OBJECT,
    listen: SocketAddr,
    deferral: Deferral,
) -> Result<(), NTSTATUS> {
    if !SERVER.load(Ordering::Acquire).is_null() {
        return Err(sys::STATUS_INVALID_DEVICE_STATE);
    }
    // SAFETY: PASSIVE_LEVEL (caller).
    unsafe { sys::init_pool_routines() };
    // SAFETY: PASSIVE_LEVEL (caller).
    let wine = unsafe { sys::kernel_is_wine() };
    let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
    if !wine {
        // SAFETY: PASSIVE_LEVEL; the live driver object (caller); an unnamed device object
        // without extension is all IoSetCompletionRoutineEx needs.
        let status = unsafe {
            sys::IoCreateDevice(
                driver,
                0,
                ptr::null_mut(),
                sys::FILE_DEVICE_NETWORK,
                sys::FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut device,
            )
        };
        if !sys::NT_SUCCESS(status) {
            return Err(status);
        }
    }
    let defer = wine || deferral == Deferral::Worker;
    let Some(server) = Server::allocate(device, defer) else {
        delete_device(device);
        return Err(STATUS_INSUFFICIENT_RESOURCES);
    };
    // SAFETY: just allocated and initialised; shared with WSK only from here on.
    let this = unsafe { server.as_ref() };
    if let Err(status) = this.register() {
        // SAFETY: nothing registered, no IRP issued: ours alone.
        unsafe { Server::free(server) };
        return Err(status);
    }
    if let Err(status) = this.open_listener(listen) {
        this.deregister();
        // SAFETY: deregistered, no socket open: ours alone.
        unsafe { Server::free(server) };
        return Err(status);
    }
    if defer && let Err(status) = this.start_worker() {
        this.close_listener_now();
        this.deregister();
        // SAFETY: deregistered, no socket open, no worker: ours alone.
        unsafe { Server::free(server) };
        return Err(status);
    }
    if defer {
        sys::kprint!("wskfloor: the chain's next calls run on a worker thread\n");
    }
    // The listen socket is open until its close completes.
    this.outstanding.store(1, Ordering::Release);
    SERVER.store(server.as_ptr(), Ordering::Release);
    post_accept(this);
    Ok(())
}

/// Closes the listener and every connection, waits until all are closed and every completion
/// routine has finished with them, deregisters and frees the server. Returns how many
/// connections were accepted in all.
///
/// # Safety
/// `PASSIVE_LEVEL`, after a successful [`start`].
///
/// # IRQL
/// `PASSIVE_LEVEL`.
pub unsafe fn stop() -> usize {
    let Some(server) = NonNull::new(SERVER.swap(ptr::null_mut(), Ordering::AcqRel)) else {
        return 0;
    };
    // SAFETY: live until freed at the end of this function.
    let this = unsafe { server.as_ref() };
    if this.listen_gate.request_close() {
        issue_listen_close(this);
    }
    this.close_all_connections();
    this.wait_all_done();
    this.stop_worker();
    let accepted = this.served.load(Ordering::Acquire);
    this.deregister();
    // SAFETY: every socket closed and every routine done (outstanding reached 0 as each one's
    // last act), deregistered: nothing refers to the server any more.
    unsafe { Server::free(server) };
    accepted
}

impl Server {
    /// A zeroed server in pool with its two IRPs; null pieces cleaned up on failure.
    fn allocate(device: *mut DEVICE_OBJECT, defer: bool) -> Option<NonNull<Self>> {
        // SAFETY: PASSIVE_LEVEL (start's caller): nonpaged allocation.
        let memory = unsafe { sys::allocate_nonpaged(size_of::<Self>(), SERVER_TAG) };
        let memory = NonNull::new(memory.cast::<Self>())?;
        let accept_irp = allocate_irp();
        let listen_close_irp = allocate_irp();
        if accept_irp.is_null() || listen_close_irp.is_null() {
            free_irp(accept_irp);
            free_irp(listen_close_irp);
            // SAFETY: allocated above with this tag, never initialised or shared.
            unsafe { sys::ExFreePoolWithTag(memory.as_ptr().cast(), SERVER_TAG) };
            return None;
        }
        let value = Self {
            // SAFETY: all-zero is the unregistered WSK_REGISTRATION: plain data.
            registration: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            client_dispatch: WSK_CLIENT_DISPATCH {
                Version: sys::MAKE_WSK_VERSION(1, 0),
                Reserved: 0,
                WskClientEvent: None,
            },
            client_npi: UnsafeCell::new(WSK_CLIENT_NPI {
                ClientContext: ptr::null_mut(),
                Dispatch: ptr::null(),
            }),
            provider: UnsafeCell::new(WSK_PROVIDER_NPI {
                Client: ptr::null_mut(),
                Dispatch: ptr::null(),
            }),
            device,
            listen: AtomicPtr::new(ptr::null_mut()),
            listen_gate: Gate::new(),
            accept_irp,
            listen_close_irp,
            accept_addresses: UnsafeCell::new([SOCKADDR_INET::zeroed(); 2]),
            spare: AtomicPtr::new(ptr::null_mut()),
            accept_failures: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            // SAFETY: all-zero is a valid KEVENT to hand KeInitializeEvent: plain data.
            all_done: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            lock: UnsafeCell::new(0),
            connections: UnsafeCell::new(LIST_ENTRY {
                Flink: ptr::null_mut(),
                Blink: ptr::null_mut(),
            }),
            served: AtomicUsize::new(0),
            defer,
            work_head: AtomicPtr::new(ptr::null_mut()),
            accept_wanted: AtomicBool::new(false),
            // SAFETY: all-zero is a valid KEVENT to hand KeInitializeEvent: plain data.
            work_event: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            worker_stop: AtomicBool::new(false),
            worker: AtomicPtr::new(ptr::null_mut()),
        };
        // SAFETY: a fresh allocation of the right size; pool memory is 16-aligned.
        unsafe { memory.as_ptr().write(value) };
        // SAFETY: just written, not shared yet.
        let this = unsafe { memory.as_ref() };
        // SAFETY: the list head is in the object at its final address.
        unsafe { sys::InitializeListHead(this.connections.get()) };
        // SAFETY: the event is in nonpaged pool at its final address.
        unsafe { sys::KeInitializeEvent(this.all_done.get(), sys::NotificationEvent, 0) };
        // SAFETY: as above.
        unsafe { sys::KeInitializeEvent(this.work_event.get(), sys::SynchronizationEvent, 0) };
        Some(memory)
    }

    /// Frees the server, its IRPs and its device object.
    ///
    /// # Safety
    /// Nothing refers to the server any more (never registered, or deregistered with every
    /// routine done).
    unsafe fn free(this: NonNull<Self>) {
        // SAFETY: the caller's guarantee: ours alone.
        let server = unsafe { this.as_ref() };
        free_irp(server.accept_irp);
        free_irp(server.listen_close_irp);
        delete_device(server.device);
        // SAFETY: allocated in `allocate` with this tag; nothing refers to it (caller).
        unsafe { sys::ExFreePoolWithTag(this.as_ptr().cast(), SERVER_TAG) };
    }

    /// `WskRegister` and `WskCaptureProviderNPI`. `PASSIVE_LEVEL`.
    fn register(&self) -> Result<(), NTSTATUS> {
        // SAFETY: not yet shared with WSK: ours to write.
        unsafe {
            self.client_npi.get().write(WSK_CLIENT_NPI {
                ClientContext: ptr::from_ref(self).cast_mut().cast(),
                Dispatch: &raw const self.client_dispatch,
            });
        }
        // SAFETY: PASSIVE_LEVEL; both structures live in nonpaged pool until deregistration.
        let status = unsafe { sys::WskRegister(self.client_npi.get(), self.registration.get()) };
        if !sys::NT_SUCCESS(status) {
            return Err(status);
        }
        // SAFETY: PASSIVE_LEVEL with a bounded wait; the registration is live.
        let status = unsafe {
            sys::WskCaptureProviderNPI(
                self.registration.get(),
                CAPTURE_WAIT_MS,
                self.provider.get(),
            )
        };
        if !sys::NT_SUCCESS(status) {
            // SAFETY: registered above, no capture, no socket: returns at once.
            unsafe { sys::WskDeregister(self.registration.get()) };
            return Err(status);
        }
        Ok(())
    }

    /// Releases the provider and deregisters (after every socket is closed). `PASSIVE_LEVEL`.
    fn deregister(&self) {
        // SAFETY: the one capture taken in `register`.
        unsafe { sys::WskReleaseProviderNPI(self.registration.get()) };
        // SAFETY: PASSIVE_LEVEL; every socket closed: returns once the provider drained.
        unsafe { sys::WskDeregister(self.registration.get()) };
    }

    /// Creates the listen socket and binds it, each call waited for on the accept IRP.
    /// `PASSIVE_LEVEL`.
    fn open_listener(&self, listen: SocketAddr) -> Result<(), NTSTATUS> {
        // SAFETY: captured in `register`, unchanged until `deregister`.
        let provider = unsafe { &*self.provider.get() };
        // SAFETY: the provider's dispatch table outlives the capture.
        let Some(create) = (unsafe { &*provider.Dispatch }).WskSocket else {
            return Err(STATUS_NOT_IMPLEMENTED);
        };
        let created = wait_for(self.accept_irp, |irp| {
            // SAFETY: the captured client; no context or dispatch (a listener without
            // callbacks); a prepared IRP of ours.
            unsafe {
                create(
                    provider.Client,
                    sys::AF_INET,
                    sys::SOCK_STREAM,
                    sys::IPPROTO_TCP,
                    sys::WSK_FLAG_LISTEN_SOCKET,
                    ptr::null_mut(),
                    ptr::null(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        })?;
        let socket = created as *mut WSK_SOCKET;
        if socket.is_null() {
            return Err(STATUS_UNSUCCESSFUL);
        }
        self.listen.store(socket, Ordering::Release);
        let mut address = SOCKADDR_INET::from_socket_addr(&listen);
        // SAFETY: a listen socket's table is the listen dispatch.
        let table = unsafe { dispatch::<WSK_PROVIDER_LISTEN_DISPATCH>(socket) };
        let bound = match table.WskBind {
            Some(bind) => wait_for(self.accept_irp, |irp| {
                // SAFETY: the open listen socket; the address lives on this stack until the
                // bind completed (waited for).
                unsafe { bind(socket, (&raw mut address).cast(), 0, irp) }
            }),
            None => Err(STATUS_NOT_IMPLEMENTED),
        };
        if let Err(status) = bound {
            self.close_listener_now();
            return Err(status);
        }
        Ok(())
    }

    /// Closes the listen socket and waits for it (no accept was posted). `PASSIVE_LEVEL`.
    fn close_listener_now(&self) {
        let socket = self.listen.load(Ordering::Acquire);
        // SAFETY: the open listen socket; every table starts with the basic dispatch.
        let table = unsafe { dispatch::<WSK_PROVIDER_BASIC_DISPATCH>(socket) };
        let closed = match table.WskCloseSocket {
            // SAFETY: the open listen socket, no call in progress; waited for.
            Some(close) => wait_for(self.accept_irp, |irp| unsafe { close(socket, irp) }),
            None => Err(STATUS_NOT_IMPLEMENTED),
        };
        if closed.is_err() {
            sys::kprint!("wskfloor: closing the listener failed\n");
        }
    }

    /// Starts the worker thread ([`Deferral::Worker`]). `PASSIVE_LEVEL`.
    fn start_worker(&self) -> Result<(), NTSTATUS> {
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; a valid out-pointer; the thread gets the server, which
        // outlives it (stop waits for the thread before freeing the server).
        let status = unsafe {
            sys::PsCreateSystemThread(
                &raw mut handle,
                THREAD_ALL_ACCESS,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                Some(worker_main),
                ptr::from_ref(self).cast_mut().cast(),
            )
        };
        if !sys::NT_SUCCESS(status) {
            return Err(status);
        }
        let mut thread: PVOID = ptr::null_mut();
        // SAFETY: the handle just created; a null object type skips the type check.
        let status = unsafe {
            sys::ObReferenceObjectByHandle(
                handle,
                THREAD_ALL_ACCESS,
                ptr::null_mut(),
                KernelMode,
                &raw mut thread,
                ptr::null_mut(),
            )
        };
        // SAFETY: our handle, closed once; the referenced object outlives it.
        unsafe { sys::ZwClose(handle) };
        if !sys::NT_SUCCESS(status) {
            // It runs but cannot be waited for: tell it to leave (it touches nothing else).
            self.worker_stop.store(true, Ordering::Release);
            // SAFETY: the event lives in the server.
            unsafe { sys::KeSetEvent(self.work_event.get(), 0, 0) };
            return Err(status);
        }
        self.worker.store(thread, Ordering::Release);
        Ok(())
    }

    /// Stops the worker (after everything is done) and waits until it has ended.
    /// `PASSIVE_LEVEL`.
    fn stop_worker(&self) {
        let thread = self.worker.swap(ptr::null_mut(), Ordering::AcqRel);
        if thread.is_null() {
            return;
        }
        self.worker_stop.store(true, Ordering::Release);
        // SAFETY: the event lives in the server.
        unsafe { sys::KeSetEvent(self.work_event.get(), 0, 0) };
        // SAFETY: PASSIVE_LEVEL; a referenced thread object: returns once it terminated.
        unsafe {
            sys::KeWaitForSingleObject(thread, sys::Executive, KernelMode, 0, ptr::null_mut())
        };
        // SAFETY: the reference start_worker took, given back once.
        unsafe { sys::ObfDereferenceObject(thread) };
    }

    /// Hands `step` for `connection` to the worker, with a reference for it.
    fn queue(&self, connection: &Connection, step: Step) {
        connection.add_ref();
        connection.work.store(step as u8, Ordering::Relaxed);
        let this = ptr::from_ref(connection).cast_mut();
        let mut head = self.work_head.load(Ordering::Acquire);
        loop {
            connection.work_next.store(head, Ordering::Relaxed);
            match self.work_head.compare_exchange_weak(
                head,
                this,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => head = seen,
            }
        }
        // SAFETY: the event lives in the server.
        unsafe { sys::KeSetEvent(self.work_event.get(), 0, 0) };
    }

    /// Requests the close of every listed connection, one at a time (the close may complete
    /// inline, and its routine takes the lock). New connections check the listener's close
    /// request after listing themselves, so none is missed. `PASSIVE_LEVEL`.
    fn close_all_connections(&self) {
        loop {
            let next = self.with_lock(|| {
                // SAFETY: the list is ours under the lock; every entry is a live connection
                // (unlisted under the lock before it is freed).
                unsafe { self.first_open_connection() }
            });
            let Some(connection) = next else { break };
            // SAFETY: the reference taken under the lock keeps it alive.
            let this = unsafe { connection.as_ref() };
            if this.gate.request_close() {
                issue_close(this);
            }
            // SAFETY: the reference taken by `first_open_connection`.
            unsafe { release(connection) };
        }
    }

    /// The first listed connection whose close is not yet requested, with a reference taken.
    ///
    /// # Safety
    /// Under the lock.
    unsafe fn first_open_connection(&self) -> Option<NonNull<Connection>> {
        let head = self.connections.get();
        // SAFETY: under the lock (caller): the list is consistent.
        let mut entry = unsafe { (*head).Flink };
        while entry != head {
            // `link` is the first field of the repr(C) connection.
            let connection = entry.cast::<Connection>();
            // SAFETY: a listed connection is live under the lock.
            let this = unsafe { &*connection };
            if !this.gate.close_requested() && this.try_add_ref() {
                return NonNull::new(connection);
            }
            // SAFETY: as above.
            entry = unsafe { (*entry).Flink };
        }
        None
    }

    /// Runs `f` under the server's spin lock. IRQL <= `DISPATCH_LEVEL`.
    fn with_lock<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: the lock lives in the server; IRQL <= DISPATCH_LEVEL.
        let irql = unsafe { sys::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        let result = f();
        // SAFETY: acquired above, restoring the IRQL it returned.
        unsafe { sys::KeReleaseSpinLock(self.lock.get(), irql) };
        result
    }

    /// Counts something `stop` must wait for.
    fn hold(&self) {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
    }

    /// Ends one thing `stop` waits for: the caller's last touch of the server.
    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the event lives in the server, freed only after stop saw it set.
            unsafe { sys::KeSetEvent(self.all_done.get(), 0, 0) };
        }
    }

    /// Waits until everything held is done, saying so every 5 s. `PASSIVE_LEVEL`.
    fn wait_all_done(&self) {
        loop {
            let mut timeout: i64 = -50_000_000;
            // SAFETY: PASSIVE_LEVEL; the event lives in the server.
            let status = unsafe {
                sys::KeWaitForSingleObject(
                    self.all_done.get().cast(),
                    sys::Executive,
                    sys::KernelMode,
                    0,
                    &raw mut timeout,
                )
            };
            if status != sys::STATUS_TIMEOUT {
                return;
            }
            sys::kprint!(
                "wskfloor: unload: {} sockets or routines still outstanding; waiting\n",
                self.outstanding.load(Ordering::Acquire)
            );
        }
    }
}

impl Connection {
    /// A connection object with its buffer, MDL and IRPs, counted in the server; `None` when
    /// out of memory. IRQL <= `DISPATCH_LEVEL`.
    fn allocate(server: &Server) -> Option<NonNull<Self>> {
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
        let memory = unsafe { sys::allocate_nonpaged(size_of::<Self>(), CONNECTION_TAG) };
        let memory = NonNull::new(memory.cast::<Self>())?;
        // SAFETY: as above.
        let buffer = unsafe { sys::allocate_nonpaged(BUFFER_SIZE, BUFFER_TAG) };
        let length = u32::try_from(BUFFER_SIZE).unwrap_or(u32::MAX);
        let mdl = if buffer.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: a nonpaged buffer of `length` bytes; no IRP to attach to.
            unsafe { sys::IoAllocateMdl(buffer, length, 0, 0, ptr::null_mut()) }
        };
        let data_irp = allocate_irp();
        let close_irp = allocate_irp();
        if mdl.is_null() || data_irp.is_null() || close_irp.is_null() {
            free_parts(buffer, mdl, data_irp, close_irp);
            // SAFETY: allocated above with this tag, never initialised.
            unsafe { sys::ExFreePoolWithTag(memory.as_ptr().cast(), CONNECTION_TAG) };
            return None;
        }
        // SAFETY: an MDL for a nonpaged buffer, not yet built.
        unsafe { sys::MmBuildMdlForNonPagedPool(mdl) };
        let value = Self {
            link: UnsafeCell::new(LIST_ENTRY {
                Flink: ptr::null_mut(),
                Blink: ptr::null_mut(),
            }),
            listed: UnsafeCell::new(false),
            server: NonNull::from(server),
            socket: AtomicPtr::new(ptr::null_mut()),
            gate: Gate::new(),
            refs: AtomicUsize::new(1),
            data_irp,
            close_irp,
            buffer,
            mdl,
            wsk_buf: UnsafeCell::new(WSK_BUF {
                Mdl: mdl,
                Offset: 0,
                Length: BUFFER_SIZE,
            }),
            received: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
            work: AtomicU8::new(0),
            work_next: AtomicPtr::new(ptr::null_mut()),
            completions: AtomicUsize::new(0),
        };
        // SAFETY: a fresh allocation of the right size; pool memory is 16-aligned.
        unsafe { memory.as_ptr().write(value) };
        server.hold();
        Some(memory)
    }

    fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes a reference unless the count already reached zero (being freed).
    fn try_add_ref(&self) -> bool {
        let mut current = self.refs.load(Ordering::Acquire);
        while current != 0 {
            match self.refs.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
        false
    }

    fn server(&self) -> &Server {
        // SAFETY: the server outlives its connections (stop waits for every one).
        unsafe { self.server.as_ref() }
    }

    fn connection_dispatch(&self) -> &WSK_PROVIDER_CONNECTION_DISPATCH {
        let socket = self.socket.load(Ordering::Acquire);
        // SAFETY: called only inside the gate, so the socket is open; an accepted socket's
        // table is the connection dispatch, which outlives it.
        unsafe { dispatch::<WSK_PROVIDER_CONNECTION_DISPATCH>(socket) }
    }
}

/// Drops a reference; the last one unlists the connection, frees it and ends its count in the
/// server. IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// The caller owns one reference, which it gives up.
unsafe fn release(connection: NonNull<Connection>) {
    // SAFETY: the caller's reference keeps it alive.
    let this = unsafe { connection.as_ref() };
    if this.refs.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let server = this.server;
    // SAFETY: the server outlives its connections.
    let server_ref = unsafe { server.as_ref() };
    server_ref.with_lock(|| {
        // SAFETY: `listed` and the list are guarded by the lock we hold.
        if unsafe { *this.listed.get() } {
            // SAFETY: a listed entry, under the lock.
            unsafe { sys::RemoveEntryList(this.link.get()) };
        }
    });
    free_parts(this.buffer, this.mdl, this.data_irp, this.close_irp);
    // SAFETY: the last reference: nobody else can reach it; allocated with this tag.
    unsafe { sys::ExFreePoolWithTag(connection.as_ptr().cast(), CONNECTION_TAG) };
    server_ref.done();
}

/// Frees what `Connection::allocate` allocated (null parts skipped).
fn free_parts(buffer: PVOID, mdl: *mut MDL, data_irp: *mut IRP, close_irp: *mut IRP) {
    free_irp(data_irp);
    free_irp(close_irp);
    if !mdl.is_null() {
        // SAFETY: allocated by IoAllocateMdl, no longer in any I/O.
        unsafe { sys::IoFreeMdl(mdl) };
    }
    if !buffer.is_null() {
        // SAFETY: allocated with this tag; its MDL is gone and no I/O uses it.
        unsafe { sys::ExFreePoolWithTag(buffer, BUFFER_TAG) };
    }
}

/// The provider's dispatch table of an open `socket`, as `T`.
///
/// # Safety
/// `socket` is open and its table is a `T` (every table starts with the basic one).
unsafe fn dispatch<'t, T>(socket: *mut WSK_SOCKET) -> &'t T {
    // SAFETY: an open socket (caller).
    let table = unsafe { (*socket).Dispatch };
    // SAFETY: the provider's table outlives its sockets, and it is a `T` (caller).
    unsafe { &*table.cast::<T>() }
}

fn allocate_irp() -> *mut IRP {
    // SAFETY: IRQL <= DISPATCH_LEVEL; one stack location: the IRPs go straight to WSK.
    unsafe { sys::IoAllocateIrp(1, 0) }
}

fn free_irp(irp: *mut IRP) {
    if !irp.is_null() {
        // SAFETY: allocated by IoAllocateIrp and not in flight (callers' invariant).
        unsafe { sys::IoFreeIrp(irp) };
    }
}

fn delete_device(device: *mut DEVICE_OBJECT) {
    if !device.is_null() {
        // SAFETY: PASSIVE_LEVEL; created by start; it goes once the last completion routine
        // registered against it has returned.
        unsafe { sys::IoDeleteDevice(device) };
    }
}

/// Prepares `irp` (ours, completed or fresh) for a new call with `routine`: with
/// `IoSetCompletionRoutineEx` against the server's device (the driver stays loaded until the
/// routine returns), or plainly under Wine or when `plain` (a close must go out even when the
/// Ex context cannot be allocated). Returns the status of `IoSetCompletionRoutineEx`.
fn prepare(
    server: &Server,
    irp: *mut IRP,
    routine: IO_COMPLETION_ROUTINE,
    context: PVOID,
    plain: bool,
) -> NTSTATUS {
    // SAFETY: our IRP, not in flight, allocated with one stack location.
    unsafe { sys::IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
    if !server.device.is_null() {
        // SAFETY: our IRP with a next location; the device lives until after every routine.
        let status = unsafe {
            sys::IoSetCompletionRoutineEx(server.device, irp, Some(routine), context, 1, 1, 1)
        };
        if sys::NT_SUCCESS(status) || !plain {
            return status;
        }
    }
    // SAFETY: our IRP with a next location.
    unsafe { sys::IoSetCompletionRoutine(irp, Some(routine), context, true, true, true) };
    STATUS_SUCCESS
}

/// Makes one call with `irp` and waits for its completion; returns its `Information`.
/// `PASSIVE_LEVEL` (`DriverEntry`), so the routine need not be unload-safe: the wait is here.
fn wait_for(irp: *mut IRP, call: impl FnOnce(*mut IRP) -> NTSTATUS) -> Result<usize, NTSTATUS> {
    unsafe extern "system" fn signal(
        _device: *mut DEVICE_OBJECT,
        _irp: *mut IRP,
        event: PVOID,
    ) -> NTSTATUS {
        // SAFETY: the event on the waiting caller's stack, which waits for this.
        unsafe { sys::KeSetEvent(event.cast(), 0, 0) };
        STATUS_MORE_PROCESSING_REQUIRED
    }
    // SAFETY: all-zero is a valid KEVENT to initialise: plain data.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: the event lives on this stack until the wait below returned.
    unsafe { sys::KeInitializeEvent(&raw mut event, sys::SynchronizationEvent, 0) };
    // SAFETY: our IRP, not in flight, one stack location.
    unsafe { sys::IoReuseIrp(irp, STATUS_UNSUCCESSFUL) };
    let context: PVOID = (&raw mut event).cast();
    // SAFETY: our IRP with a next location.
    unsafe { sys::IoSetCompletionRoutine(irp, Some(signal), context, true, true, true) };
    let _ = call(irp);
    // SAFETY: PASSIVE_LEVEL; the provider completes every IRP it is given.
    unsafe {
        sys::KeWaitForSingleObject(
            (&raw mut event).cast(),
            sys::Executive,
            sys::KernelMode,
            0,
            ptr::null_mut(),
        )
    };
    // SAFETY: completed: the IRP is ours again.
    let io = unsafe { (*irp).IoStatus };
    if sys::NT_SUCCESS(io.Status) {
        Ok(io.Information)
    } else {
        Err(io.Status)
    }
}

/// A connection's next step in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    Receive = 1,
    Send = 2,
    Disconnect = 3,
    Close = 4,
}

/// Takes the connection's next step: here, or through the worker ([`Deferral::Worker`]).
/// Called from completion routines.
fn continue_with(connection: &Connection, step: Step) {
    let server = connection.server();
    if server.defer {
        server.queue(connection, step);
    } else {
        take_step(connection, step);
    }
}

fn take_step(connection: &Connection, step: Step) {
    match step {
        Step::Receive => post_receive(connection),
        Step::Send => post_send(connection),
        Step::Disconnect => post_disconnect(connection),
        Step::Close => {
            if connection.gate.request_close() {
                issue_close(connection);
            }
        }
    }
}

/// Posts the next accept: here, or through the worker ([`Deferral::Worker`]). Called from
/// the accept's routine.
fn continue_accept(server: &Server) {
    if server.defer {
        // Held until the worker has posted it.
        server.hold();
        server.accept_wanted.store(true, Ordering::Release);
        // SAFETY: the event lives in the server.
        unsafe { sys::KeSetEvent(server.work_event.get(), 0, 0) };
    } else {
        post_accept(server);
    }
}

/// The worker thread ([`Deferral::Worker`]): takes the queued steps (each with its
/// reference) and the wanted accept, at `PASSIVE_LEVEL`, outside every completion routine;
/// ends when `stop_worker` asks, which is after everything is done.
unsafe extern "system" fn worker_main(context: PVOID) {
    // SAFETY: the server start_worker passed; it outlives this thread.
    let server = unsafe { &*context.cast::<Server>() };
    loop {
        // SAFETY: PASSIVE_LEVEL; the event lives in the server.
        unsafe {
            sys::KeWaitForSingleObject(
                server.work_event.get().cast(),
                sys::Executive,
                KernelMode,
                0,
                ptr::null_mut(),
            )
        };
        let mut next = server.work_head.swap(ptr::null_mut(), Ordering::AcqRel);
        while let Some(connection) = NonNull::new(next) {
            // SAFETY: the reference `queue` took keeps it alive.
            let this = unsafe { connection.as_ref() };
            // Read before the step: the step may queue this connection again.
            next = this.work_next.load(Ordering::Acquire);
            let step = match this.work.load(Ordering::Relaxed) {
                1 => Step::Receive,
                2 => Step::Send,
                3 => Step::Disconnect,
                _ => Step::Close,
            };
            take_step(this, step);
            // SAFETY: the reference `queue` took for this step.
            unsafe { release(connection) };
        }
        if server.accept_wanted.swap(false, Ordering::AcqRel) {
            post_accept(server);
            server.done();
        }
        if server.worker_stop.load(Ordering::Acquire) {
            break;
        }
    }
    // SAFETY: ends this system thread; PASSIVE_LEVEL.
    unsafe { sys::PsTerminateSystemThread(STATUS_SUCCESS) };
}

/// Posts the accept, with a spare connection for it to fill (allocated now if there is none).
/// Stops accepting, saying why, when out of memory. IRQL <= `DISPATCH_LEVEL`.
fn post_accept(server: &Server) {
    if !server.listen_gate.enter() {
        free_spare(server);
        return;
    }
    if server.spare.load(Ordering::Acquire).is_null() {
        let Some(spare) = Connection::allocate(server) else {
            sys::kprint!("wskfloor: out of memory for a connection: accepting stopped\n");
            leave_listener(server);
            return;
        };
        server.spare.store(spare.as_ptr(), Ordering::Release);
    }
    server.hold();
    let context: PVOID = ptr::from_ref(server).cast_mut().cast();
    let status = prepare(server, server.accept_irp, accept_done, context, false);
    let listen = server.listen.load(Ordering::Acquire);
    // SAFETY: the listen socket is open inside the gate; its table is the listen dispatch.
    let table = unsafe { dispatch::<WSK_PROVIDER_LISTEN_DISPATCH>(listen) };
    if let (true, Some(accept)) = (sys::NT_SUCCESS(status), table.WskAccept) {
        {
            let addresses = server.accept_addresses.get().cast::<SOCKADDR_INET>();
            // SAFETY: the open listen socket and our prepared IRP; the address buffers live
            // in the server until the accept completed.
            unsafe {
                accept(
                    listen,
                    0,
                    ptr::null_mut(),
                    ptr::null(),
                    addresses.cast(),
                    addresses.wrapping_add(1).cast(),
                    server.accept_irp,
                )
            };
        }
    } else {
        sys::kprint!("wskfloor: cannot post an accept ({status:#x}): accepting stopped\n");
        server.done();
        free_spare(server);
    }
    leave_listener(server);
}

/// Leaves a call on the listener, closing it if it was the last one after a close request.
fn leave_listener(server: &Server) {
    if server.listen_gate.leave() {
        issue_listen_close(server);
    }
}

/// Frees the spare connection (never accepted into: no socket, one reference).
fn free_spare(server: &Server) {
    if let Some(spare) = NonNull::new(server.spare.swap(ptr::null_mut(), Ordering::AcqRel)) {
        // SAFETY: the spare's only reference, owned by the accept chain.
        unsafe { release(spare) };
    }
}

/// The accept's completion routine: the new socket goes to the spare connection, which is
/// listed and starts receiving; then the next accept is posted.
unsafe extern "system" fn accept_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the server we registered, alive until `done` below (stop waits for it).
    let server = unsafe { &*context.cast::<Server>() };
    // SAFETY: the live IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    let socket = io.Information as *mut WSK_SOCKET;
    if sys::NT_SUCCESS(io.Status) && !socket.is_null() {
        server.accept_failures.store(0, Ordering::Relaxed);
        server.served.fetch_add(1, Ordering::Relaxed);
        let spare = server.spare.swap(ptr::null_mut(), Ordering::AcqRel);
        if let Some(connection) = NonNull::new(spare) {
            start_connection(server, connection, socket);
        }
        continue_accept(server);
    } else if server.listen_gate.close_requested()
        || server.accept_failures.fetch_add(1, Ordering::Relaxed) >= ACCEPT_FAILURES_LIMIT
    {
        if !server.listen_gate.close_requested() {
            sys::kprint!(
                "wskfloor: {ACCEPT_FAILURES_LIMIT} accepts failed in a row (last {:#x}): accepting stopped\n",
                io.Status.cast_unsigned()
            );
        }
        free_spare(server);
    } else {
        continue_accept(server);
    }
    // This accept's hold: the last touch of the server.
    server.done();
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Gives `socket` to `connection` (its opening reference becomes the socket's), lists it, and
/// posts its first receive, or closes it at once when the server is stopping.
fn start_connection(server: &Server, connection: NonNull<Connection>, socket: *mut WSK_SOCKET) {
    // SAFETY: the spare's reference, now the open socket's.
    let this = unsafe { connection.as_ref() };
    this.socket.store(socket, Ordering::Release);
    server.with_lock(|| {
        // SAFETY: the list and `listed` are guarded by the lock we hold; the entry is ours.
        unsafe { sys::InsertTailList(server.connections.get(), this.link.get()) };
        // SAFETY: as above.
        unsafe { *this.listed.get() = true };
    });
    // After listing: either stop's walk finds this connection or we see its close request.
    if server.listen_gate.close_requested() {
        continue_with(this, Step::Close);
        return;
    }
    continue_with(this, Step::Receive);
}

/// Posts the receive of up to [`BUFFER_SIZE`] bytes.
fn post_receive(connection: &Connection) {
    let buffer = WSK_BUF {
        Mdl: connection.mdl,
        Offset: 0,
        Length: BUFFER_SIZE,
    };
    post_data(connection, buffer, receive_done, |table| table.WskReceive);
}

/// Posts the send of what is left of the current echo.
fn post_send(connection: &Connection) {
    let sent = connection.sent.load(Ordering::Relaxed);
    let received = connection.received.load(Ordering::Relaxed);
    let buffer = WSK_BUF {
        Mdl: connection.mdl,
        Offset: u32::try_from(sent).unwrap_or(0),
        Length: received - sent,
    };
    post_data(connection, buffer, send_done, |table| table.WskSend);
}

/// Posts the graceful `WskDisconnect` (our FIN) after the peer's; its routine closes.
fn post_disconnect(connection: &Connection) {
    let buffer = WSK_BUF {
        Mdl: ptr::null_mut(),
        Offset: 0,
        Length: 0,
    };
    post_data(connection, buffer, disconnect_done, |table| {
        table.WskDisconnect
    });
}

/// The disconnect's routine: close the socket (the FIN is out, or the peer is gone).
unsafe extern "system" fn disconnect_done(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the connection we registered, alive while this IRP's reference is held.
    let connection = unsafe { &*context.cast::<Connection>() };
    connection.completions.fetch_add(1, Ordering::AcqRel);
    continue_with(connection, Step::Close);
    // SAFETY: the reference `post_data` took for this routine.
    unsafe { release(NonNull::from(connection)) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Issues the data IRP with `routine`: `WskReceive` or `WskSend` of `buffer`, taking a
/// reference for the routine; closes the connection when that cannot be done.
fn post_data(
    connection: &Connection,
    buffer: WSK_BUF,
    routine: IO_COMPLETION_ROUTINE,
    pick: impl FnOnce(&WSK_PROVIDER_CONNECTION_DISPATCH) -> Option<sys::PFN_WSK_SEND>,
) {
    if !connection.gate.enter() {
        return;
    }
    let server = connection.server();
    let context: PVOID = ptr::from_ref(connection).cast_mut().cast();
    let status = prepare(server, connection.data_irp, routine, context, false);
    let call = pick(connection.connection_dispatch());
    match (sys::NT_SUCCESS(status), call) {
        (true, Some(call)) => {
            // SAFETY: no data IRP is in flight: this buffer description is ours to write.
            unsafe { connection.wsk_buf.get().write(buffer) };
            // A disconnect without final data passes no buffer.
            let wsk_buf = if buffer.Mdl.is_null() {
                ptr::null_mut()
            } else {
                connection.wsk_buf.get()
            };
            connection.add_ref();
            let socket = connection.socket.load(Ordering::Acquire);
            let before = connection.completions.load(Ordering::Acquire);
            // SAFETY: the open socket (inside the gate), our prepared IRP, and the WSK_BUF
            // and buffer in the connection, alive until the routine released its reference.
            let status = unsafe { call(socket, wsk_buf, 0, connection.data_irp) };
            // A status other than STATUS_PENDING means the IRP was completed before the call
            // returned, so its routine has run, unless the provider failed without completing
            // it (Wine 8's WskDisconnect): then the routine runs here, as if it had.
            if status != sys::STATUS_PENDING
                && connection.completions.load(Ordering::Acquire) == before
            {
                // SAFETY: never completed, so the IRP is still ours.
                unsafe { (*connection.data_irp).IoStatus.Status = status };
                // SAFETY: as above.
                unsafe { (*connection.data_irp).IoStatus.Information = 0 };
                // SAFETY: the routine registered for this IRP, with its context, run once.
                unsafe { routine(ptr::null_mut(), connection.data_irp, context) };
            }
        }
        _ => {
            // Out of memory for the Ex context (or no such call): give up on this client.
            connection.gate.request_close();
        }
    }
    if connection.gate.leave() {
        issue_close(connection);
    }
}

/// The receive's routine: echo what arrived, or close on 0 bytes or an error.
unsafe extern "system" fn receive_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the connection we registered, alive while this IRP's reference is held.
    let connection = unsafe { &*context.cast::<Connection>() };
    connection.completions.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the live IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    if sys::NT_SUCCESS(io.Status) && io.Information != 0 {
        connection
            .received
            .store(io.Information.min(BUFFER_SIZE), Ordering::Relaxed);
        connection.sent.store(0, Ordering::Relaxed);
        continue_with(connection, Step::Send);
    } else if sys::NT_SUCCESS(io.Status) {
        // The peer's FIN: answer with ours (graceful), then close.
        continue_with(connection, Step::Disconnect);
    } else {
        report_failure("WskReceive", io.Status);
        continue_with(connection, Step::Close);
    }
    // SAFETY: the reference `post_data` took for this routine.
    unsafe { release(NonNull::from(connection)) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Logs a data call's failure, except the cancellation a close causes.
fn report_failure(call: &str, status: NTSTATUS) {
    if status != sys::STATUS_CANCELLED {
        sys::kprint!(
            "wskfloor: {call} failed with {:#x}; closing the connection\n",
            status.cast_unsigned()
        );
    }
}

/// The send's routine: send the rest, or receive the next message, or close on an error.
unsafe extern "system" fn send_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the connection we registered, alive while this IRP's reference is held.
    let connection = unsafe { &*context.cast::<Connection>() };
    connection.completions.fetch_add(1, Ordering::AcqRel);
    // SAFETY: the live IRP being completed.
    let io = unsafe { (*irp).IoStatus };
    if sys::NT_SUCCESS(io.Status) && io.Information != 0 {
        let sent = connection.sent.load(Ordering::Relaxed) + io.Information;
        connection.sent.store(sent, Ordering::Relaxed);
        if sent < connection.received.load(Ordering::Relaxed) {
            continue_with(connection, Step::Send);
        } else {
            continue_with(connection, Step::Receive);
        }
    } else {
        report_failure("WskSend", io.Status);
        continue_with(connection, Step::Close);
    }
    // SAFETY: the reference `post_data` took for this routine.
    unsafe { release(NonNull::from(connection)) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// `WskCloseSocket` on the connection's close IRP; its routine releases the socket's
/// reference. Called once per connection, by whoever its gate named.
fn issue_close(connection: &Connection) {
    let server = connection.server();
    let context: PVOID = ptr::from_ref(connection).cast_mut().cast();
    let _ = prepare(server, connection.close_irp, close_done, context, true);
    let socket = connection.socket.load(Ordering::Acquire);
    // SAFETY: the open socket; every table starts with the basic dispatch.
    let basic = unsafe { dispatch::<WSK_PROVIDER_BASIC_DISPATCH>(socket) };
    match basic.WskCloseSocket {
        // SAFETY: the open socket, no call in progress (the gate), our prepared IRP.
        Some(close) => unsafe {
            close(socket, connection.close_irp);
        },
        None => {
            sys::kprint!("wskfloor: the provider has no WskCloseSocket\n");
        }
    }
}

/// The close's routine: the socket is gone; release its reference.
unsafe extern "system" fn close_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the live IRP being completed.
    let status = unsafe { (*irp).IoStatus.Status };
    if !sys::NT_SUCCESS(status) {
        sys::kprint!(
            "wskfloor: WskCloseSocket failed with {:#x}\n",
            status.cast_unsigned()
        );
    }
    if let Some(connection) = NonNull::new(context.cast::<Connection>()) {
        // SAFETY: the connection we registered; the open socket's reference, given up here.
        unsafe { release(connection) };
    }
    STATUS_MORE_PROCESSING_REQUIRED
}

/// `WskCloseSocket` of the listener; its routine ends the listener's hold on the server.
fn issue_listen_close(server: &Server) {
    let context: PVOID = ptr::from_ref(server).cast_mut().cast();
    let _ = prepare(
        server,
        server.listen_close_irp,
        listen_close_done,
        context,
        true,
    );
    let listen = server.listen.load(Ordering::Acquire);
    // SAFETY: the open listen socket; every table starts with the basic dispatch.
    let basic = unsafe { dispatch::<WSK_PROVIDER_BASIC_DISPATCH>(listen) };
    match basic.WskCloseSocket {
        // SAFETY: the open socket, no call in progress (the gate), our prepared IRP; the
        // close cancels the pending accept.
        Some(close) => unsafe {
            close(listen, server.listen_close_irp);
        },
        None => server.done(),
    }
}

unsafe extern "system" fn listen_close_done(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the server we registered, alive until `done` (stop waits for it).
    let server = unsafe { &*context.cast::<Server>() };
    server.done();
    STATUS_MORE_PROCESSING_REQUIRED
}
