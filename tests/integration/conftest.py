"""Shared fixtures for portero's integration tests.

The tests run the real binary ($PORTERO_BIN, default <repo>/build/portero) with a config
written by the test, in front of real backends (backends.Backend) and real clients.

Fixtures
    repo_root        pathlib.Path of the repository
    make_portero     factory: make_portero(config_text, ports=None, expect_start=True,
                     extra_args=()) -> Portero
    backend_factory  factory: start_backend(name=None, **opts) -> backends.Backend
Helpers (import them: `from conftest import free_port, wait_for`)
    free_port()      a TCP port on 127.0.0.1 that was free a moment ago
    wait_for(pred, timeout=10, interval=0.05) -> bool   bounded polling loop

When the environment sets PORTERO_ASAN, every portero started with expect_start=True must
exit 0 at teardown, and no portero's output may contain sanitizer reports: that is how
AddressSanitizer / LeakSanitizer / UBSan findings fail the suite.
"""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from backends import Backend

socket.setdefaulttimeout(30)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PORTERO_BIN = os.environ.get("PORTERO_BIN") or str(REPO_ROOT / "build" / "portero")
ASAN = bool(os.environ.get("PORTERO_ASAN"))
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")
START_TIMEOUT = 15.0


def free_port():
    """A port on 127.0.0.1 that was free when we asked (bind to 0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_for(pred, timeout=10.0, interval=0.05):
    """Polls pred() until it returns a truthy value or timeout seconds pass. Returns the last
    value of pred() (truthy on success)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Portero:
    """A running (or exited) portero process."""

    def __init__(self, proc, config_path, stdout_path, stderr_path, expect_start):
        self.proc = proc
        self.config_path = config_path
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.expect_start = expect_start
        self.returncode = None
        self.asan_check = True   # a test that kills portero on purpose may set this False

    @property
    def pid(self):
        return self.proc.pid

    def stderr_text(self):
        try:
            return pathlib.Path(self.stderr_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            return pathlib.Path(self.stdout_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self):
        return self.proc.poll() is None

    def wait(self, timeout=20):
        """Waits for exit; returns the return code (None if still running after timeout)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Sends SIG and waits up to TIMEOUT s; SIGKILL after that. Returns the return code."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = self.proc.returncode
                self.killed = True
                return self.returncode
        self.returncode = self.proc.returncode
        return self.returncode


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture
def make_portero(tmp_path):
    started = []
    counter = [0]

    def factory(config_text, ports=None, expect_start=True, extra_args=()):
        counter[0] += 1
        n = counter[0]
        cfg = tmp_path / ("portero%d.yaml" % n)
        cfg.write_text(config_text)
        out = tmp_path / ("portero%d.stdout" % n)
        err = tmp_path / ("portero%d.stderr" % n)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen([PORTERO_BIN, "-c", str(cfg), *extra_args],
                                    stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                    cwd=str(tmp_path))
        p = Portero(proc, cfg, out, err, expect_start)
        started.append(p)
        if expect_start:
            deadline = time.monotonic() + START_TIMEOUT
            for port in ports or ():
                while not port_open(port):
                    if proc.poll() is not None:
                        pytest.fail("portero exited early with %s; stderr:\n%s"
                                    % (proc.returncode, p.stderr_text()))
                    if time.monotonic() > deadline:
                        pytest.fail("portero did not listen on %d within %ss; stderr:\n%s"
                                    % (port, START_TIMEOUT, p.stderr_text()))
                    time.sleep(0.05)
        return p

    yield factory

    problems = []
    for p in started:
        rc = p.stop(signal.SIGTERM, timeout=20)
        if not ASAN or not p.asan_check:
            continue
        text = p.stderr_text() + p.stdout_text()
        bad = [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]
        if bad:
            problems.append("sanitizer report (pid %d):\n%s\n--- full stderr ---\n%s"
                            % (p.pid, "\n".join(bad), p.stderr_text()[-20000:]))
        elif p.expect_start and rc != 0:
            problems.append("portero pid %d exited with %s at teardown; stderr tail:\n%s"
                            % (p.pid, rc, p.stderr_text()[-5000:]))
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def backend_factory():
    backends = []

    def start_backend(name=None, **opts):
        b = Backend(name=name or "b%d" % (len(backends) + 1), **opts)
        backends.append(b)
        return b

    yield start_backend
    for b in backends:
        b.stop()


# ---------------------------------------------------------------------------------------------
# Helpers shared by the tests (import them from conftest).

def proxy_config(port, servers, *, balance=None, hash_key=None, routes=None, workers=1,
                 log="{ access: off }", limits=None, forwarding=None, keepalive=None,
                 timeouts=None, extra=""):
    """YAML for one listener on 127.0.0.1:PORT, one upstream `app` with SERVERS (Backends,
    "host:port" strings or (address, weight) pairs) and, unless ROUTES (YAML text of the
    `routes:` list items) is given, one catch-all route to `app`. Flow-style mappings such as
    LIMITS are written as YAML text, e.g. limits="{ header_timeout: 1s }"."""
    lines = ["workers: %d" % workers, "log: %s" % log]
    if limits:
        lines.append("limits: %s" % limits)
    if forwarding:
        lines.append("forwarding: %s" % forwarding)
    lines += ["listeners:", '  - { name: web, address: "127.0.0.1:%d" }' % port]
    if servers:
        lines += ["upstreams:", "  app:"]
        if balance:
            lines.append("    balance: %s" % balance)
        if hash_key:
            lines.append('    hash_key: "%s"' % hash_key)
        if keepalive:
            lines.append("    keepalive: %s" % keepalive)
        if timeouts:
            lines.append("    timeouts: %s" % timeouts)
        lines.append("    servers:")
        for s in servers:
            weight = None
            if isinstance(s, tuple):
                s, weight = s
            addr = s.address if hasattr(s, "address") else s
            if weight is None:
                lines.append('      - { address: "%s" }' % addr)
            else:
                lines.append('      - { address: "%s", weight: %d }' % (addr, weight))
    lines.append("routes:")
    if routes is None:
        routes = "  - match: { path_prefix: / }\n    upstream: app\n"
    lines.append(routes.rstrip("\n"))
    if extra:
        lines.append(extra.rstrip("\n"))
    return "\n".join(lines) + "\n"


class RawResponse:
    def __init__(self, version, status, reason, headers, body, interim):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # list of (name, value) in order
        self.body = body
        self.interim = interim      # list of RawResponse for 1xx answers before this one

    def header(self, name):
        """Comma-joined values of NAME (case-insensitive), or None."""
        vals = [v for n, v in self.headers if n.lower() == name.lower()]
        return ", ".join(vals) if vals else None

    def header_list(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<RawResponse %s %s %r body=%r>" % (self.status, self.reason, self.headers,
                                                   self.body[:200])


class ConnectionClosed(Exception):
    pass


class RawConn:
    """A client connection on a raw socket, for exact bytes and keep-alive checks."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def request(self, method, target, headers=(), body=b"", host="test.local", version="1.1"):
        """Sends one request (Content-Length framing when BODY is given)."""
        lines = ["%s %s HTTP/%s" % (method, target, version)]
        if host is not None:
            lines.append("Host: %s" % host)
        lines += ["%s: %s" % hv for hv in headers]
        if body:
            lines.append("Content-Length: %d" % len(body))
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionClosed("connection closed by peer")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise ValueError("line too long")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        line = self._line()
        version, status, reason = (line.decode("latin-1").split(" ", 2) + [""])[:3]
        headers = []
        while True:
            h = self._line()
            if not h:
                break
            n, _, v = h.decode("latin-1").partition(":")
            headers.append((n, v.strip()))
        return version, int(status), reason, headers

    def read_response(self, method="GET"):
        """Reads one response (skipping and keeping 1xx answers other than 101)."""
        interim = []
        while True:
            version, status, reason, headers = self.read_head()
            r = RawResponse(version, status, reason, headers, b"", interim)
            if 100 <= status < 200 and status != 101:
                interim.append(r)
                continue
            break
        if method == "HEAD" or status in (204, 304) or status == 101 or \
                (100 <= status < 200):
            return r
        te = r.header("Transfer-Encoding")
        cl = r.header("Content-Length")
        if te and te.lower().endswith("chunked"):
            body = []
            while True:
                size = int(self._line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body.append(self._exact(size))
                if self._exact(2) != b"\r\n":
                    raise ValueError("bad chunk terminator")
            r.body = b"".join(body)
        elif cl is not None:
            r.body = self._exact(int(cl))
        else:
            r.body = self.read_until_close()
        return r

    def read_until_close(self, timeout=None):
        """Everything until the peer closes (bounded by the socket timeout)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        chunks = [self.buf]
        self.buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def closed_by_peer(self, timeout=10.0):
        """True if the peer closes (EOF or reset) within TIMEOUT without sending anything more;
        False if it stays open. Raises AssertionError if it sends data."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if data:
            raise AssertionError("unexpected data instead of a close: %r" % data[:200])
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def url(port, path="/"):
    return "http://127.0.0.1:%d%s" % (port, path)
