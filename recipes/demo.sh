#!/usr/bin/env bash
# The main job on the embedded defaults, CPU-sized (a few minutes on 2 cores):
# the CAT weights the trainers will use, then a pass@k / maj@k scaling curve of the embedded
# SmolLM2-135M on held-apart arithmetic. Re-running continues where it stopped.
set -euo pipefail
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"

echo "== CAT weights for maj@4 (what 'catcli sft --strategy maj@4' multiplies into CE)" >&2
catcli weights --strategy maj@4 --p 0.01,0.1,0.3,0.5,0.7,0.9,0.99 --plot "$OUT/weights_maj4.png"

echo "== pass@k / maj@k of the base model on arith levels 1-3 (test split)" >&2
resume=()
[ -s "$OUT/base/run.json" ] && resume=(--resume)
catcli eval --model smollm2-135m --data arith --split test --levels 1-3 --limit 12 \
    --n 16 --k 1,4,16 --max-new-tokens 64 --batch-size 6 --out "$OUT/base" "${resume[@]}"

echo "== curves: $OUT/base/curves.png, samples: $OUT/base/samples.jsonl" >&2
