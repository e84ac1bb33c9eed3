//! Host backend: threads stand in for CPUs.
//!
//! A thread binds itself to a CPU index with
//! [`Runtime::bind_current_thread`]; from then on its `raise`, `schedule`
//! and `drain` use that CPU's pending mask and tasklet lists. A thread that
//! never bound itself counts as CPU 0, so a single-threaded program needs no
//! set-up. Binding is per thread, not per runtime: a thread has one CPU
//! index, as a CPU has one.
//!
//! The binding lives in a `const`-initialised thread-local `Cell` without a
//! destructor: reading it is one load from the thread's TLS block, with no
//! lazy initialisation, lock or allocation, so it is safe in a signal
//! handler too.

use core::cell::Cell;
use core::marker::PhantomData;

use crate::backend::Backend;
use crate::percpu::CpuOutOfRange;
use crate::softirq::Runtime;

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// The host backend: threads bound to CPU indices, `CLOCK_MONOTONIC`.
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
        CPU.with(Cell::get)
    }

    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the
        // call; clock_gettime is async-signal-safe (POSIX.1-2008) and touches
        // nothing else. CLOCK_MONOTONIC always exists on Linux, so the call
        // cannot fail; if it did, `ts` stays zero and the budget is off.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    }
}

/// Restores the thread's previous CPU binding when dropped.
///
/// Not `Send`: the binding belongs to the thread that made it.
#[derive(Debug)]
#[must_use = "the binding is undone when the guard is dropped"]
pub struct CpuBinding {
    previous: usize,
    _not_send: PhantomData<*const ()>,
}

impl Drop for CpuBinding {
    fn drop(&mut self) {
        CPU.with(|c| c.set(self.previous));
    }
}

impl<const N: usize> Runtime<Host, N> {
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
        let previous = CPU.with(|c| c.replace(cpu));
        Ok(CpuBinding {
            previous,
            _not_send: PhantomData,
        })
    }
}
