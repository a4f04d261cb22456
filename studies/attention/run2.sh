#!/usr/bin/env bash
# The second device session of the fidelity work: prefill attention as the model calls it
# (model_layout.py), the microbenchmarks again with that layout (the calibration's input), the
# decode-attention tile sweep (decode_sweep.py) and the executor shapes the model missed.
# Run from the repository root on the GPU machine: run2.sh PART... (layout micro measure
# sweep); writes under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
cat "$OUT/nvidia-smi.csv"
measure() {  # name, then tune measure's arguments
    local name=$1; shift
    echo "== tune measure $*" | tee -a "$OUT/measure.log"
    timeout 200 python3 -m tuner.cli measure "$@" --json > "$OUT/$name.json" 2>> "$OUT/measure.log"
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
for part in "$@"; do
    case $part in
    layout) timeout 150 python3 studies/attention/model_layout.py "$OUT/model-layout.json" 2>&1 | tee "$OUT/model-layout.log" ;;
    micro) timeout 300 python3 -m executor.bench --suite micro --out "$OUT/bench" 2>&1 | tail -40 | tee "$OUT/micro.log" ;;
    # The serving loop under the plans' traffic first (issue of its own; same machine, one
    # start), then the tile sweep with what is left of the call's ten minutes.
    sweep) bash studies/serving-validation/run.sh 150
        timeout 170 python3 studies/attention/decode_sweep.py "$OUT/decode-sweep.json" 2>&1 | tee "$OUT/decode-sweep.log" ;;
    measure)
        # The shapes never measured since their fix first (naive attention, the FP8 cache).
        measure naive-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096 --attention naive
        measure fp8kv-b128-c4096 --model llama-3.1-8b --weights fp8 --kv-dtype fp8 --batch 128 --prompt 16 --context 4096
        measure flash-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096
        measure eager-b1 --model llama-3.1-8b --batch 1 --context 1024 --no-cuda-graphs
        measure bf16kv-b128-c4096 --model llama-3.1-8b --weights fp8 --batch 128 --prompt 16 --context 4096 ;;
    esac
done
