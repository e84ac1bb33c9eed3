//! Shared and exclusive signal modes against other signal users
//! (tokio::signal, signal-hook), in both orders; exclusive-mode refusal and
//! no-overwrite uninstall; the panic path; signals around uninstall.
//!
//! Handlers are process-wide, so each test re-executes this binary as a
//! child that runs only that test's scenario (`BH_SCENARIO=<name>`), with
//! an `alarm` watchdog; the parent checks the child's exit and output.
#![cfg(all(not(miri), target_os = "linux"))]

use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bottomhalf::{Config, Runtime, SignalConfig, SignalError, Signals};
use libc::c_int;

mod support;
use support::process::{self, expect_success};
use support::signal::{query, raise};

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

/// In the child for `name`: arms the watchdog, runs `body`, exits 0.
/// In the parent: re-runs this test binary for `name` only, as a child,
/// and returns its output.
fn scenario(name: &str, body: impl FnOnce()) -> Option<Output> {
    Some(process::scenario(name, 30, &[], body))
}

static OURS: AtomicU32 = AtomicU32::new(0);

fn our_top_half(_: &bottomhalf::SigInfo) {
    OURS.fetch_add(1, Ordering::SeqCst);
}

/// tokio::signal and bottomhalf (shared) on SIGUSR1; `tokio_first` picks
/// the order. Both see every signal; after bottomhalf's uninstall tokio
/// still does, and the process is alive.
fn tokio_both_ways(tokio_first: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut h = None;
        if !tokio_first {
            h = Some(
                RT.install(SignalConfig::new(libc::SIGUSR1, our_top_half))
                    .unwrap(),
            );
        }
        let mut stream = signal(SignalKind::user_defined1()).unwrap();
        if tokio_first {
            h = Some(
                RT.install(SignalConfig::new(libc::SIGUSR1, our_top_half))
                    .unwrap(),
            );
        }
        let h = h.unwrap();
        for round in 1..=3 {
            raise(libc::SIGUSR1);
            tokio::time::timeout(Duration::from_secs(5), stream.recv())
                .await
                .expect("tokio did not see the signal")
                .unwrap();
            assert_eq!(OURS.load(Ordering::SeqCst), round);
        }
        assert_eq!(h.handled(), 3);
        h.uninstall().unwrap();
        raise(libc::SIGUSR1);
        tokio::time::timeout(Duration::from_secs(5), stream.recv())
            .await
            .expect("tokio stopped seeing the signal after our uninstall")
            .unwrap();
        assert_eq!(OURS.load(Ordering::SeqCst), 3, "ours ran after uninstall");
        println!("tokio_first={tokio_first}: both saw 3, tokio saw the 4th, alive");
    });
}

#[test]
fn shared_mode_chains_with_tokio_signal_tokio_first() {
    if let Some(out) = scenario("shared_mode_chains_with_tokio_signal_tokio_first", || {
        tokio_both_ways(true)
    }) {
        expect_success("tokio first", out);
    }
}

#[test]
fn shared_mode_chains_with_tokio_signal_bottomhalf_first() {
    if let Some(out) = scenario(
        "shared_mode_chains_with_tokio_signal_bottomhalf_first",
        || tokio_both_ways(false),
    ) {
        expect_success("bottomhalf first", out);
    }
}

/// signal-hook (a counting action) and bottomhalf (shared) on SIGUSR2.
fn signal_hook_both_ways(hook_first: bool) {
    let theirs = Arc::new(AtomicU32::new(0));
    let register = |theirs: &Arc<AtomicU32>| {
        let t = Arc::clone(theirs);
        // SAFETY: the action only increments an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(libc::SIGUSR2, move || {
                t.fetch_add(1, Ordering::SeqCst);
            })
        }
        .unwrap()
    };
    let mut h = None;
    let mut id = None;
    if hook_first {
        id = Some(register(&theirs));
    }
    h = h.or(Some(
        RT.install(SignalConfig::new(libc::SIGUSR2, our_top_half))
            .unwrap(),
    ));
    if !hook_first {
        id = Some(register(&theirs));
    }
    let h = h.unwrap();
    for round in 1..=3 {
        raise(libc::SIGUSR2);
        assert_eq!(theirs.load(Ordering::SeqCst), round);
        assert_eq!(OURS.load(Ordering::SeqCst), round);
    }
    h.uninstall().unwrap();
    raise(libc::SIGUSR2);
    assert_eq!(
        theirs.load(Ordering::SeqCst),
        4,
        "theirs stopped after our uninstall"
    );
    assert_eq!(OURS.load(Ordering::SeqCst), 3, "ours ran after uninstall");
    assert!(signal_hook::low_level::unregister(id.unwrap()));
    println!("signal-hook first={hook_first}: both saw 3, theirs saw the 4th, alive");
}

