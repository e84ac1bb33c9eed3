//! `Workqueue`: named worker pools, their builder, the worker loop, flush
//! and the stop/drain/join sequence.

use core::any::Any;
use core::panic::AssertUnwindSafe;
use core::ptr;
use core::time::Duration;
use std::boxed::Box;
use std::io;
use std::string::{String, ToString};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::vec::Vec;

use super::context;
use super::lock::Lock;
use super::pool::{After, Pool, PoolConfig, Started, Step, Stop};
use super::stats::{HighPriority, StatsState, WorkqueueStats};
use super::work::{inherited, pool_of, DelayedWorkRef, Link, WorkRef};
use super::WorkqueueError;
use crate::backend::{Backend, Host};
use crate::sync::{AtomicBool, AtomicUsize, Ordering};
use crate::work::{flags, Pend, Target, CANCELING, DELAYED, HELD, PENDING};

/// What the handle and the worker threads share.
pub(super) struct Shared {
    name: &'static str,
    pools: Vec<&'static Pool>,
    /// Per-CPU: the CPU number pool `i` is pinned to.
    cpu_ids: Vec<usize>,
    /// Per-CPU: CPU number → pool index (`u32::MAX`: none).
    by_cpu: Vec<u32>,
    per_cpu: bool,
    ordered: bool,
    threads: usize,
    max_active: usize,
    high_priority: bool,
    watchdog: Option<Duration>,
    /// Set by drop: `queue` is refused, unexpired timers are dropped.
    stopping: AtomicBool,
    /// Set by drop once no item that could still queue is running: workers
    /// exit when their pool is empty.
    exit: AtomicBool,
    /// Queues refused because of `stopping` (or in a child of `fork()`).
    rejected: AtomicUsize,
    /// The fork generation the workqueue was built in; in another one
    /// (a child of `fork()`) its threads do not exist and every operation
    /// is refused without touching the pools.
    generation: u32,
    stats: Lock<StatsState>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.forked() {
            // Inherited pools may hold items and a lock held by a thread
            // that does not exist here: never recycled.
            return;
        }
        for pool in &self.pools {
            pool.retire();
        }
    }
}

impl Shared {
    /// `true` in a child of `fork()` (see `generation`).
    #[inline]
    fn forked(&self) -> bool {
        self.generation != super::fork_generation()
    }

    /// `Err(Forked)` in a child of `fork()`.
    #[inline]
    fn check_fork(&self) -> Result<(), WorkqueueError> {
        if self.forked() {
            Err(WorkqueueError::Forked)
        } else {
            Ok(())
        }
    }

    fn stop_flags(&self) -> Stop {
        Stop {
            stopping: self.stopping.load(Ordering::Acquire),
            exit: self.exit.load(Ordering::Acquire),
        }
    }

    /// `true` if the calling thread works for one of our pools.
    fn is_own_worker(&self) -> bool {
        let me = context::get().pool;
        !me.is_null() && self.pools.iter().any(|p| ptr::eq(*p, me))
    }

    /// `true` if the calling thread runs an item (of any workqueue) whose
    /// next instance is pending at one of our pools: that instance waits
    /// for the caller's run to end (set aside), so waiting for it from the
    /// run would never return. `timers`: an instance still waiting for its
    /// timer counts too (a stop runs expired timers; a flush does not wait
    /// for them).
    fn holds_callers_next_instance(&self, timers: bool) -> bool {
        // SAFETY: the context names the item this thread is running,
        // alive for the run (or null).
        let Some(w) = (unsafe { context::get().work.as_ref() }) else {
            return false;
        };
        let s = w.state.load(Ordering::Acquire);
        let pending = if timers { PENDING } else { PENDING | DELAYED };
        flags(s) & pending == PENDING && self.pools.iter().any(|p| ptr::eq(*p, pool_of(s)))
    }

    /// `true` if waiting for our pools to empty could wait for the caller
    /// (`stop` and the drop): it works for one of them, or its item's next
    /// instance is pending at one of them.
    fn stop_waits_for_caller(&self) -> bool {
        self.is_own_worker() || self.holds_callers_next_instance(true)
    }

