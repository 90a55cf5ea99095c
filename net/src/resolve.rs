//! Name resolution with `WskGetAddressInfo`, which WSK allows only at `PASSIVE_LEVEL`: run it
//! on the executor's passive lane.

use core::future::Future;
use core::net::SocketAddr;

use wsk_sys::{self as sys, NTSTATUS};

use crate::buf::IoBuf;
use core::ptr::NonNull;

use crate::client::{ClientInner, WskClient};
use crate::error::{Error, ErrorKind, Result};
use crate::raw::{CTL, Call, Held, Kind, Op, Request, SocketInner};
use crate::socket::{Handle, check};
use crate::time::{Operation, Target};

/// At most this many addresses are returned by [`resolve`]; further ones are dropped. It is
/// the capacity of [`Addresses`].
pub const MAX_ADDRESSES: usize = 16;

/// The longest host name accepted, in UTF-16 units.
const MAX_NAME: usize = 255;

/// Addresses a name resolved to, in the provider's order, without duplicates (a
/// `heapless::Vec` of at most [`MAX_ADDRESSES`]). See the example on [`resolve`].
///
/// # IRQL
/// Any: a plain value.
pub type Addresses = heapless::Vec<SocketAddr, MAX_ADDRESSES>;

/// `WskGetAddressInfo` for the node name in `names[0]`, all name spaces, with the
/// `ADDRINFOEXW` hints at the start of `held.buf` when `held.value` is 1, else none
/// ([`Request::Resolve`]).
///
/// # Safety
/// `PASSIVE_LEVEL`; `names[0]` points into `held.buf`, and so do the hints when present;
/// `call.irp` is prepared.
pub(crate) unsafe fn issue_resolve(call: &mut Call) -> NTSTATUS {
    let (dispatch, client) = call.client().provider();
    let Some(get) = dispatch.WskGetAddressInfo else {
        return sys::STATUS_NOT_IMPLEMENTED;
    };
    let held = call.held();
    let hints = match held.buf.as_mut() {
        Some(buf) if held.value == 1 => crate::lookup::hints_in(buf),
        _ => core::ptr::null_mut(),
    };
    let Some(names) = held.names_mut() else {
        return sys::STATUS_INVALID_PARAMETER;
    };
    let (name, result) = (&raw mut names.strings[0], &raw mut names.addrinfo);
    // SAFETY: PASSIVE_LEVEL and a prepared IRP (caller); the name and the result pointer live
    // in the slot until completion.
    unsafe {
        get(
            client,
            name,
            core::ptr::null_mut(),
            sys::NS_ALL,
            core::ptr::null_mut(),
            hints,
            result,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            call.irp(),
        )
    }
}

/// Resolves `host` and pairs each address with `port` (`WskGetAddressInfo`, all name
/// spaces, no hints: IPv4 and IPv6 addresses, up to [`MAX_ADDRESSES`]).
///
/// Must be polled at `PASSIVE_LEVEL` (spawn the task on the passive runner, or use
/// `wsk_executor::block_on`): WSK forbids `WskGetAddressInfo` above it.
///
/// ```no_run
/// # async fn demo(client: &wsk_net::WskClient) -> wsk_net::Result<()> {
/// // On the passive runner:
/// let addrs = wsk_net::resolve(client, "example.com", 80).await?;
/// let mut last = None;
/// for &addr in &addrs {
///     match wsk_net::TcpStream::connect(client, addr).await {
///         Ok(stream) => {
///             // use `stream`
/// #           let _ = stream;
///             return Ok(());
///         }
///         Err(e) => last = Some(e),
///     }
/// }
/// Err(last.expect("resolve never returns an empty list"))
/// # }
/// ```
///
/// # Errors
/// [`ErrorKind::WrongIrql`] when polled above `PASSIVE_LEVEL`; `InvalidState` after
/// deregistration;
/// `InvalidInput` for an empty name or one longer than 255 UTF-16 units; `NotFound` when
/// nothing resolved; `NoResources`; provider errors (`Unsupported` when the provider lacks
/// `WskGetAddressInfo`).
///
/// Bound it with [`timeout`](crate::timeout): the lookup is cancelled through WSK.
///
/// # IRQL
/// Call at <= `DISPATCH_LEVEL` (it allocates the object that lends the lookup its IRP); poll
/// at `PASSIVE_LEVEL` only.
pub fn resolve<'a>(
    client: &'a WskClient,
    host: &'a str,
    port: u16,
) -> Operation<'static, impl Future<Output = Result<Addresses>> + 'a> {
    // SAFETY: the handle keeps its client alive while borrowed, which covers this future.
    resolve_on(unsafe { client.inner().as_ref() }, host, port)
}

