//! `SignalHandle` in a `static OnceLock` (it is `Send + Sync`), and the
//! run-time sender filter `Accept::pid_set` under real signals from a
//! child whose pid the test learns when it forks it.
//!
//! Its own test binary: signal handlers are process-wide. Each test uses
//! its own signal and arms `alarm(WATCHDOG)`. The child is forked from a
//! multithreaded process, so it calls only async-signal-safe functions
//! (`read`, `write`, `kill`, `getppid`, `_exit`).
#![cfg(all(not(miri), target_os = "linux"))]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bottomhalf::{Accept, Config, PidSet, Runtime, SignalConfig, SignalHandle, Signals};
use libc::c_int;
use support::process::{fork_with_watchdog, reap, watchdog};
use support::signal::{rt, wait_until};

const WATCHDOG: u32 = 60;

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

// ---------------------------------------------------------------------------
// SignalHandle in a static.

static USR2: OnceLock<SignalHandle> = OnceLock::new();
static USR2_RUNS: AtomicU32 = AtomicU32::new(0);

/// `SignalHandle` is `Send + Sync` (this did not compile before issue 9:
/// a `PhantomData<*const ()>` made it `!Sync`, so `OnceLock<SignalHandle>`
/// was not `Sync` and could not be a `static`).
#[test]
fn signal_handle_lives_in_a_once_lock_static_and_is_read_from_other_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SignalHandle>();
    watchdog(WATCHDOG);

    let h = RT
        .install(SignalConfig::new(libc::SIGUSR2, |_| {
            USR2_RUNS.fetch_add(1, Ordering::Relaxed);
        }))
        .unwrap();
    USR2.set(h).unwrap();

    const THREADS: u32 = 4;
    const RAISES: u32 = 250;
    // Raisers (each `raise` is delivered to its own thread before it
    // returns: no coalescing) and a reader that polls the counters
    // through the static while they run.
    let reader = std::thread::spawn(|| {
        let mut last = 0;
        let mut reads = 0u32;
        while last < THREADS * RAISES {
            let now = USR2.get().expect("set before the reader started").handled();
            assert!(now >= last, "handled went backwards: {last} -> {now}");
            last = now;
            reads += 1;
            std::thread::yield_now();
        }
        reads
    });
    let raisers: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..RAISES {
                    // SAFETY: raising a signal whose handler is installed.
                    unsafe { libc::raise(libc::SIGUSR2) };
                }
            })
        })
        .collect();
    for r in raisers {
        r.join().unwrap();
    }
    let reads = reader.join().unwrap();

    let counts = std::thread::spawn(|| USR2.get().unwrap().counts())
        .join()
        .unwrap();
    println!(
        "OnceLock<SignalHandle>: {} raises on {THREADS} threads, handled {}, top half ran {}, \
         {reads} reads of the static from a reader thread",
        THREADS * RAISES,
        counts.handled,
        USR2_RUNS.load(Ordering::Relaxed)
    );
    assert_eq!(counts.handled, THREADS * RAISES);
    assert_eq!(USR2_RUNS.load(Ordering::Relaxed), THREADS * RAISES);
    assert_eq!((counts.rejected, counts.lost, counts.dropped), (0, 0, 0));
    assert_eq!(USR2.get().unwrap().signal(), libc::SIGUSR2);
}

// ---------------------------------------------------------------------------
// Accept::pid_set with a child learnt at run time.

static CHILDREN: PidSet<4> = PidSet::new();
static PIDSET_RUNS: AtomicU32 = AtomicU32::new(0);
/// The pid the top half saw last (the sender it accepted).
static LAST_SENDER: AtomicU32 = AtomicU32::new(0);

/// Signals the child sends per round (a real-time signal sent with `kill`:
/// `SI_USER`, a sender the kernel vouches for, and queued, so none
/// coalesce).
const BURST: u32 = 50;

/// The child: for each command byte `b'k'` on `cmd`, sends `BURST` signals
/// `sig` to its parent and answers one byte on `ack`; exits on EOF or
/// `b'q'`. Async-signal-safe calls only.
fn child_loop(cmd: c_int, ack: c_int, sig: c_int) -> c_int {
    loop {
        let mut b = 0u8;
        // SAFETY: reading one byte into a local from our pipe end.
        if unsafe { libc::read(cmd, (&mut b as *mut u8).cast(), 1) } != 1 || b == b'q' {
            return 0;
        }
        for _ in 0..BURST {
            // SAFETY: getppid and kill are async-signal-safe.
            if unsafe { libc::kill(libc::getppid(), sig) } != 0 {
                return 2;
            }
        }
        // SAFETY: writing one byte from a local to our pipe end.
        if unsafe { libc::write(ack, (&b as *const u8).cast(), 1) } != 1 {
            return 3;
        }
    }
}

