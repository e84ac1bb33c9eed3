//! Top half → bottom half handoff between two threads, in items per second.
//!
//! Group `handoff`: one producer thread plays the top half, one consumer
//! thread the bottom half. Neither parks (except in the `_blocking`
//! entry): a full ring makes the producer retry the same item, an empty one
//! makes the consumer poll again, both through `crossbeam_utils::Backoff`
//! (`snooze`: spin, then `yield_now`, so a spinner on a loaded 2-core
//! machine hands the core over instead of burning its time slice). Retries
//! are counted and printed; nothing is dropped. Every entry checks that the
//! consumer saw every item exactly once (count and sum).
//!
//! Group `handoff_1thread`: the same mechanisms with both ends on one
//! thread (a batch of 256 items produced, then consumed): the CPU cost per
//! item without cross-core traffic or the OS scheduler.
//!
//! - `bottomhalf_Mailbox+Tasklet`: the producer pushes into a `static`
//!   SPSC [`Mailbox`] and schedules a [`Tasklet`] after every push, as an
//!   interrupt handler would. The consumer thread loops `RT.drain()`; the
//!   tasklet's callback pops everything queued. The consumer end lives in a
//!   `static Mutex<Option<Consumer>>` that only the callback locks (an
//!   uncontended `try_lock` per tasklet run, amortised over the items it
//!   pops) — the usual way to give a `fn()` callback a `'static` handle.
//! - `bottomhalf_Mailbox+Tasklet_drain_thread`: the same mailbox and
//!   tasklet, drained by the library's own drain thread
//!   (`Runtime::spawn_drain_threads`: `bh-drain/0` sleeps on a futex and the
//!   raise of an idle CPU wakes it) instead of a polling loop; the producer
//!   is the bench thread. Its peer is `crossbeam_channel_blocking`.
//! - `bottomhalf_MpscMailbox+Tasklet`: the same with an [`MpscMailbox`],
//!   whose callback takes the consumer handle with `consumer()`.
//! - `crossbeam_channel_spin`: `bounded(1023)`, `try_send` / `try_recv`
//!   with the same backoff (the same no-parking discipline as the drain
//!   loop).
//! - `crossbeam_channel_blocking`: `bounded(1023)`, `send` / `recv`.
//! - `heapless_spsc_raw`: `heapless::spsc::Queue<u64, 1024>`, `enqueue` /
//!   `dequeue` with the same backoff: the ring `Mailbox` is built on, with
//!   no tasklet.
//!
//! The tasklet is queued on the *scheduling* thread's CPU list and a drain
//! runs the *current* CPU's lists, so both threads bind to CPU index 0 of
//! the host backend (which allows several threads per CPU index).

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Barrier, Mutex, Once};
use std::thread;
use std::time::Instant;

use bottomhalf::{Config, Consumer, Host, Mailbox, MpscMailbox, Producer, Runtime, Tasklet};
use criterion::{Criterion, Throughput};
use crossbeam_utils::Backoff;

/// Ring size: `Mailbox` and heapless hold `N - 1` = 1023 items.
const N: usize = 1024;
/// Capacity of the bounded channel, the same as the SPSC rings'.
const CHANNEL_CAP: usize = N - 1;

// ----------------------------------------------------- SPSC + tasklet ---

static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static MB: Mailbox<u64, N> = Mailbox::new();
static SPLIT: Once = Once::new();
static TX: Mutex<Option<Producer<'static, u64, N>>> = Mutex::new(None);
static RX: Mutex<Option<Consumer<'static, u64, N>>> = Mutex::new(None);
static RX_TASKLET: Tasklet = Tasklet::new(&RT, rx_bottom_half);
/// Items and their sum seen by the bottom half in the current run.
static SEEN: AtomicU64 = AtomicU64::new(0);
static SUM: AtomicU64 = AtomicU64::new(0);

fn rx_bottom_half() {
    pop_all(&RX);
}

/// The callback body: pop everything queued, count it, sum it.
fn pop_all(rx: &Mutex<Option<Consumer<'static, u64, N>>>) {
    let mut guard = rx.try_lock().expect("only the tasklet consumes");
    let rx = guard.as_mut().expect("split before the run");
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(x) = rx.pop() {
        n += 1;
        sum = sum.wrapping_add(x);
    }
    SUM.fetch_add(sum, Ordering::Relaxed);
    SEEN.fetch_add(n, Ordering::Release);
}

// ------------------------------------ SPSC + tasklet, drain thread ---

