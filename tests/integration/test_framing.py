"""Message framing through the proxy (issue 2, item 4): HEAD, 204, 304, 1xx, HTTP/1.0 clients,
close-delimited and chunked upstream responses, chunked request bodies, Expect: 100-continue.

Most tests send a second request on the same client connection after the one under test: if
portero sent a body where there must be none, or framed a body wrongly, that second exchange
breaks, which is the sharpest check of framing there is."""

import hashlib
import json
import time

import pytest

from conftest import free_port
from rawbackend import RawClient, ConnectionClosed, portero_config


class Env:
    def __init__(self, port, backend, proc):
        self.port = port
        self.backend = backend
        self.proc = proc


@pytest.fixture
def env(make_portero, backend_factory):
    b = backend_factory("F")
    port = free_port()
    p = make_portero(portero_config(port, {"app": [b.port]}), ports=[port])
    return Env(port, b, p)


def request(c, target, method="GET", version="HTTP/1.1", headers=b"", body=b""):
    c.send(b"%s %s %s\r\nHost: test\r\n%s\r\n%s" % (method.encode(), target.encode(),
                                                    version.encode(), headers, body))


def check_followup(c, path="/followup"):
    """A second request on the same connection is answered correctly."""
    request(c, path)
    r = c.read_response()
    assert r.status == 200, r
    assert json.loads(r.body)["path"] == path
    return r


# ---------------------------------------------------------------------------------------------
# Responses without a body

@pytest.mark.parametrize("target", ["/head", "/head?size=5000", "/head?chunked=1&size=3000"])
def test_head_has_no_body(env, target):
    with RawClient(env.port) as c:
        request(c, target, method="HEAD")
        r = c.read_response(method="HEAD")
        assert r.status == 200
        assert r.body == b""
        if "size=5000" in target:
            assert r.header("content-length") == "5000", r.headers
        assert c.read_available(0.3) == b"", "bytes after a HEAD response"
        check_followup(c)
    assert env.backend.requests[0]["method"] == "HEAD"


def test_head_close_delimited_upstream(env):
    """HEAD to a backend that would delimit the body by close: no body, no waiting."""
    with RawClient(env.port) as c:
        request(c, "/hc?close=1", method="HEAD")
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.body == b""
        assert c.read_available(0.3) == b""
        check_followup(c)


def test_204_has_no_body(env):
    with RawClient(env.port) as c:
        request(c, "/nc?status=204")
        r = c.read_response()
        assert r.status == 204
        assert r.body == b""
        assert r.header("transfer-encoding") is None, r.headers
        assert r.header("content-length") in (None, "0"), r.headers
        assert c.read_available(0.3) == b""
        check_followup(c)


def test_304_has_no_body(env):
    with RawClient(env.port) as c:
        request(c, "/nm?status=304", headers=b'If-None-Match: "abc"\r\n')
        r = c.read_response()
        assert r.status == 304
        assert r.body == b""
        assert r.header("transfer-encoding") is None, r.headers
        assert c.read_available(0.3) == b""
        check_followup(c)


# ---------------------------------------------------------------------------------------------
# 1xx

def test_interim_103_forwarded_then_final(env):
    with RawClient(env.port) as c:
        request(c, "/early?interim=103")
        r = c.read_response()
        assert [i.status for i in r.interim] == [103], r.interim
        assert "preload" in (r.interim[0].header("link") or ""), r.interim[0].headers
        assert r.status == 200
        assert json.loads(r.body)["path"] == "/early"
        check_followup(c)


def test_two_interim_responses_forwarded(env):
    with RawClient(env.port) as c:
        request(c, "/early2?interim=103&interim=103")
        r = c.read_response()
        assert [i.status for i in r.interim] == [103, 103]
        assert r.status == 200
        check_followup(c)


def test_no_interim_to_http10_client(env):
    with RawClient(env.port) as c:
        request(c, "/early10?interim=103", version="HTTP/1.0",
                headers=b"Connection: keep-alive\r\n")
        r = c.read_response()
        assert r.interim == [], "1xx sent to an HTTP/1.0 client"
        assert r.status == 200
        assert json.loads(r.body)["path"] == "/early10"


# ---------------------------------------------------------------------------------------------
# HTTP/1.0 clients

