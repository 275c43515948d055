#!/usr/bin/env bash
# run.sh - Spool's benchmark harness (`make bench`): starts spool-server (and nginx as a yardstick)
# on free loopback ports, drives them with wrk and bench/spoolbench.py, and prints a report with
# each figure beside its target. It reports and does not judge: it exits 0 when every figure
# was measured, whatever the figures are, and non-zero when something could not be measured.
#
# usage: bench/run.sh [--quick] [submit] [nginx] [batch] [memory] [e2e] [remote] [redis] [durable]
#   [scale]
#   no names: every measurement; "nginx" alone runs only the nginx half of "submit".
#   redis: the Redis backend (a redis-server of its own): single submits over HTTP (wrk), batch
#   submits, and a drain by one spool-worker --backend redis://, each with the Redis round trips
#   per job counted from INFO commandstats.
#   durable: single submits with --data-dir --fsync always against the volatile server, and
#   beanstalkd with its binlog, in the same run; then both servers again with 256 connections.
#   scale: one redis-server, one spool-server without workers, and 1, then 2, then 4
#   spool-worker --backend redis:// processes running the same noop jobs, end to end and as a
#   drain of jobs queued first: the rate of each against one worker, with redis-server's CPU,
#   which shows where the limit is.
#   --quick: short runs (3 s, one round, fewer jobs) to check that the harness works.
# environment: SPOOL_SERVER (default build/bin/spool-server), SPOOL_WORKER (default
#   build/bin/spool-worker), BENCH_DURATION (wrk, default 10s),
#   BENCH_RUNS (rounds of the submit benchmark, default 3), BENCH_PIN (0 = no CPU pinning).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER=${SPOOL_SERVER:-$ROOT/build/bin/spool-server}
WORKER=${SPOOL_WORKER:-$ROOT/build/bin/spool-worker}
CLIENT=$ROOT/bench/spoolbench.py
DURATION=${BENCH_DURATION:-10s}
RUNS=${BENCH_RUNS:-3}
PIN=${BENCH_PIN:-1}
WRK_CONNS=64
# durable: also measured with this many connections, where a group commit carries more answers
DURABLE_WIDE_CONNS=256
PAYLOAD_BYTES=100
BATCH=10000
RATE_SECONDS=5
MEMORY_JOBS=1000000
E2E_JOBS=100000
E2E_WORKERS=(8 64)
REMOTE_CONCURRENCY=${REMOTE_CONCURRENCY:-1000}
REDIS_DRAIN_JOBS=100000
REDIS_DRAIN_CONCURRENCY=100
SCALE_JOBS=100000
SCALE_WORKERS=(1 2 4)
SCALE_CONCURRENCY=100
# A batch of 10 000 jobs with 100-byte payloads is about 1.3 MB, over the default 1 MiB limit.
BATCH_MAX_BODY=16M

TMP=""
PIDS=()
FAILED=()
REPORT=()

log() { printf '[bench] %s\n' "$*" >&2; }
report() { REPORT+=("$*"); }
failed() {
  FAILED+=("$*")
  log "FAILED: $*"
}

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

# ---- processes -------------------------------------------------------------------------------

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# SIGTERM, up to 20 s for a graceful exit, then SIGKILL.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  forget_pid "$pid"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [ -n "$TMP" ] && rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Server-side processes on CPU 0, load generators on CPU 1: on a 2-core machine this keeps the
# two from trading places, which is most of the run-to-run noise.
SERVER_CPU=()
CLIENT_CPU=()
setup_pinning() {
  if [ "$PIN" = 1 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    SERVER_CPU=(taskset -c 0)
    CLIENT_CPU=(taskset -c 1)
  fi
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Waits until 127.0.0.1:PORT accepts a connection and PID is still alive, 10 s at most.
wait_listening() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 1
    if timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

# start_spool NAME ARGS... : sets SPOOL_PID and SPOOL_PORT. The port is picked here rather than
# with --listen :0 so that nothing depends on how the server buffers its standard output; a
# port taken in between makes the server exit, and the next try picks another.
SPOOL_PID=""
SPOOL_PORT=""
start_spool() {
  local name=$1 try port pid
  shift
  if [ ! -x "$SERVER" ]; then
    log "$SERVER not found or not executable (build it with 'make')"
    return 1
  fi
  for try in 1 2 3; do
    port=$(free_port) || return 1
    "${SERVER_CPU[@]}" "$SERVER" --listen "127.0.0.1:$port" "$@" \
      >"$TMP/$name.out" 2>"$TMP/$name.err" &
    pid=$!
    PIDS+=("$pid")
    if wait_listening "$port" "$pid"; then
      SPOOL_PID=$pid
      SPOOL_PORT=$port
      # The pinned command is taskset only until it execs the server; the pid stays the same.
      return 0
    fi
    stop_pid "$pid"
    log "spool-server ($name, try $try) did not start; its stderr:"
    tail -n 20 "$TMP/$name.err" >&2
  done
  return 1
}

NGINX_PID=""
NGINX_PORT=""
start_nginx() {
  local try port pid nginx
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$TMP/nginx"
  for try in 1 2 3; do
    port=$(free_port) || return 1
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    # nginx closes a keep-alive connection after 1000 requests by default; Spool does not.
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 201 '{"id":"1"}';
        }
    }
}
EOF
    "${SERVER_CPU[@]}" "$nginx" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" \
      >"$TMP/nginx/stdout" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_listening "$port" "$pid"; then
      NGINX_PID=$pid
      NGINX_PORT=$port
      return 0
    fi
    stop_pid "$pid"
    log "nginx (try $try) did not start:"
    tail -n 20 "$TMP/nginx/stdout" "$TMP/nginx/error.log" >&2 2>/dev/null
  done
  return 1
}

