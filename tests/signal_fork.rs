//! `fork()` while another thread is inside a signal top half, or inside an
//! uninstall that waits for one (issue 8, item 8, the signal-slot part),
//! in both modes: the child's uninstall and installs return at once (no
//! wait for a thread that does not exist there) and a signal raised in the
//! child is handled.
//!
//! Each test runs in a child process of its own (this binary re-executed
//! with `BH_SCENARIO=<name>`: handlers are process-wide); that process
//! forks the child under test, which runs under `alarm(10)` (a hang dies
//! of SIGALRM) and reports each failed check by its exit status and a
//! line written with `write(2)`.
#![cfg(all(not(miri), target_os = "linux"))]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bottomhalf::{Config, Runtime, SigInfo, SignalConfig, SignalError, SignalMode, Signals};
use libc::c_int;

mod support;
use support::process::{self, reap};
use support::signal::{query, raise, wait_until};

/// How long the parent waits for another thread to get somewhere.
const WAIT: Duration = Duration::from_secs(5);

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

/// In the child for `name`: arms a watchdog, runs `body`, exits 0. In the
/// parent: re-runs this binary for `name` only and checks it exited 0.
fn scenario(name: &str, body: impl FnOnce()) {
    process::expect_success(name, process::scenario(name, 30, &[], body));
}

fn sig() -> c_int {
    libc::SIGRTMIN() + 4
}

fn other_sig() -> c_int {
    libc::SIGRTMIN() + 5
}

/// The slow top half sets `ENTERED`, then spins until `RELEASE` (at most
/// 2 s), then counts itself in `SLOW_DONE`.
static ENTERED: AtomicU32 = AtomicU32::new(0);
static RELEASE: AtomicBool = AtomicBool::new(false);
static SLOW_DONE: AtomicU32 = AtomicU32::new(0);
static FAST: AtomicU32 = AtomicU32::new(0);

fn slow_top_half(_: &SigInfo) {
    ENTERED.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while !RELEASE.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(2) {
        std::hint::spin_loop();
    }
    SLOW_DONE.fetch_add(1, Ordering::SeqCst);
}

fn fast_top_half(_: &SigInfo) {
    FAST.fetch_add(1, Ordering::SeqCst);
}

fn disposition(s: c_int) -> libc::sighandler_t {
    query(s).sa_sigaction
}

/// In the forked child: writes `msg` (no allocation, no lock) and returns
/// `code`, the child's exit status.
fn fail(code: c_int, msg: &str) -> c_int {
    // SAFETY: writing a readable buffer to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    code
}

/// In the forked child: exclusive install on `s` with the fast top half,
/// a raised signal is handled once, uninstall restores.
fn child_handles(s: c_int, code: c_int) -> c_int {
    let before = FAST.load(Ordering::SeqCst);
    let h = match RT.install(SignalConfig::new(s, fast_top_half).exclusive()) {
        Ok(h) => h,
        Err(_) => return fail(code, "child: exclusive install failed\n"),
    };
    raise(s);
    if h.handled() != 1 || FAST.load(Ordering::SeqCst) != before + 1 {
        return fail(code + 1, "child: the raised signal was not handled once\n");
    }
    if h.uninstall().is_err() {
        return fail(code + 2, "child: uninstall failed\n");
    }
    0
}

/// Forks; the child runs `body` under `alarm(10)` and `_exit`s with its
/// result. Returns the pid.
fn fork_checked(body: impl FnOnce() -> c_int) -> libc::pid_t {
    // The child has one thread and runs only `body` (which uses the crate's
    // install/uninstall, sigaction, raise and write) and `_exit`.
    process::fork_with_watchdog(10, body)
}

/// Installs the slow top half on `sig()` in `mode` and runs it on a new
/// thread; returns once that thread is inside it.
fn slow_top_half_running(
    mode: SignalMode,
) -> (bottomhalf::SignalHandle, std::thread::JoinHandle<()>) {
    RELEASE.store(false, Ordering::SeqCst);
    ENTERED.store(0, Ordering::SeqCst);
    let h = RT
        .install(SignalConfig::new(sig(), slow_top_half).mode(mode))
        .unwrap();
    let t = std::thread::spawn(|| raise(sig()));
    wait_until("the top half to start", WAIT, || {
        ENTERED.load(Ordering::SeqCst) == 1
    });
    (h, t)
}

