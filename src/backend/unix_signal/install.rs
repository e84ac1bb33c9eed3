//! Installing a top half for a signal: the two modes, the per-signal slot
//! table, the handler, the forwarding of signals that arrive around an
//! uninstall, and the handle that uninstalls it.
//!
//! What users need (the two modes, what happens around an uninstall,
//! which installation a handler runs, an exclusive handler left behind)
//! is on [`SignalMode`]; the counters on [`SignalCounts`]; `fork()` on
//! [`Signals`](super::Signals#fork), where rustdoc renders it.
//!
//! `tests/signal_uninstall_storm.rs` cycles install/uninstall under a
//! `sigqueue` storm in both modes; `tests/signal_modes.rs` covers the
//! handler left behind (a shared re-install after `Replaced` runs the top
//! half once; a late delivery after `Replaced` is counted).
//!
//! # Panics
//!
//! A top half that panics aborts the process with a fixed message written
//! by `write(2)`, without allocating, locking or formatting in the handler
//! (see `panic.rs` for what std does before the hook; the user-facing
//! statement is on [`Runtime::install`]).
//!
//! Slot protocol and its orderings: `crate::sigslot`.

use core::ffi::c_void;
use core::fmt;
use core::mem::MaybeUninit;

use libc::c_int;

use super::panic::{die, ensure_hook, InHandler, MESSAGE};
use super::{Accept, SigInfo, Signals, MAX_SIGNAL};
use crate::mailbox::MpscMailbox;
use crate::sigslot::{Entered, SlotState};
use crate::softirq::Runtime;
use crate::sync::{AtomicBool, AtomicU32, OnUnwind, Ordering, UnsafeCell};

/// Where the handler captures `SigInfo`s: an `MpscMailbox` of any size.
trait Capture: Sync {
    fn capture(&self, info: SigInfo) -> bool;
}

impl<const M: usize> Capture for MpscMailbox<SigInfo, M> {
    fn capture(&self, info: SigInfo) -> bool {
        self.push(info).is_ok()
    }
}

/// The installing runtime, as the handler sees it: after a capture it
/// makes the runtime's event fd readable.
trait EventNotify: Sync {
    fn notify(&self);
}

impl<const N: usize, const L: usize> EventNotify for Runtime<Signals, N, L> {
    fn notify(&self) {
        self.notify_event_fd();
    }
}

/// How a top half takes its signal; see [`SignalConfig::mode`].
///
/// **Shared** (the default, [`SignalMode::Shared`]) registers the top half
/// as an action of `signal-hook-registry`, the registry that
/// `tokio::signal`, `signal-hook` and `ctrlc` use. The registry owns the
/// process handler for the signal and calls, for each delivery, the
/// handler that was there before it first took the signal (if that was a
/// function), then every registered action. So handlers installed before
/// bottomhalf keep firing, so do registry users that come after it, and
/// uninstall removes only bottomhalf's action (`unregister` waits until no
/// handler still runs it). What stays behind: the registry's own handler
/// is never removed, so after the last action is gone a signal whose
/// disposition was `SIG_DFL` is ignored instead of, say, terminating the
/// process (the registry's documented behaviour).
///
/// **Exclusive** ([`SignalMode::Exclusive`], asked for with
/// [`SignalConfig::exclusive`]) installs the crate's own handler with raw
/// `sigaction` and restores, at uninstall, exactly the disposition it
/// replaced: handler, mask, flags, `SIG_DFL` and `SIG_IGN` included. Only
/// raw `sigaction` can give that: the registry never gives the signal
/// back. In exchange it is exclusive: it refuses
/// ([`SignalError::HeldByOther`]) a signal whose current disposition is
/// another handler (`SIG_DFL` and `SIG_IGN` are taken, and given back),
/// and its uninstall never overwrites a handler that is no longer its own:
/// if someone replaced bottomhalf's handler since install, uninstall leaves
/// theirs in place and returns [`SignalError::Replaced`].
///
/// # Signals around an uninstall (exclusive mode)
///
/// Uninstall first gives the signal back to the previous disposition, then
/// marks the slot removed, then waits for the handlers still inside. A
/// signal that the kernel routed to bottomhalf's handler before the
/// restore, but whose handler looks at the slot after it was marked, is
/// not dropped: the handler passes it on to the disposition in force now
/// (read with `sigaction`, async-signal-safe) and counts it in
/// [`SignalHandle::forwarded`]:
///
/// - a function without `SA_RESETHAND` is called directly, `SA_SIGINFO`
///   honoured (three arguments, the original `siginfo`), with its
///   `sa_mask` blocked for the call as the kernel would;
/// - `SIG_IGN`, and `SIG_DFL` of a signal whose default is to ignore it
///   (`SIGCHLD`, `SIGURG`, `SIGWINCH`, `SIGCONT`), are done with;
/// - bottomhalf's handler again (another thread re-installed the
///   signal in exclusive mode meanwhile): the delivery runs through the
///   new installation right away and is counted there (`handled` or
///   `rejected`); if that one is being uninstalled too, the disposition is
///   read again, and after a few such turns the delivery is re-queued as
///   below;
/// - the registry's handler (another thread installed the signal in
///   shared mode meanwhile; the handler found that installation and left
///   it alone): it is called like any function, and runs the new action,
///   which counts the delivery too (`forwarded` here, `handled` there);
/// - anything else (`SIG_DFL` that stops or terminates, `SA_RESETHAND`)
///   is re-queued to the same thread with its original `siginfo`
///   (`rt_tgsigqueueinfo`); it is delivered when the handler returns, to
///   whatever disposition is in force then.
///
/// # Which installation a handler runs
///
/// Every installation has an identity (a per-slot generation and its
/// mode). A registry action captures its installation's identity at
/// registration and runs that installation only: an action
/// still running after its uninstall began, or one a fork child inherited
/// from an install that never returned there, runs nothing and counts
/// nothing (the registry already passed the delivery to the previous
/// handler). The exclusive handler is one function for every exclusive
/// installation: it runs the exclusive installation in force, if any, and
/// never a shared one (a registry that took the signal over may hold
/// bottomhalf's exclusive handler as its "previous" one and call it before
/// the action: the top half would run twice per delivery).
///
/// # An exclusive handler left behind
///
/// If uninstall found someone else's handler in place
/// ([`SignalError::Replaced`]), that handler received the signal from the
/// kernel and may call bottomhalf's as its "previous" handler, and it may
/// do so for as long as it lives; an uninstall that could not restore the
/// previous disposition leaves bottomhalf's handler in force, and whoever
/// takes the signal next (the registry included: it never drops its
/// previous handler) may chain to it the same way. From then on, until an
/// exclusive install takes the signal from `SIG_DFL`/`SIG_IGN` again, a
/// call into bottomhalf's exclusive handler that finds no exclusive
/// installation is never forwarded (forwarding a chained call would run
/// the other handler again, or recurse forever). It is counted once:
///
/// - in [`SignalCounts::retired`] if another handler is in force. Such a
///   call is either a genuine late delivery (the kernel routed it to
///   bottomhalf's handler before it was replaced) or a chained call from
///   the replacing handler. Both come with the kernel's `siginfo` and
///   context, and nothing portable tells a handler whether the kernel or
///   another handler called it, so the counter holds both: for a replacing
///   handler that chains, one per delivery it received;
/// - in [`SignalCounts::lost`] if bottomhalf's handler is in force (a
///   failed restore, or a replacing handler that put it back): the kernel
///   delivered it there and there is nowhere to pass it on;
/// - nowhere while a shared-mode installation of the signal is in force:
///   the registry calls its previous handler (which chains here) and then
///   the action, which counts the delivery (`handled` or `rejected`). A
///   genuine late delivery that reaches the old handler only after a new
///   shared install (its frame set up before the replace, and not entered
///   until after an uninstall and an install on other threads) is the one
///   case counted nowhere; it cannot be told from the registry's chained
///   call, which is counted by the action.
///
/// Independently of all this, a call into bottomhalf's handler made by the
/// handler that bottomhalf's handler is forwarding a delivery to, on the
/// same thread for the same signal, is that same delivery coming back: it
/// runs and counts nothing (a thread-local marker, set around the call).
///
/// A re-queue the kernel refuses (the queue limit `RLIMIT_SIGPENDING`) is
/// counted in [`SignalHandle::lost`]: with the cases above, those are the
/// only ways a signal that reached the handler is neither run nor
/// forwarded. [`SignalCounts::total`] gives the per-signal totals over every
/// installation, including handlers that finished after their uninstall
/// returned. In shared mode the registry itself passes every delivery to
/// the previous handler first, so `forwarded` stays 0.
///
/// # Examples
///
/// ```
/// use bottomhalf::{SignalConfig, SignalMode};
/// let cfg = SignalConfig::new(libc::SIGUSR2, |_| {});
/// assert_eq!(cfg.signal_mode(), SignalMode::Shared);
/// assert_eq!(cfg.exclusive().signal_mode(), SignalMode::Exclusive);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SignalMode {
    /// Through `signal-hook-registry`, chained with other users.
    #[default]
    Shared,
    /// Raw `sigaction`, exact restore, refuses a signal held by another
    /// handler.
    Exclusive,
}

