#!/bin/sh
# Installs, only when missing, the Debian packages that build, tests and benchmark need.
set -e
PKGS="build-essential pkg-config clang libclang-rt-14-dev libyaml-dev libpcre2-dev curl
libssl-dev libcrypt-dev libhiredis-dev libmodsecurity-dev modsecurity-crs
python3 python3-pytest python3-requests python3-websockets python3-jwt python3-cryptography
redis-server slowhttptest nginx haproxy wrk procps
libnghttp2-dev nghttp2-client python3-h2 python3-grpcio h2o testssl.sh bsdextrautils
zlib1g-dev libbrotli-dev libzstd-dev brotli zstd python3-brotli python3-zstandard varnish openssl"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $missing
