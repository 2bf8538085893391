"""Command line and config checking (issue 2, item 2).

Contract: `portero -c FILE` runs in the foreground; `portero -t -c FILE` checks the config,
prints `FILE:LINE:COL: message` lines to stderr for every error and exits 1, or prints
`configuration ok` and exits 0; `portero --version` prints `portero <version>` and exits 0;
`portero --help` prints usage to stdout and exits 0; an unknown option prints usage on stderr
and exits 2. A bad config at start: errors on stderr, exit 1, nothing bound.
"""

import re
import subprocess
import textwrap

import pytest

from conftest import PORTERO_BIN, free_port, port_open, wait_for


def run(*args, timeout=20):
    return subprocess.run([PORTERO_BIN, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def error_lines(path, stderr):
    """(line, col, message) for every `PATH:LINE:COL: message` line."""
    pat = re.compile(r"^" + re.escape(str(path)) + r":(\d+):(\d+): (.+)$")
    out = []
    for line in stderr.splitlines():
        m = pat.match(line.strip())
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return out


def line_of(text, marker):
    """1-based number of the line of TEXT containing MARKER."""
    for i, line in enumerate(text.splitlines(), 1):
        if marker in line:
            return i
    raise AssertionError("marker %r not in config" % marker)


VALID_HEAD = """\
workers: 1
log: { access: off }
listeners:
  - { name: web, address: "127.0.0.1:%(port)d" }
upstreams:
  app:
    servers:
      - { address: "127.0.0.1:9" }
"""


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_version():
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert re.match(r"^portero \S+", r.stdout.strip()), r.stdout


def test_help():
    r = run("--help")
    assert r.returncode == 0, r.stderr
    assert "-c" in r.stdout and "-t" in r.stdout, r.stdout


def test_unknown_option_exits_2_with_usage_on_stderr():
    r = run("--no-such-option")
    assert r.returncode == 2
    assert "-c" in r.stderr, r.stderr


def test_check_valid_config(tmp_path):
    text = VALID_HEAD % {"port": free_port()} + textwrap.dedent("""\
        routes:
          - match: { path_prefix: /api/, methods: [GET, POST], headers: { X-Env: canary } }
            upstream: app
            strip_prefix: /api
            request_headers: { set: { X-A: b }, add: { X-C: d }, remove: [X-E] }
            response_headers: { remove: [Server, X-Powered-By] }
          - match: { host: "*.example.com", path_regex: "^/items/[0-9]+$" }
            upstream: app
          - match: { path: /old }
            redirect: { status: 301, location: "https://$host$request_uri" }
          - match: { path_prefix: / }
            respond: { status: 200, body: "hello\\n", headers: { Content-Type: text/plain } }
        """)
    p = write(tmp_path, text)
    r = run("-t", "-c", str(p))
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in (r.stdout + r.stderr)
    assert error_lines(p, r.stderr) == []


def test_check_does_not_start_serving(tmp_path):
    """-t only checks: it exits at once and nothing listens on the configured port."""
    port = free_port()
    p = write(tmp_path, VALID_HEAD % {"port": port} +
              "routes:\n  - match: { path: / }\n    upstream: app\n")
    r = run("-t", "-c", str(p))
    assert r.returncode == 0, r.stderr
    assert not port_open(port)


ROUTES_OK = "routes:\n  - match: { path_prefix: / }\n    upstream: app\n"

# (id, config text after VALID_HEAD substitution, marker on the line the error must point at,
#  optional word expected in the message)
BAD_CONFIGS = [
    ("unknown_top_key", VALID_HEAD + "bogus_key: 1   # ERR\n" + ROUTES_OK, "bogus_key"),
    ("unknown_nested_key", VALID_HEAD + "limits:\n  header_timout: 2s   # ERR\n" + ROUTES_OK,
     "header_timout"),
    ("wrong_type_sequence_for_int",
     VALID_HEAD + "limits:\n  max_headers: [1, 2]   # ERR\n" + ROUTES_OK, None),
    ("wrong_type_workers", VALID_HEAD.replace("workers: 1", "workers: many   # ERR") + ROUTES_OK,
     None),
    ("wrong_type_listeners_scalar",
     "workers: 1\nlisteners: nope   # ERR\n" + ROUTES_OK.replace("upstream: app",
                                                                 "respond: { status: 200 }"),
     None),
    ("bad_duration", VALID_HEAD + "limits:\n  header_timeout: 5parsecs   # ERR\n" + ROUTES_OK,
     None),
    ("bad_duration_upstream",
     VALID_HEAD.replace("    servers:", "    timeouts: { connect: soon }   # ERR\n    servers:")
     + ROUTES_OK, None),
    ("bad_size", VALID_HEAD + "limits:\n  max_header_bytes: 64XB   # ERR\n" + ROUTES_OK, None),
    ("bad_size_negative", VALID_HEAD + "limits:\n  max_body_bytes: -5   # ERR\n" + ROUTES_OK,
     None),
    ("unknown_upstream", VALID_HEAD +
     "routes:\n  - match: { path_prefix: / }\n    upstream: nope   # ERR\n", "nope"),
    ("route_zero_actions", VALID_HEAD + "routes:\n  - match: { path: /a }   # ERR\n", None),
    ("route_two_actions", VALID_HEAD +
     "routes:\n  - { match: { path: /b }, upstream: app, respond: { status: 200 } }   # ERR\n",
     None),
    ("bad_regex", VALID_HEAD +
     'routes:\n  - match: { path_regex: "([a-" }   # ERR\n    upstream: app\n', None),
    ("duplicate_listener", VALID_HEAD.replace(
        '  - { name: web, address: "127.0.0.1:%(port)d" }\n',
        '  - { name: web, address: "127.0.0.1:%(port)d" }\n'
        '  - { name: web2, address: "127.0.0.1:%(port)d" }   # ERR\n') + ROUTES_OK, None),
    ("bad_balance", VALID_HEAD.replace("    servers:", "    balance: fastest   # ERR\n    servers:")
     + ROUTES_OK, None),
    ("bad_hash_key", VALID_HEAD.replace(
        "    servers:", "    balance: hash\n    hash_key: colour   # ERR\n    servers:")
     + ROUTES_OK, None),
    ("bad_redirect_status", VALID_HEAD +
     'routes:\n  - match: { path: /r }\n    redirect: { status: 200, location: "/x" }   # ERR\n',
     None),
]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_check_reports_file_line_col(tmp_path, case):
    """`-t` on a config with one error exits 1 and prints FILE:LINE:COL pointing at the
    offending line (the line of the key or of the route/listener item at fault)."""
    _, text, word = case
    text = text % {"port": free_port()}
    p = write(tmp_path, text)
    r = run("-t", "-c", str(p))
    assert r.returncode == 1, (r.stdout, r.stderr)
    errs = error_lines(p, r.stderr)
    assert errs, "no FILE:LINE:COL line in stderr:\n" + r.stderr
    want = line_of(text, "# ERR")
    lines = [e[0] for e in errs]
    assert want in lines, "expected an error on line %d, got %r\n%s" % (want, errs, r.stderr)
    for ln, col, msg in errs:
        assert col >= 1 and msg.strip()
    if word:
        assert any(word in msg for ln, _, msg in errs if ln == want), errs
    assert "configuration ok" not in r.stdout + r.stderr


def test_check_reports_all_errors_at_once(tmp_path):
    text = VALID_HEAD % {"port": free_port()} + textwrap.dedent("""\
        limits:
          header_timeout: 5parsecs   # E1
          max_header_bytes: 64XB   # E2
        bogus_key: 1   # E3
        routes:
          - match: { path: /a }
            upstream: nope   # E4
          - match: { path_regex: "([a-" }   # E5
            upstream: app
        """)
    p = write(tmp_path, text)
    r = run("-t", "-c", str(p))
    assert r.returncode == 1
    lines = {e[0] for e in error_lines(p, r.stderr)}
    for marker in ("# E1", "# E2", "# E3", "# E4", "# E5"):
        assert line_of(text, marker) in lines, (marker, r.stderr)


def test_check_yaml_syntax_error(tmp_path):
    text = "workers: 1\nlisteners:\n  - { name: web, address: \"127.0.0.1:1\"\n"
    p = write(tmp_path, text)
    r = run("-t", "-c", str(p))
    assert r.returncode == 1
    assert error_lines(p, r.stderr), r.stderr


def test_check_missing_file(tmp_path):
    r = run("-t", "-c", str(tmp_path / "does-not-exist.yaml"))
    assert r.returncode == 1
    assert "does-not-exist.yaml" in r.stderr


def test_bad_config_at_start_exits_1_and_binds_nothing(tmp_path, make_portero):
    port = free_port()
    text = VALID_HEAD % {"port": port} + \
        "routes:\n  - match: { path_prefix: / }\n    upstream: nope   # ERR\n"
    p = make_portero(text, expect_start=False)
    rc = p.wait(15)
    assert rc == 1, p.stderr_text()
    errs = error_lines(p.config_path, p.stderr_text())
    assert line_of(text, "# ERR") in [e[0] for e in errs], p.stderr_text()
    assert "listening on" not in p.stderr_text()
    assert not port_open(port)


def test_valid_config_starts_and_listens(make_portero):
    port = free_port()
    text = VALID_HEAD % {"port": port} + \
        "routes:\n  - match: { path_prefix: / }\n    respond: { status: 200, body: ok }\n"
    p = make_portero(text, ports=[port])
    assert p.running()
    assert wait_for(lambda: "listening on" in p.stderr_text(), 5), p.stderr_text()
    assert p.stop() == 0


def _listen_sockets(port):
    """LISTEN sockets on PORT (IPv4), from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 3 and fields[1].endswith(":%04X" % port) and fields[3] == "0A":
                n += 1
    return n


@pytest.mark.parametrize("workers", ["3", "auto"])
def test_workers_each_have_their_own_listening_socket(make_portero, workers):
    """Item 3: `workers: auto|N`; each worker opens its own SO_REUSEPORT socket per listener,
    and all of them serve."""
    import os
    import requests
    want = 3 if workers == "3" else os.sysconf("SC_NPROCESSORS_ONLN")
    port = free_port()
    text = (VALID_HEAD % {"port": port}).replace("workers: 1", "workers: %s" % workers) + \
        "routes:\n  - match: { path_prefix: / }\n    respond: { status: 200, body: ok }\n"
    p = make_portero(text, ports=[port])
    assert wait_for(lambda: _listen_sockets(port) == want, 5), _listen_sockets(port)
    assert len(os.listdir("/proc/%d/task" % p.pid)) >= want
    for _ in range(30):       # new connections, spread by the kernel
        assert requests.get("http://127.0.0.1:%d/" % port,
                            headers={"Connection": "close"}, timeout=15).text == "ok"


def test_ipv6_listener(make_portero):
    """A listener address "[::1]:PORT" serves IPv6 clients (curl)."""
    import socket as _s
    try:
        s = _s.socket(_s.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port()
    text = (VALID_HEAD % {"port": port}).replace('"127.0.0.1:%d"' % port, '"[::1]:%d"' % port) \
        + "routes:\n  - match: { path_prefix: / }\n    respond: { status: 200, body: six }\n"
    p = make_portero(text, expect_start=True)
    assert wait_for(lambda: "listening on" in p.stderr_text() or not p.running(), 10)
    assert p.running(), p.stderr_text()
    r = subprocess.run(["curl", "-sS", "-g", "--max-time", "15",
                        "http://[::1]:%d/" % port], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "six"
