//! Every top-half path is allocation-free.
//!
//! A `#[global_allocator]` wraps `std::alloc::System`. While the current
//! thread's "in top half" flag is set, every allocation, zeroed allocation
//! and reallocation is recorded (count and bytes) in thread-local counters;
//! the test then fails if a top-half call allocated. The flag and the
//! counters are thread-local, so the harness and other test threads, which
//! allocate freely, are never counted; only the guarded region is.
//!
//! `allocator_self_test_*` prove the allocator can fail a test: an
//! allocation inside the guarded region is seen, one outside is not, and
//! another thread's allocations are not charged to this thread.

mod support;
use std::cell::Cell;
use std::hint::black_box;
use support::RecordingAlloc;

use bottomhalf::{Config, Host, Mailbox, MpscMailbox, Runtime, Tasklet, Vector};

// ---------------------------------------------------------------------------
// The test allocator.

thread_local! {
    // `const` initialisers and no destructors: reading these never allocates
    // and never registers a TLS destructor, so the allocator can use them.
    static IN_TOP_HALF: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = IN_TOP_HALF.try_with(|flag| {
        if flag.get() {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
            let _ = BYTES.try_with(|b| b.set(b.get() + size));
        }
    });
}

#[global_allocator]
static ALLOC: RecordingAlloc = RecordingAlloc {
    on_alloc: record,
    on_dealloc: || {},
};

/// What a guarded region allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allocated {
    count: usize,
    bytes: usize,
}

/// Runs `f` as a top half on this thread and returns what it allocated.
/// `f` must not panic or print (both allocate); assertions go after.
fn in_top_half<R>(f: impl FnOnce() -> R) -> (R, Allocated) {
    ALLOCS.with(|c| c.set(0));
    BYTES.with(|b| b.set(0));
    IN_TOP_HALF.with(|flag| flag.set(true));
    let r = f();
    IN_TOP_HALF.with(|flag| flag.set(false));
    let count = ALLOCS.with(Cell::get);
    let bytes = BYTES.with(Cell::get);
    (r, Allocated { count, bytes })
}

/// Fails the test, naming the path, if `f` allocated.
#[track_caller]
fn assert_alloc_free<R>(path: &str, f: impl FnOnce() -> R) -> R {
    let (r, a) = in_top_half(f);
    assert_eq!(
        a,
        Allocated { count: 0, bytes: 0 },
        "top-half path `{path}` allocated {} time(s), {} byte(s)",
        a.count,
        a.bytes
    );
    r
}

/// The default restart budget without the time budget: a test whose drain
/// restarts (a handler re-raising, a callback blocked on another thread)
/// must not depend on how fast the machine, or miri, is. The time budget
/// has tests of its own.
const NO_TIME_BUDGET: Config = Config::DEFAULT.time_budget_ns(0);

// ---------------------------------------------------------------------------
// Self-tests: the allocator can fail a test.

#[test]
fn allocator_self_test_detects_allocation_in_top_half() {
    let (_, a) = in_top_half(|| {
        let b = black_box(Box::new(black_box(0x5a5a_u64)));
        drop(b);
    });
    assert_eq!(a, Allocated { count: 1, bytes: 8 });

    // alloc_zeroed and realloc are counted too.
    let mut v: Vec<u8> = Vec::with_capacity(4);
    let (_, a) = in_top_half(|| {
        let z = black_box(vec![0u8; 64]);
        drop(z);
        v.extend_from_slice(black_box(&[1u8; 32]));
    });
    assert_eq!(a.count, 2, "{a:?}");
    assert!(a.bytes >= 64 + 32, "{a:?}");
    drop(v);

    // And the assertion helper really fails the test on it.
    let caught = std::panic::catch_unwind(|| {
        assert_alloc_free("Box::new", || black_box(Box::new(1u32)));
    });
    let msg = caught.expect_err("an allocating top half must fail the test");
    let msg = msg
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("");
    assert!(
        msg.contains("top-half path `Box::new` allocated 1 time(s), 4 byte(s)"),
        "{msg}"
    );
}

