//! The emulated platform is what the other binaries assume.
//!
//! - QEMU runs the core the target was built for (CPUID part number);
//! - the NVIC keeps the priority bits the scenarios use, and the four
//!   priority levels (three top halves and the drain) stay distinct;
//! - a pend through the NVIC is taken at once from thread mode, a higher
//!   priority preempts a lower one (three levels nested), a lower one waits
//!   for the higher one to return, PendSV waits for all of them;
//! - SysTick fires (the scenarios' asynchronous event source);
//! - last: the core has `ldrex`/`strex` exactly when the target says so.
//!   On the Cortex-M0 the instruction must fault (ARMv6-M has no
//!   exclusive accesses, hence no compare-and-swap); the HardFault handler
//!   then ends the test with success.

#![no_std]
#![no_main]

use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, prio, AtomicU32, Ordering, IRQ_HIGH,
    IRQ_LOW, IRQ_MID,
};
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

/// Log of events: each handler appends its tag (a digit).
static LOG: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static DEPTH_IN_HIGH: AtomicU32 = AtomicU32::new(0);

fn log(tag: u32) {
    let v = LOG.load(Ordering::SeqCst);
    LOG.store(v * 10 + tag, Ordering::SeqCst);
}

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    log(1);
    h::pend(IRQ_MID); // preempts at once
    log(4);
    SCB::set_pendsv(); // lower than us: waits
    log(5);
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    log(2);
    h::pend(IRQ_HIGH); // preempts at once
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    DEPTH_IN_HIGH.store(h::preempt::DEPTH.load(Ordering::SeqCst), Ordering::SeqCst);
    log(3);
}

#[exception]
fn PendSV() {
    log(6);
}

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

#[entry]
fn main() -> ! {
    h::start("platform");
    println!("platform: {}", h::core_name());
    println!("CPUID {:#010x}", h::cpuid());
    check!(h::core_matches_target());

    // Priority bits: write all ones, read back what the NVIC keeps.
    let kept_prio = {
        // SAFETY: set-up; GPIOD is not used otherwise.
        let mut p = unsafe { cortex_m::Peripherals::steal() };
        unsafe { p.NVIC.set_priority(h::Interrupt::GPIOD, 0xFF) };
        NVIC::get_priority(h::Interrupt::GPIOD)
    };
    let bits = kept_prio.count_ones();
    println!(
        "NVIC priority bits implemented: {} (0xFF reads back as {})",
        bits, kept_prio
    );
    if cfg!(target_has_atomic = "32") {
        check!(bits >= 3, "a Cortex-M3 implements at least 3 priority bits");
    } else {
        check_eq!(bits, 2, "a Cortex-M0 implements 2 priority bits");
    }
    let levels = [
        NVIC::get_priority(IRQ_HIGH),
        NVIC::get_priority(IRQ_MID),
        NVIC::get_priority(IRQ_LOW),
        SCB::get_priority(cortex_m::peripheral::scb::SystemHandler::PendSV),
    ];
    println!(
        "priorities as kept: high {:#04x}, mid {:#04x}, low {:#04x}, PendSV {:#04x}",
        levels[0], levels[1], levels[2], levels[3]
    );
    check!(levels == [prio::HIGH, prio::MID, prio::LOW, prio::DRAIN]);
    println!("four distinct priority levels: yes");

    // Nesting: A (low) pends B (mid), B pends C (high): 1 2 3, back in A
    // 4 5, then PendSV 6 once A returns to thread mode.
    h::pend(IRQ_LOW);
    let order = LOG.load(Ordering::SeqCst);
    println!("pend order: {}", order);
    check_eq!(order, 123456);
    check_eq!(DEPTH_IN_HIGH.load(Ordering::SeqCst), 3);
    println!("three top halves nested: yes");

    h::systick_start(9_999);
    h::wait_for("SysTick", 1_000_000, || TICKS.load(Ordering::Relaxed) >= 3);
    h::systick_stop();
    println!("SysTick fires: yes");

    // Exclusive accesses, last (on the Cortex-M0 this ends the test).
    static WORD: AtomicU32 = AtomicU32::new(7);
    if cfg!(target_has_atomic = "32") {
        println!("target has compare-and-swap: yes");
    } else {
        println!("target has compare-and-swap: no");
        h::expect_fault("ldrex on this core: HardFault (ARMv6-M has no exclusive accesses)");
    }
    let loaded: u32;
    // SAFETY: `ldrex r0, [r1]` (encoded by hand so the v6m assembler takes
    // it) on a valid word; `clrex`-free because nothing follows up with a
    // `strex`. On a Cortex-M0 it faults (see above).
    unsafe {
        core::arch::asm!(
            ".hword 0xe851",
            ".hword 0x0f00",
            in("r1") WORD.as_ptr(),
            out("r0") loaded,
            options(nostack),
        );
    }
    check!(
        cfg!(target_has_atomic = "32"),
        "ldrex executed on a core without it"
    );
    check_eq!(loaded, 7);
    println!("ldrex on this core: executed (ARMv7-M)");
    h::exit_ok()
}
