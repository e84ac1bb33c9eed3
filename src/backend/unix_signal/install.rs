//! Installing a top half for a signal: the per-signal slot table, the
//! handler, and the handle that uninstalls it.

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;

use libc::c_int;

use super::{Accept, SigInfo, Signals, MAX_SIGNAL};
use crate::mailbox::MpscMailbox;
use crate::softirq::Runtime;
use crate::sync::{AtomicU32, AtomicU8, OnUnwind, Ordering, UnsafeCell};

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

pub(super) fn check_signal(sig: c_int) -> Result<usize, SignalError> {
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

pub(super) fn errno() -> c_int {
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

impl<const N: usize> Runtime<Signals, N> {
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
}

/// Called in the child right after `fork()` (single-threaded there): the
/// handlers that were running on the parent's other threads do not exist
/// in the child, so no slot may wait for them.
pub(crate) fn reset_slots_after_fork() {}
