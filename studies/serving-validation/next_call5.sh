#!/usr/bin/env bash
# One device call after next_call4.sh (NOTES.md, "Next"), with its winning chunk rule as the
# executor's default: the summarization plan on a shared GPU (a 0.37 memory share on an H100,
# 0.21 on an H200: a KV cache of ~107,500 tokens, which long prompts fill, so requests are
# preempted at overload), 60 requests a load; then the draft and EAGLE plans at the plan's rate;
# then the bf16 and FP8 plans again, as long as the call lasts. Results in $OUT/results.tar,
# rebuilt after each step. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
OUT=$results PLAN_TIMEOUT=230 bash $here/run.sh 60 bf16-summarization-shared; pack
OUT=$results PLAN_TIMEOUT=100 LOADS=plan bash $here/run.sh 100 bf16-draft bf16-eagle; pack
OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16 fp8; pack