/// How to handle one signal: the top half, an optional capture mailbox,
/// a sender filter and the mode. Passed to [`Runtime::install`].
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
    mode: SignalMode,
}

impl SignalConfig {
    /// Runs `top_half` inside the handler of `signal`, for every sender,
    /// in shared mode.
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
            mode: SignalMode::Shared,
        }
    }

    /// Pushes every accepted signal's [`SigInfo`] into `mailbox` before the
    /// top half runs, and makes the runtime's event fd readable; a full
    /// mailbox counts a drop (here, in [`SignalHandle::dropped`], and in
    /// the mailbox's own counter).
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

    /// Chooses the mode ([`SignalMode`]; default shared).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalMode`].
    pub const fn mode(self, mode: SignalMode) -> Self {
        SignalConfig { mode, ..self }
    }

    /// Exclusive mode: `.mode(SignalMode::Exclusive)`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalMode`].
    pub const fn exclusive(self) -> Self {
        self.mode(SignalMode::Exclusive)
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

    /// The mode.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalMode`].
    pub const fn signal_mode(&self) -> SignalMode {
        self.mode
    }
}

impl fmt::Debug for SignalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalConfig")
            .field("signal", &self.signal)
            .field("capture", &self.capture.is_some())
            .field("accept", &self.accept)
            .field("mode", &self.mode)
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
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
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
    /// Exclusive mode: another handler (a function, not `SIG_DFL` or
    /// `SIG_IGN`) holds this signal; nothing was changed. Use shared mode
    /// to run beside it.
    HeldByOther(c_int),
    /// Exclusive-mode uninstall: the signal's handler is no longer
    /// bottomhalf's (someone installed theirs after it), so it was left in
    /// place instead of restoring the disposition saved at install. The
    /// top half is uninstalled all the same.
    Replaced(c_int),
    /// Shared mode, in a child forked while a `signal-hook-registry`
    /// handler ran on another thread of the parent: the registry would
    /// wait for that handler forever (see "`fork()`" on
    /// [`Signals`](super::Signals#fork)).
    RegistryStranded(c_int),
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
            SignalError::HeldByOther(s) => write!(
                f,
                "signal {s} is held by another handler; exclusive mode refuses to replace it \
                 (use the shared mode to run beside it)"
            ),
            SignalError::Replaced(s) => write!(
                f,
                "signal {s}'s handler was replaced by someone else after install; \
                 left in place instead of restoring the saved disposition"
            ),
            SignalError::RegistryStranded(s) => write!(
                f,
                "signal {s}: this process was forked while a signal-hook-registry handler ran \
                 on another thread; the registry would wait for it forever (use exclusive mode)"
            ),
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
// Counters.

