"""Per-route authentication (issue 6, item 4): HTTP Basic against a users file (bcrypt and
SHA-crypt), JWT bearer tokens (RS256, ES256, HS256; PEM key files, secret files, JWK Sets with
kid selection) with claims mapped to request headers, and forward auth to an outside service.

Every refusal is checked twice: the client sees the right status and challenge, and the backend
(which echoes what it received) saw nothing. Identity headers are checked at the backend too:
a client's own copy never gets through. Startup, `-t` and SIGHUP reloads refuse a config whose
users or key file is missing, naming the file; a refused reload leaves the old config serving."""

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import re
import signal
import subprocess
import threading
import time
import warnings

with warnings.catch_warnings():   # crypt is deprecated (removed in 3.13), Debian 12 has 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import PORTERO_BIN, RawConn, free_port, proxy_config, wait_for

ISSUER = "https://issuer.test"
AUDIENCE = "api"


# --- helpers --------------------------------------------------------------------------------------

def _url(port, path):
    return "http://127.0.0.1:%d%s" % (port, path)


def _basic(user, password):
    """An Authorization value with UTF-8 credentials (requests would encode them as Latin-1)."""
    raw = ("%s:%s" % (user, password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _claims(**extra):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300,
         "sub": "alice", "email": "alice@example.test"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def _get(port, path, token=None, headers=None, **kw):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    return requests.get(_url(port, path), headers=h, timeout=15, allow_redirects=False, **kw)


def _assert_bearer_refused(r, error=True, what=""):
    assert r.status_code == 401, (what, r.status_code, r.text)
    challenge = r.headers.get("WWW-Authenticate", "")
    assert challenge.startswith('Bearer realm="'), (what, challenge)
    assert ('error="invalid_token"' in challenge) == error, (what, challenge)


@pytest.fixture(scope="module")
def keys():
    """Signing keys made once for the module (RSA generation takes a moment)."""
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_other": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
        "ec_other": ec.generate_private_key(ec.SECP256R1()),
        "secret": b"s3cr3t-for-hs256-with-more-than-32-bytes!",
    }


# --- Basic ----------------------------------------------------------------------------------------

def _users_file(path, users):
    """Writes "user:hash" lines; USERS maps a name to (password, crypt method)."""
    lines = ["# made by test_auth.py", ""]
    for name, (password, method) in users.items():
        if method.startswith("bcrypt"):
            salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)   # cost 04: fast tests
        else:
            salt = crypt.mksalt(crypt.METHOD_SHA512, rounds=1000)
        h = crypt.crypt(password, salt)
        assert h and h.startswith(("$2b$04$", "$6$rounds=1000$")), h
        if method == "bcrypt-2y":                                  # what `htpasswd -B` writes
            h = "$2y$" + h[4:]
        lines.append("%s:%s" % (name, h))
    path.write_text("\n".join(lines) + "\n")


BASIC_USERS = {"alice": ("wonderland", "bcrypt"), "yves": ("saint-laurent", "bcrypt-2y"),
               "bob": ("s3cret", "sha512"), "carol": ("pa:ss wörd", "bcrypt")}


def _basic_portero(make_portero, backend, tmp_path, users=None, admin_port=None):
    users_path = tmp_path / "htpasswd"
    _users_file(users_path, users or BASIC_USERS)
    port = free_port()
    routes = ('  - match: { path_prefix: /basic }\n    upstream: app\n'
              '    auth: { basic: { realm: "Staff", users_file: "%s" } }\n'
              '  - match: { path_prefix: / }\n    upstream: app\n') % users_path
    extra = 'admin: { address: "127.0.0.1:%d" }' % admin_port if admin_port else ""
    ports = [port, admin_port] if admin_port else [port]
    p = make_portero(proxy_config(port, [backend], routes=routes, extra=extra), ports=ports)
    return p, port, users_path


def _auth_failed_total(admin_port):
    text = requests.get(_url(admin_port, "/metrics"), timeout=15).text
    m = re.search(r"^portero_auth_failed_total (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def test_basic_refusals_challenge_and_reach_nothing(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    admin_port = free_port()
    _, port, _ = _basic_portero(make_portero, b, tmp_path, admin_port=admin_port)
    assert wait_for(lambda: _auth_failed_total(admin_port) == 0)
    cases = [
        None,                                       # no credentials
        _basic("alice", "Wonderland"),              # wrong password (case matters)
        _basic("alice", "wonderland "),             # wrong password (trailing space)
        _basic("mallory", "wonderland"),            # unknown user, a known user's password
        _basic("bob", "wonderland"),                # another user's password
        _basic("alice", ""),                        # empty password
        "Basic " + base64.b64encode(b"alicewonderland").decode(),   # no colon
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"alice:wonderland").decode().rstrip("="),  # unpadded
        "Bearer " + base64.b64encode(b"alice:wonderland").decode(),  # other scheme
    ]
    for value in cases:
        headers = {"Authorization": value} if value is not None else {}
        r = requests.get(_url(port, "/basic/x"), headers=headers, timeout=15)
        assert r.status_code == 401, (value, r.status_code)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="Staff", charset="UTF-8"', value
    assert b.request_count() == 0
    assert wait_for(lambda: _auth_failed_total(admin_port) == len(cases))
    # the route without auth is not affected
    assert requests.get(_url(port, "/open"), timeout=15).status_code == 200
    assert b.request_count() == 1


