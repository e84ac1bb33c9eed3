//! Unix signals: `bottomhalf`'s signal backend beside `signal-hook`'s
//! iterator (`signal_hook::iterator::Signals`, a thread blocked in
//! `forever()`), in one run. A plain `main` that prints a table
//! (`harness = false`); `cargo bench --bench signals`, a few seconds.
//!
//! Signals are process-wide, so each side has its own signal numbers and
//! both are installed for the whole run:
//!
//! | measurement | bottomhalf | signal-hook |
//! | --- | --- | --- |
//! | 1. latency | `SIGRTMIN+3` | `SIGRTMIN+4` |
//! | 2. payloads, nothing blocked | `SIGRTMIN+5` | `SIGRTMIN+6` |
//! | 2b. payloads queued while blocked (signal-hook issue #122) | `SIGRTMIN+7` | `SIGRTMIN+8` |
//!
//! **1. Latency, signal → bottom half.** One signal at a time: a sender
//! thread stores `CLOCK_MONOTONIC` ns in a shared atomic, then
//! `sigqueue(getpid(), sig, value = that time)`, then waits (sleeping
//! 20 µs between checks, so it leaves its CPU to the bottom half) until the
//! bottom half has run before it sends the next. Two regimes: **cold**
//! (the headline, the target's "blocking drain thread"): the sender then
//! sleeps 50 µs more, so the bottom-half thread is back asleep at every
//! signal; **back to back** (context): it sends the next at once, when
//! the consumer may still be finishing its previous loop. The bottom half stores
//! `now - sent`, taking `sent` from the shared atomic on both sides
//! (signal-hook's iterator does not get the payload; bottomhalf's copy of
//! it is checked against the atomic and mismatches are printed).
//!
//! - bottomhalf: the top half captures the `SigInfo` into an
//!   `MpscMailbox` (`SignalConfig::capture`) and schedules a tasklet; the
//!   pinned drain thread of the CPU the handler ran on
//!   (`spawn_drain_threads`, asleep on a futex) wakes and runs the
//!   tasklet, which pops the `SigInfo` and records the latency.
//! - signal-hook: its handler writes to its self-pipe; the iterator thread
//!   wakes from `forever()` and records the latency for the item.
//!
//! Both latency signals are blocked in every thread but the sender
//! (`main` blocks them before any other thread exists; drain threads and
//! the iterator thread inherit the mask), so on both sides the handler
//! runs in the sender thread, on return from `sigqueue`, and the
//! measured path is handler → wake of another thread → bottom half. Per
//! regime, after 500 warm-up samples each, 10 blocks of 1000 samples
//! alternate between the two sides (the machine is shared; alternation
//! spreads load drift over both). Printed: p50/p99/p99.9/max, the share of
//! samples whose bottom half ran on the handler's CPU, and the ratio
//! bottomhalf/signal-hook. Target (`DESIGN.md`): cold p50 ≤ 0.5 ×
//! signal-hook.
//!
//! **2. Real-time payloads.** Nothing blocks the signals. For each side in
//! turn, a second thread queues 1000 `sigqueue` real-time signals with
//! payloads 0..999 as fast as it can (`EAGAIN` is retried and counted),
//! then `main` waits until that side has gone quiet (no new delivery for
//! 200 ms). Reported: signal-hook, the number of items its iterator
//! yielded (it reports signal numbers, not payloads); bottomhalf, the
//! payloads its tasklet popped from the capture mailbox
//! (`MpscMailbox<SigInfo, 1024>`), checked to be exactly 0..999 once each
//! or counted as dropped.
//!
//! **2b. (context) Payloads queued while blocked.** The same 1000 signals
//! sent while every thread blocks them, then the sender unblocks them: the
//! kernel delivers all 1000 queued `siginfo`s back to back — the case of
//! signal-hook issue #122 ("reports 1 of 1000").

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{Config, MpscMailbox, Runtime, SigInfo, SignalConfig, Signals, Tasklet};
use libc::c_int;

