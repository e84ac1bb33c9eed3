//! `Pool`: one set of worker threads and their lists (Linux's
//! `worker_pool`). An unbound workqueue has one pool; a per-CPU workqueue
//! has one per CPU.
//!
//! Design rules:
//!
//! - `queue` only pushes onto `intake`, a lock-free LIFO (one CAS; no node
//!   is ever popped singly, so no ABA), then wakes a sleeping worker.
//! - Everything else happens under the pool's lock: taking the intake
//!   whole (reversed into queue order) onto the run list (`fifo`) or, for a
//!   delayed item, into the sorted `timers` list — only when the run list
//!   is empty, so a busy worker leaves the producers' cache line alone;
//!   claiming and finishing items; cancel and `mod_delayed` unlinking; the
//!   flush colors. A claimed item is started (its state CAS, which takes
//!   the item's cache line from the producer) after the lock is released;
//!   meanwhile it is PENDING on no list, which `cancel` treats like a push
//!   in flight: it waits.
//! - The producer side (`intake`, the sleeper count, the sleep words) and
//!   the worker side (the lock and the state it guards) live on separate
//!   cache lines. A `runnable` flag, published at the end of each locked
//!   section, tells idle workers about a backlog without the lock.
//! - An item found still running (queued again while it ran on another
//!   worker) goes on `collided` and back to the front of `fifo` when its run
//!   is over: never two runs at once. On an ordered pool nothing else is
//!   claimed meanwhile: items run in queue order.
//! - Delayed items wait on `timers`, kept by idle workers: each sleeps at
//!   most until the earliest deadline (those that do are counted in
//!   `watchers`). A worker that goes busy while timers are pending, and
//!   either was their last watcher or linked an earlier deadline, wakes
//!   every sleeper to recompute its timeout; so does another thread that
//!   links an earlier deadline.
//! - A node is on a list of pool P exactly while its state word says
//!   PENDING at P (or it is being pushed there). Whoever unlinks it under
//!   P's lock clears PENDING or moves it in the same critical section.
//! - Pools are type-stable: allocated once, never freed, recycled through a
//!   free list when their workqueue is dropped. A stale pool pointer in an
//!   idle item's word (or one read just before the item ran and its
//!   workqueue went away) still points to a `Pool`; `cancel` and `flush`
//!   lock it and re-check the word before trusting it.

use core::any::Any;
use core::panic::AssertUnwindSafe;
use core::ptr::{self, NonNull};
use core::time::Duration;
use std::boxed::Box;
use std::vec::Vec;

use super::lock::Lock;
use super::work::{pool_of, release_count};
use super::WorkqueueError;
use crate::backend::{Backend, Host};
use crate::sync::{
    array_of, loom_const_fn, ordering, spin_wait, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize,
    Ordering,
};
use crate::wake::WakeWord;
use crate::work::{flags, Start, Target, Work, DELAYED, PENDING, PLACE_NONE, RUNNING};
use crossbeam_utils::CachePadded;

/// Sleep slots per pool: 8-bit sleeper counts packed in one `usize`.
const SLOT_BITS: usize = 8;
const SLOTS: usize = usize::BITS as usize / SLOT_BITS;

/// Intake polls (each a yield) before an idle worker sleeps.
const IDLE_POLLS: u32 = if cfg!(any(bottomhalf_loom, miri)) {
    1
} else {
    64
};

/// Which list of its pool holds a node (`Work::place`).
pub(super) struct Place;

impl Place {
    /// On no list: idle, running, or being pushed onto the intake.
    pub(super) const NONE: u8 = PLACE_NONE;
    /// On the run list.
    pub(super) const FIFO: u8 = 1;
    /// Set aside: queued again while its previous run is not over.
    pub(super) const COLLIDED: u8 = 2;
    /// On the timer list.
    pub(super) const TIMER: u8 = 3;
}

/// Per-incarnation settings, fixed while the pool serves one workqueue.
#[derive(Clone, Copy, Debug)]
pub(super) struct PoolConfig {
    pub(super) max_active: u32,
    pub(super) threads: u32,
    pub(super) watchdog_ns: Option<u64>,
    /// Items run in queue order: nothing is claimed while an item is set
    /// aside.
    pub(super) ordered: bool,
}

/// Counters kept under the lock (`runs` first: written per item).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(super) struct PoolCounters {
    pub(super) runs: u64,
    pub(super) max_active_seen: u32,
    pub(super) timers_fired: u64,
    pub(super) collisions: u64,
    pub(super) discarded: u64,
}

/// An item a worker started: what it needs to run and finish it.
#[derive(Debug)]
pub(super) struct Started {
    /// The node as linked (with the provenance `Arc::from_raw` needs).
    pub(super) work: NonNull<Work>,
    /// The run owns one `Arc` count, released after finish.
    pub(super) held: bool,
    /// Flush color of the queued instance.
    color: u8,
    /// Start time, if the watchdog is on.
    pub(super) since_ns: u64,
}

/// An item taken off the run list, not yet started.
struct Claimed {
    work: NonNull<Work>,
    color: u8,
    since_ns: u64,
}

/// What a worker does next.
pub(super) enum Step {
    Run(Started),
    /// Nothing runnable; sleep until woken or for this many nanoseconds.
    Idle(Option<u64>),
    /// The workqueue is gone and this pool is empty.
    Exit,
}

/// The workqueue's stop state, read before a step.
#[derive(Clone, Copy)]
pub(super) struct Stop {
    /// No new work is accepted; timers that have not expired are dropped.
    pub(super) stopping: bool,
    /// Every item that might still queue has finished: exit when empty.
    pub(super) exit: bool,
}

