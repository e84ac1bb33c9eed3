//! Top halves that do almost nothing, bottom halves that do the rest.
//!
//! `bottomhalf` is the machinery Linux has in `kernel/softirq.c`, as a
//! `no_std` library: an interrupt handler (or a Unix signal handler) records
//! that something happened and captures the data the device had ready; the
//! processing runs later, with interrupts enabled, in a bottom half. Every
//! top-half operation is allocation-free, lock-free and async-signal-safe.
//!
//! | type | what |
//! | --- | --- |
//! | [`Runtime`] | 32 softirq vectors with per-CPU pending masks, `raise`, the budgeted `drain`, the tasklet lists |
//! | [`Vector`], [`Config`], [`DrainOutcome`] | a vector number; the drain's restart and time budget; what a drain left behind |
//! | [`Level`] | a bottom-half priority level: each has its own pending masks, drain trigger and tasklet lists; a higher level preempts a lower one ([`Runtime`], "Levels") |
//! | [`Handlers`] | a `const` table of softirq handlers (plain, or with a `'static` context as [`Runtime::register_with`] takes), in flash, given by the [`Backend`] or [`Board`]; the runtime stays all zeros (`.bss`) |
//! | [`Tasklet`] | a `static` deferred function: coalescing, never concurrent, re-run if scheduled while running; `disable`/`enable`/`kill` |
//! | [`Mailbox`] | single-producer ring from a top half to its bottom half; its ends are handles an interrupt handler, RTIC task or tasklet holds without `unsafe`; drops counted |
//! | [`MpscMailbox`] | multi-producer ring whose producers never wait for each other |
//! | [`PerCpu`] | cache-padded per-CPU slots |
//! | [`Stats`] | per-CPU, per-vector counters, printed like `/proc/softirqs` |
//! | [`WakeWord`] | an async-signal-safe futex wake-up for idle threads |
//! | [`Work`] | a `static` deferred function (no_std): coalescing, never concurrent with itself, re-run if queued while running, `flush`/`cancel`/`cancel_sync`; queued to a runtime's bottom half ([`Runtime::queue_work`], [`Runtime::queue_work_on`]: it runs in the drain after the tasklets, like Linux's `WQ_BH` items) or to a [`Workqueue`] |
//! | [`DelayedWork`] | a [`Work`] with a timer (no_std): [`Runtime::queue_delayed_work`] keeps a pending deadline, [`Runtime::mod_delayed_work`] moves it; deadline order, a one-shot deadline hook per CPU and level ([`Board::set_timer`]), or any drain after the deadline; on a [`Workqueue`] too |
//! | [`Workqueue`] | worker threads (feature `std`) for bottom halves that may sleep: coalescing intrusive items queued lock-free from any context, delayed work, per-CPU/ordered/`max_active` queues, `flush`, `cancel_sync`, panic isolation, a long-run watchdog |
//! | [`Signals`], [`SignalConfig`], [`SignalMode`], [`SigInfo`], [`Accept`], [`SignalHandle`], [`SignalCounts`], [`SignalError`] | the Unix-signal backend (feature `std`, Linux): top halves inside real signal handlers, shared (chained with tokio::signal / signal-hook) or exclusive (exact restore), lossless capture of real-time signals, sender filtering, nothing lost around uninstall, pinned per-CPU drain threads, a pollable `eventfd` |
//! | [`Backend`], [`Host`], [`BareMetal`] | where the current CPU, the clock and the drain wake-up come from; `Host` binds threads to CPU indices (feature `std`); `BareMetal` runs top halves in interrupt handlers, over the application's [`Board`] |
//!
//! # Contexts
//!
//! Every public function says where it may be called:
//! `Top-half safe: yes/no. Allocates: no/yes. Blocks: no/yes.`
//! A top half (interrupt handler, signal handler) may call only functions
//! marked top-half safe, all listed below; everything else
//! (`drain`, spawning drain threads, `Tasklet::disable`, `Tasklet::kill`,
//! `Workqueue::flush`, `SignalHandle::uninstall`, …) is for normal context.
//!
//! Operations a top half makes:
//!
//! - [`Runtime`]: [`raise`](Runtime::raise), [`irq_enter`](Runtime::irq_enter),
//!   [`irq_exit`](Runtime::irq_exit) (at the very end of the handler: it
//!   drains when it closes the outermost one); also
//!   [`register`](Runtime::register) and
//!   [`register_with`](Runtime::register_with) (lock-free, though they
//!   belong in set-up); [`queue_work`](Runtime::queue_work),
//!   [`queue_work_on`](Runtime::queue_work_on),
//!   [`try_queue_work_on`](Runtime::try_queue_work_on).
//! - [`Work`]: [`cancel`](Work::cancel) of an instance queued in a bottom
//!   half (one CAS; a workqueue instance's cancel takes the pool's lock).
//! - [`Tasklet`]: [`schedule`](Tasklet::schedule),
//!   [`try_schedule`](Tasklet::try_schedule),
//!   [`disable_nosync`](Tasklet::disable_nosync),
//!   [`enable`](Tasklet::enable).
//! - [`Mailbox`]: [`take_producer`](Mailbox::take_producer),
//!   [`take_consumer`](Mailbox::take_consumer), [`split`](Mailbox::split);
//!   [`Producer`]: [`push`](Producer::push), [`try_push`](Producer::try_push),
//!   [`ready`](Producer::ready); [`Consumer`]: [`pop`](Consumer::pop) (a top
//!   half that consumes, for instance a higher-priority handler's replies).
//! - [`MpscMailbox`]: [`push`](MpscMailbox::push),
//!   [`try_push`](MpscMailbox::try_push),
//!   [`consumer`](MpscMailbox::consumer),
//!   [`take_consumer`](MpscMailbox::take_consumer); [`MpscConsumer`]:
//!   [`pop`](MpscConsumer::pop).
//! - [`WakeWord`]: [`notify`](WakeWord::notify),
//!   [`token`](WakeWord::token).
//! - [`Workqueue`] (feature `std`): `queue`, `try_queue`, `queue_on`,
//!   `queue_delayed`, `queue_delayed_on`.
//! - [`PidSet`] (feature `std`, Linux): `insert`, `remove` (though a
//!   handler has little reason to), `contains`.
//!
//! Read-only accessors, all top-half safe:
//!
//! - [`Runtime`]: [`cpus`](Runtime::cpus), [`config`](Runtime::config),
//!   [`pending`](Runtime::pending), [`vector_name`](Runtime::vector_name),
//!   [`stats`](Runtime::stats) and every counter of [`Stats`]
//!   ([`runs`](Stats::runs), [`coalesced`](Stats::coalesced),
//!   [`unhandled`](Stats::unhandled), [`panicked`](Stats::panicked),
//!   [`misuse`](Stats::misuse), [`raised`](Stats::raised),
//!   [`max_handler_ns`](Stats::max_handler_ns),
//!   [`restarts`](Stats::restarts),
//!   [`budget_exhausted`](Stats::budget_exhausted)).
//! - [`Tasklet`]: [`priority`](Tasklet::priority),
//!   [`is_disabled`](Tasklet::is_disabled),
//!   [`is_scheduled`](Tasklet::is_scheduled),
//!   [`is_killed`](Tasklet::is_killed), [`runs`](Tasklet::runs),
//!   [`coalesced`](Tasklet::coalesced).
//! - [`Mailbox`]: [`dropped`](Mailbox::dropped),
//!   [`refused`](Mailbox::refused), [`high_water`](Mailbox::high_water);
//!   [`Consumer`]: [`len`](Consumer::len), [`is_empty`](Consumer::is_empty).
//! - [`MpscMailbox`]: [`len`](MpscMailbox::len),
//!   [`is_empty`](MpscMailbox::is_empty),
//!   [`dropped`](MpscMailbox::dropped), [`refused`](MpscMailbox::refused),
//!   [`high_water`](MpscMailbox::high_water).
//! - [`PerCpu`]: [`cpus`](PerCpu::cpus), [`get`](PerCpu::get),
//!   [`try_get`](PerCpu::try_get), [`iter`](PerCpu::iter).
//! - Levels: [`Runtime::levels`], [`Runtime::pending_at`],
//!   [`Runtime::vector_level`], [`Level::new`], [`Level::try_new`],
//!   [`Level::index`], [`Tasklet::level`], [`Work::level`]; the `const`
//!   builders [`Tasklet::at_level`] and [`Work::at_level`].
//! - Values: [`Vector::new`], [`Vector::try_new`], [`Vector::index`],
//!   [`Priority::vector`], [`DrainOutcome::is_complete`], [`Config`]'s
//!   builders and getters, [`Handlers`]' builders,
//!   [`contains`](Handlers::contains) and
//!   [`is_empty`](Handlers::is_empty).
//! - [`Work`]'s `name`, `is_pending`, `is_running`, `is_canceling`, `runs`,
//!   `coalesced`; [`DelayedWork`]'s `from_work`, `work`,
//!   `is_timer_pending`.
//! - [`Runtime::queue_delayed_work`], [`Runtime::mod_delayed_work`] (and
//!   their `_on` siblings) and [`Runtime::timer_fired`].
//! - Feature `std`: [`Workqueue`]'s `name`, `cpu_ids`, `is_stopped`; the free function `current_cpu` (one thread-local
//!   load; see its docs for `dlopen`); [`DrainThreads`]' `len`,
//!   `is_empty`, `pinned`.
//! - Signal backend (feature `std`, Linux): [`SigInfo`]'s `value_isize`,
//!   `is_queued`, `is_from_kernel`, `sender_is_verified`;
//!   [`SignalHandle`]'s `signal`, `mode`, `counts`, `handled`, `captured`,
//!   `dropped`, `rejected`, `forwarded`, `lost`; [`SignalCounts`]' `total`;
//!   [`PidSet`]'s `len`, `is_empty`, `capacity`; `PidSetRef`'s `new` and
//!   `contains`; [`Accept`]'s `pid_set`; [`SignalConfig`]'s builders.
//!
//! The `const` constructors ([`Runtime::new`], [`Tasklet::new`] and its
//! siblings, [`Mailbox::new`], [`MpscMailbox::new`], [`PerCpu::new`],
//! [`WakeWord::new`], [`Work::new`], [`Work::with_context`],
//! `DelayedWork::new` and its `with_context` sibling, and with `std`
//! `PidSet::new`) are top-half safe too;
//! they are meant for `static`s.
//!
//! # Features
//!
//! - `std` (default): the [`Host`] backend, [`DrainThreads`], workqueues.
//!   Without it the crate is `#![no_std]` with no allocator.
//!
//! # Targets, systems, MSRV
//!
//! Without `std` the crate builds for `thumbv6m-none-eabi`,
//! `thumbv7m-none-eabi`, `thumbv8m.main-none-eabi`,
//! `riscv32i-unknown-none-elf`, `riscv32imac-unknown-none-elf`,
//! `aarch64-unknown-none` and `x86_64-unknown-none` (the test command
//! builds each). On a core without compare-and-swap (`thumbv6m`,
//! `riscv32i`) read-modify-writes come from `portable-atomic`, and **the
//! application picks its mode**, the crate never does: in the firmware's
//! `Cargo.toml`, either
//! `portable-atomic = { version = "1", default-features = false, features = ["critical-section"] }`
//! plus a `critical-section` implementation (for example `cortex-m`'s
//! `critical-section-single-core` feature), or
//! `portable-atomic = { version = "1", default-features = false, features = ["unsafe-assume-single-core"] }`
//! (single-core, privileged code only). With neither, the build stops
//! with portable-atomic's error naming both.
//!
//! With `std`:
//!
//! | system | idle threads sleep on | [`Signals`] backend | `fork()` repair |
//! | --- | --- | --- | --- |
//! | Linux | `futex` | yes | yes |
//! | macOS, iOS | `__ulock_wait` / `__ulock_wake` | no | yes |
//! | Windows | `WaitOnAddress` / `WakeByAddressAll` (clock: `QueryPerformanceCounter`) | no | no `fork` |
//! | other Unix | polling every 1 ms ([`WakeWord`]) | no | yes |
//! | anything else | `compile_error!`: use `default-features = false` | | |
//!
//! Workqueue CPU pinning and high-priority workers are Linux-only.
//!
//! MSRV: Rust 1.87 (`heapless` 0.9 needs it); the test command builds the
//! library with 1.87.0.
//!
//! # fork()
//!
//! (Feature `std`, Unix.) A child of `fork()` has one thread: the one that
//! called `fork`. Drains, tasklet runs and top halves that other threads of
//! the parent were in the middle of will never finish there. The crate
//! registers a `pthread_atfork` child handler when it is loaded (before
//! `main`), and the child is usable without any call from you:
//!
//! - **A drain** another parent thread was in does not make the child's
//!   [`Runtime::drain`] return [`DrainOutcome::Busy`] forever: the CPU's
//!   "draining" flag is cleared by the child handler (runtimes that have
//!   scheduled a tasklet) or by the child's first drain of that CPU (every
//!   runtime; `spawn_drain_threads` does it for every CPU before it starts
//!   the threads). Until then a raise on that CPU kicks even though the
//!   flag is set, so an event loop that waits for the event fd (or a drain
//!   thread) is woken by new work. Pending masks are inherited as they
//!   are, without a kick: what was raised and not yet taken runs in the
//!   child's next drain, so an event loop drains once before it first
//!   waits in the child.
//! - **A tasklet run** on another parent thread is over in the child: the
//!   tasklet is not running there, so [`Tasklet::disable`] and
//!   [`Tasklet::kill`] return, and it can be scheduled and runs again. The
//!   interrupted run is not repeated; whatever its callback had done before
//!   the fork is in the child's memory, as with any `fork`.
//! - **No tasklet is lost**: every tasklet registers itself (allocation-
//!   free, top-half safe) the first time it is scheduled, and the child
//!   handler links again, on the child's current CPU, each one that has
//!   pending schedules but is on no list — taken by a parent drain that
//!   had not run it yet, or half-way through a parent top half's
//!   `schedule`. A killed tasklet is not relinked.
//! - **Drain threads** are the parent's: [`DrainThreads`] dropped in the
//!   child (in any process other than the one that spawned them) forgets
//!   the threads instead of stopping and joining them, so it neither hangs
//!   nor panics. The child calls `spawn_drain_threads` again if it wants
//!   its own.
//! - **Signals** (the [`Signals`] backend): the child handler also resets
//!   what the signal backend holds per process (see [`Signals`]).
//! - **An [`MpscMailbox`]** repairs itself in the child (see "fork()" on
//!   [`MpscMailbox`]): a push that another parent thread had reserved and
//!   not finished is stepped over by `pop` and counted in `dropped()`, so
//!   everything queued at the fork is popped or counted and no slot stays
//!   taken; a consumer handle that another parent thread held does not
//!   keep [`MpscMailbox::consumer`] returning `ConsumerTaken`. A handle
//!   the forking thread holds keeps working in the child until another
//!   handle is taken there. The first push and the first `consumer` of
//!   each mailbox in the child take a slow path once.
//! - **A [`Mailbox`]** (single producer) has no half-done state: its ring
//!   publishes a push or a pop with one store. An end that another parent
//!   thread held stays out in the child (its handle is never dropped
//!   there, so `take_producer`/`take_consumer` give `None`), while the
//!   ends the forking thread holds keep working. Give a child only the single-
//!   producer mailboxes whose ends the forking thread owns.
//!
//! Not repaired: a fork made from a signal handler that interrupted a
//! top half of this crate on the forking thread itself (POSIX no longer
//! lists `fork` as async-signal-safe); [`Runtime::irq_enter`] nesting left
//! open by another parent thread (that CPU's `irq_exit` then does not
//! drain; call [`Runtime::drain`]). When the forking thread is itself
//! inside a drain (a bottom half that forks, usually to `exec`), that
//! drain goes on in the child and keeps its CPU (another drain of it,
//! nested or on a thread the child starts, returns
//! [`DrainOutcome::Busy`] and leaves the work to it), the tasklet it is
//! running (still running until its callback returns) and the rest of the
//! tasklet list it took (run once, by it); every other tasklet, of any
//! runtime, is repaired as above. An [`MpscMailbox`] push interrupted on the
//! forking thread itself (a fork from a signal handler, as above) is not
//! stepped over: the mailbox waits for it.
//!
//! ```
//! use bottomhalf::{Config, Host, Runtime, Tasklet};
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
//! static RUNS: AtomicU32 = AtomicU32::new(0);
//! static T: Tasklet = Tasklet::new(&RT, || { RUNS.fetch_add(1, Ordering::SeqCst); });
//!
//! let drains = RT.spawn_drain_threads().unwrap();
//! # #[cfg(target_os = "linux")] {
//! // SAFETY: the child calls only this crate, thread spawn and `_exit`.
//! let pid = unsafe { libc::fork() };
//! if pid == 0 {
//!     drop(drains); // the parent's threads: forgotten, not joined
//!     let own = RT.spawn_drain_threads().unwrap();
//!     T.schedule();
//!     while RUNS.load(Ordering::SeqCst) == 0 {
//!         std::thread::yield_now();
//!     }
//!     drop(own);
//!     // SAFETY: leaves the child without running the parent's exit hooks.
//!     unsafe { libc::_exit(0) };
//! }
//! let mut status = 0;
//! // SAFETY: waits for our own child.
//! unsafe { libc::waitpid(pid, &mut status, 0) };
//! assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
//! # }
//! ```
//!
//! # Example: an interrupt handler and its bottom half
//!
//! ```
//! use bottomhalf::{Config, Host, MpscMailbox, Runtime, Tasklet, Vector};
//! use std::sync::atomic::{AtomicU32, Ordering};
//!
//! static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
//!
//! // Data path: the top half captures, the bottom half processes.
//! static RX: MpscMailbox<u16, 32> = MpscMailbox::new();
//! static RX_TASKLET: Tasklet = Tasklet::new(&RT, || {
//!     let mut rx = RX.consumer().unwrap();
//!     while let Some(sample) = rx.pop() {
//!         TOTAL.fetch_add(u32::from(sample), Ordering::Relaxed);
//!     }
//! });
//! static TOTAL: AtomicU32 = AtomicU32::new(0);
//!
//! // A softirq vector for periodic work.
//! const TIMER: Vector = Vector::new(1);
//! static TICKS: AtomicU32 = AtomicU32::new(0);
//!
//! fn adc_irq(sample: u16) {
//!     // Top half: no locks, no allocation, a few atomic operations.
//!     let _ = RX.push(sample);
//!     RX_TASKLET.schedule();
//! }
//!
//! fn timer_irq() {
//!     RT.raise(TIMER);
//! }
//!
//! RT.register(TIMER, "TIMER", |_cpu| {
//!     TICKS.fetch_add(1, Ordering::Relaxed);
//! })
//! .unwrap();
//!
//! adc_irq(10);
//! timer_irq();
//! adc_irq(20);
//!
//! // Bottom half: at interrupt exit, in a drain thread, or in the main loop.
//! assert!(RT.drain().is_complete());
//! assert_eq!(TOTAL.load(Ordering::Relaxed), 30);
//! assert_eq!(TICKS.load(Ordering::Relaxed), 1);
//! println!("{}", RT.stats());
//! ```
//!
//! # Example: a firmware with two levels, delayed work and the guard
//!
//! A motor controller on one Cortex-M core: a motor-step work item at
//! level 1 must preempt a log flush at level 0 that is already running; a
//! delayed work item stops the motor when no command has arrived for
//! 50 ms (every command moves its deadline); thread mode updates the
//! controller's set-point, which the bottom halves read, with bottom
//! halves off. Each level's drain interrupt is a spare NVIC vector (see
//! "Levels" on [`Runtime`] for the priority set-up), and a timer compare
//! is the one-shot deadline hook. The hook is per level (each level's
//! drain keeps its own timers), and this board has one compare register
//! for both: it keeps each level's deadline and programs the earliest.
//! Here the board only records the pends and the deadlines, and the
//! interrupt handlers are called as functions, so the example runs as a
//! test.
//!
//! ```
//! use bottomhalf::{BareMetal, Board, Config, DelayedWork, DrainOutcome, Level, Runtime, Work};
//! use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
//! use core::time::Duration;
//!
//! const LOG: Level = Level::new(0);
//! const MOTOR: Level = Level::new(1);
//!
//! /// Pended drain interrupts, one bit per level (`NVIC::pend` on hardware).
//! static PENDED: AtomicU32 = AtomicU32::new(0);
//! /// The board's clock (a free-running 32-bit microsecond timer: no
//! /// 64-bit atomics on a Cortex-M3), each level's deadline, and the one
//! /// compare register, which holds the earliest (`u32::MAX`: disarmed).
//! static NOW_US: AtomicU32 = AtomicU32::new(0);
//! static DEADLINE_US: [AtomicU32; 2] = [AtomicU32::new(u32::MAX), AtomicU32::new(u32::MAX)];
//! static COMPARE_US: AtomicU32 = AtomicU32::new(u32::MAX);
//! struct Mcu;
//! impl Board for Mcu {
//!     fn pend_drain(_cpu: usize, level: Level) {
//!         PENDED.fetch_or(1 << level.index(), Ordering::SeqCst);
//!     }
//!     fn now_ns() -> u64 {
//!         u64::from(NOW_US.load(Ordering::SeqCst)) * 1_000
//!     }
//!     fn set_timer(_cpu: usize, level: Level, deadline_ns: u64) {
//!         // On hardware, in a critical section: the two levels' drains
//!         // call this, one preempting the other.
//!         let us = u32::try_from(deadline_ns / 1_000).unwrap_or(u32::MAX); // u64::MAX: disarm
//!         DEADLINE_US[level.index()].store(us, Ordering::SeqCst);
//!         let earliest = DEADLINE_US[0].load(Ordering::SeqCst).min(DEADLINE_US[1].load(Ordering::SeqCst));
//!         COMPARE_US.store(earliest, Ordering::SeqCst);
//!     }
//! }
//! static RT: Runtime<BareMetal<Mcu>, 1, 2> = Runtime::new(Config::DEFAULT);
//!
//! static SET_POINT: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
//! static STEPS: AtomicU32 = AtomicU32::new(0);
//! static STEP_INSIDE_FLUSH: AtomicBool = AtomicBool::new(false);
//!
//! static STEP: Work = Work::new("motor-step", |_| {
//!     // Reads the set-point the thread updates under the guard: never torn.
//!     let (a, b) = (SET_POINT[0].load(Ordering::Relaxed), SET_POINT[1].load(Ordering::Relaxed));
//!     assert_eq!(a, b);
//!     STEPS.fetch_add(1, Ordering::Relaxed);
//! })
//! .at_level(MOTOR);
//!
//! static FLUSH: Work = Work::new("log-flush", |_| {
//!     // A long flush. The motor timer fires in the middle of it...
//!     let steps = STEPS.load(Ordering::Relaxed);
//!     motor_timer_irq();
//!     // ...and its level-1 drain interrupt preempts us here.
//!     level_1_drain_irq();
//!     STEP_INSIDE_FLUSH.store(STEPS.load(Ordering::Relaxed) == steps + 1, Ordering::Relaxed);
//! });
//!
//! // #[interrupt] fn TIMER_0A(), priority 0x00: a top half.
//! fn motor_timer_irq() {
//!     RT.queue_work(&STEP); // pends level 1's drain interrupt
//! }
//! // No command for 50 ms: stop the motor (runs at level 0, in the drain).
//! static STOPPED: AtomicBool = AtomicBool::new(false);
//! static IDLE_STOP: DelayedWork = DelayedWork::new("idle-stop", |_| {
//!     STOPPED.store(true, Ordering::Relaxed);
//! });
//!
//! // #[interrupt] fn UART0(), priority 0x40: a top half (a command byte).
//! fn uart_irq() {
//!     RT.queue_work(&FLUSH); // pends level 0's drain interrupt
//!     RT.mod_delayed_work(&IDLE_STOP, Duration::from_millis(50)); // moves the deadline
//! }
//! // #[interrupt] fn TIMER_1A(), the compare match: a top half.
//! fn timer_compare_irq() {
//!     if NOW_US.load(Ordering::SeqCst) >= COMPARE_US.load(Ordering::SeqCst) {
//!         RT.timer_fired(); // pends the drain of the level with due timers
//!     }
//! }
//! // #[interrupt] fn GPIOD(), priority 0x80: level 1's drain.
//! fn level_1_drain_irq() {
//!     if PENDED.fetch_and(!(1 << 1), Ordering::SeqCst) & (1 << 1) != 0 {
//!         let _ = RT.drain_level(MOTOR);
//!     }
//! }
//! // #[interrupt] fn GPIOE(), priority 0xC0: level 0's drain, the lowest.
//! fn level_0_drain_irq() {
//!     if PENDED.fetch_and(!1, Ordering::SeqCst) & 1 != 0 {
//!         let _ = RT.drain_level(LOG);
//!     }
//! }
//!
//! // The UART interrupt queues the flush; its drain interrupt runs it, and
//! // the motor step preempts it.
//! uart_irq();
//! level_0_drain_irq();
//! assert!(STEP_INSIDE_FLUSH.load(Ordering::Relaxed));
//! assert_eq!((FLUSH.runs(), STEP.runs()), (1, 1));
//! // The drain filed the idle timer and armed the compare at +50 ms.
//! assert_eq!(COMPARE_US.load(Ordering::SeqCst), 50_000);
//!
//! // 30 ms later another command moves the deadline to 80 ms.
//! NOW_US.store(30_000, Ordering::SeqCst);
//! uart_irq();
//! level_0_drain_irq(); // the second flush, preempted by the second step
//! assert!(STEP_INSIDE_FLUSH.load(Ordering::Relaxed));
//! assert_eq!((FLUSH.runs(), STEP.runs()), (2, 2));
//! assert_eq!(COMPARE_US.load(Ordering::SeqCst), 80_000);
//! NOW_US.store(50_000, Ordering::SeqCst);
//! timer_compare_irq(); // not yet: the compare moved
//! assert!(!STOPPED.load(Ordering::Relaxed));
//! NOW_US.store(80_000, Ordering::SeqCst);
//! timer_compare_irq();
//! level_0_drain_irq();
//! assert!(STOPPED.load(Ordering::Relaxed));
//! assert_eq!(IDLE_STOP.runs(), 1);
//! assert_eq!(COMPARE_US.load(Ordering::SeqCst), u32::MAX, "disarmed");
//!
//! // Thread mode (`main`): a new set-point, with every bottom half off.
//! {
//!     let _bh_off = RT.bh_disable();
//!     SET_POINT[0].store(7, Ordering::Relaxed);
//!     motor_timer_irq(); // the timer fires mid-update...
//!     level_1_drain_irq(); // ...its drain finds bottom halves off
//!     assert_eq!(RT.drain_level(MOTOR), DrainOutcome::Disabled);
//!     SET_POINT[1].store(7, Ordering::Relaxed);
//! } // the last guard's drop pends the drains again
//! level_1_drain_irq();
//! assert_eq!(STEPS.load(Ordering::Relaxed), 3);
//! assert_eq!(RT.pending(0), 0);
//! ```

