"""A controllable origin server for the cache, compression and buffering tests (issue 5),
and the client-side helpers those tests share.

    o = Origin()                                   # 127.0.0.1:<free port>, keep-alive HTTP/1.1
    o.script("/a", headers={"Cache-Control": "max-age=60"}, body=b"hello", etag='"v1"')
    ... requests through portero ...
    o.count("/a")                                  # requests for path /a seen so far (any query)
    o.last("/a").headers["if-none-match"]          # headers of the last one (lower-case names)
    o.stop(); o.start()                            # down, and up again on the same port
    o.force_status = 503                           # every answer is a 503 until set to None
    o.drop = True                                  # requests are read, then the connection is
                                                   # closed without a byte of answer

Answers are scripted per path (the query is ignored for matching). script() arguments:

    status         status code (default 200)
    headers        dict or list of (name, value): extra response headers (Cache-Control,
                   Expires, Vary, Set-Cookie, Surrogate-Key, Content-Type, Content-Encoding...)
    body           bytes or str, or callable(req) -> bytes (req is a Request, below)
    size           instead of body: N bytes of deterministic text (gen_body(N))
    chunked        chunked transfer coding instead of Content-Length
    pieces         send the body in this many pieces ...
    piece_delay    ... sleeping this long between them (a slowly streamed body)
    head_delay     sleep this long before sending the head
    etag           ETag header; a matching If-None-Match gets 304 (RFC 9110 13.1.2)
    last_modified  Last-Modified (epoch seconds or an HTTP date); If-Modified-Since at or after
                   it gets 304 when the request has no If-None-Match (RFC 9110 13.1.3)
    ranges         answer a single "Range: bytes=a-b" with 206 and Content-Range
    drop           close the connection after reading the request, without answering

Unscripted paths get 200 "origin <path>\\n" (text/plain) with no caching headers. Every answer
carries Date, X-Origin-Count (how many requests for that path the origin had seen, this one
included) and X-Origin-Conn (the id of the connection it came on).

Each received request is recorded as a Request: method, target, path, query, headers (dict,
lower-case names, repeated values joined with ", "), body, conn_id, n (its X-Origin-Count),
t_received (monotonic time its head was read; the request is recorded then), t_body_done
(its body was read), t_head_sent, t_done (last byte written; None
until then), status.
"""

import email.utils
import socket
import threading
import time

from urllib.parse import urlsplit

REASONS = {200: "OK", 203: "Non-Authoritative Information", 204: "No Content",
           206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
           404: "Not Found", 410: "Gone", 416: "Range Not Satisfiable",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}
MAX_HEAD = 64 * 1024
# Fields a 304 carries from the script (RFC 9110 15.4.5: those a 200 would have, minus content)
NOT_IN_304 = ("content-length", "content-type", "content-encoding", "transfer-encoding")


def http_date(t=None):
    return email.utils.formatdate(time.time() if t is None else t, usegmt=True)


def parse_http_date(s):
    try:
        return email.utils.parsedate_to_datetime(s).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def gen_body(n, seed=0):
    """N bytes of deterministic, compressible text (numbered lines)."""
    out = []
    size = 0
    i = seed
    while size < n:
        line = b"line %07d: the quick brown fox jumps over the lazy dog %d\n" % (i, i * 7919 % 1000)
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)[:n]


class Request:
    def __init__(self, method, target, headers, conn_id):
        self.method = method
        self.target = target
        u = urlsplit(target)
        self.path = u.path
        self.query = u.query
        self.raw_headers = headers
        self.headers = {}
        for k, v in headers:
            k = k.lower()
            self.headers[k] = self.headers[k] + ", " + v if k in self.headers else v
        self.body = b""
        self.conn_id = conn_id
        self.n = 0
        self.t_received = time.monotonic()
        self.t_body_done = None
        self.t_head_sent = None
        self.t_done = None
        self.status = None

    def __repr__(self):
        return "<Request %s %s conn=%d n=%d status=%s>" % (self.method, self.target,
                                                           self.conn_id, self.n, self.status)


class Script:
    def __init__(self, status=200, headers=(), body=None, size=None, chunked=False, pieces=1,
                 piece_delay=0.0, head_delay=0.0, etag=None, last_modified=None, ranges=False,
                 drop=False):
        self.status = status
        self.headers = list(headers.items()) if isinstance(headers, dict) else list(headers)
        if size is not None:
            body = gen_body(size)
        self.body = body.encode() if isinstance(body, str) else body
        self.chunked = chunked
        self.pieces = max(1, pieces)
        self.piece_delay = piece_delay
        self.head_delay = head_delay
        self.etag = etag
        if isinstance(last_modified, (int, float)):
            last_modified = http_date(last_modified)
        self.last_modified = last_modified
        self.ranges = ranges
        self.drop = drop


