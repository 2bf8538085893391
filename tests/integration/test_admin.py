"""Admin API (issue 3, item 5).

Contract (JSON in and out, on admin.address): GET /live, GET /ready (no token needed);
with `admin.token` every other endpoint needs `Authorization: Bearer TOKEN` (else 401).
GET /upstreams, GET /upstreams/NAME, POST /upstreams/NAME/servers, DELETE / PATCH
/upstreams/NAME/servers/ADDR, POST .../ADDR/drain and /undrain, GET /config, PUT /config
(422 with "FILE:LINE:COL: message" errors), POST /reload, POST /config/persist,
GET /config/status {"unsaved", "reloads_ok", "reloads_failed"}, GET /metrics.
Changes apply through the snapshot mechanism; an API change is lost on reload unless persisted.
"""

import collections
import json
import re
import subprocess


from admin_client import build_config, get, launch, listening_ports, to_yaml, upstream
from conftest import PORTERO_BIN, RawConn, free_port, wait_for

TOKEN = "s3cret-token"
POS = re.compile(r"^.+:\d+:\d+: \S.*$")


def start(make_portero, servers, token=None, routes=None, **up):
    port, ap = free_port(), free_port()
    cfg = build_config(port, {"app": upstream(servers, **up)}, admin_port=ap, token=token,
                       routes=routes)
    p, adm = launch(make_portero, cfg)
    return port, adm, p, cfg


def names(port, n, path="/a"):
    out = []
    for i in range(n):
        status, body = get(port, "%s?i=%d" % (path, i))
        assert status == 200, (status, body)
        out.append(body["backend"])
    return out


def one_upstream(body, name):
    """GET /upstreams/NAME may answer the upstream object itself or wrap it."""
    if isinstance(body, dict) and body.get("name") == name:
        return body
    if isinstance(body, dict) and isinstance(body.get("upstream"), dict):
        return body["upstream"]
    if isinstance(body, dict) and isinstance(body.get("upstreams"), list):
        return [u for u in body["upstreams"] if u.get("name") == name][0]
    raise AssertionError("unexpected /upstreams/%s answer: %r" % (name, body))


# ---------------------------------------------------------------------------------------------
# Probes and auth

def test_live_and_ready(make_portero, backend_factory):
    b = backend_factory("b")
    _, adm, _, _ = start(make_portero, [b], token=TOKEN)
    r = adm.get("/live", token=None)
    assert r.status == 200 and r.json() == {"status": "live"}
    assert "json" in r.headers.get("content-type", "")
    r = adm.get("/ready", token=None)
    assert r.status == 200, r


def test_not_ready_while_draining(make_portero, backend_factory):
    import signal
    import threading
    b = backend_factory("b")
    port, adm, p, _ = start(make_portero, [b])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(port, "/slow?delay=3")),
                         daemon=True)
    t.start()
    assert wait_for(lambda: b.active == 1, timeout=10)
    p.proc.send_signal(signal.SIGTERM)

    def not_ready():
        try:
            return adm.get("/ready").status == 503
        except OSError:
            return True          # the admin listener closed: not ready either
    assert wait_for(not_ready, timeout=5)
    t.join(30)
    assert result["r"][0] == 200      # the in-flight request still finished


def test_token_required_everywhere_else(make_portero, backend_factory):
    b = backend_factory("b")
    _, adm, _, _ = start(make_portero, [b], token=TOKEN)
    for path in ("/upstreams", "/upstreams/app", "/config", "/config/status", "/metrics"):
        assert adm.get(path, token=None).status == 401, path
        assert adm.get(path, token="wrong").status == 401, path
        assert adm.get(path, token=TOKEN).status == 200, path
    # a wrong scheme is no better than no header
    r = adm.get("/upstreams", token=None, headers={"Authorization": "Basic " + TOKEN})
    assert r.status == 401
    # writes are refused too, and change nothing
    r = adm.post("/upstreams/app/servers", {"address": "127.0.0.1:1", "weight": 1}, token=None)
    assert r.status == 401
    assert list(adm.servers("app")) == [b.address]
    assert adm.post("/reload", token="nope").status == 401


def test_no_token_configured_means_open(make_portero, backend_factory):
    b = backend_factory("b")
    _, adm, _, _ = start(make_portero, [b])
    assert adm.get("/upstreams", token=None).status == 200


