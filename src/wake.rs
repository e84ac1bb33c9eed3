//! `WakeWord`: an async-signal-safe wake-up for threads that sleep when
//! idle (drain threads, workqueue workers).
//!
//! The protocol, why a futex, and what each system sleeps on are on
//! [`WakeWord`], where rustdoc renders them.
//!
//! Under `--cfg bottomhalf_loom` the futex is modelled with loom's `Mutex` and
//! `Condvar`: the comparison and the sleep happen under the mutex, which is
//! exactly the atomicity the kernel gives.
//!
//! # Atomic orderings
//!
//! `notify` bumps `seq` then reads `sleepers`; `wait` bumps `sleepers` then
//! (in the kernel) reads `seq`. That is a store-buffering pattern, so all
//! four accesses are `SeqCst`: otherwise `notify` could see no sleeper
//! while the sleeper still sees the old `seq`, and sleep through the
//! wake-up.

use core::time::Duration;

use crate::sync::{loom_const_fn, ordering, AtomicU32, Ordering};

/// A futex word that idle threads sleep on and top halves wake: an
/// async-signal-safe wake-up for threads that sleep when idle (drain
/// threads, workqueue workers).
///
/// A sleeper takes a token, checks for work, and sleeps only if the word
/// still holds the token; a waker makes its work visible, then bumps the
/// word and wakes. The kernel (futex) compares the word and sleeps
/// atomically, so a wake-up between the check and the sleep is never lost.
///
/// Why a futex: `notify` is called from top halves, including signal
/// handlers. It is two atomic operations and, only when someone sleeps,
/// one wake system call: no lock, no allocation, nothing that is not
/// async-signal-safe. (`Thread::unpark` is not documented as
/// async-signal-safe, and a condition variable needs a mutex; an `eventfd`
/// write would do but costs a file descriptor per word.)
///
/// | system | sleep | wake |
/// | --- | --- | --- |
/// | Linux | `futex(FUTEX_WAIT)` | `futex(FUTEX_WAKE)` |
/// | macOS, iOS | `__ulock_wait(UL_COMPARE_AND_WAIT)` | `__ulock_wake(ULF_WAKE_ALL)` |
/// | Windows | `WaitOnAddress` | `WakeByAddressAll` |
/// | other Unix (BSDs, …) | sleeps 1 ms (or the timeout, if shorter) and returns | nothing |
///
/// The first three compare the word and sleep atomically in the kernel, so
/// a sleeper wakes at once. The Apple calls are the ones libc++'s
/// `std::atomic::wait` and Rust's standard library use on macOS 10.12 and
/// later; the Windows ones are Windows 8's (`synchronization.lib`, which
/// Rust's standard library links too). Elsewhere a sleeper polls its word
/// every millisecond: no wake-up is lost, it is at most 1 ms late, and an
/// idle drain thread or worker wakes 1000 times a second.
///
/// # Examples
///
/// ```
/// use bottomhalf::WakeWord;
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// static WORD: WakeWord = WakeWord::new();
/// static READY: AtomicBool = AtomicBool::new(false);
///
/// let sleeper = std::thread::spawn(|| loop {
///     let token = WORD.token();
///     if READY.load(Ordering::SeqCst) {
///         break;
///     }
///     WORD.wait(token, None);
/// });
/// READY.store(true, Ordering::SeqCst);
/// WORD.notify(); // async-signal-safe
/// sleeper.join().unwrap();
/// ```
#[derive(Debug)]
pub struct WakeWord {
    /// Bumped by every `notify`. Sleepers compare it with their token.
    seq: AtomicU32,
    /// Threads inside `wait`. `notify` makes the system call only when
    /// this is non-zero.
    sleepers: AtomicU32,
    /// The signal backend's event-fd slot for the runtime that owns this
    /// word, plus one (0: none). Written at set-up (`Runtime::event_fd`),
    /// read by `Signals::kick`; the same value in every word of a runtime.
    #[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
    event_slot: AtomicU32,
    #[cfg(bottomhalf_loom)]
    model: (loom::sync::Mutex<()>, loom::sync::Condvar),
}