    /// Counts a panic of item `name` (its run, or the drop of what its
    /// closure captured).
    fn record_panic(&self, name: &'static str, payload: Box<dyn Any + Send>) {
        let msg = if let Some(m) = payload.downcast_ref::<&str>() {
            (*m).to_string()
        } else if let Some(m) = payload.downcast_ref::<String>() {
            m.clone()
        } else {
            String::from("(non-string panic payload)")
        };
        self.stats.with(|st| {
            st.panics += 1;
            st.panicked.record(name);
            st.last_panic = Some((name, msg));
        });
        // A payload whose drop panics would kill the worker: drop it under
        // `catch_unwind` too, leaking only such a second payload.
        if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            core::mem::forget(again);
        }
    }

    /// Runs a started item: catches a panic, times the run.
    fn run(&self, s: &Started) {
        // SAFETY: a started item stays alive until its run is finished and
        // its count (if any) released, both after this returns.
        let work = unsafe { s.work.as_ref() };
        let prev = context::enter_work(work);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work.call()));
        context::replace(prev);
        if let Err(payload) = result {
            self.record_panic(work.name(), payload);
        }
        if let Some(limit) = self.watchdog {
            let ns = Host::now_ns().saturating_sub(s.since_ns);
            if ns > nanos(limit) {
                self.stats.with(|st| st.record_long(work.name(), ns));
            }
        }
    }

    /// Steps and runs `pool` in the calling thread until nothing is
    /// runnable; returns the items run.
    fn run_pool(&self, pool: &'static Pool) -> usize {
        let cpu = self.per_cpu_index(pool);
        let prev = context::enter_pool(pool, cpu);
        let mut after = After::default();
        let mut done = None;
        let mut n = 0;
        loop {
            let step = pool.step(done.take(), self.stop_flags(), &mut after);
            after.run(pool, |name, payload| self.record_panic(name, payload));
            match step {
                Step::Run(s) => {
                    self.run(&s);
                    n += 1;
                    done = Some(s);
                }
                Step::Idle(_) | Step::Exit => break,
            }
        }
        context::replace(prev);
        n
    }

    fn per_cpu_index(&self, pool: &Pool) -> Option<usize> {
        if !self.per_cpu {
            return None;
        }
        self.pools.iter().position(|p| ptr::eq(*p, pool))
    }

    /// Refuses new work and waits until every pool is empty (the body of
    /// `Workqueue::stop`). `manual`: no worker threads, drain here.
    fn stop(&self, manual: bool) {
        // SeqCst: every `queue` ordered after this store is refused.
        self.stopping.store(true, Ordering::SeqCst);
        for pool in &self.pools {
            // Workers step again: unexpired timers are dropped.
            pool.notify_all();
        }
        // An item that read `stopping == false` may still push onto any of
        // our pools, but only while it runs. After one pass in which each
        // pool was seen empty (so with no item running), every such item
        // has finished; its pushes happened before and are caught by the
        // second pass. Items started later read `true` and are refused.
        // (Modelled in `loom-tests/tests/workqueue_stop.rs`; the mutant
        // `wq_stop_one_pass` drops the second pass.)
        for _pass in 0..STOP_PASSES {
            for &pool in &self.pools {
                loop {
                    let token = pool.flushed().token();
                    if manual {
                        self.run_pool(pool);
                    }
                    if pool.quiescent_now() {
                        break;
                    }
                    // Manual: set aside behind a run elsewhere, or nothing
                    // to run yet: look again shortly.
                    pool.flushed()
                        .wait(token, manual.then(|| Duration::from_millis(1)));
                    // loom models a timed wait as "may return at once": let
                    // the thread running the item go first.
                    #[cfg(bottomhalf_loom)]
                    crate::sync::spin_wait();
                }
            }
        }
    }

    /// Stops the (empty) pools' workers and joins them.
    fn join(&self, threads: Vec<JoinHandle<()>>) {
        self.exit.store(true, Ordering::SeqCst);
        for pool in &self.pools {
            pool.notify_all();
        }
        for t in threads {
            // Item panics are caught; a worker never panics itself.
            let _ = t.join();
        }
    }
}

/// Passes of the stop drain over the pools (see `Shared::stop`).
const STOP_PASSES: usize = if cfg!(bh_mutant = "wq_stop_one_pass") {
    1
} else {
    2
};

/// Threads per pool: sleepers are counted in 8 bits per sleep slot.
const MAX_THREADS: usize = 1000;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn worker_main(shared: Arc<Shared>, index: usize, slot: usize) {
    let pool = shared.pools[index];
    let cpu = shared.per_cpu.then_some(index);
    if let Some(i) = cpu {
        if let Err(errno) = pin_to_cpu(shared.cpu_ids[i]) {
            shared.stats.with(|st| {
                st.pin_failures += 1;
                st.pin_errno = errno;
            });
        }
    }
    if shared.high_priority {
        match raise_priority() {
            Ok(()) => {}
            Err(Some(errno)) => shared.stats.with(|st| {
                st.priority_denied += 1;
                st.priority_errno = errno;
            }),
            Err(None) => shared.stats.with(|st| st.priority_unsupported = true),
        }
    }
    context::enter_pool(pool, cpu);
    let mut after = After::for_worker();
    let mut done = None;
    // Taken only on the way to sleep (a busy worker does not read the
    // producers' cache line), then one more step under it: anything that
    // makes work after the token wakes the sleep.
    let mut token = None;
    loop {
        let step = pool.step(done.take(), shared.stop_flags(), &mut after);
        after.run(pool, |name, payload| shared.record_panic(name, payload));
        match step {
            Step::Run(s) => {
                token = None;
                shared.run(&s);
                done = Some(s);
            }
            Step::Idle(timeout) => match token.take() {
                Some(t) => pool.sleep(slot, t, timeout),
                None => {
                    if !pool.linger() {
                        token = Some(pool.token(slot));
                    }
                }
            },
            Step::Exit => {
                // Peers asleep on the same pool exit too.
                pool.notify_all();
                return;
            }
        }
    }
}

/// Pins the calling thread to `cpu`. `Err(errno)` if refused.
fn pin_to_cpu(cpu: usize) -> Result<(), i32> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `set` is a plain bitmask we own; CPU_SET bounds-checks
        // `cpu` against the mask size; sched_setaffinity(0, ..) affects only
        // the calling thread and reads `set` for the call's duration.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        let _ = cpu;
        Err(38) // ENOSYS
    }
}

/// Nice -20 for the calling thread (Linux's `WQ_HIGHPRI` level).
/// `Err(Some(errno))` if refused, `Err(None)` if unsupported here.
fn raise_priority() -> Result<(), Option<i32>> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: gettid has no preconditions; on Linux, setpriority with
        // PRIO_PROCESS and a thread id changes that thread's nice value
        // only.
        let rc = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, -20)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error())
        }
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        Err(None)
    }
}

/// The CPUs this process may run on, in order. Under loom, two (0 and 1),
/// whatever the machine: the models need a fixed number of per-CPU pools.
fn allowed_cpus() -> Vec<usize> {
    #[cfg(bottomhalf_loom)]
    return std::vec![0, 1];
    #[cfg(not(bottomhalf_loom))]
    allowed_cpus_of_this_process()
}

