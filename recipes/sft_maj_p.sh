#!/usr/bin/env bash
# CAT maj@16:k=4 SFT on MATH level 1-3 worked solutions with each estimate of p (issue 24,
# cat-spec §2.1), from the paper's CE warm-up (recipes/sft_maj.toml): `--p-estimate sequence` (the
# paper's: a solution's probability is ~0, so every weight is k = 4 and the run says it trained as
# CE with a 4x step) and `--p-estimate success` (each problem's success rate over 8 answers
# sampled from the current policy each epoch, as recipes/sft_maj_p.toml's p_* keys sample
# them), each evaluated and compared with CE on MATH-500 L1-3. GPU and MATH as sft_maj.sh; shares
# its warm-up and CE branch when OUT is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/lib.sh
OUT=${OUT:-runs/sft_maj}
RECIPE=recipes/sft_maj.toml
data=()
[ -n "${DATA:-}" ] && data=(--data "$DATA")

stage "$OUT/warmup" adapter/adapter_config.json catcli sft --recipe "$RECIPE" "${data[@]}"
stage "$OUT/ce" adapter/adapter_config.json catcli sft --recipe "$RECIPE" "${data[@]}" \
    --strategy ce --epochs 3 --init-adapter "$OUT/warmup"
stage "$OUT/eval_ce" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/ce"
for p in sequence success; do
    stage "$OUT/maj_16_k_4_$p" adapter/adapter_config.json catcli sft --recipe recipes/sft_maj_p.toml \
        "${data[@]}" --strategy maj@16:k=4 --p-estimate "$p" --epochs 3 --init-adapter "$OUT/warmup"
    stage "$OUT/eval_maj_16_k_4_$p" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/maj_16_k_4_$p"
    catcli weights --from "$OUT/maj_16_k_4_$p" --strategy maj@16:k=4
    catcli compare "$OUT/eval_ce" "$OUT/eval_maj_16_k_4_$p" --k 1,4,16,64
done
