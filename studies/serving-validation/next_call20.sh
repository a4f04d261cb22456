#!/usr/bin/env bash
# After next_call19.sh (a later chunk's attention on cuDNN, executor.prefix_attention): the
# summarization plans at their three loads (chunked prefill over long prompts; the shared
# one preempts), then the FP8 and bf16 plans, by priority, each packed into $OUT/results.tar
# as it ends; a second call on the warm machine skips what is done.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
run() {  # plan suffix, requests, seconds
    done_already 8b-${1%%-*}-$card${1#${1%%-*}} \
        || { OUT=$results PLAN_TIMEOUT=$3 bash $here/run.sh $2 $1; pack; }
}
run bf16-summarization 40 200
run bf16-summarization-shared 40 200
run fp8 100 170
run bf16 100 180
