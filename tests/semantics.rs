//! The DESIGN.md contract, one deterministic test per rule.
//!
//! Every test has its own `static` runtime, tasklets and mailboxes, so the
//! harness may run them on parallel threads. Threads that act as another
//! CPU bind with `RT.bind_current_thread(cpu)` and keep the guard in scope;
//! an unbound thread is CPU 0. Cross-thread steps are ordered with flags
//! whose waits time out (a hang becomes a failure with a message).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{
    Backend, Config, DrainOutcome, Host, Mailbox, MailboxError, MpscMailbox, Priority, Runtime,
    Tasklet, Vector,
};

// ---------------------------------------------------------------------------
// Helpers.

const TIMEOUT: Duration = Duration::from_secs(30);

/// A one-shot event another thread waits for.
struct Flag(AtomicBool);

impl Flag {
    const fn new() -> Self {
        Flag(AtomicBool::new(false))
    }
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    #[track_caller]
    fn wait(&self, what: &str) {
        wait_until(what, || self.is_set());
    }
}

#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// An append-only log of small integers, for checking run order.
struct Log {
    len: AtomicUsize,
    items: [AtomicU32; 64],
}

impl Log {
    const fn new() -> Self {
        Log {
            len: AtomicUsize::new(0),
            items: [const { AtomicU32::new(u32::MAX) }; 64],
        }
    }
    fn push(&self, x: u32) {
        let i = self.len.fetch_add(1, Ordering::SeqCst);
        self.items[i].store(x, Ordering::SeqCst);
    }
    fn get(&self) -> Vec<u32> {
        let n = self.len.load(Ordering::SeqCst);
        self.items[..n]
            .iter()
            .map(|x| x.load(Ordering::SeqCst))
            .collect()
    }
}

/// The default restart budget without the time budget: a test whose drain
/// restarts (a handler re-raising, a callback blocked on another thread)
/// must not depend on how fast the machine, or miri, is. The time budget
/// has tests of its own.
const NO_TIME_BUDGET: Config = Config::DEFAULT.time_budget_ns(0);

const TASKLET_BIT: u32 = 1 << 6;
const HI_BIT: u32 = 1 << 0;

// ---------------------------------------------------------------------------
// Softirq vectors: order and passes.

/// Lower index first: vector 0 (hi tasklets), then 1..5, then vector 6
/// (normal tasklets), then the higher vectors.
#[test]
fn vectors_run_lowest_index_first_with_tasklet_lists_at_0_and_6() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static LOG: Log = Log::new();
    static HI: Tasklet = Tasklet::new_hi(&RT, || LOG.push(100));
    static NORMAL: Tasklet = Tasklet::new(&RT, || LOG.push(106));
    RT.register(Vector::new(1), "V1", |_| LOG.push(1)).unwrap();
    RT.register(Vector::new(3), "V3", |_| LOG.push(3)).unwrap();
    RT.register(Vector::new(5), "V5", |_| LOG.push(5)).unwrap();
    RT.register(Vector::new(7), "V7", |_| LOG.push(7)).unwrap();
    RT.register(Vector::new(31), "V31", |_| LOG.push(31))
        .unwrap();

    // Raised highest first, so the order cannot come from raise order.
    RT.raise(Vector::new(31));
    RT.raise(Vector::new(7));
    assert!(NORMAL.schedule());
    RT.raise(Vector::new(5));
    RT.raise(Vector::new(3));
    RT.raise(Vector::new(1));
    assert!(HI.schedule());
    assert_eq!(
        RT.pending(0),
        (1 << 31) | (1 << 7) | TASKLET_BIT | (1 << 5) | (1 << 3) | (1 << 1) | HI_BIT
    );

    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(LOG.get(), [100, 1, 3, 5, 106, 7, 31]);
    assert_eq!(RT.pending(0), 0);
    assert_eq!(RT.stats().restarts(0), 0, "all of it is one pass");
    for v in [0, 1, 3, 5, 6, 7, 31] {
        assert_eq!(RT.stats().runs(0, Vector::ALL[v]), 1, "vector {v}");
    }
}

/// Tasklets on one list run in the order they were scheduled, and the hi
/// list drains before the normal one even when scheduled later.
#[test]
fn tasklets_run_in_schedule_order_hi_list_first() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static LOG: Log = Log::new();
    static A: Tasklet = Tasklet::new(&RT, || LOG.push(1));
    static B: Tasklet = Tasklet::new(&RT, || LOG.push(2));
    static C: Tasklet = Tasklet::new(&RT, || LOG.push(3));
    static H1: Tasklet = Tasklet::new_hi(&RT, || LOG.push(11));
    static H2: Tasklet = Tasklet::new_hi(&RT, || LOG.push(12));

    assert_eq!(H1.priority(), Priority::Hi);
    assert_eq!(A.priority(), Priority::Normal);
    assert!(C.schedule());
    assert!(A.schedule());
    assert!(B.schedule());
    assert!(!A.schedule());
    assert!(H2.schedule());
    assert!(H1.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(LOG.get(), [12, 11, 3, 1, 2]);
    assert_eq!(A.coalesced(), 1);
    assert_eq!([A.runs(), B.runs(), C.runs(), H1.runs(), H2.runs()], [1; 5]);
}

