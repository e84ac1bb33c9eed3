//! Shared pieces of the loom models in `tests/`; see `README.md`.
//!
//! Everything here exists only under `--cfg bottomhalf_loom`: a `LoomCpu` backend
//! whose "CPUs" are modelled threads (and `LoomCpuWake`, whose kick wakes a
//! modelled drain thread), the model runner with the CI preemption bound,
//! an overlap detector (`InFlight`, a loom atomic touched only with
//! `Relaxed` RMWs) and bookkeeping helpers (`Seen`, `Count`) built on `std`
//! atomics.
//!
//! # Why `std` atomics for bookkeeping
//!
//! loom runs one modelled thread at a time, switching only at loom
//! operations, so a `std` atomic (or anything not instrumented by loom)
//! behaves like a global clock: what it records is the order of the
//! interleaving loom is exploring. That is exactly what "two runs overlap"
//! or "a run started after `kill` returned" mean. Bookkeeping must not add
//! synchronisation that the code under test does not provide, and `std`
//! atomics are invisible to loom's happens-before tracking, so they cannot
//! hide a missing Release/Acquire. Data whose *visibility* is under test
//! (what a top half wrote before `raise`/`schedule`/`push`) lives in loom
//! cells or loom atomics instead.
//!
//! # Per-iteration state
//!
//! Handlers and tasklet callbacks are plain `fn`s, so what they touch must
//! be reachable from a `static`. The models keep every runtime, tasklet,
//! mailbox and context in `loom::lazy_static!` items: loom creates them
//! afresh in each execution (iteration) and drops them at its end, and they
//! deref to `&'static`, which is what `Tasklet::new` and `schedule` need.
//! Each model touches all of its statics in the main thread before it
//! spawns anything, so the (Acquire) synchronisation loom adds on a lazy
//! static's first use adds no edge the spawned threads did not already
//! have.

#![cfg(bottomhalf_loom)]

use std::cell::Cell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicUsize};

use bottomhalf::{Backend, WakeWord};

pub use loom;

loom::thread_local! {
    /// The "CPU" the current modelled thread stands for.
    static CPU: Cell<usize> = Cell::new(0);
}

/// A backend whose CPUs are modelled threads: each thread says which CPU
/// it is with [`bind_cpu`] (default 0). No clock (the time budget is off:
/// only the restart budget bounds a drain) and no kick (models drain
/// explicitly).
#[derive(Debug)]
pub struct LoomCpu;

impl Backend for LoomCpu {
    fn current_cpu() -> usize {
        CPU.with(Cell::get)
    }

    fn now_ns() -> u64 {
        0
    }
}

/// [`LoomCpu`] whose `kick` wakes a modelled drain thread: it notifies
/// [`drain_wake`]`(cpu)`, the word the model's drain thread for `cpu`
/// sleeps on (the models cannot reach the runtime's own per-CPU word, which
/// is crate-private; the protocol is the same).
#[derive(Debug)]
pub struct LoomCpuWake;

impl Backend for LoomCpuWake {
    fn current_cpu() -> usize {
        LoomCpu::current_cpu()
    }

    fn now_ns() -> u64 {
        0
    }

    fn kick(cpu: usize, _level: bottomhalf::Level, _wake: &WakeWord) {
        drain_wake(cpu).notify();
    }
}

loom::lazy_static! {
    static ref DRAIN_WAKE: [WakeWord; 2] = [warm(WakeWord::new()), warm(WakeWord::new())];
}

/// The word CPU `cpu`'s modelled drain thread sleeps on (`cpu` < 2).
///
/// Created, per execution, by [`model`] in the main thread before the model
/// starts, so its lazy initialisation adds no happens-before edge.
pub fn drain_wake(cpu: usize) -> &'static WakeWord {
    &DRAIN_WAKE[cpu]
}

