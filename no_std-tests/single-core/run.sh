#!/usr/bin/env bash
# no_std-tests/single-core/run.sh — build the single-core firmware for
# thumbv6m-none-eabi (release), check that no critical-section
# implementation is linked, run it under qemu-system-arm (lm3s6965evb,
# Cortex-M0, semihosting) with a timeout, and compare its output with
# expected.txt exactly. Prints PASS or FAIL; exits non-zero on failure.
#
#   bash no_std-tests/single-core/run.sh
#   BH_QEMU_TIMEOUT=60      seconds for the QEMU run

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2
TARGET=thumbv6m-none-eabi
QEMU_TIMEOUT=${BH_QEMU_TIMEOUT:-60}
ELF=target/$TARGET/release/bottomhalf-single-core
OUT=target/single-core.out
START=$SECONDS

fail() {
    echo "FAIL single-core: $*"
    exit 1
}

command -v qemu-system-arm >/dev/null 2>&1 ||
    fail "qemu-system-arm not found (apt-get install -y qemu-system-arm)"

echo "==> build ($TARGET, release; portable-atomic unsafe-assume-single-core)"
timeout 900 cargo build --release --target "$TARGET" </dev/null ||
    fail "build failed (a library that picks portable-atomic's mode breaks this build)"

# The firmware has no critical-section implementation: a use of one would
# have failed to link; check that none slipped in from a dependency either.
if command -v nm >/dev/null 2>&1; then
    if nm "$ELF" | grep -q '_critical_section_1_0_acquire'; then
        fail "a critical-section implementation is linked into $ELF"
    fi
    echo "symbols: no _critical_section_1_0_acquire in the binary"
fi

echo "==> run on qemu-system-arm -cpu cortex-m0"
timeout --kill-after=5 "$QEMU_TIMEOUT" qemu-system-arm -machine lm3s6965evb -cpu cortex-m0 \
    -nographic -semihosting-config enable=on,target=native -icount shift=0,align=off,sleep=off \
    -kernel "$ELF" >"$OUT" 2>target/single-core.err </dev/null
rc=$?
sed 's/^/    | /' "$OUT"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "hung: killed after ${QEMU_TIMEOUT}s"
elif [ "$rc" != 0 ]; then
    fail "exit code $rc"
fi
if ! diff -u expected.txt "$OUT"; then
    fail "output differs from expected.txt"
fi
echo "PASS single-core ($((SECONDS - START))s)"
