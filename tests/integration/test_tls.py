"""TLS termination, client certificates and TLS to upstreams (issue 4, items 1, 3 and 5).

Contract (plan of issue 4): a listener with `tls: { certificates: [{cert, key, ocsp?}...] }`
speaks TLS 1.2 and 1.3 only (`min_version: "1.3"` drops 1.2), with a modern cipher list (no
CBC-SHA1, 3DES, RC4, export) in server preference for 1.2. The certificate is chosen by SNI:
exact names, then wildcards (`*.w.test`), then the first certificate (the default); of an RSA
and an ECDSA certificate for one name, the client's signature algorithms decide. ALPN offers
`h2, http/1.1` (or `alpn:`). Session tickets resume sessions on any worker and across reloads.
`ocsp:` staples a DER response. A reload re-reads certificates and keys (same paths included)
without dropping connections; a bad key at start or `-t` fails naming the file, at reload the
old config stays. `redirect_https: PORT|true` on a plain listener answers 301 (GET/HEAD) or 308
(other methods) to https://HOST[:PORT]/path?query. `hsts:` adds Strict-Transport-Security on
TLS responses. `client_auth: { mode: optional|required, ca, header }` passes the verified
subject to the backend in the header (default X-Client-Cert-Subject) and strips a client's own.
Upstream `tls: { verify, ca, sni, client_cert, client_key }`: verification failure -> 502 and a
log line saying why; pooled TLS connections; TLS sessions resumed to upstreams.
"""

import os
import signal
import ssl

import pytest

from admin_client import build_config, to_yaml, upstream
from conftest import PORTERO_BIN, RawConn, free_port, wait_for
from test_reload import reload_ok
from tlsutil import (TLSBackend, _leaf, all_certs, certs, client_context, fetch,  # noqa: F401
                     read_http_response, s_client, server_context, tls_connect, tls_get,
                     tls_listener)


def start(make_portero, certs, backend, *, tls=None, workers=1, http2=None, ocsp=True,
          certificates=None, more_listeners=(), extra=None, upstreams=None, routes=None):
    """portero with a TLS listener `tls` (every test certificate unless CERTIFICATES) in front
    of BACKEND; returns (portero, port)."""
    port = free_port()
    lst = tls_listener("tls", port, certificates or all_certs(certs, ocsp=ocsp), http2=http2,
                       **(tls or {}))
    cfg = build_config(port, upstreams or {"app": upstream([backend])}, workers=workers,
                       routes=routes, extra=extra)
    cfg["listeners"] = [lst] + list(more_listeners)
    ports = [port] + [int(l["address"].rsplit(":", 1)[1]) for l in more_listeners]
    p = make_portero(to_yaml(cfg), ports=ports)
    return p, port


def https(port, path="/", host="a.test"):
    return "https://%s:%d%s" % (host, port, path)


def get(certs, port, path="/", host="a.test", mode="--http1.1", **kw):
    return fetch(https(port, path, host), ca=certs.ca, resolve_to=(host, port), mode=mode, **kw)


@pytest.fixture
def tls_proxy(make_portero, backend_factory, certs):
    b = backend_factory("origin")
    p, port = start(make_portero, certs, b)
    return p, port, b


# --- basic traffic -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode,version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl_over_tls(tls_proxy, certs, mode, version):
    p, port, b = tls_proxy
    r = get(certs, port, "/hello?x=1", mode=mode)
    assert r.rc == 0 and r.status == 200, r
    assert r.version == version, r
    j = r.json()
    assert j["backend"] == "origin" and j["target"] == "/hello?x=1"
    assert j["headers"]["host"] == "a.test:%d" % port
    assert j["headers"]["x-forwarded-proto"] == "https"
    # a POST body arrives intact
    data = os.urandom(200000)
    r = get(certs, port, "/post", mode=mode, data=data)
    assert r.status == 200, r
    import hashlib
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


# --- certificate selection ---------------------------------------------------------------------

@pytest.mark.parametrize("servername,want", [
    ("b.test", "O = b, CN = b.test"),
    ("x.w.test", "O = wild, CN = *.w.test"),
    ("other.w.test", "O = wild, CN = *.w.test"),
    ("B.TEST", "O = b, CN = b.test"),
    ("unknown.test", "CN = a.test"),     # the default certificate
    ("w.test", "CN = a.test"),           # a wildcard needs one more label
    (None, "CN = a.test"),               # no SNI: the default
])
def test_sni_selects_certificate(tls_proxy, certs, servername, want):
    _, port, _ = tls_proxy
    r = s_client(port, servername=servername, ca=certs.ca)
    assert r.ok, r
    assert r.subject.endswith(want) if want.startswith("CN") else r.subject == want, r