def test_basic_valid_credentials_pass_for_every_hash_scheme(make_portero, backend_factory,
                                                            tmp_path):
    b = backend_factory()
    _, port, _ = _basic_portero(make_portero, b, tmp_path)
    for user, (password, _method) in BASIC_USERS.items():
        r = requests.get(_url(port, "/basic/" + user), headers={"Authorization": _basic(user, password)},
                         timeout=15)
        assert r.status_code == 200, (user, r.status_code, r.headers)
        assert r.json()["path"] == "/basic/" + user
    assert b.request_count() == len(BASIC_USERS)
    # the scheme name is case-insensitive (RFC 9110 §11.1)
    value = "bASIC " + _basic("alice", "wonderland")[6:]
    assert requests.get(_url(port, "/basic/ci"), headers={"Authorization": value},
                        timeout=15).status_code == 200
    # requests' own auth and curl -u (Latin-1 = ASCII here)
    assert requests.get(_url(port, "/basic/req"), auth=("bob", "s3cret"), timeout=15).status_code == 200
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "15",
                          "-u", "alice:wonderland", _url(port, "/basic/curl")],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "200"
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "15",
                          "-u", "alice:wrong", _url(port, "/basic/curl")],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout == "401"
    assert [r["target"] for r in b.requests[-3:]] == ["/basic/ci", "/basic/req", "/basic/curl"]


def test_basic_cached_credentials_do_not_admit_a_wrong_password(make_portero, backend_factory,
                                                                tmp_path):
    """Verified credentials are remembered; the memory must be of the password, not the user."""
    b = backend_factory()
    _, port, _ = _basic_portero(make_portero, b, tmp_path)
    good = {"Authorization": _basic("alice", "wonderland")}
    for _ in range(3):
        assert requests.get(_url(port, "/basic/a"), headers=good, timeout=15).status_code == 200
    for bad in (_basic("alice", "wonderlan"), _basic("alice", "wonderland!"), _basic("alic", "wonderland")):
        assert requests.get(_url(port, "/basic/a"), headers={"Authorization": bad},
                            timeout=15).status_code == 401
    assert b.request_count() == 3


def test_basic_password_hashing_does_not_stall_the_worker(make_portero, backend_factory, tmp_path):
    """bcrypt at cost 13 (~0.5 s a check here) runs on the offload pool: with one worker busy
    refusing a burst of wrong passwords, a plain route on that worker still answers at once, and
    every wrong password still gets its 401."""
    b = backend_factory()
    users = tmp_path / "htpasswd"
    users.write_text("dave:%s\n" % crypt.crypt("correct horse", crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 13)))
    port = free_port()
    routes = ('  - match: { path_prefix: /basic }\n    upstream: app\n'
              '    auth: { basic: { realm: "Staff", users_file: "%s" } }\n'
              '  - match: { path_prefix: / }\n    upstream: app\n') % users
    make_portero(proxy_config(port, [b], routes=routes, workers=1), ports=[port])
    results = []

    def wrong(i):
        r = requests.get(_url(port, "/basic/x"), headers={"Authorization": _basic("dave", "guess%d" % i)},
                         timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=wrong, args=(i,)) for i in range(6)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.2)  # the hashes are under way
    plain = requests.get(_url(port, "/plain"), timeout=60)
    plain_at = time.monotonic() - t0
    for t in threads:
        t.join(90)
    all_done = time.monotonic() - t0
    assert plain.status_code == 200
    assert results == [401] * 6
    # the plain request did not queue behind six hashes on the worker's loop
    assert plain_at < all_done / 2, (plain_at, all_done)
    ok = requests.get(_url(port, "/basic/x"), headers={"Authorization": _basic("dave", "correct horse")},
                      timeout=60)
    assert ok.status_code == 200


# --- JWT ------------------------------------------------------------------------------------------

JWT_CLAIMS = "claims: { sub: X-User, email: X-Email }"


def _jwt_route(prefix, body):
    return ("  - match: { path_prefix: %s }\n    upstream: app\n    auth: { jwt: { %s } }\n"
            % (prefix, body))


def _jwt_portero(make_portero, backend, routes):
    port = free_port()
    routes += "  - match: { path_prefix: / }\n    upstream: app\n"
    make_portero(proxy_config(port, [backend], routes=routes), ports=[port])
    return port