impl WakeWord {
    loom_const_fn! {
        /// A word nobody sleeps on.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// static WORD: bottomhalf::WakeWord = bottomhalf::WakeWord::new();
        /// WORD.notify();
        /// ```
        pub fn new() -> WakeWord {
            WakeWord {
                seq: AtomicU32::new(0),
                sleepers: AtomicU32::new(0),
                #[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
                event_slot: AtomicU32::new(0),
                #[cfg(bottomhalf_loom)]
                model: (loom::sync::Mutex::new(()), loom::sync::Condvar::new()),
            }
        }
    }

    /// The token to pass to [`wait`](WakeWord::wait): take it *before*
    /// checking for work.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// let word = bottomhalf::WakeWord::new();
    /// let t = word.token();
    /// word.notify();
    /// assert_ne!(word.token(), t);
    /// ```
    #[inline]
    pub fn token(&self) -> u32 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Wakes every thread sleeping on the word, and makes a `wait` with an
    /// older token return at once. Make the work visible first.
    ///
    /// Top-half safe: yes (async-signal-safe: two atomic operations and,
    /// only if someone sleeps, one wake system call: `futex`, `__ulock_wake`
    /// or `WakeByAddressAll`). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`WakeWord`].
    #[inline]
    pub fn notify(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        // SeqCst: the store-buffering pair with `wait` (module docs).
        if self
            .sleepers
            .load(ordering!("wake_sleepers_relaxed", SeqCst, Relaxed))
            != 0
        {
            self.wake_all();
        }
    }

    /// The event-fd slot (plus one, 0: none) of the signal runtime that
    /// owns this word. Async-signal-safe (one load).
    #[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
    #[inline]
    pub(crate) fn event_slot(&self) -> u32 {
        // SeqCst: pairs with the SeqCst store in `set_event_slot` (the
        // signal backend's "Atomic orderings").
        self.event_slot.load(Ordering::SeqCst)
    }

    /// Records the owning runtime's event-fd slot (plus one).
    #[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
    pub(crate) fn set_event_slot(&self, slot: u32) {
        // SeqCst: pairs with the SeqCst load in `event_slot`.
        self.event_slot.store(slot, Ordering::SeqCst);
    }

