#!/usr/bin/env bash
# After h100-bound-2026-12-07/ (bound Triton launches, pieces to the token budget): the three
# loads of the bf16 and FP8 plans, then the shared-prefix summarization plan's (chunked
# prefill, preemption), by priority, each packed into $OUT/results.tar as it ends.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
done_already 8b-bf16-$card || { OUT=$results PLAN_TIMEOUT=160 bash $here/run.sh 100 bf16; pack; }
done_already 8b-fp8-$card || { OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 fp8; pack; }
done_already 8b-bf16-$card-summarization-shared \
    || { OUT=$results PLAN_TIMEOUT=170 bash $here/run.sh 40 bf16-summarization-shared; pack; }
