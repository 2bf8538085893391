"""gRPC end to end through portero (issue 4, item 4): HTTP/2 to upstreams.

Contract: an upstream with `protocol: h2` is spoken to in HTTP/2 (prior knowledge in clear text,
or over `tls:`), one stream at a time per pooled connection. A gRPC client reaches portero over
HTTP/2 (here cleartext prior knowledge on a plain listener, where http2 is on by default) and a
Python gRPC server (grpc_backend.py) answers: unary, server-, client- and bidirectional
streaming calls round-trip; the status (grpc-status / grpc-message, which travel in trailers, or
in the head of a trailers-only answer) and custom metadata survive; large (1 MiB) messages
stream; the upstream connection is reused between calls. An HTTP/1.1 client sees the server's
trailers in the chunked trailer section.
"""

import hashlib
import queue
import re
import socket
import struct
import time
from concurrent import futures

import grpc
import pytest

from conftest import free_port
from grpc_backend import GrpcBackend, pattern
from tlsutil import certs  # noqa: F401  (fixture)

TIMEOUT = 30
MIB = 1024 * 1024
OPTIONS = [("grpc.enable_http_proxy", 0),
           ("grpc.max_receive_message_length", 16 * MIB),
           ("grpc.max_send_message_length", 16 * MIB)]


