//! Mailboxes filled from interrupts faster than the bottom half drains
//! them.
//!
//! - `Mailbox<u32, 16>` (single producer, capacity 15): the low-priority
//!   interrupt takes the producer end on its first run and keeps it in its
//!   `static mut` local; the tasklet takes the consumer end on each run.
//!   No `unsafe` hands either end over.
//! - `MpscMailbox<u32, 16>` (capacity 16), fed by the middle and the high
//!   interrupt (the high one preempts the middle one, sometimes inside its
//!   `push`), drained by a second tasklet.
//!
//! At every SysTick event some of the three interrupts fire and each
//! pushes a burst; the tasklets pop slowly. Each item carries its
//! producer's number and a sequence number that advances only when a push
//! succeeds, so the consumer can check that every accepted item arrives
//! exactly once and in order; every refused one is counted by the producer
//! and by the mailbox. The counts are printed.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, Mailbox, MpscMailbox, Producer, Runtime, Tasklet};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, interrupt, println, AtomicBool, AtomicU32, Ordering, PendSvBoard,
    IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<PendSvBoard>, 1> = Runtime::new(Config::DEFAULT);

const TICKS: u32 = 1200;
const RELOAD: u32 = 79;
const BURST: u32 = 4;
/// Busy work per popped item: the bottom half is slower than the flood.
const CONSUME_WORK: u32 = 60;
/// The middle producer's burst.
const MID_BURST: u32 = 8;

static SPSC: Mailbox<u32, 16> = Mailbox::new();
static MPSC: MpscMailbox<u32, 16> = MpscMailbox::new();
/// Producer-end takes by the low interrupt (it takes it on first use).
static TAKES: AtomicU32 = AtomicU32::new(0);

static RX_SPSC: Tasklet = Tasklet::new(&RT, rx_spsc);
static RX_MPSC: Tasklet = Tasklet::new(&RT, rx_mpsc);

/// Producers: 0 = low (SPSC), 1 = mid (MPSC), 2 = high (MPSC).
const NP: usize = 3;
const PRODUCER_NAMES: [&str; NP] = ["low", "mid", "high"];

struct Producing {
    attempts: AtomicU32,
    /// Accepted pushes; also the next sequence number.
    pushed: AtomicU32,
    dropped: AtomicU32,
    /// Next sequence number the consumer expects.
    expect: AtomicU32,
    delivered: AtomicU32,
}

impl Producing {
    const fn new() -> Producing {
        Producing {
            attempts: AtomicU32::new(0),
            pushed: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            expect: AtomicU32::new(0),
            delivered: AtomicU32::new(0),
        }
    }
}

static P: [Producing; NP] = [const { Producing::new() }; NP];

fn item(p: usize) -> u32 {
    ((p as u32) << 24) | P[p].pushed.load(Ordering::Relaxed)
}

