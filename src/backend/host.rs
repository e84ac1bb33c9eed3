//! Host backend: threads stand in for CPUs.
//!
//! A thread binds itself to a CPU index with
//! [`Runtime::bind_current_thread`]; from then on its `raise`, `schedule`
//! and `drain` use that CPU's pending mask and tasklet lists. A thread that
//! never bound itself counts as CPU 0, so a single-threaded program needs no
//! set-up. Binding is per thread and backend, not per runtime: a thread has
//! one `Host` CPU index, as a CPU has one.
//!
//! The binding lives in a `const`-initialised thread-local `Cell` without a
//! destructor: reading it is one load from the thread's TLS block, with no
//! lazy initialisation, lock or allocation, so it is safe in a signal
//! handler too.
//!
//! Each std backend has its own binding ([`BindingKind`]): a thread bound
//! as a `Host` CPU (a `Host` drain thread, say) that takes a signal must
//! not make the `Signals` runtime raise on that index, which its drains
//! may never serve (or which may be past its `N`).

use core::cell::Cell;
use core::marker::PhantomData;
use std::thread::LocalKey;

use crate::backend::{Backend, DrainThreads};
use crate::level::Level;
use crate::percpu::CpuOutOfRange;
use crate::softirq::Runtime;
use crate::wake::WakeWord;

/// The thread is bound to no CPU.
const UNBOUND: usize = usize::MAX;

std::thread_local! {
    /// The `Host` CPU index this thread acts as, or `UNBOUND` (read as
    /// CPU 0). `const`, no destructor: one TLS load.
    static HOST_CPU: Cell<usize> = const { Cell::new(UNBOUND) };
    /// The `Signals` CPU slot this thread claimed (its drain threads,
    /// `drain_all`), or `UNBOUND` (the kernel's CPU is used). Readable in
    /// a signal handler (one TLS load).
    #[cfg(all(target_os = "linux", not(bottomhalf_loom)))]
    static SIGNALS_CPU: Cell<usize> = const { Cell::new(UNBOUND) };
}

/// Which backend a thread's CPU binding is for: each std backend reads
/// only its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindingKind {
    /// [`Host`]: [`Runtime::bind_current_thread`], the `bh-drain` threads.
    Host,
    /// [`Signals`](crate::Signals): the `bh-sig` threads and `drain_all`.
    #[cfg(all(target_os = "linux", not(bottomhalf_loom)))]
    Signals,
}

impl BindingKind {
    fn key(self) -> &'static LocalKey<Cell<usize>> {
        match self {
            BindingKind::Host => &HOST_CPU,
            #[cfg(all(target_os = "linux", not(bottomhalf_loom)))]
            BindingKind::Signals => &SIGNALS_CPU,
        }
    }
}

/// The CPU the calling thread is bound to for `kind`, if any.
#[inline(always)]
pub(crate) fn bound_cpu(kind: BindingKind) -> Option<usize> {
    let cpu = kind.key().with(Cell::get);
    (cpu != UNBOUND).then_some(cpu)
}

/// Binds the calling thread to `cpu` for `kind` (the caller checked the
/// range) until the guard is dropped.
pub(crate) fn bind_thread(kind: BindingKind, cpu: usize) -> CpuBinding {
    CpuBinding {
        kind,
        previous: kind.key().with(|c| c.replace(cpu)),
        _not_send: PhantomData,
    }
}

/// The host backend: threads bound to CPU indices, `CLOCK_MONOTONIC`
/// (`QueryPerformanceCounter` on Windows).
///
/// # Examples
///
/// ```
/// use bottomhalf::{Config, Host, Runtime, Vector};
///
/// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
/// std::thread::spawn(|| {
///     let _cpu1 = RT.bind_current_thread(1).unwrap();
///     RT.raise(Vector::new(4));
///     assert_eq!(RT.pending(1), 1 << 4);
/// })
/// .join()
/// .unwrap();
/// assert_eq!(RT.pending(0), 0);
/// ```
#[derive(Debug)]
pub struct Host;

impl Backend for Host {
    #[inline(always)]
    fn current_cpu() -> usize {
        bound_cpu(BindingKind::Host).unwrap_or(0)
    }