/// What happened to the deliveries of one signal: for one installation
/// ([`SignalHandle::counts`]) or for every installation in this process
/// ([`SignalCounts::total`]). Every delivery that reaches bottomhalf's
/// handler adds 1 to exactly one of `handled`, `rejected`, `forwarded`,
/// `lost` and `retired` (shared mode: except one that reaches the action
/// after its uninstall began, or an action of another installation, which
/// counts nothing: the registry has already passed it to the previous
/// handler; `retired` also counts calls from a handler that chains to a
/// replaced one, see its docs; a late exclusive-mode delivery forwarded
/// to the registry of a new shared installation counts `forwarded`, and
/// the action it reaches counts it again); `captured` and `dropped` split the
/// accepted deliveries of a configuration with a capture mailbox (then
/// `captured + dropped == handled`). The counters are `u32` and wrap.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Runtime, SignalConfig, SignalCounts, Signals};
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// let before = SignalCounts::total(libc::SIGXCPU);
/// let h = RT.install(SignalConfig::new(libc::SIGXCPU, |_| {})).unwrap();
/// // SAFETY: raising a signal whose handler is installed.
/// unsafe { libc::raise(libc::SIGXCPU) };
/// assert_eq!(h.counts().handled, 1);
/// h.uninstall().unwrap();
/// assert_eq!(SignalCounts::total(libc::SIGXCPU).handled, before.handled + 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalCounts {
    /// The top half ran (the sender filter accepted the signal).
    pub handled: u32,
    /// The `SigInfo` was pushed into the capture mailbox.
    pub captured: u32,
    /// The capture mailbox was full (the top half still ran).
    pub dropped: u32,
    /// The sender filter refused the signal; nothing ran.
    pub rejected: u32,
    /// Arrived while the slot was being uninstalled (exclusive mode) and
    /// was passed on to the disposition in force ("Signals around an
    /// uninstall" on [`SignalMode`](SignalMode#signals-around-an-uninstall-exclusive-mode)).
    pub forwarded: u32,
    /// Arrived while the slot was being uninstalled and could not be
    /// passed on (the kernel refused the re-queue), or reached
    /// bottomhalf's exclusive handler while it was in force with no
    /// installation behind it ("An exclusive handler left behind" on
    /// [`SignalMode`](SignalMode#an-exclusive-handler-left-behind)).
    pub lost: u32,
    /// Calls into bottomhalf's exclusive handler after an uninstall left
    /// it behind with another handler in force (exclusive mode,
    /// [`SignalError::Replaced`]; or a restore that failed), while no
    /// installation of the signal could take them. Each is either a
    /// delivery the kernel routed to bottomhalf's handler before it was
    /// replaced, or a call from the handler that replaced it, chaining to
    /// it as its previous one. The two look the same to the handler (the
    /// same `siginfo` and context), so each is counted here once, runs no
    /// top half and is not forwarded (forwarding a chained call would run
    /// the other handler again, or recurse). Not counted while a
    /// shared-mode installation of the signal is in force: the registry
    /// then calls its previous handler (which chains here) and then the
    /// action, which counts the delivery ("An exclusive handler left
    /// behind" on [`SignalMode`](SignalMode#an-exclusive-handler-left-behind)).
    pub retired: u32,
}

impl SignalCounts {
    /// Totals for `signal` over every installation in this process,
    /// including handlers that finished after their uninstall returned.
    /// All zero for a signal number out of range.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalCounts`].
    pub fn total(signal: c_int) -> SignalCounts {
        match usize::try_from(signal).ok().and_then(|s| COUNTERS.get(s)) {
            Some(c) => c.snapshot(),
            None => SignalCounts::default(),
        }
    }

    fn since(self, base: SignalCounts) -> SignalCounts {
        SignalCounts {
            handled: self.handled.wrapping_sub(base.handled),
            captured: self.captured.wrapping_sub(base.captured),
            dropped: self.dropped.wrapping_sub(base.dropped),
            rejected: self.rejected.wrapping_sub(base.rejected),
            forwarded: self.forwarded.wrapping_sub(base.forwarded),
            lost: self.lost.wrapping_sub(base.lost),
            retired: self.retired.wrapping_sub(base.retired),
        }
    }
}

/// One signal's cumulative counters (never reset: a handle subtracts the
/// values it saw at install). Incremented by handlers; read anywhere.
struct Counters {
    /// Release, after the top half: whoever reads it (Acquire) sees what
    /// the counted top halves did.
    handled: AtomicU32,
    captured: AtomicU32,
    dropped: AtomicU32,
    rejected: AtomicU32,
    forwarded: AtomicU32,
    lost: AtomicU32,
    retired: AtomicU32,
}

impl Counters {
    const fn new() -> Counters {
        Counters {
            handled: AtomicU32::new(0),
            captured: AtomicU32::new(0),
            dropped: AtomicU32::new(0),
            rejected: AtomicU32::new(0),
            forwarded: AtomicU32::new(0),
            lost: AtomicU32::new(0),
            retired: AtomicU32::new(0),
        }
    }

