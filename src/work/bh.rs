//! Work items in a runtime's bottom half (Linux's `WQ_BH` workqueues, which
//! Linux 6.9 runs from the tasklet softirq).
//!
//! Each CPU of a [`Runtime`] has one [`BhQueue`]: a lock-free intake list
//! of [`Work`] items. [`Runtime::queue_work`] (this CPU) and
//! [`Runtime::queue_work_on`] (another CPU) are top-half safe: one CAS on
//! the item's state word (`pend`), one CAS pushing it onto the CPU's intake,
//! one `fetch_or` of the [`Vector::TASKLET`] bit on that CPU — and, when
//! the mask was empty and no drain runs there, the backend's kick, exactly
//! as a raise on that CPU. No allocation, no lock, no panic.
//!
//! The CPU's drain runs the queue when vector 6 runs, after that CPU's
//! normal tasklets, as Linux runs BH work after the tasklets: it takes the
//! intake whole (one swap; no node is ever popped singly, so no ABA),
//! reverses it into queue order and runs each item (`start`, the function,
//! `finish`). It reads a node's `next` before the start CAS, which hands the
//! link to the next `queue`.
//!
//! Design choices (where Linux or the issue leave room):
//!
//! - **LINKED.** A node on a list cannot be unlinked lock-free, so the
//!   state word has a LINKED flag: the node is on the list of the queue in
//!   the word (the intake, or the private list a drain took), and the list
//!   owns the link. `cancel` (from anywhere, top halves included) clears
//!   PENDING with one CAS and leaves a *ghost*: the drain that takes the
//!   node finds PENDING clear, clears LINKED and runs nothing. A `queue` of
//!   a ghost that is still LINKED sets PENDING again and pushes nothing —
//!   the node is already on a list — so **that instance runs on the CPU
//!   where the ghost is linked**, whichever CPU the `queue` named.
//! - **Queued while running.** An item queued while it runs (in the drain
//!   of any CPU) is made PENDING without being linked; the drain running
//!   it sees that in its `finish` CAS, sets LINKED in the same CAS and
//!   links it on its own queue, re-pending vector 6 there, so it runs once
//!   more, after the current run, on the CPU that ran it (Linux queues a
//!   running item on the pool where it runs, for the same reason). So an
//!   item is never started while it runs: no collision handling, no
//!   spinning in a drain.
//! - **Waiting.** `flush` and `cancel_sync` (thread context) wait by
//!   draining the current CPU when the instance is on the current CPU's
//!   queue, and by spinning ([`spin_wait`]: a yield under `std`) otherwise.
//!   To drain, they need the runtime that owns the queue: the first
//!   `queue_work` there stores it in the queue, type-erased (a pointer to
//!   the runtime, a pointer to a function generic over its backend, and
//!   the queue's CPU and level: relaxed atomics, each only ever zero or
//!   its one value), because a runtime built in a `const` cannot know its
//!   own address and must stay all-zero (`.bss`). A waiter that finds
//!   them still null spins. The same function raises vector 6 at the
//!   queue's CPU and level for a *poke* (a queue that covers a linked
//!   ghost or a running item, a reschedule of a timer): the drain there
//!   looks at its lists again.
//! - **The drain's part** is a function pointer in the queue, too: null
//!   until the first `queue_work` (the drain of a firmware that never
//!   queues a work item links none of this), then [`BhQueue::run_list`],
//!   or the timer drain once delayed work exists (`timer.rs`).
//! - **Deadlock.** Waiting for an item from its own function never ends:
//!   `flush`/`cancel_sync` return [`WouldDeadlock`]. With `std` the drain
//!   marks the running item in the thread's workqueue context (as a worker
//!   does); without `std` the queue records the item it runs, and a waiter
//!   on the same CPU that finds its own item running there is inside it
//!   (a CPU runs one context at a time). A `flush` of an instance pending
//!   on the current CPU at a level the caller's own
//!   [`BhGuard`](crate::BhGuard) holds off returns `WouldDeadlock` too
//!   (the guard is per CPU and level; the waiter asks its runtime). Waiting
//!   from another bottom half of the same CPU is not detected and spins for
//!   ever (documented on [`Work::flush`]).
//! - **Panics.** A function that panics: its run is finished (RUNNING
//!   cleared, an instance queued meanwhile relinked), the rest of the taken
//!   list goes back on the intake, and the drain re-pends vector 6 as for a
//!   panicking tasklet; the panic goes on to the drain's caller.
//! - **`fork()`** (std): not repaired yet. An item that a parent thread's
//!   drain had taken off the intake, or was running, at the fork stays
//!   linked or running in the child (its `queue_work` then coalesces and
//!   it never runs there); items still on an intake run in the child's
//!   drains as usual. The tasklet lists' repair (`crate::fork`) is the
//!   model for doing it.
//! - An item is pending, running or linked on one kind of consumer at a
//!   time: a `queue_work` of an item busy on a workqueue is refused, and
//!   the reverse (`WorkqueueError::OtherConsumer`).
//!
//! # Atomic orderings
//!
//! | mutant | ordering | protects |
//! | --- | --- | --- |
//! | `bh_push_relaxed` | intake push CAS, Release | with `bh_take_relaxed`: the node's `next` and state word are visible to the drain that takes the list |
//! | `bh_take_relaxed` | intake swap, Acquire | the Acquire half of the above |
//! | `bh_ghost_relaxed` | ghost drop CAS, AcqRel | the drain's read of `next` comes before the next owner's write of it (a load-buffering shape loom does not explore; not listed as a mutant) |
//! | `work_pend_relaxed`, `work_start_relaxed` | `pend`/`start` CAS, AcqRel (shared with the workqueue) | what the caller wrote before `queue_work` is visible to the run that covers it |
//! | `work_finish_relaxed`, `work_runs_relaxed`, `work_wait_relaxed` | `finish`, `finished`, the waiters' loads (shared) | the run's effects are visible when `flush`/`cancel_sync` return |
//!
//! The pending bit is set with the `raise_relaxed` ordering of
//! [`Runtime::raise`] (SeqCst, the drain hand-off), after the push: a
//! drain whose swap of the mask takes the bit takes the intake after it,
//! and sees the node.

