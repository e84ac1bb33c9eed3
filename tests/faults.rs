//! Faults on the core runtime's paths, and liveness after each: a handler
//! or a backend's `kick` that panics, a backend that reports a CPU out of
//! range, unbalanced calls, budgets on every drain path, a tasklet found
//! running on another CPU, mailbox counters under concurrency.
//!
//! Every test that could hang waits with a deadline instead, and fails
//! when it passes.

use std::panic::catch_unwind;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottomhalf::{
    Backend, BareMetal, Board, Config, DrainOutcome, DrainThreads, Host, Mailbox, Misuse,
    MpscMailbox, Runtime, Tasklet, Vector, WakeWord,
};

/// How long a test waits for something that must happen before it fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `done` until it holds or `DEADLINE` passes; `true` if it held.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    done()
}

/// Runs `f` on a new thread and returns its result, or `None` if it did
/// not return within `DEADLINE` (a drain looping forever). The thread is
/// left behind; the test fails.
fn within_deadline<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE).ok()
}

// ---------------------------------------------------------------------------
// Item 11: a panicking softirq handler kicks the drain for what it left.

/// A handler panics in a drain called by an ordinary thread while the
/// CPU's drain thread sleeps. The vector raised in the same pass (behind
/// the panicking one) is re-pended by the unwind guard, and the guard
/// kicks: the drain thread runs it, although nobody raises again.
#[test]
fn a_panicking_handler_kicks_the_drain_thread_for_the_rest_of_its_pass() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static DRAINS: Mutex<Option<DrainThreads>> = Mutex::new(None);
    static RUNS_B: AtomicU32 = AtomicU32::new(0);
    const A: Vector = Vector::new(2);
    const B: Vector = Vector::new(3);
    RT.register(A, "PANICS", |_| {
        // The drain threads start while this drain holds the CPU; the
        // thread of CPU 0 finds nothing pending (this pass took A and B)
        // and goes to sleep.
        *DRAINS.lock().unwrap() = Some(RT.spawn_drain_threads().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        panic!("handler A failed");
    })
    .unwrap();
    RT.register(B, "B", |_| {
        RUNS_B.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    RT.raise(A);
    RT.raise(B);
    let caught = catch_unwind(|| {
        let _ = RT.drain();
    });
    assert!(caught.is_err(), "the handler's panic reaches the caller");
    assert!(
        eventually(|| RUNS_B.load(Ordering::SeqCst) == 1),
        "B, raised in the pass that panicked, never ran (pending {:#x})",
        RT.pending(0)
    );
    drop(DRAINS.lock().unwrap().take());
    assert_eq!(RUNS_B.load(Ordering::SeqCst), 1, "B ran once");
    assert_eq!(RT.pending(0), 0);
    // The panicking run is counted: in `runs` (so `raised` adds up) and in
    // `panicked`.
    let s = RT.stats();
    assert_eq!((s.runs(0, A), s.panicked(0, A), s.raised(0, A)), (1, 1, 1));
    assert_eq!((s.runs(0, B), s.panicked(0, B)), (1, 0));
    assert!(s.to_string().contains("panicked"), "{s}");
}

// ---------------------------------------------------------------------------
// Item 12: a backend's kick that panics after the tasklet was linked.

/// A backend whose `kick` panics while `KICK_PANICS` is set (application
/// code on bare metal: a `pend_drain` that fails).
struct PanickyKick;

static KICK_PANICS: AtomicBool = AtomicBool::new(false);

impl Backend for PanickyKick {
    fn current_cpu() -> usize {
        0
    }
    fn now_ns() -> u64 {
        0
    }
    fn kick(_cpu: usize, _level: bottomhalf::Level, _wake: &WakeWord) {
        if KICK_PANICS.swap(false, Ordering::SeqCst) {
            panic!("kick failed");
        }
    }
}

/// The kick panics after `schedule` linked the tasklet: the tasklet stays
/// pending and linked once, so the next `schedule` coalesces and one drain
/// runs it exactly once (before the fix: the count was cleared while the
/// tasklet stayed linked, the next `schedule` linked it a second time, and
/// the list became a cycle the drain walked forever).
#[test]
fn a_panicking_kick_in_schedule_leaves_the_tasklet_pending_once() {
    static RT: Runtime<PanickyKick, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || {});
    KICK_PANICS.store(true, Ordering::SeqCst);
    assert!(catch_unwind(|| T.schedule()).is_err(), "the kick panicked");
    assert!(T.is_scheduled(), "linked, so still pending");
    assert!(!T.schedule(), "coalesced with the linked run");
    let outcome = within_deadline(|| RT.drain());
    assert_eq!(outcome, Some(DrainOutcome::Complete), "the drain hung");
    assert_eq!(T.runs(), 1);
    assert_eq!(T.coalesced(), 1);
    // Liveness: the tasklet schedules and runs as usual afterwards.
    assert!(T.schedule());
    assert_eq!(within_deadline(|| RT.drain()), Some(DrainOutcome::Complete));
    assert_eq!(T.runs(), 2);
}

/// The same through `enable`: the kick panics after the unparking
/// `enable` linked the held run; the tasklet stays enabled and pending,
/// and runs exactly once.
#[test]
fn a_panicking_kick_in_enable_leaves_the_tasklet_pending_once() {
    static RT: Runtime<PanickyKick, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || {});
    T.disable_nosync();
    assert!(T.schedule());
    assert_eq!(RT.drain(), DrainOutcome::Complete); // parks it
    KICK_PANICS.store(true, Ordering::SeqCst);
    assert!(catch_unwind(|| T.enable()).is_err(), "the kick panicked");
    assert!(!T.is_disabled(), "the enable took effect");
    assert!(T.is_scheduled());
    assert!(!T.schedule(), "coalesced with the linked run");
    let outcome = within_deadline(|| RT.drain());
    assert_eq!(outcome, Some(DrainOutcome::Complete), "the drain hung");
    assert_eq!(T.runs(), 1);
    assert!(T.schedule());
    assert_eq!(within_deadline(|| RT.drain()), Some(DrainOutcome::Complete));
    assert_eq!(T.runs(), 2);
}

