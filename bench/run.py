#!/usr/bin/python3
"""Side-by-side benchmark of portero, nginx and HAProxy (`make bench`).

Every candidate runs one worker pinned to the proxy CPU, in front of the same
nginx backend (pinned, with wrk, to the load CPU), with keep-alive to the
backend.  Scenarios:

  small  wrk -t1 -c50 --latency, GET /small (13 bytes), keep-alive
  1m     wrk -t1 -c8  --latency, GET /1m (1 MiB), keep-alive
  close  wrk -t1 -c50 --latency -H 'Connection: close', GET /small
  idle   N idle keep-alive client connections (default 10,000): RSS growth

For the wrk scenarios the proxy's CPU time (utime+stime of all its processes
and threads, from /proc/PID/stat) over the run is divided by the number of
requests wrk completed.  Candidates are alternated in shuffled order for a
number of rounds and the median of each metric is reported.

Python 3 standard library only.  See bench/README.md.
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
DISPLAY = {"portero": "portero", "nginx": "nginx", "haproxy": "HAProxy"}

# name, path, wrk connections, extra wrk args, title
WRK_SCENARIOS = (
    ("small", "/small", 50, [], "Small responses, keep-alive (GET /small, 13 B, wrk -t1 -c50)"),
    ("1m", "/1m", 8, [], "1 MiB responses, keep-alive (GET /1m, wrk -t1 -c8)"),
    ("close", "/small", 50, ["-H", "Connection: close"],
     "One connection per request (GET /small, wrk -t1 -c50 -H 'Connection: close')"),
)
IDLE_TITLE = "Idle keep-alive client connections (RSS growth per connection)"

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


def cpu_ticks(pids):
    """utime+stime (clock ticks) summed over processes; covers all threads."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[0] is field 3 (state); utime, stime are fields 14, 15.
            total += int(fields[11]) + int(fields[12])
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
        self.k0 = _children_ticks()

    def stop(self):
        a = self.env.args
        p1, l1 = cpu_stat(a.proxy_cpu), cpu_stat(a.load_cpu)
        cand = cpu_ticks(self.cand_pids) - self.c0
        ours_load = (cpu_ticks(self.back_pids) - self.b0) + (_children_ticks() - self.k0)
        res = {"cand_ticks": cand}
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


def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "bench.local"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def check_works(port, large_body):
    """One request per path; raise BenchError unless both answers are right."""
    for path, want in (("/small", SMALL_BODY), ("/1m", large_body)):
        try:
            status, body = http_get(port, path)
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
        self.nofile = 20000
        self.user_line = "user root;" if os.geteuid() == 0 else ""
        self.backend_port = None
        self.backend = None
        self.large_body = None


