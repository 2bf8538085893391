#!/usr/bin/python3
"""Side-by-side benchmark of portero, nginx, HAProxy and H2O (`make bench`).

Every candidate runs one worker pinned to the proxy CPU, in front of the same
nginx backend (pinned, with wrk, to the load CPU), with keep-alive to the
backend.  Scenarios:

  small  wrk -t1 -c50 --latency, GET /small (13 bytes), keep-alive
  1m     wrk -t1 -c8  --latency, GET /1m (1 MiB), keep-alive
  close  wrk -t1 -c50 --latency -H 'Connection: close', GET /small
  idle   N idle keep-alive client connections (default 10,000): RSS growth
  protect  the request steps of issue 6 (allow/deny, rate limit, WAF): the
         small scenario with a browser's request headers against portero
         with no steps, allow/deny, + a rate limit, + the WAF (and nginx
         with no steps and with allow/deny + limit_req), 5 s per run
  h2tls  HTTP/2 over TLS 1.3 (TLS_AES_128_GCM_SHA256 for all): h2load
         -n 100000 -c 32 -m 10, GET /small; portero, nginx, HAProxy, H2O
  handshake  a new TLS 1.3 connection per request: 4 x `openssl s_time -new`
         (full handshakes, nothing resumed) for 3 s, then h2load --h1 -c 16
         -H 'Connection: close' (every connection resumes a session)
  cache  cache hits: wrk -t1 -c50 for 5 s on GET /cached (1 KiB, max-age=3600)
         against portero (cache zone), nginx (proxy_cache), HAProxy (cache
         section) and Varnish; then the eviction simulator's S3-FIFO vs LRU
         hit ratios (build/bench/cache_trace)

For the wrk, h2load and s_time scenarios the proxy's CPU time (utime+stime
of all its processes and threads, from /proc/PID/stat) over the run is
divided by the number of requests completed.  Candidates are alternated in
shuffled order for a number of rounds and the median of each metric is
reported.  The TLS scenarios run after the others in each round, with a
TLS-configured instance of each candidate.

Python 3 standard library only (plus the h2load, openssl and h2o binaries
for the TLS scenarios, varnishd for the cache scenario).  See bench/README.md.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

SMALL_BODY = b"hello world!\n"
LARGE_SIZE = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

CANDIDATES = ("portero", "nginx", "haproxy")
DISPLAY = {"portero": "portero", "nginx": "nginx", "haproxy": "HAProxy", "h2o": "H2O"}
# The TLS scenarios (issue 4) compare H2O too.
TLS_CANDIDATES = ("portero", "nginx", "haproxy", "h2o")
TLS_SCENARIOS = ("h2tls", "handshake")

# name, path, wrk connections, extra wrk args, title
WRK_SCENARIOS = (
    ("small", "/small", 50, [], "Small responses, keep-alive (GET /small, 13 B, wrk -t1 -c50)"),
    ("1m", "/1m", 8, [], "1 MiB responses, keep-alive (GET /1m, wrk -t1 -c8)"),
    ("close", "/small", 50, ["-H", "Connection: close"],
     "One connection per request (GET /small, wrk -t1 -c50 -H 'Connection: close')"),
)
IDLE_TITLE = "Idle keep-alive client connections (RSS growth per connection)"
SCENARIOS = ("small", "1m", "close", "idle", "protect", "h2tls", "handshake", "cache")

# The "protect" scenario: what the request steps of issue 6 cost per request.
# A browser's headers, not wrk's bare request: the CRS scores a numeric Host
# (rule 920350), and real traffic carries these headers for the WAF to inspect.
PROTECT_HEADERS = (
    ("Host", "bench.local"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate"),
)
PROTECT_TITLE = ("Cost of the protection steps (GET /small, 13 B, keep-alive, wrk -t1, "
                 "browser request headers)")

# Filled into the *_STEPS and RATE_LIMITS placeholders of portero.yaml.tmpl and
# nginx.conf.tmpl.  The deny ranges never match 127.0.0.1, and the rate limit
# is far above what one CPU can serve: every step runs and lets the request on.
_ACL_LISTENER = '    deny: [10.0.0.0/8, 172.16.0.0/12, 192.0.2.0/24, "2001:db8::/32"]'
_ACL_ROUTE = "    allow: [127.0.0.0/8]"
_RL_TOP = ("rate_limits:\n"
           "  bench: { rate: 10000000/s, burst: 10000000, key: client_ip }")
_RL_ROUTE = "    rate_limit: bench"
_WAF_ROUTE = "    waf: { mode: block, paranoia: 1 }"
_NGINX_RL_HTTP = "    limit_req_zone $binary_remote_addr zone=bench:1m rate=10000000r/s;"
# nginx reads allow/deny in order, first match wins: the listener's deny list,
# then the route's allow list and its implicit "everyone else is refused".
_NGINX_ACL_RL_LOCATION = "\n".join("            " + line for line in (
    "deny 10.0.0.0/8;", "deny 172.16.0.0/12;", "deny 192.0.2.0/24;", "deny 2001:db8::/32;",
    "allow 127.0.0.0/8;", "deny all;", "limit_req zone=bench burst=10000000 nodelay;"))

# candidate, key, label, wrk connections, placeholder values.  The WAF costs
# ~60x a plain request: 8 connections keep the proxy CPU just as busy, and
# the requests still in flight when wrk stops (CPU spent, not counted as done)
# weigh 6x less than with 50 (50 x 1.3 ms would be ~1% of a 5 s run).
PROTECT_VARIANTS = (
    ("portero", "plain", "no steps", 50, {}),
    ("portero", "acl", "allow/deny", 50,
     {"LISTENER_STEPS": _ACL_LISTENER, "ROUTE_STEPS": _ACL_ROUTE}),
    ("portero", "acl_rl", "allow/deny + rate limit", 50,
     {"LISTENER_STEPS": _ACL_LISTENER, "RATE_LIMITS": _RL_TOP,
      "ROUTE_STEPS": _ACL_ROUTE + "\n" + _RL_ROUTE}),
    ("portero", "acl_rl_waf", "allow/deny + rate limit + WAF", 8,
     {"LISTENER_STEPS": _ACL_LISTENER, "RATE_LIMITS": _RL_TOP,
      "ROUTE_STEPS": "\n".join((_ACL_ROUTE, _RL_ROUTE, _WAF_ROUTE))}),
    ("nginx", "nginx_plain", "no steps", 50, {}),
    ("nginx", "nginx_acl_rl", "allow/deny + limit_req", 50,
     {"HTTP_STEPS": _NGINX_RL_HTTP, "LOCATION_STEPS": _NGINX_ACL_RL_LOCATION}),
)
PROTECT_STEPS = ("RATE_LIMITS", "LISTENER_STEPS", "ROUTE_STEPS", "HTTP_STEPS", "LOCATION_STEPS")
# What nginx writes to its error log when allow/deny or limit_req refuses.
NGINX_REFUSALS = (b"access forbidden by rule", b"limiting requests")
# portero's counters of refused (or WAF-flagged) requests, from /metrics.
PORTERO_REFUSALS = ("portero_acl_denied_total", "portero_rate_limited_total",
                    "portero_waf_blocked_total", "portero_waf_detected_total")

# Targets of issue 2, item 13: portero's CPU per request relative to the
# better (lower) of nginx and HAProxy, and an absolute idle-memory bound.
CPU_TARGETS = {"small": 0.7, "1m": 1.0, "close": 1.0}
IDLE_TARGET_KIB = 0.5

# Results above this share of failed or non-2xx requests are flagged invalid.
MAX_ERROR_SHARE = 0.01
# Above this share of a benchmark CPU used by other processes, say so.
NOISY_SHARE = 0.10
# Niceness of everything the benchmark starts (BENCH_NICE; root may go below 0).
NICE = 0


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Processes: every child is tracked by PID and ended by PID.

class Procs:
    """Children we started; stop() ends one tree, stop_all() ends them all."""

    def __init__(self):
        self.items = []  # (name, Popen)

    def start(self, name, argv, cpu, logpath, cwd=None):
        logf = open(logpath, "ab")
        cpus = None if cpu is None else {cpu}

        def pin():
            if cpus is not None:
                os.sched_setaffinity(0, cpus)
            if NICE:
                os.nice(NICE)

        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                 stderr=subprocess.STDOUT, cwd=cwd,
                                 preexec_fn=pin, start_new_session=True)
        finally:
            logf.close()
        self.items.append((name, p))
        return p

    def stop(self, p, grace=5.0):
        """SIGTERM the process and its descendants by PID, SIGKILL leftovers."""
        pids = [p.pid] + descendants(p.pid)
        for pid in pids:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if p.poll() is not None and not any(_alive(x) for x in pids[1:]):
                break
            time.sleep(0.05)
        for pid in [p.pid] + descendants(p.pid) + pids[1:]:
            if _alive(pid) and (pid != p.pid or p.poll() is None):
                _kill(pid, signal.SIGKILL)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.items = [(n, q) for (n, q) in self.items if q is not p]

    def stop_all(self):
        for _, p in list(reversed(self.items)):
            try:
                self.stop(p, grace=3.0)
            except Exception as e:  # keep cleaning up the others
                log(f"cleanup of pid {p.pid} failed: {e}")


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _ppid_map():
    m = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            m.setdefault(int(fields[1]), []).append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return m


def descendants(pid):
    m = _ppid_map()
    out, todo = [], [pid]
    while todo:
        for c in m.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree(pid):
    return [pid] + descendants(pid)


def cpu_ticks(pids, user_only=False):
    """utime+stime (or utime alone) in clock ticks summed over processes; covers all threads."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is field 3 (state); utime, stime are fields 14, 15.
            total += int(fields[11]) + (0 if user_only else int(fields[12]))
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def cpu_stat(cpu):
    """(busy, total) clock ticks of one CPU from /proc/stat; steal counts as busy."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                # user nice system idle iowait irq softirq steal (guest* are in user)
                idle = v[3] + v[4]
                total = sum(v[:8])
                return total - idle, total
    return 0, 0


class CpuWatch:
    """Share of each benchmark CPU taken by processes other than ours."""

    def __init__(self, env, cand_pids):
        self.env, self.cand_pids = env, cand_pids
        self.back_pids = tree(env.backend.pid)
        a = env.args
        self.p0, self.l0 = cpu_stat(a.proxy_cpu), cpu_stat(a.load_cpu)
        self.c0, self.b0 = cpu_ticks(cand_pids), cpu_ticks(self.back_pids)
        self.u0 = cpu_ticks(cand_pids, user_only=True)
        self.k0 = _children_ticks()

    def stop(self):
        a = self.env.args
        p1, l1 = cpu_stat(a.proxy_cpu), cpu_stat(a.load_cpu)
        cand = cpu_ticks(self.cand_pids) - self.c0
        ours_load = (cpu_ticks(self.back_pids) - self.b0) + (_children_ticks() - self.k0)
        res = {"cand_ticks": cand,
               "cand_user_ticks": cpu_ticks(self.cand_pids, user_only=True) - self.u0}
        for key, (b0, t0), (b1, t1), ours in (("other_proxy_cpu", self.p0, p1, cand),
                                              ("other_load_cpu", self.l0, l1, ours_load)):
            total = t1 - t0
            res[key] = max(0.0, ((b1 - b0) - ours) / total) if total > 0 else 0.0
        res["busy_proxy_cpu_ticks"] = p1[0] - self.p0[0]
        return res


def _children_ticks():
    """CPU ticks of our waited-for children (wrk) plus this runner itself."""
    t = os.times()
    return round((t.children_user + t.children_system + t.user + t.system) * CLK_TCK)


# --------------------------------------------------------------------------
# Networking helpers (127.0.0.1 only).

def free_port(taken):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port


def wait_port(port, p, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise BenchError(f"exited with status {p.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"not listening on 127.0.0.1:{port} after {timeout:.0f}s")


def http_get(port, path, timeout=5.0, headers=(("Host", "bench.local"),)):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=dict(headers))
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def check_works(port, large_body, headers=(("Host", "bench.local"),)):
    """One request per path; raise BenchError unless both answers are right."""
    for path, want in (("/small", SMALL_BODY), ("/1m", large_body)):
        try:
            status, body = http_get(port, path, headers=headers)
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"GET {path}: {type(e).__name__}: {e}")
        if status != 200:
            raise BenchError(f"GET {path}: status {status}")
        if body != want:
            raise BenchError(f"GET {path}: wrong body ({len(body)} bytes, want {len(want)})")


# --------------------------------------------------------------------------
# Candidates.

def fill(template_name, out_path, values):
    with open(os.path.join(BENCH_DIR, template_name)) as f:
        text = f.read()
    for k, v in values.items():
        if v == "":  # an empty step: its line goes, not just the word
            text = re.sub(rf"^[ \t]*@{k}@[ \t]*\n", "", text, flags=re.M)
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError(f"{template_name}: unfilled placeholders {sorted(set(left))}")
    with open(out_path, "w") as f:
        f.write(text)
    return out_path


def cpu_mask(cpu):
    """nginx worker_cpu_affinity mask: rightmost digit is CPU 0."""
    return "1" + "0" * cpu


class Env:
    def __init__(self, args, tmp, procs):
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.ports = set()
        self.admin_port = None  # portero's admin API, set by start_candidate
        self.nofile = 20000
        self.user_line = "user root;" if os.geteuid() == 0 else ""
        self.backend_port = None
        self.backend = None
        self.large_body = None
        self.cached_body = None


def start_backend(env):
    www = os.path.join(env.tmp, "www")
    os.makedirs(www, exist_ok=True)
    rnd = random.Random(13)
    env.large_body = bytes(rnd.getrandbits(8) for _ in range(4096)) * (LARGE_SIZE // 4096)
    with open(os.path.join(www, "1m"), "wb") as f:
        f.write(env.large_body)
    env.cached_body = cached_body()
    with open(os.path.join(www, "cached"), "wb") as f:
        f.write(env.cached_body)
    env.backend_port = free_port(env.ports)
    conf = fill("backend-nginx.conf.tmpl", os.path.join(env.tmp, "backend-nginx.conf"), {
        "USER_LINE": env.user_line, "CPU_MASK": cpu_mask(env.args.load_cpu),
        "NOFILE": env.nofile, "DIR": env.tmp, "PORT": env.backend_port})
    p = env.procs.start("backend", [env.args.nginx, "-p", env.tmp, "-e",
                                    os.path.join(env.tmp, "backend-error.log"),
                                    "-c", conf, "-g", "daemon off;"],
                        env.args.load_cpu, os.path.join(env.tmp, "backend.out"))
    env.backend = p
    wait_port(env.backend_port, p)
    check_works(env.backend_port, env.large_body)
    return p


def candidate_argv(env, name, port, steps):
    """STEPS: placeholder values of the protect scenario; the others are empty."""
    d = env.tmp
    steps = {**{k: "" for k in PROTECT_STEPS}, **steps}
    if name == "portero":
        env.admin_port = free_port(env.ports)
        conf = fill("portero.yaml.tmpl", os.path.join(d, "portero.yaml"), {
            "PORT": port, "BACKEND_PORT": env.backend_port, "ADMIN_PORT": env.admin_port,
            **steps})
        return [env.args.portero, "-c", conf]
    if name == "nginx":
        conf = fill("nginx.conf.tmpl", os.path.join(d, "nginx.conf"), {
            "USER_LINE": env.user_line, "CPU_MASK": cpu_mask(env.args.proxy_cpu),
            "NOFILE": env.nofile, "DIR": d, "PORT": port, "BACKEND_PORT": env.backend_port,
            **steps})
        return [env.args.nginx, "-p", d, "-e", os.path.join(d, "nginx-error.log"),
                "-c", conf, "-g", "daemon off;"]
    if name == "haproxy":
        conf = fill("haproxy.cfg.tmpl", os.path.join(d, "haproxy.cfg"), {
            "CPU": env.args.proxy_cpu, "PORT": port, "BACKEND_PORT": env.backend_port})
        return [env.args.haproxy, "-db", "-f", conf]
    raise ValueError(name)


def candidate_binary(env, name):
    return {"portero": env.args.portero, "nginx": env.args.nginx,
            "haproxy": env.args.haproxy}[name]


def start_candidate(env, name, steps=None, headers=(("Host", "bench.local"),)):
    """Start a fresh instance; return (Popen, port). Raises BenchError."""
    binary = candidate_binary(env, name)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BenchError(f"{binary} not found")
    port = free_port(env.ports)
    argv = candidate_argv(env, name, port, steps or {})
    p = env.procs.start(name, argv, env.args.proxy_cpu, os.path.join(env.tmp, f"{name}.out"))
    try:
        wait_port(port, p)
        check_works(port, env.large_body, headers)
    except BenchError as e:
        env.procs.stop(p)
        raise BenchError(f"{e}; output: {tail(os.path.join(env.tmp, name + '.out'))}")
    return p, port


def tail(path, n=300):
    try:
        with open(path, "rb") as f:
            data = f.read()[-n:].decode("utf-8", "replace").strip()
        return data.replace("\n", " | ") or "(none)"
    except OSError:
        return "(none)"


# --------------------------------------------------------------------------
# wrk.

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise BenchError(f"cannot parse latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    res = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise BenchError("wrk output has no request count: " + out[-300:])
    res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", out, re.M)
    res["p99_ms"] = _ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    res["errors"] = errors + res["non2xx"]
    return res


def run_wrk(env, port, path, conns, extra, duration):
    argv = [env.args.wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
            "--timeout", "5s", *extra, f"http://127.0.0.1:{port}{path}"]
    cpus = {env.args.load_cpu}

    def pin():
        os.sched_setaffinity(0, cpus)
        if NICE:
            os.nice(NICE)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=duration + 30, preexec_fn=pin)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish")
    if r.returncode != 0:
        raise BenchError(f"wrk failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    return parse_wrk(r.stdout)


def measure_wrk(env, p, port, scenario):
    _, path, conns, extra, _ = scenario
    return measured_wrk(env, p, port, path, conns, extra, env.args.duration)


def measured_wrk(env, p, port, path, conns, extra, duration):
    """One wrk run with the candidate's CPU time per request."""
    if env.backend.poll() is not None:
        raise BenchError("the backend nginx died")
    watch = CpuWatch(env, tree(p.pid))
    res = run_wrk(env, port, path, conns, extra, duration)
    res.update(watch.stop())
    if p.poll() is not None:
        raise BenchError(f"exited with status {p.returncode} during the run")
    res["cpu_s"] = res["cand_ticks"] / CLK_TCK
    res["cpu_us_per_req"] = (res["cpu_s"] * 1e6 / res["requests"]) if res["requests"] else None
    res["user_us_per_req"] = (res["cand_user_ticks"] / CLK_TCK * 1e6 / res["requests"]
                              if res["requests"] else None)
    res["valid"] = res["requests"] > 0 and res["errors"] <= MAX_ERROR_SHARE * res["requests"]
    return res


