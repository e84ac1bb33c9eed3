//! Stress tests on the host backend with real threads.
//!
//! Producers run on every CPU (threads bound with `bind_current_thread`),
//! plus extra producers sharing those CPUs (like nested interrupts); one
//! drain thread per CPU index loops `drain()`. Every item carries a
//! sequence number and must be delivered exactly once or counted as
//! dropped; a tasklet overlap detector (in-flight counter) proves the
//! tasklet never runs on two CPUs at once; after the producers stop, the
//! drains must consume everything and leave the tasklet idle, with exactly
//! one run per `schedule() == true`.
//!
//! Bounded in count and time: every wait has a deadline, and under
//! `cfg(miri)` the counts shrink to a handful.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{
    Config, Consumer, DrainOutcome, Host, Mailbox, MpscMailbox, Runtime, Tasklet, Vector,
};

const CPUS: usize = 2;
/// Producers beyond one per CPU; they share the CPUs.
const EXTRA_PRODUCERS: usize = 2;
const PRODUCERS: usize = CPUS + EXTRA_PRODUCERS;
const DEADLINE: Duration = Duration::from_secs(60);

#[track_caller]
fn wait_until(what: &str, start: Instant, cond: impl Fn() -> bool) {
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// Drain threads, one per CPU index, looping `drain()` until stopped.
struct Drainers {
    stop: &'static AtomicBool,
    threads: Vec<thread::JoinHandle<[u32; 3]>>,
}

impl Drainers {
    fn start(rt: &'static Runtime<Host, CPUS>, stop: &'static AtomicBool) -> Self {
        let threads = (0..CPUS)
            .map(|cpu| {
                thread::spawn(move || {
                    let _bound = rt.bind_current_thread(cpu).unwrap();
                    // Complete, Remaining, Busy.
                    let mut outcomes = [0u32; 3];
                    while !stop.load(Ordering::SeqCst) {
                        match rt.drain() {
                            DrainOutcome::Complete => outcomes[0] += 1,
                            DrainOutcome::Remaining => outcomes[1] += 1,
                            DrainOutcome::Busy => outcomes[2] += 1,
                            DrainOutcome::Disabled => {
                                unreachable!("no bottom-half guard in this test")
                            }
                        }
                        thread::yield_now();
                    }
                    outcomes
                })
            })
            .collect();
        Drainers { stop, threads }
    }

    fn stop(self) -> Vec<[u32; 3]> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    }
}

/// After everything stopped: one more drain on each CPU finds nothing.
fn assert_quiet(rt: &'static Runtime<Host, CPUS>) {
    for cpu in 0..CPUS {
        let _bound = rt.bind_current_thread(cpu).unwrap();
        assert_eq!(rt.pending(cpu), 0, "CPU {cpu} still has work");
        assert_eq!(rt.drain(), DrainOutcome::Complete);
    }
}

// ---------------------------------------------------------------------------
// MPSC mailbox + tasklet.

mod mpsc {
    use super::*;

    pub const ITEMS: usize = if cfg!(miri) { 20 } else { 200_000 };
    pub const PER: usize = ITEMS / PRODUCERS;
    const _: () = assert!(PER < 1 << 32);

    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static MB: MpscMailbox<u64, 64> = MpscMailbox::new();
    pub static STOP: AtomicBool = AtomicBool::new(false);

    /// Per item: pushed OK (set by the producer).
    pub static OK: [AtomicBool; ITEMS] = [const { AtomicBool::new(false) }; ITEMS];
    /// Per item: times popped (by the tasklet).
    pub static SEEN: [AtomicU8; ITEMS] = [const { AtomicU8::new(0) }; ITEMS];
    /// Per producer: last sequence number popped, plus one (0: none yet).
    pub static LAST: [AtomicU64; PRODUCERS] = [const { AtomicU64::new(0) }; PRODUCERS];
    pub static CONSUMED: AtomicUsize = AtomicUsize::new(0);
    pub static ORDER_VIOLATIONS: AtomicU32 = AtomicU32::new(0);
    pub static BAD_ITEMS: AtomicU32 = AtomicU32::new(0);

    pub static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    pub static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    pub static CONSUMER_TAKEN: AtomicU32 = AtomicU32::new(0);

    pub static T: Tasklet = Tasklet::new(&RT, bottom_half);