#[cfg(not(bottomhalf_loom))]
fn allowed_cpus_of_this_process() -> Vec<usize> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: `set` is a plain bitmask we own; sched_getaffinity(0, ..)
        // writes at most its size; CPU_ISSET reads it.
        unsafe {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                let max = 8 * core::mem::size_of::<libc::cpu_set_t>();
                let cpus: Vec<usize> = (0..max).filter(|&c| libc::CPU_ISSET(c, &set)).collect();
                if !cpus.is_empty() {
                    return cpus;
                }
            }
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

/// The CPU the caller runs on, if known (`sched_getcpu`, a vDSO call:
/// async-signal-safe in practice).
#[inline]
fn this_cpu() -> Option<usize> {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        // SAFETY: no preconditions; reads the CPU number.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).ok()
    }
    #[cfg(not(all(target_os = "linux", not(miri))))]
    {
        None
    }
}

/// A named set of worker threads that run [`Work`](super::Work) items:
/// bottom halves that may sleep, block and allocate (Linux's
/// `workqueue_struct`, Zephyr's `k_work_q`). Build one with
/// [`Workqueue::builder`].
///
/// Dropping it [stops](Workqueue::stop) it — queueing is refused from then
/// on (including from its own items), everything already queued runs,
/// delayed items whose timer expired run, those whose timer has not expired
/// are dropped (counted in [`WorkqueueStats::discarded_at_stop`]) — and
/// joins the threads. (Linux's `destroy_workqueue` drains too, but lets a running item
/// queue more work onto its own queue; here that queue is refused, so the
/// drain always ends.) Dropped from one of its own items (or from an item
/// whose next instance it holds, which waits for that item's run), it
/// cannot wait there: a helper thread finishes the stop.
///
/// Queueing is top-half safe: one CAS on the item's state word, one CAS
/// push onto the pool's intake, and a wake-up system call only if a worker
/// sleeps (no lock, no allocation: callable from a signal handler). An
/// item is its own queue node, and is never run twice at once.
///
/// # Where this differs from Linux
///
/// - No concurrency management: a pool has a fixed number of threads, and
///   [`max_active`](WorkqueueBuilder::max_active) caps how many run at
///   once.
/// - An item queued on a second workqueue while it runs on a first waits
///   for that run (set aside), instead of possibly running concurrently.
/// - A stopping workqueue refuses all queueing, including an item
///   re-queueing itself (Linux lets "chained" work through while it
///   drains), so the drain always ends; unexpired timers are dropped.
/// - A flush or cancel that would wait for itself is an error
///   ([`WorkqueueError::WouldDeadlock`]) instead of a hang.
/// - After `fork()`, the child's copy of a workqueue (whose threads were
///   not copied) refuses everything with [`WorkqueueError::Forked`] and its
///   drop joins nothing; an item it held is taken over by the next
///   workqueue that queues it (see "`fork()`" below).
/// - `flush` of a work item waits for exactly the instance pending or
///   running at the call: a start counts its run in two halves around its
///   PENDING -> RUNNING CAS, so a flusher between the two never takes the
///   next instance for its target.
///
/// # `fork()`
///
/// A child of `fork()` inherits the workqueue but not its threads (`fork`
/// copies only the calling thread). [`Workqueue::build`](WorkqueueBuilder::build)
/// registers a `pthread_atfork` child handler that bumps the process's fork
/// generation, and a workqueue built under an older generation knows it is
/// such a copy: `queue` returns `false` (and counts), `try_queue`,
/// `queue_on`, `queue_delayed`, `mod_delayed`, `flush` and `stop` return
/// [`WorkqueueError::Forked`], `run_pending` runs nothing, `stats` reports
/// only the lock-free counts, and the drop joins nothing (the thread
/// handles and the pools are leaked: the parent's threads may have held
/// their locks at the fork). An item that was pending or running in it
/// refuses [`Work::flush`](super::Work::flush) and
/// [`Work::cancel_sync`](super::Work::cancel_sync) with
/// [`WorkqueueError::Forked`] (`cancel` returns `false`), and queueing it
/// on a workqueue built in the child takes it over: the inherited instance
/// is abandoned (an `Arc` count it held is leaked) and a new one runs
/// there. Build new workqueues in the child. (Forking from inside a work
/// item is not supported: the child's copy of that worker thread would
/// return into the inherited pool.)
///
/// # Examples
///
/// An interrupt (here: a thread) hands a frame to a bottom half that may
/// block:
///
/// ```
/// use bottomhalf::{MpscMailbox, Work, Workqueue};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::OnceLock;
///
/// static WQ: OnceLock<Workqueue> = OnceLock::new();
/// static FRAMES: MpscMailbox<u32, 64> = MpscMailbox::new();
/// static TOTAL: AtomicU32 = AtomicU32::new(0);
/// static RX: Work = Work::new("rx", |_| {
///     let mut rx = FRAMES.consumer().unwrap(); // items never run concurrently
///     while let Some(f) = rx.pop() {
///         TOTAL.fetch_add(f, Ordering::Relaxed); // could write to a file, ...
///     }
/// });
///
/// fn rx_irq(frame: u32) {
///     // Top half: no lock, no allocation.
///     let _ = FRAMES.push(frame);
///     WQ.get().unwrap().queue(&RX);
/// }
///
/// let wq = WQ.get_or_init(|| Workqueue::builder("net-rx").threads(2).build().unwrap());
/// rx_irq(1);
/// rx_irq(2);
/// wq.flush().unwrap();
/// assert_eq!(TOTAL.load(Ordering::Relaxed), 3);
/// ```
pub struct Workqueue {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Workqueue {
    /// A builder for a workqueue named `name` (used in thread names and
    /// statistics).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Workqueue;
    /// let wq = Workqueue::builder("events").threads(2).build().unwrap();
    /// assert_eq!(wq.name(), "events");
    /// ```
    pub fn builder(name: &'static str) -> WorkqueueBuilder {
        WorkqueueBuilder {
            name,
            threads: None,
            per_cpu: false,
            ordered: false,
            max_active: None,
            high_priority: false,
            watchdog: None,
        }
    }

