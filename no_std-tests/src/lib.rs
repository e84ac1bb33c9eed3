//! The harness shared by the firmware test binaries in `src/bin/`.
//!
//! Every binary runs on QEMU's `lm3s6965evb` (Cortex-M3 for
//! `thumbv7m-none-eabi`, Cortex-M0 for `thumbv6m-none-eabi`) and talks to
//! the host through semihosting. This module gives them:
//!
//! - output and exit: [`println!`], [`check!`], [`fail`], [`exit_ok`]; a
//!   panic handler and a `HardFault` handler that print and exit with
//!   failure (so a broken test never hangs until the `timeout`);
//! - NVIC set-up: the priorities every scenario uses ([`prio`]), the
//!   interrupts that stand in for devices ([`IRQ_LOW`], [`IRQ_MID`],
//!   [`IRQ_HIGH`]), SysTick as the asynchronous event source;
//! - the [`preempt`] counters that prove a top half really interrupted the
//!   code under test (a bottom half, a drain);
//! - the boards the runtime runs on ([`PendSvBoard`], [`ExitBoard`]);
//! - [`stack`] painting, for the stack high-water mark.
//!
//! Mailbox ends need no cell here: an interrupt handler keeps its
//! `Producer` in its `static mut` local (`Mailbox::take_producer` on first
//! use) and a tasklet takes its consumer at each run (see `isr_handoff`,
//! `rtic_handoff` and `mailbox_flood`).
//!
//! Counters are `portable_atomic` types: native on the Cortex-M3, through
//! the `critical-section` implementation (`cortex-m`'s single-core one) on
//! the Cortex-M0, which has no compare-and-swap.

#![no_std]

use core::cell::Cell;
use core::fmt;
use core::panic::PanicInfo;

pub use bottomhalf;
pub use cortex_m;
pub use cortex_m_rt;
pub use cortex_m_semihosting;
pub use lm3s6965::{self, interrupt, Interrupt};
pub use portable_atomic::{AtomicBool, AtomicU32, Ordering};

use bottomhalf::Board;
use cortex_m::interrupt::Mutex;
use cortex_m::peripheral::scb::SystemHandler;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{NVIC, SCB};
use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug;

// ------------------------------------------------------------------ output

/// Prints a line on the host's standard output (semihosting). Thread mode
/// only: the scenarios never print from an interrupt handler.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => {
        $crate::cortex_m_semihosting::hprintln!($($t)*)
    };
}

/// Fails the test (prints `FAIL: ...` and exits with failure) unless
/// `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            $crate::fail(format_args!("check failed: {}", stringify!($cond)));
        }
    };
    ($cond:expr, $($t:tt)+) => {
        if !$cond {
            $crate::fail(format_args!("check failed: {}: {}", stringify!($cond), format_args!($($t)+)));
        }
    };
}

/// The RAM lines the footprint firmwares share: a `Runtime` of one and of
/// two CPUs on the board type `$board`, and the two mailboxes of
/// `footprint` (`run.sh` collects the lines that start with `RAM:`).
#[macro_export]
macro_rules! ram_lines {
    ($board:ty) => {{
        use ::core::mem::size_of;
        $crate::println!(
            "RAM: size_of::<Runtime<BareMetal<_>, 1>>() = {} bytes (per CPU, with 32 vectors)",
            size_of::<::bottomhalf::Runtime<::bottomhalf::BareMetal<$board>, 1>>()
        );
        $crate::println!(
            "RAM: size_of::<Runtime<BareMetal<_>, 2>>() = {} bytes",
            size_of::<::bottomhalf::Runtime<::bottomhalf::BareMetal<$board>, 2>>()
        );
        $crate::println!(
            "RAM: size_of::<MpscMailbox<u16, 8>>() = {} bytes",
            size_of::<::bottomhalf::MpscMailbox<u16, 8>>()
        );
        $crate::println!(
            "RAM: size_of::<Mailbox<u16, 8>>() = {} bytes",
            size_of::<::bottomhalf::Mailbox<u16, 8>>()
        );
    }};
}

