#!/bin/sh
# Runs every test program in BUILD/tests, each in its own process with a
# time limit, and adds up their "N passed, N failed" lines. A program that
# crashes, times out or prints no summary counts as one failure.
# Usage: tests/run.sh BUILD [NAME...]   (NAME: e.g. test_tokenizer)
BUILD=${1:-build}
shift 2>/dev/null
LIMIT=${RLHI_TEST_TIMEOUT:-600}
passed=0; failed=0; skipped=0
log=$(mktemp)
if [ $# -gt 0 ]; then
    progs=""; for n in "$@"; do progs="$progs $BUILD/tests/$n"; done
else
    progs=$(ls $BUILD/tests/test_* 2>/dev/null | grep -v '\.[od]$')
fi
for t in $progs; do
    name=$(basename "$t")
    start=$(date +%s)
    timeout "$LIMIT" "$t" >"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
        f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
        s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
        passed=$((passed + p)); failed=$((failed + f))
        skipped=$((skipped + ${s:-0}))
    else
        f=1; failed=$((failed + 1))
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        failed=$((failed + 1)); f=1
        echo "  (exit status $rc)" >>"$log"
    fi
    if [ "$f" -ne 0 ]; then
        echo "FAIL $name (${took}s, exit $rc)"; sed 's/^/  /' "$log" | tail -n 60
    else
        echo "ok   $name (${took}s): $line"
        grep '^skip ' "$log" | sed 's/^/  /'
    fi
done
rm -f "$log"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
