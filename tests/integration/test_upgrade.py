"""Graceful restart to a new binary (issue 3, item 8): the new process takes over every
listening socket of the old one over a UNIX socket (SCM_RIGHTS); the old one drains and exits.
Under steady load of new connections, no connection may be refused and no request fail."""
import http.client
import os
import threading
import time

from conftest import free_port, proxy_config, wait_for


class ConnLoad:
    """Threads that each open a new connection per request (so a refused connect would show)."""

    def __init__(self, port, threads=4):
        self.port = port
        self.ok = 0
        self.failures = []
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.lock = threading.Lock()

    def _run(self):
        deadline = time.monotonic() + 60
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                c.request("GET", "/up", headers={"Connection": "close"})
                r = c.getresponse()
                r.read()
                c.close()
                with self.lock:
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failures.append("status %d" % r.status)
            except OSError as e:
                with self.lock:
                    self.failures.append(repr(e))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(20)


def test_binary_handover_refuses_nothing(make_portero, backend_factory, tmp_path):
    b = backend_factory("origin")
    port = free_port()
    sock = str(tmp_path / "upgrade.sock")
    cfg = proxy_config(port, [b], workers=2) + '\nadmin: { address: "off" }\n'
    old = make_portero(cfg, ports=[port], extra_args=("--upgrade-socket", sock))
    assert wait_for(lambda: os.path.exists(sock), 10), old.stderr_text()
    load = ConnLoad(port).start()
    try:
        assert wait_for(lambda: load.ok >= 100, 20), load.failures[:5]
        new = make_portero(cfg, ports=[port], extra_args=("--takeover", sock, "--upgrade-socket", sock))
        # the old process hands over, drains and exits on its own, with status 0
        assert old.wait(timeout=30) == 0, old.stderr_text()
        assert "handed over" in old.stderr_text()
        served_after = load.ok
        assert wait_for(lambda: load.ok >= served_after + 100, 20), load.failures[:5]
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    assert new.running()
    # the new process is itself upgradable: it made its own upgrade socket at the same path
    assert os.path.exists(sock)


def test_takeover_of_a_missing_socket_fails_cleanly(make_portero, backend_factory, tmp_path):
    b = backend_factory("origin")
    port = free_port()
    cfg = proxy_config(port, [b]) + '\nadmin: { address: "off" }\n'
    p = make_portero(cfg, expect_start=False, extra_args=("--takeover", str(tmp_path / "nobody.sock")))
    assert p.wait(timeout=15) == 1
    assert "--takeover" in p.stderr_text()
