//! The bottom-half-off guard under a storm at three interrupt priorities.
//!
//! Thread mode updates a two-word record (`A`, `B`) that the bottom halves
//! read, holding `Runtime::bh_disable` around the update (nested guards in
//! every other round), while SysTick pends the three top-half interrupts:
//! each raises its own vector and schedules a shared tasklet. PendSV, the
//! drain, keeps being pended during the update; the drain finds bottom
//! halves off and returns `Disabled`. The last guard's drop pends PendSV
//! again (BareMetal does not drain in thread mode), so the work raised
//! meanwhile runs before thread mode goes on.
//!
//! Checks: no bottom half ran while a guard was held, and every one saw
//! the record consistent (`A == B`; with the guard turned into a no-op the
//! bottom halves see torn records and the firmware fails); drains did meet
//! the guard (`Disabled` > 0); right after each last drop nothing is
//! pending and the last raise made under the guard has run; per vector,
//! raises == runs + coalesced, and the tasklet ran once per schedule that
//! returned `true` (nothing lost, nothing run twice).

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, DrainOutcome, Runtime, Tasklet, Vector};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, Ordering,
    PendSvBoard, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<PendSvBoard>, 1> = Runtime::new(Config::DEFAULT);

const ROUNDS: u32 = 40;
/// SysTick period in instructions (virtual nanoseconds).
const RELOAD: u32 = 40;
/// Thread-mode work between the two halves of a record update, and after
/// it without the guard (both several SysTick periods).
const UPDATE_WORK: u32 = 20_000;
const OPEN_WORK: u32 = 5_000;

const NV: usize = 3;
const VECTORS: [Vector; NV] = [Vector::new(2), Vector::new(4), Vector::new(8)];
const NAMES: [&str; NV] = [
    "LOG (2, raised by low)",
    "NET (4, raised by mid)",
    "MOTOR (8, raised by high)",
];

/// The record thread mode updates under the guard.
static A: AtomicU32 = AtomicU32::new(0);
static B: AtomicU32 = AtomicU32::new(0);
/// Set by thread mode while it holds a guard (after `bh_disable` returned,
/// until just before the last drop).
static HELD: AtomicBool = AtomicBool::new(false);

/// Bottom halves that ran while `HELD` was set.
static RAN_WHILE_HELD: AtomicU32 = AtomicU32::new(0);
/// Bottom halves that found the record torn (`A != B`).
static TORN: AtomicU32 = AtomicU32::new(0);
/// Raises and schedules made while `HELD` was set.
static RAISED_WHILE_HELD: AtomicU32 = AtomicU32::new(0);

struct Track {
    raises: AtomicU32,
    runs: AtomicU32,
    /// Sequence number of the latest raise, and the latest one a run covered.
    stamp: AtomicU32,
    covered: AtomicU32,
}

impl Track {
    const fn new() -> Track {
        Track {
            raises: AtomicU32::new(0),
            runs: AtomicU32::new(0),
            stamp: AtomicU32::new(0),
            covered: AtomicU32::new(0),
        }
    }
}

static TRACK: [Track; NV] = [const { Track::new() }; NV];
static SEQ: AtomicU32 = AtomicU32::new(0);

static TASKLET_QUEUED: AtomicU32 = AtomicU32::new(0);
static TASKLET_COALESCED: AtomicU32 = AtomicU32::new(0);
static TASKLET_RUNS: AtomicU32 = AtomicU32::new(0);
static TASKLET: Tasklet = Tasklet::new(&RT, || {
    bottom_half_checks();
    TASKLET_RUNS.fetch_add(1, Ordering::Relaxed);
});

/// What every bottom half checks on entry.
fn bottom_half_checks() {
    let _bh = h::preempt::bottom_half();
    if HELD.load(Ordering::SeqCst) {
        RAN_WHILE_HELD.fetch_add(1, Ordering::Relaxed);
    }
    let a = A.load(Ordering::SeqCst);
    h::spin(50); // long enough for top halves to land inside
    let b = B.load(Ordering::SeqCst);
    if a != b {
        TORN.fetch_add(1, Ordering::Relaxed);
    }
}

fn handler(i: usize) {
    bottom_half_checks();
    let tr = &TRACK[i];
    tr.covered
        .store(tr.stamp.load(Ordering::SeqCst), Ordering::SeqCst);
    tr.runs.fetch_add(1, Ordering::Relaxed);
}

