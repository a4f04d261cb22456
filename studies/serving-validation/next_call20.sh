#!/usr/bin/env bash
# After next_call19.sh (a later chunk's attention on cuDNN, executor.prefix_attention; the
# summarization plan): the shared summarization plan at its three loads (it preempts), the
# draft model's round (spec_round.py), then the FP8 and bf16 plans, by priority, each packed
# into $OUT/results.tar as it ends; a second call on the warm machine skips what is done.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
run() {  # plan suffix, requests, seconds
    done_already 8b-${1%%-*}-$card${1#${1%%-*}} \
        || { OUT=$results PLAN_TIMEOUT=$3 bash $here/run.sh $2 $1; pack; }
}
run bf16-summarization-shared 40 200
[ -s $results/spec-round-draft.json ] || {
    timeout 180 python3 $here/spec_round.py $here/8b-bf16-$card-draft/plan.json \
        $results/spec-round-draft.json > $results/spec-round-draft.log 2>&1
    tail -n 45 $results/spec-round-draft.log; pack; }
run fp8 100 170
run bf16 100 180
