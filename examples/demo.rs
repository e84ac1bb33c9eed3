//! The main job: real signals, top halves, bottom halves.
//!
//! A child process (this program, run again with `BH_DEMO_CHILD` set) fires
//! a storm at its parent: `SIGNALS` real-time signals with `sigqueue`,
//! spread over `SIGRTMIN`, `SIGRTMIN+1` and `SIGRTMIN+2`, each carrying the
//! time it was sent as its payload, plus a plain `SIGUSR1` every 64. In the
//! parent:
//!
//! - top halves run inside the real handlers: each real-time `siginfo` is
//!   captured into a mailbox (lossless: the kernel queues one per
//!   `sigqueue`) and the RX tasklet is scheduled; `SIGUSR1` raises a
//!   softirq vector;
//! - one drain thread per CPU (pinned) runs the bottom halves: the tasklet
//!   drains the mailbox, measures signal → bottom-half latency and, every
//!   4096 payloads, queues a report on a workqueue (work that may sleep).
//!
//! At the end it prints the per-CPU statistics table, the latency
//! percentiles, and how many payloads were sent, delivered and dropped,
//! and exits non-zero unless every payload was delivered once or counted.
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
/// One `SIGUSR1` per this many real-time signals.
const USR1_EVERY: u32 = 64;
/// Per-CPU state for up to 256 configured CPUs (checked at set-up).
static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

static RX: MpscMailbox<SigInfo, 65536> = MpscMailbox::new();
static RX_TASKLET: Tasklet = Tasklet::new(&RT, rx_bottom_half);
static DELIVERED: AtomicU32 = AtomicU32::new(0);
static PER_SIGNAL: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
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
        PER_SIGNAL[k.min(2)].fetch_add(1, Ordering::Relaxed);
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

    let wq = Workqueue::builder("demo-reports")
        .threads(1)
        .build()
        .expect("workqueue");
    assert!(WQ.set(wq).is_ok(), "main sets the workqueue once");
    RT.register(USR1, "SIGUSR1", |_cpu| {
        USR1_RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("vector 2 is free");
    let drains = RT.spawn_drain_threads().expect("drain threads");
    let rt_signals: Vec<_> = (0..3)
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
    drop(usr1);
    drop(rt_signals);
    drop(drains);
    WQ.get().expect("set").flush().expect("flush the reports");

    let delivered = u64::from(DELIVERED.load(Ordering::Relaxed));
    println!(
        "bottomhalf demo: {SIGNALS} real-time signals + {} SIGUSR1 from a child process, {elapsed:.2?}\n",
        SIGNALS / USR1_EVERY
    );
    println!("{}", RT.stats());
    println!(
        "real-time payloads: sent {SIGNALS}, delivered {delivered} (per signal {:?}), dropped {} (mailbox high-water {}/{}), child's sigqueue retries on EAGAIN {eagain}",
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
        "signal -> bottom half latency (send time in the payload; during the storm, so it includes the backlog): p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        LATENCY.percentile(50.0),
        LATENCY.percentile(99.0),
        LATENCY.percentile(99.9),
        LATENCY.max()
    );
    let ok = delivered + dropped() == u64::from(SIGNALS);
    println!("check: delivered + dropped == sent: {ok}");
    if !ok {
        std::process::exit(1);
    }
}

/// The child: a storm of `sigqueue`s at the parent, payload = send time.
fn child(parent: libc::pid_t) {
    let mut eagain = 0u64;
    for i in 0..SIGNALS {
        let sig = libc::SIGRTMIN() + (i % 3) as i32;
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
            std::thread::yield_now();
        }
        if i % USR1_EVERY == 0 {
            // SAFETY: kill with a valid signal number.
            unsafe { libc::kill(parent, libc::SIGUSR1) };
        }
    }
    println!("eagain {eagain}");
}
