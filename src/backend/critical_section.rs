//! Bare-metal backend: interrupt handlers are the top halves.
//!
//! The application describes its board with a [`Board`] and uses
//! [`BareMetal<Board>`](BareMetal) as the runtime's backend. How to wire the
//! drain interrupt, and what masks interrupts for how long, is on
//! [`BareMetal`], where rustdoc renders it.

use core::marker::PhantomData;

use crate::backend::Backend;
use crate::level::Level;
use crate::wake::WakeWord;

/// The application's description of its board.
///
/// Every function is called from top halves (interrupt handlers) and must
/// be short, non-blocking and callable at any priority. How to wire the
/// drain interrupt (PendSV at the lowest priority, or draining at
/// interrupt exit) and what masks interrupts for how long: see
/// [`BareMetal`].
///
/// # Examples
///
/// A single-core board that drains at interrupt exit and has no clock:
///
/// ```
/// use bottomhalf::{BareMetal, Board, Config, Runtime};
/// struct Plain;
/// impl Board for Plain {}
/// static RT: Runtime<BareMetal<Plain>, 1> = Runtime::new(Config::DEFAULT);
/// assert_eq!(RT.cpus(), 1);
/// ```
pub trait Board: 'static {
    /// The index of the running core, below the runtime's `N`. Default:
    /// `0` (single core). An index `>= N` is folded to `index % N` and
    /// counted ([`Misuse::CpuOutOfRange`](crate::Misuse::CpuOutOfRange)).
    ///
    /// Top-half safe: must be. Allocates: must not. Blocks: must not.
    #[inline(always)]
    fn cpu() -> usize {
        0
    }

    /// A monotonic clock in nanoseconds (for example the DWT cycle counter
    /// scaled by the core clock). Default: none (`0`), which turns the
    /// drain's time budget off.
    ///
    /// Top-half safe: must be. Allocates: must not. Blocks: must not.
    #[inline(always)]
    fn now_ns() -> u64 {
        0
    }

    /// Pends the drain interrupt of level `level` on core `cpu` (for
    /// example `SCB::set_pendsv()`, with PendSV set to the lowest priority
    /// at start-up: see "Wiring PendSV" on [`BareMetal`]). A runtime with
    /// one level (the default) always passes [`Level::DEFAULT`]; with
    /// several, give each level its own spare interrupt, at a priority
    /// that rises with the level, whose handler calls
    /// [`Runtime::drain_level`](crate::Runtime::drain_level) (see "Levels"
    /// on [`Runtime`](crate::Runtime)). Default: nothing — the application
    /// drains at interrupt exit or in its main loop.
    ///
    /// Top-half safe: must be. Allocates: must not. Blocks: must not.
    #[inline(always)]
    fn pend_drain(cpu: usize, level: Level) {
        let _ = (cpu, level);
    }

    /// Arms a one-shot timer (a SysTick reload, a timer compare) for
    /// `deadline_ns` ([`now_ns`](Board::now_ns) clock) for level `level` of
    /// core `cpu`, replacing any earlier arming; `u64::MAX`: disarm. The
    /// runtime calls it from the drain with the earliest pending deadline
    /// of delayed work there whenever it changes; the timer's interrupt
    /// handler calls [`Runtime::timer_fired`](crate::Runtime::timer_fired).
    /// A board with one timer for several levels (or cores) keeps each
    /// `(cpu, level)`'s deadline and programs the earliest; see the crate
    /// docs' firmware example. Default: nothing — due timers then fire at
    /// the first drain of that level (`drain`, `drain_level`) at or after
    /// their deadline, which nothing pends by itself.
    ///
    /// Top-half safe: must be. Allocates: must not. Blocks: must not.
    #[inline(always)]
    fn set_timer(cpu: usize, level: Level, deadline_ns: u64) {
        let _ = (cpu, level, deadline_ns);
    }

    /// The firmware's softirq handlers known at compile time, in flash
    /// (see [`Handlers`](crate::Handlers) for an example); the
    /// [`Backend::HANDLERS`] of `BareMetal<Self>`. Default: none.
    const HANDLERS: &'static crate::Handlers = &crate::Handlers::NONE;
}

