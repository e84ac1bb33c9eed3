//! Mailbox ends held by the contexts that use them, with no `unsafe` in
//! this file: the route a firmware takes with `cortex-m-rt`.
//!
//! - The low interrupt (`GPIOA`, pended through the NVIC) keeps the
//!   producer end of a `Mailbox<u16, 8>` in its `static mut` local, which
//!   `#[interrupt]` turns into a safe `&mut`: it starts as `None` and the
//!   handler takes the end on its first run (`take_producer`, one
//!   compare-and-swap, top-half safe). Each run pushes a burst of 10
//!   samples into the 7-item ring, so 3 are refused and counted.
//! - The middle interrupt (`GPIOB`) pushes into an `MpscMailbox<u16, 8>`
//!   (producers push through `&self`: no end to hold).
//! - Two tasklets consume: each takes its mailbox's consumer end at the
//!   start of a run and gives it back when the run ends (runs of a tasklet
//!   never overlap).
//!
//! Checks: the handler took its end exactly once and keeps it (thread
//! mode's `take_producer` is `None`); every sample arrives once and in
//! order or is counted dropped (by the handler and by `dropped()`); both
//! consumer ends are free at the end.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, Mailbox, MpscMailbox, Producer, Runtime, Tasklet};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, interrupt, println, AtomicU32, Ordering, PendSvBoard, IRQ_LOW,
    IRQ_MID,
};
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<PendSvBoard>, 1> = Runtime::new(Config::DEFAULT);

/// Samples from the low interrupt (one producer).
static SAMPLES: Mailbox<u16, 8> = Mailbox::new();
/// Events from the middle interrupt (any number of producers).
static EVENTS: MpscMailbox<u16, 8> = MpscMailbox::new();

static SAMPLES_BH: Tasklet = Tasklet::new(&RT, samples_bh);
static EVENTS_BH: Tasklet = Tasklet::new(&RT, events_bh);

const ROUNDS: u32 = 50;
/// Samples per low interrupt: more than the ring holds (7).
const BURST: u16 = 10;

/// Producer-end takes by the low interrupt.
static TAKES: AtomicU32 = AtomicU32::new(0);
static SAMPLES_PUSHED: AtomicU32 = AtomicU32::new(0);
static SAMPLES_DROPPED: AtomicU32 = AtomicU32::new(0);
static SAMPLES_SEEN: AtomicU32 = AtomicU32::new(0);
/// The next sample the tasklet expects (samples that were pushed are
/// numbered 0, 1, 2, ... in push order).
static SAMPLES_NEXT: AtomicU32 = AtomicU32::new(0);
static EVENTS_PUSHED: AtomicU32 = AtomicU32::new(0);
static EVENTS_SEEN: AtomicU32 = AtomicU32::new(0);
static CONSUMER_REFUSED: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    // `#[interrupt]` turns this into a `&mut Option<..>` local to the
    // handler: no `unsafe`, no cell.
    static mut TX: Option<Producer<'static, u16, 8>> = None;
    let _th = h::preempt::TopHalf::enter();
    if TX.is_none() {
        TAKES.fetch_add(1, Ordering::Relaxed);
        *TX = SAMPLES.take_producer();
    }
    let Some(tx) = TX else {
        h::fail(format_args!("the producer end was out at the first run"))
    };
    for _ in 0..BURST {
        let n = SAMPLES_PUSHED.load(Ordering::Relaxed) as u16;
        match tx.push(n) {
            Ok(()) => SAMPLES_PUSHED.fetch_add(1, Ordering::Relaxed),
            Err(_) => SAMPLES_DROPPED.fetch_add(1, Ordering::Relaxed),
        };
    }
    SAMPLES_BH.schedule();
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    let n = EVENTS_PUSHED.load(Ordering::Relaxed) as u16;
    if EVENTS.push(n).is_ok() {
        EVENTS_PUSHED.fetch_add(1, Ordering::Relaxed);
    }
    EVENTS_BH.schedule();
}

fn samples_bh() {
    let _bh = h::preempt::bottom_half();
    let Some(rx) = SAMPLES.take_consumer() else {
        CONSUMER_REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for s in rx {
        let want = SAMPLES_NEXT.load(Ordering::Relaxed);
        check_eq!(
            u32::from(s),
            want & 0xFFFF,
            "sample lost, repeated or reordered"
        );
        SAMPLES_NEXT.store(want + 1, Ordering::Relaxed);
        SAMPLES_SEEN.fetch_add(1, Ordering::Relaxed);
    }
}

fn events_bh() {
    let _bh = h::preempt::bottom_half();
    let Some(rx) = EVENTS.take_consumer() else {
        CONSUMER_REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for e in rx {
        check_eq!(u32::from(e), EVENTS_SEEN.load(Ordering::Relaxed));
        EVENTS_SEEN.fetch_add(1, Ordering::Relaxed);
    }
}

#[exception]
fn PendSV() {
    let _drain = h::preempt::drain();
    let _ = RT.drain();
}

#[entry]
fn main() -> ! {
    h::start("isr_handoff");
    println!(
        "isr_handoff: {} rounds; GPIOA pushes bursts of {} into Mailbox<u16, 8> from its static mut local; GPIOB pushes into MpscMailbox<u16, 8>",
        ROUNDS, BURST
    );
    for _ in 0..ROUNDS {
        // A pend from thread mode is taken at once; the drain (PendSV)
        // runs when the handler returns.
        h::pend(IRQ_LOW);
        h::pend(IRQ_MID);
    }
    h::wait_for("the last drain", 10_000_000, || RT.pending(0) == 0);

    let (pushed, dropped, seen) = (
        SAMPLES_PUSHED.load(Ordering::Relaxed),
        SAMPLES_DROPPED.load(Ordering::Relaxed),
        SAMPLES_SEEN.load(Ordering::Relaxed),
    );
    println!(
        "Mailbox: pushed {}, delivered {}, dropped {} (mailbox counts {}), high-water {}",
        pushed,
        seen,
        dropped,
        SAMPLES.dropped(),
        SAMPLES.high_water()
    );
    check_eq!(pushed + dropped, ROUNDS * u32::from(BURST));
    check_eq!(seen, pushed, "every pushed sample delivered");
    check_eq!(
        SAMPLES.dropped(),
        dropped,
        "the mailbox counts every refused push"
    );
    check!(dropped > 0, "no burst overflowed the ring");
    check_eq!(SAMPLES.high_water() as usize, Mailbox::<u16, 8>::CAPACITY);
    println!(
        "MpscMailbox: pushed {}, delivered {}, dropped {}",
        EVENTS_PUSHED.load(Ordering::Relaxed),
        EVENTS_SEEN.load(Ordering::Relaxed),
        EVENTS.dropped()
    );
    check_eq!(EVENTS_PUSHED.load(Ordering::Relaxed), ROUNDS);
    check_eq!(EVENTS_SEEN.load(Ordering::Relaxed), ROUNDS);

    check_eq!(
        TAKES.load(Ordering::Relaxed),
        1,
        "the handler took its end once"
    );
    check!(
        SAMPLES.take_producer().is_none(),
        "the handler keeps its end"
    );
    println!("GPIOA took the producer end once and keeps it: yes");
    check_eq!(CONSUMER_REFUSED.load(Ordering::Relaxed), 0);
    check!(SAMPLES.take_consumer().is_some());
    check!(EVENTS.take_consumer().is_some());
    println!("the tasklets took and gave back their consumer ends at every run: yes");
    println!("isr_handoff: ok");
    h::exit_ok()
}
