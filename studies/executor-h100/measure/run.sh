#!/usr/bin/env bash
# `tune measure` and `tune validate` on a GPU machine with 4 GPUs; output under $OUT (NOTES.md).
# Run from the repository root with the package importable (PYTHONPATH=.). `python3 -m
# tuner.cli` is the `tune` command.
set -u
here=studies/executor-h100/measure
log=$OUT/measure.log
step() {  # step COMMAND...: the command and its output appended to measure.log
    echo "== $*" | sed 's/python3 -m tuner.cli/tune/' | tee -a "$log"
    timeout 400 "$@" 2>&1 | grep -v "OMP_NUM_THREADS\|\*\*\*\*\*\*\|^W.*run.py" | tee -a "$log"
    echo | tee -a "$log"
}
{ nvidia-smi -L; nvidia-smi topo -m; } >> "$log"
# The GPU tests first: the TP 2 model (built shard by shard) against the whole model, the
# per-token FP8 kernel, the fused kernels.
python3 -m pytest -q -p no:cacheprovider tests/executor/test_gpu_tp.py tests/executor/test_gpu.py \
    > "$OUT/gpu-tests.log" 2>&1
tail -1 "$OUT/gpu-tests.log"
cp studies/llama-3.1-70b-8xh100-chat/plan.json "$OUT/plan-70b-tp4.json"
step torchrun --nproc-per-node 4 -m tuner.cli validate "$OUT/plan-70b-tp4.json"
cp "$here/plan-8b-1xh100.input.json" "$OUT/plan-8b-1xh100.json"
step python3 -m tuner.cli validate "$OUT/plan-8b-1xh100.json"
step python3 -m tuner.cli measure --model llama-3.1-8b --batch 1 --prompt 1024 --context 1024
step python3 -m tuner.cli measure --model llama-3.1-8b --weights fp8 --batch 1 --context 1024
step torchrun --nproc-per-node 2 -m tuner.cli measure --model llama-3.1-8b --tp 2 --batch 1 \
    --prompt 1024 --context 1024
python3 -m tuner.cli measure --model llama-3.1-8b --batch 32 --prompt 2048 --context 4096 --json \
    > "$OUT/measure-tp1-bf16-b32.json" 2>> "$log"
step python3 -m tuner.cli measure --model llama-3.1-70b --batch 1 --context 1024
