//! Bad input gives a clear `Err` or a documented panic at set-up, never UB,
//! and leaves the object usable. On top-half paths misuse never panics: it
//! is counted ([`bottomhalf::Misuse`]) and ignored.

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bottomhalf::{
    Backend, Config, CpuOutOfRange, DrainOutcome, Host, Mailbox, MailboxError, Misuse, MpscMailbox,
    PerCpu, RegisterError, Runtime, Tasklet, TaskletKilled, Vector, VectorError, MAX_VECTORS,
};

/// The message of a panic payload (`String` or `&str`).
fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        panic!("panic payload is not a string")
    }
}

/// The panic message of `f`, which must panic.
#[track_caller]
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    payload_message(&*payload)
}

// ---------------------------------------------------------------------------
// Vectors.

#[test]
fn vector_try_new_out_of_range_is_an_error_with_a_clear_message() {
    assert_eq!(MAX_VECTORS, 32);
    assert_eq!(Vector::try_new(31).map(Vector::index), Ok(31));
    let e = Vector::try_new(32).unwrap_err();
    assert_eq!(e, VectorError::OutOfRange { index: 32 });
    assert_eq!(e.to_string(), "softirq vector 32 out of range (0..=31)");
    assert_eq!(
        Vector::try_new(usize::MAX).unwrap_err().to_string(),
        format!("softirq vector {} out of range (0..=31)", usize::MAX)
    );
    // A vector index that would wrap a u8 is refused too, not truncated.
    assert_eq!(
        Vector::try_new(256 + 3),
        Err(VectorError::OutOfRange { index: 259 })
    );
}

#[test]
#[should_panic(expected = "softirq vector index out of range: a runtime has 32 vectors (0..=31)")]
fn vector_new_out_of_range_panics_at_run_time() {
    let _ = Vector::new(black_box(32));
}

#[test]
fn vector_try_new_refuses_the_tasklet_vectors() {
    for index in [0, 6] {
        let e = Vector::try_new(index).unwrap_err();
        assert_eq!(e, VectorError::Reserved { index });
        assert_eq!(
            e.to_string(),
            format!(
                "softirq vector {index} drains tasklets (use Vector::HI_TASKLET or Vector::TASKLET)"
            )
        );
    }
    // Every other index below 32 is a vector of its own.
    let ok = (0..MAX_VECTORS)
        .filter(|&i| Vector::try_new(i).is_ok())
        .count();
    assert_eq!(ok, MAX_VECTORS - 2);
}

#[test]
#[should_panic(expected = "softirq vectors 0 and 6 drain tasklets")]
fn vector_new_of_a_tasklet_vector_panics_at_run_time() {
    let _ = Vector::new(black_box(6));
}

#[test]
fn register_on_the_tasklet_vectors_is_refused() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    for v in [Vector::HI_TASKLET, Vector::TASKLET] {
        let e = RT.register(v, "mine", |_| {}).unwrap_err();
        assert_eq!(e, RegisterError::Reserved(v));
        assert_eq!(
            e.to_string(),
            format!("softirq vector {} is reserved for tasklets", v.index())
        );
    }
    assert_eq!(RT.vector_name(Vector::HI_TASKLET), Some("HI"));
    assert_eq!(RT.vector_name(Vector::TASKLET), Some("TASKLET"));
}

