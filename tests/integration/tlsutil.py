"""TLS helpers for the integration tests (issue 4): certificates made with the openssl CLI, TLS
clients (openssl s_client, curl, Python ssl) and a TLS origin server.

Fixture (import it into a test module: `from tlsutil import certs`)
    certs   session-scoped `Certs`: every file below, made once per test session in a temporary
            directory. EC P-256 keys everywhere except the a.test RSA certificate (RSA is the
            point there). Every certificate has an O= naming it, so a test can tell which one a
            server presented from its subject alone.

        ca, ca_key                  the test CA ("portero test CA")
        a_rsa, a_rsa_key            a.test, RSA 2048, SAN a.test, localhost, IP 127.0.0.1, O=a-rsa
        a_ec, a_ec_key              a.test, ECDSA P-256, same names, O=a-ecdsa
        b, b_key                    b.test, O=b
        wild, wild_key              *.w.test, O=wild
        ocsp_a_rsa                  DER OCSP response ("good") for a_rsa, signed by the CA
        client_ca, client_ca_key    a second CA, for client certificates
        alice, alice_key            client certificate CN=alice, O=clients, from client_ca
        evil_ca, evil_ca_key        a CA nobody trusts
        mallory, mallory_key        client certificate CN=mallory from evil_ca
        backend, backend_key        upstream server certificate CN=backend.test (SAN backend.test,
                                    IP 127.0.0.1), from ca
        evil_backend, evil_backend_key  the same names from evil_ca (verification must fail)
        up_client, up_client_key    portero's client certificate to upstreams, CN=portero-upstream,
                                    from client_ca

Clients
    s_client(port, *args, servername=None, data=b"", timeout=15) -> SClient: runs
        `openssl s_client -connect 127.0.0.1:PORT [-servername N] ARGS`, feeding DATA on stdin;
        .ok (handshake done), .subject, .protocol, .cipher, .alpn, .reused, .ocsp_status,
        .peer_sig_type, .text
    curl(args, timeout=20) -> CompletedProcess (text) of /usr/bin/curl with -sS and a max time
    tls_get(port, path, host="a.test", ...) -> (status, headers dict lower-case, body bytes)
        over Python ssl (HTTP/1.1), for quick checks
    client_context(certs, alpn=None, cert=None, key=None) -> ssl.SSLContext trusting certs.ca

Origin
    TLSBackend(ctx, name=...): backends.Backend that speaks TLS (ctx: a server SSLContext, e.g.
        from server_context()); counts .handshakes, .resumed, keeps .handshake_errors and the
        client certificate subjects in .peer_subjects.

Config
    tls_listener(name, port, certificates, **tls_opts) -> listener dict for admin_client.to_yaml
"""

import os
import pathlib
import re
import socket
import ssl
import subprocess
import threading

import pytest

from backends import Backend

OPENSSL = "/usr/bin/openssl"
CURL = "/usr/bin/curl"
DAYS = "30"


def _run(args, cwd):
    r = subprocess.run([OPENSSL, *args], cwd=str(cwd), capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (" ".join(args), r.stderr[-2000:]))
    return r


class Certs:
    pass


