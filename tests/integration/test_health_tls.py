"""Active HTTP health checks speak the upstream's protocol (issue 4): TLS when the upstream has
`tls:` (its client context: verification, SNI, client certificate), HTTP/2 when it has
`protocol: h2` (prior knowledge, or ALPN h2 over TLS). A handshake or verification failure is
a failed check whose reason is logged. `type: tcp` checks stay a plain TCP connect.

Health is observed through the admin API (GET /upstreams) and /metrics
(portero_health_checks_total / portero_health_checks_failed_total per server).
"""

import signal
import socket
import ssl
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

from admin_client import NO_OUTLIER, build_config, fast_checks, launch, upstream
from backends import ControlledBackend
from conftest import free_port, wait_for
from grpc_backend import GrpcBackend
from tlsutil import TLSBackend, certs, server_context  # noqa: F401 (certs is a fixture)


# --- origins -------------------------------------------------------------------------------------

class TLSControlledBackend(TLSBackend, ControlledBackend):
    """A ControlledBackend (switchable health answers, counted in .health_checks) behind TLS
    (TLSBackend counts .handshakes, .resumed and keeps .handshake_errors)."""


class H2Backend:
    """An HTTP/2-only origin (python-h2): prior knowledge, or TLS with ALPN h2 when CTX is given.
    Every request gets `status` (changeable at any time) with an empty body; the request
    headers are kept in .requests, protocol errors (e.g. an HTTP/1.1 request) in .errors."""

    def __init__(self, status=200, ctx=None, port=0):
        self.status = status
        self.ctx = ctx
        self.requests = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def request_count(self):
        with self._lock:
            return len(self.requests)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                s, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _answer(self, conn, event):
        with self._lock:
            self.requests.append(dict(event.headers))
        conn.send_headers(event.stream_id, [(":status", str(self.status)),
                                            ("content-length", "0")], end_stream=True)

    def _serve(self, sock):
        sock.settimeout(10)
        try:
            if self.ctx:
                sock = self.ctx.wrap_socket(sock, server_side=True)
            conn = h2.connection.H2Connection(
                config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self._answer(conn, ev)
                sock.sendall(conn.data_to_send())
        except (h2.exceptions.ProtocolError, ssl.SSLError, OSError) as e:
            with self._lock:
                self.errors.append(repr(e))
        finally:
            sock.close()


@pytest.fixture
def origins():
    made = []

    def factory(kind, *args, **kw):
        b = kind(*args, **kw)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


# --- helpers -------------------------------------------------------------------------------------

def start(make_portero, servers, **up):
    port, ap = free_port(), free_port()
    cfg = build_config(port, {"app": upstream(servers, outlier=NO_OUTLIER, **up)}, admin_port=ap)
    p, adm = launch(make_portero, cfg)
    return p, adm


def checks(adm, server):
    m = adm.metrics()
    return (m.value("portero_health_checks_total", upstream="app", server=server.address),
            m.value("portero_health_checks_failed_total", upstream="app", server=server.address))


def wait_checks_pass(adm, server, n=3, timeout=15):
    """True once N checks of SERVER ran and none failed (the server starts up, so `up` alone
    would prove nothing)."""
    def passed():
        total, failed = checks(adm, server)
        assert failed == 0, (total, failed)
        return total >= n
    return wait_for(passed, timeout=timeout, interval=0.1)


def log_line(p, *words, timeout=10):
    def find():
        for line in p.stderr_text().splitlines():
            if all(w.lower() in line.lower() for w in words):
                return line
        return None
    return wait_for(find, timeout=timeout)


def verify(certs, **more):
    t = {"verify": True, "ca": certs.ca, "sni": "backend.test"}
    t.update(more)
    return t


# --- TLS -----------------------------------------------------------------------------------------

def test_https_check_down_and_up_again(make_portero, origins, certs):
    b = origins(TLSControlledBackend, server_context(certs.backend, certs.backend_key), name="tb")
    p, adm = start(make_portero, [b], tls=verify(certs), health_check=fast_checks())
    assert wait_checks_pass(adm, b)
    assert b.health_checks >= 3, b.health_checks      # the GETs arrived over TLS
    assert b.handshake_errors == [], b.handshake_errors
    assert set(b.snis) == {"backend.test"}, b.snis
    assert b.resumed >= 1, (b.handshakes, b.resumed)   # later checks resume the session

    b.health_status = 500
    assert adm.wait_health("app", b, "down") == "down"
    assert log_line(p, "server %s is down (health check: status 500)" % b.address)
    assert adm.metrics().value("portero_server_up", upstream="app", server=b.address) == 0

    b.health_status = 200
    assert adm.wait_health("app", b, "up") == "up"
    # a reload swaps the runtime (and its TLS contexts) under the checker: checks go on
    before = b.health_checks
    p.proc.send_signal(signal.SIGHUP)
    assert log_line(p, "configuration generation 2 published")
    assert wait_for(lambda: b.health_checks >= before + 3, timeout=15)
    assert adm.health("app", b) == "up"
    assert b.handshake_errors == [], b.handshake_errors


def test_https_check_stopped_backend_is_down(make_portero, origins, certs):
    b = origins(TLSControlledBackend, server_context(certs.backend, certs.backend_key), name="tb")
    _, adm = start(make_portero, [b], tls=verify(certs), health_check=fast_checks())
    assert wait_checks_pass(adm, b, n=2)
    b.stop()
    assert adm.wait_health("app", b, "down") == "down"


@pytest.mark.parametrize("case", ["untrusted-server", "wrong-sni"])
def test_unverifiable_backend_is_down_with_reason(make_portero, origins, certs, case):
    if case == "untrusted-server":
        ctx = server_context(certs.evil_backend, certs.evil_backend_key)
        tls, why = verify(certs), "certificate verify failed"
    else:
        ctx = server_context(certs.backend, certs.backend_key)
        tls, why = verify(certs, sni="other.test"), "mismatch"
    b = origins(TLSControlledBackend, ctx, name="evil")
    p, adm = start(make_portero, [b], tls=tls, health_check=fast_checks())
    assert adm.wait_health("app", b, "down") == "down"
    line = log_line(p, "server %s is down (health check: TLS handshake failed:" % b.address, why)
    assert line, p.stderr_text()[-3000:]
    assert b.health_checks == 0                         # no request went to an unverified server


def test_mtls_backend_needs_the_client_certificate(make_portero, origins, certs):
    ctx = server_context(certs.backend, certs.backend_key, client_ca=certs.client_ca)
    good = origins(TLSControlledBackend, ctx, name="mtls")
    _, adm = start(make_portero, [good], health_check=fast_checks(),
                   tls=verify(certs, client_cert=certs.up_client, client_key=certs.up_client_key))
    assert wait_checks_pass(adm, good)
    assert good.peer_subjects[-1]["commonName"] == "portero-upstream"

    ctx2 = server_context(certs.backend, certs.backend_key, client_ca=certs.client_ca)
    bare = origins(TLSControlledBackend, ctx2, name="bare")
    p2, adm2 = start(make_portero, [bare], tls=verify(certs), health_check=fast_checks())
    assert adm2.wait_health("app", bare, "down") == "down"
    assert bare.health_checks == 0
    # TLS 1.3: the server's "certificate required" alert comes after our side of the handshake
    # is done; when the server's close overtakes it, a reset is all there is to see.
    line = log_line(p2, "server %s is down (health check:" % bare.address)
    assert ("TLS alert from the server: certificate required" in line
            or "connection reset" in line), line


def test_tcp_check_of_tls_upstream_stays_tcp(make_portero, origins, certs):
    b = origins(TLSControlledBackend, server_context(certs.backend, certs.backend_key), name="tb")
    _, adm = start(make_portero, [b], tls=verify(certs),
                   health_check={"type": "tcp", "interval": "200ms", "timeout": "500ms",
                                 "rise": 2, "fall": 2})
    assert wait_checks_pass(adm, b)
    assert b.handshakes == 0 and b.health_checks == 0


# --- HTTP/2 --------------------------------------------------------------------------------------

def test_h2_prior_knowledge_check(make_portero, origins):
    b = origins(H2Backend)
    p, adm = start(make_portero, [b], protocol="h2",
                   health_check=fast_checks(host="health.example"))
    assert wait_checks_pass(adm, b)
    req = b.requests[0]
    assert req[":method"] == "GET" and req[":path"] == "/healthz", req
    assert req[":scheme"] == "http" and req[":authority"] == "health.example", req
    assert req["user-agent"] == "portero-health", req
    assert b.errors == [], b.errors                     # clean ends (GOAWAY, no protocol error)

    b.status = 503
    assert adm.wait_health("app", b, "down") == "down"
    assert log_line(p, "server %s is down (health check: status 503)" % b.address)
    b.status = 204
    assert adm.wait_health("app", b, "up") == "up"


def test_h2_only_backend_fails_http1_checks(make_portero, origins):
    """Without `protocol: h2` the check is HTTP/1.1, which an HTTP/2-only server refuses:
    the point of speaking the upstream's protocol."""
    b = origins(H2Backend)
    _, adm = start(make_portero, [b], health_check=fast_checks())
    assert adm.wait_health("app", b, "down") == "down"
    assert b.request_count() == 0


def test_h2_over_tls_alpn_check(make_portero, origins, certs):
    ctx = server_context(certs.backend, certs.backend_key, alpn=["h2"])
    b = origins(H2Backend, ctx=ctx)
    _, adm = start(make_portero, [b], protocol="h2", tls=verify(certs),
                   health_check=fast_checks(path="/ready"))
    assert wait_checks_pass(adm, b)
    req = b.requests[0]
    assert req[":scheme"] == "https" and req[":path"] == "/ready", req
    assert req[":authority"] == b.address, req          # default Host: the address
    b.status = 500
    assert adm.wait_health("app", b, "down") == "down"


@pytest.mark.parametrize("tls", [False, True])
def test_grpc_backend_checked_over_h2(make_portero, origins, certs, tls):
    """A gRPC server answers a GET on any path with :status 200 (grpc-status in trailers), and
    speaks only HTTP/2."""
    g = origins(GrpcBackend, tls=(certs.backend, certs.backend_key) if tls else None)
    extra = {"tls": verify(certs)} if tls else {}
    _, adm = start(make_portero, [g], protocol="h2", health_check=fast_checks(status="200"),
                   **extra)
    assert wait_checks_pass(adm, g)
    port = g.port
    g.stop()
    assert adm.wait_health("app", g, "down") == "down"
    g2 = origins(GrpcBackend, tls=(certs.backend, certs.backend_key) if tls else None, port=port)
    assert adm.wait_health("app", g2, "up") == "up"
