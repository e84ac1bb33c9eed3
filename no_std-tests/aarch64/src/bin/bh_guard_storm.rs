//! The bottom-half guard under a cross-core interrupt storm: core 0's
//! thread holds `RT.bh_disable()` while cores 1 to 3 storm it with SGIs.
//!
//! Board: `VirtGic` (the drain is SGI 1, sent by `pend_drain`). Cores 1 to
//! 3 send SGI 2 (`SGI_TOP`) to core 0. Core 0's SGI 2 handler is a top
//! half: between `irq_enter` and `irq_exit` it raises vectors A and B and
//! schedules a tasklet, as its source core's fixed pseudo-random pattern
//! says, and counts every call. Its `irq_exit` finds work pending and
//! tries to drain there. A sender waits until core 0 has taken each SGI
//! (GICv2 merges a second send from the same core into a pending one), so
//! every send is one top half.
//!
//! Every bottom half of core 0 (A, B, the tasklet) counts a violation if
//! it runs while core 0's thread has set `HELD`, which it does right after
//! taking its guard and clears right before dropping the last one.
//!
//! **Phase 1, rounds.** Core 0 takes 1 to 3 nested guards, then lets the
//! three senders storm it. Meanwhile its thread keeps taking and dropping
//! one more nested guard and calls `RT.drain()` under it, and half-way
//! through the round it drops every guard but the first. At the end of the
//! round, with every SGI taken, checked exactly: no bottom half ran on
//! core 0; every `irq_exit` drain returned `Disabled`; the one drain SGI
//! (the kick of the round's first raise) returned `Disabled`; what was
//! raised is still pending. Then core 0 drops the last guard: its kick
//! sends one drain SGI, whose drain runs A, B and the tasklet exactly once
//! each (if the round raised them: all raises of a round coalesce into
//! one run), and `Complete`. `pend_drain` was called exactly twice in the
//! round. Nothing was lost.
//!
//! **Phase 2, churn.** The senders storm without pause while core 0's
//! thread takes one or two guards, spins, and drops them, again and again,
//! so SGIs land at every point of `bh_disable` and of the last drop.
//! Checked: no violation, no run while held, both `Disabled` and
//! `Complete` drains happened.
//!
//! **Liveness of the other cores.** Between its sends, each sender raises
//! its own vector L with IRQs masked (a top half on itself) and waits for
//! its own drain SGI to run it. In phase 1 all those runs happen while
//! core 0's guard is held, and each sender's count is exact.
//!
//! **Totals, exact.** Per vector on core 0: the top halves' raise calls =
//! `Stats::raised` = `runs` + `coalesced`, and `runs` = the handler's own
//! count. The tasklet: schedules = `runs()` + `coalesced()`, `runs()` =
//! the schedules that returned `true` = the callback's count. Per sender
//! core: L raised = ran, no coalescing, one drain SGI per L raise, all
//! `Complete`. No bottom half ran on the wrong core or outside an IRQ.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, BhGuard, Board, Config, DrainOutcome, Runtime, Tasklet, Vector};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, VirtGic, CORES};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

t::entry!(scenario, irq_drain = irq_drain, irq_top = top_half);

static RT: Runtime<BareMetal<VirtGic>, CORES> = Runtime::new(Config::DEFAULT.time_budget_ns(0));
static TASKLET: Tasklet = Tasklet::new(&RT, tasklet);

type Guard = BhGuard<'static, BareMetal<VirtGic>, CORES>;

/// Core 0's storm vectors, raised by its SGI 2 top half.
const VA: Vector = Vector::new(3);
const VB: Vector = Vector::new(4);
const STORM: [Vector; 2] = [VA, VB];
/// The senders' own vector, raised and drained on cores 1 to 3.
const VL: Vector = Vector::new(5);