// ---------------------------------------------------------------------------
// Item 14: budgets count passes, as Linux's MAX_SOFTIRQ_RESTART does.

/// `Config::DEFAULT` allows 10 passes in all, as Linux's
/// `MAX_SOFTIRQ_RESTART = 10`: a handler that re-raises itself runs 10
/// times per drain, then the drain stops with work left.
#[test]
fn the_default_budget_is_ten_passes_in_all() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
    const POLL: Vector = Vector::new(5);
    RT.register(POLL, "POLL", |_| RT.raise(POLL)).unwrap();
    RT.raise(POLL);
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    let s = RT.stats();
    println!(
        "default budget: {} passes, {} restarts",
        s.runs(0, POLL),
        s.restarts(0)
    );
    assert_eq!(s.runs(0, POLL), 10);
    assert_eq!(s.restarts(0), 9);
    assert_eq!(s.budget_exhausted(0), 1);
}

// ---------------------------------------------------------------------------
// Item 15: a tasklet found running on another CPU is handed off, not spun
// on.

/// A ~100 ms tasklet runs on CPU 1's drain thread; a thread on CPU 2
/// schedules it meanwhile, which wakes CPU 2's drain thread. That drain
/// finds the tasklet running elsewhere. It must not spin re-queuing it
/// (before the fix: a restart per pass and a budget exhaustion per drain,
/// hundreds of thousands of restarts in 100 ms); the tasklet runs exactly
/// once more, after the first run, never concurrently.
#[test]
fn a_tasklet_running_on_another_cpu_is_not_spun_on() {
    static RT: Runtime<Host, 3> = Runtime::new(Config::DEFAULT);
    static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    static STARTED: AtomicBool = AtomicBool::new(false);
    static SLOW: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        STARTED.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
    let drains = RT.spawn_drain_threads().unwrap();
    std::thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(SLOW.schedule()); // wakes CPU 1's drain thread
    })
    .join()
    .unwrap();
    assert!(eventually(|| STARTED.load(Ordering::SeqCst)));
    std::thread::spawn(|| {
        let _cpu2 = RT.bind_current_thread(2).unwrap();
        assert!(SLOW.schedule(), "the running tasklet is not pending");
    })
    .join()
    .unwrap();
    assert!(
        eventually(|| SLOW.runs() == 2),
        "the schedule on CPU 2 was lost ({} runs)",
        SLOW.runs()
    );
    // Let any spinning drain show itself before counting.
    std::thread::sleep(Duration::from_millis(20));
    drop(drains);
    let s = RT.stats();
    let restarts: u32 = (0..3).map(|c| s.restarts(c)).sum();
    let exhausted: u32 = (0..3).map(|c| s.budget_exhausted(c)).sum();
    println!(
        "tasklet running on another CPU: {restarts} restarts, {exhausted} budget exhaustions \
         (CPU 1: {}, CPU 2: {})",
        s.restarts(1),
        s.restarts(2)
    );
    assert_eq!(SLOW.runs(), 2, "exactly once more");
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0, "ran concurrently");
    // CPU 2's drain handed the tasklet off and ended: no restart, no
    // exhausted budget there.
    assert_eq!(s.restarts(2), 0, "CPU 2's drain spun");
    assert_eq!(s.budget_exhausted(2), 0, "CPU 2's drain spun");
    // CPU 1 runs it once more: a restart of the drain that ran it, or,
    // since that 100 ms run spent the 2 ms time budget, one budget
    // exhaustion that hands the pass to CPU 1's next drain.
    assert!(
        restarts + exhausted <= 2,
        "{restarts} restarts: a drain spun"
    );
}

