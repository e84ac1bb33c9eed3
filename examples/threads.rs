//! The core runtime with threads standing in for CPUs.
//!
//! Two "CPUs" (threads bound with `Runtime::bind_current_thread`) each have
//! an "interrupt source" thread that fires top halves as fast as it can for
//! a fixed time: it captures a sequence number and a timestamp into a
//! mailbox, schedules the RX tasklet, and every 64th event raises a TIMER
//! softirq vector. A drain thread per CPU (`bh-drain/N`, like Linux's
//! `ksoftirqd/N`) sleeps until a top half kicks it and runs the bottom
//! halves. At the
//! end the demo prints the per-CPU statistics table, the latency from top
//! half to bottom half, and how many events were sent, delivered and
//! dropped — and checks that every event was delivered exactly once or
//! counted as dropped.
//!
//! Run: `cargo run --release --example threads`

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[path = "common/histogram.rs"]
mod histogram;
use histogram::Histogram;
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{Backend, Config, Host, MpscMailbox, Runtime, Tasklet, Vector};

const CPUS: usize = 2;
const RUN_FOR: Duration = Duration::from_millis(1500);
/// Per source: bursts of 64 top halves, about every 100 µs.
const BURST: u32 = 64;
const BURST_PERIOD: Duration = Duration::from_micros(100);

static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);

/// What a top half captures: which source, its sequence number, when.
#[derive(Clone, Copy)]
struct Event {
    source: u8,
    seq: u32,
    t_ns: u64,
}

const RX_CAPACITY: usize = 1024;
static RX: MpscMailbox<Event, RX_CAPACITY> = MpscMailbox::new();
static RX_TASKLET: Tasklet = Tasklet::new(&RT, rx_bottom_half);

const TIMER: Vector = Vector::new(1);
static TIMER_RUNS: AtomicU32 = AtomicU32::new(0);

/// Per source: the next sequence number the bottom half expects, and the
/// count of sequence numbers it saw out of order or twice.
static NEXT_SEQ: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
static MISORDERED: AtomicU32 = AtomicU32::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);
static LATENCY: Histogram = Histogram::new();

fn rx_bottom_half() {
    // The tasklet never runs on two CPUs at once, so it is the only
    // consumer.
    let mut rx = RX.consumer().expect("the RX tasklet is the only consumer");
    let now = Host::now_ns();
    while let Some(ev) = rx.pop() {
        LATENCY.record(now.saturating_sub(ev.t_ns));
        // Items of one source are pushed in order and popped in ticket
        // order, but a dropped item leaves a gap: accept any later number.
        let expected = NEXT_SEQ[ev.source as usize].load(Ordering::Relaxed);
        if ev.seq < expected {
            MISORDERED.fetch_add(1, Ordering::Relaxed);
        }
        NEXT_SEQ[ev.source as usize].store(ev.seq + 1, Ordering::Relaxed);
        DELIVERED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A top half: capture, push, schedule, sometimes raise. Nothing else.
fn top_half(source: u8, seq: u32) -> bool {
    let pushed = RX
        .push(Event {
            source,
            seq,
            t_ns: Host::now_ns(),
        })
        .is_ok();
    RX_TASKLET.schedule();
    if seq.is_multiple_of(64) {
        RT.raise(TIMER);
    }
    pushed
}

fn main() {
    RT.register(TIMER, "TIMER", |_cpu| {
        TIMER_RUNS.fetch_add(1, Ordering::Relaxed);
    })
    .expect("vector 1 is free");

    // ksoftirqd: one drain thread per CPU, asleep until a top half kicks it.
    let drains = RT.spawn_drain_threads().expect("spawn drain threads");
    let stop_sources = AtomicBool::new(false);
    let started = Instant::now();
    let (sent, accepted) = thread::scope(|s| {
        let sources: Vec<_> = (0..CPUS)
            .map(|cpu| {
                let stop = &stop_sources;
                s.spawn(move || {
                    let _cpu = RT.bind_current_thread(cpu).expect("cpu < CPUS");
                    let (mut sent, mut accepted) = (0u32, 0u32);
                    // An interrupt rate, not a flood: a burst of BURST
                    // events every BURST_PERIOD (like a NIC's receive
                    // interrupts), sleeping in between so the drain
                    // threads get the cores.
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..BURST {
                            if top_half(cpu as u8, sent) {
                                accepted += 1;
                            }
                            sent += 1;
                        }
                        thread::sleep(BURST_PERIOD);
                    }
                    (sent, accepted)
                })
            })
            .collect();
        thread::sleep(RUN_FOR);
        stop_sources.store(true, Ordering::Relaxed);
        sources
            .into_iter()
            .map(|h| h.join().expect("source thread"))
            .fold((0u64, 0u64), |(s, a), (s1, a1)| {
                (s + u64::from(s1), a + u64::from(a1))
            })
    });
    // Let the drain threads empty what is queued, then stop them.
    while !RX.is_empty() || RX_TASKLET.is_scheduled() {
        thread::yield_now();
    }
    drop(drains);
    let elapsed = started.elapsed();

    let delivered = DELIVERED.load(Ordering::Relaxed);
    let dropped = u64::from(RX.dropped());
    println!("bottomhalf demo: {CPUS} CPUs (threads), {elapsed:.2?}\n");
    println!("{}", RT.stats());
    println!(
        "RX tasklet: {} runs, {} coalesced schedules",
        RX_TASKLET.runs(),
        RX_TASKLET.coalesced()
    );
    println!("TIMER handler runs: {}", TIMER_RUNS.load(Ordering::Relaxed));
    println!(
        "events: sent {sent}, delivered {delivered}, dropped (mailbox full) {dropped}, mailbox high-water {}/{}",
        RX.high_water(),
        RX_CAPACITY
    );
    println!(
        "top half -> bottom half latency: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        LATENCY.percentile(50.0),
        LATENCY.percentile(99.0),
        LATENCY.percentile(99.9),
        LATENCY.max()
    );
    println!(
        "throughput: {:.1} M events/s",
        sent as f64 / elapsed.as_secs_f64() / 1e6
    );

    let misordered = MISORDERED.load(Ordering::Relaxed);
    let ok = delivered + dropped == sent && delivered == accepted && misordered == 0;
    println!(
        "check: delivered + dropped == sent: {}; out-of-order or duplicate: {misordered}",
        delivered + dropped == sent
    );
    if !ok {
        eprintln!("demo: accounting check FAILED");
        std::process::exit(1);
    }
}
