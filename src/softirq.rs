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
//! - One drain per CPU at a time: a drain that finds another one running on
//!   its CPU (a nested interrupt exit, a second thread bound to the same
//!   CPU) returns [`DrainOutcome::Busy`]; the running drain will see the
//!   work.
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

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use crate::backend::Backend;
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
        }
    }

    const fn insert(mut self, v: Vector, name: &'static str, cb: Callback) -> Handlers {
        if v.is_tasklet_vector() {
            panic!("Handlers: vectors 0 and 6 drain tasklets and take no handler");
        }
        if self.owned & v.bit() != 0 {
            panic!("Handlers: the table has two handlers for one vector");
        }
        self.entries[v.index()] = Some((name, cb));
        self.owned |= v.bit();
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
        self.insert(v, name, Callback::plain(handler))
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
        self.insert(v, name, Callback::with_context(ctx, handler))
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
    /// runs it (or pends the drain).
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
pub struct BhGuard<'a, B: Backend, const N: usize> {
    rt: &'a Runtime<B, N>,
    /// The CPU whose count this guard holds, or [`NOT_COUNTED`].
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

impl<B: Backend, const N: usize> BhGuard<'_, B, N> {
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

impl<B: Backend, const N: usize> Drop for BhGuard<'_, B, N> {
    fn drop(&mut self) {
        if self.cpu != NOT_COUNTED {
            self.rt.bh_enable(self.cpu);
        }
    }
}

impl<B: Backend, const N: usize> fmt::Debug for BhGuard<'_, B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BhGuard")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// Registration state of a vector slot.
const SLOT_EMPTY: u8 = 0;
const SLOT_WRITING: u8 = 1;
const SLOT_READY: u8 = 2;

/// One vector's run-time registered handler.
///
/// `state` goes EMPTY → WRITING (the one `register` that wins the CAS) →
/// READY (Release, after `name` and `callback` are written). Nothing else
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

/// Per-CPU softirq state.
pub(crate) struct CpuState {
    /// Bit `v`: vector `v` was raised on this CPU and no drain has taken it
    /// yet. Set by `raise` (any context on this CPU); cleared only by the
    /// drain's `swap(0)`.
    pending: AtomicU32,
    /// A drain of this CPU is running. Set by the drain that wins the swap;
    /// cleared by the same drain when it ends.
    pub(crate) draining: AtomicBool,
    /// The word this CPU's drain thread sleeps on; the backend's `kick`
    /// notifies it.
    pub(crate) wake: WakeWord,
    /// Nested [`Runtime::bh_disable`] guards held on this CPU; no drain
    /// runs here while it is non-zero. Changed with SeqCst RMWs by the
    /// guards; read SeqCst by a drain after it set `draining` (the
    /// store-buffering pair with `draining`, see `bh_disable`).
    bh_disabled: AtomicU32,
    /// Interrupt handlers between `irq_enter` and `irq_exit` on this CPU.
    /// Only the CPU's own handlers touch it, nested, so each `fetch_add` is
    /// matched by a `fetch_sub` before the handler it interrupted resumes.
    irq_depth: AtomicU32,
    /// The tasklet lists, indexed by [`Priority`].
    pub(crate) tasklets: [TaskletList; 2],
    /// Bottom-half work items, run by vector 6 after the normal tasklets
    /// (`crate::work::bh`).
    pub(crate) bh_work: crate::work::BhQueue,
    /// Counters, see [`Stats`].
    pub(crate) stats: CpuStats,
    /// `fork()` repair stamps (`crate::fork`).
    pub(crate) fork: crate::fork::CpuFork,
}

impl CpuState {
    loom_const_fn! {
        fn new() -> CpuState {
            CpuState {
                pending: AtomicU32::new(0),
                draining: AtomicBool::new(false),
                wake: WakeWord::new(),
                bh_disabled: AtomicU32::new(0),
                irq_depth: AtomicU32::new(0),
                tasklets: [TaskletList::new(), TaskletList::new()],
                bh_work: crate::work::BhQueue::new(),
                stats: CpuStats::new(),
                fork: crate::fork::CpuFork::new(),
            }
        }
    }
}

/// A softirq runtime: `N` CPUs, 32 vectors, two tasklet lists per CPU.
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
pub struct Runtime<B: Backend, const N: usize> {
    cpus: PerCpu<CpuState, N>,
    vectors: [VectorSlot; MAX_VECTORS],
    config: StoredConfig,
    _backend: PhantomData<fn() -> B>,
}

