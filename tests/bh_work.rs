//! Work items in a runtime's bottom half (`Runtime::queue_work`, Linux's
//! `WQ_BH` workqueues): queued from a top half, run in the drain by vector
//! 6 after the tasklets; coalescing; queued while running runs again after;
//! never concurrent with itself, across CPUs too; cancel from a top half
//! leaves a ghost the drain skips; flush and cancel_sync wait (draining
//! the current CPU, or spinning); a panicking item strands nothing.
//!
//! Each test uses its own runtime and items, so they run in parallel.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{
    Backend, Config, Host, Misuse, Runtime, Tasklet, Vector, Work, Workqueue, WorkqueueError,
};

/// No time budget: a drain's restarts are bounded by `max_restart` only,
/// so a slow machine (or miri) does not turn a complete drain into
/// `Remaining`.
const NO_TIME_BUDGET: Config = Config::DEFAULT.time_budget_ns(0);

/// Polls `cond` for up to 10 s.
#[track_caller]
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        thread::yield_now();
    }
}

#[test]
fn queued_from_a_top_half_it_runs_in_the_drain_after_the_tasklets() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static ORDER: AtomicU32 = AtomicU32::new(0);
    static TASKLET_AT: AtomicU32 = AtomicU32::new(0);
    static WORK_AT: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        TASKLET_AT.store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    static W: Work = Work::new("w", |_| {
        WORK_AT.store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
    });
    // The top half: an interrupt handler queues the item, then a tasklet.
    RT.irq_enter();
    assert!(RT.queue_work(&W));
    assert!(T.schedule());
    assert!(W.is_pending());
    assert_eq!(RT.pending(0), 1 << Vector::TASKLET.index());
    // The handler's exit drains (outermost irq_exit), as on a board.
    assert!(RT.irq_exit().is_some_and(|o| o.is_complete()));
    assert_eq!(W.runs(), 1);
    assert!(!W.is_pending() && !W.is_running());
    assert_eq!(
        (
            TASKLET_AT.load(Ordering::Relaxed),
            WORK_AT.load(Ordering::Relaxed)
        ),
        (1, 2),
        "work runs after the tasklets of its vector"
    );
    assert_eq!(RT.stats().runs(0, Vector::TASKLET), 1);
}

#[test]
fn coalesced_queues_are_counted_and_covered_by_one_run() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static W: Work = Work::new("w", |_| {});
    let results: Vec<bool> = (0..5).map(|_| RT.queue_work(&W)).collect();
    assert_eq!(results, [true, false, false, false, false]);
    assert_eq!(W.coalesced(), 4);
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 1);
    // Idle again: the next queue is a new instance.
    assert!(RT.queue_work(&W));
    assert!(RT.drain().is_complete());
    assert_eq!((W.runs(), W.coalesced()), (2, 4));
}

#[test]
fn queued_while_running_it_runs_again_after_the_run() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    static OVERLAP: AtomicBool = AtomicBool::new(false);
    static QUEUED_INSIDE: AtomicU32 = AtomicU32::new(0);
    static W: Work = Work::new("w", |w| {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAP.store(true, Ordering::SeqCst);
        }
        if w.runs() == 0 {
            // An interrupt during the run queues it again (twice: the
            // second is coalesced into the first).
            assert!(RT.queue_work(&W));
            assert!(!RT.queue_work(&W));
            assert!(w.is_pending() && w.is_running());
            QUEUED_INSIDE.fetch_add(1, Ordering::SeqCst);
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
    assert!(RT.queue_work(&W));
    assert!(RT.drain().is_complete());
    assert_eq!(QUEUED_INSIDE.load(Ordering::SeqCst), 1);
    assert_eq!(
        W.runs(),
        2,
        "the instance queued during the run ran after it"
    );
    assert!(!OVERLAP.load(Ordering::SeqCst));
    assert!(!W.is_pending());
    assert_eq!(RT.stats().restarts(0), 1, "it ran in the drain's next pass");
}

#[test]
fn queue_work_on_runs_the_item_in_that_cpus_drain() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);
    static W: Work = Work::new("w", |_| {
        RAN_ON.store(Host::current_cpu(), Ordering::SeqCst);
    });
    // Queued from CPU 0 (this thread is unbound: CPU 0) for CPU 1.
    assert!(RT.queue_work_on(1, &W));
    assert_eq!(RT.pending(0), 0);
    assert_eq!(RT.pending(1), 1 << 6);
    // CPU 0's drain does not run it.
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 0);
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(W.runs(), 1);
    assert_eq!(RAN_ON.load(Ordering::SeqCst), 1);
    // Out of range: refused and counted, never a panic.
    assert!(!RT.queue_work_on(2, &W));
    assert_eq!(RT.stats().misuse(0, Misuse::CpuOutOfRange), 1);
    assert_eq!(
        RT.try_queue_work_on(7, &W),
        Err(WorkqueueError::CpuOutOfRange { cpu: 7, cpus: 2 })
    );
}

