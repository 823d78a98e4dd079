#!/usr/bin/env bash
# sft -> eval on qwen2.5-coder-1.5b (recipes/qwen_loop.toml): eval the base model, train a few
# CAT maj@8:k=3 steps, eval the tuned adapter on the same problems, compare. Needs `make qwen`
# and ../shared/data/math. Stops on the first failure; re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/lib.sh
RECIPE=recipes/qwen_loop.toml
OUT=${OUT:-runs/qwen_loop}
mkdir -p "$OUT"
stage "$OUT/eval_base" eval.json catcli eval --recipe "$RECIPE"
stage "$OUT/sft" adapter/adapter_config.json catcli sft --recipe "$RECIPE"
stage "$OUT/eval_tuned" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/sft"
catcli compare "$OUT/eval_base" "$OUT/eval_tuned" --k 1,2,4
