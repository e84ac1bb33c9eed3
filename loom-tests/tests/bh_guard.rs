//! loom model: bottom halves off (`Runtime::bh_disable`) against drains of
//! the same CPU.
//!
//! See `README.md` ("bh_guard") for what each model checks and which
//! mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, DrainOutcome, Runtime, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, InFlight, LoomCpu};
use loom::cell::UnsafeCell;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::Ordering::SeqCst;

const VA: Vector = Vector::new(1);
/// A no-op vector the warm-up raises and drains.
const VW: Vector = Vector::new(2);

struct Ctx {
    /// Data CPU 0's bottom halves share with thread-context code that
    /// holds the guard, with no lock: both write it. A run of the handler
    /// and the guarded section without a happens-before edge between them
    /// is a causality violation.
    shared: UnsafeCell<u32>,
    /// Handlers of CPU 0 in flight (never more than one).
    in_flight: InFlight,
    runs: Count,
    /// The witnesses, `std` atomics (a global clock for the interleaving
    /// loom explores, invisible to its happens-before tracking): a handler
    /// is running; the guard is held. Per execution (in `CTX`), not
    /// process-wide statics: the test harness runs the models in parallel.
    handler_running: StdAtomicBool,
    guard_held: StdAtomicBool,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    static ref CTX: Ctx = Ctx {
        shared: UnsafeCell::new(0),
        in_flight: InFlight::new(),
        runs: Count::new(),
        handler_running: StdAtomicBool::new(false),
        guard_held: StdAtomicBool::new(false),
    };
}

fn handler(_cpu: usize) {
    CTX.in_flight.enter("softirq handlers of one CPU");
    assert!(
        !CTX.guard_held.load(SeqCst),
        "a drain ran on the CPU while its bottom-half guard was held"
    );
    CTX.handler_running.store(true, SeqCst);
    // SAFETY (model): bottom halves and the guarded section never overlap;
    // loom checks the happens-before edge.
    CTX.shared.with_mut(|p| unsafe { *p += 1 });
    CTX.handler_running.store(false, SeqCst);
    CTX.runs.inc();
    CTX.in_flight.leave();
}

fn set_up() {
    bind_cpu(0);
    RT.register(VA, "A", handler).unwrap();
    RT.register(VW, "warm-up", |_| {}).unwrap();
    let _ = &*CTX;
    warm_up();
}

/// Moves CPU 0's `draining` flag and guard count off their initial
/// values with SeqCst read-modify-writes, in the main thread before any
/// modelled thread exists: a raise and a drain (`draining` swapped true,
/// then false), a guard taken and dropped (the count CAS-ed to 1, then
/// decremented). Why: loom keeps a `SeqCst` load from reading a stale
/// store only when that store is `SeqCst` too, and an atomic's initial
/// value is not; so on fresh atomics the handshake's loads could return
/// the initial value after the other side's SeqCst RMW, which C++20
/// forbids (the same reason as `warm` in `src/lib.rs`). Afterwards both
/// locations hold values written by SeqCst RMWs, and the state is as
/// fresh as far as the protocol goes (nothing pending, no guard, no
/// drain).
fn warm_up() {
    RT.raise(VW);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    drop(RT.bh_disable());
    assert_eq!(RT.pending(0), 0);
}

/// The section a guard protects: no handler is running when it starts,
/// none starts while it runs (the witnesses), and its write of `shared`
/// is ordered with every handler's (loom's cell).
fn guarded_section() {
    assert!(
        !CTX.handler_running.load(SeqCst),
        "bh_disable returned while a drain ran on its CPU"
    );
    CTX.guard_held.store(true, SeqCst);
    // SAFETY (model): see `handler`.
    CTX.shared.with_mut(|p| unsafe { *p += 10 });
    CTX.guard_held.store(false, SeqCst);
}

