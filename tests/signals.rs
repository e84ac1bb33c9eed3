//! The Unix-signal backend under real signals.
//!
//! Signals are process-wide and the harness runs tests on parallel threads,
//! so every test uses its own signals, and the tests that fork or count
//! allocations take `SERIAL`. Each test arms `alarm(WATCHDOG)`: a hang kills
//! the binary with SIGALRM (the timer is process-wide; every test re-arms
//! it, so the bound is "WATCHDOG seconds after the last test started").
//!
//! Children are made with `fork()`; the test binary is multithreaded, so a
//! child calls only async-signal-safe functions (`read`, `write`,
//! `sigqueue`, `kill`, `setresuid`, `nanosleep`, `_exit`).
#![cfg(all(not(miri), target_os = "linux"))]

mod support;
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::process::{fork_gated, release_and_reap, serial, watchdog};
use support::signal::{query, queue_retrying, rt, wait_until};
use support::signal_queue::CapSignalQueue;
use support::RecordingAlloc;

use bottomhalf::{
    Accept, Config, MpscMailbox, Runtime, SigInfo, SignalConfig, SignalError, Signals, Tasklet,
    Vector,
};
use libc::c_int;

const WATCHDOG: u32 = 60;
static SERIAL: Mutex<()> = Mutex::new(());

fn errno() -> c_int {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(v: c_int) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = v };
}

// ---------------------------------------------------------------------------
// The allocator: counts allocations made while a handler runs on the
// allocating thread (the flag is set by a raw wrapper around our handler).

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}
static HANDLER_ALLOCS: AtomicUsize = AtomicUsize::new(0);
/// Handler runs seen by the wrapper: proves the allocator check covered them.
static WRAPPER_RUNS: AtomicUsize = AtomicUsize::new(0);

