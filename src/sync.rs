//! The only place atomics, `UnsafeCell`, spin hints and thread yields come
//! from.
//!
//! The choice is made once, here:
//!
//! | build | atomics | `UnsafeCell` |
//! | --- | --- | --- |
//! | `--cfg bottomhalf_loom` | `loom::sync::atomic` | `loom::cell::UnsafeCell` |
//! | target with compare-and-swap | `core::sync::atomic` | wrapper over `core::cell::UnsafeCell` |
//! | target without it (thumbv6m, riscv32i) | `portable_atomic`, in the mode the application picks (below) | wrapper over `core::cell::UnsafeCell` |
//!
//! Code that imports `core::sync::atomic` directly is invisible to loom;
//! nothing else in the crate does. The non-loom [`UnsafeCell`] offers loom's
//! closure API (`with`, `with_mut`), so one body of code compiles both ways.
//!
//! loom's types have no `const` constructors, so the crate's `const fn`
//! constructors are plain `fn`s under `--cfg bottomhalf_loom` ([`loom_const_fn!`]).
//!
//! # Targets without compare-and-swap: the application picks
//!
//! On a target without compare-and-swap (Cortex-M0/M0+ `thumbv6m-none-eabi`,
//! RISC-V without the A extension `riscv32i-unknown-none-elf`) the crate's
//! read-modify-writes come from [`portable-atomic`], which can provide them
//! in two ways. Which one is right depends on the system, so the crate does
//! not choose (portable-atomic asks libraries not to): the **application**
//! enables one in its own `Cargo.toml`.
//!
//! - A critical section: portable-atomic's `critical-section` feature plus
//!   one [`critical-section`] implementation, for example `cortex-m`'s for a
//!   single-core Cortex-M, or an RTOS's or a multi-core chip's own:
//!
//!   ```toml
//!   [dependencies]
//!   portable-atomic = { version = "1", default-features = false, features = ["critical-section"] }
//!   cortex-m = { version = "0.7", features = ["critical-section-single-core"] }
//!   ```
//!
//! - Interrupt masking without a critical-section crate: portable-atomic's
//!   `unsafe-assume-single-core` feature (or the
//!   `--cfg portable_atomic_unsafe_assume_single_core` rustflag). Sound only
//!   on a single-core chip whose code runs privileged; cheaper, since loads
//!   and stores do not mask interrupts:
//!
//!   ```toml
//!   [dependencies]
//!   portable-atomic = { version = "1", default-features = false, features = ["unsafe-assume-single-core"] }
//!   ```
//!
//! With neither, the build stops in portable-atomic with an error that
//! names both (the crate enables its `require-cas` feature for that). Either
//! way a read-modify-write masks interrupts for a few instructions: a top
//! half that runs in an interrupt handler is delayed by that much, never
//! blocked. Targets with compare-and-swap (Cortex-M3 and up, `riscv32imac`,
//! AArch64, x86-64) do not use portable-atomic at all.
//!
//! [`portable-atomic`]: https://docs.rs/portable-atomic
//! [`critical-section`]: https://docs.rs/critical-section

#[cfg(bottomhalf_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

#[cfg(all(not(bottomhalf_loom), target_has_atomic = "32"))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

#[cfg(all(not(bottomhalf_loom), not(target_has_atomic = "32")))]
pub(crate) use portable_atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU8, AtomicUsize};

pub(crate) use core::sync::atomic::Ordering;

/// An atomic loom does not see, under `--cfg bottomhalf_loom` only: for a value that
/// no modelled thread changes (the `fork` generation, which in a real
/// process only the single-threaded child handler writes), so reading it
/// adds no interleavings to the models.
#[cfg(bottomhalf_loom)]
pub(crate) use core::sync::atomic::AtomicU32 as UnmodelledAtomicU32;

/// A hint inside a bounded wait loop (bottom half only; never in a top half).
///
/// Under loom this yields to the model's scheduler, which is what loom needs
/// to explore a wait loop without diverging.
#[inline]
pub(crate) fn spin_wait() {
    #[cfg(bottomhalf_loom)]
    loom::thread::yield_now();
    #[cfg(all(not(bottomhalf_loom), feature = "std"))]
    std::thread::yield_now();
    #[cfg(all(not(bottomhalf_loom), not(feature = "std")))]
    core::hint::spin_loop();
}

/// `core::cell::UnsafeCell` with loom's closure API.
#[cfg(not(bottomhalf_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T: ?Sized>(core::cell::UnsafeCell<T>);

#[cfg(not(bottomhalf_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(bottomhalf_loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a unique raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(bottomhalf_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Declares a constructor that is `const fn` normally and a plain `fn` under
/// `--cfg bottomhalf_loom`, whose types have no `const` constructors.
macro_rules! loom_const_fn {
    // With type parameters, each with one bound (`<C: Sync>`).
    ($(#[$attr:meta])* $vis:vis fn $name:ident <$($gen:ident : $bound:path),+> ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(bottomhalf_loom))]
        $(#[$attr])*
        $vis const fn $name <$($gen: $bound),+> ($($arg: $ty),*) -> $ret $body

        #[cfg(bottomhalf_loom)]
        $(#[$attr])*
        $vis fn $name <$($gen: $bound),+> ($($arg: $ty),*) -> $ret $body
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident $(<$($lt:lifetime),*>)? ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        #[cfg(not(bottomhalf_loom))]
        $(#[$attr])*
        $vis const fn $name $(<$($lt),*>)? ($($arg: $ty),*) -> $ret $body

        #[cfg(bottomhalf_loom)]
        $(#[$attr])*
        $vis fn $name $(<$($lt),*>)? ($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use loom_const_fn;

/// Selects an ordering that a loom mutant weakens.
///
/// `ordering!("name", Strong, Weak)` is `Strong` normally and `Weak` when the
/// crate is built with `--cfg bh_mutant="name"`. A site whose ordering
/// serves two properties names a second mutant that drops only one half:
/// `ordering!("a", AcqRel, Relaxed, "b", Release)`. Each use names the
/// ordering pair it belongs to; `loom-tests/mutants.txt` lists the mutants
/// and the model that must catch each one.
macro_rules! ordering {
    ($name:literal, $strong:ident, $weak:ident) => {{
        #[cfg(not(bh_mutant = $name))]
        {
            $crate::sync::Ordering::$strong
        }
        #[cfg(bh_mutant = $name)]
        {
            $crate::sync::Ordering::$weak
        }
    }};
    ($name:literal, $strong:ident, $weak:ident, $name2:literal, $weak2:ident) => {{
        #[cfg(not(any(bh_mutant = $name, bh_mutant = $name2)))]
        {
            $crate::sync::Ordering::$strong
        }
        #[cfg(bh_mutant = $name)]
        {
            $crate::sync::Ordering::$weak
        }
        #[cfg(bh_mutant = $name2)]
        {
            $crate::sync::Ordering::$weak2
        }
    }};
}
pub(crate) use ordering;

/// `[expr; N]` for a non-`Copy` `expr`: an inline `const` block normally, an
/// `array::from_fn` under loom (whose constructors are not `const`).
macro_rules! array_of {
    ($expr:expr; $n:expr) => {{
        #[cfg(not(bottomhalf_loom))]
        {
            [const { $expr }; $n]
        }
        #[cfg(bottomhalf_loom)]
        {
            core::array::from_fn(|_| $expr)
        }
    }};
}
pub(crate) use array_of;

/// Runs its closure when dropped. The crate drops one only while unwinding
/// from a panic (a user callback, a backend's CPU index out of range): each
/// use `forget`s it on the normal path, so it costs nothing there. With
/// `panic = "abort"` (firmware) it never runs.
pub(crate) struct OnUnwind<F: FnMut()>(pub(crate) F);

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
