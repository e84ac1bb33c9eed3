//! [`Work`]: the one work-item state machine (no_std), and its two
//! consumers' common ground.
//!
//! Design rules:
//!
//! - The item *is* the queue node (its `next` field, and for a workqueue
//!   `prev`), so queueing never allocates. One atomic word holds the state
//!   flags and the *target* of the pending (or running) instance, like
//!   Linux's `work->data`; every state change is one CAS on that word.
//! - A target is a [`Target`] header, `#[repr(C)]` and first in each
//!   consumer's queue: a workqueue's worker pool (`workqueue/pool.rs`,
//!   feature `std`) or a runtime CPU's bottom-half queue ([`bh`]). The
//!   header says which kind it is. The transitions (`pend`, `start`,
//!   `finish`, cancel, the flush bookkeeping) live here, once; only the list
//!   handling differs per consumer.
//! - Targets never go away: pools are type-stable (never freed, recycled),
//!   bottom-half queues live in `'static` runtimes. A target read from a
//!   word can always be looked at and the word re-checked.
//! - An item runs on one kind of consumer at a time: queueing it to a
//!   workqueue while it is pending, running or linked in a bottom half (or
//!   the reverse) is refused ([`WorkqueueError::OtherConsumer`]). Once idle,
//!   it may go to either.
//!
//! # Flags
//!
//! | flag | set by | cleared by | meaning |
//! | --- | --- | --- | --- |
//! | PENDING | `pend` (1) | `start` (2), cancel (4), stop (8) | a queued instance exists |
//! | RUNNING | `start` (2) | `finish` (3) | a worker or a drain runs the function |
//! | CANCELING | `cancel_sync` (4) | (5) | a `cancel_sync` waits for the run; `queue` refused |
//! | HELD | workqueue `pend` of an `Arc` item | with PENDING | the pool's list holds one `Arc` count (the same bit as LINKED: a pool's word never has LINKED, a bottom-half queue's never HELD) |
//! | DELAYED | workqueue `queue_delayed` | timer fired (6) | waits for its timer |
//! | WAITED | a sleeping `flush`/`cancel_sync` (workqueue) | every transition that can satisfy it | someone sleeps on `done` |
//! | LINKED | bottom-half `pend` (1), `finish` relinking (3) | the drain taking the node (2, or a ghost drop) | the node is on a bottom-half queue's list, which owns the link |
//!
//! # Atomic orderings
//!
//! The workqueue's pairs are listed in `workqueue/mod.rs`; those of the
//! bottom-half queue in [`bh`]. Both share `work_pend_relaxed`,
//! `work_start_relaxed`, `work_finish_relaxed`, `work_runs_relaxed` and
//! `work_wait_relaxed`, which are in this file.

pub(crate) mod bh;
pub(crate) mod timer;

use core::fmt;
use core::ptr;

use crate::sync::{loom_const_fn, ordering, AtomicPtr, AtomicU32, AtomicU8, Ordering, UnsafeCell};
use crate::wake::WakeWord;

pub(crate) use bh::BhQueue;
pub use timer::DelayedWork;

/// A queued instance exists: on (or being pushed onto) a list of the
/// target in the word, or (bottom half) about to be linked by the drain
/// running it. Set by `pend` (1), cleared by start (2), by cancel (4) and
/// by the stop-time discard of a timer (8).
pub(crate) const PENDING: usize = 1 << 0;
/// The function runs. Set by start (2), cleared by finish (3).
pub(crate) const RUNNING: usize = 1 << 1;
/// A `cancel_sync` waits for the running instance; `queue` is refused.
/// Never set together with PENDING. Set by (4), cleared by (5).
pub(crate) const CANCELING: usize = 1 << 2;
/// The pending link holds one strong count of the item's `Arc`
/// (workqueue only). Moves with PENDING: to the worker at start, to the
/// canceler at cancel.
pub(crate) const HELD: usize = 1 << 3;
/// The pending instance waits for its timer (workqueue only).
pub(crate) const DELAYED: usize = 1 << 4;
/// Someone sleeps on `done` until the state changes; every transition
/// that can satisfy a waiter (3, 4, 5, 8) clears it and notifies.
pub(crate) const WAITED: usize = 1 << 5;
/// Bottom half only: the node is on the list of the queue in the word
/// (its intake, or the private list a drain took), which owns the link.
/// Set with PENDING by the `pend` that pushes it, or by the `finish` that
/// relinks an instance queued while it ran; cleared when the drain takes
/// the node: by `start`, or by the drop of a *ghost* (a node whose
/// instance was cancelled while linked, see [`bh`]).
///
/// The same bit as HELD: both say "the list owns something of the item"
/// — an `Arc` count at a pool, the link itself at a bottom-half queue —
/// and the word's target says which. Six flag bits keep the targets'
/// alignment at 64 (a seventh would double the bottom-half queue in every
/// runtime CPU's state, 128 bytes of RAM per CPU on a Cortex-M).
pub(crate) const LINKED: usize = HELD;
/// All flag bits; a target is aligned so that its address leaves them free.
pub(crate) const FLAGS: usize = (1 << 6) - 1;

/// `Work::place` of a node on no workqueue list.
pub(crate) const PLACE_NONE: u8 = 0;

/// The header every consumer's queue starts with (`repr(C)`, first
/// field); the state word points at it. Each consumer's queue type is
/// aligned so that its address leaves the flag bits free (checked where it
/// is defined).
#[repr(C)]
pub(crate) struct Target {
    /// [`Target::BH`] or [`Target::POOL`]. Immutable.
    kind: u8,
}

impl Target {
    /// A runtime CPU's bottom-half queue (zero: runtimes stay all-zero).
    pub(crate) const BH: u8 = 0;
    /// A workqueue's worker pool.
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(crate) const POOL: u8 = 1;

    pub(crate) const fn new(kind: u8) -> Target {
        Target { kind }
    }
}

/// A state word: target pointer | flags.
pub(crate) type Word = *mut Target;

/// The flag bits of a state word.
#[inline(always)]
pub(crate) fn flags(word: Word) -> usize {
    word as usize & FLAGS
}

/// The target part of a state word (null if the item was never queued).
#[inline(always)]
pub(crate) fn target_of(word: Word) -> *mut Target {
    // Wrapping byte arithmetic keeps the target pointer's provenance.
    word.cast::<u8>().wrapping_sub(flags(word)).cast()
}

/// The kind of the word's target; `None` if the item was never queued.
#[inline]
pub(crate) fn kind_of(word: Word) -> Option<u8> {
    let t = target_of(word);
    // SAFETY: targets are never freed (module docs); `kind` is immutable.
    (!t.is_null()).then(|| unsafe { kind(t) })
}

/// The kind of a live target. Without `std` every target is a bottom-half
/// queue: no load, and the compiler drops the other kind's branches.
///
/// # Safety
///
/// `t` is a live target (never freed, module docs).
#[inline(always)]
unsafe fn kind(t: *mut Target) -> u8 {
    if cfg!(feature = "std") {
        // SAFETY: the caller's; `kind` is immutable.
        unsafe { (*t).kind }
    } else {
        Target::BH
    }
}

