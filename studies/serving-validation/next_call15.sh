#!/usr/bin/env bash
# next_call14.sh's sequel on the same warm machine: the executor phases issue 15 names, again
# (`tune measure`: naive attention's 4k prefill, now four passes over the scores
# (executor.naive_attention); the FP8-cache decode at batch 128 and 4k), then the draft model's
# plan, EAGLE's and the FP8 plan at their rates. ROOFTUNE_BOUND_LAUNCH as the GPU tests of
# next_call14.sh left it. Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
grep -q " failed" $results/gpu-tests.log 2>/dev/null && export ROOFTUNE_BOUND_LAUNCH=0
measure() {  # name, then tune measure's arguments
    local name=$1; shift
    [ -s $results/$name.json ] && return
    timeout 120 python3 -m tuner.cli measure "$@" --json > $results/$name.json 2> $results/$name.log
    python3 -c "import json,sys; [print(sys.argv[1], r['phase'], r['predicted_s'], r['measured_s'])
        for r in json.load(open(sys.argv[2]))['error'] if r['measured_s']]" $name $results/$name.json
    pack
}
measure naive-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096 --attention naive
measure fp8kv-b128-c4096 --model llama-3.1-8b --weights fp8 --kv-dtype fp8 --batch 128 \
    --prompt 16 --context 4096
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
for plan in bf16-draft bf16-eagle fp8; do
    done_already 8b-${plan%%-*}-$card${plan#${plan%%-*}} \
        || { OUT=$results PLAN_TIMEOUT=130 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