def test_jwt_rs256_key_file_checks_every_rule(make_portero, backend_factory, tmp_path, keys):
    b = backend_factory()
    key_path = tmp_path / "rs.pem"
    key_path.write_bytes(_pem_public(keys["rsa"]))
    port = _jwt_portero(make_portero, b, _jwt_route(
        "/jwt", 'key_file: "%s", algorithms: [RS256], issuer: "%s", audience: %s, leeway: 30s, %s'
        % (key_path, ISSUER, AUDIENCE, JWT_CLAIMS)))
    rsa_key, now = keys["rsa"], int(time.time())

    def rs(claims, key=rsa_key, **kw):
        return jwt.encode(claims, key, algorithm="RS256", **kw)

    good = rs(_claims())
    h, p, s = good.split(".")
    forged_payload = _b64url(json.dumps(_claims(sub="admin")).encode())
    none_header = _b64url(b'{"alg":"none","typ":"JWT"}')
    refused = {
        "expired": rs(_claims(exp=now - 120)),
        "not yet valid": rs(_claims(nbf=now + 300)),
        "wrong issuer": rs(_claims(iss="https://evil.test")),
        "wrong audience": rs(_claims(aud="other")),
        "audience missing": rs(_claims(aud=None)),
        "other key": rs(_claims(), key=keys["rsa_other"]),
        "tampered payload": "%s.%s.%s" % (h, forged_payload, s),
        "tampered signature": "%s.%s.%s" % (h, p, s[:-6] + ("AAAAAA" if s[-6:] != "AAAAAA" else "BBBBBB")),
        "alg none, empty signature": "%s.%s." % (none_header, p),
        "alg none, some signature": "%s.%s.%s" % (none_header, p, s),
        "ES256 not allowed": jwt.encode(_claims(), keys["ec"], algorithm="ES256"),
        "HS256 not allowed": jwt.encode(_claims(), keys["secret"], algorithm="HS256"),
        "garbage": "not-a-token",
        "two parts": "%s.%s" % (h, p),
        "JWE-shaped": "%s.%s.%s.%s.%s" % (h, p, s, p, s),
    }
    for name, token in refused.items():
        _assert_bearer_refused(_get(port, "/jwt/x", token=token, headers={"X-User": "admin"}), what=name)
    # no token at all: a challenge without an error (RFC 6750 §3.1)
    _assert_bearer_refused(_get(port, "/jwt/x"), error=False)
    _assert_bearer_refused(_get(port, "/jwt/x", headers={"Authorization": _basic("a", "b")}), error=False)
    assert b.request_count() == 0

    # valid: the claims arrive as headers; the client's X-User is replaced, not joined
    r = _get(port, "/jwt/ok", token=good, headers={"X-User": "admin", "X-Email": "root@evil"})
    assert r.status_code == 200, r.headers
    got = r.json()["headers"]
    assert got["x-user"] == "alice"
    assert got["x-email"] == "alice@example.test"
    # within the leeway, and with aud as an array holding ours
    assert _get(port, "/jwt/ok", token=rs(_claims(exp=now - 5))).status_code == 200
    assert _get(port, "/jwt/ok", token=rs(_claims(nbf=now + 5))).status_code == 200
    assert _get(port, "/jwt/ok", token=rs(_claims(aud=["web", AUDIENCE]))).status_code == 200
    assert b.request_count() == 4


def test_jwt_client_identity_headers_are_stripped_without_claims(make_portero, backend_factory,
                                                                 tmp_path, keys):
    b = backend_factory()
    key_path = tmp_path / "rs.pem"
    key_path.write_bytes(_pem_public(keys["rsa"]))
    port = _jwt_portero(make_portero, b, _jwt_route(
        "/jwt", 'key_file: "%s", %s' % (key_path, JWT_CLAIMS)))
    token = jwt.encode(_claims(sub=None, email=None), keys["rsa"], algorithm="RS256")
    # every field of those names goes, however spelled (a raw connection sends all three)
    with RawConn(port) as c:
        c.request("GET", "/jwt/nosub", headers=[("X-User", "admin"), ("Authorization", "Bearer " + token),
                                                ("x-USER", "root"), ("X-Email", "a@b")])
        r = c.read_response()
    assert r.status == 200
    got = r.json()["headers"]
    assert "x-user" not in got and "x-email" not in got, got
    # the same client header on a route without auth passes untouched (the strip is the auth's)
    r = _get(port, "/open", headers={"X-User": "admin"})
    assert r.json()["headers"]["x-user"] == "admin"


