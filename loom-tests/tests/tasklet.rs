//! loom models: the tasklet state machine (schedule, run, disable/enable,
//! kill) and the per-CPU tasklet list.
//!
//! See `README.md` ("tasklet") for what each model checks and which
//! mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, DrainOutcome, Runtime, Tasklet, TaskletKilled};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, InFlight, LoomCpu};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

/// Per-execution state the callbacks reach through `CTX`.
struct Ctx {
    /// Runs of `T` in flight (never more than one).
    in_flight: InFlight,
    /// State private to `T`'s callback: a tasklet never runs on two CPUs
    /// at once, so its callback may keep non-atomic state. Every run
    /// increments it; two runs without a happens-before edge between them
    /// (the `finish` Release / `start` Acquire pair) are a causality
    /// violation.
    private: UnsafeCell<u32>,
    /// Top-half data: each scheduler stores 1 here (Relaxed) before its
    /// `schedule`; every run loads both (Relaxed) and records what it saw
    /// in `last_a`/`last_b`. Whatever a run sees, the *last* run must see
    /// both stores: every schedule is covered by a run that starts after it
    /// and synchronises with it.
    data_a: AtomicU32,
    data_b: AtomicU32,
    last_a: StdAtomicU32,
    last_b: StdAtomicU32,
    /// Written (loom cell) by the thread that disabled or killed `T`, while
    /// no run may happen; read by every run. A run inside the window reads
    /// `true` or, if loom can order it either way, is a causality
    /// violation.
    window: UnsafeCell<bool>,
    /// Runs of `U` (the second tasklet of `list_links_are_published`).
    runs_u: Count,
}

loom::lazy_static! {
    // At most 2 restarts per drain keeps the state space small; a drain
    // that runs out leaves the rest to the final drains in the main thread.
    static ref RT: Runtime<LoomCpu, 2> = Runtime::new(Config::DEFAULT.max_restart(2));
    static ref T: Tasklet = Tasklet::new(&*RT, body);
    static ref U: Tasklet = Tasklet::new(&*RT, body_u);
    static ref CTX: Ctx = Ctx {
        in_flight: InFlight::new(),
        private: UnsafeCell::new(0),
        data_a: AtomicU32::new(0),
        data_b: AtomicU32::new(0),
        last_a: StdAtomicU32::new(0),
        last_b: StdAtomicU32::new(0),
        window: UnsafeCell::new(false),
        runs_u: Count::new(),
    };
}

fn body() {
    CTX.in_flight.enter("tasklet T");
    // SAFETY (model): T's runs never overlap; loom checks it.
    CTX.private.with_mut(|p| unsafe { *p += 1 });
    CTX.last_a.store(CTX.data_a.load(Relaxed), SeqCst);
    CTX.last_b.store(CTX.data_b.load(Relaxed), SeqCst);
    // SAFETY (model): written only while T may not run; loom checks it.
    let in_window = CTX.window.with(|p| unsafe { *p });
    assert!(!in_window, "T ran after disable()/kill() returned");
    CTX.in_flight.leave();
}

fn body_u() {
    CTX.runs_u.inc();
}

fn set_up() {
    bind_cpu(0);
    let _ = (&*RT, &*T, &*U, &*CTX);
}

/// Private-state runs: what the callback counted itself.
fn private_runs() -> u32 {
    // SAFETY (model): called after every thread was joined.
    CTX.private.with(|p| unsafe { *p })
}

/// The main thread's final drains, after every modelled thread has
/// returned: what a drain thread woken by the backend's kick would run
/// (a drain that ran out of restarts, a tasklet re-queued behind a run on
/// another CPU).
fn final_drains() {
    for cpu in [0, 1] {
        bind_cpu(cpu);
        let _ = RT.drain();
    }
    bind_cpu(0);
}

