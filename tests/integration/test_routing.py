"""Routing (issue 2, item 7).

Contract: routes match `host` (exact, compared case-insensitively without the port, or
`*.example.com`, which matches any name ending in ".example.com" but not "example.com"),
`path` (exact), `path_prefix`, `path_regex` (PCRE2), `methods`, `headers` (name
case-insensitive, value exact); paths are matched without the query. The first matching route
in file order wins. Actions: `upstream` (with optional `strip_prefix`: removed when it is a
prefix, an empty result becomes "/"), `respond` (status default 200, body, headers),
`redirect` (status default 302; location expands $host, $request_uri, $scheme). No match ->
404 with a short plain body `404 Not Found\\n`; the connection stays open.
"""

import http.client
import json
import socket

import pytest

from conftest import RawConn, free_port


@pytest.fixture
def routed(make_portero, backend_factory):
    """portero with upstreams a, b, c (one backend each) and a set of routes."""
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    port = free_port()
    cfg = f"""\
workers: 1
log: {{ access: off }}
listeners:
  - {{ name: web, address: "127.0.0.1:{port}" }}
upstreams:
  a: {{ servers: [ {{ address: "{a.address}" }} ] }}
  b: {{ servers: [ {{ address: "{b.address}" }} ] }}
  c: {{ servers: [ {{ address: "{c.address}" }} ] }}
routes:
  - name: api-host
    match: {{ host: api.example.com }}
    upstream: a
  - name: wildcard
    match: {{ host: "*.example.com" }}
    upstream: b
  - match: {{ path: /exact }}
    upstream: a
  - match: {{ path_regex: "^/items/[0-9]+$" }}
    upstream: b
  - match: {{ path_prefix: /methods/, methods: [GET, POST] }}
    upstream: a
  - match: {{ path_prefix: /methods/ }}
    respond: {{ status: 405, body: "other method\\n" }}
  - match: {{ path_prefix: /canary/, headers: {{ X-Env: canary }} }}
    upstream: c
  - match: {{ path_prefix: /canary/ }}
    upstream: a
  - match: {{ path_prefix: /first/ }}
    upstream: a
  - match: {{ path_prefix: /first/second/ }}
    upstream: b
  - match: {{ path_prefix: /v1/ }}
    upstream: c
    strip_prefix: /v1
  - match: {{ path: /v2 }}
    upstream: c
    strip_prefix: /v2
  - match: {{ path_prefix: /api/ }}
    upstream: b
  - match: {{ path: /teapot }}
    respond: {{ status: 418, body: "short and stout\\n", headers: {{ Content-Type: text/plain, X-Custom: yes-indeed }} }}
  - match: {{ path: /empty }}
    respond: {{ status: 204 }}
  - match: {{ path: /old }}
    redirect: {{ status: 301, location: "$scheme://$host/new?from=$request_uri" }}
  - match: {{ path: /temp }}
    redirect: {{ location: "https://$host/elsewhere" }}
"""
    make_portero(cfg, ports=[port])
    return port, a, b, c


