//! An RTIC v2 application that hands samples from a hardware task to a
//! tasklet through a `Mailbox`, with no `unsafe` in this file.
//!
//! - `init` takes the producer end (`Mailbox::take_producer` on a `static`
//!   mailbox gives a `Producer<'static, ..>`) and moves it into the
//!   `#[local]` resources of the hardware task bound to `GPIOA`: RTIC
//!   gives that task a `&mut` to it.
//! - The task pushes a burst of 10 samples per interrupt into the 7-item
//!   ring (3 are refused and counted) and schedules a tasklet.
//! - The runtime's drain runs in another hardware task (bound to `GPIOD`,
//!   the lowest priority); the runtime pends it through the `Board`
//!   (`rtic::pend`).
//! - The tasklet takes the consumer end at the start of each run and
//!   gives it back at the end.
//!
//! `idle` pends `GPIOA` through the NVIC and checks the counts: every
//! sample delivered once and in order or counted dropped, the task's
//! producer end never given back.

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Board, Config, Mailbox, Runtime, Tasklet};
use bottomhalf_firmware_tests::{self as h, check_eq, println, AtomicU32, Ordering};

/// The drain runs in the RTIC hardware task `drain` (bound to `GPIOD`).
struct RticBoard;

impl Board for RticBoard {
    fn pend_drain(_cpu: usize, _level: bottomhalf::Level) {
        rtic::pend(lm3s6965::Interrupt::GPIOD);
    }
}

static RT: Runtime<BareMetal<RticBoard>, 1> = Runtime::new(Config::DEFAULT);
static SAMPLES: Mailbox<u16, 8> = Mailbox::new();
static SAMPLES_BH: Tasklet = Tasklet::new(&RT, samples_bh);

const ROUNDS: u32 = 40;
/// Samples per interrupt: more than the ring holds (7).
const BURST: u16 = 10;

static PUSHED: AtomicU32 = AtomicU32::new(0);
static DROPPED: AtomicU32 = AtomicU32::new(0);
static SEEN: AtomicU32 = AtomicU32::new(0);
static DRAINS: AtomicU32 = AtomicU32::new(0);

fn samples_bh() {
    let Some(rx) = SAMPLES.take_consumer() else {
        h::fail(format_args!("the consumer end was out"))
    };
    for s in rx {
        let want = SEEN.load(Ordering::Relaxed);
        check_eq!(u32::from(s), want, "sample lost, repeated or reordered");
        SEEN.store(want + 1, Ordering::Relaxed);
    }
}

#[rtic::app(device = lm3s6965)]
mod app {
    use super::{h, println, AtomicU32, Mailbox, Ordering, BURST, DRAINS, DROPPED, PUSHED};
    use super::{ROUNDS, RT, SAMPLES, SAMPLES_BH, SEEN};
    use bottomhalf::Producer;
    use bottomhalf_firmware_tests::{check, check_eq};

    #[shared]
    struct Shared {}

    #[local]
    struct Local {
        /// The producer end, owned by the `sample` task.
        tx: Producer<'static, u16, 8>,
    }

    #[init]
    fn init(_cx: init::Context) -> (Shared, Local) {
        check!(
            h::core_matches_target(),
            "rtic_handoff was built for the other core; QEMU runs a {}",
            h::core_name()
        );
        let Some(tx) = SAMPLES.take_producer() else {
            h::fail(format_args!("the producer end was out"))
        };
        (Shared {}, Local { tx })
    }

    #[idle]
    fn idle(_cx: idle::Context) -> ! {
        println!(
            "rtic_handoff: {} rounds; the GPIOA task pushes bursts of {} into Mailbox<u16, 8> from its #[local] producer",
            ROUNDS, BURST
        );
        for _ in 0..ROUNDS {
            rtic::pend(lm3s6965::Interrupt::GPIOA);
        }
        h::wait_for("the last drain", 10_000_000, || RT.pending(0) == 0);
        let (pushed, dropped, seen) = (
            PUSHED.load(Ordering::Relaxed),
            DROPPED.load(Ordering::Relaxed),
            SEEN.load(Ordering::Relaxed),
        );
        println!(
            "Mailbox: pushed {}, delivered {}, dropped {} (mailbox counts {}), high-water {}",
            pushed,
            seen,
            dropped,
            SAMPLES.dropped(),
            SAMPLES.high_water()
        );
        check_eq!(pushed + dropped, ROUNDS * u32::from(BURST));
        check_eq!(seen, pushed, "every pushed sample delivered");
        check_eq!(SAMPLES.dropped(), dropped);
        check!(dropped > 0, "no burst overflowed the ring");
        check_eq!(SAMPLES.high_water() as usize, Mailbox::<u16, 8>::CAPACITY);
        check!(DRAINS.load(Ordering::Relaxed) > 0);
        check!(SAMPLES.take_producer().is_none(), "the task keeps its end");
        println!("the GPIOA task keeps the producer end in #[local]: yes");
        check!(SAMPLES.take_consumer().is_some());
        println!("the tasklet took and gave back the consumer end at every run: yes");
        println!("rtic_handoff: ok");
        h::exit_ok()
    }

    /// The top half: a hardware task that owns the producer end.
    #[task(binds = GPIOA, priority = 2, local = [tx])]
    fn sample(cx: sample::Context) {
        let tx = cx.local.tx;
        for _ in 0..BURST {
            let n = PUSHED.load(Ordering::Relaxed) as u16;
            let counter: &AtomicU32 = match tx.push(n) {
                Ok(()) => &PUSHED,
                Err(_) => &DROPPED,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        SAMPLES_BH.schedule();
    }

    /// The runtime's drain, pended by `RticBoard::pend_drain`.
    #[task(binds = GPIOD, priority = 1)]
    fn drain(_cx: drain::Context) {
        DRAINS.fetch_add(1, Ordering::Relaxed);
        let _ = RT.drain();
    }
}
