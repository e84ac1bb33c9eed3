//! loom model: the workqueue's stop drain (`Workqueue::stop`, the body of
//! its drop), issue 8 item 17.
//!
//! `Shared::stop` sets `stopping` (every later `queue` is refused and
//! counted), then makes two passes over the pools, each waiting until the
//! pool is seen empty under its lock (a workqueue without threads runs the
//! items itself meanwhile). One pass is not enough: an item running on
//! pool 1 that read `stopping == false` may queue onto pool 0 after pool 0
//! was seen empty; the second pass catches that instance, because the item
//! finished (under pool 1's lock) before pool 1 was seen empty.
//!
//! The workqueue is per-CPU with two pools (loom builds see CPUs 0 and 1)
//! and no threads; a modelled worker thread runs `run_pending()` while main
//! calls `stop()`. See `README.md` ("workqueue_stop").

#![cfg(bottomhalf_loom)]

use bottomhalf::{Work, Workqueue, WorkqueueError};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{model, Count};
use loom::sync::Arc;
use loom::thread;
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::atomic::Ordering::SeqCst;

struct Ctx {
    /// Per-CPU, two pools, no threads. `ManuallyDrop`: see the
    /// `workqueue` model (its drop would drain with loom operations after a
    /// failed model).
    wq: ManuallyDrop<Workqueue>,
    runs_a: Count,
    runs_b: Count,
    runs_s: Count,
    /// `A`'s queue of `B` onto pool 0: accepted or refused (`Stopped`).
    b_queued: Count,
    b_refused: Count,
    /// `S`'s re-queue of itself: accepted or refused (`Stopped`).
    s_requeued: Count,
    s_refused: Count,
    /// `stop()` returned: no run may start after this.
    stopped: StdAtomicBool,
}

loom::lazy_static! {
    static ref CTX: Ctx = Ctx {
        wq: ManuallyDrop::new(
            Workqueue::builder("loom-stop").per_cpu().threads(0).build().unwrap()
        ),
        runs_a: Count::new(),
        runs_b: Count::new(),
        runs_s: Count::new(),
        b_queued: Count::new(),
        b_refused: Count::new(),
        s_requeued: Count::new(),
        s_refused: Count::new(),
        stopped: StdAtomicBool::new(false),
    };
    /// On pool 1; queues `B` onto pool 0 (the cross-pool case).
    static ref A: Work = Work::new("a", |_| {
        entered();
        CTX.runs_a.inc();
        match wq().queue_on(0, &*B) {
            Ok(true) => {
                CTX.b_queued.inc();
            }
            Err(WorkqueueError::Stopped) => {
                CTX.b_refused.inc();
            }
            other => panic!("A's queue of B: {other:?}"),
        }
    });
    static ref B: Work = Work::new("b", |_| {
        entered();
        CTX.runs_b.inc();
    });
    /// The drop model's items and counts (not in `CTX`: that model builds
    /// its own workqueue, and two per-CPU workqueues' worth of warmed wake
    /// words would exceed loom's branch limit).
    static ref RUNS_X: Count = Count::new();
    static ref RUNS_Y: Count = Count::new();
    static ref X: Work = Work::new("x", |_| {
        RUNS_X.inc();
    });
    static ref Y: Work = Work::new("y", |_| {
        RUNS_Y.inc();
    });
    /// On pool 0; its first run queues itself again (a re-arming item).
    static ref S: Work = Work::new("s", |_| {
        entered();
        if CTX.runs_s.inc() == 0 {
            match wq().queue_on(0, &*S) {
                Ok(true) => {
                    CTX.s_requeued.inc();
                }
                Err(WorkqueueError::Stopped) => {
                    CTX.s_refused.inc();
                }
                other => panic!("S's re-queue: {other:?}"),
            }
        }
    });
}

fn wq() -> &'static Workqueue {
    &CTX.wq
}

fn entered() {
    assert!(
        !CTX.stopped.load(SeqCst),
        "a run started after stop() returned"
    );
}

fn init() {
    let _ = (&*CTX, &*A, &*B, &*S);
}

/// Executions where `A`'s queue of `B` was accepted, and refused.
static B_ACCEPTED: StdAtomicUsize = StdAtomicUsize::new(0);
static B_REFUSED: StdAtomicUsize = StdAtomicUsize::new(0);
static S_ACCEPTED: StdAtomicUsize = StdAtomicUsize::new(0);
static S_REFUSED: StdAtomicUsize = StdAtomicUsize::new(0);

