//! The doubly linked list helpers wdm.h defines inline for `LIST_ENTRY` (a circular list
//! whose head is a `LIST_ENTRY` of its own): [`InitializeListHead`], [`IsListEmpty`],
//! [`InsertHeadList`], [`InsertTailList`], [`RemoveEntryList`], [`RemoveHeadList`] and
//! [`RemoveTailList`], with the same meaning and return values as in C.
//!
//! They touch only the links, so they are usable at any IRQL on nonpaged entries; the caller
//! provides whatever lock the list needs. Like the checked variants wdm.h builds with
//! `NO_KERNEL_LIST_ENTRY_CHECKS` undefined, insertion and removal check that the neighbours
//! point back, and panic (the host kernel's bugcheck) when they do not: a corrupted list is
//! caught where it is, not later.

use crate::ntdef::LIST_ENTRY;

/// Makes `head` an empty list (both links point to itself).
///
/// # Safety
/// `head` is valid for writes.
///
/// # IRQL
/// Any.
pub unsafe fn InitializeListHead(head: *mut LIST_ENTRY) {
    // SAFETY: the caller guarantees `head` is writable.
    unsafe {
        head.write(LIST_ENTRY {
            Flink: head,
            Blink: head,
        });
    }
}

/// True when the list headed by `head` has no entries.
///
/// # Safety
/// `head` is an initialised list head, valid for reads.
///
/// # IRQL
/// Any.
#[must_use]
pub unsafe fn IsListEmpty(head: *const LIST_ENTRY) -> bool {
    // SAFETY: the caller guarantees a readable head.
    let next = unsafe { (*head).Flink };
    core::ptr::eq(next, head)
}

/// Links `entry` between `prev` and `next`, which must be adjacent.
///
/// # Safety
/// `prev` and `next` are adjacent, live members of one list; `entry` is writable and in no
/// list.
unsafe fn link_between(prev: *mut LIST_ENTRY, entry: *mut LIST_ENTRY, next: *mut LIST_ENTRY) {
    // SAFETY: `prev` is live (caller).
    let prev_next = unsafe { (*prev).Flink };
    // SAFETY: `next` is live (caller).
    let next_prev = unsafe { (*next).Blink };
    assert!(
        core::ptr::eq(prev_next, next) && core::ptr::eq(next_prev, prev),
        "LIST_ENTRY corrupted (FAST_FAIL_CORRUPT_LIST_ENTRY)"
    );
    // SAFETY: `entry` is writable (caller).
    unsafe {
        entry.write(LIST_ENTRY {
            Flink: next,
            Blink: prev,
        });
    }
    // SAFETY: `prev` is live and writable (caller).
    unsafe { (*prev).Flink = entry };
    // SAFETY: `next` is live and writable (caller).
    unsafe { (*next).Blink = entry };
}

/// Inserts `entry` at the head of the list (after `head`).
///
/// # Panics
/// When the neighbours do not point back (a corrupted list), like wdm.h's checked helpers.
///
/// # Safety
/// `head` is an initialised list head; `entry` is writable and in no list; both stay valid
/// while linked. The caller holds the list's lock.
///
/// # IRQL
/// Any.
pub unsafe fn InsertHeadList(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
    // SAFETY: `head` is readable (caller).
    let first = unsafe { (*head).Flink };
    // SAFETY: `head` and its successor are adjacent members of the list (caller).
    unsafe { link_between(head, entry, first) };
}

/// Inserts `entry` at the tail of the list (before `head`).
///
/// # Panics
/// When the neighbours do not point back (a corrupted list), like wdm.h's checked helpers.
///
/// # Safety
/// As [`InsertHeadList`].
///
/// # IRQL
/// Any.
pub unsafe fn InsertTailList(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
    // SAFETY: `head` is readable (caller).
    let last = unsafe { (*head).Blink };
    // SAFETY: the last entry and `head` are adjacent members of the list (caller).
    unsafe { link_between(last, entry, head) };
}

/// Unlinks `entry` from its list. Returns true when the list is empty afterwards (C's
/// `RemoveEntryList` return value). The entry's own links are left as they were, as in C.
///
/// # Panics
/// When the neighbours do not point back (a corrupted list), like wdm.h's checked helpers.
///
/// # Safety
/// `entry` is a member (not the head) of a well-formed list, which the caller has locked.
///
/// # IRQL
/// Any.
pub unsafe fn RemoveEntryList(entry: *mut LIST_ENTRY) -> bool {
    // SAFETY: `entry` is a live member (caller).
    let links = unsafe { entry.read() };
    let LIST_ENTRY {
        Flink: next,
        Blink: prev,
    } = links;
    // SAFETY: `next` is a live member of the same list (caller).
    let next_prev = unsafe { (*next).Blink };
    // SAFETY: `prev` is a live member of the same list (caller).
    let prev_next = unsafe { (*prev).Flink };
    assert!(
        core::ptr::eq(next_prev, entry) && core::ptr::eq(prev_next, entry),
        "LIST_ENTRY corrupted (FAST_FAIL_CORRUPT_LIST_ENTRY)"
    );
    // SAFETY: `prev` is live and writable (caller).
    unsafe { (*prev).Flink = next };
    // SAFETY: `next` is live and writable (caller).
    unsafe { (*next).Blink = prev };
    core::ptr::eq(prev, next)
}

