//! Delayed work in a runtime's bottom half: [`DelayedWork`] queued with
//! [`Runtime::queue_delayed_work`] (Zephyr's `k_work_schedule`: an
//! instance already pending keeps its deadline) or
//! [`Runtime::mod_delayed_work`] (Zephyr's `k_work_reschedule`, Linux's
//! `mod_delayed_work`: the deadline moves to now + delay, earlier or later).
//!
//! # Design
//!
//! Each level of each CPU has a [`Timers`] (a field of its `LevelState`,
//! next to its [`BhQueue`]): a lock-free intake of delayed nodes, a sorted
//! timer list that only that level's drain touches, and a *re-arm* flag.
//! The item's state word names the level's [`BhQueue`] as its target, as
//! for plain work, with DELAYED set while the instance waits for its timer,
//! so `cancel`, `cancel_sync`, `flush` and the LINKED/ghost rules of
//! [`bh`](super::bh) apply unchanged.
//!
//! - **Deadline requests.** The timer list's sort key (`Work::deadline_ns`)
//!   belongs to the drain. Every caller that sets a deadline writes it into
//!   the item's *request*, a seqlock in the [`DelayedWork`] (a sequence
//!   word and two 32-bit halves: thumbv7m has no 64-bit atomics). A writer
//!   takes the lock with one CAS and never spins: if another context holds
//!   it, that context's deadline wins (**concurrent schedules or
//!   reschedules of one item: one of their deadlines is kept**). The drain
//!   consumes a request (clears its FRESH bit with a CAS that also proves
//!   no writer came between) when it files a node from the intake, walks
//!   the list on a re-arm, or is about to fire a node; a request held by a
//!   writer (the drain preempted it) is left for the writer's own poke.
//! - **Order of a queue.** `mod_delayed_work` writes the request first,
//!   then pends the item (one CAS, as [`Runtime::queue_work`]): the idle
//!   item is pushed on the level's timer intake; a pending one (on the
//!   timer list, or on the intake) is *poked*: the re-arm flag is set and
//!   vector 6 raised on the CPU/level where it is linked; that drain walks
//!   its list, re-reads the requests and re-sorts. `queue_delayed_work`
//!   does the same, but writes no request when it finds the item already
//!   pending (it keeps the existing deadline).
//! - **Firing.** A due node's request is checked first (a fresh one
//!   re-sorts it instead); then one CAS clears DELAYED and the node moves,
//!   still LINKED, to the level's [`BhQueue`] intake, which the same drain
//!   runs right after, in deadline order (ties: queue order; the insertion
//!   is stable). A node cancelled while on the list is a ghost: dropped
//!   when it fires or at the next re-arm walk. A cancelled item queued
//!   again while its ghost is still on a timer list is covered where it is
//!   (as for plain work) and poked.
//! - **Running items.** An item (re)scheduled while it runs is made
//!   PENDING|DELAYED without being linked; the drain running it relinks it
//!   on its work queue when the run ends, whose `start` sees DELAYED and
//!   hands the node to the timer intake (`Start::Delayed`): it runs again
//!   after its deadline, never concurrently.
//! - **An instance that has already fired** (moved to run) is not moved
//!   back by `mod_delayed_work`: it runs now, once.
//! - **The hook.** After each pass the drain calls
//!   [`Backend::arm_timer`] with the earliest deadline of that CPU/level
//!   when it changed (`u64::MAX`: none left). The board's timer interrupt
//!   calls [`Runtime::timer_fired`], which raises vector 6 at the levels
//!   of the current CPU that have delayed work. `Host`/`Signals` drain
//!   threads sleep at most until the earliest deadline of their CPU. A
//!   backend without a hook fires due timers at the next drain of vector 6
//!   at that level.
//! - **Cost.** A firmware that never queues delayed work does not link any
//!   of this: the drain reaches it through a function pointer stored by
//!   the first delayed queue on that level.
//!
//! # Atomic orderings
//!
//! | mutant | ordering | protects |
//! | --- | --- | --- |
//! | `timer_req_lock_relaxed` | request lock CAS, Acquire | pairs with the drain's AcqRel consume CAS: a writer that locks after the drain consumed does not overwrite the halves the drain read |
//! | `timer_req_post_relaxed` | request unlock store, Release | with `timer_req_take_relaxed`: the halves are visible to the drain that sees FRESH |
//! | `timer_req_take_relaxed` | drain's load of the sequence, Acquire | the Acquire half of the above |
//! | `timer_push_relaxed` | timer intake push CAS, Release | with `timer_take_relaxed`: the node's `next` and word are visible to the drain |
//! | `timer_take_relaxed` | timer intake swap, Acquire | the Acquire half |
//! | `timer_rearm_relaxed` | re-arm flag store, Release / swap, Acquire | a poked drain sees the request the poker wrote (the raise that follows is SeqCst as well) |

