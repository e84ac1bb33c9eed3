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
//! - Uninstalling restores exactly the disposition that was there before.
//!
//! # Why raw `sigaction`, not `signal-hook-registry`
//!
//! The registry multiplexes many actions over one handler that it never
//! removes: unregistering an action leaves the registry's own handler in
//! place, chained to whatever was there before. The contract here is that
//! uninstall restores the previous disposition *exactly* (handler, mask,
//! flags; `SIG_DFL` and `SIG_IGN` included), which only the `sigaction`
//! saved at install time can give. It also keeps the handler path to one
//! table lookup and no `Arc` traversal. The price: one installation per
//! signal (a second one is refused with [`SignalError::AlreadyInstalled`]),
//! and installing over another library's handler replaces it until
//! uninstall (it is not chained).
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

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;
use std::os::fd::RawFd;

use libc::c_int;

use crate::backend::host::{bind_thread, bound_cpu};
use crate::backend::{Backend, DrainThreads, Host};
use crate::mailbox::MpscMailbox;
use crate::softirq::{DrainOutcome, Runtime};
use crate::sync::{AtomicU32, AtomicU8, AtomicUsize, OnUnwind, Ordering, UnsafeCell};
use crate::wake::WakeWord;

/// `SI_TKILL` (`tgkill`, `raise`): not in every `libc` release.
const SI_TKILL: c_int = -6;
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

/// What a signal handler learnt about one delivered signal.
///
/// `pid`, `uid` are the sender's for signals sent by a process (`kill`,
/// `sigqueue`, `tgkill`/`raise`, message queues) and for `SIGCHLD` (the
/// child); 0 otherwise. `value` is the `sigqueue`/timer/message-queue
/// value (`sival_ptr`, as an integer); 0 otherwise.
///
/// # Examples
///
/// ```
/// use bottomhalf::SigInfo;
/// let info = SigInfo { signal: libc::SIGUSR1, code: libc::SI_QUEUE, pid: 1, uid: 0, value: usize::MAX };
/// assert_eq!(info.value_isize(), -1);
/// assert!(info.is_queued());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    /// The signal number.
    pub signal: c_int,
    /// `si_code`: `SI_USER` (`kill`), `SI_QUEUE` (`sigqueue`), `SI_TKILL`,
    /// `SI_TIMER`, or a positive kernel code.
    pub code: c_int,
    /// The sender's process id (see the type docs).
    pub pid: libc::pid_t,
    /// The sender's real user id (see the type docs).
    pub uid: libc::uid_t,
    /// The `sigqueue` value (see the type docs).
    pub value: usize,
}

impl SigInfo {
    /// The value as a signed integer (`sival_int`-style payloads).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SigInfo`].
    pub const fn value_isize(&self) -> isize {
        self.value as isize
    }

    /// `true` if it was sent with `sigqueue` (`SI_QUEUE`).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SigInfo`].
    pub const fn is_queued(&self) -> bool {
        self.code == libc::SI_QUEUE
    }

    /// `true` if `pid`/`uid` name a sending process (as opposed to the
    /// kernel, a timer or a fault).
    fn has_sender(&self) -> bool {
        matches!(
            self.code,
            libc::SI_USER | libc::SI_QUEUE | SI_TKILL | libc::SI_MESGQ
        )
    }

    /// Reads what is meaningful for `code` out of the kernel's `siginfo`.
    ///
    /// # Safety
    ///
    /// `info` is the `siginfo_t` the kernel passed to an `SA_SIGINFO`
    /// handler.
    unsafe fn from_raw(info: &libc::siginfo_t) -> SigInfo {
        let mut out = SigInfo {
            signal: info.si_signo,
            code: info.si_code,
            pid: 0,
            uid: 0,
            value: 0,
        };
        if out.has_sender() || out.signal == libc::SIGCHLD {
            // SAFETY: for these codes (and SIGCHLD) the kernel filled the
            // `_kill`/`_rt`/`_sigchld` member, which all start with pid, uid.
            unsafe {
                out.pid = info.si_pid();
                out.uid = info.si_uid();
            }
        }
        if matches!(out.code, libc::SI_QUEUE | libc::SI_TIMER | libc::SI_MESGQ) {
            // SAFETY: for these codes the kernel filled `sigval`.
            out.value = unsafe { info.si_value() }.sival_ptr as usize;
        }
        out
    }
}

