//! A fixed-capacity set of process ids that a signal handler reads with
//! atomic loads only: the run-time sender filter of the signal backend
//! (`Accept::pid_set`).
//!
//! How it works (slots, progress, consistency) is on [`PidSet`], where
//! rustdoc renders it.
//!
//! # Atomic orderings
//!
//! - `insert`'s successful CAS is Release; `contains`'s loads are Acquire
//!   (`pidset_insert_relaxed` / `pidset_contains_relaxed` name the pair):
//!   a handler that finds a pid sees everything the inserting thread wrote
//!   before the `insert` that added it (a table entry for that child, say).
//! - `remove` is Relaxed: it publishes nothing. A handler that starts
//!   after `remove` returned (ordered by the signal's delivery, or by any
//!   happens-before edge) reads the slot's latest value or a later one,
//!   never the removed pid (coherence).

use core::fmt;

use crate::sync::{array_of, loom_const_fn, ordering, AtomicU32, Ordering};

/// The empty slot.
const EMPTY: u32 = 0;

/// The slot value of `pid`, or `None` if `pid` is no process id (`<= 0`).
fn key(pid: libc::pid_t) -> Option<u32> {
    (pid > 0).then_some(pid as u32)
}

/// Whether one of `slots` holds `key`; Acquire ("Atomic orderings" above).
fn slots_contain(slots: &[AtomicU32], key: u32) -> bool {
    slots
        .iter()
        .any(|s| s.load(ordering!("pidset_contains_relaxed", Acquire, Relaxed)) == key)
}

