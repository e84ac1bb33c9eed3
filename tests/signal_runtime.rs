//! The signal backend's runtime side under real signals: drain threads
//! that block signals, storms from another process, CPU bindings across
//! backends, the per-runtime event fd (also across `fork()`), and sender
//! filters against forged `siginfo`.
//!
//! Signals are process-wide and the harness runs tests on parallel threads,
//! so each test uses its own signals and the tests that fork, spawn drain
//! threads or storm take `SERIAL`. Each test arms `alarm(WATCHDOG)`: a hang
//! kills the binary with SIGALRM.
//!
//! Children are made with `fork()`; the binary is multithreaded, so a
//! child calls only async-signal-safe functions (and this crate's
//! top-half API, which is).
#![cfg(all(not(miri), target_os = "linux"))]

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottomhalf::{
    Accept, Config, Host, MpscMailbox, Runtime, SigInfo, SignalConfig, SignalHandle, Signals,
    Tasklet, Vector,
};
use libc::c_int;

mod support;
use support::process::{fork_gated, release_and_reap, serial, watchdog};
use support::signal::{queue_retrying, rt, rt_sigqueueinfo, wait_until};
use support::signal_queue::CapSignalQueue;

const WATCHDOG: u32 = 120;
static SERIAL: Mutex<()> = Mutex::new(());

fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

fn poll_readable(fd: c_int, timeout_ms: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
}

// ---------------------------------------------------------------------------
// Item 3: drain threads block the signals; a storm drops nothing.

/// The kernel thread ids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<u32> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let entry = entry.unwrap();
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            tids.push(entry.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    tids
}

/// The thread ids of the `bh-sig/0..cpus` threads, once each has named
/// itself (a new thread sets its name when it starts running).
fn drain_thread_ids(cpus: usize) -> Vec<u32> {
    let mut tids = Vec::new();
    wait_until("the drain threads' names", Duration::from_secs(20), || {
        tids = (0..cpus)
            .flat_map(|c| threads_named(&format!("bh-sig/{c}")))
            .collect();
        tids.len() == cpus
    });
    tids
}

/// The blocked-signal mask of thread `tid` (`SigBlk` in its status).
fn blocked_mask(tid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("SigBlk:"))
        .expect("SigBlk line");
    u64::from_str_radix(line["SigBlk:".len()..].trim(), 16).unwrap()
}

fn bit(sig: c_int) -> u64 {
    1 << (sig - 1)
}

#[test]
fn drain_threads_block_async_signals_and_the_opt_out_does_not() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    static MASK_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    let cpus = MASK_RT.check_cpus().unwrap();
    // SAFETY: reading this thread's mask into a valid sigset.
    let before = unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        (1..=64)
            .filter(|&s| libc::sigismember(&cur, s) == 1)
            .count()
    };

    let drains = MASK_RT.spawn_drain_threads().unwrap();
    let tids = drain_thread_ids(cpus);
    let must_block = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGCHLD,
        libc::SIGPIPE,
        libc::SIGWINCH,
        rt(0),
        rt(1),
        rt(2),
        rt(3),
        libc::SIGRTMAX(),
    ];
    let must_not = [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGTRAP,
        libc::SIGSYS,
    ];
    for &tid in &tids {
        let mask = blocked_mask(tid);
        println!("bh-sig thread {tid}: SigBlk {mask:016x}");
        for sig in must_block {
            assert_ne!(mask & bit(sig), 0, "thread {tid} does not block {sig}");
        }
        for sig in must_not {
            assert_eq!(mask & bit(sig), 0, "thread {tid} blocks fault {sig}");
        }
    }
    drop(drains);
    // The spawning thread got its own mask back.
    // SAFETY: as above.
    let after = unsafe {
        let mut cur: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
        (1..=64)
            .filter(|&s| libc::sigismember(&cur, s) == 1)
            .count()
    };
    assert_eq!(after, before, "the spawner's mask was restored");

    // The opt-out: the threads inherit this thread's (empty) mask.
    let drains = MASK_RT.spawn_drain_threads_unmasked().unwrap();
    let tids = drain_thread_ids(cpus);
    for &tid in &tids {
        assert_eq!(blocked_mask(tid) & bit(libc::SIGUSR1), 0);
        assert_eq!(blocked_mask(tid) & bit(rt(0)), 0);
    }
    drop(drains);
}

