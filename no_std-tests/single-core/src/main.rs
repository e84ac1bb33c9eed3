//! A Cortex-M0 firmware that picks `portable-atomic`'s
//! `unsafe-assume-single-core` feature and links no `critical-section`
//! implementation at all (issue 9, item 5: the application, not the
//! library, chooses how a core without compare-and-swap gets its atomic
//! read-modify-writes).
//!
//! Before the fix, bottomhalf force-enabled portable-atomic's
//! `critical-section` feature, so this crate did not build: portable-atomic
//! rejects both modes together with a compile error.
//!
//! The scenario runs everything whose top half is a read-modify-write
//! (softirq `raise`, tasklet `schedule`, `MpscMailbox::push`) from real
//! NVIC interrupts, with the drain in PendSV:
//!
//! - 20 rounds: GPIOA pushes one sample into an `MpscMailbox` and one event
//!   into a `Mailbox`, schedules a tasklet and raises a vector; each round
//!   is drained (PendSV tail-chains) before the next.
//! - one burst: GPIOB pushes 12 samples into the 8-slot `MpscMailbox`, 6
//!   events into the 3-slot `Mailbox`, schedules the tasklet 3 times and
//!   raises the vector 3 times before the drain can run: the schedules
//!   and raises coalesce into one run each, the overflow is counted.
//!
//! Output goes through semihosting's `hio` directly (its `hprintln!` takes
//! a `critical-section` lock, which this firmware deliberately lacks).

#![no_std]
#![no_main]

use core::cell::RefCell;
use core::fmt::Write;
use core::panic::PanicInfo;

use bottomhalf::{
    BareMetal, Board, Config, Consumer, Mailbox, MpscMailbox, Producer, Runtime, Tasklet, Vector,
};
use cortex_m::interrupt::Mutex;
use cortex_m::peripheral::scb::SystemHandler;
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception, ExceptionFrame};
use cortex_m_semihosting::{debug, hio};
use lm3s6965::{interrupt, Interrupt};
use portable_atomic::{AtomicU32, Ordering::Relaxed};

/// Prints a line on the host (semihosting). Thread mode only.
macro_rules! println {
    ($($t:tt)*) => {{
        if let Ok(mut out) = hio::hstdout() {
            let _ = writeln!(out, $($t)*);
        }
    }};
}

/// Prints `FAIL: ...` and exits with failure unless `a == b`.
macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = ($a, $b);
        if a != b {
            println!(
                "FAIL: {} == {} ({} != {})",
                stringify!($a),
                stringify!($b),
                a,
                b
            );
            exit(false);
        }
    }};
}

struct Mcu;
impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
}

const ROUNDS: u32 = 20;
const BURST_SAMPLES: u32 = 12;
const BURST_EVENTS: u32 = 6;
const BURST_KICKS: u32 = 3;

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
const TICK: Vector = Vector::new(1);
static SAMPLES: MpscMailbox<u16, 8> = MpscMailbox::new();
static EVENTS: Mailbox<u32, 4> = Mailbox::new();
static EVENT_TX: Mutex<RefCell<Option<Producer<'static, u32, 4>>>> = Mutex::new(RefCell::new(None));
static EVENT_RX: Mutex<RefCell<Option<Consumer<'static, u32, 4>>>> = Mutex::new(RefCell::new(None));
static RX_BH: Tasklet = Tasklet::new(&RT, rx_bh);

// The application's own counters: portable-atomic in the mode it picked.
static IRQS: AtomicU32 = AtomicU32::new(0);
static TASKLET_RUNS: AtomicU32 = AtomicU32::new(0);
static TICK_RUNS: AtomicU32 = AtomicU32::new(0);
static SAMPLES_POPPED: AtomicU32 = AtomicU32::new(0);
static SAMPLE_SUM: AtomicU32 = AtomicU32::new(0);
static EVENTS_PUSHED: AtomicU32 = AtomicU32::new(0);
static EVENTS_POPPED: AtomicU32 = AtomicU32::new(0);
static EVENT_SUM: AtomicU32 = AtomicU32::new(0);

fn push_event(n: u32) {
    cortex_m::interrupt::free(|cs| {
        if let Some(tx) = EVENT_TX.borrow(cs).borrow_mut().as_mut() {
            EVENTS_PUSHED.fetch_add(1, Relaxed);
            let _ = tx.push(n);
        }
    });
}

/// The bottom half: empties both mailboxes.
fn rx_bh() {
    TASKLET_RUNS.fetch_add(1, Relaxed);
    if let Ok(mut rx) = SAMPLES.consumer() {
        while let Some(s) = rx.pop() {
            SAMPLES_POPPED.fetch_add(1, Relaxed);
            SAMPLE_SUM.fetch_add(u32::from(s), Relaxed);
        }
    }
    cortex_m::interrupt::free(|cs| {
        if let Some(rx) = EVENT_RX.borrow(cs).borrow_mut().as_mut() {
            while let Some(e) = rx.pop() {
                EVENTS_POPPED.fetch_add(1, Relaxed);
                EVENT_SUM.fetch_add(e, Relaxed);
            }
        }
    });
}

