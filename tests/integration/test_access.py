"""Access control and connection defences (issue 6, items 1, 3 and 7): allow/deny lists on
listeners and routes, trusted proxies (X-Forwarded-For and the PROXY protocol v1/v2) giving
the real client to ACLs and logs, per-address connection limits, overload shedding, the
Server header and security headers, and error pages that name no backend."""

import json
import socket
import struct

import requests

from conftest import free_port, proxy_config, wait_for


def _raw(port, data, read_timeout=10):
    """Sends DATA on a fresh connection and returns everything read until the peer closes or a
    full response with Content-Length arrives."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and len(body) >= int(value):
                        return out
        return out
    finally:
        s.close()


def _held_connections(port, n):
    """N keep-alive connections, each proven accepted and counted by one answered request."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            assert chunk, "held connection closed"
            got += chunk
        assert _status(got) == 200
        held.append(s)
    return held


def _status(raw):
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None


def _body_json(raw):
    return json.loads(raw.partition(b"\r\n\r\n")[2])


# --- allow / deny -------------------------------------------------------------------------------

def test_route_deny_list_answers_403_and_backend_sees_nothing(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    routes = ("  - match: { path_prefix: /admin }\n    upstream: app\n    deny: [127.0.0.0/8]\n"
              "  - match: { path_prefix: / }\n    upstream: app\n    allow: [127.0.0.1]\n")
    make_portero(proxy_config(port, [b], routes=routes), ports=[port])
    r = requests.get("http://127.0.0.1:%d/admin/x" % port, timeout=10)
    assert r.status_code == 403
    assert r.text == "403 Forbidden\n"
    assert r.headers["Server"] == "portero"
    assert b.request_count() == 0
    r = requests.get("http://127.0.0.1:%d/open" % port, timeout=10)
    assert r.status_code == 200
    assert b.request_count() == 1


def test_first_match_wins_in_file_order(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    # deny comes first: 127.0.0.1 is in both lists, so it is denied
    routes = ("  - match: { path: /a }\n    upstream: app\n    deny: [127.0.0.1]\n    allow: [127.0.0.0/8]\n"
              "  - match: { path: /b }\n    upstream: app\n    allow: [127.0.0.0/8]\n    deny: [127.0.0.1]\n"
              "  - match: { path: /c }\n    upstream: app\n    allow: [10.0.0.0/8]\n")
    make_portero(proxy_config(port, [b], routes=routes), ports=[port])
    assert requests.get("http://127.0.0.1:%d/a" % port, timeout=10).status_code == 403
    assert requests.get("http://127.0.0.1:%d/b" % port, timeout=10).status_code == 200
    # an allow list that does not match denies
    assert requests.get("http://127.0.0.1:%d/c" % port, timeout=10).status_code == 403


def test_listener_acl_and_ipv6(make_portero, backend_factory):
    b = backend_factory()
    port4, port6 = free_port(), free_port()
    cfg = ("workers: 1\nlog: { access: off }\nlisteners:\n"
           '  - { name: v4, address: "127.0.0.1:%d", deny: [all] }\n'
           '  - { name: v6, address: "[::1]:%d", allow: ["::1/128"] }\n'
           'upstreams: { app: { servers: [ { address: "%s" } ] } }\n'
           "routes:\n  - { match: { path_prefix: / }, upstream: app }\n") % (port4, port6, b.address)
    make_portero(cfg, ports=[port4])
    assert wait_for(lambda: _try_connect6(port6))
    r = requests.get("http://127.0.0.1:%d/" % port4, timeout=10)
    assert r.status_code == 403
    r = requests.get("http://[::1]:%d/" % port6, timeout=10)
    assert r.status_code == 200


def _try_connect6(port):
    try:
        socket.create_connection(("::1", port), timeout=1).close()
        return True
    except OSError:
        return False


# --- trusted proxies -------------------------------------------------------------------------------

def test_x_forwarded_for_from_trusted_proxy_gives_the_real_client(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    port = free_port()
    log = tmp_path / "access.log"
    routes = "  - match: { path_prefix: / }\n    upstream: app\n    deny: [203.0.113.0/24]\n"
    make_portero(proxy_config(port, [b], routes=routes, log="{ access: %s, flush_interval: 100ms }" % log,
                              extra="trusted_proxies: [127.0.0.1, 10.0.0.0/8]"), ports=[port])
    url = "http://127.0.0.1:%d/" % port
    # the client (203.0.113.9) went through 10.1.1.1 (trusted) then 127.0.0.1 (trusted): denied
    r = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9, 10.1.1.1"}, timeout=10)
    assert r.status_code == 403
    # a spoofed left-most entry does not help: the right-most untrusted hop is the client
    r = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.4"}, timeout=10)
    assert r.status_code == 200
    assert wait_for(lambda: "198.51.100.4" in log.read_text() if log.exists() else False)
    # the backend still gets the whole chain plus the connecting peer
    assert r.json()["headers"]["x-forwarded-for"] == "203.0.113.9, 198.51.100.4, 127.0.0.1"
    # hops may carry a port; a hop that is not an address stops the walk at the last trusted one
    r = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9:4711"}, timeout=10)
    assert r.status_code == 403
    r = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9, [2001:db8::1]:443"}, timeout=10)
    assert r.status_code == 200
    r = requests.get(url, headers={"X-Forwarded-For": "203.0.113.9:junk"}, timeout=10)
    assert r.status_code == 200  # not believed: the client is taken to be the proxy, 127.0.0.1


def test_x_forwarded_for_from_untrusted_peer_is_ignored_for_acl(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    routes = "  - match: { path_prefix: / }\n    upstream: app\n    allow: [127.0.0.1]\n"
    make_portero(proxy_config(port, [b], routes=routes, extra="trusted_proxies: [10.0.0.0/8]"), ports=[port])
    r = requests.get("http://127.0.0.1:%d/" % port, headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert r.status_code == 200  # 127.0.0.1 is not trusted: its claim is not believed


# --- PROXY protocol -----------------------------------------------------------------------------------

def _proxy_config(port, b, trusted="127.0.0.1", acl=""):
    return ("workers: 1\nlog: { access: off }\ntrusted_proxies: [%s]\nlisteners:\n"
            '  - { name: lb, address: "127.0.0.1:%d", proxy_protocol: true %s}\n'
            'upstreams: { app: { servers: [ { address: "%s" } ] } }\n'
            "routes:\n  - { match: { path_prefix: / }, upstream: app }\n") % (trusted, port, acl, b.address)


def _v2_header(src, dst, sport, dport):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    addr = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(addr)) + addr


def test_proxy_protocol_v1_and_v2_give_the_client_address(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(_proxy_config(port, b), ports=[port])
    get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = _raw(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 80\r\n" + get)
    assert _status(raw) == 200
    assert _body_json(raw)["headers"]["x-forwarded-for"] == "192.0.2.10"
    raw = _raw(port, _v2_header("198.51.100.20", "127.0.0.1", 40001, 80) + get)
    assert _status(raw) == 200
    assert _body_json(raw)["headers"]["x-forwarded-for"] == "198.51.100.20"


def test_proxy_protocol_garbage_or_missing_header_closes(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(_proxy_config(port, b), ports=[port])
    assert _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert _raw(port, b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    assert b.request_count() == 0


def test_proxy_protocol_from_untrusted_peer_is_refused(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(_proxy_config(port, b, trusted="10.0.0.0/8"), ports=[port])
    raw = _raw(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 80\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw == b""
    assert b.request_count() == 0


def test_proxy_protocol_address_feeds_the_acl(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(_proxy_config(port, b, acl=", deny: [192.0.2.0/24]"), ports=[port])
    get = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _status(_raw(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 80\r\n" + get)) == 403
    assert _status(_raw(port, b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 80\r\n" + get)) == 200


# --- connection limits ----------------------------------------------------------------------------------

def test_max_connections_per_ip_sheds_the_extra_with_429(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    cfg = proxy_config(port, [b]).replace('address: "127.0.0.1:%d" }' % port,
                                          'address: "127.0.0.1:%d", max_connections_per_ip: 3 }' % port)
    p = make_portero(cfg, ports=[port])
    held = _held_connections(port, 3)
    try:
        raw = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(raw) == 429
        assert b"Retry-After: 1" in raw
    finally:
        for s in held:
            s.close()
    # the count goes down with the closes
    assert wait_for(lambda: _status(_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200)
    assert p.running()


def test_overload_sheds_with_503_past_max_connections(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(proxy_config(port, [b], limits="{ max_connections: 2, shed_connections: 50 }"), ports=[port])
    held = _held_connections(port, 2)
    try:
        raw = _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(raw) == 503
        assert b"Connection: close" in raw
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: _status(_raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200)
    assert p.running()


# --- Server header, security headers, error pages --------------------------------------------------------

def test_server_header_hides_the_backend(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    make_portero(proxy_config(port, [b]), ports=[port])
    r = requests.get("http://127.0.0.1:%d/" % port, timeout=10)
    assert r.headers["Server"] == "portero"  # the origin's "origin-test" is replaced

    port2 = free_port()
    make_portero(proxy_config(port2, [b], extra="server_header: off"), ports=[port2])
    r = requests.get("http://127.0.0.1:%d/" % port2, timeout=10)
    assert "Server" not in r.headers

    port3 = free_port()
    make_portero(proxy_config(port3, [b], extra='server_header: "edge"'), ports=[port3])
    r = requests.get("http://127.0.0.1:%d/" % port3, timeout=10)
    assert r.headers["Server"] == "edge"
    r = requests.get("http://127.0.0.1:%d/" % port3, headers={"Host": "x"}, timeout=10)
    assert r.headers["Server"] == "edge"


def test_security_headers_on_proxied_and_local_answers(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    sec = ('    security_headers: { hsts: "max-age=63072000; includeSubDomains", content_type_options: nosniff,'
           ' frame_options: DENY, referrer_policy: no-referrer, csp: "default-src \'self\'" }\n')
    routes = ("  - match: { path: /local }\n    respond: { status: 200, body: hi }\n" + sec +
              "  - match: { path_prefix: / }\n    upstream: app\n" + sec)
    make_portero(proxy_config(port, [b], routes=routes), ports=[port])
    for path in ("/local", "/x?hdr=X-Frame-Options:SAMEORIGIN"):
        r = requests.get("http://127.0.0.1:%d%s" % (port, path), timeout=10)
        assert r.status_code == 200
        assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"  # ours replaces the origin's
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["Content-Security-Policy"] == "default-src 'self'"


def test_error_pages_never_name_the_backend(make_portero):
    dead = free_port()  # nothing listens here
    port = free_port()
    make_portero(proxy_config(port, ["127.0.0.1:%d" % dead]), ports=[port])
    r = requests.get("http://127.0.0.1:%d/" % port, timeout=10)
    assert r.status_code == 502
    assert r.text == "502 Bad Gateway\n"
    assert str(dead) not in r.text and "127.0.0.1" not in r.text
    assert r.headers["Server"] == "portero"
    assert all(str(dead) not in v for v in r.headers.values())


# --- path normalization: no way around a route's controls ----------------------------------------------

def test_dot_segments_and_double_slashes_cannot_dodge_a_route(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    routes = ("  - match: { path_prefix: /admin }\n    upstream: app\n    deny: [all]\n"
              "  - match: { path_prefix: / }\n    upstream: app\n")
    make_portero(proxy_config(port, [b], routes=routes), ports=[port])
    for target in (b"/public/../admin/x", b"//admin/x", b"/public/%2e%2e/admin", b"/./admin",
                   b"/public/.%2E/admin?q=1"):
        raw = _raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _status(raw) == 403, target
    assert b.request_count() == 0
    # climbing above the root is refused outright
    raw = _raw(port, b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(raw) == 400
    # what the backend receives is what the route matched, query untouched
    raw = _raw(port, b"GET /a/./b//c/../d?x=/../y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _status(raw) == 200
    assert _body_json(raw)["target"] == "/a/b/d?x=/../y"
    assert b.request_count() == 1


def test_refused_body_is_not_lost_to_a_reset(make_portero, backend_factory):
    """A 413 sent while the client is still uploading is followed by a lingering close: the
    client reads the whole answer even though it keeps sending after it."""
    b = backend_factory()
    port = free_port()
    make_portero(proxy_config(port, [b], limits="{ max_body_bytes: 1KiB }"), ports=[port])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        got = b""
        sent = 0
        s.setblocking(False)
        while sent < 2000000 and b"\r\n\r\n" not in got:
            try:
                sent += s.send(b"x" * 65536)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                got += s.recv(65536)
            except BlockingIOError:
                pass
        s.setblocking(True)
        s.settimeout(10)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 413 ")
    assert got.endswith(b"413 Content Too Large\n")
    assert b.request_count() == 0