/// Unlinks and returns the first entry; on an empty list returns `head` itself, as in C.
///
/// # Safety
/// `head` is an initialised list head the caller has locked.
///
/// # IRQL
/// Any.
pub unsafe fn RemoveHeadList(head: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
    // SAFETY: `head` is readable (caller).
    let first = unsafe { (*head).Flink };
    if !core::ptr::eq(first, head) {
        // SAFETY: a non-head member of the list.
        unsafe { RemoveEntryList(first) };
    }
    first
}

/// Unlinks and returns the last entry; on an empty list returns `head` itself, as in C.
///
/// # Safety
/// As [`RemoveHeadList`].
///
/// # IRQL
/// Any.
pub unsafe fn RemoveTailList(head: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
    // SAFETY: `head` is readable (caller).
    let last = unsafe { (*head).Blink };
    if !core::ptr::eq(last, head) {
        // SAFETY: a non-head member of the list.
        unsafe { RemoveEntryList(last) };
    }
    last
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    const UNLINKED: LIST_ENTRY = LIST_ENTRY {
        Flink: core::ptr::null_mut(),
        Blink: core::ptr::null_mut(),
    };

    /// The entries' indices in `nodes`, walking forward from `head`.
    fn walk(head: *mut LIST_ENTRY, nodes: &[LIST_ENTRY]) -> Vec<usize> {
        let mut out = Vec::new();
        // SAFETY: `head` heads a well-formed list of `nodes`.
        let mut link = unsafe { (*head).Flink };
        while !core::ptr::eq(link, head) {
            out.push(nodes.iter().position(|n| core::ptr::eq(n, link)).unwrap());
            // SAFETY: as above.
            link = unsafe { (*link).Flink };
        }
        out
    }

    // One unsafe call per helper: every pointer the tests pass is to a local that outlives
    // its list, on one thread.
    fn init(head: *mut LIST_ENTRY) {
        // SAFETY: see above.
        unsafe { InitializeListHead(head) }
    }
    fn empty(head: *mut LIST_ENTRY) -> bool {
        // SAFETY: see above.
        unsafe { IsListEmpty(head) }
    }
    fn insert_head(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
        // SAFETY: see above.
        unsafe { InsertHeadList(head, entry) }
    }
    fn insert_tail(head: *mut LIST_ENTRY, entry: *mut LIST_ENTRY) {
        // SAFETY: see above.
        unsafe { InsertTailList(head, entry) }
    }
    fn remove(entry: *mut LIST_ENTRY) -> bool {
        // SAFETY: see above.
        unsafe { RemoveEntryList(entry) }
    }
    fn remove_head(head: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
        // SAFETY: see above.
        unsafe { RemoveHeadList(head) }
    }
    fn remove_tail(head: *mut LIST_ENTRY) -> *mut LIST_ENTRY {
        // SAFETY: see above.
        unsafe { RemoveTailList(head) }
    }

    #[test]
    fn inserts_and_removes_like_wdm_h() {
        let mut head = UNLINKED;
        let mut nodes = [UNLINKED; 4];
        let head_ptr: *mut LIST_ENTRY = &raw mut head;
        let node: [*mut LIST_ENTRY; 4] = core::array::from_fn(|i| &raw mut nodes[i]);
        init(head_ptr);
        assert!(empty(head_ptr));
        assert!(
            core::ptr::eq(remove_head(head_ptr), head_ptr),
            "empty: the head"
        );
        assert!(
            core::ptr::eq(remove_tail(head_ptr), head_ptr),
            "empty: the head"
        );
        insert_tail(head_ptr, node[1]);
        insert_tail(head_ptr, node[2]);
        insert_head(head_ptr, node[0]);
        insert_tail(head_ptr, node[3]);
        assert_eq!(walk(head_ptr, &nodes), [0, 1, 2, 3]);
        assert!(!empty(head_ptr));
        assert!(!remove(node[2]), "two more remain");
        assert_eq!(walk(head_ptr, &nodes), [0, 1, 3]);
        assert!(core::ptr::eq(remove_head(head_ptr), node[0]));
        assert!(core::ptr::eq(remove_tail(head_ptr), node[3]));
        assert!(remove(node[1]), "the last one: empty after");
        assert!(empty(head_ptr));
    }

    #[test]
    #[should_panic(expected = "LIST_ENTRY corrupted")]
    fn removing_an_entry_whose_neighbours_disagree_panics() {
        let mut head = UNLINKED;
        let mut a = UNLINKED;
        let head_ptr: *mut LIST_ENTRY = &raw mut head;
        init(head_ptr);
        insert_tail(head_ptr, &raw mut a);
        // Claims neighbours that do not know it.
        let mut stray = LIST_ENTRY {
            Flink: head_ptr,
            Blink: &raw mut a,
        };
        remove(&raw mut stray);
    }
}
