//! What a handler learns about a signal ([`SigInfo`]) and which senders it
//! accepts ([`Accept`]).

use libc::c_int;

use crate::pidset::{PidSet, PidSetRef};

/// `SI_TKILL` (`tgkill`, `raise`): not in every `libc` release.
const SI_TKILL: c_int = -6;

/// What a signal handler learnt about one delivered signal.
///
/// `pid`, `uid` are the sender's for signals sent by a process (`kill`,
/// `sigqueue`, `tgkill`/`raise`, message queues) and for `SIGCHLD` (the
/// child); 0 otherwise. `value` is the `sigqueue`/timer/message-queue/AIO
/// value (`sival_ptr`, as an integer); 0 otherwise.
///
/// Who wrote `pid` and `uid` depends on `code` (see [`Accept`] for the
/// table): the kernel for `SI_USER` (`kill`) and `SI_TKILL` (`tgkill`,
/// `raise`) and for kernel-generated signals (`code > 0`); the *sender*
/// for `SI_QUEUE` and every other negative code, which any process
/// allowed to signal this one can send with `rt_sigqueueinfo` and any
/// `pid`/`uid` it likes ([`SigInfo::sender_is_verified`]).
///
/// # Examples
///
/// ```
/// use bottomhalf::SigInfo;
/// let info = SigInfo { signal: libc::SIGUSR1, code: libc::SI_QUEUE, pid: 1, uid: 0, value: usize::MAX };
/// assert_eq!(info.value_isize(), -1);
/// assert!(info.is_queued());
/// assert!(!info.sender_is_verified(), "sigqueue's pid is the sender's claim");
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

    /// `true` if the kernel generated the signal itself (`code > 0`:
    /// `SI_KERNEL`, `SIGCHLD`'s `CLD_*`, `SIGIO`'s `POLL_*`, faults). No
    /// process can send such a code to another one: `rt_sigqueueinfo`
    /// refuses `si_code >= 0` unless a process signals itself.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::SigInfo;
    /// let hup = SigInfo { signal: libc::SIGHUP, code: 0x80, pid: 0, uid: 0, value: 0 };
    /// assert!(hup.is_from_kernel()); // SI_KERNEL: a terminal hang-up, say
    /// ```
    pub const fn is_from_kernel(&self) -> bool {
        self.code > 0
    }

    /// `true` if the kernel filled in `pid` and `uid`: `SI_USER` (`kill`)
    /// and `SI_TKILL` (`tgkill`, `raise`). Other processes cannot send
    /// these codes with `rt_sigqueueinfo`, so the sender is who the fields
    /// say. Every other negative code (`SI_QUEUE`, `SI_TIMER`,
    /// `SI_MESGQ`, `SI_ASYNCIO`, unknown ones) can be sent by any process
    /// allowed to signal this one, with fields of its choosing.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::SigInfo;
    /// let kill = SigInfo { signal: libc::SIGTERM, code: libc::SI_USER, pid: 9, uid: 0, value: 0 };
    /// assert!(kill.sender_is_verified());
    /// let timer = SigInfo { code: libc::SI_TIMER, ..kill };
    /// assert!(!timer.sender_is_verified());
    /// ```
    pub const fn sender_is_verified(&self) -> bool {
        matches!(self.code, libc::SI_USER | SI_TKILL)
    }

    /// `true` if `pid`/`uid` name a sending process (as opposed to the
    /// kernel, a timer or a fault), verified or claimed.
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
        if matches!(
            out.code,
            libc::SI_QUEUE | libc::SI_TIMER | libc::SI_MESGQ | libc::SI_ASYNCIO
        ) {
            // SAFETY: for these codes the kernel filled `sigval`.
            out.value = unsafe { info.si_value() }.sival_ptr as usize;
        }
        out
    }
}

/// How deep [`Accept::AllowUnverified`] may nest before the filter counts
/// as one that no process passes (a cycle of statics, say).
const MAX_NESTING: usize = 4;

