//! `WskClient`: WSK registration and the list of every socket the client has open, so that
//! deregistration closes what the driver forgot instead of hanging in `WskDeregister`.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::time::Duration;

use wsk_executor::raw::sync::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use wsk_sys::{
    self as sys, ADDRINFOEXW, DEVICE_OBJECT, DRIVER_OBJECT, KEVENT, KSPIN_LOCK, LIST_ENTRY,
    WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
};

use crate::error::{Error, ErrorKind, Result};
use crate::raw::SocketInner;

/// Pool tag of the client object (`WskC`).
const CLIENT_TAG: u32 = sys::pool_tag(*b"WskC");

/// Pool tag of a parked address-info list's node (`WskP`).
const PARKED_TAG: u32 = sys::pool_tag(*b"WskP");

/// How long registration waits for the WSK provider. Bounded, never `WSK_INFINITE_WAIT`:
/// `DriverEntry` must not block forever.
const CAPTURE_WAIT_MS: u32 = 10_000;

/// How often deregistration says what it is still waiting for.
const DEREGISTER_REPORT_EVERY: Duration = Duration::from_secs(5);

/// The driver a [`WskClient`] belongs to: the `DRIVER_OBJECT` its `DriverEntry` received.
///
/// The client creates an unnamed device object for it, which every IRP's completion routine
/// is registered against (`IoSetCompletionRoutineEx`): the I/O manager keeps the driver image
/// loaded until each completion routine has *returned*, so no routine of ours runs after
/// `DriverUnload` returns, however late the last completion comes.
///
/// # IRQL
/// Any.
#[derive(Debug, Clone, Copy)]
pub struct Driver {
    object: NonNull<DRIVER_OBJECT>,
}

// SAFETY: a driver object is a kernel object valid from DriverEntry to the return of
// DriverUnload, usable from any thread.
unsafe impl Send for Driver {}
// SAFETY: as above; `Driver` only hands the pointer to the kernel.
unsafe impl Sync for Driver {}

impl Driver {
    /// Wraps the driver object `DriverEntry` received; `None` if it is null.
    ///
    /// ```no_run
    /// # use wsk_sys::{DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};
    /// unsafe extern "system" fn DriverEntry(object: *mut DRIVER_OBJECT, _: *mut UNICODE_STRING) -> NTSTATUS {
    ///     // SAFETY: the kernel's driver object, valid until DriverUnload returns.
    ///     let Some(driver) = (unsafe { wsk_net::Driver::from_raw(object) }) else { return -1 };
    ///     let client = wsk_net::WskClient::register(driver);
    ///     # let _ = client;
    ///     0
    /// }
    /// ```
    ///
    /// # Safety
    /// `object` is the driver's own `DRIVER_OBJECT` and stays valid while any client
    /// registered with it exists (the kernel's guarantee from `DriverEntry` until
    /// `DriverUnload` returns).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub unsafe fn from_raw(object: *mut DRIVER_OBJECT) -> Option<Self> {
        NonNull::new(object).map(|object| Self { object })
    }

    /// The `DRIVER_OBJECT`.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn as_ptr(&self) -> *mut DRIVER_OBJECT {
        self.object.as_ptr()
    }
}

/// The client object in nonpaged pool: registration state WSK keeps pointers into, the
/// provider NPI, and the open-socket list.
pub(crate) struct ClientInner {
    registration: UnsafeCell<WSK_REGISTRATION>,
    dispatch: WSK_CLIENT_DISPATCH,
    npi: UnsafeCell<WSK_CLIENT_NPI>,
    provider: UnsafeCell<WSK_PROVIDER_NPI>,
    lock: UnsafeCell<KSPIN_LOCK>,
    sockets: UnsafeCell<LIST_ENTRY>,
    open: UnsafeCell<usize>,
    all_closed: UnsafeCell<KEVENT>,
    /// The handle plus one per socket object: the last one frees the client.
    users: AtomicUsize,
    /// 1 once deregistration started (no new sockets).
    deregistering: AtomicU32,
    /// The device object every completion routine is registered against
    /// (`IoSetCompletionRoutineEx`); deleted at deregistration, released by the I/O manager
    /// once the last routine returned.
    device: *mut DEVICE_OBJECT,
    /// False where `IoSetCompletionRoutineEx` cannot be called (Wine 8, whose export is a
    /// stub that raises): routines are then registered with `IoSetCompletionRoutine`.
    unload_safe: bool,
    /// `WskGetAddressInfo` result lists released above `PASSIVE_LEVEL`, where
    /// `WskFreeAddressInfo` may not be called: a lock-free stack, pushed at <= `DISPATCH_LEVEL`,
    /// taken whole (never popped one by one, so no ABA) at the next `PASSIVE_LEVEL` point.
    parked: AtomicPtr<ParkedList>,
    /// Client-level calls (`WskSocket`, `WskGetAddressInfo`) whose completion is not finished:
    /// deregistration waits for them before it frees parked result lists, so that a lookup
    /// abandoned and still in flight cannot park its list after the last free.
    client_calls: AtomicUsize,
    /// The `WSK_EVENT_*` bits `WskClient::set_static_event_callbacks` enabled on every socket.
    static_events: AtomicU32,
    /// 1 once a socket was issued (`WskSocket`, `WskSocketConnect`): static event callbacks can
    /// no longer be set. Written and read under `lock`, so that setting them and a creation
    /// cannot interleave.
    socket_issued: AtomicU32,
}

