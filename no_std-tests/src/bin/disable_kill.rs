//! `disable`, `disable_nosync`, `enable` and `kill` of a tasklet while
//! interrupts keep scheduling it.
//!
//! SysTick pends the three top-half interrupts at random; each one calls
//! `try_schedule` on the tasklet T, whose callback busy-works. Phases:
//!
//! 1. running: T runs;
//! 2. `disable()` from thread mode while the storm goes on: after it
//!    returned, T never runs, though the interrupts keep scheduling it (the
//!    schedules are held: T stays scheduled);
//! 3. storm stopped, `enable()`: the held run happens, exactly once;
//! 4. `disable_nosync()` from the high top half, which preempted T's
//!    callback: that run finishes, no other starts until `enable()`;
//! 5. a pending T is killed (scheduled and killed with interrupts masked,
//!    so the drain finds it linked): the pending run is discarded;
//! 6. (re-created state: storm again) `kill()` from thread mode while the
//!    interrupts keep scheduling: no run after it returned, every later
//!    `try_schedule` is `Err(TaskletKilled)`, `schedule` is `false`.
//!
//! On one core, thread mode runs only when no drain is active, so
//! `disable()` and `kill()` never have to wait for a running callback
//! there; the waiting path is what phase 4 exercises from a top half
//! (with `disable_nosync`, the top-half-safe variant).

#![no_std]
#![no_main]

use bottomhalf::{BareMetal, Config, Runtime, Tasklet, TaskletKilled};
use bottomhalf_firmware_tests::{
    self as h, check, check_eq, cortex_m, interrupt, println, AtomicBool, AtomicU32, InFlight,
    Ordering, PendSvBoard, IRQ_HIGH, IRQ_LOW, IRQ_MID,
};
use cortex_m_rt::{entry, exception};
use h::cortex_m_rt;

static RT: Runtime<BareMetal<PendSvBoard>, 1> = Runtime::new(Config::DEFAULT);

const RELOAD: u32 = 49;
const TASKLET_WORK: u32 = 400;
const PHASE_TICKS: u32 = 150;

static T: Tasklet = Tasklet::new(&RT, t_body);
/// A second tasklet for phase 5 (a pending tasklet killed).
static K: Tasklet = Tasklet::new(&RT, k_body);

static IN_T: AtomicBool = AtomicBool::new(false);
static INFLIGHT: InFlight = InFlight::new();
/// Set by thread mode after `disable()` returned; cleared before `enable()`.
static DISABLED: AtomicBool = AtomicBool::new(false);
/// Set by thread mode after `kill()` returned.
static KILLED: AtomicBool = AtomicBool::new(false);
static VIOLATIONS: AtomicU32 = AtomicU32::new(0);
static K_RUNS: AtomicU32 = AtomicU32::new(0);

/// Phase 4: the high top half disables T while T runs.
static NOSYNC_ARMED: AtomicBool = AtomicBool::new(false);
static NOSYNC_DONE: AtomicBool = AtomicBool::new(false);
static RUNS_AT_NOSYNC: AtomicU32 = AtomicU32::new(0);

fn t_body() {
    let _bh = h::preempt::bottom_half();
    let _one = INFLIGHT.enter();
    if DISABLED.load(Ordering::SeqCst)
        || KILLED.load(Ordering::SeqCst)
        || NOSYNC_DONE.load(Ordering::SeqCst)
    {
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    }
    IN_T.store(true, Ordering::SeqCst);
    h::spin(TASKLET_WORK);
    IN_T.store(false, Ordering::SeqCst);
}

fn k_body() {
    K_RUNS.fetch_add(1, Ordering::Relaxed);
}

static QUEUED: AtomicU32 = AtomicU32::new(0);
static COALESCED: AtomicU32 = AtomicU32::new(0);
static REFUSED: AtomicU32 = AtomicU32::new(0);
static OK_AFTER_KILL: AtomicU32 = AtomicU32::new(0);

