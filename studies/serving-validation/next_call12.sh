#!/usr/bin/env bash
# next_call11.sh cut to a short call (little device time left): the GPU tests of the graphs
# (every decode bucket and the piecewise graphs, a draft model's rounds from graphs, against
# eager iterations), the bf16 plan at the plan's rate, the host's time per launch of each
# kind (host_launches.py), then the draft model's plan and EAGLE's at the plan's rate. A step already done on a warm machine is skipped. Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
if [ ! -s $results/gpu-tests.log ]; then
    timeout 90 python3 -m pytest -q -p no:cacheprovider --durations=5 tests/executor/test_gpu.py \
        -k "every_bucket or speculative_rounds" 2>&1 | tail -n 30 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
plan() {
    local name=8b-${1%%-*}-$card${1#${1%%-*}}
    done_already $name || { OUT=$results PLAN_TIMEOUT=100 LOADS=plan bash $here/run.sh 100 $1; pack; }
}
plan bf16
[ -s $results/host-launches.json ] || { timeout 60 python3 $here/host_launches.py \
    $results/host-launches.json > $results/host-launches.log 2>&1; tail -n 12 $results/host-launches.log; pack; }
plan bf16-draft
plan bf16-eagle
