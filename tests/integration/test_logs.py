"""Access and error logs (issue 2, item 10).

Contract: `log.access` is a path, `stdout` or `off`; `log.format` text | json; lines are
buffered per worker and flushed at least every `log.flush_interval` (default 1s) and at exit.

text: CLIENT - - [23/Nov/2026:09:00:00 +0000] "METHOD TARGET HTTP/1.1" STATUS BYTES_OUT
      "REFERER" "USER_AGENT" in=BYTES_IN rt=TOTAL_SECONDS(3 decimals) ua=UPSTREAM_ADDR|-
      ut=UPSTREAM_SECONDS|- route=ROUTE_NAME|-
json: one object per line with keys time (ISO 8601), client, method, target, protocol, status,
      bytes_in, bytes_out, duration_ms, upstream ("-" none), upstream_ms (null none),
      route (null none), user_agent, referer.
Routes are named by `name:` or "route<N>" (1-based, file order).
Error log (default stderr): `YYYY-MM-DDTHH:MM:SS.mmmZ [level] message`; at start
`[info] listening on ADDR (listener NAME)`.
"""

import datetime
import json
import re

import requests

from conftest import free_port, url, wait_for

TEXT_RE = re.compile(
    r'^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) '
    r'(?P<proto>HTTP/1\.[01])" (?P<status>\d{3}) (?P<bytes_out>\d+) "(?P<referer>[^"]*)" '
    r'"(?P<ua>[^"]*)" in=(?P<bytes_in>\d+) rt=(?P<rt>\d+\.\d{3}) ua=(?P<upstream>\S+) '
    r'ut=(?P<ut>\S+) route=(?P<route>\S+)$')

JSON_KEYS = {"time", "client", "method", "target", "protocol", "status", "bytes_in",
             "bytes_out", "duration_ms", "upstream", "upstream_ms", "route", "user_agent",
             "referer"}


def config(port, backend, access="stdout", fmt="text", extra_log=""):
    return f"""\
workers: 1
log: {{ access: "{access}", format: {fmt}{extra_log} }}
listeners:
  - {{ name: web, address: "127.0.0.1:{port}" }}
upstreams:
  app:
    servers: [ {{ address: "{backend.address}" }} ]
routes:
  - match: {{ path_prefix: /app/ }}
    upstream: app
  - name: hello-route
    match: {{ path: /hello }}
    respond: {{ status: 200, body: "hello\\n" }}
"""


def make_traffic(port):
    h = {"User-Agent": "log-test-agent/1.0", "Referer": "http://ref.example/page"}
    r1 = requests.post(url(port, "/app/items?x=1"), data=b"p" * 100, headers=h, timeout=15)
    r2 = requests.get(url(port, "/hello"), headers=h, timeout=15)
    r3 = requests.get(url(port, "/missing"), headers=h, timeout=15)
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 404)


def parse_text(lines):
    out = []
    for line in lines:
        m = TEXT_RE.match(line)
        assert m, "access log line does not match the text format: %r" % line
        out.append(m.groupdict())
    return out


def by_target(entries):
    return {e["target"]: e for e in entries}


