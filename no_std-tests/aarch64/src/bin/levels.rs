//! Two bottom-half levels preempting each other on every one of four
//! cores, each level's drain its own GIC interrupt, under a cross-core
//! storm of top halves that raise at both levels.
//!
//! **Wiring.** `Runtime<BareMetal<VirtGicLevels>, 4, 2>`, time budget off.
//! `pend_drain(cpu, level)` sends the level's own SGI to core `cpu`: SGI 4
//! (priority 0xa0) for level 0, SGI 5 (0x80, more urgent) for level 1;
//! the harness runs `RT.drain_level(level)` for it with IRQs unmasked (a
//! nested interrupt: the GIC's running priority keeps the same and lower
//! levels out, a more urgent one preempts). The top halves are SGI 2
//! (0x40) from the other cores, above both levels.
//!
//! - Level 0: BULK (vector 3) and FLUSH (5). FLUSH spins a while (a log
//!   flush). Every BULK run raises STEP (so pends level 1's SGI on its own
//!   core) and then busy-waits, bounded, until STEP's run count on this
//!   core moves: only level 1's drain interrupt, preempting the running
//!   level-0 handler, can move it. Then it spins like FLUSH.
//! - Level 1: STEP (4) and CTRL (7), short handlers.
//!
//! **Storm.** Every core sends `SENDS` top-half SGIs, one at a time, in
//! turn to each of the three others, and sleeps until the target has run
//! each one (GICv2 merges a second send from one core into a pending one).
//! A top half raises, on the core that takes it, a pseudo-random non-empty
//! subset of the four vectors (a fixed sequence per target and sender).
//! Between sends, on every other step, the sender raises a subset on
//! itself with IRQs masked (a local top half); its level SGIs are taken
//! when it unmasks them.
//!
//! **Checks, per core**, exact: for each vector, the raise calls made on
//! the core (top halves and BULK's raises of STEP) = `Stats::raised` =
//! `runs` + `coalesced`, and `runs` = the handler's own count; no handler
//! of a level started while a handler of the same level was running on
//! the core (an in-flight counter per core and level), and no level-0
//! handler started inside a level-1 one; every BULK run saw level 1 run
//! inside it, so level-1 runs inside a running level-0 handler >= BULK
//! runs > 0; no drain returned `Busy` or `Disabled` (nothing here nests a
//! level in itself or holds a guard); every level SGI taken ran one drain,
//! and no more SGIs than `pend_drain` calls (GICv2 merges a send into a
//! pending SGI); handlers ran on their own core with IRQs unmasked; the
//! core took nested interrupts; every top-half SGI sent to it ran; nothing
//! is pending at the end.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DrainOutcome, Level, Runtime, Vector};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, VirtGicLevels, CORES};
use core::sync::atomic::{AtomicU32, Ordering};

t::entry!(scenario, irq_levels = level_drain, irq_top = top_half);

static RT: Runtime<BareMetal<VirtGicLevels>, CORES, 2> =
    Runtime::new(Config::DEFAULT.time_budget_ns(0));

const LOW: Level = Level::new(0);
const HIGH: Level = Level::new(1);

const BULK: Vector = Vector::new(3);
const FLUSH: Vector = Vector::new(5);
const STEP: Vector = Vector::new(4);
const CTRL: Vector = Vector::new(7);
/// The vectors, their names and levels, in this order everywhere.
const VECS: [Vector; 4] = [BULK, FLUSH, STEP, CTRL];
const NAMES: [&str; 4] = ["BULK", "FLUSH", "STEP", "CTRL"];
const LEVEL_OF: [Level; 4] = [LOW, LOW, HIGH, HIGH];
const I_BULK: usize = 0;
const I_STEP: usize = 2;

/// Top-half SGIs each core sends (to the three others in turn).
const SENDS: u32 = 1_500;
/// Spin iterations of a level-0 handler (a bulk job top halves can land in).
const WORK: u32 = 400;
/// The longest a wait may take (generic timer), then the run fails.
const WAIT_NS: u64 = 5_000_000_000;

/// Drain outcomes, in the order of `outcome_index`.
const OUTCOMES: [&str; 4] = ["Complete", "Remaining", "Busy", "Disabled"];

fn outcome_index(o: DrainOutcome) -> usize {
    match o {
        DrainOutcome::Complete => 0,
        DrainOutcome::Remaining => 1,
        DrainOutcome::Busy => 2,
        _ => 3,
    }
}