const STORM_SIGNALS: c_int = 4;
const STORM: usize = 100_000;
static STORM_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
static STORM_MB: MpscMailbox<SigInfo, 65536> = MpscMailbox::new();
static STORM_SEEN: [AtomicU8; STORM] = [const { AtomicU8::new(0) }; STORM];
static STORM_WRONG: AtomicU32 = AtomicU32::new(0);
/// Top halves that ran on a drain thread.
static ON_DRAIN_THREAD: AtomicU32 = AtomicU32::new(0);
std::thread_local! {
    /// Set by the bottom half: it runs only on drain threads here.
    static IS_DRAIN_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static STORM_BH: Tasklet = Tasklet::new(&STORM_RT, || {
    IS_DRAIN_THREAD.with(|f| f.set(true));
    let mut rx = STORM_MB.consumer().unwrap();
    while let Some(info) = rx.pop() {
        let seq = info.value;
        let expected = rt((seq % STORM_SIGNALS as usize) as c_int);
        if seq >= STORM || info.code != libc::SI_QUEUE || info.signal != expected {
            STORM_WRONG.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        STORM_SEEN[seq].fetch_add(1, Ordering::Relaxed);
    }
});

fn storm_top_half(_: &SigInfo) {
    if IS_DRAIN_THREAD.with(|f| f.get()) {
        ON_DRAIN_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    STORM_BH.schedule();
}

#[test]
fn storm_of_100k_over_4_rt_signals_from_another_process_drops_nothing() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    // Reproducing the old behaviour: BH_STORM_UNMASKED=1 lets the kernel
    // run top halves on the drain threads (20-30% dropped on a loaded
    // 2-core machine).
    let unmasked = std::env::var_os("BH_STORM_UNMASKED").is_some();
    let drains = if unmasked {
        STORM_RT.spawn_drain_threads_unmasked().unwrap()
    } else {
        STORM_RT.spawn_drain_threads().unwrap()
    };
    let handles: Vec<SignalHandle> = (0..STORM_SIGNALS)
        .map(|k| {
            STORM_RT
                .install(SignalConfig::new(rt(k), storm_top_half).capture(&STORM_MB))
                .unwrap()
        })
        .collect();

    let _queue = CapSignalQueue::new(4096);
    let mut fds = [0; 2];
    // SAFETY: a valid array for pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let report = fds[1];
    let parent = getpid();
    let started = Instant::now();
    let (child, go) = fork_gated(move || {
        let mut retries = 0u64;
        for seq in 0..STORM {
            let sig = rt((seq % STORM_SIGNALS as usize) as c_int);
            if !queue_retrying(parent, sig, seq, &mut retries) {
                return 2;
            }
        }
        // SAFETY: 8 bytes to the report pipe.
        unsafe { libc::write(report, (&retries as *const u64).cast(), 8) };
        0
    });
    // SAFETY: the child holds its own copy of the write end.
    unsafe { libc::close(report) };
    assert_eq!(release_and_reap(child, go), 0, "child sigqueue failed");
    let sent_in = started.elapsed();
    let mut retries = 0u64;
    // SAFETY: reading 8 bytes from our pipe end, then closing it.
    unsafe {
        assert_eq!(libc::read(fds[0], (&mut retries as *mut u64).cast(), 8), 8);
        libc::close(fds[0]);
    }
    let handled = || handles.iter().map(|h| u64::from(h.handled())).sum::<u64>();
    let dropped = || handles.iter().map(|h| u64::from(h.dropped())).sum::<u64>();
    wait_until("every payload", Duration::from_secs(60), || {
        handled() == STORM as u64 && STORM_MB.is_empty() && !STORM_BH.is_scheduled()
    });
    let elapsed = started.elapsed();
    let seen_once = STORM_SEEN
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) == 1)
        .count();
    println!(
        "storm (4 RT signals, 65536-slot mailbox, drain threads {}): sent {STORM}; \
         handled {}; dropped {}; seen once {seen_once}; top halves on drain threads {}; \
         EAGAIN retries {retries}; sent in {sent_in:?}, all drained in {elapsed:?}",
        if unmasked { "unmasked" } else { "masked" },
        handled(),
        dropped(),
        ON_DRAIN_THREAD.load(Ordering::Relaxed),
    );
    let (total_dropped, mb_dropped) = (dropped(), STORM_MB.dropped());
    drop(handles);
    drop(drains);
    assert_eq!(total_dropped, 0, "the mailbox overflowed");
    assert_eq!(mb_dropped, 0);
    assert_eq!(STORM_WRONG.load(Ordering::Relaxed), 0);
    assert_eq!(seen_once, STORM, "payloads not delivered exactly once");
    assert_eq!(
        ON_DRAIN_THREAD.load(Ordering::Relaxed),
        0,
        "a top half ran on a drain thread"
    );
}

