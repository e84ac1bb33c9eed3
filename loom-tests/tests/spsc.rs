//! loom model: the single-producer mailbox (`Mailbox`, on
//! `heapless::spsc`) composed with a tasklet, the crate's standard data
//! path: the top half pushes then schedules, the tasklet pops until empty.
//!
//! loom cannot see inside `heapless` (its ring uses `core` atomics, which
//! loom neither instruments nor reorders: under loom each enqueue and
//! dequeue is one indivisible, sequentially consistent step). So this model
//! covers the composition, not the ring: push → schedule → drain → pop,
//! with the tasklet's serialization guarding the consumer handle. miri and
//! the stress tests cover the ring itself. The items carry their own data
//! (moved through the ring), so no loom cell is written before `push`: its
//! happens-before edge would have to come from heapless's atomics, which
//! loom cannot see.
//!
//! See `README.md` ("spsc").

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, Consumer, Mailbox, Runtime, Tasklet};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, InFlight, LoomCpu, Seen};
use loom::cell::UnsafeCell;

/// Capacity 3 (heapless keeps one slot empty); the model pushes 2.
const N: usize = 4;

struct Ctx {
    /// The consumer end, owned by the tasklet: only its (serialized) runs
    /// touch it, through this loom cell, so two runs without a
    /// happens-before edge between them are a causality violation.
    rx: UnsafeCell<Option<Consumer<'static, u32, N>>>,
    in_flight: InFlight,
    popped: Seen,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    static ref MB: Mailbox<u32, N> = Mailbox::new();
    static ref RX_TASKLET: Tasklet = Tasklet::new(&*RT, rx_bottom_half);
    static ref CTX: Ctx = Ctx {
        rx: UnsafeCell::new(None),
        in_flight: InFlight::new(),
        popped: Seen::new(),
    };
}

/// The tasklet: pop until empty.
fn rx_bottom_half() {
    CTX.in_flight.enter("mailbox tasklet");
    // SAFETY (model): only this tasklet's runs touch `rx`, and they never
    // overlap; loom checks it.
    CTX.rx.with_mut(|rx| {
        let rx = unsafe { &mut *rx }.as_mut().expect("consumer installed");
        while let Some(item) = rx.pop() {
            CTX.popped.record(item);
        }
    });
    CTX.in_flight.leave();
}

/// A top half on CPU 0 (`irq_enter` … `irq_exit`) pushes item 0, schedules
/// the tasklet and leaves through `irq_exit`, which drains; then the same
/// for item 1; another context on CPU 0
/// (a drain thread, or the code the interrupt preempted) drains at the same
/// time. With no further drain after both return: both items were popped
/// exactly once, the mailbox is empty, nothing is pending, no drop was
/// counted, and the tasklet's runs never overlapped. Whatever the tasklet
/// is doing when an item lands (idle, pending, running, past its last
/// `pop`), the schedule after the push makes it run again or is coalesced
/// into a run that has not started.
#[test]
fn push_schedule_pop_nothing_stranded() {
    model(|| {
        bind_cpu(0);
        let _ = (&*RT, &*RX_TASKLET);
        let (mut tx, rx) = MB.split().unwrap();
        // SAFETY (model): no thread exists yet.
        CTX.rx.with_mut(|p| unsafe { *p = Some(rx) });

        let top = spawn_on(0, move || {
            let mut outcomes = [None; 2];
            for (item, outcome) in outcomes.iter_mut().enumerate() {
                // An interrupt handler: capture, push, schedule; its
                // outermost `irq_exit` drains unless nothing is pending
                // (the other context's drain already took the work).
                RT.irq_enter();
                tx.push(item as u32).expect("room for 2 items");
                RX_TASKLET.schedule();
                *outcome = RT.irq_exit();
            }
            outcomes
        });
        let drainer = spawn_on(0, || RT.drain());
        let o_top = top.join().unwrap();
        let o_drain = drainer.join().unwrap();

        assert_eq!(
            CTX.popped.mask(),
            0b11,
            "an item was stranded: drains returned {o_top:?} and {o_drain:?}"
        );
        assert_eq!(MB.dropped(), 0);
        assert_eq!(RT.pending(0), 0);
        assert!(!RX_TASKLET.is_scheduled());
        // SAFETY (model): every thread was joined.
        CTX.rx.with(|rx| {
            assert!(unsafe { &*rx }.as_ref().unwrap().is_empty());
        });
    });
}
