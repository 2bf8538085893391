"""HTTP/2 downstream (issue 4, item 2).

Contract (plan of issue 4): HTTP/2 over TLS (ALPN h2) and cleartext with prior knowledge on a
plain listener with `http2: { enabled: true }`. Every stream is an exchange on the HTTP/1.1
machinery, so routing, header rules, rate limits, retries, access log and metrics behave as
for HTTP/1.1 (the same cases run over curl --http1.1 / --http2 / --http2-prior-knowledge).
Flow control follows backpressure (a client that does not read does not make portero buffer
the response). Limits: `http2.max_concurrent_streams` (SETTINGS, excess streams get
RST_STREAM REFUSED_STREAM), header list size (431 or a stream reset, never the process),
`max_resets` client resets (rapid reset, CVE-2023-44487) and `max_control_frames` SETTINGS /
PING / empty DATA / CONTINUATION frames within `flood_window` -> GOAWAY ENHANCE_YOUR_CALM and
close, other connections unaffected. An idle connection is closed (GOAWAY) after
limits.keepalive_timeout. SIGTERM and reloads send GOAWAY; streams in flight complete.
"""

import hashlib
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import hpack
import pytest

from admin_client import Admin, to_yaml, upstream
from conftest import free_port, wait_for
from test_reload import reload_ok
from tlsutil import all_certs, certs, client_context, fetch, tls_listener  # noqa: F401

# --- a raw HTTP/2 client -----------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIO = 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 7, 8, 9, 0xb
S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = 3, 4, 5
BIG_WINDOW = (1 << 31) - 1


def frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + \
        sid.to_bytes(4, "big") + payload


def settings_frame(settings=None, ack=False):
    body = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                    for k, v in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, body)


def window_update(sid, n):
    return frame(WINDOW_UPDATE, 0, sid, n.to_bytes(4, "big"))


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, code.to_bytes(4, "big"))


class Stream:
    def __init__(self):
        self.headers = None       # the final response's headers
        self.interim = []
        self.trailers = None
        self.data = bytearray()
        self.data_len = 0
        self.ended = False
        self.reset = None         # RST_STREAM error code

    @property
    def status(self):
        return int(dict(self.headers)[":status"]) if self.headers else None

    def header(self, name):
        vals = [v for n, v in self.headers or () if n == name]
        return ", ".join(vals) if vals else None

    @property
    def done(self):
        return self.ended or self.reset is not None


