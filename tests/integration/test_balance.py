"""Load balancing (issue 2, item 8).

Contract: servers by IP:port or hostname (resolved at load), `weight` (default 1).
`balance`: `round_robin` (smooth weighted), `least_conn`, `random_two` (power of two choices
on active requests), `hash` (consistent hashing on `client_ip`, `uri`, `header:NAME` or
`cookie:NAME`; adding a server remaps only about 1/N of the keys).
All ordering tests use `workers: 1`, so a single balancer state sees every request.
"""

import collections
import http.client
import json
import threading
import time

import pytest
import requests

from backends import Backend
from conftest import free_port, proxy_config, url


def backend_name(port, path="/", headers=None, source=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=source)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        assert r.status == 200, (r.status, data)
        return json.loads(data)["backend"]
    finally:
        c.close()


def test_round_robin_alternates(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    make_portero(proxy_config(port, [a, b], balance="round_robin"), ports=[port])
    s = requests.Session()
    seq = [s.get(url(port, "/rr"), timeout=15).json()["backend"] for _ in range(20)]
    assert collections.Counter(seq) == {"a": 10, "b": 10}, seq
    assert all(x != y for x, y in zip(seq, seq[1:])), seq


def test_round_robin_is_default(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    make_portero(proxy_config(port, [a, b]), ports=[port])
    s = requests.Session()
    seq = [s.get(url(port, "/"), timeout=15).json()["backend"] for _ in range(10)]
    assert collections.Counter(seq) == {"a": 5, "b": 5}, seq


def test_round_robin_weights_3_to_1(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    make_portero(proxy_config(port, [(a, 3), (b, 1)], balance="round_robin"), ports=[port])
    s = requests.Session()
    seq = [s.get(url(port, "/w"), timeout=15).json()["backend"] for _ in range(40)]
    assert collections.Counter(seq) == {"a": 30, "b": 10}, seq
    # smooth: every window of 4 consecutive picks holds exactly one "b"
    for i in range(0, 40, 4):
        assert seq[i:i + 4].count("b") == 1, seq
    # smooth weighted round robin never sends more than 3 in a row to "a"
    assert "a" * 4 not in "".join(seq)


def _concurrent_picks(port, n, stagger):
    """Starts N requests, one every STAGGER seconds, each on its own connection."""
    results = [None] * n
    errors = []

    def one(i):
        try:
            results[i] = backend_name(port, "/lc?i=%d" % i)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = []
    for i in range(n):
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(stagger)
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


@pytest.mark.parametrize("balance", ["least_conn", "random_two"])
def test_busy_backend_is_avoided(make_portero, backend_factory, balance):
    """A backend that holds every request for 3 s gets few of 12 staggered requests while a fast
    one is available (round robin would give it 6). With two servers random_two compares both,
    so it behaves like least_conn."""
    slow = backend_factory("slow", delay=3.0)
    fast = backend_factory("fast")
    port = free_port()
    make_portero(proxy_config(port, [slow, fast], balance=balance), ports=[port])
    picks = _concurrent_picks(port, 12, 0.1)
    c = collections.Counter(picks)
    assert c["slow"] + c["fast"] == 12
    assert c["slow"] <= 3, picks


def test_least_conn_spreads_concurrent_requests(make_portero, backend_factory):
    """With equally slow backends, concurrent requests spread evenly (each has <= 1 more)."""
    bs = [backend_factory("s%d" % i, delay=2.5) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="least_conn"), ports=[port])
    picks = _concurrent_picks(port, 6, 0.1)
    c = collections.Counter(picks)
    assert sorted(c.values()) == [2, 2, 2], picks


def test_random_two_distribution(make_portero, backend_factory):
    bs = [backend_factory("r%d" % i) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="random_two"), ports=[port])
    s = requests.Session()
    seq = [s.get(url(port, "/r"), timeout=15).json()["backend"] for _ in range(150)]
    c = collections.Counter(seq)
    # expected 50 each; binomial(150, 1/3) falls under 25 with negligible probability
    for b in bs:
        assert c[b.name] >= 25, c


def test_hash_uri_consistent(make_portero, backend_factory):
    bs = [backend_factory("h%d" % i) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="hash", hash_key="uri"), ports=[port])
    s = requests.Session()
    first = {}
    for rnd in range(3):
        for k in range(30):
            path = "/obj/%d" % k
            name = s.get(url(port, path), timeout=15).json()["backend"]
            if rnd == 0:
                first[path] = name
            else:
                assert first[path] == name, (path, first[path], name)
    assert len(set(first.values())) >= 2, first


