//! Softirqs raised from interrupts while the drain runs.
//!
//! Three vectors, each raised by its own top half: NET (3) by the middle
//! interrupt at every SysTick event, TIMER (1) by the high one, BLOCK (9)
//! by the low one. NET's handler busy-works for longer than a SysTick
//! period, so the interrupt that raises NET keeps arriving while NET's
//! handler runs: every pass of the drain finds NET raised again, and the
//! drain (max 3 restarts) runs out of budget. It then re-pends PendSV and
//! returns instead of spinning; the next PendSV entry takes over the rest.
//!
//! Checks: per vector, raises == runs + coalesced exactly (nothing lost,
//! nothing run twice for one raise; `Stats::raised` agrees); the last
//! raise of each vector is covered by a run; the budget was exhausted, each
//! exhaustion re-pended PendSV exactly once and the next drain found the
//! work left; at the end nothing is pending.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, DrainOutcome, Runtime, Vector};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, Ordering,
    PendSvBoard, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

const MAX_RESTART: u32 = 3;
static RT: Runtime<BareMetal<PendSvBoard>, 1> =
    Runtime::new(Config::DEFAULT.max_restart(MAX_RESTART));

const TICKS: u32 = 600;
const RELOAD: u32 = 39;
/// NET's handler: longer than a SysTick period.
const NET_WORK: u32 = 1_500;
const OTHER_WORK: u32 = 100;

const NV: usize = 3;
const VECTORS: [Vector; NV] = [Vector::new(3), Vector::new(1), Vector::new(9)];
const NAMES: [&str; NV] = [
    "NET (3, raised by mid)",
    "TIMER (1, raised by high)",
    "BLOCK (9, raised by low)",
];
const NET: usize = 0;
const TIMER: usize = 1;
const BLOCK: usize = 2;

struct Track {
    raises: AtomicU32,
    runs: AtomicU32,
    stamp: AtomicU32,
    covered: AtomicU32,
    running: AtomicBool,
    raised_while_running: AtomicU32,
}

impl Track {
    const fn new() -> Track {
        Track {
            raises: AtomicU32::new(0),
            runs: AtomicU32::new(0),
            stamp: AtomicU32::new(0),
            covered: AtomicU32::new(0),
            running: AtomicBool::new(false),
            raised_while_running: AtomicU32::new(0),
        }
    }
}

static TRACK: [Track; NV] = [const { Track::new() }; NV];
static SEQ: AtomicU32 = AtomicU32::new(0);

fn raise(i: usize) {
    let tr = &TRACK[i];
    if tr.running.load(Ordering::SeqCst) {
        tr.raised_while_running.fetch_add(1, Ordering::Relaxed);
    }
    tr.raises.fetch_add(1, Ordering::Relaxed);
    RT.raise(VECTORS[i]);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    tr.stamp.fetch_max(seq, Ordering::SeqCst);
}

fn handler(i: usize, work: u32) {
    let _bh = h::preempt::bottom_half();
    let tr = &TRACK[i];
    check!(
        !tr.running.load(Ordering::SeqCst),
        "{} handler nested in itself",
        NAMES[i]
    );
    tr.running.store(true, Ordering::SeqCst);
    tr.covered
        .store(tr.stamp.load(Ordering::SeqCst), Ordering::SeqCst);
    tr.runs.fetch_add(1, Ordering::Relaxed);
    h::spin(work);
    tr.running.store(false, Ordering::SeqCst);
}

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    raise(BLOCK);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    raise(NET);
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    raise(TIMER);
}

static TICKS_LEFT: AtomicU32 = AtomicU32::new(TICKS);
static DONE: AtomicBool = AtomicBool::new(false);
static RNG: AtomicU32 = AtomicU32::new(0x0bad_cafe);

#[exception]
fn SysTick() {
    h::pend(IRQ_MID); // NET, every tick
    let r = h::xorshift(&RNG);
    if r & 3 == 0 {
        h::pend(IRQ_HIGH);
    }
    if r & 12 == 0 {
        h::pend(IRQ_LOW);
    }
    if TICKS_LEFT.fetch_sub(1, Ordering::Relaxed) == 1 {
        h::systick_stop();
        DONE.store(true, Ordering::SeqCst);
    }
}

static PENDSV: AtomicU32 = AtomicU32::new(0);
static PENDSV_IDLE: AtomicU32 = AtomicU32::new(0);
static COMPLETE: AtomicU32 = AtomicU32::new(0);
static REMAINING: AtomicU32 = AtomicU32::new(0);
static BUSY: AtomicU32 = AtomicU32::new(0);
static LAST_WAS_REMAINING: AtomicBool = AtomicBool::new(false);
static HANDED_OVER: AtomicU32 = AtomicU32::new(0);

