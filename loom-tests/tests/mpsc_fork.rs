//! loom models: an `MpscMailbox` in a child of `fork()` (`src/mailbox.rs`,
//! "fork()" on `MpscMailbox`): the child's producers record the fork's next
//! ticket and are gated behind that record, the child's first consumer
//! steps over the tickets a parent producer never published, and a
//! consumer handle of the parent either re-adopts the token or is dead.
//!
//! A fork is modelled as in `fork.rs`: the main thread leaves the mailbox
//! as the parent's threads leave it at the fork (an item published, a
//! ticket reserved and never published, a consumer handle that is never
//! dropped), then sets the fork generation as the child handler does, then
//! spawns the child's threads. In their own test binary, one at a time
//! (`SERIAL`): the fork generation is process-wide, and each execution sets
//! it to 0 for the parent's part and to `GEN` for the child's.
//!
//! See `README.md` ("mpsc_fork").

#![cfg(bottomhalf_loom)]

use bottomhalf::{MailboxError, MpscMailbox};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{model, Seen};
use loom::cell::UnsafeCell;
use loom::thread;
use std::mem::ManuallyDrop;

use bottomhalf::__loom_fork as fork;

/// The child's fork generation (the parent's is 0).
const GEN: u32 = 1;

/// Serializes the models of this binary (they set the fork generation).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Ctx {
    /// Top-half data of item `i`, written (loom cell) before `push(i)`.
    data: [UnsafeCell<u32>; 4],
    popped: Seen,
    refused: Seen,
}

loom::lazy_static! {
    // `ManuallyDrop`: as in `mpsc.rs`.
    static ref MB2: ManuallyDrop<MpscMailbox<u32, 2>> = ManuallyDrop::new(MpscMailbox::new());
    static ref MB4: ManuallyDrop<MpscMailbox<u32, 4>> = ManuallyDrop::new(MpscMailbox::new());
    static ref CTX: Ctx = Ctx {
        data: [
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
            UnsafeCell::new(0),
        ],
        popped: Seen::new(),
        refused: Seen::new(),
    };
}

fn produce<const N: usize>(mb: &MpscMailbox<u32, N>, i: u32) -> bool {
    // SAFETY (model): only item i's producer writes data[i], before its
    // push; loom checks the consumer's read is ordered after it.
    CTX.data[i as usize].with_mut(|p| unsafe { *p = 100 + i });
    match mb.push(i) {
        Ok(()) => true,
        Err(back) => {
            assert_eq!(back, i);
            CTX.refused.record(i);
            false
        }
    }
}

fn record_pop(item: u32) {
    // SAFETY (model): data[item] was written before it was pushed.
    let d = CTX.data[item as usize].with(|p| unsafe { *p });
    assert_eq!(d, 100 + item, "item {item} popped without its data");
    CTX.popped.record(item);
}

/// Pops until empty with a handle taken now (the child's consumer).
fn drain<const N: usize>(mb: &MpscMailbox<u32, N>) {
    let mut rx = mb
        .consumer()
        .expect("the parent's handle does not block the child's");
    while let Some(item) = rx.pop() {
        record_pop(item);
    }
}

/// The parent at the fork: item 0 published, one ticket reserved by a
/// producer the child does not have, and a consumer handle held by a
/// parent thread (never dropped).
fn parent_state<const N: usize>(mb: &'static MpscMailbox<u32, N>) {
    let _ = &*CTX;
    fork::set_generation(0);
    assert!(produce(mb, 0));
    assert!(mb.__loom_reserve_unpublished());
    std::mem::forget(mb.consumer().unwrap());
    fork::set_generation(GEN);
}

/// Every item is popped once or refused; the dead ticket is counted as
/// dropped; nothing stays queued or reserved.
fn check_accounting<const N: usize>(mb: &MpscMailbox<u32, N>, items: u32) {
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
    assert_eq!(
        mb.dropped(),
        refused.count_ones() + 1,
        "dropped = refused pushes + the parent's unpublished ticket"
    );
    assert!(mb.is_empty(), "{} slots still used", mb.len());
}

/// Capacity 4: a child producer draws tickets 2 and 3 while the child's
/// consumer takes the token and repairs, both racing to write the fork
/// record. Neither child ticket is stepped over (its item is
/// popped, with its data), the parent's is, exactly once.
#[test]
fn child_producers_race_the_repair() {
    let _serial = serial();
    model(|| {
        parent_state(&MB4);
        let p = thread::spawn(|| {
            assert!(produce(&MB4, 1), "push 1 refused with room left");
            assert!(produce(&MB4, 2), "push 2 refused with room left");
        });
        let c = thread::spawn(|| drain(&MB4));
        p.join().unwrap();
        c.join().unwrap();
        drain(&MB4);
        check_accounting(&MB4, 3);
    });
}

/// Capacity 2, full at the fork: a child producer gets room only once the
/// consumer has popped item 0 or stepped over the parent's ticket, and
/// then reuses that slot while the consumer goes on (loom checks the slot
/// cells): the skip gives the slot back, and a reused slot is never taken
/// for a skip.
#[test]
fn a_stepped_over_slot_is_reused() {
    let _serial = serial();
    model(|| {
        parent_state(&MB2);
        let p = thread::spawn(|| {
            produce(&MB2, 1);
            produce(&MB2, 2);
        });
        let c = thread::spawn(|| drain(&MB2));
        p.join().unwrap();
        c.join().unwrap();
        drain(&MB2);
        check_accounting(&MB2, 3);
    });
}

/// The forking thread's own handle (taken before the fork) and a handle
/// taken by a child thread race for the token: exactly one of them pops
/// item 0 (loom checks that the two never touch `head` at once), a dead
/// handle pops nothing, and the token is free once both are dropped.
#[test]
fn the_forking_threads_handle_races_a_new_one() {
    let _serial = serial();
    model(|| {
        let _ = &*CTX;
        fork::set_generation(0);
        assert!(produce(&MB4, 0));
        let mut own = MB4.consumer().unwrap();
        fork::set_generation(GEN);
        let t = thread::spawn(|| match MB4.consumer() {
            Ok(mut rx) => rx.pop().inspect(|&i| record_pop(i)).is_some(),
            Err(e) => {
                assert_eq!(e, MailboxError::ConsumerTaken);
                false
            }
        });
        let mine = own.pop().inspect(|&i| record_pop(i)).is_some();
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs, "item 0 popped by {mine} / {theirs}");
        drop(own);
        assert!(MB4.consumer().is_ok(), "the token stayed taken");
        assert_eq!(MB4.dropped(), 0);
    });
}
