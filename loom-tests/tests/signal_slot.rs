//! loom model: the signal slot protocol (`src/sigslot.rs`) with the
//! signal handler as a modelled thread. The real handler cannot run under
//! loom, so the model drives the same `SlotState` the handler and
//! install/uninstall share: the kernel's routing is a loom atomic
//! (`ROUTED_TO_US`), the slot's data a loom cell.
//!
//! Checks: uninstall never returns while a handler still reads the data
//! (a causality violation on the cell, and the `READING` flag), and every
//! signal is handled by the top half, passed on (Gone), or taken by the
//! previous disposition: none is lost.

#![cfg(loom)]

use std::sync::atomic::AtomicU32 as StdU32;
use std::sync::atomic::Ordering::SeqCst as S;

use bottomhalf::{LoomSigSlot, LoomSigSlotEntered};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::model;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};

struct Ctx {
    slot: LoomSigSlot,
    /// The config the handler reads while ACTIVE; uninstall rewrites it
    /// (as the next install would) after `wait_idle`.
    data: UnsafeCell<u32>,
    /// The kernel routes the signal to our handler (true) or to the
    /// previous disposition (false).
    routed_to_us: AtomicBool,
}

loom::lazy_static! {
    static ref CTX: Ctx = Ctx {
        slot: LoomSigSlot::new(),
        data: UnsafeCell::new(0),
        routed_to_us: AtomicBool::new(false),
    };
}

/// Bookkeeping (std atomics: a global clock, no synchronisation).
static HANDLED: StdU32 = StdU32::new(0);
static FORWARDED: StdU32 = StdU32::new(0);
static PREVIOUS: StdU32 = StdU32::new(0);
static READING: StdU32 = StdU32::new(0);

/// The bookkeeping above is shared by the tests of this file, which the
/// harness runs on parallel threads: each test holds this lock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn reset() {
    for c in [&HANDLED, &FORWARDED, &PREVIOUS, &READING] {
        c.store(0, S);
    }
}

fn install() {
    assert!(CTX.slot.claim());
    // SAFETY (model): we won `claim`; loom checks the edge to readers.
    CTX.data.with_mut(|p| unsafe { *p = 7 });
    CTX.slot.publish();
    CTX.routed_to_us.store(true, Ordering::SeqCst);
}

fn uninstall() {
    // Restore the previous disposition first, then the slot protocol.
    CTX.routed_to_us.store(false, Ordering::SeqCst);
    CTX.slot.begin_remove();
    CTX.slot.wait_idle();
    assert_eq!(
        READING.load(S),
        0,
        "uninstall returned while a handler reads"
    );
    // The next install rewrites the data: a handler still reading it is a
    // causality violation.
    // SAFETY (model): the protocol says no handler reads it now.
    CTX.data.with_mut(|p| unsafe { *p = 0 });
    CTX.slot.finish_remove();
}

/// One signal delivery: the kernel picks the disposition, then the
/// handler runs (it may be preempted anywhere, like a delayed frame).
fn deliver() {
    if !CTX.routed_to_us.load(Ordering::SeqCst) {
        PREVIOUS.fetch_add(1, S);
        return;
    }
    match CTX.slot.enter() {
        LoomSigSlotEntered::Active => {
            READING.fetch_add(1, S);
            // SAFETY (model): Active until `leave`.
            let v = CTX.data.with(|p| unsafe { *p });
            assert_eq!(v, 7, "handler read data that was not published");
            READING.fetch_sub(1, S);
            HANDLED.fetch_add(1, S);
            CTX.slot.leave();
        }
        LoomSigSlotEntered::Gone => {
            CTX.slot.leave();
            FORWARDED.fetch_add(1, S);
        }
    }
}

#[test]
fn uninstall_waits_for_the_handler_and_nothing_is_lost() {
    let _serial = serial();
    model(|| {
        reset();
        let _ = &*CTX;
        install();
        let h = loom::thread::spawn(deliver);
        uninstall();
        h.join().unwrap();
        let total = HANDLED.load(S) + FORWARDED.load(S) + PREVIOUS.load(S);
        assert_eq!(total, 1, "a signal was lost or counted twice");
    });
}

#[test]
fn two_handlers_and_a_reinstall() {
    let _serial = serial();
    model(|| {
        reset();
        let _ = &*CTX;
        install();
        let a = loom::thread::spawn(deliver);
        let b = loom::thread::spawn(deliver);
        uninstall();
        install();
        a.join().unwrap();
        b.join().unwrap();
        let total = HANDLED.load(S) + FORWARDED.load(S) + PREVIOUS.load(S);
        assert_eq!(total, 2, "a signal was lost or counted twice");
        uninstall();
    });
}
