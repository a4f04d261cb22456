#!/usr/bin/env bash
# One device call when little device time is left (NOTES.md, "Next"): everything with the
# decode kernel's chunks split by work (by_work.py), the must-shows first: the bf16
# plan at three loads; the summarization plan on a shared GPU (40 requests a load: preemption
# at overload); the draft and EAGLE plans at the plan's rate; then both chunk rules side by
# side at mixed lengths (decode_gap.py), as long as the call lasts. Results in
# $OUT/results.tar, rebuilt after each step. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
export TUNE="python3 $here/by_work.py"
OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16; pack
OUT=$results PLAN_TIMEOUT=170 bash $here/run.sh 40 bf16-summarization-shared; pack
OUT=$results PLAN_TIMEOUT=80 LOADS=plan bash $here/run.sh 100 bf16-eagle bf16-draft; pack
timeout 100 python3 $here/decode_gap.py $results/decode-gap-rules.json --splits even,work \
    --sweep "" --points "16x1024~,32x1024~" > $results/decode-gap-rules.log 2>&1
echo "decode_gap rc=$?"; grep -E "^==" $results/decode-gap-rules.log; pack
