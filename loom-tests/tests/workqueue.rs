//! loom models: the workqueue's `Work` state word (PENDING/RUNNING/
//! CANCELING), its pool's intake list and worker lock, `flush` and
//! `cancel_sync`.
//!
//! The workqueue is built with `threads(0)`: it has no worker threads, and
//! modelled threads act as its workers by calling `run_pending()`, which
//! runs the same `Pool::step` loop a worker thread runs. Where a `queue`
//! would wake a sleeping worker, a later `run_pending()` (after a join)
//! plays that part. See `README.md` ("workqueue") for what each model
//! checks and which mutants it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Work, Workqueue, WorkqueueError};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{model, Count, InFlight};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU32};
use loom::thread;
use std::mem::ManuallyDrop;
use std::sync::atomic::AtomicBool as StdAtomicBool;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

/// Per-execution state the work functions reach through `CTX`.
struct Ctx {
    /// The workqueue: no threads, driven by `run_pending()`.
    /// `ManuallyDrop`: its `Drop` stops and drains with loom operations,
    /// and when a model fails loom drops its lazy statics outside the
    /// model, which would turn the failure into an abort without a message.
    /// (Its pool is leaked under loom anyway: pools are never freed.)
    wq: ManuallyDrop<Workqueue>,
    /// Runs of `W`/`S` in flight (never more than one).
    in_flight: InFlight,
    /// The same, in real interleaving order (`std`): 0 after `cancel_sync`.
    inside: Count,
    /// State private to the item's function: runs of one item never
    /// overlap, so it may keep non-atomic state. Every run increments it;
    /// two runs without a happens-before edge between them (the `finish`
    /// Release / next `start` Acquire, via the pool lock) are a causality
    /// violation. Read after `flush`/`cancel_sync` returned: the runs they
    /// waited for must happen before.
    private: UnsafeCell<u32>,
    /// Top-half data: each queuer stores its sequence number here
    /// (Relaxed) before `queue`; every run loads it (Relaxed) and records
    /// what it saw in `last_seen`. The last run must see the last store.
    data: AtomicU32,
    last_seen: StdAtomicU32,
    /// Each run stores its run number here (Relaxed) as it ends; a `flush`
    /// that returned must see the run it waited for (loom may return a
    /// stale value to a Relaxed load with no happens-before edge).
    out: AtomicU32,
    /// The top half's `queue` returned this (a loom Release store, read
    /// Acquire by the flusher: `flush_covers_a_queue_behind_a_run`).
    told: AtomicBool,
    /// Runs started (`std`: the interleaving's order).
    runs: Count,
    /// `cancel_sync` returned: no run may start after this.
    canceled: StdAtomicBool,
    /// Outcomes of `S`'s self-requeue.
    requeued: Count,
    refused: Count,
    /// `R`'s self-requeues attempted (counted before the call).
    attempts: Count,
    /// Runs of `A` and `B` (`intake_links_are_published`).
    runs_a: Count,
    runs_b: Count,
}

loom::lazy_static! {
    static ref CTX: Ctx = Ctx {
        wq: ManuallyDrop::new(Workqueue::builder("loom").threads(0).build().unwrap()),
        in_flight: InFlight::new(),
        inside: Count::new(),
        private: UnsafeCell::new(0),
        data: AtomicU32::new(0),
        last_seen: StdAtomicU32::new(0),
        out: AtomicU32::new(0),
        told: AtomicBool::new(false),
        runs: Count::new(),
        canceled: StdAtomicBool::new(false),
        requeued: Count::new(),
        refused: Count::new(),
        attempts: Count::new(),
        runs_a: Count::new(),
        runs_b: Count::new(),
    };
    /// `max_active(2)`: two `run_pending()` callers may run items at once,
    /// so one may claim `W` while the other runs it (`two_workers_...`).
    /// With `threads(0)` the default `max_active` is 1, which serialises
    /// the pool and never sets an instance aside.
    static ref WQ2: ManuallyDrop<Workqueue> =
        ManuallyDrop::new(Workqueue::builder("loom2").threads(0).max_active(2).build().unwrap());
    /// A plain item.
    static ref W: Work = Work::new("w", body);
    /// An item that queues itself again from its function (twice at most).
    static ref S: Work = Work::new("s", body_self);
    static ref A: Work = Work::new("a", |_| { CTX.runs_a.inc(); });
    static ref B: Work = Work::new("b", |_| { CTX.runs_b.inc(); });
    /// An item that queues itself again from its first run, counting the
    /// attempt before the call (`flush_targets_..._self_requeue`).
    static ref R: Work = Work::new("r", body_requeue);
}

