"""Metrics (issue 3, item 7): GET /metrics on the admin listener, Prometheus text format.

Values must move exactly as a known sequence of requests says: requests by route and status
class, by upstream and by server, latency histograms (total and upstream), client and upstream
connections by state, bytes in and out, retries, reloads. All tests run one worker.
"""

import http.client
import signal

from admin_client import (NO_OUTLIER, build_config, fast_checks, get, launch, upstream)
from conftest import free_port, wait_for

ROUTES = [
    {"name": "ok", "match": {"path": "/ok"}, "respond": {"status": 200, "body": "ok\n"}},
    {"name": "nf", "match": {"path": "/nf"}, "respond": {"status": 404, "body": "nf\n"}},
    {"name": "app", "match": {"path_prefix": "/app"}, "upstream": "app"},
]


def start(make_portero, servers, routes=ROUTES, **up):
    port, ap = free_port(), free_port()
    up.setdefault("outlier", NO_OUTLIER)
    cfg = build_config(port, {"app": upstream(servers, **up)}, admin_port=ap, routes=routes)
    p, adm = launch(make_portero, cfg)
    return port, adm, p


def test_requests_by_route_and_class_exact(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _ = start(make_portero, [a])
    for _ in range(3):
        assert get(port, "/ok") == (200, b"ok\n")
    for _ in range(2):
        assert get(port, "/nf")[0] == 404
    m = adm.settled_metrics("portero_requests_total", 5)
    assert m.types.get("portero_requests_total") == "counter", m.types
    assert m.value("portero_requests_total", route="ok", class_="2xx") == 3, m.text
    assert m.value("portero_requests_total", route="ok") == 3
    assert m.value("portero_requests_total", route="nf", class_="4xx") == 2
    assert m.value("portero_requests_total", route="nf") == 2
    assert m.value("portero_requests_total", route="app") == 0
    assert m.value("portero_requests_total") == 5
    # a scrape does not count as a request, and values only move with traffic
    m2 = adm.metrics()
    assert m2.value("portero_requests_total") == 5


def test_no_route_404_is_counted(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _ = start(make_portero, [a])
    assert get(port, "/nothing-here")[0] == 404
    m = adm.settled_metrics("portero_request_duration_seconds_count", 1)
    assert m.value("portero_request_duration_seconds_count") == 1
    m = adm.settled_metrics("portero_requests_total", 1, timeout=3)
    assert m.value("portero_requests_total", class_="4xx") == 1, m.text
    assert m.value("portero_requests_total") == 1


def test_upstream_and_server_counters_exact(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _ = start(make_portero, [a, b])
    for i in range(4):
        assert get(port, "/app/x?i=%d" % i)[0] == 200
    assert get(port, "/app/y?status=500")[0] == 500
    assert get(port, "/ok")[0] == 200
    adm.settled_metrics("portero_requests_total", 6)
    m = adm.settled_metrics("portero_server_requests_total", 5)
    assert m.value("portero_upstream_requests_total", upstream="app", class_="2xx") == 4, m.text
    assert m.value("portero_upstream_requests_total", upstream="app", class_="5xx") == 1
    assert m.value("portero_upstream_requests_total", upstream="app") == 5
    sa = m.value("portero_server_requests_total", upstream="app", server=a.address)
    sb = m.value("portero_server_requests_total", upstream="app", server=b.address)
    assert sa + sb == 5 and sa >= 2 and sb >= 2, (sa, sb, m.text)
    assert sa == a.request_count() and sb == b.request_count()
    assert m.value("portero_server_requests_total", upstream="app", class_="5xx") == 1
    assert m.value("portero_requests_total", route="app", class_="2xx") == 4
    assert m.value("portero_requests_total", route="app", class_="5xx") == 1
    assert m.value("portero_requests_total", route="ok", class_="2xx") == 1


def _histogram_ok(m, name, expect_count):
    assert m.types.get(name) == "histogram", (name, m.types)
    assert m.value(name + "_count") == expect_count, m.text
    assert m.value(name + "_bucket", le="+Inf") == expect_count
    assert m.value(name + "_sum") >= 0
    # per label set, buckets are cumulative
    series = {}
    for labels, v in m.select(name + "_bucket"):
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        series.setdefault(key, []).append((float(labels["le"]), v))
    assert series
    for key, buckets in series.items():
        buckets.sort()
        values = [v for _, v in buckets]
        assert values == sorted(values), (key, buckets)


def test_latency_histograms_count_every_request(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _ = start(make_portero, [a])
    for _ in range(3):
        get(port, "/ok")
    for i in range(4):
        get(port, "/app/h?i=%d" % i)
    get(port, "/app/slow?delay=0.3")
    adm.settled_metrics("portero_upstream_response_duration_seconds_count", 5)
    m = adm.settled_metrics("portero_request_duration_seconds_count", 8)
    _histogram_ok(m, "portero_request_duration_seconds", 8)
    _histogram_ok(m, "portero_upstream_response_duration_seconds", 5)
    # the slow request alone took 0.3 s
    assert m.value("portero_upstream_response_duration_seconds_sum") >= 0.25
    assert m.value("portero_request_duration_seconds_sum") >= 0.25


def test_connection_gauges_and_accepted(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _ = start(make_portero, [a, b])
    # make_portero's readiness probe connected once: wait until that is counted
    assert wait_for(lambda: adm.metrics().value("portero_connections_accepted_total") >= 1,
                    timeout=10)
    before = adm.stable_value("portero_connections_accepted_total")
    conns = []
    try:
        for i in range(3):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.request("GET", "/app/c?i=%d" % i)
            r = c.getresponse()
            data = r.read()
            assert r.status == 200, (r.status, r.getheaders(), data)
            conns.append(c)
        m = adm.settled_metrics("portero_connections_accepted_total", before + 3)
        assert m.value("portero_connections_accepted_total") - before == 3, m.text
        # three idle keep-alive clients; one idle pooled connection per server
        assert wait_for(lambda: adm.metrics().value("portero_client_connections",
                                                    state="idle") == 3, timeout=10), \
            adm.metrics().select("portero_client_connections")
        m = adm.metrics()
        assert m.value("portero_client_connections", state="active") == 0
        assert m.value("portero_upstream_connections", state="idle") == 2, \
            m.select("portero_upstream_connections")
        assert m.value("portero_upstream_connections", state="active") == 0
    finally:
        for c in conns:
            c.close()
    assert wait_for(lambda: adm.metrics().value("portero_client_connections") == 0,
                    timeout=10), adm.metrics().select("portero_client_connections")


def test_bytes_in_and_out(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _ = start(make_portero, [a])
    m0 = adm.metrics()
    assert get(port, "/app/post", method="POST", body=b"y" * 10000)[0] == 200
    m1 = adm.settled_metrics("portero_requests_total", 1)
    got = m1.value("portero_bytes_received_total") - m0.value("portero_bytes_received_total")
    assert 10000 <= got < 20000, got
    status, body = get(port, "/app/big?size=50000")
    assert status == 200 and len(body) == 50000
    m2 = adm.settled_metrics("portero_requests_total", 2)
    sent = m2.value("portero_bytes_sent_total") - m1.value("portero_bytes_sent_total")
    assert 50000 <= sent < 90000, sent


def test_retry_counter(make_portero, backend_factory):
    good = backend_factory("good")
    dead = "127.0.0.1:%d" % free_port()
    port, adm, _ = start(make_portero, [dead, good],
                         retries={"attempts": 2, "budget": 100, "budget_min": 100})
    for i in range(10):
        assert get(port, "/app/r?i=%d" % i)[0] == 200
    m = adm.settled_metrics("portero_requests_total", 10)
    r = m.value("portero_retries_total")
    assert 1 <= r <= 10, m.text
    # retries are not extra client requests
    assert m.value("portero_requests_total", route="app") == 10
    assert m.value("portero_server_requests_total", server=good.address, class_="2xx") == 10
    assert m.value("portero_retry_budget_exhausted_total") == 0


def test_reload_counters(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, p = start(make_portero, [a])
    m0 = adm.metrics()
    ok0 = m0.value("portero_config_reloads_total", result="ok")
    bad0 = m0.value("portero_config_reloads_total", result="failed")
    good = p.config_path.read_text()

    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: adm.metrics().value("portero_config_reloads_total",
                                                result="ok") == ok0 + 1, timeout=15)
    assert adm.post("/reload").status == 200
    p.config_path.write_text(good + "nonsense: {\n")
    assert adm.post("/reload").status == 422
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: adm.metrics().value("portero_config_reloads_total",
                                                result="failed") == bad0 + 2, timeout=15)
    m = adm.metrics()
    assert m.value("portero_config_reloads_total", result="ok") == ok0 + 2, m.text
    st = adm.config_status()
    assert st["reloads_failed"] == bad0 + 2
    assert get(port, "/ok")[0] == 200


def test_health_metrics_move(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _ = start(make_portero, [a], health_check=fast_checks(path="/"))
    assert wait_for(lambda: adm.metrics().value("portero_health_checks_total") >= 2, timeout=10)
    m1 = adm.metrics().value("portero_health_checks_total")
    assert wait_for(lambda: adm.metrics().value("portero_health_checks_total") >= m1 + 2,
                    timeout=10)
    m = adm.metrics()
    assert m.value("portero_server_up", upstream="app", server=a.address) == 1, m.text
    # health checks are not client requests
    assert m.value("portero_requests_total") == 0
