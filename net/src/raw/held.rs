//! What an operation hands to WSK and gets back: the [`Held`] resources parked in the slot
//! while the IRP is in flight, the [`Params`] an operation parks there ([`Held`] whole, or
//! the small [`Transfer`] of a TCP receive through the general operation (`recv_append`;
//! plain sends and receives take `super::stream_io`), written into the cell field by field),
//! the [`Call`] an issue function receives, and the results ([`Completed`],
//! [`TransferDone`], [`Refused`]).

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
    /// The socket object that receives a socket this operation creates (accept, socket
    /// creation); if the operation is abandoned, the new socket is closed through it. Holds
    /// one reference, released when the `Held` is dropped.
    pub adopt: Option<NonNull<SocketInner>>,
    /// What only rare operations hold (an MDL chain, a datagram batch, name-resolution
    /// strings and results; no operation holds two of them), in a pool block the operation
    /// allocates: a slot at rest, and every TCP send and receive, pays one pointer for them.
    extra: Option<ExtraBlock>,
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
            adopt: None,
            extra: None,
        }
    }

    /// `request` on a caller's MDL chain, with a `WSK_BUF` covering its range; the chain
    /// back when its block cannot be allocated. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn with_mdl(request: Request, mdl: MdlBuf) -> Result<Self, MdlBuf> {
        let mut held = Self::new(request);
        held.wsk_buf = mdl.wsk_buf();
        held.set_mdl(mdl)?;
        Ok(held)
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

impl Held {
    /// The rare resources' block, allocated (holding nothing yet) if there is none; `None`
    /// when pool runs out. IRQL <= `DISPATCH_LEVEL`.
    fn extra_block(&mut self) -> Option<&mut Extra> {
        if self.extra.is_none() {
            self.extra = ExtraBlock::new();
        }
        self.extra.as_mut().map(ExtraBlock::get_mut)
    }

    /// The rare resources, if a block holds any.
    fn extra(&self) -> Option<&Extra> {
        self.extra.as_ref().map(ExtraBlock::get)
    }

    /// Takes the block out and frees it if `is_kind` accepts what it holds; what it held.
    fn take_extra(&mut self, is_kind: fn(&Extra) -> bool) -> Option<Extra> {
        if !self.extra().is_some_and(is_kind) {
            return None;
        }
        self.extra.take().map(ExtraBlock::into_inner)
    }

    /// Holds a caller's MDL chain (zero-copy I/O), in place of any other rare resource; the
    /// chain back when its block cannot be allocated. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn set_mdl(&mut self, mdl: MdlBuf) -> Result<(), MdlBuf> {
        match self.extra_block() {
            Some(extra) => {
                *extra = Extra::Mdl(mdl);
                Ok(())
            }
            None => Err(mdl),
        }
    }

    /// The MDL chain held, taken back (its block freed). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn take_mdl(&mut self) -> Option<MdlBuf> {
        match self.take_extra(|extra| matches!(extra, Extra::Mdl(_)))? {
            Extra::Mdl(mdl) => Some(mdl),
            _ => None,
        }
    }

    /// Holds a datagram batch, in place of any other rare resource; the batch back when its
    /// block cannot be allocated. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn set_batch(&mut self, batch: DatagramBatch) -> Result<(), DatagramBatch> {
        match self.extra_block() {
            Some(extra) => {
                *extra = Extra::Batch(batch);
                Ok(())
            }
            None => Err(batch),
        }
    }

    /// The datagram batch held, if any.
    pub(crate) fn batch_mut(&mut self) -> Option<&mut DatagramBatch> {
        match self.extra.as_mut().map(ExtraBlock::get_mut) {
            Some(Extra::Batch(batch)) => Some(batch),
            _ => None,
        }
    }

    /// The datagram batch held, taken back (its block freed). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn take_batch(&mut self) -> Option<DatagramBatch> {
        match self.take_extra(|extra| matches!(extra, Extra::Batch(_)))? {
            Extra::Batch(batch) => Some(batch),
            _ => None,
        }
    }

    /// Holds name-resolution strings (node, service; pointing into `buf`) with an empty
    /// result list, in place of any other rare resource (a lookup holds no MDL chain or
    /// batch); false when their block cannot be allocated. IRQL <= `DISPATCH_LEVEL`.
    #[must_use]
    pub(crate) fn set_names(&mut self, strings: [sys::UNICODE_STRING; 2]) -> bool {
        match self.extra_block() {
            Some(extra) => {
                *extra = Extra::Names(Names {
                    strings,
                    addrinfo: ptr::null_mut(),
                });
                true
            }
            None => false,
        }
    }

    /// The name-resolution strings and result list, if [`Held::set_names`] set them.
    pub(crate) fn names_mut(&mut self) -> Option<&mut Names> {
        match self.extra.as_mut().map(ExtraBlock::get_mut) {
            Some(Extra::Names(names)) => Some(names),
            _ => None,
        }
    }

    /// The name-resolution strings, if [`Held::set_names`] set them.
    pub(crate) fn names(&self) -> Option<&Names> {
        match self.extra() {
            Some(Extra::Names(names)) => Some(names),
            _ => None,
        }
    }

    /// The name-resolution result list WSK returned (null if none), taken back: the caller
    /// frees it.
    pub(crate) fn take_addrinfo(&mut self) -> *mut ADDRINFOEXW {
        match self.names_mut() {
            Some(names) => core::mem::replace(&mut names.addrinfo, ptr::null_mut()),
            None => ptr::null_mut(),
        }
    }
}

