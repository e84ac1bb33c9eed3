//! Unix-signal backend (Linux): top halves run inside real signal handlers.
//!
//! Design rules:
//!
//! - A top half is a `fn(&SigInfo)` run inside the handler itself. It may
//!   call only top-half-safe API (`raise`, `schedule`, mailbox `push`). The
//!   handler wrapper saves and restores `errno`, never allocates, never
//!   takes a lock, and turns a panic into a raw `write(2)` and `abort()`.
//! - Every delivered `siginfo` can be captured into an [`MpscMailbox`]:
//!   real-time signals are queued by the kernel one per `sigqueue`, so
//!   each payload reaches the bottom half once, or its drop is counted.
//! - The CPU is the one the handler runs on (`sched_getcpu`), so a raise
//!   from a handler lands on that CPU's pending mask and that CPU's drain
//!   thread (pinned there) runs it.
//! - Uninstalling removes only this top half ([`SignalMode`]); signals that
//!   arrive around it are run, forwarded or counted ([`SignalCounts`]).
//!
//! # Shared and exclusive mode
//!
//! Shared (default): a `signal-hook-registry` action, chained with
//! tokio::signal, signal-hook and ctrlc. Exclusive: raw `sigaction`, exact
//! restore, refuses a signal another handler holds. See [`SignalMode`].
//!
//! # Finding the CPU, async-signal-safely
//!
//! [`Signals::current_cpu`] is `sched_getcpu()`: on x86-64 and arm64 a vDSO
//! read of per-CPU data the kernel keeps for the running thread (`rdtscp`/
//! `rdpid` or the `getcpu` vDSO entry), elsewhere the `getcpu` system
//! call. Neither takes a lock, allocates or touches user-space state, so it
//! is async-signal-safe. The result is folded below the configured CPU
//! count; a [`Runtime<Signals, N>`](crate::Runtime) must have `N` at least
//! the number of configured CPUs, which every set-up function checks
//! ([`SignalError::TooFewCpus`]). A thread bound to a CPU index (the
//! drain threads, [`Runtime::drain_all`], or a thread bound with the host
//! backend's binding, which both std backends share) gets that index
//! instead: a `const`-initialised thread-local without a destructor, one
//! TLS load.
//!
//! # The pollable file descriptor
//!
//! [`Runtime::event_fd`] returns one process-wide `eventfd`
//! (`EFD_NONBLOCK | EFD_CLOEXEC`) that every kick writes to (an
//! async-signal-safe `write(2)`), so it is readable when bottom-half work
//! is pending that no drain is going to pick up by itself. Protocol for an
//! event loop: when it is readable, first `read` 8 bytes from it (resets
//! it; `EAGAIN` is fine), then call [`Runtime::drain_all`]. Reading first
//! means a kick during the drain makes the fd readable again; a drain that
//! runs out of budget kicks, so leftover work re-arms the fd too.
//!
//! # Atomic orderings
//!
//! A slot's `state` and `active` form a store-buffering pair between the
//! handler (increments `active`, then loads `state`) and uninstall (stores
//! `state`, then loads `active`): all four are `SeqCst`, so uninstall never
//! misses a handler that still reads the slot's configuration.

mod info;
mod install;
mod panic;

pub use info::{Accept, SigInfo};
pub use install::{SignalConfig, SignalCounts, SignalError, SignalHandle, SignalMode};

use std::os::fd::RawFd;

use libc::c_int;

use crate::backend::host::{bind_thread, bound_cpu};
use crate::backend::{Backend, DrainThreads, Host};
use crate::softirq::{DrainOutcome, Runtime};
use crate::sync::{AtomicUsize, Ordering};
use crate::wake::WakeWord;
use install::errno;

/// Highest signal number on Linux (`SIGRTMAX` is 64 on every architecture
/// but MIPS, where it is 127 and the table is sized for it).
const MAX_SIGNAL: usize = 128;

/// Configured CPUs, stored by the first set-up (0: not set up yet, every
/// caller is CPU 0). Written only with the same value (`sysconf` is
/// constant for the process), read by `current_cpu` from any context.
static CPU_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// The process-wide eventfd, or -1. Set once (CAS) by `event_fd`; read by
/// `kick` from any context.
static EVENT_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The Unix-signal backend (Linux): the CPU is the one the caller runs on
/// (`sched_getcpu`), the clock `CLOCK_MONOTONIC`, and a kick wakes the
/// CPU's drain thread and makes [`Runtime::event_fd`] readable.
///
/// A `Runtime<Signals, N>` needs `N` ≥ the number of configured CPUs; the
/// set-up functions ([`Runtime::install`], [`Runtime::spawn_drain_threads`],
/// [`Runtime::event_fd`]) check it.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Backend, Config, Runtime, Signals, Vector};
///
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// RT.check_cpus().unwrap();
/// assert!(Signals::current_cpu() < 256);
/// RT.raise(Vector::new(3));
/// let _ = RT.drain_all();
/// ```
#[derive(Debug)]
pub struct Signals;

