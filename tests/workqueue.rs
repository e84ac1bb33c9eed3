//! Workqueue semantics, Zephyr `tests/kernel/workq` style: each test sets up
//! a situation (an item blocked on a gate, a pending item behind it, a
//! self-requeueing item, ...) and checks one promise, in a way that fails
//! if the promise is broken.
//!
//! Every workqueue is dropped (stopped and joined) by its test, so miri
//! sees no thread left behind. Items are `fn`s: what they touch is in
//! statics, one set per test (tests run in parallel). An item that needs
//! its workqueue finds it through a [`Slot`], set by the test and cleared
//! before the drop.
//!
//! A `#[global_allocator]` counts allocations made on a thread while its
//! "top half" flag is set: `queue` of a `static` item must make none.
//!
//! Timing: waits have a 60 s deadline; lower bounds on delays are exact
//! (a delayed item never runs early), upper bounds are generous (the
//! machine may be loaded). Under miri the counts shrink and the
//! affinity/priority/signal checks are skipped.

mod support;
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use support::RecordingAlloc;

use bottomhalf::{current_cpu, DelayedWork, HighPriority, Work, Workqueue, WorkqueueError};

// ---------------------------------------------------------------------------
// Test allocator: counts allocations while the thread's flag is set.

thread_local! {
    static IN_TOP_HALF: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn record() {
    let _ = IN_TOP_HALF.try_with(|f| {
        if f.get() {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
    });
}

#[global_allocator]
static ALLOC: RecordingAlloc = RecordingAlloc {
    on_alloc: |_| record(),
    on_dealloc: || {},
};

/// Runs `f` as a top half on this thread; returns the allocations it made.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCS.with(|c| c.set(0));
    IN_TOP_HALF.with(|t| t.set(true));
    f();
    IN_TOP_HALF.with(|t| t.set(false));
    ALLOCS.with(Cell::get)
}

// ---------------------------------------------------------------------------
// Helpers.

const DEADLINE: Duration = Duration::from_secs(60);

fn scaled(n: usize, miri: usize) -> usize {
    if cfg!(miri) {
        miri
    } else {
        n
    }
}

#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

/// A gate items wait on.
struct Gate(AtomicBool);

impl Gate {
    const fn new() -> Gate {
        Gate(AtomicBool::new(false))
    }
    fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wait(&self) {
        wait_until("a gate", || self.0.load(Ordering::SeqCst));
    }
}

/// A workqueue reachable from `fn` items while the test has it installed.
struct Slot(AtomicPtr<Workqueue>);

impl Slot {
    const fn new() -> Slot {
        Slot(AtomicPtr::new(ptr::null_mut()))
    }
    fn set(&self, wq: &Workqueue) {
        self.0.store(ptr::from_ref(wq).cast_mut(), Ordering::SeqCst);
    }
    fn clear(&self) {
        self.0.store(ptr::null_mut(), Ordering::SeqCst);
    }
    fn get(&self) -> &Workqueue {
        let p = self.0.load(Ordering::SeqCst);
        assert!(!p.is_null(), "item ran without its workqueue installed");
        // SAFETY: tests install a workqueue that outlives every item run
        // that reads the slot (they stop it before clearing the slot and
        // dropping it).
        unsafe { &*p }
    }
}

/// Counts concurrent runs of one item; records the maximum.
struct Overlap {
    now: AtomicU32,
    max: AtomicU32,
}

impl Overlap {
    const fn new() -> Overlap {
        Overlap {
            now: AtomicU32::new(0),
            max: AtomicU32::new(0),
        }
    }
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> u32 {
        self.max.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------
// Queueing, stopping.

#[test]
fn queue_to_a_stopped_workqueue_is_an_error_and_is_counted() {
    static W: Work = Work::new("w", |_| {});
    static D: DelayedWork = DelayedWork::new("d", |_| {});
    let wq = Workqueue::builder("stopped").threads(1).build().unwrap();
    assert_eq!(wq.try_queue(&W), Ok(true));
    wq.stop().unwrap();
    assert!(wq.is_stopped());
    assert_eq!(W.runs(), 1, "stop drains what was queued");
    assert_eq!(wq.try_queue(&W), Err(WorkqueueError::Stopped));
    assert!(!wq.queue(&W));
    assert_eq!(wq.queue_on(0, &W), Err(WorkqueueError::Stopped));
    assert_eq!(
        wq.queue_delayed(&D, Duration::from_millis(1)),
        Err(WorkqueueError::Stopped)
    );
    assert_eq!(
        wq.mod_delayed(&D, Duration::ZERO),
        Err(WorkqueueError::Stopped)
    );
    assert!(!W.is_pending() && !D.is_pending());
    let s = wq.stats();
    assert_eq!((s.rejected, s.runs), (5, 1));
    assert!(
        s.to_string()
            .contains("rejected (stopped, forked, bad CPU) 5"),
        "{s}"
    );
}

/// Item 10 of issue 8: the queue paths are total. Every CPU index (up to
/// `usize::MAX`), every delay (up to `Duration::MAX`), static and `Arc`
/// items, unbound and per-CPU workqueues, running and stopped: an `Ok` or a
/// documented `Err`, never a panic; refusals are counted in `rejected`.
#[test]
fn queue_paths_never_panic_on_any_input_and_count_refusals() {
    static W: Work = Work::new("total", |_| {});
    static D: DelayedWork = DelayedWork::new("total-d", |_| {});
    let arc = Work::new_arc("total-arc", |_| {});
    let arc_d = DelayedWork::new_arc("total-arc-d", |_| {});
    let delays = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_secs(u64::MAX / 4),
        Duration::MAX,
    ];
    for per_cpu in [false, true] {
        let b = Workqueue::builder("total").threads(1);
        let wq = if per_cpu { b.per_cpu() } else { b }.build().unwrap();
        let pools = if per_cpu { wq.cpu_ids().len() } else { 1 };
        let cpus = [
            0,
            pools - 1,
            pools,
            pools + 1,
            4096,
            usize::MAX / 2,
            usize::MAX,
        ];
        let mut refused = 0;
        for stopped in [false, true] {
            if stopped {
                wq.stop().unwrap();
            }
            let mut all = Vec::new();
            let mut queued = true;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                all.push(wq.try_queue(&W));
                all.push(wq.try_queue(&arc));
                queued = wq.queue(&W);
                for &cpu in &cpus {
                    all.push(wq.queue_on(cpu, &W));
                    all.push(wq.queue_on(cpu, &arc));
                    for &d in &delays {
                        all.push(wq.queue_delayed_on(cpu, &D, d));
                        all.push(wq.queue_delayed_on(cpu, &arc_d, d));
                    }
                }
                for &d in &delays {
                    all.push(wq.queue_delayed(&D, d));
                    all.push(wq.mod_delayed(&arc_d, d));
                }
            }));
            assert!(
                r.is_ok(),
                "a queue path panicked (per_cpu {per_cpu}, stopped {stopped})"
            );
            for r in &all {
                match r {
                    Ok(_) => assert!(!stopped, "queued on a stopped workqueue"),
                    Err(WorkqueueError::Stopped) => assert!(stopped),
                    Err(WorkqueueError::CpuOutOfRange { cpu, cpus: n }) => {
                        // Checked first, stopped or not.
                        assert!(per_cpu && *cpu >= pools && *n == pools)
                    }
                    Err(e) => panic!("unexpected refusal {e:?}"),
                }
            }
            assert!(
                !(stopped && queued),
                "queue() accepted on a stopped workqueue"
            );
            // `queue` returns `false`, not an error: counted by hand.
            refused += all.iter().filter(|r| r.is_err()).count() + usize::from(stopped);
            if !stopped {
                // The long timers are cancelled; the rest ran or will.
                D.cancel_sync().unwrap();
                arc_d.cancel_sync().unwrap();
                wq.flush().unwrap();
            }
        }
        let s = wq.stats();
        assert_eq!(s.rejected as usize, refused, "every refusal is counted");
        println!(
            "queue totality ({}): {} calls refused and counted, none panicked",
            if per_cpu { "per-CPU" } else { "unbound" },
            s.rejected
        );
    }
}

