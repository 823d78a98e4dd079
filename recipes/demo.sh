#!/usr/bin/env bash
# The main job on the embedded defaults (recipes/demo.toml): CAT SFT, then pass@k / maj@k of
# the base and the tuned model on held-apart problems, their paired difference, one plot.
# Stops at the first failure; re-running skips finished stages and resumes a broken one.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
RECIPE=recipes/demo.toml
mkdir -p "$OUT"

source recipes/lib.sh

echo "== 1/4 CAT SFT (pass@4, answer targets) of SmolLM2-135M on arith level 1" >&2
stage "$OUT/sft" adapter/adapter_config.json catcli sft --recipe "$RECIPE"

echo "== 2/4 eval of the base model" >&2
stage "$OUT/base" eval.json catcli eval --recipe "$RECIPE" --model smollm2-135m

echo "== 3/4 eval of the tuned model" >&2
stage "$OUT/tuned" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/sft"

echo "== 4/4 tuned - base, paired over the same problems" >&2
catcli plot "$OUT/base" "$OUT/tuned" -o "$OUT/curves.png"
catcli compare "$OUT/base" "$OUT/tuned" --k 1,4,16
echo "== curves: $OUT/curves.png" >&2