    /// The name given to the builder.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`builder`](Workqueue::builder).
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The CPUs of a per-CPU workqueue: entry `i` is the CPU number that
    /// pool `i` (the `cpu` of [`queue_on`](Workqueue::queue_on)) is pinned
    /// to. Empty for an unbound workqueue.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Workqueue;
    /// let wq = Workqueue::builder("percpu").per_cpu().build().unwrap();
    /// assert!(!wq.cpu_ids().is_empty());
    /// let unbound = Workqueue::builder("u").threads(1).build().unwrap();
    /// assert!(unbound.cpu_ids().is_empty());
    /// ```
    pub fn cpu_ids(&self) -> &[usize] {
        &self.shared.cpu_ids
    }

    /// Queues `work` (a `&'static Work` or an `&Arc<Work>`): `true` if this
    /// call queued it, `false` if it was already pending (coalesced: the
    /// pending run covers this call, and sees what the caller wrote before
    /// it), if a `cancel_sync` is running, if the workqueue is stopping, or
    /// in a child of `fork()` (both counted in [`WorkqueueStats::rejected`]).
    /// It never panics, whatever the item's state or the workqueue's. Queued while it runs, it
    /// runs once more afterwards, never concurrently.
    ///
    /// On a per-CPU workqueue it goes to the caller's CPU (`sched_getcpu`,
    /// or CPU 0 if that CPU has no pool); see [`queue_on`](Workqueue::queue_on).
    ///
    /// Top-half safe: yes — callable from a signal handler: one CAS on the
    /// item, one CAS push onto the pool's intake list and, only if a worker
    /// sleeps, a `futex(FUTEX_WAKE)` ([`WakeWord`](crate::WakeWord)); an
    /// `Arc` item costs one more atomic increment. Allocates: no.
    /// Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("q").threads(0).build().unwrap();
    /// assert!(wq.queue(&W));
    /// assert!(!wq.queue(&W)); // coalesced
    /// assert_eq!(wq.run_pending(), 1);
    /// ```
    #[inline]
    pub fn queue(&self, work: impl WorkRef) -> bool {
        self.try_queue(work).unwrap_or(false)
    }

    /// [`queue`](Workqueue::queue), telling the refusals apart.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::Stopped`] if the workqueue is stopping (counted),
    /// [`WorkqueueError::Forked`] in a child of `fork()` for a workqueue
    /// built before the fork (counted),
    /// [`WorkqueueError::Canceling`] while a `cancel_sync` of the item runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("q").threads(0).build().unwrap();
    /// assert_eq!(wq.try_queue(&W), Ok(true));
    /// assert_eq!(wq.try_queue(&W), Ok(false));
    /// # wq.run_pending();
    /// ```
    #[inline]
    pub fn try_queue(&self, work: impl WorkRef) -> Result<bool, WorkqueueError> {
        self.enqueue(work.link(), self.local_pool(), None)
    }

    /// Queues `work` on CPU `cpu`'s pool of a per-CPU workqueue; its
    /// function then sees [`current_cpu`](super::current_cpu)`() ==
    /// Some(cpu)` and runs on a thread pinned to `cpu_ids()[cpu]`. On an
    /// unbound workqueue `cpu` is ignored.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`try_queue`](Workqueue::try_queue), and
    /// [`WorkqueueError::CpuOutOfRange`] if a per-CPU workqueue has no pool
    /// `cpu` (any `usize`: an error, never a panic; counted in
    /// [`WorkqueueStats::rejected`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{current_cpu, Work, Workqueue};
    /// static W: Work = Work::new("where", |_| assert_eq!(current_cpu(), Some(0)));
    /// let wq = Workqueue::builder("percpu").per_cpu().build().unwrap();
    /// assert_eq!(wq.queue_on(0, &W), Ok(true));
    /// W.flush().unwrap();
    /// assert!(wq.queue_on(4096, &W).is_err());
    /// ```
    #[inline]
    pub fn queue_on(&self, cpu: usize, work: impl WorkRef) -> Result<bool, WorkqueueError> {
        let pool = self.pool_index(cpu)?;
        self.enqueue(work.link(), pool, None)
    }

    /// Queues `work` to run after `delay` (Linux's `queue_delayed_work`):
    /// `Ok(false)` if it was already pending (its timer is left alone; see
    /// [`mod_delayed`](Workqueue::mod_delayed)). A zero delay queues at
    /// once. The timer lives in the pool: the item becomes runnable when a
    /// worker of the pool is free after the deadline.
    ///
    /// Top-half safe: yes (as [`queue`](Workqueue::queue), plus a
    /// `clock_gettime`). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`try_queue`](Workqueue::try_queue).
    ///
    /// # Examples
    ///
    /// See [`DelayedWork`](crate::DelayedWork).
    #[inline]
    pub fn queue_delayed(
        &self,
        work: impl DelayedWorkRef,
        delay: Duration,
    ) -> Result<bool, WorkqueueError> {
        self.enqueue(work.link(), self.local_pool(), Some(delay))
    }

    /// [`queue_delayed`](Workqueue::queue_delayed) onto CPU `cpu`'s pool.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// As [`queue_on`](Workqueue::queue_on).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{current_cpu, DelayedWork, Workqueue};
    /// use std::time::Duration;
    /// static D: DelayedWork = DelayedWork::new("d", |_| assert_eq!(current_cpu(), Some(0)));
    /// let wq = Workqueue::builder("percpu").per_cpu().build().unwrap();
    /// wq.queue_delayed_on(0, &D, Duration::from_millis(1)).unwrap();
    /// D.work().flush().unwrap();
    /// ```
    pub fn queue_delayed_on(
        &self,
        cpu: usize,
        work: impl DelayedWorkRef,
        delay: Duration,
    ) -> Result<bool, WorkqueueError> {
        let pool = self.pool_index(cpu)?;
        self.enqueue(work.link(), pool, Some(delay))
    }

