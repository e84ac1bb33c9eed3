//! Tasklets: statically allocated, coalescing, serialized bottom halves.
//!
//! Design rules (after Linux's `tasklet_struct`): a tasklet is a `static`
//! that links itself into a per-CPU list when scheduled, so scheduling never
//! allocates; the list is a lock-free LIFO (push: one CAS; drain: one swap
//! that takes the whole list, reversed into schedule order); one atomic
//! state word serializes everything else. The drain reads a tasklet's
//! `next` link before it changes the tasklet's state, because the state
//! change hands the link to whoever schedules it next. A drain that finds
//! its tasklet running on another CPU does not spin on it: it hands the
//! tasklet to the CPU running it, whose drain links it again when the run
//! ends, and runs it in its next pass.
//!
//! Top-half paths (`schedule`, `try_schedule`, `enable`, `disable_nosync`)
//! never panic: misuse is counted in the runtime's
//! [`Stats::misuse`](crate::Stats::misuse) and ignored.
//!
//! A tasklet's callback is a `fn()` ([`Tasklet::new`]) or a
//! `fn(&'static C)` bound to a `'static` context ([`Tasklet::with_context`]):
//! one bottom-half function for every instance of a device, each instance's
//! tasklet handing it that instance. Linux gets there with `tasklet_setup`
//! and `from_tasklet` (a `container_of` from the tasklet to the device);
//! here the device is bound when the tasklet is built, so the callback gets
//! it directly and nothing is computed from addresses. `Tasklet` stays one
//! non-generic type (tasklets of every context type share the per-CPU
//! lists): the context is stored type-erased, as a pointer beside the
//! function pointer.

use core::cell::Cell;
use core::fmt;
use core::ptr;

use crate::level::Level;
use crate::softirq::Vector;
use crate::stats::Misuse;
use crate::sync::{loom_const_fn, ordering, spin_wait, AtomicPtr, AtomicU32, OnUnwind, Ordering};

/// Which list a tasklet goes on; hi-priority tasklets drain first.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Priority, Vector};
/// assert_eq!(Priority::Hi.vector(), Vector::HI_TASKLET);
/// assert_eq!(Priority::Normal.vector(), Vector::TASKLET);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Drained by [`Vector::HI_TASKLET`] (Linux's `tasklet_hi_schedule`).
    Hi = 0,
    /// Drained by [`Vector::TASKLET`].
    Normal = 1,
}

