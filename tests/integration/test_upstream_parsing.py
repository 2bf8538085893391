"""Strict parsing of upstream responses (issue 2, item 5): a malformed response head becomes a
502 with a short body that reveals no backend address, and none of the backend's bytes reach
the client. Errors found in a response *body* (after the head may have been forwarded) must
abort the client's response rather than complete it."""

import time

import pytest

from conftest import free_port
from rawbackend import RawBackend, RawClient, ConnectionClosed, portero_config

LEAK = b"LEAK"   # every malformed response carries it; the client must never see it


def start(make_portero, response, workers=2, keep_alive=False, respond="request"):
    rb = RawBackend(response=response, keep_alive=keep_alive, respond=respond)
    port = free_port()
    p = make_portero(portero_config(port, {"app": [rb.port]}, workers=workers), ports=[port])
    return port, rb, p


def get_once(port, target=b"/x"):
    with RawClient(port, timeout=30) as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % target)
        return c.read_response()


def assert_502(r, rb):
    assert r.status == 502, "expected 502, got %r body=%r" % (r, r.body[:300])
    assert r.complete and r.framing in ("length", "chunked")
    assert len(r.body) < 100, r.body
    everything = r.raw_head + r.body
    assert LEAK not in everything, everything
    assert b"127.0.0.1" not in r.body and str(rb.port).encode() not in r.body, r.body
    assert r.header("x-leak") is None