    /// Queues `work` after `delay` whether or not it is pending (Linux's
    /// `mod_delayed_work`): a pending instance — waiting for its timer or
    /// already queued to run — is taken back and re-queued with the new
    /// deadline (on this workqueue, the caller's CPU for a per-CPU one).
    /// `Ok(true)` if it was pending, `Ok(false)` if it was idle. A zero
    /// delay queues it to run at once.
    ///
    /// Top-half safe: no (takes the pool's worker lock). Allocates: no.
    /// Blocks: no, except while a `queue` of the item on another thread is
    /// between its two CASes (a few instructions).
    ///
    /// # Errors
    ///
    /// As [`try_queue`](Workqueue::try_queue).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{DelayedWork, Workqueue};
    /// use std::time::Duration;
    /// static D: DelayedWork = DelayedWork::new("d", |_| {});
    /// let wq = Workqueue::builder("t").threads(1).build().unwrap();
    /// assert_eq!(wq.mod_delayed(&D, Duration::from_secs(60)), Ok(false)); // was idle
    /// assert_eq!(wq.mod_delayed(&D, Duration::ZERO), Ok(true)); // now
    /// D.work().flush().unwrap();
    /// assert_eq!(D.runs(), 1);
    /// ```
    pub fn mod_delayed(
        &self,
        work: impl DelayedWorkRef,
        delay: Duration,
    ) -> Result<bool, WorkqueueError> {
        let link = work.link();
        let w = link.work();
        let index = self.local_pool();
        let target = self.shared.pools[index];
        let delayed = !delay.is_zero();
        loop {
            if self.shared.stopping.load(Ordering::Relaxed) {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(WorkqueueError::Stopped);
            }
            if self.shared.forked() {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(WorkqueueError::Forked);
            }
            let s = w.state.load(Ordering::Acquire);
            let f = flags(s);
            // An instance at a pool inherited across `fork()` is idle for
            // this process: `enqueue` takes the item over.
            let idle = f & PENDING == 0 || inherited(s);
            if f & CANCELING != 0 && !idle {
                return Err(WorkqueueError::Canceling);
            }
            if idle {
                match self.enqueue(link, index, Some(delay))? {
                    true => return Ok(false),
                    // Queued by someone else meanwhile: modify that one.
                    false => continue,
                }
            }
            let deadline = Host::now_ns().saturating_add(nanos(delay));
            let moved = Pool::with_pending(w, |pool, st, place, _| {
                // SAFETY: `place` was read under this lock with `w` pending
                // here.
                let node = unsafe { st.unlink(pool, w, place) };
                // We own the link now (unlinked, PENDING kept).
                w.set_deadline(deadline);
                w.retarget(ptr::from_ref(target).cast_mut(), delayed);
                if ptr::eq(pool, target) {
                    // SAFETY: unlinked above, still pending, now here.
                    unsafe { st.relink(node) };
                    // A sleeping worker recomputes its timeout.
                    pool.notify_all();
                    None
                } else {
                    Some(node)
                }
            });
            match moved {
                None => continue,
                Some(None) => return Ok(true),
                Some(Some(node)) => {
                    target.push(node);
                    return Ok(true);
                }
            }
        }
    }

    /// Stops the workqueue without dropping it (Zephyr's
    /// `k_work_queue_drain` with plug): from now on every `queue` is
    /// refused with [`WorkqueueError::Stopped`] (and counted), including
    /// from its own items; this call returns once everything queued has
    /// run and delayed items whose timer had not expired were dropped. The
    /// threads stay until the drop. A `queue` racing with `stop` on another
    /// thread may still be accepted; it then runs as usual. Calling it again
    /// waits again.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from one of its items,
    /// or from an item (of any workqueue) whose next instance is queued
    /// here — set aside behind the caller's own run, it would be waited for
    /// (nothing is stopped then). [`WorkqueueError::Forked`] in a child of
    /// `fork()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue, WorkqueueError};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("s").threads(1).build().unwrap();
    /// assert!(wq.queue(&W));
    /// wq.stop().unwrap();
    /// assert_eq!(W.runs(), 1); // drained
    /// assert_eq!(wq.try_queue(&W), Err(WorkqueueError::Stopped));
    /// assert!(!wq.queue(&W));
    /// assert_eq!(wq.stats().rejected, 2);
    /// ```
    pub fn stop(&self) -> Result<(), WorkqueueError> {
        self.shared.check_fork()?;
        if self.shared.stop_waits_for_caller() {
            return Err(WorkqueueError::WouldDeadlock);
        }
        self.shared.stop(self.threads.is_empty());
        Ok(())
    }

    /// `true` once [`stop`](Workqueue::stop) (or the drop) has begun.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = bottomhalf::Workqueue::builder("s").threads(0).build().unwrap();
    /// assert!(!wq.is_stopped());
    /// wq.stop().unwrap();
    /// assert!(wq.is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::Relaxed)
    }