#[test]
fn allocator_self_test_ignores_allocations_outside_the_region() {
    let b = black_box(Box::new([0u8; 100]));
    let (_, a) = in_top_half(|| black_box(1 + 1));
    drop(b);
    let b = black_box(Box::new([0u8; 100]));
    drop(b);
    assert_eq!(a, Allocated { count: 0, bytes: 0 });
}

#[test]
fn allocator_self_test_ignores_other_threads() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    static OTHER_ALLOCS: AtomicUsize = AtomicUsize::new(0);

    let other = std::thread::spawn(|| {
        while !STOP.load(Ordering::Relaxed) {
            let v = black_box(vec![1u8; 16]);
            drop(v);
            OTHER_ALLOCS.fetch_add(1, Ordering::Relaxed);
            std::thread::yield_now();
        }
    });
    // Guard a region that lasts until the other thread has allocated a few
    // times; none of that is ours.
    let (_, a) = in_top_half(|| {
        while OTHER_ALLOCS.load(Ordering::Relaxed) < 3 {
            std::thread::yield_now();
        }
    });
    STOP.store(true, Ordering::Relaxed);
    other.join().unwrap();
    assert_eq!(a, Allocated { count: 0, bytes: 0 });
}

// ---------------------------------------------------------------------------
// Runtime::raise

#[test]
fn raise_idle_and_coalesced_do_not_allocate() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    const V: Vector = Vector::new(3);
    const NO_HANDLER: Vector = Vector::new(17);
    RT.register(V, "V", |_| {}).unwrap();

    assert_alloc_free("Runtime::raise (idle)", || RT.raise(V));
    assert_alloc_free("Runtime::raise (coalesced)", || RT.raise(V));
    assert_alloc_free("Runtime::raise (no handler)", || RT.raise(NO_HANDLER));
    assert_eq!(RT.pending(0), (1 << 3) | (1 << 17));
    assert_eq!(RT.stats().coalesced(0, V), 1);

    // On another CPU: the first access to the binding is allocation-free
    // too.
    std::thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert_alloc_free("Runtime::raise (idle, CPU1)", || RT.raise(V));
        assert_alloc_free("Runtime::raise (coalesced, CPU1)", || RT.raise(V));
        assert_eq!(RT.pending(1), 1 << 3);
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert!(RT.drain().is_complete());
    assert_eq!(RT.stats().runs(0, V), 1);
    assert_eq!(RT.stats().runs(1, V), 1);
}

// ---------------------------------------------------------------------------
// Tasklet::schedule / try_schedule

#[test]
fn schedule_idle_pending_and_killed_do_not_allocate() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});
    static HI: Tasklet = Tasklet::new_hi(&RT, || {});
    static K: Tasklet = Tasklet::new(&RT, || {});

    assert!(assert_alloc_free("Tasklet::schedule (idle)", || T.schedule()));
    assert!(!assert_alloc_free("Tasklet::schedule (pending)", || T.schedule()));
    assert!(assert_alloc_free("Tasklet::schedule (idle, hi)", || HI.schedule()));
    assert!(RT.drain().is_complete());
    assert_eq!((T.runs(), HI.runs()), (1, 1));

    assert_eq!(
        assert_alloc_free("Tasklet::try_schedule (idle)", || T.try_schedule()),
        Ok(true)
    );
    assert_eq!(
        assert_alloc_free("Tasklet::try_schedule (pending)", || T.try_schedule()),
        Ok(false)
    );
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
    assert_eq!(T.coalesced(), 2);

    K.kill();
    assert!(!assert_alloc_free("Tasklet::schedule (killed)", || K.schedule()));
    assert_eq!(
        assert_alloc_free("Tasklet::try_schedule (killed)", || K.try_schedule()),
        Err(bottomhalf::TaskletKilled)
    );
    assert!(RT.drain().is_complete());
    assert_eq!(K.runs(), 0);
}