def test_jwt_refuses_hmac_signed_with_the_public_key(make_portero, backend_factory, tmp_path, keys):
    """RFC 8725 §2.1: with every algorithm allowed, an HS256 token whose secret is the RSA
    public key's PEM text must not pass."""
    b = backend_factory()
    pem = _pem_public(keys["rsa"])
    key_path = tmp_path / "rs.pem"
    key_path.write_bytes(pem)
    port = _jwt_portero(make_portero, b, _jwt_route("/jwt", 'key_file: "%s"' % key_path))
    head = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64url(json.dumps(_claims()).encode())
    for secret in (pem, pem.strip()):
        sig = _b64url(hmac.new(secret, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest())
        _assert_bearer_refused(_get(port, "/jwt/x", token="%s.%s.%s" % (head, body, sig)))
    assert b.request_count() == 0
    assert _get(port, "/jwt/x", token=jwt.encode(_claims(), keys["rsa"], algorithm="RS256")).status_code == 200


def test_jwt_es256_and_hs256_key_files(make_portero, backend_factory, tmp_path, keys):
    b = backend_factory()
    ec_path, secret_path = tmp_path / "ec.pem", tmp_path / "hs.secret"
    ec_path.write_bytes(_pem_public(keys["ec"]))
    secret_path.write_bytes(keys["secret"] + b"\n")     # one trailing newline is not the secret's
    routes = (_jwt_route("/es", 'key_file: "%s", algorithms: [ES256], %s' % (ec_path, JWT_CLAIMS)) +
              _jwt_route("/hs", 'key_file: "%s", algorithms: [HS256], %s' % (secret_path, JWT_CLAIMS)))
    port = _jwt_portero(make_portero, b, routes)
    es_good = jwt.encode(_claims(sub="erin"), keys["ec"], algorithm="ES256")
    hs_good = jwt.encode(_claims(sub="hank"), keys["secret"], algorithm="HS256")
    refused = [
        ("/es", jwt.encode(_claims(), keys["ec_other"], algorithm="ES256")),
        ("/es", hs_good),
        ("/es", jwt.encode(_claims(exp=int(time.time()) - 3600), keys["ec"], algorithm="ES256")),
        ("/hs", jwt.encode(_claims(), keys["secret"] + b"\n", algorithm="HS256")),
        ("/hs", jwt.encode(_claims(), keys["secret"][:-1], algorithm="HS256")),
        ("/hs", es_good),
    ]
    for path, token in refused:
        _assert_bearer_refused(_get(port, path, token=token))
    assert b.request_count() == 0
    r = _get(port, "/es/a", token=es_good)
    assert r.status_code == 200 and r.json()["headers"]["x-user"] == "erin"
    r = _get(port, "/hs/a", token=hs_good)
    assert r.status_code == 200 and r.json()["headers"]["x-user"] == "hank"


def _self_signed(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_jwt_key_file_may_be_a_certificate(make_portero, backend_factory, tmp_path, keys):
    b = backend_factory()
    cert_path = tmp_path / "issuer.crt"
    cert_path.write_bytes(_self_signed(keys["rsa"]))
    port = _jwt_portero(make_portero, b, _jwt_route("/jwt", 'key_file: "%s", %s' % (cert_path, JWT_CLAIMS)))
    r = _get(port, "/jwt/a", token=jwt.encode(_claims(sub="cert"), keys["rsa"], algorithm="RS256"))
    assert r.status_code == 200 and r.json()["headers"]["x-user"] == "cert"
    _assert_bearer_refused(_get(port, "/jwt/a", token=jwt.encode(_claims(), keys["rsa_other"],
                                                                 algorithm="RS256")))
    assert b.request_count() == 1


def _hs_token(secret, payload_bytes, header=b'{"alg":"HS256","typ":"JWT"}'):
    """A token over exact JSON bytes (PyJWT would re-encode them)."""
    signing_input = "%s.%s" % (_b64url(header), _b64url(payload_bytes))
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return "%s.%s" % (signing_input, _b64url(sig))


def test_jwt_claims_are_read_as_json(make_portero, backend_factory, tmp_path, keys):
    """Claims are JSON (RFC 7519 §7.2 step 10): every JSON spelling of a value is understood, and
    what only YAML would read is refused although correctly signed."""
    b = backend_factory()
    secret_path = tmp_path / "hs.secret"
    secret_path.write_bytes(keys["secret"])
    port = _jwt_portero(make_portero, b, _jwt_route(
        "/jwt", 'key_file: "%s", issuer: "%s", %s' % (secret_path, ISSUER, JWT_CLAIMS)))
    # PyJWT escapes non-ASCII: U+1F600 travels as the surrogate pair \ud83d\ude00
    token = jwt.encode(_claims(sub="\U0001F600 jos\u00e9"), keys["secret"], algorithm="HS256")
    assert "\\ud83d\\ude00" in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()
    r = _get(port, "/jwt/emoji", token=token)
    assert r.status_code == 200, r.headers.get("WWW-Authenticate")
    # the backend reads header bytes as Latin-1: re-encode to compare the UTF-8 that arrived
    assert r.json()["headers"]["x-user"].encode("latin-1").decode("utf-8") == "\U0001F600 jos\u00e9"
    exp = int(time.time()) + 300
    spelled = b'{ "sub" : "a\\/b\\u0041" ,\n\t"iss": "https:\\/\\/issuer.test", "exp": %d.0 }' % exp
    r = _get(port, "/jwt/spelled", token=_hs_token(keys["secret"], spelled))
    assert r.status_code == 200, r.headers.get("WWW-Authenticate")
    assert r.json()["headers"]["x-user"] == "a/bA"

    iss = b'"iss":"https://issuer.test","exp":%d' % exp
    not_json = {
        "single quotes": b"{'sub':'admin'," + iss + b"}",
        "trailing comma": b'{"sub":"admin",' + iss + b",}",
        "YAML tag": b'{"sub":!!str "admin",' + iss + b"}",
        "YAML anchor": b'{"sub":&a "admin",' + iss + b"}",
        "comment": b'{"sub":"admin", # hi\n' + iss + b"}",
        "YAML escape": b'{"sub":"\\x41dmin",' + iss + b"}",
        "lone surrogate": b'{"sub":"\\ud83d",' + iss + b"}",
        "raw tab in a string": b'{"sub":"ad\tmin",' + iss + b"}",
        "second document": b'{"sub":"admin",' + iss + b"}\n---\n{}",
        "duplicate claim": b'{"sub":"alice","sub":"admin",' + iss + b"}",
        "duplicate, escaped": b'{"sub":"alice","s\\u0075b":"admin",' + iss + b"}",
        "CR LF in a mapped claim": b'{"sub":"alice\\r\\nX-Admin: 1",' + iss + b"}",
    }
    for name, payload in not_json.items():
        _assert_bearer_refused(_get(port, "/jwt/x", token=_hs_token(keys["secret"], payload)), what=name)
    assert b.request_count() == 2


def test_jwks_selects_the_key_by_kid(make_portero, backend_factory, tmp_path, keys):
    b = backend_factory()
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["rsa"].public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys["ec"].public_key()))
    rsa_jwk.update(kid="k-rsa", use="sig")
    ec_jwk.update(kid="k-ec", alg="ES256")
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    port = _jwt_portero(make_portero, b, _jwt_route(
        "/jwt", 'jwks_file: "%s", issuer: "%s", %s' % (jwks_path, ISSUER, JWT_CLAIMS)))

    def tok(key, alg, kid, **claims):
        headers = {"kid": kid} if kid else None
        return jwt.encode(_claims(**claims), keys[key], algorithm=alg, headers=headers)

    accepted = [tok("rsa", "RS256", "k-rsa", sub="rita"), tok("ec", "ES256", "k-ec", sub="eve"),
                tok("ec", "ES256", None, sub="noid")]
    for token, sub in zip(accepted, ("rita", "eve", "noid")):
        r = _get(port, "/jwt/ok", token=token)
        assert r.status_code == 200, sub
        assert r.json()["headers"]["x-user"] == sub
    refused = [
        tok("rsa", "RS256", "k-ec"),            # right key, but the kid names the EC key
        tok("ec", "ES256", "k-rsa"),
        tok("rsa", "RS256", "k-unknown"),       # no key of that id (and none without an id)
        tok("rsa_other", "RS256", "k-rsa"),     # the id of a key it was not signed with
        tok("ec", "ES256", "k-ec", iss="https://evil.test"),
    ]
    for token in refused:
        _assert_bearer_refused(_get(port, "/jwt/x", token=token))
    assert b.request_count() == len(accepted)