/// Which senders a signal is accepted from. Signals without a sending
/// process (kernel-generated, `si_code > 0`, timers) are always accepted.
///
/// Caveat: `kill`/`tgkill` senders are filled in by the kernel and can be
/// trusted; a process allowed to signal us can forge the pid/uid of a
/// `SI_QUEUE` signal with a raw `rt_sigqueueinfo`. The filter keeps
/// unrelated, well-behaved processes from driving the bottom half; it is
/// not an authentication mechanism.
///
/// # Examples
///
/// ```
/// use bottomhalf::Accept;
/// static TRUSTED: [libc::pid_t; 2] = [1, 42];
/// let a = Accept::Pids(&TRUSTED);
/// assert_ne!(a, Accept::Any);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Accept {
    /// Every sender.
    #[default]
    Any,
    /// Only this process (`raise`, `kill(getpid())`, other threads).
    SameProcess,
    /// Only processes of this process's real uid.
    SameUid,
    /// Only the listed processes.
    Pids(&'static [libc::pid_t]),
}

impl Accept {
    fn accepts(self, info: &SigInfo) -> bool {
        if !info.has_sender() {
            return true;
        }
        match self {
            Accept::Any => true,
            // SAFETY (both): no arguments; getpid/getuid are
            // async-signal-safe and cannot fail.
            Accept::SameProcess => info.pid == unsafe { libc::getpid() },
            Accept::SameUid => info.uid == unsafe { libc::getuid() },
            Accept::Pids(pids) => pids.contains(&info.pid),
        }
    }
}

/// Where the handler captures `SigInfo`s: an `MpscMailbox` of any size.
trait Capture: Sync {
    fn capture(&self, info: SigInfo) -> bool;
}

impl<const M: usize> Capture for MpscMailbox<SigInfo, M> {
    fn capture(&self, info: SigInfo) -> bool {
        self.push(info).is_ok()
    }
}

/// How to handle one signal: the top half, an optional capture mailbox,
/// and a sender filter. Passed to [`Runtime::install`].
///
/// # Examples
///
/// ```
/// use bottomhalf::{Accept, MpscMailbox, SigInfo, SignalConfig};
/// static LOG: MpscMailbox<SigInfo, 64> = MpscMailbox::new();
/// let cfg = SignalConfig::new(libc::SIGUSR2, |_info| {})
///     .capture(&LOG)
///     .accept(Accept::SameUid);
/// assert_eq!(cfg.signal(), libc::SIGUSR2);
/// ```
#[derive(Clone, Copy)]
pub struct SignalConfig {
    signal: c_int,
    top_half: fn(&SigInfo),
    capture: Option<&'static dyn Capture>,
    accept: Accept,
}

impl SignalConfig {
    /// Runs `top_half` inside the handler of `signal`, for every sender.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalConfig`].
    pub const fn new(signal: c_int, top_half: fn(&SigInfo)) -> SignalConfig {
        SignalConfig {
            signal,
            top_half,
            capture: None,
            accept: Accept::Any,
        }
    }

    /// Pushes every accepted signal's [`SigInfo`] into `mailbox` before the
    /// top half runs; a full mailbox counts a drop (here, in
    /// [`SignalHandle::dropped`], and in the mailbox's own counter).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalConfig`].
    pub fn capture<const M: usize>(self, mailbox: &'static MpscMailbox<SigInfo, M>) -> Self {
        SignalConfig {
            capture: Some(mailbox),
            ..self
        }
    }

