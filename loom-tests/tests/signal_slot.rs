//! loom model: the signal slot protocol (`src/sigslot.rs`) with the
//! signal handler as a modelled thread. The real handler cannot run under
//! loom, so the model drives the same `SlotState` the handler and
//! install/uninstall share: the kernel's routing is a loom atomic
//! (`ROUTED_TO_US`), the slot's data a loom cell.
//!
//! Checks: uninstall never returns while a handler still reads the data
//! (a causality violation on the cell, and the `READING` flag), and every
//! signal is handled by the top half, passed on (Gone), or taken by the
//! previous disposition: none is lost. And a handler runs only its own
//! installation (issue 8 review): a late registry action, one orphaned by
//! a fork child's reset, or the exclusive handler finding a shared
//! installation, never reads the data of an installation that is not
//! theirs (the `sigslot_ident_ignored` mutant makes them do so).

#![cfg(bottomhalf_loom)]

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

/// The identity tags of the two modes (as in the signal backend).
const SHARED: bool = true;
const EXCLUSIVE: bool = false;

fn install() {
    install_as(7, EXCLUSIVE);
}

/// Installs data `value` with identity tag `tag`; returns the identity.
fn install_as(value: u32, tag: bool) -> u32 {
    assert!(
        CTX.slot.claim(),
        "install of {value}: the slot was not free"
    );
    // SAFETY (model): we won `claim`; loom checks the edge to readers.
    CTX.data.with_mut(|p| unsafe { *p = value });
    let ident = CTX.slot.publish(tag);
    CTX.routed_to_us.store(true, Ordering::SeqCst);
    ident
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
    match CTX.slot.enter_tagged(EXCLUSIVE) {
        LoomSigSlotEntered::Active => {
            READING.fetch_add(1, S);
            // SAFETY (model): Active until `leave`.
            let v = CTX.data.with(|p| unsafe { *p });
            assert_eq!(v, 7, "handler read data that was not published");
            READING.fetch_sub(1, S);
            HANDLED.fetch_add(1, S);
            CTX.slot.leave();
        }
        LoomSigSlotEntered::Gone | LoomSigSlotEntered::Other => {
            CTX.slot.leave();
            FORWARDED.fetch_add(1, S);
        }
    }
}

/// A handler that belongs to one installation (`enter` is
/// `enter_exact(ident)` or `enter_tagged(tag)`), already called (a
/// registry action the registry is running, a late exclusive frame): if
/// it enters, it must read its own installation's data, `expect`.
fn deliver_to(enter: impl FnOnce() -> LoomSigSlotEntered, expect: u32) {
    match enter() {
        LoomSigSlotEntered::Active => {
            // SAFETY (model): Active until `leave`.
            let v = CTX.data.with(|p| unsafe { *p });
            assert_eq!(v, expect, "a handler ran another installation's data");
            HANDLED.fetch_add(1, S);
            CTX.slot.leave();
        }
        LoomSigSlotEntered::Gone | LoomSigSlotEntered::Other => {
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

/// A registry action of installation 1 that the registry is still running
/// while installation 1 is uninstalled and installation 2 published: it
/// runs installation 1 or nothing, never installation 2.
#[test]
fn a_late_action_never_runs_the_next_installation() {
    let _serial = serial();
    model(|| {
        reset();
        let _ = &*CTX;
        let first = install_as(7, SHARED);
        let late = loom::thread::spawn(move || deliver_to(|| CTX.slot.enter_exact(first), 7));
        uninstall();
        let second = install_as(8, SHARED);
        assert_ne!(first, second);
        late.join().unwrap();
        assert_eq!(HANDLED.load(S) + FORWARDED.load(S), 1);
        uninstall();
    });
}

/// A fork child's reset (`reset_after_fork`: another thread was between
/// registering the action and returning) leaves that action registered
/// and the slot empty; the child installs again. The orphan and the new
/// action run concurrently with an uninstall: the orphan never runs the
/// new installation, the new action runs it or nothing.
#[test]
fn an_action_orphaned_by_a_fork_reset_never_runs() {
    let _serial = serial();
    model(|| {
        reset();
        let _ = &*CTX;
        let orphan = install_as(7, SHARED);
        // The child: one thread, no handler inside.
        assert_eq!(CTX.slot.reset_after_fork(true), 0);
        let mine = install_as(8, SHARED);
        let a = loom::thread::spawn(move || deliver_to(|| CTX.slot.enter_exact(orphan), 7));
        let b = loom::thread::spawn(move || deliver_to(|| CTX.slot.enter_exact(mine), 8));
        uninstall();
        a.join().unwrap();
        b.join().unwrap();
        assert!(HANDLED.load(S) <= 1, "the orphaned action ran");
        assert_eq!(HANDLED.load(S) + FORWARDED.load(S), 2);
    });
}

/// A late frame of the exclusive handler (or a call from a handler that
/// chains to it) while an exclusive installation is replaced by a shared
/// one: it runs the exclusive installation or nothing, never the shared
/// one (the registry's action runs that).
#[test]
fn the_exclusive_handler_never_runs_a_shared_installation() {
    let _serial = serial();
    model(|| {
        reset();
        let _ = &*CTX;
        install_as(7, EXCLUSIVE);
        let late = loom::thread::spawn(|| deliver_to(|| CTX.slot.enter_tagged(EXCLUSIVE), 7));
        uninstall();
        install_as(8, SHARED);
        late.join().unwrap();
        assert_eq!(HANDLED.load(S) + FORWARDED.load(S), 1);
        uninstall();
    });
}
