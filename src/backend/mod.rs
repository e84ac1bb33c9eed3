//! Backends: where the current CPU, the clock and the drain wake-up come
//! from.
//!
//! Every backend is a unit type implementing [`Backend`]: the same small,
//! crate-wide surface, chosen once as the runtime's type parameter. The
//! runtime calls nothing else of its environment.
//!
//! | backend | file | CPUs are | clock | kick |
//! | --- | --- | --- | --- | --- |
//! | [`Host`] (feature `std`) | `backend/host.rs` | threads bound to an index | `CLOCK_MONOTONIC` | wakes the CPU's drain thread ([`Runtime::spawn_drain_threads`](crate::Runtime::spawn_drain_threads)) |
//! | [`Signals`] (feature `std`, Linux) | `backend/unix_signal.rs` | the CPU a signal handler runs on (`sched_getcpu`) | `CLOCK_MONOTONIC` | wakes the CPU's pinned drain thread ([`Runtime::spawn_drain_threads`](crate::Runtime::spawn_drain_threads)) and the pollable `eventfd` |
//! | [`BareMetal`] | `backend/critical_section.rs` | cores, index from the [`Board`] (default 0) | the board's, or none | the board pends its drain interrupt |

mod critical_section;
#[cfg(feature = "std")]
mod drain_threads;
#[cfg(feature = "std")]
mod host;
#[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
mod unix_signal;

pub use critical_section::{BareMetal, Board};

use crate::level::Level;
use crate::softirq::Handlers;
use crate::wake::WakeWord;

#[cfg(feature = "std")]
pub use drain_threads::DrainThreads;
#[cfg(feature = "std")]
pub use host::{CpuBinding, Host};
#[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
pub use unix_signal::{
    Accept, SigInfo, SignalConfig, SignalCounts, SignalError, SignalHandle, SignalMode, Signals,
};

/// The signal backend's part of the `fork()` child handler (`crate::fork`).
#[cfg(all(feature = "std", target_os = "linux"))]
pub(crate) fn after_fork_child() {
    #[cfg(not(bottomhalf_loom))]
    unix_signal::after_fork_child();
}