#[test]
fn schedule_while_running_does_not_allocate() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static SELF_SCHEDULE_ALLOCS: AtomicU32 = AtomicU32::new(u32::MAX);
    // The callback re-schedules itself once, as a top half would while it
    // runs; that schedule (RUN set) must not allocate either.
    static T: Tasklet = Tasklet::new(&RT, || {
        if T.runs() == 0 {
            let (queued, a) = in_top_half(|| T.schedule());
            let bad = u32::from(!queued) << 16 | a.count as u32;
            SELF_SCHEDULE_ALLOCS.store(bad, Ordering::Relaxed);
        }
    });
    T.schedule();
    assert!(RT.drain().is_complete());
    assert_eq!(SELF_SCHEDULE_ALLOCS.load(Ordering::Relaxed), 0);
    assert_eq!(T.runs(), 2);
}

// ---------------------------------------------------------------------------
// Tasklet::disable_nosync / enable

#[test]
fn disable_nosync_and_enable_do_not_allocate() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});

    // Plain nesting, nothing pending.
    assert_alloc_free("Tasklet::disable_nosync", || T.disable_nosync());
    assert_alloc_free("Tasklet::disable_nosync (nested)", || T.disable_nosync());
    assert_alloc_free("Tasklet::enable (count 2 -> 1)", || T.enable());
    assert_alloc_free("Tasklet::enable (count 1 -> 0)", || T.enable());
    assert!(!T.is_disabled());

    // Scheduled while disabled, parked by a drain, re-queued by enable.
    assert_alloc_free("Tasklet::disable_nosync (idle)", || T.disable_nosync());
    assert!(assert_alloc_free("Tasklet::schedule (disabled)", || T.schedule()));
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
    assert!(T.is_scheduled(), "parked tasklet stays pending");
    assert!(!assert_alloc_free("Tasklet::schedule (parked)", || T.schedule()));
    assert_eq!(RT.pending(0), 0);
    assert_alloc_free("Tasklet::enable (re-queues parked)", || T.enable());
    assert_eq!(RT.pending(0), 1 << Vector::TASKLET.index());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);

    // The same, with the enabling thread on another CPU.
    T.disable_nosync();
    T.schedule();
    assert!(RT.drain().is_complete());
    std::thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert_alloc_free("Tasklet::enable (re-queues parked, CPU1)", || T.enable());
        assert_eq!(RT.pending(1), 1 << Vector::TASKLET.index());
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(T.runs(), 2);
}

// ---------------------------------------------------------------------------
// Mailboxes

#[test]
fn spsc_producer_push_ok_and_full_do_not_allocate() {
    static MB: Mailbox<u64, 4> = Mailbox::new();
    let (mut tx, mut rx) = MB.split().unwrap();
    for i in 0..3 {
        assert_eq!(
            assert_alloc_free("Producer::push (ok)", || tx.push(i)),
            Ok(())
        );
    }
    assert_eq!(
        assert_alloc_free("Producer::push (full)", || tx.push(99)),
        Err(99)
    );
    assert!(!assert_alloc_free("Producer::ready", || tx.ready()));
    // A boxed payload is handed back, not dropped inside push.
    static BOXED: Mailbox<Box<u32>, 2> = Mailbox::new();
    let (mut btx, _brx) = BOXED.split().unwrap();
    let b1 = Box::new(1);
    let b2 = Box::new(2);
    assert!(assert_alloc_free("Producer::push (ok, boxed)", || btx.push(b1)).is_ok());
    let back = assert_alloc_free("Producer::push (full, boxed)", || btx.push(b2));
    assert_eq!(back.map_err(|b| *b), Err(2));

    assert_eq!(assert_alloc_free("Consumer::pop", || rx.pop()), Some(0));
    assert_eq!(
        assert_alloc_free("Mailbox accessors", || (MB.dropped(), MB.high_water())),
        (1, 3)
    );
}

