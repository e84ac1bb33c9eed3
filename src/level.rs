//! Bottom-half priority levels: the number type.
//!
//! How levels run (pending state, drain triggers, preemption, the guard)
//! is described on [`Runtime`](crate::Runtime), "Levels"; this module only
//! holds the checked number.

use core::fmt;

/// The most levels a runtime can have: its `L` is `1..=8`.
///
/// Eight is more than a Cortex-M0 has interrupt priorities (four) and
/// keeps a vector's level in the three spare bits of its registration
/// byte, so finding it costs `raise` one relaxed load and no RAM.
pub const MAX_LEVELS: usize = 8;

/// A bottom-half priority level: `0` ([`Level::LOWEST`], the default) up
/// to the runtime's `L - 1`. A higher number is a higher priority: its
/// drain may start while a lower level's drain runs on the same CPU (and
/// preempts it, when each level's drain is an interrupt of matching
/// priority), never the other way round.
///
/// A [`Vector`](crate::Vector) belongs to one level, fixed when its
/// handler is registered ([`Runtime::register_at`](crate::Runtime::register_at),
/// [`Handlers::with_at`](crate::Handlers::with_at)); a
/// [`Tasklet`](crate::Tasklet) to the level given by
/// [`Tasklet::at_level`](crate::Tasklet::at_level).
///
/// # Examples
///
/// ```
/// use bottomhalf::Level;
///
/// const MOTOR: Level = Level::new(1);
/// assert_eq!(MOTOR.index(), 1);
/// assert!(MOTOR > Level::LOWEST);
/// assert_eq!(Level::DEFAULT, Level::new(0));
/// assert!(Level::try_new(8).is_err());
/// ```
///
/// A level out of range built in a `const` does not compile:
///
/// ```compile_fail
/// use bottomhalf::Level;
/// const L: Level = Level::new(8); // error: at most 8 levels (0..=7)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Level(u8);

impl Level {
    /// Level 0, where every vector and tasklet is unless told otherwise.
    pub const DEFAULT: Level = Level(0);
    /// Level 0, the lowest priority (the same as [`Level::DEFAULT`]).
    pub const LOWEST: Level = Level(0);

    /// Level `index`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Panics
    ///
    /// If `index >= MAX_LEVELS` (8); in a `const` item that is a
    /// compile-time error. A level below 8 but not below a runtime's `L`
    /// is refused where it is used (registration returns
    /// [`RegisterError::LevelOutOfRange`](crate::RegisterError::LevelOutOfRange)).
    ///
    /// # Examples
    ///
    /// ```
    /// const URGENT: bottomhalf::Level = bottomhalf::Level::new(2);
    /// assert_eq!(URGENT.index(), 2);
    /// ```
    #[track_caller]
    pub const fn new(index: usize) -> Level {
        match Level::try_new(index) {
            Ok(l) => l,
            Err(_) => panic!("bottom-half level out of range: at most 8 levels (0..=7)"),
        }
    }

    /// Level `index`, or an error if `index >= MAX_LEVELS` (8).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`LevelError`] for `index >= 8`.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Level, LevelError};
    /// assert_eq!(Level::try_new(9), Err(LevelError { index: 9 }));
    /// assert_eq!(Level::try_new(7).map(Level::index), Ok(7));
    /// ```
    pub const fn try_new(index: usize) -> Result<Level, LevelError> {
        if index < MAX_LEVELS {
            Ok(Level(index as u8))
        } else {
            Err(LevelError { index })
        }
    }

    /// The level's number, `0..8`.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(bottomhalf::Level::LOWEST.index(), 0);
    /// ```
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The level with this index, which the caller checked (`< 8`).
    pub(crate) const fn from_index(index: usize) -> Level {
        Level(index as u8)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "level {}", self.0)
    }
}

/// Why [`Level::try_new`] refused an index: it is 8 or more.
///
/// # Examples
///
/// ```
/// let e = bottomhalf::Level::try_new(8).unwrap_err();
/// assert_eq!(e.to_string(), "bottom-half level 8 out of range (0..=7)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LevelError {
    /// The index that was asked for.
    pub index: usize,
}

impl fmt::Display for LevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bottom-half level {} out of range (0..={})",
            self.index,
            MAX_LEVELS - 1
        )
    }
}

impl core::error::Error for LevelError {}