/// A raise during a handler is left for the next pass, even for a vector
/// the current pass has not reached yet; each raise runs once.
#[test]
fn raise_during_a_handler_runs_in_the_next_pass() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static LOG: Log = Log::new();
    static FIRST: AtomicBool = AtomicBool::new(true);
    RT.register(Vector::new(1), "V1", |_| LOG.push(1)).unwrap();
    RT.register(Vector::new(2), "V2", |_| {
        LOG.push(2);
        if FIRST.swap(false, Ordering::SeqCst) {
            // 3 is above 2 and not in this pass's snapshot; 1 was already
            // passed. Both belong to the next pass, in index order.
            RT.raise(Vector::new(3));
            RT.raise(Vector::new(1));
        }
    })
    .unwrap();
    RT.register(Vector::new(3), "V3", |_| LOG.push(3)).unwrap();

    RT.raise(Vector::new(2));
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(LOG.get(), [2, 1, 3]);
    let s = RT.stats();
    assert_eq!(s.restarts(0), 1);
    assert_eq!(s.budget_exhausted(0), 0);
    for v in 1..=3 {
        assert_eq!(s.runs(0, Vector::new(v)), 1, "vector {v}");
        assert_eq!(s.raised(0, Vector::new(v)), 1, "vector {v}");
    }
}

/// A handler that raises its own vector runs again in the next pass, once
/// per raise.
#[test]
fn handler_raising_itself_runs_once_more() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const V: Vector = Vector::new(4);
    RT.register(V, "V", |_| {
        if RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
            RT.raise(V);
            RT.raise(V); // coalesced with the one above
        }
    })
    .unwrap();
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(RT.stats().restarts(0), 1);
    assert_eq!(RT.stats().coalesced(0, V), 1);
    assert_eq!(RT.stats().raised(0, V), 3);
}

/// After `max_restart` passes in all (as Linux counts
/// `MAX_SOFTIRQ_RESTART`) the drain stops with work left, counts the
/// exhaustion, and leaves the bit pending for the next drain.
#[test]
fn restart_budget_exhaustion_leaves_work_and_is_counted() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.max_restart(3).time_budget_ns(0));
    static STORM: AtomicBool = AtomicBool::new(true);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const POLL: Vector = Vector::new(9);
    RT.register(POLL, "POLL", |_| {
        RUNS.fetch_add(1, Ordering::SeqCst);
        if STORM.load(Ordering::SeqCst) {
            RT.raise(POLL);
        }
    })
    .unwrap();

    RT.raise(POLL);
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        3,
        "3 passes: first + 2 restarts"
    );
    assert_eq!(RT.stats().runs(0, POLL), 3);
    assert_eq!(RT.stats().restarts(0), 2);
    assert_eq!(RT.stats().budget_exhausted(0), 1);
    assert_eq!(RT.pending(0), 1 << 9, "the rest is left pending");

    // A second drain picks the rest up; it gets its own budget.
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    assert_eq!(RUNS.load(Ordering::SeqCst), 6);
    assert_eq!(RT.stats().restarts(0), 4);
    assert_eq!(RT.stats().budget_exhausted(0), 2);

    STORM.store(false, Ordering::SeqCst);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 7);
    assert_eq!(RT.stats().restarts(0), 4);
    assert_eq!(RT.stats().budget_exhausted(0), 2);
    assert_eq!(RT.pending(0), 0);
}

/// `max_restart(0)`: every drain is a single pass (the first pass always
/// runs, so 0 means the same as 1).
#[test]
fn max_restart_zero_is_a_single_pass() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET.max_restart(0));
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const V: Vector = Vector::new(2);
    RT.register(V, "V", |_| {
        RUNS.fetch_add(1, Ordering::SeqCst);
        RT.raise(V);
    })
    .unwrap();
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(RT.stats().restarts(0), 0);
    assert_eq!(RT.stats().budget_exhausted(0), 1);
}

/// The time budget stops a drain even with restarts to spare: a handler
/// that sleeps past the budget and re-raises itself runs once.
#[test]
fn time_budget_exhaustion_by_a_sleeping_handler() {
    static RT: Runtime<Host, 1> =
        Runtime::new(Config::DEFAULT.max_restart(1000).time_budget_ns(1_000_000));
    const SLOW: Vector = Vector::new(3);
    RT.register(SLOW, "SLOW", |_| {
        thread::sleep(Duration::from_millis(2));
        RT.raise(SLOW);
    })
    .unwrap();
    RT.raise(SLOW);
    let t0 = Instant::now();
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    assert!(t0.elapsed() >= Duration::from_millis(2));
    let s = RT.stats();
    assert_eq!(s.runs(0, SLOW), 1);
    assert_eq!(s.restarts(0), 0);
    assert_eq!(s.budget_exhausted(0), 1);
    assert!(
        s.max_handler_ns(0, SLOW) >= 2_000_000,
        "{}",
        s.max_handler_ns(0, SLOW)
    );
    assert_eq!(RT.pending(0), 1 << 3);
}