fn record() {
    if IN_HANDLER.try_with(Cell::get).unwrap_or(false) {
        HANDLER_ALLOCS.fetch_add(1, Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOC: RecordingAlloc = RecordingAlloc {
    on_alloc: |_| record(),
    on_dealloc: record,
};

type SigAction = extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void);
static WRAPPED: [AtomicUsize; 129] = [const { AtomicUsize::new(0) }; 129];

/// Sets the "in handler" flag around the real handler of `sig`.
extern "C" fn flagging_wrapper(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let inner = WRAPPED[sig as usize].load(Ordering::SeqCst);
    let was = IN_HANDLER.with(|f| f.replace(true));
    WRAPPER_RUNS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `inner` is the SA_SIGINFO handler `wrap_handler` read from
    // `sigaction` (ours), stored before this wrapper was installed.
    let f: SigAction = unsafe { std::mem::transmute::<usize, SigAction>(inner) };
    f(sig, info, ctx);
    IN_HANDLER.with(|f| f.set(was));
}

/// Replaces the installed SA_SIGINFO handler of `sig` with
/// `flagging_wrapper` calling it. Uninstalling our handle later restores
/// the disposition from before our install, which removes the wrapper too.
fn wrap_handler(sig: c_int) {
    // SAFETY: querying and setting a disposition with valid structs.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut cur), 0);
        assert_ne!(cur.sa_flags & libc::SA_SIGINFO, 0);
        WRAPPED[sig as usize].store(cur.sa_sigaction, Ordering::SeqCst);
        cur.sa_sigaction = flagging_wrapper as SigAction as usize;
        assert_eq!(libc::sigaction(sig, &cur, std::ptr::null_mut()), 0);
    }
}

#[test]
fn allocator_self_test_sees_allocations_in_the_flagged_region() {
    let _g = serial(&SERIAL);
    let before = HANDLER_ALLOCS.load(Ordering::SeqCst);
    IN_HANDLER.with(|f| f.set(true));
    drop(std::hint::black_box(Box::new(7u64)));
    IN_HANDLER.with(|f| f.set(false));
    drop(std::hint::black_box(Box::new(7u64)));
    assert_eq!(HANDLER_ALLOCS.load(Ordering::SeqCst) - before, 2); // alloc + dealloc
    HANDLER_ALLOCS.store(before, Ordering::SeqCst);
}

// ---------------------------------------------------------------------------

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

#[test]
fn errno_is_preserved_across_the_handler() {
    watchdog(WATCHDOG);
    static RAN: AtomicU32 = AtomicU32::new(0);
    let h = RT
        .install(SignalConfig::new(libc::SIGUSR2, |_| {
            set_errno(libc::EBADF); // a top half that clobbers errno
            RAN.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    for (i, sent_by_kill) in [false, true, false, true].into_iter().enumerate() {
        set_errno(777);
        // SAFETY: raising / pthread_kill-ing an installed signal to this
        // thread: delivered before the call returns.
        unsafe {
            if sent_by_kill {
                libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2);
            } else {
                libc::raise(libc::SIGUSR2);
            }
        }
        assert_eq!(RAN.load(Ordering::SeqCst), i as u32 + 1);
        assert_eq!(errno(), 777, "the handler leaked its errno");
    }
    h.uninstall().unwrap();
}

fn same_action(a: &libc::sigaction, b: &libc::sigaction) -> bool {
    let mask_eq = (1..=64).all(|s| {
        // SAFETY: valid sigsets, signal numbers in range.
        unsafe { libc::sigismember(&a.sa_mask, s) == libc::sigismember(&b.sa_mask, s) }
    });
    a.sa_sigaction == b.sa_sigaction && a.sa_flags == b.sa_flags && mask_eq
}

/// Exclusive mode gives back exactly what it took: `SIG_IGN` with its own
/// flags and mask, plain `SIG_IGN`, `SIG_DFL` (a handler function it
/// refuses to take: `tests/signal_modes.rs`).
#[test]
fn exclusive_uninstall_and_drop_restore_the_previous_disposition_exactly() {
    watchdog(WATCHDOG);
    // SAFETY: setting dispositions with valid structs.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_IGN;
        act.sa_flags = libc::SA_RESTART | libc::SA_NODEFER;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, libc::SIGUSR2);
        libc::sigaddset(&mut act.sa_mask, libc::SIGWINCH);
        assert_eq!(
            libc::sigaction(libc::SIGTTIN, &act, std::ptr::null_mut()),
            0
        );
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::signal(libc::SIGXCPU, libc::SIG_DFL);
    }
    for sig in [libc::SIGTTIN, libc::SIGTTOU, libc::SIGXCPU] {
        let original = query(sig);
        let h = RT
            .install(SignalConfig::new(sig, |_| {}).exclusive())
            .unwrap();
        assert!(!same_action(&query(sig), &original), "ours is installed");
        h.uninstall().unwrap();
        assert!(
            same_action(&query(sig), &original),
            "uninstall restored {sig}"
        );
        // And through Drop.
        drop(
            RT.install(SignalConfig::new(sig, |_| {}).exclusive())
                .unwrap(),
        );
        assert!(same_action(&query(sig), &original), "drop restored {sig}");
    }
    assert_eq!(query(libc::SIGTTOU).sa_sigaction, libc::SIG_IGN);
    assert_eq!(query(libc::SIGXCPU).sa_sigaction, libc::SIG_DFL);
}

#[test]
fn refusals_have_clear_errors() {
    watchdog(WATCHDOG);
    for (sig, name) in [
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGFPE, "SIGFPE"),
    ] {
        let err = RT.install(SignalConfig::new(sig, |_| {})).unwrap_err();
        assert_eq!(err, SignalError::Forbidden(sig));
        assert!(err.to_string().contains(name), "{err}");
    }
    for sig in [0, -1, libc::SIGRTMAX() + 1, 1000, c_int::MIN] {
        let err = RT.install(SignalConfig::new(sig, |_| {})).unwrap_err();
        assert_eq!(err, SignalError::OutOfRange(sig));
        assert!(err.to_string().contains("not a signal number"), "{err}");
    }
    let err = RT.install(SignalConfig::new(32, |_| {})).unwrap_err();
    assert_eq!(err, SignalError::Reserved(32));
    assert!(err.to_string().contains("reserved"), "{err}");

    // A runtime with fewer CPU slots than the machine.
    static SMALL: Runtime<Signals, 1> = Runtime::new(Config::DEFAULT);
    // SAFETY: sysconf with a constant.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if cpus > 1 {
        let err = SMALL
            .install(SignalConfig::new(libc::SIGPWR, |_| {}))
            .unwrap_err();
        assert!(matches!(err, SignalError::TooFewCpus { slots: 1, .. }));
        assert!(err.to_string().contains("too small"), "{err}");
    }
}

