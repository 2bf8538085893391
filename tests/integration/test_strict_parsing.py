"""Strict request parsing (issue 2, item 5; RFC 9112): every malformed request is answered with
the right status, the connection is closed, and the backend never sees a byte of it.

Each request goes to portero as raw bytes over a socket. The backend is a RawBackend, which
records every byte it receives, so "nothing was forwarded" is asserted, not assumed."""

import json
import time

import pytest

from conftest import free_port
from rawbackend import RawBackend, RawClient, ConnectionClosed, portero_config

H = b"Host: test\r\n"
LIMITS = {"max_request_line": 1024, "max_header_bytes": 4096, "max_headers": 20,
          "header_timeout": "10s"}


class Env:
    def __init__(self, port, rb, proc):
        self.port = port
        self.rb = rb
        self.proc = proc


@pytest.fixture
def env(make_portero):
    rb = RawBackend()
    port = free_port()
    p = make_portero(portero_config(port, {"app": [rb.port]}, limits=LIMITS), ports=[port])
    yield Env(port, rb, p)
    rb.stop()


def send_and_read(port, data, wait_close=10):
    """Sends DATA on a fresh connection; returns (response or None, closed_afterwards, partial).
    WAIT_CLOSE: seconds to wait for portero to close the connection after the response."""
    with RawClient(port, timeout=15) as c:
        c.try_send(data)
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            return None, True, e.partial
        closed = c.wait_closed(wait_close)
        return r, closed, c.extra


def assert_rejected(env, data, statuses):
    r, closed, rest = send_and_read(env.port, data)
    assert r is not None, "portero closed the connection without answering"
    assert r.status in statuses, "expected %s, got %s %r" % (statuses, r.status, r.body[:200])
    assert r.framing == "length" and r.complete, "error answer must carry Content-Length"
    assert len(r.body) < 200
    if 400 <= r.status < 500:
        assert "close" in (r.header("connection") or "").lower(), r.headers
    assert closed, "connection not closed after %d; extra bytes %r" % (r.status, rest[:200])
    assert rest == b"", "bytes after the error answer: %r" % rest[:200]
    # give a (wrongly) forwarded request time to reach the backend
    time.sleep(0.3)
    assert env.rb.total_bytes() == 0, "backend received %r" % env.rb.all_bytes()[:300]
    assert env.proc.running()
    return r


def req(lines, body=b"", start=b"GET / HTTP/1.1"):
    return start + b"\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n" + body


# ---------------------------------------------------------------------------------------------
# Sanity: the same setup forwards good requests (so "backend got 0 bytes" above means something)

def test_valid_request_reaches_backend(env):
    r, closed, _ = send_and_read(env.port, req([H.strip()]), wait_close=0.2)
    assert r is not None and r.status == 200 and r.body == b"raw-ok-1\n"
    assert env.rb.total_bytes() > 0
    assert env.rb.all_bytes().startswith(b"GET / HTTP/1.1\r\n")


def test_http10_without_host_is_accepted(env):
    r, _, _ = send_and_read(env.port, b"GET / HTTP/1.0\r\n\r\n", wait_close=0.2)
    assert r is not None and r.status == 200 and r.body == b"raw-ok-1\n"
    assert env.rb.complete_requests() == 1


def test_two_identical_content_lengths_accepted(env):
    data = req([H.strip(), b"Content-Length: 5", b"Content-Length: 5"], b"hello",
               start=b"POST /same HTTP/1.1")
    r, _, _ = send_and_read(env.port, data, wait_close=0.2)
    assert r is not None and r.status == 200
    got = env.rb.all_bytes()
    assert env.rb.complete_requests() == 1
    head, _, body = got.partition(b"\r\n\r\n")
    assert body == b"hello"
    cls = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"content-length:")]
    assert cls and all(v == b"5" for v in cls), head
    assert b"transfer-encoding" not in head.lower()


# ---------------------------------------------------------------------------------------------
# Framing headers