def test_unknown_path_404_and_wrong_method_405(make_portero, backend_factory):
    b = backend_factory("b")
    _, adm, _, _ = start(make_portero, [b])
    assert adm.get("/nope").status == 404
    assert adm.get("/upstreams/nope").status == 404
    assert adm.delete("/upstreams/app/servers/127.0.0.1:1").status == 404
    assert adm.delete("/live").status == 405
    assert adm.put("/upstreams", {}).status == 405
    assert adm.get("/reload").status == 405
    assert adm.delete("/config").status == 405


# ---------------------------------------------------------------------------------------------
# Reading state

def test_upstreams_listing_shape_and_counters(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [(a, 2), b])
    assert names(port, 6).count("a") == 4
    # counters are bumped just after each response is written: let them settle
    assert wait_for(lambda: sum(s["requests_total"] for s in adm.upstreams()[0]["servers"]) >= 6,
                    timeout=10)
    ups = adm.upstreams()
    assert [u["name"] for u in ups] == ["app"]
    u = ups[0]
    assert u["balance"] == "round_robin"
    servers = {s["address"]: s for s in u["servers"]}
    assert list(servers) == [a.address, b.address]
    for s in servers.values():
        for key in ("address", "weight", "drain", "health", "active_requests",
                    "pooled_connections", "requests_total", "request_rate",
                    "latency_ms_avg", "ejections"):
            assert key in s, (key, s)
        assert s["health"] == "up"
        assert s["drain"] is False
        assert s["active_requests"] == 0
        assert s["ejections"] == 0
        assert s["latency_ms_avg"] >= 0
    assert servers[a.address]["weight"] == 2 and servers[b.address]["weight"] == 1
    assert servers[a.address]["requests_total"] == 4
    assert servers[b.address]["requests_total"] == 2
    # keep-alive: each server has at least one idle pooled connection
    assert servers[a.address]["pooled_connections"] >= 1
    one = one_upstream(adm.ok_json("GET", "/upstreams/app"), "app")
    assert [s["address"] for s in one["servers"]] == [a.address, b.address]


# ---------------------------------------------------------------------------------------------
# Server changes

def test_add_server_gets_traffic(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a])
    assert set(names(port, 4)) == {"a"}
    r = adm.post("/upstreams/app/servers", {"address": b.address, "weight": 1})
    assert r.status == 200, r
    body = r.json()
    assert body["ok"] is True and body["persisted"] is False
    assert "changed" in body
    assert list(adm.servers("app")) == [a.address, b.address]
    assert wait_for(lambda: "b" in names(port, 4), timeout=10)
    assert collections.Counter(names(port, 10)) == {"a": 5, "b": 5}
    # duplicate -> 409, unknown upstream -> 404, nothing changes
    assert adm.post("/upstreams/app/servers", {"address": b.address}).status == 409
    assert adm.post("/upstreams/nope/servers", {"address": "127.0.0.1:9"}).status == 404
    assert list(adm.servers("app")) == [a.address, b.address]


def test_add_server_bad_body_is_rejected(make_portero, backend_factory):
    a = backend_factory("a")
    _, adm, _, _ = start(make_portero, [a])
    for body in ("{not json", {"weight": 1}, {"address": "not an address"}):
        r = adm.post("/upstreams/app/servers", body)
        assert r.status in (400, 422), (body, r)
    assert list(adm.servers("app")) == [a.address]


def test_remove_server_gets_no_more_traffic(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a, b])
    assert set(names(port, 4)) == {"a", "b"}
    r = adm.delete("/upstreams/app/servers/%s" % b.address)
    assert r.status == 200, r
    assert r.json()["ok"] is True
    assert list(adm.servers("app")) == [a.address]
    b.clear()
    assert names(port, 10) == ["a"] * 10
    assert b.request_count() == 0
    # its idle pooled connections are closed
    assert wait_for(lambda: b.open_connections == 0, timeout=10), b.open_connections
    assert adm.delete("/upstreams/app/servers/%s" % b.address).status == 404


def test_patch_weight_changes_distribution(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a, b])
    r = adm.patch("/upstreams/app/servers/%s" % a.address, {"weight": 3})
    assert r.status == 200, r
    assert adm.server("app", a)["weight"] == 3
    assert collections.Counter(names(port, 40)) == {"a": 30, "b": 10}


