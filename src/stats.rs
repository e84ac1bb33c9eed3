//! Per-CPU, per-vector counters and their `/proc/softirqs`-style table.
//!
//! Counters are `u32` and wrap, like Linux's `/proc/softirqs`. `coalesced`
//! is written by `raise` (any context on the CPU, so with `fetch_add`); the
//! others by the CPU's drain. Reads are `Relaxed` snapshots: a table taken
//! while the runtime is busy is a little torn, never wrong per counter.

use core::fmt;

use crate::backend::Backend;
use crate::softirq::{Runtime, Vector, MAX_VECTORS};
use crate::sync::{array_of, loom_const_fn, AtomicU32, Ordering};

/// One vector on one CPU.
pub(crate) struct VectorStats {
    /// Handler runs (one per drain pass that found the bit).
    pub(crate) runs: AtomicU32,
    /// Raises that found the bit already set.
    pub(crate) coalesced: AtomicU32,
    /// Raises of a vector with no handler, dropped at the drain.
    pub(crate) unhandled: AtomicU32,
    /// Runs (counted in `runs` too) whose handler panicked.
    pub(crate) panicked: AtomicU32,
    /// Longest single handler run, in nanoseconds of the backend's clock.
    pub(crate) max_ns: AtomicU32,
}

impl VectorStats {
    loom_const_fn! {
        fn new() -> VectorStats {
            VectorStats {
                runs: AtomicU32::new(0),
                coalesced: AtomicU32::new(0),
                unhandled: AtomicU32::new(0),
                panicked: AtomicU32::new(0),
                max_ns: AtomicU32::new(0),
            }
        }
    }
}

/// One CPU's counters.
pub(crate) struct CpuStats {
    vectors: [VectorStats; MAX_VECTORS],
    /// Drain passes after the first, summed over drains.
    pub(crate) restarts: AtomicU32,
    /// Drains that stopped with work left (restart or time budget spent).
    pub(crate) budget_exhausted: AtomicU32,
    /// Misuse counted and ignored on this CPU, indexed by [`Misuse`].
    misuse: [AtomicU32; Misuse::ALL.len()],
}

impl CpuStats {
    loom_const_fn! {
        pub(crate) fn new() -> CpuStats {
            CpuStats {
                vectors: array_of![VectorStats::new(); MAX_VECTORS],
                restarts: AtomicU32::new(0),
                budget_exhausted: AtomicU32::new(0),
                misuse: array_of![AtomicU32::new(0); Misuse::ALL.len()],
            }
        }
    }

    pub(crate) fn vector(&self, v: Vector) -> &VectorStats {
        &self.vectors[v.index()]
    }

