//! `Work` and `DelayedWork`: intrusive work items and their state word.
//!
//! Design rules: the item *is* the queue node (its `next`/`prev` fields),
//! so queueing never allocates. One atomic word holds the state flags and
//! the pool of the pending (or running) instance, like Linux's
//! `work->data`; every state change is one CAS on that word. The link
//! fields belong to whoever set PENDING until the push, then to the lock of
//! the pool the word names; a worker reads what it needs (`next`) before
//! the CAS that hands the link back.

use core::fmt;
use core::ops::Deref;
use core::ptr::{self, NonNull};
use std::boxed::Box;
use std::sync::Arc;

use super::context;
use super::pool::{Place, Pool};
use super::WorkqueueError;
use crate::sync::{
    loom_const_fn, ordering, spin_wait, AtomicPtr, AtomicU32, AtomicU8, Ordering, UnsafeCell,
};
use crate::wake::WakeWord;

/// A queued instance exists: on (or being pushed onto) a list of the pool
/// in the word. Set by `queue` (1), cleared by a worker's start (2), by
/// cancel (4) and by the stop-time discard of a timer (8).
pub(super) const PENDING: usize = 1 << 0;
/// A worker is running the function. Set by start (2), cleared by finish (3).
pub(super) const RUNNING: usize = 1 << 1;
/// A `cancel_sync` waits for the running instance; `queue` is refused.
/// Never set together with PENDING. Set by (4), cleared by (5).
pub(super) const CANCELING: usize = 1 << 2;
/// The pending link holds one strong count of the item's `Arc`. Moves with
/// PENDING: to the worker at start, to the canceler at cancel.
pub(super) const HELD: usize = 1 << 3;
/// The pending instance waits for its timer (`deadline_ns`).
pub(super) const DELAYED: usize = 1 << 4;
/// Someone sleeps on `done` until the state changes; every transition
/// that can satisfy a waiter (3, 4, 5, 8) clears it and notifies.
pub(super) const WAITED: usize = 1 << 5;
/// All flag bits; a pool is aligned so that its address leaves them free.
pub(super) const FLAGS: usize = (1 << 6) - 1;

const _: () = assert!(core::mem::align_of::<Pool>() > FLAGS);

/// The flag bits of a state word.
#[inline(always)]
pub(super) fn flags(word: *mut Pool) -> usize {
    word as usize & FLAGS
}

/// The pool part of a state word (null if the item was never queued).
#[inline(always)]
pub(super) fn pool_of(word: *mut Pool) -> *mut Pool {
    // Wrapping byte arithmetic keeps the pool pointer's provenance.
    word.cast::<u8>().wrapping_sub(flags(word)).cast()
}

/// `true` if the word has an instance (pending, running or being
/// cancelled) at a pool inherited across `fork()`: nothing in this process
/// will ever run, finish or unlink it.
#[inline]
pub(super) fn inherited(s: *mut Pool) -> bool {
    let p = pool_of(s);
    flags(s) & (PENDING | RUNNING | CANCELING) != 0
        && !p.is_null()
        // SAFETY: pools are never freed (type-stable, see `pool.rs`).
        && unsafe { &*p }.is_inherited()
}

#[inline(always)]
fn tagged(pool: *mut Pool, f: usize) -> *mut Pool {
    debug_assert_eq!(f & !FLAGS, 0);
    pool.cast::<u8>().wrapping_add(f).cast()
}

/// Run numbers compared by `flush` are taken modulo 2^31 (`started`
/// counts in halves).
const RUN_MASK: u32 = u32::MAX >> 1;

/// `finished` (runs completed) has reached run number `target` (modulo
/// 2^31, within half that range).
#[inline]
fn run_reached(finished: u32, target: u32) -> bool {
    finished.wrapping_sub(target) & RUN_MASK < (RUN_MASK >> 1)
}

/// What a work item runs.
enum Func {
    Static(fn(&Work)),
    /// `func` is a `fn(&'static C, &Work)` and `ctx` the `&'static C` it
    /// was built with (`Func::erase`), for one `C: Sync`.
    Context(fn(*const (), &Work), *const ()),
    Boxed(Box<dyn Fn(&Work) + Send + Sync>),
}

