//! `fork()`: what a child inherits and how it is made usable.
//!
//! Design rules (the user-facing story is the crate docs' `# fork()`
//! section):
//!
//! - A `pthread_atfork` child handler runs in the child right after
//!   `fork()`, where only the forking thread exists. It is registered once
//!   per process, at load time (an ELF `.init_array` / Mach-O
//!   `__mod_init_func` constructor), so no top half and no drain ever
//!   calls `pthread_atfork` (which locks and may allocate); the std set-up
//!   paths call [`ensure_atfork`] too, for Unix targets without
//!   constructors. The handler bumps the fork [`generation`] and repairs
//!   what other threads of the parent left half-done.
//! - Tasklets are found through an intrusive, lock-free registry: a
//!   tasklet links itself the first time it is scheduled, before its count
//!   can leave zero (one Acquire load of a flag on every later schedule;
//!   one CAS push the first time: top-half safe, allocation-free). Its
//!   runtime is reached through the tasklet (`RuntimeFork`, a supertrait of
//!   `TaskletRuntime`), so only `&'static` objects are ever registered.
//! - In the child (single-threaded, so a plain rebuild is sound), for every
//!   runtime of a registered tasklet and every CPU: the `draining` flag is
//!   cleared (the drain that set it belonged to a thread that does not
//!   exist here) and the tasklet lists are walked to mark what is linked.
//!   Then for every registered tasklet: RUN is cleared (that run will never
//!   finish here), and a tasklet with pending schedules that is on no list
//!   (taken by a parent drain, or between its count CAS and its push in a
//!   parent top half) is linked again on the child's current CPU, so none
//!   is lost. A killed tasklet on no list gets its count cleared.
//! - Runtimes without tasklets are repaired lazily, per CPU: the first
//!   drain of a CPU in a new generation clears its `draining` flag (a
//!   `REPAIRING` stamp of that generation keeps two child threads from
//!   doing it at once; the
//!   loser returns `Busy`, and the winner goes on to drain the loser's
//!   work). Spawning drain threads repairs every CPU of the runtime first.
//!   Until a CPU is repaired, `raise` does not trust its flag: its kick
//!   check, when it finds the flag set (and only then), also compares the
//!   CPU's stamp with the generation and kicks if the stamp is older, so
//!   an event loop or drain thread that waits for kicks is woken even if
//!   no drain has run on that CPU in the child (a drain that finds
//!   nothing pending returns before it repairs). The raise's fast path,
//!   flag clear, is unchanged: one `fetch_or` and one load.
//! - `MpscMailbox`es are not registered (a mailbox used through `&self`
//!   may be moved or dropped after its first push, which a registry would
//!   not see); each repairs itself lazily against the generation this
//!   handler bumps: the first context of a new generation records the
//!   fork's next ticket (every later push checks the record first), and
//!   the generation's first consumer steps over the older tickets that were
//!   never published (`mailbox.rs`, "fork()" on `MpscMailbox`).
//! - The forking thread itself may be inside a drain (a bottom half that
//!   forks, for example to exec a program). Its drains are recorded in a
//!   thread-local stack (`DrainMark`): the CPU's `CpuFork`, and, while a
//!   tasklet callback of that drain runs, the `TakenList` of that list
//!   run: the tasklet it is running and the rest of the list it took.
//!   The child handler keeps those CPUs' `draining` flags and stamps
//!   them with the new generation, in every runtime (with tasklets or
//!   not), so no drain of the child, nested in the forking one or on a
//!   thread the child starts, clears the flag under the drain that goes
//!   on: it returns `Busy`, and the continuing drain runs the work. The
//!   continuing drain owns exactly what it holds: the tasklet it runs
//!   keeps RUN (and a HANDOFF, which its `finish` links; pending on no
//!   list without one, it is linked again as a schedule during its run
//!   would be), and the rest of its taken list is marked as listed, so
//!   it is not linked twice. Every other tasklet, of that runtime too, is
//!   repaired as above.
//!
//! # Atomic orderings
//!
//! The registry push is Release and the schedule path's check of the
//! registration flag is Acquire: a schedule that finds the tasklet
//! registered, then moves its count, is ordered after the push, so a child
//! that inherits the count inherits the link too (`fork` copies memory as
//! it is at the moment it runs; weakly ordered CPUs make every store that
//! precedes a Release store visible first). In detail: the push CAS
//! (Release) publishes `next` to the walk's Acquire load of the head; the
//! `LINKED` store (Release) pairs with the Acquire loads of the state in
//! `register`; a straggler record (Release) pairs with the walk's Acquire
//! load of its slot.
//!
//! The lazy per-CPU repair: a context that reads `REPAIRING` and returns
//! `Busy` leaves its raise to the repairer's drain, which then must take
//! it. It does, by the mask alone: the mask changes only by RMWs, so had
//! any swap of the repairer's drain come before our raise's `fetch_or`
//! (SeqCst, so Acquire) in the mask's modification order, the `fetch_or`
//! would synchronize with that swap (Release), the repairer's store of
//! the stamp would happen before our load, and we would read `gen`, not
//! `REPAIRING`. (If the repairer then finds the CPU taken, the drain that
//! took it runs the work, as in `softirq`'s own hand-off.) The stamp and
//! the `draining` flag are SeqCst too, as the drain's own hand-off is,
//! which gives a second argument (our raise, our load of `REPAIRING`, its
//! stamp, its swap, all in the single total order). Consistent with the
//! first one alone sufficing, the loom model passes with only the stamp
//! weakened (`fork_repair_load_relaxed`, `fork_repair_store_release`: not
//! listed as mutants, since they break nothing).
//!
//! The kick check (`CpuFork::stale`, read by `raise` only when it finds
//! `draining` set) loads the stamp Relaxed: a stale answer makes a
//! spurious kick; reading `gen` while the flag read was the parent's
//! means the raise's SeqCst load of the flag precedes the repairer's
//! SeqCst clear of it, so the raise's `fetch_or` precedes the mask swap of
//! the drain that follows every repair, which takes the work. The loom
//! model `a_raise_on_an_inherited_flag_is_drained_or_kicked` checks it.
//!
//! Both state machines are small types (`Registry`, `CpuFork`) whose
//! atomics come from `crate::sync`, so loom checks them:
//! `loom-tests/tests/fork.rs` reaches them through `loom_fork` (re-exported
//! as `bottomhalf::__loom_fork` under `--cfg bottomhalf_loom` only), and the process's
//! one `Registry` is a `static` outside loom.

