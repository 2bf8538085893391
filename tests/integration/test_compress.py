"""Compression (issue 5, item 8): per route `compress: { algorithms, types, min_size, level }`
(`compress: true` = the defaults: br, zstd, gzip; text types, JSON, XML, SVG; 1 KiB). The
encoding is chosen by the request's Accept-Encoding q-values, ties going to the server's order;
responses are compressed as they stream, get `Vary: Accept-Encoding` and a weak ETag; encoded
responses, small ones, types not listed and ranges are left alone. A cached object is stored
once and served encoded or not as each client asks.

Decoded with real clients: curl --compressed and Python's zlib, brotli and zstandard.
"""

import gzip
import subprocess
import time
import zlib

import brotli
import pytest
import zstandard

from conftest import RawConn
from origin import gen_body, route
from test_cache import cache_env  # noqa: F401  (fixture)

HTML = {"Content-Type": "text/html"}
TEXT = gen_body(20000)


def decode(encoding, data):
    if encoding is None:
        return data
    if encoding == "gzip":
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    if encoding == "br":
        return brotli.decompress(data)
    if encoding == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        return d.decompress(data)
    raise AssertionError("unexpected Content-Encoding %r" % encoding)


def encoding_of(r):
    ce = r.header("Content-Encoding")
    return ce.strip().lower() if ce else None


def vary_names(r):
    return {v.strip().lower() for v in (r.header("Vary") or "").split(",") if v.strip()}


@pytest.fixture
def comp(cache_env):
    e = cache_env(routes=route("/", "compress: true"))
    e.origin.script("/page.html", headers=HTML, body=TEXT)
    return e


@pytest.mark.parametrize("algo", ["gzip", "br", "zstd"])
def test_each_algorithm_round_trips(comp, algo):
    r = comp.get("/page.html", [("Accept-Encoding", algo)])
    assert r.status == 200 and encoding_of(r) == algo, r.headers
    assert len(r.body) < len(TEXT) // 2
    assert decode(algo, r.body) == TEXT


NEGOTIATION = [
    ("gzip, deflate, br, zstd", "br"),        # equal q: the server's order (br, zstd, gzip)
    ("zstd, gzip", "zstd"),
    ("gzip;q=1.0, br;q=0.5", "gzip"),         # q-values beat the server's order
    ("br;q=0.2, zstd;q=0.3, gzip;q=0.1", "zstd"),
    ("br;q=0, gzip", "gzip"),                 # q=0: not acceptable
    ("GZIP", "gzip"),                         # codings are case-insensitive
    ("*", "br"),
    ("*;q=0.1, gzip;q=0.5", "gzip"),
    ("identity", None),
    ("deflate", None),
    ("gzip;q=0", None),
    ("", None),
]


def test_negotiation_by_q_values(comp):
    got = {}
    for ae, _ in NEGOTIATION:
        r = comp.get("/page.html", [("Accept-Encoding", ae)])
        assert r.status == 200
        enc = encoding_of(r)
        got[ae] = enc
        assert decode(enc, r.body) == TEXT, ae
    assert got == dict(NEGOTIATION)


def test_no_accept_encoding_identity(comp):
    r = comp.get("/page.html")
    assert encoding_of(r) is None and r.body == TEXT


def test_curl_compressed(comp, tmp_path):
    out = tmp_path / "body"
    r = subprocess.run(["curl", "-s", "--compressed", "-D", "-", "-o", str(out), "--max-time", "15",
                        "http://127.0.0.1:%d/page.html" % comp.port],
                       capture_output=True, timeout=30)
    head = r.stdout.decode("latin-1").lower()
    assert "content-encoding: br" in head, head          # curl offers deflate, gzip, br, zstd
    assert out.read_bytes() == TEXT
    for algo in ("gzip", "zstd"):
        r = subprocess.run(["curl", "-s", "--compressed", "-H", "Accept-Encoding: " + algo,
                            "-D", "-", "-o", str(out), "--max-time", "15",
                            "http://127.0.0.1:%d/page.html" % comp.port],
                           capture_output=True, timeout=30)
        assert ("content-encoding: " + algo) in r.stdout.decode("latin-1").lower()
        assert out.read_bytes() == TEXT


def test_vary_added_and_etag_weakened(comp):
    comp.origin.script("/e.html", headers={**HTML, "Vary": "Cookie"}, etag='"abc"', body=TEXT)
    r = comp.get("/e.html", [("Accept-Encoding", "gzip")])
    assert encoding_of(r) == "gzip"
    assert vary_names(r) == {"cookie", "accept-encoding"}, r.headers
    assert r.header("ETag") == 'W/"abc"', r.headers
    comp.origin.script("/w.html", headers=HTML, etag='W/"weak"', body=TEXT)
    r = comp.get("/w.html", [("Accept-Encoding", "gzip")])
    assert r.header("ETag") == 'W/"weak"'
    r = comp.get("/page.html", [("Accept-Encoding", "br")])
    assert vary_names(r) == {"accept-encoding"}


def test_vary_on_identity_answer_of_compressible_response(comp):
    """The answer differs with Accept-Encoding even when this client got identity: caches
    downstream must know (RFC 9110 12.5.5)."""
    comp.origin.script("/i.html", headers=HTML, etag='"strong"', body=TEXT)
    r = comp.get("/i.html")
    assert encoding_of(r) is None
    assert "accept-encoding" in vary_names(r), r.headers
    assert r.header("ETag") == '"strong"'          # identity bytes: the origin's ETag stands