    /// Wakes the CPU's drain thread, if [`Runtime::spawn_drain_threads`]
    /// started one: async-signal-safe ([`WakeWord::notify`]). The drain
    /// threads of a CPU (one per level) share its wake word: each wakes,
    /// and drains its level if that level has work.
    #[inline]
    fn kick(_cpu: usize, _level: Level, wake: &WakeWord) {
        wake.notify();
    }

    #[cfg(unix)]
    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // clock_gettime is async-signal-safe (POSIX.1-2008) and touches
        // nothing else. CLOCK_MONOTONIC always exists on Linux and macOS, so
        // the call cannot fail; if it did, `ts` stays zero and the budget is
        // off.
        // SAFETY: `ts` is a valid, writable timespec for the whole call.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    }

    /// `QueryPerformanceCounter`: lock-free, what `std::time::Instant`
    /// reads on Windows.
    #[cfg(windows)]
    fn now_ns() -> u64 {
        let (mut ticks, mut freq) = (0i64, 0i64);
        // SAFETY: both point to writable locals for the duration of the
        // calls; the functions write one i64 each and never fail on
        // Windows XP and later (if they did, the zeros turn the budget off).
        unsafe {
            qpc::QueryPerformanceCounter(&mut ticks);
            qpc::QueryPerformanceFrequency(&mut freq);
        }
        qpc_ns(ticks, freq)
    }
}

/// `QueryPerformanceCounter` ticks at `freq` ticks per second, in
/// nanoseconds: through `i128`, so neither a 10 MHz counter after years of
/// uptime nor a GHz one overflows; 0 (the budget off) for a bad frequency.
#[cfg(any(windows, all(test, not(bottomhalf_loom))))]
fn qpc_ns(ticks: i64, freq: i64) -> u64 {
    if freq <= 0 || ticks < 0 {
        return 0;
    }
    (i128::from(ticks) * 1_000_000_000 / i128::from(freq)) as u64
}

/// The monotonic clock of Windows (kernel32).
#[cfg(windows)]
mod qpc {
    #[link(name = "kernel32")]
    extern "system" {
        pub(super) fn QueryPerformanceCounter(count: *mut i64) -> i32;
        pub(super) fn QueryPerformanceFrequency(frequency: *mut i64) -> i32;
    }
}

