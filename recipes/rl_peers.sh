#!/usr/bin/env bash
# Every RL method on one footing (see recipes/rl_peers.toml): vanilla GRPO, then CAT and each
# peer with the recipe's pass@N, each branch evaluated, then compared with vanilla pairwise.
# RECIPE=recipes/rl_peers_demo.toml runs the CPU-sized version. Stops on the first failure;
# re-run it after an interruption to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
source recipes/lib.sh
RECIPE=${RECIPE:-recipes/rl_peers.toml}
OUT=${OUT:-runs/rl_peers}
methods=(grpo cat pkpo passk passk-best)
for method in "${methods[@]}"; do
    if [ "$method" = grpo ]; then args=(--strategy grpo); else args=(--method "$method"); fi
    stage "$OUT/$method" adapter/adapter_config.json catcli rl --recipe "$RECIPE" "${args[@]}"
    stage "$OUT/eval_$method" eval.json catcli eval --recipe "$RECIPE" --model "$OUT/$method"
done
catcli plot "$OUT"/eval_* -o "$OUT/curves.png"
for method in "${methods[@]:1}"; do
    catcli compare "$OUT/eval_grpo" "$OUT/eval_$method"
done
