//! A counting global allocator shared by the zero-allocation tests.
//! Only allocations made on the calling thread while `count_allocations` runs its closure are
//! counted, so the harness's other threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Forwards to the system allocator, counting allocations made inside a counting window.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; counting touches only a const thread-local and an
// atomic, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `window` and returns how many heap allocations (and reallocations) this thread made
/// inside it.
pub fn count_allocations(window: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    COUNTING.with(|counting| counting.set(true));
    window();
    COUNTING.with(|counting| counting.set(false));
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Asserts the counter sees allocations at all, so a zero count means something.
pub fn assert_counter_counts() {
    assert_eq!(
        count_allocations(|| drop(std::hint::black_box(Box::new(1_u64)))),
        1,
        "the counting allocator counts"
    );
}
