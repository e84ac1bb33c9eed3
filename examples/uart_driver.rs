//! A four-UART driver, written the way a firmware or Linux driver is: one
//! `struct Uart` per instance, in `static`s, and one function per stage for
//! all four instances. Each instance's tasklet and work item are bound to
//! the instance itself (`Tasklet::with_context`, `Work::with_context`),
//! so the bottom half gets `&'static Uart` and needs no table lookup, no
//! per-instance function and no `unsafe`.
//!
//! - Top half (`uart_isr`): moves up to 8 bytes from the (simulated)
//!   receive FIFO into the instance's mailbox and schedules its RX tasklet.
//!   Two "interrupt" threads stand in for the interrupt lines, each bound
//!   to a CPU as an IRQ affinity would (UART0 and UART1 on CPU 0, UART2 and
//!   UART3 on CPU 1). The simulated line is flow-controlled (RTS/CTS): the
//!   device sends only while the driver's buffer has room.
//! - Bottom half (`uart_rx_bh`, a tasklet): pops the bytes, checks each
//!   against what this instance's line carries, and when a line is
//!   complete queues the instance's work item.
//! - Process context (`uart_deliver`, a work item): hands the complete
//!   lines to the "application" (counts them).
//!
//! At the end it prints per-instance counts and exits 0 only if they are
//! exact: every byte received once, in order, by its own instance; runs +
//! coalesced schedules = interrupts; every line delivered.
//!
//! Run: `cargo run --example uart_driver`

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bottomhalf::{Config, Host, MpscMailbox, Runtime, Tasklet, Work, Workqueue};

const CPUS: usize = 2;
static RT: Runtime<Host, CPUS> = Runtime::new(Config::DEFAULT);

/// Bytes the driver buffers between top and bottom half, per instance.
const RX_BUF: usize = 64;
/// Bytes the top half moves per interrupt, at most (the FIFO's depth).
const FIFO_DEPTH: u64 = 8;
/// Each line on the wire: `U<n> <6-digit sequence>\n`.
const LINE_LEN: u64 = 10;

/// One UART instance.
struct Uart {
    /// Instance number (what its line carries).
    index: u8,
    /// The register block, as a firmware driver would hold it (unused by
    /// the simulation).
    #[allow(dead_code)]
    base: usize,
    /// Lines the simulated remote end sends.
    lines_to_send: u64,

    // The simulated wire: bytes the remote end has sent so far.
    sent: AtomicU64,

    // Top half -> bottom half.
    rx_buf: MpscMailbox<u8, RX_BUF>,
    rx_tasklet: Tasklet,
    interrupts: AtomicU32,
    overruns: AtomicU32,

    // Bottom half state (the tasklet never runs on two CPUs at once, so
    // Relaxed atomics suffice; they are atomics because the struct is
    // shared).
    received: AtomicU64,
    mismatches: AtomicU32,
    lines_ready: AtomicU32,

    // Bottom half -> process context.
    deliver_work: Work,
    lines_delivered: AtomicU32,
}

macro_rules! uart {
    ($name:ident, $index:expr, $base:expr, $lines:expr) => {
        static $name: Uart = Uart {
            index: $index,
            base: $base,
            lines_to_send: $lines,
            sent: AtomicU64::new(0),
            rx_buf: MpscMailbox::new(),
            rx_tasklet: Tasklet::with_context(&RT, &$name, uart_rx_bh),
            interrupts: AtomicU32::new(0),
            overruns: AtomicU32::new(0),
            received: AtomicU64::new(0),
            mismatches: AtomicU32::new(0),
            lines_ready: AtomicU32::new(0),
            deliver_work: Work::with_context(
                concat!(stringify!($name), "-deliver"),
                &$name,
                uart_deliver,
            ),
            lines_delivered: AtomicU32::new(0),
        };
    };
}

// Four instances; each line carries a different amount, so a byte or a
// run routed to the wrong instance shows in the counts.
uart!(UART0, 0, 0x4000_c000, 400);
uart!(UART1, 1, 0x4000_d000, 800);
uart!(UART2, 2, 0x4000_e000, 1_200);
uart!(UART3, 3, 0x4000_f000, 1_600);
static UARTS: [&Uart; 4] = [&UART0, &UART1, &UART2, &UART3];

/// The process-context queue the bottom halves hand lines to.
static WQ: std::sync::OnceLock<Workqueue> = std::sync::OnceLock::new();

/// Byte `pos` of what UART `index`'s line carries.
fn wire_byte(index: u8, pos: u64) -> u8 {
    let (seq, k) = (pos / LINE_LEN, pos % LINE_LEN);
    match k {
        0 => b'U',
        1 => b'0' + index,
        2 => b' ',
        9 => b'\n',
        // Digits 3..=8: the sequence number, most significant first.
        _ => b'0' + ((seq / 10u64.pow(8 - k as u32)) % 10) as u8,
    }
}

impl Uart {
    fn total_bytes(&self) -> u64 {
        self.lines_to_send * LINE_LEN
    }
}