// ---------------------------------------------------------------------------
// Item 4: a top half lands on a drained CPU slot whatever thread it runs on.

static BIND_RT: Runtime<Signals, 512> = Runtime::new(Config::DEFAULT);
static HOST_RT: Runtime<Host, 1024> = Runtime::new(Config::DEFAULT);

#[test]
fn a_host_bound_thread_taking_a_signal_raises_on_a_drained_cpu() {
    watchdog(WATCHDOG);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const V: Vector = Vector::new(5);
    BIND_RT
        .register(V, "HOST_BOUND", |_| {
            RUNS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let h = BIND_RT
        .install(SignalConfig::new(rt(10), |_| BIND_RT.raise(V)))
        .unwrap();
    let cpus = BIND_RT.check_cpus().unwrap();
    // A thread acting as Host CPU 511: an index the Signals runtime has a
    // slot for but (on any machine with fewer than 512 CPUs) never drains.
    std::thread::spawn(|| {
        let _cpu = HOST_RT.bind_current_thread(511).unwrap();
        // SAFETY: raising an installed signal on this thread.
        unsafe { libc::raise(rt(10)) };
    })
    .join()
    .unwrap();
    assert_eq!(h.handled(), 1);
    let stranded: Vec<usize> = (cpus..512).filter(|&c| BIND_RT.pending(c) != 0).collect();
    assert!(stranded.is_empty(), "raised on undrained CPUs {stranded:?}");
    let _ = BIND_RT.drain_all();
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "drain_all ran the raise");
    h.uninstall().unwrap();
}

#[test]
fn an_out_of_range_host_binding_does_not_panic_the_handler() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    const V: Vector = Vector::new(9);
    let h = BIND_RT
        .install(SignalConfig::new(rt(11), |_| BIND_RT.raise(V)))
        .unwrap();
    let cpus = BIND_RT.check_cpus().unwrap();
    // In a child: before the fix the handler panicked (index 1000 of 512
    // slots), which aborts, or in a forked child may deadlock in the panic
    // hook (the reaper kills it).
    let (child, go) = fork_gated(move || {
        let Ok(_cpu) = HOST_RT.bind_current_thread(1000) else {
            return 2;
        };
        // SAFETY: raising an installed signal on this thread.
        unsafe { libc::raise(rt(11)) };
        let landed = (0..cpus).any(|c| BIND_RT.pending(c) & (1 << 9) != 0);
        if landed {
            0
        } else {
            3
        }
    });
    assert_eq!(
        release_and_reap(child, go),
        0,
        "the child's handler aborted (1006) or raised on an undrained CPU (3)"
    );
    h.uninstall().unwrap();
}

// ---------------------------------------------------------------------------
// Item 5: one event fd per runtime, readable on kicks and captures.

#[test]
fn event_fds_are_per_runtime_and_a_kick_reaches_only_its_own() {
    watchdog(WATCHDOG);
    static EA: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    static EB: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    const V: Vector = Vector::new(7);
    EA.register(V, "EA", |_| {}).unwrap();
    let fa: std::os::fd::BorrowedFd<'static> = EA.event_fd().unwrap();
    let fb = EB.event_fd().unwrap();
    assert_ne!(fa.as_raw_fd(), fb.as_raw_fd());
    // A new fd starts readable; clear both.
    assert!(EA.clear_event_fd());
    assert!(EB.clear_event_fd());
    assert!(!poll_readable(fa.as_raw_fd(), 0));
    EA.raise(V); // idle CPU, no drain running: a kick
    assert!(poll_readable(fa.as_raw_fd(), 1000), "EA's kick reached EA");
    assert!(!poll_readable(fb.as_raw_fd(), 0), "EA's kick reached EB");
    assert!(EA.clear_event_fd());
    assert!(!EB.clear_event_fd());
    let _ = EA.drain_all();
}

#[test]
fn a_capture_with_an_empty_top_half_makes_the_event_fd_readable() {
    watchdog(WATCHDOG);
    static CAP_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    static CAP_MB: MpscMailbox<SigInfo, 16> = MpscMailbox::new();
    let fd = CAP_RT.event_fd().unwrap().as_raw_fd();
    let h = CAP_RT
        .install(SignalConfig::new(rt(12), |_| {}).capture(&CAP_MB))
        .unwrap();
    let _ = CAP_RT.clear_event_fd();
    // SAFETY: raising an installed signal on this thread.
    unsafe { libc::raise(rt(12)) };
    assert!(
        poll_readable(fd, 1000),
        "a captured SigInfo did not make the event fd readable"
    );
    // The protocol: clear, drain, pop.
    assert!(CAP_RT.clear_event_fd());
    let _ = CAP_RT.drain_all();
    let info = CAP_MB.consumer().unwrap().pop().expect("the capture");
    assert_eq!(info.signal, rt(12));
    h.uninstall().unwrap();
}

// ---------------------------------------------------------------------------
// Item 8 (event fds): parent and child never share wake-ups.

#[test]
fn after_fork_parent_and_child_event_fds_are_independent() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    static FORK_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    const V: Vector = Vector::new(8);
    FORK_RT.register(V, "FORK", |_| {}).unwrap();
    let fd = FORK_RT.event_fd().unwrap().as_raw_fd();
    let _ = FORK_RT.clear_event_fd();

    // 1. Once a child cleared its fd (it starts readable: the child
    // inherits whatever work was pending), the child's kick makes its own
    // fd readable, never the parent's.
    let (child, go) = fork_gated(move || {
        let _ = FORK_RT.clear_event_fd();
        if poll_readable(fd, 0) {
            return 11;
        }
        FORK_RT.raise(V);
        // Left readable: it must not show in the parent.
        if !poll_readable(fd, 1000) {
            return 12;
        }
        0
    });
    assert_eq!(release_and_reap(child, go), 0, "child 1");
    assert!(
        !poll_readable(fd, 100),
        "the child's kick made the parent's fd readable"
    );

    // 2. The parent kicks; a child clears its own fd; the parent's stays
    // readable.
    FORK_RT.raise(V);
    assert!(poll_readable(fd, 0));
    let (child, go) = fork_gated(move || {
        if !FORK_RT.clear_event_fd() {
            return 20;
        }
        if poll_readable(fd, 0) {
            return 21;
        }
        0
    });
    assert_eq!(release_and_reap(child, go), 0, "child 2");
    assert!(
        poll_readable(fd, 0),
        "a child reading its fd stole the parent's wake-up"
    );
    assert!(FORK_RT.clear_event_fd());
    let _ = FORK_RT.drain_all();

    // 3. The parent kicks while a child lives (maybe before the child's
    // fork handler ran): the child's fd, once cleared, stays quiet.
    let (child, go) = fork_gated(move || {
        let _ = FORK_RT.clear_event_fd();
        if poll_readable(fd, 300) {
            return 30;
        }
        0
    });
    FORK_RT.raise(V);
    assert_eq!(release_and_reap(child, go), 0, "child 3");
    assert!(poll_readable(fd, 0));
    assert!(FORK_RT.clear_event_fd());
    let _ = FORK_RT.drain_all();
}

// ---------------------------------------------------------------------------
// Item 6: sender filters against forged siginfo.

/// Sends `sig` to `pid` with `rt_sigqueueinfo`, claiming `code` and
/// sender `claimed`; the system call's result. Async-signal-safe.
fn forge(pid: libc::pid_t, sig: c_int, code: c_int, claimed: libc::pid_t) -> libc::c_long {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    rt_sigqueueinfo(pid, sig, code, claimed, uid, 77)
}

/// Unverifiable codes a process can send another with rt_sigqueueinfo.
const FORGED_CODES: [c_int; 4] = [libc::SI_TIMER, libc::SI_ASYNCIO, -42, libc::SI_QUEUE];

#[test]
fn forged_sender_codes_are_rejected_by_filters_and_counted() {
    let _g = serial(&SERIAL);
    watchdog(WATCHDOG);
    static FILTER_RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    let parent = getpid();
    let us: &'static [libc::pid_t] = Box::leak(vec![parent].into_boxed_slice());
    let same = FILTER_RT
        .install(SignalConfig::new(rt(13), |_| {}).accept(Accept::SameProcess))
        .unwrap();
    let listed = FILTER_RT
        .install(SignalConfig::new(rt(14), |_| {}).accept(Accept::Pids(us)))
        .unwrap();
    static SAME: Accept = Accept::SameProcess;
    let lenient = FILTER_RT
        .install(SignalConfig::new(rt(15), |_| {}).accept(Accept::AllowUnverified(&SAME)))
        .unwrap();

    // Every forged siginfo claims to come from the parent itself.
    let (child, go) = fork_gated(move || {
        for sig in [rt(13), rt(14)] {
            for code in FORGED_CODES {
                if forge(parent, sig, code, parent) != 0 {
                    return 2;
                }
            }
        }
        // The lenient filter: a claim it checks (SI_QUEUE from pid 1) is
        // rejected; a claim-less code and a matching claim pass.
        for (code, claimed) in [
            (libc::SI_QUEUE, 1),
            (libc::SI_TIMER, 0),
            (libc::SI_QUEUE, parent),
        ] {
            if forge(parent, rt(15), code, claimed) != 0 {
                return 3;
            }
        }
        // The kernel refuses non-negative codes and SI_TKILL from another
        // process: they are what a filter can trust.
        if forge(parent, rt(13), libc::SI_USER, parent) != -1
            || forge(parent, rt(13), -6, parent) != -1
        {
            return 4;
        }
        0
    });
    assert_eq!(release_and_reap(child, go), 0, "the forging child failed");
    let n = FORGED_CODES.len() as u32;
    wait_until("the forged signals", Duration::from_secs(20), || {
        same.handled() + same.rejected() == n
            && listed.handled() + listed.rejected() == n
            && lenient.handled() + lenient.rejected() == 3
    });
    println!(
        "forged: SameProcess rejected {}/{n}, Pids rejected {}/{n}, AllowUnverified(SameProcess) accepted {}/3",
        same.rejected(),
        listed.rejected(),
        lenient.handled()
    );
    assert_eq!((same.handled(), same.rejected()), (0, n));
    assert_eq!((listed.handled(), listed.rejected()), (0, n));
    assert_eq!((lenient.handled(), lenient.rejected()), (2, 1));

    // Liveness: the filters still accept what they can verify.
    // SAFETY: raising installed signals on this thread (SI_TKILL, filled by
    // the kernel with our pid).
    unsafe {
        libc::raise(rt(13));
        libc::raise(rt(14));
    }
    assert_eq!(same.handled(), 1);
    assert_eq!(listed.handled(), 1);
    drop((same, listed, lenient));
}

/// An event-loop thread (the `event_fd` pattern: no drain threads, its own
/// `drain_all`) flushes work items pending on *another* CPU slot: the
/// wait drains that slot itself (`Backend::run_as_cpu`) instead of
/// spinning for ever (new-user review: `flush_hang`). Plain and delayed
/// items, and `cancel_sync` of one running nowhere.
#[test]
fn an_event_loop_thread_flushes_work_pending_on_another_slot() {
    use bottomhalf::{DelayedWork, Work};
    let _s = serial(&SERIAL);
    watchdog(WATCHDOG);
    static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    static W: Work = Work::new("w", |_| {});
    static D: DelayedWork = DelayedWork::new("d", |_| {});
    // SAFETY: sysconf reads a constant; not in a handler.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    if cpus < 2 {
        println!("one configured CPU: no other slot to test");
        return;
    }
    let _fd = RT.event_fd().unwrap(); // set-up: CPU routing on
    std::thread::spawn(move || {
        // Pinned to the first allowed CPU; the item goes to another slot.
        let cpu = support::process::pin_to_first_allowed_cpu();
        let other = (cpu + 1) % cpus as usize;
        assert!(RT.queue_work_on(other, &W));
        assert_eq!(W.flush(), Ok(true), "a plain item on slot {other}");
        assert_eq!(W.runs(), 1);
        assert!(RT.queue_delayed_work_on(other, &D, Duration::from_secs(3600)));
        assert_eq!(D.flush(), Ok(true), "a delayed item on slot {other}");
        assert_eq!(D.runs(), 1);
        assert!(RT.queue_work_on(other, &W));
        assert_eq!(W.cancel_sync(), Ok(true));
        assert_eq!(W.runs(), 1);
        assert_eq!(RT.drain_all(), bottomhalf::DrainOutcome::Complete);
    })
    .join()
    .unwrap();
}