/// One parked result list, in nonpaged pool.
struct ParkedList {
    next: *mut ParkedList,
    list: *mut ADDRINFOEXW,
}

// SAFETY: the list, counters and event are only touched under `lock` or through kernel
// routines that synchronise themselves; the NPIs are written once before sharing.
unsafe impl Send for ClientInner {}
// SAFETY: as above.
unsafe impl Sync for ClientInner {}

/// The socket object whose `link` field `link` is (C's `CONTAINING_RECORD`).
///
/// # Safety
/// `link` points to the `link` field of a live `SocketInner`.
unsafe fn containing_socket(link: *mut LIST_ENTRY) -> NonNull<SocketInner> {
    let offset = core::mem::offset_of!(SocketInner, link);
    // SAFETY: `link` lies `offset` bytes into a live socket object (caller).
    let socket = unsafe { link.byte_sub(offset) }.cast::<SocketInner>();
    // SAFETY: derived from a non-null field pointer of a live object.
    unsafe { NonNull::new_unchecked(socket) }
}

impl ClientInner {
    /// The provider's dispatch table and client handle.
    pub(crate) fn provider(&self) -> (&WSK_PROVIDER_DISPATCH, *mut sys::WSK_CLIENT) {
        // SAFETY: written once by WskCaptureProviderNPI before the client was shared; the
        // provider keeps its table alive until WskReleaseProviderNPI, which runs only after
        // every socket is closed.
        let npi = unsafe { &*self.provider.get() };
        // SAFETY: as above: the captured table stays valid while any socket may use it.
        (unsafe { &*npi.Dispatch }, npi.Client)
    }

    /// The device object to register completion routines against with
    /// `IoSetCompletionRoutineEx`, or `None` where that routine is unavailable (Wine).
    pub(crate) fn completion_device(&self) -> Option<*mut DEVICE_OBJECT> {
        self.unload_safe.then_some(self.device)
    }