    /// Sets the event-fd slot if none is set yet; `Err(existing)`
    /// otherwise (a racing set-up won).
    #[cfg(all(feature = "std", target_os = "linux", not(bottomhalf_loom)))]
    pub(crate) fn claim_event_slot(&self, slot: u32) -> Result<(), u32> {
        // SeqCst: as `set_event_slot`.
        self.event_slot
            .compare_exchange(0, slot, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
    }

    /// Sleeps until [`notify`](WakeWord::notify) is called after `token`
    /// was taken (returns at once if it already was), or until `timeout`.
    /// May return spuriously: re-check for work and take a new token.
    ///
    /// On Linux this is `futex(FUTEX_WAIT)`, on macOS `__ulock_wait`, on
    /// Windows `WaitOnAddress`. On other systems it sleeps 1 ms (or
    /// `timeout`, if shorter) and returns (see the table on [`WakeWord`]).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let word = bottomhalf::WakeWord::new();
    /// let t = word.token();
    /// word.notify();
    /// word.wait(t, None); // returns at once: notified after the token
    /// word.wait(word.token(), Some(Duration::from_millis(1))); // times out
    /// ```
    pub fn wait(&self, token: u32, timeout: Option<Duration>) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        self.sleep(token, timeout);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    #[cfg(all(not(bottomhalf_loom), target_os = "linux", feature = "std"))]
    fn sleep(&self, token: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(core::ptr::null(), |t| t as *const libc::timespec);
        // EINTR, EAGAIN (word changed) and ETIMEDOUT are all plain returns:
        // callers re-check.
        // SAFETY: `seq` is a live, aligned 32-bit word for the whole call
        // (`&self`); FUTEX_WAIT only reads it and compares with `token`;
        // `ts_ptr` is null or points to `ts`, alive until the call returns.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                token,
                ts_ptr,
            );
        }
    }

    #[cfg(all(not(bottomhalf_loom), target_os = "linux", feature = "std"))]
    fn wake_all(&self) {
        // SAFETY: as in `sleep`; FUTEX_WAKE only uses the address as a key.
        // Async-signal-safe: a system call with no user-space state.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            );
        }
    }

    #[cfg(all(not(bottomhalf_loom), feature = "std", target_vendor = "apple"))]
    fn sleep(&self, token: u32, timeout: Option<Duration>) {
        let us = ulock_timeout_us(timeout);
        // A changed word, an interruption and a timeout (negative returns
        // with ULF_NO_ERRNO) are all plain returns: callers re-check.
        // SAFETY: `seq` is a live, aligned 32-bit word for the whole call
        // (`&self`); UL_COMPARE_AND_WAIT only reads it and compares it
        // with `token`.
        unsafe {
            apple::__ulock_wait(
                apple::UL_COMPARE_AND_WAIT | apple::ULF_NO_ERRNO,
                self.seq.as_ptr().cast(),
                u64::from(token),
                us,
            );
        }
    }

    #[cfg(all(not(bottomhalf_loom), feature = "std", target_vendor = "apple"))]
    fn wake_all(&self) {
        // SAFETY: as in `sleep`; the wake uses the address only as a key.
        // Async-signal-safe: one system call with no user-space state.
        unsafe {
            apple::__ulock_wake(
                apple::UL_COMPARE_AND_WAIT | apple::ULF_WAKE_ALL | apple::ULF_NO_ERRNO,
                self.seq.as_ptr().cast(),
                0,
            );
        }
    }

    #[cfg(all(not(bottomhalf_loom), feature = "std", windows))]
    fn sleep(&self, token: u32, timeout: Option<Duration>) {
        let ms = wait_on_address_ms(timeout);
        // FALSE (timeout) and a changed word are plain returns.
        // SAFETY: `seq` is a live, aligned 4-byte word for the whole call
        // (`&self`) and `token` a 4-byte local; WaitOnAddress reads both
        // and sleeps only while they are equal.
        unsafe {
            windows::WaitOnAddress(
                self.seq.as_ptr().cast(),
                (&token as *const u32).cast(),
                core::mem::size_of::<u32>(),
                ms,
            );
        }
    }

    #[cfg(all(not(bottomhalf_loom), feature = "std", windows))]
    fn wake_all(&self) {
        // SAFETY: as in `sleep`; the wake uses the address only as a key.
        unsafe { windows::WakeByAddressAll(self.seq.as_ptr().cast()) };
    }

    #[cfg(all(
        not(bottomhalf_loom),
        not(all(
            feature = "std",
            any(target_os = "linux", target_vendor = "apple", windows)
        ))
    ))]
    fn sleep(&self, token: u32, timeout: Option<Duration>) {
        #[cfg(feature = "std")]
        if self.seq.load(Ordering::SeqCst) == token {
            let step = Duration::from_millis(1);
            std::thread::sleep(timeout.map_or(step, |t| t.min(step)));
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = (token, timeout);
            core::hint::spin_loop();
        }
    }

    #[cfg(all(
        not(bottomhalf_loom),
        not(all(
            feature = "std",
            any(target_os = "linux", target_vendor = "apple", windows)
        ))
    ))]
    fn wake_all(&self) {}

    #[cfg(bottomhalf_loom)]
    fn sleep(&self, token: u32, timeout: Option<Duration>) {
        let (mutex, condvar) = &self.model;
        let guard = mutex.lock().unwrap();
        if self.seq.load(Ordering::SeqCst) == token {
            // A timed wait is modelled as "may return without a wake-up".
            if timeout.is_none() {
                drop(condvar.wait(guard).unwrap());
            }
        }
    }

    #[cfg(bottomhalf_loom)]
    fn wake_all(&self) {
        let (mutex, condvar) = &self.model;
        drop(mutex.lock().unwrap());
        condvar.notify_all();
    }
}

