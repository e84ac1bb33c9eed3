//! loom model: a tasklet `schedule` that skips its raise because the list's
//! vector is already pending never strands the tasklet.
//!
//! `Runtime::enqueue` pushes the tasklet, then skips the `fetch_or` if the
//! bit is set. That is safe only because a push that lands after a drain
//! pass's take of the list acquires that take (the push CAS reads from the
//! take's swap), and the pass cleared the bit before the take: so the check
//! cannot see the bit that pass already cleared. Drop the Acquire of the
//! push (`tasklet_push_no_acquire`) or the Release of the take
//! (`tasklet_take_no_release`) and the check may read the stale bit, skip
//! the raise, and leave the tasklet on a list no pending bit covers.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, Runtime, Tasklet, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count};

loom::lazy_static! {
    static ref RT: Runtime<bottomhalf_loom_tests::LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    static ref FIRST: Tasklet = Tasklet::new(&*RT, first);
    static ref SECOND: Tasklet = Tasklet::new(&*RT, second);
    static ref RUNS_FIRST: Count = Count::new();
    static ref RUNS_SECOND: Count = Count::new();
}

fn first() {
    RUNS_FIRST.inc();
}

fn second() {
    RUNS_SECOND.inc();
}

/// FIRST is pending on CPU 0 (its raise set the TASKLET bit) when CPU 0's
/// drain starts, while a top half on CPU 0 schedules SECOND. Whatever the
/// interleaving, when both are done SECOND has run or the TASKLET bit is
/// still pending, so a later drain runs it: no tasklet is left on a list
/// that no pending bit covers.
#[test]
fn a_skipped_raise_never_strands_a_tasklet() {
    model(|| {
        bind_cpu(0);
        let _ = (&*RT, &*FIRST, &*SECOND, &*RUNS_FIRST, &*RUNS_SECOND);
        assert!(FIRST.schedule());

        let drain = spawn_on(0, || {
            let _ = RT.drain();
        });
        let top_half = spawn_on(0, || {
            assert!(SECOND.schedule());
        });
        drain.join().unwrap();
        top_half.join().unwrap();

        let bit = 1 << Vector::TASKLET.index();
        if RUNS_SECOND.get() == 0 {
            assert!(
                RT.pending(0) & bit != 0,
                "SECOND is scheduled but no pending bit covers it: stranded"
            );
        }
        // The drain a kick would start.
        let _ = RT.drain();
        assert_eq!((RUNS_FIRST.get(), RUNS_SECOND.get()), (1, 1));
        assert!(!SECOND.is_scheduled());
    });
}
