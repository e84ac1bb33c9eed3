//! Work queued on one core for another: `Runtime::queue_work_on` on four
//! cores, each target core's drain run by the GIC SGI the board sends.
//!
//! **Wiring.** `Runtime<BareMetal<VirtGic>, 4>`, time budget off.
//! `queue_work_on(cpu, w)` pushes `w` onto core `cpu`'s queue, sets
//! vector 6 there and, when that core's mask was empty, calls
//! `VirtGic::pend_drain(cpu)`: SGI 1 to core `cpu`, whose IRQ handler runs
//! `RT.drain()` with IRQs masked. Every work function records the core it
//! runs on (MPIDR), checks it runs inside that drain (IRQs masked), that
//! the core is one the item was queued to (a per-item mask of targets,
//! set before each `queue_work_on`), and that no other run of the item is
//! in flight (a per-item counter, checked again while it spins).
//!
//! Core `i` queues only for `(i + 1) % 4` and `(i + 2) % 4`.
//!
//! 1. **Storm.** `STEPS` steps per core from its own fixed pattern: a
//!    per-pair item `P[i][k]` (core `i` queues it, only to `(i + 1 + k) %
//!    4`), or a shared item `S[j]`, which every core queues, to whichever
//!    of its two targets has the parity of `j`, so `S[j]` is queued to
//!    cores `j` and `j + 2` by four producers, often while it runs on one
//!    of them. A quarter of the steps queue with IRQs masked (a top half).
//!    Checked: `P[i][k]` ran only on its target, `S[j]` only on `j` or
//!    `j + 2`, never two runs at once.
//! 2. **Re-queued while running, and ghosts** (core 0 drives, exact). R:
//!    queued to core 1; while it runs there (its function waits for a
//!    gate), core 0 queues it to core 2 (`true`: a new instance) and to
//!    core 3 (`false`: coalesced); the second run must be on core 1, the
//!    core that ran it. G: with core 1's IRQs masked (its drain held
//!    off), queued to core 1, cancelled (a ghost on core 1's list),
//!    queued to core 2 (`true`) and 3 (`false`), cancelled, queued to 2:
//!    it must run once, on core 1, where the ghost is linked. G2: queued
//!    to core 1 and cancelled there: the drain skips the ghost (no run);
//!    queued to core 3 afterwards it runs there.
//! 3. **Flush across cores.** `FLUSHES` rounds: core `i` queues `F[i]`
//!    for core `i + 1` (`true`: it was idle), then `F[i].flush()`, which
//!    spins (the instance is on another core's queue). After it returns,
//!    `F[i]` has run exactly once per round, on core `i + 1`, and the
//!    run's write is visible.
//! 4. **Cancel, exact** (`CANCEL_ROUNDS` rounds). All four cores mask
//!    IRQs (no drain anywhere), then each core applies `CANCEL_OPS`
//!    operations of its pattern to its two items `C[i][k]`: queue to
//!    `i + 1` or `i + 2`, or cancel. A model predicts every return value
//!    (a cancelled, still linked instance is a ghost; queued again it
//!    runs where the ghost is linked, whatever core the call names).
//!    Then the cores unmask, their drains run (skipping ghosts), and each
//!    core checks that its items ran exactly the model's runs on exactly
//!    the model's cores.
//! 5. **Cancel racing the drain.** `RACE_ROUNDS` per core with IRQs
//!    unmasked: queue `C[i][k]`, spin a pseudo-random while, cancel.
//!    Cancel wins or the run does; the counts must add up.
//!
//! **Totals, per item**, after the storm and at the end (all quiet): the
//! function's own runs (summed over cores) = `Work::runs()` =
//! `queue_work_on` calls that returned `true` − `cancel()` calls that
//! returned `true`; `Work::coalesced()` = calls that returned `false`; no
//! overlap, no run on a core never queued to or outside the drain SGI;
//! nothing pending. Per core, after every phase: no drain returned `Busy`
//! (a drain that found one of its own CPU running) or `Disabled`; after
//! the storm, no drain SGI from the one core that never queues for it.
//!
//! See no_std-tests/README.md ("`work_cross`") for figures and the library
//! mutants each check was seen to catch.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DrainOutcome, Runtime, Work};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, VirtGic, CORES};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