#[test]
fn an_item_requeueing_itself_during_the_drain_is_refused() {
    static SLOT: Slot = Slot::new();
    static REFUSED: AtomicU32 = AtomicU32::new(0);
    static GATE: Gate = Gate::new();
    static W: Work = Work::new("again", |_| {
        GATE.wait();
        match SLOT.get().try_queue(&W) {
            Err(WorkqueueError::Stopped) => {
                REFUSED.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    });
    let wq = Workqueue::builder("chained").threads(1).build().unwrap();
    SLOT.set(&wq);
    wq.queue(&W);
    wait_until("W running", || W.is_running());
    thread::scope(|s| {
        s.spawn(|| wq.stop().unwrap());
        wait_until("stop begun", || wq.is_stopped());
        GATE.open();
    });
    SLOT.clear();
    assert_eq!(REFUSED.load(Ordering::SeqCst), 1);
    assert_eq!(W.runs(), 1, "the refused re-queue did not run");
    assert!(!W.is_pending());
    drop(wq);
}

// ---------------------------------------------------------------------------
// Resubmission while running.

#[test]
fn queued_while_running_it_runs_again_after_never_concurrently() {
    static OVERLAP: Overlap = Overlap::new();
    static GATE: Gate = Gate::new();
    static FIRST_DONE_AT: AtomicU64 = AtomicU64::new(0);
    static SECOND_START_AT: AtomicU64 = AtomicU64::new(0);
    static CLOCK: AtomicU64 = AtomicU64::new(1);
    static W: Work = Work::new("re", |w| {
        OVERLAP.enter();
        if w.runs() == 0 {
            GATE.wait();
            FIRST_DONE_AT.store(CLOCK.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
        } else {
            SECOND_START_AT.store(CLOCK.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
        }
        OVERLAP.leave();
    });
    // Two workers: the idle one is woken by the second queue and would run
    // W at once if nothing stopped it.
    let wq = Workqueue::builder("re").threads(2).build().unwrap();
    assert!(wq.queue(&W));
    wait_until("first run", || W.is_running());
    assert!(wq.queue(&W), "not pending while it runs: queued");
    assert!(!wq.queue(&W), "now pending: coalesced");
    assert!(W.is_pending() && W.is_running());
    thread::sleep(Duration::from_millis(scaled(20, 1) as u64));
    assert_eq!(
        W.runs(),
        0,
        "the second instance did not start beside the first"
    );
    GATE.open();
    wait_until("second run", || W.runs() == 2);
    assert_eq!(OVERLAP.max(), 1, "two runs overlapped");
    assert!(SECOND_START_AT.load(Ordering::SeqCst) > FIRST_DONE_AT.load(Ordering::SeqCst));
    assert_eq!(W.coalesced(), 1);
    assert_eq!(wq.stats().runs, 2);
    drop(wq);
}

#[test]
fn queued_on_another_workqueue_while_running_it_waits_for_that_run() {
    static OVERLAP: Overlap = Overlap::new();
    static GATE: Gate = Gate::new();
    static W: Work = Work::new("cross", |w| {
        OVERLAP.enter();
        if w.runs() == 0 {
            GATE.wait();
        }
        OVERLAP.leave();
    });
    let a = Workqueue::builder("cross-a").threads(1).build().unwrap();
    let b = Workqueue::builder("cross-b").threads(1).build().unwrap();
    a.queue(&W);
    wait_until("run on a", || W.is_running());
    assert!(b.queue(&W));
    thread::sleep(Duration::from_millis(scaled(20, 1) as u64));
    assert_eq!(W.runs(), 0);
    GATE.open();
    wait_until("run on b", || W.runs() == 2);
    assert_eq!(OVERLAP.max(), 1, "two runs overlapped");
    assert_eq!((a.stats().runs, b.stats().runs), (1, 1));
    drop((a, b));
}

// ---------------------------------------------------------------------------
// Wake-up: no queue is left behind a sleeping worker.

#[test]
fn every_queue_onto_sleeping_workers_wakes_one() {
    static W: Work = Work::new("wake", |_| {});
    static GATE: Gate = Gate::new();
    static BUSY: Work = Work::new("busy", |_| GATE.wait());
    let rounds = scaled(2_000, 20) as u32;
    // Pauses around the moment a worker stops polling and sleeps.
    let pauses = [0u64, 5, 20, 50, 200, 1_000];
    for threads in [1usize, 2, 3] {
        let wq = Workqueue::builder("wake").threads(threads).build().unwrap();
        let base = W.runs();
        for i in 1..=rounds {
            thread::sleep(Duration::from_micros(pauses[i as usize % pauses.len()]));
            assert!(wq.queue(&W));
            let t0 = Instant::now();
            while W.runs() != base + i {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "queue {i} with {threads} thread(s) was never run: lost wake-up"
                );
                thread::yield_now();
            }
        }
        // A backlog behind a busy worker reaches the sleeping peer.
        if threads >= 2 {
            wq.queue(&BUSY);
            wait_until("BUSY running", || BUSY.is_running());
            thread::sleep(Duration::from_millis(1));
            let b = W.runs();
            wq.queue(&W);
            let t0 = Instant::now();
            while W.runs() == b {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the idle peer never woke"
                );
                thread::yield_now();
            }
            GATE.open();
            BUSY.flush().unwrap();
            GATE.0.store(false, Ordering::SeqCst);
        }
        drop(wq);
    }
}

// ---------------------------------------------------------------------------
// Flush.

/// Opens `gate` from another thread after 20 ms, while the caller blocks.
fn open_later(s: &'static Gate) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        s.open();
    })
}

#[test]
fn flush_work_waits_for_a_queued_instance() {
    static GATE: Gate = Gate::new();
    static BLOCKER: Work = Work::new("blocker", |_| GATE.wait());
    static W: Work = Work::new("w", |_| {});
    // One thread: W waits behind BLOCKER, which waits for the gate.
    let wq = Workqueue::builder("flush-q").threads(1).build().unwrap();
    wq.queue(&BLOCKER);
    wq.queue(&W);
    let opener = open_later(&GATE);
    assert_eq!(W.flush(), Ok(true), "W was queued: flush must wait");
    // The promise: the instance queued before the call has run.
    assert_eq!(W.runs(), 1, "flush returned before the queued run");
    opener.join().unwrap();
    assert_eq!(W.flush(), Ok(false), "idle: nothing to wait for");
    drop(wq);
}

#[test]
fn flush_work_waits_for_a_running_instance() {
    static GATE: Gate = Gate::new();
    static DONE: AtomicBool = AtomicBool::new(false);
    static W: Work = Work::new("w", |_| {
        GATE.wait();
        DONE.store(true, Ordering::SeqCst);
    });
    let wq = Workqueue::builder("flush-r").threads(1).build().unwrap();
    wq.queue(&W);
    wait_until("W running", || W.is_running());
    let opener = open_later(&GATE);
    // W is blocked on the gate: it is running when flush looks.
    assert_eq!(W.flush(), Ok(true));
    assert!(DONE.load(Ordering::SeqCst), "flush returned mid-run");
    opener.join().unwrap();
    drop(wq);
}

