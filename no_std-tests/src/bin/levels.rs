//! Two bottom-half levels, each drained by its own spare NVIC interrupt,
//! under a storm of device interrupts that raise at both levels.
//!
//! - Level 0 (bulk: a "log flush" vector BULK (3) and a tasklet LOG) is
//!   drained by `GPIOE` at the lowest priority (`0xC0`); level 1 (urgent:
//!   a "motor step" vector STEP (4) and a tasklet CTRL) by `GPIOD`, one
//!   priority step above (`0x80`). `Board::pend_drain(cpu, level)` pends
//!   the level's interrupt; each calls `RT.drain_level(level)`.
//! - SysTick (priority `0x00`) drives the storm: every event pends the
//!   middle device interrupt (`GPIOB`, `0x40`), which raises BULK and
//!   schedules LOG; about every other event it also pends the high one
//!   (`GPIOC`, `0x00`), which raises STEP and schedules CTRL. Every fourth
//!   run of the middle interrupt pends the high one from inside itself
//!   (a top half nested in another: three priorities above the drains).
//! - Every run of BULK's handler pends the high device interrupt itself
//!   and then busy-waits on STEP's run count: only level 1's drain can
//!   move it, so the wait ends only if level 1 preempts the running level-0
//!   handler (a bounded wait: otherwise the firmware fails).
//!
//! Checks: per vector raises == runs + coalesced exactly and the last
//! raise is covered by a run; per tasklet schedules == runs + coalesced;
//! each BULK run saw a level-1 drain run inside it; no handler of a level
//! ever ran nested in a handler of its own level (an in-flight detector
//! per level), no drain returned `Busy`; every level-1 run that happened
//! during a level-0 handler is counted; `pend_drain` was called with each
//! level and only pended that level's interrupt; nothing is pending at
//! the end.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DrainOutcome, Level, Runtime, Tasklet, Vector};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, InFlight,
    Interrupt, Ordering, IRQ_HIGH, IRQ_MID,
};
use cortex_m::peripheral::NVIC;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

const LOW: Level = Level::new(0);
const HIGH: Level = Level::new(1);
/// The drain interrupts of the two levels (spare vectors nothing else on
/// the emulated board drives).
const DRAIN_IRQ: [Interrupt; 2] = [Interrupt::GPIOE, Interrupt::GPIOD];
/// Their priorities: level 1 above level 0, both below every device.
const DRAIN_PRIO: [u8; 2] = [0xC0, 0x80];

/// `pend_drain` calls per level.
static PENDS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

struct TwoLevels;
impl Board for TwoLevels {
    #[inline(always)]
    fn pend_drain(cpu: usize, level: Level) {
        if cpu != 0 || level.index() > 1 {
            h::fail(format_args!("pend_drain({cpu}, {level})"));
        }
        PENDS[level.index()].fetch_add(1, Ordering::Relaxed);
        h::pend(DRAIN_IRQ[level.index()]);
    }
}

static RT: Runtime<BareMetal<TwoLevels>, 1, 2> = Runtime::new(Config::DEFAULT);

const TICKS: u32 = 600;
const RELOAD: u32 = 29;
const BULK_WORK: u32 = 300;

const BULK: Vector = Vector::new(3);
const STEP: Vector = Vector::new(4);

/// Raises per vector, and the sequence stamps for "last raise covered".
static RAISES: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static STAMP: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static COVERED: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static RUNS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static SEQ: AtomicU32 = AtomicU32::new(0);
/// Handlers (vector or tasklet) of each level running now.
static LEVEL_IN_FLIGHT: [InFlight; 2] = [InFlight::new(), InFlight::new()];
/// Level-0 handlers (BULK, LOG) running now.
static L0_ACTIVE: AtomicU32 = AtomicU32::new(0);
/// Level-1 runs that started while a level-0 handler was running.
static PREEMPTIONS: AtomicU32 = AtomicU32::new(0);
/// BULK runs whose busy-wait saw STEP run inside them.
static WAITED_OUT: AtomicU32 = AtomicU32::new(0);
static SCHEDULES: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static DRAINS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
static BUSY: AtomicU32 = AtomicU32::new(0);
static REMAINING: AtomicU32 = AtomicU32::new(0);

