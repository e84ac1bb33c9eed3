//! Raises and drains on four cores at once, with exact per-CPU accounting.
//!
//! Every core runs its own fixed pseudo-random pattern of `ROUNDS` steps
//! against one shared `Runtime<BareMetal<Virt>, 4>`: a step either raises
//! one of three vectors on that core (`Runtime::raise`), or is an
//! "interrupt return" where the core drains if its drain was pended
//! (`Board::pend_drain` sets the core's flag; `take_pend` takes it). The
//! core keeps its own model of its pending mask, so it knows which raises
//! must coalesce and which must pend a drain.
//!
//! Handler A re-raises B on every third run, from inside the drain (a
//! restart, never a kick); handler C spins 2 µs of the generic timer (so
//! `max_handler_ns` measures the board's clock). Each handler counts its
//! runs per core, indexed by the core's own `MPIDR`, and checks that the
//! `cpu` the runtime passes is that core.
//!
//! Checked on every core, against the crate's per-CPU `Stats`:
//! `raised` = the core's raise calls (plus A's re-raises of B),
//! `coalesced` = the raises the model says found the bit set, `runs` =
//! the handler's own count on that core = raised − coalesced, no
//! unhandled raises, `restarts` = A's re-raises, no budget exhaustion,
//! pend_drain calls = raises onto an empty mask = drains run, the drain
//! flag is set exactly when work is pending, after every raise the core's
//! pending mask is exactly its own model (no other core's raise lands in
//! it), and nothing is left pending.
//! Core 0 then prints the per-core table and the totals. The time budget is
//! off (`time_budget_ns(0)`): a host that deschedules a vCPU mid-drain must
//! not change the counts, which depend only on each core's fixed pattern.
//!
//! `run.sh` also runs this binary as `percpu_icount`: the four cores under
//! `-icount shift=4`, which QEMU runs round-robin on one host thread at
//! fixed instruction counts. There the whole output, C's measured time
//! included, must be byte-identical on two runs.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DrainOutcome, Misuse, Runtime, Vector};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, Virt, CORES};
use core::sync::atomic::{AtomicU32, Ordering};

t::entry!(scenario);

static RT: Runtime<BareMetal<Virt>, CORES> = Runtime::new(Config::DEFAULT.time_budget_ns(0));

const ROUNDS: u32 = 20_000;
const VA: Vector = Vector::new(1);
const VB: Vector = Vector::new(2);
const VC: Vector = Vector::new(5);
const VECS: [Vector; 3] = [VA, VB, VC];
const NAMES: [&str; 3] = ["A", "B", "C"];

/// One vector's handler counters, per core.
struct Counters {
    which: usize,
    runs: [AtomicU32; CORES],
    wrong_cpu: AtomicU32,
}

impl Counters {
    const fn new(which: usize) -> Counters {
        Counters {
            which,
            runs: [const { AtomicU32::new(0) }; CORES],
            wrong_cpu: AtomicU32::new(0),
        }
    }
}

static COUNTERS: [Counters; 3] = [Counters::new(0), Counters::new(1), Counters::new(2)];
/// Re-raises of B from A's handler, per core.
static REEMIT: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];

/// What each core did, for core 0's table: raised, coalesced (per vector),
/// drains.
struct Report {
    raised: [AtomicU32; 3],
    coalesced: [AtomicU32; 3],
    drains: AtomicU32,
}

static REPORT: [Report; CORES] = [const {
    Report {
        raised: [const { AtomicU32::new(0) }; 3],
        coalesced: [const { AtomicU32::new(0) }; 3],
        drains: AtomicU32::new(0),
    }
}; CORES];

fn handler(c: &'static Counters, cpu: usize) {
    let here = Virt::cpu();
    if here != cpu {
        c.wrong_cpu.fetch_add(1, Ordering::Relaxed);
    }
    let n = c.runs[here % CORES].fetch_add(1, Ordering::Relaxed) + 1;
    match c.which {
        0 if n.is_multiple_of(3) => {
            REEMIT[here % CORES].fetch_add(1, Ordering::Relaxed);
            RT.raise(VB);
        }
        2 => {
            let start = t::now_ns();
            while t::now_ns().wrapping_sub(start) < 2_000 {
                core::hint::spin_loop();
            }
        }
        _ => {}
    }
}

