//! `Lock<T>`: the workers' lock, a futex-style mutex sleeping on a
//! [`WakeWord`].
//!
//! Held by worker threads and by `cancel`/`flush`/`mod_delayed` callers,
//! for a few list moves at a time; never by `queue` (which is lock-free and
//! may run in a signal handler), and never while a work item's function
//! runs. Built from `crate::sync` atomics and a `WakeWord`, so the loom
//! models see every access (a `std::sync::Mutex` would be invisible to
//! loom and would block its scheduler).
//!
//! The word is `UNLOCKED`, `LOCKED`, or `CONTENDED` (locked, and someone
//! may sleep on the wake word). A locker that fails to take the lock spins
//! a few times, then takes a wake token, marks the word `CONTENDED` with a
//! swap (which also takes the lock if it was free), and sleeps with that
//! token; the unlocker that swaps `CONTENDED` back to `UNLOCKED` notifies.
//! A notify after the token makes the wait return at once, so a release
//! between the swap and the sleep is never lost.

use crate::sync::{loom_const_fn, ordering, spin_wait, AtomicU32, Ordering, UnsafeCell};
use crate::wake::WakeWord;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// Spins (yields) before sleeping: the critical sections are a few list
/// moves long.
const SPINS: u32 = 4;

/// A mutex whose contended path sleeps on a [`WakeWord`]. Not reentrant:
/// nothing that holds it calls back into user code. `repr(C)`: the lock
/// word is followed by the value, so a small hot prefix of the value shares
/// its cache line.
#[repr(C)]
pub(crate) struct Lock<T> {
    /// `UNLOCKED`, `LOCKED` or `CONTENDED`.
    state: AtomicU32,
    /// Contended lockers sleep here.
    word: WakeWord,
    /// Accessed only between a successful acquire and the matching release.
    value: UnsafeCell<T>,
}

// SAFETY: `value` is reached only through `with`, which holds the lock, so at
// most one thread touches it at a time; moving that access between threads
// needs `T: Send`.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: owning the lock owns the value.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    loom_const_fn! {
        pub(crate) fn new(value: T) -> Lock<T> {
            Lock {
                state: AtomicU32::new(UNLOCKED),
                word: super::wake_word(),
                value: UnsafeCell::new(value),
            }
        }
    }

    /// Runs `f` with the lock held. The lock is released when `f` returns
    /// or unwinds.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.acquire();
        let _release = Release(self);
        // SAFETY: we hold the lock (acquire above, released by `_release`
        // after this call), so no other `&mut T` exists; `with` is not
        // reentrant on one lock (no holder calls code that takes it again).
        self.value.with_mut(|p| f(unsafe { &mut *p }))
    }

    /// Runs `f` with the lock held if it is free now; `None` otherwise.
    #[cfg_attr(bottomhalf_loom, allow(dead_code))]
    pub(crate) fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if !self.try_acquire() {
            return None;
        }
        let _release = Release(self);
        // SAFETY: as in `with`: we hold the lock until `_release` drops.
        Some(self.value.with_mut(|p| f(unsafe { &mut *p })))
    }

    fn acquire(&self) {
        if !self.try_acquire() {
            self.acquire_slow();
        }
    }

    fn try_acquire(&self) -> bool {
        // Acquire: pairs with the Release swap in `release`, so the previous
        // holder's writes to `value` are visible.
        self.state
            .compare_exchange(
                UNLOCKED,
                LOCKED,
                ordering!("work_lock_acquire_relaxed", Acquire, Relaxed),
                Ordering::Relaxed,
            )
            .is_ok()
    }

    #[cold]
    fn acquire_slow(&self) {
        for _ in 0..SPINS {
            spin_wait();
            if self.state.load(Ordering::Relaxed) == UNLOCKED && self.try_acquire() {
                return;
            }
        }
        loop {
            // Token first: a release after it makes the wait return at once.
            let token = self.word.token();
            // Acquire: as above. Marking CONTENDED even when we take a free
            // lock costs at most one spurious notify.
            if self.state.swap(
                CONTENDED,
                ordering!("work_lock_acquire_relaxed", Acquire, Relaxed),
            ) == UNLOCKED
            {
                return;
            }
            self.word.wait(token, None);
        }
    }

    fn release(&self) {
        // Release: pairs with the Acquire in `acquire`/`acquire_slow`.
        if self.state.swap(
            UNLOCKED,
            ordering!("work_lock_release_relaxed", Release, Relaxed),
        ) == CONTENDED
        {
            self.word.notify();
        }
    }
}

/// Releases the lock on drop, so a panic inside `with` cannot leave it held.
struct Release<'a, T>(&'a Lock<T>);

impl<T> Drop for Release<'_, T> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::Lock;
    use std::vec::Vec;

    #[test]
    fn the_lock_excludes_and_hands_over() {
        static LOCK: Lock<u64> = Lock::new(0);
        let threads = 4;
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..rounds {
                        LOCK.with(|v| {
                            // A non-atomic read-modify-write: a lost update
                            // shows any overlap.
                            let x = *v;
                            core::hint::black_box(());
                            *v = x + 1;
                        });
                    }
                });
            }
        });
        assert_eq!(LOCK.with(|v| *v), threads * rounds);
    }

    #[test]
    fn a_panic_inside_releases_the_lock() {
        let lock = Lock::new(Vec::<u32>::new());
        let r = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| {
            lock.with(|v| {
                v.push(1);
                panic!("inside");
            })
        }));
        assert!(r.is_err());
        assert_eq!(lock.with(|v| v.len()), 1);
    }
}