fn schedule_t() {
    let killed_before = KILLED.load(Ordering::SeqCst);
    let result = T.try_schedule();
    match result {
        Ok(true) => QUEUED.fetch_add(1, Ordering::Relaxed),
        Ok(false) => COALESCED.fetch_add(1, Ordering::Relaxed),
        Err(TaskletKilled) => REFUSED.fetch_add(1, Ordering::Relaxed),
    };
    if killed_before && result.is_ok() {
        OK_AFTER_KILL.fetch_add(1, Ordering::Relaxed);
    }
}

#[interrupt]
fn GPIOA() {
    let _th = h::preempt::TopHalf::enter();
    schedule_t();
}

#[interrupt]
fn GPIOB() {
    let _th = h::preempt::TopHalf::enter();
    schedule_t();
}

#[interrupt]
fn GPIOC() {
    let _th = h::preempt::TopHalf::enter();
    if NOSYNC_ARMED.load(Ordering::SeqCst) && IN_T.load(Ordering::SeqCst) {
        // T's callback is running below us: disable without waiting.
        T.disable_nosync();
        RUNS_AT_NOSYNC.store(T.runs(), Ordering::SeqCst);
        NOSYNC_ARMED.store(false, Ordering::SeqCst);
        NOSYNC_DONE.store(true, Ordering::SeqCst);
    }
    schedule_t();
}

static TICKS: AtomicU32 = AtomicU32::new(0);
static RNG: AtomicU32 = AtomicU32::new(0xfeed_f00d);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    let r = h::xorshift(&RNG);
    if r & 1 != 0 {
        h::pend(IRQ_LOW);
    }
    if r & 2 != 0 {
        h::pend(IRQ_MID);
    }
    if r & 4 != 0 {
        h::pend(IRQ_HIGH);
    }
    h::systick_set_reload(1 + (r >> 8) % RELOAD);
}

#[exception]
fn PendSV() {
    let _drain = h::preempt::drain();
    let _ = RT.drain(); // out of budget: PendSV is pended again
}

/// Runs the storm for `n` more SysTick events (thread mode waits).
fn storm_for(n: u32) {
    let until = TICKS.load(Ordering::Relaxed) + n;
    h::systick_start(RELOAD);
    h::wait_for("SysTick events", 100_000_000, || {
        TICKS.load(Ordering::Relaxed) >= until
    });
}

fn storm_stop() {
    h::systick_stop();
    // Thread mode runs again only once every handler has finished.
    check_eq!(RT.pending(0), 0);
}

fn schedules() -> u32 {
    QUEUED.load(Ordering::Relaxed) + COALESCED.load(Ordering::Relaxed)
}

