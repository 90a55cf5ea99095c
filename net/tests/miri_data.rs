//! Zero-copy MDL I/O and UDP batches end to end on the host kernel's in-memory network, the
//! part of issue 14's data features Miri runs (`cargo +nightly miri test -p wsk-net --test
//! miri_data`): `MdlBuf`'s walk of a caller's chain and its release, `DatagramBatch`'s pool
//! table and storage, the `WSK_BUF_LIST` a `WskSendMessages` reads, and a chain held by a
//! receive dropped in flight until its completion. Both ends are this kernel's sockets, so no
//! host socket is needed; outside Miri the scenarios also run on the host's loopback.
//!
//! Each scenario runs on a fresh kernel per plan and provider and ends with the verifier's
//! leak check and no bugcheck. Under Miri the plans are cut to two (inline; mixed with
//! reordering and delays).
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use std::ffi::c_void;
use std::future::Future;
use std::pin::pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};

use wsk_executor::block_on;
use wsk_net::{DatagramBatch, IoBuf, MdlBuf, TcpListener, TcpStream, UdpSocket, WskClient};
use wsk_sys::{self as sys, MDL};

mod common;
use common::loopback;

const TAG: u32 = sys::pool_tag(*b"WskM");

/// [`common::each_provider_and_plan`] for scenarios that need only the client.
fn each_kernel(scenario: impl Fn(&WskClient) + Sync) {
    common::each_provider_and_plan(|client, _| scenario(client));
}

/// MDLs over separate nonpaged blocks, linked; the release routine counts and, with
/// `free_on_release`, frees them (which the freed-while-pending rule checks).
struct Chain {
    blocks: Vec<(NonNull<u8>, usize, NonNull<MDL>)>,
    releases: AtomicUsize,
    free_on_release: bool,
}

impl Chain {
    fn new(sizes: &[usize], free_on_release: bool) -> Self {
        let mut blocks: Vec<(NonNull<u8>, usize, NonNull<MDL>)> = Vec::new();
        for &size in sizes {
            // SAFETY: a kernel thread at PASSIVE_LEVEL.
            let data = unsafe { sys::allocate_nonpaged(size, TAG) }.cast::<u8>();
            let data = NonNull::new(data).expect("pool");
            // SAFETY: `size` fresh bytes we own.
            unsafe { data.as_ptr().write_bytes(0, size) };
            let length = u32::try_from(size).unwrap();
            // SAFETY: a live nonpaged block of `size` bytes, no IRP attached.
            let mdl = unsafe {
                sys::IoAllocateMdl(data.as_ptr().cast(), length, 0, 0, std::ptr::null_mut())
            };
            let mdl = NonNull::new(mdl).expect("MDL");
            // SAFETY: the MDL describes nonpaged pool.
            unsafe { sys::MmBuildMdlForNonPagedPool(mdl.as_ptr()) };
            if let Some(&(_, _, previous)) = blocks.last() {
                // SAFETY: our own MDL, not handed to anyone yet.
                unsafe { (*previous.as_ptr()).Next = mdl.as_ptr() };
            }
            blocks.push((data, size, mdl));
        }
        Self {
            blocks,
            releases: AtomicUsize::new(0),
            free_on_release,
        }
    }

    fn write(&self, mut bytes: &[u8]) {
        for &(data, size, _) in &self.blocks {
            let n = size.min(bytes.len());
            // SAFETY: `n` bytes of a live block nobody else uses now.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.as_ptr(), n) };
            bytes = &bytes[n..];
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(data, size, _) in &self.blocks {
            // SAFETY: a live block nobody writes now.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(data.as_ptr(), size) });
        }
        out
    }

    fn buf(&self, offset: usize, len: usize) -> MdlBuf {
        // SAFETY: the chain is live and untouched until the release, which `self` outlives.
        unsafe {
            MdlBuf::from_raw(
                self.blocks[0].2,
                offset,
                len,
                release,
                std::ptr::from_ref(self).cast_mut().cast(),
            )
        }
        .expect("a range inside the chain")
    }

    fn free(&self) {
        for &(data, _, mdl) in &self.blocks {
            // SAFETY: ours; no MdlBuf holds it any more.
            unsafe { sys::IoFreeMdl(mdl.as_ptr()) };
            // SAFETY: as above, allocated with TAG.
            unsafe { sys::ExFreePoolWithTag(data.as_ptr().cast(), TAG) };
        }
    }
}

unsafe fn release(_chain: NonNull<MDL>, context: *mut c_void) {
    // SAFETY: the context is the `Chain` that outlives its MdlBufs.
    let chain = unsafe { &*context.cast::<Chain>() };
    if chain.free_on_release {
        chain.free();
    }
    chain.releases.fetch_add(1, Ordering::AcqRel);
}

async fn connected(client: &WskClient) -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(client, loopback()).await.expect("bind");
    let addr = listener.local_addr().await.expect("local_addr");
    let near = TcpStream::connect(client, addr).await.expect("connect");
    let (far, _) = listener.accept().await.expect("accept");
    (listener, near, far)
}

