//! The ends of the mailboxes as the contexts that hold them see them:
//! `Mailbox::take_producer` / `take_consumer` (an end is out until its
//! handle is dropped), `split` beside them, `MpscMailbox::take_consumer`,
//! the `static mut`-local pattern of a `cortex-m-rt` interrupt handler and
//! a tasklet that takes its consumer on each run. Runs under miri too
//! (`cargo +nightly miri test --test mailbox_handles`).

use bottomhalf::{
    Config, Consumer, Host, Mailbox, MailboxError, MpscConsumer, MpscMailbox, Producer, Runtime,
    Tasklet,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// `Producer<'static, ..>` and friends: what a `static mut` local or an
/// RTIC `#[local]` resource must hold.
fn keep_static<T: 'static>(x: T) -> T {
    x
}

#[test]
fn producer_end_is_out_until_its_handle_drops() {
    static MB: Mailbox<u16, 8> = Mailbox::new();
    let tx: Producer<'static, u16, 8> = keep_static(MB.take_producer().expect("free"));
    assert!(
        MB.take_producer().is_none(),
        "a second producer while one lives"
    );
    assert!(
        MB.take_producer().is_none(),
        "and again: a refused take changes nothing"
    );
    drop(tx);
    let mut tx = MB
        .take_producer()
        .expect("dropping the handle gave the end back");
    tx.push(1).unwrap();
    assert_eq!(MB.take_consumer().unwrap().pop(), Some(1));
}

#[test]
fn consumer_end_is_out_until_its_handle_drops() {
    static MB: Mailbox<u16, 8> = Mailbox::new();
    let rx: Consumer<'static, u16, 8> = keep_static(MB.take_consumer().expect("free"));
    assert!(MB.take_consumer().is_none());
    drop(rx);
    assert!(MB.take_consumer().is_some());
}

#[test]
fn split_takes_both_ends_or_neither() {
    static MB: Mailbox<u8, 4> = Mailbox::new();
    let tx = MB.take_producer().unwrap();
    assert_eq!(MB.split().err(), Some(MailboxError::AlreadySplit));
    // The failed split did not keep the consumer end.
    let rx = MB.take_consumer().expect("a failed split took nothing");
    drop((tx, rx));
    let (tx, rx) = MB.split().expect("both ends free again");
    assert!(MB.take_producer().is_none() && MB.take_consumer().is_none());
    drop((tx, rx));
}

/// A new handle continues where the last one stopped: counts, order and
/// the ring's indices carry over, also across a wrap.
#[test]
fn ends_taken_again_continue_the_ring() {
    static MB: Mailbox<u32, 4> = Mailbox::new();
    let mut next_in = 0;
    let mut next_out = 0;
    for _ in 0..10 {
        let mut tx = MB.take_producer().unwrap();
        while tx.push(next_in).is_ok() {
            next_in += 1;
        }
        drop(tx);
        let mut rx = MB.take_consumer().unwrap();
        assert_eq!(rx.len(), 3);
        assert_eq!(rx.pop(), Some(next_out));
        next_out += 1;
        drop(rx);
        let mut rx = MB.take_consumer().unwrap();
        while let Some(x) = rx.pop() {
            assert_eq!(x, next_out);
            next_out += 1;
        }
    }
    assert_eq!(next_in, 30);
    assert_eq!(next_out, 30);
    assert_eq!(MB.dropped(), 10, "one refused push per round");
    assert_eq!(MB.high_water(), 3);
}

/// The body of a `cortex-m-rt` handler: `#[interrupt] fn UART0() { static
/// mut TX: Option<Producer<'static, u16, 8>> = None; .. }` gives the body
/// a `&mut Option<..>` that lives for good; it takes the end on first use.
fn uart0_irq(tx: &mut Option<Producer<'static, u16, 8>>, takes: &AtomicU32, byte: u16) {
    if tx.is_none() {
        takes.fetch_add(1, Ordering::Relaxed);
        *tx = UART_RX.take_producer();
    }
    if let Some(tx) = tx {
        let _ = tx.push(byte);
    }
    UART_BH.schedule();
}

