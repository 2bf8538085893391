"""Rate limits and per-address connection limits (issue 6, items 2 and 3).

Contract: `rate_limits` are token buckets (`rate: N/PERIOD`, `burst`, `key` of client_ip,
route and header:NAME parts) that routes name in `rate_limit:`. A request finding its bucket
empty gets 429 with a whole-seconds `Retry-After` and a short body, and never reaches the
backend. Local buckets are one per process (shared by every worker) and survive reloads that
keep the limit; `cluster: true` buckets live in Redis (keys under `portero:`), shared by every
instance. When Redis fails (refused, silent), `on_error: open` lets requests pass and counts
`portero_redis_errors_total`, `closed` answers 503; either way within about the Redis timeout,
and routes without a cluster limit never wait. `max_connections_per_ip` counts one client
address's open connections over every worker.

Every bound on how many requests may pass is burst + rate x (time the test took), measured
from before the first request to after the last answer, so a slow machine widens the bound
instead of failing the test.
"""

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from admin_client import Admin
from conftest import ASAN, RawConn, free_port, port_open, wait_for
from test_reload import reload_ok

REDIS_SERVER = "/usr/bin/redis-server"
SLOW = 3.0 if ASAN else 1.0        # stretches time bounds under the sanitizer build


# --- helpers --------------------------------------------------------------------------------------

def _config(port, backend, admin_port, routes, *, workers=1, rate_limits=None, extra="",
            listener_extra=""):
    lines = ["workers: %d" % workers,
             "log: { access: off, level: info }",
             'admin: { address: "127.0.0.1:%d" }' % admin_port,
             "listeners:",
             '  - { name: web, address: "127.0.0.1:%d"%s }' % (port, listener_extra),
             "upstreams:",
             '  app: { servers: [ { address: "%s" } ] }' % backend.address]
    if rate_limits:
        lines += ["rate_limits:"] + ["  " + l for l in rate_limits]
    if extra:
        lines.append(extra.rstrip("\n"))
    lines.append("routes:")
    lines.append(routes.rstrip("\n"))
    return "\n".join(lines) + "\n"


# The brief's limits: per_ip, per_key and a cluster-wide per-route one.
PER_IP = "per_ip: { rate: 5/s, burst: 5, key: client_ip }"
PER_KEY = 'per_key: { rate: 2/10s, key: ["header:X-Api-Key"] }'
GLOBAL = "global: { rate: 10/m, burst: 3, key: route, cluster: true }"
FREE_ROUTE = "  - { name: free, match: { path_prefix: /free }, upstream: app }\n"


def _request(port, path, headers=(), source=None, timeout=10.0):
    """One request on a fresh connection: the RawResponse."""
    with RawConn(port, timeout=timeout, source=(source, 0) if source else None) as c:
        c.request("GET", path, headers=list(headers) + [("Connection", "close")])
        return c.read_response()


def _until_refused(port, path, headers=(), source=None, limit=60):
    """Sends requests one after another until one is not 200; HEADERS may be a function giving
    each request's. Returns (passed, refused response or None, seconds from before the first
    request to after the last answer)."""
    t0 = time.monotonic()
    passed, refused = 0, None
    for _ in range(limit):
        r = _request(port, path, headers() if callable(headers) else headers, source)
        if r.status != 200:
            refused = r
            break
        passed += 1
    return passed, refused, time.monotonic() - t0


def _bound(burst, rate, period_s, elapsed_s):
    """Most requests a full bucket can let through in ELAPSED_S seconds."""
    return burst + int(rate * elapsed_s / period_s)


def _assert_429(r, most):
    """R is a rate limit's 429 whose Retry-After is at most MOST seconds (the time one token
    takes to come back)."""
    assert r is not None, "no request was refused"
    assert r.status == 429, r
    ra = r.header("Retry-After")
    assert ra is not None and ra.isdigit() and 1 <= int(ra) <= most, r   # RFC 9110 §10.2.3
    assert 0 < len(r.body) <= 64, r                             # short, plain
    assert b"127.0.0.1" not in r.body, r


# --- local buckets ------------------------------------------------------------------------------