use core::ptr;

#[cfg(not(feature = "std"))]
use super::RUNNING;
use super::{flags, kind_of, target_of, Pend, Start, Target, Word, Work, DELAYED, LINKED};
use crate::backend::Backend;
use crate::softirq::{CpuState, DrainOutcome, Runtime, Vector};
use crate::stats::Misuse;
use crate::sync::{loom_const_fn, ordering, spin_wait, AtomicPtr, AtomicU32, OnUnwind, Ordering};
use crate::tasklet::TaskletRuntime;
use crate::WorkqueueError;

/// What a waiter asks the runtime that owns a queue: `Some` (and, if
/// `drain`, the outcome of draining the current CPU) when `queue` is the
/// current CPU's queue, `None` otherwise. Generic over the runtime's type;
/// stored type-erased in the queue.
type LocalFn = fn(home: *const (), queue: *const BhQueue, ask: Ask) -> Option<DrainOutcome>;

/// What a waiter asks the runtime that owns a queue (see [`LocalFn`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Drain the current CPU if the queue is its: `Some(outcome)`.
    Drain,
    /// Whether a bottom-half guard holds the queue's level off on the
    /// current CPU: `Some(Disabled)` if so, `Some(Complete)` if not.
    Guarded,
    /// Raise [`Vector::TASKLET`] at the queue's CPU and level (a *poke*:
    /// its drain looks at its lists again); `None`.
    Poke,
}

/// The drain's part of a queue: [`BhQueue::run_list`], or with delayed
/// work `timer::timed` (the list, then the timers).
pub(crate) type RunFn = fn(&BhQueue) -> bool;