#[inline(always)]
pub(crate) fn tagged(target: *mut Target, f: usize) -> Word {
    debug_assert_eq!(f & !FLAGS, 0);
    target.cast::<u8>().wrapping_add(f).cast()
}

/// `true` if the word has an instance at a workqueue pool inherited across
/// `fork()`: nothing in this process will ever run, finish or unlink it.
#[inline]
pub(crate) fn inherited(s: Word) -> bool {
    #[cfg(feature = "std")]
    {
        crate::workqueue::inherited(s)
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = s;
        false
    }
}

/// `true` if the word has WAITED: a transition from it must notify
/// `done`. Only a workqueue's sleeping waiter sets WAITED (feature
/// `std`): without `std` it is never set, and the notify is not compiled.
#[inline(always)]
fn waited(s: Word) -> bool {
    cfg!(feature = "std") && flags(s) & WAITED != 0
}

/// Run numbers compared by `flush` are taken modulo 2^31 (`started`
/// counts in halves).
const RUN_MASK: u32 = u32::MAX >> 1;

/// `finished` (runs completed) has reached run number `target` (modulo
/// 2^31, within half that range).
#[inline]
pub(crate) fn run_reached(finished: u32, target: u32) -> bool {
    finished.wrapping_sub(target) & RUN_MASK < (RUN_MASK >> 1)
}

/// What a work item runs.
pub(crate) enum Func {
    Static(fn(&Work)),
    /// `func` is a `fn(&'static C, &Work)` and `ctx` the `&'static C` it
    /// was built with (`Func::erase`), for one `C: Sync`.
    Context(fn(*const (), &Work), *const ()),
    #[cfg(feature = "std")]
    Boxed(std::boxed::Box<dyn Fn(&Work) + Send + Sync>),
}

impl Func {
    loom_const_fn! {
        /// Erases `C` from a context and its function.
        pub(crate) fn erase<C: Sync>(ctx: &'static C, func: fn(&'static C, &Work)) -> Func {
            // SAFETY: transmuting between two function pointer types is
            // sound (same size, both non-null); calling the result is what
            // needs care, see `Work::call`.
            let func = unsafe {
                core::mem::transmute::<fn(&'static C, &Work), fn(*const (), &Work)>(func)
            };
            // `from_ref` keeps the reference's provenance.
            Func::Context(func, ptr::from_ref(ctx).cast::<()>())
        }
    }
}

