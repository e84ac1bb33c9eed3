//! Bottom halves off (`Runtime::bh_disable`, Linux's `local_bh_disable`):
//! while a guard is held on a CPU no drain runs there (explicit drain,
//! interrupt exit, drain thread); what is raised meanwhile runs once when
//! the last guard drops; guards nest; a guard taken while another context
//! drains the CPU waits for that drain; overflow is counted.
//!
//! Each test uses its own runtime, so they run in parallel.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{
    BareMetal, Board, Config, DrainOutcome, Host, Misuse, Runtime, Tasklet, Vector, BH_DISABLE_MAX,
};

const V: Vector = Vector::new(3);
const W: Vector = Vector::new(4);

/// Polls `cond` for up to 5 s.
#[track_caller]
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn nested_guards_hold_every_drain_until_the_last_drop() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    RT.register(V, "V", |_| {
        RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();

    let outer = RT.bh_disable();
    assert_eq!(outer.cpu(), 0);
    RT.raise(V);
    let inner = RT.bh_disable();
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    // Interrupt exit skips the drain too.
    RT.irq_enter();
    RT.raise(V); // coalesced
    assert_eq!(RT.irq_exit(), Some(DrainOutcome::Disabled));
    drop(inner);
    // One guard left: still off, and the inner drop ran nothing.
    assert_eq!(RUNS.load(Ordering::Relaxed), 0);
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    assert_eq!(RT.pending(0), 1 << V.index());
    drop(outer);
    // The last drop drained, inline (Host: thread context).
    assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    assert_eq!(RT.pending(0), 0);
    assert_eq!(RT.stats().runs(0, V), 1);
    assert_eq!(RT.stats().coalesced(0, V), 1);
    // Bottom halves are back on.
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::Relaxed), 2);
}

#[test]
fn work_raised_while_held_runs_exactly_once_at_the_last_drop() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static RUNS_V: AtomicU32 = AtomicU32::new(0);
    static RUNS_W: AtomicU32 = AtomicU32::new(0);
    static TASKLET_RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        TASKLET_RUNS.fetch_add(1, Ordering::Relaxed);
    });
    RT.register(V, "V", |_| {
        RUNS_V.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    RT.register(W, "W", |_| {
        RUNS_W.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();

    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        let guard = RT.bh_disable();
        assert_eq!(guard.cpu(), 1);
        for _ in 0..100 {
            RT.raise(V);
            RT.raise(W);
            T.schedule();
            assert_eq!(RT.drain(), DrainOutcome::Disabled);
        }
        // CPU 0 is not affected by CPU 1's guard.
        assert_eq!(RT.pending(0), 0);
        assert_eq!(
            (
                RUNS_V.load(Ordering::Relaxed),
                RUNS_W.load(Ordering::Relaxed),
                TASKLET_RUNS.load(Ordering::Relaxed)
            ),
            (0, 0, 0)
        );
        drop(guard);
        assert_eq!(RT.pending(1), 0);
    })
    .join()
    .unwrap();
    assert_eq!(RUNS_V.load(Ordering::Relaxed), 1);
    assert_eq!(RUNS_W.load(Ordering::Relaxed), 1);
    assert_eq!(TASKLET_RUNS.load(Ordering::Relaxed), 1);
    let stats = RT.stats();
    assert_eq!(stats.runs(1, V), 1);
    assert_eq!(stats.coalesced(1, V), 99);
    assert_eq!(stats.runs(1, Vector::TASKLET), 1);
    println!(
        "raised 100 x (V, W, tasklet) under the guard: runs V {}, W {}, tasklet {}, coalesced V {}",
        stats.runs(1, V),
        stats.runs(1, W),
        TASKLET_RUNS.load(Ordering::Relaxed),
        stats.coalesced(1, V)
    );

    // CPU 0, never guarded, drains as usual.
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS_V.load(Ordering::Relaxed), 2);
}

#[test]
fn drain_threads_skip_a_guarded_cpu_and_run_its_work_after() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static RUNS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
    RT.register(V, "V", |cpu| {
        RUNS[cpu].fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let drains = RT.spawn_drain_threads().unwrap();

    // The main thread is CPU 0. Raise 20 times while held, each time
    // giving the drain thread (woken by the raise's kick) time to run.
    let guard = RT.bh_disable();
    for _ in 0..20 {
        RT.raise(V);
        thread::sleep(Duration::from_millis(2));
        assert_eq!(
            RUNS[0].load(Ordering::Relaxed),
            0,
            "the drain thread ran CPU 0 while bottom halves were off"
        );
        assert_eq!(RT.pending(0), 1 << V.index());
    }
    // Another CPU's drain thread still runs its work.
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(V);
    })
    .join()
    .unwrap();
    wait_for("CPU 1's drain thread", || {
        RUNS[1].load(Ordering::Relaxed) == 1
    });
    assert_eq!(RUNS[0].load(Ordering::Relaxed), 0);
    drop(guard);
    wait_for("CPU 0's work after the drop", || {
        RUNS[0].load(Ordering::Relaxed) == 1
    });
    assert_eq!(RT.pending(0), 0);

    // Bottom halves back on: the drain thread serves CPU 0 again, and the
    // held raises ran exactly once.
    RT.raise(V);
    wait_for("CPU 0's drain thread after the guard", || {
        RUNS[0].load(Ordering::Relaxed) == 2
    });
    drop(drains);
    assert_eq!(RT.stats().runs(0, V), 2);
    assert_eq!(RT.stats().runs(1, V), 1);
}