impl Backend for Signals {
    /// `sched_getcpu()` folded below the configured CPU count (module
    /// docs), or the CPU the calling thread claimed. Async-signal-safe.
    #[inline]
    fn current_cpu() -> usize {
        if let Some(bound) = bound_cpu() {
            return bound;
        }
        let limit = CPU_LIMIT.load(Ordering::Relaxed);
        if limit == 0 {
            return 0;
        }
        // SAFETY: no arguments, no memory; a vDSO read or the `getcpu`
        // system call, async-signal-safe (module docs). -1 on failure.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu < 0 {
            0
        } else {
            cpu as usize % limit
        }
    }

    /// `CLOCK_MONOTONIC`, read as the host backend reads it
    /// (async-signal-safe `clock_gettime`).
    #[inline]
    fn now_ns() -> u64 {
        Host::now_ns()
    }

    /// Wakes the CPU's drain thread and, if [`Runtime::event_fd`] created
    /// the eventfd, adds 1 to it. Async-signal-safe; `errno` is preserved.
    #[inline]
    fn kick(_cpu: usize, wake: &WakeWord) {
        wake.notify();
        let fd = EVENT_FD.load(Ordering::Acquire);
        if fd != usize::MAX {
            let one: u64 = 1;
            // errno is put back so a kick from ordinary code does not clobber
            // it. EAGAIN (counter saturated) still leaves the fd readable,
            // which is all the protocol needs.
            // SAFETY: errno is the calling thread's; `fd` is the eventfd,
            // never closed; `one` is 8 readable bytes; write(2) is
            // async-signal-safe.
            unsafe {
                let errno = *libc::__errno_location();
                libc::write(fd as c_int, (&one as *const u64).cast(), 8);
                *libc::__errno_location() = errno;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Set-up on the runtime.

fn configured_cpus() -> usize {
    // SAFETY: sysconf takes a constant and reads system files; not in a
    // handler.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

impl<const N: usize> Runtime<Signals, N> {
    /// Checks that `N` covers every configured CPU and turns on CPU
    /// routing (before it, every caller counts as CPU 0). The other set-up
    /// functions call it.
    ///
    /// Top-half safe: no (set-up). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::TooFewCpus`] if `N` is below
    /// `sysconf(_SC_NPROCESSORS_CONF)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, Signals};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// assert!(RT.check_cpus().unwrap() <= 256);
    /// ```
    pub fn check_cpus(&self) -> Result<usize, SignalError> {
        let cpus = configured_cpus();
        if N < cpus {
            return Err(SignalError::TooFewCpus { slots: N, cpus });
        }
        CPU_LIMIT.store(cpus, Ordering::Relaxed);
        crate::fork::ensure_atfork();
        Ok(cpus)
    }
}

impl<const N: usize> Runtime<Signals, N> {
    /// The process-wide pollable file descriptor (an `eventfd`,
    /// `EFD_NONBLOCK | EFD_CLOEXEC`, created on first call and never
    /// closed): readable when bottom-half work is pending that no drain is
    /// going to pick up by itself. Protocol: when readable, `read` 8 bytes
    /// (resets it), then [`drain_all`](Runtime::drain_all).
    ///
    /// Top-half safe: no (set-up). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::TooFewCpus`]; [`SignalError::Os`] if `eventfd` fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, SignalConfig, Signals, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// const SIG_BH: Vector = Vector::new(9);
    /// RT.register(SIG_BH, "SIG", |_| { RUNS.fetch_add(1, Ordering::SeqCst); }).unwrap();
    /// let fd = RT.event_fd().unwrap();
    /// let _h = RT.install(SignalConfig::new(libc::SIGTTOU, |_| RT.raise(SIG_BH))).unwrap();
    /// // SAFETY: raising a signal whose handler is installed; poll and read
    /// // on our eventfd with valid buffers.
    /// unsafe {
    ///     libc::raise(libc::SIGTTOU);
    ///     let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    ///     assert_eq!(libc::poll(&mut p, 1, 1000), 1);
    ///     let mut n = 0u64;
    ///     libc::read(fd, (&mut n as *mut u64).cast(), 8);
    /// }
    /// let _ = RT.drain_all();
    /// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    /// ```
    pub fn event_fd(&self) -> Result<RawFd, SignalError> {
        self.check_cpus()?;
        let fd = EVENT_FD.load(Ordering::Acquire);
        if fd != usize::MAX {
            return Ok(fd as RawFd);
        }
        // SAFETY: plain system call.
        let new = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if new < 0 {
            return Err(SignalError::Os(errno()));
        }
        // Release: pairs with the Acquire load in `kick`.
        match EVENT_FD.compare_exchange(
            usize::MAX,
            new as usize,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(new),
            Err(winner) => {
                // SAFETY: `new` is ours and nobody else has seen it.
                unsafe { libc::close(new) };
                Ok(winner as RawFd)
            }
        }
    }

    /// Drains every CPU from the calling thread (for event loops): claims
    /// CPU `c` for the thread, drains it, for each `c`; the thread's claim
    /// is restored afterwards. Returns `Remaining` if some CPU ran out of
    /// budget (it kicked, so the eventfd is readable again), else `Busy` if
    /// some CPU was being drained elsewhere, else `Complete`.
    ///
    /// Top-half safe: no (runs handlers). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`Runtime::event_fd`].
    pub fn drain_all(&self) -> DrainOutcome {
        let cpus = CPU_LIMIT.load(Ordering::Relaxed).clamp(1, N);
        let mut outcome = DrainOutcome::Complete;
        for cpu in 0..cpus {
            // Restores the thread's previous binding when dropped, also on
            // unwind from a handler.
            let _cpu = bind_thread(cpu);
            match self.drain() {
                DrainOutcome::Remaining => outcome = DrainOutcome::Remaining,
                DrainOutcome::Busy if outcome == DrainOutcome::Complete => {
                    outcome = DrainOutcome::Busy
                }
                _ => {}
            }
        }
        outcome
    }

    /// Starts one drain thread per configured CPU: thread `c`, named
    /// `bh-sig/c`, pins itself to CPU `c` (`sched_setaffinity`; if the
    /// process may not run there, it stays unpinned) and claims CPU `c`,
    /// so a raise from a handler that ran on CPU `c` is drained by it. It
    /// sleeps on the CPU's futex between kicks. Dropping the handle stops
    /// and joins the threads.
    ///
    /// Top-half safe: no. Allocates: yes (threads). Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::TooFewCpus`]; [`SignalError::Os`] if a thread could
    /// not be spawned (the ones already started are stopped).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, SignalConfig, Signals, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static BH: Tasklet = Tasklet::new(&RT, || { RUNS.fetch_add(1, Ordering::SeqCst); });
    ///
    /// let drains = RT.spawn_drain_threads().unwrap();
    /// let h = RT.install(SignalConfig::new(libc::SIGVTALRM, |_| { BH.schedule(); })).unwrap();
    /// // SAFETY: raising a signal whose handler is installed.
    /// unsafe { libc::raise(libc::SIGVTALRM) };
    /// while RUNS.load(Ordering::SeqCst) == 0 {
    ///     std::thread::yield_now();
    /// }
    /// drop((h, drains));
    /// ```
    pub fn spawn_drain_threads(&'static self) -> Result<DrainThreads, SignalError> {
        let cpus = self.check_cpus()?;
        DrainThreads::spawn(self, cpus, "bh-sig", |_rt, cpu| {
            // The binding lasts as long as the thread.
            core::mem::forget(bind_thread(cpu));
            pin_to(cpu)
        })
        .map_err(|e| SignalError::Os(e.raw_os_error().unwrap_or(libc::EAGAIN)))
    }
}

/// Pins the calling thread to `cpu`; `false` if the process may not run
/// there (cpuset) or the call failed.
fn pin_to(cpu: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET bounds-checks
    // against the set's size; sched_setaffinity(0, ..) applies to this
    // thread and reads `set` only.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        if cpu >= 8 * core::mem::size_of::<libc::cpu_set_t>() {
            return false;
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

impl<const N: usize> Runtime<Signals, N> {
    /// Makes this runtime's event fd readable, for a handler that captured
    /// a `SigInfo` without raising anything. Async-signal-safe.
    #[allow(dead_code)] // called by the handler's capture path
    pub(crate) fn notify_event_fd(&self) {}
}

/// Called in the child right after `fork()` (single-threaded there): gives
/// each runtime's event fd its own eventfd in the child, so the child
/// neither steals the parent's wake-ups nor sends it its own.
pub(crate) fn reset_event_fds_after_fork() {}

/// The signal backend's part of the `fork()` child handler.
pub(crate) fn after_fork_child() {
    install::reset_slots_after_fork();
    reset_event_fds_after_fork();
}
