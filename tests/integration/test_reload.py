"""Hot reload on SIGHUP (issue 3, item 6).

Contract: SIGHUP re-reads the config file. Invalid: the running config is untouched and the
error log (stderr) has every problem as `FILE:LINE:COL: message`. Valid: published, and the
log says "configuration generation N published: routes +a -b, upstreams +c -d, servers +e -f,
listeners +g -h". Listeners that stay keep their sockets (and their client connections); new
ones open; removed ones close. Idle upstream connections to servers that stay are kept.
"""

import re
import signal
import threading
import time

from admin_client import build_config, get, to_yaml, upstream
from conftest import RawConn, free_port, port_open, wait_for

PUBLISHED = re.compile(r"configuration generation (\d+) published: routes \+(\d+) -(\d+), "
                       r"upstreams \+(\d+) -(\d+), servers \+(\d+) -(\d+), "
                       r"listeners \+(\d+) -(\d+)")


def published(p):
    return [tuple(int(x) for x in m.groups()) for m in PUBLISHED.finditer(p.stderr_text())]


def error_lines(p):
    path = str(p.config_path)
    return [l for l in p.stderr_text().splitlines()
            if re.search(re.escape(path) + r":\d+:\d+: \S", l)]


def reload_ok(p, timeout=15):
    """SIGHUP, then wait for one more 'published' log line; returns its numbers
    (generation, routes+, routes-, upstreams+, upstreams-, servers+, servers-, listeners+,
    listeners-)."""
    n = len(published(p))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(published(p)) > n, timeout=timeout), \
        "no 'published' log line after SIGHUP; stderr:\n" + p.stderr_text()[-3000:]
    return published(p)[n]


def reload_bad(p, timeout=15):
    n = len(error_lines(p))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(error_lines(p)) > n, timeout=timeout), \
        "no FILE:LINE:COL error after SIGHUP; stderr:\n" + p.stderr_text()[-3000:]
    time.sleep(0.3)   # let every error line of this reload reach the log
    return error_lines(p)[n:]


def write(p, cfg):
    p.config_path.write_text(to_yaml(cfg))


def start(make_portero, cfg):
    ports = [int(l["address"].rsplit(":", 1)[1]) for l in cfg["listeners"]]
    return make_portero(to_yaml(cfg), ports=ports)


def base(port, servers, **kw):
    """Routes are named, so the reload summary counts them by name unambiguously."""
    return build_config(port, {"app": upstream(servers)},
                        routes=[{"name": "main", "match": {"path_prefix": "/"},
                                 "upstream": "app"}], **kw)


