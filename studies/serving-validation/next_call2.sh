#!/usr/bin/env bash
# One ten-minute device call (NOTES.md, "Next"): first what a new prompt length costs cuDNN's
# attention (attention_plans.py); then the 8B bf16 plan's validation with first chunks padded
# to their bucket; decode_gap.py with balanced chunks and the static step; then the FP8 and
# summarization plans. Everything lands in $OUT/results.tar, rebuilt after each step, so that
# a call cut short keeps what it finished. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
timeout 60 python3 studies/serving-validation/attention_plans.py $results/attention-plans.json \
    > $results/attention-plans.log 2>&1
cat $results/attention-plans.log; pack
OUT=$results PLAN_TIMEOUT=150 bash studies/serving-validation/run.sh 100 bf16; pack
timeout 150 python3 studies/serving-validation/decode_gap.py $results/decode-gap.json \
    --splits balanced --sweep "" --points 4x1024,16x1024,32x1024 > $results/decode-gap.log 2>&1
echo "decode_gap rc=$?"
grep -E "^==|^  (eager|graph|mixed)" $results/decode-gap.log; pack
for plan in fp8 bf16-summarization; do
    OUT=$results PLAN_TIMEOUT=140 bash studies/serving-validation/run.sh 100 $plan; pack
done