#[test]
fn flush_of_the_workqueue_waits_for_everything_queued_before() {
    static GATE: Gate = Gate::new();
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn item(_: &Work) {
        GATE.wait();
        RAN.fetch_add(1, Ordering::SeqCst);
    }
    static ITEMS: [Work; 8] = [const { Work::new("item", item) }; 8];
    let wq = Workqueue::builder("flush-all").threads(2).build().unwrap();
    for w in &ITEMS {
        assert!(wq.queue(w));
    }
    thread::scope(|s| {
        let flusher = s.spawn(|| {
            wq.flush().unwrap();
            assert_eq!(RAN.load(Ordering::SeqCst), 8, "flush returned early");
        });
        thread::sleep(Duration::from_millis(scaled(20, 1) as u64));
        assert!(!flusher.is_finished(), "flush did not wait");
        GATE.open();
        flusher.join().unwrap();
    });
    drop(wq);
}

#[test]
fn a_workqueue_without_threads_runs_its_items_in_flush_and_drop() {
    static N: AtomicU32 = AtomicU32::new(0);
    static A: Work = Work::new("a", |_| {
        N.fetch_add(1, Ordering::SeqCst);
    });
    static B: Work = Work::new("b", |_| {
        N.fetch_add(1, Ordering::SeqCst);
    });
    let wq = Workqueue::builder("manual").threads(0).build().unwrap();
    wq.queue(&A);
    wq.flush().unwrap();
    assert_eq!(N.load(Ordering::SeqCst), 1);
    wq.queue(&B);
    drop(wq);
    assert_eq!(N.load(Ordering::SeqCst), 2, "the drop drained");
}

// ---------------------------------------------------------------------------
// Cancel.

#[test]
fn cancel_while_queued() {
    static GATE: Gate = Gate::new();
    static BLOCKER: Work = Work::new("blocker", |_| GATE.wait());
    static W: Work = Work::new("w", |_| panic!("a cancelled item ran"));
    static W2: Work = Work::new("w2", |_| {});
    let wq = Workqueue::builder("cancel-q").threads(1).build().unwrap();
    wq.queue(&BLOCKER);
    wq.queue(&W);
    wq.queue(&W2);
    assert!(W.cancel());
    assert!(!W.is_pending());
    assert!(!W.cancel(), "nothing left to cancel");
    assert_eq!(W.cancel_sync(), Ok(false));
    GATE.open();
    wq.flush().unwrap();
    assert_eq!((W.runs(), W2.runs()), (0, 1));
    assert_eq!(wq.stats().panics, 0);
    drop(wq);
}

#[test]
fn cancel_while_delayed() {
    static D: DelayedWork = DelayedWork::new("d", |_| panic!("a cancelled timer ran"));
    let wq = Workqueue::builder("cancel-d").threads(1).build().unwrap();
    assert_eq!(wq.queue_delayed(&D, Duration::from_secs(3600)), Ok(true));
    assert!(D.is_timer_pending());
    assert_eq!(wq.stats().timers, 1);
    assert!(D.cancel());
    assert!(!D.is_pending() && !D.is_timer_pending());
    assert_eq!(wq.stats().timers, 0);
    // cancel_sync of a delayed instance too.
    assert_eq!(wq.queue_delayed(&D, Duration::from_secs(3600)), Ok(true));
    assert_eq!(D.cancel_sync(), Ok(true));
    assert!(!D.is_pending());
    drop(wq);
    assert_eq!(D.runs(), 0);
}

#[test]
fn cancel_sync_while_running_waits_for_the_run() {
    static GATE: Gate = Gate::new();
    static DONE: AtomicBool = AtomicBool::new(false);
    static W: Work = Work::new("w", |_| {
        GATE.wait();
        DONE.store(true, Ordering::SeqCst);
    });
    let wq = Workqueue::builder("cancel-r").threads(1).build().unwrap();
    wq.queue(&W);
    wait_until("W running", || W.is_running());
    assert!(!W.cancel(), "not pending; cancel does not wait");
    thread::scope(|s| {
        let canceler = s.spawn(|| {
            assert_eq!(W.cancel_sync(), Ok(false));
            assert!(DONE.load(Ordering::SeqCst), "cancel_sync returned mid-run");
            assert!(!W.is_running() && !W.is_pending());
        });
        thread::sleep(Duration::from_millis(scaled(20, 1) as u64));
        assert!(!canceler.is_finished(), "cancel_sync did not wait");
        GATE.open();
        canceler.join().unwrap();
    });
    drop(wq);
}

#[test]
fn submit_during_cancel_is_refused_then_accepted() {
    static GATE: Gate = Gate::new();
    static W: Work = Work::new("w", |_| GATE.wait());
    let wq = Workqueue::builder("cancel-s").threads(1).build().unwrap();
    wq.queue(&W);
    wait_until("W running", || W.is_running());
    thread::scope(|s| {
        let canceler = s.spawn(|| W.cancel_sync());
        wait_until("CANCELING", || W.is_canceling());
        assert_eq!(wq.try_queue(&W), Err(WorkqueueError::Canceling));
        assert!(!wq.queue(&W));
        GATE.open();
        assert_eq!(canceler.join().unwrap(), Ok(false));
    });
    assert_eq!(
        wq.try_queue(&W),
        Ok(true),
        "accepted once cancel_sync returned"
    );
    W.flush().unwrap();
    assert_eq!(W.runs(), 2);
    drop(wq);
}

