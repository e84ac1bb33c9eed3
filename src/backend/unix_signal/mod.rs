//! Unix-signal backend (Linux): top halves run inside real signal handlers.
//!
//! What users need is on the public items, where rustdoc renders it: the
//! design and the CPU rules and `fork()` on [`Signals`], the modes and
//! uninstall on [`SignalMode`], the event-fd protocol on
//! [`Runtime::event_fd`], the drain threads' signal mask on
//! [`Runtime::spawn_drain_threads`].
//!
//! # Atomic orderings
//!
//! A slot's `state` and `active` form a store-buffering pair between the
//! handler (increments `active`, then loads `state`) and uninstall (stores
//! `state`, then loads `active`): all four are `SeqCst`, so uninstall never
//! misses a handler that still reads the slot's configuration.
//!
//! A runtime's event-fd slot number (kept in its wake words) is stored by
//! `event_fd` and loaded by every kick, both `SeqCst`, and `event_fd`
//! makes a new fd readable right after storing the number: a kick that
//! still read "no fd" comes before the store in the single total order, so
//! its work was pending before the fd's first readiness, which the event
//! loop's first drain sees.

mod info;
mod install;
mod panic;

pub use info::{Accept, SigInfo};
pub use install::{SignalConfig, SignalCounts, SignalError, SignalHandle, SignalMode};

use std::os::fd::BorrowedFd;

use libc::c_int;

use crate::backend::host::{bind_thread, bound_cpu, BindingKind};
use crate::backend::{Backend, DrainThreads, Host};
use crate::softirq::{DrainOutcome, Runtime};
use crate::sync::{AtomicU32, AtomicUsize, Ordering};
use crate::wake::WakeWord;
use install::errno;

/// Highest signal number on Linux (`SIGRTMAX` is 64 on every architecture
/// but MIPS, where it is 127 and the table is sized for it).
const MAX_SIGNAL: usize = 128;

/// Configured CPUs, stored by the first set-up (0: not set up yet, every
/// caller is CPU 0). Written only with the same value (`sysconf` is
/// constant for the process), read by `current_cpu` from any context.
static CPU_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// How many runtimes of a process can have an event fd.
const MAX_EVENT_FDS: usize = 64;

/// "No descriptor" in [`EVENT_FDS`].
const NO_FD: u32 = u32::MAX;

/// The event fds, one per runtime that asked for one: entry `i` is the
/// descriptor of the runtime whose wake words hold slot `i + 1`, or
/// `NO_FD`. Entries are claimed (`EVENT_FDS_USED`) and written by
/// `event_fd`, rewritten only by the fork child handler, read by every
/// kick and capture from any context.
static EVENT_FDS: [AtomicU32; MAX_EVENT_FDS] = [const { AtomicU32::new(NO_FD) }; MAX_EVENT_FDS];

/// Entries of [`EVENT_FDS`] handed out so far (never above
/// `MAX_EVENT_FDS`).
static EVENT_FDS_USED: AtomicUsize = AtomicUsize::new(0);

/// Adds 1 to the event fd in slot `slot` (plus one; 0: none).
/// Async-signal-safe; `errno` is preserved; never panics.
#[inline]
fn signal_event_fd(slot: u32) {
    let Some(entry) = (slot as usize)
        .checked_sub(1)
        .and_then(|i| EVENT_FDS.get(i))
    else {
        return;
    };
    // Relaxed: the number was stored before the slot was published (SeqCst
    // store of the slot, see "Atomic orderings").
    let fd = entry.load(Ordering::Relaxed);
    if fd == NO_FD {
        return;
    }
    let one: u64 = 1;
    // errno is put back so a kick from ordinary code or a handler does not
    // clobber it. EAGAIN (counter saturated) still leaves the fd readable,
    // which is all the protocol needs.
    // SAFETY: errno is the calling thread's; `fd` is an eventfd of ours,
    // never closed (after fork it is replaced in place by `dup3`); `one` is
    // 8 readable bytes; write(2) is async-signal-safe.
    unsafe {
        let saved = *libc::__errno_location();
        libc::write(fd as c_int, (&one as *const u64).cast(), 8);
        *libc::__errno_location() = saved;
    }
}