/// Things a step leaves for after the lock is released, and what the
/// stepping thread is to its pool. One per stepping thread.
#[derive(Default)]
pub(super) struct After {
    /// `Arc` counts to release (the item's drop may run user code).
    release: Vec<NonNull<Work>>,
    /// Pools holding an instance set aside behind a run that just ended,
    /// or whose timers nobody watches (see `step`): every sleeper rechecks.
    wake: Vec<&'static Pool>,
    /// More runnable items than this worker: wake a peer (see `step`).
    wake_peer: bool,
    /// A worker thread: sleeps when idle, so an idle step with a timer
    /// pending makes it a timer watcher (`run_pending` callers do not).
    sleeps: bool,
    /// Counted in the pool's `watchers` (its last step was idle with a
    /// timeout): uncounted at the start of its next step.
    watching: bool,
}

impl After {
    /// For a worker thread (see `sleeps`).
    pub(super) fn for_worker() -> After {
        After {
            sleeps: true,
            ..After::default()
        }
    }

    /// Wakes and releases what the step left. A panic in the drop of an
    /// item released here (its closure's captures) is caught and handed
    /// to `on_panic` with the item's name: it must not kill the worker.
    pub(super) fn run(
        &mut self,
        pool: &Pool,
        mut on_panic: impl FnMut(&'static str, Box<dyn Any + Send>),
    ) {
        for p in self.wake.drain(..) {
            // A set-aside item became runnable, or timers need a watcher:
            // no `runnable` pair covers it, so every sleeper rechecks.
            p.notify_all();
        }
        // SeqCst: `locked` stored `runnable` (SeqCst) before this load; a
        // sleeper registers in `sleeping` before its SeqCst load of
        // `runnable`. Either it sees the backlog or we see it and wake it.
        if core::mem::take(&mut self.wake_peer) {
            pool.notify_one(ordering!("work_peer_relaxed", SeqCst, Relaxed));
        }
        for node in self.release.drain(..) {
            // SAFETY: we own one count of the node's `Arc` (below), so it
            // is alive until that count is released.
            let name = unsafe { node.as_ref() }.name();
            let released = std::panic::catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: only nodes whose HELD count moved to us are
                // pushed here (finish of a held run, stop-time discard of a
                // held timer); each is pushed once.
                unsafe { release_count(node) };
            }));
            if let Err(payload) = released {
                on_panic(name, payload);
            }
        }
    }
}

/// A worker pool. The queue side and the worker side live on separate
/// cache lines, so a busy producer and busy workers do not take each
/// other's line on every item. `repr(C)` with the [`Target`] header first
/// (read-only): an item's state word points at it. Aligned so that its
/// address leaves the word's flag bits free.
#[repr(C, align(64))]
pub(crate) struct Pool {
    target: Target,
    front: CachePadded<Front>,
    back: CachePadded<Back>,
}

/// What `queue` touches.
struct Front {
    /// Newly queued items, most recent first. Pushed by `queue` (CAS, any
    /// context); taken whole by the lock holder (swap).
    intake: AtomicPtr<Work>,
    /// Workers inside `sleep`, counted per slot: 8 bits per slot
    /// ([`SLOTS`] slots). `queue` wakes only when non-zero, and then only
    /// the lowest slot with a sleeper.
    sleeping: AtomicUsize,
    /// Worker `j` sleeps on `slots[j % SLOTS]`: a wake-up reaches one
    /// worker (or the few sharing its slot), not all of them — `WakeWord`
    /// wakes every thread sleeping on it, and a herd of woken workers
    /// competing for the CPUs with the producer triples the wake latency.
    slots: [WakeWord; SLOTS],
    /// The fork generation the pool was acquired in (`acquire`, while no
    /// item names the pool). A pool of another generation was inherited
    /// across `fork()`: its workers do not exist, and nothing touches it.
    generation: AtomicU32,
}

/// What workers touch; `repr(C)`: the lock (and the hot prefix of the
/// state) starts the cache line.
#[repr(C)]
struct Back {
    state: Lock<PoolState>,
    /// Published at the end of every locked section: the run list holds an
    /// item another worker could start now (`fifo` non-empty, `active <
    /// max_active`, and on an ordered pool nothing set aside). Lets an idle
    /// worker see a backlog without the lock.
    runnable: AtomicBool,
    /// One item at a time (one thread, or `max_active == 1`): flushing a
    /// pending item of this pool from one of its items would deadlock.
    serial: AtomicBool,
    /// Whole-queue flushers and the stopping workqueue sleep here.
    flushed: WakeWord,
}

/// Everything under the pool's lock. `repr(C)`, fields written for every
/// item first: with the lock word they share one cache line, which is all
/// that moves between workers per item; the rest is read-mostly.
#[repr(C)]
pub(super) struct PoolState {
    fifo: List,
    /// Items running now.
    active: u32,
    /// Flush color given to items entering `fifo`.
    color: u8,
    /// A whole-queue flush owns the colors.
    flushing: bool,
    /// A stopping workqueue waits for the pool to be empty.
    want_idle: bool,
    /// Items of each color on `fifo`, on `collided` or running.
    in_flight: [u32; 2],
    pub(super) counters: PoolCounters,
    collided: List,
    timers: List,
    /// Workers whose last step was idle with a timeout: asleep (or about
    /// to sleep) until the earliest deadline at most. A worker that claims
    /// an item while timers are pending and nobody else watches them wakes
    /// the sleepers (see `step`).
    watchers: u32,
    pub(super) cfg: PoolConfig,
    /// Runs in progress (only with the watchdog on): name, start.
    running: Vec<(NonNull<Work>, &'static str, u64)>,
}

// SAFETY: the raw pointers are links to live work items (static, or kept
// alive by the Arc count the list holds); they are only followed under the
// pool's lock, from any thread.
unsafe impl Send for PoolState {}

const _: () = assert!(core::mem::align_of::<Pool>() > crate::work::FLAGS);

#[cfg(not(bottomhalf_loom))]
static FREE_POOLS: Lock<Vec<&'static Pool>> = Lock::new(Vec::new());

impl Pool {
    loom_const_fn! {
        fn new() -> Pool {
            Pool {
                target: Target::new(Target::POOL),
                front: CachePadded::new(Front {
                    intake: AtomicPtr::new(ptr::null_mut()),
                    sleeping: AtomicUsize::new(0),
                    slots: array_of![super::wake_word(); SLOTS],
                    generation: AtomicU32::new(0),
                }),
                back: CachePadded::new(Back {
                state: Lock::new(PoolState {
                    fifo: List::new(),
                    collided: List::new(),
                    timers: List::new(),
                    watchers: 0,
                    active: 0,
                    cfg: PoolConfig {
                        max_active: 1,
                        threads: 0,
                        watchdog_ns: None,
                        ordered: false,
                    },
                    color: 0,
                    in_flight: [0; 2],
                    flushing: false,
                    want_idle: false,
                    running: Vec::new(),
                    counters: PoolCounters {
                        runs: 0,
                        max_active_seen: 0,
                        timers_fired: 0,
                        collisions: 0,
                        discarded: 0,
                    },
                }),
                runnable: AtomicBool::new(false),
                serial: AtomicBool::new(true),
                flushed: super::wake_word(),
                }),
            }
        }
    }

