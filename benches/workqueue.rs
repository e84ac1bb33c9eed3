//! Workqueue: tiny items through 2 worker threads, against the thread
//! pools a user would pick instead; then queue-to-start latency.
//!
//! Group `workqueue_tiny_items` (items per second; one criterion iteration
//! is one item run): the bench thread is the producer, two worker threads
//! run the items, and each item does one `fetch_add` on a shared counter
//! (so peers do identical work). The producer waits for the counter at the
//! end of each sample: items are counted when they have *run*, not when
//! they were handed over.
//!
//! - `bottomhalf_workqueue`: a `Workqueue` with `threads(2)` and 1024
//!   `static` [`Work`] items. A `Work` coalesces (queued twice before it
//!   runs, it runs once), so one item cannot carry a stream of jobs: the
//!   producer walks the array round-robin and queues each in turn. If the
//!   next item is still pending from the previous lap (the workers are
//!   1024 items behind), that `queue` returns `false`, runs nothing and is
//!   not counted; the producer yields and retries the same item — the
//!   back-pressure of a bounded queue of 1024. Such retries per run item
//!   are printed. Nothing is allocated per item.
//! - `rayon_spawn`: a `rayon::ThreadPool` with 2 threads, `pool.spawn`
//!   of a closure per item (one allocation per item, work-stealing deques).
//! - `crossbeam_channel_pool`: 2 worker threads looping on `recv` of
//!   `Box<dyn FnOnce() + Send>` from an unbounded crossbeam channel (the
//!   textbook thread pool; one allocation per item).
//!
//! Latency (printed, not a criterion group): one item is queued while every
//! worker sleeps (100 µs pause between samples); the item stores the time
//! from just before `queue`/`spawn`/`send` to the start of its function.
//! p50/p99/p99.9 over the samples, for each of the three. This is the wake
//! path: lock-free push + futex wake for the workqueue.
//!
//! Run: `cargo bench --bench workqueue -- --warm-up-time 1 --measurement-time 3`.
//! The machine has 2 cores and the producer is a third thread, so every
//! entry is oversubscribed in the same way; other jobs may load the
//! machine too — compare entries of one run, not runs.

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::OnceLock;
use std::thread;
use std::time::Instant;

use bottomhalf::{Work, Workqueue};
use criterion::{Criterion, Throughput};

const ITEMS: usize = 1024;

/// Items run (all entries).
static DONE: AtomicU64 = AtomicU64::new(0);

fn tiny(_: &Work) {
    DONE.fetch_add(1, Ordering::Relaxed);
}

static WORK: [Work; ITEMS] = [const { Work::new("tiny", tiny) }; ITEMS];

fn wait_done(target: u64) {
    while DONE.load(Ordering::Acquire) < target {
        thread::yield_now();
    }
}

/// `queue` calls that found their item still pending, summed over runs.
static RETRIES: AtomicU64 = AtomicU64::new(0);
static QUEUED: AtomicU64 = AtomicU64::new(0);

fn workqueue() -> &'static Workqueue {
    static WQ: OnceLock<Workqueue> = OnceLock::new();
    WQ.get_or_init(|| Workqueue::builder("bench").threads(2).build().unwrap())
}

fn rayon_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    })
}

type Job = Box<dyn FnOnce() + Send>;

fn channel_pool() -> &'static crossbeam_channel::Sender<Job> {
    static TX: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..2 {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("cb-pool/{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .unwrap();
        }
        tx
    })
}

