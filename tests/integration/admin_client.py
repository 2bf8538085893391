"""Helpers for the failover / live-change tests (issue 3): a small admin API client, a
Prometheus text parser, a config builder and a steady client load generator.

    cfg = build_config(port, {"app": upstream([a, b], health_check={...})}, admin_port=ap)
    p = make_portero(to_yaml(cfg), ports=[port, ap])
    adm = Admin(ap)
    adm.server("app", a.address)["health"]      # "up" | "down" | "ejected" | "draining"
    m = adm.metrics();  m.value("portero_requests_total", route="ok", class_="2xx")

Configs are plain Python dicts in the file's schema, so the same object can be written as
YAML (`to_yaml`) for the file or sent as JSON to PUT /config.
"""

import http.client
import json
import re
import socket
import threading
import time

ADMIN_TIMEOUT = 20.0


# ---------------------------------------------------------------------------------------------
# Config building

def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def to_yaml(obj, indent=0):
    """Block-style YAML for a dict of dicts; lists of mappings and nested values inside list
    items are written in JSON flow style (valid YAML). One key per line, so an error position
    points at a predictable line."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, list) and v:
                lines.append("%s%s:" % (pad, k))
                for item in v:
                    if isinstance(item, (dict, list)):
                        lines.append("%s  - %s" % (pad, json.dumps(item)))
                    else:
                        lines.append("%s  - %s" % (pad, _scalar(item)))
            elif isinstance(v, dict):
                lines.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                lines.append("%s%s: []" % (pad, k))
            else:
                lines.append("%s%s: %s" % (pad, k, _scalar(v)))
        return "\n".join(lines) + ("\n" if indent == 0 else "")
    raise TypeError("to_yaml wants a dict at the top")


def addr_of(s):
    return s.address if hasattr(s, "address") else str(s)


def upstream(servers, **opts):
    """An upstream mapping: SERVERS are Backends, "host:port" strings, (server, weight) pairs or
    ready dicts; OPTS are extra upstream keys (health_check=dict, retries=dict, ...)."""
    out = []
    for s in servers:
        if isinstance(s, dict):
            out.append(s)
        elif isinstance(s, tuple):
            out.append({"address": addr_of(s[0]), "weight": s[1]})
        else:
            out.append({"address": addr_of(s)})
    u = {"servers": out}
    u.update(opts)
    return u


def build_config(port, upstreams, *, admin_port=None, token=None, routes=None, workers=1,
                 listeners=None, access_log="off", extra=None):
    """A config dict: listener `web` on 127.0.0.1:PORT (or LISTENERS, a list of
    (name, port)), UPSTREAMS {name: upstream(...)}, ROUTES (list of dicts; default one
    catch-all route to the first upstream), admin on 127.0.0.1:ADMIN_PORT ("off" if None)."""
    cfg = {"workers": workers, "log": {"access": access_log}}
    admin = {"address": "127.0.0.1:%d" % admin_port if admin_port else "off"}
    if token:
        admin["token"] = token
    cfg["admin"] = admin
    if listeners is None:
        listeners = [("web", port)]
    cfg["listeners"] = [{"name": n, "address": "127.0.0.1:%d" % p} for n, p in listeners]
    if upstreams:
        cfg["upstreams"] = upstreams
    if routes is None:
        first = next(iter(upstreams))
        routes = [{"match": {"path_prefix": "/"}, "upstream": first}]
    cfg["routes"] = routes
    if extra:
        cfg.update(extra)
    return cfg


def fast_checks(**over):
    """Active HTTP checks every 200 ms, rise 2 / fall 2 (tests want quick verdicts)."""
    hc = {"type": "http", "path": "/healthz", "interval": "200ms", "timeout": "500ms",
          "rise": 2, "fall": 2}
    hc.update(over)
    return hc


NO_OUTLIER = {"consecutive_failures": 0}


# ---------------------------------------------------------------------------------------------
# Admin client

class AdminResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<AdminResponse %d %r>" % (self.status, self.body[:300])


class Admin:
    """Client of the admin API on 127.0.0.1:PORT. One new connection per call."""

    def __init__(self, port, token=None, host="127.0.0.1"):
        self.port = port
        self.host = host
        self.token = token

    def request(self, method, path, body=None, token=Ellipsis, headers=None):
        """METHOD PATH with BODY (dict/list -> JSON, str/bytes as is). TOKEN=None sends no
        Authorization header; the default sends self.token when set."""
        h = dict(headers or {})
        tok = self.token if token is Ellipsis else token
        if tok is not None:
            h["Authorization"] = "Bearer %s" % tok
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        c = http.client.HTTPConnection(self.host, self.port, timeout=ADMIN_TIMEOUT)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return AdminResponse(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def patch(self, path, body=None, **kw):
        return self.request("PATCH", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def ok_json(self, method, path, body=None):
        r = self.request(method, path, body=body)
        assert r.status == 200, (method, path, r)
        return r.json()

    # -- views -------------------------------------------------------------------------------
    def upstreams(self):
        return self.ok_json("GET", "/upstreams")["upstreams"]

    def upstream(self, name):
        for u in self.upstreams():
            if u["name"] == name:
                return u
        raise KeyError(name)

    def servers(self, name):
        return {s["address"]: s for s in self.upstream(name)["servers"]}

    def server(self, name, address):
        """The server entry, or None if the upstream lists no such server."""
        return self.servers(name).get(addr_of(address))

    def health(self, name, address):
        s = self.server(name, address)
        return s["health"] if s else None

    def wait_health(self, name, address, want, timeout=15.0):
        """Polls until the server's health is WANT (a string or a tuple of accepted values).
        Returns the last value seen."""
        if isinstance(want, str):
            want = (want,)
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.health(name, address)
            except (OSError, http.client.HTTPException, AssertionError, KeyError) as e:
                last = "error: %r" % e
            if last in want or time.monotonic() >= deadline:
                return last
            time.sleep(0.05)

    def metrics(self):
        r = self.get("/metrics")
        assert r.status == 200, r
        return Metrics(r.text)

    def settled_metrics(self, name, at_least, timeout=10.0, **labels):
        """Metrics once NAME{LABELS} reaches AT_LEAST (workers bump counters just after the
        response is written, so a scrape right after a response may be a moment behind), or
        the last scrape at TIMEOUT. Assert the exact value on what it returns."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m.value(name, **labels) >= at_least or time.monotonic() >= deadline:
                return m
            time.sleep(0.05)

    def stable_value(self, name, timeout=10.0, settle=0.3, **labels):
        """The value of NAME{LABELS} once two scrapes SETTLE seconds apart agree."""
        deadline = time.monotonic() + timeout
        last = self.metrics().value(name, **labels)
        while True:
            time.sleep(settle)
            v = self.metrics().value(name, **labels)
            if v == last or time.monotonic() >= deadline:
                return v
            last = v

    def config_status(self):
        return self.ok_json("GET", "/config/status")


