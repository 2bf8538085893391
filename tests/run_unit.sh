#!/bin/sh
# Runs each unit test binary; prints a total and fails if any failed.
fails=0
for t in "$@"; do
    "$t" || fails=$((fails + 1))
done
echo "unit binaries: $# run, $fails failed"
[ "$fails" -eq 0 ]