    /// Counts one `m`. Top-half safe: one `Relaxed` `fetch_add`.
    #[cold]
    pub(crate) fn misuse(&self, m: Misuse) {
        self.misuse[m as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A misuse of the runtime that a top-half path counted and ignored
/// instead of panicking (see [`Stats::misuse`]).
///
/// Top halves run in interrupt and signal handlers, where a panic is an
/// abort (or worse, an unwind through a foreign frame); so each of these
/// is counted on the CPU it happened on and the call does what is safe.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Misuse, Runtime};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// assert_eq!(RT.irq_exit(), None); // no matching irq_enter
/// assert_eq!(RT.stats().misuse(0, Misuse::UnbalancedIrqExit), 1);
/// assert_eq!(Misuse::UnbalancedIrqExit.to_string(), "irq_exit without irq_enter");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Misuse {
    /// The backend ([`Backend::current_cpu`], a [`Board`](crate::Board)'s
    /// `cpu`) reported a CPU index `>= N`. The call used CPU `index % N`
    /// instead (its pending mask, lists and counters, and `kick(index %
    /// N)`), a slot that the runtime's drains serve; the count is on that
    /// CPU.
    CpuOutOfRange = 0,
    /// [`Runtime::irq_exit`](crate::Runtime::irq_exit) without a matching
    /// `irq_enter`: ignored (the depth stays at zero, nothing drains).
    UnbalancedIrqExit = 1,
    /// [`Tasklet::enable`](crate::Tasklet::enable) on a tasklet that was
    /// not disabled: ignored.
    UnbalancedEnable = 2,
    /// [`Tasklet::disable_nosync`](crate::Tasklet::disable_nosync) beyond
    /// the 511 nested disables the state word holds: ignored, so the
    /// tasklet stays disabled (the count saturates; one `enable` of the
    /// excess ones is then counted as unbalanced).
    DisableOverflow = 3,
    /// [`Runtime::bh_disable`](crate::Runtime::bh_disable) beyond
    /// [`BH_DISABLE_MAX`](crate::BH_DISABLE_MAX) nested guards on one CPU:
    /// the extra guard holds nothing (bottom halves stay off under the
    /// outer ones).
    BhDisableOverflow = 4,
    /// A bottom-half level not below the runtime's `L`: a tasklet, work
    /// item or delayed work item built with `at_level` of a level the
    /// runtime does not have ([`Tasklet::at_level`](crate::Tasklet::at_level),
    /// [`Work::at_level`](crate::Work::at_level),
    /// [`DelayedWork::at_level`](crate::DelayedWork::at_level): run at
    /// level `L - 1` instead, the highest it has),
    /// [`Runtime::drain_level`](crate::Runtime::drain_level) (drains
    /// nothing) or [`Runtime::bh_disable_to`](crate::Runtime::bh_disable_to)
    /// (covers every level).
    LevelOutOfRange = 5,
}

impl Misuse {
    /// Every kind, in counter order.
    pub const ALL: [Misuse; 6] = [
        Misuse::CpuOutOfRange,
        Misuse::UnbalancedIrqExit,
        Misuse::UnbalancedEnable,
        Misuse::DisableOverflow,
        Misuse::BhDisableOverflow,
        Misuse::LevelOutOfRange,
    ];

    /// The row label in the statistics table (20 columns).
    fn label(self) -> &'static str {
        match self {
            Misuse::CpuOutOfRange => "CPU out of range",
            Misuse::UnbalancedIrqExit => "unbalanced irq_exit",
            Misuse::UnbalancedEnable => "unbalanced enable",
            Misuse::DisableOverflow => "disable overflow",
            Misuse::BhDisableOverflow => "bh_disable overflow",
            Misuse::LevelOutOfRange => "level out of range",
        }
    }
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Misuse::CpuOutOfRange => "backend reported a CPU index out of range",
            Misuse::UnbalancedIrqExit => "irq_exit without irq_enter",
            Misuse::UnbalancedEnable => "tasklet enable without disable",
            Misuse::DisableOverflow => "tasklet disabled more than 511 times",
            Misuse::BhDisableOverflow => "bottom halves disabled more than 255 times on one CPU",
            Misuse::LevelOutOfRange => "bottom-half level out of the runtime's range",
        })
    }
}

/// A view of a runtime's counters; `Display` prints them like
/// `/proc/softirqs`: one row per vector, one column per CPU (CPU 0 up to
/// the highest CPU with any activity), then the per-CPU drain counters.
///
/// With several bottom-half levels the counters stay per CPU and vector:
/// a vector is of one level (the table labels it, `NAME (L1)`), and the
/// tasklet vectors 0 and 6 add up the tasklet runs of every level.
///
/// `raised` is derived, not counted, so that `raise` stays one atomic RMW
/// when it sets a bit: every raise either set the bit (and was then run,
/// dropped as unhandled, or is still pending) or was coalesced.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Vector};
/// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
/// const RCU: Vector = Vector::new(9);
/// RT.register(RCU, "RCU", |_| {}).unwrap();
/// RT.raise(RCU);
/// RT.raise(RCU);
/// RT.raise(Vector::new(12)); // no handler
/// let _ = RT.drain();
/// let s = RT.stats();
/// assert_eq!((s.raised(0, RCU), s.runs(0, RCU), s.coalesced(0, RCU)), (2, 1, 1));
/// assert_eq!(s.unhandled(0, Vector::new(12)), 1);
/// println!("{s}");
/// ```
///
/// With the `defmt` feature, `Stats` is also `defmt::Format`: the same
/// counters, one line per CPU and one per vector that has a name or any
/// activity, for a firmware's `defmt::info!("{}", RT.stats())`.
pub struct Stats<'a, B: Backend, const N: usize, const L: usize = 1> {
    rt: &'a Runtime<B, N, L>,
}