/// A 5 ms budget with a 1 ms handler: at most 5 passes (each pass takes at
/// least 1 ms, and the drain stops once 5 ms have passed).
#[test]
fn time_budget_bounds_the_number_of_passes() {
    static RT: Runtime<Host, 1> =
        Runtime::new(Config::DEFAULT.max_restart(1000).time_budget_ns(5_000_000));
    const V: Vector = Vector::new(3);
    RT.register(V, "V", |_| {
        thread::sleep(Duration::from_millis(1));
        RT.raise(V);
    })
    .unwrap();
    RT.raise(V);
    let t0 = Instant::now();
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    let took = t0.elapsed();
    let runs = RT.stats().runs(0, V);
    assert!((1..=5).contains(&runs), "runs {runs}");
    assert_eq!(RT.stats().restarts(0), runs - 1);
    assert_eq!(RT.stats().budget_exhausted(0), 1);
    assert!(took >= Duration::from_millis(5), "stopped early: {took:?}");
}

/// `time_budget_ns(0)` turns the clock off: only the restart budget stops a
/// slow storm.
#[test]
fn time_budget_zero_is_off() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.max_restart(3).time_budget_ns(0));
    const V: Vector = Vector::new(3);
    RT.register(V, "V", |_| {
        thread::sleep(Duration::from_millis(1));
        RT.raise(V);
    })
    .unwrap();
    RT.raise(V);
    assert_eq!(RT.drain(), DrainOutcome::Remaining);
    assert_eq!(RT.stats().runs(0, V), 3);
    assert_eq!(RT.stats().restarts(0), 2);
}

/// A raise on CPU 1 is CPU 1's: CPU 0's drain does not see it, CPU 1's
/// handler gets `cpu == 1`.
#[test]
fn raise_is_per_cpu() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static SEEN_CPU: Log = Log::new();
    const V: Vector = Vector::new(8);
    RT.register(V, "V", |cpu| {
        assert_eq!(cpu, Host::current_cpu());
        SEEN_CPU.push(cpu as u32);
    })
    .unwrap();
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(V);
    })
    .join()
    .unwrap();
    assert_eq!((RT.pending(0), RT.pending(1)), (0, 1 << 8));
    assert!(RT.drain().is_complete());
    assert_eq!(SEEN_CPU.get(), Vec::<u32>::new());
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(SEEN_CPU.get(), [1]);
    assert_eq!(RT.stats().runs(1, V), 1);
    assert_eq!(RT.stats().runs(0, V), 0);
}

/// One drain per CPU: a second drain on a busy CPU returns `Busy`, and the
/// work raised meanwhile is run by the drain already running.
#[test]
fn second_drain_on_a_busy_cpu_is_busy_and_work_is_not_lost() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static ENTERED: Flag = Flag::new();
    static RELEASE: Flag = Flag::new();
    static LOG: Log = Log::new();
    RT.register(Vector::new(1), "BLOCK", |_| {
        LOG.push(1);
        ENTERED.set();
        RELEASE.wait("release of the blocking handler");
    })
    .unwrap();
    RT.register(Vector::new(2), "LATE", |_| LOG.push(2))
        .unwrap();

    let drainer = thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(Vector::new(1));
        RT.drain()
    });
    ENTERED.wait("the handler on CPU 1");
    {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(Vector::new(2));
        assert_eq!(RT.drain(), DrainOutcome::Busy);
        assert_eq!(LOG.get(), [1], "the busy drain ran nothing");
    }
    RELEASE.set();
    assert_eq!(drainer.join().unwrap(), DrainOutcome::Complete);
    assert_eq!(LOG.get(), [1, 2]);
    assert_eq!(RT.pending(1), 0);
}

/// A drain started from inside a handler (a nested interrupt exit) is not
/// nested: it returns `Busy`, and the running drain picks up the work.
#[test]
fn drain_from_inside_a_handler_is_busy() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static INNER: Log = Log::new();
    static LATE_RUNS: AtomicU32 = AtomicU32::new(0);
    RT.register(Vector::new(1), "OUTER", |_| {
        RT.raise(Vector::new(2));
        let outcome = RT.drain();
        INNER.push(u32::from(outcome == DrainOutcome::Busy));
    })
    .unwrap();
    RT.register(Vector::new(2), "LATE", |_| {
        LATE_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    RT.raise(Vector::new(1));
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(INNER.get(), [1], "the nested drain was Busy");
    assert_eq!(LATE_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(RT.stats().restarts(0), 1);
}

/// The same vector may run on two CPUs at once (as in Linux): each handler
/// waits until the other has entered.
#[test]
fn same_vector_runs_concurrently_on_two_cpus() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static INSIDE: AtomicU32 = AtomicU32::new(0);
    const V: Vector = Vector::new(3);
    RT.register(V, "V", |_| {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        wait_until("both CPUs inside the handler", || {
            INSIDE.load(Ordering::SeqCst) >= 2
        });
    })
    .unwrap();
    let workers: Vec<_> = (0..2)
        .map(|cpu| {
            thread::spawn(move || {
                let _b = RT.bind_current_thread(cpu).unwrap();
                RT.raise(V);
                RT.drain()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), DrainOutcome::Complete);
    }
    assert_eq!((RT.stats().runs(0, V), RT.stats().runs(1, V)), (1, 1));
}

// ---------------------------------------------------------------------------
// Tasklets.

/// Schedules that complete before the run starts are covered by that one
/// run, and counted as coalesced.
#[test]
fn schedules_before_the_run_are_covered_by_one_run() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static DATA: AtomicU32 = AtomicU32::new(0);
    static SEEN: Log = Log::new();
    static T: Tasklet = Tasklet::new(&RT, || SEEN.push(DATA.load(Ordering::Relaxed)));
    DATA.store(1, Ordering::Relaxed);
    assert!(T.schedule());
    DATA.store(2, Ordering::Relaxed);
    assert!(!T.schedule());
    DATA.store(3, Ordering::Relaxed);
    assert_eq!(T.try_schedule(), Ok(false));
    assert!(T.is_scheduled());
    assert!(RT.drain().is_complete());
    assert_eq!(SEEN.get(), [3], "one run, after the last schedule");
    assert_eq!((T.runs(), T.coalesced()), (1, 2));
    assert!(!T.is_scheduled());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);
}

