//! What a raise, a drain and a tasklet cost, in instructions, counted
//! deterministically by QEMU's `-icount`.
//!
//! Runs on one core (`-smp 1`, `entry!(…, single_core)`) with
//! `-icount shift=4,align=off,sleep=off` (`run.sh` passes both for this
//! binary, and runs it twice: the two outputs must be identical).
//!
//! **Ticks are instructions.** With `-icount shift=N`, QEMU advances its
//! virtual clock by 2^N ns per instruction executed. The generic timer
//! counts that clock at `CNTFRQ_EL0` = 62.5 MHz on QEMU 7.2 virt, one tick
//! per 1e9 / 62.5e6 = 16 ns. With N = 4, one instruction is 2^4 = 16 ns =
//! one tick: `CNTVCT_EL0` counts instructions exactly. (With N = 0 it
//! would advance one tick per 16 instructions.) The firmware checks both
//! halves of that: `CNTFRQ_EL0` is 62.5 MHz, and a block of 100 `nop`s
//! measures exactly 100 ticks more than an empty measurement.
//!
//! **A measurement** reads `CNTVCT_EL0` (`isb; mrs`, a compiler barrier,
//! `t::ticks`) before and after the operation, minus the same for an
//! empty operation (the `isb` and `mrs` themselves: `BASE`). Each
//! operation's set-up and clean-up (raising what a drain should find,
//! draining what a raise left) run outside the two reads. Each is
//! measured `REPS` times after one warm-up; the minimum is printed, and
//! the spread (maximum − minimum) must be 0: every repetition runs the
//! same instructions. The operations are called through a
//! function pointer (`timed`), so each figure includes the operation's
//! own function prologue and epilogue where the compiler kept one, but
//! not the call and return, which `BASE` holds.
//!
//! **The table** (`COSTS`) has one row per named operation with a bound
//! that fails the run if exceeded: about twice what the operation costs
//! today (QEMU 7.2, rustc 1.95, `opt-level = "s"`, LTO), so a
//! change that doubles a path fails, and the figures themselves are `{n}`
//! in the expected file. A row is a set-up, the operation, a
//! clean-up, and the bound, so an operation of a new API (a drain of one
//! priority level, `drain_level(level)`) is one more row.
//!
//! **Levels.** The "two levels" rows use `RT2`, a
//! `Runtime<BareMetal<Virt>, 1, 2>` (vectors A at level 0, H at level 1),
//! next to the one-level rows for comparison: a raise at each level, a
//! `drain_level` of one level (empty, one vector), and a `drain()` of both
//! levels (empty, work at level 1 only, work at both). The "level SGIs"
//! rows use `RT_LVL` on `VirtGicLevels`: each level's drain is its own SGI
//! (level 0: SGI 4, priority 0xa0; level 1: SGI 5, 0x80), run with IRQs
//! unmasked; a top half raises with IRQs masked and the SGI is taken when
//! they are unmasked. The last row raises P at level 0, whose handler
//! raises H at level 1: level 1's SGI is taken inside level 0's running
//! drain (a nested IRQ), so the row is what one preemption costs in all.
//!
//! The runtime is `Runtime<BareMetal<Virt>, 1>` with the default `Config`
//! (time budget on: a drain reads the clock at its start and after every
//! pass; every handler run reads it twice to measure the handler). The
//! board is `Virt`: `pend_drain` sets a flag and counts (two atomic
//! operations). The two "drain SGI" rows use a second runtime on
//! `VirtGic`, whose `pend_drain` sends SGI 1 to the core itself: the
//! operation runs with IRQs masked, as a top half, and the SGI is taken
//! when they are unmasked, so the figure covers the GIC write, the
//! exception entry, the IRQ vector's 800-byte register save and restore,
//! the acknowledge, the drain and the end of interrupt.

#![no_std]
#![no_main]

use bottomhalf::{
    BareMetal, Config, DelayedWork, DrainOutcome, Level, Runtime, Tasklet, Vector, Work,
};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, Virt, VirtGic, VirtGicLevels};
use core::time::Duration;