#[test]
fn shared_mode_chains_with_signal_hook_hook_first() {
    if let Some(out) = scenario("shared_mode_chains_with_signal_hook_hook_first", || {
        signal_hook_both_ways(true)
    }) {
        expect_success("signal-hook first", out);
    }
}

#[test]
fn shared_mode_chains_with_signal_hook_bottomhalf_first() {
    if let Some(out) = scenario(
        "shared_mode_chains_with_signal_hook_bottomhalf_first",
        || signal_hook_both_ways(false),
    ) {
        expect_success("bottomhalf first", out);
    }
}

/// Exclusive mode refuses a signal signal-hook holds, changes nothing, and
/// signal-hook keeps working; a signal at SIG_IGN or SIG_DFL is taken.
#[test]
fn exclusive_mode_refuses_a_signal_another_handler_holds() {
    if let Some(out) = scenario(
        "exclusive_mode_refuses_a_signal_another_handler_holds",
        || {
            let theirs = Arc::new(AtomicU32::new(0));
            let t = Arc::clone(&theirs);
            // SAFETY: the action only increments an atomic.
            let id = unsafe {
                signal_hook::low_level::register(libc::SIGUSR2, move || {
                    t.fetch_add(1, Ordering::SeqCst);
                })
            }
            .unwrap();
            let before = query(libc::SIGUSR2);
            let err = RT
                .install(SignalConfig::new(libc::SIGUSR2, our_top_half).exclusive())
                .unwrap_err();
            assert_eq!(err, SignalError::HeldByOther(libc::SIGUSR2));
            assert!(err.to_string().contains("held by another handler"), "{err}");
            assert_eq!(query(libc::SIGUSR2).sa_sigaction, before.sa_sigaction);
            raise(libc::SIGUSR2);
            assert_eq!(theirs.load(Ordering::SeqCst), 1);
            assert_eq!(OURS.load(Ordering::SeqCst), 0);
            // Shared mode runs beside it.
            let h = RT
                .install(SignalConfig::new(libc::SIGUSR2, our_top_half))
                .unwrap();
            raise(libc::SIGUSR2);
            assert_eq!((theirs.load(Ordering::SeqCst), h.handled()), (2, 1));
            h.uninstall().unwrap();
            signal_hook::low_level::unregister(id);
            // SIG_IGN is taken and given back.
            // SAFETY: setting SIG_IGN for SIGHUP.
            unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
            let h = RT
                .install(SignalConfig::new(libc::SIGHUP, our_top_half).exclusive())
                .unwrap();
            raise(libc::SIGHUP);
            assert_eq!(h.handled(), 1);
            h.uninstall().unwrap();
            assert_eq!(query(libc::SIGHUP).sa_sigaction, libc::SIG_IGN);
            println!("exclusive refused the held signal; took and restored SIG_IGN");
        },
    ) {
        expect_success("refusal", out);
    }
}

