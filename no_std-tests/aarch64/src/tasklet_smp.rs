// The tasklet scenario shared by `tasklet_smp` (polled drain flag) and
// `tasklet_smp_sgi` (drain SGI); see src/bin/tasklet_smp.rs for what it
// does and checks. Included by both binaries, which define `RT`, `T`,
// `NAME`, `DRAIN_BY`, `B` (the board), `board_init` and
// `drain_if_pended`.

/// Schedules per core per round.
const ROUNDS: u32 = 50_000;
/// Rounds run until some schedule found the tasklet running on another
/// core (so the cores overlapped), at most this many.
const MAX_ROUNDS: u32 = 40;

static INSIDE: AtomicBool = AtomicBool::new(false);
static OVERLAPS: AtomicU32 = AtomicU32::new(0);
static RUNS: AtomicU32 = AtomicU32::new(0);
static RAN_ON: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static QUEUED: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static FOLDED: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static SAW_RUNNING: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static DRAINS: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static DONE_SCHEDULING: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn sum(a: &[AtomicU32; CORES]) -> u32 {
    a.iter().map(|x| x.load(Ordering::Relaxed)).sum()
}

/// The identities of an idle tasklet after `rounds` rounds (core 0, all
/// cores at a barrier).
fn check_idle(rounds: u32) {
    let schedules = rounds * ROUNDS * CORES as u32;
    let (queued, folded) = (sum(&QUEUED), sum(&FOLDED));
    check_eq!(
        OVERLAPS.load(Ordering::Relaxed),
        0,
        "round {rounds}: the tasklet ran on two cores at once"
    );
    check!(
        !T.is_scheduled(),
        "round {rounds}: the tasklet is idle between rounds"
    );
    check_eq!(
        T.runs(),
        queued,
        "round {rounds}: runs() = schedules that returned true"
    );
    check_eq!(
        T.coalesced(),
        folded,
        "round {rounds}: coalesced() = schedules that returned false"
    );
    check_eq!(
        T.runs() + T.coalesced(),
        schedules,
        "round {rounds}: runs() + coalesced() = schedules"
    );
    check_eq!(
        RUNS.load(Ordering::Relaxed),
        T.runs(),
        "round {rounds}: the callback's own count = runs()"
    );
    check_eq!(
        sum(&RAN_ON),
        T.runs(),
        "round {rounds}: runs per core add up to runs()"
    );
}