/// A deferred function: coalescing (queued twice before it runs, it runs
/// once), never concurrent with itself. One type, two consumers:
///
/// - a `Workqueue`'s worker threads (feature `std`): the function may
///   sleep, block and allocate;
/// - a runtime's bottom half ([`Runtime::queue_work`](crate::Runtime::queue_work),
///   no_std): the item runs in the drain of a CPU, after that CPU's
///   tasklets, like a Linux `WQ_BH` work item; the function must not block.
///
/// A `Work` is `static` ([`Work::new`]) or, for a workqueue, shared through
/// an `Arc` (`Work::new_arc`); either way it is its own queue node, so
/// queueing it never allocates.
///
/// # State
///
/// One atomic word: the target (a pool or a bottom-half queue) of the
/// pending (or running) instance and six flag bits — PENDING, RUNNING,
/// CANCELING, HELD (a workqueue holds an `Arc` count; at a bottom-half
/// queue the same bit is LINKED: the node is on its list), DELAYED
/// (waiting for its timer) and WAITED (someone sleeps in
/// `flush`/`cancel_sync`). The states a user sees:
///
/// ```text
///             (1) queue              (2) start
///    IDLE ─────────────▶ PENDING ─────────────▶ RUNNING ──(3) finish──▶ IDLE
///     ▲                   │  ▲  │                 │  │
///     │ (4) cancel        │  │  │ (6) timer fired │  │ (1) queue while running
///     ├───────────────────┘  └──┘ (7) mod_delayed │  ▼
///     │ (8) stop drops an                         │  RUNNING|PENDING ──(3) finish──▶ PENDING
///     │     unexpired timer                       │  (the next instance waits for this run)
///     │                                           │ (4) cancel_sync of a running item
///     │               (5) the run is over         ▼
///     └─────────────────────────────────────── CANCELING (queue refused)
/// ```
///
/// 1. `queue`: one CAS sets PENDING and the target (`pend`), then one CAS
///    pushes the item onto the target's intake list. If PENDING is already
///    set the queue is coalesced (`false`; the CAS rewrites the same word,
///    so the pending run sees what the caller wrote). Refused while
///    CANCELING. Queued while RUNNING: PENDING|RUNNING; the pending
///    instance waits until the run is over, then runs: never concurrently.
///    (A workqueue links it and a worker that meets it sets it aside; a
///    bottom half does not link it: the drain running it relinks it on its
///    own CPU when the run ends, as Linux queues a running item on the pool
///    where it runs.)
/// 2. A worker (under its pool's lock) or a drain takes the item off its
///    list and CASes PENDING → RUNNING (`start`); HELD moves to the worker,
///    LINKED is cleared.
/// 3. The function returned (or panicked): `finish` CASes RUNNING off; if
///    it was queued meanwhile it is PENDING again and runs next.
/// 4. [`cancel`](Work::cancel) / [`cancel_sync`](Work::cancel_sync): the
///    pending instance will not run: PENDING (with HELD and DELAYED)
///    cleared in one CAS — under the pool's lock with the node unlinked
///    (workqueue), or alone, leaving a ghost node that the drain skips
///    (bottom half, see below); `cancel_sync` of a running item sets
///    CANCELING in the same CAS, so a re-queue from the running function
///    is refused.
/// 5. `cancel_sync` saw RUNNING clear: it clears CANCELING.
/// 6. The timer of a delayed instance expired: a worker clears DELAYED and
///    moves it to the run list.
/// 7. `mod_delayed`: the pending instance is unlinked and re-linked with a
///    new deadline (and maybe a new pool), PENDING kept.
/// 8. Dropping the workqueue discards delayed instances whose timer has not
///    expired: PENDING cleared, as by cancel.
///
/// # In a bottom half
///
/// [`Runtime::queue_work`](crate::Runtime::queue_work) pushes the item on
/// the current CPU's lock-free queue (`queue_work_on`: another CPU's) and
/// sets that CPU's [`Vector::TASKLET`](crate::Vector::TASKLET) bit; the
/// CPU's drain runs it after its tasklets. A node on that queue cannot be
/// unlinked lock-free, so [`cancel`](Work::cancel) (top-half safe here)
/// only clears PENDING and leaves a *ghost* the drain skips. A queue of a
/// ghost that is still linked makes it pending again where it is: **that
/// instance runs on the CPU where the ghost is linked**, whichever CPU the
/// queue named. An item queued while it runs is relinked by the drain
/// running it, on that CPU, and runs once more after the run. A function
/// that panics: the panic goes on to the drain's caller, the item is not
/// left running, and the items behind it are put back and run by the next
/// drain. [`flush`](Work::flush) and [`cancel_sync`](Work::cancel_sync)
/// wait by draining the current CPU when the instance is queued there, by
/// spinning otherwise.
///
/// # What a worker or drain touches after the function returns
///
/// `finished` (a load and a Release store: only the runner writes it),
/// then the state word (the finish CAS), then — only if the item was
/// queued again meanwhile — its links: a worker under the pool's lock if it
/// was set aside, a drain to relink it on its own queue. A worker then
/// drops the `Arc` count it held (a panic in that drop is caught and
/// counted like an item's).
///
/// As `finished` is stored before the finish CAS, [`flush`](Work::flush)
/// (and [`runs`](Work::runs)) may see the run finished while
/// [`is_running`](Work::is_running) is still `true` for a moment: the run's
/// effects are visible, the runner has not cleared RUNNING yet.
///
/// # Examples
///
/// In a bottom half, queued from an interrupt handler:
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Work};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// static RUNS: AtomicU32 = AtomicU32::new(0);
/// static REFILL: Work = Work::new("rx-refill", |_| {
///     RUNS.fetch_add(1, Ordering::Relaxed); // softirq context: no blocking
/// });
///
/// fn rx_irq() {
///     RT.queue_work(&REFILL); // top half: no allocation, no lock
/// }
/// rx_irq();
/// rx_irq(); // coalesced
/// assert!(RT.drain().is_complete());
/// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
/// ```
///
/// On a workqueue's threads:
///
/// ```
/// use bottomhalf::{Work, Workqueue};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RUNS: AtomicU32 = AtomicU32::new(0);
/// static FLUSH_LOG: Work = Work::new("flush-log", |_| {
///     RUNS.fetch_add(1, Ordering::Relaxed); // may block, sleep, allocate
/// });
///
/// let wq = Workqueue::builder("events").threads(1).build().unwrap();
/// assert!(wq.queue(&FLUSH_LOG));
/// FLUSH_LOG.flush().unwrap();
/// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
/// ```
///
/// A driver with several device instances embeds one item per instance,
/// bound to it with [`with_context`](Work::with_context), and writes the
/// work function once (Linux's `container_of(work, struct dev, work)`):
///
/// ```
/// use bottomhalf::{Work, Workqueue};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// struct Disk {
///     flushes: AtomicU32,
///     flush_work: Work,
/// }
///
/// fn disk_flush(disk: &'static Disk, _: &Work) {
///     disk.flushes.fetch_add(1, Ordering::Relaxed); // may block
/// }
///
/// static SDA: Disk = Disk {
///     flushes: AtomicU32::new(0),
///     flush_work: Work::with_context("sda-flush", &SDA, disk_flush),
/// };
/// static SDB: Disk = Disk {
///     flushes: AtomicU32::new(0),
///     flush_work: Work::with_context("sdb-flush", &SDB, disk_flush),
/// };
///
/// let wq = Workqueue::builder("disks").threads(1).build().unwrap();
/// assert!(wq.queue(&SDB.flush_work));
/// SDB.flush_work.flush().unwrap();
/// assert_eq!(SDA.flushes.load(Ordering::Relaxed), 0);
/// assert_eq!(SDB.flushes.load(Ordering::Relaxed), 1);
/// ```
///
/// # Size
///
/// 112 bytes on x86_64 Linux with `std` (104 without: no boxed closure),
/// 72 on thumbv7m (`tests/context.rs` pins them). The workqueue's list fields
/// (`prev`, the list place and flush color, the timer deadline) are part
/// of every item, bottom-half ones included: one type, one layout.
// Without `std` the workqueue's fields are not read (the deadline is kept
// for delayed bottom-half work).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub struct Work {
    /// Target pointer | flags; see the type's docs. Every change is a CAS.
    pub(crate) state: AtomicPtr<Target>,
    /// Intake and list link. Written by the `queue` that set PENDING (or
    /// PENDING|LINKED) before its push, by a relinking `finish`, then only
    /// by the owner of the list: the lock of the pool in `state`, or the
    /// drain that took the bottom-half list.
    pub(crate) next: AtomicPtr<Work>,
    /// Workqueue run-list back link: only under the pool's lock.
    pub(crate) prev: AtomicPtr<Work>,
    /// Which list of the pool holds the node: only under the pool's lock.
    /// [`PLACE_NONE`] while pending means "being pushed".
    pub(crate) place: AtomicU8,
    /// Flush color the node got when it entered the run list: only under
    /// the pool's lock.
    pub(crate) color: AtomicU8,
    /// Timer deadline (`Host::now_ns` clock). Written by the owner of the
    /// link (`queue_delayed` before its push, `mod_delayed` under the
    /// lock), read under the pool's lock.
    deadline_ns: UnsafeCell<u64>,
    /// Twice the runs started, plus one while a start is between its two
    /// stores: `start` (the one runner starting the run) stores the odd
    /// value before its PENDING -> RUNNING CAS and the next even value
    /// after it, both Release; `flush` reads it around the state word.
    pub(crate) started: AtomicU32,
    /// Runs finished. Incremented by `finish` (the runner: a load and a
    /// Release store) before its CAS.
    pub(crate) finished: AtomicU32,
    /// Queues that found the item already pending.
    coalesced: AtomicU32,
    /// A workqueue's `flush` and `cancel_sync` sleep here (see WAITED).
    pub(crate) done: WakeWord,
    /// Immutable.
    func: Func,
    name: &'static str,
    /// This `Work` is the inside of a `DelayedWork`: set only by the
    /// `DelayedWork` constructors, immutable. `DelayedWork::from_work`
    /// relies on it.
    pub(crate) in_delayed: bool,
    /// The deadline request of a [`DelayedWork`] in a bottom half
    /// (`timer.rs`): here, not in the `DelayedWork`, so that a
    /// `DelayedWork` is exactly its `Work` and a `&Work` of one covers the
    /// whole item ([`DelayedWork::from_work`](crate::DelayedWork::from_work)
    /// turns one into the other). All zero and unused in a plain item.
    pub(crate) req: timer::Request,
    /// The bottom-half level it runs at when queued to a runtime (a
    /// [`Level`](crate::Level) index). Immutable after construction
    /// ([`Work::at_level`]); the workqueue ignores it.
    level: u8,
}

// SAFETY: every field but `deadline_ns` is an atomic, a WakeWord, or
// immutable (`func` is `Send + Sync`: a `fn`, a `Send + Sync` closure, or a
// `fn` with a context pointer that comes only from a `&'static C` with
// `C: Sync` and is only handed back to the function as that reference, so
// sharing it shares a `&'static C`). `deadline_ns` is written only by the
// owner of the item's link (the caller that set PENDING, before publishing
// the node with the Release push; or the holder of the pool's lock) and
// read only under that pool's lock, so accesses never overlap.
unsafe impl Sync for Work {}
// SAFETY: as above; nothing in a `Work` is tied to a thread (a
// `&'static C` with `C: Sync` is `Send`).
unsafe impl Send for Work {}