use core::ptr;
use core::time::Duration;

use super::bh::BhQueue;
use super::{
    flags, kind_of, tagged, target_of, Func, Pend, Target, Word, Work, DELAYED, LINKED, PENDING,
};
use crate::backend::Backend;
use crate::level::Level;
use crate::softirq::{CpuState, Runtime, Vector};
use crate::stats::Misuse;
use crate::sync::{
    loom_const_fn, ordering, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering,
};
use crate::tasklet::TaskletRuntime;
use crate::WorkqueueError;

/// The request's lock bit (a writer is between its CAS and its store).
const LOCK: u32 = 1;
/// The request holds a deadline no drain has consumed.
const FRESH: u32 = 2;
/// The sequence's step per write.
const STEP: u32 = 4;

/// A deadline request: a seqlock over two 32-bit halves.
pub(crate) struct Request {
    seq: AtomicU32,
    lo: AtomicU32,
    hi: AtomicU32,
}

/// What the drain found in a request.
enum Taken {
    /// A fresh deadline, now consumed.
    Fresh(u64),
    /// Nothing new.
    Stale,
    /// A writer holds it: keep the old deadline, its poke comes back.
    Busy,
}

impl Request {
    loom_const_fn! {
        pub(crate) fn new() -> Request {
            Request {
                seq: AtomicU32::new(0),
                lo: AtomicU32::new(0),
                hi: AtomicU32::new(0),
            }
        }
    }

    /// Writes `ns` unless another writer holds the lock (then its deadline
    /// wins). Never spins: a CAS lost to the drain clearing FRESH is
    /// retried, at most once per drain consume.
    fn post(&self, ns: u64) {
        let mut s = self.seq.load(Ordering::Relaxed);
        loop {
            if s & LOCK != 0 {
                return;
            }
            // Acquire: pairs with the drain's consume CAS (Release): the
            // drain's reads of the halves come before our writes.
            match self.seq.compare_exchange(
                s,
                s | LOCK,
                ordering!("timer_req_lock_relaxed", Acquire, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.lo.store(ns as u32, Ordering::Relaxed);
        self.hi.store((ns >> 32) as u32, Ordering::Relaxed);
        // Release: publishes the halves to the drain's Acquire load. A
        // swap (only the lock holder writes now) for loom, as above.
        let _ = self.seq.swap(
            ((s & !(LOCK | FRESH)).wrapping_add(STEP)) | FRESH,
            ordering!("timer_req_post_relaxed", Release, Relaxed),
        );
    }

    /// The drain's read (see [`Taken`]).
    fn take(&self) -> Taken {
        let s = self
            .seq
            .load(ordering!("timer_req_take_relaxed", Acquire, Relaxed));
        if s & LOCK != 0 {
            return Taken::Busy;
        }
        if s & FRESH == 0 {
            return Taken::Stale;
        }
        let ns = u64::from(self.lo.load(Ordering::Relaxed))
            | (u64::from(self.hi.load(Ordering::Relaxed)) << 32);
        // AcqRel: success proves no writer locked since our load (its CAS
        // would have changed `seq`), so the halves are one write's.
        match self
            .seq
            .compare_exchange(s, s & !FRESH, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Taken::Fresh(ns),
            Err(_) => Taken::Busy,
        }
    }
}

/// A [`Work`] with a timer: queued with a delay to a runtime's bottom half
/// ([`Runtime::queue_delayed_work`], [`Runtime::mod_delayed_work`]) or, with
/// `std`, to a workqueue
/// (`Workqueue::queue_delayed`/`mod_delayed`). Derefs to its [`Work`]:
/// `cancel`, `cancel_sync`, `is_pending` and the counters are the work's;
/// [`flush`](DelayedWork::flush) fires a pending timer first.
///
/// On a workqueue the timer is kept by the pool's workers (a sorted list;
/// a sleeping worker's wait times out at the earliest deadline). In a
/// bottom half it is kept by the drain of the item's level on the CPU it
/// was queued to (see [`Runtime::queue_delayed_work`]).
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, DelayedWork, Host, Runtime};
/// use std::time::Duration;
///
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// static DEBOUNCE: DelayedWork = DelayedWork::new("debounce", |_| {});
///
/// assert!(RT.queue_delayed_work(&DEBOUNCE, Duration::from_millis(20)));
/// // Another key press: push the deadline back.
/// assert!(RT.mod_delayed_work(&DEBOUNCE, Duration::from_millis(30)));
/// assert!(DEBOUNCE.is_timer_pending());
/// DEBOUNCE.flush().unwrap(); // fires it now, runs it here
/// assert_eq!(DEBOUNCE.runs(), 1);
/// ```
#[repr(transparent)]
pub struct DelayedWork {
    /// The whole item (`repr(transparent)`): a `&Work` of a `DelayedWork`
    /// is one to it, with the same extent. Its deadline request is the
    /// `Work`'s `req` field.
    pub(crate) work: Work,
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
            DelayedWork::with_func(name, Func::Static(func))
        }
    }