# ---- packages --------------------------------------------------------------------------------

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

apt_install() {
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      log "cannot install $* without root; install it and run again"
      return 1
    fi
  fi
  log "installing $* with apt-get"
  "${sudo[@]}" apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" \
      >/dev/null
}

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  pkg_installed wrk || apt_install wrk || return 1
  command -v wrk >/dev/null
}

ensure_nginx() {
  local p
  for p in nginx-light nginx nginx-core nginx-full nginx-extras; do
    if pkg_installed "$p"; then return 0; fi
  done
  command -v nginx >/dev/null && return 0
  apt_install nginx-light || apt_install nginx
}

# ---- measurements ----------------------------------------------------------------------------

# Median of the numbers given (the lower middle one for an even count).
median() {
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }'
}

ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
verdict() { if "$@"; then echo "met"; else echo "missed"; fi; }

# Runs wrk against URL; prints "RPS P50_MS P99_MS NON2XX ERRORS" (a failed run returns 1).
# run_wrk URL OUT [CONNECTIONS]: one wrk run (default $WRK_CONNS connections).
run_wrk() {
  local url=$1 out=$2 conns=${3:-$WRK_CONNS} secs
  secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print int(n) }')
  if ! timeout $((secs + 30)) "${CLIENT_CPU[@]}" wrk -t1 -c"$conns" -d"$DURATION" --latency \
    -s "$TMP/submit.lua" "$url" >"$out" 2>&1; then
    log "wrk failed against $url:"
    cat "$out" >&2
    return 1
  fi
  awk '
    function ms(v) {
      if (v ~ /us$/) return v * 0.001
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END {
      if (rps == "") exit 1
      printf "%.0f %.3f %.3f %d %d\n", rps, p50, p99, non2xx, errs
    }' "$out"
}

write_lua() {
  local payload
  payload=$(python3 -B -c "import sys; sys.path.insert(0, '$ROOT/bench'); import spoolbench; \
print(spoolbench.job_text($PAYLOAD_BYTES))") || return 1
  cat >"$TMP/submit.lua" <<EOF
-- One job per request, the same body every time: each is a new job (no idempotency key).
wrk.method = "POST"
wrk.path = "/v1/queues/bench/jobs"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$payload'
EOF
}

# One wrk run against spool or nginx; appends its figures to that label's arrays.
declare -a spool_rps=() spool_p50=() spool_p99=() nginx_rps=() nginx_p50=() nginx_p99=()
wrk_round() {
  local label=$1 port=$2 round=$3 line rps p50 p99 non2xx errs
  line=$(run_wrk "http://127.0.0.1:$port/v1/queues/bench/jobs" "$TMP/wrk-$label-$round.txt") ||
    return 1
  read -r rps p50 p99 non2xx errs <<<"$line"
  log "  $label round $round: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs"
  if [ "$non2xx" -gt 0 ]; then
    log "  $label answered $non2xx requests with an error status: the figures would be meaningless"
    return 1
  fi
  case $label in
  spool)
    spool_rps+=("$rps")
    spool_p50+=("$p50")
    spool_p99+=("$p99")
    ;;
  nginx)
    nginx_rps+=("$rps")
    nginx_p50+=("$p50")
    nginx_p99+=("$p99")
    ;;
  esac
}

