//! Bare-metal backend: interrupt handlers are the top halves.
//!
//! The application describes its board with a [`Board`]: which core is
//! running (default: one core, CPU 0), a clock (default: none, so only the
//! restart budget bounds a drain), and how to pend the drain interrupt
//! (default: none, so the application drains at interrupt exit). The
//! runtime then uses [`BareMetal<Board>`](BareMetal) as its backend.
//!
//! # Two ways to trigger the drain
//!
//! - **At interrupt exit** (Linux style): every handler that raises,
//!   schedules or pushes brackets its body with
//!   [`Runtime::irq_enter`](crate::Runtime::irq_enter) and
//!   [`Runtime::irq_exit`](crate::Runtime::irq_exit); the exit of the
//!   outermost handler drains, at that handler's priority, with other
//!   interrupts enabled. A drain that runs out of budget calls
//!   [`Board::pend_drain`]; leave it empty and call `drain` from the main
//!   loop, or fill it in for the second style.
//! - **Through a pended low-priority interrupt** (the RTIC/embassy style):
//!   [`Board::pend_drain`] pends PendSV (or a spare NVIC vector) at the
//!   lowest priority, and that interrupt's handler calls
//!   [`Runtime::drain`](crate::Runtime::drain). The runtime pends it when a
//!   CPU's pending mask goes from empty to non-empty, and again when a drain
//!   runs out of budget — so a storm re-pends the drain instead of spinning
//!   in it, and every higher-priority interrupt gets in between.
//!
//! ```no_run
//! # // Host stand-ins for the cortex-m calls, so the example compiles here.
//! # mod cortex_m { pub mod peripheral { pub struct SCB; impl SCB { pub fn set_pendsv() {} } } }
//! use bottomhalf::{BareMetal, Board, Config, Runtime, Tasklet};
//!
//! struct Lm3s6965;
//! impl Board for Lm3s6965 {
//!     fn pend_drain(_cpu: usize) {
//!         cortex_m::peripheral::SCB::set_pendsv();
//!     }
//! }
//!
//! static RT: Runtime<BareMetal<Lm3s6965>, 1> = Runtime::new(Config::DEFAULT);
//! static RX: Tasklet = Tasklet::new(&RT, || { /* bottom half */ });
//!
//! // #[interrupt]
//! fn uart0() {
//!     // ...read the data register...
//!     RX.schedule(); // pends PendSV
//! }
//!
//! // #[exception] fn PendSV() — the lowest priority in the system.
//! fn pend_sv() {
//!     let _ = RT.drain(); // out of budget: PendSV is pended again
//! }
//! # uart0(); pend_sv();
//! ```
//!
//! # What masks interrupts, and for how long
//!
//! On cores with load/store-exclusive (`thumbv7m`, `thumbv7em`, `thumbv8m`)
//! nothing in this crate masks interrupts: every top-half operation is
//! made of `ldrex`/`strex` loops that restart when an interrupt intervenes.
//!
//! On cores without compare-and-swap (`thumbv6m`: Cortex-M0/M0+) every
//! atomic read-modify-write goes through `portable-atomic`, which masks
//! interrupts (through the application's `critical-section` implementation,
//! or directly with its `unsafe-assume-single-core` feature) for
//! the few instructions of one load, compute and store — a fixed, short
//! sequence with no loop inside the mask. Loops (a CAS retry) run with
//! interrupts enabled between masked attempts. Per top-half operation:
//!
//! | operation | masked sections |
//! | --- | --- |
//! | `Runtime::raise` | 1 (`fetch_or`); 2 if coalesced (`fetch_add` of the counter) |
//! | `Tasklet::schedule` | 1 per CAS attempt on the state; when it queues, + 1 per CAS attempt on the list head, + 1 `fetch_or` unless the list's vector is already pending |
//! | `Producer::push` (`Mailbox`) | none: loads and stores only |
//! | `MpscMailbox::push` / `try_push` | 1 per CAS attempt on the word that packs the used count and the ticket; + 1 if full (drop or refusal counter) or at a new high-water mark |
//! | `Runtime::irq_enter` / `irq_exit` | 1 (`fetch_add` of the nesting depth) / 1 per CAS attempt on it |
//!
//! A board whose `cpu()` returns an index `>= N` is not a panic in a top
//! half: the runtime uses core `index % N` and counts
//! [`Misuse::CpuOutOfRange`](crate::Misuse::CpuOutOfRange) (one more
//! masked `fetch_add` on that path).
//!
//! Loads and stores of aligned words are single instructions on every
//! Cortex-M. The table counts read-modify-writes, which is all that masks
//! with portable-atomic's `unsafe-assume-single-core` mode. With its
//! `critical-section` mode portable-atomic takes the critical section for
//! every access to its atomics, loads and stores included: each load or
//! store of the crate's own atomics on these paths is one more short
//! masked section (a `Mailbox` push stores its push count; the ring
//! itself uses heapless's native loads and stores in both modes).
//!
//! The application picks the mode: portable-atomic's `critical-section`
//! feature plus an implementation (for example `cortex-m`'s
//! `critical-section-single-core` feature), or its
//! `unsafe-assume-single-core` feature; the library never enables either.

use core::marker::PhantomData;

use crate::backend::Backend;
use crate::wake::WakeWord;

/// The application's description of its board.
///
/// Every function is called from top halves (interrupt handlers) and must
/// be short, non-blocking and callable at any priority.
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

    /// Pends the drain interrupt of core `cpu` (for example
    /// `SCB::set_pendsv()`). Default: nothing — the application drains at
    /// interrupt exit or in its main loop.
    ///
    /// Top-half safe: must be. Allocates: must not. Blocks: must not.
    #[inline(always)]
    fn pend_drain(cpu: usize) {
        let _ = cpu;
    }

    /// The firmware's softirq handlers known at compile time, in flash
    /// (see [`Handlers`](crate::Handlers) for an example); the
    /// [`Backend::HANDLERS`] of `BareMetal<Self>`. Default: none.
    const HANDLERS: &'static crate::Handlers = &crate::Handlers::NONE;
}

/// The bare-metal backend over a [`Board`].
///
/// # Examples
///
/// ```
/// use bottomhalf::{BareMetal, Board, Config, Runtime, Vector};
/// use core::sync::atomic::{AtomicU32, Ordering};
///
/// static PENDED: AtomicU32 = AtomicU32::new(0);
/// struct Mcu;
/// impl Board for Mcu {
///     fn pend_drain(_cpu: usize) {
///         PENDED.fetch_add(1, Ordering::Relaxed); // SCB::set_pendsv() on hardware
///     }
/// }
/// static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
///
/// RT.raise(Vector::new(3)); // mask was empty: the drain is pended
/// RT.raise(Vector::new(4)); // already pended
/// assert_eq!(PENDED.load(Ordering::Relaxed), 1);
/// ```
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
    fn kick(cpu: usize, _wake: &WakeWord) {
        B::pend_drain(cpu);
    }

    const HANDLERS: &'static crate::Handlers = B::HANDLERS;
}

impl<B: Board> core::fmt::Debug for BareMetal<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BareMetal")
    }
}
