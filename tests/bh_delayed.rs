//! Delayed work in a runtime's bottom half (`Runtime::queue_delayed_work`,
//! `mod_delayed_work`): deadline order, past deadlines, schedule keeps a
//! deadline, reschedule moves it, cancel, flush fires at once, re-armed
//! while running runs again after, the backend's deadline hook, drain
//! threads, liveness after a panic.
//!
//! A fake backend with a clock the test sets (`NOW`) and a recording
//! deadline hook keeps the tests deterministic; they share that clock, so
//! they serialize on `SERIAL`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottomhalf::{Backend, Config, DelayedWork, Host, Level, Runtime, Work};

static NOW: AtomicU64 = AtomicU64::new(1_000);
static ARMED: AtomicU64 = AtomicU64::new(0);
static ARMS: AtomicU32 = AtomicU32::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

struct Fake;
impl Backend for Fake {
    fn current_cpu() -> usize {
        0
    }
    fn now_ns() -> u64 {
        NOW.load(Ordering::SeqCst)
    }
    fn arm_timer(_cpu: usize, _level: Level, deadline_ns: u64) {
        ARMED.store(deadline_ns, Ordering::SeqCst);
        ARMS.fetch_add(1, Ordering::SeqCst);
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// Sets the clock to `t` and delivers a timer interrupt, then drains.
fn at<const N: usize>(rt: &'static Runtime<Fake, N>, t: u64) {
    NOW.store(t, Ordering::SeqCst);
    rt.timer_fired();
    assert!(rt.drain().is_complete());
}

/// A log of item ids in run order.
static LOG: Mutex<Vec<u32>> = Mutex::new(Vec::new());
fn log(id: &'static u32, _: &Work) {
    LOG.lock().unwrap().push(*id);
}
fn take_log() -> Vec<u32> {
    std::mem::take(&mut *LOG.lock().unwrap())
}

#[test]
fn timers_fire_in_deadline_order_ties_in_queue_order() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static A: DelayedWork = DelayedWork::with_context("a", &1, log);
    static B: DelayedWork = DelayedWork::with_context("b", &2, log);
    static C: DelayedWork = DelayedWork::with_context("c", &3, log);
    static D: DelayedWork = DelayedWork::with_context("d", &4, log);
    take_log();
    NOW.store(1_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&A, ns(300)));
    assert!(RT.queue_delayed_work(&B, ns(100)));
    assert!(RT.queue_delayed_work(&C, ns(200)));
    assert!(RT.queue_delayed_work(&D, ns(100)));
    assert!(RT.drain().is_complete());
    assert_eq!(take_log(), Vec::<u32>::new(), "ran before the deadline");
    at(&RT, 1_150);
    assert_eq!(take_log(), [2, 4]);
    at(&RT, 2_000);
    assert_eq!(take_log(), [3, 1]);
    assert!(!A.is_pending() && !C.is_pending());
}

#[test]
fn a_deadline_in_the_past_runs_at_the_next_drain() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static P: DelayedWork = DelayedWork::new("p", |_| {});
    assert!(RT.queue_delayed_work(&P, Duration::ZERO));
    assert_eq!(RT.pending(0), 1 << 6);
    assert!(RT.drain().is_complete());
    assert_eq!(P.runs(), 1);
}

#[test]
fn schedule_keeps_the_existing_deadline() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static K: DelayedWork = DelayedWork::new("k", |_| {});
    NOW.store(10_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&K, ns(500)));
    assert!(RT.drain().is_complete());
    assert!(!RT.queue_delayed_work(&K, ns(5)), "pending: coalesced");
    at(&RT, 10_100);
    assert_eq!(K.runs(), 0, "the second schedule moved the deadline");
    at(&RT, 10_500);
    assert_eq!(K.runs(), 1);
}