#[test]
fn cancel_sync_stops_an_item_that_requeues_itself() {
    static SLOT: Slot = Slot::new();
    static REFUSED: AtomicU32 = AtomicU32::new(0);
    static W: Work = Work::new("forever", |_| {
        thread::sleep(Duration::from_micros(100));
        if SLOT.get().try_queue(&W) == Err(WorkqueueError::Canceling) {
            REFUSED.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Two threads: the next instance is taken by the other worker (set
    // aside until the run ends) while this one runs.
    let wq = Workqueue::builder("self-requeue")
        .threads(2)
        .build()
        .unwrap();
    SLOT.set(&wq);
    wq.queue(&W);
    wait_until("a few runs", || W.runs() >= 3);
    for _ in 0..scaled(20, 2) {
        W.cancel_sync().unwrap();
        assert!(!W.is_pending() && !W.is_running());
        let runs = W.runs();
        thread::sleep(Duration::from_millis(scaled(2, 0) as u64));
        assert_eq!(W.runs(), runs, "it ran after cancel_sync returned");
        assert!(wq.queue(&W));
    }
    W.cancel_sync().unwrap();
    assert!(!W.is_pending() && !W.is_running());
    SLOT.clear();
    drop(wq);
}

// ---------------------------------------------------------------------------
// Ordered queues and max_active.

#[test]
fn an_ordered_queue_runs_one_item_at_a_time_in_queue_order() {
    static OVERLAP: Overlap = Overlap::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn item(w: &Work) {
        OVERLAP.enter();
        // SAFETY: every `item` is an element of ITEMS.
        let i = unsafe { ptr::from_ref(w).offset_from(ITEMS.as_ptr()) } as usize;
        thread::sleep(Duration::from_micros(50));
        ORDER.lock().unwrap().push(i);
        NEXT.fetch_add(1, Ordering::SeqCst);
        OVERLAP.leave();
    }
    static ITEMS: [Work; 16] = [const { Work::new("ordered", item) }; 16];
    // threads(3): more threads than active items, so order comes from the
    // queue, not from having one thread.
    let wq = Workqueue::builder("ordered")
        .ordered()
        .threads(3)
        .build()
        .unwrap();
    let order: Vec<usize> = vec![7, 3, 15, 0, 12, 1, 9, 4, 14, 2, 11, 5, 8, 13, 6, 10];
    for &i in &order {
        assert!(wq.queue(&ITEMS[i]));
    }
    wq.flush().unwrap();
    assert_eq!(*ORDER.lock().unwrap(), order);
    assert_eq!(OVERLAP.max(), 1);
    assert_eq!(wq.stats().max_active_seen, 1);
    drop(wq);
}

#[test]
fn max_active_bounds_the_items_running_at_once() {
    static OVERLAP: Overlap = Overlap::new();
    fn item(_: &Work) {
        OVERLAP.enter();
        thread::sleep(Duration::from_millis(scaled(10, 1) as u64));
        OVERLAP.leave();
    }
    static ITEMS: [Work; 12] = [const { Work::new("bounded", item) }; 12];
    let wq = Workqueue::builder("bounded")
        .threads(4)
        .max_active(2)
        .build()
        .unwrap();
    for w in &ITEMS {
        wq.queue(w);
    }
    wq.flush().unwrap();
    // Sleeping items: with 4 threads, 2 run at once whenever allowed.
    // Under miri's scheduler (deterministic, virtual clock) the second
    // worker may never pick an item up while the first sleeps: there only
    // the bound itself is checked.
    if cfg!(miri) {
        assert!(OVERLAP.max() <= 2, "bound exceeded");
        assert!(wq.stats().max_active_seen <= 2);
    } else {
        assert_eq!(OVERLAP.max(), 2, "bound exceeded, or never reached");
        assert_eq!(wq.stats().max_active_seen, 2);
    }
    drop(wq);
}

// ---------------------------------------------------------------------------
// Per-CPU placement.

#[cfg(not(miri))]
fn os_cpu() -> Option<usize> {
    // SAFETY: no preconditions.
    #[cfg(target_os = "linux")]
    return usize::try_from(unsafe { libc::sched_getcpu() }).ok();
    // Elsewhere workers are not pinned (`pin_failures` > 0), and the
    // placement check that reads this is skipped.
    #[cfg(not(target_os = "linux"))]
    None
}

#[test]
fn per_cpu_items_run_on_the_cpu_they_were_queued_on() {
    static SEEN: [AtomicUsize; 64] = [const { AtomicUsize::new(usize::MAX) }; 64];
    static OS_CPU: [AtomicUsize; 64] = [const { AtomicUsize::new(usize::MAX) }; 64];
    fn item(w: &Work) {
        // SAFETY: every `item` is an element of ITEMS.
        let i = unsafe { ptr::from_ref(w).offset_from(ITEMS.as_ptr()) } as usize;
        SEEN[i].store(current_cpu().unwrap_or(usize::MAX), Ordering::SeqCst);
        #[cfg(not(miri))]
        OS_CPU[i].store(os_cpu().unwrap_or(usize::MAX), Ordering::SeqCst);
    }
    static ITEMS: [Work; 64] = [const { Work::new("percpu", item) }; 64];
    let wq = Workqueue::builder("percpu").per_cpu().build().unwrap();
    let cpus = wq.cpu_ids().to_vec();
    if cpus.len() < 2 {
        eprintln!(
            "per-CPU placement: only {} CPU; checking CPU 0 only",
            cpus.len()
        );
    }
    let n = cpus.len().min(64);
    for (i, w) in ITEMS.iter().enumerate().take(n) {
        assert_eq!(wq.queue_on(i, w), Ok(true));
    }
    wq.flush().unwrap();
    let stats = wq.stats();
    for i in 0..n {
        assert_eq!(SEEN[i].load(Ordering::SeqCst), i, "item queued on CPU {i}");
        if !cfg!(miri) && stats.pin_failures == 0 {
            assert_eq!(
                OS_CPU[i].load(Ordering::SeqCst),
                cpus[i],
                "pinned thread of CPU {i}"
            );
        }
    }
    assert_eq!(
        wq.queue_on(n, &ITEMS[0]),
        Err(WorkqueueError::CpuOutOfRange { cpu: n, cpus: n })
    );
    assert_eq!(current_cpu(), None, "not a worker");
    drop(wq);
}

// ---------------------------------------------------------------------------
// Panics and the watchdog.

#[test]
fn a_panicking_item_is_caught_counted_and_the_worker_lives_on() {
    static BOOM: Work = Work::new("boom", |_| panic!("item failed on purpose"));
    static AFTER: Work = Work::new("after", |_| {});
    let d = Work::new_arc("dyn-boom", |_| panic!("dynamic item failed"));
    // One thread: AFTER can only run if the worker survived.
    let wq = Workqueue::builder("panics").threads(1).build().unwrap();
    for _ in 0..3 {
        wq.queue(&BOOM);
        BOOM.flush().unwrap();
    }
    wq.queue(&d);
    d.flush().unwrap();
    wq.queue(&AFTER);
    AFTER.flush().unwrap();
    assert_eq!((BOOM.runs(), AFTER.runs(), d.runs()), (3, 1, 1));
    let s = wq.stats();
    assert_eq!(s.panics, 4);
    assert_eq!(s.panicked, vec![("boom", 3), ("dyn-boom", 1)]);
    assert_eq!(
        s.last_panic,
        Some(("dyn-boom", String::from("dynamic item failed")))
    );
    assert!(s.to_string().contains("boom x3"), "{s}");
    drop(wq);
    assert_eq!(Arc::strong_count(&d), 1, "the queue released its count");
}

#[test]
fn the_watchdog_counts_and_reports_long_runs() {
    // Under miri the clock runs with the interpreter, so even FAST takes
    // milliseconds: scale the threshold and the slow run by 100.
    const THRESHOLD: Duration = Duration::from_millis(if cfg!(miri) { 1_000 } else { 10 });
    static GATE: Gate = Gate::new();
    static SLOW: Work = Work::new("slow", |_| thread::sleep(THRESHOLD * 3));
    static STUCK: Work = Work::new("stuck", |_| GATE.wait());
    static FAST: Work = Work::new("fast", |_| {});
    let wq = Workqueue::builder("watchdog")
        .threads(2)
        .watchdog(THRESHOLD)
        .build()
        .unwrap();
    wq.queue(&FAST);
    wq.queue(&SLOW);
    wq.flush().unwrap();
    let s = wq.stats();
    assert_eq!(s.long_runs, 1);
    assert_eq!(s.long_running, vec![("slow", 1)]);
    let (name, longest) = s.longest.unwrap();
    assert_eq!(name, "slow");
    assert!(longest >= THRESHOLD * 3, "{longest:?}");
    // A run still going is reported too.
    wq.queue(&STUCK);
    wait_until("STUCK running", || STUCK.is_running());
    thread::sleep(THRESHOLD * 2);
    let s = wq.stats();
    assert_eq!(s.running_long.len(), 1);
    assert_eq!(s.running_long[0].0, "stuck");
    assert!(
        s.to_string()
            .contains("running now over the threshold: stuck"),
        "{s}"
    );
    GATE.open();
    wq.flush().unwrap();
    let s = wq.stats();
    assert_eq!((s.long_runs, s.running_long.len()), (2, 0));
    assert_eq!(s.long_running, vec![("slow", 1), ("stuck", 1)]);
    drop(wq);
}

// ---------------------------------------------------------------------------
// Delayed work.

#[test]
fn a_zero_delay_queues_at_once() {
    static D: DelayedWork = DelayedWork::new("now", |_| {});
    // No threads: only what is runnable right now runs in run_pending.
    let wq = Workqueue::builder("zero").threads(0).build().unwrap();
    assert_eq!(wq.queue_delayed(&D, Duration::ZERO), Ok(true));
    assert!(D.is_pending() && !D.is_timer_pending());
    assert_eq!(wq.run_pending(), 1);
    assert_eq!(D.runs(), 1);
    // A non-zero delay is not runnable now.
    assert_eq!(wq.queue_delayed(&D, Duration::from_secs(3600)), Ok(true));
    assert_eq!(wq.run_pending(), 0);
    assert!(D.is_timer_pending());
    assert_eq!(D.cancel_sync(), Ok(true));
    drop(wq);
}

#[test]
fn a_delayed_item_runs_after_its_delay_and_mod_delayed_moves_the_deadline() {
    static RAN_AT: Mutex<Option<Instant>> = Mutex::new(None);
    static D: DelayedWork = DelayedWork::new("later", |_| {
        *RAN_AT.lock().unwrap() = Some(Instant::now());
    });
    let ms = |n: u64| Duration::from_millis(n);
    let wq = Workqueue::builder("delayed").threads(1).build().unwrap();

    // Plain delay: never early.
    let t0 = Instant::now();
    assert_eq!(wq.queue_delayed(&D, ms(30)), Ok(true));
    assert_eq!(
        wq.queue_delayed(&D, ms(1)),
        Ok(false),
        "pending: timer untouched"
    );
    D.work().flush().unwrap();
    assert!(RAN_AT.lock().unwrap().unwrap() - t0 >= ms(30));

    // mod_delayed pushes the deadline later...
    let t0 = Instant::now();
    wq.queue_delayed(&D, ms(20)).unwrap();
    assert_eq!(wq.mod_delayed(&D, ms(80)), Ok(true));
    D.work().flush().unwrap();
    assert!(
        RAN_AT.lock().unwrap().unwrap() - t0 >= ms(80),
        "ran at the old deadline"
    );

    // ... and earlier.
    let t0 = Instant::now();
    wq.queue_delayed(&D, Duration::from_secs(3600)).unwrap();
    assert_eq!(wq.mod_delayed(&D, ms(10)), Ok(true));
    D.work().flush().unwrap();
    let took = RAN_AT.lock().unwrap().unwrap() - t0;
    assert!(
        took >= ms(10) && took < Duration::from_secs(600),
        "{took:?}"
    );

    // ... or to now; and on an idle item it queues (returns false).
    assert_eq!(wq.mod_delayed(&D, Duration::from_secs(3600)), Ok(false));
    assert_eq!(wq.mod_delayed(&D, Duration::ZERO), Ok(true));
    D.work().flush().unwrap();
    assert_eq!(D.runs(), 4);

    // DelayedWork::flush fires a pending timer at once.
    let t0 = Instant::now();
    wq.queue_delayed(&D, Duration::from_secs(3600)).unwrap();
    assert_eq!(D.flush(), Ok(true));
    assert!(t0.elapsed() < Duration::from_secs(600));
    assert_eq!(D.runs(), 5);
    assert_eq!(wq.stats().timers_fired, 4);
    drop(wq);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "deterministically fails under miri on this binary (5 fired before 0); open: see the 2026-12-01 closing note"
)]
fn many_timers_fire_in_deadline_order() {
    static ORDER: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn item(w: &Work) {
        // SAFETY: every `item` is in ITEMS.
        let d = DelayedWork::from_work(w).unwrap();
        let i = unsafe { ptr::from_ref(d).offset_from(ITEMS.as_ptr()) } as usize;
        ORDER.lock().unwrap().push(i);
    }
    static ITEMS: [DelayedWork; 8] = [const { DelayedWork::new("t", item) }; 8];
    let wq = Workqueue::builder("timers").threads(1).build().unwrap();
    // Item k waits 10·(k+1) ms, queued in a shuffled order. Its deadline
    // lies between `before + delay` and `after + delay`.
    let t0 = Instant::now();
    let mut bounds = [(Duration::ZERO, Duration::ZERO); 8];
    for &k in &[5usize, 1, 7, 0, 3, 6, 2, 4] {
        let delay = Duration::from_millis(10 * (k as u64 + 1));
        let before = t0.elapsed();
        wq.queue_delayed(&ITEMS[k], delay).unwrap();
        bounds[k] = (before + delay, t0.elapsed() + delay);
    }
    for d in &ITEMS {
        d.work().flush().unwrap();
    }
    let order = ORDER.lock().unwrap().clone();
    assert_eq!(order.len(), 8);
    // No item ran before one whose deadline was certainly earlier.
    for (i, &a) in order.iter().enumerate() {
        for &b in &order[i + 1..] {
            assert!(
                bounds[b].1 >= bounds[a].0,
                "{a} ran before {b}, whose deadline was earlier: {order:?}"
            );
        }
    }
    // Queueing normally takes microseconds and the deadlines are 10 ms
    // apart, so the bounds are disjoint and the check above pins the exact
    // order. (Under miri they may overlap.)
    let disjoint = (1..8).all(|k| bounds[k].0 > bounds[k - 1].1);
    if disjoint {
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    } else {
        eprintln!("timer deadlines overlapped (slow queueing): order {order:?}");
    }
    drop(wq);
}

// ---------------------------------------------------------------------------
// Drop.

#[cfg(all(target_os = "linux", not(miri)))]
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

#[test]
fn drop_drains_the_queue_drops_unexpired_timers_and_joins_the_threads() {
    static RAN: AtomicU32 = AtomicU32::new(0);
    fn item(_: &Work) {
        thread::sleep(Duration::from_micros(200));
        RAN.fetch_add(1, Ordering::SeqCst);
    }
    static ITEMS: [Work; 32] = [const { Work::new("drain", item) }; 32];
    static DUE: DelayedWork = DelayedWork::new("due", |_| {
        RAN.fetch_add(1000, Ordering::SeqCst);
    });
    static LATER: DelayedWork = DelayedWork::new("later", |_| panic!("unexpired timer ran"));
    let dropped = Arc::new(AtomicBool::new(false));
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let guard = OnDrop(Arc::clone(&dropped));
    let dynamic = DelayedWork::new_arc("dyn-later", move |_| {
        let _ = &guard;
        panic!("unexpired timer ran");
    });

    let wq = Workqueue::builder("drainme").threads(2).build().unwrap();
    #[cfg(all(target_os = "linux", not(miri)))]
    wait_until("2 named workers", || threads_named("drainme/") == 2);
    for w in &ITEMS {
        wq.queue(w);
    }
    wq.queue_delayed(&DUE, Duration::from_millis(1)).unwrap();
    wq.queue_delayed(&LATER, Duration::from_secs(3600)).unwrap();
    wq.queue_delayed(&dynamic, Duration::from_secs(3600))
        .unwrap();
    drop(dynamic); // the queue holds the last count
    assert!(!dropped.load(Ordering::SeqCst));
    thread::sleep(Duration::from_millis(5)); // DUE has expired
    drop(wq);
    assert_eq!(
        RAN.load(Ordering::SeqCst),
        32 + 1000,
        "everything queued and due ran"
    );
    assert!(!LATER.is_pending() && LATER.runs() == 0);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the dropped timer released its Arc"
    );
    #[cfg(all(target_os = "linux", not(miri)))]
    assert_eq!(threads_named("drainme/"), 0, "threads joined");
}

#[test]
fn dropping_a_workqueue_from_its_own_item_does_not_deadlock() {
    static HOLDER: Mutex<Option<Workqueue>> = Mutex::new(None);
    static OTHER: Work = Work::new("other", |_| {});
    static KILLER: Work = Work::new("killer", |_| {
        let wq = HOLDER.lock().unwrap().take().unwrap();
        wq.queue(&OTHER);
        drop(wq); // joins from a helper thread
    });
    let wq = Workqueue::builder("suicide").threads(1).build().unwrap();
    // Queued under the lock, with the workqueue already in HOLDER: KILLER
    // can run before this thread stores it (then `take` finds nothing).
    HOLDER.lock().unwrap().insert(wq).queue(&KILLER);
    wait_until("the drop", || {
        HOLDER.lock().unwrap().is_none() && OTHER.runs() == 1
    });
    assert_eq!(KILLER.runs(), 1);
    #[cfg(all(target_os = "linux", not(miri)))]
    wait_until("threads joined", || threads_named("suicide/") == 0);
    // Under miri the helper must be gone before the test ends.
    #[cfg(miri)]
    thread::sleep(Duration::from_millis(50));
}

// ---------------------------------------------------------------------------
// Flush/cancel from inside: WouldDeadlock.

#[test]
fn flush_or_cancel_from_inside_the_item_is_an_error_not_a_deadlock() {
    static SLOT: Slot = Slot::new();
    static RESULTS: Mutex<Vec<(&str, Result<bool, WorkqueueError>)>> = Mutex::new(Vec::new());
    static SELF_ITEM: Work = Work::new("self", |w| {
        let mut r = RESULTS.lock().unwrap();
        r.push(("flush", w.flush()));
        r.push(("cancel_sync", w.cancel_sync()));
        r.push(("wq.flush", SLOT.get().flush().map(|()| true)));
        r.push(("wq.stop", SLOT.get().stop().map(|()| true)));
        // Queue itself, then flush: it would wait for the pending instance,
        // which cannot start before this run ends.
        SLOT.get().queue(&SELF_ITEM);
        r.push(("flush-pending-self", w.flush()));
        r.push(("cancel", Ok(w.cancel())));
    });
    let wq = Workqueue::builder("deadlock").threads(1).build().unwrap();
    SLOT.set(&wq);
    wq.queue(&SELF_ITEM);
    SELF_ITEM.flush().unwrap();
    SLOT.clear();
    let dl = Err(WorkqueueError::WouldDeadlock);
    assert_eq!(
        *RESULTS.lock().unwrap(),
        vec![
            ("flush", dl),
            ("cancel_sync", dl),
            ("wq.flush", dl),
            ("wq.stop", dl),
            ("flush-pending-self", dl),
            ("cancel", Ok(true)),
        ]
    );
    assert_eq!(SELF_ITEM.runs(), 1);
    drop(wq);
}

#[test]
fn flushing_a_later_item_of_a_one_at_a_time_queue_is_an_error() {
    static GOT: Mutex<Vec<Result<bool, WorkqueueError>>> = Mutex::new(Vec::new());
    static A: Work = Work::new("a", |_| {
        // B is queued after A: wait for it (or for its run, on 2 threads).
        let base = BASE.load(Ordering::SeqCst);
        wait_until("B queued", || B.is_pending() || B.runs() > base);
        GOT.lock().unwrap().push(B.flush());
    });
    static B: Work = Work::new("b", |_| {});
    static BASE: AtomicU32 = AtomicU32::new(0);
    for (name, builder) in [
        ("ordered", Workqueue::builder("dl-ordered").ordered()),
        ("unbound2", Workqueue::builder("dl-unbound").threads(2)),
    ] {
        let wq = builder.build().unwrap();
        BASE.store(B.runs(), Ordering::SeqCst);
        wq.queue(&A);
        wq.queue(&B);
        wq.flush().unwrap();
        drop(wq);
        let got = GOT.lock().unwrap().pop().unwrap();
        match name {
            // B waits behind A: flushing it from A can never return.
            "ordered" => assert_eq!(got, Err(WorkqueueError::WouldDeadlock)),
            // Another worker runs B (or already ran it): fine.
            _ => assert!(got.is_ok(), "{got:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Arc items.

#[test]
fn an_arc_item_is_kept_alive_while_queued_and_released_after() {
    let dropped = Arc::new(AtomicBool::new(false));
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let ran = Arc::new(AtomicU32::new(0));
    let (guard, r) = (OnDrop(Arc::clone(&dropped)), Arc::clone(&ran));
    let w = Work::new_arc("dyn", move |_| {
        let _ = &guard;
        r.fetch_add(1, Ordering::SeqCst);
    });
    let wq = Workqueue::builder("arc").threads(0).build().unwrap();
    assert!(wq.queue(&w));
    assert!(!wq.queue(&w));
    assert_eq!(Arc::strong_count(&w), 2, "the queue holds one count");
    drop(w);
    assert!(!dropped.load(Ordering::SeqCst));
    assert_eq!(wq.run_pending(), 1);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert!(dropped.load(Ordering::SeqCst), "released after its run");

    // Cancel releases the count too.
    let w = Work::new_arc("dyn2", |_| panic!("cancelled"));
    wq.queue(&w);
    assert_eq!(Arc::strong_count(&w), 2);
    assert!(w.cancel());
    assert_eq!(Arc::strong_count(&w), 1);
    drop(wq);
}

// ---------------------------------------------------------------------------
// Allocation.

#[test]
fn allocator_self_test_sees_an_allocation_in_the_guarded_region() {
    assert_eq!(
        allocations_in(|| drop(std::hint::black_box(vec![1u8; 4]))),
        1
    );
    assert_eq!(allocations_in(|| {}), 0);
}

#[test]
fn queue_of_a_static_item_allocates_nothing() {
    static W: Work = Work::new("w", |_| {});
    static D: DelayedWork = DelayedWork::new("d", |_| {});
    static P: Work = Work::new("p", |_| {});
    let a = Work::new_arc("arc", |_| {});
    // No threads, and with sleeping threads (the queue wakes one).
    let manual = Workqueue::builder("alloc0").threads(0).build().unwrap();
    let threaded = Workqueue::builder("alloc2").threads(2).build().unwrap();
    let percpu = Workqueue::builder("alloc-pc").per_cpu().build().unwrap();
    thread::sleep(Duration::from_millis(5)); // let the workers go to sleep
    let n = allocations_in(|| {
        assert!(manual.queue(&W));
        assert!(!manual.queue(&W));
        assert!(manual.queue(&a));
        assert_eq!(
            manual.queue_delayed(&D, Duration::from_secs(3600)),
            Ok(true)
        );
        assert!(threaded.queue(&P));
        assert_eq!(percpu.queue_on(0, threaded_probe()), Ok(true));
    });
    assert_eq!(n, 0, "queue allocated");
    threaded.flush().unwrap();
    percpu.flush().unwrap();
    assert_eq!(manual.run_pending(), 2);
    D.cancel();
    drop((manual, threaded, percpu));
}

fn threaded_probe() -> &'static Work {
    static PROBE: Work = Work::new("probe", |_| {});
    &PROBE
}

// ---------------------------------------------------------------------------
// Priority: best effort, reported.

#[test]
fn high_priority_is_applied_or_its_refusal_reported() {
    let wq = Workqueue::builder("hi")
        .threads(1)
        .high_priority()
        .build()
        .unwrap();
    static W: Work = Work::new("w", |_| {});
    wq.queue(&W);
    W.flush().unwrap(); // the worker has set its priority before running
    let p = wq.stats().high_priority;
    if cfg!(miri) || !cfg!(target_os = "linux") {
        // Worker priority is Linux-only (README "std on other systems").
        assert_eq!(p, HighPriority::Unsupported);
    } else {
        assert!(
            matches!(p, HighPriority::Applied | HighPriority::Denied { .. }),
            "{p:?}"
        );
        eprintln!("high priority: {p:?}");
    }
    drop(wq);
}

// ---------------------------------------------------------------------------
// A real signal handler queues.

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn queue_from_a_real_signal_handler() {
    static SLOT: Slot = Slot::new();
    static W: Work = Work::new("from-signal", |_| {});
    static HANDLER_ALLOCS: AtomicUsize = AtomicUsize::new(usize::MAX);
    static QUEUED: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        // Top half: count allocations on this thread during the queue.
        let n = allocations_in(|| {
            QUEUED.store(SLOT.get().queue(&W), Ordering::SeqCst);
        });
        HANDLER_ALLOCS.store(n, Ordering::SeqCst);
    }
    let wq = Workqueue::builder("sig").threads(1).build().unwrap();
    SLOT.set(&wq);
    thread::sleep(Duration::from_millis(5)); // the worker sleeps: the handler wakes it
                                             // SAFETY: installs a handler for SIGUSR2 that only queues (lock-free)
                                             // and touches atomics and const thread-locals; then signals this
                                             // thread only.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, ptr::null_mut()), 0);
        assert_eq!(libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2), 0);
    }
    assert!(QUEUED.load(Ordering::SeqCst));
    assert_eq!(HANDLER_ALLOCS.load(Ordering::SeqCst), 0);
    W.flush().unwrap();
    assert_eq!(W.runs(), 1);
    SLOT.clear();
    drop(wq);
}

// ---------------------------------------------------------------------------
// Stress.

const STRESS_ITEMS: usize = 64;

/// Per-item accounting for the stress test.
struct Account {
    in_flight: AtomicU32,
    runs: AtomicU64,
    trues: AtomicU64,
    falses: AtomicU64,
    cancels: AtomicU64,
    /// Highest request stamp written before a queue of this item.
    stamp: AtomicU64,
    /// Highest stamp a run of this item saw at its start.
    seen: AtomicU64,
}

static ACCOUNTS: [Account; STRESS_ITEMS] = [const {
    Account {
        in_flight: AtomicU32::new(0),
        runs: AtomicU64::new(0),
        trues: AtomicU64::new(0),
        falses: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        stamp: AtomicU64::new(0),
        seen: AtomicU64::new(0),
    }
}; STRESS_ITEMS];
static OVERLAPS: AtomicU64 = AtomicU64::new(0);
static STAMPS: AtomicU64 = AtomicU64::new(1);

fn stress_item(w: &Work) {
    // SAFETY: every `stress_item` is an element of STRESS.
    let i = unsafe { ptr::from_ref(w).offset_from(STRESS.as_ptr()) } as usize;
    let a = &ACCOUNTS[i];
    if a.in_flight.fetch_add(1, Ordering::SeqCst) != 0 {
        OVERLAPS.fetch_add(1, Ordering::SeqCst);
    }
    // Relaxed: visibility comes from queue → run (what is under test).
    a.seen
        .fetch_max(a.stamp.load(Ordering::Relaxed), Ordering::Relaxed);
    for _ in 0..(i % 4) * 200 {
        std::hint::spin_loop();
    }
    a.runs.fetch_add(1, Ordering::Relaxed);
    a.in_flight.fetch_sub(1, Ordering::SeqCst);
}

static STRESS: [Work; STRESS_ITEMS] = [const { Work::new("stress", stress_item) }; STRESS_ITEMS];

#[cfg(all(target_os = "linux", not(miri)))]
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn stress_round(wq: &Workqueue, producers: usize, per_producer: usize, cancel: bool) {
    let stop_cancel = AtomicBool::new(false);
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                s.spawn(move || {
                    #[cfg(all(target_os = "linux", not(miri)))]
                    pin_to(p % cpus);
                    let _ = cpus;
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (p as u64 + 1);
                    for _ in 0..per_producer {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % STRESS_ITEMS as u64) as usize;
                        let a = &ACCOUNTS[i];
                        let stamp = STAMPS.fetch_add(1, Ordering::Relaxed);
                        a.stamp.fetch_max(stamp, Ordering::Relaxed);
                        if wq.queue(&STRESS[i]) {
                            a.trues.fetch_add(1, Ordering::Relaxed);
                        } else {
                            a.falses.fetch_add(1, Ordering::Relaxed);
                        }
                        // Pace the producers (more than the cores) so that
                        // items run, not only coalesce.
                        if x.is_multiple_of(8) {
                            thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        if cancel {
            let stop = &stop_cancel;
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 7) % STRESS_ITEMS;
                    let removed = if i % 2 == 0 {
                        STRESS[i].cancel()
                    } else {
                        STRESS[i].cancel_sync().unwrap()
                    };
                    if removed {
                        ACCOUNTS[i].cancels.fetch_add(1, Ordering::Relaxed);
                    }
                    thread::yield_now();
                }
            });
        }
        for h in handles {
            h.join().unwrap();
        }
        stop_cancel.store(true, Ordering::Relaxed);
    });
    wq.flush().unwrap();
}

