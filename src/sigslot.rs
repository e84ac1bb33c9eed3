//! The state machine of one signal slot: what a signal handler and the
//! install/uninstall path share, and nothing else (no `libc`, so it also
//! compiles under `--cfg bottomhalf_loom`, where `loom-tests/tests/signal_slot.rs`
//! models it with the handler as a thread).
//!
//! # States
//!
//! ```text
//!            (1) claim              (2) publish
//!   EMPTY ─────────────▶ INSTALLING ─────────────▶ ACTIVE
//!     ▲  ◀─────────────────┘ (5) abandon              │
//!     │                                               │ (3) begin_remove
//!     └──────────────────── REMOVING ◀────────────────┘
//!        (4) finish_remove (after wait_idle)
//! ```
//!
//! 1. `install` wins the `EMPTY → INSTALLING` CAS: it alone may write the
//!    slot's data, and no handler reads it (handlers read only in ACTIVE).
//! 2. `install` publishes the data (`ACTIVE`), *before* the kernel (or the
//!    registry) routes the signal to the handler.
//! 3. `uninstall`, *after* the kernel stopped routing the signal here
//!    (previous disposition restored, or registry action removed): from
//!    now on a handler that enters sees the slot gone.
//! 4. `uninstall`, once [`wait_idle`](SlotState::wait_idle) saw no handler
//!    inside: the data may be rewritten by the next install.
//! 5. `install` gives up (the system call failed, or exclusive mode
//!    refused): nothing was routed here, or what was has left (it waits).
//!
//! A handler brackets everything it does with an `enter` call
//! ([`enter_exact`](SlotState::enter_exact) or
//! [`enter_tagged`](SlotState::enter_tagged)) and
//! [`leave`](SlotState::leave). It may read the slot's data only if
//! `enter` returned [`Entered::Active`]; with [`Entered::Other`] or
//! [`Entered::Gone`] it must pass the signal on without touching the data
//! (the caller forwards it to the current disposition, or counts it).
//!
//! # Identity
//!
//! Each installation has an identity, chosen by `publish`: a generation
//! (one more than the slot's previous installation's, so it survives a
//! fork reset) and a one-bit tag the installer picks (the signal backend:
//! its mode). A handler says which installation it belongs to: a
//! registry action captures the exact identity at registration
//! (`enter_exact`); the exclusive handler, one function for every
//! exclusive installation, asks for the tag (`enter_tagged`). `enter`
//! returns `Active` only if the published identity matches, and `Other`
//! for an installation that is not the caller's. So a handler left behind
//! by an earlier installation (an action orphaned by a fork, an exclusive
//! handler that another library kept as its "previous" one and chains to)
//! never runs the current one's data. The identity is written before the
//! `publish` store and read after `enter`'s RMW saw ACTIVE: the same edge
//! as the data. A generation wraps after 2^31 installs of one slot.
//!
//! # Atomic orderings
//!
//! The handler (`active += 1`, then read `state`) and `begin_remove`/
//! `wait_idle` (write `state`, then read `active`) form a store-buffering
//! pair: at least one side must see the other's write, or uninstall
//! returns while a handler still reads the data. Both *reads* are
//! read-modify-writes (`state.fetch_or(0)` in `enter`, `active.fetch_add(0)`
//! in `wait_idle`), AcqRel or stronger: an RMW reads the latest value in
//! the location's modification order, so if `enter`'s read of `state`
//! comes before `begin_remove`'s swap, the swap reads from it and
//! synchronises with it, which orders the handler's increment before
//! `wait_idle`'s read of `active`. That argument needs no single total
//! order, so it also holds in loom, which models `SeqCst` as `AcqRel`
//! (a plain `SeqCst` load pair would be correct on hardware but would not
//! be checkable). The orderings are `SeqCst`; the `sigslot_enter_relaxed`
//! and `sigslot_remove_relaxed` mutants weaken one side each. Loom catches
//! the first (the handler would read the data without the edge from
//! `publish`); the second it cannot show (it runs the RMWs of one location
//! in interleaving order, so the weak outcome never occurs, and `leave`'s
//! Release still orders the data): it is kept for hardware with weaker
//! RMWs and is not in `loom-tests/mutants.txt`.
//!
//! `leave` is Release and `wait_idle`'s read Acquire: whatever the handler
//! read from the data happens before the slot is reused.
//!
//! Every write of `state` (`claim`, `publish`, `abandon`, `begin_remove`,
//! `finish_remove`) is an RMW, because `enter`'s `fetch_or(0)` is a write
//! too, and a handler may enter at any time (a late frame, after the
//! uninstall returned). With a plain store on one side, loom, which keeps
//! a partial modification order, can leave the store and a concurrent
//! `fetch_or(0)` unordered and let a later `claim` read the value the
//! `fetch_or` rewrote (a stale `REMOVING` after `finish_remove`): RMW
//! atomicity forbids that on hardware, and with RMWs only the model's
//! order of `state` is the interleaving order. The fork reset, single
//! threaded, keeps plain stores.
//!
//! The identity check has a behavioural mutant, `sigslot_ident_ignored`
//! (`enter` accepts any published installation): the model's handler of
//! an earlier installation then runs the next one's data, and the model
//! fails.

