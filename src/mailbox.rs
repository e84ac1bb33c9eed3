//! Mailboxes: bounded rings that carry what a top half captured to the
//! bottom half.
//!
//! [`Mailbox`] has one producer and one consumer, [`MpscMailbox`] any number
//! of producers. What `push` does when full ("Dropped or refused"), why the
//! ring is the crate's own, and an example of each are on those types.

use core::fmt;
use core::mem::MaybeUninit;

use crate::sync::{
    array_of, loom_const_fn, ordering, AtomicBool, AtomicU32, AtomicUsize, Ordering, UnsafeCell,
};

/// Adds one to a counter that only the calling producer writes (a load and
/// a store: no read-modify-write, so no masked section on cores without
/// CAS) and hands `item` back.
#[inline]
fn bump<T>(counter: &AtomicU32, item: T) -> T {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
    item
}

/// Why a mailbox refused to hand out an endpoint.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Mailbox, MailboxError};
/// let mb: Mailbox<u8, 4> = Mailbox::new();
/// let _ends = mb.split().unwrap();
/// assert_eq!(mb.split().unwrap_err(), MailboxError::AlreadySplit);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MailboxError {
    /// [`Mailbox::split`] found an end out: a [`Producer`] or [`Consumer`]
    /// of this mailbox is alive (a single-producer mailbox has one of
    /// each at a time).
    AlreadySplit,
    /// Another [`MpscConsumer`] of this mailbox is alive.
    ConsumerTaken,
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MailboxError::AlreadySplit => {
                "mailbox already split: it has exactly one producer and one consumer"
            }
            MailboxError::ConsumerTaken => "mailbox already has a live consumer",
        })
    }
}

impl core::error::Error for MailboxError {}

/// A single-producer, single-consumer mailbox of capacity `N - 1`: a
/// bounded ring that carries what a top half captured to its bottom half.
///
/// Storage is inline and fixed (`static`-friendly, `const` constructor);
/// `push` never blocks and never allocates; a full mailbox hands the item
/// back and counts the drop, so nothing is lost silently; the mailbox
/// tracks its high-water mark so a capacity can be sized from a real run.
/// `new` writes no non-zero byte, so a `static` lands in `.bss`: no flash
/// image of its initial state. For several producers (nested interrupts,
/// signal handlers on several threads) use [`MpscMailbox`].
///
/// A ring of `N` slots with two indices (a Lamport queue: the producer
/// writes the tail, the consumer the head); one slot tells full from
/// empty, so it holds `N - 1` items. `N` must be at least 2 (checked at
/// compile time); a power of two makes the index arithmetic a mask.
///
/// # Ends
///
/// The two ends are handles, so the single-producer rule is the type
/// system's: [`take_producer`](Mailbox::take_producer) and
/// [`take_consumer`](Mailbox::take_consumer) hand out one end each, and
/// [`split`](Mailbox::split) both at once. An end is out until its handle
/// is dropped; while it is out, taking it again gives `None` (or
/// [`MailboxError::AlreadySplit`] from `split`). So a context that keeps
/// its handle for good (an interrupt handler's `static mut` local under
/// `cortex-m-rt`, an RTIC task's `#[local]` resource) owns that end for
/// good, and a context that takes it on every run (a tasklet) gives it
/// back at the end of the run. On a `static` mailbox the handles are
/// `'static`:
///
/// ```
/// use bottomhalf::{Mailbox, Producer};
///
/// static SAMPLES: Mailbox<u16, 8> = Mailbox::new();
///
/// // An interrupt handler under cortex-m-rt: `#[interrupt] fn ADC() {
/// // static mut TX: Option<Producer<'static, u16, 8>> = None; .. }`
/// // turns `TX` into a safe `&mut` local that lives for good.
/// fn adc_irq(tx: &mut Option<Producer<'static, u16, 8>>, sample: u16) {
///     if tx.is_none() {
///         *tx = SAMPLES.take_producer(); // first run: take the end
///     }
///     if let Some(tx) = tx {
///         let _ = tx.push(sample); // a drop is counted in SAMPLES.dropped()
///     }
/// }
///
/// // A tasklet: takes the consumer on every run, gives it back at the end.
/// fn samples_bh() -> u32 {
///     let mut sum = 0;
///     if let Some(rx) = SAMPLES.take_consumer() {
///         sum = rx.map(u32::from).sum();
///     }
///     sum
/// }
///
/// let mut tx = None; // the handler's `static mut` local
/// adc_irq(&mut tx, 3);
/// adc_irq(&mut tx, 4);
/// assert_eq!(samples_bh(), 7);
/// assert!(SAMPLES.take_producer().is_none(), "the handler holds it");
/// ```
///
/// # Dropped or refused
///
/// Every item pushed is popped once or counted once as dropped (this holds
/// for [`MpscMailbox`] too). [`push`](Producer::push) is push-or-drop: when
/// the mailbox is full it hands the item back and counts it in
/// [`dropped`](Mailbox::dropped), since a top half usually has nowhere to
/// keep it. A producer that can keep the item and retry (a thread, a bottom
/// half) calls [`try_push`](Producer::try_push) instead: a full mailbox
/// hands the item back and counts the attempt in
/// [`refused`](Mailbox::refused), not as a drop; when it gives up, a last
/// `push` either queues the item or counts it as dropped. So `dropped()`
/// counts items lost and `refused()` attempts that were retried or given
/// up through `push`.
///
/// # Why not `heapless::spsc`
///
/// It is the field's usual ring, and this crate used it until its ends
/// had to be handles: `heapless::spsc::Queue::split` takes `&mut self`, so
/// `'static` ends of a `static` queue need either user `unsafe` (`static
/// mut`) or a cell crate and a run-time initialisation, and an end once
/// dropped can never be taken again from a shared reference. Here the ends
/// come from `&self`, are `'static` on a `static`, and go back on drop.
/// loom also cannot see inside heapless, while this ring's publish and
/// consume orderings each have a loom model and a mutant. The push costs
/// the same: `cargo bench --bench top_half -- spsc_push` measures
/// `Producer::push` against `heapless::spsc::Producer::enqueue` in one run
/// (figures in the crate's README). The ring takes its atomics from the
/// same place as the rest of the crate (`portable-atomic` on targets
/// without compare-and-swap; see [`BareMetal`](crate::BareMetal) for what
/// that masks).
///
/// # Examples
///
/// ```
/// use bottomhalf::Mailbox;
///
/// static SAMPLES: Mailbox<u16, 8> = Mailbox::new();
///
/// let (mut tx, mut rx) = SAMPLES.split().unwrap();
/// for s in 0..10 {
///     let _ = tx.push(s); // the 8th..10th are handed back and counted
/// }
/// assert_eq!(SAMPLES.dropped(), 3);
/// assert_eq!(SAMPLES.high_water(), 7);
/// assert_eq!(rx.pop(), Some(0));
/// ```
pub struct Mailbox<T, const N: usize> {
    /// The ring. Slot `tail` is written by the producer handle only, while
    /// it is outside `head..tail`; slots in `head..tail` are read and
    /// emptied by the consumer handle only.
    slots: [UnsafeCell<MaybeUninit<T>>; N],
    /// Next slot to write, `0..N`. Stored by the producer handle only.
    tail: AtomicUsize,
    /// Next slot to read, `0..N`. Stored by the consumer handle only.
    head: AtomicUsize,
    /// Set while a [`Producer`] of this mailbox is alive.
    producer_out: AtomicBool,
    /// Set while a [`Consumer`] of this mailbox is alive.
    consumer_out: AtomicBool,
    /// Items handed back by a full ring to `push` (lost). Written by the
    /// producer only.
    dropped: AtomicU32,
    /// Attempts handed back by a full ring to `try_push` (kept by the
    /// caller). Written by the producer only.
    refused: AtomicU32,
    /// Items queued, wrapping. Written by the producer only (a store).
    pushed: AtomicU32,
    /// Items popped, wrapping. Written by the consumer only (a store).
    popped: AtomicU32,
    /// Most items queued at once, as seen by the consumer just before each
    /// pop (occupancy only falls at a pop, so it peaks right before one).
    /// Written by the consumer only.
    high_water: AtomicU32,
}