@pytest.mark.parametrize("args,want", [
    (("-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256"), "O = a-ecdsa, CN = a.test"),
    (("-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256"), "O = a-rsa, CN = a.test"),
    (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "O = a-ecdsa, CN = a.test"),
    (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "O = a-rsa, CN = a.test"),
], ids=["tls13-ecdsa", "tls13-rsa", "tls12-ecdsa", "tls12-rsa"])
def test_rsa_or_ecdsa_by_client_capabilities(tls_proxy, certs, args, want):
    _, port, _ = tls_proxy
    r = s_client(port, *args, servername="a.test", ca=certs.ca)
    assert r.ok, r
    assert r.subject == want, r
    assert r.verify_code == 0, r


# --- ALPN --------------------------------------------------------------------------------------

@pytest.mark.parametrize("offer,want", [("h2", "h2"), ("http/1.1", "http/1.1"),
                                        ("h2,http/1.1", "h2"), ("http/1.1,h2", "h2")])
def test_alpn(tls_proxy, certs, offer, want):
    _, port, _ = tls_proxy
    r = s_client(port, "-alpn", offer, servername="a.test", ca=certs.ca)
    assert r.ok and r.alpn == want, r


def test_no_alpn_speaks_http11(tls_proxy, certs):
    _, port, _ = tls_proxy
    ctx = client_context(certs)           # offers no ALPN at all
    status, headers, body = tls_get(port, "/noalpn", ctx=ctx)
    assert status == 200 and b'"/noalpn"' in body


def test_alpn_list_from_config(make_portero, backend_factory, certs):
    b = backend_factory()
    _, port = start(make_portero, certs, b, tls={"alpn": ["http/1.1"]})
    r = s_client(port, "-alpn", "h2,http/1.1", servername="a.test", ca=certs.ca)
    assert r.ok and r.alpn == "http/1.1", r
    r = get(certs, port, "/x", mode="--http2")      # curl falls back to HTTP/1.1
    assert r.status == 200 and r.version == "1.1", r


# --- protocol versions and ciphers -------------------------------------------------------------

@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_protocols_refused(tls_proxy, certs, flag):
    _, port, _ = tls_proxy
    # SECLEVEL=0 so that our own client is willing to offer them
    r = s_client(port, flag, "-cipher", "DEFAULT:@SECLEVEL=0", servername="a.test")
    assert not r.client_refused, r
    assert not r.ok, r