#[test]
fn reschedule_moves_the_deadline_earlier_and_later() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static E: DelayedWork = DelayedWork::new("e", |_| {});
    static L: DelayedWork = DelayedWork::new("l", |_| {});
    NOW.store(20_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&E, ns(500)));
    assert!(RT.queue_delayed_work(&L, ns(50)));
    assert!(RT.drain().is_complete()); // both on the timer list now
                                       // From a "top half": earlier and later.
    assert!(RT.mod_delayed_work(&E, ns(10)));
    assert!(RT.mod_delayed_work(&L, ns(800)));
    at(&RT, 20_020);
    assert_eq!((E.runs(), L.runs()), (1, 0));
    at(&RT, 20_500);
    assert_eq!(L.runs(), 0, "L ran at its old deadline");
    at(&RT, 20_800);
    assert_eq!(L.runs(), 1);
    // Rescheduling an idle item queues it.
    assert!(!RT.mod_delayed_work(&E, ns(5)));
    at(&RT, 20_805);
    assert_eq!(E.runs(), 2);
}

#[test]
fn cancel_of_a_pending_delayed_item_leaves_nothing_to_run() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static X: DelayedWork = DelayedWork::new("x", |_| {});
    NOW.store(30_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&X, ns(100)));
    assert!(RT.drain().is_complete());
    assert!(X.cancel());
    assert!(!X.is_pending() && !X.is_timer_pending());
    at(&RT, 30_200);
    assert_eq!(X.runs(), 0, "a cancelled timer ran");
    // Queued again while its ghost may still be linked: runs at the new
    // deadline, once.
    assert!(RT.queue_delayed_work(&X, ns(100)));
    assert!(X.cancel());
    assert!(RT.queue_delayed_work(&X, ns(100)));
    at(&RT, 30_250);
    assert_eq!(X.runs(), 0);
    at(&RT, 30_300);
    assert_eq!(X.runs(), 1);
}

#[test]
fn flush_of_a_delayed_item_fires_it_at_once() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static F: DelayedWork = DelayedWork::new("f", |_| {});
    NOW.store(40_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&F, Duration::from_secs(3600)));
    assert!(RT.drain().is_complete());
    assert_eq!(F.flush(), Ok(true));
    assert_eq!(F.runs(), 1);
    assert_eq!(F.flush(), Ok(false));
}

#[test]
fn rearmed_while_running_it_runs_again_after() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static RUNNING_NOW: AtomicU32 = AtomicU32::new(0);
    static R: DelayedWork = DelayedWork::new("r", |w| {
        assert_eq!(RUNNING_NOW.fetch_add(1, Ordering::SeqCst), 0, "ran nested");
        if w.runs() == 0 {
            // Re-armed from its own run.
            assert!(RT.queue_delayed_work(&R, Duration::from_nanos(100)));
            assert!(R.is_pending());
        }
        RUNNING_NOW.fetch_sub(1, Ordering::SeqCst);
    });
    NOW.store(50_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&R, ns(10)));
    at(&RT, 50_010);
    assert_eq!(R.runs(), 1);
    assert!(R.is_timer_pending(), "the re-arm was lost");
    at(&RT, 50_050);
    assert_eq!(R.runs(), 1, "the second instance ran before its deadline");
    at(&RT, 50_110);
    assert_eq!(R.runs(), 2);
    assert!(!R.is_pending());
}

#[test]
fn the_hook_sees_the_earliest_deadline() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static H1: DelayedWork = DelayedWork::new("h1", |_| {});
    static H2: DelayedWork = DelayedWork::new("h2", |_| {});
    NOW.store(60_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&H1, ns(300)));
    assert!(RT.drain().is_complete());
    assert_eq!(ARMED.load(Ordering::SeqCst), 60_300);
    assert!(RT.queue_delayed_work(&H2, ns(100)));
    assert!(RT.drain().is_complete());
    assert_eq!(ARMED.load(Ordering::SeqCst), 60_100);
    let arms = ARMS.load(Ordering::SeqCst);
    assert!(RT.drain().is_complete());
    assert_eq!(ARMS.load(Ordering::SeqCst), arms, "re-armed with no change");
    at(&RT, 60_100);
    assert_eq!(ARMED.load(Ordering::SeqCst), 60_300);
    // Rescheduling H1 later moves the hook.
    assert!(RT.mod_delayed_work(&H1, ns(900)));
    assert!(RT.drain().is_complete());
    assert_eq!(ARMED.load(Ordering::SeqCst), 61_000);
    at(&RT, 61_000);
    assert_eq!(
        ARMED.load(Ordering::SeqCst),
        u64::MAX,
        "nothing left: disarmed"
    );
    assert_eq!((H1.runs(), H2.runs()), (1, 1));
}

