//! A `static` runtime built with `Config::DEFAULT` is all zero bytes, so
//! the compiler puts it in `.bss` (RAM only: nothing in the binary's file,
//! nothing copied from flash at boot on a firmware).
//!
//! The check asks the linker, not the bytes: reading a value's bytes would
//! read its padding, which is uninitialised to the compiler (undefined
//! behaviour, and not what decides the section anyway). rustc emits a
//! static's initializer as all zeros exactly when every initialised byte
//! is zero, and the linker then places it between `__bss_start` and
//! `_end` (both GNU ld and lld define these on Linux). A non-default
//! `Config` is the documented exception (`.data`); the test checks that
//! too, so it can tell the two apart.
//!
//! `scripts/bss-check.sh` checks the same with `nm` on a thumbv7m firmware
//! and a Linux binary with `Runtime<Signals, 256>`.

#![cfg(all(target_os = "linux", not(miri)))]

use bottomhalf::{Backend, Config, Handlers, Host, Runtime, Vector};

extern "C" {
    /// Start of `.bss` (defined by the linker).
    static __bss_start: u8;
    /// End of `.bss` (defined by the linker).
    static _end: u8;
}

fn section_of<T>(what: &T) -> &'static str {
    let addr = std::ptr::from_ref(what) as usize;
    let start = std::ptr::addr_of!(__bss_start) as usize;
    let end = std::ptr::addr_of!(_end) as usize;
    if (start..end).contains(&addr) && addr + size_of::<T>() <= end {
        ".bss"
    } else {
        "not .bss"
    }
}

static DEFAULT_RT: Runtime<Host, 4> = Runtime::new(Config::DEFAULT);
static TUNED_RT: Runtime<Host, 4> = Runtime::new(Config::DEFAULT.max_restart(3));

/// A backend with a constant handler table: the table is `.rodata`, the
/// runtime stays `.bss`.
struct Tabled;
impl Backend for Tabled {
    fn current_cpu() -> usize {
        0
    }
    fn now_ns() -> u64 {
        0
    }
    const HANDLERS: &'static Handlers = &Handlers::new().with(Vector::new(3), "NET_RX", |_cpu| {});
}
static TABLED_RT: Runtime<Tabled, 4> = Runtime::new(Config::DEFAULT);

#[test]
fn a_default_runtime_is_in_bss() {
    println!(
        "Runtime<Host, 4>: {} bytes, {}",
        size_of_val(&DEFAULT_RT),
        section_of(&DEFAULT_RT)
    );
    assert_eq!(section_of(&DEFAULT_RT), ".bss");
}

#[test]
fn a_runtime_with_a_handler_table_is_in_bss() {
    assert_eq!(section_of(&TABLED_RT), ".bss");
    assert_eq!(TABLED_RT.vector_name(Vector::new(3)), Some("NET_RX"));
}

#[test]
fn a_runtime_with_other_limits_is_not_in_bss() {
    // The documented cost of a non-default `Config`: a few non-zero bytes
    // put the runtime in `.data`. This also shows the check can fail.
    assert_eq!(section_of(&TUNED_RT), "not .bss");
    assert_eq!(TUNED_RT.config().restarts(), 3);
}

#[test]
fn the_default_config_reads_back_from_its_zero_bytes() {
    // The stored form is xor-ed with the default; reading it back must
    // give the limits the runtime was built with, default or not.
    assert_eq!(DEFAULT_RT.config(), Config::DEFAULT);
    let odd = Config::DEFAULT.max_restart(0).time_budget_ns(u64::MAX);
    let rt: Box<Runtime<Host, 1>> = Box::new(Runtime::new(odd));
    assert_eq!(rt.config(), odd);
    assert_eq!(rt.config().budget_ns(), u64::MAX);
}

#[cfg(not(bottomhalf_loom))]
#[test]
fn a_signals_runtime_with_256_cpus_is_in_bss() {
    static SIG_RT: Runtime<bottomhalf::Signals, 256> = Runtime::new(Config::DEFAULT);
    println!(
        "Runtime<Signals, 256>: {} bytes, {}",
        size_of_val(&SIG_RT),
        section_of(&SIG_RT)
    );
    assert_eq!(section_of(&SIG_RT), ".bss");
}
