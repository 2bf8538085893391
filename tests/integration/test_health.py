"""Active health checks, panic mode, slow start and passive outlier ejection (issue 3, items 1-2).

Contract: `health_check: { type: http|tcp, path, host, interval, timeout, status: "200-399",
rise, fall }` per upstream, run on the control thread. A server failing `fall` checks in a row
is down and gets no new requests; `rise` successes bring it back. With every server down the
answer is 503 at once (no connect timeout), unless `panic: true` (then all servers are used).
`outlier: { consecutive_failures, base_ejection, max_ejection, max_ejected_percent }` ejects a
server after consecutive connect failures / resets / 5xx, never more than the given share of
the pool. `slow_start: D` ramps a returning server's effective weight over D.
GET /upstreams shows `health` ("up" | "down" | "ejected" | "draining"); /metrics has
portero_server_up{upstream,server}.
"""

import time

import pytest

from admin_client import (NO_OUTLIER, build_config, fast_checks, get, launch,
                          upstream)
from backends import ControlledBackend, start_backend_on_port
from conftest import free_port, wait_for


@pytest.fixture
def cbackend():
    made = []

    def factory(name, **kw):
        b = ControlledBackend(name=name, **kw)
        made.append(b)
        return b

    yield factory
    for b in made:
        b.stop()


def names_of(port, n, path="/h"):
    out = []
    for i in range(n):
        status, body = get(port, "%s?i=%d" % (path, i))
        assert status == 200, (status, body)
        out.append(body["backend"])
    return out


def start(make_portero, servers, **up):
    port, ap = free_port(), free_port()
    cfg = build_config(port, {"app": upstream(servers, **up)}, admin_port=ap)
    p, adm = launch(make_portero, cfg)
    return port, adm, p


