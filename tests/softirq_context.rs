//! Softirq handlers with a `'static` context (`Runtime::register_with`),
//! the backend's constant handler table (`Backend::HANDLERS`), and the
//! reserved tasklet vectors. Runs under miri too (`cargo +nightly miri test
//! --test softirq_context`): the context is type-erased inside the crate
//! (`fn(&'static C, usize)` called as `fn(*const (), usize)`), and miri
//! checks that call's ABI and the pointer's provenance.
//!
//! Every test has its own `static` runtime.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::thread;

use bottomhalf::{
    Backend, Config, DrainOutcome, Handlers, Host, RegisterError, Runtime, Vector, VectorError,
};

/// A device instance: one driver function serves several of them.
struct Uart {
    id: u32,
    rx: AtomicU32,
    /// The CPU the last run was on, plus one.
    last_cpu: AtomicUsize,
}

impl Uart {
    const fn new(id: u32) -> Uart {
        Uart {
            id,
            rx: AtomicU32::new(0),
            last_cpu: AtomicUsize::new(0),
        }
    }
}

fn uart_rx(uart: &'static Uart, cpu: usize) {
    uart.rx.fetch_add(uart.id, Ordering::Relaxed);
    uart.last_cpu.store(cpu + 1, Ordering::Relaxed);
}

const UART_RX: [Vector; 4] = [
    Vector::new(2),
    Vector::new(3),
    Vector::new(4),
    Vector::new(5),
];

#[test]
fn one_function_serves_four_instances_each_with_its_context() {
    static RT: Runtime<Host, 2> = Runtime::new(Config::DEFAULT);
    static UARTS: [Uart; 4] = [Uart::new(1), Uart::new(10), Uart::new(100), Uart::new(1000)];
    for (uart, v) in UARTS.iter().zip(UART_RX) {
        RT.register_with(v, "UART_RX", uart, uart_rx).unwrap();
    }
    // CPU 0: UARTs 0 and 2; CPU 1 (another thread): UART 3, twice.
    RT.raise(UART_RX[0]);
    RT.raise(UART_RX[2]);
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    thread::spawn(|| {
        let _cpu1 = RT.bind_current_thread(1).unwrap();
        RT.raise(UART_RX[3]);
        assert_eq!(RT.drain(), DrainOutcome::Complete);
        RT.raise(UART_RX[3]);
        assert_eq!(RT.drain(), DrainOutcome::Complete);
    })
    .join()
    .unwrap();
    let rx: Vec<u32> = UARTS.iter().map(|u| u.rx.load(Ordering::Relaxed)).collect();
    assert_eq!(rx, [1, 0, 100, 2000], "each run got its own instance");
    let cpus: Vec<usize> = UARTS
        .iter()
        .map(|u| u.last_cpu.load(Ordering::Relaxed))
        .collect();
    assert_eq!(
        cpus,
        [1, 0, 1, 2],
        "cpu argument (plus one) of each last run"
    );
    assert_eq!(RT.vector_name(UART_RX[1]), Some("UART_RX"));
    assert_eq!(RT.stats().runs(1, UART_RX[3]), 2);
}

#[test]
fn register_with_refuses_what_register_refuses_and_keeps_the_first() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static A: Uart = Uart::new(1);
    static B: Uart = Uart::new(2);
    const V: Vector = Vector::new(9);
    assert_eq!(
        RT.register_with(Vector::TASKLET, "T", &A, uart_rx),
        Err(RegisterError::Reserved(Vector::TASKLET))
    );
    RT.register_with(V, "A", &A, uart_rx).unwrap();
    assert_eq!(
        RT.register_with(V, "B", &B, uart_rx),
        Err(RegisterError::AlreadyRegistered(V))
    );
    assert_eq!(
        RT.register(V, "plain", |_| {}),
        Err(RegisterError::AlreadyRegistered(V))
    );
    RT.raise(V);
    assert!(RT.drain().is_complete());
    assert_eq!(
        (A.rx.load(Ordering::Relaxed), B.rx.load(Ordering::Relaxed)),
        (1, 0)
    );
    assert_eq!(RT.vector_name(V), Some("A"));
}