/// Taking and giving back the ends: an interrupt handler takes its
/// producer on first use, a tasklet its consumer on every run.
#[test]
fn mailbox_take_and_give_back_do_not_allocate() {
    static MB: Mailbox<u32, 4> = Mailbox::new();
    let tx = assert_alloc_free("Mailbox::take_producer", || MB.take_producer());
    assert!(tx.is_some());
    assert!(assert_alloc_free("Mailbox::take_producer (out)", || MB.take_producer()).is_none());
    let rx = assert_alloc_free("Mailbox::take_consumer", || MB.take_consumer());
    assert!(rx.is_some());
    assert_alloc_free("Producer/Consumer drop", move || drop((tx, rx)));
    static MPSC: MpscMailbox<u32, 4> = MpscMailbox::new();
    let rx = assert_alloc_free("MpscMailbox::take_consumer", || MPSC.take_consumer());
    assert!(rx.is_some());
    assert_alloc_free("MpscConsumer drop", move || drop(rx));
}

#[test]
fn mpsc_push_ok_and_full_do_not_allocate() {
    static MB: MpscMailbox<u64, 4> = MpscMailbox::new();
    for i in 0..4 {
        assert_eq!(
            assert_alloc_free("MpscMailbox::push (ok)", || MB.push(i)),
            Ok(())
        );
    }
    assert_eq!(
        assert_alloc_free("MpscMailbox::push (full)", || MB.push(99)),
        Err(99)
    );
    // Wrap around: pop one, push again.
    let mut rx = MB.consumer().unwrap();
    assert_eq!(assert_alloc_free("MpscConsumer::pop", || rx.pop()), Some(0));
    assert_eq!(
        assert_alloc_free("MpscMailbox::push (ok, wrapped)", || MB.push(4)),
        Ok(())
    );
    assert_eq!(
        assert_alloc_free("MpscMailbox accessors", || (
            MB.dropped(),
            MB.high_water(),
            MB.len(),
            MB.is_empty()
        )),
        (1, 4, 4, false)
    );
    // From several threads at once (each thread's own region).
    drop(rx);
    static MB2: MpscMailbox<u32, 64> = MpscMailbox::new();
    std::thread::scope(|s| {
        for t in 0..3u32 {
            s.spawn(move || {
                for i in 0..8 {
                    assert_eq!(
                        assert_alloc_free("MpscMailbox::push (threads)", || MB2.push(t * 100 + i)),
                        Ok(())
                    );
                }
            });
        }
    });
    assert_eq!(MB2.len(), 24);
}

// ---------------------------------------------------------------------------
// Read-only accessors

#[test]
fn stats_and_accessor_reads_do_not_allocate() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});
    const V: Vector = Vector::new(5);
    RT.register(V, "V", |_| {}).unwrap();
    RT.raise(V);
    RT.raise(V);
    RT.raise(Vector::new(20));
    T.schedule();
    T.schedule();
    let _ = RT.drain();
    RT.raise(V);

    let snapshot = assert_alloc_free("Stats accessors", || {
        let s = RT.stats();
        [
            s.runs(0, V),
            s.coalesced(0, V),
            s.unhandled(0, Vector::new(20)),
            s.raised(0, V),
            s.runs(0, Vector::TASKLET),
            u32::from(s.max_handler_ns(0, V) < u32::MAX),
            s.restarts(0),
            s.budget_exhausted(0),
            s.raised(1, V),
        ]
    });
    assert_eq!(snapshot, [1, 1, 1, 3, 1, 1, 0, 0, 0]);

    let others = assert_alloc_free("Runtime / Tasklet accessors", || {
        (
            RT.pending(0),
            RT.cpus(),
            RT.config(),
            RT.vector_name(V),
            T.runs(),
            T.coalesced(),
            T.is_scheduled(),
            T.is_disabled(),
            T.is_killed(),
            T.priority(),
            Vector::try_new(7).map(Vector::index),
            Vector::try_new(70).is_err(),
        )
    });
    assert_eq!(
        others,
        (
            1 << 5,
            2,
            NO_TIME_BUDGET,
            Some("V"),
            1,
            1,
            false,
            false,
            false,
            bottomhalf::Priority::Normal,
            Ok(7),
            true
        )
    );
    let _ = RT.drain();
}