static LOG: Tasklet = Tasklet::new(&RT, || {
    let _in = LEVEL_IN_FLIGHT[0].enter();
    L0_ACTIVE.fetch_add(1, Ordering::SeqCst);
    h::spin(BULK_WORK / 4);
    L0_ACTIVE.fetch_sub(1, Ordering::SeqCst);
});
static CTRL: Tasklet = Tasklet::new(&RT, || {
    let _in = LEVEL_IN_FLIGHT[1].enter();
    if L0_ACTIVE.load(Ordering::SeqCst) != 0 {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    }
})
.at_level(HIGH);

fn raise(i: usize, v: Vector) {
    RAISES[i].fetch_add(1, Ordering::Relaxed);
    RT.raise(v);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    STAMP[i].fetch_max(seq, Ordering::SeqCst);
}

fn bulk(_cpu: usize) {
    let _bh = h::preempt::bottom_half();
    let _in = LEVEL_IN_FLIGHT[0].enter();
    L0_ACTIVE.fetch_add(1, Ordering::SeqCst);
    COVERED[0].store(STAMP[0].load(Ordering::SeqCst), Ordering::SeqCst);
    RUNS[0].fetch_add(1, Ordering::Relaxed);
    h::spin(BULK_WORK);
    // The motor interrupt fires in the middle of the flush: STEP's count
    // moves only if level 1's drain runs now, inside this handler.
    let before = RUNS[1].load(Ordering::SeqCst);
    h::pend(IRQ_HIGH);
    h::wait_for(
        "level 1 to preempt the running level-0 handler",
        1_000_000,
        || RUNS[1].load(Ordering::SeqCst) != before,
    );
    WAITED_OUT.fetch_add(1, Ordering::Relaxed);
    h::spin(BULK_WORK);
    L0_ACTIVE.fetch_sub(1, Ordering::SeqCst);
}

fn step(_cpu: usize) {
    let _bh = h::preempt::bottom_half();
    let _in = LEVEL_IN_FLIGHT[1].enter();
    if L0_ACTIVE.load(Ordering::SeqCst) != 0 {
        PREEMPTIONS.fetch_add(1, Ordering::Relaxed);
    }
    COVERED[1].store(STAMP[1].load(Ordering::SeqCst), Ordering::SeqCst);
    RUNS[1].fetch_add(1, Ordering::SeqCst);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    raise(0, BULK);
    SCHEDULES[0].fetch_add(1, Ordering::Relaxed);
    LOG.schedule();
    // Now and then the motor interrupt fires while this one runs: a top
    // half nested in another, raising at the other level.
    if RAISES[0].load(Ordering::Relaxed).is_multiple_of(4) {
        h::pend(IRQ_HIGH);
    }
    h::spin(40);
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    raise(1, STEP);
    SCHEDULES[1].fetch_add(1, Ordering::Relaxed);
    CTRL.schedule();
}

fn drain(level: usize) {
    DRAINS[level].fetch_add(1, Ordering::Relaxed);
    let _drain = h::preempt::drain();
    match RT.drain_level(Level::new(level)) {
        DrainOutcome::Complete => {}
        DrainOutcome::Remaining => {
            REMAINING.fetch_add(1, Ordering::Relaxed);
        }
        DrainOutcome::Busy => {
            BUSY.fetch_add(1, Ordering::Relaxed);
        }
        DrainOutcome::Disabled => h::fail(format_args!("a drain found bottom halves off")),
    }
}

/// Level 1's drain interrupt.
#[interrupt]
fn GPIOD() {
    drain(1);
}

/// Level 0's drain interrupt.
#[interrupt]
fn GPIOE() {
    drain(0);
}

static TICKS_LEFT: AtomicU32 = AtomicU32::new(TICKS);
static DONE: AtomicBool = AtomicBool::new(false);
static RNG: AtomicU32 = AtomicU32::new(0x1e7e_15ed);

#[exception]
fn SysTick() {
    h::pend(IRQ_MID);
    if h::xorshift(&RNG) & 1 == 0 {
        h::pend(IRQ_HIGH);
    }
    if TICKS_LEFT.fetch_sub(1, Ordering::Relaxed) == 1 {
        h::systick_stop();
        DONE.store(true, Ordering::SeqCst);
    }
}

