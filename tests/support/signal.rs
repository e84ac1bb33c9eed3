//! Small signal helpers shared by the signal tests.

use std::time::{Duration, Instant};

use libc::c_int;

/// The real-time signal `SIGRTMIN + k`.
pub fn rt(k: c_int) -> c_int {
    libc::SIGRTMIN() + k
}

/// Raises `sig` on the calling thread.
pub fn raise(sig: c_int) {
    // SAFETY: raising a signal that has a handler (or is ignored) in the
    // calling test's scenario.
    unsafe { libc::raise(sig) };
}

/// The current disposition of `sig`.
pub fn query(sig: c_int) -> libc::sigaction {
    // SAFETY: querying a disposition into a valid struct.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut cur), 0);
        cur
    }
}

/// Polls `done` every millisecond; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `sigqueue(pid, sig, value)`, retrying EAGAIN after 100 µs (counted in
/// `retries`); `false` on another error. Async-signal-safe.
pub fn queue_retrying(pid: libc::pid_t, sig: c_int, value: usize, retries: &mut u64) -> bool {
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000,
    };
    loop {
        let v = libc::sigval {
            sival_ptr: value as *mut libc::c_void,
        };
        // SAFETY: sigqueue and nanosleep are async-signal-safe system
        // calls; `pause` is a valid timespec.
        unsafe {
            if libc::sigqueue(pid, sig, v) == 0 {
                return true;
            }
            if *libc::__errno_location() != libc::EAGAIN {
                return false;
            }
            *retries += 1;
            // The receiver's queue is full: sleep rather than spin
            // (`sched_yield` would keep competing with the receiver and
            // the drain threads for the CPU on a loaded machine).
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// A `siginfo_t` as a sender of `rt_sigqueueinfo` lays it out on 64-bit
/// Linux (x86-64, arm64): the union starts at byte 16; `_rt` is pid, uid,
/// sigval. 128 bytes there.
#[repr(C)]
pub struct ForgedInfo {
    pub signo: c_int,
    pub errno: c_int,
    pub code: c_int,
    pub _pad: c_int,
    pub pid: libc::pid_t,
    pub uid: libc::uid_t,
    pub value: usize,
    pub _rest: [u64; 12],
}

/// Sends `sig` to `pid` with `rt_sigqueueinfo`, claiming `code`, sender
/// `claimed` with `uid` and payload `value`; the system call's result.
/// Async-signal-safe.
pub fn rt_sigqueueinfo(
    pid: libc::pid_t,
    sig: c_int,
    code: c_int,
    claimed: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
) -> libc::c_long {
    let info = ForgedInfo {
        signo: sig,
        errno: 0,
        code,
        _pad: 0,
        pid: claimed,
        uid,
        value,
        _rest: [0; 12],
    };
    // SAFETY: `info` is a 128-byte siginfo the kernel copies in; the
    // system call only reads it.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            pid,
            sig,
            &info as *const ForgedInfo,
        )
    }
}