fn callback() {
    // AcqRel: the swap that enters pairs with the Release store that left
    // the previous run (on any core).
    if INSIDE.swap(true, Ordering::AcqRel) {
        OVERLAPS.fetch_add(1, Ordering::Relaxed);
    }
    // Stay inside a while, so that other cores schedule and drain meanwhile.
    for _ in 0..200 {
        core::hint::spin_loop();
        if !INSIDE.load(Ordering::Relaxed) {
            OVERLAPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    RAN_ON[B::cpu() % CORES].fetch_add(1, Ordering::Relaxed);
    RUNS.fetch_add(1, Ordering::Relaxed);
    INSIDE.store(false, Ordering::Release);
}

fn scenario(cpu: usize) {
    board_init();
    if cpu == 0 {
        println!("{NAME}: {CORES} cores x {ROUNDS} schedules of one tasklet per round; drain: {DRAIN_BY}");
    }
    t::barrier();

    let mut rng = t::XorShift::new(0x68e3_1da4 ^ (cpu as u32 + 1).wrapping_mul(0x85eb_ca6b));
    let (mut queued, mut folded, mut saw) = (0u32, 0u32, 0u32);
    let mut round = 0u32;
    loop {
        for _ in 0..ROUNDS {
            if T.schedule() {
                queued += 1;
            } else {
                folded += 1;
            }
            // Not draining here: a run in progress is another core's.
            if INSIDE.load(Ordering::Relaxed) {
                saw += 1;
            }
            if rng.next_u32().is_multiple_of(2) {
                drain_if_pended(cpu);
            }
        }
        QUEUED[cpu].store(queued, Ordering::Relaxed);
        FOLDED[cpu].store(folded, Ordering::Relaxed);
        SAW_RUNNING[cpu].store(saw, Ordering::Relaxed);
        round += 1;
        // Release: pairs with the Acquire loads below on every core.
        DONE_SCHEDULING.fetch_add(1, Ordering::Release);
        loop {
            drain_if_pended(cpu);
            if DONE_SCHEDULING.load(Ordering::Acquire) == round * CORES as u32
                && RT.pending(cpu) == 0
                && !t::is_pended(cpu)
            {
                break;
            }
            core::hint::spin_loop();
        }
        t::barrier();
        if cpu == 0 {
            // Between rounds the tasklet is idle: the identities hold now.
            check_idle(round);
            let overlapped = sum(&SAW_RUNNING) > 0;
            STOP.store(overlapped || round == MAX_ROUNDS, Ordering::Relaxed);
        }
        t::barrier();
        if STOP.load(Ordering::Relaxed) {
            break;
        }
    }
    if cpu != 0 {
        return;
    }

    let s = RT.stats();
    for c in 0..CORES {
        println!(
            "cpu{c}: schedules {}: queued {} coalesced {}; saw it running elsewhere {}; ran it {}; drains {}",
            QUEUED[c].load(Ordering::Relaxed) + FOLDED[c].load(Ordering::Relaxed),
            QUEUED[c].load(Ordering::Relaxed),
            FOLDED[c].load(Ordering::Relaxed),
            SAW_RUNNING[c].load(Ordering::Relaxed),
            RAN_ON[c].load(Ordering::Relaxed),
            DRAINS[c].load(Ordering::Relaxed),
        );
        check_eq!(RT.pending(c), 0, "cpu {c}: pending at the end");
        check_eq!(
            s.misuse(c, Misuse::CpuOutOfRange),
            0,
            "cpu {c}: CPU index out of range"
        );
    }
    let rounds = DONE_SCHEDULING.load(Ordering::Relaxed) / CORES as u32;
    let schedules = rounds * ROUNDS * CORES as u32;
    println!("rounds: {rounds} (until the cores overlapped; at most {MAX_ROUNDS})");
    let (queued, folded) = (sum(&QUEUED), sum(&FOLDED));
    let overlaps = OVERLAPS.load(Ordering::Relaxed);
    let saw = sum(&SAW_RUNNING);
    println!(
        "tasklet: runs {} + coalesced {} = {} schedules",
        T.runs(),
        T.coalesced(),
        T.runs() + T.coalesced()
    );
    println!("tasklet: schedules that returned true {queued}, false {folded}");
    println!(
        "tasklet: runs counted by the callback {}",
        RUNS.load(Ordering::Relaxed)
    );
    println!("tasklet: runs on two cores at once {overlaps}");
    println!("tasklet: schedules that found it running on another core {saw}");
    println!(
        "tasklet: idle at the end: {}",
        !T.is_scheduled() && !INSIDE.load(Ordering::Relaxed)
    );
    check_eq!(overlaps, 0, "the tasklet ran on two cores at once");
    check_eq!(T.runs(), queued, "runs() = schedules that returned true");
    check_eq!(
        T.coalesced(),
        folded,
        "coalesced() = schedules that returned false"
    );
    check_eq!(
        T.runs() + T.coalesced(),
        schedules,
        "runs() + coalesced() = schedules"
    );
    check_eq!(
        RUNS.load(Ordering::Relaxed),
        T.runs(),
        "the callback's own count = runs()"
    );
    check_eq!(sum(&RAN_ON), T.runs(), "runs per core add up to runs()");
    check!(!T.is_scheduled(), "the tasklet ends idle");
    check!(
        saw > 0,
        "no schedule found the tasklet running on another core: the cores never overlapped"
    );
    println!("{NAME}: ok");
}
