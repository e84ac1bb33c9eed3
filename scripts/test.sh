#!/usr/bin/env bash
# scripts/test.sh — the one test command for bottomhalf (README and .ci/run call it).
#
# Installs its prerequisites, runs every step even when an earlier one
# fails, and ends with a summary table and the line `N passed, N failed`.
# Exit status is non-zero if any step failed. See scripts/README.md.
#
#   bash scripts/test.sh               everything (what CI runs)
#   bash scripts/test.sh --quick       skip miri and loom mutants
#   bash scripts/test.sh --only STEP   one step (repeatable)

set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

ALL_STEPS=(fmt clippy test doc defmt package bench-build no_std-targets bss std-other-os msrv
    firmware single-core firmware-a64 loom downstream-loom loom-mutants miri miri-tree-borrows)
QUICK_SKIPS=(loom-mutants miri miri-tree-borrows)

THUMB_TARGETS=(thumbv6m-none-eabi thumbv7m-none-eabi)
# Every no_std target the library builds for (no_std-targets). The ones
# without compare-and-swap are built once per portable-atomic mode the
# application can pick (NO_CAS_TARGETS).
NOSTD_TARGETS=(thumbv6m-none-eabi thumbv7m-none-eabi thumbv8m.main-none-eabi
    riscv32i-unknown-none-elf riscv32imac-unknown-none-elf aarch64-unknown-none
    x86_64-unknown-none)
NO_CAS_TARGETS=(thumbv6m-none-eabi riscv32i-unknown-none-elf)
# std on other systems (std-other-os): type-checked, no linker needed.
OTHER_OS_TARGETS=(x86_64-pc-windows-gnu x86_64-apple-darwin)
# The MSRV: Cargo.toml's rust-version, as a rustup toolchain (1.87 -> 1.87.0).
MSRV=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
MSRV_TOOLCHAIN=$MSRV
[[ $MSRV_TOOLCHAIN == *.*.* ]] || MSRV_TOOLCHAIN=$MSRV_TOOLCHAIN.0
MSRV_TARGET=thumbv7m-none-eabi
LOOM_PKG=bottomhalf-loom-tests
LOOM_RUSTFLAGS="--cfg bottomhalf_loom -C debug-assertions"
LOOM_PREEMPTIONS=2
MUTANT_RUN_LIMIT=${BH_MUTANT_TIMEOUT:-600}  # seconds per mutant model run
MUTANT_BUILD_LIMIT=900   # seconds per mutant build
TARGET_BASE=${CARGO_TARGET_DIR:-$ROOT/target}

usage() {
    cat <<EOF
usage: bash scripts/test.sh [--quick] [--only STEP]...

  --quick      skip ${QUICK_SKIPS[*]}
  --only STEP  run only STEP (may be given more than once; overrides --quick)
  -h, --help   this text

steps, in order: ${ALL_STEPS[*]}
EOF
}

# ---------------------------------------------------------------- arguments

QUICK=0
ONLY=()
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --only)
            if [ $# -lt 2 ]; then
                echo "test.sh: --only needs a step name" >&2
                usage >&2
                exit 2
            fi
            ONLY+=("$2")
            shift
            ;;
        --only=*) ONLY+=("${1#--only=}") ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument: $1" >&2
            usage >&2
            exit 2
            ;;
    esac
    shift
done

in_list() { # WORD LIST...
    local w=$1 x
    shift
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

for s in "${ONLY[@]}"; do
    if ! in_list "$s" "${ALL_STEPS[@]}"; then
        echo "test.sh: unknown step '$s'; steps are: ${ALL_STEPS[*]}" >&2
        exit 2
    fi
done

selected() { # STEP -> 0 if it runs this time
    if [ ${#ONLY[@]} -gt 0 ]; then
        in_list "$1" "${ONLY[@]}"
        return
    fi
    if [ "$QUICK" = 1 ] && in_list "$1" "${QUICK_SKIPS[@]}"; then
        return 1
    fi
    return 0
}

any_selected() { # STEP... -> 0 if one of them runs
    local s
    for s in "$@"; do selected "$s" && return 0; done
    return 1
}

# ---------------------------------------------------------------- running commands

# The command currently running under `timeout`; killed (with its process
# group) if this script is interrupted.
CUR_PID=""
on_signal() {
    echo
    echo "test.sh: interrupted"
    if [ -n "$CUR_PID" ]; then
        kill -TERM "$CUR_PID" 2>/dev/null
        wait "$CUR_PID" 2>/dev/null
    fi
    exit 130
}
trap on_signal INT TERM

show_cmd() { # prints `+ cmd` with env assignments unwrapped
    local out="+" a
    [ "$1" = env ] && shift
    for a in "$@"; do
        case $a in
            *' '*) if [[ $a == *=* && $a != -* ]]; then out+=" ${a%%=*}=\"${a#*=}\""; else out+=" \"$a\""; fi ;;
            *) out+=" $a" ;;
        esac
    done
    echo "$out"
}

# limited LIMIT CMD... — run CMD with a time limit, output to the terminal.
# Exit 124 means it timed out.
limited() {
    local limit=$1 rc
    shift
    timeout --kill-after=30 "$limit" "$@" &
    CUR_PID=$!
    wait "$CUR_PID"
    rc=$?
    CUR_PID=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "test.sh: timed out after ${limit}s: $*"
    fi
    return "$rc"
}

# run LIMIT CMD... — show the command, then run it limited.
run() {
    local limit=$1
    shift
    show_cmd "$@"
    limited "$limit" "$@"
}

# quietly LOGFILE LIMIT CMD... — run with output to LOGFILE only.
quietly() {
    local log=$1 limit=$2 rc
    shift 2
    timeout --kill-after=30 "$limit" "$@" >"$log" 2>&1 </dev/null &
    CUR_PID=$!
    wait "$CUR_PID"
    rc=$?
    CUR_PID=""
    return "$rc"
}

# ---------------------------------------------------------------- prerequisites

SETUP_LOG=$(mktemp "${TMPDIR:-/tmp}/bh-setup.XXXXXX")
cleanup() { rm -f "$SETUP_LOG"; }
trap cleanup EXIT

declare -A MISSING=() # prerequisite -> reason it is missing

# install_quietly WHAT CMD... — run an install command; on failure show the
# tail of its output so the reason is in the log.
install_quietly() {
    local what=$1
    shift
    echo "setup: installing $what: $*"
    if quietly "$SETUP_LOG" 900 "$@"; then
        return 0
    fi
    echo "setup: '$*' failed; its last lines:"
    log_excerpt "$SETUP_LOG"
    return 1
}

log_excerpt() { # LOG — its last lines, without backtrace frames
    grep -vE '^ +([0-9]+:|at )' "$1" | tail -n 12 | sed 's/^/    | /'
}

missing() { # NAME REASON CONSEQUENCE — exactly one line per missing prerequisite
    MISSING[$1]=$2
    echo "MISSING: $1 ($2) — $3"
}

SUDO=()
as_root_ok=1
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        as_root_ok=0
    fi
fi

setup_rust_components() { # rustfmt / clippy for the default toolchain
    local comp step
    for comp in rustfmt clippy; do
        step=fmt
        [ "$comp" = clippy ] && step=clippy
        selected "$step" || continue
        if cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            continue
        fi
        if ! command -v rustup >/dev/null 2>&1; then
            missing "$comp" "rustup not found" "$step will fail"
            continue
        fi
        install_quietly "$comp" rustup component add "$comp"
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            missing "$comp" "rustup component add failed" "$step will fail"
        fi
    done
}

# target_users TARGET -> the selected steps that need TARGET (space-separated)
target_users() {
    local t=$1 users=()
    in_list "$t" "${NOSTD_TARGETS[@]}" && selected no_std-targets && users+=(no_std-targets)
    in_list "$t" "${OTHER_OS_TARGETS[@]}" && selected std-other-os && users+=(std-other-os)
    in_list "$t" "${THUMB_TARGETS[@]}" && selected firmware && users+=(firmware)
    [ "$t" = thumbv6m-none-eabi ] && selected single-core && users+=(single-core)
    [ "$t" = aarch64-unknown-none ] && selected firmware-a64 && users+=(firmware-a64)
    [ "$t" = thumbv7m-none-eabi ] && selected bss && users+=(bss)
    echo "${users[*]}"
}

setup_targets() { # rustup targets of the default toolchain; one MISSING line per target
    local t need=() wanted=() installed="" users
    for t in "${NOSTD_TARGETS[@]}" "${OTHER_OS_TARGETS[@]}"; do
        [ -n "$(target_users "$t")" ] && wanted+=("$t")
    done
    [ ${#wanted[@]} -eq 0 ] && return 0
    if ! command -v rustup >/dev/null 2>&1; then
        for t in "${wanted[@]}"; do
            missing "target $t" "rustup not found" "$(target_users "$t") will fail"
        done
        return
    fi
    installed=$(rustup target list --installed 2>/dev/null)
    for t in "${wanted[@]}"; do
        grep -qx "$t" <<<"$installed" || need+=("$t")
    done
    if [ ${#need[@]} -eq 0 ]; then
        echo "setup: targets ${wanted[*]}: present"
        return
    fi
    # One target at a time, so one that the registry lacks does not keep
    # the others from installing.
    for t in "${need[@]}"; do
        install_quietly "target $t" rustup target add "$t"
    done
    installed=$(rustup target list --installed 2>/dev/null)
    for t in "${need[@]}"; do
        if ! grep -qx "$t" <<<"$installed"; then
            users=$(target_users "$t")
            missing "target $t" "rustup target add failed" "${users// /, } will fail"
        fi
    done
}

setup_msrv() { # the rust-version toolchain, with the no_std target it builds
    selected msrv || return 0
    local consequence="msrv will fail"
    if [ -z "$MSRV" ]; then
        missing "msrv toolchain" "no rust-version in Cargo.toml" "$consequence"
        return
    fi
    if ! command -v rustup >/dev/null 2>&1; then
        missing "toolchain $MSRV_TOOLCHAIN" "rustup not found" "$consequence"
        return
    fi
    if ! rustup run "$MSRV_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
        install_quietly "toolchain $MSRV_TOOLCHAIN (rust-version)" rustup toolchain install \
            "$MSRV_TOOLCHAIN" --profile minimal --no-self-update
        if ! rustup run "$MSRV_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
            missing "toolchain $MSRV_TOOLCHAIN" "rustup toolchain install failed" "$consequence"
            return
        fi
    fi
    if ! rustup target list --installed --toolchain "$MSRV_TOOLCHAIN" 2>/dev/null |
        grep -qx "$MSRV_TARGET"; then
        install_quietly "target $MSRV_TARGET for $MSRV_TOOLCHAIN" rustup target add \
            --toolchain "$MSRV_TOOLCHAIN" "$MSRV_TARGET"
        if ! rustup target list --installed --toolchain "$MSRV_TOOLCHAIN" 2>/dev/null |
            grep -qx "$MSRV_TARGET"; then
            missing "target $MSRV_TARGET ($MSRV_TOOLCHAIN)" "rustup target add failed" \
                "msrv's no_std build will fail"
            return
        fi
    fi
    echo "setup: toolchain $MSRV_TOOLCHAIN (rust-version $MSRV) with $MSRV_TARGET: ready"
}

setup_miri() { # also the nightly that loom-mutants builds with
    any_selected miri miri-tree-borrows loom-mutants || return 0
    local consequence="miri, miri-tree-borrows and loom-mutants will fail" comps need=()
    if ! command -v rustup >/dev/null 2>&1; then
        missing miri "rustup not found" "$consequence"
        return
    fi
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        # --component lets rustup pick the newest nightly that has miri.
        install_quietly "nightly toolchain" rustup toolchain install nightly \
            --profile minimal --component miri,rust-src --no-self-update
        if ! rustup run nightly rustc --version >/dev/null 2>&1; then
            missing miri "nightly toolchain install failed" "$consequence"
            return
        fi
    fi
    comps=$(rustup +nightly component list --installed 2>/dev/null)
    grep -q '^miri' <<<"$comps" || need+=(miri)
    grep -q '^rust-src' <<<"$comps" || need+=(rust-src)
    if [ ${#need[@]} -gt 0 ]; then
        install_quietly "nightly ${need[*]}" rustup +nightly component add "${need[@]}"
        comps=$(rustup +nightly component list --installed 2>/dev/null)
        if ! grep -q '^miri' <<<"$comps" || ! grep -q '^rust-src' <<<"$comps"; then
            missing miri "rustup +nightly component add miri rust-src failed" "$consequence"
            return
        fi
    fi
    # Builds miri's sysroot once; later runs find it and return at once.
    if ! quietly "$SETUP_LOG" 900 cargo +nightly miri setup; then
        echo "setup: 'cargo +nightly miri setup' failed; its last lines:"
        log_excerpt "$SETUP_LOG"
        missing miri "cargo +nightly miri setup failed" "$consequence"
        return
    fi
    echo "setup: miri ($(rustc +nightly --version 2>/dev/null)): ready"
}

# qemu-system-arm (firmware, single-core) and qemu-system-aarch64
# (firmware-a64) both ship in Debian's qemu-system-arm package.
setup_qemu() {
    any_selected firmware single-core firmware-a64 || return 0
    local consequence="firmware, single-core and firmware-a64 will fail"
    if command -v qemu-system-arm >/dev/null 2>&1 && command -v qemu-system-aarch64 >/dev/null 2>&1; then
        echo "setup: qemu-system-arm, qemu-system-aarch64: present"
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        missing qemu-system-arm "no apt-get on this machine" "$consequence"
        return
    fi
    if [ "$as_root_ok" = 0 ]; then
        missing qemu-system-arm "not root and no sudo" "$consequence"
        return
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! install_quietly "apt package lists" "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 update -q; then
        missing qemu-system-arm "apt-get update failed" "$consequence"
        return
    fi
    if ! install_quietly qemu-system-arm "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 \
        install -y -q --no-install-recommends qemu-system-arm ||
        ! qemu-system-arm --version >/dev/null 2>&1; then
        missing qemu-system-arm "apt-get install failed" "$consequence"
        return
    fi
    if ! qemu-system-aarch64 --version >/dev/null 2>&1; then
        missing qemu-system-aarch64 "not in the installed qemu-system-arm package" "firmware-a64 will fail"
    fi
    echo "setup: $(qemu-system-arm --version | head -n 1): installed"
}

# ---------------------------------------------------------------- steps

need_target() { # TARGET STEP
    if [ -n "${MISSING[target $1]:-}" ]; then
        echo "$2: cannot run: target $1 is missing (see MISSING line above)"
        return 1
    fi
}

step_fmt() { run 300 cargo fmt --all -- --check; }

step_clippy() { run 1200 cargo clippy --workspace --all-targets -- -D warnings; }

step_test() { run 1200 cargo test --workspace; }

# The docs as docs.rs builds them (std, Linux), then as a firmware author
# builds them (no_std, thumbv7m): no warnings, no broken intra-doc links.
step_doc() {
    run 900 env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps || return 1
    need_target thumbv7m-none-eabi doc || return 1
    run 900 env RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --no-default-features \
        --target thumbv7m-none-eabi
}

# The package a user downloads: builds from its own files (`cargo package`
# verifies it) and packaging prints no warning.
step_package() {
    local out rc
    out=$(run 900 cargo package --allow-dirty 2>&1)
    rc=$?
    printf '%s\n' "$out"
    [ "$rc" = 0 ] || return 1
    if grep -qi '^warning' <<<"$out"; then
        echo "package: cargo package printed warnings (above)"
        return 1
    fi
}

# The `defmt` feature on a firmware target (defmt::Format for errors and
# Stats), and on the host with std (the signal and workqueue errors).
step_defmt() {
    need_target thumbv7m-none-eabi defmt || return 1
    run 900 cargo build --no-default-features --features defmt --target thumbv7m-none-eabi --lib &&
        run 900 cargo build --features defmt --lib
}

step_bench_build() { run 1200 cargo bench --no-run; }

# One line per (target, mode): the build's output goes to a log, shown
# only when it fails. A target without compare-and-swap is built once per
# portable-atomic mode an application can pick (a library's own build
# picks none; see src/sync.rs): the `--cfg portable_atomic_unsafe_assume_single_core`
# rustflag (in its own target dir, so the flag does not rebuild the other
# builds) and the `critical-section` feature (linked against no
# implementation: a library build does not link).
step_no_std_targets() {
    local t mode log rc t0 ok=0 n=0 logdir="$TARGET_BASE/no_std-logs"
    local -a modes cmd
    mkdir -p "$logdir" || return 1
    for t in "${NOSTD_TARGETS[@]}"; do
        if ! need_target "$t" no_std-targets; then
            ok=1
            continue
        fi
        modes=(native)
        in_list "$t" "${NO_CAS_TARGETS[@]}" && modes=(unsafe-assume-single-core critical-section)
        for mode in "${modes[@]}"; do
            n=$((n + 1))
            cmd=(cargo build --no-default-features --target "$t" --lib)
            case $mode in
                unsafe-assume-single-core)
                    cmd=(env RUSTFLAGS="--cfg portable_atomic_unsafe_assume_single_core"
                        CARGO_TARGET_DIR="$TARGET_BASE/no_std-single-core" "${cmd[@]}") ;;
                critical-section) cmd+=(--features portable-atomic/critical-section) ;;
            esac
            log="$logdir/$t.$mode.log"
            t0=$SECONDS
            quietly "$log" 900 "${cmd[@]}"
            rc=$?
            if [ "$rc" = 0 ]; then
                printf 'no_std %-30s %-26s ok    (%ds)\n' "$t" "$mode" $((SECONDS - t0))
            else
                show_cmd "${cmd[@]}"
                log_excerpt "$log"
                printf 'no_std %-30s %-26s FAIL  (exit %d; log: %s)\n' "$t" "$mode" "$rc" "$log"
                ok=1
            fi
        done
    done
    echo "no_std-targets: $n builds"
    return "$ok"
}

# std on Windows and macOS: the Host backend, workqueues and WakeWord
# type-check there (`cargo check` needs no linker); warnings are errors.
step_std_other_os() {
    local t ok=0
    for t in "${OTHER_OS_TARGETS[@]}"; do
        if ! need_target "$t" std-other-os; then
            ok=1
            continue
        fi
        run 900 env RUSTFLAGS="-D warnings" CARGO_TARGET_DIR="$TARGET_BASE/other-os" \
            cargo check --target "$t" --lib || ok=1
    done
    return "$ok"
}

# The library built with its rust-version toolchain, std and no_std, from
# the same Cargo.lock (--locked: a locked dependency that needs a newer
# Rust fails here instead of being swapped for an older one).
step_msrv() {
    if [ -n "${MISSING[toolchain $MSRV_TOOLCHAIN]:-}" ] || [ -n "${MISSING[msrv toolchain]:-}" ]; then
        echo "msrv: cannot run: toolchain $MSRV_TOOLCHAIN is missing (see MISSING line above)"
        return 1
    fi
    local ok=0
    echo "msrv: rust-version = \"$MSRV\" ($(rustc "+$MSRV_TOOLCHAIN" --version 2>/dev/null))"
    run 900 env CARGO_TARGET_DIR="$TARGET_BASE/msrv" \
        cargo "+$MSRV_TOOLCHAIN" build --locked --lib || ok=1
    if [ -n "${MISSING[target $MSRV_TARGET ($MSRV_TOOLCHAIN)]:-}" ]; then
        echo "msrv: cannot build for $MSRV_TARGET: target missing (see MISSING line above)"
        return 1
    fi
    run 900 env CARGO_TARGET_DIR="$TARGET_BASE/msrv" \
        cargo "+$MSRV_TOOLCHAIN" build --locked --no-default-features --lib --target "$MSRV_TARGET" || ok=1
    return "$ok"
}
step_bss() { need_target thumbv7m-none-eabi bss && run 1800 bash scripts/bss-check.sh; }

# Returns 3 for "nothing to run" (reported as SKIP, not counted).
step_firmware() {
    local script=no_std-tests/run.sh t ok=0
    if [ ! -e "$script" ]; then
        echo "firmware tests: none yet ($script absent)"
        return 3
    fi
    if [ ! -x "$script" ]; then
        echo "firmware: $script exists but is not executable (git update-index --chmod=+x $script)"
        return 1
    fi
    if [ -n "${MISSING[qemu-system-arm]:-}" ]; then
        echo "firmware: cannot run: qemu-system-arm is missing (see MISSING line above)"
        ok=1
    fi
    for t in "${THUMB_TARGETS[@]}"; do
        need_target "$t" firmware || ok=1
    done
    [ "$ok" = 0 ] || return 1
    run 1200 "./$script"
}

# A Cortex-M0 firmware that picks portable-atomic's unsafe-assume-single-core
# and has no critical-section implementation (no_std-tests/single-core):
# builds, runs under QEMU, output checked.
step_single_core() {
    local script=no_std-tests/single-core/run.sh ok=0
    if [ -n "${MISSING[qemu-system-arm]:-}" ]; then
        echo "single-core: cannot run: qemu-system-arm is missing (see MISSING line above)"
        ok=1
    fi
    need_target thumbv6m-none-eabi single-core || ok=1
    [ "$ok" = 0 ] || return 1
    run 1200 bash "$script"
}

# Four-core firmware tests on aarch64 (no_std-tests/aarch64): QEMU virt,
# four Cortex-A53 cores started through PSCI; built, run, output checked.
step_firmware_a64() {
    local script=no_std-tests/aarch64/run.sh ok=0
    if [ -n "${MISSING[qemu-system-arm]:-}" ] || [ -n "${MISSING[qemu-system-aarch64]:-}" ] ||
        ! command -v qemu-system-aarch64 >/dev/null 2>&1; then
        echo "firmware-a64: cannot run: qemu-system-aarch64 is missing (Debian package qemu-system-arm; see MISSING line above)"
        ok=1
    fi
    need_target aarch64-unknown-none firmware-a64 || ok=1
    [ "$ok" = 0 ] || return 1
    run 1200 bash "$script"
}

loom_models() { # lists loom-tests/tests/*.rs
    compgen -G "loom-tests/tests/*.rs"
}

step_loom() {
    if ! loom_models >/dev/null; then
        echo "loom: no models found (loom-tests/tests/*.rs)"
        return 1
    fi
    run 1200 env RUSTFLAGS="$LOOM_RUSTFLAGS" LOOM_MAX_PREEMPTIONS=$LOOM_PREEMPTIONS \
        CARGO_TARGET_DIR="$TARGET_BASE/loom" \
        cargo test -p "$LOOM_PKG" --release
}

# A downstream crate that runs its own loom tests with the global
# `--cfg loom` (loom-tests/downstream): its `static` runtime, tasklet,
# mailboxes and work items must build, and its own model must run.
step_downstream_loom() {
    run 900 env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$TARGET_BASE/downstream-loom" \
        cargo test --manifest-path loom-tests/downstream/Cargo.toml
}

# Each mutant is built first (output to a log; a mutant that does not build
# proves nothing, so that is a failure), then its model runs under
# `timeout $MUTANT_RUN_LIMIT` and must fail.
step_loom_mutants() {
    local list=loom-tests/mutants.txt dir="$TARGET_BASE/loom-mutant" host logdir
    local lineno=0 line name target extra flags log rc mutant_cfg
    local caught=0 bad=0 total=0
    if [ ! -f "$list" ]; then
        echo "loom-mutants: $list is absent — every ordering that matters needs a mutant"
        return 1
    fi
    host=$(rustc -vV | sed -n 's/^host: //p')
    logdir="$dir/logs"
    mkdir -p "$logdir" || return 1
    while IFS= read -r line || [ -n "$line" ]; do
        lineno=$((lineno + 1))
        line=${line%%#*}
        read -r name target extra <<<"$line"
        [ -z "${name:-}" ] && continue
        total=$((total + 1))
        if [ -z "${target:-}" ] || [ -n "${extra:-}" ] || [[ $name == *[\"\\]* ]]; then
            echo "mutant ${name}: BAD LINE ($list:$lineno: want '<mutant-name> <test-target>')"
            bad=$((bad + 1))
            continue
        fi
        # The mutant's --cfg goes to the bottomhalf crate only (a per-package
        # profile rustflag, nightly's -Z profile-rustflags): loom and the
        # other dependencies are built once and reused, so a mutant costs
        # one rebuild of bottomhalf and the model instead of the whole tree.
        flags="$LOOM_RUSTFLAGS"
        mutant_cfg="profile.release.package.bottomhalf.rustflags=[\"--cfg\", \"bh_mutant=\\\"$name\\\"\"]"
        log="$logdir/$name.log"
        # --target: host-only artifacts (build scripts, proc macros) do not
        # get RUSTFLAGS, so they are reused across mutants.
        if ! quietly "$log" "$MUTANT_BUILD_LIMIT" env RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
            cargo +nightly -Z profile-rustflags test -p "$LOOM_PKG" --release --target "$host" \
            --test "$target" --no-run --config "$mutant_cfg"; then
            tail -n 25 "$log" | sed 's/^/    | /'
            echo "mutant $name: BUILD FAILED (log: $log)"
            bad=$((bad + 1))
            continue
        fi
        quietly "$log" "$MUTANT_RUN_LIMIT" env RUSTFLAGS="$flags" CARGO_TARGET_DIR="$dir" \
            LOOM_MAX_PREEMPTIONS=$LOOM_PREEMPTIONS \
            cargo +nightly -Z profile-rustflags test -p "$LOOM_PKG" --release --target "$host" \
            --test "$target" --config "$mutant_cfg"
        rc=$?
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            echo "mutant $name: timed out (after ${MUTANT_RUN_LIMIT}s; log: $log)"
            bad=$((bad + 1))
        elif [ "$rc" = 0 ]; then
            grep -E '^(test |test result:)' "$log" | tail -n 15 | sed 's/^/    | /'
            echo "mutant $name: SURVIVED (the model passed with the weakened ordering; log: $log)"
            bad=$((bad + 1))
        else
            echo "mutant $name: caught"
            caught=$((caught + 1))
        fi
    done <"$list"
    echo "loom-mutants: $total listed, $caught caught, $bad not caught"
    if [ "$total" = 0 ]; then
        echo "loom-mutants: $list lists no mutant — every ordering that matters needs one"
        return 1
    fi
    [ "$bad" = 0 ]
}

miri_run() { # MIRIFLAGS STEP
    if [ -n "${MISSING[miri]:-}" ]; then
        echo "$2: cannot run: miri is missing (see MISSING line above)"
        return 1
    fi
    run 1500 env MIRIFLAGS="$1" CARGO_TARGET_DIR="$TARGET_BASE/miri" \
        cargo +nightly miri test --lib --tests
}
step_miri() { miri_run "-Zmiri-strict-provenance" miri; }
step_miri_tree_borrows() { miri_run "-Zmiri-strict-provenance -Zmiri-tree-borrows" miri-tree-borrows; }

# ---------------------------------------------------------------- main

START=$SECONDS
R_NAME=()
R_STATUS=()
R_SECS=()

echo "==> setup"
setup_rust_components
setup_targets
setup_msrv
setup_miri
setup_qemu
echo "setup: done in $((SECONDS - START))s"

for step in "${ALL_STEPS[@]}"; do
    if ! selected "$step"; then
        # --quick skips are listed; steps left out by --only are not.
        if [ ${#ONLY[@]} -eq 0 ]; then
            R_NAME+=("$step")
            R_STATUS+=(SKIP)
            R_SECS+=(0)
        fi
        continue
    fi
    echo
    echo "==> $step"
    t0=$SECONDS
    fn="step_${step//-/_}"
    "$fn"
    rc=$?
    case $rc in
        0) status=PASS ;;
        3) if [ "$step" = firmware ]; then status=SKIP; else status=FAIL; fi ;;
        *) status=FAIL ;;
    esac
    [ "$status" = FAIL ] && echo "==> $step: FAIL (exit $rc)"
    R_NAME+=("$step")
    R_STATUS+=("$status")
    R_SECS+=($((SECONDS - t0)))
done

passed=0
failed=0
echo
echo "==> summary"
printf '%-20s %-6s %8s\n' step result seconds
for i in "${!R_NAME[@]}"; do
    printf '%-20s %-6s %8s\n' "${R_NAME[$i]}" "${R_STATUS[$i]}" "${R_SECS[$i]}"
    case ${R_STATUS[$i]} in
        PASS) passed=$((passed + 1)) ;;
        FAIL) failed=$((failed + 1)) ;;
    esac
done
total=$((SECONDS - START))
printf 'total elapsed: %ds (%dm%02ds)\n' "$total" $((total / 60)) $((total % 60))
for m in "${!MISSING[@]}"; do
    echo "missing prerequisite: $m (${MISSING[$m]})"
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
