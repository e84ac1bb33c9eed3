//! Top-half costs beside the primitive a user would write instead.
//!
//! Every `bottomhalf` path sits in the same criterion group as its peer, so
//! one run gives the ratio. See `benches/README.md` for what each entry
//! measures and the targets from `DESIGN.md`.
//!
//! Two timing styles:
//!
//! - `b.iter`: the operation in a loop, when it can repeat without reset
//!   (a coalesced `raise` or `schedule`, or an op paired with its reset).
//! - `iter_custom` + [`batched`]: operations that need a reset (an idle
//!   vector must be cleared by a drain, a ring must be emptied) are timed in
//!   batches; the reset runs between batches, outside the timed region. The
//!   peer gets exactly the same batching, so the clock-read overhead (one
//!   pair of `Instant::now` per batch of hundreds of ops) is shared.

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::time::Instant;

use bottomhalf::{Config, DelayedWork, Host, Mailbox, MpscMailbox, Runtime, Tasklet, Vector, Work};
use criterion::Criterion;
use crossbeam_utils::CachePadded;

/// Times `timed(n)` in batches of at most `batch` operations until `iters`
/// operations are done; `reset(n)` runs after each batch, untimed.
fn batched(
    iters: u64,
    batch: usize,
    mut timed: impl FnMut(usize),
    mut reset: impl FnMut(usize),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch as u64) as usize;
        let t0 = Instant::now();
        timed(n);
        total += t0.elapsed();
        reset(n);
        left -= n as u64;
    }
    total
}

// ---------------------------------------------------------------- raise ---

/// Vectors that are neither tasklet vector (0, 6): raising them is the same
/// code as raising any other vector, and a drain clears them without
/// running a tasklet list, which keeps the untimed reset short.
const PLAIN_VECTORS: [Vector; 30] = {
    let mut out = [Vector::new(1); 30];
    let mut i = 0;
    let mut v = 0;
    while v < 32 {
        if v != 0 && v != 6 {
            out[i] = Vector::new(v);
            i += 1;
        }
        v += 1;
    }
    out
};

/// 32 runtimes × 30 idle vectors: 960 raises of a not-yet-pending bit per
/// batch, then every runtime is drained (untimed).
const IDLE_RUNTIMES: usize = 32;
static RT_IDLE: [Runtime<Host, 1>; IDLE_RUNTIMES] =
    [const { Runtime::new(Config::DEFAULT) }; IDLE_RUNTIMES];
/// The peer's masks, cache-padded like a runtime's per-CPU state.
static PEER_IDLE: [CachePadded<AtomicU32>; IDLE_RUNTIMES] =
    [const { CachePadded::new(AtomicU32::new(0)) }; IDLE_RUNTIMES];

/// `raise` + `drain` of one vector with a registered (empty) handler.
static RT_ROUND: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
const ROUND_V: Vector = Vector::new(3);
static PEER_ROUND: AtomicU32 = AtomicU32::new(0);

/// A vector kept pending for the whole benchmark: every raise coalesces.
static RT_COAL: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
const COAL_V: Vector = Vector::new(3);
static PEER_COAL: AtomicU32 = AtomicU32::new(0);
static PEER_COAL_COUNT: AtomicU32 = AtomicU32::new(0);

