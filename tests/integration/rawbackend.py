"""Byte-level helpers for the parsing and framing tests.

RawBackend
    A TCP origin on 127.0.0.1 that records the exact bytes it receives, per connection, and
    answers with canned bytes (which may be a deliberately malformed HTTP response). It frames
    incoming requests leniently (head up to CRLFCRLF, then a Content-Length or chunked body) only
    to know *when* to answer and to count complete requests; it never judges them.

        rb = RawBackend(response=b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
        rb.port, rb.total_bytes(), rb.all_bytes(), rb.connections, rb.complete_requests()
        rb.stop()

    Options
        response      bytes sent as the answer to every request; or a list whose items are
                      bytes (sent) or numbers (seconds to sleep) for a staged answer; or a
                      callable(RawConn, head_bytes) -> bytes | list.
        respond       "request" (default): answer once the whole request (head + body) arrived;
                      "head": answer as soon as the head arrived; "connect": answer right after
                      accept without reading; "never": only record.
        keep_alive    False (default): close the connection after the first answer (then the
                      response may be close-delimited); True: keep reading requests.
        stall         seconds to wait after accept before reading anything (backpressure tests).
        max_record    bytes kept per connection (the rest is only counted).
        sink_sha      True: also keep a running sha256 of everything received per connection.

RawClient
    A client socket with a receive buffer and a small, strict-enough HTTP/1.1 response reader
    (interim responses, Content-Length, chunked, close-delimited, HEAD), used to look at exactly
    what portero answers and whether it closes the connection.

portero_config(listen_port, upstreams, routes=None, limits=None, extra="")
    A YAML config text for the tests in this directory.
"""

import hashlib
import socket
import threading
import time

OK_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
               b"X-Raw-Backend: yes\r\n\r\nraw-ok-1\n")


# ---------------------------------------------------------------------------------------------
# Lenient request framer (for the backend side only)

class _Framer:
    """Counts complete HTTP/1.1 requests in a byte stream, leniently. Tracks where it is so that
    it can be fed incrementally. It gives up (state "bad") on anything it cannot frame."""

    def __init__(self):
        self.buf = b""
        self.state = "head"     # head | cl | chunk_size | chunk_data | chunk_crlf | trailer | bad
        self.left = 0
        self.complete = 0
        self.heads = []         # raw bytes of each request head seen
        self.head_seen = 0      # number of heads seen (including the current request's)

    def feed(self, data):
        """Adds DATA; returns a list of events: ("head", head_bytes) and ("done", None)."""
        self.buf += data
        events = []
        progress = True
        while progress and self.state != "bad":
            progress = False
            if self.state == "head":
                # tolerate empty lines before a request
                while self.buf.startswith(b"\r\n"):
                    self.buf = self.buf[2:]
                i = self.buf.find(b"\r\n\r\n")
                if i < 0:
                    if len(self.buf) > (1 << 20):
                        self.state = "bad"
                    break
                head, self.buf = self.buf[:i + 4], self.buf[i + 4:]
                self.heads.append(head)
                self.head_seen += 1
                events.append(("head", head))
                te, cl = None, None
                for line in head.split(b"\r\n")[1:]:
                    n, sep, v = line.partition(b":")
                    if not sep:
                        continue
                    n = n.strip().lower()
                    if n == b"transfer-encoding":
                        te = v.strip().lower()
                    elif n == b"content-length":
                        cl = v.strip()
                if te is not None and te.endswith(b"chunked"):
                    self.state = "chunk_size"
                elif cl is not None:
                    try:
                        self.left = int(cl)
                    except ValueError:
                        self.state = "bad"
                        break
                    self.state = "cl"
                else:
                    self.complete += 1
                    events.append(("done", None))
                progress = True
            elif self.state == "cl":
                n = min(self.left, len(self.buf))
                self.buf = self.buf[n:]
                self.left -= n
                if self.left == 0:
                    self.state = "head"
                    self.complete += 1
                    events.append(("done", None))
                    progress = True
            elif self.state == "chunk_size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > 4096:
                        self.state = "bad"
                    break
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                try:
                    n = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.state = "bad"
                    break
                if n == 0:
                    self.state = "trailer"
                else:
                    self.left = n
                    self.state = "chunk_data"
                progress = True
            elif self.state == "chunk_data":
                n = min(self.left, len(self.buf))
                self.buf = self.buf[n:]
                self.left -= n
                if self.left == 0:
                    self.state = "chunk_crlf"
                    progress = True
            elif self.state == "chunk_crlf":
                if len(self.buf) < 2:
                    break
                if self.buf[:2] != b"\r\n":
                    self.state = "bad"
                    break
                self.buf = self.buf[2:]
                self.state = "chunk_size"
                progress = True
            elif self.state == "trailer":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    break
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                if line == b"":
                    self.state = "head"
                    self.complete += 1
                    events.append(("done", None))
                progress = True
        return events


