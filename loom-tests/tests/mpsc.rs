//! loom models: the multi-producer mailbox ring (`MpscMailbox`), this
//! crate's own, with two producers and one consumer.
//!
//! See `README.md` ("mpsc") for what each model checks and which mutants
//! it catches.

#![cfg(bottomhalf_loom)]

use bottomhalf::MpscMailbox;
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{model, Seen};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::thread;
use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::{Acquire, Release};

/// Capacity 2: the smallest ring in which a slot is reused while another
/// producer holds a reservation.
const N: usize = 2;

struct Ctx {
    /// Top-half data of item `i`: written (loom cell) by its producer
    /// before `push(i)`, read by whoever pops `i`. Without a happens-before
    /// edge from push to pop this is a causality violation.
    data: [UnsafeCell<u32>; 4],
    /// Items popped (each at most once).
    popped: Seen,
    /// Items whose `push` returned `Err` (each at most once).
    refused: Seen,
    /// `consumer_mid_pop`: set (Release) by the consumer after its pop
    /// returned, so a producer that sees it (Acquire) knows the popped
    /// slot's release happened before its own push.
    released: AtomicBool,
}

loom::lazy_static! {
    // `ManuallyDrop`: the mailbox's `Drop` pops with loom operations, and
    // when a model fails loom drops its lazy statics outside the model,
    // which would turn the failure into an abort without a message.
    static ref MB: ManuallyDrop<MpscMailbox<u32, N>> = ManuallyDrop::new(MpscMailbox::new());
    static ref CTX: Ctx = Ctx {
        data: [
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
        ],
        popped: Seen::new(),
        refused: Seen::new(),
        released: AtomicBool::new(false),
    };
}

/// A top half: writes item `i`'s data, pushes `i`, records a refusal.
fn produce(i: u32) -> bool {
    // SAFETY (model): only item i's producer writes data[i], before its
    // push; loom checks the consumer's read is ordered after it.
    CTX.data[i as usize].with_mut(|p| unsafe { *p = 100 + i });
    match MB.push(i) {
        Ok(()) => true,
        Err(back) => {
            assert_eq!(back, i, "push handed back a different item");
            CTX.refused.record(i);
            false
        }
    }
}

/// The bottom half: pops once; checks and records the item.
fn consume_one() -> Option<u32> {
    let mut rx = MB.consumer().expect("one consumer at a time");
    let item = rx.pop()?;
    // SAFETY (model): data[item] was written before it was pushed.
    let d = CTX.data[item as usize].with(|p| unsafe { *p });
    assert_eq!(d, 100 + item, "item {item} popped without its data");
    CTX.popped.record(item);
    Some(item)
}

fn drain_rest() {
    while consume_one().is_some() {}
}

fn set_up() {
    let _ = (&*MB, &*CTX);
}

/// Every item is popped exactly once or handed back by `push`, never both,
/// never neither; the drop counter agrees.
fn check_accounting(items: u32) {
    let all = (1u32 << items) - 1;
    let popped = CTX.popped.mask();
    let refused = CTX.refused.mask();
    assert_eq!(
        popped & refused,
        0,
        "popped and refused: {popped:#b} {refused:#b}"
    );
    assert_eq!(
        popped | refused,
        all,
        "lost: popped {popped:#b}, refused {refused:#b}"
    );
    assert_eq!(MB.dropped(), refused.count_ones(), "dropped counter");
    assert!(MB.is_empty());
}

/// Two producers (items 0; 1 and 2) and a consumer popping twice, capacity
/// 2, so slots are reused while producers may hold reservations or be
/// between their reservation and their ticket. Every item is popped exactly
/// once (by the consumer or the main thread afterwards) or refused; the
/// consumer sees what the producer wrote before `push`; a slot is written
/// only after the consumer has finished reading its previous item (loom
/// checks the slot cells).
#[test]
fn items_delivered_once_with_slot_reuse() {
    model(|| {
        set_up();
        let p1 = thread::spawn(|| {
            produce(0);
        });
        let p2 = thread::spawn(|| {
            produce(1);
            produce(2);
        });
        let c = thread::spawn(|| {
            consume_one();
            consume_one();
        });
        p1.join().unwrap();
        p2.join().unwrap();
        c.join().unwrap();
        drain_rest();
        check_accounting(3);
    });
}

/// No spurious full while a producer is preempted mid-push: two producers
/// push one item each into an empty ring of capacity 2 while the consumer
/// pops. Wherever either producer is preempted (before its reservation,
/// between reservation and ticket, before publishing), the other's push
/// succeeds: at most 2 items are ever queued or reserved.
#[test]
fn preempted_producer_does_not_fill_the_ring() {
    model(|| {
        set_up();
        let p1 = thread::spawn(|| assert!(produce(0), "push 0 refused with room left"));
        let p2 = thread::spawn(|| assert!(produce(1), "push 1 refused with room left"));
        let c = thread::spawn(|| {
            consume_one();
        });
        p1.join().unwrap();
        p2.join().unwrap();
        c.join().unwrap();
        drain_rest();
        check_accounting(2);
    });
}

/// No spurious full while the consumer is mid-pop: the ring holds item 0
/// (pushed before the threads start); the consumer pops it while two
/// producers push items 1 and 2. Three items into capacity 2, so one push
/// may be refused, but only while item 0's slot is really still taken: a
/// producer that knows the pop has finished (it saw the consumer's flag,
/// with Acquire, before pushing) must succeed, since the only other item
/// in flight is the other producer's.
#[test]
fn consumer_mid_pop_does_not_fill_the_ring() {
    model(|| {
        set_up();
        assert!(produce(0));
        let producer = |i: u32| {
            move || {
                let pop_done = CTX.released.load(Acquire);
                let ok = produce(i);
                assert!(
                    ok || !pop_done,
                    "push {i} refused after the pop freed a slot"
                );
            }
        };
        let p1 = thread::spawn(producer(1));
        let p2 = thread::spawn(producer(2));
        let c = thread::spawn(|| {
            assert_eq!(
                consume_one(),
                Some(0),
                "item 0 was published before the consumer started"
            );
            CTX.released.store(true, Release);
        });
        p1.join().unwrap();
        p2.join().unwrap();
        c.join().unwrap();
        drain_rest();
        check_accounting(3);
    });
}