    loom_const_fn! {
        pub(crate) fn with_func(name: &'static str, func: Func) -> DelayedWork {
            DelayedWork { work: Work::with_func(name, func, true) }
        }
    }

    loom_const_fn! {
        /// A delayed work item named `name` that runs `func(ctx, work)`
        /// (see [`Work::with_context`]). From the `&Work` it gets, `func`
        /// reaches this `DelayedWork` with [`from_work`](DelayedWork::from_work).
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// A debounced button per instance, one function for all:
        ///
        /// ```
        /// use bottomhalf::{Config, DelayedWork, Host, Runtime, Work};
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
        /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        ///
        /// // Three edges of one bouncing press: the timer restarts each time.
        /// for _ in 0..3 {
        ///     RT.mod_delayed_work(&POWER.debounce, Duration::from_millis(5));
        /// }
        /// POWER.debounce.flush().unwrap();
        /// assert_eq!(POWER.presses.load(Ordering::Relaxed), 1);
        /// ```
        pub fn with_context<C: Sync>(
            name: &'static str,
            ctx: &'static C,
            func: fn(&'static C, &Work),
        ) -> DelayedWork {
            DelayedWork::with_func(name, Func::erase(ctx, func))
        }
    }

    /// The `DelayedWork` that `work` is the inside of, or `None` for a
    /// plain [`Work`] (Linux's `to_delayed_work`, which trusts the caller;
    /// this one checks). The result borrows for as long as `work` does.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Work};
    /// static POLL: DelayedWork = DelayedWork::new("poll", |_| {});
    /// static LOG: Work = Work::new("log", |_| {});
    /// assert!(DelayedWork::from_work(POLL.work()).is_some());
    /// assert!(DelayedWork::from_work(&LOG).is_none());
    /// ```
    pub fn from_work(work: &Work) -> Option<&DelayedWork> {
        if work.in_delayed {
            // `in_delayed` is set only by the `DelayedWork` constructors,
            // and a `DelayedWork` never gives its `Work` away by value (no
            // `into_inner`, no `DerefMut`, the field is private to the
            // crate), so `work` points at the `work` field of a live
            // `DelayedWork`, its first field (`repr(C)`).
            let delayed = ptr::from_ref(work).cast::<DelayedWork>();
            // SAFETY: as above, `delayed` is a live `DelayedWork` at the
            // same address; the reference covers it for the same life.
            Some(unsafe { &*delayed })
        } else {
            None
        }
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
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// assert!(!D.is_timer_pending());
    /// RT.queue_delayed_work(&D, Duration::from_secs(60));
    /// assert!(D.is_timer_pending());
    /// assert!(D.cancel());
    /// ```
    pub fn is_timer_pending(&self) -> bool {
        flags(self.work.state.load(Ordering::Relaxed)) & (PENDING | DELAYED) == PENDING | DELAYED
    }

    /// Fires a pending timer now, then waits for the run as
    /// [`Work::flush`] does (Linux's `flush_delayed_work`). In a bottom
    /// half the timer is moved to "now" and the level's drain poked; the
    /// wait drains the current CPU if the item is queued there.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// As [`Work::flush`]; a refused flush fires nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// RT.queue_delayed_work(&D, Duration::from_secs(3600));
    /// assert_eq!(D.flush(), Ok(true)); // does not wait an hour
    /// assert_eq!(D.runs(), 1);
    /// ```
    pub fn flush(&self) -> Result<bool, WorkqueueError> {
        let s = self.work.state.load(Ordering::Acquire);
        self.work.refuse_flush_from_here(s)?;
        if flags(s) & DELAYED != 0 {
            if kind_of(s) == Some(Target::BH) {
                self.work.req.post(0);
                poke_word(self.work.state.load(Ordering::Acquire));
            } else {
                #[cfg(feature = "std")]
                crate::workqueue::fire_pooled(&self.work);
            }
        }
        self.work.flush()
    }
}

impl core::ops::Deref for DelayedWork {
    type Target = Work;

    fn deref(&self) -> &Work {
        &self.work
    }
}

impl core::fmt::Debug for DelayedWork {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("DelayedWork").field(&self.work).finish()
    }
}

/// The erased drain and poke of a level's timers: `fn(home, cpu, lvl,
/// poke)`; see `timed`.
type TimedFn = fn(*const (), usize, usize, bool) -> bool;

/// One level's timers on one CPU (module docs).
pub(crate) struct Timers {
    /// `timed::<B, N, L>` erased; null until the first delayed queue here.
    timed: AtomicPtr<()>,
    /// The runtime, erased; with `timed`.
    home: AtomicPtr<()>,
    /// `cpu << 3 | level` of this level; with `timed`.
    at: AtomicUsize,
    /// Delayed nodes to file, most recent first (any context pushes, the
    /// drain swaps).
    intake: AtomicPtr<Work>,
    /// The sorted timer list (through `Work::next`); only this level's
    /// drain touches it.
    head: AtomicPtr<Work>,
    /// A poke: walk the list, re-read the requests.
    rearm: AtomicBool,
    /// The last armed deadline (drain-written halves; `u64::MAX`: none),
    /// read by the drain threads. Stored complemented, so that "none" is
    /// zero and a new runtime stays all zero bytes (`.bss`).
    next_lo: AtomicU32,
    next_hi: AtomicU32,
}

impl Timers {
    loom_const_fn! {
        pub(crate) fn new() -> Timers {
            Timers {
                timed: AtomicPtr::new(ptr::null_mut()),
                home: AtomicPtr::new(ptr::null_mut()),
                at: AtomicUsize::new(0),
                intake: AtomicPtr::new(ptr::null_mut()),
                head: AtomicPtr::new(ptr::null_mut()),
                rearm: AtomicBool::new(false),
                next_lo: AtomicU32::new(0),
                next_hi: AtomicU32::new(0),
            }
        }
    }

