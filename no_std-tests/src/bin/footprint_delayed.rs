//! The minimal firmware (`footprint`) plus one bottom-half work item and
//! one delayed work item with a board deadline hook: its `.text` minus
//! `footprint`'s is what work items and delayed work add (issue 10's
//! limit: at most 1 KiB on thumbv7m). Prints the RAM of a `Work` and a
//! `DelayedWork`.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DelayedWork, MpscMailbox, Runtime, Tasklet, Vector, Work};
use core::time::Duration;
use bottomhalf_firmware_tests::{self as h, check_eq, interrupt, println, Interrupt};
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt};

struct Mcu;
static CLOCK: AtomicU32 = AtomicU32::new(0);
static ARMED: AtomicU32 = AtomicU32::new(u32::MAX);

impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
    fn now_ns() -> u64 {
        u64::from(CLOCK.load(Ordering::Relaxed))
    }
    fn set_timer(_cpu: usize, _level: bottomhalf::Level, deadline_ns: u64) {
        ARMED.store(deadline_ns.min(u64::from(u32::MAX)) as u32, Ordering::Relaxed);
    }
}

static WORK: Work = Work::new("work", |_| {
    WORK_RUNS.store(WORK_RUNS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
});
static WORK_RUNS: AtomicU32 = AtomicU32::new(0);
static DELAYED: DelayedWork = DelayedWork::new("delayed", |_| {
    DELAYED_RUNS.store(DELAYED_RUNS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
});
static DELAYED_RUNS: AtomicU32 = AtomicU32::new(0);

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
static RX: MpscMailbox<u16, 8> = MpscMailbox::new();
static RX_BH: Tasklet = Tasklet::new(&RT, rx_bh);
const TICK: Vector = Vector::new(1);

static SUM: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static SAMPLE: AtomicU32 = AtomicU32::new(10);

fn rx_bh() {
    if let Ok(mut rx) = RX.consumer() {
        while let Some(s) = rx.pop() {
            SUM.store(
                SUM.load(Ordering::Relaxed) + u32::from(s),
                Ordering::Relaxed,
            );
        }
    }
}

fn tick(_cpu: usize) {
    TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[interrupt]
fn GPIOA() {
    // Top half: capture, push, schedule, raise.
    let sample = SAMPLE.load(Ordering::Relaxed);
    SAMPLE.store(sample + 10, Ordering::Relaxed);
    let _ = RX.push(sample as u16);
    RX_BH.schedule();
    RT.raise(TICK);
    RT.queue_work(&WORK);
    RT.mod_delayed_work(&DELAYED, Duration::from_nanos(1_000));
}

#[exception]
fn PendSV() {
    let _ = RT.drain();
}

#[entry]
fn main() -> ! {
    // SAFETY: set-up before the interrupt is used.
    unsafe {
        let mut p = cortex_m::Peripherals::steal();
        p.SCB
            .set_priority(cortex_m::peripheral::scb::SystemHandler::PendSV, 0xFF);
        NVIC::unmask(Interrupt::GPIOA);
    }
    let _ = RT.register(TICK, "TICK", tick);
    for _ in 0..3 {
        NVIC::pend(Interrupt::GPIOA); // taken at once; PendSV drains after it
    }
    println!("footprint_delayed: footprint + one Work + one DelayedWork (board deadline hook)");
    check_eq!(ARMED.load(Ordering::Relaxed), 1_000);
    check_eq!(DELAYED_RUNS.load(Ordering::Relaxed), 0);
    CLOCK.store(1_000, Ordering::Relaxed);
    RT.timer_fired(); // the deadline timer's interrupt
    println!(
        "work runs {}, delayed runs {}, armed after firing: {}",
        WORK_RUNS.load(Ordering::Relaxed),
        DELAYED_RUNS.load(Ordering::Relaxed),
        ARMED.load(Ordering::Relaxed) == u32::MAX
    );
    check_eq!(WORK_RUNS.load(Ordering::Relaxed), 3);
    check_eq!(DELAYED_RUNS.load(Ordering::Relaxed), 1);
    println!(
        "samples delivered: sum {}, vector runs {}",
        SUM.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed)
    );
    check_eq!(SUM.load(Ordering::Relaxed), 60);
    check_eq!(TICKS.load(Ordering::Relaxed), 3);
    println!("RAM: size_of::<Work>() = {} bytes", size_of::<Work>());
    println!("RAM: size_of::<DelayedWork>() = {} bytes", size_of::<DelayedWork>());
    println!("footprint_delayed: ok");
    h::exit_ok()
}