    fn bottom_half() {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        match MB.consumer() {
            Ok(mut rx) => {
                while let Some(item) = rx.pop() {
                    let (p, seq) = ((item >> 32) as usize, (item & 0xffff_ffff) as usize);
                    if p >= PRODUCERS || seq >= PER {
                        BAD_ITEMS.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    SEEN[p * PER + seq].fetch_add(1, Ordering::SeqCst);
                    // Each producer's items come out in its push order.
                    let prev = LAST[p].swap(seq as u64 + 1, Ordering::SeqCst);
                    if prev > seq as u64 {
                        ORDER_VIOLATIONS.fetch_add(1, Ordering::SeqCst);
                    }
                    CONSUMED.fetch_add(1, Ordering::SeqCst);
                }
            }
            // Only this tasklet consumes; a taken consumer means two
            // instances overlapped.
            Err(_) => {
                CONSUMER_TAKEN.fetch_add(1, Ordering::SeqCst);
            }
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct ProducerCounts {
    pushes_ok: usize,
    push_errs: usize,
    scheduled: usize,
    coalesced: usize,
}

#[test]
fn mpsc_items_are_delivered_exactly_once_or_counted_dropped() {
    use mpsc::*;
    let start = Instant::now();
    let drainers = Drainers::start(&RT, &STOP);

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let _bound = RT.bind_current_thread(p % CPUS).unwrap();
                let mut c = ProducerCounts::default();
                for seq in 0..PER {
                    // Top half: capture, push, schedule.
                    match MB.push((p as u64) << 32 | seq as u64) {
                        Ok(()) => {
                            OK[p * PER + seq].store(true, Ordering::SeqCst);
                            c.pushes_ok += 1;
                        }
                        Err(_) => c.push_errs += 1,
                    }
                    if T.schedule() {
                        c.scheduled += 1;
                    } else {
                        c.coalesced += 1;
                    }
                    if seq % 64 == 63 {
                        thread::yield_now();
                    }
                    if seq % 256 == 255 {
                        // Interrupt exit: drain this CPU here too, racing
                        // its drain thread (one of the two gets `Busy`).
                        let _ = RT.drain();
                    }
                }
                c
            })
        })
        .collect();
    let counts: Vec<ProducerCounts> = producers.into_iter().map(|t| t.join().unwrap()).collect();
    let total = counts
        .iter()
        .fold(ProducerCounts::default(), |a, c| ProducerCounts {
            pushes_ok: a.pushes_ok + c.pushes_ok,
            push_errs: a.push_errs + c.push_errs,
            scheduled: a.scheduled + c.scheduled,
            coalesced: a.coalesced + c.coalesced,
        });

    // Every schedule() == true is covered by a run: the drains consume
    // everything and the tasklet ends idle, one run per queued schedule.
    wait_until("every item consumed and the tasklet idle", start, || {
        CONSUMED.load(Ordering::SeqCst) == total.pushes_ok
            && T.runs() as usize == total.scheduled
            && !T.is_scheduled()
    });
    let outcomes = drainers.stop();
    assert_quiet(&RT);