use crate::backend::Backend;
use crate::softirq::Runtime;
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
use crate::sync::{ordering, AtomicBool, AtomicPtr, AtomicU32, Ordering};
use crate::tasklet::Tasklet;

#[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
pub(crate) use imp::{ensure_atfork, generation};

/// loom builds have no child handler (loom's atomics cannot live in the
/// statics it needs); the backend's part of it is then unused.
#[cfg(all(bottomhalf_loom, feature = "std", target_os = "linux"))]
const _: fn() = crate::backend::after_fork_child;

/// The fork state of one CPU of a runtime (a field of `CpuState`).
#[derive(Debug)]
pub(crate) struct CpuFork {
    /// The generation this CPU's `draining` flag is valid in, or that
    /// generation with the `REPAIRING` bit. Written by the first drain of
    /// the CPU in a new generation ([`CpuFork::repair`]), by the child
    /// handler, and by `spawn_drain_threads`.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    gen: crate::sync::AtomicU32,
    /// The generation in which the child handler last walked this CPU's
    /// tasklet lists (so a runtime with many tasklets is walked once).
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    walked: crate::sync::AtomicU32,
}

impl CpuFork {
    crate::sync::loom_const_fn! {
        pub(crate) fn new() -> CpuFork {
            CpuFork {
                #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
                gen: crate::sync::AtomicU32::new(0),
                #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
                walked: crate::sync::AtomicU32::new(0),
            }
        }
    }
}

/// Without `fork` (no `std`, or not Unix) a flag is never a parent's.
#[cfg(not(any(bottomhalf_loom, all(feature = "std", unix))))]
impl CpuFork {
    #[inline(always)]
    pub(crate) fn stale(&self) -> bool {
        false
    }
}

/// Set in `CpuFork::gen` (with the generation) while a context repairs
/// the CPU. A stamp left by a repairer of an older generation (a thread
/// of a parent that was itself a forked child) is merely stale.
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
const REPAIRING: u32 = 1 << 31;

#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
impl CpuFork {
    /// The lazy per-CPU repair (`Runtime::fork_enter`), for the CPU whose
    /// `draining` flag is `draining`, in fork generation `gen`: `None`
    /// while another context of this process repairs the CPU (that
    /// context goes on to drain it).
    #[inline(always)]
    pub(crate) fn repair(&self, draining: &AtomicBool, gen: u32) -> Option<()> {
        if self.gen.load(Ordering::Relaxed) == gen {
            return Some(());
        }
        self.repair_slow(draining, gen)
    }

    /// `true` if this CPU's `draining` flag may be a parent thread's (the
    /// stamp is not this generation's): `raise`'s kick check then kicks
    /// even though the flag is set. Read only on that check's rare path
    /// (the flag set).
    #[inline]
    pub(crate) fn stale(&self) -> bool {
        if cfg!(bh_mutant = "fork_kick_ignores_stamp") {
            return false;
        }
        // Relaxed: a wrong answer either way is harmless. Stale while a
        // child context repairs the CPU: a spurious kick. `gen` while the
        // flag the caller read is still the parent's: the caller's SeqCst
        // load of the flag precedes the repairer's SeqCst clear of it, so
        // its raise precedes the mask swap of the drain that follows every
        // repair (`drain`'s own, or the first one of each thread that
        // `spawn_drain_threads` starts), which takes the work.
        self.gen.load(Ordering::Relaxed) != generation()
    }

