"""Retries (issue 3, item 3).

Contract: `retries: { attempts: 2, per_try_timeout: 0, statuses: [...], budget: 20,
budget_min: 3, backoff: 25ms, backoff_max: 250ms }`. On connect failure, reset or timeout
before any response byte reached the client, the request is tried again on a DIFFERENT server:
any method when nothing of the request was sent, idempotent methods only otherwise. Idempotent
requests are also retried on the listed statuses. Bounded by `attempts` (tries in all),
`per_try_timeout`, and the budget (retries <= budget % of requests per worker over 10 s, plus
budget_min per window).
All tests use one worker, no active checks and passive ejection off (so retries alone keep
the client whole).
"""

import hashlib
import time

import pytest

from admin_client import NO_OUTLIER, build_config, get, launch, upstream
from backends import ControlledBackend
from conftest import free_port

GENEROUS = {"budget": 100, "budget_min": 100, "backoff": "1ms", "backoff_max": "5ms"}


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


def start(make_portero, servers, retries, admin=False, **up):
    port = free_port()
    ap = free_port() if admin else None
    cfg = build_config(port, {"app": upstream(servers, outlier=NO_OUTLIER, retries=retries,
                                              **up)}, admin_port=ap)
    _, adm = launch(make_portero, cfg)
    return port, adm


def refused():
    return "127.0.0.1:%d" % free_port()


def test_connect_refused_is_retried_on_the_other_server(make_portero, backend_factory):
    good = backend_factory("good")
    port, adm = start(make_portero, [refused(), good], dict(GENEROUS, attempts=2), admin=True)
    for i in range(20):
        status, body = get(port, "/r?i=%d" % i)
        assert status == 200, body
        assert body["backend"] == "good"
    assert good.request_count() == 20
    # about half of the first picks were the refused server
    assert adm.metrics().value("portero_retries_total") >= 5


def test_post_to_refused_server_is_retried(make_portero, backend_factory):
    # Nothing was sent to the refused server, so even a POST is safe to try elsewhere.
    good = backend_factory("good")
    port, _ = start(make_portero, [refused(), good], dict(GENEROUS, attempts=2))
    for i in range(10):
        payload = ("payload %d " % i).encode() * 100
        status, body = get(port, "/p?i=%d" % i, method="POST", body=payload,
                           headers={"Content-Type": "application/octet-stream"})
        assert status == 200, body
        assert body["method"] == "POST"
        assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert good.request_count() == 10


def test_attempts_1_means_no_retry(make_portero, backend_factory):
    good = backend_factory("good")
    port, _ = start(make_portero, [refused(), good], dict(GENEROUS, attempts=1))
    statuses = [get(port, "/n?i=%d" % i)[0] for i in range(10)]
    assert statuses.count(502) >= 3, statuses       # round robin: half hit the refused one
    assert set(statuses) <= {200, 502}, statuses
    assert good.request_count() == statuses.count(200)


def test_retry_on_listed_status_for_get(make_portero, cbackend):
    bad = cbackend("bad", status=503)
    good = cbackend("good")
    port, _ = start(make_portero, [bad, good], dict(GENEROUS, attempts=2, statuses=[503]))
    for i in range(20):
        status, body = get(port, "/s?i=%d" % i)
        assert status == 200, body
        assert body["backend"] == "good"
    # retries, not ejection, saved these: the bad server was asked about half the time
    assert bad.request_count() >= 5
    assert good.request_count() == 20


def test_status_not_listed_is_passed_through(make_portero, cbackend):
    bad = cbackend("bad", status=500)
    good = cbackend("good")
    port, _ = start(make_portero, [bad, good], dict(GENEROUS, attempts=2, statuses=[503]))
    statuses = [get(port, "/s?i=%d" % i)[0] for i in range(10)]
    assert statuses.count(500) >= 3, statuses
    assert set(statuses) <= {200, 500}


