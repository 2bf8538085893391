"""testssl.sh against a TLS listener (issue 4, item 1 and Tests): no vulnerability, no weak
protocol or cipher offered, server cipher order.

Runs `testssl --quiet --color 0 --warnings off --jsonfile F -p -s -f -P -S -h -U` (protocols,
cipher categories, forward secrecy, server preferences, server defaults, HTTP headers,
vulnerabilities): about 40 s on the development VM, hence `slow`. Findings about the test
certificates themselves (a private CA, short validity, no OCSP/CRL URI) and about what the
backend should send (security headers) are not portero's and are left out of the verdict.
With TESTSSL_SAVE=1 the readable report is written to docs/tls-testssl.txt.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from admin_client import build_config, to_yaml, upstream
from conftest import REPO_ROOT, free_port
from tlsutil import all_certs, certs, tls_listener  # noqa: F401

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
# ids whose severity says something about the test PKI or the application, not about portero
NOT_OURS = ("cert_", "certs_", "engine_problem", "security_headers", "DNS_CAArecord",
            "banner_", "cookie_", "HTTP_", "HPKP")


@pytest.mark.slow
@pytest.mark.skipif(TESTSSL is None, reason="testssl (Debian package testssl.sh) not installed")
def test_testssl_clean(make_portero, backend_factory, certs, tmp_path):
    b = backend_factory()
    port = free_port()
    lst = tls_listener("tls", port, all_certs(certs, ocsp=True),
                       hsts={"max_age": "365d", "include_subdomains": True})
    cfg = build_config(port, {"app": upstream([b])})
    cfg["listeners"] = [lst]
    make_portero(to_yaml(cfg), ports=[port])
    out = tmp_path / "testssl.json"
    argv = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", str(out),
            "--ip", "127.0.0.1", "--nodns", "none", "--connect-timeout", "10",
            "--openssl-timeout", "10", "--add-ca", certs.ca, "-p", "-s", "-f", "-P", "-S", "-h", "-U",
            "https://a.test:%d/" % port]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    text = r.stdout + r.stderr
    assert out.exists(), text[-3000:]
    findings = json.loads(out.read_text())
    by_id = {f["id"]: f for f in findings}

    def finding(i):
        assert i in by_id, "testssl reported no %s:\n%s" % (i, text[-3000:])
        return by_id[i]["finding"]

    if os.environ.get("TESTSSL_SAVE") == "1":
        report = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout).replace(str(port), "PORT")
        dest = pathlib.Path(REPO_ROOT) / "docs" / "tls-testssl.txt"
        shown = " ".join(["testssl"] + argv[1:-1] + ["https://a.test:PORT/"])
        shown = shown.replace(str(out), "testssl.json").replace(certs.ca, "ca.pem")
        dest.write_text("$ " + shown + "\n" + report)

    assert "scanProblem" not in by_id, by_id.get("scanProblem")
    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert finding(proto).startswith("not offered"), (proto, by_id[proto])
    for proto in ("TLS1_2", "TLS1_3"):
        assert finding(proto).startswith("offered"), (proto, by_id[proto])
    for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                 "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):
        assert finding(weak).startswith("not offered"), (weak, by_id[weak])
    assert finding("cipher_order").startswith("server"), by_id["cipher_order"]
    assert finding("ALPN_HTTP2").startswith("h2"), by_id["ALPN_HTTP2"]
    assert by_id.get("HSTS_time", {}).get("severity") == "OK", by_id.get("HSTS_time")
    assert finding("HSTS_subdomains").startswith("includes"), by_id["HSTS_subdomains"]
    # the a.test RSA certificate has an OCSP response to staple
    ocsp = [f["finding"] for f in findings if f["id"].startswith("OCSP_stapling")]
    assert any(x.startswith("offered") for x in ocsp), ocsp
    bad = [f for f in findings if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL")
           and not f["id"].startswith(NOT_OURS)]
    assert not bad, "testssl findings:\n%s\n\n%s" % (
        "\n".join("%s %s: %s" % (f["severity"], f["id"], f["finding"]) for f in bad),
        text[-4000:])