/// Fork while another thread is inside the slow top half; the child
/// uninstalls (inherited handle), re-installs and handles a signal.
fn fork_during_top_half(mode: SignalMode) {
    let (h, t) = slow_top_half_running(mode);
    // The parent keeps its handle (uninstalled after the top half ends);
    // the child takes its copy out.
    let mut h = Some(h);
    let pid = fork_checked(|| {
        if h.take().unwrap().uninstall().is_err() {
            return fail(10, "child: uninstall failed\n");
        }
        match mode {
            SignalMode::Exclusive => child_handles(sig(), 20),
            SignalMode::Shared => {
                // The registry counts the parent's handler as inside it
                // forever: a shared install is refused, not hung.
                match RT.install(SignalConfig::new(sig(), fast_top_half)) {
                    Err(SignalError::RegistryStranded(_)) => {}
                    _ => return fail(30, "child: shared install not refused\n"),
                }
                // The registry's handler stays; our action is gone.
                raise(sig());
                if FAST.load(Ordering::SeqCst) != 0 || ENTERED.load(Ordering::SeqCst) != 1 {
                    return fail(31, "child: a top half ran after uninstall\n");
                }
                child_handles(other_sig(), 40)
            }
        }
    });
    RELEASE.store(true, Ordering::SeqCst);
    t.join().unwrap();
    h.take().unwrap().uninstall().unwrap();
    assert_eq!(SLOW_DONE.load(Ordering::SeqCst), 1);
    assert_eq!(reap(pid), 0, "the fork child failed a check (see stderr)");
    println!("fork during a top half ({mode:?}): {}", outcome(mode));
}

/// Fork while one thread is inside the slow top half and another is in
/// an uninstall waiting for it; in the child that uninstall is finished:
/// the slot is free, and a signal raised there is handled.
fn fork_during_uninstall(mode: SignalMode) {
    let (h, t) = slow_top_half_running(mode);
    let ours = disposition(sig());
    let uninstalling = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let u = scope.spawn(|| {
            uninstalling.store(true, Ordering::SeqCst);
            h.uninstall()
        });
        wait_until("the uninstall to start", WAIT, || {
            uninstalling.load(Ordering::SeqCst)
        });
        if mode == SignalMode::Exclusive {
            // It restored the disposition; it is now waiting for the top
            // half (`wait_idle`).
            wait_until("the restore", WAIT, || disposition(sig()) != ours);
        }
        // Shared: inside `unregister`, waiting for the registry handler.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !u.is_finished(),
            "the uninstall did not wait for the top half"
        );
        let pid = fork_checked(move || match mode {
            SignalMode::Exclusive => child_handles(sig(), 20),
            SignalMode::Shared => {
                match RT.install(SignalConfig::new(sig(), fast_top_half)) {
                    Err(SignalError::RegistryStranded(_)) => {}
                    _ => return fail(30, "child: shared install not refused\n"),
                }
                // The slot is free (the uninstall is finished here); the
                // registry's handler holds the signal, so exclusive mode
                // refuses it, rather than finding the slot still taken.
                match RT.install(SignalConfig::new(sig(), fast_top_half).exclusive()) {
                    Err(SignalError::HeldByOther(_)) => {}
                    _ => {
                        return fail(
                            32,
                            "child: the slot of the finished uninstall is not free\n",
                        )
                    }
                }
                // The uninstall is finished here: the slow top half must
                // not run again.
                raise(sig());
                if ENTERED.load(Ordering::SeqCst) != 1 || FAST.load(Ordering::SeqCst) != 0 {
                    return fail(31, "child: the uninstalled top half ran\n");
                }
                child_handles(other_sig(), 40)
            }
        });
        RELEASE.store(true, Ordering::SeqCst);
        assert_eq!(u.join().unwrap(), Ok(()));
        assert_eq!(reap(pid), 0, "the fork child failed a check (see stderr)");
    });
    t.join().unwrap();
    println!("fork during an uninstall ({mode:?}): {}", outcome(mode));
}

fn outcome(mode: SignalMode) -> &'static str {
    match mode {
        SignalMode::Exclusive => {
            "child uninstalled, re-installed the signal and handled it; exit 0"
        }
        SignalMode::Shared => {
            "child uninstalled; shared install refused (RegistryStranded), no hang; \
             exclusive install of another signal handled it; exit 0"
        }
    }
}

#[test]
fn fork_during_top_half_exclusive() {
    scenario("fork_during_top_half_exclusive", || {
        fork_during_top_half(SignalMode::Exclusive)
    });
}

#[test]
fn fork_during_top_half_shared() {
    scenario("fork_during_top_half_shared", || {
        fork_during_top_half(SignalMode::Shared)
    });
}

#[test]
fn fork_during_uninstall_exclusive() {
    scenario("fork_during_uninstall_exclusive", || {
        fork_during_uninstall(SignalMode::Exclusive)
    });
}

#[test]
fn fork_during_uninstall_shared() {
    scenario("fork_during_uninstall_shared", || {
        fork_during_uninstall(SignalMode::Shared)
    });
}