# --- forward auth ---------------------------------------------------------------------------------

class AuthService:
    """A threaded HTTP auth service deciding by the Authorization header it is sent:
    Bearer good -> 200 + X-User: alice (but 403 for an X-Forwarded-Uri under /fwd/admin); anon -> 200 without X-User; redirect -> 302 + Location;
    forbidden -> 403; broken -> 500; hold -> waits until released (or 20 s), then 200;
    anything else -> 401 + WWW-Authenticate. Records each request's path and headers."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with service.lock:
                    service.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                             "header_names": [n.lower() for n in self.headers.keys()]})
                auth = self.headers.get("Authorization", "")
                if auth == "Bearer hold":
                    service.release.wait(20)
                    auth = "Bearer good"
                if self.headers.get("X-Forwarded-Uri", "").startswith("/fwd/admin"):
                    auth = "Bearer forbidden" if auth == "Bearer good" else auth
                answers = {
                    "Bearer good": (200, [("X-User", "alice"), ("X-Ignored", "1")], b""),
                    "Bearer anon": (200, [], b"ok"),
                    "Bearer redirect": (302, [("Location", "https://login.test/?next=%2Ffwd")], b""),
                    "Bearer forbidden": (403, [], b"no"),
                    "Bearer broken": (500, [], b"oops"),
                }
                status, headers, body = answers.get(
                    auth, (401, [("WWW-Authenticate", 'Bearer realm="fwd-test"')], b"denied"))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, auth=None):
        with self.lock:
            return sum(1 for r in self.requests
                       if auth is None or r["headers"].get("Authorization") == "Bearer " + auth)

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def auth_service():
    s = AuthService()
    yield s
    s.stop()


def _fwd_route(prefix, address, timeout="2s", extra=""):
    return ('  - match: { path_prefix: %s }\n    upstream: app\n'
            '    auth: { forward: { address: "%s", path: /check, timeout: %s%s } }\n'
            % (prefix, address, timeout, extra))


def _fwd_portero(make_portero, backend, routes):
    port = free_port()
    routes += "  - match: { path_prefix: / }\n    upstream: app\n"
    make_portero(proxy_config(port, [backend], routes=routes), ports=[port])
    return port


FWD_HEADERS = ", request_headers: [Authorization, Cookie], response_headers: [X-User]"


def test_forward_auth_passes_the_services_answer(make_portero, backend_factory, auth_service):
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port,
                                                    extra=FWD_HEADERS))
    r = _get(port, "/fwd/x", headers={"X-User": "admin"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="fwd-test"'
    r = _get(port, "/fwd/x", token="redirect")
    assert r.status_code == 302
    assert r.headers["Location"] == "https://login.test/?next=%2Ffwd"
    assert _get(port, "/fwd/x", token="forbidden").status_code == 403
    assert _get(port, "/fwd/x", token="broken").status_code == 503
    assert b.request_count() == 0
    assert auth_service.count() == 4

    r = _get(port, "/fwd/ok", token="good", headers={"X-User": "admin"})
    assert r.status_code == 200
    got = r.json()["headers"]
    assert got["x-user"] == "alice"                   # the service's, not the client's
    assert "x-ignored" not in got                     # not in response_headers
    r = _get(port, "/fwd/anon", token="anon", headers={"X-User": "admin"})
    assert r.status_code == 200
    assert "x-user" not in r.json()["headers"]        # the service named nobody: nothing passes
    assert [q["target"] for q in b.requests] == ["/fwd/ok", "/fwd/anon"]


def test_forward_auth_request_carries_the_original_request(make_portero, backend_factory,
                                                           auth_service):
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port,
                                                    extra=FWD_HEADERS))
    body = b"z" * 100000
    r = requests.post(_url(port, "/fwd/items?id=7&x=%20y"), data=body, timeout=15,
                      headers={"Authorization": "Bearer good", "Cookie": "sid=abc",
                               "X-Secret-Header": "not for the auth service",
                               "X-Forwarded-Uri": "/public", "X-Forwarded-Method": "GET"})
    assert r.status_code == 200
    assert r.json()["method"] == "POST"
    assert r.json()["body_len"] == len(body)          # the body waited for the verdict intact
    assert r.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    sent = auth_service.requests[-1]
    assert sent["path"] == "/check"
    h = sent["headers"]
    assert h["X-Forwarded-Method"] == "POST"
    assert h["X-Forwarded-Uri"] == "/fwd/items?id=7&x=%20y"
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Host"] == "127.0.0.1:%d" % port
    assert h["Authorization"] == "Bearer good" and h["Cookie"] == "sid=abc"
    names = sent["header_names"]
    assert "x-secret-header" not in names             # only request_headers are sent
    assert names.count("x-forwarded-uri") == 1 and names.count("x-forwarded-method") == 1
    assert "content-length" not in names and "transfer-encoding" not in names


def test_forward_auth_judges_the_path_the_backend_serves(make_portero, backend_factory,
                                                         auth_service):
    """The service decides by X-Forwarded-Uri: it must be the path the backend will serve, not
    a spelling of it the service cannot see through."""
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port,
                                                    extra=FWD_HEADERS))
    assert _get(port, "/fwd/admin/panel", token="good").status_code == 403
    sneaky = ["/fwd/public/../admin/panel", "/fwd/./admin/panel", "//fwd//admin/panel",
              "/fwd/public/%2e%2e/admin/panel", "http://127.0.0.1:%d/fwd/admin/panel" % port]
    for target in sneaky:
        with RawConn(port) as c:
            c.request("GET", target, headers=[("Authorization", "Bearer good")],
                      host="127.0.0.1:%d" % port)
            r = c.read_response()
        assert r.status == 403, (target, r.status)
        assert auth_service.requests[-1]["headers"]["X-Forwarded-Uri"] == "/fwd/admin/panel", target
    assert b.request_count() == 0
    with RawConn(port) as c:
        c.request("GET", "/fwd/admin/../public?q=1", headers=[("Authorization", "Bearer good")])
        r = c.read_response()
    assert r.status == 200
    assert auth_service.requests[-1]["headers"]["X-Forwarded-Uri"] == "/fwd/public?q=1"
    assert [q["target"] for q in b.requests] == ["/fwd/public?q=1"]


def test_forward_auth_default_sends_all_client_headers(make_portero, backend_factory, auth_service):
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port))
    r = _get(port, "/fwd/x", token="good", headers={"X-Tenant": "t1", "X-Forwarded-For": "6.6.6.6"})
    assert r.status_code == 200
    h = auth_service.requests[-1]["headers"]
    assert h["X-Tenant"] == "t1"
    assert h["X-Forwarded-For"] == "127.0.0.1"        # the client's own claim is not passed on


def test_forward_auth_down_or_slow_is_503(make_portero, backend_factory, auth_service):
    b = backend_factory()
    dead = free_port()                                # nothing listens there
    routes = (_fwd_route("/down", "127.0.0.1:%d" % dead) +
              _fwd_route("/slow", "127.0.0.1:%d" % auth_service.port, timeout="1s"))
    port = _fwd_portero(make_portero, b, routes)
    assert _get(port, "/down/x", token="good").status_code == 503
    start = time.monotonic()
    r = _get(port, "/slow/x", token="hold")
    elapsed = time.monotonic() - start
    assert r.status_code == 503
    assert elapsed < 10, elapsed                      # the service would have held 20 s
    assert auth_service.count("hold") == 1
    assert b.request_count() == 0
    auth_service.release.set()
    assert _get(port, "/slow/x", token="good").status_code == 200


def test_pending_forward_auth_does_not_block_the_worker(make_portero, backend_factory, auth_service):
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port,
                                                    timeout="30s", extra=FWD_HEADERS))
    result = {}

    def held():
        result["r"] = _get(port, "/fwd/held", token="hold", headers={"X-User": "admin"})

    t = threading.Thread(target=held)
    t.start()
    try:
        assert wait_for(lambda: auth_service.count("hold") == 1, timeout=10)
        # one worker, its only client request waiting on the auth service: others still go on
        assert _get(port, "/open").status_code == 200
        r = _get(port, "/fwd/other", token="good")
        assert r.status_code == 200 and r.json()["headers"]["x-user"] == "alice"
        assert _get(port, "/fwd/other", token="nope").status_code == 401
        assert t.is_alive() and "r" not in result
    finally:
        auth_service.release.set()
        t.join(30)
    assert result["r"].status_code == 200
    assert result["r"].json()["headers"]["x-user"] == "alice"


def test_pipelined_requests_wait_for_a_pending_forward_auth(make_portero, backend_factory,
                                                            auth_service):
    b = backend_factory()
    port = _fwd_portero(make_portero, b, _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port,
                                                    timeout="30s", extra=FWD_HEADERS))
    reqs = [("/fwd/1", "hold"), ("/fwd/2", "good"), ("/fwd/3", "nope"), ("/open", "none")]
    c = RawConn(port, timeout=30)
    try:
        for i, (path, token) in enumerate(reqs):
            headers = [("Authorization", "Bearer " + token)]
            if i == len(reqs) - 1:
                headers.append(("Connection", "close"))
            c.request("GET", path, headers=headers)
        assert wait_for(lambda: auth_service.count("hold") == 1, timeout=10)
        assert b.request_count() == 0          # nothing overtakes the first request
        auth_service.release.set()
        answers = [c.read_response() for _ in reqs]
    finally:
        c.close()
    assert [a.status for a in answers] == [200, 200, 401, 200]
    assert [a.json()["path"] for a in answers if a.status == 200] == ["/fwd/1", "/fwd/2", "/open"]
    assert [q["target"] for q in b.requests] == ["/fwd/1", "/fwd/2", "/open"]


def test_reload_while_a_forward_auth_is_pending(make_portero, backend_factory, auth_service):
    """The pending sub-request belongs to the old configuration: a reload that drops its route
    lets it finish as it began (under ASan: without touching freed configuration)."""
    b = backend_factory()
    port = free_port()
    fwd = _fwd_route("/fwd", "127.0.0.1:%d" % auth_service.port, timeout="30s", extra=FWD_HEADERS)
    p = make_portero(proxy_config(port, [b], routes=fwd + "  - match: { path_prefix: / }\n"
                                                        "    upstream: app\n"), ports=[port])
    result = {}
    t = threading.Thread(target=lambda: result.update(r=_get(port, "/fwd/held", token="hold")))
    t.start()
    try:
        assert wait_for(lambda: auth_service.count("hold") == 1, timeout=10)
        p.config_path.write_text(proxy_config(port, [b], routes="  - match: { path_prefix: / }\n"
                                                               "    respond: { status: 200, body: \"new\\n\" }\n"))
        _sighup(p, "published")
        assert _get(port, "/fwd/x").text == "new\n"
    finally:
        auth_service.release.set()
        t.join(30)
    assert result["r"].status_code == 200
    assert result["r"].json()["headers"]["x-user"] == "alice"


# --- startup, -t and reload -----------------------------------------------------------------------

def _auth_config(port, backend, auth):
    routes = ("  - match: { path_prefix: /a }\n    upstream: app\n    auth: %s\n"
              "  - match: { path_prefix: / }\n    upstream: app\n") % auth
    return proxy_config(port, [backend], routes=routes)


def test_missing_auth_files_refuse_to_start(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    for auth in ('{ basic: { users_file: "%s" } }' % (tmp_path / "no-htpasswd"),
                 '{ jwt: { key_file: "%s" } }' % (tmp_path / "no-key.pem"),
                 '{ jwt: { jwks_file: "%s" } }' % (tmp_path / "no-jwks.json")):
        missing = auth.split('"')[1]
        p = make_portero(_auth_config(free_port(), b, auth), expect_start=False)
        assert p.wait(30) == 1, p.stderr_text()
        assert missing in p.stderr_text()
        assert "No such file" in p.stderr_text()


def test_check_mode_reads_the_auth_files(backend_factory, tmp_path, keys):
    b = backend_factory()
    cfg = tmp_path / "portero.yaml"
    users = tmp_path / "htpasswd"

    def check():
        return subprocess.run([PORTERO_BIN, "-t", "-c", str(cfg)], capture_output=True, text=True,
                              timeout=60)

    cfg.write_text(_auth_config(free_port(), b, '{ basic: { users_file: "%s" } }' % users))
    out = check()
    assert out.returncode == 1 and str(users) in out.stderr, out
    users.write_text("alice:$apr1$abcdefgh$0123456789012345678901\n")   # MD5: refused
    out = check()
    assert out.returncode == 1 and "%s:1:" % users in out.stderr and "MD5" in out.stderr, out
    _users_file(users, {"alice": ("pw", "bcrypt")})
    out = check()
    assert out.returncode == 0, out
    key = tmp_path / "short.secret"
    key.write_bytes(b"too short\n")
    cfg.write_text(_auth_config(free_port(), b, '{ jwt: { key_file: "%s" } }' % key))
    out = check()
    assert out.returncode == 1 and str(key) in out.stderr and "too short" in out.stderr, out
    # a private key is refused: the file should hold the public one
    key.write_bytes(keys["ec"].private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    out = check()
    assert out.returncode == 1 and str(key) in out.stderr and "private" in out.stderr, out


def _log_count(p, needle):
    return p.stderr_text().count(needle)


def _sighup(p, needle, timeout=20):
    """SIGHUP and wait for one more log line holding NEEDLE."""
    n = _log_count(p, needle)
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: _log_count(p, needle) > n, timeout=timeout), p.stderr_text()[-3000:]


def test_reload_with_a_missing_key_file_keeps_the_old_config(make_portero, backend_factory,
                                                             tmp_path, keys):
    b = backend_factory()
    port = free_port()
    key_path, new_key = tmp_path / "rs.pem", tmp_path / "next.pem"
    key_path.write_bytes(_pem_public(keys["rsa"]))
    p = make_portero(_auth_config(port, b, '{ jwt: { key_file: "%s", %s } }' % (key_path, JWT_CLAIMS)),
                     ports=[port])
    old_token = jwt.encode(_claims(), keys["rsa"], algorithm="RS256")
    new_token = jwt.encode(_claims(sub="newbie"), keys["rsa_other"], algorithm="RS256")
    assert _get(port, "/a", token=old_token).status_code == 200

    # the new config names a key file that does not exist yet: refused, the old one serves
    p.config_path.write_text(_auth_config(port, b, '{ jwt: { key_file: "%s", %s } }'
                                          % (new_key, JWT_CLAIMS)))
    _sighup(p, "rejected")
    assert wait_for(lambda: str(new_key) in p.stderr_text().split("rejected")[-1], timeout=5)
    r = _get(port, "/a", token=old_token)
    assert r.status_code == 200 and r.json()["headers"]["x-user"] == "alice"
    _assert_bearer_refused(_get(port, "/a", token=new_token))

    # once the file is there the same config is published and the new key rules
    new_key.write_bytes(_pem_public(keys["rsa_other"]))
    _sighup(p, "published")
    r = _get(port, "/a", token=new_token)
    assert r.status_code == 200 and r.json()["headers"]["x-user"] == "newbie"
    _assert_bearer_refused(_get(port, "/a", token=old_token))


def test_reload_reads_the_users_file_again(make_portero, backend_factory, tmp_path):
    b = backend_factory()
    p, port, users_path = _basic_portero(make_portero, b, tmp_path,
                                         users={"alice": ("wonderland", "bcrypt")})
    alice = {"Authorization": _basic("alice", "wonderland")}
    bob = {"Authorization": _basic("bob", "builder")}
    assert requests.get(_url(port, "/basic"), headers=alice, timeout=15).status_code == 200
    assert requests.get(_url(port, "/basic"), headers=bob, timeout=15).status_code == 401
    # the config is unchanged; the users file is not: alice's remembered login goes with it
    _users_file(users_path, {"bob": ("builder", "sha512")})
    _sighup(p, "published")
    assert requests.get(_url(port, "/basic"), headers=alice, timeout=15).status_code == 401
    assert requests.get(_url(port, "/basic"), headers=bob, timeout=15).status_code == 200
    # a users file broken later is refused on reload; bob keeps working
    users_path.write_text("bob:plaintext\n")
    _sighup(p, "rejected")
    assert wait_for(lambda: str(users_path) in p.stderr_text().split("rejected")[-1], timeout=5)
    assert requests.get(_url(port, "/basic"), headers=bob, timeout=15).status_code == 200