impl Priority {
    /// The softirq vector that drains this list.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Priority::Hi.vector().index(), 0);
    /// ```
    pub const fn vector(self) -> Vector {
        match self {
            Priority::Hi => Vector::HI_TASKLET,
            Priority::Normal => Vector::TASKLET,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl<B: crate::Backend, const N: usize, const L: usize> Sealed for crate::Runtime<B, N, L> {}
}

/// The runtime a tasklet is bound to, seen through a trait object so that
/// `Tasklet` needs no type parameters. Implemented by
/// [`Runtime`](crate::Runtime) only.
pub trait TaskletRuntime: sealed::Sealed + Sync + crate::fork::RuntimeFork {
    /// Links `t` into the current CPU's list for its priority, sets
    /// `linked`, and raises the list's vector. The caller owns `t`'s link
    /// (it moved the count from 0, or cleared PARKED). If this unwinds (a
    /// backend's `current_cpu` or `kick` panicked), `linked` says whether
    /// the tasklet is on a list.
    #[doc(hidden)]
    fn enqueue(&self, t: &'static Tasklet, linked: &Cell<bool>);

    /// Counts a misuse on the current CPU.
    #[doc(hidden)]
    fn count_misuse(&self, m: Misuse);
}

/// Pending schedules not yet covered by a run (bits 0..=18): non-zero
/// means pending. The schedule that moves it from 0 links the tasklet; the
/// others are coalesced. Saturates at `COUNT_MAX`.
pub(crate) const COUNT_MASK: u32 = (1 << 19) - 1;
const COUNT_MAX: u32 = COUNT_MASK;
/// Handed off: a drain found the tasklet pending while it ran on another
/// CPU and took it off its list; the CPU running it links it again when
/// the run ends (`finish`). Only with RUN.
pub(crate) const HANDOFF: u32 = 1 << 19;
/// The callback is running.
pub(crate) const RUN: u32 = 1 << 20;
/// Pending while disabled: taken off every list until `enable`.
pub(crate) const PARKED: u32 = 1 << 21;
/// Killed: never runs again; `schedule` is refused.
pub(crate) const KILLED: u32 = 1 << 22;
/// The disable count lives in the top 9 bits.
const DISABLE_SHIFT: u32 = 23;
const DISABLE_ONE: u32 = 1 << DISABLE_SHIFT;
const DISABLE_MAX: u32 = u32::MAX >> DISABLE_SHIFT;

/// `schedule` on a killed tasklet.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Tasklet, TaskletKilled};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// static T: Tasklet = Tasklet::new(&RT, || {});
/// T.kill();
/// assert_eq!(T.try_schedule(), Err(TaskletKilled));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TaskletKilled;

impl fmt::Display for TaskletKilled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tasklet was killed; it cannot be scheduled again")
    }
}

impl core::error::Error for TaskletKilled {}

/// A deferred function that never runs on two CPUs at once.
///
/// # State
///
/// One `AtomicU32`: a 19-bit count of pending schedules (`SCHED` below
/// means "count > 0"), flag bits `HANDOFF`, `RUN`, `PARKED`, `KILLED`,
/// and a 9-bit disable count. Transitions (each a single atomic RMW):
///
/// ```text
///                 (1) schedule                (3) drain: start
///     ┌────────┐ ─────────────▶ ┌─────────┐ ────────────────▶ ┌─────────┐
///     │  IDLE  │                │  SCHED  │                   │   RUN   │
///     └────────┘ ◀───────────── └─────────┘ ◀──────────┐      └─────────┘
///         ▲        (6) drain:     │  ▲   ▲    (2) schedule│        │ │
///         │        killed, drop   │  │   │    while RUN   └────────┘ │
///         │                  (4)  │  │(5)│   (RUN|SCHED, linked)     │
///         │       drain: disabled ▼  │   │ (8b) run ends: relinked   │
///         │               ┌──────────┐ ┌─┴──────────────────┐        │
///         │               │  PARKED  │ │ RUN|SCHED|HANDOFF  │        │
///         │               └──────────┘ │ (on no list)       │        │
///         │                            └────────────────────┘        │
///         │                      ▲ (7) drain on another CPU finds    │
///         │                      │ RUN|SCHED: hand off, unlink       │
///         └──────────────────────────────────────────────────────────┘
///                              (8) callback returned: clear RUN
/// ```
///
/// 1. [`schedule`](Tasklet::schedule): one CAS adds 1 to the count; the
///    caller that moved it from 0 links the tasklet into its CPU's list
///    and raises the list's vector. Otherwise the schedule is coalesced
///    (returns `false`): the pending run covers it.
/// 2. `schedule` while RUN: the count leaves 0 and the tasklet is linked
///    again; it runs exactly once more, after the current run (a drain
///    that finds it still running hands it off, 7).
/// 3. Drain, tasklet enabled and not running: CAS `count → 0, RUN on`
///    (the count is cleared before the callback, so a schedule during the
///    callback is case 2); `count - 1` schedules were coalesced into this
///    run and are added to [`coalesced`](Tasklet::coalesced).
/// 4. Drain, tasklet disabled: CAS sets `PARKED`; the tasklet leaves every
///    list. [`enable`](Tasklet::enable) (5) clears PARKED when the count
///    reaches zero and links it on the enabling CPU.
/// 6. Drain, tasklet killed: CAS clears the count; it does not run.
/// 7. Drain, RUN set (running on another CPU): CAS sets `HANDOFF`; the
///    drain drops the tasklet from its list and goes on (no spinning, no
///    restart for it). The count stays: the tasklet is still pending, and
///    schedules meanwhile coalesce into the run to come.
/// 8. Callback returned: the drain increments the run counter, then
///    `fetch_and(!(RUN | HANDOFF))`. (8b) If `HANDOFF` was set, the drain
///    that ran it owns the link again: it links the tasklet on its own
///    CPU's list and runs it in its next pass (3), once, after this run.
///    If this `fetch_and` comes first, the other CPU's CAS (7) fails,
///    re-reads RUN clear and runs the tasklet itself (3).
///
/// [`disable_nosync`](Tasklet::disable_nosync) and
/// [`enable`](Tasklet::enable) move the disable count;
/// [`kill`](Tasklet::kill) sets KILLED (and clears the count and PARKED of
/// a parked tasklet, which is on no list). [`disable`](Tasklet::disable)
/// and [`kill`](Tasklet::kill) then wait for RUN to clear.
///
/// # What the runtime touches after the callback returns
///
/// `runs` (`fetch_add`), then `state` (`fetch_and(!(RUN | HANDOFF))`);
/// `coalesced` was written when the run started. If that `fetch_and` found
/// `HANDOFF`, the tasklet is pending and its link is the drain's: it writes
/// `next` and pushes the tasklet on its own CPU's list, as a `schedule`
/// would. Otherwise the drain never reads the tasklet again in that pass.
///
/// # Examples
///
/// An interrupt handler schedules twice; the drain runs the tasklet once,
/// covering both:
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Tasklet};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// static RUNS: AtomicU32 = AtomicU32::new(0);
/// static RX_DONE: Tasklet = Tasklet::new(&RT, || {
///     RUNS.fetch_add(1, Ordering::Relaxed);
/// });
///
/// fn uart_irq() {
///     RX_DONE.schedule();
/// }
///
/// uart_irq();
/// uart_irq(); // coalesced
/// let _ = RT.drain();
/// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
/// assert_eq!(RX_DONE.coalesced(), 1);
/// ```
///
/// A driver with several instances of a device gives each instance its own
/// tasklet, bound to the instance ([`with_context`](Tasklet::with_context)),
/// and writes the bottom half once. The tasklet may live inside the device
/// it points to:
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Tasklet};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
///
/// struct Uart {
///     base: usize,
///     rx_bytes: AtomicU32,
///     rx: Tasklet,
/// }
///
/// fn uart_rx_bh(uart: &'static Uart) {
///     // Read the FIFO at `uart.base`...
///     uart.rx_bytes.fetch_add(1, Ordering::Relaxed);
/// }
///
/// static UART0: Uart = Uart {
///     base: 0x4000_c000,
///     rx_bytes: AtomicU32::new(0),
///     rx: Tasklet::with_context(&RT, &UART0, uart_rx_bh),
/// };
/// static UART1: Uart = Uart {
///     base: 0x4000_d000,
///     rx_bytes: AtomicU32::new(0),
///     rx: Tasklet::with_context(&RT, &UART1, uart_rx_bh),
/// };
///
/// UART1.rx.schedule(); // UART1's interrupt
/// let _ = RT.drain();
/// assert_eq!(UART0.rx_bytes.load(Ordering::Relaxed), 0);
/// assert_eq!(UART1.rx_bytes.load(Ordering::Relaxed), 1);
/// ```
///
/// # Size and placement
///
/// 72 bytes on x86_64 Linux (64 before contexts: the context pointer added
/// a word), 36 on thumbv7m (32 before). A `static` tasklet holds
/// pointers (its runtime, its callback, its context), whose values the
/// linker fills in, so it lands in `.data`, not `.bss`.
pub struct Tasklet {
    /// Flags and disable count; see the type's docs.
    pub(crate) state: AtomicU32,
    /// Link in a per-CPU list. Written only by the owner of the tasklet's
    /// list membership: the `schedule` that moved the count from 0, the `enable`
    /// that cleared PARKED, or the drain that took the list and re-queues
    /// it. Read by the drain that took the list (Acquire swap of the head).
    pub(crate) next: AtomicPtr<Tasklet>,
    /// What the drain calls. Immutable.
    callback: Callback,
    runtime: &'static dyn TaskletRuntime,
    priority: Priority,
    /// The bottom-half level whose lists it is queued on ([`Level`]
    /// index). Immutable after construction ([`Tasklet::at_level`]).
    level: u8,
    /// Completed runs. Written by the drain that ran it.
    runs: AtomicU32,
    /// Schedules coalesced into a run that has started. Written by the
    /// drain that started it (from the state's count), so `schedule` needs
    /// no second RMW.
    coalesced: AtomicU32,
    /// Its link in the `fork()` registry (`crate::fork`).
    pub(crate) fork: crate::fork::TaskletFork,
}