/// A tasklet that schedules itself from its callback runs exactly once more
/// (in the next pass of the same drain).
#[test]
fn tasklet_scheduled_from_its_own_callback_runs_exactly_once_more() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static RESCHEDULED: Log = Log::new();
    static T: Tasklet = Tasklet::new(&RT, || {
        if T.runs() == 0 {
            RESCHEDULED.push(u32::from(T.schedule()));
            RESCHEDULED.push(u32::from(T.schedule()));
        }
    });
    assert!(T.schedule());
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RESCHEDULED.get(), [1, 0], "queued once, then coalesced");
    assert_eq!(T.runs(), 2);
    assert_eq!(RT.stats().restarts(0), 1);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
}

/// Scheduled from another thread on the same CPU while its callback runs:
/// it runs exactly once more, after the current run, in the same drain.
#[test]
fn schedule_during_run_from_another_thread_runs_exactly_once_more() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static ENTERED: Flag = Flag::new();
    static SCHEDULED: Flag = Flag::new();
    static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        if T.runs() == 0 {
            ENTERED.set();
            SCHEDULED.wait("the schedule from the other thread");
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });

    let other = thread::spawn(|| {
        ENTERED.wait("the first run");
        let queued = T.schedule();
        let coalesced = T.schedule();
        SCHEDULED.set();
        (queued, coalesced)
    });
    assert!(T.schedule());
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(other.join().unwrap(), (true, false));
    assert_eq!(T.runs(), 2);
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
}

/// Scheduled from CPU 1 while it runs on CPU 0: queued on CPU 1, run there
/// exactly once by CPU 1's drain.
#[test]
fn schedule_during_run_from_another_cpu_runs_there_once() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static ENTERED: Flag = Flag::new();
    static SCHEDULED: Flag = Flag::new();
    static CPUS: Log = Log::new();
    static T: Tasklet = Tasklet::new(&RT, || {
        CPUS.push(Host::current_cpu() as u32);
        if T.runs() == 0 {
            ENTERED.set();
            SCHEDULED.wait("the schedule from CPU 1");
        }
    });

    let other = thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        ENTERED.wait("the first run");
        let queued = T.schedule();
        SCHEDULED.set();
        queued
    });
    assert!(T.schedule());
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert!(other.join().unwrap());
    assert_eq!(T.runs(), 1);
    assert_eq!((RT.pending(0), RT.pending(1)), (0, TASKLET_BIT));
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(T.runs(), 2);
    assert_eq!(CPUS.get(), [0, 1]);
}

/// A tasklet running on CPU 1 and scheduled on CPU 0 is handed off by CPU
/// 0's drain (not run concurrently, not spun on): CPU 0's drain ends at
/// once, and CPU 1's drain runs it again after its run has finished.
#[test]
fn tasklet_running_on_cpu1_scheduled_on_cpu0_runs_after_cpu1_finishes() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT.max_restart(3).time_budget_ns(0));
    static ENTERED: Flag = Flag::new();
    static RELEASE: Flag = Flag::new();
    static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    static CPUS: Log = Log::new();
    static T: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        CPUS.push(Host::current_cpu() as u32);
        if Host::current_cpu() == 1 {
            ENTERED.set();
            RELEASE.wait("release of the run on CPU 1");
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });

    let cpu1 = thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(T.schedule());
        RT.drain()
    });
    ENTERED.wait("the run on CPU 1");

    // CPU 0 (this thread, unbound): the run on CPU 1 has cleared SCHED, so
    // this schedule queues it again, on CPU 0.
    assert!(T.schedule());
    assert_eq!(RT.pending(0), TASKLET_BIT);
    // CPU 0's drain finds it running elsewhere: hands it off to CPU 1 and
    // ends, one pass, nothing left.
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(T.runs(), 0);
    assert_eq!(CPUS.get(), [1]);
    assert!(T.is_scheduled());
    assert_eq!(RT.pending(0), 0, "handed off, not left on CPU 0");
    assert_eq!(RT.stats().restarts(0), 0);
    assert_eq!(RT.stats().budget_exhausted(0), 0);

    // CPU 1's run ends; its drain links it again and runs it once more in
    // its next pass.
    RELEASE.set();
    assert_eq!(cpu1.join().unwrap(), DrainOutcome::Complete);
    assert_eq!(T.runs(), 2);
    assert_eq!(RT.stats().restarts(1), 1);
    assert_eq!(RT.pending(1), 0);
    assert_eq!(CPUS.get(), [1, 1]);
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0);
    assert!(!T.is_scheduled());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
}