use crate::sync::{ordering, spin_wait, AtomicU32, AtomicU8, Ordering};

const EMPTY: u8 = 0;
const INSTALLING: u8 = 1;
const ACTIVE: u8 = 2;
const REMOVING: u8 = 3;

/// What [`SlotState::enter_exact`] / [`SlotState::enter_tagged`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    /// The caller's installation: the slot's data is published and stays
    /// valid until [`SlotState::leave`].
    Active,
    /// Another installation is published (not the caller's identity, or
    /// not its tag): do not touch the data; pass the signal on.
    Other,
    /// Not installed (being installed, being removed, or empty): do not
    /// touch the data; pass the signal on.
    Gone,
}

/// A slot's `state` and in-flight handler count (module docs).
#[derive(Debug)]
pub struct SlotState {
    /// EMPTY / INSTALLING / ACTIVE / REMOVING (module docs). Written by
    /// install and uninstall (and the fork child handler); read by
    /// handlers with an RMW that leaves it unchanged.
    state: AtomicU8,
    /// The published installation's identity: generation << 1 | tag
    /// (module docs). Written by the installer that won `claim`, before
    /// `publish`'s store; read by handlers after `enter` saw ACTIVE.
    ident: AtomicU32,
    /// Handlers between `enter` and `leave`. Incremented and decremented
    /// by handlers; read by `wait_idle`; reset by the fork child handler.
    active: AtomicU32,
}

impl SlotState {
    crate::sync::loom_const_fn! {
        /// An empty slot.
        pub fn new() -> SlotState {
            SlotState {
                state: AtomicU8::new(EMPTY),
                ident: AtomicU32::new(0),
                active: AtomicU32::new(0),
            }
        }
    }

