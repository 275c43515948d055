#!/usr/bin/env bash
# Checks deploy/ and the scripts of the repository, offline (no docker, no systemd running):
#   1. shellcheck on every shell script
#   2. deploy/Dockerfile, compose.yaml, nginx.conf, prometheus.yml, grafana/, k8s/ and the
#      systemd units parsed, and checked for what a scaled-out deployment needs
#   3. the image's build steps (deploy/build.sh, as the Dockerfile runs them) in a fresh export
#      of the source tree, and the shared libraries the binaries need against the final image's
#   4. make install DESTDIR=... PREFIX=/usr in that export: binaries, units, --help pages
#   5. systemd-analyze verify and security on the installed units
#   6. the container's health check against a real spool-server
# Runs from the repository root (SPOOL_SOURCE_DIR); exits non-zero if any check fails.
set -uo pipefail

src=${SPOOL_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
bin_dir=${SPOOL_BIN_DIR:-$src/build/bin}
cd "$src" || exit 1
# Debian's python3, which python3-yaml serves (a python3 earlier in PATH may lack yaml).
PY=/usr/bin/python3

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

failed=()
check() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    failed+=("$name")
  fi
}

# ---- 1. shellcheck ---------------------------------------------------------------------------
# Every *.sh, and every other file whose first line is a sh or bash shebang (such as .ci/run).
list_scripts() {
  find . \( -path ./build -o -path ./.git -o -path ./var -o -name node_modules \) -prune -o \
    -type f -print | sed 's|^\./||' | sort | while IFS= read -r f; do
    case "$f" in
      *.sh) echo "$f" ;;
      *) head -n 1 "$f" 2>/dev/null | grep -qE '^#!.*[/ ](ba|da)?sh( |$)' && echo "$f" ;;
    esac
  done
}

check_shellcheck() {
  local ok=0 f n=0
  while IFS= read -r f; do
    n=$((n + 1))
    if shellcheck -x "$f" >"$tmp/shellcheck.out" 2>&1; then
      echo "  shellcheck $f: clean"
    else
      echo "  shellcheck $f: FAILED"
      sed 's/^/    /' "$tmp/shellcheck.out"
      ok=1
    fi
  done < <(list_scripts)
  echo "  $n scripts checked"
  [ "$n" -gt 0 ] && [ "$ok" = 0 ]
}

