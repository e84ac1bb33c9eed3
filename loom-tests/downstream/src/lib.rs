//! What a downstream crate with its own loom tests writes: `static`
//! bottomhalf objects beside its own loom-modelled state. Built with
//! `RUSTFLAGS="--cfg loom"`; before bottomhalf keyed its loom build off its
//! own `cfg(bottomhalf_loom)`, the global `cfg(loom)` turned
//! `Runtime::new`, `Tasklet::new` and the mailbox constructors into plain
//! `fn`s and every `static` below failed to build.

use bottomhalf::{Config, DelayedWork, Host, Mailbox, MpscMailbox, Runtime, Tasklet, Vector, Work};

#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU32, Ordering};

/// The downstream crate's runtime.
pub static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
/// A tasklet on it.
pub static RX_DONE: Tasklet = Tasklet::new(&RT, rx_done);
/// Both mailboxes.
pub static SPSC: Mailbox<u32, 8> = Mailbox::new();
/// An MPSC mailbox.
pub static MPSC: MpscMailbox<u32, 8> = MpscMailbox::new();
/// Work items.
pub static FLUSH: Work = Work::new("flush", |_| {});
/// A delayed one.
pub static LATER: DelayedWork = DelayedWork::new("later", |_| {});
/// A vector.
pub const NET_RX: Vector = Vector::new(3);

fn rx_done() {}

/// The downstream crate's own state, which its loom tests model.
pub struct Counter(AtomicU32);

impl Counter {
    /// A zero counter.
    pub fn new() -> Counter {
        Counter(AtomicU32::new(0))
    }

    /// Counts one and hands the work to the bottom half.
    pub fn hit(&self) -> u32 {
        RX_DONE.schedule();
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

#[cfg(all(test, loom))]
mod tests {
    #[test]
    fn the_downstream_model_runs_beside_static_runtimes() {
        loom::model(|| {
            let c = std::sync::Arc::new(super::Counter::new());
            let c2 = c.clone();
            let t = loom::thread::spawn(move || c2.hit());
            let a = c.hit();
            let b = t.join().unwrap();
            assert_eq!(a + b, 3);
        });
    }
}