#[test]
fn queue_work_on_kicks_the_other_cpus_drain_thread() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static W: Work = Work::new("w", |_| {});
    let drains = RT.spawn_drain_threads().unwrap();
    for i in 1..=50 {
        assert!(RT.queue_work_on(1, &W));
        wait_for("the drain thread of CPU 1 runs it", || W.runs() == i);
    }
    drop(drains);
}

/// Two CPUs (two bound threads) queue one item on each other's and their
/// own queues as fast as they can and drain their own CPU. Every queue
/// that returned `true` is covered by exactly one run, every `false` is
/// counted as coalesced, and no two runs overlap.
#[test]
fn a_two_cpu_storm_never_runs_it_concurrently_and_loses_nothing() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    static RUNS_ON: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
    static W: Work = Work::new("storm", |_| {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        RUNS_ON[Host::current_cpu()].fetch_add(1, Ordering::Relaxed);
        for _ in 0..50 {
            std::hint::spin_loop();
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
    // Time-bound, not count-bound: with both threads live for the same
    // time, each drains what the other queued (on a loaded machine the two
    // may share one core; the yields let them alternate).
    const FOR: Duration = Duration::from_millis(300);
    static START: Barrier = Barrier::new(2);
    let cpu = |me: usize| {
        thread::spawn(move || {
            let _bound = RT.bind_current_thread(me).unwrap();
            let (mut queued, mut coalesced) = (0u32, 0u32);
            START.wait();
            let t0 = Instant::now();
            let mut i = 0u32;
            while t0.elapsed() < FOR {
                i += 1;
                if i.is_multiple_of(64) {
                    thread::yield_now();
                }
                let target = if i.is_multiple_of(2) { 1 - me } else { me };
                if RT.queue_work_on(target, &W) {
                    queued += 1;
                } else {
                    coalesced += 1;
                }
                let _ = RT.drain();
            }
            (queued, coalesced)
        })
    };
    let (a, b) = (cpu(0), cpu(1));
    let (qa, ca) = a.join().unwrap();
    let (qb, cb) = b.join().unwrap();
    // Finish what is left, on each CPU.
    for me in 0..2 {
        thread::spawn(move || {
            let _bound = RT.bind_current_thread(me).unwrap();
            while RT.pending(me) != 0 {
                let _ = RT.drain();
            }
        })
        .join()
        .unwrap();
    }
    let runs = [
        RUNS_ON[0].load(Ordering::Relaxed),
        RUNS_ON[1].load(Ordering::Relaxed),
    ];
    println!(
        "storm ({FOR:?}): {} queues, {} coalesced, {} runs (CPU0 {}, CPU1 {}), {} overlaps",
        qa + qb + ca + cb,
        ca + cb,
        W.runs(),
        runs[0],
        runs[1],
        OVERLAPS.load(Ordering::SeqCst)
    );
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0, "ran concurrently");
    assert!(!W.is_pending() && !W.is_running());
    assert_eq!(W.runs(), qa + qb, "every queued instance ran exactly once");
    assert_eq!(W.coalesced(), ca + cb);
    assert_eq!(runs[0] + runs[1], W.runs());
    // Under miri the threads interleave coarsely: an item relinked on the
    // CPU that ran it may never reach the other one in the few hundred
    // queues miri gets through.
    if !cfg!(miri) {
        assert!(runs[0] > 0 && runs[1] > 0, "both CPUs ran it");
    }
}

#[test]
fn cancel_from_a_top_half_leaves_a_ghost_the_drain_skips() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static W: Work = Work::new("w", |_| {});
    static OTHER: Work = Work::new("other", |_| {});
    RT.irq_enter();
    assert!(RT.queue_work(&W));
    assert!(RT.queue_work(&OTHER));
    assert!(W.cancel(), "a pending instance was cancelled");
    assert!(!W.cancel());
    assert!(!W.is_pending());
    let _ = RT.irq_exit();
    assert_eq!(W.runs(), 0, "the cancelled instance never ran");
    assert_eq!(OTHER.runs(), 1, "the item behind the ghost ran");
    // The ghost is gone: the next queue links a new instance, which runs.
    assert!(RT.queue_work(&W));
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 1);
}