/// Result of `pend` (transition 1).
#[derive(Clone, Copy)]
pub(crate) enum Pend {
    /// This call set PENDING (and LINKED if asked): it owns the link and
    /// must push the node.
    Queued,
    /// Already pending: the pending run covers this call.
    Coalesced,
    /// Bottom half: PENDING set on an instance that needs no push — a
    /// ghost still linked (it runs where it is linked) or a running item
    /// (the drain running it relinks it).
    Covered,
    /// A `cancel_sync` is running.
    Canceling,
    /// The instance is at a consumer of the other kind.
    OtherConsumer,
}

/// Result of `start` (transition 2).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) enum Start {
    /// PENDING → RUNNING; `held`: the run owns an `Arc` count.
    Run { held: bool },
    /// Still running (on another worker): set the instance aside.
    Collided,
    /// Bottom half: the instance was cancelled while linked; the drain
    /// dropped the node (LINKED cleared) and runs nothing.
    Ghost,
    /// Bottom half: the instance waits for its timer (DELAYED); the node,
    /// still LINKED, goes on its queue's timer list.
    Delayed,
}

/// Why a workqueue (or bottom-half work) operation was refused.
///
/// The name is the workqueue's: bottom-half work items are Linux's `WQ_BH`
/// workqueue items, and share their errors.
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
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
    /// The process was forked after the workqueue was built (or after the
    /// item was queued on it): this is the child's copy, whose worker
    /// threads do not exist. Nothing is queued, flushed or cancelled there;
    /// build a new workqueue in the child.
    Forked,
    /// `queue_on(cpu)` of a per-CPU workqueue without a pool for `cpu`, or
    /// a bottom-half `queue_work_on(cpu)` beyond the runtime's CPUs.
    CpuOutOfRange {
        /// The CPU asked for.
        cpu: usize,
        /// The workqueue's pools (the runtime's CPUs).
        cpus: usize,
    },
    /// The item is pending, running or linked on a consumer of the other
    /// kind (a workqueue's threads vs a runtime's bottom half): an item
    /// runs in one place at a time. Queue it again once it is idle.
    OtherConsumer,
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
            WorkqueueError::Forked => f.write_str(
                "the workqueue belongs to the parent of this forked process: its threads do not exist here",
            ),
            WorkqueueError::CpuOutOfRange { cpu, cpus } => {
                write!(
                    f,
                    "CPU {cpu} out of range: the workqueue has {cpus} CPU pools"
                )
            }
            WorkqueueError::OtherConsumer => f.write_str(
                "the work item is pending or running on another kind of consumer (workqueue vs bottom half)",
            ),
        }
    }
}

impl core::error::Error for WorkqueueError {}

/// A new `WakeWord`; under loom, warmed (as `loom-tests` does for its
/// own): one `notify` and one `wait` with a stale token move both counters
/// off their initial values, which loom does not treat as `SeqCst` writes —
/// otherwise it reports the notify/wait store-buffering pair, which is
/// correct under C++20 `SeqCst`, as a lost wake-up. Nobody sleeps on the word
/// afterwards, and tokens are taken later: the protocol sees a fresh word.
#[cfg(bottomhalf_loom)]
pub(crate) fn wake_word() -> WakeWord {
    let word = WakeWord::new();
    let stale = word.token();
    word.notify();
    word.wait(stale, Some(core::time::Duration::ZERO));
    word
}

#[cfg(not(bottomhalf_loom))]
pub(crate) const fn wake_word() -> WakeWord {
    WakeWord::new()
}

impl Work {
    loom_const_fn! {
        /// A work item named `name` (shown in a workqueue's statistics and
        /// in `Debug`) that runs `func`.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::Work;
        /// static W: Work = Work::new("hello", |w| println!("{} ran", w.name()));
        /// assert_eq!(W.name(), "hello");
        /// ```
        pub fn new(name: &'static str, func: fn(&Work)) -> Work {
            Work::with_func(name, Func::Static(func), false)
        }
    }

    loom_const_fn! {
        /// A work item named `name` that runs `func(ctx, work)`: one work
        /// function serves every instance of a device, each instance's item
        /// passing its own `ctx`.
        ///
        /// Linux's `INIT_WORK(&dev->work, func)` plus the
        /// `container_of(work, struct dev, work)` at the top of `func`, in
        /// one step: the context is bound here, so `func` receives the
        /// device itself. The item may be a field of the context it points
        /// to (a `static` may take its own address in its initializer).
        /// `C: Sync`, because the function runs on a worker thread or in
        /// another CPU's drain.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::{Work, Workqueue};
        /// use std::sync::Mutex;
        ///
        /// struct Sensor {
        ///     name: &'static str,
        ///     log: Mutex<Vec<String>>,
        /// }
        /// static TEMP: Sensor = Sensor { name: "temp", log: Mutex::new(Vec::new()) };
        ///
        /// fn sample(sensor: &'static Sensor, work: &Work) {
        ///     let line = format!("{} sampled by {}", sensor.name, work.name());
        ///     sensor.log.lock().unwrap().push(line);
        /// }
        /// static SAMPLE_TEMP: Work = Work::with_context("sample-temp", &TEMP, sample);
        ///
        /// let wq = Workqueue::builder("sensors").threads(1).build().unwrap();
        /// assert!(wq.queue(&SAMPLE_TEMP));
        /// SAMPLE_TEMP.flush().unwrap();
        /// assert_eq!(*TEMP.log.lock().unwrap(), ["temp sampled by sample-temp"]);
        /// ```
        pub fn with_context<C: Sync>(
            name: &'static str,
            ctx: &'static C,
            func: fn(&'static C, &Work),
        ) -> Work {
            Work::with_func(name, Func::erase(ctx, func), false)
        }
    }

    loom_const_fn! {
        pub(crate) fn with_func(name: &'static str, func: Func, in_delayed: bool) -> Work {
            Work {
                state: AtomicPtr::new(ptr::null_mut()),
                next: AtomicPtr::new(ptr::null_mut()),
                prev: AtomicPtr::new(ptr::null_mut()),
                place: AtomicU8::new(PLACE_NONE),
                color: AtomicU8::new(0),
                deadline_ns: UnsafeCell::new(0),
                started: AtomicU32::new(0),
                finished: AtomicU32::new(0),
                coalesced: AtomicU32::new(0),
                done: wake_word(),
                func,
                name,
                in_delayed,
                req: timer::Request::new(),
                level: 0,
            }
        }
    }

    /// The name given at creation.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// static W: bottomhalf::Work = bottomhalf::Work::new("name", |_| {});
    /// assert_eq!(W.name(), "name");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The bottom-half level the item runs at when queued to a runtime
    /// ([`Runtime::queue_work`](crate::Runtime::queue_work)):
    /// [`Level::DEFAULT`](crate::Level::DEFAULT) unless built with
    /// [`at_level`](Work::at_level). A `Workqueue` (feature `std`)
    /// ignores it.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Level, Work};
    /// static W: Work = Work::new("w", |_| {});
    /// assert_eq!(W.level(), Level::DEFAULT);
    /// ```
    pub const fn level(&self) -> crate::Level {
        crate::Level::from_index(self.level as usize)
    }

    /// The item, queued by [`Runtime::queue_work`](crate::Runtime::queue_work)
    /// on the bottom-half work queue of level `level` instead of level 0
    /// (see "Levels" on [`Runtime`](crate::Runtime)): it runs in that
    /// level's drain, after that level's tasklets, so it preempts lower
    /// levels' bottom halves and is preempted by higher ones. A builder for
    /// the `static`: `Work::new("step", f).at_level(Level::new(1))`.
    ///
    /// The item does not know its runtime's number of levels when it is
    /// built: a level not below it is checked at `queue_work` (a top half,
    /// which never panics): the item runs at the runtime's highest level
    /// instead, and [`Misuse::LevelOutOfRange`](crate::Misuse::LevelOutOfRange)
    /// is counted. A `Workqueue` (feature `std`) ignores the level.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Work};
    ///
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// static STEP: Work = Work::new("motor-step", |_| {}).at_level(Level::new(1));
    ///
    /// assert!(RT.queue_work(&STEP));
    /// assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 6); // the TASKLET vector, at level 1
    /// assert_eq!(RT.pending_at(0, Level::new(0)), 0);
    /// assert!(RT.drain_level(Level::new(1)).is_complete());
    /// assert_eq!(STEP.runs(), 1);
    /// ```
    #[cfg(not(bottomhalf_loom))]
    pub const fn at_level(self, level: crate::Level) -> Work {
        let mut w = self;
        w.level = level.index() as u8;
        w
    }

    /// See the non-loom `at_level`.
    #[cfg(bottomhalf_loom)]
    pub fn at_level(mut self, level: crate::Level) -> Work {
        self.level = level.index() as u8;
        self
    }

    /// `true` if queued and not yet started (including a delayed instance
    /// waiting for its timer).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("p").threads(0).build().unwrap();
    /// assert!(!W.is_pending());
    /// wq.queue(&W);
    /// assert!(W.is_pending());
    /// wq.run_pending();
    /// assert!(!W.is_pending());
    /// ```
    pub fn is_pending(&self) -> bool {
        flags(self.state.load(Ordering::Relaxed)) & PENDING != 0
    }

    /// `true` while a worker or a drain runs the function.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Work;
    /// static W: Work = Work::new("w", |w| assert!(w.is_running()));
    /// assert!(!W.is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        flags(self.state.load(Ordering::Relaxed)) & RUNNING != 0
    }

