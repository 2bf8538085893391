"""Origin servers for the integration tests.

`Backend` is a threaded HTTP/1.1 keep-alive origin built on raw sockets, so that the tests
control message framing byte by byte (http.server hides it). It listens on 127.0.0.1 on a
free port and records every request it receives.

Default answer: 200 with a JSON body

    {"backend": NAME, "conn_id": N, "request_no": K, "method": ..., "path": ...,
     "target": ..., "query": ..., "headers": {lower-cased name: value (comma-joined)},
     "body_len": ..., "body_sha256": ...}

and the headers Content-Type: application/json, Content-Length, Server: origin-test,
X-Powered-By: test.

Query parameters of the request target change the answer (they can be combined):

    status=N        status code (204 and 304 and HEAD requests get no body)
    size=N          body of N bytes b"x" instead of JSON
    stream=N        body of N bytes generated in 64 KiB pieces (nothing held in memory)
    echo=1          body is the request body (bodies < 1 MiB only)
    chunked=1       chunked transfer coding instead of Content-Length
    close=1         no Content-Length: the body is delimited by closing the connection
    closeconn=1     "Connection: close" and close after the response
    delay=S         sleep S seconds before sending anything
    header_delay=S  send the status line and a first header, sleep S, send the rest of the head
    body_delay=S    send the head, sleep S, then send the body
    drip=S          send the body in `pieces` pieces (default 4) with S seconds between them
    pieces=N        number of pieces for drip
    interim=CODE    send an interim 1xx response (e.g. 103) first; repeatable
    hdr=Name:Value  extra response header; repeatable

Requests with "Upgrade: websocket" are answered with 101 and a minimal WebSocket echo
(text/binary frames are echoed back, ping answered with pong, close answered with close).

Behaviour switches on the Backend object (set at construction or afterwards):

    drop_reused      when > 0, the next N requests arriving on a *reused* connection
                     (request_no >= 2) are read fully and then the connection is closed
                     without any response byte (simulates the keep-alive close race).
    raw_response     bytes sent verbatim as the answer to every request, then the
                     connection is closed (for malformed-upstream tests).
    handler          callable(backend, conn, req) -> bool taking over the answer; `conn`
                     is a BackendConn (use conn.send(bytes)); return True to keep the
                     connection alive.
    response_headers extra (name, value) headers for every response.
    delay            seconds to sleep before answering every request (a slow backend).

`host` may be an IPv6 address ("::1").
"""

import hashlib
import json
import socket
import socketserver
import threading
import time
import base64
from urllib.parse import urlsplit, parse_qsl

MAX_STORED_BODY = 1 << 20
MAX_HEAD = 1 << 20
CHUNK = 64 * 1024
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

REASONS = {
    100: "Continue", 101: "Switching Protocols", 103: "Early Hints", 200: "OK",
    201: "Created", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


class ClientGone(Exception):
    """The peer closed the connection (or it was closed locally)."""


class BadRequest(Exception):
    pass


class BackendConn:
    """One accepted connection: a socket plus a read buffer."""

    def __init__(self, backend, sock, conn_id):
        self.backend = backend
        self.sock = sock
        self.conn_id = conn_id
        self.buf = b""
        self.idle = True          # waiting for the first byte of a request
        self.closed = False
        self.peer_closed = False  # the client closed its side (recv returned b"")
        self.lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------
    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            if not self.closed:
                self.peer_closed = True
            raise ClientGone()
        self.buf += data

    def read_until(self, delim, limit):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + len(delim):]
                return out
            if len(self.buf) > limit:
                raise BadRequest("line too long")
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self, maxn):
        if not self.buf:
            self._fill()
        out, self.buf = self.buf[:maxn], self.buf[maxn:]
        return out

    # -- writing -------------------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ClientGone() from e

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _Server6(_Server):
    address_family = socket.AF_INET6