t::entry!(scenario, irq_drain = irq_drain);

static RT: Runtime<BareMetal<VirtGic>, CORES> = Runtime::new(Config::DEFAULT.time_budget_ns(0));

/// Storm steps per core.
const STEPS: u32 = 6_000;
/// Flush rounds per core.
const FLUSHES: u32 = 16;
/// Exact cancel rounds, and operations per core in each.
const CANCEL_ROUNDS: u32 = 12;
const CANCEL_OPS: u32 = 12;
/// Cancel-racing-the-drain rounds per core.
const RACE_ROUNDS: u32 = 400;
/// Waits that depend on other cores' drains fail after this long.
const WAIT_NS: u64 = 10_000_000_000;

// ---------------------------------------------------------------- items

/// What the test knows about one work item.
struct Item {
    /// Runs in flight (0 or 1).
    inflight: AtomicU32,
    /// Bit `c`: the item was queued to core `c` (set before the call).
    allowed: AtomicU32,
    /// Runs per core, by MPIDR.
    ran_on: [AtomicU32; CORES],
    /// Runs that overlapped another run of the item (one started while
    /// it was in flight, or found another in flight while it spun).
    overlaps: AtomicU32,
    /// A run on a core the item was never queued to.
    wrong_core: AtomicU32,
    /// A run with IRQs unmasked (outside the drain SGI's handler).
    outside_irq: AtomicU32,
    /// `queue_work_on` calls that returned `true` / `false`.
    queued: AtomicU32,
    folded: AtomicU32,
    /// `cancel()` calls that returned `true`.
    cancelled: AtomicU32,
    /// How long the function spins, in ns of the generic timer (widens
    /// the window for a queue while it runs, and for an overlap).
    spin_ns: u64,
    /// While set, the function waits (bounded) for it to clear (R).
    hold: AtomicBool,
    /// Set by the function when it starts (R).
    entered: AtomicBool,
}

impl Item {
    const fn new(spin_ns: u64) -> Item {
        Item {
            inflight: AtomicU32::new(0),
            allowed: AtomicU32::new(0),
            ran_on: [const { AtomicU32::new(0) }; CORES],
            overlaps: AtomicU32::new(0),
            wrong_core: AtomicU32::new(0),
            outside_irq: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            folded: AtomicU32::new(0),
            cancelled: AtomicU32::new(0),
            spin_ns,
            hold: AtomicBool::new(false),
            entered: AtomicBool::new(false),
        }
    }

    fn runs(&self) -> u32 {
        self.ran_on.iter().map(load).sum()
    }

    fn per_core(&self) -> [u32; CORES] {
        core::array::from_fn(|c| load(&self.ran_on[c]))
    }
}

const S0: usize = 0; // S[j]: shared, 4
const P0: usize = 4; // P[i][k] = P0 + 2i + k: per pair, 8
const R: usize = 12; // re-queued while running
const G: usize = 13; // ghost re-queued
const G2: usize = 14; // ghost dropped, then queued elsewhere
const F0: usize = 15; // F[i]: flushed, 4
const C0: usize = 19; // C[i][k] = C0 + 2i + k: cancelled, 8
const ITEMS: usize = 27;