    fn snapshot(&self) -> SignalCounts {
        SignalCounts {
            // Acquire: pairs with the Release increment after the top half.
            handled: self.handled.load(Ordering::Acquire),
            captured: self.captured.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            retired: self.retired.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU32) {
    c.fetch_add(1, Ordering::Relaxed);
}

static COUNTERS: [Counters; MAX_SIGNAL] = [const { Counters::new() }; MAX_SIGNAL];

// ---------------------------------------------------------------------------
// The per-signal table.

/// What the handler reads while the slot is ACTIVE.
///
/// All zero when empty, so `SLOTS` (65 slots) lands in `.bss`: `config`
/// is not an `Option` (the compiler puts `None` in `SignalMode`'s niche, a
/// non-zero byte) but zeroed storage that `runtime` vouches for: the one
/// writer (the installer that won `claim`) writes both at once, and
/// `config` is initialised whenever `runtime` is `Some`.
#[derive(Clone, Copy)]
struct SlotData {
    config: MaybeUninit<SignalConfig>,
    runtime: Option<&'static dyn EventNotify>,
}

impl SlotData {
    /// The installation's configuration, if one was written.
    fn config(&self) -> Option<SignalConfig> {
        self.runtime?;
        // SAFETY: `runtime` is `Some` only in a `SlotData` built by
        // `install`, which initialised `config` in the same value (the
        // only constructors are `Slot::new`, with `runtime: None`, and
        // `install`).
        Some(unsafe { self.config.assume_init() })
    }
}

/// One signal's installation: the `sigslot` state machine and the data it
/// guards. `data` is written only by the installer that won
/// `SlotState::claim`, before `publish`; handlers read it only after
/// `enter` returned `Active` and before `leave`.
struct Slot {
    state: SlotState,
    data: UnsafeCell<SlotData>,
    /// Shared mode (written before `publish`, read by the fork handler).
    shared: AtomicBool,
    /// An exclusive-mode uninstall left bottomhalf's handler behind: it
    /// found someone else's handler in place (`Replaced`), which may hold
    /// ours as its previous one and chain to it, or it could not restore
    /// the previous disposition (a failed `sigaction`, or a fork child
    /// without the saved one), so ours may stay in force, and whoever
    /// takes the signal next (the registry included) may chain to it. Calls
    /// into the exclusive handler that find no exclusive installation are
    /// then never forwarded (that would run the other handler again, or
    /// recurse): counted `retired` (or `lost` while ours is in force).
    /// Sticky across shared installs (the registry never drops its
    /// previous handler); cleared by an exclusive install that took the
    /// signal from `SIG_DFL`/`SIG_IGN` (no handler in force to chain).
    /// Set before `begin_remove`, read after `enter`: the same edge.
    lent: AtomicBool,
    /// A thread is installing or uninstalling this slot (set after
    /// `claim` until `install` returns, and from the start of an uninstall
    /// until `finish_remove`). Read by the fork child handler: in a child
    /// that thread does not exist, so its install is abandoned and its
    /// uninstall finished there.
    busy: AtomicBool,
    /// Exclusive mode: the disposition to restore, readable once
    /// `saved_valid` is set (Release, after the write). Written by the
    /// installer that won `claim`; read only by the fork child handler.
    saved: UnsafeCell<Option<libc::sigaction>>,
    saved_valid: AtomicBool,
    /// Set in a fork child if a handler of this shared-mode slot was
    /// inside the registry at the fork: uninstall must not call the
    /// registry (it would wait for that handler forever).
    stranded: AtomicBool,
}

// SAFETY: `data` is written only by the installer that won `claim`,
// while no handler reads it (the `sigslot` protocol); everything else is
// atomic. `SlotData` holds a `fn`, `&'static dyn` references to `Sync`
// types and plain data.
unsafe impl Sync for Slot {}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: SlotState::new(),
            data: UnsafeCell::new(SlotData {
                config: MaybeUninit::zeroed(),
                runtime: None,
            }),
            shared: AtomicBool::new(false),
            lent: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            saved: UnsafeCell::new(None),
            saved_valid: AtomicBool::new(false),
            stranded: AtomicBool::new(false),
        }
    }

    /// (4) of the slot protocol: wait for the handlers inside, then free
    /// the slot.
    fn release(&self) {
        self.state.begin_remove();
        self.state.wait_idle();
        self.busy.store(false, Ordering::SeqCst);
        self.state.finish_remove();
    }
}

static SLOTS: [Slot; MAX_SIGNAL] = [const { Slot::new() }; MAX_SIGNAL];

/// Set in a fork child when a shared-mode handler was inside the registry
/// at the fork: shared installs are refused from then on.
static REGISTRY_STRANDED: AtomicBool = AtomicBool::new(false);

/// Calls into `signal-hook-registry` (register/unregister) in progress in
/// this process. In a fork child, a non-zero count means a thread that is
/// gone holds the registry's write lock: shared installs are refused.
static REGISTRY_CALLS: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------
// The handler.

type SigActionFn = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);
type SigHandlerFn = extern "C" fn(c_int);

fn handler_addr() -> libc::sighandler_t {
    handler as SigActionFn as libc::sighandler_t
}

/// The identity tags (`SlotState::publish`) of the two modes.
const SHARED_TAG: bool = true;
const EXCLUSIVE_TAG: bool = false;

std::thread_local! {
    /// Signals (bit `sig`) whose delivery this thread is passing on, in
    /// `forward`, to a handler function. A call into the exclusive handler
    /// for such a signal while the bit is set comes from that function
    /// chaining to ours (the kernel blocks the signal while our handler
    /// runs): the delivery is being forwarded already. `const`, no
    /// destructor: touching it in a handler never allocates.
    static FORWARDING: core::cell::Cell<u128> = const { core::cell::Cell::new(0) };
}

fn forwarding(sig: c_int) -> bool {
    let bit = 1u128.checked_shl(sig as u32).unwrap_or(0);
    FORWARDING.try_with(|f| f.get() & bit != 0).unwrap_or(false)
}

/// Sets (`on`) or clears `sig`'s bit in `FORWARDING`.
fn mark_forwarding(sig: c_int, on: bool) {
    let bit = 1u128.checked_shl(sig as u32).unwrap_or(0);
    let _ = FORWARDING.try_with(|f| f.set(if on { f.get() | bit } else { f.get() & !bit }));
}

/// The exclusive-mode handler.
extern "C" fn handler(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let saved = errno();
    {
        let _in = InHandler::enter();
        dispatch_exclusive(sig, info, ctx);
    }
    // SAFETY: the interrupted code's errno, put back as it was.
    unsafe { *libc::__errno_location() = saved };
}

/// The shared-mode action of the installation `ident` (the registry saves
/// and restores `errno`). Runs that installation only: an action whose
/// installation is gone (being uninstalled, or orphaned in a fork child)
/// counts nothing; the registry has passed the delivery to the previous
/// handler already.
fn shared_action(sig: c_int, ident: u32, info: &libc::siginfo_t) {
    let _in = InHandler::enter();
    let info = info as *const libc::siginfo_t as *mut libc::siginfo_t;
    if let Some((slot, counters)) = lookup(sig) {
        try_run(slot, sig, info, counters, slot.state.enter_exact(ident));
    }
}

/// The slot and counters of `sig`, if it is in the table. Total: never
/// panics, whatever the number.
fn lookup(sig: c_int) -> Option<(&'static Slot, &'static Counters)> {
    let idx = usize::try_from(sig).ok()?;
    Some((SLOTS.get(idx)?, COUNTERS.get(idx)?))
}

