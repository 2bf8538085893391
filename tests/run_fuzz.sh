#!/bin/sh
# Runs each libFuzzer target for SECONDS, seeded with tests/fuzz/corpus/<name> (every input kept
# there, regress-* included, is replayed first, so an old crash fails at once).
#
#   tests/run_fuzz.sh SECONDS TARGET...
#
# FUZZ_JOBS targets run at once (default: the number of CPUs): each target is single-threaded,
# so on 2 cores 11 targets at 30 s take about 3 minutes. New inputs go to build/fuzz/work-<name>,
# never into the seed corpus; a crashing input is written as build/fuzz/<name>-crash-* and its
# log tail is printed.
secs=$1
shift
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
mkdir -p build/fuzz

# One target, its outcome left in build/fuzz/<name>.rc for the summary.
run_one() {
    name=$(basename "$1")
    corpus=tests/fuzz/corpus/${name#fuzz_}
    work=build/fuzz/work-$name
    mkdir -p "$work"
    touch "build/fuzz/$name.start"
    set -- "$1" -max_total_time="$secs" -timeout=60 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build/fuzz/$name-" "$work"
    [ -d "$corpus" ] && set -- "$@" "$corpus"
    # The hard stop covers a hang outside libFuzzer's own clock (start-up, corpus loading).
    timeout $((secs + 120)) "$@" >"build/fuzz/$name.log" 2>&1
    echo $? >"build/fuzz/$name.rc"
}

# Lane I of JOBS runs targets I, I+JOBS, I+2*JOBS, ... one after the other.
run_lane() {
    lane=$1
    shift
    i=0
    for f in "$@"; do
        [ $((i % jobs)) -eq "$lane" ] && run_one "$f"
        i=$((i + 1))
    done
}

echo "fuzz: $# targets, ${secs}s each, $jobs at a time"
lane=0
while [ "$lane" -lt "$jobs" ]; do
    run_lane "$lane" "$@" &
    lane=$((lane + 1))
done
wait

fails=0
for f in "$@"; do
    name=$(basename "$f")
    rc=$(cat "build/fuzz/$name.rc" 2>/dev/null || echo missing)
    if [ "$rc" = 0 ]; then
        printf '%s: ok, %s\n' "$name" \
            "$(grep -E 'stat::number_of_executed_units' "build/fuzz/$name.log" | tr -s ' ')"
    else
        echo "$name: FAILED (exit $rc), log build/fuzz/$name.log:"
        tail -40 "build/fuzz/$name.log"
        find build/fuzz -maxdepth 1 -name "$name-*" -newer "build/fuzz/$name.start" |
            sed 's/^/  crashing input (copy it to its corpus as regress-*): /'
        fails=$((fails + 1))
    fi
done
echo "fuzz targets: $# run, $(($# - fails)) passed, $fails failed"
[ "$fails" -eq 0 ]