fn accepted(p: usize, ok: bool) {
    P[p].attempts.fetch_add(1, Ordering::Relaxed);
    if ok {
        P[p].pushed.fetch_add(1, Ordering::Relaxed);
    } else {
        P[p].dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn consume(x: u32) {
    let p = (x >> 24) as usize;
    check!(p < NP, "garbage item {:#x}", x);
    let seq = x & 0xFF_FFFF;
    let want = P[p].expect.load(Ordering::Relaxed);
    check_eq!(
        seq,
        want,
        "producer {}: item out of order, lost or duplicated",
        PRODUCER_NAMES[p]
    );
    P[p].expect.store(want + 1, Ordering::Relaxed);
    P[p].delivered.fetch_add(1, Ordering::Relaxed);
    h::spin(CONSUME_WORK);
}

fn rx_spsc() {
    let _bh = h::preempt::bottom_half();
    // Runs of a tasklet never overlap, so the end is free at every run;
    // dropping the handle at the end of the run gives it back.
    let Some(mut rx) = SPSC.take_consumer() else {
        h::fail(format_args!("Mailbox::take_consumer: the end is out"))
    };
    while let Some(x) = rx.pop() {
        check_eq!(x >> 24, 0);
        consume(x);
    }
}

fn rx_mpsc() {
    let _bh = h::preempt::bottom_half();
    let mut rx = match MPSC.consumer() {
        Ok(rx) => rx,
        Err(e) => h::fail(format_args!("MpscMailbox::consumer: {}", e)),
    };
    while let Some(x) = rx.pop() {
        check!(x >> 24 == 1 || x >> 24 == 2);
        consume(x);
    }
}

#[interrupt]
fn GPIOA() {
    // cortex-m-rt turns this into a `&mut` that only this handler sees.
    static mut TX: Option<Producer<'static, u32, 16>> = None;
    let _th = h::preempt::TopHalf::enter();
    if TX.is_none() {
        TAKES.fetch_add(1, Ordering::Relaxed);
        *TX = SPSC.take_producer();
    }
    let Some(tx) = TX else {
        h::fail(format_args!("Mailbox::take_producer: the end is out"))
    };
    for _ in 0..BURST {
        let ok = tx.push(item(0)).is_ok();
        accepted(0, ok);
    }
    RX_SPSC.schedule();
}

/// The middle producer is inside `MPSC.push`.
static MID_IN_PUSH: AtomicBool = AtomicBool::new(false);
static PREEMPTED_PUSH: AtomicU32 = AtomicU32::new(0);
static DROP_NOT_FULL: AtomicU32 = AtomicU32::new(0);

fn mpsc_push(p: usize) {
    let x = item(p);
    if p == 1 {
        MID_IN_PUSH.store(true, Ordering::SeqCst);
    }
    let ok = MPSC.push(x).is_ok();
    if p == 1 {
        MID_IN_PUSH.store(false, Ordering::SeqCst);
    }
    if !ok && MPSC.len() != 16 {
        DROP_NOT_FULL.fetch_add(1, Ordering::Relaxed);
    }
    accepted(p, ok);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    // A long burst: SysTick (and the high producer it pends) lands at
    // varying points of it, sometimes inside `push`.
    for _ in 0..MID_BURST {
        mpsc_push(1);
    }
    RX_MPSC.schedule();
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    if MID_IN_PUSH.load(Ordering::SeqCst) {
        PREEMPTED_PUSH.fetch_add(1, Ordering::Relaxed);
    }
    for _ in 0..BURST {
        mpsc_push(2);
    }
    RX_MPSC.schedule();
}

static TICKS_LEFT: AtomicU32 = AtomicU32::new(TICKS);
static DONE: AtomicBool = AtomicBool::new(false);
static RNG: AtomicU32 = AtomicU32::new(0x5eed_1234);

/// The previous event pended the middle producer.
static FOLLOW_UP: AtomicBool = AtomicBool::new(false);

#[exception]
fn SysTick() {
    let r = h::xorshift(&RNG);
    if r & 1 != 0 {
        h::pend(IRQ_LOW);
    }
    // After an event that started the middle producer's burst, the next
    // one comes soon and brings the high producer: it lands inside the
    // burst, often inside a `push`.
    let follow_up = FOLLOW_UP.swap(false, Ordering::Relaxed);
    if r & 4 != 0 || follow_up {
        h::pend(IRQ_HIGH);
    }
    if r & 2 != 0 && !follow_up {
        h::pend(IRQ_MID);
        FOLLOW_UP.store(true, Ordering::Relaxed);
        h::systick_set_reload(1 + (r >> 8) % 4);
    } else {
        // Jitter: the next event comes after 2..=RELOAD+1 SysTick counts.
        h::systick_set_reload(1 + (r >> 8) % RELOAD);
    }
    if TICKS_LEFT.fetch_sub(1, Ordering::Relaxed) == 1 {
        h::systick_stop();
        DONE.store(true, Ordering::SeqCst);
    }
}

#[exception]
fn PendSV() {
    let _drain = h::preempt::drain();
    let _ = RT.drain(); // out of budget: PendSV is pended again
}

#[entry]
fn main() -> ! {
    h::start("mailbox_flood");
    println!(
        "mailbox_flood: {} SysTick events; bursts of {} (mid: {}) pushes from 3 priorities; slow consumers",
        TICKS, BURST, MID_BURST
    );
    h::systick_start(RELOAD);
    h::wait_for("the end of the flood", 100_000_000, || {
        DONE.load(Ordering::SeqCst)
    });
    check_eq!(RT.pending(0), 0);

    let mut ok = true;
    for p in 0..NP {
        let s = &P[p];
        let (attempts, pushed, dropped, delivered) = (
            s.attempts.load(Ordering::Relaxed),
            s.pushed.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.delivered.load(Ordering::Relaxed),
        );
        println!(
            "{} producer ({}): attempts {}, pushed {}, delivered {}, dropped {}",
            PRODUCER_NAMES[p],
            if p == 0 { "Mailbox" } else { "MpscMailbox" },
            attempts,
            pushed,
            delivered,
            dropped
        );
        ok &= attempts == pushed + dropped && delivered == pushed;
        check_eq!(attempts, pushed + dropped);
        check_eq!(
            delivered,
            pushed,
            "producer {}: every accepted item delivered",
            PRODUCER_NAMES[p]
        );
    }
    let spsc_dropped = P[0].dropped.load(Ordering::Relaxed);
    let mpsc_dropped = P[1].dropped.load(Ordering::Relaxed) + P[2].dropped.load(Ordering::Relaxed);
    println!(
        "Mailbox<u32, 16>: capacity {}, high-water {}, dropped {}",
        Mailbox::<u32, 16>::CAPACITY,
        SPSC.high_water(),
        SPSC.dropped()
    );
    println!(
        "MpscMailbox<u32, 16>: capacity {}, high-water {}, dropped {}",
        MpscMailbox::<u32, 16>::CAPACITY,
        MPSC.high_water(),
        MPSC.dropped()
    );
    check_eq!(
        SPSC.dropped(),
        spsc_dropped,
        "the mailbox counts every refused push"
    );
    check_eq!(
        MPSC.dropped(),
        mpsc_dropped,
        "the mailbox counts every refused push"
    );
    check!(
        spsc_dropped > 0 && mpsc_dropped > 0,
        "the flood never filled a mailbox"
    );
    check_eq!(SPSC.high_water() as usize, Mailbox::<u32, 16>::CAPACITY);
    check_eq!(MPSC.high_water() as usize, MpscMailbox::<u32, 16>::CAPACITY);
    println!("both mailboxes overflowed; high-water == capacity: yes");
    check!(ok);
    println!("every item delivered exactly once and in order, or counted dropped: yes");
    println!(
        "MPSC pushes by the high interrupt while the middle one was inside push: {}",
        PREEMPTED_PUSH.load(Ordering::Relaxed)
    );
    check!(
        PREEMPTED_PUSH.load(Ordering::Relaxed) > 0,
        "no push preempted another"
    );
    check_eq!(
        DROP_NOT_FULL.load(Ordering::Relaxed),
        0,
        "an MPSC push failed while space remained"
    );
    println!("an MPSC push failed only when all 16 slots were queued or reserved: yes");
    check_eq!(MPSC.len(), 0);
    check_eq!(
        TAKES.load(Ordering::Relaxed),
        1,
        "the handler took its end once"
    );
    check!(SPSC.take_producer().is_none(), "the handler keeps its end");
    check!(SPSC.split().is_err(), "one producer at a time");
    match SPSC.take_consumer() {
        Some(rx) => check!(rx.is_empty()),
        None => h::fail(format_args!("the tasklet kept the consumer end")),
    }
    println!("both mailboxes empty at the end: yes");
    h::preempt::report();
    h::preempt::check_preempted();
    println!("mailbox_flood: ok");
    h::exit_ok()
}
