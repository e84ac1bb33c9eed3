//! A panic in a signal top half (issue 8, item 9): the process aborts with
//! the crate's fixed message, written with `write(2)`, and nothing on the
//! panicking thread allocates between the top half's start and the abort,
//! even with `RUST_BACKTRACE=1` (std's own hook would format the message
//! and capture a backtrace). Ordinary panics still reach the hook the
//! application had set.
//!
//! Each scenario runs in a child process (this binary re-executed with
//! `BH_SCENARIO=<name>`) under an `alarm` watchdog. The child's global
//! allocator writes a fixed line to stderr for every allocation made on a
//! thread while its "in the top half" flag is on; the parent counts those
//! lines, so a single allocation on the panic path fails the test.
#![cfg(all(not(miri), target_os = "linux"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};

use bottomhalf::{Config, Runtime, SigInfo, SignalConfig, SignalMode, Signals};

mod support;
use support::process;
use support::signal::raise;

static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);

/// Written (by the allocator, with `write(2)`) once per allocation made
/// while the calling thread is in the panicking top half.
const MARK: &str = "ALLOCATION ON THE PANIC PATH\n";
/// The crate's message (`src/backend/unix_signal/panic.rs`).
const CRATE_MESSAGE: &str =
    "bottomhalf: a signal top half panicked; aborting (a handler must not unwind)";

std::thread_local! {
    static IN_TOP_HALF: Cell<bool> = const { Cell::new(false) };
}

struct MarkingAlloc;

fn check() {
    if IN_TOP_HALF.try_with(|f| f.get()).unwrap_or(false) {
        // SAFETY: writing a readable static buffer to stderr; write(2)
        // neither allocates nor locks.
        unsafe { libc::write(2, MARK.as_ptr().cast(), MARK.len()) };
    }
}

// SAFETY: every call is forwarded unchanged to `System`; `check` only
// reads a const thread-local and calls write(2).
unsafe impl GlobalAlloc for MarkingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: MarkingAlloc = MarkingAlloc;

/// In the child for `name`: arms the watchdog, runs `body`, exits 0 (or
/// dies inside it). In the parent: re-runs this binary for `name` only,
/// with `RUST_BACKTRACE=1`, and returns its output.
fn scenario(name: &str, body: impl FnOnce()) -> Option<Output> {
    Some(process::scenario(
        name,
        30,
        &[("RUST_BACKTRACE", "1")],
        body,
    ))
}

fn panicking_top_half(_: &SigInfo) {
    IN_TOP_HALF.with(|f| f.set(true));
    panic!("a literal message from a top half");
}

/// Installs the panicking top half on SIGUSR1 in `mode` and raises it;
/// returning means it did not abort.
fn panic_in_top_half(mode: SignalMode) {
    let _h = RT
        .install(SignalConfig::new(libc::SIGUSR1, panicking_top_half).mode(mode))
        .unwrap();
    raise(libc::SIGUSR1);
    eprintln!("the process survived a panicking top half");
    std::process::exit(3);
}

/// The parent's checks: died of SIGABRT, the crate's message on stderr,
/// no std panic message, no allocation marked.
fn check_abort(mode: &str, out: Output) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let allocations = stderr.matches(MARK).count();
    println!("panic path ({mode}): {allocations} allocations");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected death by SIGABRT: {:?}\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(CRATE_MESSAGE),
        "no crate message:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "std's panic hook ran (it formats, locks and allocates):\n{stderr}"
    );
    assert_eq!(
        allocations, 0,
        "allocations on the panicking thread after the top half started:\n{stderr}"
    );
}

#[test]
fn panic_in_shared_top_half_aborts_without_allocating() {
    if let Some(out) = scenario("panic_in_shared_top_half_aborts_without_allocating", || {
        panic_in_top_half(SignalMode::Shared)
    }) {
        check_abort("shared", out);
    }
}

#[test]
fn panic_in_exclusive_top_half_aborts_without_allocating() {
    if let Some(out) = scenario(
        "panic_in_exclusive_top_half_aborts_without_allocating",
        || panic_in_top_half(SignalMode::Exclusive),
    ) {
        check_abort("exclusive", out);
    }
}

/// The wrapper passes panics outside a top half to the hook that was set
/// before the first install, and that thread's panic unwinds as usual
/// (the process lives on, and a top half still runs afterwards).
#[test]
fn ordinary_panics_reach_the_application_hook() {
    static APP_HOOK: AtomicBool = AtomicBool::new(false);
    static RAN: AtomicBool = AtomicBool::new(false);
    if let Some(out) = scenario("ordinary_panics_reach_the_application_hook", || {
        std::panic::set_hook(Box::new(|_| APP_HOOK.store(true, Ordering::SeqCst)));
        let h = RT
            .install(SignalConfig::new(libc::SIGUSR2, |_| {
                RAN.store(true, Ordering::SeqCst)
            }))
            .unwrap();
        let r = std::thread::spawn(|| panic!("an ordinary panic")).join();
        assert!(r.is_err(), "the thread did not panic");
        assert!(
            APP_HOOK.load(Ordering::SeqCst),
            "the application's hook did not run"
        );
        raise(libc::SIGUSR2);
        assert!(RAN.load(Ordering::SeqCst));
        h.uninstall().unwrap();
        println!("ordinary panic: the application's hook ran; the top half still runs");
    }) {
        process::expect_success("ordinary panic", out);
    }
}
