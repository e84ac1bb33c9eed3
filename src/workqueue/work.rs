//! The workqueue side of [`Work`]: what needs `std` (items in an `Arc`,
//! the thread-local context, sleeping on the item's `done` word), the
//! pool's cancel (unlinking under the pool's lock) and the pool-only
//! transitions (timers), and [`DelayedWork`].
//!
//! The item, its state word and the shared transitions are in
//! `crate::work`; the link fields belong to whoever set PENDING until the
//! push, then to the lock of the pool the word names; a worker reads what
//! it needs (`next`) before the CAS that hands the link back.

use core::ptr::{self, NonNull};
use std::boxed::Box;
use std::sync::Arc;

use super::context;
use super::pool::Pool;
use super::WorkqueueError;
use crate::sync::Ordering;
use crate::work::{
    flags, kind_of, tagged, target_of, Func, Grab, Target, Word, CANCELING, DELAYED, HELD, PENDING,
    RUNNING, WAITED,
};
pub use crate::work::{DelayedWork, Work};

/// The pool part of a state word: null if the item was never queued or
/// its word names a bottom-half queue.
#[inline(always)]
pub(super) fn pool_of(word: Word) -> *mut Pool {
    if kind_of(word) == Some(Target::POOL) {
        // `Pool` is `repr(C)` with its `Target` first: same address.
        target_of(word).cast()
    } else {
        ptr::null_mut()
    }
}

/// A state word for `pool` with flags `f`.
#[inline(always)]
pub(super) fn pool_word(pool: *const Pool, f: usize) -> Word {
    tagged(pool.cast::<Target>().cast_mut(), f)
}

/// `true` if the word has an instance (pending, running or being
/// cancelled) at a pool inherited across `fork()`: nothing in this process
/// will ever run, finish or unlink it.
#[inline]
pub(crate) fn inherited(s: Word) -> bool {
    let p = pool_of(s);
    flags(s) & (PENDING | RUNNING | CANCELING) != 0
        && !p.is_null()
        // SAFETY: pools are never freed (type-stable, see `pool.rs`).
        && unsafe { &*p }.is_inherited()
}

impl Work {
    /// A work item created at run time, running a closure, for a
    /// workqueue. Queue it with `&Arc<Work>`; the queue then holds one
    /// strong count while the item is pending, so the caller may drop its
    /// own. (A runtime's bottom half takes `&'static Work` items only.)
    ///
    /// Top-half safe: no. Allocates: yes (the `Arc` and the closure).
    /// Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let hits = Arc::new(AtomicU32::new(0));
    /// let h = Arc::clone(&hits);
    /// let w = Work::new_arc("count", move |_| {
    ///     h.fetch_add(1, Ordering::Relaxed);
    /// });
    /// let wq = Workqueue::builder("dyn").threads(1).build().unwrap();
    /// assert!(wq.queue(&w));
    /// w.flush().unwrap();
    /// assert_eq!(hits.load(Ordering::Relaxed), 1);
    /// ```
    pub fn new_arc(name: &'static str, func: impl Fn(&Work) + Send + Sync + 'static) -> Arc<Work> {
        Arc::new(Work::with_func(name, Func::Boxed(Box::new(func)), false))
    }

    /// `WouldDeadlock` if this thread runs the item (a worker, or a drain
    /// running it in a bottom half), or works for a one-at-a-time pool
    /// holding the pending instance of `s`.
    pub(crate) fn refuse_flush_from_thread(&self, s: Word) -> Result<(), WorkqueueError> {
        let ctx = context::get();
        if ptr::eq(ctx.work, self) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        if flags(s) & PENDING != 0 && !ctx.pool.is_null() && ptr::eq(ctx.pool, pool_of(s)) {
            // SAFETY: pools are never freed (type-stable, see `pool.rs`), and
            // this one is the calling worker's own.
            if unsafe { &*ctx.pool }.is_serial() {
                return Err(WorkqueueError::WouldDeadlock);
            }
        }
        Ok(())
    }

    /// `WouldDeadlock` if this thread runs the item.
    pub(crate) fn refuse_cancel_from_thread(&self) -> Result<(), WorkqueueError> {
        if ptr::eq(context::get().work, self) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        Ok(())
    }