// Links to items that exist only with feature `std` (the signal backend:
// `std` on Linux). In a firmware's `cargo doc --no-default-features` they
// point at the section that says where the item lives, so the no_std docs
// have no broken links.
#![doc = ""]
#![cfg_attr(feature = "std", doc = "[`Host`]: crate::Host")]
#![cfg_attr(not(feature = "std"), doc = "[`Host`]: #features")]
#![cfg_attr(feature = "std", doc = "[`DrainThreads`]: crate::DrainThreads")]
#![cfg_attr(not(feature = "std"), doc = "[`DrainThreads`]: #features")]
//! [`DelayedWork`]: crate::DelayedWork
#![cfg_attr(feature = "std", doc = "[`Workqueue`]: crate::Workqueue")]
#![cfg_attr(not(feature = "std"), doc = "[`Workqueue`]: #features")]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`Signals`]: crate::Signals"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`Signals`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SignalConfig`]: crate::SignalConfig"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SignalConfig`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SignalMode`]: crate::SignalMode"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SignalMode`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SigInfo`]: crate::SigInfo"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SigInfo`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`Accept`]: crate::Accept"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`Accept`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SignalHandle`]: crate::SignalHandle"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SignalHandle`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SignalCounts`]: crate::SignalCounts"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SignalCounts`]: #features"
)]
#![cfg_attr(
    all(feature = "std", target_os = "linux", not(bottomhalf_loom)),
    doc = "[`SignalError`]: crate::SignalError"
)]
#![cfg_attr(
    not(all(feature = "std", target_os = "linux", not(bottomhalf_loom))),
    doc = "[`SignalError`]: #features"
)]
#![cfg_attr(
    all(feature = "std", any(bottomhalf_loom, target_os = "linux")),
    doc = "[`PidSet`]: crate::PidSet"
)]
#![cfg_attr(
    not(all(feature = "std", any(bottomhalf_loom, target_os = "linux"))),
    doc = "[`PidSet`]: #features"
)]
#![no_std]
#![warn(missing_docs, unsafe_op_in_unsafe_fn, clippy::std_instead_of_core)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "std", test))]
extern crate std;