#[test]
fn a_panicking_delayed_item_strands_nothing() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static BOOM: DelayedWork = DelayedWork::new("boom", |_| panic!("delayed boom"));
    static AFTER: DelayedWork = DelayedWork::new("after", |_| {});
    static LATER: DelayedWork = DelayedWork::new("later", |_| {});
    NOW.store(70_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&BOOM, ns(10)));
    assert!(RT.queue_delayed_work(&AFTER, ns(20)));
    assert!(RT.queue_delayed_work(&LATER, ns(500)));
    assert!(RT.drain().is_complete());
    NOW.store(70_100, Ordering::SeqCst);
    RT.timer_fired();
    assert!(catch_unwind(AssertUnwindSafe(|| RT.drain())).is_err());
    assert_eq!(BOOM.runs(), 1);
    assert!(!BOOM.is_running());
    let _ = RT.drain();
    assert_eq!(AFTER.runs(), 1, "the item behind the panic never ran");
    at(&RT, 70_500);
    assert_eq!(LATER.runs(), 1, "a later timer was lost");
    // The panicking item can be queued again.
    assert!(RT.queue_delayed_work(&BOOM, Duration::ZERO));
    assert!(BOOM.cancel());
}

#[test]
fn host_drain_threads_fire_a_timer_without_an_explicit_drain() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: DelayedWork = DelayedWork::new("t", |_| {});
    let threads = RT.spawn_drain_threads().unwrap();
    let t0 = Instant::now();
    assert!(RT.queue_delayed_work(&T, Duration::from_millis(30)));
    while T.runs() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the timer never fired"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = t0.elapsed();
    println!("host drain thread fired a 30 ms timer after {waited:?}");
    assert!(
        waited >= Duration::from_millis(30),
        "fired early: {waited:?}"
    );
    drop(threads);
}

#[test]
fn a_ghost_on_another_cpu_scheduled_with_a_delay_runs_where_it_is_linked() {
    let _s = serial();
    static RT: Runtime<Fake, 2> = Runtime::new(Config::DEFAULT);
    static G: DelayedWork = DelayedWork::new("g", |_| {});
    NOW.store(80_000, Ordering::SeqCst);
    // A plain queue on CPU 0 (whose level never had delayed work), then a
    // cancel: a ghost linked on CPU 0's work queue.
    assert!(RT.queue_work(G.work()));
    assert!(G.cancel());
    // Scheduled on CPU 1 with a delay: covered where the ghost is linked.
    assert!(RT.queue_delayed_work_on(1, &G, ns(100)));
    assert!(RT.drain().is_complete()); // CPU 0 (the fake CPU)
    assert!(G.is_timer_pending(), "the node was lost");
    at(&RT, 80_050);
    assert_eq!(G.runs(), 0, "ran before its deadline");
    at(&RT, 80_100);
    assert_eq!(G.runs(), 1);
    assert!(!G.is_pending());
}

/// A cancel of a waiting timer pokes its drain (Linux's `del_timer`): the
/// next drain's walk drops the ghost (nothing runs) and disarms the hook,
/// before the old deadline; the item is idle again (a new queue pushes it
/// afresh).
#[test]
fn the_walk_drops_a_cancelled_timer_and_disarms_the_hook() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static G: DelayedWork = DelayedWork::new("g", |_| {});
    NOW.store(80_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&G, ns(500)));
    assert!(RT.drain().is_complete());
    assert_eq!(ARMED.load(Ordering::SeqCst), 80_500);
    assert!(G.cancel());
    assert_eq!(RT.pending(0), 1 << 6, "the cancel did not poke the drain");
    assert!(RT.drain().is_complete());
    assert_eq!(ARMED.load(Ordering::SeqCst), u64::MAX, "armed for a ghost");
    assert_eq!(RT.next_timer_deadline(), None);
    at(&RT, 80_500);
    assert_eq!(G.runs(), 0, "a cancelled timer ran");
    assert_eq!(
        ARMED.load(Ordering::SeqCst),
        u64::MAX,
        "still armed for a ghost"
    );
    assert_eq!(RT.pending(0), 0);
    // Idle: queued again, it is pushed and filed anew and runs once.
    assert!(RT.queue_delayed_work(&G, ns(10)));
    at(&RT, 80_510);
    assert_eq!(G.runs(), 1);
    assert!(!G.is_pending());
}

