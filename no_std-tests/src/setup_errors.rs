// Shared by `setup_unwrap` and `setup_match` (included with `include!`):
// a firmware that sets up one vector, one tasklet and one mailbox and runs
// them. Its own output is semihosting `write_all` of fixed strings (no
// `core::fmt`); only the panic handler formats (the panic message, as
// `panic-semihosting` does), so `size` shows what the set-up's error
// handling costs. The two binaries differ only in `setup()`: `.unwrap()`
// (each error type's `Debug` impl and core's formatting machinery, reached
// from the panic message) against a `match` to a `&'static str`. They do
// not link the harness (`bottomhalf_firmware_tests`), whose output and
// checks format with `core::fmt` everywhere and would hide the difference.

use bottomhalf::{BareMetal, Board, Config, MpscMailbox, Runtime, Tasklet, Vector};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hio};
use lm3s6965 as _; // the device's vector table

struct Mcu;
impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
}

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
static RX: MpscMailbox<u16, 8> = MpscMailbox::new();
static RX_BH: Tasklet = Tasklet::new(&RT, rx_bh);
static SUM: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
/// The tick vector's index, as a configuration table would hold it (read
/// at run time, so `Vector::try_new` is not folded away).
static TICK_INDEX: AtomicU32 = AtomicU32::new(1);

fn rx_bh() {
    if let Ok(mut rx) = RX.consumer() {
        while let Some(s) = rx.pop() {
            SUM.store(SUM.load(Ordering::Relaxed) + u32::from(s), Ordering::Relaxed);
        }
    }
}

fn on_tick(_cpu: usize) {
    // Only the drain writes it (one CPU): no read-modify-write needed,
    // which thumbv6m does not have.
    TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

#[exception]
fn PendSV() {
    let _ = RT.drain();
}

/// Writes `parts` and a newline to the host's stdout (no `core::fmt`).
fn say(parts: &[&str]) {
    if let Ok(mut out) = hio::hstdout() {
        for p in parts {
            let _ = out.write_all(p.as_bytes());
        }
        let _ = out.write_all(b"\n");
    }
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

/// Prints the panic's message, as `panic-semihosting` (or a harness) does:
/// the usual firmware panic handler, and what makes `.unwrap()` costly
/// (its message formats the error with `Debug`).
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    cortex_m_semihosting::hprintln!("FAIL: {}", info);
    exit(false)
}

#[entry]
fn main() -> ! {
    // SAFETY: set-up before anything pends PendSV; lowest priority, so a
    // drain never preempts the code that raised it.
    unsafe {
        let mut p = cortex_m::Peripherals::steal();
        p.SCB
            .set_priority(cortex_m::peripheral::scb::SystemHandler::PendSV, 0xFF);
    }
    let tick_vector = setup();
    for s in [10u16, 20, 30] {
        // Top-half work, from thread mode here: push, schedule, raise
        // (each pends PendSV, which drains when it is taken).
        let _ = RX.push(s);
        RX_BH.schedule();
        RT.raise(tick_vector);
    }
    let ok = SUM.load(Ordering::Relaxed) == 60 && TICKS.load(Ordering::Relaxed) == 3;
    say(&[NAME, if ok { ": vector ran 3 times, tasklet summed 60" } else { ": FAIL: wrong counts" }]);
    say(&[NAME, ": ok"]);
    exit(ok)
}
