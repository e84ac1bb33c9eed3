//! loom model: publishing a run-time registered handler and its context.
//!
//! A vector slot goes EMPTY → WRITING → READY (`Runtime::register`,
//! `register_with`); the Release store of READY publishes the slot's name,
//! callback and context, and the drain's Acquire load of the state
//! (`VectorSlot::get`) reads them only after seeing READY. This model
//! registers a handler with a context on one thread while another raises
//! and drains on the same CPU: the drain either finds the slot READY and
//! runs the handler, which must see the context's data written before
//! `register_with`, or finds it not READY and counts the raise as
//! unhandled; never both, never a torn slot.
//!
//! Mutant `slot_ready_relaxed` (both sides of the READY hand-off Relaxed)
//! must be caught: causality violation on the slot's callback cell or on
//! the context's data.

#![cfg(bottomhalf_loom)]

use bottomhalf::{Config, Runtime, Vector};
use bottomhalf_loom_tests::loom;
use bottomhalf_loom_tests::{bind_cpu, model, spawn_on, Count, LoomCpu};
use loom::cell::UnsafeCell;

const V: Vector = Vector::new(5);

/// A device instance, the handler's context.
struct Dev {
    /// Written once by the registering thread before `register_with`.
    data: UnsafeCell<u32>,
    runs: Count,
}

// SAFETY (model): `data` is written once before the handler is published
// and only read afterwards; loom checks the happens-before edge.
unsafe impl Sync for Dev {}

loom::lazy_static! {
    static ref RT: Runtime<LoomCpu, 1> = Runtime::new(Config::DEFAULT);
    static ref DEV: Dev = Dev {
        data: UnsafeCell::new(0),
        runs: Count::new(),
    };
}

fn on_dev(dev: &'static Dev, cpu: usize) {
    assert_eq!(cpu, 0);
    // SAFETY (model): written before `register_with`; loom checks the
    // edge through the slot's READY state.
    let v = dev.data.with(|p| unsafe { *p });
    assert_eq!(v, 7, "the handler ran without the context's data");
    dev.runs.inc();
}

#[test]
fn register_with_publishes_the_handler_and_its_context() {
    model(|| {
        bind_cpu(0);
        let dev: &'static Dev = &DEV;
        let r = spawn_on(0, move || {
            // SAFETY (model): the only write, before publishing.
            dev.data.with_mut(|p| unsafe { *p = 7 });
            RT.register_with(V, "DEV", dev, on_dev).unwrap();
        });
        let d = spawn_on(0, || {
            RT.raise(V);
            RT.drain()
        });
        r.join().unwrap();
        let outcome = d.join().unwrap();
        assert!(outcome.is_complete(), "{outcome:?}");
        let runs = DEV.runs.get() as u32;
        let unhandled = RT.stats().unhandled(0, V);
        assert_eq!(
            runs + unhandled,
            1,
            "the raise was both run and dropped, or neither"
        );
        assert_eq!(RT.vector_name(V), Some("DEV"));
        // After registration every raise runs.
        RT.raise(V);
        assert!(RT.drain().is_complete());
        assert_eq!(DEV.runs.get() as u32, runs + 1);
    });
}
