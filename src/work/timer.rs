//! Delayed work in a runtime's bottom half: [`DelayedWork`] queued with
//! [`Runtime::queue_delayed_work`] (Zephyr's `k_work_schedule`: an
//! instance already pending keeps its deadline) or
//! [`Runtime::mod_delayed_work`] (Zephyr's `k_work_reschedule`, Linux's
//! `mod_delayed_work`: the deadline moves to now + delay, earlier or later).
//!
//! # Design
//!
//! A delayed item is queued exactly as a plain one ([`Runtime::queue_work`]'s
//! path: one CAS on the item, one push on the level's [`BhQueue`] intake,
//! vector 6 raised), with DELAYED set in its state word. The drain that
//! takes it off the intake finds DELAYED at `start` and keeps the node on
//! that queue's *timer list*, which only this drain touches; after running
//! the intake it walks the list and fires what is due. `cancel`,
//! `cancel_sync`, `flush` and the LINKED/ghost rules of [`bh`](super::bh)
//! apply unchanged.
//!
//! - **Deadline requests.** The deadline the list goes by
//!   (`Work::deadline_ns`) belongs to the drain. Every caller that sets a
//!   deadline writes it into the item's *request*, a seqlock in the
//!   [`Work`] (a sequence word and two 32-bit halves: thumbv7m has no
//!   64-bit atomics). A writer takes the lock with one CAS and never
//!   spins: if another context holds it, that context's deadline wins
//!   (**concurrent schedules or reschedules of one item: one of their
//!   deadlines is kept**). The drain consumes a fresh request (clears its
//!   FRESH bit with a CAS that also proves no writer came between) each
//!   time it walks the list; a node whose request a writer holds (the
//!   drain preempted it) is skipped until the writer's poke.
//! - **Order of a queue.** `mod_delayed_work` writes the request, then
//!   pends the item: an idle item is pushed on the intake; a pending one
//!   (on a timer list, or on an intake) is *poked*: vector 6 is raised on
//!   the CPU and level whose queue the state word names, and that drain
//!   walks its list again and reads the request. `queue_delayed_work` does
//!   the same, but writes no request when it finds the item already
//!   pending (it keeps the existing deadline).
//! - **Firing.** A walk drops the ghosts (cancelled nodes), reads the
//!   requests and picks the earliest node; a due one (deadline at or
//!   before now) leaves the list with one CAS that clears DELAYED and goes,
//!   still LINKED, onto the intake, and the walk starts again. The intake
//!   runs at the next pass of the same drain (re-pended), so due items run
//!   in deadline order; ties in queue order (the list is newest first, and
//!   the walk keeps the last of equal deadlines).
//! - **An unsorted list, walked.** Each walk is O(timers on that CPU and
//!   level), once per fired timer and once per pass of vector 6 at that
//!   level. A firmware keeps a handful of timers per CPU and level, and a
//!   walk is less code than a sorted insert plus a re-sort on every
//!   reschedule (issue 10's 1 KiB budget). Linux's timer wheel is built
//!   for many thousands of timers; Zephyr keeps one sorted delta list of
//!   timeouts per system.
//! - **Running items.** An item (re)scheduled while it runs is made
//!   PENDING|DELAYED without being linked; the drain running it relinks it
//!   on its work queue when the run ends, whose `start` sees DELAYED and
//!   puts it on the timer list: it runs again after its deadline, never
//!   concurrently.
//! - **`mod_delayed_work` moves any pending instance**, as Linux's
//!   does (its `try_to_grab_pending` takes a queued work back too): one
//!   waiting for its timer, one queued to run (its timer fired, or it was
//!   queued with `queue_work`), one covering a run. It sets DELAYED on the
//!   instance with one CAS (`start` then hands it to the timer list) and
//!   pokes. An instance that started meanwhile runs; the call then queues
//!   another after the delay and returns `false`, as for an idle item.
//!   (Zephyr's `k_work_reschedule` leaves a submitted item submitted.)
//! - **The hook.** After each walk the drain calls [`Backend::arm_timer`]
//!   with the earliest deadline of that CPU/level when it changed
//!   (`u64::MAX`: none left). The board's timer interrupt calls
//!   [`Runtime::timer_fired`], which raises vector 6 at the levels of the
//!   current CPU that have an armed deadline. `Host`/`Signals` drain
//!   threads sleep at most until the earliest deadline of their CPU. And
//!   every drain of a level (`drain`, `drain_level`, not `irq_exit`,
//!   which drains only what was raised) compares that level's armed
//!   deadline with the clock and raises vector 6 when it has passed (a
//!   load and a branch while nothing is armed): with or without a hook,
//!   a timer fires at the first such drain at or after its deadline.
//! - **Cost.** A firmware that never queues delayed work does not link any
//!   of this: the drain reaches it through the queue's run function
//!   pointer, which the first delayed queue switches (on every queue of
//!   the runtime) from the plain run to `timed`.
//!
//! # Atomic orderings
//!
//! | mutant | ordering | protects |
//! | --- | --- | --- |
//! | `timer_req_lock_relaxed` | request lock CAS, Acquire | pairs with the drain's AcqRel consume CAS: a writer that locks after the drain consumed does not overwrite the halves the drain read |
//! | `timer_req_post_relaxed` | request unlock store, Release | with `timer_req_take_relaxed`: the halves are visible to the drain that sees FRESH |
//! | `timer_req_take_relaxed` | drain's load of the sequence, Acquire | the Acquire half of the above |
//! | `bh_push_relaxed`, `bh_take_relaxed` | the work queue's intake (shared with plain work) | a delayed node's `next`, word and request are visible to the drain that files it |
//!
//! A poke is a raise (SeqCst `fetch_or`, `raise_relaxed`): the drain that
//! takes the bit walks the list after it and reads the request the poker
//! wrote before.