fn bench_raise(c: &mut Criterion) {
    let mut g = c.benchmark_group("raise");

    // (a) idle vector, batched: the timed region holds only raises.
    g.bench_function("idle/bottomhalf_raise", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_RUNTIMES * PLAIN_VECTORS.len(),
                |mut n| {
                    'all: for rt in &RT_IDLE {
                        for &v in &PLAIN_VECTORS {
                            if n == 0 {
                                break 'all;
                            }
                            rt.raise(black_box(v));
                            n -= 1;
                        }
                    }
                },
                |_| {
                    for rt in &RT_IDLE {
                        assert!(rt.drain().is_complete());
                    }
                },
            )
        })
    });
    g.bench_function("idle/fetch_or", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_RUNTIMES * PLAIN_VECTORS.len(),
                |mut n| {
                    'all: for mask in &PEER_IDLE {
                        for &v in &PLAIN_VECTORS {
                            if n == 0 {
                                break 'all;
                            }
                            mask.fetch_or(1 << black_box(v).index(), Ordering::SeqCst);
                            n -= 1;
                        }
                    }
                },
                |_| {
                    for mask in &PEER_IDLE {
                        black_box(mask.swap(0, Ordering::AcqRel));
                    }
                },
            )
        })
    });

    // (a') idle vector, one raise and the reset it needs, per iteration.
    // The only public way to clear a pending bit is `drain`, which also runs
    // the handler, reads the clock and counts: this is the whole round trip
    // raise -> bottom half, not the raise alone.
    RT_ROUND.register(ROUND_V, "ROUND", |_| {}).unwrap();
    g.bench_function("idle_round_trip/bottomhalf_raise+drain", |b| {
        b.iter(|| {
            RT_ROUND.raise(black_box(ROUND_V));
            RT_ROUND.drain()
        })
    });
    g.bench_function("idle_round_trip/fetch_or+swap", |b| {
        b.iter(|| {
            PEER_ROUND.fetch_or(1 << black_box(ROUND_V).index(), Ordering::SeqCst);
            PEER_ROUND.swap(0, Ordering::AcqRel)
        })
    });

    // (b) steady state: the bit is already set, every raise coalesces.
    RT_COAL.raise(COAL_V);
    PEER_COAL.fetch_or(1 << COAL_V.index(), Ordering::SeqCst);
    g.bench_function("coalesced/bottomhalf_raise", |b| {
        b.iter(|| RT_COAL.raise(black_box(COAL_V)))
    });
    g.bench_function("coalesced/fetch_or", |b| {
        b.iter(|| PEER_COAL.fetch_or(1 << black_box(COAL_V).index(), Ordering::SeqCst))
    });
    // What `raise` does when the bit was set: the peer with the same two
    // read-modify-writes (mask, then a counter on another cache line).
    g.bench_function("coalesced/fetch_or+counter_fetch_add", |b| {
        b.iter(|| {
            let bit = 1 << black_box(COAL_V).index();
            if PEER_COAL.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
                PEER_COAL_COUNT.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    g.finish();
    assert!(RT_COAL.drain().is_complete());
}

// ------------------------------------------------------------- schedule ---

fn nothing() {}

/// Kept pending for the whole benchmark (never drained): every schedule
/// coalesces.
static RT_PEND: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_PEND: Tasklet = Tasklet::new(&RT_PEND, nothing);
static PEER_PEND: AtomicU32 = AtomicU32::new(0);

/// One idle tasklet, scheduled and drained per iteration.
static RT_ROUND_T: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_ROUND: Tasklet = Tasklet::new(&RT_ROUND_T, nothing);
static PEER_ROUND_T: AtomicU32 = AtomicU32::new(0);

/// A batch of idle tasklets: each scheduled once (timed), then one drain
/// runs them all (untimed).
const IDLE_TASKLETS: usize = 128;
static RT_IDLE_T: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_IDLE: [Tasklet; IDLE_TASKLETS] =
    [const { Tasklet::new(&RT_IDLE_T, nothing) }; IDLE_TASKLETS];
static PEER_IDLE_T: [AtomicU32; IDLE_TASKLETS] = [const { AtomicU32::new(0) }; IDLE_TASKLETS];

/// The ordering of `Tasklet::schedule`'s RMW on the state word.
const SCHED_ORDER: Ordering = Ordering::AcqRel;

fn bench_schedule(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule");

    // Pending tasklet: coalesced (one CAS on the state word; after 2^20 - 1
    // schedules the count saturates and the CAS rewrites the same value,
    // which costs the same).
    assert!(T_PEND.schedule());
    PEER_PEND.fetch_or(1, SCHED_ORDER);
    g.bench_function("pending/bottomhalf_schedule", |b| {
        b.iter(|| black_box(&T_PEND).schedule())
    });
    g.bench_function("pending/fetch_or", |b| {
        b.iter(|| black_box(&PEER_PEND).fetch_or(1, SCHED_ORDER))
    });

    // Idle tasklets, batched: only the schedules are timed. Each one moves
    // an idle tasklet's count from 0 (CAS), links it (CAS on the per-CPU
    // list head) and raises TASKLET (`fetch_or`); within a batch only the
    // first finds the mask empty (and kicks), as in a burst of interrupts.
    g.bench_function("idle/bottomhalf_schedule", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_TASKLETS,
                |n| {
                    for t in &T_IDLE[..n] {
                        black_box(t.schedule());
                    }
                },
                |_| assert!(RT_IDLE_T.drain().is_complete()),
            )
        })
    });
    g.bench_function("idle/fetch_or", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_TASKLETS,
                |n| {
                    for a in &PEER_IDLE_T[..n] {
                        black_box(a.fetch_or(1, SCHED_ORDER));
                    }
                },
                |_| {
                    for a in &PEER_IDLE_T {
                        black_box(a.swap(0, Ordering::AcqRel));
                    }
                },
            )
        })
    });

    // Idle tasklet, schedule + the drain that runs it, per iteration
    // (round trip; the peer resets its word with a swap).
    g.bench_function("idle_round_trip/bottomhalf_schedule+drain", |b| {
        b.iter(|| {
            black_box(&T_ROUND).schedule();
            RT_ROUND_T.drain()
        })
    });
    g.bench_function("idle_round_trip/fetch_or+swap", |b| {
        b.iter(|| {
            black_box(&PEER_ROUND_T).fetch_or(1, SCHED_ORDER);
            PEER_ROUND_T.swap(0, Ordering::AcqRel)
        })
    });
    g.finish();

    assert!(T_IDLE.iter().all(|t| !t.is_scheduled()));
    assert!(!T_ROUND.is_scheduled());
    T_PEND.kill();
}

