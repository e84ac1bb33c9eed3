//! `tasklet_smp` with the drain as a real interrupt: the board is
//! `VirtGic`, so a `schedule` that queues the tasklet sends the drain SGI
//! to its own core, and the drain runs in that core's IRQ handler at
//! once. A drain out of budget re-sends the SGI. Everything else, and
//! every check, is `tasklet_smp`'s (src/bin/tasklet_smp.rs).

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, Misuse, Runtime, Tasklet};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, VirtGic, CORES};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

t::entry!(scenario, irq_drain = irq_drain);

static RT: Runtime<BareMetal<VirtGic>, CORES> = Runtime::new(Config::DEFAULT);
static T: Tasklet = Tasklet::new(&RT, callback);
const NAME: &str = "tasklet_smp_sgi";
const DRAIN_BY: &str = "GIC SGI";
type B = VirtGic;

/// The GIC on, for this core.
fn board_init() {
    t::gic_init_core();
}

/// The drain SGI's handler (IRQs masked).
fn irq_drain() {
    DRAINS[B::cpu() % CORES].fetch_add(1, Ordering::Relaxed);
    // Complete, or Remaining (out of budget: the SGI was sent again and is
    // taken after this one ends).
    let _ = RT.drain();
}

/// Drains happen in the SGI's handler; the thread never drains itself.
fn drain_if_pended(_cpu: usize) {}

include!("../tasklet_smp.rs");
