//! loom models: the ends of the single-producer `Mailbox`
//! (`take_producer`, `take_consumer`, `split`) and its ring.
//!
//! An end is out from a successful take until its handle is dropped. Two
//! properties rest on the `producer_out` / `consumer_out` flags:
//!
//! - **At most one handle of each end is alive.** The take is one
//!   compare-and-swap `false → true`: of two contexts that race for a free
//!   end, exactly one wins. This needs no ordering at all (the RMWs on one
//!   flag are totally ordered), so the mutant for it is a behavioural
//!   one: `mailbox_take_load_store` replaces the CAS with a load and a
//!   store, which both racers can pass. (A first version used `swap(true)`,
//!   whose refused takes write `true` back. That is correct in the C++
//!   model, where an RMW reads the value just before its own write, but
//!   loom 0.7 let a refused swap read the winner's `true` and land after
//!   the winner's give-back, leaving the end out for good, and a spinning
//!   taker never saw the give-back. A CAS that fails writes nothing, so
//!   the question does not arise; it is also cheaper for the refused
//!   taker.)
//! - **A handle taken after another was dropped continues where it
//!   stopped.** Each handle reads its own index (`tail` for the producer,
//!   `head` for the consumer) with `Relaxed`, since only the end's holder
//!   stores it; when the end moves to another context, the Release store
//!   in the old handle's `Drop` and the Acquire swap in the take order the
//!   old handle's last index store (and its slot write or read) before the
//!   new handle's loads. `mailbox_handoff_relaxed` weakens both to
//!   `Relaxed`: a new producer may read a stale `tail` and write a slot
//!   the old one wrote (a causality violation on the slot, or an item
//!   lost), a new consumer a stale `head` and pop an item twice.
//!
//! The ring itself (a Lamport queue: `tail` published with Release,
//! `head` given back with Release) is a loom-visible ring of this crate's
//! own; `ring_reuses_slots_in_order` wraps it and catches the four
//! `spsc_*_relaxed` mutants.
//!
//! See `README.md` ("mailbox_ends").

#![cfg(bottomhalf_loom)]

use bottomhalf::{Mailbox, Producer};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{model, Seen};
use loom::cell::UnsafeCell;
use loom::thread;
use std::mem::ManuallyDrop;

/// Capacity 1: every push after the first reuses a slot.
const N: usize = 2;
/// Capacity 3: two items fit, so the hand-off models never see "full".
const WIDE: usize = 4;

struct Ctx {
    /// Top-half data of item `i`: written (loom cell) by its producer
    /// before `push(i)`, read by whoever pops `i`. Without a happens-before
    /// edge from the push to the pop this is a causality violation.
    data: [UnsafeCell<u32>; 4],
    /// Items popped (each at most once).
    popped: Seen,
}

loom::lazy_static! {
    // `ManuallyDrop`: a mailbox's `Drop` touches loom cells, and when a
    // model fails loom drops its lazy statics outside the model, which
    // would turn the failure into an abort without a message.
    static ref NARROW: ManuallyDrop<Mailbox<u32, N>> = ManuallyDrop::new(Mailbox::new());
    static ref MB: ManuallyDrop<Mailbox<u32, WIDE>> = ManuallyDrop::new(Mailbox::new());
    static ref CTX: Ctx = Ctx {
        data: [
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
        ],
        popped: Seen::new(),
    };
}

/// Writes item `i`'s data, then pushes `i` through `tx`.
fn produce<const M: usize>(tx: &mut Producer<'static, u32, M>, i: u32) {
    // SAFETY (model): only item i's producer writes data[i], before its
    // push; loom checks that the consumer's read is ordered after it.
    CTX.data[i as usize].with_mut(|p| unsafe { *p = 100 + i });
    tx.push(i).expect("room");
}

/// Records a popped item and checks its data.
fn consume(i: u32) {
    CTX.popped.record(i);
    // SAFETY (model): as in `produce`.
    let d = CTX.data[i as usize].with(|p| unsafe { *p });
    assert_eq!(d, 100 + i, "item {i} popped before its data was visible");
}

fn touch() {
    let _ = (&**NARROW, &**MB, &*CTX);
}

/// Two contexts race for the producer end of a fresh mailbox (an interrupt
/// handler taking its end on first use, and another context); a third
/// pops meanwhile. Exactly one take wins, and the winner's push reaches
/// the consumer exactly once with its data; the loser gets `None`.
#[test]
fn racing_takes_of_the_producer_one_wins() {
    model(|| {
        touch();
        let racer = |i: u32| {
            move || {
                let mut tx = MB.take_producer()?;
                produce(&mut tx, i);
                Some(tx) // kept: the end stays out until after the join
            }
        };
        let a = thread::spawn(racer(0));
        let b = thread::spawn(racer(1));
        let c = thread::spawn(|| {
            let mut rx = MB.take_consumer().expect("the only consumer");
            while let Some(i) = rx.pop() {
                consume(i);
            }
        });
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        c.join().unwrap();
        assert_eq!(
            usize::from(a.is_some()) + usize::from(b.is_some()),
            1,
            "both or neither of two racing takes won the producer end"
        );
        assert!(MB.take_producer().is_none(), "the winner still holds it");
        let mut rx = MB.take_consumer().expect("the consumer was dropped");
        while let Some(i) = rx.pop() {
            consume(i);
        }
        let winner = if a.is_some() { 0b01 } else { 0b10 };
        assert_eq!(CTX.popped.mask(), winner, "the winner's push was lost");
    });
}

/// The producer end moves between two contexts: each tries once to take
/// it (a context that finds it out gets `None` and pushes nothing), pushes
/// its item and drops the handle. A taker that comes after the other's
/// drop must push into the slot after the other's: every pushed item
/// arrives once, with its data. (The takes do not spin until they win:
/// trying once explores the take after the drop, which is the case the
/// hand-off ordering guards, with far fewer executions.)
#[test]
fn producer_end_handed_between_contexts() {
    model(|| {
        touch();
        let producer = |i: u32| {
            move || match MB.take_producer() {
                Some(mut tx) => {
                    produce(&mut tx, i);
                    1 << i
                }
                None => 0,
            }
        };
        let a = thread::spawn(producer(0));
        let b = thread::spawn(producer(1));
        let pushed = a.join().unwrap() | b.join().unwrap();
        assert_ne!(pushed, 0, "neither context got the free producer end");
        let mut rx = MB.take_consumer().unwrap();
        while let Some(i) = rx.pop() {
            consume(i);
        }
        assert_eq!(CTX.popped.mask(), pushed, "a pushed item was lost");
        assert_eq!(MB.dropped(), 0);
    });
}

/// The consumer end moves between two contexts (a tasklet that takes it
/// on each run, its runs on two CPUs): each tries once to take it, pops
/// once and drops the handle. No item is popped twice, and a last taker
/// pops the items left.
#[test]
fn consumer_end_handed_between_contexts() {
    model(|| {
        touch();
        let mut tx = MB.take_producer().unwrap();
        produce(&mut tx, 0);
        produce(&mut tx, 1);
        let consumer = || {
            if let Some(mut rx) = MB.take_consumer() {
                if let Some(i) = rx.pop() {
                    consume(i);
                }
            }
        };
        let a = thread::spawn(consumer);
        let b = thread::spawn(consumer);
        a.join().unwrap();
        b.join().unwrap();
        let mut rx = MB.take_consumer().unwrap();
        while let Some(i) = rx.pop() {
            consume(i);
        }
        assert_eq!(CTX.popped.mask(), 0b11, "an item was not popped");
    });
}

/// The ring on its own, wrapped: a producer pushes three items through a
/// one-item ring (retrying while full), a consumer pops them. Every slot
/// is reused, so each item's data and each slot's reuse need the ring's
/// Release/Acquire pairs.
#[test]
fn ring_reuses_slots_in_order() {
    model(|| {
        touch();
        let (mut tx, mut rx) = NARROW.split().unwrap();
        let p = thread::spawn(move || {
            for i in 0..3 {
                // SAFETY (model): as in `produce`.
                CTX.data[i as usize].with_mut(|p| unsafe { *p = 100 + i });
                let mut item = i;
                while let Err(back) = tx.try_push(item) {
                    item = back;
                    thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            match rx.pop() {
                Some(i) => {
                    assert_eq!(i, next, "out of order");
                    consume(i);
                    next += 1;
                }
                None => thread::yield_now(),
            }
        }
        p.join().unwrap();
        assert_eq!(NARROW.dropped(), 0);
        assert!(rx.pop().is_none());
    });
}