/// Exclusive install, then signal-hook installs over it (chaining to
/// ours): uninstall leaves signal-hook's handler in place (`Replaced`),
/// the next signal reaches signal-hook exactly once, and the process is
/// alive (before the fix it restored SIG_DFL over it and SIGUSR2 killed
/// the process).
#[test]
fn exclusive_uninstall_never_overwrites_a_newer_handler() {
    if let Some(out) = scenario(
        "exclusive_uninstall_never_overwrites_a_newer_handler",
        || {
            let h = RT
                .install(SignalConfig::new(libc::SIGUSR2, our_top_half).exclusive())
                .unwrap();
            let theirs = Arc::new(AtomicU32::new(0));
            let t = Arc::clone(&theirs);
            // SAFETY: the action only increments an atomic.
            let _id = unsafe {
                signal_hook::low_level::register(libc::SIGUSR2, move || {
                    t.fetch_add(1, Ordering::SeqCst);
                })
            }
            .unwrap();
            let registry = query(libc::SIGUSR2).sa_sigaction;
            raise(libc::SIGUSR2);
            // The registry chains to ours (its previous handler).
            assert_eq!((theirs.load(Ordering::SeqCst), h.handled()), (1, 1));
            assert_eq!(h.uninstall(), Err(SignalError::Replaced(libc::SIGUSR2)));
            assert_eq!(query(libc::SIGUSR2).sa_sigaction, registry, "left in place");
            raise(libc::SIGUSR2);
            assert_eq!(theirs.load(Ordering::SeqCst), 2, "theirs ran exactly once");
            assert_eq!(OURS.load(Ordering::SeqCst), 1, "ours ran after uninstall");
            // The slot is free again, and exclusive mode now refuses.
            assert_eq!(
                RT.install(SignalConfig::new(libc::SIGUSR2, our_top_half).exclusive())
                    .unwrap_err(),
                SignalError::HeldByOther(libc::SIGUSR2)
            );
            println!("uninstall left signal-hook's handler; it still fires; alive");
        },
    ) {
        expect_success("no overwrite", out);
    }
}

/// Queues `sig` to this process with a siginfo the caller makes up. The
/// kernel accepts any negative `si_code` but `SI_TKILL` (those, and the
/// kernel's own positive codes, only from the thread whose id is the
/// process id); `SI_USER` and `SI_TKILL` are sent with `kill`/`tgkill`.
#[cfg(target_pointer_width = "64")]
fn forge(sig: c_int, code: c_int, pid: libc::pid_t, value: usize) {
    use support::signal::{rt_sigqueueinfo, ForgedInfo};
    const _: () = assert!(std::mem::size_of::<ForgedInfo>() == 128);
    // SAFETY: to our own process; the signal is blocked on this thread by
    // the caller or has a handler.
    let rc = unsafe {
        match code {
            libc::SI_USER => libc::kill(libc::getpid(), sig) as libc::c_long,
            libc::SI_TKILL => libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                sig,
            ),
            _ => rt_sigqueueinfo(libc::getpid(), sig, code, pid, 4242, value),
        }
    };
    assert_eq!(rc, 0, "rt_sigqueueinfo refused code {code}");
}