fn wq() -> &'static Workqueue {
    &CTX.wq
}

/// Enter, check and advance the private state, record what the queuers
/// wrote, publish the run number, leave. Returns the run number (1-based).
fn body(_: &Work) {
    run_once();
}

fn run_once() -> u32 {
    let c = &*CTX;
    assert!(
        !c.canceled.load(SeqCst),
        "a run started after cancel_sync returned"
    );
    c.in_flight.enter("work");
    c.inside.inc();
    let n = c.runs.inc() as u32 + 1;
    c.private.with_mut(|p| {
        // SAFETY: loom checks the access; runs of one item are serialised.
        let p = unsafe { &mut *p };
        assert_eq!(*p, n - 1, "a run missed an earlier run's state");
        *p = n;
    });
    c.last_seen.store(c.data.load(Relaxed), SeqCst);
    c.out.store(n, Relaxed);
    c.inside.dec();
    c.in_flight.leave();
    n
}

fn body_self(_: &Work) {
    let n = run_once();
    if n < 2 {
        match wq().try_queue(&*S) {
            Ok(true) => {
                CTX.requeued.inc();
            }
            Err(WorkqueueError::Canceling) => {
                CTX.refused.inc();
            }
            other => panic!("self-requeue: {other:?}"),
        }
    }
}

fn body_requeue(_: &Work) {
    let n = run_once();
    if n < 2 {
        CTX.attempts.inc();
        if wq().queue(&*R) {
            CTX.requeued.inc();
        }
    }
}

/// Touches every static in the main thread, before any thread is spawned.
fn init() {
    let _ = (&*CTX, &*W, &*S, &*A, &*B, &*R);
}

/// Reads the private state (a causality violation unless every run so far
/// happens before the caller).
fn private() -> u32 {
    // SAFETY: loom checks the access.
    CTX.private.with(|p| unsafe { *p })
}

/// (1) A top half queues `W` while a worker runs it (or before, or after).
///
/// Main queues `W` (seq 1); a worker runs `run_pending()`; the top half
/// stores seq 2 and queues `W`. If that queue returned `true`, `W` runs
/// exactly once more; if `false` (coalesced into the pending instance),
/// that instance covers it. The final `run_pending()` in main stands in
/// for the wake-up of a worker.
#[test]
fn queue_while_running_runs_once_more() {
    model(|| {
        init();
        let c = &*CTX;
        c.data.store(1, Relaxed);
        assert!(wq().queue(&*W));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        let top = thread::spawn(|| {
            CTX.data.store(2, Relaxed);
            wq().queue(&*W)
        });
        worker.join().unwrap();
        let queued = top.join().unwrap();
        wq().run_pending();
        let runs = c.runs.get();
        assert_eq!(
            runs,
            1 + usize::from(queued),
            "runs != queues that returned true"
        );
        assert_eq!(W.runs() as usize, runs);
        assert_eq!(W.coalesced() as usize, usize::from(!queued));
        assert_eq!(
            c.last_seen.load(SeqCst),
            2,
            "the top half's queue was not covered by a run that saw its data"
        );
        assert_eq!(private() as usize, runs);
        assert!(!W.is_pending() && !W.is_running());
        if queued {
            &QUEUED_SEEN
        } else {
            &COALESCED_SEEN
        }
        .fetch_add(1, SeqCst);
    });
    assert!(COALESCED_SEEN.load(SeqCst) > 0 && QUEUED_SEEN.load(SeqCst) > 0);
}

