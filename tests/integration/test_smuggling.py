"""Request smuggling corpus (issue 6, item 6): malformed or ambiguous requests, each sent as raw
bytes to portero in front of a RawBackend that records every byte it receives.

Every case ends in one of three ways, stated per case:

  Reject(statuses)  portero answers one short 4xx/5xx error, closes the connection, and the
                    backend receives no byte at all.
  Forward(body)     the backend receives exactly one request, framed without ambiguity (one
                    Content-Length or chunked, never both, no stray bytes after it) and carrying
                    exactly BODY; the client gets exactly one final response.
  Abort()           the head is valid but the body's chunked framing is not. Portero streams
                    request bodies, so the head (and the good part of the body) may already be
                    upstream: the backend must get only a strict prefix of a well-framed
                    request (never a complete one, never the bytes after the fault), that
                    upstream connection must be closed rather than reused, and the client gets a
                    400 or a bare close.

What the backend received is checked by `parse_upstream`, a deliberately strict HTTP/1.1
parser written for this file (the RawBackend's own framer is lenient by design)."""

import re
import time

import pytest

from conftest import free_port, wait_for
from rawbackend import RawBackend, RawClient, ConnectionClosed

# The whole corpus takes ~40 s: it runs in the normal pass; under ASan the same parser is
# fuzzed (tests/fuzz/fuzz_h1_request, whose seeds include these samples), so it is left out there.
pytestmark = pytest.mark.slow

MAX_BODY = 64 * 1024
OK_BODY = b"raw-ok-1\n"


# ---------------------------------------------------------------------------------------------
# Expectations

class Reject:
    def __init__(self, *statuses):
        self.statuses = set(statuses)

    def __repr__(self):
        return "Reject%s" % sorted(self.statuses)


class Forward:
    """BODY: the exact body the backend must get. TARGET / HOST, when given, must be the
    upstream request's target and its only Host value. ABSENT: byte strings that must not
    appear anywhere in what the backend got. INTERIM: statuses of the 1xx answers the
    client must see before the final one."""

    def __init__(self, body=b"", target=None, host=None, absent=(), interim=()):
        self.body = body
        self.target = target
        self.host = host
        self.absent = absent
        self.interim = list(interim)

    def __repr__(self):
        return "Forward(%r)" % self.body[:20]


class Abort:
    def __repr__(self):
        return "Abort"


# ---------------------------------------------------------------------------------------------
# A strict parser for what reached the backend

TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
REQUEST_LINE = re.compile(rb"(" + TCHAR + rb"+) (/[\x21-\x7e]*|\*) HTTP/1\.1")
FIELD_LINE = re.compile(rb"(" + TCHAR + rb"+):[ \t]*((?:[\x21-\x7e\x80-\xff][\x20-\x7e\t\x80-\xff]*)?)")


class Incomplete(Exception):
    """The bytes end before the request does (they are a valid prefix so far)."""


class UpstreamRequest:
    def __init__(self, method, target, fields, body, framing, trailers, rest):
        self.method = method
        self.target = target
        self.fields = fields        # [(lower-case name, value)]
        self.body = body
        self.framing = framing      # "length" | "chunked" | "none"
        self.trailers = trailers
        self.rest = rest            # bytes after the request

    def values(self, name):
        return [v for n, v in self.fields if n == name]


def _no_bare_cr_lf(data):
    """Asserts every CR and LF in DATA is part of a CRLF (a CR at the very end may be the
    start of one)."""
    stripped = (data[:-1] if data.endswith(b"\r") else data).replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped, "bare CR or LF in %r" % data[:300]


def _crlf_line(data, i):
    j = data.find(b"\r\n", i)
    if j < 0:
        _no_bare_cr_lf(data[i:])
        raise Incomplete()
    line = data[i:j]
    assert b"\r" not in line and b"\n" not in line, "bare CR or LF in %r" % line
    return line, j + 2


def _parse_fields(lines):
    fields = []
    for line in lines:
        m = FIELD_LINE.fullmatch(line)
        assert m, "malformed field line upstream: %r" % line
        fields.append((m.group(1).lower(), m.group(2).rstrip(b" \t")))
    return fields


