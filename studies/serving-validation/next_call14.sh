#!/usr/bin/env bash
# After Triton's launches were bound once per specialization (executor.triton_launch) and the
# piecewise graphs' pieces took RoPE and the K/V store: the GPU tests (every kernel against its
# reference, every decode graph, the piecewise graphs and a draft model's rounds from graphs
# against eager iterations), the host's time per launch with the binding off and on
# (host_launches.py, ROOFTUNE_BOUND_LAUNCH=0 then 1), then the bf16 plan at its rate. Should the
# GPU tests fail, the plan runs with the binding off. A step already done on a warm machine is
# skipped. Results in $OUT/results.tar, rebuilt after each step.
set -u
source studies/serving-validation/call_env.sh
if [ ! -s $results/gpu-tests.log ]; then
    timeout 200 python3 -m pytest -q -p no:cacheprovider --durations=8 tests/executor/test_gpu.py \
        2>&1 | tail -n 40 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
grep -q " failed" $results/gpu-tests.log && export ROOFTUNE_BOUND_LAUNCH=0
for bound in 0 1; do
    [ -s $results/host-launches-bound$bound.json ] || {
        ROOFTUNE_BOUND_LAUNCH=$bound timeout 110 python3 $here/host_launches.py \
            $results/host-launches-bound$bound.json > $results/host-launches-bound$bound.log 2>&1
        tail -n 14 $results/host-launches-bound$bound.log; pack; }
done
grep -q "^rc=" $results/8b-bf16-$card/traffic.log 2>/dev/null \
    || { OUT=$results PLAN_TIMEOUT=110 LOADS=plan bash $here/run.sh 100 bf16; pack; }
