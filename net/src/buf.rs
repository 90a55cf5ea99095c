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
/// Sends send `[0, len)`. [`TcpStream::recv`](crate::TcpStream::recv) clears it first, then
/// fills up to its capacity and sets `len` to what arrived;
/// [`TcpStream::recv_append`](crate::TcpStream::recv_append) keeps `[0, len)` and receives
/// into the spare capacity after it. It derefs to the filled part, `[0, len)`.
///
/// The storage is not zeroed at allocation: the buffer tracks how far it was ever written
/// (by this type or by a receive) and zeroes the rest only when safe code could see it
/// ([`IoBuf::set_len`], [`IoBuf::storage_mut`]). Safe code never sees uninitialised or stale
/// pool memory; a receive writes through the MDL, the kernel's view.
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
    /// `[0, initialised)` has been written (by this type, zeroing included, or by a receive
    /// the kernel completed); the rest may be uninitialised. `len <= initialised <= capacity`.
    initialised: usize,
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
    /// with its MDL built. The storage is not zeroed here (an idle connection's receive buffer
    /// need not be touched): bytes are zeroed when [`IoBuf::set_len`] or
    /// [`IoBuf::storage_mut`] first exposes them unwritten, so none is ever seen
    /// uninitialised or stale.
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
            initialised: 0,
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

    /// Bytes of storage after the filled part: what an appending receive
    /// ([`TcpStream::recv_append`](crate::TcpStream::recv_append)) or
    /// [`IoBuf::extend_from_slice`] can still add.
    ///
    /// ```no_run
    /// # fn demo() -> wsk_net::Result<()> {
    /// let mut buf = wsk_net::IoBuf::with_capacity(8)?;
    /// buf.extend_from_slice(b"abc")?;
    /// assert_eq!(buf.spare_capacity(), 5);
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn spare_capacity(&self) -> usize {
        self.capacity - self.len
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
        self.zero_up_to(len);
        self.len = len;
        Ok(())
    }

    /// Removes the first `count` bytes of the filled part, moving the rest to the front
    /// (what a reader does with the bytes it consumed, to make room for an appending
    /// receive). `count` beyond `len` empties the buffer.
    ///
    /// ```no_run
    /// # fn demo() -> wsk_net::Result<()> {
    /// let mut buf = wsk_net::IoBuf::from_slice(b"GET /\nrest")?;
    /// buf.discard_front(6);
    /// assert_eq!(&buf[..], b"rest");
    /// # Ok(()) }
    /// ```
    ///
    /// # IRQL
    /// Any.
    pub fn discard_front(&mut self, count: usize) {
        let count = count.min(self.len);
        let len = self.len;
        self.copy_within(count..len, 0);
        self.len = len - count;
    }

    /// Zeroes `[initialised, end)` so that `[0, end)` is initialised.
    fn zero_up_to(&mut self, end: usize) {
        debug_assert!(end <= self.capacity);
        if end <= self.initialised {
            return;
        }
        // SAFETY: `initialised < end <= capacity`: the offset stays within our allocation.
        let from = unsafe { self.data.as_ptr().add(self.initialised) };
        // SAFETY: `[initialised, end)` lies within the `capacity` bytes we own exclusively
        // (`&mut self`); writing bytes needs no initialised contents.
        unsafe { core::ptr::write_bytes(from, 0, end - self.initialised) };
        self.initialised = end;
    }

    /// Records that the kernel wrote `[0, end)` of the storage (a receive completed with data
    /// up to there, after bytes that were already initialised), so that a later
    /// [`IoBuf::set_len`] exposes them as they are instead of zeroing them.
    ///
    /// # Safety
    /// Every byte of `[0, end)` has been written: `[0, initialised)` before, the rest by the
    /// completed receive (`end` = its offset plus the count WSK reported, within its range).
    pub(crate) unsafe fn assume_written(&mut self, end: usize) {
        debug_assert!(end <= self.capacity);
        self.initialised = self.initialised.max(end.min(self.capacity));
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
        // SAFETY: `len <= capacity`: the offset stays within our allocation.
        let to = unsafe { self.data.as_ptr().add(self.len) };
        // SAFETY: `[len, len + bytes.len())` lies within our `capacity` bytes (checked above),
        // which `&mut self` owns exclusively and `bytes` cannot alias; the destination may be
        // uninitialised, which a raw copy allows.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), to, bytes.len()) };
        self.len += bytes.len();
        self.initialised = self.initialised.max(self.len);
        Ok(())
    }

    /// The whole storage, filled or not, for writing in place before [`IoBuf::set_len`]
    /// (example there). Bytes never written are zero (zeroed by the first call); others hold
    /// what was last written or received there.
    ///
    /// # IRQL
    /// Any.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        self.zero_up_to(self.capacity);
        // SAFETY: all `capacity` bytes are initialised (just above) and ours exclusively
        // (`&mut self`).
        unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr(), self.capacity) }
    }

    /// The storage written so far, filled or not (`[0, initialised)`): for a
    /// [`DatagramBatch`](crate::DatagramBatch), which zeroes all of it once and reads each
    /// datagram's slot where a receive put it.
    pub(crate) fn written(&self) -> &[u8] {
        // SAFETY: `[0, initialised)` is ours and initialised; `&self` keeps it unwritten.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.initialised) }
    }

    /// The MDL describing the whole storage (crate-internal: `WSK_BUF` construction).
    pub(crate) fn mdl(&self) -> *mut MDL {
        self.mdl.as_ptr()
    }
}