def test_sighup_adds_a_route(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = base(port, [a])
    p = start(make_portero, cfg)
    assert get(port, "/hello")[1]["backend"] == "a"
    cfg["routes"].insert(0, {"name": "hello", "match": {"path": "/hello"},
                             "respond": {"status": 200, "body": "new route\n"}})
    write(p, cfg)
    gen = reload_ok(p)
    assert gen[1:] == (1, 0, 0, 0, 0, 0, 0, 0), gen
    assert get(port, "/hello") == (200, b"new route\n")
    assert get(port, "/other")[1]["backend"] == "a"
    # a second reload gets a higher generation number
    cfg["routes"].pop(0)
    write(p, cfg)
    gen2 = reload_ok(p)
    assert gen2[0] > gen[0]
    assert gen2[1:3] == (0, 1)
    assert get(port, "/hello")[1]["backend"] == "a"


def test_sighup_summary_counts_servers_and_upstreams(make_portero, backend_factory):
    a, b, c = backend_factory("a"), backend_factory("b"), backend_factory("c")
    port = free_port()
    cfg = base(port, [a, b])
    p = start(make_portero, cfg)
    cfg["upstreams"]["app"]["servers"] = [{"address": a.address}, {"address": c.address}]
    cfg["upstreams"]["other"] = upstream([b])
    cfg["routes"].insert(0, {"name": "other", "match": {"path_prefix": "/other"},
                             "upstream": "other"})
    write(p, cfg)
    gen = reload_ok(p)
    # routes +1, upstreams +1, servers: c and other/b added, app/b removed
    assert gen[1:] == (1, 0, 1, 0, 2, 1, 0, 0), gen
    seen = {get(port, "/x?i=%d" % i)[1]["backend"] for i in range(4)}
    assert seen == {"a", "c"}
    assert get(port, "/other/1")[1]["backend"] == "b"


def test_invalid_file_keeps_old_config_and_logs_positions(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = base(port, [a])
    p = start(make_portero, cfg)
    good = to_yaml(cfg)
    lines = good.split("\n")
    # break two things on known lines: a weight that is not a number, an unknown route target
    srv_line = next(i for i, l in enumerate(lines) if a.address in l)
    lines[srv_line] = lines[srv_line].replace("}", ', "weight": "heavy"}')
    route_line = next(i for i, l in enumerate(lines) if '"upstream": "app"' in l)
    lines[route_line] = lines[route_line].replace('"upstream": "app"', '"upstream": "nowhere"')
    p.config_path.write_text("\n".join(lines))
    errs = reload_bad(p)
    path = str(p.config_path)
    got_lines = {int(re.search(re.escape(path) + r":(\d+):(\d+):", e).group(1)) for e in errs}
    assert srv_line + 1 in got_lines, errs
    assert route_line + 1 in got_lines, errs
    assert p.running()
    # the old config keeps serving
    for i in range(5):
        status, body = get(port, "/still?i=%d" % i)
        assert status == 200 and body["backend"] == "a"
    # fixing the file makes the next reload succeed
    cfg["routes"].insert(0, {"name": "fixed", "match": {"path": "/fixed"},
                             "respond": {"status": 200, "body": "ok"}})
    write(p, cfg)
    reload_ok(p)
    assert get(port, "/fixed") == (200, b"ok")


def test_yaml_syntax_error_on_reload(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    p = start(make_portero, base(port, [a]))
    p.config_path.write_text(p.config_path.read_text() + "routes: [ {\n")
    errs = reload_bad(p)
    assert errs
    assert p.running()
    assert get(port, "/")[0] == 200


def test_listener_added_removed_and_kept(make_portero, backend_factory):
    a = backend_factory("a")
    p1, p2, p3 = free_port(), free_port(), free_port()
    cfg = base(p1, [a], listeners=[("one", p1), ("two", p2)])
    p = start(make_portero, cfg)
    assert get(p2, "/")[0] == 200
    with RawConn(p1) as keep:
        keep.request("GET", "/k1")
        r = keep.read_response()
        assert r.status == 200 and r.json()["backend"] == "a"
        cfg["listeners"] = [{"name": "one", "address": "127.0.0.1:%d" % p1},
                            {"name": "three", "address": "127.0.0.1:%d" % p3}]
        write(p, cfg)
        gen = reload_ok(p)
        assert gen[7:] == (1, 1), gen
        # new listener serves
        assert wait_for(lambda: port_open(p3), timeout=10)
        assert get(p3, "/new")[0] == 200
        # removed listener refuses
        assert wait_for(lambda: not port_open(p2), timeout=15), "port %d still open" % p2
        # the kept listener's client connection survived and still works
        for i in range(3):
            keep.request("GET", "/k2?i=%d" % i)
            r = keep.read_response()
            assert r.status == 200 and r.json()["backend"] == "a"
    # the kept listener still accepts new connections
    assert get(p1, "/fresh")[0] == 200


def test_kept_listener_never_refuses_during_reloads(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = base(port, [a])
    p = start(make_portero, cfg)
    stop = threading.Event()
    errors, count = [], [0]

    def client():
        while not stop.is_set():
            try:
                status, _ = get(port, "/c", timeout=20)
                if status != 200:
                    errors.append(status)
                count[0] += 1
            except Exception as e:   # noqa: BLE001 - collected
                errors.append(repr(e))

    t = threading.Thread(target=client, daemon=True)
    t.start()
    try:
        for i in range(5):
            cfg["routes"] = [{"name": "r%d" % i, "match": {"path": "/r%d" % i},
                              "respond": {"status": 200}},
                             {"name": "main", "match": {"path_prefix": "/"}, "upstream": "app"}]
            write(p, cfg)
            reload_ok(p)
    finally:
        stop.set()
        t.join(30)
    assert count[0] > 0
    assert errors == []


def test_idle_upstream_connection_survives_reload(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = base(port, [a])
    p = start(make_portero, cfg)
    first = get(port, "/1")[1]
    cfg["routes"].insert(0, {"name": "x", "match": {"path": "/x"}, "respond": {"status": 204}})
    write(p, cfg)
    reload_ok(p)
    second = get(port, "/2")[1]
    assert second["backend"] == "a"
    assert second["conn_id"] == first["conn_id"], (first, second)
    assert a.connections == 1


def test_removed_server_gets_nothing_after_reload(make_portero, backend_factory):
    a, b = backend_factory("a"), backend_factory("b")
    port = free_port()
    cfg = base(port, [a, b])
    p = start(make_portero, cfg)
    assert {get(port, "/x?i=%d" % i)[1]["backend"] for i in range(4)} == {"a", "b"}
    cfg["upstreams"]["app"]["servers"] = [{"address": a.address}]
    write(p, cfg)
    gen = reload_ok(p)
    assert gen[5:7] == (0, 1), gen
    b.clear()
    assert all(get(port, "/y?i=%d" % i)[1]["backend"] == "a" for i in range(6))
    assert b.request_count() == 0
    # its idle pooled connection is closed
    assert wait_for(lambda: b.open_connections == 0, timeout=10)


def test_in_flight_request_finishes_across_reload(make_portero, backend_factory):
    a = backend_factory("a")
    port = free_port()
    cfg = base(port, [a])
    p = start(make_portero, cfg)
    result = {}

    def slow():
        result["r"] = get(port, "/slow?delay=2")
    t = threading.Thread(target=slow, daemon=True)
    t.start()
    assert wait_for(lambda: a.active == 1, timeout=10)
    cfg["routes"] = [{"name": "main", "match": {"path_prefix": "/"},
                      "respond": {"status": 418, "body": "teapot"}}]
    write(p, cfg)
    reload_ok(p)
    t.join(30)
    assert result["r"][0] == 200 and result["r"][1]["backend"] == "a"
    assert get(port, "/after") == (418, b"teapot")
