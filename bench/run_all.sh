#!/usr/bin/env bash
# make bench: every benchmark in full mode; one JSON object each, saved under bench/results/.
# Pass --quick to smoke-test them in seconds (what CI does through tests/test_bench.py).
# cat_vs_ce (the paper's claim, small) takes about 35 minutes; its plot is copied to docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
for name in grading sft_overhead rl_overhead eval_throughput memory cat_vs_ce; do
    echo "== bench/$name.py $*" >&2
    python "bench/$name.py" "$@" | tee "bench/results/$name.json.tmp"
    mv "bench/results/$name.json.tmp" "bench/results/$name.json"
done
case " $* " in *" --quick "*) ;; *) cp runs/cat_vs_ce/curves.png docs/cat_vs_ce.png ;; esac