const ROUNDS: u32 = 6;
/// SGI 2 sends per sender core and round in phase 1, and in phase 2.
const ROUND_SENDS: u32 = 300;
const CHURN_SENDS: u32 = 1500;
/// The phase word for phase 2 (phase 1's rounds are 1..=ROUNDS).
const CHURN: u32 = u32::MAX;
/// Senders: cores 1..CORES.
const SENDERS: u32 = CORES as u32 - 1;
/// Limit for a wait that a lost kick would make endless.
const WAIT_NS: u64 = 2_000_000_000;

/// Set by core 0's thread while it holds at least one guard.
static HELD: AtomicBool = AtomicBool::new(false);
/// Core 0's bottom halves that ran while `HELD` was set.
static VIOLATIONS: AtomicU32 = AtomicU32::new(0);
/// Bottom halves that ran on the wrong core or with IRQs unmasked.
static BAD_CONTEXT: AtomicU32 = AtomicU32::new(0);

/// Core 0's top half: raise calls of A and B, tasklet schedules (all,
/// `true`, `false`), handler runs of A and B, tasklet callback runs.
static RAISES: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static RUNS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static SCHEDULES: AtomicU32 = AtomicU32::new(0);
static SCHEDULED_TRUE: AtomicU32 = AtomicU32::new(0);
static SCHEDULED_FALSE: AtomicU32 = AtomicU32::new(0);
static TASKLET_RUNS: AtomicU32 = AtomicU32::new(0);
/// Each sender's pattern state, stepped by core 0's top half only.
static PATTERN: [AtomicU32; CORES] = [
    AtomicU32::new(0x1111_1111),
    AtomicU32::new(0x2545_f491),
    AtomicU32::new(0x9e37_79b9),
    AtomicU32::new(0x85eb_ca6b),
];

/// Outcome counters, indexed by `outcome_index`: core 0's `irq_exit`s,
/// and every core's drain SGIs.
static EXIT_OUT: [AtomicU32; 5] = [const { AtomicU32::new(0) }; 5];
static DRAIN_OUT: [[AtomicU32; 4]; CORES] = [const { [const { AtomicU32::new(0) }; 4] }; CORES];
/// `RT.drain()` from core 0's thread under a guard: `Disabled` results.
static THREAD_DISABLED: AtomicU32 = AtomicU32::new(0);

/// Per sender core: SGI 2 sends, L raises, L runs, L runs while core 0's
/// `HELD` was set.
static SENT: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static LOCAL_RAISES: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static LOCAL_RUNS: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static LOCAL_RUNS_HELD: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];

/// Phase control: core 0 publishes the round (or `CHURN`); each sender
/// adds 1 to `DONE` after its last send of the phase was taken.
static PHASE: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);

fn outcome_index(o: DrainOutcome) -> usize {
    match o {
        DrainOutcome::Complete => 0,
        DrainOutcome::Remaining => 1,
        DrainOutcome::Busy => 2,
        DrainOutcome::Disabled => 3,
    }
}