/// A top half's body: raise vector `i`, schedule the tasklet.
fn top_half(i: usize) {
    if HELD.load(Ordering::SeqCst) {
        RAISED_WHILE_HELD.fetch_add(1, Ordering::Relaxed);
    }
    let tr = &TRACK[i];
    tr.raises.fetch_add(1, Ordering::Relaxed);
    RT.raise(VECTORS[i]);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    tr.stamp.fetch_max(seq, Ordering::SeqCst);
    if TASKLET.schedule() {
        TASKLET_QUEUED.fetch_add(1, Ordering::Relaxed);
    } else {
        TASKLET_COALESCED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every third low top half pends the middle one from inside (it preempts
/// at once), every other middle one the high one: three levels nest.
static LOW_N: AtomicU32 = AtomicU32::new(0);
static MID_N: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    if LOW_N.fetch_add(1, Ordering::Relaxed) % 3 == 0 {
        h::pend(IRQ_MID); // taken here, nested
    }
    top_half(0);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    if MID_N.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
        h::pend(IRQ_HIGH); // taken here, nested
    }
    top_half(1);
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    top_half(2);
}

static STOP: AtomicBool = AtomicBool::new(false);
static RNG: AtomicU32 = AtomicU32::new(0x1234_5679);

#[exception]
fn SysTick() {
    if STOP.load(Ordering::SeqCst) {
        h::systick_stop();
        return;
    }
    let r = h::xorshift(&RNG);
    // At least one top half per tick; often two or three, which nest.
    if r & 1 == 0 {
        h::pend(IRQ_LOW);
    }
    if r & 6 != 0 {
        h::pend(IRQ_MID);
    }
    if r & 24 == 0 {
        h::pend(IRQ_HIGH);
    }
    h::systick_set_reload(RELOAD + (r >> 27));
}

static DISABLED: AtomicU32 = AtomicU32::new(0);
static COMPLETE: AtomicU32 = AtomicU32::new(0);

#[exception]
fn PendSV() {
    let _drain = h::preempt::drain();
    match RT.drain() {
        DrainOutcome::Complete => &COMPLETE,
        DrainOutcome::Disabled => {
            check!(HELD.load(Ordering::SeqCst) || RT.pending(0) != 0);
            &DISABLED
        }
        other => h::fail(format_args!("unexpected drain outcome {:?}", other)),
    }
    .fetch_add(1, Ordering::Relaxed);
}

#[entry]
fn main() -> ! {
    h::start("bh_guard_storm");
    let handlers: [fn(usize); NV] = [|_| handler(0), |_| handler(1), |_| handler(2)];
    for i in 0..NV {
        RT.register(VECTORS[i], NAMES[i], handlers[i]).unwrap();
    }
    println!(
        "bh_guard_storm: {} rounds; thread mode updates a two-word record under bh_disable (nested every other round) while three priorities storm",
        ROUNDS
    );
    h::systick_start(RELOAD);

    let mut raised_under_guard = 0u32;
    let mut nested_rounds = 0u32;
    for round in 1..=ROUNDS {
        let before = RAISED_WHILE_HELD.load(Ordering::Relaxed);
        let outer = RT.bh_disable();
        let inner = if round % 2 == 0 {
            nested_rounds += 1;
            Some(RT.bh_disable())
        } else {
            None
        };
        HELD.store(true, Ordering::SeqCst);
        // The update the guard protects: the two words differ in between.
        A.store(round, Ordering::SeqCst);
        h::spin(UPDATE_WORK);
        B.store(round, Ordering::SeqCst);
        check!(
            RT.pending(0) != 0,
            "round {}: nothing raised while the guard was held",
            round
        );
        HELD.store(false, Ordering::SeqCst);
        let last_seq = SEQ.load(Ordering::SeqCst);
        drop(inner);
        drop(outer);
        // Thread mode runs below PendSV: the drain pended by the last drop
        // has run, and so has every raise made up to now.
        check_eq!(
            RT.pending(0),
            0,
            "round {}: work left after the drop",
            round
        );
        let covered = TRACK
            .iter()
            .map(|t| t.covered.load(Ordering::SeqCst))
            .max()
            .unwrap_or(0);
        check!(
            covered >= last_seq,
            "round {}: the last raise under the guard ({}) has not run (covered {})",
            round,
            last_seq,
            covered
        );
        raised_under_guard += RAISED_WHILE_HELD.load(Ordering::Relaxed) - before;
        h::spin(OPEN_WORK);
    }
    STOP.store(true, Ordering::SeqCst);
    // The next tick sees STOP and stops the counter.
    h::spin(100 * RELOAD);
    check_eq!(RT.pending(0), 0, "work left pending after the storm");
    check!(!SCB::is_pendsv_pending());

    println!(
        "rounds {} (nested guards in {}); top halves while a guard was held: {}",
        ROUNDS, nested_rounds, raised_under_guard
    );
    check!(
        raised_under_guard > 0,
        "no top half ran while a guard was held"
    );
    let disabled = DISABLED.load(Ordering::Relaxed);
    println!(
        "drains: complete {}, found bottom halves off {}",
        COMPLETE.load(Ordering::Relaxed),
        disabled
    );
    check!(disabled > 0, "no drain met the guard");
    let ran = RAN_WHILE_HELD.load(Ordering::Relaxed);
    let torn = TORN.load(Ordering::Relaxed);
    println!("bottom halves run while a guard was held: {}", ran);
    println!("bottom halves that saw a torn record: {}", torn);
    check_eq!(ran, 0, "a bottom half ran under the guard");
    check_eq!(torn, 0, "a bottom half saw a half-updated record");

    let stats = RT.stats();
    for i in 0..NV {
        let v = VECTORS[i];
        let tr = &TRACK[i];
        let raises = tr.raises.load(Ordering::Relaxed);
        println!(
            "{}: raised {}, runs {}, coalesced {}",
            NAMES[i],
            raises,
            stats.runs(0, v),
            stats.coalesced(0, v)
        );
        check_eq!(stats.runs(0, v), tr.runs.load(Ordering::Relaxed));
        check_eq!(
            raises,
            stats.runs(0, v) + stats.coalesced(0, v),
            "{}",
            NAMES[i]
        );
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
    let queued = TASKLET_QUEUED.load(Ordering::Relaxed);
    let runs = TASKLET_RUNS.load(Ordering::Relaxed);
    println!(
        "tasklet: schedules {} (queued {}, coalesced {}), runs {}",
        queued + TASKLET_COALESCED.load(Ordering::Relaxed),
        queued,
        TASKLET_COALESCED.load(Ordering::Relaxed),
        runs
    );
    check_eq!(runs, queued, "tasklet runs == schedules that returned true");
    check_eq!(TASKLET.runs(), runs);
    println!("tasklet ran once per schedule that queued it: yes");
    h::preempt::report();
    check_eq!(h::preempt::MAX_DEPTH.load(Ordering::Relaxed), 3);
    h::preempt::check_preempted();
    println!("bh_guard_storm: ok");
    h::exit_ok()
}
