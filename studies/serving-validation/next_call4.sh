#!/usr/bin/env bash
# One device call (NOTES.md, "Next"): the decode kernel's two chunk rules (even, by work) at
# batches of mixed lengths, alone and in the serving loop's graphs; the kernel's tiles over an
# FP8 cache (its 0.81 TB/s at 16 x 1,024 against 1.7 for bf16); then the 8B bf16 and FP8
# plans validated with chunks by work. Results in $OUT/results.tar, rebuilt after each step.
# Run from the repository root on the GPU machine.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
results=/tmp/results
mkdir -p $results
pack() { tar -cf "$OUT/results.tar" -C $results . ; }
here=studies/serving-validation
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $results/nvidia-smi.csv
timeout 200 python3 $here/decode_gap.py $results/decode-gap-rules.json --splits even,work \
    --sweep "16x1024~,32x1024~,32x1024" --points "16x1024~,32x1024~,32x1024" \
    > $results/decode-gap-rules.log 2>&1
echo "decode_gap rc=$?"; grep -E "^==" $results/decode-gap-rules.log; pack
timeout 60 python3 $here/decode_gap.py $results/decode-sweep-fp8.json --points "" \
    --sweep "16x1024~,128x4096" --sweep-kv fp8 > $results/decode-sweep-fp8.log 2>&1
echo "fp8 sweep rc=$?"; pack
mkdir -p $results/by-work
OUT=$results/by-work TUNE="python3 $here/by_work.py" PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16 fp8
pack