    /// `true` while a [`cancel_sync`](Work::cancel_sync) waits for the
    /// running instance (queueing is refused meanwhile).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// static W: bottomhalf::Work = bottomhalf::Work::new("w", |_| {});
    /// assert!(!W.is_canceling());
    /// ```
    pub fn is_canceling(&self) -> bool {
        flags(self.state.load(Ordering::Relaxed)) & CANCELING != 0
    }

    /// Completed runs (a panicking run counts). An Acquire load: having
    /// seen `n`, the caller sees what the first `n` runs did.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("w", |_| {});
    /// RT.queue_work(&W);
    /// let _ = RT.drain();
    /// assert_eq!(W.runs(), 1);
    /// ```
    pub fn runs(&self) -> u32 {
        // Acquire: pairs with the Release increment in `finish`.
        self.finished.load(Ordering::Acquire)
    }

    /// Queues that found the item already pending: a `queue_work` or
    /// `queue_delayed_work` that returned `false`, and a
    /// `mod_delayed_work` that moved a pending instance (it returns
    /// `true`).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("w", |_| {});
    /// assert!(RT.queue_work(&W));
    /// assert!(!RT.queue_work(&W));
    /// assert_eq!(W.coalesced(), 1);
    /// # let _ = RT.drain();
    /// ```
    pub fn coalesced(&self) -> u32 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Waits until the instance that is pending or running when called has
    /// finished (Linux's `flush_work`). Returns `Ok(true)` if it waited,
    /// `Ok(false)` if the item was idle. Also returns once the item is idle
    /// (a cancelled instance never runs). A pending delayed instance is
    /// waited for, timer included; `DelayedWork::flush` fires it first.
    /// "Finished" is the function's return: the run's effects are visible,
    /// but [`is_running`](Work::is_running) may still be `true` for a moment
    /// (the runner clears it just after; see the type's docs).
    ///
    /// How it waits: on a workqueue, it sleeps until a worker wakes it. In
    /// a bottom half, it drains the current CPU when the instance is on the
    /// current CPU's queue (so a thread that drains its CPU itself, or a
    /// firmware's main loop, does not wait for a drain that only it could
    /// run), and otherwise spins (yielding the thread under `std`) until
    /// the CPU that holds it has drained it.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from the item's own
    /// function, or from an item of a pool that runs one item at a time
    /// (ordered, one thread, or `max_active(1)`) while this item is pending
    /// on that same pool: neither could ever finish. Also when a
    /// bottom-half instance is pending on the current CPU's queue at a
    /// level the caller's own guard holds off
    /// ([`Runtime::bh_disable`](crate::Runtime::bh_disable),
    /// [`bh_disable_to`](crate::Runtime::bh_disable_to)): no drain may run
    /// it until that guard is dropped.
    /// [`WorkqueueError::Forked`] in a child of `fork()` when the instance
    /// is in a workqueue built before the fork, whose threads do not exist
    /// here.
    ///
    /// A bottom-half instance must not be flushed from another bottom half
    /// (a tasklet, a softirq handler, another work item) of the CPU it is
    /// queued on: the drain it waits for cannot run, and the call spins for
    /// ever (not detected).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work, WorkqueueError};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("self-flush", |w| {
    ///     assert_eq!(w.flush(), Err(WorkqueueError::WouldDeadlock));
    /// });
    /// RT.queue_work(&W);
    /// assert_eq!(W.flush(), Ok(true)); // drains this CPU: W runs here
    /// assert_eq!(W.runs(), 1);
    /// assert_eq!(W.flush(), Ok(false)); // idle now: nothing to wait for
    /// ```
    pub fn flush(&self) -> Result<bool, WorkqueueError> {
        self.flush_with(|_| {})
    }

    /// `flush`, calling `fire(word)` after the instance to wait for is
    /// known and the flush is allowed, before the wait
    /// ([`DelayedWork::flush`] fires its timer there: the instance it
    /// fires is the one it waits for, and the return says it was pending).
    pub(crate) fn flush_with(&self, fire: impl FnOnce(Word)) -> Result<bool, WorkqueueError> {
        let Some((s, target)) = self.flush_target() else {
            return Ok(false);
        };
        self.refuse_flush_from_here(s)?;
        fire(s);
        self.wait_until(|s| {
            flags(s) & (PENDING | RUNNING) == 0
                || run_reached(
                    self.finished
                        .load(ordering!("work_wait_relaxed", Acquire, Relaxed)),
                    target,
                )
        });
        Ok(true)
    }