#[test]
fn double_install_is_refused_until_uninstalled() {
    watchdog(WATCHDOG);
    let h = RT.install(SignalConfig::new(libc::SIGHUP, |_| {})).unwrap();
    for cfg in [
        SignalConfig::new(libc::SIGHUP, |_| {}),
        SignalConfig::new(libc::SIGHUP, |_| {}).exclusive(),
    ] {
        let err = RT.install(cfg).unwrap_err();
        assert_eq!(err, SignalError::AlreadyInstalled(libc::SIGHUP));
    }
    let err = RT
        .install(SignalConfig::new(libc::SIGHUP, |_| {}))
        .unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    h.uninstall().unwrap();
    RT.install(SignalConfig::new(libc::SIGHUP, |_| {}))
        .unwrap()
        .uninstall()
        .unwrap();
}

#[test]
fn pollable_fd_becomes_readable_when_work_is_pending() {
    watchdog(WATCHDOG);
    static POLL_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const WORK: Vector = Vector::new(11);
    POLL_RT
        .register(WORK, "SIGWORK", |_| {
            RUNS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let fd = POLL_RT.event_fd().unwrap().as_raw_fd();
    let h = POLL_RT
        .install(SignalConfig::new(rt(7), |_| POLL_RT.raise(WORK)))
        .unwrap();
    let poll = |timeout_ms| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) }
    };
    // A new fd starts readable; the fd is this runtime's alone, so once
    // cleared only its own kicks make it readable.
    assert!(POLL_RT.clear_event_fd());
    for round in 1..=3 {
        assert_eq!(poll(0), 0, "round {round}: readable before the signal");
        // SAFETY: raising an installed signal on this thread.
        unsafe { libc::raise(rt(7)) };
        assert_eq!(poll(5_000), 1, "round {round}: fd not readable");
        // The protocol: clear, then drain.
        assert!(POLL_RT.clear_event_fd());
        let _ = POLL_RT.drain_all();
        assert_eq!(RUNS.load(Ordering::SeqCst), round);
    }
    h.uninstall().unwrap();
}

// ---------------------------------------------------------------------------
// Children (made with `support::process::fork_gated`).

