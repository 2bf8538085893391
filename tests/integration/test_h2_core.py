"""HTTP/2 towards clients: how a stream is bridged to the HTTP/1.1 exchange (h2_server,
h2_stream, h2_bridge). Cleartext h2 with prior knowledge, driven by the Python `h2` library, in
front of the HTTP/1.1 test backend. (test_http2.py covers the client matrix, limits and
defences; this file covers the bridge's own semantics.)"""

import json
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import free_port

NO_ERROR = 0


def config(port, backend, limits="{ keepalive_timeout: 30s, header_timeout: 2s }"):
    return """workers: 1
log: { access: off }
limits: %s
listeners:
  - { name: web, address: "127.0.0.1:%d", http2: { enabled: true } }
upstreams:
  app:
    servers: [ { address: "%s" } ]
routes:
  - match: { path_prefix: /local }
    respond: { status: 200, body: "local\\n", headers: { Content-Type: text/plain } }
  - match: { path_prefix: / }
    upstream: app
""" % (limits, port, backend.address)


class Client:
    """A blocking h2 client over one socket: requests, then pump() until a condition holds."""

    def __init__(self, port, window=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="latin-1")
        self.conn = h2.connection.H2Connection(cfg)
        self.conn.initiate_connection()
        if window:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method, path, headers=(), body=None, end=True):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":path", path), (":scheme", "http"),
              (":authority", "h2.test")] + list(headers)
        self.conn.send_headers(sid, hs, end_stream=body is None and end)
        self.streams[sid] = {"headers": None, "interim": [], "data": b"", "trailers": None,
                             "ended": False, "reset": None}
        if body is not None:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends BODY as far as flow control allows now; returns the rest."""
        while body:
            n = min(len(body), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if n <= 0:
                break
            self.conn.send_data(sid, body[:n])
            body = body[n:]
        if not body and end:
            self.conn.end_stream(sid)
        self.flush()
        return body

    def pump(self, until, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not until() and not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            self.handle(self.conn.receive_data(data))
            self.flush()
        return until()

    def handle(self, events):
        for e in events:
            st = self.streams.get(getattr(e, "stream_id", None))
            if isinstance(e, h2.events.InformationalResponseReceived):
                st["interim"].append(dict(e.headers))
            elif isinstance(e, h2.events.ResponseReceived):
                st["headers"] = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                st["data"] += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.TrailersReceived):
                st["trailers"] = dict(e.headers)
            elif isinstance(e, h2.events.StreamEnded):
                st["ended"] = True
            elif isinstance(e, h2.events.StreamReset):
                st["reset"] = e.error_code
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = (e.last_stream_id, e.error_code)

    def done(self, sid):
        return lambda: self.streams[sid]["ended"] or self.streams[sid]["reset"] is not None

    def close(self):
        self.sock.close()


@pytest.fixture
def env(make_portero, backend_factory):
    backend = backend_factory()
    port = free_port()
    make_portero(config(port, backend), ports=[port])
    return port, backend


def test_request_head_reaches_backend(env):
    port, backend = env
    c = Client(port)
    sid = c.request("GET", "/p?q=1", headers=[("cookie", "a=1"), ("cookie", "b=2"), ("x-one", "1")])
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["headers"][":status"] == "200"
    seen = json.loads(st["data"])
    assert seen["path"] == "/p" and seen["query"] == "q=1"
    assert seen["headers"]["host"] == "h2.test"
    assert seen["headers"]["cookie"] == "a=1; b=2"        # RFC 9113 §8.2.3
    assert seen["headers"]["x-one"] == "1"
    c.close()


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_request_body_both_framings(env, length):
    port, backend = env
    body = bytes(range(256)) * 3000                   # 768 KB: several windows
    c = Client(port)
    headers = [("content-length", str(len(body)))] if length else []
    sid = c.request("POST", "/up?echo=0", headers=headers, body=b"", end=False)
    rest = body
    deadline = time.monotonic() + 20
    while rest and time.monotonic() < deadline:
        rest = c.send_body(sid, rest)
        if rest:
            c.pump(lambda: c.conn.local_flow_control_window(sid) > 0, timeout=5)
    assert not rest
    assert c.pump(c.done(sid), timeout=20)
    seen = json.loads(c.streams[sid]["data"])
    assert seen["body_len"] == len(body)
    if length:
        assert seen["headers"].get("content-length") == str(len(body))
    else:
        assert "chunked" in seen["headers"].get("transfer-encoding", "")
    c.close()


def trailers_handler(backend, conn, req):
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n")
    return True


def test_response_trailers_become_trailing_headers(env):
    port, backend = env
    backend.handler = trailers_handler
    c = Client(port)
    sid = c.request("GET", "/t", headers=[("te", "trailers")])
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["data"] == b"hello world"
    assert st["trailers"] == {"x-sum": "42"}
    assert "transfer-encoding" not in st["headers"]
    c.close()


def test_interim_dropped_final_delivered(env):
    port, _ = env
    c = Client(port)
    sid = c.request("GET", "/i?interim=103&size=10")
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["headers"][":status"] == "200" and st["data"] == b"x" * 10
    c.close()


def test_bodyless_responses(env):
    port, _ = env
    c = Client(port)
    head = c.request("HEAD", "/h?size=1234")
    nc = c.request("GET", "/n?status=204")
    nm = c.request("GET", "/m?status=304")
    for sid in (head, nc, nm):
        assert c.pump(c.done(sid))
        assert c.streams[sid]["data"] == b"" and c.streams[sid]["reset"] is None
    assert c.streams[head]["headers"]["content-length"] == "1234"
    assert c.streams[nc]["headers"][":status"] == "204"
    assert c.streams[nm]["headers"][":status"] == "304"
    c.close()


@pytest.mark.parametrize("query", ["close=1&size=70000", "chunked=1&size=70000", "size=70000"])
def test_response_framings(env, query):
    port, _ = env
    c = Client(port)
    sid = c.request("GET", "/f?" + query)
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["reset"] is None and st["data"] == b"x" * 70000
    c.close()


def test_early_answer_then_rest_of_body_dropped(env):
    """The response is complete before the request: the body still coming is read and dropped
    (no RST_STREAM a client could take for a failed upload), and the stream ends normally."""
    port, _ = env
    body = b"y" * 600000
    c = Client(port)
    sid = c.request("POST", "/local", headers=[("content-length", str(len(body)))], body=b"", end=False)
    rest = c.send_body(sid, body)
    assert c.pump(lambda: c.streams[sid]["headers"] is not None)
    deadline = time.monotonic() + 20
    while rest and time.monotonic() < deadline:
        c.pump(lambda: c.conn.local_flow_control_window(sid) > 0, timeout=5)
        rest = c.send_body(sid, rest)
    assert not rest
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["headers"][":status"] == "200" and st["data"] == b"local\n"
    assert st["reset"] is None
    # the connection still serves
    sid2 = c.request("GET", "/local")
    assert c.pump(c.done(sid2)) and c.streams[sid2]["data"] == b"local\n"
    c.close()


@pytest.mark.parametrize("headers", [
    [(":method", "CONNECT"), (":authority", "h2.test:443")],
    [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a.test"), ("host", "b.test")],
], ids=["connect", "host-mismatch"])
def test_refused_requests_answered_400(env, headers):
    port, _ = env
    c = Client(port)
    c.conn.config.normalize_outbound_headers = False
    c.conn.config.validate_outbound_headers = False
    sid = c.conn.get_next_available_stream_id()
    c.streams[sid] = {"headers": None, "interim": [], "data": b"", "trailers": None, "ended": False,
                      "reset": None}
    c.conn.send_headers(sid, headers, end_stream=True)
    c.flush()
    assert c.pump(c.done(sid))
    st = c.streams[sid]
    assert st["reset"] is not None or st["headers"][":status"] == "400", st
    c.close()


def test_reset_stream_leaves_others_running(env):
    port, _ = env
    c = Client(port, window=65535)
    big = c.request("GET", "/big?stream=20000000")
    assert c.pump(lambda: c.streams[big]["headers"] is not None)
    c.conn.reset_stream(big, error_code=8)            # CANCEL
    c.flush()
    small = c.request("GET", "/small?size=5")
    assert c.pump(c.done(small))
    assert c.streams[small]["data"] == b"xxxxx"
    c.close()


def test_silent_after_preface_closed_by_header_timeout(env):
    """The preface arrives but no frame follows: header_timeout (2 s here) closes it."""
    port, _ = env
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    t0 = time.monotonic()
    s.settimeout(8)
    got = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except (socket.timeout, ConnectionResetError):
        pass
    assert time.monotonic() - t0 < 7, "still open after header_timeout"
    assert got[3:4] == b"\x04"                         # our SETTINGS came first
    s.close()


def test_unfinished_header_block_closed_by_header_timeout(env):
    """HEADERS without END_HEADERS and no CONTINUATION: the connection does not stay open for
    ever (header_timeout, 2 s here)."""
    import struct
    import hpack
    port, _ = env
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                    (":authority", "h2.test")])
    frame = lambda t, f, sid, p: struct.pack(">I", len(p))[1:] + bytes([t, f]) + struct.pack(">I", sid) + p
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x1, 1, block))
    t0 = time.monotonic()
    s.settimeout(8)
    try:
        while s.recv(4096):
            pass
    except (socket.timeout, ConnectionResetError):
        pass
    assert time.monotonic() - t0 < 7, "still open after header_timeout"
    s.close()
