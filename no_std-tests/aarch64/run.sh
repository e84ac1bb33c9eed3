#!/usr/bin/env bash
# no_std-tests/aarch64/run.sh — build the four-core firmware tests for
# aarch64-unknown-none (release), run each binary under
# qemu-system-aarch64 (virt, four Cortex-A53 cores, semihosting) with a
# timeout, and check its exit code and its output against
# expected/<bin>.txt, where `{n}` matches any unsigned integer. One
# PASS/FAIL line per binary (its output shown above it), then
# `N passed, N failed`; exits non-zero on any failure or hang.
#
#   bash no_std-tests/aarch64/run.sh           every binary
#   bash no_std-tests/aarch64/run.sh percpu    only the named binaries (or
#                                              variants, percpu_icount)
#   BH_QEMU_TIMEOUT=60                         seconds per QEMU run
#
# No -icount: with it QEMU runs the four vCPUs round-robin on one host
# thread (and about 25x slower); without it, multi-threaded TCG runs each
# vCPU on its own host thread, so the cores really run at the same time.
# See README.md ("Four cores"). The exceptions run with -icount, twice, and
# pass only if both runs print the same: drain_cost, on one core with
# -icount shift=4 (one generic-timer tick per instruction), and
# percpu_icount, levels_icount and work_cross_icount, percpu, levels and
# work_cross again on four round-robin cores (qemu_cores_for).

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
TARGET=aarch64-unknown-none
QEMU=qemu-system-aarch64
QEMU_TIMEOUT=${BH_QEMU_TIMEOUT:-60}
QEMU_ARGS=(-machine virt -cpu cortex-a53 -m 128M -nographic -nic none -semihosting)
OUTDIR=target/firmware-output
START=$SECONDS
PASSED=0
FAILED=0

if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "firmware-a64: FAIL: $QEMU not found (Debian: apt-get install -y qemu-system-arm)"
    echo "0 passed, 1 failed"
    exit 1
fi
echo "firmware-a64: $($QEMU --version | head -n 1)"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "firmware-a64: FAIL: Rust target $TARGET is not installed (rustup target add $TARGET)"
    echo "0 passed, 1 failed"
    exit 1
fi

# Extra runs of a binary under other QEMU options, NAME=BINARY: NAME has
# its own line in qemu_cores_for/runs_for, and is checked against
# expected/NAME.txt if there is one, else the binary's expected file.
VARIANTS=(percpu_icount=percpu levels_icount=levels work_cross_icount=work_cross)

BINS=()
if [ $# -gt 0 ]; then
    BINS=("$@")
else
    for f in src/bin/*.rs; do
        b=${f##*/}
        BINS+=("${b%.rs}")
    done
    for v in "${VARIANTS[@]}"; do
        BINS+=("${v%%=*}")
    done
fi

# elf_of NAME — the binary a run name stands for.
elf_of() {
    local v
    for v in "${VARIANTS[@]}"; do
        if [ "${v%%=*}" = "$1" ]; then
            echo "${v#*=}"
            return
        fi
    done
    echo "$1"
}

mkdir -p "$OUTDIR"

# qemu_cores_for BIN — the cores and clock options of one binary.
qemu_cores_for() {
    case $1 in
        # -icount shift=4: 2^4 ns of virtual time per instruction, and the
        # generic timer ticks every 16 ns (62.5 MHz): one tick per
        # instruction. align=off, sleep=off: virtual time only.
        drain_cost) echo "-smp 1 -icount shift=4,align=off,sleep=off" ;;
        # Four cores with -icount: QEMU runs them round-robin on one host
        # thread, switching at fixed instruction counts, so every figure,
        # the handler time included, is the same on every run.
        percpu_icount) echo "-smp 4 -icount shift=4,align=off,sleep=off" ;;
        # levels on four round-robin cores: the same preemptions, nested
        # IRQs and counts on every run (waits `yield` the thread: lib.rs,
        # spin_yield).
        levels_icount) echo "-smp 4 -icount shift=4,align=off,sleep=off" ;;
        # work_cross on four round-robin cores: every cross-core kick,
        # race and cancel lands at the same instruction on every run (its
        # spins `yield`, so a turn ends at each step of one).
        work_cross_icount) echo "-smp 4 -icount shift=4,align=off,sleep=off" ;;
        *) echo "-smp 4" ;;
    esac
}