/// [`resolve`] on a client object rather than its handle (for `lookup_host`'s work on the
/// runner's thread, which holds a use of the client, not the handle).
///
/// The borrow is kept alive by a handle or a use of the client held by the caller.
pub(crate) fn resolve_on<'a>(
    client: &'a ClientInner,
    host: &'a str,
    port: u16,
) -> Operation<'static, impl Future<Output = Result<Addresses>> + 'a> {
    resolve_hinted(client, host, port, None)
}

/// [`resolve_on`], with `hints` for `WskGetAddressInfo` when given (see
/// [`resolve_with`](crate::resolve_with)).
pub(crate) fn resolve_hinted<'a>(
    client: &'a ClientInner,
    host: &'a str,
    port: u16,
    hints: Option<crate::lookup::ResolveHints>,
) -> Operation<'static, impl Future<Output = Result<Addresses>> + 'a> {
    // The operation needs an IRP: a socket object that never gets a WSK socket lends its
    // control slot (and is freed with the handle). Made here so that a deadline can cancel
    // the lookup through it.
    let handle = if client.accepting() {
        SocketInner::new(NonNull::from(client), Kind::Connection).map(Handle::from_inner)
    } else {
        Err(Error::new(ErrorKind::InvalidState, "resolve"))
    };
    let target = handle
        .as_ref()
        .map_or(Target::Missing, |h| Target::Owned(h.share()));
    Operation::new(target, CTL, "resolve", async move {
        let handle = handle?;
        lookup(client, &handle, host, port, hints.as_ref()).await
    })
}

/// The lookup of `host` through `handle`'s control slot.
async fn lookup(
    client: &ClientInner,
    handle: &Handle,
    host: &str,
    port: u16,
    hints: Option<&crate::lookup::ResolveHints>,
) -> Result<Addresses> {
    if sys::KeGetCurrentIrql() != sys::PASSIVE_LEVEL {
        return Err(Error::new(ErrorKind::WrongIrql, "resolve"));
    }
    // A PASSIVE_LEVEL point: free the result lists of lookups abandoned earlier.
    client.free_parked_address_info();
    let units = host.encode_utf16().count();
    if units == 0 || units > MAX_NAME {
        return Err(Error::new(ErrorKind::InvalidInput, "resolve"));
    }
    // WSK wants the node name NUL-terminated (the terminator is not counted in Length). The
    // hints, if any, come first in the same buffer.
    let hints_len = hints.map_or(0, |_| crate::lookup::HINTS_LEN);
    let mut name = IoBuf::with_capacity(hints_len + (units + 1) * 2)?;
    if let Some(hints) = hints {
        crate::lookup::write_hints(&mut name, hints)?;
    }
    for unit in host.encode_utf16().chain([0]) {
        name.extend_from_slice(&unit.to_le_bytes())?;
    }
    let mut held = Held::with_buf(Request::Resolve, name, 0);
    held.value = u32::from(hints.is_some());
    let bytes =
        u16::try_from(units * 2).map_err(|_| Error::new(ErrorKind::InvalidInput, "resolve"))?;
    #[allow(
        clippy::cast_ptr_alignment,
        reason = "pool allocations are 16-byte aligned"
    )]
    let chars = held.buf.as_mut().map_or(core::ptr::null_mut(), |b| {
        b.storage_mut()[hints_len..].as_mut_ptr().cast::<u16>()
    });
    let named = held.set_names([
        sys::UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes + 2,
            Buffer: chars,
        },
        sys::UNICODE_STRING {
            Length: 0,
            MaximumLength: 0,
            Buffer: core::ptr::null_mut(),
        },
    ]);
    if !named {
        return Err(Error::new(ErrorKind::NoResources, "resolve"));
    }
    let mut done = Op::new(handle.inner(), CTL, held).before_open().await?;
    let list = done.held.take_addrinfo();
    let result = check(done.status, done.information, "resolve");
    let mut out = Addresses::new();
    if !list.is_null() {
        collect(list, port, &mut out);
        // Freed now at PASSIVE_LEVEL, parked if this future is polled above it after all.
        client.release_address_info(list);
    }
    result?;
    if out.is_empty() {
        return Err(Error::new(ErrorKind::NotFound, "resolve"));
    }
    Ok(out)
}

fn collect(mut entry: *mut sys::ADDRINFOEXW, port: u16, out: &mut Addresses) {
    while !entry.is_null() {
        // SAFETY: the provider's list is valid until WskFreeAddressInfo, which the caller
        // does after this walk.
        let info = unsafe { &*entry };
        if !info.ai_addr.is_null() {
            // SAFETY: `ai_addr` holds `ai_addrlen` readable bytes.
            let addr = unsafe { sys::read_sockaddr(info.ai_addr, info.ai_addrlen) };
            if let Some(mut addr) = addr {
                addr.set_port(port);
                if !out.contains(&addr) && out.push(addr).is_err() {
                    break;
                }
            }
        }
        entry = info.ai_next;
    }
}
