#!/usr/bin/env bash
# The container's health check: GET /healthz on the server's own listening address, with bash's
# /dev/tcp because the slim image has no curl. Exit 0 when the answer's status is 200.
#   spool-healthcheck [HOST:PORT]     (default: $SPOOL_LISTEN, else 127.0.0.1:7700)
# In a container running spool-worker, which has no HTTP port, the check is that it runs.
set -uo pipefail

# Processes are looked up by name because PID 1 may be an init (compose's init: true).
if [ $# -eq 0 ]; then
  names=$(cat /proc/[0-9]*/comm 2>/dev/null)
  if ! grep -qx spool-server <<<"$names" && grep -qx spool-worker <<<"$names"; then
    exit 0
  fi
fi

addr=${1:-${SPOOL_LISTEN:-127.0.0.1:7700}}
host=${addr%:*}
port=${addr##*:}
# The server may listen on every interface; the check talks to it over loopback.
case "$host" in
  0.0.0.0 | "" | "[::]") host=127.0.0.1 ;;
  \[*\]) host=${host#[} host=${host%]} ;;
esac

# Connecting over loopback answers at once (accepted or refused); the read is what may hang, so
# it is bounded, and HEALTHCHECK --timeout bounds the whole.
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /healthz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS= read -r -t 3 status <&3 || { echo "healthz: no answer from $host:$port" >&2; exit 1; }
status=${status%$'\r'}
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
  *) echo "healthz: $status" >&2; exit 1 ;;
esac