impl Tasklet {
    loom_const_fn! {
        /// A normal-priority tasklet running `func`, bound to `runtime`.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::{Config, Host, Runtime, Tasklet};
        /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        /// static T: Tasklet = Tasklet::new(&RT, || println!("bottom half"));
        /// assert!(T.schedule());
        /// # let _ = RT.drain();
        /// ```
        pub fn new(runtime: &'static dyn TaskletRuntime, func: fn()) -> Tasklet {
            Tasklet::with_priority(runtime, Callback::Plain(func), Priority::Normal)
        }
    }

    loom_const_fn! {
        /// A hi-priority tasklet (drained before normal ones).
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::{Config, Host, Priority, Runtime, Tasklet};
        /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        /// static T: Tasklet = Tasklet::new_hi(&RT, || {});
        /// assert_eq!(T.priority(), Priority::Hi);
        /// ```
        pub fn new_hi(runtime: &'static dyn TaskletRuntime, func: fn()) -> Tasklet {
            Tasklet::with_priority(runtime, Callback::Plain(func), Priority::Hi)
        }
    }

    loom_const_fn! {
        /// A normal-priority tasklet that runs `func(ctx)`, bound to
        /// `runtime`: one bottom-half function serves every instance of a
        /// device, each instance's tasklet passing its own `ctx`.
        ///
        /// This is Linux's `tasklet_setup(&dev->t, func)` plus the
        /// `from_tasklet(dev, t, t)` at the top of `func`, in one step: the
        /// context is bound here, so `func` receives the device itself. The
        /// tasklet may be a field of the context it points to (a `static`
        /// may take its own address in its initializer), or the context may
        /// be any other `'static` value. `C: Sync`, because the callback
        /// may run on any CPU's drain.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// Two instances, one function; the tasklet inside the device:
        ///
        /// ```
        /// use bottomhalf::{Config, Host, Runtime, Tasklet};
        /// use std::sync::atomic::{AtomicU32, Ordering};
        ///
        /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        ///
        /// struct Port {
        ///     events: AtomicU32,
        ///     bh: Tasklet,
        /// }
        ///
        /// fn port_bh(port: &'static Port) {
        ///     port.events.fetch_add(1, Ordering::Relaxed);
        /// }
        ///
        /// static PORT_A: Port = Port {
        ///     events: AtomicU32::new(0),
        ///     bh: Tasklet::with_context(&RT, &PORT_A, port_bh),
        /// };
        /// static PORT_B: Port = Port {
        ///     events: AtomicU32::new(0),
        ///     bh: Tasklet::with_context(&RT, &PORT_B, port_bh),
        /// };
        ///
        /// PORT_A.bh.schedule();
        /// let _ = RT.drain();
        /// PORT_A.bh.schedule();
        /// PORT_B.bh.schedule();
        /// let _ = RT.drain();
        /// assert_eq!(PORT_A.events.load(Ordering::Relaxed), 2);
        /// assert_eq!(PORT_B.events.load(Ordering::Relaxed), 1);
        /// ```
        pub fn with_context<C: Sync>(
            runtime: &'static dyn TaskletRuntime,
            ctx: &'static C,
            func: fn(&'static C),
        ) -> Tasklet {
            Tasklet::with_priority(runtime, Callback::erase(ctx, func), Priority::Normal)
        }
    }

    loom_const_fn! {
        /// [`with_context`](Tasklet::with_context) for a hi-priority
        /// tasklet (drained before normal ones; Linux's
        /// `tasklet_hi_schedule` list).
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::{Config, Host, Priority, Runtime, Tasklet};
        /// use std::sync::atomic::{AtomicU32, Ordering};
        ///
        /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        /// static TICKS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
        /// fn tick(n: &'static AtomicU32) {
        ///     n.fetch_add(1, Ordering::Relaxed);
        /// }
        /// static T1: Tasklet = Tasklet::new_hi_with_context(&RT, &TICKS[1], tick);
        ///
        /// assert_eq!(T1.priority(), Priority::Hi);
        /// T1.schedule();
        /// let _ = RT.drain();
        /// assert_eq!(TICKS[0].load(Ordering::Relaxed), 0);
        /// assert_eq!(TICKS[1].load(Ordering::Relaxed), 1);
        /// ```
        pub fn new_hi_with_context<C: Sync>(
            runtime: &'static dyn TaskletRuntime,
            ctx: &'static C,
            func: fn(&'static C),
        ) -> Tasklet {
            Tasklet::with_priority(runtime, Callback::erase(ctx, func), Priority::Hi)
        }
    }

    loom_const_fn! {
        fn with_priority(
            runtime: &'static dyn TaskletRuntime,
            callback: Callback,
            priority: Priority,
        ) -> Tasklet {
            Tasklet {
                state: AtomicU32::new(0),
                next: AtomicPtr::new(ptr::null_mut()),
                callback,
                runtime,
                priority,
                level: 0,
                runs: AtomicU32::new(0),
                coalesced: AtomicU32::new(0),
                fork: crate::fork::TaskletFork::new(),
            }
        }
    }

    /// The list the tasklet is scheduled on.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Priority, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// assert_eq!(T.priority(), Priority::Normal);
    /// ```
    pub const fn priority(&self) -> Priority {
        self.priority
    }

    /// The bottom-half level the tasklet runs at: [`Level::DEFAULT`]
    /// unless built with [`at_level`](Tasklet::at_level).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// assert_eq!(T.level(), Level::DEFAULT);
    /// ```
    pub const fn level(&self) -> Level {
        Level::from_index(self.level as usize)
    }

    /// The tasklet, queued on the lists of bottom-half level `level`
    /// instead of level 0 (see "Levels" on
    /// [`Runtime`](crate::Runtime)): its runs happen in that level's
    /// drain, so they preempt lower levels' bottom halves and are
    /// preempted by higher ones. A builder for the `static`:
    /// `Tasklet::new(&RT, f).at_level(Level::new(1))`.
    ///
    /// The tasklet does not know its runtime's number of levels when it
    /// is built, so a level not below it is checked at `schedule` (a top
    /// half, which never panics): the tasklet runs at the runtime's
    /// highest level instead, and [`Misuse::LevelOutOfRange`] is counted.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Level, Runtime, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1, 2> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static STEP: Tasklet = Tasklet::new(&RT, || {
    ///     RUNS.fetch_add(1, Ordering::Relaxed);
    /// })
    /// .at_level(Level::new(1));
    ///
    /// STEP.schedule();
    /// assert_eq!(RT.pending_at(0, Level::new(1)), 1 << 6); // the TASKLET vector, at level 1
    /// assert!(RT.drain_level(Level::new(1)).is_complete());
    /// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    /// ```
    #[cfg(not(bottomhalf_loom))]
    pub const fn at_level(self, level: Level) -> Tasklet {
        Tasklet {
            level: level.index() as u8,
            ..self
        }
    }

    /// See the non-loom `at_level`.
    #[cfg(bottomhalf_loom)]
    pub fn at_level(mut self, level: Level) -> Tasklet {
        self.level = level.index() as u8;
        self
    }

    pub(crate) fn runtime(&self) -> &'static dyn TaskletRuntime {
        self.runtime
    }

    /// Schedules the tasklet on the current CPU: `true` if this call queued
    /// it, `false` if it was already pending (coalesced; counted) or killed.
    ///
    /// A schedule that returns before the tasklet's run starts is covered by
    /// that run; one that lands while it runs makes it run exactly once
    /// more, afterwards.
    ///
    /// Top-half safe: yes (one CAS when coalesced; plus one CAS push and,
    /// unless the list's vector is already pending, one `fetch_or` raise,
    /// when it queues).
    /// Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// assert!(T.schedule());
    /// assert!(!T.schedule());
    /// let _ = RT.drain();
    /// assert!(T.schedule());
    /// # let _ = RT.drain();
    /// ```
    #[inline]
    pub fn schedule(&'static self) -> bool {
        self.try_schedule().unwrap_or(false)
    }

    /// [`schedule`](Tasklet::schedule), telling a killed tasklet apart.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`TaskletKilled`] after [`kill`](Tasklet::kill).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// assert_eq!(T.try_schedule(), Ok(true));
    /// assert_eq!(T.try_schedule(), Ok(false));
    /// # let _ = RT.drain();
    /// ```
    #[inline]
    pub fn try_schedule(&'static self) -> Result<bool, TaskletKilled> {
        self.fork_register();
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s & KILLED != 0 {
                return Err(TaskletKilled);
            }
            let count = s & COUNT_MASK;
            // At the saturation point the CAS writes the same value: it
            // still orders this schedule before the run that covers it.
            let new = if count == COUNT_MAX { s } else { s + 1 };
            // Release: pairs with the drain's Acquire CAS (transition 3), so
            // what the caller wrote before scheduling is visible to the run
            // that covers this schedule, even when coalesced.
            match self.state.compare_exchange_weak(
                s,
                new,
                ordering!("tasklet_schedule_relaxed", AcqRel, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) if count == 0 => {
                    // The backend's `current_cpu` or `kick` (application
                    // code) may panic. Before the tasklet is linked, undo
                    // the count: leave it idle rather than pending on no
                    // list, where nothing would ever run it. Once linked,
                    // leave it pending: its list's drain runs it, and
                    // clearing the count would let the next `schedule`
                    // link it a second time.
                    let linked = Cell::new(false);
                    let guard = OnUnwind(|| {
                        if !linked.get() {
                            self.state.fetch_and(!COUNT_MASK, Ordering::Relaxed);
                        }
                    });
                    self.runtime.enqueue(self, &linked);
                    core::mem::forget(guard);
                    return Ok(true);
                }
                Ok(_) => return Ok(false),
                Err(now) => s = now,
            }
        }
    }