/// The environment a [`Runtime`](crate::Runtime) runs in.
///
/// Every function here is called from top halves and must itself be
/// top-half safe: no lock, no allocation, no blocking, async-signal-safe on
/// Unix.
///
/// # Examples
///
/// A single-CPU backend without a clock (the time budget is then off and
/// only the restart budget bounds a drain):
///
/// ```
/// use bottomhalf::{Backend, Config, Runtime, Vector};
///
/// struct OneCpu;
/// impl Backend for OneCpu {
///     fn current_cpu() -> usize { 0 }
///     fn now_ns() -> u64 { 0 }
/// }
///
/// static RT: Runtime<OneCpu, 1> = Runtime::new(Config::DEFAULT);
/// const NET: Vector = Vector::new(3);
/// RT.register(NET, "NET", |_cpu| {}).unwrap();
/// RT.raise(NET);
/// assert!(RT.drain().is_complete());
/// ```
pub trait Backend: 'static {
    /// The index of the CPU the caller runs on, below the runtime's `N`.
    ///
    /// Backends check indices when they hand them out. An index `>= N`
    /// anyway (a backend bug) is not a panic in a top half: the runtime
    /// uses CPU `index % N`, a slot its drains serve, and counts
    /// [`Misuse::CpuOutOfRange`](crate::Misuse::CpuOutOfRange).
    fn current_cpu() -> usize;

    /// A monotonic clock in nanoseconds, used for the drain's time budget
    /// and the longest-handler statistic. A backend without a clock returns
    /// `0` always, which turns the time budget off.
    fn now_ns() -> u64;

    /// Called when level `level` of CPU `cpu` has bottom-half work that no
    /// drain is going to pick up by itself: the level's pending mask went
    /// from empty to non-empty while no drain of that level ran there, or
    /// a drain of the level ran out of budget with work left. A backend
    /// pends that level's drain interrupt (see "Levels" on
    /// [`Runtime`](crate::Runtime)), or wakes the CPU's drain thread
    /// through `wake` (the word that thread sleeps on; one per CPU, for
    /// every level). With one level, `level` is always
    /// [`Level::DEFAULT`]. The default does nothing: the caller drains
    /// explicitly.
    #[inline(always)]
    fn kick(cpu: usize, level: Level, wake: &WakeWord) {
        let _ = (cpu, level, wake);
    }

    /// The one-shot deadline hook of delayed bottom-half work
    /// ([`Runtime::queue_delayed_work`](crate::Runtime::queue_delayed_work)):
    /// the drain of level `level` on CPU `cpu` calls it with the earliest
    /// pending deadline there ([`now_ns`](Backend::now_ns) clock) whenever
    /// that changes, `u64::MAX` when no timer is left. One-shot, each call
    /// replaces the previous arming; when it fires, call
    /// [`Runtime::timer_fired`](crate::Runtime::timer_fired) on that CPU.
    /// Default: nothing — due timers then fire at the first drain of that
    /// level ([`Runtime::drain`](crate::Runtime::drain),
    /// [`drain_level`](crate::Runtime::drain_level)) at or after their
    /// deadline: a drain looks at the armed deadline of each level it
    /// drains. `Host` and `Signals` drain threads sleep until the earliest
    /// deadline; `BareMetal` forwards to [`Board::set_timer`].
    ///
    /// Top-half safe: must be (called from a drain). Allocates: must not.
    /// Blocks: must not.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Backend, Level, WakeWord};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static ARMED: AtomicU64 = AtomicU64::new(u64::MAX);
    /// struct Sim;
    /// impl Backend for Sim {
    ///     fn current_cpu() -> usize { 0 }
    ///     fn now_ns() -> u64 { 0 }
    ///     fn arm_timer(_cpu: usize, _level: Level, deadline_ns: u64) {
    ///         ARMED.store(deadline_ns, Ordering::Relaxed); // a compare register
    ///     }
    /// }
    /// Sim::arm_timer(0, Level::DEFAULT, 5);
    /// assert_eq!(ARMED.load(Ordering::Relaxed), 5);
    /// ```
    #[inline(always)]
    fn arm_timer(cpu: usize, level: Level, deadline_ns: u64) {
        let _ = (cpu, level, deadline_ns);
    }

    /// Softirq handlers known at compile time: a constant table that lives
    /// in flash (`.rodata`), in force before the first raise, with no
    /// `register` call (see [`Handlers`]). Default: none, every handler is
    /// registered at run time.
    ///
    /// The table belongs to the backend type, not to the runtime value, so
    /// a runtime keeps no pointer to it and stays all zeros (`.bss`). On
    /// bare metal the [`Board`] supplies it
    /// ([`Board::HANDLERS`](crate::Board::HANDLERS)). The `Host` and
    /// `Signals` backends have none: their handlers are registered at
    /// start-up, before drain threads or signal handlers exist.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Backend, Config, Handlers, Runtime, Vector};
    /// use core::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// const NET: Vector = Vector::new(3);
    ///
    /// struct OneCpu;
    /// impl Backend for OneCpu {
    ///     fn current_cpu() -> usize { 0 }
    ///     fn now_ns() -> u64 { 0 }
    ///     const HANDLERS: &'static Handlers = &Handlers::new()
    ///         .with(NET, "NET", |_cpu| { RUNS.fetch_add(1, Ordering::Relaxed); });
    /// }
    ///
    /// static RT: Runtime<OneCpu, 1> = Runtime::new(Config::DEFAULT);
    /// RT.raise(NET); // no register call
    /// assert!(RT.drain().is_complete());
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// ```
    const HANDLERS: &'static Handlers = &Handlers::NONE;

    /// `true` (the default) if the drop of the last
    /// [`bh_disable`](crate::Runtime::bh_disable) guard may drain inline,
    /// in the dropping context: guards are taken in thread context, where
    /// a drain may run (`Host`, `Signals`). `false`: the drop kicks the
    /// backend instead ([`BareMetal`] pends its drain interrupt, so the
    /// work runs at that interrupt's priority, not in thread mode).
    const DRAIN_ON_BH_ENABLE: bool = true;

    /// Runs `f` with the calling thread taken for CPU `cpu` (what
    /// [`current_cpu`](Backend::current_cpu) returns during the call), if
    /// this backend lets a thread serve another CPU's slot: `Some(f())`;
    /// `None` (the default) if it does not. A bottom-half work item's
    /// `flush` or `cancel_sync` waiting for an instance pending on another
    /// CPU drains that CPU this way instead of only spinning: `Signals`
    /// does (its slots are logical; `drain_all` serves them all from one
    /// thread), `Host` and `BareMetal` do not (a thread or a core is one
    /// CPU).
    ///
    /// Top-half safe: need not be (thread context). Allocates: must not.
    /// Blocks: as `f`.
    #[inline]
    fn run_as_cpu<R>(cpu: usize, f: impl FnOnce() -> R) -> Option<R> {
        let _ = (cpu, f);
        None
    }
}