t::entry!(
    scenario,
    single_core,
    irq_drain = irq_drain,
    irq_levels = level_drain
);

static RT: Runtime<BareMetal<Virt>, 1> = Runtime::new(Config::DEFAULT);
static TASKLET: Tasklet = Tasklet::new(&RT, || {});
/// The same with the drain as an interrupt: `pend_drain` sends SGI 1, and
/// the IRQ vector (every register saved and restored) runs `irq_drain`.
static RT_GIC: Runtime<BareMetal<VirtGic>, 1> = Runtime::new(Config::DEFAULT);

/// The drain SGI's drain (IRQ context).
fn irq_drain() {
    let _ = RT_GIC.drain();
}

/// A runtime with two levels, on the polled board: the "two levels" rows.
static RT2: Runtime<BareMetal<Virt>, 1, 2> = Runtime::new(Config::DEFAULT);
/// Two levels, each drained by its own SGI, with IRQs unmasked (nested:
/// level 1's SGI preempts a running level-0 drain); the "level SGI" rows.
static RT_LVL: Runtime<BareMetal<VirtGicLevels>, 1, 2> = Runtime::new(Config::DEFAULT);

const LOW: Level = Level::new(0);
const HIGH: Level = Level::new(1);
/// Level 1 on `RT2` and `RT_LVL` (VA and VB are level 0 there).
const VH: Vector = Vector::new(5);
/// Level 0 on `RT_LVL`: its handler raises VH, whose SGI preempts it.
const VP: Vector = Vector::new(7);

/// A level's drain SGI (IRQ context, IRQs unmasked).
fn level_drain(level: Level) {
    let _ = RT_LVL.drain_level(level);
}

/// Work items and delayed work, on a runtime of their own (polled board):
/// the "work item" and "delayed work" rows.
static RT_W: Runtime<BareMetal<Virt>, 1> = Runtime::new(Config::DEFAULT);
static W: Work = Work::new("w", |_| {});
/// A debounce: kept waiting on its timer list, its deadline moved.
static D: DelayedWork = DelayedWork::new("d", |_| {});
/// Timers far in the future, on the list the drain walks.
static FAR: [DelayedWork; 4] = [const { DelayedWork::new("far", |_| {}) }; 4];
const A_SECOND: Duration = Duration::from_secs(1);

const VA: Vector = Vector::new(3);
const VB: Vector = Vector::new(4);

/// Timed repetitions per row, after one warm-up.
const REPS: usize = 8;

/// One measured operation.
struct Cost {
    /// What is measured, as printed.
    name: &'static str,
    /// Runs before each measurement, untimed.
    setup: fn(),
    /// The timed operation.
    op: fn(),
    /// Runs after each measurement, untimed.
    after: fn(),
    /// Fail if the operation takes more instructions than this.
    max: u64,
}

fn nothing() {}

/// Drains whatever a row left, and takes the polled drain flag.
fn settle() {
    let _ = t::take_pend(0);
    check_eq!(RT.drain(), DrainOutcome::Complete, "settle: drain");
    let _ = t::take_pend(0);
    check_eq!(RT.pending(0), 0, "settle: pending");
}

fn raise_a() {
    RT.raise(VA);
}

fn raise_b() {
    RT.raise(VB);
}

fn drain() {
    let _ = RT.drain();
}

fn schedule() {
    let _ = TASKLET.schedule();
}

fn bh_off_on() {
    drop(RT.bh_disable());
}

fn irq_enter_exit() {
    RT.irq_enter();
    let _ = RT.irq_exit();
}

fn raise_then_drain() {
    RT.raise(VA);
    let _ = RT.drain();
}

/// A top half (IRQs masked) raises on `RT_GIC`; the raise sends the drain
/// SGI, taken as soon as IRQs are unmasked again.
fn raise_then_sgi_drain() {
    t::irqs_masked(|| RT_GIC.raise(VA));
}

/// A drain SGI with nothing pending: the interrupt's own cost.
fn empty_sgi_drain() {
    t::irqs_masked(|| t::send_drain_sgi(0));
}