    /// Transition 4 for an instance pending at a pool: under the pool's
    /// lock, unlink it and clear PENDING (with HELD and DELAYED; `sync`: set
    /// CANCELING if running). `None` if the word changed meanwhile (the
    /// caller looks again).
    pub(crate) fn grab_pooled(&self, sync: bool) -> Option<Grab> {
        let grabbed = Pool::with_pending(self, |pool, st, place, _| {
            // SAFETY: `place` was read under this lock with us pending
            // here.
            let node = unsafe { st.unlink(pool, self, place) };
            let old = self.update(|s| {
                let canceling = if sync && flags(s) & RUNNING != 0 {
                    CANCELING
                } else {
                    0
                };
                tagged(
                    target_of(s),
                    (flags(s) & !(PENDING | HELD | DELAYED)) | canceling,
                )
            });
            let running = sync && flags(old) & RUNNING != 0;
            (flags(old) & HELD != 0, running, node)
        });
        let (held, running, node) = grabbed?;
        if held {
            // SAFETY: HELD: the link owned one strong count of the Arc
            // `node` came from (`WorkRef for &Arc<Work>`); we took the
            // link, so we own the count. `self` stays valid: the caller
            // borrows it.
            unsafe { release_count(node) };
        }
        Some(Grab::Grabbed { running })
    }

    /// Sleeps on `done` until `ready(word)`, for `Work::wait_until`, which
    /// has just found the word not ready. Sets WAITED with the same RMW
    /// that reads the word, after taking the token: a transition after that
    /// RMW sees WAITED and notifies.
    pub(crate) fn wait_for(&self, ready: impl Fn(Word) -> bool) {
        loop {
            let token = self.done.token();
            let mut s = self.state.load(Ordering::Acquire);
            loop {
                if ready(s) {
                    return;
                }
                if flags(s) & WAITED != 0 {
                    break;
                }
                match self.state.compare_exchange(
                    s,
                    tagged(target_of(s), flags(s) | WAITED),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => s = now,
                }
            }
            self.done.wait(token, None);
        }
    }

    /// Transition 6: the timer expired (under the pool's lock).
    pub(super) fn fire(&self) {
        self.update(|s| tagged(target_of(s), flags(s) & !DELAYED));
    }

    /// Transition 8: a delayed instance dropped by a stopping workqueue
    /// (under the pool's lock, node unlinked). Returns `true` if the caller
    /// now owns an `Arc` count to release.
    pub(super) fn drop_pending(&self) -> bool {
        let old = self.update(|s| tagged(target_of(s), flags(s) & !(PENDING | HELD | DELAYED)));
        flags(old) & HELD != 0
    }

    /// Transition 7: the pending instance (unlinked, under its pool's lock)
    /// moves to `pool`, waiting for its timer if `delayed`.
    pub(super) fn retarget(&self, pool: *mut Pool, delayed: bool) {
        self.update(|s| {
            let f = flags(s) & !DELAYED;
            pool_word(pool, if delayed { f | DELAYED } else { f })
        });
    }
}

/// Drops one strong count of the `Arc<Work>` that `node` points into.
///
/// # Safety
///
/// `node` came from `Arc::as_ptr` of an `Arc<Work>` (or of an
/// `Arc<DelayedWork>`, whose `Work` is its first field: same address) and
/// the caller owns one count of it.
pub(super) unsafe fn release_count(node: NonNull<Work>) {
    // SAFETY: the node is alive (we own a count).
    if unsafe { node.as_ref() }.in_delayed {
        // SAFETY: per the contract, `in_delayed` says the allocation is an
        // `Arc<DelayedWork>` (`repr(C)`, the `Work` first).
        drop(unsafe { Arc::from_raw(node.as_ptr().cast_const().cast::<DelayedWork>()) });
    } else {
        // SAFETY: per the contract, an `Arc<Work>`.
        drop(unsafe { Arc::from_raw(node.as_ptr().cast_const()) });
    }
}

impl DelayedWork {
    /// A delayed work item created at run time (see [`Work::new_arc`]).
    ///
    /// Top-half safe: no. Allocates: yes. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Workqueue};
    /// use std::time::Duration;
    /// let d = DelayedWork::new_arc("later", |_| {});
    /// let wq = Workqueue::builder("t").threads(1).build().unwrap();
    /// assert_eq!(wq.queue_delayed(&d, Duration::from_millis(1)), Ok(true));
    /// d.flush().unwrap();
    /// assert_eq!(d.runs(), 1);
    /// ```
    pub fn new_arc(
        name: &'static str,
        func: impl Fn(&Work) + Send + Sync + 'static,
    ) -> Arc<DelayedWork> {
        Arc::new(DelayedWork::with_func(name, Func::Boxed(Box::new(func))))
    }
}

/// Fires the pending timer of `w` at its pool now (`DelayedWork::flush`).
pub(crate) fn fire_pooled(w: &Work) {
    Pool::fire_now(w);
}

