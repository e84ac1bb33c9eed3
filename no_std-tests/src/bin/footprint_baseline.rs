//! `footprint` without bottomhalf: the same firmware skeleton (vector
//! table, PendSV and one interrupt, semihosting output, the harness's panic
//! and fault handlers), with the top half handing its sample to PendSV
//! through two plain words. `run.sh` subtracts its section sizes from
//! `footprint`'s to get what the runtime itself costs.

#![no_std]
#![no_main]

use bottomhalf_firmware_tests::{self as h, check_eq, interrupt, println, Interrupt};
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt};

static SUM: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static SAMPLE: AtomicU32 = AtomicU32::new(10);
static SLOT: AtomicU32 = AtomicU32::new(0);

#[interrupt]
fn GPIOA() {
    let sample = SAMPLE.load(Ordering::Relaxed);
    SAMPLE.store(sample + 10, Ordering::Relaxed);
    SLOT.store(sample, Ordering::Relaxed);
    SCB::set_pendsv();
}

#[exception]
fn PendSV() {
    SUM.store(
        SUM.load(Ordering::Relaxed) + SLOT.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
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
    for _ in 0..3 {
        NVIC::pend(Interrupt::GPIOA);
    }
    println!("footprint_baseline: the same firmware without bottomhalf");
    println!(
        "samples delivered: sum {}, vector runs {}",
        SUM.load(Ordering::Relaxed),
        TICKS.load(Ordering::Relaxed)
    );
    check_eq!(SUM.load(Ordering::Relaxed), 60);
    check_eq!(TICKS.load(Ordering::Relaxed), 3);
    println!("footprint_baseline: ok");
    h::exit_ok()
}
