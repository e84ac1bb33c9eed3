//! A panic inside a signal handler: abort without allocating, locking or
//! formatting in the handler.
//!
//! The handler counts itself in a `const` thread-local depth (no lazy
//! initialisation, no destructor: one TLS access, async-signal-safe). The
//! first `install` wraps the process panic hook once (set-up: it
//! allocates one `Box`): the wrapper first reads the depth and, if the
//! panicking thread is inside a bottomhalf signal handler, writes a fixed
//! message with `write(2)` and calls `abort()`, without touching the
//! payload, the location or a backtrace. Otherwise it calls the hook that
//! was there before (std's default hook or the application's).
//!
//! # What std does before any hook runs
//!
//! `panic!` enters std's panic runtime, which, before calling the hook:
//!
//! - increments the global and the thread-local panic counts (atomics and
//!   a `const` thread-local; a panic inside the hook aborts);
//! - for a message with format arguments (`panic!("{x}")`, `expect`,
//!   index out of bounds), formats it into a `String`: a few allocations
//!   in std itself that no library can intercept on stable Rust. A
//!   message that is a plain literal (`panic!("literal")`, `unwrap()` on
//!   `None`) is passed as a `&'static str` and allocates nothing;
//! - takes the read side of the hook's `RwLock` (one atomic when
//!   uncontended; it waits only while another thread is inside
//!   `set_hook`/`take_hook`).
//!
//! After the hook, std would start unwinding (which allocates the
//! exception); the wrapper never returns, so that does not happen.
//!
//! # If the application replaces the hook later
//!
//! A `std::panic::set_hook` after the first install drops the wrapper:
//! a panicking top half then runs the application's hook (which may
//! allocate and lock) and then unwinds into the handler's abort guard,
//! which writes the same fixed message and aborts (with `panic = "abort"`
//! std aborts right after the hook). Set the application's hook before
//! the first `install`, and it is kept behind the wrapper.

use core::cell::Cell;

/// The message written (with `write(2)`) before `abort()` when a top half
/// panics.
pub(super) const MESSAGE: &[u8] =
    b"bottomhalf: a signal top half panicked; aborting (a handler must not unwind)\n";

std::thread_local! {
    /// How many bottomhalf signal handlers this thread is inside (signals
    /// nest). `const`, no destructor: reading it never allocates or
    /// registers anything, so a handler may touch it.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

static HOOK: std::sync::Once = std::sync::Once::new();

/// Wraps the process panic hook, once (module docs). Set-up only: it
/// allocates, and takes the hook lock. Skipped on a panicking thread
/// (std refuses to change the hook there); the abort guard still applies.
pub(super) fn ensure_hook() {
    if std::thread::panicking() {
        return;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(std::boxed::Box::new(move |info| {
            if in_handler() {
                die(MESSAGE);
            }
            previous(info);
        }));
    });
}

/// Whether the calling thread is inside a bottomhalf signal handler.
/// Async-signal-safe.
#[inline]
fn in_handler() -> bool {
    DEPTH.try_with(|d| d.get() != 0).unwrap_or(false)
}

/// Counts the calling thread inside a handler until dropped.
pub(super) struct InHandler(());

impl InHandler {
    /// Top-half safe: yes (one TLS access). Never panics: a thread whose
    /// TLS is gone is simply not counted.
    #[inline]
    pub(super) fn enter() -> InHandler {
        let _ = DEPTH.try_with(|d| d.set(d.get().wrapping_add(1)));
        InHandler(())
    }
}

impl Drop for InHandler {
    #[inline]
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get().wrapping_sub(1)));
    }
}

/// Writes `msg` to stderr with `write(2)` and aborts: no formatting, no
/// allocation, no lock.
pub(super) fn die(msg: &[u8]) -> ! {
    // SAFETY: `msg` is readable for its length; write(2) and abort(3) are
    // async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}