static RT: Runtime<Host, 1> = Runtime::new(Config::DEFAULT);
static UART_RX: Mailbox<u16, 8> = Mailbox::new();
static UART_SUM: AtomicU32 = AtomicU32::new(0);
static UART_BH_REFUSED: AtomicU32 = AtomicU32::new(0);
static UART_BH: Tasklet = Tasklet::new(&RT, || {
    // A tasklet takes the consumer on each run; its runs never overlap.
    let Some(rx) = UART_RX.take_consumer() else {
        UART_BH_REFUSED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for b in rx {
        UART_SUM.fetch_add(u32::from(b), Ordering::Relaxed);
    }
});

/// The runtime's tests share `RT`'s one CPU.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn interrupt_static_mut_local_keeps_its_producer_and_a_tasklet_consumes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let takes = AtomicU32::new(0);
    let mut local = None; // the handler's `static mut TX`
    for round in 0..20u16 {
        for i in 0..10 {
            uart0_irq(&mut local, &takes, round * 10 + i);
        }
        let _ = RT.drain();
    }
    assert_eq!(takes.load(Ordering::Relaxed), 1, "taken on first use only");
    assert!(
        UART_RX.take_producer().is_none(),
        "the handler keeps its end"
    );
    // 20 rounds of 10 into a 7-item ring: 7 kept, 3 dropped per round.
    let kept: u32 = (0..20u32)
        .map(|r| (0..7).map(|i| r * 10 + i).sum::<u32>())
        .sum();
    assert_eq!(UART_SUM.load(Ordering::Relaxed), kept);
    assert_eq!(UART_RX.dropped(), 60);
    assert_eq!(UART_BH_REFUSED.load(Ordering::Relaxed), 0);
    assert!(
        UART_RX.take_consumer().is_some(),
        "the tasklet gave it back"
    );
}

/// A producer taken on one thread, given back and taken on another; the
/// consumer likewise. Every item arrives once and in order.
#[test]
fn ends_move_between_threads() {
    static MB: Mailbox<u32, 4> = Mailbox::new();
    const ITEMS: u32 = if cfg!(miri) { 30 } else { 3000 };
    let producer = std::thread::spawn(|| {
        let mut n = 0;
        while n < ITEMS {
            // A fresh handle for every few items, possibly on a new thread.
            let batch = std::thread::spawn(move || {
                let mut tx = MB.take_producer().expect("only this thread produces");
                let mut n = n;
                for _ in 0..5 {
                    if n < ITEMS && tx.try_push(n).is_ok() {
                        n += 1;
                    }
                }
                n
            });
            n = batch.join().unwrap();
            std::thread::yield_now();
        }
    });
    let mut next = 0;
    while next < ITEMS {
        let mut rx = MB.take_consumer().expect("only this thread consumes");
        if let Some(x) = rx.pop() {
            assert_eq!(x, next, "lost, repeated or reordered");
            next += 1;
        } else {
            std::thread::yield_now();
        }
    }
    producer.join().unwrap();
    assert_eq!(MB.dropped(), 0);
}

#[test]
fn mpsc_take_consumer_is_consumer_as_an_option() {
    static MB: MpscMailbox<u16, 8> = MpscMailbox::new();
    MB.push(1).unwrap();
    let mut rx: MpscConsumer<'static, u16, 8> = keep_static(MB.take_consumer().unwrap());
    assert!(MB.take_consumer().is_none());
    assert_eq!(MB.consumer().err(), Some(MailboxError::ConsumerTaken));
    assert_eq!(rx.pop(), Some(1));
    drop(rx);
    assert!(MB.take_consumer().is_some());
}

/// A failed take leaves no trace; a full ring and refused takes are
/// independent.
#[test]
fn refused_takes_do_not_disturb_the_holder() {
    static MB: Mailbox<u8, 2> = Mailbox::new();
    let (mut tx, mut rx) = MB.split().unwrap();
    for _ in 0..3 {
        assert!(MB.take_producer().is_none());
        assert!(MB.take_consumer().is_none());
    }
    tx.push(1).unwrap();
    assert_eq!(tx.push(2), Err(2));
    assert_eq!(rx.pop(), Some(1));
    assert_eq!((MB.dropped(), MB.refused()), (1, 0));
}

/// Items left in a mailbox are dropped with it, once.
#[test]
fn items_left_are_dropped_with_the_mailbox() {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    struct D;
    impl Drop for D {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    {
        let mb: Mailbox<D, 4> = Mailbox::new();
        let mut tx = mb.take_producer().unwrap();
        for _ in 0..3 {
            assert!(tx.push(D).is_ok());
        }
        drop(tx);
        let mut rx = mb.take_consumer().unwrap();
        drop(rx.pop());
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    }
    assert_eq!(
        DROPS.load(Ordering::Relaxed),
        3,
        "the two left were dropped"
    );
}