def _key(d, name, rsa=False):
    path = d / (name + ".key")
    if rsa:
        _run(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-out", str(path)], d)
    else:
        _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", str(path)], d)
    return path


def _ca(d, name, subject):
    key = _key(d, name)
    pem = d / (name + ".pem")
    _run(["req", "-x509", "-new", "-key", str(key), "-subj", subject, "-days", DAYS,
          "-sha256", "-out", str(pem),
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"], d)
    return pem, key


def _leaf(d, name, subject, ca, ca_key, serial, sans=(), rsa=False, client=False):
    key = _key(d, name, rsa)
    csr = d / (name + ".csr")
    _run(["req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr)], d)
    ext = d / (name + ".ext")
    lines = ["basicConstraints=critical,CA:FALSE",
             "keyUsage=critical,digitalSignature" + (",keyEncipherment" if rsa else ""),
             "extendedKeyUsage=" + ("clientAuth" if client else "serverAuth")]
    if sans:
        lines.append("subjectAltName=" + ",".join(sans))
    ext.write_text("\n".join(lines) + "\n")
    pem = d / (name + ".pem")
    _run(["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-set_serial", str(serial), "-days", DAYS, "-sha256", "-extfile", str(ext),
          "-out", str(pem)], d)
    return pem, key


def _ocsp(d, ca, ca_key, cert, serial, subject):
    """A "good" OCSP response for CERT, signed by the CA itself (RFC 6960 §4.2.2.2 allows it)."""
    enddate = _run(["x509", "-in", str(cert), "-noout", "-enddate"], d).stdout
    # notAfter=Dec 31 12:00:00 2026 GMT -> index.txt wants YYMMDDHHMMSSZ
    import datetime
    when = datetime.datetime.strptime(enddate.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    index = d / "index.txt"
    index.write_text("V\t%s\t\t%X\tunknown\t%s\n" % (when.strftime("%y%m%d%H%M%SZ"), serial,
                                                       subject))
    (d / "index.txt.attr").write_text("unique_subject = no\n")
    req = d / "ocsp-req.der"
    resp = d / (pathlib.Path(cert).stem + ".ocsp.der")
    _run(["ocsp", "-issuer", str(ca), "-cert", str(cert), "-reqout", str(req), "-no_nonce"], d)
    _run(["ocsp", "-index", str(index), "-rsigner", str(ca), "-rkey", str(ca_key), "-CA", str(ca),
          "-reqin", str(req), "-respout", str(resp), "-ndays", "1"], d)
    return resp


def make_certs(d):
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    c = Certs()
    c.dir = d
    names = ["DNS:a.test", "DNS:localhost", "IP:127.0.0.1"]
    c.ca, c.ca_key = _ca(d, "ca", "/O=portero-test/CN=portero test CA")
    c.a_rsa, c.a_rsa_key = _leaf(d, "a-rsa", "/O=a-rsa/CN=a.test", c.ca, c.ca_key, 0x1001,
                                 names, rsa=True)
    c.a_ec, c.a_ec_key = _leaf(d, "a-ecdsa", "/O=a-ecdsa/CN=a.test", c.ca, c.ca_key, 0x1002, names)
    c.b, c.b_key = _leaf(d, "b", "/O=b/CN=b.test", c.ca, c.ca_key, 0x1003, ["DNS:b.test"])
    c.wild, c.wild_key = _leaf(d, "wild", "/O=wild/CN=*.w.test", c.ca, c.ca_key, 0x1004,
                               ["DNS:*.w.test"])
    c.backend, c.backend_key = _leaf(d, "backend", "/O=backend/CN=backend.test", c.ca, c.ca_key,
                                     0x1005, ["DNS:backend.test", "IP:127.0.0.1"])
    c.ocsp_a_rsa = _ocsp(d, c.ca, c.ca_key, c.a_rsa, 0x1001, "/O=a-rsa/CN=a.test")
    c.client_ca, c.client_ca_key = _ca(d, "client-ca", "/O=portero-test/CN=portero client CA")
    c.alice, c.alice_key = _leaf(d, "alice", "/O=clients/CN=alice", c.client_ca, c.client_ca_key,
                                 0x2001, client=True)
    c.up_client, c.up_client_key = _leaf(d, "up-client", "/O=portero/CN=portero-upstream",
                                         c.client_ca, c.client_ca_key, 0x2002, client=True)
    c.evil_ca, c.evil_ca_key = _ca(d, "evil-ca", "/O=evil/CN=untrusted CA")
    c.mallory, c.mallory_key = _leaf(d, "mallory", "/O=evil/CN=mallory", c.evil_ca,
                                     c.evil_ca_key, 0x3001, client=True)
    c.evil_backend, c.evil_backend_key = _leaf(d, "evil-backend", "/O=evil/CN=backend.test",
                                               c.evil_ca, c.evil_ca_key, 0x3002,
                                               ["DNS:backend.test", "IP:127.0.0.1"])
    for k, v in list(vars(c).items()):
        if isinstance(v, pathlib.Path):
            setattr(c, k, str(v))
    return c


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


# ---------------------------------------------------------------------------------------------
# Clients

class SClient:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.text = (proc.stdout or "") + "\n" + (proc.stderr or "")
        t = self.text
        m = re.search(r"^subject=(.*)$", t, re.M)
        self.subject = m.group(1).strip() if m else None
        # "New, TLSv1.3, Cipher is X": the version there is the cipher's, not the connection's
        m = re.search(r"^(New|Reused), ([^,]+), Cipher is (\S+)", t, re.M)
        self.reused = bool(m and m.group(1) == "Reused")
        self.cipher = m.group(3) if m else None
        self.ok = bool(m) and self.cipher not in (None, "(NONE)") and self.subject is not None
        # ... except for TLS 1.3 suites; the session block (absent when s_client quit before
        # reading a ticket) has the connection's
        tls13 = bool(m) and m.group(2) == "TLSv1.3"
        p = re.search(r"^\s*Protocol\s*: (\S+)", t, re.M)
        self.protocol = (p.group(1) if p else "TLSv1.3" if tls13 else None) if self.ok else None
        # the client itself could not offer what was asked (e.g. a cipher OpenSSL 3 lacks)
        self.client_refused = bool(re.search(r"no cipher match|no ciphers available|"
                                             r"no protocols available", t))
        m = re.search(r"^ALPN protocol: (\S+)", t, re.M)
        self.alpn = m.group(1) if m else None
        m = re.search(r"OCSP Response Status: (\w+)", t)
        self.ocsp_status = m.group(1) if m else None
        m = re.search(r"^Peer signature type: (\S+)", t, re.M)
        self.peer_sig_type = m.group(1) if m else None
        m = re.search(r"^Server public key is (\d+) bit", t, re.M)
        self.key_bits = int(m.group(1)) if m else None
        m = re.search(r"Verify return code: (\d+)", t)
        self.verify_code = int(m.group(1)) if m else None

    def __repr__(self):
        return "<SClient rc=%s ok=%s subject=%r protocol=%s cipher=%s alpn=%s reused=%s>\n%s" % (
            self.rc, self.ok, self.subject, self.protocol, self.cipher, self.alpn, self.reused,
            self.text[-3000:])


def s_client(port, *args, servername=None, data=b"", timeout=15, ca=None):
    """openssl s_client against 127.0.0.1:PORT. Without DATA, stdin is empty: s_client does the
    handshake, prints what it got and quits. With DATA (e.g. an HTTP request with
    `Connection: close`) pass "-ign_eof" in ARGS to read until the server closes."""
    argv = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port]
    if servername is not None:
        argv += ["-servername", servername]
    else:
        argv += ["-noservername"]
    if ca:
        argv += ["-CAfile", ca]
    argv += list(args)
    try:
        r = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("s_client timed out: %s\n%s" % (
            " ".join(argv), (e.stdout or b"").decode("latin-1")[-2000:]))
    r.stdout = r.stdout.decode("latin-1")
    r.stderr = r.stderr.decode("latin-1")
    return SClient(r)


def curl(args, timeout=20):
    argv = [CURL, "-sS", "--max-time", str(timeout)] + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, timeout=timeout + 10)


def client_context(certs, alpn=None, cert=None, key=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(certs.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_connect(port, ctx, server_hostname="a.test", session=None, timeout=15):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def read_http_response(sock, method="GET"):
    """Reads one HTTP/1.1 response from a (TLS) socket: (status, headers, body). Handles
    Content-Length, chunked and close-delimited bodies."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise ConnectionError("closed before the response head: %r" % buf[:200])
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        n, _, v = l.partition(":")
        n = n.strip().lower()
        headers[n] = headers[n] + ", " + v.strip() if n in headers else v.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            line, buf = buf.split(b"\r\n", 1)
            n = int(line.split(b";")[0], 16)
            if n == 0:
                while b"\r\n\r\n" not in b"\r\n" + buf:
                    buf += sock.recv(65536)
                return status, headers, body
            while len(buf) < n + 2:
                d = sock.recv(65536)
                if not d:
                    raise ConnectionError("closed in a chunk")
                buf += d
            body += buf[:n]
            buf = buf[n + 2:]
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            d = sock.recv(65536)
            if not d:
                raise ConnectionError("closed in the body")
            buf += d
        return status, headers, buf[:n]
    while True:
        try:
            d = sock.recv(65536)
        except (ssl.SSLError, OSError):
            break
        if not d:
            break
        buf += d
    return status, headers, buf


def tls_get(port, path="/", host="a.test", ctx=None, certs=None, headers=(), method="GET",
            body=b"", sock=None, server_hostname=None):
    """One HTTP/1.1 request over TLS (a new connection unless SOCK is given):
    (status, headers, body)."""
    own = sock is None
    if own:
        ctx = ctx or client_context(certs, alpn=["http/1.1"])
        sock = tls_connect(port, ctx, server_hostname=server_hostname or host)
    try:
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
        lines += ["%s: %s" % hv for hv in headers]
        if body:
            lines.append("Content-Length: %d" % len(body))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return read_http_response(sock, method)
    finally:
        if own:
            sock.close()


# ---------------------------------------------------------------------------------------------
# TLS origin

def server_context(cert, key, client_ca=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TLSBackend(Backend):
    """backends.Backend behind TLS. Counts handshakes (completed), resumed sessions, and
    keeps handshake errors, the subjects of client certificates, the SNI names received
    (.snis, None for none) and the TLS versions."""

    def __init__(self, ctx, **kw):
        self.ctx = ctx
        self.handshakes = 0
        self.resumed = 0
        self.handshake_errors = []
        self.peer_subjects = []
        self.tls_versions = []
        self.snis = []
        self._tls_lock = threading.Lock()

        def on_sni(sslobj, name, context):
            with self._tls_lock:
                self.snis.append(name)
        ctx.sni_callback = on_sni
        super().__init__(**kw)

    def _serve_connection(self, sock):
        sock.settimeout(15)
        try:
            tls = self.ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self._tls_lock:
                self.handshake_errors.append(repr(e))
            try:
                sock.close()
            except OSError:
                pass
            return
        with self._tls_lock:
            self.handshakes += 1
            if tls.session_reused:
                self.resumed += 1
            self.tls_versions.append(tls.version())
            peer = tls.getpeercert()
            if peer:
                self.peer_subjects.append(dict(x[0] for x in peer.get("subject", ())))
        Backend._serve_connection(self, tls)


# ---------------------------------------------------------------------------------------------
# Config

def cert_entry(cert, key, ocsp=None):
    e = {"cert": cert, "key": key}
    if ocsp:
        e["ocsp"] = ocsp
    return e


def tls_listener(name, port, certificates, http2=None, **tls_opts):
    """A listener dict: CERTIFICATES is a list of (cert, key) or (cert, key, ocsp) tuples or
    ready dicts; TLS_OPTS are further keys of `tls:` (alpn=[...], client_auth={...}, ...)."""
    entries = []
    for c in certificates:
        entries.append(c if isinstance(c, dict) else cert_entry(*c))
    tls = {"certificates": entries}
    tls.update(tls_opts)
    lst = {"name": name, "address": "127.0.0.1:%d" % port, "tls": tls}
    if http2 is not None:
        lst["http2"] = http2
    return lst


def all_certs(c, ocsp=False):
    """The usual certificate list: a.test RSA first (the default), a.test ECDSA, b.test,
    *.w.test."""
    return [(c.a_rsa, c.a_rsa_key) + ((c.ocsp_a_rsa,) if ocsp else ()),
            (c.a_ec, c.a_ec_key), (c.b, c.b_key), (c.wild, c.wild_key)]


def resolve(host, port):
    return ["--resolve", "%s:%d:127.0.0.1" % (host, port)]


def env_no_proxy():
    e = dict(os.environ)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        e.pop(k, None)
    return e


class CurlResult:
    def __init__(self, rc, status, version, headers, body, stderr):
        self.rc = rc                  # curl's exit code (0 = transfer done)
        self.status = status          # last response's status, 0 if none
        self.version = version        # "1.1", "2", ...
        self.headers = headers        # list of (lower-case name, value) of the last response
        self.body = body
        self.stderr = stderr

    def header(self, name):
        vals = [v for n, v in self.headers if n == name.lower()]
        return ", ".join(vals) if vals else None

    def json(self):
        import json
        return json.loads(self.body)

    def __repr__(self):
        return "<CurlResult rc=%s status=%s http/%s headers=%r body=%r stderr=%r>" % (
            self.rc, self.status, self.version, self.headers, self.body[:300], self.stderr[-500:])


def fetch(url, *, ca=None, resolve_to=None, mode="--http1.1", method=None, data=None,
          headers=(), cert=None, key=None, timeout=20, extra=()):
    """One curl request. MODE: --http1.1, --http2, --http2-prior-knowledge (or None).
    RESOLVE_TO: (host, port) sent to 127.0.0.1. DATA: bytes for the request body."""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="curl-") as td:
        hfile, bfile = os.path.join(td, "h"), os.path.join(td, "b")
        args = ["-D", hfile, "-o", bfile, "-w", "%{http_code} %{http_version}"]
        if ca:
            args += ["--cacert", ca]
        if resolve_to:
            args += resolve(*resolve_to)
        if mode:
            args.append(mode)
        if method:
            args += ["-X", method]
        if data is not None:
            dfile = os.path.join(td, "d")
            with open(dfile, "wb") as f:
                f.write(data)
            args += ["--data-binary", "@" + dfile]
        for n, v in headers:
            args += ["-H", "%s: %s" % (n, v)]
        if cert:
            args += ["--cert", cert, "--key", key]
        args += list(extra)
        args.append(url)
        r = curl(args, timeout=timeout)
        out = r.stdout.decode("latin-1").split()
        status = int(out[0]) if out and out[0].isdigit() else 0
        version = out[1] if len(out) > 1 else ""
        heads = []
        try:
            raw = open(hfile, "rb").read().decode("latin-1")
        except FileNotFoundError:
            raw = ""
        # the last header block (interim 1xx answers come first)
        blocks = [b for b in raw.split("\r\n\r\n") if b.strip()]
        if blocks:
            for line in blocks[-1].split("\r\n")[1:]:
                n, _, v = line.partition(":")
                heads.append((n.strip().lower(), v.strip()))
        try:
            body = open(bfile, "rb").read()
        except FileNotFoundError:
            body = b""
        return CurlResult(r.returncode, status, version, heads, body,
                          r.stderr.decode("latin-1"))