use core::ptr;
use core::time::Duration;

use super::bh::{poke, BhQueue, RunFn};
use super::{flags, kind_of, Func, Pend, Target, Word, Work, DELAYED, LINKED, PENDING};
use crate::backend::Backend;
use crate::level::Level;
use crate::softirq::{CpuState, Runtime, Vector};
use crate::stats::Misuse;
use crate::sync::{loom_const_fn, ordering, AtomicPtr, AtomicU32, Ordering};
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
    /// retried, at most once per drain consume. Without `std`, out of
    /// line: one copy for every caller.
    #[cfg_attr(not(feature = "std"), inline(never))]
    pub(crate) fn post(&self, ns: u64) {
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
/// # Rules in a bottom half
///
/// - **Two policies.** [`Runtime::queue_delayed_work`] (Zephyr's
///   `k_work_schedule`): an instance already pending keeps its deadline
///   and the call returns `false`. [`Runtime::mod_delayed_work`] (Linux's
///   `mod_delayed_work`, Zephyr's `k_work_reschedule`): the pending
///   instance, whether it waits for its timer, is already queued to run or
///   covers a run, now runs at the new deadline (`true`).
/// - **Where.** An instance waits on the timer list of the CPU and level
///   it was queued to ([`at_level`](DelayedWork::at_level)); a reschedule
///   from another CPU moves its deadline there and raises that CPU.
/// - **When.** At the first drain of its level on that CPU at or after
///   the deadline ([`Runtime::drain`], [`Runtime::drain_level`], the drain
///   threads). The backend's one-shot hook ([`Backend::arm_timer`],
///   `Board::set_timer`, one per CPU and level) tells the board when to
///   start that drain: its timer interrupt calls
///   [`Runtime::timer_fired`]. Without a clock (`now_ns` is 0 unless the
///   backend has one) a delay never passes.
/// - **Order.** Timers fire in deadline order, ties in queue order; a
///   deadline in the past runs at the next drain.
/// - **Races.** Two contexts that (re)schedule one item at the same time:
///   one of their deadlines is kept. A `cancel` removes an instance whose
///   timer has not fired, from any context.
/// - **Cost.** Each drain pass of vector 6 at a level walks that CPU and
///   level's timer list (unsorted: a handful of timers per CPU and level
///   is the design point, as in firmware).
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
    /// this one checks). The result borrows for as long as `work` does: to
    /// queue the item again from its own function, name its `static` (or
    /// keep a `&'static DelayedWork` in the context of
    /// [`with_context`](DelayedWork::with_context)).
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

    /// The delayed item, run at bottom-half level `level` instead of level
    /// 0, as [`Work::at_level`] (its timer is kept by that level's drain,
    /// and the hook is armed for that level). A builder for the `static`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DelayedWork, Host, Level, Runtime};
    /// use std::time::Duration;
    ///
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// static STEP: DelayedWork = DelayedWork::new("motor-step", |_| {}).at_level(Level::new(1));
    ///
    /// assert_eq!(STEP.level(), Level::new(1));
    /// assert!(RT.queue_delayed_work(&STEP, Duration::ZERO));
    /// assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 6);
    /// assert!(RT.drain_level(Level::new(1)).is_complete());
    /// assert_eq!(STEP.runs(), 1);
    /// ```
    #[cfg(not(bottomhalf_loom))]
    pub const fn at_level(self, level: Level) -> DelayedWork {
        let mut d = self;
        d.work.level = level.index() as u8;
        d
    }

    /// See the non-loom `at_level`.
    #[cfg(bottomhalf_loom)]
    pub fn at_level(mut self, level: Level) -> DelayedWork {
        self.work.level = level.index() as u8;
        self
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
        // The instance to wait for is taken before the timer fires: a
        // drain that runs it at once is still the run this flush waits
        // for (and reports).
        self.work.flush_with(|s| {
            if flags(s) & DELAYED != 0 {
                if kind_of(s) == Some(Target::BH) {
                    self.work.req.post(0);
                    poke(self.work.state.load(Ordering::Acquire));
                } else {
                    #[cfg(feature = "std")]
                    crate::workqueue::fire_pooled(&self.work);
                }
            }
        })
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

impl BhQueue {
    /// A deadline is armed at this queue (one load of each half).
    #[inline(always)]
    pub(crate) fn timer_armed(&self) -> bool {
        self.next_lo.load(Ordering::Relaxed) | self.next_hi.load(Ordering::Relaxed) != 0
    }

    /// The armed deadline has passed on clock `now` (read only when a
    /// deadline is armed): every drain of the level asks, so due timers
    /// fire at the first drain at or after their deadline even without
    /// the backend's hook.
    ///
    /// The two halves without the retry of `next_deadline`: only a drain
    /// of this level writes them, and a torn read (a drain of the level
    /// running on another thread, `std`) costs a spurious pass or leaves
    /// the timer to the next drain or the hook.
    #[inline(always)]
    pub(crate) fn timer_due(&self, now: fn() -> u64) -> bool {
        let armed = u64::from(self.next_lo.load(Ordering::Relaxed))
            | u64::from(self.next_hi.load(Ordering::Relaxed)) << 32;
        armed != 0 && !armed <= now()
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
}

impl Request {
    /// The deadline the drain goes by for `w` (whose request this is):
    /// a fresh request's (consumed, and kept in `w`), else the last one;
    /// `None` while a writer holds the request (its poke comes back).
    fn deadline_of(&self, w: &Work) -> Option<u64> {
        match self.take() {
            Taken::Fresh(ns) => {
                w.set_deadline(ns);
                Some(ns)
            }
            Taken::Stale => Some(w.deadline()),
            Taken::Busy => None,
        }
    }
}

/// The drain of a queue once delayed work exists at its runtime (its
/// [`RunFn`](super::bh::RunFn)): runs the intake (whose DELAYED nodes go
/// on the timer list), then fires the due timers (`fire`) and arms the
/// hook with the earliest deadline left when it changed.
pub(crate) fn timed<B: Backend, const N: usize, const L: usize>(q: &BhQueue) -> bool {
    let again = q.run_list();
    let at = q.at.load(Ordering::Relaxed) as usize;
    let (moved, first) = fire(q, B::now_ns());
    // This drain is the only writer of the halves: no retry needed.
    let armed = !(u64::from(q.next_lo.load(Ordering::Relaxed))
        | u64::from(q.next_hi.load(Ordering::Relaxed)) << 32);
    if first != armed {
        q.next_lo.store(!first as u32, Ordering::Release);
        q.next_hi.store((!first >> 32) as u32, Ordering::Release);
        B::arm_timer(at >> 3, Level::from_index(at & 7), first);
        // The drain threads sleep until the earliest deadline: wake them
        // to look again.
        #[cfg(feature = "std")]
        wake_drain_thread::<B, N, L>(q, at >> 3);
    }
    again | moved
}

#[cfg(feature = "std")]
fn wake_drain_thread<B: Backend, const N: usize, const L: usize>(q: &BhQueue, cpu: usize) {
    let home = q.home.load(Ordering::Relaxed);
    if home.is_null() {
        return;
    }
    // SAFETY: `home` was stored by `BhQueue::bind` from a `&'static
    // Runtime<B, N, L>`, the one whose `attach` stored `timed::<B, N, L>`.
    let rt = unsafe { &*home.cast::<Runtime<B, N, L>>() };
    if let Some(st) = rt.try_cpu_state(cpu) {
        st.wake.notify();
    }
}

/// Fires the due timers of `q` (drain only): each pass walks the list,
/// drops the ghosts, reads the requests and picks the earliest node (ties:
/// the one filed first); a due one leaves the list, DELAYED cleared, for
/// the intake (so the due ones run in deadline order at the next pass).
/// Returns whether it moved any, and the earliest deadline left
/// (`u64::MAX`: none).
///
/// The list is unsorted and walked once per fired timer: a firmware keeps
/// a handful of timers per CPU and level, and one walk is less code than
/// a sorted insert plus a re-sort on every reschedule.
fn fire(q: &BhQueue, now: u64) -> (bool, u64) {
    let mut moved = false;
    loop {
        let mut link = &q.timers;
        let mut best: Option<(&AtomicPtr<Work>, &'static Work, Word)> = None;
        let mut first = u64::MAX;
        loop {
            let node = link.load(Ordering::Relaxed);
            if node.is_null() {
                break;
            }
            // SAFETY: timer-list nodes are `&'static Work` whose links this
            // drain owns (LINKED).
            let w: &'static Work = unsafe { &*node };
            let s = w.state.load(Ordering::Acquire);
            let f = flags(s);
            if f & PENDING == 0 {
                // A ghost: unlink it and hand the link to the next `pend`
                // (read `next` first). A failed CAS (queued again since, or
                // a spurious failure) looks at it again.
                let next = w.next.load(Ordering::Relaxed);
                if w.cas(s, f & !LINKED) {
                    link.store(next, Ordering::Relaxed);
                }
                continue;
            }
            // Queued again without a delay (a ghost covered by
            // `queue_work`): due now.
            let d = if f & DELAYED == 0 {
                Some(0)
            } else {
                w.req.deadline_of(w)
            };
            if let Some(d) = d {
                // `<=`: among equal deadlines the last one, filed first.
                if d <= first {
                    first = d;
                    best = Some((link, w, s));
                }
            }
            link = &w.next;
        }
        match best {
            Some((link, w, s)) if first <= now => {
                // DELAYED off, the node stays ours (LINKED). Failed: the
                // word changed (cancelled): walk again.
                if w.cas(s, flags(s) & !DELAYED) {
                    link.store(w.next.load(Ordering::Relaxed), Ordering::Relaxed);
                    q.push(w);
                    moved = true;
                }
            }
            _ => return (moved, first),
        }
    }
}

/// Makes the pending bottom-half instance of `work` wait for its timer
/// (its request was posted): sets DELAYED if it is pending without it
/// (queued to run, fired, or covering a run), with one CAS (`start` then
/// hands the node to the timer list; the walk of a list it is linked on
/// reads its request), and pokes its drain. `false` if no bottom-half
/// instance is pending any more.
fn delay_pending(work: &Work) -> bool {
    loop {
        let s = work.state.load(Ordering::Acquire);
        let f = flags(s);
        // Idle (started, cancelled), or pending at a workqueue since: the
        // caller's next queue says which.
        if f & PENDING == 0 || kind_of(s) != Some(Target::BH) {
            return false;
        }
        if f & DELAYED != 0 || work.cas(s, f | DELAYED) {
            poke(s);
            return true;
        }
    }
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
    /// Needs a clock ([`Backend::now_ns`]; without one, a delay never
    /// passes). The timer fires at the first drain of its level on that
    /// CPU at or after the deadline ([`drain`](Runtime::drain),
    /// [`drain_level`](Runtime::drain_level), the drain threads); what
    /// starts that drain is the backend's hook ([`Backend::arm_timer`],
    /// `Board::set_timer`, whose interrupt calls
    /// [`timer_fired`](Runtime::timer_fired)), the `Host`/`Signals` drain
    /// threads, or a program that drains by itself. The rules (deadline
    /// order, concurrent reschedules) are on [`DelayedWork`].
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
        self.delayed_on(cpu, work, delay, false)
    }

    /// Moves the deadline of `work` to `now_ns() + delay`, earlier or
    /// later, queueing it on this CPU if it is idle (Linux's
    /// `mod_delayed_work`, Zephyr's `k_work_reschedule`). Returns `true`
    /// if an instance was pending: it now runs at the new deadline,
    /// whether it waited for its timer or was already queued to run (its
    /// timer fired, or it was queued with [`queue_work`](Runtime::queue_work)),
    /// as Linux moves it; `false` if this call queued a new instance (the
    /// item was idle, or its instance had started running) or the queue
    /// was refused.
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
        self.delayed_on(cpu, work, delay, true)
    }

    /// For the board's timer interrupt ([`Board::set_timer`](crate::Board::set_timer)):
    /// raises [`Vector::TASKLET`] at every level of the current CPU that
    /// has an armed deadline, so its drain fires the due timers and re-arms
    /// the hook. A spurious call costs one drain pass.
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
    /// RT.queue_delayed_work(&D, Duration::from_secs(60));
    /// let _ = RT.drain(); // files the timer, arms the hook
    /// RT.timer_fired(); // a timer interrupt
    /// assert_eq!(RT.pending(0), 1 << 6); // the level with a deadline
    /// let _ = RT.drain(); // not due yet: nothing runs
    /// assert_eq!(D.runs(), 0);
    /// assert!(D.cancel());
    /// ```
    pub fn timer_fired(&'static self) {
        let (cpu, st) = self.current_state();
        for (lvl, ls) in st.levels.iter().enumerate() {
            if ls.bh_work.next_deadline() != u64::MAX {
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
            }
        }
    }

    /// The earliest armed timer deadline of this runtime (every CPU and
    /// level), on the backend's clock ([`Backend::now_ns`]); `None` if no
    /// delayed work waits. For a program that drains by itself (an event
    /// loop, a main loop): sleep at most until then, then drain. A deadline
    /// is armed once a drain has filed its timer.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Backend, Config, DelayedWork, Host, Runtime};
    /// use std::time::Duration;
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// assert_eq!(RT.next_timer_deadline(), None);
    /// RT.queue_delayed_work(&D, Duration::from_secs(60));
    /// let _ = RT.drain(); // files the timer
    /// let deadline = RT.next_timer_deadline().unwrap();
    /// let now = Host::now_ns();
    /// assert!(deadline > now && deadline <= now + 60_000_000_000);
    /// // An event loop would wait `deadline - now` at most, then drain.
    /// assert!(D.cancel());
    /// let _ = RT.drain(); // drops the cancelled timer
    /// assert_eq!(RT.next_timer_deadline(), None);
    /// ```
    pub fn next_timer_deadline(&self) -> Option<u64> {
        let mut first = u64::MAX;
        for cpu in 0..N {
            if let Some(st) = self.try_cpu_state(cpu) {
                for ls in &st.levels {
                    first = first.min(ls.bh_work.next_deadline());
                }
            }
        }
        (first != u64::MAX).then_some(first)
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
            let next = ls.bh_work.next_deadline();
            if next <= now {
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
            } else {
                first = first.min(next);
            }
        }
        first
    }

    /// Makes every queue of this runtime (all CPUs, all levels) drain
    /// with its timers (`timed`), once, at the first delayed queue: an
    /// item may be covered where it is linked or running, on any CPU, and
    /// that drain must be able to keep it on its timer list.
    #[inline]
    fn attach(&'static self, st: &CpuState<L>) {
        let timed: RunFn = timed::<B, N, L>;
        if st.levels[0].bh_work.run.load(Ordering::Relaxed) != timed as *mut () {
            self.attach_all(timed);
        }
    }

    #[inline(never)]
    fn attach_all(&'static self, timed: RunFn) {
        for cpu in 0..N {
            for (lvl, ls) in self.cpu_state(cpu).levels.iter().enumerate() {
                let q = &ls.bh_work;
                q.bind(self, cpu, lvl);
                // Relaxed: the drain reads it after taking vector 6 from
                // the mask, which the queue that needs it sets (SeqCst)
                // after this store.
                q.run.store(timed as *mut (), Ordering::Relaxed);
            }
        }
    }

    /// The `_on` variants: CPU `cpu`'s state, or `false` and a counted
    /// misuse for `cpu >= N`.
    fn delayed_on(
        &'static self,
        cpu: usize,
        work: &'static DelayedWork,
        delay: Duration,
        modify: bool,
    ) -> bool {
        match self.try_cpu_state(cpu) {
            Some(st) => self.delayed_at(cpu, st, work, delay, modify),
            None => {
                self.count_misuse(Misuse::CpuOutOfRange);
                false
            }
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
        self.attach(st);
        let deadline = deadline_after(B::now_ns(), delay);
        // Before the pend: the drain that finds the instance DELAYED reads
        // the request. Schedule keeps a pending deadline: no request then
        // (and `queue_at` posts one if the instance turns out idle).
        if modify || flags(work.state.load(Ordering::Acquire)) & PENDING == 0 {
            work.req.post(deadline);
        }
        loop {
            match self.queue_at(cpu, st, work, Some(deadline)) {
                Pend::Queued | Pend::Covered => return !modify,
                Pend::Coalesced if !modify => return false,
                // Pending: moved to the new deadline, its drain poked. Or
                // it started since: queue again, a new instance after the
                // delay (each retry follows a run that started).
                Pend::Coalesced => {
                    if delay_pending(work) {
                        return true;
                    }
                }
                Pend::Canceling | Pend::OtherConsumer => return false,
            }
        }
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::{Request, Taken, FRESH, LOCK, STEP};
    use core::sync::atomic::Ordering::Relaxed;

    fn seq(r: &Request) -> u32 {
        r.seq.load(Relaxed)
    }

    /// The request's states, one context at a time: a post makes it fresh
    /// (one step further, unlocked), the drain's take consumes it once, a
    /// request a writer holds is busy for the drain and a second writer
    /// backs off without writing (the holder's deadline wins).
    #[test]
    fn a_request_is_fresh_once_busy_while_held_and_never_overwritten_by_a_second_writer() {
        let r = Request::new();
        assert!(matches!(r.take(), Taken::Stale), "a new request is stale");
        r.post(5);
        assert_eq!(seq(&r), STEP | FRESH);
        assert!(matches!(r.take(), Taken::Fresh(5)));
        assert_eq!(seq(&r), STEP, "the take clears FRESH only");
        assert!(matches!(r.take(), Taken::Stale), "consumed twice");
        r.post(7);
        assert_eq!(seq(&r), (2 * STEP) | FRESH, "one step per write");

        // A writer between its lock and its unlock.
        r.seq.store((3 * STEP) | LOCK, Relaxed);
        assert!(matches!(r.take(), Taken::Busy));
        r.post(9);
        assert_eq!(seq(&r), (3 * STEP) | LOCK, "a second writer took the lock");
        assert_eq!(
            (r.lo.load(Relaxed), r.hi.load(Relaxed)),
            (7, 0),
            "and wrote"
        );

        // Unlocked again: a 64-bit deadline goes through the halves.
        r.seq.store(3 * STEP, Relaxed);
        r.post(0x1234_5678_9abc_def0);
        assert!(matches!(r.take(), Taken::Fresh(0x1234_5678_9abc_def0)));

        // The sequence wraps; the low bits stay the flags.
        r.seq.store(!(LOCK | FRESH), Relaxed);
        r.post(1);
        assert_eq!(seq(&r), FRESH);
        assert!(matches!(r.take(), Taken::Fresh(1)));
    }
}
