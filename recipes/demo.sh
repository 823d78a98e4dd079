#!/usr/bin/env bash
# What catcli is for, on the embedded model (recipes/demo.toml): from one CE warm-up, a CE branch
# and a CAT pass@16 branch train on the same 24 problems for the same 50 steps, side by side (one
# core each), each evaluated on the same held-apart problems every 25 steps as it trains. Then the
# curves against the step, the weights CAT trained with, and a paired compare at each step; the
# last line gives CAT - CE on pass@32 with its CI and says whether the CI excludes 0.
# About 10 minutes on 2 idle CPU cores. Stops at the first failure; re-running skips finished stages
# and resumes a broken one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
RECIPE=recipes/demo.toml
CAT=pass@16          # the CAT branch's strategy
BRANCH_STEPS=50      # per branch, after the recipe's 6 warm-up steps: 17 more epochs of 24 problems
EVAL_EVERY=25
K=32                 # the verdict's metric: pass@K, the eval's largest k
mkdir -p "$OUT"

source recipes/lib.sh

echo "== 1/4 CE warm-up: answer-only SFT of SmolLM2-135M on arith level 3" >&2
stage "$OUT/warmup" adapter/adapter_config.json catcli sft --recipe "$RECIPE"

echo "== 2/4 CE and CAT $CAT from the warm-up, same problems and steps, one core each," \
    "evaluated on held-apart problems every $EVAL_EVERY steps (logs: $OUT/{ce,cat}.log)" >&2
BRANCH=(--recipe "$RECIPE" --max-steps "$BRANCH_STEPS" --init-adapter "$OUT/warmup" --eval-every "$EVAL_EVERY")
OMP_NUM_THREADS=1 stage "$OUT/ce" adapter/adapter_config.json catcli sft "${BRANCH[@]}" --strategy ce \
    > "$OUT/ce.log" 2>&1 &
ce=$!
OMP_NUM_THREADS=1 stage "$OUT/cat" adapter/adapter_config.json catcli sft "${BRANCH[@]}" --strategy "$CAT" \
    > "$OUT/cat.log" 2>&1 &
cat=$!
failed=0
wait "$ce" || { failed=1; tail -n 5 "$OUT/ce.log" >&2; }
wait "$cat" || { failed=1; tail -n 5 "$OUT/cat.log" >&2; }
[ "$failed" = 0 ] || { echo "demo: a branch failed (logs above); re-run to resume it" >&2; exit 1; }

echo "== 3/4 the weights CAT $CAT trained with (p: each step's batch-mean target probability)" >&2
catcli weights --from "$OUT/cat" --strategy "$CAT"

echo "== 4/4 CAT - CE, paired over the same held-apart problems at each step; curves in $OUT/curves.png" >&2
catcli plot "$OUT/ce" "$OUT/cat" -o "$OUT/curves.png"
catcli compare "$OUT/ce" "$OUT/cat" --k 1,4,16,$K --json > "$OUT/compare.json"
catcli compare "$OUT/ce" "$OUT/cat" --k 1,4,16,$K
python - "$OUT/compare.json" "$K" <<'EOF'
import json
import sys

k = sys.argv[2]
steps = json.load(open(sys.argv[1]))["steps"]
last = max(steps, key=int)
d = steps[last]["diff"][f"pass@{k}"]
lo, hi = (100 * x for x in d["ci"])
noise = "the CI excludes 0" if lo > 0 or hi < 0 else "within noise: the CI contains 0"
print(
    f"CAT - CE on held-apart pass@{k} after {last} steps: {100 * d['mean']:+.1f} points, paired 95 % CI "
    f"[{lo:+.1f}, {hi:+.1f}] over {d['n_problems']} problems: {noise} (one seed; 3 seeds in docs/benchmarks.md)"
)
EOF