impl<'a, B: Backend, const N: usize, const L: usize> Stats<'a, B, N, L> {
    pub(crate) fn new(rt: &'a Runtime<B, N, L>) -> Self {
        Stats { rt }
    }

    fn cpu(&self, cpu: usize) -> &'a CpuStats {
        &self.rt.cpu_state(cpu).stats
    }

    /// Handler runs of `v` on `cpu`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.stats().runs(0, Vector::TASKLET), 0);
    /// ```
    pub fn runs(&self, cpu: usize, v: Vector) -> u32 {
        self.cpu(cpu).vector(v).runs.load(Ordering::Relaxed)
    }

    /// Raises of `v` on `cpu` that found it already pending.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.raise(Vector::new(1));
    /// RT.raise(Vector::new(1));
    /// assert_eq!(RT.stats().coalesced(0, Vector::new(1)), 1);
    /// # let _ = RT.drain();
    /// ```
    pub fn coalesced(&self, cpu: usize, v: Vector) -> u32 {
        self.cpu(cpu).vector(v).coalesced.load(Ordering::Relaxed)
    }

    /// Raises of `v` on `cpu` dropped at the drain because `v` had no
    /// handler.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.raise(Vector::new(20));
    /// let _ = RT.drain();
    /// assert_eq!(RT.stats().unhandled(0, Vector::new(20)), 1);
    /// ```
    pub fn unhandled(&self, cpu: usize, v: Vector) -> u32 {
        self.cpu(cpu).vector(v).unhandled.load(Ordering::Relaxed)
    }

    /// Runs of `v` on `cpu` whose handler panicked (for the tasklet
    /// vectors: passes in which a tasklet callback panicked). They are
    /// counted in [`runs`](Stats::runs) too, so
    /// [`raised`](Stats::raised) still adds up. After the panic the drain
    /// re-pends the vectors the pass had not run yet, releases the CPU and
    /// kicks the backend if work is pending, then lets the panic go on to
    /// the drain's caller.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.register(Vector::new(3), "BAD", |_| panic!("failed")).unwrap();
    /// RT.raise(Vector::new(3));
    /// assert!(std::panic::catch_unwind(|| RT.drain()).is_err());
    /// let s = RT.stats();
    /// assert_eq!((s.runs(0, Vector::new(3)), s.panicked(0, Vector::new(3))), (1, 1));
    /// assert_eq!(s.raised(0, Vector::new(3)), 1);
    /// ```
    pub fn panicked(&self, cpu: usize, v: Vector) -> u32 {
        self.cpu(cpu).vector(v).panicked.load(Ordering::Relaxed)
    }

    /// Misuse of kind `m` counted (and ignored) on `cpu`; see [`Misuse`].
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Misuse, Runtime, Tasklet};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static T: Tasklet = Tasklet::new(&RT, || {});
    /// T.enable(); // never disabled
    /// assert_eq!(RT.stats().misuse(0, Misuse::UnbalancedEnable), 1);
    /// assert!(!T.is_disabled());
    /// ```
    pub fn misuse(&self, cpu: usize, m: Misuse) -> u32 {
        self.cpu(cpu).misuse[m as usize].load(Ordering::Relaxed)
    }

    /// Raises of `v` on `cpu`: runs + coalesced + unhandled + 1 if it is
    /// pending now.
    ///
    /// For the tasklet vectors ([`Vector::HI_TASKLET`], [`Vector::TASKLET`])
    /// this counts drain passes over the list, not schedules: the queuing
    /// path does not count vector coalescing, and a pass that re-queues a
    /// tasklet running on another CPU raises again. Per-tasklet counts are
    /// [`Tasklet::runs`](crate::Tasklet::runs) and
    /// [`Tasklet::coalesced`](crate::Tasklet::coalesced).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.raise(Vector::new(2));
    /// assert_eq!(RT.stats().raised(0, Vector::new(2)), 1);
    /// # let _ = RT.drain();
    /// ```
    pub fn raised(&self, cpu: usize, v: Vector) -> u32 {
        let pending = self.rt.pending_count(cpu, v);
        self.runs(cpu, v)
            .wrapping_add(self.coalesced(cpu, v))
            .wrapping_add(self.unhandled(cpu, v))
            .wrapping_add(pending)
    }

    /// The longest single run of `v`'s handler on `cpu`, in nanoseconds of
    /// the backend's clock (saturating at `u32::MAX`).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Vector};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// RT.register(Vector::new(3), "SLOW", |_| std::thread::sleep(std::time::Duration::from_millis(1))).unwrap();
    /// RT.raise(Vector::new(3));
    /// let _ = RT.drain();
    /// assert!(RT.stats().max_handler_ns(0, Vector::new(3)) >= 1_000_000);
    /// ```
    pub fn max_handler_ns(&self, cpu: usize, v: Vector) -> u32 {
        self.cpu(cpu).vector(v).max_ns.load(Ordering::Relaxed)
    }

    /// Drain passes after the first on `cpu`, summed over drains.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.stats().restarts(0), 0);
    /// ```
    pub fn restarts(&self, cpu: usize) -> u32 {
        self.cpu(cpu).restarts.load(Ordering::Relaxed)
    }

    /// Drains on `cpu` that ran out of budget with work left.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.stats().budget_exhausted(0), 0);
    /// ```
    pub fn budget_exhausted(&self, cpu: usize) -> u32 {
        self.cpu(cpu).budget_exhausted.load(Ordering::Relaxed)
    }

    /// CPUs `0..shown` get a column: up to the highest CPU with any
    /// activity (at least CPU 0), so a runtime sized for many CPUs on a
    /// small machine prints a table as wide as the machine.
    fn shown(&self) -> usize {
        let active = |cpu: usize| {
            let st = self.cpu(cpu);
            self.rt.pending(cpu) != 0
                || st.restarts.load(Ordering::Relaxed) != 0
                || st.budget_exhausted.load(Ordering::Relaxed) != 0
                || st.misuse.iter().any(|m| m.load(Ordering::Relaxed) != 0)
                || Vector::ALL.into_iter().any(|v| {
                    let c = st.vector(v);
                    c.runs.load(Ordering::Relaxed) != 0
                        || c.coalesced.load(Ordering::Relaxed) != 0
                        || c.unhandled.load(Ordering::Relaxed) != 0
                })
        };
        (0..N)
            .rev()
            .find(|&cpu| active(cpu))
            .map_or(1, |cpu| cpu + 1)
    }

    fn row(
        &self,
        f: &mut fmt::Formatter<'_>,
        shown: usize,
        label: &str,
        value: impl Fn(usize) -> u32,
    ) -> fmt::Result {
        write!(f, "{label:>20}:")?;
        for cpu in 0..shown {
            write!(f, " {:>10}", value(cpu))?;
        }
        writeln!(f)
    }

    fn section(
        &self,
        f: &mut fmt::Formatter<'_>,
        shown: usize,
        title: &str,
        value: impl Fn(usize, Vector) -> u32,
    ) -> fmt::Result {
        writeln!(f, "{title}")?;
        for v in Vector::ALL {
            let active = (0..shown).any(|cpu| value(cpu, v) != 0);
            if let Some(name) = self.rt.vector_name(v) {
                if L > 1 && v != Vector::HI_TASKLET && v != Vector::TASKLET {
                    // With several levels, say which one the vector is of
                    // (the tasklet vectors are of every level).
                    let mut label = heapless::String::<24>::new();
                    let _ = fmt::write(
                        &mut label,
                        format_args!("{name} (L{})", self.rt.vector_level(v).index()),
                    );
                    self.row(f, shown, &label, |cpu| value(cpu, v))?;
                } else {
                    self.row(f, shown, name, |cpu| value(cpu, v))?;
                }
            } else if active {
                let mut label = heapless::String::<12>::new();
                let _ = fmt::write(&mut label, format_args!("vector {}", v.index()));
                self.row(f, shown, &label, |cpu| value(cpu, v))?;
            }
        }
        Ok(())
    }
}