    /// The drain's part (vector 6, after the tasklets, before the level's
    /// work queue runs): nothing but a load when no delayed work was ever
    /// queued here; else files, re-sorts and fires the timers (the fired
    /// ones go to the work queue's intake). Returns `true` if the timer
    /// intake is left non-empty (another pass is needed).
    #[inline(always)]
    pub(crate) fn run(&self, home: *const (), cpu: usize, lvl: usize) -> bool {
        // Acquire: pairs with the Release store in `attach` (the raise
        // hand-off orders it as well).
        let f = self.timed.load(Ordering::Acquire);
        if f.is_null() {
            return false;
        }
        // SAFETY: a non-null `timed` is a `TimedFn` stored by `attach`
        // (function and data pointers have one size on every target).
        let f = unsafe { core::mem::transmute::<*mut (), TimedFn>(f) };
        f(home, cpu, lvl, false)
    }

    /// The earliest armed deadline, `u64::MAX` if none.
    pub(crate) fn next_deadline(&self) -> u64 {
        loop {
            let hi = self.next_hi.load(Ordering::Acquire);
            let lo = self.next_lo.load(Ordering::Acquire);
            if self.next_hi.load(Ordering::Acquire) == hi {
                return !(u64::from(lo) | (u64::from(hi) << 32));
            }
        }
    }