def test_burst_passes_then_429_with_retry_after_then_refills(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    routes = ("  - { name: api, match: { path_prefix: /api }, upstream: app,"
              " rate_limit: [per_ip, per_key] }\n" + FREE_ROUTE)
    make_portero(_config(port, b, admin_port, routes, rate_limits=[PER_IP, PER_KEY]),
                 ports=[port, admin_port])
    adm = Admin(admin_port)
    # a fresh API key per request, so that only per_ip can refuse
    counter = iter(range(1000))

    def key():
        return [("X-Api-Key", "k%d" % next(counter))]

    passed, refused, elapsed = _until_refused(port, "/api/x", key)
    _assert_429(refused, 1)
    assert 5 <= passed <= _bound(5, 5, 1, elapsed), (passed, elapsed)
    assert b.request_count() == passed      # the refused one never reached the backend
    refusals = 1
    # the bucket is empty: an immediate second try is refused too (unless a slow machine let a
    # token in since), and a route without the limit is not affected
    r = _request(port, "/api/x", key())
    if r.status == 429:
        refusals += 1
    assert _request(port, "/free").status == 200
    # after Retry-After (the refill time), a whole burst passes again
    time.sleep(int(refused.header("Retry-After")) + 0.2)
    seen = b.request_count()
    passed2, refused2, elapsed2 = _until_refused(port, "/api/x", key)
    _assert_429(refused2, 1)
    refusals += 1
    assert 5 <= passed2 <= _bound(5, 5, 1, elapsed2), (passed2, elapsed2)
    assert b.request_count() == seen + passed2
    m = adm.settled_metrics("portero_rate_limited_total", refusals)
    assert m.value("portero_rate_limited_total") == refusals


def test_header_key_keeps_a_bucket_per_value(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    routes = "  - { name: keyed, match: { path_prefix: /api }, upstream: app, rate_limit: per_key }\n"
    make_portero(_config(port, b, admin_port, routes, rate_limits=[PER_KEY]),
                 ports=[port, admin_port])
    t0 = time.monotonic()
    a_passed, a_refused, _ = _until_refused(port, "/api/a", [("X-Api-Key", "alpha")])
    # header names are case-insensitive: the same bucket, still empty
    again = _request(port, "/api/a", [("x-api-key", "alpha")])
    b_passed, b_refused, _ = _until_refused(port, "/api/b", [("X-Api-Key", "beta")])
    elapsed = time.monotonic() - t0
    _assert_429(a_refused, 5)
    _assert_429(b_refused, 5)
    # 2 per 10 s, burst 2: each key gets its own two (more only if the test took > 5 s)
    bound = _bound(2, 2, 10, elapsed)
    assert 2 <= a_passed <= bound and 2 <= b_passed <= bound, (a_passed, b_passed, elapsed)
    if elapsed < 4:
        assert again.status == 429, again
    paths = [q["target"] for q in b.requests]
    assert paths.count("/api/a") == a_passed + (again.status == 200)
    assert paths.count("/api/b") == b_passed


def test_client_ip_is_the_real_client_behind_trusted_proxies(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    routes = "  - { name: api, match: { path_prefix: /api }, upstream: app, rate_limit: per_ip }\n"
    slow_ip = "per_ip: { rate: 1/m, burst: 3, key: client_ip }"
    make_portero(_config(port, b, admin_port, routes, rate_limits=[slow_ip],
                         extra="trusted_proxies: [127.0.0.1/32]"), ports=[port, admin_port])
    # two clients behind the trusted proxy 127.0.0.1: a bucket each
    one_passed, one_refused, _ = _until_refused(port, "/api/1",
                                                [("X-Forwarded-For", "203.0.113.1")])
    two_passed, two_refused, _ = _until_refused(port, "/api/2",
                                                [("X-Forwarded-For", "198.51.100.7, 203.0.113.2")])
    _assert_429(one_refused, 60)
    _assert_429(two_refused, 60)
    assert one_passed == 3 and two_passed == 3
    # 127.0.0.2 is no trusted proxy: its X-Forwarded-For is the client's own words, so varying
    # it does not escape the bucket of 127.0.0.2
    passed = 0
    for i in range(6):
        r = _request(port, "/api/3", [("X-Forwarded-For", "192.0.2.%d" % (i + 1))],
                     source="127.0.0.2")
        passed += r.status == 200
    assert passed == 3


def test_local_bucket_is_shared_by_all_workers(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    routes = "  - { name: api, match: { path_prefix: /api }, upstream: app, rate_limit: shared }\n"
    shared = "shared: { rate: 1/m, burst: 10, key: client_ip }"
    make_portero(_config(port, b, admin_port, routes, workers=4, rate_limits=[shared]),
                 ports=[port, admin_port])
    statuses, lock = [], threading.Lock()

    def client(n):
        for _ in range(n):   # a fresh connection each: the kernel spreads them over the workers
            try:
                s = _request(port, "/api/w").status
            except (OSError, ValueError) as e:
                s = repr(e)
            with lock:
                statuses.append(s)

    threads = [threading.Thread(target=client, args=(8,)) for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert len(statuses) == 64 and set(statuses) <= {200, 429}, statuses
    passed = statuses.count(200)
    # per-worker buckets would let up to 4 x 10 through
    assert 10 <= passed <= _bound(10, 1, 60, elapsed), (passed, elapsed)
    assert b.request_count() == passed
    m = Admin(admin_port).settled_metrics("portero_rate_limited_total", 64 - passed)
    assert m.value("portero_rate_limited_total") == 64 - passed


def test_reload_that_keeps_the_limit_keeps_its_bucket(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    slow_ip = "per_ip: { rate: 1/m, burst: 4, key: client_ip }"
    routes = "  - { name: api, match: { path_prefix: /api }, upstream: app, rate_limit: per_ip }\n"
    p = make_portero(_config(port, b, admin_port, routes, rate_limits=[slow_ip]),
                     ports=[port, admin_port])
    passed, refused, _ = _until_refused(port, "/api/x")
    _assert_429(refused, 60)
    assert passed == 4
    # a reload that adds a route and a limit, and keeps per_ip
    other = "other: { rate: 1/m, burst: 1, key: client_ip }"
    p.config_path.write_text(_config(
        port, b, admin_port, routes + FREE_ROUTE, rate_limits=[slow_ip, other]))
    reload_ok(p)
    assert wait_for(lambda: _request(port, "/free/new").status == 200, timeout=10)
    # the bucket was not reset to full
    for _ in range(3):
        assert _request(port, "/api/x").status == 429
    assert [q["target"] for q in b.requests].count("/api/x") == 4


@pytest.mark.parametrize("cluster", [False, True], ids=["local", "cluster"])
def test_reload_that_changes_the_period_keeps_the_tokens_left(make_portero, backend_factory,
                                                              request, cluster):
    """Tokens left are tokens left, whatever unit the new rate is written in: a reload from
    1/m to 1/h must neither empty a bucket nor (back to 1/m) fill it."""
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    extra = ""
    if cluster:
        extra = 'redis: { address: "%s", timeout: 2s, on_error: closed }' % \
            request.getfixturevalue("redis").address
    routes = "  - { name: api, match: { path_prefix: /api }, upstream: app, rate_limit: lim }\n"

    def config(rate):
        lim = "lim: { rate: %s, burst: 4, key: client_ip, cluster: %s }" % (
            rate, "true" if cluster else "false")
        return _config(port, b, admin_port, routes, rate_limits=[lim], extra=extra)

    def passes(source, n):
        return [_request(port, "/api/p", source=source).status for _ in range(n)]

    p = make_portero(config("1/m"), ports=[port, admin_port])
    t0 = time.monotonic()
    assert passes("127.0.0.1", 2) == [200, 200]             # 2 of 4 left
    p.config_path.write_text(config("1/h"))
    reload_ok(p)
    one = passes("127.0.0.1", 3)
    assert passes("127.0.0.2", 3) == [200, 200, 200]        # 1 of 4 left
    p.config_path.write_text(config("1/m"))
    reload_ok(p)
    two = passes("127.0.0.2", 3)
    elapsed = time.monotonic() - t0
    if elapsed < 50:   # 1/m could not have added a whole token yet
        assert one == [200, 200, 429], one
        assert two == [200, 429, 429], two


# --- per-address connection limits --------------------------------------------------------------

def _hold(port, source):
    """A keep-alive connection from SOURCE, proven accepted (one request answered 200)."""
    c = RawConn(port, source=(source, 0))
    c.request("GET", "/held")
    r = c.read_response()
    assert r.status == 200, r
    return c


def test_connection_limit_per_address_spans_workers(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    p = make_portero(_config(port, b, admin_port,
                             "  - { match: { path_prefix: / }, upstream: app }\n", workers=4,
                             listener_extra=", max_connections_per_ip: 3"),
                     ports=[port, admin_port])
    held = []
    try:
        # 3 from 127.0.0.1, landing on whichever workers the kernel picks
        held = [_hold(port, "127.0.0.1") for _ in range(3)]
        refused = 0
        for _ in range(6):   # whichever worker gets it, the fourth is one too many
            with RawConn(port, source=("127.0.0.1", 0)) as c:
                c.request("GET", "/over")
                r = c.read_response()
                assert r.status == 429, r
                assert r.header("Retry-After") is not None
                assert c.closed_by_peer(timeout=10)
            refused += 1
        # another address has its own count
        held.append(_hold(port, "127.0.0.2"))
        held.append(_hold(port, "127.0.0.2"))
    finally:
        for c in held:
            c.close()
    assert [q["target"] for q in b.requests].count("/over") == 0
    m = Admin(admin_port).settled_metrics("portero_connections_limited_total", refused)
    assert m.value("portero_connections_limited_total") == refused
    # closes give the count back
    assert wait_for(lambda: _request(port, "/after").status == 200, timeout=10)
    assert p.running()


# --- cluster-wide limits (Redis) ----------------------------------------------------------------

class Resp:
    """A minimal RESP2 client for looking into the test's own Redis (KEYS, PTTL)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def _reply(self):
        line = self.f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def close(self):
        self.f.close()
        self.sock.close()


class RedisServer:
    """A redis-server of our own on a fixed port; stopped by PID."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None
        self.log = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log = open(self.dir / ("redis%d.log" % self.starts), "wb")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_for(lambda: self.proc.poll() is not None or port_open(self.port),
                        timeout=15) or self.proc.poll() is not None:
            pytest.fail("redis-server did not start: %s" % (
                self.dir / ("redis%d.log" % self.starts)).read_text(errors="replace")[-2000:])

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc:
            self.proc.wait(timeout=10)
        if self.log:
            self.log.close()
        self.proc = self.log = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port


@pytest.fixture
def redis(tmp_path):
    """A running redis-server of our own; killed by PID at teardown."""
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("%s is not installed (apt-get install redis-server)" % REDIS_SERVER)
    r = RedisServer(tmp_path)
    try:
        r.start()
        yield r
    finally:
        r.kill()


def _cluster_config(port, backend, admin_port, redis_address, on_error="open", timeout="50ms",
                    workers=2, limit=GLOBAL):
    routes = ("  - { name: api, match: { path_prefix: /api }, upstream: app, rate_limit: global }\n"
              + FREE_ROUTE)
    redis = "redis: { address: \"%s\", timeout: %s, on_error: %s }" % (redis_address, timeout,
                                                                     on_error)
    return _config(port, backend, admin_port, routes, workers=workers, rate_limits=[limit],
                   extra=redis)


def test_cluster_limit_is_shared_by_two_instances(make_portero, backend_factory, redis):
    b = backend_factory()
    ports = [free_port(), free_port()]
    admins = [free_port(), free_port()]
    for port, admin_port in zip(ports, admins):
        make_portero(_cluster_config(port, b, admin_port, redis.address,
                                     timeout="2s"),
                     ports=[port, admin_port])
    statuses, refused, lock = [], [], threading.Lock()

    def client(i):
        for _ in range(4):   # many at once on each instance: replies pipelined per worker
            try:
                r = _request(ports[i % 2], "/api/c")
            except (OSError, ValueError) as e:
                r = e
            with lock:
                statuses.append(getattr(r, "status", repr(r)))
                if getattr(r, "status", None) == 429:
                    refused.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert len(statuses) == 32 and set(statuses) <= {200, 429}, statuses
    passed = statuses.count(200)
    # 10/m, burst 3, one bucket for the route over both instances (one each would pass 6)
    assert 3 <= passed <= _bound(3, 10, 60, elapsed), (statuses, elapsed)
    _assert_429(refused[0], 6)
    assert b.request_count() == passed
    # the bucket lives in Redis under the prefix, with an expiry
    r = Resp(redis.port)
    try:
        keys = r.call("KEYS", "*")
        assert keys == ["portero:global:3:api"], keys
        assert 0 < r.call("PTTL", "portero:global:3:api") <= 20000 + 1000
    finally:
        r.close()

    def counts():
        return [Admin(a).metrics().value("portero_rate_limited_total") for a in admins]

    wait_for(lambda: sum(counts()) >= len(refused), timeout=10)
    assert sum(counts()) == len(refused) and all(c > 0 for c in counts()), counts()
    assert all(Admin(a).metrics().value("portero_redis_errors_total") == 0 for a in admins)


def test_redis_refused_on_error_open_passes_and_counts(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port, dead = free_port(), free_port(), free_port()
    p = make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % dead, on_error="open"),
                     ports=[port, admin_port])
    adm = Admin(admin_port)
    assert adm.metrics().value("portero_redis_errors_total") == 0
    for _ in range(6):   # past the burst of 3: nobody counts, everybody passes
        t0 = time.monotonic()
        r = _request(port, "/api/o")
        assert r.status == 200, r
        assert time.monotonic() - t0 < 5 * SLOW
    assert b.request_count() == 6
    m = adm.settled_metrics("portero_redis_errors_total", 6)
    assert m.value("portero_redis_errors_total") == 6
    assert m.value("portero_rate_limited_total") == 0
    assert wait_for(lambda: "redis" in p.stderr_text().lower(), timeout=5), p.stderr_text()[-2000:]
    assert "127.0.0.1:%d" % dead in p.stderr_text()


def test_reload_that_moves_redis_uses_the_new_one_at_once(make_portero, backend_factory, redis):
    b = backend_factory()
    port, admin_port, dead = free_port(), free_port(), free_port()
    p = make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % dead),
                     ports=[port, admin_port])
    for _ in range(5):   # nothing there: open, and the failed connects put off the next try
        assert _request(port, "/api/m").status == 200
    p.config_path.write_text(_cluster_config(port, b, admin_port, redis.address, timeout="2s"))
    reload_ok(p)
    errors = Admin(admin_port).stable_value("portero_redis_errors_total")
    assert errors >= 5
    # the new address is used (and tried at once: no waiting out the old one's back-off)
    passed, refused, elapsed = _until_refused(port, "/api/m")
    _assert_429(refused, 6)
    assert 3 <= passed <= _bound(3, 10, 60, elapsed), (passed, elapsed)
    assert Admin(admin_port).metrics().value("portero_redis_errors_total") == errors


def test_redis_refused_on_error_closed_answers_503(make_portero, backend_factory):
    b = backend_factory()
    port, admin_port, dead = free_port(), free_port(), free_port()
    make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % dead, on_error="closed"),
                 ports=[port, admin_port])
    for _ in range(3):
        r = _request(port, "/api/c")
        assert r.status == 503, r
        assert b"127.0.0.1" not in r.body
    assert _request(port, "/free").status == 200   # routes without the limit are untouched
    assert [q["target"] for q in b.requests] == ["/free"]
    m = Admin(admin_port).settled_metrics("portero_redis_errors_total", 3)
    assert m.value("portero_redis_errors_total") == 3


class SilentRedis:
    """Accepts connections and reads whatever comes, never answering."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.received = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
                c.setblocking(False)
                self.conns.append(c)
            except socket.timeout:
                pass
            except OSError:
                return
            for c in list(self.conns):
                try:
                    data = c.recv(65536)
                    if not data:
                        self.conns.remove(c)
                        c.close()
                    self.received += len(data)
                except BlockingIOError:
                    pass
                except OSError:
                    self.conns.remove(c)

    def stop(self):
        self.stopped = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_silent_redis_answers_in_bounded_time_and_blocks_no_worker(make_portero, backend_factory):
    b = backend_factory()
    silent = SilentRedis()
    try:
        port, admin_port = free_port(), free_port()
        # one worker: if a Redis wait blocked it, /free would wait too
        make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % silent.port,
                                     on_error="closed", timeout="2s", workers=1),
                     ports=[port, admin_port])
        results = []

        def limited():
            t0 = time.monotonic()
            r = _request(port, "/api/s", timeout=30)
            results.append((r.status, time.monotonic() - t0, time.monotonic()))

        threads = [threading.Thread(target=limited) for _ in range(4)]
        for t in threads:
            t.start()
        # while those wait on Redis, the route without a limit answers at once
        assert wait_for(lambda: silent.received > 0, timeout=5 * SLOW)
        for _ in range(3):
            assert _request(port, "/free").status == 200
        fast_done = time.monotonic()
        for t in threads:
            t.join(30)
        assert len(results) == 4, results
        for status, took, _ in results:
            assert status == 503
            # it did wait for Redis, and not much longer than the timeout
            assert 1.0 <= took <= 2 + 3 * SLOW, results
        # /free was answered while every limited request was still waiting
        assert fast_done < min(done for _, _, done in results), (fast_done, results)
        assert b.request_count() == 3
    finally:
        silent.stop()


def test_cluster_limit_recovers_after_redis_restart(make_portero, backend_factory, redis):
    b = backend_factory()
    port, admin_port = free_port(), free_port()
    # 1/h: no token comes back during the test, however slow the machine (a refill in the
    # middle would turn one of the 429s below into a 200)
    slow = "global: { rate: 1/h, burst: 3, key: route, cluster: true }"
    make_portero(_cluster_config(port, b, admin_port, redis.address, timeout="1s", limit=slow),
                 ports=[port, admin_port])
    adm = Admin(admin_port)
    passed, refused, elapsed = _until_refused(port, "/api/r")
    _assert_429(refused, 3600)
    assert passed == 3
    redis.kill()
    # open: with Redis gone, requests pass and each failure is counted
    for _ in range(4):
        assert _request(port, "/api/r").status == 200
    assert adm.settled_metrics("portero_redis_errors_total", 4).value(
        "portero_redis_errors_total") >= 4
    # a new, empty Redis on the same port (it knows no script: the EVAL fallback runs); once
    # reconnected, the bucket starts full there and empties again
    redis.start()
    # every worker has its own connection, each back after its own reconnect delay: wait until
    # they all enforce the limit again
    assert wait_for(lambda: [_request(port, "/api/r").status for _ in range(4)] == [429] * 4,
                    timeout=30), "the limit never came back after Redis did"
    r = Resp(redis.port)
    try:
        assert r.call("KEYS", "portero:*") == ["portero:global:3:api"]
    finally:
        r.close()
    errors = adm.stable_value("portero_redis_errors_total")
    for _ in range(3):
        assert _request(port, "/api/r").status == 429
    assert adm.metrics().value("portero_redis_errors_total") == errors


def test_requests_abandoned_while_waiting_on_redis(make_portero, backend_factory):
    b = backend_factory()
    silent = SilentRedis()
    try:
        port, admin_port = free_port(), free_port()
        p = make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % silent.port,
                                         on_error="closed", timeout="1s", workers=1),
                         ports=[port, admin_port])
        # clients that give up while their check is still out at Redis
        gone = []
        for _ in range(5):
            c = RawConn(port)
            c.request("GET", "/api/gone")
            gone.append(c)
        assert wait_for(lambda: silent.received > 0, timeout=5 * SLOW)
        for c in gone:
            c.close()
        assert _request(port, "/free").status == 200
        # the engine still answers afterwards, within its timeout
        t0 = time.monotonic()
        assert _request(port, "/api/after").status == 503
        assert time.monotonic() - t0 <= 1 + 3 * SLOW
        # and a shutdown with a check still out at Redis is clean (ASan: no leak, no misuse)
        pending = RawConn(port, timeout=20)
        try:
            pending.request("GET", "/api/pending")
            time.sleep(0.2)
            t0 = time.monotonic()
            assert p.stop(signal.SIGTERM, timeout=20) == 0
            assert time.monotonic() - t0 < 15
        finally:
            pending.close()
        assert b.request_count() == 1
    finally:
        silent.stop()


def test_silent_redis_with_a_short_timeout_fails_open_fast(make_portero, backend_factory):
    b = backend_factory()
    silent = SilentRedis()
    try:
        port, admin_port = free_port(), free_port()
        make_portero(_cluster_config(port, b, admin_port, "127.0.0.1:%d" % silent.port,
                                     on_error="open", timeout="50ms", workers=2),
                     ports=[port, admin_port])
        took = []
        for _ in range(12):   # each waits for its 50 ms at most, then passes
            t0 = time.monotonic()
            assert _request(port, "/api/f").status == 200
            took.append(time.monotonic() - t0)
        assert silent.received > 0          # they did go to the silent "Redis"
        assert max(took) <= 0.05 + 1.5 * SLOW, took
        assert b.request_count() == 12
        m = Admin(admin_port).settled_metrics("portero_redis_errors_total", 12)
        assert m.value("portero_redis_errors_total") == 12
    finally:
        silent.stop()