/// Main queues `A` on pool 1 and `S` on pool 0, a worker runs
/// `run_pending()`, main calls `stop()`. When `stop` returns:
///
/// - everything queued before it ran exactly once (`A` once; `S` once, and
///   once more if its re-queue was accepted);
/// - a queue made during the drain (`A`'s `B`, `S`'s re-queue) was either
///   refused with `Stopped` and counted in `rejected`, or accepted and has
///   already run, exactly once;
/// - nothing is pending anywhere, and no run starts afterwards (not even in
///   a `run_pending()` after the join);
/// - nothing waits for ever (loom fails a model whose threads all block,
///   or that spins without bound).
///
/// Catches `wq_stop_one_pass` (B accepted on pool 0 after pool 0 was seen
/// empty, and still pending when `stop` returns).
#[test]
fn stop_runs_everything_queued_before_it_once_and_refuses_the_rest() {
    model(|| {
        init();
        let c = &*CTX;
        assert_eq!(wq().queue_on(1, &*A), Ok(true));
        assert_eq!(wq().queue_on(0, &*S), Ok(true));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        assert_eq!(wq().stop(), Ok(()));
        c.stopped.store(true, SeqCst);
        let (b_queued, b_refused) = (c.b_queued.get(), c.b_refused.get());
        let (s_requeued, s_refused) = (c.s_requeued.get(), c.s_refused.get());
        assert_eq!(c.runs_a.get(), 1, "A, queued before stop, did not run once");
        assert_eq!(b_queued + b_refused, 1);
        assert_eq!(
            c.runs_b.get(),
            b_queued,
            "B, accepted during the drain, had not run when stop returned"
        );
        assert_eq!(s_requeued + s_refused, 1);
        assert_eq!(
            c.runs_s.get(),
            1 + s_requeued,
            "S's accepted re-queue had not run when stop returned"
        );
        assert!(
            !A.is_pending() && !B.is_pending() && !S.is_pending(),
            "an instance is still pending after stop"
        );
        assert_eq!(
            wq().stats().rejected as usize,
            b_refused + s_refused,
            "a refusal was not counted"
        );
        assert!(wq().is_stopped());
        assert_eq!(wq().try_queue(&*B), Err(WorkqueueError::Stopped));
        worker.join().unwrap();
        assert_eq!(wq().run_pending(), 0);
        B_ACCEPTED.fetch_add(b_queued, SeqCst);
        B_REFUSED.fetch_add(b_refused, SeqCst);
        S_ACCEPTED.fetch_add(s_requeued, SeqCst);
        S_REFUSED.fetch_add(s_refused, SeqCst);
    });
    // Both outcomes of both races were explored.
    assert!(B_ACCEPTED.load(SeqCst) > 0 && B_REFUSED.load(SeqCst) > 0);
    assert!(S_ACCEPTED.load(SeqCst) > 0 && S_REFUSED.load(SeqCst) > 0);
}

/// The drop: the workqueue (per-CPU, two pools, no threads) is shared by
/// main and a worker through an `Arc`; main queues `X` on pool 0, the worker
/// queues `Y` on pool 1 and runs `run_pending()`, and each drops its `Arc`.
/// Whichever drop is last drains (stop, then the join of no threads): both
/// items ran exactly once by the time both threads are done, and the drop
/// never waits for ever.
#[test]
fn the_last_drop_drains_whichever_thread_it_runs_on() {
    model(|| {
        let _ = (&*RUNS_X, &*RUNS_Y, &*X, &*Y);
        let wq = Arc::new(
            Workqueue::builder("loom-drop")
                .per_cpu()
                .threads(0)
                .build()
                .unwrap(),
        );
        assert_eq!(wq.queue_on(0, &*X), Ok(true));
        let theirs = Arc::clone(&wq);
        let worker = thread::spawn(move || {
            assert_eq!(theirs.queue_on(1, &*Y), Ok(true));
            theirs.run_pending();
            drop(theirs);
        });
        drop(wq);
        worker.join().unwrap();
        assert_eq!(
            (RUNS_X.get(), RUNS_Y.get()),
            (1, 1),
            "an item queued before the drop did not run once"
        );
        assert!(!X.is_pending() && !Y.is_pending());
    });
}