/// Checks that the drain SGI ran what was raised on `RT_GIC`.
fn sgi_settled() {
    check_eq!(RT_GIC.pending(0), 0, "the drain SGI drained");
}

/// Drains whatever a row left on the two-level runtime.
fn settle2() {
    let _ = t::take_pend(0);
    check_eq!(
        RT2.drain(),
        DrainOutcome::Complete,
        "settle: two-level drain"
    );
    let _ = t::take_pend(0);
    check_eq!(RT2.pending(0), 0, "settle: two-level pending");
}

fn raise2_low() {
    RT2.raise(VA);
}

fn raise2_high() {
    RT2.raise(VH);
}

fn raise2_both() {
    RT2.raise(VA);
    RT2.raise(VH);
}

fn drain2() {
    let _ = RT2.drain();
}

fn drain2_low() {
    let _ = RT2.drain_level(LOW);
}

fn drain2_high() {
    let _ = RT2.drain_level(HIGH);
}

fn drain_level_0() {
    let _ = RT.drain_level(LOW);
}

/// A top half raises at level 1 of `RT_LVL`: level 1's SGI is taken once
/// IRQs are unmasked and drains it.
fn raise_high_then_sgi() {
    t::irqs_masked(|| RT_LVL.raise(VH));
}

/// The same at level 0.
fn raise_low_then_sgi() {
    t::irqs_masked(|| RT_LVL.raise(VA));
}

/// A top half raises VP at level 0; in level 0's SGI, VP's handler raises
/// VH, whose level-1 SGI preempts the running level-0 drain.
fn raise_preempting_then_sgi() {
    t::irqs_masked(|| RT_LVL.raise(VP));
}

fn lvl_settled() {
    check_eq!(RT_LVL.pending(0), 0, "the level SGIs drained");
}

/// Drains whatever a row left on the work runtime.
fn settle_w() {
    let _ = t::take_pend(0);
    check_eq!(RT_W.drain(), DrainOutcome::Complete, "settle: work drain");
    let _ = t::take_pend(0);
    check_eq!(RT_W.pending(0), 0, "settle: work pending");
}

fn queue_w() {
    let _ = RT_W.queue_work(&W);
}

fn drain_w() {
    let _ = RT_W.drain();
}

fn reschedule_d() {
    let _ = RT_W.mod_delayed_work(&D, A_SECOND);
}

fn raise_tasklet_vector() {
    RT_W.raise(Vector::TASKLET);
}

/// Files the four far timers (once) and checks `D` waits too.
fn file_far_timers() {
    for f in &FAR {
        let _ = RT_W.queue_delayed_work(f, A_SECOND);
    }
    settle_w();
    check!(
        FAR.iter().all(|f| f.is_timer_pending()) && D.is_timer_pending(),
        "five timers pending"
    );
    raise_tasklet_vector();
}

/// Cancels the far timers again; the next drain drops their ghosts.
fn cancel_far_timers() {
    for f in &FAR {
        let _ = f.cancel();
    }
    raise_tasklet_vector();
    settle_w();
}

