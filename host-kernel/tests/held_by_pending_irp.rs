//! The verifier's rule on client memory a pending WSK IRP uses: freeing the `WSK_BUF`'s MDL
//! (`IoFreeMdl`) or the pool block it describes (`ExFreePoolWithTag`) before the IRP completes
//! bugchecks `PAGE_FAULT_IN_FREED_SPECIAL_POOL` (the rule and its WDK pages are at
//! `wsk::pending_irp_using`). Each case plants the bug: a receive pending on a connection
//! with nothing to read, then the free. On both providers; and the same frees after the
//! completion are fine (every other provider test frees its buffers so).
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

mod common;
use common::*;
use wsk_host::Provider;
use wsk_sys::{MmBuildMdlForNonPagedPool, NonPagedPoolNx, STATUS_CANCELLED, STATUS_PENDING};

/// What the planted bug frees.
#[derive(Clone, Copy, Debug)]
enum Frees {
    Mdl,
    Buffer,
}

/// A nonpaged buffer of `len` bytes and its MDL, freed by hand (no `Drop`: the planted bug
/// leaves them to the bugcheck).
fn raw_buffer(len: u32) -> (*mut u8, *mut MDL) {
    // SAFETY: PASSIVE_LEVEL on a kernel thread.
    let mem = unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, len as usize, TAG) }.cast::<u8>();
    assert!(!mem.is_null());
    // SAFETY: a fresh pool block described whole.
    let mdl = unsafe { IoAllocateMdl(mem.cast(), len, 0, 0, std::ptr::null_mut()) };
    assert!(!mdl.is_null());
    // SAFETY: the MDL describes nonpaged pool.
    unsafe { MmBuildMdlForNonPagedPool(mdl) };
    (mem, mdl)
}

fn providers() -> [Provider; 2] {
    [Provider::Memory, Provider::HostSockets]
}

#[test]
fn freeing_what_a_pending_receive_uses_bugchecks() {
    for provider in providers() {
        for frees in [Frees::Mdl, Frees::Buffer] {
            let kernel = Kernel::boot(
                Config::default()
                    .with_faults(Faults::with(Completion::Inline, 1))
                    .with_provider(provider),
            );
            *MODE.lock().unwrap() = Completion::Inline;
            expect_bugcheck(&kernel, "PAGE_FAULT_IN_FREED_SPECIAL_POOL", || {
                let client = Client::register();
                let (listener, addr) = client.listener(false);
                let _near = client.connected(addr);
                let (far, _, _) = listener.accept();
                let (mem, mdl) = raw_buffer(64);
                let mut buf = WSK_BUF {
                    Mdl: mdl,
                    Offset: 0,
                    Length: 64,
                };
                let io = Io::new();
                // SAFETY: live socket, WSK_BUF and IRP.
                let returned = unsafe {
                    far.conn().WskReceive.expect("WskReceive")(far.s, &raw mut buf, 0, io.prep())
                };
                assert_eq!(
                    returned, STATUS_PENDING,
                    "{provider:?}: nothing to read yet"
                );
                match frees {
                    // SAFETY: the planted bug: the MDL of a pending receive.
                    Frees::Mdl => unsafe { IoFreeMdl(mdl) },
                    // SAFETY: the planted bug: the buffer of a pending receive.
                    Frees::Buffer => unsafe { ExFreePoolWithTag(mem.cast(), TAG) },
                }
            });
        }
    }
}

#[test]
fn freeing_after_the_completion_is_fine() {
    for provider in providers() {
        let kernel = Kernel::boot(
            Config::default()
                .with_faults(Faults::with(Completion::Inline, 1))
                .with_provider(provider),
        );
        *MODE.lock().unwrap() = Completion::Inline;
        kernel.on_kernel_thread(|| {
            let client = Client::register();
            let (listener, addr) = client.listener(false);
            let near = client.connected(addr);
            let (far, _, _) = listener.accept();
            let (mem, mdl) = raw_buffer(64);
            let mut buf = WSK_BUF {
                Mdl: mdl,
                Offset: 0,
                Length: 64,
            };
            let io = Io::new();
            far.start_recv(&io, &mut buf, 0);
            // SAFETY: the IRP is pending in the provider; cancelling completes it.
            unsafe { IoCancelIrp(io.irp) };
            assert_eq!(io.wait("WskReceive").0, STATUS_CANCELLED);
            // SAFETY: the receive completed: the MDL and buffer are ours again.
            unsafe { IoFreeMdl(mdl) };
            // SAFETY: as above, after the MDL that described it.
            unsafe { ExFreePoolWithTag(mem.cast(), TAG) };
            near.close();
            far.close();
            listener.close();
            client.deregister();
        });
        assert!(kernel.check_leaks().is_clean(), "{provider:?}");
        assert!(kernel.take_bugchecks().is_empty(), "{provider:?}");
    }
}