class _Gone(Exception):
    pass


class _Conn:
    def __init__(self, sock, conn_id):
        self.sock = sock
        self.conn_id = conn_id
        self.buf = b""

    def fill(self):
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            raise _Gone()
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise _Gone()
            self.fill()
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise _Gone() from e

    def close(self):
        for f in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                f()
            except OSError:
                pass


class Origin:
    def __init__(self, port=0, name="origin"):
        self.name = name
        self.scripts = {}
        self.requests = []
        self.force_status = None
        self.drop = False
        self.conns_accepted = 0
        self._lock = threading.Lock()
        self._counts = {}
        self._conns = {}
        self._lsock = None
        self.port = port
        self.start()

    # -- control ---------------------------------------------------------------------------
    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def script(self, path, **kw):
        """Sets the answer for PATH (see the module docstring); returns the Script."""
        s = Script(**kw)
        with self._lock:
            self.scripts[path] = s
        return s

    def start(self):
        """Listens on self.port (a free one the first time; the same one after stop())."""
        last = None
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", self.port))
            except OSError as e:
                s.close()
                last = e
                time.sleep(0.1)
                continue
            s.listen(256)
            self.port = s.getsockname()[1]
            self._lsock = s
            threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()
            return
        raise last

    def stop(self):
        """Stops listening and closes every connection (the origin is down)."""
        s, self._lsock = self._lsock, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            c.close()

    def count(self, path=None):
        """Requests received for PATH (all paths when None)."""
        with self._lock:
            if path is None:
                return len(self.requests)
            return self._counts.get(path, 0)

    def reqs(self, path):
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def last(self, path):
        r = self.reqs(path)
        return r[-1] if r else None

    @property
    def open_connections(self):
        with self._lock:
            return len(self._conns)

    # -- serving ---------------------------------------------------------------------------
    def _accept_loop(self, lsock):
        while True:
            try:
                sock, _ = lsock.accept()
            except OSError:
                return
            if self._lsock is not lsock:
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(120)
            with self._lock:
                self.conns_accepted += 1
                c = _Conn(sock, self.conns_accepted)
                self._conns[c.conn_id] = c
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                req = self._read_request(c)
                if not self._answer(c, req):
                    break
        except (_Gone, OSError, ValueError):
            pass
        finally:
            c.close()
            with self._lock:
                self._conns.pop(c.conn_id, None)

    def _read_request(self, c):
        line = c.line()
        while line == b"":
            line = c.line()
        method, target, _version = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            h = c.line()
            if not h:
                break
            n, _, v = h.decode("latin-1").partition(":")
            headers.append((n.strip(), v.strip()))
        req = Request(method, target, headers, c.conn_id)
        with self._lock:
            self._counts[req.path] = self._counts.get(req.path, 0) + 1
            req.n = self._counts[req.path]
            self.requests.append(req)
        te = req.headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            parts = []
            while True:
                size = int(c.line().split(b";")[0].strip(), 16)
                if size == 0:
                    while c.line():
                        pass
                    break
                parts.append(c.exact(size))
                c.exact(2)
            req.body = b"".join(parts)
        elif req.headers.get("content-length"):
            req.body = c.exact(int(req.headers["content-length"]))
        req.t_body_done = time.monotonic()
        return req

    def _answer(self, c, req):
        with self._lock:
            s = self.scripts.get(req.path) or Script(body=("origin %s\n" % req.path).encode())
        if self.drop or s.drop:
            return False
        if s.head_delay:
            time.sleep(s.head_delay)
        if self.force_status is not None:
            s = Script(status=self.force_status, body=b"origin error\n")
        status, headers, body = self._build(s, req)
        head = "HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Status"))
        head += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
        req.status = status
        c.send(head.encode("latin-1"))
        req.t_head_sent = time.monotonic()
        if body is not None and req.method != "HEAD":
            self._send_body(c, s, body, status != 304 and s.chunked)
        req.t_done = time.monotonic()
        return "close" not in req.headers.get("connection", "").lower()

    def _build(self, s, req):
        """(status, headers, body or None) for request REQ under script S."""
        base = [("Date", http_date()), ("X-Origin-Count", str(req.n)),
                ("X-Origin-Conn", str(req.conn_id))]
        if s.etag:
            base.append(("ETag", s.etag))
        if s.last_modified:
            base.append(("Last-Modified", s.last_modified))
        names = {n.lower() for n, _ in s.headers}
        if s.status in (200, 203, 206) and self._not_modified(s, req):
            return 304, base + [(n, v) for n, v in s.headers if n.lower() not in NOT_IN_304], None
        body = s.body(req) if callable(s.body) else (s.body or b"")
        headers = base + list(s.headers)
        if "content-type" not in names:
            headers.append(("Content-Type", "text/plain"))
        status = s.status
        if s.ranges and status == 200 and "range" in req.headers:
            status, extra, body = self._range(req.headers["range"], body)
            headers += extra
        if status in (204, 304):
            return status, headers, None
        if s.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(len(body))))
        return status, headers, body

    @staticmethod
    def _not_modified(s, req):
        inm = req.headers.get("if-none-match")
        if inm is not None:
            if not s.etag:
                return False
            want = s.etag.strip().removeprefix("W/")
            tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
            return "*" in tags or want in tags
        ims = req.headers.get("if-modified-since")
        if ims is None or not s.last_modified:
            return False
        a, b = parse_http_date(s.last_modified), parse_http_date(ims)
        return a is not None and b is not None and a <= b

    @staticmethod
    def _range(value, body):
        n = len(body)
        try:
            unit, _, spec = value.partition("=")
            first, _, last = spec.strip().partition("-")
            if unit.strip().lower() != "bytes" or "," in spec:
                raise ValueError
            if first == "":
                start, end = max(0, n - int(last)), n - 1
            else:
                start = int(first)
                end = min(int(last), n - 1) if last else n - 1
        except ValueError:
            return 200, [], body
        if start >= n or start > end:
            return 416, [("Content-Range", "bytes */%d" % n)], b""
        return 206, [("Content-Range", "bytes %d-%d/%d" % (start, end, n))], body[start:end + 1]

    @staticmethod
    def _send_body(c, s, body, chunked):
        step = max(1, -(-len(body) // s.pieces)) if body else 1
        pieces = [body[i:i + step] for i in range(0, len(body), step)]
        for i, p in enumerate(pieces):
            if i and s.piece_delay:
                time.sleep(s.piece_delay)
            c.send(b"%x\r\n%s\r\n" % (len(p), p) if chunked else p)
        if chunked:
            c.send(b"0\r\n\r\n")


# ---------------------------------------------------------------------------------------------
# Client-side helpers shared by test_cache*.py, test_compress.py and test_buffering.py.

def route(prefix, *lines):
    """YAML of one `routes:` item sending PATH_PREFIX to upstream `app`, plus LINES (route keys
    in flow style, e.g. "cache: { zone: main }")."""
    return ("  - match: { path_prefix: %s }\n    upstream: app\n" % prefix
            + "".join("    %s\n" % line for line in lines))


def zones_yaml(zones):
    """ZONES {name: {key: value}} as the top-level `cache_zones:` YAML."""
    lines = ["cache_zones:"]
    for name, z in zones.items():
        lines.append("  %s: { %s }" % (name, ", ".join("%s: %s" % kv for kv in z.items())))
    return "\n".join(lines)


def cache_status(r):
    """(cache name, {param: value or True}) of the last Cache-Status member of response R
    (RFC 9211: the member nearest the client is the last one), or (None, {}) when absent."""
    v = r.header("Cache-Status") if hasattr(r, "header") else r
    if not v:
        return None, {}
    parts = [p.strip() for p in v.split(",")[-1].split(";")]
    params = {}
    for p in parts[1:]:
        k, eq, val = p.partition("=")
        params[k.strip().lower()] = val.strip().strip('"') if eq else True
    return parts[0], params


def is_hit(r):
    return "hit" in cache_status(r)[1]


def fetch(port, target, headers=(), method="GET", host="test.local", body=b"", timeout=15.0):
    """One request on a new connection; returns conftest.RawResponse (body read per framing)."""
    from conftest import RawConn
    with RawConn(port, timeout=timeout) as rc:
        rc.request(method, target, headers=list(headers) + [("Connection", "close")],
                   body=body, host=host)
        return rc.read_response(method)


def read_body_timed(rc, headers, method="GET"):
    """After rc.read_head(): reads the body of a response with HEADERS (list of pairs) from the
    RawConn RC. Returns (body, time the first body byte was in hand, time the last was)."""
    h = {n.lower(): v for n, v in headers}
    t_first = None
    if method == "HEAD":
        return b"", None, time.monotonic()

    def mark():
        nonlocal t_first
        if t_first is None:
            t_first = time.monotonic()

    if "chunked" in h.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int(rc._line().split(b";")[0].strip(), 16)
            if size == 0:
                while rc._line():
                    pass
                break
            mark()
            parts.append(rc._exact(size))
            rc._exact(2)
        return b"".join(parts), t_first, time.monotonic()
    if "content-length" in h:
        n = int(h["content-length"])
        out = b""
        while len(out) < n:
            if not rc.buf:
                rc._fill()
            mark()
            take = rc.buf[:n - len(out)]
            rc.buf = rc.buf[len(take):]
            out += take
        return out, t_first, time.monotonic()
    data = rc.read_until_close()
    return data, (time.monotonic() if data else None), time.monotonic()
