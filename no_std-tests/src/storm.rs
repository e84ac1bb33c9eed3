// The nested-interrupt storm, shared by `storm` (drain in PendSV) and
// `storm_irq_exit` (drain at the outermost interrupt exit). The including
// binary defines `NAME`, `AT_EXIT` and `type StormBoard`.
//
// SysTick (the most urgent priority) is the asynchronous event source: at
// every tick it pends a pseudo-random subset of three top-half interrupts
// through the NVIC. The low one pends the middle one in its body, the
// middle one the high one (so three priorities nest), and each schedules
// tasklets: T1 from all three, the others from one or two. The tasklets
// busy-work, so ticks land inside them and inside the drain.
//
// The storm runs in batches. After each batch the firmware waits until
// everything has drained and checks, per tasklet: every schedule either
// queued it (`schedule()` returned true) and then ran it, or was coalesced
// into a run (`Tasklet::coalesced`), exactly; it ran at least once in every
// batch that scheduled it; the last schedule is covered by a run that
// started after it; nothing is pending. Every run checks that no other
// instance of the same tasklet is running.

use bottomhalf::{BareMetal, Config, DrainOutcome, Runtime, Tasklet};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, InFlight,
    Ordering, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<StormBoard>, 1> = Runtime::new(Config::DEFAULT);

const BATCHES: u32 = 24;
const TICKS_PER_BATCH: u32 = 40;
/// SysTick reload: an event every RELOAD + 1 SysTick counts (under QEMU's
/// `-icount shift=0`, one count is about 80 instructions).
const RELOAD: u32 = 39;
/// Busy work inside each tasklet run and each top half (loop iterations).
const TASKLET_WORK: u32 = 300;
const TOP_HALF_WORK: u32 = 40;

const NT: usize = 5;
const NAMES: [&str; NT] = [
    "T0 (from low)",
    "T1 (from low, mid, high)",
    "T2 (from mid)",
    "T3 (from high)",
    "H  (hi-priority, from low and high)",
];

static TASKLETS: [Tasklet; NT] = [
    Tasklet::new(&RT, t0),
    Tasklet::new(&RT, t1),
    Tasklet::new(&RT, t2),
    Tasklet::new(&RT, t3),
    Tasklet::new_hi(&RT, t4),
];

fn t0() {
    body(0)
}
fn t1() {
    body(1)
}
fn t2() {
    body(2)
}
fn t3() {
    body(3)
}
fn t4() {
    body(4)
}

struct Track {
    /// `schedule()` calls.
    scheduled: AtomicU32,
    /// ... that returned `true`.
    queued: AtomicU32,
    /// ... that returned `false`.
    coalesced: AtomicU32,
    /// Sequence number of the latest schedule (monotonic).
    stamp: AtomicU32,
    /// `stamp` as read by the latest run, when it started.
    covered: AtomicU32,
    /// Runs, counted by the callback itself.
    runs: AtomicU32,
    inflight: InFlight,
}

impl Track {
    const fn new() -> Track {
        Track {
            scheduled: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            coalesced: AtomicU32::new(0),
            stamp: AtomicU32::new(0),
            covered: AtomicU32::new(0),
            runs: AtomicU32::new(0),
            inflight: InFlight::new(),
        }
    }
}

static TRACK: [Track; NT] = [const { Track::new() }; NT];
static SEQ: AtomicU32 = AtomicU32::new(0);

fn body(i: usize) {
    let _bh = h::preempt::bottom_half();
    let tr = &TRACK[i];
    let _one = tr.inflight.enter();
    tr.covered
        .store(tr.stamp.load(Ordering::SeqCst), Ordering::SeqCst);
    tr.runs.fetch_add(1, Ordering::Relaxed);
    h::spin(TASKLET_WORK);
}

fn schedule(i: usize) {
    let tr = &TRACK[i];
    tr.scheduled.fetch_add(1, Ordering::Relaxed);
    if TASKLETS[i].schedule() {
        tr.queued.fetch_add(1, Ordering::Relaxed);
    } else {
        tr.coalesced.fetch_add(1, Ordering::Relaxed);
    }
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    tr.stamp.fetch_max(seq, Ordering::SeqCst);
}

// ---------------------------------------------------------------- top halves

static EXIT_NONE: AtomicU32 = AtomicU32::new(0);
static EXIT_COMPLETE: AtomicU32 = AtomicU32::new(0);
static EXIT_REMAINING: AtomicU32 = AtomicU32::new(0);
static EXIT_BUSY: AtomicU32 = AtomicU32::new(0);

