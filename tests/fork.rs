//! `fork()` while another thread of the parent is in a drain, a tasklet
//! run, a top half or holds drain threads: the child must not hang, see
//! `Busy` forever, lose a tasklet or panic, and new work must run in it.
//!
//! Each test re-executes this test binary with only itself selected
//! (`--exact NAME --test-threads=1`) and `BH_FORK_SCENARIO=NAME`, so the
//! scenario runs in a fresh process whose only threads are its own. The
//! scenario forks a child that checks the repair and exits with 0 (or the
//! number of the check that failed) under an `alarm` watchdog; the parent
//! asserts the child's exit status.

// fork() and re-exec are not available under miri.
#![cfg(all(unix, not(miri)))]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{Backend, Config, DrainOutcome, Host, Runtime, Tasklet, Vector};

mod support;
use support::process;

/// The environment variable that selects a scenario in `in_own_process`.
const VAR: &str = "BH_FORK_SCENARIO";

/// Seconds before SIGALRM kills a hung child (or scenario process).
const CHILD_WATCHDOG: u32 = 10;
const SCENARIO_WATCHDOG: u32 = 60;

/// Runs `scenario` in a re-executed copy of this binary when called from
/// the test harness, or runs it here when this is that copy.
fn in_own_process(name: &str, scenario: fn()) {
    if process::is_scenario(VAR, name) {
        // SAFETY: alarm only re-arms this process's SIGALRM timer.
        unsafe { libc::alarm(SCENARIO_WATCHDOG) };
        scenario();
        return;
    }
    let out = process::reexec(VAR, name, &["--include-ignored"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "scenario {name}: {}", out.status);
    assert!(
        stdout.contains("1 passed"),
        "scenario {name} did not run: {stdout}"
    );
}

/// In the child: exits with `code` (and a raw message) if `ok` is false.
fn check(ok: bool, code: i32, what: &str) {
    if !ok {
        let msg = format!("fork child: check {code} failed: {what}\n");
        // SAFETY: write(2) of a valid buffer to stderr, then _exit(2): the
        // child leaves without running the parent's atexit handlers or
        // flushing inherited stdio buffers.
        unsafe {
            libc::write(2, msg.as_ptr().cast(), msg.len());
            libc::_exit(code);
        }
    }
}

/// Forks; runs `child` in the child under a watchdog and `_exit(0)`s;
/// returns the child's pid to the parent.
fn fork_child(child: fn()) -> libc::pid_t {
    // After fork in this multithreaded process the child calls only what
    // the scenario needs: the crate under test, std's thread spawn and
    // sleep (glibc's fork makes malloc usable in the child), alarm and
    // _exit. It never returns into the test harness: a panic must not
    // unwind into the copy of the test harness (which would report on the
    // parent's behalf), it fails the child.
    process::fork_with_watchdog(CHILD_WATCHDOG, || match std::panic::catch_unwind(child) {
        Ok(()) => 0,
        Err(_) => 100,
    })
}

/// Waits for the child and asserts that it exited with 0 (not killed by a
/// signal: a hang ends with SIGALRM).
fn assert_child_ok(pid: libc::pid_t) {
    assert_eq!(process::reap(pid), 0, "a check failed in the child");
}

fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the parent thread never got there"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Set in the child only (by the child closure), read by callbacks that
/// block in the parent.
static IN_CHILD: AtomicBool = AtomicBool::new(false);
/// Lets the parent's blocked callback return.
static RELEASE: AtomicBool = AtomicBool::new(false);

fn block_until_released(entered: &AtomicBool) {
    entered.store(true, Ordering::SeqCst);
    while !RELEASE.load(Ordering::SeqCst) && !IN_CHILD.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// 1. A drain on another thread, in a softirq handler (a runtime without
//    tasklets: repaired by the child's first drain of the CPU).

static VEC_RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
const SLOW: Vector = Vector::new(2);
const FRESH: Vector = Vector::new(3);
static VEC_ENTERED: AtomicBool = AtomicBool::new(false);
static FRESH_RUNS: AtomicU32 = AtomicU32::new(0);

fn vector_drain_scenario() {
    VEC_RT
        .register(SLOW, "SLOW", |_| block_until_released(&VEC_ENTERED))
        .unwrap();
    VEC_RT
        .register(FRESH, "FRESH", |_| {
            FRESH_RUNS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let drainer = thread::spawn(|| {
        VEC_RT.raise(SLOW);
        VEC_RT.drain()
    });
    wait_for(&VEC_ENTERED);
    let pid = fork_child(|| {
        IN_CHILD.store(true, Ordering::SeqCst);
        VEC_RT.raise(FRESH);
        let outcome = VEC_RT.drain();
        check(
            outcome != DrainOutcome::Busy,
            1,
            "drain is Busy in the child",
        );
        check(
            FRESH_RUNS.load(Ordering::SeqCst) == 1,
            2,
            "new work did not run",
        );
        // And again: the CPU stays usable.
        VEC_RT.raise(FRESH);
        check(VEC_RT.drain().is_complete(), 3, "second drain");
        check(
            FRESH_RUNS.load(Ordering::SeqCst) == 2,
            4,
            "second raise did not run",
        );
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert_eq!(drainer.join().unwrap(), DrainOutcome::Complete);
    assert_child_ok(pid);
    assert_eq!(
        FRESH_RUNS.load(Ordering::SeqCst),
        0,
        "the parent never raised FRESH"
    );
}

#[test]
fn fork_during_a_softirq_drain_on_another_thread() {
    in_own_process(
        "fork_during_a_softirq_drain_on_another_thread",
        vector_drain_scenario,
    );
}

// ---------------------------------------------------------------------------
// 2. A tasklet pass on another thread: one tasklet runs (blocked), the next
//    one is on the list that drain took.

static TL_RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static TL_ENTERED: AtomicBool = AtomicBool::new(false);
static SLOW_RUNS: AtomicU32 = AtomicU32::new(0);
static NEXT_RUNS: AtomicU32 = AtomicU32::new(0);
static SLOW_T: Tasklet = Tasklet::new(&TL_RT, || {
    SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
    if !IN_CHILD.load(Ordering::SeqCst) {
        block_until_released(&TL_ENTERED);
    }
});
static NEXT_T: Tasklet = Tasklet::new(&TL_RT, || {
    NEXT_RUNS.fetch_add(1, Ordering::SeqCst);
});

fn tasklet_run_scenario() {
    let drainer = thread::spawn(|| {
        SLOW_T.schedule();
        NEXT_T.schedule(); // runs after SLOW_T, in the same pass
        TL_RT.drain()
    });
    wait_for(&TL_ENTERED);
    let pid = fork_child(|| {
        IN_CHILD.store(true, Ordering::SeqCst);
        check(NEXT_T.is_scheduled(), 1, "NEXT_T no longer pending");
        let outcome = TL_RT.drain();
        check(outcome.is_complete(), 2, "drain not complete in the child");
        check(
            NEXT_RUNS.load(Ordering::SeqCst) == 1,
            3,
            "the taken tasklet was lost",
        );
        // The run the parent was in does not exist here: SLOW_T is idle,
        // can be scheduled and runs.
        check(SLOW_T.schedule(), 4, "SLOW_T cannot be scheduled");
        check(TL_RT.drain().is_complete(), 5, "drain after schedule");
        check(
            SLOW_RUNS.load(Ordering::SeqCst) == 2,
            6,
            "SLOW_T did not run in the child",
        );
        // disable() and kill() do not wait for the parent's run.
        SLOW_T.disable();
        SLOW_T.enable();
        SLOW_T.kill();
        check(SLOW_T.is_killed(), 7, "kill");
        check(NEXT_T.schedule(), 8, "NEXT_T cannot be scheduled again");
        check(TL_RT.drain().is_complete(), 9, "last drain");
        check(
            NEXT_RUNS.load(Ordering::SeqCst) == 2,
            10,
            "NEXT_T did not run again",
        );
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert!(drainer.join().unwrap().is_complete());
    assert_child_ok(pid);
    // The parent is untouched by the child's repair.
    assert_eq!(
        (
            SLOW_RUNS.load(Ordering::SeqCst),
            NEXT_RUNS.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    SLOW_T.kill();
}

#[test]
fn fork_during_a_tasklet_run_on_another_thread() {
    in_own_process(
        "fork_during_a_tasklet_run_on_another_thread",
        tasklet_run_scenario,
    );
}

// ---------------------------------------------------------------------------
// 3. A top half on another thread between the tasklet's count CAS and its
//    push: a backend whose `current_cpu` (called by the push) parks the
//    gated thread until the fork is done.

struct Gate;

thread_local! {
    static GATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static AT_GATE: AtomicBool = AtomicBool::new(false);

impl Backend for Gate {
    fn current_cpu() -> usize {
        if GATED.with(|g| g.get()) {
            block_until_released(&AT_GATE);
        }
        0
    }
    fn now_ns() -> u64 {
        0
    }
}

static GATE_RT: Runtime<Gate, 1> = Runtime::new(Config::DEFAULT);
static GATE_RUNS: AtomicU32 = AtomicU32::new(0);
static GATE_T: Tasklet = Tasklet::new(&GATE_RT, || {
    GATE_RUNS.fetch_add(1, Ordering::SeqCst);
});

fn top_half_scenario() {
    let top_half = thread::spawn(|| {
        GATED.with(|g| g.set(true));
        GATE_T.schedule()
    });
    wait_for(&AT_GATE);
    let pid = fork_child(|| {
        IN_CHILD.store(true, Ordering::SeqCst);
        // Pending (count 1) in the state word; the push never happened.
        check(GATE_T.is_scheduled(), 1, "not pending");
        check(!GATE_T.schedule(), 2, "a second schedule is not coalesced");
        check(GATE_RT.drain().is_complete(), 3, "drain");
        check(
            GATE_RUNS.load(Ordering::SeqCst) == 1,
            4,
            "the half-linked tasklet was lost",
        );
        check(GATE_T.schedule(), 5, "cannot schedule after the run");
        check(GATE_RT.drain().is_complete(), 6, "drain");
        check(
            GATE_RUNS.load(Ordering::SeqCst) == 2,
            7,
            "did not run again",
        );
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert!(top_half.join().unwrap());
    assert!(GATE_RT.drain().is_complete());
    assert_eq!(GATE_RUNS.load(Ordering::SeqCst), 1);
    assert_child_ok(pid);
}

#[test]
fn fork_while_a_top_half_is_linking_a_tasklet() {
    in_own_process(
        "fork_while_a_top_half_is_linking_a_tasklet",
        top_half_scenario,
    );
}

// ---------------------------------------------------------------------------
// 4. Drain threads: one of them is inside a tasklet run at the fork. The
//    child drops the inherited handle (no join, no panic), spawns its own,
//    and they run new work.

static DT_RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
static DT_ENTERED: AtomicBool = AtomicBool::new(false);
static BLOCK_RUNS: AtomicU32 = AtomicU32::new(0);
static NEW_RUNS: AtomicU32 = AtomicU32::new(0);
static BLOCK_T: Tasklet = Tasklet::new(&DT_RT, || {
    BLOCK_RUNS.fetch_add(1, Ordering::SeqCst);
    if !IN_CHILD.load(Ordering::SeqCst) {
        block_until_released(&DT_ENTERED);
    }
});
static NEW_T: Tasklet = Tasklet::new(&DT_RT, || {
    NEW_RUNS.fetch_add(1, Ordering::SeqCst);
});

fn wait_runs(counter: &AtomicU32, n: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

static mut INHERITED: Option<bottomhalf::DrainThreads> = None;

fn drain_threads_scenario() {
    let drains = DT_RT.spawn_drain_threads().unwrap();
    BLOCK_T.schedule(); // CPU 0: wakes bh-drain/0, which blocks in it
    wait_for(&DT_ENTERED);
    // SAFETY: written here before the fork and read only by the child (a
    // copy of this memory); no other thread touches it.
    unsafe { INHERITED = Some(drains) };
    let pid = fork_child(|| {
        IN_CHILD.store(true, Ordering::SeqCst);
        // SAFETY: the child's own copy; it has one thread.
        let inherited = unsafe { (*core::ptr::addr_of_mut!(INHERITED)).take() };
        check(inherited.as_ref().map(|d| d.len()) == Some(2), 1, "handle");
        drop(inherited); // must neither join nor panic
        let own = DT_RT.spawn_drain_threads();
        check(own.is_ok(), 2, "spawn in the child");
        check(NEW_T.schedule(), 3, "schedule");
        check(
            wait_runs(&NEW_RUNS, 1),
            4,
            "the child's drain thread did not run new work",
        );
        // The run the parent's drain thread was in is gone: BLOCK_T can
        // run again here, and kill() returns.
        check(BLOCK_T.schedule(), 5, "BLOCK_T still running in the child");
        check(
            wait_runs(&BLOCK_RUNS, 2),
            6,
            "BLOCK_T did not run in the child",
        );
        BLOCK_T.kill();
        drop(own); // the child's own threads are stopped and joined
        check(
            NEW_T.schedule(),
            7,
            "schedule after the drain threads stopped",
        );
        check(DT_RT.drain().is_complete(), 8, "drain");
        check(
            NEW_RUNS.load(Ordering::SeqCst) == 2,
            9,
            "new work after stop",
        );
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert_child_ok(pid);
    // SAFETY: the parent's copy; only this thread touches it.
    let drains = unsafe { (*core::ptr::addr_of_mut!(INHERITED)).take() }.unwrap();
    assert!(wait_runs(&BLOCK_RUNS, 1));
    drop(drains); // the parent's threads are stopped and joined
    assert_eq!(NEW_RUNS.load(Ordering::SeqCst), 0);
}

#[test]
fn fork_with_drain_threads_one_inside_a_tasklet() {
    in_own_process(
        "fork_with_drain_threads_one_inside_a_tasklet",
        drain_threads_scenario,
    );
}

// ---------------------------------------------------------------------------
// 5. An `MpscMailbox` push that a producer on another parent thread had
//    reserved but not yet published at the fork (the producers copy 64 KiB
//    items, so a fork often lands inside a copy), and the consumer handle
//    that another parent thread holds (it takes it once and keeps it). In
//    the child: the handle is free, the unpublished ticket is stepped over
//    and counted as dropped (everything queued is popped or counted), and
//    every slot comes back.

const BIG: usize = 64 * 1024;
const MPSC_N: usize = 4;
static MB: bottomhalf::MpscMailbox<[u8; BIG], MPSC_N> = bottomhalf::MpscMailbox::new();
static STOP: AtomicBool = AtomicBool::new(false);
static HOLDING: AtomicBool = AtomicBool::new(false);
/// Children forked until this many found a half-done push (or `MAX_FORKS`).
const WANT_HALF_DONE: u32 = 3;
const MAX_FORKS: u32 = 400;
/// Child exit codes that report a repair (success).
const SKIPPED_ONE: i32 = 1;

fn mpsc_child() {
    IN_CHILD.store(true, Ordering::SeqCst);
    check(
        HOLDING.load(Ordering::SeqCst),
        53,
        "the parent's consumer thread did not hold the handle at the fork",
    );
    let Ok(mut rx) = MB.consumer() else {
        check(
            false,
            52,
            "the consumer handle a parent thread held is taken forever",
        );
        return;
    };
    let (queued, dropped) = (MB.len(), MB.dropped());
    let mut popped = 0;
    while rx.pop().is_some() {
        popped += 1;
    }
    let skipped = MB.dropped().wrapping_sub(dropped) as usize;
    check(
        queued == popped + skipped,
        54,
        "an item queued at the fork was neither popped nor counted as dropped",
    );
    check(MB.is_empty(), 50, "a reserved slot was never given back");
    // Every slot comes back: fill the mailbox and empty it, twice.
    for _ in 0..2 {
        let mut ok = 0;
        for _ in 0..MPSC_N {
            ok += usize::from(MB.push([1u8; BIG]).is_ok());
        }
        let mut got = 0;
        while rx.pop().is_some() {
            got += 1;
        }
        check(
            ok == MPSC_N && got == MPSC_N,
            51,
            "the consumer is wedged behind an unpublished slot",
        );
    }
    if skipped > 0 {
        // SAFETY: ends the child (as `fork_child` does), reporting the
        // repair of a half-done push.
        unsafe { libc::_exit(SKIPPED_ONE) };
    }
}

fn mpsc_scenario() {
    // Pushes only when there is room, so that much of its time is spent
    // inside a push, copying an item into its slot.
    let producers: Vec<_> = (0..2)
        .map(|_| {
            thread::Builder::new()
                .stack_size(8 << 20)
                .spawn(|| {
                    let item = Box::new([7u8; BIG]);
                    while !STOP.load(Ordering::SeqCst) {
                        if MB.len() < MPSC_N {
                            let _ = MB.push(*item);
                        } else {
                            thread::yield_now();
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    // Takes the consumer handle once and keeps it, popping, so every fork
    // finds the handle held by this thread.
    let consumer = thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let mut rx = MB.consumer().unwrap();
            HOLDING.store(true, Ordering::SeqCst);
            while !STOP.load(Ordering::SeqCst) {
                if rx.pop().is_none() {
                    thread::yield_now();
                }
            }
        })
        .unwrap();
    wait_for(&HOLDING);
    let (mut forks, mut half_done) = (0, 0);
    while forks < MAX_FORKS && half_done < WANT_HALF_DONE {
        thread::sleep(Duration::from_millis(1));
        let pid = fork_child(mpsc_child);
        forks += 1;
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is writable.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status),
            "child {forks} killed by signal {} (a hang ends with SIGALRM)",
            libc::WTERMSIG(status)
        );
        match libc::WEXITSTATUS(status) {
            0 => {}
            SKIPPED_ONE => half_done += 1,
            code => panic!("child {forks}: check {code} failed (see its stderr)"),
        }
    }
    STOP.store(true, Ordering::SeqCst);
    for p in producers {
        p.join().unwrap();
    }
    consumer.join().unwrap();
    println!(
        "mpsc: {forks} children, each took over the consumer handle a parent \
         thread held; {half_done} stepped over a push a parent thread had \
         reserved and not published (counted as dropped); none wedged"
    );
    assert!(
        half_done >= 1,
        "no fork landed inside a push in {forks} tries: the scenario did not test it"
    );
}

#[test]
fn fork_while_an_mpsc_push_is_half_done() {
    in_own_process("fork_while_an_mpsc_push_is_half_done", mpsc_scenario);
}

// ---------------------------------------------------------------------------
// 6. An event loop in the child (the `Signals` backend's event fd) after a
//    fork made while a parent drain thread was inside a vector handler of a
//    runtime without tasklets. The child's first `drain_all` finds nothing
//    pending, so no drain of the CPU repairs its `draining` flag; a raise
//    after it must still make the event fd readable.

#[cfg(target_os = "linux")]
static EV_RT: Runtime<bottomhalf::Signals, 256> = Runtime::new(Config::DEFAULT);
#[cfg(target_os = "linux")]
static EV_ENTERED: AtomicBool = AtomicBool::new(false);
#[cfg(target_os = "linux")]
static EV_RUNS: AtomicU32 = AtomicU32::new(0);
#[cfg(target_os = "linux")]
const EV_BLOCK: Vector = Vector::new(5);
#[cfg(target_os = "linux")]
const EV_WORK: Vector = Vector::new(8);

#[cfg(target_os = "linux")]
fn event_loop_scenario() {
    use std::os::fd::AsRawFd;

    EV_RT
        .register(EV_BLOCK, "BLOCK", |_| block_until_released(&EV_ENTERED))
        .unwrap();
    EV_RT
        .register(EV_WORK, "WORK", |_| {
            EV_RUNS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let drains = EV_RT.spawn_drain_threads().unwrap();
    let cpu = process::pin_to_first_allowed_cpu();
    assert!(cpu < drains.len(), "no drain thread for CPU {cpu}");
    // This CPU's drain thread takes BLOCK and stays in its handler.
    EV_RT.raise(EV_BLOCK);
    wait_for(&EV_ENTERED);
    let pid = fork_child(|| {
        IN_CHILD.store(true, Ordering::SeqCst);
        let fd = EV_RT.event_fd().unwrap().as_raw_fd();
        // The event loop: readable -> clear -> drain_all -> wait.
        let _ = EV_RT.clear_event_fd();
        check(EV_RT.drain_all().is_complete(), 1, "first drain_all");
        let _ = EV_RT.clear_event_fd();
        // A top half (called directly) raises on the pinned CPU.
        EV_RT.raise(EV_WORK);
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one valid pollfd for at most 2 s.
        let n = unsafe { libc::poll(&mut p, 1, 2000) };
        check(
            n == 1,
            2,
            "a raise after the first drain_all did not make the event fd readable",
        );
        check(EV_RT.clear_event_fd(), 3, "the event fd had no event");
        check(EV_RT.drain_all().is_complete(), 4, "second drain_all");
        check(EV_RUNS.load(Ordering::SeqCst) == 1, 5, "WORK did not run");
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert_child_ok(pid);
    drop(drains);
    assert_eq!(
        EV_RUNS.load(Ordering::SeqCst),
        0,
        "the parent never raised WORK"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_child_event_loop_gets_kicks_after_a_fork_during_a_drain() {
    in_own_process(
        "a_child_event_loop_gets_kicks_after_a_fork_during_a_drain",
        event_loop_scenario,
    );
}

// ---------------------------------------------------------------------------
// 7. A bottom half forks (as before an `exec`) while another parent thread
//    runs a tasklet of the same runtime: in the child that tasklet is not
//    running, runs again when scheduled, and `kill` returns. The child's
//    checks run after its copy of the forking drain has returned.

static BH_RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
static BH_ENTERED: AtomicBool = AtomicBool::new(false);
static BH_RUNS: AtomicU32 = AtomicU32::new(0);
static BH_SLOW: Tasklet = Tasklet::new(&BH_RT, || {
    BH_RUNS.fetch_add(1, Ordering::SeqCst);
    if !IN_CHILD.load(Ordering::SeqCst) {
        block_until_released(&BH_ENTERED);
    }
});
const BH_FORK: Vector = Vector::new(7);
/// The pid `fork` returned in `BH_FORK`'s handler (0 in the child).
static BH_PID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Forks from a bottom half; the child only sets itself up here (watchdog,
/// `IN_CHILD`) and goes on with the drain it forked in.
fn fork_in_bottom_half() {
    // SAFETY: as in `fork_child`; the child calls only the crate under
    // test, std's thread spawn and sleep, alarm and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm re-arms the child's own timer.
        unsafe { libc::alarm(CHILD_WATCHDOG) };
        IN_CHILD.store(true, Ordering::SeqCst);
    }
    BH_PID.store(pid as u32, Ordering::SeqCst);
}

/// Drains `rt` on this thread, where a bottom half forks and stores the
/// pid in `pid`. In the child (pid 0) it never returns: it runs `checks`
/// on the drain's outcome and `_exit`s with 0, or 100 if the drain or the
/// checks panicked (a panic must not unwind into the copy of the test
/// harness, whose other threads do not exist in the child: it would end
/// the child with status 0). In the parent it returns the outcome.
fn drain_and_check_child<B: Backend, const N: usize>(
    rt: &'static Runtime<B, N>,
    pid: &AtomicU32,
    checks: fn(DrainOutcome),
) -> DrainOutcome {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.drain()));
    if pid.load(Ordering::SeqCst) != 0 {
        return outcome.unwrap_or_else(|p| std::panic::resume_unwind(p));
    }
    let code = match outcome.map(|o| std::panic::catch_unwind(|| checks(o))) {
        Ok(Ok(())) => 0,
        _ => 100,
    };
    // SAFETY: ends the child without running the parent's atexit handlers
    // or flushing inherited stdio buffers.
    unsafe { libc::_exit(code) }
}

fn bottom_half_fork_scenario() {
    BH_RT
        .register(BH_FORK, "FORK", |_| fork_in_bottom_half())
        .unwrap();
    let other = thread::spawn(|| {
        let _cpu = BH_RT.bind_current_thread(1).unwrap();
        BH_SLOW.schedule();
        BH_RT.drain()
    });
    wait_for(&BH_ENTERED);
    let _cpu = BH_RT.bind_current_thread(0).unwrap();
    BH_RT.raise(BH_FORK);
    let outcome = drain_and_check_child(&BH_RT, &BH_PID, |outcome| {
        check(outcome.is_complete(), 1, "the forking drain");
        check(BH_SLOW.schedule(), 2, "BH_SLOW cannot be scheduled");
        check(BH_RT.drain().is_complete(), 3, "drain after schedule");
        check(
            BH_RUNS.load(Ordering::SeqCst) == 2,
            4,
            "BH_SLOW, running on another parent thread, did not run in the child",
        );
        // kill() must not wait for the parent's run.
        let killer = thread::spawn(|| BH_SLOW.kill());
        check(wait_joined(killer), 5, "kill() does not return");
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert!(outcome.is_complete());
    assert!(other.join().unwrap().is_complete());
    assert_child_ok(BH_PID.load(Ordering::SeqCst) as libc::pid_t);
    assert_eq!(BH_RUNS.load(Ordering::SeqCst), 1);
}

/// `true` if `h` finishes within 5 s (then it is joined).
fn wait_joined(h: thread::JoinHandle<()>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    h.join().is_ok()
}

#[test]
fn fork_from_a_bottom_half_repairs_a_tasklet_running_elsewhere() {
    in_own_process(
        "fork_from_a_bottom_half_repairs_a_tasklet_running_elsewhere",
        bottom_half_fork_scenario,
    );
}

// ---------------------------------------------------------------------------
// 8. A tasklet forks from its callback. The child goes on with that run:
//    the tasklet stays running until its callback returns there, the rest
//    of the list its drain took runs once, and the forking tasklet, which
//    another parent thread had scheduled again and taken onto its own
//    list (behind a tasklet it was running), is not lost.

/// A time budget the blocking callbacks do not exhaust: every drain here
/// runs to `Complete`.
static TF_RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT.time_budget_ns(60_000_000_000));
static TF_FORKER_IN: AtomicBool = AtomicBool::new(false);
static TF_OTHER_ENTERED: AtomicBool = AtomicBool::new(false);
static TF_FORKED: AtomicBool = AtomicBool::new(false);
static TF_FORKER_RUNS: AtomicU32 = AtomicU32::new(0);
static TF_AFTER_RUNS: AtomicU32 = AtomicU32::new(0);
static TF_OTHER_RUNS: AtomicU32 = AtomicU32::new(0);
static TF_PID: AtomicU32 = AtomicU32::new(u32::MAX);
/// The child's `disable` of the forking tasklet, started in its callback.
static mut TF_DISABLER: Option<thread::JoinHandle<()>> = None;

static TF_FORKER: Tasklet = Tasklet::new(&TF_RT, || {
    TF_FORKER_RUNS.fetch_add(1, Ordering::SeqCst);
    if TF_FORKED.swap(true, Ordering::SeqCst) {
        return;
    }
    TF_FORKER_IN.store(true, Ordering::SeqCst);
    // The other thread has taken [TF_OTHER, TF_FORKER] off CPU 1's list
    // and is inside TF_OTHER.
    wait_for(&TF_OTHER_ENTERED);
    // SAFETY: as in `fork_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    TF_PID.store(pid as u32, Ordering::SeqCst);
    if pid == 0 {
        // SAFETY: alarm re-arms the child's own timer.
        unsafe { libc::alarm(CHILD_WATCHDOG) };
        IN_CHILD.store(true, Ordering::SeqCst);
        // This run goes on in the child: `disable` waits for it to end.
        let disabler = thread::spawn(|| TF_FORKER.disable());
        thread::sleep(Duration::from_millis(50));
        check(
            !disabler.is_finished(),
            20,
            "disable() returned while the forking tasklet was still running",
        );
        // SAFETY: the child's own copy; it has one thread that touches it.
        unsafe { TF_DISABLER = Some(disabler) };
    }
});
static TF_AFTER: Tasklet = Tasklet::new(&TF_RT, || {
    TF_AFTER_RUNS.fetch_add(1, Ordering::SeqCst);
});
static TF_OTHER: Tasklet = Tasklet::new(&TF_RT, || {
    TF_OTHER_RUNS.fetch_add(1, Ordering::SeqCst);
    if !IN_CHILD.load(Ordering::SeqCst) {
        block_until_released(&TF_OTHER_ENTERED);
    }
});

fn tasklet_fork_scenario() {
    let other = thread::spawn(|| {
        let _cpu = TF_RT.bind_current_thread(1).unwrap();
        wait_for(&TF_FORKER_IN);
        TF_OTHER.schedule();
        // TF_FORKER runs on CPU 0: this schedule links it here again.
        assert!(TF_FORKER.schedule());
        TF_RT.drain()
    });
    let _cpu = TF_RT.bind_current_thread(0).unwrap();
    TF_FORKER.schedule();
    TF_AFTER.schedule(); // behind TF_FORKER on the list the drain takes
    let outcome = drain_and_check_child(&TF_RT, &TF_PID, |outcome| {
        check(
            outcome.is_complete(),
            1,
            &format!("the forking drain: {outcome:?}"),
        );
        // SAFETY: the child's own copy; it has one thread that touches it.
        let disabler = unsafe { (*core::ptr::addr_of_mut!(TF_DISABLER)).take() };
        check(
            disabler.is_some_and(wait_joined),
            2,
            "disable() did not return after the forking run ended",
        );
        check(
            TF_AFTER_RUNS.load(Ordering::SeqCst) == 1,
            3,
            "the rest of the forking drain's list did not run exactly once",
        );
        // The schedule the other parent thread had taken is pending
        // (parked by the disable): it runs once enabled.
        check(TF_FORKER.is_scheduled(), 4, "the forking tasklet was lost");
        TF_FORKER.enable();
        check(TF_RT.drain().is_complete(), 5, "drain after enable");
        check(
            TF_FORKER_RUNS.load(Ordering::SeqCst) == 2,
            6,
            "the forking tasklet's pending schedule did not run",
        );
        // The run the other parent thread was in is over here.
        check(TF_OTHER.schedule(), 7, "TF_OTHER cannot be scheduled");
        check(TF_RT.drain().is_complete(), 8, "drain");
        check(
            TF_OTHER_RUNS.load(Ordering::SeqCst) == 2,
            9,
            "TF_OTHER did not run in the child",
        );
        let killer = thread::spawn(|| TF_OTHER.kill());
        check(wait_joined(killer), 10, "kill() does not return");
        check(TF_AFTER.schedule(), 11, "TF_AFTER cannot be scheduled");
        check(TF_RT.drain().is_complete(), 12, "last drain");
        check(
            TF_AFTER_RUNS.load(Ordering::SeqCst) == 2,
            13,
            "TF_AFTER did not run again",
        );
    });
    RELEASE.store(true, Ordering::SeqCst);
    assert!(outcome.is_complete());
    assert!(other.join().unwrap().is_complete());
    assert_child_ok(TF_PID.load(Ordering::SeqCst) as libc::pid_t);
    // The parent: the forking run, then the other thread's hand-off.
    assert!(TF_RT.drain().is_complete());
    assert_eq!(
        (
            TF_FORKER_RUNS.load(Ordering::SeqCst),
            TF_AFTER_RUNS.load(Ordering::SeqCst),
            TF_OTHER_RUNS.load(Ordering::SeqCst)
        ),
        (2, 1, 1)
    );
}

#[test]
fn fork_from_a_tasklet_keeps_its_run_and_the_list_it_took() {
    in_own_process(
        "fork_from_a_tasklet_keeps_its_run_and_the_list_it_took",
        tasklet_fork_scenario,
    );
}

// ---------------------------------------------------------------------------
// 9. A bottom half of a runtime without tasklets forks. In the child the
//    drain it forked in goes on, so its CPU stays taken: a nested drain
//    there, or one from a thread the child starts, returns `Busy`, and the
//    forking drain runs the work after the handler returns.

/// As `TF_RT`: the forking pass (fork, a thread) does not run it out of
/// time, so the forking drain runs the work in its next pass.
static NS_RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT.time_budget_ns(60_000_000_000));
const NS_FORK: Vector = Vector::new(4);
const NS_WORK: Vector = Vector::new(5);
static NS_WORK_RUNS: AtomicU32 = AtomicU32::new(0);
static NS_PID: AtomicU32 = AtomicU32::new(u32::MAX);

fn nested_drain_scenario() {
    NS_RT
        .register(NS_FORK, "FORK", |_| {
            // SAFETY: as in `fork_child`.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            NS_PID.store(pid as u32, Ordering::SeqCst);
            if pid != 0 {
                return;
            }
            // SAFETY: alarm re-arms the child's own timer.
            unsafe { libc::alarm(CHILD_WATCHDOG) };
            IN_CHILD.store(true, Ordering::SeqCst);
            NS_RT.raise(NS_WORK);
            check(
                NS_RT.drain() == DrainOutcome::Busy,
                1,
                "a nested drain of the forking drain's CPU was let in",
            );
            let other = thread::spawn(|| NS_RT.drain()).join();
            check(
                other.is_ok_and(|o| o == DrainOutcome::Busy),
                2,
                "a child thread's drain of the forking drain's CPU was let in",
            );
            check(
                NS_WORK_RUNS.load(Ordering::SeqCst) == 0,
                3,
                "WORK ran inside the forking handler",
            );
        })
        .unwrap();
    NS_RT
        .register(NS_WORK, "WORK", |_| {
            NS_WORK_RUNS.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    NS_RT.raise(NS_FORK);
    let outcome = drain_and_check_child(&NS_RT, &NS_PID, |outcome| {
        check(outcome.is_complete(), 4, "the forking drain");
        check(
            NS_WORK_RUNS.load(Ordering::SeqCst) == 1,
            5,
            "the forking drain did not run WORK",
        );
        NS_RT.raise(NS_WORK);
        check(NS_RT.drain().is_complete(), 6, "a later drain");
        check(NS_WORK_RUNS.load(Ordering::SeqCst) == 2, 7, "WORK again");
    });
    assert!(outcome.is_complete());
    assert_child_ok(NS_PID.load(Ordering::SeqCst) as libc::pid_t);
    assert_eq!(NS_WORK_RUNS.load(Ordering::SeqCst), 0);
}

#[test]
fn a_child_keeps_the_cpu_of_the_drain_it_forked_in() {
    in_own_process(
        "a_child_keeps_the_cpu_of_the_drain_it_forked_in",
        nested_drain_scenario,
    );
}

// ---------------------------------------------------------------------------
// 10. The consumer handle that the forking thread itself holds: in the child
//    it keeps working until another handle is taken there (it re-adopts the
//    consumer token on its next pop); once another one is taken, it is dead
//    (pops nothing) and dropping it frees nothing.

static OWN: bottomhalf::MpscMailbox<u32, 4> = bottomhalf::MpscMailbox::new();
static mut OWN_RX: Option<bottomhalf::MpscConsumer<'static, u32, 4>> = None;

fn own_rx() -> &'static mut Option<bottomhalf::MpscConsumer<'static, u32, 4>> {
    // SAFETY: only the scenario's (and its child's) one thread touches it.
    unsafe { &mut *core::ptr::addr_of_mut!(OWN_RX) }
}

fn own_handle_scenario() {
    use bottomhalf::MailboxError::ConsumerTaken;
    *own_rx() = Some(OWN.consumer().unwrap());
    OWN.push(1).unwrap();
    OWN.push(2).unwrap();
    // A: the forking thread's handle keeps the mailbox.
    let a = fork_child(|| {
        let rx = own_rx().as_mut().unwrap();
        check(rx.pop() == Some(1), 60, "the forking thread's handle pops");
        check(
            OWN.consumer().err() == Some(ConsumerTaken),
            61,
            "a second handle while the forking thread's is alive",
        );
        check(rx.pop() == Some(2), 62, "the handle pops again");
        *own_rx() = None;
        let Ok(mut rx) = OWN.consumer() else {
            return check(false, 63, "dropping the handle freed the consumer");
        };
        OWN.push(3).unwrap();
        check(rx.pop() == Some(3), 64, "a new handle pops");
    });
    assert_child_ok(a);
    // B: a handle taken in the child first; the inherited one is dead.
    let b = fork_child(|| {
        let Ok(mut fresh) = OWN.consumer() else {
            return check(false, 70, "the child cannot take a handle");
        };
        let old = own_rx().as_mut().unwrap();
        check(old.pop().is_none(), 71, "the inherited handle still pops");
        check(fresh.pop() == Some(1), 72, "the new handle pops the oldest");
        *own_rx() = None;
        check(
            OWN.consumer().err() == Some(ConsumerTaken),
            73,
            "dropping the dead handle freed the live one's token",
        );
        check(fresh.pop() == Some(2), 74, "the new handle pops on");
        drop(fresh);
        check(OWN.consumer().is_ok(), 75, "the token is free again");
    });
    assert_child_ok(b);
    // The parent's handle is untouched by its children.
    let rx = own_rx().as_mut().unwrap();
    assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Some(1), Some(2), None));
}

#[test]
fn fork_while_the_forking_thread_holds_an_mpsc_consumer() {
    in_own_process(
        "fork_while_the_forking_thread_holds_an_mpsc_consumer",
        own_handle_scenario,
    );
}