/// The measurements, in the order printed.
const COSTS: &[Cost] = &[
    Cost {
        name: "raise, onto an empty mask (kicks: pend_drain)",
        setup: nothing,
        op: raise_a,
        after: settle,
        max: 60,
    },
    Cost {
        name: "raise, another vector pending (no kick)",
        setup: raise_b,
        op: raise_a,
        after: settle,
        max: 40,
    },
    Cost {
        name: "raise, coalesced (already pending)",
        setup: raise_a,
        op: raise_a,
        after: settle,
        max: 40,
    },
    Cost {
        name: "drain, empty mask",
        setup: nothing,
        op: drain,
        after: settle,
        max: 50,
    },
    Cost {
        name: "drain, one vector, empty handler",
        setup: raise_a,
        op: drain,
        after: settle,
        max: 260,
    },
    Cost {
        name: "drain, two vectors, empty handlers",
        setup: raise_a_b,
        op: drain,
        after: settle,
        max: 360,
    },
    Cost {
        name: "raise + drain, one vector, empty handler",
        setup: nothing,
        op: raise_then_drain,
        after: settle,
        max: 320,
    },
    Cost {
        name: "drain SGI, empty mask (send, IRQ in and out)",
        setup: nothing,
        op: empty_sgi_drain,
        after: sgi_settled,
        max: 300,
    },
    Cost {
        name: "raise + drain SGI, one vector (IRQ in and out)",
        setup: nothing,
        op: raise_then_sgi_drain,
        after: sgi_settled,
        max: 560,
    },
    Cost {
        name: "one level: drain_level(0), one vector, empty handler",
        setup: raise_a,
        op: drain_level_0,
        after: settle,
        max: 260,
    },
    Cost {
        name: "two levels: raise at level 0, onto an empty mask (kicks)",
        setup: nothing,
        op: raise2_low,
        after: settle2,
        max: 70,
    },
    Cost {
        name: "two levels: raise at level 1, onto an empty mask (kicks)",
        setup: nothing,
        op: raise2_high,
        after: settle2,
        max: 70,
    },
    Cost {
        name: "two levels: raise at level 1, coalesced",
        setup: raise2_high,
        op: raise2_high,
        after: settle2,
        max: 50,
    },
    Cost {
        name: "two levels: drain_level(1), empty mask",
        setup: nothing,
        op: drain2_high,
        after: settle2,
        max: 60,
    },
    Cost {
        name: "two levels: drain_level(1), one vector, empty handler",
        setup: raise2_high,
        op: drain2_high,
        after: settle2,
        max: 280,
    },
    Cost {
        name: "two levels: drain_level(0), one vector, empty handler",
        setup: raise2_low,
        op: drain2_low,
        after: settle2,
        max: 280,
    },
    Cost {
        name: "two levels: drain(), empty masks",
        setup: nothing,
        op: drain2,
        after: settle2,
        // 31 with the all-levels-empty fast path in `drain()`; 116 without.
        max: 64,
    },
    Cost {
        name: "two levels: drain(), one vector at level 1",
        setup: raise2_high,
        op: drain2,
        after: settle2,
        max: 450,
    },
    Cost {
        name: "two levels: drain(), one vector at each level",
        setup: raise2_both,
        op: drain2,
        after: settle2,
        max: 660,
    },
    Cost {
        name: "level SGIs: raise at level 0 + its SGI (IRQ in and out)",
        setup: nothing,
        op: raise_low_then_sgi,
        after: lvl_settled,
        max: 640,
    },
    Cost {
        name: "level SGIs: raise at level 1 + its SGI (IRQ in and out)",
        setup: nothing,
        op: raise_high_then_sgi,
        after: lvl_settled,
        max: 660,
    },
    Cost {
        name: "level SGIs: level-0 SGI whose handler raises at level 1 (level 1's SGI preempts it)",
        setup: nothing,
        op: raise_preempting_then_sgi,
        after: lvl_settled,
        max: 1300,
    },
    Cost {
        name: "tasklet schedule, queues it (kicks)",
        setup: nothing,
        op: schedule,
        after: settle,
        max: 150,
    },
    Cost {
        name: "tasklet schedule, coalesced",
        setup: schedule,
        op: schedule,
        after: settle,
        max: 40,
    },
    Cost {
        name: "drain, one tasklet, empty callback",
        setup: schedule,
        op: drain,
        after: settle,
        max: 360,
    },
    Cost {
        name: "work item: queue_work, idle (kicks)",
        setup: nothing,
        op: queue_w,
        after: settle_w,
        max: 200,
    },
    Cost {
        name: "work item: queue_work, coalesced",
        setup: queue_w,
        op: queue_w,
        after: settle_w,
        max: 80,
    },
    Cost {
        name: "drain, one work item, empty function",
        setup: queue_w,
        op: drain_w,
        after: settle_w,
        max: 700,
    },
    Cost {
        name: "delayed work: mod_delayed_work of a waiting timer (a debounce)",
        setup: nothing,
        op: reschedule_d,
        after: settle_w,
        max: 300,
    },
    Cost {
        name: "delayed work: drain of vector 6, one timer on the list, not due",
        setup: raise_tasklet_vector,
        op: drain_w,
        after: settle_w,
        max: 700,
    },
    Cost {
        name: "delayed work: drain of vector 6, five timers on the list, not due",
        setup: file_far_timers,
        op: drain_w,
        after: cancel_far_timers,
        max: 1100,
    },
    Cost {
        name: "bh_disable + drop, nothing pending",
        setup: nothing,
        op: bh_off_on,
        after: settle,
        max: 64,
    },
    Cost {
        name: "irq_enter + irq_exit, nothing pending",
        setup: nothing,
        op: irq_enter_exit,
        after: settle,
        max: 60,
    },
];

