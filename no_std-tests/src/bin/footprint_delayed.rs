//! `footprint_work` plus delayed work: the board gets a clock and a
//! one-shot deadline hook (`Board::now_ns`, `Board::set_timer`), the
//! interrupt also reschedules one `static DelayedWork`
//! (`mod_delayed_work`), and the timer interrupt's `timer_fired` fires it.
//! `run.sh` compares its `.text` with `footprint`'s (what work items and
//! delayed work add, issue 10's limit: at most 1 KiB on thumbv7m) and
//! with `footprint_work`'s (what delayed work adds). The harness is
//! `footprint_work`'s with one more value printed and checked.

#![no_std]
#![no_main]

use bottomhalf::{
    BareMetal, Board, Config, DelayedWork, MpscMailbox, Runtime, Tasklet, Vector, Work,
};
use bottomhalf_firmware_tests::{self as h, check, check_eq, interrupt, println, Interrupt};
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt};

struct Mcu;
/// The board's clock (a SysTick count, in a real firmware) and its
/// one-shot compare register (`u32::MAX`: disarmed).
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
        ARMED.store(
            deadline_ns.min(u64::from(u32::MAX)) as u32,
            Ordering::Relaxed,
        );
    }
}

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
static RX: MpscMailbox<u16, 8> = MpscMailbox::new();
static RX_BH: Tasklet = Tasklet::new(&RT, rx_bh);
const TICK: Vector = Vector::new(1);
static REFILL: Work = Work::new("refill", refill);
static DEBOUNCE: DelayedWork = DelayedWork::new("debounce", debounce);

static SUM: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static REFILLS: AtomicU32 = AtomicU32::new(0);
static DEBOUNCES: AtomicU32 = AtomicU32::new(0);
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

fn refill(_: &Work) {
    REFILLS.store(REFILLS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

fn debounce(_: &Work) {
    DEBOUNCES.store(DEBOUNCES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[interrupt]
fn GPIOA() {
    // Top half: capture, push, schedule, raise, queue the work item.
    let sample = SAMPLE.load(Ordering::Relaxed);
    SAMPLE.store(sample + 10, Ordering::Relaxed);
    let _ = RX.push(sample as u16);
    RX_BH.schedule();
    RT.raise(TICK);
    RT.queue_work(&REFILL);
    RT.mod_delayed_work(&DEBOUNCE, Duration::from_nanos(1_000));
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
    // Thread mode, with interrupts masked (PendSV would run the item
    // first): queue and flush (the flush drains this CPU itself), then
    // queue and cancel. One critical section and one `check!` (no `Debug`
    // of the results): the harness adds as little as it can to the image.
    // The deadline hook was armed for 1 us and nothing fired; the timer
    // interrupt (here: a call) at 1 us fires it and disarms the hook.
    let armed = ARMED.load(Ordering::Relaxed) == 1_000 && DEBOUNCES.load(Ordering::Relaxed) == 0;
    CLOCK.store(1_000, Ordering::Relaxed);
    RT.timer_fired();
    let ok = cortex_m::interrupt::free(|_| {
        RT.queue_work(&REFILL)
            && REFILL.flush() == Ok(true)
            && RT.queue_work(&REFILL)
            && REFILL.cancel()
    });
    println!("footprint_delayed: footprint_work + one DelayedWork rescheduled from the interrupt");
    println!(
        "samples delivered: sum {}, vector runs {}, work runs {}, delayed runs {}",
        SUM.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed),
        REFILLS.load(Ordering::Relaxed),
        DEBOUNCES.load(Ordering::Relaxed)
    );
    check_eq!(SUM.load(Ordering::Relaxed), 60);
    check_eq!(TICKS.load(Ordering::Relaxed), 3);
    // Three runs from the interrupts, one from the flush; none after the
    // cancel. The three reschedules made one instance, which ran once.
    check!(
        armed
            && ok
            && REFILLS.load(Ordering::Relaxed) == 4
            && DEBOUNCES.load(Ordering::Relaxed) == 1
            && ARMED.load(Ordering::Relaxed) == u32::MAX
    );
    println!(
        "RAM: size_of::<Work>() = {} bytes, size_of::<DelayedWork>() = {} bytes",
        size_of::<Work>(),
        size_of::<DelayedWork>()
    );
    h::ram_lines!(Mcu);
    println!("footprint_delayed: ok");
    h::exit_ok()
}
