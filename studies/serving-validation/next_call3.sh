#!/usr/bin/env bash
# One device call (NOTES.md, "Next"): the attention-plan probe again with the final padding
# (one copy of the chunk's rows); the FP8 plan's decode step by kernel; the paged decode kernel
# at the serving run's batch; then the summarization plan (40 requests: its light load is 0.6
# requests/s) and the EAGLE plan with first chunks padded. Results in $OUT/results.tar, rebuilt
# after each step. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
timeout 60 python3 $here/attention_plans.py $results/attention-plans.json > $results/attention-plans.log 2>&1
cat $results/attention-plans.log; pack
timeout 100 python3 $here/decode_gap.py $results/decode-gap-fp8.json --plan $here/8b-fp8-h100/plan.json \
    --splits balanced --sweep "" --points 16x1024 > $results/decode-gap-fp8.log 2>&1
echo "decode_gap fp8 rc=$?"; grep -E -A12 "^==|^  (eager|graph|mixed)" $results/decode-gap-fp8.log | head -80; pack
timeout 60 python3 $here/decode_gap.py $results/decode-sweep.json --points "" --sweep 16x1024,16x2048 \
    > $results/decode-sweep.log 2>&1
echo "sweep rc=$?"; pack
OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 40 bf16-summarization; pack
OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16-eagle; pack
