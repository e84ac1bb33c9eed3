//! loom model: softirq pending mask and the per-CPU drain hand-off.
//!
//! See `README.md` ("softirq") for what each model checks and which
//! mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, DrainOutcome, Runtime, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, InFlight, LoomCpu};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

const VA: Vector = Vector::new(1);
const VB: Vector = Vector::new(2);

/// Per-execution state the handlers reach through `CTX`.
struct Ctx {
    /// Top-half data for `VA`: written once before `raise(VA)`, read by
    /// `VA`'s handler. A loom cell, so a handler that runs without a
    /// happens-before edge from the write is a causality violation.
    data_a: UnsafeCell<u32>,
    /// The same for `VB`.
    data_b: UnsafeCell<u32>,
    /// Handler state private to CPU 0: handlers of one CPU are serialized
    /// by the drain, so they may keep non-atomic per-CPU state. Every run
    /// writes it; two runs without a happens-before edge between them
    /// (drains not handing the CPU over with Release/Acquire) are a
    /// causality violation.
    cpu0_state: UnsafeCell<u32>,
    /// Handlers of CPU 0 in flight (never more than one).
    in_flight: InFlight,
    runs_a: Count,
    runs_b: Count,
    /// `seq_handler` model: the raiser's sequence number, stored (Relaxed)
    /// before each raise; the handler reads it (Relaxed) and records it.
    seq: AtomicU32,
    seq_seen: Count,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    /// No restarts: every drain is a single pass.
    static ref RT0: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT.max_restart(0));
    static ref CTX: Ctx = Ctx {
        data_a: UnsafeCell::new(0),
        data_b: UnsafeCell::new(0),
        cpu0_state: UnsafeCell::new(0),
        in_flight: InFlight::new(),
        runs_a: Count::new(),
        runs_b: Count::new(),
        seq: AtomicU32::new(0),
        seq_seen: Count::new(),
    };
}

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

fn set_up() {
    bind_cpu(0);
    RT.register(VA, "A", handler_a).unwrap();
    RT.register(VB, "B", handler_b).unwrap();
    let _ = &*CTX;
}

/// Two contexts on CPU 0 (a top half and a nested one, or two threads bound
/// to CPU 0), each writing its data, raising its vector and draining, as an
/// interrupt exit does. Whichever drain wins runs both vectors or hands the
/// CPU over; the loser returns `Busy`. After both return, with no further
/// drain: nothing pending, each vector ran exactly once and saw its data,
/// handlers never overlapped.
///
/// This is the store-buffering hand-off in `drain`: a drain ending
/// (`draining = false`, then re-reading `pending`) against a raiser
/// (`pending |= bit`, then `draining.swap(true)`).
#[test]
fn raise_then_drain_handoff() {
    model(|| {
        set_up();
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
        assert_eq!(RT.stats().runs(0, VA), 1);
        assert_eq!(RT.stats().runs(0, VB), 1);
    });
}

fn seq_handler(_cpu: usize) {
    serialized(|| {
        let s = CTX.seq.load(Relaxed) as usize;
        // Record the newest sequence number any run has seen.
        assert!(s >= CTX.seq_seen.get(), "a later run saw older data");
        while CTX.seq_seen.get() < s {
            CTX.seq_seen.inc();
        }
        CTX.runs_a.inc();
    });
}

/// One top half raises the same vector twice (storing sequence numbers 1
/// and 2 before the raises) while another context on the CPU drains. Each
/// raise either sets the bit or is coalesced into a pending one; after the
/// raiser's own final drain: runs == raises that set the bit (none run
/// twice), and the last run saw sequence number 2 (every raise is covered
/// by a run that sees what was written before it).
#[test]
fn coalesced_raises_are_covered() {
    model(|| {
        bind_cpu(0);
        RT.register(VA, "A", seq_handler).unwrap();
        let _ = &*CTX;
        let raiser = spawn_on(0, || {
            CTX.seq.store(1, Relaxed);
            RT.raise(VA);
            CTX.seq.store(2, Relaxed);
            RT.raise(VA);
            RT.drain()
        });
        let drainer = spawn_on(0, || RT.drain());
        let o1 = raiser.join().unwrap();
        let o2 = drainer.join().unwrap();
        assert_ne!(o1, DrainOutcome::Remaining);
        assert_ne!(o2, DrainOutcome::Remaining);

        assert_eq!(RT.pending(0), 0, "a raise was stranded ({o1:?}, {o2:?})");
        let stats = RT.stats();
        let set_bit = stats.raised(0, VA) - stats.coalesced(0, VA);
        assert_eq!(stats.raised(0, VA), 2);
        assert_eq!(
            CTX.runs_a.get(),
            set_bit as usize,
            "runs vs raises that set the bit"
        );
        assert_eq!(stats.runs(0, VA), set_bit);
        assert_eq!(
            CTX.seq_seen.get(),
            2,
            "the last raise's data was never seen by a run"
        );
    });
}