// ---------------------------------------------------------------------------
// Item 16: mailbox counters.

/// `Mailbox::high_water` under a producer and a consumer on two threads:
/// never above the capacity (before the fix it read the push count before
/// the pop count, and a pop in between made it wrap to near `u32::MAX`).
#[test]
fn mailbox_high_water_never_exceeds_the_capacity_under_concurrency() {
    static MB: Mailbox<u32, 8> = Mailbox::new();
    static STOP: AtomicBool = AtomicBool::new(false);
    let (mut tx, mut rx) = MB.split().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut i = 0u32;
            while !STOP.load(Ordering::Relaxed) {
                if tx.push(i).is_ok() {
                    i = i.wrapping_add(1);
                }
            }
        });
        s.spawn(move || {
            while !STOP.load(Ordering::Relaxed) {
                let _ = rx.pop();
            }
        });
        let start = Instant::now();
        let mut worst = 0;
        let mut samples = 0u64;
        while start.elapsed() < Duration::from_millis(500) {
            let hw = MB.high_water();
            worst = worst.max(hw);
            samples += 1;
            if hw as usize > Mailbox::<u32, 8>::CAPACITY {
                break;
            }
        }
        STOP.store(true, Ordering::Relaxed);
        println!("mailbox high water: worst {worst} over {samples} samples, capacity 7");
        assert!(
            worst as usize <= Mailbox::<u32, 8>::CAPACITY,
            "high_water() returned {worst} > capacity 7"
        );
    });
}