/// (1) Two workers and a top half, on a pool that runs two items at once
/// (`WQ2`): a worker that claims the instance queued while `W` runs on the
/// other worker finds it still running and sets it aside, and the running
/// worker's finish puts it back: it runs after, never alongside.
///
/// Main queues `W` (seq 1); worker 1 runs `run_pending()`; worker 2 stores
/// seq 2, queues `W` and runs `run_pending()`; main's final `run_pending()`
/// is the wake-up.
#[test]
fn two_workers_never_overlap() {
    model(|| {
        init();
        let _ = &*WQ2;
        let c = &*CTX;
        c.data.store(1, Relaxed);
        assert!(WQ2.queue(&*W));
        let w1 = thread::spawn(|| {
            WQ2.run_pending();
        });
        let w2 = thread::spawn(|| {
            CTX.data.store(2, Relaxed);
            let queued = WQ2.queue(&*W);
            WQ2.run_pending();
            queued
        });
        w1.join().unwrap();
        let queued = w2.join().unwrap();
        WQ2.run_pending();
        let runs = c.runs.get();
        assert_eq!(
            runs,
            1 + usize::from(queued),
            "runs != queues that returned true"
        );
        assert_eq!(
            c.last_seen.load(SeqCst),
            2,
            "the second queue was not covered"
        );
        assert_eq!(private() as usize, runs);
        assert!(!W.is_pending() && !W.is_running());
        if WQ2.stats().collisions > 0 {
            SET_ASIDE.fetch_add(1, SeqCst);
        }
    });
    // The set-aside path (a claim that finds `W` still running) was explored.
    assert!(
        SET_ASIDE.load(SeqCst) > 0,
        "no execution set an instance aside"
    );
}

/// Executions of `two_workers_never_overlap` that set an instance aside
/// (across executions: a plain `static`, used by that test only).
static SET_ASIDE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Outcomes explored across executions, each by one test only: coalesced
/// and non-coalesced top-half queues (`queue_while_running_...`), refused
/// and accepted self-requeues (`cancel_sync_stops_...`).
static COALESCED_SEEN: StdAtomicU32 = StdAtomicU32::new(0);
static QUEUED_SEEN: StdAtomicU32 = StdAtomicU32::new(0);
static REFUSED_SEEN: StdAtomicU32 = StdAtomicU32::new(0);
static REQUEUED_SEEN: StdAtomicU32 = StdAtomicU32::new(0);

/// The intake list: a top half queues `A` then `B` (so `B.next` is `A`)
/// while a worker drains. Whichever take finds them must see the link.
#[test]
fn intake_links_are_published() {
    model(|| {
        init();
        let c = &*CTX;
        let top = thread::spawn(|| {
            assert!(wq().queue(&*A));
            assert!(wq().queue(&*B));
        });
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        top.join().unwrap();
        worker.join().unwrap();
        wq().run_pending();
        assert_eq!(
            (c.runs_a.get(), c.runs_b.get()),
            (1, 1),
            "an item on the intake was lost or ran twice"
        );
        assert!(!A.is_pending() && !B.is_pending());
    });
}

/// (2) `flush` returns only once the instance pending or running at the
/// call has finished, and its effects are visible.
///
/// Main queues `W`; a worker runs it; main calls `flush`: on return, run 1
/// is over (`out` ≥ 1, read Relaxed, so only a happens-before edge makes it
/// visible; and the private cell, a causality violation otherwise).
#[test]
fn flush_waits_for_the_run() {
    model(|| {
        init();
        let c = &*CTX;
        assert!(wq().queue(&*W));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        assert!(W.flush().is_ok());
        assert_eq!(c.runs.get(), 1);
        assert_eq!(
            c.inside.get(),
            0,
            "flush returned while the run was in progress"
        );
        assert!(
            c.out.load(Relaxed) >= 1,
            "flush returned before the run's effects were visible"
        );
        assert_eq!(private(), 1);
        worker.join().unwrap();
        assert_eq!(c.runs.get(), 1);
    });
}