/// Fails the test unless `a == b`, printing both.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            $crate::fail(format_args!(
                "check failed: {} == {} ({:?} != {:?})",
                stringify!($a),
                stringify!($b),
                a,
                b
            ));
        }
    }};
    ($a:expr, $b:expr, $($t:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            $crate::fail(format_args!(
                "check failed: {} == {} ({:?} != {:?}): {}",
                stringify!($a),
                stringify!($b),
                a,
                b,
                format_args!($($t)+)
            ));
        }
    }};
}

/// Prints `FAIL: <msg>` and exits QEMU with a failure status.
pub fn fail(msg: fmt::Arguments) -> ! {
    cortex_m::interrupt::disable();
    cortex_m_semihosting::hprintln!("FAIL: {}", msg);
    exit(false)
}

/// Exits QEMU with success.
pub fn exit_ok() -> ! {
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
    cortex_m_semihosting::hprintln!("FAIL: panic: {}", info);
    exit(false)
}

/// Set by a test that expects the next instruction to fault
/// ([`expect_fault`]); the `HardFault` handler then exits with success.
static FAULT_EXPECTED: AtomicU32 = AtomicU32::new(0);
static FAULT_MESSAGE: Mutex<Cell<&'static str>> = Mutex::new(Cell::new(""));

/// Arms the `HardFault` handler: the next fault prints `message` and ends
/// the test with success. Used by the `platform` binary to show that the
/// Cortex-M0 really lacks `ldrex`/`strex`.
pub fn expect_fault(message: &'static str) {
    cortex_m::interrupt::free(|cs| FAULT_MESSAGE.borrow(cs).set(message));
    FAULT_EXPECTED.store(1, Ordering::SeqCst);
}

#[exception]
unsafe fn HardFault(ef: &ExceptionFrame) -> ! {
    if FAULT_EXPECTED.load(Ordering::SeqCst) != 0 {
        let msg = cortex_m::interrupt::free(|cs| FAULT_MESSAGE.borrow(cs).get());
        cortex_m_semihosting::hprintln!("{}", msg);
        exit(true)
    }
    cortex_m_semihosting::hprintln!("FAIL: HardFault at pc {:#010x}: {:?}", ef.pc(), ef);
    exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    fail(format_args!("unexpected exception/interrupt {}", irqn));
}

// ------------------------------------------------------------------ NVIC

/// Priorities (lower number = more urgent). Only the top two bits are
/// used, so they are distinct on the Cortex-M0 (2 priority bits) too.
pub mod prio {
    /// The most urgent top half; SysTick (the event source) shares it.
    pub const HIGH: u8 = 0x00;
    /// The middle top half.
    pub const MID: u8 = 0x40;
    /// The least urgent top half.
    pub const LOW: u8 = 0x80;
    /// The drain interrupt (PendSV): below every top half.
    pub const DRAIN: u8 = 0xC0;
}

/// The interrupts that stand in for devices. Nothing on the emulated board
/// drives them: they fire only when pended through the NVIC.
pub const IRQ_LOW: Interrupt = Interrupt::GPIOA;
/// See [`IRQ_LOW`].
pub const IRQ_MID: Interrupt = Interrupt::GPIOB;
/// See [`IRQ_LOW`].
pub const IRQ_HIGH: Interrupt = Interrupt::GPIOC;

/// Sets the priorities of the three top-half interrupts, SysTick and
/// PendSV, and unmasks the three interrupts.
pub fn nvic_setup() {
    // SAFETY: set-up in thread mode, before any of these interrupts fires.
    unsafe {
        let mut p = cortex_m::Peripherals::steal();
        p.NVIC.set_priority(IRQ_LOW, prio::LOW);
        p.NVIC.set_priority(IRQ_MID, prio::MID);
        p.NVIC.set_priority(IRQ_HIGH, prio::HIGH);
        p.SCB.set_priority(SystemHandler::SysTick, prio::HIGH);
        p.SCB.set_priority(SystemHandler::PendSV, prio::DRAIN);
        NVIC::unmask(IRQ_LOW);
        NVIC::unmask(IRQ_MID);
        NVIC::unmask(IRQ_HIGH);
    }
}