def test_http_check_failing_server_is_down_and_gets_nothing(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", health_status=500)
    port, adm, _ = start(make_portero, [a, b], health_check=fast_checks(),
                         outlier=NO_OUTLIER)
    assert adm.wait_health("app", b, "down") == "down"
    assert adm.health("app", a) == "up"
    assert b.health_checks >= 2          # `fall: 2` failures were needed

    m = adm.metrics()
    assert m.value("portero_server_up", upstream="app", server=b.address) == 0, m.text
    assert m.value("portero_server_up", upstream="app", server=a.address) == 1, m.text
    assert m.value("portero_health_checks_total") >= 2

    b.clear()
    assert names_of(port, 20) == ["a"] * 20
    assert b.request_count() == 0


def test_server_comes_back_after_rise(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", health_status=503)
    port, adm, _ = start(make_portero, [a, b], health_check=fast_checks(rise=3),
                         outlier=NO_OUTLIER)
    assert adm.wait_health("app", b, "down") == "down"
    before = b.health_checks
    b.health_status = 200
    assert adm.wait_health("app", b, "up") == "up"
    assert b.health_checks - before >= 3        # `rise: 3` successes were needed
    m = adm.metrics()
    assert m.value("portero_server_up", upstream="app", server=b.address) == 1, m.text
    # b gets traffic again (round robin, one worker: every other request)
    seen = names_of(port, 10)
    assert seen.count("b") >= 3, seen


def test_check_uses_path_host_and_status_range(make_portero, cbackend):
    a = cbackend("a", health_path="/ping")
    b = cbackend("b", health_path="/ping", health_status=204)
    port, adm, _ = start(make_portero, [a, b],
                         health_check=fast_checks(path="/ping", host="health.example",
                                                  status="200"),
                         outlier=NO_OUTLIER)
    # 204 is outside "200": b is down, a (200) stays up
    assert adm.wait_health("app", b, "down") == "down"
    assert adm.health("app", a) == "up"
    assert a.health_checks >= 1
    assert set(a.health_hosts) == {"health.example"}, a.health_hosts
    b.clear()
    assert set(names_of(port, 6)) == {"a"}
    assert b.request_count() == 0


def test_check_slower_than_timeout_fails(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", health_delay=3.0)
    port, adm, _ = start(make_portero, [a, b],
                         health_check=fast_checks(interval="200ms", timeout="300ms"),
                         outlier=NO_OUTLIER)
    assert adm.wait_health("app", b, "down", timeout=20) == "down"
    assert adm.health("app", a) == "up"
    b.clear()
    assert names_of(port, 6) == ["a"] * 6
    # answering quickly again brings it back
    b.health_delay = 0
    assert adm.wait_health("app", b, "up", timeout=20) == "up"


def test_tcp_check_marks_killed_backend_down_and_back(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b")
    port, adm, _ = start(make_portero, [a, b],
                         health_check={"type": "tcp", "interval": "200ms", "timeout": "500ms",
                                       "rise": 2, "fall": 2},
                         outlier=NO_OUTLIER)
    assert adm.wait_health("app", b, "up") == "up"
    assert set(names_of(port, 4)) == {"a", "b"}
    assert b.health_checks == 0                  # tcp checks send no HTTP request
    b_port = b.port
    b.kill()
    assert adm.wait_health("app", b, "down") == "down"
    m = adm.metrics()
    assert m.value("portero_server_up", upstream="app", server=b.address) == 0, m.text
    assert names_of(port, 10) == ["a"] * 10

    b2 = start_backend_on_port(b_port, name="b2")
    try:
        assert adm.wait_health("app", b2, "up") == "up"
        seen = names_of(port, 10)
        assert seen.count("b2") >= 3, seen
    finally:
        b2.stop()


def test_all_servers_down_answers_503_at_once(make_portero, cbackend):
    # App requests to these servers would take 8 s: a fast 503 proves nothing was forwarded.
    a = cbackend("a", health_status=500, delay=8)
    b = cbackend("b", health_status=500, delay=8)
    port, adm, _ = start(make_portero, [a, b], health_check=fast_checks(),
                         outlier=NO_OUTLIER,
                         timeouts={"connect": "10s", "response": "30s"})
    assert adm.wait_health("app", a, "down") == "down"
    assert adm.wait_health("app", b, "down") == "down"
    for _ in range(3):
        t0 = time.monotonic()
        status, body = get(port, "/x")
        elapsed = time.monotonic() - t0
        assert status == 503, body
        assert elapsed < 4.0, elapsed
    assert a.request_count() == 0 and b.request_count() == 0


def test_all_down_with_unreachable_servers_is_fast(make_portero):
    # Nobody listens on these ports: tcp checks fail, and the 503 must not wait for retries
    # or connect attempts.
    s1, s2 = "127.0.0.1:%d" % free_port(), "127.0.0.1:%d" % free_port()
    port, adm, _ = start(make_portero, [s1, s2],
                         health_check={"type": "tcp", "interval": "200ms", "timeout": "300ms",
                                       "rise": 2, "fall": 2},
                         outlier=NO_OUTLIER)
    assert adm.wait_health("app", s1, "down") == "down"
    assert adm.wait_health("app", s2, "down") == "down"
    t0 = time.monotonic()
    status, _ = get(port, "/x")
    assert status == 503
    assert time.monotonic() - t0 < 3.0


def test_panic_sends_to_all_when_every_server_is_down(make_portero, cbackend):
    a = cbackend("a", health_status=500)
    b = cbackend("b", health_status=500)
    port, adm, _ = start(make_portero, [a, b], health_check=fast_checks(),
                         outlier=NO_OUTLIER, panic=True)
    assert adm.wait_health("app", a, "down") == "down"
    assert adm.wait_health("app", b, "down") == "down"
    seen = names_of(port, 10)
    assert set(seen) == {"a", "b"}, seen
    assert a.request_count() + b.request_count() == 10


def test_panic_is_not_used_while_one_server_is_up(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", health_status=500)
    port, adm, _ = start(make_portero, [a, b], health_check=fast_checks(),
                         outlier=NO_OUTLIER, panic=True)
    assert adm.wait_health("app", b, "down") == "down"
    b.clear()
    assert names_of(port, 10) == ["a"] * 10
    assert b.request_count() == 0


def test_slow_start_ramps_a_returning_server(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", health_status=500)
    port, adm, _ = start(make_portero, [(a, 10), (b, 10)], health_check=fast_checks(),
                         outlier=NO_OUTLIER, slow_start="4s")
    assert adm.wait_health("app", b, "down") == "down"
    b.health_status = 200
    assert adm.wait_health("app", b, "up") == "up"
    early = names_of(port, 40, "/early")
    # Right after coming back b's weight is a small fraction of a's: far fewer than half.
    assert early.count("b") < early.count("a") * 0.6, early
    # Once the ramp is over, both share the load about equally again.
    time.sleep(5.0)
    late = names_of(port, 40, "/late")
    assert late.count("b") >= 14, late
    assert late.count("b") > early.count("b"), (early, late)


def test_passive_ejection_of_refused_server(make_portero, backend_factory):
    good = backend_factory("good")
    dead = "127.0.0.1:%d" % free_port()
    port, adm, _ = start(make_portero, [dead, good],
                         outlier={"consecutive_failures": 2, "base_ejection": "30s",
                                  "max_ejection": "60s", "max_ejected_percent": 50},
                         retries={"attempts": 2, "budget": 100, "budget_min": 100})
    assert names_of(port, 10) == ["good"] * 10
    assert adm.wait_health("app", dead, "ejected", timeout=5) == "ejected"
    srv = adm.server("app", dead)
    assert srv["ejections"] >= 1, srv
    m = adm.metrics()
    assert m.value("portero_ejections_total") >= 1, m.text
    assert m.value("portero_server_up", upstream="app", server=dead) == 0, m.text
    retries = m.value("portero_retries_total")
    assert retries >= 1
    # Ejected: no longer tried, so no more retries are needed.
    assert names_of(port, 10) == ["good"] * 10
    assert adm.metrics().value("portero_retries_total") == retries


def test_5xx_server_is_ejected_then_returns_after_ejection_time(make_portero, cbackend):
    a = cbackend("a")
    b = cbackend("b", status=500)
    port, adm, _ = start(make_portero, [a, b],
                         outlier={"consecutive_failures": 3, "base_ejection": "1s",
                                  "max_ejection": "10s", "max_ejected_percent": 50},
                         retries={"attempts": 1})
    statuses = []
    for i in range(40):
        statuses.append(get(port, "/e?i=%d" % i)[0])
        if adm.health("app", b) == "ejected":
            break
    assert adm.health("app", b) == "ejected", statuses
    assert statuses.count(500) >= 3, statuses
    b_seen = b.request_count()
    assert names_of(port, 6) == ["a"] * 6     # ejected: no requests for b
    assert b.request_count() == b_seen
    # The ejection ends after about base_ejection; b gets requests again and, still failing,
    # is ejected a second time (ejections counted per server).
    assert wait_for(lambda: adm.health("app", b) == "up", timeout=10)

    def ejected_twice():
        get(port, "/again")
        return adm.server("app", b)["ejections"] >= 2
    assert wait_for(ejected_twice, timeout=15, interval=0.1)
    assert b.request_count() > b_seen


def test_never_ejects_more_than_max_percent(make_portero, backend_factory):
    good = backend_factory("good")
    dead = ["127.0.0.1:%d" % free_port() for _ in range(3)]
    port, adm, _ = start(make_portero, dead + [good],
                         outlier={"consecutive_failures": 1, "base_ejection": "30s",
                                  "max_ejected_percent": 50},
                         retries={"attempts": 4, "budget": 100, "budget_min": 100})
    for i in range(30):
        status, body = get(port, "/m?i=%d" % i)
        assert status == 200, body
    health = adm.servers("app")
    ejected = [a for a, s in health.items() if s["health"] == "ejected"]
    assert 1 <= len(ejected) <= 2, health          # 50 % of 4 servers
    assert health[good.address]["health"] == "up"