def _parse_chunked(data, i):
    body = []
    while True:
        line, i = _crlf_line(data, i)
        assert re.fullmatch(rb"[0-9a-fA-F]{1,16}", line), "bad chunk-size line %r" % line
        size = int(line, 16)
        if size == 0:
            break
        if len(data) < i + size + 2:
            assert data[i + size:i + size + 2] == b"\r\n"[:max(0, len(data) - i - size)]
            raise Incomplete()
        body.append(data[i:i + size])
        assert data[i + size:i + size + 2] == b"\r\n", "chunk data not followed by CRLF"
        i += size + 2
    trailers = []
    while True:
        line, i = _crlf_line(data, i)
        if not line:
            break
        trailers.append(line)
    return b"".join(body), _parse_fields(trailers), i


def parse_upstream(data):
    """Parses one request from DATA. Returns an UpstreamRequest; raises Incomplete when DATA
    is a valid prefix, AssertionError on anything malformed or ambiguous."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        _no_bare_cr_lf(data)
        raise Incomplete()
    lines = data[:end].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, "bare CR or LF in %r" % line
    m = REQUEST_LINE.fullmatch(lines[0])
    assert m, "malformed request line upstream: %r" % lines[0]
    fields = _parse_fields(lines[1:])
    names = [n for n, _ in fields]
    assert names.count(b"host") == 1, "upstream Host fields: %r" % fields
    cls = [v for n, v in fields if n == b"content-length"]
    tes = [v for n, v in fields if n == b"transfer-encoding"]
    assert not (cls and tes), "both Content-Length and Transfer-Encoding upstream: %r" % fields
    i = end + 4
    trailers = []
    if tes:
        assert tes == [b"chunked"], "upstream Transfer-Encoding %r" % tes
        body, trailers, i = _parse_chunked(data, i)
        framing = "chunked"
    elif cls:
        assert len(cls) == 1 and re.fullmatch(rb"[0-9]{1,18}", cls[0]), "upstream CL %r" % cls
        n = int(cls[0])
        if len(data) < i + n:
            raise Incomplete()
        body, i, framing = data[i:i + n], i + n, "length"
    else:
        body, framing = b"", "none"
    return UpstreamRequest(m.group(1), m.group(2), fields, body, framing, trailers, data[i:])


def test_parse_upstream_is_strict():
    """The checker itself: it accepts a clean request and refuses the ambiguous ones."""
    ok = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
    r = parse_upstream(ok)
    assert (r.method, r.target, r.body, r.framing, r.rest) == (b"POST", b"/a", b"hi", "length", b"")
    r = parse_upstream(b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"2\r\nhi\r\n0\r\n\r\nX")
    assert (r.body, r.framing, r.rest) == (b"hi", "chunked", b"X")
    for bad in (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
                b"GET /a HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
                b"GET /a HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n",
                b"GET /a HTTP/1.1\r\nHost : h\r\n\r\n",
                b"GET  /a HTTP/1.1\r\nHost: h\r\n\r\n"):
        with pytest.raises(AssertionError):
            parse_upstream(bad)
    for prefix in (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhi",
                   b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                   b"POST /a HTTP/1.1\r\nHo"):
        with pytest.raises(Incomplete):
            parse_upstream(prefix)


# ---------------------------------------------------------------------------------------------
# The corpus

def req(fields, body=b"", start=b"POST / HTTP/1.1"):
    return start + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


H = b"Host: test"
TE = b"Transfer-Encoding: chunked"
INNER = b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"


def chunk_of(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


CORPUS = [
    # --- CL.TE and TE.CL: both framings present -> 400 (RFC 9112 §6.3: MAY reject; we do)
    ("cl_te_classic", req([H, b"Content-Length: 6", TE], b"0\r\n\r\nG"), Reject(400)),
    ("te_cl_classic", req([H, TE, b"Content-Length: 3"], b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
     Reject(400)),
    ("cl_te_hidden_request", req([H, b"Content-Length: 4", TE],
                                 b"%x\r\n%s\r\n0\r\n\r\n" % (len(INNER), INNER)), Reject(400)),
    ("te_cl_zero", req([H, TE, b"Content-Length: 0"], CHUNKED_HELLO), Reject(400)),
    ("cl_te_obfuscated_te", req([H, b"Content-Length: 5", b"Transfer-Encoding: xchunked"],
                                b"hello"), Reject(400, 501)),
    # --- TE.TE obfuscations
    ("te_xchunked", req([H, b"Transfer-Encoding: xchunked"], b"hello"), Reject(501)),
    ("te_quoted_chunked", req([H, b'Transfer-Encoding: "chunked"'], CHUNKED_HELLO), Reject(400)),
    ("te_chunked_identity", req([H, b"Transfer-Encoding: chunked, identity"], CHUNKED_HELLO),
     Reject(400)),
    ("te_identity_chunked", req([H, b"Transfer-Encoding: identity, chunked"], CHUNKED_HELLO),
     Reject(501)),
    ("te_space_before_colon", req([H, b"Transfer-Encoding : chunked"], CHUNKED_HELLO),
     Reject(400)),
    ("te_tab_before_colon", req([H, b"Transfer-Encoding\t: chunked"], CHUNKED_HELLO),
     Reject(400)),
    ("te_line_leading_space", req([H, b" Transfer-Encoding: chunked"], CHUNKED_HELLO),
     Reject(400)),
    ("te_duplicated_fields", req([H, TE, TE], CHUNKED_HELLO), Reject(400)),
    ("te_vertical_tab", req([H, b"Transfer-Encoding:\x0bchunked"], CHUNKED_HELLO), Reject(400)),
    ("te_trailing_nul", req([H, b"Transfer-Encoding: chunked\x00"], CHUNKED_HELLO), Reject(400)),
    ("te_empty_list", req([H, b"Transfer-Encoding: ,"], b"hello"), Reject(400)),
    ("te_uppercase_value_is_legal", req([H, b"Transfer-Encoding: CHUNKED"], CHUNKED_HELLO),
     Forward(b"hello")),
    ("te_uppercase_name_is_legal", req([H, b"TRANSFER-ENCODING: chunked"], CHUNKED_HELLO),
     Forward(b"hello")),
    ("te_extra_ows_is_legal", req([H, b"Transfer-Encoding: \t chunked \t"], CHUNKED_HELLO),
     Forward(b"hello")),
    ("te_empty_list_element_is_legal", req([H, b"Transfer-Encoding: , chunked"],
                                           CHUNKED_HELLO), Forward(b"hello")),
    ("te_on_http10", req([H, TE], CHUNKED_HELLO, start=b"POST / HTTP/1.0"), Reject(400)),
    # --- Content-Length
    ("cl_list_same", req([H, b"Content-Length: 5, 5"], b"hello"), Reject(400)),
    ("cl_list_differing", req([H, b"Content-Length: 5, 6"], b"hello!"), Reject(400)),
    ("cl_two_fields_differing", req([H, b"Content-Length: 5", b"Content-Length: 6"], b"hello!"),
     Reject(400)),
    ("cl_two_fields_same", req([H, b"Content-Length: 5", b"Content-Length: 5"], b"hello"),
     Forward(b"hello")),
    ("cl_plus_sign", req([H, b"Content-Length: +5"], b"hello"), Reject(400)),
    ("cl_minus_sign", req([H, b"Content-Length: -5"], b"hello"), Reject(400)),
    ("cl_hex", req([H, b"Content-Length: 0x5"], b"hello"), Reject(400)),
    ("cl_space_inside", req([H, b"Content-Length: 1 0"], b"helloworld"), Reject(400)),
    ("cl_trailing_letters", req([H, b"Content-Length: 5abc"], b"hello"), Reject(400)),
    ("cl_overflow_2_64", req([H, b"Content-Length: 18446744073709551621"], b"hello"),
     Reject(400)),
    ("cl_over_max_body", req([H, b"Content-Length: 999999999999999999"], b"hello"),
     Reject(413)),
    ("cl_leading_zeros_is_legal", req([H, b"Content-Length: 0005"], b"hello"),
     Forward(b"hello")),
    ("cl_tab_ows_is_legal", req([H, b"Content-Length:\t5\t"], b"hello"), Forward(b"hello")),
    # --- chunk sizes and extensions: the head is fine, the body is not
    ("chunk_size_overflow", req([H, TE], b"10000000000000005\r\nhello\r\n0\r\n\r\n" + INNER),
     Abort()),
    ("chunk_size_overflow_after_good_chunk",
     req([H, TE], b"5\r\nhello\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_size_negative", req([H, TE], b"-5\r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_size_0x", req([H, TE], b"0x5\r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_size_trailing_space", req([H, TE], b"5 \r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_ext_control_byte", req([H, TE], b"5;a\x01b\r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_ext_bare_lf", req([H, TE], b"5;a\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_missing_crlf_after_data", req([H, TE], b"5\r\nhello0\r\n\r\n" + INNER), Abort()),
    ("chunk_data_longer_than_size", req([H, TE], b"3\r\nhello\r\n0\r\n\r\n" + INNER), Abort()),
    ("chunk_lf_only", req([H, TE], b"5\nhello\n0\n\n" + INNER), Abort()),
    ("chunk_size_line_oversized", req([H, TE], b"5;" + b"e" * 6000 + b"\r\nhello\r\n0\r\n\r\n"
                                      + INNER), Abort()),
    ("chunk_ext_valid_is_legal", req([H, TE], b"5;name=val;q=\"x y\"\r\nhello\r\n0\r\n\r\n"),
     Forward(b"hello")),
    ("chunk_size_leading_zeros_is_legal", req([H, TE], b"0005\r\nhello\r\n000\r\n\r\n"),
     Forward(b"hello")),
    ("chunk_size_uppercase_hex_is_legal", req([H, TE], chunk_of(b"x" * 0xAB) + b"0\r\n\r\n"),
     Forward(b"x" * 0xAB)),
    # --- trailers: read and dropped, never merged into the head
    ("trailer_forbidden_fields",
     req([H, TE], b"5\r\nhello\r\n0\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n"
                  b"Host: evil.example\r\n\r\n"),
     Forward(b"hello", host=b"test", absent=(b"evil.example", b"Content-Length: 50"))),
    ("trailer_obs_fold", req([H, TE], b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" + INNER),
     Abort()),
    # --- line syntax: obs-fold, bare CR / LF, NUL
    ("obs_fold", req([H, b"X-A: one", b" two"], start=b"GET / HTTP/1.1"), Reject(400)),
    # the identity line is judged (501) before the folded line is seen (400): either is fine
    ("obs_fold_into_te", req([H, b"Transfer-Encoding: identity", b"\tchunked"], CHUNKED_HELLO),
     Reject(400, 501)),
    ("bare_cr_in_field", req([H, b"X-A: a\rTransfer-Encoding: chunked"], CHUNKED_HELLO),
     Reject(400)),
    ("bare_lf_line_endings", b"POST / HTTP/1.1\nHost: test\nContent-Length: 5\n\nhello",
     Reject(400)),
    ("bare_lf_hides_te", b"POST / HTTP/1.1\r\nHost: test\r\nX: y\nTransfer-Encoding: chunked"
                         b"\r\nContent-Length: 5\r\n\r\nhello", Reject(400)),
    ("nul_in_field_value", req([H, b"X-A: a\x00b"], start=b"GET / HTTP/1.1"), Reject(400)),
    ("nul_in_target", req([H], start=b"GET /a\x00b HTTP/1.1"), Reject(400)),
    # --- Host
    ("host_duplicated", req([H, b"Host: other.example"], start=b"GET / HTTP/1.1"), Reject(400)),
    ("host_userinfo", req([b"Host: user@test"], start=b"GET / HTTP/1.1"), Reject(400)),
    ("host_with_space", req([b"Host: te st"], start=b"GET / HTTP/1.1"), Reject(400)),
    ("host_missing_http11", req([b"X-A: b"], start=b"GET / HTTP/1.1"), Reject(400)),
    ("absolute_form_host_mismatch", req([b"Host: a.example"],
                                        start=b"GET http://b.example/abs?x=1 HTTP/1.1"),
     Forward(b"", target=b"/abs?x=1", host=b"b.example")),
    ("absolute_form_userinfo", req([b"Host: a.example"],
                                   start=b"GET http://u@b.example/ HTTP/1.1"), Reject(400)),
    # --- request line and field names
    ("request_line_extra_spaces", req([H], start=b"GET  /  HTTP/1.1"), Reject(400)),
    ("request_line_tab_separator", req([H], start=b"GET\t/ HTTP/1.1"), Reject(400)),
    ("method_invalid_chars", req([H], start=b"G<E>T / HTTP/1.1"), Reject(400)),
    ("method_lowercase_is_a_token", req([H, b"Content-Length: 5"], b"hello",
                                        start=b"post / HTTP/1.1"), Forward(b"hello")),
    ("version_unsupported", req([H], start=b"GET / HTTP/2.0"), Reject(505)),
    ("field_name_with_space", req([H, b"Content Length: 5"], b"hello"), Reject(400)),
    ("field_name_with_slash", req([H, b"Content/Length: 5"], b"hello"), Reject(400)),
    ("field_name_non_ascii", req([H, b"Transfer-Encod\xefng: chunked"], CHUNKED_HELLO),
     Reject(400)),
    ("field_name_empty", req([H, b": chunked"], CHUNKED_HELLO), Reject(400)),
    # --- a request hidden in a body stays a body
    ("request_in_cl_body", req([H, b"Content-Length: %d" % len(INNER)], INNER),
     Forward(INNER)),
    ("request_in_chunked_body", req([H, TE], chunk_of(INNER) + b"0\r\n\r\n"), Forward(INNER)),
    ("request_in_get_body", req([H, b"Content-Length: %d" % len(INNER)], INNER,
                                start=b"GET / HTTP/1.1"), Forward(INNER)),
    # --- Expect
    ("expect_100_continue", req([H, b"Expect: 100-continue", b"Content-Length: 5"], b"hello"),
     Forward(b"hello", interim=[100])),
    ("expect_unknown_token", req([H, b"Expect: 100-continuex", b"Content-Length: 5"], b"hello"),
     Forward(b"hello")),
    ("expect_100_on_http10", req([H, b"Expect: 100-continue", b"Content-Length: 5"], b"hello",
                                 start=b"POST / HTTP/1.0"), Forward(b"hello")),
    ("expect_100_without_body", req([H, b"Expect: 100-continue"], start=b"GET / HTTP/1.1"),
     Forward(b"")),
    # --- Upgrade: h2c is never passed on (see test_upgrade_not_honoured below)
    ("upgrade_h2c", req([H, b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings",
                         b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"], start=b"GET / HTTP/1.1"),
     Forward(b"", absent=(b"HTTP2-Settings", b"h2c"))),
    ("upgrade_h2c_with_body", req([H, b"Upgrade: h2c", b"Connection: Upgrade",
                                   b"Content-Length: %d" % len(INNER)], INNER),
     Forward(INNER, absent=(b"h2c",))),
]


# ---------------------------------------------------------------------------------------------
# Environment

class Env:
    def __init__(self, port, rb, proc):
        self.port = port
        self.rb = rb
        self.proc = proc


def config(port, backend_port):
    return ("workers: 1\n"
            "log: { access: off }\n"
            "limits: { max_body_bytes: %d, header_timeout: 5s, body_timeout: 5s }\n"
            "listeners:\n"
            '  - { name: web, address: "127.0.0.1:%d" }\n'
            "upstreams:\n"
            "  app:\n"
            '    servers: [ { address: "127.0.0.1:%d" } ]\n'
            "    timeouts: { connect: 2s, response: 10s, idle: 10s }\n"
            "routes:\n"
            "  - { match: { path_prefix: / }, upstream: app }\n" % (MAX_BODY, port, backend_port))


@pytest.fixture
def env(make_portero):
    rb = RawBackend(keep_alive=True, respond="request")
    port = free_port()
    p = make_portero(config(port, rb.port), ports=[port])
    yield Env(port, rb, p)
    rb.stop()


def backend_conns(rb):
    """[(bytes received, closed by portero)] per backend connection that got any byte."""
    with rb._lock:
        return [(bytes(c.data), c.peer_closed) for c in rb.conns if c.count]


def read_one(c):
    try:
        return c.read_response()
    except ConnectionClosed as e:
        assert e.partial == b"", "partial answer before close: %r" % e.partial[:200]
        return None


# ---------------------------------------------------------------------------------------------
# Checks per expectation

def check_reject(env, data, exp):
    with RawClient(env.port, timeout=15) as c:
        c.try_send(data)
        r = read_one(c)
        assert r is not None, "closed without an answer"
        assert r.status in exp.statuses, "expected %s, got %s" % (exp, r)
        assert r.framing == "length" and r.complete and len(r.body) < 200, r
        assert "close" in (r.header("connection") or "").lower(), r.headers
        assert c.wait_closed(10), "connection left open after %d" % r.status
        assert c.extra == b"", "a second answer after the rejection: %r" % c.extra[:200]
    time.sleep(0.3)   # time for a wrongly forwarded request to arrive
    assert env.rb.total_bytes() == 0, "backend received %r" % env.rb.all_bytes()[:300]


def check_forward(env, data, exp):
    with RawClient(env.port, timeout=15) as c:
        c.send(data)
        r = read_one(c)
        assert r is not None, "closed without an answer"
        assert r.status == 200 and r.body == OK_BODY, r
        assert [i.status for i in r.interim] == exp.interim, r.interim
        # exactly one response: nothing else arrives (a smuggled request would be answered)
        extra = c.read_available(0.5)
        assert extra == b"", "a second response: %r" % extra[:300]
    # the backend counts its answer just after sending it
    assert wait_for(lambda: env.rb.responses_sent() >= 1, 5)
    conns = backend_conns(env.rb)
    assert len(conns) == 1, "backend connections with data: %d" % len(conns)
    up = parse_upstream(conns[0][0])
    assert up.rest == b"", "bytes after the request upstream: %r" % up.rest[:300]
    assert up.body == exp.body, "upstream body %r" % up.body[:300]
    assert up.trailers == [], "trailer fields forwarded: %r" % up.trailers
    if exp.body:
        assert up.framing in ("length", "chunked")
    if exp.target is not None:
        assert up.target == exp.target, up.target
    if exp.host is not None:
        assert up.values(b"host") == [exp.host], up.fields
    for marker in exp.absent:
        assert marker not in conns[0][0], "%r reached the backend" % marker
    assert env.rb.responses_sent() == 1


def check_abort(env, data):
    with RawClient(env.port, timeout=15) as c:
        c.try_send(data)
        r = read_one(c)
        if r is not None:
            assert r.status == 400, r
            assert len(r.body) < 200
        assert c.wait_closed(10), "connection left open after a malformed chunked body"
        assert c.extra == b"", "bytes after the answer: %r" % c.extra[:200]
    time.sleep(0.3)
    for got, _ in backend_conns(env.rb):
        assert b"/smuggled" not in got, got[:500]
        with pytest.raises(Incomplete):
            parse_upstream(got)     # a strict prefix of one request, never a whole one
    assert env.rb.responses_sent() == 0
    # that upstream connection is dead, not back in the pool with half a request in it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(closed for _, closed in
                                                   backend_conns(env.rb)):
        time.sleep(0.05)
    assert all(closed for _, closed in backend_conns(env.rb)), "upstream connection kept open"
    # and the next client request travels alone on a clean connection
    n_before = len(backend_conns(env.rb))
    with RawClient(env.port, timeout=15) as c:
        c.send(b"GET /after HTTP/1.1\r\nHost: test\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.body == OK_BODY, r
    conns = backend_conns(env.rb)
    assert len(conns) == n_before + 1
    up = parse_upstream(conns[-1][0])
    assert (up.target, up.rest) == (b"/after", b"")


@pytest.mark.parametrize("data,exp", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus(env, data, exp):
    if isinstance(exp, Reject):
        check_reject(env, data, exp)
    elif isinstance(exp, Forward):
        check_forward(env, data, exp)
    else:
        check_abort(env, data)
    assert env.proc.running()


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 40
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)
    kinds = {type(exp).__name__ for _, _, exp in CORPUS}
    assert kinds == {"Reject", "Forward", "Abort"}


# ---------------------------------------------------------------------------------------------
# Smuggling across requests on one connection

def test_rejection_discards_the_pipelined_rest(env):
    """A rejected request followed, in the same send, by a valid one: only the error comes
    back, the connection closes, and the valid-looking tail is never forwarded."""
    data = req([H, b"Content-Length: 5", TE], CHUNKED_HELLO) + INNER
    with RawClient(env.port, timeout=15) as c:
        c.send(data)
        r = c.read_response()
        assert r.status == 400
        assert c.wait_closed(10)
        assert c.extra == b""
    time.sleep(0.3)
    assert env.rb.total_bytes() == 0


def test_valid_pipeline_after_chunked_body_is_two_clean_requests(env):
    """The chunked body ends exactly where its last-chunk says: what follows is a second
    request, forwarded as its own well-framed request, never glued to the first."""
    data = req([H, TE], b"5\r\nhello\r\n0\r\n\r\n") + INNER
    with RawClient(env.port, timeout=15) as c:
        c.send(data)
        assert c.read_response().status == 200
        assert c.read_response().status == 200
        assert c.read_available(0.5) == b""
    # the second request may have gone on the same pooled connection or a new one: either
    # way, in accept order, the bytes must be exactly two requests back to back
    stream = b"".join(got for got, _ in backend_conns(env.rb))
    first = parse_upstream(stream)
    assert first.body == b"hello" and first.target == b"/"
    second = parse_upstream(first.rest)
    assert second.target == b"/smuggled" and second.body == b"" and second.rest == b""


def switching_backend(protocol):
    """A backend that answers every request with a 101 to PROTOCOL, asked for or not (as an
    h2c-capable origin would when it sees the Upgrade)."""
    return RawBackend(keep_alive=True, respond="head", response=(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
        % protocol))


UPGRADE_REFUSED = [
    ("h2c", b"GET / HTTP/1.1", [b"Upgrade: h2c", b"Connection: Upgrade, HTTP2-Settings",
                                b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"], b"h2c"),
    ("h2c_uppercase_in_list", b"GET / HTTP/1.1", [b"Upgrade: websocket, H2C",
                                                  b"Connection: Upgrade"], b"h2c"),
    ("h2c_versioned", b"GET / HTTP/1.1", [b"Upgrade: h2c/1", b"Connection: Upgrade"], b"h2c"),
    ("http10_websocket", b"GET / HTTP/1.0", [b"Upgrade: websocket", b"Connection: Upgrade"],
     b"websocket"),
]


@pytest.mark.parametrize("start,fields,protocol", [c[1:] for c in UPGRADE_REFUSED],
                         ids=[c[0] for c in UPGRADE_REFUSED])
def test_upgrade_not_honoured(make_portero, start, fields, protocol):
    """h2c smuggling: if the Upgrade reached an h2c-capable origin and its 101 opened a tunnel,
    every request inside it would bypass portero's routing and limits. RFC 9113 §3.1
    deprecates the h2c upgrade, and RFC 9110 §7.8 says Upgrade in an HTTP/1.0 request MUST be
    ignored. So the Upgrade is not forwarded, and a 101 the origin sends anyway is refused
    (502) instead of opening a tunnel."""
    rb = switching_backend(protocol)
    port = free_port()
    make_portero(config(port, rb.port), ports=[port])
    try:
        with RawClient(port, timeout=15) as c:
            c.send(req([H] + fields, start=start))
            r = read_one(c)
            assert r is None or r.status == 502, "tunnel opened: %r" % r
            assert c.read_available(0.3) == b"", "bytes after the 502"
        up = parse_upstream(rb.all_bytes())
        assert up.rest == b""
        assert up.values(b"upgrade") == [], "Upgrade forwarded: %r" % up.fields
        assert b"HTTP2-Settings" not in rb.all_bytes()
    finally:
        rb.stop()


def test_websocket_upgrade_still_tunnels(make_portero):
    """Control for the test above: the same 101 backend does get a tunnel for a WebSocket
    upgrade on HTTP/1.1, and bytes then flow through unparsed."""
    rb = switching_backend(b"websocket")
    port = free_port()
    make_portero(config(port, rb.port), ports=[port])
    try:
        with RawClient(port, timeout=15) as c:
            c.send(req([H, b"Upgrade: websocket", b"Connection: Upgrade",
                        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                        b"Sec-WebSocket-Version: 13"], start=b"GET /ws HTTP/1.1"))
            r = c.read_response()
            assert r.status == 101 and r.header("upgrade") == "websocket", r
            c.send(b"\x00raw tunnel bytes\xff")
            assert wait_for(lambda: rb.all_bytes().endswith(b"\x00raw tunnel bytes\xff"), 10)
        up = parse_upstream(rb.all_bytes())
        assert up.values(b"upgrade") == [b"websocket"]
    finally:
        rb.stop()
