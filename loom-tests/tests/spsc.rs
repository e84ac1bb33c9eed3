//! loom model: the single-producer mailbox (`Mailbox`) composed with a
//! tasklet, the crate's standard data path: the top half pushes then
//! schedules, the tasklet takes the consumer end, pops until empty and
//! gives the end back.
//!
//! The ring is the crate's own and uses `crate::sync` atomics and loom
//! cells, so loom sees it (the ring alone and the hand-over of its ends
//! are modelled in `mailbox_ends`). This model covers the composition:
//! push → schedule → drain → take the consumer → pop, where the tasklet's
//! serialization is what makes the consumer end free at every run. The
//! tasklet also writes a loom cell at every run, so two runs with no
//! happens-before edge between them are a causality violation.
//!
//! See `README.md` ("spsc").

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, Mailbox, Runtime, Tasklet};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, InFlight, LoomCpu, Seen};
use loom::cell::UnsafeCell;
use std::mem::ManuallyDrop;

/// Capacity 3 (the ring keeps one slot empty); the model pushes 2.
const N: usize = 4;

struct Ctx {
    /// The tasklet's private state (its run count): only its serialized
    /// runs touch it, so two runs without a happens-before edge between
    /// them are a causality violation.
    runs: UnsafeCell<u32>,
    in_flight: InFlight,
    popped: Seen,
}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    // `ManuallyDrop`: a mailbox's `Drop` uses loom operations, and when a
    // model fails loom drops its lazy statics outside the model.
    static ref MB: ManuallyDrop<Mailbox<u32, N>> = ManuallyDrop::new(Mailbox::new());
    static ref RX_TASKLET: Tasklet = Tasklet::new(&*RT, rx_bottom_half);
    static ref CTX: Ctx = Ctx {
        runs: UnsafeCell::new(0),
        in_flight: InFlight::new(),
        popped: Seen::new(),
    };
}

/// The tasklet: take the consumer end, pop until empty, give it back.
fn rx_bottom_half() {
    CTX.in_flight.enter("mailbox tasklet");
    // SAFETY (model): only this tasklet's runs touch `runs`, and they never
    // overlap; loom checks it.
    CTX.runs.with_mut(|n| unsafe { *n += 1 });
    let mut rx = MB
        .take_consumer()
        .expect("runs never overlap, so the consumer end is free");
    while let Some(item) = rx.pop() {
        CTX.popped.record(item);
    }
    drop(rx);
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
        let mut tx = MB.take_producer().unwrap();

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
        assert!(MB.take_consumer().unwrap().is_empty());
    });
}