    #[cold]
    fn repair_slow(&self, draining: &AtomicBool, gen: u32) -> Option<()> {
        // SeqCst: the Busy side of the hand-off below, with the SeqCst
        // store of `gen` (module docs, "Atomic orderings": a second
        // argument, beside the mask's RMW chain that carries it).
        let mut seen = self
            .gen
            .load(ordering!("fork_repair_load_relaxed", SeqCst, Relaxed));
        loop {
            if seen == gen {
                return Some(());
            }
            if seen == gen | REPAIRING {
                // Another context of this process is repairing the CPU and
                // then drains it: like a drain already running there. Its
                // drain's swap of the mask comes after our raise in the
                // mask's modification order (module docs, "Atomic
                // orderings"), so it takes our work.
                return None;
            }
            match self.gen.compare_exchange(
                seen,
                gen | REPAIRING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    // Set in an older generation, by a thread that is gone:
                    // every drain of this CPU in this generation passes
                    // here first, and we hold the stamp.
                    let _ = draining.swap(false, Ordering::SeqCst);
                    // SeqCst: pairs with the SeqCst load above in a context
                    // that then returns Busy (module docs).
                    self.gen
                        .store(gen, ordering!("fork_repair_store_release", SeqCst, Release));
                    return Some(());
                }
                Err(now) => seen = now,
            }
        }
    }
}

/// The fork state of one tasklet (a field of `Tasklet`).
#[derive(Debug)]
pub(crate) struct TaskletFork {
    /// `NEW`, `LINKING` (a context is pushing it on the registry) or
    /// `LINKED`. Only moves forward.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    state: crate::sync::AtomicU8,
    /// The next registered tasklet. Written once, by the context that won
    /// `NEW → LINKING`, before its push publishes it.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    next: crate::sync::AtomicPtr<Tasklet>,
    /// The generation in which the child handler found it on a list (or
    /// linked it). Written only by the child handler.
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    listed: crate::sync::AtomicU32,
}

impl TaskletFork {
    crate::sync::loom_const_fn! {
        pub(crate) fn new() -> TaskletFork {
            TaskletFork {
                #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
                state: crate::sync::AtomicU8::new(0),
                #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
                next: crate::sync::AtomicPtr::new(core::ptr::null_mut()),
                #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
                listed: crate::sync::AtomicU32::new(0),
            }
        }
    }
}

#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
const NEW: u8 = 0;
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
const LINKING: u8 = 1;
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
const LINKED: u8 = 2;

/// Straggler records a [`Registry`] keeps.
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
const STRAGGLERS: usize = 16;

/// The registry of scheduled tasklets (one per process: `imp::REGISTRY`).
#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
pub(crate) struct Registry {
    /// Registered tasklets, newest first, linked through
    /// `TaskletFork::next`. Only `register` pushes; nothing is unlinked.
    head: AtomicPtr<Tasklet>,
    /// Tasklets scheduled for the first time while another context was
    /// still pushing them on the registry (`LINKING`): that context may be
    /// a parent thread the fork leaves behind, so the scheduler records the
    /// tasklet here too. Filled from the front, never emptied; the child
    /// handler reads both.
    stragglers: [AtomicPtr<Tasklet>; STRAGGLERS],
    /// Straggler records that found `stragglers` full (none in practice:
    /// it takes 17 tasklets each first scheduled by two contexts at once).
    untracked: AtomicU32,
}

#[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
impl Registry {
    crate::sync::loom_const_fn! {
        pub(crate) fn new() -> Registry {
            Registry {
                head: AtomicPtr::new(core::ptr::null_mut()),
                stragglers: crate::sync::array_of![AtomicPtr::new(core::ptr::null_mut()); STRAGGLERS],
                untracked: AtomicU32::new(0),
            }
        }
    }

    /// Links `t` the first time it is scheduled; after that one Acquire
    /// load (`Tasklet::fork_register`). Top-half safe.
    #[inline(always)]
    pub(crate) fn register(&self, t: &'static Tasklet) {
        // Acquire: pairs with the Release store of LINKED below (module
        // docs, "Atomic orderings").
        if t.fork
            .state
            .load(ordering!("fork_linked_acquire_relaxed", Acquire, Relaxed))
            != LINKED
        {
            self.register_slow(t);
        }
    }