def test_http10_client_gets_close(env):
    with RawClient(env.port) as c:
        request(c, "/ten", version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None, "chunked sent to an HTTP/1.0 client"
        assert r.framing in ("length", "close")
        assert json.loads(r.body)["path"] == "/ten"
        if r.framing == "length":
            assert "close" in (r.header("connection") or "").lower(), r.headers
        assert c.wait_closed(10), "HTTP/1.0 connection without keep-alive stayed open"
    # upstream side is HTTP/1.1 regardless
    assert env.backend.requests[0]["version"] == "HTTP/1.1"


def test_http10_keep_alive(env):
    with RawClient(env.port) as c:
        for i in range(3):
            request(c, "/ka%d" % i, version="HTTP/1.0", headers=b"Connection: keep-alive\r\n")
            r = c.read_response()
            assert r.status == 200
            assert r.framing == "length", "keep-alive to HTTP/1.0 needs Content-Length"
            assert "close" not in (r.header("connection") or "").lower()
            assert json.loads(r.body)["path"] == "/ka%d" % i
        assert c.still_open(0.3)


def test_http10_client_chunked_upstream(env):
    with RawClient(env.port) as c:
        request(c, "/tenc?chunked=1&size=20000", version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        assert r.body == b"x" * 20000
        assert r.complete
        if r.framing == "close":
            assert c.eof


def test_http10_client_close_delimited_upstream(env):
    with RawClient(env.port) as c:
        request(c, "/tencl?close=1&size=30000", version="HTTP/1.0",
                headers=b"Connection: keep-alive\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("transfer-encoding") is None
        assert r.body == b"x" * 30000
        assert r.framing == "close", "an unknown length to HTTP/1.0 must be close-delimited"


# ---------------------------------------------------------------------------------------------
# Upstream response framing

def test_close_delimited_upstream_to_http11_is_chunked(env):
    with RawClient(env.port) as c:
        request(c, "/cd?close=1")
        r = c.read_response()
        assert r.status == 200
        assert r.framing == "chunked", r.headers
        assert json.loads(r.body)["path"] == "/cd"
        # the client connection survives the upstream close
        r2 = check_followup(c)
        assert r2.framing == "length"


def test_close_delimited_upstream_large(env):
    with RawClient(env.port) as c:
        request(c, "/cdl?close=1&stream=3000000")
        r = c.read_response()
        assert r.status == 200 and r.framing == "chunked" and r.complete
        assert len(r.body) == 3000000 and r.body.count(b"x") == 3000000
        check_followup(c)


def test_chunked_upstream_rechunked(env):
    with RawClient(env.port) as c:
        request(c, "/ch?chunked=1&size=100000")
        r = c.read_response()
        assert r.status == 200
        assert r.framing == "chunked", r.headers
        assert r.header("content-length") is None
        assert r.body == b"x" * 100000
        check_followup(c)


def test_content_length_passed_through(env):
    with RawClient(env.port) as c:
        request(c, "/cl?size=12345")
        r = c.read_response()
        assert r.status == 200 and r.framing == "length"
        assert r.header("content-length") == "12345"
        assert r.body == b"x" * 12345


def test_zero_length_chunked_upstream(env):
    with RawClient(env.port) as c:
        request(c, "/ch0?chunked=1&size=0")
        r = c.read_response()
        assert r.status == 200 and r.body == b"" and r.complete
        check_followup(c)


def test_upstream_connection_close_not_passed_to_client(env):
    """Connection is hop-by-hop: the backend closing its connection does not close the
    client's."""
    with RawClient(env.port) as c:
        request(c, "/cc?closeconn=1")
        r = c.read_response()
        assert r.status == 200 and r.framing == "length"
        assert "close" not in (r.header("connection") or "").lower(), r.headers
        check_followup(c)
        check_followup(c, "/followup2")


def test_client_connection_close_honoured(env):
    with RawClient(env.port) as c:
        request(c, "/bye", headers=b"Connection: close\r\n")
        r = c.read_response()
        assert r.status == 200
        assert "close" in (r.header("connection") or "").lower(), r.headers
        assert c.wait_closed(10)
        assert c.extra == b""
    # Connection is not forwarded as the client sent it: the upstream side keeps alive
    assert "close" not in env.backend.requests[0]["hmap"].get("connection", "").lower()


# ---------------------------------------------------------------------------------------------
# Request bodies

def test_chunked_request_body_forwarded(env):
    pieces = [b"a" * 10, b"b" * 1000, b"c" * 70000, b"d"]
    body = b"".join(pieces)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces[:2])
    chunked += b"%x;name=value\r\n%s\r\n" % (len(pieces[2]), pieces[2])
    chunked += b"%x\r\n%s\r\n" % (len(pieces[3]), pieces[3])
    chunked += b"0\r\nX-Trailer: t\r\n\r\n"
    with RawClient(env.port) as c:
        request(c, "/up", method="POST", headers=b"Transfer-Encoding: chunked\r\n", body=chunked)
        r = c.read_response()
        assert r.status == 200
        j = json.loads(r.body)
        assert j["body_len"] == len(body)
        assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
        check_followup(c)
    req = env.backend.requests[0]
    assert req["body"] == body


def test_content_length_request_body_forwarded(env):
    body = bytes(range(256)) * 300
    with RawClient(env.port) as c:
        request(c, "/upcl", method="POST", headers=b"Content-Length: %d\r\n" % len(body),
                body=body)
        r = c.read_response()
        assert r.status == 200
        j = json.loads(r.body)
        assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert j["headers"].get("content-length") == str(len(body))
        check_followup(c)


def test_empty_chunked_request_body(env):
    with RawClient(env.port) as c:
        request(c, "/up0", method="POST", headers=b"Transfer-Encoding: chunked\r\n",
                body=b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body)["body_len"] == 0
        check_followup(c)


# ---------------------------------------------------------------------------------------------
# Expect: 100-continue

def test_expect_100_continue(env):
    body = b"z" * 5000
    with RawClient(env.port) as c:
        request(c, "/exp", method="POST",
                headers=b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(body))
        first = c.read_head()   # must come before we send the body (timeout otherwise)
        assert first.status == 100, first.raw_head
        assert first.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        j = json.loads(r.body)
        assert j["body_len"] == len(body)
        assert j["body_sha256"] == hashlib.sha256(body).hexdigest()
        check_followup(c)


def test_expect_100_continue_chunked(env):
    with RawClient(env.port) as c:
        request(c, "/expc", method="POST",
                headers=b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n")
        first = c.read_head()
        assert first.status == 100
        c.send(b"5\r\nhello\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert json.loads(r.body)["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_expect_ignored_for_http10_client(env):
    """RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored."""
    body = b"ten" * 100
    with RawClient(env.port) as c:
        request(c, "/exp10", method="POST", version="HTTP/1.0",
                headers=b"Content-Length: %d\r\nExpect: 100-continue\r\n" % len(body))
        early = c.read_available(1.0)
        assert b"100 Continue" not in early, early
        c.buf = early
        c.send(body)
        r = c.read_response()
        assert r.interim == [] and r.status == 200
        assert json.loads(r.body)["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_expect_too_large_413_without_100(make_portero, backend_factory):
    b = backend_factory("E")
    port = free_port()
    make_portero(portero_config(port, {"app": [b.port]}, limits={"max_body_bytes": "1KiB"}),
                 ports=[port])
    with RawClient(port) as c:
        request(c, "/big", method="POST",
                headers=b"Content-Length: 5000\r\nExpect: 100-continue\r\n")
        first = c.read_head()
        assert first.status == 413, "got %d before the body was sent" % first.status
        c.read_exact(int(first.header("content-length") or 0))
        assert c.wait_closed(10)
    # the same limit, a body that fits: 100 then 200
    with RawClient(port) as c:
        request(c, "/small", method="POST",
                headers=b"Content-Length: 1000\r\nExpect: 100-continue\r\n")
        first = c.read_head()
        assert first.status == 100
        c.send(b"s" * 1000)
        r = c.read_response()
        assert r.status == 200
    assert [q["target"] for q in b.requests] == ["/small"]


def test_body_too_large_413_without_expect(make_portero, backend_factory):
    b = backend_factory("E2")
    port = free_port()
    make_portero(portero_config(port, {"app": [b.port]}, limits={"max_body_bytes": "1KiB"}),
                 ports=[port])
    with RawClient(port) as c:
        c.try_send(b"POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n" +
                   b"q" * 5000)
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            pytest.fail("no 413 answer; got %r" % e.partial)
        assert r.status == 413
        assert c.wait_closed(10)
    time.sleep(0.3)
    assert b.requests == []


# ---------------------------------------------------------------------------------------------
# Upstream responses in unusual (valid) shapes, from a raw backend

def raw_env(make_portero, response, keep_alive=False, workers=2):
    from rawbackend import RawBackend
    rb = RawBackend(response=response, keep_alive=keep_alive)
    port = free_port()
    make_portero(portero_config(port, {"app": [rb.port]}, workers=workers), ports=[port])
    return port, rb


def test_upstream_chunk_extensions_and_trailers(make_portero):
    port, rb = raw_env(make_portero,
                       b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                       b"5;ext=1;q=\"a b\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: v\r\n\r\n")
    try:
        with RawClient(port) as c:
            request(c, "/t")
            r = c.read_response()
            assert r.status == 200 and r.complete
            assert r.body == b"hello world"
            assert r.framing == "chunked"
    finally:
        rb.stop()


def test_upstream_http10_close_delimited(make_portero):
    port, rb = raw_env(make_portero, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                                     b"hello from 1.0")
    try:
        with RawClient(port) as c:
            request(c, "/ten")
            r = c.read_response()
            assert r.status == 200 and r.body == b"hello from 1.0"
            assert r.framing == "chunked"
            request(c, "/ten2")
            assert c.read_response().body == b"hello from 1.0"
    finally:
        rb.stop()


def test_upstream_http10_response_not_reused(make_portero):
    """An HTTP/1.0 response without keep-alive ends its connection (RFC 9112 §9.3) even if
    the backend leaves it open: portero must not reuse it."""
    port, rb = raw_env(make_portero, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
                       keep_alive=True, workers=1)
    try:
        for _ in range(2):
            with RawClient(port) as c:
                request(c, "/ten")
                r = c.read_response()
                assert r.status == 200 and r.body == b"ok"
        assert rb.connections == 2
    finally:
        rb.stop()


def test_unsolicited_100_continue_from_upstream(make_portero):
    port, rb = raw_env(make_portero, b"HTTP/1.1 100 Continue\r\n\r\n"
                                     b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    try:
        with RawClient(port) as c:
            request(c, "/uc")
            r = c.read_response()
            assert r.status == 200 and r.body == b"body"
            assert all(i.status == 100 for i in r.interim)
    finally:
        rb.stop()