// SAFETY: the ring is reached only through the handles, at most one of
// each kind alive at a time (`producer_out`, `consumer_out`): the producer
// handle moves `T`s in, the consumer handle moves them out, each on its
// own thread at most, so `T: Send` suffices; the rest are atomics.
unsafe impl<T: Send, const N: usize> Sync for Mailbox<T, N> {}

impl<T, const N: usize> Mailbox<T, N> {
    /// The number of items it holds when full: `N - 1`.
    pub const CAPACITY: usize = N - 1;

    const CHECK: () = assert!(N >= 2, "Mailbox needs N >= 2 (it holds N - 1 items)");

    loom_const_fn! {
        /// An empty mailbox. Its bytes are all zero, so a `static` of it
        /// lands in `.bss`.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::Mailbox;
        /// static MB: Mailbox<[u8; 4], 32> = Mailbox::new();
        /// assert_eq!(Mailbox::<[u8; 4], 32>::CAPACITY, 31);
        /// ```
        pub fn new() -> Mailbox<T, N> {
            let () = Self::CHECK;
            Mailbox {
                slots: array_of![UnsafeCell::new(MaybeUninit::uninit()); N],
                tail: AtomicUsize::new(0),
                head: AtomicUsize::new(0),
                producer_out: AtomicBool::new(false),
                consumer_out: AtomicBool::new(false),
                dropped: AtomicU32::new(0),
                refused: AtomicU32::new(0),
                pushed: AtomicU32::new(0),
                popped: AtomicU32::new(0),
                high_water: AtomicU32::new(0),
            }
        }
    }

    /// Marks one end out: `true` if it was free. One compare-and-swap, so
    /// two contexts that race for an end cannot both win, and a refused
    /// take writes nothing.
    #[inline]
    fn take_end(flag: &AtomicBool) -> bool {
        // Acquire: pairs with the Release store in the previous handle's
        // `Drop` (`give_back`), so this handle sees that one's last index
        // and counter stores.
        #[cfg(not(bh_mutant = "mailbox_take_load_store"))]
        let was_out = flag
            .compare_exchange(
                false,
                true,
                ordering!("mailbox_handoff_relaxed", Acquire, Relaxed),
                Ordering::Relaxed,
            )
            .is_err();
        // The mutant: a load and a store, which two racing takers can both
        // pass.
        #[cfg(bh_mutant = "mailbox_take_load_store")]
        let was_out = {
            let was = flag.load(Ordering::Acquire);
            flag.store(true, Ordering::Relaxed);
            was
        };
        !was_out
    }

    /// Marks an end free again (its handle is dropped).
    #[inline]
    fn give_back(flag: &AtomicBool) {
        // Release: pairs with the Acquire swap in `take_end`.
        flag.store(
            false,
            ordering!("mailbox_handoff_relaxed", Release, Relaxed),
        );
    }

    /// The producer end, if no other [`Producer`] of this mailbox is alive.
    ///
    /// Dropping the handle gives the end back. A context that keeps the
    /// handle (an interrupt handler's `static mut` local under
    /// `cortex-m-rt`, an RTIC task's `#[local]` resource) owns the
    /// producer end for good; see "Ends" on [`Mailbox`]. On a `static`
    /// mailbox the handle is `Producer<'static, T, N>`.
    ///
    /// A refused take is not counted: the caller sees `None`.
    ///
    /// Top-half safe: yes (one compare-and-swap, lock-free; an interrupt
    /// handler may take its end on first use). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Mailbox, Producer};
    /// static MB: Mailbox<u16, 8> = Mailbox::new();
    ///
    /// let tx: Producer<'static, u16, 8> = MB.take_producer().unwrap();
    /// assert!(MB.take_producer().is_none(), "one producer at a time");
    /// drop(tx);
    /// assert!(MB.take_producer().is_some(), "dropping it gave the end back");
    /// ```
    pub fn take_producer(&self) -> Option<Producer<'_, T, N>> {
        if !Self::take_end(&self.producer_out) {
            return None;
        }
        Some(Producer {
            mailbox: self,
            // Relaxed: the Acquire in `take_end` ordered this after the
            // previous producer's last store.
            pushed: self.pushed.load(Ordering::Relaxed),
        })
    }

    /// The consumer end, if no other [`Consumer`] of this mailbox is alive.
    ///
    /// Dropping the handle gives the end back, so a tasklet can take the
    /// consumer at the start of each run and give it back at the end (its
    /// runs never overlap); a context that keeps the handle owns the end
    /// for good. See "Ends" on [`Mailbox`].
    ///
    /// A refused take is not counted: the caller sees `None`.
    ///
    /// Top-half safe: yes (one compare-and-swap). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// A tasklet that takes the consumer on every run:
    ///
    /// ```
    /// use bottomhalf::{Config, Host, Mailbox, Runtime, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static RX: Mailbox<u8, 8> = Mailbox::new();
    /// static SUM: AtomicU32 = AtomicU32::new(0);
    /// static RX_BH: Tasklet = Tasklet::new(&RT, || {
    ///     // Runs of one tasklet never overlap: the end is always free here.
    ///     let Some(rx) = RX.take_consumer() else { return };
    ///     for byte in rx {
    ///         SUM.fetch_add(u32::from(byte), Ordering::Relaxed);
    ///     }
    /// });
    ///
    /// let mut tx = RX.take_producer().unwrap(); // the top half's end
    /// tx.push(1).unwrap();
    /// tx.push(2).unwrap();
    /// RX_BH.schedule();
    /// let _ = RT.drain();
    /// assert_eq!(SUM.load(Ordering::Relaxed), 3);
    /// ```
    pub fn take_consumer(&self) -> Option<Consumer<'_, T, N>> {
        if !Self::take_end(&self.consumer_out) {
            return None;
        }
        Some(Consumer {
            mailbox: self,
            // Relaxed: as in `take_producer`.
            popped: self.popped.load(Ordering::Relaxed),
        })
    }

    /// Both ends at once, if neither is out.
    ///
    /// Dropping a handle gives its end back (see "Ends" on [`Mailbox`]),
    /// so a mailbox can be split again once both handles are gone.
    ///
    /// Top-half safe: yes (but it belongs in set-up). Allocates: no.
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// [`MailboxError::AlreadySplit`] while either end is out.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u32, 4> = Mailbox::new();
    /// let (mut tx, mut rx) = mb.split().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(move || tx.push(7).unwrap());
    /// });
    /// assert_eq!(rx.pop(), Some(7));
    /// ```
    pub fn split(&self) -> Result<(Producer<'_, T, N>, Consumer<'_, T, N>), MailboxError> {
        let tx = self.take_producer().ok_or(MailboxError::AlreadySplit)?;
        let rx = self.take_consumer().ok_or(MailboxError::AlreadySplit)?;
        Ok((tx, rx))
    }

    /// Items lost because the mailbox was full: refused
    /// [`push`](Producer::push)es (see
    /// ["Dropped or refused"](Mailbox#dropped-or-refused)).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 2> = Mailbox::new();
    /// let (mut tx, _rx) = mb.split().unwrap();
    /// tx.push(1).unwrap();
    /// assert_eq!(tx.push(2), Err(2));
    /// assert_eq!(mb.dropped(), 1);
    /// ```
    pub fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Attempts refused because the mailbox was full, whose item the caller
    /// kept: refused [`try_push`](Producer::try_push)es. Not drops.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 2> = Mailbox::new();
    /// let (mut tx, mut rx) = mb.split().unwrap();
    /// tx.push(1).unwrap();
    /// let item = tx.try_push(2).unwrap_err(); // full: keep it and retry
    /// rx.pop();
    /// tx.try_push(item).unwrap();
    /// assert_eq!((mb.refused(), mb.dropped()), (1, 0));
    /// ```
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The most items the mailbox has held at once (never more than
    /// [`CAPACITY`](Mailbox::CAPACITY)).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 8> = Mailbox::new();
    /// let (mut tx, mut rx) = mb.split().unwrap();
    /// tx.push(1).unwrap();
    /// tx.push(2).unwrap();
    /// rx.pop();
    /// tx.push(3).unwrap();
    /// assert_eq!(mb.high_water(), 2);
    /// ```
    pub fn high_water(&self) -> u32 {
        // The consumer's maximum covers every peak followed by a pop; the
        // one not yet followed by a pop is the current occupancy, estimated
        // from the two counters, which are written independently (Relaxed,
        // each after its ring operation, so a pop can be counted before
        // its push is) and read at two moments. Read `pushed` first: then
        // the estimate errs low, never high (`popped` is read later and may
        // count more pops), except by the one pop in flight. Erring low can
        // go below zero, which wraps to near `u32::MAX`: that means the
        // ring was being emptied, so it counts as 0. The result is clamped
        // to the capacity, which the one pop in flight could pass by one.
        let pushed = self.pushed.load(Ordering::Relaxed);
        let popped = self.popped.load(Ordering::Relaxed);
        let now = pushed.wrapping_sub(popped);
        let now = if now > u32::MAX / 2 { 0 } else { now };
        let cap = Self::CAPACITY as u32;
        self.high_water.load(Ordering::Relaxed).max(now).min(cap)
    }

    /// The slot after `i`.
    #[inline(always)]
    const fn next(i: usize) -> usize {
        (i + 1) % N
    }

    /// Items in the ring from `head` to `tail`.
    #[inline(always)]
    const fn distance(head: usize, tail: usize) -> usize {
        (tail + N - head) % N
    }
}

