#!/usr/bin/env bash
# Runs each test binary given, in order, with a time bound each; prints one summary line
# "N passed, N failed" and exits non-zero if any failed (a sanitizer report fails its binary).
set -u
passed=0
failed=0
failed_names=()
limit=${SPOOL_TEST_TIMEOUT:-600}
for t in "$@"; do
  name=$(basename "$t")
  echo "=== $name"
  if timeout --kill-after=10 "$limit" "$t"; then
    passed=$((passed + 1))
  else
    rc=$?
    echo "--- $name FAILED (exit $rc)"
    failed=$((failed + 1))
    failed_names+=("$name")
  fi
done
echo
[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
