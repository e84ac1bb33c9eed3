//! Workqueues (feature `std`): bottom halves that may sleep, block and
//! allocate, run by worker threads. The semantics are Linux's
//! `kernel/workqueue.c` and Zephyr's `k_work`.
//!
//! | file | holds |
//! | --- | --- |
//! | `work.rs` | the workqueue side of [`Work`] (whose state machine is in `crate::work`, shared with the bottom half): `Arc` items, the pool's cancel, timers' transitions; [`DelayedWork`] |
//! | `pool.rs` | a worker pool: the lock-free intake, the run/timer/set-aside lists under the pool's lock, the worker step |
//! | `queue.rs` | [`Workqueue`] and its builder: queueing, `mod_delayed`, whole-queue flush, threads, stop/drain/join |
//! | `lock.rs` | the workers' lock (a mutex sleeping on a [`WakeWord`](crate::WakeWord)) |
//! | `context.rs` | the thread-local "which pool / which item am I running" |
//! | `stats.rs` | [`WorkqueueStats`] |
//!
//! Design rules:
//!
//! - A work item is its own queue node: queueing links the item into its
//!   pool's intake list, so it never allocates. A `static` item costs
//!   nothing to own; an `Arc` item lends the queue one strong count while
//!   it is pending (`Arc::increment_strong_count`: an atomic add, no
//!   allocation).
//! - The queue side is top-half safe: one CAS on the item's state word, one
//!   CAS push onto the pool's intake, and a wake only if a worker sleeps.
//!   No lock, no allocation: callable from a signal handler.
//! - Everything else — moving the intake to the run list, timers, starting
//!   and finishing items, cancel, `mod_delayed`, flush colors — happens
//!   under the pool's lock, which `queue` never takes and which is never
//!   held while an item runs.
//! - Each item has one state word: the pool of its pending (or running)
//!   instance and six flags (Linux's `work->data`). Pools are type-stable
//!   (never freed, recycled), so a pool pointer read from the word can
//!   always be locked and re-checked.
//! - An item is never run twice at once: a worker that finds the next
//!   instance of an item still running sets it aside until that run is
//!   over (Linux hands it to the running worker; the effect is the same).
//!
//! # Wake-up
//!
//! Idle workers sleep on [`WakeWord`](crate::WakeWord)s: `futex` words.
//! `queue` wakes one with `WakeWord::notify` — two atomic operations and,
//! only when a worker sleeps, one `futex(FUTEX_WAKE)` system call, which is
//! async-signal-safe. A condition variable would need a mutex in the signal
//! handler, `Thread::unpark` is not documented as async-signal-safe, and an
//! `eventfd` would cost a file descriptor per pool for no gain.
//!
//! `queue` skips even the `notify` while no worker sleeps (a
//! store-buffering pair on the pool's `sleeping` count, below), and wakes
//! only one sleeper: a `WakeWord` wakes every thread on it, so a pool's
//! workers sleep on up to 8 words ("slots") and `queue` notifies the lowest
//! slot that has a sleeper. Waking the whole pool for one item tripled the
//! wake-up latency on 2 cores (the woken workers and the producer compete
//! for them). Before sleeping, an idle worker polls for work for a moment
//! (64 yields), as rayon's and crossbeam-channel's threads do, so a
//! producer that queues a stream pays no system call per item.
//!
//! # Atomic orderings
//!
//! Each pair is marked with an `ordering!` mutant name; the loom models
//! that must catch each are listed in `loom-tests/mutants.txt`.
//!
//! | mutant | ordering | protects |
//! | --- | --- | --- |
//! | `work_pend_relaxed` | `pend` CAS, AcqRel | with `start`: what the caller wrote before `queue` — even a coalesced `queue`, whose CAS rewrites the same word — is visible to the run that covers it; its Acquire half orders the new owner's writes of the link after the previous owner's reads |
//! | `work_start_relaxed` | `start` CAS, AcqRel | the Acquire half of the above; publishes the odd `started` to `flush` |
//! | `work_starting_relaxed` | `start`'s odd `started` store (before its CAS), Release | with `flush`'s Acquire loads: a flusher that sees a start in progress reads a word at least as new as the one the start found |
//! | `work_started_relaxed` | `start`'s even `started` store (after its CAS), Release | with `flush`'s Acquire loads: a flusher that sees the start done reads the CAS's word, not the PENDING word before it (which would make it wait for the next instance) |
//! | `work_push_relaxed` | intake push CAS, SeqCst | with `work_take_relaxed`: the node's link, deadline and state word are visible to the worker (and the store half of the `sleeping` pair) |
//! | `work_take_relaxed` | intake swap, Acquire | the Acquire half of the above |
//! | `work_idle_relaxed` | `sleeping` load after a push, SeqCst | store-buffering with `sleep` (register, then load the intake): either `queue` sees the sleeper or the sleeper sees the item |
//! | `work_runnable_relaxed` | `runnable` store, SeqCst | with `work_peer_relaxed` and `sleep`: a backlog left on the run list reaches a sleeping peer |
//! | `work_peer_relaxed` | `sleeping` load after making a backlog, SeqCst | the load half of the above |
//! | `work_sleep_relaxed` | `sleep`'s loads of the intake and `runnable`, SeqCst | the sleeper's half of both pairs |
//! | `work_finish_relaxed` | `finish` CAS, AcqRel | with `work_wait_relaxed`: the run's effects are visible when `flush`/`cancel_sync` return |
//! | `work_runs_relaxed` | `finished` store, Release | with the Acquire loads in `flush` and `runs()` |
//! | `work_wait_relaxed` | `flush`/`wait_for` loads, Acquire | the Acquire half of the two above |
//! | `work_lock_acquire_relaxed` | lock CAS/swap, Acquire | the worker lock: the previous holder's list changes are visible |
//! | `work_lock_release_relaxed` | unlock swap, Release | the Release half of the above |
//!
//! The four store-buffering pairs (`idle`, `runnable`, `peer`, `sleep`)
//! need `SeqCst`, which loom models as `AcqRel`; loom cannot tell them
//! apart from a real lost wake-up, so they are covered by the threaded
//! tests, not by loom mutants.
//!
//! # Where this differs from Linux
//!
//! On [`Workqueue`](Workqueue#where-this-differs-from-linux), where rustdoc
//! renders it.

