//! loom model: `PidSet` (`src/pidset.rs`), the run-time sender filter the
//! signal handler reads (`Accept::pid_set`). The handler is a modelled
//! thread that calls `contains`, as the real one does; the program's
//! threads call `insert` and `remove`.
//!
//! Checks: a handler that finds a pid sees what the program wrote before
//! the `insert` that added it (a loom cell: a missing Release/Acquire is a
//! causality violation); a handler ordered after a `remove` never finds
//! the pid; concurrent inserts and removes keep membership exact (no pid
//! lost, none resurrected, a duplicate insert cleared by one `remove`);
//! `Full` only when every slot holds another pid.

#![cfg(bottomhalf_loom)]

use bottomhalf::{PidSet, PidSetError};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::model;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};

struct Ctx {
    set: PidSet<2>,
    /// What the program records about a child before it trusts its pid.
    record: UnsafeCell<u32>,
    /// The program's "the handler may look now" flag (a happens-before
    /// edge of the program's own, as a signal's delivery would be).
    removed: AtomicBool,
}

loom::lazy_static! {
    static ref CTX: Ctx = Ctx {
        set: PidSet::new(),
        record: UnsafeCell::new(0),
        removed: AtomicBool::new(false),
    };
    static ref ONE: PidSet<1> = PidSet::new();
}

const CHILD: i32 = 100;
const OTHER: i32 = 200;

/// The handler's view: if the child is accepted, its record is there.
fn handler_reads_record() -> bool {
    if CTX.set.contains(CHILD) {
        // SAFETY (model): the Acquire in `contains` pairs with the
        // Release of the `insert` that added CHILD; loom checks the edge.
        let r = CTX.record.with(|p| unsafe { *p });
        assert_eq!(r, 42, "the handler accepted the child before its record");
        true
    } else {
        false
    }
}

/// The program writes the child's record, then inserts its pid (into the
/// second slot: the first holds OTHER, so the insert's scan passes a full
/// slot first); the handler runs concurrently, twice.
#[test]
fn a_handler_that_finds_a_pid_sees_what_was_written_before_insert() {
    model(|| {
        assert_eq!(CTX.set.insert(OTHER), Ok(true));
        let program = loom::thread::spawn(|| {
            // SAFETY (model): only this thread writes the record.
            CTX.record.with_mut(|p| unsafe { *p = 42 });
            assert_eq!(CTX.set.insert(CHILD), Ok(true));
        });
        let handler = loom::thread::spawn(|| {
            let first = handler_reads_record();
            let second = handler_reads_record();
            assert!(!first || second, "the child was accepted, then lost");
        });
        program.join().unwrap();
        handler.join().unwrap();
        assert!(CTX.set.contains(CHILD) && CTX.set.contains(OTHER));
    });
}

/// A handler that the program's own edge orders after `remove` rejects
/// the pid; one that is not ordered may see either.
#[test]
fn a_handler_ordered_after_remove_rejects_the_pid() {
    model(|| {
        assert_eq!(CTX.set.insert(CHILD), Ok(true));
        let program = loom::thread::spawn(|| {
            assert!(CTX.set.remove(CHILD));
            CTX.removed.store(true, Ordering::Release);
        });
        let handler = loom::thread::spawn(|| {
            if CTX.removed.load(Ordering::Acquire) {
                assert!(!CTX.set.contains(CHILD), "a removed pid was accepted");
            }
        });
        program.join().unwrap();
        handler.join().unwrap();
        assert!(CTX.set.is_empty());
    });
}

/// One thread inserts and removes its pid while another inserts its own
/// and a handler looks: no pid lost, none resurrected.
#[test]
fn concurrent_insert_and_remove_keep_membership() {
    model(|| {
        let _ = &CTX.set;
        let t1 = loom::thread::spawn(|| {
            assert_eq!(CTX.set.insert(OTHER), Ok(true));
            assert!(CTX.set.remove(OTHER));
        });
        let t2 = loom::thread::spawn(|| {
            // At most one slot is OTHER's: never Full.
            assert_eq!(CTX.set.insert(CHILD), Ok(true));
            assert!(CTX.set.contains(CHILD), "its own insert is not seen");
        });
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(CTX.set.contains(CHILD), "an inserted pid was lost");
        assert!(!CTX.set.contains(OTHER), "a removed pid came back");
        assert_eq!(CTX.set.len(), 1);
    });
}

/// The same pid inserted by two threads at once may take two slots; one
/// `remove` clears both.
#[test]
fn a_pid_inserted_twice_at_once_is_removed_once() {
    model(|| {
        let _ = &CTX.set;
        let a = loom::thread::spawn(|| CTX.set.insert(CHILD));
        let b = loom::thread::spawn(|| CTX.set.insert(CHILD));
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        assert!(
            ra == Ok(true) || rb == Ok(true),
            "neither insert added it: {ra:?} {rb:?}"
        );
        assert!(CTX.set.contains(CHILD));
        assert!(CTX.set.remove(CHILD));
        assert!(!CTX.set.contains(CHILD), "a duplicate slot survived remove");
        assert!(CTX.set.is_empty());
    });
}

/// Capacity one, two inserters: exactly one wins, the other is told Full.
#[test]
fn full_only_when_every_slot_holds_another_pid() {
    model(|| {
        let _ = &*ONE;
        let a = loom::thread::spawn(|| ONE.insert(CHILD));
        let b = loom::thread::spawn(|| ONE.insert(OTHER));
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        let full = Err(PidSetError::Full { capacity: 1 });
        match (ra, rb) {
            (Ok(true), r) => {
                assert_eq!(r, full);
                assert!(ONE.contains(CHILD) && !ONE.contains(OTHER));
            }
            (r, Ok(true)) => {
                assert_eq!(r, full);
                assert!(ONE.contains(OTHER) && !ONE.contains(CHILD));
            }
            other => panic!("no insert won: {other:?}"),
        }
    });
}
