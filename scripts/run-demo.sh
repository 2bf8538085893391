#!/bin/sh
# `make run`: two demo backends on 9001 and 9002, then portero in the foreground on :8080.
# Try: curl localhost:8080/   (run it twice: the answers alternate between backend-1 and backend-2)
cd "$(dirname "$0")/.."
/usr/bin/python3 scripts/demo_backend.py 9001 backend-1 & b1=$!
/usr/bin/python3 scripts/demo_backend.py 9002 backend-2 & b2=$!
trap 'kill $b1 $b2 2>/dev/null' EXIT INT TERM
echo "demo backends on 127.0.0.1:9001 and :9002; portero on :8080 (Ctrl-C to stop)"
build/portero -c examples/quickstart.yaml
