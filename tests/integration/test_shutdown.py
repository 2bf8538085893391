"""Graceful shutdown (issue 2, item 2).

Contract: SIGTERM (and SIGINT) -> portero stops accepting, in-flight exchanges finish (up to
`limits.drain_timeout`, default 30s), idle keep-alive connections are closed, the process
exits 0.
"""

import signal
import threading
import time

import pytest
import requests

from conftest import RawConn, free_port, port_open, proxy_config, url, wait_for


def start(make_portero, backends, **kw):
    port = free_port()
    p = make_portero(proxy_config(port, backends, **kw), ports=[port])
    return port, p


def test_sigterm_idle_exits_0(make_portero, backend_factory):
    b = backend_factory()
    port, p = start(make_portero, [b])
    assert requests.get(url(port, "/"), timeout=15).status_code == 200
    t0 = time.monotonic()
    assert p.stop(signal.SIGTERM, timeout=20) == 0
    assert time.monotonic() - t0 < 10


def test_sigint_exits_0(make_portero, backend_factory):
    b = backend_factory()
    port, p = start(make_portero, [b])
    assert requests.get(url(port, "/"), timeout=15).status_code == 200
    assert p.stop(signal.SIGINT, timeout=20) == 0


def _in_flight(port, path, result):
    def run():
        try:
            r = requests.get(url(port, path), timeout=30)
            result["status"] = r.status_code
            result["body"] = r.content
        except Exception as e:   # noqa: BLE001 - inspected by the test
            result["error"] = repr(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sigterm_lets_in_flight_request_finish(make_portero, backend_factory):
    b = backend_factory()
    port, p = start(make_portero, [b], workers=2)
    result = {}
    t = _in_flight(port, "/slow?delay=2", result)
    assert wait_for(lambda: b.request_count() == 1, 10), "request did not reach the backend"
    p.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert result.get("status") == 200, result
    assert b'"path": "/slow"' in result["body"]
    assert p.wait(20) == 0


def test_sigterm_stops_accepting(make_portero, backend_factory):
    """After SIGTERM, while an exchange drains, a new connection is not served (it is refused,
    or closed without an answer)."""
    b = backend_factory()
    port, p = start(make_portero, [b])
    result = {}
    t = _in_flight(port, "/slow?delay=3", result)
    assert wait_for(lambda: b.request_count() == 1, 10)
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    served = False
    try:
        with RawConn(port, timeout=2) as rc:
            rc.request("GET", "/new")
            try:
                data = rc.sock.recv(100)
                served = data.startswith(b"HTTP/1.1 200")
            except OSError:
                pass
    except OSError:
        pass                                   # refused: not accepting
    assert not served, "a connection opened after SIGTERM was served"
    t.join(30)
    assert result.get("status") == 200, result
    assert p.wait(20) == 0
    assert b.request_count() == 1


def test_sigterm_closes_idle_keepalive_connection(make_portero, backend_factory):
    b = backend_factory()
    port, p = start(make_portero, [b], limits="{ keepalive_timeout: 60s }")
    with RawConn(port, timeout=15) as rc:
        rc.request("GET", "/ka")
        assert rc.read_response().status == 200
        p.proc.send_signal(signal.SIGTERM)
        assert rc.closed_by_peer(10), "idle keep-alive connection not closed on SIGTERM"
    assert p.wait(20) == 0


def test_sigterm_keepalive_connection_closed_after_in_flight_response(make_portero,
                                                                      backend_factory):
    """A keep-alive client with a request in flight gets its whole response, then the
    connection is closed (marked Connection: close or simply closed)."""
    b = backend_factory()
    port, p = start(make_portero, [b])
    with RawConn(port, timeout=20) as rc:
        rc.request("GET", "/slow?delay=2")
        assert wait_for(lambda: b.request_count() == 1, 10)
        p.proc.send_signal(signal.SIGTERM)
        r = rc.read_response()
        assert r.status == 200
        assert r.json()["path"] == "/slow"
        assert rc.closed_by_peer(10)
    assert p.wait(20) == 0


def test_drain_timeout_bounds_shutdown(make_portero, backend_factory):
    b = backend_factory()
    port, p = start(make_portero, [b], limits="{ drain_timeout: 1s }")
    result = {}
    t = _in_flight(port, "/slow?delay=15", result)
    assert wait_for(lambda: b.request_count() == 1, 10)
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    rc = p.wait(12)
    assert rc is not None, "portero did not exit within 12 s with drain_timeout: 1s"
    assert rc == 0
    assert time.monotonic() - t0 < 12
    t.join(30)
    assert result.get("status") != 200, result    # the exchange was cut off
    assert not port_open(port)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_after_traffic_exits_0(make_portero, backend_factory, workers):
    b = backend_factory()
    port, p = start(make_portero, [b], workers=workers)
    s = requests.Session()
    for i in range(20):
        assert s.get(url(port, "/t%d" % i), timeout=15).status_code == 200
    s.close()
    assert p.stop(signal.SIGTERM, timeout=20) == 0
