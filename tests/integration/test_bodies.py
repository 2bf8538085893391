"""Bodies through the proxy (issue 2, item 4): 10 MiB uploads and downloads, with
Content-Length and chunked framing, end-to-end sha256 equality; streaming (bytes reach the
other side before the sender finished); backpressure (a peer that stops reading stops the
flow instead of filling portero's memory)."""

import hashlib
import json
import os
import select
import socket
import time

import pytest

from conftest import free_port, wait_for
from rawbackend import RawBackend, RawClient, RssSampler, portero_config, rss_kib

MIB = 1 << 20


class Env:
    def __init__(self, port, backend, proc):
        self.port = port
        self.backend = backend
        self.proc = proc


@pytest.fixture
def env(make_portero, backend_factory):
    b = backend_factory("B")
    port = free_port()
    p = make_portero(portero_config(port, {"app": [b.port]}), ports=[port])
    return Env(port, b, p)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def x_sha(n):
    h = hashlib.sha256()
    block = b"x" * 65536
    while n:
        k = min(n, len(block))
        h.update(block[:k])
        n -= k
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# 10 MiB uploads and downloads

def test_upload_10mib_content_length(env):
    body = os.urandom(10 * MIB)
    with RawClient(env.port, timeout=60) as c:
        c.send(b"POST /up HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        c.send(body)
        r = c.read_response()
    assert r.status == 200
    j = json.loads(r.body)
    assert j["body_len"] == len(body)
    assert j["body_sha256"] == sha(body)


def test_upload_10mib_chunked(env):
    body = os.urandom(10 * MIB)
    with RawClient(env.port, timeout=60) as c:
        c.send(b"POST /upc HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        i, k = 0, 0
        sizes = [1, 4096, 65536, 300000, 17, 1 << 20]
        while i < len(body):
            n = min(sizes[k % len(sizes)], len(body) - i)
            c.send(b"%x\r\n" % n + body[i:i + n] + b"\r\n")
            i += n
            k += 1
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    j = json.loads(r.body)
    assert j["body_len"] == len(body)
    assert j["body_sha256"] == sha(body)


@pytest.mark.parametrize("query,framing", [("stream=%d" % (10 * MIB), "length"),
                                           ("stream=%d&chunked=1" % (10 * MIB), "chunked"),
                                           ("stream=%d&close=1" % (10 * MIB), "chunked")],
                         ids=["content_length", "chunked", "close_delimited"])
def test_download_10mib(env, query, framing):
    h = hashlib.sha256()
    with RawClient(env.port, timeout=60) as c:
        c.send(b"GET /down?%s HTTP/1.1\r\nHost: test\r\n\r\n" % query.encode())
        r = c.read_response(sink=h.update)
        assert r.status == 200 and r.complete
        assert r.framing == framing
        assert r.body_len == 10 * MIB
        assert h.hexdigest() == x_sha(10 * MIB)
        # and the connection is still good
        c.send(b"GET /after HTTP/1.1\r\nHost: test\r\n\r\n")
        assert json.loads(c.read_response().body)["path"] == "/after"


def test_random_bytes_round_trip(env):
    """Random (not repetitive) bytes up and back down again (echo), compared byte for byte."""
    body = os.urandom(900 * 1024)
    with RawClient(env.port, timeout=60) as c:
        c.send(b"POST /echo?echo=1&chunked=1 HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"
               % len(body) + body)
        r = c.read_response()
    assert r.status == 200
    assert r.body == body


def test_download_with_requests_library(env):
    import requests
    r = requests.get("http://127.0.0.1:%d/lib?stream=%d" % (env.port, 3 * MIB), timeout=60)
    assert r.status_code == 200
    assert len(r.content) == 3 * MIB and sha(r.content) == x_sha(3 * MIB)


# ---------------------------------------------------------------------------------------------
# Streaming

@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_download_streams_before_backend_finishes(env, chunked):
    """The backend sends 4 pieces 2 s apart; the first piece must reach the client long before
    the last one is sent (a proxy that buffers whole bodies fails this)."""
    target = "/drip?size=4000&drip=2&pieces=4" + ("&chunked=1" if chunked else "")
    with RawClient(env.port, timeout=60) as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % target.encode())
        times = []

        def sink(d):
            times.append((time.monotonic(), len(d)))

        r = c.read_response(sink=sink)
        assert r.status == 200 and r.complete and r.body_len == 4000
    first, last = times[0][0], times[-1][0]
    # the backend needs >= 6 s between its first and last piece
    assert last - first >= 3.0, "body arrived in one go: %r" % times


def test_upload_streams_before_client_finishes(make_portero):
    """Half of a Content-Length body reaches the backend while the client holds the rest."""
    rb = RawBackend(respond="request")
    port = free_port()
    make_portero(portero_config(port, {"app": [rb.port]}), ports=[port])
    try:
        first = b"A" * 100000
        rest = b"B" * 100000
        with RawClient(port, timeout=30) as c:
            c.send(b"POST /half HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"
                   % (len(first) + len(rest)) + first)
            assert wait_for(lambda: rb.all_bytes().count(b"A") == len(first), timeout=15), \
                "the first half was held back (backend has %d bytes)" % rb.total_bytes()
            assert b"B" not in rb.all_bytes()
            c.send(rest)
            r = c.read_response()
            assert r.status == 200
        assert rb.complete_requests() == 1
        assert rb.all_bytes().endswith(first[-10:] + rest)
    finally:
        rb.stop()


def test_chunked_upload_streams_before_client_finishes(make_portero):
    rb = RawBackend(respond="request")
    port = free_port()
    make_portero(portero_config(port, {"app": [rb.port]}), ports=[port])
    try:
        with RawClient(port, timeout=30) as c:
            c.send(b"POST /halfc HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"%x\r\n%s\r\n" % (50000, b"C" * 50000))
            assert wait_for(lambda: rb.all_bytes().count(b"C") == 50000, timeout=15), \
                "the first chunk was held back"
            c.send(b"%x\r\n%s\r\n0\r\n\r\n" % (10, b"D" * 10))
            r = c.read_response()
            assert r.status == 200
        assert rb.complete_requests() == 1
    finally:
        rb.stop()


# ---------------------------------------------------------------------------------------------
# Backpressure

def test_download_backpressure_client_not_reading(env):
    """The client stops reading a 256 MiB download: portero must not buffer it all."""
    total = 256 * MIB
    base = rss_kib(env.proc.pid)
    with RawClient(env.port, timeout=60) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.send(b"GET /bp?stream=%d HTTP/1.1\r\nHost: test\r\n\r\n" % total)
        with RssSampler(env.proc.pid) as s:
            time.sleep(3.0)          # not reading
            stalled_max = s.max_kib
            h = hashlib.sha256()
            r = c.read_response(sink=h.update)
        assert r.status == 200 and r.body_len == total
        assert h.hexdigest() == x_sha(total)
    growth_mib = (max(stalled_max, s.max_kib) - base) / 1024
    assert growth_mib < 64, "RSS grew by %.1f MiB while the client was not reading" % growth_mib


def test_upload_backpressure_backend_not_reading(make_portero):
    """The backend does not read for 4 s: the client's upload must stall (bounded buffering
    in portero), then complete once the backend reads."""
    total = 200 * MIB
    rb = RawBackend(respond="request", stall=4.0, max_record=64 * 1024)
    port = free_port()
    p = make_portero(portero_config(port, {"app": [rb.port]}), ports=[port])
    base = rss_kib(p.pid)
    try:
        with RawClient(port, timeout=60) as c, RssSampler(p.pid) as s:
            c.send(b"POST /bpu HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % total)
            c.sock.setblocking(False)
            block = b"u" * 65536
            sent = 0
            stall_end = time.monotonic() + 2.5
            while time.monotonic() < stall_end and sent < total:
                _, w, _ = select.select([], [c.sock], [], 0.2)
                if w:
                    try:
                        sent += c.sock.send(block[:min(len(block), total - sent)])
                    except BlockingIOError:
                        pass
            sent_while_stalled = sent
            stalled_rss = s.max_kib
            c.sock.setblocking(True)
            c.sock.settimeout(60)
            while sent < total:
                sent += c.sock.send(block[:min(len(block), total - sent)])
            r = c.read_response()
            assert r.status == 200
        assert sent_while_stalled < 128 * MIB, \
            "%d MiB accepted while the backend was not reading" % (sent_while_stalled // MIB)
        growth_mib = (stalled_rss - base) / 1024
        assert growth_mib < 64, "RSS grew by %.1f MiB during the stall" % growth_mib
        assert rb.complete_requests() == 1
        assert wait_for(lambda: rb.total_bytes() >= total, timeout=5)
    finally:
        rb.stop()


# ---------------------------------------------------------------------------------------------
# A side that goes away mid-body

def test_client_abort_mid_upload_never_completes_upstream(make_portero):
    rb = RawBackend(respond="request")
    port = free_port()
    p = make_portero(portero_config(port, {"app": [rb.port]}), ports=[port])
    try:
        with RawClient(port, timeout=30) as c:
            c.send(b"POST /abort HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % MIB
                   + b"a" * 100000)
            assert wait_for(lambda: rb.total_bytes() >= 100000, timeout=15)
        # client gone: portero must abort the upstream request, not complete it
        assert wait_for(lambda: all(c.closed for c in rb.conns), timeout=15), \
            "upstream connection left open after the client went away"
        assert rb.complete_requests() == 0
        assert p.running()
    finally:
        rb.stop()


def test_client_abort_mid_download_releases_upstream(env):
    with RawClient(env.port, timeout=30) as c:
        c.send(b"GET /gone?stream=%d HTTP/1.1\r\nHost: test\r\n\r\n" % (1 << 30))
        got = 0
        deadline = time.monotonic() + 30
        while got < MIB and time.monotonic() < deadline:
            got += len(c.read_available(0.5))
        assert got >= MIB, "download did not start"
    assert wait_for(lambda: env.backend.open_connections == 0, timeout=20), \
        "portero kept the upstream transfer going after the client left"
    # and it still serves
    with RawClient(env.port) as c:
        c.send(b"GET /still HTTP/1.1\r\nHost: test\r\n\r\n")
        assert json.loads(c.read_response().body)["path"] == "/still"