# ---------------------------------------------------------------------------------------------
# RawBackend

class RawConn:
    """What one accepted connection received."""

    def __init__(self, conn_id, sock, max_record, sink_sha):
        self.conn_id = conn_id
        self.sock = sock
        self.data = bytearray()
        self.count = 0
        self.max_record = max_record
        self.sha = hashlib.sha256() if sink_sha else None
        self.framer = _Framer()
        self.closed = False
        self.peer_closed = False
        self.responses_sent = 0

    def add(self, data):
        self.count += len(data)
        room = self.max_record - len(self.data)
        if room > 0:
            self.data += data[:room]
        if self.sha is not None:
            self.sha.update(data)


class RawBackend:
    def __init__(self, response=OK_RESPONSE, respond="request", keep_alive=False, stall=0.0,
                 max_record=16 << 20, sink_sha=False, host="127.0.0.1", conn_timeout=60.0):
        assert respond in ("request", "head", "connect", "never")
        self.response = response
        self.respond = respond
        self.keep_alive = keep_alive
        self.stall = stall
        self.max_record = max_record
        self.sink_sha = sink_sha
        self.conn_timeout = conn_timeout
        self.conns = []
        self._lock = threading.Lock()
        self._stopped = False
        self._threads = []
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, 0))
        self._lsock.listen(128)
        self._lsock.settimeout(0.2)
        self.host = host
        self.port = self._lsock.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    # -- public ---------------------------------------------------------------------------
    @property
    def address(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def connections(self):
        with self._lock:
            return len(self.conns)

    def total_bytes(self):
        with self._lock:
            return sum(c.count for c in self.conns)

    def all_bytes(self):
        """Recorded bytes of every connection, concatenated in accept order."""
        with self._lock:
            return b"".join(bytes(c.data) for c in self.conns)

    def received(self, i=0):
        with self._lock:
            return bytes(self.conns[i].data)

    def complete_requests(self):
        with self._lock:
            return sum(c.framer.complete for c in self.conns)

    def heads(self):
        with self._lock:
            return [h for c in self.conns for h in c.framer.heads]

    def responses_sent(self):
        with self._lock:
            return sum(c.responses_sent for c in self.conns)

    def wait_bytes(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.total_bytes() >= n:
                return True
            time.sleep(0.02)
        return self.total_bytes() >= n

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        try:
            self._lsock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            self._close(c)
        self._accept_thread.join(5)

    # -- internals ------------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stopped:
            try:
                s, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(self.conn_timeout)
            with self._lock:
                c = RawConn(len(self.conns) + 1, s, self.max_record, self.sink_sha)
                self.conns.append(c)
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self._threads.append(t)

    def _close(self, c):
        if c.closed:
            return
        c.closed = True
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            c.sock.close()
        except OSError:
            pass

    def _send_answer(self, c, head):
        resp = self.response
        if callable(resp):
            resp = resp(c, head)
        if isinstance(resp, (bytes, bytearray)):
            resp = [resp]
        for item in resp:
            if isinstance(item, (int, float)):
                time.sleep(item)
            else:
                c.sock.sendall(item)
        c.responses_sent += 1

    def _serve(self, c):
        try:
            if self.stall:
                end = time.monotonic() + self.stall
                while time.monotonic() < end and not self._stopped:
                    time.sleep(0.05)
            if self.respond == "connect":
                self._send_answer(c, b"")
                if not self.keep_alive:
                    # keep recording what arrives for a moment, then close
                    c.sock.settimeout(1.0)
            while not self._stopped:
                try:
                    data = c.sock.recv(262144)
                except socket.timeout:
                    if self.respond == "connect" and not self.keep_alive:
                        break
                    continue
                if not data:
                    c.peer_closed = True
                    break
                with self._lock:
                    c.add(data)
                    events = c.framer.feed(data)
                answered = False
                for kind, head in events:
                    if (self.respond == "head" and kind == "head") or \
                            (self.respond == "request" and kind == "done"):
                        self._send_answer(c, head if kind == "head" else
                                          (c.framer.heads[-1] if c.framer.heads else b""))
                        answered = True
                        if not self.keep_alive:
                            break
                if answered and not self.keep_alive:
                    break
        except OSError:
            pass
        finally:
            self._close(c)


# ---------------------------------------------------------------------------------------------
# RawClient

class ConnectionClosed(Exception):
    """EOF (or reset) before a complete response head; .partial holds what arrived."""

    def __init__(self, partial=b""):
        super().__init__("connection closed after %d bytes: %r" % (len(partial), partial[:200]))
        self.partial = partial


class Response:
    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []       # [(name, value)] in order, as received
        self.raw_head = b""
        self.body = b""
        self.complete = True    # False when the connection closed before the body's end
        self.framing = ""       # "length" | "chunked" | "close" | "none"
        self.interim = []       # earlier 1xx Response objects

    def header(self, name, default=None):
        name = name.lower()
        vals = [v for n, v in self.headers if n.lower() == name]
        return ", ".join(vals) if vals else default

    def header_list(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def __repr__(self):
        return "<Response %s %s %r body=%d complete=%s>" % (
            self.status, self.framing, self.headers, len(self.body), self.complete)


class RawClient:
    def __init__(self, port, host="127.0.0.1", timeout=15.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Sends; returns False if the peer already closed/reset the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, timeout=None):
        if self.eof:
            return False
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out, self.buf = self.buf[:i + len(delim)], self.buf[i + len(delim):]
                return out
            if not self._fill():
                raise ConnectionClosed(self.buf)

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                out, self.buf = self.buf, b""
                return out
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_available(self, wait=0.5):
        """Whatever arrives within WAIT seconds (returns the buffer and empties it)."""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                if not self._fill(timeout=max(0.01, end - time.monotonic())):
                    break
            except socket.timeout:
                break
        out, self.buf = self.buf, b""
        return out

    def read_head(self):
        """Reads one response head (any status). Returns a Response without body."""
        head = self.read_until(b"\r\n\r\n")
        r = Response()
        r.raw_head = head
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/"), "bad status line %r" % status_line
        r.version = parts[0]
        r.status = int(parts[1])
        r.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            n, sep, v = line.partition(b":")
            assert sep, "header line without colon: %r" % line
            r.headers.append((n.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return r

    def read_response(self, method="GET", max_body=1 << 31, sink=None):
        """Reads interim responses and one final response. SINK(bytes), if given, receives the
        body instead of storing it in .body."""
        interim = []
        while True:
            r = self.read_head()
            if 100 <= r.status < 200 and r.status != 101:
                interim.append(r)
                continue
            break
        r.interim = interim
        self._read_body(r, method, max_body, sink)
        return r

    def _read_body(self, r, method, max_body, sink):
        parts = []
        got = [0]

        def take(d):
            got[0] += len(d)
            if sink is not None:
                sink(d)
            else:
                parts.append(d)

        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        if method == "HEAD" or r.status in (204, 304) or r.status == 101 or r.status < 200:
            r.framing = "none"
        elif te is not None:
            assert te.lower() == "chunked", "unexpected Transfer-Encoding %r" % te
            r.framing = "chunked"
            while True:
                try:
                    line = self.read_until(b"\r\n")
                except ConnectionClosed:
                    r.complete = False
                    break
                size = int(line[:-2].split(b";", 1)[0], 16)
                if size == 0:
                    # trailers
                    try:
                        while self.read_until(b"\r\n") != b"\r\n":
                            pass
                    except ConnectionClosed:
                        r.complete = False
                    break
                while size:
                    if not self.buf and not self._fill():
                        r.complete = False
                        break
                    d = self.buf[:size]
                    self.buf = self.buf[len(d):]
                    size -= len(d)
                    take(d)
                if not r.complete:
                    break
                crlf = self.read_exact(2)
                if crlf != b"\r\n":
                    r.complete = False
                    break
        elif cl is not None:
            r.framing = "length"
            left = int(cl)
            while left:
                if not self.buf and not self._fill():
                    r.complete = False
                    break
                d = self.buf[:left]
                self.buf = self.buf[len(d):]
                left -= len(d)
                take(d)
        else:
            r.framing = "close"
            while True:
                if self.buf:
                    d, self.buf = self.buf, b""
                    take(d)
                    if got[0] > max_body:
                        break
                if not self._fill():
                    break
        if sink is None:
            r.body = b"".join(parts)
        r.body_len = got[0]

    def wait_closed(self, timeout=10.0):
        """True if the peer closes (EOF or reset) within TIMEOUT s; bytes that arrive in the
        meantime are kept in .extra (they are a protocol error for the caller to judge)."""
        self.extra = b""
        end = time.monotonic() + timeout
        if self.eof:
            self.extra, self.buf = self.buf, b""
            return True
        while time.monotonic() < end:
            try:
                if not self._fill(timeout=max(0.01, end - time.monotonic())):
                    self.extra, self.buf = self.buf, b""
                    return True
            except socket.timeout:
                break
            except OSError:
                return True
        self.extra, self.buf = self.buf, b""
        return False

    def still_open(self, wait=0.3):
        """True if nothing (no EOF, no bytes) arrives within WAIT seconds."""
        try:
            self._fill(timeout=wait)
            return False
        except socket.timeout:
            return True
        except OSError:
            return False


def rss_kib(pid):
    """Resident set size of process PID in KiB (VmRSS), or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of PID every INTERVAL seconds in a thread; .max_kib, .samples."""

    def __init__(self, pid, interval=0.2):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)

    def _run(self):
        while not self._stop.is_set():
            v = rss_kib(self.pid)
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.interval)

    @property
    def max_kib(self):
        return max(self.samples) if self.samples else 0


def get(port, target, host="test", extra_headers=b"", method="GET", timeout=15.0):
    """One request on a fresh connection, closed afterwards. Returns the Response."""
    with RawClient(port, timeout=timeout) as c:
        c.send(b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            method.encode(), target.encode(), host.encode(), extra_headers))
        return c.read_response(method=method)


# ---------------------------------------------------------------------------------------------
# Config

def portero_config(listen_port, upstreams, routes=None, limits=None, extra="", workers=2):
    """UPSTREAMS: {name: [port, ...]} (servers on 127.0.0.1); ROUTES: list of YAML flow mappings
    as strings (default: everything to the first upstream); LIMITS: {key: value}."""
    lines = ["workers: %d" % workers,
             "log: { level: info }"]
    if limits:
        lines.append("limits: { %s }" % ", ".join("%s: %s" % kv for kv in limits.items()))
    lines.append("listeners:")
    lines.append('  - { name: web, address: "127.0.0.1:%d" }' % listen_port)
    lines.append("upstreams:")
    for name, ports in upstreams.items():
        lines.append("  %s:" % name)
        lines.append("    servers:")
        for p in ports:
            lines.append('      - { address: "127.0.0.1:%d" }' % p)
        lines.append("    timeouts: { connect: 2s, response: 20s, idle: 20s }")
    lines.append("routes:")
    if routes is None:
        routes = ["{ match: { path_prefix: / }, upstream: %s }" % next(iter(upstreams))]
    for r in routes:
        lines.append("  - " + r)
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"