/// Plain and context handlers side by side, in index order in one pass.
#[test]
fn plain_and_context_handlers_run_in_index_order() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static ORDER: AtomicU32 = AtomicU32::new(0);
    static SEEN: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];
    fn record(slot: &'static AtomicU32, _cpu: usize) {
        slot.store(ORDER.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    RT.register_with(Vector::new(20), "C20", &SEEN[2], record)
        .unwrap();
    RT.register(Vector::new(8), "P8", |_| record(&SEEN[1], 0))
        .unwrap();
    RT.register_with(Vector::new(1), "C1", &SEEN[0], record)
        .unwrap();
    for v in [20, 8, 1] {
        RT.raise(Vector::new(v));
    }
    assert!(RT.drain().is_complete());
    let seen: Vec<u32> = SEEN.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    assert_eq!(seen, [1, 2, 3]);
    assert_eq!(RT.stats().restarts(0), 0, "one pass");
}

/// Liveness: a context handler that panics is counted, the drain passes the
/// panic on, and the vectors that pass had not run yet run in the next
/// drain.
#[test]
fn a_panicking_context_handler_leaves_the_rest_running() {
    static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
    static BAD: Uart = Uart::new(7);
    static GOOD: Uart = Uart::new(1);
    fn explode(uart: &'static Uart, _cpu: usize) {
        uart.rx.fetch_add(1, Ordering::Relaxed);
        panic!("uart {} overrun", uart.id);
    }
    const BAD_V: Vector = Vector::new(10);
    const GOOD_V: Vector = Vector::new(11);
    RT.register_with(BAD_V, "BAD", &BAD, explode).unwrap();
    RT.register_with(GOOD_V, "GOOD", &GOOD, uart_rx).unwrap();
    RT.raise(BAD_V);
    RT.raise(GOOD_V);
    let err = catch_unwind(AssertUnwindSafe(|| RT.drain())).unwrap_err();
    assert_eq!(err.downcast_ref::<String>().unwrap(), "uart 7 overrun");
    assert_eq!(RT.stats().panicked(0, BAD_V), 1);
    assert_eq!(
        RT.pending(0),
        1 << 11,
        "the vector not yet run is re-pended"
    );
    assert_eq!(RT.drain(), DrainOutcome::Complete);
    assert_eq!(GOOD.rx.load(Ordering::Relaxed), 1);
    assert_eq!(BAD.rx.load(Ordering::Relaxed), 1);
}

// ---------------------------------------------------------------------------
// The constant table.

static TABLE_TICKS: AtomicU32 = AtomicU32::new(0);
static TABLE_UARTS: [Uart; 2] = [Uart::new(1), Uart::new(10)];
const TICK: Vector = Vector::new(1);
const TABLE_UART0: Vector = Vector::new(12);
const TABLE_UART1: Vector = Vector::new(13);
const RUNTIME_V: Vector = Vector::new(14);

/// A one-CPU backend whose handlers are known at compile time.
struct Tabled;
impl Backend for Tabled {
    fn current_cpu() -> usize {
        0
    }
    fn now_ns() -> u64 {
        0
    }
    const HANDLERS: &'static Handlers = &Handlers::new()
        .with(TICK, "TICK", |_cpu| {
            TABLE_TICKS.fetch_add(1, Ordering::Relaxed);
        })
        .with_context(TABLE_UART0, "UART0", &TABLE_UARTS[0], uart_rx)
        .with_context(TABLE_UART1, "UART1", &TABLE_UARTS[1], uart_rx);
}

#[test]
fn table_handlers_run_without_register_and_own_their_vectors() {
    static RT: Runtime<Tabled, 1> = Runtime::new(Config::DEFAULT);
    static LATE: AtomicU32 = AtomicU32::new(0);
    // The first raise finds its handler: no register call was needed.
    RT.raise(TABLE_UART1);
    RT.raise(TICK);
    assert!(RT.drain().is_complete());
    assert_eq!(TABLE_TICKS.load(Ordering::Relaxed), 1);
    assert_eq!(TABLE_UARTS[1].rx.load(Ordering::Relaxed), 10);
    assert_eq!(TABLE_UARTS[0].rx.load(Ordering::Relaxed), 0);
    assert_eq!(RT.stats().unhandled(0, TABLE_UART1), 0);
    // The table's vectors cannot be registered over.
    for v in [TICK, TABLE_UART0, TABLE_UART1] {
        let e = RT.register(v, "over", |_| {}).unwrap_err();
        assert_eq!(e, RegisterError::InTable(v));
        assert_eq!(
            e.to_string(),
            format!(
                "softirq vector {} has a handler in the backend's constant table",
                v.index()
            )
        );
        assert_eq!(
            RT.register_with(v, "over", &LATE, |c, _| {
                c.fetch_add(1, Ordering::Relaxed);
            }),
            Err(RegisterError::InTable(v))
        );
    }
    // Other vectors register at run time next to the table.
    RT.register_with(RUNTIME_V, "LATE", &LATE, |c, _| {
        c.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    RT.raise(RUNTIME_V);
    RT.raise(TABLE_UART0);
    assert!(RT.drain().is_complete());
    assert_eq!(LATE.load(Ordering::Relaxed), 1);
    assert_eq!(TABLE_UARTS[0].rx.load(Ordering::Relaxed), 1);
    assert_eq!(RT.vector_name(TICK), Some("TICK"));
    assert_eq!(RT.vector_name(TABLE_UART0), Some("UART0"));
    assert_eq!(RT.vector_name(RUNTIME_V), Some("LATE"));
    assert_eq!(RT.vector_name(Vector::new(15)), None);
    assert_eq!(RT.vector_name(Vector::HI_TASKLET), Some("HI"));
    // A vector in neither is dropped and counted, as before.
    RT.raise(Vector::new(15));
    assert!(RT.drain().is_complete());
    assert_eq!(RT.stats().unhandled(0, Vector::new(15)), 1);
}

#[test]
fn the_table_reports_what_it_owns() {
    const H: Handlers = Handlers::new()
        .with(Vector::new(3), "A", |_| {})
        .with_context(Vector::new(31), "B", &TABLE_TICKS, |_, _| {});
    let owned: Vec<usize> = Vector::ALL
        .iter()
        .filter(|&&v| H.contains(v))
        .map(|v| v.index())
        .collect();
    assert_eq!(owned, [3, 31]);
    assert!(!H.is_empty());
    assert!(Handlers::NONE.is_empty());
    assert_eq!(format!("{H:?}"), r#"{3: "A", 31: "B"}"#);
}

#[test]
#[should_panic(expected = "vectors 0 and 6 drain tasklets and take no handler")]
fn a_table_entry_on_a_tasklet_vector_is_refused() {
    // In a `const` this is a compile-time error; at run time, a panic.
    let _ = std::hint::black_box(Handlers::new()).with(Vector::TASKLET, "T", |_| {});
}

#[test]
fn reserved_vectors_are_refused_by_number() {
    assert_eq!(Vector::try_new(0), Err(VectorError::Reserved { index: 0 }));
    assert_eq!(Vector::try_new(6), Err(VectorError::Reserved { index: 6 }));
    assert_eq!(
        Vector::try_new(32),
        Err(VectorError::OutOfRange { index: 32 })
    );
    // The constants still name them, for statistics.
    assert_eq!(Vector::ALL[0], Vector::HI_TASKLET);
    assert_eq!(Vector::ALL[6], Vector::TASKLET);
}
