//! Context-carrying bottom halves (issue 9, item 1): one driver function
//! serving several device instances through tasklets and work items bound
//! to a `'static` context, a `static` that points to itself, and
//! `DelayedWork::from_work`.
//!
//! Every test has its own statics, so the harness may run them in
//! parallel. Each count is exact: a context routed to the wrong instance,
//! a lost or an extra run changes it.

use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{Backend, Config, DelayedWork, Host, Priority, Runtime, Tasklet, Work, Workqueue};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A workqueue that a work function can reach and the test can drop
/// (joining its threads, which miri requires before the process ends).
type WqSlot = Mutex<Option<Workqueue>>;

/// Queues `d` on the workqueue in `slot` after `delay`, if it is still
/// there.
fn queue_delayed_in(slot: &WqSlot, d: &'static DelayedWork, delay: Duration) {
    if let Some(wq) = &*slot.lock().unwrap() {
        wq.queue_delayed(d, delay).unwrap();
    }
}

/// Drops the workqueue in its slot (joining its threads, outside the lock).
struct StopWq(&'static WqSlot);

impl Drop for StopWq {
    fn drop(&mut self) {
        let wq = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(wq);
    }
}

/// Builds a workqueue into `slot`; the guard drops it.
fn start_wq(slot: &'static WqSlot, name: &'static str, threads: usize) -> StopWq {
    *slot.lock().unwrap() = Some(Workqueue::builder(name).threads(threads).build().unwrap());
    StopWq(slot)
}

#[track_caller]
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

// ---------------------------------------------------------------------------
// Tasklets.

static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);

/// One device instance: its identity, what its bottom half saw, and its
/// tasklet, bound to the instance itself.
struct Uart {
    id: usize,
    /// Bottom-half runs for this instance.
    rx_runs: AtomicU32,
    /// The CPU of the last run, plus one (0: never ran).
    last_cpu: AtomicUsize,
    rx: Tasklet,
}

/// Runs per instance id, counted by the instance id the bottom half was
/// given (not by the object it touched), so a context pointing at the
/// wrong instance shows in both counts.
static RUNS_BY_ID: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

/// The one bottom half of all four UARTs.
fn uart_rx_bh(uart: &'static Uart) {
    uart.rx_runs.fetch_add(1, Ordering::SeqCst);
    uart.last_cpu
        .store(Host::current_cpu() + 1, Ordering::SeqCst);
    RUNS_BY_ID[uart.id].fetch_add(1, Ordering::SeqCst);
}

macro_rules! uart {
    ($name:ident, $id:expr) => {
        static $name: Uart = Uart {
            id: $id,
            rx_runs: AtomicU32::new(0),
            last_cpu: AtomicUsize::new(0),
            rx: Tasklet::with_context(&RT, &$name, uart_rx_bh),
        };
    };
}
uart!(UART0, 0);
uart!(UART1, 1);
uart!(UART2, 2);
uart!(UART3, 3);
static UARTS: [&Uart; 4] = [&UART0, &UART1, &UART2, &UART3];

/// Schedules `uart` `times` times, draining after each, so none coalesce.
fn interrupts(uart: &'static Uart, times: u32) {
    for _ in 0..times {
        assert!(uart.rx.schedule(), "UART{} was already pending", uart.id);
        assert!(RT.drain().is_complete());
    }
}