    /// Accepts signals only from `accept`; rejected ones run nothing and
    /// are counted ([`SignalHandle::rejected`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalConfig`].
    pub const fn accept(self, accept: Accept) -> Self {
        SignalConfig { accept, ..self }
    }

    /// The signal number.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalConfig`].
    pub const fn signal(&self) -> c_int {
        self.signal
    }
}

impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("signal", &self.signal)
            .field("capture", &self.capture.is_some())
            .field("accept", &self.accept)
            .finish_non_exhaustive()
    }
}

/// Why a signal could not be installed (or uninstalled).
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Runtime, SignalConfig, SignalError, Signals};
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// let err = RT.install(SignalConfig::new(libc::SIGKILL, |_| {})).unwrap_err();
/// assert_eq!(err, SignalError::Forbidden(libc::SIGKILL));
/// assert!(err.to_string().contains("SIGKILL"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalError {
    /// Not a signal number this system can deliver (`< 1` or `> SIGRTMAX`).
    OutOfRange(c_int),
    /// `SIGKILL`/`SIGSTOP` (cannot be caught) or a synchronous fault
    /// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`: a top half cannot
    /// resume the faulting code).
    Forbidden(c_int),
    /// Reserved by the C library (the real-time signals below `SIGRTMIN`).
    Reserved(c_int),
    /// This signal already has a top half installed by this crate.
    AlreadyInstalled(c_int),
    /// The runtime has fewer CPU slots than the machine has CPUs.
    TooFewCpus {
        /// The runtime's `N`.
        slots: usize,
        /// Configured CPUs (`sysconf(_SC_NPROCESSORS_CONF)`).
        cpus: usize,
    },
    /// A system call failed with this `errno`.
    Os(c_int),
}

fn signal_name(sig: c_int) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "signal",
    }
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SignalError::OutOfRange(s) => {
                write!(
                    f,
                    "{s} is not a signal number (valid: 1..={})",
                    libc::SIGRTMAX()
                )
            }
            SignalError::Forbidden(s @ (libc::SIGKILL | libc::SIGSTOP)) => {
                write!(f, "{} ({s}) cannot be caught", signal_name(s))
            }
            SignalError::Forbidden(s) => write!(
                f,
                "{} ({s}) is a synchronous fault: a top half cannot resume the faulting code",
                signal_name(s)
            ),
            SignalError::Reserved(s) => write!(
                f,
                "signal {s} is reserved by the C library (real-time signals start at {})",
                libc::SIGRTMIN()
            ),
            SignalError::AlreadyInstalled(s) => {
                write!(
                    f,
                    "signal {s} already has a top half installed; uninstall it first"
                )
            }
            SignalError::TooFewCpus { slots, cpus } => write!(
                f,
                "Runtime<Signals, {slots}> is too small: the machine has {cpus} configured CPUs"
            ),
            SignalError::Os(e) => write!(f, "system call failed: errno {e}"),
        }
    }
}

impl core::error::Error for SignalError {}

fn check_signal(sig: c_int) -> Result<usize, SignalError> {
    if sig < 1 || sig > libc::SIGRTMAX() || sig as usize >= MAX_SIGNAL {
        return Err(SignalError::OutOfRange(sig));
    }
    if matches!(
        sig,
        libc::SIGKILL | libc::SIGSTOP | libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
    ) {
        return Err(SignalError::Forbidden(sig));
    }
    if sig >= 32 && sig < libc::SIGRTMIN() {
        return Err(SignalError::Reserved(sig));
    }
    Ok(sig as usize)
}

fn errno() -> c_int {
    // SAFETY: the calling thread's errno, always a valid pointer.
    unsafe { *libc::__errno_location() }
}

// ---------------------------------------------------------------------------
// The per-signal table and the handler.