/// Moves both of a fresh word's counters off their initial values with one
/// `notify` and one `wait` that returns at once (its token is stale).
///
/// Why: loom stops a `SeqCst` load from returning a stale store only if that
/// store is `SeqCst` too, and loom's initial value of an atomic is not. So
/// in a fresh word, `notify`'s `SeqCst` load of `sleepers` could return the
/// initial 0 after a sleeper's `SeqCst` increment, and the sleeper's
/// `SeqCst` load of `seq` the initial value after `notify`'s increment:
/// both forbidden by C++20 (the loads are ordered after those RMWs in the
/// single total order), both reported by loom as a lost wake-up. After the
/// warm-up, the newest value of each counter was written by a `SeqCst`
/// RMW, and loom's rule applies. The warm-up runs before any modelled
/// thread exists and leaves the word as fresh as far as the protocol goes:
/// nobody sleeps, and tokens are taken afterwards.
fn warm(word: WakeWord) -> WakeWord {
    let stale = word.token();
    word.notify();
    word.wait(stale, Some(core::time::Duration::ZERO));
    word
}

/// Makes the current modelled thread CPU `cpu`.
pub fn bind_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// Spawns a modelled thread standing for CPU `cpu`.
pub fn spawn_on<F, T>(cpu: usize, f: F) -> loom::thread::JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: 'static,
{
    loom::thread::spawn(move || {
        bind_cpu(cpu);
        f()
    })
}

/// Runs `f` under loom with the preemption bound from
/// `LOOM_MAX_PREEMPTIONS`, or 2 (the CI bound) if it is not set, and prints
/// how many executions loom explored and how long it took (shown with
/// `--nocapture`).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let bound = builder.preemption_bound;
    let iterations = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = iterations.clone();
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Relaxed);
        let _ = &*DRAIN_WAKE;
        f();
    });
    let name = std::thread::current().name().unwrap_or("model").to_owned();
    eprintln!(
        "{name}: {} executions, preemption bound {bound:?}, {:.1?}",
        iterations.load(Relaxed),
        start.elapsed()
    );
}

/// An overlap detector: `enter` asserts nobody else is inside.
///
/// Its counter is a loom atomic touched only with `Relaxed` read-modify-
/// writes: an RMW always reads the latest value, so the count is exact, and
/// a `Relaxed` RMW synchronises nothing, so the detector cannot hide a
/// missing ordering. Being a loom operation, `enter` is also a point where
/// loom may switch threads, so a run can be "inside" while another starts.
#[derive(Debug)]
pub struct InFlight(loom::sync::atomic::AtomicUsize);

impl InFlight {
    /// An empty detector (create it inside the model).
    pub fn new() -> Self {
        InFlight(loom::sync::atomic::AtomicUsize::new(0))
    }

    /// Enters; panics (failing the model) if another caller is inside.
    pub fn enter(&self, what: &str) {
        let before = self.0.fetch_add(1, Relaxed);
        assert_eq!(before, 0, "{what}: two runs in flight at once");
    }

    /// Leaves.
    pub fn leave(&self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new()
    }
}

/// A set of small item ids (`0..32`), each of which may be recorded once.
#[derive(Debug, Default)]
pub struct Seen(AtomicU32);

impl Seen {
    /// An empty set.
    pub const fn new() -> Self {
        Seen(AtomicU32::new(0))
    }

    /// Records `item`; panics if it was recorded before (a duplicate).
    pub fn record(&self, item: u32) {
        let bit = 1u32 << item;
        let before = self.0.fetch_or(bit, SeqCst);
        assert_eq!(before & bit, 0, "item {item} delivered twice");
    }

    /// The recorded ids as a bit mask.
    pub fn mask(&self) -> u32 {
        self.0.load(SeqCst)
    }
}

/// A plain `std` counter for bookkeeping.
#[derive(Debug, Default)]
pub struct Count(AtomicUsize);

impl Count {
    /// Zero.
    pub const fn new() -> Self {
        Count(AtomicUsize::new(0))
    }

    /// Adds one; returns the value before.
    pub fn inc(&self) -> usize {
        self.0.fetch_add(1, SeqCst)
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, SeqCst);
    }

    /// The value.
    pub fn get(&self) -> usize {
        self.0.load(SeqCst)
    }
}
