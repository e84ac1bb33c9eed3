//! A minimal firmware using the runtime: one softirq vector, one tasklet,
//! one mailbox, the drain in PendSV. `run.sh` compares its section sizes
//! with `footprint_baseline` (the same firmware without bottomhalf) to get
//! the runtime's own `.text`, `.rodata`, `.data` and `.bss`; this binary
//! prints the RAM of a tasklet, a runtime and a mailbox.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, MpscMailbox, Runtime, Tasklet, Vector};
use bottomhalf_firmware_tests::{self as h, check_eq, interrupt, println, Interrupt};
use core::mem::size_of;
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt};

struct Mcu;
impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
}

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
    println!("footprint: one vector, one tasklet, one MpscMailbox<u16, 8>; drain in PendSV");
    println!(
        "samples delivered: sum {}, vector runs {}",
        SUM.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed)
    );
    check_eq!(SUM.load(Ordering::Relaxed), 60);
    check_eq!(TICKS.load(Ordering::Relaxed), 3);
    println!("RAM: size_of::<Tasklet>() = {} bytes", size_of::<Tasklet>());
    h::ram_lines!(Mcu);
    println!("footprint: ok");
    h::exit_ok()
}
