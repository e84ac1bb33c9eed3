//! Delayed work in the bottom half (`Runtime::queue_delayed_work`,
//! `mod_delayed_work`), no_std: a board clock and one-shot deadline hook,
//! timers firing in deadline order under a storm of nested interrupts at
//! three priorities that reschedule and cancel, and thread mode flushing
//! and cancelling while the drain runs.
//!
//! The clock is SysTick's: every tick advances `NOW` by `TICK_NS`. The
//! board's `set_timer` stores the one-shot compare value (`ARMED`, the
//! earliest deadline the runtime asks for); the SysTick handler, each tick,
//! compares and on a match disarms and calls `Runtime::timer_fired` (a
//! compare-match interrupt folded into the tick, as a SysTick-driven RTOS
//! tick does). SysTick also pends the three top-half interrupts.
//!
//! Phase 1, order: thread mode queues `ORDERED[k]` with shuffled delays;
//! meanwhile the storm runs and reschedules/cancels `R` on the same list. They must fire in deadline order, none before
//! its deadline. Phase 2, storm: the low interrupt reschedules `R` (a
//! short delay), the mid one schedules it, the high one cancels it; thread
//! mode flushes it or `cancel_sync`s it. After each batch: nothing pending;
//! runs + cancels that returned `true` == instances started (queues that
//! returned `true`, reschedules that returned `false`); no run nested.

#![no_std]
#![no_main]

use core::time::Duration;

use bottomhalf::{BareMetal, Board, Config, DelayedWork, DrainOutcome, Level, Runtime, Work};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, InFlight,
    Ordering, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

/// Nanoseconds per SysTick tick of the board clock.
const TICK_NS: u64 = 1_000;
static TICKS: AtomicU32 = AtomicU32::new(0);
/// The one-shot compare value in ticks (`u32::MAX`: disarmed).
static ARMED: AtomicU32 = AtomicU32::new(u32::MAX);
static ARMS: AtomicU32 = AtomicU32::new(0);
static FIRED: AtomicU32 = AtomicU32::new(0);

struct TimerBoard;
impl Board for TimerBoard {
    fn now_ns() -> u64 {
        u64::from(TICKS.load(Ordering::SeqCst)) * TICK_NS
    }
    fn pend_drain(_cpu: usize, _level: Level) {
        SCB::set_pendsv();
    }
    fn set_timer(_cpu: usize, _level: Level, deadline_ns: u64) {
        ARMS.fetch_add(1, Ordering::Relaxed);
        let ticks = deadline_ns.div_ceil(TICK_NS);
        ARMED.store(ticks.min(u64::from(u32::MAX)) as u32, Ordering::SeqCst);
    }
}

static RT: Runtime<BareMetal<TimerBoard>, 1> = Runtime::new(Config::DEFAULT);

const BATCHES: u32 = 12;
const TICKS_PER_BATCH: u32 = 60;
const RELOAD: u32 = 499;
const NO: usize = 6;

static ORDERED: [DelayedWork; NO] = [const { DelayedWork::new("ordered", ordered) }; NO];
static ORDER_LOG: [AtomicU32; NO] = [const { AtomicU32::new(u32::MAX) }; NO];
static ORDER_AT: [AtomicU32; NO] = [const { AtomicU32::new(0) }; NO];
static ORDER_N: AtomicU32 = AtomicU32::new(0);

fn ordered(w: &Work) {
    let i = ORDERED
        .iter()
        .position(|d| core::ptr::eq(d.work(), w))
        .unwrap_or_else(|| h::fail(format_args!("unknown item")));
    let n = ORDER_N.fetch_add(1, Ordering::SeqCst) as usize;
    ORDER_LOG[n % NO].store(i as u32, Ordering::SeqCst);
    ORDER_AT[i].store(TICKS.load(Ordering::SeqCst), Ordering::SeqCst);
}

static R: DelayedWork = DelayedWork::new("r", r_body);
static R_INFLIGHT: InFlight = InFlight::new();
static R_RUNS: AtomicU32 = AtomicU32::new(0);
static R_STARTED: AtomicU32 = AtomicU32::new(0);
static R_CANCELLED: AtomicU32 = AtomicU32::new(0);
static R_MOVED: AtomicU32 = AtomicU32::new(0);