#[test]
fn stress_every_queue_is_covered_by_a_run_and_runs_never_overlap() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let producers = cpus + 2;
    let per_producer = scaled(100_000, 60);

    // Unbound, 2 threads, no cancels: exact accounting and freshness.
    let wq = Workqueue::builder("stress-u").threads(2).build().unwrap();
    stress_round(&wq, producers, per_producer, false);
    drop(wq);
    let mut total_runs = 0;
    for (i, a) in ACCOUNTS.iter().enumerate() {
        let runs = a.runs.load(Ordering::SeqCst);
        let trues = a.trues.load(Ordering::SeqCst);
        assert_eq!(runs, trues, "item {i}: one run per queue() == true");
        assert_eq!(u64::from(STRESS[i].runs()), runs, "item {i}: Work::runs");
        assert_eq!(
            u64::from(STRESS[i].coalesced()),
            a.falses.load(Ordering::SeqCst),
            "item {i}: coalesced"
        );
        assert_eq!(
            a.seen.load(Ordering::SeqCst),
            a.stamp.load(Ordering::SeqCst),
            "item {i}: the last request was not seen by a run"
        );
        assert!(!STRESS[i].is_pending() && !STRESS[i].is_running());
        total_runs += runs;
    }
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "an item ran twice at once"
    );
    let queued = (producers * per_producer) as u64;
    eprintln!("stress (unbound): {queued} queues, {total_runs} runs");

    // Per-CPU (items move between pools: set-aside across pools), with a
    // canceler: every queue() == true ends in exactly one run or one
    // successful cancel.
    let wq = Workqueue::builder("stress-pc").per_cpu().build().unwrap();
    let before: Vec<(u64, u64)> = ACCOUNTS
        .iter()
        .map(|a| {
            (
                a.runs.load(Ordering::SeqCst),
                a.trues.load(Ordering::SeqCst),
            )
        })
        .collect();
    stress_round(&wq, producers, per_producer, true);
    let collisions = wq.stats().collisions;
    drop(wq);
    let mut cancels = 0;
    for (i, a) in ACCOUNTS.iter().enumerate() {
        let runs = a.runs.load(Ordering::SeqCst) - before[i].0;
        let trues = a.trues.load(Ordering::SeqCst) - before[i].1;
        let c = a.cancels.load(Ordering::SeqCst);
        assert_eq!(runs + c, trues, "item {i}: runs + cancels == queues");
        assert!(!STRESS[i].is_pending() && !STRESS[i].is_running());
        cancels += c;
    }
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "an item ran twice at once"
    );
    eprintln!("stress (per-CPU + canceler): {cancels} cancels, {collisions} set aside");
}

