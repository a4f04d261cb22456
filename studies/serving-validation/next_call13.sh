#!/usr/bin/env bash
# The shortest useful call (little device time left): the GPU tests of the serving graphs
# alone (every decode bucket and the piecewise graphs, and a draft model's rounds from graphs,
# its drafts from the propose graphs and its prefill from pieces of its own, each against the
# same iterations run eagerly). Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
timeout 85 python3 -m pytest -q -p no:cacheprovider --durations=3 tests/executor/test_gpu.py \
    -k "every_bucket or speculative_rounds" 2>&1 | tail -n 25 > $results/gpu-tests.log
tail -n 3 $results/gpu-tests.log
pack
