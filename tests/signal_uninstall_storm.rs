//! Install/uninstall cycling under a `sigqueue` storm (issue 8, item 1):
//! every signal that arrives around an uninstall is handled by the top
//! half, passed on to the previous disposition, or counted; none is lost
//! silently.
//!
//! A sender process queues sequence payloads (`0, 1, 2, ...`) on one
//! real-time signal for `STORM` while this process installs and
//! uninstalls a top half on it as fast as it can. The cycling thread
//! blocks the signal, so deliveries land on other threads, where they can
//! race with the uninstall.
//!
//! Each test runs in a child process of its own (this binary re-executed
//! with `BH_SCENARIO=<name>`, handlers are process-wide) under an `alarm`
//! watchdog; the parent checks its exit status and prints its figures.
#![cfg(all(not(miri), target_os = "linux"))]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottomhalf::{Config, Runtime, SigInfo, SignalConfig, SignalCounts, Signals};
use libc::c_int;

mod support;
use support::process;

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

/// How long the sender sends.
const STORM: Duration = Duration::from_secs(3);
/// Most payloads one storm may send (the size of the per-payload tables).
const CAP: usize = 1 << 20;

/// One child at a time: the storms share two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// In the child for `name`: arms the watchdog, runs `body`, exits 0. In
/// the parent: re-runs this binary for `name` only and checks it exited 0.
fn scenario(name: &str, body: impl FnOnce()) {
    process::run_if_scenario(name, 60, body);
    let _serial = process::serial(&SERIAL);
    let out = process::reexec(process::SCENARIO_VAR, name, &[], &[]);
    process::expect_success(name, out);
}

fn storm_signal() -> c_int {
    libc::SIGRTMIN() + 3
}

/// Per payload: how many times the previous (underneath) handler and our
/// top half saw it.
static PREV_SEEN: [AtomicU8; CAP] = [const { AtomicU8::new(0) }; CAP];
static OURS_SEEN: [AtomicU8; CAP] = [const { AtomicU8::new(0) }; CAP];
static PREV: AtomicU32 = AtomicU32::new(0);
static OURS: AtomicU32 = AtomicU32::new(0);
/// Deliveries with a payload out of range (not from the sender).
static STRAY: AtomicU32 = AtomicU32::new(0);

fn mark(table: &[AtomicU8; CAP], value: usize) {
    match table.get(value) {
        Some(c) => {
            c.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            STRAY.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The handler installed underneath with raw `sigaction` (`SA_SIGINFO`):
/// counts every payload it sees.
extern "C" fn counting_handler(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel (or a chaining handler) passes the delivery's
    // siginfo; the storm's deliveries are SI_QUEUE, so `si_value` is set.
    let value = unsafe { info.as_ref().map(|i| i.si_value().sival_ptr as usize) };
    mark(&PREV_SEEN, value.unwrap_or(usize::MAX));
    PREV.fetch_add(1, Ordering::Relaxed);
}

fn top_half(info: &SigInfo) {
    mark(&OURS_SEEN, info.value);
    OURS.fetch_add(1, Ordering::Relaxed);
}

/// Sets the signal's disposition with raw `sigaction`.
fn set_disposition(sig: c_int, handler: libc::sighandler_t, flags: c_int) {
    // SAFETY: a zeroed sigaction is valid; we set handler, flags and an
    // empty mask; `counting_handler` has the SA_SIGINFO signature.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = flags;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(libc::sigaction(sig, &act, std::ptr::null_mut()), 0);
    }
}

/// Blocks (`how = SIG_BLOCK`) or unblocks `sig` on the calling thread.
fn mask(how: c_int, sig: c_int) {
    // SAFETY: a valid sigset for pthread_sigmask; only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

/// Whether `sig` is pending for the process or the calling thread.
fn pending(sig: c_int) -> bool {
    // SAFETY: a valid sigset for sigpending.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        assert_eq!(libc::sigpending(&mut set), 0);
        libc::sigismember(&set, sig) == 1
    }
}

fn now() -> libc::timespec {
    // SAFETY: clock_gettime (async-signal-safe) into a valid timespec.
    unsafe {
        let mut t: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
        t
    }
}

fn elapsed_ns(from: &libc::timespec) -> u64 {
    let t = now();
    let secs: i64 = t.tv_sec - from.tv_sec;
    let nanos: i64 = t.tv_nsec - from.tv_nsec;
    (secs * 1_000_000_000 + nanos) as u64
}

/// Forks the sender: it queues payloads `0, 1, ...` on `sig` to this
/// process for `STORM` (at most `CAP`), retrying `EAGAIN`, writes how many
/// it sent to a pipe and exits (0, or 1 if `sigqueue` failed otherwise).
/// The child calls only async-signal-safe functions (this process has
/// several threads). Returns (pid, the pipe's read end).
fn spawn_sender(sig: c_int) -> (libc::pid_t, c_int) {
    let target = std::process::id() as libc::pid_t;
    let mut fds = [0; 2];
    // SAFETY: pipe into a valid array; fork; in the child only
    // async-signal-safe calls (clock_gettime, sigqueue, sched_yield, write,
    // _exit).
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::close(fds[0]);
            let start = now();
            let limit = STORM.as_nanos() as u64;
            let mut sent: u64 = 0;
            let mut rc = 0;
            while (sent as usize) < CAP && elapsed_ns(&start) < limit {
                let v = libc::sigval {
                    sival_ptr: sent as usize as *mut libc::c_void,
                };
                if libc::sigqueue(target, sig, v) == 0 {
                    sent += 1;
                } else if *libc::__errno_location() == libc::EAGAIN {
                    libc::sched_yield();
                } else {
                    rc = 1;
                    break;
                }
            }
            libc::write(fds[1], (&sent as *const u64).cast(), 8);
            libc::_exit(rc);
        }
        libc::close(fds[1]);
        (pid, fds[0])
    }
}

