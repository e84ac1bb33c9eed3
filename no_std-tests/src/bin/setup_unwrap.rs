//! The set-up of `src/setup_errors.rs` with `.unwrap()`, as the crate's
//! doc examples write it: each error type's `Debug` impl and core's
//! `unwrap_failed` formatting path are linked in. Compare its `.text`
//! with `setup_match` (README: "Errors in firmware").

#![no_std]
#![no_main]

include!("../setup_errors.rs");

const NAME: &str = "setup_unwrap";

fn setup() -> Vector {
    let tick = Vector::try_new(TICK_INDEX.load(Ordering::Relaxed) as usize).unwrap();
    RT.register(tick, "TICK", on_tick).unwrap();
    assert!(RT.register(Vector::TASKLET, "mine", on_tick).is_err());
    RX_BH.try_schedule().unwrap();
    // Take (and give back) the consumer: fails if another context holds it.
    drop(RX.consumer().unwrap());
    tick
}