/// The pids in `slots`, for `Debug`.
fn debug_slots(slots: &[AtomicU32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.debug_set()
        .entries(
            slots
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .filter(|&k| k != EMPTY)
                .map(|k| k as libc::pid_t),
        )
        .finish()
}

/// A set of at most `N` process ids, filled at run time, that a signal
/// handler reads without locks: the sender filter
/// [`Accept::pid_set`](crate::Accept::pid_set) for a program that learns
/// its trusted pids as it runs (children it spawns, peers that register),
/// with no leaked list.
///
/// Put it in a `static` (all zeros: `.bss`), give the filter to
/// [`SignalConfig::accept`](crate::SignalConfig::accept), then
/// [`insert`](PidSet::insert) and [`remove`](PidSet::remove) pids from
/// normal context while the handler is installed. A handler that finds a
/// pid sees what the program wrote before the `insert` that added it.
///
/// Like [`Accept::Pids`](crate::Accept::Pids), the filter checks only what
/// the kernel vouches for: a `sigqueue` sender's pid is its own claim, so
/// such signals are rejected unless the filter is wrapped in
/// [`Accept::AllowUnverified`](crate::Accept::AllowUnverified).
///
/// # How it works
///
/// `N` slots, each one `AtomicU32`: `0` (empty) or a pid (`> 0`, stored as
/// its bits). The program changes the set from normal context; the handler
/// only reads it. No lock anywhere, nothing allocated, so a `static
/// PidSet` lands in `.bss` (all zeros) and the handler can read it while
/// another thread changes it.
///
/// - `insert` scans for the pid (already there: nothing to do), then
///   claims the first empty slot with one compare-and-swap per slot: at
///   most `N` steps, wait-free. Two threads inserting the *same* pid at
///   once may both claim a slot; `remove` clears every slot holding the
///   pid, so the set's meaning is unchanged (a capacity is spent until
///   then).
/// - `remove` clears every slot holding the pid (one CAS each).
/// - `contains` (the handler) loads each slot: `N` loads, bounded.
///
/// A slot's value is one atomic word, so a reader sees a pid whole or not
/// at all; membership is per-slot linearizable. `Full` is exact when no
/// other thread changes the set during the call (a slot freed behind the
/// scan by a concurrent `remove` is not revisited).
///
/// # Examples
///
/// ```
/// use bottomhalf::{Accept, Config, PidSet, Runtime, SignalConfig, Signals};
///
/// static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
/// static PEERS: PidSet<8> = PidSet::new();
///
/// let h = RT
///     .install(SignalConfig::new(libc::SIGPWR, |_| {}).accept(Accept::pid_set(&PEERS)))
///     .unwrap();
/// // SAFETY: raising a signal whose handler is installed.
/// unsafe { libc::raise(libc::SIGPWR) }; // we are not a peer yet
/// assert_eq!((h.handled(), h.rejected()), (0, 1));
///
/// let me = std::process::id() as libc::pid_t; // learnt at run time
/// assert_eq!(PEERS.insert(me), Ok(true));
/// // SAFETY: as above.
/// unsafe { libc::raise(libc::SIGPWR) };
/// assert_eq!((h.handled(), h.rejected()), (1, 1));
///
/// assert!(PEERS.remove(me));
/// // SAFETY: as above.
/// unsafe { libc::raise(libc::SIGPWR) };
/// assert_eq!((h.handled(), h.rejected()), (1, 2));
/// ```
pub struct PidSet<const N: usize> {
    /// `EMPTY` or a pid. Written by `insert` (CAS `EMPTY` → pid, Release)
    /// and `remove` (CAS pid → `EMPTY`, Relaxed) from normal context; read
    /// by `contains` (Acquire), in signal handlers too.
    slots: [AtomicU32; N],
}

impl<const N: usize> PidSet<N> {
    loom_const_fn! {
        /// An empty set (all zeros: a `static` lands in `.bss`).
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::PidSet;
        /// static SET: PidSet<4> = PidSet::new();
        /// assert!(SET.is_empty());
        /// assert_eq!(SET.capacity(), 4);
        /// ```
        pub fn new() -> Self {
            PidSet {
                slots: array_of![AtomicU32::new(EMPTY); N],
            }
        }
    }

    /// Adds `pid`: `Ok(true)` if it was added, `Ok(false)` if it was there
    /// already. Everything the caller wrote before a call that returns
    /// `Ok(true)` is visible to a handler that then finds `pid`.
    ///
    /// Wait-free: at most `N` compare-and-swaps. Two threads inserting the
    /// same pid at once may spend two slots on it ([`PidSet`] docs); `remove`
    /// clears both.
    ///
    /// Top-half safe: yes (though a handler has little reason to). Allocates:
    /// no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`PidSetError::NotAPid`] for `pid <= 0`; [`PidSetError::Full`] when
    /// every slot holds another pid.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{PidSet, PidSetError};
    /// static SET: PidSet<1> = PidSet::new();
    /// assert_eq!(SET.insert(42), Ok(true));
    /// assert_eq!(SET.insert(42), Ok(false));
    /// assert_eq!(SET.insert(43), Err(PidSetError::Full { capacity: 1 }));
    /// assert_eq!(SET.insert(-1), Err(PidSetError::NotAPid(-1)));
    /// ```
    pub fn insert(&self, pid: libc::pid_t) -> Result<bool, PidSetError> {
        let Some(key) = key(pid) else {
            return Err(PidSetError::NotAPid(pid));
        };
        if slots_contain(&self.slots, key) {
            return Ok(false);
        }
        for slot in &self.slots {
            // Release: pairs with the Acquire load in `slots_contain` (a
            // handler that finds `key` sees the caller's earlier writes).
            let order = ordering!("pidset_insert_relaxed", Release, Relaxed);
            if slot
                .compare_exchange(EMPTY, key, order, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(true);
            }
        }
        Err(PidSetError::Full { capacity: N })
    }

    /// Removes `pid` (every slot that holds it); `true` if it was there.
    /// A handler that starts after this returns rejects `pid`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PidSet;
    /// static SET: PidSet<2> = PidSet::new();
    /// SET.insert(7).unwrap();
    /// assert!(SET.remove(7));
    /// assert!(!SET.remove(7));
    /// assert!(!SET.contains(7));
    /// ```
    pub fn remove(&self, pid: libc::pid_t) -> bool {
        let Some(key) = key(pid) else {
            return false;
        };
        let mut removed = false;
        for slot in &self.slots {
            // Relaxed: a removal publishes nothing (module docs).
            if slot
                .compare_exchange(key, EMPTY, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                removed = true;
            }
        }
        removed
    }

    /// Whether `pid` is in the set (what the signal handler asks).
    ///
    /// Top-half safe: yes (`N` atomic loads). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`PidSet::remove`].
    pub fn contains(&self, pid: libc::pid_t) -> bool {
        key(pid).is_some_and(|k| slots_contain(&self.slots, k))
    }

    /// The number of slots in use (a snapshot; a pid inserted twice at
    /// once counts twice until removed).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PidSet;
    /// static SET: PidSet<3> = PidSet::new();
    /// SET.insert(5).unwrap();
    /// assert_eq!(SET.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != EMPTY)
            .count()
    }

    /// `len() == 0`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`PidSet::new`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `N`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`PidSet::new`].
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> Default for PidSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for PidSet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_slots(&self.slots, f)
    }
}