/// `disable_nosync` while pending: the drain parks it (no run, off every
/// list); schedules meanwhile coalesce; `enable` queues it on the enabling
/// thread's CPU.
#[test]
fn disable_nosync_parks_a_pending_tasklet_and_enable_requeues_it_on_the_enabling_cpu() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static CPUS: Log = Log::new();
    static T: Tasklet = Tasklet::new(&RT, || CPUS.push(Host::current_cpu() as u32));

    assert!(T.schedule());
    T.disable_nosync();
    assert!(T.is_disabled());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
    assert!(T.is_scheduled(), "held, still pending");
    assert_eq!(RT.pending(0), 0, "parked: on no list");
    assert!(!T.schedule(), "a schedule while parked coalesces");
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);

    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        T.enable();
        assert!(!T.is_disabled());
        assert_eq!(RT.pending(1), TASKLET_BIT);
    })
    .join()
    .unwrap();
    assert_eq!(RT.pending(0), 0);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0, "queued on CPU 1, not CPU 0");
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(T.runs(), 1);
    assert_eq!(T.coalesced(), 1, "the schedule while parked was covered");
    assert_eq!(CPUS.get(), [1]);
    assert!(!T.is_scheduled());
}

/// Disable calls nest; only the last `enable` re-queues. A disable/enable
/// pair with no drain in between leaves the tasklet on its list.
#[test]
fn disable_nests_and_only_the_last_enable_requeues() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});

    T.disable_nosync();
    T.disable_nosync();
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
    T.enable();
    assert!(T.is_disabled());
    assert_eq!(RT.pending(0), 0, "still disabled: not re-queued");
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
    T.enable();
    assert_eq!(RT.pending(0), TASKLET_BIT);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);

    // Disabled and enabled again before any drain saw it: it simply runs.
    assert!(T.schedule());
    T.disable_nosync();
    T.enable();
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
}

/// `disable()` on another thread does not return before the running
/// callback has returned; afterwards the tasklet does not start until
/// `enable`.
#[test]
fn disable_waits_for_the_running_callback() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static ENTERED: Flag = Flag::new();
    static RELEASE: Flag = Flag::new();
    static EXITED: Flag = Flag::new();
    static DISABLE_RETURNED: Flag = Flag::new();
    static T: Tasklet = Tasklet::new(&RT, || {
        if T.runs() == 0 {
            ENTERED.set();
            RELEASE.wait("release of the first run");
            EXITED.set();
        }
    });

    assert!(T.schedule());
    let drainer = thread::spawn(|| RT.drain());
    ENTERED.wait("the first run");
    let disabler = thread::spawn(|| {
        T.disable();
        let exited = EXITED.is_set();
        DISABLE_RETURNED.set();
        exited
    });
    wait_until("the disable count", || T.is_disabled());
    // Give a broken disable every chance to return early.
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until && !DISABLE_RETURNED.is_set() {
        thread::yield_now();
    }
    assert!(
        !DISABLE_RETURNED.is_set(),
        "disable returned while the callback was running"
    );
    RELEASE.set();
    assert!(
        disabler.join().unwrap(),
        "disable returned before the callback did"
    );
    assert_eq!(drainer.join().unwrap(), DrainOutcome::Complete);
    assert_eq!(T.runs(), 1);
    assert!(T.is_disabled());

    // Disabled: a schedule is held.
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);
    T.enable();
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 2);
}

/// `kill()` waits for a running callback, discards the schedule that landed
/// during the run, and no run ever follows.
#[test]
fn kill_waits_for_the_running_callback_and_discards_the_rerun() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static ENTERED: Flag = Flag::new();
    static RELEASE: Flag = Flag::new();
    static EXITED: Flag = Flag::new();
    static KILL_RETURNED: Flag = Flag::new();
    static T: Tasklet = Tasklet::new(&RT, || {
        if T.runs() == 0 {
            ENTERED.set();
            RELEASE.wait("release of the first run");
            EXITED.set();
        }
    });

    assert!(T.schedule());
    // Unbound: CPU 0, like this thread, so the schedule below lands on
    // the list this drain restarts on.
    let drainer = thread::spawn(|| RT.drain());
    ENTERED.wait("the first run");
    // Scheduled while running: would run once more, but kill discards it.
    assert!(T.schedule());
    let killer = thread::spawn(|| {
        T.kill();
        let exited = EXITED.is_set();
        KILL_RETURNED.set();
        exited
    });
    // KILLED must be set before the run ends, or the drain would run the
    // re-queued instance (correctly) before the kill.
    wait_until("the kill flag", || T.is_killed());
    let until = Instant::now() + Duration::from_millis(50);
    while Instant::now() < until && !KILL_RETURNED.is_set() {
        thread::yield_now();
    }
    assert!(
        !KILL_RETURNED.is_set(),
        "kill returned while the callback was running"
    );
    RELEASE.set();
    assert!(
        killer.join().unwrap(),
        "kill returned before the callback did"
    );
    // The drain's next pass unlinks the killed instance without running it.
    assert_eq!(drainer.join().unwrap(), DrainOutcome::Complete);
    assert_eq!(RT.pending(0), 0);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);
    assert!(T.is_killed());
    assert!(!T.is_scheduled());
    assert!(!T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);
    assert_eq!(RT.pending(0), 0);
}

/// `kill()` of a pending tasklet discards the run; the drain unlinks it.
#[test]
fn kill_discards_a_pending_run() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static RAN: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RAN.fetch_add(1, Ordering::SeqCst);
    });
    static NEIGHBOUR: Tasklet = Tasklet::new(&RT, || {
        RAN.fetch_add(100, Ordering::SeqCst);
    });
    assert!(NEIGHBOUR.schedule());
    assert!(T.schedule());
    T.kill();
    assert!(!T.is_scheduled());
    assert!(T.is_killed());
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RAN.load(Ordering::SeqCst), 100, "only the neighbour ran");
    assert_eq!(T.runs(), 0);
    assert_eq!(NEIGHBOUR.runs(), 1);
    assert_eq!(RT.pending(0), 0);
}

