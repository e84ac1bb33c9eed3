//! Workqueue statistics: runs, panics and long runs by item name, and
//! their `Display`.
//!
//! Nothing here is touched by `queue` except the `rejected` counter (one
//! relaxed `fetch_add`, in `Shared`). Panics and long runs are recorded by
//! workers, after the item returned, in fixed-size name tables: the first
//! [`NAMES`] distinct names get their own count, the rest are summed.

use core::fmt;
use core::time::Duration;
use std::string::String;
use std::vec::Vec;

/// Distinct names kept per table.
pub(super) const NAMES: usize = 16;

/// Per-name counts in fixed storage.
#[derive(Clone, Debug)]
pub(super) struct NameTable {
    entries: [(&'static str, u64); NAMES],
    len: usize,
    /// Counts of names that did not fit.
    other: u64,
}

impl NameTable {
    pub(super) const fn new() -> NameTable {
        NameTable {
            entries: [("", 0); NAMES],
            len: 0,
            other: 0,
        }
    }

    pub(super) fn record(&mut self, name: &'static str) {
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.0 == name) {
            e.1 += 1;
        } else if self.len < NAMES {
            self.entries[self.len] = (name, 1);
            self.len += 1;
        } else {
            self.other += 1;
        }
    }

    fn to_vec(&self) -> Vec<(&'static str, u64)> {
        self.entries[..self.len].to_vec()
    }
}

/// How [`high_priority`](super::WorkqueueBuilder::high_priority) went.
///
/// # Examples
///
/// ```
/// use bottomhalf::{HighPriority, Workqueue};
/// let wq = Workqueue::builder("plain").threads(1).build().unwrap();
/// assert_eq!(wq.stats().high_priority, HighPriority::Off);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HighPriority {
    /// Not requested.
    Off,
    /// Every worker runs at nice -20.
    Applied,
    /// `setpriority` was refused for `threads` workers (usually `EACCES`:
    /// raising priority needs `CAP_SYS_NICE` or a `RLIMIT_NICE` allowance);
    /// those run at the default priority.
    Denied {
        /// Workers left at the default priority.
        threads: u32,
        /// The `errno` of the last refusal.
        errno: i32,
    },
    /// Not supported here (not Linux, or under miri).
    Unsupported,
}

