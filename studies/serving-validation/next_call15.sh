#!/usr/bin/env bash
# next_call14.sh's sequel on the same warm machine: the draft model's plan, EAGLE's and the
# FP8 plan at their rates, then the bf16 plan's light load and overload. ROOFTUNE_BOUND_LAUNCH
# as the GPU tests of next_call14.sh left it. Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
grep -q " failed" $results/gpu-tests.log 2>/dev/null && export ROOFTUNE_BOUND_LAUNCH=0
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
for plan in bf16-draft bf16-eagle fp8; do
    done_already 8b-${plan%%-*}-$card${plan#${plan%%-*}} \
        || { OUT=$results PLAN_TIMEOUT=110 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