fn load(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

fn bump(a: &AtomicU32) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The drain SGI's drain, on every core (IRQ context).
fn irq_drain() {
    let out = RT.drain();
    bump(&DRAIN_OUT[VirtGic::cpu() % CORES][outcome_index(out)]);
}

/// Core 0's SGI 2 handler: a top half for sender `source`.
fn top_half(source: usize) {
    check_eq!(VirtGic::cpu(), 0, "SGI 2 taken on core 0 only");
    RT.irq_enter();
    let x = t::XorShift::new(load(&PATTERN[source])).next_u32();
    PATTERN[source].store(x, Ordering::Relaxed);
    for (i, v) in STORM.iter().enumerate() {
        if x & (1 << i) != 0 {
            RT.raise(*v);
            bump(&RAISES[i]);
        }
    }
    if x & 4 != 0 || x & 3 == 0 {
        let queued = TASKLET.schedule();
        bump(&SCHEDULES);
        bump(if queued {
            &SCHEDULED_TRUE
        } else {
            &SCHEDULED_FALSE
        });
    }
    let idx = match RT.irq_exit() {
        Some(out) => outcome_index(out),
        None => 4,
    };
    bump(&EXIT_OUT[idx]);
}

/// Checks of every bottom half of core 0.
fn core0_bottom_half(cpu: usize) {
    if HELD.load(Ordering::Relaxed) {
        bump(&VIOLATIONS);
    }
    if cpu != 0 || VirtGic::cpu() != 0 || !t::irqs_are_masked() {
        bump(&BAD_CONTEXT);
    }
}

fn storm_handler(which: &'static usize, cpu: usize) {
    core0_bottom_half(cpu);
    bump(&RUNS[*which]);
}

fn tasklet() {
    core0_bottom_half(VirtGic::cpu());
    bump(&TASKLET_RUNS);
}

fn local_handler(cpu: usize) {
    let here = VirtGic::cpu();
    if here != cpu || here == 0 || !t::irqs_are_masked() {
        bump(&BAD_CONTEXT);
    }
    bump(&LOCAL_RUNS[here % CORES]);
    if HELD.load(Ordering::Relaxed) {
        bump(&LOCAL_RUNS_HELD[here % CORES]);
    }
}

static WHICH: [usize; 2] = [0, 1];

/// Core 0's bottom-half runs so far: A, B, tasklet.
fn core0_runs() -> [u32; 3] {
    [load(&RUNS[0]), load(&RUNS[1]), load(&TASKLET_RUNS)]
}

/// Core 0's top halves taken so far, from every sender.
fn top_halves() -> u32 {
    (1..CORES).map(|s| t::top_sgis(0, s)).sum()
}

fn scenario(cpu: usize) {
    t::gic_init_core();
    if cpu == 0 {
        for (i, v) in STORM.iter().enumerate() {
            let r = RT.register_with(*v, ["A", "B"][i], &WHICH[i], storm_handler);
            check_eq!(r, Ok(()), "register vector {}", v.index());
        }
        check_eq!(RT.register(VL, "L", local_handler), Ok(()), "register L");
        println!(
            "bh_guard_storm: cpu0 holds bh_disable while cpu1..3 send it SGI {} ({} rounds x {} x {} top halves, then churn {} x {}); drain: SGI {}",
            t::SGI_TOP,
            ROUNDS,
            SENDERS,
            ROUND_SENDS,
            SENDERS,
            CHURN_SENDS,
            t::SGI_DRAIN
        );
    }
    t::barrier();
    if cpu == 0 {
        guard_holder();
    } else {
        sender(cpu);
    }
    t::barrier();
    if cpu == 0 {
        totals();
    }
}

/// Cores 1..3: for each phase core 0 publishes, send its SGIs one at a
/// time, with a local top half on every other step.
fn sender(cpu: usize) {
    let mut seen = 0;
    while seen != CHURN {
        t::wait_until("the next phase", || PHASE.load(Ordering::Acquire) != seen);
        seen = PHASE.load(Ordering::Acquire);
        let sends = if seen == CHURN {
            CHURN_SENDS
        } else {
            ROUND_SENDS
        };
        for i in 0..sends {
            let n = SENT[cpu].fetch_add(1, Ordering::Relaxed) + 1;
            t::send_top_sgi(0);
            t::sleep_until("core 0 to take SGI 2", WAIT_NS, || t::top_sgis(0, cpu) == n);
            if i % 2 == 0 {
                let l = LOCAL_RAISES[cpu].fetch_add(1, Ordering::Relaxed) + 1;
                t::irqs_masked(|| RT.raise(VL));
                t::wait_until_ns("the sender's own drain", WAIT_NS, || {
                    load(&LOCAL_RUNS[cpu]) == l
                });
            }
        }
        // Release: pairs with core 0's Acquire load of DONE.
        DONE.fetch_add(1, Ordering::Release);
    }
}

fn guard_holder() {
    let mut nested = 0u32;
    for round in 1..=ROUNDS {
        nested += guarded_round(round);
    }
    println!("phase 1: nested guards cpu0's thread took and dropped under the storm: {nested}");
    churn();
}

/// One phase-1 round; returns the nested guards the thread took in it.
fn guarded_round(round: u32) -> u32 {
    let depth = 1 + (round - 1) % 3;
    let runs0 = core0_runs();
    let raises0 = [load(&RAISES[0]), load(&RAISES[1]), load(&SCHEDULES)];
    let tops0 = top_halves();
    let exit0: [u32; 5] = core::array::from_fn(|i| load(&EXIT_OUT[i]));
    let drain0: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[0][i]));
    let kicks0 = t::kicks(0);
    let local0: [u32; CORES] = core::array::from_fn(|c| load(&LOCAL_RUNS_HELD[c]));

    let mut guards: [Option<Guard>; 3] = [None, None, None];
    for g in guards.iter_mut().take(depth as usize) {
        *g = Some(RT.bh_disable());
    }
    HELD.store(true, Ordering::Relaxed);
    // Release: pairs with the senders' Acquire load of PHASE.
    PHASE.store(round, Ordering::Release);

    let round_tops = SENDERS * ROUND_SENDS;
    let target = round * SENDERS;
    let mut inner = 0u32;
    let mut halved = depth == 1;
    while DONE.load(Ordering::Acquire) < target {
        {
            let _g = RT.bh_disable();
            inner += 1;
            let out = RT.drain();
            check!(
                matches!(out, DrainOutcome::Disabled | DrainOutcome::Complete),
                "round {round}: the thread's drain under a guard returned {out:?}"
            );
            if out == DrainOutcome::Disabled {
                bump(&THREAD_DISABLED);
            }
        }
        if !halved && top_halves() - tops0 >= round_tops / 2 {
            // Drop every guard but the first: none of them is the last.
            for g in guards.iter_mut().skip(1) {
                drop(g.take());
            }
            halved = true;
            check_eq!(
                core0_runs(),
                runs0,
                "round {round}: runs after dropping guards that were not the last"
            );
        }
    }
    check!(
        halved,
        "round {round}: the outer guards were dropped half-way"
    );

    // Every SGI of the round was taken (the senders waited for it).
    for (s, sent) in SENT.iter().enumerate().skip(1) {
        check_eq!(
            t::top_sgis(0, s),
            load(sent),
            "round {round}: SGI 2 from core {s} taken = sent"
        );
    }
    let tops = top_halves() - tops0;
    check_eq!(tops, round_tops, "round {round}: top halves");
    check_eq!(
        load(&VIOLATIONS),
        0,
        "round {round}: bottom halves that ran on cpu0 while its guard was held"
    );
    check_eq!(
        core0_runs(),
        runs0,
        "round {round}: cpu0's bottom-half runs while the guard was held"
    );
    let raised: [u32; 3] = [
        load(&RAISES[0]) - raises0[0],
        load(&RAISES[1]) - raises0[1],
        load(&SCHEDULES) - raises0[2],
    ];
    for (i, v) in STORM.iter().enumerate() {
        check_eq!(
            RT.pending(0) & (1 << v.index()) != 0,
            raised[i] != 0,
            "round {round}: vector {} still pending iff raised",
            v.index()
        );
    }
    check_eq!(
        TASKLET.is_scheduled(),
        raised[2] != 0,
        "round {round}: tasklet still scheduled iff scheduled"
    );
    let exit: [u32; 5] = core::array::from_fn(|i| load(&EXIT_OUT[i]) - exit0[i]);
    check_eq!(
        exit,
        [0, 0, 0, tops, 0],
        "round {round}: irq_exit outcomes [Complete, Remaining, Busy, Disabled, none]"
    );
    let drains: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[0][i]) - drain0[i]);
    check_eq!(
        drains,
        [0, 0, 0, 1],
        "round {round}: drain SGIs on cpu0 [Complete, Remaining, Busy, Disabled] under the guard"
    );
    check_eq!(
        t::kicks(0) - kicks0,
        1,
        "round {round}: pend_drain(0) calls under the guard"
    );

    // The last guard: its drop kicks, and the drain SGI runs everything.
    HELD.store(false, Ordering::Relaxed);
    drop(guards[0].take());
    t::wait_until_ns("the drain after the last guard dropped", WAIT_NS, || {
        RT.pending(0) == 0 && load(&DRAIN_OUT[0][0]) == drain0[0] + 1
    });
    let ran: [u32; 3] = core::array::from_fn(|i| core0_runs()[i] - runs0[i]);
    let want: [u32; 3] = core::array::from_fn(|i| u32::from(raised[i] != 0));
    check_eq!(
        ran,
        want,
        "round {round}: runs of A, B, tasklet after the last guard dropped"
    );
    check!(!TASKLET.is_scheduled(), "round {round}: tasklet idle");
    let drains: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[0][i]) - drain0[i]);
    check_eq!(
        drains,
        [1, 0, 0, 1],
        "round {round}: drain SGIs on cpu0 [Complete, Remaining, Busy, Disabled]"
    );
    check_eq!(
        t::kicks(0) - kicks0,
        2,
        "round {round}: pend_drain(0) calls"
    );
    let local: [u32; CORES] = core::array::from_fn(|c| load(&LOCAL_RUNS_HELD[c]) - local0[c]);
    for (c, n) in local.iter().enumerate().skip(1) {
        check_eq!(
            *n,
            ROUND_SENDS / 2,
            "round {round}: cpu{c}'s own bottom halves that ran while cpu0's guard was held"
        );
    }
    println!(
        "round {round}: {depth} guard(s) + nested; top halves {tops}: raised A {} B {} tasklet {}; ran while held 0; irq_exit drains Disabled {}, drain SGIs Disabled {}",
        raised[0], raised[1], raised[2], exit[3], 1
    );
    println!(
        "round {round}: after the last guard dropped: 1 drain SGI ran A {} B {} tasklet {}; pend_drain(0) calls 2; cpu1..3 ran their own L {} / {} / {} times meanwhile",
        ran[0], ran[1], ran[2], local[1], local[2], local[3]
    );
    inner
}