#[test]
fn a_guard_waits_for_a_drain_running_on_its_cpu() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
    static RUNNING: AtomicBool = AtomicBool::new(false);
    static GO: AtomicBool = AtomicBool::new(false);
    static TOOK: AtomicBool = AtomicBool::new(false);
    static RUNS_V: AtomicU32 = AtomicU32::new(0);
    static RUNS_W: AtomicU32 = AtomicU32::new(0);
    RT.register(V, "V", |_| {
        RUNNING.store(true, Ordering::SeqCst);
        while !GO.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        RUNS_V.fetch_add(1, Ordering::Relaxed);
        RUNNING.store(false, Ordering::SeqCst);
    })
    .unwrap();
    RT.register(W, "W", |_| {
        assert!(TOOK.load(Ordering::SeqCst));
        RUNS_W.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();

    // Thread D (CPU 0) drains; V's handler blocks until GO.
    let d = thread::spawn(|| {
        RT.raise(V);
        RT.drain()
    });
    wait_for("V's handler", || RUNNING.load(Ordering::SeqCst));
    // Thread G (also CPU 0) takes the guard while D's drain runs.
    let g = thread::spawn(|| {
        let guard = RT.bh_disable();
        assert!(
            !RUNNING.load(Ordering::SeqCst),
            "bh_disable returned while a drain ran on its CPU"
        );
        TOOK.store(true, Ordering::SeqCst);
        RT.raise(W);
        // A third context on CPU 0 tries to drain: held off.
        assert_eq!(
            thread::spawn(|| RT.drain()).join().unwrap(),
            DrainOutcome::Disabled
        );
        assert_eq!(RUNS_W.load(Ordering::Relaxed), 0);
        drop(guard);
    });
    thread::sleep(Duration::from_millis(50));
    assert!(
        !TOOK.load(Ordering::SeqCst),
        "the guard was taken while V's handler ran"
    );
    GO.store(true, Ordering::SeqCst);
    assert_eq!(d.join().unwrap(), DrainOutcome::Complete);
    g.join().unwrap();
    // Liveness: after the drop, everything ran, once.
    assert_eq!(RUNS_V.load(Ordering::Relaxed), 1);
    assert_eq!(RUNS_W.load(Ordering::Relaxed), 1);
    assert_eq!(RT.pending(0), 0);
}

#[test]
fn nesting_beyond_the_limit_is_counted_and_holds_nothing() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    RT.register(V, "V", |_| {
        RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let mut guards: Vec<_> = (0..BH_DISABLE_MAX).map(|_| RT.bh_disable()).collect();
    assert_eq!(RT.stats().misuse(0, Misuse::BhDisableOverflow), 0);
    let extra = RT.bh_disable();
    let extra2 = RT.bh_disable();
    assert_eq!(RT.stats().misuse(0, Misuse::BhDisableOverflow), 2);
    assert_eq!(extra.cpu(), 0);
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    // The overflowing guards hold no count: dropping them (first) changes
    // nothing, and the counted ones still balance.
    drop(extra);
    drop(extra2);
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    let last = guards.pop().unwrap();
    drop(guards);
    assert_eq!(RUNS.load(Ordering::Relaxed), 0);
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    drop(last);
    assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    assert_eq!(RT.pending(0), 0);
    assert!(RT.stats().to_string().contains("bh_disable overflow"));
    // Usable afterwards.
    let g = RT.bh_disable();
    RT.raise(V);
    drop(g);
    assert_eq!(RUNS.load(Ordering::Relaxed), 2);
}

#[test]
fn on_bare_metal_the_last_drop_pends_the_drain_interrupt() {
    static PENDED: AtomicU32 = AtomicU32::new(0);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    struct Mcu;
    impl Board for Mcu {
        fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
            PENDED.fetch_add(1, Ordering::Relaxed);
        }
    }
    static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
    RT.register(V, "V", |_| {
        RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();

    let guard = RT.bh_disable();
    RT.raise(V); // empty mask: pends the drain
    assert_eq!(PENDED.load(Ordering::Relaxed), 1);
    // The pended drain interrupt fires: held off.
    assert_eq!(RT.drain(), DrainOutcome::Disabled);
    drop(guard);
    // Not run in thread mode: pended again, for the drain interrupt.
    assert_eq!(RUNS.load(Ordering::Relaxed), 0);
    assert_eq!(PENDED.load(Ordering::Relaxed), 2);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    // A drop with nothing pending pends nothing.
    drop(RT.bh_disable());
    assert_eq!(PENDED.load(Ordering::Relaxed), 2);
}
