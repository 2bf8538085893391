"""Forwarding hygiene (issue 2, item 6).

Contract: hop-by-hop headers are removed both ways (Connection and the headers it names,
Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding (re-framed), Upgrade unless
tunnelling). `X-Forwarded-For` is appended with the client IP (`forwarding.x_forwarded`,
default true, also sets `X-Forwarded-Proto: http` and `X-Forwarded-Host: <Host>`);
`forwarding.forwarded: true` appends RFC 7239 `Forwarded: for=127.0.0.1;host=...;proto=http`;
`forwarding.via: true` appends `Via: 1.1 portero` to requests and responses. The Host header
is passed through unchanged (absolute-form target: Host becomes the target's authority).
Per-route `request_headers`/`response_headers` {set: {N: V}, add: {N: V}, remove: [N]}: set
replaces every instance, add appends one more, remove drops every instance.
Error answers never reveal a backend address.
"""

import hashlib
import json
import subprocess

import pytest
import requests

from conftest import RawConn, free_port, proxy_config, url, wait_for

HOP_BY_HOP = ("keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding")


@pytest.fixture
def simple(make_portero, backend_factory):
    b = backend_factory("origin")
    port = free_port()
    make_portero(proxy_config(port, [b]), ports=[port])
    return port, b


def test_request_hop_by_hop_removed(simple):
    port, b = simple
    with RawConn(port) as rc:
        rc.request("GET", "/hop", headers=[
            ("Connection", "keep-alive, X-Drop-Me, X-Drop-Too"),
            ("X-Drop-Me", "1"), ("X-Drop-Too", "2"), ("X-Keep-Me", "3"),
            ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"), ("Trailer", "X-Checksum"), ("Upgrade", "foo/1"),
        ])
        r = rc.read_response()
    assert r.status == 200, r
    seen = {k.lower() for k, _ in b.requests[-1]["headers"]}
    for h in HOP_BY_HOP + ("x-drop-me", "x-drop-too"):
        assert h not in seen, (h, b.requests[-1]["headers"])
    conn_hdr = b.requests[-1]["hmap"].get("connection", "").lower()
    assert "x-drop" not in conn_hdr
    assert b.requests[-1]["hmap"].get("x-keep-me") == "3"


def test_request_chunked_body_reframed(simple):
    """A chunked request body arrives whole at the backend, with portero's own framing."""
    port, b = simple
    data = b"0123456789" * 1000
    with RawConn(port) as rc:
        rc.send(b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"1388\r\n" + data[:5000] + b"\r\n1388\r\n" + data[5000:] + b"\r\n0\r\n\r\n")
        r = rc.read_response()
    assert r.status == 200, r
    assert r.json()["body_len"] == len(data)
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_response_hop_by_hop_removed(simple):
    port, b = simple
    q = "&".join("hdr=" + h for h in (
        "Connection:X-Secret", "X-Secret:s3cr3t", "Keep-Alive:timeout=5",
        "Proxy-Connection:keep-alive", "Trailer:X-T", "Upgrade:foo", "X-Visible:yes"))
    with RawConn(port) as rc:
        rc.request("GET", "/resp?chunked=1&" + q)
        r = rc.read_response()
        assert r.status == 200
        names = {n.lower() for n, _ in r.headers}
        for h in ("x-secret", "keep-alive", "proxy-connection", "trailer", "upgrade"):
            assert h not in names, (h, r.headers)
        assert "x-secret" not in (r.header("Connection") or "").lower()
        assert r.header("X-Visible") == "yes"
        assert json.loads(r.body)["backend"] == "origin"   # re-chunked body decodes intact
        # the connection is still in sync and alive
        rc.request("GET", "/again")
        assert rc.read_response().status == 200


def test_x_forwarded_for_added(simple):
    port, b = simple
    r = requests.get(url(port, "/xff"), headers={"Host": "shop.example.com"}, timeout=15)
    h = r.json()["headers"]
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "shop.example.com"


def test_x_forwarded_for_appended_to_existing(simple):
    port, b = simple
    r = requests.get(url(port, "/xff"), headers={"X-Forwarded-For": "203.0.113.7"}, timeout=15)
    xff = [x.strip() for x in r.json()["headers"]["x-forwarded-for"].split(",")]
    assert xff == ["203.0.113.7", "127.0.0.1"]


