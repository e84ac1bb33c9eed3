//! `footprint_delayed`'s job written the way an RTIC v2 user would write
//! it, with `rtic-sync` for the channel and `rtic-monotonics` (SysTick) for
//! time: the peer a Cortex-M firmware author would pick instead of
//! bottomhalf. `run.sh` measures both against `footprint_baseline` (the
//! same skeleton without a framework).
//!
//! - The top half is a hardware task bound to `GPIOA`. It captures a
//!   sample, `try_send`s it into an `rtic-sync` channel of capacity 8 (the
//!   `MpscMailbox<u16, 8>`), spawns `refill` (the work item) and writes a
//!   `Signal<()>` (the `mod_delayed_work` of the debounce).
//! - `sum` (the tasklet and its mailbox) is an async software task that
//!   owns the channel's receiver and sums the samples.
//! - `refill` is a software task spawned at every event. A spawn while
//!   the task is spawned and not yet finished fails: events coalesce like
//!   a pending work item's. Unlike a work item, it also fails while the
//!   task runs (a work item queued while it runs is queued again).
//! - `debounce` is an async task that waits for the first edge, then
//!   restarts `Mono::timeout_after(DEBOUNCE, edge.wait())` at every edge
//!   and counts one run when the timeout wins: the RTIC idiom for a
//!   restartable timeout. `rtic-sync`'s `Signal` is "latest value only",
//!   so a write from the top half never blocks and never fails.
//! - The monotonic is `systick_monotonic!` at its default 1 kHz, with a
//!   debounce of 1 ms: `footprint_delayed` uses 1 us on a board clock
//!   that only moves when the test says so; here time really passes, and
//!   a period much longer than the three events keeps the count of
//!   debounce runs at exactly one.
//!
//! `idle` pends `GPIOA` three times (each is taken at once, the dispatcher
//! runs the software tasks after it), spawns `refill` once more (it runs
//! before `spawn` returns to `idle`: the analog of `flush`; RTIC has no
//! analog of `cancel`), sleeps until the debounce ran and then for three
//! debounce periods more. The harness has `footprint_delayed`'s shape, so
//! that the two sizes differ by the frameworks only: eight `println!`s
//! with the same numbers of arguments, two `check_eq!`s and one `check!`.
//! RTIC has no softirq vector: where `footprint_delayed` counts its
//! vector's runs, this firmware counts `sum`'s receives (three).

#![no_std]
#![no_main]

use bottomhalf_firmware_tests::{self as h, check, check_eq, println};
use core::sync::atomic::{AtomicU32, Ordering};
use rtic_monotonics::systick::prelude::*;

systick_monotonic!(Mono);

/// The debounce period.
const DEBOUNCE: u32 = 1;

static SUM: AtomicU32 = AtomicU32::new(0);
static TICKS: AtomicU32 = AtomicU32::new(0);
static REFILLS: AtomicU32 = AtomicU32::new(0);
static DEBOUNCES: AtomicU32 = AtomicU32::new(0);
static SAMPLE: AtomicU32 = AtomicU32::new(10);

#[rtic::app(device = lm3s6965, dispatchers = [SSI0])]
mod app {
    use super::{check, check_eq, h, println, Mono, Ordering, DEBOUNCE};
    use super::{DEBOUNCES, REFILLS, SAMPLE, SUM, TICKS};
    use core::mem::size_of;
    use rtic_monotonics::rtic_time::timer_queue::TimerQueue;
    use rtic_monotonics::systick::prelude::*;
    use rtic_monotonics::systick::SystickBackend;
    use rtic_sync::channel::{Channel, Receiver, Sender};
    use rtic_sync::signal::{Signal, SignalReader, SignalWriter};
    use rtic_sync::{make_channel, make_signal};

    #[shared]
    struct Shared {}

    #[local]
    struct Local {
        tx: Sender<'static, u16, 8>,
        edge: SignalWriter<'static, ()>,
    }

    #[init]
    fn init(cx: init::Context) -> (Shared, Local) {
        Mono::start(cx.core.SYST, 12_000_000);
        let (tx, rx) = make_channel!(u16, 8);
        let (edge, edges) = make_signal!(());
        let _ = sum::spawn(rx);
        let _ = debounce::spawn(edges);
        (Shared {}, Local { tx, edge })
    }