    for (p, c) in counts.iter().enumerate() {
        assert_eq!(c.pushes_ok + c.push_errs, PER, "producer {p}: {c:?}");
        assert_eq!(c.scheduled + c.coalesced, PER, "producer {p}: {c:?}");
    }
    assert_eq!(total.pushes_ok + total.push_errs, PER * PRODUCERS);
    assert_eq!(
        MB.dropped() as usize,
        total.push_errs,
        "dropped() == Err count"
    );
    assert!(total.pushes_ok > 0, "nothing got through: {total:?}");
    for i in 0..PER * PRODUCERS {
        let ok = OK[i].load(Ordering::SeqCst);
        let seen = SEEN[i].load(Ordering::SeqCst);
        assert_eq!(
            seen,
            u8::from(ok),
            "producer {} seq {}: pushed ok {ok}, popped {seen} time(s)",
            i / PER,
            i % PER
        );
    }
    assert_eq!(CONSUMED.load(Ordering::SeqCst), total.pushes_ok);
    assert_eq!(BAD_ITEMS.load(Ordering::SeqCst), 0);
    assert_eq!(ORDER_VIOLATIONS.load(Ordering::SeqCst), 0);
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "tasklet ran concurrently"
    );
    assert_eq!(
        CONSUMER_TAKEN.load(Ordering::SeqCst),
        0,
        "tasklet ran concurrently"
    );
    assert_eq!(IN_FLIGHT.load(Ordering::SeqCst), 0);
    assert_eq!(
        T.runs() as usize,
        total.scheduled,
        "one run per queued schedule"
    );
    assert_eq!(T.coalesced() as usize, total.coalesced);
    assert!(MB.is_empty());
    assert!(MB.high_water() as usize <= MpscMailbox::<u64, 64>::CAPACITY);
    let tasklet_passes: u32 = (0..CPUS).map(|c| RT.stats().runs(c, Vector::TASKLET)).sum();
    assert!(tasklet_passes >= 1);
    assert!(start.elapsed() < DEADLINE);
    eprintln!(
        "mpsc stress: {total:?}, runs {}, drain outcomes {outcomes:?}, {:?}",
        T.runs(),
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// MPSC + tasklet with a thread that keeps disabling and enabling it.

mod disable_churn {
    use super::*;

    pub const ITEMS: usize = if cfg!(miri) { 16 } else { 100_000 };
    pub const PER: usize = ITEMS / PRODUCERS;
    pub const CYCLES: usize = if cfg!(miri) { 4 } else { 2_000 };

    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static MB: MpscMailbox<u32, 128> = MpscMailbox::new();
    pub static STOP: AtomicBool = AtomicBool::new(false);
    pub static CONSUMED: AtomicUsize = AtomicUsize::new(0);
    pub static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    pub static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    /// The callback started while `disable()` had returned and no `enable`
    /// had happened yet.
    pub static RAN_WHILE_DISABLED: AtomicU32 = AtomicU32::new(0);
    pub static DISABLED_WINDOW: AtomicBool = AtomicBool::new(false);
    pub static PRODUCERS_DONE: AtomicBool = AtomicBool::new(false);

    pub static T: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        if DISABLED_WINDOW.load(Ordering::SeqCst) {
            RAN_WHILE_DISABLED.fetch_add(1, Ordering::SeqCst);
        }
        let mut rx = MB.consumer().expect("one tasklet instance at a time");
        while rx.pop().is_some() {
            CONSUMED.fetch_add(1, Ordering::SeqCst);
        }
        drop(rx);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
}

#[test]
fn tasklet_disable_enable_churn_loses_nothing_and_never_overlaps() {
    use disable_churn::*;
    let start = Instant::now();
    let drainers = Drainers::start(&RT, &STOP);

    let control = thread::spawn(move || {
        let _bound = RT.bind_current_thread(1).unwrap();
        let mut cycles = 0;
        let mut in_flight_after_disable = 0;
        while cycles < CYCLES || !PRODUCERS_DONE.load(Ordering::SeqCst) {
            T.disable();
            if IN_FLIGHT.load(Ordering::SeqCst) != 0 {
                in_flight_after_disable += 1;
            }
            DISABLED_WINDOW.store(true, Ordering::SeqCst);
            for _ in 0..4 {
                thread::yield_now();
            }
            DISABLED_WINDOW.store(false, Ordering::SeqCst);
            T.enable();
            cycles += 1;
            thread::yield_now();
        }
        (cycles, in_flight_after_disable)
    });

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let _bound = RT.bind_current_thread(p % CPUS).unwrap();
                let (mut ok, mut queued) = (0, 0);
                for seq in 0..PER {
                    if MB.push((p * PER + seq) as u32).is_ok() {
                        ok += 1;
                    }
                    queued += usize::from(T.schedule());
                    if seq % 32 == 31 {
                        thread::yield_now();
                    }
                }
                (ok, queued)
            })
        })
        .collect();
    let (ok, queued) = producers
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    PRODUCERS_DONE.store(true, Ordering::SeqCst);
    let (cycles, in_flight_after_disable) = control.join().unwrap();
    assert!(!T.is_disabled());

    wait_until("every item consumed and the tasklet idle", start, || {
        CONSUMED.load(Ordering::SeqCst) == ok && T.runs() as usize == queued && !T.is_scheduled()
    });
    drainers.stop();
    assert_quiet(&RT);

    assert_eq!(ok + MB.dropped() as usize, PER * PRODUCERS);
    assert_eq!(CONSUMED.load(Ordering::SeqCst), ok);
    assert_eq!(T.runs() as usize, queued, "one run per queued schedule");
    assert_eq!(
        in_flight_after_disable, 0,
        "disable() returned during a run"
    );
    assert_eq!(
        RAN_WHILE_DISABLED.load(Ordering::SeqCst),
        0,
        "ran while disabled"
    );
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "tasklet ran concurrently"
    );
    assert!(cycles >= CYCLES);
}

