//! Shared and exclusive signal modes against other signal users
//! (tokio::signal, signal-hook), in both orders; exclusive-mode refusal and
//! no-overwrite uninstall; the panic path; signals around uninstall.
//!
//! Handlers are process-wide, so each test re-executes this binary as a
//! child that runs only that test's scenario (`BH_SCENARIO=<name>`), with
//! an `alarm` watchdog; the parent checks the child's exit and output.
#![cfg(all(not(miri), target_os = "linux"))]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bottomhalf::{Config, Runtime, SignalConfig, SignalError, Signals};
use libc::c_int;

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

/// In the child for `name`: arms the watchdog, runs `body`, exits 0.
/// In the parent: re-runs this test binary for `name` only, as a child,
/// and returns its output.
fn scenario(name: &str, body: impl FnOnce()) -> Option<Output> {
    if std::env::var("BH_SCENARIO").as_deref() == Ok(name) {
        // SAFETY: alarm only arms this process's SIGALRM timer.
        unsafe { libc::alarm(30) };
        body();
        std::process::exit(0);
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("BH_SCENARIO", name)
        .output()
        .unwrap();
    Some(out)
}

fn expect_success(name: &str, out: Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    assert!(
        out.status.success(),
        "scenario {name} failed: {:?}\n{stdout}\n{stderr}",
        out.status
    );
}

fn raise(sig: c_int) {
    // SAFETY: raising a signal that has a handler in these scenarios.
    unsafe { libc::raise(sig) };
}

fn query(sig: c_int) -> libc::sigaction {
    // SAFETY: querying a disposition into a valid struct.
    unsafe {
        let mut cur: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut cur), 0);
        cur
    }
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

/// A `siginfo_t` as a sender of `rt_sigqueueinfo` lays it out (64-bit
/// Linux: the union starts at byte 16; `_rt` is pid, uid, sigval).
#[cfg(target_pointer_width = "64")]
#[repr(C)]
struct ForgedInfo {
    signo: c_int,
    errno: c_int,
    code: c_int,
    _pad: c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
    _rest: [u8; 96],
}

/// Queues `sig` to this process with a siginfo the caller makes up. The
/// kernel accepts any negative `si_code` but `SI_TKILL` (those, and the
/// kernel's own positive codes, only from the thread whose id is the
/// process id); `SI_USER` and `SI_TKILL` are sent with `kill`/`tgkill`.
#[cfg(target_pointer_width = "64")]
fn forge(sig: c_int, code: c_int, pid: libc::pid_t, value: usize) {
    const _: () = assert!(std::mem::size_of::<ForgedInfo>() == 128);
    let info = ForgedInfo {
        signo: sig,
        errno: 0,
        code,
        _pad: 0,
        pid,
        uid: 4242,
        value,
        _rest: [0; 96],
    };
    // SAFETY: rt_sigqueueinfo with a readable 128-byte siginfo, to our own
    // process; the signal is blocked on this thread by the caller or has a
    // handler.
    let rc = unsafe {
        match code {
            libc::SI_USER => libc::kill(libc::getpid(), sig) as libc::c_long,
            libc::SI_TKILL => libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                sig,
            ),
            _ => libc::syscall(
                libc::SYS_rt_sigqueueinfo,
                libc::getpid(),
                sig,
                &info as *const ForgedInfo,
            ),
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