/// Odd `si_code`s (SI_TIMER, SI_ASYNCIO, SI_MESGQ, SI_SIGIO, unknown
/// negative ones, besides SI_USER and SI_TKILL) and forged sender pids,
/// each sent with `rt_sigqueueinfo`: the handler never panics (a panic
/// would abort this child), every delivery is counted (`handled` with
/// `Accept::Any`; `handled + rejected` with a filter, whatever it makes of
/// the code), and the top half sees what was sent.
#[cfg(target_pointer_width = "64")]
fn odd_siginfo(mode: bottomhalf::SignalMode, sig: c_int) {
    use bottomhalf::{Accept, SignalCounts};
    static SEEN: AtomicU32 = AtomicU32::new(0);
    SEEN.store(0, Ordering::SeqCst);
    static LAST_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    static NOBODY: [libc::pid_t; 1] = [1];
    let cases: [(c_int, libc::pid_t); 10] = [
        (libc::SI_QUEUE, 12345),
        (libc::SI_QUEUE, -1),
        (libc::SI_TIMER, 0),
        (libc::SI_MESGQ, i32::MAX),
        (libc::SI_ASYNCIO, 7),
        (libc::SI_TKILL, 0),
        (-60, 31337),
        (libc::SI_USER, 0),
        (libc::SI_SIGIO, -77),
        (-1000, 8),
    ];
    let top_half = |info: &bottomhalf::SigInfo| {
        // The pid first: the sender waits for SEEN, and the handler may run
        // on another thread.
        LAST_PID.store(info.pid, Ordering::SeqCst);
        SEEN.fetch_add(1, Ordering::SeqCst);
    };
    let h = RT
        .install(SignalConfig::new(sig, top_half).mode(mode))
        .unwrap();
    for (i, &(code, pid)) in cases.iter().enumerate() {
        forge(sig, code, pid, i);
        // Process-directed: usually handled on this thread before the
        // call returns, but the kernel may pick another thread.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (SEEN.load(Ordering::SeqCst) as usize) < i + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "case {i} never handled"
            );
            std::thread::yield_now();
        }
        if code == libc::SI_QUEUE {
            assert_eq!(LAST_PID.load(Ordering::SeqCst), pid, "forged pid passed on");
        }
    }
    assert_eq!(h.handled() as usize, cases.len());
    assert_eq!(SEEN.load(Ordering::SeqCst) as usize, cases.len());
    h.uninstall().unwrap();
    let before = SignalCounts::total(sig);
    let h = RT
        .install(
            SignalConfig::new(sig, top_half)
                .mode(mode)
                .accept(Accept::Pids(&NOBODY)),
        )
        .unwrap();
    for (i, &(code, pid)) in cases.iter().enumerate() {
        forge(sig, code, pid, i);
    }
    // Deliveries may run on another thread: wait until all are counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while {
        let c = h.counts();
        ((c.handled + c.rejected) as usize) < cases.len()
    } {
        assert!(std::time::Instant::now() < deadline, "{:?}", h.counts());
        std::thread::yield_now();
    }
    let c = h.counts();
    assert_eq!((c.handled + c.rejected) as usize, cases.len(), "{c:?}");
    assert_eq!((c.forwarded, c.lost), (0, 0));
    h.uninstall().unwrap();
    let after = SignalCounts::total(sig);
    assert_eq!(
        (after.handled + after.rejected) - (before.handled + before.rejected),
        cases.len() as u32
    );
    println!(
        "odd siginfo ({mode:?}): {} forged deliveries, all counted (filter: {} handled, {} rejected)",
        cases.len() * 2,
        c.handled,
        c.rejected
    );
}

#[cfg(target_pointer_width = "64")]
#[test]
fn odd_siginfo_never_panics_the_handler_and_is_counted() {
    if let Some(out) = scenario(
        "odd_siginfo_never_panics_the_handler_and_is_counted",
        || {
            odd_siginfo(bottomhalf::SignalMode::Shared, libc::SIGRTMIN() + 7);
            odd_siginfo(bottomhalf::SignalMode::Exclusive, libc::SIGRTMIN() + 8);
        },
    ) {
        expect_success("odd siginfo", out);
    }
}

// ---------------------------------------------------------------------------
// A handler that replaced bottomhalf's exclusive one (issue 8, items 1-2;
// review: the handler ran whichever installation was current).

/// The disposition bottomhalf's exclusive handler was when `chaining`
/// (or `plain`) replaced it.
static mut REPLACED: libc::sigaction = unsafe { std::mem::zeroed() };
/// Calls into `chaining` / `plain`.
static THEIRS: AtomicU32 = AtomicU32::new(0);

type SigActionFn = extern "C" fn(c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Another library's handler that chains to the one it replaced (as
/// libjsig, crash reporters and language runtimes do).
extern "C" fn chaining(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    THEIRS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: REPLACED was written before this handler was installed.
    let prev = unsafe { (*std::ptr::addr_of!(REPLACED)).sa_sigaction };
    if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
        // SAFETY: the previous handler was an SA_SIGINFO one (bottomhalf's).
        let f: SigActionFn = unsafe { std::mem::transmute::<usize, SigActionFn>(prev) };
        f(sig, info, ctx);
    }
}

/// Another library's handler that does not chain.
extern "C" fn plain(_sig: c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    THEIRS.fetch_add(1, Ordering::SeqCst);
}

