//! Client memory as the provider sees it: the byte ranges a `WSK_BUF`'s MDL chain describes,
//! and copies between them and the host sockets.

use std::format;
use std::io::{self, Read, Write};
use std::vec::Vec;

use std::os::fd::AsRawFd;

use mio::net::TcpStream;

use super::glue::{self, bugcheck};
use super::os::{self, linux};
use super::{Seg, Segs, memory};
use crate::{
    MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL, MmGetMdlVirtualAddress, WSK_BUF,
};

/// The byte range of `segs` at byte `offset`.
pub(super) fn seg_at(segs: &[Seg], mut offset: usize) -> Seg {
    for &Seg { start, len } in segs {
        if offset < len {
            return Seg {
                start: start.wrapping_add(offset),
                len: len - offset,
            };
        }
        offset -= len;
    }
    Seg {
        start: core::ptr::null_mut(),
        len: 0,
    }
}

/// A connected byte stream the provider moves client bytes through: a host socket or an
/// in-memory connection, with the host's `io` results (`WouldBlock` when it has to wait).
pub(super) trait ByteStream {
    /// Reads what has arrived into `buf`; `Ok(0)` after the peer's FIN.
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes what fits of `buf`.
    fn write_some(&self, buf: &[u8]) -> io::Result<usize>;
    /// Sends FIN.
    fn shutdown_write(&self) -> io::Result<()>;
    /// Sets `TCP_NODELAY` (meaningless in memory).
    fn set_nodelay(&self, on: bool);
}

impl ByteStream for TcpStream {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self;
        s.read(buf)
    }

    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self;
        s.write(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        os::shutdown_write(self)
    }

    fn set_nodelay(&self, on: bool) {
        // A failure only costs latency, so it is ignored.
        let _ = os::set_int(
            self.as_raw_fd(),
            linux::IPPROTO_TCP,
            linux::TCP_NODELAY,
            i32::from(on),
        );
    }
}

impl ByteStream for memory::Stream {
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        memory::Stream::shutdown_write(self);
        Ok(())
    }

    fn set_nodelay(&self, _on: bool) {}
}

/// Reads one chunk of a stream into client memory.
pub(super) fn read_into(stream: &dyn ByteStream, Seg { start, len }: Seg) -> io::Result<usize> {
    // SAFETY: the range lies in the locked client buffer of a pending receive IRP, which the
    // client may not touch until the IRP completes.
    let buf = unsafe { core::slice::from_raw_parts_mut(start, len) };
    stream.read_some(buf)
}

/// Writes one chunk of client memory to a stream.
pub(super) fn write_from(stream: &dyn ByteStream, Seg { start, len }: Seg) -> io::Result<usize> {
    // SAFETY: the range lies in the locked client buffer of a pending send IRP.
    let buf = unsafe { core::slice::from_raw_parts(start.cast_const(), len) };
    stream.write_some(buf)
}

