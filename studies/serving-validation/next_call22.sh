#!/usr/bin/env bash
# After h100-prefix-2026-12-08/ (a verify's merge one token at a time: no register spills;
# EAGLE drafts priced from the head's matrices): one EAGLE round apart (spec_round.py), the
# speculative rounds' GPU test, then the EAGLE and draft-model plans at their rates, each
# packed into $OUT/results.tar as it ends.
set -u
source studies/serving-validation/call_env.sh
[ -s $results/spec-round-eagle.json ] || {
    timeout 100 python3 $here/spec_round.py $here/8b-bf16-$card-eagle/plan.json \
        $results/spec-round-eagle.json > $results/spec-round-eagle.log 2>&1
    tail -n 5 $results/spec-round-eagle.log; pack; }
[ -s $results/gpu-tests.log ] || {
    timeout 60 python3 -m pytest -q -p no:cacheprovider \
        "tests/executor/test_gpu_serving.py::test_speculative_rounds_from_graphs_sample_what_eager_rounds_do_on_gpu" \
        > $results/gpu-tests.log 2>&1
    tail -n 3 $results/gpu-tests.log; pack; }
for plan in bf16-eagle bf16-draft; do
    grep -q "^rc=" $results/8b-${plan%%-*}-$card${plan#${plan%%-*}}/traffic.log 2>/dev/null \
        || { OUT=$results PLAN_TIMEOUT=130 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