/// Whether the sender exited; panics if it failed.
fn sender_done(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waiting (without blocking) for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == 0 {
        return false;
    }
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "sender failed: status {status}"
    );
    true
}

fn read_sent(fd: c_int) -> usize {
    let mut sent: u64 = 0;
    // SAFETY: reading 8 bytes into a u64 from our pipe end.
    let n = unsafe { libc::read(fd, (&mut sent as *mut u64).cast(), 8) };
    assert_eq!(n, 8, "sender did not report its count");
    // SAFETY: closing our pipe end.
    unsafe { libc::close(fd) };
    sent as usize
}

/// Our counters since `base`: (handled, forwarded, lost).
fn counts(sig: c_int, base: SignalCounts) -> (u32, u32, u32) {
    let now = SignalCounts::total(sig);
    (
        now.handled - base.handled,
        now.forwarded - base.forwarded,
        now.lost - base.lost,
    )
}

/// Cycles install/uninstall of `config` until the sender is done; returns
/// (payloads sent, cycles). A receiver thread takes the deliveries (this
/// thread blocks the signal).
fn cycle_under_storm(config: SignalConfig) -> (usize, u32) {
    let sig = config.signal();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    mask(libc::SIG_BLOCK, sig);
    let (sender, fd) = spawn_sender(sig);
    let mut cycles = 0u32;
    while !sender_done(sender) {
        let h = RT.install(config).expect("install");
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        h.uninstall().expect("uninstall");
        cycles += 1;
    }
    let sent = read_sent(fd);
    stop.store(true, Ordering::Relaxed);
    receiver.join().unwrap();
    mask(libc::SIG_UNBLOCK, sig);
    (sent, cycles)
}

/// Lets signals still queued or in a handler land: returns once nothing
/// is pending and `figures` gave the same answer 20 ms apart (or `done`
/// says so), within 10 s.
fn settle<T: PartialEq + Copy>(
    sig: c_int,
    mut figures: impl FnMut() -> T,
    done: impl Fn(T) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Blocking and unblocking on this thread delivers anything pending
        // for the process here, at the unblock.
        mask(libc::SIG_BLOCK, sig);
        let p = pending(sig);
        mask(libc::SIG_UNBLOCK, sig);
        let before = figures();
        std::thread::sleep(Duration::from_millis(20));
        if !p && (done(before) || before == figures()) {
            return;
        }
        assert!(Instant::now() < deadline, "signals did not settle");
    }
}

/// Payloads `0..sent` that reached neither handler, and the largest number
/// of times the previous handler / our top half saw one payload.
fn tally(sent: usize) -> (usize, u8, u8, usize) {
    let mut unseen = 0;
    let mut prev_max = 0;
    let mut ours_max = 0;
    let mut prev_missed = 0;
    for i in 0..sent {
        let p = PREV_SEEN[i].load(Ordering::Relaxed);
        let o = OURS_SEEN[i].load(Ordering::Relaxed);
        if p == 0 && o == 0 {
            unseen += 1;
        }
        if p == 0 {
            prev_missed += 1;
        }
        prev_max = prev_max.max(p);
        ours_max = ours_max.max(o);
    }
    (unseen, prev_max, ours_max, prev_missed)
}