    #[idle]
    fn idle(_cx: idle::Context) -> ! {
        for _ in 0..3 {
            rtic::pend(lm3s6965::Interrupt::GPIOA); // taken at once; the tasks run after it
        }
        // The analog of flush: `idle` is below every task, so a spawned
        // `refill` has run when `spawn` returns. RTIC has no cancel.
        let ok = refill::spawn().is_ok();
        let armed = DEBOUNCES.load(Ordering::Relaxed) == 0;
        while DEBOUNCES.load(Ordering::Relaxed) == 0 {
            cortex_m::asm::wfi(); // SysTick ticks every millisecond
        }
        let quiet = Mono::now() + (3 * DEBOUNCE).millis();
        while Mono::now() < quiet {
            cortex_m::asm::wfi();
        }
        println!("footprint_rtic: RTIC v2 + rtic-sync + rtic-monotonics (SysTick), footprint_delayed's job");
        println!(
            "samples delivered: sum {}, receives {}, refill runs {}, debounce runs {}",
            SUM.load(Ordering::Relaxed),
            TICKS.load(Ordering::Relaxed),
            REFILLS.load(Ordering::Relaxed),
            DEBOUNCES.load(Ordering::Relaxed)
        );
        check_eq!(SUM.load(Ordering::Relaxed), 60);
        check_eq!(TICKS.load(Ordering::Relaxed), 3);
        // Three runs from the interrupts, one from idle's spawn. The three
        // restarts made one timeout, which fired once.
        check!(
            armed
                && ok
                && REFILLS.load(Ordering::Relaxed) == 4
                && DEBOUNCES.load(Ordering::Relaxed) == 1
        );
        println!(
            "RAM: size_of::<Channel<u16, 8>>() = {} bytes, size_of::<Signal<()>>() = {} bytes",
            size_of::<Channel<u16, 8>>(),
            size_of::<Signal<()>>()
        );
        println!(
            "RAM: size_of::<TimerQueue<SystickBackend>>() = {} bytes",
            size_of::<TimerQueue<SystickBackend>>()
        );
        println!(
            "RAM: size_of::<Sender<u16, 8>>() = {} bytes",
            size_of::<Sender<u16, 8>>()
        );
        println!(
            "RAM: size_of::<Receiver<u16, 8>>() = {} bytes",
            size_of::<Receiver<u16, 8>>()
        );
        println!(
            "RAM: size_of::<SignalWriter<()>>() = {} bytes",
            size_of::<SignalWriter<()>>()
        );
        println!("footprint_rtic: ok");
        h::exit_ok()
    }

    /// The top half: capture, send, spawn, restart the debounce.
    #[task(binds = GPIOA, priority = 2, local = [tx, edge])]
    fn sample(cx: sample::Context) {
        let sample = SAMPLE.load(Ordering::Relaxed);
        SAMPLE.store(sample + 10, Ordering::Relaxed);
        let _ = cx.local.tx.try_send(sample as u16);
        let _ = refill::spawn();
        cx.local.edge.write(());
    }

    /// The tasklet and its mailbox: sums what the top half sent.
    #[task(priority = 1)]
    async fn sum(_cx: sum::Context, mut rx: Receiver<'static, u16, 8>) {
        while let Ok(s) = rx.recv().await {
            SUM.store(
                SUM.load(Ordering::Relaxed) + u32::from(s),
                Ordering::Relaxed,
            );
            TICKS.store(TICKS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// The work item.
    #[task(priority = 1)]
    async fn refill(_cx: refill::Context) {
        REFILLS.store(REFILLS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// The delayed work: runs once `DEBOUNCE` after the last edge.
    #[task(priority = 1)]
    async fn debounce(_cx: debounce::Context, mut edges: SignalReader<'static, ()>) {
        loop {
            edges.wait().await;
            while Mono::timeout_after(DEBOUNCE.millis(), edges.wait())
                .await
                .is_ok()
            {}
            DEBOUNCES.store(DEBOUNCES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }
}