static RT_DT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static MB_DT: Mailbox<u64, N> = Mailbox::new();
static TX_DT: Mutex<Option<Producer<'static, u64, N>>> = Mutex::new(None);
static RX_DT: Mutex<Option<Consumer<'static, u64, N>>> = Mutex::new(None);
static DT_TASKLET: Tasklet = Tasklet::new(&RT_DT, || pop_all(&RX_DT));

// ----------------------------------------------------- MPSC + tasklet ---

static RT_MPSC: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static MPSC_MB: MpscMailbox<u64, N> = MpscMailbox::new();
static MPSC_TASKLET: Tasklet = Tasklet::new(&RT_MPSC, mpsc_bottom_half);

fn mpsc_bottom_half() {
    let mut rx = MPSC_MB.consumer().expect("only the tasklet consumes");
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(x) = rx.pop() {
        n += 1;
        sum = sum.wrapping_add(x);
    }
    SUM.fetch_add(sum, Ordering::Relaxed);
    SEEN.fetch_add(n, Ordering::Release);
}

// ------------------------------------------------------------ harness ---

/// Totals over every run of one entry, printed after the group.
#[derive(Default)]
struct Tally {
    items: u64,
    retries: u64,
}

impl Tally {
    fn report(&self, name: &str, extra: &str) {
        if self.items == 0 {
            return; // filtered out
        }
        eprintln!(
            "handoff/{name}: {} items, {:.3} full-ring retries per item{extra}",
            self.items,
            self.retries as f64 / self.items.max(1) as f64,
        );
    }
}

fn expected_sum(items: u64) -> u64 {
    // 0 + 1 + ... + (items - 1), wrapping like the consumers' sums.
    let (a, b) = if items.is_multiple_of(2) {
        (items / 2, items.wrapping_sub(1))
    } else {
        (items, (items - 1) / 2)
    };
    a.wrapping_mul(b)
}

/// Runs `producer` and `consumer` on two threads released together by a
/// barrier; the time is from the producer's start to the moment the
/// consumer has seen every item. `producer` returns its retry count.
fn two_threads(
    producer: impl FnOnce() -> u64 + Send,
    consumer: impl FnOnce() + Send,
) -> (Duration, u64) {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let cons = s.spawn(|| {
            barrier.wait();
            consumer();
            Instant::now()
        });
        barrier.wait();
        let start = Instant::now();
        let retries = producer();
        let end = cons.join().expect("consumer panicked");
        (end.duration_since(start), retries)
    })
}

/// Producer side of a tasklet-driven handoff: push item `i`, retrying on a
/// full ring, then schedule the tasklet.
fn tasklet_run(
    iters: u64,
    rt: &'static Runtime<Host, 1>,
    mut push: impl FnMut(u64) -> Result<(), u64> + Send,
    tasklet: &'static Tasklet,
) -> (Duration, u64) {
    SEEN.store(0, Ordering::Relaxed);
    SUM.store(0, Ordering::Relaxed);
    let out = two_threads(
        move || {
            let _cpu = rt.bind_current_thread(0).unwrap();
            let mut retries = 0;
            for i in 0..iters {
                let mut item = i;
                let backoff = Backoff::new();
                while let Err(back) = push(item) {
                    item = back;
                    retries += 1;
                    backoff.snooze();
                }
                tasklet.schedule();
            }
            retries
        },
        move || {
            let _cpu = rt.bind_current_thread(0).unwrap();
            let backoff = Backoff::new();
            let mut seen = 0;
            while seen < iters {
                let _ = rt.drain();
                let now = SEEN.load(Ordering::Relaxed);
                if now == seen {
                    backoff.snooze();
                } else {
                    backoff.reset();
                }
                seen = now;
            }
        },
    );
    assert_eq!(SEEN.load(Ordering::Relaxed), iters);
    assert_eq!(SUM.load(Ordering::Relaxed), expected_sum(iters));
    out
}

