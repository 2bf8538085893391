"""Abuse resistance (issue 6, item 6): slow clients, many idle connections, oversized requests.

- Slowloris (`slowhttptest -H`) and slow POST (`slowhttptest -B`) against small
  `header_timeout` / `body_timeout`: a normal client keeps getting prompt 200s meanwhile, and
  the slow connections are cut by portero at the timeouts (408 in the access log, and
  slowhttptest's own statistics show them closed while it still wanted them open).
- 10,000 idle connections held at once: a normal request is still answered promptly.
- Oversized request line / head / field count / body: 414, 431, 431, 413, and the backend
  never gets the request.

Every loop is bounded in count and time; traffic stays on 127.0.0.1; the only processes
stopped here are the ones started here, by PID. Timing bounds are generous (slow machines)."""

import csv
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, wait_for
from rawbackend import RawBackend, RawClient, ConnectionClosed
from test_smuggling import Incomplete, parse_upstream

PROMPT = 5.0   # seconds: "answered promptly", generous for a slow, busy machine


def config(port, backend, limits, access="off"):
    log = '{ access: "%s", format: json, flush_interval: 100ms }' % access \
        if access != "off" else "{ access: off }"
    return ("workers: 1\n"
            "log: %s\n"
            "limits: { %s }\n"
            "listeners:\n"
            '  - { name: web, address: "127.0.0.1:%d" }\n'
            "upstreams:\n"
            "  app:\n"
            '    servers: [ { address: "%s" } ]\n'
            "    timeouts: { connect: 2s, response: 20s, idle: 20s }\n"
            "routes:\n"
            "  - { match: { path_prefix: / }, upstream: app }\n" % (log, limits, port, backend))


class Prober:
    """A normal client in a thread: a fresh connection and one GET every INTERVAL s, each
    recorded as (status or error text, seconds taken). Stops on stop() or after LIMIT s."""

    def __init__(self, port, interval=0.25, limit=90.0):
        self.port = port
        self.interval = interval
        self.limit = limit
        self.results = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _one(self, i):
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            c.request("GET", "/probe%d" % i)
            r = c.getresponse()
            r.read()
            return r.status, time.monotonic() - t0
        except OSError as e:
            return repr(e), time.monotonic() - t0
        finally:
            c.close()

    def _run(self):
        end = time.monotonic() + self.limit
        i = 0
        while not self._stop.is_set() and time.monotonic() < end:
            self.results.append(self._one(i))
            i += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(30)

    def check(self, min_count):
        assert len(self.results) >= min_count, self.results
        bad = [r for r in self.results if r[0] != 200]
        assert not bad, "probe failures during the attack: %r" % bad[:10]
        slowest = max(t for _, t in self.results)
        assert slowest < PROMPT, "a probe took %.1f s" % slowest


# ---------------------------------------------------------------------------------------------
# slowhttptest

SLOW_CONNS = 400
SLOW_RATE = 50       # connections per second: the ramp alone lasts SLOW_CONNS / SLOW_RATE = 8 s
SLOW_LENGTH = 15     # slowhttptest's own test length, s


def run_slowhttptest(tmp_path, port, mode, interval):
    """Runs slowhttptest (bounded by its -l and by our own timeout); returns the rows of its
    CSV statistics as dicts and the start / end times."""
    prefix = tmp_path / ("slow%s" % mode.strip("-"))
    args = ["slowhttptest", mode, "-c", str(SLOW_CONNS), "-r", str(SLOW_RATE),
            "-i", str(interval), "-l", str(SLOW_LENGTH), "-u", "http://127.0.0.1:%d/" % port,
            "-p", "5", "-g", "-o", str(prefix)]
    with open(tmp_path / ("slowhttptest%s.out" % mode), "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout=SLOW_LENGTH + 45)
        except subprocess.TimeoutExpired:
            proc.kill()         # our own child, by its PID
            proc.wait(10)
            pytest.fail("slowhttptest did not finish in time")
    text = (tmp_path / ("slowhttptest%s.out" % mode)).read_text(errors="replace")
    path = prefix.with_suffix(".csv")
    assert path.exists(), "no CSV from slowhttptest:\n%s" % text[-2000:]
    with open(path) as f:
        rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(f)]
    assert rows, text[-2000:]
    return rows


def access_statuses(path):
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(json.loads(line)["status"])
    return out


@pytest.fixture
def slow_env(make_portero, backend_factory, tmp_path):
    if shutil.which("slowhttptest") is None:
        pytest.skip("slowhttptest is not installed (Debian package slowhttptest)")
    b = backend_factory("slow")
    port = free_port()
    log = tmp_path / "access.log"
    make_portero(config(port, b.address, "header_timeout: 2s, body_timeout: 2s, "
                        "max_connections: 5000", access=str(log)), ports=[port])
    return port, b, log