#[exception]
fn PendSV() {
    PENDSV.fetch_add(1, Ordering::Relaxed);
    let pending = RT.pending(0);
    if pending == 0 {
        PENDSV_IDLE.fetch_add(1, Ordering::Relaxed);
    }
    if LAST_WAS_REMAINING.load(Ordering::Relaxed) {
        // The previous drain ran out of budget: this entry is the re-pend.
        check!(pending != 0, "a drain ran out of budget but left nothing");
        HANDED_OVER.fetch_add(1, Ordering::Relaxed);
    }
    let _drain = h::preempt::drain();
    let outcome = RT.drain();
    LAST_WAS_REMAINING.store(outcome == DrainOutcome::Remaining, Ordering::Relaxed);
    match outcome {
        DrainOutcome::Complete => &COMPLETE,
        DrainOutcome::Remaining => {
            check!(
                SCB::is_pendsv_pending(),
                "a drain out of budget did not re-pend PendSV"
            );
            &REMAINING
        }
        DrainOutcome::Busy => &BUSY,
        // This firmware takes no bottom-half guard.
        DrainOutcome::Disabled => h::fail(format_args!("the drain found bottom halves off")),
    }
    .fetch_add(1, Ordering::Relaxed);
}

#[entry]
fn main() -> ! {
    h::start("softirq_budget");
    RT.register(VECTORS[NET], "NET", |_| handler(NET, NET_WORK))
        .unwrap();
    RT.register(VECTORS[TIMER], "TIMER", |_| handler(TIMER, OTHER_WORK))
        .unwrap();
    RT.register(VECTORS[BLOCK], "BLOCK", |_| handler(BLOCK, OTHER_WORK))
        .unwrap();
    println!(
        "softirq_budget: {} SysTick events; NET raised at each, its handler longer than the period; max_restart {}",
        TICKS, MAX_RESTART
    );
    h::systick_start(RELOAD);
    h::wait_for("the end of the storm", 100_000_000, || {
        DONE.load(Ordering::SeqCst)
    });
    // Thread mode runs only when no handler is active or pending.
    check!(!SCB::is_pendsv_pending());
    check_eq!(RT.pending(0), 0, "work left pending after the storm");

    let stats = RT.stats();
    for i in 0..NV {
        let v = VECTORS[i];
        let tr = &TRACK[i];
        let raises = tr.raises.load(Ordering::Relaxed);
        println!(
            "{}: raised {}, runs {}, coalesced {}, raised while its handler ran {}",
            NAMES[i],
            raises,
            stats.runs(0, v),
            stats.coalesced(0, v),
            tr.raised_while_running.load(Ordering::Relaxed)
        );
        check_eq!(
            stats.runs(0, v),
            tr.runs.load(Ordering::Relaxed),
            "{}",
            NAMES[i]
        );
        check_eq!(
            raises,
            stats.runs(0, v) + stats.coalesced(0, v),
            "{}: raises == runs + coalesced",
            NAMES[i]
        );
        check_eq!(stats.raised(0, v), raises, "{}: Stats::raised", NAMES[i]);
        check_eq!(stats.unhandled(0, v), 0);
        check_eq!(
            tr.covered.load(Ordering::SeqCst),
            tr.stamp.load(Ordering::SeqCst),
            "{}: the last raise is covered by a run",
            NAMES[i]
        );
    }
    println!(
        "nothing lost: raises == runs + coalesced for all {} vectors",
        NV
    );
    check!(TRACK[NET].raised_while_running.load(Ordering::Relaxed) > 0);
    println!("NET raised by an interrupt while its own handler ran: yes");

    let exhausted = stats.budget_exhausted(0);
    println!(
        "drains (PendSV entries): {} (complete {}, out of budget {}, busy {}; found nothing pending {})",
        PENDSV.load(Ordering::Relaxed),
        COMPLETE.load(Ordering::Relaxed),
        REMAINING.load(Ordering::Relaxed),
        BUSY.load(Ordering::Relaxed),
        PENDSV_IDLE.load(Ordering::Relaxed)
    );
    println!(
        "restarts: {}, budget exhausted: {}",
        stats.restarts(0),
        exhausted
    );
    check!(exhausted > 0, "the restart budget was never exhausted");
    println!("restart budget exhausted: yes");
    check_eq!(REMAINING.load(Ordering::Relaxed), exhausted);
    check_eq!(h::REPENDS_BY_DRAIN.load(Ordering::Relaxed), exhausted);
    check_eq!(HANDED_OVER.load(Ordering::Relaxed), exhausted);
    println!("every exhausted drain re-pended PendSV once, and the next drain took the rest: yes");
    check_eq!(BUSY.load(Ordering::Relaxed), 0);

    h::preempt::report();
    h::preempt::check_preempted();
    println!("pending at the end: {}", RT.pending(0));
    println!("softirq_budget: ok");
    h::exit_ok()
}
