//! Drain threads (Linux's `ksoftirqd/N`), shared by the std backends.
//!
//! A drain thread for CPU `c` first makes itself CPU `c` the way its
//! backend needs (the host backend binds the thread's CPU index; the
//! signal backend pins the thread and claims the CPU), then loops: take a
//! wake token, drain if work is pending, otherwise sleep on the CPU's
//! [`WakeWord`] until the backend's `kick` notifies it. No polling.
//!
//! A runtime with several bottom-half levels (`L > 1`) gets one thread per
//! CPU and level, each draining its own level only (`drain_level`), so a
//! higher level's work runs while a lower level's handler is still running
//! on the same CPU, as a higher-priority drain interrupt would preempt it
//! on bare metal. The threads of one CPU share its wake word: a kick at
//! any level wakes them all, and the ones whose level has nothing pending
//! go back to sleep (a spurious wake-up per other level, on a host).

use core::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::vec::Vec;

use crate::backend::Backend;
use crate::level::Level;
use crate::softirq::{DrainOutcome, Runtime};
use crate::sync::{AtomicBool, AtomicUsize, Ordering};
use crate::wake::WakeWord;

impl<B: Backend, const N: usize, const L: usize> Runtime<B, N, L> {
    /// The loop of CPU `cpu`'s drain thread, which must already run as
    /// CPU `cpu` (`B::current_cpu() == cpu`), until `stop` is set.
    ///
    /// With one level it drains with `drain`; with several, thread `lvl`
    /// of the CPU drains level `lvl` only.
    pub(crate) fn drain_loop(&self, cpu: usize, lvl: usize, stop: &AtomicBool) {
        let st = self.cpu_state(cpu);
        let wake = &st.wake;
        loop {
            // Token first, then the checks: a kick after the token makes the
            // wait return at once (see `WakeWord`).
            let token = wake.token();
            if stop.load(Ordering::Acquire) {
                return;
            }
            // Delayed work: raise the levels whose earliest timer is due;
            // sleep at most until the next one. (Every level's thread does
            // it for all levels of its CPU: a due level is raised by
            // whichever thread looks first.)
            let next = self.fire_due_timers(cpu);
            let pending = if L == 1 {
                self.pending(cpu)
            } else {
                self.pending_at(cpu, Level::from_index(lvl))
            };
            if pending != 0 {
                // A handler that panics has reported itself (the panic
                // hook) and left the CPU usable (see `drain`); this thread
                // goes on draining, as a CPU goes on taking interrupts.
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if L == 1 {
                        self.drain()
                    } else {
                        self.drain_level(Level::from_index(lvl))
                    }
                }));
                if !matches!(outcome, Ok(DrainOutcome::Busy | DrainOutcome::Disabled)) {
                    continue;
                }
            }
            // Nothing pending, or another thread bound to this CPU is
            // draining it: that drain runs what it finds and kicks us if it
            // runs out of budget. Or bottom halves are off on this CPU
            // (`bh_disable`): the last guard's drop drains, or kicks us.
            let timeout = (next != u64::MAX)
                .then(|| core::time::Duration::from_nanos(next.saturating_sub(B::now_ns()).max(1)));
            wake.wait(token, timeout);
        }
    }
}

/// The drain threads of a runtime; dropping this stops and joins them.
///
/// # After `fork()`
///
/// A child process has none of its parent's threads. A `DrainThreads`
/// dropped in a child forked after it was spawned (the fork generation
/// differs) neither stops nor joins anything: it forgets its thread
/// handles, and the child starts its own drain threads if it wants them
/// (see the crate docs' `fork()` section).
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Runtime};
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// let drains = RT.spawn_drain_threads().unwrap();
/// assert_eq!(drains.len(), 1);
/// ```
#[derive(Debug)]
pub struct DrainThreads {
    stop: Arc<AtomicBool>,
    pinned: Arc<AtomicUsize>,
    words: Vec<&'static WakeWord>,
    threads: Vec<JoinHandle<()>>,
    /// The fork generation the threads were spawned in.
    #[cfg(unix)]
    generation: u32,
}

impl DrainThreads {
    /// Starts one thread per CPU `0..cpus` of `rt` and level `0..L`, named
    /// `{name}/{cpu}` (one level) or `{name}/{cpu}/L{level}`: each runs
    /// `become_cpu(cpu)` (which returns `true` if it pinned the thread to a
    /// real CPU) and then `rt.drain_loop(cpu, level, ..)`. If a spawn
    /// fails, the threads already started are stopped and joined.
    pub(crate) fn spawn<B: Backend, const N: usize, const L: usize>(
        rt: &'static Runtime<B, N, L>,
        cpus: usize,
        name: &str,
        become_cpu: fn(&'static Runtime<B, N, L>, usize) -> bool,
    ) -> std::io::Result<DrainThreads> {
        // A child of `fork()`: clear what a parent thread left on every
        // CPU, so no kick is skipped for a drain that does not exist here.
        #[cfg(all(unix, not(bottomhalf_loom)))]
        {
            crate::fork::ensure_atfork();
            rt.repair_after_fork();
        }
        let mut threads = DrainThreads {
            stop: Arc::new(AtomicBool::new(false)),
            pinned: Arc::new(AtomicUsize::new(0)),
            words: Vec::with_capacity(cpus * L),
            threads: Vec::with_capacity(cpus * L),
            #[cfg(unix)]
            generation: fork_generation(),
        };
        for cpu in 0..cpus {
            for lvl in 0..L {
                let stop = Arc::clone(&threads.stop);
                let pinned = Arc::clone(&threads.pinned);
                let thread_name = if L == 1 {
                    std::format!("{name}/{cpu}")
                } else {
                    std::format!("{name}/{cpu}/L{lvl}")
                };
                let handle = std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || {
                        if become_cpu(rt, cpu) {
                            pinned.fetch_add(1, Ordering::Relaxed);
                        }
                        rt.drain_loop(cpu, lvl, &stop);
                    })?;
                threads.words.push(&rt.cpu_state(cpu).wake);
                threads.threads.push(handle);
            }
        }
        Ok(threads)
    }

    /// The number of threads: one per CPU and bottom-half level.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`DrainThreads`].
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// `true` if there are no threads (never, for a started runtime).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// assert!(!RT.spawn_drain_threads().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Threads that have pinned themselves to a real CPU so far: the
    /// signal backend's do (a thread the cpuset keeps off its CPU still
    /// drains it, unpinned); the host backend's CPUs are only indices, so
    /// its threads never pin.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime};
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// assert_eq!(RT.spawn_drain_threads().unwrap().pinned(), 0);
    /// ```
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Relaxed)
    }
}

/// The fork generation (0 where there is no fork repair).
#[cfg(unix)]
fn fork_generation() -> u32 {
    #[cfg(not(bottomhalf_loom))]
    return crate::fork::generation();
    #[cfg(bottomhalf_loom)]
    return 0;
}

impl Drop for DrainThreads {
    fn drop(&mut self) {
        #[cfg(unix)]
        if self.generation != fork_generation() {
            // Forked since the spawn: the threads are the parent's and do
            // not exist here. Joining would wait forever; detaching would
            // hand libc a thread descriptor of the parent. Forget them.
            core::mem::forget(core::mem::take(&mut self.threads));
            return;
        }
        self.stop.store(true, Ordering::Release);
        for word in &self.words {
            word.notify();
        }
        for thread in self.threads.drain(..) {
            // A handler that panicked already reported itself; the other
            // threads are still stopped and joined.
            let _ = thread.join();
        }
    }
}