/// The bare-metal backend over a [`Board`]: interrupt handlers are the top
/// halves.
///
/// The application describes its board with a [`Board`]: which core is
/// running (default: one core, CPU 0), a clock (default: none, so only the
/// restart budget bounds a drain), and how to pend the drain interrupt
/// (default: none, so the application drains at interrupt exit). The
/// runtime then uses `BareMetal<YourBoard>` as its backend.
///
/// # Examples
///
/// ```
/// use bottomhalf::{BareMetal, Board, Config, Level, Runtime, Vector};
/// // On thumbv6m (Cortex-M0/M0+) use `portable_atomic::AtomicU32`: core's
/// // atomics have no `fetch_add` there.
/// use core::sync::atomic::{AtomicU32, Ordering};
///
/// static PENDED: AtomicU32 = AtomicU32::new(0);
/// struct Mcu;
/// impl Board for Mcu {
///     fn pend_drain(_cpu: usize, _level: Level) {
///         PENDED.fetch_add(1, Ordering::Relaxed); // SCB::set_pendsv() on hardware
///     }
/// }
/// static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
///
/// RT.raise(Vector::new(3)); // mask was empty: the drain is pended
/// RT.raise(Vector::new(4)); // already pended
/// assert_eq!(PENDED.load(Ordering::Relaxed), 1);
/// ```
///
/// # Two ways to trigger the drain
///
/// - **At interrupt exit** (Linux style): every handler that raises,
///   schedules or pushes brackets its body with
///   [`Runtime::irq_enter`](crate::Runtime::irq_enter) and
///   [`Runtime::irq_exit`](crate::Runtime::irq_exit); the exit of the
///   outermost handler drains, at that handler's priority, with other
///   interrupts enabled. A drain that runs out of budget calls
///   [`Board::pend_drain`]; leave it empty and call `drain` from the main
///   loop, or fill it in for the second style.
/// - **Through a pended low-priority interrupt** (the RTIC/embassy style):
///   [`Board::pend_drain`] pends PendSV (or a spare NVIC vector) at the
///   lowest priority in the system, and that interrupt's handler calls
///   [`Runtime::drain`](crate::Runtime::drain). The runtime pends it when a
///   CPU's pending mask goes from empty to non-empty, and again when a drain
///   runs out of budget — so a storm re-pends the drain instead of spinning
///   in it, and every higher-priority interrupt gets in between.
///
/// ## Wiring PendSV with `cortex-m`
///
/// Every exception and interrupt starts at priority 0, the highest
/// configurable one, so the application lowers PendSV once at start-up:
/// `SCB::set_priority(SystemHandler::PendSV, 0xff)`. On Cortex-M a larger
/// number is a lower priority, and a core that implements fewer priority
/// bits ignores the low ones, so `0xff` is the lowest priority on every
/// core. The device interrupts whose handlers raise, schedule or push are
/// unmasked as usual (`NVIC::unmask`).
///
/// In `cortex-m` 0.7, `SCB::set_priority` and `NVIC::unmask` are `unsafe`
/// functions (changing priorities can break priority-based critical
/// sections, unmasking can break mask-based ones). That `unsafe` is
/// `cortex-m`'s, not this crate's: one line each at set-up, before the
/// interrupts it concerns can fire, with a `SAFETY` comment as below.
/// Nothing of this crate's needs `unsafe`.
///
/// If PendSV is left at priority 0, the drain is still correct, but it
/// runs at the same priority as every interrupt handler: it cannot preempt
/// them and none can preempt it. The core takes a pending PendSV before
/// pending interrupts of the same priority (lower exception number), so
/// the drain runs between every two interrupt handlers that raise — one
/// drain per interrupt instead of one per burst — and an interrupt that
/// arrives during a drain waits for it (at most the drain's budget).
///
/// ```no_run
/// # // Host stand-ins for the cortex-m calls, so the example compiles here.
/// # mod cortex_m {
/// #     pub mod peripheral {
/// #         pub struct SCB;
/// #         impl SCB {
/// #             pub fn set_pendsv() {}
/// #             pub unsafe fn set_priority(&mut self, _h: scb::SystemHandler, _p: u8) {}
/// #         }
/// #         pub mod scb { pub enum SystemHandler { PendSV } }
/// #     }
/// #     pub struct Peripherals { pub SCB: peripheral::SCB }
/// #     impl Peripherals { pub fn take() -> Option<Self> { Some(Peripherals { SCB: peripheral::SCB }) } }
/// # }
/// use bottomhalf::{BareMetal, Board, Config, Level, Runtime, Tasklet};
/// use cortex_m::peripheral::{scb::SystemHandler, SCB};
///
/// struct Lm3s6965;
/// impl Board for Lm3s6965 {
///     fn pend_drain(_cpu: usize, _level: Level) {
///         SCB::set_pendsv();
///     }
/// }
///
/// static RT: Runtime<BareMetal<Lm3s6965>, 1> = Runtime::new(Config::DEFAULT);
/// static RX: Tasklet = Tasklet::new(&RT, || { /* bottom half */ });
///
/// // At the start of `#[entry] fn main`:
/// fn init() {
///     let mut cp = cortex_m::Peripherals::take().unwrap();
///     // SAFETY: runs once at start-up, before any interrupt is unmasked;
///     // the firmware has no priority-based (BASEPRI) critical section that
///     // relies on PendSV's priority.
///     unsafe { cp.SCB.set_priority(SystemHandler::PendSV, 0xff) }; // lowest
///     // ...unmask the UART interrupt (`NVIC::unmask`, also `unsafe` in
///     // cortex-m 0.7, with the same kind of SAFETY comment)...
/// }
///
/// // #[interrupt]
/// fn uart0() {
///     // ...read the data register...
///     RX.schedule(); // pends PendSV
/// }
///
/// // #[exception] fn PendSV() — the lowest priority in the system.
/// fn pend_sv() {
///     let _ = RT.drain(); // out of budget: PendSV is pended again
/// }
/// # init(); uart0(); pend_sv();
/// ```
///
/// # What masks interrupts, and for how long
///
/// On cores with load/store-exclusive (`thumbv7m`, `thumbv7em`, `thumbv8m`)
/// nothing in this crate masks interrupts: every top-half operation is
/// made of `ldrex`/`strex` loops that restart when an interrupt intervenes.
///
/// On cores without compare-and-swap (`thumbv6m`: Cortex-M0/M0+) the
/// crate's atomics are `portable-atomic`'s, and the **application** picks
/// how it provides them (the library never enables either):
/// portable-atomic's `critical-section` feature plus an implementation
/// (for example `cortex-m`'s `critical-section-single-core` feature), or
/// its `unsafe-assume-single-core` feature. Every atomic read-modify-write
/// then masks interrupts (through the critical section, or directly) for
/// the few instructions of one load, compute and store — a fixed, short
/// sequence with no loop inside the mask. Loops (a CAS retry) run with
/// interrupts enabled between masked attempts.
///
/// The two modes differ for plain loads and stores of aligned words. With
/// `unsafe-assume-single-core` they are the core's native single
/// instructions and mask nothing. With `critical-section`, portable-atomic
/// takes the critical section for every access to its atomics, loads and
/// stores included, so each load or store of the crate's atomics on these
/// paths is one more short masked section. Per top-half operation:
///
/// | operation | masked sections (both modes) | added with `critical-section` |
/// | --- | --- | --- |
/// | `Runtime::raise` | 1 (`fetch_or`); 2 if coalesced (`fetch_add` of the counter) | 1 per atomic load on the path |
/// | `Tasklet::schedule` | 1 per CAS attempt on the state; when it queues, + 1 per CAS attempt on the list head, + 1 `fetch_or` unless the list's vector is already pending | 1 per atomic load on the path (the first read of each CAS loop) |
/// | `Producer::push` ([`Mailbox`](crate::Mailbox)) | none: loads and stores only | 4: the ring's index loads and store (`tail`, `head`, `tail`) and the store of the push count; + 2 when full (the drop counter is loaded and stored, not read-modify-written) |
/// | `MpscMailbox::push` / `try_push` | 1 per CAS attempt on the word that packs the used count and the ticket; + 1 if full (drop or refusal counter) or at a new high-water mark | 1 per atomic load or store on the path (the first read of the CAS loop, the slot's `ready` stamp) |
/// | `Runtime::irq_enter` / `irq_exit` | 1 (`fetch_add` of the nesting depth) / 1 per CAS attempt on it | 1 per atomic load on the path |
///
/// Both mailbox rings are this crate's own and take their atomics from the
/// same place as the rest of the crate, so the `Mailbox` ring's index
/// loads and stores follow the mode too: masked with `critical-section`,
/// native with `unsafe-assume-single-core`.
///
/// A board whose `cpu()` returns an index `>= N` is not a panic in a top
/// half: the runtime uses core `index % N` and counts
/// [`Misuse::CpuOutOfRange`](crate::Misuse::CpuOutOfRange) (one more
/// masked `fetch_add` on that path).
///
/// Atomics in the application's own top halves (counters like `PENDED`
/// above) are the application's choice; on thumbv6m use
/// `portable_atomic::AtomicU32` and friends, since core's atomics there
/// have only `load` and `store`.
pub struct BareMetal<B: Board>(PhantomData<fn() -> B>);

impl<B: Board> Backend for BareMetal<B> {
    #[inline(always)]
    fn current_cpu() -> usize {
        B::cpu()
    }

    #[inline(always)]
    fn now_ns() -> u64 {
        B::now_ns()
    }

    #[inline(always)]
    fn kick(cpu: usize, level: Level, _wake: &WakeWord) {
        B::pend_drain(cpu, level);
    }

    #[inline(always)]
    fn arm_timer(cpu: usize, level: Level, deadline_ns: u64) {
        B::set_timer(cpu, level, deadline_ns);
    }

    const HANDLERS: &'static crate::Handlers = B::HANDLERS;

    /// The last bottom-half guard's drop pends the drain interrupt
    /// ([`Board::pend_drain`]) rather than draining in thread mode.
    const DRAIN_ON_BH_ENABLE: bool = false;
}

impl<B: Board> core::fmt::Debug for BareMetal<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BareMetal")
    }
}