/// Per-CPU state for up to 256 configured CPUs (checked at set-up).
static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

const WARM_UP: usize = 500;
const BLOCKS: usize = 10;
const BLOCK: usize = 1000;
const PAYLOADS: usize = 1000;
/// Pause between latency samples, after the bottom half ran.
const PAUSE: Duration = Duration::from_micros(50);

fn sig(offset: c_int) -> c_int {
    libc::SIGRTMIN() + offset
}

/// `CLOCK_MONOTONIC` in ns (the same clock on both sides).
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `sigqueue(getpid(), sig, value)`, retrying `EAGAIN`; returns the
/// number of retries.
fn sigqueue_self(signal: c_int, value: u64) -> u64 {
    let mut retries = 0;
    loop {
        let v = libc::sigval {
            sival_ptr: value as usize as *mut libc::c_void,
        };
        // SAFETY: getpid cannot fail; sigqueue takes a pid, a signal
        // number and a sigval by value and touches no memory of ours.
        if unsafe { libc::sigqueue(libc::getpid(), signal, v) } == 0 {
            return retries;
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "sigqueue: {err}");
        retries += 1;
        thread::yield_now();
    }
}

/// Blocks (`how = SIG_BLOCK`) or unblocks the signals in the calling thread.
fn mask(how: c_int, signals: &[c_int]) {
    // SAFETY: an empty sigset is initialised by sigemptyset before use;
    // pthread_sigmask reads it and changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        assert_eq!(
            libc::pthread_sigmask(how, &set, core::ptr::null_mut()),
            0,
            "pthread_sigmask"
        );
    }
}

// ---- 1. latency: state shared by both sides -------------------------------

/// Send time of the signal in flight (ns).
static SENT: AtomicU64 = AtomicU64::new(0);
/// Latency the last bottom half recorded (ns).
static LAST: AtomicU64 = AtomicU64::new(0);
/// Bottom halves run (both sides; one side is measured at a time).
static HANDLED: AtomicU64 = AtomicU64::new(0);
/// bottomhalf: `SigInfo::value` differed from `SENT`.
static VALUE_MISMATCH: AtomicU64 = AtomicU64::new(0);

/// CPU the last bottom half ran on.
static LAST_CPU: AtomicU32 = AtomicU32::new(0);

fn cpu() -> u32 {
    // SAFETY: no arguments; -1 on failure.
    unsafe { libc::sched_getcpu() as u32 }
}

fn record_latency() {
    let now = now_ns();
    LAST.store(
        now.saturating_sub(SENT.load(Ordering::Acquire)),
        Ordering::Release,
    );
    LAST_CPU.store(cpu(), Ordering::Release);
    HANDLED.fetch_add(1, Ordering::AcqRel);
}

static LAT_RX: MpscMailbox<SigInfo, 64> = MpscMailbox::new();
static LAT_TASKLET: Tasklet = Tasklet::new(&RT, || {
    let mut rx = LAT_RX.consumer().expect("the tasklet is the only consumer");
    while let Some(info) = rx.pop() {
        if info.value as u64 != SENT.load(Ordering::Acquire) {
            VALUE_MISMATCH.fetch_add(1, Ordering::Relaxed);
        }
        record_latency();
    }
});

/// Latency samples of one side in one regime.
#[derive(Default)]
struct Samples {
    ns: Vec<u64>,
    /// Samples whose bottom half ran on the CPU the sender (and so the
    /// handler) was on.
    same_cpu: u64,
}

/// Sends `n` signals one at a time, sleeping `pause` after each was
/// handled (`ZERO`: back to back).
fn measure(signal: c_int, n: usize, pause: Duration, out: &mut Samples) {
    for _ in 0..n {
        let target = HANDLED.load(Ordering::Acquire) + 1;
        let sent = now_ns();
        SENT.store(sent, Ordering::Release);
        sigqueue_self(signal, sent);
        // The handler ran in this thread, on return from sigqueue.
        let handler_cpu = cpu();
        let deadline = Instant::now() + Duration::from_secs(5);
        while HANDLED.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "signal {signal} not handled");
            thread::sleep(Duration::from_micros(20));
        }
        out.ns.push(LAST.load(Ordering::Acquire));
        out.same_cpu += u64::from(LAST_CPU.load(Ordering::Acquire) == handler_cpu);
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
}

