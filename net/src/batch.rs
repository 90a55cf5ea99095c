//! [`DatagramBatch`]: several datagrams in one owned buffer, for
//! [`UdpSocket::send_batch`](crate::UdpSocket::send_batch) (one `WskSendMessages` call) and
//! [`UdpSocket::recv_batch`](crate::UdpSocket::recv_batch) (the datagrams already queued, in
//! one call). It moves into the operation and comes back with the result, as an
//! [`IoBuf`](crate::IoBuf) does.

use core::net::SocketAddr;
use core::ptr::NonNull;

use wsk_sys::{self as sys, WSK_BUF, WSK_BUF_LIST};

use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// Pool tag of batch entry tables (`WskD`).
const BATCH_TAG: u32 = sys::pool_tag(*b"WskD");

/// One datagram's slot: the `WSK_BUF_LIST` entry WSK reads, its length and its sender.
struct Entry {
    list: WSK_BUF_LIST,
    len: usize,
    from: Option<SocketAddr>,
}

/// Up to `max_datagrams` datagrams of up to `datagram_size` bytes each, in nonpaged pool:
/// datagram `i` lives at `i * datagram_size` of one [`IoBuf`]-like buffer, and a table of
/// `WSK_BUF_LIST` entries describes them for `WskSendMessages`.
///
/// ```no_run
/// # async fn demo(socket: &wsk_net::UdpSocket) -> wsk_net::Result<()> {
/// let mut batch = wsk_net::DatagramBatch::new(8, 1500)?;
/// batch.push(b"first")?;
/// batch.push(b"second")?;
/// let (sent, mut batch) = socket.send_batch(batch, "192.0.2.1:9".parse().unwrap()).await;
/// assert_eq!(sent?, 2);
/// let (got, batch) = socket.recv_batch(batch).await;
/// for (datagram, from) in batch.iter() {
///     // ...
/// #   let _ = (datagram, from);
/// }
/// # let _ = got?;
/// # Ok(()) }
/// ```
///
/// # IRQL
/// Allocation ([`DatagramBatch::new`]) and drop at <= `DISPATCH_LEVEL`; every other method at
/// any IRQL (the memory is nonpaged).
pub struct DatagramBatch {
    buf: IoBuf,
    entries: NonNull<Entry>,
    max: usize,
    size: usize,
    count: usize,
}

// SAFETY: the batch exclusively owns its buffer and entry table; WSK sees them only while an
// operation owns the batch.
unsafe impl Send for DatagramBatch {}
// SAFETY: shared access only reads.
unsafe impl Sync for DatagramBatch {}

impl DatagramBatch {
    /// The most datagrams one batch holds.
    pub const MAX_DATAGRAMS: usize = 1024;

    /// An empty batch with room for `max_datagrams` (1 ..= [`DatagramBatch::MAX_DATAGRAMS`])
    /// datagrams of up to `datagram_size` bytes (1 ..= 65 535); the whole storage is at most
    /// [`IoBuf::MAX_CAPACITY`]. The storage is zeroed once here, so received datagrams can be
    /// read without tracking what each receive wrote.
    ///
    /// # Errors
    /// `InvalidInput` for sizes out of range; `NoResources` when pool runs out.
    ///
    /// # IRQL
    /// <= `DISPATCH_LEVEL`.
    pub fn new(max_datagrams: usize, datagram_size: usize) -> Result<Self> {
        let invalid = || Error::new(ErrorKind::InvalidInput, "DatagramBatch::new");
        if !(1..=Self::MAX_DATAGRAMS).contains(&max_datagrams)
            || !(1..=usize::from(u16::MAX)).contains(&datagram_size)
        {
            return Err(invalid());
        }
        let total = max_datagrams
            .checked_mul(datagram_size)
            .filter(|&t| t <= IoBuf::MAX_CAPACITY)
            .ok_or_else(invalid)?;
        let mut buf = IoBuf::with_capacity(total)?;
        // Zeroes all of it: every byte a datagram view exposes is initialised.
        let _ = buf.storage_mut();
        let table = max_datagrams * size_of::<Entry>();
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL (our contract).
        let entries = unsafe { sys::allocate_nonpaged(table, BATCH_TAG) }.cast::<Entry>();
        let Some(entries) = NonNull::new(entries) else {
            return Err(Error::new(ErrorKind::NoResources, "DatagramBatch::new"));
        };
        let mdl = buf.mdl();
        for i in 0..max_datagrams {
            let entry = Entry {
                list: WSK_BUF_LIST {
                    Next: core::ptr::null_mut(),
                    Buffer: WSK_BUF {
                        Mdl: mdl,
                        // Below IoBuf::MAX_CAPACITY (64 MiB): fits 32 bits.
                        Offset: u32::try_from(i * datagram_size).unwrap_or(u32::MAX),
                        Length: 0,
                    },
                },
                len: 0,
                from: None,
            };
            // `i < max_datagrams`: within the fresh table.
            let slot = entries.as_ptr().wrapping_add(i);
            // SAFETY: `slot` lies in the fresh table, which pool aligns for `Entry`; written
            // before any read.
            unsafe { slot.write(entry) };
        }
        Ok(Self {
            buf,
            entries,
            max: max_datagrams,
            size: datagram_size,
            count: 0,
        })
    }

    /// Datagrams held.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no datagram is held.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The most datagrams this batch holds.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// The largest datagram one slot holds; a longer received datagram is truncated to it.
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn datagram_size(&self) -> usize {
        self.size
    }

