//! loom model: bottom-half levels (`Runtime<_, _, 2>`) on one CPU.
//!
//! Threads bound to the same CPU index stand for contexts of one CPU that
//! preempt each other: a level-0 drain, and the level-1 drain interrupt
//! that lands in the middle of it. See `README.md` ("levels") for what each
//! model checks and which mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, DrainOutcome, Level, Runtime, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, InFlight, LoomCpu};
use loom::cell::UnsafeCell;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::Ordering::SeqCst;

const LOW: Level = Level::new(0);
const HIGH: Level = Level::new(1);
/// Level 0's vector.
const V0: Vector = Vector::new(1);
/// Level 1's vectors (two raisers, so one of two level-1 drains may find
/// the level busy).
const V1: Vector = Vector::new(2);
const V1B: Vector = Vector::new(3);
/// No-op vectors of each level, raised and drained by the warm-up.
const W0: Vector = Vector::new(4);
const W1: Vector = Vector::new(5);

struct Ctx {
    /// Data each level's handlers keep without a lock: a level's drain is
    /// exclusive on its CPU, so runs of one level are ordered by the
    /// `draining` hand-off (loom checks the happens-before edge).
    level_data: [UnsafeCell<u32>; 2],
    /// Handlers of each level in flight (never more than one).
    in_flight: [InFlight; 2],
    runs: [Count; 3],
    /// Witnesses (`std` atomics, see `src/lib.rs`): a level-0 handler is
    /// running; the guard over level 1 is held; a level-1 handler ran
    /// while a level-0 handler was running.
    low_running: StdAtomicBool,
    guard_held: StdAtomicBool,
    preempted: StdAtomicBool,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1, 2> = Runtime::new(Config::DEFAULT);
    static ref CTX: Ctx = Ctx {
        level_data: [UnsafeCell::new(0), UnsafeCell::new(0)],
        in_flight: [InFlight::new(), InFlight::new()],
        runs: [Count::new(), Count::new(), Count::new()],
        low_running: StdAtomicBool::new(false),
        guard_held: StdAtomicBool::new(false),
        preempted: StdAtomicBool::new(false),
    };
}

fn low(_cpu: usize) {
    CTX.in_flight[0].enter("level-0 handlers of one CPU");
    CTX.low_running.store(true, SeqCst);
    // SAFETY (model): level-0 runs never overlap; loom checks the edge.
    CTX.level_data[0].with_mut(|p| unsafe { *p += 1 });
    CTX.runs[0].inc();
    CTX.low_running.store(false, SeqCst);
    CTX.in_flight[0].leave();
}

fn high(i: usize) {
    CTX.in_flight[1].enter("level-1 handlers of one CPU");
    assert!(
        !CTX.guard_held.load(SeqCst),
        "a level-1 drain ran while a guard covering level 1 was held"
    );
    if CTX.low_running.load(SeqCst) {
        CTX.preempted.store(true, SeqCst);
    }
    // SAFETY (model): level-1 runs never overlap; loom checks the edge.
    CTX.level_data[1].with_mut(|p| unsafe { *p += 1 });
    CTX.runs[i].inc();
    CTX.in_flight[1].leave();
}

fn set_up() {
    bind_cpu(0);
    RT.register_at(LOW, V0, "V0", low).unwrap();
    RT.register_at(HIGH, V1, "V1", |_| high(1)).unwrap();
    RT.register_at(HIGH, V1B, "V1B", |_| high(2)).unwrap();
    RT.register_at(LOW, W0, "W0", |_| {}).unwrap();
    RT.register_at(HIGH, W1, "W1", |_| {}).unwrap();
    let _ = &*CTX;
    warm_up();
}

/// Moves each level's `draining` flag, mask and guard count off their
/// initial values with SeqCst read-modify-writes before any modelled
/// thread exists (see `warm_up` in `bh_guard.rs`: loom keeps a SeqCst load
/// from reading a stale store only when that store is SeqCst too, and an
/// atomic's initial value is not).
fn warm_up() {
    RT.raise(W0);
    RT.raise(W1);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    drop(RT.bh_disable());
    assert_eq!(RT.pending(0), 0);
}

