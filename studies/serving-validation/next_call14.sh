#!/usr/bin/env bash
# After Triton's launches were bound once per specialization (executor.triton_launch), the
# piecewise graphs' pieces took RoPE and the K/V store and reach the token budget: the GPU
# tests (every kernel against its reference, every decode graph, the piecewise graphs and a
# draft model's rounds from graphs against eager iterations), the host's time per launch with
# the binding and through Triton (host_launches.py), then the bf16 plan at its rate. Should
# the GPU tests fail, the plan runs with the binding off (ROOFTUNE_BOUND_LAUNCH=0). A step
# already done on a warm machine is skipped. Results in $OUT/results.tar, rebuilt each step.
set -u
source studies/serving-validation/call_env.sh
if [ ! -s $results/gpu-tests.log ]; then
    timeout 200 python3 -m pytest -q -p no:cacheprovider --durations=8 tests/executor/test_gpu.py \
        2>&1 | tail -n 40 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
grep -q " failed" $results/gpu-tests.log && export ROOFTUNE_BOUND_LAUNCH=0
[ -s $results/host-launches.json ] || {
    timeout 150 python3 $here/host_launches.py $results/host-launches.json \
        > $results/host-launches.log 2>&1
    tail -n 32 $results/host-launches.log; pack; }
grep -q "^rc=" $results/8b-bf16-$card/traffic.log 2>/dev/null \
    || { OUT=$results PLAN_TIMEOUT=150 LOADS=plan bash $here/run.sh 100 bf16; pack; }