impl core::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are ours and initialised (`len <= initialised`).
        unsafe { core::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl core::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the first `len` bytes are ours exclusively (`&mut self`) and initialised
        // (`len <= initialised`).
        unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr(), self.len) }
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

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    /// The storage is not zeroed at allocation, yet nothing safe code sees was never written:
    /// `set_len` and `storage_mut` zero what they expose, and bytes a receive wrote
    /// (`assume_written`) stay as they are. Under Miri, reading an unwritten byte would be
    /// reported as undefined behaviour.
    #[test]
    fn only_written_or_zeroed_bytes_are_ever_exposed() {
        let kernel = wsk_host::Kernel::boot(wsk_host::Config::default());
        kernel.on_kernel_thread(|| {
            let mut buf = IoBuf::with_capacity(64).unwrap();
            buf.extend_from_slice(b"abc").unwrap();
            buf.set_len(6).unwrap();
            assert_eq!(&buf[..], b"abc\0\0\0");
            buf.discard_front(1);
            assert_eq!(&buf[..], b"bc\0\0\0");
            assert_eq!(buf.spare_capacity(), 59);

            // A "receive" writes [8, 12) through the raw storage, as the kernel does through
            // the MDL, after [0, 8) was initialised by set_len.
            let mut buf = IoBuf::with_capacity(16).unwrap();
            buf.set_len(8).unwrap();
            // SAFETY: [8, 12) lies within the 16-byte storage we own.
            let at = unsafe { buf.data.as_ptr().add(8) };
            // SAFETY: as above: four writable bytes, not aliased.
            unsafe { core::ptr::copy_nonoverlapping(b"data".as_ptr(), at, 4) };
            // SAFETY: [0, 8) was initialised by set_len, [8, 12) written just above.
            unsafe { buf.assume_written(12) };
            buf.set_len(14).unwrap();
            assert_eq!(
                &buf[8..],
                b"data\0\0",
                "received bytes kept, the rest zeroed"
            );
            assert!(buf.storage_mut()[14..].iter().all(|&b| b == 0));
            assert_eq!(buf.set_len(17).unwrap_err().kind(), ErrorKind::InvalidInput);
        });
        assert!(kernel.check_leaks().is_clean());
    }
}