impl Func {
    loom_const_fn! {
        /// Erases `C` from a context and its function.
        fn erase<C: Sync>(ctx: &'static C, func: fn(&'static C, &Work)) -> Func {
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

/// A deferred function run by a [`Workqueue`](super::Workqueue)'s worker
/// threads: it may sleep, block and allocate. Coalescing (queued twice
/// before it runs, it runs once), never concurrent with itself.
///
/// A `Work` is `static` ([`Work::new`]) or shared through an [`Arc`]
/// ([`Work::new_arc`]); either way it is its own queue node, so queueing
/// it never allocates. A queued `Arc` item keeps one strong count until
/// its run (or cancel) is over.
///
/// # State
///
/// One atomic word: the pool of the pending (or running) instance and six
/// flag bits — PENDING, RUNNING, CANCELING, HELD (the queue holds an `Arc`
/// count), DELAYED (waiting for its timer) and WAITED (someone sleeps in
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
/// 1. [`Workqueue::queue`](super::Workqueue::queue): one CAS sets PENDING
///    and the target pool (`pend`), then one CAS pushes the item onto the
///    pool's intake list. If PENDING is already set the queue is coalesced
///    (`false`; the CAS rewrites the same word, so the pending run sees
///    what the caller wrote). Refused while CANCELING. Queued while
///    RUNNING: PENDING|RUNNING; the pending instance waits (a worker that
///    meets it sets it aside) until the run is over, then runs: never
///    concurrently.
/// 2. A worker, holding its pool's lock, takes the item off the run list
///    and CASes PENDING → RUNNING (`start`); HELD moves to the worker.
/// 3. The function returned (or panicked): `finish` CASes RUNNING off; if
///    it was queued meanwhile it is PENDING again and runs next.
/// 4. [`cancel`](Work::cancel) / [`cancel_sync`](Work::cancel_sync): under
///    the pool's lock, the pending instance is unlinked and PENDING (with
///    HELD and DELAYED) cleared in one CAS; `cancel_sync` of a running item
///    sets CANCELING in the same CAS, so a re-queue from the running
///    function is refused.
/// 5. `cancel_sync` saw RUNNING clear: it clears CANCELING.
/// 6. The timer of a delayed instance expired: a worker clears DELAYED and
///    moves it to the run list.
/// 7. [`mod_delayed`](super::Workqueue::mod_delayed): the pending instance
///    is unlinked and re-linked with a new deadline (and maybe a new pool),
///    PENDING kept.
/// 8. Dropping the workqueue discards delayed instances whose timer has not
///    expired: PENDING cleared, as by cancel.
///
/// # What a worker touches after the function returns
///
/// `finished` (a load and a Release store: only the running worker writes
/// it), then the state word (the finish CAS), then — only if the item was
/// queued again onto the same pool and set aside — its links, under the
/// pool's lock. Then it drops the `Arc` count it held (a panic in that drop
/// is caught and counted like an item's).
///
/// As `finished` is stored before the finish CAS, [`flush`](Work::flush)
/// (and [`runs`](Work::runs)) may see the run finished while
/// [`is_running`](Work::is_running) is still `true` for a moment: the run's
/// effects are visible, the worker has not cleared RUNNING yet.
///
/// # Examples
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
/// 104 bytes on x86_64 Linux (96 before contexts: the function's
/// representation grew by one word, and a flag records whether the item is
/// the inside of a [`DelayedWork`]).
pub struct Work {
    /// Pool pointer | flags; see the type's docs. Every change is a CAS.
    pub(super) state: AtomicPtr<Pool>,
    /// Intake and run-list link. Written by the `queue` that set PENDING
    /// (before its push), then only under the lock of the pool in `state`.
    pub(super) next: AtomicPtr<Work>,
    /// Run-list back link: only under the pool's lock.
    pub(super) prev: AtomicPtr<Work>,
    /// Which list of the pool holds the node ([`Place`]): only under the
    /// pool's lock. `NONE` while pending means "being pushed".
    pub(super) place: AtomicU8,
    /// Flush color the node got when it entered the run list: only under
    /// the pool's lock.
    pub(super) color: AtomicU8,
    /// Timer deadline (`Host::now_ns` clock). Written by the owner of the
    /// link (`queue_delayed` before its push, `mod_delayed` under the
    /// lock), read under the pool's lock.
    deadline_ns: UnsafeCell<u64>,
    /// Twice the runs started, plus one while a start is between its two
    /// stores: `start` (the one worker starting the run) stores the odd
    /// value before its PENDING -> RUNNING CAS and the next even value
    /// after it, both Release; `flush` reads it around the state word.
    pub(super) started: AtomicU32,
    /// Runs finished. Incremented by `finish` (the running worker: a load
    /// and a Release store) before its CAS.
    pub(super) finished: AtomicU32,
    /// Queues that found the item already pending.
    coalesced: AtomicU32,
    /// `flush` and `cancel_sync` sleep here (see WAITED).
    pub(super) done: WakeWord,
    /// Immutable.
    func: Func,
    name: &'static str,
    /// This `Work` is the inside of a [`DelayedWork`]: set only by the
    /// `DelayedWork` constructors, immutable. [`DelayedWork::from_work`]
    /// relies on it.
    in_delayed: bool,
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
pub(super) enum Pend {
    /// This call set PENDING: it owns the link and must push the node.
    Queued,
    /// Already pending: the pending run covers this call.
    Coalesced,
    /// A `cancel_sync` is running.
    Canceling,
}

/// Result of `start` (transition 2).
pub(super) enum Start {
    /// PENDING → RUNNING; `held`: the run owns an `Arc` count.
    Run { held: bool },
    /// Still running (on another worker): set the instance aside.
    Collided,
}

impl Work {
    loom_const_fn! {
        /// A work item named `name` (shown in statistics) that runs `func`.
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
        /// `C: Sync`, because the function runs on a worker thread.
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
        fn with_func(name: &'static str, func: Func, in_delayed: bool) -> Work {
            Work {
                state: AtomicPtr::new(ptr::null_mut()),
                next: AtomicPtr::new(ptr::null_mut()),
                prev: AtomicPtr::new(ptr::null_mut()),
                place: AtomicU8::new(Place::NONE),
                color: AtomicU8::new(0),
                deadline_ns: UnsafeCell::new(0),
                started: AtomicU32::new(0),
                finished: AtomicU32::new(0),
                coalesced: AtomicU32::new(0),
                done: super::wake_word(),
                func,
                name,
                in_delayed,
            }
        }
    }

    /// A work item created at run time, running a closure. Queue it with
    /// `&Arc<Work>`; the queue then holds one strong count while the item
    /// is pending, so the caller may drop its own.
    ///
    /// Top-half safe: no. Allocates: yes (the `Arc` and the closure).
    /// Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let hits = Arc::new(AtomicU32::new(0));
    /// let h = Arc::clone(&hits);
    /// let w = Work::new_arc("count", move |_| {
    ///     h.fetch_add(1, Ordering::Relaxed);
    /// });
    /// let wq = Workqueue::builder("dyn").threads(1).build().unwrap();
    /// assert!(wq.queue(&w));
    /// w.flush().unwrap();
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// ```
    pub fn new_arc(name: &'static str, func: impl Fn(&Work) + Send + Sync + 'static) -> Arc<Work> {
        Arc::new(Work::with_func(name, Func::Boxed(Box::new(func)), false))
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

    /// `true` while a worker runs the function.
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
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("r").threads(0).build().unwrap();
    /// wq.queue(&W);
    /// wq.run_pending();
    /// assert_eq!(W.runs(), 1);
    /// ```
    pub fn runs(&self) -> u32 {
        // Acquire: pairs with the Release increment in `finish`.
        self.finished.load(Ordering::Acquire)
    }

    /// Queues that found the item already pending (returned `false`).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("c").threads(0).build().unwrap();
    /// assert!(wq.queue(&W));
    /// assert!(!wq.queue(&W));
    /// assert_eq!(W.coalesced(), 1);
    /// # wq.run_pending();
    /// ```
    pub fn coalesced(&self) -> u32 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Waits until the instance that is pending or running when called has
    /// finished (Linux's `flush_work`). Returns `Ok(true)` if it waited,
    /// `Ok(false)` if the item was idle. Also returns once the item is idle
    /// (a cancelled instance never runs). A pending delayed instance is
    /// waited for, timer included; [`DelayedWork::flush`] fires it first.
    /// "Finished" is the function's return: the run's effects are visible,
    /// but [`is_running`](Work::is_running) may still be `true` for a moment
    /// (the worker clears it just after; see the type's docs).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from the item's own
    /// function, or from an item of a pool that runs one item at a time
    /// (ordered, one thread, or `max_active(1)`) while this item is pending
    /// on that same pool: neither could ever finish.
    /// [`WorkqueueError::Forked`] in a child of `fork()` when the instance
    /// is in a workqueue built before the fork, whose threads do not exist
    /// here (see [`Workqueue`](super::Workqueue#fork)).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue, WorkqueueError};
    /// static W: Work = Work::new("self-flush", |w| {
    ///     assert_eq!(w.flush(), Err(WorkqueueError::WouldDeadlock));
    /// });
    /// let wq = Workqueue::builder("f").threads(1).build().unwrap();
    /// wq.queue(&W);
    /// W.flush().unwrap(); // Ok(true) if it waited, Ok(false) if the run was over
    /// assert_eq!(W.flush(), Ok(false)); // idle now: nothing to wait for
    /// ```
    pub fn flush(&self) -> Result<bool, WorkqueueError> {
        let Some((s, target)) = self.flush_target() else {
            return Ok(false);
        };
        if inherited(s) {
            return Err(WorkqueueError::Forked);
        }
        self.refuse_flush_from_here(s)?;
        self.wait_for(|s| {
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
    /// only ones reachable).
    fn flush_target(&self) -> Option<(*mut Pool, u32)> {
        let (s, started) = loop {
            let before = self.started.load(Ordering::Acquire);
            let s = self.state.load(Ordering::Acquire);
            let after = self.started.load(Ordering::Acquire);
            if after == before {
                break (s, before);
            }
            spin_wait();
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

    /// `WouldDeadlock` if a flush of the instance(s) the word `s` shows,
    /// from here, would wait for itself: from the item's own function, or
    /// from an item of a one-at-a-time pool holding the pending instance.
    fn refuse_flush_from_here(&self, s: *mut Pool) -> Result<(), WorkqueueError> {
        let ctx = context::get();
        if ptr::eq(ctx.work, self) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        if flags(s) & PENDING != 0 && !ctx.pool.is_null() && ptr::eq(ctx.pool, pool_of(s)) {
            // SAFETY: pools are never freed (type-stable, see `pool.rs`), and
            // this one is the calling worker's own.
            if unsafe { &*ctx.pool }.is_serial() {
                return Err(WorkqueueError::WouldDeadlock);
            }
        }
        Ok(())
    }

    /// Cancels a pending instance: it is unlinked and will not run. A run
    /// in progress is not waited for (use
    /// [`cancel_sync`](Work::cancel_sync)). Returns `true` if an instance
    /// was pending (Linux's `cancel_work`); `false` in a child of `fork()`
    /// for an instance in a workqueue built before the fork (it never runs
    /// there anyway).
    ///
    /// Top-half safe: no (takes the pool's worker lock for a few list
    /// moves). Allocates: no. Blocks: no, except while a `queue` on another
    /// thread is between its two CASes (a few instructions) — it is waited
    /// for.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("never", |_| panic!("cancelled work ran"));
    /// let wq = Workqueue::builder("c").threads(0).build().unwrap();
    /// wq.queue(&W);
    /// assert!(W.cancel());
    /// assert!(!W.cancel());
    /// assert_eq!(wq.run_pending(), 0);
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
    /// Concurrent `cancel_sync` calls wait for each other.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from the item's own
    /// function (it would wait for itself); nothing is cancelled then.
    /// [`WorkqueueError::Forked`] in a child of `fork()` when the instance
    /// is in a workqueue built before the fork (see
    /// [`Workqueue`](super::Workqueue#fork)).
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
        if ptr::eq(context::get().work, self) {
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
                Grab::Canceling => self.wait_for(|s| flags(s) & CANCELING == 0),
            }
        }
    }

    /// With CANCELING set by us: waits for the run, then clears CANCELING
    /// (transition 5).
    fn finish_cancel(&self) {
        self.wait_for(|s| flags(s) & RUNNING == 0);
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert!(flags(s) & CANCELING != 0 && flags(s) & PENDING == 0);
            match self.state.compare_exchange(
                s,
                tagged(pool_of(s), flags(s) & !(CANCELING | WAITED)),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if flags(s) & WAITED != 0 {
                        self.done.notify();
                    }
                    return;
                }
                Err(now) => s = now,
            }
        }
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
                if self
                    .state
                    .compare_exchange(
                        s,
                        tagged(pool_of(s), f | CANCELING),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Grab::Running;
                }
                continue;
            }
            let grabbed = Pool::with_pending(self, |pool, st, place, _| {
                // SAFETY: `place` was read under this lock with us pending
                // here.
                let node = unsafe { st.unlink(pool, self, place) };
                let old = self.update(|s| {
                    let canceling = if sync && flags(s) & RUNNING != 0 {
                        CANCELING
                    } else {
                        0
                    };
                    tagged(
                        pool_of(s),
                        (flags(s) & !(PENDING | HELD | DELAYED)) | canceling,
                    )
                });
                let running = sync && flags(old) & RUNNING != 0;
                (flags(old) & HELD != 0, running, node)
            });
            let Some((held, running, node)) = grabbed else {
                continue;
            };
            if held {
                // SAFETY: HELD: the link owned one strong count of the Arc
                // `node` came from (`WorkRef for &Arc<Work>`); we took the
                // link, so we own the count. `self` stays valid: the caller
                // borrows it.
                unsafe { release_count(node) };
            }
            return Grab::Grabbed { running };
        }
    }

    /// One CAS loop: `f` maps the current word to the new one. Clears
    /// WAITED and wakes the waiters: callers are transitions a waiter may
    /// be waiting for. Returns the old word.
    pub(super) fn update(&self, mut f: impl FnMut(*mut Pool) -> *mut Pool) -> *mut Pool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let new = f(s);
            let new = tagged(pool_of(new), flags(new) & !WAITED);
            match self
                .state
                .compare_exchange(s, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if flags(s) & WAITED != 0 {
                        self.done.notify();
                    }
                    return s;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Sleeps on `done` until `ready(word)`. Sets WAITED with the same RMW
    /// that reads the word, after taking the token: a transition after that
    /// RMW sees WAITED and notifies.
    pub(super) fn wait_for(&self, ready: impl Fn(*mut Pool) -> bool) {
        // Acquire: pairs with the Release half of the transition CASes, so
        // what the run did is visible when we return.
        if ready(
            self.state
                .load(ordering!("work_wait_relaxed", Acquire, Relaxed)),
        ) {
            return;
        }
        loop {
            let token = self.done.token();
            let mut s = self.state.load(Ordering::Acquire);
            loop {
                if ready(s) {
                    return;
                }
                if flags(s) & WAITED != 0 {
                    break;
                }
                match self.state.compare_exchange(
                    s,
                    tagged(pool_of(s), flags(s) | WAITED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => s = now,
                }
            }
            self.done.wait(token, None);
        }
    }

    /// Transition 1: set PENDING (with `extra`: HELD, DELAYED) and the
    /// target pool, or coalesce.
    #[inline]
    pub(super) fn pend(&self, pool: *mut Pool, extra: usize) -> Pend {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            let f = flags(s);
            // An instance at a pool inherited across `fork()` never runs
            // here: the item is idle for this process, and its word is
            // taken over (any `Arc` count that instance held is leaked).
            let adopt = f & (PENDING | RUNNING | CANCELING) != 0 && inherited(s);
            if f & CANCELING != 0 && !adopt {
                return Pend::Canceling;
            }
            let new = if adopt {
                // The inherited lists still hold the node: forget that
                // place before the CAS publishes the new one (a canceler
                // at the new pool reads `place` after it).
                self.place.store(Place::NONE, Ordering::Relaxed);
                tagged(pool, PENDING | extra)
            } else if f & PENDING != 0 {
                // Rewrite the same word: the start CAS that takes the
                // pending instance reads this write or a later one, so the
                // run sees what the caller wrote before this `queue`.
                s
            } else {
                tagged(pool, f | PENDING | extra)
            };
            // AcqRel: Release pairs with the Acquire of `start`; Acquire
            // pairs with the Release of the previous owner of the link (the
            // last `start` or cancel), so our writes to `next` and
            // `deadline_ns` come after its reads.
            match self.state.compare_exchange(
                s,
                new,
                ordering!("work_pend_relaxed", AcqRel, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) if f & PENDING != 0 && !adopt => {
                    self.coalesced.fetch_add(1, Ordering::Relaxed);
                    return Pend::Coalesced;
                }
                Ok(_) => return Pend::Queued,
                Err(now) => s = now,
            }
        }
    }

    /// Transition 2, under the pool's lock, the node just taken off the run
    /// list.
    pub(super) fn start(&self) -> Start {
        let mut s = self.state.load(Ordering::Relaxed);
        debug_assert!(flags(s) & PENDING != 0 && flags(s) & DELAYED == 0);
        if flags(s) & RUNNING != 0 {
            return Start::Collided;
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
        #[cfg(all(test, not(bottomhalf_loom)))]
        tests::start_window(self);
        loop {
            let f = flags(s);
            let new = tagged(pool_of(s), (f & !(PENDING | HELD)) | RUNNING);
            // Acquire: pairs with `pend`'s Release (the caller's writes
            // before `queue`). Release: publishes the odd `started` to
            // `flush`.
            match self.state.compare_exchange(
                s,
                new,
                ordering!("work_start_relaxed", AcqRel, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => {
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
                Err(now) => s = now,
            }
        }
    }

    /// Transition 3. Returns the new word (PENDING if queued meanwhile).
    pub(super) fn finish(&self) -> *mut Pool {
        // Release: pairs with the Acquire loads in `flush` and `runs`. A
        // plain load and store: only the running worker writes it.
        let n = self.finished.load(Ordering::Relaxed);
        self.finished.store(
            n.wrapping_add(1),
            ordering!("work_runs_relaxed", Release, Relaxed),
        );
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert!(flags(s) & RUNNING != 0);
            let new = tagged(pool_of(s), flags(s) & !(RUNNING | WAITED));
            // Release: pairs with the Acquire of `wait_for` (the run's
            // effects are visible when `flush`/`cancel_sync` return) and of
            // the next `pend`.
            match self.state.compare_exchange(
                s,
                new,
                ordering!("work_finish_relaxed", AcqRel, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if flags(s) & WAITED != 0 {
                        self.done.notify();
                    }
                    return new;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Transition 6: the timer expired (under the pool's lock).
    pub(super) fn fire(&self) {
        self.update(|s| tagged(pool_of(s), flags(s) & !DELAYED));
    }

    /// Transition 8: a delayed instance dropped by a stopping workqueue
    /// (under the pool's lock, node unlinked). Returns `true` if the caller
    /// now owns an `Arc` count to release.
    pub(super) fn drop_pending(&self) -> bool {
        let old = self.update(|s| tagged(pool_of(s), flags(s) & !(PENDING | HELD | DELAYED)));
        flags(old) & HELD != 0
    }

    /// Transition 7: the pending instance (unlinked, under its pool's lock)
    /// moves to `pool`, waiting for its timer if `delayed`.
    pub(super) fn retarget(&self, pool: *mut Pool, delayed: bool) {
        self.update(|s| {
            let f = flags(s) & !DELAYED;
            tagged(pool, if delayed { f | DELAYED } else { f })
        });
    }

    /// Runs the function.
    pub(super) fn call(&self) {
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
            Func::Boxed(f) => f(self),
        }
    }

    /// The timer deadline. Only by the owner of the link (see the field).
    pub(super) fn deadline(&self) -> u64 {
        // SAFETY: the caller owns the link (field docs): no concurrent
        // writer.
        self.deadline_ns.with(|p| unsafe { *p })
    }

    /// Sets the timer deadline. Only by the owner of the link.
    pub(super) fn set_deadline(&self, ns: u64) {
        // SAFETY: the caller owns the link (field docs): no other access.
        self.deadline_ns.with_mut(|p| unsafe { *p = ns });
    }
}

enum Grab {
    /// Neither pending nor (for `sync`) running.
    Idle,
    /// Another `cancel_sync` holds CANCELING.
    Canceling,
    /// Not pending; running, and we set CANCELING.
    Running,
    /// We unlinked the pending instance; `running`: we set CANCELING too.
    Grabbed { running: bool },
    /// The instance is at a pool inherited across `fork()`.
    Forked,
}

/// Drops one strong count of the `Arc<Work>` that `node` points into.
///
/// # Safety
///
/// `node` came from `Arc::as_ptr` of an `Arc<Work>` (or of an
/// `Arc<DelayedWork>`, same layout) and the caller owns one count of it.
pub(super) unsafe fn release_count(node: NonNull<Work>) {
    // SAFETY: per the contract; `DelayedWork` is `repr(transparent)` over
    // `Work`, so an `Arc<DelayedWork>` pointer is a valid `Arc<Work>` one.
    drop(unsafe { Arc::from_raw(node.as_ptr().cast_const()) });
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

/// A [`Work`] whose queueing may be delayed by a timer
/// ([`Workqueue::queue_delayed`](super::Workqueue::queue_delayed),
/// [`mod_delayed`](super::Workqueue::mod_delayed)). Derefs to its
/// [`Work`]: `cancel`, `cancel_sync`, `is_pending` and the counters are the
/// work's; [`flush`](DelayedWork::flush) fires a pending timer first.
///
/// The timer is kept by the pool's workers (a sorted list; a sleeping
/// worker's wait times out at the earliest deadline), not by a separate
/// timer thread, so a delayed item becomes runnable when a worker of its
/// pool is free after the deadline.
///
/// # Examples
///
/// ```
/// use bottomhalf::{DelayedWork, Workqueue};
/// use std::time::{Duration, Instant};
///
/// static DEBOUNCE: DelayedWork = DelayedWork::new("debounce", |_| {});
/// let wq = Workqueue::builder("timers").threads(1).build().unwrap();
/// let t0 = Instant::now();
/// assert_eq!(wq.queue_delayed(&DEBOUNCE, Duration::from_millis(20)), Ok(true));
/// // Another key press: push the deadline back.
/// assert_eq!(wq.mod_delayed(&DEBOUNCE, Duration::from_millis(30)), Ok(true));
/// DEBOUNCE.work().flush().unwrap();
/// assert!(t0.elapsed() >= Duration::from_millis(30));
/// ```
#[repr(transparent)]
pub struct DelayedWork {
    work: Work,
}

impl DelayedWork {
    loom_const_fn! {
        /// A delayed work item named `name` that runs `func`.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// static D: bottomhalf::DelayedWork = bottomhalf::DelayedWork::new("d", |_| {});
        /// assert_eq!(D.name(), "d");
        /// ```
        pub fn new(name: &'static str, func: fn(&Work)) -> DelayedWork {
            DelayedWork { work: Work::with_func(name, Func::Static(func), true) }
        }
    }

    loom_const_fn! {
        /// A delayed work item named `name` that runs `func(ctx, work)`
        /// (see [`Work::with_context`]). From the `&Work` it gets, `func`
        /// reaches this `DelayedWork` with [`from_work`](DelayedWork::from_work),
        /// to re-arm it.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// A debounced button per instance, one function for all:
        ///
        /// ```
        /// use bottomhalf::{DelayedWork, Work, Workqueue};
        /// use std::sync::atomic::{AtomicU32, Ordering};
        /// use std::time::Duration;
        ///
        /// struct Button {
        ///     presses: AtomicU32,
        ///     debounce: DelayedWork,
        /// }
        /// fn settle(button: &'static Button, _: &Work) {
        ///     button.presses.fetch_add(1, Ordering::Relaxed);
        /// }
        /// static POWER: Button = Button {
        ///     presses: AtomicU32::new(0),
        ///     debounce: DelayedWork::with_context("power-debounce", &POWER, settle),
        /// };
        ///
        /// let wq = Workqueue::builder("buttons").threads(1).build().unwrap();
        /// // Three edges of one bouncing press: the timer restarts each time.
        /// for _ in 0..3 {
        ///     wq.mod_delayed(&POWER.debounce, Duration::from_millis(5)).unwrap();
        /// }
        /// POWER.debounce.work().flush().unwrap();
        /// assert_eq!(POWER.presses.load(Ordering::Relaxed), 1);
        /// ```
        pub fn with_context<C: Sync>(
            name: &'static str,
            ctx: &'static C,
            func: fn(&'static C, &Work),
        ) -> DelayedWork {
            DelayedWork { work: Work::with_func(name, Func::erase(ctx, func), true) }
        }
    }

    /// The `DelayedWork` that `work` is the inside of, or `None` for a
    /// plain [`Work`] (Linux's `to_delayed_work`, which trusts the caller;
    /// this one checks). The result borrows for as long as `work` does: a
    /// `&'static Work` gives a `&'static DelayedWork`, which
    /// [`queue_delayed`](super::Workqueue::queue_delayed) accepts.
    ///
    /// A work function gets its `&Work` for the call only (the item may be
    /// an `Arc`), so to re-arm its own `static` item it needs a `'static`
    /// handle: bind one as its context
    /// ([`DelayedWork::with_context`], with the item itself or the device
    /// that holds it as the context). Within the call, `from_work` tells
    /// the function which kind of item runs it and gives it the
    /// `DelayedWork` methods ([`is_timer_pending`](DelayedWork::is_timer_pending)).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// A table of `&'static Work` items, some of them delayed: "kick all"
    /// queues the delayed ones with their delay, the others at once.
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Work, Workqueue};
    /// use std::time::Duration;
    ///
    /// static POLL: DelayedWork = DelayedWork::new("poll", |_| {});
    /// static LOG: Work = Work::new("log", |_| {});
    /// static ALL: [&Work; 2] = [POLL.work(), &LOG];
    ///
    /// let wq = Workqueue::builder("kick").threads(0).build().unwrap();
    /// for &work in &ALL {
    ///     match DelayedWork::from_work(work) {
    ///         Some(delayed) => wq.queue_delayed(delayed, Duration::from_secs(60)).unwrap(),
    ///         None => wq.queue(work),
    ///     };
    /// }
    /// assert!(POLL.is_timer_pending());
    /// assert!(LOG.is_pending() && !POLL.work().is_running());
    /// assert!(DelayedWork::from_work(&LOG).is_none());
    /// # assert!(POLL.cancel());
    /// ```
    pub fn from_work(work: &Work) -> Option<&DelayedWork> {
        if work.in_delayed {
            // `in_delayed` is set only by the `DelayedWork` constructors,
            // and a `DelayedWork` never gives its `Work` away by value (no
            // `into_inner`, no `DerefMut`, the field is private), so `work`
            // points at the `work` field of a live `DelayedWork`.
            let delayed = ptr::from_ref(work).cast::<DelayedWork>();
            // SAFETY: as above, `delayed` is a live `DelayedWork`, which is
            // `repr(transparent)` over `Work`: same address, size and
            // layout; the reference covers the same bytes for the same life.
            Some(unsafe { &*delayed })
        } else {
            None
        }
    }

    /// A delayed work item created at run time (see [`Work::new_arc`]).
    ///
    /// Top-half safe: no. Allocates: yes. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Workqueue};
    /// use std::time::Duration;
    /// let d = DelayedWork::new_arc("later", |_| {});
    /// let wq = Workqueue::builder("t").threads(1).build().unwrap();
    /// assert_eq!(wq.queue_delayed(&d, Duration::from_millis(1)), Ok(true));
    /// d.flush().unwrap();
    /// assert_eq!(d.runs(), 1);
    /// ```
    pub fn new_arc(
        name: &'static str,
        func: impl Fn(&Work) + Send + Sync + 'static,
    ) -> Arc<DelayedWork> {
        Arc::new(DelayedWork {
            work: Work::with_func(name, Func::Boxed(Box::new(func)), true),
        })
    }

    /// The work item inside.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// static D: bottomhalf::DelayedWork = bottomhalf::DelayedWork::new("d", |_| {});
    /// let w: &'static bottomhalf::Work = D.work();
    /// assert_eq!(w.name(), "d");
    /// ```
    pub const fn work(&self) -> &Work {
        &self.work
    }

    /// `true` while a pending instance waits for its timer.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Workqueue};
    /// use std::time::Duration;
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// let wq = Workqueue::builder("t").threads(1).build().unwrap();
    /// wq.queue_delayed(&D, Duration::from_secs(60)).unwrap();
    /// assert!(D.is_timer_pending());
    /// assert!(D.cancel());
    /// assert!(!D.is_timer_pending());
    /// ```
    pub fn is_timer_pending(&self) -> bool {
        flags(self.work.state.load(Ordering::Relaxed)) & (PENDING | DELAYED) == PENDING | DELAYED
    }

    /// Fires a pending timer now, then waits like [`Work::flush`] (Linux's
    /// `flush_delayed_work`).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// As [`Work::flush`].
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Workqueue};
    /// use std::time::{Duration, Instant};
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// let wq = Workqueue::builder("t").threads(1).build().unwrap();
    /// let t0 = Instant::now();
    /// wq.queue_delayed(&D, Duration::from_secs(60)).unwrap();
    /// assert_eq!(D.flush(), Ok(true));
    /// assert!(t0.elapsed() < Duration::from_secs(60));
    /// assert_eq!(D.runs(), 1);
    /// ```
    pub fn flush(&self) -> Result<bool, WorkqueueError> {
        // Refused before the timer is fired: a refused flush changes
        // nothing.
        let s = self.work.state.load(Ordering::Acquire);
        if inherited(s) {
            return Err(WorkqueueError::Forked);
        }
        self.work.refuse_flush_from_here(s)?;
        if flags(s) & DELAYED != 0 {
            Pool::fire_now(&self.work);
        }
        self.work.flush()
    }
}

impl Deref for DelayedWork {
    type Target = Work;

    fn deref(&self) -> &Work {
        &self.work
    }
}

impl fmt::Debug for DelayedWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DelayedWork").field(&self.work).finish()
    }
}

/// How the queue holds a work item: a `&'static Work` (nothing to own) or
/// an `&Arc<Work>` (the queue takes one strong count while the item is
/// pending). Implemented for those two only.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Work, Workqueue};
/// static S: Work = Work::new("static", |_| {});
/// let d = Work::new_arc("dynamic", |_| {});
/// let wq = Workqueue::builder("refs").threads(0).build().unwrap();
/// assert!(wq.queue(&S));
/// assert!(wq.queue(&d));
/// assert_eq!(wq.run_pending(), 2);
/// ```
pub trait WorkRef: sealed::Sealed {
    #[doc(hidden)]
    fn link(self) -> Link;
}

/// How the queue holds a delayed work item: `&'static DelayedWork` or
/// `&Arc<DelayedWork>`.
///
/// # Examples
///
/// ```
/// use bottomhalf::{DelayedWork, Workqueue};
/// use std::time::Duration;
/// static S: DelayedWork = DelayedWork::new("static", |_| {});
/// let d = DelayedWork::new_arc("dynamic", |_| {});
/// let wq = Workqueue::builder("drefs").threads(0).build().unwrap();
/// assert_eq!(wq.queue_delayed(&S, Duration::ZERO), Ok(true));
/// assert_eq!(wq.queue_delayed(&d, Duration::ZERO), Ok(true));
/// assert_eq!(wq.run_pending(), 2);
/// ```
pub trait DelayedWorkRef: sealed::Sealed {
    #[doc(hidden)]
    fn link(self) -> Link;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &'static super::Work {}
    impl Sealed for &std::sync::Arc<super::Work> {}
    impl Sealed for &'static super::DelayedWork {}
    impl Sealed for &std::sync::Arc<super::DelayedWork> {}
}

/// A node pointer with the provenance the queue needs, and whether the
/// queue must take a strong count.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub(super) node: NonNull<Work>,
    pub(super) arc: bool,
}

impl Link {
    pub(super) fn work(&self) -> &Work {
        // SAFETY: `node` comes from a live `&'static` or a borrowed `Arc`,
        // both alive for the caller's borrow of the link's source.
        unsafe { self.node.as_ref() }
    }

    /// Gives the list one strong count (for an `Arc` link). Called by the
    /// `queue` that set PENDING|HELD.
    pub(super) fn take_count(&self) {
        if self.arc {
            // SAFETY: `node` is `Arc::as_ptr` of an `Arc` the caller still
            // borrows, so the allocation is alive; incrementing does not
            // allocate.
            unsafe { Arc::increment_strong_count(self.node.as_ptr().cast_const()) };
        }
    }
}

impl WorkRef for &'static Work {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::from(self),
            arc: false,
        }
    }
}

impl WorkRef for &Arc<Work> {
    #[inline]
    fn link(self) -> Link {
        Link {
            // `as_ptr` keeps the provenance of the whole allocation, which
            // `Arc::from_raw` needs when the count is released.
            node: NonNull::new(Arc::as_ptr(self).cast_mut()).expect("Arc pointers are non-null"),
            arc: true,
        }
    }
}

impl DelayedWorkRef for &'static DelayedWork {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::from(&self.work),
            arc: false,
        }
    }
}

impl DelayedWorkRef for &Arc<DelayedWork> {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::new(Arc::as_ptr(self).cast_mut().cast::<Work>())
                .expect("Arc pointers are non-null"),
            arc: true,
        }
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    //! The `flush` window of issue 8, item 13, held open with a test hook.
    use super::*;
    use crate::workqueue::Workqueue;
    use core::sync::atomic::{AtomicPtr as StdPtr, AtomicU32 as StdU32, Ordering::SeqCst};
    use core::time::Duration;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    /// The item whose next `start` stops in its window (between its
    /// `started` store and its PENDING -> RUNNING CAS), null for none.
    static HOOKED: StdPtr<Work> = StdPtr::new(ptr::null_mut());
    /// 0: idle; 1: the hooked start is in its window; 2: let it go.
    static GATE: StdU32 = StdU32::new(0);
    /// The hook is process-wide: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Called by `start` in its window.
    pub(super) fn start_window(w: &Work) {
        if HOOKED
            .compare_exchange(ptr::from_ref(w).cast_mut(), ptr::null_mut(), SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        GATE.store(1, SeqCst);
        while GATE.load(SeqCst) != 2 {
            std::thread::sleep(Duration::from_micros(100));
        }
        GATE.store(0, SeqCst);
    }

    fn hook(w: &'static Work) {
        GATE.store(0, SeqCst);
        HOOKED.store(ptr::from_ref(w).cast_mut(), SeqCst);
    }

    /// Waits until `cond`, at most `limit`.
    fn within(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let t0 = Instant::now();
        while !cond() {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// A flusher has gone to sleep on `w` (it set WAITED).
    fn flusher_waits(w: &Work) -> bool {
        within(Duration::from_secs(10), || {
            flags(w.state.load(Ordering::Relaxed)) & WAITED != 0
        })
    }

    const PERIOD: Duration = Duration::from_secs(3);

    static PERIODIC_WQ: OnceLock<Workqueue> = OnceLock::new();
    static PERIODIC: DelayedWork = DelayedWork::new("periodic", |_| {
        // Re-arms itself: the next instance runs a whole period later.
        let _ = PERIODIC_WQ.get().unwrap().queue_delayed(&PERIODIC, PERIOD);
    });

    /// Item 13: a flush that lands in the window of a periodic item's start
    /// waits for that run, not for the next period's.
    #[test]
    // Real threads, sleeps and a 3 s period: too slow under miri.
    #[cfg_attr(miri, ignore)]
    fn flush_in_the_start_window_waits_for_the_starting_run_not_the_next_period() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let wq =
            PERIODIC_WQ.get_or_init(|| Workqueue::builder("period").threads(2).build().unwrap());
        hook(&PERIODIC);
        assert_eq!(wq.queue_delayed(&PERIODIC, Duration::ZERO), Ok(true));
        assert!(within(Duration::from_secs(10), || GATE.load(SeqCst) == 1));
        // The worker is in the window: `started` counts run 1, the word
        // still says PENDING. Flush now.
        let flusher = std::thread::spawn(|| {
            let t0 = Instant::now();
            let r = PERIODIC.work().flush();
            (r, t0.elapsed(), PERIODIC.runs())
        });
        assert!(flusher_waits(&PERIODIC), "the flusher never waited");
        GATE.store(2, SeqCst);
        let (r, waited, runs) = flusher.join().unwrap();
        std::println!("flush in the start window of a {PERIOD:?}-periodic item waited {waited:?}, runs at return {runs}");
        assert_eq!(r, Ok(true));
        assert_eq!(runs, 1, "flush waited for the next period's run");
        assert!(
            waited < PERIOD / 2,
            "flush waited {waited:?}: a whole period"
        );
        assert_eq!(PERIODIC.cancel_sync(), Ok(true));
    }

    static ONE_WQ: OnceLock<Workqueue> = OnceLock::new();
    static OTHER_WQ: OnceLock<Workqueue> = OnceLock::new();
    static PING: Work = Work::new("ping", |w| {
        // Its first run queues the next instance onto the one-thread queue.
        if w.runs() == 0 {
            let _ = ONE_WQ.get().unwrap().queue(&PING);
        }
    });
    static FLUSHED: StdU32 = StdU32::new(0);
    static FLUSHER: Work = Work::new("flusher", |_| {
        let r = PING.flush();
        FLUSHED.store(if r == Ok(true) { 1 } else { 2 }, SeqCst);
    });

    /// Item 13: an item of a one-thread queue flushes an item that is in its
    /// start window on another queue and whose run queues its next instance
    /// onto the flusher's queue. The flush must return after the starting
    /// run; waiting for the next instance (behind the flusher) deadlocks.
    #[test]
    // Real threads, sleeps and a 3 s period: too slow under miri.
    #[cfg_attr(miri, ignore)]
    fn flush_in_the_start_window_from_a_one_thread_queue_does_not_deadlock() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let one = ONE_WQ.get_or_init(|| Workqueue::builder("one").threads(1).build().unwrap());
        let other =
            OTHER_WQ.get_or_init(|| Workqueue::builder("other").threads(1).build().unwrap());
        hook(&PING);
        assert!(other.queue(&PING));
        assert!(within(Duration::from_secs(10), || GATE.load(SeqCst) == 1));
        assert!(one.queue(&FLUSHER));
        assert!(flusher_waits(&PING), "the flusher never waited");
        let t0 = Instant::now();
        GATE.store(2, SeqCst);
        // Watchdog: a deadlock shows as a timeout, not a hung test.
        let done = within(Duration::from_secs(10), || FLUSHED.load(SeqCst) != 0);
        std::println!(
            "flush from a one-thread queue in the start window: returned {done} after {:?}",
            t0.elapsed()
        );
        assert!(
            done,
            "deadlock: the flush waited for the instance queued behind it"
        );
        assert_eq!(FLUSHED.load(SeqCst), 1);
        assert_eq!(one.flush(), Ok(()));
        assert_eq!(PING.runs(), 2);
    }
}
