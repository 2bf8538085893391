"""Keep-alive on both sides and upstream connection reuse (issue 2, items 4 and 8).

Contract: keep-alive to clients and to upstreams; pipelined requests answered in order;
requests go upstream as HTTP/1.1 keep-alive, pooled per worker (`keepalive.max_idle` idle
connections per worker and server, closed after `keepalive.idle_timeout`); reuse is visible
through the backend's per-connection id. HTTP/1.0 clients get `Connection: close` unless they
sent keep-alive. A request that fails on a reused pooled upstream connection before any
response byte (the backend closed it) is retried once on a fresh connection when the method
is idempotent; a non-idempotent one (POST) is not retried (the client gets 502 and the
backend sees the POST only once).
"""

import json
import threading

import pytest
import requests

from conftest import RawConn, free_port, proxy_config, url, wait_for


def start(make_portero, backends, **kw):
    port = free_port()
    make_portero(proxy_config(port, backends, **kw), ports=[port])
    return port


def test_client_keepalive_many_requests_one_connection(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        local = rc.sock.getsockname()
        for i in range(10):
            rc.request("GET", "/ka/%d" % i)
            r = rc.read_response()
            assert r.status == 200
            assert r.json()["path"] == "/ka/%d" % i
            assert "close" not in (r.header("Connection") or "").lower()
        assert rc.sock.getsockname() == local
    # every request came through, over a single upstream connection (workers: 1)
    assert b.request_count() == 10
    assert set(b.conn_ids()) == {b.requests[0]["conn_id"]}


def test_pipelined_requests_answered_in_order(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.send(b"".join(b"GET /pipe/%d?delay=%s HTTP/1.1\r\nHost: t\r\n\r\n"
                         % (i, b"0.2" if i == 0 else b"0") for i in range(5)))
        paths = [rc.read_response().json()["path"] for _ in range(5)]
    assert paths == ["/pipe/%d" % i for i in range(5)]


def test_upstream_connection_reused(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    # separate client connections, sequential requests: one upstream connection serves all
    ids = []
    for i in range(6):
        r = requests.get(url(port, "/reuse/%d" % i), headers={"Connection": "close"}, timeout=15)
        ids.append(r.json()["conn_id"])
    assert len(set(ids)) == 1, ids
    assert b.connections == 1
    assert [r["request_no"] for r in b.requests] == list(range(1, 7))
    assert all(r["version"] == "HTTP/1.1" for r in b.requests)


def test_upstream_reuse_after_http10_client(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    for i in range(3):
        with RawConn(port) as rc:
            rc.send(b"GET /old/%d HTTP/1.0\r\nHost: t\r\n\r\n" % i)
            r = rc.read_response()
            assert r.status == 200
    assert b.connections == 1
    assert all(r["version"] == "HTTP/1.1" for r in b.requests)


def test_http10_client_gets_connection_close(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.send(b"GET /ten HTTP/1.0\r\nHost: t\r\n\r\n")
        r = rc.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/ten"
        assert "close" in (r.header("Connection") or "").lower(), r.headers
        assert rc.closed_by_peer(10)


def test_http10_keepalive_client_kept_open(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        for i in range(2):
            rc.send(b"GET /ten-ka HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            r = rc.read_response()
            assert r.status == 200
            assert r.header("Content-Length") is not None
            assert "keep-alive" in (r.header("Connection") or "").lower()


def test_client_connection_close_honoured(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.request("GET", "/bye", headers=[("Connection", "close")])
        r = rc.read_response()
        assert r.status == 200
        assert "close" in (r.header("Connection") or "").lower()
        assert rc.closed_by_peer(10)


def test_backend_connection_close_then_new_upstream_connection(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.request("GET", "/x?closeconn=1")
        r1 = rc.read_response()
        rc.request("GET", "/y")
        r2 = rc.read_response()   # the client connection survives the upstream close
    assert r1.status == 200 and r2.status == 200
    assert r1.json()["conn_id"] != r2.json()["conn_id"]
    assert b.connections == 2


def test_close_delimited_upstream_response(make_portero, backend_factory):
    """A close-delimited upstream body reaches an HTTP/1.1 client whole (sent chunked), and
    the client connection stays usable."""
    b = backend_factory()
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.request("GET", "/cd?close=1&size=50000")
        r = rc.read_response()
        assert r.status == 200
        assert r.body == b"x" * 50000
        assert (r.header("Transfer-Encoding") or "").lower() == "chunked"
        rc.request("GET", "/after")
        assert rc.read_response().status == 200


def test_max_idle_respected(make_portero, backend_factory):
    """max_idle: 1 -> after 3 concurrent requests end, portero keeps one idle upstream
    connection and closes the other two; the next request reuses the kept one."""
    b = backend_factory()
    port = start(make_portero, [b], keepalive="{ max_idle: 1, idle_timeout: 60s }")
    results = []

    def one(i):
        results.append(requests.get(url(port, "/mi/%d?delay=1" % i), timeout=20).status_code)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [200, 200, 200]
    assert b.connections == 3
    assert wait_for(lambda: b.open_connections == 1, 10), b.open_connections
    assert len(b.closed_by_peer) == 2
    r = requests.get(url(port, "/mi/after"), timeout=15)
    assert r.status_code == 200
    assert b.connections == 3                      # no new connection
    assert r.json()["conn_id"] not in b.closed_by_peer


def test_idle_timeout_closes_idle_upstream_connection(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b], keepalive="{ max_idle: 8, idle_timeout: 1s }")
    r = requests.get(url(port, "/it"), timeout=15)
    cid = r.json()["conn_id"]
    assert wait_for(lambda: cid in b.closed_by_peer, 10), "idle upstream connection not closed"
    r2 = requests.get(url(port, "/it2"), timeout=15)
    assert r2.status_code == 200
    assert r2.json()["conn_id"] != cid
    assert b.connections == 2


def test_retry_get_on_reused_connection_dropped_by_backend(make_portero, backend_factory):
    """The backend reads the second request on the pooled connection and closes without a
    byte of response: portero retries the GET once on a fresh connection."""
    b = backend_factory(drop_reused=1)
    port = start(make_portero, [b])
    s = requests.Session()
    r1 = s.get(url(port, "/first"), timeout=15)
    assert r1.status_code == 200
    r2 = s.get(url(port, "/second"), timeout=15)
    assert r2.status_code == 200
    assert r2.json()["path"] == "/second"
    assert r2.json()["request_no"] == 1            # answered on a fresh connection
    seconds = [r for r in b.requests if r["target"] == "/second"]
    assert len(seconds) == 2 and seconds[0].get("dropped")
    assert b.connections == 2


def test_retry_after_backend_closed_idle_connections(make_portero, backend_factory):
    b = backend_factory()
    port = start(make_portero, [b])
    s = requests.Session()
    for i in range(3):
        assert s.get(url(port, "/a%d" % i), timeout=15).status_code == 200
        assert b.close_idle() >= 1
        # whether portero notices the close first or only when it writes, the GET succeeds
    assert s.get(url(port, "/last"), timeout=15).status_code == 200
    assert b.connections >= 4


def test_head_and_delete_are_retried_too(make_portero, backend_factory):
    """HEAD and DELETE are idempotent: also retried on a fresh connection."""
    b = backend_factory(drop_reused=2)
    port = start(make_portero, [b])
    s = requests.Session()
    assert s.get(url(port, "/warm"), timeout=15).status_code == 200
    # each retry leaves a fresh pooled connection, which the next request reuses (and the
    # backend drops again)
    assert s.head(url(port, "/h"), timeout=15).status_code == 200
    assert s.delete(url(port, "/d"), timeout=15).status_code == 200
    assert [r["method"] for r in b.requests if r.get("dropped")] == ["HEAD", "DELETE"]
    assert [r["method"] for r in b.requests] == ["GET", "HEAD", "HEAD", "DELETE", "DELETE"]


def test_put_with_small_body_is_retried(make_portero, backend_factory):
    """PUT is idempotent (RFC 9110 9.2.2), and the contract retries idempotent methods: a small
    PUT body that portero still holds can be replayed on the fresh connection."""
    b = backend_factory(drop_reused=1)
    port = start(make_portero, [b])
    s = requests.Session()
    assert s.get(url(port, "/warm"), timeout=15).status_code == 200
    r = s.put(url(port, "/p"), data=b"abc", timeout=15)
    assert r.status_code == 200
    assert r.json()["body_len"] == 3
    assert [x["method"] for x in b.requests if x.get("dropped")] == ["PUT"]


def test_post_not_retried_on_reused_connection(make_portero, backend_factory):
    b = backend_factory(drop_reused=1)
    port = start(make_portero, [b])
    s = requests.Session()
    assert s.get(url(port, "/warm"), timeout=15).status_code == 200
    r = s.post(url(port, "/order"), data=b"buy 1", timeout=15)
    assert r.status_code == 502
    assert "127.0.0.1" not in r.text
    posts = [x for x in b.requests if x["method"] == "POST"]
    assert len(posts) == 1, "POST was sent to the backend %d times" % len(posts)
    # the next request works again
    assert s.get(url(port, "/after"), timeout=15).status_code == 200


def test_response_body_not_retried_after_bytes_sent(make_portero, backend_factory):
    """Once response bytes reached the client, a failure is not retried: a body cut short by
    the backend leaves the client with a truncated response (the connection is closed), and
    the backend sees the request once."""
    def handler(backend, conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 100)
        return False

    b = backend_factory(handler=handler)
    port = start(make_portero, [b])
    with RawConn(port) as rc:
        rc.request("GET", "/trunc")
        head = rc.read_head()
        assert head[1] == 200
        rest = rc.read_until_close(timeout=15)
    assert len(rest) < 1000
    assert b.request_count() == 1


@pytest.mark.parametrize("n", [50])
def test_many_sequential_requests_single_upstream_connection(make_portero, backend_factory, n):
    b = backend_factory()
    port = start(make_portero, [b])
    s = requests.Session()
    for i in range(n):
        r = s.get(url(port, "/seq/%d" % i), timeout=15)
        assert r.status_code == 200 and json.loads(r.content)["path"] == "/seq/%d" % i
    assert b.connections == 1