/// The exclusive handler's body, in a Rust-ABI frame so that an unwinding
/// top half runs the abort guard here rather than reaching the
/// `extern "C"` edge. Total: no input makes it panic (a signal number
/// outside the table returns, a null `siginfo` gives a `SigInfo` with only
/// the signal). Runs only an exclusive installation (any generation: the
/// kernel calls this one function for all of them); otherwise the call is
/// forwarded or counted ([`SignalMode`] docs).
fn dispatch_exclusive(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let Some((slot, counters)) = lookup(sig) else {
        return;
    };
    if forwarding(sig) {
        // The handler `forward` is calling on this thread chains to ours:
        // this delivery is being passed on (and counted) there already.
        return;
    }
    let found = try_run(
        slot,
        sig,
        info,
        counters,
        slot.state.enter_tagged(EXCLUSIVE_TAG),
    );
    if found == Entered::Active {
        return;
    }
    // Not ours to run. Forwarding reads no slot data, so it runs outside
    // the slot: an uninstall does not wait for a slow previous handler.
    // Relaxed: set before the `begin_remove` that `enter` read from.
    if slot.lent.load(Ordering::Relaxed) {
        left_behind(sig, found, counters);
    } else {
        forward(slot, sig, info, ctx, counters);
    }
}

/// A call into the exclusive handler that an uninstall left behind
/// (`Slot::lent`) and that found no exclusive installation ([`SignalMode`]
/// docs, "An exclusive handler left behind").
/// Never forwarded: it may come from the handler in force chaining to
/// ours.
fn left_behind(sig: c_int, found: Entered, counters: &Counters) {
    if found == Entered::Other {
        // A shared installation is in force: the registry holds the
        // handler that chains here as its previous one, and calls the
        // action next, which counts the delivery.
        return;
    }
    match query(sig) {
        Ok(cur) if cur.sa_sigaction != handler_addr() => bump(&counters.retired),
        // Ours in force with no installation behind it: the kernel
        // delivered it here, and a re-queue would come back here.
        _ => bump(&counters.lost),
    }
}

/// Runs the delivery through the slot if `found` (what the caller's
/// `enter` returned) is `Active` (filter, capture, top half, counters),
/// then leaves the slot; returns `found`. Otherwise touches nothing but
/// the slot's state.
fn try_run(
    slot: &Slot,
    sig: c_int,
    info: *mut libc::siginfo_t,
    counters: &Counters,
    found: Entered,
) -> Entered {
    if found == Entered::Active {
        // SAFETY: `enter` returned Active, so `data` is published and is
        // not rewritten before our `leave` (sigslot protocol).
        let data = slot.data.with(|p| unsafe { *p });
        run(data, sig, info, counters);
    }
    slot.state.leave();
    found
}

fn run(data: SlotData, sig: c_int, info: *mut libc::siginfo_t, counters: &Counters) {
    let Some(config) = data.config() else {
        return;
    };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler
    // (and the registry a reference); null only if called by hand.
    let info = match unsafe { info.as_ref() } {
        // SAFETY: a siginfo the kernel filled for this delivery.
        Some(raw) => unsafe { SigInfo::from_raw(raw) },
        None => SigInfo {
            signal: sig,
            code: 0,
            pid: 0,
            uid: 0,
            value: 0,
        },
    };
    if !config.accept.accepts(&info) {
        bump(&counters.rejected);
        return;
    }
    if let Some(mb) = config.capture {
        if mb.capture(info) {
            bump(&counters.captured);
            if let Some(rt) = data.runtime {
                rt.notify();
            }
        } else {
            bump(&counters.dropped);
        }
    }
    let guard = OnUnwind(|| die(MESSAGE));
    (config.top_half)(&info);
    core::mem::forget(guard);
    // Release, after the top half: pairs with the Acquire in `snapshot`.
    counters.handled.fetch_add(1, Ordering::Release);
}

/// Signals whose default action is to ignore them (`SIGCONT`'s is to
/// continue, which already happened).
fn default_ignores(sig: c_int) -> bool {
    matches!(
        sig,
        libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT
    )
}

/// How many times `forward` finds bottomhalf's handler in force again
/// over a slot that is gone before it re-queues the delivery instead.
const FORWARD_RETRIES: u32 = 4;

/// Passes a signal that reached the handler of a slot being uninstalled
/// to the disposition in force now ([`SignalMode`] docs, "Signals around
/// an uninstall"). Async-signal-safe.
fn forward(
    slot: &Slot,
    sig: c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut c_void,
    counters: &Counters,
) {
    // SAFETY: an all-zero sigaction is a valid value.
    let mut cur: libc::sigaction = unsafe { core::mem::zeroed() };
    let mut tries = 0;
    loop {
        // SAFETY: `cur` is writable; sigaction(2) with a null new action
        // only reads the disposition and is async-signal-safe.
        if unsafe { libc::sigaction(sig, core::ptr::null(), &mut cur) } != 0 {
            bump(&counters.lost);
            return;
        }
        if cur.sa_sigaction != handler_addr() {
            break;
        }
        // Our handler is in force again: a re-install. Its `publish` came
        // before its `sigaction` and its uninstall's `begin_remove` comes
        // after the restore, so the slot was live when we read the
        // disposition: run the delivery through it now (counted there).
        // If the slot is gone again, that uninstall has restored
        // something since: read the disposition again. Every turn needs a
        // whole install/uninstall cycle of another thread; after a few,
        // re-queue (delivered when this handler returns). An uninstall
        // that left ours behind (`lent`: a restore that failed) may leave
        // it in force over an empty slot: that delivery is lost (counted),
        // never bounced back here forever.
        if slot.lent.load(Ordering::Relaxed) {
            bump(&counters.lost);
            return;
        }
        let found = slot.state.enter_tagged(EXCLUSIVE_TAG);
        if try_run(slot, sig, info, counters, found) == Entered::Active {
            return;
        }
        tries += 1;
        if tries == FORWARD_RETRIES {
            requeue(sig, info, counters);
            return;
        }
    }
    if slot.lent.load(Ordering::Relaxed) {
        // An uninstall on another thread left ours behind meanwhile: the
        // handler in force may chain to ours (`Slot::lent`).
        bump(&counters.retired);
        return;
    }
    let h = cur.sa_sigaction;
    if h == libc::SIG_IGN || (h == libc::SIG_DFL && default_ignores(sig)) {
        bump(&counters.forwarded);
        return;
    }
    if h == libc::SIG_DFL || cur.sa_flags & libc::SA_RESETHAND != 0 {
        requeue(sig, info, counters);
        return;
    }
    // A function: call it as the kernel would, with its mask blocked.
    // SAFETY: `old` is writable; pthread_sigmask is async-signal-safe and
    // only changes this thread's mask, which is put back below.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    let masked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &cur.sa_mask, &mut old) } == 0;
    // A call back into ours from `h` (it holds ours as its previous one)
    // is this same delivery: it must not be run or forwarded again.
    mark_forwarding(sig, true);
    if cur.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the disposition is a three-argument handler (SA_SIGINFO)
        // installed by its owner; it gets this delivery's arguments.
        let f: SigActionFn = unsafe { core::mem::transmute::<usize, SigActionFn>(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the disposition is a one-argument handler.
        let f: SigHandlerFn = unsafe { core::mem::transmute::<usize, SigHandlerFn>(h) };
        f(sig);
    }
    mark_forwarding(sig, false);
    if masked {
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut()) };
    }
    bump(&counters.forwarded);
}

