//! The main job: real signals, top halves, bottom halves.
//!
//! A child process (this program, run again with `BH_DEMO_CHILD` set) fires
//! a storm at its parent: `SIGNALS` real-time signals with `sigqueue`,
//! spread over `SIGRTMIN` .. `SIGRTMIN+3`, each carrying the time it was
//! sent as its payload, plus a plain `SIGUSR1` every 64. In the parent:
//!
//! - top halves run inside the real handlers: each real-time `siginfo` is
//!   captured into a mailbox (lossless: the kernel queues one per
//!   `sigqueue`) and the RX tasklet is scheduled; `SIGUSR1` raises a
//!   softirq vector;
//! - one drain thread per CPU (pinned, with the handled signals blocked so
//!   that top halves never land on the only consumers) runs the bottom
//!   halves: the tasklet drains the mailbox, measures signal → bottom-half latency and, every
//!   4096 payloads, queues a report on a workqueue (work that may sleep).
//!
//! At the end it prints the per-CPU statistics table, the latency
//! percentiles, each signal's counters (handled, captured, dropped,
//! rejected, forwarded), and how many payloads were sent, delivered to the
//! bottom half and dropped; it exits non-zero unless
//! `sent == delivered + dropped`.
//!
//! The parent caps its queue of pending real-time signals
//! (`RLIMIT_SIGPENDING`) at 4096: the kernel scans that queue on every
//! delivery, so a queue of 10^5 makes each delivery cost O(queue); with the
//! cap the child sees `EAGAIN` when it gets ahead, and backs off.
//!
//! Run: `cargo run --release --example demo`

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[path = "common/histogram.rs"]
mod histogram;
use histogram::Histogram;

use bottomhalf::{
    Backend, Config, MpscMailbox, Runtime, SigInfo, SignalConfig, Signals, Tasklet, Vector, Work,
    Workqueue,
};

/// Real-time signals the child sends.
const SIGNALS: u32 = 100_000;
/// Over this many real-time signals, `SIGRTMIN + 0 ..`.
const RT_SIGNALS: u32 = 4;
/// One `SIGUSR1` per this many real-time signals.
const USR1_EVERY: u32 = 64;
/// Per-CPU state for up to 256 configured CPUs (checked at set-up).
static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

static RX: MpscMailbox<SigInfo, 65536> = MpscMailbox::new();
static RX_TASKLET: Tasklet = Tasklet::new(&RT, rx_bottom_half);
static DELIVERED: AtomicU32 = AtomicU32::new(0);
static PER_SIGNAL: [AtomicU32; RT_SIGNALS as usize] =
    [const { AtomicU32::new(0) }; RT_SIGNALS as usize];
static LATENCY: Histogram = Histogram::new();

const USR1: Vector = Vector::new(2);
static USR1_RUNS: AtomicU32 = AtomicU32::new(0);

static REPORT: Work = Work::new("report", |_| {
    // Work that may sleep: a stand-in for writing a log line to disk.
    std::thread::sleep(Duration::from_millis(1));
    REPORTS.fetch_add(1, Ordering::Relaxed);
});
static REPORTS: AtomicU32 = AtomicU32::new(0);
static WQ: std::sync::OnceLock<Workqueue> = std::sync::OnceLock::new();

fn rx_bottom_half() {
    // Tasklets never run on two CPUs at once: this is the only consumer.
    let mut rx = RX.consumer().expect("the RX tasklet is the only consumer");
    let now = Signals::now_ns();
    while let Some(info) = rx.pop() {
        LATENCY.record(now.saturating_sub(info.value as u64));
        let k = (info.signal - libc::SIGRTMIN()) as usize;
        PER_SIGNAL[k.min(RT_SIGNALS as usize - 1)].fetch_add(1, Ordering::Relaxed);
        if DELIVERED.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            if let Some(wq) = WQ.get() {
                wq.queue(&REPORT);
            }
        }
    }
}

