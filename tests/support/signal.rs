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
