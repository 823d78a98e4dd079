#!/usr/bin/env bash
# The paper's RL passn family (see recipes/rl_passn.toml): each branch, its eval, and the
# comparison against vanilla GRPO. Needs a CUDA GPU and the hub (or DATA=path.jsonl to train).
# Stops on the first failure; re-run it after an interruption to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/lib.sh
OUT=${OUT:-runs/rl_passn}
RECIPE=recipes/rl_passn.toml
data=()
[ -n "${DATA:-}" ] && data=(--data "$DATA")
init=()
for branch in grpo pass@4:raw pass@4:log pass@16:raw pass@16:log; do
    strategy=${branch%%:*}; form=raw
    [ "$branch" != "$strategy" ] && form=${branch##*:}
    name=${branch//[@:]/_}
    stage "$OUT/$name" adapter/adapter_config.json catcli rl --recipe "$RECIPE" "${data[@]}" "${init[@]}" \
        --strategy "$strategy" --form "$form"
    stage "$OUT/eval_$name" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/$name"
done
catcli plot "$OUT"/eval_* -o "$OUT/curves.png"
for branch in grpo pass@4:raw pass@4:log pass@16:raw pass@16:log; do
    name=${branch//[@:]/_}
    [ "$name" = grpo ] || catcli compare "$OUT/eval_grpo" "$OUT/eval_$name" --k 1,8,16,32
done