// ---------------------------------------------------------------------------
// The kick (drain-thread wake-up) and interrupt entry/exit.

#[test]
fn raise_that_wakes_a_sleeping_drain_thread_does_not_allocate() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    const V: Vector = Vector::new(4);
    RT.register(V, "V", |_| {
        RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let drains = RT.spawn_drain_threads().unwrap();
    let wait_runs = |n: u32| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while RUNS.load(Ordering::SeqCst) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "drain thread never ran"
            );
            std::thread::yield_now();
        }
    };
    for round in 0..3 {
        // Let the drain threads go to sleep, so the kick has someone to
        // wake (futex wake system call).
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_alloc_free("Runtime::raise (kicks the drain thread)", || RT.raise(V));
        wait_runs(2 * round + 1);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(assert_alloc_free(
            "Tasklet::schedule (kicks the drain thread)",
            || T.schedule()
        ));
        wait_runs(2 * round + 2);
    }
    drop(drains);
}

#[test]
fn irq_enter_and_exit_do_not_allocate() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    let outcome = assert_alloc_free("irq_enter / schedule / irq_exit (nested)", || {
        RT.irq_enter();
        T.schedule();
        RT.irq_enter();
        let inner = RT.irq_exit();
        (inner, RT.irq_exit())
    });
    assert_eq!(outcome, (None, Some(bottomhalf::DrainOutcome::Complete)));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    let outcome = assert_alloc_free("irq_enter / irq_exit (nothing pending)", || {
        RT.irq_enter();
        RT.irq_exit()
    });
    assert_eq!(outcome, None);
}

/// The drain itself allocates nothing (its handlers may): a bare-metal
/// bottom half has no allocator.
#[test]
fn drain_with_non_allocating_handlers_does_not_allocate() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET.max_restart(2));
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    static HI: Tasklet = Tasklet::new_hi(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    const V: Vector = Vector::new(9);
    RT.register(V, "V", |_| {
        // Re-raise so the drain restarts and runs out of budget.
        RT.raise(V);
    })
    .unwrap();
    T.schedule();
    HI.schedule();
    RT.raise(V);
    RT.raise(Vector::new(30)); // no handler
    let outcome = assert_alloc_free("Runtime::drain", || RT.drain());
    assert_eq!(outcome, bottomhalf::DrainOutcome::Remaining);
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(RT.stats().runs(0, V), 2, "max_restart(2): two passes");
    let table = RT.stats().to_string(); // Display may allocate (String).
    assert!(table.contains("vector 30"));
}