def test_hash_header_consistent(make_portero, backend_factory):
    bs = [backend_factory("h%d" % i) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="hash", hash_key="header:X-User"), ports=[port])
    s = requests.Session()
    first = {}
    for rnd in range(2):
        for k in range(30):
            user = "user-%d" % k
            # the URI varies: only the header decides
            name = s.get(url(port, "/p/%d/%d" % (rnd, k)), headers={"X-User": user},
                         timeout=15).json()["backend"]
            first.setdefault(user, name)
            assert first[user] == name, (user, first[user], name)
    assert len(set(first.values())) >= 2, first


def test_hash_cookie_consistent(make_portero, backend_factory):
    bs = [backend_factory("h%d" % i) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="hash", hash_key="cookie:session"),
                 ports=[port])
    first = {}
    for rnd in range(2):
        for k in range(30):
            sid = "sess%03d" % k
            # other cookies around it vary between rounds and must not matter
            cookie = ("a=%d; session=%s; z=%d" % (rnd, sid, rnd * 7)) if rnd else \
                "session=%s" % sid
            name = requests.get(url(port, "/c/%d" % rnd), headers={"Cookie": cookie},
                                timeout=15).json()["backend"]
            first.setdefault(sid, name)
            assert first[sid] == name, (sid, cookie, first[sid], name)
    assert len(set(first.values())) >= 2, first


def test_hash_client_ip_consistent(make_portero, backend_factory):
    """Clients from 127.0.0.1 .. 127.0.0.24 (Linux routes all of 127/8 to lo): each source
    address always reaches the same backend, whatever the URI; the addresses spread."""
    bs = [backend_factory("h%d" % i) for i in range(3)]
    port = free_port()
    make_portero(proxy_config(port, bs, balance="hash", hash_key="client_ip"), ports=[port])
    first = {}
    for rnd in range(2):
        for k in range(1, 25):
            ip = "127.0.0.%d" % k
            name = backend_name(port, "/ip/%d/%d" % (rnd, k), source=(ip, 0))
            first.setdefault(ip, name)
            assert first[ip] == name, (ip, first[ip], name)
    assert len(set(first.values())) >= 2, first
    assert all(r["hmap"]["x-forwarded-for"] in first for b in bs for r in b.requests)


def test_hash_adding_a_server_remaps_few_keys(make_portero, backend_factory):
    """Consistent hashing: with 3 -> 4 servers about 1/4 of the keys move, and (nearly) all
    that move go to the new server."""
    bs = [backend_factory("h%d" % i) for i in range(4)]

    def mapping(servers):
        port = free_port()
        p = make_portero(proxy_config(port, servers, balance="hash", hash_key="uri"),
                         ports=[port])
        s = requests.Session()
        m = {k: s.get(url(port, "/key/%d" % k), timeout=15).json()["backend"]
             for k in range(200)}
        s.close()
        assert p.stop() == 0
        return m

    before = mapping(bs[:3])
    after = mapping(bs)
    moved = [k for k in before if before[k] != after[k]]
    to_new = [k for k in moved if after[k] == "h3"]
    assert 0.10 * 200 <= len(moved) <= 0.40 * 200, len(moved)
    assert len(moved) - len(to_new) <= 0.05 * 200, (len(moved), len(to_new))


def test_hostname_server_address(make_portero, backend_factory):
    """A server given as `localhost:PORT` is resolved at load. The backend listens on both
    127.0.0.1 and (when available) ::1 with the same port, so either resolution works."""
    v4 = backend_factory("v4")
    try:
        v6 = Backend("v6", host="::1", port=v4.port)
    except OSError:
        v6 = None
    try:
        port = free_port()
        make_portero(proxy_config(port, ["localhost:%d" % v4.port]), ports=[port])
        s = requests.Session()
        names = {s.get(url(port, "/"), timeout=15).json()["backend"] for _ in range(3)}
        assert names <= {"v4", "v6"} and names
    finally:
        if v6:
            v6.stop()