/// How the queue holds a work item: a `&'static Work` (nothing to own) or
/// an `&Arc<Work>` (the queue takes one strong count while the item is
/// pending). Implemented for those two only.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Work, Workqueue};
/// static S: Work = Work::new("static", |_| {});
/// let d = Work::new_arc("dynamic", |_| {});
/// let wq = Workqueue::builder("refs").threads(0).build().unwrap();
/// assert!(wq.queue(&S));
/// assert!(wq.queue(&d));
/// assert_eq!(wq.run_pending(), 2);
/// ```
pub trait WorkRef: sealed::Sealed {
    #[doc(hidden)]
    fn link(self) -> Link;
}

/// How the queue holds a delayed work item: `&'static DelayedWork` or
/// `&Arc<DelayedWork>`.
///
/// # Examples
///
/// ```
/// use bottomhalf::{DelayedWork, Workqueue};
/// use std::time::Duration;
/// static S: DelayedWork = DelayedWork::new("static", |_| {});
/// let d = DelayedWork::new_arc("dynamic", |_| {});
/// let wq = Workqueue::builder("drefs").threads(0).build().unwrap();
/// assert_eq!(wq.queue_delayed(&S, Duration::ZERO), Ok(true));
/// assert_eq!(wq.queue_delayed(&d, Duration::ZERO), Ok(true));
/// assert_eq!(wq.run_pending(), 2);
/// ```
pub trait DelayedWorkRef: sealed::Sealed {
    #[doc(hidden)]
    fn link(self) -> Link;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &'static super::Work {}
    impl Sealed for &std::sync::Arc<super::Work> {}
    impl Sealed for &'static super::DelayedWork {}
    impl Sealed for &std::sync::Arc<super::DelayedWork> {}
}

/// A node pointer with the provenance the queue needs, and whether the
/// queue must take a strong count.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub(super) node: NonNull<Work>,
    pub(super) arc: bool,
}

impl Link {
    pub(super) fn work(&self) -> &Work {
        // SAFETY: `node` comes from a live `&'static` or a borrowed `Arc`,
        // both alive for the caller's borrow of the link's source.
        unsafe { self.node.as_ref() }
    }

    /// Gives the list one strong count (for an `Arc` link). Called by the
    /// `queue` that set PENDING|HELD.
    pub(super) fn take_count(&self) {
        if self.arc {
            // SAFETY: `node` is `Arc::as_ptr` of an `Arc` the caller still
            // borrows, so the allocation is alive; incrementing does not
            // allocate.
            unsafe {
                if self.work().in_delayed {
                    Arc::increment_strong_count(
                        self.node.as_ptr().cast_const().cast::<DelayedWork>(),
                    );
                } else {
                    Arc::increment_strong_count(self.node.as_ptr().cast_const());
                }
            }
        }
    }
}

impl WorkRef for &'static Work {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::from(self),
            arc: false,
        }
    }
}

impl WorkRef for &Arc<Work> {
    #[inline]
    fn link(self) -> Link {
        Link {
            // `as_ptr` keeps the provenance of the whole allocation, which
            // `Arc::from_raw` needs when the count is released.
            node: NonNull::new(Arc::as_ptr(self).cast_mut()).expect("Arc pointers are non-null"),
            arc: true,
        }
    }
}

impl DelayedWorkRef for &'static DelayedWork {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::from(&self.work),
            arc: false,
        }
    }
}