def test_patch_drain_and_drain_endpoints(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a, b])
    assert set(names(port, 4)) == {"a", "b"}
    assert b.open_connections >= 1           # a pooled connection to b exists

    r = adm.patch("/upstreams/app/servers/%s" % b.address, {"drain": True})
    assert r.status == 200, r
    s = adm.server("app", b)
    assert s["drain"] is True and s["health"] == "draining", s
    b.clear()
    assert names(port, 10) == ["a"] * 10
    assert b.request_count() == 0
    # pooled connections to a draining server close
    assert wait_for(lambda: b.open_connections == 0, timeout=10), b.open_connections

    r = adm.post("/upstreams/app/servers/%s/undrain" % b.address)
    assert r.status == 200, r
    s = adm.server("app", b)
    assert s["drain"] is False and s["health"] == "up", s
    assert collections.Counter(names(port, 10)) == {"a": 5, "b": 5}

    r = adm.post("/upstreams/app/servers/%s/drain" % b.address)
    assert r.status == 200, r
    assert adm.server("app", b)["drain"] is True
    b.clear()
    assert names(port, 6) == ["a"] * 6
    assert b.request_count() == 0
    assert adm.post("/upstreams/app/servers/127.0.0.1:1/drain").status == 404


def test_drain_lets_in_flight_request_finish(make_portero, backend_factory):
    import threading
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a, b])
    results = []

    def slow(i):
        results.append(get(port, "/slow?delay=2&i=%d" % i))
    # two concurrent requests: round robin puts one on each server
    threads = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    assert wait_for(lambda: b.active == 1 and a.active == 1, timeout=10)
    assert adm.post("/upstreams/app/servers/%s/drain" % b.address).status == 200
    for t in threads:
        t.join(30)
    assert sorted(r[1]["backend"] for r in results) == ["a", "b"]
    assert all(r[0] == 200 for r in results), results
    assert adm.server("app", b)["health"] == "draining"


