//! `fork()` with a workqueue (issue 8, item 8): the child's copy of a
//! workqueue has no worker threads. It refuses clearly
//! ([`WorkqueueError::Forked`]) instead of waiting for them, its drop does
//! not join them, and a workqueue built in the child works, running items
//! that were queued or running in the parent at the fork.
//!
//! Its own test binary with one test: `fork()` copies only the calling
//! thread, and another test's thread holding a lock (stdout, the
//! allocator) at the fork would leave it held in the child. Parent and
//! child each arm an `alarm` watchdog: a hang kills the process.
#![cfg(all(unix, not(miri)))]

use bottomhalf::{Work, Workqueue, WorkqueueError};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

mod support;
use support::process;

static LONG_STARTED: AtomicBool = AtomicBool::new(false);
static LONG_RUNS: AtomicU32 = AtomicU32::new(0);
/// Running in the parent's worker when the parent forks.
static LONG: Work = Work::new("long", |_| {
    LONG_STARTED.store(true, SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    LONG_RUNS.fetch_add(1, SeqCst);
});
static BEHIND_RUNS: AtomicU32 = AtomicU32::new(0);
/// Pending behind `LONG` on the parent's one-thread queue at the fork.
static BEHIND: Work = Work::new("behind", |_| {
    BEHIND_RUNS.fetch_add(1, SeqCst);
});
static FRESH_RUNS: AtomicU32 = AtomicU32::new(0);
/// Idle at the fork.
static FRESH: Work = Work::new("fresh", |_| {
    FRESH_RUNS.fetch_add(1, SeqCst);
});

/// Seconds before SIGALRM kills a hung parent; the child gets a third of it,
/// so a hung child is reported by the parent (killed by signal 14).
const WATCHDOG: u32 = 30;

#[test]
fn a_child_refuses_the_inherited_workqueue_drops_it_and_runs_a_new_one() {
    // SAFETY: alarm only re-arms the process's SIGALRM timer.
    unsafe { libc::alarm(WATCHDOG) };
    let wq = Workqueue::builder("parent").threads(1).build().unwrap();
    assert!(wq.queue(&LONG));
    while !LONG_STARTED.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(wq.queue(&BEHIND));
    assert!(LONG.is_running() && BEHIND.is_pending());

    // The child only runs `child_checks` (panics caught) and ends with
    // `_exit`: it never returns into the test harness. Only the child takes
    // `wq` out of the option (the closure runs there alone).
    let mut wq = Some(wq);
    let pid = process::fork_with_watchdog(WATCHDOG / 3, || child(wq.take().unwrap()));
    assert_eq!(process::reap(pid), 0, "the child's checks failed");
    let wq = wq.unwrap();

    // The parent's workqueue is untouched by the child.
    assert_eq!(wq.flush(), Ok(()));
    assert_eq!((LONG_RUNS.load(SeqCst), BEHIND_RUNS.load(SeqCst)), (1, 1));
    drop(wq);
}

/// The child (under its own `alarm`, not inherited): runs the checks; its
/// exit status, 0 if they pass, 1 otherwise.
fn child(wq: Workqueue) -> libc::c_int {
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child_checks(wq))).is_ok();
    if ok {
        0
    } else {
        1
    }
}

fn child_checks(wq: Workqueue) {
    let t0 = Instant::now();
    // The inherited workqueue refuses; nothing waits for the parent's
    // threads.
    assert_eq!(wq.flush(), Err(WorkqueueError::Forked));
    assert_eq!(wq.stop(), Err(WorkqueueError::Forked));
    assert_eq!(wq.try_queue(&FRESH), Err(WorkqueueError::Forked));
    assert!(!wq.queue(&FRESH));
    assert_eq!(wq.queue_on(0, &FRESH), Err(WorkqueueError::Forked));
    assert_eq!(wq.run_pending(), 0);
    assert_eq!(wq.stats().rejected, 3);
    // So do the items that were running or pending in it.
    assert!(LONG.is_running() && BEHIND.is_pending());
    assert_eq!(LONG.flush(), Err(WorkqueueError::Forked));
    assert_eq!(BEHIND.flush(), Err(WorkqueueError::Forked));
    assert_eq!(LONG.cancel_sync(), Err(WorkqueueError::Forked));
    assert_eq!(BEHIND.cancel_sync(), Err(WorkqueueError::Forked));
    assert!(!BEHIND.cancel());
    // An idle item flushes at once.
    assert_eq!(FRESH.flush(), Ok(false));
    let refused = t0.elapsed();
    // Dropping the inherited workqueue joins nothing.
    let t1 = Instant::now();
    drop(wq);
    let dropped = t1.elapsed();

    // Liveness: a workqueue built in the child runs work, including the
    // items the parent's queue held (queueing them takes them over).
    let wq = Workqueue::builder("child").threads(2).build().unwrap();
    assert_eq!(wq.try_queue(&FRESH), Ok(true));
    assert_eq!(wq.try_queue(&BEHIND), Ok(true));
    assert_eq!(wq.try_queue(&LONG), Ok(true));
    // `Ok(false)` when the run already finished: both mean it ran.
    for item in [&FRESH, &BEHIND, &LONG] {
        assert!(item.flush().is_ok());
    }
    assert_eq!(wq.flush(), Ok(()));
    assert_eq!(
        (
            FRESH_RUNS.load(SeqCst),
            BEHIND_RUNS.load(SeqCst),
            LONG_RUNS.load(SeqCst)
        ),
        (1, 1, 1),
        "runs in the child"
    );
    assert!(!LONG.is_running() && !BEHIND.is_pending());
    let stats = wq.stats();
    assert_eq!((stats.runs, stats.rejected), (3, 0));
    drop(wq);
    eprintln!(
        "fork child: inherited workqueue refused 12 calls in {refused:?}, dropped in {dropped:?}; \
         new workqueue ran 3 items (2 taken over from the parent's queue) in {:?}",
        t0.elapsed()
    );
}