#[test]
fn a_three_mdl_chain_goes_out_and_comes_in_byte_exact() {
    each_kernel(|client| {
        let out = Chain::new(&[3, 5, 7], false);
        let into = Chain::new(&[4, 4, 4, 4], false);
        let pattern: Vec<u8> = (1..=15).collect();
        out.write(&pattern);
        block_on(async {
            let (listener, near, far) = connected(client).await;
            let (sent, buf) = near.send_mdl(out.buf(1, 13)).await;
            assert_eq!(sent.expect("send_mdl"), 13);
            drop(buf);
            let (got, buf) = far.recv_mdl(into.buf(2, 13), true).await;
            assert_eq!(got.expect("recv_mdl"), 13);
            drop(buf);
            assert_eq!(&into.bytes()[2..15], &pattern[1..14]);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
        assert_eq!(
            (
                out.releases.load(Ordering::Acquire),
                into.releases.load(Ordering::Acquire)
            ),
            (1, 1)
        );
        out.free();
        into.free();
    });
}

#[test]
fn a_receive_dropped_in_flight_releases_its_chain_after_completion() {
    each_kernel(|client| {
        let chain = Chain::new(&[2, 6], true);
        block_on(async {
            let (listener, near, far) = connected(client).await;
            {
                let mut recv = pin!(far.recv_mdl(chain.buf(0, 8), false));
                let first = recv.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(first.is_pending(), "nothing sent yet");
                assert_eq!(chain.releases.load(Ordering::Acquire), 0);
            }
            // Data after the drop must not reach the (freed) chain.
            let (sent, _) = near.send(IoBuf::from_slice(b"late").unwrap()).await;
            assert_eq!(sent.expect("send"), 4);
            near.close().await;
            far.close().await;
            listener.close().await;
        });
        assert_eq!(chain.releases.load(Ordering::Acquire), 1);
    });
}

#[test]
fn a_batch_goes_out_in_one_call_and_comes_in_with_its_senders() {
    each_kernel(|client| {
        block_on(async {
            let a = UdpSocket::bind(client, loopback()).await.expect("bind a");
            let b = UdpSocket::bind(client, loopback()).await.expect("bind b");
            let a_addr = a.local_addr().await.expect("a local_addr");
            let b_addr = b.local_addr().await.expect("b local_addr");
            let mut batch = DatagramBatch::new(4, 8).unwrap();
            for datagram in [&b"one"[..], b"two", b"three"] {
                batch.push(datagram).unwrap();
            }
            let (sent, _) = a.send_batch(batch, b_addr).await;
            assert_eq!(sent.expect("send_batch"), 3);
            let mut received = Vec::new();
            let mut batch = DatagramBatch::new(2, 8).unwrap();
            while received.len() < 3 {
                let (got, back) = b.recv_batch(batch).await;
                batch = back;
                got.expect("recv_batch");
                for (datagram, from) in batch.iter() {
                    assert_eq!(from, Some(a_addr));
                    received.push(datagram.to_vec());
                }
            }
            assert_eq!(received, [&b"one"[..], b"two", b"three"]);
            // One datagram straight into a chain.
            let chain = Chain::new(&[2, 2, 2], false);
            let (sent, _) = a.send_to(IoBuf::from_slice(b"mdl!").unwrap(), b_addr).await;
            assert_eq!(sent.expect("send_to"), 4);
            let (got, buf) = b.recv_from_mdl(chain.buf(1, 5)).await;
            assert_eq!(got.expect("recv_from_mdl"), (4, a_addr));
            drop(buf);
            assert_eq!(&chain.bytes()[1..5], b"mdl!");
            chain.free();
            a.close().await;
            b.close().await;
        });
    });
}
