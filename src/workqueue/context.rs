//! What the current thread is doing for a workqueue: the pool it works for
//! (worker threads, and `run_pending` callers while they run items), the
//! CPU index of a per-CPU pool, and the work item it is running.
//!
//! Used to answer [`current_cpu`](super::current_cpu) and to turn a flush
//! or cancel that would wait for itself into
//! [`WorkqueueError::WouldDeadlock`](super::WorkqueueError::WouldDeadlock).
//!
//! A `const`-initialised `Cell` without a destructor: one TLS load, which
//! is safe in a signal handler when the crate is linked into the executable
//! or a library loaded at startup (static TLS). Caveat: in a library loaded
//! with `dlopen`, the variable may live in dynamic TLS, and a thread's first
//! access goes through `__tls_get_addr`, which in glibc may allocate the
//! thread's block (`malloc`): not async-signal-safe. A signal handler
//! reaches this only through `current_cpu` (`queue` does not read it).
//! Under loom, whose modelled threads share one OS thread, it is a
//! `loom::thread_local!`.

use core::cell::Cell;
use core::ptr;

use super::pool::Pool;
use super::work::Work;

#[derive(Clone, Copy)]
pub(crate) struct Context {
    /// The pool this thread works for, or null.
    pub(super) pool: *const Pool,
    /// The item this thread is running, or null.
    pub(super) work: *const Work,
    /// The CPU index of a per-CPU pool.
    pub(super) cpu: Option<usize>,
}

impl Context {
    const NONE: Context = Context {
        pool: ptr::null(),
        work: ptr::null(),
        cpu: None,
    };
}

#[cfg(not(bottomhalf_loom))]
std::thread_local! {
    static CONTEXT: Cell<Context> = const { Cell::new(Context::NONE) };
}

#[cfg(bottomhalf_loom)]
loom::thread_local! {
    static CONTEXT: Cell<Context> = Cell::new(Context::NONE);
}

/// The current thread's context (all null outside workers).
#[inline]
pub(super) fn get() -> Context {
    CONTEXT.with(Cell::get)
}

/// Replaces the context; returns the previous one, to restore.
#[inline]
pub(super) fn replace(c: Context) -> Context {
    CONTEXT.with(|cell| cell.replace(c))
}

/// Marks `work` as running on this thread; returns the previous context.
#[inline]
pub(super) fn enter_work(work: &Work) -> Context {
    let prev = get();
    replace(Context {
        work: work as *const Work,
        ..prev
    })
}

/// Marks this thread as working for `pool`; returns the previous context.
pub(super) fn enter_pool(pool: &Pool, cpu: Option<usize>) -> Context {
    replace(Context {
        pool: pool as *const Pool,
        work: ptr::null(),
        cpu,
    })
}