#[entry]
fn main() -> ! {
    h::start("disable_kill");
    println!("disable_kill: top halves at 3 priorities keep scheduling tasklet T");

    // 1. Running.
    storm_for(PHASE_TICKS);
    storm_stop();
    let runs1 = T.runs();
    check!(runs1 > 0);
    check_eq!(schedules(), T.runs() + T.coalesced());
    println!(
        "running: scheduled {}, runs {}, coalesced {}",
        schedules(),
        runs1,
        T.coalesced()
    );

    // 2. disable() while the storm goes on.
    storm_for(5);
    T.disable();
    DISABLED.store(true, Ordering::SeqCst);
    let at_disable = T.runs();
    let sched_at_disable = schedules();
    storm_for(PHASE_TICKS);
    storm_stop();
    let held = schedules() - sched_at_disable;
    check!(held > 0, "nothing scheduled T while it was disabled");
    check_eq!(T.runs(), at_disable, "T ran while disabled");
    check!(
        T.is_scheduled(),
        "the schedules while disabled were not held"
    );
    check!(T.is_disabled());
    println!(
        "disabled: schedules while disabled {}, runs while disabled {}",
        held,
        T.runs() - at_disable
    );
    println!("no run after disable() returned: yes; the run is held (T scheduled): yes");

    // 3. enable(): the held run, exactly once. PendSV (pended by the
    // enqueue) preempts thread mode at once.
    DISABLED.store(false, Ordering::SeqCst);
    T.enable();
    check_eq!(RT.pending(0), 0);
    check_eq!(T.runs(), at_disable + 1, "the held run after enable()");
    check!(!T.is_scheduled());
    check_eq!(
        schedules(),
        T.runs() + T.coalesced(),
        "every schedule covered"
    );
    println!("enable(): the held run ran once: yes (schedules == runs + coalesced: yes)");

    // 4. disable_nosync() from a top half that preempted T's callback.
    NOSYNC_ARMED.store(true, Ordering::SeqCst);
    h::wait_for("a top half that preempts T", 100, || {
        storm_for(20);
        NOSYNC_DONE.load(Ordering::SeqCst)
    });
    storm_for(PHASE_TICKS);
    storm_stop();
    let at_nosync = RUNS_AT_NOSYNC.load(Ordering::SeqCst);
    check_eq!(
        T.runs(),
        at_nosync + 1,
        "the run preempted by disable_nosync() finished, and no other ran"
    );
    check!(T.is_scheduled() && T.is_disabled());
    println!(
        "disable_nosync() from a top half inside T's run: that run finished, no later run: yes"
    );
    NOSYNC_DONE.store(false, Ordering::SeqCst);
    T.enable();
    check_eq!(T.runs(), at_nosync + 2, "the held run after enable()");
    check_eq!(
        schedules(),
        T.runs() + T.coalesced(),
        "every schedule covered"
    );
    println!("enable(): the held run ran once: yes");

    // 5. kill() of a pending tasklet: scheduled and killed with interrupts
    // masked, so it is linked on the CPU's list when the drain comes.
    cortex_m::interrupt::free(|_| {
        check!(K.schedule());
        check!(cortex_m::peripheral::SCB::is_pendsv_pending());
        K.kill();
    });
    check_eq!(RT.pending(0), 0);
    check_eq!(
        K_RUNS.load(Ordering::Relaxed),
        0,
        "a killed pending tasklet ran"
    );
    check_eq!(K.runs(), 0);
    check!(!K.is_scheduled());
    println!("kill() of a pending tasklet: the pending run was discarded: yes");

    // 6. kill() while the interrupts keep scheduling T.
    storm_for(PHASE_TICKS);
    T.kill();
    KILLED.store(true, Ordering::SeqCst);
    let at_kill = T.runs();
    let refused_at_kill = REFUSED.load(Ordering::Relaxed);
    storm_for(PHASE_TICKS);
    storm_stop();
    let refused = REFUSED.load(Ordering::Relaxed);
    println!(
        "killed: runs before kill {}, after kill {}; try_schedule refused {} times after kill",
        at_kill,
        T.runs() - at_kill,
        refused - refused_at_kill
    );
    check_eq!(T.runs(), at_kill, "T ran after kill() returned");
    check!(
        refused - refused_at_kill > 0,
        "nothing scheduled T after kill"
    );
    check_eq!(
        OK_AFTER_KILL.load(Ordering::Relaxed),
        0,
        "a schedule after kill was accepted"
    );
    check_eq!(T.try_schedule(), Err(TaskletKilled));
    check!(!T.schedule());
    check!(T.is_killed() && !T.is_scheduled());
    println!("nothing ran after kill(); try_schedule after kill is Err(TaskletKilled): yes");

    check_eq!(
        VIOLATIONS.load(Ordering::Relaxed),
        0,
        "T ran while disabled or killed"
    );
    check_eq!(INFLIGHT.max(), 1);
    println!(
        "no run while disabled or killed: yes; max in-flight {}",
        INFLIGHT.max()
    );
    println!(
        "totals: queued {}, coalesced {}, refused {}, runs {}",
        QUEUED.load(Ordering::Relaxed),
        COALESCED.load(Ordering::Relaxed),
        refused,
        T.runs()
    );
    h::preempt::report();
    h::preempt::check_preempted();
    println!("disable_kill: ok");
    h::exit_ok()
}