/// A third context on CPU 0 that only drains (a drain thread) beside the
/// two that raise and drain: the same guarantees with three contenders for
/// the CPU's drain.
#[test]
fn three_contexts_one_cpu() {
    model(|| {
        set_up();
        let a = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_a`.
            CTX.data_a.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VA);
            RT.drain()
        });
        let b = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_b`.
            CTX.data_b.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VB);
            RT.drain()
        });
        let c = spawn_on(0, || RT.drain());
        let outcomes = [a.join().unwrap(), b.join().unwrap(), c.join().unwrap()];

        assert!(!outcomes.contains(&DrainOutcome::Remaining));
        assert_eq!(RT.pending(0), 0, "a raise was stranded: {outcomes:?}");
        assert_eq!(CTX.runs_a.get(), 1, "VA runs");
        assert_eq!(CTX.runs_b.get(), 1, "VB runs");
    });
}

/// With no restarts allowed, a drain that finds work raised during its
/// pass stops, returns `Remaining` and kicks the backend (whose drain
/// thread runs the rest). After both contexts return: work is pending only
/// if some drain said `Remaining`; the kicked drain (the main thread's)
/// then runs each vector exactly once.
#[test]
fn budget_exhaustion_hands_work_on() {
    model(|| {
        bind_cpu(0);
        RT0.register(VA, "A", handler_a).unwrap();
        RT0.register(VB, "B", handler_b).unwrap();
        let _ = &*CTX;
        let a = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_a`.
            CTX.data_a.with_mut(|p| unsafe { *p = 1 });
            RT0.raise(VA);
            RT0.drain()
        });
        let b = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_b`.
            CTX.data_b.with_mut(|p| unsafe { *p = 1 });
            RT0.raise(VB);
            RT0.drain()
        });
        let oa = a.join().unwrap();
        let ob = b.join().unwrap();

        let remaining = oa == DrainOutcome::Remaining || ob == DrainOutcome::Remaining;
        assert!(
            RT0.pending(0) == 0 || remaining,
            "work left pending without a Remaining outcome: ({oa:?}, {ob:?})"
        );
        assert_eq!(
            RT0.stats().budget_exhausted(0),
            u32::from(oa == DrainOutcome::Remaining) + u32::from(ob == DrainOutcome::Remaining)
        );
        // The drain thread the kick woke.
        assert_eq!(RT0.drain(), DrainOutcome::Complete);
        assert_eq!(RT0.pending(0), 0);
        assert_eq!(CTX.runs_a.get(), 1, "VA runs");
        assert_eq!(CTX.runs_b.get(), 1, "VB runs");
    });
}

/// A drain runs at most its budget of passes on every path, including the
/// re-check after it releases the CPU (Linux's `MAX_SOFTIRQ_RESTART`
/// counts passes; `max_restart(0)` is one pass). Thread D on CPU 0 raises
/// `VB` and drains; a top half on CPU 0 raises `VA` (no drain: its raise
/// found the CPU busy, or kicked). `VA` has the lower index, so within one
/// pass it runs before `VB`: if `VA` runs after `VB` before D's drain has
/// returned, that drain ran a second pass. The window that used to allow
/// one is a raise landing between the drain's last check of the mask and
/// its release of the CPU; the drain then took the CPU back for another
/// pass outside the budget. Afterwards, the drain the kick stands for runs
/// what is left: each vector exactly once.
#[test]
fn a_drain_runs_at_most_its_budget_of_passes() {
    use std::sync::atomic::AtomicBool as StdAtomicBool;
    static A_AFTER_B: StdAtomicBool = StdAtomicBool::new(false);
    fn a(_cpu: usize) {
        if CTX.runs_b.get() > 0 {
            A_AFTER_B.store(true, Relaxed);
        }
        CTX.runs_a.inc();
    }
    fn b(_cpu: usize) {
        CTX.runs_b.inc();
    }
    model(|| {
        A_AFTER_B.store(false, Relaxed);
        bind_cpu(0);
        RT0.register(VA, "A", a).unwrap();
        RT0.register(VB, "B", b).unwrap();
        let _ = &*CTX;
        let d = spawn_on(0, || {
            RT0.raise(VB);
            RT0.drain()
        });
        let t = spawn_on(0, || RT0.raise(VA));
        let outcome = d.join().unwrap();
        t.join().unwrap();
        assert!(
            !A_AFTER_B.load(Relaxed),
            "max_restart(0) ran a second pass ({outcome:?})"
        );
        assert_eq!(RT0.stats().restarts(0), 0);
        assert_eq!(
            RT0.stats().budget_exhausted(0),
            u32::from(outcome == DrainOutcome::Remaining)
        );
        // What is left (VA raised after the drain, or beyond its budget):
        // the drain that the raise's or the drain's kick stands for.
        assert_eq!(RT0.drain(), DrainOutcome::Complete);
        assert_eq!((CTX.runs_a.get(), CTX.runs_b.get()), (1, 1));
    });
}
