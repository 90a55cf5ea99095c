//! The synchronisation primitives `raw` is built from: core's atomics normally, loom's under
//! `--cfg loom`, so that the loom models explore every interleaving of the real code.
//!
//! loom's types cannot be built in a `const fn`, so constructors that must be `const` for
//! `static` storage are declared with [`loom_const_fn!`](crate::raw::sync::loom_const_fn): `const`
//! normally, a plain `fn` under loom.
//!
//! Every atomic in `raw` comes from here. The one `static` among them, the pool table, is a
//! `loom::lazy_static!` under loom (built afresh for each run of a model) and a plain `static`
//! otherwise. A slot's storage stays in core's `UnsafeCell`, even under loom: its address must
//! be the data's (the pool computes it from the header's), which loom's cell does not promise.

#[cfg(not(loom))]
pub use core::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub use loom::sync::atomic::{
    AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

/// An `UnsafeCell` with loom's closure API, so loom can check accesses for data races.
#[cfg(not(loom))]
pub struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    /// Runs `f` with a mutable pointer to the contents; the caller rules out concurrent access.
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a pointer to the contents for reading; the caller rules out a concurrent
    /// write (concurrent reads are fine).
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get().cast_const())
    }
}

#[cfg(loom)]
pub use loom::cell::UnsafeCell;

/// Declares a constructor that is `const` normally and a plain `fn` under loom.
#[doc(hidden)]
#[macro_export]
macro_rules! loom_const_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident $args:tt -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $vis const fn $name $args -> $ret $body
        #[cfg(loom)]
        $(#[$attr])*
        $vis fn $name $args -> $ret $body
    };
}
pub use crate::loom_const_fn;
