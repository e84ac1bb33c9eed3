//! `PerCpu<T, N>`: one cache-padded slot per CPU.
//!
//! Design rules: a slot is written mostly by its own CPU, so slots never
//! share a cache line (`CachePadded`); the CPU count is a type parameter, so
//! an index is checked against it on every access and an index out of range
//! is a panic with a message (or an error from `try_get`), never an
//! out-of-bounds access. The runtime's top-half paths use `try_get` and
//! fold an index out of range instead of panicking
//! ([`Misuse::CpuOutOfRange`](crate::Misuse::CpuOutOfRange)). Which CPU is
//! "current" is not this type's business: the backend says
//! ([`Backend::current_cpu`](crate::Backend::current_cpu)).
//!
//! The padding is internal: [`PerCpu::new`] takes plain `[T; N]` and wraps
//! each slot itself. (Taking the padding type would make
//! `crossbeam_utils`'s version part of this crate's API, and ask every
//! caller to spell a detail that only this type needs to get right.)

use core::fmt;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

/// A CPU index that is not below the number of CPUs the runtime was built
/// for.
///
/// # Examples
///
/// ```
/// use bottomhalf::{CpuOutOfRange, PerCpu};
/// use core::sync::atomic::AtomicU32;
///
/// let counters: PerCpu<AtomicU32, 2> = PerCpu::from_fn(|_| AtomicU32::new(0));
/// assert_eq!(counters.try_get(2).unwrap_err(), CpuOutOfRange { cpu: 2, cpus: 2 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CpuOutOfRange {
    /// The index that was asked for.
    pub cpu: usize,
    /// The number of CPUs (`N`).
    pub cpus: usize,
}

impl fmt::Display for CpuOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CPU index {} out of range: the runtime was built for {} CPU(s)",
            self.cpu, self.cpus
        )
    }
}

impl core::error::Error for CpuOutOfRange {}

/// One cache-padded `T` per CPU, `N` CPUs.
///
/// # Examples
///
/// A per-CPU event counter in `static` storage:
///
/// ```
/// use bottomhalf::PerCpu;
/// use core::sync::atomic::{AtomicU32, Ordering};
///
/// static EVENTS: PerCpu<AtomicU32, 4> = PerCpu::new([const { AtomicU32::new(0) }; 4]);
///
/// EVENTS.get(1).fetch_add(1, Ordering::Relaxed);
/// let total: u32 = EVENTS.iter().map(|c| c.load(Ordering::Relaxed)).sum();
/// assert_eq!(total, 1);
/// ```
pub struct PerCpu<T, const N: usize> {
    /// Slot `c` belongs to CPU `c`. Who writes a slot, and how, is the
    /// business of `T`.
    slots: [CachePadded<T>; N],
}

impl<T, const N: usize> PerCpu<T, N> {
    const CHECK: () = assert!(N > 0, "PerCpu needs at least one CPU");

    /// Builds the slots from an array (slot `c` for CPU `c`), usable in a
    /// `static` initializer; each is padded to its own cache line here.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// static IDS: PerCpu<u8, 2> = PerCpu::new([10, 11]);
    /// assert_eq!(*IDS.get(1), 11);
    /// ```
    pub const fn new(slots: [T; N]) -> Self {
        let () = Self::CHECK;
        let slots = MaybeUninit::new(slots);
        let src = slots.as_ptr().cast::<T>();
        let mut padded: [MaybeUninit<CachePadded<T>>; N] = [const { MaybeUninit::uninit() }; N];
        let mut i = 0;
        while i < N {
            // SAFETY: `src` points to the `N` initialised `T`s of `slots`,
            // which is a `MaybeUninit` and so never drops them; each index
            // below `N` is read exactly once, so every `T` is moved out
            // once, into `padded[i]`.
            padded[i] = MaybeUninit::new(CachePadded::new(unsafe { src.add(i).read() }));
            i += 1;
        }
        // SAFETY: the loop initialised all `N` elements, and
        // `[MaybeUninit<X>; N]` has the layout of `[X; N]`; `padded` is
        // `MaybeUninit` elements, which are never dropped, so the values
        // are moved out once, here.
        let slots = unsafe { padded.as_ptr().cast::<[CachePadded<T>; N]>().read() };
        Self { slots }
    }

    /// Builds slot `c` with `f(c)`.
    ///
    /// Top-half safe: no (runs arbitrary code). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// let ids: PerCpu<usize, 3> = PerCpu::from_fn(|cpu| cpu * 10);
    /// assert_eq!(*ids.get(2), 20);
    /// ```
    pub fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        let () = Self::CHECK;
        Self {
            slots: core::array::from_fn(|cpu| CachePadded::new(f(cpu))),
        }
    }

    /// The number of CPUs, `N`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// let p: PerCpu<u8, 3> = PerCpu::from_fn(|_| 0);
    /// assert_eq!(p.cpus(), 3);
    /// ```
    pub const fn cpus(&self) -> usize {
        N
    }

    /// The slot of CPU `cpu`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `cpu >= N`, with a message naming both numbers. A backend that
    /// hands out CPU indices checks them at set-up (see
    /// `Runtime::bind_current_thread`, feature `std`),
    /// so this is a bug in the caller, caught before any memory is touched.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// let p: PerCpu<u8, 2> = PerCpu::from_fn(|c| c as u8);
    /// assert_eq!(*p.get(1), 1);
    /// ```
    #[inline]
    #[track_caller]
    pub fn get(&self, cpu: usize) -> &T {
        match self.slots.get(cpu) {
            Some(slot) => slot,
            None => panic!("{}", CpuOutOfRange { cpu, cpus: N }),
        }
    }

    /// The slot of CPU `cpu`, or an error if `cpu >= N`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// let p: PerCpu<u8, 2> = PerCpu::from_fn(|c| c as u8);
    /// assert!(p.try_get(1).is_ok());
    /// assert!(p.try_get(2).is_err());
    /// ```
    #[inline]
    pub fn try_get(&self, cpu: usize) -> Result<&T, CpuOutOfRange> {
        self.slots
            .get(cpu)
            .map(|slot| &**slot)
            .ok_or(CpuOutOfRange { cpu, cpus: N })
    }

    /// The slots in CPU order.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::PerCpu;
    /// let p: PerCpu<usize, 3> = PerCpu::from_fn(|c| c);
    /// assert_eq!(p.iter().copied().collect::<Vec<_>>(), [0, 1, 2]);
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + '_ {
        self.slots.iter().map(|slot| &**slot)
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for PerCpu<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn slots_do_not_share_cache_lines() {
        let p: PerCpu<u8, 4> = PerCpu::from_fn(|c| c as u8);
        let a = p.get(0) as *const u8 as usize;
        let b = p.get(1) as *const u8 as usize;
        assert!(b - a >= 64, "slots {a:#x} and {b:#x} share a cache line");
    }

    #[test]
    fn new_moves_each_slot_in_once_and_pads_it() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        use std::vec::Vec;
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        struct Counted(Vec<u8>);
        impl Drop for Counted {
            fn drop(&mut self) {
                DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let p: PerCpu<Counted, 3> = PerCpu::new([
            Counted(std::vec![0]),
            Counted(std::vec![1, 1]),
            Counted(std::vec![2, 2, 2]),
        ]);
        assert_eq!(
            DROPS.load(Ordering::Relaxed),
            0,
            "a slot was dropped while moved in"
        );
        let lens: Vec<usize> = p.iter().map(|c| c.0.len()).collect();
        assert_eq!(lens, [1, 2, 3]);
        let a = p.get(0) as *const Counted as usize;
        let b = p.get(1) as *const Counted as usize;
        assert!(b - a >= 64, "slots {a:#x} and {b:#x} share a cache line");
        drop(p);
        assert_eq!(
            DROPS.load(Ordering::Relaxed),
            3,
            "each slot dropped exactly once"
        );
    }

    #[test]
    fn out_of_range_is_an_error() {
        let p: PerCpu<u8, 2> = PerCpu::from_fn(|_| 0);
        let e = p.try_get(7).unwrap_err();
        assert_eq!(e, CpuOutOfRange { cpu: 7, cpus: 2 });
        assert_eq!(
            e.to_string(),
            "CPU index 7 out of range: the runtime was built for 2 CPU(s)"
        );
    }

    #[test]
    #[should_panic(expected = "CPU index 2 out of range")]
    fn get_out_of_range_panics_with_message() {
        let p: PerCpu<u8, 2> = PerCpu::from_fn(|_| 0);
        let _ = p.get(2);
    }
}