// ---------------------------------------------------------------------------
// SPSC mailbox (heapless) + tasklet: one producer, exact FIFO.

mod spsc {
    use super::*;

    pub const ITEMS: u32 = if cfg!(miri) { 20 } else { 200_000 };

    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static MB: Mailbox<u32, 64> = Mailbox::new();
    pub static RX: Mutex<Option<Consumer<'static, u32, 64>>> = Mutex::new(None);
    pub static STOP: AtomicBool = AtomicBool::new(false);
    /// Next item expected, per the producer's list of accepted items.
    pub static RECEIVED: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    pub static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    pub static OVERLAPS: AtomicU32 = AtomicU32::new(0);

    pub static T: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        let mut rx = RX.lock().unwrap();
        let rx = rx.as_mut().unwrap();
        let mut got = RECEIVED.lock().unwrap();
        while let Some(x) = rx.pop() {
            got.push(x);
        }
        drop(got);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
}

#[test]
fn spsc_items_arrive_in_order_exactly_once_or_counted_dropped() {
    use spsc::*;
    let start = Instant::now();
    let (mut tx, rx) = MB.split().unwrap();
    *RX.lock().unwrap() = Some(rx);
    let drainers = Drainers::start(&RT, &STOP);

    let producer = thread::spawn(move || {
        let _bound = RT.bind_current_thread(1).unwrap();
        let mut accepted = Vec::new();
        let mut queued = 0;
        for seq in 0..ITEMS {
            match tx.push(seq) {
                Ok(()) => accepted.push(seq),
                Err(back) => assert_eq!(back, seq),
            }
            queued += usize::from(T.schedule());
            if seq % 64 == 63 {
                thread::yield_now();
            }
        }
        (accepted, queued)
    });
    let (accepted, queued) = producer.join().unwrap();

    wait_until("every item consumed and the tasklet idle", start, || {
        RECEIVED.lock().unwrap().len() == accepted.len()
            && T.runs() as usize == queued
            && !T.is_scheduled()
    });
    drainers.stop();
    assert_quiet(&RT);

    let received = RECEIVED.lock().unwrap();
    assert!(!accepted.is_empty());
    assert_eq!(accepted.len() + MB.dropped() as usize, ITEMS as usize);
    assert!(
        *received == accepted,
        "SPSC delivery is not exactly the accepted items in order"
    );
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0);
    assert!(MB.high_water() as usize <= Mailbox::<u32, 64>::CAPACITY);
}

// ---------------------------------------------------------------------------
// Softirq vectors: raised == runs + coalesced + unhandled + pending.

mod softirq {
    use super::*;