FRAMING_CASES = [
    ("cl_then_te", req([H.strip(), b"Content-Length: 5", b"Transfer-Encoding: chunked"],
                       b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.1"), {400}),
    ("te_then_cl", req([H.strip(), b"Transfer-Encoding: chunked", b"Content-Length: 5"],
                       b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.1"), {400}),
    ("te_gzip", req([H.strip(), b"Transfer-Encoding: gzip"], b"hello",
                    start=b"POST / HTTP/1.1"), {400, 501}),
    ("te_chunked_then_gzip", req([H.strip(), b"Transfer-Encoding: chunked, gzip"],
                                 b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.1"),
     {400, 501}),
    ("te_chunked_then_gzip_two_fields", req([H.strip(), b"Transfer-Encoding: chunked",
                                             b"Transfer-Encoding: gzip"],
                                            b"5\r\nhello\r\n0\r\n\r\n",
                                            start=b"POST / HTTP/1.1"), {400, 501}),
    ("te_unknown_coding", req([H.strip(), b"Transfer-Encoding: x-portero-unknown"], b"hello",
                              start=b"POST / HTTP/1.1"), {501}),
    ("te_not_quite_chunked", req([H.strip(), b"Transfer-Encoding: xchunked"], b"hello",
                                 start=b"POST / HTTP/1.1"), {501}),
    ("te_chunked_with_parameter", req([H.strip(), b"Transfer-Encoding: chunked;q=1"],
                                      b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.1"),
     {400, 501}),
    ("te_empty", req([H.strip(), b"Transfer-Encoding: "], b"hello",
                     start=b"POST / HTTP/1.1"), {400}),
    ("te_chunked_twice", req([H.strip(), b"Transfer-Encoding: chunked, chunked"],
                             b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.1"), {400}),
    ("te_on_http10", req([H.strip(), b"Transfer-Encoding: chunked"],
                         b"5\r\nhello\r\n0\r\n\r\n", start=b"POST / HTTP/1.0"), {400}),
    ("cl_plus_sign", req([H.strip(), b"Content-Length: +5"], b"hello",
                         start=b"POST / HTTP/1.1"), {400}),
    ("cl_minus_sign", req([H.strip(), b"Content-Length: -5"], b"hello",
                          start=b"POST / HTTP/1.1"), {400}),
    ("cl_space_inside", req([H.strip(), b"Content-Length: 1 0"], b"helloworld",
                            start=b"POST / HTTP/1.1"), {400}),
    ("cl_comma_list_same", req([H.strip(), b"Content-Length: 5, 5"], b"hello",
                               start=b"POST / HTTP/1.1"), {400}),
    ("cl_comma_list_differing", req([H.strip(), b"Content-Length: 5,6"], b"hello",
                                    start=b"POST / HTTP/1.1"), {400}),
    ("cl_overflow", req([H.strip(), b"Content-Length: 99999999999999999999999999"], b"hello",
                        start=b"POST / HTTP/1.1"), {400}),
    ("cl_overflow_2_64", req([H.strip(), b"Content-Length: 18446744073709551616"], b"hello",
                             start=b"POST / HTTP/1.1"), {400}),
    ("cl_hex", req([H.strip(), b"Content-Length: 0x5"], b"hello",
                   start=b"POST / HTTP/1.1"), {400}),
    ("cl_empty", req([H.strip(), b"Content-Length: "], b"hello",
                     start=b"POST / HTTP/1.1"), {400}),
    ("cl_two_differing", req([H.strip(), b"Content-Length: 5", b"Content-Length: 6"],
                             b"hello!", start=b"POST / HTTP/1.1"), {400}),
]


@pytest.mark.parametrize("data,statuses", [c[1:] for c in FRAMING_CASES],
                         ids=[c[0] for c in FRAMING_CASES])
def test_bad_framing_headers(env, data, statuses):
    assert_rejected(env, data, statuses)


# ---------------------------------------------------------------------------------------------
# Field syntax: obs-fold, bare CR / LF, control bytes, names

SYNTAX_CASES = [
    ("obs_fold_space", req([H.strip(), b"X-A: one", b"  two"]), {400}),
    ("obs_fold_tab", req([H.strip(), b"X-A: one", b"\ttwo"]), {400}),
    ("leading_ws_first_field", req([b" Host: test"]), {400}),
    ("bare_cr_in_value", req([H.strip(), b"X-A: a\rb"]), {400}),
    ("bare_cr_before_crlf", req([H.strip(), b"X-A: ab\r"]), {400}),
    ("bare_cr_in_request_line", req([H.strip()], start=b"GET /a\rb HTTP/1.1"), {400}),
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: test\n\n", {400}),
    ("bare_lf_after_request_line", b"GET / HTTP/1.1\nHost: test\r\n\r\n", {400}),
    ("bare_lf_between_fields", b"GET / HTTP/1.1\r\nHost: test\nX-A: b\r\n\r\n", {400}),
    ("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nHost: test\r\n\n", {400}),
    ("nul_in_value", req([H.strip(), b"X-A: a\x00b"]), {400}),
    ("nul_in_name", req([H.strip(), b"X-\x00A: b"]), {400}),
    ("nul_in_target", req([H.strip()], start=b"GET /a\x00b HTTP/1.1"), {400}),
    ("ctl_0x01_in_value", req([H.strip(), b"X-A: a\x01b"]), {400}),
    ("ctl_0x1f_in_value", req([H.strip(), b"X-A: a\x1fb"]), {400}),
    ("del_0x7f_in_value", req([H.strip(), b"X-A: a\x7fb"]), {400}),
    ("ctl_in_host_value", req([b"Host: te\x0bst"]), {400}),
    ("space_before_colon", req([b"Host : test"]), {400}),
    ("tab_before_colon", req([H.strip(), b"X-A\t: b"]), {400}),
    ("space_before_colon_cl", req([H.strip(), b"Content-Length : 5"], b"hello",
                                  start=b"POST / HTTP/1.1"), {400}),
    ("empty_field_name", req([H.strip(), b": value"]), {400}),
    ("field_without_colon", req([H.strip(), b"NoColonHere"]), {400}),
    ("name_with_at", req([H.strip(), b"X@A: b"]), {400}),
    ("name_with_paren", req([H.strip(), b"X(A): b"]), {400}),
    ("name_with_quote", req([H.strip(), b'X"A: b']), {400}),
    ("name_with_space", req([H.strip(), b"X A: b"]), {400}),
    ("name_with_obs_text", req([H.strip(), b"X\x80A: b"]), {400}),
    ("method_with_paren", req([H.strip()], start=b"GE(T / HTTP/1.1"), {400}),
    ("method_with_at", req([H.strip()], start=b"G@T / HTTP/1.1"), {400}),
    ("method_with_ctl", req([H.strip()], start=b"GE\x01T / HTTP/1.1"), {400}),
    ("method_with_obs_text", req([H.strip()], start=b"G\xc3\xa9T / HTTP/1.1"), {400}),
    ("request_line_double_space", req([H.strip()], start=b"GET  / HTTP/1.1"), {400}),
    ("request_line_trailing_space", req([H.strip()], start=b"GET / HTTP/1.1 "), {400}),
    ("target_with_space", req([H.strip()], start=b"GET /a b HTTP/1.1"), {400}),
    ("http09_request_line", b"GET /\r\n\r\n", {400}),
    ("lowercase_version", req([H.strip()], start=b"GET / http/1.1"), {400}),
    ("version_2_digits", req([H.strip()], start=b"GET / HTTP/11"), {400}),
]


@pytest.mark.parametrize("data,statuses", [c[1:] for c in SYNTAX_CASES],
                         ids=[c[0] for c in SYNTAX_CASES])
def test_bad_syntax(env, data, statuses):
    assert_rejected(env, data, statuses)


@pytest.mark.parametrize("version", [b"HTTP/3.0", b"HTTP/1.2", b"HTTP/0.9"])
def test_unsupported_version_505(env, version):
    assert_rejected(env, req([H.strip()], start=b"GET / " + version), {505})


# ---------------------------------------------------------------------------------------------
# Host

HOST_CASES = [
    ("missing_host_http11", req([b"X-A: b"]), {400}),
    ("duplicate_host_differing", req([b"Host: a.example", b"Host: b.example"]), {400}),
    ("duplicate_host_identical", req([b"Host: test", b"Host: test"]), {400}),
    ("host_list", req([b"Host: a.example, b.example"]), {400}),
    ("host_with_space", req([b"Host: a example"]), {400}),
    ("host_with_userinfo", req([b"Host: user@a.example"]), {400}),
    ("absolute_form_with_userinfo", req([b"Host: a.example"],
                                        start=b"GET http://user@a.example/ HTTP/1.1"), {400}),
]


@pytest.mark.parametrize("data,statuses", [c[1:] for c in HOST_CASES],
                         ids=[c[0] for c in HOST_CASES])
def test_bad_host(env, data, statuses):
    assert_rejected(env, data, statuses)


def test_absolute_form_routes_by_target_host(make_portero, backend_factory):
    a = backend_factory("A")
    b = backend_factory("B")
    port = free_port()
    routes = ['{ match: { host: "a.example", path_prefix: / }, upstream: ua }',
              '{ match: { host: "b.example", path_prefix: / }, upstream: ub }']
    make_portero(portero_config(port, {"ua": [a.port], "ub": [b.port]}, routes=routes),
                 ports=[port])
    with RawClient(port) as c:
        # plain request: Host decides
        c.send(b"GET /plain HTTP/1.1\r\nHost: a.example\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and json.loads(r.body)["backend"] == "A"
        # absolute-form whose authority differs from Host: the target's host wins
        c.send(b"GET http://b.example/abs?x=1 HTTP/1.1\r\nHost: a.example\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        j = json.loads(r.body)
        assert j["backend"] == "B", j
        assert j["headers"].get("host") == "b.example", j["headers"]
        assert j["path"] == "/abs"
        assert j["target"] == "/abs?x=1", "upstream request should be in origin-form"
    assert [q["target"] for q in a.requests] == ["/plain"]
    assert len(b.requests) == 1


# ---------------------------------------------------------------------------------------------
# Limits: 414, 431

def test_request_line_too_long_414(env):
    target = b"/" + b"a" * 2000
    assert_rejected(env, req([H.strip()], start=b"GET " + target + b" HTTP/1.1"), {414})


def test_request_line_within_limit_ok(env):
    target = b"/" + b"a" * 900
    r, _, _ = send_and_read(env.port, req([H.strip()], start=b"GET " + target + b" HTTP/1.1"),
                            wait_close=0.2)
    assert r is not None and r.status == 200
    assert env.rb.all_bytes().startswith(b"GET " + target + b" HTTP/1.1\r\n")


def test_header_bytes_too_large_431(env):
    assert_rejected(env, req([H.strip(), b"X-Big: " + b"v" * 5000]), {431})


def test_header_bytes_many_fields_too_large_431(env):
    # 15 fields (under the count limit) of 400 bytes each: over 4096 bytes in total
    fields = [H.strip()] + [b"X-F%d: %s" % (i, b"v" * 400) for i in range(15)]
    assert_rejected(env, req(fields), {431})


def test_header_count_too_many_431(env):
    fields = [H.strip()] + [b"X-F%d: v" % i for i in range(30)]
    assert_rejected(env, req(fields), {431})


def test_request_line_limit_detected_before_line_ends(env):
    """An endless request line is refused once it passes the limit, without waiting for its
    end (or for the 10 s header timeout)."""
    with RawClient(env.port, timeout=15) as c:
        c.try_send(b"GET /" + b"a" * 3000)
        t0 = time.monotonic()
        r = c.read_response()
        assert r.status == 414
        assert time.monotonic() - t0 < 8, "answered only at the header timeout"
        assert c.wait_closed(10)
    assert env.rb.total_bytes() == 0


def test_header_limit_detected_before_head_ends(env):
    with RawClient(env.port, timeout=15) as c:
        c.try_send(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: " + b"v" * 6000)
        t0 = time.monotonic()
        r = c.read_response()
        assert r.status == 431
        assert time.monotonic() - t0 < 8, "answered only at the header timeout"
        assert c.wait_closed(10)
    assert env.rb.total_bytes() == 0


def test_valid_unusual_fields_accepted(env):
    """Things that look odd but are valid: obs-text in a value, OWS around it, a tab inside,
    leading empty line before the request line, tchar punctuation in a field name."""
    data = (b"\r\nGET /odd HTTP/1.1\r\nHost: test\r\nX-Text: caf\xc3\xa9\r\n"
            b"X-Ows: \t padded \t\r\nX-Tab: a\tb\r\nX-!#$%&'*+.^_`|~: tchar\r\n\r\n")
    r, _, _ = send_and_read(env.port, data, wait_close=0.2)
    assert r is not None and r.status == 200
    got = env.rb.all_bytes()
    assert got.startswith(b"GET /odd HTTP/1.1\r\n")
    assert b"X-Text: caf\xc3\xa9\r\n" in got
    assert b"X-Tab: a\tb\r\n" in got
    assert b"X-Ows: padded\r\n" in got or b"X-Ows: \t padded \t\r\n" in got
    assert b"X-!#$%&'*+.^_`|~: tchar\r\n" in got


def test_headers_within_limits_ok(env):
    fields = [H.strip()] + [b"X-F%d: v" % i for i in range(15)]
    r, _, _ = send_and_read(env.port, req(fields), wait_close=0.2)
    assert r is not None and r.status == 200
    assert b"X-F14: v\r\n" in env.rb.all_bytes()


# ---------------------------------------------------------------------------------------------
# Chunked request bodies: the head is valid (it may already have gone upstream), the body is
# not. The client must get a 400 or a closed connection, and the backend must never see a
# complete, well-framed request nor what follows the bad chunk.

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
CHUNK_HEAD = b"POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"

CHUNK_CASES = [
    ("size_overflow", b"5\r\nhello\r\n" + b"1" + b"0" * 20 + b"\r\nhello\r\n0\r\n\r\n"),
    ("size_overflow_ffff", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("size_non_hex", b"5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("size_0x_prefix", b"5\r\nhello\r\n0x5\r\nhello\r\n0\r\n\r\n"),
    ("size_negative", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("size_empty", b"\r\nhello\r\n0\r\n\r\n"),
    ("size_bare_lf", b"5\nhello\r\n0\r\n\r\n"),
    ("missing_crlf_after_data", b"5\r\nhelloXX0\r\n\r\n"),
    ("data_longer_than_size", b"3\r\nhello\r\n0\r\n\r\n"),
    ("extension_with_nul", b"5;a\x00b\r\nhello\r\n0\r\n\r\n"),
    ("extension_with_bare_cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
    ("trailer_bare_lf", b"5\r\nhello\r\n0\r\nX-T: v\n\r\n"),
    ("trailer_nul", b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n"),
    ("trailer_obs_fold", b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
]


@pytest.fixture
def chunk_env(make_portero):
    # the backend answers only once it has a complete request, which it must never get
    rb = RawBackend(respond="request")
    port = free_port()
    p = make_portero(portero_config(port, {"app": [rb.port]}, limits=LIMITS), ports=[port])
    yield Env(port, rb, p)
    rb.stop()


@pytest.mark.parametrize("body", [c[1] for c in CHUNK_CASES], ids=[c[0] for c in CHUNK_CASES])
def test_bad_chunked_body(chunk_env, body):
    env = chunk_env
    with RawClient(env.port, timeout=15) as c:
        c.try_send(CHUNK_HEAD + body + SMUGGLED)
        try:
            r = c.read_response()
        except ConnectionClosed as e:
            r = None
            assert e.partial == b"", "partial answer before close: %r" % e.partial[:200]
        if r is not None:
            assert r.status == 400, r
            assert len(r.body) < 200
        assert c.wait_closed(10), "connection left open after a malformed chunked body"
    time.sleep(0.5)
    got = env.rb.all_bytes()
    assert b"/smuggled" not in got, got[:500]
    assert env.rb.complete_requests() == 0, "backend got a complete request: %r" % got[:500]
    assert env.rb.responses_sent() == 0
    assert env.proc.running()


def test_good_chunked_body_control(chunk_env):
    """Same set-up, valid body: forwarded and answered (proves the negative tests can fail)."""
    env = chunk_env
    with RawClient(env.port) as c:
        c.send(CHUNK_HEAD + b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == b"raw-ok-1\n"
    assert env.rb.complete_requests() == 1