/// The interrupt handler of every UART: drain the FIFO into the driver's
/// buffer, schedule the bottom half. Never blocks, never allocates.
fn uart_isr(uart: &'static Uart) {
    uart.interrupts.fetch_add(1, Ordering::Relaxed);
    let sent = uart.sent.load(Ordering::Relaxed);
    let n = FIFO_DEPTH.min(uart.total_bytes() - sent);
    for pos in sent..sent + n {
        if uart.rx_buf.push(wire_byte(uart.index, pos)).is_err() {
            uart.overruns.fetch_add(1, Ordering::Relaxed);
        }
    }
    uart.sent.store(sent + n, Ordering::Relaxed);
    uart.rx_tasklet.schedule();
}

/// The RX bottom half of every UART.
fn uart_rx_bh(uart: &'static Uart) {
    let Ok(rx) = uart.rx_buf.consumer() else {
        return; // only this tasklet consumes; never taken
    };
    let mut pos = uart.received.load(Ordering::Relaxed);
    let mut lines = 0;
    for byte in rx {
        if byte != wire_byte(uart.index, pos) {
            uart.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if byte == b'\n' {
            lines += 1;
        }
        pos += 1;
    }
    uart.received.store(pos, Ordering::Relaxed);
    if lines != 0 {
        uart.lines_ready.fetch_add(lines, Ordering::Release);
        WQ.get()
            .expect("the workqueue starts before the interrupts")
            .queue(&uart.deliver_work);
    }
}

/// Process context: deliver the complete lines (may sleep, lock, allocate).
fn uart_deliver(uart: &'static Uart, _work: &Work) {
    let lines = uart.lines_ready.swap(0, Ordering::Acquire);
    uart.lines_delivered.fetch_add(lines, Ordering::Relaxed);
}

/// One interrupt line per UART, routed to `cpu`: fire while the remote end
/// has bytes to send and the driver's buffer has room for a FIFO's worth.
fn interrupt_source(cpu: usize, uarts: [&'static Uart; 2]) {
    let _cpu = RT.bind_current_thread(cpu).expect("cpu < CPUS");
    loop {
        let mut busy = false;
        for uart in uarts {
            let left = uart.sent.load(Ordering::Relaxed) < uart.total_bytes();
            busy |= left;
            // RTS/CTS: the remote end sends only while there is room.
            if left && uart.rx_buf.len() + FIFO_DEPTH as usize <= RX_BUF {
                uart_isr(uart);
            }
        }
        if !busy {
            return;
        }
        thread::yield_now();
    }
}

fn main() -> ExitCode {
    let wq = WQ.get_or_init(|| {
        Workqueue::builder("uart-deliver")
            .threads(1)
            .build()
            .expect("workqueue threads")
    });
    let drains = RT.spawn_drain_threads().expect("drain threads");
    println!(
        "4 UARTs, one top half, one bottom half, one work function; interrupts on {CPUS} CPUs..."
    );
    let t0 = Instant::now();
    let sources = [
        thread::spawn(|| interrupt_source(0, [&UART0, &UART1])),
        thread::spawn(|| interrupt_source(1, [&UART2, &UART3])),
    ];
    for s in sources {
        s.join().expect("interrupt source");
    }
    // Wait for the bottom halves to catch up (bounded: a lost run would
    // otherwise hang here).
    let deadline = Instant::now() + Duration::from_secs(30);
    while UARTS.iter().any(|u| {
        u.received.load(Ordering::Relaxed) + u64::from(u.overruns.load(Ordering::Relaxed))
            < u.total_bytes()
    }) {
        if Instant::now() > deadline {
            println!("timed out waiting for the bottom halves");
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    drop(drains);
    for u in UARTS {
        // Queued by the last bottom half, if any: wait for it.
        let _ = u.deliver_work.flush();
    }
    let _ = wq.flush();
    let elapsed = t0.elapsed();

    println!(
        "{:<6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7}",
        "uart",
        "irqs",
        "bh runs",
        "coalesc",
        "bytes",
        "mismatch",
        "overrun",
        "lines",
        "work runs",
        "ok"
    );
    let mut all_ok = true;
    for u in UARTS {
        let irqs = u.interrupts.load(Ordering::Relaxed);
        let runs = u.rx_tasklet.runs();
        let coalesced = u.rx_tasklet.coalesced();
        let bytes = u.received.load(Ordering::Relaxed);
        let mismatches = u.mismatches.load(Ordering::Relaxed);
        let overruns = u.overruns.load(Ordering::Relaxed);
        let lines = u.lines_delivered.load(Ordering::Relaxed);
        let ok = bytes == u.total_bytes()
            && mismatches == 0
            && overruns == 0
            && runs + coalesced == irqs
            && u64::from(lines) == u.lines_to_send
            && u.deliver_work.runs() >= 1;
        all_ok &= ok;
        println!(
            "UART{:<2} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7}",
            u.index,
            irqs,
            runs,
            coalesced,
            bytes,
            mismatches,
            overruns,
            lines,
            u.deliver_work.runs(),
            if ok { "yes" } else { "NO" }
        );
    }
    println!(
        "in {:.1} ms; checks: bytes = sent, 0 mismatches, 0 overruns, bh runs + coalesced = irqs, \
         lines delivered = lines sent",
        elapsed.as_secs_f64() * 1e3
    );
    if all_ok {
        println!("all counts exact");
        ExitCode::SUCCESS
    } else {
        println!("COUNTS WRONG");
        ExitCode::FAILURE
    }
}
