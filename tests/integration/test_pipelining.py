"""Pipelined HTTP/1.1 requests (issue 2, item 4): several requests written in one send are
answered in order, on one connection, whatever their bodies, speeds and actions."""

import hashlib
import json

import pytest

from conftest import free_port
from rawbackend import RawClient, ConnectionClosed, portero_config

ROUTES = ['{ match: { path: /local }, respond: { status: 200, body: "local\\n", '
          'headers: { Content-Type: text/plain } } }',
          '{ match: { path_prefix: /dead }, upstream: dead }',
          '{ match: { host: test, path_prefix: / }, upstream: app }']


class Env:
    def __init__(self, port, backend):
        self.port = port
        self.backend = backend


@pytest.fixture
def env(make_portero, backend_factory):
    b = backend_factory("P")
    port = free_port()
    dead = free_port()   # nothing listens there: connection refused -> 502
    make_portero(portero_config(port, {"app": [b.port], "dead": [dead]}, routes=ROUTES),
                 ports=[port])
    return Env(port, b)


def get(path, extra=b""):
    return b"GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n" % (path.encode(), extra)


def post(path, body, chunked=False):
    if chunked:
        half = len(body) // 2
        enc = b""
        for part in (body[:half], body[half:]):
            if part:
                enc += b"%x\r\n%s\r\n" % (len(part), part)
        enc += b"0\r\n\r\n"
        return b"POST %s HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n%s" % (
            path.encode(), enc)
    return b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s" % (
        path.encode(), len(body), body)


@pytest.mark.parametrize("n", [3, 10])
def test_pipelined_gets_in_order(env, n):
    paths = ["/p%d" % i for i in range(n)]
    with RawClient(env.port) as c:
        c.send(b"".join(get(p) for p in paths))
        got = []
        for _ in paths:
            r = c.read_response()
            assert r.status == 200, r
            got.append(json.loads(r.body)["path"])
        assert got == paths
        assert c.still_open(0.3)
    assert sorted(q["target"] for q in env.backend.requests) == sorted(paths)