#[test]
fn register_twice_is_refused_and_the_first_handler_stays() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static FIRST: AtomicU32 = AtomicU32::new(0);
    static SECOND: AtomicU32 = AtomicU32::new(0);
    const V: Vector = Vector::new(4);
    RT.register(V, "FIRST", |_| {
        FIRST.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let e = RT
        .register(V, "SECOND", |_| {
            SECOND.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap_err();
    assert_eq!(e, RegisterError::AlreadyRegistered(V));
    assert_eq!(e.to_string(), "softirq vector 4 already has a handler");
    assert_eq!(RT.vector_name(V), Some("FIRST"));
    RT.raise(V);
    assert!(RT.drain().is_complete());
    assert_eq!(
        (FIRST.load(Ordering::SeqCst), SECOND.load(Ordering::SeqCst)),
        (1, 0)
    );
}

/// Raising a vector without a handler is counted as unhandled at the drain,
/// not run, and does not leave work behind.
#[test]
fn raise_without_handler_is_counted_unhandled_not_run() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    const ORPHAN: Vector = Vector::new(12);
    RT.raise(ORPHAN);
    RT.raise(ORPHAN);
    assert_eq!(RT.pending(0), 1 << 12);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RT.pending(0), 0);
    let s = RT.stats();
    assert_eq!(s.runs(0, ORPHAN), 0);
    assert_eq!(s.unhandled(0, ORPHAN), 1);
    assert_eq!(s.coalesced(0, ORPHAN), 1);
    assert_eq!(s.raised(0, ORPHAN), 2);
    assert_eq!(s.restarts(0), 0);
    assert_eq!(RT.vector_name(ORPHAN), None);
    // Registering later makes the next raise run.
    RT.register(ORPHAN, "LATE", |_| {}).unwrap();
    RT.raise(ORPHAN);
    assert!(RT.drain().is_complete());
    assert_eq!(
        (RT.stats().runs(0, ORPHAN), RT.stats().unhandled(0, ORPHAN)),
        (1, 1)
    );
}

// ---------------------------------------------------------------------------
// CPU indices.

#[test]
fn bind_current_thread_out_of_range_is_an_error_and_keeps_the_binding() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    let e = RT.bind_current_thread(2).unwrap_err();
    assert_eq!(e, CpuOutOfRange { cpu: 2, cpus: 2 });
    assert_eq!(
        e.to_string(),
        "CPU index 2 out of range: the runtime was built for 2 CPU(s)"
    );
    assert_eq!(Host::current_cpu(), 0);
    let _cpu1 = RT.bind_current_thread(1).unwrap();
    assert!(RT.bind_current_thread(usize::MAX).is_err());
    assert_eq!(Host::current_cpu(), 1, "a refused binding changes nothing");
}

#[test]
fn percpu_get_out_of_range_panics_with_the_numbers() {
    let p: PerCpu<u8, 2> = PerCpu::from_fn(|c| c as u8);
    assert_eq!(p.try_get(2), Err(CpuOutOfRange { cpu: 2, cpus: 2 }));
    let msg = panic_message(|| {
        let _ = p.get(black_box(2));
    });
    assert_eq!(
        msg,
        "CPU index 2 out of range: the runtime was built for 2 CPU(s)"
    );
    assert_eq!(*p.get(1), 1);
}

#[test]
fn runtime_accessors_with_a_cpu_out_of_range_panic_with_the_numbers() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    let expected = "CPU index 5 out of range: the runtime was built for 2 CPU(s)";
    assert_eq!(
        panic_message(|| {
            let _ = RT.pending(black_box(5));
        }),
        expected
    );
    assert_eq!(
        panic_message(|| {
            let _ = RT.stats().runs(black_box(5), Vector::TASKLET);
        }),
        expected
    );
    assert_eq!(
        panic_message(|| {
            let _ = RT.stats().restarts(black_box(5));
        }),
        expected
    );
}

/// A backend that reports a CPU the runtime does not have: `raise`,
/// `schedule` and `drain` neither panic nor touch memory out of bounds; they
/// use CPU 7 % 2 = 1 and count the misuse there.
#[test]
fn backend_reporting_a_bad_cpu_is_folded_into_range_and_counted() {
    use std::sync::atomic::{AtomicU32, Ordering};
    struct Broken;
    impl Backend for Broken {
        fn current_cpu() -> usize {
            7
        }
        fn now_ns() -> u64 {
            0
        }
    }
    static RT: Runtime<Broken, 2> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    RT.register(Vector::new(3), "V", |_| {
        RUNS.fetch_add(10, Ordering::SeqCst);
    })
    .unwrap();
    RT.raise(Vector::new(3));
    assert_eq!(RT.pending(1), 1 << 3, "landed on CPU 7 % 2");
    assert!(T.schedule());
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(RUNS.load(Ordering::SeqCst), 11);
    assert_eq!(RT.stats().misuse(1, Misuse::CpuOutOfRange), 3);
}

// ---------------------------------------------------------------------------
// Tasklets.

#[test]
fn enable_without_disable_is_counted_and_leaves_the_tasklet_usable() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || {});
    T.enable();
    assert_eq!(RT.stats().misuse(0, Misuse::UnbalancedEnable), 1);
    assert!(!T.is_disabled());
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);

    // One enable too many after a balanced pair.
    T.disable_nosync();
    T.enable();
    T.enable();
    assert_eq!(RT.stats().misuse(0, Misuse::UnbalancedEnable), 2);
    assert!(!T.is_disabled());
}

