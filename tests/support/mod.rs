//! Shared pieces of the integration tests.
//!
//! Each test binary includes this with `mod support;` and uses only some of
//! it, hence the `dead_code` allows.

#[cfg(unix)]
#[allow(dead_code)]
pub mod process;
#[cfg(target_os = "linux")]
#[allow(dead_code)]
pub mod signal;
#[cfg(target_os = "linux")]
#[allow(dead_code)]
pub mod signal_queue;

use std::alloc::{GlobalAlloc, Layout, System};

/// A global allocator for tests: forwards every call unchanged to `System`
/// after telling a hook about it. `on_alloc` gets the bytes asked for
/// (`alloc`, `alloc_zeroed`, and `realloc`'s new size); `on_dealloc` runs
/// for `dealloc`. Each test decides what to record (a thread-local "in a top
/// half" flag, a count); the hooks must not allocate.
#[allow(dead_code)] // not every test binary that includes `support` uses it
pub struct RecordingAlloc {
    pub on_alloc: fn(usize),
    pub on_dealloc: fn(),
}

// SAFETY: every call is forwarded unchanged to `System`; the hooks only do
// bookkeeping and never allocate (their contract above).
unsafe impl GlobalAlloc for RecordingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        (self.on_alloc)(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        (self.on_alloc)(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        (self.on_alloc)(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        (self.on_dealloc)();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}