class Backend:
    def __init__(self, name=None, port=0, host="127.0.0.1", drop_reused=0, raw_response=None,
                 handler=None, response_headers=(), conn_timeout=120.0, delay=0.0):
        self.name = name or "backend"
        self.delay = delay
        self.drop_reused = drop_reused
        self.raw_response = raw_response
        self.handler = handler
        self.response_headers = list(response_headers)
        self.conn_timeout = conn_timeout
        self.requests = []            # list of dicts, in arrival order
        self.closed_by_peer = []      # conn_ids whose client closed the connection
        self._lock = threading.Lock()
        self._conns = {}              # conn_id -> BackendConn (open ones)
        self._next_conn_id = 0
        self._active = 0              # requests being answered right now
        self.max_active = 0           # highest concurrency seen
        self._stopped = False
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                backend._serve_connection(self.request)

        cls = _Server6 if ":" in host else _Server
        self._server = cls((host, port), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    # -- public --------------------------------------------------------------------------
    @property
    def address(self):
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    @property
    def connections(self):
        """Number of connections accepted so far."""
        with self._lock:
            return self._next_conn_id

    @property
    def open_connections(self):
        with self._lock:
            return len(self._conns)

    @property
    def active(self):
        with self._lock:
            return self._active

    def conn_ids(self):
        with self._lock:
            return [r["conn_id"] for r in self.requests]

    def request_count(self):
        with self._lock:
            return len(self.requests)

    def clear(self):
        with self._lock:
            self.requests.clear()

    def close_idle(self, settle=2.0):
        """Close every keep-alive connection that is waiting for a request. Returns count.

        Waits up to SETTLE seconds for connections that are still finishing a response to
        become idle first (the handler marks a connection idle just after its last write)."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            with self._lock:
                if all(c.idle for c in self._conns.values()):
                    break
            time.sleep(0.01)
        with self._lock:
            victims = [c for c in self._conns.values() if c.idle and not c.buf]
        for c in victims:
            c.close()
        return len(victims)

    def kill(self):
        """Simulate the backend dying: stop listening and close every open connection."""
        self._stopped = True
        try:
            self._server.shutdown()
        except Exception:
            pass
        self._server.server_close()
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            c.close()

    def stop(self):
        if self._stopped:
            return
        self.kill()
        self._thread.join(5)

    # -- connection loop -----------------------------------------------------------------
    def _serve_connection(self, sock):
        sock.settimeout(self.conn_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self._lock:
            self._next_conn_id += 1
            conn = BackendConn(self, sock, self._next_conn_id)
            self._conns[conn.conn_id] = conn
        request_no = 0
        try:
            while not self._stopped:
                conn.idle = True
                if not conn.buf:
                    conn._fill()
                conn.idle = False
                request_no += 1
                req = self._read_request(conn, request_no)
                with self._lock:
                    self.requests.append(req)
                    self._active += 1
                    self.max_active = max(self.max_active, self._active)
                try:
                    keep = self._answer(conn, req)
                finally:
                    with self._lock:
                        self._active -= 1
                if not keep:
                    break
        except (ClientGone, socket.timeout, OSError):
            pass
        except BadRequest:
            try:
                conn.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except ClientGone:
                pass
        finally:
            if conn.peer_closed:
                with self._lock:
                    self.closed_by_peer.append(conn.conn_id)
            conn.close()
            with self._lock:
                self._conns.pop(conn.conn_id, None)

    def _read_request(self, conn, request_no):
        line = conn.read_until(b"\r\n", MAX_HEAD)
        while line == b"":            # tolerate empty lines between requests (RFC 9112 §2.2)
            line = conn.read_until(b"\r\n", MAX_HEAD)
        parts = line.split(b" ")
        if len(parts) != 3:
            raise BadRequest("request line")
        method, target, version = (p.decode("latin-1") for p in parts)
        headers = []
        total = len(line)
        while True:
            h = conn.read_until(b"\r\n", MAX_HEAD)
            if h == b"":
                break
            total += len(h)
            if total > MAX_HEAD:
                raise BadRequest("head too large")
            if b":" not in h or h[:1] in (b" ", b"\t"):
                raise BadRequest("header line")
            n, v = h.split(b":", 1)
            headers.append((n.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        hmap = {}
        for n, v in headers:
            k = n.lower()
            hmap[k] = hmap[k] + ", " + v if k in hmap else v
        req = {
            "method": method, "target": target, "version": version, "headers": headers,
            "hmap": hmap, "conn_id": conn.conn_id, "request_no": request_no,
            "body": b"", "body_len": 0, "body_sha256": hashlib.sha256(b"").hexdigest(),
            "trailers": [], "time": time.monotonic(),
        }
        te = hmap.get("transfer-encoding")
        cl = hmap.get("content-length")
        has_body = bool(te) or (cl is not None and cl.strip() != "0")
        if has_body and hmap.get("expect", "").lower() == "100-continue":
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        sha = hashlib.sha256()
        stored = []
        size = 0

        def take(data):
            nonlocal size
            sha.update(data)
            if size < MAX_STORED_BODY:
                stored.append(data)
            size += len(data)

        if te:
            if te.lower().replace(" ", "").split(",")[-1] != "chunked":
                raise BadRequest("transfer-encoding")
            while True:
                szline = conn.read_until(b"\r\n", 4096)
                szhex = szline.split(b";", 1)[0].strip()
                try:
                    n = int(szhex, 16)
                except ValueError:
                    raise BadRequest("chunk size")
                if n == 0:
                    while True:
                        t = conn.read_until(b"\r\n", 65536)
                        if t == b"":
                            break
                        if b":" in t:
                            tn, tv = t.split(b":", 1)
                            req["trailers"].append((tn.decode("latin-1"),
                                                    tv.strip().decode("latin-1")))
                    break
                left = n
                while left:
                    d = conn.read_some(min(left, CHUNK))
                    take(d)
                    left -= len(d)
                if conn.read_exact(2) != b"\r\n":
                    raise BadRequest("chunk CRLF")
        elif cl is not None:
            try:
                left = int(cl.strip())
            except ValueError:
                raise BadRequest("content-length")
            while left:
                d = conn.read_some(min(left, CHUNK))
                take(d)
                left -= len(d)
        req["body_len"] = size
        req["body_sha256"] = sha.hexdigest()
        req["body"] = b"".join(stored) if size < MAX_STORED_BODY else None
        return req

    # -- answering -----------------------------------------------------------------------
    def _answer(self, conn, req):
        if self.raw_response is not None:
            conn.send(self.raw_response)
            return False
        if self.handler is not None:
            return bool(self.handler(self, conn, req))
        if self.drop_reused > 0 and req["request_no"] >= 2:
            with self._lock:
                drop = self.drop_reused > 0
                if drop:
                    self.drop_reused -= 1
            if drop:
                req["dropped"] = True
                return False
        if req["hmap"].get("upgrade", "").lower() == "websocket":
            return self._websocket(conn, req)

        split = urlsplit(req["target"])
        path = split.path
        if req["target"].startswith("http://") or req["target"].startswith("https://"):
            path = split.path or "/"
        q = parse_qsl(split.query, keep_blank_values=True)
        qd = {}
        for k, v in q:
            qd.setdefault(k, []).append(v)

        def qget(k, default=None):
            return qd[k][-1] if k in qd else default

        status = int(qget("status", "200"))
        if self.delay:
            time.sleep(self.delay)
        if qget("delay"):
            time.sleep(float(qget("delay")))
        for code in qd.get("interim", []):
            code = int(code)
            extra = "Link: </style.css>; rel=preload\r\n" if code == 103 else ""
            conn.send("HTTP/1.1 %d %s\r\n%s\r\n" % (code, REASONS.get(code, "Interim"), extra))

        no_body = req["method"] == "HEAD" or status in (204, 304) or 100 <= status < 200
        headers = [("Server", "origin-test"), ("X-Powered-By", "test")]
        body = None
        stream_len = None
        if qget("stream") is not None:
            stream_len = int(qget("stream"))
            headers.append(("Content-Type", "application/octet-stream"))
        elif qget("size") is not None:
            body = b"x" * int(qget("size"))
            headers.append(("Content-Type", "application/octet-stream"))
        elif qget("echo") == "1":
            body = req["body"] or b""
            headers.append(("Content-Type", "application/octet-stream"))
        else:
            body = json.dumps({
                "backend": self.name, "conn_id": req["conn_id"],
                "request_no": req["request_no"], "method": req["method"], "path": path,
                "target": req["target"], "query": split.query, "headers": req["hmap"],
                "body_len": req["body_len"], "body_sha256": req["body_sha256"],
            }).encode()
            headers.append(("Content-Type", "application/json"))
        length = stream_len if stream_len is not None else len(body)

        chunked = qget("chunked") == "1"
        close_delim = qget("close") == "1"
        closeconn = qget("closeconn") == "1"
        if status in (204,) or 100 <= status < 200:
            pass
        elif chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif close_delim:
            pass
        else:
            headers.append(("Content-Length", str(length)))
        if closeconn or close_delim:
            headers.append(("Connection", "close"))
        for h in qd.get("hdr", []):
            n, _, v = h.partition(":")
            headers.append((n.strip(), v.strip()))
        headers.extend(self.response_headers)

        status_line = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Status"))
        head_rest = "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
        if qget("header_delay"):
            first, _, rest = head_rest.partition("\r\n")
            conn.send(status_line + first + "\r\n")
            time.sleep(float(qget("header_delay")))
            conn.send(rest)
        else:
            conn.send(status_line + head_rest)
        if not no_body:
            if qget("body_delay"):
                time.sleep(float(qget("body_delay")))
            self._send_body(conn, body, stream_len, chunked,
                            float(qget("drip", "0")), int(qget("pieces", "4")))
        return not (closeconn or close_delim)

    def _send_body(self, conn, body, stream_len, chunked, drip, pieces):
        def pieces_of():
            if stream_len is not None:
                left = stream_len
                block = b"x" * CHUNK
                while left > 0:
                    n = min(left, CHUNK)
                    yield block[:n]
                    left -= n
            elif drip > 0 and body:
                step = max(1, -(-len(body) // max(1, pieces)))
                for i in range(0, len(body), step):
                    yield body[i:i + step]
            elif body:
                yield body

        first = True
        for piece in pieces_of():
            if drip > 0 and not first:
                time.sleep(drip)
            first = False
            if chunked:
                conn.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
            else:
                conn.send(piece)
        if chunked:
            conn.send(b"0\r\n\r\n")

    # -- websocket -----------------------------------------------------------------------
    def _websocket(self, conn, req):
        key = req["hmap"].get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        conn.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept)
        while True:
            b1, b2 = conn.read_exact(2)
            opcode = b1 & 0x0F
            masked = b2 & 0x80
            n = b2 & 0x7F
            if n == 126:
                n = int.from_bytes(conn.read_exact(2), "big")
            elif n == 127:
                n = int.from_bytes(conn.read_exact(8), "big")
            mask = conn.read_exact(4) if masked else b"\0\0\0\0"
            payload = bytearray(conn.read_exact(n))
            for i in range(n):
                payload[i] ^= mask[i % 4]
            if opcode == 0x8:
                conn.send(_ws_frame(0x8, bytes(payload[:2])))
                return False
            if opcode == 0x9:
                conn.send(_ws_frame(0xA, bytes(payload)))
                continue
            if opcode in (0x0, 0x1, 0x2):
                conn.send(bytes([b1 & 0x8F]) + _ws_frame(opcode, bytes(payload))[1:])


def _ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = bytes([0x80 | opcode, n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
    return hdr + payload


# ---------------------------------------------------------------------------------------------
# Additions for the failover / live-change tests (issue 3). Existing behaviour is unchanged.

class ControlledBackend(Backend):
    """A Backend whose health endpoint and answers can be switched by the test at run time.

        health_path     requests whose path is this (default "/healthz") are health checks:
                        answered with `health_status` (default 200) and a short body, counted
                        in `health_checks`, and NOT recorded in `requests` (so request counts
                        are application traffic only).
        health_status   status for health checks; change it at any time (e.g. 500 -> down).
        health_hosts    the Host header of every health check seen (in order).
        status          when not None, every application request gets this status (with the
                        usual JSON body) whatever its query parameters say.
        health_delay    seconds to wait before answering a health check (a hanging check).
    """

    def __init__(self, name=None, health_path="/healthz", health_status=200, status=None,
                 health_delay=0.0, **kw):
        self.health_path = health_path
        self.health_status = health_status
        self.health_delay = health_delay
        self.status = status
        self.health_checks = 0
        self.health_hosts = []
        super().__init__(name=name, **kw)

    def app_request_count(self):
        return self.request_count()

    _dying = False

    def kill(self):
        """Dies between responses: requests arriving from now on are read and their
        connection closed without a byte of response; answers already being written finish
        first (up to 5 s). Then, like Backend.kill, stop listening and close every connection.
        (A response cut in the middle cannot be retried by any proxy, so tests of "zero failed
        requests" must not produce one.)"""
        self._dying = True
        deadline = time.monotonic() + 5.0
        while self.active and time.monotonic() < deadline:
            time.sleep(0.005)
        super().kill()

    def _forget(self, req):
        with self._lock:
            for i in range(len(self.requests) - 1, -1, -1):
                if self.requests[i] is req:
                    del self.requests[i]
                    break
            self.health_checks += 1
            self.health_hosts.append(req["hmap"].get("host"))

    def _answer(self, conn, req):
        if self._dying:
            return False
        path = urlsplit(req["target"]).path
        if path == self.health_path:
            self._forget(req)
            if self.health_delay:
                time.sleep(self.health_delay)
            status = int(self.health_status)
            body = b"" if req["method"] == "HEAD" else ("health %d\n" % status).encode()
            conn.send("HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                      % (status, REASONS.get(status, "Status"), len(body)))
            if body:
                conn.send(body)
            return True
        forced = self.status
        if forced is not None and self.handler is None and self.raw_response is None:
            if self.delay:
                time.sleep(self.delay)
            body = json.dumps({"backend": self.name, "conn_id": req["conn_id"],
                               "request_no": req["request_no"], "method": req["method"],
                               "target": req["target"], "body_len": req["body_len"],
                               "body_sha256": req["body_sha256"]}).encode()
            conn.send("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n"
                      % (forced, REASONS.get(forced, "Status"), len(body)))
            if req["method"] != "HEAD":
                conn.send(body)
            return True
        return super()._answer(conn, req)


def start_backend_on_port(port, name=None, cls=None, attempts=100, **opts):
    """Starts a backend (CLS, default ControlledBackend) listening on 127.0.0.1:PORT, e.g. to
    bring a killed one back. Retries the bind for a while (the port may linger briefly).
    The caller stops it (backend.stop())."""
    cls = cls or ControlledBackend
    last = None
    for _ in range(attempts):
        try:
            return cls(name=name, port=port, **opts)
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise last