/// Paths that must be cheaper than others: (cheaper row, dearer row,
/// factor, why): `factor` × cheaper < dearer, checked on the figures. A
/// fast path that stops being fast fails here even within its bound.
const CHEAPER: &[(&str, &str, u64, &str)] = &[
    (
        "work item: queue_work, coalesced",
        "work item: queue_work, idle (kicks)",
        1,
        "a coalesced queue_work skips the push and the kick",
    ),
    (
        "delayed work: drain of vector 6, one timer on the list, not due",
        "delayed work: drain of vector 6, five timers on the list, not due",
        1,
        "each timer on the list costs the walk",
    ),
    (
        "raise, another vector pending (no kick)",
        "raise, onto an empty mask (kicks: pend_drain)",
        1,
        "a raise onto a pending mask skips the kick",
    ),
    (
        "tasklet schedule, coalesced",
        "tasklet schedule, queues it (kicks)",
        2,
        "a coalesced schedule skips the queue and the kick",
    ),
    (
        "drain, empty mask",
        "drain, one vector, empty handler",
        4,
        "an empty drain returns at once",
    ),
    (
        "drain, one vector, empty handler",
        "drain, two vectors, empty handlers",
        1,
        "a second vector costs more",
    ),
    (
        "two levels: raise at level 1, coalesced",
        "two levels: raise at level 1, onto an empty mask (kicks)",
        1,
        "a coalesced raise at level 1 skips the kick",
    ),
    (
        "two levels: drain_level(1), empty mask",
        "two levels: drain_level(1), one vector, empty handler",
        4,
        "an empty level drain returns early",
    ),
    (
        "two levels: drain(), one vector at level 1",
        "two levels: drain(), one vector at each level",
        1,
        "work at a second level costs more",
    ),
    (
        "level SGIs: raise at level 1 + its SGI (IRQ in and out)",
        "level SGIs: level-0 SGI whose handler raises at level 1 (level 1's SGI preempts it)",
        1,
        "a preempted level-0 SGI costs more than a level-1 SGI alone",
    ),
];

fn raise_a_b() {
    RT.raise(VA);
    RT.raise(VB);
}

/// Ticks from before to after a call of `op`, the two reads, the call
/// and the return included (an empty `op` measures exactly those: `BASE`).
#[inline(never)]
fn timed(op: fn()) -> u64 {
    let t0 = t::ticks();
    op();
    let t1 = t::ticks();
    t1.wrapping_sub(t0)
}