/// The misuse paths that top halves count instead of panicking allocate
/// nothing either: a backend's CPU index out of range (raise, schedule,
/// irq_enter/irq_exit), an unbalanced `irq_exit`, an unbalanced `enable`,
/// a disable count overflow; and the mailboxes' refused `try_push`.
#[test]
fn counted_misuse_and_refused_pushes_do_not_allocate() {
    use bottomhalf::{Backend, Misuse, MpscMailbox};
    struct Bad;
    impl Backend for Bad {
        fn current_cpu() -> usize {
            9
        }
        fn now_ns() -> u64 {
            0
        }
    }
    static RT: Runtime<Bad, 2> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});
    static U: Tasklet = Tasklet::new(&RT, || {});
    static MPSC: MpscMailbox<u32, 1> = MpscMailbox::new();
    static SPSC: Mailbox<u32, 2> = Mailbox::new();
    let (mut tx, _rx) = SPSC.split().unwrap();
    MPSC.push(0).unwrap();
    tx.push(0).unwrap();
    for _ in 0..511 {
        U.disable_nosync();
    }
    let (a, b) = assert_alloc_free("misuse paths", || {
        RT.irq_enter();
        RT.raise(Vector::new(3));
        let _ = T.schedule();
        let outcome = RT.irq_exit();
        let unbalanced = RT.irq_exit();
        T.enable();
        U.disable_nosync();
        let refused = (MPSC.try_push(1), tx.try_push(1));
        ((outcome, unbalanced), refused)
    });
    assert_eq!(a, (Some(bottomhalf::DrainOutcome::Complete), None));
    assert_eq!(b, (Err(1), Err(1)));
    let s = RT.stats();
    // Every call that looked up the current CPU: irq_enter, raise,
    // schedule, irq_exit (its drain uses the CPU irq_exit looked up), the
    // unbalanced irq_exit, and the two misuse counts of enable and
    // disable_nosync.
    assert_eq!(s.misuse(1, Misuse::CpuOutOfRange), 7);
    assert_eq!(s.misuse(1, Misuse::UnbalancedIrqExit), 1);
    assert_eq!(s.misuse(1, Misuse::UnbalancedEnable), 1);
    assert_eq!(s.misuse(1, Misuse::DisableOverflow), 1);
    assert_eq!((MPSC.refused(), SPSC.refused()), (1, 1));
}

/// The top-half paths of a runtime with two bottom-half levels: a raise
/// at each level (the level lookup), a tasklet scheduled at level 1 and
/// one at a level the runtime lacks (counted), an interrupt exit that
/// drains both levels, and `drain_level` with nothing to do.
#[test]
fn two_level_top_halves_do_not_allocate() {
    use bottomhalf::{Level, Misuse};
    static RT: Runtime<Host, 1, 2> = Runtime::new(NO_TIME_BUDGET);
    static FAST: Tasklet = Tasklet::new(&RT, || {}).at_level(Level::new(1));
    static FAR: Tasklet = Tasklet::new(&RT, || {}).at_level(Level::new(7));
    RT.register_at(Level::new(0), Vector::new(3), "SLOW", |_| {})
        .unwrap();
    RT.register_at(Level::new(1), Vector::new(4), "FAST", |_| {})
        .unwrap();
    let outcome = assert_alloc_free("two-level top halves", || {
        RT.irq_enter();
        RT.raise(Vector::new(3));
        RT.raise(Vector::new(4));
        let _ = FAST.schedule();
        let _ = FAR.schedule();
        let exit = RT.irq_exit();
        (exit, RT.drain_level(Level::new(1)))
    });
    assert_eq!(
        outcome,
        (
            Some(bottomhalf::DrainOutcome::Complete),
            bottomhalf::DrainOutcome::Complete
        )
    );
    assert_eq!(RT.stats().misuse(0, Misuse::LevelOutOfRange), 1);
    assert_eq!((FAST.runs(), FAR.runs()), (1, 1));
    assert_eq!(RT.pending(0), 0);
}

#[test]
fn bottom_half_work_queue_and_cancel_do_not_allocate() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static W: bottomhalf::Work = bottomhalf::Work::new("w", |_| {});
    static V: bottomhalf::Work = bottomhalf::Work::new("v", |_| {});
    let results = assert_alloc_free("Runtime::queue_work / queue_work_on / Work::cancel", || {
        let first = RT.queue_work(&W); // idle: pend, push, raise, kick
        let coalesced = RT.queue_work(&W);
        let other_cpu = RT.queue_work_on(1, &V);
        let out_of_range = RT.queue_work_on(9, &V); // counted misuse
        let cancelled = W.cancel(); // leaves a ghost
        let ghost = RT.queue_work(&W); // re-pends the ghost
        (first, coalesced, other_cpu, out_of_range, cancelled, ghost)
    });
    assert_eq!(results, (true, false, true, false, true, true));
    assert!(RT.drain().is_complete());
    assert_eq!(W.runs(), 1);
    assert!(V.cancel());
}