// ----------------------------------------------------------- queue_work ---

fn nothing_work(_: &Work) {}

/// Kept pending for the whole benchmark: every queue coalesces.
static RT_WPEND: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static W_PEND: Work = Work::new("pending", nothing_work);
static T_WPEND: Tasklet = Tasklet::new(&RT_WPEND, nothing);

/// Idle items (and their tasklet peers), queued once each per batch
/// (timed), then drained (untimed).
static RT_WIDLE: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static W_IDLE: [Work; IDLE_TASKLETS] = [const { Work::new("idle", nothing_work) }; IDLE_TASKLETS];
static RT_WIDLE_T: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_WIDLE: [Tasklet; IDLE_TASKLETS] =
    [const { Tasklet::new(&RT_WIDLE_T, nothing) }; IDLE_TASKLETS];

/// One idle item (one tasklet), queued and drained per iteration.
static RT_WROUND: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static W_ROUND: Work = Work::new("round", nothing_work);
static RT_WROUND_T: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_WROUND: Tasklet = Tasklet::new(&RT_WROUND_T, nothing);

/// `Runtime::queue_work` (a bottom-half work item) beside
/// `Tasklet::schedule`, the peer a firmware author would use instead.
fn bench_queue_work(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue_work");

    assert!(RT_WPEND.queue_work(&W_PEND));
    assert!(T_WPEND.schedule());
    g.bench_function("pending/bottomhalf_queue_work", |b| {
        b.iter(|| RT_WPEND.queue_work(black_box(&W_PEND)))
    });
    g.bench_function("pending/tasklet_schedule", |b| {
        b.iter(|| black_box(&T_WPEND).schedule())
    });

    g.bench_function("idle/bottomhalf_queue_work", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_TASKLETS,
                |n| {
                    for w in &W_IDLE[..n] {
                        black_box(RT_WIDLE.queue_work(w));
                    }
                },
                |_| assert!(RT_WIDLE.drain().is_complete()),
            )
        })
    });
    g.bench_function("idle/tasklet_schedule", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                IDLE_TASKLETS,
                |n| {
                    for t in &T_WIDLE[..n] {
                        black_box(t.schedule());
                    }
                },
                |_| assert!(RT_WIDLE_T.drain().is_complete()),
            )
        })
    });

    g.bench_function("idle_round_trip/bottomhalf_queue_work+drain", |b| {
        b.iter(|| {
            RT_WROUND.queue_work(black_box(&W_ROUND));
            RT_WROUND.drain()
        })
    });
    g.bench_function("idle_round_trip/tasklet_schedule+drain", |b| {
        b.iter(|| {
            black_box(&T_WROUND).schedule();
            RT_WROUND_T.drain()
        })
    });
    g.finish();

    assert!(W_PEND.cancel());
    T_WPEND.kill();
    assert!(W_IDLE.iter().all(|w| !w.is_pending()));
    assert!(!W_ROUND.is_pending() && !T_WROUND.is_scheduled());
}

// ------------------------------------------------------------ mailboxes ---

/// Ring size for both SPSC rings (capacity `N - 1` for both).
const SPSC_N: usize = 1024;
/// Capacity of both MPSC rings.
const MPSC_CAP: usize = 1024;

fn bench_spsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("spsc_push");

    let mb: Mailbox<u32, SPSC_N> = Mailbox::new();
    let (mut tx, mut rx) = mb.split().unwrap();
    g.bench_function("bottomhalf_Mailbox_push", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                SPSC_N - 1,
                |n| {
                    for i in 0..n as u32 {
                        let _ = tx.push(black_box(i));
                    }
                },
                |n| {
                    let mut k = 0;
                    while rx.pop().is_some() {
                        k += 1;
                    }
                    assert_eq!(k, n, "a timed push was refused");
                },
            )
        })
    });
    assert_eq!(mb.dropped(), 0, "a timed batch overflowed the mailbox");

    let mut q: heapless::spsc::Queue<u32, SPSC_N> = heapless::spsc::Queue::new();
    let (mut p, mut cq) = q.split();
    g.bench_function("heapless_spsc_enqueue", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                SPSC_N - 1,
                |n| {
                    for i in 0..n as u32 {
                        let _ = p.enqueue(black_box(i));
                    }
                },
                |n| {
                    let mut k = 0;
                    while cq.dequeue().is_some() {
                        k += 1;
                    }
                    assert_eq!(k, n, "a timed enqueue was refused");
                },
            )
        })
    });
    g.finish();
}

