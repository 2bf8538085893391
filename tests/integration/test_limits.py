"""Limits (issue 2, items 5 and 11).

Contract: `limits.max_body_bytes` -> 413 (with `Expect: 100-continue` and a Content-Length
over the limit, 413 at once without reading the body); `limits.max_request_line` -> 414;
`limits.max_header_bytes` (whole head incl. request line) / `limits.max_headers` -> 431.
These answers carry `Content-Type: text/plain`, `Content-Length`, `Connection: close` and a
short body, and the connection is closed. `limits.max_connections` (per process): at the
limit portero stops accepting (connections wait in the kernel backlog) and resumes below it.
"""

import socket

import pytest
import requests

from conftest import RawConn, free_port, proxy_config, url


def start(make_portero, backends, **kw):
    port = free_port()
    make_portero(proxy_config(port, backends, **kw), ports=[port])
    return port


def assert_error_and_close(rc, status):
    """Reads a portero error answer: STATUS, short plain body "STATUS Reason\\n",
    Connection: close, and the connection closed after it."""
    r = rc.read_response()
    assert r.status == status, r
    assert r.body.startswith(b"%d " % status) and r.body.endswith(b"\n"), r.body
    assert len(r.body) < 64
    assert (r.header("Content-Type") or "").startswith("text/plain")
    assert "close" in (r.header("Connection") or "").lower()
    assert rc.closed_by_peer(10)
    return r


@pytest.fixture
def body_limited(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ max_body_bytes: 1KiB }")
    return port, b


def test_max_body_bytes_content_length_413(body_limited):
    port, b = body_limited
    with RawConn(port) as rc:
        rc.request("POST", "/big", body=b"a" * 2000)
        assert_error_and_close(rc, 413)
    assert b.request_count() == 0


def test_max_body_bytes_at_limit_ok(body_limited):
    port, b = body_limited
    r = requests.post(url(port, "/ok"), data=b"a" * 1024, timeout=15)
    assert r.status_code == 200
    assert r.json()["body_len"] == 1024


def test_max_body_bytes_chunked_413(body_limited):
    port, b = body_limited
    with RawConn(port) as rc:
        rc.send(b"POST /big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(4):
                rc.send(b"200\r\n" + b"c" * 0x200 + b"\r\n")
            rc.send(b"0\r\n\r\n")
        except OSError:
            pass   # portero may answer and close before we finish sending
        assert_error_and_close(rc, 413)
    # the backend never got a complete request
    assert b.request_count() == 0


def test_max_body_bytes_chunked_under_limit_ok(body_limited):
    port, b = body_limited

    def gen():
        for _ in range(4):
            yield b"d" * 200

    r = requests.post(url(port, "/ok"), data=gen(), timeout=15)
    assert r.status_code == 200
    assert r.json()["body_len"] == 800


def test_max_body_bytes_expect_100_continue_413_without_reading(body_limited):
    port, b = body_limited
    with RawConn(port) as rc:
        rc.send(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                b"Expect: 100-continue\r\n\r\n")
        r = rc.read_response()
        assert r.status == 413          # not 100 Continue first
        assert r.interim == []
    assert b.request_count() == 0


def test_expect_100_continue_under_limit(body_limited):
    port, b = body_limited
    with RawConn(port) as rc:
        rc.send(b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\n\r\n")
        version, status, reason, headers = rc.read_head()
        assert status == 100
        rc.send(b"0123456789")
        r = rc.read_response()
        assert r.status == 200
        assert r.json()["body_len"] == 10


def test_max_request_line_414(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ max_request_line: 1KiB }")
    with RawConn(port) as rc:
        rc.request("GET", "/" + "a" * 2000)
        assert_error_and_close(rc, 414)
    r = requests.get(url(port, "/" + "a" * 500), timeout=15)
    assert r.status_code == 200
    assert b.request_count() == 1


def test_default_request_line_limit_414(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.request("GET", "/" + "a" * 20000)     # default 8 KiB
        r = rc.read_response()
        assert r.status == 414


def test_max_header_bytes_431(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ max_header_bytes: 4KiB }")
    with RawConn(port) as rc:
        rc.request("GET", "/h", headers=[("X-Big-%d" % i, "v" * 1000) for i in range(6)])
        assert_error_and_close(rc, 431)
    ok = requests.get(url(port, "/h"), headers={"X-Small": "v" * 1000}, timeout=15)
    assert ok.status_code == 200
    assert b.request_count() == 1


def test_max_headers_431(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ max_headers: 10 }")
    with RawConn(port) as rc:
        rc.request("GET", "/n", headers=[("X-H%d" % i, "v") for i in range(20)])
        assert_error_and_close(rc, 431)
    with RawConn(port) as rc:
        rc.request("GET", "/n", headers=[("X-H%d" % i, "v") for i in range(5)])
        assert rc.read_response().status == 200
    assert b.request_count() == 1


def _served(rc, timeout):
    """The first bytes that arrive on RC within TIMEOUT seconds, or None."""
    rc.sock.settimeout(timeout)
    try:
        data = rc.sock.recv(65536)
    except socket.timeout:
        return None
    return data


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections(make_portero, backend_factory, workers):
    """max_connections: 2 without shedding -> a third connection is not served until one of the first two
    closes; then it is. The limit is per process, so it holds with two workers too."""
    b = backend_factory()
    port = start(make_portero, [b], workers=workers,
                 limits="{ max_connections: 2, shed_connections: 0, keepalive_timeout: 60s }")
    c1, c2 = RawConn(port, timeout=15), RawConn(port, timeout=15)
    try:
        for c in (c1, c2):
            c.request("GET", "/held")
            assert c.read_response().status == 200
        # the third connection is accepted by the kernel (backlog) but not served
        c3 = RawConn(port, timeout=15)
        try:
            c3.request("GET", "/third")
            assert _served(c3, 1.5) is None, "third connection was served at the limit"
            c1.close()
            c3.sock.settimeout(15)
            r = c3.read_response()
            assert r.status == 200
            assert r.json()["path"] == "/third"
        finally:
            c3.close()
        # the second one is still alive and served
        c2.request("GET", "/again")
        assert c2.read_response().status == 200
    finally:
        c1.close()
        c2.close()


def test_max_connections_resumes_after_burst(make_portero, backend_factory):
    """Many short connections with max_connections: 2 are all eventually served."""
    b = backend_factory()
    port = start(make_portero, [b], limits="{ max_connections: 2, shed_connections: 0 }")
    for i in range(20):
        r = requests.get(url(port, "/burst/%d" % i), headers={"Connection": "close"},
                         timeout=15)
        assert r.status_code == 200
    assert b.request_count() == 20
