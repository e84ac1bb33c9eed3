//! loom model: the drain-thread wake-up. Top halves raise and leave;
//! a drain thread that sleeps on a `WakeWord` when idle must run their
//! work: `raise` kicks it (unless a drain is running on the CPU, which then
//! re-reads the mask itself), and `WakeWord` never loses a wake-up.
//!
//! See `README.md` ("wake").

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, DrainOutcome, Runtime, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, drain_wake, model, spawn_on, Count, InFlight, LoomCpuWake};
use loom::cell::UnsafeCell;

const VA: Vector = Vector::new(1);
const VB: Vector = Vector::new(2);

struct Ctx {
    /// Top-half data, written before each raise (see `softirq.rs`).
    data_a: UnsafeCell<u32>,
    data_b: UnsafeCell<u32>,
    in_flight: InFlight,
    runs: Count,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpuWake, 1> = Runtime::new(Config::DEFAULT);
    /// No restarts: every drain is a single pass.
    static ref RT0: Runtime<LoomCpuWake, 1> = Runtime::new(Config::DEFAULT.max_restart(0));
    static ref CTX: Ctx = Ctx {
        data_a: UnsafeCell::new(0),
        data_b: UnsafeCell::new(0),
        in_flight: InFlight::new(),
        runs: Count::new(),
    };
}

fn handler(data: &'static UnsafeCell<u32>) {
    CTX.in_flight.enter("softirq handlers of one CPU");
    // SAFETY (model): written before the raise; loom checks the edge.
    let v = data.with(|p| unsafe { *p });
    assert_eq!(v, 1, "handler ran without the data written before raise");
    CTX.runs.inc();
    CTX.in_flight.leave();
}

fn handler_a(_cpu: usize) {
    handler(&CTX.data_a);
}

fn handler_b(_cpu: usize) {
    handler(&CTX.data_b);
}

/// After the top halves have returned: if all the work has already run
/// (another drain did it), the drain thread may be asleep with nothing to
/// do, which is correct, so wake it to let it see that and end. If work is
/// left, running it is the drain thread's job alone: no extra wake-up,
/// so a lost kick shows as a deadlock.
fn join_drain_thread(dt: loom::thread::JoinHandle<()>, expected_runs: usize) {
    if CTX.runs.get() == expected_runs {
        drain_wake(0).notify();
    }
    dt.join().unwrap();
}

/// CPU 0's drain thread, as `Runtime::spawn_drain_threads` runs it (the
/// `Host` backend's loop): take a token, check, drain, and sleep on the
/// word only if nothing is pending or another drain holds the CPU. It
/// stops once all the work has run (`expected_runs`), checked where the
/// real loop checks its stop flag. If a wake-up is lost it sleeps for
/// good, and loom reports the model as deadlocked.
fn drain_thread(rt: &Runtime<LoomCpuWake, 1>, expected_runs: usize) {
    let wake = drain_wake(0);
    loop {
        let token = wake.token();
        if CTX.runs.get() == expected_runs {
            return;
        }
        if rt.pending(0) != 0 && rt.drain() != DrainOutcome::Busy {
            continue;
        }
        wake.wait(token, None);
    }
}

/// Two top halves on CPU 0 write their data and raise, and do nothing else
/// (signal handlers: no drain at exit). CPU 0's drain thread runs the
/// work. The first raise on an idle CPU kicks the drain thread (`notify`
/// against the thread's `wait`: a store-buffering pair on the word); a
/// raise while the thread drains skips the kick and leaves the work to
/// that drain, which re-reads the mask after releasing the CPU (a
/// store-buffering pair on `pending`/`draining`). Either way the drain
/// thread never sleeps with work pending: both vectors run exactly once,
/// see their data, never overlap, and the thread ends.
#[test]
fn raise_wakes_the_drain_thread() {
    model(|| {
        bind_cpu(0);
        RT.register(VA, "A", handler_a).unwrap();
        RT.register(VB, "B", handler_b).unwrap();
        let _ = &*CTX;
        let dt = spawn_on(0, || drain_thread(&RT, 2));
        let a = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_a`.
            CTX.data_a.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VA);
        });
        let b = spawn_on(0, || {
            // SAFETY (model): only this thread writes `data_b`.
            CTX.data_b.with_mut(|p| unsafe { *p = 1 });
            RT.raise(VB);
        });
        a.join().unwrap();
        b.join().unwrap();
        join_drain_thread(dt, 2);

        assert_eq!(CTX.runs.get(), 2);
        assert_eq!(RT.pending(0), 0);
        assert_eq!(RT.stats().runs(0, VA), 1);
        assert_eq!(RT.stats().runs(0, VB), 1);
    });
}

/// A drain at interrupt exit that runs out of budget hands the rest to the
/// drain thread. With no restarts allowed: one top half writes its data,
/// raises `A` and drains at its exit; another raises `B` and leaves. If `B`
/// lands while that drain runs, the drain either takes it in its pass or
/// stops with it pending (`Remaining`), releases the CPU and kicks; the
/// drain thread must then run it. Both vectors run exactly once and the
/// drain thread ends.
#[test]
fn budget_exhaustion_wakes_the_drain_thread() {
    model(|| {
        bind_cpu(0);
        RT0.register(VA, "A", handler_a).unwrap();
        RT0.register(VB, "B", handler_b).unwrap();
        let _ = &*CTX;
        let dt = spawn_on(0, || drain_thread(&RT0, 2));
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
        });
        let _ = a.join().unwrap();
        b.join().unwrap();
        join_drain_thread(dt, 2);

        assert_eq!(CTX.runs.get(), 2);
        assert_eq!(RT0.pending(0), 0);
    });
}
