//! loom models: delayed work in a runtime's bottom half
//! (`Runtime::queue_delayed_work`, `mod_delayed_work`;
//! `src/work/timer.rs`): a reschedule, a cancel and a queue from a top
//! half race the drain that keeps, walks and fires the timers (the
//! deadline request seqlock, the poke, the drain-owned timer list and
//! `deadline_ns`).
//!
//! `LoomCpu`'s clock is 0: a delay of 100 ns is never due, a delay of 0
//! is due at once.

#![cfg(bottomhalf_loom)]

use std::time::Duration;

use bottomhalf::{Config, DelayedWork, Runtime, Work};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, InFlight, LoomCpu};
use loom::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU32 as StdAtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

struct Ctx {
    in_flight: InFlight,
    /// Top-half data stored (Relaxed) before a reschedule; the run records
    /// what it saw.
    data: AtomicU32,
    saw: StdAtomicU32,
    e_saw: StdAtomicU32,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 2> = Runtime::new(Config::DEFAULT.max_restart(2));
    static ref D: DelayedWork = DelayedWork::new("d", body);
    static ref E: DelayedWork = DelayedWork::new("e", |_| {
        CTX.e_saw.store(CTX.data.load(Relaxed), SeqCst);
    });
    static ref CTX: Ctx = Ctx {
        in_flight: InFlight::new(),
        data: AtomicU32::new(0),
        saw: StdAtomicU32::new(0),
        e_saw: StdAtomicU32::new(0),
    };
}

fn body(_: &Work) {
    CTX.in_flight.enter("delayed D");
    CTX.saw.store(CTX.data.load(Relaxed), SeqCst);
    CTX.in_flight.leave();
}

fn set_up() {
    bind_cpu(0);
    let _ = (&*RT, &*D, &*E, &*CTX);
}

fn final_drains() {
    for cpu in [0, 1] {
        bind_cpu(cpu);
        while RT.pending(cpu) != 0 {
            let _ = RT.drain();
        }
    }
    bind_cpu(0);
}

/// (a) `D` waits on CPU 0's timer list (deadline 100, not due); CPU 0
/// drains while a top half on CPU 1 stores its data and reschedules `D` to
/// now. The reschedule finds it pending (`true`), is not lost (after the
/// drains `D` ran exactly once, not before the reschedule: it saw the
/// data) and the item ends idle.
#[test]
fn reschedule_races_the_drain() {
    model(|| {
        set_up();
        assert!(RT.queue_delayed_work(&D, Duration::from_nanos(100)));
        let _ = RT.drain();
        assert_eq!(D.runs(), 0);
        assert!(D.is_timer_pending());
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(1, || {
            CTX.data.store(1, Relaxed);
            RT.mod_delayed_work(&D, Duration::ZERO)
        });
        a.join().unwrap();
        assert!(b.join().unwrap(), "the reschedule did not find D pending");
        final_drains();
        assert_eq!(D.runs(), 1, "the re-arm was lost");
        assert_eq!(CTX.saw.load(SeqCst), 1, "D ran at its stale deadline");
        assert!(!D.is_pending() && !D.is_running());
    });
}

/// (b) Two top halves (CPUs 0 and 1) reschedule `D`, waiting on CPU 0's
/// list, to now at the same time, one of them then draining CPU 0. The
/// writers' try-lock keeps one deadline; both are "now", so after the
/// drains `D` ran once per instance: once for the reschedules that found
/// it pending, once more for one that found it idle (it had run) and
/// queued it again. No reschedule is lost, none runs at a stale deadline.
#[test]
fn two_reschedulers() {
    model(|| {
        set_up();
        assert!(RT.queue_delayed_work(&D, Duration::from_nanos(100)));
        let _ = RT.drain();
        let a = spawn_on(0, || {
            CTX.data.store(1, Relaxed);
            let r = RT.mod_delayed_work(&D, Duration::ZERO);
            let _ = RT.drain();
            r
        });
        let b = spawn_on(1, || {
            CTX.data.store(1, Relaxed);
            RT.mod_delayed_work(&D, Duration::ZERO)
        });
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        assert!(ra || rb, "neither reschedule found D pending");
        final_drains();
        // A reschedule that found `D` idle (it had run already) queued a
        // new instance, which runs at once too.
        let expected = 1 + u32::from(!ra) + u32::from(!rb);
        assert_eq!(D.runs(), expected, "runs (reschedules: {ra}, {rb})");
        assert_eq!(CTX.saw.load(SeqCst), 1);
        assert!(!D.is_pending());
    });
}