/// (a) A run is pending on CPU 0 (scheduled before the threads start) and
/// CPU 0 drains it, while CPU 1's top half stores its data, schedules the
/// same tasklet and drains CPU 1. If that schedule queued the tasklet
/// (`true`: it landed while the tasklet was running, or after) there is
/// exactly one more run; if it was coalesced (`false`) there is none. Runs
/// never overlap, and the last run saw CPU 1's data.
#[test]
fn schedule_while_running_runs_once_more() {
    model(|| {
        set_up();
        assert!(T.schedule());
        let a = spawn_on(0, || RT.drain());
        let b = spawn_on(1, || {
            CTX.data_b.store(1, Relaxed);
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let _ = a.join().unwrap();
        let queued_b = b.join().unwrap();
        final_drains();

        let expected = 1 + u32::from(queued_b);
        assert_eq!(
            T.runs(),
            expected,
            "runs (CPU 1's schedule returned {queued_b})"
        );
        assert_eq!(private_runs(), expected);
        assert_eq!(T.runs() + T.coalesced(), 2, "runs + coalesced == schedules");
        assert_eq!(
            CTX.last_b.load(SeqCst),
            1,
            "CPU 1's schedule was not covered"
        );
        assert!(!T.is_scheduled());
    });
}

/// (a') The hand-off: as (a), but nobody drains afterwards. A run is
/// pending on CPU 0 and CPU 0 drains it, while CPU 1's top half stores its
/// data, schedules the tasklet and drains CPU 1. When CPU 1's drain finds
/// the tasklet running on CPU 0 it hands it off (no spinning: its drain
/// ends), and CPU 0's drain, whose `finish` sees the hand-off, links it
/// again and runs it in its next pass; if CPU 0's run ended first, CPU 1
/// runs it. Either way, by the time both drains have returned, with no
/// further drain: runs == 1 + (CPU 1's schedule queued), never
/// overlapping, the last run saw CPU 1's data, nothing is pending on
/// either CPU, and the tasklet is idle. A hand-off that lost the tasklet
/// (or left it for a later drain) fails the run count.
#[test]
fn schedule_while_running_elsewhere_is_handed_off() {
    model(|| {
        set_up();
        assert!(T.schedule());
        let a = spawn_on(0, || RT.drain());
        let b = spawn_on(1, || {
            CTX.data_b.store(1, Relaxed);
            let queued = T.schedule();
            (queued, RT.drain())
        });
        let outcome_a = a.join().unwrap();
        let (queued_b, outcome_b) = b.join().unwrap();

        let expected = 1 + u32::from(queued_b);
        assert_eq!(
            T.runs(),
            expected,
            "runs without a later drain (CPU 1's schedule returned {queued_b})"
        );
        assert_eq!(private_runs(), expected);
        assert_eq!(
            (outcome_a, outcome_b),
            (DrainOutcome::Complete, DrainOutcome::Complete)
        );
        assert_eq!((RT.pending(0), RT.pending(1)), (0, 0));
        assert_eq!(T.runs() + T.coalesced(), 2, "runs + coalesced == schedules");
        assert_eq!(
            CTX.last_b.load(SeqCst),
            1,
            "CPU 1's schedule was not covered"
        );
        assert!(!T.is_scheduled());
    });
}

/// (b) Two CPUs each store their data, schedule the same (idle) tasklet and
/// drain their own CPU. Every schedule that returned `true` is one run,
/// the others are coalesced into a run that covers them: runs == `true`
/// returns >= 1, runs + coalesced == 2, the last run saw both CPUs' data,
/// runs never overlap.
#[test]
fn two_cpus_schedule_and_drain() {
    model(|| {
        set_up();
        let a = spawn_on(0, || {
            CTX.data_a.store(1, Relaxed);
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let b = spawn_on(1, || {
            CTX.data_b.store(1, Relaxed);
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let qa = a.join().unwrap();
        let qb = b.join().unwrap();
        final_drains();

        let expected = u32::from(qa) + u32::from(qb);
        assert!(expected >= 1, "both schedules coalesced: into what?");
        assert_eq!(
            T.runs(),
            expected,
            "runs vs schedules that queued ({qa}, {qb})"
        );
        assert_eq!(private_runs(), expected);
        assert_eq!(T.runs() + T.coalesced(), 2, "runs + coalesced == schedules");
        assert_eq!(
            CTX.last_a.load(SeqCst),
            1,
            "CPU 0's schedule was not covered"
        );
        assert_eq!(
            CTX.last_b.load(SeqCst),
            1,
            "CPU 1's schedule was not covered"
        );
        assert!(!T.is_scheduled());
    });
}

/// (c) CPU 0 schedules the tasklet and drains; CPU 1 disables it (waiting
/// for a run in progress), writes the window cell while it is disabled,
/// clears it, enables it and drains CPU 1 (an unparking `enable` links the
/// tasklet on the enabling CPU). No run overlaps the window; the one run
/// happens exactly once, by the time both threads have returned (held
/// while disabled, then run after `enable`).
#[test]
fn disable_holds_the_run_until_enable() {
    model(|| {
        set_up();
        let s = spawn_on(0, || {
            CTX.data_a.store(1, Relaxed);
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let d = spawn_on(1, || {
            T.disable();
            // SAFETY (model): T may not run between disable() and enable();
            // loom checks it.
            CTX.window.with_mut(|p| unsafe { *p = true });
            assert!(T.is_disabled());
            CTX.window.with_mut(|p| unsafe { *p = false });
            T.enable();
            let _ = RT.drain();
        });
        let queued = s.join().unwrap();
        d.join().unwrap();

        assert!(queued, "the only schedule of an idle tasklet queues it");
        assert_eq!(T.runs(), 1, "the held run did not happen after enable");
        assert_eq!(private_runs(), 1);
        assert_eq!(CTX.last_a.load(SeqCst), 1, "the schedule was not covered");
        assert!(!T.is_scheduled());
        assert!(!T.is_disabled());
    });
}

/// (d) CPU 0 schedules the tasklet and drains; CPU 1 kills it, then writes
/// the window cell (no run may start after `kill` returns, and none may be
/// in progress) and tries to schedule it again (refused). At most one run,
/// only if the schedule queued it, never after `kill` returned; after the
/// final drains nothing is pending.
#[test]
fn kill_stops_runs() {
    model(|| {
        set_up();
        let s = spawn_on(0, || {
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let k = spawn_on(1, || {
            T.kill();
            // SAFETY (model): no run of T after kill() returned; loom
            // checks it.
            CTX.window.with_mut(|p| unsafe { *p = true });
            assert_eq!(T.try_schedule(), Err(TaskletKilled));
            let _ = RT.drain();
        });
        let queued = s.join().unwrap();
        k.join().unwrap();
        final_drains();

        assert!(
            T.runs() <= u32::from(queued),
            "runs {} but queued {queued}",
            T.runs()
        );
        assert_eq!(private_runs(), T.runs());
        assert!(T.is_killed());
        assert!(!T.is_scheduled());
        assert!(!T.schedule());
    });
}

/// The list itself: `U` is linked on CPU 0's list (scheduled before the
/// threads start). A second context on CPU 0 schedules `T`, which links it
/// in front of `U` (`T.next = U`; this push does not raise, the list was
/// not empty) and drains; CPU 0's drain runs concurrently. Whichever drain
/// takes the list must see `T.next`: both tasklets run exactly once, with
/// no further drain.
#[test]
fn list_links_are_published() {
    model(|| {
        set_up();
        assert!(U.schedule());
        let s = spawn_on(0, || {
            assert!(T.schedule());
            RT.drain()
        });
        let d = spawn_on(0, || RT.drain());
        let os = s.join().unwrap();
        let od = d.join().unwrap();

        assert_eq!(
            CTX.runs_u.get(),
            1,
            "U was lost from the list ({os:?}, {od:?})"
        );
        assert_eq!(T.runs(), 1, "T runs ({os:?}, {od:?})");
        assert_eq!(U.runs(), 1);
        assert_eq!(RT.pending(0), 0);
    });
}

/// (d, three CPUs' worth of contexts) Two CPUs schedule and drain while a
/// third context kills the tasklet: runs never overlap, none starts after
/// `kill` returned, at most one run per schedule that queued, and after the
/// final drains nothing is pending.
#[test]
fn kill_races_two_cpus() {
    model(|| {
        set_up();
        let s0 = spawn_on(0, || {
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let s1 = spawn_on(1, || {
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let k = spawn_on(1, || {
            T.kill();
            // SAFETY (model): no run of T after kill() returned.
            CTX.window.with_mut(|p| unsafe { *p = true });
        });
        let q0 = s0.join().unwrap();
        let q1 = s1.join().unwrap();
        k.join().unwrap();
        final_drains();

        assert!(T.runs() <= u32::from(q0) + u32::from(q1));
        assert_eq!(private_runs(), T.runs());
        assert!(!T.is_scheduled());
        assert_eq!(RT.pending(0) | RT.pending(1), 0);
    });
}

/// (c + d) A run parked while the tasklet is disabled, then killed: CPU 0
/// schedules and drains (the drain may park the run); CPU 1 disables,
/// kills, then enables. The parked run is discarded (it is on no list, so
/// `kill` clears it), no run starts after `kill` returned, `enable` on the
/// killed tasklet links nothing, and after the final drains nothing is
/// pending.
#[test]
fn kill_discards_a_parked_run() {
    model(|| {
        set_up();
        let s = spawn_on(0, || {
            let queued = T.schedule();
            let _ = RT.drain();
            queued
        });
        let k = spawn_on(1, || {
            T.disable();
            T.kill();
            // SAFETY (model): no run of T after kill() returned.
            CTX.window.with_mut(|p| unsafe { *p = true });
            T.enable();
            let _ = RT.drain();
        });
        let queued = s.join().unwrap();
        k.join().unwrap();
        final_drains();

        // `false` only if the schedule came after the kill.
        assert!(T.runs() <= u32::from(queued));
        assert_eq!(private_runs(), T.runs());
        assert!(T.is_killed());
        assert!(!T.is_scheduled());
        assert!(!T.is_disabled());
        assert_eq!(RT.pending(0) | RT.pending(1), 0);
    });
}