/// Restores the thread's previous CPU binding when dropped.
///
/// Not `Send`: the binding belongs to the thread that made it.
#[derive(Debug)]
#[must_use = "the binding is undone when the guard is dropped"]
pub struct CpuBinding {
    kind: BindingKind,
    previous: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for CpuBinding {
    fn drop(&mut self) {
        self.kind.key().with(|c| c.set(self.previous));
    }
}

impl<const N: usize, const L: usize> Runtime<Host, N, L> {
    /// Binds the calling thread to CPU `cpu` until the guard is dropped.
    ///
    /// Top-half safe: no (set-up). Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`CpuOutOfRange`] if `cpu >= N`; the binding is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Backend, Config, Host, Runtime};
    ///
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// assert!(RT.bind_current_thread(2).is_err());
    /// let guard = RT.bind_current_thread(1).unwrap();
    /// assert_eq!(Host::current_cpu(), 1);
    /// drop(guard);
    /// assert_eq!(Host::current_cpu(), 0);
    /// ```
    pub fn bind_current_thread(&self, cpu: usize) -> Result<CpuBinding, CpuOutOfRange> {
        if cpu >= N {
            return Err(CpuOutOfRange { cpu, cpus: N });
        }
        Ok(bind_thread(BindingKind::Host, cpu))
    }
}

impl<const N: usize, const L: usize> Runtime<Host, N, L> {
    /// Starts one drain thread per CPU (Linux's `ksoftirqd/N`): thread `c`,
    /// named `bh-drain/c`, binds itself to CPU `c` and drains it whenever
    /// the backend kicks it — when a top half raises or schedules on an idle
    /// CPU, or when a drain runs out of budget. It sleeps on a futex when
    /// there is nothing to do: no polling. Dropping the returned handle
    /// stops the threads and joins them.
    ///
    /// With several bottom-half levels (`Runtime<Host, N, L>`, `L > 1`) it
    /// starts one thread per CPU and level, `bh-drain/c/L<level>`, each
    /// draining its own level ([`drain_level`](Runtime::drain_level)): a
    /// level's work runs while a lower level's handler is still running on
    /// the same CPU, as a higher-priority drain interrupt preempts a lower
    /// one on bare metal (the host's scheduler, not a priority, decides who
    /// gets a core first).
    ///
    /// Top-half safe: no. Allocates: yes (threads). Blocks: no.
    ///
    /// # Errors
    ///
    /// The error of the first thread that could not be spawned (the ones
    /// already started are stopped).
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Runtime, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    /// static RUNS: AtomicU32 = AtomicU32::new(0);
    /// static T: Tasklet = Tasklet::new(&RT, || { RUNS.fetch_add(1, Ordering::SeqCst); });
    ///
    /// let drains = RT.spawn_drain_threads().unwrap();
    /// std::thread::spawn(|| {
    ///     let _cpu = RT.bind_current_thread(1).unwrap();
    ///     T.schedule(); // wakes bh-drain/1
    /// })
    /// .join()
    /// .unwrap();
    /// while RUNS.load(Ordering::SeqCst) == 0 {
    ///     std::thread::yield_now();
    /// }
    /// drop(drains); // stops and joins
    /// ```
    pub fn spawn_drain_threads(&'static self) -> std::io::Result<DrainThreads> {
        DrainThreads::spawn(self, N, "bh-drain", |rt, cpu| {
            // The binding lasts as long as the thread.
            core::mem::forget(
                rt.bind_current_thread(cpu)
                    .expect("spawn_drain_threads only starts threads for CPUs below N"),
            );
            false
        })
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use crate::{Config, Host, Runtime, Vector};

    /// The Windows clock's tick-to-nanosecond conversion (checked on every
    /// host): exact for the usual 10 MHz counter, no overflow after a
    /// year of uptime at 10 MHz or 3 GHz, 0 for a bad frequency.
    #[test]
    fn qpc_ticks_convert_to_nanoseconds_without_overflow() {
        use super::qpc_ns;
        assert_eq!(qpc_ns(1, 10_000_000), 100);
        assert_eq!(qpc_ns(10_000_000, 10_000_000), 1_000_000_000);
        let year_s: i64 = 365 * 24 * 3600;
        assert_eq!(
            qpc_ns(year_s * 10_000_000, 10_000_000),
            year_s as u64 * 1_000_000_000
        );
        assert_eq!(
            qpc_ns(year_s * 3_000_000_000, 3_000_000_000),
            year_s as u64 * 1_000_000_000
        );
        assert_eq!(qpc_ns(5, 0), 0);
        assert_eq!(qpc_ns(-5, 10_000_000), 0);
    }
    use core::sync::atomic::{AtomicU32, Ordering};
    use core::time::Duration;
    use std::time::Instant;

    #[test]
    fn every_raise_on_an_idle_cpu_wakes_its_sleeping_drain_thread() {
        static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
        static SEEN: AtomicU32 = AtomicU32::new(0);
        static SENT: AtomicU32 = AtomicU32::new(0);
        const V: Vector = Vector::new(7);
        RT.register(V, "ECHO", |_| {
            SEEN.store(SENT.load(Ordering::SeqCst), Ordering::SeqCst);
        })
        .unwrap();
        let drains = RT.spawn_drain_threads().unwrap();
        let rounds = if cfg!(miri) { 20 } else { 1_000 };
        std::thread::scope(|s| {
            s.spawn(|| {
                let _cpu = RT.bind_current_thread(1).unwrap();
                for i in 1..=rounds {
                    SENT.store(i, Ordering::SeqCst);
                    // The drain thread is asleep (or about to be): only the
                    // kick can get this raise run.
                    RT.raise(V);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while SEEN.load(Ordering::SeqCst) != i {
                        assert!(
                            Instant::now() < deadline,
                            "raise {i} was never run: lost wake-up"
                        );
                        std::thread::yield_now();
                    }
                }
            });
        });
        drop(drains);
        assert_eq!(RT.stats().runs(0, V), 0, "CPU 0 never raised V");
        assert_eq!(RT.stats().raised(1, V), rounds);
    }
}