mod context;
mod lock;
mod pool;
mod queue;
mod stats;
mod work;

pub use queue::{Workqueue, WorkqueueBuilder};
pub use stats::{HighPriority, WorkqueueStats};
pub(crate) use work::fire_pooled;
pub use work::{DelayedWorkRef, Work, WorkRef};

pub(crate) use crate::work::wake_word;

/// What a bottom-half drain restores after running an item (see
/// `crate::work::bh`, "Deadlock").
pub(crate) type Saved = context::Context;

/// Marks `work` as the item the calling thread runs (a drain running a
/// bottom-half item), so that `flush`/`cancel_sync` of it from its own
/// function return `WouldDeadlock`, as on a worker.
pub(crate) fn enter_bh_work(work: &Work) -> Saved {
    context::enter_work(work)
}

/// Undoes [`enter_bh_work`].
pub(crate) fn leave_bh_work(saved: Saved) {
    context::replace(saved);
}

pub(crate) use work::inherited;
#[cfg(all(test, not(bottomhalf_loom)))]
pub(crate) use work::tests::start_window;

/// The fork generation of this process (`crate::fork`): a workqueue or
/// pool built under another generation was inherited across `fork()`.
/// Always 0 where there is no `fork` (and under loom).
#[inline]
pub(crate) fn fork_generation() -> u32 {
    #[cfg(all(unix, not(bottomhalf_loom)))]
    {
        crate::fork::generation()
    }
    #[cfg(not(all(unix, not(bottomhalf_loom))))]
    {
        0
    }
}

/// Registers the `fork()` child handler that bumps the generation.
fn ensure_atfork() {
    #[cfg(all(unix, not(bottomhalf_loom)))]
    crate::fork::ensure_atfork();
}

pub use crate::work::WorkqueueError;

/// The CPU index of the per-CPU pool whose worker calls this (the `cpu`
/// the item was queued on), `None` elsewhere (unbound workers, other
/// threads).
///
/// Top-half safe: yes (one thread-local load), except in a library loaded
/// with `dlopen`, where a thread's first access to the thread-local may
/// allocate (glibc's `__tls_get_addr`). Allocates: no (but see the above).
/// Blocks: no.
///
/// # Examples
///
/// ```
/// use bottomhalf::{current_cpu, Work, Workqueue};
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);
/// static W: Work = Work::new("where", |_| {
///     SEEN.store(current_cpu().unwrap(), Ordering::Relaxed);
/// });
/// let wq = Workqueue::builder("percpu").per_cpu().build().unwrap();
/// let last = wq.cpu_ids().len() - 1;
/// wq.queue_on(last, &W).unwrap();
/// W.flush().unwrap();
/// assert_eq!(SEEN.load(Ordering::Relaxed), last);
/// assert_eq!(current_cpu(), None);
/// ```
pub fn current_cpu() -> Option<usize> {
    context::get().cpu
}