/// Shared mode over a counting handler installed first with raw
/// `sigaction`: `signal-hook-registry` chains to it on every delivery, so
/// it must see every payload exactly once, however the uninstalls fall;
/// our top half sees each at most once; nothing is forwarded (the
/// registry does that) or lost.
#[test]
fn shared_uninstall_under_storm_loses_nothing() {
    scenario("shared_uninstall_under_storm_loses_nothing", || {
        let sig = storm_signal();
        set_disposition(
            sig,
            counting_handler as extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as libc::sighandler_t,
            libc::SA_SIGINFO | libc::SA_RESTART,
        );
        let base = SignalCounts::total(sig);
        let (sent, cycles) = cycle_under_storm(SignalConfig::new(sig, top_half));
        settle(
            sig,
            || (PREV.load(Ordering::Relaxed), counts(sig, base)),
            |(prev, _)| prev as usize >= sent,
        );
        let (handled, forwarded, lost) = counts(sig, base);
        let prev = PREV.load(Ordering::Relaxed);
        let (unseen, prev_max, ours_max, prev_missed) = tally(sent);
        println!(
            "uninstall storm (shared): sent {sent}, handled {handled}, previous handler {prev}, \
             forwarded {forwarded}, lost {lost} over {cycles} install/uninstall cycles; \
             reached no handler {unseen}"
        );
        assert_eq!(STRAY.load(Ordering::Relaxed), 0, "payloads out of range");
        assert_eq!(unseen, 0, "payloads that reached no handler: lost silently");
        assert_eq!(lost, 0);
        assert_eq!(
            handled,
            OURS.load(Ordering::Relaxed),
            "handled counts our runs"
        );
        assert_eq!(
            prev_missed, 0,
            "the previous handler missed payloads: not chained while installed"
        );
        assert_eq!(prev_max, 1, "the previous handler saw a payload twice");
        assert_eq!(prev as usize, sent, "previous handler: every delivery once");
        assert!(ours_max <= 1, "our top half saw a payload twice");
        assert_eq!(forwarded, 0, "shared mode: the registry forwards, not us");
        assert!(
            handled > 0,
            "the top half never ran: the storm missed the installs"
        );
        assert!(cycles >= 100, "only {cycles} cycles");
    });
}

/// Exclusive mode over `SIG_IGN` (it refuses to install over a handler
/// function). The kernel discards the signals sent while `SIG_IGN` is in
/// force, so the sum is not exact; but the deliveries that reached our
/// handler after its uninstall began are forwarded (to `SIG_IGN`: done
/// with) and counted, none is lost, and none runs twice. The storm is
/// repeated (up to 5 times) until such a delivery was seen, so the
/// forwarding path is shown to run.
#[test]
fn exclusive_uninstall_under_storm_forwards_and_counts() {
    scenario(
        "exclusive_uninstall_under_storm_forwards_and_counts",
        || {
            let sig = storm_signal();
            set_disposition(sig, libc::SIG_IGN, 0);
            let base = SignalCounts::total(sig);
            let config = SignalConfig::new(sig, top_half).exclusive();
            let (mut sent, mut cycles, mut rounds) = (0, 0, 0);
            loop {
                for c in &OURS_SEEN {
                    c.store(0, Ordering::Relaxed);
                }
                let (s, c) = cycle_under_storm(config);
                rounds += 1;
                settle(sig, || counts(sig, base), |_| false);
                let (_, forwarded, _) = counts(sig, base);
                let (_, _, ours_max, _) = tally(s);
                assert!(ours_max <= 1, "our top half saw a payload twice");
                sent += s;
                cycles += c;
                if forwarded > 0 || rounds == 5 {
                    break;
                }
            }
            let (handled, forwarded, lost) = counts(sig, base);
            let prev = PREV.load(Ordering::Relaxed);
            println!(
                "uninstall storm (exclusive over SIG_IGN): sent {sent}, handled {handled}, \
             previous handler {prev}, forwarded {forwarded}, lost {lost} over {cycles} \
             install/uninstall cycles in {rounds} storm(s)"
            );
            assert_eq!(STRAY.load(Ordering::Relaxed), 0, "payloads out of range");
            assert_eq!(lost, 0);
            assert_eq!(
                handled,
                OURS.load(Ordering::Relaxed),
                "handled counts our runs"
            );
            assert!(handled > 0, "the top half never ran");
            assert!(
                handled as usize + forwarded as usize <= sent,
                "more deliveries counted than sent"
            );
            assert!(
                forwarded > 0,
                "no delivery reached the handler during an uninstall in {rounds} storms \
             (or such deliveries are not counted)"
            );
            // SAFETY: querying the disposition into a valid struct.
            let restored = unsafe {
                let mut cur: libc::sigaction = std::mem::zeroed();
                libc::sigaction(sig, std::ptr::null(), &mut cur);
                cur.sa_sigaction
            };
            assert_eq!(restored, libc::SIG_IGN, "uninstall restores SIG_IGN");
        },
    );
}