/// (a) On CPU 0, a level-0 drain (L) and two level-1 raise-and-drain
/// contexts (H1, H2: the level-1 drain interrupt, twice) run in every
/// interleaving. No level ever runs two handlers at once (in-flight
/// detectors; loom's cells check that runs of a level are ordered); a
/// level-1 drain is never refused because level 0 is draining (`Busy` only
/// when the other level-1 context holds level 1); no raise is lost: after
/// the joins, **with no further drain**, nothing is pending and each
/// vector ran exactly once.
#[test]
fn a_high_level_drains_while_a_low_level_drains_and_nothing_nests() {
    model(|| {
        set_up();
        let l = spawn_on(0, || {
            RT.raise(V0);
            RT.drain_level(LOW)
        });
        let h1 = spawn_on(0, || {
            RT.raise(V1);
            RT.drain_level(HIGH)
        });
        let h2 = spawn_on(0, || {
            RT.raise(V1B);
            RT.drain_level(HIGH)
        });
        let ol = l.join().unwrap();
        let o1 = h1.join().unwrap();
        let o2 = h2.join().unwrap();
        assert_eq!(ol, DrainOutcome::Complete, "level 0 has one drainer");
        assert!(
            o1 == DrainOutcome::Complete || o2 == DrainOutcome::Complete,
            "both level-1 drains refused: {o1:?} {o2:?}"
        );
        assert_eq!(
            RT.pending(0),
            0,
            "a raise was stranded ({ol:?} {o1:?} {o2:?})"
        );
        for (i, r) in CTX.runs.iter().enumerate() {
            assert_eq!(r.get(), 1, "vector {i}");
        }
    });
}

/// (b) The level-1 context's drain starts while the level-0 handler is
/// mid-run: L raises V0 and drains level 0; H raises V1 and drains level
/// 1. Whatever the interleaving, H's drain is `Complete` (never `Busy`
/// because of level 0) and V1 has run when H returns.
#[test]
fn a_level_0_drain_never_holds_level_1_off() {
    model(|| {
        set_up();
        let l = spawn_on(0, || {
            RT.raise(V0);
            RT.drain_level(LOW)
        });
        let h = spawn_on(0, || {
            RT.raise(V1);
            let o = RT.drain_level(HIGH);
            assert_eq!(CTX.runs[1].get(), 1, "V1 not run when its drain returned");
            o
        });
        assert_eq!(l.join().unwrap(), DrainOutcome::Complete);
        assert_eq!(h.join().unwrap(), DrainOutcome::Complete);
        assert_eq!(RT.pending(0), 0);
    });
}

/// (c) The guard covering a level: G on CPU 0 takes `bh_disable()` (both
/// levels), writes level 1's data, drops the guard; D on CPU 0 raises V1
/// and drains level 1. No level-1 handler runs while the guard is held
/// (witness and loom's cell), and the raise runs exactly once, with no
/// further drain (D's drain, or the drop's).
#[test]
fn a_guard_keeps_level_1_off() {
    model(|| {
        set_up();
        let g = spawn_on(0, || {
            let guard = RT.bh_disable();
            CTX.guard_held.store(true, SeqCst);
            // SAFETY (model): the guard keeps level-1 handlers off.
            CTX.level_data[1].with_mut(|p| unsafe { *p += 10 });
            CTX.guard_held.store(false, SeqCst);
            drop(guard);
        });
        let d = spawn_on(0, || {
            RT.raise(V1);
            RT.drain_level(HIGH)
        });
        g.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        assert_eq!(RT.pending(0), 0, "the raise was stranded (D: {od:?})");
        assert_eq!(CTX.runs[1].get(), 1);
        // SAFETY (model): both threads joined.
        assert_eq!(CTX.level_data[1].with(|p| unsafe { *p }), 11);
    });
}

/// (d) A guard over level 0 only (`bh_disable_to(LOW)`) held by G while D
/// raises at both levels and drains every level: level 1 always runs in
/// D's drain; V0 runs exactly once (in D's drain before G's guard, or in
/// G's drop), never while the guard is held; nothing is left pending.
#[test]
fn a_guard_to_level_0_lets_level_1_run() {
    model(|| {
        set_up();
        let g = spawn_on(0, || {
            let guard = RT.bh_disable_to(LOW);
            assert!(
                !CTX.low_running.load(SeqCst),
                "bh_disable_to returned while a level-0 handler ran"
            );
            // SAFETY (model): the guard keeps level-0 handlers off.
            CTX.level_data[0].with_mut(|p| unsafe { *p += 10 });
            drop(guard);
        });
        let d = spawn_on(0, || {
            RT.raise(V0);
            RT.raise(V1);
            let o = RT.drain();
            assert_eq!(
                CTX.runs[1].get(),
                1,
                "level 1 was held off by a level-0 guard"
            );
            o
        });
        g.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        assert_eq!(RT.pending(0), 0, "V0 was stranded (D: {od:?})");
        assert_eq!(CTX.runs[0].get(), 1);
    });
}