/// Installs `f` over `sig` with raw `sigaction`, saving what it replaced
/// in `REPLACED`.
fn replace_with(sig: c_int, f: SigActionFn) {
    // SAFETY: a zeroed sigaction is valid; `f` has the SA_SIGINFO
    // signature; REPLACED is written only here, before `f` can run.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = f as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(sig, &act, std::ptr::addr_of_mut!(REPLACED)),
            0
        );
    }
}

/// Exclusive install; another library installs a handler that chains to
/// bottomhalf's; uninstall leaves it (`Replaced`). Then:
/// - a refused exclusive re-install (`HeldByOther`) and a raise: theirs
///   runs once, ours nothing, and the process is alive (before the fix the
///   refused install forgot the chain and the handler forwarded the call
///   back to theirs, which called ours again: unbounded recursion);
/// - a shared install (the registry takes over with theirs as its
///   "previous"): one raise runs our top half once (it ran twice: once
///   through the chain to the exclusive handler, which ran whatever
///   installation was current, once as the registry action), theirs once;
/// - the shared uninstall and a raise: theirs once, ours nothing, alive.
#[test]
fn shared_reinstall_after_replaced_runs_the_top_half_once() {
    if let Some(out) = scenario(
        "shared_reinstall_after_replaced_runs_the_top_half_once",
        || {
            use bottomhalf::SignalCounts;
            let sig = libc::SIGRTMIN() + 7;
            let h = RT
                .install(SignalConfig::new(sig, our_top_half).exclusive())
                .unwrap();
            replace_with(sig, chaining);
            raise(sig);
            // Theirs chains to ours, still installed: runs once.
            assert_eq!((THEIRS.load(Ordering::SeqCst), h.handled()), (1, 1));
            assert_eq!(h.uninstall(), Err(SignalError::Replaced(sig)));
            let base = SignalCounts::total(sig);
            assert_eq!(
                RT.install(SignalConfig::new(sig, our_top_half).exclusive())
                    .unwrap_err(),
                SignalError::HeldByOther(sig)
            );
            raise(sig);
            assert_eq!(THEIRS.load(Ordering::SeqCst), 2, "theirs ran once");
            assert_eq!(OURS.load(Ordering::SeqCst), 1, "ours ran after uninstall");
            let h2 = RT.install(SignalConfig::new(sig, our_top_half)).unwrap();
            OURS.store(0, Ordering::SeqCst);
            raise(sig);
            let hits = OURS.load(Ordering::SeqCst);
            println!(
                "one raise after Replaced + shared re-install: top half ran {hits} time(s), \
                 handled() = {}, theirs ran {}",
                h2.handled(),
                THEIRS.load(Ordering::SeqCst) - 2
            );
            assert_eq!(hits, 1, "top half ran {hits} times for one delivery");
            assert_eq!(h2.handled(), 1);
            assert_eq!(THEIRS.load(Ordering::SeqCst), 3, "theirs ran once");
            h2.uninstall().unwrap();
            raise(sig);
            assert_eq!(THEIRS.load(Ordering::SeqCst), 4, "theirs ran once");
            assert_eq!(OURS.load(Ordering::SeqCst), 1, "ours ran after uninstall");
            let c = SignalCounts::total(sig);
            println!(
                "after Replaced, 3 raises: handled +{}, retired +{}, forwarded +{}, lost +{}; alive",
                c.handled - base.handled,
                c.retired - base.retired,
                c.forwarded - base.forwarded,
                c.lost - base.lost
            );
            // The chained calls with no installation are counted once
            // each (`retired`); with the shared one in force, the action
            // counts the delivery and the chained call counts nothing.
            assert_eq!(c.handled - base.handled, 1);
            assert_eq!(c.retired - base.retired, 2);
            assert_eq!((c.forwarded, c.lost), (base.forwarded, base.lost));
        },
    ) {
        expect_success("shared re-install after Replaced", out);
    }
}

