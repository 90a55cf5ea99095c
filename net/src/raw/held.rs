//! What an operation hands to WSK and gets back: the [`Held`] resources parked in the slot
//! while the IRP is in flight, the [`Call`] an issue function receives, and the results
//! ([`Completed`], [`Refused`]).

use core::ptr::{self, NonNull};

use wsk_sys::{self as sys, ADDRINFOEXW, IRP, NTSTATUS, WSK_BUF, WSK_SOCKET};

use super::SocketInner;
use crate::addr::RawAddr;
use crate::buf::IoBuf;
use crate::client::ClientInner;
use crate::error::Error;

/// What WSK holds while an operation is in flight; handed back with the result.
pub(crate) struct Held {
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
    /// Small call parameters (flags, family, option codes) for the issue function.
    pub params: [u32; 4],
    /// Name-resolution strings (node, service), pointing into `buf`.
    pub names: [sys::UNICODE_STRING; 2],
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
    /// Nothing held.
    pub(crate) const fn empty() -> Self {
        Self {
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
            params: [0; 4],
            names: [sys::UNICODE_STRING {
                Length: 0,
                MaximumLength: 0,
                Buffer: ptr::null_mut(),
            }; 2],
        }
    }

    /// Holds `buf`, with a `WSK_BUF` covering its first `len` bytes.
    pub(crate) fn with_buf(buf: IoBuf, len: usize) -> Self {
        Self::with_buf_range(buf, 0, len)
    }

    /// Holds `buf`, with a `WSK_BUF` covering `len` bytes from `offset` (below
    /// `IoBuf::MAX_CAPACITY`, so the offset fits the `WSK_BUF`'s 32 bits).
    pub(crate) fn with_buf_range(buf: IoBuf, offset: usize, len: usize) -> Self {
        let mut held = Self::empty();
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

/// What an operation's issue function gets: the IRP to pass, the held resources (stable
/// addresses WSK may keep until completion) and the socket.
pub(crate) struct Call {
    /// The IRP, prepared with our completion routine.
    pub irp: *mut IRP,
    /// The held resources, at their in-slot address.
    pub held: *mut Held,
    /// The WSK socket (null for client-level operations before creation).
    pub socket: *mut WSK_SOCKET,
    /// The client handle for provider-level calls.
    pub client: NonNull<ClientInner>,
}

/// How an operation calls WSK: reads its parameters from `call.held`.
pub(crate) type IssueFn = unsafe fn(&mut Call) -> NTSTATUS;