static CTX: [Item; ITEMS] = [
    Item::new(2_000_000),
    Item::new(2_000_000),
    Item::new(2_000_000),
    Item::new(2_000_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(1_000),
    Item::new(1_000),
    Item::new(1_000),
    Item::new(20_000),
    Item::new(20_000),
    Item::new(20_000),
    Item::new(20_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
    Item::new(5_000),
];

static WORK: [Work; ITEMS] = [
    Work::with_context("S0", &CTX[0], run),
    Work::with_context("S1", &CTX[1], run),
    Work::with_context("S2", &CTX[2], run),
    Work::with_context("S3", &CTX[3], run),
    Work::with_context("P00", &CTX[4], run),
    Work::with_context("P01", &CTX[5], run),
    Work::with_context("P10", &CTX[6], run),
    Work::with_context("P11", &CTX[7], run),
    Work::with_context("P20", &CTX[8], run),
    Work::with_context("P21", &CTX[9], run),
    Work::with_context("P30", &CTX[10], run),
    Work::with_context("P31", &CTX[11], run),
    Work::with_context("R", &CTX[12], run),
    Work::with_context("G", &CTX[13], run),
    Work::with_context("G2", &CTX[14], run),
    Work::with_context("F0", &CTX[15], run),
    Work::with_context("F1", &CTX[16], run),
    Work::with_context("F2", &CTX[17], run),
    Work::with_context("F3", &CTX[18], run),
    Work::with_context("C00", &CTX[19], run),
    Work::with_context("C01", &CTX[20], run),
    Work::with_context("C10", &CTX[21], run),
    Work::with_context("C11", &CTX[22], run),
    Work::with_context("C20", &CTX[23], run),
    Work::with_context("C21", &CTX[24], run),
    Work::with_context("C30", &CTX[25], run),
    Work::with_context("C31", &CTX[26], run),
];

/// Every item's function (in the drain SGI's handler of the core whose
/// queue the instance was on).
fn run(item: &'static Item, _w: &Work) {
    let here = VirtGic::cpu() % CORES;
    // AcqRel: pairs with the Release decrement that ended the previous run
    // (on any core).
    let mut overlapped = item.inflight.fetch_add(1, Ordering::AcqRel) != 0;
    // The bit was set before the `queue_work_on` whose instance this run
    // covers (or an earlier one, for a ghost or a running item re-queued);
    // the queue's Release CAS and the start's Acquire order it before us.
    if item.allowed.load(Ordering::Relaxed) & (1 << here) == 0 {
        item.wrong_core.fetch_add(1, Ordering::Relaxed);
    }
    if !t::irqs_are_masked() {
        item.outside_irq.fetch_add(1, Ordering::Relaxed);
    }
    item.entered.store(true, Ordering::Release);
    if item.hold.load(Ordering::Acquire) {
        t::wait_until_ns("the gate of a held work item", WAIT_NS, || {
            !item.hold.load(Ordering::Acquire)
        });
    }
    let start = t::now_ns();
    loop {
        overlapped |= item.inflight.load(Ordering::Relaxed) != 1;
        if t::now_ns().wrapping_sub(start) >= item.spin_ns {
            break;
        }
        t::spin_yield();
    }
    if overlapped {
        item.overlaps.fetch_add(1, Ordering::Relaxed);
    }
    item.ran_on[here].fetch_add(1, Ordering::Relaxed);
    item.inflight.fetch_sub(1, Ordering::Release);
}

// ---------------------------------------------------------------- cores

/// Per core: drains its SGI ran and their outcomes, and what it did as a
/// producer.
struct Core {
    drains: AtomicU32,
    complete: AtomicU32,
    remaining: AtomicU32,
    busy: AtomicU32,
    disabled: AtomicU32,
    /// Storm: calls / `true` for shared and per-pair items.
    storm_shared: [AtomicU32; 2],
    storm_pair: [AtomicU32; 2],
    /// Storm: calls that returned `true` for an item found running (on
    /// another core) just before.
    storm_while_running: AtomicU32,
    /// Flush: rounds, flushes that waited (`Ok(true)`).
    flushes: AtomicU32,
    flush_waited: AtomicU32,
    /// Exact cancel phase: queue calls, `true`, cancels, `true`, runs.
    exact: [AtomicU32; 5],
    /// Racing cancel phase: queue `true`, cancel `true`, runs.
    race: [AtomicU32; 3],
}

static CORE: [Core; CORES] = [const {
    Core {
        drains: AtomicU32::new(0),
        complete: AtomicU32::new(0),
        remaining: AtomicU32::new(0),
        busy: AtomicU32::new(0),
        disabled: AtomicU32::new(0),
        storm_shared: [const { AtomicU32::new(0) }; 2],
        storm_pair: [const { AtomicU32::new(0) }; 2],
        storm_while_running: AtomicU32::new(0),
        flushes: AtomicU32::new(0),
        flush_waited: AtomicU32::new(0),
        exact: [const { AtomicU32::new(0) }; 5],
        race: [const { AtomicU32::new(0) }; 3],
    }
}; CORES];

fn load(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

fn add(a: &AtomicU32, n: u32) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// The drain SGI's handler (IRQs masked).
fn irq_drain() {
    let me = &CORE[VirtGic::cpu() % CORES];
    add(&me.drains, 1);
    match RT.drain() {
        DrainOutcome::Complete => add(&me.complete, 1),
        // Out of passes: the SGI was sent again.
        DrainOutcome::Remaining => add(&me.remaining, 1),
        DrainOutcome::Busy => add(&me.busy, 1),
        DrainOutcome::Disabled => add(&me.disabled, 1),
    }
}

/// `queue_work_on(target, WORK[idx])`, with the target's bit set first and
/// the result counted on the item.
fn queue(idx: usize, target: usize) -> bool {
    let item = &CTX[idx];
    item.allowed.fetch_or(1 << target, Ordering::Relaxed);
    let r = RT.queue_work_on(target, &WORK[idx]);
    add(if r { &item.queued } else { &item.folded }, 1);
    r
}

/// `WORK[idx].cancel()`, counted.
fn cancel(idx: usize) -> bool {
    let r = WORK[idx].cancel();
    if r {
        add(&CTX[idx].cancelled, 1);
    }
    r
}

fn idle(idx: usize) -> bool {
    !WORK[idx].is_pending() && !WORK[idx].is_running() && load(&CTX[idx].inflight) == 0
}

/// Waits until every item is idle and this core's mask is empty.
fn wait_quiet(cpu: usize, what: &str) {
    t::wait_until_ns(what, WAIT_NS, || {
        (0..ITEMS).all(idle) && RT.pending(cpu) == 0
    });
}

fn spin_ns(ns: u64) {
    let start = t::now_ns();
    while t::now_ns().wrapping_sub(start) < ns {
        t::spin_yield();
    }
}

// ---------------------------------------------------------------- phases

fn storm(cpu: usize) {
    let me = &CORE[cpu];
    let mut rng = t::XorShift::new(0x7f4a_7c15 ^ (cpu as u32 + 1).wrapping_mul(0x85eb_ca6b));
    let targets = [(cpu + 1) % CORES, (cpu + 2) % CORES];
    for _ in 0..STEPS {
        let r = rng.next_u32();
        let (idx, target, class) = if r.is_multiple_of(4) {
            let j = ((r >> 4) % 4) as usize;
            let t = if targets[0] % 2 == j % 2 {
                targets[0]
            } else {
                targets[1]
            };
            (S0 + j, t, &me.storm_shared)
        } else {
            let k = ((r >> 3) & 1) as usize;
            (P0 + 2 * cpu + k, targets[k], &me.storm_pair)
        };
        // Running now: on another core (this core's drain does not run
        // while its thread is here).
        let running = WORK[idx].is_running();
        let queued = if (r >> 12).is_multiple_of(4) {
            t::irqs_masked(|| queue(idx, target))
        } else {
            queue(idx, target)
        };
        add(&class[0], 1);
        add(&class[1], u32::from(queued));
        add(&me.storm_while_running, u32::from(queued && running));
        spin_ns(u64::from((r >> 20) % 32) * 1_000);
    }
}

/// Phase 2, driven by core 0; core 1 holds its drain off for G and G2.
fn relink(cpu: usize) {
    static HELD: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static DRAINED: AtomicBool = AtomicBool::new(false);

    // R: re-queued while it runs on core 1.
    if cpu == 0 {
        let r = &CTX[R];
        r.hold.store(true, Ordering::Release);
        check!(
            queue(R, 1),
            "R: queue_work_on(1) of an idle item returns true"
        );
        t::wait_until_ns("R to run on core 1", WAIT_NS, || {
            r.entered.load(Ordering::Acquire)
        });
        check!(WORK[R].is_running(), "R: running on core 1");
        check!(
            queue(R, 2),
            "R: queue_work_on(2) while it runs on core 1 returns true"
        );
        check!(WORK[R].is_pending(), "R: pending again while it runs");
        check!(!queue(R, 3), "R: queue_work_on(3) coalesces");
        r.hold.store(false, Ordering::Release);
        t::wait_until_ns("R's second run", WAIT_NS, || r.runs() == 2 && idle(R));
        check_eq!(
            r.per_core(),
            [0, 2, 0, 0],
            "R: runs per core (re-queued while running on core 1: runs again on core 1)"
        );
        check_eq!(WORK[R].runs(), 2, "R: runs()");
        check_eq!(WORK[R].coalesced(), 1, "R: coalesced()");
    }
    t::barrier();

    // G and G2: ghosts on core 1's list.
    if cpu == 1 {
        t::irqs_masked(|| {
            HELD.store(true, Ordering::Release);
            t::wait_until_ns("core 0's ghosts", WAIT_NS, || {
                RELEASE.load(Ordering::Acquire)
            });
        });
        // The drain SGI was taken at the unmask; it ran the whole mask.
        t::wait_until_ns("core 1's drain", WAIT_NS, || RT.pending(1) == 0);
        DRAINED.store(true, Ordering::Release);
    }
    if cpu == 0 {
        t::wait_until_ns("core 1 to hold its drain off", WAIT_NS, || {
            HELD.load(Ordering::Acquire)
        });
        check!(queue(G, 1), "G: queue_work_on(1) returns true");
        check!(
            cancel(G),
            "G: cancel() of the pending instance returns true"
        );
        check!(!WORK[G].is_pending(), "G: not pending after cancel()");
        check!(
            queue(G, 2),
            "G: queue_work_on(2) of the ghost linked on core 1 returns true"
        );
        check!(!queue(G, 3), "G: queue_work_on(3) coalesces");
        check!(cancel(G), "G: cancel() again returns true");
        check!(queue(G, 2), "G: queue_work_on(2) again returns true");
        check!(queue(G2, 1), "G2: queue_work_on(1) returns true");
        check!(cancel(G2), "G2: cancel() returns true");
        check_eq!(
            CTX[G].runs() + CTX[G2].runs(),
            0,
            "G, G2: ran before core 1 drained"
        );
        RELEASE.store(true, Ordering::Release);
        t::wait_until_ns("core 1's drain of the ghosts", WAIT_NS, || {
            DRAINED.load(Ordering::Acquire)
        });
        t::wait_until_ns("G to be idle", WAIT_NS, || idle(G) && CTX[G].runs() == 1);
        let g = &CTX[G];
        check_eq!(
            g.per_core(),
            [0, 1, 0, 0],
            "G: runs per core (a ghost re-queued runs where it is linked, core 1)"
        );
        check_eq!(CTX[G2].runs(), 0, "G2: runs of a cancelled instance");
        check!(idle(G2), "G2: idle after core 1's drain dropped the ghost");
        check!(
            queue(G2, 3),
            "G2: queue_work_on(3) after the ghost was dropped returns true"
        );
        t::wait_until_ns("G2 to run on core 3", WAIT_NS, || {
            idle(G2) && CTX[G2].runs() == 1
        });
        let g2 = &CTX[G2];
        check_eq!(
            g2.per_core(),
            [0, 0, 0, 1],
            "G2: runs per core (queued to core 3 after its ghost was dropped)"
        );
        println!(
            "relink: R ran twice on cpu1 (queued again to cpu2 while running there); G, a ghost on cpu1 queued to cpu2, ran once on cpu1; G2's ghost skipped, then ran on cpu3"
        );
    }
    t::barrier();
}

fn flush(cpu: usize) {
    let me = &CORE[cpu];
    let idx = F0 + cpu;
    let next = (cpu + 1) % CORES;
    let item = &CTX[idx];
    for round in 1..=FLUSHES {
        check!(
            queue(idx, next),
            "F{cpu} round {round}: queue_work_on({next}) of an idle item returns true"
        );
        let r = WORK[idx].flush();
        check!(r.is_ok(), "F{cpu} round {round}: flush() = {r:?}");
        add(&me.flushes, 1);
        add(&me.flush_waited, u32::from(r == Ok(true)));
        check_eq!(
            item.runs(),
            round,
            "F{cpu} round {round}: the function's runs after flush() returned"
        );
        check_eq!(
            load(&item.ran_on[next]),
            round,
            "F{cpu} round {round}: runs on cpu{next}"
        );
        check_eq!(
            WORK[idx].runs(),
            round,
            "F{cpu} round {round}: runs() after flush() returned"
        );
    }
}

/// The model of one item in the exact cancel phase (all drains held off).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Model {
    Idle,
    /// A pending instance on core `c`'s list.
    Pending(usize),
    /// Cancelled while linked on core `c`'s list.
    Ghost(usize),
}

fn cancel_exact(cpu: usize) {
    let me = &CORE[cpu];
    let targets = [(cpu + 1) % CORES, (cpu + 2) % CORES];
    let mut rng = t::XorShift::new(0x2545_f491 ^ (cpu as u32 + 1).wrapping_mul(0x9e37_79b9));
    // Expected runs of C[cpu][k] per core, cumulative.
    let mut want = [[0u32; CORES]; 2];
    for round in 1..=CANCEL_ROUNDS {
        t::barrier();
        let mut model = [Model::Idle; 2];
        t::irqs_masked(|| {
            // No drain anywhere until every core has done its operations.
            t::barrier();
            for op in 0..CANCEL_OPS {
                let r = rng.next_u32();
                let k = (r & 1) as usize;
                let idx = C0 + 2 * cpu + k;
                if (r >> 1).is_multiple_of(3) {
                    let expect = matches!(model[k], Model::Pending(_));
                    if let Model::Pending(c) = model[k] {
                        model[k] = Model::Ghost(c);
                    }
                    add(&me.exact[2], 1);
                    let got = cancel(idx);
                    add(&me.exact[3], u32::from(got));
                    check_eq!(
                        got,
                        expect,
                        "C{cpu}{k} round {round} op {op}: cancel() with the item {:?}",
                        model[k]
                    );
                } else {
                    let target = targets[((r >> 3) & 1) as usize];
                    let before = model[k];
                    let expect = !matches!(before, Model::Pending(_));
                    model[k] = match before {
                        Model::Idle => Model::Pending(target),
                        Model::Pending(c) | Model::Ghost(c) => Model::Pending(c),
                    };
                    add(&me.exact[0], 1);
                    let got = queue(idx, target);
                    add(&me.exact[1], u32::from(got));
                    check_eq!(
                        got,
                        expect,
                        "C{cpu}{k} round {round} op {op}: queue_work_on({target}) with the item {before:?}"
                    );
                }
            }
            t::barrier();
        });
        // Unmasked: this core's drain SGI runs its list, ghosts skipped.
        for (k, m) in model.iter().enumerate() {
            if let Model::Pending(c) = m {
                want[k][*c] += 1;
                add(&me.exact[4], 1);
            }
        }
        t::barrier();
        wait_quiet(cpu, "the exact cancel round to drain");
        t::barrier();
        for (k, w) in want.iter().enumerate() {
            let item = &CTX[C0 + 2 * cpu + k];
            let got = item.per_core();
            check_eq!(
                got,
                *w,
                "C{cpu}{k} after round {round}: runs per core (model: ghosts skipped, a re-queued ghost runs where it is linked)"
            );
        }
    }
}

fn cancel_race(cpu: usize) {
    let me = &CORE[cpu];
    let targets = [(cpu + 1) % CORES, (cpu + 2) % CORES];
    let mut rng = t::XorShift::new(0x94d0_49bb ^ (cpu as u32 + 1).wrapping_mul(0xbf58_476d));
    let runs_before = CTX[C0 + 2 * cpu].runs() + CTX[C0 + 2 * cpu + 1].runs();
    for _ in 0..RACE_ROUNDS {
        let r = rng.next_u32();
        let k = (r & 1) as usize;
        let idx = C0 + 2 * cpu + k;
        let q = queue(idx, targets[((r >> 1) & 1) as usize]);
        // Only this core queues and cancels C[cpu][k], and after a cancel
        // the item is never pending (cancelled, or started): never coalesced.
        check!(
            q,
            "C{cpu}{k} racing: queue_work_on after cancel() returned false"
        );
        add(&me.race[0], u32::from(q));
        spin_ns(u64::from((r >> 4) % 64) * 16_000);
        add(&me.race[1], u32::from(cancel(idx)));
    }
    t::wait_until_ns("the racing cancels to drain", WAIT_NS, || {
        idle(C0 + 2 * cpu) && idle(C0 + 2 * cpu + 1)
    });
    let runs = CTX[C0 + 2 * cpu].runs() + CTX[C0 + 2 * cpu + 1].runs() - runs_before;
    me.race[2].store(runs, Ordering::Relaxed);
    check_eq!(
        runs + load(&me.race[1]),
        load(&me.race[0]),
        "cpu{cpu} racing cancels: runs + cancelled = queued"
    );
}

// ---------------------------------------------------------------- checks

/// After `phase`: no run of any item overlapped another of it, ran on a
/// core it was never queued to or outside the drain SGI; the storm's
/// items ran only where they were queued. (Core 0.)
fn check_runs(phase: &str) {
    for (item, w) in CTX.iter().zip(WORK.iter()) {
        let name = w.name();
        check_eq!(
            load(&item.overlaps),
            0,
            "after the {phase}: {name}: runs on two cores at once"
        );
        check_eq!(
            load(&item.wrong_core),
            0,
            "after the {phase}: {name}: runs on a core it was never queued to"
        );
        check_eq!(
            load(&item.outside_irq),
            0,
            "after the {phase}: {name}: runs outside the drain SGI"
        );
    }
    // Where the storm's items ran: P[i][k] only on its one target, S[j]
    // only on cores of j's parity (no later phase queues them).
    for i in 0..CORES {
        for k in 0..2 {
            let item = &CTX[P0 + 2 * i + k];
            let target = (i + 1 + k) % CORES;
            for c in 0..CORES {
                if c != target {
                    check_eq!(
                        load(&item.ran_on[c]),
                        0,
                        "P{i}{k} (queued only to cpu{target}): runs on cpu{c}"
                    );
                }
            }
        }
    }
    for j in 0..CORES {
        for c in 0..CORES {
            if c % 2 != j % 2 {
                check_eq!(
                    load(&CTX[S0 + j].ran_on[c]),
                    0,
                    "S{j} (queued only to cpu{j} and cpu{}): runs on cpu{c}",
                    (j + 2) % CORES
                );
            }
        }
    }
}

/// The accounting of every item after `phase` (core 0, all quiet), and
/// [`check_runs`].
fn check_items(phase: &str) {
    check_runs(phase);
    for (i, (item, w)) in CTX.iter().zip(WORK.iter()).enumerate() {
        let name = w.name();
        let runs = item.runs();
        check!(idle(i), "after the {phase}: {name}: idle");
        check_eq!(
            w.runs(),
            runs,
            "after the {phase}: {name}: runs() = the function's own runs"
        );
        check_eq!(
            runs + load(&item.cancelled),
            load(&item.queued),
            "after the {phase}: {name}: runs + cancelled = queue_work_on calls that returned true"
        );
        check_eq!(
            w.coalesced(),
            load(&item.folded),
            "after the {phase}: {name}: coalesced() = queue_work_on calls that returned false"
        );
    }
}

/// This core's drains so far: none returned `Busy` (the drain SGI is
/// taken with IRQs masked and nothing else drains, so a drain never finds
/// one of its own CPU running) or `Disabled` (no guard is taken).
fn check_drains(cpu: usize, phase: &str) {
    let me = &CORE[cpu];
    check_eq!(
        load(&me.busy),
        0,
        "cpu{cpu}, {phase}: drains that returned Busy"
    );
    check_eq!(
        load(&me.disabled),
        0,
        "cpu{cpu}, {phase}: drains that returned Disabled"
    );
}

fn check_core(cpu: usize) {
    let me = &CORE[cpu];
    check_drains(cpu, "at the end");
    check_eq!(RT.pending(cpu), 0, "cpu{cpu}: pending at the end");
    check_eq!(
        load(&me.drains),
        load(&me.complete) + load(&me.remaining),
        "cpu{cpu}: drain outcomes"
    );
}

fn report() {
    for c in 0..CORES {
        let me = &CORE[c];
        let ran = |lo: usize, n: usize| -> u32 {
            CTX[lo..lo + n].iter().map(|i| load(&i.ran_on[c])).sum()
        };
        println!(
            "cpu{c}: storm: queued for cpu{} and cpu{}: shared {} (true {}), per pair {} (true {}), true while running elsewhere {}; ran here: shared {}, per pair {}",
            (c + 1) % CORES,
            (c + 2) % CORES,
            load(&me.storm_shared[0]),
            load(&me.storm_shared[1]),
            load(&me.storm_pair[0]),
            load(&me.storm_pair[1]),
            load(&me.storm_while_running),
            ran(S0, 4),
            ran(P0, 8),
        );
        println!(
            "cpu{c}: flush: F{c} queued for cpu{} and flushed {} times, waited {}; ran F{} here {}",
            (c + 1) % CORES,
            load(&me.flushes),
            load(&me.flush_waited),
            (c + CORES - 1) % CORES,
            load(&CTX[F0 + (c + CORES - 1) % CORES].ran_on[c]),
        );
        println!(
            "cpu{c}: cancel, drains held: queue_work_on {} (true {}), cancel {} (true {}), runs {}; racing: queued {} = ran {} + cancelled {}",
            load(&me.exact[0]),
            load(&me.exact[1]),
            load(&me.exact[2]),
            load(&me.exact[3]),
            load(&me.exact[4]),
            load(&me.race[0]),
            load(&me.race[2]),
            load(&me.race[1]),
        );
        let sgis: [u32; CORES] = core::array::from_fn(|s| t::sgis(c, s));
        println!(
            "cpu{c}: drain SGIs {} (from cpu0..3: {} {} {} {}; pend_drain {}): Complete {}, Remaining {}, Busy {}, Disabled {}",
            load(&me.drains),
            sgis[0],
            sgis[1],
            sgis[2],
            sgis[3],
            t::kicks(c),
            load(&me.complete),
            load(&me.remaining),
            load(&me.busy),
            load(&me.disabled),
        );
    }
    let total = |f: fn(&Item) -> u32| -> u32 { CTX.iter().map(f).sum() };
    let (runs, queued, folded, cancelled) = (
        total(|i| i.runs()),
        total(|i| load(&i.queued)),
        total(|i| load(&i.folded)),
        total(|i| load(&i.cancelled)),
    );
    let coalesced: u32 = WORK.iter().map(Work::coalesced).sum();
    println!(
        "items: queue_work_on {} = true {} + false {} (coalesced() {}); runs {} = true {} - cancelled {}",
        queued + folded,
        queued,
        folded,
        coalesced,
        runs,
        queued,
        cancelled,
    );
    println!(
        "items: runs on two cores at once {}, on a core never queued to {}, outside the drain SGI {}",
        total(|i| load(&i.overlaps)),
        total(|i| load(&i.wrong_core)),
        total(|i| load(&i.outside_irq)),
    );
    println!("work_cross: ok");
}

fn scenario(cpu: usize) {
    t::gic_init_core();
    if cpu == 0 {
        println!(
            "work_cross: {CORES} cores; core i queues for cores i+1 and i+2 (queue_work_on, drain SGI {}); {} items",
            t::SGI_DRAIN,
            ITEMS
        );
    }
    t::barrier();
    storm(cpu);
    check_drains(cpu, "storm");
    t::barrier();
    wait_quiet(cpu, "the storm to drain");
    t::barrier();
    if cpu == 0 {
        check_items("storm");
    }
    t::barrier();
    // No core ever queues for the core after it in the storm.
    check_eq!(
        t::sgis(cpu, (cpu + 1) % CORES),
        0,
        "cpu{cpu}: drain SGIs from cpu{}, which never queues for it",
        (cpu + 1) % CORES
    );
    relink(cpu);
    check_drains(cpu, "relink");
    flush(cpu);
    check_drains(cpu, "flush");
    t::barrier();
    wait_quiet(cpu, "the flushes to drain");
    cancel_exact(cpu);
    check_drains(cpu, "exact cancels");
    t::barrier();
    cancel_race(cpu);
    check_drains(cpu, "racing cancels");
    t::barrier();
    wait_quiet(cpu, "everything to drain");
    t::barrier();
    check_core(cpu);
    t::barrier();
    if cpu == 0 {
        check_items("last phase");
        report();
    }
}
