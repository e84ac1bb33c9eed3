//! Bottom-half priority levels (issue 10, item 3): each level of a CPU has
//! its own pending mask, drain and tasklet lists; a higher level's drain
//! runs while a lower level's drain is mid-handler on the same CPU (on
//! `Host`, a call of `drain_level` from inside a handler stands in for
//! the higher level's drain interrupt); a level never runs nested in
//! itself; the guard covers levels `0..=k`; the board is asked to pend
//! the drain of the right level.
//!
//! Each test uses its own runtime, so they run in parallel.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{
    BareMetal, Board, Config, DrainOutcome, Handlers, Host, Level, Misuse, RegisterError, Runtime,
    Tasklet, Vector,
};

/// No time budget: restarts are bounded by `max_restart` only, so a slow
/// machine (or miri) does not turn a complete drain into `Remaining`.
const NO_TIME_BUDGET: Config = Config::DEFAULT.time_budget_ns(0);

const LOW: Level = Level::new(0);
const HIGH: Level = Level::new(1);

/// Polls `cond` for up to 10 s.
#[track_caller]
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_high_level_drain_preempts_a_running_low_level_handler() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static LOG_RUNNING: AtomicBool = AtomicBool::new(false);
    static STEP_SAW_LOG_RUNNING: AtomicU32 = AtomicU32::new(0);
    static STEPS_BEFORE_LOG_RETURNED: AtomicU32 = AtomicU32::new(0);
    static INNER: AtomicU32 = AtomicU32::new(99);
    const FLUSH: Vector = Vector::new(3);
    const STEP: Vector = Vector::new(4);
    RT.register_at(LOW, FLUSH, "FLUSH", |_| {
        LOG_RUNNING.store(true, Ordering::SeqCst);
        // The motor interrupt fires mid-flush: it raises the urgent step,
        // and its level's drain interrupt runs now, not after the flush.
        RT.raise(STEP);
        INNER.store(RT.drain_level(HIGH) as u32, Ordering::SeqCst);
        STEPS_BEFORE_LOG_RETURNED.store(RT.stats().runs(0, STEP), Ordering::SeqCst);
        LOG_RUNNING.store(false, Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(HIGH, STEP, "STEP", |_| {
        if LOG_RUNNING.load(Ordering::SeqCst) {
            STEP_SAW_LOG_RUNNING.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();

    RT.raise(FLUSH);
    assert_eq!(RT.pending_at(0, LOW), 1 << FLUSH.index());
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Complete);
    assert_eq!(INNER.load(Ordering::SeqCst), DrainOutcome::Complete as u32);
    assert_eq!(STEPS_BEFORE_LOG_RETURNED.load(Ordering::SeqCst), 1);
    assert_eq!(STEP_SAW_LOG_RUNNING.load(Ordering::SeqCst), 1);
    assert_eq!(RT.stats().runs(0, FLUSH), 1);
    assert_eq!(RT.stats().runs(0, STEP), 1);
    assert_eq!(RT.pending(0), 0);
    // The statistics table says which level each vector is of.
    let table = RT.stats().to_string();
    assert!(table.contains("FLUSH (L0)"), "{table}");
    assert!(table.contains("STEP (L1)"), "{table}");
    assert!(table.contains("TASKLET:"), "{table}");
}

#[test]
fn a_level_never_runs_nested_in_itself() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
    static A_RUNNING: AtomicBool = AtomicBool::new(false);
    static B_NESTED: AtomicU32 = AtomicU32::new(0);
    static INNER: AtomicU32 = AtomicU32::new(99);
    const A: Vector = Vector::new(2);
    const B: Vector = Vector::new(5);
    RT.register_at(LOW, A, "A", |_| {
        A_RUNNING.store(true, Ordering::SeqCst);
        RT.raise(B);
        // A second level-0 drain interrupt while level 0 drains.
        INNER.store(RT.drain_level(LOW) as u32, Ordering::SeqCst);
        A_RUNNING.store(false, Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(LOW, B, "B", |_| {
        if A_RUNNING.load(Ordering::SeqCst) {
            B_NESTED.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();

    RT.raise(A);
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Complete);
    assert_eq!(INNER.load(Ordering::SeqCst), DrainOutcome::Busy as u32);
    // B ran once, after A returned, in the next pass of the same drain.
    assert_eq!(RT.stats().runs(0, B), 1);
    assert_eq!(B_NESTED.load(Ordering::SeqCst), 0);
    assert_eq!(RT.stats().restarts(0), 1);
    assert_eq!(RT.pending(0), 0);
}

#[test]
fn drain_runs_every_level_highest_first() {
    static RT: Runtime<Host, 1, 3> = Runtime::new(NO_TIME_BUDGET);
    static ORDER: AtomicUsize = AtomicUsize::new(0);
    static AT: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    fn record(level: usize) {
        AT[level].store(ORDER.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
    }
    // Vector numbers against the level order: the level decides.
    RT.register_at(Level::new(0), Vector::new(1), "L0", |_| record(0))
        .unwrap();
    RT.register_at(Level::new(2), Vector::new(20), "L2", |_| record(2))
        .unwrap();
    RT.register_at(Level::new(1), Vector::new(9), "L1", |_| record(1))
        .unwrap();
    for v in [1, 9, 20] {
        RT.raise(Vector::new(v));
    }
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    let order: Vec<usize> = AT.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert_eq!(order, [3, 2, 1]);
}

#[test]
fn drain_sweeps_again_for_a_higher_level_raised_by_a_lower_one() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    const SLOW: Vector = Vector::new(3);
    const FAST: Vector = Vector::new(4);
    RT.register_at(LOW, SLOW, "SLOW", |_| RT.raise(FAST))
        .unwrap();
    RT.register_at(HIGH, FAST, "FAST", |_| {}).unwrap();
    RT.raise(SLOW);
    // Level 1's turn came before level 0 raised FAST: a second sweep
    // runs it, so `Complete` still means nothing is pending.
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RT.stats().runs(0, FAST), 1);
    assert_eq!(RT.pending(0), 0);
}

#[test]
fn irq_exit_inside_a_low_level_drain_runs_only_the_higher_levels() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static EXIT: AtomicU32 = AtomicU32::new(99);
    static LOW2_DURING: AtomicU32 = AtomicU32::new(99);
    const LOW1: Vector = Vector::new(2);
    const LOW2: Vector = Vector::new(3);
    const FAST: Vector = Vector::new(4);
    RT.register_at(LOW, LOW1, "LOW1", |_| {
        // An interrupt arrives: it raises at both levels and exits.
        RT.irq_enter();
        RT.raise(LOW2);
        RT.raise(FAST);
        let out = RT.irq_exit();
        EXIT.store(out.map_or(98, |o| o as u32), Ordering::SeqCst);
        LOW2_DURING.store(RT.stats().runs(0, LOW2), Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(LOW, LOW2, "LOW2", |_| {}).unwrap();
    RT.register_at(HIGH, FAST, "FAST", |_| {}).unwrap();
    RT.raise(LOW1);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    // The exit ran level 1 and stopped at level 0, the interrupted one.
    assert_eq!(EXIT.load(Ordering::SeqCst), DrainOutcome::Busy as u32);
    assert_eq!(LOW2_DURING.load(Ordering::SeqCst), 0);
    assert_eq!(RT.stats().runs(0, FAST), 1);
    assert_eq!(RT.stats().runs(0, LOW2), 1);
}

#[test]
fn irq_exit_inside_a_high_level_drain_leaves_the_lower_levels_alone() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static EXIT: AtomicU32 = AtomicU32::new(99);
    static SLOW_DURING: AtomicU32 = AtomicU32::new(99);
    const FAST: Vector = Vector::new(4);
    const SLOW: Vector = Vector::new(3);
    RT.register_at(HIGH, FAST, "FAST", |_| {
        // An interrupt inside the level-1 handler raises level-0 work;
        // level 1 has nothing pending, but it is running: the exit must
        // not run level 0 inside it.
        RT.irq_enter();
        RT.raise(SLOW);
        let out = RT.irq_exit();
        EXIT.store(out.map_or(98, |o| o as u32), Ordering::SeqCst);
        SLOW_DURING.store(RT.stats().runs(0, SLOW), Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(LOW, SLOW, "SLOW", |_| {}).unwrap();
    RT.raise(FAST);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(EXIT.load(Ordering::SeqCst), DrainOutcome::Busy as u32);
    assert_eq!(SLOW_DURING.load(Ordering::SeqCst), 0);
    // The sweep went on down to level 0 after level 1 returned.
    assert_eq!(RT.stats().runs(0, SLOW), 1);
}

#[test]
fn tasklets_run_at_their_own_level() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static BULK_RUNNING: AtomicBool = AtomicBool::new(false);
    static URGENT_INSIDE_BULK: AtomicU32 = AtomicU32::new(0);
    static URGENT_RUNS: AtomicU32 = AtomicU32::new(0);
    static BULK_RUNS: AtomicU32 = AtomicU32::new(0);
    static URGENT: Tasklet = Tasklet::new(&RT, || {
        URGENT_RUNS.fetch_add(1, Ordering::SeqCst);
        if BULK_RUNNING.load(Ordering::SeqCst) {
            URGENT_INSIDE_BULK.fetch_add(1, Ordering::SeqCst);
        }
    })
    .at_level(HIGH);
    static BULK: Tasklet = Tasklet::new(&RT, || {
        BULK_RUNNING.store(true, Ordering::SeqCst);
        BULK_RUNS.fetch_add(1, Ordering::SeqCst);
        URGENT.schedule();
        let _ = RT.drain_level(HIGH); // level 1's drain interrupt
        BULK_RUNNING.store(false, Ordering::SeqCst);
    });
    assert_eq!((URGENT.level(), BULK.level()), (HIGH, LOW));

    assert!(URGENT.schedule());
    let tasklet_bit = 1 << Vector::TASKLET.index();
    assert_eq!(RT.pending_at(0, HIGH), tasklet_bit);
    assert_eq!(RT.pending_at(0, LOW), 0);
    // Level 0's drain does not run a level-1 tasklet.
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Complete);
    assert_eq!(URGENT_RUNS.load(Ordering::SeqCst), 0);
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Complete);
    assert_eq!(URGENT_RUNS.load(Ordering::SeqCst), 1);

    // A level-1 tasklet scheduled from a running level-0 tasklet runs
    // inside it when level 1 drains.
    assert!(BULK.schedule());
    assert_eq!(RT.pending_at(0, LOW), tasklet_bit);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(BULK_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(URGENT_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(URGENT_INSIDE_BULK.load(Ordering::SeqCst), 1);
    assert_eq!(RT.pending(0), 0);
    // The tasklet vector's counters add up both levels' runs.
    assert_eq!(RT.stats().runs(0, Vector::TASKLET), 3);
}

#[test]
fn a_tasklet_at_a_level_the_runtime_lacks_is_counted_and_runs_at_the_top_level() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .at_level(Level::new(5));
    assert!(T.schedule()); // a top half: no panic
    assert_eq!(RT.stats().misuse(0, Misuse::LevelOutOfRange), 1);
    assert_eq!(RT.pending_at(0, HIGH), 1 << Vector::TASKLET.index());
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

#[test]
fn a_vector_belongs_to_one_level() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    const V: Vector = Vector::new(7);
    const W: Vector = Vector::new(8);
    RT.register_at(HIGH, V, "V", |_| {}).unwrap();
    assert_eq!(
        RT.register_at(LOW, V, "V", |_| {}),
        Err(RegisterError::OtherLevel(V))
    );
    assert_eq!(
        RT.register(V, "V", |_| {}),
        Err(RegisterError::OtherLevel(V))
    );
    assert_eq!(
        RT.register_at(HIGH, V, "V", |_| {}),
        Err(RegisterError::AlreadyRegistered(V))
    );
    assert_eq!(
        RT.register_at(Level::new(2), W, "W", |_| {}),
        Err(RegisterError::LevelOutOfRange(Level::new(2)))
    );
    assert_eq!(RT.vector_level(V), HIGH);
    assert_eq!(RT.vector_level(W), LOW);
    // The refused registrations changed nothing: V still raises at level 1.
    RT.raise(V);
    assert_eq!(RT.pending_at(0, HIGH), 1 << V.index());
    assert_eq!(RT.pending_at(0, LOW), 0);
    assert!(RT.drain().is_complete());
    assert_eq!(
        RegisterError::OtherLevel(V).to_string(),
        "softirq vector 7 already has a handler at another level"
    );
    assert_eq!(
        RegisterError::LevelOutOfRange(Level::new(2)).to_string(),
        "level 2 is not below the runtime's number of levels"
    );
}

#[test]
fn a_vector_in_the_table_belongs_to_the_tables_level() {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const T1: Vector = Vector::new(10);
    struct TableBoard;
    impl Board for TableBoard {
        const HANDLERS: &'static Handlers = &Handlers::new().with_at(HIGH, T1, "T1", |_| {
            RUNS.fetch_add(1, Ordering::SeqCst);
        });
    }
    static RT: Runtime<BareMetal<TableBoard>, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    assert_eq!(
        RT.register_at(LOW, T1, "again", |_| {}),
        Err(RegisterError::OtherLevel(T1))
    );
    assert_eq!(
        RT.register_at(HIGH, T1, "again", |_| {}),
        Err(RegisterError::InTable(T1))
    );
    RT.raise(T1);
    assert_eq!(RT.pending_at(0, HIGH), 1 << T1.index());
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 0);
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

#[test]
fn a_guard_to_level_0_keeps_level_0_off_while_level_1_drains() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static LOW_RUNS: AtomicU32 = AtomicU32::new(0);
    static HIGH_RUNS: AtomicU32 = AtomicU32::new(0);
    const SLOW: Vector = Vector::new(3);
    const FAST: Vector = Vector::new(4);
    RT.register_at(LOW, SLOW, "SLOW", |_| {
        LOW_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(HIGH, FAST, "FAST", |_| {
        HIGH_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();

    let guard = RT.bh_disable_to(LOW);
    assert_eq!(guard.top_level(), LOW);
    RT.raise(SLOW);
    RT.raise(FAST);
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Disabled);
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Complete);
    assert_eq!(HIGH_RUNS.load(Ordering::SeqCst), 1);
    RT.raise(FAST);
    RT.irq_enter();
    assert_eq!(RT.irq_exit(), Some(DrainOutcome::Disabled)); // level 1 ran, 0 is off
    assert_eq!(HIGH_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(LOW_RUNS.load(Ordering::SeqCst), 0);
    assert_eq!(RT.pending_at(0, LOW), 1 << SLOW.index());
    drop(guard); // the last guard over level 0 runs its work
    assert_eq!(LOW_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(RT.pending(0), 0);

    // The full guard covers level 1 too.
    let all = RT.bh_disable();
    assert_eq!(all.top_level(), HIGH);
    RT.raise(FAST);
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Disabled);
    drop(all);
    assert_eq!(HIGH_RUNS.load(Ordering::SeqCst), 3);

    // A guard to a level the runtime lacks covers every level, counted.
    let too_far = RT.bh_disable_to(Level::new(4));
    assert_eq!(too_far.top_level(), HIGH);
    assert_eq!(RT.stats().misuse(0, Misuse::LevelOutOfRange), 1);
    RT.raise(FAST);
    drop(too_far); // covered level 1 too: its drop runs FAST
    assert_eq!(HIGH_RUNS.load(Ordering::SeqCst), 4);

    // Draining a level the runtime lacks drains nothing, counted.
    RT.raise(SLOW);
    assert_eq!(RT.drain_level(Level::new(2)), DrainOutcome::Complete);
    assert_eq!(RT.stats().misuse(0, Misuse::LevelOutOfRange), 2);
    assert_eq!(RT.pending_at(0, LOW), 1 << SLOW.index());
    assert_eq!(RT.pending_at(0, Level::new(2)), 0);
    assert!(RT.drain().is_complete());
}

#[test]
fn a_level_1_drain_thread_runs_while_a_guard_holds_level_0() {
    // Host drain threads drain every level: with level 0 held off by a
    // guard, a level-1 raise from another thread still runs.
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static HIGH_RUNS: AtomicU32 = AtomicU32::new(0);
    static LOW_RUNS: AtomicU32 = AtomicU32::new(0);
    const SLOW: Vector = Vector::new(3);
    const FAST: Vector = Vector::new(4);
    RT.register_at(LOW, SLOW, "SLOW", |_| {
        LOW_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(HIGH, FAST, "FAST", |_| {
        HIGH_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let drains = RT.spawn_drain_threads().unwrap();
    let guard = RT.bh_disable_to(LOW);
    thread::spawn(|| {
        RT.raise(SLOW);
        RT.raise(FAST);
    })
    .join()
    .unwrap();
    wait_for("level 1 drained by the drain thread", || {
        HIGH_RUNS.load(Ordering::SeqCst) == 1
    });
    thread::sleep(Duration::from_millis(20));
    assert_eq!(LOW_RUNS.load(Ordering::SeqCst), 0);
    drop(guard);
    assert_eq!(LOW_RUNS.load(Ordering::SeqCst), 1);
    drop(drains);
}

/// Counts `pend_drain` calls per level.
static PENDS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];

struct CountingBoard;
impl Board for CountingBoard {
    fn pend_drain(cpu: usize, level: Level) {
        assert_eq!(cpu, 0);
        PENDS[level.index()].fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn the_board_is_asked_to_pend_the_drain_of_the_raised_level() {
    static RT: Runtime<BareMetal<CountingBoard>, 1, 2> =
        Runtime::new(Config::DEFAULT.max_restart(1));
    static PENDS_IN_LOW: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
    const SLOW: Vector = Vector::new(3);
    const SLOW2: Vector = Vector::new(5);
    const FAST: Vector = Vector::new(4);
    let pends = || [0, 1].map(|l| PENDS[l].load(Ordering::SeqCst));
    RT.register_at(LOW, SLOW, "SLOW", |_| {
        let before = [0, 1].map(|l| PENDS[l].load(Ordering::SeqCst));
        RT.raise(FAST); // level 1 idle: its drain interrupt is pended
        RT.raise(SLOW2); // level 0 is draining: no pend, this drain runs it
        for l in 0..2 {
            PENDS_IN_LOW[l].store(
                PENDS[l].load(Ordering::SeqCst) - before[l],
                Ordering::SeqCst,
            );
        }
    })
    .unwrap();
    RT.register_at(LOW, SLOW2, "SLOW2", |_| {}).unwrap();
    RT.register_at(HIGH, FAST, "FAST", |_| RT.raise(FAST))
        .unwrap();

    RT.raise(SLOW);
    assert_eq!(pends(), [1, 0]);
    RT.raise(SLOW); // coalesced
    assert_eq!(pends(), [1, 0]);
    // One pass (max_restart 1): SLOW2, raised during it, is left; the
    // drain pends level 0 again.
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Remaining);
    assert_eq!(
        [0, 1].map(|l| PENDS_IN_LOW[l].load(Ordering::SeqCst)),
        [0, 1]
    );
    assert_eq!(pends(), [2, 1]);
    assert_eq!(RT.drain_level(LOW), DrainOutcome::Complete);
    // FAST re-raises itself: out of budget, level 1's drain is pended.
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Remaining);
    assert_eq!(pends(), [2, 2]);
    // The last drop of a guard pends (BareMetal: no drain in thread
    // mode) each covered level that has work, with its own level.
    let guard = RT.bh_disable();
    assert_eq!(RT.drain_level(HIGH), DrainOutcome::Disabled);
    RT.raise(SLOW); // level 0 was idle: pended at the raise
    assert_eq!(pends(), [3, 2]);
    drop(guard);
    assert_eq!(pends(), [4, 3]);
    assert_eq!(RT.stats().budget_exhausted(0), 2);
}

/// Many threads bound to two CPUs raise at both levels while the drain
/// threads run and, on each CPU, a second thread calls `drain_level(1)`
/// as a level-1 drain interrupt would (preempting the drain thread's
/// level-0 drain). Every raise is accounted for exactly
/// (raised = runs + coalesced), the last raise of each vector ran, and no
/// level ever ran two handlers at once on one CPU.
#[test]
fn exact_accounting_under_a_threaded_storm_with_two_levels() {
    static RT: Runtime<Host, 2, 2> = Runtime::new(NO_TIME_BUDGET);
    const VS: [Vector; 2] = [Vector::new(3), Vector::new(4)];
    /// In-flight handlers per (cpu, level): never above 1.
    static IN_FLIGHT: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
    static NESTED: AtomicU32 = AtomicU32::new(0);
    static PREEMPTED: AtomicU32 = AtomicU32::new(0);
    /// Last sequence number raised / seen, per (cpu, level).
    static SENT: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
    static SEEN: [[AtomicU32; 2]; 2] = [const { [const { AtomicU32::new(0) }; 2] }; 2];
    fn handler(cpu: usize, level: usize) {
        if IN_FLIGHT[cpu][level].fetch_add(1, Ordering::SeqCst) != 0 {
            NESTED.fetch_add(1, Ordering::SeqCst);
        }
        if level == 1 && IN_FLIGHT[cpu][0].load(Ordering::SeqCst) != 0 {
            PREEMPTED.fetch_add(1, Ordering::SeqCst);
        }
        SEEN[cpu][level].store(SENT[cpu][level].load(Ordering::SeqCst), Ordering::SeqCst);
        if level == 0 {
            // Long enough for the level-1 "interrupt" to land inside.
            for _ in 0..3 {
                thread::yield_now();
            }
        }
        IN_FLIGHT[cpu][level].fetch_sub(1, Ordering::SeqCst);
    }
    RT.register_at(LOW, VS[0], "BULK", |cpu| handler(cpu, 0))
        .unwrap();
    RT.register_at(HIGH, VS[1], "URGENT", |cpu| handler(cpu, 1))
        .unwrap();
    let rounds: u32 = if cfg!(miri) { 50 } else { 20_000 };
    let drains = RT.spawn_drain_threads().unwrap();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for cpu in 0..2 {
            let stop = &stop;
            // The level-1 drain interrupt of this CPU.
            s.spawn(move || {
                let _b = RT.bind_current_thread(cpu).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    let _ = RT.drain_level(HIGH);
                    thread::yield_now();
                }
            });
        }
        let raisers: Vec<_> = (0..2)
            .flat_map(|cpu| (0..2).map(move |level| (cpu, level)))
            .map(|(cpu, level)| {
                s.spawn(move || {
                    let _b = RT.bind_current_thread(cpu).unwrap();
                    // Every `pace` raises, wait for the drain to catch
                    // up, so the storm makes many drains rather than one
                    // long coalesced burst.
                    let pace = if level == 0 { 64 } else { 8 };
                    for i in 1..=rounds {
                        SENT[cpu][level].store(i, Ordering::SeqCst);
                        RT.raise(VS[level]);
                        if i % pace == 0 {
                            let start = Instant::now();
                            while SEEN[cpu][level].load(Ordering::SeqCst) != i {
                                assert!(
                                    start.elapsed() < Duration::from_secs(10),
                                    "raise {i} at cpu {cpu} level {level} never ran"
                                );
                                thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        for r in raisers {
            r.join().unwrap();
        }
        for seen in SEEN.iter().flatten() {
            wait_for("the last raise ran", || {
                seen.load(Ordering::SeqCst) == rounds
            });
        }
        stop.store(true, Ordering::SeqCst);
    });
    drop(drains);
    let s = RT.stats();
    for cpu in 0..2 {
        for (level, &v) in VS.iter().enumerate() {
            assert_eq!(
                s.raised(cpu, v),
                rounds,
                "cpu {cpu} level {level}: raised = runs + coalesced + pending"
            );
            assert_eq!(
                s.runs(cpu, v) + s.coalesced(cpu, v),
                rounds,
                "cpu {cpu} level {level}"
            );
            assert_eq!(s.unhandled(cpu, v), 0);
        }
        assert_eq!(RT.pending(cpu), 0);
    }
    assert_eq!(
        NESTED.load(Ordering::SeqCst),
        0,
        "a level ran nested in itself"
    );
    println!(
        "storm: 2 CPUs x 2 levels x {rounds} raises; runs L0 {}+{}, L1 {}+{}; \
         level-1 handlers inside a level-0 handler: {}",
        s.runs(0, VS[0]),
        s.runs(1, VS[0]),
        s.runs(0, VS[1]),
        s.runs(1, VS[1]),
        PREEMPTED.load(Ordering::SeqCst)
    );
}

/// With the crate's own drain threads (one per CPU and level), a level-1
/// raise made while a level-0 handler runs is drained by the level-1
/// thread before that handler returns: the handler waits (bounded) for it.
/// With one drain thread per CPU draining every level, the handler would
/// wait out its 5 s bound.
#[test]
fn drain_threads_let_level_1_run_while_a_level_0_handler_runs() {
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static STEP_RUNS: AtomicU32 = AtomicU32::new(0);
    static PREEMPTED: AtomicBool = AtomicBool::new(false);
    const FLUSH: Vector = Vector::new(3);
    const STEP: Vector = Vector::new(4);
    RT.register_at(Level::new(1), STEP, "STEP", |_| {
        STEP_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    RT.register_at(Level::new(0), FLUSH, "FLUSH", |_| {
        // A long log flush: the motor step raised now must not wait for it.
        RT.raise(STEP);
        let t0 = Instant::now();
        while STEP_RUNS.load(Ordering::SeqCst) == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        PREEMPTED.store(STEP_RUNS.load(Ordering::SeqCst) == 1, Ordering::SeqCst);
    })
    .unwrap();
    let drains = RT.spawn_drain_threads().unwrap();
    assert_eq!(drains.len(), 2, "one thread per CPU and level");
    std::thread::spawn(|| {
        let _cpu0 = RT.bind_current_thread(0).unwrap();
        RT.raise(FLUSH);
    })
    .join()
    .unwrap();
    let t0 = Instant::now();
    while RT.stats().runs(0, FLUSH) == 0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(drains);
    assert_eq!(RT.stats().runs(0, FLUSH), 1);
    assert!(
        PREEMPTED.load(Ordering::SeqCst),
        "level 1 ran while the level-0 handler was running"
    );
    assert_eq!(RT.stats().runs(0, STEP), 1);
}