def test_post_is_not_retried_on_status(make_portero, cbackend):
    # The POST reached the server and got an answer: not idempotent, so the 503 stands.
    bad = cbackend("bad", status=503)
    good = cbackend("good")
    port, _ = start(make_portero, [bad, good], dict(GENEROUS, attempts=2, statuses=[503]))
    statuses = []
    for i in range(10):
        statuses.append(get(port, "/p?i=%d" % i, method="POST", body=b"x" * 10)[0])
    assert statuses.count(503) >= 3, statuses
    assert set(statuses) <= {200, 503}
    posts_to_bad = sum(1 for r in bad.requests if r["method"] == "POST")
    assert posts_to_bad == statuses.count(503)
    assert good.request_count() == statuses.count(200)


def test_reset_after_request_sent_retries_get_but_not_post(make_portero, cbackend):
    # `dropper` reads the whole request and closes without a byte of response.
    dropper = cbackend("dropper", handler=lambda backend, conn, req: False)
    good = cbackend("good")
    port, _ = start(make_portero, [dropper, good], dict(GENEROUS, attempts=2))
    for i in range(10):
        status, body = get(port, "/g?i=%d" % i)
        assert status == 200, body
    assert dropper.request_count() >= 3
    dropper.clear()
    post_statuses = [get(port, "/p?i=%d" % i, method="POST", body=b"abc")[0]
                     for i in range(10)]
    assert post_statuses.count(502) >= 3, post_statuses
    assert set(post_statuses) <= {200, 502}
    assert dropper.request_count() == post_statuses.count(502)


def test_retry_budget_bounds_load_when_everything_fails(make_portero, cbackend):
    servers = [cbackend("s%d" % i, status=503) for i in range(3)]
    port, adm = start(make_portero, servers,
                      {"attempts": 3, "statuses": [503], "budget": 20, "budget_min": 0,
                       "backoff": "1ms", "backoff_max": "5ms"}, admin=True)
    n = 100
    for i in range(n):
        status, _ = get(port, "/b?i=%d" % i)
        assert status == 503
    seen = sum(s.request_count() for s in servers)
    # At most (1 + 20 %) x requests, plus a little slack for window edges.
    assert seen <= 1.2 * n + 3, seen
    # ...and retries did happen (the budget is not zero).
    assert seen > n, seen
    m = adm.metrics()
    assert m.value("portero_retries_total") == seen - n, m.text
    assert m.value("portero_retry_budget_exhausted_total") >= 1, m.text


def test_budget_min_allows_retries_at_low_traffic(make_portero, backend_factory):
    # budget 0 %, but budget_min 5 per window: the first refused tries are still retried.
    good = backend_factory("good")
    port, _ = start(make_portero, [refused(), good],
                    {"attempts": 2, "budget": 0, "budget_min": 5, "backoff": "1ms",
                     "backoff_max": "5ms"})
    statuses = [get(port, "/m?i=%d" % i)[0] for i in range(30)]
    # about 15 picks of the refused server; 5 retried, the rest fail
    assert 3 <= statuses.count(502) <= 15, statuses
    assert statuses.count(200) >= 15 + 3, statuses


def test_per_try_timeout_moves_on_to_another_server(make_portero, cbackend):
    slow = cbackend("slow", delay=6)
    fast = cbackend("fast")
    port, _ = start(make_portero, [slow, fast],
                    dict(GENEROUS, attempts=2, per_try_timeout="500ms"),
                    timeouts={"connect": "2s", "response": "30s"})
    for i in range(6):
        t0 = time.monotonic()
        status, body = get(port, "/t?i=%d" % i)
        elapsed = time.monotonic() - t0
        assert status == 200, body
        assert body["backend"] == "fast"
        assert elapsed < 4.0, elapsed        # not the slow server's 6 s
    assert slow.request_count() >= 2


def test_per_try_timeout_without_other_server_gives_504(make_portero, cbackend):
    slow = cbackend("slow", delay=5)
    port, _ = start(make_portero, [slow], dict(GENEROUS, attempts=2, per_try_timeout="300ms"),
                    timeouts={"response": "30s"})
    t0 = time.monotonic()
    status, _ = get(port, "/t")
    assert status == 504
    assert time.monotonic() - t0 < 4.0