#[test]
fn cancelled_then_queued_before_the_drain_it_runs_once_where_it_is_linked() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static RAN_ON: AtomicUsize = AtomicUsize::new(usize::MAX);
    static W: Work = Work::new("w", |_| {
        RAN_ON.store(Host::current_cpu(), Ordering::SeqCst);
    });
    assert!(RT.queue_work_on(1, &W));
    assert!(W.cancel());
    // Still linked on CPU 1's queue: this queue (for CPU 0) makes the ghost
    // pending again, and the instance runs on CPU 1 (documented).
    assert!(RT.queue_work(&W));
    assert!(W.is_pending());
    assert_eq!(RT.pending(0), 0, "nothing was linked on CPU 0");
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 0);
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(W.runs(), 1, "ran once, not once per queue");
    assert_eq!(RAN_ON.load(Ordering::SeqCst), 1);
    assert!(!W.is_pending());
}

#[test]
fn flush_drains_this_cpu_and_waits_for_another_cpus_run() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static GO: AtomicBool = AtomicBool::new(false);
    static W: Work = Work::new("w", |_| {});
    static SLOW: Work = Work::new("slow", |_| {
        thread::sleep(Duration::from_millis(30));
    });
    // On this CPU: flush runs the drain itself.
    assert!(RT.queue_work(&W));
    assert_eq!(W.flush(), Ok(true));
    assert_eq!(W.runs(), 1);
    assert_eq!(W.flush(), Ok(false));
    // On CPU 1, drained by another thread once `GO`: flush waits for the run.
    assert!(RT.queue_work_on(1, &SLOW));
    let cpu1 = thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        wait_for("go", || GO.load(Ordering::SeqCst));
        thread::sleep(Duration::from_millis(20));
        assert!(RT.drain().is_complete());
    });
    GO.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    assert_eq!(SLOW.flush(), Ok(true));
    let waited = t0.elapsed();
    assert_eq!(SLOW.runs(), 1, "flush returned before the run was over");
    println!("flush of an item on another CPU waited {waited:?}");
    assert!(waited >= Duration::from_millis(40));
    cpu1.join().unwrap();
}

