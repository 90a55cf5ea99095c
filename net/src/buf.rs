//! `IoBuf`: an owned buffer in nonpaged pool with its MDL built once, the only kind of memory
//! this crate hands to WSK. Operations take it by value and give it back with the result, so
//! the buffer can never be touched or freed while WSK holds it.

use core::ptr::NonNull;

use wsk_sys::{self as sys, MDL};

use crate::error::{Error, ErrorKind, Result};

/// Pool tag of I/O buffers (`WskB` in a debugger).
pub(crate) const BUF_TAG: u32 = sys::pool_tag(*b"WskB");

/// An owned, nonpaged buffer described by an MDL, with a fill length.
///
/// Sends send `[0, len)`. Receives clear it first, then fill up to its capacity and set `len`
/// to what arrived. It derefs to the filled part, `[0, len)`.
///
/// ```no_run
/// # use wsk_net::IoBuf;
/// # fn demo() -> wsk_net::Result<()> {
/// let mut buf = IoBuf::with_capacity(4096)?;
/// assert!(buf.is_empty());
/// buf.extend_from_slice(b"hello")?;
/// assert_eq!(&buf[..], b"hello");
/// assert_eq!((buf.len(), buf.capacity()), (5, 4096));
/// buf.clear();
/// assert_eq!(buf.len(), 0);
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Allocation ([`IoBuf::with_capacity`], [`IoBuf::from_slice`]) and drop (which frees the
/// pool and the MDL) at <= `DISPATCH_LEVEL`; every other method at any IRQL (the memory is
/// nonpaged).
pub struct IoBuf {
    data: NonNull<u8>,
    mdl: NonNull<MDL>,
    capacity: usize,
    len: usize,
}

// SAFETY: IoBuf exclusively owns its pool memory and MDL; nothing else aliases them while the
// IoBuf exists (WSK only sees them while an operation owns the IoBuf).
unsafe impl Send for IoBuf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for IoBuf {}

impl IoBuf {
    /// The largest capacity, 64 MiB: one MDL describes at most `u32::MAX` bytes; we keep well
    /// below. Larger transfers take several operations.
    ///
    /// ```no_run
    /// # fn demo(total: usize) -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::with_capacity(total.min(wsk_net::IoBuf::MAX_CAPACITY))?;
    /// # let _ = buf;
    /// # Ok(()) }
    /// ```
    pub const MAX_CAPACITY: usize = 64 << 20;

    /// A buffer of `capacity` bytes (1 ..= [`IoBuf::MAX_CAPACITY`]), empty, in nonpaged pool
    /// with its MDL built. The storage is zeroed once here, so no byte of it is ever
    /// uninitialised or stale kernel memory, whatever [`IoBuf::set_len`] exposes.
    ///
    /// ```no_run
    /// # fn demo() -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::with_capacity(16 * 1024)?;
    /// assert_eq!(buf.capacity(), 16 * 1024);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for a zero or too large capacity; `NoResources` when pool or the MDL
    /// cannot be allocated.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn with_capacity(capacity: usize) -> Result<Self> {
        if capacity == 0 || capacity > Self::MAX_CAPACITY {
            return Err(Error::new(ErrorKind::InvalidInput, "IoBuf::with_capacity"));
        }
        // SAFETY: nonpaged allocation is allowed at <= DISPATCH_LEVEL, our documented contract.
        let data = unsafe { sys::allocate_nonpaged(capacity, BUF_TAG) };
        let Some(data) = NonNull::new(data.cast::<u8>()) else {
            return Err(Error::new(ErrorKind::NoResources, "IoBuf::with_capacity"));
        };
        // SAFETY: `data` is a fresh allocation of `capacity` writable bytes, ours alone.
        unsafe { core::ptr::write_bytes(data.as_ptr(), 0, capacity) };
        let length = u32::try_from(capacity).unwrap_or(u32::MAX);
        // SAFETY: `data` is a live nonpaged allocation of `capacity` bytes; no IRP is attached.
        let mdl = unsafe {
            sys::IoAllocateMdl(data.as_ptr().cast(), length, 0, 0, core::ptr::null_mut())
        };
        let Some(mdl) = NonNull::new(mdl) else {
            // SAFETY: allocated above with the same tag, never shared.
            unsafe { sys::ExFreePoolWithTag(data.as_ptr().cast(), BUF_TAG) };
            return Err(Error::new(ErrorKind::NoResources, "IoBuf::with_capacity"));
        };
        // SAFETY: the MDL describes nonpaged pool, which is what this call requires.
        unsafe { sys::MmBuildMdlForNonPagedPool(mdl.as_ptr()) };
        Ok(Self {
            data,
            mdl,
            capacity,
            len: 0,
        })
    }

    /// A buffer holding a copy of `bytes` (capacity = `bytes.len()`).
    ///
    /// ```no_run
    /// # fn demo() -> wsk_net::Result<()> {
    /// let buf = wsk_net::IoBuf::from_slice(b"ping")?;
    /// assert_eq!((&buf[..], buf.capacity()), (&b"ping"[..], 4));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`IoBuf::with_capacity`]: `InvalidInput` for an empty slice (a zero capacity) or one
    /// longer than [`IoBuf::MAX_CAPACITY`]; `NoResources`.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let mut buf = Self::with_capacity(bytes.len())?;
        buf.extend_from_slice(bytes)?;
        Ok(buf)
    }

    /// Bytes of storage. See the example on [`IoBuf`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes filled. See the example on [`IoBuf`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is filled. See the example on [`IoBuf`].
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the contents (keeps the storage): `len` becomes 0. See the example on
    /// [`IoBuf`].
    ///
    /// # IRQL
    /// Any.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the fill length, after writing through [`IoBuf::storage_mut`].
    ///
    /// Bytes of `[0, len)` that were never written since allocation are zero; bytes from an
    /// earlier fill (a receive, say) keep that content.
    ///
    /// ```no_run
    /// # fn demo() -> wsk_net::Result<()> {
    /// let mut buf = wsk_net::IoBuf::with_capacity(4)?;
    /// buf.storage_mut()[..2].copy_from_slice(b"ok");
    /// buf.set_len(2)?;
    /// assert_eq!(&buf[..], b"ok");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when `len` exceeds the capacity; the length is unchanged then.
    ///
    /// # IRQL
    /// Any.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        if len > self.capacity {
            return Err(Error::new(ErrorKind::InvalidInput, "IoBuf::set_len"));
        }
        self.len = len;
        Ok(())
    }

    /// Appends `bytes` after the filled part. See the example on [`IoBuf`].
    ///
    /// # Errors
    /// `InvalidInput` when they do not fit; nothing is appended then.
    ///
    /// # IRQL
    /// Any.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.capacity - self.len {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "IoBuf::extend_from_slice",
            ));
        }
        self.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// The whole storage, filled or not, for writing in place before [`IoBuf::set_len`]
    /// (example there). Bytes never written are zero; others hold what was last written or
    /// received there.
    ///
    /// # IRQL
    /// Any.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        // SAFETY: `data` is `capacity` initialised bytes (zeroed at allocation) that we own
        // exclusively (`&mut self`).
        unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr(), self.capacity) }
    }

    fn spare_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.storage_mut()[len..]
    }

    /// The MDL describing the whole storage (crate-internal: `WSK_BUF` construction).
    pub(crate) fn mdl(&self) -> *mut MDL {
        self.mdl.as_ptr()
    }
}

impl core::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are ours and were written through this type.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl core::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.storage_mut()[..len]
    }
}

impl core::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        // SAFETY: an IoBuf only exists outside operations, so WSK no longer holds the MDL or
        // the memory; both were allocated in `with_capacity` with these routines and tag.
        // Freeing nonpaged pool and MDLs is allowed at <= DISPATCH_LEVEL, where drops happen.
        unsafe { sys::IoFreeMdl(self.mdl.as_ptr()) };
        // SAFETY: as above: the memory the MDL described, allocated with this tag.
        unsafe { sys::ExFreePoolWithTag(self.data.as_ptr().cast(), BUF_TAG) };
    }
}