def test_text_access_log(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(config(port, b), ports=[port])
    make_traffic(port)
    assert wait_for(lambda: p.stdout_text().count("\n") >= 3, 10), p.stdout_text()
    entries = by_target(parse_text([ln for ln in p.stdout_text().splitlines() if ln.strip()]))

    prox = entries["/app/items?x=1"]
    assert prox["client"] == "127.0.0.1"
    assert prox["method"] == "POST" and prox["status"] == "200"
    assert prox["proto"] == "HTTP/1.1"
    assert prox["ua"] == "log-test-agent/1.0"
    assert prox["referer"] == "http://ref.example/page"
    assert int(prox["bytes_in"]) >= 100
    assert int(prox["bytes_out"]) > 0
    assert prox["upstream"] == b.address
    assert re.match(r"^\d+\.\d{3}$", prox["ut"]), prox["ut"]
    assert float(prox["ut"]) <= float(prox["rt"]) + 0.001
    assert prox["route"] == "route1"
    datetime.datetime.strptime(prox["time"], "%d/%b/%Y:%H:%M:%S %z")

    hello = entries["/hello"]
    assert hello["status"] == "200" and hello["method"] == "GET"
    assert int(hello["bytes_out"]) >= len("hello\n")
    assert hello["upstream"] == "-" and hello["ut"] == "-"
    assert hello["route"] == "hello-route"

    miss = entries["/missing"]
    assert miss["status"] == "404"
    assert miss["upstream"] == "-" and miss["ut"] == "-"
    assert miss["route"] == "-"


def test_json_access_log(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(config(port, b, fmt="json"), ports=[port])
    make_traffic(port)
    assert wait_for(lambda: p.stdout_text().count("\n") >= 3, 10), p.stdout_text()
    objs = [json.loads(ln) for ln in p.stdout_text().splitlines() if ln.strip()]
    for o in objs:
        assert JSON_KEYS <= set(o), set(JSON_KEYS) - set(o)
    entries = by_target(objs)

    prox = entries["/app/items?x=1"]
    assert prox["client"] == "127.0.0.1"
    assert prox["method"] == "POST" and prox["status"] == 200
    assert prox["protocol"] == "HTTP/1.1"
    assert prox["bytes_in"] >= 100 and prox["bytes_out"] > 0
    assert prox["upstream"] == b.address
    assert isinstance(prox["upstream_ms"], (int, float)) and prox["upstream_ms"] >= 0
    assert isinstance(prox["duration_ms"], (int, float))
    assert prox["upstream_ms"] <= prox["duration_ms"] + 1
    assert prox["route"] == "route1"
    assert prox["user_agent"] == "log-test-agent/1.0"
    assert prox["referer"] == "http://ref.example/page"
    t = prox["time"].replace("Z", "+00:00")
    datetime.datetime.fromisoformat(t)

    hello = entries["/hello"]
    assert hello["status"] == 200
    assert hello["upstream"] == "-" and hello["upstream_ms"] is None
    assert hello["route"] == "hello-route"

    miss = entries["/missing"]
    assert miss["status"] == 404
    assert miss["upstream"] == "-" and miss["upstream_ms"] is None
    assert miss["route"] is None


def test_json_escapes_strings(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(config(port, b, fmt="json"), ports=[port])
    ua = 'quote" back\\slash'
    r = requests.get(url(port, "/hello"), headers={"User-Agent": ua}, timeout=15)
    assert r.status_code == 200
    assert wait_for(lambda: p.stdout_text().strip(), 10)
    o = json.loads(p.stdout_text().splitlines()[0])
    assert o["user_agent"] == ua


def test_access_log_to_file_flushed_without_exit(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    port = free_port()
    path = tmp_path / "access.log"
    p = make_portero(config(port, b, access=str(path)), ports=[port])
    make_traffic(port)
    # flushed on time (flush_interval defaults to 1s), while portero keeps running
    assert wait_for(lambda: path.exists() and path.read_text().count("\n") >= 3, 10)
    assert p.running()
    entries = by_target(parse_text(path.read_text().splitlines()))
    assert set(entries) == {"/app/items?x=1", "/hello", "/missing"}
    assert "/hello" not in p.stdout_text()


def test_access_log_flushed_at_exit(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    port = free_port()
    path = tmp_path / "access.log"
    p = make_portero(config(port, b, access=str(path), extra_log=", flush_interval: 1h"),
                     ports=[port])
    r = requests.get(url(port, "/hello"), timeout=15)
    assert r.status_code == 200
    assert p.stop() == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and '"GET /hello HTTP/1.1" 200' in lines[0]


def test_access_log_off(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(config(port, b, access="off"), ports=[port])
    make_traffic(port)
    assert p.stop() == 0
    assert "/hello" not in p.stdout_text()
    assert "/hello" not in p.stderr_text()
    assert "/app/items" not in p.stdout_text() + p.stderr_text()


def test_error_log_format_and_listening_line(make_portero, backend_factory):
    b = backend_factory()
    port = free_port()
    p = make_portero(config(port, b, access="off"), ports=[port])
    want = "listening on 127.0.0.1:%d (listener web)" % port
    assert wait_for(lambda: want in p.stderr_text(), 10), p.stderr_text()
    line = [ln for ln in p.stderr_text().splitlines() if want in ln][0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[info\] ", line), line


def test_error_log_level_and_file(make_portero, backend_factory, tmp_path):
    """log.error to a file; level: error hides the info lines."""
    b = backend_factory()
    port = free_port()
    err = tmp_path / "error.log"
    p = make_portero(config(port, b, access="off", extra_log=', error: "%s", level: error' % err),
                     ports=[port])
    assert requests.get(url(port, "/hello"), timeout=15).status_code == 200
    assert p.stop() == 0
    text = err.read_text() if err.exists() else ""
    assert "[info]" not in text
    assert "[info]" not in p.stderr_text()


def test_error_log_info_to_file(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    port = free_port()
    err = tmp_path / "error.log"
    p = make_portero(config(port, b, access="off", extra_log=', error: "%s"' % err),
                     ports=[port])
    assert wait_for(lambda: err.exists() and "listening on" in err.read_text(), 10)
    assert "listening on" not in p.stderr_text()