impl DelayedWorkRef for &Arc<DelayedWork> {
    #[inline]
    fn link(self) -> Link {
        Link {
            node: NonNull::new(Arc::as_ptr(self).cast_mut().cast::<Work>())
                .expect("Arc pointers are non-null"),
            arc: true,
        }
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
pub(super) mod tests {
    //! The `flush` window of issue 8, item 13, held open with a test hook.
    use super::*;
    use crate::workqueue::Workqueue;
    use core::sync::atomic::{AtomicPtr as StdPtr, AtomicU32 as StdU32, Ordering::SeqCst};
    use core::time::Duration;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    /// The item whose next `start` stops in its window (between its
    /// `started` store and its PENDING -> RUNNING CAS), null for none.
    static HOOKED: StdPtr<Work> = StdPtr::new(ptr::null_mut());
    /// 0: idle; 1: the hooked start is in its window; 2: let it go.
    static GATE: StdU32 = StdU32::new(0);
    /// The hook is process-wide: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Called by `start` in its window.
    pub(crate) fn start_window(w: &Work) {
        if HOOKED
            .compare_exchange(ptr::from_ref(w).cast_mut(), ptr::null_mut(), SeqCst, SeqCst)
            .is_err()
        {
            return;
        }
        GATE.store(1, SeqCst);
        while GATE.load(SeqCst) != 2 {
            std::thread::sleep(Duration::from_micros(100));
        }
        GATE.store(0, SeqCst);
    }

    fn hook(w: &'static Work) {
        GATE.store(0, SeqCst);
        HOOKED.store(ptr::from_ref(w).cast_mut(), SeqCst);
    }

    /// Waits until `cond`, at most `limit`.
    fn within(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let t0 = Instant::now();
        while !cond() {
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// A flusher has gone to sleep on `w` (it set WAITED).
    fn flusher_waits(w: &Work) -> bool {
        within(Duration::from_secs(10), || {
            flags(w.state.load(Ordering::Relaxed)) & WAITED != 0
        })
    }

    const PERIOD: Duration = Duration::from_secs(3);

    static PERIODIC_WQ: OnceLock<Workqueue> = OnceLock::new();
    static PERIODIC: DelayedWork = DelayedWork::new("periodic", |_| {
        // Re-arms itself: the next instance runs a whole period later.
        let _ = PERIODIC_WQ.get().unwrap().queue_delayed(&PERIODIC, PERIOD);
    });

    /// Item 13: a flush that lands in the window of a periodic item's start
    /// waits for that run, not for the next period's.
    #[test]
    // Real threads, sleeps and a 3 s period: too slow under miri.
    #[cfg_attr(miri, ignore)]
    fn flush_in_the_start_window_waits_for_the_starting_run_not_the_next_period() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let wq =
            PERIODIC_WQ.get_or_init(|| Workqueue::builder("period").threads(2).build().unwrap());
        hook(&PERIODIC);
        assert_eq!(wq.queue_delayed(&PERIODIC, Duration::ZERO), Ok(true));
        assert!(within(Duration::from_secs(10), || GATE.load(SeqCst) == 1));
        // The worker is in the window: `started` counts run 1, the word
        // still says PENDING. Flush now.
        let flusher = std::thread::spawn(|| {
            let t0 = Instant::now();
            let r = PERIODIC.work().flush();
            (r, t0.elapsed(), PERIODIC.runs())
        });
        assert!(flusher_waits(&PERIODIC), "the flusher never waited");
        GATE.store(2, SeqCst);
        let (r, waited, runs) = flusher.join().unwrap();
        std::println!("flush in the start window of a {PERIOD:?}-periodic item waited {waited:?}, runs at return {runs}");
        assert_eq!(r, Ok(true));
        assert_eq!(runs, 1, "flush waited for the next period's run");
        assert!(
            waited < PERIOD / 2,
            "flush waited {waited:?}: a whole period"
        );
        assert_eq!(PERIODIC.cancel_sync(), Ok(true));
    }

    static ONE_WQ: OnceLock<Workqueue> = OnceLock::new();
    static OTHER_WQ: OnceLock<Workqueue> = OnceLock::new();
    static PING: Work = Work::new("ping", |w| {
        // Its first run queues the next instance onto the one-thread queue.
        if w.runs() == 0 {
            let _ = ONE_WQ.get().unwrap().queue(&PING);
        }
    });
    static FLUSHED: StdU32 = StdU32::new(0);
    static FLUSHER: Work = Work::new("flusher", |_| {
        let r = PING.flush();
        FLUSHED.store(if r == Ok(true) { 1 } else { 2 }, SeqCst);
    });

    /// Item 13: an item of a one-thread queue flushes an item that is in its
    /// start window on another queue and whose run queues its next instance
    /// onto the flusher's queue. The flush must return after the starting
    /// run; waiting for the next instance (behind the flusher) deadlocks.
    #[test]
    // Real threads, sleeps and a 3 s period: too slow under miri.
    #[cfg_attr(miri, ignore)]
    fn flush_in_the_start_window_from_a_one_thread_queue_does_not_deadlock() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let one = ONE_WQ.get_or_init(|| Workqueue::builder("one").threads(1).build().unwrap());
        let other =
            OTHER_WQ.get_or_init(|| Workqueue::builder("other").threads(1).build().unwrap());
        hook(&PING);
        assert!(other.queue(&PING));
        assert!(within(Duration::from_secs(10), || GATE.load(SeqCst) == 1));
        assert!(one.queue(&FLUSHER));
        assert!(flusher_waits(&PING), "the flusher never waited");
        let t0 = Instant::now();
        GATE.store(2, SeqCst);
        // Watchdog: a deadlock shows as a timeout, not a hung test.
        let done = within(Duration::from_secs(10), || FLUSHED.load(SeqCst) != 0);
        std::println!(
            "flush from a one-thread queue in the start window: returned {done} after {:?}",
            t0.elapsed()
        );
        assert!(
            done,
            "deadlock: the flush waited for the instance queued behind it"
        );
        assert_eq!(FLUSHED.load(SeqCst), 1);
        assert_eq!(one.flush(), Ok(()));
        assert_eq!(PING.runs(), 2);
    }
}