def get(port, path, host="test.local", method="GET", headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    h = {"Host": host} if host else {}
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def backend_of(r, data):
    assert r.status == 200, (r.status, data)
    return json.loads(data)["backend"]


def test_host_exact(routed):
    port, *_ = routed
    r, d = get(port, "/x", host="api.example.com")
    assert backend_of(r, d) == "a"


def test_host_exact_ignores_port_and_case(routed):
    port, *_ = routed
    r, d = get(port, "/x", host="API.Example.COM:%d" % port)
    assert backend_of(r, d) == "a"


def test_host_wildcard(routed):
    port, *_ = routed
    for host in ("www.example.com", "deep.sub.example.com"):
        r, d = get(port, "/x", host=host)
        assert backend_of(r, d) == "b", host


def test_host_wildcard_does_not_match_bare_domain(routed):
    port, *_ = routed
    r, d = get(port, "/nothing-here", host="example.com")
    assert r.status == 404


def test_path_exact(routed):
    port, *_ = routed
    r, d = get(port, "/exact")
    assert backend_of(r, d) == "a"
    r, d = get(port, "/exact?with=query")
    assert backend_of(r, d) == "a"
    assert json.loads(d)["target"] == "/exact?with=query"
    r, d = get(port, "/exact/more")
    assert r.status == 404
    r, d = get(port, "/exactly")
    assert r.status == 404


def test_path_regex(routed):
    port, *_ = routed
    r, d = get(port, "/items/42")
    assert backend_of(r, d) == "b"
    r, d = get(port, "/items/42?x=1")
    assert backend_of(r, d) == "b"
    r, d = get(port, "/items/abc")
    assert r.status == 404
    r, d = get(port, "/items/42/more")
    assert r.status == 404


def test_path_prefix(routed):
    port, *_ = routed
    r, d = get(port, "/api/users")
    assert backend_of(r, d) == "b"
    assert json.loads(d)["path"] == "/api/users"
    r, d = get(port, "/apix")
    assert r.status == 404


def test_methods(routed):
    port, *_ = routed
    r, d = get(port, "/methods/x", method="GET")
    assert backend_of(r, d) == "a"
    r, d = get(port, "/methods/x", method="POST", body=b"abc")
    assert backend_of(r, d) == "a"
    assert json.loads(d)["body_len"] == 3
    r, d = get(port, "/methods/x", method="DELETE")
    assert r.status == 405 and d == b"other method\n"


def test_header_match(routed):
    port, *_ = routed
    r, d = get(port, "/canary/x", headers={"X-Env": "canary"})
    assert backend_of(r, d) == "c"
    r, d = get(port, "/canary/x", headers={"x-env": "canary"})   # name case-insensitive
    assert backend_of(r, d) == "c"
    r, d = get(port, "/canary/x", headers={"X-Env": "Canary"})   # value exact
    assert backend_of(r, d) == "a"
    r, d = get(port, "/canary/x")
    assert backend_of(r, d) == "a"


def test_first_match_in_file_order(routed):
    port, *_ = routed
    # /first/second/x matches both /first/ (earlier) and /first/second/ (later)
    r, d = get(port, "/first/second/x")
    assert backend_of(r, d) == "a"
    # a host route listed first beats a later path route
    r, d = get(port, "/items/42", host="api.example.com")
    assert backend_of(r, d) == "a"


def test_strip_prefix(routed):
    port, _, _, c = routed
    r, d = get(port, "/v1/users/7?x=1&y=2")
    j = json.loads(d)
    assert backend_of(r, d) == "c"
    assert j["target"] == "/users/7?x=1&y=2"
    r, d = get(port, "/v1/")
    assert json.loads(d)["target"] == "/"
    r, d = get(port, "/v2")
    assert json.loads(d)["target"] == "/"
    r, d = get(port, "/v2?q=1")
    assert json.loads(d)["target"] == "/?q=1"


def test_respond(routed):
    port, a, b, c = routed
    r, d = get(port, "/teapot")
    assert r.status == 418
    assert d == b"short and stout\n"
    assert r.getheader("Content-Type") == "text/plain"
    assert r.getheader("X-Custom") == "yes-indeed"
    assert r.getheader("Content-Length") == str(len(d))
    assert a.request_count() + b.request_count() + c.request_count() == 0


def test_respond_head_has_no_body(routed):
    port, *_ = routed
    with RawConn(port) as rc:
        rc.request("HEAD", "/teapot")
        r = rc.read_response(method="HEAD")
        assert r.status == 418
        # the connection is still usable and in sync: no body bytes were sent after the head
        rc.request("GET", "/teapot")
        r2 = rc.read_response()
        assert r2.status == 418 and r2.body == b"short and stout\n"


def test_respond_204(routed):
    port, *_ = routed
    with RawConn(port) as rc:
        rc.request("GET", "/empty")
        r = rc.read_response()
        assert r.status == 204
        assert r.body == b""
        rc.request("GET", "/teapot")
        assert rc.read_response().status == 418


def test_redirect_variables(routed):
    port, *_ = routed
    r, d = get(port, "/old?a=1&b=2", host="shop.example.org")
    assert r.status == 301
    assert r.getheader("Location") == "http://shop.example.org/new?from=/old?a=1&b=2"


def test_redirect_http10_without_host_names_our_address(routed):
    """An HTTP/1.0 request may carry no Host: $host is then the address the client reached."""
    port, *_ = routed
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /temp HTTP/1.0\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 302 ")
    assert b"\r\nLocation: https://127.0.0.1:%d/elsewhere\r\n" % port in got


def test_redirect_default_status_302(routed):
    port, *_ = routed
    r, d = get(port, "/temp", host="shop.example.org")
    assert r.status == 302
    assert r.getheader("Location") == "https://shop.example.org/elsewhere"


def test_no_match_404_short_body_connection_kept(routed):
    port, a, b, c = routed
    with RawConn(port) as rc:
        rc.request("GET", "/no/such/route")
        r = rc.read_response()
        assert r.status == 404
        assert r.body == b"404 Not Found\n"
        assert (r.header("Content-Type") or "").startswith("text/plain")
        # connection stays open after a 404
        rc.request("GET", "/teapot")
        assert rc.read_response().status == 418
    assert a.request_count() + b.request_count() + c.request_count() == 0