def test_already_encoded_untouched(comp):
    packed = gzip.compress(TEXT)
    comp.origin.script("/pre.html", headers={**HTML, "Content-Encoding": "gzip"}, body=packed,
                       etag='"pre"')
    for ae in ("br", "gzip", "zstd, br, gzip"):
        r = comp.get("/pre.html", [("Accept-Encoding", ae)])
        assert r.header_list("Content-Encoding") == ["gzip"], r.headers
        assert r.body == packed
        assert r.header("ETag") == '"pre"'


def test_small_not_compressed(comp):
    small = gen_body(500)
    comp.origin.script("/small.html", headers=HTML, body=small)
    r = comp.get("/small.html", [("Accept-Encoding", "gzip, br")])
    assert encoding_of(r) is None and r.body == small


def test_min_size_and_types_configurable(cache_env):
    e = cache_env(routes=route("/", "compress: { algorithms: [gzip], types: [application/x-thing],"
                                    " min_size: 100 }"))
    e.origin.script("/t", headers={"Content-Type": "application/x-thing"}, body=gen_body(500))
    e.origin.script("/h", headers=HTML, body=TEXT)
    r = e.get("/t", [("Accept-Encoding", "br, gzip")])
    assert encoding_of(r) == "gzip" and decode("gzip", r.body) == gen_body(500)
    r = e.get("/h", [("Accept-Encoding", "br, gzip")])
    assert encoding_of(r) is None and r.body == TEXT


def test_types_not_listed_not_compressed(comp):
    comp.origin.script("/img.png", headers={"Content-Type": "image/png"}, body=TEXT)
    r = comp.get("/img.png", [("Accept-Encoding", "gzip")])
    assert encoding_of(r) is None and r.body == TEXT
    comp.origin.script("/cs.html", headers={"Content-Type": "text/html; charset=utf-8"}, body=TEXT)
    r = comp.get("/cs.html", [("Accept-Encoding", "gzip")])
    assert encoding_of(r) == "gzip" and decode("gzip", r.body) == TEXT
    comp.origin.script("/j", headers={"Content-Type": "Application/JSON"}, body=TEXT)
    r = comp.get("/j", [("Accept-Encoding", "gzip")])
    assert encoding_of(r) == "gzip"


def test_range_not_compressed(comp):
    comp.origin.script("/r.html", headers=HTML, body=TEXT, ranges=True)
    r = comp.get("/r.html", [("Accept-Encoding", "gzip"), ("Range", "bytes=100-1999")])
    assert r.status == 206 and encoding_of(r) is None, r.headers
    assert r.body == TEXT[100:2000]


def test_head_and_304_not_broken(comp):
    comp.origin.script("/c.html", headers=HTML, body=TEXT, etag='"c"')
    r = comp.get("/c.html", [("Accept-Encoding", "gzip")], method="HEAD")
    assert r.status == 200 and r.body == b""
    r = comp.get("/c.html", [("Accept-Encoding", "gzip"), ("If-None-Match", 'W/"c"')])
    assert r.status == 304 and r.body == b""


def read_chunks_timed(rc):
    """After read_head() of a chunked response: [(monotonic time, chunk data)]."""
    out = []
    while True:
        size = int(rc._line().split(b";")[0].strip(), 16)
        if size == 0:
            while rc._line():
                pass
            return out
        data = rc._exact(size)
        out.append((time.monotonic(), data))
        rc._exact(2)


def partial_decode(algo, data):
    """As much of the stream as DATA (a prefix) decodes to."""
    if algo == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    if algo == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    d = brotli.Decompressor()
    return d.process(data)


@pytest.mark.parametrize("algo", ["gzip", "br", "zstd"])
def test_streamed_response_compressed_while_streaming(comp, algo):
    piece = 6000
    body = gen_body(piece * 4)
    comp.origin.script("/live.txt", headers={"Content-Type": "text/plain"}, body=body,
                       chunked=True, pieces=4, piece_delay=0.4)
    with RawConn(comp.port, timeout=30) as rc:
        rc.request("GET", "/live.txt", headers=[("Accept-Encoding", algo)])
        _, status, _, headers = rc.read_head()
        assert status == 200
        h = {n.lower(): v for n, v in headers}
        assert h.get("content-encoding") == algo and "content-length" not in h, headers
        chunks = read_chunks_timed(rc)
    assert decode(algo, b"".join(d for _, d in chunks)) == body
    # The origin notes when it finished after its last write returns: the client may have the
    # whole response a moment before that, so wait for the note (bounded).
    deadline = time.time() + 10
    while comp.origin.last("/live.txt").t_done is None and time.time() < deadline:
        time.sleep(0.02)
    done = comp.origin.last("/live.txt").t_done
    assert done is not None
    early = b"".join(d for t, d in chunks if t < done - 0.3)
    # the first piece (sent 1.2 s before the last) was readable by the client before the end
    assert len(partial_decode(algo, early)) >= piece, (len(early), [(t - done, len(d))
                                                                    for t, d in chunks])


def test_cached_object_served_encoded_and_identity(cache_env):
    e = cache_env(routes=route("/", "cache: { zone: main }", "compress: true"))
    e.origin.script("/cc.html", headers={**HTML, "Cache-Control": "max-age=600"}, body=TEXT,
                    etag='"cc"')
    for ae, want in (("gzip", "gzip"), (None, None), ("br", "br"), ("zstd", "zstd"),
                     ("gzip", "gzip"), (None, None)):
        r = e.get("/cc.html", [("Accept-Encoding", ae)] if ae else [])
        assert r.status == 200 and encoding_of(r) == want, (ae, r.headers)
        assert decode(want, r.body) == TEXT, ae
    assert e.origin.count("/cc.html") == 1
