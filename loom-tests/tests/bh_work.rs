//! loom models: work items in a runtime's bottom half
//! (`Runtime::queue_work`, `queue_work_on`; `src/work/bh.rs`): the shared
//! work state machine (pend / start / finish / cancel, LINKED ghosts) and
//! the per-CPU lock-free intake that vector 6 drains.
//!
//! See `README.md` ("bh_work") for what each model checks and which
//! mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, Runtime, Work};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, InFlight, LoomCpu};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

/// Per-execution state the work functions reach through `CTX`.
struct Ctx {
    /// Runs of `W` in flight (never more than one).
    in_flight: InFlight,
    /// State private to `W`'s function: runs never overlap, so it may keep
    /// non-atomic state; two runs without a happens-before edge between
    /// them are a causality violation. A flusher reads it after `flush`.
    private: UnsafeCell<u32>,
    /// Top-half data, stored (Relaxed) before a queue; every run of the
    /// item records what it saw. The last run must see it.
    data: AtomicU32,
    last: StdAtomicU32,
    /// Runs of `X` and `Y`, and what they saw of `data`.
    runs_x: StdAtomicU32,
    runs_y: StdAtomicU32,
    x_saw: StdAtomicU32,
    y_saw: StdAtomicU32,
}

loom::lazy_static! {
    // At most 2 restarts per drain keeps the state space small; what a
    // drain leaves goes to the main thread's final drains.
    static ref RT: Runtime<LoomCpu, 2> = Runtime::new(Config::DEFAULT.max_restart(2));
    static ref W: Work = Work::new("w", body_w);
    static ref X: Work = Work::new("x", |_| {
        CTX.x_saw.store(CTX.data.load(Relaxed), SeqCst);
        CTX.runs_x.fetch_add(1, SeqCst);
    });
    static ref Y: Work = Work::new("y", |_| {
        CTX.y_saw.store(CTX.data.load(Relaxed), SeqCst);
        CTX.runs_y.fetch_add(1, SeqCst);
    });
    static ref CTX: Ctx = Ctx {
        in_flight: InFlight::new(),
        private: UnsafeCell::new(0),
        data: AtomicU32::new(0),
        last: StdAtomicU32::new(0),
        runs_x: StdAtomicU32::new(0),
        runs_y: StdAtomicU32::new(0),
        x_saw: StdAtomicU32::new(0),
        y_saw: StdAtomicU32::new(0),
    };
}

fn body_w(_: &Work) {
    CTX.in_flight.enter("work W");
    // SAFETY (model): W's runs never overlap; loom checks it.
    CTX.private.with_mut(|p| unsafe { *p += 1 });
    CTX.last.store(CTX.data.load(Relaxed), SeqCst);
    CTX.in_flight.leave();
}

fn set_up() {
    bind_cpu(0);
    let _ = (&*RT, &*W, &*X, &*Y, &*CTX);
}

fn private_runs() -> u32 {
    // SAFETY (model): called after every thread was joined.
    CTX.private.with(|p| unsafe { *p })
}

/// What a drain thread woken by the kick would run: every CPU, until
/// nothing is pending.
fn final_drains() {
    for cpu in [0, 1] {
        bind_cpu(cpu);
        while RT.pending(cpu) != 0 {
            let _ = RT.drain();
        }
    }
    bind_cpu(0);
}

/// (a) `W` is pending on CPU 0 and CPU 0 drains it, while a top half of
/// CPU 0 (a modelled thread bound to it) stores its data and queues `W`
/// again. If that queue returned `true` (it landed while `W` ran, or
/// after) there is exactly one more run, else none; runs never overlap;
/// the last run saw the data; runs + coalesced == queues.
#[test]
fn queue_races_the_drain() {
    model(|| {
        set_up();
        assert!(RT.queue_work(&W));
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(0, || {
            CTX.data.store(1, Relaxed);
            RT.queue_work(&W)
        });
        a.join().unwrap();
        let queued = b.join().unwrap();
        final_drains();
        let expected = 1 + u32::from(queued);
        assert_eq!(W.runs(), expected, "runs (the second queue: {queued})");
        assert_eq!(private_runs(), expected);
        assert_eq!(W.runs() + W.coalesced(), 2);
        assert_eq!(CTX.last.load(SeqCst), 1, "the second queue was not covered");
        assert!(!W.is_pending() && !W.is_running());
    });
}

/// (b) A top half on CPU 0 stores its data and queues `X` then `Y` on
/// CPU 1 (`queue_work_on`), while CPU 1 drains. Each runs exactly once,
/// on CPU 1, and saw the data: the intake push and the drain's take
/// publish the link (`Y.next` = `X`) and the item.
#[test]
fn queue_on_another_cpu_races_that_cpus_drain() {
    model(|| {
        set_up();
        let a = spawn_on(0, || {
            CTX.data.store(1, Relaxed);
            assert!(RT.queue_work_on(1, &X));
            assert!(RT.queue_work_on(1, &Y));
        });
        let b = spawn_on(1, || {
            let _ = RT.drain();
        });
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(RT.pending(0), 0, "nothing was queued on CPU 0");
        final_drains();
        assert_eq!(
            (CTX.runs_x.load(SeqCst), CTX.runs_y.load(SeqCst)),
            (1, 1),
            "each item ran once"
        );
        assert_eq!((CTX.x_saw.load(SeqCst), CTX.y_saw.load(SeqCst)), (1, 1));
        assert_eq!((X.runs(), Y.runs()), (1, 1));
    });
}

/// (c) `W` is pending on CPU 0 and CPU 0 drains, while a top half of CPU 1
/// cancels it and queues it again. A cancel that found it pending leaves a
/// ghost (the drain skips it, or the re-queue makes it pending where it is
/// linked); one that did not (it ran, or was running) lets the re-queue
/// make a new instance. Either way: runs == 1 - cancelled + queued, never
/// overlapping, the item ends idle and not linked (one more queue and
/// drain runs it once more).
#[test]
fn cancel_races_the_drain() {
    model(|| {
        set_up();
        assert!(RT.queue_work(&W));
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(1, || {
            let cancelled = W.cancel();
            CTX.data.store(1, Relaxed);
            (cancelled, RT.queue_work(&W))
        });
        a.join().unwrap();
        let (cancelled, queued) = b.join().unwrap();
        final_drains();
        let expected = 1 - u32::from(cancelled) + u32::from(queued);
        assert_eq!(
            W.runs(),
            expected,
            "runs (cancel {cancelled}, re-queue {queued})"
        );
        assert_eq!(private_runs(), expected);
        assert_eq!(CTX.last.load(SeqCst), 1, "the re-queue was not covered");
        assert!(!W.is_pending() && !W.is_running());
        // Not left linked as a ghost: a new queue pushes and runs.
        assert!(RT.queue_work(&W));
        final_drains();
        assert_eq!(W.runs(), expected + 1);
    });
}

/// (d) `W` is pending on CPU 1 and CPU 1 drains, while CPU 0 (thread
/// context) flushes it: the flush (spinning: the instance is not on its
/// CPU) returns once the run is over, and what the run wrote (`private`,
/// a plain cell) is visible to the flusher without a race.
#[test]
fn flush_races_the_run() {
    model(|| {
        set_up();
        assert!(RT.queue_work_on(1, &W));
        let a = spawn_on(1, || {
            let _ = RT.drain();
        });
        let flushed = W.flush();
        assert_eq!(flushed, Ok(true));
        assert_eq!(private_runs(), 1, "flush returned before the run");
        a.join().unwrap();
        assert_eq!(W.runs(), 1);
    });
}