/// `timeout` as `__ulock_wait`'s microseconds: rounded up (a wait never
/// ends early), at least 1 (0 means no limit), at most `u32::MAX` (about
/// 71 minutes; the caller re-checks and waits again). `None`: 0.
#[cfg(all(
    not(bottomhalf_loom),
    any(test, all(feature = "std", target_vendor = "apple"))
))]
fn ulock_timeout_us(timeout: Option<Duration>) -> u32 {
    timeout.map_or(0, |d| {
        d.as_nanos().div_ceil(1_000).clamp(1, u128::from(u32::MAX)) as u32
    })
}

/// `timeout` as `WaitOnAddress`'s milliseconds: rounded up, at most
/// `INFINITE - 1` (about 49 days; the caller re-checks). `None`:
/// `INFINITE` (`u32::MAX`).
#[cfg(all(not(bottomhalf_loom), any(test, all(feature = "std", windows))))]
fn wait_on_address_ms(timeout: Option<Duration>) -> u32 {
    const INFINITE: u32 = u32::MAX;
    timeout.map_or(INFINITE, |d| {
        d.as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(INFINITE - 1)) as u32
    })
}

/// The wait-on-address calls of Apple's libSystem (macOS 10.12 and later,
/// `bsd/sys/ulock.h` in XNU): what libc++'s `std::atomic::wait` and Rust's
/// standard library sleep on.
#[cfg(all(not(bottomhalf_loom), feature = "std", target_vendor = "apple"))]
mod apple {
    use core::ffi::{c_int, c_void};

    pub(super) const UL_COMPARE_AND_WAIT: u32 = 1;
    pub(super) const ULF_WAKE_ALL: u32 = 0x0000_0100;
    pub(super) const ULF_NO_ERRNO: u32 = 0x0100_0000;

    extern "C" {
        /// Sleeps while the 32-bit word at `addr` equals `value`, for at
        /// most `timeout_us` microseconds (0: no limit).
        pub(super) fn __ulock_wait(
            operation: u32,
            addr: *mut c_void,
            value: u64,
            timeout_us: u32,
        ) -> c_int;
        /// Wakes the threads sleeping on `addr` (all with `ULF_WAKE_ALL`).
        pub(super) fn __ulock_wake(operation: u32, addr: *mut c_void, wake_value: u64) -> c_int;
    }
}

/// Windows 8's wait-on-address calls (`synchronization.lib`).
#[cfg(all(not(bottomhalf_loom), feature = "std", windows))]
mod windows {
    use core::ffi::c_void;

    #[link(name = "synchronization")]
    extern "system" {
        /// Sleeps while the `size` bytes at `address` equal those at
        /// `compare`, for at most `ms` milliseconds; FALSE on timeout.
        pub(super) fn WaitOnAddress(
            address: *const c_void,
            compare: *const c_void,
            size: usize,
            ms: u32,
        ) -> i32;
        /// Wakes every thread waiting on `address`.
        pub(super) fn WakeByAddressAll(address: *const c_void);
    }
}

impl Default for WakeWord {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::*;

    /// The timeout conversions of the macOS and Windows sleeps, checked on
    /// every host: rounded up, never 0 for a finite timeout on macOS
    /// (where 0 means "no limit"), never `INFINITE` for a finite one on
    /// Windows, and clamped instead of wrapped.
    #[test]
    fn timeouts_round_up_and_never_mean_forever() {
        let us = ulock_timeout_us;
        assert_eq!(us(None), 0);
        assert_eq!(us(Some(Duration::ZERO)), 1);
        assert_eq!(us(Some(Duration::from_nanos(1))), 1);
        assert_eq!(us(Some(Duration::from_nanos(1_001))), 2);
        assert_eq!(us(Some(Duration::from_millis(5))), 5_000);
        assert_eq!(us(Some(Duration::from_secs(1 << 40))), u32::MAX);

        let ms = wait_on_address_ms;
        assert_eq!(ms(None), u32::MAX);
        assert_eq!(ms(Some(Duration::ZERO)), 0);
        assert_eq!(ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(ms(Some(Duration::from_micros(1_500))), 2);
        assert_eq!(ms(Some(Duration::from_secs(3))), 3_000);
        assert_eq!(ms(Some(Duration::from_secs(1 << 40))), u32::MAX - 1);
    }
}