/// Pends interrupt `irq` through the NVIC (a real pend: the core takes it
/// as soon as its priority allows).
#[inline(always)]
pub fn pend(irq: Interrupt) {
    NVIC::pend(irq);
}

/// Starts SysTick on the core clock, firing every `reload + 1` cycles.
pub fn systick_start(reload: u32) {
    // SAFETY: SysTick is only touched by `systick_start`/`systick_stop`.
    let mut p = unsafe { cortex_m::Peripherals::steal() };
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(reload);
    p.SYST.clear_current();
    p.SYST.enable_interrupt();
    p.SYST.enable_counter();
}

/// Sets the SysTick period for the next wrap (from its handler: a period
/// that changes at every event makes the events land at varying points of
/// the code they interrupt).
pub fn systick_set_reload(reload: u32) {
    // SAFETY: as in `systick_start`.
    let mut p = unsafe { cortex_m::Peripherals::steal() };
    p.SYST.set_reload(reload);
}

/// Stops SysTick (callable from its own handler).
pub fn systick_stop() {
    // SAFETY: as in `systick_start`.
    let mut p = unsafe { cortex_m::Peripherals::steal() };
    p.SYST.disable_interrupt();
    p.SYST.disable_counter();
    SCB::clear_pendst();
}

/// Busy work of about `n` loop iterations (a few instructions each), so
/// that interrupts land inside the code under test.
#[inline(never)]
pub fn spin(n: u32) {
    for _ in 0..n {
        cortex_m::asm::nop();
    }
}

/// Spins until `cond()` holds; fails the test after `limit` polls (a hang
/// is reported by the firmware itself, not only by the host's `timeout`).
pub fn wait_for(what: &str, limit: u32, mut cond: impl FnMut() -> bool) {
    for _ in 0..limit {
        if cond() {
            return;
        }
        spin(16);
    }
    fail(format_args!("timed out waiting for {}", what));
}

/// A small deterministic pseudo-random sequence (xorshift32), for storm
/// patterns.
pub fn xorshift(state: &AtomicU32) -> u32 {
    // Only the SysTick handler calls it for a given state.
    let mut x = state.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    state.store(x, Ordering::Relaxed);
    x
}

// ------------------------------------------------------------------ preemption

/// Counters that prove top halves interrupted the code under test.
///
/// Every top-half handler opens a [`TopHalf`](preempt::TopHalf) guard; the
/// code under test marks itself with [`bottom_half`](preempt::bottom_half)
/// (a tasklet or softirq handler) and [`drain`](preempt::drain) (the
/// runtime's drain). A top half that starts while one of those marks is
/// set has preempted it.
pub mod preempt {
    use super::{AtomicU32, Ordering};

    /// Top halves active now (nesting depth).
    pub static DEPTH: AtomicU32 = AtomicU32::new(0);
    /// Deepest nesting of top halves seen.
    pub static MAX_DEPTH: AtomicU32 = AtomicU32::new(0);
    /// Top-half entries.
    pub static ENTRIES: AtomicU32 = AtomicU32::new(0);
    /// Top-half entries while another top half was active.
    pub static NESTED: AtomicU32 = AtomicU32::new(0);
    /// Bottom halves (tasklet callbacks, softirq handlers) running now.
    pub static IN_BH: AtomicU32 = AtomicU32::new(0);
    /// Drains running now.
    pub static IN_DRAIN: AtomicU32 = AtomicU32::new(0);
    /// Top-half entries while a bottom half was running.
    pub static PREEMPTED_BH: AtomicU32 = AtomicU32::new(0);
    /// Top-half entries while a drain was running.
    pub static PREEMPTED_DRAIN: AtomicU32 = AtomicU32::new(0);

    /// Marks a top half; dropped (or [`leave`](TopHalf::leave)) at its end.
    pub struct TopHalf(());

