"""Failover and live change under steady load (issue 3, "Tests").

(a) Kill one of three backends while client threads send idempotent requests: the clients see
    zero failed requests (retries cover those in flight), the dead server is marked down
    (active checks) or ejected (passive), and when it comes back on the same port it rejoins.
(b) 20 reloads and 10 admin server operations during steady load: zero failed requests and
    zero refused connections.
"""

import json
import signal
import time

import pytest

from admin_client import Load, build_config, fast_checks, launch, to_yaml, upstream
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


def _failures(load):
    return load.failures[:20]


def _kill_and_revive(make_portero, cbackend, outlier, rejoin_timeout):
    a, b, c = cbackend("a"), cbackend("b"), cbackend("c")
    port, ap = free_port(), free_port()
    up = dict(health_check=fast_checks(), slow_start="2s",
              timeouts={"connect": "2s", "response": "20s"})
    if outlier is not None:
        up["outlier"] = outlier
    cfg = build_config(port, {"app": upstream([a, b, c], **up)}, admin_port=ap, workers=2)
    p, adm = launch(make_portero, cfg)
    for s in (a, b, c):
        assert adm.wait_health("app", s, "up") == "up"

    load = Load(port, threads=4).start()
    revived = None
    try:
        assert wait_for(lambda: load.total >= 200, timeout=15)
        time.sleep(1.0)
        b_port = b.port
        b.kill()
        h = adm.wait_health("app", b, ("down", "ejected"), timeout=10)
        assert h in ("down", "ejected"), h
        ok_at_kill = load.ok
        time.sleep(2.0)
        assert load.ok > ok_at_kill                  # traffic keeps flowing
        dead = adm.server("app", b)
        assert dead["health"] in ("down", "ejected"), dead
        m = adm.metrics()
        assert m.value("portero_server_up", upstream="app", server=b.address) == 0, m.text
        # active checks saw it fail
        assert m.value("portero_health_checks_failed_total", upstream="app",
                       server=b.address) >= 2 or dead["health"] == "down", m.text

        revived = start_backend_on_port(b_port, name="b-again")
        assert adm.wait_health("app", revived, "up", timeout=rejoin_timeout) == "up", \
            adm.server("app", revived)
        assert wait_for(lambda: load.by_backend.get("b-again", 0) >= 10, timeout=15), \
            load.by_backend
    finally:
        load.stop()
        if revived is not None:
            revived.stop()
    assert load.failures == [], _failures(load)
    assert load.ok >= 300
    for name in ("a", "b", "c"):
        assert load.by_backend.get(name, 0) > 0, load.by_backend
    assert p.running()


def test_kill_one_of_three_under_load(make_portero, cbackend):
    # A short ejection, so that the revived server is back within the test's time whichever
    # of the active or passive checks caught it.
    _kill_and_revive(make_portero, cbackend,
                     {"consecutive_failures": 5, "base_ejection": "2s", "max_ejection": "10s",
                      "max_ejected_percent": 50}, rejoin_timeout=20)


@pytest.mark.slow
def test_kill_one_of_three_under_load_outlier_defaults(make_portero, cbackend):
    # Outlier defaults: a passive ejection lasts 30 s, so rejoining may take that long.
    _kill_and_revive(make_portero, cbackend, None, rejoin_timeout=45)


def test_kill_one_of_three_passive_only(make_portero, cbackend):
    """Without active checks, passive ejection alone must protect the clients."""
    a, b, c = cbackend("a"), cbackend("b"), cbackend("c")
    port, ap = free_port(), free_port()
    cfg = build_config(port, {"app": upstream([a, b, c],
                                              outlier={"consecutive_failures": 3,
                                                       "base_ejection": "30s"})},
                       admin_port=ap, workers=2)
    p, adm = launch(make_portero, cfg)
    load = Load(port, threads=4).start()
    try:
        assert wait_for(lambda: load.total >= 200, timeout=15)
        b.kill()
        assert adm.wait_health("app", b, "ejected", timeout=10) == "ejected"
        n = load.ok
        assert wait_for(lambda: load.ok >= n + 200, timeout=15)
    finally:
        load.stop()
    assert load.failures == [], _failures(load)
    assert adm.metrics().value("portero_ejections_total") >= 1


def _alt_configs(port, ap, servers):
    one = build_config(port, {"app": upstream(servers, health_check=fast_checks())},
                       admin_port=ap, workers=2,
                       routes=[{"name": "main", "match": {"path_prefix": "/"},
                                "upstream": "app"}])
    two = json.loads(json.dumps(one))
    two["upstreams"]["app"]["servers"] = [{"address": s.address, "weight": i + 1}
                                          for i, s in enumerate(servers)]
    two["routes"].insert(0, {"name": "extra", "match": {"path": "/extra"},
                             "respond": {"status": 200, "body": "extra"}})
    return to_yaml(one), to_yaml(two), one


def test_reloads_and_admin_changes_under_load(make_portero, cbackend):
    a, b, c, d = cbackend("a"), cbackend("b"), cbackend("c"), cbackend("d")
    port, ap = free_port(), free_port()
    text_one, text_two, cfg = _alt_configs(port, ap, [a, b, c])
    p, adm = launch(make_portero, cfg)
    keepalive = Load(port, threads=3).start()
    fresh = Load(port, threads=1, fresh=True, path="/fresh").start()
    second_ops = [
        ("POST", "/upstreams/app/servers/%s/drain" % d.address, None),
        ("DELETE", "/upstreams/app/servers/%s" % d.address, None),
        ("PATCH", "/upstreams/app/servers/%s" % d.address, {"weight": 3}),
        ("PATCH", "/upstreams/app/servers/%s" % d.address, {"drain": True}),
        ("DELETE", "/upstreams/app/servers/%s" % d.address, None),
    ]
    ops_done = 0
    try:
        assert wait_for(lambda: keepalive.total >= 50, timeout=15)
        for i in range(20):
            ok_before = adm.config_status()["reloads_ok"]
            p.config_path.write_text(text_two if i % 2 == 0 else text_one)
            p.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: adm.config_status()["reloads_ok"] > ok_before,
                            timeout=15), "reload %d not applied: %s" % (i, p.stderr_text()[-2000:])
            time.sleep(0.2)
            if i % 4 == 1:
                # two admin operations between reloads: add d, then change or remove it
                r = adm.post("/upstreams/app/servers", {"address": d.address, "weight": 1})
                assert r.status == 200, r
                ops_done += 1
                time.sleep(0.3)
                method, path, body = second_ops[(i // 4) % len(second_ops)]
                r = adm.request(method, path, body=body)
                assert r.status == 200, (method, path, r)
                ops_done += 1
                time.sleep(0.2)
        time.sleep(0.5)
    finally:
        keepalive.stop()
        fresh.stop()
    assert ops_done == 10
    assert keepalive.failures == [], _failures(keepalive)
    assert fresh.failures == [], _failures(fresh)          # includes refused connections
    assert keepalive.ok >= 200 and fresh.ok >= 20, (keepalive.ok, fresh.ok)
    assert d.request_count() > 0          # the added server did get traffic
    st = adm.config_status()
    assert st["reloads_failed"] == 0
    assert p.running()
