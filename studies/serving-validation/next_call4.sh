#!/usr/bin/env bash
# One ten-minute device call (NOTES.md, "Next"), most needed first: the decode kernel's two
# chunk rules (even, by work) at batches of mixed lengths, alone and in the serving loop's
# graphs; the 8B bf16 plan validated with chunks by work; the FP8 GEMMs' paths over an
# iteration's tokens (fp8_gemm_sweep.py); an EAGLE round's kernels (1.25-1.35x the prediction
# even at one sequence); the kernel's tiles over an FP8 cache (0.81 TB/s at 16 x 1,024, bf16's
# 1.7); then the FP8 plan by work, as long as the call lasts. Results in
# $OUT/results.tar, rebuilt after each step. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
mkdir -p $results/by-work
timeout 200 python3 $here/decode_gap.py $results/decode-gap-rules.json --splits even,work \
    --sweep "16x1024~,32x1024~,32x1024" --points "16x1024~,32x1024~,32x1024" \
    > $results/decode-gap-rules.log 2>&1
echo "decode_gap rc=$?"; grep -E "^==" $results/decode-gap-rules.log; pack
OUT=$results/by-work TUNE="python3 $here/by_work.py" PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16
pack
timeout 90 python3 $here/fp8_gemm_sweep.py $results/fp8-gemm.json > $results/fp8-gemm.log 2>&1
echo "fp8 gemm rc=$?"; grep "^M=" $results/fp8-gemm.log; pack
timeout 100 python3 $here/decode_gap.py $results/decode-gap-eagle.json --splits even --sweep "" \
    --points "1x1024,8x1024~" --plan $here/8b-bf16-$card-eagle/plan.json \
    > $results/decode-gap-eagle.log 2>&1
echo "eagle rounds rc=$?"; grep -E "^==" $results/decode-gap-eagle.log; pack
timeout 45 python3 $here/decode_gap.py $results/decode-sweep-fp8.json --points "" \
    --sweep "16x1024~,128x4096" --sweep-kv fp8 > $results/decode-sweep-fp8.log 2>&1
echo "fp8 kv sweep rc=$?"; pack
OUT=$results/by-work TUNE="python3 $here/by_work.py" PLAN_TIMEOUT=150 bash $here/run.sh 100 fp8
pack