/// (a) Thread G on CPU 0 takes the guard, writes the shared data, drops
/// the guard; thread D on CPU 0 raises and drains (a second thread bound
/// to the CPU, or a drain thread). No handler runs while the guard is
/// held (witnesses and loom's cell). Every raise runs exactly once: after
/// both return, **with no further drain**, nothing is pending (D's drain,
/// or G's drop, or D's retry after the drop ran it).
#[test]
fn no_drain_runs_while_the_guard_is_held() {
    model(|| {
        set_up();
        let g = spawn_on(0, || {
            let guard = RT.bh_disable();
            guarded_section();
            drop(guard);
        });
        let d = spawn_on(0, || {
            RT.raise(VA);
            RT.drain()
        });
        g.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        assert_eq!(RT.pending(0), 0, "a raise was stranded (D: {od:?})");
        assert_eq!(CTX.runs.get(), 1);
        // SAFETY (model): both threads joined.
        assert_eq!(CTX.shared.with(|p| unsafe { *p }), 11);
    });
}

/// (b) G on CPU 0 takes the guard, raises (held), drops the guard (the
/// last drop drains inline: `LoomCpu` keeps the default
/// `DRAIN_ON_BH_ENABLE`); D on CPU 0 only drains, racing the drop. The
/// raise runs exactly once, by the drop's drain or by D's, never while
/// held, and it is never lost: after both return, **with no further
/// drain**, nothing is pending.
#[test]
fn raised_while_held_runs_once_after_the_drop() {
    model(|| {
        set_up();
        let g = spawn_on(0, || {
            let guard = RT.bh_disable();
            RT.raise(VA);
            guarded_section();
            drop(guard);
        });
        let d = spawn_on(0, || RT.drain());
        g.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        assert_eq!(RT.pending(0), 0, "the held raise was lost (D: {od:?})");
        assert_eq!(CTX.runs.get(), 1);
        assert_eq!(RT.stats().runs(0, VA), 1);
    });
}

/// (b') As (b), with the raise in a third context on CPU 0 (a top half
/// that does not drain, its raise landing before, during or after the
/// guard), and D draining. After all return, a final drain by the main
/// thread (the drain a kick stands for) finds at most what a kick was
/// sent for; the raise runs exactly once, never while held.
#[test]
fn a_raise_from_elsewhere_is_not_lost_around_the_drop() {
    model(|| {
        set_up();
        let g = spawn_on(0, || {
            let guard = RT.bh_disable();
            guarded_section();
            drop(guard);
        });
        let t = spawn_on(0, || RT.raise(VA));
        let d = spawn_on(0, || RT.drain());
        g.join().unwrap();
        t.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        // The top half's raise kicked unless a drain held the CPU; the
        // kick's drain (main) runs what is left.
        let _ = RT.drain();
        assert_eq!(RT.pending(0), 0);
        assert_eq!(CTX.runs.get(), 1);
    });
}

/// (c) The back-off's second look at the count. Work is pending from the
/// start (raised by the main thread); G takes the guard, writes the
/// shared data and drops it; D drains. The window: D passes its first
/// check before G's guard, takes the CPU after G's wait looked, sees the
/// count and backs off; G's drop meanwhile finds the work and the CPU
/// busy (`Busy`); D, after releasing the CPU, must see the count back at
/// zero and take the CPU again. With no further drain, nothing is
/// pending and the vector ran once.
///
/// That window needs three preemptions, so this model runs at a bound of
/// 3 whatever `LOOM_MAX_PREEMPTIONS` says (it is small: a few thousand
/// executions).
#[test]
fn a_drain_backing_off_sees_the_last_drop() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    let start = std::time::Instant::now();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, SeqCst);
        set_up();
        RT.raise(VA);
        let g = spawn_on(0, || {
            let guard = RT.bh_disable();
            guarded_section();
            drop(guard);
        });
        let d = spawn_on(0, || RT.drain());
        g.join().unwrap();
        let od = d.join().unwrap();
        assert_ne!(od, DrainOutcome::Remaining);
        assert_eq!(RT.pending(0), 0, "the raise was stranded (D: {od:?})");
        assert_eq!(CTX.runs.get(), 1);
    });
    eprintln!(
        "a_drain_backing_off_sees_the_last_drop: {} executions, preemption bound Some(3), {:.1?}",
        runs.load(SeqCst),
        start.elapsed()
    );
}