    /// `true` once delayed work was queued at this level.
    pub(crate) fn in_use(&self) -> bool {
        !self.timed.load(Ordering::Relaxed).is_null()
    }

    /// Rearm request and vector 6 on this level's CPU (top-half safe).
    fn poke(&self) {
        let f = self.timed.load(Ordering::Acquire);
        let home = self.home.load(Ordering::Relaxed);
        if f.is_null() || home.is_null() {
            return;
        }
        let at = self.at.load(Ordering::Relaxed);
        // SAFETY: as in `run`.
        let f = unsafe { core::mem::transmute::<*mut (), TimedFn>(f) };
        f(home, at >> 3, at & 7, true);
    }

    /// Pushes `w` (whose link the caller owns) on the intake.
    fn push(&self, w: &'static Work) {
        let node = ptr::from_ref(w).cast_mut();
        let mut head = self.intake.load(Ordering::Relaxed);
        loop {
            w.next.store(head, Ordering::Relaxed);
            // Release: publishes `next` to the drain's Acquire swap.
            match self.intake.compare_exchange_weak(
                head,
                node,
                ordering!("timer_push_relaxed", Release, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// A DELAYED node met by the work queue's drain (relinked after a
    /// run): to the intake, filed in the next pass.
    pub(crate) fn relink(&self, w: &'static Work) {
        self.push(w);
    }

    /// Inserts `w` by its deadline, after equal ones (drain only).
    fn insert(&self, w: &'static Work) {
        let d = w.deadline();
        let node = ptr::from_ref(w).cast_mut();
        let mut prev: *mut Work = ptr::null_mut();
        let mut cur = self.head.load(Ordering::Relaxed);
        // SAFETY (both blocks): list nodes are `&'static Work` this drain
        // owns the links of.
        while !cur.is_null() && unsafe { &*cur }.deadline() <= d {
            prev = cur;
            cur = unsafe { &*cur }.next.load(Ordering::Relaxed);
        }
        w.next.store(cur, Ordering::Relaxed);
        if prev.is_null() {
            self.head.store(node, Ordering::Relaxed);
        } else {
            // SAFETY: as above.
            unsafe { &*prev }.next.store(node, Ordering::Relaxed);
        }
    }
}

/// Pokes the timers of the queue a state word names, if it has any.
pub(crate) fn poke_word(s: Word) {
    if kind_of(s) != Some(Target::BH) {
        return;
    }
    // SAFETY: a BH target is the header of a `BhQueue` in a `'static`
    // runtime.
    let q = unsafe { &*target_of(s).cast::<BhQueue>() };
    if let Some(t) = q.timers() {
        t.poke();
    }
}

/// What the drain does with a node it owns the link of.
enum Filed {
    /// On the timer list.
    Timer,
    /// Moved to the work queue's intake: runs in this pass.
    Run,
    /// A ghost, dropped.
    Dropped,
}

/// Files a node taken off the intake or the list: a ghost is dropped, a
/// pending instance without a timer goes to `q`, a delayed one to the list
/// (its fresh request read first; `due`: fired if its deadline is past
/// `now`).
fn file(t: &Timers, q: &BhQueue, w: &'static Work, fire_before: u64) -> Filed {
    let d = DelayedWork::from_work(w);
    loop {
        let s = w.state.load(Ordering::Acquire);
        let f = flags(s);
        if f & PENDING == 0 {
            // A ghost: hand the link to the next `pend` (its Acquire).
            if w.state
                .compare_exchange(
                    s,
                    tagged(target_of(s), f & !LINKED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Filed::Dropped;
            }
            continue;
        }
        if f & DELAYED != 0 {
            if let Some(d) = d {
                match d.work.req.take() {
                    Taken::Fresh(ns) => w.set_deadline(ns),
                    Taken::Stale | Taken::Busy => {}
                }
            }
            if w.deadline() >= fire_before {
                t.insert(w);
                return Filed::Timer;
            }
            // Due: DELAYED off, the instance stays ours (LINKED).
            if w.state
                .compare_exchange(
                    s,
                    tagged(target_of(s), f & !DELAYED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                continue;
            }
        }
        q.push(w);
        return Filed::Run;
    }
}

/// The drain of one level's timers (`poke`: the top-half poke instead).
fn timed<B: Backend, const N: usize, const L: usize>(
    home: *const (),
    cpu: usize,
    lvl: usize,
    poke: bool,
) -> bool {
    // SAFETY: `home` was stored by `attach` from a `&'static Runtime<B, N,
    // L>` together with this very function.
    let rt = unsafe { &*home.cast::<Runtime<B, N, L>>() };
    let Some(st) = rt.try_cpu_state(cpu) else {
        return false;
    };
    let Some(ls) = st.levels.get(lvl) else {
        return false;
    };
    let t = &ls.timers;
    if poke {
        // Release: the request written before is visible to the drain
        // that swaps the flag.
        // A swap, not a store: loom orders a plain store after a
        // concurrent RMW only loosely (tokio-rs/loom#254); same cost.
        let _ = t
            .rearm
            .swap(true, ordering!("timer_rearm_relaxed", Release, Relaxed));
        rt.raise_on(cpu, st, lvl, Vector::TASKLET);
        return false;
    }
    let q = &ls.bh_work;
    let now = B::now_ns();
    // The due bound: a deadline before it fires in this pass.
    let due = now.saturating_add(1);
    // A poke: take the whole list back and file it again (requests re-read).
    if t.rearm
        .swap(false, ordering!("timer_rearm_relaxed", Acquire, Relaxed))
    {
        let mut node = t.head.swap(ptr::null_mut(), Ordering::Relaxed);
        while !node.is_null() {
            // SAFETY: list nodes are `&'static Work` whose links we own.
            let w: &'static Work = unsafe { &*node };
            node = w.next.load(Ordering::Relaxed);
            file(t, q, w, 0);
        }
    }
    // New timers, in queue order.
    let mut lifo = t.intake.swap(
        ptr::null_mut(),
        ordering!("timer_take_relaxed", Acquire, Relaxed),
    );
    let mut fifo: *mut Work = ptr::null_mut();
    while !lifo.is_null() {
        // SAFETY: pushed by `Timers::push` from `&'static Work`.
        let w = unsafe { &*lifo };
        lifo = w.next.load(Ordering::Relaxed);
        w.next.store(fifo, Ordering::Relaxed);
        fifo = ptr::from_ref(w).cast_mut();
    }
    while !fifo.is_null() {
        // SAFETY: as above.
        let w: &'static Work = unsafe { &*fifo };
        fifo = w.next.load(Ordering::Relaxed);
        file(t, q, w, 0);
    }
    // Fire the due ones, in deadline order.
    loop {
        let h = t.head.load(Ordering::Relaxed);
        // SAFETY: as above.
        if h.is_null() || unsafe { &*h }.deadline() >= due {
            break;
        }
        // SAFETY: as above.
        let w: &'static Work = unsafe { &*h };
        t.head
            .store(w.next.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Filed::Timer = file(t, q, w, due) {
            // A fresh request moved it later: filed again, look at the
            // new head.
            continue;
        }
    }
    let h = t.head.load(Ordering::Relaxed);
    let first = if h.is_null() {
        u64::MAX
    } else {
        // SAFETY: as above.
        unsafe { &*h }.deadline()
    };
    if first != t.next_deadline() {
        t.next_lo.store(!first as u32, Ordering::Release);
        t.next_hi.store((!first >> 32) as u32, Ordering::Release);
        B::arm_timer(cpu, Level::from_index(lvl), first);
        // The drain threads sleep until the earliest deadline: wake them
        // to look again.
        #[cfg(feature = "std")]
        st.wake.notify();
    }
    !t.intake.load(Ordering::Relaxed).is_null()
}

/// `now + delay` in nanoseconds, saturating.
#[inline]
fn deadline_after(now: u64, delay: Duration) -> u64 {
    now.saturating_add(
        delay
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(delay.subsec_nanos())),
    )
}

impl<B: Backend, const N: usize, const L: usize> Runtime<B, N, L> {
    /// Queues `work` to run in this CPU's bottom half after `delay`
    /// (Linux's `queue_delayed_work` on a `WQ_BH` workqueue, Zephyr's
    /// `k_work_schedule`): at the first drain of its level
    /// ([`Work::at_level`]) at or after `now_ns() + delay`, in deadline order
    /// with the other timers there. Returns `false` if an instance was
    /// already pending — it keeps its deadline — or the queue was refused
    /// (as [`queue_work`](Runtime::queue_work)). A zero delay runs at the
    /// next drain.
    ///
    /// Needs a clock ([`Backend::now_ns`]); the timer fires through the
    /// backend's hook ([`Backend::arm_timer`], `Board::set_timer` then
    /// [`timer_fired`](Runtime::timer_fired)), the drain threads, or the
    /// next drain of [`Vector::TASKLET`] at that level. Design and races
    /// in the module docs of `work/timer.rs`: concurrent (re)schedules of
    /// one item keep one of their deadlines.
    ///
    /// Top-half safe: yes (a few CASes, a push, a raise). Allocates: no.
    /// Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static POLL: DelayedWork = DelayedWork::new("poll", |_| {});
    /// assert!(RT.queue_delayed_work(&POLL, Duration::from_secs(60)));
    /// assert!(!RT.queue_delayed_work(&POLL, Duration::ZERO)); // keeps 60 s
    /// let _ = RT.drain();
    /// assert_eq!(POLL.runs(), 0);
    /// assert!(POLL.cancel());
    /// ```
    pub fn queue_delayed_work(&'static self, work: &'static DelayedWork, delay: Duration) -> bool {
        let (cpu, st) = self.current_state();
        self.delayed_at(cpu, st, work, delay, false)
    }

    /// [`queue_delayed_work`](Runtime::queue_delayed_work) on CPU `cpu`;
    /// `false` for `cpu >= N` (counted as [`Misuse::CpuOutOfRange`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// assert!(RT.queue_delayed_work_on(1, &D, Duration::from_secs(60)));
    /// assert!(!RT.queue_delayed_work_on(2, &D, Duration::ZERO));
    /// assert!(D.cancel());
    /// ```
    pub fn queue_delayed_work_on(
        &'static self,
        cpu: usize,
        work: &'static DelayedWork,
        delay: Duration,
    ) -> bool {
        match self.try_cpu_state(cpu) {
            Some(st) => self.delayed_at(cpu, st, work, delay, false),
            None => {
                self.count_misuse(Misuse::CpuOutOfRange);
                false
            }
        }
    }

    /// Moves the deadline of `work` to `now_ns() + delay`, earlier or
    /// later, queueing it on this CPU if it is idle (Linux's
    /// `mod_delayed_work`, Zephyr's `k_work_reschedule`). Returns `true`
    /// if an instance was pending (its timer moved; an instance whose
    /// timer already fired runs now and is not moved back), `false` if
    /// this call queued it or the queue was refused.
    ///
    /// A pending instance stays on the CPU where it is linked; the new
    /// deadline is taken by that CPU's drain, which this call raises.
    ///
    /// Top-half safe: yes (never spins: a concurrent reschedule of the
    /// same item keeps its own deadline). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// assert!(!RT.mod_delayed_work(&D, Duration::from_secs(60))); // idle: queued
    /// assert!(RT.mod_delayed_work(&D, Duration::ZERO)); // pending: moved to now
    /// let _ = RT.drain();
    /// assert_eq!(D.runs(), 1);
    /// ```
    pub fn mod_delayed_work(&'static self, work: &'static DelayedWork, delay: Duration) -> bool {
        let (cpu, st) = self.current_state();
        self.delayed_at(cpu, st, work, delay, true)
    }

    /// [`mod_delayed_work`](Runtime::mod_delayed_work) queueing an idle
    /// item on CPU `cpu`; `false` for `cpu >= N` (counted).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// assert!(!RT.mod_delayed_work_on(1, &D, Duration::from_secs(9)));
    /// assert!(RT.mod_delayed_work_on(1, &D, Duration::from_secs(60)));
    /// assert!(D.cancel());
    /// ```
    pub fn mod_delayed_work_on(
        &'static self,
        cpu: usize,
        work: &'static DelayedWork,
        delay: Duration,
    ) -> bool {
        match self.try_cpu_state(cpu) {
            Some(st) => self.delayed_at(cpu, st, work, delay, true),
            None => {
                self.count_misuse(Misuse::CpuOutOfRange);
                false
            }
        }
    }

    /// For the board's timer interrupt ([`Board::set_timer`](crate::Board::set_timer)):
    /// raises [`Vector::TASKLET`] at every level of the current CPU that
    /// has delayed work, so its drain fires the due timers and re-arms the
    /// hook. A spurious call costs one drain pass.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// RT.queue_delayed_work(&D, Duration::ZERO);
    /// let _ = RT.drain();
    /// RT.timer_fired(); // a timer interrupt
    /// assert_eq!(RT.pending(0), 1 << 6);
    /// let _ = RT.drain();
    /// ```
    pub fn timer_fired(&'static self) {
        let (cpu, st) = self.current_state();
        for (lvl, ls) in st.levels.iter().enumerate() {
            if ls.timers.in_use() {
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
            }
        }
    }

    /// The earliest armed timer deadline of CPU `cpu` (all levels), and
    /// raises vector 6 at each level whose deadline has passed (drain
    /// threads).
    #[cfg(feature = "std")]
    pub(crate) fn fire_due_timers(&self, cpu: usize) -> u64 {
        let st = self.cpu_state(cpu);
        let now = B::now_ns();
        let mut first = u64::MAX;
        for (lvl, ls) in st.levels.iter().enumerate() {
            let next = ls.timers.next_deadline();
            if next <= now {
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
            } else {
                first = first.min(next);
            }
        }
        first
    }

    /// Stores the erased drain of level `lvl` on every CPU (once, at the
    /// first delayed queue at that level): an item of that level may be
    /// covered where it is linked or running, on any CPU, and that CPU's
    /// drain must be able to hand it to its timers (`Start::Delayed`).
    #[inline]
    fn attach(&'static self, lvl: usize, st: &CpuState<L>) {
        if !st.levels[lvl].timers.in_use() {
            self.attach_all(lvl);
        }
    }

    #[inline(never)]
    fn attach_all(&'static self, lvl: usize) {
        for cpu in 0..N {
            let ls = &self.cpu_state(cpu).levels[lvl];
            let t = &ls.timers;
            t.home
                .store(ptr::from_ref(self).cast_mut().cast(), Ordering::Relaxed);
            t.at.store(cpu << 3 | lvl, Ordering::Relaxed);
            ls.bh_work.set_timers(t);
            let f: TimedFn = timed::<B, N, L>;
            // Release: `home`, `at` and the queue's pointer are visible to
            // whoever reads `timed`.
            t.timed.store(f as *mut (), Ordering::Release);
        }
    }

    fn delayed_at(
        &'static self,
        cpu: usize,
        st: &CpuState<L>,
        dw: &'static DelayedWork,
        delay: Duration,
        modify: bool,
    ) -> bool {
        let work = &dw.work;
        let lvl = self.work_level(st, work);
        self.attach(lvl, st);
        let q = &st.levels[lvl].bh_work;
        q.set_home(self);
        let deadline = deadline_after(B::now_ns(), delay);
        let before = work.state.load(Ordering::Acquire);
        let was_pending = flags(before) & PENDING != 0;
        // Schedule keeps a pending deadline: no request then.
        let posted = modify || !was_pending;
        if posted {
            dw.work.req.post(deadline);
        }
        match work.pend(q.as_target(), LINKED | DELAYED) {
            Pend::Queued => {
                if !posted {
                    dw.work.req.post(deadline);
                }
                st.levels[lvl].timers.push(work);
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
                !modify
            }
            Pend::Covered => {
                if !posted {
                    dw.work.req.post(deadline);
                }
                poke_word(work.state.load(Ordering::Acquire));
                !modify
            }
            Pend::Coalesced => {
                if posted {
                    poke_word(work.state.load(Ordering::Acquire));
                }
                modify
            }
            Pend::Canceling | Pend::OtherConsumer => false,
        }
    }
}