fn bench_handoff(c: &mut Criterion) {
    SPLIT.call_once(|| {
        let (tx, rx) = MB.split().unwrap();
        *TX.lock().unwrap() = Some(tx);
        *RX.lock().unwrap() = Some(rx);
        let (tx, rx) = MB_DT.split().unwrap();
        *TX_DT.lock().unwrap() = Some(tx);
        *RX_DT.lock().unwrap() = Some(rx);
    });

    let mut g = c.benchmark_group("handoff");
    g.throughput(Throughput::Elements(1));

    let mut spsc = Tally::default();
    let runs_before = RX_TASKLET.runs();
    g.bench_function("bottomhalf_Mailbox+Tasklet", |b| {
        b.iter_custom(|iters| {
            let mut tx = TX.lock().unwrap().take().unwrap();
            let (d, r) = tasklet_run(iters, &RT, |x| tx.push(x), &RX_TASKLET);
            *TX.lock().unwrap() = Some(tx);
            spsc.items += iters;
            spsc.retries += r;
            d
        })
    });
    spsc.report(
        "bottomhalf_Mailbox+Tasklet",
        &format!(
            ", {:.1} items per tasklet run (Mailbox::dropped counts the {} retried pushes)",
            spsc.items as f64 / f64::from(RX_TASKLET.runs() - runs_before).max(1.0),
            MB.dropped(),
        ),
    );

    // The same, with the library's own drain thread (`bh-drain/0`, which
    // sleeps on a futex and is woken by the raise of an idle CPU) instead
    // of a polling loop: the producer is the bench thread, which then waits
    // for the bottom half to have seen every item.
    let mut dt = Tally::default();
    let runs_before = DT_TASKLET.runs();
    let drains = RT_DT.spawn_drain_threads().expect("drain thread");
    g.bench_function("bottomhalf_Mailbox+Tasklet_drain_thread", |b| {
        b.iter_custom(|iters| {
            let mut tx = TX_DT.lock().unwrap().take().unwrap();
            SEEN.store(0, Ordering::Relaxed);
            SUM.store(0, Ordering::Relaxed);
            let _cpu = RT_DT.bind_current_thread(0).unwrap();
            let mut retries = 0;
            let start = Instant::now();
            for i in 0..iters {
                let mut item = i;
                let backoff = Backoff::new();
                while let Err(back) = tx.push(item) {
                    item = back;
                    retries += 1;
                    backoff.snooze();
                }
                DT_TASKLET.schedule();
            }
            let backoff = Backoff::new();
            while SEEN.load(Ordering::Acquire) < iters {
                backoff.snooze();
            }
            let d = start.elapsed();
            assert_eq!(SEEN.load(Ordering::Relaxed), iters);
            assert_eq!(SUM.load(Ordering::Relaxed), expected_sum(iters));
            *TX_DT.lock().unwrap() = Some(tx);
            dt.items += iters;
            dt.retries += retries;
            d
        })
    });
    drop(drains);
    dt.report(
        "bottomhalf_Mailbox+Tasklet_drain_thread",
        &format!(
            ", {:.1} items per tasklet run",
            dt.items as f64 / f64::from(DT_TASKLET.runs() - runs_before).max(1.0),
        ),
    );

    let mut mpsc = Tally::default();
    let runs_before = MPSC_TASKLET.runs();
    g.bench_function("bottomhalf_MpscMailbox+Tasklet", |b| {
        b.iter_custom(|iters| {
            let (d, r) = tasklet_run(iters, &RT_MPSC, |x| MPSC_MB.push(x), &MPSC_TASKLET);
            mpsc.items += iters;
            mpsc.retries += r;
            d
        })
    });
    mpsc.report(
        "bottomhalf_MpscMailbox+Tasklet",
        &format!(
            ", {:.1} items per tasklet run",
            mpsc.items as f64 / f64::from(MPSC_TASKLET.runs() - runs_before).max(1.0),
        ),
    );

    let mut cb_spin = Tally::default();
    g.bench_function("crossbeam_channel_spin", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(CHANNEL_CAP);
            let (d, r) = two_threads(
                move || {
                    let mut retries = 0;
                    for i in 0..iters {
                        let mut item = i;
                        let backoff = Backoff::new();
                        while let Err(e) = tx.try_send(item) {
                            item = e.into_inner();
                            retries += 1;
                            backoff.snooze();
                        }
                    }
                    retries
                },
                move || {
                    let (mut n, mut sum) = (0u64, 0u64);
                    let backoff = Backoff::new();
                    while n < iters {
                        match rx.try_recv() {
                            Ok(x) => {
                                n += 1;
                                sum = sum.wrapping_add(x);
                                backoff.reset();
                            }
                            Err(_) => backoff.snooze(),
                        }
                    }
                    assert_eq!(black_box(sum), expected_sum(iters));
                },
            );
            cb_spin.items += iters;
            cb_spin.retries += r;
            d
        })
    });
    cb_spin.report("crossbeam_channel_spin", "");

    let mut cb_block = Tally::default();
    g.bench_function("crossbeam_channel_blocking", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = crossbeam_channel::bounded::<u64>(CHANNEL_CAP);
            let (d, _) = two_threads(
                move || {
                    for i in 0..iters {
                        tx.send(i).unwrap();
                    }
                    0
                },
                move || {
                    let mut sum = 0u64;
                    for _ in 0..iters {
                        sum = sum.wrapping_add(rx.recv().unwrap());
                    }
                    assert_eq!(black_box(sum), expected_sum(iters));
                },
            );
            cb_block.items += iters;
            d
        })
    });

    let mut hl = Tally::default();
    g.bench_function("heapless_spsc_raw", |b| {
        b.iter_custom(|iters| {
            let mut q: heapless::spsc::Queue<u64, N> = heapless::spsc::Queue::new();
            let (mut p, mut cq) = q.split();
            let (d, r) = two_threads(
                move || {
                    let mut retries = 0;
                    for i in 0..iters {
                        let mut item = i;
                        let backoff = Backoff::new();
                        while let Err(back) = p.enqueue(item) {
                            item = back;
                            retries += 1;
                            backoff.snooze();
                        }
                    }
                    retries
                },
                move || {
                    let (mut n, mut sum) = (0u64, 0u64);
                    let backoff = Backoff::new();
                    while n < iters {
                        match cq.dequeue() {
                            Some(x) => {
                                n += 1;
                                sum = sum.wrapping_add(x);
                                backoff.reset();
                            }
                            None => backoff.snooze(),
                        }
                    }
                    assert_eq!(black_box(sum), expected_sum(iters));
                },
            );
            hl.items += iters;
            hl.retries += r;
            d
        })
    });
    hl.report("heapless_spsc_raw", "");

    g.finish();
}