@pytest.fixture
def grpc_backend():
    started = []

    def start(**kw):
        b = GrpcBackend(**kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def config(port, address, tls=None):
    up_tls = ""
    if tls:
        up_tls = "\n    tls: { ca: \"%s\", sni: %s }" % tls
    return """workers: 1
log: { access: off }
listeners:
  - { name: web, address: "127.0.0.1:%d" }
upstreams:
  g:
    protocol: h2%s
    servers: [ { address: "%s" } ]
routes:
  - match: { path_prefix: / }
    upstream: g
""" % (port, up_tls, address)


def start(make_portero, backend, tls=None):
    port = free_port()
    make_portero(config(port, backend.address, tls), ports=[port])
    return port


class Client:
    """A gRPC channel to portero (h2c prior knowledge) with the four call shapes."""

    def __init__(self, port):
        self.ch = grpc.insecure_channel("127.0.0.1:%d" % port, options=OPTIONS)
        self.echo = self.ch.unary_unary("/test.Svc/Echo")
        self.count = self.ch.unary_stream("/test.Svc/Count")
        self.sum = self.ch.stream_unary("/test.Svc/Sum")
        self.chat = self.ch.stream_stream("/test.Svc/Chat")

    def close(self):
        self.ch.close()


@pytest.fixture
def client():
    made = []

    def make(port):
        c = Client(port)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_unary_round_trip_with_metadata(make_portero, grpc_backend, client):
    b = grpc_backend()
    c = client(start(make_portero, b))
    resp, call = c.echo.with_call(b"hello", metadata=(("x-tag", "t1"),), timeout=TIMEOUT)
    assert resp == b"echo:hello"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-tag-initial", "t1") in tuple(call.initial_metadata())
    assert ("x-tag-trailing", "t1") in tuple(call.trailing_metadata())
    # the request's metadata reached the server, with te: trailers handled by the bridge
    assert ("x-tag", "t1") in b.metadata[-1]


def test_error_status_preserved(make_portero, grpc_backend, client):
    b = grpc_backend()
    c = client(start(make_portero, b))
    # a trailers-only answer: the status travels in the response head
    with pytest.raises(grpc.RpcError) as e:
        c.echo(b"notfound", timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such thing"
    # an error after data: the status travels in trailers
    it = c.count(b"3:fail", timeout=TIMEOUT)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for m in it:
            got.append(m)
    assert got == [b"item0", b"item1", b"item2"]
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details() == "boom"
    # the connection still serves
    assert c.echo(b"after", timeout=TIMEOUT) == b"echo:after"


def test_server_streaming(make_portero, grpc_backend, client):
    b = grpc_backend()
    c = client(start(make_portero, b))
    assert list(c.count(b"200", timeout=TIMEOUT)) == [b"item%d" % i for i in range(200)]


def test_client_streaming(make_portero, grpc_backend, client):
    b = grpc_backend()
    c = client(start(make_portero, b))
    msgs = [pattern(i * 97) for i in range(60)]
    want = hashlib.sha256(b"".join(msgs)).hexdigest()
    resp = c.sum(iter(msgs), timeout=TIMEOUT)
    assert resp == b"%d:%d:%s" % (len(msgs), sum(map(len, msgs)), want.encode())


def test_bidi_streaming_lock_step(make_portero, grpc_backend, client):
    """Each request waits for the answer to the previous one: this only completes if both
    directions stream through portero (nothing waits for the end of the request)."""
    b = grpc_backend()
    c = client(start(make_portero, b))
    outbox = queue.Queue()

    def requests():
        while True:
            m = outbox.get(timeout=TIMEOUT)
            if m is None:
                return
            yield m

    outbox.put(b"m0")
    responses = c.chat(requests(), timeout=TIMEOUT)
    for i in range(20):
        assert next(responses) == b"re:m%d" % i
        outbox.put(b"m%d" % (i + 1) if i < 19 else None)
    assert list(responses) == []
    assert responses.code() == grpc.StatusCode.OK


def test_large_messages(make_portero, grpc_backend, client):
    b = grpc_backend()
    c = client(start(make_portero, b))
    big = pattern(MIB)
    assert c.echo(big, timeout=TIMEOUT) == b"echo:" + big
    assert c.echo(b"size:%d" % MIB, timeout=TIMEOUT) == big
    got = list(c.count(b"big:4:%d" % MIB, timeout=TIMEOUT))
    assert len(got) == 4 and all(m == big for m in got)
    resp = c.sum(iter([big] * 4), timeout=TIMEOUT)
    want = hashlib.sha256(big * 4).hexdigest().encode()
    assert resp == b"4:%d:%s" % (4 * MIB, want)


def test_upstream_connection_reused(make_portero, grpc_backend, client):
    b = grpc_backend()
    port = start(make_portero, b)
    for i in range(4):
        c = client(port)  # a new client connection each time
        assert c.echo(b"r%d" % i, timeout=TIMEOUT) == b"echo:r%d" % i
        c.close()
    assert list(client(port).count(b"2", timeout=TIMEOUT)) == [b"item0", b"item1"]
    assert len(b.peers) == 5
    assert len(set(b.peers)) == 1, b.peers  # one upstream connection carried every stream


def test_concurrent_calls(make_portero, grpc_backend, client):
    """Streams multiplexed on one client connection go upstream one per connection, at once."""
    b = grpc_backend()
    c = client(start(make_portero, b))
    chunk = pattern(256 * 1024)

    def work(i):
        got = list(c.count(b"big:4:%d" % len(chunk), timeout=TIMEOUT))
        return c.echo(b"w%d" % i, timeout=TIMEOUT), got

    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(8)))
    for i, (echo, got) in enumerate(results):
        assert echo == b"echo:w%d" % i
        assert len(got) == 4 and all(m == chunk for m in got)
    assert 1 <= len(set(b.peers)) <= 8


def test_client_cancel_mid_stream(make_portero, grpc_backend, client):
    """A client that goes away mid-stream costs portero the upstream connection, nothing more."""
    b = grpc_backend()
    c = client(start(make_portero, b))
    it = c.count(b"big:200:%d" % MIB, timeout=TIMEOUT)
    assert len(next(it)) == MIB
    it.cancel()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code() == grpc.StatusCode.CANCELLED
    assert c.echo(b"still", timeout=TIMEOUT) == b"echo:still"
    assert list(c.count(b"3", timeout=TIMEOUT)) == [b"item0", b"item1", b"item2"]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_client_does_not_make_portero_buffer(make_portero, grpc_backend, client):
    """A client that stops reading a 256 MiB stream: flow control holds the server back, so
    portero's memory stays within its windows (a few hundred KiB per stream), not the stream."""
    b = grpc_backend()
    port = free_port()
    p = make_portero(config(port, b.address), ports=[port])
    c = client(port)
    it = c.count(b"big:256:%d" % MIB, timeout=TIMEOUT)
    assert len(next(it)) == MIB
    before = rss_kib(p.pid)
    time.sleep(2)  # not reading: without backpressure, the stream would pile up in portero
    grown = rss_kib(p.pid) - before
    it.cancel()
    assert grown < 64 * 1024, "portero grew by %d KiB while the client did not read" % grown
    assert c.echo(b"ok", timeout=TIMEOUT) == b"echo:ok"


