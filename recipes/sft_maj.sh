#!/usr/bin/env bash
# The paper's maj SFT family (see recipes/sft_maj.toml): CE warm-up, then each branch for 3
# epochs from the same warm-up adapter, an eval of each, and the comparison against CE.
# Needs a CUDA GPU and the hub (or a local MATH file: add DATA=path.jsonl for training).
# Stops on the first failure; re-run it after an interruption to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/lib.sh
OUT=${OUT:-runs/sft_maj}
RECIPE=recipes/sft_maj.toml
data=()
[ -n "${DATA:-}" ] && data=(--data "$DATA")

stage "$OUT/warmup" adapter/adapter_config.json catcli sft --recipe "$RECIPE" "${data[@]}"
for s in ce maj@8:k=3 maj@16:k=4 maj@64:k=26; do
    name=${s//[@:=]/_}
    stage "$OUT/$name" adapter/adapter_config.json catcli sft --recipe "$RECIPE" "${data[@]}" \
        --strategy "$s" --epochs 3 --init-adapter "$OUT/warmup"
    stage "$OUT/eval_$name" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/$name"
done
catcli plot "$OUT"/eval_* -o "$OUT/curves.png"
for s in ce maj@8:k=3 maj@16:k=4 maj@64:k=26; do
    name=${s//[@:=]/_}
    [ "$name" = ce ] || catcli compare "$OUT/eval_ce" "$OUT/eval_$name" --k 1,4,16,64
done
