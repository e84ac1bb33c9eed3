//! Softirq vectors: per-CPU pending masks, `raise`, and the budgeted drain.
//!
//! Design rules (after `kernel/softirq.c`):
//!
//! - All pending state is CPU-local. `raise` sets one bit in the current
//!   CPU's mask with one atomic RMW and returns; it never calls a handler.
//! - The drain of CPU `c` swaps `c`'s mask to zero and runs the handlers of
//!   the bits it took, lowest index first. Bits raised meanwhile are left
//!   for the next pass: the drain restarts while the mask is non-empty, at
//!   most [`Config::max_restart`] times and within [`Config::time_budget_ns`]
//!   of the backend's clock; what is left is reported
//!   ([`DrainOutcome::Remaining`]) and handed to the backend
//!   ([`Backend::kick`]), so a storm of raises cannot starve the code the
//!   drain interrupted.
//! - One drain per CPU and level at a time: a drain that finds another
//!   one of its level running on its CPU (a nested interrupt exit, a
//!   second thread bound to the same CPU) returns [`DrainOutcome::Busy`];
//!   the running drain will see the work.
//! - Levels ([`Level`], the runtime's `L`, default 1): each level of a CPU
//!   has its own pending mask, `draining` flag, guard count and tasklet
//!   lists, and runs the single-level protocol on them, unchanged. A
//!   vector belongs to one level (fixed at registration); a higher
//!   level's drain may start while a lower one's runs on the same CPU
//!   (preemption), never the reverse at interrupt exit, and never one
//!   level inside itself. See "Levels" on [`Runtime`].
//! - Bottom halves off ([`Runtime::bh_disable`], Linux's
//!   `local_bh_disable`): while a guard is held on a CPU, no drain runs
//!   there ([`DrainOutcome::Disabled`]); the last guard's drop runs what
//!   was raised meanwhile. Thread context only: taking a guard waits for a
//!   drain running on the CPU in another context.
//! - The same vector may run on two CPUs at once. A handler that needs
//!   serialization serializes itself (or is a tasklet).
//! - Vector 0 ([`Vector::HI_TASKLET`]) and vector 6 ([`Vector::TASKLET`])
//!   drain the hi-priority and normal tasklet lists, as in Linux. They
//!   cannot be built by number ([`Vector::new`] refuses them, at compile
//!   time in a `const`), and the drain handles them in code, not through
//!   a handler slot.
//! - A handler is found in the backend's constant table
//!   ([`Backend::HANDLERS`], in flash, no registration) or in the
//!   runtime's slot filled by [`Runtime::register`] (a plain `fn(cpu)`) or
//!   [`Runtime::register_with`] (a `fn(&'static C, cpu)` and its context,
//!   as Linux's `from_tasklet`/`container_of` give a driver its device).
//!   The context is kept type-erased, as a pointer and a function pointer:
//!   no allocation, nothing generic in the runtime's type.
//! - `Runtime::new(Config::DEFAULT)` is all zero bytes, so a `static`
//!   runtime lands in `.bss` (see "Memory" on [`Runtime`]): every initial
//!   state is zero (slot EMPTY, no name, no handler; the limits are stored
//!   xor-ed with the defaults).
//!
//! # Atomic orderings
//!
//! `raise`'s `fetch_or` is `SeqCst`; its release half pairs with the
//! acquire half of the drain's `swap`, so whatever a top half wrote before
//! `raise` is visible to the handler. The hand-off of the per-CPU
//! `draining` flag is a store-buffering pattern (a drain clears the flag
//! then re-reads the mask; a raiser sets the mask then reads the flag, to
//! skip the kick while a drain runs, or swaps it, to drain at interrupt
//! exit), so those accesses are `SeqCst`: with anything weaker both sides
//! could miss each other and strand a raise until the next one.
//!
//! The bottom-half guard count is a second store-buffering pair with the
//! same flag: `bh_disable` increments the count and then reads
//! `draining` (waiting while it is set); a drain sets `draining` and then
//! reads the count (backing off if it is non-zero). And a third with the
//! mask: a raiser that drains raised and then reads the count; the last
//! guard's drop decrements and then reads the mask. All SeqCst, each side
//! marked with `ordering!` (mutants `bh_disable_relaxed`,
//! `bh_drain_check_relaxed`, `bh_enable_relaxed`, `bh_backoff_relaxed`;
//! loom model `bh_guard`, which catches the first three; see
//! `loom-tests/README.md`).
//!
//! With several levels every pair above is per level: the same accesses
//! on that level's mask, flag and count, with the same orderings. A guard
//! over levels `0..=k` increments each covered level's count (level 0's by
//! CAS, to bound the nesting; the others by `fetch_add`, mutant
//! `bh_disable_level_relaxed`, loom model `levels`) before it waits on each
//! level's flag. Nothing orders one level against another: levels share no
//! state but the CPU's wake word and counters. Two loads are deliberately
//! `Relaxed` hints, not pairs: `irq_exit`'s look at a level's `draining`
//! flag (set by the context this handler interrupted, so on a real CPU it
//! is this core's own earlier store; a stale answer only stops the exit's
//! walk early, and that work's raise kicked its level) and the slot byte
//! `raise` reads the vector's level from (written at set-up).

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use crate::backend::Backend;
use crate::level::{Level, MAX_LEVELS};
use crate::percpu::PerCpu;
use crate::stats::{CpuStats, Misuse, Stats};
use crate::sync::{
    array_of, loom_const_fn, ordering, AtomicBool, AtomicU32, AtomicU8, OnUnwind, Ordering,
    UnsafeCell,
};
use crate::tasklet::{Priority, Tasklet, TaskletList, TaskletRuntime};
use crate::wake::WakeWord;

/// The number of softirq vectors a runtime has.
pub const MAX_VECTORS: usize = 32;

/// A softirq vector number, below [`MAX_VECTORS`].
///
/// Vectors 0 and 6 drain the tasklet lists and exist only as the
/// constants [`Vector::HI_TASKLET`] and [`Vector::TASKLET`]; building them
/// by number is refused ([`Vector::new`] panics, at compile time in a
/// `const`; [`Vector::try_new`] returns [`VectorError::Reserved`]), so a
/// handler meant for a vector of its own cannot land on a tasklet vector.
///
/// # Examples
///
/// ```
/// use bottomhalf::Vector;
///
/// const NET_RX: Vector = Vector::new(3);
/// assert_eq!(NET_RX.index(), 3);
/// assert!(Vector::try_new(32).is_err());
/// assert!(Vector::try_new(6).is_err()); // the tasklet vector
/// ```
///
/// A reserved vector built in a `const` does not compile:
///
/// ```compile_fail
/// use bottomhalf::Vector;
/// const V: Vector = Vector::new(6); // error: vector 6 drains tasklets
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Vector(u8);

impl Vector {
    /// Drains hi-priority tasklets; runs before every other vector.
    pub const HI_TASKLET: Vector = Vector(0);
    /// Drains normal tasklets (Linux's `TASKLET_SOFTIRQ`).
    pub const TASKLET: Vector = Vector(6);

    /// Every vector, `0..32` in order, the tasklet vectors included (to
    /// walk the statistics).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// let runs: u32 = Vector::ALL.iter().map(|&v| RT.stats().runs(0, v)).sum();
    /// assert_eq!((Vector::ALL.len(), runs), (32, 0));
    /// ```
    pub const ALL: [Vector; MAX_VECTORS] = {
        let mut all = [Vector(0); MAX_VECTORS];
        let mut i = 0;
        while i < MAX_VECTORS {
            all[i] = Vector(i as u8);
            i += 1;
        }
        all
    };

    /// Vector `index`, for a handler of its own.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `index >= 32`, or if `index` is 0 or 6 (the tasklet vectors,
    /// available only as [`Vector::HI_TASKLET`] and [`Vector::TASKLET`]).
    /// In a `const` item either is a compile-time error.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Vector;
    /// const TIMER: Vector = Vector::new(1);
    /// assert_eq!(TIMER.index(), 1);
    /// ```
    #[track_caller]
    pub const fn new(index: usize) -> Vector {
        match Vector::try_new(index) {
            Ok(v) => v,
            Err(VectorError::Reserved { .. }) => panic!(
                "softirq vectors 0 and 6 drain tasklets: use Vector::HI_TASKLET or Vector::TASKLET"
            ),
            Err(VectorError::OutOfRange { .. }) => {
                panic!("softirq vector index out of range: a runtime has 32 vectors (0..=31)")
            }
        }
    }

    /// Vector `index`, or an error if `index >= 32` or `index` is one of
    /// the tasklet vectors 0 and 6.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`VectorError::OutOfRange`] for `index >= 32`;
    /// [`VectorError::Reserved`] for 0 and 6.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Vector, VectorError};
    /// assert_eq!(Vector::try_new(40), Err(VectorError::OutOfRange { index: 40 }));
    /// assert_eq!(Vector::try_new(0), Err(VectorError::Reserved { index: 0 }));
    /// assert_eq!(Vector::try_new(31).map(Vector::index), Ok(31));
    /// ```
    pub const fn try_new(index: usize) -> Result<Vector, VectorError> {
        if index >= MAX_VECTORS {
            Err(VectorError::OutOfRange { index })
        } else if index == Self::HI_TASKLET.index() || index == Self::TASKLET.index() {
            Err(VectorError::Reserved { index })
        } else {
            Ok(Vector(index as u8))
        }
    }

    /// The vector's index, `0..32`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Vector::TASKLET.index(), 6);
    /// ```
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    const fn bit(self) -> u32 {
        1 << self.0
    }

    const fn is_tasklet_vector(self) -> bool {
        self.0 == Self::HI_TASKLET.0 || self.0 == Self::TASKLET.0
    }
}

/// Why [`Vector::try_new`] refused an index.
///
/// # Examples
///
/// ```
/// let e = bottomhalf::Vector::try_new(32).unwrap_err();
/// assert_eq!(e.to_string(), "softirq vector 32 out of range (0..=31)");
/// let e = bottomhalf::Vector::try_new(6).unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "softirq vector 6 drains tasklets (use Vector::HI_TASKLET or Vector::TASKLET)"
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum VectorError {
    /// The index is 32 or more.
    OutOfRange {
        /// The index that was asked for.
        index: usize,
    },
    /// The index is 0 or 6, the tasklet vectors.
    Reserved {
        /// The index that was asked for.
        index: usize,
    },
}

/// The former name of [`VectorError`], from when `try_new` refused only
/// indices out of range; kept so code that names it still builds.
pub type VectorOutOfRange = VectorError;

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VectorError::OutOfRange { index } => {
                write!(f, "softirq vector {index} out of range (0..=31)")
            }
            VectorError::Reserved { index } => write!(
                f,
                "softirq vector {index} drains tasklets (use Vector::HI_TASKLET or Vector::TASKLET)"
            ),
        }
    }
}

impl core::error::Error for VectorError {}

/// Why [`Runtime::register`] refused a handler.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, RegisterError, Runtime, Vector};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// assert_eq!(
///     RT.register(Vector::TASKLET, "mine", |_| {}),
///     Err(RegisterError::Reserved(Vector::TASKLET))
/// );
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RegisterError {
    /// The vector drains tasklets ([`Vector::HI_TASKLET`], [`Vector::TASKLET`]).
    Reserved(Vector),
    /// A handler is already registered for the vector.
    AlreadyRegistered(Vector),
    /// The backend's constant handler table ([`Backend::HANDLERS`]) owns
    /// the vector.
    InTable(Vector),
    /// The level asked for is not below the runtime's number of levels
    /// `L`.
    LevelOutOfRange(Level),
    /// The vector already has a handler at another level (a vector
    /// belongs to one level: its pending bit lives in that level's mask;
    /// [`Runtime::vector_level`] says which). One byte each keeps the
    /// error two bytes, as the other variants.
    OtherLevel(Vector),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::Reserved(v) => {
                write!(f, "softirq vector {} is reserved for tasklets", v.index())
            }
            RegisterError::AlreadyRegistered(v) => {
                write!(f, "softirq vector {} already has a handler", v.index())
            }
            RegisterError::InTable(v) => write!(
                f,
                "softirq vector {} has a handler in the backend's constant table",
                v.index()
            ),
            RegisterError::LevelOutOfRange(level) => {
                write!(f, "{level} is not below the runtime's number of levels")
            }
            RegisterError::OtherLevel(v) => write!(
                f,
                "softirq vector {} already has a handler at another level",
                v.index()
            ),
        }
    }
}

impl core::error::Error for RegisterError {}

/// A softirq handler. It gets the index of the CPU it runs on.
///
/// It runs in the bottom half: interrupts (or signals) enabled, on the CPU
/// whose pending bit it was, possibly at the same time as the same handler
/// on another CPU.
pub type Handler = fn(cpu: usize);

/// A handler with a context, type-erased: the `fn(&'static C, usize)` of
/// [`Runtime::register_with`] or [`Handlers::with_context`], called with
/// its context as `*const ()`.
type ErasedHandler = fn(ctx: *const (), cpu: usize);

/// What a vector runs: a plain [`Handler`], or a handler with its
/// `'static` context, in two words.
///
/// - context handler: `erased` is `Some`, `ctx` is the `&'static C`;
/// - plain handler: `erased` is `None`, `ctx` is the `fn(usize)` itself,
///   as a pointer (so a slot is no bigger than with one kind);
/// - [`Callback::NONE`] (all zero): only the content of an empty slot,
///   which `VectorSlot::get` never returns, and of a table entry that is
///   `None`; `call` is never made on it.
///
/// Built only by [`Callback::plain`] and [`Callback::with_context`].
#[derive(Clone, Copy)]
struct Callback {
    erased: Option<ErasedHandler>,
    ctx: *const (),
}

