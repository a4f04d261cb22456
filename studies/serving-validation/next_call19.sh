#!/usr/bin/env bash
# After h100-bound-2026-12-07/: where the last gaps are, by priority, each step packed into
# $OUT/results.tar as it ends (NOTES.md, "Next"): a chunk's attention over its cached prefix
# by kernel (prefix_attention.py), the FP8 GEMMs with their operands swapped for few tokens
# (fp8_gemm_sweep.py), then one speculative round's drafts and verify apart, with an EAGLE
# head (profiled) and with a draft model (spec_round.py).
set -u
source studies/serving-validation/call_env.sh
[ -s $results/prefix-attention.json ] || {
    timeout 120 python3 $here/prefix_attention.py $results/prefix-attention.json \
        > $results/prefix-attention.log 2>&1
    tail -n 6 $results/prefix-attention.log; pack; }
[ -s $results/fp8-gemm.json ] || { timeout 150 python3 $here/fp8_gemm_sweep.py \
    $results/fp8-gemm.json > $results/fp8-gemm.log 2>&1; tail -n 12 $results/fp8-gemm.log; pack; }
for method in eagle draft; do
    [ -s $results/spec-round-$method.json ] && continue
    profile=$([ $method = eagle ] && echo --profile)
    timeout 180 python3 $here/spec_round.py $here/8b-bf16-$card-$method/plan.json \
        $results/spec-round-$method.json $profile > $results/spec-round-$method.log 2>&1
    tail -n 45 $results/spec-round-$method.log; pack
done
