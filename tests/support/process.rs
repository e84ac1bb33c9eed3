//! Running a test in a process of its own, and forked children.
//!
//! Signal handlers and `fork()` are process-wide, so many integration tests
//! re-execute their own test binary with only one test selected and an
//! environment variable naming it (the scenario process), or fork a child
//! that checks something and reports by its exit status. Every such process
//! runs under an `alarm` watchdog: a hang dies of SIGALRM.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libc::c_int;

/// The environment variable that selects a scenario in [`scenario`].
pub const SCENARIO_VAR: &str = "BH_SCENARIO";

/// Whether this process is the re-executed copy of the test binary made by
/// [`reexec`] for test `name` (the variable `var` is set to `name`).
pub fn is_scenario(var: &str, name: &str) -> bool {
    std::env::var(var).as_deref() == Ok(name)
}

/// Re-runs this test binary with only test `name` selected (`--exact
/// --nocapture --test-threads=1`, then `extra_args`), `var=name` and `envs`
/// set, and returns its output.
pub fn reexec(var: &str, name: &str, extra_args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .args(extra_args)
        .env(var, name)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// In the scenario process for `name` (`BH_SCENARIO=name`): arms
/// `alarm(watchdog)`, runs `body` and exits 0 (or dies inside it). Anywhere
/// else: returns.
pub fn run_if_scenario(name: &str, watchdog: u32, body: impl FnOnce()) {
    if is_scenario(SCENARIO_VAR, name) {
        // SAFETY: alarm only arms this process's SIGALRM timer.
        unsafe { libc::alarm(watchdog) };
        body();
        std::process::exit(0);
    }
}

/// [`run_if_scenario`], then in the parent: re-runs this binary for `name`
/// only (with `envs` set) and returns its output.
pub fn scenario(name: &str, watchdog: u32, envs: &[(&str, &str)], body: impl FnOnce()) -> Output {
    run_if_scenario(name, watchdog, body);
    reexec(SCENARIO_VAR, name, &[], envs)
}

/// Prints the scenario's stdout (its figures) and asserts it exited 0;
/// on failure the message carries both of its outputs.
pub fn expect_success(name: &str, out: Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "scenario {name} failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Forks; the child arms `alarm(watchdog)`, runs `body` and `_exit`s with
/// its result. Returns the child's pid to the parent.
///
/// The caller's `body` must only do what is allowed after `fork()` in its
/// process (async-signal-safe calls if the process has several threads,
/// unless the test says why more is fine) and must not return into the
/// test harness by unwinding (catch panics in `body` if it can panic).
pub fn fork_with_watchdog(watchdog: u32, body: impl FnOnce() -> c_int) -> libc::pid_t {
    // SAFETY: fork; the child runs only alarm, `body` (under the caller's
    // contract above) and `_exit`, which ends it without running the
    // parent's atexit handlers or flushing inherited stdio buffers.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::alarm(watchdog);
            libc::_exit(body());
        }
        pid
    }
}

/// Waits for the child and returns its exit status; panics if it was
/// killed by a signal (SIGALRM is its watchdog: it hung).
pub fn reap(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is writable.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status),
        "the fork child died (signal {}; SIGALRM = {} means it hung)",
        libc::WTERMSIG(status),
        libc::SIGALRM
    );
    libc::WEXITSTATUS(status)
}

/// Forks a child that waits for a byte on a pipe, then runs `body` (which
/// must use async-signal-safe calls only) and `_exit`s with its result.
/// Returns (pid, the pipe's write end) for [`release_and_reap`].
pub fn fork_gated(body: impl FnOnce() -> c_int) -> (libc::pid_t, c_int) {
    let mut fds = [0; 2];
    // SAFETY: a valid 2-int array for pipe; fork, then in the child only
    // async-signal-safe calls (read, close, the body's, _exit).
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::close(fds[1]);
            let mut b = 0u8;
            libc::read(fds[0], (&mut b as *mut u8).cast(), 1);
            let rc = body();
            libc::_exit(rc);
        }
        libc::close(fds[0]);
        (pid, fds[1])
    }
}

/// Lets a [`fork_gated`] child run and waits for it (at most 60 s; then it
/// is killed, as a child that deadlocked is); its exit status, or 1000 +
/// the signal that killed it.
pub fn release_and_reap(pid: libc::pid_t, go: c_int) -> c_int {
    let b = 1u8;
    let mut status = 0;
    // SAFETY: writing one byte to our pipe end and closing it.
    unsafe {
        libc::write(go, (&b as *const u8).cast(), 1);
        libc::close(go);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // SAFETY: waiting for our own child without blocking.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "waitpid failed");
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child {pid} hung");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if libc::WIFSIGNALED(status) {
        1000 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// Arms (or re-arms) this process's `alarm(secs)` watchdog: a hang kills
/// the process with SIGALRM. The timer is process-wide; a later call
/// replaces it.
pub fn watchdog(secs: u32) {
    // SAFETY: alarm only re-arms the process's SIGALRM timer.
    unsafe { libc::alarm(secs) };
}

/// Takes `lock`, which serializes the tests of one binary that must not
/// overlap (forks, storms, drain threads); a test that panicked holding it
/// does not fail the others.
pub fn serial(lock: &'static Mutex<()>) -> MutexGuard<'static, ()> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pins the calling thread to the first CPU it may run on and returns it
/// (the `Signals` backend's current CPU is the one the thread runs on).
#[cfg(target_os = "linux")]
pub fn pin_to_first_allowed_cpu() -> usize {
    // SAFETY: an all-zero cpu_set_t is the empty set; sched_getaffinity
    // and sched_setaffinity(0, ..) read or write `set` only and apply to
    // this thread; CPU_ISSET/CPU_SET bounds-check against the set's size.
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        let size = core::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut set), 0);
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap();
        let mut one: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        assert_eq!(libc::sched_setaffinity(0, size, &one), 0);
        cpu
    }
}