/// A `&'static PidSet` of any capacity, as [`Accept::PidSet`](crate::Accept)
/// holds it; made by [`Accept::pid_set`](crate::Accept::pid_set) or
/// [`PidSetRef::new`]. Two are equal when they name the same set.
///
/// # Examples
///
/// ```
/// use bottomhalf::{PidSet, PidSetRef};
/// static A: PidSet<2> = PidSet::new();
/// static B: PidSet<2> = PidSet::new();
/// assert_eq!(PidSetRef::new(&A), PidSetRef::new(&A));
/// assert_ne!(PidSetRef::new(&A), PidSetRef::new(&B));
/// A.insert(9).unwrap();
/// assert!(PidSetRef::new(&A).contains(9));
/// ```
#[derive(Clone, Copy)]
pub struct PidSetRef {
    slots: &'static [AtomicU32],
}

impl PidSetRef {
    /// Refers to `set`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`PidSetRef`].
    pub const fn new<const N: usize>(set: &'static PidSet<N>) -> PidSetRef {
        PidSetRef { slots: &set.slots }
    }

    /// [`PidSet::contains`] of the set.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`PidSetRef`].
    pub fn contains(&self, pid: libc::pid_t) -> bool {
        key(pid).is_some_and(|k| slots_contain(self.slots, k))
    }
}

impl PartialEq for PidSetRef {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self.slots, other.slots)
    }
}

impl Eq for PidSetRef {}

impl fmt::Debug for PidSetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PidSet")?;
        debug_slots(self.slots, f)
    }
}

/// Why [`PidSet::insert`] refused a pid.
///
/// # Examples
///
/// ```
/// use bottomhalf::{PidSet, PidSetError};
/// static SET: PidSet<0> = PidSet::new();
/// let e = SET.insert(1).unwrap_err();
/// assert_eq!(e, PidSetError::Full { capacity: 0 });
/// assert!(e.to_string().contains("full"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum PidSetError {
    /// `pid <= 0`: not one process (0 and negative ids name process
    /// groups to `kill`, never a signal's sender).
    NotAPid(libc::pid_t),
    /// Every slot holds another pid.
    Full {
        /// The set's `N`.
        capacity: usize,
    },
}

impl fmt::Display for PidSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidSetError::NotAPid(pid) => {
                write!(f, "{pid} is not a process id (a PidSet holds ids > 0)")
            }
            PidSetError::Full { capacity } => {
                write!(f, "the PidSet is full (capacity {capacity} process ids)")
            }
        }
    }
}

impl core::error::Error for PidSetError {}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::{PidSet, PidSetError, PidSetRef};

    #[test]
    fn is_empty_follows_inserts_and_removes() {
        let set: PidSet<2> = PidSet::new();
        assert!(set.is_empty());
        set.insert(7).unwrap();
        assert!(!set.is_empty());
        assert!(set.remove(7));
        assert!(set.is_empty());
    }

    /// Two references are equal exactly when they refer to the same set.
    #[test]
    fn refs_are_equal_only_for_the_same_set() {
        static A: PidSet<2> = PidSet::new();
        static B: PidSet<2> = PidSet::new();
        assert!(PidSetRef::new(&A) == PidSetRef::new(&A));
        assert!(PidSetRef::new(&A) != PidSetRef::new(&B));
    }

    #[test]
    fn insert_remove_contains_and_full() {
        let set: PidSet<2> = PidSet::new();
        assert_eq!(set.insert(0), Err(PidSetError::NotAPid(0)));
        assert!(!set.contains(0) && !set.remove(0) && !set.contains(-1));
        assert_eq!(set.insert(3), Ok(true));
        assert_eq!(set.insert(3), Ok(false));
        assert_eq!(set.insert(4), Ok(true));
        assert_eq!(set.insert(5), Err(PidSetError::Full { capacity: 2 }));
        assert_eq!(set.len(), 2);
        assert!(set.remove(3));
        assert!(!set.contains(3) && set.contains(4));
        // The freed slot is reused.
        assert_eq!(set.insert(5), Ok(true));
        assert_eq!(std::format!("{set:?}"), "{5, 4}");
        assert_eq!(set.len(), set.capacity());
    }

    /// Writers insert and remove their own pids while a reader looks: a
    /// pid that was never inserted is never found, and every writer's
    /// last insert is there at the end.
    #[test]
    fn concurrent_writers_and_a_reader() {
        static SET: PidSet<8> = PidSet::new();
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        std::thread::scope(|s| {
            for w in 1..=4 {
                s.spawn(move || {
                    for _ in 0..rounds {
                        assert_eq!(SET.insert(w), Ok(true));
                        assert!(SET.contains(w));
                        assert!(SET.remove(w));
                    }
                    assert_eq!(SET.insert(w), Ok(true));
                });
            }
            s.spawn(move || {
                let r = PidSetRef::new(&SET);
                for _ in 0..rounds {
                    assert!(!r.contains(99) && !r.contains(5));
                }
            });
        });
        assert!((1..=4).all(|w| SET.contains(w)));
        assert_eq!(SET.len(), 4);
    }
}