# ---- 2. configuration files ------------------------------------------------------------------
check_config() {
  "$PY" - "$src" <<'PY'
import json, os, re, sys
import yaml

src = sys.argv[1]
D = os.path.join(src, "deploy")
errors = []

def need(cond, what):
    print("  %s %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        errors.append(what)
    return cond

def seconds(v):
    """A Spool or systemd duration ("10s", "500ms", "1m", "30") in seconds."""
    v = str(v).strip()
    m = re.fullmatch(r"(\d+)\s*(ms|s|sec|m|min|h)?", v)
    if not m:
        raise ValueError("bad duration %r" % v)
    n, u = int(m.group(1)), m.group(2)
    return {None: 1, "s": 1, "sec": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600}[u] * n

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

# -- Dockerfile
with open(os.path.join(D, "Dockerfile")) as f:
    text = re.sub(r"\\\n", " ", f.read())
ins = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
stages = []
for l in ins:
    if l.upper().startswith("FROM "):
        stages.append([l])
    elif stages:
        stages[-1].append(l)
need(len(stages) == 2, "Dockerfile has two stages (build, final)")
if len(stages) == 2:
    b, fin = stages
    need(re.fullmatch(r"FROM debian:bookworm-slim AS build", b[0], re.I) is not None,
         "build stage is FROM debian:bookworm-slim AS build")
    need(fin[0] == "FROM debian:bookworm-slim", "final stage is FROM debian:bookworm-slim")
    need("COPY deploy/build.sh /usr/local/sbin/spool-build" in b and
         "RUN /usr/local/sbin/spool-build deps" in b and
         "RUN /usr/local/sbin/spool-build build /src /out" in b,
         "build stage installs deps and builds with deploy/build.sh (as tested below)")
    need(any(l.startswith("RUN /usr/local/sbin/spool-build runtime") for l in fin),
         "final stage installs only the runtime libraries (build.sh runtime)")
    need(not any("-dev" in l or "build-essential" in l for l in fin),
         "final stage installs no -dev package or compiler")
    copies = [l for l in fin if l.startswith("COPY --from=")]
    need(copies == ["COPY --from=build /out/bin/ /usr/local/bin/"],
         "final stage copies only the binaries from the build stage")
    users = [l.split()[1] for l in fin if l.startswith("USER ")]
    need(bool(users) and users[-1].split(":")[0] not in ("root", "0"), "final stage runs as a non-root user")
    need("EXPOSE 7700" in fin, "EXPOSE 7700")
    hc = [l for l in fin if l.startswith("HEALTHCHECK ")]
    need(len(hc) == 1 and "spool-healthcheck" in hc[0] and "--timeout=" in hc[0],
         "HEALTHCHECK runs spool-healthcheck with a timeout")
    need("COPY deploy/healthcheck.sh /usr/local/bin/spool-healthcheck" in fin,
         "the health check script is in the image")
    env = " ".join(l for l in fin if l.startswith("ENV "))
    need("SPOOL_LISTEN=0.0.0.0:7700" in env, "listens on 0.0.0.0:7700, set by SPOOL_LISTEN")
    need(any(l.startswith("CMD ") and "spool-server" in l for l in fin), "default command is spool-server")
with open(os.path.join(D, "Dockerfile.dockerignore")) as f:
    ign = f.read().split()
need("build" in ign and ".git" in ign, "Dockerfile.dockerignore keeps build/ and .git out of the context")

# -- compose
compose = load(os.path.join(D, "compose.yaml"))[0]
svcs = compose.get("services", {})

def cmd(s):
    c = s.get("command", [])
    return c.split() if isinstance(c, str) else [str(x) for x in c]

def env_of(s):
    e = s.get("environment", {}) or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: str(v) for k, v in e.items()}

def mounts(s):
    out = {}
    for v in s.get("volumes", []) or []:
        parts = v.split(":")
        out[parts[1]] = parts[0]
    return out

redis = svcs.get("redis", {})
rc = cmd(redis)
need("redis" in str(redis.get("image", "")), "compose: a redis service")
need("--appendonly" in rc and rc[rc.index("--appendonly") + 1] == "yes", "compose: redis with appendonly yes")
need("--maxmemory-policy" in rc and rc[rc.index("--maxmemory-policy") + 1] == "noeviction",
     "compose: redis with maxmemory-policy noeviction")
need("/data" in mounts(redis), "compose: redis keeps /data on a volume")
servers = [n for n, s in svcs.items() if cmd(s)[:1] == ["spool-server"]]
need(len(servers) >= 2, "compose: two spool-server services (%s)" % ", ".join(servers))
for n in servers:
    s = svcs[n]
    c = cmd(s)
    need("--backend" in c and c[c.index("--backend") + 1].startswith("redis://redis:6379"),
         "compose: %s uses --backend redis://redis:6379" % n)
    need(env_of(s).get("SPOOL_LISTEN") == "0.0.0.0:7700", "compose: %s listens on 0.0.0.0:7700" % n)
    grace = seconds(env_of(s).get("SPOOL_SHUTDOWN_GRACE", "10s"))
    need(seconds(s.get("stop_grace_period", "10s")) > grace,
         "compose: %s stop_grace_period above its shutdown grace" % n)
    need("ports" not in s, "compose: %s is reached through nginx only" % n)
workers = [n for n, s in svcs.items() if cmd(s)[:1] == ["spool-worker"]]
need(len(workers) == 1, "compose: one spool-worker service")
for n in workers:
    s = svcs[n]
    c = cmd(s)
    need("--backend" in c and c[c.index("--backend") + 1].startswith("redis://redis:6379"),
         "compose: %s uses --backend redis://redis:6379" % n)
    need("container_name" not in s and "ports" not in s, "compose: %s can be scaled (--scale)" % n)
    grace = seconds(env_of(s).get("SPOOL_SHUTDOWN_GRACE", "10s"))
    need(seconds(s.get("stop_grace_period", "10s")) > grace,
         "compose: %s stop_grace_period above its shutdown grace" % n)
nginx = svcs.get("nginx", {})
need("nginx" in str(nginx.get("image", "")) and mounts(nginx).get("/etc/nginx/nginx.conf") == "./nginx.conf",
     "compose: nginx with deploy/nginx.conf")
need(any(str(p).startswith("7700:") for p in nginx.get("ports", [])), "compose: nginx published on 7700")
prom = svcs.get("prometheus", {})
need(mounts(prom).get("/etc/prometheus/prometheus.yml") == "./prometheus.yml", "compose: prometheus with deploy/prometheus.yml")
graf = svcs.get("grafana", {})
gm = mounts(graf)
need(gm.get("/etc/grafana/provisioning") == "./grafana/provisioning", "compose: grafana provisioning mounted")
for name, s in svcs.items():
    for target, source in mounts(s).items():
        if source.startswith("./"):
            need(os.path.exists(os.path.join(D, source)), "compose: %s mounts %s, which exists" % (name, source))

# -- nginx.conf
with open(os.path.join(D, "nginx.conf")) as f:
    ng = re.sub(r"#.*", "", f.read())
up = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", ng)
need(up is not None, "nginx: an upstream block")
if up:
    ups = re.findall(r"server\s+([\w.-]+:\d+)", up.group(2))
    need(sorted(ups) == sorted("%s:7700" % n for n in servers),
         "nginx: round-robin over every spool-server (%s)" % ", ".join(ups))
    need(not re.search(r"\b(ip_hash|hash|least_conn|random)\b", up.group(2)), "nginx: round-robin balancing")
    need(re.search(r"proxy_pass\s+http://%s;" % up.group(1), ng) is not None, "nginx: proxies to the upstream")
timeouts = [seconds(t) for t in re.findall(r"proxy_read_timeout\s+(\w+);", ng)]
need(bool(timeouts) and min(timeouts) > 60, "nginx: proxy_read_timeout above 60 s (long polls)")
ev = re.search(r"location\s+/v1/events\s*\{([^}]*)\}", ng)
need(ev is not None and re.search(r"proxy_buffering\s+off;", ev.group(1)) is not None,
     "nginx: proxy_buffering off for /v1/events")
need(re.search(r"proxy_http_version\s+1\.1;", ng) is not None, "nginx: HTTP/1.1 to the servers (keep-alive, streaming)")

# -- prometheus.yml
pc = load(os.path.join(D, "prometheus.yml"))[0]
targets = [t for j in pc.get("scrape_configs", []) if j.get("metrics_path", "/metrics") == "/metrics"
           for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
need(sorted(targets) == sorted("%s:7700" % n for n in servers),
     "prometheus: scrapes /metrics of every spool-server directly")

# -- grafana
ds = load(os.path.join(D, "grafana/provisioning/datasources/prometheus.yaml"))[0]["datasources"]
need(any(d.get("type") == "prometheus" and d.get("url") == "http://prometheus:9090" for d in ds),
     "grafana: Prometheus data source")
uids = {d.get("uid") for d in ds}
prov = load(os.path.join(D, "grafana/provisioning/dashboards/spool.yaml"))[0]["providers"]
paths = [p["options"]["path"] for p in prov]
need(len(paths) == 1 and gm.get(paths[0]) == "./grafana/dashboards",
     "grafana: the dashboards provider reads the mounted deploy/grafana/dashboards")
with open(os.path.join(D, "grafana/dashboards/spool.json")) as f:
    dash = json.load(f)
exprs = [t["expr"] for p in dash.get("panels", []) for t in p.get("targets", [])]
dsu = {t.get("datasource", {}).get("uid") for p in dash.get("panels", []) for t in p.get("targets", [])}
need(dsu <= uids, "grafana: every panel uses the provisioned data source")
need(any("spool_queue_jobs" in e and 'state="queued"' in e for e in exprs), "grafana: a queue depth panel")
need(any("rate(spool_jobs_total" in e for e in exprs), "grafana: a job rate panel")
need(any("histogram_quantile" in e and "spool_job_wait_seconds_bucket" in e for e in exprs)
     and any("histogram_quantile" in e and "spool_job_run_seconds_bucket" in e for e in exprs),
     "grafana: wait and run latency panels")

# -- systemd units
def unit(path):
    u = {}
    sec = None
    with open(path) as f:
        for l in f:
            l = l.strip()
            if not l or l[0] in "#;":
                continue
            if l.startswith("["):
                sec = l.strip("[]")
                continue
            k, _, v = l.partition("=")
            u.setdefault((sec, k.strip()), []).append(v.strip())
    return u

for name in ("spool-server.service", "spool-worker@.service"):
    u = unit(os.path.join(D, "systemd", name))
    S = lambda k: u.get(("Service", k), [""])[-1]
    ex = S("ExecStart")
    g = re.search(r"--shutdown-grace[ =](\S+)", ex)
    envs = " ".join(u.get(("Service", "Environment"), []))
    ge = re.search(r"SPOOL_SHUTDOWN_GRACE=(\S+)", envs)
    grace = seconds(g.group(1) if g else ge.group(1) if ge else "10s")
    need(S("KillSignal") == "SIGTERM", "%s: KillSignal=SIGTERM" % name)
    need(seconds(S("TimeoutStopSec") or "90s") > grace, "%s: TimeoutStopSec above the shutdown grace" % name)
    for k, v in (("DynamicUser", "yes"), ("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"),
                 ("PrivateTmp", "yes"), ("ProtectHome", "yes"), ("LimitNOFILE", "65536")):
        need(S(k) == v, "%s: %s=%s" % (name, k, v))
    need(S("RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"],
         "%s: RestrictAddressFamilies to IP and Unix sockets" % name)
    need(ex.startswith("/usr/local/bin/"), "%s: ExecStart under /usr/local/bin (make install rewrites PREFIX)" % name)
    if name.startswith("spool-server"):
        need(S("StateDirectory") == "spool" and "--data-dir /var/lib/spool" in ex,
             "%s: StateDirectory=spool for --data-dir /var/lib/spool" % name)
    else:
        need(re.search(r"--queues %[iI]\b", ex) is not None, "%s: templated by queue (--queues %%I)" % name)

# -- Kubernetes
K = os.path.join(D, "k8s")
kust = load(os.path.join(K, "kustomization.yaml"))[0]
docs = []
for r in kust["resources"]:
    need(os.path.exists(os.path.join(K, r)), "k8s: kustomization resource %s exists" % r)
for fn in sorted(os.listdir(K)):
    if fn.endswith(".yaml") and fn != "kustomization.yaml":
        for d in load(os.path.join(K, fn)):
            docs.append((fn, d))
need(all(d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name") for _, d in docs),
     "k8s: every document has apiVersion, kind and metadata.name")
byk = {}
for fn, d in docs:
    byk.setdefault(d["kind"], []).append((fn, d))

def deployment(name):
    for _, d in byk.get("Deployment", []):
        if d["metadata"]["name"] == name:
            return d
    return None

def container_env(c):
    return {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}

def selects(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

for name, binary in (("spool-server", "spool-server"), ("spool-worker", "spool-worker")):
    d = deployment(name)
    if not need(d is not None, "k8s: Deployment %s" % name):
        continue
    pod = d["spec"]["template"]
    c = pod["spec"]["containers"][0]
    need(c.get("command", [None])[0] == binary, "k8s: %s runs %s" % (name, binary))
    env = container_env(c)
    need(env.get("SPOOL_BACKEND", "").startswith("redis://"), "k8s: %s on Redis (SPOOL_BACKEND)" % name)
    grace = seconds(env.get("SPOOL_SHUTDOWN_GRACE", "10s"))
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = seconds(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    tgps = pod["spec"].get("terminationGracePeriodSeconds", 30)
    need(tgps > grace + pre_s, "k8s: %s terminationGracePeriodSeconds %s > grace %s + preStop %s"
         % (name, tgps, grace, pre_s))
    req = c.get("resources", {}).get("requests", {})
    need("cpu" in req and "memory" in req, "k8s: %s has cpu and memory requests" % name)
    need(selects(d["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]),
         "k8s: %s selector matches its pods" % name)
    need(any(selects(p["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
             for _, p in byk.get("PodDisruptionBudget", [])), "k8s: a PodDisruptionBudget covers %s" % name)
    if name == "spool-server":
        need(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
             "k8s: spool-server liveness probe on /healthz")
        need(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
             "k8s: spool-server readiness probe on /readyz")
        need(env.get("SPOOL_LISTEN") == "0.0.0.0:7700", "k8s: spool-server listens on 0.0.0.0:7700")
        need(any(selects(s["spec"].get("selector"), pod["metadata"]["labels"]) and
                 any(p.get("port") == 7700 for p in s["spec"].get("ports", []))
                 for _, s in byk.get("Service", [])), "k8s: a Service on port 7700 selects spool-server")

so = {}
for fn, d in byk.get("ScaledObject", []):
    for t in d["spec"]["triggers"]:
        so[t["type"]] = (fn, d, t)
        need(d["spec"]["scaleTargetRef"]["name"] == "spool-worker", "k8s: %s scales spool-worker" % fn)
if need("prometheus" in so, "k8s: a KEDA ScaledObject with a prometheus trigger"):
    fn, d, t = so["prometheus"]
    q = t["metadata"]["query"]
    need("spool_queue_jobs" in q and 'state="queued"' in q, "k8s: prometheus trigger on spool_queue_jobs{state=\"queued\"}")
    need(fn in kust["resources"], "k8s: the prometheus ScaledObject is applied by kustomization")
if need("metrics-api" in so, "k8s: a KEDA ScaledObject with a metrics-api trigger"):
    fn, d, t = so["metrics-api"]
    need(re.search(r"/v1/queues/[A-Za-z0-9._:-]+$", t["metadata"]["url"]) is not None and
         t["metadata"].get("valueLocation") == "counts.queued",
         "k8s: metrics-api trigger on GET /v1/queues/{q}, counts.queued")
    need(fn not in kust["resources"], "k8s: only one ScaledObject applied by kustomization")
red = [d for _, d in byk.get("StatefulSet", []) if d["metadata"]["name"] == "redis"]
conf = " ".join(str(d.get("data", {})) for _, d in byk.get("ConfigMap", []))
need(bool(red) and "appendonly yes" in conf and "maxmemory-policy noeviction" in conf,
     "k8s: Redis StatefulSet with appendonly yes and noeviction")

print("  %d configuration checks failed" % len(errors) if errors else "  every configuration check passed")
sys.exit(1 if errors else 0)
PY
}

check_nginx() {
  if ! command -v nginx >/dev/null; then
    echo "  nginx is not installed: nginx -t skipped (the text checks above still ran)"
    return 0
  fi
  # nginx -t resolves the upstream names: here they become loopback ports.
  mkdir -p "$tmp/nginx/logs"
  sed -E 's/server server([0-9]+):7700;/server 127.0.0.1:770\1;/' deploy/nginx.conf >"$tmp/nginx/nginx.conf"
  timeout 30 nginx -t -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" >"$tmp/nginx/out" 2>&1
  local rc=$?
  sed 's/^/  /' "$tmp/nginx/out"
  return "$rc"
}

# ---- 3. the image's build steps in a fresh export --------------------------------------------
export_tree() {
  mkdir -p "$tmp/src"
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # What `git archive` of this tree would hold, uncommitted work included: tracked and
    # untracked files that are not ignored (so never build/).
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
      tar --null -T - -cf - | tar -C "$tmp/src" -xf -
  else
    tar --exclude=./build --exclude=./.git -cf - . | tar -C "$tmp/src" -xf -
  fi
  [ -f "$tmp/src/Makefile" ] && [ ! -e "$tmp/src/build" ]
}

check_build() {
  export_tree || { echo "  export failed"; return 1; }
  local deps p ok=0 b
  deps=" $(make -s -C "$tmp/src" -pn 2>/dev/null | sed -n 's/^DEBIAN_DEPS = //p' | head -n 1) "
  while read -r kind p; do
    if [ "$kind" = build ]; then
      if [[ "$deps" == *" $p "* ]]; then
        echo "  build package $p is in the Makefile's DEBIAN_DEPS"
      else
        echo "  build package $p is missing from the Makefile's DEBIAN_DEPS"
        ok=1
      fi
    fi
  done < <(bash deploy/build.sh packages)
  echo "  deploy/build.sh build (as the Dockerfile's build stage runs it) in $tmp/src"
  if ! (cd "$tmp/src" && bash deploy/build.sh build "$tmp/src" "$tmp/out") >"$tmp/build.log" 2>&1; then
    tail -n 30 "$tmp/build.log" | sed 's/^/    /'
    return 1
  fi
  for b in spool-server spool-worker spool; do
    if [ -x "$tmp/out/bin/$b" ] && "$tmp/out/bin/$b" --version >/dev/null; then
      echo "  $b built: $("$tmp/out/bin/$b" --version)"
    else
      echo "  $b missing or does not run"
      ok=1
    fi
  done
  return "$ok"
}

# Every shared library the binaries load must come from a package of the final image: libc6
# (in debian:bookworm-slim) or the runtime packages deploy/build.sh installs.
check_runtime_libs() {
  local allowed ok=0 lib pkg b
  allowed=" libc6 libgcc-s1 $(bash deploy/build.sh packages | awk '$1 == "runtime" { printf "%s ", $2 }')"
  for b in "$tmp"/out/bin/*; do
    while read -r lib; do
      pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null)
      pkg=${pkg%%:*}
      if [ -n "$pkg" ] && [[ "$allowed" == *" $pkg "* ]]; then
        echo "  $(basename "$b") needs $lib from $pkg: in the image"
      else
        echo "  $(basename "$b") needs $lib from ${pkg:-no package}: NOT in the image"
        ok=1
      fi
    done < <(ldd "$b" | awk '/=>/ { print $3; next } /^\s*\// { print $1 }')
  done
  return "$ok"
}

# ---- 4. make install ----------------------------------------------------------------------------
check_install() {
  local root=$tmp/root ok=0 f b
  make -s -C "$tmp/src" install DESTDIR="$root" PREFIX=/usr >"$tmp/install.log" 2>&1 ||
    { sed 's/^/    /' "$tmp/install.log"; return 1; }
  for b in spool-server spool-worker spool; do
    f=$root/usr/bin/$b
    if [ -x "$f" ]; then echo "  $f"; else echo "  missing $f" && ok=1; fi
    f=$root/usr/share/doc/spool/$b.txt
    if [ -s "$f" ] && grep -q '^NAME' "$f" && grep -q -- '--help' "$f"; then
      echo "  $f: $(grep -c '' "$f") lines"
    else
      echo "  missing or empty $f"
      ok=1
    fi
  done
  for f in spool-server.service spool-worker@.service; do
    f=$root/usr/lib/systemd/system/$f
    if [ -f "$f" ] && grep -q '^ExecStart=/usr/bin/spool-' "$f" && ! grep -q /usr/local/ "$f"; then
      echo "  $f: ExecStart under /usr/bin"
    else
      echo "  $f missing or not pointed at PREFIX"
      ok=1
    fi
  done
  return "$ok"
}

# ---- 5. systemd ------------------------------------------------------------------------------
# systemd-analyze works without a running systemd. ExecStart must name an executable file, so
# the installed units are checked with their binaries' staged path.
check_systemd() {
  local root=$tmp/root units=$tmp/units ok=0 u
  mkdir -p "$units"
  for u in spool-server.service spool-worker@.service; do
    sed "s|^ExecStart=/usr/bin/|ExecStart=$root/usr/bin/|" "$root/usr/lib/systemd/system/$u" >"$units/$u"
  done
  cd "$units" || return 1
  # verify exits 0 on warnings such as an unknown key: any output at all fails the check.
  timeout 120 systemd-analyze verify ./spool-server.service ./spool-worker@default.service \
    "./spool-worker@$(systemd-escape 'emails,sms').service" >"$tmp/verify.out" 2>&1 || ok=1
  if [ -s "$tmp/verify.out" ]; then
    sed 's/^/    /' "$tmp/verify.out"
    ok=1
  fi
  [ "$ok" = 0 ] && echo "  systemd-analyze verify: no complaint"
  for u in spool-server.service spool-worker@default.service; do
    if timeout 120 systemd-analyze security --offline=true --threshold=30 "./$u" >"$tmp/security.out" 2>&1; then
      echo "  systemd-analyze security $u: $(grep -o 'exposure level.*' "$tmp/security.out")"
    else
      tail -n 5 "$tmp/security.out" | sed 's/^/    /'
      echo "  systemd-analyze security $u: exposure above 3.0"
      ok=1
    fi
  done
  cd "$src" || return 1
  return "$ok"
}

# ---- 6. the health check -----------------------------------------------------------------------
check_healthcheck() {
  local server=$bin_dir/spool-server line="" addr port i ok=0
  [ -x "$server" ] || server=$tmp/out/bin/spool-server
  : >"$tmp/server.out"
  "$server" --listen 127.0.0.1:0 >"$tmp/server.out" 2>"$tmp/server.err" &
  server_pid=$!
  # The first line of standard output is "listening on HOST:PORT"; wait for it, bounded.
  for ((i = 0; i < 300; i++)); do
    IFS= read -r line <"$tmp/server.out" && [ -n "$line" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  addr=${line#listening on }
  port=${addr##*:}
  if [[ "$line" != "listening on "* ]]; then
    echo "  spool-server did not start:"
    sed 's/^/    /' "$tmp/server.err"
    return 1
  fi
  echo "  spool-server on $addr"
  if bash deploy/healthcheck.sh "$addr"; then echo "  healthy at $addr"; else echo "  NOT healthy at $addr"; ok=1; fi
  if SPOOL_LISTEN=0.0.0.0:$port bash deploy/healthcheck.sh; then
    echo "  healthy with SPOOL_LISTEN=0.0.0.0:$port (checked over loopback)"
  else
    echo "  NOT healthy with SPOOL_LISTEN=0.0.0.0:$port"
    ok=1
  fi
  kill -TERM "$server_pid"
  wait "$server_pid"
  server_pid=""
  if bash deploy/healthcheck.sh "$addr" 2>/dev/null; then
    echo "  a stopped server counts as healthy"
    ok=1
  else
    echo "  unhealthy once the server has stopped"
  fi
  return "$ok"
}

check "shellcheck on every shell script" check_shellcheck
check "deploy/ configuration files" check_config
check "nginx -t on deploy/nginx.conf" check_nginx
if check "image build steps (deploy/build.sh) in a fresh export" check_build; then
  check "the final image's runtime libraries" check_runtime_libs
  if check "make install DESTDIR=... PREFIX=/usr" check_install; then
    check "systemd-analyze verify and security" check_systemd
  else
    failed+=("systemd (not run: install failed)")
  fi
else
  failed+=("runtime libraries, install, systemd (not run: build failed)")
fi
check "container health check (deploy/healthcheck.sh)" check_healthcheck

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'test_deploy: FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "test_deploy: every check passed"
