#!/usr/bin/env bash
# Runs each test binary given, in order, with a time bound each; prints one summary line
# "N passed, N failed" and exits non-zero if any failed (a sanitizer report fails its binary).
set -u
passed=0
failed=0
failed_names=()
limit=${SPOOL_TEST_TIMEOUT:-600}
fuzz_seconds=${FUZZ_SHORT_SECONDS:-15}
# "fuzz:PATH" runs a libFuzzer driver for a short while on its corpus (tests/fuzz/corpus/NAME);
# new inputs go to a temporary directory, so a test run never changes the checked-in corpus.
# "redis:PATH" runs a test binary again with SPOOL_TEST_BACKEND=redis: its servers then use a
# redis-server that the test harness starts on a free port.
run_one() {
  case "$1" in
    redis:*) SPOOL_TEST_BACKEND=redis "${1#redis:}" ;;
    fuzz:*)
      local bin=${1#fuzz:} tmp rc
      tmp=$(mktemp -d)
      "$bin" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
        -print_final_stats=1 "$tmp" "tests/fuzz/corpus/$(basename "$bin")" 2>&1 | tail -12
      rc=${PIPESTATUS[0]}
      rm -rf "$tmp"
      return "$rc"
      ;;
    *) "$1" ;;
  esac
}
for t in "$@"; do
  case "$t" in
    redis:*) name="$(basename "${t#redis:}") (redis backend)" ;;
    *) name=$(basename "${t#fuzz:}") ;;
  esac
  echo "=== $name"
  if SECONDS=0 && timeout --kill-after=10 "$limit" bash -c "$(declare -f run_one); fuzz_seconds=$fuzz_seconds; run_one '$t'"; then
    echo "--- $name passed (${SECONDS}s)"
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