/// A delayed item cancelled on the timer list and then queued with
/// `queue_work` (no delay) runs at the next drain, where its ghost is
/// linked: the queue pokes that drain, whose walk finds it pending without
/// a timer (due at once). The other timer keeps its deadline.
#[test]
fn a_cancelled_timer_queued_without_a_delay_runs_at_the_next_drain() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static IDS: [u32; 2] = [1, 2];
    static P: DelayedWork = DelayedWork::with_context("p", &IDS[0], log);
    static Q: DelayedWork = DelayedWork::with_context("q", &IDS[1], log);
    let _ = take_log();
    NOW.store(90_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&P, ns(1_000)));
    assert!(RT.queue_delayed_work(&Q, ns(2_000)));
    assert!(RT.drain().is_complete());
    assert!(P.cancel());
    assert!(RT.queue_work(P.work()), "a ghost's queue covers it");
    assert_ne!(RT.pending(0), 0, "the queue did not poke the drain");
    assert!(RT.drain().is_complete());
    assert_eq!(
        take_log(),
        vec![1],
        "the ghost queued without a delay did not run at once"
    );
    assert!(!P.is_pending());
    assert_eq!(ARMED.load(Ordering::SeqCst), 92_000);
    at(&RT, 92_000);
    assert_eq!(take_log(), vec![2]);
}

/// `timer_fired` raises vector 6 only at the levels of this CPU that have
/// an armed deadline.
#[test]
fn timer_fired_raises_the_levels_with_a_deadline() {
    let _s = serial();
    static RT: Runtime<Fake, 1, 2> = Runtime::new(Config::DEFAULT);
    static U: DelayedWork = DelayedWork::new("u", |_| {}).at_level(Level::new(1));
    NOW.store(100_000, Ordering::SeqCst);
    RT.timer_fired();
    assert_eq!(RT.pending(0), 0, "no deadline anywhere: nothing raised");
    assert!(RT.queue_delayed_work(&U, ns(100)));
    assert!(RT.drain().is_complete());
    RT.timer_fired();
    assert_eq!(RT.pending_at(0, Level::new(0)), 0);
    assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 6);
    NOW.store(100_100, Ordering::SeqCst);
    assert!(RT.drain().is_complete());
    assert_eq!(U.runs(), 1);
}

/// `DelayedWork::flush` of a pending instance returns `Ok(true)` even when
/// a drain thread runs the fired timer before the flush starts waiting
/// (new-user review: it returned `Ok(false)`, "idle", in up to 98 % of
/// rounds when the item waited on another CPU). Both the flushing
/// thread's CPU and another one, with the drain threads running.
#[test]
fn delayed_flush_of_a_pending_timer_reports_it_while_drain_threads_race() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static F: DelayedWork = DelayedWork::new("f", |_| {});
    let rounds = if cfg!(miri) { 6 } else { 2_000 };
    let threads = RT.spawn_drain_threads().unwrap();
    let _cpu0 = RT.bind_current_thread(0).unwrap();
    for round in 0..rounds {
        let cpu = round % 2;
        let before = F.runs();
        assert!(RT.queue_delayed_work_on(cpu, &F, Duration::from_secs(3600)));
        assert!(F.is_pending());
        assert_eq!(
            F.flush(),
            Ok(true),
            "round {round}: a pending timer flushed as idle"
        );
        assert_eq!(F.runs(), before + 1, "round {round}");
    }
    drop(threads);
}

