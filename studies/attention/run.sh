#!/usr/bin/env bash
# One card's evidence for the fidelity issue: the attention rates (attention_rates.py) and the
# three executor shapes the cost model missed, each with `tune measure --json`.
# Run from the repository root on the GPU machine; writes under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
cat "$OUT/nvidia-smi.csv"
python3 studies/attention/attention_rates.py "$OUT/attention-rates.json" 2>&1 | tee "$OUT/attention-rates.log"
measure() {  # name, then tune measure's arguments
    local name=$1; shift
    echo "== tune measure $*" | tee -a "$OUT/measure.log"
    timeout 240 python3 -m tuner.cli measure "$@" --json > "$OUT/$name.json" 2>> "$OUT/measure.log"
    python3 - "$OUT/$name.json" <<'PY' | tee -a "$OUT/measure.log"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as error:
    print("  no result:", error); raise SystemExit
for row in r["error"]:
    if row["measured_s"]:
        print(f"  {row['phase']}: predicted {row['predicted_s'] * 1e3:.3f} ms, measured "
              f"{row['measured_s'] * 1e3:.3f} ms, {row['relative_error']:+.1%}")
PY
}
# A short prompt: the decode step is the point (and 128 prompts of 1024 tokens once overflowed
# 32-bit indexing in the FP8 quantize kernel, fixed since).
measure fp8kv-b128-c4096 --model llama-3.1-8b --weights fp8 --kv-dtype fp8 --batch 128 --prompt 16 --context 4096
measure bf16kv-b128-c4096 --model llama-3.1-8b --weights fp8 --batch 128 --prompt 16 --context 4096
measure eager-b1 --model llama-3.1-8b --batch 1 --context 1024 --no-cuda-graphs
measure naive-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096 --attention naive
measure flash-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096