/// One CPU's bottom-half work queue; a field of the runtime's per-CPU
/// state. All-zero when new. Aligned so that its address leaves the state
/// word's flag bits free (64 bytes: one cache line on most targets).
#[repr(C, align(64))]
pub(crate) struct BhQueue {
    /// First: the state word of a queued item points here.
    target: Target,
    /// `cpu << 3 | level` of this queue, stored with `home` (in the
    /// header's padding).
    pub(crate) at: AtomicU32,
    /// Newly queued items, most recent first. Pushed with a CAS by any
    /// context on any CPU; taken whole with a swap by this CPU's drain.
    intake: AtomicPtr<Work>,
    /// The runtime that owns this queue (`&'static Runtime<B, N>`, erased),
    /// stored by `queue_work`; null until the first one.
    pub(crate) home: AtomicPtr<()>,
    /// `local::<B, N>` as a [`LocalFn`], erased; null until the first
    /// `queue_work`.
    local: AtomicPtr<()>,
    /// The [`RunFn`] the drain calls, erased: null until the first
    /// `queue_work` here, then `BhQueue::run_list`, or `timer::timed`
    /// once delayed work was queued at this runtime (never back).
    pub(crate) run: AtomicPtr<()>,
    /// Delayed nodes waiting for their deadlines (`timer.rs`), newest
    /// first, through `Work::next`; only this queue's drain touches it.
    pub(crate) timers: AtomicPtr<Work>,
    /// The earliest armed deadline, complemented halves (zero: none, so a
    /// new runtime stays all zero bytes); drain-written, read by the drain
    /// threads and `timer_fired`.
    pub(crate) next_lo: AtomicU32,
    pub(crate) next_hi: AtomicU32,
    /// The item this queue's drain runs now (no_std deadlock detection).
    #[cfg(not(feature = "std"))]
    running: AtomicPtr<Work>,
}

const _: () = assert!(core::mem::align_of::<BhQueue>() > super::FLAGS);