/// Phase 2: guards taken and dropped while the storm goes on.
fn churn() {
    let mut rng = t::XorShift::new(0x6a09_e667);
    let drain0: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[0][i]));
    let exit0: [u32; 5] = core::array::from_fn(|i| load(&EXIT_OUT[i]));
    let tops0 = top_halves();
    let mut cycles = 0u32;
    // Release: pairs with the senders' Acquire load of PHASE.
    PHASE.store(CHURN, Ordering::Release);
    let target = (ROUNDS + 1) * SENDERS;
    while DONE.load(Ordering::Acquire) < target {
        let r = rng.next_u32();
        let outer = RT.bh_disable();
        let inner = (r & 1 != 0).then(|| RT.bh_disable());
        HELD.store(true, Ordering::Relaxed);
        let before = core0_runs();
        for _ in 0..(r >> 8) % 256 {
            core::hint::spin_loop();
        }
        let out = RT.drain();
        check!(
            matches!(out, DrainOutcome::Disabled | DrainOutcome::Complete),
            "churn: the thread's drain under a guard returned {out:?}"
        );
        check_eq!(core0_runs(), before, "churn: runs on cpu0 while held");
        HELD.store(false, Ordering::Relaxed);
        drop(inner);
        drop(outer);
        for _ in 0..(r >> 16) % 256 {
            core::hint::spin_loop();
        }
        cycles += 1;
    }
    t::wait_until_ns("cpu0 to drain after the churn", WAIT_NS, || {
        RT.pending(0) == 0 && !TASKLET.is_scheduled()
    });
    check_eq!(
        load(&VIOLATIONS),
        0,
        "churn: bottom halves that ran on cpu0 while its guard was held"
    );
    let drains: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[0][i]) - drain0[i]);
    let exit: [u32; 5] = core::array::from_fn(|i| load(&EXIT_OUT[i]) - exit0[i]);
    check!(
        drains[3] + exit[3] > 0,
        "churn: some drain found the guard held (Disabled)"
    );
    check!(
        drains[0] + exit[0] > 0,
        "churn: some drain ran between guards (Complete)"
    );
    check_eq!(
        drains[1] + drains[2] + exit[1] + exit[2],
        0,
        "churn: Remaining or Busy drains"
    );
    println!(
        "churn: {} top halves, {cycles} guard cycles; cpu0 drains Disabled {} (irq_exit {} + SGI {}), Complete {} (irq_exit {} + SGI {}); ran while held 0",
        top_halves() - tops0,
        exit[3] + drains[3],
        exit[3],
        drains[3],
        exit[0] + drains[0],
        exit[0],
        drains[0],
    );
}