# --------------------------------------------------------------------------
# Protection steps.

def wrk_headers(headers):
    return [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]


def metrics_sum(port, families):
    """Sum over all samples of the named counter families on portero's /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode("utf-8", "replace")
    finally:
        c.close()
    if r.status != 200:
        raise BenchError(f"admin API /metrics: status {r.status}")
    total, seen = 0.0, set()
    for line in text.splitlines():
        m = re.fullmatch(r"([a-z_]+)(?:\{[^}]*\})?\s+(\S+)", line.strip())
        if m and m.group(1) in families:
            seen.add(m.group(1))
            total += float(m.group(2))
    missing = sorted(set(families) - seen)
    if missing:
        raise BenchError(f"admin API /metrics lacks {', '.join(missing)}")
    return int(total)


def refusals(env, name):
    """Requests refused so far by the candidate's protection steps (or flagged by the WAF).

    portero counts them per step on /metrics; nginx logs each refusal."""
    if name == "portero":
        try:
            return metrics_sum(env.admin_port, PORTERO_REFUSALS)
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"admin API /metrics: {type(e).__name__}: {e}")
    try:
        with open(os.path.join(env.tmp, "nginx-error.log"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return 0
    return sum(data.count(s) for s in NGINX_REFUSALS)


def run_protect_variant(env, variant, results, status):
    """A fresh candidate with the variant's steps: warm-up, one measured run, stop."""
    cand, key, label, conns, steps = variant
    what = f"{cand} {label}"
    try:
        p, port = start_candidate(env, cand, steps, PROTECT_HEADERS)
    except BenchError as e:
        status[key].append(f"failed to start / not working: {e}")
        log(f"{what}: failed to start / not working: {e}")
        return
    headers = wrk_headers(PROTECT_HEADERS)
    try:
        before = refusals(env, cand)
        run_wrk(env, port, "/small", conns, headers, env.args.warmup)
        r = measured_wrk(env, p, port, "/small", conns, headers, env.args.protect_duration)
        r["conns"] = conns
        r["refused"] = refusals(env, cand) - before
        # Every request must have gone through every step: no refusal, no error status.
        r["valid"] = r["valid"] and r["non2xx"] == 0 and r["refused"] == 0
        results[key].append(r)
        log(f"{what}: {r['rps']:.0f} req/s, p99 {fmt_ms(r['p99_ms'])}, "
            f"{fmt(r['cpu_us_per_req'], 2)} us CPU/req ({fmt(r['user_us_per_req'], 2)} user), "
            f"{r['requests']} reqs, {r['non2xx']} non-2xx, {r['refused']} refused, {r['errors']} errors"
            f"{'' if r['valid'] else ' (INVALID)'}; other load "
            f"{r['other_proxy_cpu']:.0%} on proxy CPU, {r['other_load_cpu']:.0%} on load CPU")
    except (BenchError, OSError, ValueError) as e:
        if not isinstance(e, BenchError):
            e = f"{type(e).__name__}: {e}"
        status[key].append(f"failed during the run: {e}")
        log(f"{what}: failed during the run: {e}; output: {tail(os.path.join(env.tmp, cand + '.out'))}")
    finally:
        env.procs.stop(p)
    time.sleep(0.3)