impl BhQueue {
    loom_const_fn! {
        pub(crate) fn new() -> BhQueue {
            BhQueue {
                target: Target::new(Target::BH),
                at: AtomicU32::new(0),
                intake: AtomicPtr::new(ptr::null_mut()),
                home: AtomicPtr::new(ptr::null_mut()),
                local: AtomicPtr::new(ptr::null_mut()),
                run: AtomicPtr::new(ptr::null_mut()),
                timers: AtomicPtr::new(ptr::null_mut()),
                next_lo: AtomicU32::new(0),
                next_hi: AtomicU32::new(0),
                #[cfg(not(feature = "std"))]
                running: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// The queue as a state word's target, with the whole queue's
    /// provenance (`repr(C)`, the header first).
    pub(crate) fn as_target(&self) -> *mut Target {
        ptr::from_ref(self).cast::<Target>().cast_mut()
    }

    /// Records the owning runtime, this queue's CPU and level (for
    /// waiters and pokes, see the module docs) and the plain [`RunFn`].
    #[inline]
    pub(crate) fn set_home<B: Backend, const N: usize, const L: usize>(
        &self,
        rt: &'static Runtime<B, N, L>,
        cpu: usize,
        lvl: usize,
    ) {
        // Relaxed: each atomic is only ever null or its one value (`run`:
        // null, the plain drain, then for ever the timed one), and a
        // waiter that reads null spins instead (module docs). The drain
        // reads `run` after taking vector 6 from the mask, which the
        // queuer set (SeqCst) after these stores.
        if self.home.load(Ordering::Relaxed).is_null() {
            self.bind(rt, cpu, lvl);
            let run: RunFn = BhQueue::run_list;
            // Only from null: never over the timed drain.
            let _ = self.run.compare_exchange(
                ptr::null_mut(),
                run as *mut (),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Stores the runtime, its [`LocalFn`] and this queue's place.
    pub(crate) fn bind<B: Backend, const N: usize, const L: usize>(
        &self,
        rt: &'static Runtime<B, N, L>,
        cpu: usize,
        lvl: usize,
    ) {
        let local: LocalFn = local::<B, N, L>;
        self.local.store(local as *mut (), Ordering::Relaxed);
        self.at.store((cpu << 3 | lvl) as u32, Ordering::Relaxed);
        self.home
            .store(ptr::from_ref(rt).cast_mut().cast(), Ordering::Relaxed);
    }

    /// The owning runtime's answer (see [`LocalFn`]); `None` also while the
    /// queue does not know its runtime yet. Without `std`, out of line:
    /// `flush` and `cancel_sync` ask it twice (deadlock check, wait).
    #[cfg_attr(not(feature = "std"), inline(never))]
    fn local(&self, ask: Ask) -> Option<DrainOutcome> {
        let home = self.home.load(Ordering::Relaxed);
        let local = self.local.load(Ordering::Relaxed);
        if home.is_null() || local.is_null() {
            return None;
        }
        // SAFETY: a non-null `local` was stored only by `set_home`, from a
        // `LocalFn` (a function pointer, the size of a data pointer on
        // every target this crate supports), and is never changed.
        let local = unsafe { core::mem::transmute::<*mut (), LocalFn>(local) };
        local(home, self, ask)
    }

    /// Pushes `w`, whose link the caller owns (it set LINKED). Without
    /// `std`, out of line: `queue_work`, the drain's relinks and the
    /// timers share one copy.
    #[cfg_attr(not(feature = "std"), inline(never))]
    pub(crate) fn push(&self, w: &'static Work) {
        let node = ptr::from_ref(w).cast_mut();
        let mut head = self.intake.load(Ordering::Relaxed);
        loop {
            w.next.store(head, Ordering::Relaxed);
            // Release: publishes `next` to the drain's Acquire swap.
            match self.intake.compare_exchange_weak(
                head,
                node,
                ordering!("bh_push_relaxed", Release, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// The drain's part (from vector 6, after the tasklets): the queue's
    /// [`RunFn`] (nothing before the first `queue_work` here). Returns
    /// `true` if it linked items onto the intake again (queued while they
    /// ran, or fired timers): the caller re-pends vector 6 for the next
    /// pass.
    #[inline(always)]
    pub(crate) fn run(&self) -> bool {
        let run = self.run.load(Ordering::Relaxed);
        if run.is_null() {
            return false;
        }
        // SAFETY: a non-null `run` was stored by `set_home` or
        // `Runtime::attach` from a `RunFn` (a function pointer, the size
        // of a data pointer on every target this crate supports).
        let run = unsafe { core::mem::transmute::<*mut (), RunFn>(run) };
        run(self)
    }

    /// Takes the intake and runs its items in queue order. Reached only
    /// through the `run` pointer that the first `queue_work` stores, so a
    /// firmware that never queues a work item does not link it (the
    /// drain's part is a load and a branch).
    pub(crate) fn run_list(&self) -> bool {
        // Skip the swap (a write to a line producers write) when empty. Not
        // under loom, whose scheduler does not explore a pure load racing
        // with a load-then-CAS (the push): models always swap.
        if !cfg!(bottomhalf_loom) && self.intake.load(Ordering::Relaxed).is_null() {
            return false;
        }
        // Acquire: pairs with the Release CAS in `push`.
        let mut lifo = self.intake.swap(
            ptr::null_mut(),
            ordering!("bh_take_relaxed", Acquire, Relaxed),
        );
        let mut fifo: *mut Work = ptr::null_mut();
        while !lifo.is_null() {
            // SAFETY: nodes are pushed only by `queue_work` and the relinks
            // below, all from `&'static Work`; the list owns their links.
            let w = unsafe { &*lifo };
            lifo = w.next.load(Ordering::Relaxed);
            w.next.store(fifo, Ordering::Relaxed);
            fifo = ptr::from_ref(w).cast_mut();
        }
        let mut relinked = false;
        while !fifo.is_null() {
            // SAFETY: as above.
            let w: &'static Work = unsafe { &*fifo };
            // Read the link first: the start CAS (or the ghost drop) hands
            // it to the next `queue`.
            fifo = w.next.load(Ordering::Relaxed);
            match w.start() {
                Start::Run { .. } => {}
                Start::Ghost => continue,
                Start::Delayed => {
                    // Waits for its deadline on this queue's timer list
                    // (ours: only this drain touches it); `timer::timed`
                    // looks at the list after this.
                    w.next
                        .store(self.timers.load(Ordering::Relaxed), Ordering::Relaxed);
                    self.timers
                        .store(ptr::from_ref(w).cast_mut(), Ordering::Relaxed);
                    continue;
                }
                Start::Collided => {
                    // Not reachable: a running item is never linked (module
                    // docs). Should it happen, the node (still ours, LINKED)
                    // waits on the intake for the next pass: never lost,
                    // never run concurrently.
                    self.push(w);
                    relinked = true;
                    continue;
                }
            }
            let rest = fifo;
            let saved = self.enter(w);
            let guard = OnUnwind(|| {
                self.leave(saved);
                self.finish_run(w);
                let mut node = rest;
                while !node.is_null() {
                    // SAFETY: as above; these nodes are still ours (LINKED).
                    let u: &'static Work = unsafe { &*node };
                    node = u.next.load(Ordering::Relaxed);
                    self.push(u);
                }
            });
            w.call();
            core::mem::forget(guard);
            self.leave(saved);
            relinked |= self.finish_run(w);
        }
        relinked
    }

    /// Transition 3 by the drain; relinks an instance queued during the
    /// run onto this queue. Returns `true` if it did.
    fn finish_run(&self, w: &'static Work) -> bool {
        let (old, new) = w.finish(LINKED);
        if flags(new) & LINKED != 0 && flags(old) & LINKED == 0 {
            // The finish CAS gave us the link: PENDING, LINKED, here.
            debug_assert!(ptr::eq(target_of(new), self.as_target()));
            self.push(w);
            true
        } else {
            false
        }
    }

    /// Marks `w` as the item this drain runs (see "Deadlock" in the module
    /// docs); returns what to restore.
    #[cfg(feature = "std")]
    fn enter(&self, w: &'static Work) -> crate::workqueue::Saved {
        crate::workqueue::enter_bh_work(w)
    }

    #[cfg(feature = "std")]
    fn leave(&self, saved: crate::workqueue::Saved) {
        crate::workqueue::leave_bh_work(saved);
    }

    /// As above, without `std`: the queue records it. Only this CPU's drain
    /// writes it, and only a waiter on this CPU compares it: Relaxed.
    /// A load and a store, not a swap (an RMW, which masks interrupts on a
    /// core without CAS): a level's drain never runs nested in itself, so
    /// nothing else writes it in between.
    #[cfg(not(feature = "std"))]
    fn enter(&self, w: &'static Work) -> *mut Work {
        let saved = self.running.load(Ordering::Relaxed);
        self.running
            .store(ptr::from_ref(w).cast_mut(), Ordering::Relaxed);
        saved
    }

    #[cfg(not(feature = "std"))]
    fn leave(&self, saved: *mut Work) {
        self.running.store(saved, Ordering::Relaxed);
    }
}

/// The [`LocalFn`] of a `Runtime<B, N>`.
fn local<B: Backend, const N: usize, const L: usize>(
    home: *const (),
    queue: *const BhQueue,
    ask: Ask,
) -> Option<DrainOutcome> {
    // SAFETY: `home` was stored by `set_home` from a `&'static Runtime<B,
    // N, L>` together with this very function (`local::<B, N, L>`), so it
    // is that runtime, alive for ever.
    let rt = unsafe { &*home.cast::<Runtime<B, N, L>>() };
    if ask == Ask::Poke {
        // SAFETY: `queue` is the live queue that stored this function.
        let at = unsafe { &*queue }.at.load(Ordering::Relaxed) as usize;
        let (cpu, lvl) = (at >> 3, at & 7);
        // `lvl < L` always (stored by `bind`); checked so that no panic
        // path is compiled into a top half.
        if let (Some(st), true) = (rt.try_cpu_state(cpu), lvl < L) {
            rt.raise_on(cpu, st, lvl, Vector::TASKLET);
        }
        return None;
    }
    let (_, st) = rt.current_state();
    let Some(ls) = st.levels.iter().find(|ls| ptr::eq(&ls.bh_work, queue)) else {
        // Another CPU's queue. A backend whose threads may serve another
        // CPU's slot (`Signals`) drains it here for the waiter.
        if ask == Ask::Drain {
            // SAFETY: as above.
            let at = unsafe { &*queue }.at.load(Ordering::Relaxed) as usize;
            return B::run_as_cpu(at >> 3, || rt.drain());
        }
        return None;
    };
    Some(match ask {
        Ask::Drain => rt.drain(),
        Ask::Guarded if ls.is_bh_disabled() => DrainOutcome::Disabled,
        Ask::Guarded | Ask::Poke => DrainOutcome::Complete,
    })
}

/// Pokes the queue a state word names (see [`Ask::Poke`]): its drain runs
/// and looks at its intake and timers again. Top-half safe.
pub(crate) fn poke(s: Word) {
    if kind_of(s) == Some(Target::BH) {
        // SAFETY: as in `wait_step`.
        let q = unsafe { &*target_of(s).cast::<BhQueue>() };
        let _ = q.local(Ask::Poke);
    }
}

/// `true` if a wait for `w`, whose word is `s`, could never end on this
/// CPU: without `std`, `w` runs in a drain below the caller (this CPU's
/// queue records the item it runs; with `std` the workqueue context
/// answers instead); or (`guard`) the instance is pending on the current
/// CPU's queue at a level a bottom-half guard ([`Runtime::bh_disable`])
/// holds off, so no drain may run it until the guard is dropped — by the
/// waiter itself. (Running there under the guard it cannot be: taking the
/// guard waits for the CPU's drains.) One question to the runtime for
/// both.
pub(crate) fn refuse_here(w: &Work, s: Word, guard: bool) -> bool {
    if kind_of(s) != Some(Target::BH) {
        return false;
    }
    // SAFETY: as in `wait_step`.
    let q = unsafe { &*target_of(s).cast::<BhQueue>() };
    #[cfg(not(feature = "std"))]
    let mine = flags(s) & RUNNING != 0 && ptr::eq(q.running.load(Ordering::Relaxed), w);
    #[cfg(feature = "std")]
    let mine = {
        let _ = w;
        false
    };
    let held = guard && flags(s) & super::PENDING != 0;
    if !mine && !held {
        return false;
    }
    // `None`: not this CPU's queue.
    match q.local(Ask::Guarded) {
        None => false,
        Some(DrainOutcome::Disabled) => true,
        Some(_) => mine,
    }
}

/// One step of a wait for a bottom-half instance (word `s`): drain the
/// current CPU if the instance is on its queue, else spin once.
pub(crate) fn wait_step(s: Word) {
    if kind_of(s) == Some(Target::BH) {
        // SAFETY: a BH target is the header of a `BhQueue` (`repr(C)`,
        // first), in a `'static` runtime.
        let q = unsafe { &*target_of(s).cast::<BhQueue>() };
        if q.local(Ask::Drain) == Some(DrainOutcome::Complete) {
            return;
        }
    }
    spin_wait();
}

impl<B: Backend, const N: usize, const L: usize> Runtime<B, N, L> {
    /// Queues `work` to run in this CPU's bottom half (Linux's
    /// `queue_work` on a `WQ_BH` workqueue): it runs in this CPU's drain,
    /// when [`Vector::TASKLET`] runs, after the tasklets. Returns `true` if
    /// this call queued an instance, `false` if one was already pending
    /// (coalesced: it covers this call) or the queue was refused (a
    /// [`cancel_sync`](Work::cancel_sync) of the item waits, or the item is
    /// busy on a workqueue; [`try_queue_work_on`](Runtime::try_queue_work_on)
    /// says which).
    ///
    /// Queued while it runs, the item runs once more after that run, on the
    /// CPU that runs it; never concurrently. A cancelled instance still
    /// linked on another CPU's queue runs there (see [`Work::cancel`]).
    ///
    /// Top-half safe: yes (one CAS on the item, one CAS push, one
    /// `fetch_or`, and the backend's kick when the CPU's mask was empty and
    /// no drain runs there). Allocates: no. Blocks: no.
    ///
    /// Never panics; a backend CPU index `>= N` is folded and counted as
    /// for [`raise`](Runtime::raise).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static W: Work = Work::new("w", |_| {
    ///     RUNS.fetch_add(1, Ordering::Relaxed);
    /// });
    /// assert!(RT.queue_work(&W));
    /// assert!(!RT.queue_work(&W)); // coalesced
    /// assert!(RT.drain().is_complete());
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// ```
    #[inline]
    pub fn queue_work(&'static self, work: &'static Work) -> bool {
        let (cpu, st) = self.current_state();
        matches!(
            self.queue_at(cpu, st, work, None),
            Pend::Queued | Pend::Covered
        )
    }

    /// Queues `work` to run in CPU `cpu`'s bottom half: pushed on that
    /// CPU's queue, its vector-6 bit set, and that CPU kicked through the
    /// backend exactly as a [`raise`](Runtime::raise) there would. Returns
    /// as [`queue_work`](Runtime::queue_work); `false` also for `cpu >= N`
    /// (counted as [`Misuse::CpuOutOfRange`] on the current CPU).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work};
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("w", |_| {});
    /// assert!(RT.queue_work_on(1, &W));
    /// assert!(!RT.queue_work_on(2, &W)); // no CPU 2
    /// assert_eq!(RT.pending(1), 1 << 6);
    /// std::thread::spawn(|| {
    ///     let _cpu1 = RT.bind_current_thread(1).unwrap();
    ///     assert!(RT.drain().is_complete());
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(W.runs(), 1);
    /// ```
    #[inline]
    pub fn queue_work_on(&'static self, cpu: usize, work: &'static Work) -> bool {
        match self.try_queue_work_on(cpu, work) {
            Ok(queued) => queued,
            Err(WorkqueueError::CpuOutOfRange { .. }) => {
                self.count_misuse(Misuse::CpuOutOfRange);
                false
            }
            Err(_) => false,
        }
    }

    /// [`queue_work_on`](Runtime::queue_work_on), saying why a queue was
    /// refused.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::CpuOutOfRange`] for `cpu >= N` (not counted);
    /// [`WorkqueueError::Canceling`] while a `cancel_sync` of the item
    /// waits; [`WorkqueueError::OtherConsumer`] while the item is pending
    /// or running on a workqueue.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Work, WorkqueueError};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static W: Work = Work::new("w", |_| {});
    /// assert_eq!(RT.try_queue_work_on(0, &W), Ok(true));
    /// assert_eq!(RT.try_queue_work_on(0, &W), Ok(false));
    /// assert_eq!(
    ///     RT.try_queue_work_on(3, &W),
    ///     Err(WorkqueueError::CpuOutOfRange { cpu: 3, cpus: 1 })
    /// );
    /// # let _ = RT.drain();
    /// ```
    pub fn try_queue_work_on(
        &'static self,
        cpu: usize,
        work: &'static Work,
    ) -> Result<bool, WorkqueueError> {
        match self.try_cpu_state(cpu) {
            Some(st) => match self.queue_at(cpu, st, work, None) {
                Pend::Queued | Pend::Covered => Ok(true),
                Pend::Coalesced => Ok(false),
                Pend::Canceling => Err(WorkqueueError::Canceling),
                Pend::OtherConsumer => Err(WorkqueueError::OtherConsumer),
            },
            None => Err(WorkqueueError::CpuOutOfRange { cpu, cpus: N }),
        }
    }

    /// The queue path of `queue_work` and delayed work (`timer.rs`):
    /// `delayed` is `Some(deadline)` for a delayed queue (DELAYED, and the
    /// deadline posted before the node is pushed or poked). Returns what
    /// the pend found (one byte: a `Result` with the error's payload would
    /// go through memory at every call site). Without `std`, out of line:
    /// a firmware has one copy of it, and each call site is a call.
    #[cfg_attr(feature = "std", inline)]
    #[cfg_attr(not(feature = "std"), inline(never))]
    pub(crate) fn queue_at(
        &'static self,
        cpu: usize,
        st: &CpuState<L>,
        work: &'static Work,
        delayed: Option<u64>,
    ) -> Pend {
        let lvl = self.work_level(st, work);
        let q = &st.levels[lvl].bh_work;
        let extra = if delayed.is_some() {
            LINKED | DELAYED
        } else {
            LINKED
        };
        let pend = work.pend(q.as_target(), extra);
        match pend {
            Pend::Queued => {
                // Before the push: a waiter that finds the instance here
                // (after the pend) and the queue's home still unset spins.
                q.set_home(self, cpu, lvl);
                if let Some(ns) = delayed {
                    work.req.post(ns);
                }
                q.push(work);
                self.raise_on(cpu, st, lvl, Vector::TASKLET);
            }
            Pend::Covered => {
                if let Some(ns) = delayed {
                    work.req.post(ns);
                }
                // A ghost still linked (on an intake or a timer list) or a
                // running item: its drain looks again.
                poke(work.state.load(Ordering::Acquire));
            }
            Pend::Coalesced | Pend::Canceling | Pend::OtherConsumer => {}
        }
        pend
    }
}