def test_x_forwarded_for_appended_to_a_list(simple):
    port, b = simple
    r = requests.get(url(port, "/xff"),
                     headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.2"}, timeout=15)
    xff = [x.strip() for x in r.json()["headers"]["x-forwarded-for"].split(",")]
    assert xff == ["203.0.113.7", "198.51.100.2", "127.0.0.1"]


def test_no_forwarded_or_via_by_default(simple):
    port, b = simple
    r = requests.get(url(port, "/"), timeout=15)
    assert "forwarded" not in r.json()["headers"]
    assert "via" not in r.json()["headers"]
    assert "portero" not in (r.headers.get("Via") or "")


def test_forwarded_and_via_when_enabled(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(proxy_config(port, [b], forwarding="{ forwarded: true, via: true }"),
                 ports=[port])
    r = requests.get(url(port, "/fwd"), headers={"Host": "shop.example.com"}, timeout=15)
    assert r.status_code == 200
    h = r.json()["headers"]
    fwd = h["forwarded"].lower()
    assert "for=127.0.0.1" in fwd
    assert "proto=http" in fwd
    assert "host=" in fwd and "shop.example.com" in fwd
    assert "1.1 portero" in h["via"]
    assert "1.1 portero" in r.headers.get("Via", "")


def test_forwarded_appended_to_existing(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(proxy_config(port, [b], forwarding="{ forwarded: true, via: true }"),
                 ports=[port])
    r = requests.get(url(port, "/fwd"), headers={"Forwarded": "for=192.0.2.60",
                                                 "Via": "1.0 fred"}, timeout=15)
    h = r.json()["headers"]
    assert h["forwarded"].startswith("for=192.0.2.60")
    assert "for=127.0.0.1" in h["forwarded"]
    assert h["via"].startswith("1.0 fred")
    assert "1.1 portero" in h["via"]


def test_x_forwarded_disabled(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(proxy_config(port, [b], forwarding="{ x_forwarded: false }"), ports=[port])
    r = requests.get(url(port, "/"), timeout=15)
    h = r.json()["headers"]
    assert "x-forwarded-for" not in h
    assert "x-forwarded-proto" not in h
    assert "x-forwarded-host" not in h


def test_host_passed_through(simple):
    port, b = simple
    r = requests.get(url(port, "/h"), headers={"Host": "Custom.Example:1234"}, timeout=15)
    assert r.json()["headers"]["host"] == "Custom.Example:1234"
    assert [v for n, v in b.requests[-1]["headers"] if n.lower() == "host"] == \
        ["Custom.Example:1234"]


def test_absolute_form_target_uses_its_authority(simple):
    port, b = simple
    with RawConn(port) as rc:
        rc.send(b"GET http://abs.example.net/p?q=1 HTTP/1.1\r\nHost: abs.example.net\r\n\r\n")
        r = rc.read_response()
    assert r.status == 200, r
    j = r.json()
    assert j["headers"]["host"] == "abs.example.net"
    assert j["target"] == "/p?q=1"


@pytest.fixture
def rewriting(make_portero, backend_factory):
    b = backend_factory("origin")
    port = free_port()
    routes = """\
  - match: { path_prefix: /rw/ }
    upstream: app
    request_headers:
      set: { X-Env: prod }
      add: { X-Added: from-proxy }
      remove: [ X-Secret-Token, Cookie ]
    response_headers:
      set: { X-Frame-Options: DENY }
      add: { X-Extra: one }
      remove: [ Server, X-Powered-By ]
  - match: { path_prefix: / }
    upstream: app
"""
    make_portero(proxy_config(port, [b], routes=routes), ports=[port])
    return port, b


def test_request_headers_set_add_remove(rewriting):
    port, b = rewriting
    with RawConn(port) as rc:
        rc.request("GET", "/rw/x", headers=[
            ("X-Env", "dev"), ("X-Env", "staging"), ("X-Added", "from-client"),
            ("X-Secret-Token", "t0k3n"), ("x-secret-token", "again"), ("Cookie", "a=b"),
            ("X-Other", "kept")])
        r = rc.read_response()
    assert r.status == 200
    hs = b.requests[-1]["headers"]
    assert [v for n, v in hs if n.lower() == "x-env"] == ["prod"]
    added = [v for n, v in hs if n.lower() == "x-added"]
    assert "from-client" in ", ".join(added) and "from-proxy" in ", ".join(added)
    assert not [n for n, v in hs if n.lower() in ("x-secret-token", "cookie")]
    assert [v for n, v in hs if n.lower() == "x-other"] == ["kept"]


def test_response_headers_set_add_remove(rewriting):
    port, b = rewriting
    r = requests.get(url(port, "/rw/x?hdr=X-Frame-Options:SAMEORIGIN&hdr=X-Extra:origin"),
                     timeout=15)
    assert r.status_code == 200
    assert "origin-test" not in r.headers.get("Server", "")
    assert "X-Powered-By" not in r.headers
    assert r.headers["X-Frame-Options"] == "DENY"
    extra = r.headers["X-Extra"]         # requests joins repeated headers with ", "
    assert "origin" in extra and "one" in extra
    assert r.json()["backend"] == "origin"


def test_route_without_rewrites_passes_origin_headers_but_not_server(rewriting):
    port, b = rewriting
    r = requests.get(url(port, "/plain"), timeout=15)
    assert r.headers.get("Server") == "portero"  # server_header: the backend stays unnamed
    assert r.headers.get("X-Powered-By") == "test"


def test_request_body_forwarded_intact(simple):
    port, b = simple
    data = bytes(range(256)) * 4096    # 1 MiB, every byte value
    r = requests.post(url(port, "/upload"), data=data, timeout=30)
    assert r.status_code == 200
    assert r.json()["body_len"] == len(data)
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_error_bodies_do_not_leak_backend_address(make_portero, backend_factory):
    slow = backend_factory("slow")
    dead_port = free_port()
    port = free_port()
    cfg = f"""\
workers: 1
log: {{ access: off }}
listeners:
  - {{ name: web, address: "127.0.0.1:{port}" }}
upstreams:
  dead:
    servers: [ {{ address: "127.0.0.1:{dead_port}" }} ]
    timeouts: {{ connect: 1s }}
  slow:
    servers: [ {{ address: "{slow.address}" }} ]
    timeouts: {{ response: 1s }}
routes:
  - match: {{ path_prefix: /dead }}
    upstream: dead
  - match: {{ path_prefix: /slow }}
    upstream: slow
"""
    make_portero(cfg, ports=[port])
    r = requests.get(url(port, "/dead"), timeout=30)
    assert r.status_code == 502
    assert r.text == "502 Bad Gateway\n"
    r2 = requests.get(url(port, "/slow?delay=4"), timeout=30)
    assert r2.status_code == 504
    assert r2.text == "504 Gateway Timeout\n"
    for resp, bport in ((r, dead_port), (r2, slow.port)):
        blob = resp.text + "".join("%s: %s\n" % kv for kv in resp.headers.items())
        assert "127.0.0.1" not in blob
        assert str(bport) not in blob


def test_ipv6_client_forwarding_headers(make_portero, backend_factory):
    """An IPv6 client: X-Forwarded-For gets "::1"; RFC 7239 quotes it: for="[::1]"."""
    import socket as _s
    try:
        s = _s.socket(_s.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    b = backend_factory()
    port = free_port()
    text = proxy_config(port, [b], forwarding="{ forwarded: true }").replace(
        '"127.0.0.1:%d"' % port, '"[::1]:%d"' % port)
    p = make_portero(text)
    assert wait_for(lambda: "listening on" in p.stderr_text() or not p.running(), 10)
    r = subprocess.run(["curl", "-sS", "-g", "--max-time", "15",
                        "http://[::1]:%d/v6" % port], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    h = json.loads(r.stdout)["headers"]
    assert h["x-forwarded-for"] == "::1"
    assert 'for="[::1]"' in h["forwarded"]


def test_curl_through_proxy_with_chunked_upstream(simple):
    """curl (a real client) gets a re-chunked upstream body intact, and hop-by-hop headers
    of the backend never reach it."""
    port, b = simple
    r = subprocess.run(["curl", "-sS", "-i", "--max-time", "15",
                        url(port, "/c?chunked=1&size=100000&hdr=Keep-Alive:timeout=9")],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"keep-alive: timeout" not in head.lower()
    assert body == b"x" * 100000
