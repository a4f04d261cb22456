#!/usr/bin/env bash
# On the GPU machine: decode-graph replays checked one by one (diagnose_replay.py), the card's
# 8B bf16 plan, 2 layers, graphs only; with and without CUDA_LAUNCH_BLOCKING. Logs under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
plan=studies/serving-validation/8b-bf16-$card/plan.json
for variant in plain blocking; do
    echo "== $variant"
    if [ $variant = blocking ]; then export CUDA_LAUNCH_BLOCKING=1; fi
    timeout 200 python3 studies/serving-validation/diagnose_replay.py "$plan" --modes graphs \
        > "$OUT/replay-$variant.log" 2>&1
    echo "rc=$?" >> "$OUT/replay-$variant.log"
    grep -v Assertion "$OUT/replay-$variant.log" | grep -v "^\s*$" | tail -12
done