/// Nested disables beyond the count's width saturate and are counted,
/// instead of wrapping into the state's flag bits.
#[test]
fn disable_count_overflow_saturates_and_is_counted() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || {});
    let mut disables = 0u32;
    while RT.stats().misuse(0, Misuse::DisableOverflow) == 0 {
        T.disable_nosync();
        disables += 1;
        assert!(disables <= 1 << 16, "no limit on nested disables");
    }
    let held = disables - 1;
    assert_eq!(held, 511, "nested disables the count holds");
    // The count did not wrap into the flag bits.
    assert!(T.is_disabled());
    assert!(!T.is_killed());
    assert!(!T.is_scheduled());
    assert!(T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0, "still disabled");
    for _ in 0..held {
        T.enable();
    }
    assert!(!T.is_disabled());
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 1);
}

#[test]
fn schedule_after_kill_is_refused() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || panic!("a killed tasklet ran"));
    T.kill();
    assert!(T.is_killed());
    assert_eq!(T.try_schedule(), Err(TaskletKilled));
    assert_eq!(
        TaskletKilled.to_string(),
        "tasklet was killed; it cannot be scheduled again"
    );
    assert!(!T.schedule());
    assert!(!T.schedule());
    assert!(!T.is_scheduled());
    assert_eq!(
        T.coalesced(),
        0,
        "a refused schedule is not a coalesced one"
    );
    assert_eq!(RT.pending(0), 0, "nothing was queued");
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
    // Killing again is harmless.
    T.kill();
    assert_eq!(T.try_schedule(), Err(TaskletKilled));
}

#[test]
fn schedule_after_kill_of_a_pending_tasklet_is_refused() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static T: Tasklet = Tasklet::new(&RT, || panic!("a killed tasklet ran"));
    assert!(T.schedule());
    T.kill();
    // Still linked on CPU 0's list until the drain unlinks it.
    assert_eq!(T.try_schedule(), Err(TaskletKilled));
    assert!(!T.schedule());
    assert!(RT.drain().is_complete());
    assert_eq!(T.try_schedule(), Err(TaskletKilled));
    assert!(RT.drain().is_complete());
    assert_eq!(T.runs(), 0);
}

// ---------------------------------------------------------------------------
// Mailboxes.

#[test]
fn mailbox_split_twice_is_refused() {
    static MB: Mailbox<u32, 4> = Mailbox::new();
    let (mut tx, mut rx) = MB.split().unwrap();
    let e = MB.split().unwrap_err();
    assert_eq!(e, MailboxError::AlreadySplit);
    assert_eq!(
        e.to_string(),
        "mailbox already split: it has exactly one producer and one consumer"
    );
    // The first pair still works.
    tx.push(1).unwrap();
    assert_eq!(rx.pop(), Some(1));
}

#[test]
fn mpsc_consumer_twice_is_refused_while_the_first_lives() {
    static MB: MpscMailbox<u32, 4> = MpscMailbox::new();
    let mut rx = MB.consumer().unwrap();
    let e = MB.consumer().unwrap_err();
    assert_eq!(e, MailboxError::ConsumerTaken);
    assert_eq!(e.to_string(), "mailbox already has a live consumer");
    MB.push(1).unwrap();
    assert_eq!(rx.pop(), Some(1));
    drop(rx);
    assert!(MB.consumer().is_ok());
}

#[test]
fn full_mailboxes_hand_the_item_back() {
    static MB: Mailbox<String, 2> = Mailbox::new();
    let (mut tx, _rx) = MB.split().unwrap();
    tx.push("kept".to_owned()).unwrap();
    assert_eq!(tx.push("returned".to_owned()), Err("returned".to_owned()));
    assert_eq!(MB.dropped(), 1);

    static MPSC: MpscMailbox<String, 1> = MpscMailbox::new();
    MPSC.push("kept".to_owned()).unwrap();
    assert_eq!(MPSC.push("returned".to_owned()), Err("returned".to_owned()));
    assert_eq!(MPSC.dropped(), 1);
}

