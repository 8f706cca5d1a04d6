#!/usr/bin/env bash
# Runs every test binary given on the command line, shows its output, and ends with the total
# "N passed, N failed, N skipped". Exit status is non-zero when any test failed or a binary
# crashed (a crash counts as one failure).
set -u
passed=0 failed=0 skipped=0
for t in "$@"; do
    echo "== $(basename "$t")"
    # A hung test binary must not hang CI: each gets TEST_TIMEOUT seconds (default 600).
    out=$(timeout "${TEST_TIMEOUT:-600}" "$t" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        echo "  FAIL $(basename "$t") exited with status $rc before printing its summary"
        failed=$((failed + 1))
        continue
    fi
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "  FAIL $(basename "$t") exited with status $rc"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