impl<B: Backend, const N: usize, const L: usize> fmt::Display for Stats<'_, B, N, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.shown();
        write!(f, "{:>21}", "")?;
        for cpu in 0..shown {
            let mut label = heapless::String::<12>::new();
            let _ = fmt::write(&mut label, format_args!("CPU{cpu}"));
            write!(f, " {label:>10}")?;
        }
        writeln!(f)?;
        self.section(f, shown, "runs", |c, v| self.runs(c, v))?;
        self.section(f, shown, "raised", |c, v| self.raised(c, v))?;
        self.section(f, shown, "coalesced", |c, v| self.coalesced(c, v))?;
        self.section(f, shown, "dropped (no handler)", |c, v| {
            self.unhandled(c, v)
        })?;
        self.section(f, shown, "longest run (ns)", |c, v| {
            self.max_handler_ns(c, v)
        })?;
        // Printed only when something panicked or was misused, so a
        // healthy runtime's table keeps its shape.
        let any_panicked =
            (0..shown).any(|c| Vector::ALL.iter().any(|&v| self.panicked(c, v) != 0));
        if any_panicked {
            writeln!(f, "panicked")?;
            for v in Vector::ALL {
                if (0..shown).any(|c| self.panicked(c, v) != 0) {
                    let mut label = heapless::String::<12>::new();
                    let _ = fmt::write(&mut label, format_args!("vector {}", v.index()));
                    let name = self.rt.vector_name(v).unwrap_or(&label);
                    self.row(f, shown, name, |c| self.panicked(c, v))?;
                }
            }
        }
        writeln!(f, "drain")?;
        self.row(f, shown, "restarts", |c| self.restarts(c))?;
        self.row(f, shown, "budget exhausted", |c| self.budget_exhausted(c))?;
        for m in Misuse::ALL {
            if (0..shown).any(|c| self.misuse(c, m) != 0) {
                self.row(f, shown, m.label(), |c| self.misuse(c, m))?;
            }
        }
        Ok(())
    }
}

