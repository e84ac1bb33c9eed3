//! The harness of the four-core firmware tests: boot, board, semihosting.
//!
//! Runs under `qemu-system-aarch64 -machine virt -cpu cortex-a53 -smp 4
//! -nographic -nic none -semihosting`, with no runtime crate:
//!
//! - **Boot.** QEMU loads the ELF and starts core 0 at `_start` in EL1 (no
//!   `virtualization=on`, no `secure=on`: no EL2 or EL3 firmware). Core 0
//!   zeroes `.bss`; every core sets its stack (64 KiB each, from
//!   `MPIDR_EL1.Aff0`), turns FP/SIMD on (`CPACR_EL1.FPEN`; the target's
//!   code may use the SIMD registers) and installs the exception vectors,
//!   turns the MMU and caches on with a one-table identity map (RAM
//!   Normal write-back, inner shareable, so load/store-exclusive works
//!   through the global monitor as on silicon; the first GiB, with the
//!   GIC, Device-nGnRnE), then enters [`start`].
//! - **Secondary cores** wait powered off. Core 0 starts them with PSCI
//!   `CPU_ON` (function id `0xC400_0003`). QEMU virt uses the HVC conduit
//!   when the guest starts in EL1 and SMC when it starts in EL2; the
//!   harness probes `PSCI_VERSION` through HVC, then SMC, and an
//!   instruction that turns out UNDEFINED (no such conduit) returns
//!   `NOT_SUPPORTED` through the exception vector instead of failing.
//! - **Board** ([`Virt`]): the CPU index is `MPIDR_EL1.Aff0`, the clock is
//!   the generic timer (`CNTVCT_EL0` scaled by `CNTFRQ_EL0`), and
//!   `pend_drain(cpu)` sets a per-core flag that the target core's loop
//!   polls ([`take_pend`]) at the points where an interrupt would return.
//!   That lets a scenario decide exactly where drains happen.
//! - **Board with a drain interrupt** ([`VirtGic`]): the same, but
//!   `pend_drain(cpu)` sends SGI 1 to core `cpu` through the GICv2
//!   distributor (QEMU virt's default GIC, at `0x0800_0000`, CPU interface
//!   at `0x0801_0000`), and the IRQ vector (which saves x0..x30, ELR, SPSR,
//!   q0..q31, FPCR and FPSR) acknowledges it, runs the drain the firmware
//!   gave [`entry!`], and ends it. [`gic_init_core`] turns it on per core;
//!   [`irqs_masked`] runs a top half with IRQs masked.
//! - **Board with a drain interrupt per level** ([`VirtGicLevels`]):
//!   `pend_drain(cpu, level)` sends the level's own SGI ([`SGI_LEVEL`]: 4
//!   for level 0 at priority 0xa0, 5 for level 1 at 0x80), and the IRQ
//!   handler runs the level drain given to [`entry!`] (`irq_levels = …`)
//!   with IRQs unmasked: nested interrupts, so level 1's SGI preempts a
//!   running level-0 drain and the GIC's running priority keeps a level
//!   out of itself (see `bh_irq` for why the nesting is safe).
//!   [`nested_irqs`] and [`max_irq_depth`] count what nested.
//! - **Semihosting**: `hlt #0xf000`; `SYS_OPEN(":tt")` and `SYS_WRITE`
//!   for output to the host's stdout (one line at a time under a spin
//!   lock, so lines of different cores never mix), `SYS_EXIT` with the
//!   AArch64 parameter block for the exit code.
//!
//! A scenario is a `fn(cpu: usize)` that runs on all four cores at once
//! ([`entry!`]); it fails with [`check!`] / [`check_eq!`] (one `FAIL:`
//! line, exit code 1), and QEMU exits 0 once it has returned on every
//! core. A panic exits 1, an exception 2, a wait that never ends
//! ([`wait_until`]) fails after 20 s. Spin-waits execute `yield`
//! ([`spin_yield`]), so under `-icount` (round-robin vCPUs) a waiting core
//! hands the thread over at once.
//!
//! `unsafe` is confined to this file (assembly, semihosting, PSCI,
//! system registers); the scenarios use the crate's safe API.

#![no_std]

use core::arch::{asm, global_asm};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use bottomhalf::{Board, Level};

/// The crate under test, for [`entry!`]'s expansion.
pub use bottomhalf;

/// The cores the tests run on (`-smp 4`).
pub const CORES: usize = 4;

/// log2 of each core's stack size (64 KiB); `link.ld` reserves
/// `CORES << STACK_SHIFT` bytes.
const STACK_SHIFT: u32 = 16;

// ---------------------------------------------------------------- macros

/// Prints a line through semihosting.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::print_fmt(format_args!($($arg)*))
    };
}

/// `check!(cond, "what", args…)`: fails the run unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::fail(format_args!($($arg)*));
        }
    };
}

/// `check_eq!(a, b, "what", args…)`: fails the run unless `a == b`,
/// printing both.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr, $($arg:tt)*) => {
        match (&$a, &$b) {
            (a, b) => {
                if *a != *b {
                    $crate::fail(format_args!(
                        "{}: {:?} != {:?}",
                        format_args!($($arg)*),
                        a,
                        b
                    ));
                }
            }
        }
    };
}

// ---------------------------------------------------------------- boot

global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    // Core 0 only: QEMU holds the other cores powered off until CPU_ON.
    // Zero .bss (16-byte aligned and sized by link.ld).
    adrp x0, __bss_start
    add  x0, x0, :lo12:__bss_start
    adrp x1, __bss_end
    add  x1, x1, :lo12:__bss_end
1:  cmp  x0, x1
    b.hs 2f
    str  xzr, [x0], #8
    b    1b
2:  b    bh_common_entry

    // PSCI CPU_ON entry of cores 1..3 (EL1, MMU off).
    .global bh_secondary_entry
bh_secondary_entry:
    b    bh_common_entry