bench_submit() {
  local with_spool=$1 round ok=1
  log "1. HTTP single submit: wrk -t1 -c$WRK_CONNS -d$DURATION, $RUNS round(s)"
  ensure_wrk || { failed "submit: wrk is not available"; return; }
  ensure_nginx || { failed "submit: nginx is not available"; return; }
  write_lua || { failed "submit: could not write the wrk script"; return; }
  start_nginx || { failed "submit: nginx did not start"; return; }
  for ((round = 1; round <= RUNS; round++)); do
    if [ "$with_spool" = 1 ]; then
      # A fresh server each round: the previous round's jobs would otherwise pile up.
      if ! start_spool "submit-$round"; then ok=0; break; fi
      if ! timeout 20 "${CLIENT_CPU[@]}" python3 "$CLIENT" check --port "$SPOOL_PORT" \
        --payload-bytes "$PAYLOAD_BYTES" >/dev/null; then
        stop_spool_quiet
        ok=0
        break
      fi
      wrk_round spool "$SPOOL_PORT" "$round" || ok=0
      stop_spool_quiet
      [ "$ok" = 1 ] || break
    fi
    wrk_round nginx "$NGINX_PORT" "$round" || { ok=0; break; }
  done
  stop_pid "$NGINX_PID"
  if [ "$ok" != 1 ]; then
    failed "submit: a run could not be completed (see above)"
    return
  fi
  local n_rps n_p50 n_p99 s_rps s_p50 s_p99 ratio
  n_rps=$(median "${nginx_rps[@]}")
  n_p50=$(median "${nginx_p50[@]}")
  n_p99=$(median "${nginx_p99[@]}")
  report "1. HTTP single submit: POST /v1/queues/bench/jobs, ${PAYLOAD_BYTES}-byte payload,"
  report "   wrk -t1 -c$WRK_CONNS -d$DURATION, keep-alive; median of $RUNS round(s), alternating"
  if [ "$with_spool" = 1 ]; then
    s_rps=$(median "${spool_rps[@]}")
    s_p50=$(median "${spool_p50[@]}")
    s_p99=$(median "${spool_p99[@]}")
    report "$(printf '   %-22s %9s req/s   p50 %7s ms   p99 %7s ms' spool-server "$s_rps" "$s_p50" "$s_p99")"
  fi
  report "$(printf '   %-22s %9s req/s   p50 %7s ms   p99 %7s ms' "nginx (static 201)" "$n_rps" "$n_p50" "$n_p99")"
  if [ "$with_spool" = 1 ]; then
    ratio=$(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    report "$(printf '   %-22s %9s         target >= 0.75, aim 0.90   [%s]' "ratio spool/nginx" \
      "$ratio" "$(verdict ge "$ratio" 0.75)")"
  fi
}

stop_spool_quiet() {
  [ -n "$SPOOL_PID" ] && stop_pid "$SPOOL_PID"
  SPOOL_PID=""
}

# Reads key=value pairs printed by spoolbench.py: kv "$line" jobs_per_s
kv() {
  tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'
}

bench_batch() {
  local line rate
  log "2. Batch submission: batches of $BATCH noop jobs for ${RATE_SECONDS}s"
  start_spool batch --max-body "$BATCH_MAX_BODY" || { failed "batch: spool-server did not start"; return; }
  if ! line=$(timeout $((RATE_SECONDS + 120)) "${CLIENT_CPU[@]}" python3 "$CLIENT" rate \
    --port "$SPOOL_PORT" --batch "$BATCH" --seconds "$RATE_SECONDS" --server-pid "$SPOOL_PID"); then
    stop_spool_quiet
    failed "batch: the client failed (see above)"
    return
  fi
  stop_spool_quiet
  log "  $line"
  rate=$(kv "$line" jobs_per_s)
  report "2. Batch submission: POST /v1/queues/bench/batch, $BATCH noop jobs per batch, no payload,"
  report "   2 keep-alive connections, ${RATE_SECONDS}s"
  report "$(printf '   %-22s %9s jobs/s  target > 1000000   [%s]' "batch submit rate" "$rate" \
    "$(verdict lt 1000000 "$rate")")"
  local cpu note=""
  cpu=$(kv "$line" server_cpu)
  # Below 100 %, the server waited for the client or for a CPU: the figure understates it.
  lt "${cpu%\%}" 95 && note=" (the server waited for the client or a CPU: rerun on a quiet machine)"
  report "$(printf '   %-22s %9s of the run%s' "server CPU" "$cpu" "$note")"
}

rss_kb() {
  python3 "$CLIENT" rss --pid "$1" | awk -F= '{ print $2 }'
}

bench_memory() {
  local before after line per_job rate
  log "3. Memory per queued job: $MEMORY_JOBS jobs with ${PAYLOAD_BYTES}-byte payloads"
  start_spool memory --max-body "$BATCH_MAX_BODY" || { failed "memory: spool-server did not start"; return; }
  before=$(rss_kb "$SPOOL_PID") || { stop_spool_quiet; failed "memory: cannot read VmRSS"; return; }
  if ! line=$(timeout 600 "${CLIENT_CPU[@]}" python3 "$CLIENT" submit --port "$SPOOL_PORT" \
    --batch "$BATCH" --total "$MEMORY_JOBS" --payload-bytes "$PAYLOAD_BYTES" \
    --server-pid "$SPOOL_PID"); then
    stop_spool_quiet
    failed "memory: the client failed (see above)"
    return
  fi
  after=$(rss_kb "$SPOOL_PID") || { stop_spool_quiet; failed "memory: cannot read VmRSS"; return; }
  stop_spool_quiet
  log "  $line; VmRSS $before kB -> $after kB"
  rate=$(kv "$line" jobs_per_s)
  per_job=$(awk -v a="$after" -v b="$before" -v n="$MEMORY_JOBS" -v p="$PAYLOAD_BYTES" \
    'BEGIN { printf "%.0f", (a - b) * 1024 / n - p }')
  report "3. Memory per queued job: $MEMORY_JOBS jobs with ${PAYLOAD_BYTES}-byte payloads, memory backend"
  report "$(printf '   %-22s %s kB -> %s kB' "VmRSS" "$before" "$after")"
  report "$(printf '   %-22s %9s bytes  target < 150, aim 100 (beanstalkd ~200)   [%s]' \
    "per job above payload" "$per_job" "$(verdict lt "$per_job" 150)")"
  report "$(printf '   %-22s %9s jobs/s (batches with %s-byte payloads, 1 connection, server CPU %s)' \
    "submit rate" "$rate" "$PAYLOAD_BYTES" "$(kv "$line" server_cpu)")"
}

# One wrk run; prints the req/s, or returns 1 (with the reason logged).
wrk_rps() {
  local label=$1 port=$2 round=$3 conns=${4:-$WRK_CONNS} line rps p50 p99 non2xx errs
  line=$(run_wrk "http://127.0.0.1:$port/v1/queues/bench/jobs" "$TMP/wrk-$label-$round.txt" \
    "$conns") || return 1
  read -r rps p50 p99 non2xx errs <<<"$line"
  log "  $label round $round: $rps req/s, p50 $p50 ms, p99 $p99 ms, non-2xx $non2xx, socket errors $errs"
  if [ "$non2xx" -gt 0 ]; then
    log "  $label answered $non2xx requests with an error status"
    return 1
  fi
  echo "$rps"
}

ensure_beanstalkd() {
  command -v beanstalkd >/dev/null && return 0
  pkg_installed beanstalkd || apt_install beanstalkd || return 1
  command -v beanstalkd >/dev/null
}

# beanstalkd with its binlog (-b; it fsyncs at most every 50 ms by default) on a free port,
# driven by bench/beanstalk_put.c; prints the puts/s.
beanstalk_round() {
  local round=$1 port pid line secs
  secs=$(awk -v d="$DURATION" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print int(n) }')
  mkdir -p "$TMP/beanstalk-$round"
  port=$(free_port) || return 1
  "${SERVER_CPU[@]}" beanstalkd -l 127.0.0.1 -p "$port" -b "$TMP/beanstalk-$round" \
    >"$TMP/beanstalk-$round.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_listening "$port" "$pid"; then
    stop_pid "$pid"
    log "beanstalkd did not start:"
    cat "$TMP/beanstalk-$round.log" >&2
    return 1
  fi
  if ! line=$(timeout $((secs + 30)) "${CLIENT_CPU[@]}" "$TMP/beanstalk_put" "$port" "$secs" \
    "$WRK_CONNS" "$PAYLOAD_BYTES"); then
    stop_pid "$pid"
    return 1
  fi
  stop_pid "$pid"
  log "  beanstalkd round $round: $line"
  kv "$line" puts_per_s
}

bench_durable() {
  local round ok=1 v d b
  local -a vol=() dur=() bst=() wvol=() wdur=()
  log "5. Durable single submit: --data-dir --fsync always vs volatile vs beanstalkd -b, $RUNS round(s)"
  ensure_wrk || { failed "durable: wrk is not available"; return; }
  write_lua || { failed "durable: could not write the wrk script"; return; }
  local have_bs=1
  if ! ensure_beanstalkd || ! cc -O2 -o "$TMP/beanstalk_put" "$ROOT/bench/beanstalk_put.c"; then
    have_bs=0
    failed "durable: beanstalkd (or its client) is not available; Spool measured alone"
  fi
  for ((round = 1; round <= RUNS; round++)); do
    # volatile and durable at $WRK_CONNS connections, then both again at $DURABLE_WIDE_CONNS
    for conns in "$WRK_CONNS" "$DURABLE_WIDE_CONNS"; do
      start_spool "volatile-$conns-$round" || { ok=0; break 2; }
      v=$(wrk_rps "volatile-c$conns" "$SPOOL_PORT" "$round" "$conns") || ok=0
      stop_spool_quiet
      [ "$ok" = 1 ] || break 2
      start_spool "durable-$conns-$round" --data-dir "$TMP/data-$round" --fsync always ||
        { ok=0; break 2; }
      d=$(wrk_rps "durable-c$conns" "$SPOOL_PORT" "$round" "$conns") || ok=0
      stop_spool_quiet
      rm -rf "$TMP/data-$round"
      [ "$ok" = 1 ] || break 2
      if [ "$conns" = "$WRK_CONNS" ]; then
        vol+=("$v")
        dur+=("$d")
      else
        wvol+=("$v")
        wdur+=("$d")
      fi
    done
    if [ "$have_bs" = 1 ]; then
      if b=$(beanstalk_round "$round"); then bst+=("$b"); else have_bs=0; failed "durable: the beanstalkd run failed"; fi
      rm -rf "$TMP/beanstalk-$round"
    fi
  done
  if [ "$ok" != 1 ]; then
    failed "durable: a run could not be completed (see above)"
    return
  fi
  local mv md mb ratio wv wd
  mv=$(median "${vol[@]}")
  md=$(median "${dur[@]}")
  ratio=$(awk -v a="$md" -v b="$mv" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
  report "5. Durable single submit: POST /v1/queues/bench/jobs, ${PAYLOAD_BYTES}-byte payload,"
  report "   wrk -t1 -c$WRK_CONNS -d$DURATION; median of $RUNS round(s), alternating"
  report "$(printf '   %-22s %9s req/s' "spool volatile" "$mv")"
  report "$(printf '   %-22s %9s req/s   (each 201 sent after its fsync)' "spool --fsync always" "$md")"
  report "$(printf '   %-22s %9s         target >= 0.70   [%s]' "ratio durable/volatile" "$ratio" \
    "$(verdict ge "$ratio" 0.70)")"
  if [ ${#bst[@]} -gt 0 ]; then
    mb=$(median "${bst[@]}")
    report "$(printf '   %-22s %9s puts/s  (binlog, fsync at most every 50 ms; %s connections)' \
      "beanstalkd -b" "$mb" "$WRK_CONNS")"
    report "$(printf '   %-22s %9s         target > 1   [%s]' "durable/beanstalkd" \
      "$(awk -v a="$md" -v b="$mb" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
      "$(verdict lt "$mb" "$md")")"
  fi
  wv=$(median "${wvol[@]}")
  wd=$(median "${wdur[@]}")
  report "   with wrk -c$DURABLE_WIDE_CONNS (more answers share each fsync; for information):"
  report "$(printf '   %-22s %9s req/s' "spool volatile" "$wv")"
  report "$(printf '   %-22s %9s req/s   (ratio %s)' "spool --fsync always" "$wd" \
    "$(awk -v a="$wd" -v b="$wv" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')")"
}

bench_e2e() {
  local workers line rate any=0
  report "4. End to end: $E2E_JOBS noop jobs submitted in batches, run by embedded workers,"
  report "   until GET /v1/queues/bench shows them all succeeded"
  for workers in "${E2E_WORKERS[@]}"; do
    log "4. End to end with --workers $workers: $E2E_JOBS jobs"
    if ! start_spool "e2e-$workers" --workers "$workers" --max-body "$BATCH_MAX_BODY"; then
      failed "e2e --workers $workers: spool-server did not start"
      continue
    fi
    if ! line=$(timeout 300 "${CLIENT_CPU[@]}" python3 "$CLIENT" e2e --port "$SPOOL_PORT" \
      --batch "$BATCH" --total "$E2E_JOBS" --timeout 240); then
      stop_spool_quiet
      failed "e2e --workers $workers: the jobs did not all succeed (see above)"
      continue
    fi
    stop_spool_quiet
    log "  $line"
    rate=$(kv "$line" jobs_per_s)
    report "$(printf '   %-22s %9s jobs/s  target > 50000   [%s]' "--workers $workers" "$rate" \
      "$(verdict lt 50000 "$rate")")"
    any=1
  done
  [ "$any" = 1 ] || report "   (not measured)"
}

# One spool-worker process over HTTP drains what the client submits; the server has no workers.
bench_remote() {
  local line rate wpid
  report "5. End to end through one spool-worker over HTTP: $E2E_JOBS noop jobs submitted in"
  report "   batches, --concurrency $REMOTE_CONCURRENCY, until all succeeded"
  log "5. End to end through one spool-worker: $E2E_JOBS jobs"
  if [ ! -x "$WORKER" ]; then
    failed "remote: $WORKER not found (build it with 'make')"
    return
  fi
  if ! start_spool "remote" --max-body "$BATCH_MAX_BODY"; then
    failed "remote: spool-server did not start"
    return
  fi
  "${CLIENT_CPU[@]}" "$WORKER" --server "http://127.0.0.1:$SPOOL_PORT" --queues bench \
    --concurrency "$REMOTE_CONCURRENCY" >"$TMP/worker.out" 2>"$TMP/worker.err" &
  wpid=$!
  PIDS+=("$wpid")
  if ! line=$(timeout 300 "${CLIENT_CPU[@]}" python3 "$CLIENT" e2e --port "$SPOOL_PORT" \
    --batch "$BATCH" --total "$E2E_JOBS" --timeout 240); then
    stop_pid "$wpid"
    stop_spool_quiet
    failed "remote: the jobs did not all succeed (worker log: $TMP/worker.err)"
    return
  fi
  stop_pid "$wpid"
  stop_spool_quiet
  log "  $line"
  rate=$(kv "$line" jobs_per_s)
  report "$(printf '   %-22s %9s jobs/s  target > 30000 (aiohttp seed ~5300, beanstalkd ~14500)   [%s]' \
    "one spool-worker" "$rate" "$(verdict lt 30000 "$rate")")"
}

# ---- the Redis backend -----------------------------------------------------------------------

REDIS_PID=""
REDIS_PORT=""
start_redis() {
  local try port pid
  command -v redis-server >/dev/null || { log "redis-server is not installed"; return 1; }
  for try in 1 2 3; do
    port=$(free_port) || return 1
    mkdir -p "$TMP/redis-$port"
    "${SERVER_CPU[@]}" redis-server --port "$port" --bind 127.0.0.1 --dir "$TMP/redis-$port" \
      --save "" --appendonly yes --logfile "$TMP/redis-$port/log" >/dev/null 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_listening "$port" "$pid"; then
      REDIS_PID=$pid
      REDIS_PORT=$port
      return 0
    fi
    stop_pid "$pid"
  done
  return 1
}

rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

pid_alive() { kill -0 "$1" 2>/dev/null; }

# wait_succeeded N CMD...: polls the bench queue's succeeded count on Redis until it reaches N,
# CMD fails (a worker is gone) or 300 s pass; prints the last count.
wait_succeeded() {
  local n=$1 start now done_n=0
  shift
  start=$(date +%s.%N)
  while :; do
    done_n=$(rcli HGET 'spool:{bench}:stats' suc)
    done_n=${done_n:-0}
    [ "$done_n" -ge "$n" ] && break
    "$@" || break
    now=$(date +%s.%N)
    if awk -v a="$now" -v b="$start" 'BEGIN { exit !(a - b > 300) }'; then break; fi
    sleep 0.05
  done
  echo "$done_n"
}

# Script calls (EVALSHA, EVAL) and other commands the clients sent since the last CONFIG
# RESETSTAT; commands run inside scripts are counted apart by Redis but are not round trips.
round_trips() {
  rcli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '
    /^cmdstat_(evalsha|eval|ping|select|script|subscribe)/ { n += $3 }
    END { print n + 0 }'
}

per_job() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

bench_redis() {
  local url line rate rt jobs secs start now done_n s_rps
  log "5. Redis backend: single submits (wrk), batch submits, drain by one spool-worker"
  if [ ! -x "$WORKER" ]; then failed "redis: $WORKER is not built"; return; fi
  ensure_wrk || { failed "redis: wrk is not available"; return; }
  start_redis || { failed "redis: redis-server did not start"; return; }
  url="redis://127.0.0.1:$REDIS_PORT"
  report "5. Redis backend: one redis-server (AOF on, everysec), $(redis-server --version | awk '{ print $3 }')"

  # a. single submits over HTTP
  write_lua || { failed "redis: could not write the wrk script"; return; }
  if start_spool redis-submit --backend "$url"; then
    rcli CONFIG RESETSTAT >/dev/null
    if line=$(run_wrk "http://127.0.0.1:$SPOOL_PORT/v1/queues/bench/jobs" "$TMP/wrk-redis.txt"); then
      read -r s_rps _ _ _ _ <<<"$line"
      jobs=$(rcli HGET 'spool:{bench}:stats' enq)
      rt=$(round_trips)
      log "  single submits: $line; $jobs jobs, $rt round trips"
      report "$(printf '   %-22s %9s req/s   %s Redis round trips per job   (BullMQ add: ~31000/s)' \
        "single submit (HTTP)" "$s_rps" "$(per_job "$rt" "$jobs")")"
    else
      failed "redis: wrk against spool-server on Redis failed"
    fi
    stop_spool_quiet
  else
    failed "redis: spool-server --backend $url did not start"
  fi
  rcli FLUSHALL >/dev/null

  # b. batch submits
  if start_spool redis-batch --backend "$url" --max-body "$BATCH_MAX_BODY"; then
    rcli CONFIG RESETSTAT >/dev/null
    if line=$(timeout $((RATE_SECONDS + 120)) "${CLIENT_CPU[@]}" python3 "$CLIENT" rate \
      --port "$SPOOL_PORT" --batch "$BATCH" --seconds "$RATE_SECONDS" --server-pid "$SPOOL_PID"); then
      rate=$(kv "$line" jobs_per_s)
      jobs=$(rcli HGET 'spool:{bench}:stats' enq)
      rt=$(round_trips)
      log "  batch: $line; $jobs jobs, $rt round trips"
      report "$(printf '   %-22s %9s jobs/s  %s Redis round trips per job   (BullMQ addBulk: ~22000/s)' \
        "batch submit" "$rate" "$(per_job "$rt" "$jobs")")"
    else
      failed "redis: batch client failed"
    fi
    stop_spool_quiet
  else
    failed "redis: spool-server --backend $url did not start"
  fi
  rcli FLUSHALL >/dev/null

  # c. drain: jobs queued first, then one spool-worker takes them straight from Redis
  if start_spool redis-drain --backend "$url" --max-body "$BATCH_MAX_BODY"; then
    if timeout 600 "${CLIENT_CPU[@]}" python3 "$CLIENT" submit --port "$SPOOL_PORT" \
      --batch "$BATCH" --total "$REDIS_DRAIN_JOBS" >/dev/null; then
      stop_spool_quiet
      rcli CONFIG RESETSTAT >/dev/null
      "$WORKER" --backend "$url" --concurrency "$REDIS_DRAIN_CONCURRENCY" --log-level warn \
        >"$TMP/worker.out" 2>"$TMP/worker.err" &
      local wpid=$!
      PIDS+=("$wpid")
      start=$(date +%s.%N)
      done_n=$(wait_succeeded "$REDIS_DRAIN_JOBS" pid_alive "$wpid")
      now=$(date +%s.%N)
      rt=$(round_trips)
      stop_pid "$wpid"
      if [ "$done_n" -ge "$REDIS_DRAIN_JOBS" ]; then
        secs=$(awk -v a="$now" -v b="$start" 'BEGIN { printf "%.3f", a - b }')
        rate=$(awk -v n="$REDIS_DRAIN_JOBS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
        log "  drain: $REDIS_DRAIN_JOBS jobs in $secs s; $rt round trips"
        report "$(printf '   %-22s %9s jobs/s  %s Redis round trips per job   (BullMQ worker c=100: ~19000/s)' \
          "drain, 1 spool-worker" "$rate" "$(per_job "$rt" "$REDIS_DRAIN_JOBS")")"
        report "   (spool-worker --backend redis:// --concurrency $REDIS_DRAIN_CONCURRENCY, noop jobs)"
      else
        failed "redis: the worker drained only $done_n of $REDIS_DRAIN_JOBS jobs"
        tail -n 20 "$TMP/worker.err" >&2
      fi
    else
      stop_spool_quiet
      failed "redis: could not queue the jobs to drain"
    fi
  else
    failed "redis: spool-server --backend $url did not start"
  fi
  stop_pid "$REDIS_PID"
}

# ---- scale-out on one Redis ------------------------------------------------------------------

# CPU ticks (user + system) a process has used so far, from /proc/PID/stat.
cpu_ticks() {
  awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Busy ticks of the whole machine (every CPU; all but idle and iowait), from /proc/stat.
machine_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# N spool-worker --backend redis:// processes on the Redis of start_redis; sets SCALE_WPIDS.
SCALE_WPIDS=()
start_scale_workers() {
  local n=$1 tag=$2 i
  SCALE_WPIDS=()
  for ((i = 0; i < n; i++)); do
    "$WORKER" --backend "redis://127.0.0.1:$REDIS_PORT" --queues bench \
      --concurrency "$SCALE_CONCURRENCY" --log-level warn \
      >"$TMP/scale-worker-$tag-$i.out" 2>"$TMP/scale-worker-$tag-$i.err" &
    SCALE_WPIDS+=("$!")
    PIDS+=("$!")
  done
}

# Fails (after showing why) when a worker died: its CPU would go uncounted and the figure for
# N workers would be wrong.
scale_workers_alive() {
  local tag=$1 pid dead=""
  for pid in "${SCALE_WPIDS[@]}"; do kill -0 "$pid" 2>/dev/null || dead+="$pid "; done
  [ -z "$dead" ] && return 0
  log "  $tag: worker(s) $dead exited during the run:"
  tail -n 20 "$TMP/scale-worker-$tag-"*.err >&2
  return 1
}

stop_scale_workers() {
  local pid
  for pid in "${SCALE_WPIDS[@]}"; do stop_pid "$pid"; done
  SCALE_WPIDS=()
}

# CPU accounting over a window: cpu_mark before, cpu_share after; cpu_share prints "REDIS
# SERVER WORKERS MACHINE", each process's CPU in % of one core and the machine's in % of all its
# cores, over the wall time between the two calls.
CPU_MARK=()
cpu_sample() {
  local pid w=0
  for pid in "${SCALE_WPIDS[@]}"; do w=$((w + $(cpu_ticks "$pid"))); done
  echo "$(date +%s.%N) $(cpu_ticks "$REDIS_PID") $(cpu_ticks "${SPOOL_PID:-0}") $w $(machine_ticks)"
}
cpu_mark() {
  read -r -a CPU_MARK <<<"$(cpu_sample)"
}
cpu_share() {
  local -a now
  read -r -a now <<<"$(cpu_sample)"
  log "    CPU ticks: redis $((now[1] - CPU_MARK[1])), server $((now[2] - CPU_MARK[2])), workers $((now[3] - CPU_MARK[3])), machine $((now[4] - CPU_MARK[4]))"
  awk -v t="$(getconf CLK_TCK)" -v c="$(nproc)" -v s="$(awk -v a="${now[0]}" -v b="${CPU_MARK[0]}" 'BEGIN { print a - b }')" \
    -v r="$((now[1] - CPU_MARK[1]))" -v sv="$((now[2] - CPU_MARK[2]))" \
    -v w="$((now[3] - CPU_MARK[3]))" -v m="$((now[4] - CPU_MARK[4]))" 'BEGIN {
      printf "%.0f %.0f %.0f %.0f", 100 * r / t / s, 100 * sv / t / s, 100 * w / t / s, 100 * m / t / s / c
    }'
}

# One round for N workers, both ways; not run in a subshell, so that the processes it starts
# stay in PIDS for cleanup. Sets SCALE_E2E and SCALE_DRAIN to "JOBS_PER_S REDIS SERVER WORKERS
# MACHINE" (CPU as cpu_share prints it).
# e2e: the workers wait while the client submits SCALE_JOBS noop jobs in batches to a fresh
#   spool-server (no workers), and polls it until all succeeded: what a producer sees.
# drain: the jobs are queued first, then the workers start and take them straight from Redis:
#   what the workers alone can do against one Redis.
SCALE_E2E=""
SCALE_DRAIN=""
scale_round() {
  local n=$1 round=$2 tag line cpu start now done_n secs
  tag="$n-$round"
  rcli FLUSHALL >/dev/null || return 1
  start_spool "scale-$tag" --backend "redis://127.0.0.1:$REDIS_PORT" \
    --max-body "$BATCH_MAX_BODY" --log-level warn || return 1
  start_scale_workers "$n" "e2e-$tag"
  cpu_mark
  if ! line=$(timeout 300 "${CLIENT_CPU[@]}" python3 "$CLIENT" e2e --port "$SPOOL_PORT" \
    --batch "$BATCH" --total "$SCALE_JOBS" --timeout 240) || ! scale_workers_alive "e2e-$tag"; then
    log "  e2e, $n worker(s), round $round: the jobs did not all succeed"
    stop_scale_workers
    stop_spool_quiet
    return 1
  fi
  cpu=$(cpu_share)
  stop_scale_workers
  log "  e2e, $n worker(s), round $round: $line"
  SCALE_E2E="$(kv "$line" jobs_per_s) $cpu"

  rcli FLUSHALL >/dev/null || { stop_spool_quiet; return 1; }
  if ! timeout 600 "${CLIENT_CPU[@]}" python3 "$CLIENT" submit --port "$SPOOL_PORT" \
    --batch "$BATCH" --total "$SCALE_JOBS" >/dev/null; then
    log "  drain, $n worker(s), round $round: could not queue the jobs"
    stop_spool_quiet
    return 1
  fi
  # The server stays, idle, so that it is counted as it is in the e2e run.
  start_scale_workers "$n" "drain-$tag"
  cpu_mark
  start=$(date +%s.%N)
  done_n=$(wait_succeeded "$SCALE_JOBS" scale_workers_alive "drain-$tag")
  now=$(date +%s.%N)
  cpu=$(cpu_share)
  stop_scale_workers
  stop_spool_quiet
  if [ "$done_n" -lt "$SCALE_JOBS" ]; then
    log "  drain, $n worker(s), round $round: only $done_n of $SCALE_JOBS jobs succeeded"
    return 1
  fi
  secs=$(awk -v a="$now" -v b="$start" 'BEGIN { printf "%.3f", a - b }')
  log "  drain, $n worker(s), round $round: $SCALE_JOBS jobs in $secs s"
  SCALE_DRAIN="$(awk -v n="$SCALE_JOBS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') $cpu"
}

# Prints the report lines of one way (e2e or drain) from the per-count lists of figures.
scale_report() {
  local way=$1 n rate rc sc wc mc base="" v key
  for n in "${SCALE_WORKERS[@]}"; do
    key="$way-$n"
    # The lists are space-separated numbers: word splitting is what is wanted.
    # shellcheck disable=SC2086
    {
      rate=$(median ${SCALE_RATES[$key]})
      rc=$(median ${SCALE_RCPU[$key]})
      sc=$(median ${SCALE_SCPU[$key]})
      wc=$(median ${SCALE_WCPU[$key]})
      mc=$(median ${SCALE_MCPU[$key]})
    }
    [ -n "$base" ] || base=$rate
    v=$(awk -v a="$rate" -v b="$base" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    report "$(printf '   %-5s %-11s %7s jobs/s  x%s   CPU: redis %3s%%  server %3s%%  workers %3s%%  machine %3s%%' \
      "$way" "$n worker(s)" "$rate" "$v" "$rc" "$sc" "$wc" "$mc")"
  done
}

declare -A SCALE_RATES=() SCALE_RCPU=() SCALE_SCPU=() SCALE_WCPU=() SCALE_MCPU=()
scale_add() {
  local key=$1 rate rc sc wc mc
  read -r rate rc sc wc mc <<<"$2"
  SCALE_RATES[$key]+="$rate "
  SCALE_RCPU[$key]+="$rc "
  SCALE_SCPU[$key]+="$sc "
  SCALE_WCPU[$key]+="$wc "
  SCALE_MCPU[$key]+="$mc "
}

bench_scale() {
  local n round ok=1
  log "6. Scale-out on one Redis: ${SCALE_WORKERS[*]} spool-worker processes, $SCALE_JOBS jobs, $RUNS round(s)"
  if [ ! -x "$WORKER" ]; then failed "scale: $WORKER is not built"; return; fi
  start_redis || { failed "scale: redis-server did not start"; return; }
  # Rounds alternate between the worker counts, so that a slow spell of the machine does not
  # land on one count only.
  for ((round = 1; round <= RUNS; round++)); do
    for n in "${SCALE_WORKERS[@]}"; do
      if ! scale_round "$n" "$round"; then ok=0; break 2; fi
      scale_add "e2e-$n" "$SCALE_E2E"
      scale_add "drain-$n" "$SCALE_DRAIN"
    done
  done
  stop_pid "$REDIS_PID"
  if [ "$ok" != 1 ]; then
    failed "scale: a run could not be completed (see above)"
    return
  fi
  report "6. Scale-out on one Redis: $SCALE_JOBS noop jobs, N spool-worker --backend redis://"
  report "   processes (--concurrency $SCALE_CONCURRENCY each); median of $RUNS round(s)."
  report "   e2e: submitted in batches of $BATCH to one spool-server (no workers) while the"
  report "   workers run them, until all succeeded. drain: queued first, then run by the workers."
  report "   CPU over the run in % of one core (machine: of all $(nproc) cores together);"
  report "   redis-server $(redis-server --version | awk '{ sub(/^v=/, "", $3); print $3 }'), AOF on, pinned with spool-server as above"
  scale_report e2e
  scale_report drain
}

# ---- main ------------------------------------------------------------------------------------

main() {
  local want=() arg name
  for arg in "$@"; do
    case $arg in
    --quick)
      DURATION=3s
      RUNS=1
      RATE_SECONDS=2
      MEMORY_JOBS=200000
      E2E_JOBS=20000
      REDIS_DRAIN_JOBS=20000
      SCALE_JOBS=20000
      ;;
    -h | --help)
      usage
      return 0
      ;;
    submit | nginx | batch | memory | e2e | remote | redis | durable | scale) want+=("$arg") ;;
    *)
      log "unknown argument '$arg'"
      usage >&2
      return 2
      ;;
    esac
  done
  [ ${#want[@]} -gt 0 ] || want=(submit batch memory e2e remote redis scale)

  if ! command -v python3 >/dev/null; then
    log "python3 is needed (apt-get install python3)"
    return 1
  fi
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/spool-bench.XXXXXX") || return 1
  setup_pinning

  local version="(not built)"
  [ -x "$SERVER" ] && version=$(timeout 5 "$SERVER" --version 2>/dev/null | head -n 1)
  log "spool-server: $SERVER $version; $(nproc) CPUs; pinning: ${SERVER_CPU[*]:-off}"

  for name in "${want[@]}"; do
    case $name in
    submit) bench_submit 1 ;;
    nginx) bench_submit 0 ;;
    batch) bench_batch ;;
    memory) bench_memory ;;
    e2e) bench_e2e ;;
    remote) bench_remote ;;
    redis) bench_redis ;;
    durable) bench_durable ;;
    scale) bench_scale ;;
    esac
  done

  echo
  echo "================ Spool benchmark report ================"
  echo "spool-server: $version   machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
  if [ ${#SERVER_CPU[@]} -gt 0 ]; then
    echo "servers pinned to CPU 0, load generators to CPU 1"
  fi
  echo
  local line
  for line in "${REPORT[@]}"; do printf '%s\n' "$line"; done
  if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    echo "NOT MEASURED:"
    for line in "${FAILED[@]}"; do printf '  %s\n' "$line"; done
    echo "========================================================"
    return 1
  fi
  echo "========================================================"
  return 0
}

main "$@"
