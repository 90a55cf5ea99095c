//! The low-resources simulation belongs to one kernel: its plan, its run-time changes
//! (`Kernel::set_low_resources`) and its counts (`Kernel::injected_failures`) never reach
//! another kernel of the process. Kernels boot one at a time, so the check is across two in
//! turn: the first fails every pool allocation, the next (no plan) none, and the counts each
//! reports are its own.
#![allow(
    clippy::missing_panics_doc,
    reason = "test code: panics are the failure reports"
)]

use wsk_host::faults::{self, Faults, LowResources, Resource, ResourceSet};
use wsk_host::{Config, Kernel};
use wsk_sys::{ExAllocatePoolWithTag, ExFreePoolWithTag, NonPagedPoolNx, pool_tag};

const TAG: u32 = pool_tag(*b"LowR");

/// Whether a driver pool allocation made now on a thread of `kernel` succeeds (freed again).
fn pool_allocation_succeeds(kernel: &Kernel) -> bool {
    kernel.on_kernel_thread(|| {
        // SAFETY: PASSIVE_LEVEL on a kernel thread.
        let block = unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, 32, TAG) };
        if block.is_null() {
            return false;
        }
        // SAFETY: allocated just above with this tag, freed once.
        unsafe { ExFreePoolWithTag(block, TAG) };
        true
    })
}

#[test]
fn each_kernel_has_its_own_low_resources_simulation() {
    let all_pool = LowResources {
        resources: ResourceSet::only(Resource::Pool),
        ..LowResources::failing(100)
    };
    let first = Kernel::boot(Config::default().with_faults(Faults {
        low_resources: Some(all_pool),
        ..Faults::default()
    }));
    assert!(!pool_allocation_succeeds(&first), "the plan fails it");
    assert_eq!(first.injected_failures().of(Resource::Pool), 1);
    // Stopped and started again through this kernel's handle, counts from zero.
    first.set_low_resources(None, 0);
    assert!(pool_allocation_succeeds(&first), "no plan: it succeeds");
    first.set_low_resources(Some(all_pool), 7);
    assert!(!pool_allocation_succeeds(&first));
    assert!(!pool_allocation_succeeds(&first));
    assert_eq!(first.injected_failures().of(Resource::Pool), 2);
    drop(first);

    let second = Kernel::boot(Config::default());
    assert!(
        pool_allocation_succeeds(&second),
        "the first kernel's plan is not the second's"
    );
    assert_eq!(second.injected_failures().total(), 0);
    assert_eq!(
        faults::injected_failures().total(),
        0,
        "the free function reports the running kernel's counts"
    );
    assert!(second.check_leaks().is_clean());
}
