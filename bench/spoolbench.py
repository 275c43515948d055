#!/usr/bin/env python3
"""spoolbench.py - the load client of Spool's benchmark harness (bench/run.sh).

Standard library only (http.client), so that it runs wherever python3 does. Each batch body is
built once and sent again unchanged: jobs without idempotency keys are all new jobs, and the
client's own JSON building must not be what is measured.

Commands (each prints one line of "key=value" pairs on stdout for run.sh to read):
  check    one submission, expects 201
  rate     POST batches for --seconds over keep-alive; jobs/s
  submit   POST exactly --total jobs in batches; jobs/s
  e2e      submit --total jobs, then poll the queue until that many have succeeded; jobs/s
  rss      VmRSS of a process, in kB
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time

QUEUE = "bench"
TIMEOUT_S = 60  # one request; a server that stalls this long has failed the benchmark


def payload_text(nbytes):
    """A JSON object of exactly nbytes bytes (at least 11): {"data":"xxxx"}."""
    pad = max(0, nbytes - len('{"data":""}'))
    return '{"data":"' + "x" * pad + '"}'


def job_text(payload_bytes):
    if payload_bytes <= 0:
        return '{"type":"noop"}'
    return '{"type":"noop","payload":' + payload_text(payload_bytes) + "}"


def batch_body(count, payload_bytes):
    return ('{"jobs":[' + ",".join([job_text(payload_bytes)] * count) + "]}").encode()


class Failure(Exception):
    pass


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()  # read whole so the connection can be reused
    return resp.status, data


def get_json(conn, path):
    conn.request("GET", path)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise Failure("GET %s: %d %s" % (path, resp.status, data[:200].decode("utf-8", "replace")))
    return json.loads(data)


def connect(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)


def expect_created(status, data, what):
    if status != 201:
        raise Failure("%s: HTTP %d %s" % (what, status, data[:300].decode("utf-8", "replace")))


def cmd_check(args):
    conn = connect(args.port)
    body = job_text(args.payload_bytes).encode()
    status, data = post(conn, "/v1/queues/%s/jobs" % QUEUE, body)
    expect_created(status, data, "submit")
    conn.close()
    print("ok=1")


def proc_cpu_s(pid):
    """CPU seconds (user + system) a process has used so far; None without a pid."""
    if not pid:
        return None
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid, cpu_before, elapsed):
    """The " server_cpu=N%" field: near 100% means the server, not the client, was the limit."""
    if cpu_before is None:
        return ""
    return " server_cpu=%.0f%%" % (100 * (proc_cpu_s(pid) - cpu_before) / elapsed)


def cmd_rate(args):
    body = batch_body(args.batch, args.payload_bytes)
    path = "/v1/queues/%s/batch" % QUEUE
    deadline = [0.0]
    counts = [0] * args.connections
    errors = []

    def loop(slot):
        try:
            conn = connect(args.port)
            while time.monotonic() < deadline[0]:
                status, data = post(conn, path, body)
                expect_created(status, data, "batch")
                counts[slot] += args.batch
            conn.close()
        except Exception as e:  # reported, not raised: the thread has no one to raise to
            errors.append(str(e))

    # One warm-up batch, not counted, so that connection set-up and first allocations are not.
    conn = connect(args.port)
    expect_created(*post(conn, path, body), what="warm-up batch")
    conn.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.connections)]
    cpu_before = proc_cpu_s(args.server_pid)
    start = time.monotonic()
    deadline[0] = start + args.seconds
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if errors:
        raise Failure(errors[0])
    total = sum(counts)
    print("jobs=%d seconds=%.3f jobs_per_s=%.0f bytes_per_batch=%d%s"
          % (total, elapsed, total / elapsed, len(body),
             cpu_share(args.server_pid, cpu_before, elapsed)))


def submit_total(port, total, batch, payload_bytes):
    """Submits exactly `total` jobs over one connection; returns the seconds it took."""
    path = "/v1/queues/%s/batch" % QUEUE
    full = batch_body(batch, payload_bytes)
    rest = total % batch
    last = batch_body(rest, payload_bytes) if rest else None
    conn = connect(port)
    start = time.monotonic()
    for _ in range(total // batch):
        expect_created(*post(conn, path, full), what="batch")
    if last:
        expect_created(*post(conn, path, last), what="batch")
    elapsed = time.monotonic() - start
    conn.close()
    return elapsed


def cmd_submit(args):
    cpu_before = proc_cpu_s(args.server_pid)
    elapsed = submit_total(args.port, args.total, args.batch, args.payload_bytes)
    print("jobs=%d seconds=%.3f jobs_per_s=%.0f%s" % (args.total, elapsed, args.total / elapsed,
                                                      cpu_share(args.server_pid, cpu_before,
                                                                elapsed)))


def cmd_e2e(args):
    start = time.monotonic()
    submit_s = submit_total(args.port, args.total, args.batch, args.payload_bytes)
    conn = connect(args.port)
    deadline = start + args.timeout
    succeeded = 0
    while True:
        q = get_json(conn, "/v1/queues/%s" % QUEUE)
        succeeded = int(q["counts"]["succeeded"])
        if succeeded >= args.total:
            break
        if time.monotonic() > deadline:
            raise Failure("only %d of %d jobs succeeded within %ds (counts: %s)"
                          % (succeeded, args.total, args.timeout, json.dumps(q.get("counts"))))
        time.sleep(0.01)  # a polling interval, not a wait for an outcome: the loop checks it
    elapsed = time.monotonic() - start
    conn.close()
    print("jobs=%d seconds=%.3f jobs_per_s=%.0f submit_seconds=%.3f"
          % (succeeded, elapsed, args.total / elapsed, submit_s))


def cmd_rss(args):
    with open("/proc/%d/status" % args.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                print("rss_kb=%d" % int(line.split()[1]))
                return
    raise Failure("no VmRSS for pid %d" % args.pid)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("check", "rate", "submit", "e2e"):
        s = sub.add_parser(name)
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--payload-bytes", type=int, default=0,
                       help="size of each job's payload JSON; 0 = no payload")
        s.add_argument("--batch", type=int, default=10000)
        s.add_argument("--server-pid", type=int, default=0,
                       help="report how busy this process was during the run")
        if name == "rate":
            s.add_argument("--seconds", type=float, default=5.0)
            s.add_argument("--connections", type=int, default=2)
        if name in ("submit", "e2e"):
            s.add_argument("--total", type=int, required=True)
        if name == "e2e":
            s.add_argument("--timeout", type=int, default=120)
    s = sub.add_parser("rss")
    s.add_argument("--pid", type=int, required=True)
    args = p.parse_args()
    try:
        {"check": cmd_check, "rate": cmd_rate, "submit": cmd_submit, "e2e": cmd_e2e,
         "rss": cmd_rss}[args.cmd](args)
    except (Failure, OSError, http.client.HTTPException, ValueError, KeyError) as e:
        print("spoolbench %s: %s" % (args.cmd, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