fn bench_mpsc(c: &mut Criterion) {
    let mut g = c.benchmark_group("mpsc_push");

    let mb: MpscMailbox<u32, MPSC_CAP> = MpscMailbox::new();
    let mut rx = mb.consumer().unwrap();
    g.bench_function("bottomhalf_MpscMailbox_push", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                MPSC_CAP,
                |n| {
                    for i in 0..n as u32 {
                        let _ = mb.push(black_box(i));
                    }
                },
                |n| {
                    let mut k = 0;
                    while rx.pop().is_some() {
                        k += 1;
                    }
                    assert_eq!(k, n, "a timed push was refused");
                },
            )
        })
    });
    drop(rx);
    assert_eq!(mb.dropped(), 0, "a timed batch overflowed the mailbox");

    let q = crossbeam_queue::ArrayQueue::<u32>::new(MPSC_CAP);
    g.bench_function("crossbeam_ArrayQueue_push", |b| {
        b.iter_custom(|iters| {
            batched(
                iters,
                MPSC_CAP,
                |n| {
                    for i in 0..n as u32 {
                        let _ = q.push(black_box(i));
                    }
                },
                |n| {
                    let mut k = 0;
                    while q.pop().is_some() {
                        k += 1;
                    }
                    assert_eq!(k, n, "a timed push was refused");
                },
            )
        })
    });
    g.finish();
}

// --------------------------------------------------------- delayed work ---

/// A debounce: an item waiting on its timer list, its deadline moved by
/// every top half (`mod_delayed_work` finds it pending: a request write
/// and a poke, which coalesces on the raised mask).
static RT_DPEND: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static D_PEND: DelayedWork = DelayedWork::new("debounce", nothing_work);
static RT_DPEND_T: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static T_DPEND: Tasklet = Tasklet::new(&RT_DPEND_T, nothing);

/// Timers the drain walks on every pass of vector 6 (`src/work/timer.rs`:
/// an unsorted list), none due; and the same runtime shape with none.
const WALKED: usize = 8;
static RT_WALK: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static D_WALK: [DelayedWork; WALKED] = [const { DelayedWork::new("far", nothing_work) }; WALKED];
static RT_NOWALK: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static D_NOWALK: DelayedWork = DelayedWork::new("gone", nothing_work);

/// `mod_delayed_work` on a pending item (a debounce restart) beside the
/// cheapest top half, a coalesced `Tasklet::schedule`; and what the timer
/// list costs a drain of vector 6: a pass with 8 timers on the list
/// beside a pass with none.
fn bench_delayed(c: &mut Criterion) {
    let mut g = c.benchmark_group("delayed_work");
    let far = Duration::from_secs(3600);

    assert!(!RT_DPEND.mod_delayed_work(&D_PEND, far));
    assert!(RT_DPEND.drain().is_complete());
    assert!(T_DPEND.schedule());
    g.bench_function("pending/bottomhalf_mod_delayed_work", |b| {
        b.iter(|| RT_DPEND.mod_delayed_work(black_box(&D_PEND), far))
    });
    g.bench_function("pending/tasklet_schedule", |b| {
        b.iter(|| black_box(&T_DPEND).schedule())
    });

    for d in &D_WALK {
        assert!(RT_WALK.queue_delayed_work(d, far));
    }
    assert!(RT_WALK.drain().is_complete());
    // Attached (the timer drain) with an empty list.
    assert!(RT_NOWALK.queue_delayed_work(&D_NOWALK, far));
    assert!(D_NOWALK.cancel());
    assert!(RT_NOWALK.drain().is_complete());
    g.bench_function("drain_pass/8_timers", |b| {
        b.iter(|| {
            RT_WALK.raise(Vector::TASKLET);
            RT_WALK.drain()
        })
    });
    g.bench_function("drain_pass/no_timers", |b| {
        b.iter(|| {
            RT_NOWALK.raise(Vector::TASKLET);
            RT_NOWALK.drain()
        })
    });
    g.finish();

    for d in &D_WALK {
        assert!(d.cancel());
    }
    assert!(D_PEND.cancel());
    T_DPEND.kill();
}

fn main() {
    // `criterion_main!` without the undocumented `pub fn` that
    // `criterion_group!` generates (the crate warns on missing docs).
    let mut c = Criterion::default().configure_from_args();
    bench_raise(&mut c);
    bench_schedule(&mut c);
    bench_queue_work(&mut c);
    bench_delayed(&mut c);
    bench_spsc(&mut c);
    bench_mpsc(&mut c);
    c.final_summary();
}
