//! Workqueues (feature `std`): bottom halves that may sleep, block and
//! allocate, run by worker threads. The semantics are Linux's
//! `kernel/workqueue.c` and Zephyr's `k_work`.
//!
//! | file | holds |
//! | --- | --- |
//! | `work.rs` | [`Work`], [`DelayedWork`]: the item, its state word and transitions; `flush`, `cancel`, `cancel_sync` |
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
//! Idle workers sleep on a [`WakeWord`](crate::WakeWord) per pool: a
//! `futex` word. `queue` wakes them with `WakeWord::notify` — two atomic
//! operations and, only when a worker sleeps, one `futex(FUTEX_WAKE)`
//! system call, which is async-signal-safe. A condition variable would need
//! a mutex in the signal handler, `Thread::unpark` is not documented as
//! async-signal-safe, and an `eventfd` would cost a file descriptor per
//! pool for no gain. `queue` skips even the `notify` while no worker is
//! idle (a store-buffering pair on the pool's `idle` count, below).
//!
//! # Atomic orderings
//!
//! Each pair is marked with an `ordering!` mutant name (`work_*_relaxed`);
//! `loom-tests/mutants.txt` lists the models that must catch each.
//!
//! - `pend` (AcqRel) → `start` (AcqRel): what the caller wrote before
//!   `queue` — even a coalesced `queue`, whose CAS rewrites the same word —
//!   is visible to the run that covers it. `pend`'s Acquire half orders its
//!   writes of the link after the previous owner's reads.
//! - intake `push` (Release) → `take_intake` swap (Acquire): the node's
//!   link, deadline and state word are visible to the worker.
//! - `push` then `idle` load, against `sleep`'s `idle` increment then
//!   intake load: a store-buffering pattern, so all four are `SeqCst`;
//!   otherwise `queue` could see no sleeper while the sleeper sees an empty
//!   intake, and the item would wait for an unrelated wake-up.
//! - `finish` (Release, and `finished` Release) → the Acquire loads in
//!   `flush`/`cancel_sync` waits: the run's effects are visible when they
//!   return.
//! - The worker lock: Acquire on taking it, Release on giving it back.
//!
//! # Where this differs from Linux
//!
//! - No concurrency management: a pool has a fixed number of threads, and
//!   `max_active` caps how many run at once.
//! - An item queued on a second workqueue while it runs on a first waits
//!   for that run (set aside), instead of possibly running concurrently.
//! - A stopping workqueue refuses all queueing, including an item
//!   re-queueing itself (Linux lets "chained" work through while it
//!   drains), so the drain always ends; unexpired timers are dropped.
//! - A flush or cancel that would wait for itself is an error
//!   ([`WorkqueueError::WouldDeadlock`]) instead of a hang.

mod context;
mod lock;
mod pool;
mod queue;
mod stats;
mod work;

use core::fmt;

use crate::wake::WakeWord;

pub use queue::{Workqueue, WorkqueueBuilder};
pub use stats::{HighPriority, WorkqueueStats};
pub use work::{DelayedWork, DelayedWorkRef, Work, WorkRef};

/// A new `WakeWord`; under loom, warmed (as `loom-tests` does for its
/// own): one `notify` and one `wait` with a stale token move both counters
/// off their initial values, which loom does not treat as `SeqCst` writes —
/// otherwise it reports the notify/wait store-buffering pair, which is
/// correct under C++20 `SeqCst`, as a lost wake-up. Nobody sleeps on the word
/// afterwards, and tokens are taken later: the protocol sees a fresh word.
#[cfg(loom)]
pub(crate) fn wake_word() -> WakeWord {
    let word = WakeWord::new();
    let stale = word.token();
    word.notify();
    word.wait(stale, Some(core::time::Duration::ZERO));
    word
}

#[cfg(not(loom))]
pub(crate) const fn wake_word() -> WakeWord {
    WakeWord::new()
}

/// Why a workqueue operation was refused.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Work, Workqueue, WorkqueueError};
/// static W: Work = Work::new("w", |w| {
///     assert_eq!(w.cancel_sync(), Err(WorkqueueError::WouldDeadlock));
/// });
/// let wq = Workqueue::builder("e").threads(1).build().unwrap();
/// wq.queue(&W);
/// W.flush().unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkqueueError {
    /// The workqueue is stopping (being dropped): nothing more is queued.
    Stopped,
    /// A `cancel_sync` of the item is waiting for its run; queueing it is
    /// refused until that returns.
    Canceling,
    /// The call would wait for itself: flushing or cancelling the running
    /// item from its own function, flushing a pending item from an item of
    /// a one-at-a-time pool that holds it, or flushing a workqueue from one
    /// of its items.
    WouldDeadlock,
    /// `queue_on(cpu)` of a per-CPU workqueue without a pool for `cpu`.
    CpuOutOfRange {
        /// The CPU asked for.
        cpu: usize,
        /// The workqueue's pools.
        cpus: usize,
    },
}

impl fmt::Display for WorkqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkqueueError::Stopped => f.write_str("the workqueue is stopping"),
            WorkqueueError::Canceling => {
                f.write_str("the work item is being cancelled (cancel_sync in progress)")
            }
            WorkqueueError::WouldDeadlock => {
                f.write_str("this call would wait for the work item it is called from")
            }
            WorkqueueError::CpuOutOfRange { cpu, cpus } => {
                write!(
                    f,
                    "CPU {cpu} out of range: the workqueue has {cpus} CPU pools"
                )
            }
        }
    }
}

impl core::error::Error for WorkqueueError {}

/// The CPU index of the per-CPU pool whose worker calls this (the `cpu`
/// the item was queued on), `None` elsewhere (unbound workers, other
/// threads).
///
/// Top-half safe: yes (one thread-local load). Allocates: no. Blocks: no.
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