    /// (1) `EMPTY → INSTALLING`; `false` if the slot is taken.
    pub fn claim(&self) -> bool {
        self.state
            .compare_exchange(EMPTY, INSTALLING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// (2) `INSTALLING → ACTIVE`: publishes the data written since
    /// `claim` and a new identity, the next generation with `tag`, which
    /// it returns (Release-or-stronger; pairs with `enter`'s RMW). Only
    /// by the installer that won `claim`.
    pub fn publish(&self, tag: bool) -> u32 {
        // Relaxed: the previous installation's identity was written by
        // the previous claim winner, which happens before our `claim`
        // (its `finish_remove` Release, our CAS Acquire); in a fork child
        // there is one thread.
        let generation = (self.ident.load(Ordering::Relaxed) >> 1).wrapping_add(1);
        let ident = (generation << 1) | u32::from(tag);
        // Relaxed: published by the Release store of ACTIVE below.
        self.ident.store(ident, Ordering::Relaxed);
        // A swap, not a store: every write of `state` is an RMW (module
        // docs, "Atomic orderings").
        self.state.swap(ACTIVE, Ordering::SeqCst);
        ident
    }

    /// (5) `INSTALLING → EMPTY`: an install that gives up before it
    /// published anything (so no handler can have read the data).
    pub fn abandon(&self) {
        self.state.swap(EMPTY, Ordering::Release);
    }

    /// The entry of a handler that belongs to the installation `ident`
    /// (the value `publish` returned): counts itself in, then reads the
    /// state; [`Entered::Active`] only if that installation is published.
    /// Top-half safe; wait-free (two RMWs and a load).
    #[inline]
    pub fn enter_exact(&self, ident: u32) -> Entered {
        self.enter(|published| published == ident)
    }

    /// The entry of a handler that belongs to whichever installation has
    /// the tag `tag` (module docs): like [`enter_exact`](Self::enter_exact),
    /// but any generation matches.
    #[inline]
    pub fn enter_tagged(&self, tag: bool) -> Entered {
        self.enter(|published| published & 1 == u32::from(tag))
    }

    #[inline]
    fn enter(&self, mine: impl FnOnce(u32) -> bool) -> Entered {
        // SeqCst: first half of the store-buffering pair with
        // `begin_remove` + `wait_idle` (module docs).
        self.active.fetch_add(1, Ordering::SeqCst);
        // An RMW that changes nothing, so that it reads the latest state
        // and a later `begin_remove` swap reads from it (module docs).
        let state = self
            .state
            .fetch_or(0, ordering!("sigslot_enter_relaxed", SeqCst, Relaxed));
        if state != ACTIVE {
            return Entered::Gone;
        }
        // Relaxed: ordered after `publish`'s store by the RMW above (the
        // same edge as the data); not rewritten before our `leave`.
        let published = self.ident.load(Ordering::Relaxed);
        // The `sigslot_ident_ignored` mutant (a behavioural one) runs any
        // published installation, as the handler did before identities.
        if cfg!(bh_mutant = "sigslot_ident_ignored") || mine(published) {
            Entered::Active
        } else {
            Entered::Other
        }
    }

    /// The handler's exit (also after [`Entered::Gone`]).
    /// Release: pairs with the Acquire read in `wait_idle`, so everything
    /// the handler read of the data happens before the slot is reused.
    #[inline]
    pub fn leave(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// (3) `ACTIVE → REMOVING` (also `INSTALLING → REMOVING` for an
    /// install that gives up): handlers that enter from now on see
    /// [`Entered::Gone`]. The identity stays (the next `publish` takes the
    /// next generation). Call it after the kernel stopped routing the
    /// signal to the handler.
    pub fn begin_remove(&self) {
        // An RMW (swap): second half of the store-buffering pair; it reads
        // from any `enter` that came before it and synchronises with it.
        self.state.swap(
            REMOVING,
            ordering!("sigslot_remove_relaxed", SeqCst, Relaxed),
        );
    }

    /// Waits until no handler is between `enter` and `leave` (bounded: the
    /// handlers that entered before `begin_remove`, whose top halves must
    /// not block). Not from a handler of this slot (it would wait for
    /// itself).
    pub fn wait_idle(&self) {
        // An RMW read (`fetch_add(0)`): reads the latest count, after the
        // `begin_remove` swap (module docs). Acquire: pairs with `leave`.
        while self.active.fetch_add(0, Ordering::SeqCst) != 0 {
            spin_wait();
        }
    }

    /// (4) `REMOVING → EMPTY`, after `wait_idle`: the data may be
    /// rewritten by the next `claim`.
    pub fn finish_remove(&self) {
        // A swap: a handler that enters now (a late frame) writes `state`
        // too (module docs, "Atomic orderings").
        self.state.swap(EMPTY, Ordering::Release);
    }

    /// In the child right after `fork()`, which has one thread: the
    /// handlers that were inside on the parent's other threads, and an
    /// install or uninstall that another thread was running, do not exist
    /// here. Clears `active`; an unfinished install (INSTALLING: nothing
    /// was routed to the handler yet) or uninstall (REMOVING: the kernel
    /// already routes the signal elsewhere) becomes EMPTY, and so does any
    /// state if `abandoned` (the caller knows another thread was in the
    /// middle of installing or uninstalling this slot: no handle for it
    /// exists in the child). The identity stays: a handler the child
    /// inherited from that install (a registry action registered before
    /// the fork) sees [`Entered::Other`] once the slot is installed again.
    /// Returns how many handlers were inside at the fork.
    pub fn reset_after_fork(&self, abandoned: bool) -> u32 {
        let stranded = self.active.swap(0, Ordering::Relaxed);
        let state = self.state.load(Ordering::Relaxed);
        if abandoned || state == INSTALLING || state == REMOVING {
            self.state.store(EMPTY, Ordering::Relaxed);
        }
        stranded
    }
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState::new()
    }
}