/// `kill()` of a parked tasklet clears it; a later `enable` queues nothing.
#[test]
fn kill_of_a_parked_tasklet_discards_it() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || panic!("a killed tasklet ran"));
    T.disable_nosync();
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    T.kill();
    assert!(!T.is_scheduled());
    T.enable();
    assert_eq!(RT.pending(0), 0);
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
}

// ---------------------------------------------------------------------------
// Mailbox (SPSC, heapless).

#[test]
fn mailbox_capacity_is_n_minus_1_fifo_and_counts_drops() {
    static MB: Mailbox<u32, 8> = Mailbox::new();
    assert_eq!(Mailbox::<u32, 8>::CAPACITY, 7);
    let (mut tx, mut rx) = MB.split().unwrap();
    assert!(rx.is_empty());
    for i in 0..7 {
        assert!(tx.ready());
        assert_eq!(tx.push(i), Ok(()));
    }
    assert!(!tx.ready());
    assert_eq!(rx.len(), 7);
    assert_eq!(tx.push(7), Err(7));
    assert_eq!(tx.push(8), Err(8));
    assert_eq!(MB.dropped(), 2);
    assert_eq!(MB.high_water(), 7);
    assert_eq!(rx.pop(), Some(0));
    assert_eq!(tx.push(9), Ok(()));
    assert_eq!(rx.by_ref().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 9]);
    assert_eq!(rx.pop(), None);
    assert_eq!(MB.dropped(), 2);
}

#[test]
fn mailbox_high_water_is_the_peak_not_the_current_length() {
    static MB: Mailbox<u8, 16> = Mailbox::new();
    let (mut tx, mut rx) = MB.split().unwrap();
    for i in 0..3 {
        tx.push(i).unwrap();
    }
    rx.pop();
    rx.pop();
    tx.push(3).unwrap();
    tx.push(4).unwrap();
    assert_eq!(rx.len(), 3);
    assert_eq!(MB.high_water(), 3);
    for i in 0..10 {
        tx.push(i).unwrap();
    }
    assert_eq!(MB.high_water(), 13);
    assert_eq!(MB.dropped(), 0);
}

#[test]
fn mailbox_fifo_across_many_wraps_and_threads() {
    static MB: Mailbox<u32, 4> = Mailbox::new();
    const ITEMS: u32 = if cfg!(miri) { 50 } else { 3_000 };
    let (mut tx, mut rx) = MB.split().unwrap();
    // Both sides give up at the deadline, so a failure on one side cannot
    // leave the other spinning (the scope would wait for it forever).
    let deadline = Instant::now() + TIMEOUT;
    let refused = thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut refused = 0;
            for i in 0..ITEMS {
                let mut item = i;
                while let Err(back) = tx.push(item) {
                    assert_eq!(back, i, "a full push hands the same item back");
                    assert!(Instant::now() < deadline, "producer timed out");
                    refused += 1;
                    item = back;
                    thread::yield_now();
                }
            }
            refused
        });
        let mut next = 0;
        while next < ITEMS {
            match rx.pop() {
                Some(x) => {
                    assert_eq!(x, next);
                    next += 1;
                }
                None => {
                    assert!(Instant::now() < deadline, "consumer timed out");
                    thread::yield_now();
                }
            }
        }
        assert_eq!(rx.pop(), None);
        producer.join().unwrap()
    });
    assert_eq!(MB.dropped(), refused);
    assert!((1..=3).contains(&MB.high_water()), "{}", MB.high_water());
}

#[test]
fn mailbox_drops_items_left_in_it() {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    struct D;
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    {
        let mb: Mailbox<D, 4> = Mailbox::new();
        let (mut tx, mut rx) = mb.split().unwrap();
        for _ in 0..3 {
            assert!(tx.push(D).is_ok());
        }
        let back = tx.push(D);
        assert!(back.is_err());
        drop(back);
        assert_eq!(DROPS.load(Ordering::SeqCst), 1, "the handed-back item");
        drop(rx.pop());
        assert_eq!(DROPS.load(Ordering::SeqCst), 2);
    }
    assert_eq!(DROPS.load(Ordering::SeqCst), 4, "the two left were dropped");
}

#[test]
fn mailbox_split_hands_out_one_pair_at_a_time() {
    static MB: Mailbox<u8, 2> = Mailbox::new();
    let ends = MB.split();
    assert!(ends.is_ok());
    assert_eq!(MB.split().err(), Some(MailboxError::AlreadySplit));
    let (tx, rx) = ends.unwrap();
    drop(tx);
    assert_eq!(
        MB.split().err(),
        Some(MailboxError::AlreadySplit),
        "the consumer is still out"
    );
    assert!(MB.take_consumer().is_none(), "a failed split took nothing");
    drop(rx);
    assert!(MB.split().is_ok(), "dropping both ends gave them back");
}

// ---------------------------------------------------------------------------
// MpscMailbox.