#[test]
fn sender_filters_reject_and_count() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    // `kill`: the kernel fills the sender's pid and uid (SI_USER).
    let sender = |sig: c_int| {
        move || {
            // SAFETY: kill is async-signal-safe.
            if unsafe { libc::kill(parent, sig) } == 0 {
                0
            } else {
                1
            }
        }
    };
    // `sigqueue`: the sender writes its pid and uid (SI_QUEUE), so a filter
    // cannot verify them.
    let queuer = |sig: c_int| {
        move || {
            let mut r = 0;
            if queue_retrying(parent, sig, 5, &mut r) {
                0
            } else {
                1
            }
        }
    };

    // Pid list: a listed child's kill is accepted, an unlisted one's
    // rejected, and so is the listed child's sigqueue (unverifiable) unless
    // the filter allows unverified senders.
    let (listed, go_listed) = fork_gated(move || sender(rt(5))() + queuer(rt(5))());
    let (unlisted, go_unlisted) = fork_gated(sender(rt(5)));
    let pids: &'static [libc::pid_t] = Box::leak(vec![listed].into_boxed_slice());
    static FROM: AtomicU32 = AtomicU32::new(0);
    let h = RT
        .install(
            SignalConfig::new(rt(5), |info| {
                FROM.store(info.pid as u32, Ordering::SeqCst);
            })
            .accept(Accept::Pids(pids)),
        )
        .unwrap();
    assert_eq!(release_and_reap(unlisted, go_unlisted), 0);
    assert_eq!(release_and_reap(listed, go_listed), 0);
    wait_until("three signals", Duration::from_secs(10), || {
        h.handled() + h.rejected() == 3
    });
    assert_eq!((h.handled(), h.rejected()), (1, 2));
    assert_eq!(FROM.load(Ordering::SeqCst), listed as u32);
    h.uninstall().unwrap();
    // Allowing unverified senders: a sigqueue claiming a listed pid passes.
    let (listed, go_listed) = fork_gated(queuer(rt(5)));
    let pids: &'static [libc::pid_t] = Box::leak(vec![listed].into_boxed_slice());
    let filter: &'static Accept = Box::leak(Box::new(Accept::Pids(pids)));
    let h = RT
        .install(SignalConfig::new(rt(5), |_| {}).accept(Accept::AllowUnverified(filter)))
        .unwrap();
    assert_eq!(release_and_reap(listed, go_listed), 0);
    wait_until("the queued signal", Duration::from_secs(10), || {
        h.handled() + h.rejected() == 1
    });
    assert_eq!((h.handled(), h.rejected()), (1, 0));
    h.uninstall().unwrap();

    // Same process: a child is rejected, this process's raise accepted.
    let h = RT
        .install(SignalConfig::new(rt(6), |_| {}).accept(Accept::SameProcess))
        .unwrap();
    let (child, go) = fork_gated(sender(rt(6)));
    assert_eq!(release_and_reap(child, go), 0);
    wait_until("the child's signal", Duration::from_secs(10), || {
        h.rejected() == 1
    });
    // SAFETY: raising an installed signal on this thread.
    unsafe { libc::raise(rt(6)) };
    assert_eq!((h.handled(), h.rejected()), (1, 1));
    h.uninstall().unwrap();

    // Same uid: as root, a child that drops to uid 65534 may signal us only
    // if our saved uid is 65534 (kill permission: sender's uid or euid ==
    // target's uid or saved uid). We keep real/effective 0 meanwhile.
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        let h = RT
            .install(SignalConfig::new(rt(8), |_| {}).accept(Accept::SameUid))
            .unwrap();
        // SAFETY: changing only the saved uid; glibc applies it to every
        // thread. Restored below.
        assert_eq!(unsafe { libc::setresuid(0, 0, 65534) }, 0);
        let (child, go) = fork_gated(move || {
            // SAFETY: setresuid is async-signal-safe (a system call in a
            // single-threaded child).
            if unsafe { libc::setresuid(65534, 65534, 65534) } != 0 {
                return 3;
            }
            sender(rt(8))()
        });
        assert_eq!(release_and_reap(child, go), 0);
        // SAFETY: euid is still 0, so restoring the saved uid is allowed.
        assert_eq!(unsafe { libc::setresuid(0, 0, 0) }, 0);
        wait_until("the other uid's signal", Duration::from_secs(10), || {
            h.rejected() == 1
        });
        // SAFETY: raising an installed signal on this thread.
        unsafe { libc::raise(rt(8)) };
        assert_eq!((h.handled(), h.rejected()), (1, 1));
        h.uninstall().unwrap();
    }
}

// ---------------------------------------------------------------------------
// The storm.