/// 100 `nop`s, for the calibration.
fn hundred_nops() {
    // SAFETY: 100 `nop`s: no effect.
    unsafe {
        core::arch::asm!(
            ".rept 100",
            "nop",
            ".endr",
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// The minimum and maximum of `REPS` runs of `f`, after one warm-up.
fn min_max(mut f: impl FnMut() -> u64) -> (u64, u64) {
    let _ = f();
    let (mut lo, mut hi) = (u64::MAX, 0);
    for _ in 0..REPS {
        let x = f();
        lo = lo.min(x);
        hi = hi.max(x);
    }
    (lo, hi)
}

fn scenario(_cpu: usize) {
    check_eq!(RT.register(VA, "A", |_| {}), Ok(()), "register A");
    check_eq!(RT.register(VB, "B", |_| {}), Ok(()), "register B");
    check_eq!(RT_GIC.register(VA, "A", |_| {}), Ok(()), "register A (GIC)");
    check_eq!(
        RT2.register_at(LOW, VA, "A", |_| {}),
        Ok(()),
        "register A (two levels)"
    );
    check_eq!(
        RT2.register_at(HIGH, VH, "H", |_| {}),
        Ok(()),
        "register H (two levels)"
    );
    check_eq!(
        RT_LVL.register_at(LOW, VA, "A", |_| {}),
        Ok(()),
        "register A (level SGIs)"
    );
    check_eq!(
        RT_LVL.register_at(HIGH, VH, "H", |_| {}),
        Ok(()),
        "register H (level SGIs)"
    );
    check_eq!(
        RT_LVL.register_at(LOW, VP, "P", |_| RT_LVL.raise(VH)),
        Ok(()),
        "register P (level SGIs)"
    );
    t::gic_init_core();
    let hz = t::timer_hz();
    check_eq!(hz, 62_500_000, "CNTFRQ_EL0 (16 ns per tick)");
    println!(
        "drain_cost: one core, -icount shift=4: 16 ns per instruction = 16 ns per tick at {hz} Hz"
    );

    let (base, base_hi) = min_max(|| timed(nothing));
    check_eq!(
        base, base_hi,
        "an empty measurement is the same every time (one tick per instruction: is -icount shift=4?)"
    );
    let (nops, _) = min_max(|| timed(hundred_nops));
    check_eq!(
        nops - base,
        100,
        "100 nops measure 100 ticks (one tick per instruction: is -icount shift=4?)"
    );
    println!(
        "calibration: empty measurement {base} ticks; 100 nops {} ticks more",
        nops - base
    );

    settle();
    let mut failed = 0;
    let mut figures = [0u64; COSTS.len()];
    for (c, figure) in COSTS.iter().zip(figures.iter_mut()) {
        let (lo, hi) = min_max(|| {
            (c.setup)();
            let ticks = timed(c.op);
            (c.after)();
            ticks - base
        });
        let ok = lo <= c.max && hi == lo;
        println!(
            "{}: {lo} instructions (bound {}; spread {}){}",
            c.name,
            c.max,
            hi - lo,
            if ok { "" } else { "  <- FAIL" }
        );
        if !ok {
            failed += 1;
        }
        *figure = lo;
    }
    check_eq!(failed, 0, "measurements over their bound or spread");
    let figure = |name: &str| {
        COSTS
            .iter()
            .position(|c| c.name == name)
            .map_or(0, |i| figures[i])
    };
    for (cheap, dear, factor, why) in CHEAPER {
        let (a, b) = (figure(cheap), figure(dear));
        println!("{why}: {factor} x {a} < {b}");
        check!(
            factor * a < b,
            "{why}: {factor} x {cheap} ({a}) < {dear} ({b})"
        );
    }
    check!(RT.stats().runs(0, VA) > 0, "vector A ran");
    let sgi_runs = RT_GIC.stats().runs(0, VA);
    check_eq!(
        sgi_runs,
        1 + REPS as u32,
        "vector A ran once per raise in the drain SGI"
    );
    check_eq!(
        t::sgis(0, 0),
        2 * (1 + REPS as u32),
        "drain SGIs taken: one per SGI row and repetition"
    );
    let reps = 1 + REPS as u32;
    check_eq!(
        RT_LVL.stats().runs(0, VH),
        2 * reps,
        "H ran once per raise in level 1's SGI (two rows)"
    );
    check_eq!(
        RT_LVL.stats().runs(0, VP),
        reps,
        "P ran once per raise in level 0's SGI"
    );
    check_eq!(
        [t::level_sgis(0, LOW), t::level_sgis(0, HIGH)],
        [2 * reps, 2 * reps],
        "level SGIs taken: one per level-SGI row, level and repetition"
    );
    check_eq!(
        t::nested_irqs(0),
        reps,
        "nested IRQs: level 1's SGI inside level 0's, once per repetition of the preempting row"
    );
    println!("drain_cost: ok");
}
