#!/usr/bin/env bash
# scripts/bss-check.sh — check that `static` runtimes and mailboxes land in
# `.bss` (all-zero initial bytes: RAM only, no flash copy, no file size).
#
# Builds two binaries and reads their symbol tables with `nm`:
#   firmware  no_std-tests, bin `bss`, thumbv7m-none-eabi, release:
#             RT (Runtime with a board handler table), MB (Mailbox),
#             MPSC (MpscMailbox) must be `.bss`; TUNED (a Runtime with a
#             non-default Config, the documented exception) must be `.data`.
#   host      examples/statics_in_bss.rs, release (Linux only):
#             RT (Runtime<Signals, 256>), MB, MPSC and the crate's
#             per-signal table SLOTS must be `.bss`.
# Prints one line per symbol (PASS/FAIL, binary, symbol, section, size) and
# each binary's .data/.bss/.rodata sizes; exits non-zero if any symbol is
# in the wrong section.
#
#   bash scripts/bss-check.sh                 check this tree
#   bash scripts/bss-check.sh --before REV    also build REV (git archive) and
#                                             show its sizes and sections first
#                                             (informational: REV's result does
#                                             not change the exit status)
#   bash scripts/bss-check.sh --tree DIR      check the source tree DIR
#
# A tree without the `bss` firmware bin (older revisions) is checked with
# its `footprint` bin instead (RT, and RX as the MpscMailbox); the host
# example is copied in from this tree (it uses only long-standing API).

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD
TARGET=thumbv7m-none-eabi
TREE=$ROOT
BEFORE=""
while [ $# -gt 0 ]; do
    case $1 in
        --tree) TREE=$(cd "$2" && pwd) || exit 2; shift ;;
        --before) BEFORE=$2; shift ;;
        -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "bss-check: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

NM=""
for c in nm llvm-nm arm-none-eabi-nm rust-nm; do
    if command -v "$c" >/dev/null 2>&1; then NM=$c; break; fi
done
SIZE=""
for c in size llvm-size arm-none-eabi-size rust-size; do
    if command -v "$c" >/dev/null 2>&1; then SIZE=$c; break; fi
done
if [ -z "$NM" ] || [ -z "$SIZE" ]; then
    echo "bss-check: FAIL: need nm and size (binutils or llvm-tools)"
    exit 1
fi

# section_sizes FILE — ".data N .bss N .rodata N" (bytes)
section_sizes() {
    "$SIZE" -A "$1" | awk '$1==".data"||$1==".bss"||$1==".rodata"{printf "%s %s  ", $1, $2}'
}

# check_symbol LABEL FILE SYMBOL WANT — WANT is .bss or .data
check_symbol() {
    local label=$1 file=$2 sym=$3 want=$4 line type size section
    line=$("$NM" -S -C "$file" | awk -v s="$sym" '{ n=$NF; if (n ~ ("::" s "$")) { print; exit } }')
    if [ -z "$line" ]; then
        printf '  FAIL %-9s %-6s symbol not found\n' "$label" "$sym"
        return 1
    fi
    # "ADDR SIZE TYPE NAME"
    size=$((16#$(awk '{print $2}' <<<"$line")))
    type=$(awk '{print $3}' <<<"$line")
    case $type in
        b | B) section=.bss ;;
        d | D) section=.data ;;
        r | R) section=.rodata ;;
        *) section="type $type" ;;
    esac
    local verdict=PASS
    [ "$section" = "$want" ] || verdict=FAIL
    printf '  %s %-9s %-6s %-8s %7d bytes (want %s)\n' "$verdict" "$label" "$sym" "$section" "$size" "$want"
    [ "$verdict" = PASS ]
}

# check_tree DIR — build and check; returns the number of failures.
check_tree() {
    local dir=$1 fails=0 fw_bin fw_syms host
    echo "bss-check: tree $dir"
    if [ -f "$dir/no_std-tests/src/bin/bss.rs" ]; then
        fw_bin=bss
        fw_syms=("RT .bss" "MB .bss" "MPSC .bss" "TUNED .data")
    else
        fw_bin=footprint
        fw_syms=("RT .bss" "RX .bss")
    fi
    if ! (cd "$dir/no_std-tests" &&
        cargo build --quiet --release --bin "$fw_bin" --target "$TARGET" 2>&1 | tail -n 20); then
        :
    fi
    local fw=$dir/no_std-tests/target/$TARGET/release/$fw_bin
    if [ ! -f "$fw" ]; then
        echo "  FAIL firmware  build failed (no_std-tests, bin $fw_bin, $TARGET)"
        fails=$((fails + 1))
    else
        echo "  firmware ($TARGET, bin $fw_bin): $(section_sizes "$fw")"
        for s in "${fw_syms[@]}"; do
            check_symbol firmware "$fw" ${s% *} ${s#* } || fails=$((fails + 1))
        done
    fi
    if [ "$(uname -s)" != Linux ]; then
        echo "  host: skipped (the Signals backend is Linux-only)"
        return "$fails"
    fi
    [ -f "$dir/examples/statics_in_bss.rs" ] || cp "$ROOT/examples/statics_in_bss.rs" "$dir/examples/"
    (cd "$dir" && CARGO_TARGET_DIR=$dir/target cargo build --quiet --release --example statics_in_bss 2>&1 | tail -n 20)
    host=$dir/target/release/examples/statics_in_bss
    if [ ! -f "$host" ]; then
        echo "  FAIL host      build failed (examples/statics_in_bss.rs)"
        fails=$((fails + 1))
    else
        echo "  host (Linux, Runtime<Signals, 256>): $(section_sizes "$host")"
        for s in RT MB MPSC SLOTS; do
            check_symbol host "$host" "$s" .bss || fails=$((fails + 1))
        done
    fi
    return "$fails"
}

if [ -n "$BEFORE" ]; then
    OLD=$(mktemp -d "${TMPDIR:-/tmp}/bss-before.XXXXXX")
    trap 'rm -rf "$OLD"' EXIT
    if git -C "$ROOT" archive "$BEFORE" | tar -x -C "$OLD"; then
        echo "==> before: $BEFORE (informational)"
        check_tree "$OLD"
        echo "    before: $? symbol(s) in the wrong section"
    else
        echo "bss-check: cannot archive $BEFORE"
    fi
    echo "==> after: this tree"
fi

check_tree "$TREE"
FAILS=$?
if [ "$FAILS" -eq 0 ]; then
    echo "bss-check: ok"
else
    echo "bss-check: $FAILS symbol(s) in the wrong section"
fi
[ "$FAILS" -eq 0 ]