def check_cut(rows, log, what):
    """The slow connections were closed by portero at its timeout: slowhttptest, which wants
    them all open at once, never had more than a few seconds' worth of its ramp open, and the
    access log holds a 408 for (nearly) every one of them. (slowhttptest's last CSV rows can
    lag behind its final state, so the 408s are the count that matters.)"""
    most_connected = max(r["Connected"] for r in rows)
    # a 2 s timeout at 50 connections/s: 100-200 open at a time; 300 leaves room for a slow host
    assert most_connected < SLOW_CONNS * 3 // 4, "%s: %d held open at once" % (what, most_connected)
    assert wait_for(lambda: access_statuses(log).count(408) >= SLOW_CONNS * 3 // 4, 10), \
        "%s: only %d 408s logged; slowhttptest stats %r" % (
            what, access_statuses(log).count(408), rows[-3:])


@pytest.mark.slow  # ~20 s of slowhttptest: run in the normal pass only
def test_slowloris_headers(slow_env, tmp_path):
    port, b, log = slow_env
    with Prober(port) as prober:
        rows = run_slowhttptest(tmp_path, port, "-H", interval=1)
    prober.check(min_count=10)
    check_cut(rows, log, "slow headers")
    # the slow heads never became requests upstream: besides our probes the backend saw only
    # slowhttptest's own availability probe (about one a second), not 400 slow requests
    others = [q["target"] for q in b.requests if not q["target"].startswith("/probe")]
    assert len(others) <= SLOW_LENGTH + 10, "%d other requests upstream" % len(others)


@pytest.mark.slow  # ~20 s of slowhttptest: run in the normal pass only
def test_slow_post_body(slow_env, tmp_path):
    """R-U-Dead-Yet: complete heads, then a few body bytes every 4 s, longer than the 2 s
    body_timeout."""
    port, b, log = slow_env
    with Prober(port) as prober:
        rows = run_slowhttptest(tmp_path, port, "-B", interval=4)
    prober.check(min_count=10)
    check_cut(rows, log, "slow body")
    # none of the slow POSTs reached the backend complete (they were streamed, then cut)
    assert [q["target"] for q in b.requests if q["method"] == "POST"] == []


@pytest.mark.slow  # ~20 s of slowhttptest: run in the normal pass only
def test_slow_post_trickling_inside_the_timeout_is_cut_by_min_body_rate(slow_env, tmp_path):
    """The same attack with a few bytes every second, inside the 2 s body_timeout: the idle timeout
    never fires, but min_body_rate (default 256 B/s, judged once a body has taken longer than
    body_timeout) does."""
    port, b, log = slow_env
    with Prober(port) as prober:
        rows = run_slowhttptest(tmp_path, port, "-B", interval=1)
    prober.check(min_count=10)
    check_cut(rows, log, "trickling body")
    assert [q["target"] for q in b.requests if q["method"] == "POST"] == []


# ---------------------------------------------------------------------------------------------
# Many idle connections

IDLE_CONNS = 10000


def accepted_sockets(pid, port):
    """How many of process PID's file descriptors are accepted TCP connections on local PORT
    (from /proc: the fd's socket inode looked up in /proc/net/tcp, listening socket left out).
    Counting these, not all fds, keeps stray fds (a fixture's port probe) out of the count."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if int(local.split(":")[1], 16) == port and state != "0A":
                inodes.add(inode)
    n = 0
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return -1
    for fd in fds:
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            n += 1
    return n


def timed_get(port, path):
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    finally:
        c.close()


@pytest.fixture
def nofile_raised():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_CONNS + 1000
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, need))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                else max(need, soft), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ten_thousand_idle_connections(nofile_raised, make_portero, backend_factory):
    b = backend_factory("idle")
    port = free_port()
    # portero inherits the raised RLIMIT_NOFILE from this process
    p = make_portero(config(port, b.address, "max_connections: 12000, header_timeout: 120s, "
                            "keepalive_timeout: 120s"), ports=[port])
    socks = []
    try:
        deadline = time.monotonic() + 120
        while len(socks) < IDLE_CONNS and time.monotonic() < deadline:
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError as e:
                pytest.fail("connection %d failed: %r" % (len(socks) + 1, e))
        assert len(socks) == IDLE_CONNS, "opened only %d in time" % len(socks)
        # portero has accepted them all (they are not just waiting in the kernel's backlog)
        assert wait_for(lambda: accepted_sockets(p.pid, port) >= IDLE_CONNS, 60, 0.2), \
            "portero holds %d connections" % accepted_sockets(p.pid, port)
        for i in range(3):
            status, took = timed_get(port, "/busy%d" % i)
            assert status == 200
            assert took < PROMPT, "request took %.1f s with %d idle connections" % (
                took, IDLE_CONNS)
        assert p.running()
        # the idle connections are all still there
        assert accepted_sockets(p.pid, port) >= IDLE_CONNS
    finally:
        for s in socks:
            s.close()
    assert wait_for(lambda: accepted_sockets(p.pid, port) == 0, 60, 0.2), \
        "portero still holds %d connections after the clients closed" % accepted_sockets(
            p.pid, port)
    status, took = timed_get(port, "/after")
    assert status == 200 and took < PROMPT


# ---------------------------------------------------------------------------------------------
# Oversized requests

MAX_BODY = 4096
FILL = b"\xaa"     # body filler byte, appears nowhere else in a request


class LimitEnv:
    def __init__(self, port, rb):
        self.port = port
        self.rb = rb


@pytest.fixture
def limit_env(make_portero):
    rb = RawBackend(keep_alive=True, respond="request")
    port = free_port()
    make_portero(config(port, rb.address, "max_request_line: 1KiB, max_header_bytes: 8KiB, "
                        "max_headers: 50, max_body_bytes: %d, header_timeout: 10s, "
                        "body_timeout: 10s" % MAX_BODY), ports=[port])
    yield LimitEnv(port, rb)
    rb.stop()


def expect_error(env, data, status):
    """Sends DATA (as much as portero takes); expects STATUS, a close, nothing upstream."""
    with RawClient(env.port, timeout=15) as c:
        c.try_send(data)
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            pytest.fail("closed without a %d: %r" % (status, e.partial[:200]))
        assert r.status == status, r
        assert "close" in (r.header("connection") or "").lower()
        assert c.wait_closed(10), "connection left open after %d" % status
        assert c.extra == b""
    time.sleep(0.3)
    assert env.rb.total_bytes() == 0, "backend got %r" % env.rb.all_bytes()[:300]


def test_control_request_within_limits_is_forwarded(limit_env):
    """Just under every limit: forwarded (so the zero-bytes checks below mean something)."""
    fields = b"".join(b"X-F%02d: %s\r\n" % (i, b"v" * 100) for i in range(40))
    target = b"/" + b"t" * 900
    with RawClient(limit_env.port) as c:
        c.send(b"POST %s HTTP/1.1\r\nHost: test\r\n%sContent-Length: %d\r\n\r\n%s"
               % (target, fields, MAX_BODY, FILL * MAX_BODY))
        assert c.read_response().status == 200
    up = parse_upstream(limit_env.rb.all_bytes())
    assert up.target == target and up.body == FILL * MAX_BODY


def test_request_line_too_long_414(limit_env):
    expect_error(limit_env, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", 414)


def test_header_block_too_large_431(limit_env):
    expect_error(limit_env, b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"v" * 9000
                 + b"\r\n\r\n", 431)


def test_header_block_of_many_fields_too_large_431(limit_env):
    fields = b"".join(b"X-F%02d: %s\r\n" % (i, b"v" * 400) for i in range(30))
    expect_error(limit_env, b"GET / HTTP/1.1\r\nHost: test\r\n" + fields + b"\r\n", 431)


def test_too_many_headers_431(limit_env):
    fields = b"".join(b"X-F%02d: v\r\n" % i for i in range(60))
    expect_error(limit_env, b"GET / HTTP/1.1\r\nHost: test\r\n" + fields + b"\r\n", 431)


def test_declared_body_too_large_413(limit_env):
    expect_error(limit_env, b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s"
                 % (MAX_BODY + 1, FILL * (MAX_BODY + 1)), 413)


def test_declared_huge_body_413_without_sending_it(limit_env):
    """A Content-Length of a petabyte is refused from the head alone."""
    expect_error(limit_env, b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"
                 % (1 << 50), 413)


def test_chunked_body_growing_past_limit_413(limit_env):
    """A chunked body gives no size up front: portero streams it and stops at the limit. The
    head and the first chunks may be upstream by then, but never a complete request, never a
    byte past the limit, and that upstream connection is closed."""
    env = limit_env
    with RawClient(env.port, timeout=15) as c:
        c.send(b"POST /grow HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3 * MAX_BODY // 1024):        # bounded: 12 chunks of 1 KiB
            if not c.try_send(b"400\r\n" + FILL * 1024 + b"\r\n"):
                break
            time.sleep(0.02)
        c.try_send(b"0\r\n\r\n")
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            pytest.fail("closed without a 413: %r" % e.partial[:200])
        assert r.status == 413, r
        assert c.wait_closed(10)
    time.sleep(0.3)
    got = env.rb.all_bytes()
    assert got.count(FILL) <= MAX_BODY, "%d body bytes upstream" % got.count(FILL)
    if got:
        with pytest.raises(Incomplete):
            parse_upstream(got)
    assert env.rb.responses_sent() == 0
    assert wait_for(lambda: all(conn.peer_closed for conn in env.rb.conns if conn.count), 10)