bh_common_entry:
    mrs  x19, mpidr_el1
    and  x19, x19, #0xff
    cmp  x19, #{cores}
    b.hs 4f
    // sp = __stacks_start + (cpu + 1) << STACK_SHIFT
    adrp x1, __stacks_start
    add  x1, x1, :lo12:__stacks_start
    add  x2, x19, #1
    lsl  x2, x2, #{stack_shift}
    add  x1, x1, x2
    mov  sp, x1
    // FP/SIMD accessible at EL1 and EL0 (CPACR_EL1.FPEN = 0b11).
    mov  x1, #(3 << 20)
    msr  cpacr_el1, x1
    adrp x1, bh_vectors
    add  x1, x1, :lo12:bh_vectors
    msr  vbar_el1, x1
    isb
    // MMU on, identity map (bh_page_table): RAM Normal write-back,
    // inner shareable (so exclusives use the global monitor as on real
    // cores); the first GiB (flash, GIC, UART) Device-nGnRnE.
    // MAIR_EL1: attr0 = 0x00 Device-nGnRnE, attr1 = 0xff Normal WB.
    mov  x1, #0xff00
    msr  mair_el1, x1
    // TCR_EL1: T0SZ 32 (4 GiB), IRGN0/ORGN0 WB-WA, SH0 inner, TG0 4K,
    // EPD1 (no TTBR1 walks), TG1 4K, IPS 32 bits.
    ldr  x1, ={tcr}
    msr  tcr_el1, x1
    adrp x1, bh_page_table
    add  x1, x1, :lo12:bh_page_table
    msr  ttbr0_el1, x1
    isb
    tlbi vmalle1
    dsb  nsh
    isb
    // SCTLR_EL1: M (MMU), C (data cache), I (instruction cache).
    mrs  x1, sctlr_el1
    mov  x2, #((1 << 0) | (1 << 2) | (1 << 12))
    orr  x1, x1, x2
    msr  sctlr_el1, x1
    isb
    mov  x0, x19
    bl   bh_rust_entry
4:  wfe
    b    4b

    .ltorg

    // Level-1 translation table (T0SZ 32: four 1 GiB blocks).
    .section .rodata.bh_page_table, "a"
    .balign 4096
bh_page_table:
    // 0x0000_0000: Device-nGnRnE (attr0), AF, never executable.
    .quad 0x0060000000000401
    // 0x4000_0000: Normal write-back (attr1), inner shareable, AF.
    .quad 0x0000000040000705
    .quad 0
    .quad 0

    // Exception vectors: 16 entries of 128 bytes; x17 = entry index.
    .section .text.vectors, "ax"
    .balign 2048
bh_vectors:
    // Entry 5 (IRQ, current EL with SP_ELx) is the GIC interrupt.
    .irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 128
    .if \n == 5
    b    bh_irq_entry
    .else
    mov  x17, #\n
    b    bh_exception_common
    .endif
    .endr

    // IRQ: save every register the interrupted code may hold (x0..x30,
    // ELR, SPSR, q0..q31, FPCR, FPSR: 800 bytes), call bh_irq, restore,
    // eret. Interrupts stay masked (PSTATE.I) until eret.
