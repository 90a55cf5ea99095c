//! [`MdlBuf`]: zero-copy I/O from and into memory the caller already describes with an MDL
//! chain (an IOCTL's `Irp->MdlAddress`, a chain of MDLs over several buffers). It moves into a
//! send or receive and comes back with the result, exactly as an [`IoBuf`](crate::IoBuf) does;
//! when the future is dropped in flight, the slot keeps it until the completion routine has
//! run and only then releases it through the caller's release routine.

use core::ffi::c_void;
use core::ptr::NonNull;

use wsk_sys::{self as sys, IRP, MDL, NTSTATUS, WSK_BUF};

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
/// An IOCTL's IRP is simplest through [`MdlBuf::from_irp`], which completes it; with
/// [`MdlBuf::from_raw`] the release routine does what the caller wants:
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
    /// The IOCTL's IRP of [`MdlBuf::from_irp`] (completed by the release), or null.
    irp: *mut IRP,
}

// SAFETY: the handle owns the chain exclusively (the `from_raw` contract) and, from `from_irp`,
// the IRP; the caller's release routine and context are declared callable from any thread at
// <= DISPATCH_LEVEL, and an IRP may be completed from any thread.
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
            irp: core::ptr::null_mut(),
        })
    }

    /// Takes an IOCTL's IRP whose buffer is its MDL chain `Irp->MdlAddress`
    /// (`METHOD_IN_DIRECT`/`METHOD_OUT_DIRECT`) for I/O on the chain's bytes
    /// `[offset, offset + len)`, and owns the IRP from now on: marks it pending
    /// (`IoMarkIrpPending`) and completes it (`IoCompleteRequest`, `IO_NO_INCREMENT`) when the
    /// handle is dropped, with the status and byte count given by [`MdlBuf::complete`] or
    /// [`MdlBuf::set_completion`] and else `STATUS_CANCELLED` and 0 (also when the future of an
    /// operation holding it was dropped: the completion routine drops it). The dispatch
    /// routine returns `STATUS_PENDING` once this succeeded.
    ///
    /// ```no_run
    /// # use core::ptr::NonNull;
    /// # use wsk_sys::IRP;
    /// # fn spawn(_: impl core::future::Future<Output = ()> + Send + 'static) {}
    /// # fn dispatch(stream: &'static wsk_net::TcpStream, irp: NonNull<IRP>, len: usize)
    /// #     -> wsk_sys::NTSTATUS {
    /// // IRP_MJ_DEVICE_CONTROL, METHOD_OUT_DIRECT: receive into the caller's output buffer.
    /// // SAFETY: our dispatch routine holds the IRP; its locked MdlAddress chain has `len`
    /// // bytes; no cancel routine is set and nobody else completes it.
    /// let buf = match unsafe { wsk_net::MdlBuf::from_irp(irp, 0, len) } {
    ///     Ok(buf) => buf,
    ///     Err(_) => return wsk_sys::STATUS_INVALID_PARAMETER, // complete it ourselves
    /// };
    /// spawn(async move {
    ///     let (received, buf) = stream.recv_mdl(buf, false).await;
    ///     buf.complete(&received); // IoStatus = (STATUS_SUCCESS, bytes) or the error
    /// });
    /// wsk_sys::STATUS_PENDING
    /// # }
    /// ```
    ///
    /// # Safety
    /// - `irp` is a live IRP that the calling driver holds at its current stack location (it
    ///   is in the driver's dispatch routine for it, or has kept it since), and is not pending
    ///   in another way; from now on nobody but this handle completes it, and no cancel routine
    ///   is set on it (it cannot be cancelled while held: bound the operations with
    ///   [`timeout`](crate::timeout));
    /// - its `MdlAddress` chain meets [`MdlBuf::from_raw`]'s contract until the IRP is
    ///   completed (the I/O manager's probed and locked buffer of a direct-I/O IOCTL does).
    ///
    /// # Errors
    /// `InvalidInput` when the IRP has no `MdlAddress` or the range does not fit (as
    /// [`MdlBuf::from_raw`]); the IRP is then untouched (not marked pending): the caller
    /// completes it.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL` (drop completes the IRP).
    pub unsafe fn from_irp(irp: NonNull<IRP>, offset: usize, len: usize) -> Result<Self> {
        let irp = irp.as_ptr();
        // SAFETY: a live IRP the caller holds.
        let chain = unsafe { (*irp).MdlAddress };
        let chain =
            NonNull::new(chain).ok_or(Error::new(ErrorKind::InvalidInput, "MdlBuf::from_irp"))?;
        // SAFETY: the chain meets from_raw's contract (ours); the release routine completes
        // the IRP, which only this handle does (ours).
        let mut buf = unsafe { Self::from_raw(chain, offset, len, complete_irp, irp.cast()) }?;
        buf.irp = irp;
        // The outcome of a drop without a result (an abandoned operation).
        // SAFETY: the live IRP, ours now.
        unsafe { (*irp).IoStatus.Status = sys::STATUS_CANCELLED };
        // SAFETY: as above.
        unsafe { (*irp).IoStatus.Information = 0 };
        // SAFETY: as above, at its current stack location (the caller's contract).
        unsafe { sys::IoMarkIrpPending(irp) };
        Ok(buf)
    }

    /// Sets what the IRP of [`MdlBuf::from_irp`] completes with when this handle is dropped:
    /// `IoStatus.Status` and `IoStatus.Information` (bytes transferred). No effect on a
    /// handle from [`MdlBuf::from_raw`].
    ///
    /// # Errors
    /// `InvalidInput` for `STATUS_PENDING`, which is no final status (completing with it is a
    /// Driver Verifier violation); nothing changes then.
    ///
    /// # IRQL
    /// Any.
    pub fn set_completion(&mut self, status: NTSTATUS, information: usize) -> Result<()> {
        if status == sys::STATUS_PENDING {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "MdlBuf::set_completion",
            ));
        }
        if !self.irp.is_null() {
            // SAFETY: the IRP is ours until the drop completes it.
            unsafe { (*self.irp).IoStatus.Status = status };
            // SAFETY: as above.
            unsafe { (*self.irp).IoStatus.Information = information };
        }
        Ok(())
    }

    /// Completes the IRP of [`MdlBuf::from_irp`] now with an operation's result:
    /// `Ok(n)` as `STATUS_SUCCESS` with `n` bytes, an error as its `NTSTATUS`
    /// (`STATUS_UNSUCCESSFUL` when it has none) with 0. On a handle from
    /// [`MdlBuf::from_raw`] it is a drop (the release routine runs).
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn complete(mut self, result: &Result<usize>) {
        let (status, information) = match result {
            Ok(n) => (sys::STATUS_SUCCESS, *n),
            Err(error) => (
                error
                    .status()
                    .filter(|&s| s != sys::STATUS_PENDING)
                    .unwrap_or(sys::STATUS_UNSUCCESSFUL),
                0,
            ),
        };
        // Never STATUS_PENDING (filtered above): cannot fail.
        let _ = self.set_completion(status, information);
    }

    /// The IRP of [`MdlBuf::from_irp`], if this handle owns one (to read its stack location).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn irp(&self) -> Option<NonNull<IRP>> {
        NonNull::new(self.irp)
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
    /// owns the MDLs again. For a handle from [`MdlBuf::from_irp`] the context is the IRP,
    /// still marked pending and with the status last set: the caller completes it.
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

/// The release routine of [`MdlBuf::from_irp`]: completes the IOCTL's IRP with the status its
/// `IoStatus` holds. IRQL <= `DISPATCH_LEVEL`.
unsafe fn complete_irp(_chain: NonNull<MDL>, irp: *mut c_void) {
    // SAFETY: the IRP `from_irp` took, completed once (the release runs once), its status set
    // and never STATUS_PENDING (`from_irp`, `set_completion`).
    unsafe { sys::IofCompleteRequest(irp.cast(), sys::IO_NO_INCREMENT) };
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
