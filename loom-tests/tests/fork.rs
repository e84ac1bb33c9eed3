//! loom models: the `fork()` registry of scheduled tasklets, the lazy
//! per-CPU repair of a stale `draining` flag in a child, and the kick of a
//! raise that finds such a flag.
//!
//! See `README.md` ("fork") for what each model checks and which mutants it
//! catches. Both state machines live in `src/fork.rs`; the models reach
//! them through `bottomhalf::__loom_fork` (hidden, `--cfg bottomhalf_loom` only).

#![cfg(bottomhalf_loom)]

use bottomhalf::__loom_fork::{self as fork, Registry, REPAIRING};
use bottomhalf::{Backend, Config, DrainOutcome, Runtime, Tasklet, Vector, WakeWord};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, InFlight, LoomCpu};
use loom::cell::UnsafeCell;

const VA: Vector = Vector::new(1);
const VB: Vector = Vector::new(2);
/// Raised in the parent before the fork, never drained there.
const VC: Vector = Vector::new(3);

/// The child's fork generation in the repair models.
const GEN: u32 = 2;

/// Per-execution state the handlers reach through `CTX`.
struct Ctx {
    /// Top-half data for `VA`: written once before `raise(VA)`, read by
    /// `VA`'s handler (a loom cell: a run without a happens-before edge
    /// from the write is a causality violation).
    data_a: UnsafeCell<u32>,
    /// The same for `VB`.
    data_b: UnsafeCell<u32>,
    /// Handler state private to CPU 0, written by every run: two drains of
    /// the CPU at once (a repair that let a second drain in) race on it.
    cpu0_state: UnsafeCell<u32>,
    /// Handlers of CPU 0 in flight (never more than one).
    in_flight: InFlight,
    runs_a: Count,
    runs_b: Count,
    runs_c: Count,
    /// Kicks of `KickCount` (the kick model).
    kicks: Count,
}

/// [`LoomCpu`] whose `kick` is counted: a raise that leaves its work to
/// nobody must have kicked.
struct KickCount;

impl Backend for KickCount {
    fn current_cpu() -> usize {
        LoomCpu::current_cpu()
    }

    fn now_ns() -> u64 {
        0
    }

    fn kick(_cpu: usize, _level: bottomhalf::Level, _wake: &WakeWord) {
        CTX.kicks.inc();
    }
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    static ref CTX: Ctx = Ctx {
        data_a: UnsafeCell::new(0),
        data_b: UnsafeCell::new(0),
        cpu0_state: UnsafeCell::new(0),
        in_flight: InFlight::new(),
        runs_a: Count::new(),
        runs_b: Count::new(),
        runs_c: Count::new(),
        kicks: Count::new(),
    };
    /// The runtime of the kick model.
    static ref RTK: Runtime<KickCount, 1> = Runtime::new(Config::DEFAULT);
    /// Tasklets of the registry model (never scheduled: only registered).
    static ref TA: Tasklet = Tasklet::new(&*RT, || {});
    static ref TB: Tasklet = Tasklet::new(&*RT, || {});
    static ref REG: Registry = Registry::new();
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

fn name(t: &'static Tasklet) -> char {
    if core::ptr::eq(t, &*TA) {
        'A'
    } else if core::ptr::eq(t, &*TB) {
        'B'
    } else {
        panic!("the walk reached a tasklet that was never registered")
    }
}

/// What the child handler's walk finds: the list (newest first), then the
/// straggler records.
#[derive(Debug)]
struct Walk {
    linked: Vec<char>,
    stragglers: Vec<char>,
}

impl Walk {
    /// Walks `REG` as the child handler does (a list walk that loops is
    /// reported as a cycle instead of running forever).
    fn now() -> Walk {
        let mut linked = Vec::new();
        REG.for_each_linked(|t| {
            linked.push(name(t));
            assert!(
                linked.len() <= 2,
                "the registry list has a cycle: {linked:?}"
            );
        });
        let mut stragglers = Vec::new();
        REG.for_each_straggler(|t| stragglers.push(name(t)));
        Walk { linked, stragglers }
    }

