#!/usr/bin/env bash
# no_std-tests/run.sh — build every firmware test binary for thumbv6m and
# thumbv7m, run each under qemu-system-arm (lm3s6965evb; Cortex-M0 and
# Cortex-M3), check its exit code and its output against
# expected/<bin>.txt (or expected/<bin>.<target>.txt when a target needs
# its own), then measure the runtime's footprint. One line per (binary,
# target): PASS/FAIL; each binary's output is shown so the log has its
# counts. Ends with `N passed, N failed`; exits non-zero on any failure or
# hang.
#
# In an expected file, `{n}` matches any unsigned integer (counts that vary
# between cores or timings); every other character must match exactly.
#
#   bash no_std-tests/run.sh            everything
#   bash no_std-tests/run.sh storm      only the named binaries (and no footprint step)
#   BH_QEMU_TIMEOUT=60                  seconds per QEMU run

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
DIR=$PWD
TARGET_DIR=$DIR/target
QEMU_TIMEOUT=${BH_QEMU_TIMEOUT:-60}
BUILD_TIMEOUT=900
START=$SECONDS

# target -> QEMU cpu
TARGETS=(thumbv6m-none-eabi thumbv7m-none-eabi)
declare -A CPU=([thumbv6m-none-eabi]=cortex-m0 [thumbv7m-none-eabi]=cortex-m3)
# Deterministic timing: one instruction = 1 ns of virtual time, and SysTick
# (the scenarios' event source) counts virtual time; so a run's counts are
# reproducible, run after run.
QEMU_ARGS=(-machine lm3s6965evb -nographic -semihosting-config enable=on,target=native
    -icount shift=0,align=off,sleep=off)

# ---------------------------------------------------------------- prerequisites

if ! command -v qemu-system-arm >/dev/null 2>&1; then
    echo "firmware: FAIL: qemu-system-arm not found (install it: apt-get install -y qemu-system-arm)"
    echo "0 passed, 1 failed"
    exit 1
fi
echo "firmware: $(qemu-system-arm --version | head -n 1)"
if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup target list --installed 2>/dev/null)
    for t in "${TARGETS[@]}"; do
        if ! grep -qx "$t" <<<"$installed"; then
            echo "firmware: FAIL: Rust target $t is not installed (rustup target add $t)"
            echo "0 passed, 1 failed"
            exit 1
        fi
    done
fi

# ---------------------------------------------------------------- binaries

BINS=()
if [ $# -gt 0 ]; then
    BINS=("$@")
else
    for f in src/bin/*.rs; do
        b=${f##*/}
        BINS+=("${b%.rs}")
    done
fi

PASSED=0
FAILED=0
RESULTS=()
OUTDIR=$TARGET_DIR/firmware-output
mkdir -p "$OUTDIR"

# Expected-output matching (`{n}` matches any unsigned integer).
# shellcheck source=expect.sh
source "$DIR/expect.sh"