/// What workers record under the statistics lock.
pub(super) struct StatsState {
    pub(super) panics: u64,
    pub(super) panicked: NameTable,
    pub(super) last_panic: Option<(&'static str, String)>,
    pub(super) long_runs: u64,
    pub(super) long_names: NameTable,
    pub(super) longest: Option<(&'static str, u64)>,
    pub(super) pin_failures: u32,
    pub(super) pin_errno: i32,
    pub(super) priority_denied: u32,
    pub(super) priority_errno: i32,
    pub(super) priority_unsupported: bool,
}

impl StatsState {
    pub(super) const fn new() -> StatsState {
        StatsState {
            panics: 0,
            panicked: NameTable::new(),
            last_panic: None,
            long_runs: 0,
            long_names: NameTable::new(),
            longest: None,
            pin_failures: 0,
            pin_errno: 0,
            priority_denied: 0,
            priority_errno: 0,
            priority_unsupported: false,
        }
    }

    pub(super) fn record_long(&mut self, name: &'static str, ns: u64) {
        self.long_runs += 1;
        self.long_names.record(name);
        if self.longest.is_none_or(|(_, l)| ns > l) {
            self.longest = Some((name, ns));
        }
    }

    pub(super) fn panicked(&self) -> (Vec<(&'static str, u64)>, u64) {
        (self.panicked.to_vec(), self.panicked.other)
    }

    pub(super) fn long_names(&self) -> (Vec<(&'static str, u64)>, u64) {
        (self.long_names.to_vec(), self.long_names.other)
    }
}

/// A snapshot of a workqueue's counters ([`Workqueue::stats`](super::Workqueue::stats)).
/// `Display` prints a small report.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Work, Workqueue};
/// static OOPS: Work = Work::new("oops", |_| panic!("bad input"));
/// let wq = Workqueue::builder("events").threads(1).build().unwrap();
/// wq.queue(&OOPS);
/// OOPS.flush().unwrap();
/// let s = wq.stats();
/// assert_eq!((s.runs, s.panics), (1, 1));
/// assert_eq!(s.panicked, vec![("oops", 1)]);
/// println!("{s}");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkqueueStats {
    /// The workqueue's name.
    pub name: &'static str,
    /// One pool per CPU (else one unbound pool).
    pub per_cpu: bool,
    /// One item at a time, in queue order.
    pub ordered: bool,
    /// Pools (CPUs for a per-CPU queue).
    pub pools: usize,
    /// Worker threads per pool (0: run by `run_pending`).
    pub threads: usize,
    /// The bound on items running at once, per pool.
    pub max_active: usize,
    /// Items run (a panicking run counts).
    pub runs: u64,
    /// Most items seen running at once in one pool.
    pub max_active_seen: u32,
    /// Items queued, waiting to run (not counting timers).
    pub queued: usize,
    /// Delayed items waiting for their timer.
    pub timers: usize,
    /// Timers that expired and queued their item.
    pub timers_fired: u64,
    /// Items found still running when their next instance came up, and set
    /// aside until that run was over.
    pub collisions: u64,
    /// Queues refused: the workqueue was stopping
    /// ([`WorkqueueError::Stopped`](super::WorkqueueError::Stopped)), the
    /// process is a child of `fork()`
    /// ([`Forked`](super::WorkqueueError::Forked)), or `queue_on` named a
    /// CPU without a pool
    /// ([`CpuOutOfRange`](super::WorkqueueError::CpuOutOfRange)).
    pub rejected: u64,
    /// Delayed items dropped at stop because their timer had not expired.
    pub discarded_at_stop: u64,
    /// Items that panicked (caught; the worker lived on).
    pub panics: u64,
    /// Panics by item name (the first 16 names).
    pub panicked: Vec<(&'static str, u64)>,
    /// Panics of items beyond those 16 names.
    pub panicked_other: u64,
    /// The last panic: item name and message.
    pub last_panic: Option<(&'static str, String)>,
    /// The watchdog threshold, if on.
    pub watchdog: Option<Duration>,
    /// Runs longer than the threshold.
    pub long_runs: u64,
    /// Long runs by item name (the first 16 names).
    pub long_running: Vec<(&'static str, u64)>,
    /// Long runs of items beyond those 16 names.
    pub long_running_other: u64,
    /// The longest run seen by the watchdog, with its item.
    pub longest: Option<(&'static str, Duration)>,
    /// Items running now for longer than the threshold.
    pub running_long: Vec<(&'static str, Duration)>,
    /// Per-CPU workers that could not be pinned to their CPU.
    pub pin_failures: u32,
    /// The `errno` of the last pinning failure.
    pub pin_errno: i32,
    /// How `high_priority` went.
    pub high_priority: HighPriority,
}

impl fmt::Display for WorkqueueStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.ordered {
            "ordered"
        } else if self.per_cpu {
            "per-CPU"
        } else {
            "unbound"
        };
        writeln!(
            f,
            "workqueue {:?}: {kind}, {} pool(s) x {} thread(s), max_active {}",
            self.name, self.pools, self.threads, self.max_active
        )?;
        writeln!(
            f,
            "  runs {} (at most {} at once), queued {}, timers {} (fired {}), collisions {}",
            self.runs,
            self.max_active_seen,
            self.queued,
            self.timers,
            self.timers_fired,
            self.collisions
        )?;
        writeln!(
            f,
            "  rejected (stopped, forked, bad CPU) {}, discarded at stop {}",
            self.rejected, self.discarded_at_stop
        )?;
        write!(f, "  panics {}", self.panics)?;
        write_names(f, &self.panicked, self.panicked_other)?;
        if let Some((name, msg)) = &self.last_panic {
            write!(f, "; last: {name}: {msg:?}")?;
        }
        writeln!(f)?;
        match self.watchdog {
            Some(limit) => {
                write!(f, "  watchdog {limit:?}: long runs {}", self.long_runs)?;
                write_names(f, &self.long_running, self.long_running_other)?;
                if let Some((name, d)) = self.longest {
                    write!(f, "; longest {name} {d:?}")?;
                }
                writeln!(f)?;
                for (name, d) in &self.running_long {
                    writeln!(f, "  running now over the threshold: {name} for {d:?}")?;
                }
            }
            None => writeln!(f, "  watchdog off")?,
        }
        if self.pin_failures != 0 {
            writeln!(
                f,
                "  pinning failed for {} worker(s) (errno {})",
                self.pin_failures, self.pin_errno
            )?;
        }
        match self.high_priority {
            HighPriority::Off => Ok(()),
            HighPriority::Applied => writeln!(f, "  high priority: nice -20"),
            HighPriority::Denied { threads, errno } => writeln!(
                f,
                "  high priority refused for {threads} worker(s) (errno {errno}): default priority"
            ),
            HighPriority::Unsupported => writeln!(f, "  high priority: not supported here"),
        }
    }
}

fn write_names(f: &mut fmt::Formatter<'_>, names: &[(&str, u64)], other: u64) -> fmt::Result {
    for (i, (name, n)) in names.iter().enumerate() {
        write!(f, "{}{name} x{n}", if i == 0 { ": " } else { ", " })?;
    }
    if other != 0 {
        write!(f, ", others x{other}")?;
    }
    Ok(())
}