// SAFETY: `ctx` is a `&'static C` with `C: Sync` (the only way to build a
// `Callback` with a context is `with_context`, which requires it), a
// function pointer, or null; so sharing it with handlers on other CPUs
// shares a `&C`, which `C: Sync` allows, or a function pointer.
unsafe impl Sync for Callback {}
// SAFETY: as above: moving a `&'static C` to another thread needs `C: Sync`.
unsafe impl Send for Callback {}

impl Callback {
    const NONE: Callback = Callback {
        erased: None,
        ctx: core::ptr::null(),
    };

    const fn plain(handler: Handler) -> Callback {
        Callback {
            erased: None,
            ctx: handler as *const (),
        }
    }

    const fn with_context<C: Sync + 'static>(
        ctx: &'static C,
        handler: fn(&'static C, usize),
    ) -> Callback {
        // `&'static C` and `*const ()` are both thin pointers (`C: Sized`,
        // so the same pointer metadata, `()`), which the standard library
        // documents as ABI-compatible ("Function pointers > ABI
        // compatibility" in `core::primitive::fn`); `usize` is the same type.
        // `call` passes back exactly the pointer made from `ctx` here.
        // SAFETY: a transmute between function-pointer types with
        // ABI-compatible arguments (above); the handler gets a valid `&'static C`.
        let erased =
            unsafe { core::mem::transmute::<fn(&'static C, usize), ErasedHandler>(handler) };
        Callback {
            erased: Some(erased),
            ctx: core::ptr::from_ref(ctx).cast(),
        }
    }

    /// Runs the callback on `cpu`. Never called on [`Callback::NONE`]
    /// (see the type's docs).
    #[inline(always)]
    fn call(self, cpu: usize) {
        match self.erased {
            Some(h) => h(self.ctx, cpu),
            None => {
                debug_assert!(!self.ctx.is_null(), "Callback::NONE called");
                // With `erased` `None`, `ctx` was made by `plain` from a
                // `fn(usize)` (the only other `Callback` with `erased`
                // `None` is `NONE`, which is never called). Function and
                // data pointers have one size and representation on every
                // target the crate builds for.
                // SAFETY: this turns `ctx` back into the function pointer
                // it was made from, with its provenance (above).
                let h = unsafe { core::mem::transmute::<*const (), Handler>(self.ctx) };
                h(cpu);
            }
        }
    }
}

/// A constant table of softirq handlers, known at compile time: built
/// with `const` calls, it lives in flash (`.rodata`) and needs no
/// `register` at start-up, so no raise can find its vector without a
/// handler.
///
/// A backend supplies its table as [`Backend::HANDLERS`]; on bare metal,
/// a [`Board`](crate::Board) supplies it as
/// [`Board::HANDLERS`](crate::Board::HANDLERS). The runtime keeps no
/// pointer to it (it reads the associated constant), so a runtime with a
/// table is still all zeros and lands in `.bss`. Vectors the table does
/// not own can still be registered at run time; `register` on a vector the
/// table owns fails with [`RegisterError::InTable`].
///
/// The `with` calls panic, in a `const` at compile time, on a tasklet
/// vector or on a vector the table already has.
///
/// # Examples
///
/// ```
/// use bottomhalf::{BareMetal, Board, Config, Handlers, RegisterError, Runtime, Vector};
/// use core::sync::atomic::{AtomicU32, Ordering};
///
/// /// One driver function serves every UART; its instance is the context.
/// struct Uart {
///     rx: AtomicU32,
/// }
/// fn uart_rx(uart: &'static Uart, _cpu: usize) {
///     uart.rx.fetch_add(1, Ordering::Relaxed);
/// }
/// static UART0: Uart = Uart { rx: AtomicU32::new(0) };
/// static UART1: Uart = Uart { rx: AtomicU32::new(0) };
/// static TICKS: AtomicU32 = AtomicU32::new(0);
///
/// const TIMER: Vector = Vector::new(1);
/// const UART0_RX: Vector = Vector::new(2);
/// const UART1_RX: Vector = Vector::new(3);
///
/// struct Mcu;
/// impl Board for Mcu {
///     const HANDLERS: &'static Handlers = &Handlers::new()
///         .with(TIMER, "TIMER", |_cpu| { TICKS.fetch_add(1, Ordering::Relaxed); })
///         .with_context(UART0_RX, "UART0_RX", &UART0, uart_rx)
///         .with_context(UART1_RX, "UART1_RX", &UART1, uart_rx);
/// }
///
/// static RT: Runtime<BareMetal<Mcu>, 1> = Runtime::new(Config::DEFAULT);
///
/// RT.raise(UART1_RX);
/// RT.raise(TIMER);
/// assert!(RT.drain().is_complete());
/// assert_eq!(UART1.rx.load(Ordering::Relaxed), 1);
/// assert_eq!(UART0.rx.load(Ordering::Relaxed), 0);
/// assert_eq!(TICKS.load(Ordering::Relaxed), 1);
/// assert_eq!(RT.vector_name(UART0_RX), Some("UART0_RX"));
/// assert_eq!(RT.register(TIMER, "again", |_| {}), Err(RegisterError::InTable(TIMER)));
/// ```
#[derive(Clone, Copy)]
pub struct Handlers {
    /// Entry `v`: vector `v`'s name and callback, or `None`.
    entries: [Option<(&'static str, Callback)>; MAX_VECTORS],
    /// Bit `v`: entry `v` is `Some`.
    owned: u32,
    /// Entry `v`'s level ([`Level`] index; 0 for an empty entry).
    levels: [u8; MAX_VECTORS],
}

impl Handlers {
    /// The empty table (the default of [`Backend::HANDLERS`]): every
    /// vector is registered at run time.
    pub const NONE: Handlers = Handlers::new();

    /// An empty table.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Vector};
    /// const H: Handlers = Handlers::new();
    /// assert!(!H.contains(Vector::new(1)));
    /// ```
    pub const fn new() -> Handlers {
        Handlers {
            entries: [None; MAX_VECTORS],
            owned: 0,
            levels: [0; MAX_VECTORS],
        }
    }

    const fn insert(
        mut self,
        level: Level,
        v: Vector,
        name: &'static str,
        cb: Callback,
    ) -> Handlers {
        if v.is_tasklet_vector() {
            panic!("Handlers: vectors 0 and 6 drain tasklets and take no handler");
        }
        if self.owned & v.bit() != 0 {
            if self.levels[v.index()] as usize != level.index() {
                panic!("Handlers: a vector belongs to one level, and this one is at two");
            }
            panic!("Handlers: the table has two handlers for one vector");
        }
        self.entries[v.index()] = Some((name, cb));
        self.owned |= v.bit();
        self.levels[v.index()] = level.index() as u8;
        self
    }

    /// The table with `handler` on vector `v`, named `name` in the
    /// statistics.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `v` is a tasklet vector or already in the table; in a `const`
    /// that is a compile-time error.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Vector};
    /// const H: Handlers = Handlers::new().with(Vector::new(4), "BLOCK", |_cpu| {});
    /// assert!(H.contains(Vector::new(4)));
    /// ```
    ///
    /// A vector twice does not compile:
    ///
    /// ```compile_fail
    /// use bottomhalf::{Handlers, Vector};
    /// const H: Handlers = Handlers::new()
    ///     .with(Vector::new(4), "A", |_| {})
    ///     .with(Vector::new(4), "B", |_| {});
    /// ```
    #[track_caller]
    pub const fn with(self, v: Vector, name: &'static str, handler: Handler) -> Handlers {
        self.insert(Level::DEFAULT, v, name, Callback::plain(handler))
    }

    /// The table with `handler` on vector `v` at bottom-half level
    /// `level` (see "Levels" on [`Runtime`]). [`with`](Handlers::with) is
    /// `with_at(Level::DEFAULT, ..)`.
    ///
    /// A runtime whose `L` is not above every level of its backend's
    /// table does not compile (a check in [`Runtime::new`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// As [`with`](Handlers::with); a vector at two levels panics too
    /// (a compile-time error in a `const`).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Level, Vector};
    /// const MOTOR: Vector = Vector::new(2);
    /// const H: Handlers = Handlers::new().with_at(Level::new(1), MOTOR, "MOTOR", |_cpu| {});
    /// assert_eq!(H.level(MOTOR), Level::new(1));
    /// ```
    ///
    /// One vector at two levels does not compile:
    ///
    /// ```compile_fail
    /// use bottomhalf::{Handlers, Level, Vector};
    /// const H: Handlers = Handlers::new()
    ///     .with_at(Level::new(0), Vector::new(4), "A", |_| {})
    ///     .with_at(Level::new(1), Vector::new(4), "B", |_| {});
    /// ```
    #[track_caller]
    pub const fn with_at(
        self,
        level: Level,
        v: Vector,
        name: &'static str,
        handler: Handler,
    ) -> Handlers {
        self.insert(level, v, name, Callback::plain(handler))
    }

    /// [`with_context`](Handlers::with_context) at bottom-half level
    /// `level` (see [`with_at`](Handlers::with_at)).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// As [`with_at`](Handlers::with_at).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Level, Vector};
    /// use core::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static STEPS: AtomicU32 = AtomicU32::new(0);
    /// fn step(count: &'static AtomicU32, _cpu: usize) {
    ///     count.fetch_add(1, Ordering::Relaxed);
    /// }
    /// const H: Handlers =
    ///     Handlers::new().with_context_at(Level::new(1), Vector::new(5), "STEP", &STEPS, step);
    /// assert_eq!(H.level(Vector::new(5)).index(), 1);
    /// ```
    #[track_caller]
    pub const fn with_context_at<C: Sync + 'static>(
        self,
        level: Level,
        v: Vector,
        name: &'static str,
        ctx: &'static C,
        handler: fn(&'static C, usize),
    ) -> Handlers {
        self.insert(level, v, name, Callback::with_context(ctx, handler))
    }

    /// The level of `v`'s entry ([`Level::DEFAULT`] for a vector the
    /// table does not have).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Level, Vector};
    /// assert_eq!(Handlers::NONE.level(Vector::new(3)), Level::DEFAULT);
    /// ```
    pub const fn level(&self, v: Vector) -> Level {
        Level::from_index(self.levels[v.index()] as usize)
    }

    /// `true` if every entry's level is below `levels` (checked by
    /// `Runtime::new` at compile time against its `L`).
    const fn levels_below(&self, levels: usize) -> bool {
        let mut i = 0;
        while i < MAX_VECTORS {
            if self.levels[i] as usize >= levels {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The table with `handler` on vector `v`, called with `ctx` (a
    /// device instance, a driver's state): one function serves several
    /// vectors, each with its own context. `C: Sync` because the handler
    /// may run on several CPUs at once.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// As [`with`](Handlers::with).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Handlers, Vector};
    /// use core::sync::atomic::AtomicU32;
    ///
    /// static DROPPED: AtomicU32 = AtomicU32::new(0);
    /// fn on_drop(count: &'static AtomicU32, _cpu: usize) {
    ///     count.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    /// }
    /// const H: Handlers = Handlers::new().with_context(Vector::new(5), "DROP", &DROPPED, on_drop);
    /// assert!(H.contains(Vector::new(5)));
    /// ```
    #[track_caller]
    pub const fn with_context<C: Sync + 'static>(
        self,
        v: Vector,
        name: &'static str,
        ctx: &'static C,
        handler: fn(&'static C, usize),
    ) -> Handlers {
        self.insert(
            Level::DEFAULT,
            v,
            name,
            Callback::with_context(ctx, handler),
        )
    }

    /// `true` if the table has a handler for `v`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!bottomhalf::Handlers::NONE.contains(bottomhalf::Vector::TASKLET));
    /// ```
    pub const fn contains(&self, v: Vector) -> bool {
        self.owned & v.bit() != 0
    }

    /// `true` if the table has no handler.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(bottomhalf::Handlers::NONE.is_empty());
    /// ```
    pub const fn is_empty(&self) -> bool {
        self.owned == 0
    }

    #[inline(always)]
    fn get(&self, v: Vector) -> Option<(&'static str, Callback)> {
        self.entries[v.index()]
    }
}

impl Default for Handlers {
    fn default() -> Handlers {
        Handlers::new()
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.entries
                    .iter()
                    .enumerate()
                    .filter_map(|(v, e)| e.map(|(name, _)| (v, name))),
            )
            .finish()
    }
}

/// The drain's limits.
///
/// # Examples
///
/// ```
/// use bottomhalf::Config;
/// const CFG: Config = Config::DEFAULT.max_restart(4).time_budget_ns(500_000);
/// assert_eq!(CFG.restarts(), 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    max_restart: u32,
    time_budget_ns: u64,
}

impl Config {
    /// Linux's limits: at most 10 passes per drain
    /// (`MAX_SOFTIRQ_RESTART = 10`, which counts passes in `__do_softirq`)
    /// and 2 ms (`MAX_SOFTIRQ_TIME`).
    pub const DEFAULT: Config = Config {
        max_restart: 10,
        time_budget_ns: 2_000_000,
    };

    /// At most `n` passes per drain, counting the first, as Linux's
    /// `MAX_SOFTIRQ_RESTART` does (`__do_softirq` restarts while
    /// `--max_restart` is non-zero, so 10 means 10 passes). A drain always
    /// runs its first pass, so `0` means the same as `1`: every drain is a
    /// single pass. The bound holds on every path of the drain, including
    /// the re-check after it releases the CPU.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Config::DEFAULT.max_restart(0).restarts(), 0);
    /// ```
    pub const fn max_restart(self, n: u32) -> Config {
        Config {
            max_restart: n,
            ..self
        }
    }

    /// A drain stops restarting once `ns` nanoseconds of the backend's clock
    /// have passed since it started (Linux's `MAX_SOFTIRQ_TIME`). `0` turns
    /// the time budget off; so does a backend without a clock.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Config::DEFAULT.time_budget_ns(0).budget_ns(), 0);
    /// ```
    pub const fn time_budget_ns(self, ns: u64) -> Config {
        Config {
            time_budget_ns: ns,
            ..self
        }
    }

    /// The pass budget as configured ([`max_restart`](Config::max_restart);
    /// `0` runs one pass).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Config::DEFAULT.restarts(), 10);
    /// ```
    pub const fn restarts(&self) -> u32 {
        self.max_restart
    }

    /// The time budget in nanoseconds (`0`: none).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Config::DEFAULT.budget_ns(), 2_000_000);
    /// ```
    pub const fn budget_ns(&self) -> u64 {
        self.time_budget_ns
    }
}

/// A [`Config`] as the runtime stores it: each field xor-ed with
/// [`Config::DEFAULT`]'s, so the default limits are all zero bits and a
/// `static` runtime built with them is all zeros (`.bss`, no flash copy).
/// A runtime built with other limits has these few bytes non-zero, which
/// puts the whole runtime in `.data`.
#[derive(Clone, Copy)]
struct StoredConfig {
    max_restart_x: u32,
    time_budget_ns_x: u64,
}

impl StoredConfig {
    const fn new(c: Config) -> StoredConfig {
        StoredConfig {
            max_restart_x: c.max_restart ^ Config::DEFAULT.max_restart,
            time_budget_ns_x: c.time_budget_ns ^ Config::DEFAULT.time_budget_ns,
        }
    }

    #[inline(always)]
    const fn get(self) -> Config {
        Config {
            max_restart: self.max_restart_x ^ Config::DEFAULT.max_restart,
            time_budget_ns: self.time_budget_ns_x ^ Config::DEFAULT.time_budget_ns,
        }
    }
}

/// What a drain left behind.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, DrainOutcome, Host, Runtime};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// assert_eq!(RT.drain(), DrainOutcome::Complete);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a drain that ran out of budget leaves work for someone else to run"]
pub enum DrainOutcome {
    /// The CPU's pending mask was empty when the drain ended.
    Complete,
    /// The budget ran out with work still pending; the backend was kicked
    /// ([`Backend::kick`]) so a drain thread or a re-pended interrupt runs
    /// the rest.
    Remaining,
    /// Another drain was running on this CPU (a nested interrupt exit, or a
    /// second thread bound to the same CPU); it sees the pending work.
    Busy,
    /// Bottom halves are off on this CPU ([`Runtime::bh_disable`]): the
    /// drain ran nothing and left the work pending; the last guard's drop
    /// runs it (or pends the drain). With several levels: for at least one
    /// level a guard covers (the levels it does not cover were drained).
    Disabled,
}

impl DrainOutcome {
    /// `true` for [`DrainOutcome::Complete`] only: after
    /// [`Remaining`](DrainOutcome::Remaining), [`Busy`](DrainOutcome::Busy)
    /// and [`Disabled`](DrainOutcome::Disabled) work may still be pending
    /// (someone else runs it: the kicked backend, the running drain, the
    /// last bottom-half guard's drop).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(bottomhalf::DrainOutcome::Complete.is_complete());
    /// ```
    pub const fn is_complete(self) -> bool {
        matches!(self, DrainOutcome::Complete)
    }

    /// How much a caller has to care: `Remaining` (someone must run more)
    /// over `Busy` over `Disabled` over `Complete`.
    const fn rank(self) -> u8 {
        match self {
            DrainOutcome::Complete => 0,
            DrainOutcome::Disabled => 1,
            DrainOutcome::Busy => 2,
            DrainOutcome::Remaining => 3,
        }
    }

    /// The more pressing of two levels' outcomes (see `rank`).
    fn worst(self, other: DrainOutcome) -> DrainOutcome {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn worst_of(self, other: Option<DrainOutcome>) -> DrainOutcome {
        match other {
            Some(o) => self.worst(o),
            None => self,
        }
    }
}

/// The deepest nesting of [`Runtime::bh_disable`] guards on one CPU; a
/// guard beyond it counts [`Misuse::BhDisableOverflow`] and does nothing.
/// Linux's `SOFTIRQ_MASK` holds 8 bits of the preempt count.
pub const BH_DISABLE_MAX: u32 = 255;

/// The CPU of an overflowing guard, which holds no count.
const NOT_COUNTED: usize = usize::MAX;

/// Bottom halves off on one CPU until dropped: see
/// [`Runtime::bh_disable`] (Linux's `local_bh_disable`; the drop is
/// `local_bh_enable`).
///
/// Not `Send`: it belongs to the CPU and the thread that took it.
///
/// Top-half safe: dropping it is not (the last drop may drain). Allocates:
/// no. Blocks: no.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, DrainOutcome, Host, Runtime, Vector};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// RT.register(Vector::new(2), "V", |_| {}).unwrap();
/// let guard = RT.bh_disable();
/// RT.raise(Vector::new(2));
/// assert_eq!(RT.drain(), DrainOutcome::Disabled);
/// drop(guard); // runs the vector
/// assert_eq!(RT.stats().runs(0, Vector::new(2)), 1);
/// ```
#[must_use = "bottom halves are back on as soon as the guard is dropped"]
pub struct BhGuard<'a, B: Backend, const N: usize, const L: usize = 1> {
    rt: &'a Runtime<B, N, L>,
    /// The CPU whose counts this guard holds, or [`NOT_COUNTED`].
    cpu: usize,
    /// The highest level it covers: it holds one count of each of the
    /// levels `0..=top`.
    top: u8,
    _not_send: PhantomData<*const ()>,
}

impl<B: Backend, const N: usize, const L: usize> BhGuard<'_, B, N, L> {
    /// The highest level this guard keeps off: it covers `0..=` this one.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime};
    /// static RT: Runtime<Host, 1, 3> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.bh_disable().top_level(), Level::new(2));
    /// assert_eq!(RT.bh_disable_to(Level::new(1)).top_level(), Level::new(1));
    /// ```
    pub fn top_level(&self) -> Level {
        Level::from_index(usize::from(self.top))
    }

    /// The CPU whose bottom halves this guard keeps off.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// let _cpu1 = RT.bind_current_thread(1).unwrap();
    /// assert_eq!(RT.bh_disable().cpu(), 1);
    /// ```
    pub fn cpu(&self) -> usize {
        if self.cpu == NOT_COUNTED {
            // An overflowing guard: the CPU it was taken on.
            self.rt.current().0
        } else {
            self.cpu
        }
    }
}

impl<B: Backend, const N: usize, const L: usize> Drop for BhGuard<'_, B, N, L> {
    fn drop(&mut self) {
        if self.cpu != NOT_COUNTED {
            self.rt.bh_enable(self.cpu, usize::from(self.top));
        }
    }
}

impl<B: Backend, const N: usize, const L: usize> fmt::Debug for BhGuard<'_, B, N, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BhGuard")
            .field("cpu", &self.cpu)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

/// Registration state of a vector slot (the low two bits of its state
/// byte).
const SLOT_EMPTY: u8 = 0;
const SLOT_WRITING: u8 = 1;
const SLOT_READY: u8 = 2;
const SLOT_STATE_MASK: u8 = 3;
/// The vector's level is in the state byte's bits 2..=4, set with WRITING
/// by the `register` that wins the slot and kept in READY, so `raise`
/// finds it with one relaxed load of the byte.
const SLOT_LEVEL_SHIFT: u32 = 2;

/// One vector's run-time registered handler.
///
/// `state` goes EMPTY → WRITING (the one `register` that wins the CAS) →
/// READY (Release, after `name` and `callback` are written), both with the
/// vector's level in bits 2..=4 (`SLOT_LEVEL_SHIFT`). Nothing else
/// writes `name` or `callback`; readers load `state` with Acquire and read
/// them only when it is READY.
///
/// All zero when empty (state EMPTY = 0, `None`s, null context), so a
/// runtime's 32 slots cost no flash. The tasklet vectors 0 and 6 have no
/// slot content of their own: the drain and `vector_name` handle them in
/// code.
struct VectorSlot {
    state: AtomicU8,
    name: UnsafeCell<Option<&'static str>>,
    callback: UnsafeCell<Callback>,
}

impl VectorSlot {
    loom_const_fn! {
        fn new() -> VectorSlot {
            VectorSlot {
                state: AtomicU8::new(SLOT_EMPTY),
                name: UnsafeCell::new(None),
                callback: UnsafeCell::new(Callback::NONE),
            }
        }
    }

    /// The name and callback, if registered.
    #[inline(always)]
    fn get(&self) -> Option<(&'static str, Callback)> {
        // Acquire: pairs with the Release store of READY in `register`.
        if self
            .state
            .load(ordering!("slot_ready_relaxed", Acquire, Relaxed))
            & SLOT_STATE_MASK
            != SLOT_READY
        {
            return None;
        }
        // SAFETY: READY was stored (Release) after the only writes to
        // `name` and `callback`, and we loaded it with Acquire; nobody
        // writes them after READY, so these are shared reads of initialised
        // data.
        let name = self.name.with(|p| unsafe { *p });
        // SAFETY: as above.
        let callback = self.callback.with(|p| unsafe { *p });
        Some((name.unwrap_or(""), callback))
    }
}

/// One bottom-half level of one CPU: everything a drain of that level
/// owns. Levels of one CPU share nothing but the CPU's wake word, its
/// interrupt depth and its counters, so each keeps today's single-level
/// protocol unchanged (the hand-offs between `raise`, `drain` and the
/// guard are per level).
pub(crate) struct LevelState {
    /// Bit `v`: vector `v` (of this level) was raised on this CPU and no
    /// drain has taken it yet. Set by `raise` (any context on this CPU);
    /// cleared only by this level's drain's `swap(0)`.
    pending: AtomicU32,
    /// A drain of this level is running on this CPU. Set by the drain that
    /// wins the swap; cleared by the same drain when it ends.
    pub(crate) draining: AtomicBool,
    /// Bottom-half guards held on this CPU that cover this level
    /// ([`Runtime::bh_disable_to`] a level at or above it); no drain of
    /// this level runs while it is non-zero. Changed with SeqCst RMWs by
    /// the guards; read SeqCst by a drain after it set `draining` (the
    /// store-buffering pair with `draining`, see `bh_disable_to`). A
    /// guard covers levels `0..=k`, so the counts never grow with the
    /// level: level 0's is the largest.
    bh_disabled: AtomicU32,
    /// This level's tasklet lists, indexed by [`Priority`].
    pub(crate) tasklets: [TaskletList; 2],
    /// Bottom-half work items of this level, run by vector 6 after this
    /// level's normal tasklets (`crate::work::bh`).
    pub(crate) bh_work: crate::work::BhQueue,
    /// `fork()` repair stamps of `draining` (`crate::fork`).
    pub(crate) fork: crate::fork::CpuFork,
}

impl LevelState {
    /// A bottom-half guard covers this level on its CPU now. SeqCst, as
    /// the drain's check (a thread asking about its own guard sees it).
    pub(crate) fn is_bh_disabled(&self) -> bool {
        self.bh_disabled.load(Ordering::SeqCst) != 0
    }

    loom_const_fn! {
        fn new() -> LevelState {
            LevelState {
                pending: AtomicU32::new(0),
                draining: AtomicBool::new(false),
                bh_disabled: AtomicU32::new(0),
                tasklets: [TaskletList::new(), TaskletList::new()],
                bh_work: crate::work::BhQueue::new(),
                fork: crate::fork::CpuFork::new(),
            }
        }
    }
}

/// Per-CPU softirq state: `L` levels.
pub(crate) struct CpuState<const L: usize> {
    /// The levels, indexed by [`Level::index`].
    pub(crate) levels: [LevelState; L],
    /// The word this CPU's drain thread sleeps on; the backend's `kick`
    /// notifies it (for every level: one drain thread drains them all).
    pub(crate) wake: WakeWord,
    /// Interrupt handlers between `irq_enter` and `irq_exit` on this CPU.
    /// Only the CPU's own handlers touch it, nested, so each `fetch_add` is
    /// matched by a `fetch_sub` before the handler it interrupted resumes.
    irq_depth: AtomicU32,
    /// Counters, see [`Stats`] (shared by the levels: a vector is of one
    /// level; the tasklet vectors count the runs of every level).
    pub(crate) stats: CpuStats,
}

impl<const L: usize> CpuState<L> {
    loom_const_fn! {
        fn new() -> CpuState<L> {
            CpuState {
                levels: array_of![LevelState::new(); L],
                wake: WakeWord::new(),
                irq_depth: AtomicU32::new(0),
                stats: CpuStats::new(),
            }
        }
    }
}

/// A softirq runtime: `N` CPUs, 32 vectors, `L` bottom-half levels per
/// CPU (default 1), two tasklet lists per CPU and level.
///
/// `B` says where the current CPU, the clock and the drain wake-up come
/// from (`Host`, feature `std`, for threads standing in for CPUs). Build it
/// in a `static`; register handlers at set-up; raise from top halves;
/// drain from the bottom half of each CPU.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Vector};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
/// static RX: AtomicU32 = AtomicU32::new(0);
/// const NET_RX: Vector = Vector::new(3);
///
/// RT.register(NET_RX, "NET_RX", |_cpu| {
///     RX.fetch_add(1, Ordering::Relaxed);
/// })
/// .unwrap();
///
/// // Top half: record and leave.
/// RT.raise(NET_RX);
/// RT.raise(NET_RX); // coalesced with the first
///
/// // Bottom half.
/// assert!(RT.drain().is_complete());
/// assert_eq!(RX.load(Ordering::Relaxed), 1);
/// assert_eq!(RT.stats().coalesced(0, NET_RX), 1);
/// ```
///
/// # Memory
///
/// `Runtime::new(Config::DEFAULT)` is all zero bytes, so a `static`
/// runtime lands in `.bss`: RAM only, nothing copied from flash at boot,
/// nothing in a Linux binary's file. Non-default limits (`Config`) make a
/// few bytes non-zero and move the whole runtime to `.data`; a backend's
/// constant handler table ([`Backend::HANDLERS`]) lives in `.rodata` and
/// does not change where the runtime goes. Handlers registered at run time
/// fill the runtime's own slots.
///
/// A runtime with more levels (`L > 1`) has `L` copies of the per-CPU
/// pending state; with the default `L = 1` its size and code are those of
/// a runtime without levels (the level lookups are constants and vanish).
///
/// # Levels
///
/// `Runtime<B, N, L>` has `L` bottom-half priority levels per CPU
/// ([`Level`] `0..L`; `L` defaults to 1, at most [`MAX_LEVELS`]), like
/// RTIC's or embassy's one dispatcher per interrupt priority, for the
/// bottom halves of one CPU. Urgent bottom halves (a motor-control step)
/// go to a higher level than bulk ones (a log flush), and preempt them
/// even once they are running.
///
/// - **What belongs to a level.** A vector, fixed when its handler is
///   registered ([`register_at`](Runtime::register_at),
///   [`register_with_at`](Runtime::register_with_at),
///   [`Handlers::with_at`]; [`register`](Runtime::register) is level 0;
///   one vector at two levels is [`RegisterError::OtherLevel`], or a
///   compile-time error in a table). A tasklet
///   ([`Tasklet::at_level`](crate::Tasklet::at_level)). Each level of each
///   CPU has its own pending mask, its own tasklet lists (vectors 0 and 6
///   of a level drain that level's lists) and its own drain trigger:
///   [`Backend::kick`] and [`Board::pend_drain`](crate::Board::pend_drain)
///   take the level, so a board pends one drain interrupt per level.
///   `raise` finds a vector's level with one relaxed load (none when
///   `L == 1`).
/// - **Draining.** [`drain_level`](Runtime::drain_level) drains one
///   level: what a level's drain interrupt calls.
///   [`drain`](Runtime::drain) drains every level, highest first, as the
///   `Host`/`Signals` drain threads do. [`irq_exit`](Runtime::irq_exit)
///   drains the pending levels highest first, down to the first level
///   whose drain is already running on this CPU (the context the
///   interrupt interrupted): levels below it stay for that context, so a
///   lower level never runs inside a higher one. Budgets are per drain
///   call of a level, as with one level.
/// - **Preemption.** A drain of a higher level may start while a lower
///   level's drain is running on the same CPU: on bare metal the higher
///   level's drain interrupt has the higher priority and simply preempts;
///   on `Host`, a second thread bound to the CPU index (or a call of
///   `drain_level` from inside a lower level's handler, as an interrupt
///   would make) stands for it. A level never runs nested in itself: a
///   `drain_level` of a level already draining on this CPU returns
///   [`DrainOutcome::Busy`] and the running drain sees the new work.
/// - **Bottom halves off.** [`bh_disable`](Runtime::bh_disable) covers
///   every level; [`bh_disable_to`](Runtime::bh_disable_to) covers levels
///   `0..=k`, so higher levels still run. The last guard covering a level
///   runs (or pends) that level's work, highest level first.
/// - **Statistics** stay per CPU and vector: a vector is of one level, so
///   its counters are that level's; the tasklet vectors 0 and 6 add up the
///   tasklet runs of every level.
///
/// A level-1 handler runs before a level-0 handler returns, when level 1
/// is drained from an interrupt that arrives during the level-0 handler
/// (here, on `Host`, a direct call stands for that interrupt):
///
/// ```
/// use bottomhalf::{Config, DrainOutcome, Host, Level, Runtime, Vector};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
/// static STEPS: AtomicU32 = AtomicU32::new(0);
/// const FLUSH: Vector = Vector::new(3); // bulk: level 0
/// const STEP: Vector = Vector::new(4); // urgent: level 1
///
/// RT.register_at(Level::new(0), FLUSH, "FLUSH", |_| {
///     // ...writing out a log buffer, when the motor interrupt fires:
///     RT.raise(STEP);
///     // ...and level 1's drain interrupt preempts this handler:
///     assert_eq!(RT.drain_level(Level::new(1)), DrainOutcome::Complete);
///     assert_eq!(STEPS.load(Ordering::Relaxed), 1); // ran inside the flush
/// })
/// .unwrap();
/// RT.register_at(Level::new(1), STEP, "STEP", |_| {
///     STEPS.fetch_add(1, Ordering::Relaxed);
/// })
/// .unwrap();
///
/// RT.raise(FLUSH);
/// assert_eq!(RT.drain_level(Level::new(0)), DrainOutcome::Complete);
/// assert_eq!(STEPS.load(Ordering::Relaxed), 1);
/// ```
///
/// On a Cortex-M, two spare interrupt vectors at two priorities, both
/// below every device interrupt, are the two levels' drain interrupts
/// (the firmware test `no_std-tests/src/bin/levels.rs`, in the crate's
/// repository, runs this wiring under QEMU on a Cortex-M0 and M3).
/// `Interrupt` and `NVIC` are the device crate's and cortex-m's — here
/// the LM3S6965's (`lm3s6965` 0.2), whose GPIOD and GPIOE nothing drives:
///
/// ```no_run
/// # // Host stand-ins for the cortex-m and PAC calls, so the example compiles here.
/// # #[derive(Clone, Copy)] enum Interrupt { GPIOD, GPIOE }
/// # struct NVIC;
/// # impl NVIC {
/// #     fn pend(_i: Interrupt) {}
/// #     unsafe fn unmask(_i: Interrupt) {}
/// #     unsafe fn set_priority(&mut self, _i: Interrupt, _p: u8) {}
/// # }
/// use bottomhalf::{BareMetal, Board, Config, Level, Runtime, Tasklet, Vector};
///
/// const LOG: Level = Level::new(0);
/// const MOTOR: Level = Level::new(1);
/// /// The drain interrupt of each level: spare vectors no device uses.
/// const DRAIN_IRQ: [Interrupt; 2] = [Interrupt::GPIOE, Interrupt::GPIOD];
///
/// struct Mcu;
/// impl Board for Mcu {
///     fn pend_drain(_cpu: usize, level: Level) {
///         NVIC::pend(DRAIN_IRQ[level.index()]);
///     }
/// }
/// static RT: Runtime<BareMetal<Mcu>, 1, 2> = Runtime::new(Config::DEFAULT);
/// const FLUSH: Vector = Vector::new(3);
/// static STEP: Tasklet = Tasklet::new(&RT, || { /* next PWM duty cycle */ }).at_level(MOTOR);
///
/// fn init(nvic: &mut NVIC) {
///     RT.register_at(LOG, FLUSH, "FLUSH", |_| { /* write the log out */ }).unwrap();
///     // SAFETY: start-up, before anything can pend these interrupts; no
///     // priority-based critical section depends on them. (cortex-m's
///     // `unsafe`, not this crate's.)
///     unsafe {
///         nvic.set_priority(DRAIN_IRQ[1], 0x80); // level 1: above level 0
///         nvic.set_priority(DRAIN_IRQ[0], 0xC0); // level 0: the lowest
///         NVIC::unmask(DRAIN_IRQ[0]);
///         NVIC::unmask(DRAIN_IRQ[1]);
///     }
/// }
///
/// // #[interrupt] fn TIMER_0A() — the motor timer, priority 0x00.
/// fn timer0a() {
///     STEP.schedule(); // pends GPIOD: preempts a running FLUSH
/// }
/// // #[interrupt] fn UART0() — priority 0x40.
/// fn uart0() {
///     RT.raise(FLUSH); // pends GPIOE
/// }
/// // #[interrupt] fn GPIOD()
/// fn level_1_drain() {
///     let _ = RT.drain_level(MOTOR);
/// }
/// // #[interrupt] fn GPIOE()
/// fn level_0_drain() {
///     let _ = RT.drain_level(LOG);
/// }
/// # init(&mut NVIC); timer0a(); uart0(); level_1_drain(); level_0_drain();
/// ```
pub struct Runtime<B: Backend, const N: usize, const L: usize = 1> {
    cpus: PerCpu<CpuState<L>, N>,
    vectors: [VectorSlot; MAX_VECTORS],
    config: StoredConfig,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend, const N: usize, const L: usize> Runtime<B, N, L> {
    /// Compile-time checks of `L`: `1..=MAX_LEVELS`, and above every level
    /// of the backend's constant table.
    const LEVELS_OK: () = {
        assert!(
            L >= 1 && L <= MAX_LEVELS,
            "a runtime has 1 to 8 bottom-half levels"
        );
        assert!(
            B::HANDLERS.levels_below(L),
            "the backend's handler table puts a vector at a level the runtime does not have"
        );
    };

    loom_const_fn! {
        /// An empty runtime with the given limits; vectors 0 and 6 drain
        /// tasklets. With [`Config::DEFAULT`] it is all zero bytes (a
        /// `static` of it goes to `.bss`; see "Memory" on [`Runtime`]).
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::{Config, Host, Runtime};
        /// static RT: Runtime<Host, 4> = Runtime::new(Config::DEFAULT.max_restart(3));
        /// assert_eq!(RT.cpus(), 4);
        /// ```
        pub fn new(config: Config) -> Runtime<B, N, L> {
            #[allow(clippy::let_unit_value)]
            let () = Self::LEVELS_OK;
            Runtime {
                cpus: PerCpu::new(array_of![CpuState::new(); N]),
                vectors: array_of![VectorSlot::new(); MAX_VECTORS],
                config: StoredConfig::new(config),
                _backend: PhantomData,
            }
        }
    }

    /// The current CPU's index and state. A backend that reports an index
    /// `>= N` gets CPU `index % N` instead, a slot the runtime's drains
    /// serve (a drain thread per CPU, or the board's drain interrupt for
    /// that core), and the misuse is counted there
    /// ([`Misuse::CpuOutOfRange`]): top halves never panic on it.
    #[inline(always)]
    pub(crate) fn current_state(&self) -> (usize, &CpuState<L>) {
        self.current()
    }

    /// CPU `cpu`'s state, `None` if `cpu >= N`.
    #[inline]
    pub(crate) fn try_cpu_state(&self, cpu: usize) -> Option<&CpuState<L>> {
        self.cpus.try_get(cpu).ok()
    }

    /// Sets `v` pending at level `lvl` on `cpu` (state `st`) and kicks that
    /// level unless it drains: a raise on that CPU, from any CPU
    /// (`queue_work_on`). Without `std`, out of line: the work queue, the
    /// pokes and the timer interrupt share one copy.
    #[cfg_attr(feature = "std", inline)]
    #[cfg_attr(not(feature = "std"), inline(never))]
    pub(crate) fn raise_on(&self, cpu: usize, st: &CpuState<L>, lvl: usize, v: Vector) {
        // Callers pass a level below `L`; checked without a panic path
        // (out of line, the compiler cannot see it).
        let Some(ls) = st.levels.get(lvl) else {
            return;
        };
        // SeqCst: as in `raise`.
        let old = ls
            .pending
            .fetch_or(v.bit(), ordering!("raise_relaxed", SeqCst, Relaxed));
        if old == 0 {
            self.kick_unless_draining(cpu, st, lvl);
        }
    }

    #[inline(always)]
    fn current(&self) -> (usize, &CpuState<L>) {
        let cpu = B::current_cpu();
        match self.cpus.try_get(cpu) {
            Ok(st) => (cpu, st),
            Err(_) => self.fold_cpu(cpu),
        }
    }

    #[cold]
    #[inline(never)]
    fn fold_cpu(&self, cpu: usize) -> (usize, &CpuState<L>) {
        let cpu = cpu % N;
        let st = self.cpus.get(cpu);
        st.stats.misuse(Misuse::CpuOutOfRange);
        (cpu, st)
    }

    /// The number of CPUs, `N`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.cpus(), 2);
    /// ```
    pub const fn cpus(&self) -> usize {
        N
    }

    /// The number of bottom-half levels, `L` (1 unless the type says
    /// otherwise).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static ONE: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static TWO: Runtime<Host, 2, 2> = Runtime::new(Config::DEFAULT);
    /// assert_eq!((ONE.levels(), TWO.levels()), (1, 2));
    /// ```
    ///
    /// `L` is 1 to [`MAX_LEVELS`]; anything else does not compile:
    ///
    /// ```compile_fail
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1, 9> = Runtime::new(Config::DEFAULT);
    /// ```
    ///
    /// Nor does a backend's table with a vector at a level the runtime
    /// lacks:
    ///
    /// ```compile_fail
    /// use bottomhalf::{Backend, Config, Handlers, Level, Runtime, Vector};
    /// struct OneCpu;
    /// impl Backend for OneCpu {
    ///     fn current_cpu() -> usize { 0 }
    ///     fn now_ns() -> u64 { 0 }
    ///     const HANDLERS: &'static Handlers =
    ///         &Handlers::new().with_at(Level::new(2), Vector::new(3), "X", |_| {});
    /// }
    /// static RT: Runtime<OneCpu, 1, 2> = Runtime::new(Config::DEFAULT);
    /// ```
    pub const fn levels(&self) -> usize {
        L
    }

    /// The limits the runtime was built with.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.config(), Config::DEFAULT);
    /// ```
    pub const fn config(&self) -> Config {
        self.config.get()
    }

    /// Registers `handler` for vector `v`, named `name` in the statistics.
    ///
    /// Top-half safe: yes (lock-free; but registration belongs in set-up).
    /// Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`RegisterError::Reserved`] for the tasklet vectors 0 and 6;
    /// [`RegisterError::AlreadyRegistered`] if `v` has a handler;
    /// [`RegisterError::InTable`] if the backend's constant table
    /// ([`Backend::HANDLERS`]) has one.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, RegisterError, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// const BLOCK: Vector = Vector::new(4);
    /// RT.register(BLOCK, "BLOCK", |_| {}).unwrap();
    /// assert_eq!(
    ///     RT.register(BLOCK, "BLOCK", |_| {}),
    ///     Err(RegisterError::AlreadyRegistered(BLOCK))
    /// );
    /// ```
    pub fn register(
        &self,
        v: Vector,
        name: &'static str,
        handler: Handler,
    ) -> Result<(), RegisterError> {
        self.register_callback(Level::DEFAULT, v, name, Callback::plain(handler))
    }

    /// Registers `handler` for vector `v` at bottom-half level `level`
    /// (see "Levels" on [`Runtime`]): `v`'s raises go to that level's
    /// pending mask and run in that level's drain.
    /// [`register`](Runtime::register) is `register_at(Level::DEFAULT, ..)`.
    ///
    /// Top-half safe: yes (lock-free; but registration belongs in set-up:
    /// a raise of `v` that comes before it lands at level 0). Allocates:
    /// no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`register`](Runtime::register), and
    /// [`RegisterError::LevelOutOfRange`] if `level` is not below `L`;
    /// [`RegisterError::OtherLevel`] if `v` already has a handler at
    /// another level.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, RegisterError, Runtime, Vector};
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// const MOTOR: Vector = Vector::new(2);
    /// RT.register_at(Level::new(1), MOTOR, "MOTOR", |_| {}).unwrap();
    /// RT.raise(MOTOR);
    /// assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 2);
    /// assert_eq!(
    ///     RT.register_at(Level::new(0), MOTOR, "MOTOR", |_| {}),
    ///     Err(RegisterError::OtherLevel(MOTOR))
    /// );
    /// assert!(RT.register_at(Level::new(2), Vector::new(3), "X", |_| {}).is_err());
    /// # let _ = RT.drain();
    /// ```
    pub fn register_at(
        &self,
        level: Level,
        v: Vector,
        name: &'static str,
        handler: Handler,
    ) -> Result<(), RegisterError> {
        self.register_callback(level, v, name, Callback::plain(handler))
    }

    /// [`register_with`](Runtime::register_with) at bottom-half level
    /// `level` (see [`register_at`](Runtime::register_at)).
    ///
    /// Top-half safe: yes (lock-free; but registration belongs in set-up).
    /// Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`register_at`](Runtime::register_at).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static STEPS: AtomicU32 = AtomicU32::new(0);
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// RT.register_with_at(Level::new(1), Vector::new(2), "STEP", &STEPS, |n, _| {
    ///     n.fetch_add(1, Ordering::Relaxed);
    /// })
    /// .unwrap();
    /// RT.raise(Vector::new(2));
    /// assert!(RT.drain_level(Level::new(1)).is_complete());
    /// assert_eq!(STEPS.load(Ordering::Relaxed), 1);
    /// ```
    pub fn register_with_at<C: Sync + 'static>(
        &self,
        level: Level,
        v: Vector,
        name: &'static str,
        ctx: &'static C,
        handler: fn(&'static C, usize),
    ) -> Result<(), RegisterError> {
        self.register_callback(level, v, name, Callback::with_context(ctx, handler))
    }

    /// Registers `handler` for vector `v` with a `'static` context: the
    /// drain calls `handler(ctx, cpu)`. One driver function then serves
    /// several device instances, each on its own vector with its own
    /// context (Linux's `from_tasklet`/`container_of`, Zephyr's
    /// `CONTAINER_OF`). `C: Sync` because the handler may run on several
    /// CPUs at once.
    ///
    /// No allocation: the runtime keeps the reference and the function
    /// pointer in the vector's slot.
    ///
    /// Top-half safe: yes (lock-free; but registration belongs in set-up).
    /// Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`register`](Runtime::register).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// /// One instance per UART; one driver function for all of them.
    /// struct Uart {
    ///     base: usize,
    ///     rx_bytes: AtomicU32,
    /// }
    /// fn uart_rx(uart: &'static Uart, _cpu: usize) {
    ///     // Read the FIFO at `uart.base`...
    ///     uart.rx_bytes.fetch_add(1, Ordering::Relaxed);
    /// }
    ///
    /// static UARTS: [Uart; 4] = [
    ///     Uart { base: 0x4000_c000, rx_bytes: AtomicU32::new(0) },
    ///     Uart { base: 0x4000_d000, rx_bytes: AtomicU32::new(0) },
    ///     Uart { base: 0x4000_e000, rx_bytes: AtomicU32::new(0) },
    ///     Uart { base: 0x4000_f000, rx_bytes: AtomicU32::new(0) },
    /// ];
    /// const UART_RX: [Vector; 4] = [Vector::new(2), Vector::new(3), Vector::new(4), Vector::new(5)];
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    ///
    /// for (uart, v) in UARTS.iter().zip(UART_RX) {
    ///     RT.register_with(v, "UART_RX", uart, uart_rx).unwrap();
    /// }
    /// RT.raise(UART_RX[2]); // UART 2's interrupt
    /// assert!(RT.drain().is_complete());
    /// let rx: Vec<u32> = UARTS.iter().map(|u| u.rx_bytes.load(Ordering::Relaxed)).collect();
    /// assert_eq!(rx, [0, 0, 1, 0]);
    /// ```
    pub fn register_with<C: Sync + 'static>(
        &self,
        v: Vector,
        name: &'static str,
        ctx: &'static C,
        handler: fn(&'static C, usize),
    ) -> Result<(), RegisterError> {
        self.register_callback(
            Level::DEFAULT,
            v,
            name,
            Callback::with_context(ctx, handler),
        )
    }

    fn register_callback(
        &self,
        level: Level,
        v: Vector,
        name: &'static str,
        callback: Callback,
    ) -> Result<(), RegisterError> {
        if v.is_tasklet_vector() {
            return Err(RegisterError::Reserved(v));
        }
        if level.index() >= L {
            return Err(RegisterError::LevelOutOfRange(level));
        }
        if B::HANDLERS.contains(v) {
            let registered = B::HANDLERS.level(v);
            // With one level every vector is at level 0: no code for it.
            if L > 1 && registered != level {
                return Err(RegisterError::OtherLevel(v));
            }
            return Err(RegisterError::InTable(v));
        }
        let slot = &self.vectors[v.index()];
        let tag = (level.index() as u8) << SLOT_LEVEL_SHIFT;
        // Acquire/Relaxed: the winner is the only writer of the cells below;
        // readers synchronise through the Release store of READY.
        if let Err(now) = slot.state.compare_exchange(
            SLOT_EMPTY,
            SLOT_WRITING | tag,
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            let registered = Level::from_index(usize::from(now >> SLOT_LEVEL_SHIFT));
            if L > 1 && registered != level {
                return Err(RegisterError::OtherLevel(v));
            }
            return Err(RegisterError::AlreadyRegistered(v));
        }
        // SAFETY: winning EMPTY → WRITING makes this call the only writer,
        // and readers touch the cells only after seeing READY, which is
        // stored below; so no access overlaps these writes.
        slot.name.with_mut(|p| unsafe { *p = Some(name) });
        // SAFETY: as above.
        slot.callback.with_mut(|p| unsafe { *p = callback });
        // Release: pairs with the Acquire load in `VectorSlot::get`.
        slot.state.store(
            SLOT_READY | tag,
            ordering!("slot_ready_relaxed", Release, Relaxed),
        );
        Ok(())
    }

    /// The name vector `v` was registered under, in the backend's
    /// constant table or at run time (`"HI"` and `"TASKLET"` for the
    /// tasklet vectors), or `None`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.vector_name(Vector::HI_TASKLET), Some("HI"));
    /// assert_eq!(RT.vector_name(Vector::new(9)), None);
    /// ```
    pub fn vector_name(&self, v: Vector) -> Option<&'static str> {
        match v {
            Vector::HI_TASKLET => Some("HI"),
            Vector::TASKLET => Some("TASKLET"),
            _ => match B::HANDLERS.get(v) {
                Some((name, _)) => Some(name),
                None => self.vectors[v.index()].get().map(|(name, _)| name),
            },
        }
    }

    /// Marks vector `v` pending on the current CPU, at the vector's level.
    ///
    /// One atomic `fetch_or` on the CPU's pending mask of `v`'s level; if
    /// the bit was already set, one more `fetch_add` counts the coalesced
    /// raise. If the mask was empty and no drain of that level is running
    /// on the CPU, the backend is kicked for that level
    /// ([`Backend::kick`]). Raising a vector without a handler is counted
    /// at the drain ([`Stats::unhandled`]) and otherwise ignored; it is at
    /// level 0.
    ///
    /// With more than one level (`L > 1`), finding `v`'s level is one
    /// relaxed load of its registration byte (or a load from the
    /// backend's constant table, in flash); with one level, nothing.
    ///
    /// Top-half safe: yes (wait-free). Allocates: no. Blocks: no.
    ///
    /// Never panics. A backend that reports a CPU index `>= N` (a backend
    /// bug) gets CPU `index % N`, counted as [`Misuse::CpuOutOfRange`]
    /// (the same for every call that works on the current CPU:
    /// [`drain`](Runtime::drain), [`irq_enter`](Runtime::irq_enter),
    /// [`irq_exit`](Runtime::irq_exit), tasklet `schedule` and `enable`).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.raise(Vector::new(2));
    /// assert_eq!(RT.pending(0), 1 << 2);
    /// ```
    #[inline]
    pub fn raise(&self, v: Vector) {
        let (cpu, st) = self.current();
        let lvl = self.level_of(v);
        let ls = &st.levels[lvl];
        let bit = v.bit();
        // SeqCst: its release half pairs with the drain's Acquire `swap`
        // (data written before `raise` is visible to the handler); its
        // sequential consistency pairs with the `draining` hand-off in
        // `drain_level` (module docs, "Atomic orderings").
        let old = ls
            .pending
            .fetch_or(bit, ordering!("raise_relaxed", SeqCst, Relaxed));
        if old & bit != 0 {
            st.stats.vector(v).coalesced.fetch_add(1, Ordering::Relaxed);
        } else if old == 0 {
            self.kick_unless_draining(cpu, st, lvl);
        }
    }

    /// The level index of vector `v`: 0 with one level (no load at all);
    /// otherwise the level in the backend's constant table, or in the
    /// slot's state byte (one relaxed load: the level is written with
    /// the slot's first state change, before any handler can be found,
    /// and never changes; a raise that races with the registration sees
    /// EMPTY and lands at level 0, where the drain still finds the
    /// handler). Always below `L`: registration and `Runtime::new` check
    /// the levels, and the fold below only keeps the index provably in
    /// range without a panic path.
    #[inline(always)]
    fn level_of(&self, v: Vector) -> usize {
        if L == 1 {
            return 0;
        }
        let lvl = if Self::HAS_TABLE && B::HANDLERS.contains(v) {
            B::HANDLERS.level(v).index()
        } else {
            usize::from(self.vectors[v.index()].state.load(Ordering::Relaxed) >> SLOT_LEVEL_SHIFT)
        };
        if lvl < L {
            lvl
        } else {
            0
        }
    }

    /// The level of vector `v`: where its handler was registered
    /// ([`register_at`](Runtime::register_at), or the backend's table),
    /// [`Level::DEFAULT`] for a vector without one (and for the tasklet
    /// vectors, which every level has).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Vector};
    /// static RT: Runtime<Host, 1, 3> = Runtime::new(Config::DEFAULT);
    /// RT.register_at(Level::new(2), Vector::new(9), "URGENT", |_| {}).unwrap();
    /// assert_eq!(RT.vector_level(Vector::new(9)), Level::new(2));
    /// assert_eq!(RT.vector_level(Vector::new(8)), Level::DEFAULT);
    /// ```
    pub fn vector_level(&self, v: Vector) -> Level {
        Level::from_index(self.level_of(v))
    }

    /// Kicks the backend for level `lvl` of `cpu`, unless a drain of that
    /// level is running there: that drain re-reads the mask after clearing
    /// `draining` (SeqCst on both sides, see `drain_level`), so it runs the
    /// new work itself and a kick would only make a spurious drain (an
    /// empty drain interrupt, a needless futex wake). In a child of
    /// `fork()` the flag may be a parent thread's, for a drain that does
    /// not exist there: with the flag set, a level whose fork stamp is not
    /// this generation's is kicked anyway (`crate::fork`; one more load,
    /// only when the flag is set).
    #[inline]
    fn kick_unless_draining(&self, cpu: usize, st: &CpuState<L>, lvl: usize) {
        let ls = &st.levels[lvl];
        if !ls
            .draining
            .load(ordering!("kick_check_relaxed", SeqCst, Relaxed))
            || ls.fork.stale()
        {
            B::kick(cpu, Level::from_index(lvl), &st.wake);
        }
    }

    /// Marks `v` pending at level `lvl` of `cpu` from inside that level's
    /// drain, without a kick: the drain's restart loop sees it.
    pub(crate) fn pend_in_drain(&self, cpu: usize, lvl: usize, v: Vector) {
        self.cpus.get(cpu).levels[lvl]
            .pending
            .fetch_or(v.bit(), Ordering::SeqCst);
    }

    /// The pending mask of CPU `cpu` (bit `v` = vector `v`), over every
    /// level (the union of the levels' masks; the tasklet vectors may be
    /// pending at several levels).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.pending(0), 0);
    /// ```
    pub fn pending(&self, cpu: usize) -> u32 {
        let st = self.cpus.get(cpu);
        st.levels
            .iter()
            .fold(0, |m, ls| m | ls.pending.load(Ordering::Acquire))
    }

    /// The pending mask of level `level` on CPU `cpu` (bit `v` = vector
    /// `v`); `0` for a level not below `L`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Vector};
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// RT.register_at(Level::new(1), Vector::new(4), "FAST", |_| {}).unwrap();
    /// RT.raise(Vector::new(4));
    /// assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 4);
    /// assert_eq!(RT.pending_at(0, Level::new(0)), 0);
    /// # let _ = RT.drain();
    /// ```
    pub fn pending_at(&self, cpu: usize, level: Level) -> u32 {
        match self.cpus.get(cpu).levels.get(level.index()) {
            Some(ls) => ls.pending.load(Ordering::Acquire),
            None => 0,
        }
    }

    /// How many levels of CPU `cpu` have vector `v` pending (for
    /// [`Stats::raised`]: 0 or 1, except for the tasklet vectors).
    pub(crate) fn pending_count(&self, cpu: usize, v: Vector) -> u32 {
        let st = self.cpus.get(cpu);
        st.levels
            .iter()
            .map(|ls| u32::from(ls.pending.load(Ordering::Relaxed) & v.bit() != 0))
            .sum()
    }

    /// Runs the current CPU's pending vectors of every level, highest
    /// level first, until none is left or the budget runs out.
    ///
    /// With one level (the default `L = 1`) this is
    /// [`drain_level`](Runtime::drain_level)`(Level::DEFAULT)`. With more,
    /// it drains each level in turn, from `L - 1` down to 0, each with its
    /// own budget; a level whose drain is already running on this CPU is
    /// skipped ([`DrainOutcome::Busy`]: the running drain sees its work),
    /// and so is a level a bottom-half guard covers
    /// ([`DrainOutcome::Disabled`]). If every level completed but a
    /// handler of a lower level raised work at a higher one meanwhile,
    /// the sweep starts again from the top, at most
    /// [`max_restart`](Config::max_restart) sweeps in all. The outcome is
    /// the most pressing of the levels' outcomes: `Remaining` over `Busy`
    /// over `Disabled` over `Complete`.
    ///
    /// Each pass of a level swaps its mask to zero and runs the handlers of
    /// the bits it took, lowest index first (so hi-priority tasklets
    /// first). A bit raised during a pass runs in the next pass, never in
    /// the current one and never twice for one raise. After
    /// [`max_restart`](Config::max_restart) passes in all (at least one),
    /// or once the time budget is spent, the level's drain stops, counts a
    /// budget exhaustion, kicks the backend and returns
    /// [`DrainOutcome::Remaining`]. The budget covers every pass,
    /// including one started because work arrived just as the drain
    /// released the level.
    ///
    /// A handler that panics: the panic goes on to the caller, after the
    /// drain re-pends the vectors that pass had not run yet, releases the
    /// level and kicks the backend if anything is pending (so a sleeping
    /// drain thread runs the rest); the run is counted in
    /// [`Stats::runs`] and [`Stats::panicked`]. Lower levels this call had
    /// not reached yet stay pending (they were kicked when raised).
    ///
    /// Top-half safe: no (runs handlers). Allocates: no (handlers may).
    /// Blocks: no (handlers must not either, in a softirq context).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DrainOutcome, Host, Runtime, Vector};
    ///
    /// // A handler that re-raises itself forever exhausts the budget.
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.max_restart(3));
    /// const POLL: Vector = Vector::new(5);
    /// RT.register(POLL, "POLL", |_| RT.raise(POLL)).unwrap();
    /// RT.raise(POLL);
    /// assert_eq!(RT.drain(), DrainOutcome::Remaining);
    /// assert_eq!(RT.stats().runs(0, POLL), 3); // 3 passes: the first + 2 restarts
    /// assert_eq!(RT.stats().restarts(0), 2);
    /// assert_eq!(RT.stats().budget_exhausted(0), 1);
    /// ```
    pub fn drain(&self) -> DrainOutcome {
        let (cpu, st) = self.current();
        if L == 1 {
            return self.drain_level_on(cpu, st, 0);
        }
        // Nothing raised at any level: no call, no configuration read.
        if st
            .levels
            .iter()
            .all(|ls| ls.pending.load(Ordering::Relaxed) == 0 && !ls.bh_work.timer_armed())
        {
            return DrainOutcome::Complete;
        }
        let max_sweeps = self.config.get().max_restart.max(1);
        let mut sweeps = 0u32;
        loop {
            let mut outcome = DrainOutcome::Complete;
            for lvl in (0..L).rev() {
                // The empty-mask check of `drain_level_on`, here, inline:
                // that call is not inlined, and its prologue made an empty
                // two-level drain cost 116 instructions (aarch64
                // `drain_cost`). Relaxed, as there.
                let ls = &st.levels[lvl];
                if ls.pending.load(Ordering::Relaxed) != 0 || ls.bh_work.timer_armed() {
                    outcome = outcome.worst(self.drain_level_on(cpu, st, lvl));
                }
            }
            sweeps += 1;
            // A lower level's handler may have raised at a higher level
            // after that level's turn. Sweep again for it, within the
            // restart budget. Relaxed: a hint, not a hand-off; a raise this
            // load misses came after that level's drain released it, so
            // it kicked its level (`kick_unless_draining`).
            if !outcome.is_complete()
                || !st
                    .levels
                    .iter()
                    .any(|ls| ls.pending.load(Ordering::Relaxed) != 0)
            {
                return outcome;
            }
            if sweeps >= max_sweeps {
                return DrainOutcome::Remaining;
            }
        }
    }

    /// Runs the current CPU's pending vectors of level `level` only, until
    /// none is left or the budget runs out: what the drain interrupt of
    /// that level calls (see "Levels" on [`Runtime`]). The rules of
    /// [`drain`](Runtime::drain) hold per level: one drain of a level per
    /// CPU at a time (a drain of a level already draining on this CPU —
    /// an interrupt of the same level, a handler of that level draining
    /// its own level — returns [`DrainOutcome::Busy`], and the running
    /// drain sees the new work); a drain of a higher level may run while a
    /// lower level's drain is running on this CPU (it preempts it).
    ///
    /// A level not below `L` drains nothing: it returns
    /// [`DrainOutcome::Complete`] and counts [`Misuse::LevelOutOfRange`].
    ///
    /// Top-half safe: no (runs handlers). Allocates: no (handlers may).
    /// Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DrainOutcome, Host, Level, Runtime, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// static LOG: AtomicU32 = AtomicU32::new(0);
    /// RT.register_at(Level::new(0), Vector::new(3), "LOG", |_| {
    ///     LOG.fetch_add(1, Ordering::Relaxed);
    /// })
    /// .unwrap();
    /// RT.raise(Vector::new(3));
    /// assert_eq!(RT.drain_level(Level::new(1)), DrainOutcome::Complete); // not its level
    /// assert_eq!(LOG.load(Ordering::Relaxed), 0);
    /// assert_eq!(RT.drain_level(Level::new(0)), DrainOutcome::Complete);
    /// assert_eq!(LOG.load(Ordering::Relaxed), 1);
    /// ```
    pub fn drain_level(&self, level: Level) -> DrainOutcome {
        let (cpu, st) = self.current();
        if level.index() >= L {
            st.stats.misuse(Misuse::LevelOutOfRange);
            return DrainOutcome::Complete;
        }
        self.drain_level_on(cpu, st, level.index())
    }

    /// The drain of level `lvl` (`< L`) of `cpu`, the current CPU.
    #[inline(always)]
    fn drain_level_on(&self, cpu: usize, st: &CpuState<L>, lvl: usize) -> DrainOutcome {
        let ls = &st.levels[lvl];
        // Nothing raised at this level: no RMW on its shared line. A raise
        // that this load misses is its raiser's to drain or kick for.
        // Unless a timer of this level is due: then its vector-6 pass
        // fires it, with or without the backend's hook (`work/timer.rs`).
        // Inline, in front of the call: the drain's frame is set up only
        // for work.
        if ls.pending.load(Ordering::Relaxed) == 0 && !Self::pend_due_timer(ls) {
            return DrainOutcome::Complete;
        }
        self.drain_level_work(cpu, st, lvl)
    }

    /// [`drain_level_on`](Runtime::drain_level_on) past its empty check
    /// (`irq_exit` calls it directly: it drains only what was raised).
    #[inline(never)]
    fn drain_level_work(&self, cpu: usize, st: &CpuState<L>, lvl: usize) -> DrainOutcome {
        let ls = &st.levels[lvl];
        // Bottom halves off here: leave the work to the last guard's drop.
        // SeqCst: a raiser that drains (an interrupt exit) raised, then
        // reads the count here; the drop decrements, then reads the mask
        // (a store-buffering pair): one of them sees the other, so the
        // raise is not stranded between them. (The check that keeps a
        // drain off a level whose guard was taken meanwhile is the one
        // after taking the level, in `backs_off`.)
        if ls
            .bh_disabled
            .load(ordering!("bh_drain_check_relaxed", SeqCst, Relaxed))
            != 0
        {
            return DrainOutcome::Disabled;
        }
        // A child of `fork()`: clear what a parent thread left (`crate::fork`).
        let Some(_fork) = self.fork_enter(cpu, lvl) else {
            return DrainOutcome::Busy;
        };
        // SeqCst: the store-buffering hand-off with `raise` (module docs).
        if ls
            .draining
            .swap(true, ordering!("drain_flag_relaxed", SeqCst, Relaxed))
        {
            return DrainOutcome::Busy;
        }
        if let Some(off) = self.backs_off(ls) {
            return off;
        }
        let start = B::now_ns();
        // Linux's MAX_SOFTIRQ_RESTART counts passes; the first always runs.
        let max_passes = self.config.get().max_restart.max(1);
        let mut passes = 0u32;
        loop {
            // Acquire: pairs with the SeqCst (release) `fetch_or` in `raise`.
            // SeqCst rather than AcqRel so that loom, which keeps a SeqCst
            // load from reading a stale store only when that store is SeqCst
            // too, can check the re-reads of the mask below.
            let pending = ls
                .pending
                .swap(0, ordering!("drain_swap_relaxed", SeqCst, Relaxed));
            self.run_pass(cpu, st, lvl, pending);
            passes += 1;

            if ls.pending.load(Ordering::SeqCst) != 0 {
                if passes >= max_passes || self.out_of_time(start) {
                    // A swap, not a store, here and below: the RMW reads the
                    // latest value of the flag, so the hand-off is checkable
                    // by loom, which does not order a plain store after a
                    // concurrent RMW (tokio-rs/loom#254). Same cost on every
                    // target this crate supports.
                    let _ = ls.draining.swap(false, Ordering::SeqCst);
                    return self.out_of_budget(cpu, st, lvl);
                }
            } else {
                // Release the level, then look again: a raise between the
                // check above and this release may have found it busy (and
                // not kicked) and left its work to us.
                let _ = ls
                    .draining
                    .swap(false, ordering!("drain_flag_relaxed", SeqCst, Relaxed));
                if ls
                    .pending
                    .load(ordering!("drain_flag_relaxed", SeqCst, Relaxed))
                    == 0
                {
                    return DrainOutcome::Complete;
                }
                // Taking the level back for it is a restart like any other,
                // within the same budget; out of budget, the kick hands it
                // to the drain thread (or the re-pended interrupt).
                if passes >= max_passes || self.out_of_time(start) {
                    return self.out_of_budget(cpu, st, lvl);
                }
                if ls.draining.swap(true, Ordering::SeqCst) {
                    // Another drain took the level over; it sees the work.
                    return DrainOutcome::Busy;
                }
                if let Some(off) = self.backs_off(ls) {
                    return off;
                }
            }
            st.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Called by a drain right after it set its level's `draining`: if a
    /// bottom-half guard covering the level is held on this CPU, releases
    /// the level again and returns [`DrainOutcome::Disabled`], leaving the
    /// mask pending for the guard; `None` if the drain may go on (it still
    /// holds the level).
    ///
    /// The other half of `bh_disable_to`'s handshake: the guard publishes
    /// its count and then reads `draining`; the drain publishes `draining`
    /// and then reads the count (both SeqCst, a store-buffering pair), so
    /// at least one of them sees the other: the guard waits for this drain,
    /// or this drain backs off.
    ///
    /// A raise that lands while this drain holds the flag skipped its kick
    /// (`kick_unless_draining`), and the last guard's drop may have found
    /// the level busy (its drain returned `Busy`): so after releasing the
    /// flag the drain reads the count again (SeqCst, the pair of the
    /// drop's decrement-then-read-the-mask). Zero with work pending: the
    /// last guard dropped meanwhile and may have left the work to us, so
    /// take the level again and re-check. Otherwise any raise this drain
    /// kept from kicking precedes the drop's read of the mask, and the
    /// drop runs it.
    #[inline]
    fn backs_off(&self, ls: &LevelState) -> Option<DrainOutcome> {
        loop {
            if ls
                .bh_disabled
                .load(ordering!("bh_drain_check_relaxed", SeqCst, Relaxed))
                == 0
            {
                return None;
            }
            let _ = ls.draining.swap(false, Ordering::SeqCst);
            if cfg!(bh_mutant = "bh_backoff_no_retry") {
                // A behavioural mutant: no second look (loom model (c)).
                return Some(DrainOutcome::Disabled);
            }
            // SeqCst: in C++ terms the pair of the drop's decrement then
            // read of the mask, for a raise that skipped its kick on our
            // flag; loom cannot tell it from Relaxed (README, "bh_guard").
            if ls
                .bh_disabled
                .load(ordering!("bh_backoff_relaxed", SeqCst, Relaxed))
                != 0
                || ls.pending.load(Ordering::SeqCst) == 0
            {
                return Some(DrainOutcome::Disabled);
            }
            if ls.draining.swap(true, Ordering::SeqCst) {
                return Some(DrainOutcome::Busy);
            }
        }
    }

    /// The end of a drain of level `lvl` that ran out of budget with work
    /// pending, after it released the level: count it and kick the backend
    /// for the rest.
    fn out_of_budget(&self, cpu: usize, st: &CpuState<L>, lvl: usize) -> DrainOutcome {
        st.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        B::kick(cpu, Level::from_index(lvl), &st.wake);
        DrainOutcome::Remaining
    }

    /// Marks the start of an interrupt handler on the current CPU (Linux's
    /// `irq_enter`). Pair every call with [`irq_exit`](Runtime::irq_exit).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`irq_exit`](Runtime::irq_exit).
    #[inline]
    pub fn irq_enter(&self) {
        let (_, st) = self.current();
        // Relaxed: the depth is this CPU's own; nested handlers finish
        // before the one they interrupted resumes.
        st.irq_depth.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the end of an interrupt handler (Linux's `irq_exit`): when it
    /// closes the outermost handler and work is pending on this CPU, it
    /// drains here, still in the handler, with other interrupts enabled;
    /// returns what that drain left (`None` if it did not drain).
    ///
    /// A drain already running on this CPU (this handler interrupted it)
    /// is not nested: `irq_exit` returns [`DrainOutcome::Busy`] and the
    /// running drain sees the new work.
    ///
    /// With several levels it drains the pending levels highest first and
    /// stops at the first level whose drain is running on this CPU: the
    /// interrupted context, which goes on with the levels below it (or
    /// their drain interrupts, pended when their work was raised). So a
    /// level above the interrupted one runs here, preempting it, and no
    /// level at or below it does. The outcome is the most pressing of the
    /// levels' (see [`drain`](Runtime::drain)).
    ///
    /// Top-half safe: yes, at the very end of a top half: it runs bottom
    /// halves only when closing the outermost handler. Allocates: no
    /// (handlers may). Blocks: no.
    ///
    /// Never panics (a drain it runs passes on a handler's panic). Without
    /// a matching [`irq_enter`](Runtime::irq_enter) it does nothing,
    /// returns `None` and counts [`Misuse::UnbalancedIrqExit`]: the depth
    /// stays at zero, so later pairs still match.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{BareMetal, Board, Config, Runtime, Tasklet};
    /// use core::sync::atomic::{AtomicU32, Ordering};
    ///
    /// struct OneCore;
    /// impl Board for OneCore {}
    /// static RT: Runtime<BareMetal<OneCore>, 1> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static BH: Tasklet = Tasklet::new(&RT, || { RUNS.fetch_add(1, Ordering::Relaxed); });
    ///
    /// fn low_priority_irq() {
    ///     RT.irq_enter();
    ///     BH.schedule();
    ///     high_priority_irq(); // on hardware: preempts here
    ///     assert_eq!(RUNS.load(Ordering::Relaxed), 0); // not drained while nested
    ///     RT.irq_exit(); // outermost exit: drains
    /// }
    /// fn high_priority_irq() {
    ///     RT.irq_enter();
    ///     BH.schedule(); // coalesced
    ///     assert_eq!(RT.irq_exit(), None);
    /// }
    ///
    /// low_priority_irq();
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// ```
    #[inline]
    pub fn irq_exit(&self) -> Option<DrainOutcome> {
        let (cpu, st) = self.current();
        // A CAS rather than `fetch_sub`, so an unbalanced exit never leaves
        // the depth wrapped, not even for a moment a nested handler could
        // see. Relaxed: as in `irq_enter`.
        let mut depth = st.irq_depth.load(Ordering::Relaxed);
        loop {
            if depth == 0 {
                st.stats.misuse(Misuse::UnbalancedIrqExit);
                return None;
            }
            match st.irq_depth.compare_exchange_weak(
                depth,
                depth - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => depth = now,
            }
        }
        if depth != 1 {
            return None;
        }
        if L == 1 {
            return if st.levels[0].pending.load(Ordering::Relaxed) != 0 {
                Some(self.drain_level_work(cpu, st, 0))
            } else {
                None
            };
        }
        // Highest level first, down to the first level whose drain is
        // running here: the context this handler interrupted. Levels below
        // it stay pending for that context (a sweep goes on downward when
        // its level is done; a level's drain interrupt was pended when the
        // work was raised), so no lower level runs inside a higher one.
        let mut outcome = None;
        for lvl in (0..L).rev() {
            let ls = &st.levels[lvl];
            if ls.draining.load(Ordering::Relaxed) {
                return Some(DrainOutcome::Busy.worst_of(outcome));
            }
            if ls.pending.load(Ordering::Relaxed) != 0 {
                let o = self.drain_level_work(cpu, st, lvl);
                outcome = Some(o.worst_of(outcome));
                if o == DrainOutcome::Busy {
                    return outcome;
                }
            }
        }
        outcome
    }

    /// Turns bottom halves off on the current CPU until the returned guard
    /// is dropped (Linux's `local_bh_disable` / `local_bh_enable`).
    ///
    /// It covers every level (see "Levels" on [`Runtime`];
    /// [`bh_disable_to`](Runtime::bh_disable_to) covers only the lower
    /// ones). While a guard is held on a CPU, no drain runs there:
    /// [`drain`](Runtime::drain) returns [`DrainOutcome::Disabled`],
    /// [`irq_exit`](Runtime::irq_exit) returns `Some(Disabled)` without
    /// running anything, and the CPU's drain thread goes back to sleep.
    /// Raises, tasklet schedules and pushes still work; what they raise
    /// stays pending. Thread-context code can then touch data it shares
    /// with this CPU's bottom halves without a lock.
    ///
    /// Guards nest (a counter per CPU, at most [`BH_DISABLE_MAX`] deep).
    /// When the **last** guard of the CPU drops and work is pending, the
    /// drop runs it, as `local_bh_enable` does:
    ///
    /// - on a backend whose guards are dropped in thread context
    ///   ([`Backend::DRAIN_ON_BH_ENABLE`]: `Host`, `Signals`, the default),
    ///   the drop drains inline, in the dropping thread;
    /// - on [`BareMetal`](crate::BareMetal) it pends the drain interrupt
    ///   ([`Board::pend_drain`](crate::Board::pend_drain), through
    ///   [`Backend::kick`]) instead: thread mode drops the guard, and the
    ///   drain runs at the drain interrupt's priority, as usual. A board
    ///   that drains only at interrupt exit runs the work at the next one
    ///   (or call [`drain`](Runtime::drain) after the drop).
    ///
    /// # Which contexts may take it
    ///
    /// **Thread context only**: a task, the main loop, a thread bound to
    /// the CPU. Not in a top half (interrupt or signal handler), and not
    /// in a bottom half of the same CPU: a drain of another context may be
    /// running on this CPU when the guard is taken (on `Host`, several
    /// threads can be bound to one CPU index), and `bh_disable` then waits
    /// until that drain has returned, so that the promise holds from the
    /// moment it returns. Called from a handler that the running drain
    /// itself called, or from an interrupt that preempted the drain, that
    /// wait never ends. (A bottom half does not need the guard: the drain
    /// of a CPU is exclusive, so its handlers never run nested in one
    /// another.) Linux has the same rule for `local_bh_enable` in hardirq
    /// context.
    ///
    /// On bare metal the typical use is thread mode (`main`) guarding data
    /// it shares with the bottom halves that run in the drain interrupt
    /// (PendSV). The guard keeps the drain off even if the interrupt fires:
    /// the pended drain returns `Disabled` and the drop pends it again.
    /// (Masking the drain interrupt by priority, `BASEPRI`, does the same
    /// on one core at no cost per drain; the guard works also where the
    /// drain runs at interrupt exit and on every core's own state.)
    ///
    /// The guard belongs to the CPU and thread that took it: it is not
    /// `Send`. On the `Signals` backend, whose CPU is the one the thread
    /// runs on, pin the thread first: a thread that migrates protects the
    /// CPU it took the guard on, not the one it runs on.
    ///
    /// Top-half safe: no (it may wait for a running drain). Allocates:
    /// no. Blocks: yes, while a drain runs on this CPU in another context
    /// (it spins, yielding the thread under `std`); not otherwise.
    ///
    /// Never panics. Beyond [`BH_DISABLE_MAX`] nested guards the count
    /// saturates: the extra guard counts [`Misuse::BhDisableOverflow`] and
    /// does nothing (bottom halves stay off: the outer guards hold them).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DrainOutcome, Host, Runtime, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// const RX: Vector = Vector::new(3);
    /// RT.register(RX, "RX", |_| { RUNS.fetch_add(1, Ordering::Relaxed); }).unwrap();
    ///
    /// let outer = RT.bh_disable();
    /// RT.raise(RX);
    /// {
    ///     let _inner = RT.bh_disable(); // nests
    ///     assert_eq!(RT.drain(), DrainOutcome::Disabled);
    /// }
    /// assert_eq!(RT.drain(), DrainOutcome::Disabled); // `outer` still held
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 0);
    /// drop(outer); // the last guard: the drop drains here
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// assert_eq!(RT.pending(0), 0);
    /// ```
    #[doc(alias = "local_bh_disable")]
    pub fn bh_disable(&self) -> BhGuard<'_, B, N, L> {
        self.bh_disable_covering(L - 1)
    }

    /// Turns bottom halves of levels `0..=level` off on the current CPU
    /// until the returned guard is dropped; higher levels still run. The
    /// rules of [`bh_disable`](Runtime::bh_disable) hold for the covered
    /// levels (it is `bh_disable_to(Level::new(L - 1))`): thread context
    /// only, nestable, and the last guard covering a level runs (or
    /// pends) that level's work when it drops, highest level first.
    ///
    /// Thread-mode code that shares data only with the bulk bottom halves
    /// of level 0 takes `bh_disable_to(Level::LOWEST)`, and an urgent
    /// level keeps running meanwhile.
    ///
    /// Top-half safe: no (it may wait for a running drain of a covered
    /// level). Allocates: no. Blocks: yes, while a drain of a covered
    /// level runs on this CPU in another context; not otherwise.
    ///
    /// Never panics. A level not below `L` covers every level and counts
    /// [`Misuse::LevelOutOfRange`]; beyond [`BH_DISABLE_MAX`] nested
    /// guards, as [`bh_disable`](Runtime::bh_disable).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, DrainOutcome, Host, Level, Runtime, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// static LOG: AtomicU32 = AtomicU32::new(0);
    /// static MOTOR: AtomicU32 = AtomicU32::new(0);
    /// RT.register_at(Level::new(0), Vector::new(3), "LOG", |_| {
    ///     LOG.fetch_add(1, Ordering::Relaxed);
    /// })
    /// .unwrap();
    /// RT.register_at(Level::new(1), Vector::new(4), "MOTOR", |_| {
    ///     MOTOR.fetch_add(1, Ordering::Relaxed);
    /// })
    /// .unwrap();
    ///
    /// let guard = RT.bh_disable_to(Level::LOWEST);
    /// RT.raise(Vector::new(3));
    /// RT.raise(Vector::new(4));
    /// assert_eq!(RT.drain(), DrainOutcome::Disabled); // level 1 ran, level 0 is off
    /// assert_eq!((LOG.load(Ordering::Relaxed), MOTOR.load(Ordering::Relaxed)), (0, 1));
    /// drop(guard); // runs level 0's work
    /// assert_eq!(LOG.load(Ordering::Relaxed), 1);
    /// ```
    pub fn bh_disable_to(&self, level: Level) -> BhGuard<'_, B, N, L> {
        if level.index() >= L {
            self.current().1.stats.misuse(Misuse::LevelOutOfRange);
            return self.bh_disable_covering(L - 1);
        }
        self.bh_disable_covering(level.index())
    }

    /// A guard over levels `0..=top` (`top < L`) of the current CPU.
    fn bh_disable_covering(&self, top: usize) -> BhGuard<'_, B, N, L> {
        let (cpu, st) = self.current();
        // Level 0's count is the largest (every guard covers level 0), so
        // it alone bounds the nesting.
        let base = &st.levels[0].bh_disabled;
        let mut n = base.load(Ordering::Relaxed);
        loop {
            if n >= BH_DISABLE_MAX {
                st.stats.misuse(Misuse::BhDisableOverflow);
                return BhGuard {
                    rt: self,
                    cpu: NOT_COUNTED,
                    top: top as u8,
                    _not_send: PhantomData,
                };
            }
            // SeqCst: the store-buffering pair with the drain's `draining`
            // swap and its count check (`backs_off`): publish the count,
            // then read the flag.
            match base.compare_exchange_weak(
                n,
                n + 1,
                ordering!("bh_disable_relaxed", SeqCst, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        for ls in &st.levels[1..=top] {
            // SeqCst: as above, the same pair per level (its own mutant,
            // `bh_disable_level_relaxed`, with the wait on these levels).
            ls.bh_disabled
                .fetch_add(1, ordering!("bh_disable_level_relaxed", SeqCst, Relaxed));
        }
        // A drain that took a covered level before our count was published
        // runs to its end; one that takes it afterwards sees the count and
        // backs off. In a child of `fork()` the flag may be a parent
        // thread's, for a drain that does not exist here: do not wait on it
        // (a drain of this process repairs the flag and then sees the
        // count).
        for (lvl, ls) in st.levels[..=top].iter().enumerate() {
            // Two mutant names for one ordering: identical arms normally.
            #[allow(clippy::if_same_then_else)]
            let order = if lvl == 0 {
                ordering!("bh_disable_relaxed", SeqCst, Relaxed)
            } else {
                ordering!("bh_disable_level_relaxed", SeqCst, Relaxed)
            };
            while ls.draining.load(order) && !ls.fork.stale() {
                crate::sync::spin_wait();
            }
        }
        BhGuard {
            rt: self,
            cpu,
            top: top as u8,
            _not_send: PhantomData,
        }
    }

    /// The end of a bottom-half guard over levels `0..=top` of `cpu`,
    /// highest level first: the last guard covering a level runs or pends
    /// what was raised at it meanwhile (lower levels are still covered
    /// while a higher one drains here).
    fn bh_enable(&self, cpu: usize, top: usize) {
        let st = self.cpus.get(cpu);
        for lvl in (0..=top.min(L - 1)).rev() {
            let ls = &st.levels[lvl];
            // SeqCst: decrement, then read the mask; pairs with `backs_off`
            // (a drain that backed off re-reads the count after releasing
            // the level) and with `raise` (mask, then flag).
            let before = ls
                .bh_disabled
                .fetch_sub(1, ordering!("bh_enable_relaxed", SeqCst, Relaxed));
            if before != 1
                || ls
                    .pending
                    .load(ordering!("bh_enable_relaxed", SeqCst, Relaxed))
                    == 0
            {
                continue;
            }
            if B::DRAIN_ON_BH_ENABLE && self.current().0 == cpu {
                // What this drain leaves it hands on itself (Remaining
                // kicks; Busy: the running drain sees it).
                let _ = self.drain_level_on(cpu, st, lvl);
            } else {
                B::kick(cpu, Level::from_index(lvl), &st.wake);
            }
        }
    }

    /// Raises vector 6 at level `ls` if a timer deadline is armed there
    /// and has passed (`true`): every drain of a level asks before it
    /// gives up on an empty mask, so due timers fire at the first drain at
    /// or after their deadline, with or without the backend's hook
    /// (`work/timer.rs`). One more load and a branch while no timer is
    /// armed; the rest is out of line. No kick: the calling drain takes
    /// the level next, or the drain that holds it sees the bit when it
    /// releases it.
    #[inline(always)]
    fn pend_due_timer(ls: &LevelState) -> bool {
        #[cold]
        #[inline(never)]
        fn armed<B: Backend>(ls: &LevelState) -> bool {
            let due = ls.bh_work.timer_due(B::now_ns);
            if due {
                ls.pending.fetch_or(Vector::TASKLET.bit(), Ordering::SeqCst);
            }
            due
        }
        ls.bh_work.timer_armed() && armed::<B>(ls)
    }

    fn out_of_time(&self, start: u64) -> bool {
        let budget = self.config.get().time_budget_ns;
        budget != 0 && B::now_ns().wrapping_sub(start) >= budget
    }

    /// Runs the handlers of `pending` (taken from level `lvl`), lowest bit
    /// first.
    fn run_pass(&self, cpu: usize, st: &CpuState<L>, lvl: usize, pending: u32) {
        let ls = &st.levels[lvl];
        let mut bits = pending;
        while bits != 0 {
            let v = Vector(bits.trailing_zeros() as u8);
            bits &= bits - 1;
            let counters = st.stats.vector(v);
            // The backend's constant table first: `Self::HAS_TABLE` is a
            // constant, so without a table this is no code at all, and
            // with one a load from flash and one branch.
            let handler = match v {
                Vector::HI_TASKLET => None,
                Vector::TASKLET => None,
                _ => match Self::table_entry(v) {
                    Some(cb) => Some(cb),
                    None => match self.vectors[v.index()].get() {
                        Some((_, cb)) => Some(cb),
                        None => {
                            counters.unhandled.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    },
                },
            };
            // If the handler panics, the panic goes on to the caller of
            // `drain`, but the CPU must stay usable and its work must not
            // be stranded: count the run, re-pend the vectors this pass has
            // not run (and a tasklet vector, whose list put its untouched
            // tasklets back), release the CPU, and kick if anything is
            // pending, since raises during this drain skipped their kick
            // and the drain thread may be asleep.
            let relist = if handler.is_none() { v.bit() } else { 0 };
            let guard = OnUnwind(|| {
                counters.runs.fetch_add(1, Ordering::Relaxed);
                counters.panicked.fetch_add(1, Ordering::Relaxed);
                ls.pending.fetch_or(bits | relist, Ordering::SeqCst);
                let _ = ls.draining.swap(false, Ordering::SeqCst);
                if ls.pending.load(Ordering::SeqCst) != 0 {
                    B::kick(cpu, Level::from_index(lvl), &st.wake);
                }
            });
            let t0 = B::now_ns();
            match handler {
                Some(cb) => cb.call(cpu),
                None if v == Vector::HI_TASKLET => self.run_tasklets(cpu, lvl, ls, Priority::Hi),
                None => self.run_tasklets(cpu, lvl, ls, Priority::Normal),
            }
            core::mem::forget(guard);
            let took = B::now_ns().wrapping_sub(t0);
            counters.runs.fetch_add(1, Ordering::Relaxed);
            // Only this CPU's drain writes the maximum; the RMW is needed
            // only when it grows (on cores without CAS every RMW masks).
            let took = took.min(u32::MAX as u64) as u32;
            if took > counters.max_ns.load(Ordering::Relaxed) {
                counters.max_ns.fetch_max(took, Ordering::Relaxed);
            }
        }
    }

    /// The backend's table has entries (a constant per backend type).
    const HAS_TABLE: bool = !B::HANDLERS.is_empty();

    #[inline(always)]
    fn table_entry(v: Vector) -> Option<Callback> {
        if !Self::HAS_TABLE {
            return None;
        }
        B::HANDLERS.get(v).map(|(_, cb)| cb)
    }

    fn run_tasklets(&self, cpu: usize, lvl: usize, ls: &LevelState, prio: Priority) {
        let list = &ls.tasklets[prio as usize];
        let mut again = list.run(|t| self.requeue(cpu, t));
        // Work items after the normal tasklets, as Linux runs its BH
        // workqueues from the tasklet softirq.
        if prio == Priority::Normal {
            again |= ls.bh_work.run();
        }
        if again {
            self.pend_in_drain(cpu, lvl, prio.vector());
        }
    }

    /// A tasklet that another CPU's drain handed off to this one while it
    /// ran here (transition 7 of [`Tasklet`]) goes back on this CPU's list
    /// of its level for the next pass.
    fn requeue(&self, cpu: usize, t: &'static Tasklet) {
        let lvl = Self::tasklet_level(t);
        self.cpus.get(cpu).levels[lvl].tasklets[t.priority() as usize].push(t);
    }

    /// The level index a bottom-half work item runs at here: its
    /// [`at_level`](crate::Work::at_level), or `L - 1` if that is not below
    /// `L` (counted on CPU state `st` as [`Misuse::LevelOutOfRange`]).
    #[inline(always)]
    pub(crate) fn work_level(&self, st: &CpuState<L>, w: &crate::Work) -> usize {
        if L == 1 {
            return 0;
        }
        let lvl = w.level().index();
        if lvl >= L {
            st.stats.misuse(Misuse::LevelOutOfRange);
            return L - 1;
        }
        lvl
    }

    /// The level index a tasklet runs at here: its
    /// [`at_level`](Tasklet::at_level), or `L - 1` if that is not below
    /// `L` (counted as [`Misuse::LevelOutOfRange`] at `schedule`).
    #[inline(always)]
    fn tasklet_level(t: &Tasklet) -> usize {
        if L == 1 {
            return 0;
        }
        t.level().index().min(L - 1)
    }

    /// Statistics of every CPU and vector; `Display` prints them as a
    /// table.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// RT.register(Vector::new(3), "NET_RX", |_| {}).unwrap();
    /// RT.raise(Vector::new(3));
    /// let _ = RT.drain();
    /// // Columns run up to the highest CPU that saw any activity.
    /// assert!(!RT.stats().to_string().contains("CPU1"));
    /// std::thread::spawn(|| {
    ///     let _cpu1 = RT.bind_current_thread(1).unwrap();
    ///     RT.raise(Vector::new(3));
    ///     let _ = RT.drain();
    /// })
    /// .join()
    /// .unwrap();
    /// let table = RT.stats().to_string();
    /// assert!(table.contains("NET_RX"));
    /// assert!(table.contains("CPU1"));
    /// ```
    pub fn stats(&self) -> Stats<'_, B, N, L> {
        Stats::new(self)
    }

    pub(crate) fn cpu_state(&self, cpu: usize) -> &CpuState<L> {
        self.cpus.get(cpu)
    }
}

impl<B: Backend, const N: usize, const L: usize> TaskletRuntime for Runtime<B, N, L> {
    fn count_misuse(&self, m: Misuse) {
        self.current().1.stats.misuse(m);
    }

    fn enqueue(&self, t: &'static Tasklet, linked: &Cell<bool>) {
        let (cpu, st) = self.current();
        if L > 1 && t.level().index() >= L {
            st.stats.misuse(Misuse::LevelOutOfRange);
        }
        let lvl = Self::tasklet_level(t);
        let ls = &st.levels[lvl];
        let bit = t.priority().vector().bit();
        ls.tasklets[t.priority() as usize].push(t);
        linked.set(true);
        // Skip the raise when the list's bit is already pending. If our push
        // landed before the take of the drain pass that clears the bit, that
        // take gets our tasklet. If it landed after, our push CAS read from
        // that take's swap (or from a later push, still in its release
        // sequence) and acquired it; the pass cleared the bit before its
        // take, so this load cannot see the bit that pass cleared, and we
        // raise. Either way the tasklet is covered, and by coherence a plain
        // load suffices. (Skipping on "list non-empty" instead would make
        // us wait for whoever made it non-empty to reach its own raise,
        // which a preempted context may not do for a while.) Tasklet
        // coalescing is counted per tasklet, so no vector coalescing count.
        if ls.pending.load(Ordering::Relaxed) & bit != 0 {
            return;
        }
        // SeqCst: as in `raise`.
        let old = ls
            .pending
            .fetch_or(bit, ordering!("raise_relaxed", SeqCst, Relaxed));
        if old == 0 {
            self.kick_unless_draining(cpu, st, lvl);
        }
    }
}

impl<B: Backend, const N: usize, const L: usize> fmt::Debug for Runtime<B, N, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("cpus", &N)
            .field("levels", &L)
            .field("config", &self.config.get())
            .finish_non_exhaustive()
    }
}

// SAFETY: every field is shared through atomics or through `VectorSlot`'s
// cells, whose writes are published by the READY state (see `VectorSlot`),
// or never written after construction (`config`). A slot's context pointer
// is a `&'static C` with `C: Sync` (`Callback`). `B` is only a type-level
// choice of functions (PhantomData<fn() -> B>).
unsafe impl<B: Backend, const N: usize, const L: usize> Sync for Runtime<B, N, L> {}

#[cfg(all(test, not(bottomhalf_loom), feature = "std"))]
mod tests {
    use super::*;
    use crate::Host;
    use core::sync::atomic::{AtomicU32, AtomicUsize};
    use std::vec::Vec;

    #[test]
    fn a_drain_nested_in_a_handler_is_busy_and_the_outer_drain_runs_its_work() {
        // No time budget: under miri two passes can take longer than 2 ms,
        // and this test is about the pass structure, not the clock.
        static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
        static INNER: AtomicU32 = AtomicU32::new(9);
        static RUNS_B: AtomicU32 = AtomicU32::new(0);
        const A: Vector = Vector::new(2);
        const B: Vector = Vector::new(3);
        // A handler that, like an interrupt arriving during the drain,
        // raises and then tries to drain at its "exit".
        RT.register(A, "A", |_| {
            RT.raise(B);
            let outcome = RT.drain();
            INNER.store(outcome as u32, Ordering::Relaxed);
        })
        .unwrap();
        RT.register(B, "B", |_| {
            RUNS_B.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        RT.raise(A);
        assert_eq!(RT.drain(), DrainOutcome::Complete);
        assert_eq!(INNER.load(Ordering::Relaxed), DrainOutcome::Busy as u32);
        // B was raised during the pass that ran A: it ran in the next pass.
        assert_eq!(RUNS_B.load(Ordering::Relaxed), 1);
        assert_eq!(RT.stats().restarts(0), 1);
        assert_eq!(RT.pending(0), 0);
    }

    #[test]
    fn vectors_run_lowest_index_first_within_a_pass() {
        static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        static ORDER: AtomicUsize = AtomicUsize::new(0);
        static SEEN: [AtomicUsize; MAX_VECTORS] = [const { AtomicUsize::new(0) }; MAX_VECTORS];
        fn record(v: usize) {
            SEEN[v].store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        RT.register(Vector::new(31), "V31", |_| record(31)).unwrap();
        RT.register(Vector::new(5), "V5", |_| record(5)).unwrap();
        RT.register(Vector::new(1), "V1", |_| record(1)).unwrap();
        for v in [31, 1, 5] {
            RT.raise(Vector::new(v));
        }
        assert!(RT.drain().is_complete());
        let order: Vec<usize> = [1, 5, 31]
            .iter()
            .map(|&v| SEEN[v].load(Ordering::Relaxed))
            .collect();
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_time_budget_stops_the_restarts() {
        // Restart budget large, time budget 1 ms: a handler that re-raises
        // itself and sleeps 300 µs stops after the time is spent.
        static RT: Runtime<Host, 1> =
            Runtime::new(Config::DEFAULT.max_restart(1_000).time_budget_ns(1_000_000));
        const V: Vector = Vector::new(4);
        RT.register(V, "SPIN", |_| {
            RT.raise(V);
            std::thread::sleep(core::time::Duration::from_micros(300));
        })
        .unwrap();
        RT.raise(V);
        assert_eq!(RT.drain(), DrainOutcome::Remaining);
        // Stopped by time, long before the 1 + 1000 passes the restart
        // budget allows (how many passes fit depends on the machine's
        // sleep granularity, so no tighter bound).
        let runs = RT.stats().runs(0, V);
        assert!((1..=100).contains(&runs), "{runs} runs in a 1 ms budget");
        assert_eq!(RT.stats().budget_exhausted(0), 1);
        assert_eq!(RT.pending(0), V.bit());
    }
}
