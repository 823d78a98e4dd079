#!/usr/bin/env bash
# make bench: every benchmark in full mode (about 90 minutes on 2 CPU cores, 36 of them the
# paper's claim); one JSON object each, saved under bench/results/, and the CAT-vs-CE plot
# copied to docs/. With --quick they only smoke-test (what CI does through tests/test_bench.py)
# and save nothing, so quick figures never replace measured ones.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
case " $* " in *" --quick "*) quick=true ;; esac
mkdir -p bench/results
for name in grading sft_overhead rl_overhead eval_throughput memory cat_vs_ce; do
    echo "== bench/$name.py $*" >&2
    if $quick; then
        python "bench/$name.py" "$@"
    else
        python "bench/$name.py" "$@" >"bench/results/$name.json.tmp"
        mv "bench/results/$name.json.tmp" "bench/results/$name.json"
        cat "bench/results/$name.json"
    fi
done
$quick || cp runs/cat_vs_ce/curves.png docs/cat_vs_ce.png
