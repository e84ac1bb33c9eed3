//! `fork()`: what a child inherits and how it is made usable.
//!
//! A `pthread_atfork` child handler, registered once by the first std
//! set-up call, runs in the child right after `fork()` (single-threaded
//! there) and bumps the fork generation, so that objects inherited from the
//! parent can tell that the threads they were waiting for are gone.

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// How many `fork()`s separate this process from the one that first
/// loaded the crate (0 in that one). Bumped only by the child handler.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// 0: the child handler is not registered; 1: registering; 2: registered.
static ATFORK: AtomicU8 = AtomicU8::new(0);

/// The fork generation of the calling process.
#[inline]
#[allow(dead_code)] // read by the fork repair of drain threads and workqueues
pub(crate) fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// Registers the child handler once per process tree (a child inherits the
/// registration). Set-up only: `pthread_atfork` may allocate.
pub(crate) fn ensure_atfork() {
    if ATFORK.load(Ordering::Acquire) == 2 {
        return;
    }
    if ATFORK
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: `child` is an `extern "C" fn()` that only touches atomics
        // and calls async-signal-safe functions; no prepare/parent hooks.
        unsafe { libc::pthread_atfork(None, None, Some(child)) };
        ATFORK.store(2, Ordering::Release);
    }
}

/// The child handler: runs in the child, which has one thread.
extern "C" fn child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    #[cfg(target_os = "linux")]
    crate::backend::after_fork_child();
}