impl<B: Backend, const N: usize> Runtime<B, N> {
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
        pub fn new(config: Config) -> Runtime<B, N> {
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
    pub(crate) fn current_state(&self) -> (usize, &CpuState) {
        self.current()
    }

    /// CPU `cpu`'s state, `None` if `cpu >= N`.
    #[inline]
    pub(crate) fn try_cpu_state(&self, cpu: usize) -> Option<&CpuState> {
        self.cpus.try_get(cpu).ok()
    }

    /// Sets `v` pending on `cpu` (state `st`) and kicks it unless it
    /// drains: a raise on that CPU, from any CPU (`queue_work_on`).
    #[inline]
    pub(crate) fn raise_on(&self, cpu: usize, st: &CpuState, v: Vector) {
        // SeqCst: as in `raise`.
        let old = st
            .pending
            .fetch_or(v.bit(), ordering!("raise_relaxed", SeqCst, Relaxed));
        if old == 0 {
            self.kick_unless_draining(cpu, st);
        }
    }

    #[inline(always)]
    fn current(&self) -> (usize, &CpuState) {
        let cpu = B::current_cpu();
        match self.cpus.try_get(cpu) {
            Ok(st) => (cpu, st),
            Err(_) => self.fold_cpu(cpu),
        }
    }

    #[cold]
    #[inline(never)]
    fn fold_cpu(&self, cpu: usize) -> (usize, &CpuState) {
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
        self.register_callback(v, name, Callback::plain(handler))
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
        self.register_callback(v, name, Callback::with_context(ctx, handler))
    }

    fn register_callback(
        &self,
        v: Vector,
        name: &'static str,
        callback: Callback,
    ) -> Result<(), RegisterError> {
        if v.is_tasklet_vector() {
            return Err(RegisterError::Reserved(v));
        }
        if B::HANDLERS.contains(v) {
            return Err(RegisterError::InTable(v));
        }
        let slot = &self.vectors[v.index()];
        // Acquire/Relaxed: the winner is the only writer of the cells below;
        // readers synchronise through the Release store of READY.
        if slot
            .state
            .compare_exchange(
                SLOT_EMPTY,
                SLOT_WRITING,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
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
            SLOT_READY,
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

    /// Marks vector `v` pending on the current CPU.
    ///
    /// One atomic `fetch_or` on the CPU's pending mask; if the bit was
    /// already set, one more `fetch_add` counts the coalesced raise. If the
    /// mask was empty and no drain is running on the CPU, the backend is
    /// kicked ([`Backend::kick`]). Raising a
    /// vector without a handler is counted at the drain
    /// ([`Stats::unhandled`]) and otherwise ignored.
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
        let bit = v.bit();
        // SeqCst: its release half pairs with the drain's Acquire `swap`
        // (data written before `raise` is visible to the handler); its
        // sequential consistency pairs with the `draining` hand-off in
        // `drain` (module docs, "Atomic orderings").
        let old = st
            .pending
            .fetch_or(bit, ordering!("raise_relaxed", SeqCst, Relaxed));
        if old & bit != 0 {
            st.stats.vector(v).coalesced.fetch_add(1, Ordering::Relaxed);
        } else if old == 0 {
            self.kick_unless_draining(cpu, st);
        }
    }

    /// Kicks the backend for `cpu`, unless a drain is running there: that
    /// drain re-reads the mask after clearing `draining` (SeqCst on both
    /// sides, see `drain`), so it runs the new work itself and a kick would
    /// only make a spurious drain (an empty PendSV, a needless futex wake).
    /// In a child of `fork()` the flag may be a parent thread's, for a
    /// drain that does not exist there: with the flag set, a CPU whose
    /// fork stamp is not this generation's is kicked anyway
    /// (`crate::fork`; one more load, only when the flag is set).
    #[inline]
    fn kick_unless_draining(&self, cpu: usize, st: &CpuState) {
        if !st
            .draining
            .load(ordering!("kick_check_relaxed", SeqCst, Relaxed))
            || st.fork.stale()
        {
            B::kick(cpu, &st.wake);
        }
    }

    /// Marks `v` pending on `cpu` from inside that CPU's drain, without a
    /// kick: the drain's restart loop sees it.
    pub(crate) fn pend_in_drain(&self, cpu: usize, v: Vector) {
        self.cpus
            .get(cpu)
            .pending
            .fetch_or(v.bit(), Ordering::SeqCst);
    }

    /// The pending mask of CPU `cpu` (bit `v` = vector `v`).
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
        self.cpus.get(cpu).pending.load(Ordering::Acquire)
    }

    /// Runs the current CPU's pending vectors until none is left or the
    /// budget runs out.
    ///
    /// Each pass swaps the mask to zero and runs the handlers of the bits
    /// it took, lowest index first (so hi-priority tasklets first). A bit
    /// raised during a pass runs in the next pass, never in the current one
    /// and never twice for one raise. After
    /// [`max_restart`](Config::max_restart) passes in all (at least one),
    /// or once the time budget is spent, the drain stops, counts a budget
    /// exhaustion, kicks the backend and returns
    /// [`DrainOutcome::Remaining`]. The budget covers every pass,
    /// including one started because work arrived just as the drain
    /// released the CPU.
    ///
    /// A handler that panics: the panic goes on to the caller, after the
    /// drain re-pends the vectors that pass had not run yet, releases the
    /// CPU and kicks the backend if anything is pending (so a sleeping
    /// drain thread runs the rest); the run is counted in
    /// [`Stats::runs`] and [`Stats::panicked`].
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
        // Nothing raised on this CPU: no RMW on its shared line. A raise
        // that this load misses is its raiser's to drain or kick for.
        if st.pending.load(Ordering::Relaxed) == 0 {
            return DrainOutcome::Complete;
        }
        // Bottom halves off here: leave the work to the last guard's drop.
        // SeqCst: a raiser that drains (an interrupt exit) raised, then
        // reads the count here; the drop decrements, then reads the mask
        // (a store-buffering pair): one of them sees the other, so the
        // raise is not stranded between them. (The check that keeps a
        // drain off a CPU whose guard was taken meanwhile is the one after
        // taking the CPU, in `backs_off`.)
        if st
            .bh_disabled
            .load(ordering!("bh_drain_check_relaxed", SeqCst, Relaxed))
            != 0
        {
            return DrainOutcome::Disabled;
        }
        // A child of `fork()`: clear what a parent thread left (`crate::fork`).
        let Some(_fork) = self.fork_enter(cpu) else {
            return DrainOutcome::Busy;
        };
        // SeqCst: the store-buffering hand-off with `raise` (module docs).
        if st
            .draining
            .swap(true, ordering!("drain_flag_relaxed", SeqCst, Relaxed))
        {
            return DrainOutcome::Busy;
        }
        if let Some(off) = self.backs_off(st) {
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
            let pending = st
                .pending
                .swap(0, ordering!("drain_swap_relaxed", SeqCst, Relaxed));
            self.run_pass(cpu, st, pending);
            passes += 1;

            if st.pending.load(Ordering::SeqCst) != 0 {
                if passes >= max_passes || self.out_of_time(start) {
                    // A swap, not a store, here and below: the RMW reads the
                    // latest value of the flag, so the hand-off is checkable
                    // by loom, which does not order a plain store after a
                    // concurrent RMW (tokio-rs/loom#254). Same cost on every
                    // target this crate supports.
                    let _ = st.draining.swap(false, Ordering::SeqCst);
                    return self.out_of_budget(cpu, st);
                }
            } else {
                // Release the CPU, then look again: a raise between the
                // check above and this release may have found the CPU busy
                // (and not kicked) and left its work to us.
                let _ = st
                    .draining
                    .swap(false, ordering!("drain_flag_relaxed", SeqCst, Relaxed));
                if st
                    .pending
                    .load(ordering!("drain_flag_relaxed", SeqCst, Relaxed))
                    == 0
                {
                    return DrainOutcome::Complete;
                }
                // Taking the CPU back for it is a restart like any other,
                // within the same budget; out of budget, the kick hands it
                // to the drain thread (or the re-pended interrupt).
                if passes >= max_passes || self.out_of_time(start) {
                    return self.out_of_budget(cpu, st);
                }
                if st.draining.swap(true, Ordering::SeqCst) {
                    // Another drain took the CPU over; it sees the work.
                    return DrainOutcome::Busy;
                }
                if let Some(off) = self.backs_off(st) {
                    return off;
                }
            }
            st.stats.restarts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Called by a drain right after it set `draining`: if a bottom-half
    /// guard is held on this CPU, releases the CPU again and returns
    /// [`DrainOutcome::Disabled`], leaving the mask pending for the guard;
    /// `None` if the drain may go on (it still holds the CPU).
    ///
    /// The other half of `bh_disable`'s handshake: the guard publishes its
    /// count and then reads `draining`; the drain publishes `draining` and
    /// then reads the count (both SeqCst, a store-buffering pair), so at
    /// least one of them sees the other: the guard waits for this drain,
    /// or this drain backs off.
    ///
    /// A raise that lands while this drain holds the flag skipped its kick
    /// (`kick_unless_draining`), and the last guard's drop may have found
    /// the CPU busy (its drain returned `Busy`): so after releasing the
    /// flag the drain reads the count again (SeqCst, the pair of the
    /// drop's decrement-then-read-the-mask). Zero with work pending: the
    /// last guard dropped meanwhile and may have left the work to us, so
    /// take the CPU again and re-check. Otherwise any raise this drain
    /// kept from kicking precedes the drop's read of the mask, and the
    /// drop runs it.
    #[inline]
    fn backs_off(&self, st: &CpuState) -> Option<DrainOutcome> {
        loop {
            if st
                .bh_disabled
                .load(ordering!("bh_drain_check_relaxed", SeqCst, Relaxed))
                == 0
            {
                return None;
            }
            let _ = st.draining.swap(false, Ordering::SeqCst);
            if cfg!(bh_mutant = "bh_backoff_no_retry") {
                // A behavioural mutant: no second look (loom model (c)).
                return Some(DrainOutcome::Disabled);
            }
            // SeqCst: in C++ terms the pair of the drop's decrement then
            // read of the mask, for a raise that skipped its kick on our
            // flag; loom cannot tell it from Relaxed (README, "bh_guard").
            if st
                .bh_disabled
                .load(ordering!("bh_backoff_relaxed", SeqCst, Relaxed))
                != 0
                || st.pending.load(Ordering::SeqCst) == 0
            {
                return Some(DrainOutcome::Disabled);
            }
            if st.draining.swap(true, Ordering::SeqCst) {
                return Some(DrainOutcome::Busy);
            }
        }
    }

    /// The end of a drain that ran out of budget with work pending, after
    /// it released the CPU: count it and kick the backend for the rest.
    fn out_of_budget(&self, cpu: usize, st: &CpuState) -> DrainOutcome {
        st.stats.budget_exhausted.fetch_add(1, Ordering::Relaxed);
        B::kick(cpu, &st.wake);
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
        let (_, st) = self.current();
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
        if depth == 1 && st.pending.load(Ordering::Relaxed) != 0 {
            Some(self.drain())
        } else {
            None
        }
    }

    /// Turns bottom halves off on the current CPU until the returned guard
    /// is dropped (Linux's `local_bh_disable` / `local_bh_enable`).
    ///
    /// While a guard is held on a CPU, no drain runs there:
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
    pub fn bh_disable(&self) -> BhGuard<'_, B, N> {
        let (cpu, st) = self.current();
        let mut n = st.bh_disabled.load(Ordering::Relaxed);
        loop {
            if n >= BH_DISABLE_MAX {
                st.stats.misuse(Misuse::BhDisableOverflow);
                return BhGuard {
                    rt: self,
                    cpu: NOT_COUNTED,
                    _not_send: PhantomData,
                };
            }
            // SeqCst: the store-buffering pair with the drain's `draining`
            // swap and its count check (`backs_off`): publish the count,
            // then read the flag.
            match st.bh_disabled.compare_exchange_weak(
                n,
                n + 1,
                ordering!("bh_disable_relaxed", SeqCst, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        // A drain that took the CPU before our count was published runs to
        // its end; one that takes it afterwards sees the count and backs
        // off. In a child of `fork()` the flag may be a parent thread's,
        // for a drain that does not exist here: do not wait on it (a drain
        // of this process repairs the flag and then sees the count).
        while st
            .draining
            .load(ordering!("bh_disable_relaxed", SeqCst, Relaxed))
            && !st.fork.stale()
        {
            crate::sync::spin_wait();
        }
        BhGuard {
            rt: self,
            cpu,
            _not_send: PhantomData,
        }
    }

    /// The end of a bottom-half guard on `cpu`: the last one runs or
    /// pends what was raised meanwhile.
    fn bh_enable(&self, cpu: usize) {
        let st = self.cpus.get(cpu);
        // SeqCst: decrement, then read the mask; pairs with `backs_off`
        // (a drain that backed off re-reads the count after releasing the
        // CPU) and with `raise` (mask, then flag).
        let before = st
            .bh_disabled
            .fetch_sub(1, ordering!("bh_enable_relaxed", SeqCst, Relaxed));
        if before != 1
            || st
                .pending
                .load(ordering!("bh_enable_relaxed", SeqCst, Relaxed))
                == 0
        {
            return;
        }
        if B::DRAIN_ON_BH_ENABLE && self.current().0 == cpu {
            // What this drain leaves it hands on itself (Remaining kicks;
            // Busy: the running drain sees it).
            let _ = self.drain();
        } else {
            B::kick(cpu, &st.wake);
        }
    }

    fn out_of_time(&self, start: u64) -> bool {
        let budget = self.config.get().time_budget_ns;
        budget != 0 && B::now_ns().wrapping_sub(start) >= budget
    }

    /// Runs the handlers of `pending`, lowest bit first.
    fn run_pass(&self, cpu: usize, st: &CpuState, pending: u32) {
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
                st.pending.fetch_or(bits | relist, Ordering::SeqCst);
                let _ = st.draining.swap(false, Ordering::SeqCst);
                if st.pending.load(Ordering::SeqCst) != 0 {
                    B::kick(cpu, &st.wake);
                }
            });
            let t0 = B::now_ns();
            match handler {
                Some(cb) => cb.call(cpu),
                None if v == Vector::HI_TASKLET => self.run_tasklets(cpu, st, Priority::Hi),
                None => self.run_tasklets(cpu, st, Priority::Normal),
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

    fn run_tasklets(&self, cpu: usize, st: &CpuState, prio: Priority) {
        let list = &st.tasklets[prio as usize];
        let mut again = list.run(|t| self.requeue(cpu, t));
        // Work items after the normal tasklets, as Linux runs its BH
        // workqueues from the tasklet softirq.
        if prio == Priority::Normal {
            again |= st.bh_work.run();
        }
        if again {
            self.pend_in_drain(cpu, prio.vector());
        }
    }

    /// A tasklet that another CPU's drain handed off to this one while it
    /// ran here (transition 7 of [`Tasklet`]) goes back on this CPU's list
    /// for the next pass.
    fn requeue(&self, cpu: usize, t: &'static Tasklet) {
        self.cpus.get(cpu).tasklets[t.priority() as usize].push(t);
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
    pub fn stats(&self) -> Stats<'_, B, N> {
        Stats::new(self)
    }

    pub(crate) fn cpu_state(&self, cpu: usize) -> &CpuState {
        self.cpus.get(cpu)
    }
}

impl<B: Backend, const N: usize> TaskletRuntime for Runtime<B, N> {
    fn count_misuse(&self, m: Misuse) {
        self.current().1.stats.misuse(m);
    }

    fn enqueue(&self, t: &'static Tasklet, linked: &Cell<bool>) {
        let (cpu, st) = self.current();
        let bit = t.priority().vector().bit();
        st.tasklets[t.priority() as usize].push(t);
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
        if st.pending.load(Ordering::Relaxed) & bit != 0 {
            return;
        }
        // SeqCst: as in `raise`.
        let old = st
            .pending
            .fetch_or(bit, ordering!("raise_relaxed", SeqCst, Relaxed));
        if old == 0 {
            self.kick_unless_draining(cpu, st);
        }
    }
}

impl<B: Backend, const N: usize> fmt::Debug for Runtime<B, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("cpus", &N)
            .field("config", &self.config.get())
            .finish_non_exhaustive()
    }
}

// SAFETY: every field is shared through atomics or through `VectorSlot`'s
// cells, whose writes are published by the READY state (see `VectorSlot`),
// or never written after construction (`config`). A slot's context pointer
// is a `&'static C` with `C: Sync` (`Callback`). `B` is only a type-level
// choice of functions (PhantomData<fn() -> B>).
unsafe impl<B: Backend, const N: usize> Sync for Runtime<B, N> {}

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