    /// Disables the tasklet without waiting: a pending run is held (parked)
    /// until the matching [`enable`](Tasklet::enable); a run in progress on
    /// another CPU finishes. Calls nest.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// Never panics. Beyond 511 nested disables (a missing `enable`) the
    /// count saturates: the tasklet stays disabled, the excess disable is
    /// ignored and counted as [`Misuse::DisableOverflow`] in the runtime's
    /// [`Stats::misuse`](crate::Stats::misuse).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.disable_nosync();
    /// T.schedule();
    /// let _ = RT.drain();
    /// assert_eq!(T.runs(), 0);
    /// T.enable();
    /// let _ = RT.drain();
    /// assert_eq!(T.runs(), 1);
    /// ```
    pub fn disable_nosync(&self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s >> DISABLE_SHIFT == DISABLE_MAX {
                self.runtime.count_misuse(Misuse::DisableOverflow);
                return;
            }
            // Acquire: a run that starts after this sees the count (paired
            // with the drain's CAS reading it).
            match self.state.compare_exchange_weak(
                s,
                s + DISABLE_ONE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// Disables the tasklet and waits until a run in progress (on any CPU)
    /// has finished. When it returns, the callback is not running and will
    /// not start until [`enable`](Tasklet::enable).
    ///
    /// Calling it from the tasklet's own callback waits forever, as in
    /// Linux.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes (yields until the
    /// running callback returns).
    ///
    /// Never panics; a disable count overflow is handled as in
    /// [`disable_nosync`](Tasklet::disable_nosync).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.disable();
    /// assert!(T.is_disabled());
    /// T.enable();
    /// ```
    pub fn disable(&self) {
        self.disable_nosync();
        self.wait_not_running();
    }

    /// Undoes one `disable`. When the count reaches zero, a run that was
    /// held while disabled is queued on the current CPU.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// Never panics. On a tasklet that is not disabled (an `enable` without
    /// `disable`) it does nothing and counts [`Misuse::UnbalancedEnable`]
    /// in the runtime's [`Stats::misuse`](crate::Stats::misuse).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.disable_nosync();
    /// T.disable_nosync();
    /// T.enable();
    /// assert!(T.is_disabled());
    /// T.enable();
    /// assert!(!T.is_disabled());
    /// ```
    pub fn enable(&'static self) {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s >> DISABLE_SHIFT == 0 {
                self.runtime.count_misuse(Misuse::UnbalancedEnable);
                return;
            }
            let mut new = s - DISABLE_ONE;
            let unpark = new >> DISABLE_SHIFT == 0 && s & PARKED != 0;
            if unpark {
                new &= !PARKED;
            }
            // Release: pairs with the drain's Acquire CAS; AcqRel because
            // an unparking enable takes over the link (transition 5).
            match self.state.compare_exchange_weak(
                s,
                new,
                ordering!("tasklet_enable_relaxed", AcqRel, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if unpark {
                        // If the backend panics before the tasklet is linked
                        // (`current_cpu`), put it back as it was, disabled
                        // and parked, so a later balanced `enable` runs the
                        // held run. Once linked (a panicking `kick`), leave
                        // it enabled and pending: its list's drain runs it.
                        let linked = Cell::new(false);
                        let guard = OnUnwind(|| {
                            if !linked.get() {
                                self.state
                                    .fetch_add(DISABLE_ONE | PARKED, Ordering::Relaxed);
                            }
                        });
                        self.runtime.enqueue(self, &linked);
                        core::mem::forget(guard);
                    }
                    return;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Kills the tasklet: a pending run is discarded, a run in progress is
    /// waited for, and it never runs again (`schedule` returns `false`,
    /// [`try_schedule`](Tasklet::try_schedule) an error).
    ///
    /// Linux's `tasklet_kill` instead waits for a pending run to happen;
    /// here the drain that would run it may never come (a stopped drain
    /// thread), so kill discards it rather than risk waiting forever. If the
    /// tasklet is still linked on a CPU's list, that CPU's next drain
    /// unlinks it without running it. Calling `kill` from the tasklet's own
    /// callback waits forever, as in Linux.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes (yields until a
    /// running callback returns).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || panic!("killed tasklets do not run"));
    /// T.schedule();
    /// T.kill();
    /// assert!(!T.schedule());
    /// assert!(RT.drain().is_complete());
    /// assert_eq!(T.runs(), 0);
    /// ```
    pub fn kill(&self) {
        // AcqRel: pairs with the drain's Acquire CAS, which then sees KILLED
        // (transition 6) unless it started the run before, which we wait
        // for below.
        let mut s = self.state.fetch_or(KILLED, Ordering::AcqRel) | KILLED;
        // A parked tasklet is on no list, so nobody else will clear its
        // count: do it here.
        while s & PARKED != 0 {
            match self.state.compare_exchange_weak(
                s,
                s & !(PARKED | COUNT_MASK),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.wait_not_running();
    }

    fn wait_not_running(&self) {
        // Acquire: pairs with the Release `fetch_and(!RUN)` after the
        // callback, so its effects are visible when we return.
        while self.state.load(Ordering::Acquire) & RUN != 0 {
            spin_wait();
        }
    }

    /// `true` while the disable count is non-zero.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// assert!(!T.is_disabled());
    /// ```
    pub fn is_disabled(&self) -> bool {
        self.state.load(Ordering::Relaxed) >> DISABLE_SHIFT != 0
    }

    /// `true` if scheduled and not yet started (including held while
    /// disabled).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.schedule();
    /// assert!(T.is_scheduled());
    /// let _ = RT.drain();
    /// assert!(!T.is_scheduled());
    /// ```
    pub fn is_scheduled(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & COUNT_MASK != 0 && s & KILLED == 0
    }

    /// `true` after [`kill`](Tasklet::kill).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.kill();
    /// assert!(T.is_killed());
    /// ```
    pub fn is_killed(&self) -> bool {
        self.state.load(Ordering::Relaxed) & KILLED != 0
    }

    /// Completed runs.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.schedule();
    /// let _ = RT.drain();
    /// assert_eq!(T.runs(), 1);
    /// ```
    pub fn runs(&self) -> u32 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Schedules that found the tasklet already pending, counted when the
    /// run that covers them starts (a pending tasklet's coalesced schedules
    /// are not in it yet). Per run, at most 2^19 - 2 are counted.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.schedule();
    /// T.schedule();
    /// T.schedule();
    /// let _ = RT.drain();
    /// assert_eq!((T.runs(), T.coalesced()), (1, 2));
    /// ```
    pub fn coalesced(&self) -> u32 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Transitions 3, 4, 6 or 7 for a tasklet the drain took off a list.
    fn start(&self) -> Start {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            debug_assert!(
                s & COUNT_MASK != 0 && s & (PARKED | HANDOFF) == 0,
                "state {s:#x}"
            );
            let (new, start) = if s & KILLED != 0 {
                (s & !COUNT_MASK, Start::Dropped)
            } else if s & RUN != 0 {
                (s | HANDOFF, Start::HandedOff)
            } else if s >> DISABLE_SHIFT != 0 {
                (s | PARKED, Start::Parked)
            } else {
                ((s & !COUNT_MASK) | RUN, Start::Run)
            };
            // Acquire: pairs with the Release of `schedule`/`enable` and of
            // the previous run's `fetch_and` in `finish`. Release: a hand-off
            // (7) gives the link to the CPU running the tasklet; this drain
            // read `next` before, and that CPU's `finish` (AcqRel) writes it
            // after.
            match self.state.compare_exchange_weak(
                s,
                new,
                ordering!(
                    "tasklet_start_relaxed",
                    AcqRel,
                    Relaxed,
                    "tasklet_handoff_no_release",
                    Acquire
                ),
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if let Start::Run = start {
                        let coalesced = (s & COUNT_MASK) - 1;
                        if coalesced != 0 {
                            self.coalesced.fetch_add(coalesced, Ordering::Relaxed);
                        }
                    }
                    return start;
                }
                Err(now) => s = now,
            }
        }
    }

    /// Transition 8; `true` if another CPU's drain handed the tasklet off
    /// meanwhile (8b): the caller then owns its link and must link it.
    fn finish(&self) -> bool {
        self.runs.fetch_add(1, Ordering::Relaxed);
        // Release: pairs with the Acquire in the next `start` (on any CPU)
        // and in `disable`/`kill`'s wait. Acquire: pairs with the Release
        // of a hand-off (7), whose drain is done with `next` before we
        // write it.
        let old = self.state.fetch_and(
            !(RUN | HANDOFF),
            ordering!(
                "tasklet_finish_relaxed",
                AcqRel,
                Relaxed,
                "tasklet_finish_no_acquire",
                Release
            ),
        );
        old & HANDOFF != 0
    }
}

impl fmt::Debug for Tasklet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasklet")
            .field(
                "state",
                &format_args!("{:#x}", self.state.load(Ordering::Relaxed)),
            )
            .field("priority", &self.priority)
            .field("context", &matches!(self.callback, Callback::Context(..)))
            .field("runs", &self.runs())
            .field("coalesced", &self.coalesced())
            .finish_non_exhaustive()
    }
}

// SAFETY: `Tasklet` would be `Send + Sync` but for the context pointer in
// `callback`. That pointer comes only from a `&'static C` with `C: Sync`
// (`Callback::erase`), and the tasklet only ever hands it back to `func` as
// that `&'static C`: sharing or sending the tasklet shares a `&'static C`,
// which is `Send + Sync` because `C: Sync`. Every other field is an atomic,
// immutable, or `Send + Sync` itself.
unsafe impl Sync for Tasklet {}
// SAFETY: as above.
unsafe impl Send for Tasklet {}

/// A tasklet's callback: a plain `fn()`, or a `fn(&'static C)` with its
/// context, both type-erased so that `Tasklet` needs no type parameter.
#[derive(Clone, Copy)]
enum Callback {
    Plain(fn()),
    /// `func` is a `fn(&'static C)` and `ctx` the `&'static C` it was
    /// built with (`erase`), for one `C: Sync`.
    Context(fn(*const ()), *const ()),
}

impl Callback {
    loom_const_fn! {
        /// Erases `C` from a context and its function.
        fn erase<C: Sync>(ctx: &'static C, func: fn(&'static C)) -> Callback {
            // SAFETY: transmuting between two function pointer types is
            // sound (same size, both non-null); calling the result is what
            // needs care, see `call`.
            let func = unsafe { core::mem::transmute::<fn(&'static C), fn(*const ())>(func) };
            // `from_ref` keeps the reference's provenance.
            let ctx = ptr::from_ref(ctx).cast::<()>();
            Callback::Context(func, ctx)
        }
    }

    /// Runs the callback.
    #[inline]
    fn call(self) {
        match self {
            Callback::Plain(f) => f(),
            // The call goes through `fn(*const ())` to a function defined as
            // `fn(&'static C)`, with `C: Sized`. Rust documents `&T` and
            // `*const U` as ABI-compatible when their pointee metadata is
            // the same (`()`, both sized; see "ABI compatibility" in the
            // `fn` primitive's docs), so this is a call of `func` with an
            // argument of its own type: `ctx` is the `&'static C` given to
            // `erase` (valid, aligned, shared, forever), cast to a raw
            // pointer with its provenance. No `unsafe` is needed to call
            // a safe `fn` pointer; the soundness argument is this one.
            Callback::Context(func, ctx) => func(ctx),
        }
    }
}

enum Start {
    Run,
    Parked,
    Dropped,
    HandedOff,
}

/// A per-CPU list of scheduled tasklets: a lock-free LIFO of `'static`
/// tasklets linked through their `next` fields.
pub(crate) struct TaskletList {
    /// Most recently pushed tasklet, or null. Pushed with a CAS by any
    /// context; taken whole with a swap by the drain. No node is ever
    /// popped singly, so there is no ABA problem.
    pub(crate) head: AtomicPtr<Tasklet>,
}

impl TaskletList {
    loom_const_fn! {
        pub(crate) fn new() -> TaskletList {
            TaskletList {
                head: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    /// Links `t`. The caller owns `t`'s link (see `Tasklet::next`).
    pub(crate) fn push(&self, t: &'static Tasklet) {
        let node = ptr::from_ref(t).cast_mut();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            t.next.store(head, Ordering::Relaxed);
            // Release: publishes `t.next` to the drain's Acquire swap.
            // Acquire: pairs with the Release of the take this push follows
            // (if any), so the enqueue that then checks the pending bit sees
            // that drain pass's clearing of it (see `Runtime::enqueue`).
            match self.head.compare_exchange_weak(
                head,
                node,
                ordering!(
                    "tasklet_push_relaxed",
                    AcqRel,
                    Relaxed,
                    "tasklet_push_no_acquire",
                    Release
                ),
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Takes every tasklet off the list and runs it (transitions 3–8), in
    /// schedule order. `requeue` gets the tasklets another CPU's drain
    /// handed off to this one while they ran here (8b): they go back on
    /// this CPU's list for the next pass. Returns `true` if there were any.
    pub(crate) fn run(&self, mut requeue: impl FnMut(&'static Tasklet)) -> bool {
        // Acquire: pairs with the Release CAS in `push` (the links).
        // Release: pairs with the Acquire of a later `push` (see
        // `Runtime::enqueue`).
        let mut lifo = self.head.swap(
            ptr::null_mut(),
            ordering!(
                "tasklet_take_relaxed",
                AcqRel,
                Relaxed,
                "tasklet_take_no_release",
                Acquire
            ),
        );
        // Reverse into schedule order. Every node is ours: its count is
        // non-zero and nobody else links it until `start` changes its state.
        let mut fifo: *mut Tasklet = ptr::null_mut();
        while !lifo.is_null() {
            // SAFETY: non-null nodes come from `push`, which only links
            // `&'static Tasklet`s, so the pointer is valid forever and only
            // shared references are made from it.
            let t = unsafe { &*lifo };
            lifo = t.next.load(Ordering::Relaxed);
            t.next.store(fifo, Ordering::Relaxed);
            fifo = ptr::from_ref(t).cast_mut();
        }
        // For a fork made from a callback: what this run holds (`crate::fork`).
        let taken = crate::fork::TakenList::new();
        let _taken = taken.mark();
        let mut requeued = false;
        while !fifo.is_null() {
            // SAFETY: as above.
            let t: &'static Tasklet = unsafe { &*fifo };
            // Read the link first: once `start` changes the state, a
            // schedule on another CPU may link the tasklet elsewhere.
            fifo = t.next.load(Ordering::Relaxed);
            match t.start() {
                Start::Run => {
                    // A panicking callback must not leave the tasklet
                    // running for good, nor strand the rest of the taken
                    // list: clear RUN and link the rest back (the drain
                    // re-pends this list's vector when it unwinds).
                    let rest = fifo;
                    let guard = OnUnwind(|| {
                        // A hand-off during the run is this drain's to link,
                        // as in `finish`; the unwinding drain re-pends the
                        // list's vector.
                        let old = t.state.fetch_and(!(RUN | HANDOFF), Ordering::AcqRel);
                        if old & HANDOFF != 0 {
                            self.push(t);
                        }
                        let mut node = rest;
                        while !node.is_null() {
                            // SAFETY: as above; these nodes are still ours.
                            let u: &'static Tasklet = unsafe { &*node };
                            node = u.next.load(Ordering::Relaxed);
                            self.push(u);
                        }
                    });
                    taken.running(t, fifo);
                    t.callback.call();
                    taken.ran();
                    core::mem::forget(guard);
                    if t.finish() {
                        requeue(t);
                        requeued = true;
                    }
                }
                // The CPU running it links it again when the run ends.
                Start::HandedOff => {}
                Start::Parked | Start::Dropped => {}
            }
        }
        requeued
    }
}

#[cfg(all(test, not(bottomhalf_loom), feature = "std"))]
mod tests {
    use super::*;
    use crate::{Config, Host, Runtime};
    use core::sync::atomic::AtomicUsize;

    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);

    #[test]
    fn a_list_runs_in_schedule_order() {
        static ORDER: AtomicUsize = AtomicUsize::new(0);
        static AT: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
        fn mark(i: usize) {
            AT[i].store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        static T0: Tasklet = Tasklet::new(&RT2, || mark(0));
        static T1: Tasklet = Tasklet::new(&RT2, || mark(1));
        static T2: Tasklet = Tasklet::new(&RT2, || mark(2));
        static RT2: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        T2.schedule();
        T0.schedule();
        T1.schedule();
        assert!(RT2.drain().is_complete());
        let at: [usize; 3] = core::array::from_fn(|i| AT[i].load(Ordering::Relaxed));
        assert_eq!(at, [2, 3, 1]);
    }

    #[test]
    fn the_schedule_count_saturates_instead_of_overflowing() {
        static T: Tasklet = Tasklet::new(&RT, || {});
        // Put the count one below saturation, as if 2^20 - 2 schedules had
        // been coalesced; no list holds T, so no drain can see it.
        T.state.store(COUNT_MAX - 1, Ordering::Relaxed);
        assert!(!T.schedule());
        assert_eq!(T.state.load(Ordering::Relaxed), COUNT_MAX);
        assert!(!T.schedule());
        assert_eq!(
            T.state.load(Ordering::Relaxed),
            COUNT_MAX,
            "count overflowed into RUN"
        );
        T.state.store(0, Ordering::Relaxed);
    }

    #[test]
    fn hi_tasklets_run_before_normal_ones() {
        static RT3: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
        static ORDER: AtomicUsize = AtomicUsize::new(0);
        static HI_AT: AtomicUsize = AtomicUsize::new(0);
        static LO_AT: AtomicUsize = AtomicUsize::new(0);
        static LO: Tasklet = Tasklet::new(&RT3, || {
            LO_AT.store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed)
        });
        static HI: Tasklet = Tasklet::new_hi(&RT3, || {
            HI_AT.store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed)
        });
        LO.schedule();
        HI.schedule();
        assert!(RT3.drain().is_complete());
        assert_eq!(
            (HI_AT.load(Ordering::Relaxed), LO_AT.load(Ordering::Relaxed)),
            (1, 2)
        );
    }
}