/// Queues `sig` again to the calling thread with its original `siginfo`
/// (the signal is blocked inside the handler, so it is delivered when the
/// handler returns, to the disposition then in force).
fn requeue(sig: c_int, info: *mut libc::siginfo_t, counters: &Counters) {
    // SAFETY: getpid/gettid and the raw system calls are async-signal-safe;
    // `info` is the kernel's siginfo for this delivery (or null: then a
    // plain tgkill); sending to our own thread group any si_code is allowed.
    let rc = unsafe {
        let pid = libc::getpid();
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        if info.is_null() {
            libc::syscall(libc::SYS_tgkill, pid, tid, sig)
        } else {
            libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, info)
        }
    };
    if rc == 0 {
        bump(&counters.forwarded);
    } else {
        bump(&counters.lost);
    }
}

// ---------------------------------------------------------------------------
// The handle.

enum Owner {
    /// Exclusive mode: the disposition to restore.
    Exclusive(libc::sigaction),
    /// Shared mode: our registry action.
    Shared(signal_hook_registry::SigId),
}

/// An installed top half; [`uninstall`](SignalHandle::uninstall) or drop
/// removes it (shared mode: removes this action from the registry;
/// exclusive mode: restores the disposition that was there before).
///
/// `Send` and `Sync`: keep it in a `static OnceLock<SignalHandle>` to read
/// its counters from any thread (the top half then stays installed for
/// the life of the process), or move it to the thread that uninstalls.
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
/// assert_eq!(h.handled(), 1);
/// h.uninstall().unwrap();
/// ```
///
/// A handle kept in a `static` and read from another thread:
///
/// ```
/// use bottomhalf::{Config, Runtime, SignalConfig, SignalHandle, Signals};
/// use std::sync::OnceLock;
///
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// static HUP: OnceLock<SignalHandle> = OnceLock::new();
/// HUP.set(RT.install(SignalConfig::new(libc::SIGHUP, |_| {})).unwrap()).unwrap();
/// // SAFETY: raising a signal whose handler is installed.
/// unsafe { libc::raise(libc::SIGHUP) };
/// let seen = std::thread::spawn(|| HUP.get().unwrap().handled()).join().unwrap();
/// assert_eq!(seen, 1);
/// ```
#[must_use = "dropping the handle uninstalls the top half"]
pub struct SignalHandle {
    signal: c_int,
    owner: Owner,
    /// The signal's totals at install.
    base: SignalCounts,
}

// `Send` and `Sync` without `unsafe`: every field is plain data (a
// `sigaction`, the registry's `SigId`, counts). Through `&SignalHandle`
// a thread can only read the counters (atomics) and the fields; removing
// the top half takes the handle by value (`uninstall`, `Drop`), and
// sigaction and the registry are process-wide, so it may happen on any
// thread. A `static OnceLock<SignalHandle>` is therefore fine (it is never
// dropped: the top half stays installed for the life of the process).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<SignalHandle>();
};