impl<T, const N: usize> Drop for Mailbox<T, N> {
    fn drop(&mut self) {
        // `&mut self`: no handle is alive. Drop the items never popped.
        let tail = self.tail.load(Ordering::Relaxed);
        let mut head = self.head.load(Ordering::Relaxed);
        while head != tail {
            // SAFETY: slots in `head..tail` hold items that were written
            // and not read; nothing else can reach them now.
            self.slots[head].with_mut(|p| unsafe { (*p).assume_init_drop() });
            head = Self::next(head);
        }
    }
}

impl<T, const N: usize> Default for Mailbox<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> fmt::Debug for Mailbox<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("capacity", &Self::CAPACITY)
            .field("dropped", &self.dropped())
            .field("refused", &self.refused())
            .field("high_water", &self.high_water())
            .finish_non_exhaustive()
    }
}

/// The producing end of a [`Mailbox`], for the one top half that pushes.
///
/// Take it with [`Mailbox::take_producer`] (or [`Mailbox::split`]) and keep
/// it where that top half can reach it without `unsafe`: an interrupt
/// handler's `static mut` local under `cortex-m-rt` (which the
/// `#[interrupt]` macro turns into a safe `&mut`; initialize it with `None`
/// and take the end on first use), an RTIC task's `#[local]` resource, or
/// a signal backend's handler state. See "Ends" on [`Mailbox`]. Dropping
/// it gives the end back.
///
/// # Examples
///
/// ```
/// use bottomhalf::{Mailbox, Producer};
///
/// static MB: Mailbox<u8, 4> = Mailbox::new();
///
/// // The body of `#[interrupt] fn UART0() { static mut TX: Option<Producer<'static, u8, 4>> = None; .. }`
/// fn uart0(tx: &mut Option<Producer<'static, u8, 4>>, byte: u8) {
///     if tx.is_none() {
///         *tx = MB.take_producer();
///     }
///     if let Some(tx) = tx {
///         let _ = tx.push(byte);
///     }
/// }
///
/// let mut local = None;
/// uart0(&mut local, 1);
/// assert_eq!(MB.take_consumer().unwrap().pop(), Some(1));
/// ```
pub struct Producer<'a, T, const N: usize> {
    mailbox: &'a Mailbox<T, N>,
    /// This end's copy of `Mailbox::pushed`, so a push only stores.
    pushed: u32,
}

impl<T, const N: usize> Producer<'_, T, N> {
    /// Queues `item`, or, if the mailbox is full, hands it back and counts
    /// it as dropped ([`Mailbox::dropped`]): push or drop. A caller that
    /// keeps the item to retry uses [`try_push`](Producer::try_push).
    ///
    /// Top-half safe: yes (wait-free: the ring's loads and stores plus one
    /// store of the push count; no read-modify-write). Allocates: no.
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// `Err(item)` when full.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<&str, 2> = Mailbox::new();
    /// let (mut tx, _rx) = mb.split().unwrap();
    /// assert_eq!(tx.push("a"), Ok(()));
    /// assert_eq!(tx.push("b"), Err("b"));
    /// assert_eq!(mb.dropped(), 1);
    /// ```
    #[inline]
    pub fn push(&mut self, item: T) -> Result<(), T> {
        self.enqueue(item)
            .map_err(|item| bump(&self.mailbox.dropped, item))
    }

    /// Queues `item`, or, if the mailbox is full, hands it back for a retry
    /// and counts the attempt in [`Mailbox::refused`], not as a drop.
    ///
    /// Top-half safe: yes (as [`push`](Producer::push)). Allocates: no.
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// `Err(item)` when full.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 2> = Mailbox::new();
    /// let (mut tx, _rx) = mb.split().unwrap();
    /// tx.try_push(1).unwrap();
    /// assert_eq!(tx.try_push(2), Err(2));
    /// assert_eq!((mb.refused(), mb.dropped()), (1, 0));
    /// ```
    #[inline]
    pub fn try_push(&mut self, item: T) -> Result<(), T> {
        self.enqueue(item)
            .map_err(|item| bump(&self.mailbox.refused, item))
    }

    #[inline(always)]
    fn enqueue(&mut self, item: T) -> Result<(), T> {
        let mb = self.mailbox;
        // Relaxed: only the producer handle stores `tail` (a previous
        // handle's stores are ordered by the hand-off in `take_end`).
        let tail = mb.tail.load(Ordering::Relaxed);
        let next = Mailbox::<T, N>::next(tail);
        // Acquire: pairs with the Release store of `head` in `pop`: the
        // consumer's read of the slot we may now reuse happens before our
        // write to it.
        if next
            == mb
                .head
                .load(ordering!("spsc_full_relaxed", Acquire, Relaxed))
        {
            return Err(item);
        }
        // SAFETY: slot `tail` is outside `head..tail`, so the consumer does
        // not touch it, and this handle is the only producer (`&mut self`,
        // `producer_out`).
        mb.slots[tail].with_mut(|p| unsafe { (*p).write(item) });
        // Release: publishes the write to the consumer's Acquire load.
        mb.tail
            .store(next, ordering!("spsc_publish_relaxed", Release, Relaxed));
        // The producer is the only writer: a store, no RMW.
        self.pushed = self.pushed.wrapping_add(1);
        mb.pushed.store(self.pushed, Ordering::Relaxed);
        Ok(())
    }

    /// `true` if a `push` now would succeed.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 2> = Mailbox::new();
    /// let (mut tx, _rx) = mb.split().unwrap();
    /// assert!(tx.ready());
    /// tx.push(0).unwrap();
    /// assert!(!tx.ready());
    /// ```
    pub fn ready(&self) -> bool {
        let mb = self.mailbox;
        let next = Mailbox::<T, N>::next(mb.tail.load(Ordering::Relaxed));
        next != mb.head.load(Ordering::Relaxed)
    }
}