/// The Unix-signal backend (Linux): the CPU is the one the caller runs on
/// (`sched_getcpu`), the clock `CLOCK_MONOTONIC`, and a kick wakes the
/// CPU's drain thread and makes the runtime's [`Runtime::event_fd`]
/// readable.
///
/// A `Runtime<Signals, N>` needs `N` ≥ the number of configured CPUs; the
/// set-up functions ([`Runtime::install`], [`Runtime::spawn_drain_threads`],
/// [`Runtime::event_fd`]) check it.
///
/// How it works:
///
/// - A top half is a `fn(&SigInfo)` run inside the handler itself. It may
///   call only top-half-safe API ([`Runtime::raise`],
///   [`Tasklet::schedule`](crate::Tasklet::schedule),
///   [`MpscMailbox::push`](crate::MpscMailbox::push), …: the full list is in the
///   [crate docs, "Contexts"](crate#contexts)). The handler wrapper saves
///   and restores `errno`, never allocates, never takes a lock, and turns
///   a panic into a raw `write(2)` and `abort()`.
/// - Every delivered `siginfo` can be captured into an [`MpscMailbox`](crate::MpscMailbox):
///   real-time signals are queued by the kernel one per `sigqueue`, so
///   each payload reaches the bottom half once, or its drop is counted.
/// - The CPU is the one the handler runs on (`sched_getcpu`), so a raise
///   from a handler lands on that CPU's pending mask and that CPU's drain
///   thread (pinned there) runs it.
/// - Uninstalling removes only this top half ([`SignalMode`]); signals that
///   arrive around it are run, forwarded or counted ([`SignalCounts`]).
///
/// Shared mode (default) chains with tokio::signal, signal-hook and ctrlc
/// through `signal-hook-registry`; exclusive mode uses raw `sigaction`,
/// restores exactly and refuses a signal another handler holds: see
/// [`SignalMode`]. Drain threads start with the asynchronous signals
/// blocked ([`Runtime::spawn_drain_threads`]); event loops wait on
/// [`Runtime::event_fd`].
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
///
/// # Which CPU a top half runs on
///
/// [`Signals::current_cpu`] is `sched_getcpu()`: on x86-64 and arm64 a vDSO
/// read of per-CPU data the kernel keeps for the running thread (`rdtscp`/
/// `rdpid` or the `getcpu` vDSO entry), elsewhere the `getcpu` system
/// call. Neither takes a lock, allocates or touches user-space state, so it
/// is async-signal-safe. The result is folded below the configured CPU
/// count; a [`Runtime<Signals, N>`](crate::Runtime) must have `N` at least
/// the number of configured CPUs, which every set-up function checks
/// ([`SignalError::TooFewCpus`]).
///
/// A thread that claimed a CPU slot *for this backend* (the drain threads,
/// [`Runtime::drain_all`] while it drains) gets that slot instead: a
/// `const`-initialised thread-local without a destructor, one TLS load,
/// also folded below the configured CPU count. The host backend's binding
/// ([`Runtime::bind_current_thread`](crate::Runtime::bind_current_thread))
/// is a different thread-local that this backend never reads: a `Host`
/// drain thread bound to index 7 that takes a signal raises on the CPU the
/// kernel says it runs on, which a `bh-sig` drain thread and `drain_all`
/// serve. So a top half lands on a drained slot on every thread, and the
/// index it computes is never out of range.
///
/// # `fork()`
///
/// In the child (one thread), the crate's `pthread_atfork` child handler
/// forgets the handlers that were running on the parent's other threads
/// and any install or uninstall another thread was in the middle of, so
/// uninstall
/// and install in the child never wait for them. An uninstall that was in
/// progress is finished in the child (the slot is free; in exclusive mode
/// the saved disposition is put back if bottomhalf's handler is still in
/// force); an install that was in progress never returned a handle there,
/// so its slot is freed the same way. If that install had registered its
/// registry action already, the action stays registered in the child
/// (there is no handle to remove it) and runs nothing: its identity is
/// not the next install's. If the fork came before an exclusive install
/// saved the disposition it replaced, bottomhalf's handler stays in force
/// in the child and is left behind ("An exclusive handler left behind" on
/// [`SignalMode`](SignalMode#an-exclusive-handler-left-behind)): a shared
/// install there takes it as the registry's previous handler, and the top
/// half still runs once per delivery. `signal-hook-registry` counts the
/// handlers inside it in the same way, and a child forked while one of
/// them ran, or while a thread was inside `register`/`unregister` (which
/// hold its write lock), would wait forever in its next `register` or
/// `unregister`: in that case a shared-mode slot is uninstalled in the
/// child without calling the registry (its action stays registered and
/// does nothing), and shared-mode installs in that child are refused with
/// [`SignalError::RegistryStranded`]. The signals the registry already
/// holds then stay with it (exclusive mode refuses them: `HeldByOther`);
/// other signals can be taken in exclusive mode. What bottomhalf cannot
/// see: a handler of *another* registry user running at the fork strands
/// the registry just the same.
///
/// The runtime's event fd is replaced in the child too (same descriptor
/// number, a fresh eventfd): see "`fork()`" on [`Runtime::event_fd`].
#[derive(Debug)]
pub struct Signals;