    #[cold]
    fn register_slow(&self, t: &'static Tasklet) {
        let me = core::ptr::from_ref(t).cast_mut();
        match t.fork.state.compare_exchange(
            NEW,
            LINKING,
            Ordering::Acquire,
            // Acquire: as in `register` (it may read LINKED).
            ordering!("fork_linked_acquire_relaxed", Acquire, Relaxed),
        ) {
            Ok(_) => {
                let mut head = self.head.load(Ordering::Relaxed);
                loop {
                    t.fork.next.store(head, Ordering::Relaxed);
                    // Release: publishes `next` to the child handler's
                    // walk (its Acquire load of `head`); pushes are RMWs,
                    // so a walk that reads a later push sees ours too.
                    match self.head.compare_exchange_weak(
                        head,
                        me,
                        ordering!("fork_push_relaxed", Release, Relaxed),
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(now) => head = now,
                    }
                }
                // Release: pairs with the Acquire loads of the state in
                // `register`: a context that finds LINKED (and returns)
                // is ordered after the push.
                t.fork
                    .state
                    .store(LINKED, ordering!("fork_linked_relaxed", Release, Relaxed));
            }
            Err(LINKED) => {}
            Err(_) => {
                // Another context is pushing it right now; it may be a
                // thread that a fork is about to leave behind. Record it
                // where the child also looks; never wait for that context
                // (it may be the one this signal handler interrupted).
                for slot in &self.stragglers {
                    // Release: pairs with the walk's Acquire load of the
                    // slot.
                    match slot.compare_exchange(
                        core::ptr::null_mut(),
                        me,
                        Ordering::Release,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return,
                        Err(other) if other == me => return,
                        Err(_) => {}
                    }
                }
                self.untracked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every tasklet linked on the registry list, newest first. Never
    /// unlinks, so any walk reads a suffix of the final list.
    pub(crate) fn for_each_linked(&self, mut f: impl FnMut(&'static Tasklet)) {
        let mut node = self.head.load(Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: only `register` links nodes, and only `&'static
            // Tasklet`s; nodes are never unlinked.
            let t: &'static Tasklet = unsafe { &*node };
            node = t.fork.next.load(Ordering::Relaxed);
            f(t);
        }
    }

    /// Every straggler record, oldest first.
    pub(crate) fn for_each_straggler(&self, mut f: impl FnMut(&'static Tasklet)) {
        for slot in &self.stragglers {
            let node = slot.load(Ordering::Acquire);
            if node.is_null() {
                break;
            }
            // SAFETY: `register` stores only `&'static Tasklet`s.
            f(unsafe { &*node });
        }
    }

    /// Every registered tasklet, possibly more than once: the list, then
    /// the straggler records.
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    pub(crate) fn for_each_registered(&self, mut f: impl FnMut(&'static Tasklet)) {
        self.for_each_linked(&mut f);
        self.for_each_straggler(f);
    }

    /// Straggler records lost because the table was full.
    #[cfg(bottomhalf_loom)]
    pub(crate) fn untracked(&self) -> u32 {
        self.untracked.load(Ordering::Relaxed)
    }
}

/// Marks the calling thread as draining one CPU of a runtime until
/// dropped (see `Runtime::fork_enter`).
#[must_use]
pub(crate) struct DrainMark {
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    _not_send: core::marker::PhantomData<*const ()>,
}

/// What a tasklet list run (`TaskletList::run`) holds while a callback
/// runs: the tasklet it runs and the rest of the list it took. Recorded in
/// the thread's innermost drain mark ([`TakenList::mark`]), so that the
/// child handler of a fork made from that callback leaves exactly these to
/// the run, which goes on in the child. Empty without `fork`.
pub(crate) struct TakenList {
    /// The tasklet whose callback runs, or null between callbacks.
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    running: core::cell::Cell<*const Tasklet>,
    /// The tasklets the run has taken and not started yet, linked through
    /// `next` (the run's own links, in run order).
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    rest: core::cell::Cell<*const Tasklet>,
}

impl TakenList {
    #[inline(always)]
    pub(crate) fn new() -> TakenList {
        TakenList {
            #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
            running: core::cell::Cell::new(core::ptr::null()),
            #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
            rest: core::cell::Cell::new(core::ptr::null()),
        }
    }

    /// Records the list in the calling thread's innermost drain mark until
    /// the returned guard is dropped (also when a callback unwinds).
    #[inline(always)]
    pub(crate) fn mark(&self) -> TakenMark<'_> {
        TakenMark {
            #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
            slot: imp::mark_taken(self),
            _list: core::marker::PhantomData,
        }
    }

    /// Before `t`'s callback: `t` runs, and `rest` (null or the next
    /// tasklet taken, linked through `next`) is still the run's.
    #[inline(always)]
    pub(crate) fn running(&self, t: &'static Tasklet, rest: *mut Tasklet) {
        #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
        {
            self.running.set(t);
            self.rest.set(rest);
        }
        #[cfg(not(all(feature = "std", unix, not(bottomhalf_loom))))]
        let _ = (t, rest);
    }

    /// After the callback returned (or unwound).
    #[inline(always)]
    pub(crate) fn ran(&self) {
        #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
        self.running.set(core::ptr::null());
    }
}

/// Keeps a [`TakenList`] recorded in the thread's drain mark.
#[must_use]
pub(crate) struct TakenMark<'a> {
    /// The drain stack slot it is recorded in (`usize::MAX`: none).
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    slot: usize,
    _list: core::marker::PhantomData<&'a TakenList>,
}

mod sealed {
    /// A runtime's part of the fork repair, reached through a tasklet's
    /// `&'static dyn TaskletRuntime` (this is its supertrait). Implemented
    /// by [`Runtime`](crate::Runtime) only.
    pub trait RuntimeFork {
        /// In the child handler: clears the stale `draining` flag of every
        /// CPU (except those the forking thread drains) and marks the
        /// tasklets linked on its lists.
        #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
        #[doc(hidden)]
        fn fork_child_runtime(&self, gen: u32);
    }
}
pub(crate) use sealed::RuntimeFork;

impl<B: Backend, const N: usize, const L: usize> RuntimeFork for Runtime<B, N, L> {
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    fn fork_child_runtime(&self, gen: u32) {
        imp::child_runtime(self, gen);
    }
}

impl<B: Backend, const N: usize, const L: usize> Runtime<B, N, L> {
    /// The drain's fork hook, called once per drain before it claims the
    /// CPU's level `lvl` (each level has its own `draining` flag and its
    /// own stamps): in a child, the first drain of the CPU clears the `draining`
    /// flag a parent thread left set (or returns `None` while another
    /// context of the child is doing that, as for a drain already
    /// running on the CPU; that context goes on to drain). Then marks
    /// the thread as draining this CPU until the mark is dropped, for the
    /// child handler of a fork made from inside this drain.
    #[inline(always)]
    pub(crate) fn fork_enter(&self, cpu: usize, lvl: usize) -> Option<DrainMark> {
        let ls = &self.cpu_state(cpu).levels[lvl];
        #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
        {
            ls.fork.repair(&ls.draining, generation())?;
        }
        #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
        {
            Some(imp::mark_drain(&ls.fork))
        }
        #[cfg(not(all(feature = "std", unix, not(bottomhalf_loom))))]
        {
            // No forking thread to record (loom models have no child
            // handler); without `fork` the stamps are empty.
            let _ = &ls.fork;
            Some(DrainMark {})
        }
    }

    /// Clears the `draining` flags a parent thread left set, on every CPU,
    /// if this process is a child forked since they were last checked. A
    /// no-op in the process that first loaded the crate. Set-up only (it
    /// may have to wait for another thread's repair of a CPU).
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    pub(crate) fn repair_after_fork(&self) {
        let gen = generation();
        for cpu in 0..N {
            for ls in &self.cpu_state(cpu).levels {
                while ls.fork.repair(&ls.draining, gen).is_none() {
                    crate::sync::spin_wait();
                }
            }
        }
    }
}

impl crate::tasklet::TaskletList {
    /// Calls `f` for every tasklet linked on the list. Only where nothing
    /// else runs (the child handler): the links are read without owning
    /// them.
    #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
    pub(crate) fn for_each_linked(&self, mut f: impl FnMut(&'static Tasklet)) {
        let mut node = self.head.load(crate::sync::Ordering::Acquire);
        while !node.is_null() {
            // SAFETY: `push` links only `&'static Tasklet`s; in the child
            // handler no other context changes the links.
            let t: &'static Tasklet = unsafe { &*node };
            node = t.next.load(crate::sync::Ordering::Relaxed);
            f(t);
        }
    }
}

impl Tasklet {
    /// Links the tasklet into the fork registry the first time it is
    /// scheduled; after that one Acquire load. Called by `try_schedule`
    /// before the count CAS. Top-half safe.
    #[inline(always)]
    pub(crate) fn fork_register(&'static self) {
        #[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
        imp::REGISTRY.register(self);
        // loom: the models register into a `Registry` of their own
        // (`loom_fork::Registry`), since a process-wide one cannot hold
        // loom atomics.
        #[cfg(not(all(feature = "std", unix, not(bottomhalf_loom))))]
        let _ = (&self.fork, self.runtime());
    }
}

/// The fork generation as the mailboxes see it: [`generation`] where a
/// process can fork (and under loom, where a model sets it), 0 elsewhere,
/// so a build without `fork` folds every check away. `MpscMailbox` repairs
/// itself lazily with it (see `mailbox.rs`, "fork()"): mailboxes are not
/// registered here, since a mailbox borrowed as `&self` may be moved or
/// dropped after its first push, which a registry could not see.
#[inline(always)]
pub(crate) fn mailbox_generation() -> u32 {
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    {
        generation()
    }
    #[cfg(not(any(bottomhalf_loom, all(feature = "std", unix))))]
    {
        0
    }
}

/// The fork generation under `--cfg bottomhalf_loom`: set by a model's main thread
/// before it spawns anything ([`loom_fork::set_generation`]), as the child
/// handler sets it before any thread of the child exists; read with the
/// production code's `Relaxed` load. Not a loom atomic: nothing changes it
/// while modelled threads run, so it adds no interleavings to the models
/// that never fork.
#[cfg(bottomhalf_loom)]
static GENERATION: crate::sync::UnmodelledAtomicU32 = crate::sync::UnmodelledAtomicU32::new(0);

#[cfg(bottomhalf_loom)]
fn generation() -> u32 {
    GENERATION.load(Ordering::Relaxed)
}

/// What the loom models in `loom-tests/tests/fork.rs` reach of this module
/// (re-exported as `bottomhalf::__loom_fork`; only under `--cfg bottomhalf_loom`).
#[cfg(bottomhalf_loom)]
#[doc(hidden)]
pub mod loom_fork {
    use crate::backend::Backend;
    use crate::softirq::Runtime;
    use crate::sync::Ordering;
    use crate::tasklet::Tasklet;

    /// The `REPAIRING` bit of a CPU's fork stamp.
    pub const REPAIRING: u32 = super::REPAIRING;

    /// The fork registry, as a value: `register` is what
    /// `Tasklet::schedule` calls on the process-wide one.
    pub struct Registry(super::Registry);

    impl Default for Registry {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Registry {
        /// An empty registry.
        pub fn new() -> Self {
            Registry(super::Registry::new())
        }

        /// `Tasklet::schedule`'s registration step.
        pub fn register(&self, t: &'static Tasklet) {
            self.0.register(t);
        }

        /// The child handler's walk of the list (newest first).
        pub fn for_each_linked(&self, f: impl FnMut(&'static Tasklet)) {
            self.0.for_each_linked(f);
        }

        /// The child handler's walk of the straggler records.
        pub fn for_each_straggler(&self, f: impl FnMut(&'static Tasklet)) {
            self.0.for_each_straggler(f);
        }

        /// Straggler records lost to a full table.
        pub fn untracked(&self) -> u32 {
            self.0.untracked()
        }
    }

    /// Sets the process's fork generation (a model's main thread, before
    /// it spawns anything: as the child handler does). Below `REPAIRING`.
    pub fn set_generation(gen: u32) {
        assert!(gen < REPAIRING);
        super::GENERATION.store(gen, Ordering::Relaxed);
    }

    /// Leaves CPU `cpu` of `rt` as a parent thread's drain leaves it when
    /// the parent forks: `draining` set, and the CPU's fork stamp
    /// `stamp` (an older generation, possibly with `REPAIRING`).
    pub fn inherit_drain<B: Backend, const N: usize, const L: usize>(
        rt: &Runtime<B, N, L>,
        cpu: usize,
        stamp: u32,
    ) {
        let st = &rt.cpu_state(cpu).levels[0];
        st.draining.store(true, Ordering::SeqCst);
        st.fork.gen.store(stamp, Ordering::SeqCst);
    }

    /// CPU `cpu`'s `draining` flag (level 0).
    pub fn draining<B: Backend, const N: usize, const L: usize>(
        rt: &Runtime<B, N, L>,
        cpu: usize,
    ) -> bool {
        rt.cpu_state(cpu).levels[0].draining.load(Ordering::SeqCst)
    }

    /// CPU `cpu`'s fork stamp (level 0).
    pub fn stamp<B: Backend, const N: usize, const L: usize>(
        rt: &Runtime<B, N, L>,
        cpu: usize,
    ) -> u32 {
        rt.cpu_state(cpu).levels[0].fork.gen.load(Ordering::SeqCst)
    }
}

#[cfg(all(feature = "std", unix, not(bottomhalf_loom)))]
mod imp {
    use core::cell::Cell;
    use core::marker::PhantomData;
    use core::ptr;

    use super::{CpuFork, DrainMark, Registry, TakenList, TakenMark, REPAIRING};
    use crate::backend::Backend;
    use crate::softirq::Runtime;
    use crate::sync::{AtomicU32, AtomicU8, Ordering};
    use crate::tasklet::{Tasklet, COUNT_MASK, HANDOFF, KILLED, PARKED, RUN};

    /// How many `fork()`s separate this process from the one that first
    /// loaded the crate (0 in that one). Bumped only by the child handler.
    static GENERATION: AtomicU32 = AtomicU32::new(0);

    /// 0: the child handler is not registered; 1: registering; 2:
    /// registered.
    static ATFORK: AtomicU8 = AtomicU8::new(0);

    /// The process's registry of scheduled tasklets.
    pub(super) static REGISTRY: Registry = Registry::new();

    /// Drains this thread is inside, innermost last: (address of the
    /// drained CPU's `CpuFork`, address of the `TakenList` of the tasklet
    /// list run that drain is in, or 0). Nested drains beyond the stack's
    /// size are only counted.
    const STACK: usize = 4;

    std::thread_local! {
        /// `const`, no destructor: one TLS access, signal-handler safe.
        static DRAINS: [Cell<(usize, usize)>; STACK] = const { [const { Cell::new((0, 0)) }; STACK] };
        static DEPTH: Cell<usize> = const { Cell::new(0) };
    }

    /// The fork generation of the calling process.
    #[inline]
    pub(crate) fn generation() -> u32 {
        GENERATION.load(Ordering::Relaxed)
    }

    /// Registers the child handler once per process tree (a child inherits
    /// the registration). Set-up only: `pthread_atfork` may allocate.
    pub(crate) fn ensure_atfork() {
        if cfg!(miri) || ATFORK.load(Ordering::Acquire) == 2 {
            return;
        }
        if ATFORK
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: `child` is an `extern "C" fn()` that only touches
            // atomics and calls top-half-safe (async-signal-safe) code; no
            // prepare/parent hooks.
            unsafe { libc::pthread_atfork(None, None, Some(child)) };
            ATFORK.store(2, Ordering::Release);
        }
    }

    /// Registers the child handler when the crate is loaded, before `main`
    /// and before any other thread exists, so that neither a top half nor
    /// a drain ever has to.
    #[cfg(all(
        not(miri),
        any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly",
            target_os = "illumos",
            target_os = "solaris",
            target_vendor = "apple"
        )
    ))]
    #[used]
    #[cfg_attr(not(target_vendor = "apple"), link_section = ".init_array")]
    #[cfg_attr(target_vendor = "apple", link_section = "__DATA,__mod_init_func")]
    static AT_LOAD: extern "C" fn() = {
        extern "C" fn at_load() {
            ensure_atfork();
        }
        at_load
    };

    /// The child handler: runs in the child, which has one thread.
    extern "C" fn child() {
        let gen = GENERATION.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        // Generations stay below the REPAIRING bit.
        let gen = if gen >= REPAIRING {
            GENERATION.store(1, Ordering::Relaxed);
            1
        } else {
            gen
        };
        // The backend first: a relink below kicks, and a kick must reach
        // the child's event fd, not the parent's.
        #[cfg(target_os = "linux")]
        crate::backend::after_fork_child();
        repair_in_child(gen);
    }

    /// The forking thread's drains, as recorded by `mark_drain`; `None` if
    /// they overflowed the stack (then nothing is known to be safe).
    fn forking_thread_drains() -> Option<([(usize, usize); STACK], usize)> {
        let depth = DEPTH.with(Cell::get);
        if depth > STACK {
            return None;
        }
        let mut drains = [(0, 0); STACK];
        DRAINS.with(|d| {
            for (i, slot) in d.iter().enumerate().take(depth) {
                drains[i] = slot.get();
            }
        });
        Some((drains, depth))
    }

    fn repair_in_child(gen: u32) {
        let Some((drains, depth)) = forking_thread_drains() else {
            // More nested drains than recorded: leave everything as it is
            // rather than break a drain this thread is still inside.
            return;
        };
        let drains = &drains[..depth];
        // 0. The forking thread's own drains go on in the child. Their
        //    CPUs keep `draining`, stamped with this generation so that no
        //    lazy repair clears it under them (in every runtime, with
        //    tasklets or not); the tasklet each one runs keeps RUN, and the
        //    rest of the list it took stays its own (marked as listed, so
        //    it is not linked again).
        let mut running = [ptr::null::<Tasklet>(); STACK];
        for (here, &(cpu, taken)) in running.iter_mut().zip(drains) {
            // SAFETY: the `CpuFork` of a CPU this thread is draining: the
            // drain's frame, which borrows the runtime, is below us on this
            // thread's stack (the child handler runs inside it).
            let cpu = unsafe { &*(cpu as *const CpuFork) };
            cpu.gen.store(gen, Ordering::SeqCst);
            if taken == 0 {
                continue;
            }
            // SAFETY: a `TakenList` on the frame of a list run of that
            // drain; its mark is removed before the run returns or unwinds,
            // so the run is below us on this stack too.
            let taken = unsafe { &*(taken as *const TakenList) };
            *here = taken.running.get();
            let mut node = taken.rest.get();
            while !node.is_null() {
                // SAFETY: taken nodes are `&'static Tasklet`s (`push` links
                // only those); the run has not started them, so their
                // links are its own and unchanged.
                let t: &'static Tasklet = unsafe { &*node };
                t.fork.listed.store(gen, Ordering::Relaxed);
                node = t.next.load(Ordering::Relaxed);
            }
        }
        // 1. Runtimes: clear stale `draining` flags, mark linked tasklets.
        REGISTRY.for_each_registered(|t| t.runtime().fork_child_runtime(gen));
        // 2. Tasklets: clear RUN, relink what is pending on no list.
        REGISTRY.for_each_registered(|t| {
            child_tasklet(t, gen, running.contains(&ptr::from_ref(t)));
        });
    }

    /// Step 1 for one runtime (`RuntimeFork::fork_child_runtime`).
    pub(super) fn child_runtime<B: Backend, const N: usize, const L: usize>(
        rt: &Runtime<B, N, L>,
        gen: u32,
    ) {
        let drains = forking_thread_drains();
        for st in (0..N).flat_map(|cpu| rt.cpu_state(cpu).levels.iter()) {
            if st.fork.walked.load(Ordering::Relaxed) == gen {
                continue;
            }
            st.fork.walked.store(gen, Ordering::Relaxed);
            let addr = ptr::from_ref(&st.fork) as usize;
            let ours = drains.is_some_and(|(d, n)| d[..n].iter().any(|&(c, _)| c == addr));
            if !ours {
                let _ = st.draining.swap(false, Ordering::SeqCst);
            }
            st.fork.gen.store(gen, Ordering::SeqCst);
            for list in &st.tasklets {
                list.for_each_linked(|t| t.fork.listed.store(gen, Ordering::Relaxed));
            }
        }
    }

    /// Step 2 for one tasklet; `running_here`: the forking thread is in
    /// its callback (that run goes on in the child).
    fn child_tasklet(t: &'static Tasklet, gen: u32, running_here: bool) {
        let s = t.state.load(Ordering::Relaxed);
        let listed = t.fork.listed.load(Ordering::Relaxed) == gen;
        // A run on another parent thread never finishes here: clear RUN. A
        // hand-off (HANDOFF, only with RUN) was for that runner's `finish`,
        // which never comes either: the tasklet is on no list and is
        // relinked below like any other pending one. The forking thread's
        // own run keeps both: its `finish` clears RUN and links a tasklet
        // handed off to it.
        let mut new = if running_here {
            s
        } else {
            s & !(RUN | HANDOFF)
        };
        let linked_by_finish = running_here && s & HANDOFF != 0;
        // Pending on no list. Running here, it is linked as a schedule
        // during its run would link it (a drain that starts it before the
        // run ends hands it off to this run's `finish`).
        let relink =
            !listed && !linked_by_finish && s & COUNT_MASK != 0 && s & (PARKED | KILLED) == 0;
        if !listed && !linked_by_finish && s & KILLED != 0 && s & PARKED == 0 {
            // Nobody will drop this pending run: no drain holds it.
            new &= !COUNT_MASK;
        }
        if new != s {
            t.state.store(new, Ordering::Relaxed);
        }
        if relink {
            t.fork.listed.store(gen, Ordering::Relaxed);
            // The link is ours: the count is non-zero and the context that
            // owned the link does not exist here.
            t.runtime().enqueue(t, &Cell::new(false));
        }
    }

    /// Pushes the drained CPU on the thread's drain stack.
    #[inline(always)]
    pub(super) fn mark_drain(cpu: &CpuFork) -> DrainMark {
        DEPTH.with(|d| {
            let depth = d.get();
            if depth < STACK {
                DRAINS.with(|s| s[depth].set((ptr::from_ref(cpu) as usize, 0)));
            }
            d.set(depth + 1);
        });
        DrainMark {
            _not_send: PhantomData,
        }
    }

    /// Records `list` in the innermost drain's slot; returns the slot, or
    /// `usize::MAX` outside a recorded drain.
    #[inline(always)]
    pub(super) fn mark_taken(list: &TakenList) -> usize {
        let depth = DEPTH.with(Cell::get);
        if depth == 0 || depth > STACK {
            return usize::MAX;
        }
        let slot = depth - 1;
        DRAINS.with(|s| {
            let (cpu, _) = s[slot].get();
            s[slot].set((cpu, ptr::from_ref(list) as usize));
        });
        slot
    }

    impl Drop for TakenMark<'_> {
        #[inline(always)]
        fn drop(&mut self) {
            if self.slot < STACK {
                DRAINS.with(|s| {
                    let (cpu, _) = s[self.slot].get();
                    s[self.slot].set((cpu, 0));
                });
            }
        }
    }

    impl Drop for DrainMark {
        #[inline(always)]
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }

    #[cfg(test)]
    pub(super) fn for_each_registered_for_test(f: impl FnMut(&'static Tasklet)) {
        REGISTRY.for_each_registered(f);
    }

    #[cfg(test)]
    pub(super) fn depth_for_test() -> usize {
        DEPTH.with(Cell::get)
    }
}

#[cfg(all(test, feature = "std", unix, not(bottomhalf_loom)))]
mod tests {
    use super::imp;
    use crate::{Config, Host, Runtime, Tasklet, Vector};

    #[test]
    fn a_scheduled_tasklet_is_registered_once() {
        static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        static T: Tasklet = Tasklet::new(&RT, || {});
        T.schedule();
        T.schedule();
        let _ = RT.drain();
        T.schedule();
        let _ = RT.drain();
        let mut seen = 0;
        imp::for_each_registered_for_test(|t| {
            if core::ptr::eq(t, &T) {
                seen += 1;
            }
        });
        assert_eq!(seen, 1);
    }

    #[test]
    fn the_drain_mark_is_popped_also_when_a_handler_panics() {
        static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        const V: Vector = Vector::new(3);
        RT.register(V, "PANIC", |_| panic!("handler panics"))
            .unwrap();
        RT.raise(V);
        let before = imp::depth_for_test();
        assert!(std::panic::catch_unwind(|| RT.drain()).is_err());
        assert_eq!(imp::depth_for_test(), before);
    }
}