    /// The instance `flush` waits for: the state word and the number of
    /// the run (1-based, modulo 2^31) that ends it; `None` if the item is
    /// idle.
    ///
    /// The word between two reads of `started`, until they agree, so no
    /// start stored to `started` between them. Then (`started` = 2k + odd):
    ///
    /// | odd | word | waits for run |
    /// | --- | --- | --- |
    /// | 0 | RUNNING (run k) | k |
    /// | 0 | PENDING, with or without RUNNING | k + 1 |
    /// | 1 | PENDING (run k + 1 is starting, before its CAS) | k + 1 |
    /// | 1 | RUNNING (run k + 1, after its CAS) | k + 1 |
    /// | 1 | RUNNING, PENDING (queued again since) | k + 2 |
    ///
    /// The odd value closes the window between a start's count and its
    /// CAS: before, a flusher there took the next instance for its target
    /// (a period too long for a periodic item, a deadlock when that
    /// instance waited behind the flusher). Both stores are Release and the
    /// loads Acquire, so a word read after `started` is at least as new as
    /// the word the start that stored it had seen (the rows above are the
    /// only ones reachable). A bottom-half start that finds its instance
    /// cancelled after the odd store puts the even value back: a flusher
    /// that read the odd value waits for run k + 1 or for the item to be
    /// idle, and the cancelled item is idle.
    fn flush_target(&self) -> Option<(Word, u32)> {
        let (s, started) = loop {
            let before = self.started.load(Ordering::Acquire);
            let s = self.state.load(Ordering::Acquire);
            let after = self.started.load(Ordering::Acquire);
            if after == before {
                break (s, before);
            }
            crate::sync::spin_wait();
        };
        let f = flags(s);
        if f & (PENDING | RUNNING) == 0 {
            return None;
        }
        let k = started >> 1;
        let starting = started & 1 != 0;
        let target = match (starting, f & PENDING != 0, f & RUNNING != 0) {
            (false, false, _) => k,
            (false, true, _) | (true, _, false) | (true, false, true) => k.wrapping_add(1),
            (true, true, true) => k.wrapping_add(2),
        };
        Some((s, target & RUN_MASK))
    }

    /// [`flush_target`](Work::flush_target)'s run number, for the loom
    /// model of the start/flush race (`loom-tests/tests/workqueue.rs`).
    /// Only under `--cfg bottomhalf_loom`.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    #[cfg(bottomhalf_loom)]
    #[doc(hidden)]
    pub fn loom_flush_target(&self) -> Option<u32> {
        self.flush_target().map(|(_, t)| t)
    }

    /// `Err` if a flush of the instance(s) the word `s` shows, from here,
    /// would never end: from the item's own function, or from an item of a
    /// one-at-a-time pool holding the pending instance; or if the instance
    /// is at a workqueue inherited across `fork()`.
    pub(crate) fn refuse_flush_from_here(&self, s: Word) -> Result<(), WorkqueueError> {
        if inherited(s) {
            return Err(WorkqueueError::Forked);
        }
        #[cfg(feature = "std")]
        self.refuse_flush_from_thread(s)?;
        // Running below us on this CPU (no_std), or pending on this CPU's
        // queue at a level the caller's own bottom-half guard holds off:
        // nothing could finish it.
        if bh::refuse_here(self, s, true) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        Ok(())
    }

    /// Cancels a pending instance: it will not run. A run in progress is
    /// not waited for (use [`cancel_sync`](Work::cancel_sync)). Returns
    /// `true` if an instance was pending (Linux's `cancel_work`); `false` in
    /// a child of `fork()` for an instance in a workqueue built before the
    /// fork (it never runs there anyway).
    ///
    /// Top-half safe: for a bottom-half instance, yes (one CAS: the node
    /// stays on its list as a ghost that the drain skips); for a workqueue
    /// instance, no (takes the pool's worker lock for a few list moves).
    /// Allocates: no. Blocks: no, except (workqueue) while a `queue` on
    /// another thread is between its two CASes (a few instructions) — it
    /// is waited for.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("never", |_| panic!("cancelled work ran"));
    /// RT.queue_work(&W);
    /// assert!(W.cancel());
    /// assert!(!W.cancel());
    /// assert!(RT.drain().is_complete());
    /// assert_eq!(W.runs(), 0);
    /// ```
    pub fn cancel(&self) -> bool {
        match self.grab(false) {
            Grab::Grabbed { .. } => true,
            Grab::Idle | Grab::Canceling | Grab::Running | Grab::Forked => false,
        }
    }

    /// Cancels a pending instance and waits for a running one: on return
    /// the item is neither pending nor running, even if its function
    /// queues it again (such a queue is refused with
    /// [`WorkqueueError::Canceling`] while `cancel_sync` waits). Returns
    /// `Ok(true)` if an instance was pending (Linux's `cancel_work_sync`).
    /// Concurrent `cancel_sync` calls wait for each other. Waits as
    /// [`flush`](Work::flush) does.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from the item's own
    /// function (it would wait for itself); nothing is cancelled then.
    /// [`WorkqueueError::Forked`] in a child of `fork()` when the instance
    /// is in a workqueue built before the fork.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("self-requeue", |_| {
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    ///     // Refused while cancel_sync waits:
    ///     let _ = WQ.get().unwrap().queue(&W);
    /// });
    /// static WQ: std::sync::OnceLock<Workqueue> = std::sync::OnceLock::new();
    /// let wq = WQ.get_or_init(|| Workqueue::builder("c").threads(1).build().unwrap());
    /// wq.queue(&W);
    /// std::thread::sleep(std::time::Duration::from_millis(5));
    /// W.cancel_sync().unwrap();
    /// assert!(!W.is_pending() && !W.is_running());
    /// ```
    pub fn cancel_sync(&self) -> Result<bool, WorkqueueError> {
        #[cfg(feature = "std")]
        self.refuse_cancel_from_thread()?;
        #[cfg(not(feature = "std"))]
        if bh::refuse_here(self, self.state.load(Ordering::Relaxed), false) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        loop {
            match self.grab(true) {
                Grab::Idle => return Ok(false),
                Grab::Grabbed { running: false } => return Ok(true),
                Grab::Grabbed { running: true } => {
                    self.finish_cancel();
                    return Ok(true);
                }
                Grab::Running => {
                    self.finish_cancel();
                    return Ok(false);
                }
                Grab::Forked => return Err(WorkqueueError::Forked),
                Grab::Canceling => self.wait_until(|s| flags(s) & CANCELING == 0),
            }
        }
    }

    /// With CANCELING set by us: waits for the run, then clears CANCELING
    /// (transition 5).
    fn finish_cancel(&self) {
        self.wait_until(|s| flags(s) & RUNNING == 0);
        self.update(|s| {
            debug_assert!(flags(s) & CANCELING != 0 && flags(s) & PENDING == 0);
            tagged(target_of(s), flags(s) & !CANCELING)
        });
    }