impl fmt::Debug for SignalHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalHandle")
            .field("signal", &self.signal)
            .field("mode", &self.mode())
            .field("counts", &self.counts())
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

    /// The mode it was installed in.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Runtime, SignalConfig, SignalMode, Signals};
    /// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    /// let h = RT.install(SignalConfig::new(libc::SIGXFSZ, |_| {}).exclusive()).unwrap();
    /// assert_eq!(h.mode(), SignalMode::Exclusive);
    /// ```
    pub fn mode(&self) -> SignalMode {
        match self.owner {
            Owner::Exclusive(_) => SignalMode::Exclusive,
            Owner::Shared(_) => SignalMode::Shared,
        }
    }

    /// All counters since this install ([`SignalCounts`]). A handler of an
    /// earlier installation of the same signal that finished after its
    /// uninstall returned may be counted here.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalCounts`].
    pub fn counts(&self) -> SignalCounts {
        SignalCounts::total(self.signal).since(self.base)
    }

    /// Deliveries whose top half ran (accepted by the filter).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle`].
    pub fn handled(&self) -> u32 {
        self.counts().handled
    }

    /// `SigInfo`s pushed into the capture mailbox.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle::dropped`].
    pub fn captured(&self) -> u32 {
        self.counts().captured
    }

    /// Captures refused because the mailbox was full (the top half still
    /// ran).
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
    /// assert_eq!((h.handled(), h.captured(), h.dropped()), (2, 1, 1));
    /// assert_eq!(ONE.consumer().unwrap().pop().unwrap().signal, libc::SIGPROF);
    /// ```
    pub fn dropped(&self) -> u32 {
        self.counts().dropped
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
    /// assert_eq!((h.handled(), h.rejected()), (0, 1));
    /// ```
    pub fn rejected(&self) -> u32 {
        self.counts().rejected
    }

    /// Deliveries that reached the handler while it was being uninstalled
    /// and were passed on to the disposition in force (exclusive mode;
    /// "Signals around an uninstall" on [`SignalMode`](SignalMode#signals-around-an-uninstall-exclusive-mode)).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalCounts`] (`SignalCounts::total` sees the ones counted
    /// after the handle is gone).
    pub fn forwarded(&self) -> u32 {
        self.counts().forwarded
    }

    /// Deliveries that reached the handler while it was being uninstalled
    /// and could not be passed on (the kernel refused the re-queue), or
    /// reached bottomhalf's exclusive handler left in force with no
    /// installation behind it ([`SignalCounts::lost`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`SignalCounts`].
    pub fn lost(&self) -> u32 {
        self.counts().lost
    }

    /// Removes the top half and waits for handlers still running it on
    /// other threads. Shared mode: unregisters the action. Exclusive mode:
    /// restores the disposition saved at install, if the handler is still
    /// bottomhalf's; signals that arrive meanwhile are run, forwarded or
    /// counted ("Signals around an uninstall" on
    /// [`SignalMode`](SignalMode#signals-around-an-uninstall-exclusive-mode)).
    ///
    /// Top-half safe: no (must not run inside this signal's handler: it
    /// would wait for itself). Allocates: shared mode yes (the registry
    /// copies its table). Blocks: yes, briefly.
    ///
    /// # Errors
    ///
    /// [`SignalError::Replaced`] (exclusive mode: someone else's handler
    /// was left in place); [`SignalError::Os`] if `sigaction` fails. The
    /// top half is uninstalled either way.
    ///
    /// # Examples
    ///
    /// See [`SignalHandle`].
    pub fn uninstall(self) -> Result<(), SignalError> {
        let r = self.remove();
        core::mem::forget(self);
        r
    }

    fn remove(&self) -> Result<(), SignalError> {
        let slot = self.slot();
        // SeqCst: seen by a fork child of any later instant (the fork
        // handler reads it; `fork` copies memory after this store left
        // the store buffer).
        slot.busy.store(true, Ordering::SeqCst);
        let result = match &self.owner {
            Owner::Exclusive(previous) => {
                let r = restore_exclusive(self.signal, previous);
                if r.is_err() {
                    // Replaced (theirs may chain to ours) or not restored
                    // (ours may stay in force): ours is left behind. Before
                    // `begin_remove`, which publishes it to the handlers
                    // that find the slot gone.
                    slot.lent.store(true, Ordering::Relaxed);
                }
                r
            }
            Owner::Shared(id) => {
                if !slot.stranded.swap(false, Ordering::Relaxed) {
                    REGISTRY_CALLS.fetch_add(1, Ordering::SeqCst);
                    signal_hook_registry::unregister(*id);
                    REGISTRY_CALLS.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(())
            }
        };
        slot.release();
        result
    }
}

impl Drop for SignalHandle {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn query(sig: c_int) -> Result<libc::sigaction, SignalError> {
    // SAFETY: an all-zero sigaction is valid; a null new action only reads.
    let mut cur: libc::sigaction = unsafe { core::mem::zeroed() };
    if unsafe { libc::sigaction(sig, core::ptr::null(), &mut cur) } != 0 {
        return Err(SignalError::Os(errno()));
    }
    Ok(cur)
}

/// `act` is a handler function (neither `SIG_DFL` nor `SIG_IGN`).
fn is_handler(act: &libc::sigaction) -> bool {
    act.sa_sigaction != libc::SIG_DFL && act.sa_sigaction != libc::SIG_IGN
}

/// Puts `previous` back if the handler is still ours ([`SignalMode`] docs).
fn restore_exclusive(sig: c_int, previous: &libc::sigaction) -> Result<(), SignalError> {
    if query(sig)?.sa_sigaction != handler_addr() {
        return Err(SignalError::Replaced(sig));
    }
    // SAFETY: an all-zero sigaction is valid; `previous` is what sigaction
    // gave us at install; `old` is writable.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    if unsafe { libc::sigaction(sig, previous, &mut old) } != 0 {
        return Err(SignalError::Os(errno()));
    }
    if old.sa_sigaction != handler_addr() {
        // Someone installed theirs between the check and the exchange:
        // give it back (signals in that instant went to `previous`).
        // SAFETY: `old` is the action sigaction just gave us.
        unsafe { libc::sigaction(sig, &old, core::ptr::null_mut()) };
        return Err(SignalError::Replaced(sig));
    }
    Ok(())
}

impl<const N: usize, const L: usize> Runtime<Signals, N, L> {
    /// Installs `config`'s top half for its signal, in the config's
    /// [`SignalMode`] (shared by default: a `signal-hook-registry` action;
    /// exclusive: raw `sigaction` with `SA_SIGINFO | SA_RESTART`, no extra
    /// signals masked, the previous disposition saved for uninstall).
    ///
    /// Inside the handler: `errno` is saved; the sender filter runs (a
    /// rejection is counted and nothing else happens); the `SigInfo` is
    /// captured if asked (and this runtime's event fd made readable); the
    /// top half runs; `errno` is restored. If the top half panics, the
    /// handler writes a raw message and aborts, allocating nothing (the
    /// first install wraps the process panic hook for that). The handler
    /// path itself never panics, whatever the signal number or `siginfo`
    /// (null included).
    ///
    /// Top-half safe: no (set-up). Allocates: yes (shared mode: the
    /// registry's action; the first install: the panic hook wrapper).
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// [`SignalError::OutOfRange`], [`SignalError::Forbidden`],
    /// [`SignalError::Reserved`] for signals that cannot be handled here,
    /// [`SignalError::AlreadyInstalled`], [`SignalError::HeldByOther`]
    /// (exclusive mode), [`SignalError::RegistryStranded`] (shared mode
    /// after a fork), [`SignalError::TooFewCpus`], [`SignalError::Os`].
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
    pub fn install(&'static self, config: SignalConfig) -> Result<SignalHandle, SignalError> {
        let sig = check_signal(config.signal)?;
        self.check_cpus()?;
        let shared = config.mode == SignalMode::Shared;
        if shared && REGISTRY_STRANDED.load(Ordering::Relaxed) {
            return Err(SignalError::RegistryStranded(config.signal));
        }
        ensure_hook();
        let slot = &SLOTS[sig];
        if !slot.state.claim() {
            return Err(SignalError::AlreadyInstalled(config.signal));
        }
        // SAFETY: we won `claim`: no handler reads `data` (they see a
        // state other than ACTIVE) and no other installer runs.
        slot.data.with_mut(|p| unsafe {
            *p = SlotData {
                config: MaybeUninit::new(config),
                runtime: Some(self),
            }
        });
        slot.shared.store(shared, Ordering::Relaxed);
        slot.stranded.store(false, Ordering::Relaxed);
        slot.saved_valid.store(false, Ordering::Relaxed);
        slot.busy.store(true, Ordering::SeqCst);
        let base = SignalCounts::total(config.signal);
        let owner = if shared {
            install_shared(config.signal, slot)
        } else {
            install_exclusive(config.signal, slot)
        };
        // An install that failed has released the slot (`busy` cleared).
        let owner = owner?;
        slot.busy.store(false, Ordering::SeqCst);
        Ok(SignalHandle {
            signal: config.signal,
            owner,
            base,
        })
    }
}

fn install_shared(sig: c_int, slot: &Slot) -> Result<Owner, SignalError> {
    // The action runs this installation only (its identity), never a
    // later one: an action orphaned by a fork child's reset, or still
    // running after its uninstall began, finds another identity.
    let ident = slot.state.publish(SHARED_TAG);
    // SAFETY: `shared_action` is async-signal-safe (the handler path: no
    // lock, no allocation, no panic); the signal is not one of the
    // registry's FORBIDDEN ones (`check_signal`).
    REGISTRY_CALLS.fetch_add(1, Ordering::SeqCst);
    let r = unsafe {
        signal_hook_registry::register_sigaction(sig, move |info| shared_action(sig, ident, info))
    };
    REGISTRY_CALLS.fetch_sub(1, Ordering::SeqCst);
    match r {
        Ok(id) => Ok(Owner::Shared(id)),
        Err(e) => {
            slot.release();
            Err(SignalError::Os(e.raw_os_error().unwrap_or(libc::EINVAL)))
        }
    }
}

fn install_exclusive(sig: c_int, slot: &Slot) -> Result<Owner, SignalError> {
    match query(sig) {
        Ok(cur) if is_handler(&cur) => {
            slot.busy.store(false, Ordering::SeqCst);
            slot.state.abandon();
            return Err(SignalError::HeldByOther(sig));
        }
        Ok(_) => {}
        Err(e) => {
            slot.busy.store(false, Ordering::SeqCst);
            slot.state.abandon();
            return Err(e);
        }
    }
    slot.state.publish(EXCLUSIVE_TAG);
    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, empty mask,
    // no flags); we fill what we use.
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    let mut previous: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = handler_addr();
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset; `handler` has the
    // SA_SIGINFO signature; `previous` is writable. sigaction is
    // process-wide and the slot is ours.
    let rc = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(sig, &action, &mut previous)
    };
    if rc != 0 {
        let e = errno();
        slot.release();
        return Err(SignalError::Os(e));
    }
    if is_handler(&previous) {
        // Someone installed a handler between the check and the exchange:
        // give it back and refuse (signals in that instant ran our top
        // half, which was live).
        // SAFETY: `previous` is the action sigaction just gave us.
        unsafe { libc::sigaction(sig, &previous, core::ptr::null_mut()) };
        slot.release();
        return Err(SignalError::HeldByOther(sig));
    }
    // We took the signal from SIG_DFL/SIG_IGN: no handler in force holds
    // ours as its previous one any more (`lent`).
    slot.lent.store(false, Ordering::Relaxed);
    // SAFETY: we won `claim`; `saved` is read only by the fork child
    // handler, and only once `saved_valid` is set below.
    slot.saved.with_mut(|p| unsafe { *p = Some(previous) });
    // Release: the fork child handler reads `saved` after an Acquire load.
    slot.saved_valid.store(true, Ordering::Release);
    Ok(Owner::Exclusive(previous))
}

