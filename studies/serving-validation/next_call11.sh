#!/usr/bin/env bash
# One call after an iteration's attention was laid out once for all its layers
# (executor.ragged.IterationAttention) and a round's drafts got graphs of their own
# (executor.speculative_graphs.ProposeGraphs; NOTES.md, "The host between the graph pieces"):
# the GPU tests of the paths they changed (the paged kernel against SDPA; every decode graph,
# the piecewise graphs and a draft model's rounds from graphs against eager iterations), then
# the plans with the kernel's defaults (FP8 caches' dots now in float16): bf16 at three loads,
# the draft model and EAGLE at the plan's rate, FP8 at the plan's rate. A step already done
# on a warm machine is skipped.
# Results in $OUT/results.tar, rebuilt after each step.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
if [ ! -s $results/gpu-tests.log ]; then
    timeout 120 python3 -m pytest -q -p no:cacheprovider --durations=5 tests/executor/test_gpu.py \
        -k "paged_decode or every_bucket or speculative_rounds" 2>&1 | tail -n 30 \
        > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
done_already 8b-bf16-$card || { OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16; pack; }
for plan in bf16-draft bf16-eagle; do
    done_already 8b-${plan/-/-$card-} \
        || { OUT=$results PLAN_TIMEOUT=120 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
done_already 8b-fp8-$card || { OUT=$results PLAN_TIMEOUT=90 LOADS=plan bash $here/run.sh 100 fp8; pack; }