#[test]
fn one_bottom_half_function_serves_four_uarts_each_with_its_own_context() {
    // UART0 and UART1 interrupt on CPU 0 (this thread), UART2 and UART3 on
    // CPU 1; instance i interrupts 3 + 2i times.
    let want = [3, 5, 7, 9];
    interrupts(&UART0, want[0]);
    interrupts(&UART1, want[1]);
    thread::spawn(move || {
        let _cpu = RT.bind_current_thread(1).unwrap();
        interrupts(&UART2, want[2]);
        interrupts(&UART3, want[3]);
    })
    .join()
    .unwrap();
    // One more interrupt on UART1 and three on UART3 (on CPU 0 this time),
    // before one drain: UART3's three coalesce into one run.
    assert!(UART1.rx.schedule());
    assert!(UART3.rx.schedule());
    assert!(!UART3.rx.schedule());
    assert!(!UART3.rx.schedule());
    assert!(RT.drain().is_complete());
    let want = [want[0], want[1] + 1, want[2], want[3] + 1];

    let runs: Vec<u32> = UARTS
        .iter()
        .map(|u| u.rx_runs.load(Ordering::SeqCst))
        .collect();
    let by_id: Vec<u32> = RUNS_BY_ID
        .iter()
        .map(|n| n.load(Ordering::SeqCst))
        .collect();
    let tasklet_runs: Vec<u32> = UARTS.iter().map(|u| u.rx.runs()).collect();
    let cpus: Vec<usize> = UARTS
        .iter()
        .map(|u| u.last_cpu.load(Ordering::SeqCst) - 1)
        .collect();
    println!(
        "4 UARTs, one bottom half: runs per instance {runs:?}, by the id each run was given \
         {by_id:?}, tasklet runs {tasklet_runs:?}, last CPU {cpus:?}, UART3 coalesced {}",
        UART3.rx.coalesced()
    );
    assert_eq!(runs, want);
    assert_eq!(by_id, want);
    assert_eq!(tasklet_runs, want);
    // UART2 last ran on CPU 1, where it was scheduled; UART3's last run was
    // scheduled on CPU 0.
    assert_eq!(cpus, [0, 0, 1, 0]);
    assert_eq!(UART3.rx.coalesced(), 2);
    assert_eq!(UARTS.map(|u| u.rx.coalesced())[..3], [0, 0, 0]);
}

/// A static whose tasklet points to the static itself, the other way
/// round from `Uart`: the context is a plain value elsewhere.
struct SelfRef {
    hits: AtomicU32,
    bh: Tasklet,
}

static SELF_REF: SelfRef = SelfRef {
    hits: AtomicU32::new(0),
    bh: Tasklet::with_context(&RT_SELF, &SELF_REF, self_ref_bh),
};
static RT_SELF: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
/// Where each run found the context and the tasklet (0 until it ran).
static SEEN_CTX: AtomicUsize = AtomicUsize::new(0);
static SEEN_TASKLET: AtomicUsize = AtomicUsize::new(0);

fn self_ref_bh(me: &'static SelfRef) {
    me.hits.fetch_add(1, Ordering::SeqCst);
    SEEN_CTX.store(ptr::from_ref(me) as usize, Ordering::SeqCst);
    SEEN_TASKLET.store(ptr::from_ref(&me.bh) as usize, Ordering::SeqCst);
}

/// Contexts that are not the tasklet's container: array elements.
static SLOTS: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
fn bump(slot: &'static AtomicU32) {
    slot.fetch_add(1, Ordering::SeqCst);
}
static SLOT_TASKLETS: [Tasklet; 3] = [
    Tasklet::with_context(&RT_SELF, &SLOTS[0], bump),
    Tasklet::with_context(&RT_SELF, &SLOTS[1], bump),
    Tasklet::new_hi_with_context(&RT_SELF, &SLOTS[2], bump),
];

#[test]
fn a_static_tasklet_may_point_to_the_static_it_lives_in() {
    for _ in 0..3 {
        assert!(SELF_REF.bh.schedule());
        assert!(RT_SELF.drain().is_complete());
    }
    println!(
        "self-referential static: {} runs, context at {:#x} (static at {:#x})",
        SELF_REF.hits.load(Ordering::SeqCst),
        SEEN_CTX.load(Ordering::SeqCst),
        ptr::from_ref(&SELF_REF) as usize
    );
    assert_eq!(SELF_REF.hits.load(Ordering::SeqCst), 3);
    assert_eq!(SELF_REF.bh.runs(), 3);
    assert_eq!(
        SEEN_CTX.load(Ordering::SeqCst),
        ptr::from_ref(&SELF_REF) as usize
    );
    assert_eq!(
        SEEN_TASKLET.load(Ordering::SeqCst),
        ptr::from_ref(&SELF_REF.bh) as usize
    );
}

