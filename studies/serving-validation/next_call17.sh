#!/usr/bin/env bash
# next_call16.sh cut to what fits a short call (about 270 s of device time left after a
# start): the GPU tests (bound launches, the pieces with RoPE and the store up to the token
# budget, the few-rows FP8 GEMM), then host_launches.py. Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
timeout 120 python3 -m pytest -q -p no:cacheprovider --durations=8 \
        tests/executor/test_gpu.py tests/executor/test_gpu_serving.py \
    2>&1 | tail -n 40 > $results/gpu-tests.log
tail -n 12 $results/gpu-tests.log
pack
timeout 110 python3 $here/host_launches.py $results/host-launches.json \
    > $results/host-launches.log 2>&1
tail -n 40 $results/host-launches.log
pack
