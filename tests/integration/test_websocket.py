"""WebSocket through portero (issue 2, item 4): after the backend's 101 the connection is a
two-way byte tunnel with its own idle timeout (limits.tunnel_timeout); Upgrade is not
forwarded for requests that do not ask to upgrade.

The backend is a python3-websockets server (echo, and a greeting pushed by the server on
connect); clients are the websockets library and a raw socket speaking RFC 6455 frames."""

import asyncio
import base64
import hashlib
import http
import json
import os
import socket
import struct
import threading
import time

import pytest
import websockets

from conftest import free_port
from rawbackend import RawClient, ConnectionClosed, portero_config

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WSServer:
    """websockets echo server in its own thread and event loop."""

    def __init__(self):
        self.handshakes = []      # (path, {lower-cased header: value})
        self.closed = []          # paths whose handler ended
        self.messages = []        # messages received, in order
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "websocket server did not start"

    async def _process_request(self, path, headers):
        self.handshakes.append((path, {k.lower(): v for k, v in headers.raw_items()}))
        if path.startswith("/deny"):
            return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"denied\n"
        return None

    async def _handler(self, ws):
        try:
            if ws.path.startswith("/greet"):
                await ws.send("welcome")
            async for msg in ws:
                self.messages.append(msg)
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.append(ws.path)

    def _run(self):
        asyncio.set_event_loop(self._loop)

        async def main():
            self._stop = asyncio.Event()
            async with websockets.serve(self._handler, "127.0.0.1", 0,
                                        process_request=self._process_request,
                                        ping_interval=None, max_size=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                self._ready.set()
                await self._stop.wait()

        self._loop.run_until_complete(main())

    def stop(self):
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def start(make_portero, upstream_port, tunnel_timeout=None):
    port = free_port()
    limits = {"tunnel_timeout": tunnel_timeout} if tunnel_timeout else None
    make_portero(portero_config(port, {"ws": [upstream_port]}, limits=limits), ports=[port])
    return port


@pytest.fixture
def wss():
    s = WSServer()
    yield s
    s.stop()


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------------------------------------
# Raw RFC 6455 client helpers

def ws_handshake(c, path="/raw", extra=b""):
    key = base64.b64encode(os.urandom(16))
    c.send(b"GET %s HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
           % (path.encode(), key, extra))
    r = c.read_head()
    return r, key


def ws_send(c, opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    c.send(hdr + mask + masked)


def ws_recv(c):
    """One frame from the server: (opcode, payload)."""
    b1, b2 = c.read_exact(2)
    assert not b2 & 0x80, "server frames must not be masked"
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack(">H", c.read_exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", c.read_exact(8))[0]
    payload = c.read_exact(n)
    assert len(payload) == n, "connection closed inside a frame"
    return b1 & 0x0F, payload


# ---------------------------------------------------------------------------------------------

def test_handshake_101_and_headers_forwarded(make_portero, wss):
    port = start(make_portero, wss.port)
    with RawClient(port, timeout=20) as c:
        r, key = ws_handshake(c, "/hs?x=1")
        assert r.status == 101, r.raw_head
        assert (r.header("upgrade") or "").lower() == "websocket"
        assert "upgrade" in (r.header("connection") or "").lower()
        expect = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        assert r.header("sec-websocket-accept") == expect
        ws_send(c, 0x1, b"ping-through")
        assert ws_recv(c) == (0x1, b"ping-through")
    path, headers = wss.handshakes[0]
    assert path == "/hs?x=1"
    assert headers.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in headers.get("connection", "").lower()
    assert headers.get("sec-websocket-key") == key.decode()
    assert headers.get("sec-websocket-version") == "13"


def test_echo_text_and_binary_with_library_client(make_portero, wss):
    port = start(make_portero, wss.port)

    async def client():
        got = []
        async with websockets.connect("ws://127.0.0.1:%d/greet" % port, ping_interval=None,
                                      open_timeout=20, close_timeout=10, max_size=None) as ws:
            got.append(await ws.recv())              # pushed by the server first
            msgs = ["hello", "", "ünïcödé ✓", "x" * 70000, b"\x00\x01\x02\xff",
                    os.urandom(200000), b""]
            for m in msgs:
                await ws.send(m)
                got.append(await ws.recv())
            return msgs, got

    msgs, got = run(client())
    assert got[0] == "welcome"
    assert got[1:] == msgs
    assert wss.messages == msgs


def test_many_messages_interleaved_both_ways(make_portero, wss):
    port = start(make_portero, wss.port)

    async def client():
        async with websockets.connect("ws://127.0.0.1:%d/many" % port, ping_interval=None,
                                      open_timeout=20, close_timeout=10) as ws:
            sent = ["m%d" % i for i in range(200)]
            # send everything first (pipelined in the tunnel), then read the echoes
            for m in sent:
                await ws.send(m)
            got = [await ws.recv() for _ in sent]
            return sent, got

    sent, got = run(client())
    assert got == sent


def test_raw_frames_both_ways_and_close(make_portero, wss):
    port = start(make_portero, wss.port)
    with RawClient(port, timeout=20) as c:
        r, _ = ws_handshake(c, "/greet-raw")
        assert r.status == 101
        assert ws_recv(c) == (0x1, b"welcome")
        for i in range(20):
            payload = os.urandom(i * 997)
            ws_send(c, 0x2, payload)
            assert ws_recv(c) == (0x2, payload)
        ws_send(c, 0x9, b"are-you-there")           # ping -> pong
        assert ws_recv(c) == (0xA, b"are-you-there")
        ws_send(c, 0x8, struct.pack(">H", 1000))   # close handshake
        op, payload = ws_recv(c)
        assert op == 0x8 and payload[:2] == struct.pack(">H", 1000)
        assert c.wait_closed(15), "tunnel not closed after the backend closed"


def test_frame_sent_right_after_handshake_request(make_portero, wss):
    """The client writes its first frame in the same packet as the upgrade request, before
    the 101 arrives: the bytes must be delivered through the tunnel after the 101."""
    port = start(make_portero, wss.port)
    with RawClient(port, timeout=20) as c:
        key = base64.b64encode(os.urandom(16))
        mask = os.urandom(4)
        payload = b"early-bird"
        frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(
            b ^ mask[i % 4] for i, b in enumerate(payload))
        c.send(b"GET /early HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13"
               b"\r\n\r\n" % key + frame)
        r = c.read_head()
        assert r.status == 101
        assert ws_recv(c) == (0x1, payload)


def test_large_messages_both_ways(make_portero, wss):
    port = start(make_portero, wss.port)

    async def client():
        async with websockets.connect("ws://127.0.0.1:%d/large" % port, ping_interval=None,
                                      open_timeout=20, close_timeout=10, max_size=None) as ws:
            out = []
            for n in (1 << 20, 3 << 20):
                m = os.urandom(n)
                await ws.send(m)
                out.append((m, await ws.recv()))
            return out

    for sent, got in run(client()):
        assert got == sent


def test_client_vanishing_closes_backend_side(make_portero, wss):
    port = start(make_portero, wss.port)
    with RawClient(port, timeout=20) as c:
        r, _ = ws_handshake(c, "/vanish")
        assert r.status == 101
        ws_send(c, 0x1, b"x")
        assert ws_recv(c) == (0x1, b"x")
    deadline = time.monotonic() + 15
    while "/vanish" not in wss.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/vanish" in wss.closed, "backend side of the tunnel still open"


def test_upgrade_refused_by_backend_is_forwarded(make_portero, wss):
    port = start(make_portero, wss.port)
    with RawClient(port, timeout=20) as c:
        r, _ = ws_handshake(c, "/deny")
        assert r.status == 403
        body = c.read_exact(int(r.header("content-length") or 0)) if r.header(
            "content-length") else b""
        assert body in (b"denied\n", b"")
        assert r.header("upgrade") is None


# ---------------------------------------------------------------------------------------------
# Idle timeout of the tunnel

def test_idle_tunnel_closed_after_tunnel_timeout(make_portero, wss):
    port = start(make_portero, wss.port, tunnel_timeout="1s")
    with RawClient(port, timeout=20) as c:
        r, _ = ws_handshake(c, "/idle")
        assert r.status == 101
        ws_send(c, 0x1, b"alive")
        assert ws_recv(c) == (0x1, b"alive")
        t0 = time.monotonic()
        assert c.wait_closed(15), "idle tunnel still open 15 s after a 1 s tunnel_timeout"
        assert time.monotonic() - t0 >= 0.5
        assert c.extra == b""
    # the backend side of the tunnel is closed too
    deadline = time.monotonic() + 15
    while "/idle" not in wss.closed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/idle" in wss.closed


def test_active_tunnel_outlives_tunnel_timeout(make_portero, wss):
    port = start(make_portero, wss.port, tunnel_timeout="1s")
    with RawClient(port, timeout=20) as c:
        r, _ = ws_handshake(c, "/active")
        assert r.status == 101
        t0 = time.monotonic()
        i = 0
        while time.monotonic() - t0 < 3.0:     # 3 s of traffic, a message every 0.2 s
            ws_send(c, 0x1, b"tick%d" % i)
            assert ws_recv(c) == (0x1, b"tick%d" % i)
            i += 1
            time.sleep(0.2)
        assert i >= 5
        assert c.wait_closed(15)               # and once idle, it goes


# ---------------------------------------------------------------------------------------------
# Upgrade only when asked for

@pytest.mark.parametrize("hdrs", [b"Upgrade: websocket\r\n",
                                  b"Upgrade: h2c\r\nConnection: keep-alive\r\n",
                                  b"Upgrade: websocket\r\nConnection: close\r\n"],
                         ids=["upgrade_without_connection", "h2c_keepalive",
                              "upgrade_with_connection_close"])
def test_upgrade_header_not_forwarded_without_connection_upgrade(make_portero, backend_factory,
                                                                  hdrs):
    b = backend_factory("N")
    port = free_port()
    make_portero(portero_config(port, {"app": [b.port]}), ports=[port])
    with RawClient(port, timeout=20) as c:
        c.send(b"GET /plain HTTP/1.1\r\nHost: test\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n%s\r\n" % hdrs)
        r = c.read_response()
        assert r.status == 200, r
        j = json.loads(r.body)
        assert "upgrade" not in j["headers"], j["headers"]
        assert "upgrade" not in j["headers"].get("connection", "").lower()
        assert r.header("upgrade") is None
    assert b.requests[0]["hmap"].get("upgrade") is None