#[test]
fn array_elements_as_contexts_and_hi_priority_with_context() {
    static RT_ARR: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static ORDER: AtomicU32 = AtomicU32::new(0);
    /// When each tasklet ran (1-based), by slot.
    static AT: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
    fn mark(at: &'static AtomicU32) {
        at.store(ORDER.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
    }
    static LO: Tasklet = Tasklet::with_context(&RT_ARR, &AT[0], mark);
    static HI: Tasklet = Tasklet::new_hi_with_context(&RT_ARR, &AT[1], mark);
    assert_eq!(LO.priority(), Priority::Normal);
    assert_eq!(HI.priority(), Priority::Hi);
    LO.schedule();
    HI.schedule();
    assert!(RT_ARR.drain().is_complete());
    let at = AT.each_ref().map(|a| a.load(Ordering::SeqCst));
    assert_eq!(at, [2, 1], "the hi-priority tasklet must run first");

    // Slot i is scheduled i + 1 times, draining after each.
    for (i, t) in SLOT_TASKLETS.iter().enumerate() {
        for _ in 0..=i {
            assert!(t.schedule());
            assert!(RT_SELF.drain().is_complete());
        }
    }
    let slots = SLOTS.each_ref().map(|s| s.load(Ordering::SeqCst));
    println!("array-element contexts: slot counts {slots:?}; lo/hi ran at {at:?}");
    assert_eq!(slots, [1, 2, 3]);
    assert_eq!(SLOT_TASKLETS[2].priority(), Priority::Hi);
}

// ---------------------------------------------------------------------------
// Work items.

struct Disk {
    id: usize,
    flushes: AtomicU32,
    /// Set by a run that got some other item than this disk's own.
    wrong_item: AtomicU32,
    flush_work: Work,
}

static FLUSHES_BY_ID: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

fn disk_flush(disk: &'static Disk, work: &Work) {
    if !ptr::eq(work, &disk.flush_work) {
        disk.wrong_item.fetch_add(1, Ordering::SeqCst);
    }
    disk.flushes.fetch_add(1, Ordering::SeqCst);
    FLUSHES_BY_ID[disk.id].fetch_add(1, Ordering::SeqCst);
}

macro_rules! disk {
    ($name:ident, $id:expr, $label:literal) => {
        static $name: Disk = Disk {
            id: $id,
            flushes: AtomicU32::new(0),
            wrong_item: AtomicU32::new(0),
            flush_work: Work::with_context($label, &$name, disk_flush),
        };
    };
}
disk!(SDA, 0, "sda-flush");
disk!(SDB, 1, "sdb-flush");
disk!(SDC, 2, "sdc-flush");
disk!(SDD, 3, "sdd-flush");
static DISKS: [&Disk; 4] = [&SDA, &SDB, &SDC, &SDD];

#[test]
fn one_work_function_serves_four_disks_each_with_its_own_context() {
    let wq = Workqueue::builder("disks").threads(2).build().unwrap();
    let want = [1u32, 2, 3, 4];
    for (disk, &n) in DISKS.iter().zip(&want) {
        for _ in 0..n {
            assert!(wq.queue(&disk.flush_work));
            assert_eq!(disk.flush_work.flush(), Ok(true));
        }
    }
    let flushes = DISKS.map(|d| d.flushes.load(Ordering::SeqCst));
    let by_id = FLUSHES_BY_ID.each_ref().map(|n| n.load(Ordering::SeqCst));
    let runs = DISKS.map(|d| d.flush_work.runs());
    let wrong = DISKS.map(|d| d.wrong_item.load(Ordering::SeqCst));
    println!(
        "4 disks, one work function: runs per instance {flushes:?}, by id {by_id:?}, \
         item runs {runs:?}, runs given another item {wrong:?}"
    );
    assert_eq!(flushes, want);
    assert_eq!(by_id, want);
    assert_eq!(runs, want);
    assert_eq!(wrong, [0; 4]);
}

/// A button with a periodic debounce poll: the work function re-arms its
/// own delayed item until the input has been stable for `STABLE` polls.
/// It reaches the item two ways: `from_work` (for the call) and its
/// `'static` context (to queue it again); both must agree.
struct Button {
    polls: AtomicU32,
    /// Set if `from_work` gave something other than this button's item, or
    /// said its timer was pending while it ran.
    wrong_item: AtomicU32,
    debounce: DelayedWork,
}

const STABLE: u32 = 5;
static BUTTONS_WQ: WqSlot = Mutex::new(None);

fn debounce_poll(button: &'static Button, work: &Work) {
    match DelayedWork::from_work(work) {
        Some(me) if ptr::eq(me, &button.debounce) && !me.is_timer_pending() => {}
        _ => {
            button.wrong_item.fetch_add(1, Ordering::SeqCst);
        }
    }
    let polls = button.polls.fetch_add(1, Ordering::SeqCst) + 1;
    if polls < STABLE {
        queue_delayed_in(&BUTTONS_WQ, &button.debounce, Duration::from_millis(1));
    }
}

static POWER: Button = Button {
    polls: AtomicU32::new(0),
    wrong_item: AtomicU32::new(0),
    debounce: DelayedWork::with_context("power-debounce", &POWER, debounce_poll),
};
static RESET: Button = Button {
    polls: AtomicU32::new(0),
    wrong_item: AtomicU32::new(0),
    debounce: DelayedWork::with_context("reset-debounce", &RESET, debounce_poll),
};

#[test]
fn a_delayed_work_function_re_arms_its_own_instance_through_its_context() {
    let _wq = start_wq(&BUTTONS_WQ, "buttons", 2);
    // Only POWER is pressed: RESET must stay untouched.
    queue_delayed_in(&BUTTONS_WQ, &POWER.debounce, Duration::from_millis(1));
    wait_until("the debounce to settle", || {
        POWER.debounce.runs() >= STABLE
            && !POWER.debounce.is_pending()
            && !POWER.debounce.is_running()
    });
    // Settled: no instance is pending, so no run is still to come.
    assert_eq!(POWER.debounce.flush(), Ok(false));
    println!(
        "debounce re-armed from its own function: POWER polled {} times (want {STABLE}), \
         RESET {}, wrong items {}",
        POWER.polls.load(Ordering::SeqCst),
        RESET.polls.load(Ordering::SeqCst),
        POWER.wrong_item.load(Ordering::SeqCst) + RESET.wrong_item.load(Ordering::SeqCst)
    );
    assert_eq!(POWER.polls.load(Ordering::SeqCst), STABLE);
    assert_eq!(POWER.debounce.runs(), STABLE);
    assert_eq!(POWER.wrong_item.load(Ordering::SeqCst), 0);
    assert_eq!(RESET.polls.load(Ordering::SeqCst), 0);
    assert_eq!(RESET.debounce.runs(), 0);
}

/// A periodic item whose context is the item itself.
static TICK: DelayedWork = DelayedWork::with_context("tick", &TICK, tick);
static TICK_WQ: WqSlot = Mutex::new(None);
static TICK_WRONG: AtomicU32 = AtomicU32::new(0);
const TICKS: u32 = 4;

fn tick(me: &'static DelayedWork, work: &Work) {
    if !DelayedWork::from_work(work).is_some_and(|d| ptr::eq(d, me)) {
        TICK_WRONG.fetch_add(1, Ordering::SeqCst);
    }
    // `runs` counts finished runs: this is run `runs() + 1`.
    if work.runs() + 1 < TICKS {
        queue_delayed_in(&TICK_WQ, me, Duration::from_millis(1));
    }
}

/// `from_work` on a `&'static Work` gives a `&'static DelayedWork`, which
/// can be queued.
static KICK_ALL: [&Work; 2] = [TICK.work(), &KICKED_PLAIN];
static KICKED_PLAIN: Work = Work::new("kicked-plain", |_| {});

#[test]
fn a_delayed_item_that_is_its_own_context_re_arms_itself() {
    let _wq = start_wq(&TICK_WQ, "tick", 1);
    // Start it the way a table of `&'static Work` would: through from_work.
    for &w in &KICK_ALL {
        let slot = TICK_WQ.lock().unwrap();
        let wq = slot.as_ref().unwrap();
        match DelayedWork::from_work(w) {
            Some(d) => assert_eq!(wq.queue_delayed(d, Duration::from_millis(1)), Ok(true)),
            None => assert!(wq.queue(w)),
        }
    }
    // `runs` counts a run finished a moment before the worker clears
    // RUNNING: wait for both.
    wait_until("the ticks", || {
        TICK.runs() >= TICKS && !TICK.is_pending() && !TICK.is_running()
    });
    assert_eq!(TICK.flush(), Ok(false));
    assert_eq!(KICKED_PLAIN.flush().map(|_| KICKED_PLAIN.runs()), Ok(1));
    println!(
        "self-context periodic item: {} runs (want {TICKS}), from_work mismatches {}",
        TICK.runs(),
        TICK_WRONG.load(Ordering::SeqCst)
    );
    assert_eq!(TICK.runs(), TICKS);
    assert_eq!(TICK_WRONG.load(Ordering::SeqCst), 0);
}

#[test]
fn from_work_finds_the_delayed_item_and_refuses_a_plain_one() {
    static PLAIN: Work = Work::new("plain", |_| {});
    static CTX: AtomicU32 = AtomicU32::new(0);
    static PLAIN_CTX: Work = Work::with_context("plain-ctx", &CTX, |_, _| {});
    static DELAYED: DelayedWork = DelayedWork::new("delayed", |_| {});
    static DELAYED_CTX: DelayedWork = DelayedWork::with_context("delayed-ctx", &CTX, |_, _| {});
    let plain_arc = Work::new_arc("plain-arc", |_| {});
    let delayed_arc = DelayedWork::new_arc("delayed-arc", |_| {});

    assert!(DelayedWork::from_work(&PLAIN).is_none());
    assert!(DelayedWork::from_work(&PLAIN_CTX).is_none());
    assert!(DelayedWork::from_work(&plain_arc).is_none());
    let found = [
        DelayedWork::from_work(DELAYED.work()),
        DelayedWork::from_work(DELAYED_CTX.work()),
        DelayedWork::from_work(delayed_arc.work()),
    ];
    assert!(ptr::eq(found[0].unwrap(), &DELAYED));
    assert!(ptr::eq(found[1].unwrap(), &DELAYED_CTX));
    assert!(ptr::eq(found[2].unwrap(), &*delayed_arc));

    // From inside a running function, for each kind: (from_work was
    // Some, it was the item's own DelayedWork).
    static SEEN: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
    fn record(slot: usize, work: &Work) {
        let v = match DelayedWork::from_work(work) {
            None => 1,
            Some(d) if ptr::eq(d.work(), work) => 2,
            Some(_) => 3,
        };
        SEEN[slot].store(v, Ordering::SeqCst);
    }
    static P: Work = Work::new("p", |w| record(0, w));
    static D: DelayedWork = DelayedWork::new("d", |w| record(1, w));
    let pa = Work::new_arc("pa", |w| record(2, w));
    let da: Arc<DelayedWork> = DelayedWork::new_arc("da", |w| record(3, w));
    let wq = Workqueue::builder("from-work").threads(0).build().unwrap();
    assert!(wq.queue(&P));
    assert_eq!(wq.queue_delayed(&D, Duration::ZERO), Ok(true));
    assert!(wq.queue(&pa));
    assert_eq!(wq.queue_delayed(&da, Duration::ZERO), Ok(true));
    assert_eq!(wq.run_pending(), 4);
    let seen = SEEN.each_ref().map(|s| s.load(Ordering::SeqCst));
    println!("from_work inside the function (1 None, 2 its own DelayedWork): {seen:?}");
    assert_eq!(seen, [1, 2, 1, 2]);
}

// ---------------------------------------------------------------------------
// Size.

/// The context costs one word in a tasklet (64 -> 72 bytes) and one in a
/// work item (96 -> 104) on x86_64 Linux; more would be a regression. The
/// deadline request a reschedule from a top half writes (a seqlock word and
/// two halves) adds 8 more (112); a `DelayedWork` is exactly its `Work`.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn a_context_costs_one_word() {
    let sizes = (
        std::mem::size_of::<Tasklet>(),
        std::mem::size_of::<Work>(),
        std::mem::size_of::<DelayedWork>(),
    );
    println!("size_of Tasklet, Work, DelayedWork: {sizes:?}");
    assert_eq!(sizes, (72, 112, 112));
}