/// Without the hook (`timer_fired` never called): a drain at or after the
/// deadline fires the timer (new-user review: a program that drains in
/// its own loop never ran its delayed work). The drain sees the armed
/// deadline, not only a raised vector 6.
#[test]
fn a_drain_after_the_deadline_fires_the_timer_without_the_hook() {
    let _s = serial();
    static RT: Runtime<Fake, 1, 2> = Runtime::new(Config::DEFAULT);
    static P: DelayedWork = DelayedWork::new("p", |_| {});
    static Q: DelayedWork = DelayedWork::new("q", |_| {}).at_level(Level::new(1));
    NOW.store(110_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&P, ns(100)));
    assert!(RT.queue_delayed_work(&Q, ns(200)));
    assert!(RT.drain().is_complete());
    NOW.store(110_099, Ordering::SeqCst);
    let passes = RT.stats().runs(0, bottomhalf::Vector::TASKLET);
    assert!(RT.drain().is_complete());
    assert_eq!((P.runs(), Q.runs()), (0, 0), "fired early");
    assert_eq!(
        RT.stats().runs(0, bottomhalf::Vector::TASKLET),
        passes,
        "a drain before the deadline ran a pass of vector 6"
    );
    NOW.store(110_100, Ordering::SeqCst);
    assert!(RT.drain().is_complete());
    assert_eq!((P.runs(), Q.runs()), (1, 0));
    // One level's own drain fires that level's timer.
    NOW.store(110_200, Ordering::SeqCst);
    assert!(RT.drain_level(Level::new(0)).is_complete());
    assert_eq!(Q.runs(), 0, "a level-0 drain ran a level-1 timer");
    assert!(RT.drain_level(Level::new(1)).is_complete());
    assert_eq!(Q.runs(), 1);
    assert_eq!(RT.pending(0), 0);
}

/// `Work::flush` of a delayed item on a `Host` runtime without drain
/// threads waits for the timer (it drains this CPU, and a drain after the
/// deadline fires it) instead of spinning for ever (new-user review).
#[test]
fn flush_waits_out_a_timer_on_a_host_without_drain_threads() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
    static D: DelayedWork = DelayedWork::new("d", |_| {});
    let t0 = Instant::now();
    assert!(RT.queue_delayed_work(&D, Duration::from_millis(20)));
    assert_eq!(D.work().flush(), Ok(true));
    assert_eq!(D.runs(), 1);
    assert!(t0.elapsed() >= Duration::from_millis(20), "ran early");
}

/// The hook is called only when the earliest deadline changes: a pass of
/// vector 6 that changes nothing does not call it, with deadlines past
/// 2^32 ns (the halves the drain keeps) as well as small ones.
#[test]
fn a_pass_that_changes_no_deadline_does_not_call_the_hook() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static LONG: DelayedWork = DelayedWork::new("long", |_| {});
    NOW.store(120_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&LONG, Duration::from_secs(3600)));
    assert!(RT.drain().is_complete());
    let deadline = 120_000 + 3_600_000_000_000;
    assert!(deadline > u64::from(u32::MAX));
    assert_eq!(ARMED.load(Ordering::SeqCst), deadline);
    let arms = ARMS.load(Ordering::SeqCst);
    for _ in 0..3 {
        RT.raise(bottomhalf::Vector::TASKLET);
        assert!(RT.drain().is_complete());
    }
    assert_eq!(ARMS.load(Ordering::SeqCst), arms, "re-armed with no change");
    // `timer_fired` before the deadline: a pass, no run, no new arming.
    RT.timer_fired();
    assert!(RT.drain().is_complete());
    assert_eq!((LONG.runs(), ARMS.load(Ordering::SeqCst)), (0, arms));
    assert!(LONG.cancel());
}

