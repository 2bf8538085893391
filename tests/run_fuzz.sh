#!/bin/sh
# Runs each libFuzzer target for a bounded time, seeded with its corpus directory.
secs=$1; shift
fails=0
for f in "$@"; do
    name=$(basename "$f")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=build/fuzz/work-$name
    mkdir -p "$work"
    echo "fuzz: $name for ${secs}s"
    if ! "$f" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 "$work" ${corpus:+$( [ -d "$corpus" ] && echo "$corpus")} >build/fuzz/$name.log 2>&1; then
        tail -40 build/fuzz/$name.log
        fails=$((fails + 1))
    else
        grep -E 'stat::number_of_executed_units' build/fuzz/$name.log || true
    fi
done
echo "fuzz targets: $# run, $((${#} - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
