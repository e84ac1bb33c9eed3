//! Work items in the bottom half (`Runtime::queue_work`), no_std: queued
//! from nested interrupts at three priorities, run by the PendSV drain
//! after the tasklets, cancelled from a top half, flushed, cancelled and
//! queued from thread mode while the storm goes on.
//!
//! SysTick pends a pseudo-random subset of the three top-half interrupts
//! (low pends mid, mid pends high, so three priorities nest). Items:
//!
//! - W0 from low, W1 from low, mid and high, W2 from high; W1's function
//!   queues W1 again on every fourth run (queued while running: it runs
//!   once more, after);
//! - F from the mid interrupt and from thread mode, which flushes it in a
//!   loop (the drain it waits for is PendSV, which preempts thread mode, or
//!   `flush`'s own drain of this CPU); the high interrupt cancels it (a
//!   top-half cancel: a ghost the drain skips).
//!
//! After each batch: nothing pending; for every item, runs == queues that
//! returned `true` - cancels that returned `true`, coalesced == queues
//! that returned `false`; no item ran twice at once. Every flush that
//! returned while no cancel landed meanwhile saw the run covering the
//! queue made before it. W2's function flushes and `cancel_sync`s itself
//! on some runs: `WouldDeadlock`, detected without `std`.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, DrainOutcome, Runtime, Work, WorkqueueError};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, InFlight,
    Ordering, PendSvBoard, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<PendSvBoard>, 1> = Runtime::new(Config::DEFAULT);

const BATCHES: u32 = 16;
const TICKS_PER_BATCH: u32 = 40;
const RELOAD: u32 = 39;
const WORK_SPIN: u32 = 300;

const NW: usize = 4;
const NAMES: [&str; NW] = [
    "W0 (from low)",
    "W1 (from low, mid, high; re-queues itself)",
    "W2 (from high)",
    "F  (from mid and thread mode; cancelled from high)",
];
static WORK: [Work; NW] = [
    Work::new("w0", body),
    Work::new("w1", body),
    Work::new("w2", body),
    Work::new("f", body),
];

struct Track {
    queued: AtomicU32,
    coalesced: AtomicU32,
    cancelled: AtomicU32,
    runs: AtomicU32,
    inflight: InFlight,
}

impl Track {
    const fn new() -> Track {
        Track {
            queued: AtomicU32::new(0),
            coalesced: AtomicU32::new(0),
            cancelled: AtomicU32::new(0),
            runs: AtomicU32::new(0),
            inflight: InFlight::new(),
        }
    }
}

static TRACK: [Track; NW] = [const { Track::new() }; NW];
/// Thread mode's flush stamp: stored before thread mode queues F; F's run
/// records the stamp it saw.
static STAMP: AtomicU32 = AtomicU32::new(0);
static F_SAW: AtomicU32 = AtomicU32::new(0);

fn index(w: &Work) -> usize {
    WORK.iter()
        .position(|x| core::ptr::eq(x, w))
        .unwrap_or_else(|| h::fail(format_args!("unknown work item")))
}

