//! [`KernelPtr`]: how the host kernel and its WSK provider keep a pointer to an object a
//! driver owns (an IRP, an MDL) in their tables and queues.

use core::cmp::Ordering;
use core::fmt;
use core::hash::{Hash, Hasher};
use core::ptr::NonNull;

/// A driver-owned kernel object (`T`: `IRP`, `MDL`) as a table key or queue entry: a non-null
/// pointer, so the address keeps its provenance (an address in a `usize` would not), that may
/// cross threads with the tables holding it. Compares, hashes and formats (`{:#x}`, `{:x?}`)
/// as the bare address.
pub(crate) struct KernelPtr<T>(NonNull<T>);

// SAFETY: a `KernelPtr` names an object, it grants no access to it. Whoever holds one
// dereferences the object only under that object's ownership rules, which NT states without
// regard to threads: an IRP belongs to the driver that allocated it until `IoCallDriver`, then
// to the lower driver until it completes it, or to a cancel routine once that won
// `IoSetCancelRoutine` (a DPC on another processor routinely completes what a dispatch routine
// queued); an MDL belongs to its owner between `IoAllocateMdl` and `IoFreeMdl`. Moving the
// pointer between threads moves no access with it.
unsafe impl<T> Send for KernelPtr<T> {}

impl<T> KernelPtr<T> {
    /// `object` as a `KernelPtr`; `None` for a null pointer.
    pub(crate) fn new(object: *mut T) -> Option<Self> {
        NonNull::new(object).map(Self)
    }

    /// The object's pointer, with the provenance it was made from.
    pub(crate) fn as_ptr(self) -> *mut T {
        self.0.as_ptr()
    }

    fn address(self) -> usize {
        self.0.as_ptr().addr()
    }
}

// By hand, not derived: a derive would require `T` (a C struct) to implement each trait.
impl<T> Clone for KernelPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for KernelPtr<T> {}

impl<T> PartialEq for KernelPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T> Eq for KernelPtr<T> {}

impl<T> Hash for KernelPtr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl<T> PartialOrd for KernelPtr<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for KernelPtr<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl<T> fmt::Debug for KernelPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.address(), f)
    }
}

impl<T> fmt::LowerHex for KernelPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.address(), f)
    }
}
