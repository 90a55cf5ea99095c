//! A caller's MDL chain for the zero-copy tests (`mdl_io`, `miri_data`): MDLs over separate
//! nonpaged blocks, linked, with a release routine that counts (and, when asked, frees).

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use wsk_net::MdlBuf;
use wsk_sys::{self as sys, MDL};

/// The pool tag of the chains' blocks.
const TAG: u32 = sys::pool_tag(*b"WskT");

/// A chain of MDLs over separate nonpaged blocks, as a driver would build over an IOCTL's
/// buffers; its release routine frees everything and counts the releases.
pub struct Chain {
    pub blocks: Vec<(NonNull<u8>, usize, NonNull<MDL>)>,
    releases: AtomicUsize,
    /// The release routine frees the MDLs and blocks (what a driver does with its own chain):
    /// a release while WSK still held them is what the verifier's MDL rule catches.
    pub free_on_release: bool,
}

impl Chain {
    /// Blocks of `sizes` bytes, filled with `fill`, their MDLs linked in order.
    pub fn new(sizes: &[usize], fill: u8) -> Self {
        let mut blocks: Vec<(NonNull<u8>, usize, NonNull<MDL>)> = Vec::new();
        for &size in sizes {
            // SAFETY: a kernel thread of the host kernel, at PASSIVE_LEVEL.
            let data = unsafe { sys::allocate_nonpaged(size, TAG) }.cast::<u8>();
            let data = NonNull::new(data).expect("pool");
            // SAFETY: `size` fresh bytes we own.
            unsafe { data.as_ptr().write_bytes(fill, size) };
            let length = u32::try_from(size).unwrap();
            // SAFETY: a live nonpaged block of `size` bytes, no IRP attached.
            let mdl = unsafe {
                sys::IoAllocateMdl(data.as_ptr().cast(), length, 0, 0, std::ptr::null_mut())
            };
            let mdl = NonNull::new(mdl).expect("MDL");
            // SAFETY: the MDL describes nonpaged pool.
            unsafe { sys::MmBuildMdlForNonPagedPool(mdl.as_ptr()) };
            if let Some(&(_, _, previous)) = blocks.last() {
                // SAFETY: our own MDL, not yet handed to anyone.
                unsafe { (*previous.as_ptr()).Next = mdl.as_ptr() };
            }
            blocks.push((data, size, mdl));
        }
        Self {
            blocks,
            releases: AtomicUsize::new(0),
            free_on_release: false,
        }
    }

    /// The chain's bytes end to end.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(data, size, _) in &self.blocks {
            // SAFETY: a live block of `size` bytes, not held by WSK (the MdlBuf came back or
            // was released).
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(data.as_ptr(), size) });
        }
        out
    }

    /// Writes `bytes` across the chain from its start.
    pub fn write(&self, mut bytes: &[u8]) {
        for &(data, size, _) in &self.blocks {
            let n = size.min(bytes.len());
            // SAFETY: `n` bytes of a live block, not held by WSK.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.as_ptr(), n) };
            bytes = &bytes[n..];
        }
    }

    /// An `MdlBuf` over `[offset, offset + len)` that counts its release in `self` (freeing
    /// nothing: `free` does, after the test looked at the bytes).
    pub fn buf(&self, offset: usize, len: usize) -> wsk_net::Result<MdlBuf> {
        // SAFETY: the chain is live and untouched until the release (which `self` outlives:
        // every test drops its MdlBufs before `free`).
        unsafe {
            MdlBuf::from_raw(
                self.blocks[0].2,
                offset,
                len,
                count_release,
                std::ptr::from_ref(self).cast_mut().cast(),
            )
        }
    }

    pub fn releases(&self) -> usize {
        self.releases.load(Ordering::Acquire)
    }

    /// Frees the MDLs and blocks.
    pub fn free(self) {
        self.free_blocks();
    }

    fn free_blocks(&self) {
        for &(data, _, mdl) in &self.blocks {
            // SAFETY: ours, released by every MdlBuf that held it.
            unsafe { sys::IoFreeMdl(mdl.as_ptr()) };
            // SAFETY: as above, allocated with TAG.
            unsafe { sys::ExFreePoolWithTag(data.as_ptr().cast(), TAG) };
        }
    }
}

/// The release routine: counts.
unsafe fn count_release(_chain: NonNull<MDL>, context: *mut c_void) {
    // SAFETY: the context is the `Chain` that outlives its MdlBufs.
    let chain = unsafe { &*context.cast::<Chain>() };
    if chain.free_on_release {
        chain.free_blocks();
    }
    chain.releases.fetch_add(1, Ordering::AcqRel);
}
