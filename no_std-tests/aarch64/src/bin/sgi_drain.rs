//! The drain as a real interrupt: `pend_drain` sends a GIC SGI, and the
//! SGI's handler drains, on four cores at once, with exact accounting.
//!
//! The board is `VirtGic`: `pend_drain(cpu)` sends SGI 1 to core `cpu`
//! through the GICv2 distributor, and that core's IRQ vector runs
//! `RT.drain()` with IRQs masked. Every core runs `BURSTS` top halves of
//! its own fixed pseudo-random pattern. A top half raises 1 to 4 of the
//! vectors A and B with IRQs masked, as an interrupt handler would. The
//! first raise onto an empty mask must kick, and no drain may run before
//! IRQs are unmasked. Once they are unmasked, the SGI is taken and drains
//! everything. Handler A re-raises B on every other run, from inside the
//! drain (a restart, never an SGI).
//!
//! Then every core sends one SGI to the next core, a cross-core kick, and
//! waits for the one from the previous core. That drain finds nothing to
//! run.
//!
//! Checked per core: every top half led to exactly one SGI from the core
//! itself, and no drain ran inside the top half. One SGI came from the
//! previous core and none from any other. `pend_drain` calls equal the top
//! halves. `raised`, `coalesced` and `runs` in `Stats` equal the core's
//! model and the handlers' own counts. Every handler ran on the core that
//! raised it, with IRQs masked, so inside the SGI's handler. `restarts`
//! equals A's re-raises, and nothing is left pending.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, DrainOutcome, Runtime, Vector};
use bottomhalf_aarch64_tests::{self as t, check_eq, println, VirtGic, CORES};
use core::sync::atomic::{AtomicU32, Ordering};

t::entry!(scenario, irq_drain = irq_drain);

static RT: Runtime<BareMetal<VirtGic>, CORES> = Runtime::new(Config::DEFAULT.time_budget_ns(0));

const BURSTS: u32 = 5_000;
const VA: Vector = Vector::new(3);
const VB: Vector = Vector::new(4);
const VECS: [Vector; 2] = [VA, VB];

/// Per core: handler runs of A and B, runs outside an IRQ or on another
/// core, A's re-raises, drains by the SGI and their outcomes.
struct Core {
    runs: [AtomicU32; 2],
    bad_context: AtomicU32,
    reemit: AtomicU32,
    drains: AtomicU32,
    incomplete: AtomicU32,
}

static CORE: [Core; CORES] = [const {
    Core {
        runs: [const { AtomicU32::new(0) }; 2],
        bad_context: AtomicU32::new(0),
        reemit: AtomicU32::new(0),
        drains: AtomicU32::new(0),
        incomplete: AtomicU32::new(0),
    }
}; CORES];

/// Core `c`'s model totals, for core 0's table: raised, coalesced.
static MODEL: [[[AtomicU32; 2]; 2]; CORES] =
    [const { [const { [const { AtomicU32::new(0) }; 2] }; 2] }; CORES];

/// The SGI's drain (IRQ context, IRQs masked).
fn irq_drain() {
    let me = &CORE[VirtGic::cpu()];
    me.drains.fetch_add(1, Ordering::Relaxed);
    if RT.drain() != DrainOutcome::Complete {
        me.incomplete.fetch_add(1, Ordering::Relaxed);
    }
}

fn handler(which: &'static usize, cpu: usize) {
    let here = VirtGic::cpu();
    let me = &CORE[here % CORES];
    if here != cpu || !t::irqs_are_masked() {
        me.bad_context.fetch_add(1, Ordering::Relaxed);
    }
    let n = me.runs[*which].fetch_add(1, Ordering::Relaxed) + 1;
    if *which == 0 && n.is_multiple_of(2) {
        me.reemit.fetch_add(1, Ordering::Relaxed);
        RT.raise(VB);
    }
}

static WHICH: [usize; 2] = [0, 1];

