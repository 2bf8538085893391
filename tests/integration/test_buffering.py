"""Response and request buffering (issue 5, item 9): per route `buffering: { response: SIZE,
response_file: SIZE, request: SIZE }`.

A buffered response is read from the origin as fast as it comes (into memory up to `response`,
then an unlinked temp file up to `response_file`), so the upstream connection goes back to the
pool while a slow client (here ~10 KiB/s) is still downloading; one larger than both is streamed
as without buffering. With `request`, a request body up to that size is read whole before the
upstream connection is opened, so a slow upload holds no backend connection.

The observable for "the upstream connection is released": the origin's connection that carried
the big response carries another request while the slow client is still reading. Probes are sent
as concurrent slow requests, as many as the origin has connections, so that every idle pooled
connection is taken whatever order the pool hands them out in. The response is 8 MiB: on
loopback the kernel's socket buffers towards the client alone take 2-4 MiB, which would let even
an unbuffered proxy finish reading a 2 MiB response while the client has read almost nothing.
"""

import hashlib
import os
import socket
import threading
import time

import pytest

from conftest import RawConn, wait_for
from origin import gen_body, route
from test_cache import cache_env  # noqa: F401  (fixture)

BIG = 8 << 20
BIG_BODY = gen_body(BIG)
BIG_SHA = hashlib.sha256(BIG_BODY).hexdigest()


class SlowClient:
    """GET TARGET on a connection with a small receive buffer, read at ~10 KiB/s until
    fast() is called, then to the end as fast as possible."""

    def __init__(self, port, target):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"
                           % target).encode())
        self.data = bytearray()
        self.slow = True
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                chunk = self.sock.recv(1024 if self.slow else 1 << 20)
                if not chunk:
                    return
                self.data += chunk
                if self.slow:
                    time.sleep(0.1)
        except OSError as e:
            self.error = e

    @property
    def received(self):
        return len(self.data)

    def finish(self, timeout=60):
        """Reads the rest at full speed; returns (status line, body sha256, body length)."""
        self.slow = False
        self.thread.join(timeout)
        self.sock.close()
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        return head.split(b"\r\n")[0], hashlib.sha256(body).hexdigest(), len(body)

    def close(self):
        self.slow = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def probe_conns(e, rounds, conn_id):
    """Up to ROUNDS rounds of concurrent probes; True once one travels on connection CONN_ID."""
    for _ in range(rounds):
        k = max(1, e.origin.open_connections)
        before = len(e.origin.reqs("/probe"))
        threads = [threading.Thread(target=e.get, args=("/probe",)) for _ in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        used = {r.conn_id for r in e.origin.reqs("/probe")[before:]}
        if conn_id in used:
            return True
        time.sleep(0.3)
    return False


def deleted_fds(pid):
    """Targets of PID's open files that are unlinked (a temp file spill shows up here)."""
    out = []
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for n in names:
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except OSError:
            continue
        if t.endswith("(deleted)"):
            out.append(t)
    return out


def start(cache_env, buffering):
    lines = ["buffering: %s" % buffering] if buffering else []
    e = cache_env(routes=route("/", *lines))
    e.origin.script("/big", body=BIG_BODY, headers={"Content-Type": "application/octet-stream"})
    e.origin.script("/probe", body="probe\n", head_delay=0.3)
    return e


def run_slow_download(e, expect_released, spill=False):
    c = SlowClient(e.port, "/big")
    try:
        assert wait_for(lambda: e.origin.count("/big") == 1, timeout=10)
        big = e.origin.last("/big")
        if expect_released:
            # the origin writes the whole response at once ...
            assert wait_for(lambda: big.t_done is not None, timeout=20), "origin still writing"
            assert c.received < 1 << 20, c.received
            if spill:
                assert deleted_fds(e.proc.pid), "no unlinked temp file open while spooling"
            # ... and its connection serves other requests while the client is still reading
            assert probe_conns(e, 8, big.conn_id), "upstream connection not released"
        else:
            assert not probe_conns(e, 4, big.conn_id), "upstream connection was reused"
        assert c.received < BIG // 2, "the slow client was not slow"
        status, sha, n = c.finish()
    finally:
        c.close()
    assert c.error is None, c.error
    assert status.startswith(b"HTTP/1.1 200"), status
    assert (n, sha) == (BIG, BIG_SHA)


def test_unbuffered_slow_client_holds_upstream(cache_env):
    run_slow_download(start(cache_env, None), expect_released=False)


def test_memory_buffer_releases_upstream(cache_env):
    run_slow_download(start(cache_env, "{ response: 16MiB }"), expect_released=True)


def test_temp_file_spill_releases_upstream(cache_env):
    run_slow_download(start(cache_env, "{ response: 1MiB, response_file: 32MiB }"),
                      expect_released=True, spill=True)


def test_over_the_cap_streamed(cache_env):
    run_slow_download(start(cache_env, "{ response: 256KiB, response_file: 1MiB }"),
                      expect_released=False)


def test_buffered_fast_client_and_keepalive(cache_env):
    """Buffering changes nothing for a fast client: bodies intact, keep-alive kept."""
    e = start(cache_env, "{ response: 1MiB, response_file: 32MiB }")
    e.origin.script("/chunked", body=gen_body(300000), chunked=True, pieces=5)
    with RawConn(e.port, timeout=30) as rc:
        for path, want in (("/big", BIG_BODY), ("/chunked", gen_body(300000)), ("/big", BIG_BODY)):
            rc.request("GET", path)
            r = rc.read_response()
            assert r.status == 200 and r.body == want, path


# --- request buffering -----------------------------------------------------------------------

def trickle_upload(e, body, pause_at, pause=1.5, chunked=False):
    """Sends POST /up with BODY, stopping PAUSE s after PAUSE_AT bytes. Returns (origin
    connections seen during the pause, requests seen during the pause, response)."""
    rc = RawConn(e.port, timeout=30)
    try:
        if chunked:
            rc.send("POST /up HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n")
            wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                            for p in (body[i:i + 1000] for i in range(0, len(body), 1000)))
            wire += b"0\r\n\r\n"
        else:
            rc.send("POST /up HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n\r\n"
                    % len(body))
            wire = body
        rc.send(wire[:pause_at])
        time.sleep(pause)
        seen = (e.origin.conns_accepted, e.origin.count("/up"))
        rc.send(wire[pause_at:])
        r = rc.read_response()
    finally:
        rc.close()
    return seen[0], seen[1], r


@pytest.mark.parametrize("chunked", [False, True])
def test_request_buffering_holds_upstream_until_body_complete(cache_env, chunked):
    e = cache_env(routes=route("/", "buffering: { request: 64KiB }"))
    body = gen_body(40000)
    conns, reqs, r = trickle_upload(e, body, 20000, chunked=chunked)
    assert (conns, reqs) == (0, 0), "the origin was contacted before the body was complete"
    assert r.status == 200, r
    got = e.origin.last("/up")
    assert got.body == body


def test_without_request_buffering_upload_is_streamed(cache_env):
    e = cache_env()
    body = gen_body(40000)
    conns, reqs, r = trickle_upload(e, body, 20000)
    assert (conns, reqs) == (1, 1)
    assert r.status == 200 and e.origin.last("/up").body == body


def test_request_over_buffer_limit_streamed(cache_env):
    e = cache_env(routes=route("/", "buffering: { request: 64KiB }"))
    body = gen_body(200000)
    conns, reqs, r = trickle_upload(e, body, 100000)
    assert (conns, reqs) == (1, 1)
    assert r.status == 200 and e.origin.last("/up").body == body