# --------------------------------------------------------------------------
# Idle connections.

REQ = b"GET /small HTTP/1.1\r\nHost: bench.local\r\n\r\n"


def read_response(s):
    """Read one response to GET /small; True if it is a complete 200."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        return False
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
    if not m:
        return False
    want = int(m.group(1))
    while len(body) < want:
        chunk = s.recv(4096)
        if not chunk:
            return False
        body += chunk
    return body == SMALL_BODY


def measure_idle(env, p, port, count):
    socks, failed = [], 0
    pids = tree(p.pid)
    time.sleep(0.5)
    before = rss_kib(pids)
    deadline = time.monotonic() + 120
    try:
        for _ in range(count):
            s = None
            try:
                s = socket.socket()
                s.settimeout(2)
                s.connect(("127.0.0.1", port))
                s.sendall(REQ)
                ok = read_response(s)
            except OSError:
                ok = False
            if ok:
                socks.append(s)
            else:
                if s is not None:
                    s.close()
                failed += 1
                if failed > 20 and failed > len(socks):
                    break
            if time.monotonic() > deadline:
                break
        time.sleep(1.0)
        if p.poll() is not None:
            raise BenchError(f"exited with status {p.returncode} while holding idle connections")
        after = rss_kib(tree(p.pid))
        # A connection the proxy has closed reads as EOF: count the open ones.
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        closed = len(sel.select(timeout=0))
        sel.close()
    finally:
        for s in socks:
            s.close()
    held = len(socks) - closed
    res = {"conns": held, "wanted": count, "rss_before_kib": before, "rss_after_kib": after,
           "kib_per_conn": ((after - before) / held) if held else None}
    res["valid"] = held >= 0.99 * count
    return res


# --------------------------------------------------------------------------
# TLS scenarios (issue 4): HTTP/2 over TLS 1.3, and a new TLS connection per
# request.  Every candidate gets the same ECDSA P-256 certificate and speaks
# TLS 1.3 with TLS_AES_128_GCM_SHA256 (the servers are restricted to it where
# they can be, and every client asks for it).

TLS_CIPHER = "TLS_AES_128_GCM_SHA256"
H2TLS_TITLE = (f"HTTP/2 over TLS 1.3 (GET /small, h2load -c 32 -m 10, {TLS_CIPHER})")
HANDSHAKE_TITLE = "A new TLS 1.3 connection per request (GET /small)"
# Target of issue 4: CPU per request <= 0.8 x the best of nginx, HAProxy, H2O.
H2TLS_TARGET = 0.8
S_TIME_CLIENTS = 4
RESUME_CLIENTS = 16
RESUME_REQUESTS = 3000
TLS_TEMPLATES = {"portero": "portero-tls.yaml.tmpl", "nginx": "nginx-tls.conf.tmpl",
                 "haproxy": "haproxy-tls.cfg.tmpl", "h2o": "h2o.conf.tmpl"}


def make_tls_cert(env):
    """A self-signed ECDSA P-256 certificate for bench.local (and a cert+key PEM for HAProxy)."""
    d = env.tmp
    env.cert = os.path.join(d, "bench-cert.pem")
    env.key = os.path.join(d, "bench-key.pem")
    r = subprocess.run([env.args.openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", env.key, "-out", env.cert,
                        "-subj", "/CN=bench.local", "-days", "30",
                        "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise BenchError(f"openssl req failed: {r.stderr.strip()[-300:]}")
    env.pem = os.path.join(d, "bench-haproxy.pem")
    with open(env.pem, "w") as out:
        for path in (env.cert, env.key):
            with open(path) as f:
                out.write(f.read())
    os.chmod(env.key, 0o644)  # nginx/H2O may read it after dropping privileges


def tls_candidate_argv(env, name, port):
    d = env.tmp
    vals = {"PORT": port, "BACKEND_PORT": env.backend_port, "CERT": env.cert, "KEY": env.key,
            "PEM": env.pem, "DIR": d}
    conf = os.path.join(d, TLS_TEMPLATES[name].replace(".tmpl", ""))
    if name == "portero":
        env.admin_port = free_port(env.ports)
        fill(TLS_TEMPLATES[name], conf, {**vals, "ADMIN_PORT": env.admin_port})
        return [env.args.portero, "-c", conf]
    if name == "nginx":
        fill(TLS_TEMPLATES[name], conf, {**vals, "USER_LINE": env.user_line,
                                         "CPU_MASK": cpu_mask(env.args.proxy_cpu),
                                         "NOFILE": env.nofile})
        return [env.args.nginx, "-p", d, "-e", os.path.join(d, "nginx-error.log"),
                "-c", conf, "-g", "daemon off;"]
    if name == "haproxy":
        fill(TLS_TEMPLATES[name], conf, {**vals, "CPU": env.args.proxy_cpu})
        return [env.args.haproxy, "-db", "-f", conf]
    if name == "h2o":
        fill(TLS_TEMPLATES[name], conf, {**vals, "USER_LINE": "user: root"
                                         if os.geteuid() == 0 else ""})
        return [env.args.h2o, "-c", conf]
    raise ValueError(name)


def tls_binary(env, name):
    return {"portero": env.args.portero, "nginx": env.args.nginx,
            "haproxy": env.args.haproxy, "h2o": env.args.h2o}[name]


def check_works_tls(env, port):
    """GET /small over HTTP/2 and TLS 1.3 with the benchmark's cipher; BenchError otherwise."""
    r = run_h2load(env, ["-n", "20", "-c", "1", "-m", "1"], port, "/small", timeout=30)
    if r["succeeded"] != 20 or r["status_2xx"] != 20:
        raise BenchError(f"h2load GET /small: {r['succeeded']}/20 succeeded, "
                         f"{r['status_2xx']} 2xx")
    if (r["protocol"], r["cipher"], r["alpn"]) != ("TLSv1.3", TLS_CIPHER, "h2"):
        raise BenchError(f"negotiated {r['protocol']} {r['cipher']} ALPN {r['alpn']}, "
                         f"want TLSv1.3 {TLS_CIPHER} h2")
    # the body, once, through Python's TLS client (HTTP/1.1)
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="bench.local") as s:
            s.settimeout(5)
            s.sendall(b"GET /small HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                data += chunk
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(SMALL_BODY):
        raise BenchError(f"GET /small over TLS: {data[:80]!r}")


def start_tls_candidate(env, name):
    binary = tls_binary(env, name)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BenchError(f"{binary} not found")
    port = free_port(env.ports)
    argv = tls_candidate_argv(env, name, port)
    p = env.procs.start(name, argv, env.args.proxy_cpu, os.path.join(env.tmp, f"{name}-tls.out"))
    try:
        wait_port(port, p)
        check_works_tls(env, port)
    except BenchError as e:
        env.procs.stop(p)
        raise BenchError(f"{e}; output: {tail(os.path.join(env.tmp, name + '-tls.out'))}")
    return p, port


_DUR = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _secs(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _DUR[m.group(2)] if m else None


def parse_h2load(out):
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise BenchError("h2load output has no request count: " + out[-300:])
    total, _, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    res = {"requests": ok, "done": done, "succeeded": ok, "wanted": total,
           "errors": failed + errored + timeout + (total - done)}
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["status_2xx"] = int(m.group(1)) if m else 0
    res["non2xx"] = sum(int(x) for x in m.groups()[1:]) if m else 0
    m = re.search(r"finished in ([\d.]+(?:us|ms|s)), ([\d.]+) req/s", out)
    res["seconds"] = _secs(m.group(1)) if m else None
    res["rps"] = float(m.group(2)) if m else 0.0
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    mean = _secs(m.group(3)) if m else None
    res["mean_ms"] = mean * 1000 if mean is not None else None
    m = re.search(r"TLS Protocol: (\S+)", out)
    res["protocol"] = m.group(1) if m else None
    m = re.search(r"Cipher: (\S+)", out)
    res["cipher"] = m.group(1) if m else None
    m = re.search(r"Application protocol: (\S+)", out)
    res["alpn"] = m.group(1) if m else None
    return res


def run_h2load(env, args, port, path, timeout):
    argv = [env.args.h2load, "-t", "1", f"--tls13-ciphers={TLS_CIPHER}", *args,
            f"https://127.0.0.1:{port}{path}"]
    cpus = {env.args.load_cpu}

    def pin():
        os.sched_setaffinity(0, cpus)
        if NICE:
            os.nice(NICE)
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout, preexec_fn=pin)
    except subprocess.TimeoutExpired:
        raise BenchError("h2load did not finish")
    return parse_h2load(r.stdout)


def measured(env, p, fn):
    """FN() with the candidate's CPU time per completed request added to its result."""
    if env.backend.poll() is not None:
        raise BenchError("the backend nginx died")
    watch = CpuWatch(env, tree(p.pid))
    res = fn()
    res.update(watch.stop())
    if p.poll() is not None:
        raise BenchError(f"exited with status {p.returncode} during the run")
    res["cpu_s"] = res["cand_ticks"] / CLK_TCK
    res["cpu_us_per_req"] = (res["cpu_s"] * 1e6 / res["requests"]) if res["requests"] else None
    res["user_us_per_req"] = (res["cand_user_ticks"] / CLK_TCK * 1e6 / res["requests"]
                              if res["requests"] else None)
    return res


def measure_h2tls(env, p, port):
    n = env.args.h2_requests
    r = measured(env, p, lambda: run_h2load(env, ["-n", str(n), "-c", "32", "-m", "10"], port,
                                            "/small", timeout=n / 500 + 60))
    r["valid"] = (r["requests"] > 0 and r["errors"] + r["non2xx"] <= MAX_ERROR_SHARE * n
                  and (r["protocol"], r["cipher"], r["alpn"]) == ("TLSv1.3", TLS_CIPHER, "h2"))
    return r


def run_s_time(env, port):
    """S_TIME_CLIENTS `openssl s_time -new` in parallel: full handshakes, one request each."""
    cpus = {env.args.load_cpu}

    def pin():
        os.sched_setaffinity(0, cpus)
        if NICE:
            os.nice(NICE)
    argv = [env.args.openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_3",
            "-ciphersuites", TLS_CIPHER, "-www", "/small",
            "-time", str(env.args.handshake_duration)]
    procs = [subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, preexec_fn=pin)
             for _ in range(S_TIME_CLIENTS)]
    total, per_conn, failed = 0, [], 0
    for sp in procs:
        try:
            out, _ = sp.communicate(timeout=env.args.handshake_duration + 60)
        except subprocess.TimeoutExpired:
            sp.kill()
            sp.communicate()
            raise BenchError("s_time did not finish")
        m = re.search(r"(\d+) connections in [\d.]+ real seconds, (\d+) bytes read per "
                      r"connection", out)
        if not m:
            failed += 1
            continue
        total += int(m.group(1))
        per_conn.append(int(m.group(2)))
    return {"requests": total, "rps": total / env.args.handshake_duration,
            "bytes_per_conn": min(per_conn) if per_conn else 0, "failed_clients": failed}


