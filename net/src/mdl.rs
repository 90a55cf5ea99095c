//! [`MdlBuf`]: zero-copy I/O from and into memory the caller already describes with an MDL
//! chain (an IOCTL's `Irp->MdlAddress`, a chain of MDLs over several buffers). It moves into a
//! send or receive and comes back with the result, exactly as an [`IoBuf`](crate::IoBuf) does;
//! when the future is dropped in flight, the slot keeps it until the completion routine has
//! run and only then releases it through the caller's release routine.

use core::ffi::c_void;
use core::ptr::NonNull;

use wsk_sys::{self as sys, MDL, WSK_BUF};

use crate::error::{Error, ErrorKind, Result};

/// The routine an [`MdlBuf`] calls when it is dropped: the caller's chance to free the MDLs
/// and their memory, or to complete the IRP they came from. Called once, at IRQL <=
/// `DISPATCH_LEVEL` (from a completion routine when the future of an operation was dropped),
/// with the chain head and the context given to [`MdlBuf::from_raw`].
pub type MdlRelease = unsafe fn(chain: NonNull<MDL>, context: *mut c_void);

/// Caller memory described by an MDL chain, owned by this handle until it is dropped (which
/// calls the caller's [`MdlRelease`]) or taken back with [`MdlBuf::into_raw`].
///
/// Operations ([`TcpStream::send_mdl`](crate::TcpStream::send_mdl),
/// [`TcpStream::recv_mdl`](crate::TcpStream::recv_mdl),
/// [`UdpSocket::send_to_mdl`](crate::UdpSocket::send_to_mdl),
/// [`UdpSocket::recv_from_mdl`](crate::UdpSocket::recv_from_mdl)) take it by value and hand it
/// back with the result; WSK reads or writes the caller's pages directly, without a copy into
/// an [`IoBuf`](crate::IoBuf). The range used is `[offset, offset + len)` of the chain's bytes
/// (the chain is the MDLs' `ByteCount`s end to end, following `Next`).
///
/// ```no_run
/// # use core::{ffi::c_void, ptr::NonNull};
/// # use wsk_sys::MDL;
/// /// The IOCTL's IRP is completed once the stack has let go of its buffer.
/// unsafe fn complete_ioctl(_chain: NonNull<MDL>, irp: *mut c_void) {
///     // IoCompleteRequest(irp.cast(), IO_NO_INCREMENT) ...
/// #   let _ = irp;
/// }
/// # async fn demo(stream: &wsk_net::TcpStream, mdl: NonNull<MDL>, len: usize, irp: *mut c_void)
/// #     -> wsk_net::Result<()> {
/// // SAFETY: the IRP's locked MDL chain covers `len` bytes and stays untouched until
/// // `complete_ioctl` runs.
/// let buf = unsafe { wsk_net::MdlBuf::from_raw(mdl, 0, len, complete_ioctl, irp) }?;
/// let (sent, buf) = stream.send_mdl(buf).await;
/// sent?;
/// drop(buf); // completes the IOCTL
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Construction, accessors and [`MdlBuf::into_raw`] at any IRQL; drop (which runs the release
/// routine) at <= `DISPATCH_LEVEL`.
pub struct MdlBuf {
    /// The chain as given, what the release routine gets back.
    head: NonNull<MDL>,
    /// The MDL that holds byte `offset`: what the `WSK_BUF` starts at (its offset must lie
    /// within its first MDL, "`WSK_BUF` structure (wsk.h)").
    first: NonNull<MDL>,
    /// The offset within `first`.
    first_offset: u32,
    offset: usize,
    len: usize,
    /// Bytes the whole chain describes.
    total: usize,
    release: Option<(MdlRelease, *mut c_void)>,
}

// SAFETY: the handle owns the chain exclusively (the `from_raw` contract); the caller's release
// routine and context are declared callable from any thread at <= DISPATCH_LEVEL.
unsafe impl Send for MdlBuf {}

/// The longest chain walked (a guard against a cyclic chain).
const MAX_CHAIN: usize = 4096;

impl MdlBuf {
    /// Takes ownership of the MDL chain `chain` for I/O on its bytes `[offset, offset + len)`.
    ///
    /// # Safety
    /// - `chain` and every MDL reached through `Next` are live and describe memory that is
    ///   locked or from nonpaged pool ("`WSK_BUF` structure (wsk.h)", Remarks), valid for
    ///   reading and writing, until `release` is called or the chain is taken back with
    ///   [`MdlBuf::into_raw`];
    /// - nobody reads, writes, frees or re-chains the MDLs or their memory meanwhile (a
    ///   receive writes into it while WSK holds it);
    /// - `release(chain, context)` may be called once at <= `DISPATCH_LEVEL` from any CPU.
    ///
    /// # Errors
    /// `InvalidInput` when `len` is 0, when the range does not fit in the chain, or when the
    /// offset within its MDL exceeds 32 bits; nothing is released then (the caller keeps the
    /// chain).
    ///
    /// # IRQL
    /// Any (reads the MDL headers only).
    pub unsafe fn from_raw(
        chain: NonNull<MDL>,
        offset: usize,
        len: usize,
        release: MdlRelease,
        context: *mut c_void,
    ) -> Result<Self> {
        let invalid = || Error::new(ErrorKind::InvalidInput, "MdlBuf::from_raw");
        if len == 0 {
            return Err(invalid());
        }
        let mut first = None;
        let mut total = 0usize;
        let mut mdl = chain.as_ptr();
        let mut links = 0;
        while !mdl.is_null() {
            links += 1;
            if links > MAX_CHAIN {
                return Err(invalid());
            }
            // SAFETY: a live MDL of the chain (caller).
            let count = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
            if first.is_none() && offset < total + count {
                let within = u32::try_from(offset - total).map_err(|_| invalid())?;
                first = NonNull::new(mdl).map(|m| (m, within));
            }
            total = total.checked_add(count).ok_or_else(invalid)?;
            // SAFETY: as above.
            mdl = unsafe { (*mdl).Next };
        }
        let Some((first, first_offset)) = first else {
            return Err(invalid());
        };
        if offset.checked_add(len).is_none_or(|end| end > total) {
            return Err(invalid());
        }
        Ok(Self {
            head: chain,
            first,
            first_offset,
            offset,
            len,
            total,
            release: Some((release, context)),
        })
    }

    /// Bytes of the range used by operations. A receive writes at most this many.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an `MdlBuf` covers at least one byte.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the range starts in the chain's bytes.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes the whole chain describes.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn chain_len(&self) -> usize {
        self.total
    }

    /// The chain head given to [`MdlBuf::from_raw`] (to read received data through the
    /// caller's own mapping).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn chain(&self) -> NonNull<MDL> {
        self.head
    }

    /// Gives the chain and its context back without calling the release routine: the caller
    /// owns the MDLs again.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn into_raw(mut self) -> (NonNull<MDL>, *mut c_void) {
        let context = self.release.take().map_or(core::ptr::null_mut(), |r| r.1);
        (self.head, context)
    }

    /// The `WSK_BUF` for `[offset, offset + len)`: its MDL is the one holding `offset`.
    pub(crate) fn wsk_buf(&self) -> WSK_BUF {
        WSK_BUF {
            Mdl: self.first.as_ptr(),
            Offset: self.first_offset,
            Length: self.len,
        }
    }

    /// The `WSK_BUF` for the range's bytes after its first `skip` (`skip < len`): the rest of
    /// a receive a provider completed short. Its MDL is the one holding that byte.
    pub(crate) fn wsk_buf_after(&self, skip: usize) -> WSK_BUF {
        debug_assert!(skip < self.len);
        let mut mdl = self.first.as_ptr();
        let mut at = self.first_offset as usize + skip;
        loop {
            // SAFETY: a live MDL of the chain (the `from_raw` contract holds while we exist).
            let count = unsafe { sys::MmGetMdlByteCount(mdl) } as usize;
            // SAFETY: as above.
            let next = unsafe { (*mdl).Next };
            if at < count || next.is_null() {
                break;
            }
            at -= count;
            mdl = next;
        }
        WSK_BUF {
            Mdl: mdl,
            // Below the MDL's 32-bit byte count (the range lies in the chain, checked in
            // `from_raw`).
            Offset: u32::try_from(at).unwrap_or(u32::MAX),
            Length: self.len - skip,
        }
    }
}

impl core::fmt::Debug for MdlBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MdlBuf")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("chain_len", &self.total)
            .finish_non_exhaustive()
    }
}

impl Drop for MdlBuf {
    fn drop(&mut self) {
        if let Some((release, context)) = self.release.take() {
            // SAFETY: an MdlBuf exists only outside operations (or in a slot whose IRP has
            // completed), so WSK no longer holds the chain; the release routine is called
            // once, at <= DISPATCH_LEVEL, as `from_raw`'s contract allows.
            unsafe { release(self.head, context) };
        }
    }
}

impl<T> crate::time::TimedOutput for (Result<T>, MdlBuf) {
    fn timed_out(self) -> Self {
        (self.0.map_err(timed_out_error), self.1)
    }

    /// `None`: the chain is held, so the operation must be waited for.
    fn abandoned(_name: &'static str) -> Option<Self> {
        None
    }
}

/// `Cancelled` (a deadline cancelled the operation) as `TimedOut`, same operation name.
pub(crate) fn timed_out_error(error: Error) -> Error {
    if error.kind() == ErrorKind::Cancelled {
        Error::new(ErrorKind::TimedOut, error.operation())
    } else {
        error
    }
}
