//! `MdlBuf::from_irp`: a driver serving a direct-I/O IOCTL sends and receives with the IRP's
//! own `MdlAddress` and completes the IRP after the WSK I/O. The test plays the I/O manager:
//! it builds the IRP with `IoAllocateIrp`/`IoAllocateMdl`, sends it by hand to the "dispatch
//! routine" (a completion routine of its own set, the next stack location made current), and
//! sees it completed with the status and byte count. Every scenario runs under the standard
//! fault plans and ends with the verifier's leak check.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::ffi::c_void;
use std::future::{Future, poll_fn};
use std::io::{Read, Write};
use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use wsk_executor::block_on;
use wsk_net::{ErrorKind, MdlBuf, UdpSocket};
use wsk_sys::{self as sys, DEVICE_OBJECT, IRP, NTSTATUS, PVOID};

mod common;
use common::{BOUND, bounded, connected_pair, each_plan, loopback};

/// The pool tag of the IOCTL buffers.
const TAG: u32 = sys::pool_tag(*b"WskI");

/// What the "I/O manager" saw when the IRP came back.
#[derive(Default)]
struct Completed {
    done: AtomicBool,
    status: AtomicI32,
    information: AtomicUsize,
    pending_returned: AtomicBool,
}

impl Completed {
    /// Waits (bounded) until the IRP was completed; its status and byte count.
    fn wait(&self) -> (NTSTATUS, usize, bool) {
        let deadline = Instant::now() + BOUND;
        while !self.done.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the IRP was never completed");
            std::thread::sleep(Duration::from_millis(1));
        }
        (
            self.status.load(Ordering::Acquire),
            self.information.load(Ordering::Acquire),
            self.pending_returned.load(Ordering::Acquire),
        )
    }
}

/// The originator's completion routine: records the outcome, frees the MDL and the IRP (the
/// buffer stays for the test to read), and stops the walk, as the allocator of an IRP must.
unsafe extern "system" fn on_complete(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the context is the test's `Completed`, which outlives the IRP.
    let completed = unsafe { &*context.cast::<Completed>() };
    // SAFETY: the IRP is live until we free it below.
    let irp_ref = unsafe { &*irp };
    completed
        .status
        .store(irp_ref.IoStatus.Status, Ordering::Release);
    completed
        .information
        .store(irp_ref.IoStatus.Information, Ordering::Release);
    completed
        .pending_returned
        .store(irp_ref.PendingReturned != 0, Ordering::Release);
    let mdl = irp_ref.MdlAddress;
    if !mdl.is_null() {
        // SAFETY: our MDL, no longer held by anyone (the IRP is complete).
        unsafe { sys::IoFreeMdl(mdl) };
    }
    // SAFETY: ours, completed, never used again.
    unsafe { sys::IoFreeIrp(irp) };
    completed.done.store(true, Ordering::Release);
    sys::STATUS_MORE_PROCESSING_REQUIRED
}

/// An IOCTL's IRP as the I/O manager hands it to a driver: one stack location (current), the
/// originator's completion routine above it, and an MDL over `len` bytes of nonpaged pool
/// filled with `fill` (no MDL when `len` is 0). Returns the IRP and the buffer.
fn ioctl_irp(len: usize, fill: u8, completed: &Completed) -> (NonNull<IRP>, Option<NonNull<u8>>) {
    // SAFETY: a kernel thread of the host kernel, PASSIVE_LEVEL.
    let irp = NonNull::new(unsafe { sys::IoAllocateIrp(1, 0) }).expect("IRP");
    let mut buffer = None;
    if len > 0 {
        // SAFETY: as above.
        let raw = unsafe { sys::allocate_nonpaged(len, TAG) };
        let data = NonNull::new(raw.cast::<u8>()).expect("pool");
        // SAFETY: `len` fresh bytes we own.
        unsafe { data.as_ptr().write_bytes(fill, len) };
        // SAFETY: a live nonpaged block of `len` bytes, attached to our IRP.
        let mdl = unsafe {
            sys::IoAllocateMdl(
                data.as_ptr().cast(),
                u32::try_from(len).unwrap(),
                0,
                0,
                std::ptr::null_mut(),
            )
        };
        assert!(!mdl.is_null(), "MDL");
        // SAFETY: the MDL describes nonpaged pool.
        unsafe { sys::MmBuildMdlForNonPagedPool(mdl) };
        // SAFETY: our IRP, not yet sent.
        unsafe { (*irp.as_ptr()).MdlAddress = mdl };
        buffer = Some(data);
    }
    let context = std::ptr::from_ref(completed).cast_mut().cast::<c_void>();
    // SAFETY: our IRP, not yet sent, with a next location (the one the driver gets).
    unsafe {
        sys::IoSetCompletionRoutine(irp.as_ptr(), Some(on_complete), context, true, true, true);
    };
    // "Sent": the driver's location becomes current, as IoCallDriver makes it.
    // SAFETY: our IRP, with a location left.
    unsafe { sys::IoSetNextIrpStackLocation(irp.as_ptr()) };
    (irp, buffer)
}