/// A delayed item's function reaches its `DelayedWork` with `from_work`
/// and reads its state there (here: its timer is no longer pending while
/// it runs); a plain item's gets `None`. The `Debug` form names it.
#[test]
fn from_work_gives_the_function_its_delayed_item() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT);
    static SAW: AtomicU32 = AtomicU32::new(0);
    static ME: DelayedWork = DelayedWork::new("me", |w| {
        let d = DelayedWork::from_work(w).expect("a delayed item's work");
        assert!(core::ptr::eq(d, &ME));
        assert!(!d.is_timer_pending());
        SAW.fetch_add(1, Ordering::SeqCst);
    });
    static PLAIN: Work = Work::new("plain", |w| {
        assert!(DelayedWork::from_work(w).is_none());
        SAW.fetch_add(10, Ordering::SeqCst);
    });
    NOW.store(130_000, Ordering::SeqCst);
    assert!(RT.queue_delayed_work(&ME, ns(5)));
    assert!(RT.queue_work(&PLAIN));
    assert!(RT.drain().is_complete());
    at(&RT, 130_005);
    assert_eq!(SAW.load(Ordering::SeqCst), 11);
    let shown = format!("{ME:?}");
    assert!(
        shown.starts_with("DelayedWork(") && shown.contains("me"),
        "{shown}"
    );
}

/// `mod_delayed_work` moves any pending instance to the new deadline, as
/// Linux's does: one queued with `queue_work` (new-user review: it ran at
/// once and the call said its timer moved), and one whose timer fired and
/// waits to run (the drain stopped after the pass that fired it). Each
/// runs once, at the new deadline.
#[test]
fn mod_delayed_work_moves_an_instance_queued_to_run_back_to_a_timer() {
    let _s = serial();
    static RT: Runtime<Fake, 1> = Runtime::new(Config::DEFAULT.max_restart(1));
    static X: DelayedWork = DelayedWork::new("x", |_| {});
    NOW.store(140_000, Ordering::SeqCst);
    // Queued to run, without a delay.
    assert!(RT.queue_work(X.work()));
    assert!(RT.mod_delayed_work(&X, ns(50)), "it was pending");
    assert!(X.is_timer_pending());
    while RT.pending(0) != 0 {
        let _ = RT.drain();
    }
    assert_eq!(X.runs(), 0, "ran before its new deadline");
    NOW.store(140_050, Ordering::SeqCst);
    while X.runs() == 0 {
        let _ = RT.drain();
        assert!(X.runs() <= 1);
        assert!(RT.pending(0) != 0 || X.runs() == 1, "stranded");
    }
    assert!(!X.is_pending());
    // Its timer fired, it waits to run: the one-pass drain stops there.
    assert!(RT.queue_delayed_work(&X, ns(10)));
    while RT.pending(0) != 0 {
        let _ = RT.drain();
    }
    NOW.store(140_060, Ordering::SeqCst);
    assert_eq!(
        RT.drain(),
        bottomhalf::DrainOutcome::Remaining,
        "fired, not run yet"
    );
    assert!(X.is_pending() && !X.is_timer_pending());
    assert!(RT.mod_delayed_work(&X, ns(100)));
    while RT.pending(0) != 0 {
        let _ = RT.drain();
    }
    assert_eq!(X.runs(), 1, "the fired instance was not moved back");
    NOW.store(140_160, Ordering::SeqCst);
    for _ in 0..4 {
        let _ = RT.drain();
    }
    assert_eq!(X.runs(), 2);
    assert!(!X.is_pending());
}

/// `mod_delayed_work_on` queues an idle item on the named CPU (`false`),
/// then moves the pending one (`true`); a CPU out of range is refused and
/// counted. The timer runs on that CPU.
#[test]
fn mod_delayed_work_on_queues_on_the_named_cpu() {
    let _s = serial();
    static RT: Runtime<Fake, 2> = Runtime::new(Config::DEFAULT);
    static M: DelayedWork = DelayedWork::new("m", |_| {});
    NOW.store(150_000, Ordering::SeqCst);
    assert!(!RT.mod_delayed_work_on(1, &M, ns(100)), "idle: queued");
    assert_eq!((RT.pending(0), RT.pending(1)), (0, 1 << 6));
    assert!(RT.mod_delayed_work_on(1, &M, ns(200)), "pending: moved");
    assert!(!RT.mod_delayed_work_on(2, &M, ns(5)), "no CPU 2");
    assert_eq!(RT.stats().misuse(0, bottomhalf::Misuse::CpuOutOfRange), 1);
    assert!(M.is_timer_pending());
    assert!(M.cancel());
}