    /// A `WskSocket` or `WskSocketConnect` is about to be issued: from now on static event
    /// callbacks cannot be set (WSK's rule). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn socket_issued(&self) {
        if self.socket_issued.load(Ordering::Acquire) == 0 {
            self.with_lock(|_, _| self.socket_issued.store(1, Ordering::Release));
        }
    }

    /// Runs `set` (the `WskControlClient` of static event callbacks) unless a socket was
    /// issued (`None` then), with no socket issued meanwhile; records `events` when `set`
    /// says it succeeded. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn set_static_events(
        &self,
        events: u32,
        set: impl FnOnce() -> bool,
    ) -> Option<bool> {
        self.with_lock(|_, _| {
            if self.socket_issued.load(Ordering::Acquire) != 0 {
                return None;
            }
            let done = set();
            if done {
                self.static_events.store(events, Ordering::Release);
            }
            Some(done)
        })
    }

    /// The `WSK_EVENT_*` bits enabled statically on every socket (0: none).
    pub(crate) fn static_events(&self) -> u32 {
        self.static_events.load(Ordering::Acquire)
    }

    /// A client-level call (no socket yet) goes to WSK. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn client_call_started(&self) {
        self.client_calls.fetch_add(1, Ordering::AcqRel);
    }

    /// Its completion is finished (the routine did all it will do). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn client_call_finished(&self) {
        self.client_calls.fetch_sub(1, Ordering::AcqRel);
    }

    /// False once deregistration started: no new sockets.
    pub(crate) fn accepting(&self) -> bool {
        self.deregistering.load(Ordering::Acquire) == 0
    }

    /// A socket object starts using the client.
    pub(crate) fn add_user(&self) {
        self.users.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops a use; frees the client with the last one. IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Safety
    /// The caller owns one use and does not touch the client afterwards.
    pub(crate) unsafe fn release(this: NonNull<Self>) {
        // SAFETY: the caller's use keeps it alive until this decrement.
        if unsafe { this.as_ref() }
            .users
            .fetch_sub(1, Ordering::AcqRel)
            == 1
        {
            // SAFETY: last use: WSK was deregistered (the handle's use is dropped only after
            // WskDeregister returns) and nothing else points here.
            unsafe { sys::ExFreePoolWithTag(this.as_ptr().cast(), CLIENT_TAG) };
        }
    }

    /// Runs `f` on the socket list head and the open count, under the client's spin lock.
    /// IRQL <= `DISPATCH_LEVEL`.
    fn with_lock<R>(&self, f: impl FnOnce(*mut LIST_ENTRY, &mut usize) -> R) -> R {
        // SAFETY: the lock was initialised at registration; raising to DISPATCH_LEVEL is
        // allowed for every caller (all run at <= DISPATCH_LEVEL).
        let old = unsafe { sys::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        // SAFETY: the spin lock, held, gives us the count exclusively.
        let open = unsafe { &mut *self.open.get() };
        let r = f(self.sockets.get(), open);
        // SAFETY: acquired above, at `old`.
        unsafe { sys::KeReleaseSpinLock(self.lock.get(), old) };
        r
    }

    /// Adds an open socket to the list. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn track(&self, socket: NonNull<SocketInner>) {
        self.with_lock(|head, open| {
            // SAFETY: the socket is live (the caller's reference) and stays so until it is
            // untracked at close completion. The link is taken from the socket pointer, not
            // through a reference to the socket: the list hands it back to `containing_socket`,
            // which needs the whole socket's provenance (Miri's aliasing check), not the
            // link field's alone.
            let field = unsafe { &raw const (*socket.as_ptr()).link };
            let link = core::cell::UnsafeCell::raw_get(field);
            // SAFETY: `link` belongs to the socket, is in no list, and is only used under this
            // lock, which we hold; `head` is the initialised list head.
            unsafe { sys::InsertTailList(head, link) };
            *open += 1;
            if *open == 1 {
                // SAFETY: the event was initialised at registration.
                unsafe { sys::KeClearEvent(self.all_closed.get()) };
            }
        });
    }

    /// Removes a closed socket from the list. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn untrack(&self, socket: NonNull<SocketInner>) {
        self.with_lock(|_, open| {
            // SAFETY: the socket is live (its close is completing).
            let link = unsafe { socket.as_ref() }.link.get();
            // SAFETY: the socket was tracked (close only follows adoption) and we hold the
            // list's lock.
            unsafe { sys::RemoveEntryList(link) };
            *open -= 1;
            if *open == 0 {
                // SAFETY: initialised event; KeSetEvent with Wait FALSE is fine at DISPATCH.
                unsafe { sys::KeSetEvent(self.all_closed.get(), 0, 0) };
            }
        });
    }

    /// Takes a reference on one tracked socket whose close has not started, if any.
    /// IRQL <= `DISPATCH_LEVEL`.
    fn next_unclosed(&self) -> Option<NonNull<SocketInner>> {
        self.with_lock(|head, _| {
            // SAFETY: the initialised list head, under its lock.
            let mut link = unsafe { (*head).Flink };
            while link != head {
                // SAFETY: `link` is the first field-offset of a live tracked socket; we
                // recover the socket from it as CONTAINING_RECORD does.
                let socket = unsafe { containing_socket(link) };
                // SAFETY: tracked sockets are live while on the list (we hold the lock).
                let inner = unsafe { socket.as_ref() };
                if !inner.is_closing() {
                    inner.add_ref();
                    return Some(socket);
                }
                // SAFETY: list links are valid under the lock.
                link = unsafe { (*link).Flink };
            }
            None
        })
    }

    /// Gives back a `WskGetAddressInfo` result list. `WskFreeAddressInfo` is `PASSIVE_LEVEL`
    /// only ("`PFN_WSK_FREE_ADDRESS_INFO` callback function (wsk.h)",
    /// <https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/nc-wsk-pfn_wsk_free_address_info>):
    /// at `PASSIVE_LEVEL` the list is freed now (with any parked ones); above it (the
    /// completion routine of an abandoned lookup, a drop at `DISPATCH_LEVEL`) it is parked
    /// until [`free_parked_address_info`](Self::free_parked_address_info) runs: at the next
    /// resolve or at deregistration, before the provider is released. IRQL <=
    /// `DISPATCH_LEVEL`.
    pub(crate) fn release_address_info(&self, list: *mut ADDRINFOEXW) {
        if list.is_null() {
            return;
        }
        if sys::KeGetCurrentIrql() == sys::PASSIVE_LEVEL {
            self.free_parked_address_info();
            self.free_address_info_now(list);
            return;
        }
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL (the pool routines were resolved at
        // registration).
        let node = unsafe { sys::allocate_nonpaged(size_of::<ParkedList>(), PARKED_TAG) }
            .cast::<ParkedList>();
        if node.is_null() {
            // Freeing here would break the IRQL rule: leak the list rather than bugcheck.
            sys::kprint!(
                "wsk-net: no pool to park an address-info list above PASSIVE_LEVEL; leaked\n"
            );
            return;
        }
        let mut head = self.parked.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is a fresh allocation of a ParkedList's size and pool alignment,
            // ours until the exchange below publishes it.
            unsafe { node.write(ParkedList { next: head, list }) };
            match self.parked.compare_exchange_weak(
                head,
                node,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Frees every parked result list (see
    /// [`release_address_info`](Self::release_address_info)); does nothing above
    /// `PASSIVE_LEVEL`. Call before `WskReleaseProviderNPI`.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` (a no-op above it).
    pub(crate) fn free_parked_address_info(&self) {
        if sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL {
            return;
        }
        let mut node = self.parked.swap(ptr::null_mut(), Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: the swap took the whole stack: every node is ours, pushed whole (the
            // Acquire pairs with the pushers' Release) and freed once here.
            let ParkedList { next, list } = unsafe { node.read() };
            // SAFETY: allocated with PARKED_TAG by release_address_info.
            unsafe { sys::ExFreePoolWithTag(node.cast(), PARKED_TAG) };
            self.free_address_info_now(list);
            node = next;
        }
    }

    /// `WskFreeAddressInfo`. `PASSIVE_LEVEL` only.
    fn free_address_info_now(&self, list: *mut ADDRINFOEXW) {
        let (dispatch, client) = self.provider();
        if let Some(free) = dispatch.WskFreeAddressInfo {
            // SAFETY: PASSIVE_LEVEL (the callers check); the list came from this provider's
            // WskGetAddressInfo and is freed once.
            unsafe { free(client, list) };
        }
    }
}

/// A registered WSK client: the root every socket is created from.
///
/// Register in `DriverEntry`, deregister in `DriverUnload` after the executor has shut down
/// (which drops, and so closes, every socket its tasks held). Deregistration closes any socket
/// still open, waits until all are closed, then deregisters.
///
/// Sockets borrow the client only while being created; spawned tasks usually need a
/// `&'static WskClient`, so keep the client in a `static` cell between `DriverEntry` and
/// `DriverUnload`.
///
/// ```no_run
/// # fn demo(driver: wsk_net::Driver) -> wsk_net::Result<()> {
/// let client = wsk_net::WskClient::register(driver)?; // PASSIVE_LEVEL, DriverEntry
/// // ... spawn tasks that bind listeners and connect streams with `&client` ...
/// client.deregister()?;                                // PASSIVE_LEVEL, DriverUnload
/// # Ok(()) }
/// ```
///
/// # IRQL
/// [`WskClient::register`], [`WskClient::deregister`] and drop: `PASSIVE_LEVEL` only. Sharing
/// `&WskClient` with tasks that create sockets: any IRQL <= `DISPATCH_LEVEL`.
pub struct WskClient {
    inner: NonNull<ClientInner>,
}

// SAFETY: the client object is shared-safe (see ClientInner) and lives in nonpaged pool.
unsafe impl Send for WskClient {}
// SAFETY: as above.
unsafe impl Sync for WskClient {}

impl WskClient {
    /// Creates the client's device object for `driver` (see [`Driver`]), registers with WSK
    /// and captures the provider NPI, waiting at most 10 s for it.
    ///
    /// ```no_run
    /// # fn driver_entry(driver: wsk_net::Driver) -> wsk_net::Result<()> {
    /// let client = match wsk_net::WskClient::register(driver) {
    ///     Ok(client) => client,
    ///     Err(e) => return Err(e), // fail DriverEntry: nothing stays registered
    /// };
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::WrongIrql`] above `PASSIVE_LEVEL`; `NoResources`; the status of `IoCreateDevice`,
    /// `WskRegister` or `WskCaptureProviderNPI`. A provider that did not appear within the 10 s is reported by
    /// Windows as `STATUS_DEVICE_NOT_READY`, which is kind `Other` (not `TimedOut`): look at
    /// [`Error::status`]. On any error nothing stays registered.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` only.
    pub fn register(driver: Driver) -> Result<Self> {
        if sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL {
            return Err(Error::new(ErrorKind::WrongIrql, "WskClient::register"));
        }
        // SAFETY: PASSIVE_LEVEL (checked above).
        unsafe { sys::init_pool_routines() };
        // SAFETY: PASSIVE_LEVEL (checked above).
        let unload_safe = !unsafe { sys::kernel_is_wine() };
        let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; the driver object is live (Driver's contract); an unnamed
        // device object without extension is all IoSetCompletionRoutineEx needs.
        let status = unsafe {
            sys::IoCreateDevice(
                driver.as_ptr(),
                0,
                ptr::null_mut(),
                sys::FILE_DEVICE_NETWORK,
                sys::FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut device,
            )
        };
        if !sys::NT_SUCCESS(status) {
            return Err(Error::from_status(status, "IoCreateDevice"));
        }
        // SAFETY: nonpaged allocation at PASSIVE_LEVEL.
        let mem = unsafe { sys::allocate_nonpaged(size_of::<ClientInner>(), CLIENT_TAG) }
            .cast::<ClientInner>();
        let Some(mem) = NonNull::new(mem) else {
            // SAFETY: created above, never used.
            unsafe { sys::IoDeleteDevice(device) };
            return Err(Error::new(ErrorKind::NoResources, "WskClient::register"));
        };
        let p = mem.as_ptr();
        // SAFETY: all-zero is a valid (unregistered) WSK_REGISTRATION: plain data.
        let registration = unsafe { core::mem::zeroed() };
        // SAFETY: all-zero is a valid KEVENT to hand KeInitializeEvent below: plain data.
        let all_closed = unsafe { core::mem::zeroed() };
        // SAFETY: `p` is a fresh, exclusively owned, suitably aligned allocation; every field
        // is initialised before the object is shared with WSK, and the self-references
        // (NPI dispatch pointer, list head) are taken at the final address below.
        unsafe {
            p.write(ClientInner {
                registration: UnsafeCell::new(registration),
                dispatch: WSK_CLIENT_DISPATCH {
                    Version: sys::MAKE_WSK_VERSION(1, 0),
                    Reserved: 0,
                    WskClientEvent: None,
                },
                npi: UnsafeCell::new(WSK_CLIENT_NPI {
                    ClientContext: ptr::null_mut(),
                    Dispatch: ptr::null(),
                }),
                provider: UnsafeCell::new(WSK_PROVIDER_NPI {
                    Client: ptr::null_mut(),
                    Dispatch: ptr::null(),
                }),
                lock: UnsafeCell::new(0),
                sockets: UnsafeCell::new(LIST_ENTRY {
                    Flink: ptr::null_mut(),
                    Blink: ptr::null_mut(),
                }),
                open: UnsafeCell::new(0),
                all_closed: UnsafeCell::new(all_closed),
                users: AtomicUsize::new(1),
                deregistering: AtomicU32::new(0),
                device,
                unload_safe,
                parked: AtomicPtr::new(ptr::null_mut()),
                client_calls: AtomicUsize::new(0),
                static_events: AtomicU32::new(0),
                socket_issued: AtomicU32::new(0),
            });
        }
        // SAFETY: just written; from here on only shared, its cells written through their
        // pointers (WSK keeps pointers to them after registration).
        let client = unsafe { &*p };
        // SAFETY: the list head is in the object at its final address, not yet shared.
        unsafe { sys::InitializeListHead(client.sockets.get()) };
        // SAFETY: the event is in nonpaged pool at its final address.
        unsafe { sys::KeInitializeEvent(client.all_closed.get(), sys::NotificationEvent, 1) };
        // SAFETY: not yet shared with WSK: ours to write.
        unsafe {
            client.npi.get().write(WSK_CLIENT_NPI {
                ClientContext: p.cast(),
                Dispatch: &raw const client.dispatch,
            });
        }
        let (npi, registration, provider) = (
            client.npi.get(),
            client.registration.get(),
            client.provider.get(),
        );
        // SAFETY: PASSIVE_LEVEL; both structures live in nonpaged pool for the registration's
        // lifetime (freed only after WskDeregister).
        let status = unsafe { sys::WskRegister(npi, registration) };
        if !sys::NT_SUCCESS(status) {
            // SAFETY: never shared: WSK refused the registration.
            unsafe { sys::ExFreePoolWithTag(p.cast(), CLIENT_TAG) };
            // SAFETY: created above, never used.
            unsafe { sys::IoDeleteDevice(device) };
            return Err(Error::from_status(status, "WskRegister"));
        }
        // SAFETY: PASSIVE_LEVEL with a bounded wait; the registration is live.
        let status = unsafe { sys::WskCaptureProviderNPI(registration, CAPTURE_WAIT_MS, provider) };
        if !sys::NT_SUCCESS(status) {
            // SAFETY: registered above, no capture held, no sockets: deregister cannot block.
            unsafe { sys::WskDeregister(registration) };
            // SAFETY: deregistered: nobody refers to the object any more.
            unsafe { sys::ExFreePoolWithTag(p.cast(), CLIENT_TAG) };
            // SAFETY: created above, never used for a completion routine.
            unsafe { sys::IoDeleteDevice(device) };
            return Err(Error::from_status(status, "WskCaptureProviderNPI"));
        }
        Ok(Self { inner: mem })
    }

    /// The client object (crate-internal).
    pub(crate) fn inner(&self) -> NonNull<ClientInner> {
        self.inner
    }

    /// Closes every socket still open, waits until all are closed, then releases the provider,
    /// deregisters and deletes the client's device object. After it returns `Ok`, no WSK call
    /// of this client is outstanding; socket handles that still exist are closed and their
    /// operations fail with `InvalidState`. Once it has started, new sockets (bind, connect,
    /// accept, resolve) fail with `InvalidState`.
    ///
    /// It waits without bound, as `DriverUnload` must: an unload cannot be refused, and
    /// returning while WSK still holds a socket of this driver would let the provider call
    /// into unloaded code. Every 5 s it prints (`DbgPrintEx`) how many sockets are still
    /// closing. Sockets close promptly once their owners are gone: shut the executor down
    /// first, so that every task (and every socket it held) is dropped.
    ///
    /// ```no_run
    /// # fn driver_unload(client: wsk_net::WskClient) {
    /// // After the executor has shut down:
    /// client.deregister().expect("DriverUnload runs at PASSIVE_LEVEL");
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`DeregisterError`] with [`ErrorKind::WrongIrql`] above `PASSIVE_LEVEL`; nothing is done then and
    /// [`DeregisterError::into_client`] gives the still-registered client back.
    ///
    /// # IRQL
    /// `PASSIVE_LEVEL` only.
    pub fn deregister(self) -> core::result::Result<(), DeregisterError> {
        let inner = self.inner;
        core::mem::forget(self);
        deregister(inner).map_err(|error| DeregisterError {
            client: core::mem::ManuallyDrop::new(WskClient { inner }),
            error,
        })
    }
}

/// A [`WskClient::deregister`] called above `PASSIVE_LEVEL`: why, and the client, still
/// registered.
///
/// Dropping it leaves the client registered for good; call [`DeregisterError::into_client`]
/// and deregister again at `PASSIVE_LEVEL`.
///
/// ```no_run
/// # fn unload(client: wsk_net::WskClient) {
/// if let Err(refused) = client.deregister() {
///     // Above PASSIVE_LEVEL: take the client back and deregister from DriverUnload.
///     let client = refused.into_client();
///     # let _ = client;
/// }
/// # }
/// ```
///
/// # IRQL
/// Any; dropping it does nothing but forget the client.
pub struct DeregisterError {
    client: core::mem::ManuallyDrop<WskClient>,
    error: Error,
}

impl DeregisterError {
    /// Why deregistration did not happen ([`ErrorKind::WrongIrql`]: called above
    /// `PASSIVE_LEVEL`).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn error(&self) -> Error {
        self.error
    }

    /// The client, still registered, to retry [`WskClient::deregister`] with.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn into_client(self) -> WskClient {
        let mut this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the client is taken out exactly once.
        unsafe { core::mem::ManuallyDrop::take(&mut this.client) }
    }
}

impl core::fmt::Debug for DeregisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeregisterError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Display for DeregisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (the client stays registered)", self.error)
    }
}