    pub const RAISES: usize = if cfg!(miri) { 20 } else { 100_000 };
    pub const V: Vector = Vector::new(5);
    /// No handler: every raise of it is coalesced or counted unhandled.
    pub const ORPHAN: Vector = Vector::new(20);

    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static STOP: AtomicBool = AtomicBool::new(false);
    pub static HANDLER_RUNS: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
    pub static WRONG_CPU: AtomicU32 = AtomicU32::new(0);
    pub static RAISED_V: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
    pub static RAISED_ORPHAN: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];

    pub fn handler(cpu: usize) {
        use bottomhalf::Backend;
        if cpu != Host::current_cpu() {
            WRONG_CPU.fetch_add(1, Ordering::SeqCst);
        }
        HANDLER_RUNS[cpu].fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn softirq_raises_are_run_or_coalesced_never_lost() {
    use softirq::*;
    let start = Instant::now();
    RT.register(V, "STRESS", handler).unwrap();
    let drainers = Drainers::start(&RT, &STOP);

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let cpu = p % CPUS;
                let _bound = RT.bind_current_thread(cpu).unwrap();
                for i in 0..RAISES / PRODUCERS {
                    RT.raise(V);
                    RAISED_V[cpu].fetch_add(1, Ordering::SeqCst);
                    if i % 16 == 0 {
                        RT.raise(ORPHAN);
                        RAISED_ORPHAN[cpu].fetch_add(1, Ordering::SeqCst);
                    }
                    if i % 1024 == 1023 {
                        thread::yield_now();
                    }
                    if i % 512 == 511 {
                        // Interrupt exit: drain here too, racing the drain
                        // thread of this CPU.
                        let _ = RT.drain();
                    }
                }
            })
        })
        .collect();
    for t in producers {
        t.join().unwrap();
    }
    wait_until("both CPUs drained", start, || {
        (0..CPUS).all(|c| RT.pending(c) == 0)
    });
    let outcomes = drainers.stop();
    assert_quiet(&RT);

    let s = RT.stats();
    let mut total_runs = 0;
    for cpu in 0..CPUS {
        let raised = RAISED_V[cpu].load(Ordering::SeqCst);
        let runs = HANDLER_RUNS[cpu].load(Ordering::SeqCst);
        assert_eq!(s.runs(cpu, V), runs, "CPU {cpu}");
        assert!(runs >= 1, "CPU {cpu} never ran its handler");
        assert_eq!(s.unhandled(cpu, V), 0);
        assert_eq!(
            s.runs(cpu, V) + s.coalesced(cpu, V) + s.unhandled(cpu, V) + (RT.pending(cpu) >> 5 & 1),
            raised,
            "CPU {cpu}: every raise ran or was coalesced"
        );
        assert_eq!(s.raised(cpu, V), raised, "CPU {cpu}");

        let orphan = RAISED_ORPHAN[cpu].load(Ordering::SeqCst);
        assert_eq!(
            s.runs(cpu, ORPHAN),
            0,
            "a vector without handler never runs"
        );
        assert!(s.unhandled(cpu, ORPHAN) >= 1);
        assert_eq!(
            s.unhandled(cpu, ORPHAN) + s.coalesced(cpu, ORPHAN),
            orphan,
            "CPU {cpu}"
        );
        assert_eq!(s.raised(cpu, ORPHAN), orphan);
        total_runs += runs;
    }
    assert_eq!(
        (0..CPUS)
            .map(|c| RAISED_V[c].load(Ordering::SeqCst))
            .sum::<u32>() as usize,
        RAISES / PRODUCERS * PRODUCERS
    );
    assert_eq!(WRONG_CPU.load(Ordering::SeqCst), 0);
    eprintln!(
        "softirq stress: {total_runs} runs for {RAISES} raises, drain outcomes {outcomes:?}, {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The same data path with no polling: the runtime's own drain threads,
// woken only by the kick of a raise or schedule on an idle CPU. A lost
// wake-up leaves an item undelivered and fails the deadline.

mod kicked {
    use super::*;

    pub const ITEMS: usize = if cfg!(miri) { 16 } else { 100_000 };
    pub const PER: usize = ITEMS / PRODUCERS;

    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static MB: MpscMailbox<u32, 64> = MpscMailbox::new();
    pub static SEEN: [AtomicU8; ITEMS] = [const { AtomicU8::new(0) }; ITEMS];
    pub static CONSUMED: AtomicUsize = AtomicUsize::new(0);
    pub static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
    pub static OVERLAPS: AtomicU32 = AtomicU32::new(0);

    pub static T: Tasklet = Tasklet::new(&RT, || {
        if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        let mut rx = MB.consumer().expect("one tasklet instance at a time");
        while let Some(i) = rx.pop() {
            SEEN[i as usize].fetch_add(1, Ordering::SeqCst);
            CONSUMED.fetch_add(1, Ordering::SeqCst);
        }
        drop(rx);
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    });
}

#[test]
fn kick_driven_drain_threads_deliver_every_item() {
    use kicked::*;
    let start = Instant::now();
    let drains = RT.spawn_drain_threads().unwrap();
    assert_eq!(drains.len(), CPUS);

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let _bound = RT.bind_current_thread(p % CPUS).unwrap();
                let mut ok = Vec::new();
                let mut queued = 0;
                for seq in 0..PER {
                    let item = (p * PER + seq) as u32;
                    if MB.push(item).is_ok() {
                        ok.push(item);
                    }
                    queued += usize::from(T.schedule());
                    if seq % 16 == 15 {
                        // Bursts with gaps, so the drain threads go back
                        // to sleep and must be woken again.
                        thread::yield_now();
                    }
                }
                (ok, queued)
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut queued = 0;
    for t in producers {
        let (o, q) = t.join().unwrap();
        ok.extend(o);
        queued += q;
    }

    while !(CONSUMED.load(Ordering::SeqCst) == ok.len()
        && T.runs() as usize == queued
        && !T.is_scheduled())
    {
        assert!(
            start.elapsed() < DEADLINE,
            "lost wake-up? consumed {} of {}, runs {} of {}, scheduled {}, pending {:?}, {:?}",
            CONSUMED.load(Ordering::SeqCst),
            ok.len(),
            T.runs(),
            queued,
            T.is_scheduled(),
            (0..CPUS).map(|c| RT.pending(c)).collect::<Vec<_>>(),
            T
        );
        thread::yield_now();
    }
    drop(drains);
    for cpu in 0..CPUS {
        assert_eq!(RT.pending(cpu), 0, "CPU {cpu}");
    }

    assert_eq!(ok.len() + MB.dropped() as usize, PER * PRODUCERS);
    let mut expected = vec![0u8; ITEMS];
    for &i in &ok {
        expected[i as usize] = 1;
    }
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(SEEN[i].load(Ordering::SeqCst), *want, "item {i}");
    }
    assert_eq!(T.runs() as usize, queued);
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "tasklet ran concurrently"
    );
}