/// The bytes of a buffer `ioctl_irp` allocated, then frees it.
fn take_buffer(data: NonNull<u8>, len: usize) -> Vec<u8> {
    // SAFETY: the IRP is complete: nobody holds the block any more.
    let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr(), len) }.to_vec();
    // SAFETY: allocated with TAG, freed once.
    unsafe { sys::ExFreePoolWithTag(data.as_ptr().cast(), TAG) };
    bytes
}

/// Whether the driver's stack location of `irp` is marked pending.
fn marked_pending(irp: NonNull<IRP>) -> bool {
    // SAFETY: the live IRP, at the driver's location.
    let location = unsafe { sys::IoGetCurrentIrpStackLocation(irp.as_ptr()) };
    // SAFETY: as above.
    let control = unsafe { (*location).Control };
    control & sys::SL_PENDING_RETURNED != 0
}

/// `METHOD_OUT_DIRECT`: the peer's bytes are received straight into the IOCTL's output buffer
/// and the IRP completes with `STATUS_SUCCESS` and the byte count, marked pending.
#[test]
fn receive_into_an_ioctl_output_buffer_then_complete() {
    const LEN: usize = 3000;
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            bounded(&peer);
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(LEN, 0, &completed);
            // SAFETY: the dispatch routine holds the IRP; its MDL covers LEN locked bytes; no
            // cancel routine; nobody else completes it.
            let buf = unsafe { MdlBuf::from_irp(irp, 0, LEN) }.expect("from_irp");
            assert!(marked_pending(irp), "IoMarkIrpPending");
            assert_eq!(buf.irp(), Some(irp));
            let sent: Vec<u8> = (0..LEN).map(|i| u8::try_from(i % 241).unwrap()).collect();
            (&peer).write_all(&sent).unwrap();
            let (received, buf) = stream.recv_mdl(buf, true).await;
            assert_eq!(*received.as_ref().expect("recv_mdl"), LEN);
            assert!(
                !completed.done.load(Ordering::Acquire),
                "held until the result"
            );
            buf.complete(&received);
            assert_eq!(completed.wait(), (sys::STATUS_SUCCESS, LEN, true));
            assert!(
                take_buffer(buffer.unwrap(), LEN) == sent,
                "in the IRP's buffer"
            );
            stream.close().await;
            listener.close().await;
        });
    });
}

/// `METHOD_IN_DIRECT`: the IOCTL's input buffer is sent as it is; an error result completes
/// the IRP with its status.
#[test]
fn send_an_ioctl_input_buffer_and_complete_with_errors_too() {
    const LEN: usize = 5000;
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            bounded(&peer);
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(LEN, 0x5a, &completed);
            // SAFETY: as in the receive test.
            let buf = unsafe { MdlBuf::from_irp(irp, 100, LEN - 100) }.expect("from_irp");
            let (sent, buf) = stream.send_mdl(buf).await;
            assert_eq!(*sent.as_ref().expect("send_mdl"), LEN - 100);
            buf.complete(&sent);
            assert_eq!(completed.wait(), (sys::STATUS_SUCCESS, LEN - 100, true));
            let mut got = vec![0_u8; LEN - 100];
            (&peer).read_exact(&mut got).unwrap();
            assert!(got.iter().all(|&b| b == 0x5a), "the input buffer's bytes");
            let _ = take_buffer(buffer.unwrap(), LEN);

            // A failed operation completes the IRP with the operation's status.
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(64, 0, &completed);
            // SAFETY: as above.
            let buf = unsafe { MdlBuf::from_irp(irp, 0, 64) }.expect("from_irp");
            stream
                .disconnect(wsk_net::Disconnect::Graceful)
                .await
                .expect("disconnect");
            let (sent, buf) = stream.send_mdl(buf).await;
            assert_eq!(
                sent.as_ref().expect_err("after FIN").kind(),
                ErrorKind::InvalidState
            );
            buf.complete(&sent);
            let (status, information, _) = completed.wait();
            assert!(status < 0, "an error status: {status:#x}");
            assert_eq!(information, 0);
            let _ = take_buffer(buffer.unwrap(), 64);
            stream.close().await;
            listener.close().await;
        });
    });
}

