//! What an operation hands to WSK and gets back: the [`Held`] resources parked in the slot
//! while the IRP is in flight, the [`Call`] an issue function receives, and the results
//! ([`Completed`], [`Refused`]).

use core::ptr::{self, NonNull};

use wsk_sys::{self as sys, ADDRINFOEXW, IRP, NTSTATUS, WSK_BUF, WSK_SOCKET};

use super::SocketInner;
use super::request::Request;
use crate::addr::RawAddr;
use crate::batch::DatagramBatch;
use crate::buf::IoBuf;
use crate::client::ClientInner;
use crate::error::Error;
use crate::mdl::MdlBuf;

/// What WSK holds while an operation is in flight; handed back with the result.
pub(crate) struct Held {
    /// The call to make, with its parameters.
    pub request: Request,
    /// The data buffer.
    pub buf: Option<IoBuf>,
    /// The `WSK_BUF` WSK reads (points into `buf`'s MDL).
    pub wsk_buf: WSK_BUF,
    /// Local and remote addresses WSK reads or writes.
    pub addr: [RawAddr; 2],
    /// A socket option value (in and out).
    pub value: u32,
    /// A name-resolution result list.
    pub addrinfo: *mut ADDRINFOEXW,
    /// The socket object that receives a socket this operation creates (accept, socket
    /// creation); if the operation is abandoned, the new socket is closed through it. Holds
    /// one reference, released when the `Held` is dropped.
    pub adopt: Option<NonNull<SocketInner>>,
    /// Name-resolution strings (node, service), pointing into `buf`.
    pub names: [sys::UNICODE_STRING; 2],
    /// A caller's MDL chain (zero-copy I/O): `wsk_buf` points into it instead of `buf`.
    pub mdl: Option<MdlBuf>,
    /// Datagrams (`WskSendMessages`, batch receives): `wsk_buf` or the buffer list point
    /// into it instead of `buf`.
    pub batch: Option<DatagramBatch>,
}

// SAFETY: the raw pointers in `Held` refer to memory the operation owns (its buffer's MDL, a
// result list, a socket object reference) or into its own `buf`; moving that ownership to
// another thread is sound, and nothing else aliases it while the `Held` is not in flight.
unsafe impl Send for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(child) = self.adopt.take() {
            // SAFETY: `adopt` owns one reference on the child.
            unsafe { SocketInner::release(child) };
        }
    }
}

impl Held {
    /// Nothing held, no request.
    pub(crate) const fn empty() -> Self {
        Self::new(Request::Empty)
    }

    /// `request`, with nothing else held yet.
    pub(crate) const fn new(request: Request) -> Self {
        Self {
            request,
            buf: None,
            wsk_buf: WSK_BUF {
                Mdl: ptr::null_mut(),
                Offset: 0,
                Length: 0,
            },
            addr: [RawAddr::zeroed(), RawAddr::zeroed()],
            value: 0,
            addrinfo: ptr::null_mut(),
            adopt: None,
            names: [sys::UNICODE_STRING {
                Length: 0,
                MaximumLength: 0,
                Buffer: ptr::null_mut(),
            }; 2],
            mdl: None,
            batch: None,
        }
    }

    /// `request` on a caller's MDL chain, with a `WSK_BUF` covering its range.
    pub(crate) fn with_mdl(request: Request, mdl: MdlBuf) -> Self {
        let mut held = Self::new(request);
        held.wsk_buf = mdl.wsk_buf();
        held.mdl = Some(mdl);
        held
    }

    /// `request` on `buf`, with a `WSK_BUF` covering its first `len` bytes.
    pub(crate) fn with_buf(request: Request, buf: IoBuf, len: usize) -> Self {
        Self::with_buf_range(request, buf, 0, len)
    }

    /// `request` on `buf`, with a `WSK_BUF` covering `len` bytes from `offset` (below
    /// `IoBuf::MAX_CAPACITY`, so the offset fits the `WSK_BUF`'s 32 bits).
    pub(crate) fn with_buf_range(request: Request, buf: IoBuf, offset: usize, len: usize) -> Self {
        let mut held = Self::new(request);
        held.wsk_buf = WSK_BUF {
            Mdl: buf.mdl(),
            Offset: u32::try_from(offset).unwrap_or(u32::MAX),
            Length: len,
        };
        held.buf = Some(buf);
        held
    }
}

/// The result of an operation.
pub(crate) struct Completed {
    /// Final status.
    pub status: NTSTATUS,
    /// `IoStatus.Information`.
    pub information: usize,
    /// What the operation held, back.
    pub held: Held,
}

/// An operation refused before reaching WSK, with what it would have held.
pub(crate) struct Refused {
    /// Why.
    pub error: Error,
    /// The resources, untouched.
    pub held: Held,
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        refused.error
    }
}

/// What an issue function gets: the IRP to pass, the held resources (stable addresses WSK may
/// keep until completion) and the socket. Built only by `slot::start`.
pub(crate) struct Call {
    /// The IRP, prepared with our completion routine.
    pub(super) irp: *mut IRP,
    /// The held resources, at their in-slot address.
    pub(super) held: *mut Held,
    /// The WSK socket (null for client-level operations before creation).
    pub(super) socket: *mut WSK_SOCKET,
    /// The client, for provider-level calls.
    pub(super) client: NonNull<ClientInner>,
}

impl Call {
    /// The IRP to pass to WSK.
    pub(crate) fn irp(&self) -> *mut IRP {
        self.irp
    }

    /// The WSK socket (null for client-level calls).
    pub(crate) fn socket(&self) -> *mut WSK_SOCKET {
        self.socket
    }

    /// The held resources, where WSK may keep pointers into them until completion.
    pub(crate) fn held(&mut self) -> &mut Held {
        // SAFETY: `start` points `held` at the slot's cell, which the issuing side owns until
        // the WSK call it is making returns (the slot is claimed, the IRP not yet completed
        // to anyone who would take the cell: an inline completion of a live operation only
        // wakes, one of an orphan leaves finishing to the issuer).
        unsafe { &mut *self.held }
    }

    /// The client the socket belongs to.
    pub(crate) fn client(&self) -> &ClientInner {
        // SAFETY: the client outlives its socket objects, and `start` took it from one.
        unsafe { self.client.as_ref() }
    }

    /// The socket's provider dispatch table, as `T`.
    ///
    /// # Safety
    /// The socket is open and its table is a `T` (every table starts with the basic one, so
    /// `WSK_PROVIDER_BASIC_DISPATCH` always fits).
    pub(crate) unsafe fn dispatch<'t, T>(&self) -> &'t T {
        // SAFETY: an open socket (caller).
        let table = unsafe { (*self.socket).Dispatch };
        // SAFETY: the provider's table outlives its sockets, and it is a `T` (caller).
        unsafe { &*table.cast::<T>() }
    }
}