class H2:
    """A small HTTP/2 client on a raw socket (or TLS with ALPN h2) that can also send what a
    well-behaved client never would. Frames are read by pump(); the server's SETTINGS and PINGs
    are acknowledged unless auto_ack is False."""

    def __init__(self, port, ctx=None, settings=None, window=True, host="a.test", timeout=15.0,
                 keep_data=True):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if ctx is not None:
            raw = ctx.wrap_socket(raw, server_hostname=host)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.host = host
        self.scheme = "https" if ctx is not None else "http"
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.dec.max_header_list_size = 1 << 24
        self.server_settings = {}
        self.settings_seen = False
        self.goaway = None        # (last_stream_id, error_code)
        self.closed = False
        self.streams = {}
        self.next_sid = 1
        self.auto_ack = True
        self.keep_data = keep_data
        self.frames_in = []       # (type, flags, sid) of every frame received
        self._hblock = None       # (sid, bytearray, end_stream) while a header block is open
        s = dict(settings or {})
        if window:
            s.setdefault(S_INITIAL_WINDOW_SIZE, BIG_WINDOW)
        out = PREFACE + settings_frame(s)
        if window:
            out += window_update(0, BIG_WINDOW - 65535)
        self.send(out)

    # -- sending ---------------------------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def headers_block(self, sid, headers, end_stream=True, end_headers=True):
        block = self.enc.encode(headers)
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, block)

    def request(self, path, method="GET", headers=(), body=None, end_stream=None,
                authority=None, sid=None):
        """Sends a request; returns its stream id. BODY (bytes) goes in one or more DATA frames,
        END_STREAM on the last; END_STREAM=False leaves the stream open for more DATA."""
        if sid is None:
            sid = self.next_sid
        self.next_sid = max(self.next_sid, sid + 2)
        self.streams[sid] = Stream()
        hs = [(":method", method), (":scheme", self.scheme), (":path", path),
              (":authority", authority or self.host)] + list(headers)
        no_body = body is None and end_stream is None
        out = self.headers_block(sid, hs, end_stream=no_body)
        if body is not None:
            out += self.data_frames(sid, body, end_stream=end_stream is not False)
        self.send(out)
        return sid

    def data_frames(self, sid, body, end_stream=True, size=16384):
        out = bytearray()
        pieces = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            out += frame(DATA, END_STREAM if (last and end_stream) else 0, sid, p)
        return bytes(out)

    # -- receiving -------------------------------------------------------------------------------
    def _recv(self, timeout):
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(262144)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
            d = b""
        if not d:
            self.closed = True
            return b""
        self.buf += d
        return d

    def _frame(self):
        if len(self.buf) < 9:
            return None
        n = int.from_bytes(self.buf[:3], "big")
        if len(self.buf) < 9 + n:
            return None
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = bytes(self.buf[9:9 + n])
        del self.buf[:9 + n]
        return ftype, flags, sid, payload

    def _handle(self, ftype, flags, sid, payload):
        self.frames_in.append((ftype, flags, sid))
        st = self.streams.get(sid)
        if ftype == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(payload), 6):
                    self.server_settings[int.from_bytes(payload[i:i + 2], "big")] = \
                        int.from_bytes(payload[i + 2:i + 6], "big")
                self.settings_seen = True
                if self.auto_ack:
                    self._try_send(settings_frame(ack=True))
        elif ftype == PING:
            if not flags & ACK and self.auto_ack:
                self._try_send(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            self.goaway = (int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                           int.from_bytes(payload[4:8], "big"))
        elif ftype == RST_STREAM and st is not None:
            st.reset = int.from_bytes(payload[:4], "big")
        elif ftype == DATA:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if st is not None:
                st.data_len += len(payload)
                if self.keep_data:
                    st.data += payload
                if flags & END_STREAM:
                    st.ended = True
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                if flags & PADDED:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if flags & PRIO:
                    payload = payload[5:]
                self._hblock = (sid, bytearray(payload), bool(flags & END_STREAM))
            else:
                self._hblock[1].extend(payload)
            if flags & END_HEADERS:
                hsid, block, es = self._hblock
                self._hblock = None
                hs = self.dec.decode(bytes(block))
                hst = self.streams.get(hsid)
                if hst is not None:
                    status = dict(hs).get(":status")
                    if status is None:
                        hst.trailers = hs
                    elif status.startswith("1"):
                        hst.interim.append(hs)
                    else:
                        hst.headers = hs
                    if es:
                        hst.ended = True

    def _try_send(self, data):
        try:
            self.send(data)
        except OSError:
            pass

    def pump(self, pred=lambda: False, timeout=15.0):
        """Reads and handles frames until PRED() is true, the connection closes or TIMEOUT
        passes; returns PRED()."""
        deadline = time.monotonic() + timeout
        while True:
            while True:
                f = self._frame()
                if f is None:
                    break
                self._handle(*f)
                if pred():
                    return True
            if pred():
                return True
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                return bool(pred())
            self._recv(min(left, 1.0))

    def response(self, sid, timeout=15.0):
        self.pump(lambda: self.streams[sid].done, timeout)
        return self.streams[sid]

    def wait_closed(self, timeout=15.0):
        return self.pump(lambda: self.closed, timeout)

    def get(self, path, timeout=15.0, **kw):
        return self.response(self.request(path, **kw), timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --- set-up ------------------------------------------------------------------------------------

class Env:
    pass


def start_env(make_portero, backend_factory, certs, *, http2=None, limits=None, access="stdout",
              workers=1):
    """portero with a TLS listener (h2 via ALPN) and a plain one with HTTP/2 enabled (h2c by
    prior knowledge), the admin API, and routes for the shared cases."""
    e = Env()
    e.app = backend_factory("app")
    e.second = backend_factory("second")
    e.tls, e.plain, e.admin_port = free_port(), free_port(), free_port()
    h2 = dict({"enabled": True}, **(http2 or {}))
    retry = upstream(["127.0.0.1:%d" % free_port(), e.second], outlier={"consecutive_failures": 0},
                     retries={"attempts": 2, "budget": 100, "budget_min": 100,
                              "backoff": "1ms", "backoff_max": "5ms"})
    cfg = {
        "workers": workers,
        "log": {"access": access, "format": "json"},
        "admin": {"address": "127.0.0.1:%d" % e.admin_port},
        "listeners": [tls_listener("tls", e.tls, all_certs(certs), http2=h2),
                      {"name": "h2c", "address": "127.0.0.1:%d" % e.plain, "http2": h2}],
        "rate_limits": {"rl": {"rate": "1/m", "burst": 2, "key": "client_ip"}},
        "upstreams": {"app": upstream([e.app]), "retry": retry},
        "routes": [
            {"name": "hosted", "match": {"host": "api.w.test"}, "upstream": "app",
             "request_headers": {"set": {"X-Route": "hosted"}}},
            {"name": "rewritten", "match": {"path_prefix": "/rw/"}, "upstream": "app",
             "request_headers": {"set": {"X-Set": "yes"}, "remove": ["X-Drop"]},
             "response_headers": {"remove": ["X-Powered-By"]}},
            {"name": "limited", "match": {"path_prefix": "/limited"}, "upstream": "app",
             "rate_limit": "rl"},
            {"name": "retry", "match": {"path_prefix": "/retry/"}, "upstream": "retry"},
            {"name": "local", "match": {"path": "/local"},
             "respond": {"status": 200, "body": "local\n"}},
            {"name": "app", "match": {"path_prefix": "/app/"}, "upstream": "app"},
        ],
    }
    if limits:
        cfg["limits"] = limits
    e.p = make_portero(to_yaml(cfg), ports=[e.tls, e.plain, e.admin_port])
    e.certs = certs
    return e


@pytest.fixture
def env(make_portero, backend_factory, certs):
    return start_env(make_portero, backend_factory, certs)


MODES = ["h1-tls", "h2-tls", "h2c"]


def do(e, mode, path, host="a.test", **kw):
    """One curl request in MODE."""
    if mode == "h2c":
        return fetch("http://%s:%d%s" % (host, e.plain, path), resolve_to=(host, e.plain),
                     mode="--http2-prior-knowledge", **kw)
    return fetch("https://%s:%d%s" % (host, e.tls, path), ca=e.certs.ca,
                 resolve_to=(host, e.tls), mode="--http1.1" if mode == "h1-tls" else "--http2",
                 **kw)


def want_version(mode):
    return "1.1" if mode == "h1-tls" else "2"


# --- the same cases over HTTP/1.1 and HTTP/2 ---------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_routing(env, mode):
    r = do(env, mode, "/app/one?x=1")
    assert r.status == 200 and r.version == want_version(mode), r
    j = r.json()
    assert j["path"] == "/app/one" and j["query"] == "x=1"
    assert "x-route" not in j["headers"]
    r = do(env, mode, "/anything", host="api.w.test")
    assert r.status == 200, r
    assert r.json()["headers"]["x-route"] == "hosted"
    assert r.json()["headers"]["host"].startswith("api.w.test")
    r = do(env, mode, "/nowhere")
    assert r.status == 404 and r.body == b"404 Not Found\n", r
    r = do(env, mode, "/local")
    assert r.status == 200 and r.body == b"local\n", r


@pytest.mark.parametrize("mode", MODES)
def test_post_bodies(env, mode):
    small = os.urandom(100000)
    r = do(env, mode, "/app/echo?echo=1", data=small)
    assert r.status == 200 and r.body == small, r
    big = os.urandom(1 << 20)
    r = do(env, mode, "/app/big", data=big)
    assert r.status == 200, r
    assert r.json()["body_len"] == len(big)
    assert r.json()["body_sha256"] == hashlib.sha256(big).hexdigest()


@pytest.mark.parametrize("mode", MODES)
def test_streamed_responses(env, mode):
    r = do(env, mode, "/app/drip?chunked=1&size=3000&drip=0.2&pieces=3")
    assert r.status == 200 and r.body == b"x" * 3000, r
    if mode == "h1-tls":
        assert "chunked" in (r.header("transfer-encoding") or ""), r
    r = do(env, mode, "/app/large?stream=5000000")
    assert r.status == 200 and len(r.body) == 5000000 and r.body == b"x" * 5000000


@pytest.mark.parametrize("mode", MODES)
def test_header_rules(env, mode):
    r = do(env, mode, "/rw/x", headers=[("X-Drop", "1"), ("X-Keep", "2")])
    assert r.status == 200, r
    h = r.json()["headers"]
    assert h["x-set"] == "yes" and h["x-keep"] == "2" and "x-drop" not in h, h
    assert r.header("x-powered-by") is None, r
    r = do(env, mode, "/app/x")
    assert r.header("x-powered-by") == "test", r


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit(env, mode):
    codes = [do(env, mode, "/limited/%d" % i).status for i in range(3)]
    assert codes == [200, 200, 429], codes


@pytest.mark.parametrize("mode", MODES)
def test_retry_on_second_server(env, mode):
    for i in range(4):
        r = do(env, mode, "/retry/%d" % i)
        assert r.status == 200 and r.json()["backend"] == "second", r
    assert env.second.request_count() == 4


@pytest.mark.parametrize("mode", MODES)
def test_access_log_and_metrics(env, mode):
    import json
    adm = Admin(env.admin_port)
    before = adm.metrics().value("portero_requests_total", route="app")
    path = "/app/logged-%s" % mode
    r = do(env, mode, path)
    assert r.status == 200, r
    m = adm.settled_metrics("portero_requests_total", before + 1, route="app")
    assert m.value("portero_requests_total", route="app", class_="2xx") == before + 1

    def entry():
        for line in env.p.stdout_text().splitlines():
            if path in line:
                return json.loads(line)
        return None
    e = wait_for(entry, timeout=10)
    assert e, env.p.stdout_text()[-2000:]
    assert e["status"] == 200 and e["target"] == path and e["method"] == "GET", e
    assert e["route"] == "app"
    assert e["protocol"] == ("HTTP/1.1" if mode == "h1-tls" else "HTTP/2.0"), e


# --- tools: nghttp, h2load ---------------------------------------------------------------------

@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_nghttp(env, tls):
    url = ("https://127.0.0.1:%d/app/ng" if tls else "http://127.0.0.1:%d/app/ng") % (
        env.tls if tls else env.plain)
    r = subprocess.run(["nghttp", "-nv", "-H", ":authority: a.test", url], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", r.stdout), r.stdout[-3000:]
    assert "recv SETTINGS frame" in r.stdout
    assert "recv GOAWAY" not in r.stdout, r.stdout[-3000:]


def _h2load(args, timeout=120):
    r = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=timeout)
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", r.stdout)
    assert m, r.stdout[-3000:] + r.stderr[-2000:]
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", r.stdout)
    return [int(x) for x in m.groups()], [int(x) for x in codes.groups()], r.stdout


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "h2c"])
def test_h2load_smoke(env, tls):
    port = env.tls if tls else env.plain
    scheme = "https" if tls else "http"
    # through the backend over TLS, a local answer over h2c (the Python backend is slow)
    path = "/app/load" if tls else "/local"
    counts, codes, out = _h2load(["-n", "2000", "-c", "10", "-m", "10",
                                  "%s://127.0.0.1:%d%s" % (scheme, port, path)])
    assert counts == [2000, 2000, 2000, 2000, 0, 0, 0], out[-2000:]
    assert codes == [2000, 0, 0, 0], out[-2000:]
    assert env.p.running()


