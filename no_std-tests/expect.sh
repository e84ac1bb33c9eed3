# no_std-tests/expect.sh — expected-output matching for the firmware runners
# (no_std-tests/run.sh, no_std-tests/aarch64/run.sh); sourced, not run.
#
# In an expected file, `{n}` matches any unsigned integer; every other
# character must match exactly.

# ERE-escape a literal string.
ere_escape() {
    printf '%s' "$1" | sed 's/[][\.*^$+?(){}|/]/\\&/g'
}

# line_matches EXPECTED ACTUAL — `{n}` in EXPECTED matches [0-9]+.
line_matches() {
    local exp=$1 act=$2 re="" rest lit
    if [[ $exp != *'{n}'* ]]; then
        [[ $exp == "$act" ]]
        return
    fi
    rest=$exp
    while [[ $rest == *'{n}'* ]]; do
        lit=${rest%%'{n}'*}
        re+="$(ere_escape "$lit")[0-9]+"
        rest=${rest#*'{n}'}
    done
    re+=$(ere_escape "$rest")
    [[ $act =~ ^${re}$ ]]
}

# compare EXPECTED_FILE ACTUAL_FILE — prints the first mismatch.
compare() {
    local -a exp act
    local i n
    mapfile -t exp <"$1"
    mapfile -t act <"$2"
    n=${#exp[@]}
    [ ${#act[@]} -gt "$n" ] && n=${#act[@]}
    for ((i = 0; i < n; i++)); do
        if [ "$i" -ge ${#exp[@]} ]; then
            echo "    unexpected extra line $((i + 1)): ${act[$i]}"
            return 1
        fi
        if [ "$i" -ge ${#act[@]} ]; then
            echo "    missing line $((i + 1)): ${exp[$i]}"
            return 1
        fi
        if ! line_matches "${exp[$i]}" "${act[$i]}"; then
            echo "    line $((i + 1)) differs:"
            echo "      expected: ${exp[$i]}"
            echo "      actual:   ${act[$i]}"
            return 1
        fi
    done
    return 0
}