    /// Transition 4 (and its no-op cases). `sync`: a running item gets
    /// CANCELING.
    fn grab(&self, sync: bool) -> Grab {
        loop {
            let s = self.state.load(Ordering::Acquire);
            let f = flags(s);
            if inherited(s) {
                return Grab::Forked;
            }
            if f & CANCELING != 0 {
                return Grab::Canceling;
            }
            if f & PENDING == 0 {
                if !sync || f & RUNNING == 0 {
                    return Grab::Idle;
                }
                if self.cas(s, f | CANCELING) {
                    return Grab::Running;
                }
                continue;
            }
            #[cfg(feature = "std")]
            if kind_of(s) == Some(Target::POOL) {
                match self.grab_pooled(sync) {
                    Some(g) => return g,
                    None => continue,
                }
            }
            // A bottom-half instance: clear PENDING, nothing else. A node
            // still LINKED stays on its list as a ghost, which the drain
            // drops; one that is not (queued while running) is relinked by
            // nobody: the finishing drain sees PENDING clear.
            let running = sync && f & RUNNING != 0;
            let canceling = if running { CANCELING } else { 0 };
            if self.cas(s, (f & !(PENDING | DELAYED)) | canceling) {
                if f & DELAYED != 0 {
                    // A timer: its drain drops the ghost from the list and
                    // disarms (or re-arms) the hook now, not at the old
                    // deadline (Linux's `del_timer`).
                    bh::poke(s);
                }
                return Grab::Grabbed { running };
            }
        }
    }