#[test]
fn cancel_sync_of_a_running_item_waits_and_refuses_its_requeue() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static REQUEUE: AtomicU32 = AtomicU32::new(0); // 1 accepted, 2 refused
    static W: Work = Work::new("w", |_| {
        wait_for("released", || RELEASE.load(Ordering::SeqCst));
        // Re-queues itself at the end: refused while cancel_sync waits.
        let r = RT.try_queue_work_on(1, &W);
        REQUEUE.store(
            if r == Err(WorkqueueError::Canceling) {
                2
            } else {
                1
            },
            Ordering::SeqCst,
        );
    });
    assert!(RT.queue_work_on(1, &W));
    let cpu1 = thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    });
    wait_for("running", || W.is_running());
    let canceller = thread::spawn(|| W.cancel_sync());
    wait_for("cancel_sync waits", || W.is_canceling());
    assert!(W.is_running());
    RELEASE.store(true, Ordering::SeqCst);
    assert_eq!(canceller.join().unwrap(), Ok(false), "nothing was pending");
    assert!(!W.is_pending() && !W.is_running() && !W.is_canceling());
    assert_eq!(
        REQUEUE.load(Ordering::SeqCst),
        2,
        "the re-queue was refused"
    );
    cpu1.join().unwrap();
    assert_eq!(W.runs(), 1);
    // cancel_sync of a pending instance: cancelled, never runs.
    assert!(RT.queue_work(&W));
    assert_eq!(W.cancel_sync(), Ok(true));
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 1);
}

#[test]
fn flush_and_cancel_sync_from_the_item_itself_would_deadlock() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static SEEN: AtomicU32 = AtomicU32::new(0);
    static W: Work = Work::new("w", |w| {
        assert_eq!(w.flush(), Err(WorkqueueError::WouldDeadlock));
        assert_eq!(w.cancel_sync(), Err(WorkqueueError::WouldDeadlock));
        SEEN.fetch_add(1, Ordering::SeqCst);
    });
    assert!(RT.queue_work(&W));
    assert!(RT.drain().is_complete());
    assert_eq!(SEEN.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_item_goes_to_the_drain_caller_and_strands_nothing() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static PANICS: AtomicBool = AtomicBool::new(true);
    static BAD: Work = Work::new("bad", |_| {
        if PANICS.load(Ordering::SeqCst) {
            panic!("work item failed");
        }
    });
    static AFTER: Work = Work::new("after", |_| {});
    static LATER: Work = Work::new("later", |_| {});
    assert!(RT.queue_work(&BAD));
    assert!(RT.queue_work(&AFTER));
    let r = catch_unwind(AssertUnwindSafe(|| RT.drain()));
    assert!(r.is_err(), "the panic reached the drain's caller");
    assert!(!BAD.is_running(), "the panicking item is not left running");
    assert_eq!(BAD.runs(), 1);
    assert_eq!(RT.stats().panicked(0, Vector::TASKLET), 1);
    // The rest was put back and re-pended: the next drain runs it.
    assert_eq!(RT.pending(0), 1 << 6);
    assert!(RT.drain().is_complete());
    assert_eq!(AFTER.runs(), 1);
    // Liveness: the item and the queue keep working.
    PANICS.store(false, Ordering::SeqCst);
    assert!(RT.queue_work(&BAD));
    assert!(RT.queue_work(&LATER));
    assert!(RT.drain().is_complete());
    assert_eq!((BAD.runs(), LATER.runs()), (2, 1));
}

#[test]
fn an_item_runs_on_one_kind_of_consumer_at_a_time() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static W: Work = Work::new("w", |_| {});
    let wq = Workqueue::builder("mixed").threads(0).build().unwrap();
    assert!(RT.queue_work(&W));
    assert_eq!(wq.try_queue(&W), Err(WorkqueueError::OtherConsumer));
    assert_eq!(W.flush(), Ok(true));
    assert_eq!(wq.try_queue(&W), Ok(true));
    assert_eq!(
        RT.try_queue_work_on(0, &W),
        Err(WorkqueueError::OtherConsumer)
    );
    assert!(!RT.queue_work(&W));
    assert_eq!(wq.run_pending(), 1);
    assert_eq!(RT.try_queue_work_on(0, &W), Ok(true));
    assert!(W.cancel());
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 2);
}