def test_backend_restart(make_portero, grpc_backend, client):
    """The server goes away (GOAWAY, close) while portero pools its connection; a new server on
    the same address gets the next calls on a fresh connection."""
    b = grpc_backend()
    c = client(start(make_portero, b))
    assert c.echo(b"one", timeout=TIMEOUT) == b"echo:one"
    b.stop()
    b2 = grpc_backend(port=b.port)
    # gRPC calls are POSTs: if a call raced the old server's GOAWAY it may fail (UNAVAILABLE)
    # once; the next one must go through on a fresh connection.
    try:
        first = c.echo(b"two", timeout=TIMEOUT)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        first = c.echo(b"two", timeout=TIMEOUT)
    assert first == b"echo:two"
    assert c.echo(b"three", timeout=TIMEOUT) == b"echo:three"
    assert len(b2.peers) >= 2


def test_tls_upstream(make_portero, grpc_backend, client, certs):  # noqa: F811
    b = grpc_backend(tls=(certs.backend, certs.backend_key))
    c = client(start(make_portero, b, tls=(certs.ca, "backend.test")))
    assert c.echo(b"secure", timeout=TIMEOUT) == b"echo:secure"
    assert list(c.count(b"5", timeout=TIMEOUT)) == [b"item%d" % i for i in range(5)]
    with pytest.raises(grpc.RpcError) as e:
        c.echo(b"notfound", timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    big = pattern(MIB)
    assert c.echo(big, timeout=TIMEOUT) == b"echo:" + big
    assert len(set(b.peers)) == 1, b.peers


# --- an HTTP/1.1 client in front of an HTTP/2 upstream --------------------------------------------

def grpc_frame(msg):
    return b"\0" + struct.pack(">I", len(msg)) + msg


def http1_call(port, method, msg):
    """POSTs one gRPC message over HTTP/1.1; returns (head lines, body, trailer lines)."""
    body = grpc_frame(msg)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(b"POST /test.Svc/%s HTTP/1.1\r\nHost: g\r\nContent-Type: application/grpc\r\n"
                  b"TE: trailers\r\nContent-Length: %d\r\n\r\n" % (method.encode(), len(body)) + body)
        f = s.makefile("rb")
        head = []
        while True:
            line = f.readline().rstrip(b"\r\n")
            if not line:
                break
            head.append(line.decode("latin-1"))
        fields = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in head[1:]}
        out, trailers = b"", []
        if "content-length" in fields:
            out = f.read(int(fields["content-length"]))
            return head, out, trailers
        assert fields.get("transfer-encoding", "").lower() == "chunked", head
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                break
            out += f.read(n)
            assert f.read(2) == b"\r\n"
        while True:
            line = f.readline().rstrip(b"\r\n")
            if not line:
                break
            trailers.append(line.decode("latin-1"))
        return head, out, trailers


def test_http1_client_sees_trailers(make_portero, grpc_backend):
    b = grpc_backend()
    port = start(make_portero, b)
    head, body, trailers = http1_call(port, "Echo", b"plain")
    assert re.match(r"HTTP/1\.1 200 ", head[0])
    assert body == grpc_frame(b"echo:plain")
    assert "grpc-status: 0" in trailers
    # trailers-only error: grpc-status in the head, empty body
    head, body, trailers = http1_call(port, "Echo", b"notfound")
    assert "grpc-status: 5" in head
    assert "grpc-message: no such thing" in head
    assert body == b""
    assert len(set(b.peers)) == 1