impl<T, const N: usize> Drop for Producer<'_, T, N> {
    fn drop(&mut self) {
        Mailbox::<T, N>::give_back(&self.mailbox.producer_out);
    }
}

impl<T, const N: usize> fmt::Debug for Producer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

/// The consuming end of a [`Mailbox`], for the bottom half.
///
/// Take it with [`Mailbox::take_consumer`] (or [`Mailbox::split`]); a
/// tasklet can take it at the start of each run, since dropping it gives
/// the end back (see "Ends" on [`Mailbox`]).
///
/// # Examples
///
/// ```
/// use bottomhalf::Mailbox;
/// let mb: Mailbox<u8, 4> = Mailbox::new();
/// let (mut tx, mut rx) = mb.split().unwrap();
/// tx.push(9).unwrap();
/// assert_eq!(rx.pop(), Some(9));
/// assert_eq!(rx.pop(), None);
/// ```
pub struct Consumer<'a, T, const N: usize> {
    mailbox: &'a Mailbox<T, N>,
    /// This end's copy of `Mailbox::popped`.
    popped: u32,
}

impl<T, const N: usize> Consumer<'_, T, N> {
    /// The oldest item, or `None` if empty.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 4> = Mailbox::new();
    /// let (_tx, mut rx) = mb.split().unwrap();
    /// assert_eq!(rx.pop(), None);
    /// ```
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let mb = self.mailbox;
        // Relaxed: only the consumer handle stores `head` (a previous
        // handle's stores are ordered by the hand-off in `take_end`).
        let head = mb.head.load(Ordering::Relaxed);
        // Acquire: pairs with the Release store of `tail` in `enqueue`.
        let tail = mb
            .tail
            .load(ordering!("spsc_consume_relaxed", Acquire, Relaxed));
        if head == tail {
            return None;
        }
        // Occupancy peaks just before a pop; the consumer is the only
        // writer of the mark, so a load and a store do.
        let len = Mailbox::<T, N>::distance(head, tail) as u32;
        // SAFETY: `head != tail`: the producer wrote slot `head` (the
        // Acquire above) and will not touch it again before it sees
        // `head` move past it.
        let item = mb.slots[head].with(|p| unsafe { (*p).assume_init_read() });
        // Release: pairs with the Acquire load of `head` in `enqueue`; the
        // slot is read before the producer may reuse it.
        mb.head.store(
            Mailbox::<T, N>::next(head),
            ordering!("spsc_release_relaxed", Release, Relaxed),
        );
        if len > mb.high_water.load(Ordering::Relaxed) {
            mb.high_water.store(len, Ordering::Relaxed);
        }
        self.popped = self.popped.wrapping_add(1);
        mb.popped.store(self.popped, Ordering::Relaxed);
        Some(item)
    }

    /// Items queued now.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 4> = Mailbox::new();
    /// let (mut tx, rx) = mb.split().unwrap();
    /// tx.push(1).unwrap();
    /// assert_eq!(rx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let mb = self.mailbox;
        let head = mb.head.load(Ordering::Relaxed);
        Mailbox::<T, N>::distance(head, mb.tail.load(Ordering::Relaxed))
    }

    /// `true` if nothing is queued.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::Mailbox;
    /// let mb: Mailbox<u8, 4> = Mailbox::new();
    /// let (_tx, rx) = mb.split().unwrap();
    /// assert!(rx.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, const N: usize> Iterator for Consumer<'_, T, N> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T, const N: usize> Drop for Consumer<'_, T, N> {
    fn drop(&mut self) {
        Mailbox::<T, N>::give_back(&self.mailbox.consumer_out);
    }
}

impl<T, const N: usize> fmt::Debug for Consumer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("len", &self.len())
            .finish()
    }
}