    /// Forgets every datagram (keeps the storage).
    ///
    /// # IRQL
    /// Any.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Appends a copy of `datagram` (to send).
    ///
    /// # Errors
    /// `InvalidInput` when the batch is full or the datagram longer than
    /// [`DatagramBatch::datagram_size`]; nothing is appended then.
    ///
    /// # IRQL
    /// Any.
    pub fn push(&mut self, datagram: &[u8]) -> Result<()> {
        if self.count == self.max || datagram.len() > self.size {
            return Err(Error::new(ErrorKind::InvalidInput, "DatagramBatch::push"));
        }
        let at = self.count * self.size;
        self.buf.storage_mut()[at..at + datagram.len()].copy_from_slice(datagram);
        let entry = self.entry_mut(self.count);
        entry.len = datagram.len();
        entry.from = None;
        self.count += 1;
        Ok(())
    }

    /// Datagram `index` (`None` past [`DatagramBatch::len`]).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        if index >= self.count {
            return None;
        }
        let len = self.entry(index).len;
        let storage = self.storage();
        Some(&storage[index * self.size..index * self.size + len])
    }

    /// The sender of received datagram `index` (`None` for one pushed, or past the end).
    ///
    /// # IRQL
    /// Any.
    #[must_use]
    pub fn sender(&self, index: usize) -> Option<SocketAddr> {
        if index >= self.count {
            return None;
        }
        self.entry(index).from
    }

    /// Each datagram with its sender (`None` for one pushed), in order.
    ///
    /// # IRQL
    /// Any.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).filter_map(|i| Some((self.get(i)?, self.sender(i))))
    }

    /// The whole storage (zeroed at creation, so all of it is written).
    fn storage(&self) -> &[u8] {
        self.buf.written()
    }

    fn entry(&self, index: usize) -> &Entry {
        debug_assert!(index < self.max);
        let entry = self.entries.as_ptr().wrapping_add(index);
        // SAFETY: `index < max`: an initialised entry of the table the batch owns.
        unsafe { &*entry }
    }

    fn entry_mut(&mut self, index: usize) -> &mut Entry {
        debug_assert!(index < self.max);
        let entry = self.entries.as_ptr().wrapping_add(index);
        // SAFETY: as `entry`, exclusively (`&mut self`).
        unsafe { &mut *entry }
    }

    /// Links the `WSK_BUF_LIST` entries of the held datagrams (lengths set) and returns the
    /// head, for `WskSendMessages`; null when empty.
    pub(crate) fn link_for_send(&mut self) -> *mut WSK_BUF_LIST {
        let mut next: *mut WSK_BUF_LIST = core::ptr::null_mut();
        for i in (0..self.count).rev() {
            let entry = self.entry_mut(i);
            entry.list.Buffer.Length = entry.len;
            entry.list.Next = next;
            next = &raw mut entry.list;
        }
        next
    }

    /// The `WSK_BUF` of held datagram `index` (a per-datagram send).
    pub(crate) fn datagram_buf(&self, index: usize) -> WSK_BUF {
        let entry = self.entry(index);
        let mut buf = entry.list.Buffer;
        buf.Length = entry.len;
        buf
    }

    /// The `WSK_BUF` of the next free slot, whole, for a receive; `None` when full.
    pub(crate) fn next_slot(&self) -> Option<WSK_BUF> {
        if self.count == self.max {
            return None;
        }
        let mut buf = self.entry(self.count).list.Buffer;
        buf.Length = self.size;
        Some(buf)
    }

    /// The storage of the next free slot, for a datagram copied in from an event indication
    /// (then [`DatagramBatch::received`]); `None` when full.
    pub(crate) fn next_slot_mut(&mut self) -> Option<&mut [u8]> {
        if self.count == self.max {
            return None;
        }
        let (at, size) = (self.count * self.size, self.size);
        Some(&mut self.buf.storage_mut()[at..at + size])
    }

    /// Records a datagram of `len` bytes from `from` received into the next free slot.
    pub(crate) fn received(&mut self, len: usize, from: Option<SocketAddr>) {
        if self.count == self.max {
            return;
        }
        let size = self.size;
        let entry = self.entry_mut(self.count);
        entry.len = len.min(size);
        entry.from = from;
        self.count += 1;
    }
}

impl core::fmt::Debug for DatagramBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DatagramBatch")
            .field("len", &self.count)
            .field("capacity", &self.max)
            .field("datagram_size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Drop for DatagramBatch {
    fn drop(&mut self) {
        // Entries hold only plain values (no drop glue beyond `Option<SocketAddr>`, which is
        // `Copy`): the table is freed as it is.
        // SAFETY: allocated in `new` with this tag; a batch exists only outside operations
        // (or in a slot whose IRP has completed), so WSK no longer reads it. Drops happen at
        // <= DISPATCH_LEVEL.
        unsafe { sys::ExFreePoolWithTag(self.entries.as_ptr().cast(), BATCH_TAG) };
    }
}

impl<T> crate::time::TimedOutput for (Result<T>, DatagramBatch) {
    fn timed_out(self) -> Self {
        (self.0.map_err(crate::mdl::timed_out_error), self.1)
    }

    /// `None`: the batch is held, so the operation must be waited for.
    fn abandoned(_name: &'static str) -> Option<Self> {
        None
    }
}