fn r_body(_: &Work) {
    let _bh = h::preempt::bottom_half();
    let _one = R_INFLIGHT.enter();
    R_RUNS.fetch_add(1, Ordering::SeqCst);
    h::spin(200);
}

fn delay(ticks: u32) -> Duration {
    Duration::from_nanos(u64::from(ticks) * TICK_NS)
}

fn schedule_r(ticks: u32) {
    if RT.queue_delayed_work(&R, delay(ticks)) {
        R_STARTED.fetch_add(1, Ordering::SeqCst);
    }
}

fn reschedule_r(ticks: u32) {
    if RT.mod_delayed_work(&R, delay(ticks)) {
        R_MOVED.fetch_add(1, Ordering::SeqCst);
    } else {
        R_STARTED.fetch_add(1, Ordering::SeqCst);
    }
}

fn cancel_r() {
    if R.cancel() {
        R_CANCELLED.fetch_add(1, Ordering::SeqCst);
    }
}

static STORM_R: AtomicBool = AtomicBool::new(false);
static PATTERN: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    if STORM_R.load(Ordering::SeqCst) {
        reschedule_r(1 + (PATTERN.load(Ordering::Relaxed) >> 8) % 4);
    }
    h::spin(40);
    if PATTERN.load(Ordering::Relaxed) & 8 != 0 {
        h::pend(IRQ_MID);
    }
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    if STORM_R.load(Ordering::SeqCst) {
        schedule_r(2);
    }
    if PATTERN.load(Ordering::Relaxed) & 16 != 0 {
        h::pend(IRQ_HIGH);
    }
    h::spin(40);
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    if STORM_R.load(Ordering::SeqCst) && PATTERN.load(Ordering::Relaxed) & 32 != 0 {
        cancel_r();
    }
}

static RNG: AtomicU32 = AtomicU32::new(0x2545_f491);
static TICKS_LEFT: AtomicU32 = AtomicU32::new(0);
static BATCH_DONE: AtomicBool = AtomicBool::new(false);

#[exception]
fn SysTick() {
    let now = TICKS.fetch_add(1, Ordering::SeqCst) + 1;
    // The one-shot compare.
    if now >= ARMED.load(Ordering::SeqCst) {
        ARMED.store(u32::MAX, Ordering::SeqCst);
        FIRED.fetch_add(1, Ordering::Relaxed);
        RT.timer_fired();
    }
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
        BATCH_DONE.store(true, Ordering::SeqCst);
    }
}

#[exception]
fn PendSV() {
    let _drain = h::preempt::drain();
    match RT.drain() {
        DrainOutcome::Complete | DrainOutcome::Remaining | DrainOutcome::Busy => {}
        DrainOutcome::Disabled => h::fail(format_args!("the drain found bottom halves off")),
    }
}

fn run_ticks(n: u32) {
    BATCH_DONE.store(false, Ordering::SeqCst);
    TICKS_LEFT.store(n, Ordering::SeqCst);
}