    fn finds(&self, t: char) -> bool {
        self.linked.contains(&t) || self.stragglers.contains(&t)
    }
}

/// A context registers (as `Tasklet::schedule` does) and then forks: the
/// child handler's walk runs on what this context sees. It must find every
/// tasklet whose registration this context has completed, whether it
/// pushed it itself, found it `LINKED` (pushed by another context), or
/// found it `LINKING` and recorded a straggler.
fn register_then_fork(tasklets: &[&'static Tasklet]) -> Walk {
    for t in tasklets {
        REG.register(t);
    }
    let walk = Walk::now();
    for t in tasklets {
        assert!(
            walk.finds(name(t)),
            "{} was registered here, but a child forked now would not find it: {walk:?}",
            name(t)
        );
    }
    walk
}

/// Three contexts schedule `A` for the first time at once; one of them
/// schedules `B` first. Each "forks" right after (walks the registry as
/// the child handler would) and must find what it registered. After the
/// join: the list holds `A` and `B` exactly once each and no cycle, `A`
/// has at most one straggler record, nothing was lost to a full table,
/// and every walk made during the model read a suffix of the final list
/// (nodes are never unlinked and `next` is written before the push
/// publishes it, so a walk that stops early read a stale link).
#[test]
fn registry_finds_every_registered_tasklet() {
    model(|| {
        bind_cpu(0);
        let _ = (&*RT, &*TA, &*TB, &*REG);
        let t1 = spawn_on(0, || register_then_fork(&[&TB, &TA]));
        let t2 = spawn_on(0, || register_then_fork(&[&TA]));
        let t3 = spawn_on(0, || register_then_fork(&[&TA]));
        let walks = [t1.join().unwrap(), t2.join().unwrap(), t3.join().unwrap()];

        let end = Walk::now();
        let mut sorted = end.linked.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            ['A', 'B'],
            "after every registration returned, the list is {:?}",
            end.linked
        );
        assert!(
            end.stragglers.len() <= 1 && !end.stragglers.contains(&'B'),
            "straggler records {:?}: only A is contended, and once is enough",
            end.stragglers
        );
        assert_eq!(REG.untracked(), 0);
        for w in &walks {
            assert!(
                end.linked.ends_with(&w.linked),
                "a walk read {:?}, not a suffix of the list {:?}: a stale link",
                w.linked,
                end.linked
            );
        }
    });
}

// ---------------------------------------------------------------------------
// Lazy per-CPU repair
// ---------------------------------------------------------------------------

/// The work every handler does: enter the overlap detector, touch the
/// CPU-private state, leave.
fn serialized(body: impl FnOnce()) {
    CTX.in_flight.enter("softirq handlers of one CPU");
    // SAFETY (model): handlers of one CPU never overlap; loom checks it.
    CTX.cpu0_state.with_mut(|p| unsafe { *p += 1 });
    body();
    CTX.in_flight.leave();
}

fn handler_a(_cpu: usize) {
    serialized(|| {
        // SAFETY (model): written before `raise(VA)`; loom checks the
        // happens-before edge.
        let v = CTX.data_a.with(|p| unsafe { *p });
        assert_eq!(
            v, 1,
            "VA's handler ran without the data written before raise"
        );
        CTX.runs_a.inc();
    });
}

fn handler_b(_cpu: usize) {
    serialized(|| {
        // SAFETY (model): as in `handler_a`.
        let v = CTX.data_b.with(|p| unsafe { *p });
        assert_eq!(
            v, 1,
            "VB's handler ran without the data written before raise"
        );
        CTX.runs_b.inc();
    });
}

fn handler_c(_cpu: usize) {
    serialized(|| {
        CTX.runs_c.inc();
    });
}

/// A child of `fork()` whose CPU 0 was being drained by a parent thread
/// (which does not exist in the child), with `VC` raised in the parent and
/// not yet taken, and the CPU's fork stamp `stamp` from an older
/// generation. The runtime has no tasklets, so the child handler does not
/// touch it: the first drain of CPU 0 in generation `GEN` repairs it.
/// Two child threads on CPU 0 each write their data, raise and drain, as
/// at an interrupt exit.
///
/// With no further drain: neither drain returns `Remaining`, at least one
/// returns `Complete` (a drain that returns `Busy` because the other is
/// repairing leaves its raise to the repairer's drain, which does take
/// it), nothing is pending, `VA`, `VB` and the inherited `VC` each ran
/// exactly once, handlers never overlapped and were ordered (`cpu0_state`),
/// and CPU 0 ends with `draining` clear and the stamp at `GEN`.
fn child_repairs_inherited_drain(stamp: u32) {
    model(move || {
        bind_cpu(0);
        RT.register(VA, "A", handler_a).unwrap();
        RT.register(VB, "B", handler_b).unwrap();
        RT.register(VC, "C", handler_c).unwrap();
        let _ = &*CTX;
        // The parent: VC raised, a drain of CPU 0 running when it forked.
        RT.raise(VC);
        fork::inherit_drain(&*RT, 0, stamp);
        // The child handler: a new generation.
        fork::set_generation(GEN);

        let a = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_a`, before
            // raising.
            CTX.data_a.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VA);
            RT.drain()
        });
        let b = spawn_on(0, || {
            // SAFETY (model): as above, for `data_b`.
            CTX.data_b.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VB);
            RT.drain()
        });
        let oa = a.join().unwrap();
        let ob = b.join().unwrap();

        assert_ne!(oa, DrainOutcome::Remaining);
        assert_ne!(ob, DrainOutcome::Remaining);
        assert!(
            oa == DrainOutcome::Complete || ob == DrainOutcome::Complete,
            "both drains returned Busy: {oa:?} {ob:?}"
        );
        assert_eq!(
            RT.pending(0),
            0,
            "a raise was stranded: both drains returned ({oa:?}, {ob:?}) with it pending"
        );
        assert_eq!(CTX.runs_a.get(), 1, "VA runs");
        assert_eq!(CTX.runs_b.get(), 1, "VB runs");
        assert_eq!(CTX.runs_c.get(), 1, "the inherited VC runs");
        assert!(!fork::draining(&*RT, 0), "CPU 0 is left marked draining");
        assert_eq!(fork::stamp(&*RT, 0), GEN);
    });
}

/// The stamp is the parent's generation: the parent repaired CPU 0 once
/// (or, with 0, never forked).
#[test]
fn child_repairs_a_drain_left_by_the_parent() {
    child_repairs_inherited_drain(GEN - 1);
}

/// The stamp is `REPAIRING` of the parent's generation: a parent thread
/// was itself repairing CPU 0 when the parent forked. In the child that
/// stamp is stale, not a repair in progress: it must not make every drain
/// `Busy`.
#[test]
fn a_stale_repairing_stamp_is_not_a_wedge() {
    child_repairs_inherited_drain((GEN - 1) | REPAIRING);
}

// ---------------------------------------------------------------------------
// The kick of a raise on an inherited flag
// ---------------------------------------------------------------------------

/// A child whose CPU 0 was being drained by a parent thread (stamp of the
/// parent's generation, `draining` set; the runtime has no tasklets, so the
/// child handler does not touch it). One child thread raises `VA`, as a top
/// half; another drains, as an event loop does when it wakes, and may find
/// nothing pending, in which case it returns before it repairs the CPU.
///
/// After the join, the raise was either drained (nothing pending, `VA` ran
/// once) or kicked: never left pending with no kick, which would leave an
/// event loop or drain thread that waits for kicks asleep for good. A kick
/// may be spurious (the raise read the stale flag while the drain was
/// repairing), never missing.
#[test]
fn a_raise_on_an_inherited_flag_is_drained_or_kicked() {
    model(|| {
        bind_cpu(0);
        RTK.register(VA, "A", handler_c).unwrap();
        let _ = &*CTX;
        fork::inherit_drain(&*RTK, 0, GEN - 1);
        fork::set_generation(GEN);

        let top_half = spawn_on(0, || RTK.raise(VA));
        let event_loop = spawn_on(0, || RTK.drain());
        top_half.join().unwrap();
        let outcome = event_loop.join().unwrap();

        let pending = RTK.pending(0);
        assert!(
            pending == 0 || CTX.kicks.get() > 0,
            "VA left pending with no kick (drain {outcome:?}): a waiting event loop never wakes"
        );
        assert_eq!(
            CTX.runs_c.get(),
            usize::from(pending == 0),
            "VA ran {} times with the mask {pending:#x}",
            CTX.runs_c.get()
        );
    });
}