const EMPTY: u8 = 0;
const INSTALLING: u8 = 1;
const ACTIVE: u8 = 2;
const REMOVING: u8 = 3;

/// One signal's installation.
///
/// `state`: EMPTY → INSTALLING (1, `install` wins the CAS; it alone writes
/// `config`) → ACTIVE (2, `install`, before `sigaction`) → REMOVING (3,
/// `uninstall`, after restoring the previous disposition; it then waits
/// for `active` to reach 0) → EMPTY (4, `uninstall`). The handler reads
/// `config` only between incrementing `active` and decrementing it, and
/// only if it saw ACTIVE (module docs, "Atomic orderings").
struct Slot {
    state: AtomicU8,
    /// Handlers between their `active` increment and decrement.
    active: AtomicU32,
    config: UnsafeCell<Option<SignalConfig>>,
    /// Accepted deliveries (the top half ran).
    delivered: AtomicU32,
    /// Deliveries refused by the sender filter.
    rejected: AtomicU32,
    /// Captures refused by a full mailbox.
    dropped: AtomicU32,
}

// SAFETY: `config` is written only by the installer that won EMPTY →
// INSTALLING, while no handler reads it (see `Slot`); everything else is
// atomic. `SignalConfig` holds a `fn`, a `&'static dyn Capture` (`Sync`)
// and plain data.
unsafe impl Sync for Slot {}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    state: AtomicU8::new(EMPTY),
    active: AtomicU32::new(0),
    config: UnsafeCell::new(None),
    delivered: AtomicU32::new(0),
    rejected: AtomicU32::new(0),
    dropped: AtomicU32::new(0),
};

static SLOTS: [Slot; MAX_SIGNAL] = [SLOT; MAX_SIGNAL];