impl core::error::Error for DeregisterError {}

impl From<DeregisterError> for Error {
    fn from(failed: DeregisterError) -> Self {
        failed.error
    }
}

/// Starts closing every tracked socket whose close has not started.
fn close_all(inner: &ClientInner) {
    while let Some(socket) = inner.next_unclosed() {
        SocketInner::start_close(socket);
        // SAFETY: the reference `next_unclosed` took.
        unsafe { SocketInner::release(socket) };
    }
}

/// Deregistration proper; on success the handle's use of the client is released.
fn deregister(this: NonNull<ClientInner>) -> Result<()> {
    if sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL {
        sys::kprint!(
            "wsk-net: WskClient deregistration above PASSIVE_LEVEL refused; client stays registered\n"
        );
        return Err(Error::new(ErrorKind::WrongIrql, "WskClient::deregister"));
    }
    // SAFETY: the handle's use keeps the client alive.
    let inner = unsafe { this.as_ref() };
    inner.deregistering.store(1, Ordering::Release);
    let report_every = i64::try_from(DEREGISTER_REPORT_EVERY.as_nanos() / 100).unwrap_or(i64::MAX);
    // One sweep: a socket adopted after it (an accept that completes meanwhile) is tracked
    // under the same lock after `deregistering` was set, so `adopt` sees it and closes it.
    close_all(inner);
    let mut waited = Duration::ZERO;
    loop {
        let mut timeout = -report_every;
        // SAFETY: PASSIVE_LEVEL; the event is initialised and lives in the client.
        let status = unsafe {
            sys::KeWaitForSingleObject(
                inner.all_closed.get().cast(),
                sys::Executive,
                sys::KernelMode,
                0,
                &raw mut timeout,
            )
        };
        if status != sys::STATUS_TIMEOUT {
            break;
        }
        waited += DEREGISTER_REPORT_EVERY;
        let open = inner.with_lock(|_, open| *open);
        sys::kprint!(
            "wsk-net: deregister: {open} socket(s) still closing after {waited:?}; waiting (an unload cannot be refused)\n"
        );
    }
    // Lookups (and socket creations) still in flight complete first: WskDeregister would wait
    // for them anyway, and an abandoned lookup parks its result list as it completes.
    let mut poll = -10_000i64; // 1 ms, relative
    while inner.client_calls.load(Ordering::Acquire) != 0 {
        // SAFETY: PASSIVE_LEVEL; a relative interval on our stack.
        unsafe { sys::KeDelayExecutionThread(sys::KernelMode, 0, &raw mut poll) };
        poll = -10_000;
    }
    // Result lists of abandoned lookups: freed while the provider is still captured.
    inner.free_parked_address_info();
    // SAFETY: PASSIVE_LEVEL; one release per capture; every socket is closed, so
    // WskDeregister returns once the provider's own calls have drained. The device object
    // goes once the last completion routine registered against it has returned.
    unsafe { sys::WskReleaseProviderNPI(inner.registration.get()) };
    // SAFETY: as above.
    unsafe { sys::WskDeregister(inner.registration.get()) };
    // SAFETY: as above.
    unsafe { sys::IoDeleteDevice(inner.device) };
    // SAFETY: the handle's use, given up here.
    unsafe { ClientInner::release(this) };
    Ok(())
}

impl Drop for WskClient {
    /// Dropping without [`WskClient::deregister`] would leave WSK registered past unload; it
    /// deregisters instead (waiting until every socket is closed). Only valid at
    /// `PASSIVE_LEVEL`: above it, it prints a message and the client stays registered.
    fn drop(&mut self) {
        if let Err(e) = deregister(self.inner) {
            sys::kprint!("wsk-net: WskClient dropped without deregister: {e}\n");
        }
    }
}
