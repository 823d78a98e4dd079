#!/usr/bin/env bash
# What catcli is for, on the embedded model (recipes/demo.toml): from one CE warm-up, a CE
# branch and a CAT pass@16 branch train on the same problems for the same steps; both are
# evaluated on the same held-apart problems, compared paired, and plotted; `catcli weights`
# shows how much CAT reweights such problems against CE. The last line says whether the
# difference is more than noise. Under 10 minutes on 2 CPU cores.
# Stops at the first failure; re-running skips finished stages and resumes a broken one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
RECIPE=recipes/demo.toml
CAT=pass@16          # the CAT branch's strategy; the eval's largest k matches its N
BRANCH_STEPS=48      # per branch, after the recipe's 8 warm-up steps: 12 more epochs of 32 problems
K=16                 # the verdict's metric: pass@K, the eval's largest k
mkdir -p "$OUT"

source recipes/lib.sh

echo "== 1/5 CE warm-up: answer-only SFT of SmolLM2-135M on arith level 1" >&2
stage "$OUT/warmup" adapter/adapter_config.json catcli sft --recipe "$RECIPE"

echo "== 2/5 two branches from the warm-up, same problems, same steps: CE and CAT $CAT" >&2
BRANCH=(--recipe "$RECIPE" --max-steps "$BRANCH_STEPS" --init-adapter "$OUT/warmup")
stage "$OUT/ce" adapter/adapter_config.json catcli sft "${BRANCH[@]}" --strategy ce
stage "$OUT/cat" adapter/adapter_config.json catcli sft "${BRANCH[@]}" --strategy "$CAT"

echo "== 3/5 eval of both on the same held-apart problems (arith test split)" >&2
stage "$OUT/eval_ce" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/ce"
stage "$OUT/eval_cat" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/cat"

echo "== 4/5 how much CAT $CAT reweights these problems against CE (p = each one's c/n)" >&2
catcli weights --from "$OUT/eval_cat" --strategy "$CAT"

echo "== 5/5 CAT - CE, paired over the same problems; curves in $OUT/curves.png" >&2
catcli plot "$OUT/eval_ce" "$OUT/eval_cat" -o "$OUT/curves.png"
catcli compare "$OUT/eval_ce" "$OUT/eval_cat" --k 1,4,$K --json > "$OUT/compare.json"
catcli compare "$OUT/eval_ce" "$OUT/eval_cat" --k 1,4,$K
python - "$OUT/compare.json" "$K" <<'EOF'
import json
import sys

k = sys.argv[2]
d = json.load(open(sys.argv[1]))["diff"][f"pass@{k}"]
lo, hi = (100 * x for x in d["ci"])
noise = "within noise (the CI contains 0)" if lo <= 0 <= hi else "beyond this run's noise (the CI excludes 0)"
print(
    f"CAT - CE on pass@{k}: {100 * d['mean']:+.1f} points, paired 95 % CI [{lo:+.1f}, {hi:+.1f}] over "
    f"{d['n_problems']} held-apart problems: {noise}. One seed and minutes of training: the measurement "
    "to go by is bench/claim.py (3 seeds; docs/benchmarks.md)."
)
EOF
