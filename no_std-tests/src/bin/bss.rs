//! Statics in `.bss`: a runtime (with a constant handler table on its
//! board), a `Mailbox` and an `MpscMailbox`, used the way a firmware uses
//! them: an interrupt raises a softirq vector whose handler lives in the
//! board's table (in flash) with a device instance as its context, and
//! pushes into the mailboxes; PendSV drains. `scripts/bss-check.sh` builds
//! this binary and checks with `nm` that `RT`, `MB` and `MPSC` are `.bss`
//! symbols and that `TUNED` (a runtime with a non-default `Config`, the
//! documented exception) is `.data`.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, Handlers, Mailbox, MpscMailbox, Runtime, Vector};
use bottomhalf_firmware_tests::{self as h, check_eq, interrupt, println, Interrupt};
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt};

/// A device instance: the context of its softirq handler.
struct Uart {
    rx: AtomicU32,
}

static UART0: Uart = Uart {
    rx: AtomicU32::new(0),
};
static UART1: Uart = Uart {
    rx: AtomicU32::new(0),
};

/// One driver function for both UARTs.
fn uart_rx(uart: &'static Uart, _cpu: usize) {
    while let Some(s) = MPSC.consumer().ok().and_then(|mut c| c.pop()) {
        uart.rx.store(
            uart.rx.load(Ordering::Relaxed) + u32::from(s),
            Ordering::Relaxed,
        );
    }
}

const UART0_RX: Vector = Vector::new(2);
const UART1_RX: Vector = Vector::new(3);

struct Mcu;
impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
    const HANDLERS: &'static Handlers = &Handlers::new()
        .with_context(UART0_RX, "UART0_RX", &UART0, uart_rx)
        .with_context(UART1_RX, "UART1_RX", &UART1, uart_rx);
}

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
/// The documented exception: non-default limits put a runtime in `.data`.
static TUNED: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT.max_restart(3));
static MB: Mailbox<u16, 8> = Mailbox::new();
static MPSC: MpscMailbox<u16, 8> = MpscMailbox::new();

static SAMPLE: AtomicU32 = AtomicU32::new(10);

#[interrupt]
fn GPIOA() {
    let sample = SAMPLE.load(Ordering::Relaxed);
    SAMPLE.store(sample + 10, Ordering::Relaxed);
    let _ = MPSC.push(sample as u16);
    RT.raise(if sample % 20 == 0 { UART1_RX } else { UART0_RX });
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
    // No register call: the handlers are in the board's table.
    for _ in 0..4 {
        NVIC::pend(Interrupt::GPIOA); // taken at once; PendSV drains after it
    }
    // Samples 10, 30 went to UART0; 20, 40 to UART1.
    check_eq!(UART0.rx.load(Ordering::Relaxed), 40);
    check_eq!(UART1.rx.load(Ordering::Relaxed), 60);

    let Ok((mut tx, mut rx)) = MB.split() else {
        h::fail(format_args!("split failed"))
    };
    for s in 1..=3 {
        let _ = tx.push(s);
    }
    let mut sum = 0;
    while let Some(s) = rx.pop() {
        sum += s;
    }
    check_eq!(sum, 6);

    TUNED.raise(UART0_RX);
    let _ = TUNED.drain();
    check_eq!(TUNED.stats().runs(0, UART0_RX), 1);

    println!(
        "bss: uart0 {}, uart1 {}, mailbox sum {}, tuned runs {}",
        UART0.rx.load(Ordering::Relaxed),
        UART1.rx.load(Ordering::Relaxed),
        sum,
        TUNED.stats().runs(0, UART0_RX)
    );
    println!("bss: ok");
    h::exit_ok()
}