mod kicked_softirq {
    use super::*;

    pub const RAISES: usize = if cfg!(miri) { 16 } else { 50_000 };
    pub const V: Vector = Vector::new(11);
    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static RUNS: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
    /// Per CPU: the last value a producer published before raising, and
    /// the last value a handler saw.
    pub static SENT: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];
    pub static SEEN: [AtomicU32; CPUS] = [const { AtomicU32::new(0) }; CPUS];

    pub fn handler(cpu: usize) {
        RUNS[cpu].fetch_add(1, Ordering::SeqCst);
        SEEN[cpu].store(SENT[cpu].load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// One producer per CPU raises after publishing a counter; the handler, run
/// by the kicked drain thread, records the counter it sees. The last raise
/// must be followed by a run that sees the last value (no raise is lost,
/// no wake-up is lost).
#[test]
fn kick_driven_softirq_sees_the_last_raise() {
    use kicked_softirq::*;
    let start = Instant::now();
    RT.register(V, "KICKED", handler).unwrap();
    let drains = RT.spawn_drain_threads().unwrap();
    let producers: Vec<_> = (0..CPUS)
        .map(|cpu| {
            thread::spawn(move || {
                let _bound = RT.bind_current_thread(cpu).unwrap();
                for i in 1..=RAISES as u32 {
                    SENT[cpu].store(i, Ordering::SeqCst);
                    RT.raise(V);
                    if i % 32 == 0 {
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for t in producers {
        t.join().unwrap();
    }
    while !(0..CPUS).all(|c| SEEN[c].load(Ordering::SeqCst) == RAISES as u32 && RT.pending(c) == 0)
    {
        assert!(
            start.elapsed() < DEADLINE,
            "lost wake-up? last value seen per CPU {:?} of {RAISES}, pending {:?}, runs {:?}",
            SEEN.iter()
                .map(|s| s.load(Ordering::SeqCst))
                .collect::<Vec<_>>(),
            (0..CPUS).map(|c| RT.pending(c)).collect::<Vec<_>>(),
            RUNS.iter()
                .map(|s| s.load(Ordering::SeqCst))
                .collect::<Vec<_>>(),
        );
        thread::yield_now();
    }
    drop(drains);
    let s = RT.stats();
    for (cpu, runs) in RUNS.iter().enumerate() {
        assert_eq!(s.runs(cpu, V), runs.load(Ordering::SeqCst));
        assert_eq!(s.raised(cpu, V) as usize, RAISES, "CPU {cpu}");
    }
}

// ---------------------------------------------------------------------------
// Delayed work items churned across CPUs, run by the drain threads.

mod delayed {
    use super::*;
    use bottomhalf::{DelayedWork, Work};

    pub const OPS: usize = if cfg!(miri) { 24 } else { 40_000 };
    pub const ITEMS: usize = 4;
    pub static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);
    pub static IDS: [usize; ITEMS] = [0, 1, 2, 3];
    pub static D: [DelayedWork; ITEMS] = [
        DelayedWork::with_context("d0", &IDS[0], run),
        DelayedWork::with_context("d1", &IDS[1], run),
        DelayedWork::with_context("d2", &IDS[2], run),
        DelayedWork::with_context("d3", &IDS[3], run),
    ];
    pub static IN_FLIGHT: [AtomicU32; ITEMS] = [const { AtomicU32::new(0) }; ITEMS];
    pub static OVERLAPS: AtomicU32 = AtomicU32::new(0);
    pub static RUNS: [AtomicU64; ITEMS] = [const { AtomicU64::new(0) }; ITEMS];

    fn run(id: &'static usize, _: &Work) {
        if IN_FLIGHT[*id].fetch_add(1, Ordering::SeqCst) != 0 {
            OVERLAPS.fetch_add(1, Ordering::SeqCst);
        }
        RUNS[*id].fetch_add(1, Ordering::SeqCst);
        IN_FLIGHT[*id].fetch_sub(1, Ordering::SeqCst);
    }
}

/// Producers on both CPUs (and extra ones sharing them) churn four delayed
/// items across the CPUs: `mod_delayed_work_on` and `queue_delayed_work_on`
/// to either CPU with delays of 0, 1 us and 30 us, `cancel`, and
/// `queue_work` of the item itself (which covers a cancelled timer where it
/// is linked). The drain threads fire the timers (they sleep until the
/// earliest deadline). Every call says whether it made a new instance or
/// removed one; after the producers stop and each item is flushed, every
/// instance ran or was cancelled (runs + cancels == instances, per item),
/// no item ever ran on two CPUs at once, and all are idle.
#[test]
fn delayed_work_churned_across_cpus_runs_or_cancels_every_instance() {
    use delayed::*;
    let start = Instant::now();
    let drains = RT.spawn_drain_threads().unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            thread::spawn(move || {
                let _bound = RT.bind_current_thread(p % CPUS).unwrap();
                let mut made = [0u64; ITEMS];
                let mut cancelled = [0u64; ITEMS];
                let mut x = 0x9e37_79b9_u32.wrapping_mul(p as u32 + 1);
                for n in 0..OPS {
                    // xorshift
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = (x % ITEMS as u32) as usize;
                    let cpu = ((x >> 8) % CPUS as u32) as usize;
                    let delay = Duration::from_nanos([0, 1_000, 30_000][((x >> 12) % 3) as usize]);
                    match (x >> 16) % 5 {
                        // `false`: this call queued a new instance.
                        0 => made[i] += u64::from(!RT.mod_delayed_work_on(cpu, &D[i], delay)),
                        1 => made[i] += u64::from(RT.queue_delayed_work_on(cpu, &D[i], delay)),
                        2 => cancelled[i] += u64::from(D[i].cancel()),
                        3 => made[i] += u64::from(RT.queue_work(D[i].work())),
                        _ => made[i] += u64::from(!RT.mod_delayed_work(&D[i], delay)),
                    }
                    if n % 64 == 63 {
                        thread::yield_now();
                    }
                }
                (made, cancelled)
            })
        })
        .collect();
    let mut made = [0u64; ITEMS];
    let mut cancelled = [0u64; ITEMS];
    for t in producers {
        let (m, c) = t.join().unwrap();
        for i in 0..ITEMS {
            made[i] += m[i];
            cancelled[i] += c[i];
        }
    }
    // Fire what still waits and wait for the runs (the drain threads run
    // them; this thread spins).
    for d in &D {
        d.flush().unwrap();
    }
    for (i, d) in D.iter().enumerate() {
        wait_until("the last run to finish", start, || {
            !d.is_pending() && !d.is_running()
        });
        assert_eq!(
            RUNS[i].load(Ordering::SeqCst) + cancelled[i],
            made[i],
            "item {i}: runs + cancels != instances"
        );
        assert_eq!(u64::from(d.runs()), RUNS[i].load(Ordering::SeqCst));
    }
    drop(drains);
    assert_eq!(
        OVERLAPS.load(Ordering::SeqCst),
        0,
        "an item ran on two CPUs at once"
    );
    assert!(
        made.iter().sum::<u64>() > cancelled.iter().sum::<u64>(),
        "nothing ran: {made:?} {cancelled:?}"
    );
}