/// One core's counts.
struct Core {
    /// Raise calls made on this core, per vector.
    raises: [AtomicU32; 4],
    /// Handler runs on this core, per vector.
    runs: [AtomicU32; 4],
    /// Handlers of each level running now on this core.
    in_flight: [AtomicU32; 2],
    /// Handler starts that found one of their own level running.
    nested_self: [AtomicU32; 2],
    /// Level-0 handler starts that found a level-1 handler running.
    inverted: AtomicU32,
    /// Level-1 handler starts that found a level-0 handler running.
    preempted: AtomicU32,
    /// BULK runs whose bounded wait saw STEP run inside them.
    waited: AtomicU32,
    /// Handler runs on another core than the runtime said, or with IRQs
    /// masked (a level drain runs them unmasked).
    bad_context: AtomicU32,
    /// Level drains run, per level and outcome.
    drains: [[AtomicU32; 4]; 2],
    /// Top halves that landed inside a level-0 / level-1 handler.
    tops_in: [AtomicU32; 2],
    /// Top-half SGIs this core sent to each target.
    sent: [AtomicU32; CORES],
    /// The fixed raise pattern of the top halves from each source.
    pattern: [AtomicU32; CORES],
}

static CORE: [Core; CORES] = [const {
    Core {
        raises: [const { AtomicU32::new(0) }; 4],
        runs: [const { AtomicU32::new(0) }; 4],
        in_flight: [const { AtomicU32::new(0) }; 2],
        nested_self: [const { AtomicU32::new(0) }; 2],
        inverted: AtomicU32::new(0),
        preempted: AtomicU32::new(0),
        waited: AtomicU32::new(0),
        bad_context: AtomicU32::new(0),
        drains: [const { [const { AtomicU32::new(0) }; 4] }; 2],
        tops_in: [const { AtomicU32::new(0) }; 2],
        sent: [const { AtomicU32::new(0) }; CORES],
        pattern: [const { AtomicU32::new(0) }; CORES],
    }
}; CORES];

fn load(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

fn bump(a: &AtomicU32) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Level `level`'s drain SGI (IRQ context, IRQs unmasked).
fn level_drain(level: Level) {
    let out = RT.drain_level(level);
    bump(&CORE[VirtGicLevels::cpu() % CORES].drains[level.index()][outcome_index(out)]);
}

/// Raises vector `i` on the calling core and counts the call.
fn raise(i: usize) {
    bump(&CORE[VirtGicLevels::cpu() % CORES].raises[i]);
    RT.raise(VECS[i]);
}

/// Raises the vectors of the low four bits of `x` (FLUSH if none).
fn raise_subset(x: u32) {
    let mut any = false;
    for i in 0..VECS.len() {
        if x & (1 << i) != 0 {
            raise(i);
            any = true;
        }
    }
    if !any {
        raise(1);
    }
}

/// SGI 2 from core `source`: a top half (IRQs masked).
fn top_half(source: usize) {
    let me = &CORE[VirtGicLevels::cpu() % CORES];
    for (lvl, c) in me.tops_in.iter().enumerate() {
        if load(&me.in_flight[lvl]) != 0 {
            bump(c);
        }
    }
    let p = &me.pattern[source % CORES];
    let x = t::XorShift::new(load(p)).next_u32();
    p.store(x, Ordering::Relaxed);
    raise_subset(x >> 7);
}

/// The start of a handler of level `lvl` on `cpu`: the context and
/// nesting checks. Returns the core's counts.
fn enter(lvl: usize, cpu: usize) -> &'static Core {
    let here = VirtGicLevels::cpu();
    let me = &CORE[here % CORES];
    if here != cpu || t::irqs_are_masked() {
        bump(&me.bad_context);
    }
    if me.in_flight[lvl].fetch_add(1, Ordering::Relaxed) != 0 {
        bump(&me.nested_self[lvl]);
    }
    let other = load(&me.in_flight[1 - lvl]) != 0;
    if other && lvl == 0 {
        bump(&me.inverted);
    }
    if other && lvl == 1 {
        bump(&me.preempted);
    }
    me
}

fn exit(me: &Core, lvl: usize) {
    me.in_flight[lvl].fetch_sub(1, Ordering::Relaxed);
}

fn spin(n: u32) {
    for i in 0..n {
        core::hint::black_box(i);
        core::hint::spin_loop();
    }
}