/// Warm-up, then `BLOCKS` blocks of `BLOCK` samples alternating between
/// the sides (which goes first alternates too). Sorted.
fn regime(bh_sig: c_int, sh_sig: c_int, pause: Duration) -> (Samples, Samples) {
    let mut scratch = Samples::default();
    measure(bh_sig, WARM_UP, pause, &mut scratch);
    measure(sh_sig, WARM_UP, pause, &mut scratch);
    let (mut bh, mut sh) = (Samples::default(), Samples::default());
    for block in 0..BLOCKS {
        if block % 2 == 0 {
            measure(bh_sig, BLOCK, pause, &mut bh);
            measure(sh_sig, BLOCK, pause, &mut sh);
        } else {
            measure(sh_sig, BLOCK, pause, &mut sh);
            measure(bh_sig, BLOCK, pause, &mut bh);
        }
    }
    bh.ns.sort_unstable();
    sh.ns.sort_unstable();
    (bh, sh)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

// ---- 2. payloads ------------------------------------------------------------

static PAY_RX: MpscMailbox<SigInfo, 1024> = MpscMailbox::new();
/// Times each payload was popped.
static SEEN: [AtomicU32; PAYLOADS] = [const { AtomicU32::new(0) }; PAYLOADS];
static POPPED: AtomicU64 = AtomicU64::new(0);
static OUT_OF_RANGE: AtomicU64 = AtomicU64::new(0);
static PAY_TASKLET: Tasklet = Tasklet::new(&RT, || {
    let mut rx = PAY_RX.consumer().expect("the tasklet is the only consumer");
    while let Some(info) = rx.pop() {
        match SEEN.get(info.value) {
            Some(seen) => {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                OUT_OF_RANGE.fetch_add(1, Ordering::Relaxed);
            }
        }
        POPPED.fetch_add(1, Ordering::Release);
    }
});

/// Items signal-hook's payload iterators yielded.
static SH_ITEMS: AtomicU64 = AtomicU64::new(0);

/// Polls `count` every 5 ms until it has not moved for 200 ms (or 10 s
/// pass); returns the final count and the time until its last change.
fn wait_quiet(count: impl Fn() -> u64, started: Instant) -> (u64, Duration) {
    let mut last = count();
    let mut last_change = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_change.elapsed() < Duration::from_millis(200) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
        let c = count();
        if c != last {
            last = c;
            last_change = Instant::now();
        }
    }
    (last, last_change.saturating_duration_since(started))
}

/// Queues payloads 0..PAYLOADS on `signal` from a new thread. With
/// `blocked`, the thread keeps the signal blocked (inherited from `main`)
/// while sending and unblocks it afterwards. Returns the EAGAIN retries.
fn send_payloads(signal: c_int, blocked: bool) -> u64 {
    thread::spawn(move || {
        let retries = (0..PAYLOADS as u64).map(|v| sigqueue_self(signal, v)).sum();
        if blocked {
            // Every queued siginfo is delivered to this thread, here.
            mask(libc::SIG_UNBLOCK, &[signal]);
        }
        retries
    })
    .join()
    .expect("payload sender")
}

struct PayloadResult {
    reported: u64,
    retries: u64,
    quiet_after: Duration,
    /// bottomhalf only: (distinct, duplicates, out of range, dropped).
    check: Option<(u64, u64, u64, u64)>,
}