record() { # STATUS NAME DETAIL
    RESULTS+=("$(printf '%-4s %-20s %-20s %s' "$1" "$2" "$3" "${4:-}")")
    if [ "$1" = PASS ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi
}

declare -A BUILT=()
for t in "${TARGETS[@]}"; do
    echo
    echo "==> build ($t, release)"
    log=$OUTDIR/build.$t.log
    timeout "$BUILD_TIMEOUT" cargo build --release --target "$t" --bins \
        --target-dir "$TARGET_DIR" >"$log" 2>&1 </dev/null
    rc=$?
    grep -vE '^\s+(Compiling|Finished|Blocking|Downloaded|Downloading|Locking|Adding|Updating)' "$log"
    if [ "$rc" = 0 ]; then
        BUILT[$t]=1
    else
        echo "build for $t: FAILED (exit $rc)"
    fi
done

for t in "${TARGETS[@]}"; do
    cpu=${CPU[$t]}
    echo
    echo "==> run on qemu-system-arm -cpu $cpu ($t)"
    for b in "${BINS[@]}"; do
        name="$b"
        if [ -z "${BUILT[$t]:-}" ]; then
            echo "FAIL $b [$t]: not built"
            record FAIL "$b" "$t" "not built"
            continue
        fi
        elf=$TARGET_DIR/$t/release/$b
        if [ ! -f "$elf" ]; then
            echo "FAIL $b [$t]: no binary $elf"
            record FAIL "$b" "$t" "no binary"
            continue
        fi
        expected=expected/$b.$t.txt
        [ -f "$expected" ] || expected=expected/$b.txt
        out=$OUTDIR/$b.$t.out
        err=$OUTDIR/$b.$t.err
        t0=$(date +%s.%N)
        timeout --kill-after=5 "$QEMU_TIMEOUT" qemu-system-arm "${QEMU_ARGS[@]}" -cpu "$cpu" \
            -kernel "$elf" >"$out" 2>"$err" </dev/null
        rc=$?
        secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        sed 's/^/    | /' "$out"
        why=""
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            why="hung: killed after ${QEMU_TIMEOUT}s"
        elif [ "$rc" != 0 ]; then
            why="exit code $rc"
        elif [ ! -f "$expected" ]; then
            why="no expected output ($expected)"
        elif ! compare "$expected" "$out"; then
            why="output differs from $expected"
        fi
        if [ -z "$why" ]; then
            echo "PASS $name [$t] (${secs}s)"
            record PASS "$name" "$t" "${secs}s"
        else
            if [ -s "$err" ]; then
                grep -v '^Timer with period zero' "$err" | sed 's/^/    stderr| /'
            fi
            echo "FAIL $name [$t]: $why (${secs}s)"
            record FAIL "$name" "$t" "$why"
        fi
    done
done

# ---------------------------------------------------------------- footprint

size_tool() {
    local sysroot_bin
    sysroot_bin="$(rustc --print sysroot 2>/dev/null)/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-size"
    if [ -x "$sysroot_bin" ]; then echo "$sysroot_bin"; return; fi
    for c in llvm-size size; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -A "$TARGET_DIR/${TARGETS[0]}/release/footprint" >/dev/null 2>&1; then
            echo "$c"
            return
        fi
    done
    return 1
}

section() { # TOOL ELF NAME -> size in bytes (0 if absent)
    "$1" -A "$2" | awk -v s="$3" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}

if [ $# -eq 0 ]; then
    echo
    echo "==> footprint (release profile: opt-level \"s\", lto, codegen-units 1, panic abort)"
    echo "    footprint = one vector, one tasklet, one MpscMailbox<u16, 8>, drain in PendSV;"
    echo "    baseline  = the same firmware without bottomhalf; runtime = footprint - baseline"
    echo "    work      = footprint + one Work queued from the interrupt, one flush, one cancel;"
    echo "                +work = work - footprint"
    echo "    delayed   = work + a board clock and deadline hook, one DelayedWork rescheduled"
    echo "                from the interrupt and fired by timer_fired (footprint_delayed)"
    fp_ok=1
    if ! tool=$(size_tool); then
        echo "footprint: no size tool (llvm-size or binutils' size) found"
        fp_ok=0
    else
        printf '    %-20s %-9s %10s %10s %10s %10s %10s\n' target section footprint baseline runtime work +work
        for t in "${TARGETS[@]}"; do
            fp=$TARGET_DIR/$t/release/footprint
            base=$TARGET_DIR/$t/release/footprint_baseline
            work=$TARGET_DIR/$t/release/footprint_work
            if [ ! -f "$fp" ] || [ ! -f "$base" ] || [ ! -f "$work" ]; then
                echo "    $t: binaries missing"
                fp_ok=0
                continue
            fi
            for s in .text .rodata .data .bss; do
                a=$(section "$tool" "$fp" "$s")
                z=$(section "$tool" "$base" "$s")
                w=$(section "$tool" "$work" "$s")
                printf '    %-20s %-9s %10d %10d %+10d %10d %+10d\n' "$t" "$s" "$a" "$z" $((a - z)) "$w" $((w - a))
            done
        done
        for t in "${TARGETS[@]}"; do
            out=$OUTDIR/footprint.$t.out
            [ -f "$out" ] && grep '^RAM:' "$out" | sed "s/^/    $t /"
        done
        # Limits on thumbv7m (Cortex-M3) .text, as "with without max why":
        # - the minimal firmware's runtime at most 2 KiB (issue 10's limit);
        # - work items, and work items with delayed work, over the minimal
        #   firmware, and delayed work over work items: regression bounds
        #   at today's figures plus about 5 %.
        #   Issue 10 asks for at most 1 KiB for both together; that is not
        #   met yet, and the line after each says by how much.
        for limit in "footprint footprint_baseline 2048 limit" \
            "footprint_work footprint 1420 bound" \
            "footprint_delayed footprint 2590 bound" \
            "footprint_delayed footprint_work 1170 bound"; do
            read -r with without max why <<<"$limit"
            t=thumbv7m-none-eabi
            a=$TARGET_DIR/$t/release/$with
            z=$TARGET_DIR/$t/release/$without
            if [ ! -f "$a" ] || [ ! -f "$z" ]; then
                echo "    $why: $with or $without missing: FAIL"
                fp_ok=0
                continue
            fi
            d=$(($(section "$tool" "$a" .text) - $(section "$tool" "$z" .text)))
            if [ "$d" -le "$max" ]; then
                echo "    $why: $with - $without .text on $t = $d B <= $max B: ok"
            else
                echo "    $why: $with - $without .text on $t = $d B > $max B: FAIL"
                fp_ok=0
            fi
            if [ "$why" = bound ] && [ "$without" = footprint ]; then
                echo "      (issue 10's budget for work items and delayed work is 1024 B: $((d - 1024)) B over)"
            fi
        done
        # The peer a Cortex-M author would pick instead: footprint_delayed's
        # job as an RTIC v2 app (rtic-sync, rtic-monotonics SysTick), both
        # over the same baseline. A report, not a limit.
        for t in "${TARGETS[@]}"; do
            z=$TARGET_DIR/$t/release/footprint_baseline
            a=$TARGET_DIR/$t/release/footprint_delayed
            r=$TARGET_DIR/$t/release/footprint_rtic
            if [ ! -f "$z" ] || [ ! -f "$a" ] || [ ! -f "$r" ]; then
                echo "    peer [$t]: footprint_delayed or footprint_rtic missing: FAIL"
                fp_ok=0
                continue
            fi
            zb=$(section "$tool" "$z" .text)
            ab=$(($(section "$tool" "$a" .text) - zb))
            rb=$(($(section "$tool" "$r" .text) - zb))
            echo "    peer [$t]: .text over footprint_baseline: bottomhalf (footprint_delayed) $ab B, RTIC v2 (footprint_rtic) $rb B; ratio $((ab * 100 / rb))/100"
        done
    fi
    if [ "$fp_ok" = 1 ]; then
        record PASS footprint sizes ""
        echo "PASS footprint"
    else
        record FAIL footprint sizes "could not measure, or over a limit"
        echo "FAIL footprint"
    fi
fi

# ---------------------------------------------------------------- summary

echo
echo "==> firmware summary"
for r in "${RESULTS[@]}"; do
    echo "$r"
done
total=$((SECONDS - START))
echo "firmware: total ${total}s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