def measure_handshake(env, p, port):
    r = measured(env, p, lambda: run_s_time(env, port))
    # a response to GET /small is its status line, headers and the 13-byte body
    r["valid"] = r["requests"] > 0 and r["failed_clients"] == 0 and r["bytes_per_conn"] >= 40
    return r


def measure_resume(env, p, port):
    n = RESUME_REQUESTS if not env.args.quick else 2000
    r = measured(env, p, lambda: run_h2load(
        env, ["--h1", "-n", str(n), "-c", str(RESUME_CLIENTS), "-m", "1",
              "-H", "Connection: close"], port, "/small", timeout=n / 100 + 60))
    r["valid"] = (r["requests"] > 0 and r["errors"] + r["non2xx"] <= MAX_ERROR_SHARE * n
                  and (r["protocol"], r["cipher"]) == ("TLSv1.3", TLS_CIPHER))
    return r


def run_tls_round(env, name, results, status):
    scenarios = env.args.scenarios
    try:
        p, port = start_tls_candidate(env, name)
    except BenchError as e:
        status[name].append(f"failed to start / not working: {e}")
        log(f"{name} (TLS): failed to start / not working: {e}")
        return
    try:
        # Warm-up (not measured): caches, pools, allocator, session state.
        run_h2load(env, ["-n", str(max(2000, env.args.h2_requests // 20)), "-c", "32",
                         "-m", "10"], port, "/small", timeout=120)
        steps = []
        if "h2tls" in scenarios:
            steps.append(("h2tls", measure_h2tls))
        if "handshake" in scenarios:
            steps += [("handshake", measure_handshake), ("resume", measure_resume)]
        for key, fn in steps:
            r = fn(env, p, port)
            results[name][key].append(r)
            log(f"{name} {key}: {r['rps']:.0f} req/s, {fmt(r['cpu_us_per_req'], 2)} us CPU/req, "
                f"{r['requests']} reqs{'' if r['valid'] else ' (INVALID)'}; other load "
                f"{r['other_proxy_cpu']:.0%} on proxy CPU, {r['other_load_cpu']:.0%} on load CPU")
            time.sleep(0.3)
    except (BenchError, OSError, ValueError) as e:
        if not isinstance(e, BenchError):
            e = f"{type(e).__name__}: {e}"
        status[name].append(f"failed during the run: {e}")
        log(f"{name} (TLS): failed during the run: {e}; "
            f"output: {tail(os.path.join(env.tmp, name + '-tls.out'))}")
    finally:
        env.procs.stop(p)


def summarize_tls(results, candidates):
    out = {}
    for name in candidates:
        out[name] = {}
        for key, runs in results[name].items():
            out[name][key] = {
                "rps": median_of(runs, "rps"), "mean_ms": median_of(runs, "mean_ms"),
                "cpu_us_per_req": median_of(runs, "cpu_us_per_req"),
                "user_us_per_req": median_of(runs, "user_us_per_req"),
                "cpu_min": min_max(runs, "cpu_us_per_req", min),
                "cpu_max": min_max(runs, "cpu_us_per_req", max),
                "other_proxy_cpu": median_of(runs, "other_proxy_cpu"),
                "other_load_cpu": median_of(runs, "other_load_cpu"),
                "runs": len(runs), "valid_runs": sum(1 for r in runs if r["valid"])}
    return out


def _tls_row(name, s, cols, tstatus):
    if s["cpu_us_per_req"] is None:
        why = ("invalid (errors or wrong protocol)" if s["runs"] else
               (tstatus.get(name) or ["no result"])[-1].split(":")[0])
        return f"| {DISPLAY[name]} | {why} |" + " |" * (cols - 2)
    return None


def _tls_ratios(ts, key, peers):
    out = []
    mine = ts.get("portero", {}).get(key, {}).get("cpu_us_per_req")
    for peer in peers:
        theirs = ts[peer][key]["cpu_us_per_req"]
        out.append(f"portero/{DISPLAY[peer]} {fmt_ratio(ratio(mine, theirs))}")
    return out


def tls_report(args, ts, tstatus):
    L = []
    cands = list(ts)
    peers = [n for n in cands if n != "portero"]
    if "h2tls" in args.scenarios:
        L += [f"## {H2TLS_TITLE}", "",
              f"`h2load -t1 -n {args.h2_requests} -c 32 -m 10 --tls13-ciphers={TLS_CIPHER} "
              f"https://…/small` (HTTP/2 by ALPN) on the load CPU, a fresh proxy per round "
              f"after a warm-up; the proxy keeps HTTP/1.1 keep-alive to the same backend. "
              f"A run counts when ≤ 1% of requests failed and h2load reported TLSv1.3, "
              f"{TLS_CIPHER} and h2.", "",
              "| candidate | req/s | mean latency | CPU µs/req | CPU µs/req range | user µs/req "
              "| valid runs | other load (proxy/load CPU) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in cands:
            s = ts[name]["h2tls"]
            row = _tls_row(name, s, 8, tstatus)
            L.append(row or (
                f"| {DISPLAY[name]} | {fmt(s['rps'], 0)} | {fmt_ms(s['mean_ms'])} | "
                f"{fmt(s['cpu_us_per_req'], 2)} | {fmt(s['cpu_min'], 2)}–{fmt(s['cpu_max'], 2)} | "
                f"{fmt(s['user_us_per_req'], 2)} | {s['valid_runs']}/{s['runs']} | "
                f"{s['other_proxy_cpu']:.0%} / {s['other_load_cpu']:.0%} |"))
        L.append("")
        if "portero" in ts and peers:
            L.append("- CPU µs/req " + ", ".join(_tls_ratios(ts, "h2tls", peers)))
            vals = [ts[n]["h2tls"]["cpu_us_per_req"] for n in peers]
            vals = [v for v in vals if v is not None]
            best = min(vals) if vals else None
            limit = best * H2TLS_TARGET if best is not None else None
            mine = ts["portero"]["h2tls"]["cpu_us_per_req"]
            L.append(f"- Target (issue 4): portero CPU µs/req ≤ {H2TLS_TARGET}× the best of "
                     f"{', '.join(DISPLAY[n] for n in peers)}"
                     + (f" = {limit:.2f} µs" if limit is not None else "")
                     + f" → {verdict(mine, limit)}"
                     + (f" (portero {mine:.2f} µs)" if mine is not None else ""))
        L.append("")
    if "handshake" in args.scenarios:
        L += [f"## {HANDSHAKE_TITLE}", "",
              f"*full*: {S_TIME_CLIENTS} × `openssl s_time -new -tls1_3 -ciphersuites "
              f"{TLS_CIPHER} -www /small` for {args.handshake_duration} s (HTTP/1.0, a full "
              f"handshake per request, ECDHE X25519 + ECDSA P-256 signature). *resumed*: "
              f"`h2load --h1 -c {RESUME_CLIENTS} -m 1 -H 'Connection: close'` (HTTP/1.1, every "
              f"new connection resumes the previous session: PSK + ECDHE). CPU µs per "
              f"connection, each carrying one request.", "",
              "| candidate | full conn/s | CPU µs per full | range | resumed conn/s "
              "| CPU µs per resumed | range | valid runs (full/resumed) | other load (proxy/load CPU) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in cands:
            f, r = ts[name]["handshake"], ts[name]["resume"]
            if f["cpu_us_per_req"] is None and r["cpu_us_per_req"] is None:
                L.append(_tls_row(name, f, 9, tstatus))
                continue
            L.append(f"| {DISPLAY[name]} | {fmt(f['rps'], 0)} | {fmt(f['cpu_us_per_req'], 1)} | "
                     f"{fmt(f['cpu_min'], 1)}–{fmt(f['cpu_max'], 1)} | {fmt(r['rps'], 0)} | "
                     f"{fmt(r['cpu_us_per_req'], 1)} | {fmt(r['cpu_min'], 1)}–{fmt(r['cpu_max'], 1)} | "
                     f"{f['valid_runs']}/{f['runs']}, {r['valid_runs']}/{r['runs']} | "
                     f"{(f['other_proxy_cpu'] or 0):.0%} / {(f['other_load_cpu'] or 0):.0%} |")
        L.append("")
        if "portero" in ts and peers:
            L.append("- full handshake CPU " + ", ".join(_tls_ratios(ts, "handshake", peers)))
            L.append("- resumed handshake CPU " + ", ".join(_tls_ratios(ts, "resume", peers)))
        L.append("")
    return L


# --------------------------------------------------------------------------
# Cache scenario (issue 5): hits of one 1 KiB object, answered by the proxy's
# cache without touching the backend. portero (a cache zone), nginx
# (proxy_cache), HAProxy (its `cache` section) and Varnish; CPU µs per hit.
# Plus the eviction policy's hit ratio against LRU on a scan-heavy trace
# (build/bench/cache_trace, the simulator of src/cache/cache_sim.c).

CACHE_CANDIDATES = ("portero", "nginx", "haproxy", "varnish")
DISPLAY["varnish"] = "Varnish"
CACHE_PATH = "/cached"
CACHE_SIZE = 1024
CACHE_CONNS = 50
CACHE_TITLE = (f"Cache hits (GET {CACHE_PATH}, 1 KiB, Cache-Control: max-age=3600, keep-alive, "
               f"wrk -t1 -c{CACHE_CONNS})")
CACHE_TEMPLATES = {"portero": "portero-cache.yaml.tmpl", "nginx": "nginx-cache.conf.tmpl",
                   "haproxy": "haproxy-cache.cfg.tmpl", "varnish": "varnish.vcl.tmpl"}
# Target of issue 5: CPU per hit <= 0.8 x HAProxy's.
CACHE_TARGET = 0.8
# A run counts only if (nearly) every request was a hit: the backend saw at
# most this share of wrk's requests.
CACHE_MAX_BACKEND_SHARE = 0.01
SIM_TITLE = "Eviction policy: S3-FIFO vs LRU hit ratio on a scan-heavy trace"


def cached_body():
    """The 1 KiB object the backend serves at /cached (text, deterministic)."""
    line = b"portero cache benchmark object, 1 KiB of text to be served from a cache.\n"
    return (line * (CACHE_SIZE // len(line) + 1))[:CACHE_SIZE]


def backend_cached_requests(env):
    """Requests for /cached the backend has logged so far."""
    try:
        with open(os.path.join(env.tmp, "backend-cached.log"), "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def cache_candidate_argv(env, name, port):
    d = env.tmp
    conf = os.path.join(d, CACHE_TEMPLATES[name].replace(".tmpl", ""))
    vals = {"PORT": port, "BACKEND_PORT": env.backend_port}
    if name == "portero":
        env.admin_port = free_port(env.ports)
        fill(CACHE_TEMPLATES[name], conf, {**vals, "ADMIN_PORT": env.admin_port})
        return [env.args.portero, "-c", conf]
    if name == "nginx":
        shutil.rmtree(os.path.join(d, "nginx-cache"), ignore_errors=True)
        fill(CACHE_TEMPLATES[name], conf, {**vals, "USER_LINE": env.user_line,
                                           "CPU_MASK": cpu_mask(env.args.proxy_cpu),
                                           "NOFILE": env.nofile, "DIR": d})
        return [env.args.nginx, "-p", d, "-e", os.path.join(d, "nginx-error.log"),
                "-c", conf, "-g", "daemon off;"]
    if name == "haproxy":
        fill(CACHE_TEMPLATES[name], conf, {**vals, "CPU": env.args.proxy_cpu})
        return [env.args.haproxy, "-db", "-f", conf]
    if name == "varnish":
        fill(CACHE_TEMPLATES[name], conf, vals)
        workdir = os.path.join(d, "varnish")
        shutil.rmtree(workdir, ignore_errors=True)
        return [env.args.varnishd, "-F", "-a", f"127.0.0.1:{port}", "-f", conf, "-n", workdir,
                "-s", "malloc,64m", "-p", "thread_pools=1"]
    raise ValueError(name)


def cache_binary(env, name):
    return {"portero": env.args.portero, "nginx": env.args.nginx, "haproxy": env.args.haproxy,
            "varnish": env.args.varnishd}[name]


def check_cache_works(env, port):
    """GET /cached three times: 200 with the object each time, the backend asked at most once."""
    before = backend_cached_requests(env)
    for i in range(3):
        try:
            status, body = http_get(port, CACHE_PATH)
        except (OSError, http.client.HTTPException) as e:
            raise BenchError(f"GET {CACHE_PATH}: {type(e).__name__}: {e}")
        if status != 200 or body != env.cached_body:
            raise BenchError(f"GET {CACHE_PATH} #{i + 1}: status {status}, {len(body)} bytes")
    time.sleep(0.2)  # the backend writes its log line after the response
    asked = backend_cached_requests(env) - before
    if asked > 1:
        raise BenchError(f"not caching: the backend answered {asked} of 3 requests")


def start_cache_candidate(env, name):
    binary = cache_binary(env, name)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BenchError(f"{binary} not found")
    port = free_port(env.ports)
    argv = cache_candidate_argv(env, name, port)
    out = os.path.join(env.tmp, f"{name}-cache.out")
    p = env.procs.start(name, argv, env.args.proxy_cpu, out)
    try:
        wait_port(port, p, timeout=30)  # Varnish compiles its VCL first
        check_cache_works(env, port)
    except BenchError as e:
        env.procs.stop(p)
        raise BenchError(f"{e}; output: {tail(out)}")
    return p, port


def run_cache_round(env, name, results, status):
    try:
        p, port = start_cache_candidate(env, name)
    except BenchError as e:
        status[name].append(f"failed to start / not working: {e}")
        log(f"{name} (cache): failed to start / not working: {e}")
        return
    try:
        run_wrk(env, port, CACHE_PATH, CACHE_CONNS, [], env.args.warmup)
        before = backend_cached_requests(env)
        r = measured_wrk(env, p, port, CACHE_PATH, CACHE_CONNS, [], env.args.cache_duration)
        time.sleep(0.2)
        r["backend_requests"] = backend_cached_requests(env) - before
        r["valid"] = (r["valid"] and r["non2xx"] == 0
                      and r["backend_requests"] <= CACHE_MAX_BACKEND_SHARE * r["requests"])
        results[name].append(r)
        log(f"{name} cache: {r['rps']:.0f} req/s, p99 {fmt_ms(r['p99_ms'])}, "
            f"{fmt(r['cpu_us_per_req'], 2)} us CPU/hit ({fmt(r['user_us_per_req'], 2)} user), "
            f"{r['requests']} reqs, {r['backend_requests']} reached the backend, "
            f"{r['errors']} errors{'' if r['valid'] else ' (INVALID)'}; other load "
            f"{r['other_proxy_cpu']:.0%} on proxy CPU, {r['other_load_cpu']:.0%} on load CPU")
    except (BenchError, OSError, ValueError) as e:
        if not isinstance(e, BenchError):
            e = f"{type(e).__name__}: {e}"
        status[name].append(f"failed during the run: {e}")
        log(f"{name} (cache): failed during the run: {e}; "
            f"output: {tail(os.path.join(env.tmp, name + '-cache.out'))}")
    finally:
        env.procs.stop(p)
    time.sleep(0.3)


def summarize_cache(results, candidates):
    out = {}
    for name in candidates:
        runs = results[name]
        out[name] = {
            "rps": median_of(runs, "rps"), "p99_ms": median_of(runs, "p99_ms"),
            "cpu_us_per_req": median_of(runs, "cpu_us_per_req"),
            "user_us_per_req": median_of(runs, "user_us_per_req"),
            "cpu_min": min_max(runs, "cpu_us_per_req", min),
            "cpu_max": min_max(runs, "cpu_us_per_req", max),
            "other_proxy_cpu": median_of(runs, "other_proxy_cpu"),
            "other_load_cpu": median_of(runs, "other_load_cpu"),
            "backend_requests": sum(r.get("backend_requests", 0) for r in runs),
            "runs": len(runs), "valid_runs": sum(1 for r in runs if r["valid"])}
    return out


def cache_report(args, cs, cstatus):
    L = [f"## {CACHE_TITLE}", ""]
    L.append(f"A fresh proxy per round, its cache filled by one request, 1 s of warm-up, then "
             f"`wrk -t1 -c{CACHE_CONNS} -d{args.cache_duration}s` on GET {CACHE_PATH} (a 1 KiB "
             f"static file the backend serves with Cache-Control: max-age=3600). portero: a "
             f"cache zone (memory tier); nginx: `proxy_cache` (keys in shared memory, bodies in "
             f"files read through the page cache); HAProxy: a `cache` section with "
             f"`http-request cache-use` / `http-response cache-store`; Varnish: the built-in VCL, "
             f"`-s malloc,64m -p thread_pools=1`. A run counts when every answer was 2xx and at "
             f"most {CACHE_MAX_BACKEND_SHARE:.0%} of the requests reached the backend "
             f"(its log of {CACHE_PATH}).")
    L += ["", "| candidate | req/s | p99 latency | CPU µs/hit | CPU µs/hit range | user µs/hit "
              "| backend requests | valid runs | other load (proxy/load CPU) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in cs.items():
        if s["cpu_us_per_req"] is None:
            why = ("invalid (errors or misses)" if s["runs"] else
                   (cstatus[name][-1].split(":")[0] if cstatus[name] else "no result"))
            L.append(f"| {DISPLAY[name]} | {why} | | | | | {s['backend_requests']} | "
                     f"{s['valid_runs']}/{s['runs']} | |")
            continue
        L.append(f"| {DISPLAY[name]} | {fmt(s['rps'], 0)} | {fmt_ms(s['p99_ms'])} | "
                 f"{fmt(s['cpu_us_per_req'], 2)} | {fmt(s['cpu_min'], 2)}–{fmt(s['cpu_max'], 2)} | "
                 f"{fmt(s['user_us_per_req'], 2)} | {s['backend_requests']} | "
                 f"{s['valid_runs']}/{s['runs']} | "
                 f"{s['other_proxy_cpu']:.0%} / {s['other_load_cpu']:.0%} |")
    L.append("")
    mine = cs.get("portero", {}).get("cpu_us_per_req")
    if "portero" in cs:
        peers = [n for n in cs if n != "portero"]
        if peers:
            L.append("- CPU µs/hit " + ", ".join(
                f"portero/{DISPLAY[n]} {fmt_ratio(ratio(mine, cs[n]['cpu_us_per_req']))}"
                for n in peers))
        theirs = cs.get("haproxy", {}).get("cpu_us_per_req")
        limit = theirs * CACHE_TARGET if theirs is not None else None
        L.append(f"- Target (issue 5): portero CPU µs/hit ≤ {CACHE_TARGET}× HAProxy's"
                 + (f" = {limit:.2f} µs" if limit is not None else "")
                 + f" → {verdict(mine, limit)}"
                 + (f" (portero {mine:.2f} µs)" if mine is not None else ""))
    L.append("")
    return L


def cache_trace_binary(args):
    for path in (args.cache_trace, os.path.join(ROOT, "build", "bench", "cache_trace")):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_cache_trace(args):
    """(list of {trace, cache_objects, s3fifo, lru}, None), or (None, why there is none)."""
    binary = cache_trace_binary(args)
    if binary is None:
        return None, "build/bench/cache_trace not found (build it: `make build/bench/cache_trace`)"
    log(f"eviction simulator: {binary} --json")
    try:
        r = subprocess.run([binary, "--json"], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, f"{binary} did not finish within 300 s"
    if r.returncode != 0:
        return None, f"{binary} failed ({r.returncode}): {r.stderr.strip()[-300:]}"
    try:
        cases = json.loads(r.stdout)["cases"]
        for c in cases:
            c["trace"], int(c["cache_objects"]), float(c["s3fifo"]), float(c["lru"])
    except (ValueError, KeyError, TypeError) as e:
        return None, f"{binary} --json: unexpected output ({e}): {r.stdout[:200]!r}"
    return cases, None


def sim_report(cases, problem):
    L = [f"## {SIM_TITLE}", ""]
    if problem:
        L += [f"Not run: {problem}.", ""]
        return L
    L += ["`build/bench/cache_trace` replays synthetic traces through the store's own "
          "`cache_evict` (S3-FIFO, and LRU for comparison), one object = one slot: a Zipf working "
          "set of 100,000 ids, with bursts of one-hit wonders (a crawler, a backup job) in the "
          "\"+scans\" traces, 2,000,000 requests each; the cache holds 1%, 5% or 10% of the "
          "working set. Deterministic (fixed seeds), so one run.", "",
          "| trace | cache (objects) | S3-FIFO hit ratio | LRU hit ratio | S3-FIFO / LRU |",
          "|---|---:|---:|---:|---:|"]
    for c in cases:
        L.append(f"| {c['trace']} | {int(c['cache_objects']):,} | {float(c['s3fifo']):.4f} | "
                 f"{float(c['lru']):.4f} | {fmt_ratio(ratio(float(c['s3fifo']), float(c['lru'])))} |")
    scans = [c for c in cases if "+" in c["trace"]]  # "zipf0.9+scans", not "(no scans)"
    if scans:
        wins = sum(1 for c in scans if float(c["s3fifo"]) > float(c["lru"]))
        L += ["", f"- On the scan-heavy traces S3-FIFO's hit ratio is above LRU's in {wins} of "
                  f"{len(scans)} cases (S3-FIFO / LRU from "
                  f"{min(float(c['s3fifo']) / float(c['lru']) for c in scans if float(c['lru'])):.2f}× "
                  f"to {max(float(c['s3fifo']) / float(c['lru']) for c in scans if float(c['lru'])):.2f}×)."]
    L.append("")
    return L


# --------------------------------------------------------------------------
# Orchestration.

def run_candidate_round(env, name, results, status):
    scenarios = env.args.scenarios
    try:
        p, port = start_candidate(env, name)
    except BenchError as e:
        status[name].append(f"failed to start / not working: {e}")
        log(f"{name}: failed to start / not working: {e}")
        return
    try:
        if "idle" in scenarios:
            r = measure_idle(env, p, port, env.args.idle_conns)
            results[name]["idle"].append(r)
            kib = r["kib_per_conn"]
            log(f"{name} idle: {r['conns']}/{r['wanted']} conns, "
                f"RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, "
                f"{kib:.3f} KiB/conn" if kib is not None else f"{name} idle: no connection held")
            time.sleep(0.5)
        wrk_list = [s for s in WRK_SCENARIOS if s[0] in scenarios]
        if wrk_list:
            # Warm-up (not measured): caches, pools, allocator.
            run_wrk(env, port, "/small", 50, [], env.args.warmup)
        for sc in wrk_list:
            r = measure_wrk(env, p, port, sc)
            results[name][sc[0]].append(r)
            log(f"{name} {sc[0]}: {r['rps']:.0f} req/s, p99 {fmt_ms(r['p99_ms'])}, "
                f"{fmt(r['cpu_us_per_req'], 2)} us CPU/req, {r['requests']} reqs, "
                f"{r['errors']} errors{'' if r['valid'] else ' (INVALID)'}; other load "
                f"{r['other_proxy_cpu']:.0%} on proxy CPU, {r['other_load_cpu']:.0%} on load CPU")
            time.sleep(0.3)
    except (BenchError, OSError, ValueError) as e:
        if not isinstance(e, BenchError):
            e = f"{type(e).__name__}: {e}"
        status[name].append(f"failed during the run: {e}")
        log(f"{name}: failed during the run: {e}; output: {tail(os.path.join(env.tmp, name + '.out'))}")
    finally:
        env.procs.stop(p)


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get("valid") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def min_max(runs, key, fn):
    vals = [r[key] for r in runs if r.get("valid") and r.get(key) is not None]
    return fn(vals) if vals else None


# --------------------------------------------------------------------------
# Report.

def fmt(v, nd=1):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def fmt_ms(v):
    if v is None:
        return "—"
    return f"{v:.2f} ms" if v >= 0.1 else f"{v * 1000:.0f} µs"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}×"


def summarize(results, candidates, scenarios):
    summary = {}
    for name in candidates:
        summary[name] = {}
        for sc in WRK_SCENARIOS:
            if sc[0] not in scenarios:
                continue
            runs = results[name][sc[0]]
            summary[name][sc[0]] = {
                "rps": median_of(runs, "rps"), "p99_ms": median_of(runs, "p99_ms"),
                "cpu_us_per_req": median_of(runs, "cpu_us_per_req"),
                "cpu_min": min_max(runs, "cpu_us_per_req", min),
                "cpu_max": min_max(runs, "cpu_us_per_req", max),
                "other_proxy_cpu": median_of(runs, "other_proxy_cpu"),
                "other_load_cpu": median_of(runs, "other_load_cpu"),
                "runs": len(runs), "valid_runs": sum(1 for r in runs if r["valid"]),
                "errors": sum(r["errors"] for r in runs)}
        if "idle" in scenarios:
            runs = results[name]["idle"]
            summary[name]["idle"] = {
                "kib_per_conn": median_of(runs, "kib_per_conn"),
                "conns": median_of(runs, "conns"),
                "rss_before_kib": median_of(runs, "rss_before_kib"),
                "runs": len(runs), "valid_runs": sum(1 for r in runs if r["valid"])}
    return summary


def protect_variants(args):
    if "protect" not in args.scenarios:
        return []
    return [v for v in PROTECT_VARIANTS if v[0] in args.candidates]


def summarize_protect(results, variants):
    """Medians per variant, and what each costs over the same proxy without steps
    (the first variant of that proxy) and over the variant before it."""
    out, base, prev = {}, {}, {}
    for cand, key, label, conns, _ in variants:
        runs = results[key]
        cpu = median_of(runs, "cpu_us_per_req")
        s = {"candidate": cand, "key": key, "label": label, "conns": conns,
             "rps": median_of(runs, "rps"), "p99_ms": median_of(runs, "p99_ms"),
             "cpu_us_per_req": cpu, "user_us_per_req": median_of(runs, "user_us_per_req"),
             "cpu_min": min_max(runs, "cpu_us_per_req", min),
             "cpu_max": min_max(runs, "cpu_us_per_req", max),
             "other_proxy_cpu": median_of(runs, "other_proxy_cpu"),
             "other_load_cpu": median_of(runs, "other_load_cpu"),
             "runs": len(runs), "valid_runs": sum(1 for r in runs if r["valid"]),
             "non2xx": sum(r["non2xx"] for r in runs), "refused": sum(r["refused"] for r in runs),
             "errors": sum(r["errors"] for r in runs)}
        b = base.setdefault(cand, s)
        before = prev.get(cand)
        s["base_key"] = b["key"]
        s["added_us"] = difference(cpu, b["cpu_us_per_req"])
        s["added_user_us"] = difference(s["user_us_per_req"], b["user_us_per_req"])
        s["ratio"] = ratio(cpu, b["cpu_us_per_req"])
        s["prev_key"] = before["key"] if before else None
        s["step_us"] = difference(cpu, before["cpu_us_per_req"]) if before else None
        prev[cand] = s
        out[key] = s
    return out


def difference(a, b):
    return None if a is None or b is None else a - b


def ranges_overlap(a, b):
    if None in (a["cpu_min"], a["cpu_max"], b["cpu_min"], b["cpu_max"]):
        return False
    return a["cpu_min"] <= b["cpu_max"] and b["cpu_min"] <= a["cpu_max"]


def fmt_signed(v, nd=2):
    return "—" if v is None else f"{v:+,.{nd}f}"


def protect_report(args, ps, pstatus):
    L = [f"## {PROTECT_TITLE}", ""]
    L.append(f"A fresh proxy per row and round, {args.protect_duration}s per run, wrk sending a "
             f"browser's headers (Host, User-Agent, Accept, Accept-Language, Accept-Encoding). "
             f"*added* = CPU µs/req minus that of the same proxy with no steps, *×* = the ratio; "
             f"both from the medians of the rounds. *user* is the part spent in user space "
             f"(utime), where the steps run: sampled at each clock tick, so ±10% or so. "
             f"A run counts only if no request was refused "
             f"or flagged by a step (portero's /metrics counters, nginx's error log) and none "
             f"answered other than 2xx.")
    L.append("")
    L.append("| proxy | steps | wrk -c | req/s | p99 latency | CPU µs/req | CPU µs/req range "
             "| added µs/req | × no steps | user µs/req (added) | valid runs | refused / non-2xx "
             "| other load (proxy/load CPU) |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in ps.values():
        head = f"| {DISPLAY[s['candidate']]} | {s['label']} | {s['conns']} |"
        tail_ = f"{s['valid_runs']}/{s['runs']} | {s['refused']} / {s['non2xx']} |"
        if s["cpu_us_per_req"] is None:
            why = ("invalid (refusals or errors)" if s["runs"] else
                   (pstatus[s["key"]][-1].split(":")[0] if pstatus[s["key"]] else "no result"))
            L.append(f"{head} {why} | | | | | | | {tail_} |")
            continue
        L.append(f"{head} {fmt(s['rps'], 0)} | {fmt_ms(s['p99_ms'])} | "
                 f"{fmt(s['cpu_us_per_req'], 2)} | {fmt(s['cpu_min'], 2)}–{fmt(s['cpu_max'], 2)} | "
                 f"{fmt_signed(s['added_us'])} | {fmt_ratio(s['ratio'])} | "
                 f"{fmt(s['user_us_per_req'], 2)} ({fmt_signed(s['added_user_us'])}) | {tail_} "
                 f"{s['other_proxy_cpu']:.0%} / {s['other_load_cpu']:.0%} |")
    L.append("")
    for s in ps.values():
        if s["prev_key"] is None:
            continue
        prev = ps[s["prev_key"]]
        text = (f"- {DISPLAY[s['candidate']]}, {s['label']}: {fmt_signed(s['added_us'])} µs/req "
                f"({fmt_ratio(s['ratio'])}, user {fmt_signed(s['added_user_us'])} µs) over no steps")
        if s["prev_key"] != s["base_key"]:
            text += f"; {fmt_signed(s['step_us'])} µs/req over {prev['label']}"
        if ranges_overlap(s, ps[s["base_key"]]):
            text += " — within the run-to-run spread (the CPU µs/req ranges overlap)"
        L.append(text)
    L.append("")
    return L


def verdict(value, limit):
    if value is None or limit is None:
        return "pending (no portero result)" if value is None else "— (no peer result)"
    return "**met**" if value <= limit else "**not met**"


def row_status(name, status, s):
    """Text for a candidate without a valid result in a scenario."""
    if s and s["runs"] and not s["valid_runs"]:
        return "invalid (errors or connections lost)"
    if status[name]:
        return status[name][-1].split(":")[0]
    return "no result"


def report(args, summary, status, started, elapsed, psummary=None, pstatus=None,
           tsummary=None, tstatus=None, csummary=None, cstatus=None, sim=(None, None)):
    cands = args.candidates
    psummary, pstatus = psummary or {}, pstatus or {}
    tsummary, tstatus = tsummary or {}, tstatus or {}
    csummary, cstatus = csummary or {}, cstatus or {}
    L = []
    L.append(f"# portero benchmark — {started:%Y-%m-%d %H:%M}")
    L.append("")
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    L.append(f"Host: {platform.node()}, {cpu_model or platform.machine()}, "
             f"{os.cpu_count()} CPUs, Linux {platform.release()}. "
             f"Proxy on CPU {args.proxy_cpu} (one worker), backend nginx and wrk on CPU {args.load_cpu}. "
             f"{args.rounds} round(s) of " + ", ".join(run_lengths(args, psummary))
             + ", candidates alternated in shuffled order, median reported"
             + (f"; {args.idle_conns:,} idle connections" if "idle" in args.scenarios else "")
             + f". Run took {elapsed / 60:.1f} min."
             + (f" Benchmark processes ran at nice {NICE}." if NICE else ""))
    L.append("")
    L.append(f"Versions: {versions(args)}.")
    L.append("")
    targets = []
    for sc in WRK_SCENARIOS:
        key = sc[0]
        if key not in args.scenarios:
            continue
        L.append(f"## {sc[4]}")
        L.append("")
        L.append("| candidate | req/s | p99 latency | CPU µs/req | CPU µs/req range "
                 "| valid runs | other load (proxy/load CPU) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for name in cands:
            s = summary[name][key]
            if s["cpu_us_per_req"] is None:
                L.append(f"| {DISPLAY[name]} | {row_status(name, status, s)} | | | | "
                         f"{s['valid_runs']}/{s['runs']} | |")
            else:
                L.append(f"| {DISPLAY[name]} | {fmt(s['rps'], 0)} | {fmt_ms(s['p99_ms'])} | "
                         f"{fmt(s['cpu_us_per_req'], 2)} | {fmt(s['cpu_min'], 2)}–{fmt(s['cpu_max'], 2)} | "
                         f"{s['valid_runs']}/{s['runs']} | "
                         f"{s['other_proxy_cpu']:.0%} / {s['other_load_cpu']:.0%} |")
        L.append("")
        L.extend(ratio_lines(summary, cands, key, [("CPU µs/req", "cpu_us_per_req"),
                                                   ("req/s", "rps"), ("p99", "p99_ms")]))
        peers = [summary[n][key]["cpu_us_per_req"] for n in ("nginx", "haproxy") if n in cands]
        peers = [v for v in peers if v is not None]
        best = min(peers) if peers else None
        limit = best * CPU_TARGETS[key] if best is not None else None
        mine = summary["portero"][key]["cpu_us_per_req"] if "portero" in cands else None
        text = (f"Target: portero CPU µs/req ≤ {CPU_TARGETS[key]:.1f}× the better of nginx and "
                f"HAProxy" + (f" = {limit:.2f} µs" if limit is not None else "")
                + f" → {verdict(mine, limit)}"
                + (f" (portero {mine:.2f} µs)" if mine is not None else ""))
        L.append(text)
        L.append("")
        targets.append((sc[4].split(" (")[0], f"CPU/req ≤ {CPU_TARGETS[key]:.1f}× best peer",
                        verdict(mine, limit)))
    if "idle" in args.scenarios:
        L.append(f"## {IDLE_TITLE}")
        L.append("")
        L.append("| candidate | KiB per idle conn | conns held | RSS before (KiB) | valid runs |")
        L.append("|---|---:|---:|---:|---:|")
        for name in cands:
            s = summary[name]["idle"]
            if s["kib_per_conn"] is None:
                L.append(f"| {DISPLAY[name]} | {row_status(name, status, s)} | | | "
                         f"{s['valid_runs']}/{s['runs']} |")
            else:
                L.append(f"| {DISPLAY[name]} | {fmt(s['kib_per_conn'], 3)} | {fmt(s['conns'], 0)} | "
                         f"{fmt(s['rss_before_kib'], 0)} | {s['valid_runs']}/{s['runs']} |")
        L.append("")
        L.extend(ratio_lines(summary, cands, "idle", [("KiB/conn", "kib_per_conn")]))
        mine = summary["portero"]["idle"]["kib_per_conn"] if "portero" in cands else None
        L.append(f"Target: portero ≤ {IDLE_TARGET_KIB} KiB per idle connection → "
                 f"{verdict(mine, IDLE_TARGET_KIB) if mine is not None else 'pending (no portero result)'}"
                 + (f" (portero {mine:.3f} KiB)" if mine is not None else ""))
        L.append("")
        targets.append(("Idle connections", f"≤ {IDLE_TARGET_KIB} KiB/conn",
                        verdict(mine, IDLE_TARGET_KIB) if mine is not None
                        else "pending (no portero result)"))
    if psummary:
        L.extend(protect_report(args, psummary, pstatus))
    if tsummary:
        L.extend(tls_report(args, tsummary, tstatus))
    if csummary:
        L.extend(cache_report(args, csummary, cstatus))
        L.extend(sim_report(*sim))
    if targets:
        L.append("## Targets (issue 2, item 13)")
        L.append("")
        L.append("| scenario | target | portero |")
        L.append("|---|---|---|")
        for t in targets:
            L.append(f"| {t[0]} | {t[1]} | {t[2]} |")
        L.append("")
    notes = [f"{DISPLAY[n]}: {msg}" for n in cands for msg in dict.fromkeys(status[n])]
    notes += [f"{DISPLAY[s['candidate']]} with {s['label']}: {msg}"
              for s in psummary.values() for msg in dict.fromkeys(pstatus[s['key']])]
    notes += [f"{DISPLAY[n]} (TLS): {msg}" for n in tsummary
              for msg in dict.fromkeys(tstatus.get(n, []))]
    notes += [f"{DISPLAY[n]} (cache): {msg}" for n in csummary
              for msg in dict.fromkeys(cstatus.get(n, []))]
    noisy = sorted({sc[0] for sc in WRK_SCENARIOS for n in cands if sc[0] in args.scenarios
                    and max(summary[n][sc[0]]["other_proxy_cpu"] or 0,
                            summary[n][sc[0]]["other_load_cpu"] or 0) > NOISY_SHARE})
    if any(max(s["other_proxy_cpu"] or 0, s["other_load_cpu"] or 0) > NOISY_SHARE
           for s in psummary.values()):
        noisy.append("protect")
    for key in ("h2tls", "handshake"):
        if any(max(t[key]["other_proxy_cpu"] or 0, t[key]["other_load_cpu"] or 0) > NOISY_SHARE
               for t in tsummary.values()):
            noisy.append(key)
    if any(max(c["other_proxy_cpu"] or 0, c["other_load_cpu"] or 0) > NOISY_SHARE
           for c in csummary.values()):
        noisy.append("cache")
    if args.busy_before > NOISY_SHARE:
        notes.append(f"before the run, other processes kept the benchmark CPUs "
                     f"{args.busy_before:.0%} busy")
    if noisy:
        notes.append(f"other processes took more than {NOISY_SHARE:.0%} of a benchmark CPU "
                     f"during scenario(s) {', '.join(noisy)} (column \"other load\"): those "
                     f"numbers are noisy; re-run on a quiet machine (or with BENCH_NICE=-10)")
    if notes:
        L.append("## Problems and noise")
        L.append("")
        for n in notes:
            L.append(f"- {n}")
        L.append("")
    return "\n".join(L)


def run_lengths(args, psummary):
    out = []
    if any(sc[0] in args.scenarios for sc in WRK_SCENARIOS):
        out.append(f"{args.duration}s per wrk scenario")
    if psummary:
        out.append(f"{args.protect_duration}s per protect run")
    if "h2tls" in args.scenarios:
        out.append(f"{args.h2_requests:,} h2load requests per h2tls run")
    if "handshake" in args.scenarios:
        out.append(f"{args.handshake_duration}s of s_time per handshake run")
    if "cache" in args.scenarios:
        out.append(f"{args.cache_duration}s per cache run")
    return out or ["idle connections only"]


def ratio_lines(summary, cands, key, metrics):
    if "portero" not in cands:
        return []
    out = []
    for peer in ("nginx", "haproxy"):
        if peer not in cands:
            continue
        parts = []
        for label, field in metrics:
            r = ratio(summary["portero"][key][field], summary[peer][key][field])
            parts.append(f"{label} {fmt_ratio(r)}")
        out.append(f"- portero/{DISPLAY[peer]}: " + ", ".join(parts))
    out.append("")
    return out


def versions(args):
    out = []
    tools = [("nginx", [args.nginx, "-v"]), ("HAProxy", [args.haproxy, "-v"]),
             ("wrk", [args.wrk, "-v"])]
    if any(s in TLS_SCENARIOS for s in args.scenarios):
        tools += [("H2O", [args.h2o, "--version"]), ("h2load", [args.h2load, "--version"]),
                  ("OpenSSL", [args.openssl, "version"])]
    if "cache" in args.scenarios:
        tools.append(("Varnish", [args.varnishd, "-V"]))
    for name, argv in tools:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            text = (r.stdout + r.stderr).strip().splitlines()
            m = re.search(r"(\d+\.\d+(?:\.\d+)?)", text[0] if text else "")
            out.append(f"{name} {m.group(1) if m else '?'}")
        except (OSError, subprocess.TimeoutExpired):
            out.append(f"{name} ?")
    try:
        r = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                           capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            out.append(f"portero at {r.stdout.strip()}")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return ", ".join(out)


# --------------------------------------------------------------------------

def parse_duration(text):
    m = re.fullmatch(r"\s*(\d+)\s*s?\s*", str(text))
    if not m or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (whole seconds)")
    return int(m.group(1))


def parse_args(argv):
    ap = argparse.ArgumentParser(description="portero vs nginx vs HAProxy benchmark")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2s per scenario, 1 round, 2,000 idle connections")
    ap.add_argument("--duration", type=parse_duration, default=None,
                    help="seconds per wrk run (env BENCH_DURATION, default 10)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (env BENCH_ROUNDS, default 3)")
    ap.add_argument("--idle-conns", type=int, default=None,
                    help="idle connections (env BENCH_IDLE_CONNS, default 10000)")
    ap.add_argument("--candidates", default=os.environ.get("BENCH_CANDIDATES", ",".join(CANDIDATES)),
                    help="comma-separated subset of portero,nginx,haproxy")
    ap.add_argument("--scenarios", default=os.environ.get("BENCH_SCENARIOS",
                                                          ",".join(SCENARIOS)),
                    help=f"comma-separated subset of {','.join(SCENARIOS)}")
    ap.add_argument("--protect-duration", type=parse_duration, default=None,
                    help="seconds per wrk run of the protect scenario "
                         "(env BENCH_PROTECT_DURATION, default 5)")
    ap.add_argument("--tls-candidates",
                    default=os.environ.get("BENCH_TLS_CANDIDATES", ",".join(TLS_CANDIDATES)),
                    help="comma-separated subset of portero,nginx,haproxy,h2o for the TLS "
                         "scenarios (env BENCH_TLS_CANDIDATES)")
    ap.add_argument("--h2-requests", type=int, default=None,
                    help="h2load requests per h2tls run (env BENCH_H2_REQUESTS, default 100000)")
    ap.add_argument("--handshake-duration", type=parse_duration, default=None,
                    help="seconds of s_time per handshake run (env BENCH_HANDSHAKE_DURATION, "
                         "default 3)")
    ap.add_argument("--cache-candidates",
                    default=os.environ.get("BENCH_CACHE_CANDIDATES", ",".join(CACHE_CANDIDATES)),
                    help="comma-separated subset of portero,nginx,haproxy,varnish for the cache "
                         "scenario (env BENCH_CACHE_CANDIDATES)")
    ap.add_argument("--cache-duration", type=parse_duration, default=None,
                    help="seconds per wrk run of the cache scenario "
                         "(env BENCH_CACHE_DURATION, default 5)")
    ap.add_argument("--varnishd", default="/usr/sbin/varnishd")
    ap.add_argument("--cache-trace", default=os.environ.get("BENCH_CACHE_TRACE"),
                    help="the eviction simulator (default build/bench/cache_trace)")
    ap.add_argument("--h2load", default="/usr/bin/h2load")
    ap.add_argument("--openssl", default="/usr/bin/openssl")
    ap.add_argument("--h2o", default="/usr/bin/h2o")
    ap.add_argument("--portero", default=os.environ.get("PORTERO_BIN",
                                                        os.path.join(ROOT, "build", "portero")))
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--haproxy", default="/usr/sbin/haproxy")
    ap.add_argument("--wrk", default="/usr/bin/wrk")
    ap.add_argument("--output", default=os.path.join(RESULTS_DIR, "latest.md"),
                    help="Markdown report path (a .json with raw runs is written beside it)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep configs and logs")
    a = ap.parse_args(argv)
    env = os.environ
    a.duration = a.duration or (2 if a.quick else parse_duration(env.get("BENCH_DURATION", "10")))
    a.protect_duration = a.protect_duration or (
        2 if a.quick else parse_duration(env.get("BENCH_PROTECT_DURATION", "5")))
    a.cache_duration = a.cache_duration or (
        2 if a.quick else parse_duration(env.get("BENCH_CACHE_DURATION", "5")))
    a.rounds = a.rounds or (1 if a.quick else int(env.get("BENCH_ROUNDS", "3")))
    a.h2_requests = a.h2_requests or (20000 if a.quick else
                                      int(env.get("BENCH_H2_REQUESTS", "100000")))
    a.handshake_duration = a.handshake_duration or (
        2 if a.quick else parse_duration(env.get("BENCH_HANDSHAKE_DURATION", "3")))
    a.idle_conns = a.idle_conns or (2000 if a.quick else int(env.get("BENCH_IDLE_CONNS", "10000")))
    a.warmup = 1
    global NICE
    NICE = int(env.get("BENCH_NICE", "0"))
    a.candidates = [c.strip() for c in a.candidates.split(",") if c.strip()]
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for c in a.candidates:
        if c not in CANDIDATES:
            ap.error(f"unknown candidate {c!r}")
    a.tls_candidates = [c.strip() for c in a.tls_candidates.split(",") if c.strip()]
    for c in a.tls_candidates:
        if c not in TLS_CANDIDATES:
            ap.error(f"unknown TLS candidate {c!r}")
    a.cache_candidates = [c.strip() for c in a.cache_candidates.split(",") if c.strip()]
    for c in a.cache_candidates:
        if c not in CACHE_CANDIDATES:
            ap.error(f"unknown cache candidate {c!r}")
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if a.rounds < 1 or a.idle_conns < 1:
        ap.error("rounds and idle connections must be positive")
    cpus = sorted(os.sched_getaffinity(0))
    a.proxy_cpu = int(env.get("BENCH_PROXY_CPU", cpus[0]))
    a.load_cpu = int(env.get("BENCH_LOAD_CPU", cpus[1] if len(cpus) > 1 else cpus[0]))
    if a.proxy_cpu == a.load_cpu:
        log("warning: fewer than 2 CPUs; proxy and load share a CPU, numbers are not comparable")
    return a


def busy_share(cpus, seconds):
    before = [cpu_stat(c) for c in cpus]
    time.sleep(seconds)
    after = [cpu_stat(c) for c in cpus]
    busy = sum(a[0] - b[0] for a, b in zip(after, before))
    total = sum(a[1] - b[1] for a, b in zip(after, before))
    return busy / total if total > 0 else 0.0


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for lim in ((max(want, hard), max(want, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            return lim[0]
        except (ValueError, OSError):
            continue
    return soft


def main(argv):
    args = parse_args(argv)
    needed = [args.nginx, args.wrk]
    if any(s in TLS_SCENARIOS for s in args.scenarios):
        needed += [args.h2load, args.openssl]
    for tool in needed:
        if not os.access(tool, os.X_OK):
            log(f"{tool} is missing (run `make deps`)")
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    # Children inherit the raised limit (the idle scenario needs > 10,000 fds
    # on both sides; HAProxy wants about 2 × maxconn).
    nofile = raise_nofile(65536)
    if nofile < args.idle_conns + 1000:
        log(f"warning: open-file limit {nofile} is low for {args.idle_conns} idle connections")
    # The runner itself stays off the proxy CPU.
    os.sched_setaffinity(0, {args.load_cpu})

    args.busy_before = busy_share([args.proxy_cpu, args.load_cpu], 1.0)
    if args.busy_before > NOISY_SHARE:
        log(f"warning: other processes keep the benchmark CPUs {args.busy_before:.0%} busy; "
            f"numbers will be noisy")

    started = datetime.datetime.now()
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="portero-bench-")
    os.chmod(tmp, 0o755)
    os.makedirs(os.path.join(tmp, "tmp"))
    procs = Procs()
    env = Env(args, tmp, procs)
    env.nofile = min(nofile, 65536)
    results = {n: {k: [] for k in ("small", "1m", "close", "idle")} for n in args.candidates}
    status = {n: [] for n in args.candidates}
    variants = protect_variants(args)
    protect = {v[1]: [] for v in variants}
    protect_status = {v[1]: [] for v in variants}
    compared = [s for s in args.scenarios
                if s not in ("protect", "cache") and s not in TLS_SCENARIOS]
    cache_wanted = "cache" in args.scenarios
    cache_results = {n: [] for n in args.cache_candidates}
    cache_status = {n: [] for n in args.cache_candidates}
    tls_wanted = [s for s in args.scenarios if s in TLS_SCENARIOS]
    tls_results = {n: {k: [] for k in ("h2tls", "handshake", "resume")}
                   for n in args.tls_candidates}
    tls_status = {n: [] for n in args.tls_candidates}
    interrupted = False
    try:
        log(f"temp dir {tmp}; candidates {', '.join(args.candidates)}"
            + (f" (TLS: {', '.join(args.tls_candidates)})" if tls_wanted else "")
            + (f" (cache: {', '.join(args.cache_candidates)})" if cache_wanted else "")
            + "; scenarios "
            f"{', '.join(args.scenarios)}; {args.rounds} round(s) × {args.duration}s"
            + (f" ({args.protect_duration}s per protect run)" if variants else "")
            + (f" ({args.cache_duration}s per cache run)" if cache_wanted else ""))
        try:
            start_backend(env)
        except BenchError as e:
            log(f"backend failed: {e}; output: {tail(os.path.join(tmp, 'backend.out'))} "
                f"{tail(os.path.join(tmp, 'backend-error.log'))}")
            return 1
        log(f"backend nginx on 127.0.0.1:{env.backend_port}")
        if tls_wanted:
            make_tls_cert(env)
        for rnd in range(args.rounds):
            order = list(args.candidates) if compared else []
            random.shuffle(order)
            steps = list(variants)
            random.shuffle(steps)
            log(f"round {rnd + 1}/{args.rounds}: "
                + ", ".join(order + [f"{v[0]} {v[2]}" for v in steps]))
            for name in order:
                run_candidate_round(env, name, results, status)
            for v in steps:
                run_protect_variant(env, v, protect, protect_status)
            tls_order = list(args.tls_candidates) if tls_wanted else []
            random.shuffle(tls_order)
            if tls_order:
                log(f"round {rnd + 1}/{args.rounds}, TLS: " + ", ".join(tls_order))
            for name in tls_order:
                run_tls_round(env, name, tls_results, tls_status)
            cache_order = list(args.cache_candidates) if cache_wanted else []
            random.shuffle(cache_order)
            if cache_order:
                log(f"round {rnd + 1}/{args.rounds}, cache: " + ", ".join(cache_order))
            for name in cache_order:
                run_cache_round(env, name, cache_results, cache_status)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; cleaning up")
    finally:
        procs.stop_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if interrupted:
        return 130

    elapsed = time.monotonic() - t_start
    summary = summarize(results, args.candidates, args.scenarios)
    psummary = summarize_protect(protect, variants)
    tsummary = summarize_tls(tls_results, args.tls_candidates) if tls_wanted else {}
    csummary = summarize_cache(cache_results, args.cache_candidates) if cache_wanted else {}
    sim_cases, sim_problem = run_cache_trace(args) if cache_wanted else (None, None)
    if sim_problem:
        log(f"eviction simulator: {sim_problem}")
    text = report(args, summary, status, started, elapsed, psummary, protect_status,
                  tsummary, tls_status, csummary, cache_status, (sim_cases, sim_problem))
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text + "\n")
    raw = os.path.splitext(args.output)[0] + ".json"
    with open(raw, "w") as f:
        json.dump({"started": started.isoformat(timespec="seconds"),
                   "duration_s": args.duration, "rounds": args.rounds,
                   "idle_conns": args.idle_conns, "proxy_cpu": args.proxy_cpu,
                   "load_cpu": args.load_cpu, "busy_before": args.busy_before,
                   "summary": summary, "runs": results,
                   "problems": status, "protect_duration_s": args.protect_duration,
                   "protect_summary": psummary, "protect_runs": protect,
                   "protect_problems": protect_status,
                   "h2_requests": args.h2_requests,
                   "handshake_duration_s": args.handshake_duration,
                   "tls_summary": tsummary, "tls_runs": tls_results,
                   "tls_problems": tls_status,
                   "cache_duration_s": args.cache_duration, "cache_summary": csummary,
                   "cache_runs": cache_results, "cache_problems": cache_status,
                   "eviction_sim": sim_cases, "eviction_sim_problem": sim_problem}, f, indent=1)
    log(f"wrote {args.output} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
