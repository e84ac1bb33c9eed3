//! One tasklet scheduled from four cores at once never runs on two of
//! them at once.
//!
//! A shared `static Tasklet` on a `Runtime<BareMetal<Virt>, 4>` with the
//! default limits (10 passes, 2 ms of the generic timer). Its callback
//! sets an "inside" flag (and counts it if the flag was already set: two
//! cores inside at once), spins a little so that runs overlap other cores'
//! schedules and drains, counts the run on its core, and clears the flag.
//!
//! Every core calls `schedule` `ROUNDS` times, counting what it returned
//! and how often it found the callback running (on another core: this
//! core is not draining at that point), and drains whenever its drain was
//! pended (`take_pend`), at a fixed pseudo-random half of its steps. Then
//! each core drains until every core has stopped scheduling and its own
//! mask is empty (a tasklet handed off to a core is relinked while that
//! core is inside its drain, so a core outside a drain with an empty mask
//! gets no more work). That is one round; between rounds the tasklet is
//! idle and core 0 checks the identities below. Rounds repeat until some
//! schedule found the tasklet running on another core (at most
//! `MAX_ROUNDS`): with QEMU's multi-threaded TCG the four vCPUs are host
//! threads, and on a busy host two of them may not run at the same time
//! during one short round.
//!
//! Checked, from the `Tasklet` docs: a schedule returns `true` if it
//! queued the tasklet and `false` if the tasklet was already pending
//! (coalesced, counted in `coalesced()` when the covering run starts); a
//! schedule that lands during a run makes it run once more. So once the
//! tasklet is idle: `runs() == schedules that returned true`,
//! `coalesced() == schedules that returned false`, and `runs() +
//! coalesced() == every schedule`. Also: the callback never found the flag
//! set, it ran `runs()` times (counted by itself, and per core), some
//! schedule found it running on another core (so the cores really
//! overlapped; how much depends on how the host schedules QEMU's vCPU
//! threads, so the per-core split is printed, not checked), and it ends idle (`!is_scheduled()`, nothing
//! pending on any core).

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, Misuse, Runtime, Tasklet};
use bottomhalf_aarch64_tests::{self as t, check, check_eq, println, Virt, CORES};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

t::entry!(scenario);

static RT: Runtime<BareMetal<Virt>, CORES> = Runtime::new(Config::DEFAULT);
static T: Tasklet = Tasklet::new(&RT, callback);
const NAME: &str = "tasklet_smp";
const DRAIN_BY: &str = "polled flag";
type B = Virt;

/// Nothing to set up: the drain flag is polled.
fn board_init() {}

fn drain_if_pended(cpu: usize) {
    if t::take_pend(cpu) {
        // Complete, or Remaining (out of budget: the board was kicked
        // again, so the flag is set and a later step drains the rest).
        let _ = RT.drain();
        DRAINS[cpu].fetch_add(1, Ordering::Relaxed);
    }
}

include!("../tasklet_smp.rs");