#[test]
fn mpsc_capacity_is_n_fifo_and_counts_drops() {
    static MB: MpscMailbox<u32, 4> = MpscMailbox::new();
    assert_eq!(MpscMailbox::<u32, 4>::CAPACITY, 4);
    assert!(MB.is_empty());
    for i in 0..4 {
        assert_eq!(MB.push(i), Ok(()));
    }
    assert_eq!(MB.len(), 4);
    assert_eq!(MB.push(4), Err(4));
    assert_eq!(MB.push(5), Err(5));
    assert_eq!(MB.dropped(), 2);
    assert_eq!(MB.high_water(), 4);
    let mut rx = MB.consumer().unwrap();
    assert_eq!(rx.pop(), Some(0));
    assert_eq!(MB.push(6), Ok(()));
    assert_eq!(rx.by_ref().collect::<Vec<_>>(), [1, 2, 3, 6]);
    assert_eq!(rx.pop(), None);
    assert!(MB.is_empty());
    // Many wraps.
    for round in 0..10u32 {
        for i in 0..3 {
            MB.push(round * 10 + i).unwrap();
        }
        for i in 0..3 {
            assert_eq!(rx.pop(), Some(round * 10 + i));
        }
    }
    assert_eq!(MB.dropped(), 2);
    assert_eq!(MB.high_water(), 4);
}

#[test]
fn mpsc_consumer_is_exclusive_and_the_next_one_continues_in_order() {
    static MB: MpscMailbox<u32, 8> = MpscMailbox::new();
    for i in 0..6 {
        MB.push(i).unwrap();
    }
    let mut rx = MB.consumer().unwrap();
    assert_eq!(MB.consumer().err(), Some(MailboxError::ConsumerTaken));
    assert_eq!(rx.pop(), Some(0));
    assert_eq!(rx.pop(), Some(1));
    // Another thread cannot take one either while this one lives.
    thread::scope(|s| {
        s.spawn(|| assert_eq!(MB.consumer().err(), Some(MailboxError::ConsumerTaken)));
    });
    drop(rx);
    let got = thread::spawn(|| {
        let mut rx = MB.consumer().unwrap();
        rx.by_ref().collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(got, [2, 3, 4, 5]);
    assert!(MB.consumer().is_ok());
}

#[test]
fn mpsc_keeps_each_producers_order() {
    static MB: MpscMailbox<u32, 64> = MpscMailbox::new();
    const PER: u32 = if cfg!(miri) { 10 } else { 2_000 };
    const PRODUCERS: u32 = 3;
    let mut last = [None::<u32>; PRODUCERS as usize];
    let mut got = 0;
    let deadline = Instant::now() + TIMEOUT;
    thread::scope(|s| {
        for p in 0..PRODUCERS {
            s.spawn(move || {
                for i in 0..PER {
                    let mut item = p << 24 | i;
                    while let Err(back) = MB.push(item) {
                        assert!(Instant::now() < deadline, "producer {p} timed out");
                        item = back;
                        thread::yield_now();
                    }
                }
            });
        }
        let mut rx = MB.consumer().unwrap();
        while got < PER * PRODUCERS {
            match rx.pop() {
                Some(x) => {
                    let (p, i) = ((x >> 24) as usize, x & 0xff_ffff);
                    assert!(
                        last[p].is_none_or(|l| l < i),
                        "producer {p}: {i} after {last:?}"
                    );
                    last[p] = Some(i);
                    got += 1;
                }
                None => {
                    assert!(Instant::now() < deadline, "consumer timed out");
                    thread::yield_now();
                }
            }
        }
    });
    assert_eq!(last, [Some(PER - 1); PRODUCERS as usize]);
    assert!(MB.high_water() <= 64);
}

#[test]
fn mpsc_drops_items_left_in_it() {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    struct D;
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
        }
    }
    {
        let mb: MpscMailbox<D, 4> = MpscMailbox::new();
        for _ in 0..4 {
            assert!(mb.push(D).is_ok());
        }
        drop(mb.push(D));
        assert_eq!(DROPS.load(Ordering::SeqCst), 1, "the handed-back item");
        let mut rx = mb.consumer().unwrap();
        drop(rx.pop());
        assert_eq!(DROPS.load(Ordering::SeqCst), 2);
        drop(rx);
    }
    assert_eq!(
        DROPS.load(Ordering::SeqCst),
        5,
        "the three left were dropped"
    );
}