    /// One CAS from `s` to the same target with flags `f` (WAITED cleared,
    /// and its waiters woken). `false` if the word changed.
    pub(crate) fn cas(&self, s: Word, f: usize) -> bool {
        // AcqRel: as in `update`.
        match self.cas_word(s, tagged(target_of(s), f & !WAITED), Ordering::AcqRel) {
            Ok(_) => {
                if waited(s) {
                    self.done.notify();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// One (strong) CAS of the state word, failure Relaxed: every
    /// transition's CAS goes through here. With the usual AcqRel it calls
    /// [`cas_acqrel`](Work::cas_acqrel), one out-of-line copy for all of
    /// them (a `bh_mutant` build with another ordering gets an inline CAS).
    #[inline(always)]
    fn cas_word(&self, s: Word, new: Word, success: Ordering) -> Result<Word, Word> {
        if matches!(success, Ordering::AcqRel) {
            self.cas_acqrel(s, new)
        } else {
            self.state
                .compare_exchange(s, new, success, Ordering::Relaxed)
        }
    }

    /// The AcqRel CAS of [`cas_word`](Work::cas_word). Without `std`,
    /// never inlined: a firmware has one CAS sequence (an LDREX/STREX, or a
    /// critical section on a core without CAS) instead of one per
    /// transition; and weak there: every caller loops until its CAS
    /// succeeds or the word it reads says stop, so a spurious failure is
    /// one more try, and no retry loop is needed in here.
    #[cfg(feature = "std")]
    fn cas_acqrel(&self, s: Word, new: Word) -> Result<Word, Word> {
        self.state
            .compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed)
    }

    /// See the `std` `cas_acqrel`.
    #[cfg(not(feature = "std"))]
    #[inline(never)]
    fn cas_acqrel(&self, s: Word, new: Word) -> Result<Word, Word> {
        self.state
            .compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Relaxed)
    }

    /// One CAS loop: `f` maps the current word to the new one. Clears
    /// WAITED and wakes the waiters: callers are transitions a waiter may
    /// be waiting for. Returns the old word.
    pub(crate) fn update(&self, mut f: impl FnMut(Word) -> Word) -> Word {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let new = f(s);
            let new = tagged(target_of(new), flags(new) & !WAITED);
            match self.cas_word(s, new, Ordering::AcqRel) {
                Ok(_) => {
                    if waited(s) {
                        self.done.notify();
                    }
                    return s;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Waits until `ready(word)`: sleeping on `done` while the instance is
    /// at a workqueue pool, draining or spinning while it is in a bottom
    /// half (see [`flush`](Work::flush)).
    fn wait_until(&self, ready: impl Fn(Word) -> bool) {
        loop {
            // Acquire: pairs with the Release half of the transition CASes,
            // so what the run did is visible when we return.
            let s = self
                .state
                .load(ordering!("work_wait_relaxed", Acquire, Relaxed));
            if ready(s) {
                return;
            }
            #[cfg(feature = "std")]
            if kind_of(s) == Some(Target::POOL) {
                return self.wait_for(ready);
            }
            bh::wait_step(s);
        }
    }

    /// Transition 1: set PENDING (with `extra`: HELD, DELAYED, LINKED) and
    /// the target, or coalesce. A bottom-half `pend` (`target` a
    /// [`BhQueue`]) of a linked ghost or of a running item sets PENDING
    /// alone and keeps the target ([`Pend::Covered`]).
    #[inline]
    pub(crate) fn pend(&self, target: *mut Target, extra: usize) -> Pend {
        // SAFETY: `target` is a live pool or a bottom-half queue of a
        // `'static` runtime; `kind` is immutable.
        let kind = unsafe { kind(target) };
        loop {
            // Loaded at the top of each try (not taken from the failed
            // CAS): one copy of the loop body, not two.
            let s = self.state.load(Ordering::Relaxed);
            let f = flags(s);
            // An instance at a pool inherited across `fork()` never runs
            // here: the item is idle for this process, and its word is
            // taken over (any `Arc` count that instance held is leaked).
            let busy = f & (PENDING | RUNNING | CANCELING | LINKED) != 0;
            // The kind of the instance's target: no load when it is the
            // same target (a queue coalescing on its own CPU or pool).
            let s_kind = if !busy {
                None
            } else if ptr::eq(target_of(s), target) {
                Some(kind)
            } else {
                kind_of(s)
            };
            let adopt = s_kind == Some(Target::POOL) && inherited(s);
            if f & CANCELING != 0 && !adopt {
                return Pend::Canceling;
            }
            if busy && !adopt && s_kind != Some(kind) {
                return Pend::OtherConsumer;
            }
            let covered = !adopt && f & PENDING == 0 && kind == Target::BH && busy;
            let new = if adopt {
                // The inherited lists still hold the node: forget that
                // place before the CAS publishes the new one (a canceler
                // at the new pool reads `place` after it).
                self.place.store(PLACE_NONE, Ordering::Relaxed);
                tagged(target, PENDING | extra)
            } else if f & PENDING != 0 {
                // Rewrite the same word: the start CAS that takes the
                // pending instance reads this write or a later one, so the
                // run sees what the caller wrote before this `queue`.
                s
            } else if covered {
                // A linked ghost (runs where it is linked) or a running
                // item (its drain relinks it when the run ends).
                tagged(target_of(s), f | PENDING | (extra & DELAYED))
            } else {
                tagged(target, f | PENDING | extra)
            };
            // AcqRel: Release pairs with the Acquire of `start`; Acquire
            // pairs with the Release of the previous owner of the link (the
            // last `start`, ghost drop or cancel), so our writes to `next`
            // and `deadline_ns` come after its reads.
            match self.cas_word(s, new, ordering!("work_pend_relaxed", AcqRel, Relaxed)) {
                Ok(_) if f & PENDING != 0 && !adopt => {
                    self.coalesced.fetch_add(1, Ordering::Relaxed);
                    return Pend::Coalesced;
                }
                Ok(_) if covered => return Pend::Covered,
                Ok(_) => return Pend::Queued,
                Err(_) => {}
            }
        }
    }

    /// Transition 2, by the owner of the node just taken off its list (a
    /// pool's lock holder, or the drain). A bottom-half instance cancelled
    /// while linked is a ghost: LINKED is cleared, nothing runs.
    pub(crate) fn start(&self) -> Start {
        let s = self.state.load(Ordering::Relaxed);
        if flags(s) & RUNNING != 0 {
            return Start::Collided;
        }
        if flags(s) & PENDING == 0 {
            return self.drop_ghost();
        }
        // Nobody else can set RUNNING: that needs the pending instance,
        // which is ours. `started` is twice the runs started, plus one while
        // this start is between its two stores (see the field): odd before
        // the CAS, even again after it. Plain loads and stores, as only the
        // starter of a run writes it (runs are ordered by the state word).
        let n = self.started.load(Ordering::Relaxed);
        // Release: pairs with `flush`'s Acquire loads of `started`; a
        // flusher that reads the odd value reads a state word at least as
        // new as the one this start found (PENDING, not RUNNING).
        self.started.store(
            n.wrapping_add(1),
            ordering!("work_starting_relaxed", Release, Relaxed),
        );
        #[cfg(all(test, feature = "std", not(bottomhalf_loom)))]
        crate::workqueue::start_window(self);
        loop {
            // Loaded at the top of each try (not taken from the failed
            // CAS): one copy of the loop body. Nobody else can set RUNNING
            // meanwhile (above).
            let s = self.state.load(Ordering::Relaxed);
            let f = flags(s);
            if f & PENDING == 0 {
                // Cancelled (bottom half: lock-free) since: undo the odd
                // count (see `flush_target`) and drop the ghost.
                self.started.store(n, Ordering::Release);
                return self.drop_ghost();
            }
            if f & DELAYED != 0 {
                // A bottom-half instance (re)scheduled while it ran or as a
                // ghost: its timer list takes it (`timer.rs`).
                self.started.store(n, Ordering::Release);
                return Start::Delayed;
            }
            let new = tagged(target_of(s), (f & !(PENDING | HELD | LINKED)) | RUNNING);
            // Acquire: pairs with `pend`'s Release (the caller's writes
            // before `queue`). Release: publishes the odd `started` to
            // `flush`, and hands the link to the next `pend`.
            if self
                .cas_word(s, new, ordering!("work_start_relaxed", AcqRel, Relaxed))
                .is_ok()
            {
                // Release: pairs with `flush`'s Acquire loads; a flusher
                // that reads the even value reads this CAS's word or a
                // later one, never the PENDING word before it.
                self.started.store(
                    n.wrapping_add(2),
                    ordering!("work_started_relaxed", Release, Relaxed),
                );
                return Start::Run {
                    held: f & HELD != 0,
                };
            }
        }
    }

    /// A bottom-half node taken off its list whose instance was cancelled:
    /// clear LINKED, unless a `queue` made it PENDING again meanwhile —
    /// then start it after all.
    fn drop_ghost(&self) -> Start {
        loop {
            let s = self.state.load(Ordering::Relaxed);
            let f = flags(s);
            if f & PENDING != 0 {
                return self.start();
            }
            debug_assert!(f & LINKED != 0);
            // Release: the link goes to the next `pend` (its Acquire), after
            // our read of `next`.
            if self
                .cas_word(
                    s,
                    tagged(target_of(s), f & !LINKED),
                    ordering!("bh_ghost_relaxed", AcqRel, Relaxed),
                )
                .is_ok()
            {
                return Start::Ghost;
            }
        }
    }

    /// Transition 3. `relink`: LINKED for a bottom-half runner, which links
    /// an instance queued during the run (PENDING, not LINKED) on its own
    /// queue; 0 for a worker. Returns the old and the new word.
    pub(crate) fn finish(&self, relink: usize) -> (Word, Word) {
        // Release: pairs with the Acquire loads in `flush` and `runs`. A
        // plain load and store: only the runner writes it.
        let n = self.finished.load(Ordering::Relaxed);
        self.finished.store(
            n.wrapping_add(1),
            ordering!("work_runs_relaxed", Release, Relaxed),
        );
        loop {
            let s = self.state.load(Ordering::Relaxed);
            let f = flags(s);
            debug_assert!(f & RUNNING != 0);
            let link = if f & (PENDING | LINKED) == PENDING {
                relink
            } else {
                0
            };
            let new = tagged(target_of(s), (f & !(RUNNING | WAITED)) | link);
            // Release: pairs with the Acquire of `wait_until` (the run's
            // effects are visible when `flush`/`cancel_sync` return) and of
            // the next `pend`.
            match self.cas_word(s, new, ordering!("work_finish_relaxed", AcqRel, Relaxed)) {
                Ok(_) => {
                    if waited(s) {
                        self.done.notify();
                    }
                    return (s, new);
                }
                Err(_) => continue,
            }
        }
    }

    /// Runs the function.
    pub(crate) fn call(&self) {
        match &self.func {
            Func::Static(f) => f(self),
            // The call goes through `fn(*const (), &Work)` to a function
            // defined as `fn(&'static C, &Work)`, with `C: Sized`. Rust
            // documents `&T` and `*const U` as ABI-compatible when their
            // pointee metadata is the same (`()`, both sized; see "ABI
            // compatibility" in the `fn` primitive's docs), so this calls
            // `f` with arguments of its own types: `ctx` is the
            // `&'static C` given to `Func::erase` (valid, aligned, shared,
            // forever), cast to a raw pointer with its provenance.
            Func::Context(f, ctx) => f(*ctx, self),
            #[cfg(feature = "std")]
            Func::Boxed(f) => f(self),
        }
    }

    /// The timer deadline. Only by the owner of the link (see the field).
    pub(crate) fn deadline(&self) -> u64 {
        // SAFETY: the caller owns the link (field docs): no concurrent
        // writer.
        self.deadline_ns.with(|p| unsafe { *p })
    }

    /// Sets the timer deadline. Only by the owner of the link.
    pub(crate) fn set_deadline(&self, ns: u64) {
        // SAFETY: the caller owns the link (field docs): no other access.
        self.deadline_ns.with_mut(|p| unsafe { *p = ns });
    }
}

pub(crate) enum Grab {
    /// Neither pending nor (for `sync`) running.
    Idle,
    /// Another `cancel_sync` holds CANCELING.
    Canceling,
    /// Not pending; running, and we set CANCELING.
    Running,
    /// We took the pending instance; `running`: we set CANCELING too.
    Grabbed { running: bool },
    /// The instance is at a pool inherited across `fork()`.
    Forked,
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.load(Ordering::Relaxed);
        let fl = flags(s);
        f.debug_struct("Work")
            .field("name", &self.name)
            .field("pending", &(fl & PENDING != 0))
            .field("running", &(fl & RUNNING != 0))
            .field("canceling", &(fl & CANCELING != 0))
            .field("delayed", &(fl & DELAYED != 0))
            .field("runs", &self.runs())
            .field("coalesced", &self.coalesced())
            .finish_non_exhaustive()
    }
}