/// Sends `segs[done..total]`; `Ok(true)` when everything is written.
pub(super) fn send_some(
    stream: &dyn ByteStream,
    segs: &[Seg],
    total: usize,
    done: &mut usize,
) -> Result<bool, io::Error> {
    while *done < total {
        match write_from(stream, seg_at(segs, *done)) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => *done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Copies `data` into client memory described by `segs`.
pub(super) fn scatter(segs: &[Seg], mut data: &[u8]) {
    for &Seg { start, len } in segs {
        if data.is_empty() {
            break;
        }
        let n = len.min(data.len());
        // SAFETY: the range lies in the locked client buffer of a pending receive IRP.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), start, n) };
        data = &data[n..];
    }
}

/// Copies client memory described by `segs` out.
pub(super) fn gather(segs: &[Seg]) -> Vec<u8> {
    let mut out = Vec::new();
    for &Seg { start, len } in segs {
        // SAFETY: the range lies in the locked client buffer of the send IRP being issued.
        out.extend_from_slice(unsafe { core::slice::from_raw_parts(start.cast_const(), len) });
    }
    out
}

/// The MDL's buffer address.
///
/// # Safety
/// `mdl` is a live MDL.
pub(super) unsafe fn mdl_va(mdl: *mut MDL) -> *mut u8 {
    // SAFETY: the caller guarantees a live MDL.
    let mdl_ref = unsafe { &*mdl };
    let (flags, system_va) = (mdl_ref.MdlFlags, mdl_ref.MappedSystemVa);
    let mapped = flags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0;
    if mapped && !system_va.is_null() {
        system_va.cast()
    } else {
        // SAFETY: as above.
        unsafe { MmGetMdlVirtualAddress(mdl) }.cast()
    }
}

/// The client memory a `WSK_BUF` describes. The verifier fails a `WSK_BUF` longer than its
/// MDL chain (Windows bluescreens).
///
/// # Safety
/// `buf` is null or a valid `WSK_BUF` whose MDL chain is live.
pub(super) unsafe fn segments(buf: *const WSK_BUF, function: &'static str) -> Segs {
    if buf.is_null() {
        return Segs::new();
    }
    // SAFETY: the caller guarantees a valid WSK_BUF.
    let wsk_buf = unsafe { *buf };
    let mut segs = Segs::new();
    let mut remaining = wsk_buf.Length;
    let mut skip = wsk_buf.Offset as usize;
    let mut mdl = wsk_buf.Mdl;
    let mut chain = 0usize;
    while remaining > 0 {
        // "WSK_BUF structure (wsk.h)": Length is the number of bytes in the MDL chain, each MDL
        // locked or from nonpaged pool: https://learn.microsoft.com/en-us/windows-hardware/drivers/ddi/wsk/ns-wsk-_wsk_buf
        if mdl.is_null() {
            bugcheck(
                "WSK_BUF_EXCEEDS_MDL",
                format!(
                    "{function}: WSK_BUF Offset {} Length {} exceeds its MDL chain of {chain} bytes",
                    wsk_buf.Offset, wsk_buf.Length
                ),
            );
        }
        if !glue::mdl_is_live(mdl) {
            bugcheck(
                "WSK_BUF_MDL_NOT_LIVE",
                format!(
                    "{function}: WSK_BUF's MDL chain holds {mdl:p}, which is freed or was never allocated"
                ),
            );
        }
        // SAFETY: a live MDL of the chain (checked just above).
        let mdl_ref = unsafe { &*mdl };
        let (count, next) = (mdl_ref.ByteCount as usize, mdl_ref.Next);
        // SAFETY: as above.
        let va = unsafe { mdl_va(mdl) };
        chain += count;
        if skip >= count {
            skip -= count;
        } else {
            let take = (count - skip).min(remaining);
            segs.push(Seg {
                start: va.wrapping_add(skip),
                len: take,
            });
            remaining -= take;
            skip = 0;
        }
        mdl = next;
    }
    segs
}

/// What a pending IRP with `buf` (whose byte ranges are `segs`) holds until it completes: the
/// MDLs of the chain it uses and the ranges, for the verifier's free checks
/// (`wsk::pending_irp_using`).
///
/// # Safety
/// `buf` is null or a `WSK_BUF` [`segments`] accepted (its chain is live).
pub(super) unsafe fn held_memory(buf: *const WSK_BUF, segs: &[Seg]) -> super::super::HeldMemory {
    let mut mdls = super::super::Few::new();
    if !buf.is_null() {
        // SAFETY: the caller guarantees a valid WSK_BUF.
        let wsk_buf = unsafe { *buf };
        let mut needed = wsk_buf.Length + wsk_buf.Offset as usize;
        let mut mdl = wsk_buf.Mdl;
        while needed > 0 && !mdl.is_null() {
            mdls.push(mdl.addr());
            // SAFETY: a live MDL of the chain `segments` walked.
            let mdl_ref = unsafe { &*mdl };
            needed = needed.saturating_sub(mdl_ref.ByteCount as usize);
            mdl = mdl_ref.Next;
        }
    }
    let mut ranges = super::super::Few::new();
    for seg in segs {
        ranges.push((seg.start.addr(), seg.len));
    }
    super::super::HeldMemory { mdls, ranges }
}
