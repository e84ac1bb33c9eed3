//! The `defmt` feature in a firmware: the crate's errors and its
//! statistics logged with defmt (their `defmt::Format` impls), beside the
//! usual `core::fmt` output. The logs use `defmt::println!`, which no
//! `DEFMT_LOG` level filter removes (defmt keeps only `error!` by
//! default; a firmware sets `DEFMT_LOG=info` and uses `info!`/`warn!`).
//!
//! The global logger encodes defmt frames (rzCOBS, as `defmt-rtt` does)
//! into a RAM buffer instead of an RTT channel or a probe: QEMU has no
//! probe, and decoding needs the host tool `defmt-print` and this ELF's
//! `.defmt` table. So the firmware checks what it can see itself: one
//! frame per log call, each closed by the rzCOBS frame delimiter (0), and
//! a frame for a bigger value (the statistics table) is bigger than one
//! for an error. The frames are what a probe would carry; the figures it
//! prints are the byte counts.

#![no_std]
#![no_main]

use bottomhalf::{
    BareMetal, Board, Config, MailboxError, MpscMailbox, RegisterError, Runtime, Tasklet,
    TaskletKilled, Vector,
};
use bottomhalf_firmware_tests::{self as h, check, check_eq, println};
use core::cell::UnsafeCell;
use cortex_m::peripheral::SCB;
use cortex_m_rt::{entry, exception};
use h::{cortex_m, cortex_m_rt, AtomicU32, Ordering};

// ------------------------------------------------------------ the logger
//
// A test harness, not a pattern to copy: a firmware takes a logger crate
// (`defmt-rtt`, `defmt-semihosting`). This one keeps the frames in RAM so
// the test can check them without a host decoder; a defmt `Logger` splits
// its critical section across `acquire` and `release`, so its state is an
// `UnsafeCell` guarded by hand, as in those crates.

const BUF: usize = 2048;

/// The encoded frames. Written only by the logger between `acquire` and
/// `release`, which hold a critical section; read by `main` after the
/// log calls returned.
struct Ram {
    buf: UnsafeCell<[u8; BUF]>,
    len: UnsafeCell<usize>,
    encoder: UnsafeCell<defmt::Encoder>,
}

// SAFETY: every access is inside the logger's critical section (acquire
// to release: interrupts off, one core) or in `logged`, with interrupts
// off too.
unsafe impl Sync for Ram {}

static RAM: Ram = Ram {
    buf: UnsafeCell::new([0; BUF]),
    len: UnsafeCell::new(0),
    encoder: UnsafeCell::new(defmt::Encoder::new()),
};
static FRAMES: AtomicU32 = AtomicU32::new(0);
/// Interrupts were enabled when `acquire` disabled them.
static RESTORE: AtomicU32 = AtomicU32::new(0);

fn append(bytes: &[u8]) {
    // SAFETY: called only between acquire and release (critical section).
    unsafe {
        let len = &mut *RAM.len.get();
        let buf = &mut *RAM.buf.get();
        for &b in bytes {
            if *len < BUF {
                buf[*len] = b;
                *len += 1;
            }
        }
    }
}

#[defmt::global_logger]
struct RamLogger;

// SAFETY: `acquire` takes a critical section that `release` gives back, so
// frames never interleave, and nothing logs from inside the logger.
unsafe impl defmt::Logger for RamLogger {
    fn acquire() {
        let was_enabled = cortex_m::register::primask::read().is_active();
        cortex_m::interrupt::disable();
        RESTORE.store(u32::from(was_enabled), Ordering::Relaxed);
        // SAFETY: interrupts are off until `release` (single core).
        unsafe { (*RAM.encoder.get()).start_frame(append) };
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: inside the critical section taken in `acquire`.
        unsafe {
            (*RAM.encoder.get()).end_frame(append);
            FRAMES.store(FRAMES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            if RESTORE.load(Ordering::Relaxed) != 0 {
                cortex_m::interrupt::enable();
            }
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: inside the critical section taken in `acquire`.
        unsafe { (*RAM.encoder.get()).write(bytes, append) };
    }
}

/// (frames, bytes so far, the last byte).
fn logged() -> (u32, usize, u8) {
    cortex_m::interrupt::free(|_| {
        // SAFETY: interrupts are off: no log call runs.
        let (len, buf) = unsafe { (*RAM.len.get(), &*RAM.buf.get()) };
        let last = if len > 0 { buf[len - 1] } else { 0xFF };
        (FRAMES.load(Ordering::Relaxed), len, last)
    })
}

// ------------------------------------------------------------ the runtime

struct Mcu;
impl Board for Mcu {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        SCB::set_pendsv();
    }
}

static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
static RX: MpscMailbox<u16, 4> = MpscMailbox::new();
static BH: Tasklet = Tasklet::new(&RT, || {});
const TICK: Vector = Vector::new(3);

#[exception]
fn PendSV() {
    let _ = RT.drain();
}

/// Logs one value and returns the size of its frame.
fn frame_of(log: impl FnOnce()) -> usize {
    let (f0, b0, _) = logged();
    log();
    let (f1, b1, last) = logged();
    check_eq!(f1, f0 + 1, "one log call, one frame");
    check_eq!(last, 0, "a frame ends with the rzCOBS delimiter");
    b1 - b0
}

#[entry]
fn main() -> ! {
    h::start("defmt_log");
    // SAFETY: set-up before anything pends PendSV.
    unsafe {
        let mut p = cortex_m::Peripherals::steal();
        p.SCB
            .set_priority(cortex_m::peripheral::scb::SystemHandler::PendSV, 0xFF);
    }
    if let Err(e) = RT.register(TICK, "TICK", |_| {}) {
        defmt::error!("set-up: {}", e);
        h::fail(format_args!("register: {e}"));
    }
    // Errors the firmware survives, logged with defmt instead of Debug.
    let reserved = RT.register(Vector::TASKLET, "mine", |_| {}).unwrap_err();
    check_eq!(reserved, RegisterError::Reserved(Vector::TASKLET));
    let e1 = frame_of(|| defmt::println!("register refused: {}", reserved));
    let consumer = RX
        .consumer()
        .unwrap_or_else(|_| h::fail(format_args!("consumer")));
    let taken = RX.consumer().map(drop).unwrap_err();
    check_eq!(taken, MailboxError::ConsumerTaken);
    let e2 = frame_of(|| defmt::println!("mailbox: {}", taken));
    drop(consumer);
    BH.kill();
    let killed = BH.try_schedule().unwrap_err();
    check_eq!(killed, TaskletKilled);
    let e3 = frame_of(|| defmt::println!("tasklet: {}", killed));

    for _ in 0..5 {
        RT.raise(TICK); // PendSV drains each at once
    }
    check_eq!(RT.stats().runs(0, TICK), 5);
    let stats = frame_of(|| defmt::println!("stats:\n{}", RT.stats()));
    check!(
        stats > e1 && stats > e2,
        "the statistics frame ({stats} B) is not bigger than an error's ({e1} B, {e2} B)"
    );

    let (frames, bytes, _) = logged();
    println!("defmt_log: errors and statistics logged with defmt (rzCOBS frames in RAM)");
    println!(
        "defmt_log: RegisterError frame {} B, MailboxError frame {} B, TaskletKilled frame {} B",
        e1, e2, e3
    );
    println!(
        "defmt_log: Stats frame {} B (one CPU, vector TICK ran 5 times)",
        stats
    );
    println!("defmt_log: {} frames, {} bytes in all", frames, bytes);
    check_eq!(frames, 4);
    println!("defmt_log: ok");
    h::exit_ok()
}
