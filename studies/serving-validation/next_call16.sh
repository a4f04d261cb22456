#!/usr/bin/env bash
# After Triton launches were bound once (executor.triton_launch), the piecewise graphs reached
# the token budget and naive attention took four passes, by priority (little device time): the
# GPU tests, the bf16 plan at its rate, the host's time per launch (host_launches.py), the
# two executor phases of issue 15 (naive attention's 4k prefill, the FP8-cache decode at
# batch 128 and 4k), then EAGLE's, the draft model's and the FP8 plan at their rates, then the
# FP8 GEMM sweep with the experimental few-rows kernel (fp8_gemm_sweep.py). Each
# step packs $OUT/results.tar, so a call cut short keeps what it finished; all of it is more
# than one call's ten minutes, and a second call on the warm machine skips what is done.
set -u
source studies/serving-validation/call_env.sh
if [ ! -s $results/gpu-tests.log ]; then
    timeout 150 python3 -m pytest -q -p no:cacheprovider --durations=8 \
        tests/executor/test_gpu.py tests/executor/test_gpu_serving.py \
        2>&1 | tail -n 40 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
grep -q " failed" $results/gpu-tests.log && export ROOFTUNE_BOUND_LAUNCH=0
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
plan() {
    done_already 8b-${1%%-*}-$card${1#${1%%-*}} \
        || { OUT=$results PLAN_TIMEOUT=$2 LOADS=plan bash $here/run.sh 100 $1; pack; }
}
measure() {  # name, then tune measure's arguments
    local name=$1; shift
    [ -s $results/$name.json ] && return
    timeout 90 python3 -m tuner.cli measure "$@" --json > $results/$name.json 2> $results/$name.log
    python3 -c "import json,sys; [print(sys.argv[1], r['phase'], r['predicted_s'], r['measured_s'])
        for r in json.load(open(sys.argv[2]))['error'] if r['measured_s']]" $name $results/$name.json
    pack
}
plan bf16 150
[ -s $results/host-launches.json ] || {
    timeout 120 python3 $here/host_launches.py $results/host-launches.json \
        > $results/host-launches.log 2>&1
    tail -n 32 $results/host-launches.log; pack; }
measure naive-prefill-4096 --model llama-3.1-8b --batch 1 --prompt 4096 --attention naive
measure fp8kv-b128-c4096 --model llama-3.1-8b --weights fp8 --kv-dtype fp8 --batch 128 \
    --prompt 16 --context 4096
plan bf16-eagle 130
plan bf16-draft 130
plan fp8 130
# The experimental few-rows FP8 GEMM against cuBLAS's paths, by M (executor.fp8_kernels).
[ -s $results/fp8-gemm.json ] || { timeout 120 python3 $here/fp8_gemm_sweep.py \
    $results/fp8-gemm.json > $results/fp8-gemm.log 2>&1; tail -n 12 $results/fp8-gemm.log; pack; }
