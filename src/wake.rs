//! `WakeWord`: an async-signal-safe wake-up for threads that sleep when
//! idle (drain threads, workqueue workers).
//!
//! A sleeper takes a token, checks for work, and sleeps only if the word
//! still holds the token; a waker makes its work visible, then bumps the
//! word and wakes. The kernel (futex) compares the word and sleeps
//! atomically, so a wake-up between the check and the sleep is never lost.
//!
//! Why a futex: `notify` is called from top halves, including signal
//! handlers. It is two atomic operations and, only when someone sleeps,
//! one `futex(FUTEX_WAKE)` system call: no lock, no allocation, nothing
//! that is not async-signal-safe. (`Thread::unpark` is not documented as
//! async-signal-safe, and a condition variable needs a mutex; an `eventfd`
//! write would do but costs a file descriptor per word.) Other Unix
//! systems fall back to sleeping in 1 ms steps (documented on
//! [`WakeWord::wait`]).
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

/// A futex word that idle threads sleep on and top halves wake.
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
    /// only if someone sleeps, one `futex` system call). Allocates: no.
    /// Blocks: no.
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
    /// On Linux this is `futex(FUTEX_WAIT)`. On other systems it sleeps
    /// 1 ms (or `timeout`, if shorter) and returns.
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

    #[cfg(all(not(bottomhalf_loom), not(all(target_os = "linux", feature = "std"))))]
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

    #[cfg(all(not(bottomhalf_loom), not(all(target_os = "linux", feature = "std"))))]
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

impl Default for WakeWord {
    fn default() -> Self {
        Self::new()
    }
}