fn body(w: &Work) {
    let _bh = h::preempt::bottom_half();
    let i = index(w);
    let tr = &TRACK[i];
    let _one = tr.inflight.enter();
    let n = tr.runs.fetch_add(1, Ordering::SeqCst) + 1;
    if i == 3 {
        F_SAW.store(STAMP.load(Ordering::SeqCst), Ordering::SeqCst);
    }
    h::spin(WORK_SPIN);
    if i == 1 && n % 4 == 0 {
        queue(1);
    }
    if i == 2 && n % 8 == 1 {
        // Waiting for itself from its own run: refused, not a hang (no_std:
        // the queue records the item its drain runs).
        check_eq!(w.flush(), Err(WorkqueueError::WouldDeadlock));
        check_eq!(w.cancel_sync(), Err(WorkqueueError::WouldDeadlock));
        SELF_WAITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs of W2 that tried to flush and cancel_sync themselves.
static SELF_WAITS: AtomicU32 = AtomicU32::new(0);

fn queue(i: usize) {
    let tr = &TRACK[i];
    match RT.try_queue_work_on(0, &WORK[i]) {
        Ok(true) => tr.queued.fetch_add(1, Ordering::SeqCst),
        Ok(false) => tr.coalesced.fetch_add(1, Ordering::SeqCst),
        Err(e) => h::fail(format_args!("{}: queue refused: {}", NAMES[i], e)),
    };
}

fn cancel(i: usize) {
    if WORK[i].cancel() {
        TRACK[i].cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- top halves

static PATTERN: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    queue(0);
    queue(1);
    h::spin(40);
    if PATTERN.load(Ordering::Relaxed) & 8 != 0 {
        h::pend(IRQ_MID);
    }
    queue(0);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    queue(1);
    queue(3);
    if PATTERN.load(Ordering::Relaxed) & 16 != 0 {
        h::pend(IRQ_HIGH);
    }
    h::spin(40);
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    queue(1);
    queue(2);
    if PATTERN.load(Ordering::Relaxed) & 32 != 0 {
        cancel(3);
    }
}

static RNG: AtomicU32 = AtomicU32::new(0x2545_f491);
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

static DRAINS: AtomicU32 = AtomicU32::new(0);
static DRAIN_BUSY: AtomicU32 = AtomicU32::new(0);

#[exception]
fn PendSV() {
    DRAINS.fetch_add(1, Ordering::Relaxed);
    let _drain = h::preempt::drain();
    match RT.drain() {
        DrainOutcome::Complete | DrainOutcome::Remaining => {}
        // Thread mode's flush drains this CPU too; PendSV may preempt it.
        DrainOutcome::Busy => {
            DRAIN_BUSY.fetch_add(1, Ordering::Relaxed);
        }
        DrainOutcome::Disabled => h::fail(format_args!("the drain found bottom halves off")),
    }
}

// ---------------------------------------------------------------- main

#[entry]
fn main() -> ! {
    h::start("bh_work");
    println!(
        "bh_work: {} batches of {} SysTick events; 3 top-half priorities, {} work items; drain in PendSV",
        BATCHES, TICKS_PER_BATCH, NW
    );
    let (mut flushes, mut flushes_checked, mut cancel_syncs) = (0u32, 0u32, 0u32);
    for batch in 0..BATCHES {
        BATCH_DONE.store(false, Ordering::SeqCst);
        TICKS_LEFT.store(TICKS_PER_BATCH, Ordering::SeqCst);
        h::systick_start(RELOAD);
        // Thread mode, racing the storm: queue F, flush it; every eighth
        // round cancel_sync it instead.
        let mut round = 0u32;
        while !BATCH_DONE.load(Ordering::SeqCst) {
            round += 1;
            let stamp = STAMP.fetch_add(1, Ordering::SeqCst) + 1;
            let cancels_before = TRACK[3].cancelled.load(Ordering::SeqCst);
            queue(3);
            if round % 8 == 0 {
                // Thread mode runs only when no drain is active: nothing
                // runs F now, so cancel_sync never has to wait here.
                match WORK[3].cancel_sync() {
                    Ok(true) => {
                        TRACK[3].cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(false) => {}
                    Err(e) => h::fail(format_args!("cancel_sync: {}", e)),
                }
                check!(!WORK[3].is_running(), "F running after cancel_sync");
                cancel_syncs += 1;
                continue;
            }
            check!(WORK[3].flush().is_ok(), "flush failed");
            flushes += 1;
            if TRACK[3].cancelled.load(Ordering::SeqCst) == cancels_before {
                flushes_checked += 1;
                check!(
                    F_SAW.load(Ordering::SeqCst) >= stamp,
                    "batch {}: flush returned before the run covering its queue",
                    batch
                );
            }
        }
        h::wait_for("the end of a batch", 50_000_000, || {
            RT.pending(0) == 0 && !SCB::is_pendsv_pending()
        });
        for i in 0..NW {
            let w = &WORK[i];
            let tr = &TRACK[i];
            check!(!w.is_pending() && !w.is_running(), "{}", NAMES[i]);
            check_eq!(w.runs(), tr.runs.load(Ordering::SeqCst), "{}", NAMES[i]);
            check_eq!(
                w.coalesced(),
                tr.coalesced.load(Ordering::SeqCst),
                "{}: coalesced == queues that returned false",
                NAMES[i]
            );
            check_eq!(
                w.runs() + tr.cancelled.load(Ordering::SeqCst),
                tr.queued.load(Ordering::SeqCst),
                "{}: runs + cancelled == queues that returned true",
                NAMES[i]
            );
        }
    }
    for i in 0..NW {
        let tr = &TRACK[i];
        println!(
            "{}: queued {}, coalesced {}, cancelled {}, runs {}",
            NAMES[i],
            tr.queued.load(Ordering::Relaxed),
            tr.coalesced.load(Ordering::Relaxed),
            tr.cancelled.load(Ordering::Relaxed),
            WORK[i].runs()
        );
    }
    println!(
        "every queue covered: runs + cancelled == queued, coalesced counted, for all {} items after each of {} batches",
        NW,
        BATCHES
    );
    let max_inflight = TRACK.iter().map(|t| t.inflight.max()).max().unwrap_or(0);
    check_eq!(max_inflight, 1);
    println!("no item ran twice at once: max in-flight {}", max_inflight);
    println!(
        "thread mode: {} flushes ({} with no cancel meanwhile saw their run), {} cancel_syncs",
        flushes, flushes_checked, cancel_syncs
    );
    check!(flushes_checked > 0, "no flush was checked");
    check!(
        SELF_WAITS.load(Ordering::Relaxed) > 0,
        "no self-flush tried"
    );
    println!(
        "flush and cancel_sync from the item's own run: WouldDeadlock ({} runs tried)",
        SELF_WAITS.load(Ordering::Relaxed)
    );
    check!(
        TRACK[3].cancelled.load(Ordering::Relaxed) > 0,
        "no top-half cancel hit a pending item"
    );
    h::preempt::report();
    check_eq!(h::preempt::MAX_DEPTH.load(Ordering::Relaxed), 3);
    h::preempt::check_preempted();
    println!(
        "PendSV drains: {} (busy: preempted thread mode's own drain {})",
        DRAINS.load(Ordering::Relaxed),
        DRAIN_BUSY.load(Ordering::Relaxed)
    );
    println!("bh_work: ok");
    h::exit_ok()
}