/// Called in the child right after `fork()` (single-threaded there): the
/// handlers that were running on the parent's other threads, and installs
/// or uninstalls other threads were in, do not exist in the child, so no
/// slot may wait for them ([`Signals`](super::Signals#fork) docs, "`fork()`").
pub(crate) fn reset_slots_after_fork() {
    if REGISTRY_CALLS.swap(0, Ordering::Relaxed) != 0 {
        REGISTRY_STRANDED.store(true, Ordering::Relaxed);
    }
    for (sig, slot) in SLOTS.iter().enumerate() {
        let busy = slot.busy.swap(false, Ordering::Relaxed);
        let shared = slot.shared.load(Ordering::Relaxed);
        if busy && !shared {
            finish_restore_in_child(sig as c_int, slot);
        }
        let inside = slot.state.reset_after_fork(busy);
        if inside != 0 && shared {
            slot.stranded.store(true, Ordering::Relaxed);
            REGISTRY_STRANDED.store(true, Ordering::Relaxed);
        }
    }
}

/// In a fork child, for an exclusive-mode slot that a thread (gone here)
/// was installing or uninstalling: if bottomhalf's handler is in force,
/// puts the saved disposition back; without one (the fork came before it
/// was saved), late deliveries are counted lost rather than re-queued.
/// Async-signal-safe (sigaction only).
fn finish_restore_in_child(sig: c_int, slot: &Slot) {
    let Ok(cur) = query(sig) else {
        return;
    };
    if cur.sa_sigaction != handler_addr() {
        return;
    }
    // Acquire: pairs with the Release store after `saved` was written.
    let saved = if slot.saved_valid.load(Ordering::Acquire) {
        // SAFETY: `saved_valid` is set only after `saved` was written
        // and nothing writes it until the next `claim` (none here: one
        // thread, in the fork handler).
        slot.saved.with(|p| unsafe { *p })
    } else {
        None
    };
    match saved {
        // SAFETY: `previous` is the action sigaction gave the installer.
        Some(previous) => unsafe {
            libc::sigaction(sig, &previous, core::ptr::null_mut());
        },
        None => slot.lent.store(true, Ordering::Relaxed),
    }
}
