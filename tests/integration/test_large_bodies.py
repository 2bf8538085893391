"""1 GiB through the proxy with flat memory (issue 2, item 4): the body is generated on the fly
(never held in memory), the backend hashes/counts what it gets, and portero's RSS is sampled
every 0.2 s; it may not grow by 64 MiB or more over its RSS before the transfer."""

import hashlib
import json
import os

import pytest

from conftest import free_port
from rawbackend import RawClient, RssSampler, portero_config, rss_kib

pytestmark = pytest.mark.slow

GIB = 1 << 30
MIB = 1 << 20
MAX_GROWTH_MIB = 64


class Env:
    def __init__(self, port, backend, proc):
        self.port = port
        self.backend = backend
        self.proc = proc


@pytest.fixture
def env(make_portero, backend_factory):
    b = backend_factory("L", conn_timeout=300)
    port = free_port()
    p = make_portero(portero_config(port, {"app": [b.port]}), ports=[port])
    # warm up (first request allocates pools/buffers), then take the baseline
    with RawClient(port) as c:
        c.send(b"GET /warm?size=100000 HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.read_response().status == 200
    return Env(port, b, p)


def blocks(total, size=MIB):
    """Distinct 1 MiB blocks (a random block with the block number in front), lazily."""
    base = os.urandom(size)
    n = 0
    i = 0
    while n < total:
        k = min(size, total - n)
        yield (i.to_bytes(8, "big") + base[8:])[:k]
        n += k
        i += 1


def x_sha(n):
    h = hashlib.sha256()
    block = b"x" * MIB
    while n:
        k = min(n, len(block))
        h.update(block[:k])
        n -= k
    return h.hexdigest()


def check_growth(base, sampler):
    print("rss base %d KiB, max %d KiB, %d samples" % (base, sampler.max_kib, len(sampler.samples)))
    assert sampler.samples, "no RSS samples"
    growth = (sampler.max_kib - base) / 1024
    assert growth < MAX_GROWTH_MIB, "portero RSS grew by %.1f MiB (from %d KiB to %d KiB)" % (
        growth, base, sampler.max_kib)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_upload_1gib_flat_rss(env, chunked):
    base = rss_kib(env.proc.pid)
    h = hashlib.sha256()
    with RssSampler(env.proc.pid) as s, RawClient(env.port, timeout=120) as c:
        if chunked:
            c.send(b"POST /big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            c.send(b"POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % GIB)
        for blk in blocks(GIB):
            h.update(blk)
            if chunked:
                c.send(b"%x\r\n" % len(blk) + blk + b"\r\n")
            else:
                c.send(blk)
        if chunked:
            c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    j = json.loads(r.body)
    assert j["body_len"] == GIB
    assert j["body_sha256"] == h.hexdigest()
    check_growth(base, s)


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
def test_download_1gib_flat_rss(env, chunked):
    base = rss_kib(env.proc.pid)
    h = hashlib.sha256()
    target = b"/big?stream=%d" % GIB + (b"&chunked=1" if chunked else b"")
    with RssSampler(env.proc.pid) as s, RawClient(env.port, timeout=120) as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % target)
        r = c.read_response(sink=h.update)
    assert r.status == 200 and r.complete
    assert r.framing == ("chunked" if chunked else "length")
    assert r.body_len == GIB
    assert h.hexdigest() == x_sha(GIB)
    check_growth(base, s)