#[entry]
fn main() -> ! {
    h::start("levels");
    // SAFETY: set-up in thread mode, before either drain interrupt can be
    // pended (nothing is raised yet); no priority-based critical section
    // in this firmware depends on these two interrupts.
    unsafe {
        let mut p = cortex_m::Peripherals::steal();
        for l in 0..2 {
            p.NVIC.set_priority(DRAIN_IRQ[l], DRAIN_PRIO[l]);
            NVIC::unmask(DRAIN_IRQ[l]);
        }
    }
    RT.register_at(LOW, BULK, "BULK", bulk).unwrap();
    RT.register_at(HIGH, STEP, "STEP", step).unwrap();
    println!(
        "levels: {} SysTick events; level 0 (BULK 3, tasklet LOG) drained by GPIOE at 0xC0, \
         level 1 (STEP 4, tasklet CTRL) by GPIOD at 0x80",
        TICKS
    );
    h::systick_start(RELOAD);
    h::wait_for("the end of the storm", 100_000_000, || {
        DONE.load(Ordering::SeqCst)
    });
    // Thread mode runs only when no handler is active or pending.
    check_eq!(RT.pending(0), 0, "work left pending after the storm");

    let stats = RT.stats();
    for (i, v) in [BULK, STEP].into_iter().enumerate() {
        let raises = RAISES[i].load(Ordering::Relaxed);
        println!(
            "level {}: vector {} raised {}, runs {}, coalesced {}",
            i,
            v.index(),
            raises,
            stats.runs(0, v),
            stats.coalesced(0, v)
        );
        check_eq!(stats.runs(0, v), RUNS[i].load(Ordering::Relaxed));
        check_eq!(raises, stats.runs(0, v) + stats.coalesced(0, v));
        check_eq!(stats.raised(0, v), raises);
        check_eq!(
            COVERED[i].load(Ordering::SeqCst),
            STAMP[i].load(Ordering::SeqCst),
            "level {}: the last raise is covered by a run",
            i
        );
    }
    for (i, t) in [&LOG, &CTRL].into_iter().enumerate() {
        let scheduled = SCHEDULES[i].load(Ordering::Relaxed);
        println!(
            "level {}: tasklet scheduled {}, runs {}, coalesced {}",
            i,
            scheduled,
            t.runs(),
            t.coalesced()
        );
        check_eq!(scheduled, t.runs() + t.coalesced());
        check!(t.runs() > 0);
    }
    println!("nothing lost: raises == runs + coalesced at both levels");

    let bulk_runs = RUNS[0].load(Ordering::Relaxed);
    let waited = WAITED_OUT.load(Ordering::Relaxed);
    let preemptions = PREEMPTIONS.load(Ordering::Relaxed);
    println!(
        "level 1 ran inside a running level-0 handler: {} times; every BULK run waited it out: {}",
        preemptions,
        waited == bulk_runs
    );
    check_eq!(waited, bulk_runs);
    check!(preemptions >= bulk_runs);
    for (l, in_flight) in LEVEL_IN_FLIGHT.iter().enumerate() {
        check_eq!(in_flight.max(), 1, "level {} ran nested in itself", l);
    }
    println!(
        "no level ran nested in itself: yes (busy drains {})",
        BUSY.load(Ordering::Relaxed)
    );
    check_eq!(BUSY.load(Ordering::Relaxed), 0);
    let pends = [0, 1].map(|l| PENDS[l].load(Ordering::Relaxed));
    let drains = [0, 1].map(|l| DRAINS[l].load(Ordering::Relaxed));
    println!(
        "pend_drain calls: level 0 {}, level 1 {}; drain interrupts: level 0 {}, level 1 {}; out of budget {}",
        pends[0],
        pends[1],
        drains[0],
        drains[1],
        REMAINING.load(Ordering::Relaxed)
    );
    for l in 0..2 {
        check!(pends[l] > 0 && drains[l] > 0);
        // An NVIC pend of an interrupt already pending coalesces, so a
        // level's drain interrupt runs at most once per pend.
        check!(drains[l] <= pends[l]);
    }
    check!(h::preempt::NESTED.load(Ordering::Relaxed) > 0);
    h::preempt::report();
    println!("levels: ok");
    h::exit_ok()
}