bh_irq_entry:
    sub  sp, sp, #800
    stp  x0, x1, [sp, #0]
    stp  x2, x3, [sp, #16]
    stp  x4, x5, [sp, #32]
    stp  x6, x7, [sp, #48]
    stp  x8, x9, [sp, #64]
    stp  x10, x11, [sp, #80]
    stp  x12, x13, [sp, #96]
    stp  x14, x15, [sp, #112]
    stp  x16, x17, [sp, #128]
    stp  x18, x19, [sp, #144]
    stp  x20, x21, [sp, #160]
    stp  x22, x23, [sp, #176]
    stp  x24, x25, [sp, #192]
    stp  x26, x27, [sp, #208]
    stp  x28, x29, [sp, #224]
    mrs  x0, elr_el1
    stp  x30, x0, [sp, #240]
    mrs  x0, spsr_el1
    mrs  x1, fpcr
    stp  x0, x1, [sp, #256]
    mrs  x0, fpsr
    str  x0, [sp, #272]
    add  x0, sp, #288
    stp  q0, q1, [x0, #0]
    stp  q2, q3, [x0, #32]
    stp  q4, q5, [x0, #64]
    stp  q6, q7, [x0, #96]
    stp  q8, q9, [x0, #128]
    stp  q10, q11, [x0, #160]
    stp  q12, q13, [x0, #192]
    stp  q14, q15, [x0, #224]
    stp  q16, q17, [x0, #256]
    stp  q18, q19, [x0, #288]
    stp  q20, q21, [x0, #320]
    stp  q22, q23, [x0, #352]
    stp  q24, q25, [x0, #384]
    stp  q26, q27, [x0, #416]
    stp  q28, q29, [x0, #448]
    stp  q30, q31, [x0, #480]
    bl   bh_irq
    add  x0, sp, #288
    ldp  q0, q1, [x0, #0]
    ldp  q2, q3, [x0, #32]
    ldp  q4, q5, [x0, #64]
    ldp  q6, q7, [x0, #96]
    ldp  q8, q9, [x0, #128]
    ldp  q10, q11, [x0, #160]
    ldp  q12, q13, [x0, #192]
    ldp  q14, q15, [x0, #224]
    ldp  q16, q17, [x0, #256]
    ldp  q18, q19, [x0, #288]
    ldp  q20, q21, [x0, #320]
    ldp  q22, q23, [x0, #352]
    ldp  q24, q25, [x0, #384]
    ldp  q26, q27, [x0, #416]
    ldp  q28, q29, [x0, #448]
    ldp  q30, q31, [x0, #480]
    ldr  x0, [sp, #272]
    msr  fpsr, x0
    ldp  x0, x1, [sp, #256]
    msr  spsr_el1, x0
    msr  fpcr, x1
    ldp  x30, x0, [sp, #240]
    msr  elr_el1, x0
    ldp  x0, x1, [sp, #0]
    ldp  x2, x3, [sp, #16]
    ldp  x4, x5, [sp, #32]
    ldp  x6, x7, [sp, #48]
    ldp  x8, x9, [sp, #64]
    ldp  x10, x11, [sp, #80]
    ldp  x12, x13, [sp, #96]
    ldp  x14, x15, [sp, #112]
    ldp  x16, x17, [sp, #128]
    ldp  x18, x19, [sp, #144]
    ldp  x20, x21, [sp, #160]
    ldp  x22, x23, [sp, #176]
    ldp  x24, x25, [sp, #192]
    ldp  x26, x27, [sp, #208]
    ldp  x28, x29, [sp, #224]
    add  sp, sp, #800
    eret

bh_exception_common:
    // A PSCI conduit probe: an HVC or SMC that is UNDEFINED (synchronous,
    // current EL with SP_ELx = entry 4; ESR_EL1.EC = 0) while
    // BH_PSCI_PROBING is set returns NOT_SUPPORTED (-1) in x0. The probe's
    // asm declares x0..x17 clobbered; NZCV comes back from SPSR on eret.
    cmp  x17, #4
    b.ne 6f
    mrs  x17, esr_el1
    lsr  x17, x17, #26
    cbnz x17, 5f
    adrp x17, BH_PSCI_PROBING
    ldrb w17, [x17, :lo12:BH_PSCI_PROBING]
    cbz  w17, 5f
    mrs  x17, elr_el1
    add  x17, x17, #4
    msr  elr_el1, x17
    movn x0, #0
    eret
5:  mov  x17, #4
6:  mov  x0, x17
    mrs  x1, esr_el1
    mrs  x2, elr_el1
    mrs  x3, far_el1
    bl   bh_exception
7:  wfe
    b    7b
"#,
    cores = const CORES,
    stack_shift = const STACK_SHIFT,
    tcr = const TCR,
);

/// TCR_EL1 for the identity map: T0SZ 32, IRGN0 = ORGN0 = 0b01
/// (write-back, write-allocate), SH0 = 0b11 (inner shareable), TG0 = 4K,
/// EPD1, TG1 = 0b10 (4K), IPS = 0 (32-bit physical addresses).
const TCR: u64 = 32 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 30);

extern "C" {
    /// Where cores 1..3 start (PSCI `CPU_ON` entry point), in the assembly
    /// above. Only its address is used.
    fn bh_secondary_entry() -> !;
}

/// Set while core 0 probes the PSCI conduits (read by the vector code).
#[no_mangle]
static BH_PSCI_PROBING: AtomicU8 = AtomicU8::new(0);

/// An exception nobody expected: print it and exit with code 2.
#[no_mangle]
extern "C" fn bh_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    print_fmt(format_args!(
        "FAIL (cpu {}): exception, vector entry {kind}: ESR_EL1 {esr:#x} ELR_EL1 {elr:#x} FAR_EL1 {far:#x}",
        Virt::cpu()
    ));
    exit(2)
}

/// Defines the firmware's entry: `entry!(scenario)` runs
/// `scenario(cpu)` on all four cores at once, after core 0 has checked the
/// platform and started the others. `entry!(scenario, irq_drain = f)`
/// also makes `f()` the drain that the drain SGI runs ([`VirtGic`]);
/// `entry!(scenario, irq_drain = f, irq_top = g)` also makes `g(source)`
/// the top half that [`SGI_TOP`] runs (IRQs masked; `source` is the
/// sending core). `entry!(scenario, single_core)` runs `scenario(0)` on
/// core 0 alone, for `-smp 1` (no PSCI `CPU_ON`);
/// `entry!(scenario, single_core, irq_drain = f)` adds the drain SGI.
///
/// `entry!(scenario, irq_levels = d, irq_top = g)` is for a runtime with
/// bottom-half levels on [`VirtGicLevels`]: `d(level)` is the drain the
/// level's own SGI ([`SGI_LEVEL`]) runs, **with IRQs unmasked** (nested
/// interrupts, see [`SGI_LEVEL`]), so a more urgent level's SGI or a
/// top half preempts it. `irq_drain = f, irq_top = g, irq_levels = d`
/// gives all three; `single_core, irq_drain = f, irq_levels = d` the
/// one-core form.
#[macro_export]
macro_rules! entry {
    ($scenario:path) => {
        $crate::entry!($scenario, irq_drain = $crate::no_irq_drain);
    };
    ($scenario:path, single_core) => {
        $crate::entry!($scenario, single_core, irq_drain = $crate::no_irq_drain);
    };
    ($scenario:path, single_core, irq_drain = $drain:path) => {
        $crate::entry!(
            $scenario,
            single_core,
            irq_drain = $drain,
            irq_levels = $crate::no_irq_levels
        );
    };
    ($scenario:path, single_core, irq_drain = $drain:path, irq_levels = $levels:path) => {
        #[no_mangle]
        extern "C" fn bh_rust_entry(cpu: usize) -> ! {
            $crate::start_cores(cpu, 1, $scenario)
        }
        #[no_mangle]
        extern "C" fn bh_irq_drain() {
            $drain()
        }
        #[no_mangle]
        extern "C" fn bh_irq_drain_at(level: usize) {
            $levels($crate::bottomhalf::Level::new(level))
        }
        #[no_mangle]
        extern "C" fn bh_irq_top(source: usize) {
            $crate::no_irq_top(source)
        }
    };
    ($scenario:path, irq_drain = $drain:path) => {
        $crate::entry!($scenario, irq_drain = $drain, irq_top = $crate::no_irq_top);
    };
    ($scenario:path, irq_drain = $drain:path, irq_top = $top:path) => {
        $crate::entry!(
            $scenario,
            irq_drain = $drain,
            irq_top = $top,
            irq_levels = $crate::no_irq_levels
        );
    };
    ($scenario:path, irq_levels = $levels:path, irq_top = $top:path) => {
        $crate::entry!(
            $scenario,
            irq_drain = $crate::no_irq_drain,
            irq_top = $top,
            irq_levels = $levels
        );
    };
    ($scenario:path, irq_drain = $drain:path, irq_top = $top:path, irq_levels = $levels:path) => {
        #[no_mangle]
        extern "C" fn bh_rust_entry(cpu: usize) -> ! {
            $crate::start(cpu, $scenario)
        }
        #[no_mangle]
        extern "C" fn bh_irq_drain() {
            $drain()
        }
        #[no_mangle]
        extern "C" fn bh_irq_drain_at(level: usize) {
            $levels($crate::bottomhalf::Level::new(level))
        }
        #[no_mangle]
        extern "C" fn bh_irq_top(source: usize) {
            $top(source)
        }
    };
}

/// The drain of a firmware without a drain SGI: a drain SGI there fails
/// the run.
pub fn no_irq_drain() {
    fail(format_args!(
        "a drain SGI arrived, but this firmware has no IRQ drain"
    ));
}

/// The level drains of a firmware without them: a level-drain SGI
/// ([`SGI_LEVEL`]) there fails the run.
pub fn no_irq_levels(level: bottomhalf::Level) {
    fail(format_args!(
        "a drain SGI of {level} arrived, but this firmware has no level drains"
    ));
}

/// The top half of a firmware without one: an [`SGI_TOP`] there fails the
/// run.
pub fn no_irq_top(source: usize) {
    fail(format_args!(
        "SGI {SGI_TOP} arrived from core {source}, but this firmware has no top half for it"
    ));
}

static ONLINE: AtomicU32 = AtomicU32::new(0);
static ONLINE_MASK: AtomicU32 = AtomicU32::new(0);
static GO: AtomicBool = AtomicBool::new(false);
static FINISHED: AtomicU32 = AtomicU32::new(0);

/// Boots the platform (core 0) or checks in (cores 1..3), runs `scenario`
/// on every core, then exits 0 once all four have returned. Called by
/// [`entry!`].
pub fn start(cpu: usize, scenario: fn(usize)) -> ! {
    start_cores(cpu, CORES, scenario)
}

/// [`start`] on the first `cores` cores only (`entry!(…, single_core)`:
/// 1, for `-smp 1`); core 0 starts cores `1..cores`.
pub fn start_cores(cpu: usize, cores: usize, scenario: fn(usize)) -> ! {
    let cores = cores.clamp(1, CORES);
    if cpu == 0 {
        boot_primary(cores);
    } else {
        check_eq!(
            sctlr() & SCTLR_MCI,
            SCTLR_MCI,
            "core {cpu}: MMU and caches on"
        );
        ONLINE_MASK.fetch_or(1 << cpu, Ordering::Relaxed);
        // Release: pairs with core 0's Acquire wait on ONLINE.
        ONLINE.fetch_add(1, Ordering::Release);
        wait_until("the start signal", || GO.load(Ordering::Acquire));
    }
    scenario(cpu);
    // Release: pairs with core 0's Acquire wait below.
    FINISHED.fetch_add(1, Ordering::Release);
    if cpu == 0 {
        wait_until("every core to finish its scenario", || {
            FINISHED.load(Ordering::Acquire) == cores as u32
        });
        exit(0);
    }
    park()
}

fn boot_primary(cores: usize) {
    let el = current_el();
    let midr = midr();
    check_eq!(el, 1, "the firmware starts in EL1");
    println!(
        "boot: core 0 in EL{el}, MIDR {midr:#010x} ({})",
        if midr & 0xff0f_fff0 == 0x410f_d030 {
            "Cortex-A53"
        } else {
            "not a Cortex-A53"
        }
    );
    check_eq!(midr & 0xff0f_fff0, 0x410f_d030, "the core is a Cortex-A53");
    check_eq!(sctlr() & SCTLR_MCI, SCTLR_MCI, "core 0: MMU and caches on");
    println!("mmu: on, caches on; identity map: RAM normal write-back, devices nGnRnE");
    let freq = cntfrq();
    check!(freq != 0, "CNTFRQ_EL0 is set");
    println!("timer: CNTFRQ_EL0 {freq} Hz");

    let (conduit, version) = psci_probe();
    let Some(conduit) = conduit else {
        fail(format_args!(
            "no PSCI conduit answered (HVC and SMC both UNDEFINED)"
        ))
    };
    println!(
        "psci: version {}.{} through {}",
        version >> 16,
        version & 0xffff,
        conduit.name()
    );
    ONLINE_MASK.fetch_or(1, Ordering::Relaxed);
    ONLINE.fetch_add(1, Ordering::Relaxed);
    let entry = bh_secondary_entry as *const () as usize as u64;
    for target in 1..cores as u64 {
        // MPIDR of core n on virt: Aff0 = n (up to 8 cores per cluster).
        let r = psci_call(conduit, PSCI_CPU_ON, target, entry, target);
        check_eq!(r, 0, "PSCI CPU_ON for core {target}");
    }
    wait_until("the other cores to come online", || {
        ONLINE.load(Ordering::Acquire) == cores as u32
    });
    println!(
        "cores online: {} (MPIDR_EL1.Aff0 mask {:#x})",
        ONLINE.load(Ordering::Relaxed),
        ONLINE_MASK.load(Ordering::Relaxed)
    );
    GO.store(true, Ordering::Release);
}

fn park() -> ! {
    loop {
        // SAFETY: `wfe` only waits for an event; no memory or register effect.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}

// ---------------------------------------------------------------- system registers

/// Reads a system register whose read has no side effect at EL1.
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading this system register at EL1 has no side effect
        // (no memory access, no state change).
        unsafe {
            asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags))
        };
        v
    }};
}

fn mpidr() -> u64 {
    read_sysreg!("mpidr_el1")
}

fn midr() -> u64 {
    read_sysreg!("midr_el1")
}

fn current_el() -> u64 {
    (read_sysreg!("CurrentEL") >> 2) & 3
}

/// SCTLR_EL1.M, .C and .I: MMU, data cache, instruction cache.
const SCTLR_MCI: u64 = (1 << 0) | (1 << 2) | (1 << 12);

fn sctlr() -> u64 {
    read_sysreg!("sctlr_el1")
}

fn cntfrq() -> u64 {
    read_sysreg!("cntfrq_el0")
}

fn cntvct() -> u64 {
    let v: u64;
    // SAFETY: `isb` orders the read after earlier instructions; reading
    // CNTVCT_EL0 at EL1 has no side effect.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// The generic timer's virtual count (`CNTVCT_EL0`), read after an `isb`,
/// for measurements: unlike the board's clock, the read is also a compiler
/// barrier (no `nomem`), so the compiler moves no memory access of the
/// measured code across it. Under `-icount shift=4` on QEMU 7.2 (62.5 MHz)
/// one tick is one instruction (`drain_cost`).
pub fn ticks() -> u64 {
    let v: u64;
    // SAFETY: `isb` orders the read after earlier instructions; reading
    // CNTVCT_EL0 at EL1 has no side effect. Declared as touching memory
    // only so the compiler keeps the measured code between two reads.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nostack, preserves_flags)) };
    v
}

/// `CNTFRQ_EL0`: the generic timer's frequency in Hz.
pub fn timer_hz() -> u64 {
    cntfrq()
}

// ---------------------------------------------------------------- PSCI

const PSCI_VERSION: u64 = 0x8400_0000;
const PSCI_CPU_ON: u64 = 0xC400_0003;

/// How PSCI calls reach the firmware (here: QEMU itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conduit {
    Hvc,
    Smc,
}

impl Conduit {
    fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        }
    }
}

/// One PSCI call (SMC Calling Convention: function id and arguments in
/// x0..x3, result in x0; x4..x17 may be clobbered).
fn psci_call(conduit: Conduit, fid: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let r: i64;
    match conduit {
        // SAFETY: a PSCI call through HVC: QEMU handles it (or, while
        // probing, the vector code skips an UNDEFINED one and sets x0 to
        // -1). Every register the convention may change is declared.
        Conduit::Hvc => unsafe {
            asm!("hvc #0",
                inout("x0") fid => r, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack))
        },
        // SAFETY: as above, through SMC.
        Conduit::Smc => unsafe {
            asm!("smc #0",
                inout("x0") fid => r, inout("x1") a1 => _, inout("x2") a2 => _,
                inout("x3") a3 => _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack))
        },
    }
    r
}

/// `PSCI_VERSION` through HVC, then SMC: the first conduit that answers,
/// and the version it reports.
fn psci_probe() -> (Option<Conduit>, u64) {
    BH_PSCI_PROBING.store(1, Ordering::SeqCst);
    let mut found = (None, 0);
    for c in [Conduit::Hvc, Conduit::Smc] {
        let v = psci_call(c, PSCI_VERSION, 0, 0, 0);
        if v >= 0 {
            found = (Some(c), v as u64);
            break;
        }
    }
    BH_PSCI_PROBING.store(0, Ordering::SeqCst);
    found
}

// ---------------------------------------------------------------- GIC

// GICv2 on QEMU virt (the default `gic-version=2`), no security
// extensions (no `secure=on`): distributor and CPU interface.
const GICD: usize = 0x0800_0000;
const GICC: usize = 0x0801_0000;
const GICD_CTLR: usize = GICD;
const GICD_ISENABLER0: usize = GICD + 0x100;
const GICD_IPRIORITYR: usize = GICD + 0x400;
const GICD_SGIR: usize = GICD + 0xf00;
const GICC_CTLR: usize = GICC;
const GICC_PMR: usize = GICC + 0x4;
const GICC_IAR: usize = GICC + 0xc;
const GICC_EOIR: usize = GICC + 0x10;

/// The SGI that pends a drain ([`VirtGic::pend_drain`]).
pub const SGI_DRAIN: u32 = 1;

/// The SGI of a cross-core top half ([`send_top_sgi`]): the target runs
/// the `irq_top` given to [`entry!`], then answers with [`SGI_WAKE`].
/// Priority 0x40, above the drain SGI's 0x80, so when both are pending the
/// top half comes first.
pub const SGI_TOP: u32 = 2;

/// The answer to a top-half SGI: sent back to its source once the top
/// half has returned and is counted ([`top_sgis`]), so the sender can
/// sleep in `wfi` until then ([`sleep_until`]). Its handler does nothing
/// else. Priority 0x40.
pub const SGI_WAKE: u32 = 3;

/// How many bottom-half levels [`VirtGicLevels`] has a drain SGI for.
pub const LEVELS: usize = 2;

/// The drain SGI of each bottom-half level on [`VirtGicLevels`], indexed
/// by [`Level::index`]: SGI 4 for level 0, SGI 5 for level 1.
///
/// Their priorities ([`LEVEL_PRIORITY`]) are below the top-half SGIs' and
/// the more urgent the higher the level. Unlike [`SGI_DRAIN`], whose drain
/// runs with IRQs masked, a level's drain runs with IRQs **unmasked**: a
/// nested interrupt. After the acknowledge (`GICC_IAR`), the GIC CPU
/// interface's running priority is the SGI's, so it signals only an
/// interrupt of a more urgent priority group: another SGI of the same
/// level (or a lower one) stays pending until this one's end of interrupt,
/// and a more urgent level's SGI, or a top half, is taken at once, inside
/// the running drain. See `bh_irq` for what makes the nesting safe.
pub const SGI_LEVEL: [u32; LEVELS] = [4, 5];

/// The GIC priorities of [`SGI_LEVEL`] (a lower number is more urgent):
/// level 0 at 0xa0, level 1 at 0x80; the top-half SGIs are at 0x40. They
/// differ in the top three bits, so they are three different preemption
/// groups for any binary point up to 4 (QEMU's GICv2 resets `GICC_BPR` to
/// its minimum).
pub const LEVEL_PRIORITY: [u8; LEVELS] = [0xa0, 0x80];

fn mmio_write(addr: usize, v: u32) {
    // SAFETY: `addr` is one of the GIC registers above, mapped by QEMU
    // virt at these addresses (identity-mapped as Device-nGnRnE); a 32-bit
    // aligned device write.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

fn mmio_read(addr: usize) -> u32 {
    // SAFETY: as in `mmio_write`, a 32-bit aligned device read.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn mmio_write8(addr: usize, v: u8) {
    // SAFETY: as in `mmio_write`; GICD_IPRIORITYR is byte-accessible.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

/// Turns the GIC on for the calling core: the distributor (once, any core
/// may call it first), the drain SGI enabled at priority 0x80, the
/// top-half SGIs at 0x40 and the level drain SGIs at
/// [`LEVEL_PRIORITY`], the CPU interface on with priority mask 0xf0,
/// and IRQs unmasked in PSTATE.
pub fn gic_init_core() {
    mmio_write(GICD_CTLR, 1);
    // Banked per core for SGIs and PPIs.
    mmio_write8(GICD_IPRIORITYR + SGI_DRAIN as usize, 0x80);
    mmio_write8(GICD_IPRIORITYR + SGI_TOP as usize, 0x40);
    mmio_write8(GICD_IPRIORITYR + SGI_WAKE as usize, 0x40);
    let mut enable = (1 << SGI_DRAIN) | (1 << SGI_TOP) | (1 << SGI_WAKE);
    for (sgi, prio) in SGI_LEVEL.iter().zip(LEVEL_PRIORITY) {
        mmio_write8(GICD_IPRIORITYR + *sgi as usize, prio);
        enable |= 1 << sgi;
    }
    mmio_write(GICD_ISENABLER0, enable);
    mmio_write(GICC_PMR, 0xf0);
    mmio_write(GICC_CTLR, 1);
    // SAFETY: unmasks IRQs on this core; the IRQ vector saves and restores
    // every register, and the GIC delivers only the drain SGI.
    unsafe { asm!("msr daifclr, #2", options(nomem, nostack, preserves_flags)) };
}

/// Sends the drain SGI to core `cpu` (any core, the caller's own
/// included).
pub fn send_drain_sgi(cpu: usize) {
    send_sgi(cpu, SGI_DRAIN);
}

/// Sends the top-half SGI ([`SGI_TOP`]) to core `cpu`. GICv2 keeps one
/// pending state per SGI and source core: a second send from this core
/// before the target took the first merges with it, so a sender that
/// needs every send taken waits for [`top_sgis`] to count it.
pub fn send_top_sgi(cpu: usize) {
    send_sgi(cpu, SGI_TOP);
}

fn send_sgi(cpu: usize, id: u32) {
    // Make the caller's writes (the pending mask) visible before the SGI.
    // SAFETY: `dsb ishst` is a barrier; no other effect.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
    // TargetListFilter 0 (the list), CPUTargetList bit `cpu`, SGI id.
    mmio_write(GICD_SGIR, (1 << (16 + cpu)) | id);
}

/// Runs `f` with IRQs masked on this core (a top half: an SGI sent to
/// this core meanwhile is taken when it returns).
pub fn irqs_masked<R>(f: impl FnOnce() -> R) -> R {
    let daif: u64;
    // SAFETY: reads DAIF and masks IRQs; restored below.
    unsafe {
        asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nomem, nostack, preserves_flags))
    };
    let r = f();
    // SAFETY: restores the DAIF read above.
    unsafe { asm!("msr daif, {}", in(reg) daif, options(nomem, nostack, preserves_flags)) };
    r
}

/// `true` if IRQs are masked on this core (PSTATE.I), as they are in the
/// IRQ vector and so in the drain the drain SGI runs.
pub fn irqs_are_masked() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF has no side effect.
    unsafe { asm!("mrs {}, daif", out(reg) daif, options(nomem, nostack, preserves_flags)) };
    daif & (1 << 7) != 0
}

/// Drain SGIs taken, indexed `[target core][source core]`.
static SGIS: [[AtomicU32; CORES]; CORES] = [const { [const { AtomicU32::new(0) }; CORES] }; CORES];

/// Drain SGIs core `target` took from core `source`.
pub fn sgis(target: usize, source: usize) -> u32 {
    SGIS[target][source].load(Ordering::Relaxed)
}

/// Sleeps in `wfi` until `cond` holds: IRQs are masked while `cond` is
/// read, and `wfi` wakes on an interrupt that is pending even while
/// masked, so a wake-up between the read and the `wfi` is not lost. The
/// interrupt is taken once IRQs are unmasked again. For a wait on another
/// core that ends with an interrupt to this one ([`SGI_WAKE`]): a halted
/// vCPU leaves its host CPU to the others, where a spinning one competes
/// with the core it waits for. A wake-up that never comes hangs the run
/// (the runner's timeout catches it); it checks the generic timer after
/// each wake-up and fails after `ns` nanoseconds.
pub fn sleep_until(what: &str, ns: u64, mut cond: impl FnMut() -> bool) {
    let start = now_ns();
    loop {
        let done = irqs_masked(|| {
            if cond() {
                return true;
            }
            // SAFETY: `wfi` waits for an interrupt (pending, even masked);
            // no memory or register effect.
            unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
            false
        });
        if done {
            return;
        }
        if now_ns().wrapping_sub(start) > ns {
            fail(format_args!(
                "timed out after {} ms waiting for {what}",
                ns / 1_000_000
            ));
        }
    }
}

/// Top-half SGIs taken, indexed `[target core][source core]`; counted
/// after the top half returned.
static TOP_SGIS: [[AtomicU32; CORES]; CORES] =
    [const { [const { AtomicU32::new(0) }; CORES] }; CORES];

/// Top-half SGIs ([`SGI_TOP`]) core `target` took from core `source` and
/// whose top half has returned (Acquire: what the top half wrote is
/// visible once it is counted).
pub fn top_sgis(target: usize, source: usize) -> u32 {
    TOP_SGIS[target][source].load(Ordering::Acquire)
}

/// Level drain SGIs taken, indexed `[core][level]`.
static LEVEL_SGIS: [[AtomicU32; LEVELS]; CORES] =
    [const { [const { AtomicU32::new(0) }; LEVELS] }; CORES];

/// Drain SGIs of level `level` ([`SGI_LEVEL`]) core `cpu` took.
pub fn level_sgis(cpu: usize, level: Level) -> u32 {
    LEVEL_SGIS[cpu % CORES][level.index() % LEVELS].load(Ordering::Relaxed)
}

/// `pend_drain(cpu, level)` calls on [`VirtGicLevels`], `[core][level]`.
static LEVEL_KICKS: [[AtomicU32; LEVELS]; CORES] =
    [const { [const { AtomicU32::new(0) }; LEVELS] }; CORES];

/// `VirtGicLevels::pend_drain(cpu, level)` calls so far.
pub fn level_kicks(cpu: usize, level: Level) -> u32 {
    LEVEL_KICKS[cpu % CORES][level.index() % LEVELS].load(Ordering::Relaxed)
}

/// IRQs taken on each core while it was already inside an IRQ handler
/// (nested), the core's IRQ depth now, and the deepest nesting seen
/// (recorded only when nested).
static NESTED_IRQS: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static IRQ_DEPTH: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];
static MAX_IRQ_DEPTH: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];

/// Interrupts core `cpu` took inside another interrupt's handler (only
/// a level drain SGI's handler runs with IRQs unmasked).
pub fn nested_irqs(cpu: usize) -> u32 {
    NESTED_IRQS[cpu % CORES].load(Ordering::Relaxed)
}

/// The deepest interrupt nesting core `cpu` reached (0: never nested;
/// 2: one IRQ inside another).
pub fn max_irq_depth(cpu: usize) -> u32 {
    MAX_IRQ_DEPTH[cpu % CORES].load(Ordering::Relaxed)
}

extern "C" {
    /// The drain the SGI runs, defined by [`entry!`].
    fn bh_irq_drain();
    /// The drain of a level ([`SGI_LEVEL`]), defined by [`entry!`].
    fn bh_irq_drain_at(level: usize);
    /// The top half [`SGI_TOP`] runs, defined by [`entry!`].
    fn bh_irq_top(source: usize);
}

/// Called by the IRQ vector: acknowledge, count, drain (or run the top
/// half), end of interrupt.
///
/// **Nested interrupts.** A level drain SGI ([`SGI_LEVEL`]) runs its
/// drain with IRQs unmasked (`daifclr`), so a more urgent interrupt
/// preempts it. That is safe because:
/// - the vector code (`bh_irq_entry`) saved ELR_EL1 and SPSR_EL1 (and
///   every general and FP/SIMD register) on this core's stack *before*
///   calling `bh_irq`, and restores them from there after it returns: a
///   nested IRQ overwrites ELR_EL1/SPSR_EL1, and the nested entry saves
///   and restores its own copy on the stack below ours;
/// - `bh_irq` masks IRQs again (`daifset`) before the end of interrupt
///   and before returning, so no IRQ can arrive between the vector code's
///   restore of ELR_EL1/SPSR_EL1 and its `eret`;
/// - the GIC CPU interface does the priority work: after the acknowledge
///   its running priority is this SGI's, so it signals only a more urgent
///   group (a higher level's SGI, a top half); the same level's next SGI
///   waits for this one's end of interrupt (a level never nests in
///   itself), and ends of interrupt come in the reverse order of the
///   acknowledges, as GICv2 requires, because a nested handler ends its
///   interrupt before returning to the one it interrupted;
/// - the stack: each nesting takes the 800-byte frame plus the handler's
///   own; with three priorities in use (0xa0, 0x80, 0x40) that is at most
///   three frames, far inside the 64 KiB per core.
#[no_mangle]
extern "C" fn bh_irq() {
    let cpu = Virt::cpu() % CORES;
    // Plain loads and stores, no RMW (this runs on every IRQ, which
    // `drain_cost` measures): only this core's handlers touch its depth,
    // and a nested one restores it before the one it interrupted resumes.
    let depth = IRQ_DEPTH[cpu].load(Ordering::Relaxed) + 1;
    IRQ_DEPTH[cpu].store(depth, Ordering::Relaxed);
    if depth > 1 {
        let nested = NESTED_IRQS[cpu].load(Ordering::Relaxed) + 1;
        NESTED_IRQS[cpu].store(nested, Ordering::Relaxed);
        if depth > MAX_IRQ_DEPTH[cpu].load(Ordering::Relaxed) {
            MAX_IRQ_DEPTH[cpu].store(depth, Ordering::Relaxed);
        }
    }
    bh_irq_dispatch(cpu);
    IRQ_DEPTH[cpu].store(depth - 1, Ordering::Relaxed);
}

/// The body of [`bh_irq`] on core `cpu`: acknowledge, dispatch, end of
/// interrupt.
#[inline(always)]
fn bh_irq_dispatch(cpu: usize) {
    let iar = mmio_read(GICC_IAR);
    let id = iar & 0x3ff;
    if id == 1023 {
        return; // spurious
    }
    let source = ((iar >> 10) & 7) as usize;
    if id == SGI_TOP {
        // SAFETY: `bh_irq_top` is defined by `entry!` as an
        // `extern "C" fn(usize)` that calls the firmware's safe top half.
        unsafe { bh_irq_top(source % CORES) };
        // Release: pairs with the Acquire load in `top_sgis`.
        TOP_SGIS[cpu][source % CORES].fetch_add(1, Ordering::Release);
        mmio_write(GICC_EOIR, iar);
        send_sgi(source % CORES, SGI_WAKE);
        return;
    }
    if id == SGI_WAKE {
        mmio_write(GICC_EOIR, iar);
        return;
    }
    if id != SGI_DRAIN {
        bh_irq_level(cpu, iar);
        return;
    }
    SGIS[cpu][source % CORES].fetch_add(1, Ordering::Relaxed);
    // SAFETY: `bh_irq_drain` is defined by `entry!` as an
    // `extern "C" fn()` that calls the firmware's safe drain function.
    unsafe { bh_irq_drain() };
    // After the drain: a drain SGI sent while it ran (out of budget)
    // stays pending and is taken after this one ends.
    mmio_write(GICC_EOIR, iar);
}

/// A level drain SGI ([`SGI_LEVEL`]) on core `cpu`, acknowledged as
/// `iar`: its drain, nested (IRQs unmasked; see [`bh_irq`]), then the end
/// of interrupt. Any other interrupt fails the run.
fn bh_irq_level(cpu: usize, iar: u32) {
    let id = iar & 0x3ff;
    let Some(level) = SGI_LEVEL.iter().position(|&s| s == id) else {
        fail(format_args!("unexpected interrupt {id}"));
    };
    LEVEL_SGIS[cpu][level].fetch_add(1, Ordering::Relaxed);
    // SAFETY: unmasks IRQs on this core inside the IRQ handler (nested
    // interrupts): the vector code saved ELR_EL1, SPSR_EL1 and every
    // register on the stack before calling `bh_irq`, and restores them
    // after it returns; the GIC's running priority is now this SGI's, so
    // only a more urgent interrupt is taken (see `bh_irq`). Not `nomem`:
    // a compiler barrier, as interrupts may now change memory.
    unsafe { asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
    // SAFETY: `bh_irq_drain_at` is defined by `entry!` as an
    // `extern "C" fn(usize)` that calls the firmware's safe level drain
    // with a level below `LEVELS` (`Level::new` cannot panic on it).
    unsafe { bh_irq_drain_at(level) };
    // SAFETY: masks IRQs again: from here until the vector code's `eret`,
    // ELR_EL1 and SPSR_EL1 must not be overwritten.
    unsafe { asm!("msr daifset, #2", options(nostack, preserves_flags)) };
    mmio_write(GICC_EOIR, iar);
}

/// The QEMU virt board with a real drain interrupt: like [`Virt`], but
/// `pend_drain(cpu)` sends the drain SGI to core `cpu`, whose IRQ vector
/// runs the drain given to [`entry!`] (`irq_drain = …`).
pub struct VirtGic;

impl Board for VirtGic {
    fn cpu() -> usize {
        Virt::cpu()
    }

    fn now_ns() -> u64 {
        Virt::now_ns()
    }

    fn pend_drain(cpu: usize, _level: bottomhalf::Level) {
        if cpu < CORES {
            KICKS[cpu].fetch_add(1, Ordering::Relaxed);
            send_drain_sgi(cpu);
        }
    }
}

/// The QEMU virt board with one drain SGI per bottom-half level (for
/// `Runtime<BareMetal<VirtGicLevels>, 4, 2>`): `pend_drain(cpu, level)`
/// sends [`SGI_LEVEL`]`[level]` to core `cpu`, whose IRQ vector runs the
/// level drain given to [`entry!`] (`irq_levels = …`) with IRQs
/// unmasked, at the level's GIC priority ([`LEVEL_PRIORITY`]): level 1's
/// drain preempts a running level-0 drain, never the other way round.
/// A level without an SGI (`>= LEVELS`) fails the run.
pub struct VirtGicLevels;

impl Board for VirtGicLevels {
    fn cpu() -> usize {
        Virt::cpu()
    }

    fn now_ns() -> u64 {
        Virt::now_ns()
    }

    fn pend_drain(cpu: usize, level: Level) {
        let Some(&sgi) = SGI_LEVEL.get(level.index()) else {
            fail(format_args!("pend_drain({cpu}, {level}): no SGI for it"));
        };
        if cpu < CORES {
            LEVEL_KICKS[cpu][level.index()].fetch_add(1, Ordering::Relaxed);
            send_sgi(cpu, sgi);
        }
    }
}

// ---------------------------------------------------------------- board

static PEND: [AtomicBool; CORES] = [const { AtomicBool::new(false) }; CORES];
static KICKS: [AtomicU32; CORES] = [const { AtomicU32::new(0) }; CORES];

/// The QEMU virt board with four Cortex-A53 cores, for
/// `Runtime<BareMetal<Virt>, 4>`.
pub struct Virt;

impl Board for Virt {
    /// `MPIDR_EL1.Aff0`: 0..3 on virt with `-smp 4`.
    fn cpu() -> usize {
        (mpidr() & 0xff) as usize
    }

    /// The generic timer's virtual count in nanoseconds.
    fn now_ns() -> u64 {
        ticks_to_ns(cntvct(), cntfrq())
    }

    /// Sets core `cpu`'s drain flag, which that core polls; counts the kick.
    fn pend_drain(cpu: usize, _level: bottomhalf::Level) {
        if let (Some(flag), Some(kicks)) = (PEND.get(cpu), KICKS.get(cpu)) {
            kicks.fetch_add(1, Ordering::Relaxed);
            // Release: pairs with the Acquire swap in `take_pend`.
            flag.store(true, Ordering::Release);
        }
    }
}

fn ticks_to_ns(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    (ticks / freq) * 1_000_000_000 + (ticks % freq) * 1_000_000_000 / freq
}

/// Takes core `cpu`'s drain flag: `true` if `pend_drain(cpu)` was called
/// since the last take (the core should drain now, as a pended drain
/// interrupt would).
pub fn take_pend(cpu: usize) -> bool {
    PEND[cpu].swap(false, Ordering::Acquire)
}

/// `true` if core `cpu`'s drain flag is set (without taking it).
pub fn is_pended(cpu: usize) -> bool {
    PEND[cpu].load(Ordering::Acquire)
}

/// `pend_drain(cpu)` calls so far.
pub fn kicks(cpu: usize) -> u32 {
    KICKS[cpu].load(Ordering::Relaxed)
}

/// The generic timer in nanoseconds (the board's clock).
pub fn now_ns() -> u64 {
    Virt::now_ns()
}

// ---------------------------------------------------------------- sync helpers

/// Spins until `cond` holds; fails the test after 20 s (of the generic
/// timer), naming `what` it waited for.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_ns(what, 20_000_000_000, cond);
}

/// [`wait_until`] with a limit of `ns` nanoseconds of the generic timer
/// instead of 20 s.
pub fn wait_until_ns(what: &str, ns: u64, mut cond: impl FnMut() -> bool) {
    let start = now_ns();
    let mut n = 0u32;
    while !cond() {
        spin_yield();
        n = n.wrapping_add(1);
        if n.is_multiple_of(64) && now_ns().wrapping_sub(start) > ns {
            fail(format_args!(
                "timed out after {} ms waiting for {what}",
                ns / 1_000_000
            ));
        }
    }
}

/// One step of a spin-wait: `yield`. Under multi-threaded TCG (no
/// `-icount`) QEMU treats it as a `nop`; under `-icount`, where QEMU runs
/// the vCPUs round-robin on one thread, it ends the vCPU's turn, so a core
/// that waits for another hands it the thread at once instead of spinning
/// out its whole turn (100 ms of virtual time: QEMU's round-robin kick
/// period). (`core::hint::spin_loop` is an `isb` on AArch64, which QEMU
/// does not treat as a yield.)
pub fn spin_yield() {
    // SAFETY: `yield` is a hint with no memory or register effect.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
}

static BARRIER_COUNT: AtomicU32 = AtomicU32::new(0);
static BARRIER_GEN: AtomicU32 = AtomicU32::new(0);

/// Waits until all four cores have reached this barrier.
pub fn barrier() {
    let gen = BARRIER_GEN.load(Ordering::Acquire);
    // AcqRel: the last core to arrive sees every core's writes before the
    // barrier and publishes them with the Release increment of the
    // generation, which the others load with Acquire.
    if BARRIER_COUNT.fetch_add(1, Ordering::AcqRel) + 1 == CORES as u32 {
        BARRIER_COUNT.store(0, Ordering::Relaxed);
        BARRIER_GEN.fetch_add(1, Ordering::Release);
    } else {
        wait_until("a barrier", || BARRIER_GEN.load(Ordering::Acquire) != gen);
    }
}

/// A fixed pseudo-random sequence (xorshift32), so a scenario's per-core
/// pattern is the same on every run.
pub struct XorShift(u32);

impl XorShift {
    /// A sequence from `seed` (0 is replaced by a constant).
    pub const fn new(seed: u32) -> XorShift {
        XorShift(if seed == 0 { 0x9e37_79b9 } else { seed })
    }

    /// The next value.
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

// ---------------------------------------------------------------- semihosting

const SYS_OPEN: u64 = 0x01;
const SYS_WRITE: u64 = 0x05;
const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

fn semihost(op: u64, arg: usize) -> u64 {
    let r: u64;
    // SAFETY: a semihosting call (QEMU `-semihosting`); `arg` points to
    // the call's parameter block or string, alive for the whole call, which
    // the host only reads.
    unsafe { asm!("hlt #0xf000", inout("x0") op => r, in("x1") arg, options(nostack)) };
    r
}

/// Ends the QEMU run with `code` as its exit status.
pub fn exit(code: u32) -> ! {
    // AArch64 SYS_EXIT takes a parameter block: reason, subcode (the status).
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    semihost(SYS_EXIT, block.as_ptr() as usize);
    park()
}

static PRINT_LOCK: AtomicBool = AtomicBool::new(false);
/// The semihosting handle of the host's stdout, plus one (0: not open yet).
static STDOUT: AtomicU32 = AtomicU32::new(0);

/// The host's stdout: `SYS_OPEN(":tt", "w")` once (under the output lock),
/// as cortex-m-semihosting's `hstdout` does. (`SYS_WRITE0` would go to
/// QEMU's semihosting console, which is stderr.)
fn stdout_handle() -> u64 {
    let h = STDOUT.load(Ordering::Relaxed);
    if h != 0 {
        return u64::from(h - 1);
    }
    const TT: &[u8] = b":tt\0";
    // Parameter block: file name, mode 4 ("w"), name length without NUL.
    let block: [u64; 3] = [TT.as_ptr() as u64, 4, 3];
    let r = semihost(SYS_OPEN, block.as_ptr() as usize);
    STDOUT.store(r as u32 + 1, Ordering::Relaxed);
    r
}

/// One output line, written with SYS_WRITE to the host's stdout in pieces
/// of up to 256 bytes.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        if self.len > 0 {
            // Parameter block: handle, buffer, length.
            let block: [u64; 3] = [stdout_handle(), self.buf.as_ptr() as u64, self.len as u64];
            semihost(SYS_WRITE, block.as_ptr() as usize);
            self.len = 0;
        }
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints one line (under the output lock, so lines of different cores
/// never interleave). Used by [`println!`].
pub fn print_fmt(args: fmt::Arguments<'_>) {
    // Bounded wait: a core that faults while printing must not stop the
    // others' FAIL line from coming out.
    let mut tries = 0u32;
    while PRINT_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
        && tries < 10_000_000
    {
        tries += 1;
        core::hint::spin_loop();
    }
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    line.flush();
    PRINT_LOCK.store(false, Ordering::Release);
}

/// Prints `FAIL (cpu N): …` and exits with status 1.
pub fn fail(args: fmt::Arguments<'_>) -> ! {
    print_fmt(format_args!("FAIL (cpu {}): {}", Virt::cpu(), args));
    exit(1)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail(format_args!("panic: {info}"))
}