def wait_admin(port, timeout=15.0):
    """True once something accepts connections on the admin port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# Prometheus text format

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v):
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


class Metrics:
    """Parsed exposition: samples as (name, labels dict, value); TYPE lines kept."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3]
                continue
            m = _SAMPLE.match(line)
            if not m:
                raise ValueError("bad metrics line: %r" % line)
            name, _, body, value = m.group(1), m.group(2), m.group(3), m.group(4)
            labels = {}
            if body:
                pos = 0
                while pos < len(body):
                    lm = _LABEL.match(body, pos)
                    if not lm:
                        raise ValueError("bad labels in: %r" % line)
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            self.samples.append((name, labels, float(value)))

    def select(self, name, **labels):
        """Samples of NAME whose labels include LABELS (a trailing _ on a key is dropped, so
        class_="2xx" means class="2xx")."""
        want = {k.rstrip("_"): str(v) for k, v in labels.items()}
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == x for k, x in want.items())]

    def value(self, name, **labels):
        """Sum of the matching samples (0.0 when none match)."""
        return sum(v for _, v in self.select(name, **labels))

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)

    def names(self):
        return sorted({n for n, _, _ in self.samples})


# ---------------------------------------------------------------------------------------------
# Steady load

class Load:
    """THREADS client threads sending GET PATH to 127.0.0.1:PORT until stop(). Each thread keeps
    one keep-alive connection (http.client), except with fresh=True, where every request opens
    a new connection (to see refused connections). Records every outcome."""

    def __init__(self, port, threads=4, path="/load", fresh=False, timeout=20.0, pause=0.0):
        self.port = port
        self.path = path
        self.fresh = fresh
        self.timeout = timeout
        self.pause = pause
        self.lock = threading.Lock()
        self.ok = 0
        self.statuses = {}
        self.failures = []        # (time, description)
        self.by_backend = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self, join_timeout=60.0):
        self._stop.set()
        for t in self._threads:
            t.join(join_timeout)
        return self

    @property
    def total(self):
        with self.lock:
            return self.ok + len(self.failures)

    def _record(self, status=None, backend=None, error=None):
        with self.lock:
            if error is not None:
                self.failures.append((time.monotonic(), error))
                return
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200:
                self.ok += 1
                if backend:
                    self.by_backend[backend] = self.by_backend.get(backend, 0) + 1
            else:
                self.failures.append((time.monotonic(), "status %s" % status))

    def _run(self, idx):
        conn = None
        n = 0
        while not self._stop.is_set():
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "%s?t=%d&n=%d" % (self.path, idx, n))
                r = conn.getresponse()
                data = r.read()
                backend = None
                if r.status == 200:
                    try:
                        backend = json.loads(data).get("backend")
                    except ValueError:
                        pass
                self._record(status=r.status, backend=backend)
                if self.fresh or r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except ConnectionRefusedError as e:
                self._record(error="refused: %r" % e)
                conn.close()
                conn = None
            except (OSError, http.client.HTTPException) as e:
                # A keep-alive connection the proxy closed while idle is not a failed request
                # only if nothing was sent; http.client cannot tell us, so count it.
                self._record(error="%s: %r" % (type(e).__name__, e))
                conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


def launch(make_portero, cfg, *, token=None):
    """Writes CFG (a build_config dict) and starts portero; waits for every listener and the
    admin port. Returns (portero, Admin or None)."""
    ports = [int(l["address"].rsplit(":", 1)[1]) for l in cfg["listeners"]]
    admin_port = None
    if cfg.get("admin", {}).get("address", "off") != "off":
        admin_port = int(cfg["admin"]["address"].rsplit(":", 1)[1])
        ports.append(admin_port)
    p = make_portero(to_yaml(cfg), ports=ports)
    return p, (Admin(admin_port, token=token or cfg["admin"].get("token"))
               if admin_port else None)


def get(port, path="/", timeout=20.0, headers=None, method="GET", body=None):
    """One request on a new connection: (status, parsed JSON body or raw bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data
    finally:
        c.close()


def listening_ports(pid):
    """The TCP ports process PID listens on (IPv4 and IPv6), from /proc."""
    import os
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports
