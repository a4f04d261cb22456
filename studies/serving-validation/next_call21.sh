#!/usr/bin/env bash
# After next_call19.sh: a later chunk's attention at more chunk lengths (where cutting it for
# cuDNN starts to pay, executor.prefix_attention.MIN_QUERIES), then the summarization plan
# with chunks of fewer queries back on SDPA's kernel, each packed into $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
[ -s $results/prefix-attention.json ] || {
    timeout 150 python3 $here/prefix_attention.py $results/prefix-attention.json \
        > $results/prefix-attention.log 2>&1
    tail -n 9 $results/prefix-attention.log; pack; }
OUT=$results PLAN_TIMEOUT=270 bash $here/run.sh 40 bf16-summarization; pack
