"""A gRPC origin for the integration tests (Debian's python3-grpcio, no protoc).

Messages are raw bytes: the handlers are registered with grpc.method_handlers_generic_handler
and no (de)serializers, so a client sends and receives `bytes`.

Service "test.Svc":
    Echo    unary         b"echo:" + request; request b"notfound..." -> NOT_FOUND "no such thing";
                          b"size:N" -> N bytes of a repeating pattern; echoes the request metadata
                          "x-tag" as the response's initial metadata and trailing metadata
    Count   server stream b"N" -> b"item0" .. b"item{N-1}"; b"N:fail" -> N items then INTERNAL "boom";
                          b"big:K:N" -> K messages of N bytes each
    Sum     client stream -> b"<count>:<total bytes>:<sha256 hex of the concatenation>"
    Chat    bidi          each request m -> b"re:" + m, as soon as it arrives (lock-step clients
                          prove both directions stream)

GrpcBackend(tls=None | (cert, key), port=0) starts a server on 127.0.0.1 (a free port unless
PORT is given, e.g. to restart a stopped backend at the same address); .address is
"127.0.0.1:PORT"; .peers holds the context.peer() of every call (the client address shows which
connection carried it); .stop() ends it.
"""

import hashlib
import threading
from concurrent import futures

import grpc

MAX_MSG = 16 * 1024 * 1024
PATTERN = bytes(range(256))


def pattern(n):
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


class GrpcBackend:
    def __init__(self, tls=None, port=0):
        self.peers = []
        self.metadata = []
        self._lock = threading.Lock()
        opts = [("grpc.max_receive_message_length", MAX_MSG),
                ("grpc.max_send_message_length", MAX_MSG),
                ("grpc.so_reuseport", 0)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=opts)
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo),
            "Count": grpc.unary_stream_rpc_method_handler(self._count),
            "Sum": grpc.stream_unary_rpc_method_handler(self._sum),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Svc", handlers),))
        if tls:
            cert, key = tls
            with open(cert, "rb") as f:
                chain = f.read()
            with open(key, "rb") as f:
                pkey = f.read()
            creds = grpc.ssl_server_credentials([(pkey, chain)])
            self.port = self.server.add_secure_port("127.0.0.1:%d" % port, creds)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:%d" % port)
        if not self.port:
            raise RuntimeError("gRPC server could not bind")
        self.address = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(10)

    def _seen(self, context):
        with self._lock:
            self.peers.append(context.peer())
            self.metadata.append(tuple(context.invocation_metadata()))

    @staticmethod
    def _tag(context):
        for k, v in context.invocation_metadata():
            if k == "x-tag":
                return v
        return None

    def _echo(self, request, context):
        self._seen(context)
        tag = self._tag(context)
        if tag is not None:
            context.send_initial_metadata((("x-tag-initial", tag),))
            context.set_trailing_metadata((("x-tag-trailing", tag),))
        if request.startswith(b"notfound"):
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        if request.startswith(b"size:"):
            return pattern(int(request[5:]))
        return b"echo:" + request

    def _count(self, request, context):
        self._seen(context)
        parts = request.split(b":")
        if parts[0] == b"big":
            for _ in range(int(parts[1])):
                yield pattern(int(parts[2]))
            return
        for i in range(int(parts[0])):
            yield b"item%d" % i
        if len(parts) > 1 and parts[1] == b"fail":
            context.abort(grpc.StatusCode.INTERNAL, "boom")

    def _sum(self, request_iterator, context):
        self._seen(context)
        h = hashlib.sha256()
        count = total = 0
        for m in request_iterator:
            count += 1
            total += len(m)
            h.update(m)
        return b"%d:%d:%s" % (count, total, h.hexdigest().encode())

    def _chat(self, request_iterator, context):
        self._seen(context)
        for m in request_iterator:
            yield b"re:" + m
