#!/usr/bin/env bash
# After h100-bound-2026-12-07/: where the last gaps are, by priority, each step packed into
# $OUT/results.tar as it ends (NOTES.md, "Next"): the GPU tests of a later chunk's attention
# cut for cuDNN (executor.prefix_attention) and of the serving loop; a chunk's attention over
# its cached prefix by kernel (prefix_attention.py); the summarization plan with it (run.sh);
# one speculative round's drafts and verify apart with an EAGLE head (spec_round.py,
# profiled); the FP8 GEMMs with their operands swapped for few tokens (fp8_gemm_sweep.py).
# The draft model's round ran apart (spec_round.py, h100-prefix-2026-12-08/).
set -u
source studies/serving-validation/call_env.sh
[ -s $results/gpu-tests.log ] || {
    timeout 150 python3 -m pytest -q -p no:cacheprovider --durations=5 \
        tests/executor/test_prefix_attention.py tests/executor/test_gpu_serving.py \
        > $results/gpu-tests.log 2>&1
    tail -n 12 $results/gpu-tests.log; pack; }
[ -s $results/prefix-attention.json ] || {
    timeout 120 python3 $here/prefix_attention.py $results/prefix-attention.json \
        > $results/prefix-attention.log 2>&1
    tail -n 6 $results/prefix-attention.log; pack; }
# The summarization plan's three loads with the new chunk attention, where its tests passed.
if ! grep -qE " failed| error" $results/gpu-tests.log; then
    grep -q "^rc=" $results/8b-bf16-$card-summarization/traffic.log 2>/dev/null \
        || { OUT=$results PLAN_TIMEOUT=200 bash $here/run.sh 40 bf16-summarization; pack; }
fi
round() {  # eagle or draft, then spec_round.py's options
    local method=$1; shift
    [ -s $results/spec-round-$method.json ] && return
    timeout 180 python3 $here/spec_round.py $here/8b-bf16-$card-$method/plan.json \
        $results/spec-round-$method.json "$@" > $results/spec-round-$method.log 2>&1
    tail -n 45 $results/spec-round-$method.log; pack
}
round eagle --profile
[ -s $results/fp8-gemm.json ] || { timeout 150 python3 $here/fp8_gemm_sweep.py \
    $results/fp8-gemm.json > $results/fp8-gemm.log 2>&1; tail -n 12 $results/fp8-gemm.log; pack; }