impl<B: Backend, const N: usize, const L: usize> fmt::Debug for Stats<'_, B, N, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The `defmt` form of the table: per CPU shown (as in `Display`), the
/// drain counters, then one line per vector that has a name or any
/// activity, then the misuse counters that are not zero.
#[cfg(feature = "defmt")]
impl<B: Backend, const N: usize, const L: usize> defmt::Format for Stats<'_, B, N, L> {
    fn format(&self, f: defmt::Formatter<'_>) {
        for cpu in 0..self.shown() {
            defmt::write!(
                f,
                "CPU{=usize}: restarts {=u32}, budget exhausted {=u32}\n",
                cpu,
                self.restarts(cpu),
                self.budget_exhausted(cpu)
            );
            for v in Vector::ALL {
                let counts = [
                    self.runs(cpu, v),
                    self.raised(cpu, v),
                    self.coalesced(cpu, v),
                    self.unhandled(cpu, v),
                    self.max_handler_ns(cpu, v),
                    self.panicked(cpu, v),
                ];
                let name = self.rt.vector_name(v);
                if name.is_none() && counts.iter().all(|&c| c == 0) {
                    continue;
                }
                defmt::write!(
                    f,
                    "  vector {=usize} {=str}: runs {=u32}, raised {=u32}, coalesced {=u32}, \
                     dropped {=u32}, longest {=u32} ns, panicked {=u32}\n",
                    v.index(),
                    name.unwrap_or(""),
                    counts[0],
                    counts[1],
                    counts[2],
                    counts[3],
                    counts[4],
                    counts[5]
                );
            }
            for m in Misuse::ALL {
                let n = self.misuse(cpu, m);
                if n != 0 {
                    defmt::write!(f, "  {=str}: {=u32}\n", m.label(), n);
                }
            }
        }
    }
}