/// Items per batch in `handoff_1thread`.
const BATCH: u64 = 256;

/// The same handoffs with both ends on one thread: a batch of `BATCH`
/// items produced, then consumed. No cross-core traffic and no scheduler:
/// the CPU cost per item of each mechanism (producer + consumer), which
/// bounds what the two-thread handoff can reach.
fn bench_one_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff_1thread");
    g.throughput(Throughput::Elements(BATCH));

    let mut tx = TX.lock().unwrap().take().unwrap();
    g.bench_function("bottomhalf_Mailbox+Tasklet", |b| {
        b.iter(|| {
            SEEN.store(0, Ordering::Relaxed);
            for i in 0..BATCH {
                tx.push(black_box(i)).unwrap();
                RX_TASKLET.schedule();
            }
            assert!(RT.drain().is_complete());
            assert_eq!(SEEN.load(Ordering::Relaxed), BATCH);
        })
    });
    *TX.lock().unwrap() = Some(tx);

    g.bench_function("bottomhalf_MpscMailbox+Tasklet", |b| {
        b.iter(|| {
            SEEN.store(0, Ordering::Relaxed);
            for i in 0..BATCH {
                MPSC_MB.push(black_box(i)).unwrap();
                MPSC_TASKLET.schedule();
            }
            assert!(RT_MPSC.drain().is_complete());
            assert_eq!(SEEN.load(Ordering::Relaxed), BATCH);
        })
    });

    let (ctx, crx) = crossbeam_channel::bounded::<u64>(CHANNEL_CAP);
    g.bench_function("crossbeam_channel", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                ctx.try_send(black_box(i)).unwrap();
            }
            let mut sum = 0u64;
            while let Ok(x) = crx.try_recv() {
                sum = sum.wrapping_add(x);
            }
            assert_eq!(sum, expected_sum(BATCH));
        })
    });

    let mut q: heapless::spsc::Queue<u64, N> = heapless::spsc::Queue::new();
    let (mut p, mut cq) = q.split();
    g.bench_function("heapless_spsc_raw", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                p.enqueue(black_box(i)).unwrap();
            }
            let mut sum = 0u64;
            while let Some(x) = cq.dequeue() {
                sum = sum.wrapping_add(x);
            }
            assert_eq!(sum, expected_sum(BATCH));
        })
    });
    g.finish();
}

fn main() {
    // `criterion_main!` without the undocumented `pub fn` that
    // `criterion_group!` generates (the crate warns on missing docs).
    let mut c = Criterion::default().configure_from_args();
    bench_handoff(&mut c);
    bench_one_thread(&mut c);
    c.final_summary();
}