/// Writes `msg` to stderr with `write(2)` and aborts: the handler's panic
/// path (no formatting, no allocation, no lock).
fn die(msg: &[u8]) -> ! {
    // SAFETY: `msg` is readable for its length; write and abort are
    // async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

extern "C" fn handler(sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let saved = errno();
    dispatch(sig, info);
    // SAFETY: the interrupted code's errno, put back as it was.
    unsafe { *libc::__errno_location() = saved };
}

/// The handler body, in a Rust-ABI frame so that an unwinding top half
/// runs the abort guard here rather than reaching the `extern "C"` edge.
fn dispatch(sig: c_int, info: *mut libc::siginfo_t) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|s| SLOTS.get(s)) else {
        return;
    };
    // SeqCst: the store-buffering pair with `uninstall` (module docs).
    slot.active.fetch_add(1, Ordering::SeqCst);
    if slot.state.load(Ordering::SeqCst) == ACTIVE {
        // SAFETY: ACTIVE was seen after our `active` increment, so the
        // config is published (Release-or-stronger store of ACTIVE after
        // the write) and cannot be rewritten before we decrement.
        let config = slot.config.with(|p| unsafe { *p });
        if let Some(config) = config {
            // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO
            // handler; null only if someone calls us by hand.
            let info = match unsafe { info.as_ref() } {
                Some(raw) => unsafe { SigInfo::from_raw(raw) },
                None => SigInfo {
                    signal: sig,
                    code: 0,
                    pid: 0,
                    uid: 0,
                    value: 0,
                },
            };
            if config.accept.accepts(&info) {
                if let Some(mb) = config.capture {
                    if !mb.capture(info) {
                        slot.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let guard = OnUnwind(|| {
                    die(b"bottomhalf: a signal top half panicked; aborting (a handler must not unwind)\n")
                });
                (config.top_half)(&info);
                core::mem::forget(guard);
                // Counted after the top half, Release: whoever reads the
                // count (Acquire, `SignalHandle::delivered`) sees what the
                // counted top halves did.
                slot.delivered.fetch_add(1, Ordering::Release);
            } else {
                slot.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    slot.active.fetch_sub(1, Ordering::SeqCst);
}

/// An installed top half; [`uninstall`](SignalHandle::uninstall) or drop
/// restores the disposition that was there before.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Runtime, SignalConfig, Signals};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// static HITS: AtomicU32 = AtomicU32::new(0);
/// let h = RT
///     .install(SignalConfig::new(libc::SIGWINCH, |_| {
///         HITS.fetch_add(1, Ordering::Relaxed);
///     }))
///     .unwrap();
/// // SAFETY: raising a signal whose handler is installed.
/// unsafe { libc::raise(libc::SIGWINCH) };
/// assert_eq!(HITS.load(Ordering::Relaxed), 1);
/// assert_eq!(h.delivered(), 1);
/// h.uninstall().unwrap();
/// ```
#[must_use = "dropping the handle uninstalls the top half"]
pub struct SignalHandle {
    signal: c_int,
    previous: libc::sigaction,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: `previous` is plain data; uninstalling from another thread is
// fine (sigaction is process-wide). Not Sync: `uninstall` consumes it.
unsafe impl Send for SignalHandle {}

impl fmt::Debug for SignalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandle")
            .field("signal", &self.signal)
            .field("delivered", &self.delivered())
            .field("rejected", &self.rejected())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl SignalHandle {
    fn slot(&self) -> &'static Slot {
        &SLOTS[self.signal as usize]
    }

    /// The signal number.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle`].
    pub fn signal(&self) -> c_int {
        self.signal
    }

    /// Deliveries accepted by the filter (the top half ran).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle`].
    pub fn delivered(&self) -> u32 {
        // Acquire: pairs with the Release increment after the top half.
        self.slot().delivered.load(Ordering::Acquire)
    }

    /// Deliveries refused by the sender filter ([`Accept`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Accept, Config, Runtime, SignalConfig, Signals};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static NOBODY: [libc::pid_t; 0] = [];
    /// let h = RT
    ///     .install(SignalConfig::new(libc::SIGURG, |_| {}).accept(Accept::Pids(&NOBODY)))
    ///     .unwrap();
    /// // SAFETY: raising a signal whose handler is installed.
    /// unsafe { libc::raise(libc::SIGURG) };
    /// assert_eq!((h.delivered(), h.rejected()), (0, 1));
    /// ```
    pub fn rejected(&self) -> u32 {
        self.slot().rejected.load(Ordering::Relaxed)
    }

    /// Captures refused because the mailbox was full.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, MpscMailbox, Runtime, SigInfo, SignalConfig, Signals};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static ONE: MpscMailbox<SigInfo, 1> = MpscMailbox::new();
    /// let h = RT.install(SignalConfig::new(libc::SIGPROF, |_| {}).capture(&ONE)).unwrap();
    /// // SAFETY: raising a signal whose handler is installed.
    /// unsafe { libc::raise(libc::SIGPROF); libc::raise(libc::SIGPROF) };
    /// assert_eq!(h.dropped(), 1);
    /// assert_eq!(ONE.consumer().unwrap().pop().unwrap().signal, libc::SIGPROF);
    /// ```
    pub fn dropped(&self) -> u32 {
        self.slot().dropped.load(Ordering::Relaxed)
    }

    /// Restores the previous disposition, then waits for handlers still
    /// running on other threads to finish.
    ///
    /// Top-half safe: no (must not run inside this signal's handler: it
    /// would wait for itself). Allocates: no. Blocks: yes, briefly.
    ///
    /// # Errors
    ///
    /// [`SignalError::Os`] if `sigaction` fails (it cannot for a signal
    /// that was installed); the slot is released all the same.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle`].
    pub fn uninstall(self) -> Result<(), SignalError> {
        let r = self.restore();
        core::mem::forget(self);
        r
    }

    fn restore(&self) -> Result<(), SignalError> {
        // SAFETY: `previous` is the action `sigaction` gave us at install.
        let rc = unsafe { libc::sigaction(self.signal, &self.previous, core::ptr::null_mut()) };
        let result = if rc == 0 {
            Ok(())
        } else {
            Err(SignalError::Os(errno()))
        };
        let slot = self.slot();
        // SeqCst: the store-buffering pair with `dispatch` (module docs).
        slot.state.store(REMOVING, Ordering::SeqCst);
        while slot.active.load(Ordering::SeqCst) != 0 {
            crate::sync::spin_wait();
        }
        slot.state.store(EMPTY, Ordering::SeqCst);
        result
    }
}

impl Drop for SignalHandle {
    fn drop(&mut self) {
        let _ = self.restore();
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
        Ok(cpus)
    }

    /// Installs `config`'s top half as the handler of its signal
    /// (`SA_SIGINFO | SA_RESTART`, no extra signals masked), saving the
    /// previous disposition for [`SignalHandle::uninstall`].
    ///
    /// Inside the handler: `errno` is saved; the sender filter runs (a
    /// rejection is counted and nothing else happens); the `SigInfo` is
    /// captured if asked; the top half runs; `errno` is restored. If the
    /// top half panics, the handler writes a raw message and aborts.
    ///
    /// Top-half safe: no (set-up). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::OutOfRange`], [`SignalError::Forbidden`],
    /// [`SignalError::Reserved`] for signals that cannot be handled here,
    /// [`SignalError::AlreadyInstalled`], [`SignalError::TooFewCpus`],
    /// [`SignalError::Os`].
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, SignalConfig, SignalError, Signals, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static BH: Tasklet = Tasklet::new(&RT, || { RUNS.fetch_add(1, Ordering::SeqCst); });
    ///
    /// let h = RT.install(SignalConfig::new(libc::SIGTTIN, |_| { BH.schedule(); })).unwrap();
    /// assert_eq!(
    ///     RT.install(SignalConfig::new(libc::SIGTTIN, |_| {})).unwrap_err(),
    ///     SignalError::AlreadyInstalled(libc::SIGTTIN)
    /// );
    /// // SAFETY: raising a signal whose handler is installed.
    /// unsafe { libc::raise(libc::SIGTTIN) };
    /// let _ = RT.drain_all();
    /// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    /// drop(h);
    /// ```
    pub fn install(&self, config: SignalConfig) -> Result<SignalHandle, SignalError> {
        let sig = check_signal(config.signal)?;
        self.check_cpus()?;
        let slot = &SLOTS[sig];
        if slot
            .state
            .compare_exchange(EMPTY, INSTALLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(SignalError::AlreadyInstalled(config.signal));
        }
        // SAFETY: we won EMPTY → INSTALLING: no handler reads `config`
        // (they see a state other than ACTIVE) and no other installer runs.
        slot.config.with_mut(|p| unsafe { *p = Some(config) });
        slot.delivered.store(0, Ordering::Relaxed);
        slot.rejected.store(0, Ordering::Relaxed);
        slot.dropped.store(0, Ordering::Relaxed);
        // SeqCst (release half): publishes `config` to `dispatch`.
        slot.state.store(ACTIVE, Ordering::SeqCst);

        // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty
        // mask, no flags); we fill what we use.
        let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
        let mut previous: libc::sigaction = unsafe { core::mem::zeroed() };
        action.sa_sigaction =
            handler as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: `action.sa_mask` is a valid sigset; `handler` has the
        // SA_SIGINFO signature; `previous` is writable. sigaction is
        // process-wide and the slot is ours.
        let rc = unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(config.signal, &action, &mut previous)
        };
        if rc != 0 {
            let e = errno();
            slot.state.store(EMPTY, Ordering::SeqCst);
            return Err(SignalError::Os(e));
        }
        Ok(SignalHandle {
            signal: config.signal,
            previous,
            _not_send: PhantomData,
        })
    }

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