/// Binding is per thread, not per runtime: a thread bound to CPU 3 through
/// a 4-CPU runtime that schedules a tasklet of a 2-CPU runtime lands on
/// CPU 3 % 2 = 1 of the small runtime (counted), whose drain runs it.
#[test]
fn schedule_on_a_cpu_out_of_range_lands_on_a_drained_cpu() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static BIG: Runtime<Host, 4> = Runtime::new(Config::DEFAULT);
    static SMALL: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&SMALL, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });

    std::thread::spawn(|| {
        let _cpu3 = BIG.bind_current_thread(3).unwrap();
        assert!(T.schedule());
    })
    .join()
    .unwrap();
    assert_eq!(SMALL.stats().misuse(1, Misuse::CpuOutOfRange), 1);
    assert!(T.is_scheduled());
    std::thread::spawn(|| {
        let _cpu1 = SMALL.bind_current_thread(1).unwrap();
        assert!(SMALL.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert!(T.schedule());
    assert!(SMALL.drain().is_complete());
    assert_eq!(RUNS.load(Ordering::SeqCst), 2);
}

/// `irq_exit` without `irq_enter` returns `None` and is counted.
#[test]
fn irq_exit_without_irq_enter_is_counted() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    assert_eq!(RT.irq_exit(), None);
    assert_eq!(RT.stats().misuse(0, Misuse::UnbalancedIrqExit), 1);
}

/// After that misuse, interrupt entry and exit must still pair up: the
/// next outermost `irq_exit` drains (the ignored exit must not leave the
/// depth wrapped to `u32::MAX`).
#[test]
fn irq_exit_without_irq_enter_leaves_the_depth_intact() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(RT.irq_exit(), None);
    let outcome = catch_unwind(|| {
        RT.irq_enter();
        T.schedule();
        RT.irq_exit()
    });
    assert_eq!(
        outcome.ok(),
        Some(Some(DrainOutcome::Complete)),
        "a matched pair after the misuse must drain"
    );
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

/// The same for `enable`: an enable that unparks the tasklet on a CPU out
/// of range links it on CPU 3 % 2 = 1, whose drain runs the held run.
#[test]
fn enable_on_a_cpu_out_of_range_lands_on_a_drained_cpu() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static BIG: Runtime<Host, 4> = Runtime::new(Config::DEFAULT);
    static SMALL: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&SMALL, || {
        RUNS.fetch_add(1, Ordering::SeqCst);
    });
    T.disable_nosync();
    assert!(T.schedule());
    assert!(SMALL.drain().is_complete()); // parks it
    std::thread::spawn(|| {
        let _cpu3 = BIG.bind_current_thread(3).unwrap();
        T.enable();
    })
    .join()
    .unwrap();
    assert!(!T.is_disabled());
    assert_eq!(SMALL.stats().misuse(1, Misuse::CpuOutOfRange), 1);
    std::thread::spawn(|| {
        let _cpu1 = SMALL.bind_current_thread(1).unwrap();
        assert!(SMALL.drain().is_complete());
    })
    .join()
    .unwrap();
    assert_eq!(RUNS.load(Ordering::SeqCst), 1, "the held run was lost");
}

// ---------------------------------------------------------------------------
// A bottom half that panics.

/// A softirq handler that panics: the panic reaches the caller of `drain`
/// (nothing documents otherwise), and the CPU must still drain afterwards:
/// the drain's `draining` flag must not stay set (every later drain on that
/// CPU would return `Busy` and its work would never run).
#[test]
fn a_panicking_handler_does_not_wedge_the_cpu() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static RUNS: AtomicU32 = AtomicU32::new(0);
    const BAD: Vector = Vector::new(2);
    const GOOD: Vector = Vector::new(3);
    RT.register(BAD, "BAD", |_| {
        if RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("handler failed");
        }
    })
    .unwrap();
    RT.register(GOOD, "GOOD", |_| {
        RUNS.fetch_add(100, Ordering::SeqCst);
    })
    .unwrap();
    RT.raise(BAD);
    assert_eq!(
        panic_message(|| {
            let _ = RT.drain();
        }),
        "handler failed"
    );
    RT.raise(GOOD);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        101,
        "GOOD ran once, BAD was not re-run"
    );
}

/// A tasklet callback that panics: afterwards the tasklet must not be left
/// "running" for good (its next run would be re-queued forever, and
/// `disable`/`kill` would spin forever), and the tasklets taken off the
/// list with it must not be stranded.
#[test]
fn a_panicking_tasklet_does_not_stay_running() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT.max_restart(2));
    static CALLS: AtomicU32 = AtomicU32::new(0);
    static T: Tasklet = Tasklet::new(&RT, || {
        if CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("callback failed");
        }
    });
    static BEHIND: Tasklet = Tasklet::new(&RT, || {});
    assert!(T.schedule());
    assert!(BEHIND.schedule()); // on the same list, after T
    assert_eq!(
        panic_message(|| {
            let _ = RT.drain();
        }),
        "callback failed"
    );
    // CPU 0 drains again and runs the tasklet that was behind T.
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(BEHIND.runs(), 1, "the rest of the list was stranded");
    // On CPU 1 too: the next schedule of T runs once.
    std::thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        assert!(T.schedule());
        assert_eq!(RT.drain(), DrainOutcome::Complete);
    })
    .join()
    .unwrap();
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    // Not "running": disable returns.
    T.disable();
    T.enable();
}