/// Pool tag of the rare resources' blocks (`WskX`).
const EXTRA_TAG: u32 = sys::pool_tag(*b"WskX");

/// A nonpaged pool block holding one [`Extra`]: allocated by the operation that needs it,
/// freed when its resources are taken back or the [`Held`] drops (after the completion, since
/// a `Held` in flight is never dropped).
struct ExtraBlock(NonNull<Extra>);

impl ExtraBlock {
    /// A block holding [`Extra::None`]; `None` when pool runs out. IRQL <= `DISPATCH_LEVEL`.
    fn new() -> Option<Self> {
        // SAFETY: nonpaged allocation at <= DISPATCH_LEVEL.
        let mem = unsafe { sys::allocate_nonpaged(size_of::<Extra>(), EXTRA_TAG) };
        let block = NonNull::new(mem.cast::<Extra>())?;
        // SAFETY: a fresh block of the right size; pool memory is 16-byte aligned.
        unsafe { block.as_ptr().write(Extra::None) };
        Some(Self(block))
    }

    fn get(&self) -> &Extra {
        // SAFETY: our block, initialised in `new`, borrowed through `self`.
        unsafe { self.0.as_ref() }
    }

    fn get_mut(&mut self) -> &mut Extra {
        // SAFETY: our block, initialised in `new`, borrowed exclusively through `self`.
        unsafe { self.0.as_mut() }
    }

    /// What the block holds, moved out; the block freed. IRQL <= `DISPATCH_LEVEL`.
    fn into_inner(self) -> Extra {
        let block = core::mem::ManuallyDrop::new(self).0;
        // SAFETY: our initialised block, read once: it is freed below without a drop.
        let extra = unsafe { block.as_ptr().read() };
        // SAFETY: allocated in `new` with this tag; its value was moved out above.
        unsafe { sys::ExFreePoolWithTag(block.as_ptr().cast(), EXTRA_TAG) };
        extra
    }
}

impl Drop for ExtraBlock {
    fn drop(&mut self) {
        // SAFETY: our initialised block, dropped once here.
        unsafe { ptr::drop_in_place(self.0.as_ptr()) };
        // SAFETY: allocated in `new` with this tag; its value was dropped above.
        unsafe { sys::ExFreePoolWithTag(self.0.as_ptr().cast(), EXTRA_TAG) };
    }
}

/// The rare resources of a [`Held`]: at most one kind per operation.
enum Extra {
    /// None: every TCP send and receive, connect, accept, options, datagrams.
    None,
    /// A caller's MDL chain (zero-copy I/O): `wsk_buf` points into it instead of `buf`.
    Mdl(MdlBuf),
    /// Datagrams (`WskSendMessages`, batch receives): `wsk_buf` or the buffer list point
    /// into it instead of `buf`.
    Batch(DatagramBatch),
    /// Name resolution's strings and result list.
    Names(Names),
}

/// Name resolution's strings and result list (`WskGetAddressInfo`, `WskGetNameInfo`).
pub(crate) struct Names {
    /// Name-resolution strings (node, service), pointing into the `Held`'s `buf`.
    pub strings: [sys::UNICODE_STRING; 2],
    /// A name-resolution result list.
    pub addrinfo: *mut ADDRINFOEXW,
}

/// What an operation parks in its slot's [`Held`] cell when it issues, and takes back when it
/// completes. The cell of a free slot holds no resources (no buffer, MDL, batch, result list
/// or adopted socket; its plain fields may be stale): [`Params::park`] may rely on that, and
/// [`Params::take`] must leave it so.
///
/// [`Held`] itself parks whole (every operation can use it); [`Transfer`] parks only what a
/// TCP receive needs (`recv_append`; plain sends and receives take the lean path,
/// `super::stream_io`), so that the ~200-byte `Held` is never moved through the futures
/// of the hot path (each move is a copy of all of it).
pub(crate) trait Params: Sized {
    /// What a completed operation returns.
    type Done;

    /// The request it makes.
    fn request(&self) -> Request;