/// Asks the child for one burst and waits until it has sent it.
fn burst(cmd: c_int, ack: c_int) {
    let k = b'k';
    let mut b = 0u8;
    // SAFETY: one byte to/from our pipe ends, from/into locals.
    unsafe {
        assert_eq!(libc::write(cmd, (&k as *const u8).cast(), 1), 1);
        assert_eq!(libc::read(ack, (&mut b as *mut u8).cast(), 1), 1);
    }
}

#[test]
fn pid_set_filter_accepts_a_child_learnt_at_run_time_until_it_is_removed() {
    watchdog(WATCHDOG);
    let sig = rt(3);
    let h = RT
        .install(
            SignalConfig::new(sig, |info| {
                LAST_SENDER.store(info.pid as u32, Ordering::Relaxed);
                PIDSET_RUNS.fetch_add(1, Ordering::Relaxed);
            })
            .accept(Accept::pid_set(&CHILDREN)),
        )
        .unwrap();

    let (mut to_child, mut from_child) = ([0; 2], [0; 2]);
    // SAFETY: valid 2-int arrays for pipe.
    unsafe {
        assert_eq!(libc::pipe(to_child.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(from_child.as_mut_ptr()), 0);
    }
    let child = fork_with_watchdog(WATCHDOG, || child_loop(to_child[0], from_child[1], sig));
    // SAFETY: closing the child's ends in the parent.
    unsafe {
        libc::close(to_child[0]);
        libc::close(from_child[1]);
    }
    let (cmd, ack) = (to_child[1], from_child[0]);
    let settle = |what: &str, handled: u32, rejected: u32| {
        wait_until(what, Duration::from_secs(20), || {
            h.handled() == handled && h.rejected() == rejected
        });
        println!(
            "  {what}: handled {}, rejected {}, top half ran {}",
            h.handled(),
            h.rejected(),
            PIDSET_RUNS.load(Ordering::Relaxed)
        );
    };
    println!("PidSet filter, child pid {child} learnt at fork, {BURST} signals per round:");

    // 1. Not in the set yet: every signal rejected, nothing runs.
    burst(cmd, ack);
    settle("before insert", 0, BURST);

    // 2. Inserted: accepted, and the top half sees the child as sender.
    assert_eq!(CHILDREN.insert(child), Ok(true));
    burst(cmd, ack);
    settle("in the set", BURST, BURST);
    assert_eq!(LAST_SENDER.load(Ordering::Relaxed), child as u32);

    // 3. Removed: rejected again.
    assert!(CHILDREN.remove(child));
    burst(cmd, ack);
    settle("after remove", BURST, 2 * BURST);

    // 4. Liveness after rejections: inserted again, accepted again.
    assert_eq!(CHILDREN.insert(child), Ok(true));
    burst(cmd, ack);
    settle("inserted again", 2 * BURST, 2 * BURST);

    let q = b'q';
    // SAFETY: one byte from a local to our pipe end; closing our ends.
    unsafe {
        libc::write(cmd, (&q as *const u8).cast(), 1);
        libc::close(cmd);
        libc::close(ack);
    }
    assert_eq!(reap(child), 0, "the child could not signal its parent");
    assert!(CHILDREN.remove(child));
    assert!(CHILDREN.is_empty());

    assert_eq!(PIDSET_RUNS.load(Ordering::Relaxed), 2 * BURST);
    let c = h.counts();
    assert_eq!((c.lost, c.forwarded, c.retired), (0, 0, 0));
    h.uninstall().unwrap();
}

/// A pid learnt at run time, a filter built in a `static`: the set is read
/// at delivery time, so a pid added after install counts, and one that is
/// not a process (`<= 0`) is refused at `insert`.
#[test]
fn pid_set_in_a_static_filter_and_bad_pids() {
    static SET: PidSet<2> = PidSet::new();
    static FILTER: Accept = Accept::pid_set(&SET);
    watchdog(WATCHDOG);
    let sig = rt(4);
    let h = RT
        .install(SignalConfig::new(sig, |_| {}).accept(FILTER))
        .unwrap();
    assert!(SET.insert(0).is_err());
    assert!(SET.insert(-5).is_err());
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // SAFETY: raising a signal whose handler is installed (delivered to
    // this thread before `raise` returns).
    unsafe { libc::raise(sig) };
    assert_eq!((h.handled(), h.rejected()), (0, 1));
    SET.insert(me).unwrap();
    // SAFETY: as above.
    unsafe { libc::raise(sig) };
    assert_eq!((h.handled(), h.rejected()), (1, 1));
    assert_eq!(format!("{FILTER:?}"), format!("PidSet(PidSet{{{me}}})"));
    SET.remove(me);
}