HEAD_CASES = [
    ("cl_and_te",
     b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\nX-Leak: LEAK\r\n"
     b"\r\n4\r\nLEAK\r\n0\r\n\r\n"),
    ("te_gzip_not_chunked",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nX-Leak: LEAK\r\n\r\nLEAK"),
    ("te_chunked_then_gzip",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nX-Leak: LEAK\r\n\r\n"
     b"4\r\nLEAK\r\n0\r\n\r\n"),
    ("te_on_http10_response",
     b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nX-Leak: LEAK\r\n\r\n"
     b"4\r\nLEAK\r\n0\r\n\r\n"),
    ("two_differing_cl",
     b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\nX-Leak: LEAK\r\n\r\nLEAK!"),
    ("cl_comma_list",
     b"HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\nX-Leak: LEAK\r\n\r\nLEAK!"),
    ("cl_plus_sign", b"HTTP/1.1 200 OK\r\nContent-Length: +4\r\nX-Leak: LEAK\r\n\r\nLEAK"),
    ("cl_negative", b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\nX-Leak: LEAK\r\n\r\nLEAK"),
    ("cl_space_inside", b"HTTP/1.1 200 OK\r\nContent-Length: 1 0\r\nX-Leak: LEAK\r\n\r\nLEAKLEAK!!"),
    ("cl_overflow",
     b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\nX-Leak: LEAK\r\n\r\nLEAK"),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\nX-A: one\r\n two\r\nContent-Length: 4\r\n"
                 b"\r\nLEAK"),
    ("bare_lf_everywhere", b"HTTP/1.1 200 OK\nX-Leak: LEAK\nContent-Length: 4\n\nLEAK"),
    ("bare_lf_one_field", b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\nContent-Length: 4\r\n\r\nLEAK"),
    ("bare_cr_in_value", b"HTTP/1.1 200 OK\r\nX-Leak: LE\rAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nX-Leak: LE\x00AK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("ctl_in_value", b"HTTP/1.1 200 OK\r\nX-Leak: LE\x01AK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("space_before_colon",
     b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\nContent-Length : 4\r\n\r\nLEAK"),
    ("field_without_colon",
     b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\nNoColonHere\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("non_token_field_name",
     b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\nX@Y: z\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_four_digits", b"HTTP/1.1 2000 OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_two_digits", b"HTTP/1.1 20 OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_not_digits", b"HTTP/1.1 abc OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_line_no_space", b"HTTP/1.1200 OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_line_bad_protocol", b"ICY 200 OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("status_line_http2", b"HTTP/2.0 200 OK\r\nX-Leak: LEAK\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("unsolicited_101",
     b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"X-Leak: LEAK\r\n\r\nLEAK"),
    ("garbage", b"SSH-2.0-OpenSSH_9.2 LEAK\r\n\r\n"),
    ("empty_then_close", b""),
    ("head_never_completes", b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\nContent-Le"),
    ("huge_head", b"HTTP/1.1 200 OK\r\nX-Leak: LEAK\r\n" + b"X-Big: " + b"v" * (256 * 1024) +
     b"\r\nContent-Length: 4\r\n\r\nLEAK"),
]


@pytest.mark.parametrize("response", [c[1] for c in HEAD_CASES], ids=[c[0] for c in HEAD_CASES])
def test_malformed_response_head_is_502(make_portero, response):
    port, rb, p = start(make_portero, response)
    try:
        r = get_once(port)
        assert_502(r, rb)
        assert rb.complete_requests() >= 1    # it really went upstream
        assert p.running()
    finally:
        rb.stop()


def test_502_body_is_short_status_text(make_portero):
    port, rb, _ = start(make_portero, b"HTTP/1.1 200 OK\nContent-Length: 4\n\nLEAK")
    try:
        r = get_once(port)
        assert_502(r, rb)
        assert r.body.strip() == b"502 Bad Gateway"
        assert (r.header("content-type") or "").startswith("text/plain")
    finally:
        rb.stop()


def test_malformed_upstream_connection_not_reused(make_portero):
    """The backend keeps the connection open after a malformed answer: portero must not put
    it back in its pool (one worker, so a reuse would be visible as a single connection)."""
    bad = b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 4\r\n\r\nLEAK"
    port, rb, _ = start(make_portero, bad, workers=1, keep_alive=True)
    try:
        for _ in range(2):
            assert_502(get_once(port), rb)
        assert rb.connections == 2
    finally:
        rb.stop()


def test_good_upstream_connection_reused_control(make_portero):
    """Control for the test above: a valid keep-alive answer is reused."""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    port, rb, _ = start(make_portero, ok, workers=1, keep_alive=True)
    try:
        for _ in range(3):
            r = get_once(port)
            assert r.status == 200 and r.body == b"ok"
        assert rb.connections == 1
        assert rb.complete_requests() == 3
    finally:
        rb.stop()


def test_extra_bytes_after_response_never_reach_client(make_portero):
    """A backend that sends a second, unsolicited response after the first one (response
    splitting / desync): the client gets exactly the first body, and never the extra one,
    even on a later request over the same client connection."""
    split = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
             b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Leak: LEAK\r\n\r\nLEAK")
    port, rb, _ = start(make_portero, split, workers=1, keep_alive=True)
    try:
        with RawClient(port, timeout=30) as c:
            for i in range(3):
                c.send(b"GET /r%d HTTP/1.1\r\nHost: test\r\n\r\n" % i)
                r = c.read_response()
                assert r.status == 200 and r.body == b"ok", (i, r, r.body)
                assert r.header("x-leak") is None
                time.sleep(0.2)
            assert LEAK not in c.read_available(0.5)
    finally:
        rb.stop()


BODY_CASES = [
    ("chunk_size_non_hex",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nLEAK\r\n"
     b"0\r\n\r\n"),
    ("chunk_size_0x",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0x4\r\nLEAK\r\n"
     b"0\r\n\r\n"),
    ("chunk_size_overflow",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
     b"100000000000000004\r\nLEAK\r\n0\r\n\r\n"),
    ("chunk_missing_crlf",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloLEAK\r\n0\r\n\r\n"),
    ("chunk_bare_lf",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\nLEAK\r\n0\r\n\r\n"),
    ("chunked_truncated_by_close",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
    ("content_length_truncated_by_close",
     b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello"),
]


@pytest.mark.parametrize("response", [c[1] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_malformed_response_body_is_not_completed(make_portero, response):
    """The head was valid, so it may already have been forwarded. Then the client's response
    must end abnormally (connection closed, body incomplete), never look complete. If nothing
    had reached the client yet, the answer is a 502 (not a silently closed connection)."""
    port, rb, p = start(make_portero, response)
    try:
        with RawClient(port, timeout=30) as c:
            c.send(b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
            try:
                r = c.read_response()
            except ConnectionClosed as e:
                assert LEAK not in e.partial
                assert e.partial != b"", ("connection closed without a byte: nothing had been "
                                          "forwarded, so the client should get a 502")
                r = None
            if r is not None and r.status == 502:
                assert_502(r, rb)
            elif r is not None:
                assert r.status == 200, r
                assert not r.complete, "a broken upstream body was completed: %r" % r.body
                assert LEAK not in r.body
                assert r.body in (b"", b"hello"), r.body
                assert c.wait_closed(15)
        assert p.running()
    finally:
        rb.stop()


@pytest.mark.parametrize("method,response", [
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\nLEAK-after-204"),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\nLEAK"),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nLEAK"),
], ids=["204_with_body", "304_with_body", "head_with_body"])
def test_body_bytes_on_bodiless_response_never_reach_client(make_portero, method, response):
    port, rb, _ = start(make_portero, response, workers=1, keep_alive=True)
    try:
        with RawClient(port, timeout=30) as c:
            for i in range(3):
                c.send(b"%s /nb%d HTTP/1.1\r\nHost: test\r\n\r\n" % (method.encode(), i))
                r = c.read_response(method=method)
                assert r.status == int(response[9:12]) and r.body == b"", (i, r)
                time.sleep(0.2)
            assert LEAK not in c.read_available(0.5)
    finally:
        rb.stop()