/// Which senders a signal is accepted from.
///
/// A filter checks only what the kernel vouches for. By `si_code`:
///
/// | `si_code` | sent by | `pid`, `uid` filled by | a filter |
/// | --- | --- | --- | --- |
/// | `> 0` (`SI_KERNEL`, `CLD_*`, `POLL_*`, …) | the kernel | the kernel (`SIGCHLD`: the child) | accepts: no process can send these to another |
/// | `SI_USER` (0), `SI_TKILL` (-6) | `kill`, `tgkill`, `raise` | the kernel | checks `pid`/`uid` |
/// | `SI_QUEUE` (-1) | `sigqueue` | the sender (`rt_sigqueueinfo` copies them as given) | rejects: unverifiable |
/// | `SI_TIMER`, `SI_MESGQ`, `SI_ASYNCIO`, `SI_SIGIO`, any other `< 0` | POSIX timers, `mq_notify`, AIO — or any process through `rt_sigqueueinfo` | the sender | rejects: unverifiable |
///
/// For the negative codes other than `SI_USER`/`SI_TKILL` the kernel only
/// checks that the sender may signal this process at all (same uid, or
/// privilege), never what it wrote into `siginfo`. So
/// [`SameProcess`](Accept::SameProcess), [`SameUid`](Accept::SameUid),
/// [`Pids`](Accept::Pids) and [`PidSet`](Accept::PidSet) reject them, counted as rejected, unless
/// wrapped in [`AllowUnverified`](Accept::AllowUnverified), which accepts
/// them when the claimed sender passes the inner filter (`SI_QUEUE`,
/// `SI_MESGQ`) or when they claim none (timers, AIO, unknown codes). That
/// keeps honest but unrelated `sigqueue` senders out; it is not
/// authentication.
///
/// # Examples
///
/// ```
/// use bottomhalf::Accept;
/// static TRUSTED: [libc::pid_t; 2] = [1, 42];
/// // `kill` from 1 or 42 (and kernel-generated signals):
/// let strict = Accept::Pids(&TRUSTED);
/// assert_ne!(strict, Accept::Any);
/// // Also `sigqueue` payloads that claim to come from 1 or 42, and timers:
/// static FILTER: Accept = Accept::Pids(&TRUSTED);
/// let lenient = Accept::AllowUnverified(&FILTER);
/// assert_ne!(lenient, strict);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Accept {
    /// Every sender, verified or not.
    #[default]
    Any,
    /// Only this process (`raise`, `kill(getpid())`, other threads), and
    /// the kernel.
    SameProcess,
    /// Only processes of this process's real uid, and the kernel.
    SameUid,
    /// Only the listed processes, and the kernel. The list is fixed when
    /// the filter is built; for pids learnt at run time use
    /// [`PidSet`](Accept::PidSet).
    Pids(&'static [libc::pid_t]),
    /// Only the processes in the set at delivery time, and the kernel: a
    /// [`PidSet`] the program fills and empties as it runs (no leaked
    /// list; the handler reads it with atomic loads). Made by
    /// [`Accept::pid_set`].
    PidSet(PidSetRef),
    /// The inner filter, and also signals whose sender the kernel does not
    /// verify (type docs): accepted if their claimed sender passes the
    /// inner filter, or if they claim none. Nesting adds nothing; more
    /// than 4 levels (or a cycle of statics) make a filter that accepts
    /// only the kernel.
    AllowUnverified(&'static Accept),
}

impl Accept {
    /// Accepts the processes in `set` when the signal arrives (and the
    /// kernel): [`Accept::PidSet`]. The program adds and removes pids
    /// while the handler is installed ([`PidSet::insert`],
    /// [`PidSet::remove`]); the handler reads the set with `N` atomic
    /// loads (no lock, no allocation).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Accept, PidSet, PidSetRef};
    /// static CHILDREN: PidSet<16> = PidSet::new();
    /// static FILTER: Accept = Accept::pid_set(&CHILDREN);
    /// assert_eq!(FILTER, Accept::PidSet(PidSetRef::new(&CHILDREN)));
    /// // Also `sigqueue` payloads that claim to come from a child:
    /// let lenient = Accept::AllowUnverified(&FILTER);
    /// assert_ne!(lenient, FILTER);
    /// ```
    pub const fn pid_set<const N: usize>(set: &'static PidSet<N>) -> Accept {
        Accept::PidSet(PidSetRef::new(set))
    }

    /// The innermost filter and whether unverified senders are allowed;
    /// `None` if the nesting is too deep.
    fn resolve(self) -> Option<(Accept, bool)> {
        let mut filter = self;
        let mut allow_unverified = false;
        for _ in 0..=MAX_NESTING {
            match filter {
                Accept::AllowUnverified(inner) => {
                    allow_unverified = true;
                    filter = *inner;
                }
                f => return Some((f, allow_unverified)),
            }
        }
        None
    }

    /// The filter's verdict on `info`. Async-signal-safe, bounded, never
    /// panics.
    pub(super) fn accepts(self, info: &SigInfo) -> bool {
        if self == Accept::Any || info.is_from_kernel() {
            return true;
        }
        let Some((filter, allow_unverified)) = self.resolve() else {
            return false;
        };
        if !info.sender_is_verified() {
            if !allow_unverified {
                return false;
            }
            if !info.has_sender() {
                return true;
            }
        }
        match filter {
            // AllowUnverified(&Any) is Any.
            Accept::Any => true,
            // SAFETY (both): no arguments; getpid/getuid are
            // async-signal-safe and cannot fail.
            Accept::SameProcess => info.pid == unsafe { libc::getpid() },
            Accept::SameUid => info.uid == unsafe { libc::getuid() },
            Accept::Pids(pids) => pids.contains(&info.pid),
            Accept::PidSet(set) => set.contains(info.pid),
            // `resolve` returns a non-nested filter.
            Accept::AllowUnverified(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Accept, SigInfo, SI_TKILL};

    fn info(code: libc::c_int, pid: libc::pid_t) -> SigInfo {
        SigInfo {
            signal: libc::SIGUSR1,
            code,
            pid,
            uid: 0,
            value: 0,
        }
    }

    #[test]
    fn filters_reject_unverified_codes_unless_allowed() {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        static ME_ONLY: Accept = Accept::SameProcess;
        let strict = Accept::SameProcess;
        let lenient = Accept::AllowUnverified(&ME_ONLY);
        for code in [libc::SI_USER, SI_TKILL] {
            assert!(strict.accepts(&info(code, me)));
            assert!(!strict.accepts(&info(code, me + 1)));
            assert!(!lenient.accepts(&info(code, me + 1)));
        }
        for code in [
            libc::SI_TIMER,
            libc::SI_ASYNCIO,
            libc::SI_MESGQ,
            -60,
            -1000,
            libc::SI_QUEUE,
        ] {
            assert!(!strict.accepts(&info(code, me)), "code {code} forged as us");
            assert!(Accept::Any.accepts(&info(code, me + 1)));
        }
        // Claimed senders are checked when allowed; claim-less codes pass.
        assert!(lenient.accepts(&info(libc::SI_QUEUE, me)));
        assert!(!lenient.accepts(&info(libc::SI_QUEUE, me + 1)));
        assert!(lenient.accepts(&info(libc::SI_TIMER, 0)));
        // The kernel passes every filter.
        for code in [0x80, libc::CLD_EXITED, 1] {
            assert!(strict.accepts(&info(code, 12345)));
        }
    }

    #[test]
    fn a_cycle_of_allow_unverified_accepts_only_the_kernel() {
        static A: Accept = Accept::AllowUnverified(&B);
        static B: Accept = Accept::AllowUnverified(&A);
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        assert!(!A.accepts(&info(libc::SI_USER, me)));
        assert!(A.accepts(&info(0x80, 0)));
        static DEEP: Accept =
            Accept::AllowUnverified(&Accept::AllowUnverified(&Accept::SameProcess));
        assert!(DEEP.accepts(&info(libc::SI_QUEUE, me)));
    }
}