def test_admin_change_keeps_client_connection(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, _ = start(make_portero, [a])
    with RawConn(port) as c:
        c.request("GET", "/k1")
        assert c.read_response().status == 200
        assert adm.post("/upstreams/app/servers", {"address": b.address}).status == 200
        seen = set()
        for i in range(6):
            c.request("GET", "/k2?i=%d" % i)
            r = c.read_response()
            assert r.status == 200
            seen.add(r.json()["backend"])
        assert seen == {"a", "b"}


# ---------------------------------------------------------------------------------------------
# Whole configs

def test_get_config_round_trip(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _, cfg = start(make_portero, [(a, 2)])
    got = adm.ok_json("GET", "/config")
    assert [l["address"] for l in got["listeners"]] == ["127.0.0.1:%d" % port]
    assert [s["address"] for s in got["upstreams"]["app"]["servers"]] == [a.address]
    assert got["upstreams"]["app"]["servers"][0]["weight"] == 2
    assert got["admin"]["address"] == cfg["admin"]["address"]
    r = adm.put("/config", got)
    assert r.status == 200, r
    assert r.json()["ok"] is True
    assert adm.ok_json("GET", "/config") == got
    assert get(port, "/rt")[0] == 200


def test_put_config_valid_applies(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, _, cfg = start(make_portero, [a])
    new = json.loads(json.dumps(cfg))
    new["upstreams"]["app"]["servers"].append({"address": b.address})
    new["routes"].insert(0, {"name": "hello", "match": {"path": "/hello"},
                             "respond": {"status": 201, "body": "hi\n"}})
    with RawConn(port) as keep:
        keep.request("GET", "/before")
        assert keep.read_response().status == 200
        r = adm.put("/config", new)
        assert r.status == 200, r
        body = r.json()
        assert body["ok"] is True and "changed" in body
        status, data = get(port, "/hello")
        assert status == 201 and data == b"hi\n"
        assert set(names(port, 6)) == {"a", "b"}
        # the client connection opened before the change still works
        keep.request("GET", "/after")
        assert keep.read_response().status == 200
    st = adm.config_status()
    assert st["unsaved"] is True


def test_put_config_invalid_reports_positions_and_keeps_running(make_portero,
                                                                 backend_factory):
    a = backend_factory("a")
    port, adm, _, cfg = start(make_portero, [a])
    bad = json.loads(json.dumps(cfg))
    bad["upstreams"]["app"]["servers"][0]["weight"] = "heavy"
    bad["routes"].append({"match": {"path_prefix": "/x"}, "upstream": "missing"})
    bad["workers"] = "many"
    text = json.dumps(bad, indent=2)
    r = adm.put("/config", text)
    assert r.status == 422, r
    body = r.json()
    assert body["ok"] is False
    assert len(body["errors"]) >= 3, body          # every error at once
    for e in body["errors"]:
        assert POS.match(e), e
    # the line numbers point into the text we sent
    lines = text.split("\n")
    for e in body["errors"]:
        line = int(re.match(r"^.*?:(\d+):(\d+): ", e).group(1))
        assert 1 <= line <= len(lines), e
    assert any("heavy" in lines[int(re.match(r"^.*?:(\d+):", e).group(1)) - 1]
               for e in body["errors"]), body
    assert get(port, "/still")[0] == 200
    assert adm.ok_json("GET", "/config")["upstreams"]["app"]["servers"][0]["address"] \
        == a.address


def test_put_config_syntax_error(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, _, _ = start(make_portero, [a])
    r = adm.put("/config", '{"workers": 1,\n "listeners": [\n')
    assert r.status == 422, r
    errs = r.json()["errors"]
    assert errs and all(POS.match(e) for e in errs), errs
    assert get(port, "/still")[0] == 200


def test_api_change_lost_on_reload_unless_persisted(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, p, _ = start(make_portero, [a])
    st0 = adm.config_status()
    assert st0["unsaved"] is False
    assert adm.post("/upstreams/app/servers", {"address": b.address}).status == 200
    assert adm.config_status()["unsaved"] is True
    r = adm.post("/reload")
    assert r.status == 200, r
    assert r.json()["ok"] is True
    # the file did not have b: the API change is gone
    assert list(adm.servers("app")) == [a.address]
    st = adm.config_status()
    assert st["unsaved"] is False
    assert st["reloads_ok"] >= st0["reloads_ok"] + 1
    assert st["reloads_failed"] == st0["reloads_failed"]


def test_persist_writes_the_file(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port, adm, p, _ = start(make_portero, [a])
    assert adm.post("/upstreams/app/servers", {"address": b.address, "weight": 2}).status == 200
    assert adm.config_status()["unsaved"] is True
    r = adm.post("/config/persist")
    assert r.status == 200, r
    assert r.json()["ok"] is True
    assert adm.config_status()["unsaved"] is False
    text = p.config_path.read_text()
    assert b.address in text
    chk = subprocess.run([PORTERO_BIN, "-t", "-c", str(p.config_path)], capture_output=True,
                         timeout=30)
    assert chk.returncode == 0, chk.stderr
    # a reload now keeps the server
    assert adm.post("/reload").status == 200
    servers = adm.servers("app")
    assert list(servers) == [a.address, b.address]
    assert servers[b.address]["weight"] == 2
    assert collections.Counter(names(port, 9)) == {"a": 3, "b": 6}


def test_reload_endpoint_with_invalid_file(make_portero, backend_factory):
    a = backend_factory("a")
    port, adm, p, cfg = start(make_portero, [a])
    before = adm.config_status()
    good_text = p.config_path.read_text()
    p.config_path.write_text(good_text + "bogus_key: [\n")
    r = adm.post("/reload")
    assert r.status == 422, r
    body = r.json()
    assert body["ok"] is False
    assert body["errors"] and all(POS.match(e) for e in body["errors"]), body
    assert any(str(p.config_path) in e or p.config_path.name in e for e in body["errors"])
    assert get(port, "/still")[0] == 200
    after = adm.config_status()
    assert after["reloads_failed"] == before["reloads_failed"] + 1
    assert after["reloads_ok"] == before["reloads_ok"]


def test_config_status_shape(make_portero, backend_factory):
    a = backend_factory("a")
    _, adm, _, _ = start(make_portero, [a])
    st = adm.config_status()
    assert st["unsaved"] is False
    assert isinstance(st["reloads_ok"], int) and isinstance(st["reloads_failed"], int)
    assert st["reloads_failed"] == 0


def test_admin_off_opens_no_port(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = build_config(port, {"app": upstream([a])}, admin_port=None)
    p = make_portero(to_yaml(cfg), ports=[port])
    assert get(port, "/")[0] == 200
    # admin "off": the process listens on the proxy port and nothing else
    assert listening_ports(p.pid) == {port}
