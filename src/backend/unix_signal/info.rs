//! What a handler learns about a signal ([`SigInfo`]) and which senders it
//! accepts ([`Accept`]).

use libc::c_int;

/// `SI_TKILL` (`tgkill`, `raise`): not in every `libc` release.
const SI_TKILL: c_int = -6;

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
    pub(super) unsafe fn from_raw(info: &libc::siginfo_t) -> SigInfo {
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
    pub(super) fn accepts(self, info: &SigInfo) -> bool {
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