def test_pipelined_slow_first_response_keeps_order(env):
    paths = ["/slow?delay=1", "/fast1", "/fast2", "/fast3"]
    with RawClient(env.port) as c:
        c.send(b"".join(get(p) for p in paths))
        got = [json.loads(c.read_response().body)["path"] for _ in paths]
    assert got == ["/slow", "/fast1", "/fast2", "/fast3"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_pipelined_posts_with_bodies(env, chunked):
    bodies = [bytes([65 + i]) * (1000 * (i + 1)) for i in range(6)]
    with RawClient(env.port) as c:
        c.send(b"".join(post("/b%d" % i, body, chunked) for i, body in enumerate(bodies)))
        for i, body in enumerate(bodies):
            r = c.read_response()
            assert r.status == 200
            j = json.loads(r.body)
            assert j["path"] == "/b%d" % i
            assert j["body_len"] == len(body)
            assert j["body_sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_get_pipelined_after_post_with_body(env, chunked):
    body = b"payload-" * 4096
    with RawClient(env.port) as c:
        c.send(post("/first", body, chunked) + get("/second") + get("/third"))
        r1, r2, r3 = (c.read_response() for _ in range(3))
        j1 = json.loads(r1.body)
        assert j1["path"] == "/first" and j1["method"] == "POST"
        assert j1["body_sha256"] == hashlib.sha256(body).hexdigest()
        j2 = json.loads(r2.body)
        assert j2["path"] == "/second" and j2["method"] == "GET" and j2["body_len"] == 0
        assert json.loads(r3.body)["path"] == "/third"


def test_pipelined_mixed_actions_and_bodies(env):
    """Upstream, local respond, HEAD, chunked response, 404-free local answers: in order."""
    data = (get("/u1") + get("/local") + b"HEAD /h HTTP/1.1\r\nHost: test\r\n\r\n" +
            get("/c?chunked=1&size=5000") + post("/p", b"hello") + get("/local") +
            get("/u2?size=70000"))
    with RawClient(env.port) as c:
        c.send(data)
        r = c.read_response()
        assert json.loads(r.body)["path"] == "/u1"
        r = c.read_response()
        assert r.body == b"local\n"
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.body == b""
        r = c.read_response()
        assert r.body == b"x" * 5000
        r = c.read_response()
        assert json.loads(r.body)["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
        r = c.read_response()
        assert r.body == b"local\n"
        r = c.read_response()
        assert r.body == b"x" * 70000
        assert c.still_open(0.3)


def test_pipelined_connection_close_stops_there(env):
    with RawClient(env.port) as c:
        c.send(get("/one") + get("/two", b"Connection: close\r\n") + get("/three"))
        r1 = c.read_response()
        r2 = c.read_response()
        assert json.loads(r1.body)["path"] == "/one"
        assert json.loads(r2.body)["path"] == "/two"
        assert "close" in (r2.header("connection") or "").lower()
        assert c.wait_closed(10)
        assert c.extra == b"", "answered a request after Connection: close"
    assert "/three" not in [q["target"] for q in env.backend.requests]


def test_pipelined_malformed_request_after_good_ones(env):
    with RawClient(env.port) as c:
        c.send(get("/good1") + get("/good2") + b"GET /bad HTTP/1.1\r\nHost : test\r\n\r\n" +
               get("/never"))
        assert json.loads(c.read_response().body)["path"] == "/good1"
        assert json.loads(c.read_response().body)["path"] == "/good2"
        try:
            r = c.read_response()
        except ConnectionClosed:
            pytest.fail("no 400 for the malformed pipelined request")
        assert r.status == 400
        assert c.wait_closed(10)
    targets = [q["target"] for q in env.backend.requests]
    assert "/bad" not in targets and "/never" not in targets


def test_pipelined_many_small_sent_byte_by_byte_boundaries(env):
    """Requests split at awkward places across sends are still parsed and ordered."""
    data = b"".join(get("/s%d" % i) for i in range(5)) + post("/sp", b"abcdef")
    with RawClient(env.port) as c:
        step = 7
        for i in range(0, len(data), step):
            c.send(data[i:i + step])
        for i in range(5):
            assert json.loads(c.read_response().body)["path"] == "/s%d" % i
        j = json.loads(c.read_response().body)
        assert j["path"] == "/sp" and j["body_sha256"] == hashlib.sha256(b"abcdef").hexdigest()


def test_pipelined_errors_in_the_middle_keep_order(env):
    """A 502 (refused upstream) and a 404 (no route) between proxied requests."""
    data = (get("/one") + get("/dead/x") + get("/two") +
            b"GET /three HTTP/1.1\r\nHost: nowhere.example\r\n\r\n" + get("/four"))
    with RawClient(env.port, timeout=30) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["path"] == "/one"
        r = c.read_response()
        assert r.status == 502, r
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["path"] == "/two"
        r = c.read_response()
        assert r.status == 404, r
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["path"] == "/four"
        assert c.still_open(0.3)


def test_pipelined_after_close_delimited_and_chunked_upstream(env):
    with RawClient(env.port, timeout=30) as c:
        c.send(get("/a?close=1&size=3000") + get("/b") + get("/c?chunked=1&size=4000") +
               get("/d?close=1") + get("/e"))
        r = c.read_response()
        assert r.status == 200 and r.body == b"x" * 3000
        assert json.loads(c.read_response().body)["path"] == "/b"
        assert c.read_response().body == b"x" * 4000
        assert json.loads(c.read_response().body)["path"] == "/d"
        assert json.loads(c.read_response().body)["path"] == "/e"


def test_pipelined_large_responses_client_reads_late(env):
    """Ten 1 MiB responses pipelined; the client reads only after sending everything and
    a pause: all arrive complete and in order."""
    import time
    n = 10
    with RawClient(env.port, timeout=60) as c:
        c.send(b"".join(get("/big%d?size=%d&hdr=X-N:%d" % (i, 1 << 20, i)) for i in range(n)))
        time.sleep(1.0)
        for i in range(n):
            r = c.read_response()
            assert r.status == 200 and len(r.body) == 1 << 20
            assert r.header("x-n") == str(i)


def test_body_that_looks_like_a_request_stays_a_body(env):
    """A GET whose Content-Length body holds the bytes of another request: the backend gets
    one request with that body, never a second request."""
    inner = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
    with RawClient(env.port) as c:
        c.send(b"GET /outer HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(inner)
               + inner + get("/next"))
        r1 = c.read_response()
        j = json.loads(r1.body)
        assert j["path"] == "/outer" and j["body_len"] == len(inner)
        assert json.loads(c.read_response().body)["path"] == "/next"
        assert c.still_open(0.3)
    targets = [q["target"] for q in env.backend.requests]
    assert targets == ["/outer", "/next"], targets