    /// A pool for a new workqueue: a recycled one or a new (leaked) one.
    ///
    /// Top-half safe: no. Allocates: yes. Blocks: briefly (free-list lock).
    pub(super) fn acquire(cfg: PoolConfig) -> &'static Pool {
        // `try_with`: in a child of `fork()` the free list's lock may be
        // held by a thread that does not exist there; a new pool then.
        #[cfg(not(bottomhalf_loom))]
        let reused = FREE_POOLS.try_with(Vec::pop).flatten();
        #[cfg(bottomhalf_loom)]
        let reused: Option<&'static Pool> = None;
        let pool: &'static Pool = match reused {
            Some(p) => p,
            None => Box::leak(Box::new(Pool::new())),
        };
        pool.front
            .generation
            .store(super::fork_generation(), Ordering::Relaxed);
        pool.back
            .serial
            .store(cfg.threads <= 1 || cfg.max_active == 1, Ordering::Relaxed);
        pool.locked(|st| {
            debug_assert!(
                st.is_quiescent() && st.in_flight == [0, 0] && !st.flushing && st.watchers == 0
            );
            st.cfg = cfg;
            st.want_idle = false;
            st.counters = PoolCounters::default();
            st.running.reserve(cfg.threads as usize);
        });
        pool
    }

    /// Returns a drained pool to the free list. Its memory stays valid for
    /// ever (stale pointers in idle items' words). If the free list stays
    /// locked (in a child of `fork()`, by a thread that does not exist
    /// there), the pool is not recycled.
    pub(super) fn retire(&'static self) {
        debug_assert!(self.front.intake.load(Ordering::Relaxed).is_null());
        #[cfg(not(bottomhalf_loom))]
        for _ in 0..1000 {
            if FREE_POOLS.try_with(|free| free.push(self)).is_some() {
                return;
            }
            spin_wait();
        }
    }

    /// `true` if the pool was inherited across `fork()`: its workers do not
    /// exist in this process. Never under loom.
    #[inline]
    pub(super) fn is_inherited(&self) -> bool {
        !cfg!(bottomhalf_loom)
            && self.front.generation.load(Ordering::Relaxed) != super::fork_generation()
    }

    /// Runs `f` under the pool's lock, then publishes `runnable`.
    pub(super) fn locked<R>(&self, f: impl FnOnce(&mut PoolState) -> R) -> R {
        self.back.state.with(|st| {
            let r = f(st);
            let runnable = !st.fifo.is_empty() && st.may_claim();
            // Stored only when it changes: a sleeper's last step (under
            // this lock, before ours) stored the value it saw, so a change
            // it must learn about is always a store. SeqCst: the store half
            // of the pair with `sleep` (see `After::run`).
            if self.back.runnable.load(Ordering::Relaxed) != runnable {
                self.back.runnable.store(
                    runnable,
                    ordering!("work_runnable_relaxed", SeqCst, Relaxed),
                );
            }
            r
        })
    }

    /// The token worker `slot` takes before its last step ahead of `sleep`.
    pub(super) fn token(&self, slot: usize) -> u32 {
        self.front.slots[slot % SLOTS].token()
    }

    /// Wakes the workers of the lowest slot that has a sleeper, if any.
    /// `order` is the load of `sleeping`: `SeqCst` where it is the second
    /// half of a store-buffering pair with `sleep`.
    #[inline]
    fn notify_one(&self, order: Ordering) {
        let sleeping = self.front.sleeping.load(order);
        if sleeping != 0 {
            let slot = sleeping.trailing_zeros() as usize / SLOT_BITS;
            self.front.slots[slot].notify();
        }
    }

    /// Wakes every worker, asleep or about to sleep (a token taken before
    /// this makes its wait return at once).
    pub(super) fn notify_all(&self) {
        for word in &self.front.slots {
            word.notify();
        }
    }

    /// The word whole-queue flushers and a stopping workqueue sleep on.
    pub(super) fn flushed(&self) -> &WakeWord {
        &self.back.flushed
    }

    /// See the `serial` field.
    pub(super) fn is_serial(&self) -> bool {
        self.back.serial.load(Ordering::Relaxed)
    }

    /// Pushes a node whose PENDING this caller set (it owns the link), then
    /// wakes a sleeping worker. Lock-free; async-signal-safe.
    #[inline]
    pub(super) fn push(&self, node: NonNull<Work>) {
        // SAFETY: the caller's link keeps the node alive (static, or the
        // Arc count it just gave the list).
        let w = unsafe { node.as_ref() };
        let mut head = self.front.intake.load(Ordering::Relaxed);
        loop {
            w.next.store(head, Ordering::Relaxed);
            // Release: publishes `next`, `deadline_ns` and the state word to
            // the Acquire swap in `take_intake`. SeqCst: the store half of
            // the store-buffering pair with `sleep` (see below).
            match self.front.intake.compare_exchange_weak(
                head,
                node.as_ptr(),
                ordering!("work_push_relaxed", SeqCst, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        // SeqCst: pairs with `sleep` (register in `sleeping`, then load
        // the intake): either we see the sleeper or it sees our push.
        self.notify_one(ordering!("work_idle_relaxed", SeqCst, Relaxed));
    }

    /// Before sleeping, polls for work for a moment (yielding): a
    /// producer that queues a stream of items then pays no wake-up system
    /// call per item, and the worker no sleep/wake round trip (rayon and
    /// crossbeam-channel receivers do the same before parking). Returns
    /// `true` if something arrived. The poller is not counted as idle, so
    /// `queue` does not wake it.
    pub(super) fn linger(&self) -> bool {
        for _ in 0..IDLE_POLLS {
            if self.has_work_hint() {
                return true;
            }
            spin_wait();
        }
        self.has_work_hint()
    }

    /// Something in the intake, or a backlog another worker could start.
    fn has_work_hint(&self) -> bool {
        !self.front.intake.load(Ordering::Relaxed).is_null()
            || self.back.runnable.load(Ordering::Relaxed)
    }

    /// Sleeps until woken, or `timeout_ns`. `token` was taken before the
    /// step that found nothing to do.
    pub(super) fn sleep(&self, slot: usize, token: u32, timeout_ns: Option<u64>) {
        let slot = slot % SLOTS;
        let one = 1usize << (slot * SLOT_BITS);
        self.front.sleeping.fetch_add(one, Ordering::SeqCst);
        // SeqCst: the load halves of the pairs with `push` (intake, then
        // `sleeping`) and with a worker that made a backlog (`runnable`,
        // then `sleeping`, in `After::run`).
        if self
            .front
            .intake
            .load(ordering!("work_sleep_relaxed", SeqCst, Relaxed))
            .is_null()
            && !self
                .back
                .runnable
                .load(ordering!("work_sleep_relaxed", SeqCst, Relaxed))
        {
            self.front.slots[slot].wait(token, timeout_ns.map(Duration::from_nanos));
        }
        self.front.sleeping.fetch_sub(one, Ordering::SeqCst);
    }

    /// One round of a worker: under the lock, finish `done`, move the
    /// intake, fire due timers and claim the next runnable item; then start
    /// it (transition 2) outside the lock — the CAS that takes the item's
    /// cache line from the producer does not hold up the other workers.
    pub(super) fn step(
        &'static self,
        mut done: Option<Started>,
        stop: Stop,
        after: &mut After,
    ) -> Step {
        // Across set-aside retries: a timer linked by the first round.
        let mut earlier_timer = false;
        loop {
            let claimed = self.locked(|st| {
                if core::mem::take(&mut after.watching) {
                    st.watchers -= 1;
                }
                if let Some(d) = done.take() {
                    self.finish_locked(st, d, after);
                }
                // New items go behind the run list anyway: take them only
                // when it is empty, so that a busy worker leaves the
                // producers' cache line alone while it works through a
                // batch — or when a timer is due: the intake may hold a
                // timer with an earlier deadline, which must be linked
                // before the due ones fire, so timers fire in deadline
                // order even when the worker has fallen behind.
                if st.fifo.is_empty() || st.timer_due() {
                    earlier_timer |= self.take_intake(st);
                }
                if !st.collided.is_empty() {
                    st.recheck_collided();
                }
                let timeout = if st.timers.is_empty() {
                    None
                } else {
                    st.fire_timers(stop.stopping, after)
                };
                if let Some(c) = st.claim() {
                    // More runnable items, and a worker that is not running
                    // one: wake it if it sleeps (see `After::run`).
                    if !st.fifo.is_empty()
                        && st.active < st.cfg.max_active
                        && st.active < st.cfg.threads
                    {
                        after.wake_peer = true;
                    }
                    // Timers are kept by idle workers. This one goes busy:
                    // if it was their last watcher, or just linked an
                    // earlier deadline than the sleepers wait for, wake
                    // every sleeper to recompute its timeout. All of them:
                    // a sleeper's token may predate the timer, and
                    // `notify_all` ends any such wait.
                    if !st.timers.is_empty()
                        && (earlier_timer || st.watchers == 0)
                        && st.active < st.cfg.threads
                    {
                        after.wake.push(self);
                    }
                    return Ok(c);
                }
                if st.is_quiescent() {
                    if st.want_idle {
                        self.back.flushed.notify();
                    }
                    if stop.exit {
                        return Err(Step::Exit);
                    }
                }
                if timeout.is_some() && after.sleeps {
                    st.watchers += 1;
                    after.watching = true;
                }
                Err(Step::Idle(timeout))
            });
            let c = match claimed {
                Ok(c) => c,
                Err(step) => return step,
            };
            // SAFETY: a claimed node is alive while PENDING (we own its
            // link: off every list, PENDING here).
            let w = unsafe { c.work.as_ref() };
            match w.start() {
                Start::Run { held } => {
                    return Step::Run(Started {
                        work: c.work,
                        held,
                        color: c.color,
                        since_ns: c.since_ns,
                    })
                }
                // Its previous run is not over: set it aside, look again.
                Start::Collided => self.locked(|st| st.set_aside(c)),
                // A claimed instance cannot be cancelled: `cancel` waits
                // for a node on no list (`with_pending`).
                Start::Ghost => unreachable!("a claimed pool item lost PENDING"),
                // Timers fire (DELAYED cleared) before a node is claimable.
                Start::Delayed => unreachable!("a claimed pool item waits for its timer"),
            }
        }
    }

    /// Transition 3 and the bookkeeping around it.
    fn finish_locked(&'static self, st: &mut PoolState, d: Started, after: &mut After) {
        // SAFETY: a started item is alive until its count (if any) is
        // released, which happens after this, in `After::run`.
        let w = unsafe { d.work.as_ref() };
        st.active -= 1;
        st.counters.runs += 1;
        if st.cfg.watchdog_ns.is_some() {
            if let Some(i) = st.running.iter().position(|r| r.0 == d.work) {
                st.running.swap_remove(i);
            }
        }
        st.uncount(self, d.color);
        let (_, now) = w.finish(0);
        if flags(now) & PENDING != 0 {
            let q = pool_of(now);
            if ptr::eq(q, self) {
                // Queued again onto this pool while it ran. If another
                // worker set it aside, it runs next.
                if w.place.load(Ordering::Relaxed) == Place::COLLIDED {
                    // SAFETY: COLLIDED means on our `collided` list, and the
                    // word (PENDING here) cannot change pool without our lock.
                    let node = unsafe { st.collided.remove(w) };
                    w.place.store(Place::FIFO, Ordering::Relaxed);
                    // SAFETY: just unlinked; alive (pending link).
                    unsafe { st.fifo.push_front(node) };
                }
            } else {
                // SAFETY: pools are never freed (module docs).
                after.wake.push(unsafe { &*q });
            }
        }
        if d.held {
            after.release.push(d.work);
        }
    }

    /// Moves the intake onto the lists, in queue order. Returns `true` if
    /// it linked a timer ahead of the earliest one: sleeping workers' timeouts
    /// may be too long now.
    fn take_intake(&self, st: &mut PoolState) -> bool {
        // Skip the swap (a write to a line producers write) when empty. Not
        // under loom: its scheduler does not explore a pure load racing
        // with a load-then-CAS (the push), so models always swap.
        if !cfg!(bottomhalf_loom) && self.front.intake.load(Ordering::Relaxed).is_null() {
            return false;
        }
        let first_timer = st.timers.front();
        // Acquire: pairs with the Release CAS in `push`.
        let mut lifo = self.front.intake.swap(
            ptr::null_mut(),
            ordering!("work_take_relaxed", Acquire, Relaxed),
        );
        let mut fifo: *mut Work = ptr::null_mut();
        while let Some(node) = NonNull::new(lifo) {
            // SAFETY: pushed nodes are alive while PENDING (static, or the
            // list's Arc count); we own their links now.
            let w = unsafe { node.as_ref() };
            lifo = w.next.load(Ordering::Relaxed);
            w.next.store(fifo, Ordering::Relaxed);
            fifo = node.as_ptr();
        }
        while let Some(node) = NonNull::new(fifo) {
            // SAFETY: as above.
            let w = unsafe { node.as_ref() };
            fifo = w.next.load(Ordering::Relaxed);
            // SAFETY: on no list (just taken off the intake), alive.
            unsafe { st.relink(node) };
        }
        st.timers.front() != first_timer
    }

    /// [`take_intake`](Pool::take_intake) by a thread that will not watch
    /// the timers itself (a canceler, a flusher, ...): a timer ahead of the
    /// earliest one wakes every sleeper to recompute its timeout. (A
    /// worker woken by the push may already have found the intake empty,
    /// and no `runnable` pair covers a timer.)
    fn take_intake_for_others(&self, st: &mut PoolState) {
        if self.take_intake(st) {
            self.notify_all();
        }
    }

    /// Runs `f` under the lock of the pool holding `w`'s pending instance,
    /// with that instance's place and the state word, once the instance is
    /// on a list (a `queue` between its two CASes is waited for). `f` must
    /// leave the node linked, or unlink it with [`PoolState::unlink`] and
    /// then clear PENDING or re-target it. `None` if `w` is not pending at a pool.
    pub(super) fn with_pending<R>(
        w: &Work,
        f: impl FnOnce(&'static Pool, &mut PoolState, u8, crate::work::Word) -> R,
    ) -> Option<R> {
        enum Found<R> {
            Moved,
            InFlight,
            Done(R),
        }
        let mut f = Some(f);
        loop {
            let s = w.state.load(Ordering::Acquire);
            let p = pool_of(s);
            // Not pending, or pending in a bottom half (`crate::work::bh`).
            if flags(s) & PENDING == 0 || p.is_null() {
                return None;
            }
            // SAFETY: pools are never freed (module docs); the word is
            // re-checked under the lock before the pool is trusted.
            let pool: &'static Pool = unsafe { &*p };
            let found = pool.locked(|st| {
                pool.take_intake_for_others(st);
                // Under this lock the word cannot leave "PENDING here".
                let now = w.state.load(Ordering::Acquire);
                if flags(now) & PENDING == 0 || !ptr::eq(pool_of(now), pool) {
                    return Found::Moved;
                }
                let place = w.place.load(Ordering::Relaxed);
                if place == Place::NONE {
                    return Found::InFlight;
                }
                let f = f.take().expect("called once");
                let r = f(pool, st, place, now);
                if st.want_idle && st.is_quiescent() {
                    pool.back.flushed.notify();
                }
                Found::Done(r)
            });
            match found {
                Found::Moved => {}
                Found::InFlight => spin_wait(),
                Found::Done(r) => return Some(r),
            }
        }
    }

    /// Fires `w`'s pending timer now (for `DelayedWork::flush`).
    pub(super) fn fire_now(w: &Work) {
        let _ = Pool::with_pending(w, |pool, st, place, _| {
            if place == Place::TIMER {
                // SAFETY: `place` says where it is, under this lock.
                let node = unsafe { st.unlink(pool, w, place) };
                w.fire();
                st.counters.timers_fired += 1;
                // SAFETY: just unlinked; alive (pending link).
                unsafe { st.enlist(node) };
                pool.notify_all();
            }
        });
    }

    /// Whole-queue flush, step 1: become the pool's flusher and flip the
    /// color. `Ok(None)` while another flush owns the colors.
    ///
    /// # Errors
    ///
    /// `WouldDeadlock` if `caller` (the item the calling thread runs, or
    /// null) has an instance pending here that is not waiting for its
    /// timer: it is set aside behind the caller's own run, and the flush
    /// would wait for it. Checked under the lock, after the intake is
    /// taken: a timer fires and an instance is linked only under it, so
    /// an instance the flush would count is seen (one still being pushed
    /// is refused too, though it would get the new color).
    pub(super) fn begin_flush(&self, caller: *const Work) -> Result<Option<u8>, WorkqueueError> {
        self.locked(|st| {
            if st.flushing {
                return Ok(None);
            }
            self.take_intake_for_others(st);
            // SAFETY: `caller` is the item this thread is running: alive
            // for the run.
            if let Some(w) = unsafe { caller.as_ref() } {
                let s = w.state.load(Ordering::Acquire);
                if flags(s) & (PENDING | DELAYED) == PENDING && ptr::eq(pool_of(s), self) {
                    return Err(WorkqueueError::WouldDeadlock);
                }
            }
            st.flushing = true;
            let old = st.color;
            st.color ^= 1;
            Ok(Some(old))
        })
    }

    /// Whole-queue flush, step 2: `true` (and the colors released) once no
    /// item of color `old` is queued or running.
    pub(super) fn end_flush_if_done(&self, old: u8) -> bool {
        self.locked(|st| {
            if st.in_flight[usize::from(old)] != 0 {
                return false;
            }
            st.flushing = false;
            true
        })
    }

    /// For the stopping workqueue: `true` if nothing is queued, set aside,
    /// timed or running; otherwise `flushed` is notified when that is so.
    pub(super) fn quiescent_now(&self) -> bool {
        self.locked(|st| {
            self.take_intake_for_others(st);
            st.want_idle = true;
            st.is_quiescent()
        })
    }

    /// Items on the lists and running, and timers: for statistics.
    pub(super) fn snapshot(&self, now_ns: u64) -> PoolSnapshot {
        self.locked(|st| {
            self.take_intake_for_others(st);
            st.snapshot(now_ns)
        })
    }
}

impl PoolState {
    fn snapshot(&self, now_ns: u64) -> PoolSnapshot {
        let st = self;
        PoolSnapshot {
            counters: st.counters,
            queued: st.fifo.len + st.collided.len,
            timers: st.timers.len,
            running_long: match st.cfg.watchdog_ns {
                Some(limit) => st
                    .running
                    .iter()
                    .filter(|r| now_ns.saturating_sub(r.2) > limit)
                    .map(|r| (r.1, Duration::from_nanos(now_ns.saturating_sub(r.2))))
                    .collect(),
                None => Vec::new(),
            },
        }
    }
}

/// What `Pool::snapshot` returns.
pub(super) struct PoolSnapshot {
    pub(super) counters: PoolCounters,
    pub(super) queued: usize,
    pub(super) timers: usize,
    pub(super) running_long: Vec<(&'static str, Duration)>,
}

impl PoolState {
    /// Nothing queued, set aside, timed or running.
    pub(super) fn is_quiescent(&self) -> bool {
        self.active == 0
            && self.fifo.is_empty()
            && self.collided.is_empty()
            && self.timers.is_empty()
    }

    /// Puts a node taken off the intake (or re-targeted here) on the timer
    /// list if DELAYED, else on the run list.
    ///
    /// # Safety
    ///
    /// `node` is alive while PENDING, on no list, and its word says PENDING
    /// at this pool (we own its link under this lock).
    pub(super) unsafe fn relink(&mut self, node: NonNull<Work>) {
        // SAFETY: per the contract.
        let w = unsafe { node.as_ref() };
        if flags(w.state.load(Ordering::Relaxed)) & DELAYED != 0 {
            w.place.store(Place::TIMER, Ordering::Relaxed);
            let deadline = w.deadline();
            // SAFETY: per the contract; timer nodes' deadlines are ours.
            unsafe { self.timers.insert_sorted(node, deadline, Work::deadline) };
        } else {
            // SAFETY: per the contract.
            unsafe { self.enlist(node) };
        }
    }

    /// Appends to the run list with the current flush color.
    ///
    /// # Safety
    ///
    /// As [`relink`](PoolState::relink).
    unsafe fn enlist(&mut self, node: NonNull<Work>) {
        // SAFETY: per the contract.
        let w = unsafe { node.as_ref() };
        w.color.store(self.color, Ordering::Relaxed);
        self.in_flight[usize::from(self.color)] += 1;
        w.place.store(Place::FIFO, Ordering::Relaxed);
        // SAFETY: per the contract.
        unsafe { self.fifo.push_back(node) };
    }

    /// Takes `w` off the list `place` names; returns the node as linked.
    /// `place` is NONE afterwards: set before the caller's CAS hands the
    /// link on.
    ///
    /// # Safety
    ///
    /// `place` is `w`'s place, read under this lock with `w` pending here.
    pub(super) unsafe fn unlink(&mut self, pool: &Pool, w: &Work, place: u8) -> NonNull<Work> {
        // SAFETY: per the contract, `w` is on that list.
        let node = unsafe {
            match place {
                Place::FIFO => self.fifo.remove(w),
                Place::COLLIDED => self.collided.remove(w),
                Place::TIMER => self.timers.remove(w),
                _ => unreachable!("unlink of a node on no list"),
            }
        };
        if place != Place::TIMER {
            self.uncount(pool, w.color.load(Ordering::Relaxed));
        }
        w.place.store(Place::NONE, Ordering::Relaxed);
        node
    }

    /// An item of `color` left the run list for good (ran or cancelled).
    fn uncount(&mut self, pool: &Pool, color: u8) {
        let c = usize::from(color);
        self.in_flight[c] -= 1;
        if self.flushing && self.in_flight[c] == 0 {
            pool.back.flushed.notify();
        }
    }

    /// Takes the first runnable item off the run list, within
    /// `max_active`, for `step` to start. While claimed, the node is on no
    /// list and still PENDING here: `cancel` waits (as for a push in
    /// flight) until the start CAS or `set_aside`.
    ///
    /// An ordered pool claims nothing while an item is set aside: the items
    /// queued after it wait for it.
    fn claim(&mut self) -> Option<Claimed> {
        if !self.may_claim() {
            return None;
        }
        let node = self.fifo.pop_front()?;
        // SAFETY: list nodes are alive while PENDING.
        let w = unsafe { node.as_ref() };
        let color = w.color.load(Ordering::Relaxed);
        // Before the start CAS: afterwards the link belongs to the next
        // `queue`, and a canceler on another pool may read `place`.
        w.place.store(Place::NONE, Ordering::Relaxed);
        self.active += 1;
        self.counters.max_active_seen = self.counters.max_active_seen.max(self.active);
        let since_ns = match self.cfg.watchdog_ns {
            Some(_) => {
                let t = Host::now_ns();
                self.running.push((node, w.name(), t));
                t
            }
            None => 0,
        };
        Some(Claimed {
            work: node,
            color,
            since_ns,
        })
    }

    /// Within `max_active`, and (ordered) nothing set aside.
    fn may_claim(&self) -> bool {
        self.active < self.cfg.max_active && (!self.cfg.ordered || self.collided.is_empty())
    }

    /// A claimed item was still running (queued again during a run on
    /// another worker): it waits on `collided` until that run is over.
    fn set_aside(&mut self, c: Claimed) {
        // SAFETY: claimed nodes are alive while PENDING.
        let w = unsafe { c.work.as_ref() };
        self.active -= 1;
        if self.cfg.watchdog_ns.is_some() {
            if let Some(i) = self.running.iter().position(|r| r.0 == c.work) {
                self.running.swap_remove(i);
            }
        }
        w.place.store(Place::COLLIDED, Ordering::Relaxed);
        self.counters.collisions += 1;
        // SAFETY: claimed: on no list, still pending here.
        unsafe { self.collided.push_back(c.work) };
    }

    /// Set-aside items whose run is over go back to the front of the run
    /// list, in their order.
    fn recheck_collided(&mut self) {
        let mut cur = self.collided.tail;
        while let Some(node) = NonNull::new(cur) {
            // SAFETY: list nodes are alive while PENDING.
            let w = unsafe { node.as_ref() };
            cur = self.collided.prev_of(w);
            // Acquire: pairs with `finish`'s Release; the next run starts
            // after the previous one's effects.
            if flags(w.state.load(Ordering::Acquire)) & RUNNING == 0 {
                // SAFETY: `w` is on `collided`.
                let node = unsafe { self.collided.remove(w) };
                w.place.store(Place::FIFO, Ordering::Relaxed);
                // SAFETY: just unlinked; pending here.
                unsafe { self.fifo.push_front(node) };
            }
        }
    }

    /// `true` if the earliest linked timer's deadline has passed.
    fn timer_due(&self) -> bool {
        self.timers.front().is_some_and(|node| {
            // SAFETY: list nodes are alive while PENDING.
            unsafe { node.as_ref() }.deadline() <= Host::now_ns()
        })
    }

    /// Transition 6 for every due timer; when stopping, transition 8 for
    /// the rest. Returns the time to the next deadline.
    fn fire_timers(&mut self, stopping: bool, after: &mut After) -> Option<u64> {
        let now = Host::now_ns();
        while let Some(node) = self.timers.front() {
            // SAFETY: list nodes are alive while PENDING.
            let w = unsafe { node.as_ref() };
            if w.deadline() > now {
                break;
            }
            // SAFETY: `w` is at the front of `timers`.
            let node = unsafe { self.timers.remove(w) };
            w.fire();
            self.counters.timers_fired += 1;
            // SAFETY: just unlinked; pending here.
            unsafe { self.enlist(node) };
        }
        if stopping {
            while let Some(node) = self.timers.pop_front() {
                // SAFETY: list nodes are alive while PENDING; the count (if
                // HELD) is released after the lock.
                let w = unsafe { node.as_ref() };
                w.place.store(Place::NONE, Ordering::Relaxed);
                if w.drop_pending() {
                    after.release.push(node);
                }
                self.counters.discarded += 1;
            }
        }
        self.timers.front().map(|node| {
            // SAFETY: as above.
            unsafe { node.as_ref() }.deadline().saturating_sub(now)
        })
    }
}

/// An intrusive doubly linked list through `Work::next`/`Work::prev`,
/// owned by a pool's lock. Nodes are stored as pushed, so a node pointer
/// read back keeps the provenance it was queued with. The head's `prev` is
/// not maintained (`pop_front` leaves it stale) and never read.
pub(super) struct List {
    head: *mut Work,
    tail: *mut Work,
    len: usize,
}

impl List {
    loom_const_fn! {
        fn new() -> List {
            List {
                head: ptr::null_mut(),
                tail: ptr::null_mut(),
                len: 0,
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// The node before `w` on this list (null for the head, whose `prev`
    /// is not maintained).
    fn prev_of(&self, w: &Work) -> *mut Work {
        if ptr::eq(self.head, w) {
            ptr::null_mut()
        } else {
            w.prev.load(Ordering::Relaxed)
        }
    }

    fn front(&self) -> Option<NonNull<Work>> {
        NonNull::new(self.head)
    }

    /// # Safety
    ///
    /// `node` is alive until removed and on no list.
    unsafe fn push_back(&mut self, node: NonNull<Work>) {
        // SAFETY: per the contract.
        let w = unsafe { node.as_ref() };
        w.next.store(ptr::null_mut(), Ordering::Relaxed);
        w.prev.store(self.tail, Ordering::Relaxed);
        match NonNull::new(self.tail) {
            // SAFETY: list nodes are alive.
            Some(t) => unsafe { t.as_ref() }
                .next
                .store(node.as_ptr(), Ordering::Relaxed),
            None => self.head = node.as_ptr(),
        }
        self.tail = node.as_ptr();
        self.len += 1;
    }

    /// # Safety
    ///
    /// As [`push_back`](List::push_back).
    unsafe fn push_front(&mut self, node: NonNull<Work>) {
        // SAFETY: per the contract.
        let w = unsafe { node.as_ref() };
        w.prev.store(ptr::null_mut(), Ordering::Relaxed);
        w.next.store(self.head, Ordering::Relaxed);
        match NonNull::new(self.head) {
            // SAFETY: list nodes are alive.
            Some(h) => unsafe { h.as_ref() }
                .prev
                .store(node.as_ptr(), Ordering::Relaxed),
            None => self.tail = node.as_ptr(),
        }
        self.head = node.as_ptr();
        self.len += 1;
    }

    /// Does not write the new head's `prev` (another item's cache line):
    /// the head's `prev` is never read (see `remove`).
    fn pop_front(&mut self) -> Option<NonNull<Work>> {
        let node = NonNull::new(self.head)?;
        // SAFETY: the head is on this list and alive.
        let next = unsafe { node.as_ref() }.next.load(Ordering::Relaxed);
        self.head = next;
        if next.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        Some(node)
    }

    /// Unlinks `w`; returns the node pointer as it was linked.
    ///
    /// # Safety
    ///
    /// `w` is on this list.
    unsafe fn remove(&mut self, w: &Work) -> NonNull<Work> {
        let prev = self.prev_of(w);
        let next = w.next.load(Ordering::Relaxed);
        let node = match NonNull::new(prev) {
            Some(p) => {
                // SAFETY: list nodes are alive.
                let p = unsafe { p.as_ref() };
                let node = p.next.load(Ordering::Relaxed);
                p.next.store(next, Ordering::Relaxed);
                node
            }
            None => core::mem::replace(&mut self.head, next),
        };
        match NonNull::new(next) {
            // SAFETY: list nodes are alive.
            Some(n) => unsafe { n.as_ref() }.prev.store(prev, Ordering::Relaxed),
            None => self.tail = prev,
        }
        self.len -= 1;
        debug_assert!(ptr::eq(node, w), "List::remove of a node on another list");
        NonNull::new(node).expect("a linked node is non-null")
    }

    /// Inserts after the last node whose key is `<= key` (FIFO among
    /// equal deadlines). Walks from the tail: new timers tend to be last.
    ///
    /// # Safety
    ///
    /// As [`push_back`](List::push_back).
    unsafe fn insert_sorted(
        &mut self,
        node: NonNull<Work>,
        key: u64,
        key_of: impl Fn(&Work) -> u64,
    ) {
        let mut after = self.tail;
        while let Some(a) = NonNull::new(after) {
            // SAFETY: list nodes are alive.
            let a = unsafe { a.as_ref() };
            if key_of(a) <= key {
                break;
            }
            after = self.prev_of(a);
        }
        let Some(a) = NonNull::new(after) else {
            // SAFETY: per the contract.
            unsafe { self.push_front(node) };
            return;
        };
        // SAFETY: per the contract; `a` is on this list.
        let (w, a) = unsafe { (node.as_ref(), a.as_ref()) };
        let next = a.next.load(Ordering::Relaxed);
        w.prev.store(after, Ordering::Relaxed);
        w.next.store(next, Ordering::Relaxed);
        a.next.store(node.as_ptr(), Ordering::Relaxed);
        match NonNull::new(next) {
            // SAFETY: list nodes are alive.
            Some(n) => unsafe { n.as_ref() }
                .prev
                .store(node.as_ptr(), Ordering::Relaxed),
            None => self.tail = node.as_ptr(),
        }
        self.len += 1;
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::List;
    use crate::workqueue::work::Work;
    use core::ptr::NonNull;
    use std::vec;
    use std::vec::Vec;

    static NODES: [Work; 6] = [const { Work::new("n", |_| {}) }; 6];

    fn node(i: usize) -> NonNull<Work> {
        NonNull::from(&NODES[i])
    }

    fn index(n: NonNull<Work>) -> usize {
        // SAFETY: every node is an element of NODES.
        unsafe { n.as_ptr().cast_const().offset_from(NODES.as_ptr()) as usize }
    }

    fn forward(l: &List) -> Vec<usize> {
        let mut v = Vec::new();
        let mut cur = l.head;
        while let Some(n) = NonNull::new(cur) {
            v.push(index(n));
            // SAFETY: list nodes are the statics above.
            cur = unsafe { n.as_ref() }
                .next
                .load(core::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(v.len(), l.len);
        v
    }

    fn backward(l: &List) -> Vec<usize> {
        let mut v = Vec::new();
        let mut cur = l.tail;
        while let Some(n) = NonNull::new(cur) {
            v.push(index(n));
            // SAFETY: as above.
            cur = l.prev_of(unsafe { n.as_ref() });
        }
        v.reverse();
        v
    }

    #[test]
    fn a_popped_head_leaves_a_stale_prev_that_is_never_followed() {
        let mut l = List::new();
        // SAFETY: the nodes are statics on no other list; this test owns them.
        unsafe {
            for i in 0..4 {
                l.push_back(node(i));
            }
        }
        assert_eq!(l.pop_front().map(index), Some(0));
        // Node 1 is the head; its `prev` still names node 0.
        assert_eq!((forward(&l), backward(&l)), (vec![1, 2, 3], vec![1, 2, 3]));
        // Sorted insertion walks back to the head and must stop there.
        // SAFETY: as above; keys: node i has key i * 10, node 4 goes first.
        unsafe { l.insert_sorted(node(4), 5, |w| index(NonNull::from(w)) as u64 * 10) };
        assert_eq!(
            (forward(&l), backward(&l)),
            (vec![4, 1, 2, 3], vec![4, 1, 2, 3])
        );
        assert_eq!(l.pop_front().map(index), Some(4));
        // Removing the head (stale prev) and a middle node.
        // SAFETY: both are on `l`.
        unsafe {
            l.remove(&NODES[1]);
            l.remove(&NODES[3]);
        }
        assert_eq!((forward(&l), backward(&l)), (vec![2], vec![2]));
        // SAFETY: as above.
        unsafe {
            l.push_front(node(5));
            l.insert_sorted(node(0), 25, |w| index(NonNull::from(w)) as u64 * 10);
        }
        assert_eq!(forward(&l), vec![5, 2, 0]);
        while l.pop_front().is_some() {}
        assert!(l.is_empty() && l.tail.is_null() && l.len == 0);
    }
}
