//! The set-up of `src/setup_errors.rs` without `.unwrap()`: each error is
//! matched to a fixed message (`if let Err(e) = .. { fail(msg(e)) }`), so
//! no `Debug` impl and no formatting is linked in. Compare its `.text`
//! with `setup_unwrap` (README: "Errors in firmware"). A refused
//! registration is reported the same way, and the firmware goes on.

#![no_std]
#![no_main]

include!("../setup_errors.rs");

use bottomhalf::{MailboxError, RegisterError, TaskletKilled, VectorError};

const NAME: &str = "setup_match";

fn fail(what: &str) -> ! {
    say(&["FAIL: setup: ", what]);
    exit(false)
}

fn setup() -> Vector {
    let tick = match Vector::try_new(TICK_INDEX.load(Ordering::Relaxed) as usize) {
        Ok(v) => v,
        Err(e) => fail(vector_msg(e)),
    };
    if let Err(e) = RT.register(tick, "TICK", on_tick) {
        fail(register_msg(e));
    }
    // A refusal the firmware survives: reported, and the rest still runs.
    if let Err(e) = RT.register(Vector::TASKLET, "mine", on_tick) {
        say(&["setup_match: refused as expected: ", register_msg(e)]);
    }
    if let Err(e) = RX_BH.try_schedule() {
        fail(tasklet_msg(e));
    }
    // Take (and give back) the consumer: fails if another context holds it.
    match RX.consumer() {
        Ok(c) => drop(c),
        Err(e) => fail(mailbox_msg(e)),
    }
    tick
}

/// The set-up's error types, each to a fixed message: what a firmware
/// without `core::fmt` (or with `defmt`) prints instead of `Debug`.
fn register_msg(e: RegisterError) -> &'static str {
    match e {
        RegisterError::Reserved(_) => "softirq vector reserved for tasklets",
        RegisterError::AlreadyRegistered(_) => "softirq vector already has a handler",
        RegisterError::InTable(_) => "softirq vector has a handler in the board's table",
        // The error enums are `#[non_exhaustive]`: a later version may add
        // a reason.
        _ => "softirq vector refused",
    }
}

fn mailbox_msg(e: MailboxError) -> &'static str {
    match e {
        MailboxError::AlreadySplit => "mailbox already split",
        MailboxError::ConsumerTaken => "mailbox consumer already taken",
        _ => "mailbox refused",
    }
}

fn vector_msg(e: VectorError) -> &'static str {
    match e {
        VectorError::OutOfRange { .. } => "softirq vector index out of range",
        VectorError::Reserved { .. } => "softirq vector 0 or 6 (tasklets)",
        _ => "softirq vector refused",
    }
}

fn tasklet_msg(_: TaskletKilled) -> &'static str {
    "tasklet killed"
}
