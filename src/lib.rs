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
//! | [`Tasklet`] | a `static` deferred function: coalescing, never concurrent, re-run if scheduled while running; `disable`/`enable`/`kill` |
//! | [`Mailbox`] | single-producer ring (on `heapless::spsc`) from a top half to its bottom half; drops counted |
//! | [`MpscMailbox`] | multi-producer ring whose producers never wait for each other |
//! | [`PerCpu`] | cache-padded per-CPU slots |
//! | [`Stats`] | per-CPU, per-vector counters, printed like `/proc/softirqs` |
//! | [`WakeWord`] | an async-signal-safe futex wake-up for idle threads |
//! | [`Workqueue`], [`Work`], [`DelayedWork`] | worker threads (feature `std`) for bottom halves that may sleep: coalescing intrusive items queued lock-free from any context, delayed work, per-CPU/ordered/`max_active` queues, `flush`, `cancel_sync`, panic isolation, a long-run watchdog |
//! | [`Signals`], [`SignalConfig`], [`SignalMode`], [`SigInfo`], [`Accept`], [`SignalHandle`], [`SignalCounts`], [`SignalError`] | the Unix-signal backend (feature `std`, Linux): top halves inside real signal handlers, shared (chained with tokio::signal / signal-hook) or exclusive (exact restore), lossless capture of real-time signals, sender filtering, nothing lost around uninstall, pinned per-CPU drain threads, a pollable `eventfd` |
//! | [`Backend`], [`Host`], [`BareMetal`] | where the current CPU, the clock and the drain wake-up come from; `Host` binds threads to CPU indices (feature `std`); `BareMetal` runs top halves in interrupt handlers, over the application's [`Board`] |
//!
//! # Contexts
//!
//! Every public function says where it may be called:
//! `Top-half safe: yes/no. Allocates: no/yes. Blocks: no/yes.`
//! A top half (interrupt handler, signal handler) may call only functions
//! marked top-half safe: [`Runtime::raise`], [`Tasklet::schedule`],
//! [`Producer::push`], [`MpscMailbox::push`] and the read-only accessors.
//!
//! # Features
//!
//! - `std` (default): the [`Host`] backend. Without it the crate is
//!   `#![no_std]` with no allocator and builds for `thumbv6m-none-eabi`
//!   (no compare-and-swap: read-modify-writes go through `portable-atomic`
//!   and the application's `critical-section` implementation) and
//!   `thumbv7m-none-eabi`.
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

#![no_std]
#![warn(missing_docs, unsafe_op_in_unsafe_fn, clippy::std_instead_of_core)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "std", test))]
extern crate std;

mod backend;
#[cfg(all(feature = "std", unix))]
mod fork;
mod mailbox;
mod percpu;
#[cfg(any(loom, all(feature = "std", target_os = "linux")))]
mod sigslot;
mod softirq;
mod stats;
mod sync;
mod tasklet;
mod wake;
#[cfg(feature = "std")]
mod workqueue;

#[cfg(all(feature = "std", target_os = "linux", not(loom)))]
pub use backend::{
    Accept, SigInfo, SignalConfig, SignalCounts, SignalError, SignalHandle, SignalMode, Signals,
};
pub use backend::{Backend, BareMetal, Board};
#[cfg(feature = "std")]
pub use backend::{CpuBinding, DrainThreads, Host};
pub use mailbox::{Consumer, Mailbox, MailboxError, MpscConsumer, MpscMailbox, Producer};
pub use percpu::{CpuOutOfRange, PerCpu};
/// The signal slot state machine, for the loom model
/// (`loom-tests/tests/signal_slot.rs`); not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub use sigslot::{Entered as LoomSigSlotEntered, SlotState as LoomSigSlot};
pub use softirq::{
    Config, DrainOutcome, Handler, RegisterError, Runtime, Vector, VectorOutOfRange, MAX_VECTORS,
};
pub use stats::Stats;
pub use tasklet::{Priority, Tasklet, TaskletKilled, TaskletRuntime};
pub use wake::WakeWord;
#[cfg(feature = "std")]
pub use workqueue::{
    current_cpu, DelayedWork, DelayedWorkRef, HighPriority, Work, WorkRef, Workqueue,
    WorkqueueBuilder, WorkqueueError, WorkqueueStats,
};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