/// (2) `flush` called while a second instance may be queued behind a
/// running one: it waits for the instance pending at the call.
///
/// Main queues `W` (seq 1). A worker thread spawns a top half (seq 2,
/// `queue`, then it publishes the result with a Release store to `told`),
/// runs `run_pending()`, joins the top half and runs `run_pending()` again
/// (the wake-up), so every queued instance runs. Main reads `told`
/// (Acquire) and calls `flush`. If main learned that the top half's queue
/// returned `true`, that instance was pending or running at the call (or
/// done), so when `flush` returns run 2 is over and visible, and it saw
/// seq 2; otherwise run 1 is.
#[test]
fn flush_covers_a_queue_behind_a_run() {
    model(|| {
        init();
        let c = &*CTX;
        c.data.store(1, Relaxed);
        assert!(wq().queue(&*W));
        let worker = thread::spawn(|| {
            let top = thread::spawn(|| {
                CTX.data.store(2, Relaxed);
                let queued = wq().queue(&*W);
                CTX.told.store(queued, Release);
                queued
            });
            wq().run_pending();
            let queued = top.join().unwrap();
            wq().run_pending();
            queued
        });
        let told = c.told.load(Acquire);
        assert!(W.flush().is_ok());
        let want = if told { 2 } else { 1 };
        assert!(
            c.runs.get() >= want && c.out.load(Relaxed) >= want as u32,
            "flush returned before the run it waited for ended, or without its effects"
        );
        if told {
            assert_eq!(
                c.last_seen.load(SeqCst),
                2,
                "the run flush waited for missed seq 2"
            );
        }
        let queued = worker.join().unwrap();
        assert_eq!(c.runs.get(), 1 + usize::from(queued));
        assert!(!W.is_pending() && !W.is_running());
    });
}

/// (3) `cancel_sync` racing an item that queues itself again from its
/// function (twice at most).
///
/// Main queues `S`; a worker runs `run_pending()` (which also runs a
/// self-requeued instance); main calls `cancel_sync`. On return, `S` is
/// neither pending nor running, no run is in progress, every run so far
/// happens before (private cell), and no run starts afterwards, not even
/// in the final `run_pending()`. Each self-requeue either succeeded (and
/// was then run or cancelled) or was refused with `Canceling`.
#[test]
fn cancel_sync_stops_a_self_requeue() {
    model(|| {
        init();
        let c = &*CTX;
        assert!(wq().queue(&*S));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        assert!(S.cancel_sync().is_ok());
        c.canceled.store(true, SeqCst);
        assert!(!S.is_pending() && !S.is_running() && !S.is_canceling());
        assert_eq!(
            c.inside.get(),
            0,
            "cancel_sync returned while a run was in progress"
        );
        let runs = c.runs.get();
        assert_eq!(private() as usize, runs);
        worker.join().unwrap();
        wq().run_pending();
        assert_eq!(
            c.runs.get(),
            runs,
            "a run started after cancel_sync returned"
        );
        assert!(!S.is_pending() && !S.is_running());
        assert!(c.requeued.get() + c.refused.get() <= 1);
        assert_eq!(
            c.requeued.get() + c.refused.get(),
            usize::from(runs >= 1),
            "the first run's self-requeue did not happen"
        );
        REFUSED_SEEN.fetch_add(c.refused.get() as u32, SeqCst);
        REQUEUED_SEEN.fetch_add(c.requeued.get() as u32, SeqCst);
    });
    // Both sides of the race were explored: a self-requeue refused while
    // cancel_sync waited, and one that got in (then run or cancelled).
    assert!(REFUSED_SEEN.load(SeqCst) > 0 && REQUEUED_SEEN.load(SeqCst) > 0);
}