fn top_half(work: impl FnOnce()) {
    let th = h::preempt::TopHalf::enter();
    if AT_EXIT {
        RT.irq_enter();
    }
    work();
    th.leave();
    if AT_EXIT {
        // Only the outermost exit drains; mark it as the code under test.
        let _drain = (!h::preempt::in_top_half()).then(h::preempt::drain);
        let counter = match RT.irq_exit() {
            None => &EXIT_NONE,
            Some(DrainOutcome::Complete) => &EXIT_COMPLETE,
            Some(DrainOutcome::Remaining) => &EXIT_REMAINING,
            Some(DrainOutcome::Busy) => &EXIT_BUSY,
            // This storm takes no bottom-half guard.
            Some(DrainOutcome::Disabled) => h::fail(format_args!("irq_exit found bottom halves off")),
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The pattern of the latest tick (which interrupts nest).
static PATTERN: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    top_half(|| {
        schedule(0);
        schedule(1);
        h::spin(TOP_HALF_WORK);
        if PATTERN.load(Ordering::Relaxed) & 8 != 0 {
            h::pend(IRQ_MID); // preempts us at once
        }
        schedule(0);
        schedule(4);
    });
}

#[interrupt]
fn GPIOB() {
    top_half(|| {
        schedule(1);
        schedule(2);
        if PATTERN.load(Ordering::Relaxed) & 16 != 0 {
            h::pend(IRQ_HIGH); // preempts us at once
        }
        h::spin(TOP_HALF_WORK);
        schedule(1);
    });
}

#[interrupt]
fn GPIOC() {
    top_half(|| {
        schedule(1);
        schedule(3);
        schedule(4);
    });
}

static RNG: AtomicU32 = AtomicU32::new(0x1234_5678);
static TICKS_LEFT: AtomicU32 = AtomicU32::new(0);
static BATCH_DONE: AtomicBool = AtomicBool::new(false);

#[exception]
fn SysTick() {
    let r = h::xorshift(&RNG);
    PATTERN.store(r, Ordering::Relaxed);
    if r & 1 != 0 {
        h::pend(IRQ_LOW);
    }
    if r & 2 != 0 {
        h::pend(IRQ_MID);
    }
    if r & 4 != 0 {
        h::pend(IRQ_HIGH);
    }
    if TICKS_LEFT.fetch_sub(1, Ordering::Relaxed) == 1 {
        h::systick_stop();
        BATCH_DONE.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- drain

static DRAINS: AtomicU32 = AtomicU32::new(0);
/// PendSV entries that found nothing pending: pended by a top half that
/// raised while a drain was running (the running drain took the work).
static DRAINS_IDLE: AtomicU32 = AtomicU32::new(0);
static DRAIN_REMAINING: AtomicU32 = AtomicU32::new(0);
static DRAIN_BUSY: AtomicU32 = AtomicU32::new(0);

#[exception]
fn PendSV() {
    check!(
        !AT_EXIT,
        "PendSV fired, but this storm drains at interrupt exit"
    );
    DRAINS.fetch_add(1, Ordering::Relaxed);
    if RT.pending(0) == 0 {
        DRAINS_IDLE.fetch_add(1, Ordering::Relaxed);
    }
    let _drain = h::preempt::drain();
    match RT.drain() {
        DrainOutcome::Complete => {}
        DrainOutcome::Remaining => {
            DRAIN_REMAINING.fetch_add(1, Ordering::Relaxed);
        }
        DrainOutcome::Busy => {
            DRAIN_BUSY.fetch_add(1, Ordering::Relaxed);
        }
        // This storm takes no bottom-half guard.
        DrainOutcome::Disabled => h::fail(format_args!("the drain found bottom halves off")),
    }
}

// ---------------------------------------------------------------- main

#[entry]
fn main() -> ! {
    h::start(NAME);
    println!(
        "{}: {} batches of {} SysTick events; 3 top-half priorities, {} tasklets; drain {}",
        NAME,
        BATCHES,
        TICKS_PER_BATCH,
        NT,
        if AT_EXIT {
            "at the outermost irq_exit"
        } else {
            "in PendSV (lowest priority)"
        }
    );
    let mut main_drains = 0u32;
    // Paint the stack below thread mode's current frame: what is used
    // below it from here on is the storm (handlers, drain, tasklets, and
    // the few frames of the batch loop).
    let in_use = h::stack::paint();
    for batch in 0..BATCHES {
        let sched_before: [u32; NT] =
            core::array::from_fn(|i| TRACK[i].scheduled.load(Ordering::Relaxed));
        let runs_before: [u32; NT] = core::array::from_fn(|i| TASKLETS[i].runs());
        BATCH_DONE.store(false, Ordering::SeqCst);
        TICKS_LEFT.store(TICKS_PER_BATCH, Ordering::SeqCst);
        h::systick_start(RELOAD);
        h::wait_for("the end of a batch", 50_000_000, || {
            BATCH_DONE.load(Ordering::SeqCst)
        });
        // Thread mode runs only when no handler is active or pending, so
        // the storm is over. At-exit drains may have left work for the main
        // loop (the board does not pend a drain interrupt).
        if AT_EXIT && RT.pending(0) != 0 {
            main_drains += 1;
            let _drain = h::preempt::drain();
            check_eq!(RT.drain(), DrainOutcome::Complete);
        }
        check_eq!(RT.pending(0), 0, "batch {}", batch);
        check!(!SCB::is_pendsv_pending(), "batch {}", batch);
        for i in 0..NT {
            let t = &TASKLETS[i];
            let tr = &TRACK[i];
            let scheduled = tr.scheduled.load(Ordering::Relaxed);
            check!(
                !t.is_scheduled(),
                "{} still scheduled after batch {}",
                NAMES[i],
                batch
            );
            check_eq!(t.runs(), tr.runs.load(Ordering::Relaxed), "{}", NAMES[i]);
            check_eq!(
                t.runs(),
                tr.queued.load(Ordering::Relaxed),
                "{}: runs == queued",
                NAMES[i]
            );
            check_eq!(
                t.coalesced(),
                tr.coalesced.load(Ordering::Relaxed),
                "{}: coalesced == schedule() false",
                NAMES[i]
            );
            check_eq!(
                scheduled,
                t.runs() + t.coalesced(),
                "{}: schedules == runs + coalesced",
                NAMES[i]
            );
            if scheduled != sched_before[i] {
                check!(
                    t.runs() > runs_before[i],
                    "{} scheduled in batch {} but not run",
                    NAMES[i],
                    batch
                );
            }
            check_eq!(
                tr.covered.load(Ordering::SeqCst),
                tr.stamp.load(Ordering::SeqCst),
                "{}: the last schedule is covered by a run",
                NAMES[i]
            );
        }
    }

    let high_water = h::stack::high_water();

    let mut total_sched = 0;
    let mut total_coalesced = 0;
    for i in 0..NT {
        let t = &TASKLETS[i];
        let scheduled = TRACK[i].scheduled.load(Ordering::Relaxed);
        total_sched += scheduled;
        total_coalesced += t.coalesced();
        println!(
            "{}: scheduled {}, runs {}, coalesced {}",
            NAMES[i],
            scheduled,
            t.runs(),
            t.coalesced()
        );
    }
    println!(
        "every schedule covered by a run: scheduled == runs + coalesced for all {} tasklets after each of {} batches",
        NT, BATCHES
    );
    let max_inflight = TRACK.iter().map(|t| t.inflight.max()).max().unwrap_or(0);
    check_eq!(max_inflight, 1);
    println!(
        "no tasklet ran twice at once: max in-flight {}",
        max_inflight
    );
    check!(total_coalesced > 0, "no schedule was coalesced");
    println!(
        "coalesced schedules: {} of {}",
        total_coalesced, total_sched
    );
    println!("coalescing counted: yes");

    h::preempt::report();
    check_eq!(h::preempt::MAX_DEPTH.load(Ordering::Relaxed), 3);
    h::preempt::check_preempted();

    let stats = RT.stats();
    if AT_EXIT {
        println!(
            "irq_exit: drained {} (complete {}, out of budget {}, busy {}), no drain {}; main-loop drains {}",
            EXIT_COMPLETE.load(Ordering::Relaxed)
                + EXIT_REMAINING.load(Ordering::Relaxed)
                + EXIT_BUSY.load(Ordering::Relaxed),
            EXIT_COMPLETE.load(Ordering::Relaxed),
            EXIT_REMAINING.load(Ordering::Relaxed),
            EXIT_BUSY.load(Ordering::Relaxed),
            EXIT_NONE.load(Ordering::Relaxed),
            main_drains
        );
        check!(
            EXIT_COMPLETE.load(Ordering::Relaxed) > 0,
            "no drain ran at irq_exit"
        );
        check!(
            EXIT_BUSY.load(Ordering::Relaxed) > 0,
            "no interrupt exit found a drain running (nested drains not exercised)"
        );
        println!("an exit that interrupted a running drain did not nest it (Busy): yes");
    } else {
        println!(
            "PendSV drains: {} (out of budget {}, busy {}, found nothing pending {})",
            DRAINS.load(Ordering::Relaxed),
            DRAIN_REMAINING.load(Ordering::Relaxed),
            DRAIN_BUSY.load(Ordering::Relaxed),
            DRAINS_IDLE.load(Ordering::Relaxed)
        );
        check_eq!(DRAIN_BUSY.load(Ordering::Relaxed), 0, "PendSV never nests");
    }
    println!(
        "drain restarts: {}, budget exhausted: {}",
        stats.restarts(0),
        stats.budget_exhausted(0)
    );

    let size = h::stack::size();
    check!(high_water < size, "the stack overflowed its painted area");
    println!(
        "stack high-water (by painting): {} bytes during the storm, {} of them below thread mode's frame ({} bytes of stack)",
        high_water,
        high_water.saturating_sub(in_use),
        size
    );
    println!("{}: ok", NAME);
    h::exit_ok()
}
