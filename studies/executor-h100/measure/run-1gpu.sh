#!/usr/bin/env bash
# The one-GPU part of run.sh again (one-pass-quant/ ran it without the profile at the end).
set -u
here=studies/executor-h100/measure
log=$OUT/measure.log
step() {
    echo "== $*" | sed 's/python3 -m tuner.cli/tune/' | tee -a "$log"
    timeout 300 "$@" 2>&1 | tee -a "$log"
    echo | tee -a "$log"
}
nvidia-smi -L >> "$log"
python3 -m pytest -q -p no:cacheprovider tests/executor/test_gpu.py -k "per_token or fused" \
    > "$OUT/gpu-tests.log" 2>&1
tail -1 "$OUT/gpu-tests.log"
cp "$here/plan-8b-1xh100.input.json" "$OUT/plan-8b-1xh100.json"
step python3 -m tuner.cli validate "$OUT/plan-8b-1xh100.json"
step python3 -m tuner.cli measure --model llama-3.1-8b --weights fp8 --batch 1 --context 1024
# Where a dynamic-FP8 decode step's time goes, against static scales (kernel profiles).
python3 studies/executor-h100/measure/profile_fp8_scales.py > "$OUT/profile.log" 2>&1
grep "^==" "$OUT/profile.log"