    /// The request's name, for errors.
    fn name(&self) -> &'static str {
        self.request().name()
    }

    /// Writes the parameters into `cell`, which holds no resources.
    fn park(self, cell: &mut Held);

    /// Takes the results back out of `cell` after the IRP completed with `status` and
    /// `information` (or failed to issue), leaving the cell without resources.
    fn take(cell: &mut Held, status: NTSTATUS, information: usize) -> Self::Done;
}

impl Params for Held {
    type Done = Completed;

    fn request(&self) -> Request {
        self.request
    }

    fn park(self, cell: &mut Held) {
        *cell = self;
    }

    fn take(cell: &mut Held, status: NTSTATUS, information: usize) -> Completed {
        note_received(cell, information);
        Completed {
            status,
            information,
            held: core::mem::replace(cell, Held::empty()),
        }
    }
}

/// A TCP receive of `len` bytes into `buf` from `offset` (`recv_append`): what [`Params`] parks
/// of it (the request, the buffer and its `WSK_BUF`), built without a [`Held`], and smaller
/// than a [`Request`] with it (every move of it is a copy).
pub(crate) struct Transfer {
    /// The data buffer.
    pub buf: IoBuf,
    /// The `WSK_BUF`'s length.
    pub len: usize,
    /// Where in `buf` the `WSK_BUF` starts (below `IoBuf::MAX_CAPACITY`, so it fits the
    /// `WSK_BUF`'s 32 bits).
    pub offset: u32,
    /// The `WSK_FLAG_*` flags of the call.
    pub flags: u32,
}

impl Transfer {
    /// `WskReceive` into `len` bytes of `buf` from `offset`, with `flags`.
    pub(crate) fn receive(buf: IoBuf, offset: usize, len: usize, flags: u32) -> Self {
        Self {
            buf,
            len,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            flags,
        }
    }
}

/// A completed [`Transfer`]: the result and the buffer back.
pub(crate) struct TransferDone {
    /// Final status.
    pub status: NTSTATUS,
    /// `IoStatus.Information`.
    pub information: usize,
    /// The transfer's buffer (its initialised part extended over what a receive wrote).
    /// `None` only if the slot protocol lost it, which it does not.
    pub buf: Option<IoBuf>,
}

impl Params for Transfer {
    type Done = TransferDone;

    #[inline]
    fn request(&self) -> Request {
        Request::Receive { flags: self.flags }
    }

    #[expect(
        clippy::inline_always,
        reason = "a few stores on every send and receive, not worth a call"
    )]
    #[inline(always)]
    fn park(self, cell: &mut Held) {
        cell.request = self.request();
        cell.wsk_buf = WSK_BUF {
            Mdl: self.buf.mdl(),
            Offset: self.offset,
            Length: self.len,
        };
        // A free slot's cell holds no buffer, so there is nothing to drop; a plain assignment
        // would still call the buffer's drop glue on every send and receive, as the compiler
        // cannot know that. The out-of-line drop below only guards the invariant.
        if let Some(unexpected) = cell.buf.replace(self.buf) {
            drop_parked_buf(unexpected);
        }
    }

    #[inline]
    fn take(cell: &mut Held, status: NTSTATUS, information: usize) -> TransferDone {
        note_received(cell, information);
        TransferDone {
            status,
            information,
            buf: cell.buf.take(),
        }
    }
}

/// Frees a buffer found parked in a free slot's cell: never expected (a completed operation
/// takes its buffer back), kept out of line so that parking costs no call.
#[cold]
#[inline(never)]
pub(super) fn drop_parked_buf(buf: IoBuf) {
    debug_assert!(false, "a free slot's cell held a buffer");
    drop(buf);
}

/// After a receive completed: the provider wrote `information` bytes into the buffer at the
/// `WSK_BUF`'s offset, so the buffer's initialised part now reaches their end (the count is
/// clamped to the `WSK_BUF`'s length: a provider never writes past what it was given).
fn note_received(held: &mut Held, information: usize) {
    if !held.request.receives_into_buf() {
        return;
    }
    let start = held.wsk_buf.Offset as usize;
    let end = start + information.min(held.wsk_buf.Length);
    if let Some(buf) = held.buf.as_mut() {
        // SAFETY: every receive starts at or before its buffer's initialised end (from 0,
        // after its filled part for `recv_append`, or after an earlier completion's data for
        // a `recv_exact` continuation), and the completed IRP wrote `[start, end)`.
        unsafe { buf.assume_written(end) };
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

/// An operation refused before reaching WSK, with what it would have held (its [`Params`]).
pub(crate) struct Refused<P = Held> {
    /// Why.
    pub error: Error,
    /// The resources, untouched.
    pub held: P,
}

impl<P> From<Refused<P>> for Error {
    fn from(refused: Refused<P>) -> Self {
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