/// (c) A top half on CPU 1 stores its data and queues `D` then `E` with
/// no delay on CPU 0 (`queue_delayed_work_on`) while CPU 0 drains: the
/// work queue intake's push and take and the deadline request publish the
/// nodes (`E.next` = `D`) and their deadlines; each runs exactly once, on
/// CPU 0, and saw the data.
#[test]
fn queue_delayed_on_another_cpu_races_the_drain() {
    model(|| {
        set_up();
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(1, || {
            CTX.data.store(1, Relaxed);
            assert!(RT.queue_delayed_work_on(0, &D, Duration::ZERO));
            assert!(RT.queue_delayed_work_on(0, &E, Duration::ZERO));
        });
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(RT.pending(1), 0, "nothing was queued on CPU 1");
        final_drains();
        assert_eq!((D.runs(), E.runs()), (1, 1));
        assert_eq!((CTX.saw.load(SeqCst), CTX.e_saw.load(SeqCst)), (1, 1));
        assert!(!D.is_pending() && !E.is_pending());
    });
}

/// (d) `D` waits on CPU 0's timer list (deadline 100). CPU 0 drains
/// (walks the list) while a top half on CPU 1 stores its data, cancels
/// `D` and queues it again with no delay: the ghost on the list is either
/// dropped by the walk before the queue (which then pushes it afresh) or
/// covered where it is linked (the queue pokes CPU 0). Either way `D` runs
/// exactly once after the drains, saw the data, and ends idle: the walk's
/// ghost drop and the covering queue hand the link over without losing or
/// doubling the node.
#[test]
fn cancel_and_requeue_race_the_timer_walk() {
    model(|| {
        set_up();
        assert!(RT.queue_delayed_work(&D, Duration::from_nanos(100)));
        let _ = RT.drain();
        assert!(D.is_timer_pending());
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(1, || {
            CTX.data.store(1, Relaxed);
            assert!(D.cancel());
            assert!(RT.queue_delayed_work_on(0, &D, Duration::ZERO));
        });
        a.join().unwrap();
        b.join().unwrap();
        final_drains();
        assert_eq!(D.runs(), 1, "the re-queued instance was lost or ran twice");
        assert_eq!(CTX.saw.load(SeqCst), 1);
        assert!(!D.is_pending() && !D.is_running());
    });
}

/// (e) Two top halves (CPUs 0 and 1) reschedule `D`, waiting on CPU 0's
/// list, at once, to deadlines that differ in both 32-bit halves
/// (2^32 ns and 5 ns; the clock is 0, so neither is due). The request's
/// lock lets one writer through; a deadline torn from both writes
/// (high half of one, low half of the other) could be 0, due at once.
/// After the drains `D` has not run and still waits.
#[test]
fn two_reschedulers_never_tear_the_deadline() {
    model(|| {
        set_up();
        assert!(RT.queue_delayed_work(&D, Duration::from_nanos(0x2_0000_0000)));
        let _ = RT.drain();
        let a = spawn_on(0, || {
            RT.mod_delayed_work(&D, Duration::from_nanos(0x1_0000_0000))
        });
        let b = spawn_on(1, || RT.mod_delayed_work(&D, Duration::from_nanos(5)));
        assert!(a.join().unwrap() && b.join().unwrap());
        final_drains();
        assert_eq!(D.runs(), 0, "a torn deadline fired");
        assert!(D.is_timer_pending());
        assert!(D.cancel());
        final_drains();
    });
}

/// (f) `D` queued to run without a delay on CPU 0 (`queue_work`); CPU 0
/// drains (starts it) while a top half on CPU 1 calls
/// `mod_delayed_work(D, 100)`, which moves a pending instance back to a
/// timer (DELAYED set with a CAS that races the drain's start). Either
/// the instance was moved (`true`: it has not run) or it had started
/// (`false`: it ran once and the call queued a new one); in both cases
/// exactly one instance waits for its timer afterwards, none ran twice.
#[test]
fn mod_delayed_work_races_the_start_of_a_queued_instance() {
    model(|| {
        set_up();
        assert!(RT.queue_work(D.work()));
        let a = spawn_on(0, || {
            let _ = RT.drain();
        });
        let b = spawn_on(1, || RT.mod_delayed_work(&D, Duration::from_nanos(100)));
        a.join().unwrap();
        let moved = b.join().unwrap();
        final_drains();
        assert_eq!(D.runs(), u32::from(!moved), "moved: {moved}");
        assert!(D.is_timer_pending(), "no instance waits for the timer");
        assert!(D.cancel());
        final_drains();
        assert!(!D.is_pending());
    });
}