def start_backend(env):
    www = os.path.join(env.tmp, "www")
    os.makedirs(www, exist_ok=True)
    rnd = random.Random(13)
    env.large_body = bytes(rnd.getrandbits(8) for _ in range(4096)) * (LARGE_SIZE // 4096)
    with open(os.path.join(www, "1m"), "wb") as f:
        f.write(env.large_body)
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


def candidate_argv(env, name, port):
    d = env.tmp
    if name == "portero":
        conf = fill("portero.yaml.tmpl", os.path.join(d, "portero.yaml"),
                    {"PORT": port, "BACKEND_PORT": env.backend_port})
        return [env.args.portero, "-c", conf]
    if name == "nginx":
        conf = fill("nginx.conf.tmpl", os.path.join(d, "nginx.conf"), {
            "USER_LINE": env.user_line, "CPU_MASK": cpu_mask(env.args.proxy_cpu),
            "NOFILE": env.nofile, "DIR": d, "PORT": port, "BACKEND_PORT": env.backend_port})
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


def start_candidate(env, name):
    """Start a fresh instance; return (Popen, port). Raises BenchError."""
    binary = candidate_binary(env, name)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BenchError(f"{binary} not found")
    port = free_port(env.ports)
    argv = candidate_argv(env, name, port)
    p = env.procs.start(name, argv, env.args.proxy_cpu, os.path.join(env.tmp, f"{name}.out"))
    try:
        wait_port(port, p)
        check_works(port, env.large_body)
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
    if m:
        errors += int(m.group(1))
    res["errors"] = errors
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
    name, path, conns, extra, _ = scenario
    if env.backend.poll() is not None:
        raise BenchError("the backend nginx died")
    watch = CpuWatch(env, tree(p.pid))
    res = run_wrk(env, port, path, conns, extra, env.args.duration)
    res.update(watch.stop())
    if p.poll() is not None:
        raise BenchError(f"exited with status {p.returncode} during the run")
    res["cpu_s"] = res["cand_ticks"] / CLK_TCK
    res["cpu_us_per_req"] = (res["cpu_s"] * 1e6 / res["requests"]) if res["requests"] else None
    res["valid"] = res["requests"] > 0 and res["errors"] <= MAX_ERROR_SHARE * res["requests"]
    return res


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


def report(args, summary, status, started, elapsed):
    cands = args.candidates
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
             f"{args.rounds} round(s) of {args.duration}s per scenario, candidates alternated in "
             f"shuffled order, median reported; {args.idle_conns:,} idle connections. "
             f"Run took {elapsed / 60:.1f} min."
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
    L.append("## Targets (issue 2, item 13)")
    L.append("")
    L.append("| scenario | target | portero |")
    L.append("|---|---|---|")
    for t in targets:
        L.append(f"| {t[0]} | {t[1]} | {t[2]} |")
    L.append("")
    notes = [f"{DISPLAY[n]}: {msg}" for n in cands for msg in dict.fromkeys(status[n])]
    noisy = sorted({sc[0] for sc in WRK_SCENARIOS for n in cands if sc[0] in args.scenarios
                    and max(summary[n][sc[0]]["other_proxy_cpu"] or 0,
                            summary[n][sc[0]]["other_load_cpu"] or 0) > NOISY_SHARE})
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
    for name, argv in (("nginx", [args.nginx, "-v"]), ("HAProxy", [args.haproxy, "-v"]),
                       ("wrk", [args.wrk, "-v"])):
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
    ap.add_argument("--scenarios", default=os.environ.get("BENCH_SCENARIOS", "small,1m,close,idle"),
                    help="comma-separated subset of small,1m,close,idle")
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
    a.rounds = a.rounds or (1 if a.quick else int(env.get("BENCH_ROUNDS", "3")))
    a.idle_conns = a.idle_conns or (2000 if a.quick else int(env.get("BENCH_IDLE_CONNS", "10000")))
    a.warmup = 1
    global NICE
    NICE = int(env.get("BENCH_NICE", "0"))
    a.candidates = [c.strip() for c in a.candidates.split(",") if c.strip()]
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    for c in a.candidates:
        if c not in CANDIDATES:
            ap.error(f"unknown candidate {c!r}")
    for s in a.scenarios:
        if s not in ("small", "1m", "close", "idle"):
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
    for tool in (args.nginx, args.wrk):
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
    interrupted = False
    try:
        log(f"temp dir {tmp}; candidates {', '.join(args.candidates)}; scenarios "
            f"{', '.join(args.scenarios)}; {args.rounds} round(s) × {args.duration}s")
        try:
            start_backend(env)
        except BenchError as e:
            log(f"backend failed: {e}; output: {tail(os.path.join(tmp, 'backend.out'))} "
                f"{tail(os.path.join(tmp, 'backend-error.log'))}")
            return 1
        log(f"backend nginx on 127.0.0.1:{env.backend_port}")
        for rnd in range(args.rounds):
            order = list(args.candidates)
            random.shuffle(order)
            log(f"round {rnd + 1}/{args.rounds}: {', '.join(order)}")
            for name in order:
                run_candidate_round(env, name, results, status)
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
    text = report(args, summary, status, started, elapsed)
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text + "\n")
    raw = os.path.splitext(args.output)[0] + ".json"
    with open(raw, "w") as f:
        json.dump({"started": started.isoformat(timespec="seconds"),
                   "duration_s": args.duration, "rounds": args.rounds,
                   "idle_conns": args.idle_conns, "proxy_cpu": args.proxy_cpu,
                   "load_cpu": args.load_cpu, "summary": summary, "runs": results,
                   "problems": status}, f, indent=1)
    log(f"wrote {args.output} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
