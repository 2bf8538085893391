"""Timeouts (issue 2, item 9).

Contract: `limits.header_timeout` (the whole request head must arrive in time, else 408 and
close), `limits.body_timeout` (client body idle -> 408 and close), `limits.keepalive_timeout`
(idle keep-alive connection closed silently), upstream `timeouts.connect` (-> 502 after
retries), `timeouts.response` (no response head in time -> 504), `timeouts.idle` (upstream
body stalls -> client connection aborted, since the head was already sent). Upstream
connection refused -> 502. Error answers: short plain bodies, `Connection: close` for 408.

Timing assertions are loose upper bounds only (the machine may be slow and busy).
"""

import time

import requests

from conftest import RawConn, free_port, proxy_config, url


def start(make_portero, backends, **kw):
    port = free_port()
    make_portero(proxy_config(port, backends, **kw), ports=[port])
    return port


def test_header_timeout_408_on_partial_head(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ header_timeout: 1s }")
    with RawConn(port, timeout=15) as rc:
        t0 = time.monotonic()
        rc.send(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Partial: ")
        r = rc.read_response()
        assert r.status == 408
        assert r.body == b"408 Request Timeout\n"
        assert "close" in (r.header("Connection") or "").lower()
        assert rc.closed_by_peer(10)
        assert time.monotonic() - t0 < 10
    assert b.request_count() == 0


def test_header_timeout_covers_whole_head_slowloris(make_portero, backend_factory):
    """Trickling one header byte every 0.2 s does not extend the head deadline."""
    b = backend_factory()
    port = start(make_portero, [b], limits="{ header_timeout: 1s }")
    head = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Long: " + b"a" * 200 + b"\r\n\r\n"
    with RawConn(port, timeout=15) as rc:
        rc.send(head[:20])
        got = b""
        rc.sock.settimeout(0.2)
        for i in range(20, len(head)):          # bounded: ~50 s at most, ends early below
            try:
                rc.sock.send(head[i:i + 1])
            except OSError:
                break                          # portero closed: fine
            try:
                data = rc.sock.recv(4096)
                got += data
                if not data or b"\r\n\r\n" in got:
                    break
            except TimeoutError:
                pass
            except OSError:
                break
        if b"\r\n\r\n" not in got:
            rc.sock.settimeout(10)
            try:
                got += rc.sock.recv(4096)
            except OSError:
                pass
    assert got.startswith(b"HTTP/1.1 408"), got
    assert b.request_count() == 0


def test_keepalive_timeout_closes_idle_client_connection(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ keepalive_timeout: 1s }")
    with RawConn(port, timeout=15) as rc:
        rc.request("GET", "/ka")
        assert rc.read_response().status == 200
        t0 = time.monotonic()
        assert rc.closed_by_peer(10), "idle keep-alive connection was not closed"
        assert time.monotonic() - t0 < 9


def test_keepalive_timeout_not_applied_while_busy(make_portero, backend_factory):
    """A request that takes longer than keepalive_timeout is not cut off."""
    b = backend_factory()
    port = start(make_portero, [b], limits="{ keepalive_timeout: 1s }")
    with RawConn(port, timeout=15) as rc:
        rc.request("GET", "/busy?delay=2.5")
        assert rc.read_response().status == 200


def test_upstream_connect_refused_502(make_portero):
    dead = free_port()
    port = start(make_portero, ["127.0.0.1:%d" % dead], timeouts="{ connect: 1s }")
    r = requests.get(url(port, "/x"), timeout=30)
    assert r.status_code == 502
    assert r.text == "502 Bad Gateway\n"
    assert (r.headers.get("Content-Type") or "").startswith("text/plain")


def test_upstream_connect_timeout_502(make_portero):
    """A blackholed address (TEST-NET-1, not routed) -> 502 after the connect timeout (or at
    once if the network says unreachable)."""
    port = start(make_portero, ["192.0.2.1:81"], timeouts="{ connect: 1s }")
    t0 = time.monotonic()
    r = requests.get(url(port, "/x"), timeout=30)
    assert r.status_code == 502
    assert time.monotonic() - t0 < 15
    assert "192.0.2.1" not in r.text


def test_connect_failure_falls_over_to_another_server(make_portero, backend_factory):
    """With one dead and one live server, requests still succeed: a connect failure happens
    before any response byte, so the exchange is retried on another server (DESIGN.md: "the
    balancer yields candidates in order, so a retry skips what it tried"; contract: connect
    failure -> 502 only "after retries")."""
    b = backend_factory("live")
    dead = free_port()
    port = start(make_portero, ["127.0.0.1:%d" % dead, b], timeouts="{ connect: 1s }")
    s = requests.Session()
    for i in range(4):
        r = s.get(url(port, "/f%d" % i), timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["backend"] == "live"


def test_response_timeout_504(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], timeouts="{ response: 1s }")
    t0 = time.monotonic()
    r = requests.get(url(port, "/slow?delay=5"), timeout=30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 504
    assert r.text == "504 Gateway Timeout\n"
    assert elapsed < 4.5, elapsed
    # a fast request on the same route still works
    assert requests.get(url(port, "/fast"), timeout=15).status_code == 200


def test_response_timeout_counts_until_head(make_portero, backend_factory):
    """A backend whose head arrives in time but whose body takes longer than `response` is
    not cut off by the response timeout (the idle timeout is larger)."""
    b = backend_factory()
    port = start(make_portero, [b], timeouts="{ response: 1s, idle: 10s }")
    r = requests.get(url(port, "/s?size=4000&drip=0.6&pieces=4"), timeout=30)
    assert r.status_code == 200
    assert r.content == b"x" * 4000


def test_upstream_idle_body_stall_aborts_client(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], timeouts="{ response: 5s, idle: 1s }")
    with RawConn(port, timeout=20) as rc:
        rc.request("GET", "/stall?size=1000&drip=6&pieces=2")
        version, status, reason, headers = rc.read_head()
        assert status == 200
        rest = rc.read_until_close(timeout=20)
    # the first 500 bytes came, then the backend stalled for 6 s > idle: the connection was
    # aborted before the rest arrived (a chunked re-frame would also lack its last chunk)
    assert b"x" * 100 in rest
    assert rest.count(b"x") < 1000, len(rest)


def test_body_timeout_slow_upload_408(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], limits="{ body_timeout: 1s }")
    with RawConn(port, timeout=15) as rc:
        rc.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"z" * 10)
        t0 = time.monotonic()
        r = rc.read_response()
        assert r.status == 408
        assert "close" in (r.header("Connection") or "").lower()
        assert rc.closed_by_peer(10)
        assert time.monotonic() - t0 < 10
    # the backend never got a complete request
    assert b.request_count() == 0


def test_body_slow_but_steady_upload_succeeds(make_portero, backend_factory):
    """body_timeout is an idle timeout: a body trickled with pauses shorter than it works (with
    min_body_rate off: test_abuse.py covers the rate floor)."""
    b = backend_factory()
    port = start(make_portero, [b], limits="{ body_timeout: 2s, min_body_rate: 0 }")
    with RawConn(port, timeout=15) as rc:
        rc.send(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n")
        for i in range(4):
            time.sleep(0.7)
            rc.send(b"q" * 10)
        r = rc.read_response()
    assert r.status == 200
    assert r.json()["body_len"] == 40