const RT_SIGNALS: c_int = 3;
const STORM_MAX: usize = 1_000_000;
static MAILBOX: MpscMailbox<SigInfo, 65536> = MpscMailbox::new();
static SEEN: [AtomicU8; STORM_MAX] = [const { AtomicU8::new(0) }; STORM_MAX];
static WRONG_SIGNAL: AtomicU32 = AtomicU32::new(0);
static USR1_SEEN: AtomicU32 = AtomicU32::new(0);
static BH: Tasklet = Tasklet::new(&RT, || {
    let mut rx = MAILBOX.consumer().unwrap();
    while let Some(info) = rx.pop() {
        if info.signal == libc::SIGUSR1 {
            USR1_SEEN.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let seq = info.value;
        if info.code != libc::SI_QUEUE || info.signal != rt((seq % 3) as c_int) {
            WRONG_SIGNAL.fetch_add(1, Ordering::Relaxed);
        }
        SEEN[seq].fetch_add(1, Ordering::Relaxed);
    }
});

fn storm_top_half(_: &SigInfo) {
    BH.schedule();
}

fn storm(total: usize) {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    assert!(total <= STORM_MAX);
    for s in &SEEN[..total] {
        s.store(0, Ordering::Relaxed);
    }
    USR1_SEEN.store(0, Ordering::SeqCst);
    WRONG_SIGNAL.store(0, Ordering::SeqCst);
    let drains = RT.spawn_drain_threads().unwrap();
    let mut handles = Vec::new();
    for sig in (0..RT_SIGNALS).map(rt).chain([libc::SIGUSR1]) {
        handles.push(
            RT.install(SignalConfig::new(sig, storm_top_half).capture(&MAILBOX))
                .unwrap(),
        );
        wrap_handler(sig);
    }
    let allocs_before = HANDLER_ALLOCS.load(Ordering::SeqCst);
    let wrapped_before = WRAPPER_RUNS.load(Ordering::SeqCst);
    let usr1_every = 100;
    // A short kernel queue: see `CapSignalQueue`.
    let _queue = CapSignalQueue::new(4096);

    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let report = fds[1];
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    let started = Instant::now();
    let (child, go) = fork_gated(move || {
        let mut retries = 0u64;
        for seq in 0..total {
            if !queue_retrying(parent, rt((seq % 3) as c_int), seq, &mut retries) {
                return 2;
            }
            if seq % usr1_every == 0 {
                // SAFETY: kill is async-signal-safe.
                unsafe { libc::kill(parent, libc::SIGUSR1) };
            }
        }
        // SAFETY: 8 bytes to the report pipe.
        unsafe { libc::write(report, (&retries as *const u64).cast(), 8) };
        0
    });
    // SAFETY: the child holds its own copy of the write end.
    unsafe { libc::close(report) };
    assert_eq!(release_and_reap(child, go), 0, "child sigqueue failed");
    let mut retries = 0u64;
    // SAFETY: reading 8 bytes from our pipe end.
    let n = unsafe { libc::read(fds[0], (&mut retries as *mut u64).cast(), 8) };
    assert_eq!(n, 8);
    // SAFETY: closing our pipe end.
    unsafe { libc::close(fds[0]) };

    let delivered = || -> u64 {
        handles[..RT_SIGNALS as usize]
            .iter()
            .map(|h| u64::from(h.handled()))
            .sum()
    };
    wait_until("every payload", Duration::from_secs(40), || {
        delivered() == total as u64 && MAILBOX.is_empty() && !BH.is_scheduled()
    });
    let elapsed = started.elapsed();
    let dropped: u32 = handles.iter().map(|h| h.dropped()).sum();
    let usr1_sent = total.div_ceil(usr1_every);
    let usr1 = handles[RT_SIGNALS as usize].handled();
    println!(
        "storm: sent {total} sigqueue payloads + {usr1_sent} SIGUSR1; delivered {}; dropped {dropped}; \
         EAGAIN retries {retries}; SIGUSR1 delivered {usr1} (coalesced {}); {elapsed:?}",
        delivered(),
        usr1_sent as u32 - usr1
    );
    let handler_allocs = HANDLER_ALLOCS.load(Ordering::SeqCst) - allocs_before;
    let wrapped = WRAPPER_RUNS.load(Ordering::SeqCst) - wrapped_before;
    drop(handles);
    drop(drains);

    assert_eq!(handler_allocs, 0, "a signal handler allocated");
    assert!(
        wrapped >= total,
        "the allocation check saw {wrapped} handler runs"
    );
    assert_eq!(dropped, 0);
    assert_eq!(MAILBOX.dropped(), 0);
    assert_eq!(WRONG_SIGNAL.load(Ordering::SeqCst), 0);
    let bad: Vec<usize> = (0..total)
        .filter(|&i| SEEN[i].load(Ordering::Relaxed) != 1)
        .take(10)
        .collect();
    assert!(
        bad.is_empty(),
        "payloads not delivered exactly once: {bad:?}"
    );
    assert!(usr1 >= 1 && usr1 as usize <= usr1_sent);
    assert_eq!(USR1_SEEN.load(Ordering::SeqCst), usr1);
}

#[test]
fn storm_of_100k_queued_payloads_each_delivered_exactly_once() {
    storm(100_000);
}

#[test]
#[ignore = "soak: 1e6 payloads, run with --ignored"]
fn soak_storm_of_1m_queued_payloads() {
    storm(1_000_000);
}