/// One slot of the MPSC ring.
struct Slot<T> {
    /// The stamp of `ticket` (`MpscMailbox::stamp`: `ticket + 1` less the
    /// slot's index `ticket % N`, wrapping at `HALF` bits) once the item of
    /// `ticket` is written (Release by the producer that drew `ticket`);
    /// anything else means "not ready". A Vyukov sequence number stored
    /// relative to the slot's index, so that it starts at 0 in every slot
    /// (the mailbox is all zero, and a `static` lands in `.bss`): 0 is "no
    /// ticket of lap 0 written yet", where the absolute form is `i`. A
    /// stale value is the stamp of `ticket - k·N` for a lap `k ≥ 1`, and
    /// neither it nor 0 equals the stamp of `ticket`, because `N` is a
    /// power of two below the ticket range (for `N = 1`, 0 is the stamp of
    /// the last ticket before the wrap, by which time the slot holds the
    /// stamp of the ticket before it, as in the absolute form).
    ready: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// A multi-producer, single-consumer mailbox of capacity `N`.
///
/// Producers need no handle: [`push`](MpscMailbox::push) and
/// [`try_push`](MpscMailbox::try_push) take `&self`, so every interrupt
/// handler, signal handler or thread pushes into a `static` mailbox
/// directly. The one consumer is a handle ([`take_consumer`], or
/// [`consumer`] with an error), given back when dropped: a tasklet takes
/// it at the start of each run, and a context that keeps it (an RTIC
/// `#[local]`) owns it for good. `new` is all zero, so a `static` lands in
/// `.bss`.
///
/// A full mailbox hands the item back: [`push`](MpscMailbox::push) counts
/// it in [`dropped`], [`try_push`](MpscMailbox::try_push) in
/// [`refused`](MpscMailbox::refused) for a caller that retries; every item
/// pushed is popped once or counted once as dropped (see "Dropped or
/// refused" on [`Mailbox`](Mailbox#dropped-or-refused)).
///
/// A typical bottom half pairs a mailbox with a tasklet: the top half
/// pushes, then schedules; the tasklet pops until empty:
///
/// ```
/// use bottomhalf::{Config, Host, MpscMailbox, Runtime, Tasklet};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
/// static RX: MpscMailbox<u8, 16> = MpscMailbox::new();
/// static SUM: AtomicU32 = AtomicU32::new(0);
/// static RX_BH: Tasklet = Tasklet::new(&RT, || {
///     let mut rx = RX.consumer().expect("only this tasklet consumes");
///     while let Some(byte) = rx.pop() {
///         SUM.fetch_add(u32::from(byte), Ordering::Relaxed);
///     }
/// });
///
/// // Top half (an interrupt or signal handler): capture, push, schedule.
/// fn uart_irq(byte: u8) {
///     let _ = RX.push(byte); // a drop is counted in RX.dropped()
///     RX_BH.schedule();
/// }
///
/// uart_irq(1);
/// uart_irq(2);
/// let _ = RT.drain();
/// assert_eq!(SUM.load(Ordering::Relaxed), 3);
/// ```
///
/// [`take_consumer`]: MpscMailbox::take_consumer
///
/// # Progress
///
/// `push` is lock-free and never waits for another context: one CAS on a
/// word that packs the number of used slots with the next ticket reserves
/// room and draws a ticket at once (retried only when another `push` or
/// `pop` *completed* its step in between); then it writes its slot and
/// publishes it. A producer preempted
/// anywhere in `push` (by a nested interrupt, a signal, the scheduler)
/// blocks no other producer, and `push` fails only when `N` items are
/// really queued or reserved — never because a producer or the consumer is
/// stuck half-way (the flaw that got `heapless::mpmc` deprecated). On one
/// CPU whose producers are interrupt handlers, each retry is caused by a
/// handler that preempted this one and finished, so retries are bounded by
/// the nesting depth. The ring is this crate's own; its reservation and
/// publication orderings have loom models and mutants.
///
/// `pop` is FIFO by ticket: while the producer of the oldest ticket is
/// preempted before publishing, `pop` returns `None` even if newer items
/// are ready; they follow once it finishes.
///
/// `N` must be a power of two (checked at compile time).
///
/// # fork()
///
/// (Feature `std`, Unix.) A child of `fork()` has only the forking thread,
/// so a `push` another parent thread was in the middle of never finishes
/// there, and a consumer handle another parent thread held is never
/// dropped. Neither leaves the child's mailbox stuck:
///
/// - The first context of the child that reserves a ticket or takes the
///   consumer records the ticket the fork left as next (one compare-and-
///   swap, once per mailbox and fork; lock-free and top-half safe). Every
///   later push of the child checks that record (one load and a compare
///   beside the process's fork generation), so each ticket of the child
///   is drawn after it, and the tickets before it are known to belong to
///   the parent.
/// - The first consumer handle of the child (from [`consumer`], or the
///   forking thread's own, below) gives back the slot of a pop that a
///   parent thread had left half-done, and marks each ticket drawn before
///   the fork and never published: `pop` steps over it, gives its slot
///   back and counts it in [`dropped`]. So in the child everything that
///   was queued at the fork is popped or counted as dropped, and every
///   slot comes back. The item of a stepped-over ticket (perhaps half
///   written) is not dropped: its destructor does not run.
/// - The consumer token records the fork generation of the handle that
///   holds it. A token held in the parent counts as free in the child,
///   except for the forking thread's own handle: its next `pop` takes the
///   token again if no handle has been taken in the child since (and then
///   repairs as above). Once another handle is taken, the inherited one is
///   dead: its `pop` returns `None` and dropping it frees nothing. Either
///   way, at most one handle pops in the child.
///
/// Not repaired: a push interrupted on the forking thread itself (a fork
/// from a signal handler that interrupted `push`; see the crate docs):
/// `pop` waits for that ticket, as for any producer still running.
///
/// [`consumer`]: MpscMailbox::consumer
/// [`dropped`]: MpscMailbox::dropped
///
/// # Examples
///
/// ```
/// use bottomhalf::MpscMailbox;
///
/// static EVENTS: MpscMailbox<u32, 64> = MpscMailbox::new();
///
/// std::thread::scope(|s| {
///     for t in 0..4 {
///         s.spawn(move || {
///             for i in 0..10 {
///                 EVENTS.push(t * 100 + i).unwrap();
///             }
///         });
///     }
/// });
/// let mut rx = EVENTS.consumer().unwrap();
/// assert_eq!(rx.by_ref().count(), 40);
/// assert_eq!(EVENTS.dropped(), 0);
/// ```
pub struct MpscMailbox<T, const N: usize> {
    slots: [Slot<T>; N],
    /// Used slots (items queued, or reserved by a producer) in the upper
    /// half, the next ticket in the lower half (`HALF` bits, wrapping);
    /// ticket `t` uses slot `t % N`. `push` reserves a slot and draws its
    /// ticket with one CAS (Acquire); `pop` returns the slot by subtracting
    /// one used (Release) after moving the item out. Being one word, every
    /// reservation is ordered after the pops that made its room.
    state: AtomicUsize,
    /// Next ticket to pop (`HALF` bits, wrapping). Read and written only by
    /// the holder of the consumer token.
    head: UnsafeCell<usize>,
    /// The consumer token: `generation << 1 | HELD`, where `generation` is
    /// the fork generation in which a handle last took it (always 0
    /// without `fork`) and `HELD` is set while that handle is alive. A
    /// token held in an older generation belongs to a handle of a parent
    /// process (see "fork()").
    consumer_token: AtomicU32,
    /// The fork record: the fork generation (upper `HALF` bits, truncated)
    /// and the next ticket at that fork (lower half). Written once per
    /// generation, by the first producer or consumer of the generation
    /// (`fork_record`), before any ticket of it is drawn.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    fork: AtomicUsize,
    /// Items lost: `push` calls refused because the mailbox was full.
    dropped: AtomicU32,
    /// `try_push` calls refused because the mailbox was full (the caller
    /// kept the item).
    refused: AtomicU32,
    /// Most items queued or reserved at once.
    high_water: AtomicU32,
}

// SAFETY: producers move `T`s in from any thread and the one consumer moves
// them out (so `T: Send`); slots are handed over by the `state` word and
// each slot's `ready` word, `head` belongs to the one handle that holds the
// consumer token (`consumer_token`), the rest are atomics.
unsafe impl<T: Send, const N: usize> Sync for MpscMailbox<T, N> {}

impl<T, const N: usize> MpscMailbox<T, N> {
    /// Bits of a ticket; the used count takes the other half of the word.
    const HALF: u32 = usize::BITS / 2;
    const TICKET_MASK: usize = (1 << Self::HALF) - 1;
    const USED_ONE: usize = 1 << Self::HALF;
    /// In a slot's `ready` word, with the stamp of the ticket: the ticket was drawn
    /// before a `fork` by a producer that the child does not have, and
    /// `pop` steps over it (see "fork()"). Outside the ticket bits, so no
    /// `ready` stamp of a push equals it.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    const SKIP: usize = 1 << Self::HALF;
    /// The `HELD` bit of the consumer token.
    const HELD: u32 = 1;
    const CHECK: () = assert!(
        N.is_power_of_two() && N < (1 << (usize::BITS / 2 - 1)),
        "MpscMailbox capacity must be a power of two below 2^(usize::BITS/2 - 1) (32768 on 32-bit targets)"
    );

    /// The number of items it holds when full: `N`.
    pub const CAPACITY: usize = N;

    loom_const_fn! {
        /// An empty mailbox.
        ///
        /// Top-half safe: yes. Allocates: no. Blocks: no.
        ///
        /// # Examples
        ///
        /// ```
        /// use bottomhalf::MpscMailbox;
        /// static MB: MpscMailbox<u64, 128> = MpscMailbox::new();
        /// assert_eq!(MB.len(), 0);
        /// ```
        pub fn new() -> MpscMailbox<T, N> {
            let () = Self::CHECK;
            // Every byte zero (stamps are relative to the slot index; see
            // `Slot::ready`), so a `static` lands in `.bss`.
            let slots: [Slot<T>; N] = array_of![Slot {
                ready: AtomicUsize::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            }; N];
            MpscMailbox {
                slots,
                state: AtomicUsize::new(0),
                head: UnsafeCell::new(0),
                consumer_token: AtomicU32::new(0),
                #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
                fork: AtomicUsize::new(0),
                dropped: AtomicU32::new(0),
                refused: AtomicU32::new(0),
                high_water: AtomicU32::new(0),
            }
        }
    }