/// A work item built `at_level(1)` runs in level 1's drain (after level 1's
/// tasklets), not in level 0's; one at a level the runtime lacks runs at
/// the highest level and is counted.
#[test]
fn work_runs_at_its_level_and_a_missing_level_is_counted() {
    use bottomhalf::{Level, Misuse};
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static STEP: Work = Work::new("step", |_| {}).at_level(Level::new(1));
    static LOG: Work = Work::new("log", |_| {});
    static FAR: Work = Work::new("far", |_| {}).at_level(Level::new(5));
    assert_eq!(STEP.level(), Level::new(1));
    assert!(RT.queue_work(&STEP));
    assert!(RT.queue_work(&LOG));
    assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 6);
    assert_eq!(RT.pending_at(0, Level::new(0)), 1 << 6);
    assert!(RT.drain_level(Level::new(1)).is_complete());
    assert_eq!(
        (STEP.runs(), LOG.runs()),
        (1, 0),
        "level 1's drain ran only level 1's item"
    );
    assert!(RT.drain_level(Level::new(0)).is_complete());
    assert_eq!(LOG.runs(), 1);

    assert!(RT.queue_work(&FAR));
    assert_eq!(RT.stats().misuse(0, Misuse::LevelOutOfRange), 1);
    assert_eq!(
        RT.pending_at(0, Level::new(1)),
        1 << 6,
        "ran at the top level"
    );
    assert!(RT.drain_level(Level::new(1)).is_complete());
    assert_eq!(FAR.runs(), 1);
}

/// A flush of an item pending on this CPU at a level the caller's own
/// guard holds off would never end: it returns `WouldDeadlock` and the
/// item still runs once the guard is dropped (liveness). An item at a
/// level the guard does not cover is flushed normally.
#[test]
fn flush_under_a_guard_that_holds_its_level_off_is_refused() {
    use bottomhalf::Level;
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static LOG: Work = Work::new("log", |_| {});
    static STEP: Work = Work::new("step", |_| {}).at_level(Level::new(1));
    static IDLE: Work = Work::new("idle", |_| {});
    // An item that ran here and is idle: its word still names this CPU's
    // queue, but nothing is pending, so a flush under the guard is fine.
    assert!(RT.queue_work(&IDLE));
    assert!(RT.drain().is_complete());
    let guard = RT.bh_disable_to(Level::new(0));
    assert_eq!(IDLE.flush(), Ok(false), "idle: nothing to wait for");
    assert!(RT.queue_work(&LOG));
    assert!(RT.queue_work(&STEP));
    assert_eq!(LOG.flush(), Err(WorkqueueError::WouldDeadlock));
    assert_eq!(STEP.flush(), Ok(true), "level 1 is not held off");
    assert_eq!(STEP.runs(), 1);
    assert!(LOG.is_pending());
    drop(guard); // the last guard's drop drains (Host)
    assert_eq!(LOG.runs(), 1);
    assert_eq!(LOG.flush(), Ok(false));
}

/// The thread that drained an item is not "inside" it afterwards: it may
/// queue and flush it again (the drain's deadlock mark is cleared when the
/// run ends), and only a flush from inside the run is refused.
#[test]
fn the_draining_thread_may_flush_the_item_after_its_run() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static INSIDE: std::sync::Mutex<Option<Result<bool, WorkqueueError>>> =
        std::sync::Mutex::new(None);
    static W: Work = Work::new("w", |w| {
        let mut inside = INSIDE.lock().unwrap();
        if inside.is_none() {
            *inside = Some(w.flush());
        }
    });
    assert!(RT.queue_work(&W));
    assert!(RT.drain().is_complete());
    assert_eq!(
        *INSIDE.lock().unwrap(),
        Some(Err(WorkqueueError::WouldDeadlock))
    );
    assert!(RT.queue_work(&W));
    assert_eq!(
        W.flush(),
        Ok(true),
        "flushed (drained) from the same thread"
    );
    assert_eq!(W.runs(), 2);
    assert_eq!(W.flush(), Ok(false));
}