/// BULK and FLUSH (level 0).
fn low_handler(which: &'static usize, cpu: usize) {
    let me = enter(0, cpu);
    bump(&me.runs[*which]);
    if *which == I_BULK {
        // The urgent work arrives in the middle of the bulk job: only
        // level 1's drain SGI, preempting this handler, can run it.
        let before = load(&me.runs[I_STEP]);
        raise(I_STEP);
        t::wait_until_ns(
            "level 1 to preempt the running BULK handler",
            WAIT_NS,
            || load(&me.runs[I_STEP]) != before,
        );
        bump(&me.waited);
    }
    spin(WORK);
    exit(me, 0);
}

/// STEP and CTRL (level 1).
fn high_handler(which: &'static usize, cpu: usize) {
    let me = enter(1, cpu);
    bump(&me.runs[*which]);
    exit(me, 1);
}

static WHICH: [usize; 4] = [0, 1, 2, 3];

fn scenario(cpu: usize) {
    t::gic_init_core();
    if cpu == 0 {
        for (i, v) in VECS.iter().enumerate() {
            let h = if LEVEL_OF[i] == LOW {
                low_handler
            } else {
                high_handler
            };
            let r = RT.register_with_at(LEVEL_OF[i], *v, NAMES[i], &WHICH[i], h);
            check_eq!(r, Ok(()), "register {} at {}", NAMES[i], LEVEL_OF[i]);
        }
        for (i, v) in VECS.iter().enumerate() {
            check_eq!(RT.vector_level(*v), LEVEL_OF[i], "level of {}", NAMES[i]);
        }
        println!(
            "levels: {CORES} cores x {SENDS} top halves (SGI {}) to the others; level 0 = SGI {} (priority {:#x}), level 1 = SGI {} (priority {:#x}), drains nested",
            t::SGI_TOP,
            t::SGI_LEVEL[0],
            t::LEVEL_PRIORITY[0],
            t::SGI_LEVEL[1],
            t::LEVEL_PRIORITY[1],
        );
    }
    t::barrier();
    storm(cpu);
    t::barrier();
    // Every core's work drains in its own SGIs; wait until it has.
    t::wait_until_ns("this core's levels to drain", WAIT_NS, || {
        RT.pending(cpu) == 0
            && load(&CORE[cpu].in_flight[0]) == 0
            && load(&CORE[cpu].in_flight[1]) == 0
    });
    t::barrier();
    check_core(cpu);
    t::barrier();
    if cpu == 0 {
        report();
    }
}

/// Sends `SENDS` top halves to the other cores in turn, with a local top
/// half on every other step.
fn storm(cpu: usize) {
    let me = &CORE[cpu];
    let mut rng = t::XorShift::new(0x2545_f491 ^ (cpu as u32 + 1).wrapping_mul(0x9e37_79b9));
    for i in 0..SENDS {
        let target = (cpu + 1 + (i % 3) as usize) % CORES;
        let n = me.sent[target].fetch_add(1, Ordering::Relaxed) + 1;
        t::send_top_sgi(target);
        t::sleep_until("a top-half SGI to be taken", WAIT_NS, || {
            t::top_sgis(target, cpu) == n
        });
        if i % 2 == 0 {
            let x = rng.next_u32();
            t::irqs_masked(|| raise_subset(x));
        }
    }
}