    /// Waits until every item queued before the call has finished (Linux's
    /// `flush_workqueue`): items queued and not started, set aside, or
    /// running. Items queued later, and delayed items whose timer has not
    /// expired, are not waited for. Concurrent flushes of one pool take
    /// turns. A workqueue with no threads runs the items itself.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes.
    ///
    /// # Errors
    ///
    /// [`WorkqueueError::WouldDeadlock`] when called from an item of this
    /// workqueue (the calling item is itself among those to wait for), or
    /// from an item (of any workqueue) whose next instance is queued here
    /// and not waiting for its timer: it waits for the caller's run to end.
    /// (If that instance is queued during the call, the pools of a per-CPU
    /// workqueue before its pool may have been flushed already.)
    /// [`WorkqueueError::Forked`] in a child of `fork()`: the threads that
    /// would run the items do not exist there.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// static N: AtomicU32 = AtomicU32::new(0);
    /// static A: Work = Work::new("a", |_| { N.fetch_add(1, Ordering::Relaxed); });
    /// static B: Work = Work::new("b", |_| { N.fetch_add(1, Ordering::Relaxed); });
    /// let wq = Workqueue::builder("f").threads(2).build().unwrap();
    /// wq.queue(&A);
    /// wq.queue(&B);
    /// wq.flush().unwrap();
    /// assert_eq!(N.load(Ordering::Relaxed), 2);
    /// ```
    pub fn flush(&self) -> Result<(), WorkqueueError> {
        self.shared.check_fork()?;
        if self.shared.is_own_worker() || self.shared.holds_callers_next_instance(false) {
            return Err(WorkqueueError::WouldDeadlock);
        }
        let manual = self.threads.is_empty();
        // The check above, again under each pool's lock: the caller's next
        // instance may have been queued since.
        let caller = context::get().work;
        for &pool in &self.shared.pools {
            let old = loop {
                let token = pool.flushed().token();
                if let Some(old) = pool.begin_flush(caller)? {
                    break old;
                }
                self.wait_or_help(pool, token);
            };
            loop {
                let token = pool.flushed().token();
                if pool.end_flush_if_done(old) {
                    // Flushers waiting for their turn.
                    pool.flushed().notify();
                    break;
                }
                if manual {
                    self.wait_or_help(pool, token);
                } else {
                    pool.flushed().wait(token, None);
                }
            }
        }
        Ok(())
    }

    fn wait_or_help(&self, pool: &'static Pool, token: u32) {
        if self.threads.is_empty() && self.shared.run_pool(pool) != 0 {
            return;
        }
        let timeout = self.threads.is_empty().then(|| Duration::from_millis(1));
        pool.flushed().wait(token, timeout);
    }

    /// Runs, in the calling thread, every item of this workqueue that is
    /// runnable now (and those that become runnable meanwhile); returns how
    /// many ran. For workqueues built with `threads(0)`, which have no
    /// workers: the application runs them from its own loop. On a workqueue
    /// with threads the caller acts as one more worker (within
    /// `max_active`). Returns 0 when called from one of this workqueue's
    /// items, or in a child of `fork()` (the inherited lists are left
    /// alone).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: yes (runs items).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// static W: Work = Work::new("w", |_| {});
    /// let wq = Workqueue::builder("main-loop").threads(0).build().unwrap();
    /// wq.queue(&W);
    /// assert_eq!(wq.run_pending(), 1);
    /// assert_eq!(wq.run_pending(), 0);
    /// ```
    pub fn run_pending(&self) -> usize {
        if self.shared.is_own_worker() || self.shared.forked() {
            return 0;
        }
        self.shared
            .pools
            .iter()
            .map(|&p| self.shared.run_pool(p))
            .sum()
    }

    /// A snapshot of the counters.
    ///
    /// Top-half safe: no. Allocates: yes. Blocks: briefly (each pool's
    /// lock in turn).
    ///
    /// # Examples
    ///
    /// See [`WorkqueueStats`].
    pub fn stats(&self) -> WorkqueueStats {
        let sh = &*self.shared;
        let now = Host::now_ns();
        let mut s = WorkqueueStats {
            name: sh.name,
            per_cpu: sh.per_cpu,
            ordered: sh.ordered,
            pools: sh.pools.len(),
            threads: sh.threads,
            max_active: sh.max_active,
            runs: 0,
            max_active_seen: 0,
            queued: 0,
            timers: 0,
            timers_fired: 0,
            collisions: 0,
            rejected: sh.rejected.load(Ordering::Relaxed) as u64,
            discarded_at_stop: 0,
            panics: 0,
            panicked: Vec::new(),
            panicked_other: 0,
            last_panic: None,
            watchdog: sh.watchdog,
            long_runs: 0,
            long_running: Vec::new(),
            long_running_other: 0,
            longest: None,
            running_long: Vec::new(),
            pin_failures: 0,
            pin_errno: 0,
            high_priority: HighPriority::Off,
        };
        if sh.forked() {
            // The pools' and the counters' locks may be held by threads
            // that do not exist here: only the lock-free counts.
            return s;
        }
        for pool in &sh.pools {
            let p = pool.snapshot(now);
            s.runs += p.counters.runs;
            s.max_active_seen = s.max_active_seen.max(p.counters.max_active_seen);
            s.queued += p.queued;
            s.timers += p.timers;
            s.timers_fired += p.counters.timers_fired;
            s.collisions += p.counters.collisions;
            s.discarded_at_stop += p.counters.discarded;
            s.running_long.extend(p.running_long);
        }
        sh.stats.with(|st| {
            s.panics = st.panics;
            (s.panicked, s.panicked_other) = st.panicked();
            s.last_panic.clone_from(&st.last_panic);
            s.long_runs = st.long_runs;
            (s.long_running, s.long_running_other) = st.long_names();
            s.longest = st.longest.map(|(n, ns)| (n, Duration::from_nanos(ns)));
            s.pin_failures = st.pin_failures;
            s.pin_errno = st.pin_errno;
            s.high_priority = if !sh.high_priority {
                HighPriority::Off
            } else if st.priority_unsupported {
                HighPriority::Unsupported
            } else if st.priority_denied != 0 {
                HighPriority::Denied {
                    threads: st.priority_denied,
                    errno: st.priority_errno,
                }
            } else {
                HighPriority::Applied
            };
        });
        s
    }

