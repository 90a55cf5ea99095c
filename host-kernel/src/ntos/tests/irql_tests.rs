use super::*;
use crate::ntos::irql::{current, lower, raise, require_at_most};
use crate::{APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};

#[test]
fn raise_and_lower_round_trip() {
    let kernel = boot();
    kernel.on_kernel_thread(|| {
        assert_eq!(current(), PASSIVE_LEVEL);
        let old = raise(DISPATCH_LEVEL);
        assert_eq!(old, PASSIVE_LEVEL);
        assert_eq!(crate::KeGetCurrentIrql(), DISPATCH_LEVEL);
        lower(old);
        assert_eq!(current(), PASSIVE_LEVEL);
    });
}

#[test]
fn raising_below_current_bugchecks() {
    let kernel = boot();
    expect_bugcheck("IRQL_NOT_GREATER_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            raise(DISPATCH_LEVEL);
            raise(APC_LEVEL);
        });
    });
    take(&kernel, &["IRQL_NOT_GREATER_OR_EQUAL"]);
}

#[test]
fn lowering_above_current_bugchecks() {
    let kernel = boot();
    expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| lower(DISPATCH_LEVEL));
    });
    take(&kernel, &["IRQL_NOT_LESS_OR_EQUAL"]);
}

#[test]
fn calls_above_their_irql_limit_bugcheck_naming_the_function() {
    let kernel = boot();
    let message = expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            let old = raise(DISPATCH_LEVEL);
            // SAFETY: PASSIVE_LEVEL only: this call is the violation under test.
            unsafe { crate::KeFlushQueuedDpcs() };
            lower(old);
        });
    });
    assert!(message.contains("KeFlushQueuedDpcs"), "{message}");
    let message = expect_bugcheck("IRQL_NOT_LESS_OR_EQUAL", || {
        kernel.on_kernel_thread(|| {
            raise(DISPATCH_LEVEL);
            require_at_most(PASSIVE_LEVEL, "WskRegister");
        });
    });
    assert!(message.contains("WskRegister"), "{message}");
    take(
        &kernel,
        &["IRQL_NOT_LESS_OR_EQUAL", "IRQL_NOT_LESS_OR_EQUAL"],
    );
}