// ---------------------------------------------------------------------------
// Review regressions: each failed (within its deadline) before its fix.

/// Waits up to `limit` for `cond`; `false` if it never held.
fn within(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while !cond() {
        if t0.elapsed() >= limit {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
    true
}

#[test]
fn a_timer_is_not_held_up_by_a_long_item_while_a_peer_idles() {
    static GATE: Gate = Gate::new();
    static LONG: Work = Work::new("long", |_| GATE.wait());
    static D: DelayedWork = DelayedWork::new("timer", |_| {});
    let wq = Workqueue::builder("timer-peer").threads(2).build().unwrap();
    let mut late = Vec::new();
    for round in 0..scaled(6, 2) {
        // Both workers asleep, without a timer to watch.
        thread::sleep(Duration::from_millis(scaled(30, 5) as u64));
        let base = D.runs();
        wq.queue_delayed(&D, Duration::from_millis(20)).unwrap();
        if round % 2 == 1 {
            // The worker woken by that queue links the timer and sleeps
            // watching it; the next queue wakes that same worker.
            thread::sleep(Duration::from_millis(5));
        }
        wq.queue(&LONG);
        // LONG holds one worker until the gate opens; the idle peer must
        // fire the timer meanwhile.
        if !within(Duration::from_secs(5), || D.runs() > base) {
            late.push(round);
        }
        GATE.open();
        LONG.flush().unwrap();
        D.flush().unwrap();
        GATE.0.store(false, Ordering::SeqCst);
    }
    drop(wq);
    assert!(
        late.is_empty(),
        "rounds {late:?}: the timer waited for the long item, not for a worker"
    );
}

#[test]
fn an_ordered_queue_keeps_queue_order_behind_a_set_aside_item() {
    static GATE: Gate = Gate::new();
    static ORDER: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    static X: Work = Work::new("x", |w| {
        if w.runs() == 0 {
            GATE.wait();
        }
        ORDER.lock().unwrap().push("x");
    });
    static Y: Work = Work::new("y", |_| ORDER.lock().unwrap().push("y"));
    let other = Workqueue::builder("ord-other").threads(1).build().unwrap();
    let ordered = Workqueue::builder("ord-aside").ordered().build().unwrap();
    other.queue(&X);
    wait_until("X running on the other queue", || X.is_running());
    // X is set aside behind its run elsewhere; Y, queued after X, waits too.
    ordered.queue(&X);
    ordered.queue(&Y);
    let overtaken = within(Duration::from_millis(scaled(50, 5) as u64), || Y.runs() > 0);
    GATE.open();
    ordered.flush().unwrap();
    other.flush().unwrap();
    assert!(!overtaken, "Y ran before X, queued ahead of it");
    assert_eq!(*ORDER.lock().unwrap(), ["x", "x", "y"]);
    assert_eq!(ordered.stats().collisions, 1);
    drop((ordered, other));
}

#[test]
fn flushing_a_queue_holding_the_callers_next_instance_is_an_error_not_a_deadlock() {
    static A: Slot = Slot::new();
    static GOT: Mutex<Vec<(&str, Result<(), WorkqueueError>)>> = Mutex::new(Vec::new());
    // Runs first on B; meanwhile queued on A, where it waits for this run.
    static Z: Work = Work::new("z", |w| {
        if w.runs() == 0 {
            wait_until("Z queued on A", || Z.is_pending());
            let a = A.get();
            let flushed = a.flush();
            GOT.lock().unwrap().push(("flush", flushed));
            let stopped = a.stop();
            GOT.lock().unwrap().push(("stop", stopped));
        }
    });
    let a = Box::new(Workqueue::builder("onx-a").threads(1).build().unwrap());
    let b = Box::new(Workqueue::builder("onx-b").threads(1).build().unwrap());
    A.set(&a);
    b.queue(&Z);
    wait_until("Z running on b", || Z.is_running());
    a.queue(&Z);
    if !within(Duration::from_secs(10), || GOT.lock().unwrap().len() == 2) {
        // Deadlocked: leave both queues (and the stuck worker) behind.
        Box::leak(a);
        Box::leak(b);
        panic!("flush/stop of a queue holding the caller's next instance deadlocked");
    }
    wait_until("Z's run on a", || Z.runs() == 2);
    A.clear();
    let dl = Err(WorkqueueError::WouldDeadlock);
    assert_eq!(*GOT.lock().unwrap(), [("flush", dl), ("stop", dl)]);
    drop((a, b));
}

#[test]
fn dropping_a_queue_holding_the_callers_next_instance_is_no_deadlock() {
    static HOLDER: Mutex<Option<Workqueue>> = Mutex::new(None);
    static DROPPED: AtomicBool = AtomicBool::new(false);
    static TOOK: AtomicBool = AtomicBool::new(false);
    // Runs first on B; meanwhile queued on A, where it waits for this run.
    static Z: Work = Work::new("z2", |w| {
        if w.runs() == 0 {
            wait_until("Z queued on A", || Z.is_pending());
            let a = HOLDER.lock().unwrap().take();
            TOOK.store(a.is_some(), Ordering::SeqCst);
            drop(a);
            DROPPED.store(true, Ordering::SeqCst);
        }
    });
    let a = Workqueue::builder("onxd-a").threads(1).build().unwrap();
    let b = Box::new(Workqueue::builder("onxd-b").threads(1).build().unwrap());
    b.queue(&Z);
    wait_until("Z running on b", || Z.is_running());
    // Queued under the lock, with `a` already in HOLDER: Z sees its
    // instance pending as soon as it is queued, and a `take` before this
    // thread stored `a` would find nothing (`a` then lived on in HOLDER
    // and its worker never exited: the test timed out on "a joined").
    HOLDER.lock().unwrap().insert(a).queue(&Z);
    if !within(Duration::from_secs(10), || DROPPED.load(Ordering::SeqCst)) {
        Box::leak(b);
        panic!("dropping a queue holding the caller's next instance deadlocked");
    }
    assert!(TOOK.load(Ordering::SeqCst), "Z found no workqueue to drop");
    // A helper thread finished the stop: it drained Z's instance on a.
    wait_until("Z's run on a", || Z.runs() == 2);
    #[cfg(all(target_os = "linux", not(miri)))]
    wait_until("a joined", || threads_named("onxd-a/") == 0);
    // Under miri the helper must be gone before the test ends.
    #[cfg(miri)]
    thread::sleep(Duration::from_millis(50));
    drop(b);
}

#[test]
fn a_panicking_drop_of_an_arc_items_capture_is_caught_and_counted() {
    static GATE: Gate = Gate::new();
    static AFTER: Work = Work::new("after-bomb", |_| {});
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("drop bomb");
        }
    }
    let bomb = Bomb;
    let w = Work::new_arc("bomb", move |_| {
        let _b = &bomb;
        GATE.wait();
    });
    // One thread: AFTER runs only if the worker survived.
    let wq = Box::new(Workqueue::builder("bomb").threads(1).build().unwrap());
    wq.queue(&w);
    wait_until("bomb running", || w.is_running());
    drop(w); // the worker now holds the last count
    GATE.open();
    wq.queue(&AFTER);
    if !within(Duration::from_secs(10), || AFTER.runs() == 1) {
        Box::leak(wq);
        panic!("the worker died of a panicking drop");
    }
    let s = wq.stats();
    assert_eq!(s.panics, 1);
    assert_eq!(s.panicked, vec![("bomb", 1)]);
    assert_eq!(s.last_panic, Some(("bomb", String::from("drop bomb"))));
    drop(wq);
}

#[test]
fn flushing_a_timer_of_the_callers_one_at_a_time_pool_leaves_the_timer_alone() {
    static SLOT: Slot = Slot::new();
    static D: DelayedWork = DelayedWork::new("far", |_| {});
    static GOT: Mutex<Option<(Result<bool, WorkqueueError>, bool)>> = Mutex::new(None);
    static W: Work = Work::new("asks", |_| {
        SLOT.get()
            .queue_delayed(&D, Duration::from_secs(3600))
            .unwrap();
        let r = D.flush();
        *GOT.lock().unwrap() = Some((r, D.is_timer_pending()));
    });
    let wq = Workqueue::builder("dl-timer").threads(1).build().unwrap();
    SLOT.set(&wq);
    wq.queue(&W);
    W.flush().unwrap();
    SLOT.clear();
    assert_eq!(
        *GOT.lock().unwrap(),
        Some((Err(WorkqueueError::WouldDeadlock), true)),
        "refused, and the timer was not fired"
    );
    assert_eq!(D.cancel_sync(), Ok(true));
    drop(wq);
}
