#!/usr/bin/env bash
# One device call (NOTES.md, "Next"), chunks by work (the default now): the draft and EAGLE
# plans at the plan's rate, each with room for its warm-up and graph captures (80 s was too
# little); the summarization plan on a shared GPU (a 0.37 memory share on an H100, 0.21 on an
# H200: ~107,500 tokens of cache, which long prompts fill, so requests are preempted at
# overload), 40 requests a load; then the bf16 plan, as long as the call lasts. Results in
# $OUT/results.tar, rebuilt after each step. Run from the repository root on the GPU machine.
set -u
source studies/serving-validation/call_env.sh
OUT=$results PLAN_TIMEOUT=150 LOADS=plan bash $here/run.sh 100 bf16-eagle bf16-draft; pack
OUT=$results PLAN_TIMEOUT=170 bash $here/run.sh 40 bf16-summarization-shared; pack
OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16; pack
