#!/usr/bin/env bash
# What catcli is for, on the embedded model (recipes/demo.toml): from one CE warm-up, a CE branch
# and a CAT pass@16 branch train side by side (one core each) on the same 16 problems for the same
# 80 steps, until CE is over-confident on them; then each is evaluated on the same held-apart
# problems. Then the weights CAT trained with, the pass@k / maj@k curves of both, and a paired
# compare; the last line gives CAT - CE on pass@32 with its CI and says whether the CI excludes 0.
# Under 10 minutes on 2 idle CPU cores. Stops at the first failure; re-running skips finished
# stages and resumes a broken one.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-0}      # picks the problems, data order and sampling of every stage
# a finished stage is skipped, so another seed needs its own OUT
if [ "$SEED" = 0 ]; then OUT=${OUT:-runs/demo}; else OUT=${OUT:-runs/demo_s$SEED}; fi
RECIPE=recipes/demo.toml
CAT=pass@16          # the CAT branch's strategy
BRANCH_STEPS=80      # per branch, after the recipe's 8 warm-up steps: 20 more epochs of 16 problems
K=32                 # the verdict's metric: pass@K, the eval's largest k
mkdir -p "$OUT"

source recipes/lib.sh

train() { stage "$OUT/$1" adapter/adapter_config.json catcli sft "${BRANCH[@]}" --strategy "$2"; }
evaluate() { stage "$OUT/eval_$1" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/$1" --seed "$SEED"; }
# STEP ce ce and STEP cat $CAT side by side, one core each; a failure shows the end of its log
both() {
    local failed=0
    OMP_NUM_THREADS=1 "$1" ce ce > "$OUT/$1-ce.log" 2>&1 &
    local ce=$!
    OMP_NUM_THREADS=1 "$1" cat "$CAT" > "$OUT/$1-cat.log" 2>&1 &
    local cat=$!
    wait "$ce" || { failed=1; tail -n 5 "$OUT/$1-ce.log" >&2; }
    wait "$cat" || { failed=1; tail -n 5 "$OUT/$1-cat.log" >&2; }
    [ "$failed" = 0 ] || { echo "demo: a branch failed (logs above); re-run to resume it" >&2; exit 1; }
}

echo "== 1/5 CE warm-up: answer-only SFT of SmolLM2-135M on arith level 2 (a + b - c)" >&2
stage "$OUT/warmup" adapter/adapter_config.json catcli sft --recipe "$RECIPE" --seed "$SEED"

echo "== 2/5 CE and CAT $CAT from the warm-up, same problems and steps, one core each" \
    "(logs: $OUT/train-{ce,cat}.log)" >&2
BRANCH=(--recipe "$RECIPE" --max-steps "$BRANCH_STEPS" --init-adapter "$OUT/warmup" --seed "$SEED")
both train

echo "== 3/5 both on the same held-apart problems (logs: $OUT/evaluate-{ce,cat}.log)" >&2
both evaluate

echo "== 4/5 the weights CAT $CAT trained with (p: each step's batch-mean target probability)" >&2
catcli weights --from "$OUT/cat" --strategy "$CAT"

echo "== 5/5 CAT - CE, paired over the same held-apart problems; curves in $OUT/curves.png" >&2
catcli plot "$OUT/eval_ce" "$OUT/eval_cat" -o "$OUT/curves.png"
catcli compare "$OUT/eval_ce" "$OUT/eval_cat" --k 1,4,16,$K --json > "$OUT/compare.json.tmp"
mv "$OUT/compare.json.tmp" "$OUT/compare.json"
catcli compare "$OUT/eval_ce" "$OUT/eval_cat" --k 1,4,16,$K
python - "$OUT/compare.json" "$K" "$BRANCH_STEPS" "$SEED" <<'PY'
import json
import sys

path, k, steps, seed = sys.argv[1:]
d = json.load(open(path))["diff"][f"pass@{k}"]
lo, hi = (100 * x for x in d["ci"])
noise = "the CI excludes 0" if lo > 0 or hi < 0 else "within noise: the CI contains 0"
print(
    f"CAT - CE on held-apart pass@{k} after {steps} steps: {100 * d['mean']:+.1f} points, paired 95 % CI "
    f"[{lo:+.1f}, {hi:+.1f}] over {d['n_problems']} problems: {noise} (seed {seed}; 3 seeds in docs/benchmarks.md)"
)
PY
