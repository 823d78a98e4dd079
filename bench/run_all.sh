#!/usr/bin/env bash
# make bench: every benchmark in full mode, one JSON object each, saved under bench/results/,
# and the plots copied to docs/. On 2 CPU cores: about 90 minutes for the first six, many hours
# for claim (issues 15 and 25: three parts over 3-5 seeds), about 3 h or more for math_baseline
# (needs `make qwen`);
# grading and math_baseline read ../shared/data/math and are skipped with a line without it.
# Each resumes where a stopped run left off. With --quick they only smoke-test (what CI does
# through tests/test_bench.py) and save nothing, so quick figures never replace measured ones.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
case " $* " in *" --quick "*) quick=true ;; esac
math=../shared/data/math/train.jsonl
reads_math() { [ "$1" = grading ] || { [ "$1" = math_baseline ] && ! $quick; }; }
mkdir -p bench/results
for name in grading sft_overhead rl_overhead eval_throughput memory cat_vs_ce claim math_baseline; do
    if reads_math "$name" && [ ! -e "$math" ]; then
        echo "== bench/$name.py skipped: needs $math" >&2
        continue
    fi
    echo "== bench/$name.py $*" >&2
    if $quick; then
        python "bench/$name.py" "$@"
    else
        python "bench/$name.py" "$@" >"bench/results/$name.json.tmp"
        mv "bench/results/$name.json.tmp" "bench/results/$name.json"
        cat "bench/results/$name.json"
    fi
done
if ! $quick; then
    cp runs/cat_vs_ce/curves.png docs/cat_vs_ce.png
    cp runs/claim/sft_curves.png docs/claim_sft.png
    cp runs/claim/rl_curves.png docs/claim_rl.png
    cp runs/claim/solution_curves.png docs/claim_solution.png
    card=bench/results/math_baseline_run_2048/card  # the run at the default --max-new-tokens
    [ ! -e $card/curves.png ] || cp $card/curves.png docs/math_baseline.png
fi