#[entry]
fn main() -> ! {
    h::start("delayed_work");
    println!(
        "delayed_work: {} ordered timers, then {} batches of {} SysTick ticks; 3 top-half priorities; drain in PendSV",
        NO, BATCHES, TICKS_PER_BATCH
    );
    h::systick_start(RELOAD);
    // Phase 1: deadline order under the storm, which reschedules and
    // cancels `R` on the same timer list meanwhile.
    STORM_R.store(true, Ordering::SeqCst);
    const DELAYS: [u32; NO] = [9, 3, 14, 6, 11, 3];
    let t0 = TICKS.load(Ordering::SeqCst);
    run_ticks(40);
    for (k, d) in DELAYS.iter().enumerate() {
        check!(
            RT.queue_delayed_work(&ORDERED[k], delay(*d)),
            "ordered {}",
            k
        );
    }
    h::wait_for("the ordered timers", 50_000_000, || {
        ORDER_N.load(Ordering::SeqCst) as usize == NO
    });
    let mut last = (0u32, 0usize);
    for n in 0..NO {
        let i = ORDER_LOG[n].load(Ordering::SeqCst) as usize;
        let key = (DELAYS[i], i);
        check!(
            key >= last,
            "run {}: item {} (delay {}) out of order",
            n,
            i,
            DELAYS[i]
        );
        last = key;
        let at = ORDER_AT[i].load(Ordering::SeqCst);
        check!(
            at >= t0 + DELAYS[i],
            "item {} ran at tick {}, before its deadline {}",
            i,
            at - t0,
            DELAYS[i]
        );
    }
    println!(
        "phase 1: {} timers fired in deadline order (ties in queue order), none early",
        NO
    );
    h::wait_for("phase 1's ticks", 50_000_000, || {
        BATCH_DONE.load(Ordering::SeqCst)
    });
    STORM_R.store(false, Ordering::SeqCst);
    h::wait_for("phase 1's timers", 50_000_000, || {
        !R.is_pending() && RT.pending(0) == 0 && !SCB::is_pendsv_pending()
    });
    check_eq!(
        R.runs() + R_CANCELLED.load(Ordering::SeqCst),
        R_STARTED.load(Ordering::SeqCst),
        "phase 1: runs + cancelled == instances started"
    );

    // Phase 2: reschedule / schedule / cancel from three priorities,
    // flush and cancel_sync from thread mode.
    STORM_R.store(true, Ordering::SeqCst);
    let (mut flushes, mut cancel_syncs) = (0u32, 0u32);
    for _batch in 0..BATCHES {
        run_ticks(TICKS_PER_BATCH);
        let mut round = 0u32;
        while !BATCH_DONE.load(Ordering::SeqCst) {
            round += 1;
            schedule_r(3);
            if round % 4 == 0 {
                match R.cancel_sync() {
                    Ok(true) => {
                        R_CANCELLED.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(false) => {}
                    Err(e) => h::fail(format_args!("cancel_sync: {}", e)),
                }
                cancel_syncs += 1;
            } else {
                check!(R.flush().is_ok(), "flush failed");
                flushes += 1;
            }
        }
        STORM_R.store(false, Ordering::SeqCst);
        // Let every pending timer fire.
        h::wait_for("the end of a batch", 50_000_000, || {
            !R.is_pending() && RT.pending(0) == 0 && !SCB::is_pendsv_pending()
        });
        check!(!R.is_running(), "R running at the end of a batch");
        check_eq!(R.runs(), R_RUNS.load(Ordering::SeqCst));
        check_eq!(
            R.runs() + R_CANCELLED.load(Ordering::SeqCst),
            R_STARTED.load(Ordering::SeqCst),
            "runs + cancelled == instances started"
        );
        STORM_R.store(true, Ordering::SeqCst);
    }
    STORM_R.store(false, Ordering::SeqCst);
    h::systick_stop();
    println!(
        "R: instances {}, rescheduled while pending {}, cancelled {}, runs {}",
        R_STARTED.load(Ordering::Relaxed),
        R_MOVED.load(Ordering::Relaxed),
        R_CANCELLED.load(Ordering::Relaxed),
        R.runs()
    );
    println!(
        "every instance covered: runs + cancelled == instances after each of {} batches",
        BATCHES
    );
    check_eq!(R_INFLIGHT.max(), 1);
    println!("no run nested in another: max in-flight 1");
    println!(
        "thread mode: {} flushes, {} cancel_syncs",
        flushes, cancel_syncs
    );
    check!(
        R_MOVED.load(Ordering::Relaxed) > 0,
        "no reschedule hit a pending timer"
    );
    check!(R_CANCELLED.load(Ordering::Relaxed) > 0, "nothing cancelled");
    println!(
        "deadline hook: armed {} times, fired {} times",
        ARMS.load(Ordering::Relaxed),
        FIRED.load(Ordering::Relaxed)
    );
    h::preempt::report();
    check_eq!(h::preempt::MAX_DEPTH.load(Ordering::Relaxed), 3);
    println!("delayed_work: ok");
    h::exit_ok()
}