# runs_for BIN — how many times to run it; from the second run on, the
# output must be byte-identical to the first (determinism).
runs_for() {
    case $1 in
        drain_cost | percpu_icount | levels_icount | work_cross_icount) echo 2 ;;
        *) echo 1 ;;
    esac
}

# Expected-output matching, shared with ../run.sh.
# shellcheck source=../expect.sh
source ../expect.sh

echo
echo "==> build ($TARGET, release)"
log=$OUTDIR/build.log
timeout 900 cargo build --release --target "$TARGET" --bins >"$log" 2>&1 </dev/null
rc=$?
grep -vE '^\s+(Compiling|Finished|Blocking|Downloaded|Downloading|Locking|Adding|Updating)' "$log"
BUILT=0
[ "$rc" = 0 ] && BUILT=1
[ "$BUILT" = 1 ] || echo "build: FAILED (exit $rc)"

echo
echo "==> run on $QEMU ${QEMU_ARGS[*]} (-smp 4 unless shown)"
for b in "${BINS[@]}"; do
    elf=target/$TARGET/release/$(elf_of "$b")
    if [ "$BUILT" != 1 ] || [ ! -f "$elf" ]; then
        echo "FAIL $b: not built"
        FAILED=$((FAILED + 1))
        continue
    fi
    expected=expected/$b.txt
    [ -f "$expected" ] || expected=expected/$(elf_of "$b").txt
    read -r -a cores <<<"$(qemu_cores_for "$b")"
    runs=$(runs_for "$b")
    [ "${cores[*]}" = "-smp 4" ] || echo "  ($b: ${cores[*]}; $runs runs)"
    why=""
    t0=$(date +%s.%N)
    for ((run = 1; run <= runs; run++)); do
        out=$OUTDIR/$b.out
        err=$OUTDIR/$b.err
        [ "$run" -gt 1 ] && out=$OUTDIR/$b.run$run.out && err=$OUTDIR/$b.run$run.err
        timeout --kill-after=5 "$QEMU_TIMEOUT" "$QEMU" "${QEMU_ARGS[@]}" "${cores[@]}" \
            -kernel "$elf" >"$out" 2>"$err" </dev/null
        rc=$?
        if [ "$run" = 1 ]; then
            sed 's/^/    | /' "$out"
        fi
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            why="hung: killed after ${QEMU_TIMEOUT}s"
        elif [ "$rc" != 0 ]; then
            why="exit code $rc"
        elif [ ! -f "$expected" ]; then
            why="no expected output ($expected)"
        elif ! compare "$expected" "$out"; then
            why="output differs from $expected"
        elif [ "$run" -gt 1 ] && ! diff -u "$OUTDIR/$b.out" "$out" | sed 's/^/    /'; then
            why="run $run printed something else than run 1 (not deterministic)"
        fi
        if [ -n "$why" ]; then
            [ "$run" -gt 1 ] && sed 's/^/    run '"$run"'| /' "$out"
            break
        fi
    done
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ -z "$why" ]; then
        [ "$runs" -gt 1 ] && echo "    ($runs runs, identical output)"
        echo "PASS $b (${secs}s)"
        PASSED=$((PASSED + 1))
    else
        [ -s "$err" ] && sed 's/^/    stderr| /' "$err"
        echo "FAIL $b: $why (${secs}s)"
        FAILED=$((FAILED + 1))
    fi
done

echo
echo "firmware-a64: total $((SECONDS - START))s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