@pytest.mark.parametrize("flag,proto", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_accepted(tls_proxy, certs, flag, proto):
    _, port, _ = tls_proxy
    r = s_client(port, flag, servername="a.test", ca=certs.ca)
    assert r.ok and r.protocol == proto, r


def test_min_version_13(make_portero, backend_factory, certs):
    b = backend_factory()
    _, port = start(make_portero, certs, b, tls={"min_version": "1.3"})
    assert not s_client(port, "-tls1_2", servername="a.test").ok
    assert s_client(port, "-tls1_3", servername="a.test").ok


# 3DES, RC4 and export suites: Debian's OpenSSL 3 cannot even offer them (testssl probes them
# with raw sockets: test_testssl.py)
@pytest.mark.parametrize("cipher", ["AES128-SHA", "AES256-SHA", "ECDHE-RSA-AES128-SHA",
                                    "ECDHE-ECDSA-AES256-SHA", "NULL-SHA256"])
def test_weak_ciphers_refused(tls_proxy, certs, cipher):
    _, port, _ = tls_proxy
    r = s_client(port, "-tls1_2", "-cipher", cipher + ":@SECLEVEL=0", servername="a.test")
    if r.client_refused:
        pytest.skip("this OpenSSL cannot offer %s at all" % cipher)
    assert not r.ok, r


def test_server_cipher_preference_tls12(tls_proxy, certs):
    """The same cipher whatever the client's order (the server's preference decides)."""
    _, port, _ = tls_proxy
    offered = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-ECDSA-CHACHA20-POLY1305"]
    picks = set()
    for order in (offered, offered[::-1], offered[1:] + offered[:1]):
        r = s_client(port, "-tls1_2", "-cipher", ":".join(order), servername="a.test")
        assert r.ok, r
        picks.add(r.cipher)
    assert len(picks) == 1, picks


# --- session resumption ------------------------------------------------------------------------

def _one_request(port, ctx, session=None, path="/r"):
    """A new TLS connection and one request: (session_reused, session)."""
    s = tls_connect(port, ctx, session=session)
    try:
        status, _, _ = tls_get(port, path, sock=s, headers=[("Connection", "close")])
        assert status == 200
        return s.session_reused, s.session
    finally:
        s.close()


def _client_ctx(certs, version):
    ctx = client_context(certs, alpn=["http/1.1"])
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
def test_session_resumption_across_workers(make_portero, backend_factory, certs, version):
    """Tickets issued by one worker are accepted by every worker (shared ticket keys)."""
    b = backend_factory()
    _, port = start(make_portero, certs, b, workers=2)
    ctx = _client_ctx(certs, version)
    reused, sess = _one_request(port, ctx)
    assert not reused and sess is not None
    results = []
    for i in range(8):                 # new connections, spread over the workers
        reused, _ = _one_request(port, ctx, session=sess, path="/r%d" % i)
        results.append(reused)
    assert all(results), results


def test_session_resumption_s_client(tls_proxy, certs, tmp_path):
    _, port, _ = tls_proxy
    sess = str(tmp_path / "sess.pem")
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    r1 = s_client(port, "-ign_eof", "-sess_out", sess, servername="a.test", data=req)
    assert r1.ok and not r1.reused, r1
    r2 = s_client(port, "-ign_eof", "-sess_in", sess, servername="a.test", data=req)
    assert r2.ok and r2.reused, r2
    assert "HTTP/1.1 200" in r2.text


def test_session_resumption_after_reload(make_portero, backend_factory, certs):
    b = backend_factory()
    p, port = start(make_portero, certs, b, workers=2)
    ctx = _client_ctx(certs, ssl.TLSVersion.TLSv1_3)
    _, sess = _one_request(port, ctx)
    reload_ok(p)
    reused, _ = _one_request(port, ctx, session=sess)
    assert reused


# --- OCSP stapling -----------------------------------------------------------------------------

def test_ocsp_stapled(tls_proxy, certs):
    _, port, _ = tls_proxy
    r = s_client(port, "-status", "-sigalgs", "rsa_pss_rsae_sha256", servername="a.test",
                 ca=certs.ca)
    assert r.ok and r.subject == "O = a-rsa, CN = a.test", r
    assert r.ocsp_status == "successful", r
    assert "Cert Status: good" in r.text, r
    # the ECDSA certificate has no OCSP file: nothing stapled
    r = s_client(port, "-status", "-sigalgs", "ecdsa_secp256r1_sha256", servername="a.test")
    assert r.ok and r.subject == "O = a-ecdsa, CN = a.test", r
    assert r.ocsp_status is None and "no response sent" in r.text, r


# --- reload: certificate swap, bad keys --------------------------------------------------------

def _peer_org(sock):
    cert = sock.getpeercert()
    return dict(x[0] for x in cert["subject"])["organizationName"]


def test_certificate_swap_on_reload_keeps_connections(make_portero, backend_factory, certs,
                                                      tmp_path):
    """The file behind b.test is replaced (same path, as a renewal does) and portero reloaded
    while a request is in flight on an old connection: that request and the next on the same
    connection succeed; new connections get the new certificate."""
    b = backend_factory()
    live_cert, live_key = tmp_path / "b-live.pem", tmp_path / "b-live.key"
    live_cert.write_bytes(open(certs.b, "rb").read())
    live_key.write_bytes(open(certs.b_key, "rb").read())
    p, port = start(make_portero, certs, b,
                    certificates=[(certs.a_rsa, certs.a_rsa_key),
                                  (str(live_cert), str(live_key))])
    new_cert, new_key = _leaf(tmp_path, "b-new", "/O=b-renewed/CN=b.test", certs.ca,
                              certs.ca_key, 0x4001, ["DNS:b.test"])
    ctx = client_context(certs, alpn=["http/1.1"])
    old = tls_connect(port, ctx, server_hostname="b.test")
    try:
        assert _peer_org(old) == "b"
        old.sendall(b"GET /slow?delay=2 HTTP/1.1\r\nHost: b.test\r\n\r\n")
        wait_for(lambda: b.active > 0, timeout=5)
        os.replace(new_key, live_key)
        os.replace(new_cert, live_cert)
        reload_ok(p)
        status, _, body = read_http_response(old)
        assert status == 200 and b"/slow" in body
        old.sendall(b"GET /again HTTP/1.1\r\nHost: b.test\r\n\r\n")
        status, _, body = read_http_response(old)
        assert status == 200 and b"/again" in body
    finally:
        old.close()
    fresh = tls_connect(port, ctx, server_hostname="b.test")
    try:
        assert _peer_org(fresh) == "b-renewed"
    finally:
        fresh.close()


def _tls_config_text(certs, port, b, key):
    lst = tls_listener("tls", port, [(certs.a_rsa, key)])
    cfg = build_config(port, {"app": upstream([b])})
    cfg["listeners"] = [lst]
    return to_yaml(cfg)


@pytest.mark.parametrize("kind", ["missing", "garbage", "mismatch"])
def test_bad_key_fails_check_naming_the_file(backend_factory, certs, tmp_path, kind):
    import subprocess
    b = backend_factory()
    if kind == "missing":
        key = str(tmp_path / "no-such.key")
    elif kind == "garbage":
        key = str(tmp_path / "garbage.key")
        open(key, "w").write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    else:
        key = certs.b_key                    # a valid key of another certificate
    cfg = tmp_path / "p.yaml"
    cfg.write_text(_tls_config_text(certs, free_port(), b, key))
    r = subprocess.run([PORTERO_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode != 0, (r.stdout, r.stderr)
    named = key if kind != "mismatch" else None
    if named:
        assert named in r.stderr, r.stderr
    else:
        assert key in r.stderr or certs.a_rsa in r.stderr, r.stderr
    assert "configuration ok" not in r.stdout + r.stderr


def test_bad_key_at_start_exits(make_portero, backend_factory, certs, tmp_path):
    b = backend_factory()
    port = free_port()
    key = str(tmp_path / "absent.key")
    p = make_portero(_tls_config_text(certs, port, b, key), expect_start=False)
    assert p.wait(20) not in (None, 0)
    assert key in p.stderr_text()


def test_bad_key_at_reload_keeps_old_config(make_portero, backend_factory, certs, tmp_path):
    b = backend_factory()
    port = free_port()
    p = make_portero(_tls_config_text(certs, port, b, certs.a_rsa_key), ports=[port])
    key = str(tmp_path / "gone.key")
    p.config_path.write_text(_tls_config_text(certs, port, b, key))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: key in p.stderr_text(), timeout=15), p.stderr_text()[-3000:]
    assert p.running()
    r = s_client(port, servername="a.test", ca=certs.ca)
    assert r.ok and r.subject == "O = a-rsa, CN = a.test", r
    r = get(certs, port, "/still")
    assert r.status == 200, r


# --- redirect_https and HSTS -------------------------------------------------------------------

@pytest.fixture
def redirecting(make_portero, backend_factory):
    b = backend_factory()
    p1, p2 = free_port(), free_port()
    cfg = build_config(p1, {"app": upstream([b])}, listeners=[("to8443", p1), ("to443", p2)])
    cfg["listeners"][0]["redirect_https"] = 8443
    cfg["listeners"][1]["redirect_https"] = True
    make_portero(to_yaml(cfg), ports=[p1, p2])
    return p1, p2, b


@pytest.mark.parametrize("method,status", [("GET", 301), ("HEAD", 301), ("POST", 308),
                                           ("PUT", 308), ("DELETE", 308)])
def test_redirect_https(redirecting, method, status):
    p1, p2, b = redirecting
    with RawConn(p1) as c:
        c.request(method, "/some/path?q=1&r=%20x", host="shop.test:%d" % p1,
                  body=b"data" if method in ("POST", "PUT") else b"")
        r = c.read_response(method)
    assert r.status == status, r
    assert r.header("Location") == "https://shop.test:8443/some/path?q=1&r=%20x", r
    with RawConn(p2) as c:
        c.request(method, "/p", host="shop.test")
        r = c.read_response(method)
    assert r.status == status, r
    assert r.header("Location") == "https://shop.test/p", r
    assert b.request_count() == 0


@pytest.fixture
def hsts_proxy(make_portero, backend_factory, certs):
    b = backend_factory()
    plain = free_port()
    p, port = start(make_portero, certs, b,
                    tls={"hsts": {"max_age": "365d", "include_subdomains": True}},
                    more_listeners=[{"name": "plain", "address": "127.0.0.1:%d" % plain}])
    return port, plain


@pytest.mark.parametrize("mode", ["--http1.1", "--http2"])
def test_hsts_on_tls_only(hsts_proxy, certs, mode):
    port, plain = hsts_proxy
    r = get(certs, port, "/h", mode=mode)
    assert r.status == 200, r
    assert r.header("strict-transport-security") == "max-age=31536000; includeSubDomains", r
    r = fetch("http://127.0.0.1:%d/h" % plain, mode="--http1.1")
    assert r.status == 200 and r.header("strict-transport-security") is None, r


def test_hsts_preload(make_portero, backend_factory, certs):
    b = backend_factory()
    _, port = start(make_portero, certs, b,
                    tls={"hsts": {"max_age": "730d", "include_subdomains": True, "preload": True}})
    r = get(certs, port, "/h")
    assert r.header("strict-transport-security") == \
        "max-age=63072000; includeSubDomains; preload", r


# --- client certificates -----------------------------------------------------------------------

def _client_auth(make_portero, backend_factory, certs, mode):
    b = backend_factory()
    _, port = start(make_portero, certs, b,
                    tls={"client_auth": {"mode": mode, "ca": certs.client_ca}})
    return port, b


def test_client_cert_optional(make_portero, backend_factory, certs):
    port, b = _client_auth(make_portero, backend_factory, certs, "optional")
    r = get(certs, port, "/nocert")
    assert r.status == 200, r
    assert "x-client-cert-subject" not in r.json()["headers"]
    r = get(certs, port, "/forged", headers=[("X-Client-Cert-Subject", "CN=admin")])
    assert r.status == 200, r
    assert "x-client-cert-subject" not in r.json()["headers"], r.json()
    r = get(certs, port, "/alice", cert=certs.alice, key=certs.alice_key,
            headers=[("X-Client-Cert-Subject", "CN=admin")])
    assert r.status == 200, r
    subj = r.json()["headers"]["x-client-cert-subject"]
    assert "CN=alice" in subj and "O=clients" in subj and "admin" not in subj, subj
    for mode in ("--http1.1", "--http2"):
        r = get(certs, port, "/mallory", cert=certs.mallory, key=certs.mallory_key, mode=mode)
        # an untrusted certificate never passes as verified
        assert r.status != 200 or "x-client-cert-subject" not in r.json()["headers"], r


def test_client_cert_required(make_portero, backend_factory, certs):
    port, b = _client_auth(make_portero, backend_factory, certs, "required")
    r = get(certs, port, "/nocert")
    assert r.rc != 0 and r.status == 0, r
    r = get(certs, port, "/mallory", cert=certs.mallory, key=certs.mallory_key)
    assert r.rc != 0 and r.status == 0, r
    assert b.request_count() == 0
    for mode in ("--http1.1", "--http2"):
        r = get(certs, port, "/alice", cert=certs.alice, key=certs.alice_key, mode=mode)
        assert r.status == 200, r
        assert "CN=alice" in r.json()["headers"]["x-client-cert-subject"]


def test_client_cert_custom_header(make_portero, backend_factory, certs):
    b = backend_factory()
    _, port = start(make_portero, certs, b,
                    tls={"client_auth": {"mode": "optional", "ca": certs.client_ca,
                                         "header": "X-Ssl-Dn"}})
    r = get(certs, port, "/c", cert=certs.alice, key=certs.alice_key,
            headers=[("X-Ssl-Dn", "forged")])
    h = r.json()["headers"]
    assert "CN=alice" in h["x-ssl-dn"] and "forged" not in h["x-ssl-dn"], h
    r = get(certs, port, "/c", headers=[("X-Ssl-Dn", "forged")])
    assert "x-ssl-dn" not in r.json()["headers"], r


# --- TLS to upstreams --------------------------------------------------------------------------

@pytest.fixture
def tls_backends():
    made = []

    def factory(ctx, name="tlsb"):
        b = TLSBackend(ctx, name=name)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


def _plain_proxy(make_portero, up, *, workers=1, retries=None):
    port = free_port()
    if retries is not None:
        up = dict(up, retries=retries)
    cfg = build_config(port, {"app": up}, workers=workers)
    p = make_portero(to_yaml(cfg), ports=[port])
    return p, port


def _http_get(port, path):
    with RawConn(port) as c:
        c.request("GET", path, headers=[("Connection", "close")])
        return c.read_response()


def test_upstream_tls_verified(make_portero, tls_backends, certs):
    b = tls_backends(server_context(certs.backend, certs.backend_key))
    _, port = _plain_proxy(make_portero, upstream(
        [b], tls={"verify": True, "ca": certs.ca, "sni": "backend.test"}))
    for i in range(5):
        r = _http_get(port, "/up%d" % i)
        assert r.status == 200, r
        assert r.json()["path"] == "/up%d" % i
    # pooled: 5 requests over one TLS connection
    assert b.handshakes == 1, (b.handshakes, b.handshake_errors)
    assert len(set(b.conn_ids())) == 1
    assert b.snis == ["backend.test"]
    assert b.tls_versions == ["TLSv1.3"]


def _log_has(p, *words, timeout=10):
    def find():
        for line in p.stderr_text().splitlines():
            low = line.lower()
            if all(w.lower() in low for w in words):
                return line
        return None
    return wait_for(find, timeout=timeout)


@pytest.mark.parametrize("case", ["wrong-ca", "wrong-sni", "untrusted-server", "system-store"])
def test_upstream_tls_verification_failure(make_portero, tls_backends, certs, case):
    if case == "untrusted-server":
        b = tls_backends(server_context(certs.evil_backend, certs.evil_backend_key))
        tls = {"verify": True, "ca": certs.ca, "sni": "backend.test"}
    else:
        b = tls_backends(server_context(certs.backend, certs.backend_key))
        tls = {"wrong-ca": {"verify": True, "ca": certs.client_ca, "sni": "backend.test"},
               "wrong-sni": {"verify": True, "ca": certs.ca, "sni": "other.test"},
               "system-store": True}[case]
    p, port = _plain_proxy(make_portero, upstream([b], tls=tls))
    r = _http_get(port, "/v")
    assert r.status == 502, r
    assert b.request_count() == 0
    why = {"wrong-sni": "mismatch"}.get(case, "certificate")
    line = _log_has(p, "verif", why)
    assert line, "no log line about the verification failure:\n" + p.stderr_text()[-3000:]
    assert b.address in line or "app" in line, line


def test_upstream_tls_no_verify(make_portero, tls_backends, certs):
    b = tls_backends(server_context(certs.evil_backend, certs.evil_backend_key))
    _, port = _plain_proxy(make_portero, upstream([b], tls={"verify": False}))
    assert _http_get(port, "/nv").status == 200


def test_upstream_mtls(make_portero, tls_backends, certs):
    ctx = server_context(certs.backend, certs.backend_key, client_ca=certs.client_ca)
    b = tls_backends(ctx)
    base = {"verify": True, "ca": certs.ca, "sni": "backend.test"}
    _, port = _plain_proxy(make_portero, upstream([b], tls=dict(
        base, client_cert=certs.up_client, client_key=certs.up_client_key)))
    r = _http_get(port, "/mtls")
    assert r.status == 200, r
    assert b.peer_subjects and b.peer_subjects[-1]["commonName"] == "portero-upstream"
    b2 = tls_backends(server_context(certs.backend, certs.backend_key, client_ca=certs.client_ca))
    p2, port2 = _plain_proxy(make_portero, upstream([b2], tls=base))
    r = _http_get(port2, "/mtls")
    assert r.status == 502, r
    assert b2.request_count() == 0


def test_upstream_tls_session_resumed(make_portero, tls_backends, certs):
    """The backend closes after every response: each request needs a new TLS connection, and
    portero resumes the session it got on the first."""
    b = tls_backends(server_context(certs.backend, certs.backend_key))
    _, port = _plain_proxy(make_portero, upstream(
        [b], tls={"verify": True, "ca": certs.ca, "sni": "backend.test"}))
    for i in range(5):
        assert _http_get(port, "/s%d?closeconn=1" % i).status == 200
    assert b.handshakes == 5, (b.handshakes, b.handshake_errors)
    assert b.resumed >= 3, (b.resumed, b.handshakes)


def test_upstream_tls_over_tls_listener_h2(make_portero, tls_backends, certs):
    """HTTP/2 over TLS in front, TLS behind: the whole chain."""
    b = tls_backends(server_context(certs.backend, certs.backend_key))
    _, port = start(make_portero, certs, None, upstreams={"app": upstream(
        [b], tls={"verify": True, "ca": certs.ca, "sni": "backend.test"})})
    for mode in ("--http2", "--http1.1"):
        r = get(certs, port, "/chain", mode=mode)
        assert r.status == 200 and r.json()["path"] == "/chain", r