impl Backend for Signals {
    /// `sched_getcpu()`, or the CPU slot the calling thread claimed for
    /// this backend, folded below the configured CPU count (see "Which CPU
    /// a top half runs on" on [`Signals`]).
    /// The host backend's binding is not read. Async-signal-safe.
    #[inline]
    fn current_cpu() -> usize {
        let limit = CPU_LIMIT.load(Ordering::Relaxed);
        if limit == 0 {
            return 0;
        }
        if let Some(bound) = bound_cpu(BindingKind::Signals) {
            return bound % limit;
        }
        // SAFETY: no arguments, no memory; a vDSO read or the `getcpu`
        // system call, async-signal-safe (`Signals` docs). -1 on failure.
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

    /// Wakes the CPU's drain thread and, if the runtime has an event fd
    /// ([`Runtime::event_fd`]), adds 1 to it. Async-signal-safe; `errno`
    /// is preserved. The CPU's one drain thread drains every level,
    /// highest first, so the level does not choose what to wake.
    #[inline]
    fn kick(_cpu: usize, _level: crate::Level, wake: &WakeWord) {
        wake.notify();
        signal_event_fd(wake.event_slot());
    }

    /// Claims CPU slot `cpu` for the calling thread during `f`, as
    /// [`Runtime::drain_all`] does for each slot: an event-loop thread
    /// that flushes a work item pending on another slot drains that slot
    /// itself (it would otherwise wait for ever for its own `drain_all`).
    #[inline]
    fn run_as_cpu<R>(cpu: usize, f: impl FnOnce() -> R) -> Option<R> {
        let _cpu = bind_thread(BindingKind::Signals, cpu);
        Some(f())
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

impl<const N: usize, const L: usize> Runtime<Signals, N, L> {
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

/// The synchronous faults: never blocked in drain threads (a blocked fault
/// the thread raises itself kills the process).
const SYNCHRONOUS_FAULTS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Blocks every asynchronous signal in the calling thread until dropped,
/// then restores the mask it had.
struct BlockAsyncSignals {
    previous: libc::sigset_t,
}

impl BlockAsyncSignals {
    fn new() -> Result<BlockAsyncSignals, SignalError> {
        // SAFETY: sigset_t is plain data and sigfillset/sigdelset fill it
        // before use; pthread_sigmask reads `set` and writes `previous`,
        // both valid for the call, and changes only this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            let mut previous: libc::sigset_t = core::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in SYNCHRONOUS_FAULTS {
                libc::sigdelset(&mut set, sig);
            }
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut previous) {
                0 => Ok(BlockAsyncSignals { previous }),
                e => Err(SignalError::Os(e)),
            }
        }
    }
}

impl Drop for BlockAsyncSignals {
    fn drop(&mut self) {
        // SAFETY: `previous` is the mask pthread_sigmask gave us; it only
        // changes this thread's mask. Signals that arrived meanwhile for
        // this thread are delivered now.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, core::ptr::null_mut()) };
    }
}

impl<const N: usize, const L: usize> Runtime<Signals, N, L> {
    /// This runtime's pollable file descriptor: an `eventfd`
    /// (`EFD_NONBLOCK | EFD_CLOEXEC`), one per runtime, created on the
    /// first call (and readable at once, so the event loop's first drain
    /// picks up work raised before it) and never closed.
    ///
    /// Every kick of the runtime (bottom-half work that no drain is going
    /// to pick up by itself: a raise or schedule on a CPU whose drain is
    /// not running, a drain that ran out of budget) and every capture of a
    /// [`SigInfo`] into a mailbox ([`SignalConfig::capture`]) adds 1 to it,
    /// an async-signal-safe `write(2)` with `errno` preserved, so it is
    /// readable whenever the runtime has work for the event loop.
    ///
    /// # Protocol for an event loop
    ///
    /// When the fd is readable: first
    /// [`clear_event_fd`](Runtime::clear_event_fd) (reads the counter,
    /// resetting it), then [`drain_all`](Runtime::drain_all), then pop the
    /// capture mailboxes. Clearing first means a kick or capture during the
    /// drain makes the fd readable again; a drain that runs out of budget
    /// kicks, so leftover work re-arms it too. With tokio, clear the
    /// `AsyncFd`'s readiness (`guard.clear_ready()`) before
    /// `clear_event_fd`, for the same reason (example below).
    ///
    /// Returned borrowed for `'static`: it cannot be closed through it (a
    /// `File` or `OwnedFd` made from it would close the runtime's fd).
    /// Hand it to `poll`, `epoll`, or tokio's `AsyncFd`.
    ///
    /// # `fork()`
    ///
    /// A child inherits the parent's eventfds: the same kernel object, so
    /// without care the child's kicks would wake the parent's event loop
    /// and the child's reads would steal the parent's wake-ups. The
    /// crate's `pthread_atfork` child handler gives each runtime's event fd
    /// a fresh eventfd in the child, `dup3`'d onto the same descriptor
    /// number (a [`BorrowedFd`] the child holds stays valid as a number).
    /// The child's starts readable: it inherits whatever work was pending,
    /// and the inherited fd's state cannot say (the parent may write or
    /// read the shared object until the handler replaces it), so the
    /// child's event loop drains once, maybe for nothing. Only
    /// async-signal-safe system calls. A process that does not go through
    /// the C library's `fork()` (a raw `clone`) skips the handler.
    ///
    /// The same number then names a *different* eventfd. A tokio runtime
    /// does not survive `fork` anyway (its threads and its `epoll` instance
    /// are the parent's), and an `AsyncFd` registered in the parent refers
    /// to the parent's eventfd: in the child, build a new tokio runtime and
    /// register the fd again there.
    ///
    /// **Work items and delayed work in such an event loop.** The eventfd
    /// is written when a slot's drain is kicked (a raise, a queue), not
    /// when a timer's deadline passes: give the wait a timeout until
    /// [`Runtime::next_timer_deadline`], and `drain_all` fires the due
    /// timers of every slot. `Work::flush` and `cancel_sync` on this
    /// thread wait for an item pending on another slot by draining that
    /// slot themselves (`Backend::run_as_cpu`), as `drain_all` would.
    ///
    /// Top-half safe: no (set-up). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::TooFewCpus`]; [`SignalError::Os`] if `eventfd` fails,
    /// or with `EMFILE` if 64 runtimes of this process already have one.
    ///
    /// # Examples
    ///
    /// With `poll`:
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, SignalConfig, Signals, Vector};
    /// use std::os::fd::AsRawFd;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// const SIG_BH: Vector = Vector::new(9);
    /// RT.register(SIG_BH, "SIG", |_| { RUNS.fetch_add(1, Ordering::SeqCst); }).unwrap();
    /// let fd = RT.event_fd().unwrap();
    /// let _h = RT.install(SignalConfig::new(libc::SIGTTOU, |_| RT.raise(SIG_BH))).unwrap();
    /// // SAFETY: raising a signal whose handler is installed.
    /// unsafe { libc::raise(libc::SIGTTOU) };
    /// // The event loop: wait until readable, clear, drain.
    /// let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    /// // SAFETY: one valid pollfd for the duration of the call.
    /// assert_eq!(unsafe { libc::poll(&mut p, 1, 1000) }, 1);
    /// assert!(RT.clear_event_fd());
    /// let _ = RT.drain_all();
    /// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    /// assert!(!RT.clear_event_fd(), "nothing new since");
    /// ```
    ///
    /// With tokio's `AsyncFd`: the whole loop, a top half that raises a
    /// softirq and captures its `SigInfo`, and the event loop that waits,
    /// clears, drains and pops. (tokio 1.53.3 and later deprecate
    /// `AsyncFd::new` as unsound for a borrowed fd; the `unsafe`
    /// constructor `register_with_interest` states the fd's lifetime
    /// instead.)
    ///
    /// ```
    /// use bottomhalf::{Config, MpscMailbox, Runtime, SigInfo, SignalConfig, Signals, Vector};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use tokio::io::{unix::AsyncFd, Interest};
    ///
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static INFOS: MpscMailbox<SigInfo, 16> = MpscMailbox::new();
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// const SIG_BH: Vector = Vector::new(9);
    ///
    /// #[tokio::main(flavor = "current_thread")]
    /// async fn main() -> std::io::Result<()> {
    ///     RT.register(SIG_BH, "SIG", |_| { RUNS.fetch_add(1, Ordering::Relaxed); }).unwrap();
    ///     let fd = RT.event_fd().unwrap();
    ///     // SAFETY: the runtime never closes its event fd, and in this
    ///     // process the number always names the same eventfd (only a child
    ///     // of fork() gets a new one there, and this tokio runtime is not
    ///     // used in a child).
    ///     let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
    ///     let cfg = SignalConfig::new(libc::SIGUSR1, |_| RT.raise(SIG_BH)).capture(&INFOS);
    ///     let _handle = RT.install(cfg).unwrap();
    ///
    ///     // SAFETY: raising a signal whose handler is installed.
    ///     unsafe { libc::raise(libc::SIGUSR1) };
    ///
    ///     let mut seen = 0;
    ///     while seen == 0 {
    ///         let mut guard = afd.readable().await?;
    ///         guard.clear_ready(); // before reading the counter: nothing is missed
    ///         RT.clear_event_fd();
    ///         let _ = RT.drain_all(); // runs SIG_BH
    ///         let mut rx = INFOS.consumer().expect("only the event loop pops");
    ///         while let Some(info) = rx.pop() {
    ///             assert_eq!(info.signal, libc::SIGUSR1);
    ///             seen += 1;
    ///         }
    ///     }
    ///     assert_eq!(RUNS.load(Ordering::Relaxed), 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn event_fd(&self) -> Result<BorrowedFd<'static>, SignalError> {
        self.check_cpus()?;
        let first = &self.cpu_state(0).wake;
        let mut slot = first.event_slot();
        if slot == 0 {
            slot = self.create_event_fd()?;
        }
        let fd = EVENT_FDS
            .get(slot as usize - 1)
            .map_or(NO_FD, |e| e.load(Ordering::Relaxed));
        if fd == NO_FD {
            // Only after a fork whose child could not replace the fd.
            return Err(SignalError::Os(libc::EBADF));
        }
        // SAFETY: `fd` is an eventfd this crate created and never closes
        // (after fork it is replaced in place by `dup3`, so the number
        // stays open), so it is open for 'static.
        Ok(unsafe { BorrowedFd::borrow_raw(fd as c_int) })
    }

    /// Creates this runtime's eventfd and publishes its slot in every wake
    /// word; returns the slot (plus one). Two racing callers: one slot
    /// wins, the loser's fd is closed and its table entry left empty.
    #[cold]
    fn create_event_fd(&self) -> Result<u32, SignalError> {
        // SAFETY: plain system call.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(SignalError::Os(errno()));
        }
        let close = || {
            // SAFETY: `fd` is ours and nobody else has seen it.
            unsafe { libc::close(fd) };
        };
        let Ok(index) = EVENT_FDS_USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < MAX_EVENT_FDS).then_some(n + 1)
        }) else {
            close();
            return Err(SignalError::Os(libc::EMFILE));
        };
        EVENT_FDS[index].store(fd as u32, Ordering::Relaxed);
        let mine = index as u32 + 1;
        let first = &self.cpu_state(0).wake;
        // SeqCst, as every access to the slot ("Atomic orderings"); the
        // CAS picks one winner among racing set-ups.
        let slot = match first.claim_event_slot(mine) {
            Ok(()) => mine,
            Err(winner) => {
                EVENT_FDS[index].store(NO_FD, Ordering::Relaxed);
                close();
                return Ok(winner);
            }
        };
        for cpu in 1..N {
            self.cpu_state(cpu).wake.set_event_slot(slot);
        }
        // Readable at once: work raised before the slot was visible to its
        // kick is pending, and the first drain must run it.
        signal_event_fd(slot);
        Ok(slot)
    }

    /// Reads and resets this runtime's event fd counter; `true` if it was
    /// readable. Call it before [`drain_all`](Runtime::drain_all) when the
    /// fd polls readable ("Protocol for an event loop" on
    /// [`event_fd`](Runtime::event_fd)). Without an event fd, `false`.
    ///
    /// Top-half safe: no (meant for the event loop). Allocates: no.
    /// Blocks: no (the fd is non-blocking).
    ///
    /// # Examples
    ///
    /// See [`Runtime::event_fd`].
    pub fn clear_event_fd(&self) -> bool {
        let Some(first) = (N > 0).then(|| &self.cpu_state(0).wake) else {
            return false;
        };
        let slot = first.event_slot() as usize;
        let Some(entry) = slot.checked_sub(1).and_then(|i| EVENT_FDS.get(i)) else {
            return false;
        };
        let fd = entry.load(Ordering::Relaxed);
        if fd == NO_FD {
            return false;
        }
        let mut count = 0u64;
        // SAFETY: reading 8 bytes into `count` from our non-blocking
        // eventfd (never closed); EAGAIN when it was not readable.
        let n = unsafe { libc::read(fd as c_int, (&mut count as *mut u64).cast(), 8) };
        n == 8 && count != 0
    }

    /// Makes this runtime's event fd readable, for a handler that captured
    /// a `SigInfo` (which raises nothing by itself). Does nothing if the
    /// runtime has no event fd. Async-signal-safe, `errno` preserved,
    /// never panics.
    #[inline]
    #[allow(dead_code)] // called by the handler's capture path (install.rs)
    pub(crate) fn notify_event_fd(&self) {
        if N > 0 {
            signal_event_fd(self.cpu_state(0).wake.event_slot());
        }
    }

    /// Drains every CPU from the calling thread (for event loops): claims
    /// CPU slot `c` for the thread, drains it, for each `c`; the thread's
    /// claim is restored afterwards. Returns `Remaining` if some CPU ran
    /// out of budget (it kicked, so the event fd is readable again), else
    /// `Busy` if some CPU was being drained elsewhere or had its bottom
    /// halves off (`bh_disable`), else `Complete`.
    ///
    /// Top-half safe: no (runs handlers). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`Runtime::event_fd`].
    pub fn drain_all(&self) -> DrainOutcome {
        let cpus = CPU_LIMIT.load(Ordering::Relaxed).clamp(1, N.max(1));
        let mut outcome = DrainOutcome::Complete;
        for cpu in 0..cpus.min(N) {
            // Restores the thread's previous claim when dropped, also on
            // unwind from a handler.
            let _cpu = bind_thread(BindingKind::Signals, cpu);
            match self.drain() {
                DrainOutcome::Remaining => outcome = DrainOutcome::Remaining,
                // Disabled: a bottom-half guard holds that CPU; its last
                // drop runs the work, as the running drain does for Busy.
                DrainOutcome::Busy | DrainOutcome::Disabled
                    if outcome == DrainOutcome::Complete =>
                {
                    outcome = DrainOutcome::Busy
                }
                _ => {}
            }
        }
        outcome
    }

    /// Starts one drain thread per configured CPU: thread `c`, named
    /// `bh-sig/c`, pins itself to CPU `c` (`sched_setaffinity`; if the
    /// process may not run there, it stays unpinned) and claims CPU slot
    /// `c`, so a raise from a handler that ran on CPU `c` is drained by it.
    /// It sleeps on the CPU's futex between kicks. Dropping the handle
    /// stops and joins the threads. With several bottom-half levels it
    /// starts one thread per CPU and level (`bh-sig/c/L<level>`), each
    /// draining its own level, as `Host`'s do.
    ///
    /// Process-directed signals go to any thread that does not block them. If
    /// that is a drain thread, the only consumer of the bottom half spends its
    /// time in top halves, and in a storm the mailbox it should empty
    /// overflows. So this function starts its threads with every
    /// asynchronous signal blocked: the spawning thread blocks them
    /// around the spawn (a new thread inherits its creator's mask, so there is
    /// no window) and restores its own mask afterwards. The synchronous faults
    /// stay unblocked (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`,
    /// `SIGSYS`: blocking a fault the thread itself raises kills the process),
    /// as do the C library's internal signals (`pthread_sigmask` refuses to
    /// block them). Signals sent to a drain thread in particular (`tgkill`,
    /// `pthread_kill`) stay pending. [`Runtime::spawn_drain_threads_unmasked`]
    /// is the opt-out: its threads keep the spawning thread's mask.
    ///
    /// Top-half safe: no. Allocates: yes (threads). Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::TooFewCpus`]; [`SignalError::Os`] if a thread could
    /// not be spawned (the ones already started are stopped) or the mask
    /// could not be set.
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
        let _blocked = BlockAsyncSignals::new()?;
        self.spawn_drain_threads_for(cpus)
    }

    /// [`spawn_drain_threads`](Runtime::spawn_drain_threads) without the
    /// signal mask: the threads inherit the calling thread's mask, so the
    /// kernel may run top halves on them. For programs that manage masks
    /// themselves, or need thread-directed signals (`pthread_kill`) to
    /// reach the drain threads.
    ///
    /// Top-half safe: no. Allocates: yes (threads). Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`spawn_drain_threads`](Runtime::spawn_drain_threads).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, Signals};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// let drains = RT.spawn_drain_threads_unmasked().unwrap();
    /// assert_eq!(drains.len(), RT.check_cpus().unwrap());
    /// ```
    pub fn spawn_drain_threads_unmasked(&'static self) -> Result<DrainThreads, SignalError> {
        let cpus = self.check_cpus()?;
        self.spawn_drain_threads_for(cpus)
    }

    fn spawn_drain_threads_for(&'static self, cpus: usize) -> Result<DrainThreads, SignalError> {
        DrainThreads::spawn(self, cpus, "bh-sig", |_rt, cpu| {
            // The claim lasts as long as the thread.
            core::mem::forget(bind_thread(BindingKind::Signals, cpu));
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

/// Writes `msg` to stderr with `write(2)` (async-signal-safe).
fn raw_message(msg: &[u8]) {
    // SAFETY: `msg` is readable for its length; write is async-signal-safe.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Called in the child right after `fork()` (single-threaded there): gives
/// each runtime's event fd its own eventfd in the child, so the child
/// neither steals the parent's wake-ups nor sends it its own. The new one
/// takes the old one's number (`dup3`) and starts readable.
/// Async-signal-safe system calls only; `errno` preserved.
pub(crate) fn reset_event_fds_after_fork() {
    let saved = errno();
    let used = EVENT_FDS_USED.load(Ordering::Relaxed).min(MAX_EVENT_FDS);
    for entry in &EVENT_FDS[..used] {
        let fd = entry.load(Ordering::Relaxed);
        if fd == NO_FD {
            continue;
        }
        if !replace_event_fd(fd as c_int) {
            // The child's kicks must not reach the parent: this runtime has
            // no event fd in the child from now on.
            entry.store(NO_FD, Ordering::Relaxed);
            raw_message(
                b"bottomhalf: after fork, the child could not get its own event fd; the runtime's event fd is no longer written in this child\n",
            );
        }
    }
    // SAFETY: the calling thread's errno, put back as it was.
    unsafe { *libc::__errno_location() = saved };
}

/// Replaces the inherited eventfd `fd` by a fresh one at the same number,
/// readable. `false` if no fresh eventfd could be made.
///
/// Readable because the child inherits whatever work was pending at the
/// fork, and the inherited fd's state cannot tell: between `fork()` and
/// this handler the parent may still write the shared eventfd (a kick
/// that belongs to the parent) or read it. One empty drain in the child
/// costs less than a lost one.
fn replace_event_fd(fd: c_int) -> bool {
    // SAFETY: eventfd, close, dup3 and write are system calls
    // (async-signal-safe). `fd` is the inherited eventfd: closing it (only
    // to make room if the file table is full) and dup3 onto it replace the
    // child's copy only, never the parent's.
    unsafe {
        let mut new = libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        if new < 0 && *libc::__errno_location() == libc::EMFILE {
            // The file table is full: free the inherited slot and retry;
            // the new fd then usually takes `fd`'s number.
            libc::close(fd);
            new = libc::eventfd(1, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        }
        if new < 0 {
            return false;
        }
        if new != fd {
            let moved = libc::dup3(new, fd, libc::O_CLOEXEC) >= 0;
            libc::close(new);
            return moved;
        }
    }
    true
}

/// The signal backend's part of the `fork()` child handler.
pub(crate) fn after_fork_child() {
    install::reset_slots_after_fork();
    reset_event_fds_after_fork();
}

#[cfg(all(test, not(miri)))]
mod tests {
    use crate::{Config, Runtime, Signals};
    use std::os::fd::AsRawFd;

    fn readable(rt: &Runtime<Signals, 256>) -> bool {
        let mut p = libc::pollfd {
            fd: rt.event_fd().unwrap().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn notify_event_fd_makes_only_its_own_runtimes_fd_readable() {
        static A: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
        static B: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
        // No fd yet: a no-op, not a panic.
        A.notify_event_fd();
        let (fa, fb) = (A.event_fd().unwrap(), B.event_fd().unwrap());
        assert_ne!(fa.as_raw_fd(), fb.as_raw_fd(), "one fd per runtime");
        assert_eq!(A.event_fd().unwrap().as_raw_fd(), fa.as_raw_fd(), "stable");
        // New fds start readable (work raised before them is pending).
        assert!(A.clear_event_fd() && B.clear_event_fd());
        assert!(!readable(&A) && !readable(&B));

        // SAFETY: the calling thread's errno.
        unsafe { *libc::__errno_location() = 4242 };
        A.notify_event_fd();
        // SAFETY: as above.
        assert_eq!(unsafe { *libc::__errno_location() }, 4242, "errno kept");
        assert!(readable(&A), "the capture notification reached A's fd");
        assert!(!readable(&B), "and not B's");
        assert!(A.clear_event_fd());
        assert!(!readable(&A) && !A.clear_event_fd());
    }
}