fn main() {
    if let Ok(parent) = std::env::var("BH_DEMO_CHILD") {
        child(parent.parse().expect("BH_DEMO_CHILD is the parent's pid"));
        return;
    }

    println!(
        "bottomhalf demo: a child process will send {SIGNALS} real-time signals over {RT_SIGNALS} signal numbers + {} SIGUSR1 to this process (pid {})",
        SIGNALS / USR1_EVERY,
        std::process::id()
    );
    cap_signal_queue(4096);
    // The report worker starts with the storm's signals blocked (a thread
    // inherits its creator's mask), as the drain threads do: otherwise the
    // storm's top halves land on it and its 1 ms item takes seconds. The
    // main thread, which waits for the child, takes them.
    let wq = with_storm_signals_blocked(|| {
        Workqueue::builder("demo-reports")
            .threads(1)
            .build()
            .expect("workqueue")
    });
    assert!(WQ.set(wq).is_ok(), "main sets the workqueue once");
    RT.register(USR1, "SIGUSR1", |_cpu| {
        USR1_RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("vector 2 is free");
    let drains = RT.spawn_drain_threads().expect("drain threads");
    println!(
        "set-up: {} drain threads (signals blocked in them), {} pinned; installing top halves (shared mode, signal-hook-registry)",
        drains.len(),
        drains.pinned()
    );
    let rt_signals: Vec<_> = (0..RT_SIGNALS as i32)
        .map(|k| {
            RT.install(
                SignalConfig::new(libc::SIGRTMIN() + k, |_info| {
                    RX_TASKLET.schedule();
                })
                .capture(&RX),
            )
            .expect("install a real-time signal")
        })
        .collect();
    let usr1 = RT
        .install(SignalConfig::new(libc::SIGUSR1, |_info| RT.raise(USR1)))
        .expect("install SIGUSR1");

    println!("storm: running the child...");
    let started = Instant::now();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .env("BH_DEMO_CHILD", std::process::id().to_string())
        .output()
        .expect("run the child");
    assert!(child.status.success(), "child failed: {child:?}");
    let child_report = String::from_utf8_lossy(&child.stdout);
    let eagain: u64 = child_report
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);

    // Every payload the kernel queued is delivered to a handler and pushed
    // or counted as dropped; wait for the bottom half to catch up.
    let dropped = || u64::from(RX.dropped());
    let deadline = Instant::now() + Duration::from_secs(20);
    while u64::from(DELIVERED.load(Ordering::Relaxed)) + dropped() < u64::from(SIGNALS)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    println!("storm: over after {elapsed:.2?}; uninstalling, stopping the drain threads\n");
    let counts: Vec<_> = rt_signals.iter().map(|h| h.counts()).collect();
    let usr1_counts = usr1.counts();
    drop(usr1);
    drop(rt_signals);
    drop(drains);
    WQ.get().expect("set").flush().expect("flush the reports");

    let delivered = u64::from(DELIVERED.load(Ordering::Relaxed));
    println!("{}", RT.stats());
    println!("per signal (top half = our handler):");
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "signal", "handled", "captured", "dropped", "rejected", "forwarded"
    );
    for (k, c) in counts.iter().enumerate() {
        println!(
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            format!("SIGRTMIN+{k}"),
            c.handled,
            c.captured,
            c.dropped,
            c.rejected,
            c.forwarded
        );
    }
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "SIGUSR1",
        usr1_counts.handled,
        usr1_counts.captured,
        usr1_counts.dropped,
        usr1_counts.rejected,
        usr1_counts.forwarded
    );
    let captured: u64 = counts.iter().map(|c| u64::from(c.captured)).sum();
    println!(
        "real-time payloads: sent {SIGNALS}, captured {captured}, delivered to the bottom half {delivered} (per signal {:?}), dropped {} (mailbox high-water {}/{}), child's sigqueue retries on EAGAIN {eagain}",
        PER_SIGNAL.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        dropped(),
        RX.high_water(),
        MpscMailbox::<SigInfo, 65536>::CAPACITY,
    );
    println!(
        "SIGUSR1: sent {}, bottom-half runs {} (plain signals coalesce in the kernel and in the pending mask)",
        SIGNALS / USR1_EVERY,
        USR1_RUNS.load(Ordering::Relaxed)
    );
    println!(
        "RX tasklet: {} runs, {} coalesced schedules; workqueue reports: {}",
        RX_TASKLET.runs(),
        RX_TASKLET.coalesced(),
        REPORTS.load(Ordering::Relaxed)
    );
    println!(
        "signal -> bottom half latency (send time in the payload; during the storm, so it includes the backlog): p50 {}, p99 {}, p99.9 {}, max {}",
        human(LATENCY.percentile(50.0)),
        human(LATENCY.percentile(99.0)),
        human(LATENCY.percentile(99.9)),
        human(LATENCY.max())
    );
    let ok = delivered + dropped() == u64::from(SIGNALS) && captured == delivered;
    println!(
        "check: sent {SIGNALS} == delivered {delivered} + dropped {}: {ok}",
        dropped()
    );
    if !ok {
        std::process::exit(1);
    }
}

/// The child: a storm of `sigqueue`s at the parent, payload = send time.
fn child(parent: libc::pid_t) {
    let mut eagain = 0u64;
    for i in 0..SIGNALS {
        let sig = libc::SIGRTMIN() + (i % RT_SIGNALS) as i32;
        loop {
            let value = libc::sigval {
                sival_ptr: Signals::now_ns() as usize as *mut libc::c_void,
            };
            // SAFETY: sigqueue takes a pid, a signal number and a sigval by
            // value; it touches no memory of ours.
            if unsafe { libc::sigqueue(parent, sig, value) } == 0 {
                break;
            }
            // The parent's queue of pending real-time signals is full
            // (RLIMIT_SIGPENDING): let it catch up and retry.
            eagain += 1;
            std::thread::sleep(Duration::from_micros(50));
        }
        if i % USR1_EVERY == 0 {
            // SAFETY: kill with a valid signal number.
            unsafe { libc::kill(parent, libc::SIGUSR1) };
        }
    }
    println!("eagain {eagain}");
}

/// `ns` in a unit a person reads at a glance.
fn human(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Caps this process's queue of pending real-time signals (the kernel
/// checks the receiver's `RLIMIT_SIGPENDING`); see the module docs.
fn cap_signal_queue(cap: u64) {
    // SAFETY: getrlimit/setrlimit with valid structs; lowering a soft limit
    // is always allowed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_cur.min(cap);
            libc::setrlimit(libc::RLIMIT_SIGPENDING, &lim);
        }
    }
}

/// Runs `f` with the demo's signals blocked on the calling thread, so that
/// threads it spawns start with them blocked.
fn with_storm_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset operations on a local set; pthread_sigmask changes only
    // this thread's mask, and the old mask is put back below.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for k in 0..RT_SIGNALS as i32 {
            libc::sigaddset(&mut set, libc::SIGRTMIN() + k);
        }
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        old
    };
    let r = f();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}