fn bh_payloads(signal: c_int, blocked: bool) -> PayloadResult {
    for s in &SEEN {
        s.store(0, Ordering::Relaxed);
    }
    POPPED.store(0, Ordering::Relaxed);
    OUT_OF_RANGE.store(0, Ordering::Relaxed);
    let dropped_before = PAY_RX.dropped();
    let started = Instant::now();
    let retries = send_payloads(signal, blocked);
    let dropped = || u64::from(PAY_RX.dropped() - dropped_before);
    let (popped, quiet_after) = wait_quiet(|| POPPED.load(Ordering::Acquire) + dropped(), started);
    let popped = popped - dropped();
    let distinct = SEEN
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) > 0)
        .count() as u64;
    let duplicates = SEEN
        .iter()
        .map(|s| u64::from(s.load(Ordering::Relaxed).saturating_sub(1)))
        .sum();
    PayloadResult {
        reported: popped,
        retries,
        quiet_after,
        check: Some((
            distinct,
            duplicates,
            OUT_OF_RANGE.load(Ordering::Relaxed),
            dropped(),
        )),
    }
}

fn sh_payloads(signal: c_int, blocked: bool) -> PayloadResult {
    SH_ITEMS.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let retries = send_payloads(signal, blocked);
    let (reported, quiet_after) = wait_quiet(|| SH_ITEMS.load(Ordering::Acquire), started);
    PayloadResult {
        reported,
        retries,
        quiet_after,
        check: None,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A signal-hook iterator over `signal` on its own thread, running `each`
/// per item; returns its handle (to close it) and the thread.
fn sh_thread(signal: c_int, each: fn()) -> (signal_hook::iterator::Handle, thread::JoinHandle<()>) {
    let mut signals = signal_hook::iterator::Signals::new([signal]).expect("signal-hook register");
    let handle = signals.handle();
    let thread = thread::Builder::new()
        .name(format!("sh-iter/{signal}"))
        .spawn(move || {
            for _ in signals.forever() {
                each();
            }
        })
        .expect("spawn the iterator thread");
    (handle, thread)
}

fn main() -> ExitCode {
    let (bh_lat, sh_lat) = (sig(3), sig(4));
    let (bh_pay, sh_pay) = (sig(5), sig(6));
    let (bh_blk, sh_blk) = (sig(7), sig(8));
    // Before any thread exists: every thread started from here inherits it.
    mask(libc::SIG_BLOCK, &[bh_lat, sh_lat, bh_blk, sh_blk]);
    let load_before = loadavg();

    // bottomhalf: pinned drain threads, three signals captured.
    let drains = RT.spawn_drain_threads().expect("drain threads");
    let bh_handles = [
        RT.install(
            SignalConfig::new(bh_lat, |_| {
                LAT_TASKLET.schedule();
            })
            .capture(&LAT_RX),
        ),
        RT.install(
            SignalConfig::new(bh_pay, |_| {
                PAY_TASKLET.schedule();
            })
            .capture(&PAY_RX),
        ),
        RT.install(
            SignalConfig::new(bh_blk, |_| {
                PAY_TASKLET.schedule();
            })
            .capture(&PAY_RX),
        ),
    ]
    .map(|h| h.expect("install"));

    // signal-hook: one iterator thread per signal.
    let sh_iters = [
        sh_thread(sh_lat, record_latency),
        sh_thread(sh_pay, || {
            SH_ITEMS.fetch_add(1, Ordering::Release);
        }),
        sh_thread(sh_blk, || {
            SH_ITEMS.fetch_add(1, Ordering::Release);
        }),
    ];

    // 1. Latency, from a sender thread that alone accepts the signals.
    let started = Instant::now();
    let (cold, hot) = thread::spawn(move || {
        mask(libc::SIG_UNBLOCK, &[bh_lat, sh_lat]);
        let cold = regime(bh_lat, sh_lat, PAUSE);
        let hot = regime(bh_lat, sh_lat, Duration::ZERO);
        mask(libc::SIG_BLOCK, &[bh_lat, sh_lat]);
        (cold, hot)
    })
    .join()
    .expect("latency sender");
    let latency_time = started.elapsed();

    // 2. Payloads, nothing blocked; 2b. queued while blocked.
    let bh_free = bh_payloads(bh_pay, false);
    let sh_free = sh_payloads(sh_pay, false);
    let bh_blocked = bh_payloads(bh_blk, true);
    let sh_blocked = sh_payloads(sh_blk, true);
    let load_after = loadavg();

    for (handle, thread) in sh_iters {
        handle.close();
        thread.join().expect("iterator thread");
    }
    let bh_delivered: Vec<u32> = bh_handles.iter().map(|h| h.handled()).collect();
    drop(bh_handles);
    drop(drains);

    println!(
        "signals bench: {} CPUs online, load average {load_before} before, {load_after} after\n",
        // SAFETY: plain sysconf query.
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
    );
    println!(
        "1. signal -> bottom half latency, one signal at a time ({} samples per side and regime after {WARM_UP} warm-up, {BLOCKS} alternating blocks; {latency_time:.2?})",
        BLOCKS * BLOCK
    );
    let mut met = false;
    for (title, (bh, sh)) in [
        ("a. cold: 50 µs pause after each sample, the bottom-half thread is asleep at every signal (headline)", &cold),
        ("b. (context) back to back: next signal as soon as the previous one was handled", &hot),
    ] {
        println!("   {title}");
        println!(
            "      {:<36} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "p50", "p99", "p99.9", "max", "same CPU"
        );
        let row = |name: &str, s: &Samples| {
            let v = &s.ns;
            println!(
                "      {name:<36} {:>6.1} µs {:>6.1} µs {:>6.1} µs {:>6.1} µs {:>8.1}%",
                percentile(v, 50.0) as f64 / 1e3,
                percentile(v, 99.0) as f64 / 1e3,
                percentile(v, 99.9) as f64 / 1e3,
                percentile(v, 100.0) as f64 / 1e3,
                100.0 * s.same_cpu as f64 / v.len() as f64,
            )
        };
        row("bottomhalf (mailbox+tasklet, drain)", bh);
        row("signal-hook iterator (forever())", sh);
        let ratio = |p: f64| percentile(&bh.ns, p) as f64 / percentile(&sh.ns, p) as f64;
        println!(
            "      {:<36} {:>8.2}× {:>8.2}× {:>8.2}× {:>8.2}×",
            "ratio bottomhalf / signal-hook",
            ratio(50.0),
            ratio(99.0),
            ratio(99.9),
            ratio(100.0)
        );
        if std::ptr::eq(bh, &cold.0) {
            met = ratio(50.0) <= 0.5;
        }
    }
    println!(
        "   target (cold) p50 <= 0.5x signal-hook: {}; bottomhalf payload != send time: {}\n",
        if met { "met" } else { "NOT met" },
        VALUE_MISMATCH.load(Ordering::Relaxed)
    );

    let mut ok = VALUE_MISMATCH.load(Ordering::Relaxed) == 0;
    for (title, bh, sh) in [
        (
            "2. 1000 sigqueue real-time payloads, nothing blocked",
            &bh_free,
            &sh_free,
        ),
        (
            "2b. (context) 1000 payloads queued while blocked, then unblocked (signal-hook #122)",
            &bh_blocked,
            &sh_blocked,
        ),
    ] {
        println!("{title}");
        let (distinct, dups, out_of_range, dropped) = bh.check.expect("bottomhalf checks");
        let exact = distinct + dropped == PAYLOADS as u64 && dups == 0 && out_of_range == 0;
        ok &= exact;
        println!(
            "   bottomhalf:  {} of {PAYLOADS} payloads popped ({distinct} distinct, {dups} duplicates, {out_of_range} out of range, {dropped} counted dropped) -> {}; EAGAIN retries {}; quiet after {:.1?}",
            bh.reported,
            if exact { "every payload once or counted" } else { "MISMATCH" },
            bh.retries,
            bh.quiet_after,
        );
        println!(
            "   signal-hook: {} of {PAYLOADS} deliveries reported (iterator items; no payloads); EAGAIN retries {}; quiet after {:.1?}",
            sh.reported, sh.retries, sh.quiet_after,
        );
    }
    println!("   (bottomhalf handlers ran, per signal: {bh_delivered:?})");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