    /// Transition 1 and the push: the whole queue path.
    #[inline]
    fn enqueue(
        &self,
        link: Link,
        pool: usize,
        delay: Option<Duration>,
    ) -> Result<bool, WorkqueueError> {
        // Relaxed: a `queue` that misses the store races with `stop` and is
        // accepted (documented there); one from our own item is waited for
        // by `Shared::stop`.
        if self.shared.stopping.load(Ordering::Relaxed) {
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(WorkqueueError::Stopped);
        }
        if self.shared.forked() {
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(WorkqueueError::Forked);
        }
        let pool = self.shared.pools[pool];
        let deadline = match delay {
            Some(d) if !d.is_zero() => Some(Host::now_ns().saturating_add(nanos(d))),
            _ => None,
        };
        let extra = if link.arc { HELD } else { 0 } | if deadline.is_some() { DELAYED } else { 0 };
        let w = link.work();
        match w.pend(ptr::from_ref(pool).cast::<Target>().cast_mut(), extra) {
            Pend::Queued => {
                link.take_count();
                if let Some(t) = deadline {
                    w.set_deadline(t);
                }
                pool.push(link.node);
                Ok(true)
            }
            Pend::Coalesced => Ok(false),
            Pend::Canceling => Err(WorkqueueError::Canceling),
            Pend::OtherConsumer => Err(WorkqueueError::OtherConsumer),
            // Only a bottom-half `pend` covers without a push; never here
            // (and a top-half path does not panic).
            Pend::Covered => Ok(true),
        }
    }

    /// The pool `queue` uses: the caller's CPU's on a per-CPU workqueue.
    #[inline]
    fn local_pool(&self) -> usize {
        if !self.shared.per_cpu {
            return 0;
        }
        this_cpu()
            .and_then(|c| self.shared.by_cpu.get(c).copied())
            .filter(|&i| i != u32::MAX)
            .map_or(0, |i| i as usize)
    }

    #[inline]
    fn pool_index(&self, cpu: usize) -> Result<usize, WorkqueueError> {
        if !self.shared.per_cpu {
            return Ok(0);
        }
        let cpus = self.shared.pools.len();
        if cpu < cpus {
            Ok(cpu)
        } else {
            // Misuse on a top-half path: refused and counted, never a panic.
            self.shared.rejected.fetch_add(1, Ordering::Relaxed);
            Err(WorkqueueError::CpuOutOfRange { cpu, cpus })
        }
    }
}

impl Drop for Workqueue {
    fn drop(&mut self) {
        let threads = core::mem::take(&mut self.threads);
        if self.shared.forked() {
            // A child of `fork()`: the threads do not exist here. Joining
            // (or detaching) them would act on the parent's thread ids;
            // their handles and the pools are leaked.
            core::mem::forget(threads);
            return;
        }
        let manual = threads.is_empty();
        if !self.shared.stop_waits_for_caller() {
            self.shared.stop(manual);
            self.shared.join(threads);
            return;
        }
        // Dropped by one of our own items, or by an item whose next instance
        // we hold: it cannot wait for itself. Refuse work now; a helper
        // thread drains and joins.
        self.shared.stopping.store(true, Ordering::SeqCst);
        let shared = Arc::clone(&self.shared);
        let helper = std::thread::Builder::new()
            .name(std::format!("{}/stop", self.shared.name))
            .spawn(move || {
                shared.stop(manual);
                shared.join(threads);
            });
        if helper.is_err() {
            // No helper: the workers drain and exit on their own, unjoined.
            // (An item still running could then queue onto another of our
            // pools after that pool's workers left; it would not run.)
            self.shared.exit.store(true, Ordering::SeqCst);
            for pool in &self.shared.pools {
                pool.notify_all();
            }
        }
    }
}

impl core::fmt::Debug for Workqueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Workqueue")
            .field("name", &self.shared.name)
            .field("pools", &self.shared.pools.len())
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Workqueue`] ([`Workqueue::builder`]).
///
/// | setting | default |
/// | --- | --- |
/// | [`threads`](WorkqueueBuilder::threads) | unbound: one per CPU; per-CPU and ordered: 1 per pool |
/// | [`per_cpu`](WorkqueueBuilder::per_cpu) | off (one unbound pool) |
/// | [`ordered`](WorkqueueBuilder::ordered) | off |
/// | [`max_active`](WorkqueueBuilder::max_active) | the thread count |
/// | [`high_priority`](WorkqueueBuilder::high_priority) | off |
/// | [`watchdog`](WorkqueueBuilder::watchdog) | off |
///
/// # Examples
///
/// ```
/// use bottomhalf::Workqueue;
/// use std::time::Duration;
/// let wq = Workqueue::builder("io")
///     .threads(4)
///     .max_active(2)
///     .watchdog(Duration::from_millis(10))
///     .build()
///     .unwrap();
/// assert_eq!(wq.stats().max_active, 2);
/// ```
#[derive(Clone, Debug)]
#[must_use = "call build()"]
pub struct WorkqueueBuilder {
    name: &'static str,
    threads: Option<usize>,
    per_cpu: bool,
    ordered: bool,
    max_active: Option<usize>,
    high_priority: bool,
    watchdog: Option<Duration>,
}