// The `Host` backend reads the system's monotonic clock and the workqueues
// sleep on its wait-on-address call; both exist on Unix and Windows only.
#[cfg(all(feature = "std", not(any(unix, windows))))]
compile_error!(
    "bottomhalf's `std` feature (the Host backend, workqueues) supports Linux, macOS and \
     other Unix systems, and Windows; the Signals backend is Linux-only. On this target use \
     `default-features = false` with a `BareMetal` board or your own `Backend`."
);

mod backend;
mod fork;
mod level;
mod mailbox;
mod percpu;
#[cfg(all(feature = "std", any(bottomhalf_loom, target_os = "linux")))]
mod pidset;
#[cfg(any(bottomhalf_loom, all(feature = "std", target_os = "linux")))]
mod sigslot;
mod softirq;
mod stats;
mod sync;
mod tasklet;
mod wake;
mod work;
#[cfg(feature = "std")]
mod workqueue;

#[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
pub use backend::{
    Accept, SigInfo, SignalConfig, SignalCounts, SignalError, SignalHandle, SignalMode, Signals,
};
pub use backend::{Backend, BareMetal, Board};
#[cfg(feature = "std")]
pub use backend::{CpuBinding, DrainThreads, Host};
/// The `fork` state machines, for the loom models (`--cfg bottomhalf_loom` only).
#[cfg(bottomhalf_loom)]
#[doc(hidden)]
pub use fork::loom_fork as __loom_fork;
pub use level::{Level, LevelError, MAX_LEVELS};
pub use mailbox::{Consumer, Mailbox, MailboxError, MpscConsumer, MpscMailbox, Producer};
pub use percpu::{CpuOutOfRange, PerCpu};
#[cfg(all(feature = "std", any(bottomhalf_loom, target_os = "linux")))]
pub use pidset::{PidSet, PidSetError, PidSetRef};
/// The signal slot state machine, for the loom model
/// (`loom-tests/tests/signal_slot.rs`); not part of the API.
#[cfg(bottomhalf_loom)]
#[doc(hidden)]
pub use sigslot::{Entered as LoomSigSlotEntered, SlotState as LoomSigSlot};
pub use softirq::{
    BhGuard, Config, DrainOutcome, Handler, Handlers, RegisterError, Runtime, Vector, VectorError,
    VectorOutOfRange, BH_DISABLE_MAX, MAX_VECTORS,
};
pub use stats::{Misuse, Stats};
pub use tasklet::{Priority, Tasklet, TaskletKilled, TaskletRuntime};
pub use wake::WakeWord;
pub use work::{DelayedWork, Work, WorkqueueError};
#[cfg(feature = "std")]
pub use workqueue::{
    current_cpu, DelayedWorkRef, HighPriority, WorkRef, Workqueue, WorkqueueBuilder, WorkqueueStats,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