    impl TopHalf {
        /// Enters a top half: counts it, and counts what it preempted.
        #[inline(always)]
        pub fn enter() -> TopHalf {
            let depth = DEPTH.fetch_add(1, Ordering::SeqCst) + 1;
            ENTRIES.fetch_add(1, Ordering::Relaxed);
            MAX_DEPTH.fetch_max(depth, Ordering::Relaxed);
            if depth > 1 {
                NESTED.fetch_add(1, Ordering::Relaxed);
            }
            if IN_BH.load(Ordering::SeqCst) != 0 {
                PREEMPTED_BH.fetch_add(1, Ordering::Relaxed);
            }
            if IN_DRAIN.load(Ordering::SeqCst) != 0 {
                PREEMPTED_DRAIN.fetch_add(1, Ordering::Relaxed);
            }
            TopHalf(())
        }

        /// Ends the top half early (before `irq_exit`, whose drain is not
        /// part of the top half).
        #[inline(always)]
        pub fn leave(self) {}
    }

    impl Drop for TopHalf {
        #[inline(always)]
        fn drop(&mut self) {
            DEPTH.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// `true` while a top half is active (the caller is one, or runs inside
    /// one).
    pub fn in_top_half() -> bool {
        DEPTH.load(Ordering::SeqCst) != 0
    }

    /// Marks a region as code under test; the mark is removed on drop.
    pub struct Mark(&'static AtomicU32);

    impl Drop for Mark {
        #[inline(always)]
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Marks a running bottom half (tasklet callback, softirq handler).
    #[inline(always)]
    pub fn bottom_half() -> Mark {
        IN_BH.fetch_add(1, Ordering::SeqCst);
        Mark(&IN_BH)
    }

    /// Marks a running drain.
    #[inline(always)]
    pub fn drain() -> Mark {
        IN_DRAIN.fetch_add(1, Ordering::SeqCst);
        Mark(&IN_DRAIN)
    }

    /// Prints the counters: the counts (which vary between cores) on
    /// their own lines, the nesting depth (an invariant) on its own.
    pub fn report() {
        crate::println!(
            "top-half entries: {} (nested in another top half: {})",
            ENTRIES.load(Ordering::Relaxed),
            NESTED.load(Ordering::Relaxed)
        );
        crate::println!(
            "max top-half nesting depth: {}",
            MAX_DEPTH.load(Ordering::Relaxed)
        );
        crate::println!(
            "top halves that preempted a running bottom half: {}, a running drain: {}",
            PREEMPTED_BH.load(Ordering::Relaxed),
            PREEMPTED_DRAIN.load(Ordering::Relaxed)
        );
    }

    /// Fails the test unless top halves preempted both a bottom half and
    /// a drain (the code under test really was interrupted).
    pub fn check_preempted() {
        crate::check!(
            PREEMPTED_BH.load(Ordering::Relaxed) > 0,
            "no top half preempted a bottom half"
        );
        crate::check!(
            PREEMPTED_DRAIN.load(Ordering::Relaxed) > 0,
            "no top half preempted a drain"
        );
    }
}

/// An in-flight detector: how many instances of one bottom half run at
/// once (the runtime promises at most one).
pub struct InFlight {
    now: AtomicU32,
    max: AtomicU32,
}

impl InFlight {
    /// Nothing running.
    pub const fn new() -> InFlight {
        InFlight {
            now: AtomicU32::new(0),
            max: AtomicU32::new(0),
        }
    }

    /// One more instance running; records the maximum.
    #[inline(always)]
    pub fn enter(&'static self) -> InFlightGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::Relaxed);
        InFlightGuard(self)
    }

    /// The most instances seen running at once.
    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`InFlight::enter`].
pub struct InFlightGuard(&'static InFlight);

impl Drop for InFlightGuard {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ boards

/// Board counters.
pub static PEND_DRAIN_CALLS: AtomicU32 = AtomicU32::new(0);
/// `pend_drain` calls made by a drain itself (out of budget), not by a
/// top half that made the pending mask non-empty.
pub static REPENDS_BY_DRAIN: AtomicU32 = AtomicU32::new(0);

/// The RTIC/embassy style: the drain runs in PendSV, at the lowest
/// priority; `pend_drain` pends it.
pub struct PendSvBoard;

impl Board for PendSvBoard {
    #[inline(always)]
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        PEND_DRAIN_CALLS.fetch_add(1, Ordering::Relaxed);
        if preempt::IN_DRAIN.load(Ordering::SeqCst) != 0 && !preempt::in_top_half() {
            REPENDS_BY_DRAIN.fetch_add(1, Ordering::Relaxed);
        }
        SCB::set_pendsv();
    }
}

/// The Linux style: handlers drain at `irq_exit`; `pend_drain` only counts
/// (leftovers wait for the next interrupt exit or the main loop).
pub struct ExitBoard;

impl Board for ExitBoard {
    #[inline(always)]
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        PEND_DRAIN_CALLS.fetch_add(1, Ordering::Relaxed);
        if preempt::IN_DRAIN.load(Ordering::SeqCst) != 0 && !preempt::in_top_half() {
            REPENDS_BY_DRAIN.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ------------------------------------------------------------------ stack

/// Stack painting: fill the unused stack with a pattern, later find the
/// lowest word that was overwritten.
///
/// On Cortex-M, thread mode and every exception handler share the main
/// stack (MSP), so the high-water mark covers the code under test and
/// every nested interrupt that preempted it.
pub mod stack {
    const PATTERN: u32 = 0xDEAD_C0DE;

    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }

    fn top() -> usize {
        // Linker symbols: only their addresses are used.
        core::ptr::addr_of!(_stack_start) as usize
    }

    fn bottom() -> usize {
        core::ptr::addr_of!(_stack_end) as usize
    }

    /// Paints everything between the bottom of the stack region and a
    /// little below the current stack pointer; returns the stack in use
    /// now, in bytes.
    #[inline(never)]
    pub fn paint() -> usize {
        let sp = cortex_m::register::msp::read() as usize;
        // Stay clear of this function's own frame and anything it pushes.
        let end = (sp - 64) & !3;
        let mut addr = bottom();
        while addr < end {
            // SAFETY: between the end of .bss/.data (`_stack_end`) and
            // below the live stack: memory nobody uses yet.
            unsafe { core::ptr::write_volatile(addr as *mut u32, PATTERN) };
            addr += 4;
        }
        top() - sp
    }

    /// The deepest the stack has reached since [`paint`], in bytes below
    /// its top.
    pub fn high_water() -> usize {
        let mut addr = bottom();
        // SAFETY: reads of the stack region, painted earlier.
        while addr < top() && unsafe { core::ptr::read_volatile(addr as *const u32) } == PATTERN {
            addr += 4;
        }
        top() - addr
    }

    /// The size of the stack region (RAM above .bss/.data), in bytes.
    pub fn size() -> usize {
        top() - bottom()
    }
}

/// The CPUID register (implementer, variant, part number, revision).
pub fn cpuid() -> u32 {
    // SAFETY: a read of a read-only register.
    unsafe { (*cortex_m::peripheral::CPUID::PTR).base.read() }
}

/// The name of the core QEMU emulates, from the CPUID part number.
pub fn core_name() -> &'static str {
    match (cpuid() >> 4) & 0xFFF {
        0xC20 => "Cortex-M0",
        0xC23 => "Cortex-M3",
        _ => "unknown core",
    }
}

/// `true` when the core the binary runs on is the one its target was built
/// for: a Cortex-M0 for `thumbv6m-none-eabi` (no compare-and-swap), a
/// Cortex-M3 for `thumbv7m-none-eabi`.
pub fn core_matches_target() -> bool {
    let want = if cfg!(target_has_atomic = "32") {
        "Cortex-M3"
    } else {
        "Cortex-M0"
    };
    core_name() == want
}

/// Every binary starts with this: checks that QEMU runs the core the
/// target was built for, paints the stack, sets up the NVIC.
pub fn start(name: &str) {
    stack::paint();
    check!(
        core_matches_target(),
        "{} was built for the other core; QEMU runs a {}",
        name,
        core_name()
    );
    nvic_setup();
}