fn scenario(cpu: usize) {
    if cpu == 0 {
        for (i, v) in VECS.iter().enumerate() {
            let r = RT.register_with(*v, NAMES[i], &COUNTERS[i], handler);
            check_eq!(r, Ok(()), "register vector {}", v.index());
        }
        println!("percpu: {CORES} cores x {ROUNDS} steps, vectors A=1 B=2 C=5, time budget off");
    }
    t::barrier();

    // Each core's own pattern, from a per-core seed.
    let mut rng = t::XorShift::new(0x2545_f491 ^ (cpu as u32 + 1).wrapping_mul(0x9e37_79b9));
    let mut model = 0u32; // the core's pending mask, as it should be
    let mut raised = [0u32; 3];
    let mut coalesced = [0u32; 3];
    let mut expect_kicks = 0u32;
    let mut drains = 0u32;
    for step in 0..ROUNDS {
        let r = rng.next_u32();
        if !r.is_multiple_of(4) {
            let i = ((r >> 8) % 3) as usize;
            let bit = 1 << VECS[i].index();
            if model == 0 {
                expect_kicks += 1;
            }
            if model & bit != 0 {
                coalesced[i] += 1;
            }
            model |= bit;
            raised[i] += 1;
            RT.raise(VECS[i]);
            check!(
                t::is_pended(cpu),
                "step {step}: a raise left the drain unpended"
            );
            // The mask holds this core's raises and nothing else, while
            // three other cores raise the same vectors on theirs.
            check_eq!(
                RT.pending(cpu),
                model,
                "step {step}: cpu {cpu}'s pending mask = its own raises"
            );
        } else {
            // An interrupt return: drain if the drain was pended.
            let pended = t::take_pend(cpu);
            check_eq!(
                pended,
                model != 0,
                "step {step}: drain pended iff work is pending"
            );
            if pended {
                let out = RT.drain();
                check_eq!(out, DrainOutcome::Complete, "step {step}: drain outcome");
                check_eq!(RT.pending(cpu), 0, "step {step}: pending after a drain");
                model = 0;
                drains += 1;
            }
        }
    }
    if t::take_pend(cpu) {
        check_eq!(RT.drain(), DrainOutcome::Complete, "final drain");
        drains += 1;
    }

    // Exact per-CPU accounting, on this core, while the others still run.
    let s = RT.stats();
    let reemit = REEMIT[cpu].load(Ordering::Relaxed);
    for (i, v) in VECS.iter().enumerate() {
        let n = NAMES[i];
        let extra = if *v == VB { reemit } else { 0 };
        let runs = COUNTERS[i].runs[cpu].load(Ordering::Relaxed);
        check_eq!(
            s.raised(cpu, *v),
            raised[i] + extra,
            "cpu {cpu} {n}: raised"
        );
        check_eq!(
            s.coalesced(cpu, *v),
            coalesced[i],
            "cpu {cpu} {n}: coalesced"
        );
        check_eq!(
            s.runs(cpu, *v),
            runs,
            "cpu {cpu} {n}: runs = handler's count"
        );
        check_eq!(
            runs,
            raised[i] + extra - coalesced[i],
            "cpu {cpu} {n}: runs = raised - coalesced"
        );
        check_eq!(s.unhandled(cpu, *v), 0, "cpu {cpu} {n}: unhandled");
        check_eq!(s.panicked(cpu, *v), 0, "cpu {cpu} {n}: panicked");
        REPORT[cpu].raised[i].store(raised[i] + extra, Ordering::Relaxed);
        REPORT[cpu].coalesced[i].store(coalesced[i], Ordering::Relaxed);
    }
    check_eq!(
        s.restarts(cpu),
        reemit,
        "cpu {cpu}: restarts = A's re-raises of B"
    );
    check_eq!(s.budget_exhausted(cpu), 0, "cpu {cpu}: budget exhausted");
    check_eq!(
        s.misuse(cpu, Misuse::CpuOutOfRange),
        0,
        "cpu {cpu}: CPU index out of range"
    );
    check_eq!(
        t::kicks(cpu),
        expect_kicks,
        "cpu {cpu}: pend_drain calls = raises onto an empty mask"
    );
    check_eq!(drains, expect_kicks, "cpu {cpu}: drains = pend_drain calls");
    check_eq!(RT.pending(cpu), 0, "cpu {cpu}: pending at the end");
    check!(
        s.max_handler_ns(cpu, VC) >= 2_000,
        "cpu {cpu}: C's 2 us spin is measured by the clock"
    );
    REPORT[cpu].drains.store(drains, Ordering::Relaxed);

    t::barrier();
    if cpu != 0 {
        return;
    }
    let mut total_raised = 0u32;
    let mut total_runs = 0u32;
    let mut total_coalesced = 0u32;
    for c in 0..CORES {
        let r = &REPORT[c];
        let g = |a: &[AtomicU32; 3], i: usize| a[i].load(Ordering::Relaxed);
        let runs = |i: usize| COUNTERS[i].runs[c].load(Ordering::Relaxed);
        println!(
            "cpu{c}: raised A {} B {} C {}; ran A {} B {} C {}; coalesced A {} B {} C {}",
            g(&r.raised, 0),
            g(&r.raised, 1),
            g(&r.raised, 2),
            runs(0),
            runs(1),
            runs(2),
            g(&r.coalesced, 0),
            g(&r.coalesced, 1),
            g(&r.coalesced, 2),
        );
        println!(
            "cpu{c}: drains {} = pend_drain calls {}; restarts {} = re-raises from A {}; max C run {} ns",
            r.drains.load(Ordering::Relaxed),
            t::kicks(c),
            s.restarts(c),
            REEMIT[c].load(Ordering::Relaxed),
            s.max_handler_ns(c, VC),
        );
        for i in 0..3 {
            total_raised += g(&r.raised, i);
            total_coalesced += g(&r.coalesced, i);
            total_runs += runs(i);
        }
    }
    let wrong: u32 = COUNTERS
        .iter()
        .map(|c| c.wrong_cpu.load(Ordering::Relaxed))
        .sum();
    check_eq!(wrong, 0, "handlers that ran with another core's index");
    check_eq!(
        total_raised,
        total_runs + total_coalesced,
        "total raised = runs + coalesced"
    );
    println!("total: raised {total_raised} = ran {total_runs} + coalesced {total_coalesced}");
    println!("handlers told a cpu index other than their own core's MPIDR: {wrong}");
    println!("percpu: ok");
}