fn check_core(cpu: usize) {
    let me = &CORE[cpu];
    let s = RT.stats();
    for (i, v) in VECS.iter().enumerate() {
        let raised = load(&me.raises[i]);
        let runs = load(&me.runs[i]);
        check_eq!(s.raised(cpu, *v), raised, "cpu {cpu} {}: raised", NAMES[i]);
        check_eq!(s.runs(cpu, *v), runs, "cpu {cpu} {}: runs", NAMES[i]);
        check_eq!(
            runs + s.coalesced(cpu, *v),
            raised,
            "cpu {cpu} {}: runs + coalesced = raises",
            NAMES[i]
        );
        check!(runs > 0, "cpu {cpu} {}: never ran", NAMES[i]);
        check_eq!(s.unhandled(cpu, *v), 0, "cpu {cpu} {}: unhandled", NAMES[i]);
    }
    for lvl in 0..2 {
        check_eq!(
            load(&me.nested_self[lvl]),
            0,
            "cpu {cpu}: level {lvl} handlers nested in their own level"
        );
        let level = Level::new(lvl);
        let drains: u32 = me.drains[lvl].iter().map(load).sum();
        check_eq!(
            load(&me.drains[lvl][2]),
            0,
            "cpu {cpu}: level {lvl} drains that returned Busy"
        );
        check_eq!(
            load(&me.drains[lvl][3]),
            0,
            "cpu {cpu}: level {lvl} drains that returned Disabled"
        );
        check_eq!(
            drains,
            t::level_sgis(cpu, level),
            "cpu {cpu}: level {lvl} drains = its SGIs taken"
        );
        check!(
            t::level_sgis(cpu, level) <= t::level_kicks(cpu, level)
                && t::level_sgis(cpu, level) > 0,
            "cpu {cpu}: level {lvl} SGIs taken {} in 1..=pend_drain calls {}",
            t::level_sgis(cpu, level),
            t::level_kicks(cpu, level)
        );
        check_eq!(
            RT.pending_at(cpu, level),
            0,
            "cpu {cpu}: level {lvl} pending at the end"
        );
    }
    check_eq!(
        load(&me.inverted),
        0,
        "cpu {cpu}: level-0 handlers started inside a level-1 handler"
    );
    let bulk = load(&me.runs[I_BULK]);
    check_eq!(
        load(&me.waited),
        bulk,
        "cpu {cpu}: BULK runs that saw level 1 preempt them"
    );
    check!(
        bulk > 0 && load(&me.preempted) >= bulk,
        "cpu {cpu}: level-1 runs inside a running level-0 handler {} >= BULK runs {} > 0",
        load(&me.preempted),
        bulk
    );
    check_eq!(
        load(&me.bad_context),
        0,
        "cpu {cpu}: handler runs on another core or with IRQs masked"
    );
    check!(
        t::nested_irqs(cpu) > 0 && t::max_irq_depth(cpu) >= 2,
        "cpu {cpu}: nested IRQs {} (deepest {})",
        t::nested_irqs(cpu),
        t::max_irq_depth(cpu)
    );
    for (src, other) in CORE.iter().enumerate() {
        let want = if src == cpu {
            0
        } else {
            load(&other.sent[cpu])
        };
        check_eq!(
            t::top_sgis(cpu, src),
            want,
            "cpu {cpu}: top halves from cpu {src}"
        );
    }
}

fn report() {
    let s = RT.stats();
    let mut total_preempted = 0;
    for (c, me) in CORE.iter().enumerate() {
        let mut line = [[0u32; 3]; 4];
        for (i, v) in VECS.iter().enumerate() {
            line[i] = [load(&me.raises[i]), load(&me.runs[i]), s.coalesced(c, *v)];
        }
        println!(
            "cpu{c}: level 0: BULK raised {} = ran {} + coalesced {}, FLUSH {} = {} + {}; level 1: STEP {} = {} + {}, CTRL {} = {} + {}",
            line[0][0], line[0][1], line[0][2], line[1][0], line[1][1], line[1][2],
            line[2][0], line[2][1], line[2][2], line[3][0], line[3][1], line[3][2],
        );
        println!(
            "cpu{c}: level 1 ran inside a running level-0 handler {} times (every BULK run: {}); level nested in itself 0, level 0 inside level 1 0",
            load(&me.preempted),
            load(&me.waited),
        );
        for lvl in 0..2 {
            let level = Level::new(lvl);
            println!(
                "cpu{c}: level {lvl}: SGIs {} (pend_drain {}); drains {} {}, {} {}, {} {}, {} {}",
                t::level_sgis(c, level),
                t::level_kicks(c, level),
                OUTCOMES[0],
                load(&me.drains[lvl][0]),
                OUTCOMES[1],
                load(&me.drains[lvl][1]),
                OUTCOMES[2],
                load(&me.drains[lvl][2]),
                OUTCOMES[3],
                load(&me.drains[lvl][3]),
            );
        }
        println!(
            "cpu{c}: top halves {} (inside level 0 {}, inside level 1 {}); nested IRQs {}, deepest {}; restarts {}, budget exhausted {}",
            (0..CORES).map(|src| t::top_sgis(c, src)).sum::<u32>(),
            load(&me.tops_in[0]),
            load(&me.tops_in[1]),
            t::nested_irqs(c),
            t::max_irq_depth(c),
            s.restarts(c),
            s.budget_exhausted(c),
        );
        total_preempted += load(&me.preempted);
    }
    println!(
        "level 1 preempted a running level-0 handler {total_preempted} times on {CORES} cores"
    );
    println!("levels: ok");
}