# --- Python clients: streams and flow control --------------------------------------------------

def test_many_concurrent_streams_h2_library(env):
    """100 streams at once on one TLS connection, with the h2 library as a strict client."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    ctx = client_context(env.certs, alpn=["h2"])
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", env.tls), timeout=20),
                           server_hostname="a.test")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    conn.increment_flow_control_window(1 << 24)
    sids = []
    for i in range(100):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                (":authority", "a.test"), (":path", "/app/c%d?delay=0.3" % i)],
                          end_stream=True)
        sids.append(sid)
    sock.sendall(conn.data_to_send())
    status, bodies, ended = {}, {}, set()
    deadline = time.monotonic() + 30
    try:
        while len(ended) < len(sids) and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status[ev.stream_id] = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended.add(ev.stream_id)
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise AssertionError("unexpected %r" % ev)
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    assert ended == set(sids)
    assert all(status[s] == "200" for s in sids), status
    for i, s in enumerate(sids):
        assert b'"/app/c%d"' % i in bodies[s]
    assert env.app.max_active > 10, env.app.max_active


def test_request_body_without_length_and_trailers(env):
    """A request body of unknown length reaches the backend whole (chunked), with the client's
    trailers."""
    c = H2(env.plain)
    try:
        assert c.pump(lambda: c.settings_seen, 10)
        # within the initial windows (65,535 bytes for the connection): no WINDOW_UPDATE needed
        parts = [os.urandom(5000), os.urandom(50000), os.urandom(3)]
        sid = c.request("/app/up", method="POST", end_stream=False,
                        headers=[("te", "trailers")])
        for p in parts:
            c.send(c.data_frames(sid, p, end_stream=False))
        c.send(c.headers_block(sid, [("x-checksum", "abc")], end_stream=True))
        st = c.response(sid)
        assert st.status == 200, (st.headers, st.reset)
    finally:
        c.close()
    body = b"".join(parts)
    req = env.app.requests[-1]
    assert req["body_len"] == len(body) and req["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert ("x-checksum", "abc") in [(n.lower(), v) for n, v in req["trailers"]], req


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_flow_control_slow_reader(env):
    """A client with a 16 KiB stream window that stops reading: portero sends no more than the
    window and does not buffer the 48 MiB response (RSS grows far less); once the client opens
    its window the whole response arrives."""
    size = 48 << 20
    window = 16384
    c = H2(env.plain, settings={S_INITIAL_WINDOW_SIZE: window}, window=False, keep_data=False)
    try:
        assert c.get("/local").status == 200            # warm: the connection is set up
        rss0 = _rss_kib(env.p.pid)
        sid = c.request("/app/big?stream=%d" % size)
        st = c.streams[sid]
        c.pump(lambda: st.data_len >= window, timeout=15)
        time.sleep(2.0)                                  # the backend pushes as far as it can
        c.pump(timeout=0.5)
        assert st.data_len <= window, st.data_len
        grown = _rss_kib(env.p.pid) - rss0
        assert grown < 16 * 1024, "portero RSS grew by %d KiB" % grown
        c.send(window_update(sid, BIG_WINDOW - window) + window_update(0, BIG_WINDOW - 65535))
        assert c.pump(lambda: st.done, timeout=60), st.data_len
        assert st.status == 200 and st.ended and st.data_len == size, (st.data_len, st.reset)
    finally:
        c.close()


def test_max_concurrent_streams(make_portero, backend_factory, certs):
    """The limit is announced in SETTINGS; a stream beyond it, opened before the client
    acknowledged those SETTINGS (as a client racing the server's preface does), is refused
    with RST_STREAM REFUSED_STREAM (RFC 9113 §5.1.2, §8.7) and the others are served."""
    e = start_env(make_portero, backend_factory, certs, http2={"max_concurrent_streams": 4},
                  access="off")
    c = H2(e.plain)
    try:
        c.auto_ack = False
        assert c.pump(lambda: c.settings_seen, 10)
        assert c.server_settings.get(S_MAX_CONCURRENT_STREAMS) == 4, c.server_settings
        sids = [c.request("/app/slow%d?delay=1" % i) for i in range(5)]
        c.send(settings_frame(ack=True))
        c.auto_ack = True
        c.pump(lambda: all(c.streams[s].done for s in sids), timeout=20)
        sts = [c.streams[s] for s in sids]
        assert [s.status for s in sts[:4]] == [200] * 4, (
            [(s.status, s.reset) for s in sts], c.goaway, c.closed, c.frames_in[-20:])
        assert sts[4].reset == REFUSED_STREAM and sts[4].status is None, sts[4].__dict__
        assert c.get("/app/after").status == 200         # the connection carries on
        assert c.goaway is None
    finally:
        c.close()
    assert e.app.request_count() == 5                    # 4 + /app/after


def test_max_concurrent_streams_exceeded_after_ack(make_portero, backend_factory, certs):
    """A client that ignores the acknowledged limit: the excess stream is refused (stream
    error), or the connection is ended with GOAWAY and closed at once (nghttp2 treats it as a
    connection error) — never left hanging; other connections are unaffected."""
    e = start_env(make_portero, backend_factory, certs, http2={"max_concurrent_streams": 4},
                  access="off")
    c = H2(e.plain)
    by = H2(e.plain)
    try:
        assert c.pump(lambda: c.settings_seen, 10)
        c.pump(timeout=0.3)                               # our ACK is sent and read
        sids = [c.request("/app/slow%d?delay=1" % i) for i in range(5)]
        c.pump(lambda: c.closed or all(c.streams[s].done for s in sids), timeout=15)
        if c.goaway is None:
            assert c.streams[sids[4]].reset in (REFUSED_STREAM, PROTOCOL_ERROR)
            assert [c.streams[s].status for s in sids[:4]] == [200] * 4
        else:
            assert c.goaway[1] == PROTOCOL_ERROR and c.goaway[0] < sids[4], c.goaway
            assert c.wait_closed(timeout=5), (
                "GOAWAY %r sent but the connection stays open; streams %r"
                % (c.goaway, [(c.streams[s].status, c.streams[s].reset) for s in sids]))
        assert by.get("/local").status == 200
    finally:
        c.close()
        by.close()


@pytest.mark.parametrize("kind", ["bytes", "count"])
def test_header_list_too_large(env, kind):
    if kind == "bytes":
        big = [("x-big-%d" % i, "v" * 2000) for i in range(60)]       # ~120 KB
    else:
        big = [("x-many-%d" % i, "v") for i in range(300)]
    c = H2(env.plain)
    try:
        # the block is sent in pieces: HEADERS then CONTINUATION frames
        block = c.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/app/huge"),
                              (":authority", "a.test")] + big)
        c.streams[1] = Stream()
        pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        out = bytearray()
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            out += frame(HEADERS if i == 0 else CONTINUATION,
                         (END_STREAM if i == 0 else 0) | (END_HEADERS if last else 0), 1, p)
        c.next_sid = 3
        c.send(bytes(out))
        st = c.response(1)
        assert st.status == 431 or st.reset is not None, (st.headers, st.reset, c.goaway)
        assert env.app.request_count() == 0
        assert c.goaway is None and not c.closed, c.goaway
        assert c.get("/app/next").status == 200
    finally:
        c.close()
    assert env.p.running()


# --- defences ----------------------------------------------------------------------------------

def _victim_and_bystander(e, window=True):
    """(attacker connection, bystander connection that has done one request)."""
    by = H2(e.plain)
    assert by.get("/local").status == 200
    att = H2(e.plain, window=window)
    assert att.pump(lambda: att.settings_seen, 10)
    return att, by


def _bystander_fine(e, by):
    st = by.get("/app/after")
    assert st.status == 200, (st.headers, st.reset, by.goaway, by.closed)
    fresh = H2(e.plain)
    try:
        assert fresh.get("/local").status == 200
    finally:
        fresh.close()
    assert e.p.running()


def _flood(att, chunks):
    """Sends CHUNKS (an iterable of bytes), reading what comes back as it goes, until portero
    closes the connection. Returns True if it did within the time allowed."""
    deadline = time.monotonic() + 20
    for data in chunks:
        try:
            att.send(data)
        except OSError:
            break
        att.pump(timeout=0.01)
        if att.closed or time.monotonic() > deadline:
            break
    return att.wait_closed(timeout=10)


def test_rapid_reset(env):
    att, by = _victim_and_bystander(env)
    try:
        def batches():
            sid = 1
            for _ in range(40):
                out = bytearray()
                for _ in range(25):
                    out += att.headers_block(sid, [(":method", "GET"), (":scheme", "http"),
                                                   (":path", "/app/rr"), (":authority", "a.test")])
                    out += rst_stream(sid, CANCEL)
                    sid += 2
                yield bytes(out)
        assert _flood(att, batches()), "portero kept the connection open"
        assert att.goaway is not None and att.goaway[1] == ENHANCE_YOUR_CALM, att.goaway
        _bystander_fine(env, by)
    finally:
        att.close()
        by.close()
    # far fewer than the 1000 requests reached the backend
    assert env.app.request_count() < 1000


@pytest.mark.parametrize("kind", ["settings", "ping", "empty-data", "continuation",
                                  "window-update", "priority"])
def test_control_frame_floods(env, kind):
    # WINDOW_UPDATE 1 x 10,000 must not overflow the connection window: start from 65,535
    att, by = _victim_and_bystander(env, window=kind != "window-update")
    try:
        if kind == "settings":
            chunk = settings_frame({}) * 100
        elif kind == "ping":
            chunk = frame(PING, 0, 0, b"12345678") * 100
        elif kind == "window-update":
            chunk = window_update(0, 1) * 100
        elif kind == "priority":
            chunk = frame(PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10") * 100
        elif kind == "empty-data":
            att.request("/app/sink?delay=5", method="POST", end_stream=False)
            chunk = frame(DATA, 0, 1, b"") * 100
        else:
            block = att.enc.encode([(":method", "GET"), (":scheme", "http"),
                                    (":path", "/app/cont"), (":authority", "a.test")])
            att.send(frame(HEADERS, END_STREAM, 1, block))      # no END_HEADERS
            chunk = frame(CONTINUATION, 0, 1, b"") * 100
        assert _flood(att, (chunk for _ in range(100))), "portero kept the connection open"
        if att.goaway is not None and kind != "continuation":
            assert att.goaway[1] == ENHANCE_YOUR_CALM, att.goaway
        _bystander_fine(env, by)
    finally:
        att.close()
        by.close()


def test_idle_connection_closed_with_goaway(make_portero, backend_factory, certs):
    e = start_env(make_portero, backend_factory, certs, limits={"keepalive_timeout": "1s"},
                  access="off")
    c = H2(e.plain)
    try:
        assert c.get("/local").status == 200
        t0 = time.monotonic()
        assert c.wait_closed(timeout=15), "idle connection still open"
        assert time.monotonic() - t0 >= 0.5
        assert c.goaway is not None and c.goaway[1] == NO_ERROR, c.goaway
    finally:
        c.close()


def _in_flight(e):
    c = H2(e.plain)
    sid = c.request("/app/slow?delay=2&size=100000")
    assert wait_for(lambda: e.app.active > 0, timeout=10)
    return c, sid


def test_goaway_on_sigterm_stream_completes(make_portero, backend_factory, certs):
    e = start_env(make_portero, backend_factory, certs, access="off")
    c, sid = _in_flight(e)
    try:
        e.p.proc.send_signal(signal.SIGTERM)
        assert c.pump(lambda: c.goaway is not None, timeout=10), "no GOAWAY"
        assert c.goaway[0] >= sid and c.goaway[1] == NO_ERROR, c.goaway
        st = c.response(sid, timeout=20)
        assert st.status == 200 and st.ended and len(st.data) == 100000, (st.status, st.reset)
        assert c.wait_closed(timeout=15)
    finally:
        c.close()
    assert e.p.wait(30) == 0


def test_goaway_on_reload_stream_completes(make_portero, backend_factory, certs):
    e = start_env(make_portero, backend_factory, certs, access="off")
    c, sid = _in_flight(e)
    try:
        reload_ok(e.p)
        assert c.pump(lambda: c.goaway is not None, timeout=10), "no GOAWAY after a reload"
        assert c.goaway[0] >= sid and c.goaway[1] == NO_ERROR, c.goaway
        st = c.response(sid, timeout=20)
        assert st.status == 200 and st.ended and len(st.data) == 100000, (st.status, st.reset)
        assert c.wait_closed(timeout=15)
    finally:
        c.close()
    # new connections work on the new configuration
    c2 = H2(e.plain)
    try:
        assert c2.get("/local").status == 200
    finally:
        c2.close()


def test_h2_over_tls_raw(env):
    """The raw client over TLS + ALPN h2 (the defences above run over h2c)."""
    c = H2(env.tls, ctx=client_context(env.certs, alpn=["h2"]))
    try:
        st = c.get("/app/tls-raw")
        assert st.status == 200 and b"/app/tls-raw" in st.data
        assert c.server_settings.get(S_MAX_CONCURRENT_STREAMS) == 128, c.server_settings
    finally:
        c.close()