/// Blocks or unblocks `sigs` on this thread.
fn mask_all(how: c_int, sigs: &[c_int]) {
    // SAFETY: a valid sigset for pthread_sigmask; only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

static LATE_HANDLE: std::sync::Mutex<Option<bottomhalf::SignalHandle>> =
    std::sync::Mutex::new(None);
/// 1: the uninstall inside `replace_and_uninstall` returned `Replaced`.
static LATE_RESULT: AtomicU32 = AtomicU32::new(0);
/// `OURS` when `replace_and_uninstall` ran (our top half must not have
/// run before it).
static OURS_BEFORE: AtomicU32 = AtomicU32::new(u32::MAX);

/// The handler of the second signal: another library replaces
/// bottomhalf's handler of the first (not chaining), and bottomhalf's
/// handle is uninstalled (`Replaced`), all while a delivery of the first
/// signal is already routed to bottomhalf's handler (its frame is under
/// this one).
extern "C" fn replace_and_uninstall(_: c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let sig = libc::SIGRTMIN() + 7;
    OURS_BEFORE.store(OURS.load(Ordering::SeqCst), Ordering::SeqCst);
    replace_with(sig, plain);
    // The main thread is in pthread_sigmask: it holds no lock.
    let h = LATE_HANDLE.try_lock().ok().and_then(|mut g| g.take());
    if let Some(h) = h {
        if h.uninstall() == Err(SignalError::Replaced(sig)) {
            LATE_RESULT.store(1, Ordering::SeqCst);
        }
    }
}

/// Exclusive mode, item 2: a delivery the kernel routed to bottomhalf's
/// handler before another library replaced it, reaching the handler after
/// the uninstall returned `Replaced`, is counted (before the fix: counted
/// nowhere). Made deterministic with two pending signals: unblocking both
/// at once makes the kernel set up the lower one's frame (bottomhalf's
/// handler) and then the higher one's on top; the higher one's handler
/// runs first and does the replace and the uninstall.
///
/// (`retired`). A call from a handler that chains to the retired one
/// looks the same to it and is counted there once too:
/// `shared_reinstall_after_replaced_runs_the_top_half_once`.
#[test]
fn late_delivery_to_a_replaced_exclusive_handler_is_counted() {
    if let Some(out) = scenario(
        "late_delivery_to_a_replaced_exclusive_handler_is_counted",
        || {
            use bottomhalf::SignalCounts;
            let sig = libc::SIGRTMIN() + 7;
            let trigger = libc::SIGRTMIN() + 8;
            // SAFETY: a zeroed sigaction is valid; the handler has the
            // SA_SIGINFO signature.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = replace_and_uninstall as SigActionFn as usize;
                act.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut act.sa_mask);
                assert_eq!(libc::sigaction(trigger, &act, std::ptr::null_mut()), 0);
            }
            let h = RT
                .install(SignalConfig::new(sig, our_top_half).exclusive())
                .unwrap();
            *LATE_HANDLE.lock().unwrap() = Some(h);
            let base = SignalCounts::total(sig);
            mask_all(libc::SIG_BLOCK, &[sig, trigger]);
            raise(sig);
            raise(trigger);
            mask_all(libc::SIG_UNBLOCK, &[sig, trigger]);
            assert_eq!(LATE_RESULT.load(Ordering::SeqCst), 1, "uninstall: Replaced");
            assert_eq!(
                OURS_BEFORE.load(Ordering::SeqCst),
                0,
                "frames in that order"
            );
            // The delivery was routed to ours, not theirs.
            assert_eq!(THEIRS.load(Ordering::SeqCst), 0);
            assert_eq!(OURS.load(Ordering::SeqCst), 0, "ours ran after uninstall");
            let c = SignalCounts::total(sig);
            let counted = (c.handled - base.handled)
                + (c.forwarded - base.forwarded)
                + (c.lost - base.lost)
                + (c.retired - base.retired);
            println!("late delivery after Replaced: counted {counted} time(s): {c:?}");
            assert_eq!(counted, 1, "the late delivery was counted nowhere");
            assert_eq!(c.retired - base.retired, 1, "counted as retired");
        },
    ) {
        expect_success("late delivery after Replaced", out);
    }
}