/// The receive's future is dropped while WSK holds the IRP's buffer: the IRP is completed
/// only after WSK let go of it, with `STATUS_CANCELLED` and 0 bytes; `set_completion` chooses
/// another outcome, and `STATUS_PENDING` is refused.
#[test]
fn a_dropped_operation_completes_the_irp_cancelled() {
    each_plan(|client, _| {
        block_on(async {
            let (listener, peer, stream) = connected_pair(client).await;
            bounded(&peer);
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(128, 0, &completed);
            // SAFETY: as in the receive test.
            let mut buf = unsafe { MdlBuf::from_irp(irp, 0, 128) }.expect("from_irp");
            assert_eq!(
                buf.set_completion(sys::STATUS_PENDING, 0)
                    .expect_err("no final status")
                    .kind(),
                ErrorKind::InvalidInput
            );
            {
                let mut receive = pin!(stream.recv_mdl(buf, false));
                poll_fn(|cx| {
                    assert!(receive.as_mut().poll(cx).is_pending(), "nothing sent");
                    Poll::Ready(())
                })
                .await;
            }
            assert_eq!(completed.wait(), (sys::STATUS_CANCELLED, 0, true));
            let _ = take_buffer(buffer.unwrap(), 128);

            // Dropped after set_completion: that outcome.
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(16, 0, &completed);
            // SAFETY: as above.
            let mut buf = unsafe { MdlBuf::from_irp(irp, 0, 16) }.expect("from_irp");
            buf.set_completion(sys::STATUS_BUFFER_OVERFLOW, 7).unwrap();
            drop(buf);
            assert_eq!(completed.wait(), (sys::STATUS_BUFFER_OVERFLOW, 7, true));
            let _ = take_buffer(buffer.unwrap(), 16);
            drop(peer);
            stream.close().await;
            listener.close().await;
        });
    });
}

/// Datagrams too: a datagram received into an IOCTL's output buffer (`recv_from_mdl`) and
/// the IRP completed with its length; `into_raw` hands the IRP back still pending, with the
/// status last set, for the caller to complete.
#[test]
fn datagrams_into_an_ioctl_buffer_and_into_raw() {
    each_plan(|client, _| {
        block_on(async {
            let socket = UdpSocket::bind(client, loopback()).await.expect("bind");
            let to = socket.local_addr().await.expect("local_addr");
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(1500, 0, &completed);
            // SAFETY: as in the receive test.
            let buf = unsafe { MdlBuf::from_irp(irp, 0, 1500) }.expect("from_irp");
            peer.send_to(b"a datagram for the IOCTL", to).unwrap();
            let (received, buf) = socket.recv_from_mdl(buf).await;
            let (n, from) = received.expect("recv_from_mdl");
            assert_eq!(from, peer.local_addr().unwrap());
            buf.complete(&Ok(n));
            assert_eq!(completed.wait(), (sys::STATUS_SUCCESS, n, true));
            let bytes = take_buffer(buffer.unwrap(), 1500);
            assert_eq!(&bytes[..n], b"a datagram for the IOCTL");

            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(8, 0, &completed);
            // SAFETY: as above.
            let mut buf = unsafe { MdlBuf::from_irp(irp, 0, 8) }.expect("from_irp");
            buf.set_completion(sys::STATUS_SUCCESS, 3).unwrap();
            let (chain, context) = buf.into_raw();
            assert_eq!(context, irp.as_ptr().cast(), "the context is the IRP");
            // SAFETY: our live IRP and its MDL.
            assert_eq!(chain.as_ptr(), unsafe { (*irp.as_ptr()).MdlAddress });
            assert!(
                !completed.done.load(Ordering::Acquire),
                "not completed by into_raw"
            );
            assert!(marked_pending(irp), "still marked pending");
            // SAFETY: the IRP is ours again (into_raw): we complete it, once.
            unsafe { sys::IofCompleteRequest(irp.as_ptr(), sys::IO_NO_INCREMENT) };
            assert_eq!(completed.wait(), (sys::STATUS_SUCCESS, 3, true));
            let _ = take_buffer(buffer.unwrap(), 8);
            socket.close().await;
        });
    });
}

/// An IRP without `MdlAddress`, or a range past its buffer, is refused and left untouched (not
/// marked pending): the dispatch routine completes it itself.
#[test]
fn an_irp_without_a_fitting_mdl_is_refused_untouched() {
    each_plan(|_, _| {
        for (len, offset, want) in [(0, 0, 1), (32, 0, 33), (32, 32, 1)] {
            let completed = Completed::default();
            let (irp, buffer) = ioctl_irp(len, 0, &completed);
            // SAFETY: as in the receive test (the call fails and keeps nothing).
            let refused = unsafe { MdlBuf::from_irp(irp, offset, want) }.expect_err("refused");
            assert_eq!(refused.kind(), ErrorKind::InvalidInput);
            assert!(!marked_pending(irp), "untouched");
            // SAFETY: the dispatch routine still holds the IRP: it completes it.
            unsafe { (*irp.as_ptr()).IoStatus.Status = sys::STATUS_INVALID_PARAMETER };
            // SAFETY: as above.
            unsafe { sys::IofCompleteRequest(irp.as_ptr(), sys::IO_NO_INCREMENT) };
            assert_eq!(completed.wait(), (sys::STATUS_INVALID_PARAMETER, 0, false));
            if let Some(data) = buffer {
                let _ = take_buffer(data, len);
            }
        }
    });
}