fn tick(_cpu: usize) {
    TICK_RUNS.fetch_add(1, Relaxed);
}

/// One device event: capture, hand off, schedule, raise.
#[interrupt]
fn GPIOA() {
    let n = IRQS.fetch_add(1, Relaxed) + 1;
    let _ = SAMPLES.push(n as u16);
    push_event(n);
    RX_BH.schedule();
    RT.raise(TICK);
}

/// A burst that overflows both mailboxes before the drain can run.
#[interrupt]
fn GPIOB() {
    for i in 0..BURST_SAMPLES {
        let _ = SAMPLES.push(100 + i as u16);
    }
    for i in 0..BURST_EVENTS {
        push_event(100 + i);
    }
    for _ in 0..BURST_KICKS {
        RX_BH.schedule();
        RT.raise(TICK);
    }
}

#[exception]
fn PendSV() {
    let _ = RT.drain();
}

/// Pends `irq` and waits until it and the PendSV drain it triggers have
/// run (both preempt thread mode at once).
fn pend(irq: Interrupt) {
    NVIC::pend(irq);
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

#[entry]
fn main() -> ! {
    let Some(mut p) = cortex_m::Peripherals::take() else {
        println!("FAIL: peripherals taken twice");
        exit(false)
    };
    let Ok((tx, rx)) = EVENTS.split() else {
        println!("FAIL: Mailbox::split");
        exit(false)
    };
    cortex_m::interrupt::free(|cs| {
        EVENT_TX.borrow(cs).replace(Some(tx));
        EVENT_RX.borrow(cs).replace(Some(rx));
    });
    if RT.register(TICK, "TICK", tick).is_err() {
        println!("FAIL: register TICK");
        exit(false);
    }
    // SAFETY: set-up in thread mode before any of these interrupts is
    // pended; PendSV at the lowest priority so it drains after a handler.
    unsafe {
        p.SCB.set_priority(SystemHandler::PendSV, 0xFF);
        NVIC::unmask(Interrupt::GPIOA);
        NVIC::unmask(Interrupt::GPIOB);
    }

    println!("single-core: Cortex-M0, portable-atomic unsafe-assume-single-core, no critical-section implementation");

    for round in 1..=ROUNDS {
        pend(Interrupt::GPIOA);
        check_eq!(TASKLET_RUNS.load(Relaxed), round);
        check_eq!(TICK_RUNS.load(Relaxed), round);
    }
    let sum: u32 = (1..=ROUNDS).sum();
    check_eq!(SAMPLES_POPPED.load(Relaxed), ROUNDS);
    check_eq!(SAMPLE_SUM.load(Relaxed), sum);
    check_eq!(EVENTS_POPPED.load(Relaxed), ROUNDS);
    check_eq!(EVENT_SUM.load(Relaxed), sum);
    check_eq!(SAMPLES.dropped(), 0);
    check_eq!(EVENTS.dropped(), 0);
    println!(
        "rounds: {} interrupts, {} tasklet runs, {} TICK runs; MpscMailbox<u16, 8> popped {} (sum {}), Mailbox<u32, 4> popped {} (sum {}), 0 dropped",
        IRQS.load(Relaxed),
        TASKLET_RUNS.load(Relaxed),
        TICK_RUNS.load(Relaxed),
        SAMPLES_POPPED.load(Relaxed),
        SAMPLE_SUM.load(Relaxed),
        EVENTS_POPPED.load(Relaxed),
        EVENT_SUM.load(Relaxed)
    );

    pend(Interrupt::GPIOB);
    let samples = SAMPLES_POPPED.load(Relaxed) - ROUNDS;
    let events = EVENTS_POPPED.load(Relaxed) - ROUNDS;
    // Coalescing: three schedules and three raises before the drain ran.
    check_eq!(TASKLET_RUNS.load(Relaxed), ROUNDS + 1);
    check_eq!(TICK_RUNS.load(Relaxed), ROUNDS + 1);
    // Nothing lost: every push is popped or counted as dropped.
    check_eq!(samples, 8);
    check_eq!(samples + SAMPLES.dropped(), BURST_SAMPLES);
    check_eq!(events, Mailbox::<u32, 4>::CAPACITY as u32);
    check_eq!(events + EVENTS.dropped(), BURST_EVENTS);
    check_eq!(EVENTS_PUSHED.load(Relaxed), ROUNDS + BURST_EVENTS);
    println!(
        "burst: {} schedules, {} raises -> {} tasklet run, {} TICK run; MpscMailbox {} pushed, {} popped, {} dropped; Mailbox {} pushed, {} popped, {} dropped",
        BURST_KICKS,
        BURST_KICKS,
        TASKLET_RUNS.load(Relaxed) - ROUNDS,
        TICK_RUNS.load(Relaxed) - ROUNDS,
        BURST_SAMPLES,
        samples,
        SAMPLES.dropped(),
        BURST_EVENTS,
        events,
        EVENTS.dropped()
    );
    println!("single-core: ok");
    exit(true)
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Not reached under QEMU with semihosting enabled.
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    cortex_m::interrupt::disable();
    println!("FAIL: panic: {}", info);
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    println!("FAIL: HardFault at pc {:#010x}", frame.pc());
    exit(false)
}