/// Exact totals, after every core has finished.
fn totals() {
    let s = RT.stats();
    for (i, v) in STORM.iter().enumerate() {
        let raises = load(&RAISES[i]);
        let runs = load(&RUNS[i]);
        let name = ["A", "B"][i];
        check_eq!(
            s.raised(0, *v),
            raises,
            "cpu0 {name}: raised = top halves' raise calls"
        );
        check_eq!(s.runs(0, *v), runs, "cpu0 {name}: runs = handler's count");
        check_eq!(
            raises,
            runs + s.coalesced(0, *v),
            "cpu0 {name}: raised = runs + coalesced"
        );
        println!(
            "cpu0 {name}: raised {raises} = ran {runs} + coalesced {}",
            s.coalesced(0, *v)
        );
        for c in 1..CORES {
            check_eq!(s.raised(c, *v), 0, "cpu{c} {name}: raised");
        }
    }
    let sched = load(&SCHEDULES);
    check_eq!(
        sched,
        TASKLET.runs() + TASKLET.coalesced(),
        "tasklet: schedules = runs + coalesced"
    );
    check_eq!(
        TASKLET.runs(),
        load(&SCHEDULED_TRUE),
        "tasklet: runs = schedules that returned true"
    );
    check_eq!(
        TASKLET.coalesced(),
        load(&SCHEDULED_FALSE),
        "tasklet: coalesced = schedules that returned false"
    );
    check_eq!(
        TASKLET.runs(),
        load(&TASKLET_RUNS),
        "tasklet: runs = callback's count"
    );
    println!(
        "cpu0 tasklet: scheduled {sched} = ran {} + coalesced {}",
        TASKLET.runs(),
        TASKLET.coalesced()
    );
    check_eq!(RT.pending(0), 0, "cpu0: pending at the end");
    for c in 1..CORES {
        let raised = load(&LOCAL_RAISES[c]);
        check_eq!(s.raised(c, VL), raised, "cpu{c} L: raised");
        check_eq!(s.runs(c, VL), raised, "cpu{c} L: runs");
        check_eq!(load(&LOCAL_RUNS[c]), raised, "cpu{c} L: handler's count");
        check_eq!(s.coalesced(c, VL), 0, "cpu{c} L: coalesced");
        check_eq!(t::sgis(c, c), raised, "cpu{c}: drain SGIs from itself");
        let d: [u32; 4] = core::array::from_fn(|i| load(&DRAIN_OUT[c][i]));
        check_eq!(d, [raised, 0, 0, 0], "cpu{c}: drain outcomes");
        check_eq!(RT.pending(c), 0, "cpu{c}: pending at the end");
        println!(
            "cpu{c}: sent SGI 2 {}; own L raised {raised} = ran {raised}, {} of them while cpu0's guard was held",
            load(&SENT[c]),
            load(&LOCAL_RUNS_HELD[c]),
        );
    }
    check_eq!(
        load(&VIOLATIONS),
        0,
        "bottom halves that ran on cpu0 while its guard was held"
    );
    check_eq!(
        load(&BAD_CONTEXT),
        0,
        "bottom halves on the wrong core or outside an IRQ"
    );
    check!(
        load(&THREAD_DISABLED) > 0,
        "the thread's drain under a guard returned Disabled"
    );
    println!(
        "bottom halves that ran on cpu0 while its guard was held: {}",
        load(&VIOLATIONS)
    );
    println!(
        "bottom halves on the wrong core or outside an IRQ: {}",
        load(&BAD_CONTEXT)
    );
    println!("bh_guard_storm: ok");
}