/// A mailbox paired with a tasklet: the pattern from the crate docs.
#[test]
fn mailbox_and_tasklet_compose() {
    static RT: Runtime<Host, 1> = Runtime::new(NO_TIME_BUDGET);
    static RX: MpscMailbox<u32, 8> = MpscMailbox::new();
    static GOT: Log = Log::new();
    static BH: Tasklet = Tasklet::new(&RT, || {
        let mut rx = RX.consumer().expect("only the tasklet consumes");
        while let Some(x) = rx.pop() {
            GOT.push(x);
        }
    });
    for i in 0..10 {
        let _ = RX.push(i);
        BH.schedule();
    }
    assert!(RT.drain().is_complete());
    assert_eq!(GOT.get(), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(RX.dropped(), 2);
    assert_eq!((BH.runs(), BH.coalesced()), (1, 9));
}

// ---------------------------------------------------------------------------
// Runtimes and statistics.

#[test]
fn two_runtimes_are_independent() {
    static A: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static B: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET.max_restart(1));
    static A_RUNS: AtomicU32 = AtomicU32::new(0);
    static B_RUNS: AtomicU32 = AtomicU32::new(0);
    static TA: Tasklet = Tasklet::new(&A, || {
        A_RUNS.fetch_add(10, Ordering::SeqCst);
    });
    const V: Vector = Vector::new(3);
    A.register(V, "A3", |_| {
        A_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    // The same vector number registers separately on B.
    B.register(V, "B3", |_| {
        B_RUNS.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(A.vector_name(V), Some("A3"));
    assert_eq!(B.vector_name(V), Some("B3"));
    assert_ne!(A.config(), B.config());

    A.raise(V);
    assert!(TA.schedule());
    assert_eq!(B.pending(0), 0);
    assert_eq!(B.drain(), DrainOutcome::Complete);
    assert_eq!(
        (A_RUNS.load(Ordering::SeqCst), B_RUNS.load(Ordering::SeqCst)),
        (0, 0)
    );
    assert_eq!(A.pending(0), (1 << 3) | TASKLET_BIT);
    assert_eq!(A.drain(), DrainOutcome::Complete);
    assert_eq!(
        (A_RUNS.load(Ordering::SeqCst), B_RUNS.load(Ordering::SeqCst)),
        (11, 0)
    );
    B.raise(V);
    assert_eq!(A.pending(0), 0);
    assert_eq!(B.drain(), DrainOutcome::Complete);
    assert_eq!(
        (A_RUNS.load(Ordering::SeqCst), B_RUNS.load(Ordering::SeqCst)),
        (11, 1)
    );
    assert_eq!(A.stats().runs(0, V), 1);
    assert_eq!(B.stats().runs(0, V), 1);
    assert_eq!(A.stats().runs(0, Vector::TASKLET), 1);
    assert_eq!(B.stats().runs(0, Vector::TASKLET), 0);
}

#[test]
fn stats_display_has_a_row_per_vector_and_a_column_per_cpu() {
    static RT: Runtime<Host, 2> = Runtime::new(NO_TIME_BUDGET);
    static T: Tasklet = Tasklet::new(&RT, || {});
    const NET_RX: Vector = Vector::new(3);
    const RCU: Vector = Vector::new(9);
    RT.register(NET_RX, "NET_RX", |_| {}).unwrap();
    RT.register(RCU, "RCU", |_| {}).unwrap();

    RT.raise(NET_RX);
    RT.raise(NET_RX);
    RT.raise(Vector::new(12)); // no handler
    T.schedule();
    assert!(RT.drain().is_complete());
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(RCU);
        assert!(RT.drain().is_complete());
    })
    .join()
    .unwrap();

    let table = RT.stats().to_string();
    let lines: Vec<&str> = table.lines().collect();
    let row = |label: &str, a: u32, b: u32| format!("{label:>20}: {a:>10} {b:>10}");

    let mut expected = vec![format!("{:>21} {:>10} {:>10}", "", "CPU0", "CPU1")];
    expected.push("runs".into());
    expected.push(row("HI", 0, 0));
    expected.push(row("NET_RX", 1, 0));
    expected.push(row("TASKLET", 1, 0));
    expected.push(row("RCU", 0, 1));
    expected.push("raised".into());
    expected.push(row("HI", 0, 0));
    expected.push(row("NET_RX", 2, 0));
    expected.push(row("TASKLET", 1, 0));
    expected.push(row("RCU", 0, 1));
    expected.push(row("vector 12", 1, 0));
    expected.push("coalesced".into());
    expected.push(row("HI", 0, 0));
    expected.push(row("NET_RX", 1, 0));
    expected.push(row("TASKLET", 0, 0));
    expected.push(row("RCU", 0, 0));
    expected.push("dropped (no handler)".into());
    expected.push(row("HI", 0, 0));
    expected.push(row("NET_RX", 0, 0));
    expected.push(row("TASKLET", 0, 0));
    expected.push(row("RCU", 0, 0));
    expected.push(row("vector 12", 1, 0));
    expected.push("longest run (ns)".into());
    let longest_at = expected.len();
    // Four rows with clock-dependent values, checked below.
    expected.extend(["HI", "NET_RX", "TASKLET", "RCU"].map(String::from));
    expected.push("drain".into());
    expected.push(row("restarts", 0, 0));
    expected.push(row("budget exhausted", 0, 0));

    assert_eq!(lines.len(), expected.len(), "{table}");
    for (i, (got, want)) in lines.iter().zip(&expected).enumerate() {
        if (longest_at..longest_at + 4).contains(&i) {
            let (label, values) = got.split_once(':').expect(got);
            assert_eq!(label, format!("{want:>20}"), "line {i}\n{table}");
            let cols: Vec<&str> = values.split_whitespace().collect();
            assert_eq!(cols.len(), 2, "line {i}\n{table}");
            assert_eq!(got.len(), 20 + 1 + 2 * 11, "line {i}\n{table}");
            let ns: Vec<u32> = cols.iter().map(|c| c.parse().unwrap()).collect();
            let s = RT.stats();
            let v = [0usize, 3, 6, 9][i - longest_at];
            let v = Vector::ALL[v];
            assert_eq!(ns, [s.max_handler_ns(0, v), s.max_handler_ns(1, v)]);
        } else {
            assert_eq!(got, want, "line {i}\n{table}");
        }
    }
    // Debug is the same table.
    assert_eq!(format!("{:?}", RT.stats()), table);
}
