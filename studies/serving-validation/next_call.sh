#!/usr/bin/env bash
# One ten-minute device call, in the order the evidence is needed (NOTES.md, "Next"): the 8B
# bf16 plan's validation with every iteration kept, then decode_gap.py at full depth (the
# kernel sweep, each decode step's kernels by name, the static step), then the plans not yet
# run on this card for as long as the call lasts. Run from the repository root on the GPU
# machine; writes under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
PLAN_TIMEOUT=150 bash studies/serving-validation/run.sh 100 bf16
timeout 240 python3 studies/serving-validation/decode_gap.py "$OUT/decode-gap.json" \
    > "$OUT/decode-gap.log" 2>&1
echo "decode_gap rc=$?"
grep -E "^==|kernel sweep failed|^  (eager|graph|mixed)" "$OUT/decode-gap.log"
PLAN_TIMEOUT=150 bash studies/serving-validation/run.sh 100 fp8 bf16-eagle bf16-summarization