fn bench_tiny_items(c: &mut Criterion) {
    let mut g = c.benchmark_group("workqueue_tiny_items");
    g.throughput(Throughput::Elements(1));

    g.bench_function("bottomhalf_workqueue", |b| {
        let wq = workqueue();
        let mut next = 0usize;
        b.iter_custom(|iters| {
            let target = DONE.load(Ordering::Relaxed) + iters;
            let t0 = Instant::now();
            let (mut sent, mut retries) = (0u64, 0u64);
            while sent < iters {
                if wq.queue(&WORK[next]) {
                    sent += 1;
                    next = (next + 1) % ITEMS;
                } else {
                    // The oldest item is still pending: the workers are
                    // 1024 items behind. Give them the CPU (a bounded
                    // queue's blocking send would do the same).
                    retries += 1;
                    thread::yield_now();
                }
            }
            wait_done(target);
            let elapsed = t0.elapsed();
            RETRIES.fetch_add(retries, Ordering::Relaxed);
            QUEUED.fetch_add(sent, Ordering::Relaxed);
            elapsed
        });
    });

    g.bench_function("rayon_spawn", |b| {
        let pool = rayon_pool();
        b.iter_custom(|iters| {
            let target = DONE.load(Ordering::Relaxed) + iters;
            let t0 = Instant::now();
            for _ in 0..iters {
                pool.spawn(|| {
                    DONE.fetch_add(1, Ordering::Relaxed);
                });
            }
            wait_done(target);
            t0.elapsed()
        });
    });

    g.bench_function("crossbeam_channel_pool", |b| {
        let tx = channel_pool();
        b.iter_custom(|iters| {
            let target = DONE.load(Ordering::Relaxed) + iters;
            let t0 = Instant::now();
            for _ in 0..iters {
                tx.send(Box::new(|| {
                    DONE.fetch_add(1, Ordering::Relaxed);
                }))
                .unwrap();
            }
            wait_done(target);
            t0.elapsed()
        });
    });
    g.finish();

    let (r, q) = (
        RETRIES.load(Ordering::Relaxed),
        QUEUED.load(Ordering::Relaxed),
    );
    if q != 0 {
        println!(
            "bottomhalf_workqueue: {:.2} queue() calls per run item ({r} found their item still pending)",
            (q + r) as f64 / q as f64
        );
    }
}

// ------------------------------------------------------------- latency ---

/// Nanoseconds since `base()` when the sample's producer started.
static SENT_AT: AtomicU64 = AtomicU64::new(0);
/// Latency of the last sample, `u64::MAX` until the item ran.
static LATENCY: AtomicU64 = AtomicU64::new(u64::MAX);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn record_start() {
    let lat = now_ns().saturating_sub(SENT_AT.load(Ordering::Acquire));
    LATENCY.store(lat, Ordering::Release);
}

static LAT_WORK: Work = Work::new("latency", |_| record_start());

fn sample(kick: &dyn Fn()) -> u64 {
    LATENCY.store(u64::MAX, Ordering::Relaxed);
    SENT_AT.store(now_ns(), Ordering::Release);
    kick();
    loop {
        let l = LATENCY.load(Ordering::Acquire);
        if l != u64::MAX {
            return l;
        }
        thread::yield_now();
    }
}

fn percentiles(mut v: Vec<u64>) -> [f64; 3] {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    [at(0.50), at(0.99), at(0.999)]
}

fn latency(samples: usize) {
    let wq = workqueue();
    let pool = rayon_pool();
    let tx = channel_pool();
    type Kick<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let kicks: [Kick<'_>; 3] = [
        (
            "bottomhalf_workqueue",
            Box::new(|| {
                assert!(wq.queue(&LAT_WORK));
            }),
        ),
        ("rayon_spawn", Box::new(|| pool.spawn(record_start))),
        (
            "crossbeam_channel_pool",
            Box::new(|| tx.send(Box::new(record_start)).unwrap()),
        ),
    ];
    println!();
    println!("queue-to-start latency, idle workers ({samples} samples, 100 µs apart), µs:");
    println!("{:<26} {:>8} {:>8} {:>8}", "", "p50", "p99", "p99.9");
    let mut p50s = Vec::new();
    for (name, kick) in &kicks {
        let mut v = Vec::with_capacity(samples);
        for _ in 0..samples {
            // Let the workers go to sleep.
            thread::sleep(Duration::from_micros(100));
            v.push(black_box(sample(kick.as_ref())));
        }
        let [p50, p99, p999] = percentiles(v);
        p50s.push(p50);
        println!("{name:<26} {p50:>8.1} {p99:>8.1} {p999:>8.1}");
    }
    println!(
        "p50 ratio, workqueue / rayon: {:.2}, workqueue / crossbeam pool: {:.2}",
        p50s[0] / p50s[1],
        p50s[0] / p50s[2]
    );
    println!();
}

fn main() {
    // `criterion_main!` without the undocumented `pub fn` that
    // `criterion_group!` generates (the crate warns on missing docs).
    let mut c = Criterion::default().configure_from_args();
    bench_tiny_items(&mut c);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once
    // quickly.
    let bench = std::env::args().any(|a| a == "--bench");
    latency(if bench { 10_000 } else { 50 });
    c.final_summary();
}
