//! Statics that cost no file size: a `Runtime<Signals, 256>` (about
//! 190 KiB of RAM), a `Mailbox` and an `MpscMailbox`, all built with
//! `const` constructors whose bytes are all zero (and the crate's own
//! per-signal table), so the linker puts them
//! in `.bss` (the binary's file does not grow with them).
//! `scripts/bss-check.sh` checks that with `nm`.
//!
//! Run: `cargo run --release --example statics_in_bss` (Linux).

#[cfg(target_os = "linux")]
fn main() {
    use bottomhalf::{Config, Mailbox, MpscMailbox, Runtime, SignalConfig, Signals, Vector};
    use std::sync::atomic::{AtomicU32, Ordering};

    static RT: Runtime<Signals, 256> = Runtime::new(Config::DEFAULT);
    static MB: Mailbox<u64, 64> = Mailbox::new();
    static MPSC: MpscMailbox<u64, 64> = MpscMailbox::new();

    static EVENTS: AtomicU32 = AtomicU32::new(0);
    fn on_event(_cpu: usize) {
        while let Some(v) = MPSC.consumer().ok().and_then(|mut c| c.pop()) {
            EVENTS.fetch_add(v as u32, Ordering::Relaxed);
        }
    }
    const DISK: Vector = Vector::new(4);

    RT.register(DISK, "DISK", on_event)
        .expect("vector 4 is free");
    for v in 1..=3 {
        let _ = MPSC.push(v);
        RT.raise(DISK);
    }
    // In a program with signal handlers installed, a drain thread or the
    // handler's exit drains; here (nothing installed, so every context is
    // CPU 0) the main thread does.
    assert!(RT.drain().is_complete());
    // Installing a top half links the crate's own per-signal table
    // (65 slots, `SLOTS`), which must be in `.bss` too.
    let usr2 = RT
        .install(SignalConfig::new(libc::SIGUSR2, |_info| RT.raise(DISK)))
        .expect("SIGUSR2 is free");
    usr2.uninstall().expect("our own handler");
    let (mut tx, mut rx) = MB.split().expect("split once");
    tx.push(7).expect("room");
    let got = rx.pop();
    println!(
        "disk: {} events; mailbox round trip {:?}; Runtime<Signals, 256> is {} bytes of RAM",
        EVENTS.load(Ordering::Relaxed),
        got,
        core::mem::size_of_val(&RT)
    );
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("this example needs Linux (the Signals backend)");
}