    /// Queues `item`, or, if `N` items are queued or being queued, hands it
    /// back and counts it as dropped ([`dropped`](MpscMailbox::dropped)):
    /// push or drop. A caller that keeps the item to retry uses
    /// [`try_push`](MpscMailbox::try_push).
    ///
    /// Top-half safe: yes (lock-free; see "Progress"). Allocates: no.
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// `Err(item)` when full.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 2> = MpscMailbox::new();
    /// assert_eq!(mb.push(1), Ok(()));
    /// assert_eq!(mb.push(2), Ok(()));
    /// assert_eq!(mb.push(3), Err(3));
    /// assert_eq!(mb.dropped(), 1);
    /// ```
    #[inline]
    pub fn push(&self, item: T) -> Result<(), T> {
        self.enqueue(item).inspect_err(|_| {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Queues `item`, or, if `N` items are queued or being queued, hands it
    /// back for a retry and counts the attempt in
    /// [`refused`](MpscMailbox::refused), not as a drop. To give up on the
    /// item, make the last attempt a [`push`](MpscMailbox::push): it queues
    /// the item or counts it as dropped.
    ///
    /// Top-half safe: yes (lock-free; see "Progress"). Allocates: no.
    /// Blocks: no.
    ///
    /// # Errors
    ///
    /// `Err(item)` when full.
    ///
    /// # Examples
    ///
    /// A producer thread that retries a few times, then gives up:
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 1> = MpscMailbox::new();
    /// mb.push(1).unwrap();
    /// let mut item = 2;
    /// for _ in 0..3 {
    ///     match mb.try_push(item) {
    ///         Ok(()) => break,
    ///         Err(back) => item = back, // a real producer would back off
    ///     }
    /// }
    /// let _ = mb.push(item); // last attempt: queued, or counted as dropped
    /// assert_eq!((mb.refused(), mb.dropped()), (3, 1));
    /// ```
    #[inline]
    pub fn try_push(&self, item: T) -> Result<(), T> {
        self.enqueue(item).inspect_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
        })
    }

    #[inline(always)]
    fn enqueue(&self, item: T) -> Result<(), T> {
        let Some(ticket) = self.reserve() else {
            return Err(item);
        };
        let slot = &self.slots[ticket % N];
        // SAFETY: the reservation above and the ticket make this producer
        // the only one to touch this slot until it publishes `ready`; the
        // consumer reads it only after seeing `ready == stamp(ticket)`.
        slot.value.with_mut(|p| unsafe { (*p).write(item) });
        // Release: publishes the write to the consumer's Acquire load.
        slot.ready.store(
            Self::stamp(ticket),
            ordering!("mpsc_publish_relaxed", Release, Relaxed),
        );
        Ok(())
    }

    /// Draws a ticket and reserves its slot, or `None` if `N` are used.
    #[inline(always)]
    fn reserve(&self) -> Option<usize> {
        #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
        self.fork_gate(crate::fork::mailbox_generation());
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let used = state >> Self::HALF;
            if used == N {
                return None;
            }
            let ticket = state & Self::TICKET_MASK;
            let next = ((used + 1) << Self::HALF) | ((ticket + 1) & Self::TICKET_MASK);
            // Acquire: pairs with the Release `fetch_sub` in `pop` that made
            // this room: at most N tickets are outstanding (drawn and not
            // popped), so ticket `t`'s slot was last used by ticket `t - N`,
            // whose pop is earlier in this word's modification order (an
            // RMW chain) and so synchronizes with this CAS.
            match self.state.compare_exchange_weak(
                state,
                next,
                ordering!("mpsc_reserve_relaxed", Acquire, Relaxed),
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let used = (used + 1) as u32;
                    if used > self.high_water.load(Ordering::Relaxed) {
                        self.high_water.fetch_max(used, Ordering::Relaxed);
                    }
                    return Some(ticket);
                }
                Err(now) => state = now,
            }
        }
    }

    /// `ready` of the slot of `ticket` once its item is written: the
    /// ticket's lap (`ticket` less its slot index `ticket % N`) plus one,
    /// wrapping at `HALF` bits. Relative to the slot index, so a fresh
    /// slot's 0 means "awaiting the ticket of lap 0" (see `Slot::ready`).
    #[inline(always)]
    const fn stamp(ticket: usize) -> usize {
        ((ticket & !(N - 1)) + 1) & Self::TICKET_MASK
    }

    /// The token of a consumer handle taken in fork generation `gen`.
    #[inline(always)]
    const fn token(gen: u32) -> u32 {
        (gen << 1) | Self::HELD
    }

    /// A fork generation as the fork record holds it (upper half of a
    /// word: truncated to `HALF` bits on 32-bit targets).
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[inline(always)]
    const fn gen_bits(gen: u32) -> usize {
        gen as usize & Self::TICKET_MASK
    }

    /// `ready` of a slot whose `ticket` `pop` steps over.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[inline(always)]
    const fn skip_stamp(ticket: usize) -> usize {
        Self::stamp(ticket) | Self::SKIP
    }

    /// Every reservation's first step (and the consumer repair's): makes
    /// sure the fork record is of generation `gen`, so that each ticket
    /// of this process is drawn after it. One Acquire load and a compare
    /// when it is.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[inline(always)]
    fn fork_gate(&self, gen: u32) {
        // Acquire: pairs with the Release CAS in `fork_record` (of this
        // context or another): the reservation that follows is ordered
        // after that CAS's load of `state`, so the recorded ticket is
        // older than every ticket drawn in this generation.
        let record = self
            .fork
            .load(ordering!("mpsc_fork_gate_relaxed", Acquire, Relaxed));
        if record >> Self::HALF != Self::gen_bits(gen) {
            self.fork_record(record, gen);
        }
    }

    /// The first context of fork generation `gen` that touches the
    /// mailbox records the next ticket: every ticket before it was drawn
    /// before the fork, since every context of this process passes
    /// `fork_gate` before it draws one. Lock-free, top-half safe: another
    /// context's CAS can only have installed a record of `gen` too.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[cold]
    fn fork_record(&self, mut record: usize, gen: u32) {
        let g = Self::gen_bits(gen);
        while record >> Self::HALF != g {
            let next = self.state.load(Ordering::Relaxed) & Self::TICKET_MASK;
            // Release: publishes our load of `state` to the gates that read
            // this record (Acquire). Failure Acquire: we may read another
            // context's record of `gen`, and our reservation must then be
            // ordered after its load of `state`.
            match self.fork.compare_exchange(
                record,
                (g << Self::HALF) | next,
                ordering!("mpsc_fork_record_relaxed", Release, Relaxed),
                ordering!("mpsc_fork_gate_relaxed", Acquire, Relaxed),
            ) {
                Ok(_) => return,
                Err(now) => record = now,
            }
        }
    }

    /// The consumer's part of the fork repair, by the context that takes
    /// the consumer token in fork generation `gen` before anything is
    /// popped in it (`consumer`, a parent's handle that re-adopts it, or
    /// the mailbox's `Drop`): gives back the slot of a pop that a parent
    /// thread left half-done, and marks every ticket drawn before the fork
    /// and never published as one `pop` steps over (counting it as
    /// dropped). Bounded by `N`, allocation-free.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[cold]
    fn fork_repair(&self, gen: u32) {
        self.fork_gate(gen);
        // Relaxed: `fork_gate` read (Acquire) or wrote this generation's
        // record, which is not written again in this generation.
        let fork_next = self.fork.load(Ordering::Relaxed) & Self::TICKET_MASK;
        // SAFETY: the caller holds the consumer token, which makes `head`
        // its own.
        let head = self.head.with(|p| unsafe { *p });
        // A pop that moved `head` and then stopped (its thread is not in
        // this process) before it gave its slot back: the used count is
        // higher than the tickets from `head` to the next one. Reservations
        // move both together, so one load of the word tells it exactly.
        let state = self.state.load(Ordering::Relaxed);
        let used = state >> Self::HALF;
        let outstanding = (state & Self::TICKET_MASK).wrapping_sub(head) & Self::TICKET_MASK;
        if used > outstanding {
            // Release: as the `fetch_sub` in `pop`.
            self.state
                .fetch_sub((used - outstanding) << Self::HALF, Ordering::Release);
        }
        // Tickets from `head` to the fork's next ticket were drawn before
        // the fork: each was published, or its producer is a thread this
        // process does not have. No producer of this process touches their
        // slots meanwhile: it draws a ticket only while fewer than `N` are
        // outstanding, so below `head + N`, whose slot's previous ticket is
        // below `head`.
        let pending = fork_next.wrapping_sub(head) & Self::TICKET_MASK;
        let mut ticket = head;
        for _ in 0..pending.min(N) {
            let slot = &self.slots[ticket % N];
            // Relaxed: a stamp of this slot written before the fork, or our
            // own skip stamp, which only this consumer reads.
            if slot.ready.load(Ordering::Relaxed) != Self::stamp(ticket) {
                slot.ready
                    .store(Self::skip_stamp(ticket), Ordering::Relaxed);
            }
            ticket = (ticket + 1) & Self::TICKET_MASK;
        }
    }

