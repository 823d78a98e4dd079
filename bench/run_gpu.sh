#!/usr/bin/env bash
# make test-gpu's benchmarks, on a CUDA GPU: CAT SFT / CE and CAT GRPO / GRPO step times, eval
# samples/s against a per-problem generate loop, and 4-bit / 16-bit training memory, each on a
# random Qwen2.5-0.5B-shaped model (bench/random_model.py). Saves bench/results/gpu_*.json, each
# naming its device.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
model=$("$py" bench/random_model.py --shape qwen2-0.5b)
mkdir -p bench/results
run() {
    local name=$1; shift
    echo "== bench/$name.py $*" >&2
    "$py" "bench/$name.py" "$@" >"bench/results/gpu_$name.json.tmp"
    mv "bench/results/gpu_$name.json.tmp" "bench/results/gpu_$name.json"
    cat "bench/results/gpu_$name.json"
}
run sft_overhead --model "$model"
run rl_overhead --model "$model"
run eval_throughput --model "$model"
run memory  # on CUDA it measures the same Qwen2.5-0.5B shape