/// Producers that retry with `try_push` until their item is in: every
/// item is delivered, none is counted as dropped, the retried attempts are
/// counted as refused; then a producer that gives up with a last `push`
/// on a full mailbox is counted as one drop.
#[test]
fn mpsc_retried_pushes_are_refused_not_dropped() {
    static MB: MpscMailbox<u32, 4> = MpscMailbox::new();
    const PRODUCERS: u32 = 2;
    const EACH: u32 = if cfg!(miri) { 500 } else { 20_000 };
    // Set if the consumer gives up, so the producers stop retrying and the
    // scope can end (a failing test must not hang).
    static GIVE_UP: AtomicBool = AtomicBool::new(false);
    let mut seen = vec![0u8; (PRODUCERS * EACH) as usize];
    let mut got = 0;
    std::thread::scope(|s| {
        for p in 0..PRODUCERS {
            s.spawn(move || {
                for i in 0..EACH {
                    let mut item = p * EACH + i;
                    while let Err(back) = MB.try_push(item) {
                        if GIVE_UP.load(Ordering::Relaxed) {
                            return;
                        }
                        item = back;
                        // Yield, not spin: on a loaded 2-core machine two
                        // spinning producers can starve the consumer.
                        std::thread::yield_now();
                    }
                }
            });
        }
        let mut rx = MB.consumer().unwrap();
        let start = Instant::now();
        while got < PRODUCERS * EACH && start.elapsed() < 6 * DEADLINE {
            match rx.pop() {
                Some(item) => {
                    seen[item as usize] += 1;
                    got += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        GIVE_UP.store(true, Ordering::Relaxed);
    });
    assert_eq!(got, PRODUCERS * EACH, "only {got} items arrived");
    assert!(seen.iter().all(|&n| n == 1), "an item was lost or doubled");
    println!(
        "mpsc retrying producers: {} delivered, {} refused attempts, {} dropped, high water {}",
        PRODUCERS * EACH,
        MB.refused(),
        MB.dropped(),
        MB.high_water()
    );
    assert_eq!(MB.dropped(), 0, "retried items are not drops");
    assert!(MB.high_water() <= 4);
    // Giving up: fill it, then a last `push` that fails is the one drop.
    for i in 0..4 {
        MB.push(i).unwrap();
    }
    let refused = MB.refused();
    assert_eq!(MB.try_push(9), Err(9));
    assert_eq!(MB.refused(), refused + 1);
    assert_eq!(MB.push(9), Err(9));
    assert_eq!(MB.dropped(), 1);
    // Liveness: it still takes items once there is room.
    let mut rx = MB.consumer().unwrap();
    assert_eq!(rx.pop(), Some(0));
    assert_eq!(MB.push(10), Ok(()));
}

/// The same split on the single-producer `Mailbox`.
#[test]
fn spsc_try_push_is_refused_and_push_is_dropped() {
    static MB: Mailbox<u8, 2> = Mailbox::new();
    let (mut tx, mut rx) = MB.split().unwrap();
    tx.push(1).unwrap();
    assert_eq!(tx.try_push(2), Err(2));
    assert_eq!((MB.refused(), MB.dropped()), (1, 0));
    assert_eq!(tx.push(2), Err(2));
    assert_eq!((MB.refused(), MB.dropped()), (1, 1));
    assert_eq!(rx.pop(), Some(1));
    assert_eq!(tx.try_push(2), Ok(()));
    assert_eq!(rx.pop(), Some(2));
    assert_eq!(MB.high_water(), 1);
}

// ---------------------------------------------------------------------------
// Item 10: top-half paths are total; misuse is counted.

/// A board that reports core 7 on a two-core runtime. Every top-half path
/// lands on CPU 7 % 2 = 1 instead of panicking, and counts the misuse
/// there; the drain of that CPU (here: the pended drain interrupt, which
/// the board routes to the same bad index) runs the work.
#[test]
fn a_cpu_index_out_of_range_is_folded_and_counted() {
    struct BadCore;
    static PENDED: AtomicU32 = AtomicU32::new(0);
    impl Board for BadCore {
        fn cpu() -> usize {
            7
        }
        fn pend_drain(cpu: usize, _level: bottomhalf::Level) {
            assert_eq!(cpu, 1, "kicked the folded CPU");
            PENDED.fetch_add(1, Ordering::SeqCst);
        }
    }
    static RT: Runtime<BareMetal<BadCore>, 2> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    const V: Vector = Vector::new(3);
    RT.register(V, "V", |cpu| {
        assert_eq!(cpu, 1);
        RUNS.fetch_add(100, Ordering::SeqCst);
    })
    .unwrap();
    let calls = catch_unwind(|| {
        RT.irq_enter();
        RT.raise(V);
        assert!(T.schedule());
        T.disable_nosync();
        T.enable();
        RT.irq_exit()
    });
    assert_eq!(
        calls.ok(),
        Some(Some(DrainOutcome::Complete)),
        "a top half panicked"
    );
    assert_eq!(RUNS.load(Ordering::SeqCst), 101, "the work ran");
    assert_eq!(PENDED.load(Ordering::SeqCst), 1);
    let s = RT.stats();
    let folded = s.misuse(1, Misuse::CpuOutOfRange);
    println!("CPU index 7 on a 2-CPU runtime: {folded} calls folded onto CPU 1");
    // irq_enter, raise, schedule and irq_exit, whose drain uses the CPU
    // irq_exit looked up (the tasklet's `disable_nosync` touches no CPU;
    // its balanced `enable` does not link).
    assert_eq!(folded, 4);
    assert_eq!(s.misuse(0, Misuse::CpuOutOfRange), 0);
    assert_eq!(s.runs(1, V), 1);
    assert!(s.to_string().contains("CPU out of range"), "{s}");
}

/// `irq_exit` without `irq_enter`, `enable` without `disable`, and a
/// 512th nested `disable_nosync`: each returns, is counted, and is
/// ignored; afterwards everything works as before.
#[test]
fn unbalanced_calls_are_counted_and_ignored() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    let misuse = |m| RT.stats().misuse(0, m);

    assert_eq!(RT.irq_exit(), None);
    assert_eq!(RT.irq_exit(), None);
    assert_eq!(misuse(Misuse::UnbalancedIrqExit), 2);
    RT.irq_enter();
    assert!(T.schedule());
    assert_eq!(
        RT.irq_exit(),
        Some(DrainOutcome::Complete),
        "pairs still match"
    );
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);

    T.enable();
    assert_eq!(misuse(Misuse::UnbalancedEnable), 1);
    assert!(!T.is_disabled());

    for _ in 0..511 {
        T.disable_nosync();
    }
    assert_eq!(misuse(Misuse::DisableOverflow), 0);
    T.disable_nosync();
    assert_eq!(misuse(Misuse::DisableOverflow), 1);
    assert!(T.is_disabled() && !T.is_killed(), "the count did not wrap");
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "still disabled");
    for _ in 0..511 {
        T.enable();
    }
    assert!(!T.is_disabled());
    assert!(RT.drain().is_complete());
    assert_eq!(RUNS.load(Ordering::SeqCst), 2, "the held run ran");
    T.enable(); // the overflowing disable's enable
    assert_eq!(misuse(Misuse::UnbalancedEnable), 2);
    let table = RT.stats().to_string();
    assert!(table.contains("unbalanced enable"), "{table}");
}
