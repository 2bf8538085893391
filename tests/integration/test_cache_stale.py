"""Stale serving (issue 5, item 5): RFC 5861 stale-while-revalidate and stale-if-error, from the
response's Cache-Control or the route's `cache: { stale_while_revalidate, stale_if_error }`
defaults. A stale response served says so in Cache-Status (e.g. "portero; hit; ttl=-3;
detail=stale-if-error").
"""

import time

from conftest import free_port, proxy_config, wait_for
from origin import Origin, cache_status, fetch, is_hit, route, zones_yaml
from test_cache import cache_env  # noqa: F401  (fixture)


def says_stale(r):
    raw = (r.header("Cache-Status") or "").lower()
    ttl = cache_status(r)[1].get("ttl")
    return "stale" in raw or (ttl not in (None, True) and int(ttl) < 0)


def versioned(req):
    return ("version %d\n" % req.n).encode()


def test_stale_while_revalidate(cache_env):
    """Version 1 is stored; once stale, it is served at once while one background refresh
    (slow: 2 s) runs; afterwards version 2 is served fresh. /swr has the directive in its
    response, /d/swr gets it from the route's default."""
    e = cache_env(routes=route("/d/", "cache: { zone: main, stale_while_revalidate: 30s }")
                  + route("/", "cache: { zone: main }"))
    paths = {"/swr": "max-age=1, stale-while-revalidate=30", "/d/swr": "max-age=1"}
    for path, cc in paths.items():
        e.origin.script(path, headers={"Cache-Control": cc}, body=versioned)
        assert e.get(path).body == b"version 1\n"
    time.sleep(2.2)
    served = {}
    for path in paths:
        # the refresh is slow (2 s, which counts in its age: RFC 9111 4.2.3) and long-lived
        e.origin.script(path, headers={"Cache-Control": "max-age=600"}, body=versioned,
                        head_delay=2.0)
        r = e.get(path)
        served[path] = time.monotonic()
        assert r.status == 200 and r.body == b"version 1\n", (path, r)
        assert says_stale(r), (path, r.headers)
        # more requests during the refresh: still the stale copy, no second refresh
        for _ in range(3):
            assert e.get(path).body == b"version 1\n"
    for path in paths:
        assert wait_for(lambda: e.origin.count(path) >= 2, timeout=10), path
        refresh = e.origin.reqs(path)[1]
        assert wait_for(lambda: refresh.t_done is not None, timeout=15), path
        assert served[path] < refresh.t_done, "%s: the stale answer waited for the refresh" % path
    time.sleep(0.3)
    for path in paths:
        r = e.get(path)
        assert r.body == b"version 2\n" and is_hit(r) and not says_stale(r), (path, r)
        assert e.origin.count(path) == 2, path


def test_no_stale_while_revalidate_waits_for_origin(cache_env):
    e = cache_env()
    e.origin.script("/noswr", headers={"Cache-Control": "max-age=1"}, body=versioned)
    e.get("/noswr")
    time.sleep(2.2)
    r = e.get("/noswr")
    assert r.body == b"version 2\n" and e.origin.count("/noswr") == 2


def test_stale_if_error_origin_down(cache_env):
    """Origin stopped: within stale-if-error (from the response or the route) the stored copy is
    served and says stale; past it, without it, or with must-revalidate: an error."""
    o = Origin()
    try:
        e = cache_env(origin=o, routes=route("/dflt/", "cache: { zone: main, stale_if_error: 60s }")
                      + route("/", "cache: { zone: main }"))
        cases = {
            "/sie/long": ("max-age=1, stale-if-error=60", True),
            "/sie/short": ("max-age=1, stale-if-error=1", False),
            "/dflt/x": ("max-age=1", True),
            "/sie/none": ("max-age=1", False),
            "/sie/mr": ("max-age=1, stale-if-error=60, must-revalidate", False),
        }
        for path, (cc, _) in cases.items():
            o.script(path, headers={"Cache-Control": cc}, body="cached %s\n" % path)
            assert e.get(path).status == 200
        o.stop()
        time.sleep(3.5)
        got, want = {}, {}
        for path, (_, stale_ok) in cases.items():
            r = e.get(path)
            if r.status == 200:
                got[path] = ("stale" if says_stale(r) else "not marked stale",
                             r.body == ("cached %s\n" % path).encode())
            else:
                got[path] = ("error" if r.status >= 500 else r.status, True)
            want[path] = ("stale", True) if stale_ok else ("error", True)
        assert got == want
        m = e.admin().settled_metrics("portero_cache_stale_total", 2)
        assert m.value("portero_cache_stale_total", zone="main") == 2
    finally:
        o.stop()


def test_stale_if_error_on_5xx_and_dropped_connection(cache_env):
    e = cache_env()
    cc = {"Cache-Control": "max-age=1, stale-if-error=60"}
    paths = ("/e500", "/e503", "/drop")
    for p in paths:
        e.origin.script(p, headers=cc, body="good %s\n" % p)
        assert e.get(p).status == 200
    time.sleep(2.2)
    e.origin.script("/e500", status=500, body="broken\n")
    e.origin.script("/e503", status=503, body="busy\n")
    e.origin.script("/drop", drop=True)
    results = {}
    for p in ("/e500", "/e503", "/drop"):
        r = e.get(p)
        results[p] = (r.status, r.body == ("good %s\n" % p).encode(), says_stale(r))
    assert results == {p: (200, True, True) for p in ("/e500", "/e503", "/drop")}
    for p in ("/e500", "/e503", "/drop"):
        assert e.origin.count(p) >= 2, p      # the origin was asked


def test_stale_if_error_on_timeout(make_portero):
    o = Origin()
    try:
        port, admin = free_port(), free_port()
        make_portero(proxy_config(port, [o.address], timeouts="{ response: 1s }",
                                  routes=route("/", "cache: { zone: main }"),
                                  extra=zones_yaml({"main": {"memory": "16MiB"}})
                                  + '\nadmin: { address: "127.0.0.1:%d" }' % admin),
                     ports=[port])
        o.script("/to", headers={"Cache-Control": "max-age=1, stale-if-error=60"}, body="kept\n")
        assert fetch(port, "/to").status == 200
        time.sleep(2.2)
        o.script("/to", headers={"Cache-Control": "max-age=1"}, body="late\n", head_delay=4)
        r = fetch(port, "/to")       # answered when the 1 s response timeout fires
        assert r.status == 200 and r.body == b"kept\n" and says_stale(r), r
    finally:
        o.stop()