    /// Draws a ticket and never publishes it: a producer that a `fork`
    /// leaves behind, for the loom models.
    #[cfg(bottomhalf_loom)]
    #[doc(hidden)]
    pub fn __loom_reserve_unpublished(&self) -> bool {
        self.reserve().is_some()
    }

    /// The consumer handle, while no other is alive.
    ///
    /// In a child of `fork()`, a handle that a parent thread held is not
    /// alive: the first handle taken in the child repairs what the parent's
    /// threads left half-done (see "fork()" on [`MpscMailbox`]).
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Errors
    ///
    /// [`MailboxError::ConsumerTaken`] while another handle is alive.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{MailboxError, MpscMailbox};
    /// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
    /// let rx = mb.consumer().unwrap();
    /// assert_eq!(mb.consumer().unwrap_err(), MailboxError::ConsumerTaken);
    /// drop(rx);
    /// assert!(mb.consumer().is_ok());
    /// ```
    pub fn consumer(&self) -> Result<MpscConsumer<'_, T, N>, MailboxError> {
        let gen = crate::fork::mailbox_generation();
        let mine = Self::token(gen);
        let mut seen = self.consumer_token.load(Ordering::Relaxed);
        loop {
            if seen == mine {
                return Err(MailboxError::ConsumerTaken);
            }
            // Free, or held by a handle of an older fork generation: that
            // handle belongs to a thread of a parent process, or is the
            // forking thread's own, which re-adopts the token only while
            // nobody took it (`MpscConsumer::pop`).
            // Acquire: pairs with the Release in `MpscConsumer::drop`, so
            // this handle sees the previous one's `head`.
            match self.consumer_token.compare_exchange_weak(
                seen,
                mine,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
        #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
        if seen >> 1 != gen {
            // The first handle of this fork generation.
            self.fork_repair(gen);
        }
        Ok(MpscConsumer {
            mailbox: self,
            token: mine,
        })
    }

    /// The consumer handle, if no other is alive: [`consumer`] as an
    /// `Option`, named as [`Mailbox::take_consumer`] so code written for
    /// either mailbox reads the same.
    ///
    /// Producers need no handle: [`push`](MpscMailbox::push) takes `&self`,
    /// so any interrupt handler, signal handler or thread pushes into a
    /// `static` mailbox directly. The consumer handle is given back when
    /// dropped, so a tasklet takes it at the start of each run (its runs
    /// never overlap), and a context that keeps it (an RTIC task's
    /// `#[local]`, a `static mut` local) owns it for good. On a `static`
    /// mailbox the handle is `MpscConsumer<'static, T, N>`. In a child of
    /// `fork()` it repairs the mailbox as [`consumer`] does.
    ///
    /// A refused take is not counted: the caller sees `None`.
    ///
    /// Top-half safe: yes (a compare-and-swap, lock-free; the fork repair,
    /// once per fork, is bounded by `N`). Allocates: no. Blocks: no.
    ///
    /// [`consumer`]: MpscMailbox::consumer
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::{Config, Host, MpscMailbox, Runtime, Tasklet};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    /// static EVENTS: MpscMailbox<u16, 8> = MpscMailbox::new();
    /// static SEEN: AtomicU32 = AtomicU32::new(0);
    /// static EVENTS_BH: Tasklet = Tasklet::new(&RT, || {
    ///     let Some(rx) = EVENTS.take_consumer() else { return };
    ///     SEEN.fetch_add(rx.count() as u32, Ordering::Relaxed);
    /// });
    ///
    /// EVENTS.push(1).unwrap(); // from any top half: no handle needed
    /// EVENTS.push(2).unwrap();
    /// EVENTS_BH.schedule();
    /// let _ = RT.drain();
    /// assert_eq!(SEEN.load(Ordering::Relaxed), 2);
    /// let rx = EVENTS.take_consumer().unwrap();
    /// assert!(EVENTS.take_consumer().is_none(), "one consumer at a time");
    /// drop(rx);
    /// ```
    pub fn take_consumer(&self) -> Option<MpscConsumer<'_, T, N>> {
        self.consumer().ok()
    }

    /// Items queued or being queued now.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
    /// mb.push(1).unwrap();
    /// assert_eq!(mb.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.state.load(Ordering::Relaxed) >> Self::HALF
    }

    /// `true` if nothing is queued or being queued.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
    /// assert!(mb.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items lost: refused [`push`](MpscMailbox::push)es because the
    /// mailbox was full (see
    /// ["Dropped or refused"](Mailbox#dropped-or-refused)), and,
    /// in a child of `fork()`, pushes that a parent thread had not finished
    /// (see "fork()").
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 1> = MpscMailbox::new();
    /// mb.push(1).unwrap();
    /// let _ = mb.push(2);
    /// assert_eq!(mb.dropped(), 1);
    /// ```
    pub fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Attempts refused because the mailbox was full, whose item the caller
    /// kept: refused [`try_push`](MpscMailbox::try_push)es. Not drops.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 1> = MpscMailbox::new();
    /// mb.push(1).unwrap();
    /// assert_eq!(mb.try_push(2), Err(2));
    /// assert_eq!((mb.refused(), mb.dropped()), (1, 0));
    /// ```
    pub fn refused(&self) -> u32 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The most items queued or being queued at once.
    ///
    /// Top-half safe: yes. Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
    /// mb.push(1).unwrap();
    /// mb.push(2).unwrap();
    /// assert_eq!(mb.high_water(), 2);
    /// ```
    pub fn high_water(&self) -> u32 {
        self.high_water.load(Ordering::Relaxed)
    }
}

impl<T, const N: usize> Default for MpscMailbox<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Drop for MpscMailbox<T, N> {
    fn drop(&mut self) {
        // `&mut self`: no producer or consumer is active. Drop the items
        // that were published and never popped (stepping over the tickets
        // of producers that a `fork` left behind).
        let gen = crate::fork::mailbox_generation();
        #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
        if self.consumer_token.load(Ordering::Relaxed) >> 1 != gen {
            self.fork_repair(gen);
        }
        let mut rx = MpscConsumer {
            mailbox: self,
            token: Self::token(gen),
        };
        while rx.pop().is_some() {}
        core::mem::forget(rx);
    }
}

impl<T, const N: usize> fmt::Debug for MpscMailbox<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscMailbox")
            .field("capacity", &N)
            .field("len", &self.len())
            .field("dropped", &self.dropped())
            .field("refused", &self.refused())
            .field("high_water", &self.high_water())
            .finish_non_exhaustive()
    }
}

/// The consuming end of an [`MpscMailbox`]; dropping it lets another be
/// taken.
///
/// # Examples
///
/// ```
/// use bottomhalf::MpscMailbox;
/// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
/// mb.push(5).unwrap();
/// let mut rx = mb.consumer().unwrap();
/// assert_eq!(rx.pop(), Some(5));
/// ```
pub struct MpscConsumer<'a, T, const N: usize> {
    mailbox: &'a MpscMailbox<T, N>,
    /// The consumer token this handle took (its fork generation, `HELD`).
    token: u32,
}