fn scenario(cpu: usize) {
    t::gic_init_core();
    if cpu == 0 {
        for (i, v) in VECS.iter().enumerate() {
            let r = RT.register_with(*v, ["A", "B"][i], &WHICH[i], handler);
            check_eq!(r, Ok(()), "register vector {}", v.index());
        }
        println!(
            "sgi_drain: {CORES} cores x {BURSTS} top halves; pend_drain = GIC SGI {}",
            t::SGI_DRAIN
        );
    }
    t::barrier();

    let me = &CORE[cpu];
    let mut rng = t::XorShift::new(0x1b87_3593 ^ (cpu as u32 + 1).wrapping_mul(0xcc9e_2d51));
    let mut raised = [0u32; 2];
    let mut coalesced = [0u32; 2];
    for burst in 1..=BURSTS {
        let r = rng.next_u32();
        let n = 1 + r % 4;
        let drains_before = me.drains.load(Ordering::Relaxed);
        t::irqs_masked(|| {
            let mut model = 0u32;
            for k in 0..n {
                let i = ((r >> (8 + k)) & 1) as usize;
                let bit = 1 << VECS[i].index();
                if model & bit != 0 {
                    coalesced[i] += 1;
                }
                model |= bit;
                raised[i] += 1;
                RT.raise(VECS[i]);
            }
            check_eq!(
                t::kicks(cpu),
                burst,
                "burst {burst}: one pend_drain per top half"
            );
            check_eq!(
                me.drains.load(Ordering::Relaxed),
                drains_before,
                "burst {burst}: no drain while IRQs are masked"
            );
        });
        // IRQs unmasked: the SGI is taken (at once on QEMU; wait in case).
        t::wait_until("the drain SGI", || {
            me.drains.load(Ordering::Relaxed) >= burst
        });
        check_eq!(
            me.drains.load(Ordering::Relaxed),
            burst,
            "burst {burst}: one SGI drain per top half"
        );
        check_eq!(
            RT.pending(cpu),
            0,
            "burst {burst}: pending after the SGI's drain"
        );
    }
    t::barrier();

    // One cross-core kick each: core c pends a drain on core c + 1.
    t::send_drain_sgi((cpu + 1) % CORES);
    let prev = (cpu + CORES - 1) % CORES;
    t::wait_until("the SGI from the previous core", || t::sgis(cpu, prev) == 1);
    t::wait_until("its drain", || {
        me.drains.load(Ordering::Relaxed) == BURSTS + 1
    });
    t::barrier();

    // Exact accounting on this core.
    let s = RT.stats();
    let reemit = me.reemit.load(Ordering::Relaxed);
    for (i, v) in VECS.iter().enumerate() {
        let extra = if *v == VB { reemit } else { 0 };
        let runs = me.runs[i].load(Ordering::Relaxed);
        check_eq!(
            s.raised(cpu, *v),
            raised[i] + extra,
            "cpu {cpu} vector {}: raised",
            v.index()
        );
        check_eq!(
            s.coalesced(cpu, *v),
            coalesced[i],
            "cpu {cpu} vector {}: coalesced",
            v.index()
        );
        check_eq!(
            s.runs(cpu, *v),
            runs,
            "cpu {cpu} vector {}: runs = handler's count",
            v.index()
        );
        check_eq!(
            runs,
            raised[i] + extra - coalesced[i],
            "cpu {cpu} vector {}: runs = raised - coalesced",
            v.index()
        );
        MODEL[cpu][0][i].store(raised[i] + extra, Ordering::Relaxed);
        MODEL[cpu][1][i].store(coalesced[i], Ordering::Relaxed);
    }
    check_eq!(
        s.restarts(cpu),
        reemit,
        "cpu {cpu}: restarts = A's re-raises of B"
    );
    check_eq!(s.budget_exhausted(cpu), 0, "cpu {cpu}: budget exhausted");
    check_eq!(
        t::kicks(cpu),
        BURSTS,
        "cpu {cpu}: pend_drain calls = top halves"
    );
    check_eq!(
        t::sgis(cpu, cpu),
        BURSTS,
        "cpu {cpu}: SGIs from itself = top halves"
    );
    for src in 0..CORES {
        if src != cpu {
            let want = u32::from(src == prev);
            check_eq!(t::sgis(cpu, src), want, "cpu {cpu}: SGIs from core {src}");
        }
    }
    check_eq!(
        me.incomplete.load(Ordering::Relaxed),
        0,
        "cpu {cpu}: drains not Complete"
    );
    check_eq!(
        me.bad_context.load(Ordering::Relaxed),
        0,
        "cpu {cpu}: handler runs outside the SGI or on another core"
    );
    check_eq!(RT.pending(cpu), 0, "cpu {cpu}: pending at the end");
    t::barrier();
    if cpu != 0 {
        return;
    }
    for c in 0..CORES {
        let m = |k: usize, i: usize| MODEL[c][k][i].load(Ordering::Relaxed);
        let co = &CORE[c];
        println!(
            "cpu{c}: raised A {} B {}; ran A {} B {}; coalesced A {} B {}; restarts {}",
            m(0, 0),
            m(0, 1),
            co.runs[0].load(Ordering::Relaxed),
            co.runs[1].load(Ordering::Relaxed),
            m(1, 0),
            m(1, 1),
            RT.stats().restarts(c),
        );
        println!(
            "cpu{c}: SGI drains {} = from itself {} + from cpu{} {}; pend_drain calls {}",
            co.drains.load(Ordering::Relaxed),
            t::sgis(c, c),
            (c + CORES - 1) % CORES,
            t::sgis(c, (c + CORES - 1) % CORES),
            t::kicks(c),
        );
    }
    let bad: u32 = CORE
        .iter()
        .map(|c| c.bad_context.load(Ordering::Relaxed))
        .sum();
    check_eq!(
        bad,
        0,
        "handler runs outside the SGI's drain or on another core"
    );
    println!("handler runs outside the SGI's drain or on another core: {bad}");
    println!("sgi_drain: ok");
}