/// (2) The start/flush race (issue 8, item 13): `flush` waits for the
/// instance pending or running at its call, never for a later one.
///
/// Main queues `W` twice (the second may land while run 1 runs, or be
/// coalesced); a worker runs `run_pending()` meanwhile. Main then takes
/// `flush`'s target (`loom_flush_target`: the state word read between two
/// reads of `started`, the exact code `flush` runs before it waits). No
/// instance is queued after the call, so the target is the last instance
/// queued (every earlier one is covered by it, a later one does not exist:
/// waiting for it would wait a whole period for a periodic item, or for
/// ever), or `None` once every run is over. Before the fix `start` counted
/// the run before its PENDING → RUNNING CAS, and a flusher in between took
/// the next instance for its target.
///
/// Catches `work_started_relaxed` (main reads the even `started` but its own
/// older PENDING word: target one too far) and `work_starting_relaxed`
/// (main reads the odd `started` of run 2's start but its own older
/// RUNNING|PENDING word from run 1: target one too far).
#[test]
fn flush_targets_the_instance_at_the_call_never_a_later_one() {
    model(|| {
        init();
        let c = &*CTX;
        assert!(wq().queue(&*W));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        let second = wq().queue(&*W);
        let queued = 1 + u32::from(second);
        let target = W.loom_flush_target();
        let (began, inside) = (c.runs.get() as u32, c.inside.get() as u32);
        match target {
            Some(t) => assert_eq!(
                t, queued,
                "flush targets run {t}; {queued} instances were queued before it, none after \
                 (runs begun {began}, in progress {inside})"
            ),
            None => assert_eq!(
                began - inside,
                queued,
                "flush saw the item idle with a run still to come"
            ),
        }
        worker.join().unwrap();
        wq().run_pending();
        assert_eq!(c.runs.get() as u32, queued);
        if second {
            TARGET_TWO_SEEN.fetch_add(u32::from(target == Some(2)), SeqCst);
        }
    });
    // The race with run 2's start was explored.
    assert!(TARGET_TWO_SEEN.load(SeqCst) > 0);
}

/// Executions of the model above whose target was run 2.
static TARGET_TWO_SEEN: StdAtomicU32 = StdAtomicU32::new(0);

/// (2) The start/flush race again, with the next instance queued by the
/// running item itself (a periodic item): `R`'s first run queues `R` again,
/// so the worker writes RUNNING|PENDING, finishes run 1 and starts run 2
/// while main takes `flush`'s target (`loom_flush_target`). The target is
/// never an instance not yet queued by the call's end (`attempts`, counted
/// before the queue call; a `std` count, so it is the interleaving's real
/// order). (That every instance queued before the call, in the
/// happens-before sense, is covered is `flush_covers_a_queue_behind_a_run`;
/// here main has no such edge, and may read an older word.)
///
/// Catches `work_starting_relaxed`: main reads the odd `started` of run 2's
/// start without the word that start had seen (run 1 over), reads the
/// RUNNING|PENDING word of run 1 instead, and targets run 3, which is never
/// queued (and `work_started_relaxed`, with the even value).
#[test]
fn flush_targets_the_instance_at_the_call_with_a_self_requeue() {
    model(|| {
        init();
        let c = &*CTX;
        assert!(wq().queue(&*R));
        let worker = thread::spawn(|| {
            wq().run_pending();
        });
        // loom does not switch threads for a pure load racing with a later
        // store (see `take_intake`): the yield lets the worker get ahead
        // of the snapshot's loads.
        thread::yield_now();
        let done_before = 1 + c.requeued.get() as u32;
        let target = R.loom_flush_target();
        let attempted = 1 + c.attempts.get() as u32;
        let (began, inside) = (c.runs.get() as u32, c.inside.get() as u32);
        match target {
            Some(t) => assert!(
                1 <= t && t <= attempted,
                "flush targets run {t}; at most {attempted} instances were queued by the end \
                 of the call (runs begun {began}, in progress {inside})"
            ),
            // The word is idle only after run 2 (queued before run 1 ends).
            None => assert!(
                began - inside >= done_before,
                "flush saw the item idle with a run still to come"
            ),
        }
        worker.join().unwrap();
        wq().run_pending();
        assert_eq!(c.runs.get(), 2);
        SELF_TARGET_TWO_SEEN.fetch_add(u32::from(target == Some(2)), SeqCst);
    });
    assert!(SELF_TARGET_TWO_SEEN.load(SeqCst) > 0);
}

/// Executions of the model above whose target was run 2.
static SELF_TARGET_TWO_SEEN: StdAtomicU32 = StdAtomicU32::new(0);