impl WorkqueueBuilder {
    /// Worker threads per pool. `0` starts no threads: items run when the
    /// application calls [`Workqueue::run_pending`] (or `flush`, or the
    /// drop).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = bottomhalf::Workqueue::builder("t").threads(3).build().unwrap();
    /// assert_eq!(wq.stats().threads, 3);
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// One pool per CPU the process may run on (`sched_getaffinity`), its
    /// threads pinned to that CPU with `sched_setaffinity` (Linux's
    /// per-CPU workqueues). Items queued with
    /// [`queue_on`](Workqueue::queue_on) run on that CPU and see it in
    /// [`current_cpu`](super::current_cpu); `queue` uses the caller's CPU.
    /// A worker that cannot be pinned still runs (unpinned), counted in
    /// [`WorkqueueStats::pin_failures`].
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`Workqueue::queue_on`].
    pub fn per_cpu(mut self) -> Self {
        self.per_cpu = true;
        self
    }

    /// One item at a time, in queue order (Linux's
    /// `alloc_ordered_workqueue`): one pool, `max_active(1)`, one thread by
    /// default.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// let wq = bottomhalf::Workqueue::builder("ordered").ordered().build().unwrap();
    /// assert!(wq.stats().ordered);
    /// ```
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// At most `n` items run at once in each pool (Linux's `max_active`).
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// See [`WorkqueueBuilder`].
    pub fn max_active(mut self, n: usize) -> Self {
        self.max_active = Some(n);
        self
    }

    /// Runs the workers at nice -20, the level of Linux's `WQ_HIGHPRI`
    /// pools, with `setpriority` on each worker thread. Best effort: an
    /// unprivileged process (no `CAP_SYS_NICE`, `RLIMIT_NICE` too low) is
    /// refused, and the workers then run at the default priority; the
    /// outcome is in [`WorkqueueStats::high_priority`]. (Real-time
    /// `SCHED_FIFO` is deliberately not used: a busy item would starve the
    /// rest of the system.)
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{HighPriority, Workqueue};
    /// let wq = Workqueue::builder("hi").threads(1).high_priority().build().unwrap();
    /// wq.flush().unwrap();
    /// # std::thread::sleep(std::time::Duration::from_millis(20));
    /// assert_ne!(wq.stats().high_priority, HighPriority::Off);
    /// ```
    pub fn high_priority(mut self) -> Self {
        self.high_priority = true;
        self
    }

    /// Counts and reports items that run longer than `threshold` (Linux's
    /// "CPU intensive" detection, Zephyr's work timeout): at the end of each
    /// run, and in [`Workqueue::stats`] for runs still going.
    ///
    /// Top-half safe: no. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Work, Workqueue};
    /// use std::time::Duration;
    /// static SLOW: Work = Work::new("slow", |_| std::thread::sleep(Duration::from_millis(5)));
    /// let wq = Workqueue::builder("w").threads(1).watchdog(Duration::from_millis(1)).build().unwrap();
    /// wq.queue(&SLOW);
    /// SLOW.flush().unwrap();
    /// assert_eq!(wq.stats().long_running, vec![("slow", 1)]);
    /// ```
    pub fn watchdog(mut self, threshold: Duration) -> Self {
        self.watchdog = Some(threshold);
        self
    }

    /// Creates the pools and starts the threads.
    ///
    /// Top-half safe: no. Allocates: yes. Blocks: no.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for `ordered` with `per_cpu`, `max_active(0)`, or
    /// more than 1000 threads per pool;
    /// the spawn error if a thread could not be started (the ones already
    /// started are stopped and joined).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Workqueue;
    /// assert!(Workqueue::builder("x").max_active(0).build().is_err());
    /// assert!(Workqueue::builder("x").ordered().per_cpu().build().is_err());
    /// ```
    pub fn build(self) -> io::Result<Workqueue> {
        super::ensure_atfork();
        let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if self.ordered && self.per_cpu {
            return Err(invalid(
                "an ordered workqueue is unbound: it cannot be per-CPU",
            ));
        }
        if self.max_active == Some(0) {
            return Err(invalid("max_active must be at least 1"));
        }
        if self.threads.is_some_and(|t| t > MAX_THREADS) {
            return Err(invalid("at most 1000 threads per pool"));
        }
        let threads = self.threads.unwrap_or(if self.ordered || self.per_cpu {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        });
        let max_active = if self.ordered {
            1
        } else {
            self.max_active.unwrap_or(threads.max(1))
        };
        let cpu_ids = if self.per_cpu {
            allowed_cpus()
        } else {
            Vec::new()
        };
        let mut by_cpu = Vec::new();
        for (i, &c) in cpu_ids.iter().enumerate() {
            if by_cpu.len() <= c {
                by_cpu.resize(c + 1, u32::MAX);
            }
            by_cpu[c] = u32::try_from(i).unwrap_or(u32::MAX);
        }
        let npools = if self.per_cpu { cpu_ids.len() } else { 1 };
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let pools = (0..npools)
            .map(|_| {
                Pool::acquire(PoolConfig {
                    max_active: clamp(max_active),
                    threads: clamp(threads),
                    watchdog_ns: self.watchdog.map(nanos),
                    ordered: self.ordered,
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            name: self.name,
            pools,
            cpu_ids,
            by_cpu,
            per_cpu: self.per_cpu,
            ordered: self.ordered,
            threads,
            max_active,
            high_priority: self.high_priority,
            watchdog: self.watchdog,
            stopping: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            rejected: AtomicUsize::new(0),
            generation: super::fork_generation(),
            stats: Lock::new(StatsState::new()),
        });
        let mut wq = Workqueue {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(npools * threads),
        };
        for index in 0..npools {
            for j in 0..threads {
                let name = if self.per_cpu {
                    std::format!("{}/{index}", self.name)
                } else {
                    std::format!("{}/u{j}", self.name)
                };
                let sh = Arc::clone(&shared);
                let handle = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || worker_main(sh, index, j))?;
                wq.threads.push(handle);
            }
        }
        Ok(wq)
    }
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Workqueue>();
};