impl<T, const N: usize> MpscConsumer<'_, T, N> {
    /// The oldest published item, or `None` if there is none (or the
    /// producer of the oldest ticket has not finished; see "Progress" on
    /// [`MpscMailbox`]).
    ///
    /// Top-half safe: yes (wait-free). Allocates: no. Blocks: no.
    ///
    /// # Examples
    ///
    /// ```
    /// use bottomhalf::MpscMailbox;
    /// let mb: MpscMailbox<u8, 4> = MpscMailbox::new();
    /// let mut rx = mb.consumer().unwrap();
    /// assert_eq!(rx.pop(), None);
    /// mb.push(1).unwrap();
    /// assert_eq!(rx.pop(), Some(1));
    /// ```
    pub fn pop(&mut self) -> Option<T> {
        #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
        if self.token >> 1 != crate::fork::mailbox_generation() && !self.readopt() {
            return None;
        }
        let mb = self.mailbox;
        // SAFETY: `head` belongs to the holder of the consumer token (this
        // handle: taken in this fork generation, or re-adopted above); the
        // handle is `&mut self`, so no other access overlaps.
        let head = mb.head.with(|p| unsafe { *p });
        let slot = &mb.slots[head % N];
        // Acquire: pairs with the Release store of `ready` in `push`.
        let ready = slot
            .ready
            .load(ordering!("mpsc_consume_relaxed", Acquire, Relaxed));
        if ready != MpscMailbox::<T, N>::stamp(head) {
            #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
            if ready == MpscMailbox::<T, N>::skip_stamp(head) {
                return self.pop_after_skips(head);
            }
            return None;
        }
        // SAFETY: `ready == stamp(head)` means the producer of ticket `head`
        // wrote this slot and will not touch it again; no producer reuses
        // it before we give its slot back below.
        let item = slot.value.with(|p| unsafe { (*p).assume_init_read() });
        // SAFETY: as for the read of `head`.
        mb.head
            .with_mut(|p| unsafe { *p = (head + 1) & MpscMailbox::<T, N>::TICKET_MASK });
        // Release: pairs with the Acquire reservation in `push`; the slot is
        // empty before a producer may reuse it.
        mb.state.fetch_sub(
            MpscMailbox::<T, N>::USED_ONE,
            ordering!("mpsc_release_relaxed", Release, Relaxed),
        );
        Some(item)
    }
}

impl<T, const N: usize> MpscConsumer<'_, T, N> {
    /// A handle of an older fork generation: it was alive when this
    /// process was forked, so it is the forking thread's own (no other
    /// thread of the parent is here to use it). It takes the token of this
    /// generation if no handle has been taken here since (then it repairs
    /// the mailbox as that handle would have); otherwise it is dead and
    /// pops nothing.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[cold]
    fn readopt(&mut self) -> bool {
        let gen = crate::fork::mailbox_generation();
        let mine = MpscMailbox::<T, N>::token(gen);
        // Acquire: as in `consumer`.
        if self
            .mailbox
            .consumer_token
            .compare_exchange(self.token, mine, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.token = mine;
        self.mailbox.fork_repair(gen);
        true
    }

    /// Steps over ticket `head` and the marked ones after it, then pops.
    /// `fork_repair` marked them: their producers are not in this process.
    /// Gives each slot back and counts its item as dropped. The slot's
    /// contents (perhaps half-written) are left as they are, never
    /// dropped.
    #[cfg(any(bottomhalf_loom, all(feature = "std", unix)))]
    #[cold]
    fn pop_after_skips(&mut self, mut head: usize) -> Option<T> {
        let mb = self.mailbox;
        loop {
            head = (head + 1) & MpscMailbox::<T, N>::TICKET_MASK;
            // SAFETY: as in `pop`.
            mb.head.with_mut(|p| unsafe { *p = head });
            // Release: as in `pop` (the slot is given back).
            mb.state
                .fetch_sub(MpscMailbox::<T, N>::USED_ONE, Ordering::Release);
            mb.dropped.fetch_add(1, Ordering::Relaxed);
            // Relaxed: only this consumer writes skip stamps; `pop` loads
            // the slot again with Acquire.
            let ready = mb.slots[head % N].ready.load(Ordering::Relaxed);
            if ready != MpscMailbox::<T, N>::skip_stamp(head) {
                return self.pop();
            }
        }
    }
}

impl<T, const N: usize> Iterator for MpscConsumer<'_, T, N> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.pop()
    }
}

impl<T, const N: usize> Drop for MpscConsumer<'_, T, N> {
    fn drop(&mut self) {
        let token = &self.mailbox.consumer_token;
        let free = self.token & !MpscMailbox::<T, N>::HELD;
        if self.token >> 1 == crate::fork::mailbox_generation() {
            // Release: pairs with the Acquire CAS in `consumer`.
            token.store(free, Ordering::Release);
        } else {
            // A handle of an older fork generation frees the token only if
            // no handle took it in this process (then the next one repairs).
            // Release: as above.
            let _ = token.compare_exchange(self.token, free, Ordering::Release, Ordering::Relaxed);
        }
    }
}

impl<T, const N: usize> fmt::Debug for MpscConsumer<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscConsumer").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(bottomhalf_loom)))]
mod tests {
    use super::*;

    /// `Mailbox::new()` writes no non-zero byte: every field that is not
    /// `MaybeUninit` storage reads as zero (the storage and padding are
    /// uninitialized, which a compiler emits as zeros in `.bss`; reading
    /// them would be undefined, so they are not read). `nm` on a firmware
    /// build shows the `static` itself in `.bss`.
    #[test]
    fn mailbox_new_is_all_zero() {
        static MB: Mailbox<u16, 8> = Mailbox::new();
        assert_eq!(MB.tail.load(Ordering::Relaxed), 0);
        assert_eq!(MB.head.load(Ordering::Relaxed), 0);
        assert!(!MB.producer_out.load(Ordering::Relaxed));
        assert!(!MB.consumer_out.load(Ordering::Relaxed));
        for c in [
            &MB.dropped,
            &MB.refused,
            &MB.pushed,
            &MB.popped,
            &MB.high_water,
        ] {
            assert_eq!(c.load(Ordering::Relaxed), 0);
        }
    }

    /// The same for `MpscMailbox::new()`: the slot stamps are relative to
    /// the slot index, so they start at 0 (the absolute form started at
    /// `i` and put the mailbox in `.data`).
    #[test]
    fn mpsc_new_is_all_zero() {
        static MB: MpscMailbox<u16, 8> = MpscMailbox::new();
        for (i, slot) in MB.slots.iter().enumerate() {
            assert_eq!(slot.ready.load(Ordering::Relaxed), 0, "slot {i}");
        }
        assert_eq!(MB.state.load(Ordering::Relaxed), 0);
        // SAFETY: nothing else touches this test's private mailbox.
        assert_eq!(MB.head.with(|p| unsafe { *p }), 0);
        assert_eq!(MB.consumer_token.load(Ordering::Relaxed), 0);
        #[cfg(all(feature = "std", unix))]
        assert_eq!(MB.fork.load(Ordering::Relaxed), 0);
        for c in [&MB.dropped, &MB.refused, &MB.high_water] {
            assert_eq!(c.load(Ordering::Relaxed), 0);
        }
    }

    /// Stamps relative to the slot index tell every lap apart, and a
    /// fresh slot (0) from every published stamp, as the absolute form
    /// did: checked over a full wrap of the ticket range of a small `N`.
    #[test]
    fn mpsc_stamps_tell_laps_apart() {
        type M = MpscMailbox<u8, 4>;
        let mask = M::TICKET_MASK;
        for ticket in (0..=mask).step_by(mask / 4096 + 1).chain(mask - 8..=mask) {
            let s = M::stamp(ticket);
            assert_ne!(s, 0, "ticket {ticket}: a fresh slot reads as published");
            assert_ne!(
                s,
                M::stamp(ticket.wrapping_sub(4) & mask),
                "ticket {ticket}"
            );
            assert_eq!(s & !mask, 0);
            assert_eq!(s % 4, 1);
        }
    }
}
